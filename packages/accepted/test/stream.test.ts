import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { FastifyInstance } from 'fastify';
import type { Accepted } from '../src/engine/accepted.ts';
import { defineOperation } from '../src/engine/definition.ts';
import { demoOperations } from '../src/engine/demo.ts';
import { ApiKeys } from '../src/http/auth.ts';
import { createHttpServer } from '../src/server/http.ts';
import type { StreamOptions } from '../src/stream/hub.ts';
import { StreamTokens } from '../src/stream/tokens.ts';
import { eventually, onStore, startEngine } from './helpers.ts';
import { SseClient, WsClient, type WireEventLike } from './stream-clients.ts';

/** Operations that take one step each time the test says so (or end on abort). */
const steppers = new Map<string, { step: () => void; waiting: boolean }>();
const stepOperation = defineOperation<{ name: string; steps: number }, { name: string }>({
  type: 'test.steps',
  handler: async ({ name, steps }, ctx) => {
    for (let i = 1; i <= steps; i++) {
      await new Promise<void>((resolve, reject) => {
        steppers.set(name, {
          step: () => {
            steppers.delete(name);
            resolve();
          },
          waiting: true,
        });
        ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), {
          once: true,
        });
      });
      await ctx.progress({ fraction: i / steps, message: `step ${i}` });
    }
    return { name };
  },
});

/** Lets the operation `name` take its next step. */
async function step(name: string): Promise<void> {
  await eventually(() => steppers.has(name));
  steppers.get(name)?.step();
}

/** Emits `count` progress events of `bytes` each, as fast as the store takes them. */
const burstOperation = defineOperation<{ count: number; bytes: number }, { count: number }>({
  type: 'test.burst',
  handler: async ({ count, bytes }, ctx) => {
    const filler = 'x'.repeat(bytes);
    for (let i = 1; i <= count; i++) {
      await ctx.progress({ fraction: i / count, data: filler });
    }
    return { count };
  },
});

const KEY_ACME = 'acme-key-0123456789abcdef';
const KEY_BETA = 'beta-key-0123456789abcdef';
const ACME = { authorization: `Bearer ${KEY_ACME}` };
const BETA = { authorization: `Bearer ${KEY_BETA}` };

interface Api {
  accepted: Accepted;
  app: FastifyInstance;
  base: string;
  ws: string;
}

const apps: FastifyInstance[] = [];
after(async () => {
  for (const app of apps) await app.close();
});

async function startApi(
  streams: StreamOptions = {},
  prepare?: (app: FastifyInstance) => void,
): Promise<Api> {
  const accepted = await startEngine({
    operations: [...demoOperations, stepOperation, burstOperation],
  });
  const apiKeys = new ApiKeys();
  apiKeys.add({ tenant: 'acme', key: KEY_ACME });
  apiKeys.add({ tenant: 'beta', key: KEY_BETA });
  const app = createHttpServer({
    accepted,
    logger: false,
    apiKeys,
    streams: { heartbeatMs: 100, ...streams },
  });
  prepare?.(app);
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  apps.push(app);
  return { accepted, app, base, ws: `${base.replace('http', 'ws')}/v1/ws` };
}

async function submit(
  api: Api,
  body: Record<string, unknown>,
  headers: Record<string, string> = ACME,
): Promise<{ id: string; version: number; status: string }> {
  const response = await fetch(`${api.base}/v1/operations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 202, await response.clone().text());
  return (await response.json()) as { id: string; version: number; status: string };
}

/** Every event of one operation in the log, as seqs. */
async function logSeqs(api: Api, operationId: string, tenant = 'acme'): Promise<number[]> {
  const events = await api.accepted.readEvents({ tenant, operationId, limit: 1000 });
  return events.map((event) => event.seq);
}

function assertAscending(seqs: number[]): void {
  for (let i = 1; i < seqs.length; i++) {
    assert.ok((seqs[i] ?? 0) > (seqs[i - 1] ?? 0), `not ascending at ${i}: ${seqs.join(',')}`);
  }
}

async function streamToken(api: Api, body: Record<string, unknown>): Promise<string> {
  const response = await fetch(`${api.base}/v1/stream-tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...ACME },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 201);
  return ((await response.json()) as { token: string }).token;
}

