import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { EVENT_TYPES } from '../src/domain/events.ts';
import type { Accepted } from '../src/engine/accepted.ts';
import { demoOperations } from '../src/engine/demo.ts';
import { openApiDocument } from '../src/http/openapi.ts';
import { createHttpServer } from '../src/server/http.ts';
import { createWebhooks, type Webhooks } from '../src/webhooks/service.ts';
import { eventually, startEngine } from './helpers.ts';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

type Json = Record<string, unknown>;

/** The webhook routes (`registerWebhookRoutes`), present only when the server has webhooks. */
const WEBHOOK_ROUTES = [
  ['/v1/webhooks/endpoints', ['get', 'post']],
  ['/v1/webhooks/endpoints/{id}', ['get', 'patch', 'delete']],
  ['/v1/webhooks/endpoints/{id}:rotate-secret', ['post']],
  ['/v1/webhooks/endpoints/{id}:replay', ['post']],
  ['/v1/webhooks/callback-secret', ['get']],
  ['/v1/webhooks/callback-secret:rotate', ['post']],
  ['/v1/webhooks/deliveries', ['get']],
  ['/v1/webhooks/deliveries/{id}', ['get']],
  ['/v1/webhooks/deliveries/{id}/attempts', ['get']],
  ['/v1/webhooks/deliveries/{id}:replay', ['post']],
] as const;

/** A URI fragment holding a JSON pointer to these keys (RFC 6901, then percent-encoded). */
const pointer = (...keys: string[]) =>
  `#/${keys.map((key) => encodeURIComponent(key.replace(/~/g, '~0').replace(/\//g, '~1'))).join('/')}`;

/** Follows `keys` through a JSON document. */
function at(doc: unknown, ...keys: string[]): unknown {
  return keys.reduce<unknown>((node, key) => (node as Json | undefined)?.[key], doc);
}

/**
 * Checks values against the schemas of an OpenAPI document with Ajv 2020: `schemaAt` against
 * the schema at a location of the document, `answer` a real HTTP answer against what the
 * document says the route answers with its status (headers present, body of the schema).
 */
function documentValidator(document: Json) {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  const base = 'https://accepted.invalid/openapi.json';
  ajv.addSchema({ $id: base, ...document });
  const schemaAt = (keys: string[], value: unknown) => {
    const validate = ajv.getSchema(`${base}${pointer(...keys)}`);
    assert.ok(validate, keys.join(' '));
    assert.ok(validate(value), `${keys.join(' ')}: ${JSON.stringify(validate.errors)}`);
  };
  const answer = (path: string, method: string, response: LightMyRequestResponse) => {
    const status = String(response.statusCode);
    const responses = at(document, 'paths', path, method, 'responses') as Json | undefined;
    assert.ok(responses, `${method} ${path} is documented`);
    const key = status in responses ? status : `${status[0] ?? ''}XX`;
    const documented = responses[key] as { headers?: Json; content?: Json } | undefined;
    assert.ok(documented, `${method} ${path} documents ${status}: ${response.body}`);
    for (const header of Object.keys(documented.headers ?? {})) {
      if (header === 'Retry-After') continue;
      assert.ok(
        response.headers[header.toLowerCase()] !== undefined,
        `${method} ${path} ${status}: header ${header}`,
      );
    }
    if (!documented.content) {
      assert.equal(response.body, '', `${method} ${path} ${status} has no body`);
      return;
    }
    const type = String(response.headers['content-type']).split(';')[0] ?? '';
    assert.ok(type in documented.content, `${method} ${path} ${status}: ${type}`);
    schemaAt(['paths', path, method, 'responses', key, 'content', type, 'schema'], response.json());
  };
  return { schemaAt, answer };
}

