// The worker (engine/worker.ts) at its edges: what a handler's throw becomes, what
// ctx.progress() accepts, the abort reasons a handler sees, the result bounds, the cancel of
// one operation among several, graceful stop, and a store that fails a call now and then
// (claim, heartbeat, progress, outcome): logged at the right level, and the work goes on.
// Written against the mutants StrykerJS left alive in worker.ts (docs/testing.md). The real
// store of this run (a SQLite file or a PostgreSQL schema), real timers.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { AcceptedError, PermanentError, RetryAfterError } from '../src/domain/errors.ts';
import type { Operation } from '../src/domain/operation.ts';
import { defineOperation, type HandlerContext } from '../src/engine/definition.ts';
import {
  MAX_ERROR_DETAILS_BYTES,
  MAX_ERROR_MESSAGE_CHARS,
  MAX_PROGRESS_DATA_BYTES,
  checkProgress,
  toOperationError,
} from '../src/engine/worker.ts';
import type { Store } from '../src/store/store.ts';
import {
  eventually,
  historyOf,
  memoryLogger,
  newStorePlace,
  onStore,
  startEngine,
  stopEngines,
} from './helpers.ts';

after(stopEngines);

describe('what a handler throws becomes the operation error', () => {
  it('takes a message of any kind as text, a fallback when it is empty, cut at the bound', () => {
    assert.deepEqual(toOperationError(new Error('plain')), {
      code: 'HANDLER_ERROR',
      message: 'plain',
    });
    assert.equal(toOperationError(new Error('')).message, 'Error', 'an empty message: the name');
    assert.equal(toOperationError(42).message, '42');
    assert.equal(toOperationError(false).message, 'false');
    assert.equal(toOperationError(10n).message, '10');
    assert.equal(toOperationError('text').message, 'text');
    assert.equal(toOperationError('').message, 'Handler failed.');
    assert.equal(toOperationError(undefined).message, 'Handler failed.');
    assert.equal(toOperationError(null).message, 'Handler failed.');
    assert.deepEqual(toOperationError(undefined), {
      code: 'HANDLER_ERROR',
      message: 'Handler failed.',
    });
    // An object given as the message is written as JSON; a cyclic one by its tag.
    const withObject = new Error('x');
    (withObject as { message: unknown }).message = { why: 'nested' };
    assert.equal(toOperationError(withObject).message, '{"why":"nested"}');
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    assert.equal(toOperationError({ code: 'LOOP', message: cyclic }).message, '[object Object]');
    const long = toOperationError(new Error('m'.repeat(MAX_ERROR_MESSAGE_CHARS + 10))).message;
    assert.equal(long.length, MAX_ERROR_MESSAGE_CHARS);
    assert.ok(long.endsWith('…'));
    const exact = 'e'.repeat(MAX_ERROR_MESSAGE_CHARS);
    assert.equal(toOperationError(new Error(exact)).message, exact, 'at the bound: kept whole');
  });

  it('keeps a valid code, a plain { code, message }, a PermanentError, and bounded details', () => {
    const coded = Object.assign(new Error('upstream'), { code: 'UPSTREAM_DOWN' });
    assert.deepEqual(toOperationError(coded), { code: 'UPSTREAM_DOWN', message: 'upstream' });
    const badCode = Object.assign(new Error('x'), { code: 'not a code' });
    assert.equal(toOperationError(badCode).code, 'HANDLER_ERROR');
    assert.deepEqual(toOperationError({ code: 'QUOTA', message: 'over quota' }), {
      code: 'QUOTA',
      message: 'over quota',
    });
    assert.deepEqual(toOperationError({ code: 'ONLY_CODE' }), {
      code: 'ONLY_CODE',
      message: '{"code":"ONLY_CODE"}',
    });
    assert.deepEqual(toOperationError(new PermanentError('for good')), {
      code: 'PERMANENT_FAILURE',
      message: 'for good',
    });
    assert.deepEqual(toOperationError(new PermanentError('', { code: 'GONE' })), {
      code: 'GONE',
      message: 'PermanentError',
    });
    assert.deepEqual(
      toOperationError(new PermanentError('p', { code: 'P', details: { a: 1 } })).details,
      { a: 1 },
    );
    assert.deepEqual(toOperationError({ code: 'D', message: 'm', details: [1, 'two'] }).details, [
      1,
      'two',
    ]);
    const at = (bytes: number) => 'x'.repeat(bytes - 2); // a JSON string: two quotes
    const fits = toOperationError(
      Object.assign(new Error('m'), { details: at(MAX_ERROR_DETAILS_BYTES) }),
    );
    assert.equal(fits.details, at(MAX_ERROR_DETAILS_BYTES), 'details at the bound are kept');
    const over = toOperationError(
      Object.assign(new Error('m'), { details: at(MAX_ERROR_DETAILS_BYTES + 1) }),
    );
    assert.equal('details' in over, false, 'details over the bound are dropped');
    const deep: unknown[] = [];
    let inner = deep;
    for (let i = 0; i < 100; i++) inner.push((inner = []));
    assert.equal('details' in toOperationError({ code: 'C', message: 'm', details: deep }), false);
    assert.equal('details' in toOperationError({ code: 'C', message: 'm', details: 1n }), false);
    assert.equal('details' in toOperationError({ code: 'C', message: 'm' }), false);
    // Codes that are not valid fall back, whoever made the error: a PermanentError of another
    // copy of the package (the brand, any code) and a plain object.
    const foreign = Object.assign(new Error('from another copy'), {
      [Symbol.for('accepted.PermanentError')]: true,
      code: 'not a code',
    });
    assert.deepEqual(toOperationError(foreign), {
      code: 'PERMANENT_FAILURE',
      message: 'from another copy',
    });
    assert.deepEqual(toOperationError({ code: 'not a code', message: 'plain' }), {
      code: 'HANDLER_ERROR',
      message: 'plain',
    });
  });
});

