/**
 * A fuzzer of every JSON route of the HTTP API, driven by the server's own OpenAPI document
 * (`GET /v1/openapi.json`): each path and method in it is fuzzed, its body built from its
 * request schema (valid values with one thing wrong, wrong types, unknown members, duplicate
 * keys, strings and arrays past their bounds and past the body limit, deep nesting, U+0000
 * and lone surrogates, numbers such as 1e400, -0 and 2^63, bytes that are not UTF-8, cut
 * texts, no body, wrong content types), its headers and query from its parameters (and odd,
 * repeated and overlong headers besides), sent as raw bytes over real sockets to a real server
 * (`createServer`) on the store of the run: a SQLite file, or a PostgreSQL schema with
 * `ACCEPTED_TEST_STORE=postgres`. A route in the document that no generator can be built for
 * fails the file, so a new route is fuzzed without editing it.
 *
 * Every answer is checked: never a 500 nor another 5xx than 503; every 4xx is
 * application/problem+json with a `code` of docs/errors.md whose status is the answer's; every
 * 2xx matches the document's schema. A refused request changes nothing in the store (a
 * fingerprint of operations, events, idempotency keys, webhook endpoints and callback secrets,
 * read from the database, is the same before and after); a request the server should refuse
 * by what the document and docs/limits.md say (a body its schema rejects, too large, too deep,
 * not UTF-8, not JSON, an inexact number, a header sent twice, a bad Idempotency-Key, an
 * If-Match that does not match) is never accepted; an accepted write leaves a whole resource:
 * it reads back (200, same version, its input stored as sent), and every list and event page
 * of the tenant still answers 200. Another tenant's data never changes nor shows. Some
 * requests are abandoned by their client (the body announced, fewer bytes sent, the socket
 * closed, reset or half-closed): they change nothing and log no error.
 *
 * The WebSocket (`GET /v1/ws`, docs/streams.md) gets bursts of subscribes and unsubscribes,
 * valid ones and hostile ones, from the messages of the AsyncAPI document, sent without
 * waiting: each message gets one answer of those the protocol allows it, with its id; every
 * message matches the document; never more subscriptions are acknowledged and live than the
 * cap; the connection stays usable, its free slots all there; nothing stays subscribed.
 *
 * At the end every page of every list is read, then workers run the fuzzed operations and
 * every page is read again; meanwhile operations that change fast get their event streams
 * opened at random moments: each snapshot's id is the seq of its version's event in the log,
 * the stream and a resume from that id send the log's later events once each, and each
 * long-polled ETag names a version whose event is already in the log.
 *
 * Seeded: the seed is printed first (`# fuzz seed N`) and is in every failure message, with
 * the counterexample. Replay a failure with
 *
 *   ACCEPTED_FUZZ_SEED=N node --import tsx --test packages/accepted/test/fuzz.test.ts
 *
 * (with `ACCEPTED_TEST_STORE=postgres` if it failed there). The server keeps its state from
 * run to run, so a replay runs the whole file with the same seed; the report shows the first
 * failing request as well as the one shrinking ended at. `ACCEPTED_FUZZ_RUNS=4` runs four
 * times as many cases (default 1: well under a minute per store on a small machine).
 *
 * Defects this fuzz found, since fixed: U+0000 in a path id, a query value or an endpoint's
 * `description` reached PostgreSQL (500); a lone surrogate in `description` was stored as
 * U+FFFD; If-Match `"01"` matched the ETag `"1"`.
 * Answers with a code the document does not name for the route are listed at the end, not
 * failed.
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it, type TestContext } from 'node:test';
import type Database from 'better-sqlite3';
import fc from 'fast-check';
import { pino } from 'pino';
import type { ValidateFunction } from 'ajv';
import WebSocket from 'ws';
import { ERROR_CODES } from '../src/domain/errors.ts';
import { ApiKeys } from '../src/http/auth.ts';
import { createServer, type AcceptedServer } from '../src/server/server.ts';
import { createAjv } from '../src/wire/ajv.ts';
import {
  bodyArb,
  bodyBytes,
  canonicalJson,
  changingOperationsArb,
  contentTypeArb,
  describeValue,
  Entries,
  framingArb,
  headerValueArb,
  idArb,
  inexactNumber,
  isAbandoned,
  isJsonType,
  isSurelyNotJson,
  jsonDepth,
  MALFORMED_FRAMINGS,
  NoStrategy,
  parseBody,
  pct,
  queryArb,
  resolveRef,
  routesOf,
  strayBodyArb,
  STRAY_HEADERS,
  validArb,
  writeJson,
  wsBurstsArb,
  type AbandonedFraming,
  type BodySpec,
  type ChangingOperation,
  type Framing,
  type HeaderSpec,
  type HeaderValue,
  type IdChoice,
  type Json,
  type QuerySpec,
  type RouteSpec,
  type SchemaEnv,
  type WsMessageSpec,
  type WsTargets,
} from './fuzz-arbitraries.ts';
import { newStorePlace, onStore, STORE, type StorePlace } from './helpers.ts';
import { adminQuery, PG_URL } from './pg-helpers.ts';
import { SseClient, type SseMessage } from './stream-clients.ts';

// ---- seed and budget -------------------------------------------------------------------------

const SEED = (() => {
  const given = process.env.ACCEPTED_FUZZ_SEED;
  if (given === undefined || given === '') return randomInt(0, 2 ** 31 - 1);
  const seed = Number(given);
  if (!Number.isSafeInteger(seed)) throw new Error(`ACCEPTED_FUZZ_SEED must be an integer`);
  return seed;
})();
const SCALE = Number(process.env.ACCEPTED_FUZZ_RUNS ?? '1') || 1;
/**
 * The time the per-route fuzz should take, in all (times ACCEPTED_FUZZ_RUNS). A route may
 * take twice its share of it; past that it stops early, as if it had run all its cases.
 */
const FUZZ_BUDGET_MS = 30_000;
/** Send the requests that show the defects this fuzz found and that are not fixed yet. */
const REPLAY = `ACCEPTED_FUZZ_SEED=${SEED}${STORE === 'postgres' ? ' ACCEPTED_TEST_STORE=postgres' : ''} node --import tsx --test packages/accepted/test/fuzz.test.ts`;
console.log(`# fuzz seed ${SEED} (replay: ${REPLAY})`);

/** A seed of its own for each route, from the file's seed and the route's name. */
function seedOf(name: string): number {
  let hash = SEED | 0;
  for (const ch of name) hash = (Math.imul(hash, 31) + ch.charCodeAt(0)) | 0;
  return hash;
}

/** Small limits, so that "past the limit" is cheap; the document states them, the fuzz reads them there. */
const BODY_LIMIT = 64 * 1024;
const MAX_HEADER_SIZE = 8 * 1024;
const FUZZ_KEY = 'fuzz-key-0123456789-abcdefghijklmnop';
const OTHER_KEY = 'other-key-0123456789-abcdefghijklmnop';
/**
 * A tenant of the snapshot checks alone, without webhook endpoints: their operations change
 * fast, and in the fuzz tenant (dozens of endpoints, hundreds of deliveries pending by then)
 * each change is a delivery to make for each endpoint. What the checks are about is the
 * stream, not the dispatcher (on PostgreSQL, dispatching that much holds up the node's
 * writes for seconds at a time).
 */
const STREAMS_KEY = 'streams-key-0123456789-abcdefghijklmnop';
const OTHER_MARKER = 'other-tenant-secret-marker';
/** Read once each (docs/limits.md): a second field is refused. */
/** The problems of a body, whatever the route (docs/errors.md). */
const BODY_CODES = [
  'MALFORMED_JSON',
  'UNSUPPORTED_MEDIA_TYPE',
  'INVALID_ENCODING',
  'PAYLOAD_TOO_LARGE',
  'JSON_TOO_DEEP',
  'NUMBER_OUT_OF_RANGE',
];
const SINGLE_VALUED = [
  'host',
  'authorization',
  'content-type',
  'content-length',
  'idempotency-key',
];

// ---- raw HTTP -----------------------------------------------------------------------------

interface Answer {
  status: number;
  headers: Map<string, string[]>;
  body: Buffer;
  text: string;
  json: unknown;
  isJson: boolean;
  /** Answers after the first on the same connection (the rest of a broken request). */
  more: Answer[];
}

function parseAnswers(data: Buffer): Answer[] {
  const answers: Answer[] = [];
  let rest = data;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const head = rest.subarray(0, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '')?.[1]);
    if (!Number.isInteger(status)) break;
    const headers = new Map<string, string[]>();
    for (const line of head.slice(1)) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).trim().toLowerCase();
      headers.set(name, [...(headers.get(name) ?? []), line.slice(colon + 1).trim()]);
    }
    rest = rest.subarray(end + 4);
    if (status >= 100 && status < 200) continue;
    let body: Buffer;
    const length = headers.get('content-length')?.[0];
    if (length !== undefined) {
      body = rest.subarray(0, Number(length));
      rest = rest.subarray(Number(length));
    } else if (headers.get('transfer-encoding')?.[0] === 'chunked') {
      const parts: Buffer[] = [];
      for (;;) {
        const lineEnd = rest.indexOf('\r\n');
        const size = parseInt(rest.subarray(0, lineEnd).toString('latin1'), 16);
        rest = rest.subarray(lineEnd + 2);
        if (!(size > 0)) {
          rest = rest.subarray(2);
          break;
        }
        parts.push(rest.subarray(0, size));
        rest = rest.subarray(size + 2);
      }
      body = Buffer.concat(parts);
    } else if (status === 204 || status === 304) {
      body = Buffer.alloc(0);
    } else {
      body = rest;
      rest = Buffer.alloc(0);
    }
    const text = body.toString('utf8');
    let json: unknown = null;
    let isJson = false;
    try {
      json = JSON.parse(text) as unknown;
      isJson = true;
    } catch {
      // not JSON: checked where it matters
    }
    answers.push({ status, headers, body, text, json, isJson, more: [] });
  }
  return answers;
}

/** Sends the bytes on a new connection; the answer(s) when the server closes it. */
async function exchange(port: number, bytes: Buffer, timeoutMs = 15_000): Promise<Answer> {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  const done = new Promise<void>((resolve) => {
    socket.on('close', () => resolve());
    socket.on('error', () => undefined); // a reset after the answer: what came is what counts
  });
  socket.write(bytes);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    done.then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  socket.destroy();
  const data = Buffer.concat(chunks);
  if (timedOut) throw new Error(`no answer within ${timeoutMs} ms (got ${data.length} bytes)`);
  const [first, ...more] = parseAnswers(data);
  if (!first) {
    throw new Error(
      `the server closed the connection without an answer: ${data.toString('latin1').slice(0, 200)}`,
    );
  }
  return { ...first, more };
}

const headerOf = (answer: Answer, name: string) => answer.headers.get(name)?.[0];

/**
 * Sends the first part of a request and goes away as `framing` says (closes, resets, or
 * half-closes the socket and reads on), without waiting for an answer; returns once the
 * server has let the connection go, with what it answered (a half-closed client may hear a
 * 4xx; the others hear nothing).
 */
async function abandon(port: number, bytes: Buffer, framing: AbandonedFraming): Promise<Answer[]> {
  const ends = serverSockets();
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  // The server's end of this connection, once it has taken it.
  const local = socket.localPort ?? 0;
  let end = ends.get(local);
  for (let turns = 0; end === undefined; turns++) {
    if (turns > 10_000) throw new Error('the server never took the connection');
    await new Promise((resolve) => setImmediate(resolve));
    end = ends.get(local);
  }
  socket.write(bytes);
  if (framing === 'reset-mid-body') socket.resetAndDestroy();
  else if (framing === 'half-closed-mid-body') socket.end();
  else socket.destroy();
  await closed;
  // Once the server's end is closed, and the callbacks its closing queued have run, the
  // server has dealt with the request.
  let timer: NodeJS.Timeout | undefined;
  const letGo = await Promise.race([
    end.closed.then(() => true),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 15_000))),
  ]);
  clearTimeout(timer);
  if (!letGo) {
    throw new Error(`the server kept the connection of an abandoned request (${framing}) open`);
  }
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
  return parseAnswers(Buffer.concat(chunks));
}

/** The server's ends of the connections it was given, by the client's port. */
const socketsByServer = new WeakMap<http.Server, Map<number, { closed: Promise<void> }>>();
function serverSockets(): Map<number, { closed: Promise<void> }> {
  const server = fx().server.http.server;
  let ends = socketsByServer.get(server);
  if (!ends) {
    const map = new Map<number, { closed: Promise<void> }>();
    server.on('connection', (end: net.Socket) => {
      const port = end.remotePort ?? 0;
      const entry = { closed: new Promise<void>((resolve) => end.once('close', () => resolve())) };
      map.set(port, entry);
      void entry.closed.then(() => {
        if (map.get(port) === entry) map.delete(port);
      });
    });
    socketsByServer.set(server, map);
    ends = map;
  }
  return ends;
}

/** A log line, for a failure report: its message and its error's. */
function describeLog(line: Fixture['logs'][number]): string {
  const err = line.err as { type?: string; message?: string; code?: string } | undefined;
  return err
    ? `${line.msg}: ${err.type ?? 'Error'} ${err.code ?? ''} ${err.message ?? ''}`
    : line.msg;
}

// ---- the server, the store, the receiver ----------------------------------------------------

interface Fixture {
  server: AcceptedServer;
  port: number;
  place: StorePlace;
  doc: Json;
  /** The AsyncAPI document (`GET /v1/asyncapi.json`): the WebSocket's messages. */
  asyncDoc: Json;
  routes: RouteSpec[];
  env: SchemaEnv;
  ajv: ReturnType<typeof createAjv>;
  logs: { level: number; msg: string; err?: unknown }[];
}

let fixture: Fixture | null = null;
const fx = (): Fixture => {
  if (!fixture) throw new Error('the fuzz server is not running');
  return fixture;
};

function memoryLogger() {
  const logs: Fixture['logs'] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line !== '') logs.push(JSON.parse(line) as Fixture['logs'][number]);
      }
      callback();
    },
  });
  return { logger: pino({ level: 'warn' }, sink), logs };
}

const captured = memoryLogger();

