// The driver shared by `stream-fanout.ts` (Accepted's SSE), `ws-broadcast.ts` (its peer) and
// `sse-broadcast.ts` (a bare node:http floor): one server child, client children
// (`fanout-clients.ts`) holding SUBSCRIBERS idle connections between them, E events pushed to
// all of them.
//   1. server memory after gc, before any connection;
//   2. the connections open, BATCH at a time (split over the client processes); SETTLE_MS idle;
//      server memory after gc again -> bytes per connection (RSS and JS heap);
//   3. one warm-up event (not measured) that every subscriber must receive: proves that every
//      connection is subscribed before the clock runs;
//   4. E events, SPACING_MS apart, then the server's memory once more (`_after_events`).
//      The server reports t0 of each event (its commit; for the floors, the start of the
//      broadcast) and when it had written it to every socket (`server_write`, at its first
//      setImmediate after t0); the clients report the wall-clock time of each receipt:
//      reach-all = last receipt - t0, per subscriber = each receipt - t0.
// Everything runs on 127.0.0.1; a hard timeout (TIMEOUT_S) ends every child, then exits 2.
// Env: SUBSCRIBERS (10000), E (20), SPACING_MS (200), BATCH (500), SETTLE_MS (1000),
// TIMEOUT_S (300), VERBOSE=1 (progress on stderr);
// CLIENT_PROCS: default one per 16,000 connections (a process may hold 20,000 fds). On two
//   cores one client process next to the one-threaded server gave the peer its lowest
//   reach-all (p99 142 ms, against 187 ms with two and 204 ms with four);
// HEAP_SNAPSHOTS=<dir>: the server's heap after gc, before and after the connections open
//   (<bench>-before/after.heapsnapshot, for DevTools' Comparison view; RSS figures are then
//   inflated by the snapshots);
// CPU_PROFILE=<dir>: the server's CPU profile over the E events only (<bench>.cpuprofile).
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { percentile } from './common.ts';
import { killAll, launch, type Child } from './fanout-ipc.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

export interface ServerInfo {
  port: number;
}

export interface FanoutSpec<Info extends ServerInfo> {
  bench: string;
  /** The server script, a child driven over IPC (commands `memory` and `step`). */
  serverFile: string;
  serverEnv?: Record<string, string>;
  mode: 'sse' | 'ws';
  /** The URL every subscriber connects to. */
  targetUrl(info: Info): string;
  /** More members for the JSON line. */
  describe?(info: Info): Record<string, unknown>;
}

interface Step {
  seq: number;
  t0: number;
  /** When the server had written the event to every connection (its first setImmediate after). */
  written: number;
}
interface Receipts {
  receipts: Record<string, number[]>;
  received: number;
  messageBytes: number;
  dropped: number;
}
interface Opened {
  open: number;
  failed: number;
  errors: string[];
  ms: number;
}

const env = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

