import { AcceptedError } from '../domain/errors.ts';
import { eventId, type EventType } from '../domain/events.ts';
import type { Delivery, DeliveryStatus, Endpoint, SecretEntry } from '../domain/webhooks.ts';

/**
 * The rows of the webhook tables as every adapter reads them (same columns, same JSON text),
 * and their mapping to domain objects: one copy for SQLite and PostgreSQL.
 */

export interface EndpointRow {
  pk: number;
  id: string;
  tenant: string;
  url: string;
  description: string | null;
  event_types: string | null;
  labels: string | null;
  secrets: string;
  signing_key: string | null;
  retry_schedule: string | null;
  rate_limit: number | null;
  /** 0/1 in SQLite, a boolean in PostgreSQL. */
  enabled: number | boolean;
  disabled_reason: string | null;
  disabled_at: number | null;
  failing_since: number | null;
  created_at: number;
  updated_at: number;
  version: number;
}

export interface DeliveryRow {
  pk: number;
  id: string;
  tenant: string;
  target: string;
  url: string;
  operation_id: string;
  event_seq: number;
  event_type: EventType;
  payload: string;
  status: DeliveryStatus;
  attempts: number;
  round_start: number;
  next_attempt_at: number | null;
  last_status: number | null;
  last_error: string | null;
  created_at: number;
  updated_at: number;
  delivered_at: number | null;
}

export const DELIVERY_COLUMNS = `d.pk, d.id, d.tenant, d.target, d.url, d.operation_id, d.event_seq,
  d.event_type, d.payload, d.status, d.attempts, d.round_start, d.next_attempt_at,
  d.last_status, d.last_error, d.created_at, d.updated_at, d.delivered_at`;

// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the stored shape
export const json = <T>(text: string | null): T | null =>
  text === null ? null : (JSON.parse(text) as T);

/** The secrets of a stored list that still sign at `now`. */
export function liveSecrets(text: string, now: number): SecretEntry[] {
  return (JSON.parse(text) as SecretEntry[]).filter(
    (entry) => entry.expiresAt === null || entry.expiresAt > now,
  );
}

/** The new secret first; the current one signs until `previousUntil`; older ones as they were. */
export function rotatedSecrets(
  text: string,
  secret: string,
  previousUntil: number,
  now: number,
): SecretEntry[] {
  const old = liveSecrets(text, now).map((entry) =>
    entry.expiresAt === null ? { ...entry, expiresAt: previousUntil } : entry,
  );
  return [{ secret, expiresAt: null }, ...old];
}

export function toEndpoint(row: EndpointRow): Endpoint {
  return {
    id: row.id,
    tenant: row.tenant,
    url: row.url,
    description: row.description,
    eventTypes: json<EventType[]>(row.event_types),
    labels: json<Record<string, string>>(row.labels),
    secrets: liveSecrets(row.secrets, Date.now()),
    signingKey: row.signing_key,
    retrySchedule: json<number[]>(row.retry_schedule),
    rateLimit: row.rate_limit,
    enabled: row.enabled === true || row.enabled === 1,
    disabledReason: row.disabled_reason,
    disabledAt: row.disabled_at,
    failingSince: row.failing_since,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    version: row.version,
  };
}

export function toDelivery(row: DeliveryRow): Delivery {
  const { event_seq: seq } = row;
  return {
    id: row.id,
    tenant: row.tenant,
    target: row.target,
    url: row.url,
    operationId: row.operation_id,
    eventId: eventId(seq),
    eventSeq: seq,
    eventType: row.event_type,
    payload: row.payload,
    status: row.status,
    attempts: row.attempts,
    roundStart: row.round_start,
    nextAttemptAt: row.status === 'pending' ? row.next_attempt_at : null,
    lastStatus: row.last_status,
    lastError: row.last_error,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    deliveredAt: row.delivered_at,
  };
}

export function endpointNotFound(id: string): AcceptedError {
  return new AcceptedError('ENDPOINT_NOT_FOUND', `No webhook endpoint ${id}.`, {
    fix: 'List the endpoints with GET /v1/webhooks/endpoints.',
  });
}

export function deliveryNotFound(id: string): AcceptedError {
  return new AcceptedError('DELIVERY_NOT_FOUND', `No webhook delivery ${id}.`, {
    fix: 'List the deliveries with GET /v1/webhooks/deliveries.',
  });
}