describe(onStore('SSE: the stream of one operation'), { timeout: 60_000 }, () => {
  let api: Api;
  before(async () => {
    api = await startApi();
  });

  it('starts with a snapshot, streams every change, ends after the terminal event', async () => {
    const op = await submit(api, { type: 'test.steps', input: { name: 'one', steps: 3 } });
    const sse = new SseClient(`${api.base}/v1/operations/${op.id}/events`, ACME);
    await sse.opened();
    assert.equal(sse.status, 200);
    assert.equal(sse.headers['content-type'], 'text/event-stream; charset=utf-8');
    assert.equal(sse.headers['cache-control'], 'no-cache');
    assert.equal(sse.headers['x-accel-buffering'], 'no');
    await sse.until(() => sse.messages.length > 0, 'snapshot');
    assert.equal(sse.retry, 2000);
    const snapshot = sse.messages[0];
    assert.equal(snapshot?.event, 'operation.snapshot');
    const snap = JSON.parse(snapshot.data) as { seq: number; operation: { id: string } };
    assert.equal(snap.operation.id, op.id);
    assert.equal(snapshot.id, String(snap.seq));
    for (let i = 0; i < 3; i++) await step('one');
    await sse.ended;
    const types = sse.events.map((e) => e.type);
    assert.equal(types.at(-1), 'operation.succeeded');
    assert.equal(types.filter((t) => t === 'operation.progress').length, 3);
    // Exactly the log after what the snapshot showed, in order.
    const snapVersion = (JSON.parse(snapshot.data) as { operation: { version: number } }).operation
      .version;
    const expected = (await api.accepted.readEvents({ tenant: 'acme', operationId: op.id }))
      .filter((e) => e.version > snapVersion)
      .map((e) => e.seq);
    assert.deepEqual(sse.seqs, expected);
    for (const message of sse.messages.slice(1)) {
      assert.equal(message.id, String((JSON.parse(message.data) as WireEventLike).seq));
    }
  });

  it('resumes with Last-Event-ID: every missed event exactly once, in order; then 204', async () => {
    const op = await submit(api, { type: 'test.steps', input: { name: 'resume', steps: 6 } });
    const first = new SseClient(`${api.base}/v1/operations/${op.id}/events`, ACME);
    // The snapshot first: a step taken before it would be in it, not an event of the stream.
    await first.until(() => first.messages.length > 0, 'the snapshot');
    await step('resume');
    await step('resume');
    await first.until(
      () => first.events.filter((e) => e.type === 'operation.progress').length === 2,
      'two progress events',
    );
    first.close();
    const lastId = first.lastId;
    assert.ok(lastId);
    // Three steps happen while the client is away.
    for (let i = 0; i < 3; i++) await step('resume');
    await eventually(async () => (await logSeqs(api, op.id)).length >= 2 + 5);
    const second = new SseClient(`${api.base}/v1/operations/${op.id}/events`, {
      ...ACME,
      'last-event-id': lastId,
    });
    await second.until(() => second.events.length >= 3, 'missed events');
    assert.equal(second.messages[0]?.event, 'operation.progress', 'no snapshot on a resume');
    await step('resume');
    await second.ended;
    const seen = [...first.seqs, ...second.seqs];
    assert.ok(Number(first.messages[0]?.id) < (seen[0] ?? 0), 'the snapshot came first');
    const snapVersion = (
      JSON.parse(first.messages[0]?.data ?? '{}') as { operation: { version: number } }
    ).operation.version;
    const events = await api.accepted.readEvents({ tenant: 'acme', operationId: op.id });
    assert.deepEqual(
      seen,
      events.filter((e) => e.version > snapVersion).map((e) => e.seq),
      'each event once',
    );
    assertAscending(seen);
    assert.equal(second.events.at(-1)?.type, 'operation.succeeded');

    // The client has everything: the server says so with 204, and an EventSource stops.
    const third = new SseClient(`${api.base}/v1/operations/${op.id}/events`, {
      ...ACME,
      'last-event-id': String(second.seqs.at(-1)),
    });
    await third.ended;
    assert.equal(third.status, 204);

    // ?after= resumes the same way, and Last-Event-ID wins over it.
    const byQuery = new SseClient(
      `${api.base}/v1/operations/${op.id}/events?after=${String(first.seqs.at(-1))}`,
      ACME,
    );
    await byQuery.ended;
    assert.deepEqual(byQuery.seqs, second.seqs);
    const both = new SseClient(`${api.base}/v1/operations/${op.id}/events?after=0`, {
      ...ACME,
      'last-event-id': String(second.seqs.at(-1)),
    });
    await both.ended;
    assert.equal(both.status, 204);
  });

  it('sends the terminal event of a failed operation, and a snapshot alone once finished', async () => {
    const op = await submit(api, {
      type: 'demo.fail',
      input: { message: 'no', code: 'NOPE', permanent: true },
    });
    const sse = new SseClient(`${api.base}/v1/operations/${op.id}/events?after=0`, ACME);
    await sse.ended;
    assert.deepEqual(
      sse.events.map((e) => e.type),
      ['operation.queued', 'operation.started', 'operation.failed'],
    );
    const late = new SseClient(`${api.base}/v1/operations/${op.id}/events`, ACME);
    await late.ended;
    assert.deepEqual(
      late.messages.map((m) => m.event),
      ['operation.snapshot'],
    );
    assert.equal(
      (JSON.parse(late.messages[0]?.data ?? '{}') as { operation: { status: string } }).operation
        .status,
      'failed',
    );
  });

  it('sends heartbeat comments, answers HEAD, and refuses a bad Last-Event-ID', async () => {
    const op = await submit(api, { type: 'test.steps', input: { name: 'idle', steps: 1 } });
    const sse = new SseClient(`${api.base}/v1/operations/${op.id}/events`, ACME);
    await sse.until(() => sse.comments >= 2, 'two heartbeats');
    sse.close();
    await step('idle');
    const head = await fetch(`${api.base}/v1/operations/${op.id}/events`, {
      method: 'HEAD',
      headers: { ...ACME, accept: 'text/event-stream' },
    });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    const bad = new SseClient(`${api.base}/v1/operations/${op.id}/events`, {
      ...ACME,
      'last-event-id': 'evt_12',
    });
    await bad.ended;
    assert.equal(bad.status, 400);
    assert.equal((JSON.parse(bad.body) as { code: string }).code, 'INVALID_HEADER');
    const missing = new SseClient(
      `${api.base}/v1/operations/op_0000000000000000000000000000/events`,
      ACME,
    );
    await missing.ended;
    assert.equal(missing.status, 404);
  });
});

