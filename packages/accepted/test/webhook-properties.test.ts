/**
 * Property-based tests of the webhook store (`WebhookStore`, fast-check), on the store of this
 * process (`ACCEPTED_TEST_STORE`: SQLite, or PostgreSQL with three store instances on one
 * schema playing three nodes). Each run starts on a fresh, empty place and plays a random
 * sequence of calls with a virtual clock (every call is given its `now`): endpoints created
 * (some with a small `rateLimit`, some with event-type or label filters), enabled, disabled,
 * deleted and replayed; operations created and worked through the operation store, so that the
 * log has events (queued, started, progress, succeeded; some operations with a callbackUrl);
 * the `webhooks` consumer acquired by a node (as `src/webhooks/service.ts` does) and the log
 * dispatched into deliveries under its lease (a node whose lease was taken over is refused);
 * deliveries claimed by every node, each claim under its own lease token; attempts recorded
 * under their lease with a random outcome (delivered, retry at a later time, failed), stale
 * ones too (their lease ran out and the delivery was claimed again, it was replayed, or it was
 * recorded already); deliveries replayed (also while an attempt is in flight); nextDeliveryAt;
 * the clock ticking within a second or jumping past every lease.
 *
 * Some steps fire several calls at once, on different nodes, in an order and with gaps that
 * fast-check's scheduler draws: two to four random calls; a claim on every node (rate limits
 * across nodes); a replay of a delivery in flight with claims on the other nodes and the
 * attempt's record; a deletion of an endpoint with an attempt in flight, with that attempt's
 * record and a claim; every attempt not recorded yet recording at once (zombies).
 *
 * After every step, the store's rows (read with SQL: deliveries with their leases, attempts,
 * endpoints' rate windows, the consumer) must keep the invariants of
 * `webhook-properties-model.ts` (one unexpired lease per delivery; a deleted endpoint's
 * deliveries failed for good; rateLimit per second across nodes; line order, attempts 1..n,
 * stale records changing nothing, finished deliveries not claimed unless replayed), and, in the
 * first property, agree with its model (calls at once: some order of them explains them). At
 * the end the delivery log is read back through the store's API (listDeliveries, getDelivery,
 * listAttempts) and must show the same; then every endpoint is enabled and the deliveries are
 * drained (claim at the time nextDeliveryAt says, deliver): a wake-up at that time always
 * claims something, and nothing is left pending.
 *
 * Seeded: ACCEPTED_PROPERTY_SEED=<integer> replays a run (else a random seed is drawn and
 * printed as a diagnostic). A failure names the seed, fast-check's counterexample `path` and
 * the commands' `replayPath`; replay it with
 *
 *   ACCEPTED_PROPERTY_SEED=<seed> [ACCEPTED_TEST_STORE=postgres] node --import tsx --test \
 *     --test-name-pattern '<property>' packages/accepted/test/webhook-properties.test.ts
 *
 * and add ACCEPTED_PROPERTY_PATH=<path> ACCEPTED_PROPERTY_REPLAY=<replayPath> to run the
 * shrunk counterexample alone. ACCEPTED_PROPERTY_RUNS multiplies the number of runs;
 * ACCEPTED_PROPERTY_SHRINKS bounds the shrink candidates tried (default 60 on SQLite, 20 on
 * PostgreSQL).
 */
import { describe, it } from 'node:test';
import type Database from 'better-sqlite3';
import fc from 'fast-check';
import { AcceptedError } from '../src/domain/errors.ts';
import type { EventType, OperationEvent } from '../src/domain/events.ts';
import { newOperationId } from '../src/domain/ids.ts';
import type { Delivery } from '../src/domain/webhooks.ts';
import type { ConsumerLease } from '../src/store/consumers.ts';
import type { ClaimResult, ClaimedDelivery, DispatchResult, LeaseRef } from '../src/store/store.ts';
import {
  assertProperty,
  closeNodes,
  openNodes,
  propertySettings,
  type PropertyNode,
} from './property-runner.ts';
import { STORE, newStorePlace, onStore, type StorePlace } from './helpers.ts';
import { adminQuery } from './pg-helpers.ts';
import {
  CALLBACK,
  TENANTS,
  TYPE_FILTERS,
  checkStep,
  compareState,
  describeAction,
  describeObserved,
  emptyLedger,
  emptyModel,
  keyOf,
  linearize,
  staleClaim,
  type Action,
  type AttemptRowState,
  type Call,
  type ClaimRef,
  type Context,
  type DeliveryRowState,
  type Ledger,
  type Model,
  type Observed,
  type Outcome,
  type StoreState,
} from './webhook-properties-model.ts';

const SETTINGS = propertySettings('ACCEPTED_PROPERTY', STORE === 'postgres' ? 20 : 60);

/** Nodes (store instances on one place): three on PostgreSQL, the only one on SQLite. */
const NODES = STORE === 'postgres' ? 3 : 1;
/** The virtual clock's start: a whole second, far from 0. */
const START = 1_000_000_000;
/** Delivery leases a claim asks for; a jump goes past the longest. */
const LEASES = [2_000, 6_000] as const;
/** The dispatcher's lease on the `webhooks` consumer (service.ts: dispatchLeaseMs, 10 s). */
const DISPATCH_LEASE_MS = 10_000;
/** Operation leases never run out here: the operation store only makes events. */
const OP_LEASE_MS = 1_000_000_000_000;
const CONSUMER = 'webhooks';

type Node = PropertyNode;

interface Env {
  place: StorePlace;
  nodes: Node[];
  scheduler: fc.Scheduler;
}

async function openEnv(scheduler: fc.Scheduler): Promise<Env> {
  const place = newStorePlace();
  return { place, nodes: await openNodes(place, NODES), scheduler };
}

