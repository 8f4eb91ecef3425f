// The store rules (store/rules.ts) as pure functions: what each transition checks, sets and
// appends, whatever the adapter. The adapters' behaviour is the conformance suite's.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isAcceptedError } from '../src/domain/errors.ts';
import type { OperationStatus } from '../src/domain/operation.ts';
import type { OperationRow } from '../src/store/operation-rows.ts';
import * as consumers from '../src/store/consumer-rules.ts';
import type { AcquireRequest } from '../src/store/consumers.ts';
import * as rules from '../src/store/rules.ts';

const ERROR = { code: 'BOOM', message: 'it broke' };

function row(status: OperationStatus, more: Partial<OperationRow<string>> = {}) {
  const base: OperationRow<string> = {
    pk: 7,
    id: 'op_1',
    tenant: 't',
    type: 'noop',
    status,
    input: '{}',
    progress: null,
    result: null,
    error: null,
    attempts: 1,
    max_attempts: 3,
    run_at: 100,
    timeout_ms: null,
    labels: '{"a":"b"}',
    callback_url: null,
    cancel_requested_at: null,
    created_at: 1,
    updated_at: 1,
    started_at: null,
    finished_at: null,
    version: 4,
    lease_token: null,
  };
  return { ...base, ...more };
}

function code(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    return isAcceptedError(error) ? error.code : 'other';
  }
  return undefined;
}

