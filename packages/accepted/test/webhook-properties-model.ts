/**
 * The model and the invariants of `webhook-properties.test.ts`: what the webhook store
 * (`WebhookStore`) must do, written from docs/webhooks.md and the interface's contract, not
 * from the adapters' code.
 *
 * The model (`apply`) keeps every endpoint, delivery, lease and attempt as the calls made so
 * far must have left them, and the `webhooks` consumer's position and token; `compareState`
 * holds the store's rows (read with SQL) to it, field by field. Calls fired at once must be
 * explained by some order of them (`linearize`). The invariants (`checkStep`) hold whatever
 * the model says, from what the calls answered and the rows before and after each step:
 *
 *   1. one unexpired lease per delivery: a claim never hands out a delivery that an earlier
 *      claim holds under an unexpired lease whose attempt is not recorded yet (a replay in
 *      flight included);
 *   2. a deleted endpoint's deliveries are finished for good: none pending, none claimed after
 *      the deletion, and those the deletion failed stay failed with ENDPOINT_DELETED, whatever
 *      an attempt in flight records afterwards;
 *   3. an endpoint's rateLimit: at most that many claims per second of their `claimedAt`,
 *      counted over every node;
 *   4. lines, attempts and stale records: a delivery is not claimed while an earlier one of its
 *      (target, operation) line is pending; a delivered or failed delivery is not claimed again
 *      unless replayed; attempts are numbered 1..n (n the delivery's count); a record under a
 *      stale lease (claimed again since, replayed after its lease ended, or recorded already)
 *      changes nothing.
 */
import type { OperationEvent } from '../src/domain/events.ts';
import type { Attempt, Delivery, Endpoint } from '../src/domain/webhooks.ts';
import type { ConsumerLease, ConsumerRef } from '../src/store/consumers.ts';
import type { ClaimedDelivery, DispatchResult, LeaseRef } from '../src/store/store.ts';
import { searchOrders } from './property-runner.ts';

export const CALLBACK = 'callback';
export const TENANTS = ['t1', 't2'] as const;

/** The event types an endpoint may subscribe to (null: every type). */
export const TYPE_FILTERS: readonly (readonly string[] | null)[] = [
  null,
  null,
  ['operation.queued'],
  ['operation.progress'],
  ['operation.started', 'operation.succeeded'],
];

// ---- what the store holds, as read with SQL -------------------------------------------------

/**
 * A delivery row: the domain's fields, and what only the row holds (the event's seq and type
 * and the status as stored, unchecked strings, so that a wrong value shows; the lease; the
 * last replay).
 */
export interface DeliveryRowState extends Pick<
  Delivery,
  | 'id'
  | 'tenant'
  | 'target'
  | 'operationId'
  | 'attempts'
  | 'roundStart'
  | 'nextAttemptAt'
  | 'lastStatus'
  | 'lastError'
  | 'createdAt'
  | 'deliveredAt'
> {
  pk: number;
  seq: number;
  eventType: string;
  status: string;
  leaseUntil: number | null;
  leaseToken: string | null;
  replayedAt: number | null;
}

export type AttemptRowState = Pick<
  Attempt,
  'attempt' | 'startedAt' | 'durationMs' | 'status' | 'error'
>;

export interface EndpointRowState {
  id: string;
  tenant: string;
  enabled: boolean;
  rateLimit: number | null;
  rateWindow: number | null;
  rateCount: number;
}

export interface StoreState {
  deliveries: DeliveryRowState[];
  /** By delivery id, in attempt order. */
  attempts: Map<string, AttemptRowState[]>;
  endpoints: EndpointRowState[];
  consumer: { position: number; token: string | null; leaseUntil: number | null } | null;
  /** The whole log, in seq order. */
  log: OperationEvent[];
}

export const keyOf = (target: string, seq: number) => `${target}|${seq}`;

// ---- the calls ------------------------------------------------------------------------------

export interface EndpointSpec {
  id: string;
  tenant: string;
  rateLimit: number | null;
  eventTypes: string[] | null;
  labels: Record<string, string> | null;
}

/** A claim as the ledger keeps it: what its record names. */
export interface ClaimRef {
  /** Serial number of the claim in the run. */
  n: number;
  node: number;
  deliveryId: string;
  key: string;
  target: string;
  operationId: string;
  seq: number;
  token: string;
  /** The number its attempt has (the delivery's attempts at the claim, plus one). */
  attempt: number;
  claimedAt: number;
  until: number;
  rateLimit: number | null;
  /** The step that made it. */
  step: number;
}

export type Outcome =
  | { result: 'delivered'; status: 200; error: null }
  | { result: 'retry'; status: number | null; error: string | null; delay: number }
  | { result: 'failed'; status: number; error: null };

