import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Store } from '../src/store/store.ts';

/** Where a paused read stands: reached the store, and the function that lets it go on. */
export interface PausedRead {
  /** Resolves when a caller asks the store for the operation (the read has not run yet). */
  reached: Promise<void>;
  /** Lets the read run. */
  release: () => void;
}

/**
 * A real store whose next read of one operation (`get` or `snapshot`) waits until the test
 * lets it go: a pause between whatever the caller read before and this read (`pause`), or
 * between this read and whatever the caller reads next (`pauseAfter`: the answer is held), in
 * which the test may change the operation. Every answer is the real store's; only the timing
 * is the test's. `reads` counts the reads of each operation id (for "all of them are parked"
 * conditions).
 */
export function gatedStore(store: Store): {
  store: Store;
  pause: (operationId: string) => PausedRead;
  pauseAfter: (operationId: string) => PausedRead;
  reads: Map<string, number>;
} {
  let gate: { id: string; after: boolean; reached: () => void; open: Promise<void> } | null = null;
  const reads = new Map<string, number>();
  const gated = new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      const method = value as (...args: unknown[]) => unknown;
      if (property !== 'get' && property !== 'snapshot') return method.bind(target);
      return async (id: string, ...rest: unknown[]) => {
        reads.set(id, (reads.get(id) ?? 0) + 1);
        const current = gate?.id === id ? gate : null;
        if (current) gate = null;
        if (current && !current.after) {
          current.reached();
          await current.open;
        }
        const answer = await method.call(target, id, ...rest);
        if (current?.after) {
          current.reached();
          await current.open;
        }
        return answer;
      };
    },
  });
  return {
    store: gated,
    reads,
    pause: (operationId) => arm(operationId, false),
    pauseAfter: (operationId) => arm(operationId, true),
  };

  function arm(id: string, after: boolean): PausedRead {
    let reached!: () => void;
    let release!: () => void;
    const reachedPromise = new Promise<void>((resolve) => (reached = resolve));
    const open = new Promise<void>((resolve) => (release = resolve));
    gate = { id, after, reached, open };
    return { reached: reachedPromise, release };
  }
}

/**
 * A slow disk, for real: every thread of libuv's pool is held in an `open()` of a FIFO that
 * no one writes to, so the SQLite store's WAL flush (an `fdatasync` on that pool) waits
 * behind them. Meanwhile commits are made (readable by `get`) but not durable, exactly the
 * window between a commit and its flush. `resume()` lets the flushes run.
 * POSIX only (mkfifo).
 */
export function stallDisk(dir: string): { resume: () => Promise<void> } {
  const threads = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  const fifos: string[] = [];
  const opens: Promise<fs.promises.FileHandle>[] = [];
  for (let i = 0; i < threads; i++) {
    const fifo = path.join(dir, `stall-${process.pid}-${Date.now()}-${i}`);
    execFileSync('mkfifo', [fifo]);
    fifos.push(fifo);
    opens.push(fs.promises.open(fifo, 'r'));
  }
  let resumed: Promise<void> | null = null;
  const resume = async () => {
    for (const fifo of fifos) {
      // A writer that opens without blocking lets the blocked reader's open return. It fails
      // (ENXIO) until the reader's open has reached the kernel: try again on the next turn.
      for (;;) {
        try {
          fs.closeSync(fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
          break;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENXIO') throw error;
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
    }
    for (const handle of await Promise.all(opens)) await handle.close();
    for (const fifo of fifos) fs.rmSync(fifo, { force: true });
  };
  return {
    resume: () => (resumed ??= resume()),
  };
}
