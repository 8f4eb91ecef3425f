// Soak: N operations through a real `accepted serve --demo` while webhooks fail half of their
// attempts and idle SSE clients hang on, watching the server's memory for growth and checking
// at the end that every webhook delivery ended delivered or dead. A benchmark, not a test: it
// prints figures (and `ok` with the problems it saw), it does not assert.
//
// The pieces, each its own process (two cores: the load generator and the receiver must not
// steal the server's event loop):
// - the server: `accepted serve --demo --port 0 --data <temp dir> --webhook-allow 127.0.0.1/32
//   --max-connections-per-ip 0`, run from source (`node --inspect=127.0.0.1:0 --import tsx
//   packages/accepted/src/cli/main.ts`), embedded SQLite store (durability full), every other
//   setting at its default (worker concurrency 32, webhook concurrency 64). The per-address
//   connection limit (default 1,000) is lifted because every client here is 127.0.0.1.
// - submits (this process): autocannon, C keep-alive connections, one request in flight on
//   each (C concurrent submitters), N POST /v1/operations of `demo.echo` (`{"n":1}`), 202 each.
// - webhooks: one endpoint, subscribed to the terminal events only (operation.succeeded,
//   operation.failed, operation.canceled: one delivery per operation, so the run is finite),
//   with its own `retrySchedule` RETRIES (default 1s,1s,1s: 4 attempts, then a dead letter;
//   each delay is 1 s ±20%, the endpoint minimum). The receiver (`soak-receiver.ts`, a child
//   process) fails by a hash of `webhook-id`: 1/2 of the deliveries get 204 at once, 3/8 a 500
//   then 204 on the retry, 1/8 a 500 every time (dead letters): half of all attempts fail.
// - idle SSE clients (`soak-clients.ts`, a child process): IDLE (default 1,000) streams held
//   open for the whole run. Idle means what a status page waiting on a scheduled job sees:
//   IDLE `demo.echo` operations submitted first with `runAt` a day ahead (queued, holding no
//   worker slot), one stream each, `GET /v1/operations/{id}/events` (STREAM=tenant:
//   `GET /v1/events?operation={id}`); they get their snapshot, then only `: keepalive`
//   heartbeats (every 15 s), none of the soak's events.
//
// Memory is read from the server process itself: RSS from /proc/<pid>/status (VmRSS, and the
// peak VmHWM); the V8 heap through the inspector the server runs with (--inspect on a free
// loopback port, a session opened only for each reading, nothing enabled): `process.memoryUsage()`
// evaluated in the server (heapUsed as it is), then `gc()` (the server also runs with
// --expose-gc: one full, synchronous collection, timed in the server as gc_ms; its pause shows
// in that window's submit latency) and memoryUsage again: the heap that is live. With GC=0 no
// collection is forced, the server gets no --expose-gc, and the heap after gc is not reported.
// The SQLite page cache (cache_size 64 MiB) is native memory, in RSS but not in the heap: RSS
// grows until it has filled, so judge RSS by a run long enough for that (the database passes
// 64 MiB at about 40,000 operations).
//
// Output: every N/SAMPLES operations (default every N/10) one JSON line on stderr (`"bench":
// "soak-window"`): ops done, server RSS, heap used and after gc, submit p50/p99 and throughput
// over that window, the server's CPU, the webhook progress (attempts, deliveries ended, those
// waiting for a retry, the backlog not yet attempted) and the SSE clients; during the drain a
// `soak-drain` line every 10 s. Once every delivery has ended, the outcome: from the store,
// read once the server has stopped (webhook_deliveries by status with their attempts, and
// webhook_attempts), checked against the receiver's own counts; from the API, none pending
// (GET /v1/webhooks/deliveries?status=pending) and, with API_COUNT=all, every delivered and
// dead delivery paged 500 at a time (their count and attempts must match the store).
// That route pages from the indexes (tenant, pk) and (tenant, status, pk) (the soak found it
// sorting every delivery of the tenant for each page before they existed: 3 to 6 s a page at
// 1,000,000 deliveries, on the server's event loop).
// The last line, on stdout (the only one there), has the totals: overall submit p50/p99/max,
// the memory series and its slope (least squares over the last 8 points, MB per 100,000
// operations, and bytes per operation; `flat` when within FLAT_MB), the webhook outcome
// counts and every check that failed (`problems`, `ok`).
//
// Env: N (operations, default 1,000,000), C (concurrent submitters, 64), IDLE (idle SSE
// clients, 1,000), STREAM (operation | tenant), RETRIES (the endpoint's retrySchedule, 1s,1s,1s),
// SAMPLES (memory readings, 10), GC (1: force a full GC before the post-gc heap reading; 0:
// not), FLAT_MB (slope within which a series counts as flat, MB per 100,000 operations,
// default 2), VERIFY_EVERY (the receiver checks every n-th signature, 100), STALL_S (the drain
// is stuck when no delivery has ended for this long: default 120, or 3 x the longest retry
// delay), DRAIN_TIMEOUT_S (a limit on the whole drain after the last submit, default none),
// API_COUNT (all | pending: page every delivery through the API, or only check that none is
// pending; default all), TIMEOUT_S (hard limit of the whole
// run, default 14,400), DATA_DIR (where the temp data folder goes, default the OS temp dir),
// KEEP_DATA=1 (leave it there), SERVER_ARGS (more `accepted serve` flags, space-separated,
// such as `--durability normal`).
// Through `BENCH_ONLY=soak npm run bench` the run is cut at run.ts's 600 s limit per benchmark:
// there, use an N that fits (`BENCH_ONLY=soak N=100000 npm run bench`); run 1,000,000 directly:
//   node --import tsx bench/soak.ts > soak.json 2> >(tee soak.log >&2)
import autocannon from 'autocannon';
import Database from 'better-sqlite3';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { killAll, launch, type Child } from './fanout-ipc.ts';
import type { ClientCounters } from './soak-clients.ts';
import type { ReceiverCounters } from './soak-receiver.ts';

