/**
 * The relay cursor: named consumers of the event log, each with a committed position and a
 * lease, so that one holder at a time (across nodes) reads the log after the position, delivers
 * what it read somewhere (webhook deliveries, a broker) and then commits the new position. A
 * store offers it as a capability (`Store.consumers`); the rules every adapter applies are the
 * pure functions of `consumer-rules.ts`.
 *
 * Contract (checked by `consumersConformance` in `conformance.ts`):
 * - At most one holder has a consumer's lease at a time, whatever the number of nodes: a lease
 *   is taken over only once it has expired, and then under a new, unguessable token.
 * - A write under a token that is no longer the consumer's (`commit`, and the dispatcher's own
 *   commit) changes nothing and rejects with LEASE_LOST.
 * - A position only moves forward, and never past the end of the log.
 */
export interface ConsumerStore {
  /**
   * Takes or renews the lease of consumer `name` for `holder` (creating the consumer at
   * `startAt` when it is new): the same holder renews (same token, later `leaseUntil`); a lease
   * that expired (or was released) is taken with a new token; null while another holder's
   * lease runs.
   */
  acquire(request: AcquireRequest): Promise<ConsumerLease | null>;
  /**
   * Moves the consumer to `position` (every event up to it is delivered) and renews the lease
   * for its `leaseMs`. A position at or behind the committed one leaves it where it is.
   * LEASE_LOST when `lease.token` is no longer the consumer's; VALIDATION_FAILED past the log's
   * last seq.
   */
  commit(lease: ConsumerRef, position: number, now: number): Promise<ConsumerLease>;
  /** Gives the lease up (another holder may take it at once). A stale token changes nothing. */
  release(lease: ConsumerRef): Promise<void>;
  /** One consumer's state, or null (a read: pollers use it, so that an idle store writes nothing). */
  get(name: string): Promise<ConsumerState | null>;
  /** Every consumer, by name. */
  list(): Promise<ConsumerState[]>;
}

export interface AcquireRequest {
  /** The consumer (`webhooks` is the webhook dispatcher's). Letters, digits, `.`, `_`, `-`, `:`. */
  name: string;
  /** Who asks (a node or process id); kept with the lease for inspection. */
  holder: string;
  /** How long the lease holds without a commit or renewal. */
  leaseMs: number;
  /** The caller's clock. Nodes' clocks must agree to well within a lease. */
  now: number;
  /**
   * Where a new consumer starts: after every event now in the log (`latest`, default: history
   * is not delivered again) or before the first one (`earliest`).
   */
  startAt?: 'earliest' | 'latest';
}

/** Names a lease: the consumer and the token its holder got. */
export interface ConsumerRef {
  name: string;
  token: string;
}

export interface ConsumerLease extends ConsumerRef {
  /** Every event with a seq up to this one is delivered; read after it. */
  position: number;
  /** Until when the lease holds without a commit or renewal. */
  leaseUntil: number;
}

export interface ConsumerState {
  name: string;
  position: number;
  /** The last holder, or null when released (its lease may have expired: see `leaseUntil`). */
  holder: string | null;
  leaseUntil: number | null;
  /** Events in the log after the position: the last seq written minus `position`. */
  lag: number;
  updatedAt: number;
}
