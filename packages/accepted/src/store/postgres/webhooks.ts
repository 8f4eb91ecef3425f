import {
  ENDPOINT_EVENT_OPERATION_TYPE,
  type EventData,
  type EventType,
} from '../../domain/events.ts';
import { CALLBACK_TARGET } from '../../domain/webhooks.ts';
import type * as domain from '../../domain/webhooks.ts';
import { heldRow, planCommit, toConsumerLease } from '../consumer-rules.ts';
import { decodeCursor, toPage } from '../page.ts';
import type * as api from '../store.ts';
import * as rows from '../webhook-rows.ts';
import type { PostgresConsumers } from './consumers.ts';
import { query, type Db, type Param, type Tx } from './db.ts';

const SQL = rows.WEBHOOK_SQL;

/** What the webhook tables need of the PostgreSQL store. */
export interface PostgresAccess {
  /** The open connection pool (throws NOT_STARTED when closed). */
  db(): Db;
  /** The advisory lock key of retention cleanup. */
  purgeLock(): [number, string];
  /** The relay cursor's table: the dispatcher locks and commits its consumer in its tx. */
  consumers: PostgresConsumers;
  /**
   * Runs in the store's group commit, for writes that append events to the log (`append`);
   * resolves once committed.
   */
  write<T>(
    run: (
      tx: Tx,
      append: (
        row: { id: string; tenant: string; type: string; version: number },
        type: EventType,
        data: EventData,
        now: number,
      ) => void,
    ) => Promise<T>,
  ): Promise<T>;
}

const PG: rows.SqlDialect = { enabled: 'e.enabled', greatest: 'greatest' };

/**
 * The webhook tables of the PostgreSQL store (see `WebhookStore`). Each write is its own
 * transaction (they are off the hot path of operations, and some lock rows every node shares,
 * such as the dispatcher's consumer). The statements and rules are `webhook-rows.ts`'s, shared
 * with SQLite; what is PostgreSQL's own is the locking (`FOR UPDATE`, `SKIP LOCKED`) and the
 * set-based writes (`unnest`).
 */
export class PostgresWebhooks implements api.WebhookStore {
  constructor(private readonly access: PostgresAccess) {}

  private async tx<T>(run: (tx: Tx) => Promise<T>): Promise<T> {
    return this.access.db().begin(run);
  }

  private async first<T>(db: Db | Tx, sql: string, params: readonly Param[]) {
    const [row] = await query<T>(db, sql, params);
    return row;
  }

  private async endpointRow(tx: Tx, id: string, tenant: string): Promise<rows.EndpointRow> {
    const row = await this.first<rows.EndpointRow>(tx, `${SQL.endpoint} FOR UPDATE`, [id, tenant]);
    if (!row) throw rows.endpointNotFound(id);
    return row;
  }

  async createEndpoint(endpoint: domain.NewEndpoint, now: number): Promise<domain.Endpoint> {
    const values = rows.endpointValues(endpoint, now);
    const row = await this.first<rows.EndpointRow>(this.access.db(), SQL.insertEndpoint, values);
    return rows.toEndpoint(row as rows.EndpointRow);
  }

  async getEndpoint(id: string, tenant: string): Promise<domain.Endpoint | null> {
    const row = await this.first<rows.EndpointRow>(this.access.db(), SQL.endpoint, [id, tenant]);
    return row ? rows.toEndpoint(row) : null;
  }

  async listEndpoints(q: {
    tenant: string;
    limit: number;
    cursor?: string;
  }): Promise<api.Page<domain.Endpoint>> {
    const before = q.cursor === undefined ? Number.MAX_SAFE_INTEGER : decodeCursor('w', q.cursor);
    const params = [q.tenant, before, q.limit + 1];
    const found = await query<rows.EndpointRow>(this.access.db(), SQL.listEndpoints, params);
    return toPage('w', found, q.limit, rows.toEndpoint);
  }

