// The cases every embedding must pass (Express, Fastify, node:http): the API mounted under a
// prefix in a real host application on a real socket, with the host's own authentication.
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { it } from 'node:test';
import type { Accepted } from '../src/engine/accepted.ts';
import { defineOperation } from '../src/engine/definition.ts';
import { demoOperations } from '../src/engine/demo.ts';
import type { AuthenticateHook } from '../src/http/auth.ts';
import { createWebhooks, type Webhooks } from '../src/webhooks/service.ts';
import { eventually, startEngine } from './helpers.ts';
import { SseClient, WsClient } from './stream-clients.ts';

/** The host's users and the tenant each belongs to (the host's own auth, by header). */
export const USERS: Record<string, string> = { alice: 'acme', bob: 'beta' };

/** Who the host says the caller is: its `x-user` header (a stand-in for a session). */
export function hostUser(req: IncomingMessage): string | null {
  const user = req.headers['x-user'];
  return typeof user === 'string' && user in USERS ? user : null;
}

/**
 * The hook of the tests: the tenant of the user the host authenticated, read from where the
 * host put it (`req.user` for Express, the Fastify request's `user`), or from the header on a
 * WebSocket upgrade, which no host middleware sees.
 */
export const authenticate: AuthenticateHook = (req, context) => {
  const fromHost =
    context.kind === 'websocket'
      ? hostUser(req)
      : ((context.request as { user?: string | null } | null)?.user ??
        (req as { user?: string | null }).user ??
        null);
  const tenant = fromHost === null ? undefined : USERS[fromHost];
  return tenant === undefined ? null : { tenant };
};

/** Operations held until the test lets them go. */
const gates = new Map<string, () => void>();
export function release(name: string): boolean {
  const open = gates.get(name);
  if (open) open();
  return open !== undefined;
}
const gateOperation = defineOperation<{ name: string }, { released: string }>({
  type: 'test.gate',
  handler: async ({ name }, ctx) => {
    await new Promise<void>((resolve, reject) => {
      gates.set(name, () => {
        gates.delete(name);
        resolve();
      });
      ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error));
    });
    return { released: name };
  },
});

export async function startEmbeddedEngine(): Promise<{ accepted: Accepted; webhooks: Webhooks }> {
  const accepted = await startEngine({ operations: [...demoOperations, gateOperation] });
  const webhooks = createWebhooks({ accepted, allow: ['127.0.0.0/8'], pollIntervalMs: 50 });
  webhooks.start();
  return { accepted, webhooks };
}

export interface Mounted {
  /** `http://127.0.0.1:port` of the host. */
  origin: string;
  /** Where the API is mounted (`/async`). */
  prefix: string;
  accepted: Accepted;
}

const as = (user: string, headers: Record<string, string> = {}) => ({ 'x-user': user, ...headers });
const json = { 'content-type': 'application/json' };

interface Monitor {
  id: string;
  status: string;
  version: number;
  result: unknown;
  links: { self: string; events: string; cancel: string };
}

async function problem(response: Response, status: number): Promise<Record<string, unknown>> {
  assert.equal(response.status, status);
  assert.equal(response.headers.get('content-type'), 'application/problem+json; charset=utf-8');
  const body = (await response.json()) as Record<string, unknown>;
  assert.equal(body.status, status);
  return body;
}

