import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import vm from 'node:vm';
import { DiagnosticSeverity, Parser, type Input } from '@asyncapi/parser';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { createParser } from 'eventsource-parser';
import type { FastifyInstance } from 'fastify';
import { EVENT_TYPES } from '../src/domain/events.ts';
import { callbackWants } from '../src/domain/webhooks.ts';
import type { Accepted } from '../src/engine/accepted.ts';
import { defineOperation } from '../src/engine/definition.ts';
import { demoOperations } from '../src/engine/demo.ts';
import { asyncApiDocument } from '../src/http/asyncapi.ts';
import { createHttpServer } from '../src/server/http.ts';
import { createWebhooks } from '../src/webhooks/service.ts';
import { gatedStore } from './gated-store.ts';
import { eventually, newStorePlace, startEngine } from './helpers.ts';
import { fencedBlocks } from './readme-blocks.ts';
import { SseClient, WsClient, type SseMessage } from './stream-clients.ts';

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

// ---- real servers, and what they send --------------------------------------------------------

/**
 * Waits while `flood.state` is `wait`, then reports big progress for as long as it is `on`:
 * however many events it takes to fill the buffers between the server and clients that
 * stopped reading (a condition on state, not a count guessed for this machine's sockets).
 */
const flood: { state: 'wait' | 'on' | 'off' } = { state: 'off' };
const floodOperation = defineOperation<{ bytes: number }, { events: number }>({
  type: 'test.flood',
  handler: async ({ bytes }, ctx) => {
    while (flood.state === 'wait' && !ctx.signal.aborted) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const data = 'x'.repeat(bytes);
    let events = 0;
    while (flood.state === 'on' && !ctx.signal.aborted) {
      await ctx.progress({ fraction: 0.5, data });
      events++;
    }
    return { events };
  },
});

interface Listening {
  app: FastifyInstance;
  base: string;
  ws: string;
}

/** Listens on a real port of the loopback interface. */
async function listen(app: FastifyInstance): Promise<Listening> {
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, base, ws: `${base.replace('http', 'ws')}/v1/ws` };
}

type SseChannel = 'operationEvents' | 'tenantEvents';

/** The message of a WebSocket message in the document: by its `type`, an ack by its `request`. */
function wsKey(message: Json): string {
  return message.type === 'ack'
    ? `ws.ack.${String(message.request)}`
    : `ws.${String(message.type)}`;
}

/** The key of a message an operation or a reply lists (`#/channels/c/messages/key`). */
const refKey = (reference: Ref) => reference.$ref.slice(reference.$ref.lastIndexOf('/') + 1);

/**
 * The messages of each channel that the server sends (`send` operations, and the replies of
 * `receive` ones) and that it receives (`receive` operations), by key.
 */
function directions(doc: Json): Map<string, { send: Set<string>; receive: Set<string> }> {
  const out = new Map<string, { send: Set<string>; receive: Set<string> }>();
  const of = (channel: Ref) => {
    const key = refKey(channel);
    let entry = out.get(key);
    if (!entry) out.set(key, (entry = { send: new Set(), receive: new Set() }));
    return entry;
  };
  for (const operation of Object.values(doc.operations as Record<string, RawOperation>)) {
    const own = of(operation.channel);
    for (const message of operation.messages) own[operation.action].add(refKey(message));
    if (operation.reply) {
      const reply = of(operation.reply.channel);
      for (const message of operation.reply.messages) reply.send.add(refKey(message));
    }
  }
  return out;
}

/**
 * Every message captured from a real server, and every client message a real server took,
 * each checked with `only` (against its payload, and against every other message of its
 * channel) as it is recorded; kept by channel and message key.
 */
class Captured {
  private readonly values = new Map<string, Json[]>();

  constructor(
    private readonly doc: Json,
    private readonly only: (channel: string, key: string, value: unknown) => void,
  ) {}

  private add(channel: string, key: string, value: Json): void {
    const id = `${channel} ${key}`;
    const list = this.values.get(id) ?? [];
    list.push(value);
    this.values.set(id, list);
  }

  /** What was captured of one message on one channel. */
  of(channel: string, key: string): Json[] {
    return this.values.get(`${channel} ${key}`) ?? [];
  }

