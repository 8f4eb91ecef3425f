import { ERROR_CODES, OPERATION_ERROR_CODE_PATTERN } from '../domain/errors.ts';
import { EVENT_TYPES } from '../domain/events.ts';
import { LABEL_FILTER_PATTERN, TYPE_PATTERN } from './submit.ts';

/**
 * JSON Schemas of what the HTTP API answers and of its query parameters. The query schemas
 * validate requests; all of them are published in the OpenAPI document, and tests check real
 * answers against them.
 */

export const OPERATION_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'canceled'] as const;

/** Most `label=` filters in one query. */
export const MAX_LABEL_FILTERS = 16;

const dateTime = { type: 'string', format: 'date-time' } as const;
const nullableDateTime = { type: ['string', 'null'], format: 'date-time' } as const;

export const PROGRESS_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    fraction: { type: 'number', minimum: 0, maximum: 1, description: 'Share done, 0 to 1.' },
    message: { type: 'string', description: 'A short human-readable note.' },
    data: { description: 'Anything else, as JSON.' },
  },
} as const;

export const OPERATION_ERROR_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['code', 'message'],
  properties: {
    code: {
      type: 'string',
      pattern: OPERATION_ERROR_CODE_PATTERN,
      description: 'Stable, machine-readable code (TIMEOUT, CANCELED, or the handler’s own).',
    },
    message: { type: 'string' },
    details: { description: 'Optional structured details.' },
  },
} as const;

export const MONITOR_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: [
    'id',
    'type',
    'status',
    'progress',
    'result',
    'error',
    'attempts',
    'maxAttempts',
    'labels',
    'cancelRequested',
    'runAt',
    'createdAt',
    'updatedAt',
    'startedAt',
    'finishedAt',
    'version',
    'links',
  ],
  properties: {
    id: { type: 'string', pattern: '^op_[0-9A-Za-z]{30}$', description: 'Unguessable id.' },
    type: { type: 'string', pattern: TYPE_PATTERN },
    status: {
      type: 'string',
      enum: [...OPERATION_STATUSES],
      description:
        'queued and running are in progress; succeeded, failed and canceled are final. Azure-style pollers compare it case-insensitively.',
    },
    progress: { oneOf: [{ type: 'null' }, PROGRESS_SCHEMA] },
    result: { description: 'The handler’s result once succeeded, else null.' },
    error: {
      description: 'Why it failed or was canceled (also the last failed attempt while retrying).',
      oneOf: [{ type: 'null' }, OPERATION_ERROR_SCHEMA],
    },
    attempts: { type: 'integer', minimum: 0, description: 'Attempts started so far.' },
    maxAttempts: { type: 'integer', minimum: 1 },
    labels: { type: 'object', additionalProperties: { type: 'string' } },
    cancelRequested: {
      type: 'boolean',
      description: 'Cancellation of the running attempt was asked for.',
    },
    runAt: { ...dateTime, description: 'Earliest start of the next attempt.' },
    createdAt: dateTime,
    updatedAt: dateTime,
    startedAt: nullableDateTime,
    finishedAt: nullableDateTime,
    version: {
      type: 'integer',
      minimum: 1,
      description: 'Bumped on every state change; the ETag is this number in quotes.',
    },
    links: {
      type: 'object',
      additionalProperties: false,
      required: ['self', 'events', 'cancel'],
      properties: {
        self: { type: 'string' },
        events: { type: 'string' },
        cancel: { type: 'string' },
      },
    },
  },
} as const;

export const PROBLEM_SCHEMA = {
  type: 'object',
  required: ['type', 'title', 'status', 'detail', 'code'],
  description: 'RFC 9457 problem details with a stable `code`.',
  properties: {
    type: { type: 'string', format: 'uri-reference' },
    title: { type: 'string' },
    status: { type: 'integer', minimum: 400, maximum: 599 },
    detail: { type: 'string' },
    code: { type: 'string', enum: Object.keys(ERROR_CODES) },
    fix: { type: 'string', description: 'How to correct the request.' },
    fields: {
      type: 'array',
      items: {
        type: 'object',
        required: ['field', 'message'],
        properties: { field: { type: 'string' }, message: { type: 'string' } },
      },
    },
    details: { type: 'object' },
    instance: { type: 'string', format: 'uri-reference' },
  },
} as const;