const N = Number(process.env.N ?? 1_000_000);
const C = Number(process.env.C ?? 64);
const IDLE = Number(process.env.IDLE ?? 1000);
const STREAM = process.env.STREAM === 'tenant' ? 'tenant' : 'operation';
const RETRIES = (process.env.RETRIES ?? '1s,1s,1s')
  .split(',')
  .map((delay) => delay.trim())
  .filter((delay) => delay !== '');
const SAMPLES = Math.max(2, Number(process.env.SAMPLES ?? 10));
const FORCE_GC = process.env.GC !== '0';
const FLAT_MB = Number(process.env.FLAT_MB ?? 2);
const VERIFY_EVERY = Number(process.env.VERIFY_EVERY ?? 100);
const DRAIN_TIMEOUT_S = Number(process.env.DRAIN_TIMEOUT_S ?? 0);
/**
 * all: page every delivered and dead delivery through the API too. Each page of that route
 * costs the server a scan of every delivery of the tenant (see the note above), so listing
 * them all grows with N squared: the default pages them only up to 200,000 operations.
 */
const API_COUNT = (process.env.API_COUNT ?? 'all') as 'all' | 'pending';
/** Milliseconds of one retry delay (`1s`, `500ms`, `2m`, `1h`). */
function delayMs(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text);
  if (!match) throw new Error(`RETRIES: ${text} is not a delay such as 1s`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2]!]!;
  return Number(match[1]) * unit;
}
/** The drain is stuck when no delivery has ended for this long. */
const STALL_S = Number(
  process.env.STALL_S ?? Math.max(120, (3 * Math.max(0, ...RETRIES.map(delayMs))) / 1000),
);
const TIMEOUT_S = Number(process.env.TIMEOUT_S ?? 14_400);
const KEEP_DATA = process.env.KEEP_DATA === '1';
const SERVER_ARGS = (process.env.SERVER_ARGS ?? '').split(/\s+/).filter((arg) => arg !== '');
/** Points of the memory series the slope is fitted over. */
const FIT_POINTS = 8;
const MB = 1024 * 1024;

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const cli = path.join(root, 'packages', 'accepted', 'src', 'cli', 'main.ts');
const data = fs.mkdtempSync(path.join(process.env.DATA_DIR ?? os.tmpdir(), 'accepted-soak-'));

function toError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
const log = (line: Record<string, unknown>) => console.error(JSON.stringify(line));
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const round = (value: number, digits = 1) => Number(value.toFixed(digits));

// ---------------------------------------------------------------------------------------------
// The server child.

interface Server {
  child: ChildProcess;
  pid: number;
  url: string;
  inspector: string;
  /** Log lines at warn (40) or above: how many, and the first few. */
  warnings: { count: number; errors: number; first: string[] };
  /** Set when the child has exited. */
  exit: { code: number | null; signal: string | null } | null;
  exited: Promise<void>;
}

let server: Server | null = null;

function cleanUp(): void {
  server?.child.kill('SIGKILL');
  if (!KEEP_DATA) fs.rmSync(data, { recursive: true, force: true });
}
process.on('exit', cleanUp);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    console.error(`[soak] ${signal}: stopping`);
    server?.child.kill('SIGKILL');
    void killAll(2000).finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  });
}
const hardTimeout = setTimeout(() => {
  console.error(`[soak] hard timeout after ${TIMEOUT_S} s`);
  server?.child.kill('SIGKILL');
  void killAll(2000).finally(() => process.exit(2));
}, TIMEOUT_S * 1000);
hardTimeout.unref();

