// Latency of a webhook from an operation's completion (its commit) to the receiver, at idle,
// with Accepted and the receiver in one process so that both ends read one clock (as
// `stream-latency.ts`). Accepted runs on the durable SQLite store (a file in a temp dir,
// durability `full`) with `createWebhooks` (the loopback allow-listed) and one endpoint
// subscribed to `operation.succeeded`; the receiver is a plain `node:http` server answering
// 204. For each of K samples, one at a time: submit a `noop` operation; t0 = the commit hint
// carrying its operation.succeeded event (a store listener subscribed before the engine),
// t1 = the receiver's `end` of the request (body fully read); then wait until the attempt is
// recorded and IDLE_MS more, so the next sample starts at idle. Every signature is checked
// (after t1). The path in between: the feed hands the event to the dispatcher, which writes
// the delivery (a commit and a WAL flush), then the sender claims it (another commit and
// flush), signs it and POSTs it; `steps` times each step (this script wraps the store's
// dispatchDeliveries and claimDeliveries to see when they are durable). Env: K (samples,
// default 200), WARMUP (discarded first, default 10), IDLE_MS (default 10), TIMEOUT_S (hard
// limit, default 120). Prints one JSON line.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createAccepted, DEFAULT_TENANT, defineOperation } from '../packages/accepted/src/index.ts';
import { sqliteStore } from '../packages/accepted/src/store/sqlite/index.ts';
import { createWebhooks } from '../packages/accepted/src/webhooks/service.ts';
import { verifyWebhook } from '../packages/accepted/src/webhooks/signature.ts';
import { percentile, within } from './common.ts';

const K = Number(process.env.K ?? 200);
const WARMUP = Number(process.env.WARMUP ?? 10);
const IDLE_MS = Number(process.env.IDLE_MS ?? 10);
const TIMEOUT_S = Number(process.env.TIMEOUT_S ?? 120);
const STEP_TIMEOUT_MS = 10_000;

const hardTimeout = setTimeout(() => {
  console.error(`[webhook-latency] hard timeout after ${TIMEOUT_S} s`);
  process.exit(2);
}, TIMEOUT_S * 1000);
hardTimeout.unref();

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-webhook-latency-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true })); // hard timeout too
const store = sqliteStore({ filename: path.join(dir, 'accepted.db') });
/** performance.now() of each operation's operation.succeeded commit. */
const committed = new Map<string, number>();
// Subscribed before the engine and the webhooks: runs first on every hint.
const unsubscribe = store.subscribe((hint) => {
  const now = performance.now();
  for (const event of hint.events ?? []) {
    if (event.type === 'operation.succeeded') committed.set(event.operationId, now);
  }
});
const logger = { debug() {}, info() {}, warn: console.warn, error: console.error };
const accepted = createAccepted({
  store,
  operations: [defineOperation({ type: 'noop', handler: () => ({ ok: true }) })],
  logger,
});
const webhooks = createWebhooks({ accepted, allow: ['127.0.0.0/8'], timeoutMs: 5000, logger });
const stats = (store as unknown as { stats: { flushes: number; syncs: number } }).stats;

// The breakdown: when the delivery's dispatch and its claim were durable (their promises
// resolved), seen by wrapping the store's two webhook methods here (the store itself is
// unchanged).
/** performance.now() of the last dispatch that made a delivery, and of each op's claim. */
let dispatchedAt = 0;
const claimedAt = new Map<string, number>();
const hooks = store.webhooks;
if (!hooks) throw new Error('the SQLite store offers webhooks');
const dispatchDeliveries = hooks.dispatchDeliveries.bind(hooks);
const claimDeliveries = hooks.claimDeliveries.bind(hooks);
Object.assign(hooks, {
  dispatchDeliveries: async (...args: Parameters<typeof dispatchDeliveries>) => {
    const made = await dispatchDeliveries(...args);
    if (made.deliveries > 0) dispatchedAt = performance.now();
    return made;
  },
  claimDeliveries: async (...args: Parameters<typeof claimDeliveries>) => {
    const claimed = await claimDeliveries(...args);
    const now = performance.now();
    for (const { delivery } of claimed) claimedAt.set(delivery.operationId, now);
    return claimed;
  },
});