  /** The keys of the messages captured on one channel. */
  keys(channel: string): Set<string> {
    return new Set(
      [...this.values.keys()]
        .filter((id) => id.startsWith(`${channel} `))
        .map((id) => id.slice(channel.length + 1)),
    );
  }

  /**
   * Every message a real SSE client received: the parsed `data:` against the message its
   * `event:` names, and its framing (`id: <seq>` on events and snapshots, none on closing).
   */
  sse(channel: SseChannel, client: SseClient): void {
    assert.equal(client.status, 200, client.body);
    const messages = (this.doc.components as { messages: Record<string, { name: string }> })
      .messages;
    for (const message of client.messages) {
      const key = message.event ?? '(no event: line)';
      const data = JSON.parse(message.data) as Json;
      this.only(channel, key, data);
      assert.equal(messages[key]?.name, message.event, `the name of ${key}`);
      if (key === 'stream.closing') {
        assert.equal(message.id, undefined, JSON.stringify(message));
      } else {
        assert.equal(message.id, String(data.seq), JSON.stringify(message));
        assert.equal(data.type, message.event, JSON.stringify(message));
      }
      this.add(channel, key, data);
    }
  }

  /** Every message a real WebSocket client received, as it was received. */
  received(client: WsClient): void {
    for (const message of client.messages) {
      const key = wsKey(message);
      this.only('websocket', key, message);
      this.add('websocket', key, message);
    }
  }

  /** A client message: checked against its payload, then sent. */
  send(client: WsClient, message: Json): void {
    const key = `ws.${String(message.type)}`;
    this.only('websocket', key, message);
    this.add('websocket', key, message);
    client.send(message);
  }

  /** Sends a request (checked) and waits for its answer: an ack or an error with its id. */
  request(client: WsClient, message: Json): Promise<Json> {
    this.send(client, message);
    return client.next((m) => (m.type === 'ack' || m.type === 'error') && m.id === message.id);
  }
}

// ---- the examples of docs/streams.md ---------------------------------------------------------

/**
 * How docs/streams.md presents the examples of each section: the event object of every
 * channel, SSE frames of some channels, WebSocket messages of one direction, or (the stream
 * token) an HTTP answer, which is the OpenAPI document's and no message here.
 */
const DOC_SECTIONS: Record<string, 'event' | 'client' | 'server' | 'http' | SseChannel[]> = {
  'The event': 'event',
  'One operation: `GET /v1/operations/{id}/events`': ['operationEvents'],
  'Many operations: `GET /v1/events`': ['tenantEvents'],
  'When the server closes a stream': ['operationEvents', 'tenantEvents'],
  'Client to server': 'client',
  'Server to client': 'server',
  'Authentication on streams': 'http',
};

interface DocExample {
  /** `docs/streams.md:<line>`. */
  where: string;
  channel: string;
  /** The server's side: it sends the message, or receives it. */
  direction: 'send' | 'receive';
  key: string;
  value: unknown;
  /** An SSE example's `id:` and `event:` lines. */
  frame?: { id: string | undefined; event: string | undefined };
}

/** Stands for `...` among an object's members in the doc's JSON: the members left out. */
const ELIDED = '\u2026';

/** JSON as the doc writes it: `...` among an object's members leaves the others out. */
function parseDocJson(text: string, where: string): unknown {
  const marked = text.replace(/([{,])\s*\.\.\.\s*(?=\})/g, `$1"${ELIDED}":true`);
  try {
    return JSON.parse(marked);
  } catch (error) {
    assert.fail(`${where}: not JSON, even with its elisions: ${String(error)}\n${text}`);
  }
}

/** A string the doc cuts short: `"op_0Vbf..."`. */
const isCut = (value: unknown): value is string =>
  typeof value === 'string' && value.endsWith('...');

/** Whether an example leaves something out (members, or the end of a string). */
function isElided(value: unknown): boolean {
  if (isCut(value)) return true;
  if (value === null || typeof value !== 'object') return false;
  return ELIDED in value || Object.values(value).some(isElided);
}

