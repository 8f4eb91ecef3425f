import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { DiagnosticSeverity, Parser, type Input } from '@asyncapi/parser';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { EVENT_TYPES } from '../src/domain/events.ts';
import { callbackWants } from '../src/domain/webhooks.ts';
import type { Accepted } from '../src/engine/accepted.ts';
import { demoOperations } from '../src/engine/demo.ts';
import { asyncApiDocument } from '../src/http/asyncapi.ts';
import { toMonitor, toWireEvent } from '../src/wire/monitor.ts';
import { createHttpServer } from '../src/server/http.ts';
import { createWebhooks } from '../src/webhooks/service.ts';
import { eventually, startEngine } from './helpers.ts';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

type Json = Record<string, unknown>;
interface Ref {
  $ref: string;
}
interface RawOperation {
  action: 'send' | 'receive';
  channel: Ref;
  messages: Ref[];
  reply?: { channel: Ref; messages: Ref[] };
}

/** The WebSocket message types of the two tables of docs/streams.md. */
const CLIENT_TYPES = ['subscribe', 'unsubscribe', 'submit', 'cancel', 'ping'];
const SERVER_TYPES = [
  'welcome',
  'ack',
  'snapshot',
  'event',
  'complete',
  'error',
  'pong',
  'closing',
];

const definitions = new Map(demoOperations.map((definition) => [definition.type, definition]));
const plain = asyncApiDocument({ definitions, auth: false });
const secured = asyncApiDocument({
  definitions,
  auth: true,
  serverUrl: 'https://streams.example.com/api',
});
const withoutWebhooks = asyncApiDocument({ definitions, auth: false, webhooks: false });

/** The parsed document; fails on any error diagnostic, and lists them all when it does. */
async function parse(doc: Json) {
  const { document, diagnostics } = await new Parser().parse(doc as Input);
  // Spectral's and the parser's copies of the severity enum differ: compare the numbers.
  const error: number = DiagnosticSeverity.Error;
  const errors = diagnostics.filter(({ severity }: { severity: number }) => severity === error);
  const listing = diagnostics
    .map((d) => `${d.severity} ${String(d.code)} ${d.path.join('/')}: ${d.message}`)
    .join('\n');
  assert.equal(errors.length, 0, listing);
  assert.ok(document, listing);
  return document;
}

/** The `type` a message's payload fixes (`const`), if any. */
function payloadType(payload: unknown): unknown {
  const properties = (payload as { properties?: { type?: { const?: unknown } } } | undefined)
    ?.properties;
  return properties?.type?.const;
}

/** Follows a local `$ref` (`#/a/b`) in the raw document. */
function resolve(doc: Json, pointer: string): unknown {
  return pointer
    .slice(2)
    .split('/')
    .reduce<unknown>((node, key) => (node as Json)[key], doc);
}

/**
 * Checks values against the message payloads of the document with Ajv 2020: `check` says
 * whether one message's payload accepts a value; `only` asserts that, of all the messages of
 * a channel, exactly that one does (AsyncAPI: every message matches exactly one).
 */
function payloadValidator(doc: Json) {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  const base = 'https://accepted.invalid/asyncapi.json';
  ajv.addSchema({ $id: base, ...doc });
  const check = (messageKey: string, value: unknown) => {
    const validate = ajv.getSchema(`${base}#/components/messages/${messageKey}/payload`);
    assert.ok(validate, messageKey);
    return { ok: validate(value) === true, errors: JSON.stringify(validate.errors) };
  };
  const only = (channel: string, messageKey: string, value: unknown) => {
    const { ok, errors } = check(messageKey, value);
    assert.ok(ok, `${messageKey}: ${errors}\n${JSON.stringify(value)}`);
    const messages = (doc.channels as Record<string, { messages: Json }>)[channel]?.messages;
    const matching = Object.keys(messages ?? {}).filter((key) => check(key, value).ok);
    assert.deepEqual(matching, [messageKey], `${channel}: ${JSON.stringify(value)}`);
  };
  return { check, only };
}