function startFuzzServer(place: StorePlace, worker: boolean) {
  const logger = captured.logger;
  const keys = new ApiKeys();
  keys.add({ tenant: 'fuzz', key: FUZZ_KEY });
  keys.add({ tenant: 'other', key: OTHER_KEY });
  keys.add({ tenant: 'streams', key: STREAMS_KEY });
  return createServer({
    port: 0,
    host: '127.0.0.1',
    ...(place.filename === null
      ? { store: PG_URL, schema: place.schema ?? 'accepted' }
      : { dataDir: path.dirname(place.filename) }),
    demo: true,
    // API-only while fuzzing: the store changes only by requests, so that a refused one can
    // be seen to change nothing. Workers run the fuzzed operations at the end.
    worker,
    apiKeys: keys,
    bodyLimit: BODY_LIMIT,
    maxHeaderSize: MAX_HEADER_SIZE,
    maxWaitSeconds: 1,
    maxSubscriptions: WS_MAX_SUBSCRIPTIONS,
    webhookAllow: ['127.0.0.0/8'],
    logger,
  });
}

/** A webhook receiver that takes every delivery. */
async function startReceiver(): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(204).end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

/**
 * Reads the store's tables with SQL. SQLite runs in exclusive locking mode (no other
 * connection may open the file while the server runs), so its rows are read through the
 * server's own connection, synchronously, between two requests; PostgreSQL through a
 * connection of the test's own.
 */
async function query<T extends object>(sql: string): Promise<T[]> {
  const place = fx().place;
  if (place.filename !== null) {
    const db = (fx().server.accepted.store as unknown as { db: Database.Database | null }).db;
    if (!db) throw new Error('the SQLite store is not open');
    return db.prepare(sql).all() as T[];
  }
  return adminQuery<T>(sql.replaceAll('"S".', `"${place.schema ?? ''}".`));
}

const table = (name: string) => (fx().place.filename === null ? `"S".${name}` : name);

/**
 * What a request may change, per table and tenant: counts, versions, sums of lengths and
 * times, the highest key. Not the webhook deliveries, their attempts, the dispatcher's cursor
 * nor an endpoint's failure clock: the dispatcher writes those on its own.
 */
async function fingerprint(): Promise<Map<string, string>> {
  const rows = await query<{
    t: string;
    tenant: string;
    a: unknown;
    b: unknown;
    c: unknown;
    d: unknown;
    e: unknown;
  }>(`
    SELECT 'op' AS t, tenant, count(*) AS a, coalesce(sum(version), 0) AS b,
      coalesce(sum(updated_at % 1000000007), 0) AS c,
      coalesce(sum(length(input) + coalesce(length(result), 0) + length(CAST(labels AS TEXT))
        + coalesce(length(callback_url), 0) + coalesce(length(traceparent), 0) + length(status)
        + max_attempts + coalesce(timeout_ms, 0) % 1000000007 + run_at % 1000000007), 0) AS d,
      coalesce(max(pk), 0) AS e
    FROM ${table('operations')} GROUP BY tenant
    UNION ALL SELECT 'ev', tenant, count(*), coalesce(sum(version), 0), coalesce(max(seq), 0),
      coalesce(sum(length(data) + length(type)), 0), 0
    FROM ${table('events')} GROUP BY tenant
    UNION ALL SELECT 'ik', tenant, count(*), coalesce(sum(coalesce(status, 0)), 0),
      coalesce(sum(length(key) + length(fingerprint) + length(operation_id)), 0),
      coalesce(sum(coalesce(hold_until, 0) % 1000000007), 0), 0
    FROM ${table('idempotency_keys')} GROUP BY tenant
    UNION ALL SELECT 'ep', tenant, count(*), coalesce(sum(version), 0),
      coalesce(sum(updated_at % 1000000007), 0),
      coalesce(sum(length(url) + length(secrets) + coalesce(length(description), 0)
        + coalesce(length(event_types), 0) + coalesce(length(labels), 0)
        + coalesce(length(retry_schedule), 0) + coalesce(rate_limit, 0)
        + CASE WHEN enabled THEN 1 ELSE 0 END), 0),
      coalesce(max(pk), 0)
    FROM ${table('webhook_endpoints')} GROUP BY tenant
    UNION ALL SELECT 'cs', tenant, count(*), coalesce(sum(updated_at % 1000000007), 0),
      coalesce(sum(length(secrets)), 0), 0, 0
    FROM ${table('callback_secrets')} GROUP BY tenant
    UNION ALL SELECT 'meta', key, value, 0, 0, 0, 0 FROM ${table('meta')} WHERE key = 'seq_high'`);
  const out = new Map<string, string>();
  for (const row of rows) {
    out.set(`${row.t}|${row.tenant}`, [row.a, row.b, row.c, row.d, row.e].map(String).join(','));
  }
  return out;
}

function fingerprintDiff(
  before: Map<string, string>,
  afterwards: Map<string, string>,
  keep: (key: string) => boolean = () => true,
): string[] {
  const diffs: string[] = [];
  for (const key of new Set([...before.keys(), ...afterwards.keys()])) {
    if (!keep(key)) continue;
    if (before.get(key) !== afterwards.get(key)) {
      diffs.push(`${key}: ${before.get(key) ?? 'none'} -> ${afterwards.get(key) ?? 'none'}`);
    }
  }
  return diffs;
}

// ---- what the fuzz knows of the server's state ------------------------------------------------

/** Ids seen in answers, by the pattern of the path parameter they fit. */
const pools = new Map<string, string[]>();
const otherPools = new Map<string, string[]>();
const tokens: { token: string; operation: string | null }[] = [];
/** Ids of resources deleted by the fuzz. */
const deletedIds: string[] = [];
/** Idempotency keys the server has taken, as the fuzz saw them: body, operation, status. */
const idempotency = new Map<
  string,
  { canon: string; id: string; status: number; body: Buffer; type: string | null }
>();

function pathPatterns(): string[] {
  const patterns = new Set<string>();
  for (const route of fx().routes) {
    for (const param of route.params) {
      if (param.in === 'path' && typeof param.schema.pattern === 'string') {
        patterns.add(param.schema.pattern);
      }
    }
  }
  return [...patterns];
}

function harvest(value: unknown, into: Map<string, string[]>, patterns: string[]): void {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') {
      for (const pattern of patterns) {
        if (new RegExp(pattern).test(v)) {
          const pool = into.get(pattern) ?? [];
          if (!pool.includes(v)) pool.push(v);
          into.set(pattern, pool);
        }
      }
    } else if (Array.isArray(v)) {
      stack.push(...(v as unknown[]));
    } else if (typeof v === 'object' && v !== null) {
      const record = v as Json;
      if (typeof record.token === 'string' && into === pools) {
        const operation = typeof record.operation === 'string' ? record.operation : null;
        if (!tokens.some((t) => t.token === record.token)) {
          tokens.push({ token: record.token, operation });
        }
      }
      stack.push(...Object.values(record));
    }
  }
}

function pick(pool: readonly string[] | undefined, index: number): string | undefined {
  if (!pool || pool.length === 0) return undefined;
  return pool[index % pool.length];
}

// ---- requests ---------------------------------------------------------------------------------

type Auth =
  | 'key'
  | 'key-lowercase'
  | 'key-spaces'
  | 'none'
  | 'wrong'
  | 'basic'
  | 'empty-bearer'
  | 'token-as-bearer'
  | 'key-junk'
  | 'overlong'
  | 'twice';

interface RequestSpec {
  route: RouteSpec;
  ids: [string, IdChoice][];
  query: QuerySpec[];
  unknownQuery: string | null;
  headers: HeaderSpec[];
  stray: [string, HeaderValue][];
  contentType: string | null;
  body: BodySpec | null;
  framing: Framing;
  auth: Auth;
  /** A junk `access_token` (bad-credential requests of the stream routes). */
  accessToken: string | null;
  /** Send again the body of an earlier accepted request, with its Idempotency-Key. */
  replay: number | null;
}

/** A request as built: its bytes, and what the fuzz knows the server must refuse it for. */
interface Built {
  bytes: Buffer;
  target: string;
  headerLines: [string, string][];
  body: Buffer | null;
  mustRefuse: string[];
  /** The Idempotency-Key the server reads, when it is a valid one. */
  idempotencyKey: string | null;
  /** The parsed body, when the server must read it as JSON. */
  parsed: { ok: true; value: unknown } | null;
  etag: string | null;
  resourcePath: string | null;
  traceparent: string | undefined;
}

const queryAjv = createAjv({ coerceTypes: 'array', useDefaults: true });
const queryValidators = new Map<string, ValidateFunction>();

/** The request arbitrary of a route, from its parameters and body schema. */
function requestArb(
  route: RouteSpec,
  env: SchemaEnv,
  auth: fc.Arbitrary<Auth>,
): fc.Arbitrary<RequestSpec> {
  const pathParams = route.params.filter((p) => p.in === 'path');
  const queryParams = route.params.filter((p) => p.in === 'query');
  const headerParams = route.params.filter((p) => p.in === 'header');
  const where = route.key;
  const ids = fc.tuple(
    ...pathParams.map((p) => idArb(env, p).map((choice): [string, IdChoice] => [p.name, choice])),
  );
  const queries = fc.tuple(
    ...queryParams.map((p) => sometimes(queryArb(env, p), 1, p.name === 'access_token' ? 12 : 2)),
  );
  const headers = fc.tuple(
    ...headerParams.map((p) =>
      sometimes(
        headerValueArb(env, p).map((value): HeaderSpec => ({ name: p.name, value })),
        p.required ? 8 : 1,
        p.required ? 1 : 2,
      ),
    ),
  );
  const body = route.body ? bodyArb(env, route.body, where) : strayBodyArb;
  return fc
    .record({
      ids,
      queries,
      headers,
      unknownQuery: sometimes(
        fc.constantFrom('foo=1', 'limit=1&limit=2', 'x', '=', '&&', 'a[b]=1', '__proto__=1'),
        1,
        12,
      ),
      stray: sometimes(
        fc.array(fc.constantFrom(...STRAY_HEADERS), { minLength: 1, maxLength: 2 }),
        1,
        4,
      ),
      typeWithoutBody: fc.nat(9),
      contentType: contentTypeArb,
      body,
      framing: framingArb,
      auth,
      replay: route.params.some((p) => p.name.toLowerCase() === 'idempotency-key')
        ? sometimes(fc.nat(), 1, 4)
        : fc.constant(null),
    })
    .map((r): RequestSpec => {
      const noBody = r.body.value === undefined && r.body.text.kind !== 'replace';
      return {
        route,
        ids: r.ids,
        query: r.queries.filter((q): q is QuerySpec => q !== null),
        unknownQuery: r.unknownQuery,
        headers: r.headers.filter((h): h is HeaderSpec => h !== null),
        stray: r.stray ?? [],
        // Without a body, mostly no Content-Type; sometimes one (an empty JSON body).
        contentType: noBody && r.typeWithoutBody < 8 ? null : r.contentType,
        body: r.body,
        framing: r.framing,
        auth: r.auth,
        accessToken: null,
        replay: r.replay,
      };
    });
}

/** `arb` with weight `present`, else null with weight `absent`. */
function sometimes<T>(
  arb: fc.Arbitrary<T>,
  present: number,
  absent: number,
): fc.Arbitrary<T | null> {
  return fc.oneof(
    { arbitrary: arb, weight: present },
    { arbitrary: fc.constant(null), weight: absent },
  );
}

/**
 * Requests that should be accepted: a valid body (of the document's schema), the ids of live
 * resources, the current ETag in If-Match, a fresh Idempotency-Key, nothing odd around them.
 * Each write route gets a few before its fuzz, so that its 2xx paths are surely reached.
 */
function probeArb(route: RouteSpec, env: SchemaEnv): fc.Arbitrary<RequestSpec> {
  const body: fc.Arbitrary<BodySpec | null> = route.body
    ? validArb(env, route.body.schema, route.key).map((value): BodySpec => ({
        value,
        text: { kind: 'none' },
        how: 'valid (a probe)',
      }))
    : fc.constant(null);
  const pathParams = route.params.filter((p) => p.in === 'path');
  return fc.tuple(body, fc.nat(), fc.uuid()).map(([b, index, uuid]): RequestSpec => ({
    route,
    ids: pathParams.map((p): [string, IdChoice] => [p.name, { kind: 'pool', index }]),
    query: [],
    unknownQuery: null,
    headers: route.params
      .filter((p) => p.in === 'header')
      .flatMap((p): HeaderSpec[] => {
        const name = p.name.toLowerCase();
        if (name === 'if-match')
          return [{ name: p.name, value: { kind: 'etag', form: 'current' } }];
        if (name === 'idempotency-key')
          return [{ name: p.name, value: { kind: 'text', text: uuid } }];
        return [];
      }),
    stray: [],
    contentType: b ? 'application/json' : null,
    body: b,
    framing: 'length',
    auth: 'key',
    accessToken: null,
    replay: null,
  }));
}

function resolveId(param: string, choice: IdChoice, route: RouteSpec): string {
  const spec = route.params.find((p) => p.in === 'path' && p.name === param);
  const pattern = typeof spec?.schema.pattern === 'string' ? spec.schema.pattern : '';
  switch (choice.kind) {
    case 'literal':
      return choice.encoded ? choice.text : pct(choice.text);
    case 'pool':
      return pick(pools.get(pattern), choice.index) ?? pick(pools.get(pattern), 0) ?? 'none';
    case 'other-tenant':
      return pick(otherPools.get(pattern), choice.index) ?? 'none';
    case 'gone':
      return (
        pick(
          deletedIds.filter((id) => new RegExp(pattern).test(id)),
          choice.index,
        ) ?? 'none'
      );
    case 'other-kind': {
      const others = [...pools.entries()].filter(([p]) => p !== pattern).flatMap(([, ids]) => ids);
      return pick(others, choice.index) ?? 'none';
    }
  }
}

function queryText(spec: RequestSpec): string {
  const parts: string[] = [];
  for (const q of spec.query) {
    if (q.raw !== undefined) parts.push(`${q.name}=${q.raw}`);
    else if (q.style === 'comma') parts.push(`${q.name}=${q.values.map(pct).join(',')}`);
    else for (const v of q.values) parts.push(`${q.name}=${pct(v)}`);
  }
  if (spec.unknownQuery !== null) parts.push(spec.unknownQuery);
  if (spec.accessToken !== null) parts.push(`access_token=${pct(spec.accessToken)}`);
  return parts.length === 0 ? '' : `?${parts.join('&')}`;
}

