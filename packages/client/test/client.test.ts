// @accepted/client against a real `accepted serve --demo` child process, with API keys, often
// through a real node:http proxy (test/proxy.ts) that counts and shapes the traffic.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import {
  AbortError,
  NetworkError,
  OperationFailedError,
  ProblemError,
  TimeoutError,
  createClient,
  type ClientOptions,
  type OperationEvent,
  type StreamEvent,
  type Via,
} from '@accepted/client';
import { generateApiKey } from '../../accepted/src/http/auth.ts';
import { eventually, startServer, tempDir, type Server } from '../../accepted/test/helpers.ts';
import { startProxy, type Proxy } from './proxy.ts';

const VIAS: Via[] = ['sse', 'ws', 'longpoll', 'poll'];
const apiKey = generateApiKey().key;
let server: Server;
let proxy: Proxy;

/** A client of the proxy (or of `baseUrl`), with fast retries. */
function client(overrides: Partial<ClientOptions> = {}) {
  return createClient({
    baseUrl: proxy.url,
    apiKey,
    WebSocket,
    retry: { baseMs: 20, maxMs: 200 },
    ...overrides,
  });
}

/** A label value unique to one test, to find its operations. */
const batch = () => `b${Math.random().toString(36).slice(2, 10)}`;

before(async () => {
  server = await startServer(tempDir('accepted-client-'), [], {
    ACCEPTED_API_KEYS: `acme:${apiKey}`,
  });
  proxy = await startProxy(server.url);
});

after(async () => {
  await proxy.close();
  server.child.kill('SIGTERM');
  await server.exited;
});

describe('waiting', () => {
  it('every via reaches the same final operation', async () => {
    const accepted = client();
    const finals = [];
    for (const via of VIAS) {
      const handle = await accepted.submit('demo.progress', { steps: 3, ms: 60 });
      assert.equal(handle.operation?.status, 'queued');
      const final = await handle.wait({ via, timeoutMs: 20_000 });
      assert.equal(final.id, handle.id);
      finals.push({ via, status: final.status, result: final.result, progress: final.progress });
    }
    for (const final of finals) {
      assert.deepEqual(final, {
        via: final.via,
        status: 'succeeded',
        result: { steps: 3 },
        progress: { fraction: 1, message: 'step 3 of 3' },
      });
    }
  });

  it('run() gives the result, and a typed OperationFailedError for a failure', async () => {
    const accepted = client();
    for (const via of VIAS) {
      assert.deepEqual(await accepted.run('demo.echo', { via, n: 1 }, { via }), { via, n: 1 });
      await assert.rejects(
        accepted.run(
          'demo.fail',
          { message: 'no paper', code: 'NO_PAPER', permanent: true },
          { via },
        ),
        (error: unknown) => {
          assert.ok(error instanceof OperationFailedError);
          assert.equal(error.code, 'NO_PAPER');
          assert.equal(error.message, 'no paper');
          assert.equal(error.operation.status, 'failed');
          return true;
        },
      );
    }
  });

  it('a wait that takes too long rejects with TimeoutError', async () => {
    const handle = await client().submit('demo.sleep', { ms: 60_000 });
    for (const via of VIAS) {
      await assert.rejects(handle.wait({ via, timeoutMs: 300 }), TimeoutError);
    }
    await handle.cancel();
  });

  it("via: 'ws' takes the global WebSocket (Node.js 22+), or says what to pass", async () => {
    const handle = await client({ WebSocket: undefined }).submit('demo.sleep', { ms: 200 });
    const waiting = handle.wait({ via: 'ws', timeoutMs: 20_000 });
    if (typeof globalThis.WebSocket === 'function') {
      assert.equal((await waiting).status, 'succeeded');
    } else {
      // Node.js 20 has no global WebSocket.
      await assert.rejects(waiting, (error: unknown) => {
        assert.ok(error instanceof TypeError);
        assert.match(error.message, /no global WebSocket \(Node\.js before 22\).*'ws'/);
        return true;
      });
    }
  });

  it('an aborted wait stops network activity at once', async () => {
    const accepted = client();
    const handle = await accepted.submit('demo.sleep', { ms: 60_000 });
    for (const via of VIAS) {
      const controller = new AbortController();
      const before = proxy.seen.length;
      const waiting = handle.wait({ via, signal: controller.signal, intervalMs: 50 });
      // Until the wait has a request (or WebSocket) open at the proxy.
      await eventually(() => proxy.open > 0 && proxy.seen.length > before);
      controller.abort(new Error('changed my mind'));
      await assert.rejects(waiting, (error: unknown) => {
        assert.ok(error instanceof AbortError, String(error));
        assert.equal(error.code, 'ABORTED');
        assert.equal((error.cause as Error).message, 'changed my mind');
        return true;
      });
      // The connection is closed, and nothing more is sent: not even a poll or a reconnect.
      await eventually(() => proxy.open === 0);
      const count = proxy.seen.length;
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(proxy.seen.length, count, `${via}: no request after the abort`);
      assert.equal(proxy.open, 0);
    }
    // A signal aborted beforehand sends nothing at all.
    const count = proxy.seen.length;
    await assert.rejects(handle.wait({ signal: AbortSignal.abort() }), AbortError);
    assert.equal(proxy.seen.length, count);
    await handle.cancel();
  });
});

