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
import type {
  AttemptOutcome,
  ClaimedDelivery,
  DeliveryQuery,
  DispatchRequest,
  Page,
  WebhookStore,
} from '../store.ts';
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
import { query, type Db, type Param, type Tx } from './db.ts';

/** What the webhook tables need of the PostgreSQL store. */
export interface PostgresAccess {
  /** The open connection pool (throws NOT_STARTED when closed). */
  db(): Db;
  /** The advisory lock key of retention cleanup. */
  purgeLock(): [number, string];
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

const PG: SqlDialect = { enabled: 'e.enabled', greatest: 'greatest' };

/** `SET a = $1, b = $2, ...` of shared column assignments; the next parameter is `$n + 1`. */
function setSql(columns: Columns): { sql: string; params: Param[] } {
  return {
    sql: columns.map(([column], i) => `${column} = $${i + 1}`).join(', '),
    params: columns.map(([, value]) => value),
  };
}

/**
 * The webhook tables of the PostgreSQL store (see `WebhookStore`). Each write is its own
 * transaction (they are off the hot path of operations, and some lock rows every node shares,
 * such as the dispatcher's cursor). Same semantics as the SQLite adapter's `webhooks.ts`.
 */
export class PostgresWebhooks implements WebhookStore {
  constructor(private readonly access: PostgresAccess) {}

  private async tx<T>(run: (tx: Tx) => Promise<T>): Promise<T> {
    return this.access.db().begin(run);
  }