async function closeEnv(env: Env): Promise<void> {
  await closeNodes(env.place, env.nodes);
}

function nodeOf(env: Env, index: number): Node {
  return env.nodes[index % env.nodes.length] as Node;
}

// ---- the store's rows, read with SQL ----------------------------------------------------------

/**
 * SQLite runs in exclusive locking mode: its rows are read through the store's own connection,
 * between calls (every call of a step has settled). PostgreSQL through a connection of the
 * test's own.
 */
async function sql<T extends object>(env: Env, text: string): Promise<T[]> {
  if (env.place.schema === null) {
    const db = (env.nodes[0] as unknown as { db: Database.Database | null }).db;
    if (!db) throw new Error('the SQLite store is not open');
    return db.prepare(text.replaceAll('"S".', '')).all() as T[];
  }
  return adminQuery<T>(text.replaceAll('"S".', `"${env.place.schema}".`));
}

const num = (v: unknown): number => Number(v);
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

async function readLog(node: Node): Promise<OperationEvent[]> {
  const out: OperationEvent[] = [];
  for (;;) {
    const page = await node.readEvents({ after: out.at(-1)?.seq ?? 0, limit: 1_000 });
    out.push(...page);
    if (page.length < 1_000) return out;
  }
}

async function readState(env: Env, w: World): Promise<StoreState> {
  const deliveries = (
    await sql<Record<string, unknown>>(
      env,
      `SELECT pk, id, tenant, target, operation_id, event_seq, event_type, status, attempts,
         round_start, next_attempt_at, last_status, last_error, created_at, delivered_at,
         lease_until, lease_token, replayed_at FROM "S".webhook_deliveries ORDER BY pk`,
    )
  ).map((r): DeliveryRowState => ({
    pk: num(r.pk),
    id: String(r.id),
    tenant: String(r.tenant),
    target: String(r.target),
    operationId: String(r.operation_id),
    seq: num(r.event_seq),
    eventType: String(r.event_type),
    status: String(r.status),
    attempts: num(r.attempts),
    roundStart: num(r.round_start),
    nextAttemptAt: numOrNull(r.next_attempt_at),
    lastStatus: numOrNull(r.last_status),
    lastError: (r.last_error as string | null) ?? null,
    createdAt: num(r.created_at),
    deliveredAt: numOrNull(r.delivered_at),
    leaseUntil: numOrNull(r.lease_until),
    leaseToken: (r.lease_token as string | null) ?? null,
    replayedAt: numOrNull(r.replayed_at),
  }));
  const byPk = new Map(deliveries.map((d) => [d.pk, d.id]));
  const attempts = new Map<string, AttemptRowState[]>();
  for (const r of await sql<Record<string, unknown>>(
    env,
    `SELECT delivery_pk, attempt, started_at, duration_ms, status, error
     FROM "S".webhook_attempts ORDER BY delivery_pk, attempt`,
  )) {
    const id = byPk.get(num(r.delivery_pk)) ?? `pk${String(r.delivery_pk)}`;
    const list = attempts.get(id) ?? [];
    list.push({
      attempt: num(r.attempt),
      startedAt: num(r.started_at),
      durationMs: num(r.duration_ms),
      status: numOrNull(r.status),
      error: (r.error as string | null) ?? null,
    });
    attempts.set(id, list);
  }
  const endpoints = (
    await sql<Record<string, unknown>>(
      env,
      `SELECT id, tenant, enabled, rate_limit, rate_window, rate_count FROM "S".webhook_endpoints`,
    )
  ).map((r) => ({
    id: String(r.id),
    tenant: String(r.tenant),
    enabled: r.enabled === true || r.enabled === 1,
    rateLimit: numOrNull(r.rate_limit),
    rateWindow: numOrNull(r.rate_window),
    rateCount: num(r.rate_count),
  }));
  const [consumer] = await sql<Record<string, unknown>>(
    env,
    `SELECT position, token, lease_until FROM "S".consumers WHERE name = '${CONSUMER}'`,
  );
  const log = await readLog(nodeOf(env, w.step));
  return {
    deliveries,
    attempts,
    endpoints,
    consumer: consumer
      ? {
          position: num(consumer.position),
          token: (consumer.token as string | null) ?? null,
          leaseUntil: numOrNull(consumer.lease_until),
        }
      : null,
    log,
  };
}

// ---- what the run knows: the model, the ledger, and what the calls can act on -----------------

interface World {
  clock: number;
  step: number;
  /** The model (checked only in the properties that say so). */
  model: Model;
  ledger: Ledger;
  /** The rows as the last step left them. */
  state: StoreState;
  endpoints: { id: string; tenant: string }[];
  ops: string[];
  callbacks: Set<string>;
  /** Operation leases the nodes hold (to append events). */
  opLeases: { node: number; lease: LeaseRef }[];
  /** The `webhooks` consumer's lease each node holds (maybe taken over since). */
  dispatchers: (ConsumerLease | null)[];
  serial: number;
}

function emptyState(): StoreState {
  return { deliveries: [], attempts: new Map(), endpoints: [], consumer: null, log: [] };
}

function newWorld(): World {
  return {
    clock: START,
    step: 0,
    model: emptyModel(),
    ledger: emptyLedger(),
    state: emptyState(),
    endpoints: [],
    ops: [],
    callbacks: new Set(),
    opLeases: [],
    dispatchers: Array.from({ length: NODES }, () => null),
    serial: 0,
  };
}

// ---- what a step asks for, before it is resolved against what the run knows ------------------

type OutcomeKind = 'delivered' | 'retryNow' | 'retrySoon' | 'retryLate' | 'failed';

