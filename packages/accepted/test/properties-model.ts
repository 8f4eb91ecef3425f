/**
 * The reference model of the store properties (`properties.test.ts`): what a `Store` must do,
 * written as plainly as possible, with no SQL and no concurrency of its own.
 *
 * - `apply(model, action, observed)` replays one store call the test made (the action, resolved
 *   to concrete ids, tokens and times) on a copy of the model, and checks what the store
 *   answered against it. It returns the possible models after the call (several when the
 *   store may choose, as a lease recovery that skips rows locked by another node), or why the
 *   answer is impossible.
 * - `linearize` explains a batch of calls fired at once: some order of them, each answered as
 *   the store did, must lead to the state the store now shows.
 * - `compareState` compares a model with the store's rows and log; `checkLog` checks the
 *   invariants of a log and its rows that hold whatever the model says.
 * - `listAnswer` and `eventsAnswer` say what a filtered `list` or `readEvents` must give, from
 *   the store's whole rows and log: a filter's list means the set of its values, whatever its
 *   length and repeats.
 *
 * Time: every store method takes `now`, so the test runs a virtual clock in epochs. A lease
 * taken or renewed in the current epoch is live for the rest of it; one of an earlier epoch is
 * expired (the real time a write waits, which `leaseExpiry` adds, is far below an epoch).
 */
import type { EventType, OperationEvent } from '../src/domain/events.ts';
import { canTransition } from '../src/domain/status.ts';
import type { Operation, OperationStatus } from '../src/domain/operation.ts';
import type {
  ClaimResult,
  EventQuery,
  LeaseRef,
  LeaseState,
  ListQuery,
} from '../src/store/store.ts';
import { searchOrders } from './property-runner.ts';

/** One epoch of the virtual clock: moving to the next one expires every lease not renewed. */
export const EPOCH_MS = 100_000_000;
/** The lease of every claim and renewal: far longer than the clock moves within an epoch. */
export const LEASE_MS = 10_000_000;
/** The first instant of epoch `epoch`. */
export function epochStart(epoch: number): number {
  return epoch * EPOCH_MS + 1_000;
}
export const TENANT = 't1';
/** The operation types, and which of them each worker claims (null: any). */
export const OP_TYPES = ['a', 'b'] as const;
export const WORKER_TYPES: readonly (readonly string[] | null)[] = [null, ['a'], ['a', 'b']];
export const WORKERS = WORKER_TYPES.length;
/** Leases a worker remembers (the newest; older ones are stale by then, or forgotten). */
const LEASES_KEPT = 5;

/** The error codes the test's calls give, and the ones the store writes itself. */
export const CODES = {
  fail: 'BOOM',
  release: 'WORKER_SHUTDOWN',
  finishCanceled: 'WORKER_CANCELED',
  cancel: 'CLIENT_CANCELED',
  canceled: 'CANCELED',
  expired: 'LEASE_EXPIRED',
} as const;

/** What the model keeps of an event: its type, version, attempt and error code. */
export interface ModelEvent {
  type: EventType;
  version: number;
  attempt: number | null;
  code: string | null;
}

export interface ModelOp {
  id: string;
  type: string;
  maxAttempts: number;
  status: OperationStatus | 'deleted';
  version: number;
  attempts: number;
  runAt: number;
  cancelRequested: boolean;
  /** The lease of a running operation, and the epoch it was last taken or renewed in. */
  lease: { token: string; epoch: number } | null;
  /** The operation's events as the log must show them (only `deleted` once deleted). */
  events: ModelEvent[];
}

export interface Model {
  clock: number;
  epoch: number;
  ops: ModelOp[];
  /** Per worker, the leases it was handed (oldest first), current or stale. */
  held: LeaseRef[][];
  /** Every lease token handed out so far: a claim never hands out one twice. */
  tokens: string[];
}

export function emptyModel(): Model {
  return {
    clock: epochStart(0),
    epoch: 0,
    ops: [],
    held: Array.from({ length: WORKERS }, () => []),
    tokens: [],
  };
}

