import { randomUUID } from 'node:crypto';
import { AcceptedError } from '../domain/errors.ts';
import { eventId, type EventData, type EventType } from '../domain/events.ts';
import {
  CALLBACK_TARGET,
  callbackWants,
  endpointWants,
  type Attempt,
  type Delivery,
  type DeliveryStatus,
  type Endpoint,
  type EndpointPatch,
  type NewEndpoint,
  type SecretEntry,
} from '../domain/webhooks.ts';
import { rowToEvent, type EventRow } from './event-rows.ts';
import type { AttemptOutcome, ClaimedDelivery, DispatchRequest } from './store.ts';

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
  /** The rate window (an epoch second) the endpoint's claims last counted in, and how many. */
  rate_window: number | null;
  rate_count: number;
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
  /** The current claim: until when, and its token (kept on a delivery finished meanwhile). */
  lease_until: number | null;
  lease_token: string | null;
  /** When it was replayed while an attempt was in flight (applied when that attempt ends). */
  replayed_at: number | null;
}

export const DELIVERY_COLUMNS = `d.pk, d.id, d.tenant, d.target, d.url, d.operation_id, d.event_seq,
  d.event_type, d.payload, d.status, d.attempts, d.round_start, d.next_attempt_at,
  d.last_status, d.last_error, d.created_at, d.updated_at, d.delivered_at, d.lease_until,
  d.lease_token, d.replayed_at`;

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

// ---- what may be claimed, and when ---------------------------------------------------------
//
// One rule, in SQL both adapters run (they differ in how a parameter is written, how
// `enabled` reads and the name of the greatest-of function): a delivery `d` (joined to its
// endpoint `e`) may be claimed at `now` when it is first in its (target, operation) line,
// pending, to a callback or an enabled endpoint, due, not leased, and its endpoint's rate
// window has room. `nextDeliveryAt` is the least time at which that holds for some delivery:
// the same predicate, so that a sender woken at that time always finds something to claim.

export interface SqlDialect {
  /** `e.enabled = 1` (SQLite) or `e.enabled` (PostgreSQL). */
  enabled: string;
  /** `max` (SQLite's scalar max) or `greatest`. */
  greatest: string;
}

/** SQL: `d` is pending, first in its line, and to a callback or an enabled endpoint. */
export function headOfLineSql(dialect: SqlDialect): string {
  return `d.status = 'pending' AND (d.target = '${CALLBACK_TARGET}' OR ${dialect.enabled})
    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.status = 'pending'
      AND p.target = d.target AND p.operation_id = d.operation_id AND p.event_seq < d.event_seq)`;
}

/**
 * SQL: from when the endpoint's rate window lets `d` go, at the second `sec` (a parameter):
 * 0 without a limit or when the stored window is older; the next window's start when the
 * current one is full; the stored window's start when another claimant's clock is ahead.
 */
export function rateFreeAtSql(sec: string): string {
  return `(CASE WHEN e.rate_limit IS NULL OR coalesce(e.rate_window, -1) < ${sec} THEN 0
    WHEN e.rate_count >= e.rate_limit THEN (e.rate_window + 1) * 1000
    ELSE e.rate_window * 1000 END)`;
}

/** SQL: `d` may be claimed at `now` (a parameter; `sec` is `floor(now / 1000)`). */
export function claimableSql(dialect: SqlDialect, now: string, sec: string): string {
  return `${headOfLineSql(dialect)} AND d.next_attempt_at <= ${now}
    AND (d.lease_until IS NULL OR d.lease_until <= ${now}) AND ${rateFreeAtSql(sec)} <= ${now}`;
}

/**
 * SQL: one row when some delivery may be claimed at `now`, found in the claim's own order
 * (the due index) so that it stops at the first: with thousands due, `nextDeliveryAt` answers
 * at once instead of scanning every line (`nextDeliverySql`), which it does only when nothing
 * is due.
 */
export function claimableNowSql(dialect: SqlDialect, now: string, sec: string): string {
  return `SELECT 1 AS due FROM webhook_deliveries d LEFT JOIN webhook_endpoints e ON e.id = d.target
    WHERE ${claimableSql(dialect, now, sec)} ORDER BY d.next_attempt_at, d.pk LIMIT 1`;
}

