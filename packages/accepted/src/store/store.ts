import type { EndpointDisabledReason, EventType, OperationEvent } from '../domain/events.ts';
import type { ConsumerLease, ConsumerRef, ConsumerStore } from './consumers.ts';
import type {
  Attempt,
  Delivery,
  DeliveryStatus,
  Endpoint,
  EndpointPatch,
  NewEndpoint,
  SecretEntry,
} from '../domain/webhooks.ts';
import type {
  Json,
  NewOperation,
  Operation,
  OperationError,
  OperationStatus,
  Progress,
} from '../domain/operation.ts';

/**
 * The one interface every store adapter implements, in domain terms. No SQL, connection or
 * transaction type crosses it. Every method is asynchronous, whatever the adapter, so that a
 * networked store (PostgreSQL) fits behind it unchanged.
 *
 * Contract shared by every adapter (checked by the conformance suite in `conformance.ts`):
 * - A method's promise resolves only once its change is durable (committed and flushed).
 * - Every state change bumps the operation's `version` and appends exactly one event, in the
 *   same transaction. The event log is the outbox: channels read it, never memory.
 * - `readEvents` returns events in ascending `seq`, and never returns an event with seq S
 *   while an event with a smaller seq could still become visible (no gaps behind a cursor).
 * - Domain failures reject with `AcceptedError` (stable codes) and change nothing.
 * - Adapters may group many calls into one transaction (group commit); callers never see it.
 *
 * What the engine needs is this interface alone (the operations store). What edges need
 * besides are capabilities an adapter may offer, each with its own interface and its own part
 * of the conformance suite: `webhooks` (endpoints and deliveries) and `consumers` (the relay
 * cursor). Both built-in adapters offer both.
 */
export interface Store {
  /** Human-readable name of the adapter (`sqlite`, `postgres`). */
  readonly kind: string;
  /** Webhook endpoints and deliveries, in the same database (required by `createWebhooks`). */
  readonly webhooks?: WebhookStore;
  /** Named consumers of the log with a leased, committed position (the relay cursor). */
  readonly consumers?: ConsumerStore;

  /** Prepare the store (migrations, locks). Called once before any other method. */
  open(): Promise<void>;
  /** Flush pending writes and release every resource. */
  close(): Promise<void>;
  /** Resolves when the store answers a trivial query (readiness). */
  ping(): Promise<void>;

  /** Creates a queued operation and its `operation.queued` event. */
  create(op: NewOperation, now: number): Promise<Operation>;
  /**
   * Creates the operation unless the tenant already used `claim.key` (and it has not expired):
   * then nothing is written and the result says what the first request did. Check and insert
   * are one atomic step, so concurrent requests with one key create one operation.
   */
  createOnce(op: NewOperation, claim: IdempotencyClaim, now: number): Promise<CreateOnceResult>;
  /** Records the status a key's original response had, once a held request has answered. */
  settleIdempotencyKey(tenant: string, key: string, status: number): Promise<void>;
  /** Forgets keys that expired before `now`. Returns how many. */
  purgeIdempotencyKeys(now: number, limit: number): Promise<number>;
  /** One operation, or null. With `tenant`, an operation of another tenant is null too. */
  get(id: string, tenant?: string): Promise<Operation | null>;
  /**
   * One operation and the seq of the last event its state reflects, read in one snapshot of
   * the store, or null (as `get`). A stream that starts after `seq` neither repeats a change
   * the operation shows nor misses a later one. Only durable state is shown.
   */
  snapshot(id: string, tenant?: string): Promise<OperationSnapshot | null>;
  /** Newest first, by opaque cursor. */
  list(query: ListQuery): Promise<Page<Operation>>;

