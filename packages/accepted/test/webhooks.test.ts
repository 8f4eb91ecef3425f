import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';
import { after, afterEach, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { Accepted } from '../src/engine/accepted.ts';
import { demoOperations } from '../src/engine/demo.ts';
import { ApiKeys } from '../src/http/auth.ts';
import { createHttpServer } from '../src/server/http.ts';
import { createWebhooks, type WebhookOptions, type Webhooks } from '../src/webhooks/service.ts';
import { verifyWebhook } from '../src/webhooks/signature.ts';
import { eventually, onStore, startEngine, startServer, stopEngines, tempDir } from './helpers.ts';
import { Receiver } from './receiver.ts';

const KEY_ACME = 'acme-key-0123456789abcdef';
const KEY_BETA = 'beta-key-0123456789abcdef';
const ACME = { authorization: `Bearer ${KEY_ACME}` };
const BETA = { authorization: `Bearer ${KEY_BETA}` };

interface Api {
  accepted: Accepted;
  webhooks: Webhooks;
  app: FastifyInstance;
  base: string;
}

const cleanups: (() => Promise<void>)[] = [];
/**
 * Closes what the tests so far started, and stops their engines: on PostgreSQL each holds a
 * pool and a LISTEN connection, and a file that kept them all to its end could meet the
 * server's connection limit beside the other files of the pass.
 */
async function closeAll(): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await stopEngines();
}
after(closeAll);

async function startApi(options: Partial<WebhookOptions> = {}): Promise<Api> {
  const accepted = await startEngine({ operations: demoOperations });
  const webhooks = createWebhooks({
    accepted,
    allow: ['127.0.0.0/8'],
    retrySchedule: [30, 30, 30, 30, 30, 30, 30],
    timeoutMs: 2000,
    pollIntervalMs: 50,
    ...options,
  });
  webhooks.start();
  const apiKeys = new ApiKeys();
  apiKeys.add({ tenant: 'acme', key: KEY_ACME });
  apiKeys.add({ tenant: 'beta', key: KEY_BETA });
  const app = createHttpServer({ accepted, apiKeys, webhooks, logger: false });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  cleanups.push(async () => {
    await app.close();
    await webhooks.stop(100);
  });
  return { accepted, webhooks, app, base };
}

async function receiver(): Promise<Receiver> {
  const r = await new Receiver().start();
  cleanups.push(() => r.close());
  return r;
}

