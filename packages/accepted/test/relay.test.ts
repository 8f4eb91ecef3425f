/**
 * The relay cursor as the webhook dispatcher uses it: the store's capabilities, the
 * `webhooks` consumer's lease and position, its lag, and (on PostgreSQL) one dispatcher across
 * nodes with a take-over when the holder dies. The store-level rules are the conformance
 * suite's (`consumersConformance`); this is the service on real stores.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError } from '../src/domain/options.ts';
import { createAccepted, type Accepted } from '../src/engine/accepted.ts';
import { demoOperations } from '../src/engine/demo.ts';
import { PostgresStore } from '../src/store/postgres/postgres-store.ts';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts';
import type { Store } from '../src/store/store.ts';
import { createWebhooks, type Webhooks } from '../src/webhooks/service.ts';
import { eventually, memoryLogger, tempDir } from './helpers.ts';
import { PG_URL, dropSchema, newSchema, pgUnavailable } from './pg-helpers.ts';

/** A receiver that answers 204 to everything. */
const receiver = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => res.writeHead(204).end());
});
await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
after(() => new Promise<void>((resolve) => receiver.close(() => resolve())));

interface Node {
  accepted: Accepted;
  webhooks: Webhooks;
  store: SqliteStore | PostgresStore;
}

async function startNode(store: SqliteStore | PostgresStore, dispatchLeaseMs = 10_000) {
  const accepted = createAccepted({
    store,
    operations: demoOperations,
    logger: memoryLogger(),
    pollIntervalMs: 50,
  });
  await accepted.start();
  const webhooks = createWebhooks({
    accepted,
    allow: ['127.0.0.0/8'],
    pollIntervalMs: 20,
    dispatchLeaseMs,
    logger: memoryLogger(),
  });
  webhooks.start();
  return { accepted, webhooks, store };
}

async function stopNode(node: Node): Promise<void> {
  await node.webhooks.stop(100);
  await node.accepted.stop({ graceful: false }).catch(() => undefined);
}

/** The endpoint's deliveries: how many, and how many distinct events they carry. */
async function deliveries(node: Node, endpointId: string) {
  const page = await node.webhooks.store.listDeliveries({
    tenant: 'acme',
    endpointId,
    limit: 1000,
  });
  return { count: page.items.length, events: new Set(page.items.map((d) => d.eventSeq)).size };
}

describe('the relay cursor under the webhook dispatcher', () => {
  it('createWebhooks refuses a store without the webhooks and consumers capabilities; the engine runs on it', async () => {
    const real = new SqliteStore({ filename: path.join(tempDir(), 'accepted.db') });
    // The operations store alone: what an adapter without the capabilities offers.
    const bare = new Proxy(real, {
      get: (target, prop) =>
        prop === 'webhooks' || prop === 'consumers'
          ? undefined
          : (Reflect.get(target, prop) as unknown),
    }) as Store;
    const accepted = createAccepted({
      store: bare,
      operations: demoOperations,
      logger: memoryLogger(),
    });
    await accepted.start();
    try {
      assert.throws(
        () => createWebhooks({ accepted }),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError);
          assert.equal(error.option, 'store');
          assert.match(error.message, /webhooks and consumers capabilities/);
          assert.match(error.message, /store\.webhooks, store\.consumers/);
          return true;
        },
      );
      const op = await accepted.submit('demo.echo', { n: 1 }, { tenant: 'acme' });
      assert.equal(op.status, 'queued');
    } finally {
      await accepted.stop({ graceful: false });
    }
  });

  it('dispatches under the webhooks consumer: its position follows the log, its lag shows, stop releases it', async () => {
    const node = await startNode(new SqliteStore({ filename: path.join(tempDir(), 'a.db') }));
    try {
      const { endpoint } = await node.webhooks.createEndpoint('acme', {
        url: hookUrl,
        eventTypes: ['operation.queued'],
      });
      for (let i = 0; i < 5; i++) await node.accepted.submit('demo.echo', i, { tenant: 'acme' });
      await eventually(async () => (await deliveries(node, endpoint.id)).count === 5);
      await eventually(async () => {
        const relay = await node.webhooks.relay();
        return relay?.lag === 0 && relay.position === (await node.accepted.lastSeq());
      });
      const relay = await node.webhooks.relay();
      assert.equal(relay?.holder, node.webhooks.holder);
      assert.equal(node.webhooks.stats.dispatching, true);
      assert.deepEqual(await deliveries(node, endpoint.id), { count: 5, events: 5 });
      await node.webhooks.stop(100);
      const released = await node.store.consumers.get('webhooks');
      assert.equal(released?.holder, null, 'stop gives the lease back');
      assert.ok(released.position >= (relay?.position ?? 0), 'and keeps its position');
    } finally {
      await stopNode(node);
    }
  });
});

const unavailable = await pgUnavailable();

describe(
  'the relay cursor under the webhook dispatcher (PostgreSQL, two nodes)',
  { skip: unavailable ?? false, timeout: 120_000 },
  () => {
    it('one node dispatches at a time; when it dies another takes over after its lease, every event once', async () => {
      const schema = newSchema();
      const nodes = [
        await startNode(new PostgresStore({ url: PG_URL, schema }), 500),
        await startNode(new PostgresStore({ url: PG_URL, schema }), 500),
      ];
      const [one, two] = nodes as [Node, Node];
      const stopped = new Set<Node>();
      try {
        const { endpoint } = await one.webhooks.createEndpoint('acme', {
          url: hookUrl,
          eventTypes: ['operation.queued'],
        });
        for (let i = 0; i < 10; i++) {
          await (i % 2 ? one : two).accepted.submit('demo.echo', i, { tenant: 'acme' });
        }
        await eventually(async () => (await deliveries(one, endpoint.id)).count === 10);
        const relay = await one.webhooks.relay();
        const holders = nodes.filter((node) => node.webhooks.holder === relay?.holder);
        assert.equal(holders.length, 1, 'one node holds the dispatcher');
        const [holder] = holders as [Node];
        const other = holder === one ? two : one;
        assert.equal(other.webhooks.stats.dispatching, false, 'the other does not dispatch');
        // The holder dies: its store goes away with its lease unreleased.
        await holder.accepted.stop({ graceful: false });
        stopped.add(holder);
        for (let i = 0; i < 5; i++) await other.accepted.submit('demo.echo', i, { tenant: 'acme' });
        await eventually(async () => (await deliveries(other, endpoint.id)).count === 15, 30_000);
        assert.deepEqual(await deliveries(other, endpoint.id), { count: 15, events: 15 });
        const after = await other.webhooks.relay();
        assert.equal(after?.holder, other.webhooks.holder, 'taken over');
        assert.equal(other.webhooks.stats.dispatching, true);
        await eventually(async () => (await other.webhooks.relay())?.lag === 0);
      } finally {
        for (const node of nodes) {
          if (stopped.has(node)) await node.webhooks.stop(100);
          else await stopNode(node);
        }
        await dropSchema(schema);
      }
    });
  },
);
