import { EVENT_TYPES, type EventType } from '../domain/events.ts';
import type { OperationStatus } from '../domain/operation.ts';
import { callbackWants } from '../domain/webhooks.ts';
import type { OperationDefinition } from '../engine/definition.ts';
import { WS_CLIENT_MESSAGE_SCHEMAS, WS_FILTER_SCHEMA } from '../wire/stream-protocol.ts';
import { openApiDocument, WEBHOOK_HEADERS, webhookPayloadSchema } from './openapi.ts';
import {
  EVENT_SCHEMA,
  EVENTS_QUERY_SCHEMA,
  MONITOR_SCHEMA,
  OPERATION_ERROR_SCHEMA,
  PROBLEM_SCHEMA,
  PROGRESS_SCHEMA,
  TENANT_EVENTS_QUERY_SCHEMA,
  WS_QUERY_SCHEMA,
} from '../wire/schemas.ts';

export interface AsyncApiOptions {
  definitions: ReadonlyMap<string, OperationDefinition<never, unknown>>;
  /** The public URL of the server; default: `localhost:8080` placeholders. */
  serverUrl?: string;
  /** Whether streams need an API key or a stream token. */
  auth: boolean;
  /** Whether the server delivers webhooks: the `webhook` channel. Default true. */
  webhooks?: boolean;
}

type Json = Record<string, unknown>;

const ref = (kind: string, name: string) => ({ $ref: `#/components/${kind}/${name}` });
const schema = (name: string) => ref('schemas', name);
const channelRef = (channel: string) => ({ $ref: `#/channels/${channel}` });
const channelMessage = (channel: string, key: string) => ({
  $ref: `#/channels/${channel}/messages/${key}`,
});

const CLOSING_REASONS = ['SHUTTING_DOWN', 'SLOW_CONSUMER'];

type DataMember = 'attempt' | 'progress' | 'result' | 'error' | 'runAt' | 'endpoint';

/** What each event type says: the status after it, and the `data` members it carries. */
const EVENT_KINDS: Record<
  EventType,
  {
    title: string;
    summary: string;
    status: OperationStatus[];
    required: DataMember[];
    optional?: DataMember[];
  }
> = {
  'operation.queued': {
    title: 'Operation queued',
    summary: 'Submitted, or queued again by a retry; it may start at `runAt`.',
    status: ['queued'],
    required: ['runAt'],
  },
  'operation.started': {
    title: 'Operation started',
    summary: 'A worker started an attempt.',
    status: ['running'],
    required: ['attempt'],
  },
  'operation.progress': {
    title: 'Operation progress',
    summary: 'The running handler reported progress.',
    status: ['running'],
    required: ['progress'],
  },
  'operation.cancel_requested': {
    title: 'Cancellation requested',
    summary: 'Cancellation of the running attempt was asked for.',
    status: ['running'],
    required: [],
  },
  'operation.retrying': {
    title: 'Operation retrying',
    summary: 'An attempt failed; the operation waits for another one at `runAt`.',
    status: ['queued'],
    required: ['error', 'runAt'],
    optional: ['attempt'],
  },
  'operation.succeeded': {
    title: 'Operation succeeded',
    summary: 'The handler finished; `result` is what it returned. Terminal.',
    status: ['succeeded'],
    required: ['result'],
    optional: ['attempt'],
  },
  'operation.failed': {
    title: 'Operation failed',
    summary: 'The last attempt failed for good; `error` says why. Terminal.',
    status: ['failed'],
    required: ['error'],
    optional: ['attempt'],
  },
  'operation.canceled': {
    title: 'Operation canceled',
    summary: 'The operation was canceled; `error` says how. Terminal.',
    status: ['canceled'],
    required: ['error'],
    optional: ['attempt'],
  },
  'operation.deleted': {
    title: 'Operation deleted',
    summary: 'A finished operation was deleted; `status` is the one it had.',
    status: ['succeeded', 'failed', 'canceled'],
    required: [],
  },
  'endpoint.disabled': {
    title: 'Webhook endpoint disabled',
    summary:
      'A webhook endpoint was disabled (a 410, or failing too long). `operationId` is the endpoint’s id, `operationType` is `webhook.endpoint`; there is no `status`.',
    status: [],
    required: ['endpoint'],
  },
};