/** A store call the test made, with everything it was called with. */
export type Action =
  | {
      kind: 'create';
      node: number;
      op: { id: string; type: string; maxAttempts: number; runAt: number };
      now: number;
    }
  | { kind: 'claim'; worker: number; types: readonly string[] | null; limit: number; now: number }
  | { kind: 'renew'; worker: number; leases: LeaseRef[]; now: number }
  | {
      kind: 'progress' | 'complete' | 'finishCanceled' | 'release';
      worker: number;
      lease: LeaseRef;
      now: number;
    }
  | { kind: 'fail'; worker: number; lease: LeaseRef; retryAt: number | null; now: number }
  | { kind: 'recover'; node: number; now: number }
  | { kind: 'cancel' | 'delete'; node: number; id: string; now: number }
  | { kind: 'retry'; node: number; id: string; runAt: number; now: number }
  /** A page of the relay cursor: it reads the log and changes no operation. */
  | { kind: 'relay'; limit: number; now: number };

/** What a call gave: its value, or the code of the AcceptedError it rejected with. */
export type Observed = { ok: true; value: unknown } | { ok: false; code: string; message: string };

export function describeAction(a: Action): string {
  const short = (id: string) => `…${id.slice(-5)}`;
  switch (a.kind) {
    case 'create':
      return `create(${short(a.op.id)} type=${a.op.type} max=${a.op.maxAttempts} runAt=${a.op.runAt})`;
    case 'claim':
      return `claim(w${a.worker} limit=${a.limit})`;
    case 'renew':
      return `renew(w${a.worker} ${a.leases.map((l) => short(l.token)).join(',')})`;
    case 'fail':
      return `fail(w${a.worker} ${short(a.lease.operationId)}/${short(a.lease.token)} retryAt=${a.retryAt})`;
    case 'progress':
    case 'complete':
    case 'finishCanceled':
    case 'release':
      return `${a.kind}(w${a.worker} ${short(a.lease.operationId)}/${short(a.lease.token)})`;
    case 'recover':
      return `recover(node${a.node})`;
    case 'cancel':
    case 'delete':
      return `${a.kind}(${short(a.id)})`;
    case 'retry':
      return `retry(${short(a.id)} runAt=${a.runAt})`;
    case 'relay':
      return `relay(limit=${a.limit})`;
  }
}

export function describeObserved(o: Observed): string {
  if (!o.ok) return o.code === 'UNEXPECTED' ? `failed: ${o.message}` : `rejected ${o.code}`;
  const v = o.value;
  const short = (id: string) => `…${id.slice(-5)}`;
  const op = (x: Operation) =>
    `${short(x.id)} ${x.status} v${x.version} attempts=${x.attempts}${x.cancelRequestedAt === null ? '' : ' cancel-requested'}`;
  if (v === undefined) return 'ok';
  if (typeof v !== 'object' || v === null) return `ok ${JSON.stringify(v)}`;
  if ('claimed' in v) {
    const r = v as ClaimResult;
    const taken = r.claimed.map((c) => `${op(c.operation)} lease ${short(c.lease.token)}`);
    return `ok claimed [${taken.join(', ')}] nextRunAt=${r.nextRunAt}`;
  }
  if (Array.isArray(v)) {
    return `ok [${(v as LeaseState[]).map((l) => `${short(l.token)} ${l.state}`).join(', ')}]`;
  }
  if ('status' in v) return `ok ${op(v as Operation)}`;
  return `ok ${JSON.stringify(v)}`;
}

function clone(m: Model): Model {
  return structuredClone(m);
}

function opOf(m: Model, id: string): ModelOp | undefined {
  return m.ops.find((op) => op.id === id);
}

/** True when `lease` is the current lease of a running operation. */
export function isHeld(m: Model, lease: LeaseRef): boolean {
  const op = opOf(m, lease.operationId);
  return op?.status === 'running' && op.lease?.token === lease.token;
}

function typeMatches(types: readonly string[] | null, type: string): boolean {
  return types === null || types.includes(type);
}

function push(op: ModelOp, type: EventType, attempt: number | null, code: string | null): void {
  op.version += 1;
  op.events.push({ type, version: op.version, attempt, code });
}

/** Ends the attempt of a running operation without a result, as `rules.planAttemptEnd`. */
function endAttempt(
  op: ModelOp,
  end: { code: string; retryAt: number | null; givenBack: boolean },
): void {
  op.lease = null;
  if (op.cancelRequested) {
    op.status = 'canceled';
    push(op, 'operation.canceled', op.attempts, CODES.canceled);
  } else if (end.retryAt !== null) {
    op.status = 'queued';
    op.runAt = end.retryAt;
    if (end.givenBack) op.attempts -= 1;
    push(op, 'operation.retrying', end.givenBack ? null : op.attempts, end.code);
  } else {
    op.status = 'failed';
    push(op, 'operation.failed', op.attempts, end.code);
  }
}