type Spec =
  | {
      k: 'endpoint';
      node: number;
      tenant: number;
      rate: number | null;
      types: number;
      labels: boolean;
    }
  | { k: 'toggle'; node: number; pick: number; enabled: boolean }
  | { k: 'deleteEndpoint'; node: number; pick: number; busy: boolean }
  | { k: 'replayEndpoint'; node: number; pick: number }
  | { k: 'op'; node: number; tenant: number; labels: boolean; callback: boolean }
  | { k: 'opClaim'; node: number; limit: number }
  | { k: 'opProgress' | 'opComplete'; node: number; pick: number }
  | { k: 'acquire'; node: number }
  | { k: 'dispatch'; node: number; limit: number }
  | { k: 'claim'; node: number; limit: number; lease: number }
  | { k: 'record'; node: number; pick: number; inFlight: boolean; outcome: OutcomeKind }
  | { k: 'replay'; node: number; pick: number; inFlight: boolean }
  | { k: 'next'; node: number }
  /** A claim on every node at once. */
  | { k: 'claimAll'; limit: number; lease: number }
  /** Every attempt not recorded yet (stale ones too) records at once. */
  | { k: 'zombies'; outcome: OutcomeKind }
  /** A delivery in flight replayed, claims on the other nodes, and maybe its attempt's record. */
  | { k: 'replayRace'; pick: number; record: boolean; outcome: OutcomeKind }
  /** An endpoint with an attempt in flight deleted, that attempt's record, and a claim. */
  | { k: 'deleteRace'; pick: number; outcome: OutcomeKind };

function outcomeOf(kind: OutcomeKind, pick: number): Outcome {
  switch (kind) {
    case 'delivered':
      return { result: 'delivered', status: 200, error: null };
    case 'failed':
      return { result: 'failed', status: 400, error: null };
    case 'retryNow':
      return { result: 'retry', status: 500, error: null, delay: 0 };
    case 'retrySoon':
      return pick % 2 === 0
        ? { result: 'retry', status: 503, error: null, delay: 700 }
        : { result: 'retry', status: null, error: 'TIMEOUT', delay: 1 };
    case 'retryLate':
      return { result: 'retry', status: null, error: 'CONNECT_FAILED', delay: 4_000 };
  }
}

type LedgerClaim = Ledger['claims'][number];

function inFlight(w: World, now: number): LedgerClaim[] {
  return w.ledger.claims.filter((c) => !c.recorded && c.until > now);
}

/** Newest first, the `pick`th of `list` (wrapping). */
function pickOf<T>(list: readonly T[], pick: number): T | undefined {
  if (list.length === 0) return undefined;
  return list[list.length - 1 - (pick % list.length)];
}

function claimToRecord(w: World, pick: number, wantInFlight: boolean, now: number) {
  if (wantInFlight) {
    const live = pickOf(inFlight(w, now), pick);
    if (live) return live;
    const open = pickOf(
      w.ledger.claims.filter((c) => !c.recorded),
      pick,
    );
    if (open) return open;
  }
  return pickOf(w.ledger.claims, pick);
}

function recordAction(
  node: number,
  c: ClaimRef,
  kind: OutcomeKind,
  pick: number,
  now: number,
): Action {
  return { kind: 'record', node, claim: { ...c }, outcome: outcomeOf(kind, pick), now };
}

function replayAction(w: World, node: number, deliveryId: string, now: number): Action | null {
  const row = w.state.deliveries.find((d) => d.id === deliveryId);
  if (!row) return null;
  return {
    kind: 'replay',
    node,
    deliveryId,
    key: keyOf(row.target, row.seq),
    tenant: row.tenant,
    now,
  };
}

