import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { Accepted } from '../src/engine/accepted.ts';
import { demoOperations } from '../src/engine/demo.ts';
import { createHttpServer } from '../src/server/http.ts';
import { createWebhooks } from '../src/webhooks/service.ts';
import { isAcceptedError } from '../src/domain/errors.ts';
import { startEngine } from './helpers.ts';
import {
  assertProblem,
  capturingLogger,
  connect,
  exchange,
  hasWholeResponse,
  parseResponse,
  portOf,
  type LogLine,
} from './raw-http.ts';
import { WsClient } from './stream-clients.ts';

/**
 * One test per row of docs/limits.md that other test files do not hold already (the table
 * names the test of each row), and the check that the OpenAPI document states a bound on
 * every body, header and query parameter of every route. Real sockets, a real SQLite file;
 * the limits are set small so that each is reached quickly.
 */

const LIMITS = {
  bodyLimit: 64 * 1024,
  maxHeaderSize: 4096,
  headersTimeoutMs: 150,
  requestTimeoutMs: 300,
  keepAliveTimeoutMs: 150,
  maxWaitSeconds: 1,
};
const MAX_INPUT_BYTES = 32 * 1024;

type Json = Record<string, unknown>;

describe('docs/limits.md, row by row', { timeout: 60_000 }, () => {
  let accepted: Accepted;
  let app: FastifyInstance;
  let base: string;
  let port: number;
  let lines: LogLine[];

  before(async () => {
    accepted = await startEngine({ operations: demoOperations, maxInputBytes: MAX_INPUT_BYTES });
    const captured = capturingLogger();
    lines = captured.lines;
    const webhooks = createWebhooks({ accepted, allow: ['127.0.0.0/8'] });
    app = createHttpServer({
      accepted,
      webhooks,
      logger: captured.logger,
      ...LIMITS,
      streams: { maxSubscriptions: 2 },
    });
    base = await app.listen({ port: 0, host: '127.0.0.1' });
    port = portOf(app);
  });
  after(async () => {
    await app.close();
    assert.deepEqual(
      lines.filter((line) => line.level >= 50),
      [],
      'no error-level line from bounds',
    );
  });

  async function call(
    method: string,
    url: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; headers: Headers; json: Json; text: string }> {
    const response = await fetch(`${base}${url}`, {
      method,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await response.text();
    return {
      status: response.status,
      headers: response.headers,
      text,
      json: text === '' ? {} : (JSON.parse(text) as Json),
    };
  }

  /** Expects a problem of `status` and `code`, naming `field` when given. */
  async function refused(
    result: Promise<{ status: number; headers: Headers; json: Json; text: string }>,
    status: number,
    code: string,
    field?: string,
  ): Promise<void> {
    const { status: got, headers, json, text } = await result;
    assert.equal(got, status, text);
    assert.match(headers.get('content-type') ?? '', /^application\/problem\+json/);
    assert.equal(json.code, code, text);
    if (field !== undefined) {
      const fields = (json.fields as { field: string }[] | undefined)?.map((f) => f.field);
      assert.ok(fields?.includes(field), `${field} in ${JSON.stringify(fields)}`);
    }
  }

  const submit = (body: Json, headers: Record<string, string> = {}) =>
    call('POST', '/v1/operations', body, headers);

  it('limits.md: request line and headers (431 HEADERS_TOO_LARGE past maxHeaderSize)', async () => {
    const over = await exchange(
      port,
      `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(LIMITS.maxHeaderSize)}\r\n\r\n`,
    );
    assertProblem(over, 431, 'HEADERS_TOO_LARGE');
    const under = await exchange(
      port,
      `GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ${'p'.repeat(LIMITS.maxHeaderSize - 200)}\r\n\r\n`,
    );
    assert.equal(parseResponse(under).status, 200);
  });

  it('limits.md: time for the headers (408 REQUEST_TIMEOUT past headersTimeoutMs)', async () => {
    const connection = await connect(port);
    connection.write('GET /healthz HTTP/1.1\r\n');
    const timer = setInterval(() => connection.write('X-Slow: 1\r\n'), 20);
    try {
      assertProblem(await connection.closed, 408, 'REQUEST_TIMEOUT');
    } finally {
      clearInterval(timer);
    }
  });

  it('limits.md: time for the whole request (408 REQUEST_TIMEOUT past requestTimeoutMs, nothing done)', async () => {
    const before = await accepted.store.lastSeq();
    const connection = await connect(port);
    connection.write(
      'POST /v1/operations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{"type":"demo.echo","input":"',
    );
    const timer = setInterval(() => {
      if (!connection.socket.destroyed) connection.write('y');
    }, 20);
    try {
      assertProblem(await connection.closed, 408, 'REQUEST_TIMEOUT');
    } finally {
      clearInterval(timer);
    }
    assert.equal(await accepted.store.lastSeq(), before, 'nothing stored');
  });

  it('limits.md: idle keep-alive (closed without an answer past keepAliveTimeoutMs)', async () => {
    const connection = await connect(port);
    connection.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    const answer = await connection.until(hasWholeResponse);
    assert.equal(parseResponse(answer).status, 200);
    assert.match(answer, /keep-alive/i);
    const all = await connection.closed;
    assert.equal(all, answer, 'nothing more after the answer: the server just closed');
  });

  it('limits.md: request body (413 PAYLOAD_TOO_LARGE past bodyLimit)', async () => {
    const padding = 'x'.repeat(LIMITS.bodyLimit);
    await refused(
      call('POST', '/v1/operations', { type: 'demo.echo', input: padding }),
      413,
      'PAYLOAD_TOO_LARGE',
    );
    await refused(
      call('POST', '/v1/stream-tokens', { ttlSeconds: 1, x: padding }),
      413,
      'PAYLOAD_TOO_LARGE',
    );
  });

  it('limits.md: submit type (1 to 128 characters)', async () => {
    await refused(submit({ type: `a${'b'.repeat(128)}` }), 422, 'VALIDATION_FAILED', '/type');
    await refused(submit({ type: '' }), 422, 'VALIDATION_FAILED', '/type');
  });

  it('limits.md: submit input (413 PAYLOAD_TOO_LARGE past maxInputBytes)', async () => {
    const input = 'i'.repeat(MAX_INPUT_BYTES);
    await refused(submit({ type: 'demo.echo', input }), 413, 'PAYLOAD_TOO_LARGE', '/input');
    const fits = await submit({ type: 'demo.echo', input: input.slice(100) });
    assert.equal(fits.status, 202, fits.text);
  });

  it('limits.md: submit labels (32 pairs, keys 63, values 256 characters)', async () => {
    const pairs = (n: number) =>
      Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
    await refused(
      submit({ type: 'demo.echo', labels: pairs(33) }),
      422,
      'VALIDATION_FAILED',
      '/labels',
    );
    await refused(
      submit({ type: 'demo.echo', labels: { [`k${'e'.repeat(63)}`]: 'v' } }),
      422,
      'VALIDATION_FAILED',
    );
    await refused(
      submit({ type: 'demo.echo', labels: { team: 'v'.repeat(257) } }),
      422,
      'VALIDATION_FAILED',
      '/labels/team',
    );
    const fits = await submit({
      type: 'demo.echo',
      labels: { ...pairs(31), [`k${'e'.repeat(62)}`]: 'v'.repeat(256) },
    });
    assert.equal(fits.status, 202, fits.text);
  });

  it('limits.md: submit maxAttempts and timeoutMs (1 to 100; 1 ms to 7 days)', async () => {
    for (const maxAttempts of [0, 101, 1.5]) {
      await refused(
        submit({ type: 'demo.echo', maxAttempts }),
        422,
        'VALIDATION_FAILED',
        '/maxAttempts',
      );
    }
    for (const timeoutMs of [0, 7 * 24 * 3600 * 1000 + 1]) {
      await refused(
        submit({ type: 'demo.echo', timeoutMs }),
        422,
        'VALIDATION_FAILED',
        '/timeoutMs',
      );
    }
  });

  it('limits.md: submit runAt (at most 366 days ahead)', async () => {
    const day = 24 * 3600 * 1000;
    const at = (ms: number) => new Date(Date.now() + ms).toISOString();
    await refused(
      submit({ type: 'demo.echo', runAt: at(367 * day) }),
      422,
      'VALIDATION_FAILED',
      '/runAt',
    );
    await refused(
      submit({ type: 'demo.echo', runAt: `2026-01-01T00:00:00.${'0'.repeat(60)}Z` }),
      422,
      'VALIDATION_FAILED',
      '/runAt',
    );
    await assert.rejects(
      accepted.submit('demo.echo', null, { runAt: new Date(Date.now() + 400 * day) }),
      /366 days/,
    );
    // Out of Date's range in the library: the same problem, not a RangeError.
    for (const runAt of [1e16, -1e16, Number.NaN]) {
      await assert.rejects(accepted.submit('demo.echo', null, { runAt }), (error: unknown) => {
        assert.ok(isAcceptedError(error), String(error));
        assert.equal(error.code, 'VALIDATION_FAILED');
        assert.equal(error.fields?.[0]?.field, '/runAt');
        return true;
      });
    }
    const fits = await submit({ type: 'demo.echo', runAt: at(365 * day) });
    assert.equal(fits.status, 202, fits.text);
    // A retry's runAt (a library option) has the same bound.
    const failed = await submit({
      type: 'demo.fail',
      input: { message: 'no', permanent: true },
    });
    const { id } = failed.json as { id: string };
    assert.equal((await accepted.wait(id)).status, 'failed');
    await assert.rejects(accepted.retry(id, { runAt: Date.now() + 400 * day }), /366 days/);
    const retried = await accepted.retry(id, { runAt: Date.now() + 30 * day });
    assert.equal(retried.status, 'queued');
  });

  it('limits.md: submit callbackUrl (2048 characters)', async () => {
    const url = `https://example.com/${'c'.repeat(2048)}`;
    await refused(
      submit({ type: 'demo.echo', callbackUrl: url }),
      422,
      'VALIDATION_FAILED',
      '/callbackUrl',
    );
  });

  it('limits.md: wait (held at most maxWaitSeconds; ?wait at most 3600)', async () => {
    const held = await submit(
      { type: 'demo.sleep', input: { ms: 60_000 } },
      { prefer: 'wait=999999' },
    );
    assert.equal(held.status, 202);
    assert.equal(held.headers.get('preference-applied'), `wait=${LIMITS.maxWaitSeconds}`);
    const id = held.json.id as string;
    await refused(call('GET', `/v1/operations/${id}?wait=3601`), 400, 'INVALID_QUERY', 'wait');
    const polled = await call('GET', `/v1/operations/${id}?wait=3600`, undefined, {
      'if-none-match': held.headers.get('etag') ?? '',
    });
    assert.equal(polled.headers.get('preference-applied'), `wait=${LIMITS.maxWaitSeconds}`);
    await call('POST', `/v1/operations/${id}:cancel`);
  });

  it('limits.md: Idempotency-Key (1 to 255 printable ASCII characters)', async () => {
    await refused(
      submit({ type: 'demo.echo' }, { 'idempotency-key': 'k'.repeat(256) }),
      400,
      'INVALID_HEADER',
      'Idempotency-Key',
    );
    // Not printable ASCII (sent raw: a client library would refuse to send it).
    const raw = await exchange(
      port,
      Buffer.from(
        'POST /v1/operations HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n' +
          'Idempotency-Key: caf\xe9\r\nContent-Length: 20\r\n\r\n{"type":"demo.echo"}',
        'latin1',
      ),
    );
    assertProblem(raw, 400, 'INVALID_HEADER');
    const fits = await submit({ type: 'demo.echo' }, { 'idempotency-key': 'k'.repeat(255) });
    assert.equal(fits.status, 202, fits.text);
  });

  it('limits.md: list query (limit 500, status 5, type 128, label 16 of 320, cursor 200)', async () => {
    for (const [query, field] of [
      ['limit=501', 'limit'],
      ['limit=0', 'limit'],
      [`cursor=${'c'.repeat(201)}`, 'cursor'],
      [`type=a${'b'.repeat(128)}`, 'type'],
      [`label=k:${'v'.repeat(257)}`, 'label'],
      ['status=queued,queued,queued,queued,queued,queued', 'status'],
    ] as const) {
      await refused(call('GET', `/v1/operations?${query}`), 400, 'INVALID_QUERY', field);
    }
    assert.equal(
      (await call('GET', `/v1/operations?limit=500&label=k:${'v'.repeat(256)}`)).status,
      200,
    );
  });

  it('limits.md: events query (limit 1000, after 2^53 - 1, filters of 100)', async () => {
    const many = (n: number, make: (i: number) => string) =>
      Array.from({ length: n }, (_, i) => make(i)).join(',');
    for (const [url, field] of [
      ['/v1/events?limit=1001', 'limit'],
      ['/v1/events?after=-1', 'after'],
      [`/v1/events?after=${2 ** 53}`, 'after'],
      [`/v1/events?operation=${many(101, (i) => `op_${i}`)}`, 'operation'],
      [`/v1/events?operation=op_${'o'.repeat(62)}`, 'operation'],
      [`/v1/events?operationType=${many(101, (i) => `t${i}`)}`, 'operationType'],
      [`/v1/events?type=operation.queued,nope`, 'type'],
    ] as const) {
      await refused(call('GET', url), 400, 'INVALID_QUERY', field);
    }
    const op = await submit({ type: 'demo.echo' });
    const id = op.json.id as string;
    await refused(
      call('GET', `/v1/operations/${id}/events?limit=1001`),
      400,
      'INVALID_QUERY',
      'limit',
    );
    assert.equal((await call('GET', `/v1/events?limit=1000&after=${2 ** 53 - 1}`)).status, 200);
  });

  it('limits.md: access_token (2048 characters; a longer one is not a token the server signed)', async () => {
    await refused(
      call('GET', `/v1/events?access_token=st_${'t'.repeat(2048)}`),
      401,
      'UNAUTHENTICATED',
    );
  });

  it('limits.md: Last-Event-ID (1 to 15 digits)', async () => {
    await refused(
      call('GET', '/v1/events', undefined, {
        accept: 'text/event-stream',
        'last-event-id': '1'.repeat(16),
      }),
      400,
      'INVALID_HEADER',
      'Last-Event-ID',
    );
  });

  it('limits.md: stream tokens (ttlSeconds 1 to 3600, operation 64 characters)', async () => {
    for (const body of [{ ttlSeconds: 3601 }, { ttlSeconds: 0 }, { operation: 'o'.repeat(65) }]) {
      await refused(call('POST', '/v1/stream-tokens', body), 422, 'VALIDATION_FAILED');
    }
  });

  it('limits.md: path ids (a segment over 100 characters is no route)', async () => {
    await refused(call('GET', `/v1/operations/op_${'0'.repeat(30)}`), 404, 'OPERATION_NOT_FOUND');
    await refused(call('GET', `/v1/operations/${'0'.repeat(101)}`), 404, 'ROUTE_NOT_FOUND');
  });

  it('limits.md: WebSocket message (the body limit; closed with 1009)', async () => {
    const client = new WsClient(`${base.replace('http', 'ws')}/v1/ws`);
    await client.opened();
    client.socket.send(JSON.stringify({ type: 'ping', id: 'x'.repeat(LIMITS.bodyLimit) }));
    await client.closed;
    assert.equal(client.closeCode, 1009);
  });

  it('limits.md: subscriptions per WebSocket (streams.maxSubscriptions)', async () => {
    const client = new WsClient(`${base.replace('http', 'ws')}/v1/ws`);
    await client.opened();
    try {
      for (const id of ['a', 'b']) {
        assert.equal((await client.request({ type: 'subscribe', id, filter: {} })).type, 'ack');
      }
      const third = await client.request({ type: 'subscribe', id: 'c', filter: {} });
      assert.equal(third.type, 'error');
      assert.equal(third.code, 'TOO_MANY_SUBSCRIPTIONS');
    } finally {
      client.close();
    }
  });

  it('limits.md: WebSocket filter (types 20, operationTypes and operations 100, labels 16)', async () => {
    const client = new WsClient(`${base.replace('http', 'ws')}/v1/ws`);
    await client.opened();
    try {
      const list = (n: number, make: (i: number) => string) =>
        Array.from({ length: n }, (_, i) => make(i));
      for (const filter of [
        { types: list(21, () => 'operation.queued') },
        { operationTypes: list(101, (i) => `t${i}`) },
        { operations: list(101, (i) => `op_${i}`) },
        { labels: Object.fromEntries(list(17, (i) => `k${i}`).map((k) => [k, 'v'])) },
        { labels: { team: 'a\u0000b' } },
        { labels: { team: 'v'.repeat(257) } },
      ]) {
        const answer = await client.request({ type: 'subscribe', id: 'f', filter });
        assert.equal(answer.type, 'error', JSON.stringify(filter).slice(0, 60));
        assert.equal(answer.code, 'INVALID_MESSAGE');
        client.messages.length = 0;
      }
    } finally {
      client.close();
    }
  });

  it('limits.md: webhook list query (limit 500, cursor 200, ids 64, status 3; replay since 64)', async () => {
    for (const [url, field] of [
      ['/v1/webhooks/endpoints?limit=501', 'limit'],
      [`/v1/webhooks/endpoints?cursor=${'c'.repeat(201)}`, 'cursor'],
      ['/v1/webhooks/deliveries?limit=501', 'limit'],
      [`/v1/webhooks/deliveries?endpoint=${'e'.repeat(65)}`, 'endpoint'],
      [`/v1/webhooks/deliveries?operation=${'o'.repeat(65)}`, 'operation'],
      ['/v1/webhooks/deliveries?status=pending,failed,delivered,pending', 'status'],
    ] as const) {
      await refused(call('GET', url), 400, 'INVALID_QUERY', field);
    }
    const fits = await call('GET', '/v1/webhooks/deliveries?status=pending,failed,delivered');
    assert.equal(fits.status, 200, fits.text);
    // A replay's `since`: a date-time of at most 64 characters.
    const created = await call('POST', '/v1/webhooks/endpoints', {
      url: 'http://127.0.0.1:9/hook',
    });
    assert.equal(created.status, 201, created.text);
    const endpoint = (created.json as { id: string }).id;
    await refused(
      call('POST', `/v1/webhooks/endpoints/${endpoint}:replay`, {
        since: `2026-01-01T00:00:00.${'0'.repeat(60)}Z`,
      }),
      422,
      'VALIDATION_FAILED',
      '/since',
    );
    const replayed = await call('POST', `/v1/webhooks/endpoints/${endpoint}:replay`, {
      since: new Date(Date.now() - 60_000).toISOString(),
    });
    assert.equal(replayed.status, 202, replayed.text);
  });
});

/**
 * What is unbounded in a schema of a request, as `where: why` lines; empty when every string,
 * array, number and object in it has a bound. The schemas of operation types' inputs
 * (`Input.*`) are the application's: the `input` member that holds them must carry
 * `x-max-bytes` and `x-max-depth` instead.
 */
function unbounded(
  document: Json,
  schema: unknown,
  where: string,
  seen = new Set<unknown>(),
): string[] {
  if (typeof schema !== 'object' || schema === null) return [`${where}: no schema`];
  const node = schema as Json;
  if (typeof node.$ref === 'string') {
    const ref = node.$ref;
    if (ref.startsWith('#/components/schemas/Input.')) return [];
    if (seen.has(ref)) return [];
    const target = ref
      .slice(2)
      .split('/')
      .reduce<unknown>((at, key) => (at as Json | undefined)?.[key], document);
    return unbounded(
      document,
      target,
      `${where} (${ref.split('/').at(-1) ?? ''})`,
      new Set([...seen, ref]),
    );
  }
  if ('x-max-bytes' in node) {
    return typeof node['x-max-bytes'] === 'number' && typeof node['x-max-depth'] === 'number'
      ? []
      : [`${where}: x-max-bytes without x-max-depth`];
  }
  if ('const' in node || Array.isArray(node.enum)) return [];
  const out: string[] = [];
  for (const key of ['allOf', 'oneOf', 'anyOf'] as const) {
    const branches = node[key];
    if (Array.isArray(branches)) {
      branches.forEach((branch, i) =>
        out.push(...unbounded(document, branch, `${where}/${key}/${i}`, seen)),
      );
    }
  }
  const types = (Array.isArray(node.type) ? node.type : [node.type]).filter(
    (type) => type !== undefined && type !== 'null',
  ) as string[];
  if (
    types.length === 0 &&
    out.length === 0 &&
    !Array.isArray(node.oneOf) &&
    !Array.isArray(node.allOf) &&
    !Array.isArray(node.anyOf)
  ) {
    // No type: any JSON is allowed, so it needs the byte and depth bounds.
    if (!(typeof node.properties === 'object')) return [`${where}: any JSON without x-max-bytes`];
  }
  for (const type of types) {
    if (type === 'string' && typeof node.maxLength !== 'number')
      out.push(`${where}: string without maxLength`);
    if (
      (type === 'integer' || type === 'number') &&
      (typeof node.maximum !== 'number' || typeof node.minimum !== 'number')
    ) {
      out.push(`${where}: ${type} without minimum and maximum`);
    }
    if (type === 'array') {
      if (typeof node.maxItems !== 'number') out.push(`${where}: array without maxItems`);
      out.push(...unbounded(document, node.items, `${where}/items`, seen));
    }
    if (type === 'object') {
      if (typeof node.maxProperties !== 'number' && node.additionalProperties !== false) {
        out.push(`${where}: object without maxProperties or additionalProperties: false`);
      }
      if (typeof node.additionalProperties === 'object') {
        out.push(
          ...unbounded(document, node.additionalProperties, `${where}/additionalProperties`, seen),
        );
        if (node.propertyNames === undefined)
          out.push(`${where}: open object without propertyNames`);
        else
          out.push(
            ...unbounded(
              document,
              { type: 'string', ...(node.propertyNames as Json) },
              `${where}/propertyNames`,
              seen,
            ),
          );
      }
    }
  }
  for (const [name, property] of Object.entries((node.properties as Json | undefined) ?? {})) {
    out.push(...unbounded(document, property, `${where}/${name}`, seen));
  }
  return out;
}

/** Every bound missing on the routes of `document` (their parameters and bodies). */
function missingBounds(document: Json, only: (path: string) => boolean): string[] {
  const resolve = (value: unknown): Json => {
    const ref = (value as Json).$ref;
    if (typeof ref !== 'string') return value as Json;
    return ref
      .slice(2)
      .split('/')
      .reduce<unknown>((at, key) => (at as Json)[key], document) as Json;
  };
  const out: string[] = [];
  for (const [path, item] of Object.entries(document.paths as Record<string, Json>)) {
    if (!only(path)) continue;
    const shared = ((item.parameters as unknown[] | undefined) ?? []).map(resolve);
    for (const method of ['get', 'post', 'patch', 'delete', 'put'] as const) {
      const operation = item[method] as Json | undefined;
      if (!operation) continue;
      const route = `${method.toUpperCase()} ${path}`;
      const parameters = [
        ...shared,
        ...((operation.parameters as unknown[] | undefined) ?? []).map(resolve),
      ];
      for (const parameter of parameters) {
        out.push(
          ...unbounded(
            document,
            parameter.schema,
            `${route} ${String(parameter.in)} ${String(parameter.name)}`,
          ),
        );
      }
      const body = operation.requestBody as Json | undefined;
      if (body) {
        if (typeof body['x-max-bytes'] !== 'number') out.push(`${route} body: no x-max-bytes`);
        for (const [type, media] of Object.entries(body.content as Record<string, Json>)) {
          out.push(...unbounded(document, media.schema, `${route} body ${type}`));
        }
      }
    }
  }
  return out;
}

describe('the OpenAPI document states every bound', { timeout: 30_000 }, () => {
  let app: FastifyInstance;
  let document: Json;

  before(async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const webhooks = createWebhooks({ accepted, allow: ['127.0.0.0/8'] });
    app = createHttpServer({ accepted, webhooks, logger: false, bodyLimit: 200_000 });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    document = (await (await fetch(`${base}/v1/openapi.json`)).json()) as Json;
  });
  after(() => app.close());

  it('every route outside /v1/webhooks bounds its body, headers, path and query parameters', () => {
    assert.deepEqual(
      missingBounds(document, (path) => !path.startsWith('/v1/webhooks')),
      [],
    );
    const submit = (document.components as { schemas: Record<string, Json> }).schemas.SubmitRequest;
    const input = (submit?.properties as Record<string, Json>).input;
    assert.equal(input?.['x-max-bytes'], 200_000, 'the input is bounded by the body limit served');
    assert.equal(input?.['x-max-depth'], 64);
    // Every route is checked: the document lists them all.
    const routes = Object.keys(document.paths as Json).filter((p) => !p.startsWith('/v1/webhooks'));
    assert.ok(routes.length >= 12, routes.join(' '));
  });

  it('every webhook route bounds its body, headers, path and query parameters', () => {
    assert.deepEqual(
      missingBounds(document, (path) => path.startsWith('/v1/webhooks')),
      [],
    );
    const routes = Object.keys(document.paths as Json).filter((p) => p.startsWith('/v1/webhooks'));
    assert.ok(routes.length >= 6, routes.join(' '));
  });
});
