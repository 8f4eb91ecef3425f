// Regression tests for #9: waits (the library's `wait`, the HTTP long poll) pile no listeners
// on a shared AbortSignal, leave nothing behind, and cost nothing per event of another
// operation. The run's real store (a SQLite file or a PostgreSQL schema), real sockets, no
// mocks.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { FastifyInstance } from 'fastify';
import { newOperationId } from '../src/domain/ids.ts';
import { defineOperation } from '../src/engine/definition.ts';
import { EventFeed } from '../src/engine/feed.ts';
import { createHttpServer } from '../src/server/http.ts';
import { gatedStore } from './gated-store.ts';
import { eventually, memoryLogger, onStore, startEngine, testStore } from './helpers.ts';

/** Operations that run until the test lets them take a step (progress) or finish. */
const steps = new Map<string, (finish: boolean) => void>();
const heldOperation = defineOperation<{ name: string }, { name: string }>({
  type: 'test.held',
  handler: async ({ name }, ctx) => {
    for (;;) {
      const done = await new Promise<boolean>((resolve, reject) => {
        steps.set(name, resolve);
        ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), {
          once: true,
        });
      });
      steps.delete(name);
      if (done) return { name };
      await ctx.progress({ message: 'step' });
    }
  },
});

async function step(name: string, finish = false): Promise<void> {
  await eventually(() => steps.has(name));
  steps.get(name)?.(finish);
}

/** Collects the process's warnings while `run` runs. */
async function warningsDuring(run: () => Promise<void>): Promise<Error[]> {
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => warnings.push(warning);
  process.on('warning', onWarning);
  try {
    await run();
    // Warnings are emitted on the next tick after the listener that crossed the limit.
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('warning', onWarning);
  }
  return warnings;
}

const maxListenerWarnings = (warnings: Error[]) =>
  warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message);

const apps: FastifyInstance[] = [];
after(async () => {
  for (const app of apps) await app.close();
});

describe(onStore('#9 the feed indexes single-operation subscribers'), { timeout: 60_000 }, () => {
  it('#9 an event is offered to the waiters of its own operation only, not to every waiter', async () => {
    const store = testStore();
    await store.open();
    const feed = new EventFeed(store, 1000, memoryLogger());
    await feed.start();
    try {
      // 100,000 waiters on other operations, and one tenant-wide reader.
      const others = Array.from({ length: 100_000 }, () =>
        feed.subscribe({ tenant: 't', operationIds: new Set([newOperationId()]) }, () => {
          throw new Error('offered an event of another operation');
        }),
      );
      const everything: number[] = [];
      const all = feed.subscribe({}, (event) => everything.push(event.seq));
      const id = newOperationId();
      const mine: string[] = [];
      const own = feed.subscribe({ tenant: 't', operationIds: new Set([id]) }, (event) =>
        mine.push(event.type),
      );
      const before = feed.stats();
      assert.equal(before.subscribers, 100_002);
      assert.equal(before.unindexed, 1);
      const now = Date.now();
      await store.create(
        {
          id,
          tenant: 't',
          type: 'x',
          input: null,
          maxAttempts: 1,
          runAt: now,
          timeoutMs: null,
          labels: {},
          callbackUrl: null,
          traceparent: null,
        },
        now,
      );
      await store.cancel(id, 't', { code: 'CANCELED', message: 'test' }, now);
      await eventually(() => mine.length === 2);
      const stats = feed.stats();
      assert.equal(stats.dispatched - before.dispatched, 2);
      // Each event: its operation's one waiter and the tenant-wide reader. Not 100,002.
      assert.equal(stats.offered - before.offered, 4);
      assert.deepEqual(mine, ['operation.queued', 'operation.canceled']);
      assert.equal(everything.length, 2);
      for (const stop of others) stop();
      own();
      all();
      own(); // a second call changes nothing
      assert.deepEqual(
        { ...feed.stats(), dispatched: 0, offered: 0 },
        { subscribers: 0, indexedOperations: 0, unindexed: 0, dispatched: 0, offered: 0 },
      );
    } finally {
      feed.stop();
      await store.close();
    }
  });
});

describe(onStore('what wakes a wait'), { timeout: 60_000 }, () => {
  it('a wait for the end reads its operation when it begins and when it ends, not at each start or progress', async () => {
    const gate = gatedStore(testStore());
    const accepted = await startEngine({ store: gate.store, operations: [heldOperation] });
    const op = await accepted.submit('test.held', { name: 'reads' });
    const readsBefore = gate.reads.get(op.id) ?? 0;
    const waiting = accepted.wait(op.id);
    // Also one that waits past a version: every change of the operation wakes it.
    const pastStart = accepted.wait(op.id, { afterVersion: 2 });
    for (let i = 0; i < 20; i++) await step('reads');
    assert.ok((await pastStart).version >= 3, 'a wait past a version is woken by progress');
    await step('reads', true);
    const done = await waiting;
    assert.equal(done.status, 'succeeded');
    assert.equal(done.version, 2 + 20 + 1, 'queued, started, 20 progress events, succeeded');
    // The end's wait: its first read and the read after the end; the other wait's reads
    // (first, and after each change up to version 3) are a few more. Not one per event.
    const reads = (gate.reads.get(op.id) ?? 0) - readsBefore;
    assert.ok(reads <= 6, `${reads} reads for two waits over 23 events`);
    // An end without an attempt (a queued operation canceled) ends it too.
    const other = await accepted.submit(
      'test.held',
      { name: 'canceled' },
      { runAt: Date.now() + 3_600_000 },
    );
    const ended = accepted.wait(other.id);
    await accepted.cancel(other.id);
    assert.equal((await ended).status, 'canceled');
  });
});

