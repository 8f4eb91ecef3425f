import { Ajv, type ErrorObject, type Options, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { AcceptedError, type FieldProblem } from '../domain/errors.ts';
import type { Json } from '../domain/operation.ts';
import type { OperationDefinition } from './definition.ts';

/** Operation type names: `report.generate`, `media/transcode`, `demo.sleep`. */
export const TYPE_PATTERN = '^[A-Za-z][A-Za-z0-9_.:/-]{0,127}$';
export const LABEL_KEY_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.\\-/]{0,62}$';
export const MAX_ATTEMPTS_LIMIT = 100;
export const MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000;

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
      description: 'The operation type to run (one registered with the server).',
    },
    input: { description: 'Any JSON value; checked against the type’s input schema.' },
    runAt: {
      type: 'string',
      format: 'date-time',
      description: 'Do not start before this time (RFC 3339). Default: now.',
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
      maxProperties: 32,
      propertyNames: { pattern: LABEL_KEY_PATTERN },
      additionalProperties: { type: 'string', maxLength: 256 },
      description: 'String key/value pairs to filter and group operations by.',
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
