import type { EventData, EventType } from '../domain/events.ts';
import { AcceptedError } from '../domain/errors.ts';
import {
  isTerminal,
  type Json,
  type OperationError,
  type OperationStatus,
  type Progress,
} from '../domain/operation.ts';
import { assertTransition, assertVersion } from '../domain/status.ts';
import type { ChangedRow, IdempotencyRow, OperationRow } from './operation-rows.ts';
import type {
  ClaimedOperation,
  CreateOnceResult,
  IdempotencyClaim,
  LeaseRef,
  LeaseState,
} from './store.ts';

/**
 * Rules every store adapter applies the same way; the adapters differ only in the SQL that
 * carries them out. A transition is planned here (`plan...`: the checks, the columns to set,
 * the event to append); the adapter reads and locks the row, runs the plan's update on it and
 * appends the plan's event.
 */

/** The error of an operation canceled on request. */
export const CANCELED_ERROR: OperationError = Object.freeze({
  code: 'CANCELED',
  message: 'Canceled on request.',
});

/** The error of an attempt whose worker stopped renewing its lease. */
export const LEASE_EXPIRED_ERROR: OperationError = Object.freeze({
  code: 'LEASE_EXPIRED',
  message: 'The worker running this attempt stopped renewing its lease (it crashed or hung).',
});

// ---- the columns a transition sets -----------------------------------------------------------

/** The assignments that end a lease (every transition out of `running`). */
export const CLEAR_LEASE = 'lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL';

/**
 * The assignments of each transition's update of the operations table: `params`, the columns
 * set to the plan's values (in their order), then `fixed` ones. Every update also bumps
 * `version`.
 */
const ASSIGNMENTS = {
  progress: { params: ['progress', 'updated_at'], fixed: '' },
  canceled: {
    params: ['error', 'finished_at', 'updated_at'],
    fixed: `status = 'canceled', ${CLEAR_LEASE}`,
  },
  failed: {
    params: ['error', 'finished_at', 'updated_at'],
    fixed: `status = 'failed', ${CLEAR_LEASE}`,
  },
  requeued: {
    params: ['error', 'run_at', 'updated_at'],
    fixed: `status = 'queued', ${CLEAR_LEASE}`,
  },
  /** Requeued, the attempt not counted (given back at shutdown). */
  givenBack: {
    params: ['error', 'run_at', 'updated_at'],
    fixed: `status = 'queued', attempts = attempts - 1, ${CLEAR_LEASE}`,
  },
  cancelRequested: { params: ['cancel_requested_at', 'updated_at'], fixed: '' },
  retried: {
    params: ['run_at', 'updated_at'],
    fixed: `status = 'queued', attempts = 0, result = NULL, error = NULL, progress = NULL,
      finished_at = NULL, cancel_requested_at = NULL`,
  },
} as const satisfies Record<string, { params: readonly string[]; fixed: string }>;

/** Which update a transition runs (the key of its SET list in `setLists`). */
export type SetName = keyof typeof ASSIGNMENTS;

/**
 * The SET list of each transition's update in one dialect, `version = version + 1` included:
 * `placeholder(i)` writes the i-th parameter (from 1). An adapter renders them once, at load,
 * and appends its WHERE parameters after the plan's values.
 */
export function setLists(placeholder: (i: number) => string): Readonly<Record<SetName, string>> {
  const lists = {} as Record<SetName, string>;
  for (const name of Object.keys(ASSIGNMENTS) as SetName[]) {
    const { params, fixed } = ASSIGNMENTS[name];
    const set = params.map((column, i) => `${column} = ${placeholder(i + 1)}`);
    if (fixed !== '') set.push(fixed);
    set.push('version = version + 1');
    lists[name] = set.join(', ');
  }
  return lists;
}

// ---- transitions ------------------------------------------------------------------------------

/** An event to append, without what the log adds (seq, time, the operation's columns). */
export interface PlannedEvent {
  type: EventType;
  data: EventData;
}

/** A planned change of one operation's row, and the event that goes with it. */
export interface Transition {
  /** The update: `setLists(...)[set]`. */
  set: SetName;
  /** Its parameters, in order. */
  values: (string | number | null)[];
  /** The time of the change: the event's. */
  now: number;
  /** Queued work may appear (a requeue, a retry): the workers are told. */
  work: boolean;
  /** The event, from the row's attempt count after the change. */
  event(attempts: number): PlannedEvent;
}

/** A running operation reports progress (under its lease). */
export function planProgress(progress: Progress, now: number): Transition {
  const event: PlannedEvent = { type: 'operation.progress', data: { status: 'running', progress } };
  return {
    set: 'progress',
    values: [JSON.stringify(progress), now],
    now,
    work: false,
    event: () => event,
  };
}