function isTerminal(status: ModelOp['status']): boolean {
  return status === 'succeeded' || status === 'failed' || status === 'canceled';
}

/** The error a call must reject with, or null when it must succeed. */
function expectedError(m: Model, a: Action): string | null {
  switch (a.kind) {
    case 'progress':
    case 'complete':
    case 'finishCanceled':
    case 'release':
    case 'fail':
      return isHeld(m, a.lease) ? null : 'LEASE_LOST';
    case 'cancel': {
      const op = opOf(m, a.id);
      if (!op || op.status === 'deleted') return 'OPERATION_NOT_FOUND';
      return isTerminal(op.status) ? 'ALREADY_TERMINAL' : null;
    }
    case 'retry': {
      const op = opOf(m, a.id);
      if (!op || op.status === 'deleted') return 'OPERATION_NOT_FOUND';
      return op.status === 'failed' || op.status === 'canceled' ? null : 'ILLEGAL_TRANSITION';
    }
    case 'delete': {
      const op = opOf(m, a.id);
      if (!op || op.status === 'deleted') return 'OPERATION_NOT_FOUND';
      return isTerminal(op.status) ? null : 'ILLEGAL_TRANSITION';
    }
    default:
      return null;
  }
}

/** Checks the operation a call returned against the model's. */
function sameOperation(returned: unknown, op: ModelOp, what: string): string | null {
  const o = returned as Operation | null;
  if (!o || typeof o !== 'object') return `${what} returned ${String(returned)}, not an operation`;
  const got = [o.id, o.status, o.version, o.attempts, o.cancelRequestedAt !== null, o.runAt];
  const want = [op.id, op.status, op.version, op.attempts, op.cancelRequested, op.runAt];
  if (JSON.stringify(got) === JSON.stringify(want)) return null;
  return `${what} returned [id,status,version,attempts,cancelRequested,runAt] ${JSON.stringify(got)}, the model says ${JSON.stringify(want)}`;
}

/** How the store may run a call: `strict` when it runs alone or serialized (no row skipped). */
export interface ApplyMode {
  strict: boolean;
}

/**
 * Replays `a` on a copy of `m`, checking `obs`: the models the store may be in afterwards, or
 * why `obs` is not a possible answer.
 */
