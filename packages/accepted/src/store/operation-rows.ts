import type {
  Json,
  NewOperation,
  Operation,
  OperationError,
  OperationStatus,
  Progress,
} from '../domain/operation.ts';
import type { IdempotencyClaim } from './store.ts';

/**
 * The operations table (and its idempotency keys) as every adapter reads and writes it: its
 * columns, its rows and their mapping to an `Operation`. The adapters differ only in how they store labels (`Labels`: JSON text in
 * SQLite, a jsonb object in PostgreSQL).
 */

/** The columns read into an `OperationRow`. */
export const OPERATION_COLUMNS = `pk, id, tenant, type, status, input, progress, result, error,
  attempts, max_attempts, run_at, timeout_ms, labels, callback_url, cancel_requested_at,
  created_at, updated_at, started_at, finished_at, version, lease_token`;

/** The columns a transition returns (`RETURNING`) to write its event: a `ChangedRow`. */
export const CHANGED_COLUMNS = 'id, tenant, type, version, attempts, labels';

/** A row of the operations table (`OPERATION_COLUMNS`). JSON columns are text. */
export interface OperationRow<Labels> {
  pk: number;
  id: string;
  tenant: string;
  type: string;
  status: OperationStatus;
  input: string;
  progress: string | null;
  result: string | null;
  error: string | null;
  attempts: number;
  max_attempts: number;
  run_at: number;
  timeout_ms: number | null;
  labels: Labels;
  callback_url: string | null;
  cancel_requested_at: number | null;
  created_at: number;
  updated_at: number;
  started_at: number | null;
  finished_at: number | null;
  version: number;
  lease_token: string | null;
}

/** The columns a transition needs to write its event (`CHANGED_COLUMNS`). */
export interface ChangedRow<Labels> {
  id: string;
  tenant: string;
  type: string;
  version: number;
  attempts: number;
  labels: Labels;
}

/** A row of the idempotency keys table, as `createOnce` reads it. */
export interface IdempotencyRow {
  fingerprint: string;
  operation_id: string;
  status: number | null;
  hold_until: number | null;
  expires_at: number;
}

/** The columns of a new idempotency key, in the order of `keyValues`. */
export const KEY_COLUMNS =
  'tenant, key, fingerprint, operation_id, status, hold_until, created_at, expires_at';

/** The values of `KEY_COLUMNS` for the key `createOnce` records with its new operation. */
export function keyValues(
  op: NewOperation,
  claim: IdempotencyClaim,
  now: number,
): (string | number | null)[] {
  return [
    op.tenant,
    claim.key,
    claim.fingerprint,
    op.id,
    claim.status,
    claim.holdUntil,
    now,
    claim.expiresAt,
  ];
}

// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the stored shape
function parseJson<T>(text: string | null): T | null {
  return text === null ? null : (JSON.parse(text) as T);
}

/** An operation from its row, given its labels as an object (the adapter's to decode). */
export function rowToOperation(
  row: OperationRow<unknown>,
  labels: Record<string, string>,
): Operation {
  return {
    id: row.id,
    tenant: row.tenant,
    type: row.type,
    status: row.status,
    input: JSON.parse(row.input) as Json,
    progress: parseJson<Progress>(row.progress),
    result: parseJson<Json>(row.result),
    error: parseJson<OperationError>(row.error),
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    runAt: row.run_at,
    timeoutMs: row.timeout_ms,
    labels,
    callbackUrl: row.callback_url,
    cancelRequestedAt: row.cancel_requested_at,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    version: row.version,
  };
}

/** The row of `id` when the caller may see it: any tenant's when `tenant` is undefined. */
export function inScope<R extends { tenant: string }>(
  row: R | undefined,
  tenant: string | undefined,
): R | null {
  return row && (tenant === undefined || row.tenant === tenant) ? row : null;
}

/** A new operation as its insert stores it (queued, version 1), without reading it back. */
export function createdOperation(op: NewOperation, now: number): Operation {
  return {
    id: op.id,
    tenant: op.tenant,
    type: op.type,
    status: 'queued',
    input: op.input,
    progress: null,
    result: null,
    error: null,
    attempts: 0,
    maxAttempts: op.maxAttempts,
    runAt: op.runAt,
    timeoutMs: op.timeoutMs,
    labels: op.labels,
    callbackUrl: op.callbackUrl,
    cancelRequestedAt: null,
    createdAt: now,
    updatedAt: now,
    startedAt: null,
    finishedAt: null,
    version: 1,
  };
}

/** The changed row of a new operation (for its `operation.queued` event), labels as stored. */
export function createdRow<Labels>(op: NewOperation, labels: Labels): ChangedRow<Labels> {
  return { id: op.id, tenant: op.tenant, type: op.type, version: 1, attempts: 0, labels };
}
