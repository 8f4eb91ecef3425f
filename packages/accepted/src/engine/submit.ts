import { Ajv, type ErrorObject, type Options, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { AcceptedError, isAcceptedError, type FieldProblem } from '../domain/errors.ts';
import { MAX_JSON_DEPTH, checkJsonDepth } from '../domain/json.ts';
import type { Json } from '../domain/operation.ts';
import type { OperationDefinition } from './definition.ts';

/** Operation type names: `report.generate`, `media/transcode`, `demo.sleep`. */
export const TYPE_PATTERN = '^[A-Za-z][A-Za-z0-9_.:/-]{0,127}$';
export const LABEL_KEY_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.\\-/]{0,62}$';
export const MAX_ATTEMPTS_LIMIT = 100;
export const MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000;
/** How far ahead `runAt` may be: 366 days (a yearly job, with a day to spare). */
export const MAX_RUN_AT_AHEAD_MS = 366 * 24 * 3600 * 1000;
/**
 * The one rule for a `runAt` (of a submit, over any channel, and of a retry): a time `Date`
 * can hold, at most `MAX_RUN_AT_AHEAD_MS` ahead of `now`. A time in the past means now.
 * Returns it as epoch milliseconds; VALIDATION_FAILED naming `/runAt` otherwise.
 */
export function checkRunAt(ms: number, now = Date.now()): number {
  if (!Number.isFinite(ms) || Math.abs(ms) > 8.64e15) {
    throw new AcceptedError('VALIDATION_FAILED', 'runAt is not a valid time.', {
      fields: [{ field: '/runAt', message: 'must be a date-time' }],
      fix: 'Use an RFC 3339 time such as 2030-01-01T00:00:00Z.',
    });
  }
  if (ms - now > MAX_RUN_AT_AHEAD_MS) {
    throw new AcceptedError('VALIDATION_FAILED', 'runAt is more than 366 days ahead.', {
      fields: [{ field: '/runAt', message: 'must be at most 366 days ahead' }],
      fix: 'Submit the operation closer to its time, or schedule it from a job of your own.',
    });
  }
  return ms;
}

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
const LABEL_VALUE_MESSAGE =
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

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

export function createAjv(options: Options = {}): Ajv {
  const ajv = new Ajv({ allErrors: true, strict: false, allowUnionTypes: true, ...options });
  addFormats(ajv);
  return ajv;
}

function fieldOf(prefix: string, error: ErrorObject): FieldProblem {
  let field = `${prefix}${error.instancePath}`;
  const params = error.params as Record<string, unknown>;
  if (error.keyword === 'required' && typeof params.missingProperty === 'string') {
    field += `/${params.missingProperty}`;
  } else if (
    error.keyword === 'additionalProperties' &&
    typeof params.additionalProperty === 'string'
  ) {
    return { field: `${field}/${params.additionalProperty}`, message: 'is not allowed here' };
  } else if (error.keyword === 'propertyNames' && typeof params.propertyName === 'string') {
    return { field: `${field}/${params.propertyName}`, message: 'is not a valid key' };
  } else if (error.keyword === 'pattern' && params.pattern === LABEL_VALUE_PATTERN) {
    return { field: field || '/', message: LABEL_VALUE_MESSAGE };
  } else if (error.keyword === 'pattern' && params.pattern === LABEL_FILTER_PATTERN) {
    return {
      field: field || '/',
      message: `must be key:value, the value at most ${MAX_LABEL_VALUE_LENGTH} characters that ${LABEL_VALUE_MESSAGE}`,
    };
  }
  return { field: field || '/', message: error.message ?? 'is not valid' };
}

