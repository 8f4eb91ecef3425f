/**
 * The webhook service's own decisions (webhooks/service.ts), driven through its API on a real
 * store and a real loopback receiver, without the HTTP server: what an answer means for a
 * delivery and its endpoint (410, the schedule and its jitter, Retry-After, disabling after
 * failing too long), what an attempt sends and records, the dispatcher's lease (taken,
 * respected, given back), the sender's wake-ups, retention, and the store it refuses. Fast
 * enough for StrykerJS to run for every mutant of the file (docs/testing.md).
 *
 * The store runs behind a proxy that records the calls the service makes (their arguments
 * only; every call goes to the real store), so that the lease lengths it asks for are seen.
 */
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { after, describe, it } from 'node:test';
import { ConfigError } from '../src/domain/options.ts';
import type { Logger } from '../src/domain/logger.ts';
import { WEBHOOK_LIMITS, type Delivery } from '../src/domain/webhooks.ts';
import type { Accepted } from '../src/engine/accepted.ts';
import { demoOperations } from '../src/engine/demo.ts';
import type { Store } from '../src/store/store.ts';
import {
  createWebhooks,
  publicKeyOf,
  type WebhookOptions,
  type Webhooks,
} from '../src/webhooks/service.ts';
import { generateSigningKeyPair, verifyWebhook } from '../src/webhooks/signature.ts';
import { pause } from './chaos-helpers.ts';
import { eventually, startEngine, testStore } from './helpers.ts';
import { Receiver, closedPort, type Reply } from './receiver.ts';

const TENANT = 'acme';

interface Line {
  level: string;
  obj: Record<string, unknown>;
  msg: string;
}

