// Latency of the push channels from an operation's completion (its commit) to each client's
// receipt of operation.succeeded, at idle, with the server and both clients in one process so
// that every end reads one clock (as `longpoll-latency.ts`). For each of K samples: submit a
// `gate` operation (its handler waits for the benchmark) and wait until its handler runs; open
// an SSE stream of that operation (`GET /v1/operations/{id}/events`, `accept:
// text/event-stream`, a raw http.request parsed with eventsource-parser) and subscribe to it on
// a WebSocket held open for the whole run (`{"type":"subscribe","operation":id}` on `/v1/ws`);
// once both have seen it running (a snapshot showing `running`, or `operation.started`), open
// the gate. t0 = the commit of its operation.succeeded event, seen by a store hint listener
// subscribed before the engine and the HTTP server; t1 = the arrival of that event's bytes at
// each client (taken before parsing). The two subscribe in turn, SSE first on even samples and
// WebSocket first on odd ones, so that neither is always written (and read) second;
// `sse_first` counts the samples where SSE's arrival was read first. Env: K (samples, default
// 200), WARMUP (discarded first, default 10), TIMEOUT_S (hard limit, default 300). Prints one
// JSON line.
import { createParser } from 'eventsource-parser';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { createAccepted } from '../packages/accepted/src/index.ts';
import { createHttpServer } from '../packages/accepted/src/http/index.ts';
import { sqliteStore } from '../packages/accepted/src/store/sqlite/index.ts';
import { forgetGate, gate, gateOperation, openAllGates, percentile, within } from './common.ts';

const K = Number(process.env.K ?? 200);
const WARMUP = Number(process.env.WARMUP ?? 10);
const TIMEOUT_S = Number(process.env.TIMEOUT_S ?? 300);
const STEP_TIMEOUT_MS = 10_000;

const hardTimeout = setTimeout(() => {
  console.error(`[stream-latency] hard timeout after ${TIMEOUT_S} s`);
  process.exit(2);
}, TIMEOUT_S * 1000);
hardTimeout.unref();

interface Monitor {
  id: string;
  status: string;
  version: number;
}

/** What a client saw of one operation: running yet, and when operation.succeeded arrived. */
interface Watch {
  running: Promise<void>;
  succeeded: Promise<number>;
  onRunning: () => void;
  onSucceeded: (t1: number) => void;
  fail: (error: Error) => void;
}
function watch(): Watch {
  let onRunning!: () => void;
  let onSucceeded!: (t1: number) => void;
  let failRunning!: (error: Error) => void;
  let failSucceeded!: (error: Error) => void;
  const running = new Promise<void>((resolve, reject) => {
    onRunning = resolve;
    failRunning = reject;
  });
  const succeeded = new Promise<number>((resolve, reject) => {
    onSucceeded = resolve;
    failSucceeded = reject;
  });
  running.catch(() => undefined);
  succeeded.catch(() => undefined);
  return {
    running,
    succeeded,
    onRunning,
    onSucceeded,
    fail: (error) => {
      failRunning(error);
      failSucceeded(error);
    },
  };
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-stream-bench-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true })); // hard timeout too
const store = sqliteStore({ filename: path.join(dir, 'accepted.db') });
/** performance.now() of each operation's operation.succeeded commit. */
const committed = new Map<string, number>();
let hintsWithoutEvents = 0;
// Subscribed before the engine and the HTTP server: runs first on every hint.
const unsubscribe = store.subscribe((hint) => {
  const now = performance.now();
  if (!hint.events) {
    hintsWithoutEvents++;
    return;
  }
  for (const event of hint.events) {
    if (event.type === 'operation.succeeded') committed.set(event.operationId, now);
  }
});
const accepted = createAccepted({
  store,
  operations: [gateOperation],
  logger: { debug() {}, info() {}, warn: console.warn, error: console.error },
});
const app = createHttpServer({ accepted, logger: false });
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

