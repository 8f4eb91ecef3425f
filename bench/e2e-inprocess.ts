// End-to-end throughput of no-op operations through the library on the durable SQLite store:
// N submitted one by one with C in flight, worker concurrency C; the clock stops when the
// last operation.succeeded event has been read from the log. Prints one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createAccepted, defineOperation } from '../packages/accepted/src/index.ts';
import { sqliteStore } from '../packages/accepted/src/store/sqlite/index.ts';
import { e2eLoad } from './e2e-load.ts';

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

const figures = await e2eLoad(accepted, N, C);
console.log(
  JSON.stringify({ system: 'accepted-inprocess', store: `sqlite-${durability}`, ...figures }),
);
const stats = (accepted.store as unknown as { stats?: { flushes: number; commands: number } })
  .stats;
if (process.env.STATS) console.error(stats);
await accepted.stop();
fs.rmSync(dir, { recursive: true, force: true });
