// A PostgreSQL server of the test's own: a fresh cluster (initdb) in a temp folder, on a free
// port, that the test may stop, start and restart without disturbing the shared server other
// test files use. Built from the machine's PostgreSQL binaries (Debian's postgresql package).
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { promisify } from 'node:util';
import { IN_CI } from './ci.ts';

const run = promisify(execFile);

/** The folder of `initdb` and `pg_ctl`, or null when PostgreSQL is not installed here. */
export function pgBinDir(): string | null {
  const root = '/usr/lib/postgresql';
  if (!fs.existsSync(root)) return null;
  const versions = fs
    .readdirSync(root)
    .filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? null : path.join(root, versions[0], 'bin');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

export interface PgCluster {
  url: string;
  port: number;
  start(): Promise<void>;
  /** `fast`: clients are disconnected and the server shuts down cleanly. */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  restart(mode?: 'fast' | 'immediate'): Promise<void>;
}

const clusters: { dir: string; bin: string }[] = [];
after(async () => {
  for (const { dir, bin } of clusters) {
    await asPostgres(bin, 'pg_ctl', [
      '-D',
      path.join(dir, 'data'),
      '-m',
      'immediate',
      'stop',
    ]).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Runs a PostgreSQL tool as the `postgres` user when we are root (initdb refuses root). */
function asPostgres(bin: string, tool: string, args: string[]) {
  const file = path.join(bin, tool);
  if (process.getuid?.() === 0) return run('runuser', ['-u', 'postgres', '--', file, ...args]);
  return run(file, args);
}

/**
 * Why a private cluster cannot be made here, or null. In CI (test/ci.ts) that is an error: the
 * tests that need one must run in CI.
 */
export function pgClusterUnavailable(): string | null {
  const bin = pgBinDir();
  let why: string | null = null;
  if (!bin) why = 'PostgreSQL binaries (initdb, pg_ctl) are not installed';
  else if (process.getuid?.() === 0) {
    try {
      execFileSync('id', ['postgres'], { stdio: 'ignore' });
    } catch {
      why = 'running as root without a postgres user to run initdb as';
    }
  }
  if (why && IN_CI) throw new Error(`${why}. CI is set: failing instead of skipping.`);
  if (why) console.warn(`skipping private-PostgreSQL tests: ${why}`);
  return why;
}

/** Makes and starts a private PostgreSQL server; it is removed when the test file ends. */
export async function startPgCluster(): Promise<PgCluster> {
  const bin = pgBinDir();
  if (!bin) throw new Error('PostgreSQL binaries not found');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-pg-'));
  fs.chmodSync(dir, 0o777);
  clusters.push({ dir, bin });
  const data = path.join(dir, 'data');
  await asPostgres(bin, 'initdb', [
    '-D',
    data,
    '-A',
    'trust',
    '-U',
    'postgres',
    '--no-sync',
    '-E',
    'UTF8',
  ]);
  const port = await freePort();
  const options = [
    `-p ${port}`,
    `-k ${dir}`,
    '-c listen_addresses=127.0.0.1',
    // Durable across a restart or a killed server process (the OS keeps the pages); only a
    // power loss could lose a commit, which these tests do not simulate.
    '-c fsync=off',
    '-c max_connections=100',
  ].join(' ');
  const ctl = (...args: string[]) =>
    asPostgres(bin, 'pg_ctl', [
      '-D',
      data,
      '-o',
      options,
      '-l',
      path.join(dir, 'log'),
      '-w',
      ...args,
    ]);
  await ctl('start');
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    start: async () => {
      await ctl('start');
    },
    stop: async (mode = 'fast') => {
      await ctl('-m', mode, 'stop');
    },
    restart: async (mode = 'fast') => {
      await ctl('-m', mode, 'restart');
    },
  };
}
