import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Accepted } from '../src/engine/accepted.ts';
import { demoOperations } from '../src/engine/demo.ts';
import { ApiKeys } from '../src/http/auth.ts';
import { createHttpServer } from '../src/server/http.ts';
import { eventually, onStore, startEngine } from './helpers.ts';
import { gateOperation, gates, open } from './gates.ts';

const KEY_ACME = 'acme-key-0123456789abcdef';
const KEY_BETA = 'beta-key-0123456789abcdef';

interface Monitor {
  id: string;
  type: string;
  status: string;
  version: number;
  result: unknown;
  error: { code: string; message: string } | null;
  cancelRequested: boolean;
  labels: Record<string, string>;
  links: { self: string; events: string; cancel: string };
}

describe(onStore('HTTP API over real sockets'), { timeout: 60_000 }, () => {
  let accepted: Accepted;
  let base: string;
  let close: () => Promise<void>;
  let run = 0;

  before(async () => {
    accepted = await startEngine({ operations: [...demoOperations, gateOperation] });
    const apiKeys = new ApiKeys();
    apiKeys.add({ tenant: 'acme', key: KEY_ACME });
    apiKeys.add({ tenant: 'beta', key: KEY_BETA });
    const app = createHttpServer({ accepted, logger: false, apiKeys, maxWaitSeconds: 3 });
    base = await app.listen({ port: 0, host: '127.0.0.1' });
    close = () => app.close();
  });
  after(() => close());

  /** A request as tenant acme (or `key`), JSON in and out. */
  async function call(
    method: string,
    path: string,
    options: { key?: string | null; headers?: Record<string, string>; body?: unknown } = {},
  ): Promise<{ status: number; headers: Headers; body: unknown; text: string }> {
    const headers: Record<string, string> = { ...options.headers };
    const key = options.key === undefined ? KEY_ACME : options.key;
    if (key !== null) headers.authorization = `Bearer ${key}`;
    if (options.body !== undefined) headers['content-type'] ??= 'application/json';
    const response = await fetch(`${base}${path}`, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    const text = await response.text();
    let body: unknown = null;
    if (text !== '') body = JSON.parse(text) as unknown;
    return { status: response.status, headers: response.headers, body, text };
  }

  const submit = (
    body: unknown,
    options: { key?: string; headers?: Record<string, string> } = {},
  ) => call('POST', '/v1/operations', { ...options, body });

  function problemCode(result: { status: number; headers: Headers; body: unknown }): string {
    assert.match(result.headers.get('content-type') ?? '', /^application\/problem\+json/);
    const problem = result.body as { status: number; code: string; title: string };
    assert.equal(problem.status, result.status);
    assert.equal(typeof problem.title, 'string');
    return problem.code;
  }

  const gateName = () => `g${++run}`;

  describe('authentication and tenants', () => {
    it('answers 401 without a key or with a wrong one, naming the scheme', async () => {
      const none = await call('GET', '/v1/operations', { key: null });
      assert.equal(none.status, 401);
      assert.equal(problemCode(none), 'UNAUTHENTICATED');
      assert.equal(none.headers.get('www-authenticate'), 'Bearer realm="accepted"');
      const wrong = await call('GET', '/v1/operations', { key: 'not-a-key-0123456789xyz' });
      assert.equal(wrong.status, 401);
      assert.match(wrong.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
      const before = await accepted.store.lastSeq();
      const refused = await submit({ type: 'demo.echo' }, { key: 'nope-nope-nope-nope-nope' });
      assert.equal(refused.status, 401);
      assert.equal(await accepted.store.lastSeq(), before, 'nothing stored');
    });

    it('serves probes and the OpenAPI document without a key', async () => {
      assert.equal((await call('GET', '/healthz', { key: null })).status, 200);
      assert.equal((await call('GET', '/readyz', { key: null })).status, 200);
      assert.equal((await call('GET', '/v1/openapi.json', { key: null })).status, 200);
    });

    it('keeps each tenant to its own operations: get, events, cancel, retry, delete, list', async () => {
      const mine = await submit({
        type: 'demo.sleep',
        input: { ms: 60_000 },
        labels: { t: 'iso' },
      });
      const { id } = mine.body as Monitor;
      const asBeta = { key: KEY_BETA };
      for (const [method, path] of [
        ['GET', `/v1/operations/${id}`],
        ['GET', `/v1/operations/${id}/events`],
        ['POST', `/v1/operations/${id}:cancel`],
        ['POST', `/v1/operations/${id}:retry`],
        ['DELETE', `/v1/operations/${id}`],
      ] as const) {
        const result = await call(method, path, asBeta);
        assert.equal(result.status, 404, `${method} ${path} as another tenant`);
        assert.equal(problemCode(result), 'OPERATION_NOT_FOUND');
      }
      const betaList = (await call('GET', '/v1/operations?label=t:iso', asBeta)).body as {
        items: Monitor[];
      };
      assert.equal(betaList.items.length, 0);
      const acmeList = (await call('GET', '/v1/operations?label=t:iso')).body as {
        items: Monitor[];
      };
      assert.deepEqual(
        acmeList.items.map((m) => m.id),
        [id],
      );
      // Still running for its owner: beta's cancel changed nothing.
      const again = (await call('GET', `/v1/operations/${id}`)).body as Monitor;
      assert.equal(again.cancelRequested, false);
      assert.equal((await call('POST', `/v1/operations/${id}:cancel`)).status < 300, true);
    });
  });

  describe('submit and Prefer', () => {
    it('answers 202 with Location, Operation-Location, Retry-After, ETag and Vary', async () => {
      const result = await submit({ type: 'demo.echo', input: { a: 1 } });
      assert.equal(result.status, 202);
      const monitor = result.body as Monitor;
      assert.equal(result.headers.get('location'), `${base}/v1/operations/${monitor.id}`);
      assert.equal(result.headers.get('operation-location'), `${base}/v1/operations/${monitor.id}`);
      assert.equal(result.headers.get('retry-after'), '1');
      assert.equal(result.headers.get('etag'), `"${monitor.version}"`);
      assert.equal(result.headers.get('vary'), 'Prefer');
      assert.equal(result.headers.get('preference-applied'), null);
    });

    it('wait=N answers 200 with the final monitor when the operation ends in time', async () => {
      const result = await submit(
        { type: 'demo.echo', input: { b: 2 } },
        { headers: { prefer: 'wait=3' } },
      );
      assert.equal(result.status, 200);
      const monitor = result.body as Monitor;
      assert.equal(monitor.status, 'succeeded');
      assert.deepEqual(monitor.result, { b: 2 });
      assert.equal(result.headers.get('preference-applied'), 'wait=3');
      assert.equal(result.headers.get('operation-location'), null, 'final: nothing to poll');
      assert.equal(result.headers.get('content-location'), `/v1/operations/${monitor.id}`);
      assert.equal(result.headers.get('retry-after'), null);

      const failed = await submit(
        { type: 'demo.fail', input: { message: 'no disk', code: 'DISK_FULL', permanent: true } },
        { headers: { prefer: 'wait=3' } },
      );
      assert.equal(failed.status, 200);
      assert.deepEqual((failed.body as Monitor).error, { code: 'DISK_FULL', message: 'no disk' });
    });

    it('wait=N answers 202 when the operation is still running after N seconds (capped)', async () => {
      const name = gateName();
      const result = await submit(
        { type: 'test.gate', input: { name } },
        { headers: { prefer: 'wait=100' } },
      );
      assert.equal(result.status, 202);
      assert.equal(result.headers.get('preference-applied'), 'wait=3', 'capped by the server');
      assert.ok(result.headers.get('operation-location'));
      await open(name);
    });

    it('respond-async always answers 202; return=minimal drops the body', async () => {
      const async = await submit({ type: 'demo.echo' }, { headers: { prefer: 'respond-async' } });
      assert.equal(async.status, 202);
      assert.equal(async.headers.get('preference-applied'), 'respond-async');
      const minimal = await submit(
        { type: 'demo.echo' },
        { headers: { prefer: 'return=minimal, wait=3' } },
      );
      assert.equal(minimal.status, 200);
      assert.equal(minimal.text, '');
      assert.equal(minimal.headers.get('preference-applied'), 'wait=3, return=minimal');
      assert.ok(minimal.headers.get('etag'));
      const full = await submit(
        { type: 'demo.echo' },
        { headers: { prefer: 'RETURN=representation; x=1, wait=abc' } },
      );
      assert.equal(full.status, 202, 'an invalid wait is ignored');
      assert.equal(full.headers.get('preference-applied'), 'return=representation');
      assert.equal((full.body as Monitor).status, 'queued');
    });
  });

  describe('the status monitor and long polling', () => {
    it('answers 304 to If-None-Match while unchanged', async () => {
      const { body } = await submit({ type: 'demo.sleep', input: { ms: 60_000 } });
      const { id } = body as Monitor;
      // Running (version 2), which it stays for a minute: two reads see the same version.
      await accepted.wait(id, { tenant: 'acme', afterVersion: 1 });
      const first = await call('GET', `/v1/operations/${id}`);
      const etag = first.headers.get('etag') ?? '';
      const same = await call('GET', `/v1/operations/${id}`, {
        headers: { 'if-none-match': etag },
      });
      assert.equal(same.status, 304);
      assert.equal(same.headers.get('etag'), etag);
      assert.equal(same.headers.get('vary'), 'Prefer');
      assert.equal(same.headers.get('retry-after'), '1');
      await call('POST', `/v1/operations/${id}:cancel`);
    });

    it('holds a long poll until the version moves, then answers the new state', async () => {
      const name = gateName();
      const { body } = await submit({ type: 'test.gate', input: { name } });
      const { id } = body as Monitor;
      await eventually(() => gates.has(name));
      const running = await call('GET', `/v1/operations/${id}`);
      assert.equal((running.body as Monitor).status, 'running');
      let settled = false;
      const poll = call('GET', `/v1/operations/${id}`, {
        headers: { prefer: 'wait=30', 'if-none-match': running.headers.get('etag') ?? '' },
      }).finally(() => {
        settled = true;
      });
      await new Promise((resolve) => setTimeout(resolve, 150));
      assert.equal(settled, false, 'the long poll is held while nothing changes');
      await open(name);
      const answer = await poll;
      assert.equal(answer.status, 200);
      assert.equal((answer.body as Monitor).status, 'succeeded');
      assert.equal(answer.headers.get('preference-applied'), 'wait=3');
    });

    it('answers 304 when the wait ends with nothing new, and at once when the client is behind', async () => {
      const name = gateName();
      const { body } = await submit({ type: 'test.gate', input: { name } });
      const { id } = body as Monitor;
      await eventually(() => gates.has(name));
      const current = await call('GET', `/v1/operations/${id}`);
      const version = (current.body as Monitor).version;
      const timedOut = await call('GET', `/v1/operations/${id}?wait=1`, {
        headers: { 'if-none-match': `"${version}"` },
      });
      assert.equal(timedOut.status, 304);
      assert.equal(timedOut.headers.get('preference-applied'), 'wait=1');
      const behind = await call('GET', `/v1/operations/${id}?wait=30`, {
        headers: { 'if-none-match': '"1"' },
      });
      assert.equal(behind.status, 200, 'an older version gets the current state at once');
      assert.equal((behind.body as Monitor).version, version);
      await open(name);
      const done = await call('GET', `/v1/operations/${id}`, {
        headers: { prefer: 'wait=30', 'if-none-match': `"${version}"` },
      });
      assert.equal((done.body as Monitor).status, 'succeeded');
      const terminal = await call('GET', `/v1/operations/${id}?wait=30`);
      assert.equal(terminal.status, 200, 'a finished operation answers at once');
    });

    it('refuses a malformed ?wait with 400 INVALID_QUERY', async () => {
      const { body } = await submit({ type: 'demo.echo' });
      const result = await call('GET', `/v1/operations/${(body as Monitor).id}?wait=soon`);
      assert.equal(result.status, 400);
      assert.equal(problemCode(result), 'INVALID_QUERY');
      assert.equal((result.body as { fields: { field: string }[] }).fields[0]?.field, 'wait');
    });
  });

  describe('Idempotency-Key', () => {
    it('replays the same operation for the same key and body, in either spelling', async () => {
      const key = `k-${Date.now()}-a`;
      const first = await submit(
        { type: 'demo.echo', input: { x: 1, y: [1, 2] }, labels: { a: '1' } },
        { headers: { 'idempotency-key': `"${key}"` } },
      );
      assert.equal(first.status, 202);
      assert.equal(first.headers.get('idempotent-replayed'), null);
      // The same JSON with its members in another order is the same request.
      const second = await submit(
        { labels: { a: '1' }, input: { y: [1, 2], x: 1 }, type: 'demo.echo' },
        { headers: { 'idempotency-key': key } },
      );
      assert.equal(second.status, 202);
      assert.equal(second.headers.get('idempotent-replayed'), 'true');
      assert.equal((second.body as Monitor).id, (first.body as Monitor).id);
      assert.ok(second.headers.get('operation-location'));
    });

    it('refuses the same key with another body (422) and keeps keys per tenant', async () => {
      const key = `k-${Date.now()}-b`;
      const first = await submit(
        { type: 'demo.echo', input: 1 },
        { headers: { 'idempotency-key': key, prefer: 'wait=3' } },
      );
      const before = await accepted.store.lastSeq();
      const other = await submit(
        { type: 'demo.echo', input: 2 },
        { headers: { 'idempotency-key': key } },
      );
      assert.equal(other.status, 422);
      assert.equal(problemCode(other), 'IDEMPOTENCY_KEY_REUSED');
      assert.equal(await accepted.store.lastSeq(), before, 'nothing stored');
      const beta = await submit(
        { type: 'demo.echo', input: 2 },
        { key: KEY_BETA, headers: { 'idempotency-key': key } },
      );
      assert.equal(beta.status, 202);
      assert.notEqual((beta.body as Monitor).id, (first.body as Monitor).id);
    });

    it('creates one operation for many concurrent duplicates', async () => {
      const key = `k-${Date.now()}-c`;
      const label = `dup-${Date.now()}`;
      const results = await Promise.all(
        Array.from({ length: 24 }, () =>
          submit(
            { type: 'demo.echo', input: { n: 1 }, labels: { dup: label } },
            { headers: { 'idempotency-key': key } },
          ),
        ),
      );
      const ids = new Set(results.map((r) => (r.body as Monitor).id));
      assert.deepEqual(
        results.map((r) => r.status),
        results.map(() => 202),
      );
      assert.equal(ids.size, 1);
      assert.equal(results.filter((r) => r.headers.get('idempotent-replayed') === null).length, 1);
      const listed = (await call('GET', `/v1/operations?label=dup:${label}`)).body as {
        items: Monitor[];
      };
      assert.equal(listed.items.length, 1);
    });

    it('answers 409 while the first request is held, then replays its 200', async () => {
      const key = `k-${Date.now()}-d`;
      const name = gateName();
      const body = { type: 'test.gate', input: { name } };
      const held = submit(body, { headers: { 'idempotency-key': key, prefer: 'wait=30' } });
      await eventually(() => gates.has(name));
      const during = await submit(body, { headers: { 'idempotency-key': key } });
      assert.equal(during.status, 409);
      assert.equal(problemCode(during), 'IDEMPOTENCY_KEY_IN_FLIGHT');
      assert.ok(Number(during.headers.get('retry-after')) >= 1);
      await open(name);
      const first = await held;
      assert.equal(first.status, 200);
      const replay = await submit(body, { headers: { 'idempotency-key': key } });
      assert.equal(replay.status, 200, 'the original answer was a 200');
      assert.equal(replay.headers.get('idempotent-replayed'), 'true');
      assert.equal((replay.body as Monitor).status, 'succeeded');
    });

    it('refuses a malformed key with 400 INVALID_HEADER', async () => {
      const long = await submit(
        { type: 'demo.echo' },
        { headers: { 'idempotency-key': 'x'.repeat(300) } },
      );
      assert.equal(long.status, 400);
      assert.equal(problemCode(long), 'INVALID_HEADER');
      const badQuote = await submit(
        { type: 'demo.echo' },
        { headers: { 'idempotency-key': '"abc' } },
      );
      assert.equal(badQuote.status, 400);
    });
  });

  describe('cancel, retry, delete and If-Match', () => {
    it('cancels queued at once (200), running on request (202, then canceled), refuses terminal (409)', async () => {
      const later = new Date(Date.now() + 3_600_000).toISOString();
      const queued = (await submit({ type: 'demo.echo', runAt: later })).body as Monitor;
      const canceled = await call('POST', `/v1/operations/${queued.id}:cancel`);
      assert.equal(canceled.status, 200);
      assert.equal((canceled.body as Monitor).status, 'canceled');
      assert.equal((canceled.body as Monitor).error?.code, 'CANCELED');

      const name = gateName();
      const running = (await submit({ type: 'test.gate', input: { name } })).body as Monitor;
      await eventually(() => gates.has(name));
      const requested = await call('POST', `/v1/operations/${running.id}:cancel`);
      assert.equal(requested.status, 202);
      assert.equal((requested.body as Monitor).cancelRequested, true);
      assert.ok(requested.headers.get('operation-location'));
      const final = await call('GET', `/v1/operations/${running.id}`, {
        headers: { prefer: 'wait=30', 'if-none-match': requested.headers.get('etag') ?? '' },
      });
      assert.equal((final.body as Monitor).status, 'canceled', 'the handler’s signal aborted it');

      const terminal = await call('POST', `/v1/operations/${running.id}:cancel`);
      assert.equal(terminal.status, 409);
      assert.equal(problemCode(terminal), 'ALREADY_TERMINAL');
    });

    it('retries failed operations (202) and refuses others (409)', async () => {
      const failed = await submit(
        { type: 'demo.fail', input: { message: 'x', permanent: true } },
        { headers: { prefer: 'wait=3' } },
      );
      const { id } = failed.body as Monitor;
      assert.equal((failed.body as Monitor).status, 'failed');
      const retried = await call('POST', `/v1/operations/${id}:retry`);
      assert.equal(retried.status, 202);
      assert.equal((retried.body as Monitor).status, 'queued');
      assert.equal(retried.headers.get('location'), `${base}/v1/operations/${id}`);
      const done = await submit({ type: 'demo.echo' }, { headers: { prefer: 'wait=3' } });
      const refused = await call('POST', `/v1/operations/${(done.body as Monitor).id}:retry`);
      assert.equal(refused.status, 409);
      assert.equal(problemCode(refused), 'ILLEGAL_TRANSITION');
    });

    it('deletes finished operations only (204, then 404)', async () => {
      const name = gateName();
      const running = (await submit({ type: 'test.gate', input: { name } })).body as Monitor;
      await eventually(() => gates.has(name));
      const refused = await call('DELETE', `/v1/operations/${running.id}`);
      assert.equal(refused.status, 409);
      await open(name);
      await accepted.wait(running.id, { tenant: 'acme' });
      const deleted = await call('DELETE', `/v1/operations/${running.id}`);
      assert.equal(deleted.status, 204);
      assert.equal((await call('GET', `/v1/operations/${running.id}`)).status, 404);
    });

    it('honours If-Match on cancel, retry and delete: 412 on a stale ETag, changing nothing', async () => {
      const later = new Date(Date.now() + 3_600_000).toISOString();
      const op = (await submit({ type: 'demo.echo', runAt: later })).body as Monitor;
      const path = `/v1/operations/${op.id}`;
      const stale = await call('POST', `${path}:cancel`, { headers: { 'if-match': '"999"' } });
      assert.equal(stale.status, 412);
      assert.equal(problemCode(stale), 'PRECONDITION_FAILED');
      assert.equal(((await call('GET', path)).body as Monitor).status, 'queued');
      const weak = await call('POST', `${path}:cancel`, {
        headers: { 'if-match': `W/"${op.version}"` },
      });
      assert.equal(weak.status, 412, 'If-Match compares strongly');
      const ok = await call('POST', `${path}:cancel`, {
        headers: { 'if-match': `"${op.version}"` },
      });
      assert.equal(ok.status, 200);
      const canceledTag = ok.headers.get('etag') ?? '';
      const staleRetry = await call('POST', `${path}:retry`, {
        headers: { 'if-match': `"${op.version}"` },
      });
      assert.equal(staleRetry.status, 412);
      const retry = await call('POST', `${path}:retry`, {
        headers: { 'if-match': `"1", ${canceledTag}` },
      });
      assert.equal(retry.status, 202);
      const retriedTag = retry.headers.get('etag') ?? '';
      await call('POST', `${path}:cancel`, { headers: { 'if-match': '*' } });
      const staleDelete = await call('DELETE', path, { headers: { 'if-match': retriedTag } });
      assert.equal(staleDelete.status, 412);
      assert.equal((await call('GET', path)).status, 200, 'still there');
      const current = (await call('GET', path)).headers.get('etag') ?? '';
      assert.equal((await call('DELETE', path, { headers: { 'if-match': current } })).status, 204);
    });

    it('answers 405 with Allow for a wrong method and 404 for an unknown action', async () => {
      const op = (await submit({ type: 'demo.echo' })).body as Monitor;
      const post = await call('POST', `/v1/operations/${op.id}`);
      assert.equal(post.status, 405);
      assert.equal(problemCode(post), 'METHOD_NOT_ALLOWED');
      assert.equal(post.headers.get('allow'), 'GET, HEAD, DELETE');
      const put = await call('PUT', '/v1/operations', { body: {} });
      assert.equal(put.status, 405);
      assert.equal(put.headers.get('allow'), 'GET, HEAD, POST');
      const action = await call('POST', `/v1/operations/${op.id}:explode`);
      assert.equal(action.status, 404);
      assert.equal(problemCode(action), 'ROUTE_NOT_FOUND');
    });
  });

  describe('list and events', () => {
    it('lists newest first with filters, and cursor pages stay stable under inserts', async () => {
      const batch = `b${Date.now()}`;
      const ids: string[] = [];
      const later = new Date(Date.now() + 3_600_000).toISOString();
      for (let i = 0; i < 5; i++) {
        const body = await submit({
          type: i % 2 ? 'demo.sleep' : 'demo.echo',
          input: i % 2 ? { ms: 1 } : i,
          runAt: later,
          labels: { batch, parity: String(i % 2) },
        });
        ids.push((body.body as Monitor).id);
      }
      const seen: string[] = [];
      let path = `/v1/operations?label=batch:${batch}&limit=2`;
      let page = 0;
      for (;;) {
        const result = await call('GET', path);
        assert.equal(result.status, 200);
        const body = result.body as { items: Monitor[]; nextCursor: string | null };
        seen.push(...body.items.map((m) => m.id));
        if (page++ === 0) {
          // An insert between pages lands before the first page, never inside later ones.
          await submit({ type: 'demo.echo', labels: { batch }, runAt: later });
        }
        if (body.nextCursor === null) {
          assert.equal(result.headers.get('link'), null);
          break;
        }
        assert.match(result.headers.get('link') ?? '', /rel="next"/);
        path = `/v1/operations?label=batch:${batch}&limit=2&cursor=${encodeURIComponent(body.nextCursor)}`;
      }
      assert.deepEqual(seen, [...ids].reverse());
      const odd = (await call('GET', `/v1/operations?label=batch:${batch}&label=parity:1`))
        .body as { items: Monitor[] };
      assert.deepEqual(
        odd.items.map((m) => m.id),
        [ids[3], ids[1]],
      );
      const sleeps = (
        await call(
          'GET',
          `/v1/operations?label=batch:${batch}&type=demo.sleep&status=queued,running`,
        )
      ).body as { items: Monitor[] };
      assert.equal(sleeps.items.length, 2);
      const none = (
        await call('GET', `/v1/operations?label=batch:${batch}&status=succeeded&status=failed`)
      ).body as { items: Monitor[] };
      assert.equal(none.items.length, 0);
    });

    it('refuses bad list parameters with 400 INVALID_QUERY naming each', async () => {
      const result = await call('GET', '/v1/operations?status=sleeping&limit=0&label=nocolon');
      assert.equal(result.status, 400);
      assert.equal(problemCode(result), 'INVALID_QUERY');
      const fields = (result.body as { fields: { field: string }[] }).fields.map((f) => f.field);
      assert.deepEqual([...new Set(fields)].sort(), ['label', 'limit', 'status']);
      const cursor = await call('GET', '/v1/operations?cursor=forged');
      assert.equal(cursor.status, 400);
    });

    it('pages an operation’s events with ?after', async () => {
      const done = await submit({ type: 'demo.echo' }, { headers: { prefer: 'wait=3' } });
      const { id } = done.body as Monitor;
      const all = (await call('GET', `/v1/operations/${id}/events`)).body as {
        events: { seq: number; type: string }[];
        nextAfter: number;
      };
      assert.deepEqual(
        all.events.map((e) => e.type),
        ['operation.queued', 'operation.started', 'operation.succeeded'],
      );
      const rest = (
        await call('GET', `/v1/operations/${id}/events?after=${all.events[0]?.seq}&limit=1`)
      ).body as { events: { type: string }[]; nextAfter: number };
      assert.deepEqual(
        rest.events.map((e) => e.type),
        ['operation.started'],
      );
      const bad = await call('GET', `/v1/operations/${id}/events?after=-1`);
      assert.equal(bad.status, 400);
    });
  });
});

describe(onStore('HTTP API: errors that leak nothing'), () => {
  it('turns an unexpected failure into a 500 problem without internals', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const broken: Accepted = new Proxy(accepted, {
      get(target, property, receiver) {
        if (property === 'get' || property === 'snapshot') {
          return () => Promise.reject(new Error('secret: /var/lib/db password=hunter2'));
        }
        return Reflect.get(target, property, receiver) as unknown;
      },
    });
    const app = createHttpServer({ accepted: broken, logger: false });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const response = await fetch(`${base}/v1/operations/op_000000000000000000000000000000`);
      assert.equal(response.status, 500);
      const text = await response.text();
      assert.doesNotMatch(text, /secret|hunter2|password|\/var\/lib/);
      const problem = JSON.parse(text) as { code: string; status: number };
      assert.equal(problem.code, 'INTERNAL');
      assert.equal(problem.status, 500);
    } finally {
      await app.close();
    }
  });

  it('serves every request as tenant default when no keys are configured', async () => {
    const accepted = await startEngine({ operations: demoOperations });
    const app = createHttpServer({ accepted, logger: false });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const response = await fetch(`${base}/v1/operations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'demo.echo' }),
      });
      assert.equal(response.status, 202);
      const { id } = (await response.json()) as { id: string };
      assert.equal((await accepted.get(id, { tenant: 'default' }))?.id, id);
    } finally {
      await app.close();
    }
  });
});
