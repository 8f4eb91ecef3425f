import type { FromSchema } from 'json-schema-to-ts';
import type { OperationEvent } from '../domain/events.ts';
import { isTerminal, type Operation } from '../domain/operation.ts';
import type { EVENT_SCHEMA, MONITOR_SCHEMA } from './schemas.ts';

/**
 * The status monitor: what `GET /v1/operations/{id}` answers. The type is derived from its
 * JSON Schema (`MONITOR_SCHEMA`), which the OpenAPI document publishes and the client's types
 * are checked against: a field added to the schema is a field this module must fill.
 */
export type StatusMonitor = FromSchema<typeof MONITOR_SCHEMA>;

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

/** An event as every channel sends it; derived from `EVENT_SCHEMA`, like the monitor. */
export type WireEvent = FromSchema<typeof EVENT_SCHEMA>;

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
