import {
  AcceptedError,
  OPERATION_ERROR_CODE_PATTERN,
  isPermanentError,
  isRetryAfterError,
} from '../domain/errors.ts';
import { randomId } from '../domain/ids.ts';
import { MAX_JSON_DEPTH, checkJsonDepth, jsonText } from '../domain/json.ts';
import type { Json, Operation, OperationError, Progress } from '../domain/operation.ts';
import type { ClaimedOperation, LeaseRef, Store } from '../store/store.ts';
import { backoffDelay, boundedDelay } from './backoff.ts';
import type { Backoff, HandlerContext, Logger, OperationDefinition } from './definition.ts';

export interface WorkerOptions {
  concurrency: number;
  leaseMs: number;
  heartbeatMs: number;
  pollIntervalMs: number;
  leaseRecoveryIntervalMs: number;
  backoff: Backoff | undefined;
  shutdownGraceMs: number;
  maxResultBytes: number;
}

type AbortKind = 'cancel' | 'timeout' | 'shutdown' | 'lease_lost';

const ABORT_NAMES: Record<AbortKind, string> = {
  cancel: 'CancelError',
  timeout: 'TimeoutError',
  shutdown: 'ShutdownError',
  lease_lost: 'LeaseLostError',
};

interface Running {
  operation: Operation;
  lease: LeaseRef;
  controller: AbortController;
  abortKind: AbortKind | null;
  /** The outcome has been written (or given up); the handler's own outcome is then ignored. */
  settled: boolean;
  pendingProgress: Progress | null;
  progressLoop: Promise<void> | null;
  done: Promise<void>;
}

function abortError(kind: AbortKind, message: string): Error {
  const error = new Error(message);
  error.name = ABORT_NAMES[kind];
  return error;
}

const SHUTDOWN_ERROR = {
  code: 'WORKER_SHUTDOWN',
  message: 'The worker shut down during this attempt.',
};

const CODE_PATTERN = new RegExp(OPERATION_ERROR_CODE_PATTERN);

/** Longest error message kept (characters); a longer one is cut, ending with `…`. */
export const MAX_ERROR_MESSAGE_CHARS = 4096;
/** Largest `details` of an error kept, as JSON bytes; larger ones are dropped. */
export const MAX_ERROR_DETAILS_BYTES = 64 * 1024;
/** Largest `data` of one progress report, as JSON bytes. */
export const MAX_PROGRESS_DATA_BYTES = 64 * 1024;

/** A message as text, whatever was thrown: a string, or the JSON (or String) of anything else. */
function messageOf(value: unknown, fallback: string): string {
  let text = '';
  if (typeof value === 'string') text = value;
  else if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    text = value.toString();
  } else if (typeof value === 'object' && value !== null) {
    try {
      text = jsonText(value) ?? '';
    } catch {
      text = Object.prototype.toString.call(value);
    }
  }
  if (text === '') text = fallback;
  return text.length > MAX_ERROR_MESSAGE_CHARS
    ? `${text.slice(0, MAX_ERROR_MESSAGE_CHARS - 1)}…`
    : text;
}

function codeOf(value: unknown, fallback: string): string {
  return typeof value === 'string' && CODE_PATTERN.test(value) ? value : fallback;
}

/**
 * Turns whatever a handler threw into the operation's error: a `PermanentError`, an `Error`
 * (with an optional string `code` and JSON `details`), a plain `{ code, message, details }`
 * object, a string, or anything else. The message is always a string (an object given as a
 * message is written as JSON), at most 4,096 characters.
 */
export function toOperationError(thrown: unknown): OperationError {
  if (isPermanentError(thrown)) {
    return withDetails(
      {
        code: codeOf(thrown.code, 'PERMANENT_FAILURE'),
        message: messageOf(thrown.message, thrown.name),
      },
      thrown.details,
    );
  }
  if (thrown instanceof Error) {
    const { code, details } = thrown as { code?: unknown; details?: unknown };
    return withDetails(
      { code: codeOf(code, 'HANDLER_ERROR'), message: messageOf(thrown.message, thrown.name) },
      details,
    );
  }
  if (typeof thrown === 'object' && thrown !== null) {
    const { code, message, details } = thrown as Record<string, unknown>;
    return withDetails(
      {
        code: codeOf(code, 'HANDLER_ERROR'),
        message: messageOf(message ?? thrown, 'Handler failed.'),
      },
      details,
    );
  }
  return { code: 'HANDLER_ERROR', message: messageOf(thrown, 'Handler failed.') };
}

