// End-to-end throughput of no-op operations through the library on the durable SQLite store:
// N submitted one by one with C in flight, worker concurrency C; the clock stops when the
// last operation.succeeded event has been read from the log. Prints one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createAccepted, defineOperation } from '../packages/accepted/src/index.ts';
import { sqliteStore } from '../packages/accepted/src/store/sqlite/index.ts';

const N = Number(process.env.N ?? 20_000);
const C = Number(process.env.C ?? 64);
const durability = process.env.DURABILITY === 'normal' ? 'normal' : 'full';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-bench-'));
const accepted = createAccepted({
  store: sqliteStore({ filename: path.join(dir, 'accepted.db'), durability }),
  operations: [defineOperation({ type: 'noop', handler: () => ({ ok: true }) })],
  concurrency: C,
  logger: { debug() {}, info() {}, warn: console.warn, error: console.error },
});
await accepted.start();

const created = new Map<string, number>();
const latencies: number[] = [];
let done = 0;
const controller = new AbortController();
const finished = (async () => {
  for await (const event of accepted.events({
    types: ['operation.succeeded'],
    signal: controller.signal,
    after: await accepted.store.lastSeq(),
  })) {
    const t = created.get(event.operationId);
    if (t !== undefined) latencies.push(event.time - t);
    if (++done === N) return;
  }
})();

const t0 = performance.now();
let next = 0;
async function submitter() {
  while (next < N) {
    const i = next++;
    const op = await accepted.submit('noop', { i });
    created.set(op.id, op.createdAt);
  }
}
await Promise.all(Array.from({ length: C }, submitter));
const tSubmit = performance.now();
await finished;
const t1 = performance.now();
controller.abort();
latencies.sort((a, b) => a - b);
console.log(
  JSON.stringify({
    system: 'accepted-inprocess',
    store: `sqlite-${durability}`,
    N,
    submit_per_s: Math.round(N / ((tSubmit - t0) / 1000)),
    e2e_per_s: Math.round(N / ((t1 - t0) / 1000)),
    p50_ms: latencies[N >> 1],
    p99_ms: latencies[Math.floor(N * 0.99)],
  }),
);
const stats = (accepted.store as unknown as { stats?: { flushes: number; commands: number } })
  .stats;
if (process.env.STATS) console.error(stats);
await accepted.stop();
fs.rmSync(dir, { recursive: true, force: true });