/** SQL: the earliest claimable time over every head of line (`nextDeliveryAt`). */
export function nextDeliverySql(dialect: SqlDialect, sec: string): string {
  return `SELECT min(${dialect.greatest}(d.next_attempt_at, coalesce(d.lease_until, 0),
      ${rateFreeAtSql(sec)})) AS t
    FROM webhook_deliveries d LEFT JOIN webhook_endpoints e ON e.id = d.target
    WHERE ${headOfLineSql(dialect)}`;
}

/** An endpoint's rate window as stored (`limit` null: no limit). */
export interface RateWindow {
  limit: number | null;
  window: number | null;
  count: number;
}

/**
 * The rate rule: how many more claims an endpoint may have at `now`, in which window (epoch
 * second). A window newer than `now`'s second (another claimant's clock is ahead) has no
 * room until this clock reaches it: every claim counts in the second of its own `now`, the
 * second its `webhook-timestamp` shows.
 */
export function rateRoom(rate: RateWindow, now: number): { window: number; room: number } {
  const sec = Math.floor(now / 1000);
  if (rate.limit === null) return { window: sec, room: Number.POSITIVE_INFINITY };
  const stored = rate.window ?? -1;
  if (stored > sec) return { window: stored, room: 0 };
  if (stored === sec) return { window: sec, room: Math.max(0, rate.limit - rate.count) };
  return { window: sec, room: rate.limit };
}

/**
 * Of claimable deliveries (in claim order), those a claim at `now` leases, and the new
 * windows of the rate-limited endpoints that got some. `rates` holds the current windows of
 * the candidates' rate-limited endpoints, read under the claim's lock.
 */
export function grantClaims<R extends { target: string }>(
  candidates: readonly R[],
  rates: ReadonlyMap<string, RateWindow>,
  now: number,
): { granted: R[]; windows: Map<string, { window: number; count: number }> } {
  const room = new Map<string, { window: number; room: number; used: number; base: number }>();
  const granted: R[] = [];
  for (const candidate of candidates) {
    const rate = rates.get(candidate.target);
    if (!rate || rate.limit === null) {
      granted.push(candidate);
      continue;
    }
    let slot = room.get(candidate.target);
    if (!slot) {
      const r = rateRoom(rate, now);
      const base = r.window === rate.window ? rate.count : 0;
      slot = { ...r, used: 0, base };
      room.set(candidate.target, slot);
    }
    if (slot.used >= slot.room) continue;
    slot.used++;
    granted.push(candidate);
  }
  const windows = new Map<string, { window: number; count: number }>();
  for (const [target, slot] of room) {
    if (slot.used > 0) windows.set(target, { window: slot.window, count: slot.base + slot.used });
  }
  return { granted, windows };
}

/** A new lease token for one claim of one delivery. */
export function newDeliveryLease(): string {
  return randomUUID();
}

/** Columns a claim sets on a delivery: the lease, and a replay's fresh budget if one waited. */
export function leaseColumns(row: DeliveryRow, leaseUntil: number, token: string): Columns {
  return [
    ['lease_until', leaseUntil],
    ['lease_token', token],
    ['round_start', row.replayed_at === null ? row.round_start : row.attempts],
    ['replayed_at', null],
  ];
}

export function toClaimedDelivery(
  row: ClaimRow,
  now: number,
  leaseUntil: number,
  leaseToken: string,
): ClaimedDelivery {
  const delivery = toDelivery(row);
  // A replay that waited for an attempt in flight (whose record never came) starts here.
  if (row.replayed_at !== null) delivery.roundStart = row.attempts;
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
    leaseToken,
    claimedAt: now,
  };
}

// ---- records and replays ---------------------------------------------------------------------

/** Column assignments of one UPDATE, in the order given. */
export type Columns = [column: string, value: string | number | boolean | null][];

/** What `recordAttempt` does, decided from the delivery's row as it is now (locked). */
export type RecordPlan =
  /** The record's lease is no longer the delivery's (or the delivery is gone): nothing. */
  | { kind: 'stale' }
  /**
   * The delivery was finished meanwhile (its endpoint deleted): log the attempt, count it,
   * drop the lease, and leave its status alone.
   */
  | { kind: 'log'; set: Columns }
  /** The attempt decides: its outcome, and the endpoint's failure record. */
  | { kind: 'apply'; set: Columns; status: DeliveryStatus };

/**
 * The one rule of lease-guarded records, for both adapters. A record applies only under the
 * lease it names (`outcome.lease`): a claim after its lease ended, a replay that was not in
 * flight, or a purge, all leave it stale. Without a token (older callers) the attempt number
 * fences it, as before. A record never makes a finished delivery pending again: only a replay
 * does that, and a replay of a delivery in flight waits for this record to take effect.
 */