  private async endpointRow(db: Db | Tx, id: string, tenant: string, lock = false) {
    const [row] = await query<EndpointRow>(
      db,
      `SELECT * FROM webhook_endpoints WHERE id = $1 AND tenant = $2${lock ? ' FOR UPDATE' : ''}`,
      [id, tenant],
    );
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

  async createEndpoint(endpoint: NewEndpoint, now: number): Promise<Endpoint> {
    const [row] = await query<EndpointRow>(
      this.access.db(),
      `INSERT INTO webhook_endpoints (id, tenant, url, description, event_types, labels,
         secrets, signing_key, retry_schedule, rate_limit, enabled, created_at, updated_at,
         version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, true, $11, $11, 1)
       RETURNING *`,
      [
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
      ],
    );
    return toEndpoint(row as EndpointRow);
  }

  async getEndpoint(id: string, tenant: string): Promise<Endpoint | null> {
    const [row] = await query<EndpointRow>(
      this.access.db(),
      'SELECT * FROM webhook_endpoints WHERE id = $1 AND tenant = $2',
      [id, tenant],
    );
    return row ? toEndpoint(row) : null;
  }

  async listEndpoints(q: {
    tenant: string;
    limit: number;
    cursor?: string;
  }): Promise<Page<Endpoint>> {
    const before = q.cursor === undefined ? Number.MAX_SAFE_INTEGER : decodeCursor('w', q.cursor);
    const rows = await query<EndpointRow>(
      this.access.db(),
      'SELECT * FROM webhook_endpoints WHERE tenant = $1 AND pk < $2 ORDER BY pk DESC LIMIT $3',
      [q.tenant, before, q.limit + 1],
    );
    return toPage('w', rows, q.limit, toEndpoint);
  }

  updateEndpoint(
    id: string,
    tenant: string,
    patch: EndpointPatch,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<Endpoint> {
    return this.tx(async (tx) => {
      const row = await this.endpointRow(tx, id, tenant, true);
      this.checkVersion(row, ifVersion);
      const columns = endpointPatchColumns(patch, row, now);
      const sets = columns.map(([column], i) => `${column} = $${i + 1}`);
      const params: Param[] = columns.map(([, value]) => value);
      params.push(row.pk);
      const [updated] = await query<EndpointRow>(
        tx,
        `UPDATE webhook_endpoints SET ${sets.join(', ')}, version = version + 1
         WHERE pk = $${params.length} RETURNING *`,
        params,
      );
      return toEndpoint(updated as EndpointRow);
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
    return this.tx(async (tx) => {
      const row = await this.endpointRow(tx, id, tenant, true);
      this.checkVersion(row, ifVersion);
      const secrets = rotatedSecrets(row.secrets, secret, previousUntil, now);
      const [updated] = await query<EndpointRow>(
        tx,
        `UPDATE webhook_endpoints SET secrets = $1, updated_at = $2, version = version + 1
         WHERE pk = $3 RETURNING *`,
        [JSON.stringify(secrets), now, row.pk],
      );
      return toEndpoint(updated as EndpointRow);
    });
  }

  deleteEndpoint(
    id: string,
    tenant: string,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<void> {
    return this.tx(async (tx) => {
      const row = await this.endpointRow(tx, id, tenant, true);
      this.checkVersion(row, ifVersion);
      // An attempt in flight keeps its lease token: its record logs the attempt, and leaves
      // the delivery failed (see `planRecord`).
      await query(
        tx,
        `UPDATE webhook_deliveries SET status = 'failed', last_error = 'ENDPOINT_DELETED',
           next_attempt_at = NULL, lease_until = NULL, replayed_at = NULL, updated_at = $1
         WHERE tenant = $2 AND target = $3 AND status = 'pending'`,
        [now, tenant, id],
      );
      await query(tx, 'DELETE FROM webhook_endpoints WHERE pk = $1', [row.pk]);
    });
  }

  callbackSecrets(tenant: string, fresh: string, now: number): Promise<SecretEntry[]> {
    return this.tx((tx) => this.ensureCallbackSecrets(tx, tenant, fresh, now));
  }

  /** The tenant's callback secrets, made (once, whichever node comes first) when missing. */
  private async ensureCallbackSecrets(
    tx: Tx,
    tenant: string,
    fresh: string,
    now: number,
  ): Promise<SecretEntry[]> {
    await query(
      tx,
      `INSERT INTO callback_secrets (tenant, secrets, updated_at) VALUES ($1, $2, $3)
       ON CONFLICT (tenant) DO NOTHING`,
      [tenant, JSON.stringify([{ secret: fresh, expiresAt: null }]), now],
    );
    const [row] = await query<{ secrets: string }>(
      tx,
      'SELECT secrets FROM callback_secrets WHERE tenant = $1',
      [tenant],
    );
    return liveSecrets(row?.secrets ?? '[]', now);
  }

  rotateCallbackSecret(
    tenant: string,
    secret: string,
    previousUntil: number,
    now: number,
  ): Promise<SecretEntry[]> {
    return this.tx(async (tx) => {
      const current = await this.ensureCallbackSecrets(tx, tenant, secret, now);
      if (current.length === 1 && current[0]?.secret === secret) return current; // just made
      await query(tx, 'SELECT 1 FROM callback_secrets WHERE tenant = $1 FOR UPDATE', [tenant]);
      const secrets = rotatedSecrets(JSON.stringify(current), secret, previousUntil, now);
      await query(
        tx,
        'UPDATE callback_secrets SET secrets = $1, updated_at = $2 WHERE tenant = $3',
        [JSON.stringify(secrets), now, tenant],
      );
      return secrets;
    });
  }

  /**
   * One dispatcher at a time across nodes: the cursor row is locked for the transaction, so a
   * second node waits, then reads after the cursor the first one moved.
   */
  dispatchDeliveries(request: DispatchRequest): Promise<{ events: number; deliveries: number }> {
    return this.tx(async (tx) => {
      const [cursorRow] = await query<{ value: number }>(
        tx,
        `SELECT value FROM meta WHERE key = 'webhook_cursor' FOR UPDATE`,
      );
      const cursor = cursorRow?.value ?? 0;
      // The batch: up to `limit` events after the cursor. Of them only those that a target
      // may want are read in full (a server without webhooks reads none).
      const [batch] = await query<{ n: number; last: number | null }>(
        tx,
        `SELECT count(*)::int4 AS n, max(seq) AS last FROM
           (SELECT seq FROM events WHERE seq > $1 ORDER BY seq LIMIT $2) b`,
        [cursor, request.limit],
      );
      if (!batch || batch.last === null) return { events: 0, deliveries: 0 };
      const rows = await query<DispatchRow>(
        tx,
        `SELECT e.seq, e.operation_id, e.tenant, e.operation_type, e.version, e.type, e.data,
           e.time, e.labels, o.callback_url FROM events e
         LEFT JOIN operations o ON o.id = e.operation_id
         WHERE e.seq > $1 AND e.seq <= $2 AND (o.callback_url IS NOT NULL
           OR e.tenant IN (SELECT tenant FROM webhook_endpoints WHERE enabled))
         ORDER BY e.seq`,
        [cursor, batch.last],
      );
      const tenants = [...new Set(rows.map((row) => row.tenant))];
      const endpoints = (
        await query<EndpointRow>(
          tx,
          `SELECT * FROM webhook_endpoints WHERE enabled AND tenant = ANY($1::text[]) ORDER BY pk`,
          [tenants],
        )
      ).map(toEndpoint);
      const { deliveries, callbackTenants } = deliveriesOf(rows, endpoints, request);
      for (const tenant of callbackTenants) {
        await this.ensureCallbackSecrets(tx, tenant, request.newSecret(), request.now);
      }
      const made = deliveries.map((d) => [
        d.id,
        d.tenant,
        d.target,
        d.url,
        d.operationId,
        d.eventSeq,
        d.eventType,
        d.payload,
      ]);
      if (made.length > 0) {
        const column = (i: number) => made.map((m) => m[i] as string | number);
        await query(
          tx,
          `INSERT INTO webhook_deliveries (id, tenant, target, url, operation_id, event_seq,
             event_type, payload, status, next_attempt_at, created_at, updated_at)
           SELECT u.id, u.tenant, u.target, u.url, u.operation_id, u.event_seq, u.event_type,
             u.payload, 'pending', $9, $9, $9
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[],
             $7::text[], $8::text[])
             AS u(id, tenant, target, url, operation_id, event_seq, event_type, payload)`,
          [...[0, 1, 2, 3, 4, 5, 6, 7].map(column), request.now],
        );
      }
      await query(tx, `UPDATE meta SET value = $1 WHERE key = 'webhook_cursor'`, [batch.last]);
      return { events: batch.n, deliveries: made.length };
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
  }): Promise<ClaimedDelivery[]> {
    return this.tx(async (tx) => {
      const { now } = request;
      const rows = await query<ClaimRow>(
        tx,
        `SELECT ${DELIVERY_COLUMNS}, ${CLAIM_EXTRA_COLUMNS}
         FROM webhook_deliveries d
         LEFT JOIN webhook_endpoints e ON e.id = d.target
         LEFT JOIN callback_secrets c ON c.tenant = d.tenant AND d.target = '${CALLBACK_TARGET}'
         WHERE ${claimableSql(PG, '$1', '$2')}
         ORDER BY d.next_attempt_at, d.pk LIMIT $3 FOR UPDATE OF d SKIP LOCKED`,
        [now, Math.floor(now / 1000), request.limit],
      );
      if (rows.length === 0) return [];
      const limited = [...new Set(rows.filter((r) => r.rate_limit !== null).map((r) => r.target))];
      const rates = new Map<string, RateWindow>();
      if (limited.length > 0) {
        const windows = await query<{
          id: string;
          rate_limit: number | null;
          rate_window: number | null;
          rate_count: number;
        }>(
          tx,
          `SELECT id, rate_limit, rate_window, rate_count FROM webhook_endpoints
           WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE SKIP LOCKED`,
          [limited.sort()],
        );
        for (const w of windows) {
          rates.set(w.id, { limit: w.rate_limit, window: w.rate_window, count: w.rate_count });
        }
      }
      // A rate-limited endpoint whose window row is held elsewhere gets nothing this time.
      const open = rows.filter((row) => row.rate_limit === null || rates.has(row.target));
      const { granted, windows } = grantClaims(open, rates, now);
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
        const token = newDeliveryLease();
        return { row, token, set: new Map(leaseColumns(row, leaseUntil, token)) };
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
      return leases.map((l) => toClaimedDelivery(l.row, now, leaseUntil, l.token));
    });
  }

  /** In the group commit: disabling an endpoint appends `endpoint.disabled` to the log. */
  recordAttempt(outcome: AttemptOutcome): Promise<void> {
    return this.access.write(async (tx, append) => {
      const { attempt } = outcome;
      const [row] = await query<
        Pick<DeliveryRow, 'pk' | 'target' | 'status' | 'attempts' | 'lease_token' | 'replayed_at'>
      >(
        tx,
        `SELECT pk, target, status, attempts, lease_token, replayed_at
         FROM webhook_deliveries WHERE id = $1 FOR UPDATE`,
        [attempt.deliveryId],
      );
      const plan = planRecord(row, outcome);
      if (!row || plan.kind === 'stale') return;
      const now = attempt.startedAt + attempt.durationMs;
      const set = setSql(plan.set);
      await query(
        tx,
        `UPDATE webhook_deliveries SET ${set.sql} WHERE pk = $${set.params.length + 1}`,
        [...set.params, row.pk],
      );
      await query(
        tx,
        `INSERT INTO webhook_attempts (delivery_pk, attempt, started_at, duration_ms, status,
           error, response_body) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (delivery_pk, attempt) DO UPDATE SET started_at = EXCLUDED.started_at,
           duration_ms = EXCLUDED.duration_ms, status = EXCLUDED.status, error = EXCLUDED.error,
           response_body = EXCLUDED.response_body`,
        [
          row.pk,
          attempt.attempt,
          attempt.startedAt,
          attempt.durationMs,
          attempt.status,
          attempt.error,
          attempt.responseBody,
        ],
      );
      if (plan.kind === 'log' || row.target === CALLBACK_TARGET) return;
      if (outcome.result === 'delivered') {
        await query(
          tx,
          'UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL',
          [row.target],
        );
      } else {
        await query(
          tx,
          'UPDATE webhook_endpoints SET failing_since = $1 WHERE id = $2 AND failing_since IS NULL',
          [attempt.startedAt, row.target],
        );
      }
      const disable = outcome.disableEndpoint;
      if (disable) {
        const [endpoint] = await query<{
          id: string;
          tenant: string;
          url: string;
          version: number;
        }>(
          tx,
          `UPDATE webhook_endpoints SET enabled = false, disabled_reason = $1, disabled_at = $2,
             updated_at = $2, version = version + 1 WHERE id = $3 AND enabled
           RETURNING id, tenant, url, version`,
          [disable.reason, now, row.target],
        );
        if (endpoint) {
          append(
            { ...endpoint, type: ENDPOINT_EVENT_OPERATION_TYPE },
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

  async nextDeliveryAt(now = Date.now()): Promise<number | null> {
    const sec = Math.floor(now / 1000);
    const due = await query(this.access.db(), claimableNowSql(PG, '$1', '$2'), [now, sec]);
    if (due.length > 0) return now;
    const [row] = await query<{ t: number | null }>(this.access.db(), nextDeliverySql(PG, '$1'), [
      sec,
    ]);
    return row?.t ?? null;
  }

  async getDelivery(id: string, tenant: string): Promise<Delivery | null> {
    const [row] = await query<DeliveryRow>(
      this.access.db(),
      `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.id = $1 AND d.tenant = $2`,
      [id, tenant],
    );
    return row ? toDelivery(row) : null;
  }

  async listDeliveries(q: DeliveryQuery): Promise<Page<Delivery>> {
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
    const rows = await query<DeliveryRow>(
      this.access.db(),
      `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE ${where.join(' AND ')}
       ORDER BY d.pk DESC LIMIT $${params.length}`,
      params,
    );
    return toPage('w', rows, q.limit, toDelivery);
  }

  async listAttempts(deliveryId: string, tenant: string): Promise<Attempt[]> {
    const db = this.access.db();
    const [delivery] = await query<{ pk: number }>(
      db,
      'SELECT pk FROM webhook_deliveries WHERE id = $1 AND tenant = $2',
      [deliveryId, tenant],
    );
    if (!delivery) throw deliveryNotFound(deliveryId);
    const rows = await query<{
      attempt: number;
      started_at: number;
      duration_ms: number;
      status: number | null;
      error: string | null;
      response_body: string;
    }>(
      db,
      `SELECT attempt, started_at, duration_ms, status, error, response_body
       FROM webhook_attempts WHERE delivery_pk = $1 ORDER BY attempt`,
      [delivery.pk],
    );
    return rows.map((row) => ({
      deliveryId,
      attempt: row.attempt,
      startedAt: row.started_at,
      durationMs: row.duration_ms,
      status: row.status,
      error: row.error,
      responseBody: row.response_body,
    }));
  }

  replayDelivery(id: string, tenant: string, now: number): Promise<Delivery> {
    return this.tx(async (tx) => {
      const [row] = await query<DeliveryRow>(
        tx,
        `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.id = $1 AND d.tenant = $2
         FOR UPDATE`,
        [id, tenant],
      );
      if (!row) throw deliveryNotFound(id);
      if (row.target !== CALLBACK_TARGET) {
        const [endpoint] = await query(tx, 'SELECT 1 FROM webhook_endpoints WHERE id = $1', [
          row.target,
        ]);
        if (!endpoint) throw endpointDeleted(id, row.target);
      }
      const set = setSql(replayColumns(row, now));
      const [updated] = await query<DeliveryRow>(
        tx,
        `UPDATE webhook_deliveries d SET ${set.sql} WHERE d.pk = $${set.params.length + 1}
         RETURNING ${DELIVERY_COLUMNS}`,
        [...set.params, row.pk],
      );
      return toDelivery(updated as DeliveryRow);
    });
  }

  replayEndpoint(endpointId: string, tenant: string, since: number, now: number): Promise<number> {
    return this.tx(async (tx) => {
      await this.endpointRow(tx, endpointId, tenant);
      const rows = await query(
        tx,
        `UPDATE webhook_deliveries SET status = 'pending', round_start = attempts,
           next_attempt_at = $1, lease_until = NULL, lease_token = NULL, replayed_at = NULL,
           delivered_at = NULL, updated_at = $1
         WHERE tenant = $2 AND target = $3 AND status = 'failed' AND created_at >= $4
         RETURNING 1`,
        [now, tenant, endpointId, since],
      );
      return rows.length;
    });
  }

  /** Retention: one node at a time (a transaction-level advisory lock); others return 0. */
  async purgeDeliveries(before: number, limit: number): Promise<number> {
    // A read first: an idle server's hourly pass commits nothing when nothing has expired.
    const any = await query(
      this.access.db(),
      `SELECT 1 FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1 LIMIT 1`,
      [before],
    );
    if (any.length === 0) return 0;
    return this.tx(async (tx) => {
      const [locked] = await query<{ ok: boolean }>(
        tx,
        'SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS ok',
        this.access.purgeLock(),
      );
      if (!locked?.ok) return 0;
      const rows = await query<{ pk: number }>(
        tx,
        `DELETE FROM webhook_deliveries WHERE pk IN (SELECT pk FROM webhook_deliveries
           WHERE status <> 'pending' AND created_at < $1 LIMIT $2) RETURNING pk`,
        [before, limit],
      );
      if (rows.length > 0) {
        await query(tx, 'DELETE FROM webhook_attempts WHERE delivery_pk = ANY($1::int8[])', [
          rows.map((row) => row.pk),
        ]);
      }
      return rows.length;
    });
  }
}
