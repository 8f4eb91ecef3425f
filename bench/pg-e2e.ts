// End-to-end throughput of no-op operations through the library on PostgreSQL, one node: the
// pattern of e2e-inprocess.ts and of the peers (N submitted one by one, C in flight, worker
// concurrency C); the clock stops when the last operation.succeeded has been read from the log.
// Prints one JSON line.
import { createAccepted, defineOperation } from '../packages/accepted/src/index.ts';
import { PostgresStore } from '../packages/accepted/src/store/postgres/index.ts';
import { PG_URL, benchSchema, dropSchema, percentile, quiet } from './pg-common.ts';

const N = Number(process.env.N ?? 20_000);
const C = Number(process.env.C ?? 64);

const schema = benchSchema();
const store = new PostgresStore({ url: PG_URL, schema });
const accepted = createAccepted({
  store,
  operations: [defineOperation({ type: 'noop', handler: () => ({ ok: true }) })],
  concurrency: C,
  logger: quiet,
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
    store: 'postgres',
    N,
    submit_per_s: Math.round(N / ((tSubmit - t0) / 1000)),
    e2e_per_s: Math.round(N / ((t1 - t0) / 1000)),
    p50_ms: percentile(latencies, 0.5),
    p99_ms: percentile(latencies, 0.99),
    commands_per_transaction: Number((store.stats.commands / store.stats.flushes).toFixed(1)),
  }),
);
await accepted.stop();
await dropSchema(schema);
