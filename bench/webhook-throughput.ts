// Throughput of signed webhook deliveries to a loopback receiver. The receiver is a plain
// `node:http` server in a child process of its own (`webhook-receiver.ts`: 204 at once, every
// 100th signature checked with `verifyWebhook`, counts); this process runs Accepted on the
// durable SQLite store (a file in a temp dir, durability `full`, operation type `noop`, worker
// concurrency C) and `createWebhooks` (the loopback allow-listed, concurrency C), with one
// endpoint subscribed to `operation.succeeded`. Two measurements, each on a fresh database:
// - drain: with webhook delivery stopped, N operations are submitted (C in flight) and all
//   succeed; then `webhooks.start()`, and the clock runs from there until the receiver has
//   counted N deliveries: dispatch (log -> deliveries) + claim + send + record alone.
// - live: webhook delivery running while N operations are submitted (C in flight) and run;
//   the clock runs from the first submit until the receiver has counted N.
// Times: t0 here and t1 in the receiver, both `performance.timeOrigin + performance.now()`.
// Env: N (default 20000), C (default 64), VERIFY_EVERY (default 100), DURABILITY (`normal`:
// no WAL flush before a write is answered), TIMEOUT_S (hard limit, default 240), CPU_PROFILE (a directory: a .cpuprofile of this process over each measured
// window). Prints one JSON line, and the store's group-commit counters on stderr.
import fs from 'node:fs';
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import path from 'node:path';
import { createAccepted, DEFAULT_TENANT, defineOperation } from '../packages/accepted/src/index.ts';
import { sqliteStore } from '../packages/accepted/src/store/sqlite/index.ts';
import { createWebhooks } from '../packages/accepted/src/webhooks/service.ts';
import { within } from './common.ts';
import { killAll, wallNow } from './fanout-ipc.ts';
import { launchReceiver, type Counters, type Receiver } from './webhook-common.ts';

const N = Number(process.env.N ?? 20_000);
const C = Number(process.env.C ?? 64);
const VERIFY_EVERY = Number(process.env.VERIFY_EVERY ?? 100);
const TIMEOUT_S = Number(process.env.TIMEOUT_S ?? 240);
const PHASE_TIMEOUT_MS = 120_000;
const CPU_PROFILE = process.env.CPU_PROFILE;
const durability = process.env.DURABILITY === 'normal' ? 'normal' : 'full';

const hardTimeout = setTimeout(() => {
  console.error(`[webhook-throughput] hard timeout after ${TIMEOUT_S} s`);
  void killAll(2000).finally(() => process.exit(2));
}, TIMEOUT_S * 1000);
hardTimeout.unref();

const dirs: string[] = [];
process.on('exit', () => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

type Mode = 'drain' | 'live';
interface GroupCommit {
  flushes: number;
  commands: number;
  syncs: number;
  checkpoints: number;
}
interface PhaseResult {
  perS: number;
  ms: number;
  /** Until every delivery was recorded as delivered (after the receiver's count). */
  recordedMs: number;
  counters: Counters;
  attempts: number;
  delivered: number;
  failedAttempts: number;
  /** Group-commit counters over the measured window. */
  store: GroupCommit;
}

async function startProfile(): Promise<Session | null> {
  if (!CPU_PROFILE) return null;
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 });
  await session.post('Profiler.start');
  return session;
}

async function stopProfile(session: Session | null, mode: Mode): Promise<void> {
  if (!session || !CPU_PROFILE) return;
  const { profile } = await session.post('Profiler.stop');
  session.disconnect();
  fs.mkdirSync(CPU_PROFILE, { recursive: true });
  const file = path.join(CPU_PROFILE, `webhook-${mode}-${Date.now()}.cpuprofile`);
  fs.writeFileSync(file, JSON.stringify(profile));
  console.error(`[webhook-throughput] ${mode}: profile in ${file}`);
}

