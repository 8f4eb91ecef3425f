import type { Operation, Problem } from './types.ts';

/**
 * Every error the client throws. `code` is stable: a problem's `code` from the server
 * (docs/errors.md), an operation's `error.code`, or one of the client's own: `CLIENT_TIMEOUT`,
 * `ABORTED`, `NETWORK_ERROR`.
 */
export class AcceptedClientError extends Error {
  override name = 'AcceptedClientError';
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** The server refused a request: an `application/problem+json` answer. */
export class ProblemError extends AcceptedClientError {
  override name = 'ProblemError';
  /** The HTTP status. */
  readonly status: number;
  /** The problem document as sent (`fix`, `fields`, `details`, ...). */
  readonly problem: Problem;

  constructor(status: number, problem: Problem) {
    super(problem.code ?? `HTTP_${status}`, problem.detail ?? problem.title ?? `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** `run()` or `result()` of an operation that ended `failed` or `canceled`. */
export class OperationFailedError extends AcceptedClientError {
  override name = 'OperationFailedError';
  /** The final status monitor; `status` is `failed` or `canceled`. */
  readonly operation: Operation;

  constructor(operation: Operation) {
    super(
      operation.error?.code ?? operation.status.toUpperCase(),
      operation.error?.message ?? `The operation ended ${operation.status}.`,
    );
    this.operation = operation;
  }
}

/** A call took longer than its `timeoutMs`. Its requests were aborted. */
export class TimeoutError extends AcceptedClientError {
  override name = 'TimeoutError';

  constructor(ms: number) {
    super('CLIENT_TIMEOUT', `Gave up after ${ms} ms.`);
  }
}

/** The caller's `AbortSignal` fired. `cause` is the signal's reason. */
export class AbortError extends AcceptedClientError {
  override name = 'AbortError';

  constructor(cause: unknown) {
    super('ABORTED', 'The call was aborted.', { cause });
  }
}

/** The server could not be reached, after the retries. `cause` is the last failure. */
export class NetworkError extends AcceptedClientError {
  override name = 'NetworkError';

  constructor(cause: unknown) {
    super('NETWORK_ERROR', `The server could not be reached: ${String(cause)}`, { cause });
  }
}
