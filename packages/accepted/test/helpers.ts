import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createAccepted, type Accepted, type AcceptedOptions } from '../src/engine/accepted.ts';
import type { Logger } from '../src/engine/definition.ts';
import type { OperationEvent } from '../src/domain/events.ts';
import { PostgresStore } from '../src/store/postgres/postgres-store.ts';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts';
import type { Store } from '../src/store/store.ts';
import { PG_URL, beforeSchemasDrop, newSchema, pgUnavailable } from './pg-helpers.ts';

const dirs: string[] = [];
const engines: Accepted[] = [];
// Runs once when the whole test file is done: engines stop before their schemas are dropped.
beforeSchemasDrop(async () => {
  await stopEngines();
  // Servers this file started on a schema of its own and left running go before the schema.
  for (const server of pgServers.splice(0)) {
    if (server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill('SIGKILL');
      await server.exited;
    }
  }
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

// ---- the store the behavioural suites run on -------------------------------------------------

export type StoreKind = 'sqlite' | 'postgres';

/**
 * The store of this test process: `ACCEPTED_TEST_STORE=postgres` runs the behavioural suites
 * on PostgreSQL (`ACCEPTED_TEST_PG`, a fresh schema per store), anything else or nothing on
 * SQLite (a fresh file per store). `scripts/test.mjs` runs the suites once with each.
 */
export const STORE: StoreKind = storeKind(process.env.ACCEPTED_TEST_STORE);

function storeKind(value: string | undefined): StoreKind {
  if (value === undefined || value === '' || value === 'sqlite') return 'sqlite';
  if (value === 'postgres') return 'postgres';
  throw new Error(`ACCEPTED_TEST_STORE must be sqlite or postgres (got "${value}")`);
}

// On PostgreSQL with CI=true an unreachable server fails the file here, at import, saying why.
if (STORE === 'postgres') {
  const down = await pgUnavailable();
  if (down) throw new Error(`ACCEPTED_TEST_STORE=postgres: ${down}`);
}

/** A suite's name with the store it runs on, so the spec report says it: `name [postgres]`. */
export function onStore(name: string): string {
  return `${name} [${STORE}]`;
}

/**
 * Options of a test (or suite) that means something on SQLite only: on PostgreSQL it is
 * skipped, visibly, with the reason in the report (`# SQLite only: ...`).
 */
export function sqliteOnly(why: string): { skip: string | false } {
  return { skip: STORE === 'sqlite' ? false : `SQLite only: ${why}` };
}

/** The same for a test of PostgreSQL alone (several nodes on one schema, ...). */
export function postgresOnly(why: string): { skip: string | false } {
  return { skip: STORE === 'postgres' ? false : `PostgreSQL only: ${why}` };
}

/**
 * Where a test's data lives: a SQLite file in a temp folder, or a PostgreSQL schema (dropped
 * when the file ends). `open()` makes a store on it, as often as asked: a restart, or another
 * node of the same deployment (PostgreSQL).
 */
export interface StorePlace {
  kind: StoreKind;
  /** The SQLite file, or null on PostgreSQL. */
  filename: string | null;
  /** The PostgreSQL schema, or null on SQLite. */
  schema: string | null;
  open(): SqliteStore | PostgresStore;
}

/** A fresh, empty place on this process's store (`STORE`), or on `kind`. */
export function newStorePlace(kind: StoreKind = STORE): StorePlace {
  if (kind === 'postgres') {
    const schema = newSchema();
    return {
      kind,
      filename: null,
      schema,
      open: () => new PostgresStore({ url: PG_URL, schema }),
    };
  }
  return sqlitePlace(path.join(tempDir(), 'accepted.db'));
}

function sqlitePlace(filename: string): StorePlace {
  return { kind: 'sqlite', filename, schema: null, open: () => new SqliteStore({ filename }) };
}

/** A fresh store (not opened) on this process's store kind. */
export function testStore(): SqliteStore | PostgresStore {
  return newStorePlace().open();
}

/** A fresh folder under the OS temp dir, removed when the test file ends. */
export function tempDir(prefix = 'accepted-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

/** Collects log lines instead of printing them, so tests can assert on warnings. */
export function memoryLogger(): Logger & { lines: { level: string; msg: string }[] } {
  const lines: { level: string; msg: string }[] = [];
  const at = (level: string) => (_obj: object, msg?: string) => {
    lines.push({ level, msg: msg ?? '' });
  };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/**
 * An engine on a fresh store of this process's kind (a SQLite file, or a PostgreSQL schema),
 * started, stopped when the test file ends. `place` reopens an earlier engine's data; `store`
 * runs on that store instead (a wrapped one); `filename` on that SQLite file.
 */
export async function startEngine(
  options: Omit<AcceptedOptions, 'store'> & {
    place?: StorePlace;
    store?: Store;
    filename?: string;
  },
): Promise<Accepted & { place: StorePlace | null }> {
  const { place: given, store: wrapped, filename, ...rest } = options;
  let place: StorePlace | null = given ?? null;
  if (!place && filename !== undefined) place = sqlitePlace(filename);
  if (!place && !wrapped) place = newStorePlace();
  const store = wrapped ?? place?.open();
  if (!store) throw new Error('startEngine: give place, store or filename, not none');
  const accepted = createAccepted({
    logger: memoryLogger(),
    pollIntervalMs: 200,
    ...rest,
    store,
  });
  await accepted.start();
  engines.push(accepted);
  return Object.assign(accepted, { place });
}

/**
 * Stops every engine started so far. For `afterEach` in a file whose tests share no engine:
 * on PostgreSQL each engine holds connections (its pool, LISTEN) until it stops, and a file
 * of many tests would otherwise reach the server's connection limit.
 */
export async function stopEngines(): Promise<void> {
  for (const engine of engines.splice(0)) await engine.stop({ graceful: false });
}

/** Stops `accepted` with the other engines when the test file ends (one the test started). */
export function stopAtEnd(accepted: Accepted): void {
  engines.push(accepted);
}

/** Every event of one operation so far, in order. */
export async function historyOf(
  accepted: Accepted,
  operationId: string,
): Promise<OperationEvent[]> {
  const out: OperationEvent[] = [];
  for await (const event of accepted.events({ operationId, follow: false })) out.push(event);
  return out;
}

/** Resolves once `check` holds, polling every 10 ms; fails after `ms` (a condition never met). */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  ms = 15_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The package folder, and the CLI's entry point run from source. */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const cliMain = path.join(packageRoot, 'src/cli/main.ts');

/** Node arguments that run the CLI from source with these arguments. */
export function cliArgs(...args: string[]): string[] {
  return ['--import', 'tsx', cliMain, ...args];
}

export interface Server {
  child: ChildProcess;
  url: string;
  exited: Promise<number | null>;
  /** Resolves when the server has logged a line with this `msg`. */
  logged(msg: string): Promise<void>;
}

/** The PostgreSQL schema of each data folder a server was started on (`STORE` postgres). */
const serverSchemas = new Map<string, string>();
/** The servers started on those schemas, killed (if still running) before they are dropped. */
const pgServers: Server[] = [];

/**
 * Starts `accepted serve` as a real child process and waits for its ready line. On
 * PostgreSQL (`STORE`, unless `extra` names a `--store` itself) the server runs with
 * `--store` and a schema of its own, the same schema again for the same `dataDir` (a restart).
 */
export async function startServer(
  dataDir: string,
  extra: string[] = [],
  env: Record<string, string> = {},
): Promise<Server> {
  const store: string[] = [];
  if (STORE === 'postgres' && !extra.includes('--store')) {
    const schema = serverSchemas.get(dataDir) ?? newSchema();
    serverSchemas.set(dataDir, schema);
    store.push('--store', PG_URL, '--schema', schema);
  }
  const child = spawn(
    process.execPath,
    cliArgs('serve', '--demo', '--port', '0', '--data', dataDir, ...store, ...extra),
    { cwd: packageRoot, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } },
  );
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const seen = new Set<string>();
  const waiters: { msg: string; resolve: () => void }[] = [];
  const url = await new Promise<string>((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line) as { msg?: string; url?: string };
        if (entry.msg === 'accepted ready' && entry.url) resolve(entry.url);
        if (entry.msg) {
          seen.add(entry.msg);
          for (const waiter of waiters) if (waiter.msg === entry.msg) waiter.resolve();
        }
      } catch {
        // not a log line
      }
    });
    void exited.then((code) => reject(new Error(`server exited early with ${code}`)));
  });
  const logged = (msg: string) =>
    seen.has(msg)
      ? Promise.resolve()
      : new Promise<void>((resolve) => waiters.push({ msg, resolve }));
  const server = { child, url, exited, logged };
  if (store.length > 0) pgServers.push(server);
  return server;
}
