// End-to-end throughput the way users write it in-process: the workload of e2e-inprocess.ts
// (N no-op operations, 64 submitters, worker concurrency 64, durable SQLite store), with each
// result awaited with `accepted.wait(id)` instead of read from the log, while PARKED other
// waits are pending all along: waits on operations scheduled for tomorrow (`runAt`), made
// before the clock starts. Run it with 1,000, 10,000 and 100,000 parked waits: if an event
// costs more as waits grow, the figure falls. Prints one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createAccepted, defineOperation } from '../packages/accepted/src/index.ts';
import { sqliteStore } from '../packages/accepted/src/store/sqlite/index.ts';

const PARKED = Number(process.env.PARKED ?? 1_000);
const N = Number(process.env.N ?? 20_000);
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

// The parked waits: operations due tomorrow, each awaited; none ends during the run.
const tomorrow = Date.now() + 86_400_000;
const parked = new AbortController();
const parkedWaits: Promise<unknown>[] = [];
let made = 0;
await Promise.all(
  Array.from({ length: C }, async () => {
    while (made < PARKED) {
      made++;
      const op = await accepted.submit('noop', { parked: true }, { runAt: tomorrow });
      parkedWaits.push(accepted.wait(op.id, { signal: parked.signal }).catch(() => undefined));
    }
  }),
);
// Every parked wait has read its operation once and is parked on the feed.
await new Promise((resolve) => setTimeout(resolve, 200));
const waitingBefore = accepted.waiting;

const latencies: number[] = [];
const waits: Promise<void>[] = [];
let next = 0;
const t0 = performance.now();
async function submitter() {
  while (next < N) {
    next++;
    const op = await accepted.submit('noop', { i: next });
    waits.push(
      accepted.wait(op.id).then((done) => {
        if (done.status !== 'succeeded') throw new Error(`${op.id} ended ${done.status}`);
        latencies.push(done.updatedAt - op.createdAt);
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
    parked: PARKED,
    waiting_at_start: waitingBefore,
    submit_per_s: Math.round(N / ((tSubmit - t0) / 1000)),
    e2e_per_s: Math.round(N / ((t1 - t0) / 1000)),
    p50_ms: latencies[N >> 1],
    p99_ms: latencies[Math.floor(N * 0.99)],
    warnings,
  }),
);
parked.abort();
await Promise.all(parkedWaits);
await accepted.stop();
fs.rmSync(dir, { recursive: true, force: true });