/** A logger that keeps every line with its object. */
function keptLogger(): Logger & { lines: Line[] } {
  const lines: Line[] = [];
  const at = (level: string) => (obj: object, msg?: string) => {
    lines.push({ level, obj: obj as Record<string, unknown>, msg: msg ?? '' });
  };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

interface Call {
  method: string;
  args: unknown[];
  /** What the call resolved to, once it has. */
  result?: unknown;
}

/**
 * What the service's store calls are seen through: every call (its arguments and result), and
 * faults to inject: a method named here fails its next call with that error (once), as a
 * store that is away would.
 */
interface Observer {
  calls: Call[];
  faults: Map<string, Error>;
}

function newObserver(): Observer {
  return { calls: [], faults: new Map() };
}

/** `fn` of `object` called as `name`: recorded, or failed once when a fault is set for it. */
function observed(observer: Observer, name: string, object: object, fn: unknown) {
  return (...args: unknown[]): unknown => {
    const call: Call = { method: name, args };
    observer.calls.push(call);
    const fault = observer.faults.get(name);
    if (fault) {
      observer.faults.delete(name);
      return Promise.reject(fault);
    }
    const out = (fn as (...a: unknown[]) => unknown).apply(object, args);
    if (out instanceof Promise) {
      out.then(
        (result: unknown) => (call.result = result),
        () => undefined,
      );
    }
    return out;
  };
}

/** `target` with each method call observed as `<prefix>.<method>`. */
function recording<T extends object>(target: T, prefix: string, observer: Observer): T {
  return new Proxy(target, {
    get(object, property) {
      const value: unknown = Reflect.get(object, property, object);
      if (typeof value !== 'function') return value;
      return observed(observer, `${prefix}.${String(property)}`, object, value);
    },
  });
}

/**
 * The real store, its `webhooks` and `consumers` and its own `lastSeq` observed; `hide` makes
 * those capabilities absent (a store that lacks them).
 */
function observedStore(
  store: Store,
  observer: Observer,
  hide: ('webhooks' | 'consumers')[] = [],
): Store {
  const webhooks = store.webhooks && recording(store.webhooks, 'webhooks', observer);
  const consumers = store.consumers && recording(store.consumers, 'consumers', observer);
  return new Proxy(store, {
    get(object, property) {
      if (property === 'webhooks') return hide.includes('webhooks') ? undefined : webhooks;
      if (property === 'consumers') return hide.includes('consumers') ? undefined : consumers;
      const value: unknown = Reflect.get(object, property, object);
      if (typeof value !== 'function') return value;
      if (property === 'lastSeq') return observed(observer, 'store.lastSeq', object, value);
      return (value as () => unknown).bind(object);
    },
  });
}

interface Service {
  accepted: Accepted;
  webhooks: Webhooks;
  /** The calls of the engine's store (shared by every service on that engine). */
  calls: Call[];
  logger: Logger & { lines: Line[] };
}

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** An engine on a fresh store seen through `observer`. */
async function engine(observer = newObserver()): Promise<Accepted & { observer: Observer }> {
  const store = observedStore(testStore(), observer);
  const accepted = await startEngine({ operations: demoOperations, store });
  return Object.assign(accepted, { observer });
}

/** An engine and its webhook service, started (unless `start` is false). */
async function service(
  options: Partial<Omit<WebhookOptions, 'accepted'>> & {
    accepted?: Accepted & { observer: Observer };
  } = {},
  { start = true } = {},
): Promise<Service> {
  const accepted = options.accepted ?? (await engine());
  const logger = keptLogger();
  const webhooks = createWebhooks({
    accepted,
    allow: ['127.0.0.0/8'],
    retrySchedule: [0],
    timeoutMs: 2000,
    pollIntervalMs: 50,
    logger,
    ...options,
  });
  if (start) webhooks.start();
  cleanups.push(() => webhooks.stop(100));
  return { accepted, webhooks, calls: accepted.observer.calls, logger };
}

async function receiver(answer?: Receiver['answer']): Promise<Receiver> {
  const r = await new Receiver().start();
  if (answer) r.answer = answer;
  cleanups.push(() => r.close());
  return r;
}

/** An endpoint for one event type only (`operation.succeeded`), so one delivery per operation. */
async function endpoint(
  svc: Service,
  url: string,
  extra: { retrySchedule?: number[]; ed25519?: boolean } = {},
) {
  return svc.webhooks.createEndpoint(TENANT, {
    url,
    eventTypes: ['operation.succeeded'],
    ...extra,
  });
}

async function deliveriesOf(svc: Service, endpointId?: string): Promise<Delivery[]> {
  const page = await svc.webhooks.store.listDeliveries({
    tenant: TENANT,
    limit: 100,
    ...(endpointId ? { endpointId } : {}),
  });
  return page.items;
}

/** The one delivery to an endpoint once `check` holds for it. */
async function deliveryWhen(
  svc: Service,
  endpointId: string,
  check: (d: Delivery) => boolean,
  ms?: number,
): Promise<Delivery> {
  let found: Delivery | undefined;
  await eventually(async () => {
    found = (await deliveriesOf(svc, endpointId)).find(check);
    return found !== undefined;
  }, ms);
  return found as Delivery;
}

/**
 * Waits for the service's counters to reach `expected` (each is counted once its store write
 * has returned, a moment after the row shows it), then compares them.
 */
async function countersReach(svc: Service, expected: Partial<Webhooks['stats']>): Promise<void> {
  const picked = () =>
    Object.fromEntries(Object.keys(expected).map((k) => [k, svc.webhooks.stats[k as 'lag']]));
  await eventually(() => JSON.stringify(picked()) === JSON.stringify(expected)).catch(
    () => undefined,
  );
  assert.deepEqual(picked(), expected);
}

function submit(svc: Service, callbackUrl?: string) {
  return svc.accepted.submit(
    'demo.echo',
    { hello: 'world' },
    {
      tenant: TENANT,
      ...(callbackUrl ? { callbackUrl } : {}),
    },
  );
}

describe('webhook service: what an answer means', { timeout: 60_000 }, () => {
  it('a 410 fails the delivery at once and disables its endpoint (GONE) with a warning; a callback answering 410 fails that delivery only', async () => {
    const svc = await service({ retrySchedule: [0, 0, 0] });
    const gone = await receiver(() => ({ status: 410 }));
    const { endpoint: ep } = await endpoint(svc, `${gone.url}/gone`);
    const op = await submit(svc, `${gone.url}/callback`);
    const failed = await deliveryWhen(svc, ep.id, (d) => d.status === 'failed');
    assert.equal(failed.attempts, 1, 'a 410 is not retried');
    assert.equal(failed.lastStatus, 410);
    const after = await svc.webhooks.getEndpoint(TENANT, ep.id);
    assert.equal(after.enabled, false);
    assert.equal(after.disabledReason, 'GONE');
    // The callback line: every event of the operation, each failed after one attempt (a 410
    // ends a delivery), and the next one still sent (nothing disables a callback URL).
    let callbacks: Delivery[] = [];
    await eventually(async () => {
      callbacks = (await deliveriesOf(svc)).filter(
        (d) => d.target === 'callback' && d.operationId === op.id,
      );
      return callbacks.length === 3 && callbacks.every((d) => d.status === 'failed');
    });
    assert.deepEqual(
      callbacks.map((d) => d.attempts),
      [1, 1, 1],
    );
    await countersReach(svc, { failed: 4, attempts: 4, retried: 0, delivered: 0 });
    const warnings = svc.logger.lines.filter((l) => l.level === 'warn');
    assert.deepEqual(
      warnings.map((l) => ({ ...l.obj, msg: l.msg })),
      [{ endpoint: ep.id, reason: 'GONE', msg: 'The endpoint answered 410 Gone: disabled.' }],
      'one warning, for the endpoint, none for the callback',
    );
  });

  it('retries on the schedule until it runs out, then fails; a replay starts the schedule again', async () => {
    const svc = await service({ retrySchedule: [0, 0] });
    const failing = await receiver(() => ({ status: 500 }));
    const { endpoint: ep } = await endpoint(svc, `${failing.url}/e`);
    await submit(svc);
    const failed = await deliveryWhen(svc, ep.id, (d) => d.status === 'failed');
    assert.equal(failed.attempts, 3, 'the first attempt and one per delay of the schedule');
    await countersReach(svc, {
      dispatched: 1,
      attempts: 3,
      delivered: 0,
      failed: 1,
      retried: 2,
      lag: 0,
      dispatching: true,
    });
    await svc.webhooks.replayDelivery(TENANT, failed.id);
    const again = await deliveryWhen(svc, ep.id, (d) => d.status === 'failed' && d.attempts > 3);
    assert.equal(again.attempts, 6, 'the replay gets the whole schedule again');
    assert.equal((await svc.webhooks.store.listAttempts(failed.id, TENANT)).length, 6);
    // Once the receiver answers, the endpoint's replay since a time sends it once more.
    failing.answer = () => ({ status: 204 });
    assert.equal(await svc.webhooks.replayEndpoint(TENANT, ep.id, 0), 1);
    const delivered = await deliveryWhen(svc, ep.id, (d) => d.status === 'delivered');
    assert.equal(delivered.attempts, 7);
    await countersReach(svc, { delivered: 1 });
  });

  it("waits the schedule's delay jittered within 20%, the endpoint's own schedule first, or what a 429 or 503 asks in Retry-After (at most a day); not a 500's", async () => {
    const SERVER_DELAY = 20_000;
    const svc = await service({ retrySchedule: [SERVER_DELAY] });
    const answers: Record<string, Reply> = {
      '/plain': { status: 500 },
      '/500-retry-after': { status: 500, headers: { 'retry-after': '2' } },
      '/429-bare': { status: 429 },
      '/503-retry-after': { status: 503, headers: { 'retry-after': '2' } },
      '/429-for-ever': { status: 429, headers: { 'retry-after': String(10 * 24 * 3600) } },
      '/own-schedule': { status: 500 },
    };
    const rx = await receiver((request) => answers[request.path] ?? { status: 200 });
    const ids: Record<string, string> = {};
    for (const path of Object.keys(answers)) {
      const { endpoint: ep } = await endpoint(
        svc,
        `${rx.url}${path}`,
        path === '/own-schedule' ? { retrySchedule: [5_000] } : {},
      );
      ids[path] = ep.id;
    }
    await submit(svc);
    /** How long after its first attempt ended each delivery is due again. */
    const waits: Record<string, number> = {};
    for (const [path, id] of Object.entries(ids)) {
      const d = await deliveryWhen(svc, id, (x) => x.attempts === 1 && x.nextAttemptAt !== null);
      assert.equal(d.status, 'pending');
      const [first] = await svc.webhooks.store.listAttempts(d.id, TENANT);
      assert.ok(first);
      waits[path] = (d.nextAttemptAt ?? 0) - (first.startedAt + first.durationMs);
    }
    // The due time is taken a little after the attempt's recorded end (never before it), so
    // each wait is at least its delay and at most its delay plus that moment.
    const within = (path: string, min: number, max: number) => {
      const wait = waits[path] ?? NaN;
      assert.ok(
        wait >= min - 1 && wait <= max + 2_000,
        `${path}: waits ${wait} ms, not ${min}..${max}`,
      );
    };
    within('/plain', 0.8 * SERVER_DELAY, 1.2 * SERVER_DELAY);
    within('/500-retry-after', 0.8 * SERVER_DELAY, 1.2 * SERVER_DELAY);
    within('/429-bare', 0.8 * SERVER_DELAY, 1.2 * SERVER_DELAY);
    within('/own-schedule', 0.8 * 5_000, 1.2 * 5_000);
    within('/503-retry-after', 2_000, 2_000);
    within('/429-for-ever', WEBHOOK_LIMITS.retryAfterMaxMs, WEBHOOK_LIMITS.retryAfterMaxMs);
    await countersReach(svc, { retried: 6 });
  });

  it('disables an endpoint that has failed every attempt for disableAfterMs (FAILING) at its next failure, which fails the delivery; the warning says since when', async () => {
    const svc = await service({
      retrySchedule: Array.from({ length: 40 }, () => 100),
      disableAfterMs: 600,
    });
    const rx = await receiver(() => ({ status: 500 }));
    const { endpoint: ep } = await endpoint(svc, `${rx.url}/failing`);
    await submit(svc);
    const failed = await deliveryWhen(svc, ep.id, (d) => d.status === 'failed');
    const attempts = await svc.webhooks.store.listAttempts(failed.id, TENANT);
    assert.ok(attempts.length >= 2, `disabled after ${attempts.length} attempt(s)`);
    assert.ok(attempts.length < 41, 'disabled before the schedule ran out');
    const first = attempts[0];
    const previous = attempts.at(-2);
    assert.ok(first && previous);
    // The attempt before the last failed less than disableAfterMs after the first began (it
    // began before its failure was judged), so it could not disable the endpoint.
    assert.ok(previous.startedAt - first.startedAt < 600, 'disabled at the first chance only');
    const after = await svc.webhooks.getEndpoint(TENANT, ep.id);
    assert.equal(after.enabled, false);
    assert.equal(after.disabledReason, 'FAILING');
    // Logged once the record has returned, a moment after the row shows it.
    await eventually(() => svc.logger.lines.some((l) => l.level === 'warn'));
    const warning = svc.logger.lines.find((l) => l.level === 'warn');
    assert.ok(warning);
    assert.deepEqual(warning.obj, { endpoint: ep.id, reason: 'FAILING' });
    assert.equal(
      warning.msg,
      `The endpoint has failed every attempt since ${new Date(first.startedAt).toISOString()}: disabled.`,
    );
  });
});

describe('webhook service: endpoints and secrets', { timeout: 60_000 }, () => {
  it('an unknown endpoint is ENDPOINT_NOT_FOUND with a fix; a rotated-out secret keeps signing for rotationOverlapMs; without `allow` a loopback URL is refused', async () => {
    const OVERLAP = 3_600_000;
    const svc = await service({ rotationOverlapMs: OVERLAP });
    await assert.rejects(svc.webhooks.getEndpoint(TENANT, 'ep_nothere'), {
      code: 'ENDPOINT_NOT_FOUND',
      message: 'No webhook endpoint ep_nothere.',
      fix: 'List the endpoints with GET /v1/webhooks/endpoints.',
    });
    const { endpoint: ep, secret } = await endpoint(svc, 'http://127.0.0.1:9/rotated');
    const before = Date.now();
    const rotated = await svc.webhooks.rotateEndpointSecret(TENANT, ep.id);
    const after = Date.now();
    const old = rotated.endpoint.secrets.find((e) => e.secret === secret);
    assert.ok(old?.expiresAt !== undefined && old.expiresAt !== null);
    assert.ok(old.expiresAt >= before + OVERLAP && old.expiresAt <= after + OVERLAP);
    assert.equal(
      rotated.endpoint.secrets.find((e) => e.secret === rotated.secret)?.expiresAt,
      null,
    );
    const [current] = await svc.webhooks.callbackSecrets(TENANT);
    assert.ok(current);
    const t0 = Date.now();
    const entries = await svc.webhooks.rotateCallbackSecret(TENANT);
    const t1 = Date.now();
    const out = entries.find((e) => e.secret === current.secret);
    assert.ok(out?.expiresAt !== undefined && out.expiresAt !== null);
    assert.ok(out.expiresAt >= t0 + OVERLAP && out.expiresAt <= t1 + OVERLAP);
    const strict = createWebhooks({ accepted: svc.accepted });
    assert.throws(() => strict.checkUrl('http://127.0.0.1:9/x'), {
      code: 'URL_NOT_ALLOWED',
      fields: [
        { field: '/url', message: "The URL's host 127.0.0.1 is in a blocked range (loopback)." },
      ],
    });
    assert.match(ep.id, /^ep_[0-9A-Za-z]{20,}$/);
  });
});

describe('webhook service: what an attempt sends and records', { timeout: 60_000 }, () => {
  it('signs (v1, and v1a with an ed25519 key), names the event in webhook-id and the claim second in webhook-timestamp, and records the answer', async () => {
    const svc = await service();
    const rx = await receiver(() => ({ status: 200, body: 'thanks' }));
    const { endpoint: ep, secret } = await endpoint(svc, `${rx.url}/signed`, { ed25519: true });
    assert.ok(ep.signingKey);
    const op = await submit(svc);
    const delivered = await deliveryWhen(svc, ep.id, (d) => d.status === 'delivered');
    const [request] = rx.received;
    assert.ok(request);
    const [attempt] = await svc.webhooks.store.listAttempts(delivered.id, TENANT);
    assert.ok(attempt);
    assert.match(delivered.id, /^dlv_[0-9A-Za-z]{20,}$/);
    assert.equal(request.headers['content-type'], 'application/json');
    assert.equal(request.headers['user-agent'], 'Accepted-Webhooks/1');
    assert.equal(request.headers['webhook-id'], delivered.eventId);
    assert.equal(
      request.headers['webhook-timestamp'],
      String(Math.floor(attempt.startedAt / 1000)),
    );
    const signatures = String(request.headers['webhook-signature']).split(' ');
    assert.deepEqual(
      signatures.map((s) => s.split(',')[0]),
      ['v1', 'v1a'],
    );
    const publicKey = publicKeyOf(ep.signingKey);
    const headers = {
      'webhook-id': request.headers['webhook-id'] ?? '',
      'webhook-timestamp': request.headers['webhook-timestamp'] ?? '',
      'webhook-signature': String(request.headers['webhook-signature']),
    };
    verifyWebhook(secret, headers, request.body);
    verifyWebhook(publicKey, headers, request.body);
    // The Standard Webhooks body: the event's type and time, the wire event as data.
    const [event] = (await svc.accepted.readEvents({ tenant: TENANT, operationId: op.id })).filter(
      (e) => e.type === 'operation.succeeded',
    );
    assert.ok(event);
    const body = JSON.parse(request.body) as {
      type: string;
      timestamp: string;
      data: { seq: number; operationId: string };
    };
    assert.equal(body.type, 'operation.succeeded');
    assert.equal(body.timestamp, new Date(event.time).toISOString());
    assert.equal(body.data.seq, event.seq);
    assert.equal(body.data.operationId, op.id);
    assert.equal(attempt.status, 200);
    assert.equal(attempt.error, null);
    assert.equal(attempt.responseBody, 'thanks');
    assert.ok(Number.isInteger(attempt.durationMs) && attempt.durationMs >= 0);
    await countersReach(svc, { delivered: 1 });
  });

  it('publicKeyOf gives the public half of a signing key', () => {
    const pair = generateSigningKeyPair();
    assert.equal(publicKeyOf(pair.secretKey), pair.publicKey);
  });

  it('records a receiver that is not there as CONNECT_FAILED without a status, and retries it', async () => {
    const svc = await service({ retrySchedule: [0] });
    const port = await closedPort();
    const { endpoint: ep } = await endpoint(svc, `http://127.0.0.1:${port}/nobody`);
    await submit(svc);
    const failed = await deliveryWhen(svc, ep.id, (d) => d.status === 'failed');
    const attempts = await svc.webhooks.store.listAttempts(failed.id, TENANT);
    assert.deepEqual(
      attempts.map((a) => [a.status, a.error]),
      [
        [null, 'CONNECT_FAILED'],
        [null, 'CONNECT_FAILED'],
      ],
    );
  });
});

/** A receiver that holds every request until the test releases it, in arrival order. */
async function holdingReceiver() {
  const waiting: (() => void)[] = [];
  const rx = await receiver(
    () =>
      new Promise<Reply>((resolve) => {
        waiting.push(() => resolve({ status: 200 }));
      }),
  );
  return { rx, releaseNext: () => waiting.shift()?.() };
}

describe('webhook service: the dispatcher and the sender', { timeout: 60_000 }, () => {
  it('leases the webhooks consumer for dispatchLeaseMs and each claim for twice the timeout and 5 s; a fresh lease is used without a read; stop waits for every attempt in flight, then gives the lease back', async () => {
    const { rx, releaseNext } = await holdingReceiver();
    const svc = await service({ dispatchLeaseMs: 60_000, timeoutMs: 3_000, concurrency: 3 });
    const { calls } = svc;
    const { endpoint: ep } = await endpoint(svc, `${rx.url}/held`);
    await submit(svc);
    await eventually(() => rx.received.length === 1);
    const acquires = () => calls.filter((c) => c.method === 'consumers.acquire');
    const [acquire] = acquires();
    assert.ok(acquire);
    assert.deepEqual(
      { ...(acquire.args[0] as object), now: 0 },
      { name: 'webhooks', holder: svc.webhooks.holder, leaseMs: 60_000, now: 0, startAt: 'latest' },
    );
    const relay = await svc.webhooks.relay();
    assert.equal(relay?.holder, svc.webhooks.holder);
    assert.equal(svc.webhooks.stats.dispatching, true);
    // A second operation's pass runs under the lease it holds (more than half left): no read
    // of the consumer, no new acquire.
    const reads = calls.filter((c) => c.method === 'consumers.get').length;
    await submit(svc);
    await eventually(() => rx.received.length === 2);
    assert.equal(calls.filter((c) => c.method === 'consumers.get').length, reads);
    assert.equal(acquires().length, 1);
    const dispatches = calls.filter((c) => c.method === 'webhooks.dispatchDeliveries');
    assert.ok(dispatches.every((c) => (c.args[0] as { limit: number }).limit === 500));
    const claims = calls
      .filter((c) => c.method === 'webhooks.claimDeliveries')
      .map((c) => c.args[0] as { limit: number; leaseMs: number });
    assert.deepEqual(claims[0], { ...claims[0], limit: 3, leaseMs: 3_000 * 2 + 5_000 });
    // Stopping with two requests held: stop waits for both answers and their records, not
    // only the first (its timeout is longer than this test's).
    let stopped = false;
    const stopping = svc.webhooks.stop(600_000).then(() => {
      stopped = true;
    });
    releaseNext();
    await eventually(async () =>
      (await deliveriesOf(svc, ep.id)).some((d) => d.status === 'delivered'),
    );
    await pause(50);
    assert.equal(stopped, false, 'stop waits for the attempt still in flight');
    releaseNext();
    await stopping;
    const deliveries = await deliveriesOf(svc, ep.id);
    assert.deepEqual(
      deliveries.map((d) => d.status),
      ['delivered', 'delivered'],
      'recorded before stop returned',
    );
    const released = await svc.webhooks.relay();
    assert.equal(released?.holder, null, 'the lease is given back');
    assert.equal(svc.webhooks.stats.dispatching, false);
    await svc.webhooks.stop(); // a second stop is nothing
  });

  it('never has more attempts in flight than its concurrency, and sends every one', async () => {
    // Every request is held until the test lets it go: with seven deliveries due, exactly two
    // are in flight; each one let go makes room for the next.
    const { rx, releaseNext } = await holdingReceiver();
    const svc = await service({ concurrency: 2 });
    const { endpoint: ep } = await endpoint(svc, `${rx.url}/two-at-a-time`);
    for (let i = 0; i < 7; i++) await submit(svc);
    await eventually(async () => (await deliveriesOf(svc, ep.id)).length === 7);
    // Claimed, too: the sender's sockets are bounded as well, so a claim past the bound would
    // hold deliveries under a lease without sending them.
    const claimed = () =>
      svc.calls
        .filter((c) => c.method === 'webhooks.claimDeliveries')
        .reduce((n, c) => n + (Array.isArray(c.result) ? c.result.length : 0), 0);
    for (let sent = 2; sent <= 7; sent++) {
      await eventually(() => rx.received.length >= sent);
      await pause(30); // time for a third to start, were the bound not kept
      assert.equal(rx.received.length, sent, `${sent} sent, two at a time`);
      assert.equal(claimed(), sent, `${sent} claimed, two at a time`);
      releaseNext();
    }
    releaseNext();
    await eventually(async () =>
      (await deliveriesOf(svc, ep.id)).every((d) => d.status === 'delivered'),
    );
    await countersReach(svc, { delivered: 7 });
    assert.match(svc.webhooks.holder, new RegExp(`^${hostname()}:${process.pid}:[0-9a-f]{8}$`));
  });

  it('passes asked for at once make one sender pass at a time: never more claimed than its concurrency', async () => {
    // Three failed deliveries (one per endpoint, by label) replayed at the same moment: each
    // replay asks the sender for a pass; passes side by side would each claim the free slot.
    const { rx, releaseNext } = await holdingReceiver();
    const failing = await receiver(() => ({ status: 500 }));
    const svc = await service({ concurrency: 1, pollIntervalMs: 60_000, retrySchedule: [] });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { endpoint: ep } = await svc.webhooks.createEndpoint(TENANT, {
        url: `${failing.url}/failing-${i}`,
        eventTypes: ['operation.succeeded'],
        labels: { n: String(i) },
      });
      await svc.accepted.submit('demo.echo', null, { tenant: TENANT, labels: { n: String(i) } });
      const d = await deliveryWhen(svc, ep.id, (x) => x.status === 'failed');
      ids.push(d.id);
      await svc.webhooks.updateEndpoint(TENANT, ep.id, { url: `${rx.url}/back-${i}` }, undefined);
    }
    const claimedSoFar = () =>
      svc.calls
        .filter((c) => c.method === 'webhooks.claimDeliveries')
        .reduce((n, c) => n + (Array.isArray(c.result) ? c.result.length : 0), 0);
    await eventually(() => claimedSoFar() === 3); // the three first attempts' claims, recorded
    await Promise.all(ids.map((id) => svc.webhooks.replayDelivery(TENANT, id)));
    for (let sent = 1; sent <= 3; sent++) {
      await eventually(() => rx.received.length >= sent);
      await pause(30);
      assert.equal(claimedSoFar() - 3, sent, `${sent} claimed, one at a time`);
      releaseNext();
    }
    await eventually(async () => (await deliveriesOf(svc)).every((d) => d.status === 'delivered'));
  });

  it('renews its own lease under the same token once half of it has passed, and reads nothing while idle; a node started after it reads the consumer once and takes nothing', async () => {
    const rx = await receiver();
    const a = await service({ dispatchLeaseMs: 8_000 });
    const { calls } = a;
    const { endpoint: ep } = await endpoint(a, `${rx.url}/renewed`);
    await submit(a);
    await deliveryWhen(a, ep.id, (d) => d.status === 'delivered');
    const first = calls.find((c) => c.method === 'consumers.acquire');
    const token = (first?.result as { token?: string } | undefined)?.token;
    assert.ok(token);
    // Idle: the poll reads whether anything is due, and does nothing else.
    await pause(100);
    const mark = calls.length;
    await pause(300);
    assert.deepEqual(
      [...new Set(calls.slice(mark).map((c) => c.method))].filter(
        (m) => m !== 'webhooks.nextDeliveryAt' && m !== 'store.lastSeq',
      ),
      [],
      'an idle service only reads',
    );
    // Past half the lease: a pass with nothing new reads the consumer and writes nothing.
    await pause(4_100);
    const past = calls.length;
    await endpoint(a, `${rx.url}/nothing-new`); // asks for a pass
    await eventually(() => calls.slice(past).some((c) => c.method === 'consumers.get'));
    await pause(50);
    assert.equal(calls.slice(past).filter((c) => c.method === 'consumers.acquire').length, 0);
    // With something to dispatch it renews the lease, still running, under the same token.
    await submit(a);
    await eventually(async () => (await deliveriesOf(a, ep.id)).length === 2);
    const renewals = calls.slice(past).filter((c) => c.method === 'consumers.acquire');
    assert.deepEqual(
      renewals.map((c) => (c.result as { token?: string } | null)?.token),
      [token],
    );
    // Another node, started once everything is dispatched, reads the consumer once and does
    // not take it, however long it idles.
    await a.webhooks.stop();
    const mark2 = calls.length;
    const b = await service({ accepted: a.accepted as Accepted & { observer: Observer } });
    await pause(400);
    const byB = calls.slice(mark2);
    assert.equal(byB.filter((c) => c.method === 'consumers.get').length, 1);
    assert.equal(byB.filter((c) => c.method === 'consumers.acquire').length, 0);
    assert.equal(byB.filter((c) => c.method === 'webhooks.dispatchDeliveries').length, 0);
    assert.equal(b.webhooks.stats.dispatching, false);
  });

  it('dispatches a backlog of more than one batch of events in one go', async () => {
    const rx = await receiver();
    const first = await service();
    const { endpoint: ep } = await endpoint(first, `${rx.url}/backlog`);
    await submit(first);
    await deliveryWhen(first, ep.id, (d) => d.status === 'delivered');
    await first.webhooks.stop();
    // 400 operations (1,200 events) while no service runs; then one starts from the position.
    const ops = [];
    for (let i = 0; i < 400; i++) ops.push(submit(first));
    await Promise.all(ops);
    const seq = 3 + 3 * 400;
    await eventually(async () => (await first.accepted.lastSeq()) >= seq);
    const next = await service({ accepted: first.accepted as Accepted & { observer: Observer } });
    await eventually(async () => {
      const page = await next.webhooks.store.listDeliveries({
        tenant: TENANT,
        endpointId: ep.id,
        status: ['delivered'],
        limit: 500,
      });
      return page.items.length === 401;
    }, 30_000);
    await countersReach(next, { dispatched: 400 });
  });

  it("waits while another node's lease runs, asking for nothing, then takes over from where it stopped; stop with nothing in flight returns at once", async () => {
    const accepted = await engine();
    const consumers = accepted.store.consumers;
    assert.ok(consumers);
    const other = await consumers.acquire({
      name: 'webhooks',
      holder: 'another-node',
      leaseMs: 1_500,
      now: Date.now(),
      startAt: 'latest',
    });
    assert.ok(other);
    const svc = await service({ accepted, dispatchLeaseMs: 1_000 });
    const rx = await receiver();
    const { endpoint: ep } = await endpoint(svc, `${rx.url}/later`);
    await submit(svc);
    // A pass has read the consumer (and its lag) and left it to the other node.
    await eventually(() => svc.webhooks.stats.lag > 0);
    assert.equal(svc.webhooks.stats.dispatching, false);
    assert.equal((await svc.webhooks.relay())?.holder, 'another-node');
    assert.deepEqual(await deliveriesOf(svc, ep.id), []);
    const mine = () =>
      svc.calls.filter(
        (c) =>
          c.method === 'consumers.acquire' &&
          (c.args[0] as { holder: string }).holder === svc.webhooks.holder,
      );
    assert.equal(mine().length, 0, 'no acquire while the other lease runs');
    // The other node's lease runs out: the poll's next pass takes the consumer over.
    await deliveryWhen(svc, ep.id, (d) => d.status === 'delivered');
    assert.equal((await svc.webhooks.relay())?.holder, svc.webhooks.holder);
    assert.equal(svc.webhooks.stats.dispatching, true);
    assert.ok(mine().length > 0);
    await eventually(() => svc.webhooks.stats.lag === 0);
    await svc.webhooks.stop(600_000); // nothing in flight: no wait for its timeout
  });

  it('a node whose lease another took meanwhile (clocks apart) warns and stops dispatching', async () => {
    const svc = await service({ dispatchLeaseMs: 60_000 });
    const rx = await receiver();
    const { endpoint: ep } = await endpoint(svc, `${rx.url}/taken`);
    await submit(svc);
    await deliveryWhen(svc, ep.id, (d) => d.status === 'delivered');
    // A node whose clock is two minutes ahead sees the lease over and takes it.
    const consumers = svc.accepted.store.consumers;
    assert.ok(consumers);
    const taken = await consumers.acquire({
      name: 'webhooks',
      holder: 'ahead',
      leaseMs: 60_000,
      now: Date.now() + 120_000,
    });
    assert.ok(taken);
    await submit(svc);
    await eventually(() => svc.logger.lines.some((l) => l.level === 'warn'));
    const warning = svc.logger.lines.find((l) => l.level === 'warn');
    assert.equal(warning?.msg, 'webhook dispatcher lease lost to another node');
    assert.equal((warning?.obj.err as { code?: string } | undefined)?.code, 'LEASE_LOST');
    assert.equal(svc.webhooks.stats.dispatching, false);
    assert.equal((await deliveriesOf(svc, ep.id)).length, 1, 'nothing dispatched under it');
  });

  it('a store failing a poll, a dispatch, a claim, a record or the purge: logged at error level with what failed, and the work goes on', async () => {
    const observer = newObserver();
    const accepted = await engine(observer);
    const away = () => new Error('the store is away');
    observer.faults.set('webhooks.purgeDeliveries', away());
    const svc = await service({ accepted });
    const errors = () => svc.logger.lines.filter((l) => l.level === 'error');
    const logged = (msg: string) => eventually(() => errors().some((l) => l.msg === msg));
    await logged('webhook retention cleanup failed');
    const rx = await receiver();
    const { endpoint: ep } = await endpoint(svc, `${rx.url}/faults`);
    // A poll's read of the log fails: the next poll retries.
    observer.faults.set('store.lastSeq', away());
    await eventually(() => !observer.faults.has('store.lastSeq'));
    await eventually(() => errors().length > 1);
    assert.match(
      errors()
        .map((l) => l.msg)
        .join('\n'),
      /webhook (poll|dispatch) failed; the next (poll|event or poll) retries/,
    );
    // A dispatch fails: the next poll dispatches the event.
    observer.faults.set('webhooks.dispatchDeliveries', away());
    await submit(svc);
    await logged('webhook dispatch failed; the next event or poll retries');
    await deliveryWhen(svc, ep.id, (d) => d.status === 'delivered');
    // A claim fails: the next poll claims.
    observer.faults.set('webhooks.claimDeliveries', away());
    await submit(svc);
    await logged('webhook claim failed; the next poll retries');
    await eventually(async () =>
      (await deliveriesOf(svc, ep.id)).every((d) => d.status === 'delivered'),
    );
    assert.equal((await deliveriesOf(svc, ep.id)).length, 2);
    // A record fails: logged with the delivery; its lease lets another claim send it later.
    observer.faults.set('webhooks.recordAttempt', away());
    await submit(svc);
    await logged('webhook attempt failed');
    const failed = errors().find((l) => l.msg === 'webhook attempt failed');
    const pending = (await deliveriesOf(svc, ep.id)).find((d) => d.status === 'pending');
    assert.ok(pending);
    assert.equal(failed?.obj.delivery, pending.id);
    for (const line of errors()) assert.equal((line.obj.err as Error).message, 'the store is away');
    // Giving the lease back fails: a warning, and stop returns all the same (the lease expires).
    observer.faults.set('consumers.release', away());
    await svc.webhooks.stop(100);
    const warning = svc.logger.lines.find(
      (l) => l.level === 'warn' && l.msg === 'webhook dispatcher lease not released; it expires',
    );
    assert.equal((warning?.obj.err as Error | undefined)?.message, 'the store is away');
  });

  it('a retry due before the next poll wakes the sender itself, once, not in a loop; replays send at once', async () => {
    // The poll is a minute away: only the sender's own wake-ups can send in time.
    const svc = await service({ retrySchedule: [400], pollIntervalMs: 60_000 });
    const statuses = [503, 200, 500, 500, 200];
    const rx = await receiver((_request, index) => ({ status: statuses[index] ?? 200 }));
    const { endpoint: ep } = await endpoint(svc, `${rx.url}/woken`);
    await submit(svc);
    const retrying = await deliveryWhen(svc, ep.id, (d) => d.attempts === 1, 30_000);
    const mark = svc.calls.length;
    const delivered = await deliveryWhen(svc, ep.id, (d) => d.status === 'delivered', 30_000);
    assert.equal(delivered.id, retrying.id);
    assert.equal(delivered.attempts, 2);
    // While it waited for the retry, the sender looked a few times, not in a loop.
    const looks = svc.calls.slice(mark).filter((c) => c.method === 'webhooks.nextDeliveryAt');
    assert.ok(looks.length <= 10, `${looks.length} looks while waiting 400 ms`);
    // Replayed: sent at once, failed, retried on the fresh schedule, failed for good.
    await svc.webhooks.replayDelivery(TENANT, delivered.id);
    const failed = await deliveryWhen(svc, ep.id, (d) => d.status === 'failed', 30_000);
    assert.equal(failed.attempts, 4);
    // Recovered with the endpoint's failed deliveries since a time: sent at once.
    assert.equal(await svc.webhooks.replayEndpoint(TENANT, ep.id, 0), 1);
    await deliveryWhen(svc, ep.id, (d) => d.status === 'delivered' && d.attempts === 5, 30_000);
    assert.equal(rx.received.length, 5);
    // An endpoint disabled while its retry was due gets it at once when enabled again.
    rx.answer = (_request, index) => ({ status: index === 5 ? 500 : 200 });
    await svc.webhooks.updateEndpoint(TENANT, ep.id, { eventTypes: null }, undefined);
    const op = await submit(svc);
    const queued = await deliveryWhen(
      svc,
      ep.id,
      (d) => d.operationId === op.id && d.attempts === 1 && d.status === 'pending',
      30_000,
    );
    await svc.webhooks.updateEndpoint(TENANT, ep.id, { enabled: false }, undefined);
    await pause(600); // past the retry's 400 ms: due, but its endpoint is disabled
    await svc.webhooks.updateEndpoint(TENANT, ep.id, { enabled: true }, undefined);
    await deliveryWhen(svc, ep.id, (d) => d.id === queued.id && d.status === 'delivered', 30_000);
  });

  it('purges finished deliveries older than retentionMs when it starts, a thousand at a time, and keeps pending ones', async () => {
    const accepted = await engine();
    const { calls } = accepted.observer;
    const store = accepted.store.webhooks;
    const consumers = accepted.store.consumers;
    assert.ok(store && consumers);
    // 1,001 deliveries made two minutes ago and failed since (their endpoint was deleted),
    // and as many to an endpoint disabled before it could be sent to, pending.
    const rx = await receiver();
    const setup = await service({ accepted }, { start: false });
    assert.equal(setup.webhooks.stats.dispatching, false);
    const { endpoint: old } = await endpoint(setup, `${rx.url}/old`);
    const { endpoint: kept } = await endpoint(setup, `${rx.url}/kept`);
    const ops = [];
    for (let i = 0; i < 1_001; i++) ops.push(submit(setup));
    await Promise.all(ops);
    await eventually(async () => (await accepted.lastSeq()) >= 3 * 1_001);
    const twoMinutesAgo = Date.now() - 120_000;
    let lease = await consumers.acquire({
      name: 'webhooks',
      holder: 'setup',
      leaseMs: 60_000,
      now: twoMinutesAgo,
      startAt: 'earliest',
    });
    assert.ok(lease);
    let made = 0;
    for (;;) {
      const pass = await store.dispatchDeliveries({
        lease,
        limit: 500,
        now: twoMinutesAgo,
        newId: () => `dlv_${Math.random().toString(36).slice(2)}`,
        newSecret: () => 'whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==',
        payload: (event) => JSON.stringify({ type: event.type }),
      });
      lease = pass.lease;
      made += pass.deliveries;
      if (pass.events < 500) break;
    }
    assert.equal(made, 2 * 1_001);
    await consumers.release(lease);
    await setup.webhooks.updateEndpoint(TENANT, kept.id, { enabled: false }, undefined);
    await setup.webhooks.deleteEndpoint(TENANT, old.id, undefined);
    // The service starts: retention removes every finished one of two minutes ago.
    calls.length = 0;
    await service({ accepted, retentionMs: 60_000 });
    await eventually(async () => {
      const page = await store.listDeliveries({ tenant: TENANT, status: ['failed'], limit: 1 });
      return page.items.length === 0;
    });
    const purges = calls
      .filter((c) => c.method === 'webhooks.purgeDeliveries')
      .map((c) => c.args as [number, number]);
    assert.equal(purges.length, 2, 'a thousand, then the one left');
    assert.ok(purges.every(([, limit]) => limit === 1_000));
    const [cutoff] = purges[0] ?? [0];
    assert.ok(
      cutoff > twoMinutesAgo && cutoff <= Date.now() - 60_000,
      'the cut is retentionMs ago',
    );
    const left = await store.listDeliveries({ tenant: TENANT, endpointId: kept.id, limit: 1 });
    assert.equal(left.items[0]?.status, 'pending', 'pending ones stay');
  });

  it('refuses a store without the webhooks or consumers capabilities, naming them', async () => {
    for (const hide of [['webhooks'], ['consumers'], ['webhooks', 'consumers']] as const) {
      const accepted = await startEngine({
        operations: demoOperations,
        store: observedStore(testStore(), newObserver(), [...hide]),
      });
      assert.throws(
        () => createWebhooks({ accepted }),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError);
          assert.equal(error.option, 'store');
          assert.equal(
            error.message,
            `Webhooks need a store with the ${hide.join(' and ')} capabilities (${hide.map((h) => `store.${h}`).join(', ')}); the ${accepted.store.kind} store has not.`,
          );
          assert.match(error.fix ?? '', /SQLite and PostgreSQL stores/);
          return true;
        },
      );
    }
  });
});
