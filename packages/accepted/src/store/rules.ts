import type { EventData, EventType } from '../domain/events.ts';
import { AcceptedError } from '../domain/errors.ts';
import { isTerminal, type OperationError, type OperationStatus } from '../domain/operation.ts';
import { assertTransition } from '../domain/status.ts';

/**
 * Rules every store adapter applies the same way; the adapters differ only in the SQL that
 * carries them out.
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

/** How a running operation is left when its attempt ends without a result. */
export interface AttemptEnd {
  /** The row's new state: each adapter has one update per state. */
  state: 'canceled' | 'failed' | 'requeued';
  /**
   * The update's parameters, in order: the error (JSON text), `finished_at` (canceled, failed)
   * or `run_at` (requeued), `updated_at`.
   */
  params: [error: string, at: number, now: number];
  /** The attempt is given back (a shutdown): it does not count, `attempts` goes down by one. */
  givenBack: boolean;
  /** The event written with the change, from the row's attempt count after it. */
  event(attempts: number): { type: EventType; data: EventData };
}

/**
 * The end of an attempt without a result, whoever ends it (the worker failing or giving back
 * its lease, or lease recovery), as `afterAttempt` decides: the state, the values stored and
 * the event. `retryAt` null: no attempt is left. Both adapters write exactly this.
 */
export function planAttemptEnd(end: {
  cancelRequestedAt: number | null;
  error: OperationError;
  retryAt: number | null;
  givenBack?: boolean;
  now: number;
}): AttemptEnd {
  const { error, retryAt, now } = end;
  const givenBack = end.givenBack ?? false;
  switch (afterAttempt(end.cancelRequestedAt, retryAt !== null)) {
    case 'cancel':
      return {
        state: 'canceled',
        params: [JSON.stringify(CANCELED_ERROR), now, now],
        givenBack: false,
        event: (attempts) => ({
          type: 'operation.canceled',
          data: { status: 'canceled', attempt: attempts, error: CANCELED_ERROR },
        }),
      };
    case 'fail':
      return {
        state: 'failed',
        params: [JSON.stringify(error), now, now],
        givenBack: false,
        event: (attempts) => ({
          type: 'operation.failed',
          data: { status: 'failed', attempt: attempts, error },
        }),
      };
    case 'requeue': {
      const runAt = retryAt ?? now;
      return {
        state: 'requeued',
        params: [JSON.stringify(error), runAt, now],
        givenBack,
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
 * The expiry of a lease taken or renewed at `now` (the caller's clock) for `leaseMs`, by a
 * write asked for at `askedAt` (`Date.now()` then): the time the write waited in the queue
 * (behind a group commit, a lock) is added, so that a lease is never born expired however
 * long its write took to run.
 */
export function leaseExpiry(now: number, leaseMs: number, askedAt: number): number {
  return now + leaseMs + Math.max(0, Date.now() - askedAt);
}

/**
 * A manual retry (`retry()`): only a failed or canceled operation runs again, from attempt 0
 * (ILLEGAL_TRANSITION otherwise, saying what to wait for).
 */
export function assertRetryable(id: string, status: OperationStatus): void {
  if (status === 'failed' || status === 'canceled') return;
  throw new AcceptedError(
    'ILLEGAL_TRANSITION',
    `Operation ${id} is ${status}; only failed or canceled operations can be retried.`,
    { details: { status }, fix: 'Wait until it has failed or been canceled.' },
  );
}

/** A delete (`delete()`): only a finished operation goes, with its events and keys. */
export function assertDeletable(id: string, status: OperationStatus): void {
  if (isTerminal(status)) return;
  throw new AcceptedError(
    'ILLEGAL_TRANSITION',
    `Operation ${id} is ${status}; only finished operations can be deleted.`,
    { details: { status }, fix: 'Cancel it first, then delete it.' },
  );
}

/**
 * What a cancel request does to an operation in `status`: a queued one is canceled at once; a
 * running one has its cancellation requested (its attempt ends it), once (`none` when already
 * requested); a finished one cannot be canceled (ALREADY_TERMINAL).
 */
export function planCancel(
  id: string,
  status: OperationStatus,
  cancelRequestedAt: number | null,
): 'cancel' | 'request' | 'none' {
  if (status === 'queued') return 'cancel';
  if (status === 'running') return cancelRequestedAt === null ? 'request' : 'none';
  assertTransition(id, status, 'canceled');
  return 'none';
}