async function startServer(): Promise<Server> {
  const child = spawn(
    process.execPath,
    [
      '--inspect=127.0.0.1:0',
      ...(FORCE_GC ? ['--expose-gc'] : []),
      '--import',
      'tsx',
      cli,
      'serve',
      '--demo',
      '--port',
      '0',
      '--data',
      data,
      '--webhook-allow',
      '127.0.0.1/32',
      '--max-connections-per-ip',
      '0',
      ...SERVER_ARGS,
    ],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const warnings = { count: 0, errors: 0, first: [] as string[] };
  // The server's own lines go to stderr, the first 100 only (run.ts buffers stderr).
  let echoed = 0;
  const echo = (line: string) => {
    if (++echoed <= 100) console.error(`[server] ${line}`);
    else if (echoed === 101) console.error('[server] (more lines not shown)');
  };
  const state: Server = {
    child,
    pid: child.pid ?? -1,
    url: '',
    inspector: '',
    warnings,
    exit: null,
    exited: new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        state.exit = { code, signal };
        resolve();
      });
    }),
  };
  let onUrl!: (url: string) => void;
  let onInspector!: (url: string) => void;
  const ready = Promise.all([
    new Promise<string>((resolve) => (onUrl = resolve)),
    new Promise<string>((resolve) => (onInspector = resolve)),
  ]);
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    let entry: { level?: number; msg?: string; url?: string };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      echo(line);
      return;
    }
    if (entry.msg === 'accepted ready' && entry.url) onUrl(entry.url);
    // The local-development notice at start is expected; every other warning is shown.
    if ((entry.level ?? 0) >= 40 && !entry.msg?.startsWith('local development mode')) {
      warnings.count++;
      if ((entry.level ?? 0) >= 50) warnings.errors++;
      if (warnings.first.length < 10) warnings.first.push(line.slice(0, 1000));
      echo(line);
    }
  });
  readline.createInterface({ input: child.stderr }).on('line', (line) => {
    const inspector = /^Debugger listening on (ws:\/\/\S+)/.exec(line);
    if (inspector) onInspector(inspector[1]!);
    // The inspector's own notices, at start and at each reading.
    else if (
      !/^(For help, see|Debugger attached|Debugger ending|Waiting for the debugger)/.test(line)
    ) {
      echo(line);
    }
  });
  let timer: NodeJS.Timeout | undefined;
  const [url, inspector] = await Promise.race([
    ready,
    state.exited.then(() => {
      throw new Error(`the server exited at start (${JSON.stringify(state.exit)})`);
    }),
    new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error('the server was not ready after 60 s')), 60_000);
    }),
  ]).finally(() => clearTimeout(timer));
  state.url = url;
  state.inspector = inspector;
  return state;
}

/** Ends the server: SIGTERM (its graceful drain), SIGKILL after `graceMs`. */
async function stopServer(s: Server, graceMs = 30_000): Promise<void> {
  if (s.exit) return;
  s.child.kill('SIGTERM');
  const timer = setTimeout(() => s.child.kill('SIGKILL'), graceMs);
  await s.exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------
// Readings of the server process.

interface Memory {
  /** VmRSS, MB (after the forced GC when GC=1). */
  rss_mb: number;
  /** VmHWM: the peak RSS so far, MB. */
  rss_peak_mb: number;
  /** process.memoryUsage().heapUsed as it was, MB. */
  heap_used_mb: number;
  /** heapUsed after a full GC (null with GC=0), MB. */
  heap_after_gc_mb: number | null;
  heap_total_mb: number;
  external_mb: number;
  /** How long the forced GC took, as seen over the inspector (ms). */
  gc_ms: number | null;
}

function procStatus(pid: number): { rss: number; hwm: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
  return { rss: kb('VmRSS') * 1024, hwm: kb('VmHWM') * 1024 };
}

/** CPU seconds (user + system) of a process so far, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, USER_HZ
}

/** One inspector session: sequential calls, then close. */
async function inspect<T>(url: string, use: (call: Call) => Promise<T>): Promise<T> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  let nextId = 1;
  const waiting = new Map<number, (message: InspectorAnswer) => void>();
  ws.on('message', (raw: Buffer) => {
    const message = JSON.parse(raw.toString('utf8')) as InspectorAnswer;
    if (message.id !== undefined) waiting.get(message.id)?.(message);
  });
  const call: Call = (method, params) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      const timer = setTimeout(() => reject(new Error(`inspector: ${method} timed out`)), 60_000);
      waiting.set(id, (message) => {
        clearTimeout(timer);
        waiting.delete(id);
        if (message.error) reject(new Error(`inspector: ${method}: ${message.error.message}`));
        else resolve(message.result ?? {});
      });
      ws.send(JSON.stringify({ id, method, params }));
    });
  try {
    return await use(call);
  } finally {
    ws.close();
  }
}
interface InspectorAnswer {
  id?: number;
  result?: Record<string, unknown>;
  error?: { message: string };
}
type Call = (method: string, params?: Record<string, unknown>) => Promise<Record<string, unknown>>;