/** Registers the shared cases; `mounted()` gives the running host (after `before`). */
export function embeddingCases(mounted: () => Mounted, { webhooks = true } = {}): void {
  const api = (path: string) => `${mounted().origin}${mounted().prefix}${path}`;
  const submit = (user: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(api('/v1/operations'), {
      method: 'POST',
      headers: as(user, { ...json, ...headers }),
      body: JSON.stringify(body),
    });

  it('submits (202) with Location, Operation-Location and links under the prefix', async () => {
    const { origin, prefix, accepted } = mounted();
    const response = await submit('alice', { type: 'demo.echo', input: { a: 1 } });
    assert.equal(response.status, 202);
    const monitor = (await response.json()) as Monitor;
    const url = `${origin}${prefix}/v1/operations/${monitor.id}`;
    assert.equal(response.headers.get('location'), url);
    assert.equal(response.headers.get('operation-location'), url);
    assert.deepEqual(monitor.links, {
      self: `${prefix}/v1/operations/${monitor.id}`,
      events: `${prefix}/v1/operations/${monitor.id}/events`,
      cancel: `${prefix}/v1/operations/${monitor.id}:cancel`,
    });
    await accepted.wait(monitor.id, { tenant: 'acme' });
    const polled = await fetch(url, { headers: as('alice') });
    assert.equal(polled.status, 200);
    const final = (await polled.json()) as Monitor;
    assert.equal(final.status, 'succeeded');
    assert.deepEqual(final.result, { a: 1 });
    assert.equal(polled.headers.get('etag'), `"${final.version}"`);
    // The tenant is the one the host's auth gave: another user's tenant does not see it.
    await problem(await fetch(url, { headers: as('bob') }), 404);
    const list = (await (
      await fetch(api('/v1/operations?limit=1'), { headers: as('alice') })
    ).json()) as {
      items: Monitor[];
    };
    assert.equal(list.items[0]?.links.self.startsWith(`${prefix}/v1/operations/`), true);
  });

  it('answers Prefer: wait on submit (200, Content-Location under the prefix)', async () => {
    const { prefix } = mounted();
    const response = await submit('alice', { type: 'demo.echo', input: 7 }, { prefer: 'wait=30' });
    assert.equal(response.status, 200);
    const monitor = (await response.json()) as Monitor;
    assert.equal(monitor.status, 'succeeded');
    assert.equal(response.headers.get('content-location'), `${prefix}/v1/operations/${monitor.id}`);
  });

  it('holds a long poll (Prefer: wait) until the operation changes', async () => {
    const { accepted } = mounted();
    const name = `poll-${Math.random()}`;
    const created = (await (
      await submit('alice', { type: 'test.gate', input: { name } })
    ).json()) as Monitor;
    await eventually(() => gates.has(name));
    const running = await accepted.get(created.id, { tenant: 'acme' });
    assert.equal(running?.status, 'running');
    const poll = fetch(api(`/v1/operations/${created.id}`), {
      headers: as('alice', { prefer: 'wait=30', 'if-none-match': `"${running.version}"` }),
    });
    // Parked or not yet, the poll answers the version after the one it has.
    assert.equal(release(name), true);
    const response = await poll;
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('preference-applied'), 'wait=30');
    const monitor = (await response.json()) as Monitor;
    assert.notEqual(monitor.version, running.version);
  });

  it('streams an operation over SSE (snapshot links under the prefix) to its end', async () => {
    const { prefix } = mounted();
    const name = `sse-${Math.random()}`;
    const created = (await (
      await submit('alice', { type: 'test.gate', input: { name } })
    ).json()) as Monitor;
    const sse = new SseClient(api(`/v1/operations/${created.id}/events`), as('alice'));
    await sse.opened();
    assert.equal(sse.status, 200);
    assert.match(String(sse.headers['content-type']), /^text\/event-stream/);
    // In a host's server the stream stays that server's chunked response (its listeners see
    // it end); only Accepted's own server takes the socket after the head.
    assert.equal(sse.headers['transfer-encoding'], 'chunked');
    await sse.until(() => sse.messages.some((m) => m.event === 'operation.snapshot'), 'snapshot');
    const snapshot = JSON.parse(
      sse.messages.find((m) => m.event === 'operation.snapshot')?.data ?? '{}',
    ) as { operation: Monitor };
    assert.equal(snapshot.operation.links.self, `${prefix}/v1/operations/${created.id}`);
    await eventually(() => gates.has(name));
    release(name);
    await sse.ended;
    assert.equal(sse.events.at(-1)?.type, 'operation.succeeded');
  });

  it('mints a stream token for the host-authenticated caller, and streams with it alone', async () => {
    const minted = await fetch(api('/v1/stream-tokens'), {
      method: 'POST',
      headers: as('alice', json),
      body: '{}',
    });
    assert.equal(minted.status, 201);
    const { token } = (await minted.json()) as { token: string };
    const sse = new SseClient(api(`/v1/events?access_token=${encodeURIComponent(token)}`));
    await sse.opened();
    assert.equal(sse.status, 200);
    sse.close();
  });

  it('subscribes over a WebSocket forwarded from the host (and submits on it)', async () => {
    const { origin, prefix } = mounted();
    const ws = new WsClient(`${origin.replace(/^http/, 'ws')}${prefix}/v1/ws`, as('alice'));
    try {
      await ws.opened();
      const welcome = await ws.next((m) => m.type === 'welcome');
      assert.equal(welcome.tenant, 'acme');
      const name = `ws-${Math.random()}`;
      const submitted = await ws.request({
        type: 'submit',
        id: 1,
        operation: { type: 'test.gate', input: { name } },
      });
      assert.equal(submitted.type, 'ack');
      const operation = submitted.operation as Monitor;
      assert.equal(operation.links.self, `${prefix}/v1/operations/${operation.id}`);
      const subscribed = await ws.request({ type: 'subscribe', id: 2, operation: operation.id });
      assert.equal(subscribed.type, 'ack');
      await eventually(() => gates.has(name));
      release(name);
      await ws.next((m) => m.type === 'complete' && m.subscription === subscribed.subscription);
      assert.equal(ws.events(subscribed.subscription).at(-1)?.type, 'operation.succeeded');
    } finally {
      ws.close();
    }
  });

  it('refuses a caller the host does not know: 401 with WWW-Authenticate, on every channel', async () => {
    const { origin, prefix } = mounted();
    const refused = await fetch(api('/v1/operations'), {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ type: 'demo.echo' }),
    });
    const body = await problem(refused, 401);
    assert.equal(body.code, 'UNAUTHENTICATED');
    assert.equal(refused.headers.get('www-authenticate'), 'Bearer realm="accepted"');
    const wrong = await fetch(api('/v1/operations'), { headers: { authorization: 'Bearer nope' } });
    await problem(wrong, 401);
    assert.equal(
      wrong.headers.get('www-authenticate'),
      'Bearer realm="accepted", error="invalid_token"',
    );
    const sse = new SseClient(api('/v1/events'));
    await sse.ended;
    assert.equal(sse.status, 401);
    const ws = new WsClient(`${origin.replace(/^http/, 'ws')}${prefix}/v1/ws`);
    await assert.rejects(ws.opened(), /upgrade refused: 401/);
    ws.close();
    // The probes and the API descriptions stay public.
    assert.equal((await fetch(api('/healthz'))).status, 200);
  });

  it('describes itself under the prefix (OpenAPI servers, AsyncAPI pathname)', async () => {
    const { prefix } = mounted();
    const openapi = (await (await fetch(api('/v1/openapi.json'))).json()) as {
      servers: { url: string }[];
    };
    assert.equal(openapi.servers[0]?.url, prefix);
    const asyncapi = (await (await fetch(api('/v1/asyncapi.json'))).json()) as {
      servers: Record<string, { pathname?: string }>;
    };
    assert.equal(asyncapi.servers.ws?.pathname, prefix);
  });

  it('keeps the strict JSON checks: depth, prototype poisoning, problem+json', async () => {
    const deep = `{"type":"demo.echo","input":${'['.repeat(80)}${']'.repeat(80)}}`;
    const tooDeep = await fetch(api('/v1/operations'), {
      method: 'POST',
      headers: as('alice', json),
      body: deep,
    });
    assert.equal((await problem(tooDeep, 422)).code, 'JSON_TOO_DEEP');
    const poisoned = await fetch(api('/v1/operations'), {
      method: 'POST',
      headers: as('alice', json),
      body: '{"type":"demo.echo","input":{"__proto__":{"x":1}}}',
    });
    await problem(poisoned, 400);
    const unknown = await submit('alice', { type: 'demo.nope' });
    assert.equal((await problem(unknown, 422)).code, 'UNKNOWN_OPERATION_TYPE');
  });

  if (!webhooks) {
    it('has no webhook routes when mounted without webhooks', async () => {
      const answer = await fetch(api('/v1/webhooks/endpoints'), { headers: as('alice') });
      assert.equal(answer.status, 404);
    });
  }

  // Mounted with webhooks (every case but plain node:http): their routes under the prefix.
  if (webhooks)
    it('serves webhook endpoints (create, read, update, delete) with Location under the prefix', async () => {
      const { prefix } = mounted();
      const created = await fetch(api('/v1/webhooks/endpoints'), {
        method: 'POST',
        headers: as('alice', json),
        body: JSON.stringify({ url: 'http://127.0.0.1:9/hook' }),
      });
      assert.equal(created.status, 201);
      const endpoint = (await created.json()) as { id: string; version: number; secret: string };
      assert.equal(typeof endpoint.secret, 'string');
      const location = created.headers.get('location');
      assert.equal(location, `${prefix}/v1/webhooks/endpoints/${endpoint.id}`);
      const read = await fetch(`${mounted().origin}${location}`, { headers: as('alice') });
      assert.equal(read.status, 200);
      await problem(await fetch(`${mounted().origin}${location}`, { headers: as('bob') }), 404);
      const patched = await fetch(`${mounted().origin}${location}`, {
        method: 'PATCH',
        headers: as('alice', { ...json, 'if-match': `"${endpoint.version}"` }),
        body: JSON.stringify({ description: 'embedded' }),
      });
      assert.equal(patched.status, 200);
      assert.equal(((await patched.json()) as { description: string }).description, 'embedded');
      const deleted = await fetch(`${mounted().origin}${location}`, {
        method: 'DELETE',
        headers: as('alice', { 'if-match': '*' }),
      });
      assert.equal(deleted.status, 204);
    });
}
