import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { AcceptedError, PermanentError, RetryAfterError } from '../src/domain/errors.ts';
import type { OperationEvent } from '../src/domain/events.ts';
import { newOperationId } from '../src/domain/ids.ts';
import { createAccepted } from '../src/engine/accepted.ts';
import { defineOperation, type HandlerContext } from '../src/engine/definition.ts';
import { demoOperations, sleep } from '../src/engine/demo.ts';
import {
  eventually,
  historyOf,
  memoryLogger,
  newStorePlace,
  onStore,
  startEngine,
  stopAtEnd,
  stopEngines,
  testStore,
  type StorePlace,
} from './helpers.ts';

const T = { timeout: 30_000 };
// No test shares an engine: each stops when its test ends (on PostgreSQL, its connections).
afterEach(stopEngines);

/** A handler that sleeps until its signal aborts, recording the abort reason's name. */
function sleepUntilAborted(reasons: string[], started?: () => void) {
  return async (_input: unknown, ctx: HandlerContext) => {
    started?.();
    try {
      await sleep(30_000, ctx.signal);
    } catch (error) {
      reasons.push((error as Error).name);
      throw error;
    }
  };
}

async function rejectsCode(promise: Promise<unknown>, code: string) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof AcceptedError, String(error));
    assert.equal(error.code, code);
    return true;
  });
}

