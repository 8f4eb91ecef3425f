import { randomBytes } from 'node:crypto';
import {
  AcceptedError,
  isAcceptedError,
  leaseLost,
  operationNotFound as notFound,
} from '../../domain/errors.ts';
import type { EventData, EventType, OperationEvent } from '../../domain/events.ts';
import { newLeaseToken } from '../../domain/ids.ts';
import type {
  Json,
  NewOperation,
  Operation,
  OperationError,
  Progress,
} from '../../domain/operation.ts';
import type * as store from '../store.ts';
import { committedEvent, rowToEvent, type EventRow } from '../event-rows.ts';
import * as table from '../operation-rows.ts';
import { decodeCursor, toPage } from '../page.ts';
import * as rules from '../rules.ts';
import { MIGRATIONS } from './migrations.ts';
import { PostgresConsumers } from './consumers.ts';
import { PostgresWebhooks } from './webhooks.ts';
import { Db, exec, query, type Listening, type Param, type Tx } from './db.ts';

export interface PostgresStoreOptions {
  /** Connection URL: `postgres://user:password@host:5432/database` (libpq URL syntax). */
  url: string;
  /**
   * The schema that holds Accepted's tables, created (with its tables) at open if missing.
   * Every node of one deployment uses the same schema; two deployments may share a database
   * with two schemas. Lowercase letters, digits and `_`. Default `accepted`.
   */
  schema?: string;
  /** Most connections this node opens (plus one for LISTEN). Default 10. */
  maxConnections?: number;
  /** Most writes folded into one transaction. Default 1000. */
  maxBatch?: number;
  /**
   * Called with the connection errors no caller sees: an idle connection that died, the LISTEN
   * connection lost and retried (while the server is away, once per retry). The store rides
   * them out by itself; this is for logs and metrics. More listeners: `onError()`.
   */
  onError?: (error: unknown, what: string) => void;
}

const SCHEMA_PATTERN = /^[a-z_][a-z0-9_]{0,47}$/;
/** Advisory lock keys (the second half is the schema's hash): migrations, retention. */
const LOCK_MIGRATE = 0x4163_0001;
const LOCK_PURGE = 0x4163_0002;
const LOCK_PURGE_DELIVERIES = 0x4163_0003;

/** The rows of the operations table here: labels are jsonb, read as objects. */
type Row = table.OperationRow<Record<string, string>>;
type Changed = table.ChangedRow<Record<string, string>>;

const CHANGED = `RETURNING ${table.CHANGED_COLUMNS}`;
/** The SET list of each transition (`rules.ts`), its values from $1. */
const SET = rules.setLists((i) => `$${i}`);
/** The columns of a claimed row, out of the claim's join. */
const CLAIMED_COLUMNS = table.OPERATION_COLUMNS.replace(/(\w+)/g, 'o.$1');

const SQL_CREATE = `INSERT INTO operations (id, tenant, type, status, input, labels, max_attempts,
    run_at, timeout_ms, callback_url, traceparent, created_at, updated_at, version)
  SELECT u.id, u.tenant, u.type, 'queued', u.input, u.labels::jsonb, u.max_attempts, u.run_at,
    u.timeout_ms, u.callback_url, u.traceparent, u.now, u.now, 1
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int8[],
    $8::int8[], $9::text[], $10::text[], $11::int8[])
    AS u(id, tenant, type, input, labels, max_attempts, run_at, timeout_ms, callback_url,
      traceparent, now)`;
const SQL_COMPLETE = `UPDATE operations o SET status = 'succeeded', result = u.result, error = NULL,
    finished_at = u.now, updated_at = u.now, version = o.version + 1, ${rules.CLEAR_LEASE}
  FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) AS u(id, token, result, now)
  WHERE o.id = u.id AND o.lease_token = u.token AND o.status = 'running'
  RETURNING o.id, u.token, o.tenant, o.type, o.version, o.attempts, o.labels`;
/**
 * Appends the transaction's events and allocates their seqs from `meta.seq_high`, last thing
 * before COMMIT: the row lock on the counter, held until commit, makes seq order commit order,
 * so a reader never sees seq S before a smaller one (docs/architecture.md). Then NOTIFY, sent
 * by PostgreSQL at commit, wakes every node.
 */
const SQL_APPEND = `WITH s AS (UPDATE meta SET value = value + $1 WHERE key = 'seq_high'
    RETURNING value - $1 AS base),
  ins AS (INSERT INTO events (seq, operation_id, tenant, operation_type, version, type, data,
      time, labels)
    SELECT s.base + u.n, u.operation_id, u.tenant, u.operation_type, u.version, u.type, u.data,
      u.time, u.labels::jsonb
    FROM s, unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[],
      $8::int8[], $9::text[]) WITH ORDINALITY
      AS u(operation_id, tenant, operation_type, version, type, data, time, labels, n))
  SELECT base, pg_notify($10, $11 || (base + $1)::text) AS notified FROM s`;

function toOperation(row: Row): Operation {
  return table.rowToOperation(row, row.labels);
}

function notOpen(): AcceptedError {
  return new AcceptedError('NOT_STARTED', 'The store is not open.', {
    fix: 'Call open() (or accepted.start()) first.',
  });
}