/** Evaluates `expression` in the server (its main thread, between two tasks): a JSON string. */
async function evaluate<T>(call: Call, expression: string): Promise<T> {
  const answer = await call('Runtime.evaluate', { expression, returnByValue: true });
  const value = (answer.result as { value?: unknown } | undefined)?.value;
  if (typeof value !== 'string') {
    throw new Error(`inspector: ${expression} gave ${JSON.stringify(answer).slice(0, 500)}`);
  }
  return JSON.parse(value) as T;
}

/** One full, synchronous collection (the server runs with --expose-gc), timed in the server. */
const GC_EXPRESSION =
  '(() => { const t = performance.now(); gc(); const ms = performance.now() - t; return JSON.stringify({ ms, usage: process.memoryUsage() }); })()';

async function readMemory(s: Server): Promise<Memory> {
  return inspect(s.inspector, async (call) => {
    const before = await evaluate<NodeJS.MemoryUsage>(
      call,
      'JSON.stringify(process.memoryUsage())',
    );
    let after: NodeJS.MemoryUsage | null = null;
    let gcMs: number | null = null;
    if (FORCE_GC) {
      const collected = await evaluate<{ ms: number; usage: NodeJS.MemoryUsage }>(
        call,
        GC_EXPRESSION,
      );
      gcMs = round(collected.ms);
      after = collected.usage;
    }
    const proc = procStatus(s.pid);
    return {
      rss_mb: round(proc.rss / MB),
      rss_peak_mb: round(proc.hwm / MB),
      heap_used_mb: round(before.heapUsed / MB),
      heap_after_gc_mb: after ? round(after.heapUsed / MB) : null,
      heap_total_mb: round((after ?? before).heapTotal / MB),
      external_mb: round((after ?? before).external / MB),
      gc_ms: gcMs,
    };
  });
}

// ---------------------------------------------------------------------------------------------
// The HTTP API.

async function api<T>(
  s: Server,
  method: string,
  route: string,
  body?: unknown,
  expect = 200,
): Promise<T> {
  const response = await fetch(`${s.url}${route}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status !== expect) {
    throw new Error(`${method} ${route}: ${response.status} ${text.slice(0, 500)}`);
  }
  return (text === '' ? null : JSON.parse(text)) as T;
}

interface WireDelivery {
  id: string;
  operationId: string;
  status: string;
  attempts: number;
  nextAttemptAt: string | null;
  lastStatus: number | null;
  lastError: string | null;
  createdAt: string;
}
interface DeliveryPage {
  items: WireDelivery[];
  nextCursor: string | null;
}

/** Every delivery of `status`, paged 500 at a time: how many, their attempts, last statuses. */
interface DeliveryCount {
  count: number;
  attempts: number;
  lastStatus: Record<string, number>;
}

async function countDeliveries(s: Server, status: string): Promise<DeliveryCount> {
  let count = 0;
  let attempts = 0;
  const lastStatus: Record<string, number> = {};
  let cursor: string | null = null;
  do {
    const query = `status=${status}&limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const page: DeliveryPage = await api<DeliveryPage>(
      s,
      'GET',
      `/v1/webhooks/deliveries?${query}`,
    );
    for (const delivery of page.items) {
      count++;
      attempts += delivery.attempts;
      const key = String(delivery.lastStatus ?? delivery.lastError ?? 'none');
      lastStatus[key] = (lastStatus[key] ?? 0) + 1;
    }
    cursor = page.nextCursor;
  } while (cursor);
  return { count, attempts, lastStatus };
}

// ---------------------------------------------------------------------------------------------
// Figures.

function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return round(sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))]!, 2);
}

/** Least-squares slope of y over x. */
function slope(points: readonly { x: number; y: number }[]): number | null {
  if (points.length < 2) return null;
  const mx = points.reduce((sum, p) => sum + p.x, 0) / points.length;
  const my = points.reduce((sum, p) => sum + p.y, 0) / points.length;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) ** 2;
  }
  return den === 0 ? null : num / den;
}

interface Point extends Memory {
  ops: number;
}

