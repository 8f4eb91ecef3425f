/**
 * The store conformance suite: the tests every `Store` adapter must pass, in parts: the
 * operations store (`operationsConformance`) and each capability (`webhooksConformance`,
 * `consumersConformance`), each runnable on its own. An adapter's test file calls
 * `storeConformance('name', factory)` (every part, or `{ parts }`); the factory returns a
 * fresh, empty, opened store (its own file, schema or database) and a cleanup.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AcceptedError } from '../domain/errors.ts';
import { newOperationId } from '../domain/ids.ts';
import type { NewOperation } from '../domain/operation.ts';
import type { NewEndpoint } from '../domain/webhooks.ts';
import { WEBHOOK_CONSUMER } from './consumer-rules.ts';
import type { ConsumerStore } from './consumers.ts';
import type {
  ClaimedDelivery,
  DispatchRequest,
  DispatchResult,
  Store,
  StoreHint,
  WebhookStore,
} from './store.ts';

export interface StoreFixture {
  store: Store;
  cleanup(): Promise<void>;
  /**
   * Another store, opened, on the same data as `store` (another node on the same schema),
   * when the adapter lets several share it; closed by `cleanup`. Without it (an embedded store
   * owned by one process) the consumer tests play the second node through the same store.
   */
  peer?(): Promise<Store>;
}

/** The parts of the suite: the operations store and each capability. */
export type ConformancePart = 'operations' | 'webhooks' | 'consumers';

export const CONFORMANCE_PARTS: readonly ConformancePart[] = [
  'operations',
  'webhooks',
  'consumers',
];

/**
 * Every part of the suite (or `options.parts`) against the adapter `factory` makes. A part for
 * a capability the store lacks fails, saying so: leave it out of `parts`.
 */
export function storeConformance(
  name: string,
  factory: () => Promise<StoreFixture>,
  options: { parts?: readonly ConformancePart[] } = {},
): void {
  const parts = new Set(options.parts ?? CONFORMANCE_PARTS);
  if (parts.has('operations')) operationsConformance(name, factory);
  if (parts.has('webhooks')) webhooksConformance(name, factory);
  if (parts.has('consumers')) consumersConformance(name, factory);
}

/** Runs a test on a fresh fixture, cleaning up whatever happens. */
function runner(factory: () => Promise<StoreFixture>) {
  return async (run: (store: Store, fixture: StoreFixture) => Promise<void>): Promise<void> => {
    const fixture = await factory();
    try {
      await run(fixture.store, fixture);
    } finally {
      await fixture.cleanup();
    }
  };
}

/** The store's webhook capability; a failure saying so when it has none. */
export function webhooksOf(store: Store): WebhookStore {
  assert.ok(store.webhooks, `the ${store.kind} store offers no webhooks capability`);
  return store.webhooks;
}

/** The store's relay cursor capability; a failure saying so when it has none. */
export function consumersOf(store: Store): ConsumerStore {
  assert.ok(store.consumers, `the ${store.kind} store offers no consumers capability`);
  return store.consumers;
}

/** A new operation of tenant `t1` for store tests, with `overrides`. */
export function newOp(overrides: Partial<NewOperation> = {}): NewOperation {
  return {
    id: newOperationId(),
    tenant: 't1',
    type: 'test.op',
    input: { n: 1 },
    maxAttempts: 3,
    runAt: 1_000,
    timeoutMs: null,
    labels: {},
    callbackUrl: null,
    ...overrides,
  };
}

let endpointCount = 0;
/** A new webhook endpoint as the conformance suite makes them (a unique id unless given). */
export function newEndpoint(overrides: Partial<NewEndpoint> = {}): NewEndpoint {
  return {
    id: `ep_test${++endpointCount}_${Math.random().toString(36).slice(2, 10)}`,
    tenant: 't1',
    url: 'https://example.com/hook',
    description: null,
    eventTypes: null,
    labels: null,
    secret: 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==',
    signingKey: null,
    retrySchedule: null,
    rateLimit: null,
    ...overrides,
  };
}

let deliveryCount = 0;
/** A dispatch request with deterministic ids and a payload naming the event. */
function dispatchRequest(now: number): Omit<DispatchRequest, 'lease'> {
  return {
    limit: 100,
    now,
    newId: () => `dlv_test${++deliveryCount}`,
    newSecret: () => 'whsec_Y2FsbGJhY2stc2VjcmV0LWNhbGxiYWNrLXNlY3JldA==',
    payload: (event) => JSON.stringify({ type: event.type, seq: event.seq }),
  };
}

/** One dispatch pass at `now`, under the `webhooks` consumer's lease (taken or renewed). */
export async function dispatch(store: Store, now: number, limit = 100): Promise<DispatchResult> {
  const lease = await consumersOf(store).acquire({
    name: WEBHOOK_CONSUMER,
    holder: 'conformance',
    leaseMs: 3_600_000,
    now,
  });
  assert.ok(lease, 'the webhooks consumer is free');
  return webhooksOf(store).dispatchDeliveries({ ...dispatchRequest(now), limit, lease });
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof AcceptedError, `expected AcceptedError, got ${String(error)}`);
    assert.equal(error.code, code);
    return true;
  });
}

