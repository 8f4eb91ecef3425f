import { EVENT_TYPES } from '../domain/events.ts';
import { WEBHOOK_LIMITS } from '../domain/webhooks.ts';
import { LABEL_KEY_PATTERN, LABEL_VALUE_SCHEMA } from './submit.ts';

/**
 * JSON Schemas of the webhook routes: they validate requests and are published in the
 * OpenAPI document.
 */

const dateTime = { type: 'string', format: 'date-time' } as const;
const nullableDateTime = { type: ['string', 'null'], format: 'date-time' } as const;

/** A duration such as `500ms`, `5s`, `5m` or `2h`. */
export const DURATION_PATTERN = '^\\d+(\\.\\d+)?(ms|s|m|h|d)$';

const ENDPOINT_FIELDS = {
  url: {
    type: 'string',
    format: 'uri',
    maxLength: 2048,
    description: 'Where deliveries are posted: an http or https URL the server may reach.',
  },
  description: {
    type: ['string', 'null'],
    maxLength: WEBHOOK_LIMITS.descriptionMaxLength,
    // Text both stores keep as sent: no U+0000 (PostgreSQL text refuses it), no lone surrogate
    // (stored as UTF-8, it would come back as U+FFFD).
    pattern: '^[^\\u0000\\uD800-\\uDFFF]*$',
  },
  eventTypes: {
    type: ['array', 'null'],
    minItems: 1,
    maxItems: EVENT_TYPES.length,
    uniqueItems: true,
    items: { type: 'string', enum: [...EVENT_TYPES] },
    description: 'Only these event types; null or absent for every type.',
  },
  labels: {
    type: ['object', 'null'],
    maxProperties: 16,
    propertyNames: { pattern: LABEL_KEY_PATTERN, maxLength: 63 },
    additionalProperties: LABEL_VALUE_SCHEMA,
    description: 'Only events of operations that have every one of these labels.',
  },
  retrySchedule: {
    type: ['array', 'null'],
    maxItems: WEBHOOK_LIMITS.endpointRetryEntries,
    items: { type: 'string', pattern: DURATION_PATTERN, maxLength: 16 },
    description:
      'Delays before each retry (`5s`, `5m`, `2h`, ...), each from 1s to 24h, at most 20; null or absent for the server’s schedule.',
  },
  rateLimit: {
    type: ['integer', 'null'],
    minimum: 1,
    maximum: WEBHOOK_LIMITS.rateLimitMax,
    description:
      'Most deliveries per second to this endpoint (1 to 100000), across every node; null for no limit.',
  },
} as const;

export const ENDPOINT_CREATE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['url'],
  properties: {
    ...ENDPOINT_FIELDS,
    ed25519: {
      type: 'boolean',
      description: 'Also sign with ed25519 (`v1a`); the endpoint shows the public key.',
    },
  },
} as const;

export const ENDPOINT_PATCH_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    ...ENDPOINT_FIELDS,
    enabled: {
      type: 'boolean',
      description: 'false disables the endpoint; true enables it again and clears its failures.',
    },
  },
} as const;

export const ENDPOINT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: [
    'id',
    'url',
    'description',
    'eventTypes',
    'labels',
    'retrySchedule',
    'rateLimit',
    'enabled',
    'disabledReason',
    'disabledAt',
    'failingSince',
    'publicKey',
    'createdAt',
    'updatedAt',
    'version',
  ],
  properties: {
    id: { type: 'string' },
    ...ENDPOINT_FIELDS,
    enabled: { type: 'boolean' },
    disabledReason: {
      type: ['string', 'null'],
      enum: ['GONE', 'FAILING', 'MANUAL', null],
      description: '`GONE` after a 410, `FAILING` after failing too long, `MANUAL` by request.',
    },
    disabledAt: nullableDateTime,
    failingSince: {
      ...nullableDateTime,
      description: 'Start of the current run of failed attempts.',
    },
    publicKey: {
      type: ['string', 'null'],
      description: 'The ed25519 public key (`whpk_...`) that verifies `v1a` signatures.',
    },
    secret: {
      type: 'string',
      description: 'The signing secret (`whsec_...`): shown only on creation and rotation.',
    },
    createdAt: dateTime,
    updatedAt: dateTime,
    version: { type: 'integer', minimum: 1, description: 'The ETag.' },
  },
} as const;

