import type Database from 'better-sqlite3';
import { AcceptedError } from '../../domain/errors.ts';
import {
  ENDPOINT_EVENT_OPERATION_TYPE,
  type EventData,
  type EventType,
} from '../../domain/events.ts';
import {
  CALLBACK_TARGET,
  type Attempt,
  type Delivery,
  type Endpoint,
  type EndpointPatch,
  type NewEndpoint,
  type SecretEntry,
} from '../../domain/webhooks.ts';
import { decodeCursor, toPage } from '../page.ts';
import {
  CLAIM_EXTRA_COLUMNS,
  DELIVERY_COLUMNS,
  claimableNowSql,
  claimableSql,
  deliveriesOf,
  endpointDeleted,
  endpointPatchColumns,
  grantClaims,
  leaseColumns,
  newDeliveryLease,
  nextDeliverySql,
  planRecord,
  replayColumns,
  toClaimedDelivery,
  type ClaimRow,
  type Columns,
  type DispatchRow,
  type RateWindow,
  type SqlDialect,
  deliveryNotFound,
  endpointNotFound,
  liveSecrets,
  rotatedSecrets,
  toDelivery,
  toEndpoint,
  type DeliveryRow,
  type EndpointRow,
} from '../webhook-rows.ts';

import type {
  AttemptOutcome,
  ClaimedDelivery,
  DeliveryQuery,
  DispatchRequest,
  Page,
  WebhookStore,
} from '../store.ts';

/** What the webhook tables need of the SQLite store. */
export interface SqliteAccess {
  stmt(sql: string): Database.Statement;
  /** Runs in the group commit; resolves once durable. */
  write<T>(run: () => T): Promise<T>;
  /** Runs a read now; a throw becomes a rejection. */
  read<T>(run: () => T): Promise<T>;
  /** Appends an event to the log in the current write (not about an operation). */
  appendEvent(
    row: { id: string; tenant: string; type: string; version: number; labels: string },
    type: EventType,
    data: EventData,
    now: number,
  ): void;
}

const SQLITE: SqlDialect = { enabled: 'e.enabled = 1', greatest: 'max' };

/** `UPDATE webhook_deliveries SET ... WHERE pk = ?` of shared column assignments. */
function setSql(columns: Columns): { sql: string; params: Columns[number][1][] } {
  return {
    sql: columns.map(([column]) => `${column} = ?`).join(', '),
    params: columns.map(([, value]) => value),
  };
}

/** The webhook tables of the SQLite store (see `WebhookStore`). */
export class SqliteWebhooks implements WebhookStore {
  constructor(private readonly db: SqliteAccess) {}

  private updateDelivery(pk: number, columns: Columns): void {
    const { sql, params } = setSql(columns);
    this.db.stmt(`UPDATE webhook_deliveries SET ${sql} WHERE pk = ?`).run(...params, pk);
  }

  private endpointRow(id: string, tenant: string): EndpointRow {
    const row = this.db
      .stmt('SELECT * FROM webhook_endpoints WHERE id = ? AND tenant = ?')
      .get(id, tenant) as EndpointRow | undefined;
    if (!row) throw endpointNotFound(id);
    return row;
  }