describe('what ctx.progress() accepts', () => {
  const refusal = (value: unknown): string | null => {
    try {
      checkProgress(value);
      return null;
    } catch (error) {
      return (error as Error).name;
    }
  };

  it('an object with a fraction from 0 to 1, a string message, JSON data within the bound', () => {
    for (const value of [null, undefined, 3, 'half', true]) {
      assert.equal(refusal(value), 'TypeError', String(value));
    }
    for (const fraction of [-0.0001, 1.0001, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.equal(refusal({ fraction }), 'RangeError', String(fraction));
    }
    assert.equal(refusal({ fraction: '0.5' }), 'RangeError');
    assert.deepEqual(checkProgress({ fraction: 0 }), { fraction: 0 });
    assert.deepEqual(checkProgress({ fraction: 1 }), { fraction: 1 });
    assert.deepEqual(checkProgress({}), {}, 'nothing given, nothing set');
    assert.equal(refusal({ message: 5 }), 'TypeError');
    assert.equal(checkProgress({ message: 'm'.repeat(1500) }).message?.length, 1000);
    assert.deepEqual(checkProgress({ message: 'abc', data: { n: [1] } }), {
      message: 'abc',
      data: { n: [1] },
    });
    assert.equal(refusal({ data: 1n }), 'TypeError');
    assert.equal(refusal({ data: () => 1 }), 'TypeError');
    const deep: unknown[] = [];
    let inner = deep;
    for (let i = 0; i < 100; i++) inner.push((inner = []));
    assert.ok(refusal({ data: deep }) !== null, 'data nested past the bound');
    const fits = 'd'.repeat(MAX_PROGRESS_DATA_BYTES - 2);
    assert.equal(checkProgress({ data: fits }).data, fits, 'data at the bound');
    assert.equal(refusal({ data: `${fits}d` }), 'RangeError', 'data one byte over');
  });
});

/** A real store whose `method` rejects with `error` for its next `times` calls. */
function failing(store: Store, method: keyof Store, error: () => Error, times = 1) {
  let left = times;
  const calls = { failed: 0 };
  const proxy = new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      const fn = value as (...args: unknown[]) => unknown;
      if (property !== method) return fn.bind(target);
      return (...args: unknown[]) => {
        if (left > 0) {
          left--;
          calls.failed++;
          return Promise.reject(error());
        }
        return fn.apply(target, args);
      };
    },
  });
  return { store: proxy, calls };
}