/** A running operation's worker honours its cancellation (under its lease). */
export function planFinishCanceled(error: OperationError, now: number): Transition {
  return attemptFinished('canceled', error, now);
}

/** A running operation finishes with its attempt, canceled or failed for good, with `error`. */
function attemptFinished(
  status: 'canceled' | 'failed',
  error: OperationError,
  now: number,
): Transition {
  const type = status === 'canceled' ? 'operation.canceled' : 'operation.failed';
  return {
    set: status,
    values: [JSON.stringify(error), now, now],
    now,
    work: false,
    event: (attempts) => ({ type, data: { status, attempt: attempts, error } }),
  };
}

/** The event of a completed attempt (the update is each adapter's hot statement). */
export function succeededEvent(attempts: number, result: Json): EventData {
  return { status: 'succeeded', attempt: attempts, result };
}

/**
 * What becomes of a running operation whose attempt ends without a result (failed with a
 * retry time, given back at shutdown, or lost with its lease): it runs again, unless its
 * cancellation was requested meanwhile (on any node), or its attempts are spent. A cancel
 * request is never forgotten by a requeue.
 */
export function afterAttempt(
  cancelRequestedAt: number | null,
  retry: boolean,
): 'requeue' | 'cancel' | 'fail' {
  if (cancelRequestedAt !== null) return 'cancel';
  return retry ? 'requeue' : 'fail';
}

/**
 * The end of an attempt without a result, whoever ends it (the worker failing or giving back
 * its lease, or lease recovery), as `afterAttempt` decides: the state, the values stored and
 * the event. `retryAt` null: no attempt is left. A given-back attempt does not count
 * (`attempts` goes down by one).
 */
export function planAttemptEnd(end: {
  cancelRequestedAt: number | null;
  error: OperationError;
  retryAt: number | null;
  givenBack?: boolean;
  now: number;
}): Transition {
  const { error, retryAt, now } = end;
  switch (afterAttempt(end.cancelRequestedAt, retryAt !== null)) {
    case 'cancel':
      return planFinishCanceled(CANCELED_ERROR, now);
    case 'fail':
      return attemptFinished('failed', error, now);
    case 'requeue': {
      const runAt = retryAt ?? now;
      const givenBack = end.givenBack ?? false;
      return {
        set: givenBack ? 'givenBack' : 'requeued',
        values: [JSON.stringify(error), runAt, now],
        now,
        work: true,
        // A given-back attempt did not happen: its event names none.
        event: (attempts) => ({
          type: 'operation.retrying',
          data: givenBack
            ? { status: 'queued', error, runAt }
            : { status: 'queued', attempt: attempts, error, runAt },
        }),
      };
    }
  }
}

/**
 * Lease recovery: a running operation whose lease expired at `now` ends its attempt as lost
 * (`planAttemptEnd`): it runs again while attempts are left.
 */
export function planLeaseExpired(
  row: Pick<OperationRow<unknown>, 'attempts' | 'max_attempts' | 'cancel_requested_at'>,
  now: number,
): Transition {
  return planAttemptEnd({
    cancelRequestedAt: row.cancel_requested_at,
    error: LEASE_EXPIRED_ERROR,
    retryAt: row.attempts < row.max_attempts ? now : null,
    now,
  });
}

/**
 * A cancel request (`cancel()`) on the operation's current row, `If-Match` first: a queued
 * operation is canceled at once; a running one has its cancellation requested (its attempt
 * ends it), once (null, nothing to change, when already requested); a finished one cannot be
 * canceled (ALREADY_TERMINAL).
 */
export function planCancel(
  row: Pick<OperationRow<unknown>, 'id' | 'status' | 'version' | 'cancel_requested_at'>,
  ifVersion: readonly number[] | undefined,
  error: OperationError,
  now: number,
): Transition | null {
  assertVersion(row.id, row.version, ifVersion);
  if (row.status === 'queued') {
    const event: PlannedEvent = { type: 'operation.canceled', data: { status: 'canceled', error } };
    const values = [JSON.stringify(error), now, now];
    return { set: 'canceled', values, now, work: false, event: () => event };
  }
  if (row.status === 'running') {
    if (row.cancel_requested_at !== null) return null;
    const event: PlannedEvent = { type: 'operation.cancel_requested', data: { status: 'running' } };
    return { set: 'cancelRequested', values: [now, now], now, work: false, event: () => event };
  }
  assertTransition(row.id, row.status, 'canceled');
  return null;
}

/**
 * A manual retry (`retry()`), `If-Match` first: only a failed or canceled operation runs
 * again, from attempt 0, at `runAt` (ILLEGAL_TRANSITION otherwise, saying what to wait for).
 */
