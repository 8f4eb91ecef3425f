import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createAccepted, type Accepted, type AcceptedOptions } from '../src/engine/accepted.ts';
import type { Logger } from '../src/engine/definition.ts';
import type { OperationEvent } from '../src/domain/events.ts';
import { sqliteStore } from '../src/store/sqlite/sqlite-store.ts';

const dirs: string[] = [];
const engines: Accepted[] = [];
// Registered at import, so it runs once when the whole test file is done.
after(async () => {
  for (const engine of engines) await engine.stop({ graceful: false });
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

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

/** An engine on a real SQLite file in a temp folder, started, stopped when the test ends. */
export async function startEngine(
  options: Omit<AcceptedOptions, 'store'> & { filename?: string },
): Promise<Accepted & { filename: string }> {
  const filename = options.filename ?? path.join(tempDir(), 'accepted.db');
  const accepted = createAccepted({
    logger: memoryLogger(),
    pollIntervalMs: 200,
    ...options,
    store: sqliteStore({ filename }),
  });
  await accepted.start();
  engines.push(accepted);
  return Object.assign(accepted, { filename });
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

/** Starts `accepted serve` as a real child process and waits for its ready line. */
export async function startServer(
  dataDir: string,
  extra: string[] = [],
  env: Record<string, string> = {},
): Promise<Server> {
  const child = spawn(
    process.execPath,
    cliArgs('serve', '--demo', '--port', '0', '--data', dataDir, ...extra),
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
  return { child, url, exited, logged };
}