/** A real HTTP receiver on loopback that answers 200 and keeps every request. */
class Receiver {
  readonly received: { path: string; headers: http.IncomingHttpHeaders; body: string }[] = [];
  private readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      this.received.push({ path: req.url ?? '', headers: req.headers, body });
      res.writeHead(200).end('ok');
    });
  });
  url = '';

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** The bodies received on one path, parsed, with their headers. */
  at(path: string) {
    return this.received
      .filter((request) => request.path === path)
      .map((request) => ({
        headers: request.headers,
        body: JSON.parse(request.body) as { type: string; data: { operationId: string } },
      }));
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * A generic long-running-operation poller, written from the Azure SDK's documented behaviour
 * (standards.md §2): mode from the initial headers, status compared case-insensitively,
 * Retry-After honoured, a changed Operation-Location followed, error.code/error.message read
 * on failure, and on success a final GET of the initial `Location` for a POST.
 */
async function azureStylePoll(initial: Response, initialUrl: string): Promise<unknown> {
  const lower = (value: unknown) => (typeof value === 'string' ? value.toLowerCase() : value);
  let pollUrl =
    initial.headers.get('operation-location') ?? initial.headers.get('azure-asyncoperation');
  const location = initial.headers.get('location');
  if (!pollUrl) throw new Error('expected OperationLocation mode');
  await initial.arrayBuffer(); // In this mode the initial answer counts as running.
  let retryAfter = initial.headers.get('retry-after');
  for (;;) {
    const delayMs = retryAfter === null ? 2000 : Number(retryAfter) * 1000;
    await new Promise((resolve) => setTimeout(resolve, Math.min(delayMs, 2_147_483_647)));
    const response = await fetch(new URL(pollUrl, initialUrl));
    const body = (await response.json()) as {
      status?: unknown;
      error?: { code?: string; message?: string };
      resourceLocation?: string;
    };
    if (typeof body.status !== 'string')
      throw new Error('A non-string status makes the poller throw');
    const status = lower(body.status);
    if (status === 'succeeded') {
      const finalUrl = body.resourceLocation ?? location;
      if (!finalUrl) return body;
      const final = await fetch(new URL(finalUrl, initialUrl));
      return final.json();
    }
    if (status === 'failed') {
      const { code, message } = body.error ?? {};
      if (code === undefined || message === undefined)
        throw new Error('missing error code/message');
      throw new Error(`The long-running operation has failed. ${code}. ${message}`);
    }
    if (status === 'canceled' || status === 'cancelled') throw new Error('Operation was canceled');
    retryAfter = response.headers.get('retry-after');
    pollUrl = response.headers.get('operation-location') ?? pollUrl;
  }
}

describe('interoperability: OpenAPI 3.1 and Azure-style pollers', { timeout: 60_000 }, () => {
  let accepted: Accepted;
  let base: string;
  let close: () => Promise<void>;

  before(async () => {
    accepted = await startEngine({ operations: demoOperations });
    const app = createHttpServer({ accepted, logger: false });
    base = await app.listen({ port: 0, host: '127.0.0.1' });
    close = () => app.close();
  });
  after(() => close());

  const submit = (body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${base}/v1/operations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });

  it('serves an OpenAPI 3.1 document that a real validator accepts', async () => {
    const document = (await (await fetch(`${base}/v1/openapi.json`)).json()) as Record<
      string,
      unknown
    >;
    const validator = new Validator();
    const result = await validator.validate(document);
    assert.deepEqual(result.errors, undefined, JSON.stringify(result.errors, null, 2));
    assert.equal(result.valid, true);
    assert.equal(validator.version, '3.1');
    const paths = document.paths as Record<string, Record<string, unknown>>;
    for (const [path, methods] of [
      ['/v1/operations', ['get', 'post']],
      ['/v1/operations/{id}', ['get', 'delete']],
      ['/v1/operations/{id}:cancel', ['post']],
      ['/v1/operations/{id}:retry', ['post']],
      ['/v1/operations/{id}/events', ['get']],
      ['/v1/events', ['get']],
      ['/v1/stream-tokens', ['post']],
      ['/v1/ws', ['get']],
      ['/healthz', ['get']],
      ['/readyz', ['get']],
      ['/v1/openapi.json', ['get']],
      ['/v1/asyncapi.json', ['get']],
    ] as const) {
      for (const method of methods) assert.ok(paths[path]?.[method], `${method} ${path}`);
    }
    // The submit schema is the one that validates: every registered type with its input.
    const schemas = (document.components as { schemas: Record<string, unknown> }).schemas;
    const submitSchema = schemas.SubmitRequest as { oneOf: { title: string }[] };
    assert.deepEqual(
      submitSchema.oneOf.map((v) => v.title),
      demoOperations.map((d) => d.type).sort(),
    );
    assert.deepEqual(schemas['Input.demo.sleep'], demoOperations[1]?.inputSchema);
  });

  it('answers what the document describes (monitor, pages, events, problems)', async () => {
    const document = (await (await fetch(`${base}/v1/openapi.json`)).json()) as Record<
      string,
      unknown
    >;
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats(ajv);
    ajv.addSchema({ $id: 'https://accepted.invalid/openapi.json', ...document });
    const check = (schema: string, value: unknown) => {
      const validate = ajv.getSchema(
        `https://accepted.invalid/openapi.json#/components/schemas/${schema}`,
      );
      assert.ok(validate, schema);
      assert.ok(validate(value), `${schema}: ${JSON.stringify(validate.errors)}`);
    };
    const request = { type: 'demo.sleep', input: { ms: 5 }, labels: { team: 'a' } };
    check('SubmitRequest', request);
    const bad = ajv.getSchema(
      'https://accepted.invalid/openapi.json#/components/schemas/SubmitRequest',
    );
    assert.equal(bad?.({ type: 'demo.sleep', input: { ms: 'x' } }), false, 'input schemas apply');

    const accepted202 = await submit(request, { prefer: 'wait=5' });
    const monitor = (await accepted202.json()) as { id: string; status: string };
    assert.equal(monitor.status, 'succeeded');
    check('StatusMonitor', monitor);
    const queued = await submit({
      type: 'demo.echo',
      runAt: new Date(Date.now() + 30 * 86_400_000).toISOString(),
    });
    check('StatusMonitor', await queued.json());
    const failed = await submit(
      { type: 'demo.fail', input: { message: 'm', permanent: true } },
      { prefer: 'wait=5' },
    );
    check('StatusMonitor', await failed.json());
    check('OperationPage', await (await fetch(`${base}/v1/operations?limit=2`)).json());
    check('EventPage', await (await fetch(`${base}/v1/operations/${monitor.id}/events`)).json());
    check('Problem', await (await submit({ type: 'nope' })).json());
    check('Problem', await (await fetch(`${base}/v1/operations?limit=x`)).json());
  });

  it('an Azure-style poller drives an operation to succeeded and gets its result', async () => {
    const initial = await submit({ type: 'demo.sleep', input: { ms: 200 } });
    assert.equal(initial.status, 202);
    const result = await azureStylePoll(initial, `${base}/v1/operations`);
    const final = result as { status: string; result: unknown };
    assert.equal(final.status, 'succeeded');
    assert.deepEqual(final.result, { sleptMs: 200 });
  });

  it('an Azure-style poller surfaces error.code and error.message of a failed operation', async () => {
    const initial = await submit({
      type: 'demo.fail',
      input: { message: 'the quota is used up', code: 'QUOTA_EXCEEDED', permanent: true },
    });
    await assert.rejects(
      azureStylePoll(initial, `${base}/v1/operations`),
      /The long-running operation has failed\. QUOTA_EXCEEDED\. the quota is used up/,
    );
  });

  it('an Azure-style poller sees a canceled operation as canceled', async () => {
    const initial = await submit({ type: 'demo.sleep', input: { ms: 60_000 } });
    const { id } = (await initial.clone().json()) as { id: string };
    await fetch(`${base}/v1/operations/${id}:cancel`, { method: 'POST' });
    await assert.rejects(
      azureStylePoll(initial, `${base}/v1/operations`),
      /Operation was canceled/,
    );
  });
});