describe(onStore('engine: running operations'), T, () => {
  it('runs a handler and records its result, with queued, started and succeeded events', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const op = await accepted.submit('demo.echo', { hello: 'world' }, { labels: { team: 'a' } });
    assert.equal(op.status, 'queued');
    assert.match(op.id, /^op_[0-9A-Za-z]{30}$/);
    const done = await accepted.wait(op.id);
    assert.equal(done.status, 'succeeded');
    assert.deepEqual(done.result, { hello: 'world' });
    assert.equal(done.attempts, 1);
    assert.deepEqual(done.labels, { team: 'a' });
    const events = await historyOf(accepted, op.id);
    assert.deepEqual(
      events.map((e) => [e.type, e.version]),
      [
        ['operation.queued', 1],
        ['operation.started', 2],
        ['operation.succeeded', 3],
      ],
    );
    assert.deepEqual(events[2]?.data.result, { hello: 'world' });
  });

  it('gives the handler its context: id, attempt, labels, signal, logger', async () => {
    const seen: unknown[] = [];
    const accepted = await startEngine({
      operations: [
        defineOperation({
          type: 'ctx.check',
          handler: (_input, ctx) => {
            seen.push({
              operationId: ctx.operationId,
              attempt: ctx.attempt,
              maxAttempts: ctx.maxAttempts,
              type: ctx.type,
              labels: ctx.labels,
              aborted: ctx.signal.aborted,
            });
            ctx.log.info({}, 'hello from handler');
            return null;
          },
        }),
      ],
    });
    const op = await accepted.submit('ctx.check', null, { labels: { k: 'v' }, maxAttempts: 4 });
    await accepted.wait(op.id);
    assert.deepEqual(seen, [
      {
        operationId: op.id,
        attempt: 1,
        maxAttempts: 4,
        type: 'ctx.check',
        labels: { k: 'v' },
        aborted: false,
      },
    ]);
  });

  it('retries with backoff until a flaky handler succeeds', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const op = await accepted.submit('demo.flaky', { failTimes: 2 });
    const done = await accepted.wait(op.id);
    assert.equal(done.status, 'succeeded');
    assert.deepEqual(done.result, { attempts: 3 });
    const events = await historyOf(accepted, op.id);
    const retrying = events.filter((e) => e.type === 'operation.retrying');
    assert.equal(retrying.length, 2);
    // demo.flaky backs off from 50 ms, doubling, with up to half taken off by jitter: the
    // n-th retry waits from 50 * 2^(n-1) / 2 to 50 * 2^(n-1) ms (a constant delay fails this).
    for (const [n, event] of retrying.entries()) {
      assert.equal(event.data.error?.code, 'FLAKY');
      const delay = (event.data.runAt ?? 0) - event.time;
      const full = 50 * 2 ** n;
      assert.ok(delay >= full / 2 && delay <= full, `retry ${n + 1} waits ${delay} ms`);
    }
    // The next attempt does not start before the scheduled time.
    const started = events.filter((e) => e.type === 'operation.started');
    assert.ok((started[1]?.time ?? 0) >= (retrying[0]?.data.runAt ?? Infinity));
  });

  it('fails for good after maxAttempts, keeping the last error code and message', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const op = await accepted.submit(
      'demo.fail',
      { message: 'disk full', code: 'NO_SPACE' },
      { maxAttempts: 2 },
    );
    const done = await accepted.wait(op.id);
    assert.equal(done.status, 'failed');
    assert.equal(done.attempts, 2);
    assert.deepEqual(done.error, { code: 'NO_SPACE', message: 'disk full' });
  });

  it('does not retry a PermanentError', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const op = await accepted.submit('demo.fail', {
      message: 'bad card',
      code: 'CARD_DECLINED',
      permanent: true,
    });
    const done = await accepted.wait(op.id);
    assert.equal(done.status, 'failed');
    assert.equal(done.attempts, 1);
    assert.deepEqual(done.error, { code: 'CARD_DECLINED', message: 'bad card' });
  });

  it('waits at least the delay of a RetryAfterError before the next attempt', async () => {
    const accepted = await startEngine({
      operations: [
        defineOperation({
          type: 'rate.limited',
          handler: (_input, ctx) => {
            if (ctx.attempt === 1) throw new RetryAfterError(300, 'upstream says wait');
            return 'ok';
          },
        }),
      ],
    });
    const op = await accepted.submit('rate.limited');
    await accepted.wait(op.id);
    const events = await historyOf(accepted, op.id);
    const retrying = events.find((e) => e.type === 'operation.retrying');
    assert.ok(retrying);
    assert.equal(retrying.data.error?.code, 'RETRY_AFTER');
    assert.ok((retrying.data.runAt ?? 0) >= retrying.time + 300);
    const secondStart = events.filter((e) => e.type === 'operation.started')[1];
    assert.ok((secondStart?.time ?? 0) >= (retrying.data.runAt ?? Infinity));
  });

  it('times out an attempt: aborts the signal with a TimeoutError and records TIMEOUT', async () => {
    const reasons: string[] = [];
    const accepted = await startEngine({
      operations: [
        defineOperation({
          type: 'slow',
          timeoutMs: 100,
          maxAttempts: 1,
          handler: sleepUntilAborted(reasons),
        }),
      ],
    });
    const op = await accepted.submit('slow');
    const done = await accepted.wait(op.id);
    assert.equal(done.status, 'failed');
    assert.equal(done.error?.code, 'TIMEOUT');
    await eventually(() => reasons.length === 1);
    assert.deepEqual(reasons, ['TimeoutError']);
  });

  it('never lets a zombie attempt overwrite the outcome after its lease expired', async () => {
    const logger = memoryLogger();
    const accepted = await startEngine({
      logger,
      leaseMs: 150,
      heartbeatMs: 60_000, // no renewal: the first attempt's lease will expire
      leaseRecoveryIntervalMs: 50,
      operations: [
        defineOperation({
          type: 'zombie',
          handler: async (_input, ctx) => {
            if (ctx.attempt === 1) await new Promise((resolve) => setTimeout(resolve, 600));
            return { attempt: ctx.attempt };
          },
        }),
      ],
    });
    const op = await accepted.submit('zombie');
    const done = await accepted.wait(op.id);
    assert.deepEqual(done.result, { attempt: 2 });
    // Let the zombie finish and try to complete.
    await eventually(() => logger.lines.some((l) => l.msg.includes('lease was lost')));
    const events = await historyOf(accepted, op.id);
    assert.equal(events.filter((e) => e.type === 'operation.succeeded').length, 1);
    assert.equal(
      events.find((e) => e.type === 'operation.retrying')?.data.error?.code,
      'LEASE_EXPIRED',
    );
    assert.deepEqual((await accepted.get(op.id))?.result, { attempt: 2 });
  });

  it('starts a delayed operation no sooner than runAt', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const runAt = Date.now() + 400;
    const op = await accepted.submit('demo.echo', 1, { runAt: new Date(runAt) });
    assert.equal(op.runAt, runAt);
    const done = await accepted.wait(op.id);
    assert.ok((done.startedAt ?? 0) >= runAt);
  });

  it('never runs more handlers at once than the concurrency limit', async () => {
    let running = 0;
    let peak = 0;
    const accepted = await startEngine({
      concurrency: 3,
      operations: [
        defineOperation({
          type: 'count',
          handler: async () => {
            peak = Math.max(peak, ++running);
            await new Promise((resolve) => setTimeout(resolve, 20));
            running--;
          },
        }),
      ],
    });
    const ops = await Promise.all(Array.from({ length: 20 }, () => accepted.submit('count')));
    for (const op of ops) assert.equal((await accepted.wait(op.id)).status, 'succeeded');
    assert.equal(peak, 3);
  });

  it('reports progress, conflating bursts, with the latest value kept', async () => {
    const accepted = await startEngine({
      operations: [
        defineOperation({
          type: 'burst',
          handler: async (_input, ctx) => {
            for (let i = 1; i <= 50; i++) void ctx.progress({ fraction: i / 50, message: `${i}` });
            await ctx.progress({ fraction: 1, message: 'done', data: { rows: 7 } });
            return null;
          },
        }),
      ],
    });
    const op = await accepted.submit('burst');
    const done = await accepted.wait(op.id);
    assert.deepEqual(done.progress, { fraction: 1, message: 'done', data: { rows: 7 } });
    const progress = (await historyOf(accepted, op.id)).filter(
      (e) => e.type === 'operation.progress',
    );
    assert.ok(progress.length >= 1 && progress.length < 51, `conflated to ${progress.length}`);
    assert.deepEqual(progress.at(-1)?.data.progress, {
      fraction: 1,
      message: 'done',
      data: { rows: 7 },
    });
  });

  it('rejects invalid progress from a handler with a TypeError it can see', async () => {
    const accepted = await startEngine({
      operations: [
        defineOperation({
          type: 'bad.progress',
          maxAttempts: 1,
          handler: (_input, ctx) => {
            void ctx.progress({ fraction: 2 });
          },
        }),
      ],
    });
    const done = await accepted.wait((await accepted.submit('bad.progress')).id);
    assert.equal(done.status, 'failed');
    assert.match(done.error?.message ?? '', /fraction must be a number from 0 to 1/);
  });

  it('fails an operation whose result is not JSON', async () => {
    const accepted = await startEngine({
      operations: [defineOperation({ type: 'bigint', handler: () => 10n as never })],
    });
    const done = await accepted.wait((await accepted.submit('bigint')).id);
    assert.equal(done.status, 'failed');
    assert.equal(done.error?.code, 'RESULT_NOT_SERIALIZABLE');
  });
});

