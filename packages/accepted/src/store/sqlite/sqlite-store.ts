import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { AcceptedError, leaseLost, operationNotFound as notFound } from '../../domain/errors.ts';
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
import { SqliteConsumers } from './consumers.ts';
import { SqliteWebhooks } from './webhooks.ts';

export interface SqliteStoreOptions {
  /**
   * The database file. Created with its folder if missing. `:memory:` keeps nothing (tests and
   * throwaway demos only).
   */
  filename: string;
  /**
   * `full` (default): every acknowledged write survives power loss: the write-ahead log is
   * flushed to disk (fsync) before a write is acknowledged. The flush runs off the event loop
   * and covers every commit made while the previous one ran (group commit).
   * `normal`: survives a process crash but may lose the last commits on power loss.
   */
  durability?: 'full' | 'normal';
  /** Most writes folded into one transaction. Default 2000. */
  maxBatch?: number;
}

interface Command {
  run: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** A committed batch: its callers are answered (and hints sent) once it is on disk. */
interface Committed {
  batch: Command[];
  outcomes: { ok: boolean; value: unknown }[];
  events: OperationEvent[];
  work: boolean;
  /** The highest seq once this batch committed (later batches may not be durable yet). */
  lastSeq: number;
}

/** Statements on the path of every operation, prepared once at open. */
interface HotStatements {
  insertOperation: Database.Statement;
  insertEvent: Database.Statement;
  claim: Database.Statement;
  claimTyped: Database.Statement;
  complete: Database.Statement;
  saveSeqHigh: Database.Statement;
  totalChanges: Database.Statement;
}

const SQL_INSERT_OPERATION = `INSERT INTO operations (id, tenant, type, status, input, labels,
  max_attempts, run_at, timeout_ms, callback_url, traceparent, created_at, updated_at, version)
  VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`;
const SQL_INSERT_EVENT = `INSERT INTO events (seq, operation_id, tenant, operation_type, version,
  type, data, time, labels) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`;

/** The rows of the operations table here: labels are stored as JSON text. */
type Row = table.OperationRow<string>;
type Changed = table.ChangedRow<string>;

/** Pages of WAL before a checkpoint: larger means hot pages are copied back less often. */
const WAL_CHECKPOINT_PAGES = 8192;
/**
 * Durability `full` runs its own checkpoints, at most this often. The WAL file keeps its size
 * between them (SQLite rewrites it from the start), so its flushes overwrite blocks in place:
 * no file growth, no metadata in the flush.
 */
const CHECKPOINT_INTERVAL_MS = 1000;
const CHANGED = `RETURNING ${table.CHANGED_COLUMNS}`;
/** The SET list of each transition (`rules.ts`). */
const SET = rules.setLists(() => '?');

function claimSql(typed: boolean): string {
  return `UPDATE operations SET status = 'running', attempts = attempts + 1,
      lease_token = ? || '.' || pk,
      lease_owner = ?, lease_expires_at = ?, started_at = ?, updated_at = ?, version = version + 1
    WHERE pk IN (SELECT pk FROM operations WHERE status = 'queued' AND run_at <= ?
      ${typed ? 'AND type IN (SELECT value FROM json_each(?))' : ''} ORDER BY run_at LIMIT ?)
    RETURNING ${table.OPERATION_COLUMNS}`;
}

const SQL_COMPLETE = `UPDATE operations SET status = 'succeeded', result = ?, error = NULL,
    finished_at = ?, updated_at = ?, version = version + 1, ${rules.CLEAR_LEASE}
  WHERE pk = ? AND id = ? AND lease_token = ? AND status = 'running' ${CHANGED}`;

function toOperation(row: Row): Operation {
  return table.rowToOperation(row, JSON.parse(row.labels) as Record<string, string>);
}

/**
 * Filters of any length keep one statement text (one prepared statement per shape of query,
 * not per length of its lists): a list is one JSON array parameter, labels one JSON object.
 */
const IN_JSON = (column: string) => `${column} IN (SELECT value FROM json_each(?))`;
/** Every label of the JSON object parameter is on the row (its `labels` column). */
const HAS_LABELS = `NOT EXISTS (SELECT 1 FROM json_each(?) AS f
  WHERE json_extract(labels, '$."' || replace(f.key, '"', '\\"') || '"') IS NOT f.value)`;
/** Statements kept prepared besides the hot ones (least recently used ones are dropped). */
const STATEMENT_CACHE = 256;

/** Runs a synchronous read so that its failure is a rejected promise, never a throw. */
function settle<T>(read: () => T): Promise<T> {
  try {
    return Promise.resolve(read());
  } catch (error) {
    return Promise.reject(error instanceof Error ? error : new Error(String(error)));
  }
}

/** SQLite's refusal because the disk is full (SQLITE_FULL) or failing (SQLITE_IOERR_*). */
function isDiskError(error: unknown): error is { code: string } {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code === 'SQLITE_FULL' || code.startsWith('SQLITE_IOERR'));
}

