// Faults between the PostgreSQL store and its server, placed exactly by a TCP proxy.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AcceptedError } from '../src/domain/errors.ts';
import { newOp } from '../src/store/conformance.ts';
import { PostgresStore } from '../src/store/postgres/postgres-store.ts';
import { PG_URL, adminQuery, dropSchema, newSchema, pgUnavailable } from './pg-helpers.ts';
import { startPgProxy } from './pg-proxy.ts';

const unavailable = await pgUnavailable();

describe('PostgreSQL store under connection faults', { skip: unavailable ?? false }, () => {
  it('#20 a COMMIT whose answer is lost is not run again: each write applies once, its callers get 503', async () => {
    const schema = newSchema();
    const proxy = await startPgProxy(PG_URL);
    const store = new PostgresStore({ url: proxy.url, schema });
    await store.open();
    try {
      const running = newOp();
      await store.create(running, 1_000);
      const { claimed } = await store.claim({
        owner: 'w',
        types: null,
        limit: 1,
        leaseMs: 60_000,
        now: 2_000,
      });
      const lease = claimed[0]?.lease;
      assert.ok(lease);
      const fresh = newOp();
      proxy.loseNextCommitAnswer();
      // One group commit: a progress report (not idempotent) and a create.
      const outcomes = await Promise.allSettled([
        store.progress(lease, { fraction: 0.5 }, 2_100),
        store.create(fresh, 2_100),
      ]);
      await proxy.commitLost;
      for (const outcome of outcomes) {
        assert.equal(outcome.status, 'rejected');
        const error = outcome.reason as unknown;
        assert.ok(error instanceof AcceptedError, String(error));
        assert.equal(error.code, 'STORE_UNAVAILABLE');
      }
      // The server did commit them, once each.
      const events = await adminQuery<{ operation_id: string; type: string }>(
        `SELECT operation_id, type FROM "${schema}".events ORDER BY seq`,
      );
      assert.deepEqual(
        events.filter((e) => e.operation_id === running.id).map((e) => e.type),
        ['operation.queued', 'operation.started', 'operation.progress'],
      );
      assert.deepEqual(
        events.filter((e) => e.operation_id === fresh.id).map((e) => e.type),
        ['operation.queued'],
      );
      // And the store carries on by itself on a new connection.
      const after = newOp();
      await store.create(after, 3_000);
      assert.equal((await store.get(after.id))?.status, 'queued');
      assert.equal((await store.get(fresh.id))?.status, 'queued');
    } finally {
      await store.close();
      await proxy.close();
      await dropSchema(schema);
    }
  });
});
