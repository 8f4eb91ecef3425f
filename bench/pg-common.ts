// Shared by the PostgreSQL benchmarks: the server URL and a fresh schema per run.
import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** Same server and database as the peers (`run.sh` uses $PG). */
export const PG_URL = process.env.PG ?? 'postgres://postgres:postgres@127.0.0.1:5432/test';

export function benchSchema(): string {
  return `accepted_bench_${randomBytes(4).toString('hex')}`;
}

export async function dropSchema(schema: string): Promise<void> {
  const sql = new pg.Client({ connectionString: PG_URL });
  await sql.connect();
  await sql.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await sql.end();
}

export const quiet = { debug() {}, info() {}, warn: console.warn, error: console.error };