export function apply(m0: Model, a: Action, obs: Observed, mode: ApplyMode): Model[] | string {
  const expected = expectedError(m0, a);
  if (!obs.ok && obs.code === 'UNEXPECTED') return `failed unexpectedly: ${obs.message}`;
  if (expected !== null) {
    if (obs.ok) return `succeeded, but the model expects ${expected}`;
    if (obs.code !== expected) return `rejected ${obs.code}, but the model expects ${expected}`;
    return [m0]; // a refused call changes nothing (the state comparison checks it)
  }
  if (!obs.ok) return `rejected ${obs.code} (${obs.message}), but the model expects success`;
  const m = clone(m0);
  switch (a.kind) {
    case 'relay':
      return [m];
    case 'create': {
      const op: ModelOp = {
        id: a.op.id,
        type: a.op.type,
        maxAttempts: a.op.maxAttempts,
        status: 'queued',
        version: 1,
        attempts: 0,
        runAt: a.op.runAt,
        cancelRequested: false,
        lease: null,
        events: [{ type: 'operation.queued', version: 1, attempt: null, code: null }],
      };
      m.ops.push(op);
      return sameOperation(obs.ok ? obs.value : null, op, 'create') ?? [m];
    }
    case 'claim':
      return claim(m, a, obs.ok ? (obs.value as ClaimResult) : null, mode);
    case 'renew': {
      const states = (obs.ok ? obs.value : null) as LeaseState[] | null;
      if (!Array.isArray(states) || states.length !== a.leases.length) {
        return `renew answered ${JSON.stringify(states)} for ${a.leases.length} leases`;
      }
      for (const [i, lease] of a.leases.entries()) {
        const state = states[i];
        const op = opOf(m, lease.operationId);
        const held = isHeld(m, lease);
        const want = !held ? 'lost' : op?.cancelRequested ? 'cancel_requested' : 'held';
        if (state?.token !== lease.token || state.operationId !== lease.operationId) {
          return `renew answer ${i} is about another lease`;
        }
        if (state.state !== want) {
          return `renew said ${state.state} for lease …${lease.token.slice(-5)}, the model says ${want}`;
        }
        if (held && op?.lease) op.lease.epoch = m.epoch;
      }
      return [m];
    }
    case 'progress': {
      const op = opOf(m, a.lease.operationId) as ModelOp;
      push(op, 'operation.progress', null, null);
      return [m];
    }
    case 'complete': {
      const op = opOf(m, a.lease.operationId) as ModelOp;
      op.status = 'succeeded';
      op.lease = null;
      push(op, 'operation.succeeded', op.attempts, null);
      return [m];
    }
    case 'finishCanceled': {
      const op = opOf(m, a.lease.operationId) as ModelOp;
      op.status = 'canceled';
      op.lease = null;
      push(op, 'operation.canceled', op.attempts, CODES.finishCanceled);
      return [m];
    }
    case 'fail': {
      const op = opOf(m, a.lease.operationId) as ModelOp;
      endAttempt(op, { code: CODES.fail, retryAt: a.retryAt, givenBack: false });
      return [m];
    }
    case 'release': {
      const op = opOf(m, a.lease.operationId) as ModelOp;
      endAttempt(op, { code: CODES.release, retryAt: a.now, givenBack: true });
      return [m];
    }
    case 'recover':
      return recover(m, a, obs.ok ? obs.value : null, mode);
    case 'cancel': {
      const op = opOf(m, a.id) as ModelOp;
      if (op.status === 'queued') {
        op.status = 'canceled';
        push(op, 'operation.canceled', null, CODES.cancel);
      } else if (!op.cancelRequested) {
        op.cancelRequested = true;
        push(op, 'operation.cancel_requested', null, null);
      }
      return sameOperation(obs.ok ? obs.value : null, op, 'cancel') ?? [m];
    }
    case 'retry': {
      const op = opOf(m, a.id) as ModelOp;
      op.status = 'queued';
      op.attempts = 0;
      op.cancelRequested = false;
      op.runAt = a.runAt;
      push(op, 'operation.queued', null, null);
      return sameOperation(obs.ok ? obs.value : null, op, 'retry') ?? [m];
    }
    case 'delete': {
      const op = opOf(m, a.id) as ModelOp;
      op.status = 'deleted';
      op.version += 1;
      op.events = [{ type: 'operation.deleted', version: op.version, attempt: null, code: null }];
      return [m];
    }
  }
}

