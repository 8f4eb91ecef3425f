import { randomBytes } from 'node:crypto';
import { after } from 'node:test';
import pg from 'pg';
import { IN_CI } from './ci.ts';

/** The PostgreSQL server the tests use (each test file makes and drops its own schemas). */
export const PG_URL = process.env.ACCEPTED_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

const made = new Set<string>();
let admin: pg.Pool | null = null;

function adminSql(): pg.Pool {
  if (!admin) {
    admin = new pg.Pool({ connectionString: PG_URL, max: 2 });
    admin.on('error', () => undefined); // an idle admin connection dropped: the pool reconnects
  }
  return admin;
}

const firsts: (() => Promise<void>)[] = [];

/**
 * Runs `cleanup` when the test file ends, before its schemas are dropped: engines and servers
 * still using a schema stop first.
 */
export function beforeSchemasDrop(cleanup: () => Promise<void>): void {
  firsts.push(cleanup);
}

// Registered at import, so it runs once when the whole test file is done.
after(async () => {
  for (const cleanup of firsts.splice(0)) await cleanup();
  if (!admin) return;
  for (const schema of made) await dropSchema(schema);
  await admin.end();
});

/**
 * Null when the server answers; else why not. In CI (test/ci.ts) an unreachable server is an
 * error (the tests must run there); elsewhere the PostgreSQL tests are skipped with a message.
 */
export async function pgUnavailable(): Promise<string | null> {
  try {
    await adminSql().query('select 1');
    return null;
  } catch (error) {
    const why = `PostgreSQL at ${PG_URL} is unreachable (${(error as Error).message}); set ACCEPTED_TEST_PG`;
    if (IN_CI) throw new Error(`${why}. CI is set: failing instead of skipping.`, { cause: error });
    console.warn(`skipping PostgreSQL tests: ${why}`);
    return why;
  }
}

/** A fresh schema name, dropped when the test file ends (or earlier by `dropSchema`). */
export function newSchema(): string {
  const schema = `accepted_test_${randomBytes(5).toString('hex')}`;
  made.add(schema);
  return schema;
}

export async function dropSchema(schema: string): Promise<void> {
  made.delete(schema);
  for (let attempt = 1; ; attempt++) {
    try {
      await adminSql().query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      return;
    } catch (error) {
      // A connection of the file still at work in the schema (a node going away) can make the
      // drop a deadlock victim: the other side finishes, and the drop goes through next time.
      if ((error as { code?: string }).code !== '40P01' || attempt === 3) throw error;
    }
  }
}

/** Runs raw SQL in a schema (test set-ups). */
export async function adminQuery<T extends object>(text: string): Promise<T[]> {
  return (await adminSql().query<T & pg.QueryResultRow>(text)).rows;
}

/** A connection of its own (a raw session playing another node), connected. */
export async function rawSession(url = PG_URL): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}