async function call(
  api: Api,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = ACME,
): Promise<{ status: number; headers: Headers; json: Record<string, unknown> }> {
  const response = await fetch(`${api.base}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>),
  };
}

async function endpoint(
  api: Api,
  url: string,
  extra: Record<string, unknown> = {},
): Promise<{ id: string; secret: string; version: number; publicKey: string | null }> {
  const created = await call(api, 'POST', '/v1/webhooks/endpoints', { url, ...extra });
  assert.equal(created.status, 201, JSON.stringify(created.json));
  return created.json as never;
}

async function submit(api: Api, body: Record<string, unknown>, headers = ACME): Promise<string> {
  const submitted = await call(api, 'POST', '/v1/operations', body, headers);
  assert.equal(submitted.status, 202, JSON.stringify(submitted.json));
  return submitted.json.id as string;
}

/**
 * A receiver's check written from the Standard Webhooks text alone (not our verifier): the
 * signed content is `id.timestamp.body`, HMAC-SHA256 keyed by the base64 part of `whsec_`,
 * `v1,<base64>` entries separated by spaces, a timestamp within five minutes.
 */
function specVerify(secret: string, headers: http.IncomingHttpHeaders, body: string): boolean {
  const id = String(headers['webhook-id']);
  const timestamp = String(headers['webhook-timestamp']);
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return false;
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest();
  return String(headers['webhook-signature'])
    .split(' ')
    .some((entry) => {
      const [version, signature] = entry.split(',');
      if (version !== 'v1' || signature === undefined) return false;
      const given = Buffer.from(signature, 'base64');
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
}

describe(onStore('webhook endpoints over HTTP'), { timeout: 60_000 }, () => {
  let api: Api;
  let hook: Receiver;
  before(async () => {
    api = await startApi();
    hook = await receiver();
  });

  it('creates with a secret shown once, reads with an ETag, and demands If-Match to change', async () => {
    const created = await endpoint(api, `${hook.url}/crud`, {
      description: 'orders',
      eventTypes: ['operation.succeeded'],
      retrySchedule: ['5s', '5m'],
    });
    assert.match(created.secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    const read = await call(api, 'GET', `/v1/webhooks/endpoints/${created.id}`);
    assert.equal(read.status, 200);
    assert.equal(read.headers.get('etag'), '"1"');
    assert.equal(read.json.secret, undefined, 'the secret is shown only at creation');
    assert.deepEqual(read.json.retrySchedule, ['5s', '5m']);
    const list = await call(api, 'GET', '/v1/webhooks/endpoints');
    assert.ok((list.json.items as { id: string }[]).some((e) => e.id === created.id));
    assert.equal(
      (await call(api, 'GET', `/v1/webhooks/endpoints/${created.id}`, undefined, BETA)).status,
      404,
      'another tenant does not see it',
    );

    const noIfMatch = await call(api, 'PATCH', `/v1/webhooks/endpoints/${created.id}`, {
      description: 'x',
    });
    assert.equal(noIfMatch.status, 428);
    assert.equal(noIfMatch.json.code, 'PRECONDITION_REQUIRED');
    const stale = await call(
      api,
      'PATCH',
      `/v1/webhooks/endpoints/${created.id}`,
      { description: 'x' },
      { ...ACME, 'if-match': '"7"' },
    );
    assert.equal(stale.status, 412);
    const patched = await call(
      api,
      'PATCH',
      `/v1/webhooks/endpoints/${created.id}`,
      { description: 'billing', enabled: false },
      { ...ACME, 'if-match': '"1"' },
    );
    assert.equal(patched.status, 200);
    assert.equal(patched.headers.get('etag'), '"2"');
    assert.equal(patched.json.enabled, false);
    assert.equal(patched.json.disabledReason, 'MANUAL');
    const badBody = await call(
      api,
      'PATCH',
      `/v1/webhooks/endpoints/${created.id}`,
      { retrySchedule: ['soon'] },
      { ...ACME, 'if-match': '*' },
    );
    assert.equal(badBody.status, 422);
    assert.equal((await call(api, 'DELETE', `/v1/webhooks/endpoints/${created.id}`)).status, 428);
    const deleted = await call(api, 'DELETE', `/v1/webhooks/endpoints/${created.id}`, undefined, {
      ...ACME,
      'if-match': '"2"',
    });
    assert.equal(deleted.status, 204);
    assert.equal((await call(api, 'GET', `/v1/webhooks/endpoints/${created.id}`)).status, 404);
  });

  it('refuses what a store could not keep as sent: U+0000 in the URL or a description, lone surrogates, and If-Match "01" is not "1" (found by the fuzzer)', async () => {
    const api = await startApi();
    for (const path of [
      '/v1/webhooks/endpoints/%00',
      '/v1/webhooks/deliveries?endpoint=%00',
      '/v1/events?operation=a%00b',
    ]) {
      const answer = await call(api, 'GET', path);
      assert.equal(answer.status, 400, path);
      assert.equal(answer.json.code, 'MALFORMED_REQUEST', path);
    }
    for (const description of ['a\u0000b', 'lone \ud800 half', '\udfff']) {
      const refused = await call(api, 'POST', '/v1/webhooks/endpoints', {
        url: 'http://127.0.0.1:9/x',
        description,
      });
      assert.equal(refused.status, 422, JSON.stringify(description));
    }
    const listed = await call(api, 'GET', '/v1/webhooks/endpoints');
    assert.deepEqual(listed.json.items, [], 'nothing stored');
    const kept = await endpoint(api, 'http://127.0.0.1:9/x', { description: 'é 😀 ok' });
    const read = await call(api, 'GET', `/v1/webhooks/endpoints/${kept.id}`);
    assert.equal(read.json.description, 'é 😀 ok');
    const padded = await call(
      api,
      'PATCH',
      `/v1/webhooks/endpoints/${kept.id}`,
      { description: 'x' },
      { ...ACME, 'if-match': `"0${kept.version}"` },
    );
    assert.equal(padded.status, 412);
  });

  it('refuses URLs the server must not call, naming the rule (SSRF)', async () => {
    const strict = await startApi({ allow: [] });
    const refused: [string, string][] = [
      ['http://127.0.0.1:9/hook', 'loopback'],
      ['http://2130706433/hook', 'loopback'],
      ['http://0x7f.0.0.1/hook', 'loopback'],
      ['http://[::ffff:127.0.0.1]/hook', 'loopback'],
      ['http://[::1]/hook', 'loopback'],
      ['http://localhost:9/hook', 'loopback'],
      ['http://10.0.0.8/hook', 'private'],
      ['http://192.168.1.1/hook', 'private'],
      ['http://169.254.169.254/latest/meta-data', 'link-local'],
      ['http://100.64.0.1/hook', 'cgnat'],
      ['http://0.0.0.0/hook', 'unspecified'],
      ['http://0.1.2.3/hook', 'this-network'],
      ['ftp://example.com/hook', 'scheme'],
      ['http://user:pass@example.com/hook', 'credentials'],
    ];
    for (const [url, rule] of refused) {
      const answer = await call(strict, 'POST', '/v1/webhooks/endpoints', { url });
      assert.equal(answer.status, 422, url);
      assert.equal(answer.json.code, 'URL_NOT_ALLOWED', url);
      assert.equal((answer.json.details as { rule: string }).rule, rule, url);
      const submitted = await call(strict, 'POST', '/v1/operations', {
        type: 'demo.echo',
        callbackUrl: url,
      });
      assert.equal(submitted.status, 422, `callbackUrl ${url}`);
    }
    // Nothing was created by the refused submits.
    assert.equal((await strict.accepted.list({ tenant: 'acme' })).items.length, 0);
    // A public name is accepted at creation; its addresses are checked at every attempt.
    assert.equal(
      (await call(strict, 'POST', '/v1/webhooks/endpoints', { url: 'https://example.com/hook' }))
        .status,
      201,
    );
  });
});

describe(onStore('webhook delivery'), { timeout: 120_000 }, () => {
  afterEach(closeAll);
  it('retries five 500s then delivers, with one webhook-id, signed, and logs every attempt', async () => {
    const api = await startApi();
    const hook = await receiver();
    const target = await endpoint(api, `${hook.url}/flaky`, {
      eventTypes: ['operation.succeeded'],
    });
    hook.answer = (_request, index) => ({
      status: index < 5 ? 500 : 200,
      body: `attempt ${index + 1}`,
    });
    const id = await submit(api, { type: 'demo.echo', input: { n: 1 } });
    await eventually(() => hook.at('/flaky').length === 6);
    const ids = new Set(hook.received.map((r) => r.headers['webhook-id']));
    assert.equal(ids.size, 1, 'the same webhook-id on every attempt');
    for (const request of hook.received) {
      assert.ok(specVerify(target.secret, request.headers, request.body), 'spec check');
      const payload = verifyWebhook(target.secret, request.headers, request.body);
      assert.equal(payload.type, 'operation.succeeded');
      assert.equal((payload.data as { operationId: string }).operationId, id);
    }
    await eventually(async () => {
      const page = await call(api, 'GET', `/v1/webhooks/deliveries?operation=${id}`);
      return (page.json.items as { status: string }[])[0]?.status === 'delivered';
    });
    const page = await call(api, 'GET', `/v1/webhooks/deliveries?endpoint=${target.id}`);
    const delivery = (page.json.items as { id: string; attempts: number; eventId: string }[])[0];
    assert.equal(delivery?.attempts, 6);
    assert.equal(delivery.eventId, [...ids][0]);
    const attempts = await call(api, 'GET', `/v1/webhooks/deliveries/${delivery.id}/attempts`);
    const log = attempts.json.items as { attempt: number; status: number; responseBody: string }[];
    assert.deepEqual(
      log.map((a) => a.status),
      [500, 500, 500, 500, 500, 200],
    );
    assert.deepEqual(
      log.map((a) => a.responseBody),
      ['attempt 1', 'attempt 2', 'attempt 3', 'attempt 4', 'attempt 5', 'attempt 6'],
    );
  });

  it('disables an endpoint that answers 410, and sends it nothing more', async () => {
    const api = await startApi();
    const hook = await receiver();
    hook.answer = (request) => ({ status: request.path === '/gone' ? 410 : 200 });
    // A witness on the same events, and on endpoint.disabled.
    await endpoint(api, `${hook.url}/witness`, {
      eventTypes: ['operation.queued', 'endpoint.disabled'],
    });
    const target = await endpoint(api, `${hook.url}/gone`, { eventTypes: ['operation.queued'] });
    await submit(api, { type: 'demo.echo', input: 1 });
    await eventually(async () => {
      const read = await call(api, 'GET', `/v1/webhooks/endpoints/${target.id}`);
      return read.json.enabled === false;
    });
    const read = await call(api, 'GET', `/v1/webhooks/endpoints/${target.id}`);
    assert.equal(read.json.disabledReason, 'GONE');
    // The disabling is an event of the log, delivered to endpoints that subscribed to it.
    await eventually(() => hook.at('/witness').some((r) => r.payload.type === 'endpoint.disabled'));
    const notice = hook.at('/witness').find((r) => r.payload.type === 'endpoint.disabled');
    assert.deepEqual(
      (notice?.payload.data as unknown as { data: { endpoint: unknown } }).data.endpoint,
      {
        id: target.id,
        url: `${hook.url}/gone`,
        reason: 'GONE',
        message: 'The endpoint answered 410 Gone: disabled.',
      },
    );
    const [logged] = await api.accepted.readEvents({
      tenant: 'acme',
      types: ['endpoint.disabled'],
    });
    assert.equal(logged?.operationId, target.id);
    assert.equal(logged.operationType, 'webhook.endpoint');
    // Once the witness has the second operation's event, the dispatcher has passed it, and
    // made no delivery of it to the disabled endpoint.
    const second = await submit(api, { type: 'demo.echo', input: 2 });
    await eventually(() => hook.at('/witness').some((r) => r.payload.data.operationId === second));
    const page = await call(api, 'GET', `/v1/webhooks/deliveries?endpoint=${target.id}`);
    assert.equal((page.json.items as unknown[]).length, 1);
    assert.equal(hook.at('/gone').length, 1);
  });

  it('times out a slow receiver and retries it', async () => {
    const api = await startApi({ timeoutMs: 300 });
    const hook = await receiver();
    hook.answer = (_request, index) => ({ status: 200, delayMs: index === 0 ? 3000 : 0 });
    await endpoint(api, `${hook.url}/slow`, { eventTypes: ['operation.queued'] });
    const id = await submit(api, { type: 'demo.echo', input: 1 });
    await eventually(async () => {
      const page = await call(api, 'GET', `/v1/webhooks/deliveries?operation=${id}`);
      return (page.json.items as { status: string }[])[0]?.status === 'delivered';
    });
    const page = await call(api, 'GET', `/v1/webhooks/deliveries?operation=${id}`);
    const delivery = (page.json.items as { id: string }[])[0];
    const attempts = await call(api, 'GET', `/v1/webhooks/deliveries/${delivery?.id}/attempts`);
    const log = attempts.json.items as { status: number | null; error: string | null }[];
    assert.deepEqual(log[0], { ...log[0], status: null, error: 'TIMEOUT' });
    assert.equal(log.at(-1)?.status, 200);
  });

  it('holds back later events of a failing operation only, in order per operation', async () => {
    const api = await startApi({ retrySchedule: Array.from({ length: 60 }, () => 50) });
    const hook = await receiver();
    let stuck = '';
    let flowing = '';
    let flowed = false;
    /** What the receiver answered each request of the stuck operation: its seq and status. */
    const stuckAnswers: { seq: number; status: number }[] = [];
    // The stuck operation's deliveries fail until the other operation's last event has been
    // received (and at least three times). A state decides it, not a time: if the other
    // operation were held back behind the stuck one, neither would ever finish.
    hook.answer = (request) => {
      const payload = JSON.parse(request.body) as {
        type: string;
        data: { operationId: string; seq: number };
      };
      const { operationId, seq } = payload.data;
      if (operationId === flowing && payload.type === 'operation.succeeded') flowed = true;
      if (operationId !== stuck) return { status: 200 };
      const status = stuckAnswers.length < 3 || !flowed ? 503 : 200;
      stuckAnswers.push({ seq, status });
      return { status };
    };
    await endpoint(api, `${hook.url}/order`);
    stuck = await submit(api, { type: 'demo.echo', input: 'a' });
    flowing = await submit(api, { type: 'demo.progress', input: { steps: 3, ms: 10 } });
    await eventually(() =>
      hook
        .at('/order')
        .some(
          (r) => r.payload.data.operationId === stuck && r.payload.type === 'operation.succeeded',
        ),
    );
    // While its first event was refused, nothing later of the stuck operation was sent.
    const refused = stuckAnswers.filter((a) => a.status === 503);
    assert.ok(refused.length >= 3);
    assert.deepEqual(new Set(refused.map((a) => a.seq)).size, 1, JSON.stringify(stuckAnswers));
    const firstOk = stuckAnswers.findIndex((a) => a.status === 200);
    assert.equal(stuckAnswers[firstOk]?.seq, refused[0]?.seq, 'the held event went first');
    const accepted = stuckAnswers.filter((a) => a.status === 200).map((a) => a.seq);
    assert.deepEqual(
      accepted,
      [...accepted].sort((a, b) => a - b),
      'then the rest, in order',
    );
    assert.equal(accepted.length, 3, 'queued, started, succeeded, once each');
    // The other operation went through meanwhile, in order, once each.
    const other = hook
      .at('/order')
      .filter((r) => r.payload.data.operationId === flowing)
      .map((r) => r.payload.data.seq);
    assert.deepEqual(
      other,
      [...other].sort((a, b) => a - b),
    );
    assert.equal(new Set(other).size, other.length);
    assert.ok(flowed);
  });

  it('dead-letters a delivery out of attempts, replays it and an endpoint since a time', async () => {
    const api = await startApi({ retrySchedule: [20, 20] });
    const hook = await receiver();
    let up = false;
    hook.answer = () => ({ status: up ? 200 : 500 });
    const target = await endpoint(api, `${hook.url}/dead`, { eventTypes: ['operation.succeeded'] });
    const since = new Date().toISOString();
    const first = await submit(api, { type: 'demo.echo', input: 1 });
    const second = await submit(api, { type: 'demo.echo', input: 2 });
    const failed = async () =>
      (await call(api, 'GET', `/v1/webhooks/deliveries?endpoint=${target.id}&status=failed`)).json
        .items as { id: string; operationId: string; attempts: number }[];
    await eventually(async () => (await failed()).length === 2);
    assert.ok((await failed()).every((d) => d.attempts === 3));
    up = true;
    const one = (await failed()).find((d) => d.operationId === first);
    const replayed = await call(api, 'POST', `/v1/webhooks/deliveries/${one?.id}:replay`);
    assert.equal(replayed.status, 202);
    await eventually(async () => (await failed()).length === 1);
    const all = await call(api, 'POST', `/v1/webhooks/endpoints/${target.id}:replay`, { since });
    assert.equal(all.status, 202);
    assert.equal(all.json.replayed, 1);
    await eventually(async () => (await failed()).length === 0);
    const ops = new Set(
      hook.received
        .filter((r) => r.headers['webhook-signature'])
        .map((r) => (JSON.parse(r.body) as { data: { operationId: string } }).data.operationId),
    );
    assert.deepEqual(ops, new Set([first, second]));
    const missing = await call(api, 'POST', '/v1/webhooks/deliveries/dlv_missing:replay');
    assert.equal(missing.status, 404);
  });

  it('holds an endpoint to its rate limit, without spending attempts', async () => {
    const api = await startApi();
    const hook = await receiver();
    const target = await endpoint(api, `${hook.url}/rate`, {
      eventTypes: ['operation.queued'],
      rateLimit: 1,
    });
    for (let i = 0; i < 3; i++) await submit(api, { type: 'demo.echo', input: i });
    await eventually(() => hook.at('/rate').length === 3, 15_000);
    // At most one delivery started in any second: their webhook-timestamps all differ.
    const seconds = hook.received.map((r) => r.headers['webhook-timestamp']);
    assert.equal(new Set(seconds).size, 3, `timestamps ${seconds.join(', ')}`);
    // Each counted once (the last record may still be committing when its request arrived).
    await eventually(async () => {
      const page = await call(api, 'GET', `/v1/webhooks/deliveries?endpoint=${target.id}`);
      return (page.json.items as { status: string }[]).every((d) => d.status === 'delivered');
    });
    const page = await call(api, 'GET', `/v1/webhooks/deliveries?endpoint=${target.id}`);
    assert.deepEqual(
      (page.json.items as { attempts: number }[]).map((d) => d.attempts),
      [1, 1, 1],
    );
  });

  it('disables an endpoint that keeps failing past the limit', async () => {
    const api = await startApi({ retrySchedule: [20, 20, 20, 20, 20, 20], disableAfterMs: 60 });
    const hook = await receiver();
    hook.answer = () => ({ status: 500 });
    const target = await endpoint(api, `${hook.url}/failing`, { eventTypes: ['operation.queued'] });
    await submit(api, { type: 'demo.echo', input: 1 });
    await eventually(async () => {
      const read = await call(api, 'GET', `/v1/webhooks/endpoints/${target.id}`);
      return read.json.disabledReason === 'FAILING';
    });
    // Enabling it again clears the failure record.
    const enabled = await call(
      api,
      'PATCH',
      `/v1/webhooks/endpoints/${target.id}`,
      { enabled: true },
      { ...ACME, 'if-match': '*' },
    );
    assert.equal(enabled.json.enabled, true);
    assert.equal(enabled.json.failingSince, null);
  });

  it('signs with the rotated-out secret too during the overlap, and ed25519 when asked', async () => {
    const api = await startApi();
    const hook = await receiver();
    const target = await endpoint(api, `${hook.url}/rotate`, {
      eventTypes: ['operation.queued'],
      ed25519: true,
    });
    assert.match(target.publicKey ?? '', /^whpk_/);
    const rotated = await call(api, 'POST', `/v1/webhooks/endpoints/${target.id}:rotate-secret`);
    assert.equal(rotated.status, 200);
    const fresh = rotated.json.secret as string;
    assert.notEqual(fresh, target.secret);
    await submit(api, { type: 'demo.echo', input: 1 });
    await eventually(() => hook.at('/rotate').length === 1);
    const request = hook.received.find((r) => r.path === '/rotate');
    assert.ok(request);
    const signatures = String(request.headers['webhook-signature']).split(' ');
    assert.deepEqual(
      signatures.map((s) => s.split(',')[0]),
      ['v1', 'v1', 'v1a'],
    );
    for (const secret of [fresh, target.secret, target.publicKey ?? '']) {
      assert.equal(verifyWebhook(secret, request.headers, request.body).type, 'operation.queued');
    }
    assert.ok(specVerify(target.secret, request.headers, request.body));
    assert.ok(specVerify(fresh, request.headers, request.body));
  });

  it("posts an operation's events to its callbackUrl, signed with the tenant's callback secret", async () => {
    const api = await startApi();
    const hook = await receiver();
    const secrets = await call(api, 'GET', '/v1/webhooks/callback-secret');
    const [current] = secrets.json.secrets as { secret: string; expiresAt: null }[];
    assert.ok(current);
    const id = await submit(api, {
      type: 'demo.progress',
      input: { steps: 2, ms: 5 },
      callbackUrl: `${hook.url}/cb`,
    });
    await eventually(() => hook.at('/cb').some((r) => r.payload.type === 'operation.succeeded'));
    const types = hook.at('/cb').map((r) => r.payload.type);
    assert.deepEqual(types, ['operation.queued', 'operation.started', 'operation.succeeded']);
    for (const request of hook.received) {
      assert.ok(specVerify(current.secret, request.headers, request.body));
      assert.equal(
        (JSON.parse(request.body) as { data: { operationId: string } }).data.operationId,
        id,
      );
    }
    const rotated = await call(api, 'POST', '/v1/webhooks/callback-secret:rotate');
    const list = rotated.json.secrets as { secret: string; expiresAt: string | null }[];
    assert.equal(list.length, 2);
    assert.equal(list[1]?.secret, current.secret);
    assert.ok(list[1]?.expiresAt !== null);
    const other = await call(api, 'GET', '/v1/webhooks/callback-secret', undefined, BETA);
    assert.notEqual((other.json.secrets as { secret: string }[])[0]?.secret, current.secret);
  });
});

describe(onStore('webhooks survive a crash'), { timeout: 120_000 }, () => {
  it('SIGKILL between attempts loses no delivery', async () => {
    const hook = await receiver();
    let up = false;
    hook.answer = () => ({ status: up ? 200 : 500 });
    const dir = tempDir();
    const flags = [
      '--webhook-allow',
      '127.0.0.0/8',
      // An attempt in flight at the kill keeps its lease (twice the timeout, plus 5 s) on
      // PostgreSQL, where other nodes may be alive; SQLite frees it at open. Short here.
      '--webhook-timeout',
      '2s',
      '--webhook-retries',
      '200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s',
    ];
    const first = await startServer(dir, flags);
    const post = async (base: string, path: string, body: unknown) => {
      const response = await fetch(`${base}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return (await response.json()) as { id: string };
    };
    await post(first.url, '/v1/webhooks/endpoints', {
      url: `${hook.url}/crash`,
      eventTypes: ['operation.succeeded'],
    });
    const ops: string[] = [];
    for (let i = 0; i < 5; i++)
      ops.push((await post(first.url, '/v1/operations', { type: 'demo.echo', input: i })).id);
    await eventually(
      () => new Set(hook.at('/crash').map((r) => r.payload.data.operationId)).size === 5,
    );
    first.child.kill('SIGKILL');
    await first.exited;
    const triedBefore = hook.received.length;
    up = true;
    const second = await startServer(dir, flags);
    cleanups.push(async () => {
      second.child.kill('SIGKILL');
      await second.exited;
    });
    await eventually(async () => {
      const page = (await (
        await fetch(`${second.url}/v1/webhooks/deliveries?status=delivered`)
      ).json()) as {
        items: unknown[];
      };
      return page.items.length === 5;
    }, 30_000);
    assert.ok(hook.received.length > triedBefore, 'attempts went on after the restart');
    const okIds = new Set(hook.received.slice(triedBefore).map((r) => r.headers['webhook-id']));
    const failedIds = new Set(
      hook.received.slice(0, triedBefore).map((r) => r.headers['webhook-id']),
    );
    assert.deepEqual(okIds, failedIds, 'the same webhook-ids, retried after the crash');
  });
});

