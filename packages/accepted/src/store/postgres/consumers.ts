import * as rules from '../consumer-rules.ts';
import type * as api from '../consumers.ts';
import { query, type Db, type Tx } from './db.ts';

const SQL = rules.consumerSql((n) => `$${n}`);

/** The last seq allocated (committed, as this transaction or connection sees it). */
export async function seqHigh(db: Db | Tx): Promise<number> {
  const [row] = await query<{ value: number }>(db, `SELECT value FROM meta WHERE key = 'seq_high'`);
  return row?.value ?? 0;
}

/**
 * The relay cursor of the PostgreSQL store (see `ConsumerStore`), shared by every node on the
 * schema: each write is a transaction that locks the consumer's row (`FOR UPDATE`), so that two
 * nodes never both take one lease; the rules are `consumer-rules.ts`'s.
 */
export class PostgresConsumers implements api.ConsumerStore {
  constructor(private readonly db: () => Db) {}

  /** The consumer's row, locked for the transaction. */
  async lockRow(tx: Tx, name: string): Promise<rules.ConsumerRow | undefined> {
    const [row] = await query<rules.ConsumerRow>(tx, `${SQL.select} FOR UPDATE`, [name]);
    return row;
  }

  /** Writes a planned row. */
  async save(tx: Tx, row: rules.ConsumerRow): Promise<void> {
    await query(tx, SQL.save, rules.consumerParams(row));
  }

  async acquire(request: api.AcquireRequest): Promise<api.ConsumerLease | null> {
    const askedAt = Date.now();
    return this.db().begin(async (tx) => {
      let row = await this.lockRow(tx, request.name);
      if (!row) {
        // Whichever node inserts first makes the consumer; the others lock that row.
        const fresh = rules.newConsumer(request, await seqHigh(tx));
        await query(tx, SQL.insertMissing, rules.consumerParams(fresh));
        row = (await this.lockRow(tx, request.name)) ?? fresh;
      }
      const next = rules.planAcquire(row, request, askedAt);
      if (next === null) return null;
      await this.save(tx, next);
      return rules.toConsumerLease(next);
    });
  }

  async commit(lease: api.ConsumerRef, position: number, now: number): Promise<api.ConsumerLease> {
    const askedAt = Date.now();
    return this.db().begin(async (tx) => {
      const row = await this.lockRow(tx, lease.name);
      const next = rules.planCommit(row, lease, position, {
        now,
        askedAt,
        logEnd: await seqHigh(tx),
      });
      await this.save(tx, next);
      return rules.toConsumerLease(next);
    });
  }

  async release(lease: api.ConsumerRef): Promise<void> {
    return this.db().begin(async (tx) => {
      const next = rules.planRelease(await this.lockRow(tx, lease.name), lease);
      if (next) await this.save(tx, next);
    });
  }

  async get(name: string): Promise<api.ConsumerState | null> {
    const db = this.db();
    const [row] = await query<rules.ConsumerRow>(db, SQL.select, [name]);
    return row ? rules.toConsumerState(row, await seqHigh(db)) : null;
  }

  async list(): Promise<api.ConsumerState[]> {
    const db = this.db();
    const rows = await query<rules.ConsumerRow>(db, SQL.selectAll);
    const last = await seqHigh(db);
    return rows.map((row) => rules.toConsumerState(row, last));
  }
}
