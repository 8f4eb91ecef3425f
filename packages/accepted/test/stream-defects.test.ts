// Regression tests for the push channels' defects (#5, #10, and WebSocket nesting of #3),
// each named after its defect. Real sockets, the run's real store (a SQLite file or a
// PostgreSQL schema), no mocks: where a race needs an interleaving, the store is paused between
// two reads (`gatedStore`) or its disk flush is held (`stallDisk`), and every answer is still
// the real store's.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { Accepted } from '../src/engine/accepted.ts';
import { defineOperation } from '../src/engine/definition.ts';
import { newOperationId } from '../src/domain/ids.ts';
import { demoOperations } from '../src/engine/demo.ts';
import { createHttpServer } from '../src/server/http.ts';
import type { OperationEvent } from '../src/domain/events.ts';
import { MAX_JSON_DEPTH } from '../src/domain/json.ts';
import type { Store } from '../src/store/store.ts';
import type { StreamOptions } from '../src/stream/hub.ts';
import { gatedStore, stallDisk, type PausedRead } from './gated-store.ts';
import {
  STORE,
  eventually,
  newStorePlace,
  onStore,
  sqliteOnly,
  startEngine,
  tempDir,
} from './helpers.ts';
import { SseClient, WsClient, type WireEventLike } from './stream-clients.ts';

/** A WebSocket message may nest one level more than an HTTP body (a submit wraps one). */
const WS_MAX_JSON_DEPTH = MAX_JSON_DEPTH + 1;

/** Operations that run until the test lets them finish (by name). */
const finishers = new Map<string, () => void>();
const heldOperation = defineOperation<{ name: string }, { name: string }>({
  type: 'test.held',
  handler: ({ name }, ctx) =>
    new Promise((resolve, reject) => {
      finishers.set(name, () => {
        finishers.delete(name);
        resolve({ name });
      });
      ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), {
        once: true,
      });
    }),
});

/** Lets the held operation `name` finish (once it runs). */
async function finish(name: string): Promise<void> {
  await eventually(() => finishers.has(name));
  finishers.get(name)?.();
}

interface Api {
  accepted: Accepted;
  app: FastifyInstance;
  base: string;
  ws: string;
  /** The real store under the gate (reads through it are not paused). */
  raw: Store;
  pause: (operationId: string) => PausedRead;
  reads: Map<string, number>;
  /** A folder of its own (for the FIFOs of `stallDisk`). */
  dir: string;
  /** Every response sent, as the server sent it: the URL and the ETag header. */
  sent: { url: string; etag: string | undefined }[];
}

const apps: FastifyInstance[] = [];
after(async () => {
  for (const app of apps) await app.close();
});

async function startApi(options: { streams?: StreamOptions } = {}): Promise<Api> {
  const place = newStorePlace();
  const raw = place.open();
  const gate = gatedStore(raw);
  const accepted = await startEngine({
    store: gate.store,
    operations: [...demoOperations, heldOperation],
  });
  const app = createHttpServer({
    accepted,
    logger: false,
    streams: { heartbeatMs: 1000, ...options.streams },
  });
  const sent: Api['sent'] = [];
  app.addHook('onSend', async (request, reply, payload) => {
    sent.push({ url: request.url, etag: reply.getHeader('etag') as string | undefined });
    return payload;
  });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  apps.push(app);
  return {
    accepted,
    app,
    base,
    ws: `${base.replace('http', 'ws')}/v1/ws`,
    raw,
    pause: gate.pause,
    reads: gate.reads,
    dir: tempDir(),
    sent,
  };
}

/** Submits a held operation and waits until it runs (version 2, `operation.started`). */
async function running(api: Api, name: string): Promise<{ id: string }> {
  const op = await api.accepted.submit('test.held', { name });
  await api.accepted.wait(op.id, { afterVersion: 1 });
  return op;
}

/** The terminal event of an operation once it is in the log (readable, so durable). */
async function terminalEvent(api: Api, operationId: string): Promise<OperationEvent> {
  let found: OperationEvent | undefined;
  await eventually(async () => {
    const events = await api.raw.readEvents({ after: 0, operationId, limit: 100 });
    found = events.find((e) => e.type === 'operation.succeeded');
    return found !== undefined;
  });
  return found as OperationEvent;
}

