import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, afterEach, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';
import { isAcceptedError } from '../src/domain/errors.ts';
import { EVENT_TYPES } from '../src/domain/events.ts';
import type { Json } from '../src/domain/operation.ts';
import type { Accepted } from '../src/engine/accepted.ts';
import { demoOperations } from '../src/engine/demo.ts';
import { createHttpServer, type HttpOptions } from '../src/server/http.ts';
import { createWebhooks } from '../src/webhooks/service.ts';
import {
  eventually,
  newStorePlace,
  onStore,
  startEngine,
  stopEngines,
  type StorePlace,
} from './helpers.ts';
import { gateOperation, gates, open } from './gates.ts';
import { adminQuery } from './pg-helpers.ts';
import {
  assertProblem,
  capturingLogger,
  connect,
  errorLines,
  exchange,
  hasWholeResponse,
  parseResponse,
  portOf,
  rawRequest,
  type LogLine,
} from './raw-http.ts';

/**
 * Regression tests of the HTTP edge, one per defect of the hostile review (named after it),
 * over real sockets, on the store of the run (a real SQLite file or a real PostgreSQL schema).
 */

const operations = [...demoOperations, gateOperation];

interface Served {
  accepted: Accepted;
  app: FastifyInstance;
  base: string;
  port: number;
  /** Every log line of the HTTP server (a real pino logger at trace). */
  lines: LogLine[];
  /** The URL of every request that reached the routes (after the edge checks). */
  arrived: string[];
  /** Every answer the server began to send: its URL and status. */
  sent: { url: string; status: number }[];
}

const servers: FastifyInstance[] = [];
after(async () => {
  for (const app of servers) await app.close();
});
// No test shares an engine: each stops when its test ends (on PostgreSQL, its connections).
afterEach(stopEngines);

/** A real HTTP server on a fresh store (or on `engine`), with webhook routes. */
async function serve(
  options: Partial<Omit<HttpOptions, 'accepted'>> & { engine?: Accepted } = {},
): Promise<Served> {
  const { logger, lines } = capturingLogger();
  const { engine, ...rest } = options;
  const accepted = engine ?? (await startEngine({ operations }));
  const webhooks = createWebhooks({ accepted, allow: ['127.0.0.0/8'] });
  const app = createHttpServer({ maxWaitSeconds: 30, ...rest, accepted, logger, webhooks });
  const arrived: string[] = [];
  const sent: { url: string; status: number }[] = [];
  app.addHook('onRequest', (request, _reply, done) => {
    arrived.push(request.url);
    done();
  });
  app.addHook('onSend', async (request, reply, payload) => {
    sent.push({ url: request.url, status: reply.statusCode });
    return payload;
  });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  servers.push(app);
  return { accepted, app, base, port: portOf(app), lines, arrived, sent };
}