/** Per operation: the receiver's t1, when its delivery had been read in full. */
const arrivals = new Map<string, number>();
let onArrival: (() => void) | null = null;
let secret = '';
let verifyFailures = 0;
const receiver = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const t1 = performance.now();
    res.writeHead(204).end();
    const body = Buffer.concat(chunks);
    try {
      const payload = verifyWebhook(secret, req.headers, body);
      const operationId = (payload.data as { operationId?: string } | undefined)?.operationId;
      if (operationId !== undefined) {
        arrivals.set(operationId, t1);
        onArrival?.();
      }
    } catch (error) {
      verifyFailures++;
      console.error('[webhook-latency] signature:', error);
    }
  });
});

try {
  await accepted.start();
  await new Promise<void>((resolve, reject) => {
    receiver.once('error', reject);
    receiver.listen(0, '127.0.0.1', resolve);
  });
  const address = receiver.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  const created = await webhooks.createEndpoint(DEFAULT_TENANT, {
    url: `http://127.0.0.1:${address.port}/hooks`,
    eventTypes: ['operation.succeeded'],
  });
  secret = created.secret;
  webhooks.start();

  const latencies: number[] = [];
  const toDispatched: number[] = [];
  const toClaimed: number[] = [];
  const toReceived: number[] = [];
  const before = { ...stats };
  for (let i = 0; i < WARMUP + K; i++) {
    const op = await accepted.submit('noop', { i });
    const t1 = await within(
      new Promise<number>((resolve) => {
        const check = () => {
          const t = arrivals.get(op.id);
          if (t === undefined) return;
          onArrival = null;
          resolve(t);
        };
        onArrival = check;
        check();
      }),
      STEP_TIMEOUT_MS,
      `sample ${i}: delivery`,
    );
    arrivals.delete(op.id);
    const t0 = committed.get(op.id);
    if (t0 === undefined) throw new Error(`no commit hint with operation.succeeded for ${op.id}`);
    committed.delete(op.id);
    const claimed = claimedAt.get(op.id);
    claimedAt.delete(op.id);
    await within(
      (async () => {
        while (webhooks.stats.delivered + webhooks.stats.failed < i + 1) await sleep(1);
      })(),
      STEP_TIMEOUT_MS,
      `sample ${i}: recording the attempt`,
    );
    await sleep(IDLE_MS);
    if (i === WARMUP - 1) Object.assign(before, stats);
    if (i < WARMUP) continue;
    latencies.push(t1 - t0);
    if (claimed !== undefined && dispatchedAt >= t0 && dispatchedAt <= claimed) {
      toDispatched.push(dispatchedAt - t0);
      toClaimed.push(claimed - dispatchedAt);
      toReceived.push(t1 - claimed);
    }
  }
  for (const list of [latencies, toDispatched, toClaimed, toReceived]) list.sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      bench: 'webhook-latency',
      store: 'sqlite-full',
      K,
      p50_ms: percentile(latencies, 0.5),
      p99_ms: percentile(latencies, 0.99),
      max_ms: percentile(latencies, 1),
      min_ms: percentile(latencies, 0),
      // Each step's own percentiles (they do not add up to the total's).
      steps: {
        samples: toDispatched.length,
        commit_to_dispatched_p50_ms: percentile(toDispatched, 0.5),
        commit_to_dispatched_p99_ms: percentile(toDispatched, 0.99),
        dispatched_to_claimed_p50_ms: percentile(toClaimed, 0.5),
        dispatched_to_claimed_p99_ms: percentile(toClaimed, 0.99),
        claimed_to_received_p50_ms: percentile(toReceived, 0.5),
        claimed_to_received_p99_ms: percentile(toReceived, 0.99),
      },
      commits_per_sample: Number(((stats.flushes - before.flushes) / K).toFixed(2)),
      syncs_per_sample: Number(((stats.syncs - before.syncs) / K).toFixed(2)),
      verify_failures: verifyFailures,
      failed_attempts: webhooks.stats.attempts - webhooks.stats.delivered,
    }),
  );
} finally {
  unsubscribe();
  await webhooks.stop(1000);
  // stop() does not wait for a claim loop under way, whose last step reads the store: give it
  // a moment before the store closes (else it logs "The store is not open").
  await new Promise((resolve) => setTimeout(resolve, 50));
  receiver.closeAllConnections();
  await new Promise<void>((resolve) => receiver.close(() => resolve()));
  await accepted.stop({ graceful: false });
}