/** Resolves after the event loop has run every callback queued so far (one full turn). */
function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

async function openWs(api: Api): Promise<WsClient> {
  const ws = new WsClient(api.ws);
  await ws.opened();
  await ws.next((m) => m.type === 'welcome');
  return ws;
}

describe(onStore('#5 WebSocket subscription cap'), { timeout: 120_000 }, () => {
  let api: Api;
  before(async () => {
    api = await startApi();
  });

  it('#5 a burst of 5,000 subscribes leaves at most maxSubscriptions (100) live', async () => {
    const op = await running(api, 'burst');
    const ws = await openWs(api);
    // One burst: every subscribe is read before any of them has its answer from the store.
    // Each kind awaits the store: a snapshot, the log's last seq, the operation.
    const kinds = [{ operation: op.id }, { filter: {} }, { operation: op.id, after: 0 }];
    for (let i = 0; i < 5000; i++) ws.send({ type: 'subscribe', id: i, ...kinds[i % 3] });
    await eventually(
      () => ws.messages.filter((m) => m.type === 'ack' || m.type === 'error').length === 5000,
      60_000,
    );
    const acks = ws.messages.filter((m) => m.type === 'ack');
    const errors = ws.messages.filter((m) => m.type === 'error');
    assert.equal(acks.length, 100, `${acks.length} subscriptions acknowledged (cap 100)`);
    assert.ok(errors.every((m) => m.code === 'TOO_MANY_SUBSCRIPTIONS'));
    assert.equal(api.app.streamHub.stats().subscriptions, 100);
    // The slots are real: one unsubscribe frees exactly one.
    const gone = await ws.request({
      type: 'unsubscribe',
      id: 'u',
      subscription: acks[0]?.subscription,
    });
    assert.equal(gone.type, 'ack');
    const again = await ws.request({ type: 'subscribe', id: 'again', filter: {} });
    assert.equal(again.type, 'ack');
    const over = await ws.request({ type: 'subscribe', id: 'over', filter: {} });
    assert.equal(over.code, 'TOO_MANY_SUBSCRIPTIONS');
    ws.close();
    await eventually(() => api.app.streamHub.stats().subscriptions === 0);
    await finish('burst');
  });

  it('#5 a refused subscribe (unknown operation) gives its reserved slot back', async () => {
    const ws = await openWs(api);
    // A burst as large as the cap, each refused after it read the store: every slot returns.
    const missing = newOperationId();
    for (let i = 0; i < 100; i++) ws.send({ type: 'subscribe', id: i, operation: missing });
    await eventually(() => ws.messages.filter((m) => m.type === 'error').length === 100);
    const codes = new Set(ws.messages.filter((m) => m.type === 'error').map((m) => m.code));
    assert.deepEqual([...codes], ['OPERATION_NOT_FOUND']);
    for (let i = 0; i < 100; i++) ws.send({ type: 'subscribe', id: `ok${i}`, filter: {} });
    await eventually(() => ws.messages.filter((m) => m.type === 'ack').length === 100);
    assert.equal(api.app.streamHub.stats().subscriptions, 100);
    ws.close();
    await eventually(() => api.app.streamHub.stats().subscriptions === 0);
  });

  it('#5 an unsubscribe sent before its subscribe is acknowledged ends that subscription', async () => {
    const ws = await openWs(api);
    const before = api.app.streamHub.stats().subscriptions;
    // The client sends both at once; the first subscription of a connection is s1.
    ws.send({ type: 'subscribe', id: 'sub', filter: {} });
    ws.send({ type: 'unsubscribe', id: 'unsub', subscription: 's1' });
    const unsub = await ws.next((m) => m.id === 'unsub');
    assert.equal(unsub.type, 'ack', JSON.stringify(unsub));
    const sub = await ws.next((m) => m.id === 'sub');
    assert.equal(sub.type, 'ack');
    assert.ok(ws.messages.indexOf(sub) < ws.messages.indexOf(unsub), 'subscribe answered first');
    assert.equal(api.app.streamHub.stats().subscriptions, before);
    // Nothing reaches s1 afterwards: a second subscription sees an event that s1 does not.
    const watch = await ws.request({ type: 'subscribe', id: 'watch', filter: {} });
    const op = await api.accepted.submit('demo.echo', 1);
    await ws.next(
      (m) =>
        m.type === 'event' &&
        m.subscription === watch.subscription &&
        (m.event as WireEventLike).operationId === op.id &&
        (m.event as WireEventLike).type === 'operation.succeeded',
    );
    assert.equal(ws.events('s1').length, 0);
    ws.close();
  });

  it('#5 subscribes still reading the store when the client goes leave nothing behind', async () => {
    const op = await running(api, 'gone');
    const paused = api.pause(op.id);
    const ws = await openWs(api);
    ws.send({ type: 'subscribe', id: 'paused', operation: op.id });
    await paused.reached;
    for (let i = 0; i < 99; i++) ws.send({ type: 'subscribe', id: i, filter: {} });
    ws.close();
    await eventually(() => api.app.streamHub.stats().connections === 0);
    paused.release();
    await eventually(() => api.app.streamHub.stats().subscriptions === 0);
    await finish('gone');
  });

  it('#5 an SSE stream whose client left while the route read the store is not attached', async () => {
    const op = await running(api, 'sse-gone');
    const paused = api.pause(op.id);
    const sockets = new Set<Socket>();
    const onConnection = (socket: Socket) => sockets.add(socket);
    api.app.server.on('connection', onConnection);
    const sse = new SseClient(`${api.base}/v1/operations/${op.id}/events`);
    await paused.reached;
    sse.close();
    await eventually(() => [...sockets].every((socket) => socket.destroyed));
    api.app.server.off('connection', onConnection);
    paused.release();
    await turn();
    await eventually(() => api.app.streamHub.stats().connections === 0);
    assert.equal(api.app.streamHub.stats().subscriptions, 0);
    await finish('sse-gone');
  });
});