/** Whether the documented query parameters, read as the server reads them, break their schemas. */
function queryRefusal(spec: RequestSpec): string | null {
  const values: Record<string, unknown> = {};
  const properties: Json = {};
  for (const q of spec.query) {
    // Hand-encoded values are read by the query parser in its own way: no verdict on them.
    if (q.raw !== undefined) return null;
    const param = spec.route.params.find((p) => p.in === 'query' && p.name === q.name);
    if (!param) continue;
    properties[q.name] = param.schema;
    const isArray = param.schema.type === 'array';
    const before = values[q.name];
    const all = [
      ...(Array.isArray(before)
        ? (before as string[])
        : before === undefined
          ? []
          : [before as string]),
      ...(q.style === 'comma' ? q.values : q.values),
    ];
    const read = isArray ? all.flatMap((v) => v.split(',')).filter((v) => v !== '') : all;
    values[q.name] = read.length === 1 && !isArray ? read[0] : read;
  }
  if (
    spec.unknownQuery !== null &&
    /(^|&)(limit|after|wait|type|status|label|cursor)=/.test(spec.unknownQuery)
  ) {
    return null;
  }
  if (Object.keys(properties).length === 0) return null;
  const key = `${spec.route.key} ${Object.keys(properties).sort().join(',')}`;
  let validate = queryValidators.get(key);
  if (!validate) {
    validate = queryAjv.compile({ type: 'object', properties });
    queryValidators.set(key, validate);
  }
  return validate(structuredClone(values))
    ? null
    : `the query ${JSON.stringify(values).slice(0, 200)} breaks its schema`;
}

/** The Idempotency-Key the server reads from a field, or null when it must refuse it. */
function idempotencyKeyOf(raw: Buffer): { key: string | null; invalid: boolean } {
  const bytes = [...raw];
  let start = 0;
  let end = bytes.length;
  while (start < end && (bytes[start] === 0x20 || bytes[start] === 0x09)) start++;
  while (end > start && (bytes[end - 1] === 0x20 || bytes[end - 1] === 0x09)) end--;
  const value = Buffer.from(bytes.slice(start, end)).toString('latin1');
  const printable = /^[\x20-\x7e]*$/.test(value);
  if (!value.startsWith('"')) {
    const ok = printable && value.length >= 1 && value.length <= 255;
    return { key: ok ? value : null, invalid: !ok };
  }
  const simple = /^"([\x20\x21\x23-\x5b\x5d-\x7e]*)"$/.exec(value);
  if (simple?.[1] !== undefined) {
    const inner = simple[1];
    const ok = inner.length >= 1 && inner.length <= 255;
    return { key: ok ? inner : null, invalid: !ok };
  }
  // Escapes, parameters: the Structured Fields parser decides. Unterminated is surely wrong.
  const unterminated = !/^"(?:[^"\\]|\\.)*"/.test(value);
  return { key: null, invalid: unterminated || !printable };
}

const W3C = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})/;

/** The traceparent the server keeps, as the document and W3C Trace Context say. */
function expectedTraceparent(header: string | undefined): string | null {
  if (header === undefined) return null;
  const match = W3C.exec(header);
  if (!match) return null;
  const [, version, trace, parent] = match;
  if (version === 'ff') return null;
  if (version === '00' && header.length !== 55) return null;
  if (version !== '00' && header.length > 55 && header[55] !== '-') return null;
  if (/^0+$/.test(trace ?? '') || /^0+$/.test(parent ?? '')) return null;
  return header.slice(0, 55);
}

/** The entity tags of an If-Match, '*' for any. */
function entityTags(value: string): string[] | '*' {
  const trimmed = value.trim();
  if (trimmed === '*') return '*';
  const tags: string[] = [];
  let current = '';
  let quoted = false;
  for (const ch of trimmed) {
    if (ch === '"') quoted = !quoted;
    if (ch === ',' && !quoted) {
      tags.push(current.trim());
      current = '';
    } else current += ch;
  }
  tags.push(current.trim());
  return tags.filter((t) => t !== '');
}

/**
 * A byte RFC 9110 §5.5 keeps out of a field value (a control other than HTAB, or DEL): Node's
 * parser refuses the request before any route reads it, so credentials are never looked at.
 */
const refusedInFieldValue = (byte: number) => (byte < 0x20 && byte !== 0x09) || byte === 0x7f;
const UNPARSABLE = 'a header value the HTTP parser refuses';

function headerBytes(value: HeaderValue, etag: string | null): Buffer {
  switch (value.kind) {
    case 'text':
      return Buffer.from(value.text, 'latin1');
    case 'bytes':
      return Buffer.from(value.bytes);
    case 'big':
      return Buffer.from('x'.repeat(Math.round(MAX_HEADER_SIZE * value.scale)), 'latin1');
    case 'etag': {
      const current = etag ?? '"1"';
      const version = Number(/\d+/.exec(current)?.[0] ?? '1');
      switch (value.form) {
        case 'current':
          return Buffer.from(current);
        case 'weak':
          return Buffer.from(`W/${current}`);
        case 'stale':
          return Buffer.from(`"${Math.max(0, version - 1)}"`);
        case 'list':
          return Buffer.from(`"0", ${current}`);
        case 'padded':
          return Buffer.from(`"0${version}"`);
      }
    }
  }
}

function authValue(auth: Auth): string[] {
  switch (auth) {
    case 'key':
      return [`Bearer ${FUZZ_KEY}`];
    case 'key-lowercase':
      return [`bearer ${FUZZ_KEY}`];
    case 'key-spaces':
      return [`Bearer    ${FUZZ_KEY}   `];
    case 'none':
      return [];
    case 'wrong':
      return ['Bearer wrong-key-0123456789-abcdefghijklmnop'];
    case 'basic':
      return [`Basic ${Buffer.from(`fuzz:${FUZZ_KEY}`).toString('base64')}`];
    case 'empty-bearer':
      return ['Bearer '];
    case 'token-as-bearer':
      return [`Bearer ${tokens[0]?.token ?? 'st_x.y'}`];
    case 'key-junk':
      return [`Bearer ${FUZZ_KEY} junk`];
    case 'overlong':
      return [`Bearer ${'k'.repeat(MAX_HEADER_SIZE)}`];
    case 'twice':
      return [`Bearer ${FUZZ_KEY}`, `Bearer ${FUZZ_KEY}`];
  }
}

/** The current ETag of the resource a conditional request names (read first, over HTTP). */
async function currentEtag(resourcePath: string): Promise<string | null> {
  const answer = await exchange(
    fx().port,
    Buffer.from(
      `GET ${resourcePath} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${FUZZ_KEY}\r\nConnection: close\r\n\r\n`,
      'latin1',
    ),
  );
  checkAnswerShape(answer, null);
  return answer.status === 200 ? (headerOf(answer, 'etag') ?? null) : null;
}