/**
 * A write SQLite refused because the disk is full or failing (SQLITE_FULL, SQLITE_IOERR_*):
 * STORE_UNAVAILABLE, so the caller answers 503 with Retry-After and may retry; nothing of the
 * write was kept (its transaction rolled back). Other errors are returned as they are.
 */
function storeError(error: unknown): unknown {
  if (!isDiskError(error)) return error;
  const full = error.code === 'SQLITE_FULL';
  return new AcceptedError(
    'STORE_UNAVAILABLE',
    full ? 'The disk of the database is full.' : 'The disk of the database failed a write.',
    {
      fix: full
        ? 'Free space on the volume of the data folder (--data); writes resume by themselves.'
        : 'Check the disk of the data folder (--data); retry later.',
      cause: error,
    },
  );
}

/**
 * A lease token is `<random>.<pk>`: opaque to callers, it lets this adapter find the row by
 * primary key (no index lookup) while the random part fences stale holders.
 */
function leasePk(token: string): number {
  const pk = Number(token.slice(token.lastIndexOf('.') + 1));
  return Number.isSafeInteger(pk) ? pk : -1;
}

/**
 * The embedded store: one SQLite file in WAL mode, opened by one process at a time (exclusive
 * lock), every write folded into a group commit so that many transitions share one fsync.
 */