describe(onStore('engine: cancellation, retry and delete'), T, () => {
  it('cancels a queued operation at once; it never runs', async () => {
    const ran: string[] = [];
    const accepted = await startEngine({
      operations: [
        defineOperation({ type: 'x', handler: (_input, ctx) => ran.push(ctx.operationId) }),
      ],
    });
    // Due soon, so the worker would run it if the cancel did not hold: a later operation of
    // the same type runs, and the canceled one did not run before it.
    const op = await accepted.submit('x', null, { runAt: Date.now() + 200 });
    const canceled = await accepted.cancel(op.id);
    assert.equal(canceled.status, 'canceled');
    assert.equal(canceled.error?.code, 'CANCELED');
    const later = await accepted.submit('x', null, { runAt: Date.now() + 400 });
    assert.equal((await accepted.wait(later.id)).status, 'succeeded');
    assert.deepEqual(ran, [later.id]);
    assert.equal((await accepted.get(op.id))?.attempts, 0);
    await rejectsCode(accepted.cancel(op.id), 'ALREADY_TERMINAL');
  });

  it('cancels a running operation: the signal aborts with CancelError and it ends canceled', async () => {
    const reasons: string[] = [];
    let started!: () => void;
    const isStarted = new Promise<void>((resolve) => (started = resolve));
    const accepted = await startEngine({
      operations: [
        defineOperation({
          type: 'long',
          handler: sleepUntilAborted(reasons, started),
        }),
      ],
    });
    const op = await accepted.submit('long');
    await isStarted;
    const requested = await accepted.cancel(op.id);
    assert.equal(requested.status, 'running');
    assert.notEqual(requested.cancelRequestedAt, null);
    const done = await accepted.wait(op.id);
    assert.equal(done.status, 'canceled');
    assert.deepEqual(reasons, ['CancelError']);
    const types = (await historyOf(accepted, op.id)).map((e) => e.type);
    assert.deepEqual(types.slice(-2), ['operation.cancel_requested', 'operation.canceled']);
  });

  it('retries a failed operation by hand, and deletes only finished ones', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const op = await accepted.submit('demo.fail', { message: 'no', permanent: true });
    assert.equal((await accepted.wait(op.id)).status, 'failed');
    const retried = await accepted.retry(op.id);
    assert.equal(retried.status, 'queued');
    assert.equal(retried.attempts, 0);
    assert.equal((await accepted.wait(op.id)).status, 'failed');
    const queued = await accepted.submit('demo.echo', 1, { runAt: Date.now() + 60_000 });
    await rejectsCode(accepted.delete(queued.id), 'ILLEGAL_TRANSITION');
    await accepted.delete(op.id);
    assert.equal(await accepted.get(op.id), null);
    await rejectsCode(accepted.cancel('op_nope'), 'OPERATION_NOT_FOUND');
  });

  it('keeps tenants apart', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const op = await accepted.submit('demo.echo', 1, {
      tenant: 'acme',
      runAt: Date.now() + 60_000,
    });
    assert.ok(await accepted.get(op.id, { tenant: 'acme' }));
    assert.equal(await accepted.get(op.id, { tenant: 'globex' }), null);
    await rejectsCode(accepted.cancel(op.id, { tenant: 'globex' }), 'OPERATION_NOT_FOUND');
    assert.equal((await accepted.list({ tenant: 'globex' })).items.length, 0);
    assert.equal((await accepted.list({ tenant: 'acme' })).items.length, 1);
  });
});