export const EVENT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: [
    'seq',
    'id',
    'operationId',
    'operationType',
    'labels',
    'type',
    'version',
    'time',
    'data',
  ],
  properties: {
    seq: { type: 'integer', minimum: 1, description: 'Position in the log: the cursor.' },
    id: { type: 'string', description: 'Stable event id, the same on every channel.' },
    operationId: { type: 'string' },
    operationType: { type: 'string' },
    labels: {
      type: 'object',
      additionalProperties: { type: 'string' },
      description: "The operation's labels.",
    },
    type: { type: 'string', enum: [...EVENT_TYPES] },
    version: { type: 'integer', minimum: 1 },
    time: dateTime,
    data: {
      type: 'object',
      additionalProperties: false,
      properties: {
        status: {
          type: 'string',
          enum: [...OPERATION_STATUSES],
          description: 'The status after the change (absent on endpoint.disabled).',
        },
        attempt: { type: 'integer' },
        progress: PROGRESS_SCHEMA,
        result: {},
        error: OPERATION_ERROR_SCHEMA,
        runAt: dateTime,
        endpoint: {
          type: 'object',
          additionalProperties: false,
          required: ['id', 'url', 'reason', 'message'],
          properties: {
            id: { type: 'string' },
            url: { type: 'string' },
            reason: { type: 'string', enum: ['GONE', 'FAILING'] },
            message: { type: 'string' },
          },
          description: 'On endpoint.disabled: the webhook endpoint and why it was disabled.',
        },
      },
    },
  },
} as const;

export const EVENT_PAGE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['events', 'nextAfter'],
  properties: {
    events: { type: 'array', items: { $ref: '#/components/schemas/Event' } },
    nextAfter: {
      type: 'integer',
      minimum: 0,
      description: 'Pass as `after` to read on; equal to `after` when nothing was new.',
    },
  },
} as const;

export const OPERATION_PAGE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['items', 'nextCursor'],
  properties: {
    items: { type: 'array', items: { $ref: '#/components/schemas/StatusMonitor' } },
    nextCursor: {
      type: ['string', 'null'],
      description: 'Pass as `cursor` for the next page; null on the last page.',
    },
  },
} as const;

/** `?wait=` on the monitor (the query form of `Prefer: wait`). */
export const MONITOR_QUERY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    wait: {
      type: 'integer',
      minimum: 0,
      maximum: 3600,
      description:
        'Long poll: hold the answer up to this many seconds (capped by the server) until the version moves past the one in If-None-Match (or the current one) or the operation ends.',
    },
  },
} as const;

export const LIST_QUERY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    status: {
      type: 'array',
      maxItems: OPERATION_STATUSES.length,
      items: { type: 'string', enum: [...OPERATION_STATUSES] },
      description: 'Only these statuses (repeat the parameter or separate with commas).',
    },
    type: {
      type: 'string',
      pattern: TYPE_PATTERN,
      maxLength: 128,
      description: 'Only this operation type.',
    },
    label: {
      type: 'array',
      maxItems: MAX_LABEL_FILTERS,
      items: { type: 'string', maxLength: 63 + 1 + 256, pattern: LABEL_FILTER_PATTERN },
      description:
        'key:value; repeat for several (all must match), at most 16. The value has no control characters.',
    },
    limit: { type: 'integer', minimum: 1, maximum: 500, default: 50, description: 'Page size.' },
    cursor: { type: 'string', maxLength: 200, description: 'The nextCursor of the previous page.' },
  },
} as const;

const ACCESS_TOKEN = {
  type: 'string',
  maxLength: 2048,
  description:
    'A stream token from POST /v1/stream-tokens, for clients that cannot send Authorization (EventSource).',
} as const;

const AFTER = {
  type: 'integer',
  minimum: 0,
  maximum: Number.MAX_SAFE_INTEGER,
  description:
    'Events with a greater seq than this. For a stream, a Last-Event-ID header wins over it.',
} as const;

export const EVENTS_QUERY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    after: AFTER,
    limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
    access_token: ACCESS_TOKEN,
  },
} as const;

/** `GET /v1/events`: the tenant's log, filtered. */
export const TENANT_EVENTS_QUERY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    type: {
      type: 'array',
      maxItems: EVENT_TYPES.length,
      items: { type: 'string', enum: [...EVENT_TYPES] },
      description: 'Only these event types (repeat the parameter or separate with commas).',
    },
    operationType: {
      type: 'array',
      maxItems: 100,
      items: { type: 'string', pattern: TYPE_PATTERN, maxLength: 128 },
      description: 'Only events of operations of these types.',
    },
    operation: {
      type: 'array',
      maxItems: 100,
      items: { type: 'string', maxLength: 64 },
      description: 'Only events of these operations (ids).',
    },
    label: LIST_QUERY_SCHEMA.properties.label,
    after: AFTER,
    limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
    access_token: ACCESS_TOKEN,
  },
} as const;

/** `GET /v1/ws` takes only the stream token in its query. */
export const WS_QUERY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: { access_token: ACCESS_TOKEN },
} as const;

export const STREAM_TOKEN_REQUEST_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    operation: {
      type: 'string',
      maxLength: 64,
      description: 'Limit the token to the streams of this operation.',
    },
    ttlSeconds: {
      type: 'integer',
      minimum: 1,
      maximum: 3600,
      default: 300,
      description: 'How long the token opens streams.',
    },
  },
} as const;

export const STREAM_TOKEN_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['token', 'expiresAt', 'operation'],
  properties: {
    token: { type: 'string', description: 'Pass it as `access_token` on a stream route.' },
    expiresAt: dateTime,
    operation: { type: ['string', 'null'] },
  },
} as const;
