// End-to-end throughput the way users write it in-process: the workload of e2e-inprocess.ts
// (N no-op operations, 64 submitters, worker concurrency 64, durable SQLite store), with each
// result awaited with `accepted.wait(id)` instead of read from the log. PENDING caps the
// waits outstanding at once (a submitter waits for a slot before it submits): run it at 1,000,
// 10,000 and 100,000 to see whether an event costs more as waits grow. Prints one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createAccepted, defineOperation } from '../packages/accepted/src/index.ts';
import { sqliteStore } from '../packages/accepted/src/store/sqlite/index.ts';

const PENDING = Number(process.env.PENDING ?? 1_000);
const N = Number(process.env.N ?? Math.max(20_000, PENDING));
const C = Number(process.env.C ?? 64);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-bench-'));
const accepted = createAccepted({
  store: sqliteStore({ filename: path.join(dir, 'accepted.db') }),
  operations: [defineOperation({ type: 'noop', handler: () => ({ ok: true }) })],
  concurrency: C,
  logger: { debug() {}, info() {}, warn: console.warn, error: console.error },
});
let warnings = 0;
process.on('warning', () => warnings++);
await accepted.start();

const latencies: number[] = [];
const waits: Promise<void>[] = [];
let pending = 0;
let maxPending = 0;
/** Submitters parked for a free slot (pending at the cap). */
const slots: (() => void)[] = [];
let next = 0;
const t0 = performance.now();
async function submitter() {
  while (next < N) {
    const i = next++;
    while (pending >= PENDING) await new Promise<void>((resolve) => slots.push(resolve));
    pending++;
    maxPending = Math.max(maxPending, pending);
    const op = await accepted.submit('noop', { i });
    waits.push(
      accepted.wait(op.id).then((done) => {
        if (done.status !== 'succeeded') throw new Error(`${op.id} ended ${done.status}`);
        latencies.push(done.updatedAt - op.createdAt);
        pending--;
        slots.shift()?.();
      }),
    );
  }
}
await Promise.all(Array.from({ length: C }, submitter));
const tSubmit = performance.now();
await Promise.all(waits);
const t1 = performance.now();
latencies.sort((a, b) => a - b);
console.log(
  JSON.stringify({
    system: 'accepted-wait',
    store: 'sqlite-full',
    N,
    pending_cap: PENDING,
    max_pending: maxPending,
    submit_per_s: Math.round(N / ((tSubmit - t0) / 1000)),
    e2e_per_s: Math.round(N / ((t1 - t0) / 1000)),
    p50_ms: latencies[N >> 1],
    p99_ms: latencies[Math.floor(N * 0.99)],
    warnings,
  }),
);
await accepted.stop();
fs.rmSync(dir, { recursive: true, force: true });