/** Adds `details` when they are JSON within the depth and size bounds; else leaves them out. */
function withDetails(error: OperationError, details: unknown): OperationError {
  if (details === undefined) return error;
  try {
    checkJsonDepth(details);
    const text = jsonText(details);
    if (text === undefined || Buffer.byteLength(text) > MAX_ERROR_DETAILS_BYTES) return error;
    return { ...error, details: JSON.parse(text) as Json };
  } catch {
    return error;
  }
}

/** What `ctx.progress()` stores of `progress`; a TypeError or RangeError when it is not valid. */
export function checkProgress(progress: unknown): Progress {
  if (typeof progress !== 'object' || progress === null) {
    throw new TypeError('ctx.progress() takes an object { fraction?, message?, data? }');
  }
  const { fraction, message, data } = progress as Record<string, unknown>;
  if (fraction !== undefined && !(typeof fraction === 'number' && fraction >= 0 && fraction <= 1)) {
    throw new RangeError('ctx.progress(): fraction must be a number from 0 to 1');
  }
  if (message !== undefined && typeof message !== 'string') {
    throw new TypeError('ctx.progress(): message must be a string');
  }
  const out: Progress = {};
  if (fraction !== undefined) out.fraction = fraction;
  if (message !== undefined) out.message = message.slice(0, 1000);
  if (data !== undefined) {
    checkJsonDepth(data, MAX_JSON_DEPTH, 'ctx.progress(): data');
    let text: string | undefined;
    try {
      text = jsonText(data);
    } catch (error) {
      throw new TypeError(`ctx.progress(): data is not JSON: ${(error as Error).message}`, {
        cause: error,
      });
    }
    if (text === undefined) throw new TypeError('ctx.progress(): data is not JSON');
    const bytes = Buffer.byteLength(text);
    if (bytes > MAX_PROGRESS_DATA_BYTES) {
      throw new RangeError(
        `ctx.progress(): data is ${bytes} bytes as JSON; the limit is ${MAX_PROGRESS_DATA_BYTES}`,
      );
    }
    out.data = JSON.parse(text) as Json;
  }
  return out;
}

/**
 * Runs handlers: claims queued operations up to the concurrency limit, holds their leases by
 * heartbeat, enforces timeouts and cancellation, writes each attempt's outcome, and recovers
 * operations whose lease expired.
 */