/** The calls a spec makes now (none when it has nothing to act on). */
function resolveAll(w: World, spec: Spec, now: number): Action[] {
  switch (spec.k) {
    case 'endpoint': {
      const id = `ep_${String(++w.serial).padStart(3, '0')}`;
      const tenant = TENANTS[spec.tenant % TENANTS.length] as string;
      const types = TYPE_FILTERS[spec.types % TYPE_FILTERS.length] ?? null;
      return [
        {
          kind: 'createEndpoint',
          node: spec.node,
          endpoint: {
            id,
            tenant,
            rateLimit: spec.rate,
            eventTypes: types ? [...types] : null,
            labels: spec.labels ? { team: 'a' } : null,
          },
          now,
        },
      ];
    }
    case 'toggle':
    case 'deleteEndpoint':
    case 'replayEndpoint': {
      let e = pickOf(w.endpoints, spec.pick);
      if (spec.k === 'deleteEndpoint' && spec.busy) {
        const busy = inFlight(w, now).map((c) => c.target);
        e =
          pickOf(
            w.endpoints.filter((x) => busy.includes(x.id)),
            spec.pick,
          ) ?? e;
      }
      if (!e) return [];
      const base = { node: spec.node, id: e.id, tenant: e.tenant, now };
      if (spec.k === 'toggle') return [{ kind: 'updateEndpoint', ...base, enabled: spec.enabled }];
      if (spec.k === 'deleteEndpoint') return [{ kind: 'deleteEndpoint', ...base }];
      return [{ kind: 'replayEndpoint', ...base, since: spec.pick % 2 === 0 ? 0 : now - 3_000 }];
    }
    case 'op': {
      const id = newOperationId();
      w.ops.push(id);
      if (spec.callback) w.callbacks.add(id);
      return [
        {
          kind: 'createOp',
          node: spec.node,
          id,
          tenant: TENANTS[spec.tenant % TENANTS.length] as string,
          labels: spec.labels ? { team: 'a' } : {},
          callback: spec.callback,
          now,
        },
      ];
    }
    case 'opClaim':
      return [{ kind: 'opClaim', node: spec.node, limit: spec.limit, now }];
    case 'opProgress':
    case 'opComplete': {
      const held = pickOf(w.opLeases, spec.pick);
      if (!held) return [];
      return [{ kind: spec.k, node: held.node, lease: held.lease, now }];
    }
    case 'acquire':
      return [{ kind: 'acquire', node: spec.node % NODES, now }];
    case 'dispatch': {
      const node = spec.node % NODES;
      const lease = w.dispatchers[node];
      if (!lease) return [{ kind: 'acquire', node, now }];
      return [
        {
          kind: 'dispatch',
          node,
          lease: { name: lease.name, token: lease.token },
          limit: spec.limit,
          now,
        },
      ];
    }
    case 'claim':
      return [
        {
          kind: 'claim',
          node: spec.node,
          limit: spec.limit,
          leaseMs: LEASES[spec.lease % LEASES.length] as number,
          now,
        },
      ];
    case 'record': {
      const c = claimToRecord(w, spec.pick, spec.inFlight, now);
      return c ? [recordAction(c.node, c, spec.outcome, spec.pick, now)] : [];
    }
    case 'replay': {
      const live = spec.inFlight ? pickOf(inFlight(w, now), spec.pick) : undefined;
      const id = live?.deliveryId ?? pickOf(w.state.deliveries, spec.pick)?.id;
      const a = id === undefined ? null : replayAction(w, spec.node, id, now);
      return a ? [a] : [];
    }
    case 'next':
      return [{ kind: 'next', node: spec.node, now }];
    case 'claimAll':
      return Array.from({ length: NODES }, (_, node) => ({
        kind: 'claim' as const,
        node,
        limit: spec.limit,
        leaseMs: LEASES[spec.lease % LEASES.length] as number,
        now,
      }));
    case 'zombies':
      return w.ledger.claims
        .filter((c) => !c.recorded)
        .slice(-5)
        .map((c, i) => recordAction(c.node, c, spec.outcome, i, now));
    case 'replayRace': {
      const c = pickOf(inFlight(w, now), spec.pick);
      if (!c) return [];
      const replay = replayAction(w, c.node + 1, c.deliveryId, now);
      if (!replay) return [];
      const claims: Action[] = [c.node + 2, c.node].map((node) => ({
        kind: 'claim',
        node,
        limit: 3,
        leaseMs: LEASES[0],
        now,
      }));
      const record = spec.record ? [recordAction(c.node, c, spec.outcome, spec.pick, now)] : [];
      return [replay, ...claims, ...record];
    }
    case 'deleteRace': {
      const c = pickOf(
        inFlight(w, now).filter((x) => x.target !== CALLBACK),
        spec.pick,
      );
      const e = c && w.endpoints.find((x) => x.id === c.target);
      if (!c || !e) return [];
      return [
        { kind: 'deleteEndpoint', node: c.node + 1, id: e.id, tenant: e.tenant, now },
        recordAction(c.node, c, spec.outcome, spec.pick, now),
        { kind: 'claim', node: c.node + 2, limit: 3, leaseMs: LEASES[1], now },
      ];
    }
  }
}

function describeSpec(spec: Spec): string {
  const { k, ...rest } = spec;
  return `${k}${JSON.stringify(rest).replace(/"/g, '')}`;
}

// ---- running calls on the real stores ---------------------------------------------------------

function call(env: Env, a: Action): Promise<unknown> {
  const node = nodeOf(env, a.node);
  const hooks = node.webhooks;
  switch (a.kind) {
    case 'createEndpoint':
      return hooks.createEndpoint(
        {
          ...a.endpoint,
          eventTypes: a.endpoint.eventTypes as EventType[] | null,
          url: `https://example.com/hooks/${a.endpoint.id}`,
          description: null,
          secret: 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==',
          signingKey: null,
          retrySchedule: null,
        },
        a.now,
      );
    case 'updateEndpoint':
      return hooks.updateEndpoint(a.id, a.tenant, { enabled: a.enabled }, a.now);
    case 'deleteEndpoint':
      return hooks.deleteEndpoint(a.id, a.tenant, a.now);
    case 'replayEndpoint':
      return hooks.replayEndpoint(a.id, a.tenant, a.since, a.now);
    case 'acquire':
      return node.consumers.acquire({
        name: CONSUMER,
        holder: `node${a.node}`,
        leaseMs: DISPATCH_LEASE_MS,
        now: a.now,
        startAt: 'latest',
      });
    case 'dispatch':
      return hooks.dispatchDeliveries({
        lease: a.lease,
        limit: a.limit,
        now: a.now,
        newId: () => `dlv_${Math.random().toString(36).slice(2, 12)}`,
        newSecret: () => 'whsec_Y2FsbGJhY2stc2VjcmV0LWNhbGxiYWNrLXNlY3JldA==',
        payload: (event) => JSON.stringify({ type: event.type, data: event }),
      });
    case 'claim':
      return hooks.claimDeliveries({ now: a.now, limit: a.limit, leaseMs: a.leaseMs });
    case 'record': {
      const { claim: c, outcome: o } = a;
      return hooks.recordAttempt({
        lease: c.token,
        attempt: {
          deliveryId: c.deliveryId,
          attempt: c.attempt,
          startedAt: c.claimedAt,
          durationMs: a.now - c.claimedAt,
          status: o.status,
          error: o.error,
          responseBody: '',
        },
        result: o.result,
        ...(o.result === 'retry' ? { nextAttemptAt: a.now + o.delay } : {}),
      });
    }
    case 'replay':
      return hooks.replayDelivery(a.deliveryId, a.tenant, a.now);
    case 'next':
      return hooks.nextDeliveryAt(a.now);
    case 'createOp':
      return node.create(
        {
          id: a.id,
          tenant: a.tenant,
          type: 'wh.op',
          input: { n: 1 },
          maxAttempts: 1,
          runAt: a.now,
          timeoutMs: null,
          labels: a.labels,
          callbackUrl: a.callback ? 'https://example.com/callback' : null,
        },
        a.now,
      );
    case 'opClaim':
      return node.claim({
        owner: `node${a.node}`,
        types: null,
        limit: a.limit,
        leaseMs: OP_LEASE_MS,
        now: a.now,
      });
    case 'opProgress':
      return node.progress(a.lease, { fraction: 0.5, message: 'half' }, a.now);
    case 'opComplete':
      return node.complete(a.lease, { done: true }, a.now);
  }
}