export class SqliteStore implements store.Store {
  readonly kind = 'sqlite';
  private db: Database.Database | null = null;
  private readonly options: Required<SqliteStoreOptions>;
  private queue: Command[] = [];
  private flushScheduled = false;
  private pendingEvents: OperationEvent[] = [];
  private workChanged = false;
  private readonly listeners = new Set<(hint: store.StoreHint) => void>();
  private readonly statements = new Map<string, Database.Statement>();
  private seqHigh = 0;
  /** The highest seq known durable: readers never see events beyond it. */
  private durableSeq = 0;
  private closed = false;
  private hot: HotStatements | null = null;
  /**
   * Durability `full`: SQLite commits without syncing and this adapter flushes the WAL file
   * itself, asynchronously, before answering. Null in `normal` mode and for `:memory:`.
   */
  private walFd: number | null = null;
  private syncing = false;
  private lastCheckpoint = 0;
  private unsynced: Committed[] = [];
  private syncWaiters: (() => void)[] = [];
  private broken: AcceptedError | null = null;
  /** Readers waiting for a seq to become durable (`snapshot`). */
  private durableWaiters: { seq: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  /** Group-commit counters, for benchmarks and metrics. */
  readonly stats = { flushes: 0, commands: 0, syncs: 0, checkpoints: 0, checkpointsRefused: 0 };
  /** The relay cursor (named consumers of the log), in the same database and group commit. */
  readonly consumers = new SqliteConsumers({
    stmt: (sql) => this.stmt(sql),
    write: (run) => this.write(run),
    read: (run) => settle(run),
    seqHigh: () => this.seqHigh,
    lastSeq: () => this.durableSeq,
  });
  /** Webhook endpoints, deliveries and attempts, in the same database and group commit. */
  readonly webhooks = new SqliteWebhooks({
    stmt: (sql) => this.stmt(sql),
    write: (run) => this.write(run),
    read: (run) => settle(run),
    appendEvent: (row, type, data, now) =>
      this.appendEvent({ ...row, attempts: 0 }, type, data, now),
    consumers: this.consumers,
  });

  constructor(options: SqliteStoreOptions) {
    this.options = {
      durability: 'full',
      maxBatch: 2000,
      ...options,
    };
  }

  open(): Promise<void> {
    return settle(() => this.openNow());
  }

  private openNow(): void {
    if (this.db) return;
    const { filename } = this.options;
    if (filename !== ':memory:')
      fs.mkdirSync(path.dirname(path.resolve(filename)), { recursive: true });
    const db = new Database(filename);
    try {
      db.pragma('busy_timeout = 2000');
      // Exclusive: this process alone uses the file, so on open every lease still recorded
      // belongs to a process that died, and recovery need not wait for leases to expire.
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('temp_store = MEMORY');
      db.pragma('cache_size = -65536');
      db.pragma(`wal_autocheckpoint = ${WAL_CHECKPOINT_PAGES}`);
      db.exec('BEGIN EXCLUSIVE; COMMIT');
      this.migrate(db);
      db.prepare(`UPDATE operations SET lease_expires_at = 0 WHERE status = 'running'`).run();
      // So are the leases of webhook deliveries in flight: they may be claimed again at once.
      db.prepare(
        `UPDATE webhook_deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL`,
      ).run();
      // And the consumers' (the relay cursor): a new holder takes them at once.
      db.prepare(`UPDATE consumers SET lease_until = 0 WHERE lease_until IS NOT NULL`).run();
      const row = db
        .prepare(
          `SELECT max((SELECT coalesce(max(seq), 0) FROM events),
             (SELECT value FROM meta WHERE key = 'seq_high')) AS seq`,
        )
        .get() as { seq: number };
      this.seqHigh = row.seq;
      this.durableSeq = row.seq;
      this.hot = {
        insertOperation: db.prepare(SQL_INSERT_OPERATION),
        insertEvent: db.prepare(SQL_INSERT_EVENT),
        claim: db.prepare(claimSql(false)),
        claimTyped: db.prepare(claimSql(true)),
        complete: db.prepare(SQL_COMPLETE),
        saveSeqHigh: db.prepare(`UPDATE meta SET value = ? WHERE key = 'seq_high'`),
        totalChanges: db.prepare('SELECT total_changes()').pluck(),
      };
      this.configureDurability(db, filename);
    } catch (error) {
      db.close();
      if ((error as { code?: string }).code === 'SQLITE_BUSY') {
        throw new AcceptedError(
          'STORE_LOCKED',
          `The database ${filename} is in use by another process.`,
          {
            fix: 'Stop the other Accepted process, or give this one another --data directory.',
            cause: error,
          },
        );
      }
      throw error;
    }
    this.db = db;
  }

  /**
   * `full`: SQLite writes each commit to the WAL without syncing (synchronous=OFF) and this
   * adapter fsyncs the WAL file off the event loop before answering, so the loop never blocks
   * on the disk. Checkpoints (which copy the WAL into the database and later let SQLite reuse
   * the WAL) run only here, with synchronous=FULL, so the database file is synced before any
   * acknowledged frame can be overwritten. `normal`: SQLite's own synchronous=NORMAL.
   */
  private configureDurability(db: Database.Database, filename: string): void {
    if (filename === ':memory:') return;
    if (this.options.durability === 'normal') {
      db.pragma('synchronous = NORMAL');
      return;
    }
    const walPath = `${path.resolve(filename)}-wal`;
    if (!fs.existsSync(walPath)) return; // Unexpected: keep SQLite's own synchronous=FULL.
    this.walFd = fs.openSync(walPath, 'r+');
    db.pragma('wal_autocheckpoint = 0');
    db.pragma('synchronous = OFF');
  }

  /**
   * Flushes the WAL for every batch committed so far; one flush at a time covers many.
   * Returns whether a flush is under way.
   */
  private startSync(): boolean {
    const fd = this.walFd;
    if (this.syncing) return true;
    if (fd === null || this.unsynced.length === 0) return false;
    this.syncing = true;
    const covered = this.unsynced;
    this.unsynced = [];
    this.stats.syncs++;
    this.fsyncWal(fd, covered);
    return true;
  }

  private fsyncWal(fd: number, covered: Committed[]): void {
    // fdatasync, as SQLite itself uses on Linux: the data and the size, not the timestamps.
    fs.fdatasync(fd, (error) => {
      this.syncing = false;
      if (error) {
        // The disk refused: nothing written since can be promised durable. Fail loudly.
        this.broken = new AcceptedError('STORE_UNAVAILABLE', 'The disk failed to sync.', {
          fix: 'Check the disk; restart the server once it is healthy.',
          cause: error,
        });
        for (const committed of covered) {
          for (const command of committed.batch) command.reject(this.broken);
        }
        for (const waiter of this.durableWaiters.splice(0)) waiter.reject(this.broken);
      } else {
        for (const committed of covered) this.answer(committed);
        this.checkpointIfDue();
      }
      if (!this.startSync()) {
        const waiters = this.syncWaiters;
        this.syncWaiters = [];
        for (const waiter of waiters) waiter();
      }
    });
  }

  private checkpointIfDue(): void {
    const db = this.db;
    const now = Date.now();
    if (!db || this.walFd === null || db.inTransaction) return;
    if (now - this.lastCheckpoint < CHECKPOINT_INTERVAL_MS) return;
    this.lastCheckpoint = now;
    this.checkpoint(db);
  }

  /**
   * A checkpoint with full syncs (WAL before the copy, database after). One the disk refuses
   * (full: the database file must grow) is left for the next interval: the WAL keeps every
   * commit meanwhile, so nothing is lost, and the server goes on.
   */
  private checkpoint(db: Database.Database): void {
    this.stats.checkpoints++;
    db.pragma('synchronous = FULL');
    try {
      db.pragma('wal_checkpoint(PASSIVE)');
    } catch (error) {
      if (!isDiskError(error)) throw error;
      this.stats.checkpointsRefused++;
    } finally {
      db.pragma('synchronous = OFF');
    }
  }

  private migrate(db: Database.Database): void {
    const current = db.pragma('user_version', { simple: true }) as number;
    for (const migration of MIGRATIONS) {
      if (migration.version <= current) continue;
      db.transaction(() => {
        db.exec(migration.sql);
        db.pragma(`user_version = ${migration.version}`);
      }).immediate();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    while (this.queue.length > 0) this.flush();
    this.closed = true;
    if (this.syncing || this.unsynced.length > 0) {
      await new Promise<void>((resolve) => {
        this.syncWaiters.push(resolve);
        if (!this.startSync()) resolve();
      });
    }
    if (this.db && this.walFd !== null && !this.broken) {
      // SQLite checkpoints on close: let it sync as it does so.
      this.db.pragma('synchronous = FULL');
    }
    this.db?.close();
    if (this.walFd !== null) fs.closeSync(this.walFd);
    this.walFd = null;
    this.db = null;
    this.hot = null;
    this.statements.clear();
  }

  ping(): Promise<void> {
    // A failed sync leaves the store refusing every write until a restart: not ready.
    if (this.broken) return Promise.reject(this.broken);
    return settle(() => {
      this.stmt('SELECT 1').get();
    });
  }

  subscribe(listener: (hint: store.StoreHint) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private conn(): Database.Database {
    if (!this.db) {
      throw new AcceptedError('NOT_STARTED', 'The store is not open.', {
        fix: 'Call open() (or accepted.start()) first.',
      });
    }
    return this.db;
  }

  /** Rows changed by this connection since it opened (SQLite's `total_changes()`). */
  private totalChanges(): number {
    return this.hotStatements().totalChanges.get() as number;
  }

  private hotStatements(): HotStatements {
    if (!this.hot) this.conn();
    return this.hot as HotStatements;
  }

  private stmt(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (statement) {
      // Most recently used last, so that the cache drops the least recently used.
      this.statements.delete(sql);
    } else {
      statement = this.conn().prepare(sql);
      if (this.statements.size >= STATEMENT_CACHE) {
        const oldest = this.statements.keys().next();
        if (!oldest.done) this.statements.delete(oldest.value);
      }
    }
    this.statements.set(sql, statement);
    return statement;
  }

  /** Prepared statements held besides the hot ones (bounded by STATEMENT_CACHE). */
  get preparedStatements(): number {
    return this.statements.size;
  }

  // ---- group commit -------------------------------------------------------------------------

  private write<T>(run: () => T): Promise<T> {
    if (this.broken) return Promise.reject(this.broken);
    if (this.closed || !this.db) {
      return Promise.reject(
        new AcceptedError('NOT_STARTED', 'The store is not open.', { fix: 'Call open() first.' }),
      );
    }
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run, resolve: resolve as (value: unknown) => void, reject });
      this.scheduleFlush();
    });
  }

  /**
   * Group commit: every write queued during one turn of the event loop shares the commit (and
   * fsync) run at the start of the next. Waiting longer for bigger batches measured slower,
   * since callers wait on each commit (docs/benchmarks.md).
   */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** Runs queued writes in one transaction and settles their promises after the commit. */
  private flush(): void {
    const db = this.db;
    if (!db || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.options.maxBatch);
    this.stats.flushes++;
    this.stats.commands += batch.length;
    if (this.queue.length > 0) this.scheduleFlush();
    const outcomes: { ok: boolean; value: unknown }[] = [];
    const seqBefore = this.seqHigh;
    const changesBefore = this.totalChanges();
    let committed = false;
    db.exec('BEGIN IMMEDIATE');
    try {
      for (const command of batch) {
        try {
          outcomes.push({ ok: true, value: command.run() });
        } catch (error) {
          // Domain errors are raised before a command writes anything, so the rest of the
          // batch stays valid. Anything else aborts the batch (handled below).
          if (!(error instanceof AcceptedError)) throw error;
          outcomes.push({ ok: false, value: error });
        }
      }
      if (this.seqHigh !== seqBefore) this.hotStatements().saveSeqHigh.run(this.seqHigh);
      db.exec('COMMIT');
      committed = true;
    } catch {
      if (db.inTransaction) db.exec('ROLLBACK');
      this.pendingEvents = [];
      this.seqHigh = seqBefore;
    }
    if (!committed) {
      // Run each command alone, so one bad write fails only its own caller.
      outcomes.length = 0;
      for (const command of batch) {
        const eventsMark = this.pendingEvents.length;
        const seqMark = this.seqHigh;
        try {
          const run = () => {
            const value = command.run();
            if (this.seqHigh !== seqMark) this.hotStatements().saveSeqHigh.run(this.seqHigh);
            return value;
          };
          outcomes.push({ ok: true, value: db.transaction(run).immediate() });
        } catch (error) {
          this.pendingEvents.length = eventsMark;
          this.seqHigh = seqMark;
          outcomes.push({ ok: false, value: storeError(error) });
        }
      }
    }
    const written: Committed = {
      batch,
      outcomes,
      events: withoutDeleted(this.pendingEvents),
      work: this.workChanged,
      lastSeq: this.seqHigh,
    };
    this.pendingEvents = [];
    this.workChanged = false;
    // A batch that changed nothing (a claim that found nothing, say) wrote nothing to flush:
    // answered at once, unless earlier batches still wait for their flush (it must not be
    // answered before them: it may have read what they wrote).
    const wroteNothing =
      this.totalChanges() === changesBefore && !this.syncing && this.unsynced.length === 0;
    if (this.walFd === null || wroteNothing) {
      this.answer(written);
    } else {
      this.unsynced.push(written);
      this.startSync();
    }
  }

  /** Settles a durable batch's callers, then wakes readers with what it wrote. */
  private answer({ batch, outcomes, events, work, lastSeq }: Committed): void {
    if (lastSeq > this.durableSeq) this.durableSeq = lastSeq;
    if (this.durableWaiters.length > 0) {
      const waiting = this.durableWaiters;
      this.durableWaiters = [];
      for (const waiter of waiting) {
        if (waiter.seq <= this.durableSeq) waiter.resolve();
        else this.durableWaiters.push(waiter);
      }
    }
    batch.forEach((command, i) => {
      const outcome = outcomes[i];
      if (outcome?.ok) command.resolve(outcome.value);
      else command.reject(outcome?.value);
    });
    if ((events.length > 0 || work) && this.listeners.size > 0) {
      const hint: store.StoreHint = { lastSeq, work, events };
      for (const listener of this.listeners) {
        try {
          listener(hint);
        } catch {
          // A listener's failure must not break the store; hints are advisory.
        }
      }
    }
  }

  private appendEvent(row: Changed, type: EventType, data: EventData, now: number): void {
    const seq = ++this.seqHigh;
    this.hotStatements().insertEvent.run(
      seq,
      row.id,
      row.tenant,
      row.type,
      row.version,
      type,
      JSON.stringify(data),
      now,
      row.labels === '{}' ? null : row.labels,
    );
    this.pendingEvents.push(committedEvent(seq, row, type, data, now));
  }

  private readRow(id: string): Row | undefined {
    return this.stmt(`SELECT ${table.OPERATION_COLUMNS} FROM operations WHERE id = ?`).get(id) as
      Row | undefined;
  }

  private readScoped(id: string, tenant: string | undefined): Row {
    const row = table.inScope(this.readRow(id), tenant);
    if (!row) throw notFound(id);
    return row;
  }

  // ---- operations ---------------------------------------------------------------------------

  create(op: NewOperation, now: number): Promise<Operation> {
    return this.write(() => this.insertOperation(op, now));
  }

  createOnce(
    op: NewOperation,
    claim: store.IdempotencyClaim,
    now: number,
  ): Promise<store.CreateOnceResult> {
    return this.write((): store.CreateOnceResult => {
      const found = this.stmt(
        `SELECT fingerprint, operation_id, status, hold_until, expires_at FROM idempotency_keys
         WHERE tenant = ? AND key = ?`,
      ).get(op.tenant, claim.key) as table.IdempotencyRow | undefined;
      const known = rules.keyOutcome(found, claim, now);
      if (known?.outcome === 'replay') {
        const row = this.readRow(known.operationId);
        // Keys go with their operation (delete, purge), so the row is there; else take the key.
        if (row) return { outcome: 'replayed', operation: toOperation(row), status: known.status };
      } else if (known) {
        return known;
      }
      const operation = this.insertOperation(op, now);
      this.stmt(
        `INSERT OR REPLACE INTO idempotency_keys (${table.KEY_COLUMNS})
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(...table.keyValues(op, claim, now));
      return { outcome: 'created', operation };
    });
  }

  settleIdempotencyKey(tenant: string, key: string, status: number): Promise<void> {
    return this.write(() => {
      this.stmt(
        'UPDATE idempotency_keys SET status = ?, hold_until = NULL WHERE tenant = ? AND key = ?',
      ).run(status, tenant, key);
    });
  }

  purgeIdempotencyKeys(now: number, limit: number): Promise<number> {
    const probe = 'SELECT 1 FROM idempotency_keys WHERE expires_at <= ? LIMIT 1';
    return this.ifAny(probe, [now], 0, () => this.purgeKeysNow(now, limit));
  }

  private purgeKeysNow(now: number, limit: number): Promise<number> {
    return this.write(
      () =>
        this.stmt(
          `DELETE FROM idempotency_keys WHERE (tenant, key) IN (SELECT tenant, key
             FROM idempotency_keys WHERE expires_at <= ? LIMIT ?)`,
        ).run(now, limit).changes,
    );
  }

  private insertOperation(op: NewOperation, now: number): Operation {
    const labels = JSON.stringify(op.labels);
    this.hotStatements().insertOperation.run(
      op.id,
      op.tenant,
      op.type,
      JSON.stringify(op.input),
      labels,
      op.maxAttempts,
      op.runAt,
      op.timeoutMs,
      op.callbackUrl,
      op.traceparent ?? null,
      now,
      now,
    );
    const row = table.createdRow(op, labels);
    this.appendEvent(row, 'operation.queued', { status: 'queued', runAt: op.runAt }, now);
    this.workChanged = true;
    return table.createdOperation(op, now);
  }

  async snapshot(id: string, tenant?: string): Promise<store.OperationSnapshot | null> {
    // Read together (no write runs between two statements of one synchronous call).
    const read = () => {
      const row = table.inScope(this.readRow(id), tenant);
      if (!row) return null;
      const last = this.stmt(
        'SELECT coalesce(max(seq), 0) AS seq FROM events WHERE operation_id = ?',
      ).get(id) as { seq: number };
      return { operation: toOperation(row), seq: last.seq };
    };
    const snapshot = await settle(read);
    // A state committed but not yet flushed is shown only once it is durable.
    if (snapshot && snapshot.seq > this.durableSeq) await this.durable(snapshot.seq);
    return snapshot;
  }

  /** Resolves once every event up to `seq` is durable (the flush under way covers it). */
  private durable(seq: number): Promise<void> {
    if (seq <= this.durableSeq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.durableWaiters.push({ seq, resolve, reject });
    });
  }

  get(id: string, tenant?: string): Promise<Operation | null> {
    return settle(() => {
      const row = table.inScope(this.readRow(id), tenant);
      return row ? toOperation(row) : null;
    });
  }

  list(query: store.ListQuery): Promise<store.Page<Operation>> {
    return settle(() => this.listNow(query));
  }

  private listNow(query: store.ListQuery): store.Page<Operation> {
    const where = ['tenant = ?'];
    const params: (string | number)[] = [query.tenant];
    if (query.status && query.status.length > 0) {
      where.push(IN_JSON('status'));
      params.push(JSON.stringify(query.status));
    }
    if (query.type !== undefined) {
      where.push('type = ?');
      params.push(query.type);
    }
    if (query.labels && Object.keys(query.labels).length > 0) {
      where.push(HAS_LABELS);
      params.push(JSON.stringify(query.labels));
    }
    if (query.cursor !== undefined) {
      where.push('pk < ?');
      params.push(decodeCursor('o', query.cursor));
    }
    const rows = this.stmt(
      `SELECT ${table.OPERATION_COLUMNS} FROM operations WHERE ${where.join(' AND ')}
       ORDER BY pk DESC LIMIT ?`,
    ).all(...params, query.limit + 1) as Row[];
    return toPage('o', rows, query.limit, toOperation);
  }

  // ---- leases -------------------------------------------------------------------------------

  claim(request: store.ClaimRequest): Promise<store.ClaimResult> {
    const askedAt = Date.now();
    const typeFilter = request.types ? 'AND type IN (SELECT value FROM json_each(?))' : '';
    const typeParam = request.types ? [JSON.stringify(request.types)] : [];
    return this.write(() => {
      const token = newLeaseToken();
      const expiresAt = rules.leaseExpiry(request.now, request.leaseMs, askedAt);
      const hot = this.hotStatements();
      const rows = (request.types ? hot.claimTyped : hot.claim).all(
        token,
        request.owner,
        expiresAt,
        request.now,
        request.now,
        request.now,
        ...typeParam,
        request.limit,
      ) as Row[];
      const claimed = rules.startClaimed(
        rows,
        expiresAt,
        request.now,
        (row, type, data, now) => this.appendEvent(row, type, data, now),
        toOperation,
      );
      let nextRunAt: number | null = null;
      if (rows.length < request.limit) {
        const next = this.stmt(
          `SELECT min(run_at) AS t FROM operations WHERE status = 'queued' ${typeFilter}`,
        ).get(...typeParam) as { t: number | null };
        nextRunAt = next.t;
      }
      return { claimed, nextRunAt };
    });
  }

  nextRunAt(types: readonly string[] | null): Promise<number | null> {
    return settle(() => {
      const row = (
        types
          ? this.stmt(
              `SELECT min(run_at) AS t FROM operations WHERE status = 'queued'
               AND type IN (SELECT value FROM json_each(?))`,
            ).get(JSON.stringify(types))
          : this.stmt(`SELECT min(run_at) AS t FROM operations WHERE status = 'queued'`).get()
      ) as { t: number | null };
      return row.t;
    });
  }

  /**
   * Runs `write` only when `probe` finds a row: periodic upkeep (lease recovery, retention)
   * first reads, so that an idle store commits (and syncs) nothing.
   */
  private ifAny<T>(probe: string, params: unknown[], none: T, write: () => Promise<T>): Promise<T> {
    try {
      if (this.stmt(probe).get(...params) === undefined) return Promise.resolve(none);
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    return write();
  }

  renewLeases(request: store.RenewRequest): Promise<store.LeaseState[]> {
    const askedAt = Date.now();
    return this.write(() => {
      const expiresAt = rules.leaseExpiry(request.now, request.leaseMs, askedAt);
      const statement = this.stmt(
        `UPDATE operations SET lease_expires_at = ?
         WHERE pk = ? AND id = ? AND lease_token = ? AND status = 'running' RETURNING cancel_requested_at`,
      );
      return request.leases.map((lease) => {
        const row = statement.get(
          expiresAt,
          leasePk(lease.token),
          lease.operationId,
          lease.token,
        ) as { cancel_requested_at: number | null } | undefined;
        return rules.renewed(lease, row?.cancel_requested_at);
      });
    });
  }

  /** Runs a transition on a running operation whose lease is held; LEASE_LOST otherwise. */
  private underLease(lease: store.LeaseRef, change: rules.Transition): void {
    const row = this.stmt(
      `UPDATE operations SET ${SET[change.set]}
       WHERE pk = ? AND id = ? AND lease_token = ? AND status = 'running' ${CHANGED}`,
    ).get(...change.values, leasePk(lease.token), lease.operationId, lease.token) as
      Changed | undefined;
    if (!row) throw leaseLost(lease.operationId);
    this.changed(change, row);
  }

  /** Runs a transition on the operation at `pk` (already read in this transaction). */
  private atPk(pk: number, change: rules.Transition): void {
    const row = this.stmt(`UPDATE operations SET ${SET[change.set]} WHERE pk = ? ${CHANGED}`).get(
      ...change.values,
      pk,
    ) as Changed;
    this.changed(change, row);
  }

  /** Appends the event of a transition that changed `row`. */
  private changed(change: rules.Transition, row: Changed): void {
    const { type, data } = change.event(row.attempts);
    this.appendEvent(row, type, data, change.now);
    if (change.work) this.workChanged = true;
  }

  progress(lease: store.LeaseRef, progress: Progress, now: number): Promise<void> {
    const change = rules.planProgress(progress, now);
    return this.write(() => this.underLease(lease, change));
  }

  complete(lease: store.LeaseRef, result: Json, now: number): Promise<void> {
    const json = JSON.stringify(result);
    return this.write(() => {
      const row = this.hotStatements().complete.get(
        json,
        now,
        now,
        leasePk(lease.token),
        lease.operationId,
        lease.token,
      ) as Changed | undefined;
      if (!row) throw leaseLost(lease.operationId);
      this.appendEvent(row, 'operation.succeeded', rules.succeededEvent(row.attempts, result), now);
    });
  }

  fail(
    lease: store.LeaseRef,
    error: OperationError,
    retryAt: number | null,
    now: number,
  ): Promise<void> {
    return this.write(() => this.endAttempt(lease, error, retryAt, false, now));
  }

  finishCanceled(lease: store.LeaseRef, error: OperationError, now: number): Promise<void> {
    const change = rules.planFinishCanceled(error, now);
    return this.write(() => this.underLease(lease, change));
  }

  release(lease: store.LeaseRef, error: OperationError, now: number): Promise<void> {
    return this.write(() => this.endAttempt(lease, error, now, true, now));
  }

  /**
   * An attempt that ends without a result (`rules.planAttemptEnd`): requeued, failed for good,
   * or canceled when a cancel was requested meanwhile. LEASE_LOST when the lease is not held.
   */
  private endAttempt(
    lease: store.LeaseRef,
    error: OperationError,
    retryAt: number | null,
    givenBack: boolean,
    now: number,
  ): void {
    const held = this.stmt(
      `SELECT cancel_requested_at FROM operations
       WHERE pk = ? AND id = ? AND lease_token = ? AND status = 'running'`,
    ).get(leasePk(lease.token), lease.operationId, lease.token) as
      { cancel_requested_at: number | null } | undefined;
    if (!held) throw leaseLost(lease.operationId);
    const cancelRequestedAt = held.cancel_requested_at;
    this.underLease(
      lease,
      rules.planAttemptEnd({ cancelRequestedAt, error, retryAt, givenBack, now }),
    );
  }

  recoverExpiredLeases(now: number, limit: number): Promise<number> {
    const probe = `SELECT 1 FROM operations WHERE status = 'running' AND lease_expires_at < ? LIMIT 1`;
    return this.ifAny(probe, [now], 0, () => this.recoverNow(now, limit));
  }

  private recoverNow(now: number, limit: number): Promise<number> {
    return this.write(() => {
      const rows = this.stmt(
        `SELECT pk, attempts, max_attempts, cancel_requested_at FROM operations
         WHERE status = 'running' AND lease_expires_at < ? ORDER BY lease_expires_at LIMIT ?`,
      ).all(now, limit) as Pick<Row, 'pk' | 'attempts' | 'max_attempts' | 'cancel_requested_at'>[];
      for (const expired of rows) this.atPk(expired.pk, rules.planLeaseExpired(expired, now));
      return rows.length;
    });
  }

  // ---- client-driven transitions ------------------------------------------------------------

  cancel(
    id: string,
    tenant: string | undefined,
    error: OperationError,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<Operation> {
    return this.write(() => {
      const current = this.readScoped(id, tenant);
      const change = rules.planCancel(current, ifVersion, error, now);
      if (!change) return toOperation(current);
      this.atPk(current.pk, change);
      return toOperation(this.readScoped(id, tenant));
    });
  }

  retry(
    id: string,
    tenant: string | undefined,
    runAt: number,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<Operation> {
    return this.write(() => {
      const current = this.readScoped(id, tenant);
      this.atPk(current.pk, rules.planRetry(current, ifVersion, runAt, now));
      return toOperation(this.readScoped(id, tenant));
    });
  }

  delete(
    id: string,
    tenant: string | undefined,
    now: number,
    ifVersion?: readonly number[],
  ): Promise<void> {
    return this.write(() => {
      const current = this.readScoped(id, tenant);
      const deleted = rules.planDelete(current, ifVersion);
      this.stmt('DELETE FROM events WHERE operation_id = ?').run(id);
      this.stmt('DELETE FROM idempotency_keys WHERE operation_id = ?').run(id);
      this.stmt('DELETE FROM operations WHERE pk = ?').run(current.pk);
      this.appendEvent(deleted.row, deleted.type, deleted.data, now);
    });
  }

  purge(finishedBefore: number, limit: number): Promise<number> {
    const probe = `SELECT 1 WHERE EXISTS (SELECT 1 FROM operations
        WHERE finished_at IS NOT NULL AND finished_at < ?)
      OR EXISTS (SELECT 1 FROM events
        WHERE type IN ('operation.deleted', 'endpoint.disabled') AND time < ?)`;
    return this.ifAny(probe, [finishedBefore, finishedBefore], 0, () =>
      this.purgeNow(finishedBefore, limit),
    );
  }

  private purgeNow(finishedBefore: number, limit: number): Promise<number> {
    return this.write(() => {
      const ids = this.stmt(
        `DELETE FROM operations WHERE pk IN (SELECT pk FROM operations
           WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT ?) RETURNING id`,
      ).all(finishedBefore, limit) as { id: string }[];
      const dropEvents = this.stmt('DELETE FROM events WHERE operation_id = ?');
      const dropKeys = this.stmt('DELETE FROM idempotency_keys WHERE operation_id = ?');
      for (const { id } of ids) {
        dropEvents.run(id);
        dropKeys.run(id);
      }
      // Events of no operation still in the table: deletions, and disabled endpoints.
      this.stmt(
        `DELETE FROM events WHERE type IN ('operation.deleted', 'endpoint.disabled') AND time < ?`,
      ).run(finishedBefore);
      return ids.length;
    });
  }

  // ---- the log ------------------------------------------------------------------------------

  readEvents(query: store.EventQuery): Promise<OperationEvent[]> {
    return settle(() => this.readEventsNow(query));
  }

  private readEventsNow(query: store.EventQuery): OperationEvent[] {
    // Only durable events: a batch committed but not yet flushed to disk stays invisible.
    const where = ['seq > ?', 'seq <= ?'];
    const params: (string | number)[] = [query.after, this.durableSeq];
    if (query.operationId !== undefined) {
      where.push('operation_id = ?');
      params.push(query.operationId);
    }
    if (query.tenant !== undefined) {
      where.push('tenant = ?');
      params.push(query.tenant);
    }
    const inList = (column: string, values: readonly string[] | undefined) => {
      if (!values || values.length === 0) return;
      where.push(IN_JSON(column));
      params.push(JSON.stringify(values));
    };
    inList('operation_id', query.operationIds);
    inList('type', query.types);
    inList('operation_type', query.operationTypes);
    if (query.labels && Object.keys(query.labels).length > 0) {
      where.push(HAS_LABELS);
      params.push(JSON.stringify(query.labels));
    }
    const rows = this.stmt(
      `SELECT seq, operation_id, tenant, operation_type, version, type, data, time, labels FROM events
       WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`,
    ).all(...params, query.limit) as EventRow[];
    return rows.map(rowToEvent);
  }

  lastSeq(): Promise<number> {
    return settle(() => {
      this.conn();
      return this.durableSeq;
    });
  }
}

/**
 * The events of a batch minus those of operations deleted later in the same batch: the delete
 * removed them from the log in the same transaction, so no reader may be handed them.
 */
function withoutDeleted(events: OperationEvent[]): OperationEvent[] {
  let deletedAt: Map<string, number> | null = null;
  for (const event of events) {
    if (event.type === 'operation.deleted')
      (deletedAt ??= new Map()).set(event.operationId, event.seq);
  }
  if (deletedAt === null) return events;
  const gone = deletedAt;
  return events.filter((event) => event.seq >= (gone.get(event.operationId) ?? 0));
}

/** The embedded SQLite store. */
export function sqliteStore(options: SqliteStoreOptions): store.Store {
  return new SqliteStore(options);
}