/** How many of the values an example shows in full a real message has at the same places. */
function agreement(shown: unknown, real: unknown): number {
  if (shown !== null && typeof shown === 'object') {
    return Object.entries(shown).reduce(
      (sum, [key, value]) => sum + (key === ELIDED ? 0 : agreement(value, (real as Json)?.[key])),
      0,
    );
  }
  return !isCut(shown) && shown === real ? 1 : 0;
}

/**
 * An example with what it leaves out taken from a real message of the same kind: an object
 * with `...` gets the real object's members it does not show, a cut string the real string at
 * its place. Whatever the example does show is kept as written, so a member the payload does
 * not have, a value of the wrong type or a wrong constant still fails.
 */
function completed(shown: unknown, real: unknown, where: string): unknown {
  if (isCut(shown)) {
    assert.equal(
      typeof real,
      'string',
      `${where}: "${shown}" is cut short, the real one is not a string`,
    );
    return real;
  }
  if (Array.isArray(shown)) {
    return shown.map((value, i) => completed(value, (real as unknown[])?.[i], `${where}/${i}`));
  }
  if (shown === null || typeof shown !== 'object') return shown;
  const source = (real ?? {}) as Json;
  const out: Json = ELIDED in shown ? { ...source } : {};
  for (const [key, value] of Object.entries(shown)) {
    if (key !== ELIDED) out[key] = completed(value, source[key], `${where}/${key}`);
  }
  return out;
}

/** The SSE messages of a block of the doc: `event:`, `id:` and the parsed `data:`. */
function docSseMessages(text: string): SseMessage[] {
  const messages: SseMessage[] = [];
  const parser = createParser({
    onEvent: (message) =>
      messages.push({ id: message.id, event: message.event, data: message.data }),
  });
  parser.feed(text.endsWith('\n\n') ? text : `${text}\n`);
  return messages;
}

/**
 * Every example of docs/streams.md, classified as the doc presents it. Shell blocks are the
 * requests that open streams or mint tokens (no messages); a JavaScript block's messages are
 * what it passes to `ws.send(JSON.stringify(...))` (client to server); a JSON block's values
 * (one document, or one per line) and a plain block's SSE messages are classified by their
 * section, `DOC_SECTIONS`, and by their `type` (an SSE message by its `event:` line).
 * `skipped` lists what holds no stream message, and why.
 */
function docExamples(file: string): { examples: DocExample[]; skipped: string[] } {
  const examples: DocExample[] = [];
  const skipped: string[] = [];
  for (const block of fencedBlocks(file)) {
    const where = `${file}:${block.line}`;
    const section = DOC_SECTIONS[block.heading];
    if (block.lang === 'sh') {
      skipped.push(`${where}: shell commands`);
      continue;
    }
    if (block.lang === 'js') {
      const sent = [...block.text.matchAll(/ws\.send\(JSON\.stringify\((\{.*?\})\)\)/g)];
      for (const [, literal] of sent) {
        // A JavaScript object literal of the doc: evaluated with nothing in scope.
        const value = vm.runInNewContext(`(${literal})`, vm.createContext()) as Json;
        const key = `ws.${String(value.type)}`;
        examples.push({ where, channel: 'websocket', direction: 'receive', key, value });
      }
      if (sent.length === 0) skipped.push(`${where}: JavaScript that sends no message`);
      continue;
    }
    assert.ok(
      section,
      `${where}: a ${block.lang || 'plain'} block under "${block.heading}", a section the test does not know: classify it in DOC_SECTIONS`,
    );
    if (block.lang === '') {
      assert.ok(Array.isArray(section), `${where}: SSE messages under "${block.heading}"`);
      const messages = docSseMessages(block.text);
      assert.ok(messages.length > 0, `${where}: no SSE message in this block`);
      for (const message of messages) {
        const value = parseDocJson(message.data, where);
        const frame = { id: message.id, event: message.event };
        for (const channel of section) {
          examples.push({
            where,
            channel,
            direction: 'send',
            key: message.event ?? 'message',
            value,
            frame,
          });
        }
      }
      continue;
    }
    assert.equal(block.lang, 'json', `${where}: a ${block.lang} block`);
    if (section === 'http') {
      skipped.push(
        `${where}: the answer of POST /v1/stream-tokens (HTTP, in the OpenAPI document)`,
      );
      assert.equal((JSON.parse(block.text) as Json).type, undefined, `${where}: a message?`);
      continue;
    }
    assert.ok(
      !Array.isArray(section),
      `${where}: JSON under "${block.heading}", where the doc shows SSE`,
    );
    const text = block.text.trim();
    const values =
      text.startsWith('{') && !text.includes('}\n{')
        ? [parseDocJson(text, where)]
        : text.split('\n').map((line) => parseDocJson(line, where));
    for (const value of values as Json[]) {
      const type = String(value.type);
      if (section === 'event') {
        // "Every event, on every channel, is this JSON object": each SSE stream that carries
        // its type, and the `event` member of a WebSocket `event` message.
        const channels = type.startsWith('operation.')
          ? ['operationEvents', 'tenantEvents']
          : ['tenantEvents'];
        for (const channel of channels)
          examples.push({ where, channel, direction: 'send', key: type, value });
        examples.push({
          where,
          channel: 'websocket',
          direction: 'send',
          key: 'ws.event',
          value: { type: 'event', subscription: 's1', event: value },
        });
      } else {
        const direction = section === 'client' ? 'receive' : 'send';
        examples.push({ where, channel: 'websocket', direction, key: wsKey(value), value });
      }
    }
  }
  return { examples, skipped };
}

