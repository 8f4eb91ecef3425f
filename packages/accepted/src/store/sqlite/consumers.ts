import type Database from 'better-sqlite3';
import * as rules from '../consumer-rules.ts';
import type * as api from '../consumers.ts';

/** What the tables of a capability need of the SQLite store. */
export interface SqliteTables {
  stmt(sql: string): Database.Statement;
  /** Runs in the group commit; resolves once durable. */
  write<T>(run: () => T): Promise<T>;
  /** Runs a read now; a throw becomes a rejection. */
  read<T>(run: () => T): Promise<T>;
}

/** What the consumers table needs of the SQLite store. */
export interface SqliteConsumerAccess extends SqliteTables {
  /** The last seq written, in a write (committed in this file, perhaps not yet durable). */
  seqHigh(): number;
  /** The last durable seq (what readers of the log see). */
  lastSeq(): number;
}

const SQL = rules.consumerSql(() => '?');

/**
 * The relay cursor of the SQLite store (see `ConsumerStore`): one process owns the file, so
 * every write runs alone in the group commit and needs no lock; the rules are
 * `consumer-rules.ts`'s.
 */
export class SqliteConsumers implements api.ConsumerStore {
  constructor(private readonly db: SqliteConsumerAccess) {}

  /** The consumer's row, in the current write or read. */
  row(name: string): rules.ConsumerRow | undefined {
    return this.db.stmt(SQL.select).get(name) as rules.ConsumerRow | undefined;
  }

  /** Writes a planned row, in the current write. */
  save(row: rules.ConsumerRow): void {
    this.db.stmt(SQL.save).run(...rules.consumerParams(row));
  }

  /** The seq a commit in the current write may reach at most. */
  logEnd(): number {
    return this.db.seqHigh();
  }

  acquire(request: api.AcquireRequest): Promise<api.ConsumerLease | null> {
    const askedAt = Date.now();
    return this.db.write(() => {
      const row = this.row(request.name) ?? rules.newConsumer(request, this.db.seqHigh());
      const next = rules.planAcquire(row, request, askedAt);
      if (next === null) return null;
      this.save(next);
      return rules.toConsumerLease(next);
    });
  }

  commit(lease: api.ConsumerRef, position: number, now: number): Promise<api.ConsumerLease> {
    const askedAt = Date.now();
    return this.db.write(() => {
      const next = rules.planCommit(this.row(lease.name), lease, position, {
        now,
        askedAt,
        logEnd: this.db.seqHigh(),
      });
      this.save(next);
      return rules.toConsumerLease(next);
    });
  }

  release(lease: api.ConsumerRef): Promise<void> {
    return this.db.write(() => {
      const next = rules.planRelease(this.row(lease.name), lease);
      if (next) this.save(next);
    });
  }

  get(name: string): Promise<api.ConsumerState | null> {
    return this.db.read(() => {
      const row = this.row(name);
      return row ? rules.toConsumerState(row, this.db.lastSeq()) : null;
    });
  }

  list(): Promise<api.ConsumerState[]> {
    return this.db.read(() => {
      const rows = this.db.stmt(SQL.selectAll).all() as rules.ConsumerRow[];
      return rows.map((row) => rules.toConsumerState(row, this.db.lastSeq()));
    });
  }
}