describe('AsyncAPI 3.0 document of the streams', { timeout: 60_000 }, () => {
  it('is valid AsyncAPI 3.0.0, with and without auth, with and without webhooks', async () => {
    for (const doc of [plain, secured, withoutWebhooks]) {
      const document = await parse(doc);
      assert.equal(document.version(), '3.0.0');
      assert.equal(document.defaultContentType(), 'application/json');
      assert.ok(document.info().title());
      assert.ok(document.info().version());
    }
  });

  it('has an SSE server and a WebSocket server, from serverUrl or placeholders', () => {
    const servers = (doc: Json) => doc.servers as Record<string, Json>;
    assert.deepEqual(
      Object.values(servers(plain)).map(({ host, protocol }) => [host, protocol]),
      [
        ['localhost:8080', 'http'],
        ['localhost:8080', 'ws'],
      ],
    );
    assert.deepEqual(
      Object.values(servers(secured)).map(({ host, protocol, pathname }) => [
        host,
        protocol,
        pathname,
      ]),
      [
        ['streams.example.com', 'https', '/api'],
        ['streams.example.com', 'wss', '/api'],
      ],
    );
    const schemes = (secured.components as { securitySchemes: Record<string, Json> })
      .securitySchemes;
    assert.deepEqual(schemes.apiKey, {
      ...schemes.apiKey,
      type: 'http',
      scheme: 'bearer',
    });
    assert.deepEqual(schemes.streamToken, {
      ...schemes.streamToken,
      type: 'httpApiKey',
      in: 'query',
      name: 'access_token',
    });
    for (const server of Object.values(servers(secured))) {
      assert.deepEqual(server.security, [
        { $ref: '#/components/securitySchemes/apiKey' },
        { $ref: '#/components/securitySchemes/streamToken' },
      ]);
    }
    for (const server of Object.values(servers(plain))) assert.equal(server.security, undefined);
  });

  it('describes the channels with their addresses, parameters and bindings', () => {
    const channels = secured.channels as Record<string, Json & { bindings?: Json }>;
    const addresses = (doc: Json) =>
      Object.values(doc.channels as Record<string, Json>).map((channel) => channel.address);
    assert.deepEqual(addresses(secured), [
      '/v1/operations/{operationId}/events',
      '/v1/events',
      '/v1/ws',
      '{callbackUrl}',
    ]);
    assert.deepEqual(addresses(withoutWebhooks), [
      '/v1/operations/{operationId}/events',
      '/v1/events',
      '/v1/ws',
    ]);
    assert.ok((channels.webhook?.parameters as Json).callbackUrl);
    assert.ok((channels.operationEvents?.parameters as Json).operationId);
    const wsBinding = (doc: Json) =>
      (
        doc.channels as Record<
          string,
          { bindings: { ws: Json & { query?: { properties: Json } } } }
        >
      ).websocket?.bindings.ws;
    assert.equal(wsBinding(secured)?.method, 'GET');
    assert.deepEqual(Object.keys(wsBinding(secured)?.query?.properties ?? {}), ['access_token']);
    assert.equal(wsBinding(plain)?.query, undefined, 'no token without auth');
    const operations = secured.operations as Record<string, { bindings: { http: Json } }>;
    const query = (name: string) =>
      Object.keys((operations[name]?.bindings.http.query as { properties: Json }).properties);
    assert.deepEqual(query('sendOperationEvents'), ['after', 'access_token']);
    assert.deepEqual(query('sendTenantEvents'), [
      'type',
      'operationType',
      'operation',
      'label',
      'after',
      'access_token',
    ]);
  });

  it('takes every message of an operation, and of its reply, from its channel', () => {
    for (const [name, operation] of Object.entries(
      plain.operations as Record<string, RawOperation>,
    )) {
      const own = (refs: Ref[], channel: Ref) => {
        assert.ok(refs.length > 0, name);
        for (const message of refs) {
          assert.ok(
            message.$ref.startsWith(`${channel.$ref}/messages/`),
            `${name}: ${message.$ref}`,
          );
          assert.ok(resolve(plain, message.$ref), `${name}: ${message.$ref}`);
        }
      };
      own(operation.messages, operation.channel);
      if (operation.reply) own(operation.reply.messages, operation.reply.channel);
    }
  });

  it('gives every message a name, a title, a summary and a payload', async () => {
    const document = await parse(plain);
    const messages = document.components().messages().all();
    assert.ok(messages.length > 0);
    for (const message of messages) {
      assert.ok(message.name(), message.id());
      assert.ok(message.title(), message.id());
      assert.ok(message.summary(), message.id());
      assert.ok(message.hasPayload(), message.id());
    }
  });

  it('has a message for every event type, on both SSE channels', async () => {
    const document = await parse(plain);
    for (const channelId of ['operationEvents', 'tenantEvents']) {
      const channel = document.channels().get(channelId);
      assert.ok(channel, channelId);
      const types = channel
        .messages()
        .all()
        .map((m) => payloadType(m.payload()?.json()));
      for (const type of EVENT_TYPES) {
        // endpoint.disabled belongs to no operation: only the tenant stream carries it.
        const expected = channelId === 'tenantEvents' || type.startsWith('operation.');
        assert.equal(types.includes(type), expected, `${channelId}: ${type}`);
      }
      assert.ok(channel.messages().get('stream.closing'), `${channelId}: stream.closing`);
      const sender = channel.operations().all();
      assert.deepEqual(
        sender.map((operation) => operation.action()),
        ['send'],
      );
    }
    const snapshot = document
      .channels()
      .get('operationEvents')
      ?.messages()
      .get('operation.snapshot');
    assert.equal(payloadType(snapshot?.payload()?.json()), 'operation.snapshot');
  });

  it('has every WebSocket message of docs/streams.md, each in its direction', async () => {
    const document = await parse(plain);
    const received = new Set<unknown>();
    const sent = new Set<unknown>();
    for (const operation of document.operations().all()) {
      if (operation.channels().all()[0]?.id() !== 'websocket') continue;
      const types = operation
        .messages()
        .all()
        .map((m) => payloadType(m.payload()?.json()));
      for (const type of types) (operation.isReceive() ? received : sent).add(type);
      const reply = operation.reply();
      if (reply) {
        assert.ok(operation.isReceive(), `${operation.id()} replies to what it receives`);
        for (const m of reply.messages().all()) sent.add(payloadType(m.payload()?.json()));
      }
    }
    assert.deepEqual([...received].sort(), [...CLIENT_TYPES].sort());
    assert.deepEqual([...sent].sort(), [...SERVER_TYPES].sort());
  });

  it('has a webhook channel: a signed POST of every event type, sent by the server', async () => {
    const document = await parse(plain);
    const channel = document.channels().get('webhook');
    assert.ok(channel, 'webhook channel');
    const messages = channel.messages().all();
    assert.deepEqual(
      messages.map((m) => payloadType(m.payload()?.json())),
      [...EVENT_TYPES],
    );
    for (const message of messages) {
      const payload = message.payload()?.json() as { required: string[] };
      assert.deepEqual(payload.required, ['type', 'timestamp', 'data'], message.id());
      const headers = message.headers()?.json() as { required: string[]; properties: Json };
      assert.deepEqual(
        headers.required,
        ['webhook-id', 'webhook-timestamp', 'webhook-signature'],
        message.id(),
      );
    }
    const operations = channel.operations().all();
    assert.deepEqual(
      operations.map((operation) => [operation.id(), operation.action()]),
      [
        ['sendEndpointWebhook', 'send'],
        ['sendOperationCallback', 'send'],
      ],
    );
    for (const operation of operations) {
      const binding = operation.bindings().get('http')?.value<{ method: string }>();
      assert.equal(binding?.method, 'POST', operation.id());
    }
    const callback = operations[1]?.messages().all() ?? [];
    assert.deepEqual(
      callback.map((m) => payloadType(m.payload()?.json())),
      EVENT_TYPES.filter(callbackWants),
    );
    assert.equal((withoutWebhooks.channels as Json).webhook, undefined);
    assert.equal((withoutWebhooks.operations as Json).sendEndpointWebhook, undefined);
  });

  it('describes submit with the input schema of every registered type', async () => {
    const document = await parse(plain);
    const schemas = (plain.components as { schemas: Record<string, Json> }).schemas;
    const submit = schemas.SubmitRequest as { oneOf: { title: string }[] };
    assert.deepEqual(
      submit.oneOf.map((variant) => variant.title),
      demoOperations.map((definition) => definition.type).sort(),
    );
    for (const definition of demoOperations) {
      assert.deepEqual(schemas[`Input.${definition.type}`], definition.inputSchema ?? {});
    }
    const payload = document.messages().get('ws.submit')?.payload()?.json() as {
      properties: { operation: { oneOf: unknown[] } };
    };
    assert.equal(payload.properties.operation.oneOf.length, demoOperations.length);
  });

  describe('real messages validate against their payloads', () => {
    let accepted: Accepted;
    const { check, only } = payloadValidator(plain);
    const ws = (key: string, value: unknown) => only('websocket', key, value);

    before(async () => {
      accepted = await startEngine({ operations: demoOperations });
    });

    it('every event type, over SSE and in a WebSocket event', async () => {
      const labels = { team: 'docs' };
      const echo = await accepted.submit('demo.echo', { hello: 'world' }, { labels });
      const fail = await accepted.submit('demo.fail', { message: 'no', permanent: true });
      const retried = await accepted.submit('demo.fail', { message: 'again' }, { maxAttempts: 2 });
      const progress = await accepted.submit('demo.progress', { steps: 2, ms: 1 });
      const sleep = await accepted.submit('demo.sleep', { ms: 60_000 });
      for (const op of [echo, fail, retried, progress]) await accepted.wait(op.id);
      await eventually(async () => (await accepted.get(sleep.id))?.status === 'running');
      await accepted.cancel(sleep.id);
      await accepted.wait(sleep.id);
      await accepted.delete(echo.id);
      // An endpoint answering 410 is disabled: the endpoint.disabled event.
      const gone = http.createServer((_request, response) => {
        response.statusCode = 410;
        response.end();
      });
      await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
      const webhooks = createWebhooks({ accepted, allow: ['127.0.0.0/8'], pollIntervalMs: 50 });
      webhooks.start();
      const { endpoint } = await webhooks.createEndpoint('default', {
        url: `http://127.0.0.1:${(gone.address() as AddressInfo).port}/`,
        eventTypes: ['operation.queued'],
      });
      await accepted.submit('demo.echo', 'for the endpoint');
      await eventually(async () => !(await webhooks.getEndpoint('default', endpoint.id)).enabled);
      await webhooks.stop(100);
      gone.close();

      const labelsOf = new Map(
        [echo, fail, retried, progress, sleep].map((op) => [op.id, op.labels]),
      );
      const seen = new Set<string>();
      for await (const event of accepted.events({ follow: false })) {
        const wire: Json = { ...toWireEvent(event) };
        wire.labels ??= labelsOf.get(event.operationId);
        if (event.type !== 'endpoint.disabled') only('operationEvents', event.type, wire);
        only('tenantEvents', event.type, wire);
        ws('ws.event', { type: 'event', subscription: 's1', event: wire });
        seen.add(event.type);
      }
      assert.deepEqual([...seen].sort(), [...EVENT_TYPES].sort());
    });

    it('snapshots, acks and the examples of docs/streams.md', async () => {
      const op = await accepted.submit('demo.echo', 1);
      const monitor = toMonitor(op);
      only('operationEvents', 'operation.snapshot', {
        seq: 41,
        type: 'operation.snapshot',
        operationId: op.id,
        operation: monitor,
      });
      ws('ws.snapshot', { type: 'snapshot', subscription: 's1', seq: 41, operation: monitor });
      ws('ws.ack.submit', {
        type: 'ack',
        id: 'a',
        request: 'submit',
        operation: monitor,
        replayed: false,
      });
      ws('ws.ack.subscribe', {
        type: 'ack',
        id: 1,
        request: 'subscribe',
        subscription: 's1',
        cursor: 41,
      });
      ws('ws.complete', { type: 'complete', subscription: 's1' });
      ws('ws.subscribe', { type: 'subscribe', id: 1, operation: op.id });
      ws('ws.subscribe', {
        type: 'subscribe',
        filter: { types: ['operation.succeeded'], labels: { team: 'docs' } },
        after: 40,
      });
      ws('ws.submit', {
        type: 'submit',
        id: 2,
        operation: { type: 'demo.sleep', input: { ms: 5 } },
        idempotencyKey: 'k',
      });
      ws('ws.error', { type: 'error', id: 3, code: 'INVALID_MESSAGE', message: 'no type' });
      only('operationEvents', 'stream.closing', { reason: 'SHUTTING_DOWN' });
      ws('ws.closing', { type: 'closing', reason: 'SLOW_CONSUMER' });
      ws('ws.welcome', { type: 'welcome', protocol: 1, tenant: 'default', heartbeatMs: 15_000 });

      const invalid = (key: string, value: unknown) =>
        assert.equal(check(key, value).ok, false, `${key} accepts ${JSON.stringify(value)}`);
      invalid('ws.subscribe', { type: 'subscribe', operation: op.id, filter: {} });
      invalid('ws.subscribe', { type: 'subscribe' });
      invalid('ws.submit', {
        type: 'submit',
        operation: { type: 'demo.sleep', input: { ms: 'x' } },
      });
      invalid('ws.submit', { type: 'submit', operation: { type: 'demo.nope' } });
    });

    it('a real webhook request: its body and headers', async () => {
      const received: { path: string; headers: http.IncomingHttpHeaders; body: string }[] = [];
      const receiver = http.createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          received.push({ path: req.url ?? '', headers: req.headers, body });
          res.writeHead(200).end();
        });
      });
      await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
      const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
      const webhooks = createWebhooks({ accepted, allow: ['127.0.0.0/8'], pollIntervalMs: 50 });
      webhooks.start();
      after(async () => {
        await webhooks.stop(100);
        receiver.closeAllConnections();
        await new Promise((resolve) => receiver.close(resolve));
      });
      await webhooks.createEndpoint('default', { url: `${url}/hook` });
      const op = await accepted.submit('demo.echo', { hello: 'world' }, { labels: { a: 'b' } });
      const bodies = () =>
        received
          .filter((request) => request.path === '/hook')
          .map((request) => ({
            headers: request.headers,
            body: JSON.parse(request.body) as { type: string; data: { operationId: string } },
          }))
          .filter(({ body }) => body.data.operationId === op.id);
      await eventually(() => bodies().some(({ body }) => body.type === 'operation.succeeded'));

      const ajv = new Ajv2020({ strict: false, allErrors: true });
      addFormats(ajv);
      ajv.addSchema({ $id: 'https://accepted.invalid/asyncapi.json', ...plain });
      for (const { headers, body } of bodies()) {
        only('webhook', `webhook.${body.type}`, body);
        const validate = ajv.getSchema(
          `https://accepted.invalid/asyncapi.json#/components/messages/webhook.${body.type}/headers`,
        );
        assert.ok(validate);
        assert.ok(validate(headers), JSON.stringify(validate.errors));
      }
      assert.deepEqual(
        bodies().map(({ body }) => body.type),
        ['operation.queued', 'operation.started', 'operation.succeeded'],
      );
    });

    it('serves the document at GET /v1/asyncapi.json', async () => {
      const app = createHttpServer({ accepted, logger: false });
      try {
        const response = await app.inject({ method: 'GET', url: '/v1/asyncapi.json' });
        assert.equal(response.statusCode, 200, response.body);
        const served = response.json<Json>();
        assert.equal(served.asyncapi, '3.0.0');
        await parse(served);
      } finally {
        await app.close();
      }
    });
  });
});
