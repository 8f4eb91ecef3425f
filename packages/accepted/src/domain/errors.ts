/**
 * One error type with stable string codes. The table below is the single place that says,
 * for every code, what HTTP status it maps to and whether a client may retry. Codes are
 * documented in docs/errors.md and never reused for another meaning.
 */
export const ERROR_CODES = {
  // Requests that are wrong and must be corrected before being sent again.
  VALIDATION_FAILED: { status: 422, title: 'The request is not valid', retryable: false },
  MALFORMED_JSON: { status: 400, title: 'The body is not valid JSON', retryable: false },
  UNSUPPORTED_MEDIA_TYPE: {
    status: 415,
    title: 'The body must be application/json',
    retryable: false,
  },
  PAYLOAD_TOO_LARGE: { status: 413, title: 'The body is too large', retryable: false },
  UNKNOWN_OPERATION_TYPE: {
    status: 422,
    title: 'No handler is registered for this operation type',
    retryable: false,
  },
  JSON_TOO_DEEP: {
    status: 422,
    title: 'The JSON is nested too deeply',
    retryable: false,
  },
  NUMBER_OUT_OF_RANGE: {
    status: 422,
    title: 'A number cannot be kept exactly',
    retryable: false,
  },
  INVALID_ENCODING: { status: 400, title: 'The body is not valid UTF-8', retryable: false },
  MALFORMED_REQUEST: { status: 400, title: 'The HTTP request is malformed', retryable: false },
  HEADERS_TOO_LARGE: {
    status: 431,
    title: 'The request headers are too large',
    retryable: false,
  },
  REQUEST_TIMEOUT: {
    status: 408,
    title: 'The request was not received in time',
    retryable: true,
  },
  INVALID_QUERY: { status: 400, title: 'A query parameter is not valid', retryable: false },
  INVALID_HEADER: { status: 400, title: 'A request header is not valid', retryable: false },
  IDEMPOTENCY_KEY_REUSED: {
    status: 422,
    title: 'This Idempotency-Key was already used with another request',
    retryable: false,
  },
  UNAUTHENTICATED: {
    status: 401,
    title: 'A valid API key is required',
    retryable: false,
  },
  FORBIDDEN: {
    status: 403,
    title: 'The credentials do not allow this request',
    retryable: false,
  },
  INVALID_MESSAGE: {
    status: 400,
    title: 'A WebSocket message is not valid',
    retryable: false,
  },
  UPGRADE_REQUIRED: {
    status: 426,
    title: 'This route speaks WebSocket only',
    retryable: false,
  },
  URL_NOT_ALLOWED: {
    status: 422,
    title: 'The URL may not be called by the server',
    retryable: false,
  },
  PRECONDITION_REQUIRED: {
    status: 428,
    title: 'This change needs an If-Match header',
    retryable: false,
  },
  OPERATION_NOT_FOUND: { status: 404, title: 'Operation not found', retryable: false },
  ENDPOINT_NOT_FOUND: { status: 404, title: 'Webhook endpoint not found', retryable: false },
  DELIVERY_NOT_FOUND: { status: 404, title: 'Webhook delivery not found', retryable: false },
  SUBSCRIPTION_NOT_FOUND: { status: 404, title: 'No such subscription', retryable: false },
  TOO_MANY_SUBSCRIPTIONS: {
    status: 429,
    title: 'This connection has too many subscriptions',
    retryable: false,
  },
  ROUTE_NOT_FOUND: { status: 404, title: 'No such route', retryable: false },
  METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed', retryable: false },
  // State conflicts: the request was fine but the operation is not in a state that allows it.
  ILLEGAL_TRANSITION: {
    status: 409,
    title: 'The operation is not in a state that allows this',
    retryable: false,
  },
  ALREADY_TERMINAL: { status: 409, title: 'The operation has already finished', retryable: false },
  IDEMPOTENCY_KEY_IN_FLIGHT: {
    status: 409,
    title: 'A request is outstanding for this Idempotency-Key',
    retryable: true,
  },
  PRECONDITION_FAILED: {
    status: 412,
    title: 'The operation has changed since the given ETag',
    retryable: false,
  },
  LEASE_LOST: {
    status: 409,
    title: 'The lease on this operation is no longer held',
    retryable: false,
  },
  // The server's side.
  STORE_LOCKED: {
    status: 503,
    title: 'The data directory is in use by another process',
    retryable: true,
  },
  SHUTTING_DOWN: { status: 503, title: 'The server is shutting down', retryable: true },
  STORE_UNAVAILABLE: { status: 503, title: 'The store does not answer', retryable: true },
  TOO_MANY_CONNECTIONS: {
    status: 503,
    title: 'The server has too many connections open',
    retryable: true,
  },
  NOT_STARTED: { status: 503, title: 'The engine has not been started', retryable: true },
  INTERNAL: { status: 500, title: 'Internal server error', retryable: true },
} as const satisfies Record<string, { status: number; title: string; retryable: boolean }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** What an operation's `error.code` may look like (a handler's own codes included). */
export const OPERATION_ERROR_CODE_PATTERN = '^[A-Za-z][A-Za-z0-9_.:-]{0,63}$';