describe(onStore('SSE: the tenant stream and fan-out'), { timeout: 60_000 }, () => {
  let api: Api;
  before(async () => {
    api = await startApi();
  });

  it('filters by event type, operation type, label and operation', async () => {
    const all = new SseClient(`${api.base}/v1/events`, ACME);
    const done = new SseClient(
      `${api.base}/v1/events?type=operation.succeeded,operation.failed`,
      ACME,
    );
    const echoes = new SseClient(`${api.base}/v1/events?operationType=demo.echo`, ACME);
    const labelled = new SseClient(`${api.base}/v1/events?label=team:red&label=tier:1`, ACME);
    for (const client of [all, done, echoes, labelled]) await client.opened();
    await eventually(() => api.app.streamHub.stats().subscriptions >= 4);
    const red = await submit(api, {
      type: 'demo.echo',
      input: 1,
      labels: { team: 'red', tier: '1' },
    });
    const blue = await submit(api, { type: 'demo.echo', input: 2, labels: { team: 'blue' } });
    const failing = await submit(api, {
      type: 'demo.fail',
      input: { message: 'x', permanent: true },
      labels: { team: 'red' },
    });
    const byOperation = new SseClient(`${api.base}/v1/events?operation=${blue.id}&after=0`, ACME);
    await all.until(
      () => all.events.filter((e) => e.type === 'operation.failed').length === 1,
      'all',
    );
    await all.until(
      () => all.events.filter((e) => e.type === 'operation.succeeded').length === 2,
      'all',
    );
    await byOperation.until(() => byOperation.events.length === 3, 'by operation');
    await done.until(() => done.events.length === 3, 'terminal ones');
    await echoes.until(() => echoes.events.length === 6, 'echoes');
    await labelled.until(() => labelled.events.length === 3, 'labelled');
    assert.deepEqual(
      new Set(done.events.map((e) => e.type)),
      new Set(['operation.succeeded', 'operation.failed']),
    );
    assert.ok(echoes.events.every((e) => e.operationId !== failing.id));
    assert.ok(labelled.events.every((e) => e.operationId === red.id));
    assert.ok(byOperation.events.every((e) => e.operationId === blue.id));
    assert.deepEqual(labelled.events[0]?.labels, { team: 'red', tier: '1' });
    for (const client of [all, done, echoes, labelled, byOperation]) {
      assertAscending(client.seqs);
      client.close();
    }
    // The same filters as a JSON page.
    const page = (await (
      await fetch(`${api.base}/v1/events?label=team:red&type=operation.queued`, { headers: ACME })
    ).json()) as { events: WireEventLike[]; nextAfter: number };
    assert.deepEqual(
      page.events.map((e) => e.operationId),
      [red.id, failing.id],
    );
    assert.equal(page.nextAfter, page.events.at(-1)?.seq);
    const badQuery = await fetch(`${api.base}/v1/events?type=operation.exploded`, {
      headers: ACME,
    });
    assert.equal(badQuery.status, 400);
  });

  it('gives many subscribers the same ordered stream, on SSE and WebSocket', async () => {
    const op = await submit(api, { type: 'test.steps', input: { name: 'fan', steps: 5 } });
    const cursor = Math.min(...(await logSeqs(api, op.id))) - 1;
    const perOperation = Array.from(
      { length: 40 },
      () => new SseClient(`${api.base}/v1/operations/${op.id}/events?after=${cursor}`, ACME),
    );
    const tenant = Array.from(
      { length: 20 },
      () => new SseClient(`${api.base}/v1/events?operation=${op.id}&after=${cursor}`, ACME),
    );
    const sockets = Array.from({ length: 10 }, () => new WsClient(api.ws, ACME));
    await Promise.all(sockets.map((socket) => socket.opened()));
    const subscriptions = await Promise.all(
      sockets.map((socket) =>
        socket.request({ type: 'subscribe', id: 1, operation: op.id, after: cursor }),
      ),
    );
    await eventually(() => api.app.streamHub.stats().subscriptions >= 70);
    for (let i = 0; i < 5; i++) await step('fan');
    await Promise.all(perOperation.map((client) => client.ended));
    const log = await logSeqs(api, op.id);
    for (const client of perOperation) assert.deepEqual(client.seqs, log);
    for (const client of tenant) {
      await client.until(() => client.seqs.length === log.length, 'tenant stream');
      assert.deepEqual(client.seqs, log);
      client.close();
    }
    for (const [i, socket] of sockets.entries()) {
      const subscription = subscriptions[i]?.subscription;
      await socket.next((m) => m.type === 'complete' && m.subscription === subscription);
      assert.deepEqual(
        socket.events(subscription).map((e) => e.seq),
        log,
      );
      socket.close();
    }
  });
});