async function post(base: string, url: string, body: string | Buffer, headers = {}) {
  const response = await fetch(`${base}${url}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body,
  });
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    text,
    json: () => JSON.parse(text) as unknown,
  };
}

function problemOf(result: { status: number; headers: Headers; text: string }) {
  assert.match(
    result.headers.get('content-type') ?? '',
    /^application\/problem\+json/,
    result.text,
  );
  const problem = JSON.parse(result.text) as {
    code: string;
    status: number;
    fields?: { field: string; message: string }[];
    details?: Record<string, unknown>;
  };
  assert.equal(problem.status, result.status);
  return problem;
}

/** Each operation's stored traceparent, read from the SQLite file or the PostgreSQL schema. */
async function storedTraceparents(place: StorePlace): Promise<Map<string, string | null>> {
  type Row = { id: string; traceparent: string | null };
  let rows: Row[];
  if (place.filename !== null) {
    assert.ok(fs.existsSync(place.filename));
    const db = new Database(place.filename, { readonly: true });
    try {
      rows = db.prepare('SELECT id, traceparent FROM operations').all() as Row[];
    } finally {
      db.close();
    }
  } else {
    rows = await adminQuery<Row>(`SELECT id, traceparent FROM "${place.schema}".operations`);
  }
  return new Map(rows.map((row) => [row.id, row.traceparent]));
}

/** `depth` nested arrays as JSON text: `[[...]]`. */
const nestedText = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;
/** The same as a value, built without recursion. */
function nestedValue(depth: number): unknown {
  let value: unknown = [];
  for (let i = 1; i < depth; i++) value = [value];
  return value;
}

describe(onStore('#3 deeply nested JSON'), { timeout: 60_000 }, () => {
  it('#3 JSON nested deeper than 64 levels is refused with 422 JSON_TOO_DEEP on every JSON route; nothing is stored and every read keeps working', async () => {
    const { accepted, base } = await serve();
    const endpoint = await post(
      base,
      '/v1/webhooks/endpoints',
      JSON.stringify({ url: 'http://127.0.0.1:9/hook' }),
    );
    assert.equal(endpoint.status, 201, endpoint.text);
    const endpointId = (endpoint.json() as { id: string }).id;
    const before = await accepted.store.lastSeq();
    // Just over the limit, the sizes that overflowed the stack (4,112+) and that were stored
    // and then broke every read (4,000 to 4,111), and far past them.
    for (const depth of [64, 4_050, 4_200, 100_000]) {
      const deep = nestedText(depth);
      for (const [method, url, body, headers] of [
        ['POST', '/v1/operations', `{"type":"demo.echo","input":${deep}}`, {}],
        ['POST', '/v1/stream-tokens', `{"ttlSeconds":${deep}}`, {}],
        ['POST', '/v1/webhooks/endpoints', `{"url":"http://127.0.0.1:9/","x":${deep}}`, {}],
        [
          'PATCH',
          `/v1/webhooks/endpoints/${endpointId}`,
          `{"description":${deep}}`,
          { 'if-match': '*' },
        ],
        ['POST', `/v1/webhooks/endpoints/${endpointId}:replay`, `{"since":${deep}}`, {}],
      ] as const) {
        const response = await fetch(`${base}${url}`, {
          method,
          headers: { 'content-type': 'application/json', ...headers },
          body,
        });
        const result = {
          status: response.status,
          headers: response.headers,
          text: await response.text(),
        };
        assert.equal(
          result.status,
          422,
          `${method} ${url} at depth ${depth + 1}: ${result.text.slice(0, 200)}`,
        );
        const problem = problemOf(result);
        assert.equal(problem.code, 'JSON_TOO_DEEP');
        assert.equal(problem.details?.limit, 64);
      }
    }
    assert.equal(await accepted.store.lastSeq(), before, 'nothing stored');

    // 64 levels in all (the body and 63 in the input) is within the limit, and the tenant's
    // reads and its stream carry it.
    const ok = await post(
      base,
      '/v1/operations',
      `{"type":"demo.echo","input":${nestedText(63)}}`,
      {
        prefer: 'wait=10',
      },
    );
    assert.equal(ok.status, 200, ok.text);
    const op = ok.json() as { id: string; status: string };
    assert.equal(op.status, 'succeeded');
    for (const url of ['/v1/operations', '/v1/events', `/v1/operations/${op.id}/events`]) {
      assert.equal((await fetch(`${base}${url}`)).status, 200, url);
    }
    const stream = await fetch(`${base}/v1/operations/${op.id}/events?after=0`, {
      headers: { accept: 'text/event-stream' },
    });
    assert.match(await stream.text(), /event: operation\.succeeded/);
  });

  it('#3 the library refuses an input nested deeper than 64 levels with JSON_TOO_DEEP, before serialising it', async () => {
    const accepted = await startEngine({ operations });
    const before = await accepted.store.lastSeq();
    const deep = (depth: number) => nestedValue(depth) as Json;
    for (const depth of [65, 4_050, 4_200, 100_000]) {
      for (const options of [{}, { idempotencyKey: `deep-${depth}` }]) {
        await assert.rejects(accepted.submit('demo.echo', deep(depth), options), (error) => {
          assert.ok(isAcceptedError(error), String(error));
          assert.equal(error.code, 'JSON_TOO_DEEP');
          assert.deepEqual(
            error.fields?.map((f) => f.field),
            ['/input'],
          );
          return true;
        });
      }
    }
    assert.equal(await accepted.store.lastSeq(), before, 'nothing stored');
    const op = await accepted.submit('demo.echo', deep(64));
    assert.equal((await accepted.wait(op.id)).status, 'succeeded');
  });
});

describe(onStore('#7 repeated single-valued headers'), { timeout: 30_000 }, () => {
  it('#7 two Idempotency-Key headers are refused, not merged', async () => {
    const { accepted, port } = await serve();
    const before = await accepted.store.lastSeq();
    const body = '{"type":"demo.echo","input":1}';
    const text = await exchange(
      port,
      rawRequest(
        'POST',
        '/v1/operations',
        [
          ['host', 'localhost'],
          ['content-type', 'application/json'],
          ['idempotency-key', 'a'],
          ['idempotency-key', 'b'],
          ['connection', 'close'],
        ],
        body,
      ),
    );
    const { problem } = assertProblem(text, 400, 'INVALID_HEADER');
    assert.deepEqual(problem.fields, [
      { field: 'Idempotency-Key', message: 'sent more than once' },
    ]);
    assert.equal(await accepted.store.lastSeq(), before, 'nothing stored');
    // The same holds for the other single-valued headers we read.
    for (const [name, field, first, second] of [
      ['authorization', 'Authorization', 'Bearer a', 'Bearer b'],
      ['host', 'Host', 'localhost', 'evil.example'],
      ['content-type', 'Content-Type', 'application/json', 'text/plain'],
    ] as const) {
      const answer = await exchange(
        port,
        rawRequest(
          'POST',
          '/v1/operations',
          [
            ...(name === 'host' ? [] : ([['host', 'localhost']] as [string, string][])),
            ...(name === 'content-type'
              ? []
              : ([['content-type', 'application/json']] as [string, string][])),
            [name, first],
            [name, second],
            ['connection', 'close'],
          ],
          body,
        ),
      );
      const refused = assertProblem(answer, 400, 'INVALID_HEADER');
      assert.deepEqual(refused.problem.fields, [{ field, message: 'sent more than once' }]);
    }
    assert.equal(await accepted.store.lastSeq(), before, 'nothing stored');
  });
});

describe(
  onStore('#8 framing errors, large headers and timeouts as problem+json'),
  { timeout: 30_000 },
  () => {
    it('#8 a request that does not parse is answered 400 MALFORMED_REQUEST as problem+json, and the connection closes', async () => {
      const { port, accepted } = await serve();
      const before = await accepted.store.lastSeq();
      for (const request of [
        'GARBAGE\r\n\r\n',
        'GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n',
        'GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n',
        'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\u0000b\r\n\r\n',
        'POST /v1/operations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
        // Both framings at once (request smuggling): refused, not guessed.
        'POST /v1/operations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      ]) {
        const text = await exchange(port, Buffer.from(request, 'latin1'));
        assertProblem(text, 400, 'MALFORMED_REQUEST');
      }
      // Parsed, but not a request the server can serve: no Host, or a URL that is not encoded.
      const noHost = await exchange(port, 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n');
      assertProblem(noHost, 400, 'MALFORMED_REQUEST');
      const badUrl = await exchange(
        port,
        'GET /v1/operations/%E0%A4%A HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      );
      assertProblem(badUrl, 400, 'MALFORMED_REQUEST');
      assert.equal(await accepted.store.lastSeq(), before, 'nothing stored');
    });

    it('#8 headers or a URL over the limit are answered 431 HEADERS_TOO_LARGE as problem+json', async () => {
      const { port } = await serve({ maxHeaderSize: 4096 });
      const header = await exchange(
        port,
        `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(5000)}\r\n\r\n`,
      );
      assertProblem(header, 431, 'HEADERS_TOO_LARGE');
      const url = await exchange(port, `GET /${'a'.repeat(5000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
      assertProblem(url, 431, 'HEADERS_TOO_LARGE');
      // Within the limit, it is served.
      const fine = await exchange(
        port,
        `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(3000)}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(parseResponse(fine).status, 200);
    });

    it('#8 a request that does not arrive in time is answered 408 REQUEST_TIMEOUT as problem+json', async () => {
      const { port } = await serve({ headersTimeoutMs: 100, requestTimeoutMs: 200 });
      const connection = await connect(port);
      connection.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
      const text = await connection.closed;
      assertProblem(text, 408, 'REQUEST_TIMEOUT');
    });

    it('#8 during shutdown, a request on a connection still open is answered 503 SHUTTING_DOWN as problem+json', async () => {
      const { app, port, accepted, arrived } = await serve();
      const name = 'shutdown-open-connection';
      const op = await accepted.submit('test.gate', { name });
      await eventually(() => gates.has(name));
      const running = await accepted.get(op.id);
      // A long poll keeps the connection busy, so the server cannot close it as idle.
      const connection = await connect(port);
      const poll = `/v1/operations/${op.id}?wait=20`;
      connection.write(
        `GET ${poll} HTTP/1.1\r\nHost: x\r\nIf-None-Match: "${running?.version ?? 0}"\r\n\r\n`,
      );
      await eventually(() => arrived.includes(poll));
      const closing = app.close();
      await eventually(() => app.streamHub.isClosed);
      // A second request on that connection, sent once the server is closing.
      connection.write('GET /v1/operations HTTP/1.1\r\nHost: x\r\n\r\n');
      await open(name);
      const text = await connection.closed;
      const second = text.slice(text.indexOf('HTTP/1.1', 10));
      const { response } = assertProblem(second, 503, 'SHUTTING_DOWN');
      assert.equal(response.headers['retry-after'], '1');
      assert.equal(response.headers.connection, 'close');
      await closing;
    });
  },
);

describe(onStore('#11 clients that go away'), { timeout: 60_000 }, () => {
  it('#11 a client that goes away mid-request is not logged as an error and is not a 500', async () => {
    const { accepted, port, lines, arrived, sent, app } = await serve();
    const answered = (url: string) => sent.some((s) => s.url === url);

    // An upload aborted half-way (a reset), and one whose client half-closes (FIN).
    for (const [label, end] of [
      ['reset', (c: Awaited<ReturnType<typeof connect>>) => c.destroy()],
      ['fin', (c: Awaited<ReturnType<typeof connect>>) => c.socket.end()],
    ] as const) {
      const url = `/v1/operations?upload=${label}`;
      const connection = await connect(port);
      connection.write(
        `POST ${url} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"type":`,
      );
      await eventually(() => arrived.includes(url));
      end(connection);
      await eventually(() => answered(url));
    }

    // A long poll, a Prefer: wait submit and an event stream whose client leaves.
    const name = 'left';
    const op = await accepted.submit('test.gate', { name });
    await eventually(() => gates.has(name));
    const poll = `/v1/operations/${op.id}?wait=20`;
    const held = await connect(port);
    held.write(`GET ${poll} HTTP/1.1\r\nHost: x\r\nIf-None-Match: "${op.version + 1}"\r\n\r\n`);
    await eventually(() => arrived.includes(poll));
    held.socket.resetAndDestroy();
    await eventually(() => answered(poll));

    const submit = '/v1/operations?held=1';
    const waiting = await connect(port);
    waiting.write(
      rawRequest(
        'POST',
        submit,
        [
          ['host', 'x'],
          ['content-type', 'application/json'],
          ['prefer', 'wait=20'],
        ],
        JSON.stringify({ type: 'test.gate', input: { name: 'left-submit' } }),
      ),
    );
    await eventually(() => gates.has('left-submit'));
    waiting.destroy();
    await eventually(() => answered(submit));
    await open('left-submit');

    const stream = await connect(port);
    stream.write(
      `GET /v1/operations/${op.id}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n`,
    );
    await stream.until((text) => text.includes('operation.snapshot'));
    stream.socket.resetAndDestroy();
    await eventually(() => app.streamHub.stats().connections === 0);

    // A page the client does not stay to read.
    const page = '/v1/operations?limit=500';
    const reader = await connect(port);
    reader.write(`GET ${page} HTTP/1.1\r\nHost: x\r\n\r\n`);
    await eventually(() => answered(page));
    reader.socket.resetAndDestroy();
    await open(name);
    await accepted.wait(op.id);
    // The server still serves (and logs) normally after all that.
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);

    assert.deepEqual(errorLines(lines), [], 'no line at error level');
    assert.equal(
      lines.filter((line) => line.msg === 'unhandled error').length,
      0,
      'no unhandled error',
    );
    assert.deepEqual(
      sent.filter((s) => s.status >= 500),
      [],
      'no 500 for a client that left',
    );
  });
});

describe(onStore('#19 control characters in labels'), { timeout: 60_000 }, () => {
  it('#19 a label with U+0000 is refused with 422 naming the field, and label filters too', async () => {
    const { accepted, base } = await serve();
    const before = await accepted.store.lastSeq();
    for (const value of [
      'a\u0000b',
      'bell\u0007',
      'line\nbreak',
      'del\u007f',
      'c1\u0085',
      'half \ud800 pair',
    ]) {
      const result = await post(
        base,
        '/v1/operations',
        JSON.stringify({ type: 'demo.echo', labels: { team: value } }),
      );
      assert.equal(result.status, 422, `${JSON.stringify(value)}: ${result.text}`);
      const problem = problemOf(result);
      assert.equal(problem.code, 'VALIDATION_FAILED');
      assert.equal(problem.fields?.[0]?.field, '/labels/team');
      assert.match(problem.fields?.[0]?.message ?? '', /control characters/);
      // A query string is UTF-8: it cannot carry an unpaired surrogate at all.
      const expressible = !/[\ud800-\udfff]/.test(value);
      for (const url of expressible ? ['/v1/operations', '/v1/events'] : []) {
        const query = await fetch(`${base}${url}?label=${encodeURIComponent(`team:${value}`)}`);
        const refused = {
          status: query.status,
          headers: query.headers,
          text: await query.text(),
        };
        assert.equal(refused.status, 400, `${url} ${JSON.stringify(value)}: ${refused.text}`);
        // U+0000 anywhere in a URL is refused before the route reads its query.
        if (value.includes('\u0000')) {
          assert.equal(problemOf(refused).code, 'MALFORMED_REQUEST');
          continue;
        }
        assert.equal(problemOf(refused).code, 'INVALID_QUERY');
        assert.equal(problemOf(refused).fields?.[0]?.field, 'label');
      }
      // And from the library, where the same schema applies.
      await assert.rejects(
        accepted.submit('demo.echo', null, { labels: { team: value } }),
        (error) => isAcceptedError(error) && error.code === 'VALIDATION_FAILED',
      );
    }
    assert.equal(await accepted.store.lastSeq(), before, 'nothing stored');
    // Other text, emoji (a surrogate pair) included, is kept as sent, on both stores.
    const kept = await post(
      base,
      '/v1/operations',
      JSON.stringify({ type: 'demo.echo', labels: { team: 'é ✓ 🚀 tab-free' } }),
    );
    assert.equal(kept.status, 202, kept.text);
    const found = await fetch(
      `${base}/v1/operations?label=${encodeURIComponent('team:é ✓ 🚀 tab-free')}`,
    );
    const page = (await found.json()) as { items: { labels: Record<string, string> }[] };
    assert.deepEqual(
      page.items.map((i) => i.labels.team),
      ['é ✓ 🚀 tab-free'],
    );
  });
});

describe(onStore('#4 bounded lists in query schemas'), { timeout: 30_000 }, () => {
  it('#4 status, event type and label lists in queries are bounded (400 INVALID_QUERY naming the parameter)', async () => {
    const { base } = await serve();
    const statuses = ['queued', 'running', 'succeeded', 'failed', 'canceled'];
    const tooMany = [
      `/v1/operations?${[...statuses, 'queued'].map((s) => `status=${s}`).join('&')}`,
      `/v1/operations?status=${[...statuses, 'queued'].join(',')}`,
      `/v1/events?${[...EVENT_TYPES, EVENT_TYPES[0]].map((t) => `type=${t}`).join('&')}`,
      `/v1/operations?${Array.from({ length: 17 }, (_, i) => `label=k${i}:v`).join('&')}`,
      `/v1/events?label=${Array.from({ length: 17 }, (_, i) => `k${i}:v`).join(',')}`,
      `/v1/events?after=${'9'.repeat(20)}`,
      `/v1/events?operationType=${'a'.repeat(129)}`,
    ];
    for (const url of tooMany) {
      const response = await fetch(`${base}${url}`);
      const result = {
        status: response.status,
        headers: response.headers,
        text: await response.text(),
      };
      assert.equal(result.status, 400, `${url}: ${result.text}`);
      const problem = problemOf(result);
      assert.equal(problem.code, 'INVALID_QUERY');
      const parameter = /\?(\w+)=/.exec(url)?.[1];
      assert.equal(problem.fields?.[0]?.field, parameter, url);
    }
    // At the bounds, they are served.
    for (const url of [
      `/v1/operations?status=${statuses.join(',')}`,
      `/v1/events?${EVENT_TYPES.map((t) => `type=${t}`).join('&')}`,
      `/v1/operations?${Array.from({ length: 16 }, (_, i) => `label=k${i}:v`).join('&')}`,
      `/v1/events?after=${Number.MAX_SAFE_INTEGER}`,
    ]) {
      assert.equal((await fetch(`${base}${url}`)).status, 200, url);
    }
  });
});

describe(onStore('traceparent, numbers and encoding'), { timeout: 30_000 }, () => {
  it('a traceparent that is not valid W3C Trace Context is dropped (not stored, not an error); a valid one is kept', async () => {
    const place = newStorePlace();
    const engine = await startEngine({ place, operations });
    const { base, app } = await serve({ engine });
    const valid = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const cases: [string, string | null][] = [
      [valid, valid],
      // A later version: parsed as 00 and cut to the fields 00 defines.
      [
        'cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-next',
        'cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      ],
      [`00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01${'x'.repeat(12_000)}`, null],
      ['ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', null],
      ['00-00000000000000000000000000000000-b7ad6b7169203331-01', null],
      ['00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01', null],
      ['00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01', null],
      ['00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-', null],
      ['cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x', null],
      ['not a trace context', null],
    ];
    const ids: string[] = [];
    for (const [header] of cases) {
      const result = await post(base, '/v1/operations', '{"type":"demo.echo"}', {
        traceparent: header,
      });
      assert.equal(result.status, 202, `${header.slice(0, 80)}: ${result.text}`);
      ids.push((result.json() as { id: string }).id);
    }
    await app.close();
    await engine.stop({ graceful: false });
    // What the database holds, read with its own client, not through the store.
    const stored = await storedTraceparents(place);
    ids.forEach((id, i) => {
      assert.equal(stored.get(id), cases[i]?.[1], cases[i]?.[0].slice(0, 80));
    });
  });

  it("a problem's instance is a URI reference: a stray % and characters a URI may not hold come back percent-encoded", async () => {
    const { port } = await serve();
    const cases: [string, string][] = [
      ['/v1/operations/%zz', '/v1/operations/%25zz'],
      ['/v1/operations/op_%4', '/v1/operations/op_%254'],
      ['/v1/operations/%41b', '/v1/operations/%41b'],
      ['/v1/operations/a{b}|c^d`e"f', '/v1/operations/a%7Bb%7D%7Cc%5Ed%60e%22f'],
      ['/v1/operations/[x]\\y', '/v1/operations/%5Bx%5D%5Cy'],
      ['/v1/operations/op_x?token=secret%zz', '/v1/operations/op_x'],
    ];
    for (const [target, instance] of cases) {
      const text = await exchange(
        port,
        rawRequest('GET', target, [
          ['host', 'localhost'],
          ['connection', 'close'],
        ]),
      );
      const response = parseResponse(text);
      assert.ok(response.status >= 400, `${target}: ${text.slice(0, 200)}`);
      assert.match(response.headers['content-type'] ?? '', /^application\/problem\+json/, text);
      const problem = JSON.parse(response.body) as { instance?: unknown };
      assert.equal(problem.instance, instance, `${target}: ${response.body}`);
    }
  });

  it('a body that is JSON null is refused where the body is optional, and no body is still taken', async () => {
    const { base } = await serve();
    const refused = await post(base, '/v1/stream-tokens', 'null');
    assert.equal(refused.status, 422, refused.text);
    const problem = refused.json() as { code: string; fields: { field: string }[] };
    assert.equal(problem.code, 'VALIDATION_FAILED');
    assert.deepEqual(
      problem.fields.map((f) => f.field),
      ['/'],
    );
    const taken = await post(base, '/v1/stream-tokens', '{}');
    assert.equal(taken.status, 201, taken.text);
  });

  it('numbers JSON cannot hold exactly are refused with 422 NUMBER_OUT_OF_RANGE, not altered', async () => {
    const { base, accepted } = await serve();
    const before = await accepted.store.lastSeq();
    for (const number of [
      '1e400',
      '-1e400',
      '9223372036854775808',
      '9007199254740993',
      '1e-400',
      '-2.5e-400',
    ]) {
      const result = await post(
        base,
        '/v1/operations',
        `{"type":"demo.echo","input":{"n":${number}}}`,
      );
      assert.equal(result.status, 422, `${number}: ${result.text}`);
      const problem = problemOf(result);
      assert.equal(problem.code, 'NUMBER_OUT_OF_RANGE');
      assert.equal(typeof problem.details?.position, 'number');
    }
    assert.equal(await accepted.store.lastSeq(), before, 'nothing stored');
    // What a double holds exactly is kept as sent.
    const input = {
      big: 9007199254740991,
      small: -9007199254740991,
      tiny: 5e-324,
      huge: 1.7976931348623157e308,
      zero: 0,
      real: 0.1,
    };
    const kept = await post(base, '/v1/operations', JSON.stringify({ type: 'demo.echo', input }), {
      prefer: 'wait=10',
    });
    assert.equal(kept.status, 200, kept.text);
    assert.deepEqual((kept.json() as { result: unknown }).result, input);
  });

  it('a body that is not UTF-8 is refused with 400 INVALID_ENCODING, not altered', async () => {
    const { base, accepted } = await serve();
    const before = await accepted.store.lastSeq();
    const head = Buffer.from('{"type":"demo.echo","input":"');
    const tail = Buffer.from('"}');
    for (const bytes of [[0xff], [0xe9], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82]]) {
      const result = await post(
        base,
        '/v1/operations',
        Buffer.concat([head, Buffer.from(bytes), tail]),
      );
      assert.equal(result.status, 400, `${bytes.join(',')}: ${result.text}`);
      assert.equal(problemOf(result).code, 'INVALID_ENCODING');
    }
    assert.equal(await accepted.store.lastSeq(), before, 'nothing stored');
    const kept = await post(
      base,
      '/v1/operations',
      Buffer.concat([head, Buffer.from('é ✓ 🚀'), tail]),
      { prefer: 'wait=10' },
    );
    assert.equal(kept.status, 200, kept.text);
    assert.equal((kept.json() as { result: unknown }).result, 'é ✓ 🚀');
    // A compressed body is not JSON the server can read: 415, not a guess.
    const gzip = await post(base, '/v1/operations', '{"type":"demo.echo"}', {
      'content-encoding': 'gzip',
    });
    assert.equal(gzip.status, 415);
    assert.equal(problemOf(gzip).code, 'UNSUPPORTED_MEDIA_TYPE');
  });
});

