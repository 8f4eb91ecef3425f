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
  'endpoint.disabled',
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

export const TERMINAL_EVENT_TYPES: ReadonlySet<EventType> = new Set([
  'operation.succeeded',
  'operation.failed',
  'operation.canceled',
]);

/**
 * Whether a stream or subscription of one operation ends after this event: a terminal event
 * that is the last one known, or the operation's deletion (nothing can follow it).
 */
export function endsOperationStream(type: EventType, last: boolean): boolean {
  return type === 'operation.deleted' || (last && TERMINAL_EVENT_TYPES.has(type));
}

/** Data carried by each event type. */
export interface EventData {
  /** The operation's status after the change (absent on `endpoint.disabled`). */
  status?: OperationStatus;
  attempt?: number;
  progress?: Progress;
  result?: Json;
  error?: OperationError;
  /** For `operation.retrying` and `operation.queued`: when the next attempt may start. */
  runAt?: number;
  /** For `endpoint.disabled`: which webhook endpoint, and why. */
  endpoint?: { id: string; url: string; reason: EndpointDisabledReason; message: string };
}

/**
 * `endpoint.disabled` events are not about an operation: their `operationId` is the
 * endpoint's id and their `operationType` is this.
 */
export const ENDPOINT_EVENT_OPERATION_TYPE = 'webhook.endpoint';

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
  /** The operation's labels, so that streams and webhooks filter by them without a join. */
  labels: Readonly<Record<string, string>>;
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

/** Labels of an operation that has none: shared, frozen. */
export const NO_LABELS: Readonly<Record<string, string>> = Object.freeze({});

/**
 * Which events a reader wants. Every member that is set must match; an empty filter matches
 * every event. Used by the live feed, the streams and the log reads alike.
 */
export interface EventFilter {
  tenant?: string;
  operationIds?: ReadonlySet<string>;
  types?: ReadonlySet<EventType>;
  operationTypes?: ReadonlySet<string>;
  /** Every pair must be among the operation's labels. */
  labels?: Readonly<Record<string, string>>;
}

export function matchesEvent(filter: EventFilter, event: OperationEvent): boolean {
  if (filter.tenant !== undefined && filter.tenant !== event.tenant) return false;
  if (filter.operationIds && !filter.operationIds.has(event.operationId)) return false;
  if (filter.types && !filter.types.has(event.type)) return false;
  if (filter.operationTypes && !filter.operationTypes.has(event.operationType)) return false;
  if (filter.labels) {
    for (const key in filter.labels) {
      if (event.labels[key] !== filter.labels[key]) return false;
    }
  }
  return true;
}

/** Why the server disabled a webhook endpoint: it answered 410 Gone, or kept failing. */
export type EndpointDisabledReason = 'GONE' | 'FAILING';
