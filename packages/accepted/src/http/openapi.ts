import { ERROR_CODES, type ErrorCode } from '../domain/errors.ts';
import { MAX_JSON_DEPTH } from '../domain/json.ts';
import { EVENT_TYPES, type EventType } from '../domain/events.ts';
import { callbackWants } from '../domain/webhooks.ts';
import type { OperationDefinition } from '../engine/definition.ts';
import { SUBMIT_REQUEST_SCHEMA } from '../wire/submit.ts';
import {
  ATTEMPT_LIST_SCHEMA,
  ATTEMPT_SCHEMA,
  CALLBACK_SECRETS_SCHEMA,
  DELIVERY_PAGE_SCHEMA,
  DELIVERY_QUERY_SCHEMA,
  DELIVERY_SCHEMA,
  ENDPOINT_CREATE_SCHEMA,
  ENDPOINT_PAGE_SCHEMA,
  ENDPOINT_PATCH_SCHEMA,
  ENDPOINT_SCHEMA,
  PAGE_QUERY_SCHEMA,
  REPLAY_REQUEST_SCHEMA,
} from '../wire/webhook-schemas.ts';
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
} from '../wire/schemas.ts';
import { DEFAULT_HTTP_LIMITS } from './limits.ts';

export interface OpenApiOptions {
  definitions: ReadonlyMap<string, OperationDefinition<never, unknown>>;
  /** The server URL to advertise; default `/` (the host that served the document). */
  serverUrl?: string;
  /** Whether requests need an API key. */
  auth: boolean;
  /**
   * Whether the server delivers webhooks (`createHttpServer({ webhooks })`): the webhook
   * routes, the `webhooks` section and the `callbacks` of submit. Default true.
   */
  webhooks?: boolean;
  /** The server's body and header limits, stated in the document. Default: the defaults. */
  limits?: { bodyLimit: number; maxHeaderSize: number };
}

type Json = Record<string, unknown>;

/**
 * Extensions that state a bound JSON Schema has no keyword for: `x-max-bytes` (the largest
 * request body, or JSON value, in bytes) and `x-max-depth` (the deepest nesting of arrays and
 * objects). Set on every request body and on every schema that takes any JSON.
 */
function jsonBounds(bytes: number): Json {
  return { 'x-max-bytes': bytes, 'x-max-depth': MAX_JSON_DEPTH };
}

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

/** What any request may be answered before it reaches its route. */
const EDGE_PROBLEMS: ErrorCode[] = [
  'MALFORMED_REQUEST',
  'INVALID_HEADER',
  'REQUEST_TIMEOUT',
  'HEADERS_TOO_LARGE',
  'TOO_MANY_CONNECTIONS',
];

/** What a JSON body may be refused for, besides its schema. */
const BODY_PROBLEMS: ErrorCode[] = ['INVALID_ENCODING', 'JSON_TOO_DEEP', 'NUMBER_OUT_OF_RANGE'];

