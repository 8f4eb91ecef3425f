// Does cost grow as the work grows, not faster? The workload of e2e-inprocess.ts (N no-op
// operations, 64 submitters, worker concurrency 64, durable SQLite store) on a store that
// already holds KEPT operations of one KIND:
//   finished: succeeded within the retention window (7 days, the default), so they stay:
//             their rows, their three events each, every index entry;
//   delayed:  queued with `runAt` tomorrow, so the claim index holds them all.
// KEPT=0 is the empty store, measured by the same code. The filled database is made once
// through the store's own API (durability `normal` while filling, the runs use `full`) and
// kept in .cache/bench-kept/, each run working on a copy. Prints one JSON line.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createAccepted, defineOperation } from '../packages/accepted/src/index.ts';
import { DEFAULT_TENANT } from '../packages/accepted/src/engine/accepted.ts';
import { newOp } from '../packages/accepted/src/store/conformance.ts';
import { sqliteStore } from '../packages/accepted/src/store/sqlite/index.ts';
import { e2eLoad } from './e2e-load.ts';

const N = Number(process.env.N ?? 20_000);
const C = Number(process.env.C ?? 64);
const KEPT = Number(process.env.KEPT ?? 0);
const KIND = process.env.KIND === 'delayed' ? 'delayed' : 'finished';

const cacheDir = path.resolve('.cache/bench-kept');

/** Makes (once) and returns the path of a database holding KEPT operations of KIND. */
async function filled(): Promise<string> {
  const file = path.join(cacheDir, `${KIND}-${KEPT}.db`);
  if (fs.existsSync(file)) return file;
  fs.mkdirSync(cacheDir, { recursive: true });
  const partial = `${file}.partial`;
  fs.rmSync(partial, { force: true });
  const store = sqliteStore({ filename: partial, durability: 'normal' });
  await store.open();
  const now = Date.now();
  const tomorrow = now + 86_400_000;
  const BATCH = 2_000;
  for (let done = 0; done < KEPT; done += BATCH) {
    const count = Math.min(BATCH, KEPT - done);
    await Promise.all(
      Array.from({ length: count }, (_, i) =>
        store.create(
          newOp({
            tenant: DEFAULT_TENANT,
            type: 'noop',
            input: { i: done + i },
            runAt: KIND === 'delayed' ? tomorrow : now - 1,
            maxAttempts: 3,
          }),
          now - 1,
        ),
      ),
    );
    if (KIND === 'finished') {
      const { claimed } = await store.claim({
        owner: 'fill',
        types: null,
        limit: count,
        leaseMs: 60_000,
        now,
      });
      await Promise.all(claimed.map(({ lease }) => store.complete(lease, { ok: true }, now)));
    }
  }
  await store.close();
  for (const suffix of ['-wal', '-shm']) fs.rmSync(`${partial}${suffix}`, { force: true });
  fs.renameSync(partial, file);
  return file;
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-bench-'));
const filename = path.join(dir, 'accepted.db');
if (KEPT > 0) fs.copyFileSync(await filled(), filename);
const accepted = createAccepted({
  store: sqliteStore({ filename }),
  operations: [defineOperation({ type: 'noop', handler: () => ({ ok: true }) })],
  concurrency: C,
  logger: { debug() {}, info() {}, warn: console.warn, error: console.error },
});
await accepted.start();
const figures = await e2eLoad(accepted, N, C);
const size = fs.statSync(filename).size;
console.log(
  JSON.stringify({
    system: 'accepted-kept',
    store: 'sqlite-full',
    kind: KIND,
    kept: KEPT,
    db_mb: Math.round(size / 2 ** 20),
    ...figures,
  }),
);
await accepted.stop();
fs.rmSync(dir, { recursive: true, force: true });