describe(onStore('slow consumers'), { timeout: 120_000 }, () => {
  let api: Api;
  before(async () => {
    api = await startApi({ maxPending: 16, stallTimeoutMs: 60_000 });
  });

  it('a stalled reader is held to a bounded buffer, delays nobody, and catches up from the log', async () => {
    const stalled = new SseClient(`${api.base}/v1/events`, ACME);
    const healthy = new SseClient(`${api.base}/v1/events`, ACME);
    await stalled.opened();
    await healthy.opened();
    await eventually(() => api.app.streamHub.stats().subscriptions === 2);
    stalled.pause();
    // ~32 MB of progress (far more than the socket buffers between the two ends hold), then
    // events of many operations, which conflation cannot fold: the stalled one falls behind.
    const bursts = await Promise.all(
      Array.from({ length: 16 }, () =>
        submit(api, { type: 'test.burst', input: { count: 50, bytes: 40_000 } }),
      ),
    );
    for (const burst of bursts) {
      await eventually(
        async () => (await api.accepted.get(burst.id, { tenant: 'acme' }))?.status === 'succeeded',
        60_000,
      );
    }
    const echoes: { id: string }[] = [];
    for (let i = 0; i < 40; i++) echoes.push(await submit(api, { type: 'demo.echo', input: i }));
    const op = echoes.at(-1) as { id: string };
    let maxHeld = 0;
    let fellBehind = false;
    await healthy.until(
      () => {
        const stats = api.app.streamHub.stats();
        maxHeld = Math.max(maxHeld, stats.maxHeld);
        fellBehind ||= stats.behind > 0;
        // Every echo's end, not just any end: the bursts ended before the echoes were
        // submitted, so "some succeeded event" would hold before the echoes reach it.
        const ended = new Set(
          healthy.events.filter((e) => e.type === 'operation.succeeded').map((e) => e.operationId),
        );
        return echoes.every((echo) => ended.has(echo.id));
      },
      'the healthy reader gets the end of every echo',
      60_000,
    );
    // The healthy reader saw every state in order, ending with the result.
    assertAscending(healthy.seqs);
    const log = await api.accepted.readEvents({
      tenant: 'acme',
      limit: 1000,
      after: 0,
      types: ['operation.queued', 'operation.started', 'operation.succeeded'],
    });
    const seen = new Set(healthy.seqs);
    assert.ok(
      log.every((e) => seen.has(e.seq)),
      'every state change reached the healthy reader',
    );
    // The stalled one never held more than its bound, and fell back to the log.
    assert.ok(maxHeld <= 16, `held ${maxHeld} events`);
    assert.ok(fellBehind, 'the stalled subscription fell back to reading the log');
    assert.ok(!stalled.seqs.includes(healthy.seqs.at(-1) ?? 0), 'the stalled reader lags');
    // Once it reads again, it catches up from the log: in order, every state change.
    stalled.resume();
    await stalled.until(
      () => stalled.events.some((e) => e.operationId === op.id && e.type === 'operation.succeeded'),
      'the stalled reader catches up',
      60_000,
    );
    assertAscending(stalled.seqs);
    const caughtUp = new Set(stalled.seqs);
    assert.ok(
      log.every((e) => caughtUp.has(e.seq)),
      'every state change reached the stalled reader',
    );
    assert.ok(api.app.streamHub.stats().conflated > 0, 'stale progress was conflated');
    stalled.close();
    healthy.close();
  });

  it('closes a connection that reads nothing past the stall timeout, saying why', async () => {
    // A long heartbeat, so that the WebSocket keepalive (no pong) does not close it first.
    const strict = await startApi({ maxPending: 4, stallTimeoutMs: 300, heartbeatMs: 10_000 });
    const ws = new WsClient(strict.ws, ACME);
    await ws.opened();
    await ws.request({ type: 'subscribe', id: 1, filter: {} });
    const sse = new SseClient(`${strict.base}/v1/events`, ACME);
    await sse.opened();
    await eventually(() => strict.app.streamHub.stats().subscriptions === 2);
    sse.pause();
    ws.socket.pause();
    // ~20 MB: more than the socket buffers between the two ends take, so both congest.
    for (let i = 0; i < 10; i++) {
      await submit(strict, { type: 'test.burst', input: { count: 50, bytes: 40_000 } });
    }
    await eventually(() => strict.app.streamHub.stats().connections === 0, 60_000);
    assert.equal(strict.app.streamHub.stats().subscriptions, 0);
    // What was sent before the cut still arrives, and ends with the reason.
    sse.resume();
    ws.socket.resume();
    await sse.ended;
    await ws.closed;
    assert.deepEqual(sse.messages.at(-1), {
      id: undefined,
      event: 'stream.closing',
      data: JSON.stringify({ reason: 'SLOW_CONSUMER' }),
    });
    assert.ok(
      ws.messages.some((m) => m.type === 'closing' && m.reason === 'SLOW_CONSUMER'),
      JSON.stringify([ws.closeCode, ws.messages.slice(-3).map((m) => m.type)]),
    );
    assert.equal(ws.closeCode, 1008);
  });
});