describe('AsyncAPI 3.0 document of the streams', { timeout: 120_000 }, () => {
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

  /**
   * Every message here is captured from a real server on a real port (createHttpServer on
   * 127.0.0.1): the parsed `data:` of each SSE frame of /v1/events and of
   * /v1/operations/{id}/events, and each WebSocket message as a `ws` client received it; the
   * client messages are those the test sent and the server answered. Each is checked with
   * `only` as it is recorded (`Captured`). The examples of docs/streams.md are read from the
   * doc. Hand-built, because no real server sends it without a failing store: the `error`
   * that ends a subscription whose read of the log failed (with `subscription`, code INTERNAL).
   * The engine runs on the real store, gated (`gatedStore`'s `pauseAfter`) to time a delete
   * between a stream's snapshot and its read of the log: operation.deleted on one operation's
   * stream.
   */
  describe('real messages validate against their payloads', () => {
    let accepted: Accepted;
    let gated: ReturnType<typeof gatedStore>;
    let server: Listening;
    const open = new Set<FastifyInstance>();
    const { check, only } = payloadValidator(plain);
    const ws = (key: string, value: unknown) => only('websocket', key, value);
    const captured = new Captured(plain, only);
    /** The message types of a real subscription to a running operation, in order. */
    let oneOperationRun: string[] = [];

    const serve = async (app: FastifyInstance) => {
      open.add(app);
      return listen(app);
    };
    const shut = async (app: FastifyInstance) => {
      open.delete(app);
      await app.close();
    };

    before(async () => {
      gated = gatedStore(newStorePlace().open());
      accepted = await startEngine({
        operations: [...demoOperations, floodOperation],
        store: gated.store,
      });
      server = await serve(createHttpServer({ accepted, logger: false }));
    });
    after(async () => {
      flood.state = 'off';
      for (const app of [...open]) await shut(app);
    });

    it('every event type, as real SSE streams and a real WebSocket deliver it', async () => {
      // The tenant's SSE stream and a WebSocket subscribed with a filter, open before anything
      // happens: each starts from now on.
      const tenant = new SseClient(`${server.base}/v1/events`);
      const socket = new WsClient(server.ws);
      await Promise.all([tenant.opened(), socket.opened()]);
      const all = await captured.request(socket, {
        type: 'subscribe',
        id: 'all',
        filter: { types: [...EVENT_TYPES] },
      });
      assert.equal(all.type, 'ack', JSON.stringify(all));
      // The stream of each operation from its first event (`?after=0`: from the log, then
      // live); each ends after its terminal event.
      const streams: SseClient[] = [];
      const follow = (id: string, query = '?after=0') => {
        const client = new SseClient(`${server.base}/v1/operations/${id}/events${query}`);
        streams.push(client);
        return client;
      };

      const labels = { team: 'docs' };
      const echo = await accepted.submit('demo.echo', { hello: 'world' }, { labels });
      follow(echo.id);
      const fail = await accepted.submit('demo.fail', { message: 'no', permanent: true });
      follow(fail.id);
      const retried = await accepted.submit('demo.fail', { message: 'again' }, { maxAttempts: 2 });
      follow(retried.id);
      const progress = await accepted.submit('demo.progress', { steps: 2, ms: 1 });
      follow(progress.id);
      const sleep = await accepted.submit('demo.sleep', { ms: 60_000 });
      follow(sleep.id);
      for (const op of [echo, fail, retried, progress]) await accepted.wait(op.id);
      await eventually(async () => (await accepted.get(sleep.id))?.status === 'running');
      // Without a cursor, the stream of the running operation starts with its snapshot.
      const running = follow(sleep.id, '');
      await running.until(() => running.messages.length > 0, 'the snapshot');
      await accepted.cancel(sleep.id);
      await accepted.wait(sleep.id);
      await Promise.all(streams.map((client) => client.ended));

      // operation.deleted on the stream of one operation: such a stream ends after the
      // terminal event, and a deleted operation's answers 404, so only a delete that lands
      // between the stream's snapshot and its first read of the log puts it there. The read
      // then finds operation.deleted alone (a delete takes the operation's other events with
      // it), and the stream ends after it: nothing can follow a deletion.
      const paused = gated.pauseAfter(echo.id);
      const deleted = follow(echo.id);
      await paused.reached;
      await accepted.delete(echo.id);
      paused.release();
      await deleted.ended;
      assert.equal(deleted.messages.at(-1)?.event, 'operation.deleted');

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
      const last = await accepted.submit('demo.echo', 'for the endpoint');
      await eventually(async () => !(await webhooks.getEndpoint('default', endpoint.id)).enabled);
      await webhooks.stop(100);
      gone.close();
      await accepted.wait(last.id);

      // Every event of the log so far reached the tenant's stream and the WebSocket.
      const lastSeq = await accepted.lastSeq();
      await tenant.until(() => Number(tenant.lastId) >= lastSeq, `seq ${lastSeq}`);
      await eventually(() => socket.events(all.subscription).some((e) => e.seq >= lastSeq));
      tenant.close();
      socket.close();

      captured.sse('tenantEvents', tenant);
      for (const client of streams) captured.sse('operationEvents', client);
      captured.received(socket);
      // Every event type, on every channel that carries it.
      const types = (values: Json[]) => [...new Set(values.map((v) => String(v.type)))].sort();
      const received = (clients: SseClient[]) =>
        types(clients.flatMap((client) => client.messages.map((m): Json => ({ type: m.event }))));
      assert.deepEqual(received([tenant]), [...EVENT_TYPES].sort());
      assert.deepEqual(
        received(streams).filter((type) => type !== 'operation.snapshot'),
        EVENT_TYPES.filter((type) => type.startsWith('operation.')).sort(),
      );
      const wsEvents = socket.events(all.subscription) as unknown as Json[];
      assert.deepEqual(types(wsEvents), [...EVENT_TYPES].sort());
      // The same events, the same objects, on both.
      assert.deepEqual(
        wsEvents,
        tenant.messages.map((m) => JSON.parse(m.data) as Json),
      );
    });

    it('welcome, acks, snapshots, completes, errors and pongs of a real WebSocket and SSE stream', async () => {
      const socket = new WsClient(server.ws);
      await socket.opened();
      await socket.next((m) => m.type === 'welcome');
      captured.send(socket, { type: 'ping', id: 'p' });
      await socket.next((m) => m.type === 'pong' && m.id === 'p');

      // Submit, with an idempotency key (twice: the second is replayed) and without.
      const sleep = { type: 'demo.sleep', input: { ms: 60_000 }, labels: { team: 'docs' } };
      const first = await captured.request(socket, {
        type: 'submit',
        id: 2,
        operation: sleep,
        idempotencyKey: 'k',
      });
      assert.equal(first.replayed, false, JSON.stringify(first));
      const again = await captured.request(socket, {
        type: 'submit',
        id: 3,
        operation: sleep,
        idempotencyKey: 'k',
      });
      assert.equal(again.replayed, true, JSON.stringify(again));
      const id = (first.operation as Json).id as string;
      const echo = await captured.request(socket, {
        type: 'submit',
        id: 'echo',
        operation: { type: 'demo.echo', input: 1, labels: { team: 'docs' } },
      });
      assert.equal(echo.type, 'ack', JSON.stringify(echo));
      const done = (echo.operation as Json).id as string;
      await accepted.wait(done);

      // One running operation, without `after`: ack, snapshot, its events, complete; and its
      // SSE stream, which starts with its snapshot.
      await eventually(async () => (await accepted.get(id))?.status === 'running');
      const sub = await captured.request(socket, { type: 'subscribe', id: 1, operation: id });
      assert.equal(sub.type, 'ack', JSON.stringify(sub));
      await socket.next((m) => m.type === 'snapshot' && m.subscription === sub.subscription);
      const sse = new SseClient(`${server.base}/v1/operations/${id}/events`);
      await sse.until(() => sse.messages.length > 0, 'the snapshot');
      const cancel = await captured.request(socket, { type: 'cancel', id: 4, operation: id });
      assert.equal(cancel.type, 'ack', JSON.stringify(cancel));
      await socket.next((m) => m.type === 'complete' && m.subscription === sub.subscription);
      await sse.ended;
      oneOperationRun = socket.messages
        .filter((m) => m === sub || (m.subscription === sub.subscription && m.type !== 'ack'))
        .map((m) => String(m.type));

      // A finished operation: complete at once, after the ack and the snapshot.
      const finished = await captured.request(socket, {
        type: 'subscribe',
        id: 5,
        operation: done,
      });
      await socket.next((m) => m.type === 'complete' && m.subscription === finished.subscription);
      // A filter from the log (`after`), then unsubscribe.
      const filtered = await captured.request(socket, {
        type: 'subscribe',
        id: 6,
        filter: { types: ['operation.succeeded'], labels: { team: 'docs' } },
        after: 0,
      });
      assert.equal(filtered.type, 'ack', JSON.stringify(filtered));
      await eventually(() => socket.events(filtered.subscription).length > 0);
      const unsubscribed = await captured.request(socket, {
        type: 'unsubscribe',
        id: 7,
        subscription: filtered.subscription,
      });
      assert.equal(unsubscribed.type, 'ack', JSON.stringify(unsubscribed));

      // Errors: requests the server refuses (each answered with its id) and messages it cannot
      // read (without one).
      const refused = async (message: Json, code: string) => {
        const answer = await captured.request(socket, message);
        assert.equal(answer.code, code, JSON.stringify(answer));
      };
      await refused(
        { type: 'subscribe', id: 8, operation: 'op_000000000000000000000000000000' },
        'OPERATION_NOT_FOUND',
      );
      await refused({ type: 'unsubscribe', id: 9, subscription: 's999' }, 'SUBSCRIPTION_NOT_FOUND');
      await refused({ type: 'cancel', id: 10, operation: done }, 'ALREADY_TERMINAL');
      const unreadable = async (text: string, code: string) => {
        const before = socket.messages.length;
        socket.socket.send(text);
        const answer = await socket.next(
          (m) => socket.messages.indexOf(m) >= before && m.type === 'error',
        );
        assert.equal(answer.code, code, JSON.stringify(answer));
        assert.equal(answer.id, undefined, JSON.stringify(answer));
      };
      await unreadable('not json', 'INVALID_MESSAGE');
      await unreadable(`${'['.repeat(100)}${']'.repeat(100)}`, 'JSON_TOO_DEEP');
      await unreadable('{"type":"ping","id":1e400}', 'NUMBER_OUT_OF_RANGE');
      socket.close();
      captured.sse('operationEvents', sse);
      captured.received(socket);
    });

    it('refuses, as the server does, what the document refuses', async () => {
      const socket = new WsClient(server.ws);
      await socket.opened();
      const op = await accepted.submit('demo.echo', 1);
      const everyMessage = Object.keys(
        (plain.channels as { websocket: { messages: Json } }).websocket.messages,
      );
      // Each message, the messages of the document that refuse it, and the server's answer.
      const refusals: [Json, string[], string][] = [
        [
          { type: 'subscribe', id: 1, operation: op.id, filter: {} },
          ['ws.subscribe'],
          'INVALID_MESSAGE',
        ],
        [{ type: 'subscribe', id: 2 }, ['ws.subscribe'], 'INVALID_MESSAGE'],
        [
          { type: 'submit', id: 3, operation: { type: 'demo.sleep', input: { ms: 'x' } } },
          ['ws.submit'],
          'VALIDATION_FAILED',
        ],
        [
          { type: 'submit', id: 4, operation: { type: 'demo.nope' } },
          ['ws.submit'],
          'UNKNOWN_OPERATION_TYPE',
        ],
        // A type no message has: every message of the channel refuses it.
        [{ type: 'nope', id: 5 }, everyMessage, 'INVALID_MESSAGE'],
      ];
      for (const [message, keys, code] of refusals) {
        for (const key of keys) {
          assert.equal(check(key, message).ok, false, `${key} accepts ${JSON.stringify(message)}`);
        }
        socket.send(message);
        const answer = await socket.next((m) => m.type === 'error' && m.id === message.id);
        assert.equal(answer.code, code, JSON.stringify(answer));
      }
      socket.close();
      captured.received(socket);
    });

    it('closing notices of a real server that shuts down', async () => {
      const other = await serve(createHttpServer({ accepted, logger: false }));
      const op = await accepted.submit('demo.sleep', { ms: 60_000 });
      await eventually(async () => (await accepted.get(op.id))?.status === 'running');
      const tenant = new SseClient(`${other.base}/v1/events`);
      const one = new SseClient(`${other.base}/v1/operations/${op.id}/events`);
      const socket = new WsClient(other.ws);
      await Promise.all([tenant.opened(), socket.opened()]);
      await one.until(() => one.messages.length > 0, 'the snapshot');
      const sub = await captured.request(socket, { type: 'subscribe', id: 1, filter: {} });
      assert.equal(sub.type, 'ack', JSON.stringify(sub));
      await shut(other.app);
      await Promise.all([tenant.ended, one.ended, socket.closed]);
      await accepted.cancel(op.id);
      await accepted.wait(op.id);

      const closing = {
        event: 'stream.closing',
        data: JSON.stringify({ reason: 'SHUTTING_DOWN' }),
      };
      for (const client of [tenant, one]) {
        assert.deepEqual(client.messages.at(-1), { id: undefined, ...closing });
      }
      assert.deepEqual(socket.messages.at(-1), { type: 'closing', reason: 'SHUTTING_DOWN' });
      assert.equal(socket.closeCode, 1001);
      captured.sse('tenantEvents', tenant);
      captured.sse('operationEvents', one);
      captured.received(socket);
    });

    it('closing notices of a real server to clients that stop reading', async () => {
      // A short stall timeout, and a long heartbeat so that the WebSocket keepalive (a ping
      // left unanswered) does not cut the connection first.
      const strict = await serve(
        createHttpServer({
          accepted,
          logger: false,
          streams: { stallTimeoutMs: 300, heartbeatMs: 60_000 },
        }),
      );
      const hub = strict.app.streamHub;
      const tenant = new SseClient(`${strict.base}/v1/events`);
      const socket = new WsClient(strict.ws);
      await Promise.all([tenant.opened(), socket.opened()]);
      const sub = await captured.request(socket, { type: 'subscribe', id: 1, filter: {} });
      assert.equal(sub.type, 'ack', JSON.stringify(sub));
      flood.state = 'wait';
      let op: { id: string } | undefined;
      try {
        op = await accepted.submit('test.flood', { bytes: 40_000 });
        const one = new SseClient(`${strict.base}/v1/operations/${op.id}/events`);
        await one.opened();
        await eventually(() => hub.stats().subscriptions === 3);
        // All three stop reading; then the flood begins, and goes on until every connection
        // has been congested for longer than the stall timeout and closed.
        tenant.pause();
        one.pause();
        socket.socket.pause();
        flood.state = 'on';
        await eventually(() => hub.stats().connections === 0, 60_000);
        flood.state = 'off';
        // What was sent before the cut, the notice last, arrives once they read again.
        tenant.resume();
        one.resume();
        socket.socket.resume();
        await Promise.all([tenant.ended, one.ended, socket.closed]);

        const closing = {
          event: 'stream.closing',
          data: JSON.stringify({ reason: 'SLOW_CONSUMER' }),
        };
        for (const client of [tenant, one]) {
          assert.deepEqual(client.messages.at(-1), { id: undefined, ...closing });
        }
        assert.deepEqual(socket.messages.at(-1), { type: 'closing', reason: 'SLOW_CONSUMER' });
        assert.equal(socket.closeCode, 1008);
        captured.sse('tenantEvents', tenant);
        captured.sse('operationEvents', one);
        captured.received(socket);
      } finally {
        flood.state = 'off';
        if (op) await accepted.wait(op.id);
        await shut(strict.app);
      }
    });

    it('the examples of docs/streams.md, each against its message', (t) => {
      const { examples, skipped } = docExamples('docs/streams.md');
      const sides = directions(plain);
      const channels = plain.channels as Record<string, { messages: Json }>;
      for (const example of examples) {
        const { where, channel, direction, key, frame } = example;
        const what = `${where}: a ${channel} example of ${key}`;
        assert.ok(
          key in (channels[channel]?.messages ?? {}),
          `${what}: the document has no such message`,
        );
        assert.ok(
          sides.get(channel)?.[direction].has(key),
          `${what}: the document has it, but not as a message the server ${direction}s`,
        );
        let value = example.value;
        if (isElided(value)) {
          const real = captured.of(channel, key);
          assert.ok(
            real.length > 0,
            `${what}: it leaves members out, and no real one was captured to complete it`,
          );
          const closest = real.reduce((a, b) =>
            agreement(value, b) > agreement(value, a) ? b : a,
          );
          value = completed(value, closest, where);
        }
        only(channel, key, value);
        if (frame) {
          assert.equal(frame.event, key, what);
          const data = value as Json;
          assert.equal(
            frame.id,
            key === 'stream.closing' ? undefined : String(data.seq),
            `${what}: its id: line`,
          );
        }
      }
      assert.ok(examples.length > 0);
      for (const line of skipped) t.diagnostic(`no stream message: ${line}`);
      // The doc's run of one subscription (its block with the subscribe ack) is the order a
      // real subscription to a running operation took.
      const ack = examples.find((example) => example.key === 'ws.ack.subscribe');
      assert.ok(ack, 'the doc shows the messages of a subscription');
      const run = examples.filter((example) => example.where === ack.where);
      const collapse = (types: string[]) =>
        types.filter((t, i) => t !== 'event' || types[i - 1] !== 'event');
      assert.deepEqual(
        collapse(run.map((e) => String((e.value as Json).type))),
        collapse(oneOperationRun),
      );
    });

    it('every message of the channels was captured from a real server, or is hand-built here', () => {
      const channels = plain.channels as Record<string, { messages: Json }>;
      for (const channel of ['operationEvents', 'tenantEvents', 'websocket']) {
        const missing = Object.keys(channels[channel]?.messages ?? {}).filter(
          (key) => !captured.keys(channel).has(key),
        );
        assert.deepEqual(missing, [], `${channel}: never captured`);
      }
      const reasons = (
        plain.components as { schemas: { ClosingReason: { enum: string[] } } }
      ).schemas.ClosingReason.enum
        .slice()
        .sort();
      const seen = (values: Json[]) => [...new Set(values.map((v) => String(v.reason)))].sort();
      assert.deepEqual(seen(captured.of('operationEvents', 'stream.closing')), reasons);
      assert.deepEqual(seen(captured.of('tenantEvents', 'stream.closing')), reasons);
      assert.deepEqual(seen(captured.of('websocket', 'ws.closing')), reasons);

      // Hand-built, because no real server sends it here: an error with `subscription` ends a
      // subscription whose read of the log failed mid-stream (code INTERNAL), which takes a
      // failing store; the other errors above are real.
      assert.ok(!captured.of('websocket', 'ws.error').some((m) => m.subscription !== undefined));
      ws('ws.error', {
        type: 'error',
        code: 'INTERNAL',
        message: 'The subscription failed; subscribe again with after set to your last seq.',
        subscription: 's1',
      });
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
