// The API mounted in real Express 5 apps (with and without a body parser before it, under a
// mount path) and in a plain node:http server, on real sockets, with the host's own auth.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import { AcceptedError } from '../src/domain/errors.ts';
import type { Accepted } from '../src/engine/accepted.ts';
import { ApiKeys } from '../src/http/auth.ts';
import { createAcceptedHandler, type AcceptedHandler } from '../src/server/embed.ts';
import type { Webhooks } from '../src/webhooks/service.ts';
import {
  authenticate,
  embeddingCases,
  hostUser,
  startEmbeddedEngine,
  type Mounted,
} from './embed-cases.ts';
import { WsClient } from './stream-clients.ts';

declare module 'node:http' {
  interface IncomingMessage {
    /** What the host's auth middleware found (the tests' stand-in for a session). */
    user?: string | null;
  }
}

const API_KEY = 'gamma-key-0123456789abcdef';

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Closes the host: the API first (its streams end), then the server. */
async function shut(server: http.Server, handler: AcceptedHandler): Promise<void> {
  await handler.close();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

let engine: { accepted: Accepted; webhooks: Webhooks };
before(async () => {
  engine = await startEmbeddedEngine();
});
after(() => engine.webhooks.stop(100));

/**
 * An Express app with routes of its own, its auth middleware (`req.user`), and the API at
 * `/async`: `parser` puts a body parser before it, `mountAt` says how it is mounted.
 */
async function expressHost(setup: {
  parser: express.RequestHandler | null;
  mountAt: 'router' | 'root';
  exact: boolean;
}): Promise<{ mounted: Mounted; close: () => Promise<void> }> {
  const apiKeys = new ApiKeys();
  apiKeys.add({ tenant: 'gamma', key: API_KEY });
  const handler = createAcceptedHandler({
    accepted: engine.accepted,
    webhooks: engine.webhooks,
    apiKeys,
    authenticate,
    prefix: '/async',
    logger: false,
    bodyLimit: 64 * 1024,
  });
  const app = express();
  app.use((req, _res, next) => {
    req.user = hostUser(req);
    next();
  });
  if (setup.parser) app.use(setup.parser);
  app.get('/hello', (_req, res) => {
    res.json({ hello: 'world' });
  });
  app.post('/echo', (req, res) => {
    res.json({ got: req.body as unknown });
  });
  if (setup.mountAt === 'router') app.use('/async', handler.handle);
  else app.use(handler.handle);
  const server = http.createServer(app);
  server.on('upgrade', handler.upgrade);
  const origin = await listen(server);
  return {
    mounted: { origin, prefix: '/async', accepted: engine.accepted },
    close: () => shut(server, handler),
  };
}

/** Keeps the bytes a parser read, as `express.json({ verify })` lets a host do. */
const keepRawBody = (req: http.IncomingMessage, _res: http.ServerResponse, buffer: Buffer) => {
  Object.assign(req, { rawBody: buffer });
};

// `exact`: whether the API sees the bytes as sent (else the value express.json() parsed).
for (const [title, setup] of [
  [
    'express.json() before it, app.use("/async", handle)',
    { parser: express.json({ limit: '1mb' }), mountAt: 'router', exact: false },
  ],
  ['no body parser, app.use(handle) with prefix', { parser: null, mountAt: 'root', exact: true }],
  [
    'express.text({ type: "*/*" }) before it',
    { parser: express.text({ type: '*/*' }), mountAt: 'router', exact: true },
  ],
  [
    'express.raw({ type: "*/*" }) before it',
    { parser: express.raw({ type: '*/*' }), mountAt: 'router', exact: true },
  ],
  [
    'express.json({ verify }) keeping req.rawBody before it',
    { parser: express.json({ verify: keepRawBody }), mountAt: 'router', exact: true },
  ],
] as const) {
  describe(`Express 5: ${title}`, { timeout: 60_000 }, () => {
    let host: { mounted: Mounted; close: () => Promise<void> };
    before(async () => {
      host = await expressHost(setup);
    });
    after(() => host.close());
    const origin = () => host.mounted.origin;

    embeddingCases(() => host.mounted);

    it(`checks numbers on ${setup.exact ? 'the bytes as sent' : 'the value express.json() parsed'}`, async () => {
      const response = await fetch(`${origin()}/async/v1/operations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-user': 'alice' },
        body: '{"type":"demo.echo","input":1e400}',
      });
      // JSON.parse made 1e400 Infinity (written again as null): only the bytes can refuse it.
      assert.equal(response.status, setup.exact ? 422 : 202);
      if (setup.exact) {
        assert.equal(((await response.json()) as { code: string }).code, 'NUMBER_OUT_OF_RANGE');
      }
    });

    it('leaves the host its own routes and its own 404s', async () => {
      const hello = await fetch(`${origin()}/hello`);
      assert.equal(hello.status, 200);
      assert.deepEqual(await hello.json(), { hello: 'world' });
      for (const path of ['/nope', '/async', '/async/nope', '/async/v1/nope']) {
        const missing = await fetch(`${origin()}${path}`);
        assert.equal(missing.status, 404, path);
        // Express's own 404 page, not a problem+json answer.
        assert.match(String(missing.headers.get('content-type')), /^text\/html/, path);
      }
      if (setup.parser) {
        const echoed = await fetch(`${origin()}/echo`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{"a":1}',
        });
        assert.equal(echoed.status, 200);
      }
    });

    it('lets an API key win over the hook, and sends unknown Bearer tokens to the hook', async () => {
      const submitted = await fetch(`${origin()}/async/v1/operations`, {
        method: 'POST',
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'demo.echo', input: 1 }),
      });
      assert.equal(submitted.status, 202);
      const { id } = (await submitted.json()) as { id: string };
      const asKey = await fetch(`${origin()}/async/v1/operations/${id}`, {
        headers: { authorization: `Bearer ${API_KEY}` },
      });
      assert.equal(asKey.status, 200);
      // The host's user with a token the keys do not know: the hook decides (acme).
      const asAlice = await fetch(`${origin()}/async/v1/operations/${id}`, {
        headers: { authorization: 'Bearer host-session-token', 'x-user': 'alice' },
      });
      assert.equal(asAlice.status, 404);
    });

    it('keeps the body limit (413 problem+json) and answers 405 on its own paths', async () => {
      const big = JSON.stringify({ type: 'demo.echo', input: 'x'.repeat(80 * 1024) });
      const tooLarge = await fetch(`${origin()}/async/v1/operations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-user': 'alice' },
        body: big,
      });
      assert.equal(tooLarge.status, 413);
      assert.equal(tooLarge.headers.get('content-type'), 'application/problem+json; charset=utf-8');
      const wrongMethod = await fetch(`${origin()}/async/v1/operations`, {
        method: 'PUT',
        headers: { 'x-user': 'alice' },
      });
      assert.equal(wrongMethod.status, 405);
      assert.equal(wrongMethod.headers.get('allow'), 'GET, HEAD, POST');
    });
  });
}