describe(onStore('slow clients and connection caps'), { timeout: 60_000 }, () => {
  /** Writes `chunk` every 20 ms until the server closes the connection. */
  function trickle(connection: Awaited<ReturnType<typeof connect>>, chunk: string) {
    const timer = setInterval(() => {
      if (!connection.socket.destroyed) connection.write(chunk);
    }, 20);
    void connection.closed.then(() => clearInterval(timer));
  }

  it('a client trickling its headers is cut with 408 REQUEST_TIMEOUT, and one trickling its body too; nothing is stored', async () => {
    const { port, accepted, lines } = await serve({ headersTimeoutMs: 100, requestTimeoutMs: 300 });
    const before = await accepted.store.lastSeq();
    const headers = await connect(port);
    headers.write('POST /v1/operations HTTP/1.1\r\nHost: x\r\n');
    trickle(headers, 'X-Slow: 1\r\n');
    assertProblem(await headers.closed, 408, 'REQUEST_TIMEOUT');

    const body = await connect(port);
    body.write(
      'POST /v1/operations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"type":"demo.echo","input":"',
    );
    trickle(body, 'x');
    assertProblem(await body.closed, 408, 'REQUEST_TIMEOUT');
    assert.equal(await accepted.store.lastSeq(), before, 'nothing stored');
    assert.deepEqual(errorLines(lines), []);

    // A connection that sends nothing at all is cut too.
    const silent = await connect(port);
    assertProblem(await silent.closed, 408, 'REQUEST_TIMEOUT');
  });

  it('an event stream and a long poll outlive the request timeout', async () => {
    const { port, accepted, arrived } = await serve({
      headersTimeoutMs: 100,
      requestTimeoutMs: 150,
    });
    const name = 'outlive';
    const op = await accepted.submit('test.gate', { name });
    await eventually(() => gates.has(name));
    const running = await accepted.get(op.id);
    const stream = await connect(port);
    stream.write(
      `GET /v1/operations/${op.id}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n`,
    );
    await stream.until((text) => text.includes('operation.snapshot'));
    const poll = await connect(port);
    const pollUrl = `/v1/operations/${op.id}?wait=20`;
    poll.write(
      `GET ${pollUrl} HTTP/1.1\r\nHost: x\r\nIf-None-Match: "${running?.version ?? 0}"\r\n\r\n`,
    );
    await eventually(() => arrived.includes(pollUrl));
    // A request begun after both is cut by the timeout: theirs has passed too.
    const late = await connect(port);
    late.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    assertProblem(await late.closed, 408, 'REQUEST_TIMEOUT');
    assert.equal(stream.socket.destroyed, false, 'the stream is open');
    assert.equal(poll.socket.destroyed, false, 'the long poll is open');
    await open(name);
    const polled = parseResponse(await poll.until(hasWholeResponse));
    assert.equal(polled.status, 200);
    assert.equal((JSON.parse(polled.body) as { status: string }).status, 'succeeded');
    await stream.until((text) => text.includes('event: operation.succeeded'));
    stream.destroy();
    poll.destroy();
  });

  it('the per-address cap refuses the next connection with 503 TOO_MANY_CONNECTIONS and closes it', async () => {
    const { port, app } = await serve({ maxConnectionsPerIp: 2 });
    const held = [await connect(port), await connect(port)];
    for (const connection of held) {
      connection.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      assert.equal(parseResponse(await connection.until(hasWholeResponse)).status, 200);
    }
    const third = await connect(port);
    third.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const { response, problem } = assertProblem(await third.closed, 503, 'TOO_MANY_CONNECTIONS');
    assert.equal(response.headers['retry-after'], '1');
    assert.deepEqual(problem.details, { limit: 2, scope: 'address' });
    // One leaves: the next one is served.
    held[0]?.destroy();
    await eventually(
      () =>
        new Promise<boolean>((resolve) => {
          app.server.getConnections((_error, count) => resolve(count === 1));
        }),
    );
    const next = await connect(port);
    next.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(parseResponse(await next.closed).status, 200);
    held[1]?.destroy();
  });

  it('a WebSocket upgrade refused with 503 (the server stopping) says when to come back', async () => {
    const { port, app } = await serve();
    app.streamHub.close('SHUTTING_DOWN');
    const socket = await connect(port);
    socket.write(
      'GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
    const { response } = assertProblem(await socket.closed, 503, 'SHUTTING_DOWN');
    assert.equal(response.headers['retry-after'], '1');
  });

  it('the server-wide cap refuses the next connection with 503 TOO_MANY_CONNECTIONS', async () => {
    const { port } = await serve({ maxConnections: 1, maxConnectionsPerIp: 0 });
    const first = await connect(port);
    first.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(parseResponse(await first.until(hasWholeResponse)).status, 200);
    const second = await connect(port);
    second.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const { problem } = assertProblem(await second.closed, 503, 'TOO_MANY_CONNECTIONS');
    assert.deepEqual(problem.details, { limit: 1, scope: 'server' });
    first.destroy();
  });
});