const DATA_MEMBERS: Record<DataMember, Json> = {
  attempt: {
    ...EVENT_SCHEMA.properties.data.properties.attempt,
    minimum: 1,
    description: 'The attempt this change belongs to (1 for the first).',
  },
  progress: schema('Progress'),
  result: { description: 'The handler’s result (any JSON).' },
  error: schema('OperationError'),
  runAt: {
    ...EVENT_SCHEMA.properties.data.properties.runAt,
    description: 'Earliest start of the next attempt (RFC 3339).',
  },
  endpoint: EVENT_SCHEMA.properties.data.properties.endpoint,
};

/** The event object of one type: `type` fixed, `data` narrowed to what that type carries. */
function eventSchema(type: EventType): Json {
  const kind = EVENT_KINDS[type];
  const members = [...kind.required, ...(kind.optional ?? [])];
  const status =
    kind.status.length === 0
      ? null
      : kind.status.length === 1
        ? { const: kind.status[0] }
        : { enum: kind.status };
  return {
    ...EVENT_SCHEMA,
    title: type,
    description: kind.summary,
    required: [...new Set([...EVENT_SCHEMA.required, 'labels'])],
    properties: {
      ...EVENT_SCHEMA.properties,
      type: { type: 'string', const: type },
      labels: schema('Labels'),
      data: {
        type: 'object',
        additionalProperties: false,
        required: [...(status ? ['status'] : []), ...kind.required],
        properties: {
          ...(status
            ? {
                status: { type: 'string', ...status, description: 'The status after this change.' },
              }
            : {}),
          ...Object.fromEntries(members.map((member) => [member, DATA_MEMBERS[member]])),
        },
      },
    },
  };
}

/** Component name of the event schema of one type. */
const eventSchemaName = (type: EventType) => `Event.${type}`;

/** A closed object schema with a fixed `type` member. */
function typed(type: string, properties: Json, required: string[] = []): Json {
  return {
    type: 'object',
    additionalProperties: false,
    required: ['type', ...required],
    properties: { type: { type: 'string', const: type }, ...properties },
  };
}

interface MessageSpec {
  name: string;
  title: string;
  summary: string;
  description?: string;
  headers?: Json;
  payload: Json;
  /** Carries the request `id` that matches answers to requests. */
  correlated?: boolean;
}

function message(spec: MessageSpec): Json {
  const { correlated, ...rest } = spec;
  return correlated ? { ...rest, correlationId: ref('correlationIds', 'RequestId') } : rest;
}

const REQUEST_ID = { id: schema('RequestId') };

/**
 * A client message: the schema that validates it (src/stream/protocol.ts), with `id` and the
 * given members replaced by references to the shared schemas.
 */
function clientPayload(type: keyof typeof WS_CLIENT_MESSAGE_SCHEMAS, properties: Json = {}): Json {
  const validating = WS_CLIENT_MESSAGE_SCHEMAS[type];
  return {
    ...validating,
    properties: {
      ...validating.properties,
      type: { type: 'string', const: type },
      ...REQUEST_ID,
      ...properties,
    },
  };
}

/** The WebSocket messages a client sends, keyed by component name. */
const CLIENT_MESSAGES: Record<string, MessageSpec> = {
  'ws.subscribe': {
    name: 'subscribe',
    title: 'Subscribe',
    summary: 'Starts a subscription to one operation or to a filter of the tenant’s events.',
    description:
      'Give `operation` or `filter`, not both. For one operation without `after`, a `snapshot` comes first; with `after`, every matching event after that `seq` is sent from the log first.',
    correlated: true,
    payload: {
      ...clientPayload('subscribe', { filter: schema('Filter') }),
      oneOf: [{ required: ['operation'] }, { required: ['filter'] }],
    },
  },
  'ws.unsubscribe': {
    name: 'unsubscribe',
    title: 'Unsubscribe',
    summary: 'Ends a subscription.',
    correlated: true,
    payload: clientPayload('unsubscribe'),
  },
  'ws.submit': {
    name: 'submit',
    title: 'Submit',
    summary: 'Submits an operation, as `POST /v1/operations` does.',
    description:
      '`operation` is the body of `POST /v1/operations`; `idempotencyKey` acts as the `Idempotency-Key` header.',
    correlated: true,
    payload: clientPayload('submit', { operation: schema('SubmitRequest') }),
  },
  'ws.cancel': {
    name: 'cancel',
    title: 'Cancel',
    summary: 'Cancels an operation.',
    correlated: true,
    payload: clientPayload('cancel'),
  },
  'ws.ping': {
    name: 'ping',
    title: 'Ping',
    summary: 'Asks for a `pong` (for clients that cannot send WebSocket pings).',
    correlated: true,
    payload: clientPayload('ping'),
  },
};