/** Waits until `check()` holds; fails after 10 s (a hint that never comes is a failure). */
async function until(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) assert.fail('the expected hint never came');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The operations store: operations, leases, the log, idempotency keys, retention, hints. */
export function operationsConformance(name: string, factory: () => Promise<StoreFixture>): void {
  describe(`Store conformance: ${name}: operations`, () => {
    const withStore = runner(factory);

    const claimOne = async (store: Store, now = 2_000, leaseMs = 10_000) => {
      const { claimed } = await store.claim({ owner: 'w1', types: null, limit: 1, leaseMs, now });
      const first = claimed[0];
      assert.ok(first, 'expected one claimed operation');
      return first;
    };

    /** An operation claimed (lease `first`, 100 ms), recovered when that expired, re-claimed. */
    const reclaimed = async (store: Store) => {
      const op = newOp({ maxAttempts: 3 });
      await store.create(op, 1_000);
      const first = await claimOne(store, 2_000, 100);
      assert.equal(await store.recoverExpiredLeases(2_200, 10), 1);
      const second = await claimOne(store, 2_300, 10_000);
      return { op, first, second };
    };

    it('creates an operation with version 1 and an operation.queued event', () =>
      withStore(async (store) => {
        const op = newOp({ labels: { team: 'a' } });
        const created = await store.create(op, 1_000);
        assert.equal(created.status, 'queued');
        assert.equal(created.version, 1);
        const read = await store.get(op.id);
        assert.deepEqual(read, created);
        const events = await store.readEvents({ after: 0, limit: 10 });
        assert.equal(events.length, 1);
        assert.equal(events[0]?.type, 'operation.queued');
        assert.equal(events[0]?.operationId, op.id);
        assert.equal(events[0]?.version, 1);
        assert.equal(await store.lastSeq(), events[0]?.seq);
      }));

    it("puts the operation's labels on every event, and filters the log by them", () =>
      withStore(async (store) => {
        const red = newOp({ labels: { team: 'red', tier: '1' } });
        const blue = newOp({ labels: { team: 'blue' }, type: 'other.op' });
        const bare = newOp();
        for (const op of [red, blue, bare]) await store.create(op, 1_000);
        const { claimed } = await store.claim({
          owner: 'w1',
          types: null,
          limit: 3,
          leaseMs: 10_000,
          now: 2_000,
        });
        for (const { lease } of claimed) await store.complete(lease, null, 3_000);
        const all = await store.readEvents({ after: 0, limit: 100 });
        assert.equal(all.length, 9);
        for (const event of all) {
          const op = [red, blue, bare].find((o) => o.id === event.operationId);
          assert.deepEqual(event.labels, op?.labels);
        }
        const ids = (events: { operationId: string }[]) => [
          ...new Set(events.map((e) => e.operationId)),
        ];
        const byLabel = await store.readEvents({ after: 0, limit: 100, labels: { team: 'red' } });
        assert.deepEqual(ids(byLabel), [red.id]);
        assert.equal(byLabel.length, 3);
        const both = await store.readEvents({
          after: 0,
          limit: 100,
          labels: { team: 'red', tier: '2' },
        });
        assert.equal(both.length, 0);
        const byType = await store.readEvents({
          after: 0,
          limit: 100,
          operationTypes: ['other.op'],
        });
        assert.deepEqual(ids(byType), [blue.id]);
        const byIds = await store.readEvents({
          after: 0,
          limit: 100,
          operationIds: [red.id, bare.id],
          types: ['operation.succeeded'],
        });
        assert.deepEqual(byIds.map((e) => e.operationId).sort(), [red.id, bare.id].sort());
      }));

    it('scopes reads by tenant', () =>
      withStore(async (store) => {
        const op = newOp({ tenant: 'a' });
        await store.create(op, 1_000);
        assert.ok(await store.get(op.id, 'a'));
        assert.equal(await store.get(op.id, 'b'), null);
        await rejectsWith(
          store.cancel(op.id, 'b', { code: 'CANCELED', message: 'x' }, 2_000),
          'OPERATION_NOT_FOUND',
        );
        assert.equal((await store.list({ tenant: 'b', limit: 10 })).items.length, 0);
        assert.equal((await store.readEvents({ after: 0, limit: 10, tenant: 'b' })).length, 0);
      }));

    it('claims due operations oldest runAt first, leaves future ones, honours the type filter', () =>
      withStore(async (store) => {
        const late = newOp({ runAt: 1_500 });
        const early = newOp({ runAt: 1_200 });
        const future = newOp({ runAt: 9_000 });
        const other = newOp({ runAt: 1_100, type: 'other.op' });
        for (const op of [late, early, future, other]) await store.create(op, 1_000);
        const result = await store.claim({
          owner: 'w1',
          types: ['test.op'],
          limit: 10,
          leaseMs: 5_000,
          now: 2_000,
        });
        assert.deepEqual(
          result.claimed.map((c) => c.operation.id),
          [early.id, late.id],
        );
        assert.equal(result.nextRunAt, 9_000);
        for (const c of result.claimed) {
          assert.equal(c.operation.status, 'running');
          assert.equal(c.operation.attempts, 1);
          assert.equal(c.operation.version, 2);
          // now + leaseMs, plus however long the write waited to run (see #20).
          assert.ok(c.lease.expiresAt >= 7_000, `expiry ${c.lease.expiresAt}`);
        }
        const started = await store.readEvents({
          after: 0,
          limit: 20,
          types: ['operation.started'],
        });
        assert.equal(started.length, 2);
      }));

    it('never leases one operation to two concurrent claimants', () =>
      withStore(async (store) => {
        const ids = new Set<string>();
        for (let i = 0; i < 200; i++) {
          const op = newOp();
          ids.add(op.id);
          await store.create(op, 1_000);
        }
        const seen: string[] = [];
        for (let round = 0; round < 3; round++) {
          const results = await Promise.all(
            Array.from({ length: 8 }, (_, w) =>
              store.claim({ owner: `w${w}`, types: null, limit: 13, leaseMs: 60_000, now: 2_000 }),
            ),
          );
          for (const result of results) for (const c of result.claimed) seen.push(c.operation.id);
        }
        assert.equal(seen.length, 200);
        assert.equal(new Set(seen).size, 200, 'an operation was claimed twice');
        assert.deepEqual(new Set(seen), ids);
      }));

    it('completes with the lease token and rejects a stale token without changing anything', () =>
      withStore(async (store) => {
        const op = newOp();
        await store.create(op, 1_000);
        const { lease } = await claimOne(store);
        await rejectsWith(
          store.complete({ operationId: op.id, token: 'lease_stale' }, { x: 1 }, 3_000),
          'LEASE_LOST',
        );
        assert.equal((await store.get(op.id))?.status, 'running');
        await store.complete(lease, { x: 2 }, 3_000);
        const done = await store.get(op.id);
        assert.equal(done?.status, 'succeeded');
        assert.deepEqual(done?.result, { x: 2 });
        assert.equal(done?.finishedAt, 3_000);
        assert.equal(done?.version, 3);
        await rejectsWith(store.complete(lease, { x: 3 }, 4_000), 'LEASE_LOST');
        const events = await store.readEvents({ after: 0, limit: 10, operationId: op.id });
        assert.deepEqual(
          events.map((e) => [e.type, e.version]),
          [
            ['operation.queued', 1],
            ['operation.started', 2],
            ['operation.succeeded', 3],
          ],
        );
      }));

    it('fails with a retry time (back to queued) or for good', () =>
      withStore(async (store) => {
        const op = newOp();
        await store.create(op, 1_000);
        const first = await claimOne(store);
        const error = { code: 'BOOM', message: 'boom' };
        await store.fail(first.lease, error, 5_000, 2_500);
        let read = await store.get(op.id);
        assert.equal(read?.status, 'queued');
        assert.equal(read?.runAt, 5_000);
        assert.deepEqual(read?.error, error);
        assert.equal(
          (await store.claim({ owner: 'w', types: null, limit: 1, leaseMs: 1, now: 4_999 })).claimed
            .length,
          0,
        );
        const second = await claimOne(store, 5_000);
        assert.equal(second.operation.attempts, 2);
        await store.fail(second.lease, error, null, 6_000);
        read = await store.get(op.id);
        assert.equal(read?.status, 'failed');
        assert.equal(read?.finishedAt, 6_000);
        const types = (await store.readEvents({ after: 0, limit: 10, operationId: op.id })).map(
          (e) => e.type,
        );
        assert.deepEqual(types, [
          'operation.queued',
          'operation.started',
          'operation.retrying',
          'operation.started',
          'operation.failed',
        ]);
      }));

    it('recovers expired leases: requeues, fails when out of attempts, and fences the old holder', () =>
      withStore(async (store) => {
        const op = newOp({ maxAttempts: 2 });
        await store.create(op, 1_000);
        const first = await claimOne(store, 2_000, 100);
        assert.equal(await store.recoverExpiredLeases(2_050, 10), 0, 'lease not yet expired');
        assert.equal(await store.recoverExpiredLeases(2_200, 10), 1);
        let read = await store.get(op.id);
        assert.equal(read?.status, 'queued');
        assert.equal(read?.error?.code, 'LEASE_EXPIRED');
        await rejectsWith(store.complete(first.lease, 1, 2_300), 'LEASE_LOST');
        await claimOne(store, 2_300, 100);
        assert.equal(await store.recoverExpiredLeases(3_000, 10), 1);
        read = await store.get(op.id);
        assert.equal(read?.status, 'failed');
        assert.equal(read?.error?.code, 'LEASE_EXPIRED');
      }));

    it('renews held leases and reports lost and cancel-requested ones', () =>
      withStore(async (store) => {
        const a = newOp();
        const b = newOp();
        await store.create(a, 1_000);
        await store.create(b, 1_000);
        const { claimed } = await store.claim({
          owner: 'w',
          types: null,
          limit: 2,
          leaseMs: 100,
          now: 2_000,
        });
        const leaseA = claimed.find((c) => c.operation.id === a.id)?.lease;
        const leaseB = claimed.find((c) => c.operation.id === b.id)?.lease;
        assert.ok(leaseA && leaseB);
        await store.cancel(b.id, undefined, { code: 'CANCELED', message: 'x' }, 2_010);
        const states = await store.renewLeases({
          leases: [leaseA, leaseB, { operationId: a.id, token: 'lease_other' }],
          leaseMs: 1_000,
          now: 2_050,
        });
        assert.deepEqual(
          states.map((s) => s.state),
          ['held', 'cancel_requested', 'lost'],
        );
        assert.equal(await store.recoverExpiredLeases(2_500, 10), 0, 'renewed lease must hold');
      }));

    it('cancels queued at once, running on request, and refuses terminal', () =>
      withStore(async (store) => {
        const queued = newOp();
        const running = newOp({ runAt: 500 });
        await store.create(queued, 1_000);
        await store.create(running, 1_000);
        const { lease } = await claimOne(store, 1_000);
        assert.equal(lease.operationId, running.id);
        const error = { code: 'CANCELED', message: 'Canceled on request.' };
        const c1 = await store.cancel(queued.id, 't1', error, 1_100);
        assert.equal(c1.status, 'canceled');
        assert.deepEqual(c1.error, error);
        const c2 = await store.cancel(running.id, 't1', error, 1_100);
        assert.equal(c2.status, 'running');
        assert.equal(c2.cancelRequestedAt, 1_100);
        const again = await store.cancel(running.id, 't1', error, 1_200);
        assert.equal(again.version, c2.version, 'a repeated cancel request changes nothing');
        await store.finishCanceled(lease, error, 1_300);
        assert.equal((await store.get(running.id))?.status, 'canceled');
        await rejectsWith(store.cancel(running.id, 't1', error, 1_400), 'ALREADY_TERMINAL');
        const types = (
          await store.readEvents({ after: 0, limit: 20, operationId: running.id })
        ).map((e) => e.type);
        assert.deepEqual(types, [
          'operation.queued',
          'operation.started',
          'operation.cancel_requested',
          'operation.canceled',
        ]);
      }));

    it('retries failed and canceled operations with a fresh budget, and refuses others', () =>
      withStore(async (store) => {
        const op = newOp({ maxAttempts: 1 });
        await store.create(op, 1_000);
        await rejectsWith(store.retry(op.id, undefined, 1_000, 1_000), 'ILLEGAL_TRANSITION');
        const { lease } = await claimOne(store);
        await store.fail(lease, { code: 'X', message: 'x' }, null, 2_100);
        const retried = await store.retry(op.id, undefined, 3_000, 2_200);
        assert.equal(retried.status, 'queued');
        assert.equal(retried.attempts, 0);
        assert.equal(retried.error, null);
        assert.equal(retried.runAt, 3_000);
        const again = await claimOne(store, 3_000);
        assert.equal(again.operation.attempts, 1);
      }));

    it('releases a lease without counting the attempt', () =>
      withStore(async (store) => {
        const op = newOp();
        await store.create(op, 1_000);
        const { lease } = await claimOne(store);
        await store.release(lease, { code: 'WORKER_SHUTDOWN', message: 'bye' }, 2_100);
        const read = await store.get(op.id);
        assert.equal(read?.status, 'queued');
        assert.equal(read?.attempts, 0);
        await rejectsWith(store.complete(lease, 1, 2_200), 'LEASE_LOST');
      }));

    it('records progress under the lease', () =>
      withStore(async (store) => {
        const op = newOp();
        await store.create(op, 1_000);
        const { lease } = await claimOne(store);
        await store.progress(lease, { fraction: 0.5, message: 'half' }, 2_100);
        assert.deepEqual((await store.get(op.id))?.progress, { fraction: 0.5, message: 'half' });
        await rejectsWith(
          store.progress({ ...lease, token: 'lease_x' }, { fraction: 1 }, 2_200),
          'LEASE_LOST',
        );
        const progress = await store.readEvents({
          after: 0,
          limit: 10,
          types: ['operation.progress'],
        });
        assert.deepEqual(progress[0]?.data.progress, { fraction: 0.5, message: 'half' });
      }));

    it('deletes terminal operations only, leaving one operation.deleted event', () =>
      withStore(async (store) => {
        const op = newOp();
        await store.create(op, 1_000);
        await rejectsWith(store.delete(op.id, undefined, 1_500), 'ILLEGAL_TRANSITION');
        await store.cancel(op.id, undefined, { code: 'CANCELED', message: 'x' }, 1_600);
        await store.delete(op.id, undefined, 1_700);
        assert.equal(await store.get(op.id), null);
        const events = await store.readEvents({ after: 0, limit: 10, operationId: op.id });
        assert.deepEqual(
          events.map((e) => e.type),
          ['operation.deleted'],
        );
      }));

    it('honours ifVersion on cancel, retry and delete, changing nothing on a mismatch', () =>
      withStore(async (store) => {
        const op = newOp();
        const created = await store.create(op, 1_000);
        const error = { code: 'CANCELED', message: 'x' };
        await rejectsWith(
          store.cancel(op.id, 't1', error, 1_100, [created.version + 1]),
          'PRECONDITION_FAILED',
        );
        assert.equal((await store.get(op.id))?.status, 'queued');
        await rejectsWith(
          store.cancel(newOperationId(), 't1', error, 1_100, [1]),
          'OPERATION_NOT_FOUND',
        );
        const canceled = await store.cancel(op.id, 't1', error, 1_200, [99, created.version]);
        assert.equal(canceled.status, 'canceled');
        await rejectsWith(
          store.retry(op.id, 't1', 1_300, 1_300, [created.version]),
          'PRECONDITION_FAILED',
        );
        const retried = await store.retry(op.id, 't1', 1_300, 1_300, [canceled.version]);
        assert.equal(retried.status, 'queued');
        const again = await store.cancel(op.id, 't1', error, 1_400);
        await rejectsWith(
          store.delete(op.id, 't1', 1_500, [retried.version]),
          'PRECONDITION_FAILED',
        );
        assert.ok(await store.get(op.id));
        await store.delete(op.id, 't1', 1_600, [again.version]);
        assert.equal(await store.get(op.id), null);
      }));

    it('creates once per idempotency key: replays, refuses another request, holds in flight', () =>
      withStore(async (store) => {
        const claim = (fingerprint: string, status: number | null = 202) => ({
          key: 'k-1',
          fingerprint,
          expiresAt: 100_000,
          status,
          holdUntil: status === null ? 5_000 : null,
        });
        const first = await store.createOnce(newOp(), claim('fp-a'), 1_000);
        assert.equal(first.outcome, 'created');
        const replay = await store.createOnce(newOp(), claim('fp-a'), 1_100);
        assert.equal(replay.outcome, 'replayed');
        assert.ok(first.outcome === 'created' && replay.outcome === 'replayed');
        assert.equal(replay.operation.id, first.operation.id);
        assert.equal(replay.status, 202);
        const other = await store.createOnce(newOp(), claim('fp-b'), 1_200);
        assert.deepEqual(other, { outcome: 'mismatch', operationId: first.operation.id });
        // Another tenant's key of the same name is another key.
        const elsewhere = await store.createOnce(newOp({ tenant: 't2' }), claim('fp-b'), 1_300);
        assert.equal(elsewhere.outcome, 'created');
        assert.equal((await store.list({ tenant: 't1', limit: 10 })).items.length, 1);

        // A held request: in flight until settled (or until holdUntil passes).
        const held = await store.createOnce(newOp(), { ...claim('fp-h', null), key: 'k-2' }, 1_000);
        assert.equal(held.outcome, 'created');
        const during = await store.createOnce(newOp(), { ...claim('fp-h'), key: 'k-2' }, 2_000);
        assert.equal(during.outcome, 'in_flight');
        assert.ok(during.outcome === 'in_flight' && during.holdUntil === 5_000);
        await store.settleIdempotencyKey('t1', 'k-2', 200);
        const after = await store.createOnce(newOp(), { ...claim('fp-h'), key: 'k-2' }, 2_100);
        assert.ok(after.outcome === 'replayed' && after.status === 200);

        // A held request whose server died answers as the 202 it would have been.
        const orphan = await store.createOnce(
          newOp(),
          { ...claim('fp-o', null), key: 'k-3' },
          1_000,
        );
        const late = await store.createOnce(newOp(), { ...claim('fp-o'), key: 'k-3' }, 6_000);
        assert.ok(orphan.outcome === 'created' && late.outcome === 'replayed');
        assert.equal(late.operation.id, orphan.operation.id);
        assert.equal(late.status, 202);
      }));

    it('creates one operation for concurrent requests with one key', () =>
      withStore(async (store) => {
        const claim = {
          key: 'same',
          fingerprint: 'fp',
          expiresAt: 100_000,
          status: 202,
          holdUntil: null,
        };
        const results = await Promise.all(
          Array.from({ length: 20 }, () => store.createOnce(newOp(), claim, 1_000)),
        );
        const ids = new Set(
          results.map((r) =>
            r.outcome === 'created' || r.outcome === 'replayed' ? r.operation.id : '',
          ),
        );
        assert.equal(ids.size, 1);
        assert.equal(results.filter((r) => r.outcome === 'created').length, 1);
        assert.equal((await store.list({ tenant: 't1', limit: 50 })).items.length, 1);
      }));

    it('forgets expired keys, and a key goes with its deleted operation', () =>
      withStore(async (store) => {
        const claim = {
          key: 'k',
          fingerprint: 'fp',
          expiresAt: 2_000,
          status: 202,
          holdUntil: null,
        };
        const first = await store.createOnce(newOp(), claim, 1_000);
        const reused = await store.createOnce(newOp(), { ...claim, expiresAt: 9_000 }, 3_000);
        assert.ok(first.outcome === 'created' && reused.outcome === 'created');
        assert.notEqual(reused.operation.id, first.operation.id);
        await store.createOnce(newOp(), { ...claim, key: 'old' }, 1_000);
        assert.equal(await store.purgeIdempotencyKeys(2_500, 100), 1);
        // Deleting the operation releases its key: the next request creates anew.
        await store.cancel(reused.operation.id, 't1', { code: 'CANCELED', message: 'x' }, 3_100);
        await store.delete(reused.operation.id, 't1', 3_200);
        const fresh = await store.createOnce(newOp(), { ...claim, expiresAt: 9_000 }, 3_300);
        assert.equal(fresh.outcome, 'created');
      }));

    it('purges terminal operations finished before the cutoff, with their events', () =>
      withStore(async (store) => {
        const old = newOp();
        const recent = newOp();
        const open = newOp();
        for (const op of [old, recent, open]) await store.create(op, 1_000);
        await store.cancel(old.id, undefined, { code: 'CANCELED', message: 'x' }, 2_000);
        await store.cancel(recent.id, undefined, { code: 'CANCELED', message: 'x' }, 9_000);
        assert.equal(await store.purge(5_000, 100), 1);
        assert.equal(await store.get(old.id), null);
        assert.ok(await store.get(recent.id));
        assert.ok(await store.get(open.id));
        assert.equal(
          (await store.readEvents({ after: 0, limit: 10, operationId: old.id })).length,
          0,
        );
      }));

    it('lists newest first with stable cursor pages and filters', () =>
      withStore(async (store) => {
        const made: string[] = [];
        for (let i = 0; i < 7; i++) {
          const op = newOp({
            labels: { parity: i % 2 === 0 ? 'even' : 'odd' },
            type: i < 5 ? 'test.op' : 'other.op',
          });
          made.push(op.id);
          await store.create(op, 1_000 + i);
        }
        const first = await store.list({ tenant: 't1', limit: 3 });
        assert.deepEqual(
          first.items.map((o) => o.id),
          made.slice(4).reverse(),
        );
        assert.ok(first.nextCursor);
        // Inserts between pages do not shift later pages.
        await store.create(newOp(), 2_000);
        const second = await store.list({ tenant: 't1', limit: 3, cursor: first.nextCursor });
        assert.deepEqual(
          second.items.map((o) => o.id),
          made.slice(1, 4).reverse(),
        );
        const third = await store.list({ tenant: 't1', limit: 3, cursor: second.nextCursor ?? '' });
        assert.deepEqual(
          third.items.map((o) => o.id),
          [made[0]],
        );
        assert.equal(third.nextCursor, null);
        const odd = await store.list({ tenant: 't1', limit: 10, labels: { parity: 'odd' } });
        assert.equal(odd.items.length, 3);
        const other = await store.list({ tenant: 't1', limit: 10, type: 'other.op' });
        assert.equal(other.items.length, 2);
        const queued = await store.list({ tenant: 't1', limit: 20, status: ['queued'] });
        assert.equal(queued.items.length, 8);
        await rejectsWith(
          store.list({ tenant: 't1', limit: 3, cursor: 'garbage!' }),
          'INVALID_QUERY',
        );
      }));

    it('gives every event a higher seq and the operation a higher version, in commit order', () =>
      withStore(async (store) => {
        const ops = Array.from({ length: 20 }, () => newOp());
        await Promise.all(ops.map((op) => store.create(op, 1_000)));
        const { claimed } = await store.claim({
          owner: 'w',
          types: null,
          limit: 20,
          leaseMs: 10_000,
          now: 2_000,
        });
        await Promise.all(claimed.map((c) => store.complete(c.lease, null, 3_000)));
        const events = await store.readEvents({ after: 0, limit: 100 });
        assert.equal(events.length, 60);
        for (let i = 1; i < events.length; i++) {
          assert.ok((events[i]?.seq ?? 0) > (events[i - 1]?.seq ?? 0));
        }
        const after = events[29]?.seq ?? 0;
        const rest = await store.readEvents({ after, limit: 100 });
        assert.deepEqual(
          rest.map((e) => e.seq),
          events.slice(30).map((e) => e.seq),
        );
        for (const op of ops) {
          const versions = events.filter((e) => e.operationId === op.id).map((e) => e.version);
          assert.deepEqual(versions, [1, 2, 3]);
        }
      }));

    it('#12 a cancel request is not forgotten by a retry, a given-back lease or a final failure', () =>
      withStore(async (store) => {
        const cancel = { code: 'CANCELED', message: 'Canceled on request.' };
        const ends: Record<
          string,
          (lease: { operationId: string; token: string }) => Promise<void>
        > = {
          retry: (lease) => store.fail(lease, { code: 'TIMEOUT', message: 't' }, 5_000, 2_100),
          release: (lease) =>
            store.release(lease, { code: 'WORKER_SHUTDOWN', message: 'w' }, 2_100),
          fail: (lease) => store.fail(lease, { code: 'BOOM', message: 'b' }, null, 2_100),
        };
        for (const [how, end] of Object.entries(ends)) {
          const op = newOp({ maxAttempts: 3 });
          await store.create(op, 1_000);
          const { lease } = await claimOne(store);
          await store.cancel(op.id, 't1', cancel, 2_050);
          await end(lease);
          const read = await store.get(op.id);
          assert.equal(read?.status, 'canceled', `${how}: ends canceled`);
          assert.deepEqual(read?.error, cancel, `${how}: with the cancel error`);
          assert.equal(read?.cancelRequestedAt, 2_050);
          const types = (await store.readEvents({ after: 0, limit: 20, operationId: op.id })).map(
            (e) => e.type,
          );
          assert.deepEqual(
            types,
            [
              'operation.queued',
              'operation.started',
              'operation.cancel_requested',
              'operation.canceled',
            ],
            how,
          );
          const later = await store.claim({
            owner: 'w',
            types: null,
            limit: 10,
            leaseMs: 1_000,
            now: 9_000,
          });
          assert.deepEqual(later.claimed, [], `${how}: never claimed again`);
          await rejectsWith(store.complete(lease, 1, 9_100), 'LEASE_LOST');
        }
      }));

    it('#13 lease answers are about a token: a stale lease of a re-claimed operation is lost, the new one held', () =>
      withStore(async (store) => {
        const { op, first, second } = await reclaimed(store);
        assert.equal(second.operation.id, op.id);
        assert.notEqual(second.lease.token, first.lease.token);
        const states = await store.renewLeases({
          leases: [first.lease, second.lease],
          leaseMs: 10_000,
          now: 2_400,
        });
        assert.deepEqual(
          states.map((s) => [s.operationId, s.token, s.state]),
          [
            [op.id, first.lease.token, 'lost'],
            [op.id, second.lease.token, 'held'],
          ],
        );
      }));

    it("a stale attempt's complete in the holder's group commit loses, and only the holder's result is kept", () =>
      withStore(async (store) => {
        const { op, first, second } = await reclaimed(store);
        // Asked together (one group commit), the stale lease first; then the holder's again.
        const [stale, current, again] = await Promise.allSettled([
          store.complete(first.lease, { from: 'stale' }, 2_400),
          store.complete(second.lease, { from: 'current' }, 2_500),
          store.complete(second.lease, { from: 'twice' }, 2_600),
        ]);
        assert.equal(stale.status, 'rejected');
        assert.equal(current.status, 'fulfilled');
        assert.equal(again.status, 'rejected');
        const row = await store.get(op.id);
        assert.deepEqual(
          [row?.status, row?.result, row?.finishedAt],
          ['succeeded', { from: 'current' }, 2_500],
        );
        const events = await store.readEvents({ after: 0, limit: 20, operationId: op.id });
        const succeeded = events.filter((e) => e.type === 'operation.succeeded');
        assert.equal(succeeded.length, 1);
        assert.deepEqual(
          [succeeded[0]?.data.result, succeeded[0]?.time],
          [{ from: 'current' }, 2_500],
        );
      }));

    it('#14 a delete committed with an earlier change of its operation leaves no event of that change', () =>
      withStore(async (store) => {
        const hinted: string[] = [];
        const unsubscribe = store.subscribe((hint) => {
          for (const event of hint.events ?? []) hinted.push(`${event.operationId} ${event.type}`);
        });
        try {
          const op = newOp();
          const keep = newOp();
          await store.create(op, 1_000);
          await store.create(keep, 1_000);
          // Not awaited one by one: both go into the same group commit.
          const cancel = store.cancel(op.id, 't1', { code: 'CANCELED', message: 'x' }, 1_100);
          const touch = store.cancel(keep.id, 't1', { code: 'CANCELED', message: 'x' }, 1_100);
          const remove = store.delete(op.id, 't1', 1_200);
          await Promise.all([cancel, touch, remove]);
          const left = await store.readEvents({ after: 0, limit: 20, operationId: op.id });
          assert.deepEqual(
            left.map((e) => e.type),
            ['operation.deleted'],
          );
          const kept = await store.readEvents({ after: 0, limit: 20, operationId: keep.id });
          assert.deepEqual(
            kept.map((e) => e.type),
            ['operation.queued', 'operation.canceled'],
          );
          // Retention removes the deletion marker in time; nothing of the operation outlives it.
          await store.purge(10_000, 100);
          assert.deepEqual(await store.readEvents({ after: 0, limit: 20, operationId: op.id }), []);
          await until(
            () => hinted.includes(`${keep.id} operation.canceled`) || hinted.length === 0,
          );
          assert.ok(
            !hinted.includes(`${op.id} operation.canceled`),
            'no reader is handed an event the delete removed',
          );
        } finally {
          unsubscribe();
        }
      }));

    it('#20 a lease taken or renewed late counts from when the write runs, not from when it was asked', () =>
      withStore(async (store) => {
        const op = newOp({ runAt: 0 });
        await store.create(op, 0);
        // The event loop is held right after each request, so that the write runs late, as
        // it would behind a long group commit or a lock.
        const stall = (ms: number) => {
          const until = Date.now() + ms;
          while (Date.now() < until) {
            // busy: nothing else runs
          }
        };
        const asked = Date.now();
        const claiming = store.claim({
          owner: 'w',
          types: null,
          limit: 1,
          leaseMs: 300,
          now: asked,
        });
        stall(600);
        const lease = (await claiming).claimed[0]?.lease;
        assert.ok(lease);
        assert.ok(lease.expiresAt >= asked + 900, 'the wait is added to the lease');
        assert.equal(await store.recoverExpiredLeases(Date.now(), 10), 0, 'not born expired');
        const renewedAt = Date.now();
        const renewing = store.renewLeases({ leases: [lease], leaseMs: 300, now: renewedAt });
        stall(600);
        assert.equal((await renewing)[0]?.state, 'held');
        assert.equal(
          await store.recoverExpiredLeases(Date.now(), 10),
          0,
          'the renewed lease still holds',
        );
        assert.equal(
          await store.recoverExpiredLeases(renewedAt + 1_000, 10),
          1,
          'until it expires',
        );
      }));

    it('snapshots an operation with the seq of the last event it reflects', () =>
      withStore(async (store) => {
        const op = newOp();
        await store.create(op, 1_000);
        await store.create(newOp(), 1_000);
        const { lease } = await claimOne(store, 2_000);
        const running = await store.snapshot(lease.operationId, 't1');
        const started = await store.readEvents({
          after: 0,
          limit: 10,
          operationId: lease.operationId,
        });
        assert.equal(running?.operation.status, 'running');
        assert.equal(running?.seq, started.at(-1)?.seq);
        await store.complete(lease, { ok: true }, 2_100);
        await store.create(newOp(), 2_200);
        const done = await store.snapshot(lease.operationId, 't1');
        const all = await store.readEvents({ after: 0, limit: 10, operationId: lease.operationId });
        assert.equal(done?.operation.status, 'succeeded');
        assert.equal(done?.seq, all.at(-1)?.seq);
        assert.equal(done?.operation.version, all.at(-1)?.version);
        assert.equal(await store.snapshot(lease.operationId, 'other'), null);
        assert.equal(await store.snapshot('op_missing', 't1'), null);
      }));

    it('hints after commit, with the new last seq and whether work appeared', () =>
      withStore(async (store) => {
        const hints: StoreHint[] = [];
        const unsubscribe = store.subscribe((hint) => hints.push(hint));
        const op = newOp();
        await store.create(op, 1_000);
        const seqAfterCreate = await store.lastSeq();
        await until(() => hints.some((h) => h.work && h.lastSeq >= seqAfterCreate));
        hints.length = 0;
        const { lease } = await claimOne(store);
        await store.complete(lease, 1, 2_100);
        const last = await store.lastSeq();
        await until(() => hints.some((h) => h.lastSeq === last));
        unsubscribe();
      }));
  });
}

