import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newOp, storeConformance } from '../src/store/conformance.ts';
import { MIGRATIONS } from '../src/store/postgres/migrations.ts';
import { PostgresStore } from '../src/store/postgres/postgres-store.ts';
import type { ConsumerRef } from '../src/store/consumers.ts';
import type { PostgresWebhooks } from '../src/store/postgres/webhooks.ts';
import type { StoreHint } from '../src/store/store.ts';
import {
  PG_URL,
  adminQuery,
  dropSchema,
  newSchema,
  pgUnavailable,
  rawSession,
} from './pg-helpers.ts';

const unavailable = await pgUnavailable();

/** Opened stores on one fresh schema (several nodes), closed and dropped by the returned cleanup. */
async function nodes(count: number, schema = newSchema()) {
  const stores = Array.from({ length: count }, () => new PostgresStore({ url: PG_URL, schema }));
  await Promise.all(stores.map((store) => store.open()));
  return {
    schema,
    stores,
    cleanup: async () => {
      for (const store of stores) await store.close();
      await dropSchema(schema);
    },
  };
}

async function until(check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

if (unavailable) {
  describe('PostgreSQL store', { skip: unavailable }, () => {
    it('needs a PostgreSQL server', () => {});
  });
} else {
  storeConformance('postgres', async () => {
    const schema = newSchema();
    const store = new PostgresStore({ url: PG_URL, schema });
    await store.open();
    const peers: PostgresStore[] = [];
    return {
      store,
      // Another node on the same schema.
      peer: async () => {
        const peer = new PostgresStore({ url: PG_URL, schema });
        peers.push(peer);
        await peer.open();
        return peer;
      },
      cleanup: async () => {
        for (const peer of peers) await peer.close();
        await store.close();
        await dropSchema(schema);
      },
    };
  });

  describe('PostgreSQL store specifics', () => {
    it('migrates once when several nodes open a new schema at the same time (advisory lock)', async () => {
      const { stores, schema, cleanup } = await nodes(4);
      try {
        const rows = await adminQuery<{ version: number }>(
          `SELECT version FROM "${schema}".migrations ORDER BY version`,
        );
        assert.deepEqual(
          rows.map((r) => r.version),
          MIGRATIONS.map((m) => m.version),
        );
        // Every node works on the one schema.
        await stores[0]!.create(newOp(), 1_000);
        assert.equal((await stores[3]!.list({ tenant: 't1', limit: 10 })).items.length, 1);
      } finally {
        await cleanup();
      }
    });

    it("migration 3 moves the webhook dispatcher's cursor into the `webhooks` consumer, and idles older nodes", async () => {
      const schema = newSchema();
      try {
        const [first, second] = MIGRATIONS;
        await adminQuery(`CREATE SCHEMA "${schema}"; SET search_path TO "${schema}";
          ${first?.sql ?? ''} ${second?.sql ?? ''}
          CREATE TABLE migrations (version integer PRIMARY KEY, name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now());
          INSERT INTO migrations (version, name) VALUES (1, 'one'), (2, 'two');
          UPDATE meta SET value = 41 WHERE key = 'seq_high';
          UPDATE meta SET value = 37 WHERE key = 'webhook_cursor';
          RESET search_path;`);
        const store = new PostgresStore({ url: PG_URL, schema });
        await store.open();
        try {
          const consumers = await store.consumers.list();
          assert.deepEqual(
            consumers.map((c) => [c.name, c.position, c.holder, c.lag]),
            [['webhooks', 37, null, 4]],
          );
          // A node of an earlier version reads after its old cursor: it finds nothing.
          const [old] = await adminQuery<{ value: string }>(
            `SELECT value::text FROM "${schema}".meta WHERE key = 'webhook_cursor'`,
          );
          assert.equal(old?.value, String(Number.MAX_SAFE_INTEGER));
        } finally {
          await store.close();
        }
      } finally {
        await dropSchema(schema);
      }
    });

    it('refuses a schema name it would have to quote', () => {
      assert.throws(() => new PostgresStore({ url: PG_URL, schema: 'Bad-Name' }));
    });

    it('wakes another node with a NOTIFY hint: its lastSeq, and work when work appeared', async () => {
      const { stores, cleanup } = await nodes(2);
      const [a, b] = stores as [PostgresStore, PostgresStore];
      try {
        const hints: StoreHint[] = [];
        b.subscribe((hint) => hints.push(hint));
        await a.create(newOp(), 1_000);
        const seq = await a.lastSeq();
        await until(() => hints.some((h) => h.work && h.lastSeq === seq));
        // The hint carries no events (they are on another node): B reads them by cursor.
        const events = await b.readEvents({ after: 0, limit: 10 });
        assert.equal(events.length, 1);
        hints.length = 0;
        const { claimed } = await a.claim({
          owner: 'a',
          types: null,
          limit: 1,
          leaseMs: 10_000,
          now: 2_000,
        });
        const seq2 = await a.lastSeq();
        await until(() => hints.some((h) => h.lastSeq === seq2));
        assert.ok(
          hints.every((h) => !h.work),
          'a claim makes no work',
        );
        assert.equal(claimed.length, 1);
      } finally {
        await cleanup();
      }
    });

    it('never leases one operation to two nodes claiming at once', async () => {
      const { stores, cleanup } = await nodes(3);
      try {
        const ids = new Set<string>();
        const ops = Array.from({ length: 600 }, () => newOp());
        for (const op of ops) ids.add(op.id);
        await Promise.all(ops.map((op, i) => stores[i % 3]!.create(op, 1_000)));
        const seen: string[] = [];
        const claimer = async (w: number) => {
          for (;;) {
            const { claimed } = await stores[w % 3]!.claim({
              owner: `w${w}`,
              types: null,
              limit: 7,
              leaseMs: 60_000,
              now: 2_000,
            });
            if (claimed.length === 0) return;
            for (const c of claimed) seen.push(c.operation.id);
          }
        };
        await Promise.all(Array.from({ length: 12 }, (_, w) => claimer(w)));
        assert.equal(seen.length, 600);
        assert.equal(new Set(seen).size, 600, 'an operation was claimed twice');
        assert.deepEqual(new Set(seen), ids);
      } finally {
        await cleanup();
      }
    });

    it('never lets a reader skip an event when transactions commit out of seq order', async () => {
      const { stores, schema, cleanup } = await nodes(1);
      const [store] = stores as [PostgresStore];
      // Two raw sessions play two nodes' transactions; a third reads through the store.
      const one = await rawSession();
      const two = await rawSession();
      try {
        const op = newOp();
        await store.create(op, 1_000);
        const start = await store.lastSeq();
        // The append statement, as the store runs it: counter bump + insert, at the end of a
        // transaction. Session one takes seq start+1 and holds its transaction open.
        const append = (sql: typeof one, tag: string) =>
          sql.query(
            `WITH s AS (UPDATE "${schema}".meta SET value = value + 1 WHERE key = 'seq_high'
               RETURNING value)
             INSERT INTO "${schema}".events (seq, operation_id, tenant, operation_type, version,
               type, data, time) SELECT value, '${op.id}', 't1', 'test.op', 9,
               'operation.progress', '{"status":"running","progress":{"message":"${tag}"}}', 0
             FROM s`,
          );
        let releaseOne!: () => void;
        const heldOne = new Promise<void>((resolve) => (releaseOne = resolve));
        let appendedOne!: () => void;
        const oneAppended = new Promise<void>((resolve) => (appendedOne = resolve));
        const txOne = (async () => {
          await one.query('BEGIN');
          await append(one, 'one');
          appendedOne();
          await heldOne;
          await one.query('COMMIT');
        })();
        await oneAppended;
        // Session two appends while one is open: it must wait (seq start+2 cannot commit
        // before start+1), so the reader never sees start+2 alone.
        let twoDone = false;
        const txTwo = (async () => {
          await two.query('BEGIN');
          await append(two, 'two');
          await two.query('COMMIT');
          twoDone = true;
        })();
        await new Promise((resolve) => setTimeout(resolve, 150));
        assert.equal(twoDone, false, 'the second append waits for the first to commit');
        const during = await store.readEvents({ after: start, limit: 10 });
        assert.deepEqual(during, [], 'nothing after the cursor is readable yet');
        releaseOne();
        await txOne;
        await txTwo;
        const afterBoth = await store.readEvents({ after: start, limit: 10 });
        assert.deepEqual(
          afterBoth.map((e) => e.seq),
          [start + 1, start + 2],
        );
      } finally {
        await one.end();
        await two.end();
        await cleanup();
      }
    });

    it('reads every event once, in order, while three nodes write concurrently', async () => {
      const { stores, cleanup } = await nodes(3);
      try {
        const seen: number[] = [];
        let cursor = 0;
        let writing = true;
        const reader = (async () => {
          while (writing || cursor < (await stores[2]!.lastSeq())) {
            const batch = await stores[2]!.readEvents({ after: cursor, limit: 100 });
            for (const event of batch) {
              seen.push(event.seq);
              cursor = event.seq;
            }
            if (batch.length === 0) await new Promise((resolve) => setTimeout(resolve, 1));
          }
        })();
        await Promise.all(
          stores.map(async (store) => {
            for (let i = 0; i < 20; i++) {
              await Promise.all(Array.from({ length: 10 }, () => store.create(newOp(), 1_000)));
            }
          }),
        );
        writing = false;
        await reader;
        assert.equal(seen.length, 600);
        assert.deepEqual(
          seen,
          Array.from({ length: 600 }, (_, i) => i + 1),
        );
      } finally {
        await cleanup();
      }
    });

    it('runs retention on one node at a time', async () => {
      const { stores, schema, cleanup } = await nodes(2);
      const [a, b] = stores as [PostgresStore, PostgresStore];
      const holder = await rawSession();
      try {
        const op = newOp();
        await a.create(op, 1_000);
        await a.cancel(op.id, undefined, { code: 'CANCELED', message: 'x' }, 2_000);
        // Another node is purging: hold its lock in a transaction.
        let release!: () => void;
        const held = new Promise<void>((resolve) => (release = resolve));
        let locked!: () => void;
        const isLocked = new Promise<void>((resolve) => (locked = resolve));
        const tx = (async () => {
          await holder.query('BEGIN');
          await holder.query(`SELECT pg_advisory_xact_lock(1097007106, hashtext('${schema}'))`);
          locked();
          await held;
          await holder.query('COMMIT');
        })();
        await isLocked;
        assert.equal(await b.purge(5_000, 100), 0, 'skipped while another node purges');
        release();
        await tx;
        assert.equal(await b.purge(5_000, 100), 1);
        assert.equal(await a.get(op.id), null);
      } finally {
        await holder.end();
        await cleanup();
      }
    });

    it('leases webhook deliveries so that two nodes never send the same one at once', async () => {
      const { stores, cleanup } = await nodes(2);
      const [one, two] = stores as [PostgresStore, PostgresStore];
      const [a, b] = [one.webhooks, two.webhooks];
      try {
        await a.createEndpoint(
          {
            id: 'ep_1',
            tenant: 't1',
            url: 'https://example.test/hook',
            description: null,
            eventTypes: null,
            labels: null,
            secret: 'whsec_x',
            signingKey: null,
            retrySchedule: null,
            rateLimit: null,
          },
          1_000,
        );
        for (let i = 0; i < 40; i++) await one.create(newOp(), 1_000);
        let next = 0;
        const dispatch = (store: PostgresWebhooks, lease: ConsumerRef) =>
          store.dispatchDeliveries({
            lease,
            limit: 500,
            now: 1_000,
            newId: () => `dlv_${++next}`,
            newSecret: () => 'whsec_cb',
            payload: (event) => JSON.stringify({ seq: event.seq }),
          });
        // Both nodes try to take the dispatcher's lease at once: one gets it.
        const request = { name: 'webhooks', leaseMs: 60_000, now: 1_000 };
        const leases = await Promise.all([
          one.consumers.acquire({ ...request, holder: 'a' }),
          two.consumers.acquire({ ...request, holder: 'b' }),
        ]);
        const [held, ...others] = leases.filter((lease) => lease !== null);
        assert.ok(held);
        assert.equal(others.length, 0, 'one dispatcher at a time');
        // The holder dispatches on both nodes at once (the row lock orders them), and a
        // forged lease writes nothing: each event becomes one delivery.
        const forged = { name: 'webhooks', token: 'cl_forged' };
        const made = await Promise.allSettled([
          dispatch(a, held),
          dispatch(b, held),
          dispatch(b, forged),
        ]);
        const counts = made.map((m) => (m.status === 'fulfilled' ? m.value.deliveries : -1));
        assert.equal((counts[0] ?? 0) + (counts[1] ?? 0), 40);
        assert.equal(counts[2], -1, 'LEASE_LOST');
        const claims = await Promise.all(
          Array.from({ length: 8 }, (_, i) =>
            (i % 2 ? a : b).claimDeliveries({ now: 2_000, limit: 10, leaseMs: 60_000 }),
          ),
        );
        const ids = claims.flat().map((c) => c.delivery.id);
        assert.equal(ids.length, 40);
        assert.equal(new Set(ids).size, 40, 'a delivery was leased twice');
        assert.equal(
          (await a.claimDeliveries({ now: 3_000, limit: 10, leaseMs: 60_000 })).length,
          0,
          'leased deliveries are not claimed again before the lease ends',
        );
        // One line per (target, operation): a second event of an operation waits its turn.
        const [first] = claims.flat();
        assert.ok(first);
        await b.recordAttempt({
          lease: first.leaseToken,
          attempt: {
            deliveryId: first.delivery.id,
            attempt: 1,
            startedAt: 2_000,
            durationMs: 5,
            status: 200,
            error: null,
            responseBody: '',
          },
          result: 'delivered',
        });
        const page = await a.listDeliveries({ tenant: 't1', status: ['delivered'], limit: 10 });
        assert.deepEqual(
          page.items.map((d) => d.id),
          [first.delivery.id],
        );
        const attempts = await b.listAttempts(first.delivery.id, 't1');
        assert.equal(attempts.length, 1);
      } finally {
        await cleanup();
      }
    });

    it('#12 cancels on one node racing attempts that fail and retry on another: no attempt starts after a cancel request', async () => {
      const { stores, cleanup } = await nodes(2);
      const [a, b] = stores as [PostgresStore, PostgresStore];
      try {
        const ops = Array.from({ length: 300 }, () => newOp({ maxAttempts: 5 }));
        for (const op of ops) await a.create(op, 1_000);
        const canceled = { code: 'CANCELED', message: 'Canceled on request.' };
        // Node A's attempts fail on their own (they never hear of the cancels) and ask to run
        // again at once; node B cancels every operation meanwhile.
        const work = (async () => {
          for (;;) {
            const { claimed } = await a.claim({
              owner: 'a',
              types: null,
              limit: 25,
              leaseMs: 10_000,
              now: 1_100,
            });
            if (claimed.length === 0) return;
            await Promise.all(
              claimed.map(({ lease, operation }) =>
                a.fail(
                  lease,
                  { code: 'FLAKY', message: 'try again' },
                  operation.attempts < operation.maxAttempts ? 1_100 : null,
                  1_100,
                ),
              ),
            );
          }
        })();
        const cancels = ops.map((op) =>
          b.cancel(op.id, 't1', canceled, 1_100).then(
            () => 'ok',
            (error: unknown) => (error as { code?: string }).code ?? String(error),
          ),
        );
        const outcomes = await Promise.all(cancels);
        await work;
        assert.ok(
          outcomes.every((o) => o === 'ok' || o === 'ALREADY_TERMINAL'),
          outcomes.join(),
        );
        for (const op of ops) {
          const events = await b.readEvents({ after: 0, limit: 100, operationId: op.id });
          const types = events.map((e) => e.type);
          const asked = types.indexOf('operation.cancel_requested');
          if (asked !== -1) {
            assert.ok(
              !types.slice(asked).includes('operation.started'),
              `${op.id} started again after its cancel request: ${types.join()}`,
            );
            assert.equal(types.at(-1), 'operation.canceled', types.join());
          }
          const endings = types.filter((t) =>
            ['operation.succeeded', 'operation.failed', 'operation.canceled'].includes(t),
          );
          assert.equal(endings.length, 1, `${op.id}: ${types.join()}`);
          assert.deepEqual(
            events.map((e) => e.version),
            events.map((_, i) => i + 1),
          );
        }
      } finally {
        await cleanup();
      }
    });

    it('cancels on one node racing claims and completions on another: one ending each, versions whole', async () => {
      const { stores, cleanup } = await nodes(2);
      const [a, b] = stores as [PostgresStore, PostgresStore];
      try {
        const ops = Array.from({ length: 80 }, () => newOp());
        for (const op of ops) await a.create(op, 1_000);
        const canceled = { code: 'CANCELED', message: 'Canceled on request.' };
        // Node B cancels every operation while node A claims and completes what it gets.
        const cancels = ops.map((op) =>
          b.cancel(op.id, 't1', canceled, 1_100).then(
            () => 'ok',
            (error: unknown) => (error as { code?: string }).code ?? String(error),
          ),
        );
        const work = (async () => {
          for (;;) {
            const { claimed } = await a.claim({
              owner: 'a',
              types: null,
              limit: 10,
              leaseMs: 10_000,
              now: 1_100,
            });
            if (claimed.length === 0) return;
            await Promise.all(claimed.map(({ lease }) => a.complete(lease, 'done', 1_200)));
          }
        })();
        const outcomes = await Promise.all(cancels);
        await work;
        // A cancel either took effect or found the operation already finished.
        assert.ok(
          outcomes.every((o) => o === 'ok' || o === 'ALREADY_TERMINAL'),
          outcomes.join(),
        );
        for (const op of ops) {
          const final = await b.get(op.id);
          assert.ok(final);
          assert.ok(['succeeded', 'canceled'].includes(final.status), final.status);
          const events = await b.readEvents({ after: 0, limit: 100, operationId: op.id });
          const endings = events.filter((e) =>
            ['operation.succeeded', 'operation.failed', 'operation.canceled'].includes(e.type),
          );
          assert.equal(endings.length, 1, `${op.id}: ${events.map((e) => e.type).join()}`);
          assert.equal(endings[0]?.data.status, final.status);
          assert.deepEqual(
            events.map((e) => e.version),
            events.map((_, i) => i + 1),
            'one event per version, none missing',
          );
          assert.equal(events.at(-1)?.version, final.version);
        }
      } finally {
        await cleanup();
      }
    });
  });
}
