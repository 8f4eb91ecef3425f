import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { AcceptedError } from '../src/domain/errors.ts';
import { newOperationId } from '../src/domain/ids.ts';
import { newOp, storeConformance } from '../src/store/conformance.ts';
import Database from 'better-sqlite3';
import { MIGRATIONS } from '../src/store/sqlite/migrations.ts';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts';
import { eventually, tempDir } from './helpers.ts';

function tempFile(): string {
  return path.join(tempDir('accepted-sqlite-'), 'accepted.db');
}

storeConformance('sqlite', async () => {
  const filename = tempFile();
  const store = new SqliteStore({ filename });
  await store.open();
  return {
    store,
    cleanup: () => store.close(),
  };
});

describe('SQLite store specifics', () => {
  it('#4 filters of 2,000 different lengths keep the prepared statements bounded, and still filter', async () => {
    const store = new SqliteStore({ filename: tempFile() });
    await store.open();
    try {
      const ids: string[] = [];
      for (let i = 0; i < 40; i++) {
        const op = {
          id: newOperationId(),
          tenant: 't1',
          type: `type.${i % 4}`,
          input: null,
          maxAttempts: 1,
          runAt: 0,
          timeoutMs: null,
          labels: { team: i % 2 === 0 ? 'red' : 'blue', [`k${i % 5}`]: 'v' },
          callbackUrl: null,
        };
        await store.create(op, 1_000);
        ids.push(op.id);
      }
      const statuses = ['queued', 'running', 'succeeded', 'failed', 'canceled'] as const;
      const types = ['operation.queued', 'operation.started', 'operation.succeeded'] as const;
      for (let n = 1; n <= 2_000; n++) {
        // Lists, type sets and label sets of every length: each a new statement text before.
        const some = Array.from({ length: n }, (_, i) => ids[i % ids.length] ?? '');
        const labels = Object.fromEntries(
          Array.from({ length: 1 + (n % 7) }, (_, i) => [`x${(n + i) % 50}`, String(i)]),
        );
        await store.readEvents({ after: 0, limit: 1, operationIds: some, tenant: 't1' });
        await store.readEvents({ after: 0, limit: 1, types: types.slice(0, 1 + (n % 3)), labels });
        await store.list({
          tenant: 't1',
          limit: 1,
          status: statuses.slice(0, 1 + (n % 5)),
          labels,
        });
      }
      assert.ok(store.preparedStatements <= 256, `${store.preparedStatements} statements held`);
      // The filters still mean what they did.
      const red = await store.list({ tenant: 't1', limit: 100, labels: { team: 'red' } });
      assert.equal(red.items.length, 20);
      const redK0 = await store.list({
        tenant: 't1',
        limit: 100,
        labels: { team: 'red', k0: 'v' },
      });
      assert.deepEqual(
        redK0.items.map((o) => o.labels).every((l) => l.team === 'red' && l.k0 === 'v'),
        true,
      );
      assert.equal(redK0.items.length, 4);
      const two = await store.readEvents({ after: 0, limit: 100, operationIds: ids.slice(0, 2) });
      assert.deepEqual(two.map((e) => e.operationId).sort(), ids.slice(0, 2).sort());
      const queued = await store.list({ tenant: 't1', limit: 100, status: ['queued', 'failed'] });
      assert.equal(queued.items.length, 40);
    } finally {
      await store.close();
    }
  });

  it('migration 3 puts the labels of existing operations on their events', async () => {
    const filename = tempFile();
    const db = new Database(filename);
    for (const migration of MIGRATIONS.filter((m) => m.version <= 2)) db.exec(migration.sql);
    db.pragma('user_version = 2');
    const id = newOperationId();
    db.prepare(
      `INSERT INTO operations (id, tenant, type, status, input, labels, max_attempts, run_at,
         created_at, updated_at, version) VALUES (?, 't', 'x', 'queued', 'null', ?, 1, 0, 0, 0, 1)`,
    ).run(id, '{"team":"red"}');
    db.prepare(
      `INSERT INTO events (seq, operation_id, tenant, operation_type, version, type, data, time)
       VALUES (1, ?, 't', 'x', 1, 'operation.queued', '{"status":"queued"}', 0)`,
    ).run(id);
    db.close();
    const store = new SqliteStore({ filename });
    await store.open();
    const [event] = await store.readEvents({ after: 0, limit: 10, labels: { team: 'red' } });
    assert.deepEqual(event?.labels, { team: 'red' });
    await store.close();
  });

  it("migration 6 moves the webhook dispatcher's cursor into the `webhooks` consumer", async () => {
    const filename = tempFile();
    const db = new Database(filename);
    for (const migration of MIGRATIONS.filter((m) => m.version <= 5)) db.exec(migration.sql);
    db.pragma('user_version = 5');
    db.prepare(`UPDATE meta SET value = 41 WHERE key = 'seq_high'`).run();
    db.prepare(`UPDATE meta SET value = 37 WHERE key = 'webhook_cursor'`).run();
    db.close();
    const store = new SqliteStore({ filename });
    await store.open();
    try {
      const [webhooks, ...others] = await store.consumers.list();
      assert.deepEqual(others, []);
      assert.equal(webhooks?.name, 'webhooks');
      assert.equal(webhooks.position, 37);
      assert.equal(webhooks.holder, null);
      assert.equal(webhooks.lag, 4);
      const lease = await store.consumers.acquire({
        name: 'webhooks',
        holder: 'h',
        leaseMs: 1_000,
        now: Date.now(),
      });
      assert.equal(lease?.position, 37, 'the dispatcher goes on where it was');
    } finally {
      await store.close();
    }
  });

  it('refuses a second process-level opener of the same file (STORE_LOCKED)', async () => {
    const filename = tempFile();
    const first = new SqliteStore({ filename });
    await first.open();
    const second = new SqliteStore({ filename });
    await assert.rejects(second.open(), (error: unknown) => {
      assert.ok(error instanceof AcceptedError);
      assert.equal(error.code, 'STORE_LOCKED');
      return true;
    });
    await first.close();
    await second.open();
    await second.close();
  });

  it('frees the leases of webhook deliveries in flight on open (their sender died)', async () => {
    const filename = tempFile();
    let store = new SqliteStore({ filename });
    await store.open();
    await store.webhooks.createEndpoint(
      {
        id: 'ep_reopen',
        tenant: 't',
        url: 'https://example.com/hook',
        description: null,
        eventTypes: null,
        labels: null,
        secret: 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==',
        signingKey: null,
        retrySchedule: null,
        rateLimit: null,
      },
      1,
    );
    await store.create(
      {
        id: newOperationId(),
        tenant: 't',
        type: 'x',
        input: null,
        maxAttempts: 1,
        runAt: 0,
        timeoutMs: null,
        labels: {},
        callbackUrl: null,
      },
      1,
    );
    const lease = await store.consumers.acquire({
      name: 'webhooks',
      holder: 'test',
      leaseMs: 60_000,
      now: 2,
    });
    assert.ok(lease);
    await store.webhooks.dispatchDeliveries({
      lease,
      limit: 10,
      now: 2,
      newId: () => 'dlv_reopen',
      newSecret: () => 'whsec_unused',
      payload: () => '{}',
    });
    const now = Date.now();
    const leased = await store.webhooks.claimDeliveries({ now, limit: 10, leaseMs: 3_600_000 });
    assert.equal(leased.length, 1);
    assert.equal((await store.webhooks.claimDeliveries({ now, limit: 10, leaseMs: 1 })).length, 0);
    await store.close();
    store = new SqliteStore({ filename });
    await store.open();
    const again = await store.webhooks.claimDeliveries({ now, limit: 10, leaseMs: 1 });
    assert.deepEqual(
      again.map((c) => c.delivery.id),
      ['dlv_reopen'],
    );
    await store.close();
  });

  it('keeps committed writes across close and reopen, and frees dead leases on open', async () => {
    const filename = tempFile();
    let store = new SqliteStore({ filename });
    await store.open();
    const id = newOperationId();
    await store.create(
      {
        id,
        tenant: 't',
        type: 'x',
        input: { big: 'y'.repeat(1000) },
        maxAttempts: 2,
        runAt: 0,
        timeoutMs: null,
        labels: {},
        callbackUrl: null,
      },
      1,
    );
    const { claimed } = await store.claim({
      owner: 'w',
      types: null,
      limit: 1,
      leaseMs: 3_600_000,
      now: Date.now(),
    });
    assert.equal(claimed.length, 1);
    await store.close();
    store = new SqliteStore({ filename });
    await store.open();
    const read = await store.get(id);
    assert.equal(read?.status, 'running');
    // The lease was an hour long, but the process holding it is gone: recovery is immediate.
    assert.equal(await store.recoverExpiredLeases(Date.now(), 10), 1);
    assert.equal((await store.get(id))?.status, 'queued');
    await store.close();
  });

  it('folds concurrent writes into shared transactions without mixing up results', async () => {
    const filename = tempFile();
    const store = new SqliteStore({ filename });
    await store.open();
    const ids = Array.from({ length: 500 }, () => newOperationId());
    const base = {
      tenant: 't',
      type: 'x',
      input: null,
      maxAttempts: 1,
      runAt: 0,
      timeoutMs: null,
      labels: {},
      callbackUrl: null,
    };
    // One bad write (a duplicate id) in the middle must fail alone.
    const writes = ids.map((id) => store.create({ ...base, id }, 1));
    const duplicate = store.create({ ...base, id: ids[0]! }, 1);
    const results = await Promise.allSettled([...writes, duplicate]);
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 500);
    assert.equal(results.at(-1)?.status, 'rejected');
    const events = await store.readEvents({ after: 0, limit: 1000 });
    assert.equal(events.length, 500);
    assert.equal(await store.lastSeq(), events.at(-1)?.seq);
    await store.close();
  });

  // A SIGKILL test cannot see a missing sync (the OS cache outlives the process), so this
  // watches the sync itself: each acknowledged write waits for an fdatasync of the WAL file.
  it('acknowledges a write only after an fdatasync of the WAL file has completed (durability full)', async () => {
    const filename = tempFile();
    const store = new SqliteStore({ filename });
    await store.open();
    const wal = fs.statSync(`${filename}-wal`);
    const original = fs.fdatasync;
    const held: { fd: number; done: () => void }[] = [];
    fs.fdatasync = ((fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => {
      held.push({ fd, done: () => original(fd, callback) });
    }) as typeof fs.fdatasync;
    try {
      let acknowledged = false;
      const created = store.create(newOp(), Date.now()).then(() => {
        acknowledged = true;
      });
      // The commit is made (the group commit runs on the next turn) and its sync asked for...
      await eventually(() => held.length > 0);
      assert.equal(held.length, 1, 'one fdatasync asked for');
      const [sync] = held;
      assert.ok(sync);
      const synced = fs.fstatSync(sync.fd);
      assert.deepEqual([synced.dev, synced.ino], [wal.dev, wal.ino], 'of the WAL file');
      // ...and nothing is acknowledged until it completes.
      assert.equal(acknowledged, false, 'acknowledged before the sync completed');
      sync.done();
      await created;
      assert.equal(acknowledged, true);
    } finally {
      fs.fdatasync = original;
      for (const sync of held.splice(1)) sync.done();
      await store.close();
    }
  });

  it("pages a tenant's deliveries from an index, with or without a status filter (no sort of them all)", async () => {
    const filename = tempFile();
    const store = new SqliteStore({ filename });
    await store.open();
    await store.close();
    const db = new Database(filename, { readonly: true });
    try {
      // The shapes of listDeliveries: tenant, then status, endpoint or operation, and a cursor.
      for (const where of [
        'd.tenant = ?',
        'd.tenant = ? AND d.status IN (?)',
        'd.tenant = ? AND d.status IN (?, ?)',
        'd.tenant = ? AND d.target = ?',
        'd.tenant = ? AND d.operation_id = ?',
        'd.tenant = ? AND d.status IN (?) AND d.pk < ?',
      ]) {
        const plan = (
          db
            .prepare(
              `EXPLAIN QUERY PLAN SELECT * FROM webhook_deliveries d WHERE ${where}
               ORDER BY d.pk DESC LIMIT 51`,
            )
            .all(
              ...where
                .split('?')
                .slice(1)
                .map(() => 'x'),
            ) as { detail: string }[]
        ).map((row) => row.detail);
        assert.ok(
          plan.every((detail) => !detail.includes('TEMP B-TREE') && !/^SCAN d$/.test(detail)),
          `${where}: ${plan.join(' | ')}`,
        );
      }
    } finally {
      db.close();
    }
  });

  it('retention reads no table whole: every statement of a purge (the probe too) goes by an index', async () => {
    const filename = tempFile();
    const store = new SqliteStore({ filename });
    await store.open();
    // The statements the store prepares while it purges, as it runs them.
    const prepared: string[] = [];
    // Taken off the prototype to be called with each connection as `this`, below.
    // eslint-disable-next-line @typescript-eslint/unbound-method
    const prepare = Database.prototype.prepare;
    Database.prototype.prepare = function (this: Database.Database, sql: string) {
      prepared.push(sql);
      return prepare.call(this, sql) as Database.Statement;
    } as typeof prepare;
    try {
      const now = Date.now();
      for (let i = 0; i < 3; i++) {
        const op = newOp({ runAt: now - 1 });
        await store.create(op, now - 10_000);
        await store.cancel(op.id, op.tenant, { code: 'CANCELED', message: 'test' }, now - 10_000);
      }
      // Nothing past retention, then everything: the probe alone, then the deletes too.
      assert.equal(await store.purge(now - 60_000, 100), 0);
      assert.equal(await store.purge(now, 100), 3);
    } finally {
      Database.prototype.prepare = prepare;
      await store.close();
    }
    const statements = [...new Set(prepared)].filter((sql) => /\b(events|operations)\b/.test(sql));
    assert.ok(
      statements.some((sql) => sql.includes('EXISTS')),
      'the probe was prepared',
    );
    const db = new Database(filename, { readonly: true });
    try {
      for (const sql of statements) {
        const params = (sql.match(/\?/g) ?? []).map(() => 1);
        const plan = (
          db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as { detail: string }[]
        ).map((row) => row.detail);
        assert.ok(
          plan.every((detail) => !/^SCAN (events|operations)\b/.test(detail)),
          `${sql.replace(/\s+/g, ' ')}: ${plan.join(' | ')}`,
        );
      }
    } finally {
      db.close();
    }
  });

  it('after a failed fdatasync, refuses the writes it covered and every later one, and is not ready', async () => {
    const filename = tempFile();
    const store = new SqliteStore({ filename });
    await store.open();
    const original = fs.fdatasync;
    fs.fdatasync = ((_fd: number, callback: (error: NodeJS.ErrnoException | null) => void) => {
      setImmediate(() => callback(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' })));
    }) as typeof fs.fdatasync;
    try {
      const code = (error: unknown) => (error as { code?: string }).code;
      await assert.rejects(
        store.create(newOp(), Date.now()),
        (e) => code(e) === 'STORE_UNAVAILABLE',
      );
      fs.fdatasync = original;
      await assert.rejects(
        store.create(newOp(), Date.now()),
        (e) => code(e) === 'STORE_UNAVAILABLE',
      );
      await assert.rejects(store.ping(), (e) => code(e) === 'STORE_UNAVAILABLE');
    } finally {
      fs.fdatasync = original;
      await store.close();
    }
  });
});