function ack(request: string, properties: Json, required: string[]): MessageSpec {
  return {
    name: `${request}Ack`,
    title: `Acknowledge ${request}`,
    summary: `The \`${request}\` request succeeded.`,
    correlated: true,
    payload: typed(
      'ack',
      { ...REQUEST_ID, request: { type: 'string', const: request }, ...properties },
      ['request', ...required],
    ),
  };
}

const SUBSCRIPTION_ACK = {
  subscription: schema('SubscriptionId'),
  cursor: { ...schema('Seq'), description: 'The `seq` the subscription continues from.' },
};

/** The WebSocket messages the server sends, keyed by component name. */
const SERVER_MESSAGES: Record<string, MessageSpec> = {
  'ws.welcome': {
    name: 'welcome',
    title: 'Welcome',
    summary: 'The first message on every connection.',
    payload: typed(
      'welcome',
      {
        protocol: { type: 'integer', const: 1, description: 'The version of this protocol.' },
        tenant: { type: 'string', description: 'The tenant the connection is scoped to.' },
        heartbeatMs: {
          type: 'integer',
          minimum: 0,
          description: 'How often the server sends a WebSocket ping.',
        },
      },
      ['protocol', 'tenant', 'heartbeatMs'],
    ),
  },
  'ws.ack.subscribe': ack('subscribe', SUBSCRIPTION_ACK, ['subscription', 'cursor']),
  'ws.ack.unsubscribe': ack('unsubscribe', SUBSCRIPTION_ACK, ['subscription', 'cursor']),
  'ws.ack.submit': ack(
    'submit',
    {
      operation: schema('StatusMonitor'),
      replayed: {
        type: 'boolean',
        description: 'The idempotency key was seen before: this is the first operation.',
      },
    },
    ['operation', 'replayed'],
  ),
  'ws.ack.cancel': ack('cancel', { operation: schema('StatusMonitor') }, ['operation']),
  'ws.snapshot': {
    name: 'snapshot',
    title: 'Snapshot',
    summary: 'The current monitor: first message of a subscription to one operation.',
    description: 'Sent only when the subscription gave no `after`; `seq` is its cursor.',
    payload: typed(
      'snapshot',
      {
        subscription: schema('SubscriptionId'),
        seq: schema('Seq'),
        operation: schema('StatusMonitor'),
      },
      ['subscription', 'seq', 'operation'],
    ),
  },
  'ws.event': {
    name: 'event',
    title: 'Event',
    summary: 'An event matched a subscription.',
    payload: typed('event', { subscription: schema('SubscriptionId'), event: schema('Event') }, [
      'subscription',
      'event',
    ]),
  },
  'ws.complete': {
    name: 'complete',
    title: 'Complete',
    summary: 'A subscription to one operation sent its terminal event and is over.',
    payload: typed('complete', { subscription: schema('SubscriptionId') }, ['subscription']),
  },
  'ws.error': {
    name: 'error',
    title: 'Error',
    summary: 'A request failed; the connection stays open.',
    description:
      'Carries the request’s `id` when it answers one. The codes are the HTTP API’s, among them `INVALID_MESSAGE`, `TOO_MANY_SUBSCRIPTIONS` and `SUBSCRIPTION_NOT_FOUND`.',
    correlated: true,
    payload: typed(
      'error',
      {
        ...REQUEST_ID,
        code: PROBLEM_SCHEMA.properties.code,
        message: { type: 'string', description: 'What went wrong, for people.' },
        fields: PROBLEM_SCHEMA.properties.fields,
        fix: PROBLEM_SCHEMA.properties.fix,
        details: PROBLEM_SCHEMA.properties.details,
        subscription: {
          ...schema('SubscriptionId'),
          description: 'The subscription that failed and is over (code `INTERNAL`).',
        },
      },
      ['code', 'message'],
    ),
  },
  'ws.pong': {
    name: 'pong',
    title: 'Pong',
    summary: 'Answers a `ping`.',
    correlated: true,
    payload: typed('pong', REQUEST_ID),
  },
  'ws.closing': {
    name: 'closing',
    title: 'Closing',
    summary: 'The server is about to close the connection.',
    payload: typed('closing', { reason: schema('ClosingReason') }, ['reason']),
  },
};

