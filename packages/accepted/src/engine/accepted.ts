import { AcceptedError, operationNotFound as notFound } from '../domain/errors.ts';
import {
  EVENT_TYPES,
  TERMINAL_EVENT_TYPES,
  type EventFilter,
  type EventType,
  type OperationEvent,
} from '../domain/events.ts';
import { isOperationId, newOperationId } from '../domain/ids.ts';
import { ConfigError } from '../domain/options.ts';
import {
  isTerminal,
  type Json,
  type NewOperation,
  type Operation,
  type OperationStatus,
} from '../domain/operation.ts';
import type { EventQuery, OperationSnapshot, Page, Store } from '../store/store.ts';
import type { AnyOperationDefinition, Backoff, Logger, OperationDefinition } from './definition.ts';
import { EventFeed } from './feed.ts';
import { assertIdempotencyKey, requestFingerprint } from './idempotency.ts';
import { checkRunAt, SubmitValidator } from './submit.ts';
import { TYPE_PATTERN, type SubmitRequest } from '../wire/submit.ts';
import { Worker } from './worker.ts';

export const DEFAULT_TENANT = 'default';

export type { OperationSnapshot } from '../store/store.ts';

const TYPE_NAME = new RegExp(TYPE_PATTERN);

/** The events that can end a wait for an operation's end: its end, or its deletion. */
const WAIT_ENDS: ReadonlySet<EventType> = new Set([...TERMINAL_EVENT_TYPES, 'operation.deleted']);

/** Everything `createAccepted` takes. Validated once, then frozen. */
export interface AcceptedOptions {
  /** Where operations and events live (`sqliteStore(...)`, later `postgresStore(...)`). */
  store: Store;
  /** The operation types this instance accepts (and runs, when it is a worker). */
  operations: readonly AnyOperationDefinition[];
  /** Handlers run at once. Default 32. */
  concurrency?: number;
  /** Run handlers in this instance. Default true; false makes an API-only node. */
  worker?: boolean;
  /** Lease length; a worker that stops renewing loses its operations after this. Default 30 s. */
  leaseMs?: number;
  /** Lease renewal period. Default leaseMs / 3. */
  heartbeatMs?: number;
  /** Safety poll for work and events, in case a wake-up hint is lost. Default 1000 ms. */
  pollIntervalMs?: number;
  /** How often expired leases are looked for. Default 5000 ms. */
  leaseRecoveryIntervalMs?: number;
  /** Attempts when neither the submit nor the type says. Default 3. */
  maxAttempts?: number;
  /** Backoff between attempts when the type does not say. Default exponential from 1 s, x2, ±50% jitter, at most 1 h. */
  backoff?: Backoff;
  /** How long finished operations are kept. Default 7 days. */
  retentionMs?: number;
  /** How long an idempotency key is remembered. Default 24 hours. */
  idempotencyRetentionMs?: number;
  /** How often finished operations past retention are removed. Default 1 hour. */
  retentionIntervalMs?: number;
  /** Largest input accepted, as JSON bytes. Default 1 MiB. */
  maxInputBytes?: number;
  /** Largest result stored, as JSON bytes. Default 1 MiB. */
  maxResultBytes?: number;
  /** At stop, how long running handlers may take before they are aborted. Default 10 s. */
  shutdownGraceMs?: number;
  /** Structured logger (pino-compatible). Default: warnings and errors to the console. */
  logger?: Logger;
}

export interface SubmitOptions {
  /** Do not start before this time. */
  runAt?: Date | number | string;
  maxAttempts?: number;
  timeoutMs?: number;
  labels?: Record<string, string>;
  callbackUrl?: string;
  /** The tenant that owns the operation. Default `default`. */
  tenant?: string;
  traceparent?: string;
  /**
   * Submit at most once per key (per tenant, for `idempotencyRetentionMs`): the same key with
   * the same request returns the first operation; with another request it is refused
   * (IDEMPOTENCY_KEY_REUSED).
   */
  idempotencyKey?: string;
}