const unavailable = () => new AcceptedError('STORE_UNAVAILABLE', 'The store is away.');
const broken = () => new Error('a bug in the store');

/** A handler that runs until the test lets it go (or its signal aborts), per operation name. */
const gates = new Map<string, (value: unknown) => void>();
const reasons = new Map<string, string>();
const held = defineOperation<{ name: string; ignore?: boolean }, { name: string }>({
  type: 'test.held',
  handler: ({ name, ignore }, ctx: HandlerContext) =>
    new Promise((resolve, reject) => {
      gates.set(name, () => resolve({ name }));
      ctx.signal.addEventListener('abort', () => {
        reasons.set(name, (ctx.signal.reason as Error).name);
        if (!ignore) reject(ctx.signal.reason as Error);
      });
    }),
});
const release = async (name: string) => {
  await eventually(() => gates.has(name));
  gates.get(name)?.(undefined);
};

describe(onStore('the worker with a store that fails now and then'), { timeout: 60_000 }, () => {
  it('a claim the store refuses is retried on the next poll, logged as a warning when the store is away', async () => {
    const place = newStorePlace();
    const { store, calls } = failing(place.open(), 'claim', unavailable, 2);
    const logger = memoryLogger();
    const accepted = await startEngine({ store, logger, operations: [held], pollIntervalMs: 20 });
    const op = await accepted.submit('test.held', { name: 'claim-retry' });
    await release('claim-retry');
    assert.equal((await accepted.wait(op.id)).status, 'succeeded');
    assert.ok(calls.failed >= 1);
    const lines = logger.lines.filter((l) => l.msg === 'claim failed; retrying on next poll');
    assert.ok(lines.length >= 1, JSON.stringify(logger.lines));
    assert.ok(lines.every((l) => l.level === 'warn'));
  });

  it('a claim that fails for another reason is logged as an error, and retried all the same', async () => {
    const place = newStorePlace();
    const { store } = failing(place.open(), 'claim', broken, 1);
    const logger = memoryLogger();
    const accepted = await startEngine({ store, logger, operations: [held], pollIntervalMs: 20 });
    const op = await accepted.submit('test.held', { name: 'claim-bug' });
    await release('claim-bug');
    assert.equal((await accepted.wait(op.id)).status, 'succeeded');
    const lines = logger.lines.filter((l) => l.msg === 'claim failed; retrying on next poll');
    assert.deepEqual(
      lines.map((l) => l.level),
      ['error'],
    );
  });

  it('a renewal or a lease recovery the store refuses is logged; the attempt goes on', async () => {
    const place = newStorePlace();
    const renewing = failing(place.open(), 'renewLeases', unavailable, 1);
    const { store } = failing(renewing.store, 'recoverExpiredLeases', broken, 1);
    const logger = memoryLogger();
    const accepted = await startEngine({
      store,
      logger,
      operations: [held],
      leaseMs: 600,
      heartbeatMs: 30,
      leaseRecoveryIntervalMs: 30,
    });
    const op = await accepted.submit('test.held', { name: 'renewal' });
    await eventually(() => renewing.calls.failed === 1);
    // Renewed on the next beats: still held, many leases later.
    await new Promise((resolve) => setTimeout(resolve, 900));
    await release('renewal');
    const done = await accepted.wait(op.id);
    assert.equal(done.status, 'succeeded');
    assert.equal(done.attempts, 1, 'the lease was never lost');
    const levels = (msg: string) => logger.lines.filter((l) => l.msg === msg).map((l) => l.level);
    assert.deepEqual(levels('lease renewal failed'), ['warn']);
    assert.deepEqual(levels('lease recovery failed'), ['error']);
  });

  it('progress the store refuses is reported once as not saved; the handler carries on', async () => {
    const place = newStorePlace();
    const { store } = failing(place.open(), 'progress', broken, 1);
    const logger = memoryLogger();
    const stepper = defineOperation<null, string>({
      type: 'test.stepper',
      handler: async (_input, ctx) => {
        await ctx.progress({ message: 'one' });
        await ctx.progress({ message: 'two' });
        return 'done';
      },
    });
    const accepted = await startEngine({ store, logger, operations: [stepper] });
    const op = await accepted.submit('test.stepper', null);
    const done = await accepted.wait(op.id);
    assert.equal(done.status, 'succeeded');
    assert.equal(done.progress?.message, 'two');
    assert.deepEqual(
      logger.lines.filter((l) => l.msg === 'progress not saved').map((l) => l.level),
      ['warn'],
    );
  });

  it('an outcome the store cannot write is logged as an error; the lease expires and the next attempt records it', async () => {
    const place = newStorePlace();
    const { store } = failing(place.open(), 'complete', broken, 1);
    const logger = memoryLogger();
    const quick = defineOperation<null, string>({
      type: 'test.quick',
      handler: (_input, ctx) => Promise.resolve(`attempt ${ctx.attempt}`),
    });
    const accepted = await startEngine({
      store,
      logger,
      operations: [quick],
      leaseMs: 200,
      leaseRecoveryIntervalMs: 20,
      pollIntervalMs: 20,
    });
    const op = await accepted.submit('test.quick', null, { maxAttempts: 3 });
    const done = await accepted.wait(op.id);
    assert.equal(done.status, 'succeeded');
    assert.equal(done.result, 'attempt 2');
    assert.deepEqual(
      logger.lines
        .filter((l) => l.msg === 'could not record an outcome; the lease will expire')
        .map((l) => l.level),
      ['error'],
    );
  });
});

