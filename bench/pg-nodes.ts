// End-to-end throughput with NODES processes (default 3) on one PostgreSQL schema: the same
// pattern as pg-e2e.ts (N no-op operations submitted one by one, C in flight in all), the
// submits spread over the nodes, each node a worker. A node counts the operation.succeeded
// events of the operations it submitted, wherever they ran. The clock runs from the first
// submit to the last node done. Prints one JSON line.
import { spawn } from 'node:child_process';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createAccepted, defineOperation } from '../packages/accepted/src/index.ts';
import { PostgresStore } from '../packages/accepted/src/store/postgres/index.ts';
import { PG_URL, benchSchema, dropSchema, quiet } from './pg-common.ts';

const N = Number(process.env.N ?? 20_000);
const C = Number(process.env.C ?? 64);
const NODES = Number(process.env.NODES ?? 3);

async function node(schema: string, share: number, inFlight: number): Promise<void> {
  const store = new PostgresStore({ url: PG_URL, schema });
  const accepted = createAccepted({
    store,
    operations: [defineOperation({ type: 'noop', handler: () => ({ ok: true }) })],
    concurrency: C,
    logger: quiet,
  });
  await accepted.start();
  const mine = new Set<string>();
  let done = 0;
  const controller = new AbortController();
  let resolveDone!: () => void;
  const allDone = new Promise<void>((resolve) => (resolveDone = resolve));
  const early = new Set<string>();
  void (async () => {
    for await (const event of accepted.events({
      types: ['operation.succeeded'],
      signal: controller.signal,
      after: await accepted.store.lastSeq(),
    })) {
      if (mine.has(event.operationId)) {
        if (++done === share) resolveDone();
      } else early.add(event.operationId);
    }
  })().catch(() => {});
  console.log('ready');
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
  const t0 = Date.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < share) {
        next++;
        const op = await accepted.submit('noop', null);
        mine.add(op.id);
        // Finished (elsewhere) before submit returned here.
        if (early.delete(op.id) && ++done === share) resolveDone();
      }
    }),
  );
  await allDone;
  const t1 = Date.now();
  controller.abort();
  console.log(JSON.stringify({ t0, t1, ...store.stats }));
  await accepted.stop();
}

if (process.env.PG_NODE_SCHEMA) {
  await node(
    process.env.PG_NODE_SCHEMA,
    Number(process.env.PG_NODE_SHARE),
    Number(process.env.PG_NODE_INFLIGHT),
  );
  process.exit(0);
}

const schema = benchSchema();
// Migrate once before the nodes start.
const setup = new PostgresStore({ url: PG_URL, schema });
await setup.open();
await setup.close();
const children = Array.from({ length: NODES }, (_, i) => {
  const share = Math.floor(N / NODES) + (i < N % NODES ? 1 : 0);
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], {
    env: {
      ...process.env,
      PG_NODE_SCHEMA: schema,
      PG_NODE_SHARE: String(share),
      PG_NODE_INFLIGHT: String(Math.max(1, Math.round(C / NODES))),
    },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = readline.createInterface({ input: child.stdout });
  const ready = new Promise<void>((resolve) =>
    lines.on('line', (line) => {
      if (line === 'ready') resolve();
    }),
  );
  const result = new Promise<{ t0: number; t1: number; flushes: number; commands: number }>(
    (resolve, reject) => {
      lines.on('line', (line) => {
        if (line.startsWith('{')) resolve(JSON.parse(line) as never);
      });
      child.on('exit', (code) => reject(new Error(`node exited with ${code}`)));
    },
  );
  return { child, ready, result };
});
await Promise.all(children.map((c) => c.ready));
for (const c of children) c.child.stdin.write('go\n');
const results = await Promise.all(children.map((c) => c.result));
const t0 = Math.min(...results.map((r) => r.t0));
const t1 = Math.max(...results.map((r) => r.t1));
const flushes = results.reduce((s, r) => s + r.flushes, 0);
const commands = results.reduce((s, r) => s + r.commands, 0);
console.log(
  JSON.stringify({
    system: 'accepted-nodes',
    store: 'postgres',
    nodes: NODES,
    N,
    e2e_per_s: Math.round(N / ((t1 - t0) / 1000)),
    commands_per_transaction: Number((commands / flushes).toFixed(1)),
  }),
);
await dropSchema(schema);