export interface Scope {
  tenant?: string;
}

/** For cancel, retry and delete: change only if the operation is at one of these versions. */
export interface Conditional extends Scope {
  ifVersion?: readonly number[];
}

export interface IdempotentSubmitOptions extends Scope {
  traceparent?: string;
  key: string;
  /**
   * How long the caller may hold the request before it answers (a `Prefer: wait`): until then
   * (or until `settleIdempotencyKey`), a repeat of the request is IDEMPOTENCY_KEY_IN_FLIGHT.
   * 0 when the answer is given at once.
   */
  holdMs?: number;
}

export type IdempotentSubmit =
  | { replayed: false; operation: Operation }
  /** The first request's operation (as it is now) and the status its answer had. */
  | { replayed: true; operation: Operation; status: number };

export interface ListOptions extends Scope {
  status?: OperationStatus | readonly OperationStatus[];
  type?: string;
  labels?: Record<string, string>;
  /** Page size, 1..500. Default 50. */
  limit?: number;
  cursor?: string;
}

/** Which events to read; every member that is set must match. */
export interface EventSelection extends Scope {
  /** Start after this seq. Default 0 (the whole retained log). */
  after?: number;
  operationId?: string;
  /** Only events of these operations (at most 100). */
  operationIds?: readonly string[];
  types?: readonly EventType[];
  operationTypes?: readonly string[];
  /** Only events of operations that have every one of these labels. */
  labels?: Readonly<Record<string, string>>;
}

export interface EventsOptions extends EventSelection {
  /** Keep waiting for new events (default true); false ends when the log is read. */
  follow?: boolean;
  signal?: AbortSignal;
}

export interface EventPageOptions extends EventSelection {
  /** Most events returned, 1..1000. Default 100. */
  limit?: number;
}

export interface WaitOptions extends Scope {
  /** Return as soon as the version is greater than this; default: wait until terminal. */
  afterVersion?: number;
  /** Give up after this long and return the current state. Default: no limit. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface StopOptions {
  /** Let running handlers finish (up to `timeoutMs`). Default true. */
  graceful?: boolean;
  /** Default: the `shutdownGraceMs` option. */
  timeoutMs?: number;
  /**
   * Runs once submits are refused and handlers have drained, before the store closes: what
   * else must still write to the store finishes here (webhook attempts in flight).
   */
  beforeClose?: () => Promise<void>;
}

/** The library's face: submit and observe operations, and run their handlers. */
export interface Accepted {
  readonly store: Store;
  /** The registered operation types. */
  readonly definitions: ReadonlyMap<string, OperationDefinition<never, unknown>>;
  start(): Promise<void>;
  stop(options?: StopOptions): Promise<void>;
  /** Resolves when the store answers. */
  ready(): Promise<void>;
  submit(type: string, input?: Json, options?: SubmitOptions): Promise<Operation>;
  /** Validates an untrusted submit body (the HTTP API's) and creates the operation. */
  submitRequest(body: unknown, scope?: Scope & { traceparent?: string }): Promise<Operation>;
  /** `submitRequest` at most once per idempotency key; see `SubmitOptions.idempotencyKey`. */
  submitIdempotent(body: unknown, options: IdempotentSubmitOptions): Promise<IdempotentSubmit>;
  /** Records the status of the answer to a held idempotent request (see `holdMs`). */
  settleIdempotencyKey(key: string, status: number, scope?: Scope): Promise<void>;
  get(id: string, scope?: Scope): Promise<Operation | null>;
  /**
   * The operation and the seq of the last event its state reflects, read together (and, in
   * the SQLite store, only once that state is durable), or null as `get`. A reader that shows
   * the operation and then follows the log after `seq` neither repeats a change the operation
   * already shows nor misses a later one: the snapshot of a stream, the ETag of a monitor.
   */
  snapshot(id: string, scope?: Scope): Promise<OperationSnapshot | null>;
  list(options?: ListOptions): Promise<Page<Operation>>;
  cancel(id: string, scope?: Conditional): Promise<Operation>;
  retry(id: string, scope?: Conditional & { runAt?: Date | number }): Promise<Operation>;
  delete(id: string, scope?: Conditional): Promise<void>;
  /** The log, in order, following new events unless `follow: false`. */
  events(options?: EventsOptions): AsyncIterableIterator<OperationEvent>;
  /** One page of the log after `after`, in order. */
  readEvents(options?: EventPageOptions): Promise<OperationEvent[]>;
  /** The highest seq in the log that readers may see. */
  lastSeq(): Promise<number>;
  /**
   * Calls `listener` with every event committed from now on, of every tenant, in seq order, as
   * this node's one feed reads them (each event is read once, whatever the number of
   * listeners). Live only: a listener that must not miss events reads the log from its cursor
   * (`readEvents`) and uses this to learn of new ones. Returns the function that stops it.
   */
  tail(listener: (event: OperationEvent) => void): () => void;
  /** The highest seq the feed has handed to `tail` listeners. */
  readonly tailPosition: number;
  /** How many `wait()` calls (long polls, `Prefer: wait` submits among them) are pending. */
  readonly waiting: number;
  /**
   * Waits for a change (or for the end) of one operation; once the instance begins to stop it
   * answers at once with the current state. The state it returns is the one `snapshot` reads
   * (durable). Pending waits hang nothing on a shared signal: any number may wait at once.
   */
  wait(id: string, options?: WaitOptions): Promise<Operation>;
}

const consoleLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: (obj, msg) => console.warn('[accepted]', msg ?? '', obj),
  error: (obj, msg) => console.error('[accepted]', msg ?? '', obj),
};

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new ConfigError(name, `Option ${name} must be a whole number >= 0 (got ${String(v)}).`);
  }
  return v;
}

function toEpoch(value: Date | number | string): number {
  return checkRunAt(
    value instanceof Date ? value.getTime() : typeof value === 'number' ? value : Date.parse(value),
  );
}

/** The callbacks of every pending reader of one signal, and the one listener they share. */
interface AbortFanout {
  callbacks: Set<() => void>;
  listener: () => void;
}
const abortFanouts = new WeakMap<AbortSignal, AbortFanout>();

/**
 * Calls `callback` when `signal` aborts, and returns the function that forgets it. However many
 * readers (waits, event iterators) share one signal, it carries one `abort` listener, removed
 * when the last of them is done: a signal given to a thousand waits neither collects a thousand
 * listeners (Node warns past 10) nor pays a linear scan per add and remove.
 */
function onAbort(signal: AbortSignal | undefined, callback: () => void): () => void {
  if (!signal || signal.aborted) return () => undefined;
  let fanout = abortFanouts.get(signal);
  if (!fanout) {
    const callbacks = new Set<() => void>();
    const listener = () => {
      abortFanouts.delete(signal);
      for (const call of [...callbacks]) call();
    };
    fanout = { callbacks, listener };
    abortFanouts.set(signal, fanout);
    signal.addEventListener('abort', listener, { once: true });
  }
  const { callbacks, listener } = fanout;
  callbacks.add(callback);
  return () => {
    if (!callbacks.delete(callback) || callbacks.size > 0) return;
    if (abortFanouts.get(signal)?.callbacks === callbacks) abortFanouts.delete(signal);
    signal.removeEventListener('abort', listener);
  };
}

/** Resolves at the next `pending.wake()`, or at `deadline` (epoch ms; Infinity for never). */
function park(pending: { wake: (() => void) | null }, deadline: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const remaining = deadline - Date.now();
    const timer = remaining === Infinity ? undefined : setTimeout(wake, remaining);
    function wake() {
      clearTimeout(timer);
      pending.wake = null;
      resolve();
    }
    pending.wake = wake;
  });
}

/**
 * The defaults of `createAccepted`'s options, stated once: `accepted serve` and its usage text
 * read them from here.
 */