export function planRetry(
  row: Pick<OperationRow<unknown>, 'id' | 'status' | 'version'>,
  ifVersion: readonly number[] | undefined,
  runAt: number,
  now: number,
): Transition {
  assertVersion(row.id, row.version, ifVersion);
  assertRetryable(row.id, row.status);
  const event: PlannedEvent = { type: 'operation.queued', data: { status: 'queued', runAt } };
  return { set: 'retried', values: [runAt, now], now, work: true, event: () => event };
}

/** Only a failed or canceled operation can be retried (ILLEGAL_TRANSITION otherwise). */
export function assertRetryable(id: string, status: OperationStatus): void {
  if (status === 'failed' || status === 'canceled') return;
  throw new AcceptedError(
    'ILLEGAL_TRANSITION',
    `Operation ${id} is ${status}; only failed or canceled operations can be retried.`,
    { details: { status }, fix: 'Wait until it has failed or been canceled.' },
  );
}

/**
 * A delete (`delete()`), `If-Match` first: only a finished operation goes, with its events
 * and keys (ILLEGAL_TRANSITION otherwise). Returns its last event, `operation.deleted`, with
 * the row to write it from (the adapter deletes the rows, then appends it).
 */
export function planDelete<Labels>(
  row: OperationRow<Labels>,
  ifVersion: readonly number[] | undefined,
): PlannedEvent & { row: ChangedRow<Labels> } {
  assertVersion(row.id, row.version, ifVersion);
  assertDeletable(row.id, row.status);
  return {
    row: {
      id: row.id,
      tenant: row.tenant,
      type: row.type,
      version: row.version + 1,
      attempts: 0,
      labels: row.labels,
    },
    type: 'operation.deleted',
    data: { status: row.status },
  };
}

/** Only a finished operation can be deleted (ILLEGAL_TRANSITION otherwise). */
export function assertDeletable(id: string, status: OperationStatus): void {
  if (isTerminal(status)) return;
  throw new AcceptedError(
    'ILLEGAL_TRANSITION',
    `Operation ${id} is ${status}; only finished operations can be deleted.`,
    { details: { status }, fix: 'Cancel it first, then delete it.' },
  );
}

// ---- leases -----------------------------------------------------------------------------------

/**
 * The expiry of a lease taken or renewed at `now` (the caller's clock) for `leaseMs`, by a
 * write asked for at `askedAt` (`Date.now()` then): the time the write waited in the queue
 * (behind a group commit, a lock) is added, so that a lease is never born expired however
 * long its write took to run.
 */
export function leaseExpiry(now: number, leaseMs: number, askedAt: number): number {
  return now + leaseMs + Math.max(0, Date.now() - askedAt);
}

/**
 * The operations a claim leased (their rows after the claim's update), oldest `runAt` first:
 * each attempt starts (`operation.started`, written with `append`) and is handed out with its
 * lease. `toOperation` is the adapter's row mapping.
 */
export function startClaimed<R extends OperationRow<unknown>>(
  rows: R[],
  expiresAt: number,
  now: number,
  append: (row: R, type: EventType, data: EventData, now: number) => void,
  toOperation: (row: R) => ClaimedOperation['operation'],
): ClaimedOperation[] {
  rows.sort((a, b) => a.run_at - b.run_at || a.pk - b.pk);
  return rows.map((row) => {
    append(row, 'operation.started', { status: 'running', attempt: row.attempts }, now);
    return {
      operation: toOperation(row),
      lease: { operationId: row.id, token: row.lease_token ?? '', expiresAt },
    };
  });
}

/**
 * What renewing `lease` found: the renewed row's `cancel_requested_at`, or undefined when no
 * running row holds that lease any more.
 */
export function renewed(lease: LeaseRef, cancelRequestedAt: number | null | undefined): LeaseState {
  return {
    operationId: lease.operationId,
    token: lease.token,
    state:
      cancelRequestedAt === undefined
        ? 'lost'
        : cancelRequestedAt === null
          ? 'held'
          : 'cancel_requested',
  };
}

// ---- idempotency keys -------------------------------------------------------------------------

/**
 * What an idempotency key found by `createOnce` says: null when the key is free (none, or
 * expired), an answer (another request used it, or its first request is still answering), or
 * `replay`: answer with the key's operation (the adapter reads it) and its first status.
 */
export function keyOutcome(
  found: IdempotencyRow | undefined,
  claim: IdempotencyClaim,
  now: number,
):
  | Extract<CreateOnceResult, { outcome: 'mismatch' | 'in_flight' }>
  | { outcome: 'replay'; operationId: string; status: number }
  | null {
  if (!found || found.expires_at <= now) return null;
  if (found.fingerprint !== claim.fingerprint) {
    return { outcome: 'mismatch', operationId: found.operation_id };
  }
  if (found.status === null && found.hold_until !== null && found.hold_until > now) {
    return { outcome: 'in_flight', operationId: found.operation_id, holdUntil: found.hold_until };
  }
  return { outcome: 'replay', operationId: found.operation_id, status: found.status ?? 202 };
}