describe(onStore('authentication and tenants on streams'), { timeout: 60_000 }, () => {
  let api: Api;
  before(async () => {
    api = await startApi();
  });

  it('refuses a stream without credentials, before anything is sent', async () => {
    const sse = new SseClient(`${api.base}/v1/events`);
    await sse.ended;
    assert.equal(sse.status, 401);
    assert.equal((JSON.parse(sse.body) as { code: string }).code, 'UNAUTHENTICATED');
    const ws = new WsClient(api.ws);
    await assert.rejects(ws.opened(), /upgrade refused: 401/);
    const badToken = new WsClient(`${api.ws}?access_token=st_forged.AAAA`);
    await assert.rejects(badToken.opened(), /upgrade refused: 401/);
  });

  it('keeps tenants apart on SSE and WebSocket', async () => {
    const acme = new SseClient(`${api.base}/v1/events`, ACME);
    const ws = new WsClient(api.ws, ACME);
    await ws.opened();
    const sub = await ws.request({ type: 'subscribe', id: 's', filter: {} });
    await acme.opened();
    await eventually(() => api.app.streamHub.stats().subscriptions === 2);
    const theirs = await submit(api, { type: 'demo.echo', input: 'beta' }, BETA);
    const ours = await submit(api, { type: 'demo.echo', input: 'acme' });
    await acme.until(() => acme.events.some((e) => e.type === 'operation.succeeded'), 'ours');
    await ws.next(
      (m) => m.type === 'event' && (m.event as WireEventLike).type === 'operation.succeeded',
    );
    assert.ok(acme.events.every((e) => e.operationId === ours.id));
    assert.ok(ws.events(sub.subscription).every((e) => e.operationId === ours.id));
    // Another tenant's operation does not exist for acme, on every stream route.
    const other = new SseClient(`${api.base}/v1/operations/${theirs.id}/events`, ACME);
    await other.ended;
    assert.equal(other.status, 404);
    const refused = await ws.request({ type: 'subscribe', id: 'x', operation: theirs.id });
    assert.equal(refused.code, 'OPERATION_NOT_FOUND');
    const cancel = await ws.request({ type: 'cancel', id: 'c', operation: theirs.id });
    assert.equal(cancel.code, 'OPERATION_NOT_FOUND');
    const mint = await fetch(`${api.base}/v1/stream-tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...ACME },
      body: JSON.stringify({ operation: theirs.id }),
    });
    assert.equal(mint.status, 404);
    acme.close();
    ws.close();
  });

  it('accepts a stream token in the query, within its tenant, operation and time', async () => {
    const op = await submit(api, { type: 'test.steps', input: { name: 'token', steps: 1 } });
    const another = await submit(api, { type: 'demo.echo', input: 1 });
    const scoped = await streamToken(api, { operation: op.id });
    const tenantWide = await streamToken(api, {});

    const sse = new SseClient(`${api.base}/v1/operations/${op.id}/events?access_token=${scoped}`);
    await sse.until(() => sse.messages.length > 0, 'snapshot');
    assert.equal(sse.status, 200);
    const wrongOperation = new SseClient(
      `${api.base}/v1/operations/${another.id}/events?access_token=${scoped}`,
    );
    await wrongOperation.ended;
    assert.equal(wrongOperation.status, 403);
    assert.equal((JSON.parse(wrongOperation.body) as { code: string }).code, 'FORBIDDEN');
    const scopedTenant = new SseClient(`${api.base}/v1/events?access_token=${scoped}`);
    await scopedTenant.ended;
    assert.equal(scopedTenant.status, 403);
    const wide = new SseClient(`${api.base}/v1/events?access_token=${tenantWide}`);
    await wide.opened();
    assert.equal(wide.status, 200);
    wide.close();

    // Only stream routes take a token.
    const monitor = await fetch(`${api.base}/v1/operations/${op.id}?access_token=${tenantWide}`);
    assert.equal(monitor.status, 401);
    // A tampered or expired token is refused.
    const tampered = new SseClient(
      `${api.base}/v1/events?access_token=${tenantWide.slice(0, -3)}AAA`,
    );
    await tampered.ended;
    assert.equal(tampered.status, 401);
    // The problem names the path, never the token of the query.
    assert.equal((JSON.parse(tampered.body) as { instance: string }).instance, '/v1/events');
    const tokens = new StreamTokens('a-secret-of-at-least-thirty-two-characters');
    const mintedAt = Date.now();
    const minted = tokens.mint({ tenant: 'acme', ttlSeconds: 1 });
    assert.equal(tokens.verify(minted.token).tenant, 'acme');
    assert.throws(() => tokens.verify(minted.token, Date.now() + 2001), /expired/);
    // However close to the end of a second it was minted, a token lives its whole ttl.
    assert.ok(minted.expiresAt * 1000 >= mintedAt + 1000);
    assert.throws(() => new StreamTokens('short'), /at least 32/);
    const badBody = await fetch(`${api.base}/v1/stream-tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...ACME },
      body: JSON.stringify({ ttlSeconds: 99_999 }),
    });
    assert.equal(badBody.status, 422);

    // Over WebSocket the scoped token reads its operation only, and cannot write.
    const ws = new WsClient(`${api.ws}?access_token=${scoped}`);
    await ws.opened();
    const ok = await ws.request({ type: 'subscribe', id: 1, operation: op.id });
    assert.equal(ok.type, 'ack');
    const forbidden = await ws.request({ type: 'subscribe', id: 2, operation: another.id });
    assert.equal(forbidden.code, 'FORBIDDEN');
    const noFilter = await ws.request({ type: 'subscribe', id: 3, filter: {} });
    assert.equal(noFilter.code, 'FORBIDDEN');
    const noSubmit = await ws.request({
      type: 'submit',
      id: 4,
      operation: { type: 'demo.echo', input: 1 },
    });
    assert.equal(noSubmit.code, 'FORBIDDEN');
    await step('token');
    await sse.ended;
    await ws.next((m) => m.type === 'complete');
    ws.close();
  });
});