describe('store rules', () => {
  it('renders one SET list per transition in each dialect, values first, version bumped', () => {
    const sqlite = rules.setLists(() => '?');
    const postgres = rules.setLists((i) => `$${i}`);
    assert.match(sqlite.progress, /^progress = \?, updated_at = \?, version = version \+ 1$/);
    assert.match(postgres.progress, /^progress = \$1, updated_at = \$2, version = version \+ 1$/);
    assert.match(postgres.canceled, /^error = \$1, finished_at = \$2, updated_at = \$3, /);
    assert.match(postgres.canceled, /status = 'canceled'.*lease_token = NULL/);
    assert.match(postgres.givenBack, /attempts = attempts - 1/);
    for (const list of [...Object.values(sqlite), ...Object.values(postgres)]) {
      assert.match(list, /version = version \+ 1$/);
    }
  });

  it('ends an attempt: canceled when requested, failed when spent, requeued otherwise', () => {
    const canceled = rules.planAttemptEnd({
      cancelRequestedAt: 5,
      error: ERROR,
      retryAt: 9,
      now: 10,
    });
    assert.equal(canceled.set, 'canceled');
    assert.deepEqual(canceled.event(2), {
      type: 'operation.canceled',
      data: { status: 'canceled', attempt: 2, error: rules.CANCELED_ERROR },
    });
    const failed = rules.planAttemptEnd({
      cancelRequestedAt: null,
      error: ERROR,
      retryAt: null,
      now: 10,
    });
    assert.deepEqual(
      [failed.set, failed.values, failed.work],
      ['failed', [JSON.stringify(ERROR), 10, 10], false],
    );
    assert.deepEqual(failed.event(3).data, { status: 'failed', attempt: 3, error: ERROR });
    const requeued = rules.planAttemptEnd({
      cancelRequestedAt: null,
      error: ERROR,
      retryAt: 50,
      now: 10,
    });
    assert.deepEqual(
      [requeued.set, requeued.values, requeued.work],
      ['requeued', [JSON.stringify(ERROR), 50, 10], true],
    );
    assert.deepEqual(requeued.event(1), {
      type: 'operation.retrying',
      data: { status: 'queued', attempt: 1, error: ERROR, runAt: 50 },
    });
    const givenBack = rules.planAttemptEnd({
      cancelRequestedAt: null,
      error: ERROR,
      retryAt: 10,
      givenBack: true,
      now: 10,
    });
    assert.equal(givenBack.set, 'givenBack');
    assert.deepEqual(givenBack.event(0).data, { status: 'queued', error: ERROR, runAt: 10 });
  });

  it('recovers an expired lease while attempts are left', () => {
    assert.equal(rules.planLeaseExpired(row('running', { attempts: 2 }), 10).set, 'requeued');
    assert.equal(rules.planLeaseExpired(row('running', { attempts: 3 }), 10).set, 'failed');
    const requested = row('running', { cancel_requested_at: 4 });
    assert.equal(rules.planLeaseExpired(requested, 10).set, 'canceled');
    const event = rules.planLeaseExpired(row('running'), 10).event(1);
    assert.deepEqual(event.data.error, rules.LEASE_EXPIRED_ERROR);
  });

  it('cancels a queued operation, requests a running one once, refuses a finished one', () => {
    const queued = rules.planCancel(row('queued'), undefined, ERROR, 10);
    assert.equal(queued?.set, 'canceled');
    assert.deepEqual(queued?.event(0), {
      type: 'operation.canceled',
      data: { status: 'canceled', error: ERROR },
    });
    const running = rules.planCancel(row('running'), undefined, ERROR, 10);
    assert.deepEqual([running?.set, running?.values], ['cancelRequested', [10, 10]]);
    assert.deepEqual(running?.event(1), {
      type: 'operation.cancel_requested',
      data: { status: 'running' },
    });
    assert.equal(
      rules.planCancel(row('running', { cancel_requested_at: 5 }), undefined, ERROR, 10),
      null,
    );
    assert.equal(
      code(() => rules.planCancel(row('succeeded'), undefined, ERROR, 10)),
      'ALREADY_TERMINAL',
    );
    assert.equal(
      code(() => rules.planCancel(row('queued'), [3], ERROR, 10)),
      'PRECONDITION_FAILED',
    );
  });

  it('retries only failed or canceled operations, and deletes only finished ones', () => {
    const retry = rules.planRetry(row('failed'), [4], 50, 10);
    assert.deepEqual([retry.set, retry.values, retry.work], ['retried', [50, 10], true]);
    assert.deepEqual(retry.event(0), {
      type: 'operation.queued',
      data: { status: 'queued', runAt: 50 },
    });
    assert.equal(
      code(() => rules.planRetry(row('running'), undefined, 50, 10)),
      'ILLEGAL_TRANSITION',
    );
    assert.equal(
      code(() => rules.planRetry(row('canceled'), [1], 50, 10)),
      'PRECONDITION_FAILED',
    );
    const deleted = rules.planDelete(row('succeeded'), undefined);
    assert.deepEqual(deleted, {
      row: { id: 'op_1', tenant: 't', type: 'noop', version: 5, attempts: 0, labels: '{"a":"b"}' },
      type: 'operation.deleted',
      data: { status: 'succeeded' },
    });
    assert.equal(
      code(() => rules.planDelete(row('queued'), undefined)),
      'ILLEGAL_TRANSITION',
    );
  });

  it('starts claimed operations oldest runAt first, each with its lease and started event', () => {
    const rows = [
      row('running', { id: 'b', pk: 2, run_at: 5, attempts: 1, lease_token: 'x.2' }),
      row('running', { id: 'a', pk: 3, run_at: 1, attempts: 2, lease_token: 'x.3' }),
      row('running', { id: 'c', pk: 1, run_at: 5, attempts: 1, lease_token: 'x.1' }),
    ];
    const appended: string[] = [];
    const claimed = rules.startClaimed(
      rows,
      99,
      10,
      (r, type, data) => appended.push(`${r.id} ${type} ${String(data.attempt)}`),
      (r) => ({ id: r.id }) as never,
    );
    assert.deepEqual(
      claimed.map((c) => c.lease),
      [
        { operationId: 'a', token: 'x.3', expiresAt: 99 },
        { operationId: 'c', token: 'x.1', expiresAt: 99 },
        { operationId: 'b', token: 'x.2', expiresAt: 99 },
      ],
    );
    assert.deepEqual(appended, [
      'a operation.started 2',
      'c operation.started 1',
      'b operation.started 1',
    ]);
  });

  it('answers renewals and idempotency keys', () => {
    const lease = { operationId: 'op_1', token: 't' };
    assert.equal(rules.renewed(lease, undefined).state, 'lost');
    assert.equal(rules.renewed(lease, null).state, 'held');
    assert.equal(rules.renewed(lease, 3).state, 'cancel_requested');
    const claim = { key: 'k', fingerprint: 'f', expiresAt: 100, status: 202, holdUntil: null };
    const found = {
      fingerprint: 'f',
      operation_id: 'op_1',
      status: 202,
      hold_until: null,
      expires_at: 50,
    };
    assert.equal(rules.keyOutcome(undefined, claim, 10), null);
    assert.equal(rules.keyOutcome(found, claim, 50), null, 'expired');
    assert.deepEqual(rules.keyOutcome({ ...found, fingerprint: 'g' }, claim, 10), {
      outcome: 'mismatch',
      operationId: 'op_1',
    });
    assert.deepEqual(rules.keyOutcome({ ...found, status: null, hold_until: 20 }, claim, 10), {
      outcome: 'in_flight',
      operationId: 'op_1',
      holdUntil: 20,
    });
    assert.deepEqual(rules.keyOutcome({ ...found, status: null }, claim, 10), {
      outcome: 'replay',
      operationId: 'op_1',
      status: 202,
    });
  });
});