/** The calls of a property, by kind and outcome (a diagnostic: the runs did something). */
const tally = new Map<string, number>();

function count(key: string, n = 1): void {
  tally.set(key, (tally.get(key) ?? 0) + n);
}

async function execute(env: Env, a: Action): Promise<Observed> {
  let observed: Observed;
  try {
    observed = { ok: true, value: await call(env, a) };
  } catch (error) {
    if (error instanceof AcceptedError) {
      observed = { ok: false, code: error.code, message: error.message };
    } else {
      const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
      observed = { ok: false, code: 'UNEXPECTED', message: text };
    }
  }
  count(`${a.kind}:${observed.ok ? 'ok' : observed.code}`);
  if (observed.ok && a.kind === 'claim') {
    const n = (observed.value as ClaimedDelivery[]).length;
    if (n > 0) count('claim:took some');
  }
  if (observed.ok && a.kind === 'dispatch' && (observed.value as DispatchResult).deliveries > 0) {
    count('dispatch:made some');
  }
  return observed;
}

type Delay = 'same' | 'turn' | 'ms';

function pause(delay: Delay): Promise<void> {
  if (delay === 'same') return Promise.resolve();
  if (delay === 'turn') return new Promise((resolve) => setImmediate(resolve));
  return new Promise((resolve) => setTimeout(resolve, 2));
}

function fail(what: string, problems: string[]): never {
  throw new Error(`${what}\n  - ${problems.join('\n  - ')}`);
}

/** What the run knows after the calls answered (whatever the model says). */
function learn(w: World, calls: readonly Call[]): void {
  for (const { action: a, observed } of calls) {
    if (a.kind === 'createEndpoint' && observed.ok) {
      w.endpoints.push({ id: a.endpoint.id, tenant: a.endpoint.tenant });
    }
    if (a.kind === 'acquire') {
      w.dispatchers[a.node] = observed.ok
        ? ((observed.value as ConsumerLease | null) ?? null)
        : null;
    }
    if (a.kind === 'dispatch') {
      if (observed.ok) w.dispatchers[a.node] = (observed.value as DispatchResult).lease;
      else if (observed.code === 'LEASE_LOST') w.dispatchers[a.node] = null;
    }
    if (a.kind === 'opClaim' && observed.ok) {
      for (const c of (observed.value as ClaimResult).claimed) {
        w.opLeases.push({
          node: a.node,
          lease: { operationId: c.lease.operationId, token: c.lease.token },
        });
      }
    }
    if (a.kind === 'opComplete') {
      w.opLeases = w.opLeases.filter((l) => l.lease.token !== a.lease.token);
    }
  }
}

/** Counts the situations the invariants are about (a diagnostic: the runs reached them). */
function tallyStep(w: World, calls: readonly Call[]): void {
  for (const { action: a, observed } of calls) {
    if (a.kind === 'replay' && inFlight(w, a.now).some((c) => c.deliveryId === a.deliveryId)) {
      count('situation:replay in flight');
    }
    if (a.kind === 'record') {
      const held = w.ledger.claims.find((c) => c.n === a.claim.n);
      const why = held && staleClaim(w.ledger, held);
      if (why) count(`situation:stale record (${why})`);
      if (w.ledger.deleted.has(a.claim.target))
        count('situation:record after its endpoint was deleted');
      if (calls.some((c) => c.action.kind === 'deleteEndpoint' && c.action.id === a.claim.target)) {
        count('situation:record racing its endpoint’s deletion');
      }
    }
    if (a.kind === 'claim' && observed.ok) {
      for (const c of observed.value as ClaimedDelivery[]) {
        if (c.rateLimit !== null) count('situation:claim of a rate-limited endpoint');
        if (w.ledger.claims.some((x) => x.deliveryId === c.delivery.id && !x.recorded)) {
          count('situation:claimed again, its last lease ran out unrecorded');
        }
      }
    }
  }
}