let ws: WebSocket | null = null;
try {
  await accepted.start();
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  const port = address.port;

  const submit = (i: number): Promise<Monitor> =>
    new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/v1/operations',
          agent,
          headers: { 'content-type': 'application/json' },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const body = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode !== 202 && res.statusCode !== 200) {
              reject(new Error(`submit: HTTP ${res.statusCode} ${body}`));
            } else resolve(JSON.parse(body) as Monitor);
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ type: 'gate', input: { i } }));
    });

  /** Opens the SSE stream of one operation; `ended` settles when the server ends it. */
  const openSse = (id: string, seen: Watch): Promise<void> =>
    new Promise((resolve) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port,
          method: 'GET',
          path: `/v1/operations/${id}/events`,
          agent,
          headers: { accept: 'text/event-stream' },
        },
        (res) => {
          const type = res.headers['content-type'] ?? '';
          if (res.statusCode !== 200 || !type.startsWith('text/event-stream')) {
            res.resume();
            seen.fail(new Error(`SSE: HTTP ${res.statusCode} ${type}`));
            resolve();
            return;
          }
          let stamp = 0;
          const parser = createParser({
            onEvent: (event) => {
              if (event.event === 'operation.snapshot') {
                const snapshot = JSON.parse(event.data) as { operation?: Monitor };
                if (snapshot.operation?.status === 'running') seen.onRunning();
              } else if (event.event === 'operation.started') {
                seen.onRunning();
              } else if (event.event === 'operation.succeeded') {
                seen.onSucceeded(stamp);
              }
            },
          });
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            stamp = performance.now();
            parser.feed(chunk);
          });
          res.on('end', () => {
            seen.fail(new Error('SSE stream ended before operation.succeeded'));
            resolve();
          });
          res.on('error', (error) => {
            seen.fail(error);
            resolve();
          });
        },
      );
      req.on('error', (error) => {
        seen.fail(error);
        resolve();
      });
      req.end();
    });

  // One WebSocket for the whole run; each sample subscribes to its operation.
  interface WsMessage {
    type: string;
    id?: number | string;
    subscription?: string;
    operation?: Monitor;
    event?: { type: string; operationId: string };
    code?: string;
    message?: string;
  }
  let wsWatch: { id: string; seen: Watch; complete: () => void } | null = null;
  const socket = new WebSocket(`ws://127.0.0.1:${port}/v1/ws`, { perMessageDeflate: false });
  ws = socket;
  const welcome = new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.once('close', (code) => reject(new Error(`WebSocket closed (${code})`)));
    socket.on('message', (data: Buffer) => {
      const stamp = performance.now();
      const message = JSON.parse(data.toString('utf8')) as WsMessage;
      if (message.type === 'welcome') {
        resolve();
        return;
      }
      const current = wsWatch;
      if (!current) return;
      if (message.type === 'error') {
        current.seen.fail(new Error(`WebSocket error ${message.code}: ${message.message}`));
      } else if (message.type === 'snapshot' && message.operation?.id === current.id) {
        if (message.operation.status === 'running') current.seen.onRunning();
      } else if (message.type === 'event' && message.event?.operationId === current.id) {
        if (message.event.type === 'operation.started') current.seen.onRunning();
        if (message.event.type === 'operation.succeeded') current.seen.onSucceeded(stamp);
      } else if (message.type === 'complete') {
        current.complete();
      }
    });
  });
  await within(welcome, STEP_TIMEOUT_MS, 'WebSocket welcome');

  const sse: number[] = [];
  const wsLatencies: number[] = [];
  let sseFirst = 0;
  for (let i = 0; i < WARMUP + K; i++) {
    const monitor = await submit(i);
    const entry = gate(monitor.id);
    await within(entry.started, STEP_TIMEOUT_MS, 'handler start');

    // Alternately SSE then WebSocket, and WebSocket then SSE: the server writes to its
    // subscribers in the order they subscribed, and the one written first is read first.
    const sseSeen = watch();
    const wsSeen = watch();
    let complete!: () => void;
    const completed = new Promise<void>((resolve) => (complete = resolve));
    let sseEnded: Promise<void> = Promise.resolve();
    const subscribeSse = async () => {
      sseEnded = openSse(monitor.id, sseSeen);
      await within(sseSeen.running, STEP_TIMEOUT_MS, 'SSE: running');
    };
    const subscribeWs = async () => {
      wsWatch = { id: monitor.id, seen: wsSeen, complete };
      socket.send(JSON.stringify({ type: 'subscribe', id: i, operation: monitor.id }));
      await within(wsSeen.running, STEP_TIMEOUT_MS, 'WebSocket: running');
    };
    if (i % 2 === 0) {
      await subscribeSse();
      await subscribeWs();
    } else {
      await subscribeWs();
      await subscribeSse();
    }

    entry.open!();
    const [tSse, tWs] = await Promise.all([
      within(sseSeen.succeeded, STEP_TIMEOUT_MS, 'SSE: operation.succeeded'),
      within(wsSeen.succeeded, STEP_TIMEOUT_MS, 'WebSocket: operation.succeeded'),
    ]);
    const t0 = committed.get(monitor.id);
    if (t0 === undefined) {
      throw new Error(`no commit hint with operation.succeeded for ${monitor.id}`);
    }
    await within(sseEnded, STEP_TIMEOUT_MS, 'SSE: end of stream after the terminal event');
    await within(completed, STEP_TIMEOUT_MS, 'WebSocket: complete');
    wsWatch = null;
    forgetGate(monitor.id);
    committed.delete(monitor.id);
    if (i < WARMUP) continue;
    sse.push(tSse - t0);
    wsLatencies.push(tWs - t0);
    if (tSse <= tWs) sseFirst++;
  }
  sse.sort((a, b) => a - b);
  wsLatencies.sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      bench: 'stream-latency',
      store: 'sqlite-full',
      K,
      sse_p50_ms: percentile(sse, 0.5),
      sse_p99_ms: percentile(sse, 0.99),
      sse_max_ms: percentile(sse, 1),
      ws_p50_ms: percentile(wsLatencies, 0.5),
      ws_p99_ms: percentile(wsLatencies, 0.99),
      ws_max_ms: percentile(wsLatencies, 1),
      sse_first: sseFirst,
      hints_without_events: hintsWithoutEvents,
    }),
  );
} finally {
  unsubscribe();
  openAllGates();
  ws?.terminate();
  agent.destroy();
  await Promise.race([app.close(), sleep(5000)]);
  await accepted.stop({ graceful: false });
  fs.rmSync(dir, { recursive: true, force: true });
  clearTimeout(hardTimeout);
}