/** The messages of the SSE streams other than events. */
const SSE_MESSAGES: Record<string, MessageSpec> = {
  'operation.snapshot': {
    name: 'operation.snapshot',
    title: 'Operation snapshot',
    summary: 'The current monitor: first event of a stream of one operation without a cursor.',
    description:
      'Sent as `id: <seq>` and `event: operation.snapshot`; `seq` is the cursor the stream continues from. Events already reflected in it are not sent again.',
    payload: {
      type: 'object',
      additionalProperties: false,
      required: ['seq', 'type', 'operationId', 'operation'],
      properties: {
        seq: schema('Seq'),
        type: { type: 'string', const: 'operation.snapshot' },
        operationId: schema('OperationId'),
        operation: schema('StatusMonitor'),
      },
    },
  },
  'stream.closing': {
    name: 'stream.closing',
    title: 'Stream closing',
    summary: 'The last event before the server closes a stream on its own.',
    description: 'Reconnect with the last `seq` seen to resume.',
    payload: {
      type: 'object',
      additionalProperties: false,
      required: ['reason'],
      properties: { reason: schema('ClosingReason') },
    },
  },
};

function eventMessage(type: EventType): MessageSpec {
  const kind = EVENT_KINDS[type];
  return {
    name: type,
    title: kind.title,
    summary: kind.summary,
    description: `On SSE: \`id: <seq>\`, \`event: ${type}\` and the event as \`data\`. On the WebSocket: the \`event\` member of an \`event\` message.`,
    payload: schema(eventSchemaName(type)),
  };
}

/** Key of the webhook message of one event type. */
const webhookKey = (type: EventType) => `webhook.${type}`;

/** The request a webhook receiver gets for one event type. */
function webhookMessage(type: EventType): MessageSpec {
  const kind = EVENT_KINDS[type];
  return {
    name: webhookKey(type),
    title: `${kind.title} (webhook)`,
    summary: kind.summary,
    description: `Posted to every webhook endpoint subscribed to \`${type}\`${
      callbackWants(type) ? ', and to the operation’s `callbackUrl`' : ''
    }: a Standard Webhooks request whose body is \`{ type, timestamp, data }\`, \`data\` being the event.`,
    headers: schema('WebhookHeaders'),
    payload: webhookPayloadSchema(type, schema(eventSchemaName(type))),
  };
}

/** The headers of every webhook request, as one object schema. */
function webhookHeadersSchema(): Json {
  return {
    type: 'object',
    required: Object.keys(WEBHOOK_HEADERS),
    properties: {
      ...Object.fromEntries(
        Object.entries(WEBHOOK_HEADERS).map(([name, header]) => [
          name,
          { ...header.schema, description: header.description, examples: [header.example] },
        ]),
      ),
      'content-type': { type: 'string', const: 'application/json' },
    },
  };
}