// Each test below kills a bug that was injected by hand and left every other test green
// (issue 14): its name says which.
describe(onStore('webhook delivery rules'), { timeout: 120_000 }, () => {
  afterEach(closeAll);
  it('holds a line per operation and endpoint: a failing endpoint does not hold back another (lines not per operation alone)', async () => {
    // Retries enough (100) that /stuck's first delivery is not dead-lettered meanwhile.
    const api = await startApi({ retrySchedule: Array.from({ length: 100 }, () => 100) });
    const hook = await receiver();
    let op = '';
    // /stuck refuses until /free has received the operation's last event: if the two
    // endpoints shared one line per operation, /free would wait behind /stuck for ever.
    hook.answer = (request) => {
      if (request.path !== '/stuck') return { status: 200 };
      const freeDone = hook
        .at('/free')
        .some((r) => r.payload.data.operationId === op && r.payload.type === 'operation.succeeded');
      return { status: freeDone ? 200 : 503 };
    };
    const stuckEndpoint = await endpoint(api, `${hook.url}/stuck`);
    await endpoint(api, `${hook.url}/free`);
    op = await submit(api, { type: 'demo.echo', input: 'x' });
    await eventually(() =>
      hook
        .at('/stuck')
        .some((r) => r.payload.data.operationId === op && r.payload.type === 'operation.succeeded'),
    );
    const free = hook.at('/free').map((r) => r.payload.type);
    assert.deepEqual(free, ['operation.queued', 'operation.started', 'operation.succeeded']);
    // /stuck was refused on its first event while /free went through all three.
    const stuck = hook.received.filter((r) => r.path === '/stuck');
    assert.ok(stuck.length > 3, 'the stuck endpoint was retried');
    const firstStuck = JSON.parse(stuck[0]?.body ?? '{}') as { type?: string };
    assert.equal(firstStuck.type, 'operation.queued');
    // And every delivery to /stuck ended delivered: none ran out of attempts waiting.
    await eventually(async () => {
      const page = await call(api, 'GET', `/v1/webhooks/deliveries?endpoint=${stuckEndpoint.id}`);
      const items = page.json.items as { status: string }[];
      return items.length === 3 && items.every((d) => d.status !== 'pending');
    });
    const page = await call(api, 'GET', `/v1/webhooks/deliveries?endpoint=${stuckEndpoint.id}`);
    assert.deepEqual(
      (page.json.items as { status: string }[]).map((d) => d.status),
      ['delivered', 'delivered', 'delivered'],
    );
  });

  it('sends operation.progress to the endpoints that subscribe to it, and to those that take every type', async () => {
    const api = await startApi();
    const hook = await receiver();
    await endpoint(api, `${hook.url}/progress`, { eventTypes: ['operation.progress'] });
    await endpoint(api, `${hook.url}/all`);
    const id = await submit(api, { type: 'demo.progress', input: { steps: 3, ms: 5 } });
    await eventually(() => hook.at('/all').some((r) => r.payload.type === 'operation.succeeded'));
    await eventually(() => hook.at('/progress').length >= 3);
    const progress = hook.at('/progress');
    assert.ok(progress.every((r) => r.payload.type === 'operation.progress'));
    assert.ok(progress.every((r) => r.payload.data.operationId === id));
    const all = hook.at('/all').map((r) => r.payload.type);
    assert.equal(all.filter((type) => type === 'operation.progress').length, 3);
  });

  for (const status of [429, 503]) {
    it(`waits what a ${status}'s Retry-After asks, not the schedule's next delay`, async () => {
      const api = await startApi({ retrySchedule: [20, 20, 20] });
      const hook = await receiver();
      hook.answer = () => ({ status, headers: { 'retry-after': '120' } });
      const target = await endpoint(api, `${hook.url}/later`, {
        eventTypes: ['operation.queued'],
      });
      await submit(api, { type: 'demo.echo', input: 1 });
      type Item = { id: string; attempts: number; nextAttemptAt: string | null };
      const item = async () =>
        (
          (await call(api, 'GET', `/v1/webhooks/deliveries?endpoint=${target.id}`)).json
            .items as Item[]
        )[0];
      await eventually(async () => (await item())?.attempts === 1);
      const delivery = await item();
      assert.ok(delivery?.nextAttemptAt);
      const attempts = await call(api, 'GET', `/v1/webhooks/deliveries/${delivery.id}/attempts`);
      const [first] = attempts.json.items as { startedAt: string; status: number }[];
      assert.equal(first?.status, status);
      const waited = Date.parse(delivery.nextAttemptAt) - Date.parse(first?.startedAt ?? '');
      // The schedule says 20 ms; the receiver asked for 120 s.
      assert.ok(waited >= 119_000, `next attempt ${waited} ms after the first`);
      assert.equal(hook.received.length, 1);
    });
  }

  it('fails the pending deliveries of an endpoint it deletes (ENDPOINT_DELETED), and sends them nothing more', async () => {
    const api = await startApi({ retrySchedule: [60_000, 60_000] });
    const hook = await receiver();
    hook.answer = () => ({ status: 500 });
    const target = await endpoint(api, `${hook.url}/gone`);
    await submit(api, { type: 'demo.echo', input: 1 });
    type Item = { status: string; lastError: string | null; attempts: number };
    const items = async () =>
      (await call(api, 'GET', `/v1/webhooks/deliveries?endpoint=${target.id}`)).json
        .items as Item[];
    // Three deliveries (queued, started, succeeded): the first tried once, the others wait.
    await eventually(async () => {
      const list = await items();
      return list.length === 3 && list.some((d) => d.attempts === 1);
    });
    const deleted = await call(api, 'DELETE', `/v1/webhooks/endpoints/${target.id}`, undefined, {
      ...ACME,
      'if-match': '*',
    });
    assert.equal(deleted.status, 204);
    const after = await items();
    assert.equal(after.length, 3);
    for (const delivery of after) {
      assert.equal(delivery.status, 'failed');
      assert.equal(delivery.lastError, 'ENDPOINT_DELETED');
    }
    const pending = await call(api, 'GET', '/v1/webhooks/deliveries?status=pending');
    assert.deepEqual(pending.json.items, []);
  });

  it('stops signing with a rotated-out secret once its overlap has passed', async () => {
    const api = await startApi({ rotationOverlapMs: 300 });
    const hook = await receiver();
    const target = await endpoint(api, `${hook.url}/expire`, { eventTypes: ['operation.queued'] });
    const rotated = await call(api, 'POST', `/v1/webhooks/endpoints/${target.id}:rotate-secret`);
    const fresh = rotated.json.secret as string;
    // The overlap (300 ms) passes before anything is sent: only the new secret signs.
    const rotatedAt = Date.now();
    await eventually(() => Date.now() > rotatedAt + 400);
    await submit(api, { type: 'demo.echo', input: 2 });
    await eventually(() => hook.at('/expire').length === 1);
    const later = hook.received[0];
    assert.ok(later);
    assert.equal(String(later.headers['webhook-signature']).split(' ').length, 1);
    assert.ok(specVerify(fresh, later.headers, later.body));
    assert.equal(specVerify(target.secret, later.headers, later.body), false);
  });
});