/**
 * The webhooks part: endpoints, secrets, deliveries made from the log (under the `webhooks`
 * consumer's lease, so the store must also offer `consumers`), claims, records, replays and
 * retention.
 */
export function webhooksConformance(name: string, factory: () => Promise<StoreFixture>): void {
  describe(`Store conformance: ${name}: webhooks`, () => {
    const withStore = runner(factory);
    const attempt = (claimed: ClaimedDelivery, status: number | null, at: number) => ({
      deliveryId: claimed.delivery.id,
      attempt: claimed.delivery.attempts + 1,
      startedAt: at,
      durationMs: 3,
      status,
      error: status === null ? 'TIMEOUT' : null,
      responseBody: `answer ${String(status)}`,
    });

    it('keeps endpoints per tenant, versioned, with secrets that rotate', () =>
      withStore(async (store) => {
        const hooks = webhooksOf(store);
        const created = await hooks.createEndpoint(
          newEndpoint({ eventTypes: ['operation.succeeded'], labels: { team: 'a' } }),
          1_000,
        );
        assert.equal(created.version, 1);
        assert.equal(created.enabled, true);
        assert.deepEqual(created.eventTypes, ['operation.succeeded']);
        assert.equal(await hooks.getEndpoint(created.id, 'other'), null);
        await rejectsWith(
          hooks.updateEndpoint(created.id, 't1', { description: 'x' }, 1_100, [7]),
          'PRECONDITION_FAILED',
        );
        const updated = await hooks.updateEndpoint(
          created.id,
          't1',
          { description: 'orders', enabled: false },
          1_200,
          [1],
        );
        assert.equal(updated.version, 2);
        assert.equal(updated.description, 'orders');
        assert.equal(updated.disabledReason, 'MANUAL');
        const rotated = await hooks.rotateEndpointSecret(
          created.id,
          't1',
          'whsec_bmV3LW5ldy1uZXctbmV3LW5ldy1uZXctbmV3IQ==',
          Date.now() + 60_000,
          1_300,
        );
        assert.deepEqual(
          rotated.secrets.map((entry) => entry.secret),
          ['whsec_bmV3LW5ldy1uZXctbmV3LW5ldy1uZXctbmV3IQ==', created.secrets[0]?.secret],
        );
        assert.equal(rotated.secrets[0]?.expiresAt, null);
        const page = await hooks.listEndpoints({ tenant: 't1', limit: 10 });
        assert.deepEqual(
          page.items.map((e) => e.id),
          [created.id],
        );
        await rejectsWith(
          hooks.deleteEndpoint(created.id, 't1', 1_400, [1]),
          'PRECONDITION_FAILED',
        );
        await hooks.deleteEndpoint(created.id, 't1', 1_400, [3]);
        await rejectsWith(
          hooks.getEndpoint(created.id, 't1').then((e) => {
            if (!e) throw new AcceptedError('ENDPOINT_NOT_FOUND', 'gone');
          }),
          'ENDPOINT_NOT_FOUND',
        );
        await rejectsWith(
          hooks.updateEndpoint(created.id, 't1', { description: 'y' }, 1_500),
          'ENDPOINT_NOT_FOUND',
        );
      }));

    it('makes deliveries from the log for matching endpoints and callbacks, once', () =>
      withStore(async (store) => {
        const hooks = webhooksOf(store);
        const all = await hooks.createEndpoint(newEndpoint(), 1_000);
        const done = await hooks.createEndpoint(
          newEndpoint({ eventTypes: ['operation.succeeded'] }),
          1_000,
        );
        const red = await hooks.createEndpoint(newEndpoint({ labels: { team: 'red' } }), 1_000);
        await hooks.createEndpoint(newEndpoint({ tenant: 'other' }), 1_000);
        const op = newOp({ labels: { team: 'red' }, callbackUrl: 'https://example.com/cb' });
        await store.create(op, 1_000);
        const plain = newOp();
        await store.create(plain, 1_000);
        const { claimed } = await store.claim({
          owner: 'w',
          types: null,
          limit: 10,
          leaseMs: 10_000,
          now: 1_100,
        });
        for (const { lease } of claimed) await store.complete(lease, null, 1_200);
        const made = await dispatch(store, 1_300);
        assert.equal(made.events, 6);
        // op: 3 events to `all` and `red`, the callback (not for progress), 1 to `done`;
        // plain: 3 to `all`, 1 to `done`.
        assert.equal(made.deliveries, 3 + 3 + 3 + 1 + 3 + 1);
        const again = await dispatch(store, 1_400);
        assert.deepEqual([again.events, again.deliveries], [0, 0]);
        const list = async (query: Partial<Parameters<WebhookStore['listDeliveries']>[0]>) =>
          (await hooks.listDeliveries({ tenant: 't1', limit: 100, ...query })).items;
        assert.equal((await list({ endpointId: red.id })).length, 3);
        assert.equal((await list({ endpointId: done.id })).length, 2);
        assert.equal((await list({ endpointId: all.id, operationId: plain.id })).length, 3);
        const callbacks = (await list({ operationId: op.id })).filter(
          (d) => d.target === 'callback',
        );
        assert.deepEqual(
          callbacks.map((d) => d.url),
          ['https://example.com/cb', 'https://example.com/cb', 'https://example.com/cb'],
        );
        const secrets = await hooks.callbackSecrets('t1', 'whsec_unused', 1_500);
        assert.equal(secrets[0]?.secret, 'whsec_Y2FsbGJhY2stc2VjcmV0LWNhbGxiYWNrLXNlY3JldA==');
        const first = (await list({ endpointId: red.id })).at(-1);
        assert.equal(
          first?.payload,
          JSON.stringify({ type: 'operation.queued', seq: first?.eventSeq }),
        );
        assert.equal(first?.eventId.startsWith('evt_'), true);
      }));

    it('claims the first pending delivery of each line, leases it, and records outcomes', () =>
      withStore(async (store) => {
        const hooks = webhooksOf(store);
        const endpoint = await hooks.createEndpoint(newEndpoint(), 1_000);
        const a = newOp();
        const b = newOp();
        await store.create(a, 1_000);
        await store.create(b, 1_000);
        const { claimed: ops } = await store.claim({
          owner: 'w',
          types: null,
          limit: 10,
          leaseMs: 10_000,
          now: 1_100,
        });
        for (const { lease } of ops) await store.complete(lease, null, 1_200);
        await dispatch(store, 2_000);
        // Two lines (a and b) of three events each: one claim gets the head of each.
        const first = await hooks.claimDeliveries({ now: 2_000, limit: 10, leaseMs: 5_000 });
        assert.equal(first.length, 2);
        assert.deepEqual(new Set(first.map((c) => c.delivery.operationId)), new Set([a.id, b.id]));
        assert.ok(first.every((c) => c.delivery.eventType === 'operation.queued'));
        assert.deepEqual(first[0]?.secrets, [endpoint.secrets[0]?.secret]);
        // Leased: nobody else gets them, and the rest of each line waits behind them.
        assert.equal(
          (await hooks.claimDeliveries({ now: 2_001, limit: 10, leaseMs: 5_000 })).length,
          0,
        );
        const [ofA, ofB] = [a, b].map((op) => first.find((c) => c.delivery.operationId === op.id)!);
        // a's head fails (retry later): b's line goes on, a's stays held back.
        await hooks.recordAttempt({
          lease: ofA!.leaseToken,
          attempt: attempt(ofA!, 500, 2_010),
          result: 'retry',
          nextAttemptAt: 9_000,
        });
        await hooks.recordAttempt({
          lease: ofB!.leaseToken,
          attempt: attempt(ofB!, 200, 2_010),
          result: 'delivered',
        });
        const second = await hooks.claimDeliveries({ now: 2_100, limit: 10, leaseMs: 5_000 });
        assert.deepEqual(
          second.map((c) => [c.delivery.operationId, c.delivery.eventType]),
          [[b.id, 'operation.started']],
        );
        assert.ok(second[0]?.failingSince !== undefined);
        const failingSince = (await hooks.getEndpoint(endpoint.id, 't1'))?.failingSince;
        assert.equal(failingSince, null, 'a success since clears the failure record');
        // An expired lease is claimed again; the retry comes due at its time.
        assert.equal(
          (await hooks.claimDeliveries({ now: 8_999, limit: 10, leaseMs: 5_000 })).filter(
            (c) => c.delivery.operationId === a.id,
          ).length,
          0,
        );
        const again = await hooks.claimDeliveries({ now: 9_000, limit: 10, leaseMs: 5_000 });
        const retried = again.find((c) => c.delivery.operationId === a.id);
        assert.equal(retried?.delivery.attempts, 1);
        assert.equal(retried.delivery.eventType, 'operation.queued');
        // A stale record (under a lease that was replaced by the new claim) changes nothing.
        await hooks.recordAttempt({
          lease: ofA!.leaseToken,
          attempt: attempt(ofA!, 200, 9_001),
          result: 'delivered',
        });
        assert.equal((await hooks.getDelivery(retried.delivery.id, 't1'))?.status, 'pending');
        await hooks.recordAttempt({
          lease: retried.leaseToken,
          attempt: attempt(retried, null, 9_010),
          result: 'failed',
        });
        const dead = await hooks.getDelivery(retried.delivery.id, 't1');
        assert.equal(dead?.status, 'failed');
        assert.equal(dead.attempts, 2);
        assert.equal(dead.lastError, 'TIMEOUT');
        const attempts = await hooks.listAttempts(retried.delivery.id, 't1');
        assert.deepEqual(
          attempts.map((x) => [x.attempt, x.status, x.responseBody]),
          [
            [1, 500, 'answer 500'],
            [2, null, 'answer null'],
          ],
        );
        // A dead letter no longer holds its line back; replay makes it pending again.
        const next = await hooks.claimDeliveries({ now: 9_100, limit: 10, leaseMs: 5_000 });
        assert.ok(
          next.some(
            (c) => c.delivery.operationId === a.id && c.delivery.eventType === 'operation.started',
          ),
        );
        const replayed = await hooks.replayDelivery(retried.delivery.id, 't1', 9_200);
        assert.equal(replayed.status, 'pending');
        assert.equal(replayed.roundStart, 2);
        await rejectsWith(hooks.replayDelivery('dlv_missing', 't1', 9_200), 'DELIVERY_NOT_FOUND');
        assert.equal(await hooks.getDelivery(retried.delivery.id, 'other'), null);
      }));

    it('disables an endpoint on request of an outcome, with an endpoint.disabled event', () =>
      withStore(async (store) => {
        const hooks = webhooksOf(store);
        const endpoint = await hooks.createEndpoint(newEndpoint(), 1_000);
        await store.create(newOp(), 1_000);
        await dispatch(store, 1_100);
        const [claimed] = await hooks.claimDeliveries({ now: 1_100, limit: 10, leaseMs: 5_000 });
        assert.ok(claimed);
        const before = await store.lastSeq();
        await hooks.recordAttempt({
          lease: claimed.leaseToken,
          attempt: attempt(claimed, 410, 1_200),
          result: 'failed',
          disableEndpoint: { reason: 'GONE', message: 'gone' },
        });
        const disabled = await hooks.getEndpoint(endpoint.id, 't1');
        assert.equal(disabled?.enabled, false);
        assert.equal(disabled.disabledReason, 'GONE');
        const [event] = await store.readEvents({ after: before, limit: 10 });
        assert.equal(event?.type, 'endpoint.disabled');
        assert.equal(event.operationId, endpoint.id);
        assert.deepEqual(event.data.endpoint, {
          id: endpoint.id,
          url: endpoint.url,
          reason: 'GONE',
          message: 'gone',
        });
        // Deliveries to a disabled endpoint wait; new events make none for it.
        await store.create(newOp(), 1_300);
        await dispatch(store, 1_300);
        assert.equal(
          (await hooks.claimDeliveries({ now: 1_400, limit: 10, leaseMs: 5_000 })).length,
          0,
        );
        const enabled = await hooks.updateEndpoint(endpoint.id, 't1', { enabled: true }, 1_500);
        assert.equal(enabled.failingSince, null);
        const replays = await hooks.replayEndpoint(endpoint.id, 't1', 0, 1_600);
        assert.equal(replays, 1);
      }));

    it("dispatches under the webhooks consumer's lease, committing its position in the same transaction", () =>
      withStore(async (store) => {
        const hooks = webhooksOf(store);
        const consumers = consumersOf(store);
        await hooks.createEndpoint(newEndpoint(), 1_000);
        for (let i = 0; i < 3; i++) await store.create(newOp(), 1_000);
        const a = await consumers.acquire({
          name: WEBHOOK_CONSUMER,
          holder: 'a',
          leaseMs: 1_000,
          now: 1_000,
        });
        assert.ok(a);
        const first = await hooks.dispatchDeliveries({ ...dispatchRequest(1_000), lease: a });
        assert.deepEqual([first.events, first.deliveries], [3, 3]);
        assert.equal(first.lease.position, await store.lastSeq());
        assert.equal(first.lease.token, a.token);
        assert.equal((await consumers.get(WEBHOOK_CONSUMER))?.position, first.lease.position);
        assert.equal((await consumers.get(WEBHOOK_CONSUMER))?.lag, 0);
        // b takes over after a's lease expired; a, late, writes nothing.
        for (let i = 0; i < 2; i++) await store.create(newOp(), 5_000);
        const b = await consumers.acquire({
          name: WEBHOOK_CONSUMER,
          holder: 'b',
          leaseMs: 1_000,
          now: 60_000,
        });
        assert.ok(b);
        await rejectsWith(
          hooks.dispatchDeliveries({ ...dispatchRequest(60_001), lease: a }),
          'LEASE_LOST',
        );
        const count = async () => (await hooks.listDeliveries({ tenant: 't1', limit: 100 })).items;
        assert.equal((await count()).length, 3, 'a stale dispatcher makes no delivery');
        assert.equal((await consumers.get(WEBHOOK_CONSUMER))?.position, first.lease.position);
        assert.equal((await consumers.get(WEBHOOK_CONSUMER))?.lag, 2);
        const second = await hooks.dispatchDeliveries({ ...dispatchRequest(60_002), lease: b });
        assert.deepEqual([second.events, second.deliveries], [2, 2]);
        const seqs = (await count()).map((d) => d.eventSeq).sort((x, y) => x - y);
        const log = (await store.readEvents({ after: 0, limit: 100 })).map((e) => e.seq);
        assert.deepEqual(seqs, log, 'every event once, across the take-over');
      }));

    it('purges finished deliveries and their attempts past retention', () =>
      withStore(async (store) => {
        const hooks = webhooksOf(store);
        await hooks.createEndpoint(newEndpoint(), 1_000);
        await store.create(newOp(), 1_000);
        await dispatch(store, 1_000);
        const [claimed] = await hooks.claimDeliveries({ now: 1_000, limit: 1, leaseMs: 5_000 });
        assert.ok(claimed);
        await hooks.recordAttempt({
          lease: claimed.leaseToken,
          attempt: attempt(claimed, 200, 1_000),
          result: 'delivered',
        });
        assert.equal(await hooks.purgeDeliveries(500, 100), 0);
        assert.equal(await hooks.purgeDeliveries(2_000, 100), 1);
        assert.equal(await hooks.getDelivery(claimed.delivery.id, 't1'), null);
        assert.equal(await hooks.nextDeliveryAt(), null);
      }));
  });
}