describe(onStore('#5 streams opened while the server stops'), { timeout: 60_000 }, () => {
  it('#5 an SSE stream whose route read the store while the server began to stop is closed at once', async () => {
    const api = await startApi();
    const op = await running(api, 'stopping');
    const paused = api.pause(op.id);
    const sse = new SseClient(`${api.base}/v1/operations/${op.id}/events`);
    await paused.reached;
    const closed = api.app.close();
    await eventually(() => api.app.streamHub.isClosed);
    paused.release();
    await sse.ended;
    assert.equal(sse.status, 200);
    assert.deepEqual(
      sse.messages.map((m) => [m.event, m.data]),
      [['stream.closing', '{"reason":"SHUTTING_DOWN"}']],
      'closed at once, saying why, as a stream open at shutdown',
    );
    await closed;
  });
});

/**
 * #10, as reported: the stream's snapshot read the cursor (`lastSeq`) and the operation
 * apart. Reproduced deterministically: the store pauses before it reads the operation, the
 * operation finishes meanwhile (`operation.succeeded` is in the log, durable), then the read
 * goes on. The snapshot must carry the seq of that last event, and a resume from it is 204.
 */
describe(onStore('#10 snapshot race'), { timeout: 60_000 }, () => {
  const store = STORE;
  let api: Api;
  before(async () => {
    api = await startApi();
  });

  it(`#10 an SSE snapshot's id is the seq of the last event it shows (${store}, paused read)`, async () => {
    const op = await running(api, `sse-${store}`);
    const paused = api.pause(op.id);
    const url = `${api.base}/v1/operations/${op.id}/events`;
    const sse = new SseClient(url);
    await paused.reached;
    await finish(`sse-${store}`);
    const succeeded = await terminalEvent(api, op.id);
    paused.release();
    await sse.ended;
    const snapshot = sse.messages.find((m) => m.event === 'operation.snapshot');
    assert.ok(snapshot, JSON.stringify(sse.messages));
    const shown = JSON.parse(snapshot.data) as { seq: number; operation: { status: string } };
    assert.equal(shown.operation.status, 'succeeded');
    assert.equal(snapshot.id, String(succeeded.seq), 'the snapshot id is its last event');
    assert.equal(shown.seq, succeeded.seq);
    assert.deepEqual(sse.events, [], 'nothing the snapshot showed is sent again');
    const resumed = new SseClient(url, { 'last-event-id': snapshot.id ?? '' });
    await resumed.ended;
    assert.equal(
      resumed.status,
      204,
      `a resume from the snapshot repeats: ${resumed.seqs.join(',')}`,
    );
  });

  it(`#10 a WebSocket snapshot's seq is the last event it shows (${store}, paused read)`, async () => {
    const op = await running(api, `ws-${store}`);
    const ws = await openWs(api);
    const paused = api.pause(op.id);
    ws.send({ type: 'subscribe', id: 'snap', operation: op.id });
    await paused.reached;
    await finish(`ws-${store}`);
    const succeeded = await terminalEvent(api, op.id);
    paused.release();
    const ack = await ws.next((m) => m.id === 'snap');
    assert.equal(ack.type, 'ack');
    await ws.next((m) => m.type === 'complete' && m.subscription === ack.subscription);
    const snapshot = ws.messages.find((m) => m.type === 'snapshot');
    assert.equal((snapshot?.operation as { status: string }).status, 'succeeded');
    assert.equal(snapshot?.seq, succeeded.seq);
    assert.equal(ack.cursor, succeeded.seq);
    assert.deepEqual(ws.events(ack.subscription), []);
    // Resuming from the snapshot's seq sends nothing again, and completes.
    const resumed = await ws.request({
      type: 'subscribe',
      id: 'r',
      operation: op.id,
      after: ack.cursor,
    });
    await ws.next((m) => m.type === 'complete' && m.subscription === resumed.subscription);
    assert.deepEqual(ws.events(resumed.subscription), [], 'a resume from the snapshot repeats');
    ws.close();
  });
});