function sharedSchemas(options: AsyncApiOptions): Json {
  const openApiSchemas = (openApiDocument(options).components as { schemas: Json }).schemas;
  const inputs = Object.entries(openApiSchemas).filter(([name]) => name.startsWith('Input.'));
  // The submit envelope, as the OpenAPI document has it; with no type registered, its empty
  // `enum` of types would make the document invalid, so it goes.
  const submit = openApiSchemas.SubmitRequest as Json & { properties: { type: Json } };
  const { enum: types, ...anyType } = submit.properties.type;
  const submitRequest =
    Array.isArray(types) && types.length > 0
      ? submit
      : { ...submit, properties: { ...submit.properties, type: anyType } };
  return {
    StatusMonitor: MONITOR_SCHEMA,
    Progress: PROGRESS_SCHEMA,
    OperationError: OPERATION_ERROR_SCHEMA,
    Labels: { ...MONITOR_SCHEMA.properties.labels, description: 'The operation’s labels.' },
    OperationId: { ...MONITOR_SCHEMA.properties.id, description: 'An operation’s id.' },
    Seq: { type: 'integer', minimum: 0, description: 'A position in the event log: a cursor.' },
    SubscriptionId: { type: 'string', description: 'A subscription, named by the server.' },
    RequestId: WS_CLIENT_MESSAGE_SCHEMAS.ping.properties.id,
    ClosingReason: {
      type: 'string',
      enum: CLOSING_REASONS,
      description:
        '`SHUTTING_DOWN`: the server is stopping. `SLOW_CONSUMER`: the client read nothing for too long.',
    },
    Filter: {
      ...WS_FILTER_SCHEMA,
      description: 'Every member that is set must match; `{}` matches every event of the tenant.',
    },
    Event: {
      description: 'Any event: the one schema of its `type`.',
      oneOf: EVENT_TYPES.map((type) => schema(eventSchemaName(type))),
    },
    ...Object.fromEntries(EVENT_TYPES.map((type) => [eventSchemaName(type), eventSchema(type)])),
    SubmitRequest: submitRequest,
    ...Object.fromEntries(inputs),
    ...((options.webhooks ?? true) ? { WebhookHeaders: webhookHeadersSchema() } : {}),
  };
}

/**
 * The query of a stream route: the schema that validates it, without the page size (`limit`,
 * which only JSON pages take) and, when streams need no credentials, without `access_token`.
 */
function streamQuery(query: { properties: Json }, auth: boolean): Json {
  const properties = Object.entries(query.properties).filter(
    ([name]) => name !== 'limit' && (auth || name !== 'access_token'),
  );
  return { ...query, properties: Object.fromEntries(properties) };
}

function httpBinding(query: Json): Json {
  return { http: { method: 'GET', query, bindingVersion: '0.3.0' } };
}

function servers(options: AsyncApiOptions): Json {
  const url =
    options.serverUrl !== undefined && URL.canParse(options.serverUrl)
      ? new URL(options.serverUrl)
      : undefined;
  const secure = url?.protocol === 'https:';
  // A path alone (`/async`: mounted under a prefix, host unknown) still sets the pathname.
  const relative = url === undefined && options.serverUrl?.startsWith('/') ? options.serverUrl : '';
  const pathname = (url?.pathname ?? relative).replace(/\/+$/, '');
  const common = {
    host: url?.host ?? 'localhost:8080',
    ...(pathname ? { pathname } : {}),
    ...(options.auth
      ? { security: [ref('securitySchemes', 'apiKey'), ref('securitySchemes', 'streamToken')] }
      : {}),
  };
  const where = url ? '' : ' (a placeholder: use the host that served this document)';
  return {
    http: {
      ...common,
      protocol: secure ? 'https' : 'http',
      title: 'HTTP',
      summary: `Server-Sent Events streams${where}.`,
    },
    ws: {
      ...common,
      protocol: secure ? 'wss' : 'ws',
      title: 'WebSocket',
      summary: `The WebSocket${where}.`,
    },
  };
}

const eventKeys: string[] = [...EVENT_TYPES];
/** The events of one operation's stream: not `endpoint.disabled`, which is no operation's. */
const operationEventKeys = eventKeys.filter((type) => type.startsWith('operation.'));

/**
 * The AsyncAPI 3.0 document of the push channels (docs/streams.md): the Server-Sent Events
 * streams of one operation and of the tenant, and the WebSocket with every message each side
 * may send. Operations are from the server's point of view: it `send`s events and answers,
 * and `receive`s the client's WebSocket requests. Schemas are the ones that describe the HTTP
 * API, with one event schema per event type.
 */
