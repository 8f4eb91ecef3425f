import { ERROR_CODES, type ErrorCode } from '../domain/errors.ts';
import type { OperationDefinition } from '../engine/definition.ts';
import { SUBMIT_REQUEST_SCHEMA } from '../engine/submit.ts';
import {
  EVENT_PAGE_SCHEMA,
  EVENT_SCHEMA,
  EVENTS_QUERY_SCHEMA,
  LIST_QUERY_SCHEMA,
  MONITOR_QUERY_SCHEMA,
  MONITOR_SCHEMA,
  OPERATION_ERROR_SCHEMA,
  OPERATION_PAGE_SCHEMA,
  PROBLEM_SCHEMA,
  PROGRESS_SCHEMA,
  STREAM_TOKEN_REQUEST_SCHEMA,
  STREAM_TOKEN_SCHEMA,
  TENANT_EVENTS_QUERY_SCHEMA,
  WS_QUERY_SCHEMA,
} from './schemas.ts';

export interface OpenApiOptions {
  definitions: ReadonlyMap<string, OperationDefinition<never, unknown>>;
  /** The server URL to advertise; default `/` (the host that served the document). */
  serverUrl?: string;
  /** Whether requests need an API key. */
  auth: boolean;
}

type Json = Record<string, unknown>;

const ref = (kind: string, name: string) => ({ $ref: `#/components/${kind}/${name}` });

/** Component names allow letters, digits, `.`, `-` and `_`. */
const componentName = (type: string) => type.replace(/[^A-Za-z0-9._-]/g, '_');

function queryParameters(schema: { properties: Record<string, Json> }): Json[] {
  return Object.entries(schema.properties).map(([name, property]) => {
    const { description, ...rest } = property;
    return {
      name,
      in: 'query',
      required: false,
      ...(description === undefined ? {} : { description }),
      schema: rest,
      ...(rest.type === 'array' ? { style: 'form', explode: true } : {}),
    };
  });
}

function problems(...codes: ErrorCode[]): Json {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of codes) {
    const status = ERROR_CODES[code].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const out: Json = {};
  for (const [status, list] of byStatus) {
    out[String(status)] = {
      description: `Problem details; \`code\` is ${list.join(' or ')}.`,
      headers:
        status === 503 || status === 409 ? { 'Retry-After': ref('headers', 'RetryAfter') } : {},
      content: { 'application/problem+json': { schema: ref('schemas', 'Problem') } },
    };
  }
  return out;
}

/** The problems any authenticated route may answer. */
const COMMON: ErrorCode[] = ['INTERNAL', 'SHUTTING_DOWN'];

function monitorResponse(description: string, extraHeaders: Json = {}): Json {
  return {
    description,
    headers: {
      ETag: ref('headers', 'ETag'),
      'Retry-After': ref('headers', 'RetryAfter'),
      ...extraHeaders,
    },
    content: { 'application/json': { schema: ref('schemas', 'StatusMonitor') } },
  };
}

/** How an event stream is framed, for the `text/event-stream` answers. */
const SSE_FRAMING =
  'Server-Sent Events. Each event is sent as `id: <seq>`, `event: <type>` and `data: <the Event as JSON>` (the `Event` schema), then a blank line. The stream starts with `retry: <ms>` (2000 by default), a comment line `: keepalive` comes every heartbeat (15 s by default), and before the server closes a stream on its own it sends `event: stream.closing` with `data: {"reason":"SHUTTING_DOWN"}` or `{"reason":"SLOW_CONSUMER"}`. Reconnect with the last `id` in `Last-Event-ID` (an EventSource does) to resume without gaps.';

/** The `text/event-stream` form of an answer: framing in words, and an example stream. */
function eventStream(more: string, events: string[]): Json {
  return {
    schema: { type: 'string', description: `${SSE_FRAMING} ${more}` },
    example: ['retry: 2000', ...events, ': keepalive'].map((part) => `${part}\n\n`).join(''),
  };
}