async function build(spec: RequestSpec): Promise<Built> {
  const { route } = spec;
  const mustRefuse: string[] = [];
  let target = route.path;
  for (const [name, choice] of spec.ids)
    target = target.replace(`{${name}}`, resolveId(name, choice, route));
  const resourcePath = target.includes(':') ? target.slice(0, target.lastIndexOf(':')) : target;
  const conditional = route.params.find(
    (p) => p.in === 'header' && p.name.toLowerCase() === 'if-match',
  );
  const needsEtag = spec.headers.some((h) => h.value.kind === 'etag') || conditional !== undefined;
  const hasGet = fx().routes.some(
    (r) =>
      r.method === 'GET' &&
      new RegExp(`^${r.path.replace(/\{[^}]+\}/g, '[^/:]+')}$`).test(resourcePath),
  );
  const etag =
    needsEtag && hasGet && /^\/[\w/:-]*$/.test(resourcePath)
      ? await currentEtag(resourcePath)
      : null;
  target += queryText(spec);
  const refusal = queryRefusal(spec);
  if (refusal !== null) mustRefuse.push(refusal);

  const lines: [string, Buffer][] = [];
  if (spec.framing === 'bad-host') lines.push(['Host', Buffer.from('a b')]);
  else if (spec.framing !== 'no-host') lines.push(['Host', Buffer.from(`127.0.0.1:${fx().port}`)]);
  for (const value of authValue(spec.auth))
    lines.push(['Authorization', Buffer.from(value, 'latin1')]);
  let traceparent: string | undefined;
  const replayed =
    spec.replay === null
      ? undefined
      : [...idempotency].at(spec.replay % Math.max(1, idempotency.size));
  if (replayed) lines.push(['Idempotency-Key', Buffer.from(replayed[0], 'latin1')]);
  for (const header of spec.headers) {
    if (replayed && header.name.toLowerCase() === 'idempotency-key') continue;
    const bytes = headerBytes(header.value, etag);
    lines.push([header.name, bytes]);
    if (header.name.toLowerCase() === 'traceparent') traceparent = bytes.toString('latin1').trim();
  }
  for (const [name, value] of spec.stray) {
    // A request framed without Host stays without one (a stray Host would make it valid).
    if (spec.framing === 'no-host' && name.toLowerCase() === 'host') continue;
    lines.push([name, headerBytes(value, etag)]);
  }
  const contentType = replayed ? replayed[1].type : spec.contentType;
  if (contentType !== null) lines.push(['Content-Type', Buffer.from(contentType, 'latin1')]);
  lines.push(['Connection', Buffer.from('close')]);

  const body = replayed ? replayed[1].body : spec.body ? bodyBytes(spec.body) : null;
  const framed: [string, Buffer][] = [];
  const chunked = ['chunked', 'chunked-and-length', 'gone-mid-chunk'].includes(spec.framing);
  if (chunked) framed.push(['Transfer-Encoding', Buffer.from('chunked')]);
  if (isAbandoned(spec.framing) && !chunked) {
    // A body is announced (one byte at least), and fewer bytes come.
    framed.push(['Content-Length', Buffer.from(String(Math.max(1, body?.length ?? 0)))]);
  } else if (
    spec.framing === 'chunked-and-length' ||
    (!chunked && (body !== null || route.method !== 'GET'))
  ) {
    framed.push(['Content-Length', Buffer.from(String(body?.length ?? 0))]);
  }
  lines.push(...framed);

  // What the server must refuse, by the document and docs/limits.md.
  const counts = new Map<string, number>();
  for (const [name] of lines)
    counts.set(name.toLowerCase(), (counts.get(name.toLowerCase()) ?? 0) + 1);
  for (const name of SINGLE_VALUED) {
    if ((counts.get(name) ?? 0) > 1) mustRefuse.push(`${name} sent twice`);
  }
  if (MALFORMED_FRAMINGS.includes(spec.framing)) {
    mustRefuse.push(`a malformed request (${spec.framing})`);
  }
  for (const [name, value] of lines) {
    const at = value.findIndex(refusedInFieldValue);
    if (at >= 0)
      mustRefuse.push(`${UNPARSABLE} (${name} holds 0x${value[at]?.toString(16)} at ${at})`);
  }
  const headSize =
    target.length + 16 + lines.reduce((n, [name, value]) => n + name.length + value.length + 4, 0);
  if (headSize > MAX_HEADER_SIZE) mustRefuse.push(`headers of ${headSize} bytes`);
  const declares = (name: string) =>
    route.params.some((p) => p.in === 'header' && p.name.toLowerCase() === name);

  let idempotencyKey: string | null = null;
  const keyLines = lines.filter(([name]) => name.toLowerCase() === 'idempotency-key');
  if (declares('idempotency-key') && keyLines.length === 1 && keyLines[0]) {
    const read = idempotencyKeyOf(keyLines[0][1]);
    if (read.invalid) mustRefuse.push('an invalid Idempotency-Key');
    idempotencyKey = read.key;
  }
  if (conditional) {
    const sent = lines.filter(([name]) => name.toLowerCase() === 'if-match');
    if (sent.length === 0 && conditional.required) mustRefuse.push('no If-Match');
    if (sent.length === 1 && sent[0] && etag !== null) {
      const tags = entityTags(sent[0][1].toString('latin1'));
      if (tags !== '*' && !tags.includes(etag))
        mustRefuse.push(`If-Match ${sent[0][1].toString('latin1').slice(0, 60)} is not ${etag}`);
    }
  }

  let parsed: Built['parsed'] = null;
  const readsBody = route.method !== 'GET';
  if (readsBody) {
    const encoding = lines
      .find(([name]) => name.toLowerCase() === 'content-encoding')?.[1]
      .toString('latin1');
    const nonEmpty = body !== null && body.length > 0;
    if (nonEmpty && encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
      mustRefuse.push(`Content-Encoding ${encoding}`);
    }
    if (nonEmpty && isSurelyNotJson(contentType))
      mustRefuse.push(`a body of type ${contentType ?? 'none'}`);
    if (body !== null && isJsonType(contentType)) {
      if (body.length > BODY_LIMIT) mustRefuse.push(`a body of ${body.length} bytes`);
      const read = parseBody(body);
      if (!read.ok) mustRefuse.push(`a body that is ${read.why}`);
      else {
        const text = body.toString('utf8');
        const depth = jsonDepth(text);
        const tooDeep = depth > (route.body?.maxDepth ?? 64);
        if (tooDeep) mustRefuse.push(`a body ${depth} levels deep`);
        const inexact = inexactNumber(text);
        if (inexact !== null) mustRefuse.push(`the number ${inexact}`);
        if (route.body && !tooDeep) {
          parsed = read;
          const validate = bodyValidator(route);
          // `null` too: a body that is there is checked, even where a body is optional.
          if (!validate(structuredClone(read.value))) {
            mustRefuse.push(
              `a body its schema refuses: ${fx().ajv.errorsText(validate.errors).slice(0, 200)}`,
            );
          }
        }
      }
    }
    if (
      route.body?.required &&
      (body === null || (body.length === 0 && !isJsonType(contentType)))
    ) {
      mustRefuse.push('no body');
    }
    if (
      route.body &&
      !route.body.required &&
      (body === null || body.length === 0) &&
      !isJsonType(contentType)
    ) {
      parsed = { ok: true, value: {} };
    }
  }

  // The bytes, framed as asked.
  const eol = spec.framing === 'lf-only' ? '\n' : '\r\n';
  const head: Buffer[] = [Buffer.from(`${route.method} ${target} HTTP/1.1${eol}`, 'latin1')];
  for (const [name, value] of lines)
    head.push(Buffer.from(`${name}: `, 'latin1'), value, Buffer.from(eol));
  if (spec.framing === 'obs-fold') head.push(Buffer.from(`X-Folded: a${eol} b${eol}`));
  if (spec.framing === 'no-colon') head.push(Buffer.from(`Broken${eol}`));
  if (spec.framing === 'space-before-colon') head.push(Buffer.from(`X-Space : b${eol}`));
  if (spec.framing === 'nul-in-header') head.push(Buffer.from(`X-Nul: a\u0000b${eol}`, 'latin1'));
  if (spec.framing === 'many-headers') {
    for (let i = 0; i < 150; i++) head.push(Buffer.from(`X-H${i}: v${eol}`));
  }
  head.push(Buffer.from(eol));
  let payload = body ?? Buffer.alloc(0);
  if (spec.framing === 'gone-after-head') payload = Buffer.alloc(0);
  else if (spec.framing === 'gone-mid-chunk') {
    // The first chunk announced whole, half of it sent.
    const size = Math.max(1, payload.length);
    payload = Buffer.concat([
      Buffer.from(`${size.toString(16)}\r\n`),
      payload.subarray(0, Math.floor(payload.length / 2)),
    ]);
  } else if (isAbandoned(spec.framing)) {
    payload = payload.subarray(0, Math.floor(payload.length / 2));
  } else if (spec.framing === 'chunked' || spec.framing === 'chunked-and-length') {
    const half = Math.floor(payload.length / 2);
    const chunk = (b: Buffer) =>
      b.length === 0 ? [] : [Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')];
    payload = Buffer.concat([
      ...chunk(payload.subarray(0, half)),
      ...chunk(payload.subarray(half)),
      Buffer.from('0\r\n\r\n'),
    ]);
  }
  return {
    bytes: Buffer.concat([...head, payload]),
    target,
    headerLines: lines.map(([name, value]) => [name, value.toString('latin1')]),
    body,
    mustRefuse,
    idempotencyKey,
    parsed,
    etag,
    resourcePath,
    traceparent,
  };
}

const bodyValidators = new Map<string, ValidateFunction>();
function bodyValidator(route: RouteSpec): ValidateFunction {
  let validate = bodyValidators.get(route.key);
  if (!validate) {
    validate = fx().ajv.compile(withDocRefs(route.body?.schema ?? {}));
    bodyValidators.set(route.key, validate);
  }
  return validate;
}

const responseValidators = new Map<string, ValidateFunction>();
function responseValidator(key: string, schema: Json): ValidateFunction {
  let validate = responseValidators.get(key);
  if (!validate) {
    validate = fx().ajv.compile(withDocRefs(schema));
    responseValidators.set(key, validate);
  }
  return validate;
}

/** A schema of the document with its `#/components/...` references pointing into it. */
function withDocRefs(schema: Json): Json {
  return JSON.parse(
    JSON.stringify(schema).replaceAll('"$ref":"#/', '"$ref":"openapi.json#/'),
  ) as Json;
}

// ---- checks ---------------------------------------------------------------------------------

/** Codes or statuses the document does not name for their route (the last test fails on any). */
const undocumented = new Map<string, number>();
/** How often each deeper check ran: a check that never runs has no teeth. */
const checked = new Map<string, number>();
function count(what: string): void {
  checked.set(what, (checked.get(what) ?? 0) + 1);
}
const stats = new Map<string, Map<number, number>>();

/** What every answer must be, whatever the request. */
function checkAnswerShape(
  answer: Answer,
  route: RouteSpec | null,
  options: { tenant?: 'fuzz' | 'other'; strayBody?: boolean } = {},
): void {
  const tenant = options.tenant ?? 'fuzz';
  for (const a of [answer, ...answer.more]) {
    assert.notEqual(a.status, 500, `a 500: ${a.text.slice(0, 300)}`);
    assert.ok(a.status < 500 || a.status === 503, `a ${a.status}: ${a.text.slice(0, 300)}`);
    if (a.status >= 400) {
      const type = headerOf(a, 'content-type') ?? '';
      assert.match(
        type,
        /^application\/problem\+json/,
        `a ${a.status} of type ${type}: ${a.text.slice(0, 200)}`,
      );
      assert.ok(a.isJson, `a ${a.status} whose body is not JSON: ${a.text.slice(0, 200)}`);
      const problem = a.json as Json;
      const code = typeof problem.code === 'string' ? problem.code : '';
      assert.ok(code in ERROR_CODES, `a ${a.status} with the code ${JSON.stringify(problem.code)}`);
      assert.equal(
        ERROR_CODES[code as keyof typeof ERROR_CODES].status,
        a.status,
        `${code} answered with ${a.status}`,
      );
      assert.equal(
        problem.status,
        a.status,
        `the problem's status ${String(problem.status)} is not the answer's ${a.status}`,
      );
      const validate = responseValidator('Problem', { $ref: '#/components/schemas/Problem' });
      // `instance` included: a path sent with a stray `%` or a character a URI may not hold
      // comes back percent-encoded, a URI reference.
      assert.ok(
        validate(problem),
        `the problem does not match the document: ${fx().ajv.errorsText(validate.errors)}: ${a.text.slice(0, 300)}`,
      );
      // A body sent to a route that takes none is still read: its problems are no news.
      // ROUTE_NOT_FOUND for a path segment over 100 characters: docs/limits.md, every route.
      if (
        route &&
        code !== 'ROUTE_NOT_FOUND' &&
        !(options.strayBody === true && BODY_CODES.includes(code))
      ) {
        const documented = route.responses.get(String(a.status))?.codes ?? [];
        if (!documented.includes(code)) {
          const key = `${route.key} ${a.status} ${code}`;
          undocumented.set(key, (undocumented.get(key) ?? 0) + 1);
        }
      }
    } else if (a.status === 304 || a.status === 204) {
      assert.equal(a.body.length, 0, `a ${a.status} with a body`);
    } else if (a.body.length > 0 && route) {
      const type = headerOf(a, 'content-type') ?? '';
      assert.match(type, /^application\/json/, `a ${a.status} of type ${type}`);
      assert.ok(a.isJson, `a ${a.status} whose body is not JSON: ${a.text.slice(0, 200)}`);
      const response = route.responses.get(String(a.status));
      if (!response) {
        const key = `${route.key} ${a.status} (status not in the document)`;
        undocumented.set(key, (undocumented.get(key) ?? 0) + 1);
      } else if (response.schema) {
        const validate = responseValidator(`${route.key} ${a.status}`, response.schema);
        assert.ok(
          validate(a.json),
          `the ${a.status} answer does not match the document: ${fx().ajv.errorsText(validate.errors)}: ${a.text.slice(0, 300)}`,
        );
      }
    }
    assert.ok(
      tenant !== 'fuzz' || !a.text.includes(OTHER_MARKER),
      `another tenant's data in the answer: ${a.text.slice(0, 300)}`,
    );
  }
}

/** Sends a plain request as the fuzz tenant (a read-back) and checks its answer. */
async function plainRequest(
  method: string,
  target: string,
  route: RouteSpec | null,
  auth = `Bearer ${FUZZ_KEY}`,
): Promise<Answer> {
  const answer = await exchange(
    fx().port,
    Buffer.from(
      `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${fx().port}\r\n${auth === '' ? '' : `Authorization: ${auth}\r\n`}Connection: close\r\n\r\n`,
      'latin1',
    ),
  );
  checkAnswerShape(answer, route);
  if (answer.isJson) harvest(answer.json, pools, pathPatterns());
  return answer;
}

const routeMatching = (method: string, target: string): RouteSpec | undefined =>
  fx().routes.find(
    (r) =>
      r.method === method &&
      new RegExp(`^${r.path.replace(/[.]/g, '\\.').replace(/\{[^}]+\}/g, '[^/:?]+')}$`).test(
        target.split('?')[0] ?? '',
      ),
  );

/** The tenant's lists and event pages (GET routes without path parameters that answer a page). */
function listRoutes(): RouteSpec[] {
  return fx().routes.filter((r) => {
    if (r.method !== 'GET' || r.isPublic || r.params.some((p) => p.in === 'path')) return false;
    const schema = r.responses.get('200')?.schema;
    return schema !== null && schema !== undefined;
  });
}

async function seqHigh(): Promise<number> {
  const rows = await query<{ value: unknown }>(
    `SELECT value FROM ${table('meta')} WHERE key = 'seq_high'`,
  );
  return Number(rows[0]?.value ?? 0);
}

/** Every list route once, its page as large as allowed and its cursor near the end of the log. */
async function readLists(): Promise<void> {
  const high = await seqHigh();
  for (const route of listRoutes()) {
    const parts: string[] = [];
    for (const p of route.params.filter((q) => q.in === 'query')) {
      if (p.name === 'limit' && typeof p.schema.maximum === 'number')
        parts.push(`limit=${p.schema.maximum}`);
      if (p.name === 'after') parts.push(`after=${Math.max(0, high - 200)}`);
    }
    count('lists read after an accepted write');
    const answer = await plainRequest('GET', withQuery(route.path, parts), route);
    assert.equal(
      answer.status,
      200,
      `${route.key} after the write answered ${answer.status}: ${answer.text.slice(0, 300)}`,
    );
  }
}

/** `path` with the query parts joined, if any. */
function withQuery(path: string, parts: readonly string[]): string {
  return parts.length > 0 ? `${path}?${parts.join('&')}` : path;
}

/** Every page of every list route, to the end. */
async function readAllPages(): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const route of listRoutes()) {
    let cursor: string | null = null;
    let after = 0;
    let total = 0;
    for (let page = 0; page < 10_000; page++) {
      const parts: string[] = [];
      const params = route.params.filter((q) => q.in === 'query').map((q) => q.name);
      if (params.includes('limit')) parts.push('limit=100');
      if (cursor !== null) parts.push(`cursor=${pct(cursor)}`);
      if (params.includes('after')) parts.push(`after=${after}`);
      const answer = await plainRequest('GET', withQuery(route.path, parts), route);
      assert.equal(
        answer.status,
        200,
        `${route.key} page ${page} answered ${answer.status}: ${answer.text.slice(0, 300)}`,
      );
      const json = answer.json as Json;
      const items = [json.items, json.events, json.secrets].find(Array.isArray) as
        unknown[] | undefined;
      total += items?.length ?? 0;
      if (typeof json.nextCursor === 'string') cursor = json.nextCursor;
      else if (typeof json.nextAfter === 'number' && json.nextAfter !== after)
        after = json.nextAfter;
      else break;
    }
    counts.set(route.key, total);
  }
  return counts;
}

/** The id an answer names: its body's `id`, or the last segment of its Location. */
function answeredId(answer: Answer): string | null {
  const json = answer.json as Json | null;
  if (answer.isJson && json && typeof json.id === 'string') return json.id;
  const location = headerOf(answer, 'location') ?? headerOf(answer, 'content-location');
  if (location === undefined) return null;
  return location.split('?')[0]?.split('/').at(-1) ?? null;
}

/** After an accepted write: the resource reads back whole, and the lists still answer. */
async function checkAcceptedWrite(spec: RequestSpec, built: Built, answer: Answer): Promise<void> {
  const { route } = spec;
  const id = answeredId(answer);
  /** What the server showed of the resource: the answer, then each read-back. */
  const shown: unknown[] = [answer.json];
  if (route.method === 'DELETE') {
    const gone = await plainRequest(
      'GET',
      built.resourcePath ?? '',
      routeMatching('GET', built.resourcePath ?? '') ?? null,
    );
    assert.equal(
      gone.status,
      404,
      `GET after DELETE ${built.resourcePath ?? ''} answered ${gone.status}`,
    );
    for (const [key, entry] of idempotency)
      if (built.resourcePath?.endsWith(entry.id)) idempotency.delete(key);
    // Fuzz the live ones mostly; the deleted ones stay known, for a 404 now and then.
    const deleted = built.resourcePath?.split('/').at(-1) ?? '';
    for (const pool of pools.values()) {
      const at = pool.indexOf(deleted);
      if (at >= 0) pool.splice(at, 1);
    }
    deletedIds.push(deleted);
  } else if (id !== null) {
    const readers = fx().routes.filter((r) => {
      if (r.method !== 'GET') return false;
      const params = r.params.filter((p) => p.in === 'path');
      return (
        params.length === 1 &&
        typeof params[0]?.schema.pattern === 'string' &&
        new RegExp(params[0].schema.pattern).test(id)
      );
    });
    for (const reader of readers) {
      const back = await plainRequest('GET', reader.path.replace(/\{[^}]+\}/, id), reader);
      assert.equal(
        back.status,
        200,
        `${reader.key} of the written ${id} answered ${back.status}: ${back.text.slice(0, 300)}`,
      );
      shown.push(back.json);
      const written = answer.json as Json | null;
      const read = back.json as Json | null;
      if (
        written &&
        read &&
        typeof written.version === 'number' &&
        typeof read.version === 'number'
      ) {
        assert.equal(
          read.version,
          written.version,
          `${id} reads back at version ${read.version}, answered ${written.version}`,
        );
      }
    }
  }
  const json = answer.json as Json | null;
  if (answer.isJson && json && typeof json.token === 'string') {
    for (const reader of fx().routes.filter((r) => r.takesStreamToken && r.method === 'GET')) {
      const operation =
        typeof json.operation === 'string'
          ? json.operation
          : (pools.get('^op_[0-9A-Za-z]{30}$')?.[0] ?? 'none');
      const target = `${reader.path.replace(/\{[^}]+\}/, operation)}?access_token=${pct(json.token)}`;
      const opened = await plainRequest('GET', target, reader, '');
      assert.notEqual(
        opened.status,
        401,
        `a minted stream token was refused on ${reader.key}: ${opened.text.slice(0, 200)}`,
      );
    }
  }
  if (answer.isJson && json && Array.isArray(json.secrets) && route.method === 'POST') {
    const reader = fx().routes.find(
      (r) => r.method === 'GET' && r.path === route.path.replace(/:[^/]*$/, ''),
    );
    if (reader) {
      const back = await plainRequest('GET', reader.path, reader);
      assert.equal(back.status, 200);
      assert.deepEqual(back.json, json, 'the rotated secrets do not read back');
    }
  }
  checkEchoes(route, built, shown);
  // The operation as stored: its input, labels and traceparent as sent.
  const input = isRecordLike(built.parsed?.value) ? built.parsed.value : null;
  if (
    id !== null &&
    id.startsWith('op_') &&
    route.body &&
    input &&
    headerOf(answer, 'idempotent-replayed') === undefined
  ) {
    const rows = await query<{ input: string; labels: string; traceparent: string | null }>(
      `SELECT input, CAST(labels AS TEXT) AS labels, traceparent FROM ${table('operations')} WHERE id = '${id.replace(/'/g, '')}'`,
    );
    const row = rows[0];
    assert.ok(row, `the accepted operation ${id} is not in the store`);
    count('stored input and labels as sent');
    assert.equal(
      canonicalJson(JSON.parse(row.input)),
      canonicalJson(input.input ?? null),
      `${id}: the stored input is not the one sent`,
    );
    assert.equal(
      canonicalJson(JSON.parse(row.labels)),
      canonicalJson(input.labels ?? {}),
      `${id}: the stored labels are not the ones sent`,
    );
    // Held to the rules as docs/limits.md words them, not to the server's own schema (the
    // oracle above): a schema loosened by mistake loosens the document with it.
    assert.deepEqual(
      labelRuleBreaks(JSON.parse(row.labels) as Record<string, unknown>),
      [],
      `${id}: stored labels that docs/limits.md forbids`,
    );
    count('stored labels within the documented rules');
    if (route.params.some((p) => p.name.toLowerCase() === 'traceparent')) {
      count(
        built.traceparent === undefined
          ? 'traceparent: none sent, none kept'
          : 'traceparent kept as W3C says',
      );
      assert.equal(
        row.traceparent,
        expectedTraceparent(built.traceparent),
        `${id}: stored traceparent for ${JSON.stringify(built.traceparent)}`,
      );
    }
  }
  await readLists();
}