describe('safe retries', () => {
  it('retries a submit answered 503 + Retry-After twice, creating exactly one operation', async () => {
    const label = batch();
    const submits: { key: string | undefined; at: number }[] = [];
    proxy.intercept = (req, res) => {
      if (req.method !== 'POST' || req.url !== '/v1/operations') return false;
      const key = req.headers['idempotency-key'];
      submits.push({ key: Array.isArray(key) ? key[0] : key, at: Date.now() });
      if (submits.length > 2) return false;
      // Seconds the first time, an HTTP date (now) the second.
      const retryAfter = submits.length === 1 ? '1' : new Date().toUTCString();
      res.writeHead(503, {
        'content-type': 'application/problem+json',
        'retry-after': retryAfter,
      });
      res.end(JSON.stringify({ status: 503, code: 'SHUTTING_DOWN', title: 'Stopping' }));
      return true;
    };
    try {
      const handle = await client().submit('demo.echo', { hello: 1 }, { labels: { label } });
      assert.equal(submits.length, 3);
      assert.ok(submits[0]!.key, 'every submit has an Idempotency-Key');
      assert.deepEqual(
        submits.map((submit) => submit.key),
        [submits[0]!.key, submits[0]!.key, submits[0]!.key],
        'the same key on every attempt',
      );
      assert.ok(submits[1]!.at - submits[0]!.at >= 950, 'Retry-After: 1 was honoured');
      const listed = [];
      for await (const page of client().list({ labels: { label } })) listed.push(...page.items);
      assert.deepEqual(
        listed.map((operation) => operation.id),
        [handle.id],
      );
    } finally {
      proxy.intercept = null;
    }
  });

  it('a lost answer to a submit is sent again and replayed, not run twice', async () => {
    const label = batch();
    let lost = 0;
    // The first submit reaches the server, but its answer never reaches the client.
    proxy.cut = (req) => {
      if (req.method !== 'POST' || req.url !== '/v1/operations' || lost > 0) return false;
      lost += 1;
      return true;
    };
    try {
      const result = await client().run('demo.echo', { once: true }, { labels: { label } });
      assert.deepEqual(result, { once: true });
      assert.equal(lost, 1);
      const listed = [];
      for await (const page of client().list({ labels: { label } })) listed.push(...page.items);
      assert.equal(listed.length, 1);
    } finally {
      proxy.cut = null;
    }
  });

  it('does not retry what cannot succeed, and types the problem', async () => {
    const count = proxy.seen.length;
    await assert.rejects(client().get('op_000000000000000000000000000000'), (error: unknown) => {
      assert.ok(error instanceof ProblemError);
      assert.equal(error.status, 404);
      assert.equal(error.code, 'OPERATION_NOT_FOUND');
      assert.equal(error.problem.status, 404);
      return true;
    });
    assert.equal(proxy.seen.length, count + 1, 'a 404 is not retried');
    await assert.rejects(
      client({ apiKey: 'acc_not-a-key-of-this-server-000000' }).get('op_x'),
      (error: unknown) => error instanceof ProblemError && error.code === 'UNAUTHENTICATED',
    );
    await assert.rejects(
      client({ baseUrl: 'http://127.0.0.1:9', retry: { retries: 1, baseMs: 1 } }).get('op_x'),
      NetworkError,
    );
  });
});

describe('map', () => {
  it('never exceeds its concurrency, keeps the order, and collects errors per item', async () => {
    const accepted = client();
    const items = Array.from({ length: 12 }, (_, i) => i);
    let active = 0;
    let maxActive = 0;
    proxy.resetMax();
    const outcomes = await accepted.map(
      items,
      async (i) => {
        active += 1;
        maxActive = Math.max(maxActive, active);
        try {
          if (i === 5) {
            return await accepted.run('demo.fail', { message: 'five', permanent: true });
          }
          return await accepted.run('demo.sleep', { ms: 20 + 10 * i });
        } finally {
          active -= 1;
        }
      },
      { concurrency: 3 },
    );
    assert.equal(maxActive, 3);
    assert.ok(proxy.maxOpen <= 3, `at most 3 requests open at the proxy, saw ${proxy.maxOpen}`);
    assert.equal(outcomes.length, items.length);
    for (const [i, outcome] of outcomes.entries()) {
      if (i === 5) {
        assert.equal(outcome.status, 'rejected');
        assert.ok(outcome.reason instanceof OperationFailedError);
        assert.equal(outcome.reason.code, 'DEMO_FAILURE');
      } else {
        assert.deepEqual(outcome, { status: 'fulfilled', value: { sleptMs: 20 + 10 * i } });
      }
    }
  });

  it('rejects the items not started once its signal aborts', async () => {
    const controller = new AbortController();
    const outcomes = await client().map(
      [1, 2, 3, 4],
      (n) => {
        if (n === 2) controller.abort();
        return n * 10;
      },
      { concurrency: 1, signal: controller.signal },
    );
    assert.deepEqual(
      outcomes.map((outcome) => outcome.status),
      ['fulfilled', 'fulfilled', 'rejected', 'rejected'],
    );
  });
});