describe(onStore('the worker: abort reasons, bounds, cancel and stop'), { timeout: 60_000 }, () => {
  it('cancels the attempt of the operation asked, not the others running beside it', async () => {
    const accepted = await startEngine({ operations: [held] });
    const a = await accepted.submit('test.held', { name: 'cancel-a' });
    const b = await accepted.submit('test.held', { name: 'cancel-b' });
    await eventually(() => gates.has('cancel-a') && gates.has('cancel-b'));
    await accepted.cancel(a.id);
    const canceled = await accepted.wait(a.id);
    assert.equal(canceled.status, 'canceled');
    assert.deepEqual(canceled.error, { code: 'CANCELED', message: 'Canceled on request.' });
    assert.equal(reasons.get('cancel-a'), 'CancelError');
    assert.equal(reasons.has('cancel-b'), false, 'the other attempt is not aborted');
    await release('cancel-b');
    assert.equal((await accepted.wait(b.id)).status, 'succeeded');
  });

  it('a timeout aborts with a TimeoutError and records the attempt, its number and the limit', async () => {
    const accepted = await startEngine({ operations: [held] });
    const op = await accepted.submit(
      'test.held',
      { name: 'timeout' },
      { timeoutMs: 100, maxAttempts: 1 },
    );
    const done = await accepted.wait(op.id);
    assert.equal(done.status, 'failed');
    assert.deepEqual(done.error, {
      code: 'TIMEOUT',
      message: 'Attempt 1 exceeded its time limit of 100 ms.',
    });
    assert.equal(reasons.get('timeout'), 'TimeoutError');
  });

  it('a timeout with attempts left retries after the type’s own backoff', async () => {
    let runs = 0;
    const slowOnce = defineOperation<null, string>({
      type: 'test.slow-once',
      backoff: () => 0,
      handler: (_input, ctx) => {
        runs++;
        if (ctx.attempt > 1) return Promise.resolve('second');
        return new Promise((_resolve, reject) => {
          ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error));
        });
      },
    });
    // The engine's backoff would wait an hour: the type's (0 ms) is the one that counts.
    const accepted = await startEngine({ operations: [slowOnce], backoff: () => 3_600_000 });
    const op = await accepted.submit('test.slow-once', null, { timeoutMs: 100, maxAttempts: 2 });
    const done = await accepted.wait(op.id);
    assert.equal(done.status, 'succeeded');
    assert.equal(done.result, 'second');
    assert.equal(runs, 2);
  });

  it('results: at maxResultBytes kept, one byte over refused as RESULT_TOO_LARGE with both sizes', async () => {
    const sized = defineOperation<{ bytes: number }, string>({
      type: 'test.sized',
      handler: ({ bytes }) => Promise.resolve('r'.repeat(bytes - 2)),
    });
    const accepted = await startEngine({ operations: [sized], maxResultBytes: 1024 });
    const fits = await accepted.wait((await accepted.submit('test.sized', { bytes: 1024 })).id);
    assert.equal(fits.status, 'succeeded');
    const over = await accepted.wait((await accepted.submit('test.sized', { bytes: 1025 })).id);
    assert.equal(over.status, 'failed');
    assert.deepEqual(over.error, {
      code: 'RESULT_TOO_LARGE',
      message: 'The result is 1025 bytes; the limit is 1024.',
    });
    assert.equal(over.attempts, 1, 'not retried');
  });

  it('a result nested too deep or not JSON fails with its code and what is wrong', async () => {
    const odd = defineOperation<{ kind: string }, unknown>({
      type: 'test.odd-result',
      handler: ({ kind }) => {
        if (kind === 'bigint') return Promise.resolve(1n);
        const deep: unknown[] = [];
        let inner = deep;
        for (let i = 0; i < 100; i++) inner.push((inner = []));
        return Promise.resolve(deep);
      },
    });
    const accepted = await startEngine({ operations: [odd] });
    const bigint = await accepted.wait(
      (await accepted.submit('test.odd-result', { kind: 'bigint' })).id,
    );
    assert.equal(bigint.error?.code, 'RESULT_NOT_SERIALIZABLE');
    assert.match(bigint.error?.message ?? '', /^The handler's result is not JSON: .*BigInt/);
    const deep = await accepted.wait(
      (await accepted.submit('test.odd-result', { kind: 'deep' })).id,
    );
    assert.equal(deep.error?.code, 'RESULT_TOO_DEEP');
    assert.match(deep.error?.message ?? '', /^The result /);
  });

  it('stop waits for a handler that finishes within the grace, and for its outcome to be written', async () => {
    const place = newStorePlace();
    const accepted = await startEngine({ place, operations: [held] });
    const op = await accepted.submit('test.held', { name: 'grace' });
    await eventually(() => gates.has('grace'));
    const stopping = accepted.stop({ timeoutMs: 10_000 });
    setTimeout(() => gates.get('grace')?.(undefined), 100);
    await stopping;
    assert.equal(reasons.has('grace'), false, 'not aborted: it finished in time');
    const after = place.open();
    await after.open();
    try {
      const stored = (await after.get(op.id)) as Operation;
      assert.equal(stored.status, 'succeeded', 'written before stop resolved');
    } finally {
      await after.close();
    }
  });

  it('stop without grace aborts with a ShutdownError and gives the operation back unspent', async () => {
    const place = newStorePlace();
    const accepted = await startEngine({ place, operations: [held] });
    const op = await accepted.submit('test.held', { name: 'no-grace' });
    await eventually(() => gates.has('no-grace'));
    await accepted.stop({ graceful: false });
    assert.equal(reasons.get('no-grace'), 'ShutdownError');
    const after = place.open();
    await after.open();
    try {
      const stored = (await after.get(op.id)) as Operation;
      assert.equal(stored.status, 'queued');
      assert.equal(stored.attempts, 0, 'the attempt is not spent');
      assert.deepEqual(stored.error, {
        code: 'WORKER_SHUTDOWN',
        message: 'The worker shut down during this attempt.',
      });
    } finally {
      await after.close();
    }
  });

  it('stop gives back, after one more second, what a handler that ignores its signal still holds', async () => {
    const place = newStorePlace();
    const accepted = await startEngine({ place, operations: [held] });
    const op = await accepted.submit('test.held', { name: 'deaf', ignore: true });
    await eventually(() => gates.has('deaf'));
    await accepted.stop({ graceful: false });
    assert.equal(reasons.get('deaf'), 'ShutdownError');
    const after = place.open();
    await after.open();
    try {
      const stored = (await after.get(op.id)) as Operation;
      assert.equal(stored.status, 'queued', 'given back although the handler never returned');
      assert.equal(stored.error?.code, 'WORKER_SHUTDOWN');
    } finally {
      await after.close();
      gates.get('deaf')?.(undefined);
    }
  });

  it('a RetryAfterError or a PermanentError decides the next attempt, whatever the backoff', async () => {
    const thrower = defineOperation<{ kind: string }, string>({
      type: 'test.thrower',
      handler: ({ kind }, ctx) => {
        if (ctx.attempt > 1) return Promise.resolve('again');
        if (kind === 'permanent') throw new PermanentError('stop here', { code: 'NO' });
        throw new RetryAfterError(0);
      },
    });
    const accepted = await startEngine({ operations: [thrower], backoff: () => 3_600_000 });
    const permanent = await accepted.wait(
      (await accepted.submit('test.thrower', { kind: 'permanent' }, { maxAttempts: 3 })).id,
    );
    assert.equal(permanent.status, 'failed');
    assert.equal(permanent.attempts, 1);
    assert.deepEqual(permanent.error, { code: 'NO', message: 'stop here' });
    const retried = await accepted.wait(
      (await accepted.submit('test.thrower', { kind: 'after' }, { maxAttempts: 3 })).id,
    );
    assert.equal(retried.status, 'succeeded', 'RetryAfterError(0) beats the hour of backoff');
    assert.equal(retried.attempts, 2);
    const history = await historyOf(accepted, retried.id);
    assert.ok(history.some((e) => e.type === 'operation.retrying'));
  });

  it('a fractional RetryAfterError delay is rounded to a whole ms, and the retry is written (found by engine-properties)', async () => {
    // It once reached PostgreSQL's bigint run_at as 1796412123956.5: the write failed, the
    // handler's error was lost and the operation waited out its lease.
    const fraction = defineOperation<null, string>({
      type: 'test.fraction',
      handler: (_input, ctx) => {
        if (ctx.attempt > 1) return Promise.resolve('then');
        throw new RetryAfterError(2.5, 'in two and a half ms', { code: 'SOON' });
      },
    });
    const accepted = await startEngine({ operations: [fraction] });
    const done = await accepted.wait((await accepted.submit('test.fraction', null)).id);
    assert.equal(done.status, 'succeeded');
    assert.equal(done.attempts, 2);
    const retrying = (await historyOf(accepted, done.id)).find(
      (e) => e.type === 'operation.retrying',
    );
    assert.ok(retrying);
    const data = retrying.data as { runAt: number; error: { code: string } };
    assert.equal(data.error.code, 'SOON', "the handler's error is kept");
    assert.ok(Number.isInteger(data.runAt), `runAt ${data.runAt}`);
  });
});
