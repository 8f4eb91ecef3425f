// Regression tests for defects of the engine found by racing it (issue 12: #12, #13, #18, #19).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_RETRY_DELAY_MS, RetryAfterError } from '../src/domain/errors.ts';
import { MAX_JSON_DEPTH } from '../src/domain/json.ts';
import type { Json } from '../src/domain/operation.ts';
import { createAccepted } from '../src/engine/accepted.ts';
import { defineOperation, type HandlerContext } from '../src/engine/definition.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { MAX_PROGRESS_DATA_BYTES } from '../src/engine/worker.ts';
import { toMonitor } from '../src/wire/monitor.ts';
import { PostgresStore } from '../src/store/postgres/postgres-store.ts';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts';
import type { LeaseState, RenewRequest, Store } from '../src/store/store.ts';
import { eventually, historyOf, memoryLogger, onStore, startEngine, testStore } from './helpers.ts';

const T = { timeout: 60_000 };

/** Waits for the handler's signal, whatever it is, without rejecting. */
function aborted(signal: AbortSignal): Promise<string> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve((signal.reason as Error).name);
    else
      signal.addEventListener('abort', () => resolve((signal.reason as Error).name), {
        once: true,
      });
  });
}

/** A value nested `depth` arrays deep. */
function nested(depth: number): Json {
  let value: Json = 0;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

/**
 * The real store, with its lease renewals held back while `held` is set: the answers
 * of a heartbeat are then as late as a slow commit would make them.
 */
function withSlowRenewals(store: Store) {
  const held: { request: RenewRequest; resolve: (states: LeaseState[]) => void }[] = [];
  const control = { holding: true, calls: 0 };
  const proxy = new Proxy(store, {
    get(target, key, receiver) {
      if (key === 'renewLeases') {
        return (request: RenewRequest) => {
          control.calls++;
          if (!control.holding) return target.renewLeases(request);
          return new Promise<LeaseState[]>((resolve) => held.push({ request, resolve }));
        };
      }
      const value = Reflect.get(target, key, receiver) as unknown;
      return typeof value === 'function'
        ? (value as (...a: unknown[]) => unknown).bind(target)
        : value;
    },
  });
  /** Lets the held renewals reach the store now; their answers arrive late. */
  const release = async () => {
    control.holding = false;
    for (const { request, resolve } of held.splice(0)) resolve(await store.renewLeases(request));
  };
  return { store: proxy, control, release, held };
}

describe(onStore('engine defects'), T, () => {
  it('#13 a late "lease lost" answer about an old attempt aborts that attempt, not the newer one', async () => {
    const signals: { attempt: number; reason: Promise<string> }[] = [];
    let releaseSecond: () => void = () => undefined;
    const secondMayFinish = new Promise<void>((resolve) => (releaseSecond = resolve));
    const op = defineOperation({
      type: 'test.twice',
      maxAttempts: 2,
      handler: async (_input: Json, ctx: HandlerContext) => {
        const reason = aborted(ctx.signal);
        signals.push({ attempt: ctx.attempt, reason });
        if (ctx.attempt === 1) {
          await reason; // attempt 1 hangs until it is told its lease is gone
          throw new Error('gave up');
        }
        await Promise.race([secondMayFinish, reason]);
        return { attempt: ctx.attempt };
      },
    });
    const slow = withSlowRenewals(testStore());
    const accepted = createAccepted({
      store: slow.store,
      operations: [op],
      logger: memoryLogger(),
      leaseMs: 300,
      heartbeatMs: 50,
      leaseRecoveryIntervalMs: 20,
      pollIntervalMs: 50,
    });
    await accepted.start();
    try {
      const submitted = await accepted.submit('test.twice', null);
      // Attempt 1's renewals are held: its lease expires, recovery requeues the operation and
      // this same worker claims it again (attempt 2).
      await eventually(() => signals.length === 2);
      assert.ok(slow.held.length > 0, 'a renewal of attempt 1 is waiting');
      // The held renewals now answer "lost" (about attempt 1's token), after attempt 2 began.
      await slow.release();
      assert.equal(
        await signals[0]?.reason,
        'LeaseLostError',
        'attempt 1 learns its lease is lost',
      );
      releaseSecond();
      const done = await accepted.wait(submitted.id, { timeoutMs: 20_000 });
      assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
      assert.deepEqual(done.result, { attempt: 2 });
      const second = await Promise.race([signals[1]?.reason, sleep(100).then(() => 'not aborted')]);
      assert.equal(second, 'not aborted', 'attempt 2 keeps its lease and its signal');
    } finally {
      await accepted.stop({ graceful: false });
    }
  });

  it('an idle engine commits nothing: its polls, lease recovery and retention only read', async () => {
    const accepted = await startEngine({
      operations: [defineOperation({ type: 'test.quick', handler: () => 'done' })],
      pollIntervalMs: 20,
      leaseRecoveryIntervalMs: 20,
      retentionIntervalMs: 1_000,
      retentionMs: 1,
    });
    const store = accepted.store;
    assert.ok(store instanceof SqliteStore || store instanceof PostgresStore);
    /** Commits (SQLite also counts its disk flushes: none either). */
    const writes = () => ({
      flushes: store.stats.flushes,
      syncs: store instanceof SqliteStore ? store.stats.syncs : 0,
    });
    // Some work first, finished, so that every loop has something it could look at.
    for (let i = 0; i < 5; i++) await accepted.wait((await accepted.submit('test.quick')).id);
    await accepted.submit('test.quick', null, { runAt: Date.now() + 3_600_000 });
    // Retention removes the finished ones (a real write), then everything goes quiet.
    await eventually(async () => (await accepted.list({ status: 'succeeded' })).items.length === 0);
    const quiet = async () => {
      const before = writes();
      await sleep(200);
      return writes().flushes === before.flushes;
    };
    await eventually(quiet);
    const before = writes();
    // 3 s: about 150 polls and 150 lease checks, and three retention passes.
    await sleep(3_000);
    const after = writes();
    assert.deepEqual(
      { flushes: after.flushes - before.flushes, syncs: after.syncs - before.syncs },
      { flushes: 0, syncs: 0 },
    );
    // And the poll still finds work that no hint announced (runAt coming due).
    const soon = await accepted.submit('test.quick', null, { runAt: Date.now() + 300 });
    assert.equal((await accepted.wait(soon.id, { timeoutMs: 10_000 })).status, 'succeeded');
  });

  it('#12 an attempt that ignores its cancel and then times out ends canceled, not retried', async () => {
    let attempts = 0;
    const accepted = await startEngine({
      operations: [
        defineOperation({
          type: 'test.stubborn',
          maxAttempts: 3,
          timeoutMs: 300,
          handler: async () => {
            attempts++;
            await sleep(1_000); // ignores its signal
            return 'finished anyway';
          },
        }),
      ],
    });
    const op = await accepted.submit('test.stubborn', null);
    await eventually(async () => (await accepted.get(op.id))?.status === 'running');
    const asked = await accepted.cancel(op.id);
    assert.equal(asked.cancelRequestedAt !== null, true);
    const done = await accepted.wait(op.id, { timeoutMs: 20_000 });
    assert.equal(done.status, 'canceled');
    assert.equal(done.error?.code, 'CANCELED');
    const types = (await historyOf(accepted, op.id)).map((e) => e.type);
    assert.deepEqual(types, [
      'operation.queued',
      'operation.started',
      'operation.cancel_requested',
      'operation.canceled',
    ]);
    assert.equal(attempts, 1, 'no second attempt');
  });

  it('#18 a huge RetryAfterError or backoff cannot put a time out of range: reads keep working', async () => {
    assert.throws(() => new RetryAfterError(1e16), RangeError);
    assert.throws(() => new RetryAfterError(MAX_RETRY_DELAY_MS + 1), RangeError);
    assert.equal(new RetryAfterError(MAX_RETRY_DELAY_MS).delayMs, MAX_RETRY_DELAY_MS);
    // What another copy of the package could throw: the brand, with any delay.
    const foreign = Object.assign(new Error('later'), {
      [Symbol.for('accepted.RetryAfterError')]: true,
      delayMs: 1e16,
    });
    const accepted = await startEngine({
      operations: [
        defineOperation({
          type: 'test.foreign',
          handler: () => Promise.reject(foreign),
        }),
        defineOperation({
          type: 'test.backoff',
          backoff: () => 1e16,
          handler: () => Promise.reject(new Error('again')),
        }),
        defineOperation({
          type: 'test.infinite',
          backoff: { baseMs: 1e300, factor: 1e300 },
          handler: () => Promise.reject(new Error('again')),
        }),
      ],
    });
    const before = Date.now();
    for (const type of ['test.foreign', 'test.backoff', 'test.infinite']) {
      const op = await accepted.submit(type, null);
      await eventually(async () => (await accepted.get(op.id))?.error !== null);
      const read = await accepted.get(op.id);
      assert.ok(read);
      assert.equal(read.status, 'queued', type);
      assert.ok(read.runAt <= Date.now() + MAX_RETRY_DELAY_MS, `${type}: runAt bounded`);
      assert.ok(read.runAt >= before, type);
      assert.doesNotThrow(() => toMonitor(read), `${type}: the monitor renders`);
    }
    const page = await accepted.list({});
    assert.equal(page.items.length, 3);
    assert.doesNotThrow(() => page.items.map(toMonitor));
    // The log hands out an event once its commit is on disk (#10), which may trail the row a
    // read sees by a flush: wait for the nine (queued, started, retrying of each).
    await eventually(async () => (await accepted.readEvents({ limit: 100 })).length >= 9);
  });

  it('#19 handler errors are stored as text, plain {code, message} throws keep both, progress data and results are bounded', async () => {
    const progressErrors: string[] = [];
    const accepted = await startEngine({
      operations: [
        defineOperation({
          type: 'test.objectMessage',
          maxAttempts: 1,
          handler: () => {
            const error = new Error('x');
            (error as { message: unknown }).message = { reason: 'quota', left: 0 };
            return Promise.reject(error);
          },
        }),
        defineOperation({
          type: 'test.plain',
          maxAttempts: 1,
          handler: () => {
            // What some handlers throw: a plain object, not an Error.
            // eslint-disable-next-line @typescript-eslint/only-throw-error
            throw { code: 'RATE_LIMITED', message: 'slow down', details: { retry: 5 } };
          },
        }),
        defineOperation({
          type: 'test.huge',
          maxAttempts: 1,
          handler: () => Promise.reject(new Error('y'.repeat(100_000))),
        }),
        defineOperation({
          type: 'test.progress',
          handler: async (_input: Json, ctx: HandlerContext) => {
            for (const data of [
              'z'.repeat(MAX_PROGRESS_DATA_BYTES),
              nested(MAX_JSON_DEPTH + 1),
              nested(10_000),
            ]) {
              try {
                await ctx.progress({ data });
              } catch (error) {
                progressErrors.push((error as Error).name);
              }
            }
            await ctx.progress({ data: 'z'.repeat(1_000) });
            return 'ok';
          },
        }),
        defineOperation({
          type: 'test.deepResult',
          maxAttempts: 1,
          handler: (input: { depth: number }) => nested(input.depth),
        }),
      ],
    });
    const run = async (type: string, input: Json = null) => {
      const op = await accepted.submit(type, input);
      return accepted.wait(op.id, { timeoutMs: 20_000 });
    };
    const objectMessage = await run('test.objectMessage');
    assert.equal(typeof objectMessage.error?.message, 'string');
    assert.equal(objectMessage.error?.message, '{"reason":"quota","left":0}');
    const plain = await run('test.plain');
    assert.deepEqual(plain.error, {
      code: 'RATE_LIMITED',
      message: 'slow down',
      details: { retry: 5 },
    });
    const huge = await run('test.huge');
    assert.equal(huge.error?.message.length, 4096);
    assert.ok(huge.error?.message.endsWith('…'));
    const progress = await run('test.progress');
    assert.equal(progress.status, 'succeeded');
    assert.deepEqual(progressErrors, ['RangeError', 'AcceptedError', 'AcceptedError']);
    assert.equal(progress.progress?.data, 'z'.repeat(1_000));
    for (const depth of [MAX_JSON_DEPTH + 1, 10_000]) {
      const deep = await run('test.deepResult', { depth });
      assert.equal(deep.status, 'failed');
      assert.equal(deep.error?.code, 'RESULT_TOO_DEEP', `depth ${depth}`);
    }
    const fine = await run('test.deepResult', { depth: MAX_JSON_DEPTH - 1 });
    assert.equal(fine.status, 'succeeded');
    // Every read of the tenant still works.
    const page = await accepted.list({ limit: 100 });
    assert.doesNotThrow(() => JSON.stringify(page.items.map(toMonitor)));
  });
});
