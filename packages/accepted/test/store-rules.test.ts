// The store rules (store/rules.ts) as pure functions: what each transition checks, sets and
// appends, whatever the adapter. The adapters' behaviour is the conformance suite's.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isAcceptedError } from '../src/domain/errors.ts';
import type { OperationStatus } from '../src/domain/operation.ts';
import type { OperationRow } from '../src/store/operation-rows.ts';
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
