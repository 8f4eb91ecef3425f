// Idle pick-up latency on PostgreSQL: one operation at a time on an idle system, from just
// before submit() to the start of its handler. `local`: the node that submits runs it (the
// store's own hint wakes the worker). `remote`: an API-only node submits and another node
// (another store, another connection) runs it, woken by LISTEN/NOTIFY. Safety polls are set
// to 10 s so that they cannot be what wakes the worker. Prints one JSON line.
import { createAccepted, defineOperation, type Accepted } from '../packages/accepted/src/index.ts';
import { PostgresStore } from '../packages/accepted/src/store/postgres/index.ts';
import { percentile } from './common.ts';
import { PG_URL, benchSchema, dropSchema, quiet } from './pg-common.ts';

const SAMPLES = Number(process.env.SAMPLES ?? 300);
const GAP_MS = Number(process.env.GAP_MS ?? 20);

const schema = benchSchema();
let started: ((at: number) => void) | null = null;
const handler = defineOperation({
  type: 'noop',
  handler: () => {
    started?.(performance.now());
    return null;
  },
});
const engine = (worker: boolean): Accepted =>
  createAccepted({
    store: new PostgresStore({ url: PG_URL, schema }),
    operations: [handler],
    worker,
    pollIntervalMs: 10_000,
    logger: quiet,
  });
const worker = engine(true);
await worker.start();
const api = engine(false);
await api.start();

async function measure(submitter: Accepted): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    await new Promise((resolve) => setTimeout(resolve, GAP_MS));
    const begin = performance.now();
    const at = new Promise<number>((resolve) => (started = resolve));
    await submitter.submit('noop', null);
    out.push((await at) - begin);
  }
  return out.sort((a, b) => a - b);
}
// Warm up connections and prepared statements.
for (let i = 0; i < 20; i++) {
  const at = new Promise<number>((resolve) => (started = resolve));
  await worker.submit('noop', null);
  await at;
}
const local = await measure(worker);
const remote = await measure(api);
console.log(
  JSON.stringify({
    system: 'accepted-pickup',
    store: 'postgres',
    samples: SAMPLES,
    local_p50_ms: percentile(local, 0.5),
    local_p99_ms: percentile(local, 0.99),
    local_max_ms: percentile(local, 1),
    remote_p50_ms: percentile(remote, 0.5),
    remote_p99_ms: percentile(remote, 0.99),
    remote_max_ms: percentile(remote, 1),
  }),
);
await api.stop();
await worker.stop();
await dropSchema(schema);