  /**
   * Leases up to `limit` queued operations whose `runAt` has come, oldest `runAt` first: each
   * becomes `running` with `attempts + 1` and an `operation.started` event. No operation is
   * ever leased to two claimants at once.
   */
  claim(request: ClaimRequest): Promise<ClaimResult>;
  /**
   * The earliest `runAt` among queued operations of these types (null: of any type), or null
   * when none is queued. A read, never a write: safety polls use it, so that an idle store
   * commits nothing.
   */
  nextRunAt(types: readonly string[] | null): Promise<number | null>;
  /**
   * Extends leases still held; says for each (by its token) whether it is held, lost, or asked
   * to cancel. The new expiry counts from when the write runs, not from `now`.
   */
  renewLeases(request: RenewRequest): Promise<LeaseState[]>;
  /** Records progress of a running operation (`operation.progress`). */
  progress(lease: LeaseRef, progress: Progress, now: number): Promise<void>;
  /** running -> succeeded. Rejects with LEASE_LOST if the lease is no longer held. */
  complete(lease: LeaseRef, result: Json, now: number): Promise<void>;
  /**
   * running -> queued (`operation.retrying`, next attempt at `retryAt`) when `retryAt` is a
   * number, else running -> failed; but running -> canceled when a cancel was requested
   * meanwhile (a requeue never forgets it). Rejects with LEASE_LOST if the lease is no longer
   * held.
   */
  fail(lease: LeaseRef, error: OperationError, retryAt: number | null, now: number): Promise<void>;
  /** running -> canceled, honouring a cancel request. */
  finishCanceled(lease: LeaseRef, error: OperationError, now: number): Promise<void>;
  /**
   * running -> queued without counting the attempt (the worker gave the operation back, for
   * example at shutdown), or running -> canceled when a cancel was requested meanwhile.
   * Rejects with LEASE_LOST if the lease is no longer held.
   */
  release(lease: LeaseRef, error: OperationError, now: number): Promise<void>;
  /**
   * Operations whose lease expired go back to queued (or to failed when out of attempts, or to
   * canceled when cancellation was requested). Returns how many were recovered.
   */
  recoverExpiredLeases(now: number, limit: number): Promise<number>;

