// Latency from an operation's completion (its commit) to the long poll's answer, at idle, with
// the server and the client in one process so that both ends read one clock. For each of K
// samples: submit a `gate` operation (its handler waits for the benchmark), wait until it is
// running, park a long poll (`Prefer: wait=10`, `If-None-Match: "<running version>"`) on a
// keep-alive connection, then open the gate. t0 = the commit of its operation.succeeded event
// (seen by a store hint listener), t1 = the long poll's response fully read.
// Env: K (samples, default 200), WARMUP (discarded samples first, default 10). Prints one JSON
// line; `parked` counts samples whose first poll was still open when the gate opened (a server
// without long polling answers at once, and the client then polls until succeeded).
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createAccepted } from '../packages/accepted/src/index.ts';
import { createHttpServer } from '../packages/accepted/src/http/index.ts';
import { sqliteStore } from '../packages/accepted/src/store/sqlite/index.ts';
import { forgetGate, gate, gateOperation, openAllGates, percentile } from './common.ts';

const K = Number(process.env.K ?? 200);
const WARMUP = Number(process.env.WARMUP ?? 10);
const PARK_MS = 20;

interface Monitor {
  id: string;
  status: string;
  version: number;
}

interface Reply {
  status: number;
  body: string;
  /** performance.now() when the body had fully arrived. */
  end: number;
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-longpoll-bench-'));
const accepted = createAccepted({
  store: sqliteStore({ filename: path.join(dir, 'accepted.db') }),
  operations: [gateOperation],
  logger: { debug() {}, info() {}, warn: console.warn, error: console.error },
});
const app = createHttpServer({ accepted, logger: false });
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

/** performance.now() of each operation's operation.succeeded commit. */
const committed = new Map<string, number>();
let hintsWithoutEvents = 0;
const unsubscribe = accepted.store.subscribe((hint) => {
  const now = performance.now();
  if (!hint.events) {
    hintsWithoutEvents++;
    return;
  }
  for (const event of hint.events) {
    if (event.type === 'operation.succeeded') committed.set(event.operationId, now);
  }
});

try {
  await accepted.start();
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  const port = address.port;

  const request = (
    method: string,
    url: string,
    headers: Record<string, string> = {},
    body?: string,
  ): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port, method, path: url, agent, headers },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              body: Buffer.concat(chunks).toString('utf8'),
              end: performance.now(),
            }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });

  const monitorOf = (reply: Reply, what: string): Monitor => {
    if (reply.status !== 200 && reply.status !== 202) {
      throw new Error(`${what}: HTTP ${reply.status} ${reply.body}`);
    }
    return JSON.parse(reply.body) as Monitor;
  };

  /** Long-polls until the operation is succeeded; says whether the first poll was parked. */
  const longPoll = async (id: string, version: number) => {
    let polls = 0;
    let firstEnd = 0;
    for (;;) {
      const reply = await request('GET', `/v1/operations/${id}`, {
        prefer: 'wait=10',
        'if-none-match': `"${version}"`,
      });
      polls++;
      if (polls === 1) firstEnd = reply.end;
      if (reply.status === 304) continue;
      const monitor = monitorOf(reply, 'long poll');
      if (monitor.status === 'succeeded') return { reply, polls, firstEnd };
      if (monitor.status !== 'running') throw new Error(`unexpected status ${monitor.status}`);
      version = monitor.version;
    }
  };

  const latencies: number[] = [];
  const fromRelease: number[] = [];
  let parked = 0;
  let polls = 0;
  for (let i = 0; i < WARMUP + K; i++) {
    const submit = monitorOf(
      await request(
        'POST',
        '/v1/operations',
        { 'content-type': 'application/json' },
        JSON.stringify({ type: 'gate', input: { i } }),
      ),
      'submit',
    );
    const entry = gate(submit.id);
    await entry.started;
    let monitor = submit;
    while (monitor.status !== 'running') {
      monitor = monitorOf(await request('GET', `/v1/operations/${submit.id}`), 'get');
      if (monitor.status !== 'running') await sleep(1);
    }
    const poll = longPoll(submit.id, monitor.version);
    await sleep(PARK_MS);
    const released = performance.now();
    entry.open!();
    const result = await poll;
    const t0 = committed.get(submit.id);
    if (t0 === undefined) {
      throw new Error(`no commit hint with operation.succeeded for ${submit.id}`);
    }
    forgetGate(submit.id);
    committed.delete(submit.id);
    if (i < WARMUP) continue;
    latencies.push(result.reply.end - t0);
    fromRelease.push(result.reply.end - released);
    if (result.firstEnd > released) parked++;
    polls += result.polls;
  }
  latencies.sort((a, b) => a - b);
  fromRelease.sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      system: 'accepted-longpoll',
      store: 'sqlite-full',
      K,
      p50_ms: percentile(latencies, 0.5),
      p99_ms: percentile(latencies, 0.99),
      max_ms: percentile(latencies, 1),
      release_p50_ms: percentile(fromRelease, 0.5),
      release_p99_ms: percentile(fromRelease, 0.99),
      parked,
      polls_per_sample: Number((polls / K).toFixed(2)),
      hints_without_events: hintsWithoutEvents,
    }),
  );
} finally {
  unsubscribe();
  openAllGates();
  agent.destroy();
  await app.close();
  await accepted.stop({ graceful: false });
  fs.rmSync(dir, { recursive: true, force: true });
}