  updateEndpoint(
    id: string,
    tenant: string,
    patch: domain.EndpointPatch,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<domain.Endpoint> {
    return this.tx(async (tx) => {
      const row = await this.endpointRow(tx, id, tenant);
      rows.checkEndpointVersion(row, ifVersion);
      const patched = rows.endpointPatchColumns(patch, row, now);
      const { sql, params } = rows.updateByPk('webhook_endpoints', patched, row.pk, 'RETURNING *');
      const [updated] = await query<rows.EndpointRow>(tx, sql, params);
      return rows.toEndpoint(updated ?? row);
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
    return this.tx(async (tx) => {
      const row = await this.endpointRow(tx, id, tenant);
      rows.checkEndpointVersion(row, ifVersion);
      const rotation = rows.rotationValues(row, secret, previousUntil, now);
      const [updated] = await query<rows.EndpointRow>(tx, SQL.rotateEndpointSecret, rotation);
      return rows.toEndpoint(updated ?? row);
    });
  }

  deleteEndpoint(
    id: string,
    tenant: string,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<void> {
    return this.tx(async (tx) => {
      const row = await this.endpointRow(tx, id, tenant);
      rows.checkEndpointVersion(row, ifVersion);
      await query(tx, SQL.failEndpointDeliveries, [now, tenant, id]);
      await query(tx, SQL.deleteEndpoint, [row.pk]);
    });
  }

  callbackSecrets(tenant: string, fresh: string, now: number): Promise<domain.SecretEntry[]> {
    return this.tx((tx) => this.ensureCallbackSecrets(tx, tenant, fresh, now));
  }

  /** The tenant's callback secrets, made (once, whichever node comes first) when missing. */
  private async ensureCallbackSecrets(
    tx: Tx,
    tenant: string,
    fresh: string,
    now: number,
  ): Promise<domain.SecretEntry[]> {
    const secrets = JSON.stringify([{ secret: fresh, expiresAt: null }]);
    await query(tx, SQL.insertCallbackSecrets, [tenant, secrets, now]);
    const row = await this.first<{ secrets: string }>(tx, SQL.callbackSecrets, [tenant]);
    return rows.liveSecrets(row?.secrets ?? '[]', now);
  }

  rotateCallbackSecret(
    tenant: string,
    secret: string,
    previousUntil: number,
    now: number,
  ): Promise<domain.SecretEntry[]> {
    return this.tx(async (tx) => {
      const current = await this.ensureCallbackSecrets(tx, tenant, secret, now);
      if (current.length === 1 && current[0]?.secret === secret) return current; // just made
      await query(tx, 'SELECT 1 FROM callback_secrets WHERE tenant = $1 FOR UPDATE', [tenant]);
      const secrets = rows.rotatedSecrets(JSON.stringify(current), secret, previousUntil, now);
      await query(tx, SQL.updateCallbackSecrets, [JSON.stringify(secrets), now, tenant]);
      return secrets;
    });
  }

  /**
   * One dispatcher at a time across nodes: the consumer's row is locked for the transaction
   * and its lease checked, so a node whose lease was taken over writes nothing.
   */
  dispatchDeliveries(request: api.DispatchRequest): Promise<api.DispatchResult> {
    const askedAt = Date.now();
    return this.tx(async (tx) => {
      const { consumers } = this.access;
      const consumer = heldRow(await consumers.lockRow(tx, request.lease.name), request.lease);
      const cursor = consumer.position;
      const batch = await this.first<{ n: number; last: number | null }>(tx, SQL.dispatchBatch, [
        cursor,
        request.limit,
      ]);
      if (!batch || batch.last === null) {
        return { events: 0, deliveries: 0, lease: toConsumerLease(consumer) };
      }
      const events = await query<rows.DispatchRow>(tx, SQL.dispatchEvents, [cursor, batch.last]);
      const tenants = [...new Set(events.map((row) => row.tenant))];
      // Key-share-locked until this transaction ends: an endpoint deleted meanwhile is either
      // gone before this read (no deliveries made for it) or waits for this commit, and then
      // fails the deliveries made here with its others. Unlocked, a delete committed between
      // this read and the insert below left pending deliveries to an endpoint that is gone.
      // KEY SHARE, not SHARE: it conflicts with the delete's FOR UPDATE, and not with the
      // NO KEY UPDATE of attempt records and claims, which a group commit takes for several
      // endpoints in the order their attempts ended (SHARE in key order here deadlocked with
      // them, found by the fuzzer).
      const endpoints = (
        await query<rows.EndpointRow>(
          tx,
          `SELECT * FROM webhook_endpoints WHERE enabled AND tenant = ANY($1::text[])
           ORDER BY pk FOR KEY SHARE`,
          [tenants],
        )
      ).map(rows.toEndpoint);
      const { deliveries, callbackTenants } = rows.deliveriesOf(events, endpoints, request);
      for (const tenant of callbackTenants) {
        await this.ensureCallbackSecrets(tx, tenant, request.newSecret(), request.now);
      }
      if (deliveries.length > 0) {
        const column = <K extends keyof rows.NewDelivery>(key: K) => deliveries.map((d) => d[key]);
        await query(
          tx,
          `INSERT INTO webhook_deliveries (id, tenant, target, url, operation_id, event_seq,
             event_type, payload, status, next_attempt_at, created_at, updated_at)
           SELECT u.id, u.tenant, u.target, u.url, u.operation_id, u.event_seq, u.event_type,
             u.payload, 'pending', $9, $9, $9
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[],
             $7::text[], $8::text[])
             AS u(id, tenant, target, url, operation_id, event_seq, event_type, payload)`,
          [
            column('id'),
            column('tenant'),
            column('target'),
            column('url'),
            column('operationId'),
            column('eventSeq'),
            column('eventType'),
            column('payload'),
            request.now,
          ],
        );
      }
      const moved = planCommit(consumer, request.lease, batch.last, {
        now: request.now,
        askedAt,
        logEnd: batch.last,
      });
      await consumers.save(tx, moved);
      return { events: batch.n, deliveries: deliveries.length, lease: toConsumerLease(moved) };
    });
  }

  /**
   * Leases claimable deliveries (`claimableSql`), skipping rows other nodes hold. The rate
   * windows of the candidates' rate-limited endpoints are then locked and read as last
   * committed: the shared rule (`grantClaims`) grants what they have room for and the windows
   * are written back in the same transaction, so that `rateLimit` holds across nodes. An
   * endpoint row another transaction holds (another node's claim, a PATCH, a delete) is
   * skipped, not waited for: its deliveries wait for a later claim, and a claim never waits
   * on a lock while it holds deliveries' (no deadlock with `deleteEndpoint`, which locks the
   * endpoint and then its deliveries).
   */
  claimDeliveries(request: {
    now: number;
    limit: number;
    leaseMs: number;
  }): Promise<api.ClaimedDelivery[]> {
    return this.tx(async (tx) => {
      const { now } = request;
      const candidates = await query<rows.ClaimRow>(
        tx,
        `SELECT ${rows.DELIVERY_COLUMNS}, ${rows.CLAIM_EXTRA_COLUMNS}
         FROM webhook_deliveries d
         LEFT JOIN webhook_endpoints e ON e.id = d.target
         LEFT JOIN callback_secrets c ON c.tenant = d.tenant AND d.target = '${CALLBACK_TARGET}'
         WHERE ${rows.claimableSql(PG, '$1', '$2')}
         ORDER BY d.next_attempt_at, d.pk LIMIT $3 FOR UPDATE OF d SKIP LOCKED`,
        [now, Math.floor(now / 1000), request.limit],
      );
      if (candidates.length === 0) return [];
      const limited = [
        ...new Set(candidates.filter((r) => r.rate_limit !== null).map((r) => r.target)),
      ];
      const rates = new Map<string, rows.RateWindow>();
      if (limited.length > 0) {
        const windows = await query<{
          id: string;
          rate_limit: number | null;
          rate_window: number | null;
          rate_count: number;
        }>(
          tx,
          `SELECT id, rate_limit, rate_window, rate_count FROM webhook_endpoints
           WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED`,
          [limited.sort()],
        );
        for (const w of windows) {
          rates.set(w.id, { limit: w.rate_limit, window: w.rate_window, count: w.rate_count });
        }
      }
      // A rate-limited endpoint whose window row is held elsewhere gets nothing this time.
      const open = candidates.filter((row) => row.rate_limit === null || rates.has(row.target));
      const { granted, windows } = rows.grantClaims(open, rates, now);
      if (windows.size > 0) {
        const targets = [...windows.keys()];
        await query(
          tx,
          `UPDATE webhook_endpoints e SET rate_window = u.w, rate_count = u.c
           FROM unnest($1::text[], $2::int8[], $3::int4[]) AS u(id, w, c) WHERE e.id = u.id`,
          [
            targets,
            targets.map((t) => windows.get(t)?.window ?? 0),
            targets.map((t) => windows.get(t)?.count ?? 0),
          ],
        );
      }
      if (granted.length === 0) return [];
      const leaseUntil = now + request.leaseMs;
      const leases = granted.map((row) => {
        const token = rows.newDeliveryLease();
        return { row, token, set: new Map(rows.leaseColumns(row, leaseUntil, token)) };
      });
      await query(
        tx,
        `UPDATE webhook_deliveries w SET lease_until = $1, lease_token = u.token,
           round_start = u.round_start, replayed_at = NULL
         FROM unnest($2::int8[], $3::text[], $4::int4[]) AS u(pk, token, round_start)
         WHERE w.pk = u.pk`,
        [
          leaseUntil,
          leases.map((l) => l.row.pk),
          leases.map((l) => l.token),
          leases.map((l) => l.set.get('round_start') as number),
        ],
      );
      return leases.map((l) => rows.toClaimedDelivery(l.row, now, leaseUntil, l.token));
    });
  }

  /**
   * In the group commit: disabling an endpoint appends `endpoint.disabled` to the log. Locks
   * the endpoint before the delivery, in the order `deleteEndpoint` takes them (the endpoint,
   * then its deliveries): the other order deadlocked a record with a delete of its endpoint.
   */
  recordAttempt(outcome: api.AttemptOutcome): Promise<void> {
    return this.access.write(async (tx, append) => {
      const { attempt } = outcome;
      await query(tx, SQL.lockDeliveryEndpoint, [attempt.deliveryId]);
      const row = await this.first<rows.RecordedRow>(tx, `${SQL.recordedDelivery} FOR UPDATE`, [
        attempt.deliveryId,
      ]);
      const plan = rows.planRecord(row, outcome);
      if (!row || plan.kind === 'stale') return;
      const now = attempt.startedAt + attempt.durationMs;
      const update = rows.updateByPk('webhook_deliveries', plan.set, row.pk);
      await query(tx, update.sql, update.params);
      await query(tx, SQL.insertAttempt, rows.attemptValues(row.pk, attempt));
      if (plan.kind === 'log' || row.target === CALLBACK_TARGET) return;
      if (outcome.result === 'delivered') await query(tx, SQL.endpointSucceeded, [row.target]);
      else await query(tx, SQL.endpointFailing, [attempt.startedAt, row.target]);
      const disable = outcome.disableEndpoint;
      if (!disable) return;
      const endpoint = await this.first<rows.DisabledEndpoint>(tx, SQL.disableEndpoint, [
        disable.reason,
        now,
        row.target,
      ]);
      if (!endpoint) return;
      const { type, data } = rows.disabledEvent(endpoint, disable);
      append({ ...endpoint, type: ENDPOINT_EVENT_OPERATION_TYPE }, type, data, now);
    });
  }

  async nextDeliveryAt(now = Date.now()): Promise<number | null> {
    const db = this.access.db();
    const sec = Math.floor(now / 1000);
    const due = await query(db, rows.claimableNowSql(PG, '$1', '$2'), [now, sec]);
    if (due.length > 0) return now;
    const next = await this.first<{ t: number | null }>(db, rows.nextDeliverySql(PG, '$1'), [sec]);
    return next?.t ?? null;
  }

  async getDelivery(id: string, tenant: string): Promise<domain.Delivery | null> {
    const row = await this.first<rows.DeliveryRow>(this.access.db(), SQL.delivery, [id, tenant]);
    return row ? rows.toDelivery(row) : null;
  }

  async listDeliveries(q: api.DeliveryQuery): Promise<api.Page<domain.Delivery>> {
    const where = ['d.tenant = $1'];
    const params: Param[] = [q.tenant];
    const add = (clause: (n: string) => string, value: Param) => {
      params.push(value);
      where.push(clause(`$${params.length}`));
    };
    if (q.endpointId !== undefined) add((n) => `d.target = ${n}`, q.endpointId);
    if (q.operationId !== undefined) add((n) => `d.operation_id = ${n}`, q.operationId);
    if (q.status && q.status.length > 0) add((n) => `d.status = ANY(${n}::text[])`, [...q.status]);
    if (q.cursor !== undefined) add((n) => `d.pk < ${n}`, decodeCursor('w', q.cursor));
    params.push(q.limit + 1);
    const found = await query<rows.DeliveryRow>(
      this.access.db(),
      `SELECT ${rows.DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE ${where.join(' AND ')}
       ORDER BY d.pk DESC LIMIT $${params.length}`,
      params,
    );
    return toPage('w', found, q.limit, rows.toDelivery);
  }

  async listAttempts(deliveryId: string, tenant: string): Promise<domain.Attempt[]> {
    const db = this.access.db();
    const delivery = await this.first<{ pk: number }>(db, SQL.deliveryPk, [deliveryId, tenant]);
    if (!delivery) throw rows.deliveryNotFound(deliveryId);
    const found = await query<rows.AttemptRow>(db, SQL.attempts, [delivery.pk]);
    return found.map((row) => rows.toAttempt(deliveryId, row));
  }

  replayDelivery(id: string, tenant: string, now: number): Promise<domain.Delivery> {
    return this.tx(async (tx) => {
      const row = await this.first<rows.DeliveryRow>(tx, `${SQL.delivery} FOR UPDATE`, [
        id,
        tenant,
      ]);
      if (!row) throw rows.deliveryNotFound(id);
      if (row.target !== CALLBACK_TARGET) {
        const found = await query(tx, SQL.endpointExists, [row.target]);
        if (found.length === 0) throw rows.endpointDeleted(id, row.target);
      }
      const replay = rows.replayColumns(row, now);
      const returning = `RETURNING ${rows.DELIVERY_COLUMNS}`;
      const update = rows.updateByPk('webhook_deliveries d', replay, row.pk, returning);
      const [updated] = await query<rows.DeliveryRow>(tx, update.sql, update.params);
      return rows.toDelivery(updated ?? row);
    });
  }

  replayEndpoint(endpointId: string, tenant: string, since: number, now: number): Promise<number> {
    return this.tx(async (tx) => {
      await this.endpointRow(tx, endpointId, tenant);
      const replayed = await query(tx, SQL.replayEndpoint, [now, tenant, endpointId, since]);
      return replayed.length;
    });
  }

  /** Retention: one node at a time (a transaction-level advisory lock); others return 0. */
  async purgeDeliveries(before: number, limit: number): Promise<number> {
    // A read first: an idle server's hourly pass commits nothing when nothing has expired.
    const any = await query(this.access.db(), SQL.anyExpiredDelivery, [before]);
    if (any.length === 0) return 0;
    return this.tx(async (tx) => {
      const [locked] = await query<{ ok: boolean }>(
        tx,
        'SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS ok',
        this.access.purgeLock(),
      );
      if (!locked?.ok) return 0;
      const purged = await query<{ pk: number }>(tx, SQL.purgeDeliveries, [before, limit]);
      if (purged.length > 0) {
        await query(tx, 'DELETE FROM webhook_attempts WHERE delivery_pk = ANY($1::int8[])', [
          purged.map((row) => row.pk),
        ]);
      }
      return purged.length;
    });
  }
}