describe('interoperability: webhooks in the OpenAPI document', { timeout: 60_000 }, () => {
  let accepted: Accepted;
  let webhooks: Webhooks;
  let app: FastifyInstance;
  let receiver: Receiver;
  let document: Json;

  before(async () => {
    accepted = await startEngine({ operations: demoOperations });
    webhooks = createWebhooks({ accepted, allow: ['127.0.0.0/8'], pollIntervalMs: 50 });
    webhooks.start();
    app = createHttpServer({ accepted, webhooks, logger: false });
    receiver = await new Receiver().start();
    document = (await app.inject({ method: 'GET', url: '/v1/openapi.json' })).json<Json>();
  });
  after(async () => {
    await app.close();
    await webhooks.stop(100);
    await receiver.close();
  });

  const call = (method: string, url: string, payload?: unknown, headers: Json = {}) =>
    app.inject({
      method: method as 'GET',
      url,
      headers: headers as Record<string, string>,
      ...(payload === undefined ? {} : { payload: payload as Json }),
    });

  it('is valid with auth on and off, webhooks on and off', async () => {
    const definitions = accepted.definitions;
    for (const auth of [true, false]) {
      for (const withWebhooks of [true, false, undefined]) {
        const doc = openApiDocument({ definitions, auth, webhooks: withWebhooks });
        const result = await new Validator().validate(doc);
        const label = `auth ${auth}, webhooks ${String(withWebhooks)}`;
        assert.deepEqual(result.errors, undefined, `${label}: ${JSON.stringify(result.errors)}`);
        const on = withWebhooks !== false;
        const paths = doc.paths as Record<string, Json>;
        for (const [path, methods] of WEBHOOK_ROUTES) {
          for (const method of methods) {
            assert.equal(paths[path]?.[method] !== undefined, on, `${label}: ${method} ${path}`);
          }
        }
        assert.equal(doc.webhooks !== undefined, on, label);
        const submit = paths['/v1/operations']?.post as { callbacks?: Json; responses: Json };
        assert.equal(submit.callbacks !== undefined, on, label);
        const unprocessable = submit.responses['422'] as { description: string };
        assert.equal(unprocessable.description.includes('URL_NOT_ALLOWED'), on, label);
      }
    }
  });

  it('serves every webhook route, the webhooks section and the callback', async () => {
    const result = await new Validator().validate(document);
    assert.deepEqual(result.errors, undefined, JSON.stringify(result.errors, null, 2));
    const paths = document.paths as Record<string, Record<string, unknown>>;
    for (const [path, methods] of WEBHOOK_ROUTES) {
      for (const method of methods) assert.ok(paths[path]?.[method], `${method} ${path}`);
    }
    // If-Match is a required header on PATCH and DELETE, optional on :rotate-secret.
    const parameters = (document.components as { parameters: Record<string, Json> }).parameters;
    for (const method of ['patch', 'delete']) {
      const refs = at(paths, '/v1/webhooks/endpoints/{id}', method, 'parameters') as {
        $ref: string;
      }[];
      const ifMatch = refs.map((r) => parameters[r.$ref.split('/').pop() ?? ''] ?? {});
      assert.ok(
        ifMatch.some((p) => p.name === 'If-Match' && p.in === 'header' && p.required === true),
        method,
      );
    }
    const schemas = (document.components as { schemas: Json }).schemas;
    for (const name of ['WebhookEndpoint', 'WebhookDelivery', 'WebhookAttempt']) {
      assert.ok(schemas[name], name);
    }
    // One webhook per event type, with the three headers and the body of its type.
    const hooks = document.webhooks as Record<string, { post: Json }>;
    assert.deepEqual(Object.keys(hooks), [...EVENT_TYPES]);
    for (const type of EVENT_TYPES) {
      const post = hooks[type]?.post as { parameters: { $ref: string }[]; responses: Json };
      const headers = post.parameters.map((r) => parameters[r.$ref.split('/').pop() ?? '']);
      assert.deepEqual(
        headers.map((h) => [h?.name, h?.in, h?.required]),
        [
          ['webhook-id', 'header', true],
          ['webhook-timestamp', 'header', true],
          ['webhook-signature', 'header', true],
        ],
      );
      assert.deepEqual(Object.keys(post.responses).sort(), ['2XX', '410', '429', '503', 'default']);
    }
    const callback = at(
      paths,
      '/v1/operations',
      'post',
      'callbacks',
      'operationEvent',
      '{$request.body#/callbackUrl}',
      'post',
    );
    assert.ok(callback, 'the callback of submit');
  });

  it('answers what the document describes (endpoints, secrets, deliveries, problems)', async () => {
    const { answer } = documentValidator(document);
    const parameters = (document.components as { parameters: Record<string, Json> }).parameters;
    const idPattern = (name: string) =>
      new RegExp((parameters[name]?.schema as { pattern: string }).pattern);
    const base = '/v1/webhooks/endpoints';
    const item = `${base}/{id}`;

    const created = await call('POST', base, {
      url: 'http://127.0.0.1:9/hook',
      description: 'nobody listens',
      eventTypes: ['operation.queued', 'operation.succeeded'],
      labels: { team: 'interop' },
      retrySchedule: ['1s', '1m'],
      rateLimit: 10,
      ed25519: true,
    });
    assert.equal(created.statusCode, 201, created.body);
    answer(base, 'post', created);
    const endpoint = created.json<{ id: string; secret: string; version: number }>();
    assert.ok(endpoint.secret.startsWith('whsec_'));
    assert.ok(idPattern('EndpointId').test(endpoint.id), endpoint.id);
    const url = `${base}/${endpoint.id}`;

    answer(base, 'get', await call('GET', `${base}?limit=1`));
    const read = await call('GET', url);
    answer(item, 'get', read);
    const etag = String(read.headers.etag);
    assert.equal(etag, `"${endpoint.version}"`);

    const required = await call('PATCH', url, { description: 'x' });
    assert.equal(required.statusCode, 428);
    assert.equal(required.json<{ code: string }>().code, 'PRECONDITION_REQUIRED');
    answer(item, 'patch', required);
    const failed = await call('PATCH', url, { description: 'x' }, { 'if-match': '"999"' });
    assert.equal(failed.statusCode, 412);
    assert.equal(failed.json<{ code: string }>().code, 'PRECONDITION_FAILED');
    answer(item, 'patch', failed);
    const blocked = await call('PATCH', url, { url: 'http://10.1.2.3/hook' }, { 'if-match': etag });
    assert.equal(blocked.json<{ code: string }>().code, 'URL_NOT_ALLOWED');
    answer(item, 'patch', blocked);
    const patched = await call('PATCH', url, { description: null }, { 'if-match': etag });
    assert.equal(patched.statusCode, 200, patched.body);
    answer(item, 'patch', patched);
    const invalid = await call('POST', base, { url: 'http://127.0.0.1:9/', nope: 1 });
    assert.equal(invalid.json<{ code: string }>().code, 'VALIDATION_FAILED');
    answer(base, 'post', invalid);
    const missing = await call('GET', `${base}/ep_0000000000000000000000`);
    assert.equal(missing.json<{ code: string }>().code, 'ENDPOINT_NOT_FOUND');
    answer(item, 'get', missing);
    answer(base, 'get', await call('GET', `${base}?limit=0`));

    const rotated = await call('POST', `${url}:rotate-secret`);
    assert.equal(rotated.statusCode, 200, rotated.body);
    answer(`${item}:rotate-secret`, 'post', rotated);
    const replayed = await call('POST', `${url}:replay`, { since: '2020-01-01T00:00:00Z' });
    answer(`${item}:replay`, 'post', replayed);

    const secret = await call('GET', '/v1/webhooks/callback-secret');
    answer('/v1/webhooks/callback-secret', 'get', secret);
    answer(
      '/v1/webhooks/callback-secret:rotate',
      'post',
      await call('POST', '/v1/webhooks/callback-secret:rotate'),
    );

    // A queued operation with the endpoint's label: one delivery, whose attempt fails.
    const submitted = await call('POST', '/v1/operations', {
      type: 'demo.echo',
      input: 1,
      labels: { team: 'interop' },
    });
    assert.equal(submitted.statusCode, 202);
    const deliveries = `/v1/webhooks/deliveries?endpoint=${endpoint.id}`;
    await eventually(async () => {
      const page = (await call('GET', deliveries)).json<{ items: { attempts: number }[] }>();
      return page.items.some((d) => d.attempts > 0);
    });
    const list = await call('GET', `${deliveries}&status=pending,failed,delivered&limit=5`);
    answer('/v1/webhooks/deliveries', 'get', list);
    const delivery = list
      .json<{ items: { id: string; attempts: number }[] }>()
      .items.find((d) => d.attempts > 0);
    assert.ok(delivery);
    assert.ok(idPattern('DeliveryId').test(delivery.id), delivery.id);
    const one = `/v1/webhooks/deliveries/${delivery.id}`;
    answer('/v1/webhooks/deliveries/{id}', 'get', await call('GET', one));
    const attempts = await call('GET', `${one}/attempts`);
    answer('/v1/webhooks/deliveries/{id}/attempts', 'get', attempts);
    assert.ok(attempts.json<{ items: unknown[] }>().items.length > 0);
    const again = await call('POST', `${one}:replay`);
    assert.equal(again.statusCode, 202, again.body);
    answer('/v1/webhooks/deliveries/{id}:replay', 'post', again);
    const noDelivery = await call('GET', '/v1/webhooks/deliveries/dlv_0000000000000000000000');
    assert.equal(noDelivery.json<{ code: string }>().code, 'DELIVERY_NOT_FOUND');
    answer('/v1/webhooks/deliveries/{id}', 'get', noDelivery);
    const badQuery = await call('GET', '/v1/webhooks/deliveries?status=lost');
    assert.equal(badQuery.json<{ code: string }>().code, 'INVALID_QUERY');
    answer('/v1/webhooks/deliveries', 'get', badQuery);

    // A callbackUrl the server must not call.
    const refused = await call('POST', '/v1/operations', {
      type: 'demo.echo',
      callbackUrl: 'http://10.1.2.3/callback',
    });
    assert.equal(refused.json<{ code: string }>().code, 'URL_NOT_ALLOWED');
    answer('/v1/operations', 'post', refused);

    const undeleted = await call('DELETE', url);
    assert.equal(undeleted.statusCode, 428);
    answer(item, 'delete', undeleted);
    const deleted = await call('DELETE', url, undefined, { 'if-match': '*' });
    assert.equal(deleted.statusCode, 204);
    answer(item, 'delete', deleted);
  });

  it('delivers bodies and headers of the webhooks section and of the callback', async () => {
    const { schemaAt } = documentValidator(document);
    const created = await call('POST', '/v1/webhooks/endpoints', { url: `${receiver.url}/hook` });
    assert.equal(created.statusCode, 201, created.body);
    const submitted = await call('POST', '/v1/operations', {
      type: 'demo.echo',
      input: { hello: 'world' },
      labels: { team: 'docs' },
      callbackUrl: `${receiver.url}/callback`,
    });
    const { id } = submitted.json<{ id: string }>();
    const ended = (path: string) =>
      receiver
        .at(path)
        .some(({ body }) => body.data.operationId === id && body.type === 'operation.succeeded');
    await eventually(() => ended('/hook') && ended('/callback'));

    const parameters = (document.components as { parameters: Json }).parameters as Record<
      string,
      { name: string }
    >;
    const checkHeaders = (headers: http.IncomingHttpHeaders) => {
      assert.equal(headers['content-type'], 'application/json');
      for (const key of ['WebhookId', 'WebhookTimestamp', 'WebhookSignature']) {
        const name = parameters[key]?.name ?? '';
        schemaAt(['components', 'parameters', key, 'schema'], headers[name]);
      }
    };
    const hooks = receiver.at('/hook').filter(({ body }) => body.data.operationId === id);
    assert.deepEqual(
      hooks.map(({ body }) => body.type),
      ['operation.queued', 'operation.started', 'operation.succeeded'],
    );
    for (const { headers, body } of hooks) {
      checkHeaders(headers);
      schemaAt(
        ['webhooks', body.type, 'post', 'requestBody', 'content', 'application/json', 'schema'],
        body,
      );
    }
    const callbacks = receiver.at('/callback');
    assert.ok(callbacks.length > 0);
    for (const { headers, body } of callbacks) {
      checkHeaders(headers);
      schemaAt(
        [
          'paths',
          '/v1/operations',
          'post',
          'callbacks',
          'operationEvent',
          '{$request.body#/callbackUrl}',
          'post',
          'requestBody',
          'content',
          'application/json',
          'schema',
        ],
        body,
      );
    }
    // The body of one type does not pass for another.
    const succeeded = hooks.at(-1)?.body;
    const validate = new Ajv2020({ strict: false });
    addFormats(validate);
    validate.addSchema({ $id: 'https://accepted.invalid/o.json', ...document });
    const failedSchema = validate.getSchema(
      `https://accepted.invalid/o.json${pointer('components', 'schemas', 'WebhookPayload.operation.failed')}`,
    );
    assert.equal(failedSchema?.(succeeded), false);
  });
});