export const ENGINE_DEFAULTS = Object.freeze({
  concurrency: 32,
  leaseMs: 30_000,
  pollIntervalMs: 1000,
  leaseRecoveryIntervalMs: 5000,
  maxAttempts: 3,
  retentionMs: 7 * 24 * 3600 * 1000,
  idempotencyRetentionMs: 24 * 3600 * 1000,
  retentionIntervalMs: 3600 * 1000,
  maxInputBytes: 1024 * 1024,
  maxResultBytes: 1024 * 1024,
  shutdownGraceMs: 10_000,
});

/** Builds an Accepted instance. Nothing runs until `start()`. */
export function createAccepted(options: AcceptedOptions): Accepted {
  const store = options.store;
  const log = options.logger ?? consoleLogger;
  const definitions = new Map<string, OperationDefinition<never, unknown>>();
  for (const definition of options.operations) {
    if (definitions.has(definition.type)) {
      throw new ConfigError('operations', `Operation type ${definition.type} is defined twice.`);
    }
    if (!TYPE_NAME.test(definition.type)) {
      throw new ConfigError(
        'operations',
        `Operation type "${definition.type}" is not a valid name.`,
        'Start with a letter; use letters, digits and . _ : / - (at most 128 characters).',
      );
    }
    definitions.set(definition.type, definition as OperationDefinition<never, unknown>);
  }
  const leaseMs = positiveInt('leaseMs', options.leaseMs, ENGINE_DEFAULTS.leaseMs);
  const settings = Object.freeze({
    concurrency: Math.max(
      1,
      positiveInt('concurrency', options.concurrency, ENGINE_DEFAULTS.concurrency),
    ),
    worker: options.worker ?? true,
    leaseMs,
    heartbeatMs: Math.max(
      1,
      positiveInt('heartbeatMs', options.heartbeatMs, Math.floor(leaseMs / 3)),
    ),
    pollIntervalMs: Math.max(
      10,
      positiveInt('pollIntervalMs', options.pollIntervalMs, ENGINE_DEFAULTS.pollIntervalMs),
    ),
    leaseRecoveryIntervalMs: Math.max(
      10,
      positiveInt(
        'leaseRecoveryIntervalMs',
        options.leaseRecoveryIntervalMs,
        ENGINE_DEFAULTS.leaseRecoveryIntervalMs,
      ),
    ),
    maxAttempts: Math.max(
      1,
      positiveInt('maxAttempts', options.maxAttempts, ENGINE_DEFAULTS.maxAttempts),
    ),
    backoff: options.backoff,
    retentionMs: positiveInt('retentionMs', options.retentionMs, ENGINE_DEFAULTS.retentionMs),
    idempotencyRetentionMs: positiveInt(
      'idempotencyRetentionMs',
      options.idempotencyRetentionMs,
      ENGINE_DEFAULTS.idempotencyRetentionMs,
    ),
    retentionIntervalMs: Math.max(
      1000,
      positiveInt(
        'retentionIntervalMs',
        options.retentionIntervalMs,
        ENGINE_DEFAULTS.retentionIntervalMs,
      ),
    ),
    maxInputBytes: positiveInt(
      'maxInputBytes',
      options.maxInputBytes,
      ENGINE_DEFAULTS.maxInputBytes,
    ),
    maxResultBytes: positiveInt(
      'maxResultBytes',
      options.maxResultBytes,
      ENGINE_DEFAULTS.maxResultBytes,
    ),
    shutdownGraceMs: positiveInt(
      'shutdownGraceMs',
      options.shutdownGraceMs,
      ENGINE_DEFAULTS.shutdownGraceMs,
    ),
  });
  const validator = new SubmitValidator(definitions, settings.maxInputBytes);
  const feed = new EventFeed(store, settings.pollIntervalMs, log);
  const worker = settings.worker ? new Worker(store, definitions, { ...settings }, log) : null;
  let state: 'new' | 'starting' | 'started' | 'stopping' | 'stopped' = 'new';
  let retentionTimer: NodeJS.Timeout | null = null;
  /**
   * The wake-up of every pending wait: stop() calls them, and they answer with the current
   * state at once. A set, not listeners on one shared signal (see `onAbort`).
   */
  const waiters = new Set<() => void>();

  function assertRunning(): void {
    if (state === 'started') return;
    if (state === 'stopping' || state === 'stopped') {
      throw new AcceptedError('SHUTTING_DOWN', 'This instance is shutting down.', {
        fix: 'Send the request to another instance or retry after the restart.',
      });
    }
    throw new AcceptedError('NOT_STARTED', 'Call start() before using this instance.');
  }

  /** Reads stay open while running handlers drain at stop; writes do not. */
  function assertReadable(): void {
    if (state === 'stopping') return;
    assertRunning();
  }

  function tenantOf(scope: Scope | undefined): string {
    return scope?.tenant ?? DEFAULT_TENANT;
  }

  async function purgeExpired(): Promise<void> {
    // In batches of 1000, yielding between them, so that cleanup never holds the store long.
    const inBatches = async (purge: (limit: number) => Promise<number>) => {
      while ((await purge(1000)) === 1000) await new Promise((resolve) => setImmediate(resolve));
    };
    try {
      const before = Date.now() - settings.retentionMs;
      await inBatches((limit) => store.purge(before, limit));
      await inBatches((limit) => store.purgeIdempotencyKeys(Date.now(), limit));
    } catch (error) {
      log.error({ err: error }, 'retention cleanup failed');
    }
  }

  function newOperation(
    request: SubmitRequest,
    tenant: string,
    now: number,
    traceparent?: string,
  ): NewOperation {
    const definition = definitions.get(request.type);
    const runAt = request.runAt === undefined ? now : toEpoch(request.runAt);
    return {
      id: newOperationId(),
      tenant,
      type: request.type,
      input: request.input ?? null,
      maxAttempts: request.maxAttempts ?? definition?.maxAttempts ?? settings.maxAttempts,
      runAt,
      timeoutMs: request.timeoutMs ?? definition?.timeoutMs ?? null,
      labels: request.labels ?? {},
      callbackUrl: request.callbackUrl ?? null,
      traceparent: traceparent ?? null,
    };
  }

  async function create(request: SubmitRequest, tenant: string, traceparent?: string) {
    assertRunning();
    const now = Date.now();
    return store.create(newOperation(request, tenant, now, traceparent), now);
  }

  async function createIdempotent(
    body: unknown,
    options: IdempotentSubmitOptions,
  ): Promise<IdempotentSubmit> {
    assertRunning();
    assertIdempotencyKey(options.key);
    const request = validator.validate(body);
    const now = Date.now();
    const tenant = tenantOf(options);
    const holdMs = options.holdMs ?? 0;
    const result = await store.createOnce(
      newOperation(request, tenant, now, options.traceparent),
      {
        key: options.key,
        fingerprint: requestFingerprint(body),
        expiresAt: now + settings.idempotencyRetentionMs,
        status: holdMs > 0 ? null : 202,
        // A margin past the hold, so that a slow answer is not mistaken for a dead one.
        holdUntil: holdMs > 0 ? now + holdMs + 5_000 : null,
      },
      now,
    );
    switch (result.outcome) {
      case 'created':
        return { replayed: false, operation: result.operation };
      case 'replayed':
        return { replayed: true, operation: result.operation, status: result.status };
      case 'mismatch':
        throw new AcceptedError(
          'IDEMPOTENCY_KEY_REUSED',
          'This Idempotency-Key was already used with a different request.',
          {
            details: { operationId: result.operationId },
            fix: 'Use a new key for a new request; resend the original request unchanged to get its answer.',
          },
        );
      case 'in_flight':
        throw new AcceptedError(
          'IDEMPOTENCY_KEY_IN_FLIGHT',
          'The first request with this Idempotency-Key is still being answered.',
          {
            details: {
              operationId: result.operationId,
              retryAfter: Math.max(1, Math.ceil((result.holdUntil - Date.now()) / 1000)),
            },
            fix: 'Retry after the time given in Retry-After, or poll the operation.',
          },
        );
    }
  }

  async function get(id: string, scope?: Scope): Promise<Operation | null> {
    assertReadable();
    if (!isOperationId(id)) return null;
    return store.get(id, tenantOf(scope));
  }

  async function snapshot(id: string, scope?: Scope): Promise<OperationSnapshot | null> {
    assertReadable();
    if (!isOperationId(id)) return null;
    return store.snapshot(id, tenantOf(scope));
  }

  /**
   * Reads of one operation shared by its waiters: many waits on one operation (a thousand
   * clients long-polling it) make one read a wake-up, not one each. A waiter never takes a
   * read that began before it asked (it could miss the change that woke it): while a read is
   * in flight, later askers share the next one, which starts when that one ends.
   */
  const sharedReads = new Map<
    string,
    { inFlight: Promise<OperationSnapshot | null>; next: Promise<OperationSnapshot | null> | null }
  >();
  function readForWaiters(id: string, tenant: string): Promise<OperationSnapshot | null> {
    const key = `${tenant}\u0000${id}`;
    const entry = sharedReads.get(key);
    const read = (): Promise<OperationSnapshot | null> => {
      const promise = store.snapshot(id, tenant).finally(() => {
        const current = sharedReads.get(key);
        if (current?.inFlight === promise && current.next === null) sharedReads.delete(key);
      });
      return promise;
    };
    if (!entry) {
      const inFlight = read();
      sharedReads.set(key, { inFlight, next: null });
      return inFlight;
    }
    if (entry.next === null) {
      const next = entry.inFlight
        .catch(() => undefined)
        .then(() => {
          const inFlight = read();
          sharedReads.set(key, { inFlight, next: null });
          return inFlight;
        });
      entry.next = next;
    }
    return entry.next;
  }

  async function wait(id: string, waitOptions: WaitOptions = {}): Promise<Operation> {
    assertReadable();
    const tenant = tenantOf(waitOptions);
    const { afterVersion, signal } = waitOptions;
    // Woken by an event of the operation (the feed indexes waits by operation id), by the
    // caller's signal, or by stop(). `dirty`: something happened since the last read. A wait
    // for the end is woken by an end (or the deletion) only: a start, a retry or progress
    // would cost a read each and end nothing.
    const pending = { wake: null as (() => void) | null, dirty: false };
    const poke = () => {
      pending.dirty = true;
      pending.wake?.();
    };
    const unsubscribe = feed.subscribe(
      {
        tenant,
        operationIds: new Set([id]),
        ...(afterVersion === undefined ? { types: WAIT_ENDS } : {}),
      },
      poke,
    );
    const forgetAbort = onAbort(signal, poke);
    waiters.add(poke);
    const deadline =
      waitOptions.timeoutMs === undefined ? Infinity : Date.now() + waitOptions.timeoutMs;
    // Read through calls: a poke may come while a read is in flight (defeats stale narrowing).
    const changedMeanwhile = () => pending.dirty;
    // Once stop() has begun, a wait answers with the current state at once.
    const ended = () => signal?.aborted === true || state === 'stopping' || state === 'stopped';
    /** Reads the operation: it when the wait is over, else null (nothing kept meanwhile). */
    const check = async (): Promise<Operation | null> => {
      pending.dirty = false;
      assertReadable();
      const current = isOperationId(id) ? await readForWaiters(id, tenant) : null;
      if (!current) throw notFound(id);
      // Shared with the other waiters of this read: each gets its own copy.
      const operation = { ...current.operation };
      const done =
        isTerminal(operation.status) ||
        (afterVersion !== undefined && operation.version > afterVersion);
      return done || deadline <= Date.now() || ended() ? operation : null;
    };
    try {
      for (;;) {
        const over = await check();
        if (over) return over;
        if (changedMeanwhile()) continue;
        await park(pending, deadline);
      }
    } finally {
      unsubscribe();
      forgetAbort();
      waiters.delete(poke);
    }
  }

  /** Validates a selection once and turns it into a store query and a live filter. */
  function selection(opts: EventSelection): {
    query: Omit<EventQuery, 'limit'>;
    filter: EventFilter;
  } {
    const tenant = tenantOf(opts);
    for (const type of opts.types ?? []) {
      if (!EVENT_TYPES.includes(type)) {
        throw new AcceptedError('VALIDATION_FAILED', `Unknown event type ${type}.`, {
          fields: [{ field: '/types', message: `must be one of ${EVENT_TYPES.join(', ')}` }],
        });
      }
    }
    const after = opts.after ?? 0;
    if (!Number.isSafeInteger(after) || after < 0) {
      throw new AcceptedError('VALIDATION_FAILED', 'after must be a whole number >= 0.', {
        fields: [{ field: '/after', message: 'must be a whole number >= 0' }],
      });
    }
    const ids =
      opts.operationId === undefined
        ? opts.operationIds
        : [opts.operationId, ...(opts.operationIds ?? [])];
    const labels = opts.labels && Object.keys(opts.labels).length > 0 ? opts.labels : undefined;
    const nonEmpty = <T>(values: readonly T[] | undefined) =>
      values && values.length > 0 ? values : undefined;
    const query = {
      after,
      tenant,
      operationIds: nonEmpty(ids),
      types: nonEmpty(opts.types),
      operationTypes: nonEmpty(opts.operationTypes),
      labels,
    };
    const asSet = <T>(values: readonly T[] | undefined) => (values ? new Set(values) : undefined);
    return {
      query,
      filter: {
        tenant,
        operationIds: asSet(query.operationIds),
        types: asSet(query.types),
        operationTypes: asSet(query.operationTypes),
        labels,
      },
    };
  }

  async function* events(opts: EventsOptions = {}): AsyncGenerator<OperationEvent> {
    assertReadable();
    const follow = opts.follow ?? true;
    const { query, filter } = selection(opts);
    let cursor = query.after;
    const limit = 500;
    const queue: OperationEvent[] = [];
    const maxQueued = 10_000;
    const state = { overflowed: false };
    let wake: (() => void) | null = null;
    const unsubscribe = follow
      ? feed.subscribe(filter, (event) => {
          if (queue.length >= maxQueued) {
            // A slow reader: drop the buffer and catch up from the log instead.
            state.overflowed = true;
            queue.length = 0;
          } else {
            queue.push(event);
          }
          wake?.();
        })
      : () => false;
    const forgetAbort = onAbort(opts.signal, () => wake?.());
    try {
      let fromLog = true;
      while (!opts.signal?.aborted) {
        if (fromLog) {
          const batch = await store.readEvents({ ...query, after: cursor, limit });
          for (const event of batch) {
            cursor = event.seq;
            yield event;
          }
          if (batch.length === limit) continue;
          if (!follow) return;
          fromLog = false;
        }
        if (state.overflowed) {
          state.overflowed = false;
          fromLog = true;
          continue;
        }
        const event = queue.shift();
        if (event) {
          if (event.seq <= cursor) continue;
          cursor = event.seq;
          yield event;
          continue;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = null;
      }
    } finally {
      unsubscribe();
      forgetAbort();
    }
  }

  const accepted: Accepted = {
    store,
    definitions,

    async start() {
      if (state === 'stopping' || state === 'stopped') {
        throw new AcceptedError('SHUTTING_DOWN', 'A stopped instance cannot start again.', {
          fix: 'Create a new instance with createAccepted().',
        });
      }
      if (state !== 'new') return;
      state = 'starting';
      await store.open();
      await feed.start();
      state = 'started';
      if (worker) await worker.start();
      void purgeExpired();
      retentionTimer = setInterval(() => void purgeExpired(), settings.retentionIntervalMs);
      retentionTimer.unref();
    },

    async stop(stopOptions: StopOptions = {}) {
      if (state !== 'started') return;
      state = 'stopping';
      for (const wake of [...waiters]) wake();
      if (retentionTimer) clearInterval(retentionTimer);
      const grace =
        stopOptions.graceful === false ? 0 : (stopOptions.timeoutMs ?? settings.shutdownGraceMs);
      await worker?.stop(grace);
      try {
        await stopOptions.beforeClose?.();
      } finally {
        feed.stop();
        await store.close();
      }
      state = 'stopped';
    },

    async ready() {
      assertRunning();
      await store.ping();
    },

    async submit(type, input = null, submitOptions = {}) {
      const { tenant, traceparent, runAt, idempotencyKey, ...fields } = submitOptions;
      const body: Record<string, unknown> = { type, input, ...fields };
      if (runAt !== undefined) body.runAt = new Date(toEpoch(runAt)).toISOString();
      if (idempotencyKey !== undefined) {
        const result = await createIdempotent(body, { tenant, traceparent, key: idempotencyKey });
        return result.operation;
      }
      return create(validator.validate(body), tenant ?? DEFAULT_TENANT, traceparent);
    },

    async submitRequest(body, scope) {
      return create(validator.validate(body), tenantOf(scope), scope?.traceparent);
    },

    submitIdempotent: createIdempotent,

    async settleIdempotencyKey(key, status, scope) {
      assertReadable();
      await store.settleIdempotencyKey(tenantOf(scope), key, status);
    },

    get,

    snapshot,

    async list(listOptions: ListOptions = {}) {
      assertReadable();
      const limit = listOptions.limit ?? 50;
      if (!Number.isSafeInteger(limit) || limit < 1 || limit > 500) {
        throw new AcceptedError(
          'VALIDATION_FAILED',
          'limit must be a whole number from 1 to 500.',
          {
            fields: [{ field: '/limit', message: 'must be from 1 to 500' }],
          },
        );
      }
      const status =
        listOptions.status === undefined
          ? undefined
          : typeof listOptions.status === 'string'
            ? [listOptions.status]
            : listOptions.status;
      return store.list({
        tenant: tenantOf(listOptions),
        status,
        type: listOptions.type,
        labels: listOptions.labels,
        limit,
        cursor: listOptions.cursor,
      });
    },

    async cancel(id, scope) {
      assertRunning();
      if (!isOperationId(id)) throw notFound(id);
      const operation = await store.cancel(
        id,
        tenantOf(scope),
        { code: 'CANCELED', message: 'Canceled on request.' },
        Date.now(),
        scope?.ifVersion,
      );
      if (operation.status === 'running') worker?.cancelLocal(id);
      return operation;
    },

    async retry(id, scope) {
      assertRunning();
      if (!isOperationId(id)) throw notFound(id);
      const now = Date.now();
      return store.retry(
        id,
        tenantOf(scope),
        scope?.runAt === undefined ? now : toEpoch(scope.runAt),
        now,
        scope?.ifVersion,
      );
    },

    async delete(id, scope) {
      assertRunning();
      if (!isOperationId(id)) throw notFound(id);
      await store.delete(id, tenantOf(scope), Date.now(), scope?.ifVersion);
    },

    events,

    async readEvents(pageOptions = {}) {
      assertReadable();
      const limit = pageOptions.limit ?? 100;
      if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000) {
        throw new AcceptedError(
          'VALIDATION_FAILED',
          'limit must be a whole number from 1 to 1000.',
          {
            fields: [{ field: '/limit', message: 'must be from 1 to 1000' }],
          },
        );
      }
      return store.readEvents({ ...selection(pageOptions).query, limit });
    },

    async lastSeq() {
      assertReadable();
      return store.lastSeq();
    },

    tail(listener) {
      return feed.subscribe({}, listener);
    },

    get tailPosition() {
      return feed.position;
    },

    get waiting() {
      return waiters.size;
    },

    wait,
  };
  return accepted;
}