describe(onStore('engine: idempotency keys and conditions'), T, () => {
  it('submits once per key: the same request returns the first operation, another is refused', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const later = Date.now() + 60_000;
    const first = await accepted.submit(
      'demo.echo',
      { a: 1 },
      { idempotencyKey: 'k1', runAt: later },
    );
    const again = await accepted.submit(
      'demo.echo',
      { a: 1 },
      { idempotencyKey: 'k1', runAt: later },
    );
    assert.equal(again.id, first.id);
    await rejectsCode(
      accepted.submit('demo.echo', { a: 2 }, { idempotencyKey: 'k1', runAt: later }),
      'IDEMPOTENCY_KEY_REUSED',
    );
    const otherTenant = await accepted.submit(
      'demo.echo',
      { a: 1 },
      { idempotencyKey: 'k1', runAt: later, tenant: 'globex' },
    );
    assert.notEqual(otherTenant.id, first.id);
    await rejectsCode(accepted.submit('demo.echo', 1, { idempotencyKey: '' }), 'INVALID_HEADER');
  });

  it('forgets keys after idempotencyRetentionMs', async () => {
    const accepted = await startEngine({ operations: demoOperations, idempotencyRetentionMs: 50 });
    const first = await accepted.submit('demo.echo', 1, { idempotencyKey: 'short' });
    await new Promise((resolve) => setTimeout(resolve, 80));
    const second = await accepted.submit('demo.echo', 1, { idempotencyKey: 'short' });
    assert.notEqual(second.id, first.id);
  });

  it('cancels, retries and deletes only at the given version', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const op = await accepted.submit('demo.echo', 1, { runAt: Date.now() + 60_000 });
    await rejectsCode(
      accepted.cancel(op.id, { ifVersion: [op.version + 1] }),
      'PRECONDITION_FAILED',
    );
    const canceled = await accepted.cancel(op.id, { ifVersion: [op.version] });
    assert.equal(canceled.status, 'canceled');
    await rejectsCode(accepted.delete(op.id, { ifVersion: [op.version] }), 'PRECONDITION_FAILED');
    await accepted.delete(op.id, { ifVersion: [canceled.version] });
    assert.equal(await accepted.get(op.id), null);
  });
});

