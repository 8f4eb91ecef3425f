import type { OperationError } from '../domain/operation.ts';

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

/**
 * The expiry of a lease taken or renewed at `now` (the caller's clock) for `leaseMs`, by a
 * write asked for at `askedAt` (`Date.now()` then): the time the write waited in the queue
 * (behind a group commit, a lock) is added, so that a lease is never born expired however
 * long its write took to run.
 */
export function leaseExpiry(now: number, leaseMs: number, askedAt: number): number {
  return now + leaseMs + Math.max(0, Date.now() - askedAt);
}