function claim(
  m: Model,
  a: Extract<Action, { kind: 'claim' }>,
  result: ClaimResult | null,
  mode: ApplyMode,
): Model[] | string {
  if (!result || !Array.isArray(result.claimed)) return `claim answered ${JSON.stringify(result)}`;
  const due = m.ops.filter(
    (op) => op.status === 'queued' && op.runAt <= a.now && typeMatches(a.types, op.type),
  );
  const ids = result.claimed.map((c) => c.operation.id);
  if (new Set(ids).size !== ids.length)
    return `claim handed out one operation twice: ${ids.join(',')}`;
  if (ids.length > a.limit) return `claim handed out ${ids.length} operations, limit ${a.limit}`;
  for (const id of ids) {
    const op = opOf(m, id);
    if (!op) return `claim handed out an unknown operation ${id}`;
    if (op.status === 'running') {
      return `claim handed out …${id.slice(-5)}, whose lease …${op.lease?.token.slice(-5)} is still held (two holders)`;
    }
    if (!due.includes(op)) {
      return `claim handed out …${id.slice(-5)}, which is ${op.status} (runAt ${op.runAt}, type ${op.type}), not queued and due at ${a.now} for types ${JSON.stringify(a.types)}`;
    }
  }
  const runAts = result.claimed.map((c) => c.operation.runAt);
  if (runAts.some((t, i) => i > 0 && t < (runAts[i - 1] ?? 0))) {
    return `claim's operations are not oldest runAt first: ${runAts.join(',')}`;
  }
  if (mode.strict) {
    const want = Math.min(a.limit, due.length);
    if (ids.length !== want) {
      return `claim handed out ${ids.length} operations; ${due.length} were due, limit ${a.limit}`;
    }
    const left = due.filter((op) => !ids.includes(op.id));
    const latestTaken = Math.max(...runAts, -Infinity);
    const earliestLeft = Math.min(...left.map((op) => op.runAt), Infinity);
    if (latestTaken > earliestLeft) {
      return `claim took runAt ${latestTaken} before a due operation with runAt ${earliestLeft}`;
    }
  }
  for (const c of result.claimed) {
    const op = opOf(m, c.operation.id) as ModelOp;
    if (op.attempts + 1 > op.maxAttempts) {
      return `claim started attempt ${op.attempts + 1} of …${op.id.slice(-5)}, beyond maxAttempts ${op.maxAttempts}`;
    }
    if (c.lease.operationId !== op.id || typeof c.lease.token !== 'string' || !c.lease.token) {
      return `claim's lease names ${c.lease.operationId}, not …${op.id.slice(-5)}`;
    }
    if (m.tokens.includes(c.lease.token)) return `claim handed out a lease token twice`;
    if (c.lease.expiresAt < a.now + LEASE_MS) {
      return `claim's lease expires at ${c.lease.expiresAt}, before now + leaseMs`;
    }
    op.status = 'running';
    op.attempts += 1;
    op.lease = { token: c.lease.token, epoch: m.epoch };
    push(op, 'operation.started', op.attempts, null);
    const problem = sameOperation(c.operation, op, 'claim');
    if (problem) return problem;
    m.tokens.push(c.lease.token);
    const held = m.held[a.worker] ?? [];
    held.push({ operationId: op.id, token: c.lease.token });
    m.held[a.worker] = held.slice(-LEASES_KEPT);
  }
  if (mode.strict) {
    const queued = m.ops.filter((op) => op.status === 'queued' && typeMatches(a.types, op.type));
    const next =
      ids.length < a.limit && queued.length > 0 ? Math.min(...queued.map((op) => op.runAt)) : null;
    if (result.nextRunAt !== next) {
      return `claim's nextRunAt is ${result.nextRunAt}, the model says ${next}`;
    }
  }
  return [m];
}

function recover(
  m: Model,
  a: Extract<Action, { kind: 'recover' }>,
  count: unknown,
  mode: ApplyMode,
): Model[] | string {
  const expired = m.ops.filter(
    (op) => op.status === 'running' && op.lease !== null && op.lease.epoch < m.epoch,
  );
  if (typeof count !== 'number') return `recover answered ${String(count)}`;
  if (mode.strict ? count !== expired.length : count > expired.length) {
    return `recover recovered ${count} leases; ${expired.length} had expired`;
  }
  const end = (model: Model, ids: string[]) => {
    for (const id of ids) {
      const op = opOf(model, id) as ModelOp;
      const retryAt = op.attempts < op.maxAttempts ? a.now : null;
      endAttempt(op, { code: CODES.expired, retryAt, givenBack: false });
    }
    return model;
  };
  // Skipping rows another node holds locked, it may have recovered any `count` of them.
  return subsets(
    expired.map((op) => op.id),
    count,
  ).map((ids) => end(clone(m), ids));
}

function subsets<T>(items: T[], size: number): T[][] {
  if (size === 0) return [[]];
  if (items.length < size) return [];
  const [first, ...rest] = items as [T, ...T[]];
  return [...subsets(rest, size - 1).map((s) => [first, ...s]), ...subsets(rest, size)];
}

/**
 * Some order of the calls of one batch, each answered as observed, leading to a state that
 * `accept` takes (no mismatch): the model after them, or the deepest reason none fits.
 */
export function linearize(
  m: Model,
  calls: { action: Action; observed: Observed }[],
  mode: ApplyMode,
  accept: (m: Model) => string[],
): { model: Model } | { error: string } {
  return searchOrders({
    start: m,
    calls,
    step: (model, call) => apply(model, call.action, call.observed, mode),
    label: (call) => describeAction(call.action),
    finish: accept,
  });
}

/** The events of `log` by operation, in log order. */
function byOperation(log: readonly OperationEvent[]): Map<string, OperationEvent[]> {
  const out = new Map<string, OperationEvent[]>();
  for (const event of log) {
    const list = out.get(event.operationId) ?? [];
    list.push(event);
    out.set(event.operationId, list);
  }
  return out;
}

