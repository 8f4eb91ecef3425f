// The plumbing shared by the fan-out benchmarks (`stream-fanout.ts`, `ws-broadcast.ts`): their
// server and client scripts run as child processes, each driven over the IPC channel with
// request/answer messages. A child exits on its own when the channel closes (the driver died).
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { Session } from 'node:inspector/promises';
import v8 from 'node:v8';

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export const wallNow = (): number => performance.timeOrigin + performance.now();

interface Request {
  id: number;
  cmd: string;
  args?: unknown;
}
interface Answer {
  id: number;
  result?: unknown;
  error?: string;
}

export interface Child<Info = unknown> {
  pid: number;
  /** What the child said when it became ready (its port, ...). */
  info: Info;
  /** Sends a command and resolves with the child's answer (rejects if it fails or exits). */
  request<T>(cmd: string, args?: unknown, timeoutMs?: number): Promise<T>;
  /** Ends the child: the `stop` command, then SIGKILL after `graceMs`. Idempotent. */
  stop(graceMs?: number): Promise<void>;
  kill(): void;
}

/** Every child still running, so that a hard timeout (or the driver's exit) can kill them. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * The hard timeout's last resort: SIGTERM to every child (a server then removes its data),
 * SIGKILL to those still there after `graceMs`.
 */
export async function killAll(graceMs = 8000): Promise<void> {
  const children = [...running];
  const exited = children.map(
    (child) => new Promise<void>((resolve) => child.once('exit', () => resolve())),
  );
  for (const child of children) child.kill('SIGTERM');
  const timer = setTimeout(() => {
    for (const child of children) child.kill('SIGKILL');
  }, graceMs);
  await Promise.all(exited);
  clearTimeout(timer);
}

/** Starts `file` (TypeScript, through tsx) with an IPC channel; resolves once it says ready. */
export async function launch<Info = unknown>(
  file: string,
  env: Record<string, string>,
  execArgv: string[] = [],
): Promise<Child<Info>> {
  const child = fork(file, [], {
    execArgv: [...execArgv, '--import', 'tsx'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  // The driver's stdout carries only its JSON line: whatever a child prints goes to stderr.
  child.stdout?.pipe(process.stderr);
  running.add(child);
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      running.delete(child);
      resolve();
    });
  });
  let nextId = 1;
  const pending = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (e: Error) => void }
  >();
  // Id 0 is the child's unsolicited `ready` message.
  const ready = new Promise<Info>((resolve, reject) => {
    pending.set(0, { resolve: (value) => resolve(value as Info), reject });
  });
  ready.catch(() => undefined); // raced against a timeout below
  child.on('message', (message: Answer) => {
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.error !== undefined) waiter.reject(new Error(message.error));
    else waiter.resolve(message.result);
  });
  void exit.then(() => {
    for (const waiter of pending.values()) {
      waiter.reject(new Error(`${file}: child exited (code ${child.exitCode})`));
    }
    pending.clear();
  });

  const request = <T>(cmd: string, args?: unknown, timeoutMs = 120_000): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (exited) {
        reject(new Error(`${file}: child has exited`));
        return;
      }
      const id = nextId++;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`${file}: no answer to ${cmd} after ${timeoutMs} ms`));
      }, timeoutMs);
      pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      child.send({ id, cmd, args } satisfies Request);
    });

  let stopping: Promise<void> | null = null;
  const stop = (graceMs = 15_000) => {
    stopping ??= (async () => {
      if (exited) return;
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      request('stop', undefined, graceMs).catch(() => child.kill('SIGKILL'));
      await exit;
      clearTimeout(timer);
    })();
    return stopping;
  };

  let readyTimer: NodeJS.Timeout | undefined;
  try {
    const info = await Promise.race([
      ready,
      new Promise<never>((_resolve, reject) => {
        readyTimer = setTimeout(() => reject(new Error(`${file}: not ready after 60 s`)), 60_000);
      }),
    ]);
    return { pid: child.pid ?? -1, info, request, stop, kill: () => child.kill('SIGKILL') };
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  } finally {
    clearTimeout(readyTimer);
  }
}

/**
 * The child's side: tells the driver it is ready (with `info`), then answers its commands with
 * `handlers`. `stop` runs `stop` and exits; so does the loss of the driver (or SIGTERM).
 * `heapsnapshot` (args: a file path) writes a heap snapshot there, after gc; `profile-start`
 * and `profile-stop` (args: a file path) record a CPU profile (.cpuprofile) in between.
 */
export function serveCommands(
  info: unknown,
  handlers: Record<string, (args: unknown) => unknown>,
  stop: () => Promise<void> = () => Promise.resolve(),
): void {
  const send = (answer: Answer) => {
    if (process.connected) process.send?.(answer);
  };
  let stopping = false;
  let profiler: Session | null = null;
  const shutdown = async (code: number) => {
    if (stopping) return;
    stopping = true;
    try {
      await stop();
    } catch (error) {
      console.error(error);
      code ||= 1;
    }
    process.exit(code);
  };
  process.on('disconnect', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));
  process.on('message', (message: Request) => {
    void (async () => {
      try {
        if (message.cmd === 'profile-start') {
          profiler ??= new Session();
          profiler.connect();
          await profiler.post('Profiler.enable');
          await profiler.post('Profiler.setSamplingInterval', { interval: 100 });
          await profiler.post('Profiler.start');
          send({ id: message.id, result: true });
        } else if (message.cmd === 'profile-stop') {
          if (!profiler) throw new Error('no profile-start');
          const { profile } = await profiler.post('Profiler.stop');
          profiler.disconnect();
          fs.writeFileSync(message.args as string, JSON.stringify(profile));
          send({ id: message.id, result: message.args });
        } else if (message.cmd === 'heapsnapshot') {
          // Every server answers it: a heap snapshot (after gc) written to the path given.
          memoryAfterGc();
          send({ id: message.id, result: v8.writeHeapSnapshot(message.args as string) });
        } else if (message.cmd === 'stop') {
          send({ id: message.id, result: true });
          await shutdown(0);
        } else {
          const handler = handlers[message.cmd];
          if (!handler) throw new Error(`unknown command ${message.cmd}`);
          send({ id: message.id, result: await handler(message.args) });
        }
      } catch (error) {
        send({ id: message.id, error: error instanceof Error ? error.stack : String(error) });
      }
    })();
  });
  send({ id: 0, result: info });
}

/** process.memoryUsage() after two forced collections (the child runs with --expose-gc). */
export function memoryAfterGc(): NodeJS.MemoryUsage {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  gc();
  gc();
  return process.memoryUsage();
}