export class Worker {
  readonly id = randomId('wrk');
  /**
   * Every attempt running here, by its lease token: an answer about a lease (lost, cancel
   * requested) is about that attempt only, never a newer attempt of the same operation that
   * this worker may have claimed since (after the old lease expired).
   */
  private readonly running = new Map<string, Running>();
  /**
   * Every handler still executing, including one whose attempt already ended by timeout and
   * that ignores its signal: it keeps its concurrency slot until it returns.
   */
  private readonly executing = new Set<Running>();
  private claiming = false;
  private mayHaveWork = true;
  private workHints = 0;
  private stopping = false;
  private started = false;
  private timers: NodeJS.Timeout[] = [];
  private nextRunTimer: NodeJS.Timeout | null = null;
  private nextRunAt = Infinity;
  private readonly writes = new Set<Promise<unknown>>();
  private unsubscribe: (() => void) | null = null;
  private readonly types: string[];
  private claimInFlight: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: Store,
    private readonly definitions: ReadonlyMap<string, OperationDefinition<never, unknown>>,
    private readonly options: WorkerOptions,
    private readonly log: Logger,
  ) {
    this.types = [...definitions.keys()];
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.unsubscribe = this.store.subscribe((hint) => {
      if (!hint.work) return;
      this.workHints++;
      this.mayHaveWork = true;
      this.pump();
    });
    await this.recoverLeases();
    this.every(this.options.heartbeatMs, () => this.heartbeat());
    this.every(this.options.leaseRecoveryIntervalMs, () => this.recoverLeases());
    // The safety poll is the one timer left referenced: a started worker keeps the process
    // alive until stop(), as a server would. It reads (a claim is a write, and an idle worker
    // must commit nothing) and claims only when something is due.
    this.every(this.options.pollIntervalMs, () => this.poll(), true);
    this.pump();
  }

  private every(ms: number, run: () => Promise<void> | void, keepAlive = false): void {
    const timer = setInterval(() => {
      if (!this.stopping) void run();
    }, ms);
    if (!keepAlive) timer.unref();
    this.timers.push(timer);
  }

  /** Aborts the handlers running here of an operation that was asked to cancel. */
  cancelLocal(operationId: string): void {
    for (const running of this.running.values()) {
      if (running.operation.id === operationId) {
        this.abort(running, 'cancel', 'The operation was canceled.');
      }
    }
  }

  // ---- claiming -----------------------------------------------------------------------------

  private pump(): void {
    if (this.stopping || this.claiming || !this.mayHaveWork) return;
    const free = this.options.concurrency - this.executing.size;
    if (free <= 0) return;
    this.claiming = true;
    const hintsBefore = this.workHints;
    const now = Date.now();
    this.claimInFlight = this.store
      .claim({
        owner: this.id,
        types: this.types,
        limit: free,
        leaseMs: this.options.leaseMs,
        now,
      })
      .then(
        (result) => {
          this.claiming = false;
          // Run them even when stop() has begun meanwhile: they are already `running` for
          // every reader, and stop() gives them the same grace as the others (it awaits this
          // claim first), then gives back, without spending an attempt, what did not finish.
          for (const claimed of result.claimed) this.run(claimed);
          if (this.stopping) return;
          if (result.claimed.length < free && this.workHints === hintsBefore) {
            this.mayHaveWork = false;
          }
          if (result.nextRunAt !== null) this.wakeAt(result.nextRunAt);
          this.pump();
        },
        (error: unknown) => {
          this.claiming = false;
          if (!this.stopping) this.logFailure(error, 'claim failed; retrying on next poll');
        },
      );
  }

  /** Looks for due work that no hint announced (a lost NOTIFY, a runAt that came). */
  private async poll(): Promise<void> {
    if (this.claiming || this.executing.size >= this.options.concurrency) return;
    try {
      const at = await this.store.nextRunAt(this.types);
      if (at === null || this.stopping) return;
      if (at <= Date.now()) {
        this.mayHaveWork = true;
        this.pump();
      } else {
        this.wakeAt(at);
      }
    } catch (error) {
      this.logFailure(error, 'looking for work failed; retrying on next poll');
    }
  }

  private wakeAt(at: number): void {
    if (at >= this.nextRunAt) return;
    if (this.nextRunTimer) clearTimeout(this.nextRunTimer);
    this.nextRunAt = at;
    this.nextRunTimer = setTimeout(
      () => {
        this.nextRunTimer = null;
        this.nextRunAt = Infinity;
        this.mayHaveWork = true;
        this.pump();
      },
      // Capped at an hour: Node fires longer delays (past 2^31 - 1 ms) at once, and a wake-up
      // that comes early only claims nothing and sets the next one.
      Math.min(Math.max(0, at - Date.now()), 3_600_000),
    );
    this.nextRunTimer.unref();
  }

  // ---- running a handler --------------------------------------------------------------------

  private run(claimed: ClaimedOperation): void {
    const { operation, lease } = claimed;
    const controller = new AbortController();
    const running: Running = {
      operation,
      lease,
      controller,
      abortKind: null,
      settled: false,
      pendingProgress: null,
      progressLoop: null,
      done: Promise.resolve(),
    };
    this.running.set(lease.token, running);
    this.executing.add(running);
    running.done = this.execute(running).finally(() => {
      this.executing.delete(running);
      this.running.delete(lease.token);
      this.pump();
    });
  }

  private async execute(running: Running): Promise<void> {
    const { operation } = running;
    const definition = this.definitions.get(operation.type);
    if (!definition) {
      running.settled = true;
      await this.record(
        this.store.fail(
          running.lease,
          { code: 'UNKNOWN_OPERATION_TYPE', message: `No handler for ${operation.type}.` },
          null,
          Date.now(),
        ),
      );
      return;
    }
    const log =
      this.log.child?.({ operationId: operation.id, attempt: operation.attempts }) ?? this.log;
    const ctx: HandlerContext = {
      operationId: operation.id,
      type: operation.type,
      attempt: operation.attempts,
      maxAttempts: operation.maxAttempts,
      labels: operation.labels,
      signal: running.controller.signal,
      log,
      progress: (progress) => this.reportProgress(running, checkProgress(progress)),
    };
    const timer =
      operation.timeoutMs === null
        ? null
        : setTimeout(() => void this.onTimeout(running), operation.timeoutMs);
    let ok = false;
    let value: unknown;
    try {
      value = await (definition.handler as (input: unknown, c: HandlerContext) => unknown)(
        operation.input,
        ctx,
      );
      ok = true;
    } catch (error) {
      value = error;
    } finally {
      if (timer) clearTimeout(timer);
    }
    if (running.settled) return;
    running.settled = true;
    // The slot frees now; the outcome is written in the background (tracked for shutdown),
    // so the next claim can share the commit that records this outcome.
    void this.settle(running, ok, value, definition.backoff ?? this.options.backoff);
  }

  private async settle(
    running: Running,
    ok: boolean,
    value: unknown,
    backoff: Backoff | undefined,
  ) {
    const { operation, lease } = running;
    const now = Date.now();
    if (running.abortKind === 'lease_lost') return;
    if (ok) {
      const result = value === undefined ? null : value;
      let size: number;
      try {
        checkJsonDepth(result, MAX_JSON_DEPTH, 'The result');
      } catch (error) {
        await this.record(
          this.store.fail(
            lease,
            { code: 'RESULT_TOO_DEEP', message: (error as Error).message },
            null,
            now,
          ),
        );
        return;
      }
      try {
        size = Buffer.byteLength(JSON.stringify(result));
      } catch (error) {
        await this.record(
          this.store.fail(
            lease,
            {
              code: 'RESULT_NOT_SERIALIZABLE',
              message: `The handler's result is not JSON: ${(error as Error).message}`,
            },
            null,
            now,
          ),
        );
        return;
      }
      if (size > this.options.maxResultBytes) {
        await this.record(
          this.store.fail(
            lease,
            {
              code: 'RESULT_TOO_LARGE',
              message: `The result is ${size} bytes; the limit is ${this.options.maxResultBytes}.`,
            },
            null,
            now,
          ),
        );
        return;
      }
      await this.record(this.store.complete(lease, result as Json, now));
      return;
    }
    if (running.abortKind === 'cancel') {
      await this.record(
        this.store.finishCanceled(
          lease,
          { code: 'CANCELED', message: 'Canceled on request.' },
          now,
        ),
      );
      return;
    }
    if (running.abortKind === 'shutdown') {
      await this.record(this.store.release(lease, SHUTDOWN_ERROR, now));
      return;
    }
    const error = toOperationError(value);
    await this.record(
      this.store.fail(lease, error, this.retryAt(operation, value, backoff, now), now),
    );
  }

  private retryAt(
    operation: Operation,
    thrown: unknown,
    backoff: Backoff | undefined,
    now: number,
  ) {
    if (isPermanentError(thrown)) return null;
    if (operation.attempts >= operation.maxAttempts) return null;
    // Whole ms within 30 days, whatever a copy of this package or a backoff hands over (a
    // fraction of a ms would not fit PostgreSQL's bigint run_at: the outcome would be lost).
    const delay = isRetryAfterError(thrown)
      ? boundedDelay(thrown.delayMs)
      : backoffDelay(backoff, operation.attempts, thrown);
    return now + delay;
  }

  private async onTimeout(running: Running): Promise<void> {
    if (running.settled) return;
    running.settled = true;
    const { operation } = running;
    this.abort(running, 'timeout', `The attempt exceeded its ${operation.timeoutMs} ms limit.`);
    const error = {
      code: 'TIMEOUT',
      message: `Attempt ${operation.attempts} exceeded its time limit of ${operation.timeoutMs} ms.`,
    };
    const definition = this.definitions.get(operation.type);
    const now = Date.now();
    await this.record(
      this.store.fail(
        running.lease,
        error,
        this.retryAt(operation, error, definition?.backoff ?? this.options.backoff, now),
        now,
      ),
    );
  }

  private abort(running: Running, kind: AbortKind, message: string): void {
    if (running.controller.signal.aborted) return;
    running.abortKind = kind;
    running.controller.abort(abortError(kind, message));
  }

  private reportProgress(running: Running, progress: Progress): Promise<void> {
    running.pendingProgress = progress;
    running.progressLoop ??= (async () => {
      while (running.pendingProgress && !running.settled) {
        const next = running.pendingProgress;
        running.pendingProgress = null;
        try {
          await this.store.progress(running.lease, next, Date.now());
        } catch (error) {
          if (!(error instanceof AcceptedError && error.code === 'LEASE_LOST')) {
            this.log.warn({ err: error, operationId: running.operation.id }, 'progress not saved');
          }
        }
      }
      running.progressLoop = null;
    })();
    return running.progressLoop;
  }

  /** Awaits a write, logging (not throwing) when it fails: the lease may have been lost. */
  private async record(write: Promise<unknown>): Promise<void> {
    this.writes.add(write);
    try {
      await write;
    } catch (error) {
      if (error instanceof AcceptedError && error.code === 'LEASE_LOST') {
        this.log.warn({ err: error }, 'outcome discarded: the lease was lost');
      } else {
        this.logFailure(error, 'could not record an outcome; the lease will expire');
      }
    } finally {
      this.writes.delete(write);
    }
  }

  /**
   * A failed store call of the worker's own loops: a warning while the store is away (it is
   * retried on the next round, and /readyz says so), an error otherwise.
   */
  private logFailure(error: unknown, message: string): void {
    if (error instanceof AcceptedError && error.retryable) this.log.warn({ err: error }, message);
    else this.log.error({ err: error }, message);
  }

  // ---- leases -------------------------------------------------------------------------------

  private async heartbeat(): Promise<void> {
    const held = [...this.running.values()].filter((r) => !r.settled);
    if (held.length === 0) return;
    try {
      const states = await this.store.renewLeases({
        leases: held.map((r) => r.lease),
        leaseMs: this.options.leaseMs,
        now: Date.now(),
      });
      for (const state of states) {
        const running = this.running.get(state.token);
        if (!running || running.settled) continue;
        if (state.state === 'lost') {
          running.settled = true;
          this.abort(running, 'lease_lost', 'The lease on this operation was lost.');
        } else if (state.state === 'cancel_requested') {
          this.abort(running, 'cancel', 'The operation was canceled.');
        }
      }
    } catch (error) {
      this.logFailure(error, 'lease renewal failed');
    }
  }

  private async recoverLeases(): Promise<void> {
    try {
      while ((await this.store.recoverExpiredLeases(Date.now(), 500)) === 500) {
        // keep going: more expired leases than one batch
      }
    } catch (error) {
      this.logFailure(error, 'lease recovery failed');
    }
  }

  // ---- shutdown -----------------------------------------------------------------------------

  /**
   * Stops claiming; lets running handlers finish within `graceMs` (0 = none); then aborts the
   * rest and gives their operations back to the queue so nothing waits for lease expiry.
   */
  async stop(graceMs: number): Promise<void> {
    if (!this.started || this.stopping) return;
    this.stopping = true;
    this.unsubscribe?.();
    if (this.nextRunTimer) clearTimeout(this.nextRunTimer);
    const allDone = () => Promise.all([...this.executing].map((r) => r.done));
    const heartbeat = setInterval(() => void this.heartbeat(), this.options.heartbeatMs);
    try {
      await this.claimInFlight;
      if (graceMs > 0 && this.executing.size > 0) await withTimeout(allDone(), graceMs);
      for (const running of this.executing) {
        this.abort(running, 'shutdown', 'The server is shutting down.');
      }
      if (this.executing.size > 0) await withTimeout(allDone(), 1000);
      // Handlers that ignore their signal: give their operations back now.
      const now = Date.now();
      for (const running of this.executing) {
        if (running.settled) continue;
        running.settled = true;
        void this.record(this.store.release(running.lease, SHUTDOWN_ERROR, now));
      }
      await Promise.allSettled([...this.writes]);
    } finally {
      clearInterval(heartbeat);
      for (const timer of this.timers) clearInterval(timer);
      this.timers = [];
    }
  }
}

async function withTimeout(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    promise,
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}