/** An event written in the current transaction, waiting for its seq. */
interface PendingEvent {
  /** The operation's columns after the change. */
  row: Changed;
  type: EventType;
  data: EventData;
  dataText: string;
  time: number;
}

/** What the commands of one transaction write besides their rows: events and the work flag. */
class Batch {
  events: PendingEvent[] = [];
  work = false;

  /** Forgets the events of an operation deleted in this transaction. */
  drop(operationId: string): void {
    this.events = this.events.filter((event) => event.row.id !== operationId);
  }

  /** Appends the event of a transition (`rules.ts`) that changed `row`. */
  changed(change: rules.Transition, row: Changed): void {
    const { type, data } = change.event(row.attempts);
    this.append(row, type, data, change.now);
    if (change.work) this.work = true;
  }

  append(row: Changed, type: EventType, data: EventData, now: number): void {
    this.events.push({ row, type, data, dataText: JSON.stringify(data), time: now });
  }
}

interface Outcome {
  ok: boolean;
  value: unknown;
}

/** What one transaction did: each command's outcome, its events, the last seq once committed. */
interface Written {
  outcomes: Outcome[];
  batch: Batch;
  lastSeq: number | null;
}

/** A queued write. `kind` lets the hot ones (create, complete) share one statement per batch. */
type Command =
  | { kind: 'create'; op: NewOperation; now: number; settle: Settle }
  | { kind: 'complete'; lease: store.LeaseRef; result: Json; now: number; settle: Settle }
  | { kind: 'run'; run: (tx: Tx, batch: Batch) => Promise<unknown>; settle: Settle };

interface Settle {
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/**
 * The PostgreSQL store: several nodes share one database (one schema). Writes of one node are
 * folded into one transaction per round (group commit), claims use `FOR UPDATE SKIP LOCKED`,
 * and every commit that appends events sends a `NOTIFY` that wakes the other nodes.
 */
export class PostgresStore implements store.Store {
  readonly kind = 'postgres';
  readonly schema: string;
  /** Identifies this store instance in NOTIFY payloads, so that it ignores its own. */
  readonly nodeId = randomBytes(6).toString('hex');
  private readonly options: Required<Omit<PostgresStoreOptions, 'schema' | 'onError'>>;
  private readonly channel: string;
  private db: Db | null = null;
  private listening: Listening | null = null;
  private queue: Command[] = [];
  private flushing: Promise<void> | null = null;
  private flushScheduled = false;
  private closed = false;
  private readonly listeners = new Set<(hint: store.StoreHint) => void>();
  private readonly errorListeners = new Set<(error: unknown, what: string) => void>();
  /** The highest seq this node knows committed (its own commits and others' notifications). */
  private knownSeq = 0;
  /** Group-commit counters, for benchmarks and metrics. */
  readonly stats = { flushes: 0, commands: 0, notifications: 0 };
  /** The relay cursor (named consumers of the log), shared by every node on the schema. */
  readonly consumers: PostgresConsumers;
  /** Webhook endpoints, deliveries and attempts. */
  readonly webhooks: PostgresWebhooks;