describe(onStore('engine: submit validation stores nothing'), T, () => {
  it('rejects an unknown type, naming the known ones', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    await assert.rejects(accepted.submit('demo.nope', {}), (error: unknown) => {
      assert.ok(error instanceof AcceptedError);
      assert.equal(error.code, 'UNKNOWN_OPERATION_TYPE');
      assert.match(error.fix ?? '', /demo\.echo/);
      return true;
    });
    assert.equal(await accepted.store.lastSeq(), 0);
  });

  it('rejects input that fails the type schema, listing every field', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    await assert.rejects(
      accepted.submit('demo.progress', { steps: 'many', extra: 1 }),
      (error: unknown) => {
        assert.ok(error instanceof AcceptedError);
        assert.equal(error.code, 'VALIDATION_FAILED');
        const fields = error.fields?.map((f) => f.field).sort();
        assert.deepEqual(fields, ['/input/extra', '/input/ms', '/input/steps']);
        return true;
      },
    );
    assert.equal((await accepted.list()).items.length, 0);
  });

  it('rejects oversized input and bad options', async () => {
    const accepted = await startEngine({ operations: demoOperations, maxInputBytes: 1000 });
    await rejectsCode(
      accepted.submit('demo.echo', { blob: 'x'.repeat(2000) }),
      'PAYLOAD_TOO_LARGE',
    );
    await rejectsCode(accepted.submit('demo.echo', 1, { maxAttempts: 0 }), 'VALIDATION_FAILED');
    await rejectsCode(
      accepted.submit('demo.echo', 1, { labels: { 'bad key!': 'v' } }),
      'VALIDATION_FAILED',
    );
    await rejectsCode(
      accepted.submit('demo.echo', 1, { callbackUrl: 'ftp://x' }),
      'VALIDATION_FAILED',
    );
    await rejectsCode(
      accepted.submit('demo.echo', 1, { runAt: 'not a date' }),
      'VALIDATION_FAILED',
    );
    assert.equal(await accepted.store.lastSeq(), 0);
  });
});