/** Headers of a `200` that may be an event stream. */
const streamHeaders = {
  'Cache-Control': { description: '`no-cache`.', schema: { type: 'string' } },
  'X-Accel-Buffering': {
    description: '`no` on an event stream: tells nginx not to buffer it.',
    schema: { type: 'string', enum: ['no'] },
  },
};

const pollingHeaders = {
  Location: ref('headers', 'Location'),
  'Operation-Location': ref('headers', 'OperationLocation'),
};

/**
 * The OpenAPI 3.1 document of the HTTP API, built from the schemas that validate requests
 * (the submit envelope, each operation type's input schema, the query schemas) and the ones
 * that describe answers.
 */
export function openApiDocument(options: OpenApiOptions): Json {
  const schemas: Json = {
    StatusMonitor: MONITOR_SCHEMA,
    Progress: PROGRESS_SCHEMA,
    OperationError: OPERATION_ERROR_SCHEMA,
    Problem: PROBLEM_SCHEMA,
    Event: EVENT_SCHEMA,
    EventPage: EVENT_PAGE_SCHEMA,
    OperationPage: OPERATION_PAGE_SCHEMA,
    StreamTokenRequest: STREAM_TOKEN_REQUEST_SCHEMA,
    StreamToken: STREAM_TOKEN_SCHEMA,
  };
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  const { $id, ...envelope } = SUBMIT_REQUEST_SCHEMA;
  const variants: Json[] = [];
  for (const [type, definition] of [...options.definitions].sort(([a], [b]) =>
    a.localeCompare(b),
  )) {
    const name = componentName(type);
    const input = definition.inputSchema ?? {};
    schemas[`Input.${name}`] = input;
    if (definition.resultSchema) schemas[`Result.${name}`] = definition.resultSchema;
    variants.push({
      title: type,
      ...(definition.description ? { description: definition.description } : {}),
      properties: { type: { const: type }, input: ref('schemas', `Input.${name}`) },
    });
  }
  schemas.SubmitRequest = {
    ...envelope,
    properties: {
      ...envelope.properties,
      type: { ...envelope.properties.type, enum: [...options.definitions.keys()].sort() },
    },
    ...(variants.length > 0 ? { oneOf: variants } : {}),
  };

  const idParameter = ref('parameters', 'OperationId');
  const prefer = ref('parameters', 'Prefer');
  const ifMatch = ref('parameters', 'IfMatch');
  const authProblems: ErrorCode[] = options.auth ? ['UNAUTHENTICATED'] : [];
  /**
   * The stream routes take a stream token (`?access_token=`) even without API keys: a bad
   * one is `401`, and one limited to another operation `403`.
   */
  const streamAuthProblems: ErrorCode[] = ['UNAUTHENTICATED', 'FORBIDDEN'];
  /** An API key, or on the stream routes a stream token instead. */
  const streamSecurity = options.auth ? { security: [{ apiKey: [] }, { streamToken: [] }] } : {};
  const lastEventId = ref('parameters', 'LastEventId');
  /** What a conditional change of an operation (cancel, retry, delete) may answer. */
  const changeProblems = (state: ErrorCode) =>
    problems('OPERATION_NOT_FOUND', state, 'PRECONDITION_FAILED', ...authProblems, ...COMMON);

  const document: Json = {
    openapi: '3.1.0',
    info: {
      title: 'Accepted',
      version: '1',
      summary: 'Durable asynchronous operations: 202 Accepted, a status monitor, long polling.',
      description:
        'Submit work and get `202 Accepted` with a status monitor at once; learn the outcome by polling (`Retry-After`, `ETag`/`If-None-Match`), long polling (`Prefer: wait=N`), a synchronous answer (`Prefer: wait=N` on submit), or pushed events: Server-Sent Events (`Accept: text/event-stream` on the events routes) and a WebSocket (`GET /v1/ws`, described by the AsyncAPI document at `/v1/asyncapi.json`). Errors are RFC 9457 problem details with a stable `code`. Compatible with Azure-style long-running-operation pollers.',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    servers: [{ url: options.serverUrl ?? '/' }],
    ...(options.auth ? { security: [{ apiKey: [] }] } : {}),
    tags: [
      { name: 'operations', description: 'Submit and observe operations.' },
      {
        name: 'streams',
        description:
          'Push channels: Server-Sent Events, the WebSocket, and stream tokens for browsers.',
      },
    ],
    paths: {
      '/v1/operations': {
        post: {
          operationId: 'submitOperation',
          tags: ['operations'],
          summary: 'Submit an operation',
          description:
            'Answers `202` with the status monitor at once. With `Prefer: wait=N`, holds the request up to N seconds (capped by the server) and answers `200` with the final monitor if the operation ends in time. `Prefer: respond-async` always answers `202`; `return=minimal` drops the body. An `Idempotency-Key` makes retries safe: the same key with the same body returns the first operation and the first answer’s status (`Idempotent-Replayed: true`).',
          parameters: [
            prefer,
            ref('parameters', 'IdempotencyKey'),
            ref('parameters', 'Traceparent'),
          ],
          requestBody: {
            required: true,
            content: { 'application/json': { schema: ref('schemas', 'SubmitRequest') } },
          },
          responses: {
            '200': monitorResponse('The operation ended within the `Prefer: wait`.', {
              'Content-Location': ref('headers', 'Location'),
              'Preference-Applied': ref('headers', 'PreferenceApplied'),
              'Idempotent-Replayed': ref('headers', 'IdempotentReplayed'),
            }),
            '202': monitorResponse('Accepted: poll the monitor at `Operation-Location`.', {
              ...pollingHeaders,
              'Preference-Applied': ref('headers', 'PreferenceApplied'),
              'Idempotent-Replayed': ref('headers', 'IdempotentReplayed'),
            }),
            ...problems(
              'MALFORMED_JSON',
              'INVALID_HEADER',
              'PAYLOAD_TOO_LARGE',
              'UNSUPPORTED_MEDIA_TYPE',
              'VALIDATION_FAILED',
              'UNKNOWN_OPERATION_TYPE',
              'IDEMPOTENCY_KEY_REUSED',
              'IDEMPOTENCY_KEY_IN_FLIGHT',
              ...authProblems,
              ...COMMON,
            ),
          },
        },
        get: {
          operationId: 'listOperations',
          tags: ['operations'],
          summary: 'List operations, newest first',
          description:
            'Pages by opaque cursor, stable while new operations arrive. The next page is also in a `Link: <...>; rel="next"` header.',
          parameters: queryParameters(LIST_QUERY_SCHEMA),
          responses: {
            '200': {
              description: 'One page.',
              headers: { Link: { description: 'The next page.', schema: { type: 'string' } } },
              content: { 'application/json': { schema: ref('schemas', 'OperationPage') } },
            },
            ...problems('INVALID_QUERY', ...authProblems, ...COMMON),
          },
        },
      },
      '/v1/operations/{id}': {
        parameters: [idParameter],
        get: {
          operationId: 'getOperation',
          tags: ['operations'],
          summary: 'The status monitor (poll or long poll)',
          description:
            '`If-None-Match` with the ETag answers `304` while nothing changed. A long poll (`Prefer: wait=N` or `?wait=N`) holds the answer until the version moves past the one in `If-None-Match` (or the current one), or the operation ends, or N seconds pass (capped by the server, with a little jitter).',
          parameters: [
            prefer,
            ref('parameters', 'IfNoneMatch'),
            ...queryParameters(MONITOR_QUERY_SCHEMA),
          ],
          responses: {
            '200': monitorResponse('The monitor.', {
              'Preference-Applied': ref('headers', 'PreferenceApplied'),
            }),
            '304': {
              description: 'Unchanged since the ETag in If-None-Match.',
              headers: {
                ETag: ref('headers', 'ETag'),
                'Retry-After': ref('headers', 'RetryAfter'),
              },
            },
            ...problems('OPERATION_NOT_FOUND', 'INVALID_QUERY', ...authProblems, 'INTERNAL'),
          },
        },
        delete: {
          operationId: 'deleteOperation',
          tags: ['operations'],
          summary: 'Delete a finished operation',
          description:
            'Only succeeded, failed or canceled operations; its idempotency keys go too.',
          parameters: [ifMatch],
          responses: {
            '204': { description: 'Deleted.' },
            ...changeProblems('ILLEGAL_TRANSITION'),
          },
        },
      },
      '/v1/operations/{id}:cancel': {
        parameters: [idParameter],
        post: {
          operationId: 'cancelOperation',
          tags: ['operations'],
          summary: 'Cancel an operation',
          description:
            'A queued operation is canceled at once (`200`). A running one gets cancellation requested: its handler’s signal is aborted and it ends `canceled` (`202`, poll the monitor). A finished one is `409 ALREADY_TERMINAL`.',
          parameters: [ifMatch],
          responses: {
            '200': monitorResponse('Canceled.'),
            '202': monitorResponse('Cancellation requested.', pollingHeaders),
            ...changeProblems('ALREADY_TERMINAL'),
          },
        },
      },
      '/v1/operations/{id}:retry': {
        parameters: [idParameter],
        post: {
          operationId: 'retryOperation',
          tags: ['operations'],
          summary: 'Run a failed or canceled operation again',
          parameters: [ifMatch],
          responses: {
            '202': monitorResponse('Queued again, with a fresh attempt budget.', pollingHeaders),
            ...changeProblems('ILLEGAL_TRANSITION'),
          },
        },
      },
      '/v1/operations/{id}/events': {
        parameters: [idParameter],
        get: {
          operationId: 'listOperationEvents',
          tags: ['operations', 'streams'],
          summary: 'The operation’s events after a cursor: a page, or a stream',
          description:
            'Answers a JSON page of the events after `after`. With `Accept: text/event-stream` it streams instead: without a cursor, an `operation.snapshot` event first (its `data` has the current monitor in `operation`, its `id` is the cursor the stream continues from); with a cursor (`Last-Event-ID`, or `after`), every event after it from the log. Then live events; the stream ends after the terminal event. A reconnect with a cursor at or past the terminal event answers `204`, which tells an EventSource to stop. An EventSource passes a stream token as `access_token` (see `POST /v1/stream-tokens`).',
          ...streamSecurity,
          parameters: [lastEventId, ...queryParameters(EVENTS_QUERY_SCHEMA)],
          responses: {
            '200': {
              description: 'Events in seq order: a page, or a stream.',
              headers: streamHeaders,
              content: {
                'application/json': { schema: ref('schemas', 'EventPage') },
                'text/event-stream': eventStream(
                  'Without a cursor, the first event is `operation.snapshot`, whose `data` is `{ "seq", "type": "operation.snapshot", "operationId", "operation": <StatusMonitor> }`. The stream ends after the operation’s terminal event.',
                  [
                    'id: 41\nevent: operation.snapshot\ndata: {"seq":41,"type":"operation.snapshot","operationId":"op_0VbfRq2UxUVjajQ1VuCwK6KozJfQEy","operation":{"id":"op_0VbfRq2UxUVjajQ1VuCwK6KozJfQEy","status":"running"}}',
                    'id: 45\nevent: operation.succeeded\ndata: {"seq":45,"id":"evt_0000002d","operationId":"op_0VbfRq2UxUVjajQ1VuCwK6KozJfQEy","operationType":"demo.sleep","labels":{},"type":"operation.succeeded","version":4,"time":"2026-11-25T21:20:02.123Z","data":{"status":"succeeded","attempt":1,"result":{"sleptMs":2000}}}',
                  ],
                ),
              },
            },
            '204': {
              description:
                'Event stream only: the operation is over and the cursor is at or past its last event. Tells an EventSource to stop reconnecting.',
            },
            ...problems(
              'OPERATION_NOT_FOUND',
              'INVALID_QUERY',
              'INVALID_HEADER',
              ...streamAuthProblems,
              'INTERNAL',
            ),
          },
        },
      },
      '/v1/events': {
        get: {
          operationId: 'listEvents',
          tags: ['streams'],
          summary: 'The tenant’s events after a cursor, filtered: a page, or a stream',
          description:
            'Every event of the caller’s tenant that matches the filters (all of them must match). Answers a JSON page of the events after `after` (default 0). With `Accept: text/event-stream` it streams instead: from now on without a cursor (no snapshot), or every matching event after the cursor (`Last-Event-ID`, or `after`) from the log first; the stream never ends on its own. A stream token limited to one operation cannot open it (`403`).',
          ...streamSecurity,
          parameters: [lastEventId, ...queryParameters(TENANT_EVENTS_QUERY_SCHEMA)],
          responses: {
            '200': {
              description: 'Matching events in seq order: a page, or a stream.',
              headers: streamHeaders,
              content: {
                'application/json': { schema: ref('schemas', 'EventPage') },
                'text/event-stream': eventStream('The stream never ends on its own.', [
                  'id: 42\nevent: operation.progress\ndata: {"seq":42,"id":"evt_0000002a","operationId":"op_0VbfRq2UxUVjajQ1VuCwK6KozJfQEy","operationType":"demo.progress","labels":{"team":"docs"},"type":"operation.progress","version":3,"time":"2026-11-25T21:20:00.123Z","data":{"status":"running","progress":{"fraction":0.5,"message":"step 2 of 4"}}}',
                ]),
              },
            },
            ...problems('INVALID_QUERY', 'INVALID_HEADER', ...streamAuthProblems, 'INTERNAL'),
          },
        },
      },
      '/v1/stream-tokens': {
        post: {
          operationId: 'createStreamToken',
          tags: ['streams'],
          summary: 'Mint a stream token',
          description:
            'A short-lived signed token that a browser passes as `access_token` to the stream routes (`GET /v1/operations/{id}/events`, `GET /v1/events`, `GET /v1/ws`), where it stands for the caller’s API key: an EventSource cannot send `Authorization`. It acts for the caller’s tenant, is checked when a stream opens, and, with `operation`, opens only that operation’s streams. Other routes do not take it. The body may be omitted.',
          requestBody: {
            required: false,
            content: { 'application/json': { schema: ref('schemas', 'StreamTokenRequest') } },
          },
          responses: {
            '201': {
              description: 'The token.',
              headers: {
                'Cache-Control': { description: '`no-store`.', schema: { type: 'string' } },
              },
              content: { 'application/json': { schema: ref('schemas', 'StreamToken') } },
            },
            ...problems(
              'MALFORMED_JSON',
              'PAYLOAD_TOO_LARGE',
              'UNSUPPORTED_MEDIA_TYPE',
              'VALIDATION_FAILED',
              'OPERATION_NOT_FOUND',
              ...authProblems,
              'INTERNAL',
            ),
          },
        },
      },
      '/v1/ws': {
        get: {
          operationId: 'openWebSocket',
          tags: ['streams'],
          summary: 'The WebSocket',
          description:
            'Upgrades to a WebSocket (`Connection: Upgrade`, `Upgrade: websocket`; `101 Switching Protocols`) that carries a JSON protocol: subscribe to one operation or to a filter of the tenant’s events, unsubscribe, submit, cancel, ping. The messages both ways are described by the AsyncAPI 3.0 document at `/v1/asyncapi.json`. Credentials are checked before the handshake; a refused upgrade is answered with a problem document. Errors after the handshake (`INVALID_MESSAGE`, `FORBIDDEN`, `SUBSCRIPTION_NOT_FOUND`, `TOO_MANY_SUBSCRIPTIONS`, ...) are `error` messages on the connection. A request without `Upgrade` answers `426`.',
          ...streamSecurity,
          parameters: queryParameters(WS_QUERY_SCHEMA),
          responses: {
            '101': {
              description:
                'Switching Protocols: the connection is a WebSocket speaking the protocol of `/v1/asyncapi.json`.',
            },
            '426': {
              description:
                'Problem details; `code` is UPGRADE_REQUIRED. Open the route as a WebSocket.',
              headers: {
                Upgrade: {
                  description: '`websocket`.',
                  schema: { type: 'string', enum: ['websocket'] },
                },
              },
              content: { 'application/problem+json': { schema: ref('schemas', 'Problem') } },
            },
            ...problems('INVALID_QUERY', 'UNAUTHENTICATED', 'SHUTTING_DOWN', 'INTERNAL'),
          },
        },
      },
      '/healthz': {
        get: {
          operationId: 'health',
          summary: 'The process is up',
          security: [],
          responses: { '200': { description: 'Up.' } },
        },
      },
      '/readyz': {
        get: {
          operationId: 'ready',
          summary: 'The store answers',
          security: [],
          responses: {
            '200': { description: 'Ready.' },
            ...problems('STORE_UNAVAILABLE', 'SHUTTING_DOWN'),
          },
        },
      },
      '/v1/openapi.json': {
        get: {
          operationId: 'openApi',
          summary: 'This document',
          security: [],
          responses: { '200': { description: 'OpenAPI 3.1.' } },
        },
      },
      '/v1/asyncapi.json': {
        get: {
          operationId: 'asyncApi',
          tags: ['streams'],
          summary: 'The AsyncAPI document of the push channels',
          description:
            'An AsyncAPI 3.0 document describing the event streams and the WebSocket: every message each side may send, and the schema of every event type.',
          security: [],
          responses: { '200': { description: 'AsyncAPI 3.0.' } },
        },
      },
    },
    components: {
      schemas,
      securitySchemes: {
        apiKey: {
          type: 'http',
          scheme: 'bearer',
          description: 'An API key; it decides the tenant every read and write is scoped to.',
        },
        streamToken: {
          type: 'apiKey',
          in: 'query',
          name: 'access_token',
          description:
            'A stream token from `POST /v1/stream-tokens`, instead of an API key, on the stream routes only (`GET /v1/operations/{id}/events`, `GET /v1/events`, `GET /v1/ws`): for browsers, which cannot set headers on an EventSource or a WebSocket.',
        },
      },
      parameters: {
        OperationId: {
          name: 'id',
          in: 'path',
          required: true,
          schema: { type: 'string', pattern: '^op_[0-9A-Za-z]{30}$' },
        },
        Prefer: {
          name: 'Prefer',
          in: 'header',
          description: 'RFC 7240: `wait=N`, `respond-async`, `return=minimal|representation`.',
          schema: { type: 'string' },
          example: 'wait=10',
        },
        IfMatch: {
          name: 'If-Match',
          in: 'header',
          description: 'Change only if the operation’s ETag is one of these (else 412).',
          schema: { type: 'string' },
        },
        IfNoneMatch: {
          name: 'If-None-Match',
          in: 'header',
          description: 'The ETag the client has: 304 while unchanged; the base of a long poll.',
          schema: { type: 'string' },
        },
        IdempotencyKey: {
          name: 'Idempotency-Key',
          in: 'header',
          description:
            'A unique key per request (a UUID), quoted (`"..."`) or bare. Kept 24 hours by default, per tenant.',
          schema: { type: 'string', maxLength: 257 },
        },
        LastEventId: {
          name: 'Last-Event-ID',
          in: 'header',
          description:
            'Event streams: the `seq` of the last event received (an EventSource sends it when it reconnects). The stream resumes after it; it wins over `after`.',
          schema: { type: 'string', pattern: '^[0-9]{1,15}$' },
        },
        Traceparent: {
          name: 'traceparent',
          in: 'header',
          description: 'W3C trace context, kept with the operation.',
          schema: { type: 'string' },
        },
      },
      headers: {
        ETag: { description: 'The version, quoted.', schema: { type: 'string' } },
        RetryAfter: {
          description: 'Seconds to wait before polling again (while in progress).',
          schema: { type: 'integer' },
        },
        Location: {
          description: 'The status monitor (absolute URL).',
          schema: { type: 'string', format: 'uri' },
        },
        OperationLocation: {
          description: 'The status monitor (absolute URL), as Azure-style pollers read it.',
          schema: { type: 'string', format: 'uri' },
        },
        PreferenceApplied: {
          description: 'The preferences honoured (RFC 7240).',
          schema: { type: 'string' },
        },
        IdempotentReplayed: {
          description: '`true` when this answer replays an earlier request with the same key.',
          schema: { type: 'string', enum: ['true'] },
        },
      },
    },
  };
  return document;
}