/**
 * What breaks the label rules of docs/limits.md, written out here on purpose rather than
 * taken from the server's schema: at most 32 pairs; keys 1 to 63 of `A-Z a-z 0-9 _ . - /`,
 * starting with a letter or digit; values at most 256 characters, without control
 * characters (U+0000 to U+001F, U+007F to U+009F) or unpaired surrogates.
 */
function labelRuleBreaks(labels: Record<string, unknown>): string[] {
  const breaks: string[] = [];
  const entries = Object.entries(labels);
  if (entries.length > 32) breaks.push(`${entries.length} pairs`);
  for (const [key, value] of entries) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$/.test(key)) breaks.push(`key ${JSON.stringify(key)}`);
    if (typeof value !== 'string') {
      breaks.push(`${key}: not a string`);
      continue;
    }
    // Characters as JSON Schema's maxLength counts them (and the document states the limit
    // so): code points, a pair of surrogates one.
    const characters = value.length - (value.match(/[\ud800-\udbff][\udc00-\udfff]/g)?.length ?? 0);
    if (characters > 256) breaks.push(`${key}: ${characters} characters`);
    for (let i = 0; i < value.length; i++) {
      const code = value.charCodeAt(i);
      if (code <= 0x1f || (code >= 0x7f && code <= 0x9f)) {
        breaks.push(`${key}: U+${code.toString(16).padStart(4, '0')} at ${i}`);
      } else if (code >= 0xd800 && code <= 0xdbff) {
        const low = value.charCodeAt(i + 1);
        if (low >= 0xdc00 && low <= 0xdfff) i++;
        else breaks.push(`${key}: a lone high surrogate at ${i}`);
      } else if (code >= 0xdc00 && code <= 0xdfff) {
        breaks.push(`${key}: a lone low surrogate at ${i}`);
      }
    }
  }
  return breaks;
}

/**
 * Members sent as text (no pattern, not a date-time: kept as they are) or as a record of
 * texts (labels) read back as sent, in the answer and in every read-back.
 */
function checkEchoes(route: RouteSpec, built: Built, shown: unknown[]): void {
  const sent = built.parsed?.value;
  if (!route.body || !isRecordLike(sent)) return;
  const schema = resolveRef(fx().doc, route.body.schema);
  const properties =
    isRecordLike(schema) && isRecordLike(schema.properties) ? schema.properties : {};
  for (const [name, value] of Object.entries(sent)) {
    const property = resolveRef(fx().doc, properties[name]);
    if (!isRecordLike(property)) continue;
    const text =
      typeof value === 'string' &&
      property.pattern === undefined &&
      property.format !== 'date-time';
    const texts = isRecordLike(value) && Object.values(value).every((v) => typeof v === 'string');
    if (!text && !texts) continue;
    for (const view of shown) {
      if (!isRecordLike(view) || !(name in view)) continue;
      count('members read back as sent');
      if (canonicalJson(view[name]) === canonicalJson(value)) continue;
      assert.fail(
        `${route.key}: ${name} was sent as ${JSON.stringify(value).slice(0, 120)} and shows as ${JSON.stringify(view[name]).slice(0, 120)}`,
      );
    }
  }
}

const isRecordLike = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** What the fuzz knows of Idempotency-Key: replays are replays, reuse is refused. */
function checkIdempotency(built: Built, answer: Answer): void {
  const key = built.idempotencyKey;
  if (key === null || !built.parsed) return;
  const canon = canonicalJson(built.parsed.value);
  const known = idempotency.get(key);
  const replayed = headerOf(answer, 'idempotent-replayed') === 'true';
  const code = answer.isJson ? (answer.json as Json).code : undefined;
  if (answer.status < 300) {
    const id = answeredId(answer);
    if (known) {
      assert.equal(
        known.canon,
        canon,
        `the key ${key}, taken for another body, was accepted again`,
      );
      assert.ok(replayed, `a replay of the key ${key} is not marked Idempotent-Replayed`);
      count('Idempotency-Key replays');
      assert.equal(id, known.id, `the replay of the key ${key} names another operation`);
      assert.equal(
        answer.status,
        known.status,
        `the replay of the key ${key} answered another status`,
      );
    } else {
      assert.ok(!replayed, `the new key ${key} answered as a replay`);
      if (id !== null) {
        const type = built.headerLines.find(([name]) => name.toLowerCase() === 'content-type');
        idempotency.set(key, {
          canon,
          id,
          status: answer.status,
          body: built.body ?? Buffer.alloc(0),
          type: type?.[1] ?? null,
        });
      }
    }
  } else if (code === 'IDEMPOTENCY_KEY_REUSED') {
    assert.ok(
      known && known.canon !== canon,
      `IDEMPOTENCY_KEY_REUSED for the key ${key}, which the fuzz did not see used with another body`,
    );
    count('Idempotency-Key reuses refused');
  }
}

/** JSON text with DEL and the bytes above ASCII escaped too (JSON.stringify leaves them). */
const shownBytes = (text: string) =>
  JSON.stringify(text).replace(
    /[\x7f-\xff]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );

/** A request, for a failure report: what was sent, shortened. */
function describeRequest(spec: RequestSpec, built: Built | null): string {
  const lines = [`${spec.route.method} ${built?.target.slice(0, 300) ?? spec.route.path}`];
  for (const [name, value] of built?.headerLines ?? []) {
    lines.push(
      `  ${name}: ${shownBytes(value.length > 120 ? `${value.slice(0, 120)}… (${value.length} bytes)` : value)}`,
    );
  }
  if (spec.framing !== 'length') lines.push(`  (framing: ${spec.framing})`);
  if (spec.replay !== null) {
    lines.push('  (a replay: the body and Idempotency-Key of an earlier accepted submit)');
  }
  if (built?.body) {
    const text = built.body.toString('latin1');
    lines.push(`  bytes: ${shownBytes(text.length > 300 ? `${text.slice(0, 300)}…` : text)}`);
  }
  if (spec.body && spec.replay === null) {
    lines.push(
      `  body (${spec.body.how}, ${built?.body?.length ?? 0} bytes): ${describeValue(spec.body.value)}${spec.body.text.kind === 'none' ? '' : ` then ${JSON.stringify(spec.body.text)}`}`,
    );
  }
  if (built && built.mustRefuse.length > 0)
    lines.push(`  must be refused for: ${built.mustRefuse.join('; ')}`);
  return lines.join('\n');
}

/** Every request built, by its spec: the report shows the counterexample as it was sent. */
const builds = new WeakMap<RequestSpec, Built>();

/** Sends one fuzzed request and checks everything the fuzz knows about its answer. */
async function run(spec: RequestSpec): Promise<void> {
  const built = await build(spec);
  builds.set(spec, built);
  if (isAbandoned(spec.framing)) {
    await runAbandoned(spec.framing, built);
    return;
  }
  const before = await fingerprint();
  const answer = await exchange(fx().port, built.bytes);
  const afterwards = await fingerprint();
  const route = spec.route;
  const counts = stats.get(route.key) ?? new Map<number, number>();
  counts.set(answer.status, (counts.get(answer.status) ?? 0) + 1);
  stats.set(route.key, counts);
  checkAnswerShape(answer, route, {
    // A body, a type, or chunked framing (an empty body that is still one) where none is taken.
    strayBody:
      !route.body &&
      ((built.body?.length ?? 0) > 0 ||
        built.headerLines.some(([name]) => name.toLowerCase() === 'content-type') ||
        spec.framing.startsWith('chunked')),
  });
  assert.deepEqual(
    fingerprintDiff(before, afterwards, (k) => k.endsWith('|other')),
    [],
    'another tenant’s data changed',
  );
  if (answer.status >= 400) {
    count('refused requests, the store unchanged');
    if (built.mustRefuse.length > 0) count('requests that must be refused, refused');
    assert.deepEqual(
      fingerprintDiff(before, afterwards),
      [],
      `a refused request (${answer.status} ${String((answer.json as Json | null)?.code)}) changed the store`,
    );
  } else if (route.method === 'GET') {
    // Reads write nothing (but the tenant's callback secret, made on the first read).
    assert.deepEqual(
      fingerprintDiff(before, afterwards, (k) => !k.startsWith('cs|')),
      [],
      `a read (${answer.status}) changed the store`,
    );
  }
  if (answer.status < 300 && built.mustRefuse.length > 0) {
    assert.fail(
      `accepted (${answer.status}) although it must be refused for: ${built.mustRefuse.join('; ')}: ${answer.text.slice(0, 200)}`,
    );
  }
  if (answer.status === 304)
    assert.ok(
      built.headerLines.some(([n]) => n.toLowerCase() === 'if-none-match'),
      'a 304 without If-None-Match',
    );
  if (answer.isJson) harvest(answer.json, pools, pathPatterns());
  if (route.params.some((p) => p.name.toLowerCase() === 'idempotency-key'))
    checkIdempotency(built, answer);
  if (answer.status < 300 && route.method !== 'GET') await checkAcceptedWrite(spec, built, answer);
}

/**
 * A request whose client went away before sending it whole: nobody hears an answer, so what
 * counts is what the server did. Nothing it got can be acted on (the store is unchanged), and
 * a client leaving is no failure of the server's (no error-level log line, no 5xx to a
 * half-closed client that still reads).
 */
async function runAbandoned(framing: AbandonedFraming, built: Built): Promise<void> {
  const before = await fingerprint();
  const logged = fx().logs.length;
  const answers = await abandon(fx().port, built.bytes, framing);
  // No route: what a half-closed request is answered is the framework's, not the route's.
  for (const answer of answers) checkAnswerShape(answer, null);
  const errors = fx()
    .logs.slice(logged)
    .filter((line) => line.level >= 50);
  assert.deepEqual(
    errors.map(describeLog),
    [],
    `a request its client abandoned (${framing}) was logged at error level: the server took the client going away for a failure of its own`,
  );
  assert.deepEqual(
    fingerprintDiff(before, await fingerprint()),
    [],
    `a request its client abandoned (${framing}) changed the store`,
  );
  count('abandoned requests: nothing stored, nothing logged as an error');
}

async function fuzzRoute(
  t: TestContext,
  route: RouteSpec,
  arb: fc.Arbitrary<RequestSpec>,
  numRuns: number,
  budgetMs: number,
  label = '',
): Promise<void> {
  const started = Date.now();
  // The server keeps its state between runs: the first failure is the finding, and what
  // shrinking reports after it may be one of its consequences. Both are shown.
  const failure: { first: { spec: RequestSpec; error: string } | null } = { first: null };
  const property = fc.asyncProperty(arb, async (spec) => {
    try {
      await run(spec);
    } catch (error) {
      if (!fc.PreconditionFailure.isFailure(error)) {
        failure.first ??= { spec, error: error instanceof Error ? error.message : String(error) };
      }
      throw error;
    }
  });
  const params: fc.Parameters<[RequestSpec]> = {
    seed: seedOf(`${label}${route.key}`),
    numRuns,
    plugins: [fc.interruptAfterTimeLimit(budgetMs)],
  };
  const details = await fc.check(property, params);
  t.diagnostic(
    `${details.numRuns} runs in ${Date.now() - started} ms; answers ${JSON.stringify(Object.fromEntries(stats.get(route.key) ?? []))}`,
  );
  if (details.failed) {
    const shown = details.counterexample?.[0];
    const error =
      details.errorInstance instanceof Error
        ? details.errorInstance.message
        : String(details.errorInstance);
    assert.fail(
      [
        `${route.key}: ${error}`,
        `seed ${SEED} (route seed ${details.seed}, path ${details.counterexamplePath ?? '?'}; ${details.numRuns} runs, ${details.numShrinks} shrinks)`,
        `replay: ${REPLAY}`,
        'counterexample (shrunk):',
        shown ? describeRequest(shown, builds.get(shown) ?? null) : '(none)',
        ...(failure.first && failure.first.spec !== shown
          ? [
              `first failure: ${failure.first.error}`,
              describeRequest(failure.first.spec, builds.get(failure.first.spec) ?? null),
            ]
          : []),
      ].join('\n'),
    );
  }
}

/** How many cases a route gets: writes with bodies most, reads of one resource least. */
function runsOf(route: RouteSpec): number {
  let runs = 40;
  if (route.isPublic) runs = 8;
  else if (route.body) {
    runs = route.params.some((p) => p.name.toLowerCase() === 'idempotency-key') ? 160 : 100;
  } else if (route.method !== 'GET') runs = 40;
  else if (route.params.some((p) => p.in === 'path')) runs = 25;
  return Math.max(1, Math.round(runs * SCALE));
}

// ---- the WebSocket channel -------------------------------------------------------------------

/**
 * The subscription cap the fuzz server runs with (`maxSubscriptions`; 100 by default, see
 * docs/streams.md): small, so that a burst passes it cheaply.
 */
const WS_MAX_SUBSCRIPTIONS = 12;
/** docs/streams.md: a message may be nested 65 levels deep (one more than an HTTP body). */
const WS_MAX_DEPTH = 65;
/** The client messages of the document; `submit` and `cancel` are known but never sent. */
const WS_CLIENT_TYPES = ['subscribe', 'unsubscribe', 'ping', 'submit', 'cancel'];

/**
 * A validator of a schema of the AsyncAPI document (`#/...` inside it); `without-oneOf`:
 * the schema without its top `oneOf` (a subscribe's choice of `operation` or `filter`).
 */
function asyncValidator(
  pointer: string,
  variant: 'whole' | 'without-oneOf' = 'whole',
): ValidateFunction {
  const key = `asyncapi ${pointer} ${variant}`;
  let validate = responseValidators.get(key);
  if (!validate) {
    const schema = resolveRef(fx().asyncDoc, { $ref: pointer }) as Json;
    const used = variant === 'whole' ? schema : { ...schema, oneOf: undefined };
    validate = fx().ajv.compile(
      JSON.parse(JSON.stringify(used).replaceAll('"$ref":"#/', '"$ref":"asyncapi.json#/')) as Json,
    );
    responseValidators.set(key, validate);
  }
  return validate;
}

/**
 * The request id an error carries (docs/streams.md: a string of at most 64 characters, or an
 * integer), as the server reads it before the message is checked: 64 UTF-16 units, a safe
 * integer. An ack or a pong carries the id of the valid message as it is.
 */