describe(onStore('engine: the event log as a stream'), T, () => {
  it('follows new events in order and resumes from a cursor without gaps or repeats', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const controller = new AbortController();
    const seen: OperationEvent[] = [];
    const reader = (async () => {
      for await (const event of accepted.events({ signal: controller.signal })) {
        seen.push(event);
        if (seen.filter((e) => e.type === 'operation.succeeded').length === 10) break;
      }
    })();
    const ops = await Promise.all(
      Array.from({ length: 10 }, (_, i) => accepted.submit('demo.echo', i)),
    );
    await reader;
    const seqs = seen.map((e) => e.seq);
    assert.deepEqual(
      seqs,
      [...seqs].sort((a, b) => a - b),
    );
    assert.equal(new Set(seqs).size, seqs.length);
    assert.equal(seen.length, 30);
    // Resume halfway: exactly the rest.
    const cut = seen[14]!.seq;
    const rest: number[] = [];
    for await (const event of accepted.events({ after: cut, follow: false })) rest.push(event.seq);
    assert.deepEqual(rest, seqs.slice(15));
    for (const op of ops) assert.equal((await accepted.get(op.id))?.status, 'succeeded');
  });

  it('wait() returns on the next version when asked, or at the timeout', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const op = await accepted.submit('demo.sleep', { ms: 300 });
    const next = await accepted.wait(op.id, { afterVersion: op.version });
    assert.ok(next.version > op.version);
    // A long operation: wait() must give up at its timeout with the current, unfinished state.
    const long = await accepted.submit('demo.sleep', { ms: 60_000 });
    const early = await accepted.wait(long.id, { timeoutMs: 50 });
    assert.notEqual(early.status, 'succeeded');
    await accepted.cancel(long.id);
  });
});

/** A started engine on the demo types that the test stops itself (startEngine's wait for the file's end). */
async function startStoppable(place: StorePlace) {
  const accepted = createAccepted({
    store: place.open(),
    operations: demoOperations,
    logger: memoryLogger(),
  });
  await accepted.start();
  stopAtEnd(accepted); // if the test fails before it stops it
  return accepted;
}

describe(onStore('engine: lifecycle'), T, () => {
  it('ends pending waits with the current state as soon as stop begins', async () => {
    const accepted = await startStoppable(newStorePlace());
    const op = await accepted.submit('demo.sleep', { ms: 300 });
    await eventually(async () => (await accepted.get(op.id))?.status === 'running');
    const running = await accepted.get(op.id);
    const waiting = accepted.wait(op.id, { afterVersion: running?.version });
    const stopped = accepted.stop({ graceful: true, timeoutMs: 5_000 });
    const answered = await waiting;
    assert.equal(answered.status, 'running', 'answered at once, not when the handler finished');
    await stopped;
  });

  it('graceful stop runs an operation whose claim was in flight when stop began', async () => {
    const place = newStorePlace();
    const accepted = await startStoppable(place);
    const op = await accepted.submit('demo.sleep', { ms: 100 });
    // The submit's commit hint has just started a claim; stop before it resolves.
    await accepted.stop({ graceful: true, timeoutMs: 5_000 });
    const reopened = await startEngine({ place, operations: demoOperations });
    const history = (await historyOf(reopened, op.id)).map((e) => e.type);
    assert.deepEqual(history.slice(0, 3), [
      'operation.queued',
      'operation.started',
      'operation.succeeded',
    ]);
  });

  it('graceful stop lets a running handler finish', async () => {
    const place = newStorePlace();
    const accepted = await startStoppable(place);
    const op = await accepted.submit('demo.sleep', { ms: 200 });
    await eventually(async () => (await accepted.get(op.id))?.status === 'running');
    await accepted.stop({ graceful: true, timeoutMs: 5_000 });
    const reopened = await startEngine({ place, operations: demoOperations });
    const read = await reopened.get(op.id);
    assert.equal(read?.status, 'succeeded');
  });

  it('stop past the grace aborts handlers and gives their operations back without spending an attempt', async () => {
    const place = newStorePlace();
    const accepted = await startStoppable(place);
    const op = await accepted.submit('demo.sleep', { ms: 60_000 });
    await eventually(async () => (await accepted.get(op.id))?.status === 'running');
    await accepted.stop({ graceful: true, timeoutMs: 50 });
    await rejectsCode(accepted.submit('demo.echo', 1), 'SHUTTING_DOWN');
    const reopened = await startEngine({ place, operations: demoOperations, worker: false });
    const read = await reopened.get(op.id);
    assert.equal(read?.status, 'queued');
    assert.equal(read?.attempts, 0);
    assert.equal(read?.error?.code, 'WORKER_SHUTDOWN');
  });

  it('removes finished operations past retention', async () => {
    const accepted = await startEngine({
      operations: demoOperations,
      retentionMs: 0,
      retentionIntervalMs: 1000,
    });
    const op = await accepted.submit('demo.echo', 1);
    await accepted.wait(op.id);
    await eventually(async () => (await accepted.get(op.id)) === null);
  });

  it('refuses work before start and after stop', async () => {
    const accepted = createAccepted({
      store: testStore(),
      operations: demoOperations,
    });
    await rejectsCode(accepted.submit('demo.echo', 1), 'NOT_STARTED');
    assert.throws(
      () =>
        createAccepted({
          store: testStore(),
          operations: [...demoOperations, demoOperations[0]!],
        }),
      /defined twice/,
    );
  });

  it('runs handlers only for the types it knows, and throws handler errors into the record', async () => {
    const accepted = await startEngine({
      operations: [
        defineOperation({
          type: 'thrower',
          maxAttempts: 1,
          handler: () => {
            throw new PermanentError('nope', { code: 'NOPE', details: { why: 'because' } });
          },
        }),
      ],
    });
    const done = await accepted.wait((await accepted.submit('thrower')).id);
    assert.deepEqual(done.error, { code: 'NOPE', message: 'nope', details: { why: 'because' } });
  });
});