describe(onStore('#9 waits and AbortSignal listeners'), { timeout: 120_000 }, () => {
  it('#9 200 concurrent accepted.wait() calls print no MaxListenersExceededWarning', async () => {
    const accepted = await startEngine({ operations: [heldOperation] });
    const op = await accepted.submit('test.held', { name: 'lib' });
    await accepted.wait(op.id, { afterVersion: 1 });
    const shared = new AbortController(); // one signal handed to many waits, as apps do
    const warnings = await warningsDuring(async () => {
      const waits = [
        ...Array.from({ length: 200 }, () => accepted.wait(op.id)),
        ...Array.from({ length: 200 }, () => accepted.wait(op.id, { signal: shared.signal })),
        ...Array.from({ length: 200 }, () => accepted.wait(op.id, { afterVersion: 2 })),
      ];
      await step('lib'); // progress: version 3 answers the afterVersion waits
      await step('lib', true);
      const done = await Promise.all(waits);
      assert.ok(done.every((o) => o.status === 'succeeded' || o.version >= 3));
    });
    assert.deepEqual(maxListenerWarnings(warnings), []);
    // A shared signal that aborts ends its waits; the others are over already.
    const another = await accepted.submit('test.held', { name: 'lib-abort' });
    const pending = Array.from({ length: 200 }, () =>
      accepted.wait(another.id, { signal: shared.signal }),
    );
    shared.abort();
    const aborted = await Promise.all(pending);
    assert.ok(aborted.every((o) => o.status === 'queued' || o.status === 'running'));
    await step('lib-abort', true);
  });

  it('#9 200 parked long polls print no MaxListenersExceededWarning', async () => {
    const gate = gatedStore(testStore());
    const accepted = await startEngine({ store: gate.store, operations: [heldOperation] });
    const app = createHttpServer({ accepted, logger: false });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    apps.push(app);
    const op = await accepted.submit('test.held', { name: 'poll' });
    await accepted.wait(op.id, { afterVersion: 1 });
    const warnings = await warningsDuring(async () => {
      const reads = gate.reads.get(op.id) ?? 0;
      const polls = Array.from({ length: 200 }, () =>
        fetch(`${base}/v1/operations/${op.id}`, {
          headers: { prefer: 'wait=60', 'if-none-match': '"2"' },
        }),
      );
      // Each poll reads the operation, then parks in a wait; the waits of one operation
      // share their reads, so there are at least 201 reads and at most 400.
      await eventually(() => accepted.waiting === 200);
      const made = (gate.reads.get(op.id) ?? 0) - reads;
      assert.ok(made > 200 && made <= 400, `${made} reads for 200 long polls`);
      await new Promise((resolve) => setImmediate(resolve));
      await step('poll', true);
      const answers = await Promise.all(polls);
      assert.ok(answers.every((a) => a.status === 200 && a.headers.get('etag') === '"3"'));
    });
    assert.deepEqual(maxListenerWarnings(warnings), []);
  });

  it('#9 100,000 waits leave the heap flat', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const heap = () => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    // An API-only engine: operations stay queued until the test cancels them.
    const accepted = await startEngine({ operations: [heldOperation], worker: false });
    /**
     * `count` waits at once on 100 operations: a third end when their operation changes (a
     * cancel), a third when their own signal aborts, a third when their timeout passes.
     */
    const round = async (count: number) => {
      const ops = await Promise.all(
        Array.from({ length: 100 }, (_, i) => accepted.submit('test.held', { name: `r${i}` })),
      );
      const controllers: AbortController[] = [];
      const waits: Promise<unknown>[] = [];
      for (let i = 0; i < count; i++) {
        const op = ops[i % 100] as { id: string };
        if (i % 3 === 0) {
          waits.push(accepted.wait(op.id));
        } else if (i % 3 === 1) {
          const controller = new AbortController();
          controllers.push(controller);
          waits.push(accepted.wait(op.id, { signal: controller.signal }));
        } else {
          waits.push(accepted.wait(op.id, { timeoutMs: 50 }));
        }
      }
      // Every wait is heard out before the verdict: a failure is one report, not an
      // unhandled rejection per wait.
      const settled = Promise.allSettled(waits);
      for (const controller of controllers) controller.abort();
      await Promise.all(ops.map((op) => accepted.cancel(op.id)));
      const failed = (await settled).flatMap((r) =>
        r.status === 'rejected' ? [r.reason as Error] : [],
      );
      assert.equal(
        failed.length,
        0,
        `${failed.length} of ${count} waits failed, the first: ${String(failed[0])}` +
          ` (cause: ${String(failed[0]?.cause)})`,
      );
      await Promise.all(ops.map((op) => accepted.delete(op.id)));
    };
    const warnings = await warningsDuring(async () => {
      // Warm up at full size: code, statements, caches, and tables that keep the size of
      // their peak (the test runner's async hooks keep one the size of the most promises
      // alive at once, ~56 MB after 100,000 waits, and never shrink it).
      await round(100_000);
      const before = heap();
      await round(100_000);
      const grown = heap() - before;
      assert.ok(grown < 2 * 1024 * 1024, `heap grew by ${grown} bytes over 100,000 waits`);
    });
    assert.deepEqual(maxListenerWarnings(warnings), []);
  });
});