export type Action =
  | { kind: 'createEndpoint'; node: number; endpoint: EndpointSpec; now: number }
  | {
      kind: 'updateEndpoint';
      node: number;
      id: string;
      tenant: string;
      enabled: boolean;
      now: number;
    }
  | { kind: 'deleteEndpoint'; node: number; id: string; tenant: string; now: number }
  | { kind: 'acquire'; node: number; now: number }
  | { kind: 'dispatch'; node: number; lease: ConsumerRef; limit: number; now: number }
  | { kind: 'claim'; node: number; limit: number; leaseMs: number; now: number }
  | { kind: 'record'; node: number; claim: ClaimRef; outcome: Outcome; now: number }
  | { kind: 'replay'; node: number; deliveryId: string; key: string; tenant: string; now: number }
  | {
      kind: 'replayEndpoint';
      node: number;
      id: string;
      tenant: string;
      since: number;
      now: number;
    }
  | { kind: 'next'; node: number; now: number }
  | {
      kind: 'createOp';
      node: number;
      id: string;
      tenant: string;
      labels: Record<string, string>;
      callback: boolean;
      now: number;
    }
  | { kind: 'opClaim'; node: number; limit: number; now: number }
  | { kind: 'opProgress' | 'opComplete'; node: number; lease: LeaseRef; now: number };

export type Observed = { ok: true; value: unknown } | { ok: false; code: string; message: string };

const short = (id: string) => `…${id.slice(-5)}`;

export function describeAction(a: Action): string {
  const at = `@${a.now} node${a.node}`;
  switch (a.kind) {
    case 'createEndpoint': {
      const e = a.endpoint;
      return `createEndpoint(${e.id} ${e.tenant} rate=${e.rateLimit} types=${e.eventTypes?.join('+') ?? '*'}${e.labels ? ' labels' : ''})${at}`;
    }
    case 'updateEndpoint':
      return `updateEndpoint(${a.id} enabled=${a.enabled})${at}`;
    case 'deleteEndpoint':
      return `deleteEndpoint(${a.id})${at}`;
    case 'replayEndpoint':
      return `replayEndpoint(${a.id} since=${a.since})${at}`;
    case 'acquire':
      return `acquire(webhooks)${at}`;
    case 'dispatch':
      return `dispatch(limit=${a.limit} token=${a.lease.token.slice(-4)})${at}`;
    case 'claim':
      return `claim(limit=${a.limit} leaseMs=${a.leaseMs})${at}`;
    case 'record': {
      const o = a.outcome;
      const c = a.claim;
      const what = o.result === 'retry' ? `retry+${o.delay}` : o.result;
      return `record(${c.key} claim#${c.n} attempt=${c.attempt} ${what})${at}`;
    }
    case 'replay':
      return `replay(${a.key})${at}`;
    case 'next':
      return `nextDeliveryAt${at}`;
    case 'createOp':
      return `createOp(${short(a.id)} ${a.tenant}${a.callback ? ' callback' : ''}${Object.keys(a.labels).length ? ' labels' : ''})${at}`;
    case 'opClaim':
      return `opClaim(limit=${a.limit})${at}`;
    case 'opProgress':
    case 'opComplete':
      return `${a.kind}(${short(a.lease.operationId)})${at}`;
  }
}

export function describeObserved(o: Observed): string {
  if (!o.ok) return `${o.code}${o.code === 'UNEXPECTED' ? `: ${o.message}` : ''}`;
  const v = o.value;
  if (Array.isArray(v)) {
    return `[${(v as ClaimedDelivery[]).map((c) => keyOf(c.delivery.target, c.delivery.eventSeq)).join(', ')}]`;
  }
  if (v && typeof v === 'object' && 'deliveries' in v) {
    const r = v as DispatchResult;
    return `events=${r.events} deliveries=${r.deliveries} position=${r.lease.position}`;
  }
  if (v && typeof v === 'object' && 'token' in v) {
    const l = v as ConsumerLease;
    return `lease ${l.token.slice(-4)} until ${l.leaseUntil} position ${l.position}`;
  }
  if (v && typeof v === 'object' && 'status' in v) {
    const d = v as Delivery;
    return `${d.status} attempts=${d.attempts} roundStart=${d.roundStart} next=${d.nextAttemptAt}`;
  }
  if (v && typeof v === 'object' && 'id' in v) return `ok ${(v as Endpoint).id}`;
  return v === undefined ? 'ok' : JSON.stringify(v);
}

// ---- the model ------------------------------------------------------------------------------

export interface MEndpoint {
  id: string;
  tenant: string;
  rateLimit: number | null;
  eventTypes: string[] | null;
  labels: Record<string, string> | null;
  enabled: boolean;
  deleted: boolean;
  /** The rate window (epoch second) its claims last counted in, and how many. */
  window: number | null;
  count: number;
}

export interface MDelivery {
  key: string;
  tenant: string;
  target: string;
  operationId: string;
  seq: number;
  eventType: string;
  status: 'pending' | 'delivered' | 'failed';
  attempts: number;
  roundStart: number;
  nextAttemptAt: number | null;
  lastStatus: number | null;
  lastError: string | null;
  createdAt: number;
  deliveredAt: number | null;
  /** The current claim's token, and until when it holds (null once the endpoint is deleted). */
  lease: { token: string; until: number | null } | null;
  replayedAt: number | null;
  log: AttemptRowState[];
}