describe(onStore('engine: leases and types'), T, () => {
  it('renews the lease of a handler that runs many leases long: one attempt, no recovery', async () => {
    let finish: () => void = () => undefined;
    let started = 0;
    const accepted = await startEngine({
      leaseMs: 200,
      leaseRecoveryIntervalMs: 20,
      operations: [
        defineOperation({
          type: 'long',
          maxAttempts: 3,
          handler: async (_input, ctx) => {
            started = Date.now();
            await new Promise<void>((resolve, reject) => {
              finish = resolve;
              ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), {
                once: true,
              });
            });
            return { attempt: ctx.attempt };
          },
        }),
      ],
    });
    const op = await accepted.submit('long');
    await eventually(() => started > 0);
    // Ten leases pass while the handler runs, with lease recovery every 20 ms: without the
    // heartbeat its lease would expire, and the operation be retried or failed.
    await eventually(() => Date.now() > started + 2_000, 10_000);
    finish();
    const done = await accepted.wait(op.id);
    assert.equal(done.status, 'succeeded');
    assert.deepEqual(done.result, { attempt: 1 });
    const types = (await historyOf(accepted, op.id)).map((event) => event.type);
    assert.deepEqual(types, ['operation.queued', 'operation.started', 'operation.succeeded']);
  });

  it('claims only the types it has handlers for: another type stays queued, untouched', async () => {
    const place = newStorePlace();
    // Another node's type (or a remote worker's): in the same store, with no handler here.
    const foreign = place.open();
    await foreign.open();
    const elsewhere = await foreign.create(
      {
        id: newOperationId(),
        tenant: 'default',
        type: 'elsewhere.only',
        input: null,
        maxAttempts: 1,
        runAt: Date.now(),
        timeoutMs: null,
        labels: {},
        callbackUrl: null,
      },
      Date.now(),
    );
    await foreign.close();
    const accepted = await startEngine({ place, operations: demoOperations });
    // The worker has claimed (the echo ran), more than once, since the foreign one was due.
    for (let i = 0; i < 3; i++) {
      const echo = await accepted.submit('demo.echo', i);
      assert.equal((await accepted.wait(echo.id)).status, 'succeeded');
    }
    const untouched = await accepted.get(elsewhere.id);
    assert.equal(untouched?.status, 'queued');
    assert.equal(untouched.attempts, 0);
    assert.deepEqual(
      (await historyOf(accepted, elsewhere.id)).map((event) => event.type),
      ['operation.queued'],
    );
  });
});
