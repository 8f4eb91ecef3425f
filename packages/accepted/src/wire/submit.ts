// The submit request on the wire: its JSON Schema (which the OpenAPI document publishes and
// the engine validates every submit against) and the patterns other schemas share.
import type { Json } from '../domain/operation.ts';

/** Operation type names: `report.generate`, `media/transcode`, `demo.sleep`. */
export const TYPE_PATTERN = '^[A-Za-z][A-Za-z0-9_.:/-]{0,127}$';
export const LABEL_KEY_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.\\-/]{0,62}$';
export const MAX_ATTEMPTS_LIMIT = 100;
export const MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000;
/** Labels: at most this many pairs, keys and values at most this long (in characters). */
export const MAX_LABELS = 32;
export const MAX_LABEL_VALUE_LENGTH = 256;
/**
 * A label value: no control characters (U+0000 to U+001F, U+007F to U+009F) and no unpaired
 * surrogate. PostgreSQL's `jsonb` refuses U+0000 and unpaired surrogates (the SQLite store
 * would keep them), and a control character in a label is a mistake or an attack on whoever
 * prints it (logs, terminals). Read with the `u` flag, as Ajv does: `\p{Cs}` then matches
 * only a surrogate that is not half of a pair.
 */
export const LABEL_VALUE_PATTERN = '^[^\\p{Cc}\\p{Cs}]*$';
/** A label filter in a query string, `key:value`, with the same rules for both halves. */
export const LABEL_FILTER_PATTERN = `${LABEL_KEY_PATTERN.slice(0, -1)}:[^\\p{Cc}\\p{Cs}]{0,${MAX_LABEL_VALUE_LENGTH}}$`;
export const LABEL_VALUE_MESSAGE =
  'must not contain control characters (U+0000 to U+001F, U+007F to U+009F) or unpaired surrogates';
/** The JSON Schema of one label value, shared by every schema that takes labels. */
export const LABEL_VALUE_SCHEMA = {
  type: 'string',
  maxLength: MAX_LABEL_VALUE_LENGTH,
  pattern: LABEL_VALUE_PATTERN,
} as const;

/**
 * The body of a submit, as the HTTP API receives it and the library builds it. This schema
 * validates both, and the OpenAPI document is generated from it.
 */
export const SUBMIT_REQUEST_SCHEMA = {
  $id: 'SubmitRequest',
  type: 'object',
  additionalProperties: false,
  required: ['type'],
  properties: {
    type: {
      type: 'string',
      pattern: TYPE_PATTERN,
      maxLength: 128,
      description: 'The operation type to run (one registered with the server).',
    },
    input: {
      description:
        'Any JSON value; checked against the type’s input schema. At most 1 MiB as JSON (`maxInputBytes`) and 64 levels deep.',
    },
    runAt: {
      type: 'string',
      format: 'date-time',
      maxLength: 64,
      description:
        'Do not start before this time (RFC 3339), at most 366 days ahead. Default: now.',
    },
    maxAttempts: {
      type: 'integer',
      minimum: 1,
      maximum: MAX_ATTEMPTS_LIMIT,
      description: 'Attempts before the operation fails for good. Default: the type’s.',
    },
    timeoutMs: {
      type: 'integer',
      minimum: 1,
      maximum: MAX_TIMEOUT_MS,
      description: 'Per-attempt time limit in milliseconds. Default: the type’s.',
    },
    labels: {
      type: 'object',
      maxProperties: MAX_LABELS,
      propertyNames: { pattern: LABEL_KEY_PATTERN, maxLength: 63 },
      additionalProperties: LABEL_VALUE_SCHEMA,
      description:
        'String key/value pairs to filter and group operations by: at most 32; values at most 256 characters, without control characters.',
    },
    callbackUrl: {
      type: 'string',
      format: 'uri',
      pattern: '^https?://',
      maxLength: 2048,
      description: 'An http(s) URL to post the outcome to.',
    },
  },
} as const;

export interface SubmitRequest {
  type: string;
  input?: Json;
  runAt?: string;
  maxAttempts?: number;
  timeoutMs?: number;
  labels?: Record<string, string>;
  callbackUrl?: string;
}