/** The slope of one memory figure over the last FIT_POINTS points, MB per 100,000 operations. */
function trend(series: readonly Point[], key: 'rss_mb' | 'heap_used_mb' | 'heap_after_gc_mb') {
  const points = series
    .slice(-FIT_POINTS)
    .filter((p) => p[key] !== null)
    .map((p) => ({ x: p.ops / 100_000, y: p[key]! }));
  const value = slope(points);
  return {
    slope_mb_per_100k: value === null ? null : round(value, 2),
    bytes_per_op: value === null ? null : Math.round((value * MB) / 100_000),
    flat: value === null ? null : Math.abs(value) <= FLAT_MB,
    points: points.length,
  };
}

// ---------------------------------------------------------------------------------------------
// The run.

const problems: string[] = [];
const problem = (text: string) => {
  problems.push(text);
  console.error(`[soak] PROBLEM: ${text}`);
};

let receiver: Child<{ port: number }> | null = null;
let clients: Child | null = null;
try {
  const t0 = performance.now();
  server = await startServer();
  const s = server;
  [receiver, clients] = await Promise.all([
    launch<{ port: number }>(path.join(here, 'soak-receiver.ts'), {}),
    launch(path.join(here, 'soak-clients.ts'), {}),
  ]);
  const rx = receiver;
  const cx = clients;
  const receiverCounters = () => rx.request<ReceiverCounters>('counters');
  const clientCounters = () => cx.request<ClientCounters>('counters');

  const endpoint = await api<{ id: string; secret: string }>(
    s,
    'POST',
    '/v1/webhooks/endpoints',
    {
      url: `http://127.0.0.1:${rx.info.port}/hooks`,
      description: 'soak',
      eventTypes: ['operation.succeeded', 'operation.failed', 'operation.canceled'],
      retrySchedule: RETRIES,
    },
    201,
  );
  const attemptsPerDelivery = RETRIES.length + 1;
  await rx.request('arm', {
    secret: endpoint.secret,
    attempts: attemptsPerDelivery,
    verifyEvery: VERIFY_EVERY,
  });

  // The idle streams: operations that wait a day to start, one stream each.
  const runAt = new Date(Date.now() + 86_400_000).toISOString();
  const idleIds: string[] = [];
  let nextIdle = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (nextIdle < IDLE) {
        const i = nextIdle++;
        const monitor = await api<{ id: string }>(
          s,
          'POST',
          '/v1/operations',
          { type: 'demo.echo', input: { idle: i }, runAt },
          202,
        );
        idleIds.push(monitor.id);
      }
    }),
  );
  const urls = idleIds.map((id) =>
    STREAM === 'tenant'
      ? `${s.url}/v1/events?operation=${id}`
      : `${s.url}/v1/operations/${id}/events`,
  );
  const opened = await cx.request<{ open: number; failed: number; errors: string[]; ms: number }>(
    'open',
    { urls, batch: 250 },
  );
  if (opened.failed > 0)
    problem(`${opened.failed} of ${IDLE} SSE streams did not open: ${opened.errors.join('; ')}`);
  await sleep(1000);

  const series: Point[] = [{ ops: 0, ...(await readMemory(s)) }];
  log({ bench: 'soak-start', N, C, idle_sse: opened.open, open_ms: opened.ms, ...series[0] });

  // Submits. Latencies by response, in arrival order; a window closes at each N/SAMPLES-th.
  const latencies = new Float64Array(N);
  let responses = 0;
  let non202 = 0;
  const statuses: Record<string, number> = {};
  const boundaries = Array.from({ length: SAMPLES }, (_, k) => Math.round(((k + 1) * N) / SAMPLES));
  let nextBoundary = 0;
  const windows: Record<string, unknown>[] = [];
  let readings: Promise<void> = Promise.resolve();
  const tSubmit = performance.now();
  let tSubmitted = 0;
  let last = { at: tSubmit, ops: 0, cpu: cpuSeconds(s.pid) };
  let lastHooks = { at: tSubmit, attempts: 0, finished: 0 };

  const closeWindow = (ops: number) => {
    const at = performance.now();
    const from = last.ops;
    const window = latencies.slice(from, ops).sort();
    const cpu = cpuSeconds(s.pid);
    const figures = {
      ops,
      window_s: round((at - last.at) / 1000, 2),
      submit_per_s: Math.round((ops - from) / ((at - last.at) / 1000)),
      submit_p50_ms: quantile(window, 0.5),
      submit_p99_ms: quantile(window, 0.99),
      submit_max_ms: quantile(window, 1),
      server_cpu_share: round((cpu - last.cpu) / ((at - last.at) / 1000), 2),
      non202,
    };
    last = { at, ops, cpu };
    readings = readings.then(async () => {
      const [memory, hooks, sse] = await Promise.all([
        readMemory(s),
        receiverCounters(),
        clientCounters(),
      ]);
      series.push({ ops, ...memory });
      const seen = hooks.firstOk + hooks.firstOnce + hooks.firstDead;
      const finished = hooks.firstOk + hooks.recovered + hooks.spent;
      const now = performance.now();
      const seconds = (now - lastHooks.at) / 1000;
      const rates = {
        webhook_attempts_per_s: Math.round((hooks.received - lastHooks.attempts) / seconds),
        deliveries_ended_per_s: Math.round((finished - lastHooks.finished) / seconds),
      };
      lastHooks = { at: now, attempts: hooks.received, finished };
      const line = {
        bench: 'soak-window',
        elapsed_s: round((performance.now() - t0) / 1000),
        ...figures,
        ...memory,
        webhook_attempts: hooks.received,
        webhook_attempts_failed: hooks.failed,
        deliveries_finished: finished,
        ...rates,
        deliveries_in_retry: hooks.onceWaiting + hooks.deadWaiting,
        /** Operations submitted whose delivery has not been attempted yet. */
        webhook_backlog: ops - seen,
        sse_open: sse.open,
        sse_dropped: sse.dropped,
        sse_heartbeats: sse.comments,
      };
      windows.push(line);
      log(line);
    });
  };

  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: `${s.url}/v1/operations`,
        method: 'POST',
        connections: C,
        amount: N,
        timeout: 60,
        headers: { 'content-type': 'application/json' },
        body: '{"type":"demo.echo","input":{"n":1}}',
      },
      (error: unknown, done) => (error ? reject(toError(error)) : resolve(done)),
    );
    instance.on('response', (_client, statusCode: number, _bytes, responseTime: number) => {
      if (responses >= N) return;
      latencies[responses++] = responseTime;
      if (responses === N) tSubmitted = performance.now();
      if (statusCode !== 202) {
        non202++;
        statuses[statusCode] = (statuses[statusCode] ?? 0) + 1;
      }
      if (responses === boundaries[nextBoundary]) {
        nextBoundary++;
        closeWindow(responses);
      }
    });
  });
  const submitMs = (tSubmitted || performance.now()) - tSubmit;
  await readings;
  if (result.errors > 0 || result.timeouts > 0 || responses !== N) {
    problem(
      `submits: ${responses}/${N} answered, ${result.errors} errors, ${result.timeouts} timeouts`,
    );
  }
  if (non202 > 0) problem(`submits: ${non202} answers were not 202 (${JSON.stringify(statuses)})`);
  if (s.exit) throw new Error(`the server exited during the run (${JSON.stringify(s.exit)})`);

  // Drain: until every delivery has ended (the receiver has seen each one to its end and the
  // API lists none pending).
  const tDrain = performance.now();
  const drainDeadline = DRAIN_TIMEOUT_S > 0 ? tDrain + DRAIN_TIMEOUT_S * 1000 : Infinity;
  let drained = false;
  let lastLog = 0;
  let hooks = await receiverCounters();
  let progress = { finished: -1, at: tDrain };
  let why = '';
  for (;;) {
    hooks = await receiverCounters();
    const finished = hooks.firstOk + hooks.recovered + hooks.spent;
    if (finished !== progress.finished) progress = { finished, at: performance.now() };
    let pending = -1;
    if (finished >= N) {
      const page = await api<DeliveryPage>(
        s,
        'GET',
        '/v1/webhooks/deliveries?status=pending&limit=1',
      );
      pending = page.items.length;
      if (pending === 0) {
        drained = true;
        break;
      }
    }
    const now = performance.now();
    if (now - lastLog > 10_000) {
      lastLog = now;
      log({
        bench: 'soak-drain',
        drain_s: round((now - tDrain) / 1000),
        deliveries_finished: finished,
        deliveries_in_retry: hooks.onceWaiting + hooks.deadWaiting,
        webhook_backlog: N - (hooks.firstOk + hooks.firstOnce + hooks.firstDead),
      });
    }
    if (now > drainDeadline) why = `${DRAIN_TIMEOUT_S} s after the last submit`;
    else if (now - progress.at > STALL_S * 1000) why = `no delivery ended for ${STALL_S} s`;
    else if (s.exit) why = `the server exited (${JSON.stringify(s.exit)})`;
    if (why) break;
    await sleep(250);
  }
  const drainMs = performance.now() - tDrain;
  let stuck: WireDelivery[] = [];
  if (!drained) {
    const page = await api<DeliveryPage>(
      s,
      'GET',
      '/v1/webhooks/deliveries?status=pending&limit=20',
    );
    stuck = page.items;
    problem(
      `deliveries not finished (${why}, ${round(drainMs / 1000)} s into the drain): the receiver saw ${hooks.firstOk + hooks.recovered + hooks.spent}/${N} end; pending (first 20): ${JSON.stringify(stuck.map((d) => ({ id: d.id, attempts: d.attempts, nextAttemptAt: d.nextAttemptAt, lastStatus: d.lastStatus, lastError: d.lastError })))}`,
    );
  }
  const drainedMemory = await readMemory(s);
  const sse = await clientCounters();

  // The outcome, from the API: none pending (one page), one default page of the log (timed:
  // what one look at it costs the server at this size), and with API_COUNT=all every delivery,
  // paged 500 at a time (each status in turn, timed).
  const pending = await countDeliveries(s, 'pending');
  const tPage = performance.now();
  await api<DeliveryPage>(s, 'GET', '/v1/webhooks/deliveries?limit=50');
  const firstPageMs = performance.now() - tPage;
  let paged: { delivered: DeliveryCount; dead: DeliveryCount; ms: number[] } | null = null;
  if (API_COUNT === 'all') {
    const t1 = performance.now();
    const delivered = await countDeliveries(s, 'delivered');
    const t2 = performance.now();
    const dead = await countDeliveries(s, 'failed');
    paged = { delivered, dead, ms: [t2 - t1, performance.now() - t2] };
  }
  hooks = await receiverCounters();

  // Stop: the SSE clients first (so that their streams ending is not a drop), then the server
  // (graceful), then the store is read directly (the server holds it with an exclusive lock).
  await cx.request('close');
  await stopServer(s);
  const stopExit = s.exit as { code: number | null; signal: string | null } | null;
  if (stopExit?.code !== 0) problem(`the server's shutdown ended with ${JSON.stringify(stopExit)}`);
  const db = new Database(path.join(data, 'accepted.db'), { fileMustExist: true });
  const storeDeliveries = db
    .prepare(
      'SELECT status, count(*) AS n, sum(attempts) AS attempts FROM webhook_deliveries GROUP BY status',
    )
    .all() as { status: string; n: number; attempts: number }[];
  const storeAttempts = db
    .prepare(
      'SELECT count(*) AS n, coalesce(sum(status >= 200 AND status < 300), 0) AS ok FROM webhook_attempts',
    )
    .get() as { n: number; ok: number };
  const storeOperations = db
    .prepare('SELECT status, count(*) AS n FROM operations GROUP BY status')
    .all() as { status: string; n: number }[];
  db.close();
  const dataBytes = fs
    .readdirSync(data)
    .reduce((sum, file) => sum + fs.statSync(path.join(data, file)).size, 0);

  // Checks.
  const expected = {
    delivered: hooks.firstOk + hooks.recovered,
    dead: hooks.spent,
    failed_attempts: hooks.failed,
    attempts: hooks.received,
  };
  const store = {
    delivered: storeDeliveries.find((row) => row.status === 'delivered') ?? { n: 0, attempts: 0 },
    dead: storeDeliveries.find((row) => row.status === 'failed') ?? { n: 0, attempts: 0 },
    total: storeDeliveries.reduce((sum, row) => sum + row.n, 0),
  };
  const storeFailedAttempts = storeAttempts.n - storeAttempts.ok;
  if (pending.count !== 0) problem(`${pending.count} deliveries still pending (API)`);
  if (store.total !== store.delivered.n + store.dead.n) {
    problem(`store: deliveries neither delivered nor dead: ${JSON.stringify(storeDeliveries)}`);
  }
  if (store.delivered.n + store.dead.n !== N) {
    problem(`store: delivered ${store.delivered.n} + dead ${store.dead.n} != ${N} operations`);
  }
  if (store.delivered.n !== expected.delivered || store.dead.n !== expected.dead) {
    problem(
      `store: delivered ${store.delivered.n}, dead ${store.dead.n}; the receiver answered 2xx for ${expected.delivered} ids and spent ${expected.dead}`,
    );
  }
  if (storeAttempts.n !== hooks.received || storeFailedAttempts !== hooks.failed) {
    problem(
      `store: ${storeAttempts.n} attempts, ${storeFailedAttempts} failed; the receiver got ${hooks.received}, answered 500 ${hooks.failed} times`,
    );
  }
  if (storeAttempts.n !== store.delivered.attempts + store.dead.attempts) {
    problem(
      `store: ${storeAttempts.n} attempt rows, the deliveries count ${store.delivered.attempts + store.dead.attempts}`,
    );
  }
  const apiAttempts = paged ? paged.delivered.attempts + paged.dead.attempts : null;
  if (
    paged &&
    (paged.delivered.count !== store.delivered.n ||
      paged.dead.count !== store.dead.n ||
      apiAttempts !== storeAttempts.n)
  ) {
    problem(
      `API: delivered ${paged.delivered.count}, dead ${paged.dead.count}, ${apiAttempts} attempts; the store: ${store.delivered.n}, ${store.dead.n}, ${storeAttempts.n}`,
    );
  }
  if (hooks.duplicates > 0) problem(`${hooks.duplicates} deliveries sent again after a 2xx`);
  if (hooks.overAttempts > 0) problem(`${hooks.overAttempts} attempts past the retry schedule`);
  if (hooks.verifyFailures > 0)
    problem(`${hooks.verifyFailures} signatures did not verify: ${hooks.errors.join('; ')}`);
  if (sse.dropped > 0)
    problem(`${sse.dropped} idle SSE streams dropped: ${sse.dropReasons.join('; ')}`);
  if (s.warnings.errors > 0) problem(`the server logged ${s.warnings.errors} errors`);

  const sorted = latencies.slice(0, responses).sort();
  const totalMs = performance.now() - t0;
  console.log(
    JSON.stringify({
      bench: 'soak',
      ok: problems.length === 0,
      store: 'sqlite-full',
      N,
      submitters: C,
      idle_sse: IDLE,
      sse_stream: STREAM === 'tenant' ? '/v1/events?operation={id}' : '/v1/operations/{id}/events',
      retry_schedule: RETRIES,
      gc_forced: FORCE_GC,
      duration_s: round(totalMs / 1000),
      submit_s: round(submitMs / 1000),
      submit_per_s: Math.round(N / (submitMs / 1000)),
      submit_p50_ms: quantile(sorted, 0.5),
      submit_p99_ms: quantile(sorted, 0.99),
      submit_p999_ms: quantile(sorted, 0.999),
      submit_max_ms: quantile(sorted, 1),
      drain_s: round(drainMs / 1000),
      /** From the first submit until every delivery had ended. */
      e2e_per_s: Math.round(N / ((submitMs + drainMs) / 1000)),
      memory: {
        rss: trend(series, 'rss_mb'),
        heap_used: trend(series, 'heap_used_mb'),
        heap_after_gc: FORCE_GC ? trend(series, 'heap_after_gc_mb') : null,
        flat_within_mb_per_100k: FLAT_MB,
        series: series.map((p) => ({
          ops: p.ops,
          rss_mb: p.rss_mb,
          heap_used_mb: p.heap_used_mb,
          heap_after_gc_mb: p.heap_after_gc_mb,
        })),
        rss_peak_mb: drainedMemory.rss_peak_mb,
        after_drain: drainedMemory,
      },
      webhooks: {
        /** From the store, once the server had stopped. */
        delivered: store.delivered.n,
        dead: store.dead.n,
        pending: pending.count,
        attempts: storeAttempts.n,
        failed_attempts: storeFailedAttempts,
        failed_attempt_share: round(storeFailedAttempts / Math.max(1, storeAttempts.n), 4),
        api: {
          pending: pending.count,
          /** GET /v1/webhooks/deliveries?limit=50, once, at the end. */
          first_page_ms: Math.round(firstPageMs),
          ...(paged
            ? {
                delivered: paged.delivered.count,
                dead: paged.dead.count,
                attempts: apiAttempts,
                failed_attempts: (apiAttempts ?? 0) - paged.delivered.count,
                dead_last_status: paged.dead.lastStatus,
                paging_s: {
                  delivered: round(paged.ms[0]! / 1000),
                  failed: round(paged.ms[1]! / 1000),
                },
              }
            : { paged: false }),
        },
        receiver: {
          attempts: hooks.received,
          failed_attempts: hooks.failed,
          delivered: expected.delivered,
          dead: expected.dead,
          duplicates: hooks.duplicates,
          over_attempts: hooks.overAttempts,
          verified: hooks.verified,
          verify_failures: hooks.verifyFailures,
        },
        stuck: stuck.length,
      },
      sse: {
        open: opened.open,
        dropped: sse.dropped,
        heartbeats: sse.comments,
        events: sse.events,
      },
      operations: Object.fromEntries(storeOperations.map((row) => [row.status, row.n])),
      data_mb: round(dataBytes / MB),
      server_warnings: s.warnings.count,
      server_errors: s.warnings.errors,
      server_log: s.warnings.first,
      problems,
      windows: windows.map((w) => ({
        ops: w.ops,
        submit_per_s: w.submit_per_s,
        submit_p50_ms: w.submit_p50_ms,
        submit_p99_ms: w.submit_p99_ms,
        server_cpu_share: w.server_cpu_share,
        deliveries_ended_per_s: w.deliveries_ended_per_s,
        webhook_backlog: w.webhook_backlog,
      })),
    }),
  );
} finally {
  await Promise.all([receiver?.stop(5000), clients?.stop(5000)]);
  if (server) await stopServer(server, 5000);
}
