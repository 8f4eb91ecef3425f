// Faults between the PostgreSQL store and its server, placed exactly by a TCP proxy.
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AcceptedError } from '../src/domain/errors.ts';
import { newOp } from '../src/store/conformance.ts';
import { Db } from '../src/store/postgres/db.ts';
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

  /** A pool of one connection on the test database, its timeouts shortened. */
  const smallDb = (url: string, connectTimeoutMs: number, poolWaitTimeoutMs: number) =>
    new Db({
      url,
      max: 1,
      schema: 'public',
      onError: () => undefined,
      connectTimeoutMs,
      poolWaitTimeoutMs,
    });

  /** Holds the pool's only connection in a transaction until the returned function is called. */
  async function holdConnection(db: Db): Promise<{ release: () => void; done: Promise<void> }> {
    let release: () => void = () => undefined;
    let held: () => void = () => undefined;
    const holding = new Promise<void>((resolve) => (held = resolve));
    const done = db.begin(async () => {
      held();
      await new Promise<void>((resolve) => (release = resolve));
    });
    await holding;
    return { release, done };
  }

  it('a call waiting for a busy pool is not cut off by the connect timeout', async () => {
    // pg-pool's own connectionTimeoutMillis covers the wait for a free connection as well:
    // at 5 s, a burst of reads failed with STORE_UNAVAILABLE from a server that was well.
    const db = smallDb(PG_URL, 100, 60_000);
    try {
      const holder = await holdConnection(db);
      const waiting = db.run<{ one: number }>('SELECT 1 AS one', [], false);
      // Waits three connect timeouts in the queue, then gets the connection.
      await sleep(300);
      holder.release();
      await holder.done;
      assert.deepEqual(await waiting, [{ one: 1 }]);
    } finally {
      await db.end();
    }
  });

  it('a pool busy past its wait bound answers STORE_UNAVAILABLE, and serves again once free', async () => {
    const db = smallDb(PG_URL, 5_000, 100);
    try {
      const holder = await holdConnection(db);
      await assert.rejects(db.run('SELECT 1', [], false), (error: unknown) => {
        assert.ok(error instanceof AcceptedError, String(error));
        assert.equal(error.code, 'STORE_UNAVAILABLE');
        return true;
      });
      holder.release();
      await holder.done;
      assert.deepEqual(await db.run<{ one: number }>('SELECT 1 AS one', [], false), [{ one: 1 }]);
    } finally {
      await db.end();
    }
  });

  it('a server that accepts the connection and never answers gets STORE_UNAVAILABLE, not a hang', async () => {
    // A black hole: the TCP handshake succeeds, the startup message gets no answer.
    const sockets = new Set<net.Socket>();
    const hole = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => hole.listen(0, '127.0.0.1', resolve));
    const { port } = hole.address() as net.AddressInfo;
    const db = smallDb(`postgres://postgres@127.0.0.1:${port}/test`, 100, 60_000);
    try {
      await assert.rejects(db.run('SELECT 1', [], false), (error: unknown) => {
        assert.ok(error instanceof AcceptedError, String(error));
        assert.equal(error.code, 'STORE_UNAVAILABLE');
        return true;
      });
      assert.ok(sockets.size >= 1, 'the store reached the black hole');
    } finally {
      await db.end();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => hole.close(resolve));
    }
  });
});
