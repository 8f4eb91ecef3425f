// End-to-end throughput of no-op operations through the library on PostgreSQL, one node: the
// pattern of e2e-inprocess.ts and of the peers (N submitted one by one, C in flight, worker
// concurrency C); the clock stops when the last operation.succeeded has been read from the log.
// Prints one JSON line.
import { createAccepted, defineOperation } from '../packages/accepted/src/index.ts';
import { PostgresStore } from '../packages/accepted/src/store/postgres/index.ts';
import { e2eLoad } from './e2e-load.ts';
import { PG_URL, benchSchema, dropSchema, quiet } from './pg-common.ts';

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

const figures = await e2eLoad(accepted, N, C);
console.log(
  JSON.stringify({
    system: 'accepted-inprocess',
    store: 'postgres',
    ...figures,
    commands_per_transaction: Number((store.stats.commands / store.stats.flushes).toFixed(1)),
  }),
);
await accepted.stop();
await dropSchema(schema);
