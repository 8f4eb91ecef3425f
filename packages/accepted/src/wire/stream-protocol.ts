import { EVENT_TYPES, type EventType } from '../domain/events.ts';
import { LABEL_KEY_PATTERN, LABEL_VALUE_SCHEMA, TYPE_PATTERN } from './submit.ts';

/**
 * The WebSocket protocol's client messages, as JSON Schemas: they validate what clients send
 * and are published in the AsyncAPI document. See docs/streams.md.
 */

/** Echoed in the answer, so that a client can match answers to requests. */
const REQUEST_ID = {
  description: 'Any id of the client’s choosing, echoed in the answer.',
  oneOf: [{ type: 'string', maxLength: 64 }, { type: 'integer' }],
} as const;

const AFTER = {
  type: 'integer',
  minimum: 0,
  maximum: Number.MAX_SAFE_INTEGER,
  description: 'Send every matching event after this seq first (from the log).',
} as const;

export const WS_FILTER_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    types: { type: 'array', maxItems: 20, items: { type: 'string', enum: [...EVENT_TYPES] } },
    operationTypes: {
      type: 'array',
      maxItems: 100,
      items: { type: 'string', pattern: TYPE_PATTERN, maxLength: 128 },
    },
    operations: { type: 'array', maxItems: 100, items: { type: 'string', maxLength: 64 } },
    labels: {
      type: 'object',
      maxProperties: 16,
      propertyNames: { pattern: LABEL_KEY_PATTERN, maxLength: 63 },
      // The rules of label values: a control character could never match, and PostgreSQL
      // refuses U+0000 in the log's label filter.
      additionalProperties: LABEL_VALUE_SCHEMA,
    },
  },
} as const;

export const WS_CLIENT_MESSAGE_SCHEMAS = {
  subscribe: {
    type: 'object',
    additionalProperties: false,
    required: ['type'],
    properties: {
      type: { const: 'subscribe' },
      id: REQUEST_ID,
      operation: {
        type: 'string',
        maxLength: 64,
        description: 'Subscribe to one operation (give this or filter).',
      },
      filter: { ...WS_FILTER_SCHEMA, description: 'Subscribe to matching events (or operation).' },
      after: AFTER,
    },
  },
  unsubscribe: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'subscription'],
    properties: {
      type: { const: 'unsubscribe' },
      id: REQUEST_ID,
      subscription: { type: 'string', maxLength: 64 },
    },
  },
  submit: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'operation'],
    properties: {
      type: { const: 'submit' },
      id: REQUEST_ID,
      operation: { type: 'object', description: 'The body of POST /v1/operations.' },
      idempotencyKey: { type: 'string', minLength: 1, maxLength: 255 },
    },
  },
  cancel: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'operation'],
    properties: {
      type: { const: 'cancel' },
      id: REQUEST_ID,
      operation: { type: 'string', maxLength: 64 },
    },
  },
  ping: {
    type: 'object',
    additionalProperties: false,
    required: ['type'],
    properties: { type: { const: 'ping' }, id: REQUEST_ID },
  },
} as const;

export type ClientMessageType = keyof typeof WS_CLIENT_MESSAGE_SCHEMAS;

export interface WsFilter {
  types?: EventType[];
  operationTypes?: string[];
  operations?: string[];
  labels?: Record<string, string>;
}

export type ClientMessage =
  | {
      type: 'subscribe';
      id?: string | number;
      operation?: string;
      filter?: WsFilter;
      after?: number;
    }
  | { type: 'unsubscribe'; id?: string | number; subscription: string }
  | { type: 'submit'; id?: string | number; operation: object; idempotencyKey?: string }
  | { type: 'cancel'; id?: string | number; operation: string }
  | { type: 'ping'; id?: string | number };

/** The version of the protocol, sent in `welcome`. */
export const WS_PROTOCOL_VERSION = 1;