/** Holds the disk flush of the SQLite store: there is none to hold on PostgreSQL. */
const durable = { timeout: 60_000, ...sqliteOnly("holds SQLite's WAL flush (fdatasync)") };

describe(onStore('#10 committed but not yet durable (SQLite, disk flush held)'), durable, () => {
  let api: Api;
  before(async () => {
    api = await startApi();
  });

  /** Finishes `name` while the disk is stalled: committed (get sees it), not yet durable. */
  async function finishUnflushed(name: string, id: string) {
    const disk = stallDisk(api.dir);
    try {
      await finish(name);
      await eventually(async () => (await api.raw.get(id))?.status === 'succeeded');
      assert.equal(
        (await api.raw.readEvents({ after: 0, operationId: id, limit: 100 })).length,
        2,
        'the flush is held: the terminal event is not readable yet',
      );
    } catch (error) {
      await disk.resume();
      throw error;
    }
    return disk;
  }

  it('#10 an SSE snapshot never shows a state before its event is in the log', async () => {
    // Warm up the route (nothing loads lazily while the disk is stalled).
    const warm = await running(api, 'warm-sse');
    const warmSse = new SseClient(`${api.base}/v1/operations/${warm.id}/events`);
    await warmSse.until(() => warmSse.messages.length > 0);
    warmSse.close();
    await finish('warm-sse');

    const op = await running(api, 'unflushed-sse');
    const disk = await finishUnflushed('unflushed-sse', op.id);
    const url = `${api.base}/v1/operations/${op.id}/events`;
    let sse: SseClient;
    try {
      const paused = api.pause(op.id); // only to know when the route reads the operation
      sse = new SseClient(url);
      await paused.reached;
      paused.release();
      await turn();
    } finally {
      await disk.resume();
    }
    await sse.ended;
    const succeeded = await terminalEvent(api, op.id);
    const snapshot = sse.messages.find((m) => m.event === 'operation.snapshot');
    const shown = JSON.parse(snapshot?.data ?? '{}') as { operation?: { status: string } };
    assert.equal(shown.operation?.status, 'succeeded');
    assert.equal(snapshot?.id, String(succeeded.seq), 'the snapshot id is its last event');
    const resumed = new SseClient(url, { 'last-event-id': snapshot?.id ?? '' });
    await resumed.ended;
    assert.equal(
      resumed.status,
      204,
      `a resume from the snapshot repeats: ${resumed.seqs.join(',')}`,
    );
  });

  it('#10 a long poll never answers (nor tags) a state before it is durable', async () => {
    const op = await running(api, 'unflushed-poll');
    const monitor = `${api.base}/v1/operations/${op.id}`;
    // Warm up the route and its conditional answer.
    const warm = await fetch(monitor, { headers: { prefer: 'wait=1', 'if-none-match': '"1"' } });
    assert.equal(warm.status, 200);
    assert.equal(warm.headers.get('etag'), '"2"');
    const disk = await finishUnflushed('unflushed-poll', op.id);
    let answered: Promise<{ status: number; etag: string | undefined; body: string }>;
    let sentWhileStalled: string | undefined;
    const path = new URL(monitor).pathname;
    try {
      const paused = api.pause(op.id); // only to know when the route reads the operation
      answered = new Promise((resolve, reject) => {
        http
          .get(
            monitor,
            { headers: { prefer: 'wait=30', 'if-none-match': '"2"' }, agent: false },
            (response) => {
              let body = '';
              response.setEncoding('utf8');
              response.on('data', (chunk: string) => (body += chunk));
              response.on('end', () =>
                resolve({
                  status: response.statusCode ?? 0,
                  etag: response.headers.etag,
                  body,
                }),
              );
            },
          )
          .on('error', reject);
      });
      const mark = api.sent.length;
      await paused.reached;
      paused.release();
      // Every callback the read queued has run: the route answered by now, or it waits.
      await turn();
      await turn();
      sentWhileStalled = api.sent.slice(mark).find((s) => s.url === path)?.etag;
    } finally {
      await disk.resume();
    }
    assert.equal(
      sentWhileStalled,
      undefined,
      `answered ETag ${sentWhileStalled} while that state was not durable (its event not in the log)`,
    );
    const response = await answered;
    assert.equal(response.status, 200);
    assert.equal(response.etag, '"3"');
    const succeeded = await terminalEvent(api, op.id);
    assert.equal(succeeded.version, 3);
  });
});