function wsRequestId(value: unknown): string | number | undefined {
  const id = isRecordLike(value) ? value.id : undefined;
  return (typeof id === 'string' && id.length <= 64) || Number.isSafeInteger(id)
    ? (id as string | number)
    : undefined;
}

/**
 * What the server may answer one message: each answer as `outcome id`, the outcome
 * `ack:subscribe`, `ack:unsubscribe:s3`, `pong` or an error code, the id as JSON text (none
 * for an answer without one).
 */
interface WsExpected {
  allowed: string[];
  text: string;
  how: string;
}

/**
 * What docs/streams.md says the server answers a message, read from its text as the server
 * reads it: a binary frame, text that is not JSON, too deep or with an inexact number is
 * refused without an id; a message its schema (in the AsyncAPI document) refuses is
 * INVALID_MESSAGE; a valid subscribe is acknowledged, or refused for the cap, or, naming an
 * operation that is not the tenant's, refused as not found; an unsubscribe is acknowledged
 * or SUBSCRIPTION_NOT_FOUND; a ping is answered pong. An error carries the id when it is a
 * string of at most 64 characters or a safe integer; an ack or a pong the id of the valid
 * message, as it is.
 */
function wsExpectation(
  text: string,
  binary: boolean,
  own: ReadonlySet<string>,
  how: string,
): WsExpected {
  const answer = (allowed: string[]): WsExpected => ({ allowed, text, how });
  const anonymous = (codes: string[]) => answer(codes.map((code) => `${code} `));
  if (binary) return anonymous(['INVALID_MESSAGE']);
  const early = [
    ...(jsonDepth(text) > WS_MAX_DEPTH ? ['JSON_TOO_DEEP'] : []),
    ...(inexactNumber(text) !== null ? ['NUMBER_OUT_OF_RANGE'] : []),
  ];
  let poisoned = false;
  let value: unknown;
  try {
    value = JSON.parse(text, (key, v: unknown) => {
      if (key === '__proto__' || (key === 'constructor' && isRecordLike(v) && 'prototype' in v)) {
        poisoned = true;
      }
      return v;
    });
  } catch {
    return anonymous(['INVALID_MESSAGE', ...early]);
  }
  if (early.length > 0) return anonymous(early);
  if (poisoned) return anonymous(['INVALID_MESSAGE']);
  const id = wsRequestId(value);
  const refused = (codes: string[]) =>
    codes.map((code) => `${code} ${id === undefined ? '' : JSON.stringify(id)}`);
  const type = isRecordLike(value) ? value.type : undefined;
  if (typeof type !== 'string' || !WS_CLIENT_TYPES.includes(type)) {
    return answer(refused(['INVALID_MESSAGE']));
  }
  const payload = `#/components/messages/ws.${type}/payload`;
  if (!asyncValidator(payload)(value)) {
    // `operation` or `filter`, not both: the server checks it after the cap.
    const onlyTheChoice = type === 'subscribe' && asyncValidator(payload, 'without-oneOf')(value);
    return answer(
      refused(onlyTheChoice ? ['INVALID_MESSAGE', 'TOO_MANY_SUBSCRIPTIONS'] : ['INVALID_MESSAGE']),
    );
  }
  const message = value as Json;
  const echoed = (outcome: string) =>
    `${outcome} ${message.id === undefined ? '' : JSON.stringify(message.id)}`;
  if (type === 'ping') return answer([echoed('pong')]);
  if (type === 'unsubscribe') {
    return answer([
      echoed(`ack:unsubscribe:${String(message.subscription)}`),
      ...refused(['SUBSCRIPTION_NOT_FOUND']),
    ]);
  }
  if (typeof message.operation === 'string' && !own.has(message.operation)) {
    return answer(refused(['OPERATION_NOT_FOUND', 'TOO_MANY_SUBSCRIPTIONS']));
  }
  return answer([echoed('ack:subscribe'), ...refused(['TOO_MANY_SUBSCRIPTIONS'])]);
}

/** The outcome of an answer, as `wsExpectation` names them. */
function wsOutcome(message: Json): string {
  if (message.type === 'pong') return 'pong';
  if (message.type === 'error') return String(message.code);
  if (message.request === 'unsubscribe') return `ack:unsubscribe:${String(message.subscription)}`;
  return `ack:${String(message.request)}`;
}

/**
 * One WebSocket connection as the fuzz sees it: every message the server sends, checked as
 * it arrives against the document and against what the connection has been told so far.
 * A subscription is live from its acknowledgement to its `complete`, its failure (an error
 * naming it) or the acknowledgement of its unsubscribe; at no moment are more live than
 * the cap, and nothing arrives for a subscription that is not live.
 */
class WsSession {
  readonly messages: Json[] = [];
  /** Answers to requests (ack, pong, and errors that name no subscription), in order. */
  readonly answers: Json[] = [];
  readonly problems: string[] = [];
  readonly live = new Set<string>();
  private readonly started = new Set<string>();
  closed: { code: number; reason: string } | null = null;

  constructor(
    readonly socket: WebSocket,
    private readonly cap: number,
    private readonly otherOperations: ReadonlySet<string>,
  ) {
    socket.on('message', (data: WebSocket.RawData, isBinary: boolean) =>
      this.receive(data, isBinary),
    );
    socket.on('close', (code: number, reason: Buffer) => {
      this.closed = { code, reason: reason.toString('utf8') };
    });
    socket.on('error', (error: Error) => this.problems.push(`socket error: ${error.message}`));
  }

  private problem(text: string): void {
    if (this.problems.length < 20) this.problems.push(text);
  }

  private receive(data: WebSocket.RawData, isBinary: boolean): void {
    const text = Buffer.isBuffer(data)
      ? data.toString('utf8')
      : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]).toString('utf8');
    if (isBinary) this.problem(`a binary message: ${text.slice(0, 200)}`);
    let message: Json;
    try {
      message = JSON.parse(text) as Json;
    } catch {
      this.problem(`a message that is not JSON: ${text.slice(0, 200)}`);
      return;
    }
    this.messages.push(message);
    const name = message.type === 'ack' ? `ack.${String(message.request)}` : String(message.type);
    const pointer = `#/components/messages/ws.${name}/payload`;
    const validate = (() => {
      try {
        return asyncValidator(pointer);
      } catch {
        return null;
      }
    })();
    if (!validate)
      this.problem(`a message the document does not name (ws.${name}): ${text.slice(0, 200)}`);
    else if (!validate(message)) {
      this.problem(
        `a ws.${name} message that does not match the document: ${fx().ajv.errorsText(validate.errors)}: ${text.slice(0, 300)}`,
      );
    }
    if (text.includes(OTHER_MARKER)) this.problem(`another tenant's data: ${text.slice(0, 300)}`);
    const subscription = typeof message.subscription === 'string' ? message.subscription : null;
    switch (message.type) {
      case 'ack':
      case 'pong':
        this.answers.push(message);
        if (message.request === 'subscribe' && subscription !== null) {
          if (this.started.has(subscription))
            this.problem(`the subscription ${subscription} acknowledged twice`);
          this.started.add(subscription);
          this.live.add(subscription);
          if (this.live.size > this.cap) {
            this.problem(
              `${this.live.size} subscriptions acknowledged and live on one connection, past the cap of ${this.cap} (docs/streams.md: however many subscribes a client sends at once, at most the cap are acknowledged)`,
            );
          }
        } else if (message.request === 'unsubscribe' && subscription !== null) {
          if (!this.live.delete(subscription)) {
            this.problem(`an unsubscribe of ${subscription}, which is not live, acknowledged`);
          }
        }
        break;
      case 'error':
        if (subscription === null) this.answers.push(message);
        else if (!this.live.delete(subscription)) {
          this.problem(`an error for ${subscription}, which is not live: ${text.slice(0, 200)}`);
        }
        break;
      case 'complete':
        if (subscription === null || !this.live.delete(subscription)) {
          this.problem(`complete for ${String(subscription)}, which is not live`);
        }
        break;
      case 'snapshot':
      case 'event': {
        if (subscription === null || !this.live.has(subscription)) {
          this.problem(
            `${message.type} for ${String(subscription)}, which is not live: ${text.slice(0, 200)}`,
          );
        }
        const event = isRecordLike(message.event)
          ? message.event
          : isRecordLike(message.operation)
            ? message.operation
            : {};
        const about = typeof event.operationId === 'string' ? event.operationId : event.id;
        if (typeof about === 'string' && this.otherOperations.has(about)) {
          this.problem(`an event of another tenant's operation ${about}`);
        }
        break;
      }
      case 'welcome':
        if (this.messages.length !== 1) this.problem('a welcome after the first message');
        if (message.tenant !== 'fuzz')
          this.problem(`welcome to the tenant ${String(message.tenant)}`);
        break;
      default:
        this.problem(`the server sent ${text.slice(0, 200)}`);
    }
  }

  /** Waits until `check` holds; fails if the connection closes first, or after 15 s. */
  async until(check: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 15_000;
    while (!check()) {
      if (this.closed) {
        throw new Error(
          `the server closed the connection (${this.closed.code} ${this.closed.reason}) while waiting for ${what}`,
        );
      }
      if (Date.now() > deadline) throw new Error(`no ${what} within 15 s`);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }
}

/** Opens a WebSocket as the fuzz tenant and waits for its welcome. */
async function openWs(cap: number, otherOperations: ReadonlySet<string>): Promise<WsSession> {
  const socket = new WebSocket(`ws://127.0.0.1:${fx().port}/v1/ws`, {
    headers: { authorization: `Bearer ${FUZZ_KEY}` },
    perMessageDeflate: false,
  });
  const session = new WsSession(socket, cap, otherOperations);
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('unexpected-response', (_request, response) =>
      reject(new Error(`the upgrade was refused: ${response.statusCode ?? '?'}`)),
    );
    socket.once('error', reject);
  });
  await session.until(() => session.messages.length > 0, 'welcome');
  return session;
}

/** One message as sent: its text (or bytes) and what it must be answered. */
interface WsFrame {
  data: string;
  binary: boolean;
  expected: WsExpected;
}

let wsIds = 0;
/** How often each answer came (a check whose case never comes has no teeth). */
const wsOutcomes = new Map<string, number>();

/** The frame of a message: its JSON with a fresh request id when asked, its text mutated. */
function wsFrame(spec: WsMessageSpec, own: ReadonlySet<string>): WsFrame {
  let value = spec.value;
  if (spec.id === 'fresh') {
    const id = `w${++wsIds}`;
    if (value instanceof Entries) value = new Entries([...value.entries, ['id', id]]);
    else if (isRecordLike(value)) value = { ...value, id };
  }
  let text = writeJson(value);
  if (spec.text.kind === 'replace') text = spec.text.text;
  else if (spec.text.kind === 'truncate')
    text = text.slice(0, Math.floor(text.length * spec.text.at));
  return {
    data: text,
    binary: spec.binary,
    expected: wsExpectation(text, spec.binary, own, spec.how),
  };
}

/**
 * Sends the frames at once, waits for an answer to each, and checks that every message got
 * exactly one, carrying its id, of the outcomes docs/streams.md allows it.
 */
async function wsBurst(session: WsSession, frames: WsFrame[], what: string): Promise<Json[]> {
  const from = session.answers.length;
  for (const frame of frames) {
    session.socket.send(frame.binary ? Buffer.from(frame.data) : frame.data, {
      binary: frame.binary,
    });
  }
  await session.until(
    () => session.answers.length - from >= frames.length,
    `an answer to each of the ${frames.length} messages of ${what} (${session.answers.length - from} came)`,
  );
  const answers = session.answers.slice(from);
  for (const answer of answers) {
    const outcome = wsOutcome(answer).replace(/:s\d+$/, '');
    wsOutcomes.set(outcome, (wsOutcomes.get(outcome) ?? 0) + 1);
  }
  // Each answer to one message it may answer, each message one answer: a matching (Kuhn's
  // augmenting paths), since messages without a usable id share their answers' id.
  const signature = (a: Json) =>
    `${wsOutcome(a)} ${a.id === undefined ? '' : JSON.stringify(a.id)}`;
  const owner = new Array<number>(frames.length).fill(-1);
  const tryMatch = (i: number, seen: boolean[]): boolean => {
    const sig = signature(answers[i] ?? {});
    for (const [j, frame] of frames.entries()) {
      if (seen[j] || !frame.expected.allowed.includes(sig)) continue;
      seen[j] = true;
      if (owner[j] === -1 || tryMatch(owner[j] ?? -1, seen)) {
        owner[j] = i;
        return true;
      }
    }
    return false;
  };
  const unmatched = answers.filter(
    (_, i) => !tryMatch(i, new Array<boolean>(frames.length).fill(false)),
  );
  const shown = (e: WsExpected) =>
    `${e.how}: ${JSON.stringify(e.text.length > 200 ? `${e.text.slice(0, 200)}…` : e.text)} (may be answered ${e.allowed.join(' or ')})`;
  const unanswered = frames.filter((_, j) => owner[j] === -1).map((f) => f.expected);
  if (unmatched.length > 0 || unanswered.length > 0) {
    session.problems.push(
      `answers to no message of ${what}: ${unmatched.map((a) => JSON.stringify(a).slice(0, 200)).join(', ') || 'none'}; messages without an answer they may have: ${unanswered.slice(0, 4).map(shown).join('; ') || 'none'}`,
    );
  }
  return answers;
}

/** What a burst held, for a failure report: how many of each kind of message. */
function describeBurst(burst: readonly WsMessageSpec[]): string {
  const kinds = new Map<string, number>();
  for (const spec of burst) kinds.set(spec.how, (kinds.get(spec.how) ?? 0) + 1);
  return `${burst.length} messages: ${[...kinds].map(([how, n]) => `${n}× ${how}`).join(', ')}`;
}

/** A subscribe of the whole tenant's events, from now on. */
const subscribeAll = (own: ReadonlySet<string>): WsFrame =>
  wsFrame(
    {
      value: { type: 'subscribe', filter: {} },
      id: 'fresh',
      text: { kind: 'none' },
      binary: false,
      how: 'subscribe to every event',
    },
    own,
  );

// ---- snapshots of operations that change ------------------------------------------------------

interface LogEvent {
  seq: number;
  version: number;
  type: string;
}

const TERMINAL = ['succeeded', 'failed', 'canceled'];

