// The server side of `stream-fanout.ts`: Accepted on the SQLite store (durability full, in a
// temp dir) with the HTTP API (and its push channels) on a free loopback port, run as a child
// process (with --expose-gc) driven over IPC (`fanout-ipc.ts`). At start it submits one `gate`
// operation and waits until it is running; its handler then reports progress each time the
// driver sends `step`, and succeeds at `stop`.
// `step` answers { seq, t0, written }: the seq of the operation.progress event written; t0, the
// wall-clock time of its commit as seen by a store hint listener subscribed before the engine
// and the HTTP server (so it runs before anything they do on that hint); `written`, the time of
// the first setImmediate after it (the synchronous fan-out and its nextTick socket writes are
// done by then). The progress carries padding so that the event's JSON is about MESSAGE_BYTES
// (default 400), like the peer's message. `memory` answers process.memoryUsage() after gc.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createAccepted, defineOperation, type Progress } from '../packages/accepted/src/index.ts';
import { createHttpServer } from '../packages/accepted/src/http/index.ts';
import { sqliteStore } from '../packages/accepted/src/store/sqlite/index.ts';
import { memoryAfterGc, serveCommands, wallNow } from './fanout-ipc.ts';

const MESSAGE_BYTES = Number(process.env.MESSAGE_BYTES ?? 400);

interface Step {
  seq: number;
  t0: number;
  /** When the writes to the subscribers were done: at the first setImmediate after the hint. */
  written: number;
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-fanout-bench-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true })); // on any way out
const store = sqliteStore({ filename: path.join(dir, 'accepted.db') });

let gateId = '';
let pad = '';
let calibrated = false;
const stepWaiters: ((step: Step) => void)[] = [];
let hintsWithoutEvents = 0;
// Subscribed before createAccepted and createHttpServer: this listener runs first on every hint.
store.subscribe((hint) => {
  const t0 = wallNow();
  if (!hint.events) {
    hintsWithoutEvents++;
    return;
  }
  for (const event of hint.events) {
    if (event.operationId !== gateId) continue;
    if (event.type !== 'operation.progress') continue;
    if (!calibrated) {
      calibrated = true;
      const bare = JSON.stringify(event).length - pad.length;
      pad = 'x'.repeat(Math.max(0, MESSAGE_BYTES - bare));
    }
    const waiter = stepWaiters.shift();
    const seq = event.seq;
    // The hub writes during this hint (after this listener) and in the ticks that follow.
    setImmediate(() => waiter?.({ seq, t0, written: wallNow() }));
  }
});

/** The gate's handler: reports progress on each `step`; resolves at `stop`. */
let report: ((progress: Progress) => Promise<void>) | null = null;
let finish: (() => void) | null = null;
const accepted = createAccepted({
  store,
  operations: [
    defineOperation({
      type: 'gate',
      handler: (_input, ctx) =>
        new Promise<null>((resolve) => {
          report = (progress) => ctx.progress(progress);
          finish = () => resolve(null);
        }),
    }),
  ],
  logger: { debug() {}, info() {}, warn: console.warn, error: console.error },
});
// No connection caps: the figure is the memory of SUBSCRIBERS streams from one address.
const app = createHttpServer({
  accepted,
  logger: false,
  maxConnections: 0,
  maxConnectionsPerIp: 0,
});

await accepted.start();
await app.listen({ port: 0, host: '127.0.0.1' });
const address = app.server.address();
if (address === null || typeof address === 'string') throw new Error('no TCP address');
gateId = (await accepted.submit('gate', {})).id;
for (let i = 0; !(report && (await accepted.get(gateId))?.status === 'running'); i++) {
  if (i > 2000) throw new Error('the gate operation did not start');
  await sleep(5);
}

let steps = 0;
serveCommands(
  { port: address.port, operation: gateId },
  {
    memory: () => memoryAfterGc(),
    step: async () => {
      steps++;
      const committed = new Promise<Step>((resolve, reject) => {
        stepWaiters.push(resolve);
        setTimeout(() => reject(new Error(`no commit hint for step ${steps}`)), 10_000).unref();
      });
      await report!({
        fraction: 1 - 1 / (steps + 1),
        message: `step ${steps}`,
        data: { pad },
      });
      return { ...(await committed), hintsWithoutEvents };
    },
  },
  async () => {
    try {
      finish?.();
      // Bounded: a stream the server does not end on close must not keep the data behind.
      await Promise.race([app.close(), sleep(5000)]);
      await accepted.stop({ graceful: false });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);