/** A JSON text nested `depth` levels deep: an object with `x` holding nested arrays. */
function nested(depth: number): string {
  return `{"type":"ping","id":"deep","x":${'['.repeat(depth - 1)}${']'.repeat(depth - 1)}}`;
}

describe(onStore('#3 WebSocket message nesting and numbers'), { timeout: 60_000 }, () => {
  let api: Api;
  before(async () => {
    api = await startApi();
  });

  it('#3 a WebSocket message nested thousands of levels deep is refused (JSON_TOO_DEEP); the connection stays open', async () => {
    const ws = await openWs(api);
    ws.socket.send(nested(5000));
    const deep = await ws.next((m) => m.type === 'error');
    assert.equal(deep.code, 'JSON_TOO_DEEP', JSON.stringify(deep));
    ws.socket.send(`{"type":"ping","id":1,"x":${'['.repeat(400_000)}${']'.repeat(400_000)}}`);
    await ws.next((m) => m.type === 'error' && m !== deep);
    assert.equal(ws.messages.filter((m) => m.code === 'JSON_TOO_DEEP').length, 2);
    // The limit is WS_MAX_JSON_DEPTH: one more level than an HTTP body (a submit wraps one).
    ws.socket.send(nested(WS_MAX_JSON_DEPTH));
    const atLimit = await ws.next((m) => m.type === 'error' && m.id === 'deep');
    assert.equal(atLimit.code, 'INVALID_MESSAGE', 'at the limit: parsed, then checked');
    ws.send({ type: 'ping', id: 'still-open' });
    await ws.next((m) => m.type === 'pong' && m.id === 'still-open');
    ws.close();
  });

  it('#3 a WebSocket message with a number out of range is refused (NUMBER_OUT_OF_RANGE); the connection stays open', async () => {
    const ws = await openWs(api);
    for (const number of ['1e400', '9223372036854775808', '-1e-400']) {
      ws.socket.send(
        `{"type":"submit","id":"n","operation":{"type":"demo.echo","input":${number}}}`,
      );
      const refused = await ws.next((m) => m.type === 'error' && m.refused !== true);
      refused.refused = true;
      assert.equal(refused.code, 'NUMBER_OUT_OF_RANGE', `${number}: ${JSON.stringify(refused)}`);
    }
    const ok = await ws.request({
      type: 'submit',
      id: 'ok',
      operation: { type: 'demo.echo', input: 9007199254740991 },
    });
    assert.equal(ok.type, 'ack');
    ws.close();
  });
});