describe('idempotency key boundaries', () => {
  const claim = { key: 'k', fingerprint: 'f', expiresAt: 100, status: 202, holdUntil: null };
  const found = {
    fingerprint: 'f',
    operation_id: 'op_1',
    status: null,
    hold_until: 20,
    expires_at: 50,
  };

  it('holds a key in flight until its hold ends, not at that instant', () => {
    assert.equal(rules.keyOutcome(found, claim, 19)?.outcome, 'in_flight');
    assert.deepEqual(rules.keyOutcome(found, claim, 20), {
      outcome: 'replay',
      operationId: 'op_1',
      status: 202,
    });
    assert.equal(rules.keyOutcome({ ...found, hold_until: null }, claim, 19)?.outcome, 'replay');
  });

  it('keeps a key until it expires, not at that instant', () => {
    assert.equal(rules.keyOutcome({ ...found, status: 201 }, claim, 49)?.outcome, 'replay');
    assert.equal(rules.keyOutcome({ ...found, status: 201 }, claim, 50), null);
    assert.deepEqual(rules.keyOutcome({ ...found, status: 201 }, claim, 30), {
      outcome: 'replay',
      operationId: 'op_1',
      status: 201,
    });
  });
});

describe('consumer rules (the relay cursor)', () => {
  const NOW = 1_000;
  const free: consumers.ConsumerRow = {
    name: 'webhooks',
    position: 10,
    holder: null,
    token: null,
    lease_until: null,
    lease_ms: 500,
    created_at: 1,
    updated_at: 2,
  };
  const held: consumers.ConsumerRow = {
    ...free,
    holder: 'a',
    token: 'cl_a',
    lease_until: NOW + 100,
  };
  const ask = (more: Partial<AcquireRequest> = {}): AcquireRequest => ({
    name: 'webhooks',
    holder: 'a',
    leaseMs: 300,
    now: NOW,
    ...more,
  });
  const commitAt = { now: NOW, askedAt: Date.now(), logEnd: 20 };
  const field = (run: () => unknown): string | undefined => {
    try {
      run();
    } catch (error) {
      if (!isAcceptedError(error)) return 'other';
      return `${error.code} ${error.fields?.[0]?.field ?? ''}`.trim();
    }
    return undefined;
  };

  it('a lease runs while lease_until is ahead of now, and never once released', () => {
    assert.equal(consumers.leaseRuns(held, NOW), true);
    assert.equal(consumers.leaseRuns(held, NOW + 99), true);
    assert.equal(consumers.leaseRuns(held, NOW + 100), false, 'at lease_until it has ended');
    assert.equal(consumers.leaseRuns({ ...held, token: null }, NOW), false);
    assert.equal(consumers.leaseRuns({ ...held, lease_until: null }, NOW), false);
  });

  it('acquire: refused while another holder runs, renewed under the same token for the same holder', () => {
    assert.equal(consumers.planAcquire(held, ask({ holder: 'b' }), Date.now()), null);
    const renewed = consumers.planAcquire(held, ask(), Date.now());
    assert.ok(renewed);
    assert.equal(renewed.token, 'cl_a');
    assert.equal(renewed.holder, 'a');
    assert.equal(renewed.lease_ms, 300);
    assert.equal(renewed.updated_at, NOW);
    assert.equal(renewed.position, 10, 'the position stays');
    assert.ok(renewed.lease_until !== null && renewed.lease_until >= NOW + 300);
  });

  it('acquire: a free, released or expired consumer is taken under a new token, by anyone', () => {
    for (const row of [
      free,
      { ...held, token: null, holder: null, lease_until: null },
      { ...held, lease_until: NOW },
      { ...held, lease_until: NOW - 1 },
    ]) {
      for (const holder of ['a', 'b']) {
        const taken = consumers.planAcquire(row, ask({ holder }), Date.now());
        assert.ok(taken, JSON.stringify(row));
        assert.equal(taken.holder, holder);
        assert.match(taken.token ?? '', /^cl_[A-Za-z0-9_-]{24}$/);
        assert.notEqual(taken.token, 'cl_a', 'an expired lease is not renewed: its token ends');
        assert.ok(taken.lease_until !== null && taken.lease_until >= NOW + 300);
      }
    }
  });

  it('acquire: the name and lease length are checked', () => {
    assert.equal(
      field(() => consumers.planAcquire(free, ask({ name: '' }), 0)),
      'VALIDATION_FAILED /name',
    );
    assert.equal(
      field(() => consumers.planAcquire(free, ask({ name: 'a b' }), 0)),
      'VALIDATION_FAILED /name',
    );
    assert.equal(
      field(() => consumers.planAcquire(free, ask({ name: 'x'.repeat(101) }), 0)),
      'VALIDATION_FAILED /name',
    );
    assert.equal(
      field(() => consumers.planAcquire(free, ask({ name: 'A.b_c-d:9'.padEnd(100, 'z') }), 0)),
      undefined,
    );
    for (const leaseMs of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.equal(
        field(() => consumers.planAcquire(free, ask({ leaseMs }), 0)),
        'VALIDATION_FAILED /leaseMs',
        String(leaseMs),
      );
      assert.equal(
        field(() => consumers.newConsumer(ask({ leaseMs }), 5)),
        'VALIDATION_FAILED /leaseMs',
        String(leaseMs),
      );
    }
    assert.equal(
      field(() => consumers.planAcquire(free, ask({ leaseMs: 1 }), 0)),
      undefined,
    );
    assert.equal(
      field(() => consumers.newConsumer(ask({ name: '' }), 5)),
      'VALIDATION_FAILED /name',
    );
  });

  it('a new consumer starts at the log end, or at 0 when asked for the earliest', () => {
    const latest = consumers.newConsumer(ask(), 42);
    assert.deepEqual(latest, {
      name: 'webhooks',
      position: 42,
      holder: null,
      token: null,
      lease_until: null,
      lease_ms: 300,
      created_at: NOW,
      updated_at: NOW,
    });
    assert.equal(consumers.newConsumer(ask({ startAt: 'latest' }), 42).position, 42);
    assert.equal(consumers.newConsumer(ask({ startAt: 'earliest' }), 42).position, 0);
  });

  it('commit: only under the current token; forward only; never past the log end; the lease renewed', () => {
    const lease = { name: 'webhooks', token: 'cl_a' };
    assert.equal(
      field(() => consumers.planCommit(undefined, lease, 12, commitAt)),
      'LEASE_LOST',
    );
    assert.equal(
      field(() => consumers.planCommit(held, { ...lease, token: 'cl_b' }, 12, commitAt)),
      'LEASE_LOST',
    );
    // A released lease has no token: the empty token a released state reads as is refused.
    assert.equal(
      field(() =>
        consumers.planCommit({ ...held, token: null }, { ...lease, token: '' }, 12, commitAt),
      ),
      'LEASE_LOST',
    );
    for (const position of [-1, 1.5, Number.NaN]) {
      assert.equal(
        field(() => consumers.planCommit(held, lease, position, commitAt)),
        'VALIDATION_FAILED /position',
        String(position),
      );
    }
    assert.equal(
      field(() => consumers.planCommit(held, lease, 21, commitAt)),
      'VALIDATION_FAILED /position',
    );
    assert.equal(
      consumers.planCommit(held, lease, 20, commitAt).position,
      20,
      'the log end itself',
    );
    assert.equal(consumers.planCommit(held, lease, 0, commitAt).position, 10, 'behind stays');
    assert.equal(consumers.planCommit(held, lease, 10, commitAt).position, 10);
    const moved = consumers.planCommit(held, lease, 15, { ...commitAt, now: NOW + 50 });
    assert.equal(moved.position, 15);
    assert.equal(moved.token, 'cl_a');
    assert.equal(moved.updated_at, NOW + 50);
    assert.ok(moved.lease_until !== null && moved.lease_until >= NOW + 50 + held.lease_ms);
    // A lease whose time ran out but that nobody took over still commits: the token decides.
    const late = consumers.planCommit({ ...held, lease_until: NOW - 1 }, lease, 11, commitAt);
    assert.equal(late.position, 11);
  });

  it('release: drops the lease under the current token only', () => {
    const lease = { name: 'webhooks', token: 'cl_a' };
    assert.deepEqual(consumers.planRelease(held, lease), {
      ...held,
      holder: null,
      token: null,
      lease_until: null,
    });
    assert.equal(consumers.planRelease(held, { ...lease, token: 'cl_b' }), null);
    assert.equal(consumers.planRelease({ ...held, token: null }, { ...lease, token: '' }), null);
    assert.equal(consumers.planRelease(undefined, lease), null);
  });

  it('state and lease as the store hands them out', () => {
    assert.deepEqual(consumers.toConsumerState(held, 25), {
      name: 'webhooks',
      position: 10,
      holder: 'a',
      leaseUntil: NOW + 100,
      lag: 15,
      updatedAt: 2,
    });
    assert.equal(consumers.toConsumerState(held, 3).lag, 0, 'never negative');
    assert.deepEqual(consumers.toConsumerLease(held), {
      name: 'webhooks',
      token: 'cl_a',
      position: 10,
      leaseUntil: NOW + 100,
    });
    assert.deepEqual(consumers.toConsumerLease(free), {
      name: 'webhooks',
      token: '',
      position: 10,
      leaseUntil: 0,
    });
  });

  it('statements for both parameter styles, each parameter used once in order', () => {
    const sqlite = consumers.consumerSql(() => '?');
    const pg = consumers.consumerSql((n) => `$${n}`);
    const columns = 'name, position, holder, token, lease_until, lease_ms, created_at, updated_at';
    assert.equal(sqlite.select, `SELECT ${columns} FROM consumers WHERE name = ?`);
    assert.equal(pg.select, `SELECT ${columns} FROM consumers WHERE name = $1`);
    assert.equal(pg.selectAll, `SELECT ${columns} FROM consumers ORDER BY name`);
    const values = '$1, $2, $3, $4, $5, $6, $7, $8';
    assert.equal(
      pg.insertMissing,
      `INSERT INTO consumers (${columns}) VALUES (${values}) ON CONFLICT (name) DO NOTHING`,
    );
    assert.equal(
      pg.save,
      `INSERT INTO consumers (${columns}) VALUES (${values}) ON CONFLICT (name) DO UPDATE SET ` +
        'position = excluded.position, holder = excluded.holder, token = excluded.token, ' +
        'lease_until = excluded.lease_until, lease_ms = excluded.lease_ms, ' +
        'created_at = excluded.created_at, updated_at = excluded.updated_at',
    );
    assert.equal(sqlite.save.split('?').length - 1, 8);
    assert.deepEqual(consumers.consumerParams(held), [
      'webhooks',
      10,
      'a',
      'cl_a',
      NOW + 100,
      500,
      1,
      2,
    ]);
  });
});