  private checkVersion(row: EndpointRow, ifVersion: readonly number[] | undefined): void {
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

  createEndpoint(endpoint: NewEndpoint, now: number): Promise<Endpoint> {
    return this.db.write(() => {
      this.db
        .stmt(
          `INSERT INTO webhook_endpoints (id, tenant, url, description, event_types, labels,
             secrets, signing_key, retry_schedule, rate_limit, enabled, created_at, updated_at,
             version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, 1)`,
        )
        .run(
          endpoint.id,
          endpoint.tenant,
          endpoint.url,
          endpoint.description,
          endpoint.eventTypes ? JSON.stringify(endpoint.eventTypes) : null,
          endpoint.labels ? JSON.stringify(endpoint.labels) : null,
          JSON.stringify([{ secret: endpoint.secret, expiresAt: null }]),
          endpoint.signingKey,
          endpoint.retrySchedule ? JSON.stringify(endpoint.retrySchedule) : null,
          endpoint.rateLimit,
          now,
          now,
        );
      return toEndpoint(this.endpointRow(endpoint.id, endpoint.tenant));
    });
  }

  getEndpoint(id: string, tenant: string): Promise<Endpoint | null> {
    return this.db.read(() => {
      const row = this.db
        .stmt('SELECT * FROM webhook_endpoints WHERE id = ? AND tenant = ?')
        .get(id, tenant) as EndpointRow | undefined;
      return row ? toEndpoint(row) : null;
    });
  }

  listEndpoints(query: {
    tenant: string;
    limit: number;
    cursor?: string;
  }): Promise<Page<Endpoint>> {
    return this.db.read(() => {
      const before =
        query.cursor === undefined ? Number.MAX_SAFE_INTEGER : decodeCursor('w', query.cursor);
      const rows = this.db
        .stmt(
          'SELECT * FROM webhook_endpoints WHERE tenant = ? AND pk < ? ORDER BY pk DESC LIMIT ?',
        )
        .all(query.tenant, before, query.limit + 1) as EndpointRow[];
      return toPage('w', rows, query.limit, toEndpoint);
    });
  }

  updateEndpoint(
    id: string,
    tenant: string,
    patch: EndpointPatch,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<Endpoint> {
    return this.db.write(() => {
      const row = this.endpointRow(id, tenant);
      this.checkVersion(row, ifVersion);
      const columns = endpointPatchColumns(patch, row, now);
      const sets = columns.map(([column]) => `${column} = ?`);
      const params = columns.map(([, value]) => value);
      this.db
        .stmt(`UPDATE webhook_endpoints SET ${sets.join(', ')}, version = version + 1 WHERE pk = ?`)
        .run(...params, row.pk);
      return toEndpoint(this.endpointRow(id, tenant));
    });
  }

  rotateEndpointSecret(
    id: string,
    tenant: string,
    secret: string,
    previousUntil: number,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<Endpoint> {
    return this.db.write(() => {
      const row = this.endpointRow(id, tenant);
      this.checkVersion(row, ifVersion);
      const secrets = rotatedSecrets(row.secrets, secret, previousUntil, now);
      this.db
        .stmt(
          `UPDATE webhook_endpoints SET secrets = ?, updated_at = ?, version = version + 1
           WHERE pk = ?`,
        )
        .run(JSON.stringify(secrets), now, row.pk);
      return toEndpoint(this.endpointRow(id, tenant));
    });
  }

  deleteEndpoint(
    id: string,
    tenant: string,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<void> {
    return this.db.write(() => {
      const row = this.endpointRow(id, tenant);
      this.checkVersion(row, ifVersion);
      // An attempt in flight keeps its lease token: its record logs the attempt, and leaves
      // the delivery failed (see `planRecord`).
      this.db
        .stmt(
          `UPDATE webhook_deliveries SET status = 'failed', last_error = 'ENDPOINT_DELETED',
             next_attempt_at = NULL, lease_until = NULL, replayed_at = NULL, updated_at = ?
           WHERE tenant = ? AND target = ? AND status = 'pending'`,
        )
        .run(now, tenant, id);
      this.db.stmt('DELETE FROM webhook_endpoints WHERE pk = ?').run(row.pk);
    });
  }

  callbackSecrets(tenant: string, fresh: string, now: number): Promise<SecretEntry[]> {
    return this.db.write(() => this.ensureCallbackSecrets(tenant, fresh, now));
  }

  private ensureCallbackSecrets(tenant: string, fresh: string, now: number): SecretEntry[] {
    const row = this.db
      .stmt('SELECT secrets FROM callback_secrets WHERE tenant = ?')
      .get(tenant) as { secrets: string } | undefined;
    if (row) return liveSecrets(row.secrets, now);
    const secrets = [{ secret: fresh, expiresAt: null }];
    this.db
      .stmt('INSERT INTO callback_secrets (tenant, secrets, updated_at) VALUES (?, ?, ?)')
      .run(tenant, JSON.stringify(secrets), now);
    return secrets;
  }

  rotateCallbackSecret(
    tenant: string,
    secret: string,
    previousUntil: number,
    now: number,
  ): Promise<SecretEntry[]> {
    return this.db.write(() => {
      const current = this.ensureCallbackSecrets(tenant, secret, now);
      if (current.length === 1 && current[0]?.secret === secret) return current; // just made
      const secrets = rotatedSecrets(JSON.stringify(current), secret, previousUntil, now);
      this.db
        .stmt('UPDATE callback_secrets SET secrets = ?, updated_at = ? WHERE tenant = ?')
        .run(JSON.stringify(secrets), now, tenant);
      return secrets;
    });
  }

  dispatchDeliveries(request: DispatchRequest): Promise<{ events: number; deliveries: number }> {
    return this.db.write(() => {
      const cursor = (
        this.db.stmt(`SELECT value FROM meta WHERE key = 'webhook_cursor'`).get() as {
          value: number;
        }
      ).value;
      // The batch: up to `limit` events after the cursor. Of them only those that a target
      // may want are read in full (a server without webhooks reads none).
      const batch = this.db
        .stmt(
          `SELECT count(*) AS n, max(seq) AS last FROM
             (SELECT seq FROM events WHERE seq > ? ORDER BY seq LIMIT ?)`,
        )
        .get(cursor, request.limit) as { n: number; last: number | null };
      if (batch.last === null) return { events: 0, deliveries: 0 };
      const rows = this.db
        .stmt(
          `SELECT e.seq, e.operation_id, e.tenant, e.operation_type, e.version, e.type, e.data,
             e.time, e.labels, o.callback_url FROM events e
           LEFT JOIN operations o ON o.id = e.operation_id
           WHERE e.seq > ? AND e.seq <= ? AND (o.callback_url IS NOT NULL
             OR e.tenant IN (SELECT tenant FROM webhook_endpoints WHERE enabled = 1))
           ORDER BY e.seq`,
        )
        .all(cursor, batch.last) as DispatchRow[];
      const tenants = [...new Set(rows.map((row) => row.tenant))];
      const endpoints = (
        this.db
          .stmt(
            `SELECT * FROM webhook_endpoints WHERE enabled = 1 AND tenant IN
               (SELECT value FROM json_each(?)) ORDER BY pk`,
          )
          .all(JSON.stringify(tenants)) as EndpointRow[]
      ).map(toEndpoint);
      const { deliveries, callbackTenants } = deliveriesOf(rows, endpoints, request);
      for (const tenant of callbackTenants) {
        this.ensureCallbackSecrets(tenant, request.newSecret(), request.now);
      }
      const insert = this.db.stmt(
        `INSERT INTO webhook_deliveries (id, tenant, target, url, operation_id, event_seq,
           event_type, payload, status, next_attempt_at, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)`,
      );
      for (const d of deliveries) {
        insert.run(
          d.id,
          d.tenant,
          d.target,
          d.url,
          d.operationId,
          d.eventSeq,
          d.eventType,
          d.payload,
          request.now,
          request.now,
          request.now,
        );
      }
      this.db.stmt(`UPDATE meta SET value = ? WHERE key = 'webhook_cursor'`).run(batch.last);
      return { events: batch.n, deliveries: deliveries.length };
    });
  }

  claimDeliveries(request: {
    now: number;
    limit: number;
    leaseMs: number;
  }): Promise<ClaimedDelivery[]> {
    return this.db.write(() => {
      const { now } = request;
      const rows = this.db
        .stmt(
          `SELECT ${DELIVERY_COLUMNS}, ${CLAIM_EXTRA_COLUMNS}, e.rate_window, e.rate_count
           FROM webhook_deliveries d
           LEFT JOIN webhook_endpoints e ON e.id = d.target
           LEFT JOIN callback_secrets c ON c.tenant = d.tenant AND d.target = '${CALLBACK_TARGET}'
           WHERE ${claimableSql(SQLITE, '@now', '@sec')}
           ORDER BY d.next_attempt_at, d.pk LIMIT @limit`,
        )
        .all({ now, sec: Math.floor(now / 1000), limit: request.limit }) as (ClaimRow & {
        rate_window: number | null;
        rate_count: number | null;
      })[];
      // The one writer: the windows read in this transaction are the current ones.
      const rates = new Map<string, RateWindow>();
      for (const row of rows) {
        if (row.rate_limit === null) continue;
        rates.set(row.target, {
          limit: row.rate_limit,
          window: row.rate_window,
          count: row.rate_count ?? 0,
        });
      }
      const { granted, windows } = grantClaims(rows, rates, now);
      const window = this.db.stmt(
        'UPDATE webhook_endpoints SET rate_window = ?, rate_count = ? WHERE id = ?',
      );
      for (const [target, w] of windows) window.run(w.window, w.count, target);
      const leaseUntil = now + request.leaseMs;
      return granted.map((row) => {
        const token = newDeliveryLease();
        this.updateDelivery(row.pk, leaseColumns(row, leaseUntil, token));
        return toClaimedDelivery(row, now, leaseUntil, token);
      });
    });
  }

  recordAttempt(outcome: AttemptOutcome): Promise<void> {
    return this.db.write(() => {
      const { attempt } = outcome;
      const row = this.db
        .stmt(
          `SELECT pk, target, status, attempts, lease_token, replayed_at
           FROM webhook_deliveries WHERE id = ?`,
        )
        .get(attempt.deliveryId) as
        | Pick<DeliveryRow, 'pk' | 'target' | 'status' | 'attempts' | 'lease_token' | 'replayed_at'>
        | undefined;
      const plan = planRecord(row, outcome);
      if (!row || plan.kind === 'stale') return;
      const now = attempt.startedAt + attempt.durationMs;
      this.updateDelivery(row.pk, plan.set);
      this.db
        .stmt(
          `INSERT OR REPLACE INTO webhook_attempts (delivery_pk, attempt, started_at, duration_ms,
             status, error, response_body) VALUES (?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          row.pk,
          attempt.attempt,
          attempt.startedAt,
          attempt.durationMs,
          attempt.status,
          attempt.error,
          attempt.responseBody,
        );
      if (plan.kind === 'log' || row.target === CALLBACK_TARGET) return;
      if (outcome.result === 'delivered') {
        this.db
          .stmt(
            'UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL',
          )
          .run(row.target);
      } else {
        this.db
          .stmt(
            'UPDATE webhook_endpoints SET failing_since = ? WHERE id = ? AND failing_since IS NULL',
          )
          .run(attempt.startedAt, row.target);
      }
      const disable = outcome.disableEndpoint;
      if (disable) {
        const endpoint = this.db
          .stmt(
            `UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?, disabled_at = ?,
               updated_at = ?, version = version + 1 WHERE id = ? AND enabled = 1
             RETURNING id, tenant, url, version`,
          )
          .get(disable.reason, now, now, row.target) as
          { id: string; tenant: string; url: string; version: number } | undefined;
        if (endpoint) {
          this.db.appendEvent(
            { ...endpoint, type: ENDPOINT_EVENT_OPERATION_TYPE, labels: '{}' },
            'endpoint.disabled',
            {
              endpoint: {
                id: endpoint.id,
                url: endpoint.url,
                reason: disable.reason,
                message: disable.message,
              },
            },
            now,
          );
        }
      }
    });
  }

  nextDeliveryAt(now = Date.now()): Promise<number | null> {
    return this.db.read(() => {
      const sec = Math.floor(now / 1000);
      if (this.db.stmt(claimableNowSql(SQLITE, '@now', '@sec')).get({ now, sec })) return now;
      return (this.db.stmt(nextDeliverySql(SQLITE, '@sec')).get({ sec }) as { t: number | null }).t;
    });
  }

  getDelivery(id: string, tenant: string): Promise<Delivery | null> {
    return this.db.read(() => {
      const row = this.db
        .stmt(
          `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.id = ? AND d.tenant = ?`,
        )
        .get(id, tenant) as DeliveryRow | undefined;
      return row ? toDelivery(row) : null;
    });
  }

  listDeliveries(query: DeliveryQuery): Promise<Page<Delivery>> {
    return this.db.read(() => {
      const where = ['d.tenant = ?'];
      const params: (string | number)[] = [query.tenant];
      if (query.endpointId !== undefined) {
        where.push('d.target = ?');
        params.push(query.endpointId);
      }
      if (query.operationId !== undefined) {
        where.push('d.operation_id = ?');
        params.push(query.operationId);
      }
      if (query.status && query.status.length > 0) {
        where.push(`d.status IN (${query.status.map(() => '?').join(', ')})`);
        params.push(...query.status);
      }
      if (query.cursor !== undefined) {
        where.push('d.pk < ?');
        params.push(decodeCursor('w', query.cursor));
      }
      const rows = this.db
        .stmt(
          `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE ${where.join(' AND ')}
           ORDER BY d.pk DESC LIMIT ?`,
        )
        .all(...params, query.limit + 1) as DeliveryRow[];
      return toPage('w', rows, query.limit, toDelivery);
    });
  }

  listAttempts(deliveryId: string, tenant: string): Promise<Attempt[]> {
    return this.db.read(() => {
      const delivery = this.db
        .stmt('SELECT pk FROM webhook_deliveries WHERE id = ? AND tenant = ?')
        .get(deliveryId, tenant) as { pk: number } | undefined;
      if (!delivery) throw deliveryNotFound(deliveryId);
      const rows = this.db
        .stmt(
          `SELECT attempt, started_at, duration_ms, status, error, response_body
           FROM webhook_attempts WHERE delivery_pk = ? ORDER BY attempt`,
        )
        .all(delivery.pk) as {
        attempt: number;
        started_at: number;
        duration_ms: number;
        status: number | null;
        error: string | null;
        response_body: string;
      }[];
      return rows.map((row) => ({
        deliveryId,
        attempt: row.attempt,
        startedAt: row.started_at,
        durationMs: row.duration_ms,
        status: row.status,
        error: row.error,
        responseBody: row.response_body,
      }));
    });
  }

  replayDelivery(id: string, tenant: string, now: number): Promise<Delivery> {
    return this.db.write(() => {
      const read = () =>
        this.db
          .stmt(
            `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.id = ? AND d.tenant = ?`,
          )
          .get(id, tenant) as DeliveryRow | undefined;
      const row = read();
      if (!row) throw deliveryNotFound(id);
      if (row.target !== CALLBACK_TARGET) {
        const endpoint = this.db
          .stmt('SELECT 1 FROM webhook_endpoints WHERE id = ?')
          .get(row.target);
        if (!endpoint) throw endpointDeleted(id, row.target);
      }
      this.updateDelivery(row.pk, replayColumns(row, now));
      return toDelivery(read() as DeliveryRow);
    });
  }

  replayEndpoint(endpointId: string, tenant: string, since: number, now: number): Promise<number> {
    return this.db.write(() => {
      this.endpointRow(endpointId, tenant);
      return this.db
        .stmt(
          `UPDATE webhook_deliveries SET status = 'pending', round_start = attempts,
             next_attempt_at = ?, lease_until = NULL, lease_token = NULL, replayed_at = NULL,
             delivered_at = NULL, updated_at = ?
           WHERE tenant = ? AND target = ? AND status = 'failed' AND created_at >= ?`,
        )
        .run(now, now, tenant, endpointId, since).changes;
    });
  }

  async purgeDeliveries(before: number, limit: number): Promise<number> {
    // A read first: an idle server's hourly pass commits nothing when nothing has expired.
    const any = await this.db.read(() =>
      this.db
        .stmt(
          `SELECT 1 FROM webhook_deliveries WHERE status <> 'pending' AND created_at < ? LIMIT 1`,
        )
        .get(before),
    );
    if (!any) return 0;
    return this.db.write(() => {
      const rows = this.db
        .stmt(
          `DELETE FROM webhook_deliveries WHERE pk IN (SELECT pk FROM webhook_deliveries
             WHERE status <> 'pending' AND created_at < ? LIMIT ?) RETURNING pk`,
        )
        .all(before, limit) as { pk: number }[];
      const attempts = this.db.stmt('DELETE FROM webhook_attempts WHERE delivery_pk = ?');
      for (const row of rows) attempts.run(row.pk);
      return rows.length;
    });
  }
}