  constructor(options: PostgresStoreOptions) {
    const schema = options.schema ?? 'accepted';
    if (!SCHEMA_PATTERN.test(schema)) {
      throw new AcceptedError('VALIDATION_FAILED', `Schema name "${schema}" is not allowed.`, {
        fix: 'Use lowercase letters, digits and _ (at most 48 characters), starting with a letter.',
      });
    }
    this.schema = schema;
    this.channel = `accepted_${schema}`;
    if (options.onError) this.errorListeners.add(options.onError);
    this.options = {
      url: options.url,
      maxConnections: options.maxConnections ?? 10,
      maxBatch: options.maxBatch ?? 1000,
    };
    this.consumers = new PostgresConsumers(() => this.conn());
    this.webhooks = new PostgresWebhooks({
      db: () => this.conn(),
      purgeLock: () => [LOCK_PURGE_DELIVERIES, this.schema],
      consumers: this.consumers,
      write: (run) =>
        this.write((tx, batch) =>
          run(tx, (row, type, data, now) =>
            batch.append({ ...row, attempts: 0, labels: {} }, type, data, now),
          ),
        ),
    });
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  async open(): Promise<void> {
    if (this.db) return;
    if (this.closed) throw notOpen();
    const db = new Db({
      url: this.options.url,
      max: this.options.maxConnections,
      schema: this.schema,
      onError: (error, what) => this.onDriverError(error, what),
    });
    try {
      await this.migrate(db);
      const [row] = await query<{ value: number }>(
        db,
        `SELECT value FROM meta WHERE key = 'seq_high'`,
      );
      this.knownSeq = row?.value ?? 0;
      this.listening = await db.listen(
        this.channel,
        (payload) => this.onNotify(payload),
        // Also on every reconnect of the LISTEN connection: notifications sent meanwhile are
        // lost, so wake the readers and the worker to look for themselves.
        () => void this.afterListen(),
      );
    } catch (error) {
      await db.end().catch(() => undefined);
      throw new AcceptedError('STORE_UNAVAILABLE', `Could not open the PostgreSQL store.`, {
        fix: 'Check the URL, that the server is up, and that the user may create the schema.',
        cause: error,
      });
    }
    this.db = db;
  }

  /** Errors the driver reports outside any call (a dead idle connection, LISTEN retries). */
  private onDriverError(error: unknown, what: string): void {
    for (const listener of this.errorListeners) listener(error, what);
  }

  /** Called with errors of the connection that no caller sees (for logs and metrics). */
  onError(listener: (error: unknown, what: string) => void): () => void {
    this.errorListeners.add(listener);
    return () => this.errorListeners.delete(listener);
  }

  /**
   * Applies the missing migrations in one transaction under an advisory lock keyed by the
   * schema: nodes that start together wait for the first, then find nothing left to do.
   */
  private async migrate(db: Db): Promise<void> {
    await db.begin(async (tx) => {
      await query(tx, 'SELECT pg_advisory_xact_lock($1, hashtext($2))', [
        LOCK_MIGRATE,
        this.schema,
      ]);
      await exec(tx, `CREATE SCHEMA IF NOT EXISTS "${this.schema}"`);
      await exec(
        tx,
        `CREATE TABLE IF NOT EXISTS "${this.schema}".migrations (
        version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      const [row] = await query<{ version: number | null }>(
        tx,
        `SELECT max(version) AS version FROM "${this.schema}".migrations`,
      );
      const current = row?.version ?? 0;
      for (const migration of MIGRATIONS) {
        if (migration.version <= current) continue;
        await exec(tx, `SET LOCAL search_path TO "${this.schema}"`);
        await exec(tx, migration.sql);
        await query(tx, `INSERT INTO "${this.schema}".migrations (version, name) VALUES ($1, $2)`, [
          migration.version,
          migration.name,
        ]);
      }
    });
  }

  private async afterListen(): Promise<void> {
    try {
      const seq = await this.lastSeq();
      this.emit({ lastSeq: seq, work: true });
    } catch {
      // The safety polls of the engine cover it.
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.flushing || this.queue.length > 0) {
      await (this.flushing ?? this.flush());
    }
    const db = this.db;
    this.db = null;
    if (!db) return;
    try {
      await this.listening?.unlisten();
    } catch {
      // closing anyway
    }
    this.listening = null;
    await db.end();
  }

  async ping(): Promise<void> {
    await query(this.conn(), 'SELECT 1');
  }

  subscribe(listener: (hint: store.StoreHint) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private conn(): Db {
    if (!this.db) throw notOpen();
    return this.db;
  }

  /** The advisory lock key of retention cleanup for this schema (one node at a time). */
  private purgeLockKey(): [number, string] {
    return [LOCK_PURGE, this.schema];
  }

  // ---- hints --------------------------------------------------------------------------------

  /** A notification of another node's commit: `<node>:<work 0|1>:<seq_high>`. */
  private onNotify(payload: string): void {
    this.stats.notifications++;
    const [node, work, seq] = payload.split(':');
    if (node === this.nodeId) return;
    const lastSeq = Number(seq);
    if (!Number.isSafeInteger(lastSeq)) return;
    if (lastSeq > this.knownSeq) this.knownSeq = lastSeq;
    this.emit({ lastSeq, work: work === '1' });
  }

  private emit(hint: store.StoreHint): void {
    for (const listener of this.listeners) {
      try {
        listener(hint);
      } catch {
        // A listener's failure must not break the store; hints are advisory.
      }
    }
  }

  // ---- group commit -------------------------------------------------------------------------

  private enqueue<T>(make: (settle: Settle) => Command): Promise<T> {
    if (this.closed || !this.db) return Promise.reject(notOpen());
    return new Promise<T>((resolve, reject) => {
      this.queue.push(make({ resolve: resolve as (value: unknown) => void, reject }));
      this.scheduleFlush();
    });
  }

  private write<T>(run: (tx: Tx, batch: Batch) => Promise<T>): Promise<T> {
    return this.enqueue((settle) => ({ kind: 'run', run, settle }));
  }

  /**
   * One transaction at a time: writes queued while it runs go into the next one, so the batch
   * grows with the load (group commit) and an idle node answers after one round.
   */
  private scheduleFlush(): void {
    if (this.flushScheduled || this.flushing) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      if (!this.flushing) void this.flush();
    });
  }

  private flush(): Promise<void> {
    if (this.queue.length === 0 || !this.db) return Promise.resolve();
    const batch = this.queue.splice(0, this.options.maxBatch);
    this.stats.flushes++;
    this.stats.commands += batch.length;
    this.flushing = this.commit(this.db, batch).finally(() => {
      this.flushing = null;
      if (this.queue.length > 0) this.scheduleFlush();
    });
    return this.flushing;
  }

  private async commit(db: Db, commands: Command[]): Promise<void> {
    let outcomes: { ok: boolean; value: unknown }[];
    let written: { batch: Batch; lastSeq: number | null };
    try {
      const result = await this.transaction(db, commands);
      outcomes = result.outcomes;
      written = result;
    } catch (error) {
      // The server is away, or a COMMIT's answer was lost (its writes may have been applied):
      // every caller learns it (503), and nothing is run again, which could apply it twice.
      if (commands.length === 1 || isAcceptedError(error)) {
        for (const command of commands) command.settle.reject(error);
        return;
      }
      // A statement failed (a deadlock with another node, a constraint) and the transaction
      // rolled back: run each write in its own transaction, so one bad write fails only its own
      // caller.
      for (const command of commands) await this.commit(db, [command]);
      return;
    }
    commands.forEach((command, i) => {
      const outcome = outcomes[i];
      if (outcome?.ok) command.settle.resolve(outcome.value);
      else command.settle.reject(outcome?.value);
    });
    const { batch, lastSeq } = written;
    if (lastSeq !== null || batch.work) {
      if (lastSeq !== null && lastSeq > this.knownSeq) this.knownSeq = lastSeq;
      const base = (lastSeq ?? 0) - batch.events.length;
      this.emit({
        lastSeq: lastSeq ?? this.knownSeq,
        work: batch.work,
        events: batch.events.map((e, i) =>
          committedEvent(base + i + 1, e.row, e.type, e.data, e.time),
        ),
      });
    }
  }

  /** Runs commands in one transaction; domain errors fail their command only. */
  private async transaction(db: Db, commands: Command[]): Promise<Written> {
    return db.begin<Written>(async (tx) => {
      const batch = new Batch();
      const outcomes: Outcome[] = [];
      const creates: number[] = [];
      const completes: number[] = [];
      for (let i = 0; i < commands.length; i++) {
        const command = commands[i] as Command;
        if (command.kind === 'create') creates.push(i);
        else if (command.kind === 'complete') completes.push(i);
        else {
          try {
            outcomes[i] = { ok: true, value: await command.run(tx, batch) };
          } catch (error) {
            // Domain errors are raised before a command writes anything, so the rest of the
            // transaction stays valid. Anything else aborts it (see commit).
            if (!(error instanceof AcceptedError)) throw error;
            outcomes[i] = { ok: false, value: error };
          }
        }
      }
      if (creates.length > 0) await this.createMany(tx, batch, commands, creates, outcomes);
      if (completes.length > 0) await this.completeMany(tx, batch, commands, completes, outcomes);
      const lastSeq = await this.append(tx, batch);
      return { outcomes, batch, lastSeq };
    });
  }

  /** Appends the batch's events (allocating their seqs) and notifies; null when none. */
  private async append(tx: Tx, batch: Batch): Promise<number | null> {
    const events = batch.events;
    if (events.length === 0) return null;
    const [row] = await query<{ base: number }>(tx, SQL_APPEND, [
      events.length,
      events.map((e) => e.row.id),
      events.map((e) => e.row.tenant),
      events.map((e) => e.row.type),
      events.map((e) => e.row.version),
      events.map((e) => e.type),
      events.map((e) => e.dataText),
      events.map((e) => e.time),
      events.map(({ row }) =>
        Object.keys(row.labels).length === 0 ? null : JSON.stringify(row.labels),
      ),
      this.channel,
      `${this.nodeId}:${batch.work ? 1 : 0}:`,
    ]);
    return (row?.base ?? 0) + events.length;
  }

  private async createMany(
    tx: Tx,
    batch: Batch,
    commands: Command[],
    indexes: number[],
    outcomes: { ok: boolean; value: unknown }[],
  ): Promise<void> {
    const items = indexes.map((i) => commands[i] as Extract<Command, { kind: 'create' }>);
    await insertOperations(
      tx,
      items.map((c) => c.op),
      items.map((c) => c.now),
    );
    items.forEach((c, k) => {
      outcomes[indexes[k] as number] = { ok: true, value: this.created(batch, c.op, c.now) };
    });
  }

  /** Appends the queued event of a new operation, and returns it as created. */
  private created(batch: Batch, op: NewOperation, now: number): Operation {
    const row = table.createdRow(op, op.labels);
    batch.append(row, 'operation.queued', { status: 'queued', runAt: op.runAt }, now);
    batch.work = true;
    return table.createdOperation(op, now);
  }

  private async completeMany(
    tx: Tx,
    batch: Batch,
    commands: Command[],
    indexes: number[],
    outcomes: { ok: boolean; value: unknown }[],
  ): Promise<void> {
    // Keyed by lease (operation and token), never by operation alone: a stale attempt's
    // complete in the same batch as the current holder's must lose, and only the holder's
    // result goes into the row and its event. One lease completing twice: the first wins.
    const key = (id: string, token: string) => `${id}\u0000${token}`;
    const items = indexes.map((i) => commands[i] as Extract<Command, { kind: 'complete' }>);
    const first = new Map<string, number>();
    items.forEach((c, k) => {
      const lease = key(c.lease.operationId, c.lease.token);
      if (!first.has(lease)) first.set(lease, k);
    });
    const sent = [...first.values()].map((k) => items[k] as (typeof items)[number]);
    const rows = await query<Changed & { token: string }>(tx, SQL_COMPLETE, [
      sent.map((c) => c.lease.operationId),
      sent.map((c) => c.lease.token),
      sent.map((c) => JSON.stringify(c.result)),
      sent.map((c) => c.now),
    ]);
    const byLease = new Map(rows.map((row) => [key(row.id, row.token), row]));
    items.forEach((c, k) => {
      const i = indexes[k] as number;
      const lease = key(c.lease.operationId, c.lease.token);
      const row = first.get(lease) === k ? byLease.get(lease) : undefined;
      if (!row) {
        outcomes[i] = { ok: false, value: leaseLost(c.lease.operationId) };
        return;
      }
      batch.append(row, 'operation.succeeded', rules.succeededEvent(row.attempts, c.result), c.now);
      outcomes[i] = { ok: true, value: undefined };
    });
  }

  // ---- operations ---------------------------------------------------------------------------

  create(op: NewOperation, now: number): Promise<Operation> {
    return this.enqueue((settle) => ({ kind: 'create', op, now, settle }));
  }

  createOnce(
    op: NewOperation,
    claim: store.IdempotencyClaim,
    now: number,
  ): Promise<store.CreateOnceResult> {
    return this.write(async (tx, batch): Promise<store.CreateOnceResult> => {
      const existing = await this.keyOutcome(tx, op.tenant, claim, now);
      if (existing) return existing;
      // Insert the key, or take over an expired one. Against a concurrent insert of the same
      // key (another node), PostgreSQL waits for that transaction and then returns no row.
      const taken = await query<{ operation_id: string }>(
        tx,
        `INSERT INTO idempotency_keys (${table.KEY_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
           operation_id = EXCLUDED.operation_id, status = EXCLUDED.status,
           hold_until = EXCLUDED.hold_until, created_at = EXCLUDED.created_at,
           expires_at = EXCLUDED.expires_at
         WHERE idempotency_keys.expires_at <= $7 RETURNING operation_id`,
        table.keyValues(op, claim, now),
      );
      if (taken.length === 0) {
        const raced = await this.keyOutcome(tx, op.tenant, claim, now);
        if (raced) return raced;
        throw new Error('idempotency key neither inserted nor found');
      }
      await insertOperations(tx, [op], [now]);
      return { outcome: 'created', operation: this.created(batch, op, now) };
    });
  }

  /** What an unexpired key already says (`rules.keyOutcome`), or null when the key is free. */
  private async keyOutcome(
    tx: Tx,
    tenant: string,
    claim: store.IdempotencyClaim,
    now: number,
  ): Promise<store.CreateOnceResult | null> {
    const [found] = await query<table.IdempotencyRow>(
      tx,
      `SELECT fingerprint, operation_id, status, hold_until, expires_at FROM idempotency_keys
       WHERE tenant = $1 AND key = $2`,
      [tenant, claim.key],
    );
    const known = rules.keyOutcome(found, claim, now);
    if (known?.outcome !== 'replay') return known;
    const row = await readRow(tx, known.operationId);
    // Keys go with their operation (delete, purge), so the row is there; be safe anyway.
    return row ? { outcome: 'replayed', operation: toOperation(row), status: known.status } : null;
  }

  settleIdempotencyKey(tenant: string, key: string, status: number): Promise<void> {
    return this.write(async (tx) => {
      await query(
        tx,
        'UPDATE idempotency_keys SET status = $1, hold_until = NULL WHERE tenant = $2 AND key = $3',
        [status, tenant, key],
      );
    });
  }

  /** Retention: one node at a time (a transaction-level advisory lock); others return 0. */
  private async exclusively(run: (tx: Tx) => Promise<number>): Promise<number> {
    const db = this.conn();
    return db.begin<number>(async (tx) => {
      const [locked] = await query<{ ok: boolean }>(
        tx,
        'SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS ok',
        this.purgeLockKey(),
      );
      if (!locked?.ok) return 0;
      return run(tx);
    });
  }

  purgeIdempotencyKeys(now: number, limit: number): Promise<number> {
    const probe = 'SELECT 1 FROM idempotency_keys WHERE expires_at <= $1 LIMIT 1';
    return this.ifAny(probe, [now], 0, () => this.purgeKeysNow(now, limit));
  }

  private purgeKeysNow(now: number, limit: number): Promise<number> {
    return this.exclusively(async (tx) => {
      const rows = await query(
        tx,
        `DELETE FROM idempotency_keys WHERE (tenant, key) IN (SELECT tenant, key
           FROM idempotency_keys WHERE expires_at <= $1 LIMIT $2) RETURNING 1`,
        [now, limit],
      );
      return rows.length;
    });
  }

  async get(id: string, tenant?: string): Promise<Operation | null> {
    const row = table.inScope(await readRow(this.conn(), id), tenant);
    return row ? toOperation(row) : null;
  }

  async snapshot(id: string, tenant?: string): Promise<store.OperationSnapshot | null> {
    // One statement: one snapshot of the database for the row and its last event.
    const [found] = await query<Row & { last_seq: number }>(
      this.conn(),
      `SELECT ${table.OPERATION_COLUMNS},
         (SELECT coalesce(max(seq), 0) FROM events WHERE operation_id = $1) AS last_seq
       FROM operations WHERE id = $1`,
      [id],
    );
    const row = table.inScope(found, tenant);
    return row ? { operation: toOperation(row), seq: row.last_seq } : null;
  }

  async list(listQuery: store.ListQuery): Promise<store.Page<Operation>> {
    const where = ['tenant = $1'];
    const params: Param[] = [listQuery.tenant];
    const add = (clause: (n: string) => string, value: Param) => {
      params.push(value);
      where.push(clause(`$${params.length}`));
    };
    if (listQuery.status && listQuery.status.length > 0) {
      add((n) => `status = ANY(${n}::text[])`, [...listQuery.status]);
    }
    if (listQuery.type !== undefined) add((n) => `type = ${n}`, listQuery.type);
    if (listQuery.labels && Object.keys(listQuery.labels).length > 0) {
      add((n) => `labels @> ${n}::text::jsonb`, JSON.stringify(listQuery.labels));
    }
    if (listQuery.cursor !== undefined)
      add((n) => `pk < ${n}`, decodeCursor('o', listQuery.cursor));
    params.push(listQuery.limit + 1);
    const rows = await query<Row>(
      this.conn(),
      `SELECT ${table.OPERATION_COLUMNS} FROM operations WHERE ${where.join(' AND ')}
       ORDER BY pk DESC LIMIT $${params.length}`,
      params,
    );
    return toPage('o', rows, listQuery.limit, toOperation);
  }

  // ---- leases -------------------------------------------------------------------------------

  claim(request: store.ClaimRequest): Promise<store.ClaimResult> {
    const askedAt = Date.now();
    return this.write(async (tx, batch) => {
      const token = newLeaseToken();
      const expiresAt = rules.leaseExpiry(request.now, request.leaseMs, askedAt);
      const typed = request.types !== null;
      const params: Param[] = [token, request.owner, expiresAt, request.now, request.limit];
      if (request.types) params.push([...request.types]);
      // One statement: pick (skipping rows another node is claiming), lease, and the
      // earliest runAt left over (for the worker's timer).
      const result = await query<(Row | { id: null }) & { next_run_at: number | null }>(
        tx,
        `WITH c AS (SELECT id FROM operations WHERE status = 'queued' AND run_at <= $4
             ${typed ? 'AND type = ANY($6::text[])' : ''}
             ORDER BY run_at LIMIT $5 FOR UPDATE SKIP LOCKED),
           u AS (UPDATE operations o SET status = 'running', attempts = o.attempts + 1,
             lease_token = $1 || '.' || o.pk, lease_owner = $2, lease_expires_at = $3,
             started_at = $4, updated_at = $4, version = o.version + 1
             FROM c WHERE o.id = c.id RETURNING ${CLAIMED_COLUMNS})
         SELECT n.next_run_at, u.* FROM (SELECT (SELECT min(run_at) FROM operations
             WHERE status = 'queued' ${typed ? 'AND type = ANY($6::text[])' : ''}
               AND id NOT IN (SELECT id FROM c)) AS next_run_at) n
           LEFT JOIN u ON true`,
        params,
      );
      const rows = result.filter(
        (row): row is Row & { next_run_at: number | null } => row.id !== null,
      );
      const claimed = rules.startClaimed(
        rows,
        expiresAt,
        request.now,
        (row, type, data, now) => batch.append(row, type, data, now),
        toOperation,
      );
      const nextRunAt = rows.length < request.limit ? (result[0]?.next_run_at ?? null) : null;
      return { claimed, nextRunAt };
    });
  }

  async nextRunAt(types: readonly string[] | null): Promise<number | null> {
    const [row] = types
      ? await query<{ t: number | null }>(
          this.conn(),
          `SELECT min(run_at) AS t FROM operations WHERE status = 'queued' AND type = ANY($1::text[])`,
          [[...types]],
        )
      : await query<{ t: number | null }>(
          this.conn(),
          `SELECT min(run_at) AS t FROM operations WHERE status = 'queued'`,
        );
    return row?.t ?? null;
  }

  /**
   * Runs `write` only when `probe` finds a row: periodic upkeep (lease recovery, retention)
   * first reads, so that an idle node commits nothing.
   */
  private async ifAny<T>(probe: string, params: Param[], none: T, write: () => Promise<T>) {
    const rows = await query(this.conn(), probe, params);
    return rows.length === 0 ? none : write();
  }

  renewLeases(request: store.RenewRequest): Promise<store.LeaseState[]> {
    const askedAt = Date.now();
    if (request.leases.length === 0) return Promise.resolve([]);
    return this.write(async (tx) => {
      const rows = await query<{ id: string; token: string; cancel_requested_at: number | null }>(
        tx,
        `UPDATE operations o SET lease_expires_at = $1
         FROM unnest($2::text[], $3::text[]) AS u(id, token)
         WHERE o.id = u.id AND o.lease_token = u.token AND o.status = 'running'
         RETURNING o.id, u.token, o.cancel_requested_at`,
        [
          rules.leaseExpiry(request.now, request.leaseMs, askedAt),
          request.leases.map((l) => l.operationId),
          request.leases.map((l) => l.token),
        ],
      );
      const held = new Map(rows.map((row) => [`${row.id} ${row.token}`, row.cancel_requested_at]));
      return request.leases.map((lease) =>
        rules.renewed(lease, held.get(`${lease.operationId} ${lease.token}`)),
      );
    });
  }

  /** Runs a transition on a running operation whose lease is held; LEASE_LOST otherwise. */
  private async underLease(
    tx: Tx,
    batch: Batch,
    lease: store.LeaseRef,
    change: rules.Transition,
  ): Promise<void> {
    const n = change.values.length;
    const [row] = await query<Changed>(
      tx,
      `UPDATE operations SET ${SET[change.set]}
       WHERE id = $${n + 1} AND lease_token = $${n + 2} AND status = 'running' ${CHANGED}`,
      [...change.values, lease.operationId, lease.token],
    );
    if (!row) throw leaseLost(lease.operationId);
    batch.changed(change, row);
  }

  /** Runs a transition on the operation `id` (read and locked in this transaction). */
  private async atId(tx: Tx, batch: Batch, id: string, change: rules.Transition): Promise<void> {
    const [row] = await query<Changed>(
      tx,
      `UPDATE operations SET ${SET[change.set]} WHERE id = $${change.values.length + 1} ${CHANGED}`,
      [...change.values, id],
    );
    batch.changed(change, row as Changed);
  }

  progress(lease: store.LeaseRef, progress: Progress, now: number): Promise<void> {
    const change = rules.planProgress(progress, now);
    return this.write((tx, batch) => this.underLease(tx, batch, lease, change));
  }

  complete(lease: store.LeaseRef, result: Json, now: number): Promise<void> {
    return this.enqueue((settle) => ({ kind: 'complete', lease, result, now, settle }));
  }

  fail(
    lease: store.LeaseRef,
    error: OperationError,
    retryAt: number | null,
    now: number,
  ): Promise<void> {
    return this.write((tx, batch) => this.endAttempt(tx, batch, lease, error, retryAt, false, now));
  }

  finishCanceled(lease: store.LeaseRef, error: OperationError, now: number): Promise<void> {
    const change = rules.planFinishCanceled(error, now);
    return this.write((tx, batch) => this.underLease(tx, batch, lease, change));
  }

  release(lease: store.LeaseRef, error: OperationError, now: number): Promise<void> {
    return this.write((tx, batch) => this.endAttempt(tx, batch, lease, error, now, true, now));
  }

  /**
   * An attempt that ends without a result (`rules.planAttemptEnd`): requeued, failed for good,
   * or canceled when a cancel was requested meanwhile, on any node (the row is locked first,
   * so a cancel committing on another node is seen). LEASE_LOST when the lease is not held.
   */
  private async endAttempt(
    tx: Tx,
    batch: Batch,
    lease: store.LeaseRef,
    error: OperationError,
    retryAt: number | null,
    givenBack: boolean,
    now: number,
  ): Promise<void> {
    const [held] = await query<{ cancel_requested_at: number | null }>(
      tx,
      `SELECT cancel_requested_at FROM operations
       WHERE id = $1 AND lease_token = $2 AND status = 'running' FOR UPDATE`,
      [lease.operationId, lease.token],
    );
    if (!held) throw leaseLost(lease.operationId);
    const cancelRequestedAt = held.cancel_requested_at;
    const change = rules.planAttemptEnd({ cancelRequestedAt, error, retryAt, givenBack, now });
    await this.underLease(tx, batch, lease, change);
  }

  /**
   * Leases that expired go back to the queue (or fail, or finish canceling). With several
   * nodes, whichever looks first takes them (`SKIP LOCKED`), and a lease held by a live node
   * is never touched: only `lease_expires_at < now` counts, so nodes' clocks must agree to
   * within a fraction of the lease.
   */
  recoverExpiredLeases(now: number, limit: number): Promise<number> {
    const probe = `SELECT 1 FROM operations WHERE status = 'running' AND lease_expires_at < $1 LIMIT 1`;
    return this.ifAny(probe, [now], 0, () => this.recoverNow(now, limit));
  }

  private recoverNow(now: number, limit: number): Promise<number> {
    return this.write(async (tx, batch) => {
      const rows = await query<
        Pick<Row, 'id' | 'attempts' | 'max_attempts' | 'cancel_requested_at'>
      >(
        tx,
        `SELECT id, attempts, max_attempts, cancel_requested_at FROM operations
         WHERE status = 'running' AND lease_expires_at < $1 ORDER BY lease_expires_at LIMIT $2
         FOR UPDATE SKIP LOCKED`,
        [now, limit],
      );
      for (const expired of rows) {
        await this.atId(tx, batch, expired.id, rules.planLeaseExpired(expired, now));
      }
      return rows.length;
    });
  }

  // ---- client-driven transitions ------------------------------------------------------------

  /** The operation's row, locked for this transaction; OPERATION_NOT_FOUND when not visible. */
  private async lockScoped(tx: Tx, id: string, tenant: string | undefined): Promise<Row> {
    const row = table.inScope(await readRow(tx, id, true), tenant);
    if (!row) throw notFound(id);
    return row;
  }

  cancel(
    id: string,
    tenant: string | undefined,
    error: OperationError,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<Operation> {
    return this.write(async (tx, batch) => {
      const current = await this.lockScoped(tx, id, tenant);
      const change = rules.planCancel(current, ifVersion, error, now);
      if (!change) return toOperation(current);
      await this.atId(tx, batch, id, change);
      return toOperation((await readRow(tx, id)) as Row);
    });
  }

  retry(
    id: string,
    tenant: string | undefined,
    runAt: number,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<Operation> {
    return this.write(async (tx, batch) => {
      const current = await this.lockScoped(tx, id, tenant);
      await this.atId(tx, batch, id, rules.planRetry(current, ifVersion, runAt, now));
      return toOperation((await readRow(tx, id)) as Row);
    });
  }

  delete(
    id: string,
    tenant: string | undefined,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<void> {
    return this.write(async (tx, batch) => {
      const current = await this.lockScoped(tx, id, tenant);
      const deleted = rules.planDelete(current, ifVersion);
      await query(tx, 'DELETE FROM events WHERE operation_id = $1', [id]);
      await query(tx, 'DELETE FROM idempotency_keys WHERE operation_id = $1', [id]);
      await query(tx, 'DELETE FROM operations WHERE id = $1', [id]);
      // Events of earlier commands in this transaction are inserted at its end: they go too.
      batch.drop(id);
      batch.append(deleted.row, deleted.type, deleted.data, now);
    });
  }

  /** Retention: one node at a time (others return 0 while it runs). */
  purge(finishedBefore: number, limit: number): Promise<number> {
    const probe = `SELECT 1 WHERE EXISTS (SELECT 1 FROM operations
        WHERE finished_at IS NOT NULL AND finished_at < $1)
      OR EXISTS (SELECT 1 FROM events
        WHERE type IN ('operation.deleted', 'endpoint.disabled') AND time < $1)`;
    return this.ifAny(probe, [finishedBefore], 0, () => this.purgeNow(finishedBefore, limit));
  }

  private purgeNow(finishedBefore: number, limit: number): Promise<number> {
    return this.exclusively(async (tx) => {
      const ids = await query<{ id: string }>(
        tx,
        `DELETE FROM operations WHERE id IN (SELECT id FROM operations
           WHERE finished_at IS NOT NULL AND finished_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id`,
        [finishedBefore, limit],
      );
      if (ids.length > 0) {
        const list = ids.map((row) => row.id);
        await query(tx, 'DELETE FROM events WHERE operation_id = ANY($1::text[])', [list]);
        await query(tx, 'DELETE FROM idempotency_keys WHERE operation_id = ANY($1::text[])', [
          list,
        ]);
      }
      await query(
        tx,
        `DELETE FROM events WHERE type IN ('operation.deleted', 'endpoint.disabled') AND time < $1`,
        [finishedBefore],
      );
      return ids.length;
    });
  }

  // ---- the log ------------------------------------------------------------------------------

  /**
   * Events after `after`, ascending. No hold-back is needed: seqs are allocated at the end of
   * each transaction under one row lock, so they become visible in seq order.
   */
  async readEvents(eventQuery: store.EventQuery): Promise<OperationEvent[]> {
    const where = ['seq > $1'];
    const params: Param[] = [eventQuery.after];
    const add = (clause: (n: string) => string, value: Param) => {
      params.push(value);
      where.push(clause(`$${params.length}`));
    };
    if (eventQuery.operationId !== undefined) {
      add((n) => `operation_id = ${n}`, eventQuery.operationId);
    }
    if (eventQuery.tenant !== undefined) add((n) => `tenant = ${n}`, eventQuery.tenant);
    const inList = (column: string, values: readonly string[] | undefined) => {
      if (values && values.length > 0) add((n) => `${column} = ANY(${n}::text[])`, [...values]);
    };
    inList('operation_id', eventQuery.operationIds);
    inList('type', eventQuery.types);
    inList('operation_type', eventQuery.operationTypes);
    if (eventQuery.labels && Object.keys(eventQuery.labels).length > 0) {
      add((n) => `labels @> ${n}::text::jsonb`, JSON.stringify(eventQuery.labels));
    }
    params.push(eventQuery.limit);
    const rows = await query<EventRow>(
      this.conn(),
      `SELECT seq, operation_id, tenant, operation_type, version, type, data, time, labels
       FROM events WHERE ${where.join(' AND ')} ORDER BY seq LIMIT $${params.length}`,
      params,
    );
    return rows.map(rowToEvent);
  }

  async lastSeq(): Promise<number> {
    const [row] = await query<{ value: number }>(
      this.conn(),
      `SELECT value FROM meta WHERE key = 'seq_high'`,
    );
    const seq = row?.value ?? 0;
    if (seq > this.knownSeq) this.knownSeq = seq;
    return seq;
  }
}

async function readRow(db: Db | Tx, id: string, lock = false): Promise<Row | undefined> {
  const [row] = await query<Row>(
    db,
    `SELECT ${table.OPERATION_COLUMNS} FROM operations WHERE id = $1${lock ? ' FOR UPDATE' : ''}`,
    [id],
  );
  return row;
}

async function insertOperations(tx: Tx, ops: NewOperation[], nows: number[]): Promise<void> {
  await query(tx, SQL_CREATE, [
    ops.map((op) => op.id),
    ops.map((op) => op.tenant),
    ops.map((op) => op.type),
    ops.map((op) => JSON.stringify(op.input)),
    ops.map((op) => JSON.stringify(op.labels)),
    ops.map((op) => op.maxAttempts),
    ops.map((op) => op.runAt),
    ops.map((op) => op.timeoutMs),
    ops.map((op) => op.callbackUrl),
    ops.map((op) => op.traceparent ?? null),
    nows,
  ]);
}

/** The PostgreSQL store, for several nodes on one database. */
export function postgresStore(options: PostgresStoreOptions): store.Store {
  return new PostgresStore(options);
}