  /**
   * queued -> canceled at once; running -> cancel requested (`operation.cancel_requested`; the
   * worker aborts its handler and then calls `finishCanceled`). A running operation whose
   * cancellation was already requested is returned unchanged. Terminal: ALREADY_TERMINAL.
   */
  cancel(
    id: string,
    tenant: string | undefined,
    error: OperationError,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<Operation>;
  /** failed or canceled -> queued, with a fresh attempt budget. */
  retry(
    id: string,
    tenant: string | undefined,
    runAt: number,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<Operation>;
  /**
   * Removes a terminal operation, its history and its idempotency keys, leaving one
   * `operation.deleted` event.
   *
   * For cancel, retry and delete: when `ifVersion` is given and the operation's current
   * version is not in it, nothing changes and the call rejects with PRECONDITION_FAILED
   * (checked after OPERATION_NOT_FOUND, before any state rule).
   */
  delete(
    id: string,
    tenant: string | undefined,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<void>;
  /** Removes terminal operations finished before `finishedBefore`, and their events. */
  purge(finishedBefore: number, limit: number): Promise<number>;

  /** Events after `after`, ascending by seq. */
  readEvents(query: EventQuery): Promise<OperationEvent[]>;
  /** The highest seq written so far (0 for an empty log). */
  lastSeq(): Promise<number>;

  /**
   * Wake-up hints: called after writes commit. A hint is never the source of truth: a lost
   * hint only delays a reader, which then finds the change by reading the log.
   */
  subscribe(listener: (hint: StoreHint) => void): () => void;
}

/** An operation as of the event with `seq` (see `Store.snapshot`). */
export interface OperationSnapshot {
  operation: Operation;
  seq: number;
}

/** An idempotency key as `createOnce` records it. */
export interface IdempotencyClaim {
  key: string;
  /** A hash of the request; the same key with another fingerprint is refused. */
  fingerprint: string;
  /** When the key may be forgotten. */
  expiresAt: number;
  /**
   * The original response's status when it is known at once (202), or null while the request
   * is held (a `Prefer: wait`): then `holdUntil` bounds how long it may still answer.
   */
  status: number | null;
  holdUntil: number | null;
}

export type CreateOnceResult =
  | { outcome: 'created'; operation: Operation }
  /** The key was used with the same request: its operation and first response's status. */
  | { outcome: 'replayed'; operation: Operation; status: number }
  /** The key was used with another request. */
  | { outcome: 'mismatch'; operationId: string }
  /** The first request with this key is still being answered (until `holdUntil`). */
  | { outcome: 'in_flight'; operationId: string; holdUntil: number };

/** Identifies a lease: the operation and the token its claimant holds. */
export interface LeaseRef {
  operationId: string;
  token: string;
}

export interface ClaimRequest {
  /** Who claims (a worker id); kept with the lease for inspection. */
  owner: string;
  /** Only these types (the ones the claimant can run); null for any. */
  types: readonly string[] | null;
  limit: number;
  leaseMs: number;
  now: number;
}

export interface ClaimedOperation {
  operation: Operation;
  lease: LeaseRef & { expiresAt: number };
}

export interface ClaimResult {
  claimed: ClaimedOperation[];
  /** Earliest runAt among queued operations not claimed now (for a timer), or null. */
  nextRunAt: number | null;
}

export interface RenewRequest {
  leases: readonly LeaseRef[];
  leaseMs: number;
  now: number;
}

/** What renewing one lease found. Answers are about a lease (its token), not an operation. */
export interface LeaseState {
  operationId: string;
  /** The token of the lease this answer is about: a worker may hold a newer one by now. */
  token: string;
  state: 'held' | 'lost' | 'cancel_requested';
}

export interface ListQuery {
  tenant: string;
  status?: readonly OperationStatus[];
  type?: string;
  labels?: Record<string, string>;
  limit: number;
  cursor?: string;
}

export interface Page<T> {
  items: T[];
  /** Give it back as `cursor` for the next page; null on the last page. */
  nextCursor: string | null;
}

export interface EventQuery {
  after: number;
  limit: number;
  operationId?: string;
  /** Only events of these operations (at most a few hundred). */
  operationIds?: readonly string[];
  tenant?: string;
  types?: readonly EventType[];
  operationTypes?: readonly string[];
  /** Only events of operations that have every one of these labels. */
  labels?: Readonly<Record<string, string>>;
}

export interface StoreHint {
  /** Highest seq committed. */
  lastSeq: number;
  /** True when queued work may have become available (a create, retry or requeue). */
  work: boolean;
  /**
   * The events just committed, in seq order, when the adapter has them at hand (an embedded
   * store does). Readers may use them instead of reading the log, if they are contiguous with
   * the reader's cursor.
   */
  events?: readonly OperationEvent[];
}

/**
 * Webhook endpoints, deliveries and attempts. Deliveries are made from the log by one cursor
 * (`dispatchDeliveries`) and leased when claimed, so that two nodes never send the same
 * attempt at once. For one (target, operation), a delivery is claimed only when no earlier
 * one is pending: a failing delivery holds back later events of its operation to its target,
 * and nothing else.
 */
export interface WebhookStore {
  createEndpoint(endpoint: NewEndpoint, now: number): Promise<Endpoint>;
  getEndpoint(id: string, tenant: string): Promise<Endpoint | null>;
  listEndpoints(query: { tenant: string; limit: number; cursor?: string }): Promise<Page<Endpoint>>;
  /** ENDPOINT_NOT_FOUND; PRECONDITION_FAILED when `ifVersion` does not hold the version. */
  updateEndpoint(
    id: string,
    tenant: string,
    patch: EndpointPatch,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<Endpoint>;
  /** Makes `secret` current; the previous one keeps signing until `previousUntil`. */
  rotateEndpointSecret(
    id: string,
    tenant: string,
    secret: string,
    previousUntil: number,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<Endpoint>;
  /** Removes the endpoint; its pending deliveries fail (`ENDPOINT_DELETED`). */
  deleteEndpoint(
    id: string,
    tenant: string,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<void>;

  /** The tenant's callback secrets (newest first), made with `fresh` on first use. */
  callbackSecrets(tenant: string, fresh: string, now: number): Promise<SecretEntry[]>;
  rotateCallbackSecret(
    tenant: string,
    secret: string,
    previousUntil: number,
    now: number,
  ): Promise<SecretEntry[]>;

  /**
   * Turns up to `limit` events after the position of the consumer whose lease the request
   * names (`request.lease`, the `webhooks` consumer of the same store's `ConsumerStore`) into
   * deliveries, and commits the consumer past them, in one transaction: one delivery per
   * enabled endpoint of the event's tenant that wants it, and one to the operation's
   * callbackUrl when it has one and wants the event type. The lease is checked in that
   * transaction (LEASE_LOST, nothing written, when it is no longer held), so a crash or a
   * take-over never duplicates nor skips a delivery. A batch that made deliveries renews the
   * lease. Returns how many events were read and deliveries made, and the lease as it is now.
   */
  dispatchDeliveries(request: DispatchRequest): Promise<DispatchResult>;
  /**
   * Leases up to `limit` claimable deliveries (see `nextDeliveryAt`) due at `now`, each under
   * a new lease token. An endpoint with a `rateLimit` gets at most that many claims per
   * second of `now` (`floor(now / 1000)`), across every claimant of the store: the rule is
   * the store's, so that it holds across nodes.
   */
  claimDeliveries(request: {
    now: number;
    limit: number;
    leaseMs: number;
  }): Promise<ClaimedDelivery[]>;
  /**
   * Records one attempt and its outcome under its lease (`AttemptOutcome.lease`). A record
   * whose lease is no longer the delivery's (replaced by another claim, or cleared) changes
   * nothing; one for a delivery finished meanwhile (its endpoint deleted) logs the attempt
   * and leaves the delivery finished; one for a delivery replayed while in flight logs the
   * attempt and then makes the delivery due at once with a fresh attempt budget.
   */
  recordAttempt(outcome: AttemptOutcome): Promise<void>;
  /**
   * The earliest time at or after which `claimDeliveries` may lease something: over the
   * deliveries that are pending, first in their (target, operation) line and to a callback or
   * an enabled endpoint, the latest of their next attempt, their lease's end, and their
   * endpoint's next rate window when the current one (at `now`, default the clock) is full.
   * Null when there is none. Deliveries waiting behind another of their line never count: a
   * sender that sleeps until this time never wakes to claim nothing.
   */
  nextDeliveryAt(now?: number): Promise<number | null>;
  getDelivery(id: string, tenant: string): Promise<Delivery | null>;
  /** Newest first. */
  listDeliveries(query: DeliveryQuery): Promise<Page<Delivery>>;
  listAttempts(deliveryId: string, tenant: string): Promise<Attempt[]>;
  /**
   * Sends a delivery again (whatever its status) with a fresh attempt budget. While an attempt
   * is in flight (leased), nothing else may claim it: the replay takes effect when that
   * attempt is recorded (or its lease ends). ENDPOINT_NOT_FOUND when its endpoint was deleted.
   */
  replayDelivery(id: string, tenant: string, now: number): Promise<Delivery>;
  /** Replays every failed delivery to an endpoint made at or after `since`. Returns how many. */
  replayEndpoint(endpointId: string, tenant: string, since: number, now: number): Promise<number>;
  /** Removes finished deliveries (and their attempts) made before `before`. */
  purgeDeliveries(before: number, limit: number): Promise<number>;
}

export interface DispatchRequest {
  /** The lease of the dispatcher's consumer (`ConsumerStore.acquire`). */
  lease: ConsumerRef;
  limit: number;
  now: number;
  /** A new delivery id. */
  newId: () => string;
  /** A new secret, for a tenant's first callback. */
  newSecret: () => string;
  /** The exact body of a delivery of this event. */
  payload: (event: OperationEvent) => string;
}

export interface DispatchResult {
  events: number;
  deliveries: number;
  /** The consumer after the batch: its position, and until when the lease holds. */
  lease: ConsumerLease;
}

export interface ClaimedDelivery {
  delivery: Delivery;
  /** The secrets that sign it now: the endpoint's or the tenant's callback secrets. */
  secrets: string[];
  signingKey: string | null;
  /** The endpoint's own schedule, or null for the server's. */
  retrySchedule: number[] | null;
  rateLimit: number | null;
  /** When the endpoint started failing without a success since, or null. */
  failingSince: number | null;
  /** Until when this claim holds; another claimant gets it after that. */
  leaseUntil: number;
  /** This claim's lease: its record names it (`AttemptOutcome.lease`). */
  leaseToken: string;
  /** The `now` of the claim: the second it counts in for the endpoint's rate limit. */
  claimedAt: number;
}

export interface AttemptOutcome {
  attempt: Attempt;
  /**
   * The lease token of the claim that made the attempt (`ClaimedDelivery.leaseToken`): a
   * record under a lease that is no longer the delivery's changes nothing.
   */
  lease: string;
  /** `delivered`; `retry` at `nextAttemptAt`; or `failed` for good (dead letter). */
  result: 'delivered' | 'retry' | 'failed';
  nextAttemptAt?: number;
  /**
   * Disable the delivery's endpoint (and say why), e.g. after a 410: in the same transaction
   * the store appends an `endpoint.disabled` event (operationId = the endpoint's id).
   */
  disableEndpoint?: { reason: EndpointDisabledReason; message: string };
}

export interface DeliveryQuery {
  tenant: string;
  endpointId?: string;
  operationId?: string;
  status?: readonly DeliveryStatus[];
  limit: number;
  cursor?: string;
}