export interface Model {
  endpoints: MEndpoint[];
  /** In the order they were made. */
  deliveries: MDelivery[];
  consumer: { holder: number | null; token: string | null; until: number | null; position: number };
}

export function emptyModel(): Model {
  return {
    endpoints: [],
    deliveries: [],
    consumer: { holder: null, token: null, until: null, position: 0 },
  };
}

/** What `apply` needs besides the model: the log and the rows as the step left them. */
export interface Context {
  /** The log after the step (events are never changed, so those a dispatch read are there). */
  log: readonly OperationEvent[];
  /** The last seq of the log before the step: a dispatch that read less than its limit got here. */
  logEndBefore: number;
  /** The pk of a delivery (claim order), from the rows after the step. */
  pkOf: (key: string) => number;
  /** Operations created with a callbackUrl. */
  callbacks: ReadonlySet<string>;
  /**
   * Whether a claim must take every claimable delivery up to its limit: a call alone, or any
   * call on SQLite (one writer); PostgreSQL's claims in a batch skip rows other transactions
   * hold locked (`SKIP LOCKED`), so they may take fewer.
   */
  strict: boolean;
}

function endpointOf(m: Model, target: string): MEndpoint | undefined {
  return m.endpoints.find((e) => e.id === target);
}

/** From when an endpoint's rate window lets one more claim go, at `now`. */
function rateFreeAt(e: MEndpoint | undefined, now: number): number {
  const sec = Math.floor(now / 1000);
  if (!e || e.rateLimit === null || (e.window ?? -1) < sec) return 0;
  if (e.count >= e.rateLimit) return ((e.window ?? 0) + 1) * 1000;
  return (e.window ?? 0) * 1000;
}

/** How many claims the endpoint may still have at `now`. */
function rateRoom(e: MEndpoint | undefined, now: number): number {
  if (!e || e.rateLimit === null) return Number.POSITIVE_INFINITY;
  const sec = Math.floor(now / 1000);
  const w = e.window ?? -1;
  if (w > sec) return 0;
  if (w === sec) return Math.max(0, e.rateLimit - e.count);
  return e.rateLimit;
}

/** Pending, to a callback or an enabled endpoint, and no earlier delivery of its line pending. */
function headOfLine(m: Model, d: MDelivery): boolean {
  if (d.status !== 'pending') return false;
  if (d.target !== CALLBACK) {
    const e = endpointOf(m, d.target);
    if (!e || e.deleted || !e.enabled) return false;
  }
  return !m.deliveries.some(
    (p) =>
      p.status === 'pending' &&
      p.target === d.target &&
      p.operationId === d.operationId &&
      p.seq < d.seq,
  );
}

export function claimable(m: Model, d: MDelivery, now: number): boolean {
  if (!headOfLine(m, d)) return false;
  if (d.nextAttemptAt === null || d.nextAttemptAt > now) return false;
  if (d.lease && d.lease.until !== null && d.lease.until > now) return false;
  return rateFreeAt(endpointOf(m, d.target), now) <= now;
}

/** What `nextDeliveryAt(now)` must answer. */
export function nextDeliveryAt(m: Model, now: number): number | null {
  if (m.deliveries.some((d) => claimable(m, d, now))) return now;
  let best: number | null = null;
  for (const d of m.deliveries) {
    if (!headOfLine(m, d)) continue;
    const t = Math.max(
      d.nextAttemptAt ?? 0,
      d.lease?.until ?? 0,
      rateFreeAt(endpointOf(m, d.target), now),
    );
    if (best === null || t < best) best = t;
  }
  return best;
}

function wants(e: MEndpoint, event: OperationEvent): boolean {
  if (e.deleted || !e.enabled || e.tenant !== event.tenant) return false;
  if (e.eventTypes && !e.eventTypes.includes(event.type)) return false;
  for (const [k, v] of Object.entries(e.labels ?? {})) if (event.labels[k] !== v) return false;
  return true;
}

const callbackWants = (type: string) =>
  type.startsWith('operation.') && type !== 'operation.progress' && type !== 'operation.deleted';

function expectCode(observed: Observed, code: string, what: string): string | null {
  if (observed.ok) return `${what}: answered ok, the model expects ${code}`;
  if (observed.code !== code)
    return `${what}: answered ${observed.code}, the model expects ${code}`;
  return null;
}

function expectOk(observed: Observed, what: string): string | null {
  return observed.ok
    ? null
    : `${what}: answered ${observed.code} (${observed.message}), the model expects it to succeed`;
}

/**
 * The model after `a` answered `observed`, or why that answer is not what the model allows.
 * `m` is not changed.
 */