function eventView(e: OperationEvent): ModelEvent {
  return {
    type: e.type,
    version: e.version,
    attempt: e.data.attempt ?? null,
    code: e.data.error?.code ?? null,
  };
}

/** Where the store (its rows and its whole log) differs from the model. */
export function compareState(
  m: Model,
  rows: readonly Operation[],
  log: readonly OperationEvent[],
): string[] {
  const out: string[] = [];
  const rowById = new Map(rows.map((row) => [row.id, row]));
  const events = byOperation(log);
  for (const op of m.ops) {
    const name = `…${op.id.slice(-5)}`;
    const row = rowById.get(op.id);
    rowById.delete(op.id);
    const got = (events.get(op.id) ?? []).map(eventView);
    if (JSON.stringify(got) !== JSON.stringify(op.events)) {
      const show = (list: ModelEvent[]) =>
        list
          .map(
            (e) =>
              `${e.type.slice(10)}@${e.version}${e.attempt === null ? '' : `#${e.attempt}`}${e.code ? `:${e.code}` : ''}`,
          )
          .join(' ');
      out.push(`${name}: the log shows [${show(got)}], the model [${show(op.events)}]`);
    }
    if (op.status === 'deleted') {
      if (row) out.push(`${name} was deleted, but its row is still there (${row.status})`);
      continue;
    }
    if (!row) {
      out.push(`${name}: no row, the model has it ${op.status}`);
      continue;
    }
    const fields = (
      o: { status: string; version: number; attempts: number; runAt: number },
      c: boolean,
    ) =>
      `status=${o.status} version=${o.version} attempts=${o.attempts} runAt=${o.runAt} cancelRequested=${c}`;
    const g = fields(row, row.cancelRequestedAt !== null);
    const w = fields(op, op.cancelRequested);
    if (g !== w) out.push(`${name}: the row has ${g}, the model ${w}`);
  }
  for (const id of rowById.keys()) out.push(`…${id.slice(-5)}: a row the model does not know`);
  return out;
}

const TERMINAL: ReadonlySet<string> = new Set([
  'operation.succeeded',
  'operation.failed',
  'operation.canceled',
]);

/**
 * The invariants of a log and its rows that hold whatever the model says: seqs ascending;
 * each operation's versions whole and gap-free from 1 (a deleted one shows its deletion
 * alone); each life of an operation (from its creation or a manual retry) has at most one
 * terminal event, and nothing but a retry follows it; statuses follow the status machine; a
 * cancel request is never followed by a new attempt or a requeue in its life; attempts count
 * up from 1 and never past maxAttempts; the row shows the status and version of its last event
 * and the attempts its log counts.
 */