export function asyncApiDocument(options: AsyncApiOptions): Json {
  const webhooks = options.webhooks ?? true;
  const messages: Json = {};
  for (const type of EVENT_TYPES) messages[type] = message(eventMessage(type));
  if (webhooks) {
    for (const type of EVENT_TYPES) messages[webhookKey(type)] = message(webhookMessage(type));
  }
  for (const [key, spec] of Object.entries({
    ...SSE_MESSAGES,
    ...CLIENT_MESSAGES,
    ...SERVER_MESSAGES,
  })) {
    messages[key] = message(spec);
  }
  const messageRefs = (keys: string[]) =>
    Object.fromEntries(keys.map((key) => [key, ref('messages', key)]));
  const fromChannel = (channel: string, keys: string[]) =>
    keys.map((key) => channelMessage(channel, key));

  const sseIntro =
    'Ask with `Accept: text/event-stream`. A cursor (`Last-Event-ID`, or `?after=`) resumes after that `seq`, from the log. The stream starts with `retry: 2000` and sends a `: keepalive` comment every heartbeat.';
  const channels: Json = {
    operationEvents: {
      address: '/v1/operations/{operationId}/events',
      title: 'Events of one operation (SSE)',
      summary: 'Every event of one operation, in `seq` order, up to its terminal event.',
      description: `${sseIntro} Without a cursor the stream starts with \`operation.snapshot\`. It ends after the terminal event; a reconnect past it answers \`204\`.`,
      servers: [{ $ref: '#/servers/http' }],
      parameters: { operationId: { description: 'The operation’s id.' } },
      messages: messageRefs([...operationEventKeys, 'operation.snapshot', 'stream.closing']),
    },
    tenantEvents: {
      address: '/v1/events',
      title: 'Events of the tenant (SSE)',
      summary: 'Every event of the caller’s tenant that matches the filters.',
      description: `${sseIntro} Without a cursor it starts with events from now on. It never ends on its own.`,
      servers: [{ $ref: '#/servers/http' }],
      messages: messageRefs([...eventKeys, 'stream.closing']),
    },
    websocket: {
      address: '/v1/ws',
      title: 'WebSocket',
      summary: 'Subscribe, unsubscribe, submit and cancel over one connection.',
      description:
        'Every message, both ways, is one JSON object in a text frame, with a `type`. Errors keep the connection open. Messages are at most 1 MiB (close code 1009). Close codes: 1001 on shutdown, 1008 `SLOW_CONSUMER`.',
      servers: [{ $ref: '#/servers/ws' }],
      messages: messageRefs([...Object.keys(CLIENT_MESSAGES), ...Object.keys(SERVER_MESSAGES)]),
      bindings: {
        ws: {
          method: 'GET',
          ...(options.auth ? { query: WS_QUERY_SCHEMA } : {}),
          bindingVersion: '0.1.0',
        },
      },
    },
  };
  const webhookKeys = EVENT_TYPES.map(webhookKey);
  const callbackKeys = EVENT_TYPES.filter(callbackWants).map(webhookKey);
  if (webhooks) {
    channels.webhook = {
      address: '{callbackUrl}',
      title: 'Webhooks (HTTP POST to the receiver)',
      summary: 'Events posted to webhook endpoints and to operations’ `callbackUrl`s.',
      description:
        'Unlike the other channels, this one is served by the receiver, not by this server: the server posts each event to the `url` of every webhook endpoint subscribed to it (`POST /v1/webhooks/endpoints`) and to the operation’s `callbackUrl` (every event but `operation.progress` and `operation.deleted`). The receiver answers 2xx when it took the event; 410 fails the delivery for good (and disables an endpoint); any other answer, a timeout or no connection is retried later (`Retry-After` honoured on 429 and 503). `webhook-id` is the same on every attempt: drop duplicates with it. Verify `webhook-signature` (Standard Webhooks 1.0) before trusting the body.',
      parameters: {
        callbackUrl: {
          description: 'The receiver’s URL: an endpoint’s `url`, or an operation’s `callbackUrl`.',
        },
      },
      messages: messageRefs(webhookKeys),
    };
  }

  /** A client request on the WebSocket, answered by an ack or an error. */
  const request = (key: string, answers: string[], summary: string) => ({
    action: 'receive',
    channel: channelRef('websocket'),
    summary,
    messages: fromChannel('websocket', [key]),
    reply: { channel: channelRef('websocket'), messages: fromChannel('websocket', answers) },
  });
  const operations: Json = {
    sendOperationEvents: {
      action: 'send',
      channel: channelRef('operationEvents'),
      summary: 'Streams the events of one operation.',
      messages: fromChannel('operationEvents', [
        ...operationEventKeys,
        'operation.snapshot',
        'stream.closing',
      ]),
      bindings: httpBinding(streamQuery(EVENTS_QUERY_SCHEMA, options.auth)),
    },
    sendTenantEvents: {
      action: 'send',
      channel: channelRef('tenantEvents'),
      summary: 'Streams the events of the tenant that match the filters.',
      messages: fromChannel('tenantEvents', [...eventKeys, 'stream.closing']),
      bindings: httpBinding(streamQuery(TENANT_EVENTS_QUERY_SCHEMA, options.auth)),
    },
    receiveSubscribe: request(
      'ws.subscribe',
      ['ws.ack.subscribe', 'ws.error'],
      'Starts a subscription.',
    ),
    receiveUnsubscribe: request(
      'ws.unsubscribe',
      ['ws.ack.unsubscribe', 'ws.error'],
      'Ends a subscription.',
    ),
    receiveSubmit: request('ws.submit', ['ws.ack.submit', 'ws.error'], 'Submits an operation.'),
    receiveCancel: request('ws.cancel', ['ws.ack.cancel', 'ws.error'], 'Cancels an operation.'),
    receivePing: request('ws.ping', ['ws.pong'], 'Answers with a pong.'),
    sendWelcome: {
      action: 'send',
      channel: channelRef('websocket'),
      summary: 'Greets a new connection.',
      messages: fromChannel('websocket', ['ws.welcome']),
    },
    sendSubscriptionMessages: {
      action: 'send',
      channel: channelRef('websocket'),
      summary: 'Sends what a subscription matches: a snapshot, events, and its end.',
      messages: fromChannel('websocket', ['ws.snapshot', 'ws.event', 'ws.complete']),
    },
    sendError: {
      action: 'send',
      channel: channelRef('websocket'),
      summary: 'Reports a message that could not be read (`INVALID_MESSAGE`, without `id`).',
      messages: fromChannel('websocket', ['ws.error']),
    },
    sendClosing: {
      action: 'send',
      channel: channelRef('websocket'),
      summary: 'Says why the server is about to close the connection.',
      messages: fromChannel('websocket', ['ws.closing']),
    },
  };
  if (webhooks) {
    const post = { http: { method: 'POST', bindingVersion: '0.3.0' } };
    operations.sendEndpointWebhook = {
      action: 'send',
      channel: channelRef('webhook'),
      summary: 'Posts an event to a webhook endpoint that subscribed to its type and labels.',
      description:
        'Signed with the endpoint’s secrets (`v1,`), and its ed25519 key (`v1a,`) if it has one. Retried on the endpoint’s `retrySchedule`; an endpoint failing for 5 days (by default) is disabled.',
      messages: fromChannel('webhook', webhookKeys),
      bindings: post,
    };
    operations.sendOperationCallback = {
      action: 'send',
      channel: channelRef('webhook'),
      summary: 'Posts an event of an operation to its `callbackUrl`.',
      description:
        'Every event of the operation but `operation.progress` and `operation.deleted`, signed (`v1,`) with the tenant’s callback secret (`GET /v1/webhooks/callback-secret`).',
      messages: fromChannel('webhook', callbackKeys),
      bindings: post,
    };
  }

  return {
    asyncapi: '3.0.0',
    info: {
      title: 'Accepted streams',
      version: '1',
      description:
        'Push channels over the event log of Accepted: Server-Sent Events for one operation or for the whole tenant, and a WebSocket that also submits and cancels. Every event is the same on every channel, with the same `seq`, so a client can resume on any channel after the last `seq` it saw. With webhooks, the `webhook` channel describes the requests the server posts to receivers, the event as their `data`.',
      license: { name: 'Apache-2.0', url: 'https://www.apache.org/licenses/LICENSE-2.0' },
    },
    servers: servers(options),
    defaultContentType: 'application/json',
    channels,
    operations,
    components: {
      schemas: sharedSchemas(options),
      messages,
      correlationIds: {
        RequestId: {
          description: 'The `id` of a request, echoed in its answer.',
          location: '$message.payload#/id',
        },
      },
      securitySchemes: {
        apiKey: {
          type: 'http',
          scheme: 'bearer',
          description: 'An API key in `Authorization: Bearer <key>`; it decides the tenant.',
        },
        streamToken: {
          type: 'httpApiKey',
          name: 'access_token',
          in: 'query',
          description:
            'A stream token minted with `POST /v1/stream-tokens`, for browsers that cannot set headers.',
        },
      },
    },
  };
}