export function apply(m0: Model, a: Action, observed: Observed, ctx: Context): Model | string {
  const m = structuredClone(m0);
  const what = describeAction(a);
  switch (a.kind) {
    case 'createOp':
    case 'opClaim':
    case 'opProgress':
    case 'opComplete':
      // The operation store's own calls: their events are read from the log.
      return m;
    case 'createEndpoint': {
      const bad = expectOk(observed, what);
      if (bad) return bad;
      const e = a.endpoint;
      m.endpoints.push({ ...e, enabled: true, deleted: false, window: null, count: 0 });
      return m;
    }
    case 'updateEndpoint': {
      const e = endpointOf(m, a.id);
      if (!e || e.deleted) return expectCode(observed, 'ENDPOINT_NOT_FOUND', what) ?? m;
      const bad = expectOk(observed, what);
      if (bad) return bad;
      const got = observed.ok ? (observed.value as Endpoint) : null;
      if (got?.enabled !== a.enabled) return `${what}: answered enabled=${got?.enabled}`;
      e.enabled = a.enabled;
      return m;
    }
    case 'deleteEndpoint': {
      const e = endpointOf(m, a.id);
      if (!e || e.deleted) return expectCode(observed, 'ENDPOINT_NOT_FOUND', what) ?? m;
      const bad = expectOk(observed, what);
      if (bad) return bad;
      e.deleted = true;
      for (const d of m.deliveries) {
        if (d.target !== a.id || d.status !== 'pending') continue;
        d.status = 'failed';
        d.lastError = 'ENDPOINT_DELETED';
        d.nextAttemptAt = null;
        // An attempt in flight keeps its token: its record logs the attempt.
        if (d.lease) d.lease = { token: d.lease.token, until: null };
        d.replayedAt = null;
      }
      return m;
    }
    case 'acquire': {
      const c = m.consumer;
      const runs = c.token !== null && c.until !== null && c.until > a.now;
      if (runs && c.holder !== a.node) {
        if (!observed.ok) return `${what}: answered ${observed.code}`;
        return observed.value === null ? m : `${what}: took the lease another node holds`;
      }
      if (!observed.ok || observed.value === null) {
        return `${what}: got no lease, but the consumer is free (or this node's)`;
      }
      const lease = observed.value as ConsumerLease;
      if (lease.position !== c.position) {
        return `${what}: the lease is at position ${lease.position}, the consumer at ${c.position}`;
      }
      const renewed = runs && c.holder === a.node;
      if (renewed !== (lease.token === c.token)) {
        return renewed
          ? `${what}: renewing its own running lease changed the token`
          : `${what}: took the lease over under the old token`;
      }
      m.consumer = {
        holder: a.node,
        token: lease.token,
        until: lease.leaseUntil,
        position: c.position,
      };
      return m;
    }
    case 'dispatch': {
      const c = m.consumer;
      if (a.lease.token !== c.token) return expectCode(observed, 'LEASE_LOST', what) ?? m;
      const bad = expectOk(observed, what);
      if (bad) return bad;
      const r = (observed as { value: DispatchResult }).value;
      const from = c.position;
      const to = r.lease.position;
      const events = ctx.log.filter((e) => e.seq > from && e.seq <= to);
      if (to < from) return `${what}: moved the consumer back from ${from} to ${to}`;
      if (r.events !== events.length) {
        return `${what}: read ${r.events} events, the log has ${events.length} in (${from}, ${to}]`;
      }
      if (r.events > a.limit) return `${what}: read ${r.events} events, past its limit`;
      if (r.events < a.limit && to < ctx.logEndBefore) {
        return `${what}: stopped at ${to} with less than its limit, the log went to ${ctx.logEndBefore} before`;
      }
      let made = 0;
      for (const event of events) {
        const targets = m.endpoints.filter((e) => wants(e, event)).map((e) => e.id);
        if (ctx.callbacks.has(event.operationId) && callbackWants(event.type)) {
          targets.push(CALLBACK);
        }
        for (const target of targets) {
          made++;
          m.deliveries.push({
            key: keyOf(target, event.seq),
            tenant: event.tenant,
            target,
            operationId: event.operationId,
            seq: event.seq,
            eventType: event.type,
            status: 'pending',
            attempts: 0,
            roundStart: 0,
            nextAttemptAt: a.now,
            lastStatus: null,
            lastError: null,
            createdAt: a.now,
            deliveredAt: null,
            lease: null,
            replayedAt: null,
            log: [],
          });
        }
      }
      if (r.deliveries !== made) {
        return `${what}: made ${r.deliveries} deliveries, the model ${made}`;
      }
      if (r.lease.token !== c.token) return `${what}: the lease came back under another token`;
      m.consumer = { ...c, position: to, until: r.lease.leaseUntil };
      return m;
    }
    case 'claim': {
      const bad = expectOk(observed, what);
      if (bad) return bad;
      const got = (observed as { value: ClaimedDelivery[] }).value;
      const sec = Math.floor(a.now / 1000);
      const can = m.deliveries.filter((d) => claimable(m, d, a.now));
      const used = new Map<string, number>();
      for (const c of got) {
        const key = keyOf(c.delivery.target, c.delivery.eventSeq);
        const d = m.deliveries.find((x) => x.key === key);
        if (!d) return `${what}: handed out ${key}, which the model does not know`;
        if (!can.includes(d)) {
          const why =
            d.status !== 'pending'
              ? `it is ${d.status}`
              : d.lease?.until && d.lease.until > a.now
                ? `it is leased until ${d.lease.until}`
                : d.nextAttemptAt !== null && d.nextAttemptAt > a.now
                  ? `it is due at ${d.nextAttemptAt}`
                  : !headOfLine(m, d)
                    ? 'it waits behind its line (or its endpoint is disabled or gone)'
                    : 'its endpoint’s rate window is full';
          return `${what}: handed out ${key}, which is not claimable (${why})`;
        }
        const n = (used.get(d.target) ?? 0) + 1;
        used.set(d.target, n);
        const e = endpointOf(m, d.target);
        if (n > rateRoom(e, a.now)) {
          return `${what}: handed out ${n} of ${d.target} in second ${sec}, past its rate room`;
        }
        const roundStart = d.replayedAt !== null ? d.attempts : d.roundStart;
        if (c.delivery.attempts !== d.attempts || c.delivery.roundStart !== roundStart) {
          return `${what}: handed out ${key} with attempts=${c.delivery.attempts} roundStart=${c.delivery.roundStart}, the model ${d.attempts}/${roundStart}`;
        }
        if (c.claimedAt !== a.now || c.leaseUntil !== a.now + a.leaseMs) {
          return `${what}: ${key} claimed at ${c.claimedAt} until ${c.leaseUntil}`;
        }
        if (c.rateLimit !== (e?.rateLimit ?? null)) {
          return `${what}: ${key} says rateLimit ${c.rateLimit}, its endpoint has ${e?.rateLimit}`;
        }
        d.lease = { token: c.leaseToken, until: c.leaseUntil };
        d.roundStart = roundStart;
        d.replayedAt = null;
      }
      if (ctx.strict) {
        // The claim's order (next attempt, then pk), its limit, then each endpoint's room.
        const order = [...can].sort(
          (x, y) =>
            (x.nextAttemptAt ?? 0) - (y.nextAttemptAt ?? 0) || ctx.pkOf(x.key) - ctx.pkOf(y.key),
        );
        const room = new Map<string, number>();
        const want: string[] = [];
        for (const d of order.slice(0, a.limit)) {
          const left = room.get(d.target) ?? rateRoom(endpointOf(m, d.target), a.now);
          if (left <= 0) continue;
          room.set(d.target, left - 1);
          want.push(d.key);
        }
        const gotKeys = got.map((c) => keyOf(c.delivery.target, c.delivery.eventSeq));
        if (JSON.stringify([...gotKeys].sort()) !== JSON.stringify([...want].sort())) {
          return `${what}: handed out [${gotKeys.join(', ')}], the model [${want.join(', ')}]`;
        }
      }
      for (const [target, n] of used) {
        const e = endpointOf(m, target);
        if (!e || e.rateLimit === null) continue;
        e.count = e.window === sec ? e.count + n : n;
        e.window = sec;
      }
      return m;
    }
    case 'record': {
      const bad = expectOk(observed, what);
      if (bad) return bad;
      const d = m.deliveries.find((x) => x.key === a.claim.key);
      const n = a.claim.attempt;
      // Under a lease that is no longer the delivery's: nothing changes.
      if (!d || d.attempts !== n - 1 || d.lease?.token !== a.claim.token) return m;
      const o = a.outcome;
      d.attempts = n;
      d.lease = null;
      d.log.push({
        attempt: n,
        startedAt: a.claim.claimedAt,
        durationMs: a.now - a.claim.claimedAt,
        status: o.status,
        error: o.error,
      });
      // Finished meanwhile (its endpoint deleted): the attempt is logged, the status kept.
      if (d.status !== 'pending') return m;
      d.lastStatus = o.status;
      d.lastError = o.error;
      if (d.replayedAt !== null) {
        // Replayed while in flight: the replay takes effect now.
        d.roundStart = n;
        d.nextAttemptAt = a.now;
        d.replayedAt = null;
        d.deliveredAt = null;
        return m;
      }
      d.status =
        o.result === 'delivered' ? 'delivered' : o.result === 'retry' ? 'pending' : 'failed';
      d.nextAttemptAt = o.result === 'retry' ? a.now + o.delay : null;
      d.deliveredAt = o.result === 'delivered' ? a.now : null;
      return m;
    }
    case 'replay': {
      const d = m.deliveries.find((x) => x.key === a.key);
      if (!d) return expectCode(observed, 'DELIVERY_NOT_FOUND', what) ?? m;
      const e = d.target === CALLBACK ? null : endpointOf(m, d.target);
      if (e && e.deleted) return expectCode(observed, 'ENDPOINT_NOT_FOUND', what) ?? m;
      const bad = expectOk(observed, what);
      if (bad) return bad;
      const inFlight =
        d.status === 'pending' &&
        d.lease !== null &&
        d.lease.until !== null &&
        d.lease.until > a.now;
      if (inFlight) {
        d.replayedAt = a.now;
      } else {
        replayNow(d, a.now);
      }
      const got = (observed as { value: Delivery }).value;
      const next = d.status === 'pending' ? d.nextAttemptAt : null;
      if (
        got.status !== d.status ||
        got.roundStart !== d.roundStart ||
        got.nextAttemptAt !== next
      ) {
        return `${what}: answered ${got.status} roundStart=${got.roundStart} next=${got.nextAttemptAt}, the model ${d.status} ${d.roundStart} ${next}`;
      }
      return m;
    }
    case 'replayEndpoint': {
      const e = endpointOf(m, a.id);
      if (!e || e.deleted) return expectCode(observed, 'ENDPOINT_NOT_FOUND', what) ?? m;
      const bad = expectOk(observed, what);
      if (bad) return bad;
      let n = 0;
      for (const d of m.deliveries) {
        if (d.target !== a.id || d.status !== 'failed' || d.createdAt < a.since) continue;
        replayNow(d, a.now);
        n++;
      }
      const got = (observed as { value: number }).value;
      return got === n ? m : `${what}: replayed ${got}, the model ${n}`;
    }
    case 'next': {
      const bad = expectOk(observed, what);
      if (bad) return bad;
      const want = nextDeliveryAt(m, a.now);
      const got = (observed as { value: number | null }).value;
      return got === want ? m : `${what}: answered ${got}, the model ${want}`;
    }
  }
}

