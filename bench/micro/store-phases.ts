// Times each store phase alone (create, claim, complete) on the SQLite adapter, to see which
// statements bound the end-to-end figure. Diagnostic: not part of `npm run bench`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { newOperationId } from '../../packages/accepted/src/domain/ids.ts';
import { SqliteStore } from '../../packages/accepted/src/store/sqlite/sqlite-store.ts';

const N = Number(process.env.N ?? 20_000);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-phases-'));
const store = new SqliteStore({ filename: path.join(dir, 'a.db') });
await store.open();
const base = {
  tenant: 'default',
  type: 'noop',
  maxAttempts: 3,
  timeoutMs: null,
  labels: {},
  callbackUrl: null,
};
let t = performance.now();
for (let i = 0; i < N; i += 64) {
  const now = Date.now();
  await Promise.all(
    Array.from({ length: 64 }, (_, j) =>
      store.create({ ...base, id: newOperationId(), input: { i: i + j }, runAt: now }, now),
    ),
  );
}
const create = performance.now() - t;
t = performance.now();
const leases = [];
for (;;) {
  const { claimed } = await store.claim({
    owner: 'w',
    types: ['noop'],
    limit: 64,
    leaseMs: 30_000,
    now: Date.now(),
  });
  if (claimed.length === 0) break;
  leases.push(...claimed.map((c) => c.lease));
}
const claim = performance.now() - t;
t = performance.now();
for (let i = 0; i < leases.length; i += 64) {
  await Promise.all(
    leases.slice(i, i + 64).map((l) => store.complete(l, { ok: true }, Date.now())),
  );
}
const complete = performance.now() - t;
console.log(
  JSON.stringify({
    N,
    us_per_create: ((create / N) * 1000).toFixed(1),
    us_per_claim: ((claim / N) * 1000).toFixed(1),
    us_per_complete: ((complete / N) * 1000).toFixed(1),
    stats: store.stats,
  }),
);
await store.close();
fs.rmSync(dir, { recursive: true, force: true });
