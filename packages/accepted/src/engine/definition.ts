import type { Logger } from '../domain/logger.ts';
import type { Json, Progress } from '../domain/operation.ts';

export type { Logger };

/** What a handler is given besides its input. */
export interface HandlerContext {
  /** The operation's id: a stable idempotency key for the handler's own side effects. */
  readonly operationId: string;
  /** The operation's type. */
  readonly type: string;
  /** 1 for the first attempt, 2 for the first retry, and so on. */
  readonly attempt: number;
  /** The attempt budget. */
  readonly maxAttempts: number;
  /** The operation's labels. */
  readonly labels: Readonly<Record<string, string>>;
  /**
   * Aborted on cancellation, timeout, shutdown or loss of the lease; `signal.reason` is an
   * `Error` whose `name` says which (`CancelError`, `TimeoutError`, `ShutdownError`,
   * `LeaseLostError`). Pass it to fetch, streams and timers.
   */
  readonly signal: AbortSignal;
  /**
   * Reports progress. Writes are conflated: while one is being written, later calls replace
   * each other and only the latest is written next. The promise never rejects: it resolves
   * once written (or dropped because the attempt is over). A malformed argument (fraction
   * outside 0..1, a non-string message) throws a TypeError/RangeError at once.
   */
  progress(progress: Progress): Promise<void>;
  /** A logger bound to this operation and attempt. */
  readonly log: Logger;
}

/** A backoff policy: exponential with jitter, or a function of the attempt that failed. */
export type Backoff =
  | {
      /** Delay after the first failed attempt. Default 1000 ms. */
      baseMs?: number;
      /** Growth per attempt. Default 2. */
      factor?: number;
      /** Ceiling. Default 1 hour. */
      maxMs?: number;
      /** Share of the delay that is randomised, 0..1. Default 0.5. */
      jitter?: number;
    }
  | ((attempt: number, error: unknown) => number);

/** A JSON Schema (draft 2020-12 or draft-07 keywords as Ajv accepts them). */
export type JsonSchema = Record<string, unknown>;

export interface OperationDefinition<I = Json, O = Json, T extends string = string> {
  /** The name clients submit, such as `report.generate`: a letter, then letters, digits and `. _ : / -`. */
  type: T;
  /** Does the work. Its resolved value (JSON) becomes the operation's result. */
  handler: (input: I, ctx: HandlerContext) => Promise<O> | O;
  /** Attempts before the operation fails for good. Default: the engine's (3). */
  maxAttempts?: number;
  /** Per-attempt time limit in ms. Default: none. */
  timeoutMs?: number;
  /** Delay between attempts. Default: the engine's. */
  backoff?: Backoff;
  /** JSON Schema the input must satisfy; checked at submit, before anything is stored. */
  inputSchema?: JsonSchema;
  /** JSON Schema of the result, for documentation (OpenAPI, generated client types). */
  resultSchema?: JsonSchema;
  /** One line saying what the operation does (shown in the docs the server generates). */
  description?: string;
}

/**
 * Declares an operation type. An identity function that keeps the handler's types, and the
 * literal `type` when it is inferred (or given as the third type argument:
 * `defineOperation<In, Out, 'report.generate'>`), for {@link OperationTypes}.
 */
export function defineOperation<I = Json, O = Json, T extends string = string>(
  definition: OperationDefinition<I, O, T>,
): OperationDefinition<I, O, T> {
  return definition;
}

/**
 * The type map of a client (`createClient<OperationTypes<typeof operations>>()` of
 * `@accepted/client`): each definition's literal `type` mapped to its `{ input, result }`.
 * `Definitions` is an array (or tuple) of definitions; those whose `type` is a plain `string`
 * (not a literal) are left out. No code is generated: the types come from the definitions.
 */
export type OperationTypes<Definitions extends readonly AnyOperationDefinition[]> = {
  [
    D in Definitions[number] as string extends D['type'] ? never : D['type']
  ]: D extends OperationDefinition<infer I, infer O> ? { input: I; result: Awaited<O> } : never;
};

/** An operation definition of any input and result types (for collections of them). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyOperationDefinition = OperationDefinition<any, any>;