function replayNow(d: MDelivery, now: number): void {
  d.status = 'pending';
  d.roundStart = d.attempts;
  d.nextAttemptAt = now;
  d.lease = null;
  d.replayedAt = null;
  d.deliveredAt = null;
}

/** Where the store's rows differ from the model. */
export function compareState(m: Model, s: StoreState): string[] {
  const out: string[] = [];
  const rows = new Map(s.deliveries.map((r) => [keyOf(r.target, r.seq), r]));
  for (const d of m.deliveries) {
    const r = rows.get(d.key);
    rows.delete(d.key);
    if (!r) {
      out.push(`${d.key}: the model has it ${d.status}, the store has no such delivery`);
      continue;
    }
    const fields: [string, unknown, unknown][] = [
      ['status', r.status, d.status],
      ['attempts', r.attempts, d.attempts],
      ['roundStart', r.roundStart, d.roundStart],
      ['nextAttemptAt', r.nextAttemptAt, d.nextAttemptAt],
      ['lastStatus', r.lastStatus, d.lastStatus],
      ['lastError', r.lastError, d.lastError],
      ['deliveredAt', r.deliveredAt, d.deliveredAt],
      ['createdAt', r.createdAt, d.createdAt],
      ['leaseToken', r.leaseToken, d.lease?.token ?? null],
      ['leaseUntil', r.leaseUntil, d.lease?.until ?? null],
      ['replayedAt', r.replayedAt, d.replayedAt],
      ['operation', r.operationId, d.operationId],
      ['tenant', r.tenant, d.tenant],
    ];
    const differ = fields.filter(([, got, want]) => got !== want);
    if (differ.length > 0) {
      out.push(
        `${d.key}: ${differ.map(([name, got, want]) => `${name} is ${String(got)}, the model ${String(want)}`).join('; ')}`,
      );
    }
    const attempts = s.attempts.get(r.id) ?? [];
    const show = (list: AttemptRowState[]) =>
      list
        .map((x) => `#${x.attempt}@${x.startedAt}+${x.durationMs}:${x.status ?? x.error}`)
        .join(' ');
    if (show(attempts) !== show(d.log)) {
      out.push(`${d.key}: attempts [${show(attempts)}], the model [${show(d.log)}]`);
    }
  }
  for (const key of rows.keys()) out.push(`${key}: a delivery the model does not know`);
  const endpoints = new Map(s.endpoints.map((e) => [e.id, e]));
  for (const e of m.endpoints) {
    const r = endpoints.get(e.id);
    if (e.deleted) {
      if (r) out.push(`${e.id}: deleted, but its row is still there`);
      continue;
    }
    if (!r) {
      out.push(`${e.id}: no row`);
      continue;
    }
    if (r.enabled !== e.enabled) out.push(`${e.id}: enabled=${r.enabled}, the model ${e.enabled}`);
    if (e.rateLimit !== null && (r.rateWindow !== e.window || r.rateCount !== e.count)) {
      out.push(
        `${e.id}: rate window ${r.rateWindow} count ${r.rateCount}, the model ${e.window} count ${e.count}`,
      );
    }
  }
  const c = s.consumer;
  if (c && (c.position !== m.consumer.position || c.token !== m.consumer.token)) {
    out.push(
      `the webhooks consumer is at ${c.position} under ${c.token?.slice(-4)}, the model at ${m.consumer.position} under ${m.consumer.token?.slice(-4)}`,
    );
  }
  return out;
}

