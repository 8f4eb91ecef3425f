/**
 * Glossary (the names used everywhere in code and docs):
 *
 * - operation: one unit of submitted work, with a status, an input and, once terminal, a
 *   result or an error. Identified by an unguessable id (`op_...`).
 * - attempt: one run of an operation's handler. An operation has 1..maxAttempts attempts.
 * - lease: a worker's time-limited claim on a running operation (token + expiry). Renewed by
 *   heartbeat; a completion carrying a stale lease token is rejected.
 * - event: an append-only record of one state change of an operation, with a global,
 *   monotonic `seq` and the operation's `version` after the change.
 * - cursor: a position in the event log (a `seq`); every delivery channel reads after one.
 * - delivery: one event on its way to one target (a webhook endpoint or a callbackUrl).
 * - endpoint: a webhook URL a tenant subscribed (see domain/webhooks.ts).
 */

/** The life of an operation. Terminal: succeeded, failed, canceled. */
export type OperationStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled';

export const TERMINAL_STATUSES: readonly OperationStatus[] = ['succeeded', 'failed', 'canceled'];

export function isTerminal(status: OperationStatus): boolean {
  return status === 'succeeded' || status === 'failed' || status === 'canceled';
}

/** JSON values, as stored and sent on the wire. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** What a handler reports while it runs. Every member is optional. */
export interface Progress {
  /** Share of the work done, from 0 to 1. */
  fraction?: number;
  /** A short human-readable note ("resizing 3 of 10"). */
  message?: string;
  /** Anything else worth showing, as JSON. */
  data?: Json;
}

/** Why an operation failed (or was canceled): the Azure/AIP error shape pollers read. */
export interface OperationError {
  /** Stable, machine-readable code (`TIMEOUT`, `CANCELED`, or the handler's own). */
  code: string;
  /** Human-readable explanation. */
  message: string;
  /** Optional structured details. */
  details?: Json;
}

/** An operation as stored and shown in its status monitor. Times are epoch milliseconds. */
export interface Operation {
  id: string;
  /** The tenant that owns it; every read and write is scoped by it. */
  tenant: string;
  type: string;
  status: OperationStatus;
  input: Json;
  progress: Progress | null;
  result: Json | null;
  error: OperationError | null;
  /** Attempts started so far (the running one included). */
  attempts: number;
  maxAttempts: number;
  /** Earliest time the next attempt may start. */
  runAt: number;
  /** Per-attempt time limit, or null for none. */
  timeoutMs: number | null;
  labels: Record<string, string>;
  /** Where the outcome is posted (delivered by the webhooks module). */
  callbackUrl: string | null;
  /** Set when cancellation of a running operation was requested and not yet honoured. */
  cancelRequestedAt: number | null;
  createdAt: number;
  updatedAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  /** 1 at creation, +1 on every state change: the ETag of the status monitor. */
  version: number;
}

/** What a caller provides to create an operation; the engine fills in the rest. */
export interface NewOperation {
  id: string;
  tenant: string;
  type: string;
  input: Json;
  maxAttempts: number;
  runAt: number;
  timeoutMs: number | null;
  labels: Record<string, string>;
  callbackUrl: string | null;
  /** Trace context of the request that created it (propagated to every channel later). */
  traceparent?: string | null;
}

/** A lease held by a worker on a running operation. */
export interface Lease {
  operationId: string;
  token: string;
  expiresAt: number;
}
