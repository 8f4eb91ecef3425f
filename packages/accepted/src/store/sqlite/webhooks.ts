import { ENDPOINT_EVENT_OPERATION_TYPE } from '../../domain/events.ts';
import { CALLBACK_TARGET } from '../../domain/webhooks.ts';
import type * as domain from '../../domain/webhooks.ts';
import { heldRow, planCommit, toConsumerLease } from '../consumer-rules.ts';
import { decodeCursor, toPage } from '../page.ts';
import type * as api from '../store.ts';
import * as rows from '../webhook-rows.ts';
import type { SqliteConsumers, SqliteTables } from './consumers.ts';

const SQL = rows.WEBHOOK_SQL;

/** What the webhook tables need of the SQLite store. */
export interface SqliteAccess extends SqliteTables {
  /** Appends an event to the log in the current write (not about an operation). */
  appendEvent(
    row: { id: string; tenant: string; type: string; version: number; labels: string },
    type: 'endpoint.disabled',
    data: ReturnType<typeof rows.disabledEvent>['data'],
    now: number,
  ): void;
  /** The relay cursor's table: the dispatcher commits its consumer in the same write. */
  consumers: SqliteConsumers;
}

const SQLITE: rows.SqlDialect = { enabled: 'e.enabled = 1', greatest: 'max' };

type Value = rows.Columns[number][1];

/** A shared statement (`$n` parameters) as SQLite runs it: `?n`, bound by number. */
const numbered = new Map<string, string>();
function sqlite(sql: string): string {
  let text = numbered.get(sql);
  if (text === undefined) {
    text = sql.replace(/\$(\d+)/g, '?$1');
    numbered.set(sql, text);
  }
  return text;
}

const byNumber = (params: readonly Value[]) =>
  Object.fromEntries(params.map((value, i) => [i + 1, value]));

/**
 * The webhook tables of the SQLite store (see `WebhookStore`): every write in the store's
 * group commit. The statements and rules are `webhook-rows.ts`'s, shared with PostgreSQL.
 */
export class SqliteWebhooks implements api.WebhookStore {
  constructor(private readonly db: SqliteAccess) {}

  private all<T>(sql: string, params: readonly Value[]): T[] {
    return this.db.stmt(sqlite(sql)).all(byNumber(params)) as T[];
  }

  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the row
  private one<T>(sql: string, params: readonly Value[]): T | undefined {
    return this.db.stmt(sqlite(sql)).get(byNumber(params)) as T | undefined;
  }

  private run(sql: string, params: readonly Value[]): number {
    return this.db.stmt(sqlite(sql)).run(byNumber(params)).changes;
  }

  private updateDelivery(pk: number, columns: rows.Columns): void {
    const update = rows.updateByPk('webhook_deliveries', columns, pk);
    this.run(update.sql, update.params);
  }

  private endpointRow(id: string, tenant: string): rows.EndpointRow {
    const row = this.one<rows.EndpointRow>(SQL.endpoint, [id, tenant]);
    if (!row) throw rows.endpointNotFound(id);
    return row;
  }

  createEndpoint(endpoint: domain.NewEndpoint, now: number): Promise<domain.Endpoint> {
    return this.db.write(() => {
      const row = this.one<rows.EndpointRow>(
        SQL.insertEndpoint,
        rows.endpointValues(endpoint, now),
      );
      return rows.toEndpoint(row as rows.EndpointRow);
    });
  }

  getEndpoint(id: string, tenant: string): Promise<domain.Endpoint | null> {
    return this.db.read(() => {
      const row = this.one<rows.EndpointRow>(SQL.endpoint, [id, tenant]);
      return row ? rows.toEndpoint(row) : null;
    });
  }

  listEndpoints(query: {
    tenant: string;
    limit: number;
    cursor?: string;
  }): Promise<api.Page<domain.Endpoint>> {
    return this.db.read(() => {
      const before =
        query.cursor === undefined ? Number.MAX_SAFE_INTEGER : decodeCursor('w', query.cursor);
      const found = this.all<rows.EndpointRow>(SQL.listEndpoints, [
        query.tenant,
        before,
        query.limit + 1,
      ]);
      return toPage('w', found, query.limit, rows.toEndpoint);
    });
  }