describe('Express 5: mounted without a prefix option', { timeout: 60_000 }, () => {
  let server: http.Server;
  let handler: AcceptedHandler;
  let origin: string;
  before(async () => {
    handler = createAcceptedHandler({
      accepted: engine.accepted,
      logger: false,
      authenticate: (req) => {
        const user = req.headers['x-user'];
        if (user === 'mallory') throw new AcceptedError('FORBIDDEN', 'Mallory may not.');
        if (user === 'broken') return { tenant: 'not a tenant!' };
        return user === 'alice' ? { tenant: 'acme' } : null;
      },
    });
    const app = express();
    app.use('/api/jobs', handler.handle);
    server = http.createServer(app);
    origin = await listen(server);
  });
  after(() => shut(server, handler));

  it('takes the mount path from Express (req.baseUrl) for Location and links', async () => {
    const response = await fetch(`${origin}/api/jobs/v1/operations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-user': 'alice' },
      body: JSON.stringify({ type: 'demo.echo', input: 1 }),
    });
    assert.equal(response.status, 202);
    const monitor = (await response.json()) as { id: string; links: { self: string } };
    assert.equal(monitor.links.self, `/api/jobs/v1/operations/${monitor.id}`);
    assert.equal(
      response.headers.get('location'),
      `${origin}/api/jobs/v1/operations/${monitor.id}`,
    );
  });

  it('answers what the hook throws, and 500 for a tenant that is not a tenant name', async () => {
    const forbidden = await fetch(`${origin}/api/jobs/v1/operations`, {
      headers: { 'x-user': 'mallory' },
    });
    assert.equal(forbidden.status, 403);
    assert.equal(((await forbidden.json()) as { code: string }).code, 'FORBIDDEN');
    const broken = await fetch(`${origin}/api/jobs/v1/operations`, {
      headers: { 'x-user': 'broken' },
    });
    assert.equal(broken.status, 500);
    assert.equal(((await broken.json()) as { code: string }).code, 'INTERNAL');
  });
});

describe('node:http: handle(req, res) and upgrade(req, socket, head)', { timeout: 60_000 }, () => {
  let server: http.Server;
  let handler: AcceptedHandler;
  let origin: string;
  before(async () => {
    handler = createAcceptedHandler({
      accepted: engine.accepted,
      authenticate: (req) => {
        const user = hostUser(req);
        return user === null ? null : { tenant: user === 'alice' ? 'acme' : 'beta' };
      },
      prefix: '/async/',
      logger: false,
    });
    server = http.createServer((req, res) => {
      if (req.url === '/hello') {
        res.end('hello');
        return;
      }
      handler.handle(req, res);
    });
    server.on('upgrade', handler.upgrade);
    origin = await listen(server);
  });
  after(() => shut(server, handler));

  embeddingCases(() => ({ origin, prefix: '/async', accepted: engine.accepted }), {
    webhooks: false,
  });

  it('answers 404 problem+json outside the API, and serves the host’s own routes', async () => {
    assert.equal(await (await fetch(`${origin}/hello`)).text(), 'hello');
    for (const path of ['/nope', '/async/nope']) {
      const missing = await fetch(`${origin}${path}`);
      assert.equal(missing.status, 404);
      assert.equal(missing.headers.get('content-type'), 'application/problem+json; charset=utf-8');
      assert.equal(((await missing.json()) as { code: string }).code, 'ROUTE_NOT_FOUND');
    }
    const ws = new WsClient(`${origin.replace(/^http/, 'ws')}/elsewhere`);
    await assert.rejects(ws.opened(), /upgrade refused: 404/);
    ws.close();
  });

  it('refuses new requests and upgrades with 503 once closed', async () => {
    const closing = createAcceptedHandler({ accepted: engine.accepted, logger: false });
    const local = http.createServer((req, res) => closing.handle(req, res));
    local.on('upgrade', closing.upgrade);
    const url = await listen(local);
    assert.equal((await fetch(`${url}/v1/operations`)).status, 200);
    await closing.close();
    const refused = await fetch(`${url}/v1/operations`);
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get('retry-after'), '1');
    const ws = new WsClient(`${url.replace(/^http/, 'ws')}/v1/ws`);
    await assert.rejects(ws.opened(), /upgrade refused: 503/);
    ws.close();
    local.closeAllConnections();
    await new Promise<void>((resolve) => local.close(() => resolve()));
  });
});