describe(onStore('WebSocket protocol'), { timeout: 60_000 }, () => {
  let api: Api;
  before(async () => {
    api = await startApi({ maxSubscriptions: 3 });
  });

  it('welcomes, submits, subscribes with a snapshot, streams, completes, and pings', async () => {
    const ws = new WsClient(api.ws, ACME);
    await ws.opened();
    const welcome = await ws.next((m) => m.type === 'welcome');
    assert.deepEqual(welcome, { type: 'welcome', protocol: 1, tenant: 'acme', heartbeatMs: 100 });
    const submitted = await ws.request({
      type: 'submit',
      id: 'sub-1',
      operation: { type: 'test.steps', input: { name: 'ws', steps: 2 } },
      idempotencyKey: 'ws-key-1',
    });
    assert.equal(submitted.request, 'submit');
    assert.equal(submitted.replayed, false);
    const op = submitted.operation as { id: string };
    const again = await ws.request({
      type: 'submit',
      id: 'sub-2',
      operation: { type: 'test.steps', input: { name: 'ws', steps: 2 } },
      idempotencyKey: 'ws-key-1',
    });
    assert.equal(again.replayed, true);
    assert.equal((again.operation as { id: string }).id, op.id);

    const ack = await ws.request({ type: 'subscribe', id: 7, operation: op.id });
    assert.equal(ack.request, 'subscribe');
    const snapshot = await ws.next((m) => m.type === 'snapshot');
    assert.equal(snapshot.subscription, ack.subscription);
    assert.equal(snapshot.seq, ack.cursor);
    assert.equal((snapshot.operation as { id: string }).id, op.id);
    await step('ws');
    await step('ws');
    await ws.next((m) => m.type === 'complete' && m.subscription === ack.subscription);
    const events = ws.events(ack.subscription);
    assert.equal(events.at(-1)?.type, 'operation.succeeded');
    assertAscending(events.map((e) => e.seq));
    ws.send({ type: 'ping', id: 'p' });
    await ws.next((m) => m.type === 'pong' && m.id === 'p');
    await eventually(() => ws.pings >= 2);
    ws.close();
  });

  it('resumes a subscription after a reconnect from its last seq, without gaps or repeats', async () => {
    const first = new WsClient(api.ws, ACME);
    await first.opened();
    const op = (
      await first.request({
        type: 'submit',
        id: 1,
        operation: { type: 'test.steps', input: { name: 'ws-resume', steps: 4 } },
      })
    ).operation as { id: string };
    const sub = await first.request({ type: 'subscribe', id: 2, operation: op.id, after: 0 });
    await step('ws-resume');
    await first.next(
      (m) => m.type === 'event' && (m.event as WireEventLike).type === 'operation.progress',
    );
    first.close();
    const seen = first.events(sub.subscription).map((e) => e.seq);
    await step('ws-resume');
    await step('ws-resume');
    const second = new WsClient(api.ws, ACME);
    await second.opened();
    const resumed = await second.request({
      type: 'subscribe',
      id: 3,
      operation: op.id,
      after: seen.at(-1),
    });
    await step('ws-resume');
    await second.next((m) => m.type === 'complete');
    const all = [...seen, ...second.events(resumed.subscription).map((e) => e.seq)];
    assert.deepEqual(all, await logSeqs(api, op.id));
    assert.ok(!second.messages.some((m) => m.type === 'snapshot'), 'no snapshot with after');
    second.close();
  });

  it('answers bad messages with stable codes and keeps the connection', async () => {
    const ws = new WsClient(api.ws, ACME);
    await ws.opened();
    ws.socket.send('{not json');
    const notJson = await ws.next((m) => m.type === 'error');
    assert.equal(notJson.code, 'INVALID_MESSAGE');
    const unknown = await ws.request({ type: 'explode', id: 1 });
    assert.equal(unknown.code, 'INVALID_MESSAGE');
    const neither = await ws.request({ type: 'subscribe', id: 2 });
    assert.equal(neither.code, 'INVALID_MESSAGE');
    const badField = await ws.request({ type: 'subscribe', id: 3, filter: { types: ['nope'] } });
    assert.equal(badField.code, 'INVALID_MESSAGE');
    assert.ok(Array.isArray(badField.fields));
    const missing = await ws.request({ type: 'subscribe', id: 4, operation: 'op_missing' });
    assert.equal(missing.code, 'OPERATION_NOT_FOUND');
    const noSub = await ws.request({ type: 'unsubscribe', id: 5, subscription: 's99' });
    assert.equal(noSub.code, 'SUBSCRIPTION_NOT_FOUND');
    const invalidSubmit = await ws.request({
      type: 'submit',
      id: 6,
      operation: { type: 'nope.nope' },
    });
    assert.equal(invalidSubmit.code, 'UNKNOWN_OPERATION_TYPE');
    const subs: Record<string, unknown>[] = [];
    for (let i = 0; i < 3; i++) {
      subs.push(await ws.request({ type: 'subscribe', id: 10 + i, filter: {} }));
    }
    const tooMany = await ws.request({ type: 'subscribe', id: 20, filter: {} });
    assert.equal(tooMany.code, 'TOO_MANY_SUBSCRIPTIONS');
    const gone = await ws.request({
      type: 'unsubscribe',
      id: 21,
      subscription: subs[0]?.subscription,
    });
    assert.equal(gone.type, 'ack');
    const op = await submit(api, { type: 'demo.echo', input: 1 });
    await ws.next(
      (m) =>
        m.type === 'event' &&
        m.subscription === subs[1]?.subscription &&
        (m.event as WireEventLike).type === 'operation.succeeded' &&
        (m.event as WireEventLike).operationId === op.id,
    );
    assert.equal(ws.events(subs[0]?.subscription).filter((e) => e.operationId === op.id).length, 0);
    const cancel = await ws.request({ type: 'cancel', id: 30, operation: op.id });
    assert.equal(cancel.code, 'ALREADY_TERMINAL');
    ws.close();
  });
});