/** Every event of one operation in the log (through the API), once it holds `seq`. */
async function logOf(operation: string, seq: number): Promise<LogEvent[]> {
  const route = routeMatching('GET', `/v1/operations/${operation}/events`) ?? null;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const page = await plainRequest(
      'GET',
      `/v1/operations/${operation}/events?after=0&limit=1000`,
      route,
      `Bearer ${STREAMS_KEY}`,
    );
    assert.equal(page.status, 200, `the events of ${operation}: ${page.status} ${page.text}`);
    const events = (page.json as { events: LogEvent[] }).events;
    if (seq === 0 || events.some((e) => e.seq >= seq)) return events;
    if (Date.now() > deadline) {
      assert.fail(`${operation}: the event ${seq}, sent on a stream, is not in the log after 15 s`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A stream opened without a cursor, and a resume from its snapshot's id opened at once. */
interface SnapshotSeen {
  operation: string;
  snapshot: SseMessage;
  /** The messages after the snapshot; `ended`: the stream ended (after the terminal event). */
  rest: SseMessage[];
  ended: boolean;
  resumed: { status: number; messages: SseMessage[]; ended: boolean };
}

const streamAuth = () => ({ authorization: `Bearer ${STREAMS_KEY}` });

/** The seqs of a stream's events; each one's SSE id is its seq. */
function streamSeqs(operation: string, messages: SseMessage[]): number[] {
  return messages
    .filter((m) => m.event?.startsWith('operation.'))
    .map((m) => {
      const event = JSON.parse(m.data) as { seq: number };
      assert.equal(m.id, String(event.seq), `${operation}: an SSE id that is not its event's seq`);
      return event.seq;
    });
}

/**
 * Opens the stream of `operation` without a cursor, then (as a client that lost it right
 * after the snapshot) a resume with the snapshot's id as Last-Event-ID; reads both until they
 * end (after the terminal event) or `stop` settles.
 */
async function snapshotOf(operation: string, stop: Promise<void>): Promise<SnapshotSeen> {
  const url = `http://127.0.0.1:${fx().port}/v1/operations/${operation}/events`;
  const stream = new SseClient(url, streamAuth());
  let resumed: SseClient | null = null;
  try {
    await stream.until(
      () => stream.messages.length > 0 || (stream.status !== 0 && stream.status !== 200),
      'the snapshot',
    );
    assert.equal(stream.status, 200, `the stream of ${operation}: ${stream.status} ${stream.body}`);
    const [snapshot] = stream.messages;
    assert.equal(
      snapshot?.event,
      'operation.snapshot',
      `the stream of ${operation} began with ${JSON.stringify(snapshot)}`,
    );
    const again = new SseClient(url, { ...streamAuth(), 'last-event-id': snapshot.id ?? '' });
    resumed = again;
    let ended = false;
    let resumedEnded = false;
    await Promise.race([
      Promise.all([
        stream.ended.then(() => (ended = true)),
        again.ended.then(() => (resumedEnded = true)),
      ]),
      stop,
    ]);
    return {
      operation,
      snapshot,
      rest: stream.messages.slice(1),
      ended,
      resumed: { status: again.status, messages: [...again.messages], ended: resumedEnded },
    };
  } finally {
    stream.close();
    resumed?.close();
  }
}

/**
 * Checks a snapshot against the log (docs/streams.md): its id is the seq of the last event
 * the state it shows reflects (the log's event of its version); the stream then sends the
 * log's events after that version, in order, each once, and so does a resume from its id
 * (`204` when nothing follows). A stream cut short (its operation still changing when the
 * reading stopped) has sent the first of them.
 */
function checkSnapshot(seen: SnapshotSeen, log: LogEvent[]): void {
  const { operation, snapshot } = seen;
  const data = JSON.parse(snapshot.data) as {
    seq: number;
    operation: { id: string; version: number; status: string };
  };
  assert.equal(data.operation.id, operation);
  assert.equal(snapshot.id, String(data.seq), `${operation}: the snapshot's id is not its seq`);
  const version = data.operation.version;
  const shown = log.find((e) => e.version === version);
  const versions = log.map((e) => `${e.version}@${e.seq}`).join(' ');
  assert.ok(
    shown,
    `${operation}: the snapshot shows version ${version}, which no event of the log has (log: ${versions})`,
  );
  assert.equal(
    data.seq,
    shown.seq,
    `${operation}: the snapshot of version ${version} (${data.operation.status}) has the id ${snapshot.id ?? '?'}, but the log's event of that version is seq ${shown.seq} (log, version@seq: ${versions}): ${data.seq < shown.seq ? 'a resume from it repeats changes the snapshot shows' : 'a resume from it misses any change made since that event'} (docs/streams.md: the snapshot's id is the seq of the last event that state reflects)`,
  );
  const after = log.filter((e) => e.version > version).map((e) => e.seq);
  const sent = (what: string, seqs: number[], ended: boolean) => {
    assert.deepEqual(
      seqs,
      ended ? after : after.slice(0, seqs.length),
      `${operation}: ${what} did not send the log's events after the snapshot's version ${version} (id ${snapshot.id ?? '?'}) in order, once each (log, version@seq: ${versions})`,
    );
  };
  sent('the stream, after its snapshot,', streamSeqs(operation, seen.rest), seen.ended);
  const { resumed } = seen;
  if (resumed.status === 204) {
    assert.deepEqual(
      after,
      [],
      `${operation}: a resume from the snapshot's id ${snapshot.id ?? '?'} answered 204 (the operation is over and the client has it all), but the log has later events (version@seq: ${versions})`,
    );
    count('snapshots of finished operations, resumed with 204');
  } else {
    assert.equal(resumed.status, 200, `${operation}: a resume answered ${resumed.status}`);
    sent(
      `a resume with the snapshot's id ${snapshot.id ?? '?'} as Last-Event-ID`,
      streamSeqs(operation, resumed.messages),
      resumed.ended,
    );
    if (resumed.ended && after.length === 0) {
      assert.fail(`${operation}: a resume from a finished operation's snapshot answered 200`);
    }
    count('snapshots resumed, the events after them sent once');
  }
}

/**
 * Long-polls a monitor with the ETag of each answer until the operation ends (or `stop`):
 * each answer's ETag names a version whose event the log already holds (docs/http.md: the
 * monitor shows durable state only), and the body's version is the ETag's.
 */
async function longPoll(operation: string, stopped: () => boolean): Promise<number> {
  const route = routeMatching('GET', `/v1/operations/${operation}`) ?? null;
  const events = routeMatching('GET', `/v1/operations/${operation}/events`) ?? null;
  let etag: string | undefined;
  let polls = 0;
  while (!stopped() && polls < 200) {
    polls++;
    const answer = await exchange(
      fx().port,
      Buffer.from(
        `GET /v1/operations/${operation} HTTP/1.1\r\nHost: 127.0.0.1:${fx().port}\r\nAuthorization: Bearer ${STREAMS_KEY}\r\nPrefer: wait=1\r\n${etag === undefined ? '' : `If-None-Match: ${etag}\r\n`}Connection: close\r\n\r\n`,
      ),
    );
    checkAnswerShape(answer, route);
    assert.ok(
      answer.status === 200 || answer.status === 304,
      `a long poll of ${operation} answered ${answer.status}`,
    );
    const tag = headerOf(answer, 'etag') ?? '';
    const version = Number(/^"(\d+)"$/.exec(tag)?.[1]);
    const page = await plainRequest(
      'GET',
      `/v1/operations/${operation}/events?after=0&limit=1000`,
      events,
      `Bearer ${STREAMS_KEY}`,
    );
    const log = (page.json as { events: LogEvent[] }).events;
    assert.ok(
      log.some((e) => e.version === version),
      `${operation}: a long poll answered ${answer.status} with the ETag ${tag} before the log holds the event of that version (log, version@seq: ${log.map((e) => `${e.version}@${e.seq}`).join(' ')})`,
    );
    etag = tag;
    if (answer.status === 200) {
      const monitor = answer.json as { version: number; status: string };
      assert.equal(
        monitor.version,
        version,
        `${operation}: the ETag ${tag} of a monitor of version ${monitor.version}`,
      );
      if (TERMINAL.includes(monitor.status)) break;
    }
  }
  return polls;
}

/**
 * How long the streams and long polls of the changing operations are read at most: they end
 * far sooner (when the operations do); on a store whose writes are held up, what was read by
 * then is checked.
 */
const CHANGING_WINDOW_MS = 3000;

/**
 * Operations that change (progress steps, failed attempts and retries) while their streams
 * open at moments of the seed's choosing, with the workers running what is left of the
 * fuzzed ones: every snapshot is consistent with the log, and so is every long-polled ETag.
 */
async function checkChangingOperations(): Promise<string> {
  const [plan = []] = fc.sample(changingOperationsArb, { seed: seedOf('snapshots'), numRuns: 1 });
  const submitRoute = routeMatching('POST', '/v1/operations') ?? null;
  // At once: one commit for all.
  const submitted = await Promise.all(
    plan.map(async (change): Promise<[ChangingOperation, string]> => {
      const body = JSON.stringify(change.submit);
      const answer = await exchange(
        fx().port,
        Buffer.from(
          `POST /v1/operations HTTP/1.1\r\nHost: 127.0.0.1:${fx().port}\r\nAuthorization: Bearer ${STREAMS_KEY}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        ),
      );
      checkAnswerShape(answer, submitRoute);
      assert.equal(answer.status, 202, `${body}: ${answer.status} ${answer.text.slice(0, 200)}`);
      return [change, String((answer.json as Json).id)];
    }),
  );
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const stop = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, CHANGING_WINDOW_MS);
  });
  const stopped = () => Date.now() - started >= CHANGING_WINDOW_MS;
  const seen: SnapshotSeen[] = [];
  let polls = 0;
  try {
    await Promise.all(
      submitted.flatMap(([change, id]) => [
        ...change.snapshotsAt.map(async (ms) => {
          await new Promise((resolve) => setTimeout(resolve, ms));
          seen.push(await snapshotOf(id, stop));
        }),
        ...(change.poll ? [longPoll(id, stopped).then((n) => void (polls += n))] : []),
      ]),
    );
  } finally {
    clearTimeout(timer);
  }
  const states = new Map<string, number>();
  for (const snapshot of seen) {
    const seqs = [
      ...streamSeqs(snapshot.operation, snapshot.rest),
      ...streamSeqs(snapshot.operation, snapshot.resumed.messages),
    ];
    const data = JSON.parse(snapshot.snapshot.data) as {
      seq: number;
      operation: { status: string };
    };
    // The log is read once it holds every event the streams sent (of this operation).
    checkSnapshot(snapshot, await logOf(snapshot.operation, Math.max(0, ...seqs)));
    const status = data.operation.status + (snapshot.ended ? '' : ' (read in part)');
    states.set(status, (states.get(status) ?? 0) + 1);
  }
  return `${seen.length} snapshots of ${submitted.length} changing operations in ${Date.now() - started} ms, by the status they showed ${JSON.stringify(Object.fromEntries(states))}; ${polls} long polls`;
}

// ---- the suite --------------------------------------------------------------------------------

describe(onStore('fuzz: every JSON route of the OpenAPI document'), { timeout: 240_000 }, () => {
  let receiver: { server: http.Server; port: number } | null = null;
  let worker: AcceptedServer | null = null;

  before(async () => {
    receiver = await startReceiver();
    const place = newStorePlace();
    const logs = captured.logs;
    const server = startFuzzServer(place, false);
    const url = await server.start();
    const port = Number(new URL(url).port);
    const text = await fetch(`${url}/v1/openapi.json`).then((r) => r.text());
    const doc = JSON.parse(text) as Json;
    const asyncDoc = JSON.parse(
      await fetch(`${url}/v1/asyncapi.json`).then((r) => r.text()),
    ) as Json;
    const ajv = createAjv();
    ajv.addSchema(doc, 'openapi.json');
    ajv.addSchema(asyncDoc, 'asyncapi.json');
    const goodUrls = [
      `http://127.0.0.1:${receiver.port}/hooks`,
      `http://127.0.0.1:${receiver.port}/hooks/a?b=c`,
      `http://localhost:${receiver.port}/x`,
      `http://127.0.0.2:${receiver.port}/`,
      `https://127.0.0.1:${receiver.port}/tls`,
    ];
    fixture = {
      server,
      port,
      place,
      doc,
      asyncDoc,
      routes: [],
      env: { doc, goodUrls },
      ajv,
      logs,
    };
    fixture.routes = routesOf(doc);
  });

  after(async () => {
    if (fixture) await fixture.server.stop({ graceful: false });
    await worker?.stop({ graceful: false });
    await new Promise<void>((resolve) =>
      receiver ? receiver.server.close(() => resolve()) : resolve(),
    );
  });

  it('builds a generator for every route of the document', () => {
    const { routes, env } = fx();
    assert.ok(routes.length > 10, `only ${routes.length} routes in the document`);
    const failures: string[] = [];
    for (const route of routes) {
      try {
        fc.sample(requestArb(route, env, fc.constant<Auth>('key')), { numRuns: 5, seed: SEED });
        if (route.body) {
          // The valid values must be valid, or the near-valid ones are near nothing.
          const validate = bodyValidator(route);
          const samples = fc.sample(validArb(env, route.body.schema, route.key), {
            numRuns: 30,
            seed: SEED,
          });
          const bad = samples.filter((v) => !validate(structuredClone(v)));
          if (bad.length > 3)
            failures.push(
              `${route.key}: ${bad.length}/30 "valid" bodies are not: ${describeValue(bad[0])}`,
            );
        }
      } catch (error) {
        if (!(error instanceof NoStrategy)) throw error;
        failures.push(`${route.key}: ${error.message}`);
      }
    }
    assert.deepEqual(failures, [], 'routes the fuzz has no generator for');
  });

  it('seeds both tenants with operations, an endpoint and deliveries', async () => {
    const { port } = fx();
    const call = async (key: string, method: string, target: string, body?: unknown) => {
      const payload = body === undefined ? '' : JSON.stringify(body);
      const answer = await exchange(
        port,
        Buffer.from(
          `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${key}\r\nConnection: close\r\n${body === undefined ? '' : 'Content-Type: application/json\r\n'}Content-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`,
        ),
      );
      checkAnswerShape(answer, null, { tenant: key === FUZZ_KEY ? 'fuzz' : 'other' });
      assert.ok(answer.status < 300, `${method} ${target}: ${answer.status} ${answer.text}`);
      return answer;
    };
    const hook = fx().env.goodUrls[0] ?? '';
    for (const [key, into, description] of [
      [FUZZ_KEY, pools, 'fuzz'],
      [OTHER_KEY, otherPools, OTHER_MARKER],
    ] as const) {
      const seen: unknown[] = [];
      // The callback secret exists from the start: the dispatcher would make it on its own
      // (on the first callback), between two fingerprints.
      await call(key, 'GET', '/v1/webhooks/callback-secret');
      seen.push(
        (await call(key, 'POST', '/v1/webhooks/endpoints', { url: hook, description })).json,
      );
      for (const type of ['demo.echo', 'demo.sleep', 'demo.fail']) {
        const input =
          type === 'demo.sleep'
            ? { ms: 1 }
            : type === 'demo.fail'
              ? { message: description }
              : { owner: description };
        seen.push(
          (
            await call(key, 'POST', '/v1/operations', {
              type,
              input,
              labels: { owner: description },
            })
          ).json,
        );
      }
      const first = seen[1] as Json;
      seen.push((await call(key, 'POST', `/v1/operations/${String(first.id)}:cancel`)).json);
      seen.push((await call(key, 'POST', '/v1/stream-tokens', {})).json);
      for (const value of seen) harvest(value, into, pathPatterns());
    }
    // The dispatcher turns the events into deliveries: wait for some to list.
    for (let i = 0; i < 100; i++) {
      const page = await plainRequest(
        'GET',
        '/v1/webhooks/deliveries',
        routeMatching('GET', '/v1/webhooks/deliveries') ?? null,
      );
      if (((page.json as Json).items as unknown[]).length > 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const other = await exchange(
      port,
      Buffer.from(
        `GET /v1/webhooks/deliveries HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${OTHER_KEY}\r\nConnection: close\r\n\r\n`,
      ),
    );
    harvest(other.json, otherPools, pathPatterns());
    assert.ok(
      (pools.get('^dlv_[0-9A-Za-z]{22}$') ?? []).length > 0 ||
        !pathPatterns().includes('^dlv_[0-9A-Za-z]{22}$'),
      'no delivery to fuzz with',
    );
  });

  it('fuzzes each route: bodies, query strings and headers', async (t) => {
    const { routes, env } = fx();
    const auth = fc.oneof(
      { arbitrary: fc.constant<Auth>('key'), weight: 20 },
      { arbitrary: fc.constantFrom<Auth>('key-lowercase', 'key-spaces'), weight: 1 },
    );
    // A time cap per route, its share of FUZZ_BUDGET_MS: on a loaded machine a route runs
    // fewer cases (the diagnostics say how many) rather than the file running long.
    const total = routes.reduce((n, r) => n + runsOf(r), 0);
    const accepted = new Set<string>();
    for (const route of routes) {
      const runs = runsOf(route);
      const cap = Math.max(2000, (2 * FUZZ_BUDGET_MS * SCALE * runs) / total);
      await t.test(route.key, async (sub) => {
        if (route.body) {
          const seen = () =>
            [...(stats.get(route.key) ?? new Map<number, number>())].reduce(
              (n, [status, times]) => n + (status < 300 ? times : 0),
              0,
            );
          const start = seen();
          await fuzzRoute(sub, route, probeArb(route, env), 10, 10_000, 'probe ');
          await fuzzRoute(sub, route, requestArb(route, env, auth), runs, cap);
          if (seen() > start) accepted.add(route.key);
        } else {
          await fuzzRoute(sub, route, requestArb(route, env, auth), runs, cap);
        }
      });
    }
    t.diagnostic(`checks: ${JSON.stringify(Object.fromEntries(checked))}`);
    assert.deepEqual(
      routes.filter((r) => r.body && !accepted.has(r.key)).map((r) => r.key),
      [],
      'write routes the fuzz (valid probes included) never got a 2xx from: it does not reach them',
    );
  });

  it('refuses bad credentials on every route, and they change nothing', async (t) => {
    const { routes, env } = fx();
    const bad = fc.constantFrom<Auth>(
      'none',
      'wrong',
      'basic',
      'empty-bearer',
      'token-as-bearer',
      'key-junk',
      'overlong',
      'twice',
    );
    for (const route of routes) {
      await t.test(route.key, async (sub) => {
        const arb = fc
          .tuple(
            requestArb(route, env, bad),
            fc.option(fc.constantFrom('junk', 'st_x.y', 'a'.repeat(3000)), { nil: null }),
          )
          .map(([spec, accessToken]): RequestSpec => ({
            ...spec,
            // Ids the server knows: a malformed path is refused before the credentials are read.
            ids: spec.ids.map(([name], i): [string, IdChoice] => [
              name,
              { kind: 'pool', index: i },
            ]),
            // Only the credentials are wrong: the rest of the request is fine.
            framing: 'length',
            stray: [],
            headers: spec.headers.filter((h) => h.value.kind !== 'big'),
            query: route.takesStreamToken ? [] : spec.query.filter((q) => q.raw === undefined),
            unknownQuery: null,
            accessToken: route.takesStreamToken ? accessToken : null,
          }));
        const details: fc.RunDetails<[RequestSpec]> = await fc.check(
          fc.asyncProperty(arb, async (spec) => {
            const built = await build(spec);
            builds.set(spec, built);
            const before = await fingerprint();
            const answer = await exchange(fx().port, built.bytes);
            checkAnswerShape(answer, route);
            assert.deepEqual(
              fingerprintDiff(before, await fingerprint()),
              [],
              `bad credentials (${answer.status}) changed the store`,
            );
            const code = (answer.json as Json | null)?.code;
            if (route.isPublic) {
              assert.notEqual(
                answer.status,
                401,
                'a public route refused a request for its credentials',
              );
            } else if (built.mustRefuse.some((r) => r.startsWith(UNPARSABLE))) {
              assert.equal(
                answer.status,
                400,
                `${built.mustRefuse.join('; ')}: answered ${answer.status}`,
              );
              assert.equal(code, 'MALFORMED_REQUEST');
            } else if (
              spec.auth === 'twice' ||
              built.mustRefuse.some((r) => r.startsWith('headers of'))
            ) {
              assert.ok(answer.status >= 400 && answer.status < 500, `answered ${answer.status}`);
            } else {
              assert.equal(
                answer.status,
                401,
                `bad credentials (${spec.auth}) answered ${answer.status} ${JSON.stringify(answer.json)}; sent ${shownBytes(built.bytes.subarray(0, 600).toString('latin1'))}`,
              );
              assert.equal(code, 'UNAUTHENTICATED');
              assert.match(headerOf(answer, 'www-authenticate') ?? '', /^Bearer realm="accepted"/);
            }
          }),
          { seed: seedOf(`bad ${route.key}`), numRuns: Math.max(1, Math.round(6 * SCALE)) },
        );
        sub.diagnostic(`${details.numRuns} runs`);
        if (details.failed) {
          const shown = details.counterexample?.[0];
          assert.fail(
            [
              `${route.key}: ${details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)}`,
              `seed ${SEED} (route seed ${details.seed}, path ${details.counterexamplePath ?? '?'})`,
              `replay: ${REPLAY}`,
              shown ? describeRequest(shown, builds.get(shown) ?? null) : '',
            ].join('\n'),
          );
        }
      });
    }
  });

  it('fuzzes the WebSocket: bursts of subscribes and unsubscribes, each answered, never past the cap', async (t) => {
    const cap = WS_MAX_SUBSCRIPTIONS;
    const rows = await query<{ id: string; tenant: string }>(
      `SELECT id, tenant FROM ${table('operations')}`,
    );
    const own = new Set(rows.filter((r) => r.tenant === 'fuzz').map((r) => r.id));
    const other = new Set(rows.filter((r) => r.tenant !== 'fuzz').map((r) => r.id));
    const targets: WsTargets = {
      own: [...own],
      other: [...other],
      gone: deletedIds.filter((id) => id.startsWith('op_') && !own.has(id)),
      maxSubscription: 4 * cap,
    };
    const env: SchemaEnv = { doc: fx().asyncDoc, goodUrls: fx().env.goodUrls };
    const before = await fingerprint();
    const started = Date.now();
    let sent = 0;
    const failure: { first: { error: string; bursts: string[] } | null } = { first: null };
    const property = fc.asyncProperty(wsBurstsArb(env, targets, cap), async (bursts) => {
      const session = await openWs(cap, other);
      const check = (what: string) =>
        assert.deepEqual(
          session.problems,
          [],
          `WebSocket, ${what}: what the server answered breaks docs/streams.md`,
        );
      try {
        for (const [i, burst] of bursts.entries()) {
          sent += burst.length;
          await wsBurst(
            session,
            burst.map((spec) => wsFrame(spec, own)),
            `burst ${i + 1}`,
          );
          check(`burst ${i + 1} of ${burst.length} messages sent at once`);
        }
        // Still usable, with every free slot there and no more: as many subscribes as there
        // are free slots and one more, at once.
        const free = cap - session.live.size;
        const fill = await wsBurst(
          session,
          Array.from({ length: free + 1 }, () => subscribeAll(own)),
          `${free + 1} subscribes with ${free} slots free`,
        );
        check(`${free + 1} subscribes sent at once with ${free} of ${cap} slots free`);
        const acks = fill.filter((a) => a.type === 'ack').length;
        assert.ok(
          acks >= free,
          `WebSocket: ${acks} of ${free + 1} subscribes acknowledged with ${free} slots free: refused or ended subscribes kept their slots`,
        );
        // The slots are real: one unsubscribe frees one.
        const one = [...session.live][0];
        if (one !== undefined) {
          const [gone] = await wsBurst(
            session,
            [
              wsFrame(
                {
                  value: { type: 'unsubscribe', subscription: one },
                  id: 'fresh',
                  text: { kind: 'none' },
                  binary: false,
                  how: 'unsubscribe',
                },
                own,
              ),
            ],
            'an unsubscribe',
          );
          assert.equal(
            gone?.type,
            'ack',
            `WebSocket: the unsubscribe of the live ${one}: ${JSON.stringify(gone)}`,
          );
          const [again] = await wsBurst(session, [subscribeAll(own)], 'a subscribe');
          assert.equal(
            again?.type,
            'ack',
            `WebSocket: a subscribe after an unsubscribe freed a slot: ${JSON.stringify(again)}`,
          );
        }
        check('after the bursts');
        assert.equal(session.closed, null, 'the server closed the connection');
      } catch (error) {
        // Each case has a connection of its own, but the first failure is shown as well.
        failure.first ??= {
          error: error instanceof Error ? error.message : String(error),
          bursts: bursts.map(describeBurst),
        };
        throw error;
      } finally {
        session.socket.terminate();
      }
    });
    const params: fc.Parameters<[WsMessageSpec[][]]> = {
      seed: seedOf('websocket'),
      numRuns: Math.max(1, Math.round(8 * SCALE)),
      // Shrinking a failure included: each case opens a connection of its own.
      plugins: [fc.interruptAfterTimeLimit(10_000 * SCALE)],
    };
    const details = await fc.check(property, params);
    t.diagnostic(
      `${details.numRuns} connections, ${sent} messages in ${Date.now() - started} ms; answers ${JSON.stringify(Object.fromEntries(wsOutcomes))}`,
    );
    if (details.failed) {
      const shown = details.counterexample?.[0] ?? [];
      assert.fail(
        [
          details.errorInstance instanceof Error
            ? details.errorInstance.message
            : String(details.errorInstance),
          `seed ${SEED} (WebSocket seed ${details.seed}, path ${details.counterexamplePath ?? '?'}; ${details.numRuns} runs, ${details.numShrinks} shrinks)`,
          `replay: ${REPLAY}`,
          'counterexample (shrunk), the bursts:',
          ...shown.map((burst, i) => `  ${i + 1}: ${describeBurst(burst)}`),
          ...(failure.first === null
            ? []
            : [
                `first failure: ${failure.first.error}`,
                ...failure.first.bursts.map((burst, i) => `  ${i + 1}: ${burst}`),
              ]),
        ].join('\n'),
      );
    }
    // Nothing is left subscribed once the connections are gone, and nothing was written.
    const hub = fx().server.http.streamHub;
    const deadline = Date.now() + 15_000;
    while (hub.stats().connections > 0 || hub.stats().subscriptions > 0) {
      if (Date.now() > deadline) {
        assert.fail(
          `WebSocket: left behind after every connection closed: ${JSON.stringify(hub.stats())}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.deepEqual(
      fingerprintDiff(before, await fingerprint(), (k) => !k.startsWith('cs|')),
      [],
      'subscribes and unsubscribes changed the store',
    );
  });

  it('after the fuzz: every page of every list answers 200, as the document says', async (t) => {
    const counts = await readAllPages();
    t.diagnostic(JSON.stringify(Object.fromEntries(counts)));
  });

  it('with workers running the fuzzed operations, every page still answers 200', async (t) => {
    const { place, server, logs } = fx();
    await server.stop({ graceful: false });
    worker = startFuzzServer(place, true);
    const url = await worker.start();
    fx().server = worker;
    fx().port = Number(new URL(url).port);
    // While the workers take the fuzzed operations up (from the first moment: later, on
    // PostgreSQL, the dispatcher's deliveries of their events hold the store's writes up).
    const changing = checkChangingOperations();
    changing.catch(() => undefined); // awaited below, its failure reported there
    const deadline = Date.now() + 4000;
    for (;;) {
      const rows = await query<{ n: unknown }>(
        `SELECT count(*) AS n FROM ${table('operations')} WHERE status IN ('queued', 'running') AND type = 'demo.echo' AND run_at <= ${Date.now()}`,
      );
      if (Number(rows[0]?.n ?? 0) === 0 || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const counts = await readAllPages();
    t.diagnostic(JSON.stringify(Object.fromEntries(counts)));
    // A succeeded echo's result is its input, as stored.
    const rows = await query<{ id: string; input: string; tenant: string }>(
      `SELECT id, input, tenant FROM ${table('operations')} WHERE status = 'succeeded' AND type = 'demo.echo' AND tenant = 'fuzz'`,
    );
    const route = routeMatching('GET', '/v1/operations/op_x') ?? null;
    for (const row of rows.slice(0, 60)) {
      const answer = await plainRequest('GET', `/v1/operations/${row.id}`, route);
      assert.equal(answer.status, 200, `${row.id}: ${answer.status} ${answer.text.slice(0, 200)}`);
      assert.equal(
        canonicalJson((answer.json as Json).result),
        canonicalJson(JSON.parse(row.input)),
        `${row.id}: the result is not the input`,
      );
    }
    t.diagnostic(`${rows.length} echo operations succeeded`);
    t.diagnostic(await changing);
    const errors = [...logs].filter((line) => line.level >= 50);
    assert.deepEqual(
      errors.map((line) => line.msg),
      [],
      'error-level log lines while fuzzing',
    );
  });

  it('answered only with the statuses and codes the document names for each route', () => {
    // Counted over every request above: a code the document leaves out of a route is a
    // drift between the two that a client generated from the document would not expect.
    assert.deepEqual(
      [...undocumented].map(([key, n]) => `${key} (${n}×)`),
      [],
      'answers the document does not name for their route',
    );
  });
});