/** The problem answers of a route: the codes given, and those any request may get. */
function problems(...given: ErrorCode[]): Json {
  const codes = new Set<ErrorCode>([
    ...given,
    ...(given.includes('MALFORMED_JSON') ? BODY_PROBLEMS : []),
    ...EDGE_PROBLEMS,
  ]);
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

/** `webhook-signature`: space-separated `v1,<base64>` (HMAC) and `v1a,<base64>` (ed25519). */
const SIGNATURE_PATTERN = '^v1a?,[A-Za-z0-9+/]+={0,2}( v1a?,[A-Za-z0-9+/]+={0,2})*$';

/**
 * The headers of every webhook request (Standard Webhooks 1.0), with `content-type:
 * application/json`. Shared with the AsyncAPI document.
 */
export const WEBHOOK_HEADERS = {
  'webhook-id': {
    description:
      'The event’s id (`data.id`): the same on every attempt and for every receiver of the event. Use it to drop duplicates.',
    schema: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[^.]+$' },
    example: 'evt_0000002d',
  },
  'webhook-timestamp': {
    description:
      'Unix seconds when this attempt was sent (not when the event happened). Refuse a timestamp far from your clock (±5 minutes) to stop replays.',
    schema: { type: 'string', pattern: '^[0-9]{1,15}$' },
    example: '1764105602',
  },
  'webhook-signature': {
    description:
      'Signatures of `{webhook-id}.{webhook-timestamp}.{body}` (the exact body bytes), space-separated: `v1,<base64>` is HMAC-SHA256 with a secret (the base64 after `whsec_`), one per secret still signing during a rotation; `v1a,<base64>` is ed25519, when an endpoint has a signing key (verify with its `publicKey`). Accept the request when any one of them verifies; compare in constant time.',
    schema: { type: 'string', pattern: SIGNATURE_PATTERN },
    example: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
  },
} as const;

/** Component name of the webhook body of one event type. */
export const webhookPayloadName = (type: EventType) => `WebhookPayload.${type}`;

/**
 * The body of a webhook request for one event type, Standard Webhooks' `{ type, timestamp,
 * data }`; `data` is the event as the HTTP API and the streams show it (the given schema).
 */
export function webhookPayloadSchema(type: EventType, data: Json): Json {
  return {
    title: `${type} webhook`,
    description: `What a webhook receiver gets for an \`${type}\` event.`,
    type: 'object',
    additionalProperties: false,
    required: ['type', 'timestamp', 'data'],
    properties: {
      type: { type: 'string', const: type, description: 'The event type.' },
      timestamp: {
        type: 'string',
        format: 'date-time',
        description: 'When the event happened (its `time`), RFC 3339.',
      },
      data: data,
    },
  };
}

/** What the server does with each answer of a webhook receiver. */
function receiverAnswers(endpoint: boolean): Json {
  const retryAfter = {
    description:
      'Retried after `Retry-After` (delay-seconds or an HTTP date, at most 24 hours) when the answer has one, else on the retry schedule.',
    headers: {
      'Retry-After': {
        description: 'When to try again: delay-seconds or an HTTP date.',
        schema: { type: 'string' },
      },
    },
  };
  return {
    '2XX': {
      description: 'Delivered. The first 4 KB of the body are kept in the attempt log.',
    },
    '410': {
      description: endpoint
        ? 'Gone: the delivery fails without retries and the endpoint is disabled (`disabledReason: GONE`); PATCH it with `enabled: true` to enable it again.'
        : 'Gone: the delivery fails without retries.',
    },
    '429': retryAfter,
    '503': retryAfter,
    default: {
      description: `Any other answer (a 3xx too: redirects are not followed), a timeout (15 s by default) or no connection: retried ${
        endpoint ? 'on the endpoint’s `retrySchedule`, or the server’s' : 'on the server’s schedule'
      } (by default immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h later, ±20% jitter). After the last retry the delivery fails (a dead letter: see \`POST /v1/webhooks/deliveries/{id}:replay\`).${
        endpoint
          ? ' An endpoint that has failed every attempt for 5 days (by default) is disabled (`disabledReason: FAILING`).'
          : ''
      }`,
    },
  };
}

/** A webhook request, as the receiver sees it. */
function webhookPost(spec: {
  operationId: string;
  summary: string;
  description: string;
  body: Json;
  endpoint: boolean;
}): Json {
  return {
    operationId: spec.operationId,
    tags: ['webhooks'],
    summary: spec.summary,
    description: spec.description,
    security: [],
    parameters: ['WebhookId', 'WebhookTimestamp', 'WebhookSignature'].map((name) =>
      ref('parameters', name),
    ),
    requestBody: {
      required: true,
      content: { 'application/json': { schema: spec.body } },
    },
    responses: receiverAnswers(spec.endpoint),
  };
}

/** `operation.cancel_requested` → `operationCancelRequested`. */
const camel = (type: string) =>
  type.replace(/[._]([a-z])/g, (_match, letter: string) => letter.toUpperCase());

/** The top-level `webhooks`: what an endpoint receives for each event type. */
function webhookEvents(): Json {
  return Object.fromEntries(
    EVENT_TYPES.map((type) => [
      type,
      {
        post: webhookPost({
          operationId: `${camel(type)}Webhook`,
          summary: `An \`${type}\` event`,
          description: `Posted to every enabled webhook endpoint of the tenant that subscribed to \`${type}\` (its \`eventTypes\` include it, or are null) and whose \`labels\` the operation has. Signed with the endpoint’s secrets (and its ed25519 key if it has one). Deliveries of one operation to one endpoint are sent in event order.`,
          body: ref('schemas', webhookPayloadName(type)),
          endpoint: true,
        }),
      },
    ]),
  );
}

/** The `callbacks` of submit: what an operation's `callbackUrl` receives. */
function operationCallbacks(): Json {
  return {
    operationEvent: {
      '{$request.body#/callbackUrl}': {
        post: webhookPost({
          operationId: 'operationEventCallback',
          summary: 'An event of the operation, posted to its callbackUrl',
          description: `Every event of the operation except \`operation.progress\` and \`operation.deleted\`, in order, signed with the tenant’s callback secret (\`GET /v1/webhooks/callback-secret\`). The terminal event (\`operation.succeeded\`, \`operation.failed\` or \`operation.canceled\`) carries the outcome.`,
          body: ref('schemas', 'CallbackPayload'),
          endpoint: false,
        }),
      },
    },
  };
}

function webhookSchemas(): Json {
  return {
    WebhookEndpoint: ENDPOINT_SCHEMA,
    WebhookEndpointCreate: ENDPOINT_CREATE_SCHEMA,
    WebhookEndpointPatch: ENDPOINT_PATCH_SCHEMA,
    WebhookEndpointPage: ENDPOINT_PAGE_SCHEMA,
    WebhookDelivery: DELIVERY_SCHEMA,
    WebhookDeliveryPage: DELIVERY_PAGE_SCHEMA,
    WebhookAttempt: ATTEMPT_SCHEMA,
    WebhookAttemptList: ATTEMPT_LIST_SCHEMA,
    WebhookReplayRequest: REPLAY_REQUEST_SCHEMA,
    WebhookReplayCount: {
      type: 'object',
      additionalProperties: false,
      required: ['replayed'],
      properties: {
        replayed: {
          type: 'integer',
          minimum: 0,
          description: 'How many failed deliveries were queued again.',
        },
      },
    },
    CallbackSecrets: CALLBACK_SECRETS_SCHEMA,
    ...Object.fromEntries(
      EVENT_TYPES.map((type) => [
        webhookPayloadName(type),
        webhookPayloadSchema(type, {
          description: 'The event: the `Event` schema, of this type.',
          allOf: [ref('schemas', 'Event'), { properties: { type: { const: type } } }],
        }),
      ]),
    ),
    CallbackPayload: {
      description: 'What an operation’s `callbackUrl` receives: one of these event types.',
      oneOf: EVENT_TYPES.filter(callbackWants).map((type) =>
        ref('schemas', webhookPayloadName(type)),
      ),
    },
  };
}

const noStore = {
  'Cache-Control': { description: '`no-store`.', schema: { type: 'string' } },
};

/** A JSON answer of a webhook route. */
function json(description: string, schema: string, headers: Json = {}): Json {
  return {
    description,
    headers: { ...headers, ...noStore },
    content: { 'application/json': { schema: ref('schemas', schema) } },
  };
}

/** The webhook routes (`registerWebhookRoutes`). */
function webhookRoutes(authProblems: ErrorCode[], bodyLimit: number, anyHeader: Json): Json {
  const endpointId = ref('parameters', 'EndpointId');
  const deliveryId = ref('parameters', 'DeliveryId');
  const ifMatch = ref('parameters', 'EndpointIfMatch');
  const etag = { ETag: ref('headers', 'ETag') };
  const body = (schema: string, required = true) => ({
    required,
    description: `A JSON object of at most ${bodyLimit} bytes.`,
    ...jsonBounds(bodyLimit),
    content: { 'application/json': { schema: ref('schemas', schema) } },
  });
  const bodyProblems: ErrorCode[] = [
    'MALFORMED_JSON',
    'PAYLOAD_TOO_LARGE',
    'UNSUPPORTED_MEDIA_TYPE',
    'VALIDATION_FAILED',
  ];
  const tags = ['webhooks'];
  return {
    '/v1/webhooks/endpoints': {
      post: {
        operationId: 'createWebhookEndpoint',
        tags,
        summary: 'Create a webhook endpoint',
        description:
          'From now on, every event of the tenant that the endpoint subscribes to (`eventTypes`, `labels`) is posted to `url` (see the `webhooks` section). The answer is the only one, with `:rotate-secret`, that shows the signing `secret`. The URL must be one the server may call: http or https, and no private, loopback or link-local address unless the server allows it (`422 URL_NOT_ALLOWED`).',
        requestBody: body('WebhookEndpointCreate'),
        responses: {
          '201': json('Created; `secret` is shown this once.', 'WebhookEndpoint', {
            ...etag,
            Location: {
              description: 'The new endpoint (a path).',
              schema: { type: 'string' },
            },
          }),
          ...problems(...bodyProblems, 'URL_NOT_ALLOWED', ...authProblems, ...COMMON),
        },
      },
      get: {
        operationId: 'listWebhookEndpoints',
        tags,
        summary: 'List webhook endpoints, newest first',
        parameters: queryParameters(PAGE_QUERY_SCHEMA),
        responses: {
          '200': json('One page.', 'WebhookEndpointPage'),
          ...problems('INVALID_QUERY', ...authProblems, ...COMMON),
        },
      },
    },
    '/v1/webhooks/endpoints/{id}': {
      parameters: [endpointId],
      get: {
        operationId: 'getWebhookEndpoint',
        tags,
        summary: 'A webhook endpoint',
        description: 'Its `ETag` is what PATCH and DELETE need in `If-Match`.',
        responses: {
          '200': json('The endpoint (without its secret).', 'WebhookEndpoint', etag),
          ...problems('ENDPOINT_NOT_FOUND', ...authProblems, ...COMMON),
        },
      },
      patch: {
        operationId: 'updateWebhookEndpoint',
        tags,
        summary: 'Change a webhook endpoint',
        description:
          'Changes the members given (JSON merge: `null` clears one). `enabled: false` disables the endpoint; `enabled: true` enables it again and clears its failures. Needs `If-Match` with the endpoint’s ETag (`428` without one, `412` when it moved on).',
        parameters: [ifMatch],
        requestBody: body('WebhookEndpointPatch'),
        responses: {
          '200': json('The endpoint as changed.', 'WebhookEndpoint', etag),
          ...problems(
            'ENDPOINT_NOT_FOUND',
            ...bodyProblems,
            'URL_NOT_ALLOWED',
            'PRECONDITION_REQUIRED',
            'PRECONDITION_FAILED',
            ...authProblems,
            ...COMMON,
          ),
        },
      },
      delete: {
        operationId: 'deleteWebhookEndpoint',
        tags,
        summary: 'Delete a webhook endpoint',
        description:
          'Its pending deliveries fail (`lastError: ENDPOINT_DELETED`) and are not sent. Needs `If-Match` with the endpoint’s ETag (`428` without one, `412` when it moved on).',
        parameters: [ifMatch],
        responses: {
          '204': { description: 'Deleted.' },
          ...problems(
            'ENDPOINT_NOT_FOUND',
            'PRECONDITION_REQUIRED',
            'PRECONDITION_FAILED',
            ...authProblems,
            ...COMMON,
          ),
        },
      },
    },
    '/v1/webhooks/endpoints/{id}:rotate-secret': {
      parameters: [endpointId],
      post: {
        operationId: 'rotateWebhookEndpointSecret',
        tags,
        summary: 'Rotate an endpoint’s signing secret',
        description:
          'Makes a new secret and answers it (this once). The old one keeps signing too (a second `v1,` signature) for 24 hours by default, so that receivers can switch without losing a request. No body.',
        parameters: [
          {
            name: 'If-Match',
            in: 'header',
            required: false,
            description: 'Rotate only if the endpoint’s ETag is one of these (else 412).',
            schema: anyHeader,
          },
        ],
        responses: {
          '200': json('The endpoint with its new `secret`.', 'WebhookEndpoint', etag),
          ...problems('ENDPOINT_NOT_FOUND', 'PRECONDITION_FAILED', ...authProblems, ...COMMON),
        },
      },
    },
    '/v1/webhooks/endpoints/{id}:replay': {
      parameters: [endpointId],
      post: {
        operationId: 'replayWebhookEndpoint',
        tags,
        summary: 'Send an endpoint’s failed deliveries again',
        description:
          'Every failed delivery (dead letter) to the endpoint made since `since` is queued again, with a fresh retry schedule.',
        requestBody: body('WebhookReplayRequest'),
        responses: {
          '202': {
            description: 'Queued again.',
            content: { 'application/json': { schema: ref('schemas', 'WebhookReplayCount') } },
          },
          ...problems('ENDPOINT_NOT_FOUND', ...bodyProblems, ...authProblems, ...COMMON),
        },
      },
    },
    '/v1/webhooks/callback-secret': {
      get: {
        operationId: 'getCallbackSecret',
        tags,
        summary: 'The secrets that sign callbacks',
        description:
          'Requests to an operation’s `callbackUrl` are signed (`v1,`) with the tenant’s callback secrets: the current one, and during a rotation the previous one too. The first read makes the secret.',
        responses: {
          '200': json('The secrets, newest first.', 'CallbackSecrets'),
          ...problems(...authProblems, ...COMMON),
        },
      },
    },
    '/v1/webhooks/callback-secret:rotate': {
      post: {
        operationId: 'rotateCallbackSecret',
        tags,
        summary: 'Rotate the callback secret',
        description:
          'Makes a new callback secret; the old one keeps signing too for 24 hours by default. No body.',
        responses: {
          '200': json('The secrets, newest first.', 'CallbackSecrets'),
          ...problems(...authProblems, ...COMMON),
        },
      },
    },
    '/v1/webhooks/deliveries': {
      get: {
        operationId: 'listWebhookDeliveries',
        tags,
        summary: 'List webhook deliveries, newest first',
        description:
          'A delivery is one event for one receiver (an endpoint, or an operation’s `callbackUrl`), with its attempts.',
        parameters: queryParameters(DELIVERY_QUERY_SCHEMA),
        responses: {
          '200': json('One page.', 'WebhookDeliveryPage'),
          ...problems('INVALID_QUERY', ...authProblems, ...COMMON),
        },
      },
    },
    '/v1/webhooks/deliveries/{id}': {
      parameters: [deliveryId],
      get: {
        operationId: 'getWebhookDelivery',
        tags,
        summary: 'A webhook delivery',
        responses: {
          '200': json('The delivery.', 'WebhookDelivery'),
          ...problems('DELIVERY_NOT_FOUND', ...authProblems, ...COMMON),
        },
      },
    },
    '/v1/webhooks/deliveries/{id}/attempts': {
      parameters: [deliveryId],
      get: {
        operationId: 'listWebhookDeliveryAttempts',
        tags,
        summary: 'The attempts of a webhook delivery, first first',
        responses: {
          '200': json('Every attempt.', 'WebhookAttemptList'),
          ...problems('DELIVERY_NOT_FOUND', ...authProblems, ...COMMON),
        },
      },
    },
    '/v1/webhooks/deliveries/{id}:replay': {
      parameters: [deliveryId],
      post: {
        operationId: 'replayWebhookDelivery',
        tags,
        summary: 'Send a webhook delivery again',
        description:
          'Queues the delivery again at once, with a fresh retry schedule, whatever its status. Its `webhook-id` stays the same. No body. A delivery to an endpoint that was deleted cannot be sent: `404 ENDPOINT_NOT_FOUND`.',
        responses: {
          '202': {
            description: 'Queued again.',
            content: { 'application/json': { schema: ref('schemas', 'WebhookDelivery') } },
          },
          ...problems('DELIVERY_NOT_FOUND', 'ENDPOINT_NOT_FOUND', ...authProblems, ...COMMON),
        },
      },
    },
  };
}

/** Parameters of the webhook routes and of webhook requests. */
const WEBHOOK_PARAMETERS = {
  EndpointId: {
    name: 'id',
    in: 'path',
    required: true,
    description: 'A webhook endpoint’s id.',
    schema: { type: 'string', maxLength: 25, pattern: '^ep_[0-9A-Za-z]{22}$' },
  },
  DeliveryId: {
    name: 'id',
    in: 'path',
    required: true,
    description: 'A webhook delivery’s id.',
    schema: { type: 'string', maxLength: 26, pattern: '^dlv_[0-9A-Za-z]{22}$' },
  },
  EndpointIfMatch: {
    name: 'If-Match',
    in: 'header',
    required: true,
    description:
      'The endpoint’s ETag as read (`"<version>"`), or `*` for any version. Without it the change is refused (428); with another version it is refused (412).',
    schema: { type: 'string' },
    example: '"3"',
  },
  ...Object.fromEntries(
    (
      [
        ['WebhookId', 'webhook-id'],
        ['WebhookTimestamp', 'webhook-timestamp'],
        ['WebhookSignature', 'webhook-signature'],
      ] as const
    ).map(([key, name]) => [key, { name, in: 'header', required: true, ...WEBHOOK_HEADERS[name] }]),
  ),
};

/**
 * The OpenAPI 3.1 document of the HTTP API, built from the schemas that validate requests
 * (the submit envelope, each operation type's input schema, the query schemas) and the ones
 * that describe answers.
 */
export function openApiDocument(options: OpenApiOptions): Json {
  const { bodyLimit, maxHeaderSize } = options.limits ?? DEFAULT_HTTP_LIMITS;
  /** A header whose only bound is that of every header: the request's header limit. */
  const anyHeader = { type: 'string', maxLength: maxHeaderSize } as const;
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
  const webhooks = options.webhooks ?? true;
  if (webhooks) Object.assign(schemas, webhookSchemas());
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
      input: { ...envelope.properties.input, ...jsonBounds(bodyLimit) },
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
      description: `Submit work and get \`202 Accepted\` with a status monitor at once; learn the outcome by polling (\`Retry-After\`, \`ETag\`/\`If-None-Match\`), long polling (\`Prefer: wait=N\`), a synchronous answer (\`Prefer: wait=N\` on submit), or pushed events: Server-Sent Events (\`Accept: text/event-stream\` on the events routes) and a WebSocket (\`GET /v1/ws\`, described by the AsyncAPI document at \`/v1/asyncapi.json\`)${
        webhooks
          ? ', and webhooks: events posted to registered endpoints (the `webhooks` section) or to an operation’s `callbackUrl` (the `callbacks` of submit), signed as Standard Webhooks 1.0 says'
          : ''
      }. Errors are RFC 9457 problem details with a stable \`code\`. Compatible with Azure-style long-running-operation pollers.`,
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
      ...(webhooks
        ? [
            {
              name: 'webhooks',
              description:
                'Webhook endpoints, the callback secret, deliveries and their attempts; and what a receiver gets.',
            },
          ]
        : []),
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
            description: `A JSON object of at most ${bodyLimit} bytes, ${MAX_JSON_DEPTH} levels deep.`,
            ...jsonBounds(bodyLimit),
            content: { 'application/json': { schema: ref('schemas', 'SubmitRequest') } },
          },
          ...(webhooks ? { callbacks: operationCallbacks() } : {}),
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
              ...(webhooks ? (['URL_NOT_ALLOWED'] as const) : []),
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
            description: `A JSON object of at most ${bodyLimit} bytes.`,
            ...jsonBounds(bodyLimit),
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
          responses: { '200': { description: 'Up.' }, ...problems() },
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
          responses: { '200': { description: 'OpenAPI 3.1.' }, ...problems() },
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
          responses: { '200': { description: 'AsyncAPI 3.0.' }, ...problems() },
        },
      },
      ...(webhooks ? webhookRoutes(authProblems, bodyLimit, anyHeader) : {}),
    },
    ...(webhooks ? { webhooks: webhookEvents() } : {}),
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
          schema: { type: 'string', maxLength: 33, pattern: '^op_[0-9A-Za-z]{30}$' },
        },
        Prefer: {
          name: 'Prefer',
          in: 'header',
          description: 'RFC 7240: `wait=N`, `respond-async`, `return=minimal|representation`.',
          schema: anyHeader,
          example: 'wait=10',
        },
        IfMatch: {
          name: 'If-Match',
          in: 'header',
          description: 'Change only if the operation’s ETag is one of these (else 412).',
          schema: anyHeader,
        },
        IfNoneMatch: {
          name: 'If-None-Match',
          in: 'header',
          description: 'The ETag the client has: 304 while unchanged; the base of a long poll.',
          schema: anyHeader,
        },
        IdempotencyKey: {
          name: 'Idempotency-Key',
          in: 'header',
          description:
            'A unique key per request (a UUID), quoted (`"..."`) or bare: 1 to 255 printable ASCII characters, sent once (a second field is refused with 400 INVALID_HEADER). Kept 24 hours by default, per tenant.',
          schema: { type: 'string', minLength: 1, maxLength: 257 },
        },
        LastEventId: {
          name: 'Last-Event-ID',
          in: 'header',
          description:
            'Event streams: the `seq` of the last event received (an EventSource sends it when it reconnects). The stream resumes after it; it wins over `after`.',
          schema: { type: 'string', maxLength: 15, pattern: '^[0-9]{1,15}$' },
        },
        Traceparent: {
          name: 'traceparent',
          in: 'header',
          description:
            'W3C Trace Context, kept with the operation. One that is not valid (version `ff`, an all-zero trace or parent id, upper-case hex, version 00 not exactly 55 characters) is ignored, not refused; of a later version only the first 55 characters are kept.',
          schema: {
            type: 'string',
            maxLength: maxHeaderSize,
            pattern: '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}',
          },
          example: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        },
        ...(webhooks
          ? {
              ...WEBHOOK_PARAMETERS,
              EndpointIfMatch: { ...WEBHOOK_PARAMETERS.EndpointIfMatch, schema: anyHeader },
            }
          : {}),
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