  updateEndpoint(
    id: string,
    tenant: string,
    patch: domain.EndpointPatch,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<domain.Endpoint> {
    return this.db.write(() => {
      const row = this.endpointRow(id, tenant);
      rows.checkEndpointVersion(row, ifVersion);
      const columns = rows.endpointPatchColumns(patch, row, now);
      const update = rows.updateByPk('webhook_endpoints', columns, row.pk, 'RETURNING *');
      return rows.toEndpoint(this.one<rows.EndpointRow>(update.sql, update.params) ?? row);
    });
  }

  rotateEndpointSecret(
    id: string,
    tenant: string,
    secret: string,
    previousUntil: number,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<domain.Endpoint> {
    return this.db.write(() => {
      const row = this.endpointRow(id, tenant);
      rows.checkEndpointVersion(row, ifVersion);
      const values = rows.rotationValues(row, secret, previousUntil, now);
      return rows.toEndpoint(this.one<rows.EndpointRow>(SQL.rotateEndpointSecret, values) ?? row);
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
      rows.checkEndpointVersion(row, ifVersion);
      this.run(SQL.failEndpointDeliveries, [now, tenant, id]);
      this.run(SQL.deleteEndpoint, [row.pk]);
    });
  }

  callbackSecrets(tenant: string, fresh: string, now: number): Promise<domain.SecretEntry[]> {
    return this.db.write(() => this.ensureCallbackSecrets(tenant, fresh, now));
  }

  private ensureCallbackSecrets(tenant: string, fresh: string, now: number): domain.SecretEntry[] {
    const row = this.one<{ secrets: string }>(SQL.callbackSecrets, [tenant]);
    if (row) return rows.liveSecrets(row.secrets, now);
    const secrets = [{ secret: fresh, expiresAt: null }];
    this.run(SQL.insertCallbackSecrets, [tenant, JSON.stringify(secrets), now]);
    return secrets;
  }

  rotateCallbackSecret(
    tenant: string,
    secret: string,
    previousUntil: number,
    now: number,
  ): Promise<domain.SecretEntry[]> {
    return this.db.write(() => {
      const current = this.ensureCallbackSecrets(tenant, secret, now);
      if (current.length === 1 && current[0]?.secret === secret) return current; // just made
      const secrets = rows.rotatedSecrets(JSON.stringify(current), secret, previousUntil, now);
      this.run(SQL.updateCallbackSecrets, [JSON.stringify(secrets), now, tenant]);
      return secrets;
    });
  }

  dispatchDeliveries(request: api.DispatchRequest): Promise<api.DispatchResult> {
    const askedAt = Date.now();
    return this.db.write(() => {
      const { consumers } = this.db;
      const consumer = heldRow(consumers.row(request.lease.name), request.lease);
      const cursor = consumer.position;
      const batch = this.one<{ n: number; last: number | null }>(SQL.dispatchBatch, [
        cursor,
        request.limit,
      ]);
      if (!batch || batch.last === null) {
        return { events: 0, deliveries: 0, lease: toConsumerLease(consumer) };
      }
      const events = this.all<rows.DispatchRow>(SQL.dispatchEvents, [cursor, batch.last]);
      const tenants = [...new Set(events.map((row) => row.tenant))];
      const endpoints = this.all<rows.EndpointRow>(
        `SELECT * FROM webhook_endpoints WHERE enabled = true AND tenant IN
           (SELECT value FROM json_each($1)) ORDER BY pk`,
        [JSON.stringify(tenants)],
      ).map(rows.toEndpoint);
      const { deliveries, callbackTenants } = rows.deliveriesOf(events, endpoints, request);
      for (const tenant of callbackTenants) {
        this.ensureCallbackSecrets(tenant, request.newSecret(), request.now);
      }
      const insert = this.db.stmt(
        `INSERT INTO webhook_deliveries (id, tenant, target, url, operation_id, event_seq,
           event_type, payload, status, next_attempt_at, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)`,
      );
      for (const d of deliveries) {
        const { now } = request;
        const { id, tenant, target, url, operationId, eventSeq, eventType, payload } = d;
        insert.run(
          id,
          tenant,
          target,
          url,
          operationId,
          eventSeq,
          eventType,
          payload,
          now,
          now,
          now,
        );
      }
      const moved = planCommit(consumer, request.lease, batch.last, {
        now: request.now,
        askedAt,
        logEnd: batch.last,
      });
      consumers.save(moved);
      return { events: batch.n, deliveries: deliveries.length, lease: toConsumerLease(moved) };
    });
  }

  claimDeliveries(request: {
    now: number;
    limit: number;
    leaseMs: number;
  }): Promise<api.ClaimedDelivery[]> {
    return this.db.write(() => {
      const { now } = request;
      const candidates = this.db
        .stmt(
          `SELECT ${rows.DELIVERY_COLUMNS}, ${rows.CLAIM_EXTRA_COLUMNS}, e.rate_window,
             e.rate_count
           FROM webhook_deliveries d
           LEFT JOIN webhook_endpoints e ON e.id = d.target
           LEFT JOIN callback_secrets c ON c.tenant = d.tenant AND d.target = '${CALLBACK_TARGET}'
           WHERE ${rows.claimableSql(SQLITE, '@now', '@sec')}
           ORDER BY d.next_attempt_at, d.pk LIMIT @limit`,
        )
        .all({ now, sec: Math.floor(now / 1000), limit: request.limit }) as (rows.ClaimRow & {
        rate_window: number | null;
        rate_count: number | null;
      })[];
      // The one writer: the windows read in this transaction are the current ones.
      const rates = new Map<string, rows.RateWindow>();
      for (const row of candidates) {
        if (row.rate_limit === null) continue;
        const { rate_limit: limit, rate_window: window, rate_count: count } = row;
        rates.set(row.target, { limit, window, count: count ?? 0 });
      }
      const { granted, windows } = rows.grantClaims(candidates, rates, now);
      const window = this.db.stmt(
        'UPDATE webhook_endpoints SET rate_window = ?, rate_count = ? WHERE id = ?',
      );
      for (const [target, w] of windows) window.run(w.window, w.count, target);
      const leaseUntil = now + request.leaseMs;
      return granted.map((row) => {
        const token = rows.newDeliveryLease();
        this.updateDelivery(row.pk, rows.leaseColumns(row, leaseUntil, token));
        return rows.toClaimedDelivery(row, now, leaseUntil, token);
      });
    });
  }

  recordAttempt(outcome: api.AttemptOutcome): Promise<void> {
    return this.db.write(() => {
      const { attempt } = outcome;
      const row = this.one<rows.RecordedRow>(SQL.recordedDelivery, [attempt.deliveryId]);
      const plan = rows.planRecord(row, outcome);
      if (!row || plan.kind === 'stale') return;
      const now = attempt.startedAt + attempt.durationMs;
      this.updateDelivery(row.pk, plan.set);
      this.run(SQL.insertAttempt, rows.attemptValues(row.pk, attempt));
      if (plan.kind === 'log' || row.target === CALLBACK_TARGET) return;
      if (outcome.result === 'delivered') this.run(SQL.endpointSucceeded, [row.target]);
      else this.run(SQL.endpointFailing, [attempt.startedAt, row.target]);
      const disable = outcome.disableEndpoint;
      if (!disable) return;
      const endpoint = this.one<rows.DisabledEndpoint>(SQL.disableEndpoint, [
        disable.reason,
        now,
        row.target,
      ]);
      if (!endpoint) return;
      const { type, data } = rows.disabledEvent(endpoint, disable);
      const source = { ...endpoint, type: ENDPOINT_EVENT_OPERATION_TYPE, labels: '{}' };
      this.db.appendEvent(source, type, data, now);
    });
  }

  nextDeliveryAt(now = Date.now()): Promise<number | null> {
    return this.db.read(() => {
      const sec = Math.floor(now / 1000);
      if (this.db.stmt(rows.claimableNowSql(SQLITE, '@now', '@sec')).get({ now, sec })) return now;
      const next = this.db.stmt(rows.nextDeliverySql(SQLITE, '@sec')).get({ sec });
      return (next as { t: number | null }).t;
    });
  }

  getDelivery(id: string, tenant: string): Promise<domain.Delivery | null> {
    return this.db.read(() => {
      const row = this.one<rows.DeliveryRow>(SQL.delivery, [id, tenant]);
      return row ? rows.toDelivery(row) : null;
    });
  }

  listDeliveries(query: api.DeliveryQuery): Promise<api.Page<domain.Delivery>> {
    return this.db.read(() => {
      const where = ['d.tenant = ?'];
      const params: (string | number)[] = [query.tenant];
      const add = (clause: string, ...values: (string | number)[]) => {
        where.push(clause);
        params.push(...values);
      };
      if (query.endpointId !== undefined) add('d.target = ?', query.endpointId);
      if (query.operationId !== undefined) add('d.operation_id = ?', query.operationId);
      if (query.status && query.status.length > 0) {
        add(`d.status IN (${query.status.map(() => '?').join(', ')})`, ...query.status);
      }
      if (query.cursor !== undefined) add('d.pk < ?', decodeCursor('w', query.cursor));
      const found = this.db
        .stmt(
          `SELECT ${rows.DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE ${where.join(' AND ')}
           ORDER BY d.pk DESC LIMIT ?`,
        )
        .all(...params, query.limit + 1) as rows.DeliveryRow[];
      return toPage('w', found, query.limit, rows.toDelivery);
    });
  }

  listAttempts(deliveryId: string, tenant: string): Promise<domain.Attempt[]> {
    return this.db.read(() => {
      const delivery = this.one<{ pk: number }>(SQL.deliveryPk, [deliveryId, tenant]);
      if (!delivery) throw rows.deliveryNotFound(deliveryId);
      const found = this.all<rows.AttemptRow>(SQL.attempts, [delivery.pk]);
      return found.map((row) => rows.toAttempt(deliveryId, row));
    });
  }

  replayDelivery(id: string, tenant: string, now: number): Promise<domain.Delivery> {
    return this.db.write(() => {
      const row = this.one<rows.DeliveryRow>(SQL.delivery, [id, tenant]);
      if (!row) throw rows.deliveryNotFound(id);
      if (row.target !== CALLBACK_TARGET && !this.one(SQL.endpointExists, [row.target])) {
        throw rows.endpointDeleted(id, row.target);
      }
      this.updateDelivery(row.pk, rows.replayColumns(row, now));
      return rows.toDelivery(this.one<rows.DeliveryRow>(SQL.delivery, [id, tenant]) ?? row);
    });
  }

  replayEndpoint(endpointId: string, tenant: string, since: number, now: number): Promise<number> {
    return this.db.write(() => {
      this.endpointRow(endpointId, tenant);
      return this.all(SQL.replayEndpoint, [now, tenant, endpointId, since]).length;
    });
  }

  async purgeDeliveries(before: number, limit: number): Promise<number> {
    // A read first: an idle server's hourly pass commits nothing when nothing has expired.
    const any = await this.db.read(() => this.one(SQL.anyExpiredDelivery, [before]));
    if (!any) return 0;
    return this.db.write(() => {
      const purged = this.all<{ pk: number }>(SQL.purgeDeliveries, [before, limit]);
      const attempts = this.db.stmt('DELETE FROM webhook_attempts WHERE delivery_pk = ?');
      for (const row of purged) attempts.run(row.pk);
      return purged.length;
    });
  }
}