async function phase(mode: Mode, receiver: Receiver): Promise<PhaseResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `accepted-webhook-${mode}-`));
  dirs.push(dir);
  const store = sqliteStore({ filename: path.join(dir, 'accepted.db'), durability });
  const accepted = createAccepted({
    store,
    operations: [defineOperation({ type: 'noop', handler: () => ({ ok: true }) })],
    concurrency: C,
    logger: { debug() {}, info() {}, warn: console.warn, error: console.error },
  });
  const webhooks = createWebhooks({
    accepted,
    allow: ['127.0.0.0/8'],
    timeoutMs: 10_000,
    concurrency: C,
    logger: { debug() {}, info() {}, warn: console.warn, error: console.error },
  });
  const stats = (store as unknown as { stats: GroupCommit }).stats;
  let succeeded = 0;
  let allSucceeded!: () => void;
  const done = new Promise<void>((resolve) => (allSucceeded = resolve));
  const untail = accepted.tail((event) => {
    if (event.type === 'operation.succeeded' && ++succeeded === N) allSucceeded();
  });
  try {
    await accepted.start();
    const { secret } = await webhooks.createEndpoint(DEFAULT_TENANT, {
      url: receiver.url,
      eventTypes: ['operation.succeeded'],
    });
    await receiver.arm(secret, N, VERIFY_EVERY);

    let next = 0;
    const submitAll = () =>
      Promise.all(
        Array.from({ length: C }, async () => {
          while (next < N) {
            const i = next++;
            await accepted.submit('noop', { i });
          }
        }),
      );
    if (mode === 'drain') {
      await within(submitAll(), PHASE_TIMEOUT_MS, 'drain: submits');
      await within(done, PHASE_TIMEOUT_MS, 'drain: operations');
    }
    const before = { ...stats };
    const profile = await startProfile();
    const t0 = wallNow();
    if (mode === 'drain') {
      webhooks.start();
    } else {
      webhooks.start();
      await within(submitAll(), PHASE_TIMEOUT_MS, 'live: submits');
    }
    const counters = await receiver.wait(PHASE_TIMEOUT_MS);
    await stopProfile(profile, mode);
    await within(
      (async () => {
        while (webhooks.stats.delivered + webhooks.stats.failed < N) {
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
      })(),
      PHASE_TIMEOUT_MS,
      `${mode}: recording the attempts`,
    );
    const recorded = wallNow();
    const store_ = {
      flushes: stats.flushes - before.flushes,
      commands: stats.commands - before.commands,
      syncs: stats.syncs - before.syncs,
      checkpoints: stats.checkpoints - before.checkpoints,
    };
    const ms = counters.last - t0;
    return {
      perS: Math.round(N / (ms / 1000)),
      ms: Math.round(ms),
      recordedMs: Math.round(recorded - t0),
      counters,
      attempts: webhooks.stats.attempts,
      delivered: webhooks.stats.delivered,
      failedAttempts: webhooks.stats.attempts - webhooks.stats.delivered,
      store: store_,
    };
  } finally {
    untail();
    await webhooks.stop(1000);
    // stop() does not wait for a claim loop under way, whose last step reads the store: give it
    // a moment before the store closes (else it logs "The store is not open").
    await new Promise((resolve) => setTimeout(resolve, 50));
    await accepted.stop({ graceful: false });
  }
}

const receiver = await launchReceiver();
try {
  const drain = await phase('drain', receiver);
  const live = await phase('live', receiver);
  const perDelivery = (r: PhaseResult) => ({
    ms: r.ms,
    recorded_ms: r.recordedMs,
    commits: r.store.flushes,
    writes: r.store.commands,
    syncs: r.store.syncs,
    writes_per_delivery: Number((r.store.commands / N).toFixed(2)),
    deliveries_per_commit: Number((N / Math.max(1, r.store.flushes)).toFixed(1)),
  });
  console.log(
    JSON.stringify({
      bench: 'webhook-throughput',
      store: `sqlite-${durability}`,
      N,
      concurrency: C,
      drain_per_s: drain.perS,
      live_per_s: live.perS,
      verified: drain.counters.verified + live.counters.verified,
      verify_failures: drain.counters.verifyFailures + live.counters.verifyFailures,
      duplicates: drain.counters.duplicates + live.counters.duplicates,
      failed_attempts: drain.failedAttempts + live.failedAttempts,
      body_bytes: Math.round(drain.counters.bytes / N),
      drain: perDelivery(drain),
      live: perDelivery(live),
    }),
  );
  console.error('[webhook-throughput] group commit, drain:', drain.store, 'live:', live.store);
  const errors = [...drain.counters.errors, ...live.counters.errors];
  if (errors.length > 0) console.error('[webhook-throughput] verify errors:', errors);
} finally {
  await receiver.child.stop(5000);
}