export function planRecord(
  row: Pick<DeliveryRow, 'status' | 'attempts' | 'lease_token' | 'replayed_at'> | undefined,
  outcome: AttemptOutcome,
): RecordPlan {
  const { attempt } = outcome;
  if (!row || row.attempts !== attempt.attempt - 1) return { kind: 'stale' };
  if (row.lease_token !== outcome.lease) return { kind: 'stale' };
  const now = attempt.startedAt + attempt.durationMs;
  const released: Columns = [
    ['attempts', attempt.attempt],
    ['lease_until', null],
    ['lease_token', null],
  ];
  if (row.status !== 'pending') return { kind: 'log', set: released };
  const common: Columns = [
    ...released,
    ['last_status', attempt.status],
    ['last_error', attempt.error],
    ['updated_at', now],
  ];
  if (row.replayed_at !== null) {
    // Replayed while this attempt was in flight: the replay takes effect now.
    return {
      kind: 'apply',
      status: 'pending',
      set: [
        ...common,
        ['status', 'pending'],
        ['round_start', attempt.attempt],
        ['next_attempt_at', now],
        ['replayed_at', null],
        ['delivered_at', null],
      ],
    };
  }
  const status: DeliveryStatus =
    outcome.result === 'delivered'
      ? 'delivered'
      : outcome.result === 'retry'
        ? 'pending'
        : 'failed';
  return {
    kind: 'apply',
    status,
    set: [
      ...common,
      ['status', status],
      ['next_attempt_at', status === 'pending' ? (outcome.nextAttemptAt ?? now) : null],
      ['delivered_at', status === 'delivered' ? now : null],
    ],
  };
}

/**
 * What a replay sets. While an attempt is in flight (a live lease) the delivery stays leased
 * to it, so that nothing sends it a second time at once: the replay is noted and takes effect
 * when that attempt is recorded (or its lease ends and it is claimed again). Otherwise the
 * delivery is due at once with a fresh attempt budget, and any old lease is void.
 */
export function replayColumns(
  row: Pick<DeliveryRow, 'status' | 'attempts' | 'lease_until' | 'lease_token'>,
  now: number,
): Columns {
  const inFlight =
    row.status === 'pending' &&
    row.lease_token !== null &&
    row.lease_until !== null &&
    row.lease_until > now;
  if (inFlight) {
    return [
      ['replayed_at', now],
      ['updated_at', now],
    ];
  }
  return [
    ['status', 'pending'],
    ['round_start', row.attempts],
    ['next_attempt_at', now],
    ['lease_until', null],
    ['lease_token', null],
    ['replayed_at', null],
    ['delivered_at', null],
    ['updated_at', now],
  ];
}