/** Runs the calls of one step (alone, or at once under the scheduler) and checks the result. */
async function runStep(
  w: World,
  env: Env,
  actions: Action[],
  delays: readonly Delay[],
  checkModel: boolean,
): Promise<void> {
  w.step += 1;
  let observed: Observed[];
  if (actions.length === 1) {
    observed = [await execute(env, actions[0] as Action)];
  } else {
    const tasks = actions.map((action, i) =>
      env.scheduler
        .schedule(Promise.resolve(), describeAction(action))
        .then(() => pause(delays[i] ?? 'same'))
        .then(() => execute(env, action)),
    );
    await env.scheduler.waitIdle();
    observed = await Promise.all(tasks);
    count(`batch of ${actions.length}`);
  }
  const calls = actions.map((action, i) => ({ action, observed: observed[i] as Observed }));
  const listing = calls
    .map(
      (c, i) =>
        `${describeAction(c.action)}${calls.length > 1 ? ` [${delays[i] ?? 'same'}]` : ''} -> ${describeObserved(c.observed)}`,
    )
    .join('\n    ');
  const before = w.state;
  const after = await readState(env, w);
  const problems: string[] = [];
  for (const c of calls) {
    if (!c.observed.ok && c.observed.code === 'UNEXPECTED') {
      problems.push(`${describeAction(c.action)} threw: ${c.observed.message}`);
    }
  }
  const claimOf = (a: Action, c: ClaimedDelivery): ClaimRef => ({
    n: ++w.serial,
    node: a.node,
    deliveryId: c.delivery.id,
    key: keyOf(c.delivery.target, c.delivery.eventSeq),
    target: c.delivery.target,
    operationId: c.delivery.operationId,
    seq: c.delivery.eventSeq,
    token: c.leaseToken,
    attempt: c.delivery.attempts + 1,
    claimedAt: c.claimedAt,
    until: c.leaseUntil,
    rateLimit: c.rateLimit,
    step: w.step,
  });
  tallyStep(w, calls);
  // The invariants first, so that a failure names the one broken; then the model.
  problems.push(...checkStep(w.ledger, w.step, calls, before, after, claimOf));
  if (checkModel) {
    const pks = new Map(after.deliveries.map((d) => [keyOf(d.target, d.seq), d.pk]));
    const ctx: Context = {
      log: after.log,
      logEndBefore: before.log.at(-1)?.seq ?? 0,
      pkOf: (key) => pks.get(key) ?? Number.MAX_SAFE_INTEGER,
      callbacks: w.callbacks,
      strict: calls.length === 1 || STORE === 'sqlite',
    };
    const found = linearize(w.model, calls, ctx, (candidate) => compareState(candidate, after));
    if ('model' in found) w.model = found.model;
    else {
      problems.push(
        calls.length === 1
          ? `the model disagrees: ${found.error}`
          : `no order of these calls explains them: ${found.error}`,
      );
    }
  }
  learn(w, calls);
  w.state = after;
  if (problems.length > 0) {
    fail(
      `step ${w.step}, ${calls.length === 1 ? 'alone' : 'calls at once'}:\n    ${listing}`,
      problems,
    );
  }
}

// ---- the commands -----------------------------------------------------------------------------

interface Run {
  world: World;
  checkModel: boolean;
}

class Step implements fc.AsyncCommand<Run, Env> {
  constructor(
    readonly specs: Spec[],
    readonly delays: Delay[],
  ) {}

  check(): boolean {
    return true;
  }

  async run(r: Run, env: Env): Promise<void> {
    const w = r.world;
    w.clock += 1;
    const actions = this.specs
      .flatMap((spec) => resolveAll(w, spec, w.clock))
      .slice(0, 5)
      .map((a) => ({ ...a, node: a.node % NODES }));
    if (actions.length === 0) return;
    await runStep(w, env, actions, this.delays, r.checkModel);
  }

  toString(): string {
    if (this.specs.length === 1 && this.specs[0]?.k !== 'claimAll') {
      return describeSpec(this.specs[0] as Spec);
    }
    const parts = this.specs.map((spec, i) => `${describeSpec(spec)}~${this.delays[i] ?? 'same'}`);
    return `together(${parts.join(' | ')})`;
  }
}

/**
 * The clock moves on: a tick within a second or into the next ones (rate windows, retries), or a
 * jump past every delivery lease (and maybe the dispatcher's).
 */
class ClockStep implements fc.AsyncCommand<Run, Env> {
  constructor(
    readonly label: 'tick' | 'jump',
    readonly ms: number,
  ) {}
  check(): boolean {
    return true;
  }
  run(r: Run): Promise<void> {
    r.world.clock += this.ms;
    return Promise.resolve();
  }
  toString(): string {
    return `${this.label}(${this.ms})`;
  }
}

// ---- the end of a run -------------------------------------------------------------------------

/**
 * The delivery log read back through the store's API must show what the rows show; then every
 * endpoint is enabled and the deliveries drained: claimed when nextDeliveryAt says (which must
 * then claim something), delivered, until nothing is left pending.
 */