export interface Call {
  action: Action;
  observed: Observed;
}

/**
 * A model that explains calls made at once: some order of them, each answered as the store
 * answered it, ending in the state `differences` finds nothing wrong with. Else the error of
 * the order that went furthest.
 */
export function linearize(
  m: Model,
  calls: readonly Call[],
  ctx: Context,
  differences: (candidate: Model) => string[],
): { model: Model } | { error: string } {
  return searchOrders({
    start: m,
    calls,
    step: (model, call) => {
      const next = apply(model, call.action, call.observed, ctx);
      return typeof next === 'string' ? next : [next];
    },
    label: (call) => describeAction(call.action),
    finish: differences,
  });
}

// ---- the invariants -------------------------------------------------------------------------

/** What the run has seen so far, from the calls' answers (not from the model). */
export interface Ledger {
  /** Every claim handed out, and whether the sender has recorded its attempt. */
  claims: (ClaimRef & { recorded: boolean })[];
  /** Rate limits of the endpoints created, by id. */
  rateLimits: Map<string, number | null>;
  /**
   * Endpoints deleted: the step that deleted them, and the deliveries the deletion failed
   * (failed with ENDPOINT_DELETED when that step ended), which must stay so.
   */
  deleted: Map<string, { step: number; failed: Set<string> }>;
  /** Replays that went through: delivery id and when. */
  replays: { deliveryId: string; at: number }[];
}