describe('events', () => {
  it('resume across a forced reconnect without gaps or repeats', async () => {
    const accepted = client();
    const handle = await accepted.submit('demo.progress', { steps: 6, ms: 80 });
    let cuts = 0;
    // Cut the first stream of this operation once it has carried a progress event.
    proxy.cut = (req, chunk) => {
      if (cuts > 0 || !req.url.startsWith(`/v1/operations/${handle.id}/events`)) return false;
      if (!chunk.toString().includes('operation.progress')) return false;
      cuts += 1;
      return true;
    };
    const received: StreamEvent[] = [];
    try {
      for await (const event of handle.events()) received.push(event);
    } finally {
      proxy.cut = null;
    }
    assert.equal(cuts, 1);
    const streams = proxy.seen.filter((r) =>
      r.url.startsWith(`/v1/operations/${handle.id}/events`),
    );
    assert.equal(streams.length, 2, 'one reconnect');
    assert.equal(streams[0]!.headers['last-event-id'], undefined);
    assert.ok(Number(streams[1]!.headers['last-event-id']) > 0, 'resumed with Last-Event-ID');

    const [snapshot, ...rest] = received;
    assert.equal(snapshot?.type, 'operation.snapshot');
    // Exactly the log's events after the snapshot, in order, each once.
    const page = (await (
      await fetch(`${server.url}/v1/operations/${handle.id}/events?after=${snapshot.seq}`, {
        headers: { authorization: `Bearer ${apiKey}` },
      })
    ).json()) as { events: OperationEvent[] };
    assert.deepEqual(
      rest.map((event) => event.seq),
      page.events.map((event) => event.seq),
    );
    assert.deepEqual(rest, page.events);
    assert.equal(rest.at(-1)?.type, 'operation.succeeded');
  });

  it('resume from a cursor, and end at once for a finished operation', async () => {
    const accepted = client();
    const handle = await accepted.submit('demo.echo', 'hi');
    await handle.wait();
    const all: StreamEvent[] = [];
    for await (const event of handle.events({ after: 0 })) all.push(event);
    assert.deepEqual(
      all.map((event) => event.type),
      ['operation.queued', 'operation.started', 'operation.succeeded'],
    );
    const last = all.at(-1)!.seq;
    const none: StreamEvent[] = [];
    for await (const event of handle.events({ after: last })) none.push(event);
    assert.deepEqual(none, [], 'a 204 ends the stream');
  });
});

describe('operations', () => {
  it('cancel, retry, get and list a page at a time', async () => {
    const accepted = client();
    const label = batch();
    const sleeping = await accepted.submit('demo.sleep', { ms: 60_000 }, { labels: { label } });
    await sleeping.cancel();
    const canceled = await sleeping.wait();
    assert.equal(canceled.status, 'canceled');
    await assert.rejects(sleeping.result(), (error: unknown) => {
      assert.ok(error instanceof OperationFailedError);
      assert.equal(error.code, 'CANCELED');
      return true;
    });
    const again = await accepted.retry(sleeping.id);
    assert.equal(again.status, 'queued');
    await accepted.cancel(sleeping.id);
    assert.equal((await accepted.operation(sleeping.id).wait()).status, 'canceled');

    for (let i = 0; i < 4; i++) await accepted.submit('demo.echo', i, { labels: { label } });
    const pages = [];
    for await (const page of accepted.list({ labels: { label }, limit: 2 })) pages.push(page);
    assert.deepEqual(
      pages.map((page) => page.items.length),
      [2, 2, 1],
    );
    const statuses = [];
    for await (const page of accepted.list({ labels: { label }, status: ['canceled'] })) {
      statuses.push(...page.items.map((operation) => operation.status));
    }
    assert.deepEqual(statuses, ['canceled']);
    assert.equal((await accepted.get(sleeping.id)).id, sleeping.id);
  });

  it('mints stream tokens that read the events without the API key', async () => {
    const handle = await client().submit('demo.progress', { steps: 2, ms: 20 });
    const { token, operation } = await client().streamToken({ operation: handle.id });
    assert.equal(operation, handle.id);
    const page = createClient({ baseUrl: proxy.url, accessToken: token });
    const types = [];
    for await (const event of page.operation(handle.id).events()) types.push(event.type);
    assert.equal(types.at(-1), 'operation.succeeded');
  });
});
