import type { OperationEvent } from '../domain/events.ts';
import {
  isTerminal,
  type Json,
  type Operation,
  type OperationError,
  type Progress,
} from '../domain/operation.ts';

/** The status monitor: what `GET /v1/operations/{id}` answers. */
export interface StatusMonitor {
  id: string;
  type: string;
  status: Operation['status'];
  progress: Progress | null;
  result: Json | null;
  error: OperationError | null;
  attempts: number;
  maxAttempts: number;
  labels: Record<string, string>;
  cancelRequested: boolean;
  runAt: string;
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  version: number;
  links: { self: string; events: string; cancel: string };
}

const iso = (ms: number) => new Date(ms).toISOString();
const isoOrNull = (ms: number | null) => (ms === null ? null : iso(ms));

export function operationPath(id: string): string {
  return `/v1/operations/${id}`;
}

export function toMonitor(operation: Operation): StatusMonitor {
  const self = operationPath(operation.id);
  return {
    id: operation.id,
    type: operation.type,
    status: operation.status,
    progress: operation.progress,
    result: operation.result,
    error: operation.error,
    attempts: operation.attempts,
    maxAttempts: operation.maxAttempts,
    labels: operation.labels,
    cancelRequested: operation.cancelRequestedAt !== null,
    runAt: iso(operation.runAt),
    createdAt: iso(operation.createdAt),
    updatedAt: iso(operation.updatedAt),
    startedAt: isoOrNull(operation.startedAt),
    finishedAt: isoOrNull(operation.finishedAt),
    version: operation.version,
    links: { self, events: `${self}/events`, cancel: `${self}:cancel` },
  };
}

/** The entity tag of a monitor: its version, which changes on every state change. */
export function etagOf(operation: Operation): string {
  return `"${operation.version}"`;
}

/** Seconds a poller should wait before asking again (1 while queued or running). */
export function retryAfterOf(operation: Operation): string | null {
  return isTerminal(operation.status) ? null : '1';
}

export interface WireEvent {
  seq: number;
  id: string;
  operationId: string;
  operationType: string;
  labels: Readonly<Record<string, string>>;
  type: OperationEvent['type'];
  version: number;
  time: string;
  /** As in the log, except `runAt`, which is an RFC 3339 time like every time on the wire. */
  data: Omit<OperationEvent['data'], 'runAt'> & { runAt?: string };
}

function wireData({ runAt, ...rest }: OperationEvent['data']): WireEvent['data'] {
  return runAt === undefined ? rest : { ...rest, runAt: iso(runAt) };
}

export function toWireEvent(event: OperationEvent): WireEvent {
  return {
    seq: event.seq,
    id: event.id,
    operationId: event.operationId,
    operationType: event.operationType,
    labels: event.labels,
    type: event.type,
    version: event.version,
    time: iso(event.time),
    data: wireData(event.data),
  };
}