export const ENDPOINT_PAGE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['items', 'nextCursor'],
  properties: {
    items: { type: 'array', items: { $ref: '#/components/schemas/WebhookEndpoint' } },
    nextCursor: { type: ['string', 'null'] },
  },
} as const;

export const PAGE_QUERY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    limit: { type: 'integer', minimum: 1, maximum: 500, default: 50 },
    cursor: { type: 'string', maxLength: 200 },
  },
} as const;

export const DELIVERY_QUERY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    endpoint: { type: 'string', maxLength: 64, description: 'Only deliveries to this endpoint.' },
    operation: { type: 'string', maxLength: 64, description: 'Only deliveries of this operation.' },
    status: {
      type: 'array',
      maxItems: 3,
      items: { type: 'string', enum: ['pending', 'delivered', 'failed'] },
      description: 'Only these statuses (repeat the parameter or separate with commas).',
    },
    limit: { type: 'integer', minimum: 1, maximum: 500, default: 50 },
    cursor: { type: 'string', maxLength: 200 },
  },
} as const;

export const REPLAY_REQUEST_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['since'],
  properties: {
    since: {
      ...dateTime,
      maxLength: 64,
      description: 'Replay every failed delivery made since this time.',
    },
  },
} as const;

export const DELIVERY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: [
    'id',
    'endpoint',
    'url',
    'operationId',
    'eventId',
    'eventType',
    'status',
    'attempts',
    'nextAttemptAt',
    'lastStatus',
    'lastError',
    'createdAt',
    'updatedAt',
    'deliveredAt',
  ],
  properties: {
    id: { type: 'string' },
    endpoint: {
      type: ['string', 'null'],
      description: 'The endpoint id; null for a delivery to the operation’s callbackUrl.',
    },
    url: { type: 'string' },
    operationId: { type: 'string' },
    eventId: { type: 'string', description: 'Sent as `webhook-id`, the same on every attempt.' },
    eventType: { type: 'string', enum: [...EVENT_TYPES] },
    status: {
      type: 'string',
      enum: ['pending', 'delivered', 'failed'],
      description: '`failed` is a dead letter: out of attempts, or refused for good.',
    },
    attempts: { type: 'integer', minimum: 0 },
    nextAttemptAt: nullableDateTime,
    lastStatus: { type: ['integer', 'null'] },
    lastError: { type: ['string', 'null'] },
    createdAt: dateTime,
    updatedAt: dateTime,
    deliveredAt: nullableDateTime,
  },
} as const;

export const DELIVERY_PAGE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['items', 'nextCursor'],
  properties: {
    items: { type: 'array', items: { $ref: '#/components/schemas/WebhookDelivery' } },
    nextCursor: { type: ['string', 'null'] },
  },
} as const;

export const ATTEMPT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['attempt', 'startedAt', 'durationMs', 'status', 'error', 'responseBody'],
  properties: {
    attempt: { type: 'integer', minimum: 1 },
    startedAt: dateTime,
    durationMs: { type: 'integer', minimum: 0 },
    status: { type: ['integer', 'null'], description: 'The HTTP status; null without a response.' },
    error: {
      type: ['string', 'null'],
      description: 'Why no response came: TIMEOUT, CONNECT_FAILED, BLOCKED_ADDRESS, ...',
    },
    responseBody: { type: 'string', description: 'The first 4 KB of the response body.' },
  },
} as const;

export const ATTEMPT_LIST_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['items'],
  properties: { items: { type: 'array', items: { $ref: '#/components/schemas/WebhookAttempt' } } },
} as const;

export const CALLBACK_SECRETS_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['secrets'],
  properties: {
    secrets: {
      type: 'array',
      description: 'Newest first: the current secret, then rotated-out ones still signing.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['secret', 'expiresAt'],
        properties: { secret: { type: 'string' }, expiresAt: nullableDateTime },
      },
    },
  },
} as const;