/**
 * The consumers part (the relay cursor): creation at the log's end or start, one holder at a
 * time (renewal, take-over after expiry under a new token), commits that only move forward and
 * are refused under a stale token, release, lag; a relay that reads and commits in batches
 * across a take-over skips nothing; two nodes never both hold one consumer.
 */
export function consumersConformance(name: string, factory: () => Promise<StoreFixture>): void {
  describe(`Store conformance: ${name}: consumers`, () => {
    const withStore = runner(factory);
    const acquire = (
      consumers: ConsumerStore,
      holder: string,
      now: number,
      more: { name?: string; leaseMs?: number; startAt?: 'earliest' | 'latest' } = {},
    ) =>
      consumers.acquire({
        name: more.name ?? 'bridge',
        holder,
        leaseMs: more.leaseMs ?? 1_000,
        now,
        ...(more.startAt ? { startAt: more.startAt } : {}),
      });

    it('creates a consumer at the end of the log (latest, default) or its start, and lists its lag', () =>
      withStore(async (store) => {
        const consumers = consumersOf(store);
        for (let i = 0; i < 3; i++) await store.create(newOp(), 1_000);
        const last = await store.lastSeq();
        const latest = await acquire(consumers, 'a', 1_000, { name: 'bridge.latest' });
        const earliest = await acquire(consumers, 'a', 1_000, {
          name: 'bridge.earliest',
          startAt: 'earliest',
        });
        assert.ok(latest && earliest);
        assert.equal(latest.position, last);
        assert.equal(earliest.position, 0);
        assert.ok(latest.leaseUntil >= 2_000, `lease until ${latest.leaseUntil}`);
        assert.notEqual(latest.token, earliest.token);
        const listed = (await consumers.list()).filter((c) => c.name.startsWith('bridge.'));
        assert.deepEqual(
          listed.map((c) => [c.name, c.position, c.holder, c.lag]),
          [
            ['bridge.earliest', 0, 'a', last],
            ['bridge.latest', last, 'a', 0],
          ],
        );
        await store.create(newOp(), 1_100);
        assert.equal((await consumers.get('bridge.latest'))?.lag, 1, 'lag follows the log');
        assert.equal(await consumers.get('bridge.none'), null);
        await rejectsWith(
          acquire(consumers, 'a', 1_000, { name: 'no spaces' }),
          'VALIDATION_FAILED',
        );
        await rejectsWith(acquire(consumers, 'a', 1_000, { leaseMs: 0 }), 'VALIDATION_FAILED');
      }));

    it('leases to one holder at a time: the same holder renews, another takes over after expiry with a new token', () =>
      withStore(async (store) => {
        const consumers = consumersOf(store);
        const first = await acquire(consumers, 'a', 1_000);
        assert.ok(first);
        assert.equal(await acquire(consumers, 'b', 1_500), null, 'held by a');
        const renewed = await acquire(consumers, 'a', 1_500);
        assert.equal(renewed?.token, first.token, 'the same holder keeps its token');
        assert.ok((renewed?.leaseUntil ?? 0) >= 2_500);
        assert.equal(await acquire(consumers, 'b', 2_400), null, 'the renewal holds');
        const taken = await acquire(consumers, 'b', 60_000);
        assert.ok(taken, 'an expired lease is taken over');
        assert.notEqual(taken.token, first.token);
        assert.equal(taken.position, first.position);
        assert.equal((await consumers.get('bridge'))?.holder, 'b');
        await rejectsWith(consumers.commit(first, 0, 60_001), 'LEASE_LOST');
        assert.equal(await acquire(consumers, 'a', 60_100), null, 'now b holds it');
        // Even its old holder, coming back after expiry, gets a new token.
        const back = await acquire(consumers, 'b', 200_000);
        assert.ok(back && back.token !== taken.token);
      }));

    it('commits only forward, never past the log, and refuses a stale token changing nothing', () =>
      withStore(async (store) => {
        const consumers = consumersOf(store);
        for (let i = 0; i < 5; i++) await store.create(newOp(), 1_000);
        const seqs = (await store.readEvents({ after: 0, limit: 10 })).map((e) => e.seq);
        const last = await store.lastSeq();
        const lease = await acquire(consumers, 'a', 1_000, { startAt: 'earliest' });
        assert.ok(lease);
        const at3 = await consumers.commit(lease, seqs[2] ?? 0, 1_100);
        assert.equal(at3.position, seqs[2]);
        assert.ok(at3.leaseUntil >= 2_100, 'a commit renews the lease');
        assert.equal((await consumers.get('bridge'))?.lag, last - (seqs[2] ?? 0));
        const back = await consumers.commit(lease, seqs[0] ?? 0, 1_200);
        assert.equal(back.position, seqs[2], 'a position never goes backwards');
        await rejectsWith(consumers.commit(lease, last + 1, 1_300), 'VALIDATION_FAILED');
        const before = await consumers.get('bridge');
        await rejectsWith(
          consumers.commit({ name: 'bridge', token: 'cl_forged' }, last, 1_300),
          'LEASE_LOST',
        );
        const taken = await acquire(consumers, 'b', 100_000);
        assert.ok(taken);
        const stale = await consumers.get('bridge');
        await rejectsWith(consumers.commit(lease, last, 100_001), 'LEASE_LOST');
        assert.deepEqual(await consumers.get('bridge'), stale, 'a stale commit changes nothing');
        assert.equal(before?.position, stale?.position);
        await rejectsWith(
          consumers.commit({ name: 'bridge.none', token: taken.token }, 0, 100_002),
          'LEASE_LOST',
        );
        // Release: a stale token changes nothing; the holder's frees it at once.
        await consumers.release(lease);
        assert.equal((await consumers.get('bridge'))?.holder, 'b');
        await consumers.release(taken);
        const released = await consumers.get('bridge');
        assert.equal(released?.holder, null);
        assert.equal(released?.position, seqs[2], 'the position stays');
        await rejectsWith(consumers.commit(taken, last, 100_003), 'LEASE_LOST');
        const next = await acquire(consumers, 'c', 100_004);
        assert.ok(next, 'a released lease is free before its expiry');
        assert.equal(next.position, seqs[2]);
      }));

    it('skips no position: batches read and committed across a take-over deliver every seq once, in order', () =>
      withStore(async (store) => {
        const consumers = consumersOf(store);
        for (let i = 0; i < 10; i++) await store.create(newOp(), 1_000);
        const delivered: number[] = [];
        /** One batch: read after the position, deliver, commit; false once the log is read. */
        const batch = async (lease: { name: string; token: string }, now: number) => {
          const position = (await consumers.get('bridge'))?.position ?? 0;
          const events = await store.readEvents({ after: position, limit: 4 });
          if (events.length === 0) return false;
          const last = events.at(-1)?.seq ?? position;
          await consumers.commit(lease, last, now);
          delivered.push(...events.map((e) => e.seq)); // confirmed by the commit
          return true;
        };
        const a = await acquire(consumers, 'a', 1_000, { startAt: 'earliest', leaseMs: 500 });
        assert.ok(a);
        assert.equal(await batch(a, 1_010), true);
        assert.equal(await batch(a, 1_020), true);
        // a reads a third batch, then stalls past its lease; meanwhile the log grows.
        const position = (await consumers.get('bridge'))?.position ?? 0;
        const stalled = await store.readEvents({ after: position, limit: 4 });
        for (let i = 0; i < 5; i++) await store.create(newOp(), 1_030);
        const b = await acquire(consumers, 'b', 10_000, { leaseMs: 500 });
        assert.ok(b, 'b takes over');
        assert.equal(b.position, position, 'from the last committed position');
        assert.equal(await batch(b, 10_010), true);
        // a wakes: its commit is refused, so its batch counts as not delivered.
        await rejectsWith(consumers.commit(a, stalled.at(-1)?.seq ?? 0, 10_020), 'LEASE_LOST');
        while (await batch(b, 10_030));
        const all = (await store.readEvents({ after: 0, limit: 100 })).map((e) => e.seq);
        assert.equal(all.length, 15);
        assert.deepEqual(delivered, all, 'every seq once, in order');
        const state = await consumers.get('bridge');
        assert.equal(state?.position, all.at(-1));
        assert.equal(state?.lag, 0);
      }));

    it('never lets two nodes hold one consumer, however their acquires race', () =>
      withStore(async (store, fixture) => {
        const other = fixture.peer ? await fixture.peer() : store;
        const nodes = [consumersOf(store), consumersOf(other)];
        const tokens = new Set<string>();
        for (let round = 1; round <= 12; round++) {
          // Each round starts after the last lease expired: both race for it (the first round
          // also races to create the consumer).
          const now = round * 10_000;
          const results = await Promise.all(
            Array.from({ length: 6 }, (_, i) =>
              acquire(nodes[i % 2] as ConsumerStore, `node${i % 2}.${i}`, now, {
                name: 'race',
                leaseMs: 5_000,
              }),
            ),
          );
          const winners = results.filter((lease) => lease !== null);
          assert.equal(winners.length, 1, `round ${round}: ${winners.length} holders`);
          const winner = winners[0];
          assert.ok(winner);
          assert.ok(!tokens.has(winner.token), 'a new token each take-over');
          tokens.add(winner.token);
          const state = await nodes[round % 2]?.get('race');
          assert.equal(state?.leaseUntil, winner.leaseUntil);
        }
      }));
  });
}
