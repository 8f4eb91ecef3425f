import { randomBytes } from 'node:crypto';
import { AcceptedError } from '../domain/errors.ts';
import type { AcquireRequest, ConsumerLease, ConsumerRef, ConsumerState } from './consumers.ts';
import { leaseExpiry } from './rules.ts';

/**
 * The rules of the relay cursor (`ConsumerStore`), one copy for every adapter: whether a lease
 * is held, when it may be taken over, and that a position only moves forward. Each adapter
 * reads (and locks) a consumer's row, asks these functions for the row to write, and writes it
 * with the statements below: the adapters differ only in how a parameter is written and in
 * their locks.
 */

/** The row of the `consumers` table, as both adapters store it. */
export interface ConsumerRow {
  name: string;
  position: number;
  holder: string | null;
  token: string | null;
  lease_until: number | null;
  /** The lease's length, so that a commit renews it by as much. */
  lease_ms: number;
  created_at: number;
  updated_at: number;
}

/** The webhook dispatcher's consumer. */
export const WEBHOOK_CONSUMER = 'webhooks';

const COLUMNS = [
  'name',
  'position',
  'holder',
  'token',
  'lease_until',
  'lease_ms',
  'created_at',
  'updated_at',
] as const;

/**
 * The statements of the consumers table, with parameters written by `param(n)` (`?` or `$n`),
 * each used once, in order. `save` writes a whole row (`consumerParams`); `insertMissing` adds
 * a row unless one of that name exists (then the existing one is locked and planned on).
 */
export function consumerSql(param: (n: number) => string): {
  select: string;
  selectAll: string;
  insertMissing: string;
  save: string;
} {
  const values = COLUMNS.map((_, i) => param(i + 1)).join(', ');
  const insert = `INSERT INTO consumers (${COLUMNS.join(', ')}) VALUES (${values})`;
  const select = `SELECT ${COLUMNS.join(', ')} FROM consumers`;
  return {
    select: `${select} WHERE name = ${param(1)}`,
    selectAll: `${select} ORDER BY name`,
    insertMissing: `${insert} ON CONFLICT (name) DO NOTHING`,
    save: `${insert} ON CONFLICT (name) DO UPDATE SET ${COLUMNS.slice(1)
      .map((column) => `${column} = excluded.${column}`)
      .join(', ')}`,
  };
}

/** A row's values in the order of `consumerSql`'s parameters. */
export function consumerParams(row: ConsumerRow): (string | number | null)[] {
  return COLUMNS.map((column) => row[column]);
}

const NAME = /^[A-Za-z0-9._:-]{1,100}$/;

function invalid(message: string, field: string): AcceptedError {
  return new AcceptedError('VALIDATION_FAILED', message, {
    fields: [{ field, message }],
    fix: 'Correct the consumer request.',
  });
}

function checkAcquire(request: AcquireRequest): void {
  if (!NAME.test(request.name)) {
    throw invalid('must be 1 to 100 letters, digits, ".", "_", "-" or ":"', '/name');
  }
  if (!Number.isSafeInteger(request.leaseMs) || request.leaseMs < 1) {
    throw invalid('must be a whole number of milliseconds, at least 1', '/leaseMs');
  }
}

/** A new consumer (no holder yet) at `startAt`: 0, or `lastSeq` (the log's last seq now). */
export function newConsumer(request: AcquireRequest, lastSeq: number): ConsumerRow {
  checkAcquire(request);
  return {
    name: request.name,
    position: request.startAt === 'earliest' ? 0 : lastSeq,
    holder: null,
    token: null,
    lease_until: null,
    lease_ms: request.leaseMs,
    created_at: request.now,
    updated_at: request.now,
  };
}

/** A new lease token: unguessable, so that only its holder can commit under it. */
export function newConsumerToken(): string {
  return `cl_${randomBytes(18).toString('base64url')}`;
}

/** True while `row`'s lease runs at `now` (a released lease never runs). */
export function leaseRuns(row: ConsumerRow, now: number): boolean {
  return row.token !== null && row.lease_until !== null && row.lease_until > now;
}

/**
 * What `acquire` writes, from the consumer's row as it is now (locked): null while another
 * holder's lease runs (nothing is written); the same holder's running lease renewed under the
 * same token; otherwise (free, released, expired, even the same holder's) the lease taken under
 * a new token, so that a write under the old token is refused from now on. `askedAt` is
 * `Date.now()` when the request was made (see `leaseExpiry`).
 */
export function planAcquire(
  row: ConsumerRow,
  request: AcquireRequest,
  askedAt: number,
): ConsumerRow | null {
  checkAcquire(request);
  const { now, holder } = request;
  const runs = leaseRuns(row, now);
  if (runs && row.holder !== holder) return null;
  const token = runs && row.token !== null ? row.token : newConsumerToken();
  return {
    ...row,
    holder,
    token,
    lease_until: leaseExpiry(now, request.leaseMs, askedAt),
    lease_ms: request.leaseMs,
    updated_at: now,
  };
}

/** A write under a lease that is no longer the consumer's: it changes nothing. */
export function consumerLeaseLost(name: string): AcceptedError {
  return new AcceptedError(
    'LEASE_LOST',
    `The lease on consumer ${name} is no longer held: another holder took it over.`,
    {
      details: { consumer: name },
      fix: 'Acquire the consumer again and go on from its committed position.',
    },
  );
}

/** The consumer's row when `lease` is its current one; LEASE_LOST otherwise. */
export function heldRow(row: ConsumerRow | undefined, lease: ConsumerRef): ConsumerRow {
  if (!row || row.token === null || row.token !== lease.token) throw consumerLeaseLost(lease.name);
  return row;
}

/**
 * What a commit writes: under the current lease only (`heldRow`), the position moved forward
 * to `position` (one at or behind it stays), never past `logEnd` (the log's last seq, or a seq
 * read from the log in the same transaction), and the lease renewed for its length.
 */
export function planCommit(
  row: ConsumerRow | undefined,
  lease: ConsumerRef,
  position: number,
  commit: { now: number; askedAt: number; logEnd: number },
): ConsumerRow {
  const held = heldRow(row, lease);
  if (!Number.isSafeInteger(position) || position < 0) {
    throw invalid('must be a seq of the log (a whole number, at least 0)', '/position');
  }
  if (position > commit.logEnd) {
    throw invalid(`is past the last seq of the log (${commit.logEnd})`, '/position');
  }
  return {
    ...held,
    position: Math.max(held.position, position),
    lease_until: leaseExpiry(commit.now, held.lease_ms, commit.askedAt),
    updated_at: commit.now,
  };
}

/** What a release writes: the lease dropped, under the current token only (else null). */
export function planRelease(row: ConsumerRow | undefined, lease: ConsumerRef): ConsumerRow | null {
  if (!row || row.token === null || row.token !== lease.token) return null;
  return { ...row, holder: null, token: null, lease_until: null };
}

export function toConsumerLease(row: ConsumerRow): ConsumerLease {
  return {
    name: row.name,
    token: row.token ?? '',
    position: row.position,
    leaseUntil: row.lease_until ?? 0,
  };
}

export function toConsumerState(row: ConsumerRow, lastSeq: number): ConsumerState {
  return {
    name: row.name,
    position: row.position,
    holder: row.holder,
    leaseUntil: row.lease_until,
    lag: Math.max(0, lastSeq - row.position),
    updatedAt: row.updated_at,
  };
}