/** A problem with one field of a request, for 422 answers that list every field at fault. */
export interface FieldProblem {
  /** JSON pointer to the field, such as `/input/ms`. */
  field: string;
  message: string;
}

export interface AcceptedErrorOptions {
  /** How to fix it, said to the person reading the error. */
  fix?: string;
  /** The fields at fault. */
  fields?: FieldProblem[];
  /** Any other machine-readable detail (never internals). */
  details?: Record<string, unknown>;
  cause?: unknown;
}

/** The error every module of Accepted throws for an expected failure. */
export class AcceptedError extends Error {
  override readonly name = 'AcceptedError';
  readonly code: ErrorCode;
  readonly fix: string | undefined;
  readonly fields: FieldProblem[] | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: AcceptedErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.fix = options.fix;
    this.fields = options.fields;
    this.details = options.details;
  }

  get status(): number {
    return ERROR_CODES[this.code].status;
  }

  get retryable(): boolean {
    return ERROR_CODES[this.code].retryable;
  }
}

export function isAcceptedError(value: unknown): value is AcceptedError {
  return value instanceof AcceptedError;
}

/**
 * The one mapping of a failure to what a caller is told: an `AcceptedError` as it is; anything
 * else (a bug, a failure nobody named) is `INTERNAL`, saying `what` failed and no more, with
 * `unexpected` set so that the caller logs the cause (at error level: the line that means a
 * 500). Every edge (HTTP, WebSocket messages and upgrades) answers through it.
 */
export function toAnswerable(
  error: unknown,
  what = 'The server failed to handle this request.',
): { error: AcceptedError; unexpected: boolean } {
  if (isAcceptedError(error)) return { error, unexpected: false };
  return {
    error: new AcceptedError('INTERNAL', what, {
      fix: 'Retry later; if it persists, report it with the time of the request.',
    }),
    unexpected: true,
  };
}

/** No such operation in the caller's tenant (or never, or no longer). */
export function operationNotFound(id: string): AcceptedError {
  return new AcceptedError('OPERATION_NOT_FOUND', `No operation ${id}.`, {
    fix: 'Check the id (and the API key: each tenant sees only its own operations); finished operations are removed after their retention period.',
  });
}

/** A write of an attempt whose lease is no longer held (every adapter raises this one). */
export function leaseLost(id: string): AcceptedError {
  return new AcceptedError('LEASE_LOST', `The lease on operation ${id} is no longer held.`, {
    fix: 'The operation was recovered, canceled or completed elsewhere; drop this attempt.',
  });
}

const PERMANENT = Symbol.for('accepted.PermanentError');
const RETRY_AFTER = Symbol.for('accepted.RetryAfterError');

/** True for a PermanentError from any copy of this package. */
export function isPermanentError(value: unknown): value is PermanentError {
  return typeof value === 'object' && value !== null && PERMANENT in value;
}

/** True for a RetryAfterError from any copy of this package. */
export function isRetryAfterError(value: unknown): value is RetryAfterError {
  return typeof value === 'object' && value !== null && RETRY_AFTER in value;
}

/**
 * Thrown by a handler to fail the operation at once, with no further attempts.
 * `code` becomes the operation's `error.code`.
 */
export class PermanentError extends Error {
  override readonly name = 'PermanentError';
  /** A brand that survives two copies of this package in one process (instanceof does not). */
  readonly [PERMANENT] = true;
  readonly code: string;
  readonly details: unknown;
  constructor(
    message: string,
    options: { code?: string; details?: unknown; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = options.code ?? 'PERMANENT_FAILURE';
    this.details = options.details;
  }
}

/**
 * The longest delay before a next attempt (a `RetryAfterError`, a backoff): 30 days. Longer
 * ones are refused or capped, so that every time the engine stores stays a valid date.
 */
export const MAX_RETRY_DELAY_MS = 30 * 24 * 3600 * 1000;

/**
 * Thrown by a handler to fail this attempt and ask for the next one no sooner than `delayMs`
 * from now (a rate-limited upstream, say). Counts as an attempt.
 */
export class RetryAfterError extends Error {
  override readonly name = 'RetryAfterError';
  readonly [RETRY_AFTER] = true;
  readonly code: string;
  readonly delayMs: number;
  constructor(
    delayMs: number,
    message = `retry after ${delayMs} ms`,
    options: { code?: string } = {},
  ) {
    super(message);
    if (!Number.isFinite(delayMs) || delayMs < 0 || delayMs > MAX_RETRY_DELAY_MS) {
      throw new RangeError(
        `RetryAfterError: delayMs must be a number from 0 to ${MAX_RETRY_DELAY_MS} (30 days)`,
      );
    }
    this.delayMs = delayMs;
    this.code = options.code ?? 'RETRY_AFTER';
  }
}