export function fieldProblems(prefix: string, errors: readonly ErrorObject[] | null | undefined) {
  const seen = new Set<string>();
  const out: FieldProblem[] = [];
  for (const error of errors ?? []) {
    if (error.keyword === 'if') continue;
    const problem = fieldOf(prefix, error);
    const key = `${problem.field}\u0000${problem.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(problem);
  }
  return out;
}

/**
 * Values parsed from a JSON text whose depth was checked already (the HTTP edge runs
 * `checkJsonText` before it parses a body): nothing inside them is deeper than the limit, so
 * the walk of `checkJsonDepth` is skipped for them (it costs about as much as the check of
 * the text).
 */
const depthChecked = new WeakSet<object>();

/**
 * Texts shorter than this are not worth marking: walking what they hold costs less than
 * adding to the WeakSet (measured: about 0.2 µs against 0.45 µs for a small submit body).
 */
const MARK_FROM_LENGTH = 2048;

/** Marks a value parsed from a text (of `length` characters) that `checkJsonText` passed. */
export function markDepthChecked(value: unknown, length: number): void {
  if (length >= MARK_FROM_LENGTH && typeof value === 'object' && value !== null) {
    depthChecked.add(value);
  }
}

/** Validates submits: the envelope, the type, the input against the type's schema, sizes. */
export class SubmitValidator {
  private readonly envelope: ValidateFunction;
  private readonly inputs = new Map<string, ValidateFunction>();

  constructor(
    private readonly definitions: ReadonlyMap<string, OperationDefinition<never, unknown>>,
    private readonly maxInputBytes: number,
  ) {
    const ajv = createAjv();
    this.envelope = ajv.compile(SUBMIT_REQUEST_SCHEMA);
    for (const [type, definition] of definitions) {
      if (definition.inputSchema) this.inputs.set(type, ajv.compile(definition.inputSchema));
    }
  }

  /** Throws `AcceptedError` naming every problem; returns the request typed. */
  validate(body: unknown): SubmitRequest {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new AcceptedError('VALIDATION_FAILED', 'The body must be a JSON object.', {
        fields: [{ field: '/', message: 'must be an object' }],
        fix: 'Send {"type": "<operation type>", "input": {...}}.',
      });
    }
    if (!this.envelope(body)) {
      const fields = fieldProblems('', this.envelope.errors);
      throw new AcceptedError(
        'VALIDATION_FAILED',
        `The submit request is not valid: ${fields.map((f) => `${f.field} ${f.message}`).join('; ')}.`,
        { fields, fix: 'Correct the fields listed in `fields` and send the request again.' },
      );
    }
    const request = body as SubmitRequest;
    if (request.runAt !== undefined) checkRunAt(Date.parse(request.runAt));
    if (!this.definitions.has(request.type)) {
      const known = [...this.definitions.keys()].sort();
      throw new AcceptedError(
        'UNKNOWN_OPERATION_TYPE',
        `No operation type "${request.type}" is registered on this server.`,
        {
          fields: [{ field: '/type', message: 'unknown operation type' }],
          details: { known },
          fix: known.length
            ? `Use one of: ${known.join(', ')}.`
            : 'Register operation types with defineOperation() (or start the server with --demo).',
        },
      );
    }
    const input = request.input ?? null;
    // Before anything serialises it: a value too deep for JSON.stringify (a few thousand
    // levels) would overflow the stack, and one a little less deep would be stored and then
    // break every read of its tenant.
    try {
      if (!depthChecked.has(body)) checkJsonDepth(input, MAX_JSON_DEPTH, 'The input');
    } catch (error) {
      if (!isAcceptedError(error)) throw error;
      throw new AcceptedError(error.code, error.message, {
        fix: error.fix,
        details: error.details,
        fields: [{ field: '/input', message: `nested more than ${MAX_JSON_DEPTH} levels deep` }],
      });
    }
    const size = Buffer.byteLength(JSON.stringify(input));
    if (size > this.maxInputBytes) {
      throw new AcceptedError(
        'PAYLOAD_TOO_LARGE',
        `The input is ${size} bytes; the limit is ${this.maxInputBytes}.`,
        {
          fields: [{ field: '/input', message: `larger than ${this.maxInputBytes} bytes` }],
          fix: 'Store large payloads elsewhere (object storage) and pass a reference in the input.',
        },
      );
    }
    const check = this.inputs.get(request.type);
    if (check && !check(input)) {
      const fields = fieldProblems('/input', check.errors);
      throw new AcceptedError(
        'VALIDATION_FAILED',
        `The input does not match the schema of "${request.type}": ${fields
          .map((f) => `${f.field} ${f.message}`)
          .join('; ')}.`,
        { fields, fix: 'Correct the input fields listed in `fields`.' },
      );
    }
    return request;
  }
}