describe(onStore('shutdown and leaks'), { timeout: 120_000 }, () => {
  it('closes every stream at shutdown, saying why', async () => {
    const api = await startApi();
    const sse = new SseClient(`${api.base}/v1/events`, ACME);
    const ws = new WsClient(api.ws, ACME);
    await ws.opened();
    await sse.opened();
    await api.app.close();
    await sse.ended;
    await ws.closed;
    const last = sse.messages.at(-1);
    assert.equal(last?.event, 'stream.closing');
    assert.deepEqual(JSON.parse(last.data), { reason: 'SHUTTING_DOWN' });
    assert.equal(ws.closeCode, 1001);
    assert.ok(ws.messages.some((m) => m.type === 'closing' && m.reason === 'SHUTTING_DOWN'));
  });

  it('opening and closing thousands of streams leaves nothing behind', async () => {
    const api = await startApi();
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const heap = () => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    const op = await submit(api, { type: 'test.steps', input: { name: 'leak', steps: 1 } });
    const round = async () => {
      const clients = Array.from({ length: 250 }, (_, i) =>
        i % 2 === 0
          ? new SseClient(`${api.base}/v1/events`, ACME)
          : new SseClient(`${api.base}/v1/operations/${op.id}/events`, ACME),
      );
      const sockets = Array.from({ length: 50 }, () => new WsClient(api.ws, ACME));
      await Promise.all(clients.map((client) => client.opened()));
      await Promise.all(sockets.map((socket) => socket.opened()));
      await Promise.all(
        sockets.map((socket) => socket.request({ type: 'subscribe', id: 1, operation: op.id })),
      );
      await eventually(() => api.app.streamHub.stats().connections === 300);
      for (const client of clients) client.close();
      for (const socket of sockets) socket.close();
      await eventually(() => api.app.streamHub.stats().connections === 0);
    };
    await round(); // warm up: code, pools, caches
    const before = heap();
    for (let i = 0; i < 8; i++) await round(); // 2,400 more streams in all
    const stats = api.app.streamHub.stats();
    assert.equal(stats.subscriptions, 0);
    assert.equal(stats.live, false, 'the hub stops taking events when nobody listens');
    const grown = heap() - before;
    assert.ok(grown < 4 * 1024 * 1024, `heap grew by ${grown} bytes over 2,400 streams`);
    await step('leak');
  });
});