async function finalChecks(w: RunWorld, env: Env): Promise<void> {
  const problems: string[] = [];
  const rows = new Map(w.state.deliveries.map((d) => [d.id, d]));
  for (const [t, tenant] of TENANTS.entries()) {
    const node = nodeOf(env, t);
    const seen: Delivery[] = [];
    let cursor: string | undefined;
    do {
      const page = await node.webhooks.listDeliveries({
        tenant,
        limit: 50,
        ...(cursor ? { cursor } : {}),
      });
      seen.push(...page.items);
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    const want = w.state.deliveries.filter((d) => d.tenant === tenant);
    if (seen.length !== want.length) {
      problems.push(
        `listDeliveries(${tenant}) shows ${seen.length} deliveries, the table has ${want.length}`,
      );
    }
    for (const d of seen) {
      const r = rows.get(d.id);
      const next = r?.status === 'pending' ? r.nextAttemptAt : null;
      if (
        !r ||
        d.status !== r.status ||
        d.attempts !== r.attempts ||
        d.roundStart !== r.roundStart ||
        d.nextAttemptAt !== next ||
        d.lastError !== r.lastError ||
        d.target !== r.target ||
        d.eventSeq !== r.seq
      ) {
        problems.push(
          `listDeliveries shows ${d.id} as ${JSON.stringify(d).slice(0, 300)}, the row is ${JSON.stringify(r)}`,
        );
      }
    }
    for (const d of seen.slice(0, 6)) {
      const one = await node.webhooks.getDelivery(d.id, tenant);
      if (JSON.stringify(one) !== JSON.stringify(d))
        problems.push(`getDelivery(${d.id}) differs from its list entry`);
      const attempts = (await node.webhooks.listAttempts(d.id, tenant)).map((a) => a.attempt);
      const logged = (w.state.attempts.get(d.id) ?? []).map((a) => a.attempt);
      if (JSON.stringify(attempts) !== JSON.stringify(logged)) {
        problems.push(
          `listAttempts(${d.id}) shows [${attempts.join(',')}], the table [${logged.join(',')}]`,
        );
      }
    }
  }
  if (problems.length > 0)
    fail('the store API shows another delivery log than its tables', problems);

  // The drain: every call alone, the invariants after each.
  const step = async (action: Action) => runStep(w, env, [action], [], w.modelOk);
  const now = () => w.clock;
  for (const e of w.endpoints) {
    if (w.ledger.deleted.has(e.id)) continue;
    await step({
      kind: 'updateEndpoint',
      node: 0,
      id: e.id,
      tenant: e.tenant,
      enabled: true,
      now: now(),
    });
  }
  for (let round = 0; round < 400; round++) {
    w.clock += 1;
    for (const c of w.ledger.claims.filter((x) => !x.recorded)) {
      await step(recordAction(c.node, c, 'delivered', 0, now()));
    }
    let dispatched = false;
    while (!dispatched) {
      const node = round % NODES;
      const lease = w.dispatchers[node];
      if (!lease || lease.leaseUntil <= now()) {
        await step({ kind: 'acquire', node, now: now() });
        if (!w.dispatchers[node]) {
          w.clock = Math.max(w.clock + 1, (w.state.consumer?.leaseUntil ?? 0) + 1);
          continue;
        }
      }
      const held = w.dispatchers[node] as ConsumerLease;
      await step({
        kind: 'dispatch',
        node,
        lease: { name: held.name, token: held.token },
        limit: 200,
        now: now(),
      });
      const lastSeq = w.state.log.at(-1)?.seq ?? 0;
      dispatched = (w.dispatchers[node]?.position ?? -1) >= lastSeq;
    }
    const node = round % NODES;
    const next = await nodeOf(env, node).webhooks.nextDeliveryAt(now());
    if (next === null) break;
    if (next > now()) w.clock = next;
    const before = w.ledger.claims.length;
    await step({ kind: 'claim', node, limit: 20, leaseMs: LEASES[1], now: now() });
    if (w.ledger.claims.length === before) {
      fail('the drain', [`nextDeliveryAt said ${next}, but a claim then (alone) got nothing`]);
    }
  }
  const left = w.state.deliveries.filter((d) => d.status === 'pending');
  if (left.length > 0) {
    fail('the drain', [
      `deliveries left pending with every endpoint enabled: ${left.map((d) => keyOf(d.target, d.seq)).join(', ')}`,
    ]);
  }
}

// ---- generators -------------------------------------------------------------------------------

type SpecKind = Spec['k'];
type Weights = Partial<Record<SpecKind, number>>;

const nodeArb = fc.nat({ max: 2 });
const pickArb = fc.constantFrom(0, 0, 0, 1, 2, 3, 5);
const outcomeArb = fc.constantFrom<OutcomeKind>(
  'delivered',
  'delivered',
  'retryNow',
  'retrySoon',
  'retryLate',
  'failed',
);

function specArbs(): Record<SpecKind, fc.Arbitrary<Spec>> {
  return {
    endpoint: fc.record({
      k: fc.constant('endpoint' as const),
      node: nodeArb,
      tenant: fc.constantFrom(0, 0, 0, 1),
      rate: fc.constantFrom<number | null>(null, null, 1, 2),
      types: fc.nat({ max: TYPE_FILTERS.length - 1 }),
      labels: fc.constantFrom(false, false, false, true),
    }),
    toggle: fc.record({
      k: fc.constant('toggle' as const),
      node: nodeArb,
      pick: pickArb,
      enabled: fc.boolean(),
    }),
    deleteEndpoint: fc.record({
      k: fc.constant('deleteEndpoint' as const),
      node: nodeArb,
      pick: pickArb,
      busy: fc.boolean(),
    }),
    replayEndpoint: fc.record({
      k: fc.constant('replayEndpoint' as const),
      node: nodeArb,
      pick: pickArb,
    }),
    op: fc.record({
      k: fc.constant('op' as const),
      node: nodeArb,
      tenant: fc.constantFrom(0, 0, 0, 1),
      labels: fc.boolean(),
      callback: fc.constantFrom(false, false, false, true),
    }),
    opClaim: fc.record({
      k: fc.constant('opClaim' as const),
      node: nodeArb,
      limit: fc.integer({ min: 1, max: 2 }),
    }),
    opProgress: fc.record({ k: fc.constant('opProgress' as const), node: nodeArb, pick: pickArb }),
    opComplete: fc.record({ k: fc.constant('opComplete' as const), node: nodeArb, pick: pickArb }),
    acquire: fc.record({ k: fc.constant('acquire' as const), node: nodeArb }),
    dispatch: fc.record({
      k: fc.constant('dispatch' as const),
      node: nodeArb,
      limit: fc.integer({ min: 1, max: 6 }),
    }),
    claim: fc.record({
      k: fc.constant('claim' as const),
      node: nodeArb,
      limit: fc.integer({ min: 1, max: 4 }),
      lease: fc.nat({ max: 1 }),
    }),
    record: fc.record({
      k: fc.constant('record' as const),
      node: nodeArb,
      pick: pickArb,
      inFlight: fc.constantFrom(true, true, true, false),
      outcome: outcomeArb,
    }),
    replay: fc.record({
      k: fc.constant('replay' as const),
      node: nodeArb,
      pick: pickArb,
      inFlight: fc.boolean(),
    }),
    next: fc.record({ k: fc.constant('next' as const), node: nodeArb }),
    claimAll: fc.record({
      k: fc.constant('claimAll' as const),
      limit: fc.integer({ min: 1, max: 4 }),
      lease: fc.nat({ max: 1 }),
    }),
    zombies: fc.record({ k: fc.constant('zombies' as const), outcome: outcomeArb }),
    replayRace: fc.record({
      k: fc.constant('replayRace' as const),
      pick: pickArb,
      record: fc.boolean(),
      outcome: outcomeArb,
    }),
    deleteRace: fc.record({
      k: fc.constant('deleteRace' as const),
      pick: pickArb,
      outcome: outcomeArb,
    }),
  };
}

interface Profile {
  name: string;
  /** Whether the store must agree with the model (else the invariants alone are checked). */
  model: boolean;
  /** Calls drawn alone or as members of a batch. */
  specs: Weights;
  /** Composite steps (several calls at once, built around one race). */
  races: Weights;
  steps: { alone: number; together: number; race: number; tick: number; jump: number };
  maxCommands: number;
  numRuns: { sqlite: number; postgres: number };
}

function commandsOf(profile: Profile) {
  const arbs = specArbs();
  const weighted = (weights: Weights) =>
    fc.oneof(
      ...Object.entries(weights).map(([k, weight]) => ({ arbitrary: arbs[k as SpecKind], weight })),
    );
  const spec = weighted(profile.specs);
  const race = weighted(profile.races);
  const delay = fc.constantFrom<Delay>('same', 'same', 'turn', 'ms');
  const delays = fc.array(delay, { minLength: 5, maxLength: 5 });
  const { steps } = profile;
  const command = fc.oneof(
    { arbitrary: spec.map((s) => new Step([s], ['same'])), weight: steps.alone },
    {
      arbitrary: fc
        .tuple(fc.array(spec, { minLength: 2, maxLength: 4 }), delays)
        .map(([specs, d]) => new Step(specs, d)),
      weight: steps.together,
    },
    { arbitrary: fc.tuple(race, delays).map(([s, d]) => new Step([s], d)), weight: steps.race },
    {
      arbitrary: fc
        .constantFrom(1, 5, 300, 999, 1_000, 1_500)
        .map((ms) => new ClockStep('tick', ms)),
      weight: steps.tick,
    },
    {
      arbitrary: fc.integer({ min: 6_001, max: 15_000 }).map((ms) => new ClockStep('jump', ms)),
      weight: steps.jump,
    },
  );
  return fc.commands([command], {
    maxCommands: profile.maxCommands,
    size: 'max',
    ...(SETTINGS.replay !== undefined ? { replayPath: SETTINGS.replay } : {}),
  });
}

/**
 * The start of every run: the dispatcher on node 0, a rate-limited endpoint for every event
 * and two more endpoints, a few operations, their events dispatched.
 */
function warmupArb() {
  const arbs = specArbs();
  return fc
    .tuple(
      fc.constantFrom(1, 2),
      fc.array(arbs.endpoint, { minLength: 2, maxLength: 2 }),
      fc.array(arbs.op, { minLength: 3, maxLength: 5 }),
    )
    .map(([rate, endpoints, ops]) => {
      const first: Spec = { k: 'endpoint', node: 0, tenant: 0, rate, types: 0, labels: false };
      const specs: Spec[] = [
        { k: 'acquire', node: 0 },
        first,
        ...endpoints,
        ...ops.map((op) => ({ ...op, tenant: 0 })),
        { k: 'dispatch', node: 0, limit: 6 },
      ];
      return specs.map((s) => new Step([s], ['same']));
    });
}

interface RunWorld extends World {
  /** Whether the drain still checks the model. */
  modelOk: boolean;
}

function property(profile: Profile) {
  const args = fc.limitShrink(
    fc.tuple(fc.scheduler(), warmupArb(), commandsOf(profile)),
    SETTINGS.shrinks,
  );
  return fc.asyncProperty(args, async ([scheduler, warmup, commands]) => {
    const env = await openEnv(scheduler);
    try {
      const world: RunWorld = { ...newWorld(), modelOk: profile.model };
      const run: Run = { world, checkModel: profile.model };
      await fc.asyncModelRun(() => ({ model: run, real: env }), [...warmup, ...commands]);
      await finalChecks(world, env);
    } finally {
      await closeEnv(env);
    }
  });
}

const PROFILES: Profile[] = [
  {
    name: 'random webhook calls and interleavings agree with the model and keep the invariants',
    model: true,
    specs: {
      endpoint: 1,
      toggle: 1,
      deleteEndpoint: 1,
      replayEndpoint: 1,
      op: 3,
      opClaim: 2,
      opProgress: 2,
      opComplete: 1,
      acquire: 1,
      dispatch: 4,
      claim: 5,
      record: 5,
      replay: 2,
      next: 2,
    },
    races: { claimAll: 2, replayRace: 2, deleteRace: 1, zombies: 1 },
    steps: { alone: 8, together: 3, race: 2, tick: 2, jump: 1 },
    maxCommands: 40,
    numRuns: { sqlite: 40, postgres: 12 },
  },
  {
    name: 'racing claims, records, replays and deletes across nodes keep the invariants',
    model: false,
    specs: {
      endpoint: 1,
      deleteEndpoint: 1,
      op: 3,
      opProgress: 2,
      opClaim: 1,
      dispatch: 4,
      claim: 4,
      record: 4,
      replay: 2,
    },
    races: { claimAll: 3, replayRace: 3, deleteRace: 2, zombies: 2 },
    steps: { alone: 4, together: 3, race: 5, tick: 2, jump: 1 },
    maxCommands: 40,
    numRuns: { sqlite: 40, postgres: 12 },
  },
];

describe(onStore('webhook store properties'), () => {
  for (const profile of PROFILES) {
    it(profile.name, async (t) => {
      await assertProperty({
        settings: SETTINGS,
        name: profile.name,
        file: 'webhook-properties.test.ts',
        numRuns: profile.numRuns,
        property: property(profile),
        tally,
        diagnostic: (message) => t.diagnostic(message),
      });
    });
  }
});
