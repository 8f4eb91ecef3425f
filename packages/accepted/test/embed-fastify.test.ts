// The API registered as a plugin in a real Fastify 5 app, under a prefix, on a real socket,
// with the host's own auth (an onRequest hook of the host's that decorates the request).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Accepted } from '../src/engine/accepted.ts';
import { acceptedPlugin } from '../src/server/embed.ts';
import type { Webhooks } from '../src/webhooks/service.ts';
import {
  authenticate,
  embeddingCases,
  hostUser,
  startEmbeddedEngine,
  type Mounted,
} from './embed-cases.ts';
import { WsClient } from './stream-clients.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** What the host's auth hook found (the tests' stand-in for a session). */
    user: string | null;
  }
}

let engine: { accepted: Accepted; webhooks: Webhooks };
before(async () => {
  engine = await startEmbeddedEngine();
});
after(() => engine.webhooks.stop(100));

async function fastifyHost(prefix: string): Promise<{ app: FastifyInstance; mounted: Mounted }> {
  const app = Fastify({ logger: false });
  app.decorateRequest('user', null);
  app.addHook('onRequest', (request, _reply, done) => {
    request.user = hostUser(request.raw);
    done();
  });
  app.get('/hello', () => ({ hello: 'world' }));
  // The host's own JSON parser stays the host's: the plugin's strict one is encapsulated.
  app.post('/echo', (request) => ({ got: request.body }));
  await app.register(acceptedPlugin, {
    prefix,
    accepted: engine.accepted,
    webhooks: engine.webhooks,
    authenticate,
    bodyLimit: 64 * 1024,
  });
  const origin = await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, mounted: { origin, prefix, accepted: engine.accepted } };
}

describe(
  'Fastify 5: app.register(acceptedPlugin, { prefix: "/async" })',
  { timeout: 60_000 },
  () => {
    let host: { app: FastifyInstance; mounted: Mounted };
    before(async () => {
      host = await fastifyHost('/async');
    });
    after(() => host.app.close());
    const origin = () => host.mounted.origin;

    embeddingCases(() => host.mounted);

    it('leaves the host its routes, its body parser and its 404s', async () => {
      const hello = await fetch(`${origin()}/hello`);
      assert.deepEqual(await hello.json(), { hello: 'world' });
      const echoed = await fetch(`${origin()}/echo`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"a":1}',
      });
      assert.deepEqual(await echoed.json(), { got: { a: 1 } });
      const missing = await fetch(`${origin()}/nope`);
      assert.equal(missing.status, 404);
      assert.equal(missing.headers.get('content-type'), 'application/json; charset=utf-8');
      assert.equal(
        ((await missing.json()) as { message: string }).message,
        'Route GET:/nope not found',
      );
      // Under the prefix, the API's own problem+json 404 (after authentication).
      const inside = await fetch(`${origin()}/async/v1/nope`, { headers: { 'x-user': 'alice' } });
      assert.equal(inside.status, 404);
      assert.equal(inside.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    });

    it('applies its bodyLimit to its routes only (413 problem+json)', async () => {
      const big = JSON.stringify({ type: 'demo.echo', input: 'x'.repeat(80 * 1024) });
      const refused = await fetch(`${origin()}/async/v1/operations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-user': 'alice' },
        body: big,
      });
      assert.equal(refused.status, 413);
      assert.equal(((await refused.json()) as { code: string }).code, 'PAYLOAD_TOO_LARGE');
      const hostRoute = await fetch(`${origin()}/echo`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: big,
      });
      assert.equal(hostRoute.status, 200);
    });

    it('refuses upgrades outside its path when nobody else takes them', async () => {
      const ws = new WsClient(`${origin().replace(/^http/, 'ws')}/elsewhere`);
      await assert.rejects(ws.opened(), /upgrade refused: 404/);
      ws.close();
    });
  },
);

describe('Fastify 5: acceptedPlugin without a prefix', { timeout: 60_000 }, () => {
  let host: { app: FastifyInstance; mounted: Mounted };
  before(async () => {
    host = await fastifyHost('');
  });
  after(() => host.app.close());

  it('serves the API at the root and leaves the 404s to the host', async () => {
    const { origin } = host.mounted;
    const submitted = await fetch(`${origin}/v1/operations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-user': 'bob' },
      body: JSON.stringify({ type: 'demo.echo', input: 1 }),
    });
    assert.equal(submitted.status, 202);
    const { id, links } = (await submitted.json()) as { id: string; links: { self: string } };
    assert.equal(links.self, `/v1/operations/${id}`);
    assert.equal(submitted.headers.get('location'), `${origin}/v1/operations/${id}`);
    const missing = await fetch(`${origin}/nope`);
    assert.equal(missing.status, 404);
    assert.equal(
      ((await missing.json()) as { message: string }).message,
      'Route GET:/nope not found',
    );
    const ws = new WsClient(`${origin.replace(/^http/, 'ws')}/v1/ws`, { 'x-user': 'bob' });
    await ws.opened();
    assert.equal((await ws.next((m) => m.type === 'welcome')).tenant, 'beta');
    ws.close();
  });
});
