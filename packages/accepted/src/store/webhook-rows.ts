import { AcceptedError } from '../domain/errors.ts';
import { eventId, type EventType } from '../domain/events.ts';
import {
  CALLBACK_TARGET,
  callbackWants,
  endpointWants,
  type Delivery,
  type DeliveryStatus,
  type Endpoint,
  type EndpointPatch,
  type SecretEntry,
} from '../domain/webhooks.ts';
import { rowToEvent, type EventRow } from './event-rows.ts';
import type { ClaimedDelivery, DispatchRequest } from './store.ts';

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

/** An event row as the dispatcher reads it: with its operation's callbackUrl. */
export type DispatchRow = EventRow & { callback_url: string | null };

/** One delivery to insert: the columns of `webhook_deliveries` a dispatch fills. */
export interface NewDelivery {
  id: string;
  tenant: string;
  target: string;
  url: string;
  operationId: string;
  eventSeq: number;
  eventType: EventType;
  payload: string;
}

/**
 * The deliveries a batch of events makes: one per enabled endpoint of the event's tenant that
 * wants it, one to the operation's callbackUrl when it wants the type. An event is decoded
 * (and its payload made) only when some target wants it, so that a server without webhooks
 * pays little for the pass. `callbackTenants` need a callback secret.
 */
export function deliveriesOf(
  rows: readonly DispatchRow[],
  endpoints: readonly Endpoint[],
  request: DispatchRequest,
): { deliveries: NewDelivery[]; callbackTenants: Set<string> } {
  const byTenant = new Map<string, Endpoint[]>();
  for (const endpoint of endpoints) {
    const list = byTenant.get(endpoint.tenant);
    if (list) list.push(endpoint);
    else byTenant.set(endpoint.tenant, [endpoint]);
  }
  const deliveries: NewDelivery[] = [];
  const callbackTenants = new Set<string>();
  for (const row of rows) {
    const callback = row.callback_url !== null && callbackWants(row.type) ? row.callback_url : null;
    const candidates = byTenant.get(row.tenant);
    if (callback === null && !candidates) continue;
    const event = rowToEvent(row);
    const targets: [string, string][] = (candidates ?? [])
      .filter((endpoint) => endpointWants(endpoint, event))
      .map((endpoint) => [endpoint.id, endpoint.url]);
    if (callback !== null) {
      targets.push([CALLBACK_TARGET, callback]);
      callbackTenants.add(row.tenant);
    }
    if (targets.length === 0) continue;
    const payload = request.payload(event);
    for (const [target, url] of targets) {
      deliveries.push({
        id: request.newId(),
        tenant: row.tenant,
        target,
        url,
        operationId: row.operation_id,
        eventSeq: row.seq,
        eventType: row.type,
        payload,
      });
    }
  }
  return { deliveries, callbackTenants };
}

/** A claimed delivery as read with its endpoint's (or the tenant's callback) settings. */
export type ClaimRow = DeliveryRow & {
  endpoint_url: string | null;
  endpoint_secrets: string | null;
  signing_key: string | null;
  retry_schedule: string | null;
  rate_limit: number | null;
  failing_since: number | null;
  callback_secrets: string | null;
};

/** The columns a claim reads besides the delivery's (`e` the endpoint, `c` callback secrets). */
export const CLAIM_EXTRA_COLUMNS = `e.url AS endpoint_url, e.secrets AS endpoint_secrets,
  e.signing_key, e.retry_schedule, e.rate_limit, e.failing_since, c.secrets AS callback_secrets`;

export function toClaimedDelivery(row: ClaimRow, now: number, leaseUntil: number): ClaimedDelivery {
  const delivery = toDelivery(row);
  // An endpoint's deliveries go to its URL as it is now (it may have been changed).
  if (row.endpoint_url !== null) delivery.url = row.endpoint_url;
  const secrets = row.endpoint_secrets ?? row.callback_secrets;
  return {
    delivery,
    secrets: secrets === null ? [] : liveSecrets(secrets, now).map((entry) => entry.secret),
    signingKey: row.signing_key,
    retrySchedule: json<number[]>(row.retry_schedule),
    rateLimit: row.rate_limit,
    failingSince: row.failing_since,
    leaseUntil,
  };
}

/**
 * The columns a PATCH of an endpoint sets (besides `version`), in both adapters. Enabling also
 * clears the failure record; disabling by request records `MANUAL` (unless already disabled).
 */
export function endpointPatchColumns(
  patch: EndpointPatch,
  row: EndpointRow,
  now: number,
): [column: string, value: string | number | boolean | null][] {
  const asJson = (value: unknown) => (value === null ? null : JSON.stringify(value));
  const set: [string, string | number | boolean | null][] = [];
  if (patch.url !== undefined) set.push(['url', patch.url]);
  if (patch.description !== undefined) set.push(['description', patch.description]);
  if (patch.eventTypes !== undefined) set.push(['event_types', asJson(patch.eventTypes)]);
  if (patch.labels !== undefined) set.push(['labels', asJson(patch.labels)]);
  if (patch.retrySchedule !== undefined) set.push(['retry_schedule', asJson(patch.retrySchedule)]);
  if (patch.rateLimit !== undefined) set.push(['rate_limit', patch.rateLimit]);
  // SQLite stores booleans as 0/1, PostgreSQL as booleans: answer in the row's own kind.
  const bool = (value: boolean) => (typeof row.enabled === 'boolean' ? value : Number(value));
  if (patch.enabled === true) {
    set.push(['enabled', bool(true)], ['disabled_reason', null], ['disabled_at', null]);
    set.push(['failing_since', null]);
  } else if (patch.enabled === false && (row.enabled === true || row.enabled === 1)) {
    set.push(['enabled', bool(false)], ['disabled_reason', 'MANUAL'], ['disabled_at', now]);
  }
  set.push(['updated_at', now]);
  return set;
}