export function emptyLedger(): Ledger {
  return { claims: [], rateLimits: new Map(), deleted: new Map(), replays: [] };
}

/** Whether a record under this claim's lease is stale: the ledger says so, whatever the model. */
export function staleClaim(ledger: Ledger, c: ClaimRef & { recorded: boolean }): string | null {
  if (c.recorded) return 'its attempt was recorded already';
  if (ledger.claims.some((o) => o.deliveryId === c.deliveryId && o.n > c.n)) {
    return 'the delivery was claimed again since';
  }
  if (
    ledger.replays.some(
      (r) => r.deliveryId === c.deliveryId && r.at >= c.until && r.at > c.claimedAt,
    )
  ) {
    return 'the delivery was replayed after its lease ended';
  }
  return null;
}

const rowFields = (r: DeliveryRowState | undefined) =>
  r
    ? JSON.stringify([
        r.status,
        r.attempts,
        r.roundStart,
        r.nextAttemptAt,
        r.lastStatus,
        r.lastError,
        r.deliveredAt,
        r.leaseToken,
        r.leaseUntil,
        r.replayedAt,
      ])
    : 'gone';

/**
 * Checks one step's calls and the rows before and after it against the invariants, and
 * brings the ledger up to date. Returns the problems, each naming its invariant.
 */
