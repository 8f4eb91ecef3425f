import type { Json, OperationError, OperationStatus, Progress } from './operation.ts';

/** Every kind of event in the log. One state change writes exactly one of these. */
export const EVENT_TYPES = [
  'operation.queued',
  'operation.started',
  'operation.progress',
  'operation.cancel_requested',
  'operation.retrying',
  'operation.succeeded',
  'operation.failed',
  'operation.canceled',
  'operation.deleted',
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

export const TERMINAL_EVENT_TYPES: ReadonlySet<EventType> = new Set([
  'operation.succeeded',
  'operation.failed',
  'operation.canceled',
]);

/** Data carried by each event type. */
export interface EventData {
  /** Status after the change. */
  status: OperationStatus;
  attempt?: number;
  progress?: Progress;
  result?: Json;
  error?: OperationError;
  /** For `operation.retrying` and `operation.queued`: when the next attempt may start. */
  runAt?: number;
}

/** One record of the append-only log. */
export interface OperationEvent {
  /** Global, monotonic position in the log (per store): the cursor. */
  seq: number;
  /** Stable event id (`evt_<seq>` scoped to the store), used by webhooks and brokers. */
  id: string;
  operationId: string;
  tenant: string;
  /** The operation's type (handy for filtering streams without a join). */
  operationType: string;
  /** The operation's version after this change. */
  version: number;
  type: EventType;
  data: EventData;
  /** Epoch milliseconds. */
  time: number;
}

export function eventId(seq: number): string {
  return `evt_${seq.toString(36).padStart(8, '0')}`;
}
