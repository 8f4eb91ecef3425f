import {
  NO_LABELS,
  eventId,
  type EventData,
  type EventType,
  type OperationEvent,
} from '../domain/events.ts';
import type { ChangedRow } from './operation-rows.ts';

/** A row of the events table as every adapter reads it. */
export interface EventRow {
  seq: number;
  operation_id: string;
  tenant: string;
  operation_type: string;
  version: number;
  type: EventType;
  /** The event's data as JSON text. */
  data: string;
  time: number;
  /** JSON text (SQLite), an object (PostgreSQL jsonb), or null for none. */
  labels: string | Record<string, string> | null;
}

/** Labels as stored: JSON text or an object; empty ones share one frozen object. */
export function labelsOf(
  value: string | Record<string, string> | null,
): Readonly<Record<string, string>> {
  if (value === null || value === '{}') return NO_LABELS;
  const labels = typeof value === 'string' ? (JSON.parse(value) as Record<string, string>) : value;
  return Object.keys(labels).length === 0 ? NO_LABELS : labels;
}

/**
 * An event just written (by a transition on `row`, the operation's columns after it), as the
 * adapter hands it to its listeners once committed at `seq`: what a read of its row would give.
 */
export function committedEvent(
  seq: number,
  row: ChangedRow<string | Record<string, string>>,
  type: EventType,
  data: EventData,
  time: number,
): OperationEvent {
  return {
    seq,
    id: eventId(seq),
    operationId: row.id,
    tenant: row.tenant,
    operationType: row.type,
    version: row.version,
    type,
    data,
    time,
    labels: labelsOf(row.labels),
  };
}

export function rowToEvent(row: EventRow): OperationEvent {
  return {
    seq: row.seq,
    id: eventId(row.seq),
    operationId: row.operation_id,
    tenant: row.tenant,
    operationType: row.operation_type,
    version: row.version,
    type: row.type,
    data: JSON.parse(row.data) as EventData,
    time: row.time,
    labels: labelsOf(row.labels),
  };
}