export function checkStep(
  ledger: Ledger,
  step: number,
  calls: readonly Call[],
  before: StoreState,
  after: StoreState,
  claimOf: (a: Action, c: ClaimedDelivery) => ClaimRef,
): string[] {
  const out: string[] = [];
  const rowBefore = new Map(before.deliveries.map((r) => [r.id, r]));
  const rowAfter = new Map(after.deliveries.map((r) => [r.id, r]));
  // Records that went through (one that failed left the lease to its claim).
  const recordedNow = new Set(
    calls.flatMap((c) => (c.action.kind === 'record' && c.observed.ok ? [c.action.claim.n] : [])),
  );
  // A record of this step may finish a delivery before a claim of the same step.
  const finishable = new Set(
    calls.flatMap((c) =>
      c.action.kind === 'record' && c.action.outcome.result !== 'retry'
        ? [c.action.claim.deliveryId]
        : [],
    ),
  );
  const replayedNow = new Set(
    calls.flatMap((c) => (c.action.kind === 'replay' ? [c.action.deliveryId] : [])),
  );
  const endpointReplays = new Set(
    calls.flatMap((c) => (c.action.kind === 'replayEndpoint' ? [c.action.id] : [])),
  );

  // 4. A record under a stale lease, alone in its step, changes nothing.
  if (calls.length === 1) {
    const only = calls[0] as Call;
    if (only.action.kind === 'record') {
      const c = ledger.claims.find((x) => x.n === (only.action as { claim: ClaimRef }).claim.n);
      const why = c ? staleClaim(ledger, c) : null;
      if (c && why) {
        const was = rowBefore.get(c.deliveryId);
        const now = rowAfter.get(c.deliveryId);
        const attemptsBefore = JSON.stringify(before.attempts.get(c.deliveryId) ?? []);
        const attemptsAfter = JSON.stringify(after.attempts.get(c.deliveryId) ?? []);
        if (rowFields(was) !== rowFields(now) || attemptsBefore !== attemptsAfter) {
          out.push(
            `invariant 4 (a record under a stale lease changes nothing): the record of claim #${c.n} of ${c.key} (${why}) changed the delivery from ${rowFields(was)} to ${rowFields(now)}, its attempts from ${attemptsBefore} to ${attemptsAfter}`,
          );
        }
      }
    }
  }

  const fresh: (ClaimRef & { recorded: boolean })[] = [];
  for (const call of calls) {
    const a = call.action;
    if (!call.observed.ok) continue;
    if (a.kind === 'createEndpoint') ledger.rateLimits.set(a.endpoint.id, a.endpoint.rateLimit);
    if (a.kind === 'replay') ledger.replays.push({ deliveryId: a.deliveryId, at: a.now });
    if (a.kind !== 'claim') continue;
    for (const claimed of call.observed.value as ClaimedDelivery[]) {
      const c = { ...claimOf(a, claimed), recorded: false };
      const d = claimed.delivery;
      // 1. One unexpired lease per delivery.
      const holders = [...ledger.claims, ...fresh].filter(
        (o) => o.deliveryId === d.id && !o.recorded && !recordedNow.has(o.n) && o.until > a.now,
      );
      for (const o of holders) {
        out.push(
          `invariant 1 (one unexpired lease per delivery): claim #${c.n} on node${a.node} at ${a.now} handed out ${c.key}, which claim #${o.n} (node${o.node}, at ${o.claimedAt}) holds until ${o.until}, its attempt not recorded yet`,
        );
      }
      // 2. Nothing of a deleted endpoint is claimed after its deletion.
      const gone = ledger.deleted.get(d.target);
      if (gone && gone.step < step) {
        out.push(
          `invariant 2 (a deleted endpoint's deliveries stay finished): claim #${c.n} at ${a.now} handed out ${c.key}, whose endpoint was deleted in step ${gone.step}`,
        );
      }
      // 4. Line order, and finished deliveries stay finished unless replayed.
      const was = rowBefore.get(d.id);
      if (
        was &&
        was.status !== 'pending' &&
        !replayedNow.has(d.id) &&
        !endpointReplays.has(d.target)
      ) {
        out.push(
          `invariant 4 (a finished delivery is not claimed again unless replayed): claim #${c.n} at ${a.now} handed out ${c.key}, which was ${was.status}`,
        );
      }
      for (const e of before.deliveries) {
        if (
          e.target === d.target &&
          e.operationId === d.operationId &&
          e.seq < d.eventSeq &&
          e.status === 'pending' &&
          !finishable.has(e.id)
        ) {
          out.push(
            `invariant 4 (line order): claim #${c.n} at ${a.now} handed out ${c.key} while ${keyOf(e.target, e.seq)}, earlier in its line, is pending`,
          );
        }
      }
      fresh.push(c);
    }
  }
  for (const call of calls) {
    if (call.action.kind !== 'record' || !call.observed.ok) continue;
    const n = call.action.claim.n;
    const c = ledger.claims.find((x) => x.n === n);
    if (c) c.recorded = true;
  }
  ledger.claims.push(...fresh);
  for (const call of calls) {
    const a = call.action;
    if (a.kind === 'deleteEndpoint' && call.observed.ok) {
      const failed = new Set(
        after.deliveries
          .filter(
            (r) => r.target === a.id && r.status === 'failed' && r.lastError === 'ENDPOINT_DELETED',
          )
          .map((r) => r.id),
      );
      ledger.deleted.set(a.id, { step, failed });
    }
  }

  // 2. A deleted endpoint's deliveries: none pending, and those it failed stay failed.
  for (const [id, gone] of ledger.deleted) {
    for (const r of after.deliveries) {
      if (r.target !== id) continue;
      if (r.status === 'pending') {
        out.push(
          `invariant 2 (a deleted endpoint's deliveries stay finished): ${keyOf(r.target, r.seq)} of endpoint ${id}, deleted in step ${gone.step}, is pending (attempts=${r.attempts}, lastError=${r.lastError})`,
        );
      } else if (
        gone.failed.has(r.id) &&
        (r.status !== 'failed' || r.lastError !== 'ENDPOINT_DELETED')
      ) {
        out.push(
          `invariant 2 (a deleted endpoint's deliveries stay finished): ${keyOf(r.target, r.seq)}, failed by the deletion of ${id} in step ${gone.step}, is now ${r.status} (lastError=${r.lastError})`,
        );
      }
    }
  }

  // 3. Rate limits, over every claim of the run on every node.
  const perSecond = new Map<string, ClaimRef[]>();
  for (const c of ledger.claims) {
    const limit = ledger.rateLimits.get(c.target) ?? null;
    if (limit === null) continue;
    const key = `${c.target}@${Math.floor(c.claimedAt / 1000)}`;
    const list = perSecond.get(key) ?? [];
    list.push(c);
    perSecond.set(key, list);
    if (list.length === limit + 1 && fresh.includes(c)) {
      out.push(
        `invariant 3 (rateLimit ${limit}/s across nodes): ${list.length} claims of ${c.target}'s deliveries in second ${Math.floor(c.claimedAt / 1000)}: ${list.map((x) => `#${x.n} node${x.node}@${x.claimedAt}`).join(', ')}`,
      );
    }
  }

  // 4. Attempts numbered 1..n, n the delivery's count.
  for (const r of after.deliveries) {
    const numbers = (after.attempts.get(r.id) ?? []).map((x) => x.attempt);
    const want = Array.from({ length: r.attempts }, (_, i) => i + 1);
    if (JSON.stringify(numbers) !== JSON.stringify(want)) {
      out.push(
        `invariant 4 (attempts numbered 1..n): ${keyOf(r.target, r.seq)} counts ${r.attempts} attempts, its log has [${numbers.join(', ')}]`,
      );
    }
  }
  return out;
}