export async function runFanout<Info extends ServerInfo>(spec: FanoutSpec<Info>): Promise<void> {
  const SUBSCRIBERS = env('SUBSCRIBERS', 10_000);
  const E = env('E', 20);
  const SPACING_MS = env('SPACING_MS', 200);
  const BATCH = env('BATCH', 500);
  const CLIENT_PROCS = Math.max(
    1,
    Math.min(env('CLIENT_PROCS', Math.ceil(SUBSCRIBERS / 16_000)), SUBSCRIBERS),
  );
  const SETTLE_MS = env('SETTLE_MS', 1000);
  const TIMEOUT_S = env('TIMEOUT_S', 300);
  const verbose = process.env.VERBOSE === '1';
  const log = (text: string) => {
    if (verbose) console.error(`[${spec.bench}] ${text}`);
  };

  const hardTimeout = setTimeout(() => {
    console.error(`[${spec.bench}] hard timeout after ${TIMEOUT_S} s: ending every child`);
    void killAll().finally(() => process.exit(2));
  }, TIMEOUT_S * 1000);
  hardTimeout.unref();

  let server: Child<Info> | null = null;
  const clients: Child[] = [];
  try {
    server = await launch<Info>(spec.serverFile, spec.serverEnv ?? {}, ['--expose-gc']);
    const info = server.info;
    const url = spec.targetUrl(info);
    log(`server pid ${server.pid} on port ${info.port}; subscribers connect to ${url}`);
    const snapshots = process.env.HEAP_SNAPSHOTS;
    const snapshot = async (name: string) => {
      if (!snapshots) return;
      const file = path.resolve(snapshots, `${spec.bench}-${name}.heapsnapshot`);
      log(`heap snapshot ${await server!.request<string>('heapsnapshot', file)}`);
    };
    await snapshot('before');
    const before = await server.request<NodeJS.MemoryUsage>('memory');

    const perProc = Math.floor(SUBSCRIBERS / CLIENT_PROCS);
    const counts = Array.from(
      { length: CLIENT_PROCS },
      (_, i) => perProc + (i < SUBSCRIBERS % CLIENT_PROCS ? 1 : 0),
    );
    for (const count of counts) {
      clients.push(
        await launch(path.join(here, 'fanout-clients.ts'), {
          MODE: spec.mode,
          TARGET_URL: url,
          COUNT: String(count),
          BATCH: String(Math.ceil(BATCH / CLIENT_PROCS)),
        }),
      );
    }
    const opened = await Promise.all(
      clients.map((client) => client.request<Opened>('open', undefined, TIMEOUT_S * 1000)),
    );
    const open = opened.reduce((sum, o) => sum + o.open, 0);
    const rampMs = Math.max(...opened.map((o) => o.ms));
    log(`${open}/${SUBSCRIBERS} open in ${rampMs} ms`);
    // A figure per connection is only worth something with every connection open.
    if (open < SUBSCRIBERS) {
      throw new Error(
        `[${spec.bench}] ${SUBSCRIBERS - open} connections failed: ${opened
          .flatMap((o) => o.errors)
          .slice(0, 5)
          .join('; ')}`,
      );
    }
    await sleep(SETTLE_MS);
    const after = await server.request<NodeJS.MemoryUsage & { connections?: number }>('memory');
    log(`server rss ${before.rss} -> ${after.rss}, heap ${before.heapUsed} -> ${after.heapUsed}`);
    await snapshot('after');

    const total = async () => {
      const answers = await Promise.all(
        clients.map((client) => client.request<{ received: number; dropped: number }>('count')),
      );
      return answers.reduce((sum, a) => sum + a.received, 0);
    };
    /** Waits until the clients hold `target` receipts, or `ms` passed; returns the count. */
    const waitFor = async (target: number, ms: number) => {
      const deadline = performance.now() + ms;
      let count = await total();
      while (count < target && performance.now() < deadline) {
        await sleep(50);
        count = await total();
      }
      return count;
    };

    const warmup = await server.request<Step>('step');
    const warmupReceived = await waitFor(open, 15_000);
    log(`warm-up event ${warmup.seq} reached ${warmupReceived}/${open}`);

    const profileDir = process.env.CPU_PROFILE;
    if (profileDir) await server.request('profile-start');
    const steps: Step[] = [];
    for (let i = 0; i < E; i++) {
      await sleep(SPACING_MS);
      steps.push(await server.request<Step>('step'));
    }
    await waitFor(warmupReceived + open * E, 5_000);
    if (profileDir) {
      const file = path.resolve(profileDir, `${spec.bench}.cpuprofile`);
      log(`CPU profile ${await server.request<string>('profile-stop', file)}`);
    }
    const afterEvents = await server.request<NodeJS.MemoryUsage>('memory');

    const reports = await Promise.all(
      clients.map((client) => client.request<Receipts>('receipts')),
    );
    const reachAll: number[] = [];
    const perSub: number[] = [];
    let delivered = 0;
    for (const step of steps) {
      let last = -Infinity;
      for (const report of reports) {
        for (const time of report.receipts[String(step.seq)] ?? []) {
          perSub.push(time - step.t0);
          if (time > last) last = time;
          delivered++;
        }
      }
      if (last > -Infinity) reachAll.push(last - step.t0);
    }
    reachAll.sort((a, b) => a - b);
    perSub.sort((a, b) => a - b);
    const serverWrite = steps.map((s) => s.written - s.t0).sort((a, b) => a - b);
    const expected = SUBSCRIBERS * E;
    const perConn = (key: 'rss' | 'heapUsed' | 'heapTotal' | 'external') =>
      Math.round((after[key] - before[key]) / open);

    console.log(
      JSON.stringify({
        bench: spec.bench,
        subscribers: SUBSCRIBERS,
        rss_bytes_per_conn: perConn('rss'),
        heap_bytes_per_conn: perConn('heapUsed'),
        reach_all_p50_ms: percentile(reachAll, 0.5),
        reach_all_p99_ms: percentile(reachAll, 0.99),
        per_sub_p50_ms: percentile(perSub, 0.5),
        per_sub_p99_ms: percentile(perSub, 0.99),
        delivered,
        expected,
        missing: expected - delivered,
        E,
        open,
        heap_total_bytes_per_conn: perConn('heapTotal'),
        external_bytes_per_conn: perConn('external'),
        rss_bytes_per_conn_after_events: Math.round((afterEvents.rss - before.rss) / open),
        heap_bytes_per_conn_after_events: Math.round(
          (afterEvents.heapUsed - before.heapUsed) / open,
        ),
        reach_all_max_ms: percentile(reachAll, 1),
        server_write_p50_ms: percentile(serverWrite, 0.5),
        server_write_p99_ms: percentile(serverWrite, 0.99),
        per_sub_max_ms: percentile(perSub, 1),
        rss_before: before.rss,
        rss_after: after.rss,
        heap_before: before.heapUsed,
        heap_after: after.heapUsed,
        message_bytes: reports.find((r) => r.messageBytes > 0)?.messageBytes ?? null,
        dropped: reports.reduce((sum, r) => sum + r.dropped, 0),
        warmup_received: warmupReceived,
        ramp_ms: rampMs,
        client_procs: CLIENT_PROCS,
        spacing_ms: SPACING_MS,
        ...spec.describe?.(info),
      }),
    );
  } finally {
    await Promise.all(
      clients.map(async (client) => {
        await client.request('close', undefined, 10_000).catch(() => undefined);
        await client.stop();
      }),
    );
    await server?.stop();
    clearTimeout(hardTimeout);
  }
}