/** A replay of a delivery whose endpoint was deleted: it could never be sent. */
export function endpointDeleted(deliveryId: string, endpointId: string): AcceptedError {
  return new AcceptedError(
    'ENDPOINT_NOT_FOUND',
    `Delivery ${deliveryId} was to endpoint ${endpointId}, which was deleted: it cannot be sent.`,
    { fix: 'Create an endpoint again; new events are delivered to it.' },
  );
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

// ---- statements both adapters run ------------------------------------------------------------
//
// Written with PostgreSQL's numbered parameters (`$1`); the SQLite adapter runs them as `?1`,
// bound by number. Plain SQL both understand: `true`/`false`, `RETURNING`, `ON CONFLICT`, no
// casts, no boolean parameters.

export const WEBHOOK_SQL = Object.freeze({
  endpoint: 'SELECT * FROM webhook_endpoints WHERE id = $1 AND tenant = $2',
  endpointExists: 'SELECT 1 AS found FROM webhook_endpoints WHERE id = $1',
  insertEndpoint: `INSERT INTO webhook_endpoints (id, tenant, url, description, event_types,
      labels, secrets, signing_key, retry_schedule, rate_limit, enabled, created_at, updated_at,
      version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, true, $11, $11, 1)
    RETURNING *`,
  listEndpoints:
    'SELECT * FROM webhook_endpoints WHERE tenant = $1 AND pk < $2 ORDER BY pk DESC LIMIT $3',
  rotateEndpointSecret: `UPDATE webhook_endpoints SET secrets = $1, updated_at = $2,
      version = version + 1 WHERE pk = $3 RETURNING *`,
  /**
   * An endpoint's pending deliveries fail when it is deleted. An attempt in flight keeps its
   * lease token: its record logs the attempt and leaves the delivery failed (`planRecord`).
   */
  failEndpointDeliveries: `UPDATE webhook_deliveries SET status = 'failed',
      last_error = 'ENDPOINT_DELETED', next_attempt_at = NULL, lease_until = NULL,
      replayed_at = NULL, updated_at = $1
    WHERE tenant = $2 AND target = $3 AND status = 'pending'`,
  deleteEndpoint: 'DELETE FROM webhook_endpoints WHERE pk = $1',
  callbackSecrets: 'SELECT secrets FROM callback_secrets WHERE tenant = $1',
  insertCallbackSecrets: `INSERT INTO callback_secrets (tenant, secrets, updated_at)
    VALUES ($1, $2, $3) ON CONFLICT (tenant) DO NOTHING`,
  updateCallbackSecrets:
    'UPDATE callback_secrets SET secrets = $1, updated_at = $2 WHERE tenant = $3',
  /** The dispatcher's batch: up to `$2` events after the position `$1`. */
  dispatchBatch: `SELECT CAST(count(*) AS integer) AS n, max(seq) AS last FROM
      (SELECT seq FROM events WHERE seq > $1 ORDER BY seq LIMIT $2) b`,
  /** Of the batch, only the events a target may want are read in full. */
  dispatchEvents: `SELECT e.seq, e.operation_id, e.tenant, e.operation_type, e.version, e.type,
      e.data, e.time, e.labels, o.callback_url FROM events e
    LEFT JOIN operations o ON o.id = e.operation_id
    WHERE e.seq > $1 AND e.seq <= $2 AND (o.callback_url IS NOT NULL
      OR e.tenant IN (SELECT tenant FROM webhook_endpoints WHERE enabled = true))
    ORDER BY e.seq`,
  recordedDelivery: `SELECT pk, target, status, attempts, lease_token, replayed_at
    FROM webhook_deliveries WHERE id = $1`,
  /**
   * Locks a delivery's endpoint row, found through the delivery (whose target never changes)
   * without locking the delivery: endpoint before delivery is the order every writer takes.
   * NO KEY UPDATE: the record changes no key, so the dispatcher's KEY SHARE does not wait for
   * it, while a delete's FOR UPDATE does. A callback delivery has no endpoint row and locks
   * nothing. PostgreSQL only.
   */
  lockDeliveryEndpoint: `SELECT 1 FROM webhook_endpoints e
    JOIN webhook_deliveries d ON d.target = e.id WHERE d.id = $1 FOR NO KEY UPDATE OF e`,
  insertAttempt: `INSERT INTO webhook_attempts (delivery_pk, attempt, started_at, duration_ms,
      status, error, response_body) VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (delivery_pk, attempt) DO UPDATE SET started_at = excluded.started_at,
      duration_ms = excluded.duration_ms, status = excluded.status, error = excluded.error,
      response_body = excluded.response_body`,
  endpointSucceeded:
    'UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL',
  endpointFailing:
    'UPDATE webhook_endpoints SET failing_since = $1 WHERE id = $2 AND failing_since IS NULL',
  disableEndpoint: `UPDATE webhook_endpoints SET enabled = false, disabled_reason = $1,
      disabled_at = $2, updated_at = $2, version = version + 1 WHERE id = $3 AND enabled = true
    RETURNING id, tenant, url, version`,
  delivery: `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.id = $1 AND d.tenant = $2`,
  deliveryPk: 'SELECT pk FROM webhook_deliveries WHERE id = $1 AND tenant = $2',
  attempts: `SELECT attempt, started_at, duration_ms, status, error, response_body
    FROM webhook_attempts WHERE delivery_pk = $1 ORDER BY attempt`,
  replayEndpoint: `UPDATE webhook_deliveries SET status = 'pending', round_start = attempts,
      next_attempt_at = $1, lease_until = NULL, lease_token = NULL, replayed_at = NULL,
      delivered_at = NULL, updated_at = $1
    WHERE tenant = $2 AND target = $3 AND status = 'failed' AND created_at >= $4
    RETURNING pk`,
  anyExpiredDelivery: `SELECT 1 AS found FROM webhook_deliveries
    WHERE status <> 'pending' AND created_at < $1 LIMIT 1`,
  purgeDeliveries: `DELETE FROM webhook_deliveries WHERE pk IN (SELECT pk FROM webhook_deliveries
      WHERE status <> 'pending' AND created_at < $1 LIMIT $2) RETURNING pk`,
});

/** Parameters of `WEBHOOK_SQL.insertEndpoint`. */
export function endpointValues(endpoint: NewEndpoint, now: number): (string | number | null)[] {
  const asJson = (value: unknown) => (value ? JSON.stringify(value) : null);
  return [
    endpoint.id,
    endpoint.tenant,
    endpoint.url,
    endpoint.description,
    asJson(endpoint.eventTypes),
    asJson(endpoint.labels),
    JSON.stringify([{ secret: endpoint.secret, expiresAt: null }]),
    endpoint.signingKey,
    asJson(endpoint.retrySchedule),
    endpoint.rateLimit,
    now,
  ];
}

/**
 * `UPDATE table SET a = $1, b = $2, ... WHERE pk = $n` of column assignments (an endpoint's
 * version bumped too), with its parameters.
 */
export function updateByPk(
  table: 'webhook_endpoints' | 'webhook_deliveries' | 'webhook_deliveries d',
  columns: Columns,
  pk: number,
  returning = '',
): { sql: string; params: Columns[number][1][] } {
  const set = columns.map(([column], i) => `${column} = $${i + 1}`);
  if (table === 'webhook_endpoints') set.push('version = version + 1');
  return {
    sql: `UPDATE ${table} SET ${set.join(', ')} WHERE pk = $${columns.length + 1} ${returning}`,
    params: [...columns.map(([, value]) => value), pk],
  };
}

/** Parameters of `WEBHOOK_SQL.rotateEndpointSecret`: `secret` current, the others until then. */
export function rotationValues(
  row: EndpointRow,
  secret: string,
  previousUntil: number,
  now: number,
): [secrets: string, now: number, pk: number] {
  return [JSON.stringify(rotatedSecrets(row.secrets, secret, previousUntil, now)), now, row.pk];
}

/** PRECONDITION_FAILED unless the endpoint's version is one of `ifVersion` (when given). */
export function checkEndpointVersion(
  row: EndpointRow,
  ifVersion: readonly number[] | undefined,
): void {
  if (ifVersion === undefined || ifVersion.includes(row.version)) return;
  throw new AcceptedError(
    'PRECONDITION_FAILED',
    `Endpoint ${row.id} is at version ${row.version}, not the one given in If-Match.`,
    {
      details: { version: row.version },
      fix: 'Read the endpoint again (its ETag is the current version) and decide anew.',
    },
  );
}

/** Parameters of `WEBHOOK_SQL.insertAttempt`. */
export function attemptValues(pk: number, attempt: Attempt): (string | number | null)[] {
  return [
    pk,
    attempt.attempt,
    attempt.startedAt,
    attempt.durationMs,
    attempt.status,
    attempt.error,
    attempt.responseBody,
  ];
}

/** A row of `WEBHOOK_SQL.attempts`. */
export interface AttemptRow {
  attempt: number;
  started_at: number;
  duration_ms: number;
  status: number | null;
  error: string | null;
  response_body: string;
}

export function toAttempt(deliveryId: string, row: AttemptRow): Attempt {
  return {
    deliveryId,
    attempt: row.attempt,
    startedAt: row.started_at,
    durationMs: row.duration_ms,
    status: row.status,
    error: row.error,
    responseBody: row.response_body,
  };
}

/** The endpoint a record disabled (`WEBHOOK_SQL.disableEndpoint`). */
export interface DisabledEndpoint {
  id: string;
  tenant: string;
  url: string;
  version: number;
}

/** The `endpoint.disabled` event of an endpoint an attempt's outcome disabled. */
export function disabledEvent(
  endpoint: DisabledEndpoint,
  disable: NonNullable<AttemptOutcome['disableEndpoint']>,
): { type: 'endpoint.disabled'; data: EventData } {
  const { id, url } = endpoint;
  return {
    type: 'endpoint.disabled',
    data: { endpoint: { id, url, reason: disable.reason, message: disable.message } },
  };
}

/** A recorded delivery's row as a record reads it (`WEBHOOK_SQL.recordedDelivery`). */
export type RecordedRow = Pick<
  DeliveryRow,
  'pk' | 'target' | 'status' | 'attempts' | 'lease_token' | 'replayed_at'
>;
