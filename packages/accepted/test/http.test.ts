import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Accepted } from '../src/engine/accepted.ts';
import { demoOperations } from '../src/engine/demo.ts';
import { createHttpServer } from '../src/server/http.ts';
import { onStore, startEngine, STORE } from './helpers.ts';

const SUITE = onStore('HTTP: submit and the status monitor over a real socket');

describe(SUITE, { timeout: 30_000 }, () => {
  let accepted: Accepted;
  let base: string;
  let close: () => Promise<void>;

  before(async () => {
    accepted = await startEngine({ operations: demoOperations, maxInputBytes: 64 * 1024 });
    const app = createHttpServer({ accepted, logger: false, bodyLimit: 64 * 1024 });
    base = await app.listen({ port: 0, host: '127.0.0.1' });
    close = () => app.close();
  });
  after(() => close());

  const post = (
    body: string,
    headers: Record<string, string> = { 'content-type': 'application/json' },
  ) => fetch(`${base}/v1/operations`, { method: 'POST', body, headers });

  async function problem(response: Response) {
    assert.equal(response.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    const body = (await response.json()) as Record<string, unknown>;
    assert.equal(body.status, response.status);
    assert.equal(typeof body.title, 'string');
    assert.equal(typeof body.detail, 'string');
    return body;
  }

  it('answers 202 with Location, Operation-Location, Retry-After and the monitor', async () => {
    const response = await post(
      JSON.stringify({ type: 'demo.echo', input: { a: 1 }, labels: { k: 'v' } }),
    );
    assert.equal(response.status, 202);
    const monitor = (await response.json()) as {
      id: string;
      status: string;
      links: { self: string };
    };
    assert.equal(monitor.status, 'queued');
    assert.equal(response.headers.get('location'), `${base}/v1/operations/${monitor.id}`);
    assert.equal(response.headers.get('operation-location'), `${base}/v1/operations/${monitor.id}`);
    assert.equal(response.headers.get('retry-after'), '1');
    assert.equal(monitor.links.self, `/v1/operations/${monitor.id}`);
    await accepted.wait(monitor.id);
    const polled = await fetch(`${base}${monitor.links.self}`);
    assert.equal(polled.status, 200);
    const final = (await polled.json()) as { status: string; result: unknown; version: number };
    assert.equal(final.status, 'succeeded');
    assert.deepEqual(final.result, { a: 1 });
    assert.equal(polled.headers.get('etag'), `"${final.version}"`);
    assert.equal(polled.headers.get('retry-after'), null, 'no Retry-After once terminal');
    const unchanged = await fetch(`${base}${monitor.links.self}`, {
      headers: { 'if-none-match': `"${final.version}"` },
    });
    assert.equal(unchanged.status, 304);
    const events = (await (await fetch(`${base}/v1/operations/${monitor.id}/events`)).json()) as {
      events: { type: string; seq: number }[];
    };
    assert.deepEqual(
      events.events.map((e) => e.type),
      ['operation.queued', 'operation.started', 'operation.succeeded'],
    );
  });

  it('names an unknown type (422 UNKNOWN_OPERATION_TYPE) and stores nothing', async () => {
    const before = await accepted.store.lastSeq();
    const body = await problem(await post(JSON.stringify({ type: 'demo.nope', input: {} })));
    assert.equal(body.code, 'UNKNOWN_OPERATION_TYPE');
    assert.match(String(body.fix), /demo\.sleep/);
    assert.equal(await accepted.store.lastSeq(), before);
  });

  it('says where JSON is malformed (400 MALFORMED_JSON with the position)', async () => {
    const before = await accepted.store.lastSeq();
    const response = await post('{"type": "demo.echo", "input": {]}');
    assert.equal(response.status, 400);
    const body = await problem(response);
    assert.equal(body.code, 'MALFORMED_JSON');
    assert.equal((body.details as { position: number }).position, 32);
    assert.equal(await accepted.store.lastSeq(), before);
  });

  it('lists each field that fails the type schema (422 VALIDATION_FAILED)', async () => {
    const before = await accepted.store.lastSeq();
    const response = await post(JSON.stringify({ type: 'demo.sleep', input: { ms: -5, what: 1 } }));
    assert.equal(response.status, 422);
    const body = await problem(response);
    assert.equal(body.code, 'VALIDATION_FAILED');
    const fields = (body.fields as { field: string }[]).map((f) => f.field).sort();
    assert.deepEqual(fields, ['/input/ms', '/input/what']);
    assert.equal(await accepted.store.lastSeq(), before);
  });

  it('refuses an oversized body (413) and a non-JSON one (415)', async () => {
    const before = await accepted.store.lastSeq();
    const big = JSON.stringify({ type: 'demo.echo', input: 'x'.repeat(100 * 1024) });
    const tooBig = await post(big);
    assert.equal(tooBig.status, 413);
    assert.equal((await problem(tooBig)).code, 'PAYLOAD_TOO_LARGE');
    const text = await post('type=demo.echo', { 'content-type': 'text/plain' });
    assert.equal(text.status, 415);
    assert.equal((await problem(text)).code, 'UNSUPPORTED_MEDIA_TYPE');
    const poisoned = await post('{"type":"demo.echo","__proto__":{"x":1}}');
    assert.equal(poisoned.status, 400);
    assert.equal(await accepted.store.lastSeq(), before);
  });

  it('answers 404 problems for unknown operations and routes', async () => {
    const missing = await fetch(`${base}/v1/operations/op_00000000000000000000000000000`);
    assert.equal(missing.status, 404);
    assert.equal((await problem(missing)).code, 'OPERATION_NOT_FOUND');
    const route = await fetch(`${base}/v2/nothing`);
    assert.equal(route.status, 404);
    assert.equal((await problem(route)).code, 'ROUTE_NOT_FOUND');
  });

  it('reports health and readiness', async () => {
    assert.deepEqual(await (await fetch(`${base}/healthz`)).json(), { status: 'ok' });
    assert.deepEqual(await (await fetch(`${base}/readyz`)).json(), {
      status: 'ready',
      store: STORE,
    });
  });
});