export function checkLog(
  log: readonly OperationEvent[],
  rows: readonly Operation[],
  maxAttempts: ReadonlyMap<string, number>,
): string[] {
  const out: string[] = [];
  for (let i = 1; i < log.length; i++) {
    const a = log[i - 1] as OperationEvent;
    const b = log[i] as OperationEvent;
    if (b.seq <= a.seq) out.push(`seq ${b.seq} follows seq ${a.seq} in the log`);
  }
  const rowById = new Map(rows.map((row) => [row.id, row]));
  const logged = byOperation(log);
  for (const [id, events] of logged) {
    const name = `…${id.slice(-5)}`;
    const last = events.at(-1) as OperationEvent;
    if (events.some((e) => e.type === 'operation.deleted')) {
      if (events.length !== 1) out.push(`${name}: events survive its deletion`);
      if (rowById.has(id)) out.push(`${name}: deleted, but its row is still there`);
      continue;
    }
    events.forEach((e, i) => {
      if (e.version !== i + 1) {
        out.push(`${name}: event ${i + 1} (${e.type}) has version ${e.version} (gap or duplicate)`);
      }
    });
    if (events[0]?.type !== 'operation.queued')
      out.push(`${name}: the first event is ${events[0]?.type}`);
    let status: OperationStatus | null = null;
    let attempts = 0;
    let terminal: string | null = null;
    let cancelRequested = false;
    const max = maxAttempts.get(id) ?? Infinity;
    for (const e of events) {
      const next = e.data.status;
      if (next === undefined) {
        out.push(`${name}: ${e.type} says no status`);
        continue;
      }
      if (status !== null && next !== status && !canTransition(status, next)) {
        out.push(`${name}: ${e.type} moves ${status} -> ${next}`);
      }
      if (terminal !== null && e.type !== 'operation.queued') {
        out.push(`${name}: ${e.type} after ${terminal} (version ${e.version})`);
      }
      if (e.type === 'operation.queued') {
        if (status !== null && status !== 'failed' && status !== 'canceled') {
          out.push(`${name}: queued again while ${status}`);
        }
        attempts = 0;
        terminal = null;
        cancelRequested = false;
      } else if (e.type === 'operation.started') {
        attempts += 1;
        if (e.data.attempt !== attempts)
          out.push(`${name}: started attempt ${e.data.attempt}, the ${attempts}th`);
        if (attempts > max) out.push(`${name}: attempt ${attempts} beyond maxAttempts ${max}`);
        if (cancelRequested) out.push(`${name}: a new attempt after its cancel was requested`);
      } else if (e.type === 'operation.retrying') {
        if (e.data.attempt === undefined) attempts -= 1; // given back: the attempt did not count
        if (cancelRequested) out.push(`${name}: requeued after its cancel was requested`);
      } else if (e.type === 'operation.cancel_requested') {
        if (cancelRequested) out.push(`${name}: cancel requested twice`);
        cancelRequested = true;
      }
      if (TERMINAL.has(e.type)) {
        terminal = e.type;
        if (cancelRequested && e.type === 'operation.failed') {
          out.push(`${name}: failed although its cancel was requested`);
        }
      }
      status = next;
    }
    const row = rowById.get(id);
    if (!row) {
      out.push(`${name}: events but no row`);
      continue;
    }
    if (row.status !== last.data.status || row.version !== last.version) {
      out.push(
        `${name}: the row is ${row.status} at version ${row.version}, its last event ${last.type} (${last.data.status}) at version ${last.version}`,
      );
    }
    if (row.attempts !== attempts)
      out.push(`${name}: the row counts ${row.attempts} attempts, its log ${attempts}`);
    if (row.attempts > row.maxAttempts)
      out.push(`${name}: ${row.attempts} attempts, beyond maxAttempts`);
  }
  for (const id of rowById.keys())
    if (!logged.has(id)) out.push(`…${id.slice(-5)}: a row without events`);
  return out;
}

// ---- what a filtered read must give -----------------------------------------------------------

/**
 * A list a filter names: `distinct` values of `pool` (from `offset` on, round the pool), repeated
 * in turn to `length` entries (fewer distinct values when the pool or the length is shorter).
 */
export function filterList<T>(
  pool: readonly T[],
  distinct: number,
  offset: number,
  length: number,
): T[] {
  const d = Math.max(1, Math.min(distinct, pool.length, length));
  return Array.from({ length }, (_, i) => pool[(offset + (i % d)) % pool.length] as T);
}

/** The ids a `list` of the tenant's rows (all of them, newest first) must give for `query`. */
export function listAnswer(
  rows: readonly Operation[],
  query: Pick<ListQuery, 'status' | 'type'>,
): string[] {
  const statuses = query.status && query.status.length > 0 ? new Set(query.status) : null;
  return rows
    .filter((row) => statuses === null || statuses.has(row.status))
    .filter((row) => query.type === undefined || row.type === query.type)
    .map((row) => row.id);
}

/** The seqs a `readEvents` of the whole log (in seq order) must give for `query`, unlimited. */
export function eventsAnswer(
  log: readonly OperationEvent[],
  query: Omit<EventQuery, 'limit' | 'labels'>,
): number[] {
  const set = <T>(values: readonly T[] | undefined) =>
    values && values.length > 0 ? new Set(values) : null;
  const ids = set(query.operationIds);
  const types = set(query.types);
  const operationTypes = set(query.operationTypes);
  return log
    .filter(
      (e) =>
        e.seq > query.after &&
        (query.operationId === undefined || e.operationId === query.operationId) &&
        (query.tenant === undefined || e.tenant === query.tenant) &&
        (ids === null || ids.has(e.operationId)) &&
        (types === null || types.has(e.type)) &&
        (operationTypes === null || operationTypes.has(e.operationType)),
    )
    .map((e) => e.seq);
}
