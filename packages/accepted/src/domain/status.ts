import { AcceptedError } from './errors.ts';
import type { OperationStatus } from './operation.ts';

/**
 * The status machine. Every legal transition is listed; anything else is an
 * `ILLEGAL_TRANSITION` (or `ALREADY_TERMINAL` when leaving a terminal status).
 *
 * queued   -> running (claimed), canceled (canceled before it ran)
 * running  -> succeeded, failed, canceled, queued (retry with a later runAt, or lease released)
 * failed   -> queued (manual retry)
 * canceled -> queued (manual retry)
 */
const TRANSITIONS: Readonly<Record<OperationStatus, readonly OperationStatus[]>> = {
  queued: ['running', 'canceled'],
  running: ['succeeded', 'failed', 'canceled', 'queued'],
  succeeded: [],
  failed: ['queued'],
  canceled: ['queued'],
};

export function canTransition(from: OperationStatus, to: OperationStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

export function assertTransition(id: string, from: OperationStatus, to: OperationStatus): void {
  if (canTransition(from, to)) return;
  const terminal = from === 'succeeded' || from === 'failed' || from === 'canceled';
  throw new AcceptedError(
    terminal && to !== 'queued' ? 'ALREADY_TERMINAL' : 'ILLEGAL_TRANSITION',
    `Operation ${id} is ${from}; it cannot become ${to}.`,
    {
      details: { from, to },
      fix:
        from === 'succeeded'
          ? 'A succeeded operation is final; submit a new operation to run the work again.'
          : `Only these transitions are allowed from ${from}: ${TRANSITIONS[from].join(', ') || 'none'}.`,
    },
  );
}

/**
 * A conditional change (`If-Match`): passes when no versions are given or the current version
 * is one of them, else PRECONDITION_FAILED and nothing changes.
 */
export function assertVersion(
  id: string,
  current: number,
  ifVersion: readonly number[] | undefined,
): void {
  if (ifVersion === undefined || ifVersion.includes(current)) return;
  throw new AcceptedError(
    'PRECONDITION_FAILED',
    `Operation ${id} is at version ${current}, not the one given in If-Match.`,
    {
      details: { version: current },
      fix: 'Read the operation again (its ETag is the current version) and decide anew.',
    },
  );
}