describe(onStore('raw HTTP framing'), { timeout: 30_000 }, () => {
  it('writes exactly id, event and data lines, and a retry hint', async () => {
    const api = await startApi();
    const op = await submit(api, { type: 'demo.echo', input: { a: 'line\nbreak' } });
    await eventually(async () => (await logSeqs(api, op.id)).length === 3);
    const url = new URL(`${api.base}/v1/operations/${op.id}/events?after=0`);
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(url.port), url.hostname, () => {
        socket.write(
          `GET ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\naccept: text/event-stream\r\nauthorization: Bearer ${KEY_ACME}\r\nconnection: close\r\n\r\n`,
        );
      });
      let text = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (text += chunk));
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
    });
    const body = raw.slice(raw.indexOf('\r\n\r\n') + 4);
    assert.match(body, /retry: 2000\n\n/);
    const frames = [
      ...body.matchAll(/id: (\d+)\nevent: (operation\.[a-z_]+)\ndata: (\{.*\})\n\n/g),
    ];
    assert.equal(frames.length, 3);
    for (const frame of frames) {
      const event = JSON.parse(frame[3] ?? '') as WireEventLike;
      assert.equal(String(event.seq), frame[1]);
      assert.equal(event.type, frame[2]);
    }
  });
});

/** A raw SSE request on its own socket; resolves with the socket once the head has come. */
function rawStream(
  base: string,
  path: string,
): Promise<{ socket: net.Socket; head: string; body: () => string; ended: Promise<void> }> {
  const url = new URL(`${base}${path}`);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname, () => {
      socket.write(
        `GET ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\naccept: text/event-stream\r\nauthorization: Bearer ${KEY_ACME}\r\n\r\n`,
      );
    });
    let text = '';
    let resolved = false;
    const ended = new Promise<void>((done) => socket.once('close', () => done()));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      const end = text.indexOf('\r\n\r\n');
      if (!resolved && end >= 0) {
        resolved = true;
        resolve({
          socket,
          head: text.slice(0, end),
          body: () => text.slice(end + 4),
          ended,
        });
      }
    });
    socket.on('error', reject);
  });
}

describe(onStore('SSE: the socket after the head'), { timeout: 60_000 }, () => {
  it("on Accepted's own server a stream is close-delimited, not chunked, and ends with its connection", async () => {
    const api = await startApi();
    const op = await submit(api, { type: 'test.steps', input: { name: 'close', steps: 1 } });
    const stream = await rawStream(api.base, `/v1/operations/${op.id}/events`);
    assert.match(stream.head, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(stream.head, /\r\nconnection: close(\r\n|$)/i);
    assert.doesNotMatch(stream.head, /transfer-encoding/i);
    assert.match(stream.head, /\r\ncontent-type: text\/event-stream; charset=utf-8(\r\n|$)/i);
    assert.match(stream.head, /\r\ndate: /i);
    await eventually(() => stream.body().includes('event: operation.snapshot'));
    await step('close');
    // The end: the last event, then the server closes the connection (no chunk terminator).
    await stream.ended;
    const body = stream.body();
    assert.match(body, /^retry: \d+\n\n/);
    assert.match(body, /event: operation\.succeeded\ndata: \{.*\}\n\n$/);
    assert.doesNotMatch(body, /^[0-9a-f]+\r\n/m, 'no chunk-size lines');
  });

  it("node:http's request and response are freed while the stream stays open", async () => {
    // The server's objects of each stream request, held weakly: they must not outlive the head.
    const held: { req: WeakRef<object>; res: WeakRef<object> }[] = [];
    const api = await startApi({}, (app) => {
      app.addHook('onRequest', async (request, reply) => {
        if (request.url.endsWith('/events')) {
          held.push({ req: new WeakRef(request.raw), res: new WeakRef(reply.raw) });
        }
      });
    });
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const op = await submit(api, { type: 'test.steps', input: { name: 'freed', steps: 2 } });
    const before = api.app.streamHub.stats().connections;
    const stream = await rawStream(api.base, `/v1/operations/${op.id}/events`);
    await eventually(() => api.app.streamHub.stats().connections === before + 1);
    assert.equal(held.length, 1);
    await eventually(() => {
      gc();
      return held.every((e) => e.req.deref() === undefined && e.res.deref() === undefined);
    });
    // And the stream still works, to its end.
    await step('freed');
    await eventually(() => stream.body().includes('event: operation.progress'));
    await step('freed');
    await stream.ended;
    assert.match(stream.body(), /event: operation\.succeeded/);
  });

  it('a client that resets its stream leaves the server serving, and nothing attached', async () => {
    const api = await startApi();
    const before = api.app.streamHub.stats().connections;
    const streams = await Promise.all(
      Array.from({ length: 20 }, () => rawStream(api.base, '/v1/events')),
    );
    await eventually(() => api.app.streamHub.stats().connections === before + 20);
    for (const [i, stream] of streams.entries()) {
      if (i % 2 === 0) stream.socket.resetAndDestroy();
      else stream.socket.end(); // half-closed: the server ends its side too
    }
    await Promise.all(streams.map((stream) => stream.ended));
    await eventually(() => api.app.streamHub.stats().connections === before);
    const op = await submit(api, { type: 'demo.echo', input: { after: 'resets' } });
    assert.ok(op.id);
  });
});
