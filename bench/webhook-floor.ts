// The floor of `webhook-throughput.ts`: what one Node process sends to the same receiver
// (`webhook-receiver.ts`, a child process of its own) with no store at all. C loops POST N
// requests over a `node:http` keep-alive agent of C sockets (as Accepted's sender: keep-alive,
// noDelay, lifo); each is the same body, shaped and sized like an Accepted
// `operation.succeeded` delivery, signed for its own webhook-id with `webhookHeaders` (the
// same HMAC signing Accepted does per attempt; the receiver checks every 100th). The clock
// runs from the first request until the receiver has counted N.
// Env: N (default 20000), C (default 64), TIMEOUT_S (hard limit, default 120). Prints one JSON
// line.
import http from 'node:http';
import { DEFAULT_TENANT } from '../packages/accepted/src/index.ts';
import { toWireEvent } from '../packages/accepted/src/wire/monitor.ts';
import { eventId } from '../packages/accepted/src/domain/events.ts';
import {
  generateWebhookSecret,
  webhookHeaders,
} from '../packages/accepted/src/webhooks/signature.ts';
import { killAll, wallNow } from './fanout-ipc.ts';
import { launchReceiver } from './webhook-common.ts';

const N = Number(process.env.N ?? 20_000);
const C = Number(process.env.C ?? 64);
const TIMEOUT_S = Number(process.env.TIMEOUT_S ?? 120);

const hardTimeout = setTimeout(() => {
  console.error(`[webhook-floor] hard timeout after ${TIMEOUT_S} s`);
  void killAll(2000).finally(() => process.exit(2));
}, TIMEOUT_S * 1000);
hardTimeout.unref();

const now = Date.now();
const body = JSON.stringify({
  type: 'operation.succeeded',
  timestamp: new Date(now).toISOString(),
  data: toWireEvent({
    seq: 60_000,
    id: eventId(60_000),
    operationId: 'op_0VbfRq2UxUVjajQ1VuCwK6KozJfQEy',
    tenant: DEFAULT_TENANT,
    operationType: 'noop',
    labels: {},
    version: 3,
    type: 'operation.succeeded',
    data: { status: 'succeeded', attempt: 1, result: { ok: true } },
    time: now,
  }),
});
const secret = generateWebhookSecret();

const receiver = await launchReceiver();
const agent = new http.Agent({ keepAlive: true, maxSockets: C, scheduling: 'lifo', noDelay: true });
try {
  await receiver.arm(secret, N);
  const url = new URL(receiver.url);
  let failed = 0;
  const post = (i: number) =>
    new Promise<void>((resolve) => {
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method: 'POST',
          agent,
          headers: {
            'content-type': 'application/json',
            'user-agent': 'Accepted-Webhooks/1',
            ...webhookHeaders({
              id: `msg_${i}`,
              timestamp: Math.floor(Date.now() / 1000),
              body,
              secrets: [secret],
            }),
          },
        },
        (res) => {
          if (res.statusCode !== 204) failed++;
          res.resume();
          res.on('end', resolve);
          res.on('error', () => resolve());
        },
      );
      req.on('error', () => {
        failed++;
        resolve();
      });
      req.end(body);
    });

  let next = 0;
  const t0 = wallNow();
  await Promise.all(
    Array.from({ length: C }, async () => {
      while (next < N) await post(next++);
    }),
  );
  const counters = await receiver.wait(30_000);
  const ms = counters.last - t0;
  console.log(
    JSON.stringify({
      bench: 'webhook-floor',
      N,
      concurrency: C,
      per_s: Math.round(N / (ms / 1000)),
      ms: Math.round(ms),
      verified: counters.verified,
      verify_failures: counters.verifyFailures,
      failed,
      body_bytes: Math.round(counters.bytes / N),
    }),
  );
} finally {
  agent.destroy();
  await receiver.child.stop(5000);
}
