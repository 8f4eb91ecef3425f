// The server side of the HTTP benchmarks, run as a child process so that the load generator
// does not share its event loop (`launchServer` below starts it). Runs Accepted (SQLite,
// durable) with a `noop` type and the HTTP API on a free loopback port, and speaks a line
// protocol on stdout:
//   {"event":"ready","port":P}                             once listening
//   {"event":"done","time":T,"succeeded":N,"stats":{...}}  when COUNT operations have
//                                                          succeeded (T = Date.now() then)
// It exits on SIGTERM/SIGINT, or when its stdin closes (the driver died) if launched by
// `launchServer`, removing its data. Run alone, it serves until SIGINT.
// Env: C (worker concurrency, default 64), WORKER=0 (API-only node), COUNT (0 = do not count),
// DURABILITY=normal (default full), MAX_CONNECTIONS (default the server's 10,000). PROFILE=1 in the driver runs it under --cpu-prof, writing
// the profile to PROFILE_DIR (default .cache/profiles).
import type autocannon from 'autocannon';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createAccepted, defineOperation } from '../packages/accepted/src/index.ts';
import { createHttpServer } from '../packages/accepted/src/http/index.ts';
import { sqliteStore } from '../packages/accepted/src/store/sqlite/index.ts';

const thisFile = fileURLToPath(import.meta.url);

/** How the benchmarks label the store they ran on. */
export const STORE_LABEL = `sqlite-${process.env.DURABILITY ?? 'full'}`;

/** The submit load of every HTTP benchmark: the peer ceiling's body, POSTed over C connections. */
export function submitLoad(port: number, connections: number): autocannon.Options {
  return {
    url: `http://127.0.0.1:${port}/v1/operations`,
    method: 'POST',
    connections,
    headers: { 'content-type': 'application/json' },
    body: '{"type":"noop","input":{"n":1}}',
  };
}

export interface DoneLine {
  event: 'done';
  /** Date.now() when the COUNT-th operation.succeeded event was read. */
  time: number;
  succeeded: number;
  stats: Record<string, number> | null;
}

export interface ServerChild {
  port: number;
  pid: number;
  /** Resolves with the child's `done` line; rejects if it exits first. */
  done: Promise<DoneLine>;
  /** Ends the child (SIGTERM, then SIGKILL after 10 s) and waits for it. Idempotent. */
  stop(): Promise<void>;
}

/** Starts the server child and resolves once it listens. The child never outlives the caller. */
export async function launchServer(env: Record<string, string>): Promise<ServerChild> {
  const profile = process.env.PROFILE === '1' || process.env.PROFILE === 'true';
  const profileDir = path.resolve(process.env.PROFILE_DIR ?? '.cache/profiles');
  const child = spawn(
    process.execPath,
    [
      ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
      '--import',
      'tsx',
      thisFile,
    ],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { ...process.env, ...env, EXIT_ON_STDIN_END: '1' },
    },
  );
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      process.off('exit', killOnExit);
      resolve();
    });
  });
  let exitedFlag = false;
  void exited.then(() => (exitedFlag = true));

  let onReady!: (port: number) => void;
  let onDone!: (line: DoneLine) => void;
  let onFail!: (error: Error) => void;
  const ready = new Promise<number>((resolve, reject) => {
    onReady = resolve;
    onFail = reject;
  });
  let failDone!: (error: Error) => void;
  const done = new Promise<DoneLine>((resolve, reject) => {
    onDone = resolve;
    failDone = reject;
  });
  done.catch(() => undefined); // may never be awaited (no COUNT)
  child.once('error', (error) => {
    onFail(error);
    failDone(error);
  });
  child.once('exit', (code, signal) => {
    const error = new Error(`server child exited (code ${code}, signal ${signal})`);
    onFail(error);
    failDone(error);
  });
  readline.createInterface({ input: child.stdout }).on('line', (text) => {
    if (!text.startsWith('{')) return;
    const line = JSON.parse(text) as { event?: string; port?: number };
    if (line.event === 'ready') onReady(Number(line.port));
    else if (line.event === 'done') onDone(line as DoneLine);
  });

  let stopping: Promise<void> | null = null;
  const stop = () => {
    stopping ??= (async () => {
      if (exitedFlag) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    })();
    return stopping;
  };

  const timer = setTimeout(() => onFail(new Error('server child not ready after 30 s')), 30_000);
  try {
    const port = await ready;
    return { port, pid: child.pid ?? -1, done, stop };
  } catch (error) {
    await stop();
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

async function serve(): Promise<void> {
  const C = Number(process.env.C ?? 64);
  const COUNT = Number(process.env.COUNT ?? 0);
  const worker = process.env.WORKER !== '0';
  const durability = process.env.DURABILITY === 'normal' ? 'normal' : 'full';

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-http-bench-'));
  const accepted = createAccepted({
    store: sqliteStore({ filename: path.join(dir, 'accepted.db'), durability }),
    operations: [defineOperation({ type: 'noop', handler: () => null })],
    concurrency: C,
    worker,
    logger: { debug() {}, info() {}, warn: console.warn, error: console.error },
  });
  const maxConnections = Number(process.env.MAX_CONNECTIONS ?? 0);
  const app = createHttpServer({
    accepted,
    logger: false,
    ...(maxConnections > 0 ? { maxConnections } : {}),
  });
  const controller = new AbortController();

  let stopping: Promise<void> | null = null;
  const shutdown = (code: number): Promise<void> => {
    stopping ??= (async () => {
      controller.abort();
      try {
        await app.close();
        await accepted.stop({ graceful: false });
      } catch (error) {
        console.error('[http-server] stop failed', error);
        code = code || 1;
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
      // process.exit (not death by signal) so that --cpu-prof writes its profile.
      process.exit(code);
    })();
    return stopping;
  };
  process.on('SIGTERM', () => void shutdown(0));
  process.on('SIGINT', () => void shutdown(0));
  if (process.env.EXIT_ON_STDIN_END === '1') {
    process.stdin.on('end', () => void shutdown(0));
    process.stdin.on('error', () => void shutdown(0));
    process.stdin.resume();
  }

  const send = (line: Record<string, unknown>) => {
    process.stdout.write(`${JSON.stringify(line)}\n`);
  };

  try {
    await accepted.start();
    const after = await accepted.store.lastSeq();
    await app.listen({ port: 0, host: '127.0.0.1' });
    const address = app.server.address();
    if (address === null || typeof address === 'string') throw new Error('no TCP address');
    if (COUNT > 0) {
      void (async () => {
        let succeeded = 0;
        for await (const event of accepted.events({
          types: ['operation.succeeded'],
          after,
          signal: controller.signal,
        })) {
          if (event.type === 'operation.succeeded' && ++succeeded === COUNT) {
            const time = Date.now();
            const stats = (accepted.store as unknown as { stats?: Record<string, number> }).stats;
            send({ event: 'done', time, succeeded, stats: stats ? { ...stats } : null });
            return;
          }
        }
      })().catch((error: unknown) => {
        console.error('[http-server] counting failed', error);
        void shutdown(1);
      });
    }
    send({ event: 'ready', port: address.port, worker, concurrency: C });
  } catch (error) {
    console.error('[http-server] start failed', error);
    await shutdown(1);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === thisFile) await serve();
