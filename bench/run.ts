// `npm run bench`: Accepted's benchmarks and the peers' in one invocation, alternated so that
// both see the same machine, each run in its own process. Prints one JSON line per run, then
// medians, the ratios to the peers and a summary with the goals.
// Each of RUNS rounds (default 3) runs, in turn: ours in-process, `run.sh bullmq`, HTTP end to
// end, HTTP submit (workers on and API-only), `run.sh http-limit`; then once the long-poll
// latency, the push-channel latency (SSE and WebSocket) and `run.sh sqlite-limit`; then RUNS
// times, alternated, the SSE fan-out to SUBSCRIBERS connections and its peer, a plain `ws`
// broadcast to as many; then RUNS times, alternated, the webhook throughput (drain and live),
// its floor (a bare node:http keep-alive loop POSTing to the same receiver) and the webhook
// latency; then once the CPU of an idle server with 100 blocked webhook lines (idle-webhooks).
// Env: RUNS, N, C, D, K, SUBSCRIBERS, E (passed through), BENCH_ONLY: a comma list of
// inprocess, bullmq, wait-1k, wait-10k, wait-100k (in-process, each result awaited with
// wait(id) while that many other waits are parked), longpoll-parked-1k, longpoll-parked-10k
// (over HTTP: submit, then long-poll until done, with that many other long polls held),
// kept-empty, kept-1m-finished, kept-1m-delayed (in-process e2e on a store already holding a
// million finished or delayed operations, and on an empty one by the same code), http-e2e, http-submit, http-limit, longpoll, sqlite-limit, stream-latency,
// stream-fanout, ws-broadcast, webhook-throughput, webhook-floor, webhook-latency,
// idle-webhooks, client-bundle
// (the gzipped size of the client's browser build), or a group:
// `http` (http-e2e, http-submit, http-limit, longpoll), `streams` (stream-latency,
// stream-fanout, ws-broadcast), `webhooks` (webhook-throughput, webhook-floor,
// webhook-latency, idle-webhooks); and, only when named, sse-broadcast (the fan-out on a bare node:http SSE
// server: Node's own floor) and soak (bench/soak.ts: N operations, default 1,000,000, through
// `accepted serve` with failing webhooks and idle SSE clients, watching memory; its env knobs
// are at the top of that file; a run is cut at 600 s here, so give it an N that fits).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const runs = Number(process.env.RUNS ?? 3);

/** The peers' harness lives in ../shared (read-only): run a private, installed copy. */
function anchorsDir(): string {
  const source = path.resolve(root, '../shared/bench/anchors');
  const copy = path.join(root, '.cache/anchors');
  if (!fs.existsSync(path.join(copy, 'node_modules'))) {
    if (!fs.existsSync(source)) throw new Error(`peer benchmarks not found at ${source}`);
    fs.cpSync(source, copy, { recursive: true });
    for (const file of fs.readdirSync(copy)) fs.chmodSync(path.join(copy, file), 0o755);
    console.error('installing the peer benchmarks (once)...');
    const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], {
      cwd: copy,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    if (install.status !== 0) throw new Error('npm install of the peer benchmarks failed');
  }
  return copy;
}

function jsonLines(output: string): Record<string, unknown>[] {
  return output
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** A benchmark script run with `env` set (and N from the environment, default 20,000). */
function withEnv(script: string, env: Record<string, string | number>): [string, string[], string] {
  return [
    'env',
    [
      ...Object.entries({ N: Number(process.env.N ?? 20_000), ...env }).map(
        ([k, v]) => `${k}=${v}`,
      ),
      process.execPath,
      '--import',
      'tsx',
      `bench/${script}`,
    ],
    root,
  ];
}
/** bench/e2e-wait.ts with `parked` waits pending all along. */
const waitBench = (parked: number) => withEnv('e2e-wait.ts', { PARKED: parked });
/** bench/longpoll-parked.ts: submit and long-poll each, with `parked` other long polls held. */
const parkedPollBench = (parked: number) => withEnv('longpoll-parked.ts', { PARKED: parked });
/** bench/e2e-kept.ts on a store already holding `kept` operations of `kind`. */
const keptBench = (kept: number, kind: 'finished' | 'delayed') =>
  withEnv('e2e-kept.ts', { KEPT: kept, KIND: kind });

function run(command: string, args: string[], cwd: string): Record<string, unknown> {
  const result = spawnSync(command, args, {
    cwd,
    encoding: 'utf8',
    env: process.env,
    timeout: 600_000,
  });
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr}`);
  }
  const line = jsonLines(result.stdout)[0];
  if (!line) throw new Error(`${command} ${args.join(' ')} printed no figure`);
  console.log(JSON.stringify(line));
  return line;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : Math.round((sorted[mid - 1]! + sorted[mid]!) / 2);
}

/** The figures of the embedded store against their peers (issue 15), in the order they run. */
const EMBEDDED = [
  'inprocess',
  'bullmq',
  'wait-1k',
  'wait-10k',
  'wait-100k',
  'longpoll-parked-1k',
  'longpoll-parked-10k',
  'kept-empty',
  'kept-1m-finished',
  'kept-1m-delayed',
  'http-e2e',
  'http-submit',
  'http-limit',
] as const;
const ALL = [
  ...EMBEDDED,
  'longpoll',
  'sqlite-limit',
  'stream-latency',
  'stream-fanout',
  'ws-broadcast',
  'webhook-throughput',
  'webhook-floor',
  'webhook-latency',
  'idle-webhooks',
  'client-bundle',
] as const;
/**
 * PostgreSQL (run only when named, or with the group `postgres`): ours on one node and on three
 * nodes, the idle pick-up latency, and the PostgreSQL peers in the same invocation.
 */
const POSTGRES = ['pg-e2e', 'pg-nodes', 'pg-pickup', 'graphile', 'pgboss', 'bullmq-pg'] as const;
/**
 * Diagnostics: run only when named. sse-broadcast: the fan-out on a bare node:http SSE server;
 * soak: memory and webhook outcomes over N operations (long: see bench/soak.ts).
 */
const OPTIONAL = ['sse-broadcast', 'soak'] as const;
type Bench = (typeof ALL)[number] | (typeof OPTIONAL)[number] | (typeof POSTGRES)[number];
const GROUPS: Record<string, readonly Bench[]> = {
  all: ALL,
  http: [
    'http-e2e',
    'http-submit',
    'http-limit',
    'longpoll',
    'longpoll-parked-1k',
    'longpoll-parked-10k',
  ],
  embedded: [...EMBEDDED, 'stream-fanout', 'ws-broadcast'],
  streams: ['stream-latency', 'stream-fanout', 'ws-broadcast'],
  postgres: POSTGRES,
  webhooks: ['webhook-throughput', 'webhook-floor', 'webhook-latency', 'idle-webhooks'],
};
const isBench = (name: string): name is Bench =>
  ([...ALL, ...OPTIONAL, ...POSTGRES] as readonly string[]).includes(name);
const selected = new Set<Bench>(
  (process.env.BENCH_ONLY ?? 'all').split(',').flatMap((raw): Bench[] => {
    const name = raw.trim();
    const group = GROUPS[name];
    if (group) return [...group];
    if (isBench(name)) return [name];
    throw new Error(
      `BENCH_ONLY: unknown benchmark ${name} (${[...ALL, ...OPTIONAL, ...POSTGRES, ...Object.keys(GROUPS)].join(', ')})`,
    );
  }),
);

const commands: Record<Bench, () => [string, string[], string]> = {
  inprocess: () => [process.execPath, ['--import', 'tsx', 'bench/e2e-inprocess.ts'], root],
  'wait-1k': () => waitBench(1_000),
  'wait-10k': () => waitBench(10_000),
  'wait-100k': () => waitBench(100_000),
  'longpoll-parked-1k': () => parkedPollBench(1_000),
  'longpoll-parked-10k': () => parkedPollBench(10_000),
  'kept-empty': () => keptBench(0, 'finished'),
  'kept-1m-finished': () => keptBench(1_000_000, 'finished'),
  'kept-1m-delayed': () => keptBench(1_000_000, 'delayed'),
  bullmq: () => ['bash', ['run.sh', 'bullmq'], anchorsDir()],
  'http-e2e': () => [process.execPath, ['--import', 'tsx', 'bench/http-e2e.ts'], root],
  'http-submit': () => [process.execPath, ['--import', 'tsx', 'bench/http-submit.ts'], root],
  'http-limit': () => ['bash', ['run.sh', 'http-limit'], anchorsDir()],
  longpoll: () => [process.execPath, ['--import', 'tsx', 'bench/longpoll-latency.ts'], root],
  'sqlite-limit': () => ['bash', ['run.sh', 'sqlite-limit'], anchorsDir()],
  'stream-latency': () => [process.execPath, ['--import', 'tsx', 'bench/stream-latency.ts'], root],
  'stream-fanout': () => [process.execPath, ['--import', 'tsx', 'bench/stream-fanout.ts'], root],
  'ws-broadcast': () => [process.execPath, ['--import', 'tsx', 'bench/ws-broadcast.ts'], root],
  'sse-broadcast': () => [process.execPath, ['--import', 'tsx', 'bench/sse-broadcast.ts'], root],
  'client-bundle': () => [process.execPath, ['--import', 'tsx', 'bench/client-bundle.ts'], root],
  'pg-e2e': () => [process.execPath, ['--import', 'tsx', 'bench/pg-e2e.ts'], root],
  'pg-nodes': () => [process.execPath, ['--import', 'tsx', 'bench/pg-nodes.ts'], root],
  'pg-pickup': () => [process.execPath, ['--import', 'tsx', 'bench/pg-pickup.ts'], root],
  graphile: () => ['bash', ['run.sh', 'graphile'], anchorsDir()],
  pgboss: () => ['bash', ['run.sh', 'pgboss'], anchorsDir()],
  'bullmq-pg': () => ['bash', ['run.sh', 'bullmq-pg'], anchorsDir()],
  'webhook-throughput': () => [
    process.execPath,
    ['--import', 'tsx', 'bench/webhook-throughput.ts'],
    root,
  ],
  'webhook-floor': () => [process.execPath, ['--import', 'tsx', 'bench/webhook-floor.ts'], root],
  'webhook-latency': () => [
    process.execPath,
    ['--import', 'tsx', 'bench/webhook-latency.ts'],
    root,
  ],
  'idle-webhooks': () => [process.execPath, ['--import', 'tsx', 'bench/idle-webhooks.ts'], root],
  soak: () => [process.execPath, ['--import', 'tsx', 'bench/soak.ts'], root],
};
const results: Record<Bench, Record<string, unknown>[]> = {
  inprocess: [],
  bullmq: [],
  'wait-1k': [],
  'wait-10k': [],
  'wait-100k': [],
  'longpoll-parked-1k': [],
  'longpoll-parked-10k': [],
  'kept-empty': [],
  'kept-1m-finished': [],
  'kept-1m-delayed': [],
  'http-e2e': [],
  'http-submit': [],
  'http-limit': [],
  longpoll: [],
  'sqlite-limit': [],
  'stream-latency': [],
  'stream-fanout': [],
  'ws-broadcast': [],
  'sse-broadcast': [],
  'client-bundle': [],
  'pg-e2e': [],
  'pg-nodes': [],
  'pg-pickup': [],
  graphile: [],
  pgboss: [],
  'bullmq-pg': [],
  'webhook-throughput': [],
  'webhook-floor': [],
  'webhook-latency': [],
  'idle-webhooks': [],
  soak: [],
};
function bench(name: Bench): void {
  if (!selected.has(name)) return;
  const [command, args, cwd] = commands[name]();
  results[name].push(run(command, args, cwd));
}

if (
  (['bullmq', 'http-limit', 'sqlite-limit', 'graphile', 'pgboss', 'bullmq-pg'] as const).some(
    (name) => selected.has(name),
  )
) {
  anchorsDir();
}
for (let i = 0; i < runs; i++) {
  bench('inprocess');
  bench('bullmq');
  bench('wait-1k');
  bench('wait-10k');
  bench('wait-100k');
  bench('longpoll-parked-1k');
  bench('longpoll-parked-10k');
  bench('kept-empty');
  bench('kept-1m-finished');
  bench('kept-1m-delayed');
  bench('http-e2e');
  bench('http-submit');
  bench('http-limit');
}
bench('longpoll');
bench('stream-latency');
bench('sqlite-limit');
// About 15-30 s a pair: cheap enough to alternate ours and the peer RUNS times.
for (let i = 0; i < runs; i++) {
  bench('stream-fanout');
  bench('ws-broadcast');
  bench('sse-broadcast');
}
// About 15 s, 3 s and 5 s: cheap enough to run RUNS times, alternated.
for (let i = 0; i < runs; i++) {
  bench('webhook-throughput');
  bench('webhook-floor');
  bench('webhook-latency');
}
// About 40 s (a 30 s window): once.
bench('idle-webhooks');
// PostgreSQL: ours and the three peers alternated RUNS times; then the pick-up latency once.
for (let i = 0; i < runs; i++) {
  bench('pg-e2e');
  bench('pg-nodes');
  bench('graphile');
  bench('pgboss');
  bench('bullmq-pg');
}
bench('pg-pickup');
// The size of the browser build of @accepted/client: deterministic, so once.
bench('client-bundle');
// Minutes to hours (N operations): once, last, only when named.
bench('soak');

/** The median of one figure over the runs of a benchmark, or null when it did not run. */
function med(name: Bench, key: string): number | null {
  const values = results[name].map((r) => Number(r[key])).filter(Number.isFinite);
  return values.length ? median(values) : null;
}
function ratio(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : Number((a / b).toFixed(2));
}
const longpoll = results.longpoll[0] ?? null;
const num = (value: unknown): number | null =>
  typeof value === 'number' && Number.isFinite(value) ? value : null;

const ourE2e = med('inprocess', 'e2e_per_s');
const peerE2e = med('bullmq', 'e2e_per_s');
const httpE2e = med('http-e2e', 'e2e_per_s');
const httpSubmit = med('http-submit', 'req_per_s');
const httpSubmitApiOnly = med('http-submit', 'api_only_req_per_s');
const httpLimit = med('http-limit', 'req_per_s');
const pollP50 = num(longpoll?.p50_ms);
const pollP99 = num(longpoll?.p99_ms);
const streamLatency = results['stream-latency'][0] ?? null;
const sseP99 = num(streamLatency?.sse_p99_ms);
const wsP99 = num(streamLatency?.ws_p99_ms);
/** The fan-out figures of ours and the peer: medians over the runs. */
const fanout = (name: 'stream-fanout' | 'ws-broadcast' | 'sse-broadcast') =>
  results[name].length === 0
    ? null
    : {
        subscribers: med(name, 'subscribers'),
        rss_bytes_per_conn: med(name, 'rss_bytes_per_conn'),
        heap_bytes_per_conn: med(name, 'heap_bytes_per_conn'),
        reach_all_p50_ms: med(name, 'reach_all_p50_ms'),
        reach_all_p99_ms: med(name, 'reach_all_p99_ms'),
        per_sub_p50_ms: med(name, 'per_sub_p50_ms'),
        per_sub_p99_ms: med(name, 'per_sub_p99_ms'),
        server_write_p50_ms: med(name, 'server_write_p50_ms'),
        /** Summed over the runs. */
        delivered: results[name].reduce((sum, r) => sum + (num(r.delivered) ?? 0), 0),
        expected: results[name].reduce((sum, r) => sum + (num(r.expected) ?? 0), 0),
      };
/** Summed over the runs of a benchmark. */
const sum = (name: Bench, key: string): number =>
  results[name].reduce((total, r) => total + (num(r[key]) ?? 0), 0);
const webhookDrain = med('webhook-throughput', 'drain_per_s');
const webhookLive = med('webhook-throughput', 'live_per_s');
const webhookFloor = med('webhook-floor', 'per_s');
const webhookP99 = med('webhook-latency', 'p99_ms');
const idle = results['idle-webhooks'][0] ?? null;
const sseFanout = fanout('stream-fanout');
const wsBroadcast = fanout('ws-broadcast');
const sseBroadcast = fanout('sse-broadcast');
const summary = {
  date: new Date().toISOString(),
  machine: `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, node ${process.version}`,
  runs,
  benchmarks: [...selected],
  accepted_e2e_per_s_median: ourE2e,
  accepted_submit_per_s_median: med('inprocess', 'submit_per_s'),
  accepted_p50_ms_median: med('inprocess', 'p50_ms'),
  bullmq_e2e_per_s_median: peerE2e,
  bullmq_p50_ms_median: med('bullmq', 'p50_ms'),
  ratio_vs_bullmq: ratio(ourE2e, peerE2e),
  wait_e2e_per_s_median: {
    '1k': med('wait-1k', 'e2e_per_s'),
    '10k': med('wait-10k', 'e2e_per_s'),
    '100k': med('wait-100k', 'e2e_per_s'),
  },
  wait_ratio_vs_bullmq: {
    '1k': ratio(med('wait-1k', 'e2e_per_s'), peerE2e),
    '10k': ratio(med('wait-10k', 'e2e_per_s'), peerE2e),
    '100k': ratio(med('wait-100k', 'e2e_per_s'), peerE2e),
  },
  /** 100k parked waits against 1k: 1 is flat. */
  wait_100k_vs_1k: ratio(med('wait-100k', 'e2e_per_s'), med('wait-1k', 'e2e_per_s')),
  longpoll_parked_e2e_per_s_median: {
    '1k': med('longpoll-parked-1k', 'e2e_per_s'),
    '10k': med('longpoll-parked-10k', 'e2e_per_s'),
  },
  longpoll_parked_ratio_vs_bullmq: {
    '1k': ratio(med('longpoll-parked-1k', 'e2e_per_s'), peerE2e),
    '10k': ratio(med('longpoll-parked-10k', 'e2e_per_s'), peerE2e),
  },
  /** 10k parked long polls against 1k: 1 is flat. */
  longpoll_parked_10k_vs_1k: ratio(
    med('longpoll-parked-10k', 'e2e_per_s'),
    med('longpoll-parked-1k', 'e2e_per_s'),
  ),
  kept: {
    empty: {
      e2e_per_s: med('kept-empty', 'e2e_per_s'),
      submit_per_s: med('kept-empty', 'submit_per_s'),
    },
    finished_1m: {
      e2e_per_s: med('kept-1m-finished', 'e2e_per_s'),
      submit_per_s: med('kept-1m-finished', 'submit_per_s'),
    },
    delayed_1m: {
      e2e_per_s: med('kept-1m-delayed', 'e2e_per_s'),
      submit_per_s: med('kept-1m-delayed', 'submit_per_s'),
    },
  },
  http_e2e_per_s_median: httpE2e,
  http_e2e_submit_per_s_median: med('http-e2e', 'submit_per_s'),
  http_e2e_submit_p99_ms_median: med('http-e2e', 'submit_p99_ms'),
  http_e2e_ratio_vs_bullmq: ratio(httpE2e, peerE2e),
  http_submit_req_per_s_median: httpSubmit,
  http_submit_p99_ms_median: med('http-submit', 'p99_ms'),
  http_submit_api_only_req_per_s_median: httpSubmitApiOnly,
  http_submit_api_only_p99_ms_median: med('http-submit', 'api_only_p99_ms'),
  http_limit_req_per_s_median: httpLimit,
  http_submit_ratio_vs_limit: ratio(httpSubmit, httpLimit),
  http_submit_api_only_ratio_vs_limit: ratio(httpSubmitApiOnly, httpLimit),
  longpoll,
  sqlite_limit: results['sqlite-limit'][0] ?? null,
  stream_latency: streamLatency,
  stream_fanout: sseFanout,
  ws_broadcast: wsBroadcast,
  sse_broadcast: sseBroadcast,
  stream_fanout_rss_ratio_vs_ws: ratio(
    sseFanout?.rss_bytes_per_conn ?? null,
    wsBroadcast?.rss_bytes_per_conn ?? null,
  ),
  client_bundle: results['client-bundle'][0] ?? null,
  stream_fanout_reach_all_p99_ratio_vs_ws: ratio(
    sseFanout?.reach_all_p99_ms ?? null,
    wsBroadcast?.reach_all_p99_ms ?? null,
  ),
  webhook_throughput:
    results['webhook-throughput'].length === 0
      ? null
      : {
          drain_per_s: webhookDrain,
          live_per_s: webhookLive,
          /** Summed over the runs. */
          deliveries: sum('webhook-throughput', 'N') * 2,
          verified: sum('webhook-throughput', 'verified'),
          verify_failures: sum('webhook-throughput', 'verify_failures'),
          duplicates: sum('webhook-throughput', 'duplicates'),
          failed_attempts: sum('webhook-throughput', 'failed_attempts'),
        },
  webhook_floor_per_s: webhookFloor,
  idle_webhooks: idle,
  webhook_drain_ratio_vs_floor: ratio(webhookDrain, webhookFloor),
  webhook_live_ratio_vs_floor: ratio(webhookLive, webhookFloor),
  webhook_latency:
    results['webhook-latency'].length === 0
      ? null
      : {
          p50_ms: med('webhook-latency', 'p50_ms'),
          p99_ms: webhookP99,
          max_ms: med('webhook-latency', 'max_ms'),
          verify_failures: sum('webhook-latency', 'verify_failures'),
          failed_attempts: sum('webhook-latency', 'failed_attempts'),
        },
};
const pgE2e = med('pg-e2e', 'e2e_per_s');
const pgNodes = med('pg-nodes', 'e2e_per_s');
const pgPeers = {
  graphile: med('graphile', 'e2e_per_s'),
  pgboss: med('pgboss', 'e2e_per_s'),
  'bullmq-pg': med('bullmq-pg', 'e2e_per_s'),
};
const pgBestPeer = Object.values(pgPeers).reduce<number | null>(
  (best, value) => (value === null ? best : Math.max(best ?? 0, value)),
  null,
);
const pickup = results['pg-pickup'][0] ?? null;
const postgresSummary =
  pgE2e === null && pgNodes === null && pgBestPeer === null && pickup === null
    ? null
    : {
        e2e_per_s: pgE2e,
        nodes_e2e_per_s: pgNodes,
        peers_e2e_per_s: pgPeers,
        ratio_vs_best_peer: ratio(pgE2e, pgBestPeer),
        nodes_ratio_vs_one: ratio(pgNodes, pgE2e),
        pickup,
      };
console.log(JSON.stringify({ ...summary, postgres: postgresSummary }));

const fmt = (value: number | null, unit = '') =>
  value === null ? 'n/a' : `${value.toLocaleString('en-US')}${unit}`;
const x = (value: number | null) => (value === null ? 'n/a' : `${value}x`);
const goal = (met: boolean | null) => (met === null ? '' : met ? '  [met]' : '  [NOT met]');
/** The same mark inside a list: ` [met]`. */
const mark = (met: boolean | null) => goal(met).replace(/^ +/, ' ');
const atLeast = (value: number | null, target: number) => (value === null ? null : value >= target);
/** The lowest of the figures measured, or null when none was. */
const lowest = (values: (number | null)[]) => {
  const measured = values.filter((v): v is number => v !== null);
  return measured.length > 0 ? Math.min(...measured) : null;
};
const lines = ['', `== summary: median of ${runs} run(s), ${summary.machine} ==`];
/** Adds a summary line when its figure was measured in this invocation. */
const line = (figure: number | null, text: () => string) => {
  if (figure !== null) lines.push(text());
};
line(
  ourE2e ?? peerE2e,
  () =>
    `in-process e2e, durable:  accepted ${fmt(ourE2e, '/s')} vs BullMQ (Redis) ${fmt(peerE2e, '/s')} = ${x(summary.ratio_vs_bullmq)}`,
);
line(
  med('wait-1k', 'e2e_per_s'),
  () =>
    `wait(id) e2e, durable:    accepted ${['1k', '10k', '100k'].map((k) => `${fmt(summary.wait_e2e_per_s_median[k as '1k'], '/s')} at ${k} parked`).join(', ')} vs BullMQ ${fmt(peerE2e, '/s')} = ${x(summary.wait_ratio_vs_bullmq['1k'])}, ${x(summary.wait_ratio_vs_bullmq['10k'])}, ${x(summary.wait_ratio_vs_bullmq['100k'])}  (goal >= 2x, flat: 100k/1k = ${summary.wait_100k_vs_1k ?? 'n/a'})${goal(atLeast(lowest(Object.values(summary.wait_ratio_vs_bullmq)), 2))}`,
);
line(
  med('longpoll-parked-1k', 'e2e_per_s'),
  () =>
    `submit + long poll, HTTP: accepted ${(['1k', '10k'] as const).map((k) => `${fmt(summary.longpoll_parked_e2e_per_s_median[k], '/s')} at ${k} parked polls`).join(', ')} vs BullMQ in-process ${fmt(peerE2e, '/s')} = ${x(summary.longpoll_parked_ratio_vs_bullmq['1k'])}, ${x(summary.longpoll_parked_ratio_vs_bullmq['10k'])}  (goal >= 1x as HTTP e2e, flat: 10k/1k = ${summary.longpoll_parked_10k_vs_1k ?? 'n/a'})${goal(atLeast(lowest(Object.values(summary.longpoll_parked_ratio_vs_bullmq)), 1))}`,
);
/** A figure against the empty store's: the goal is within 10% (0.9 or more). */
const vsEmpty = (figure: number | null, empty: number | null) => ratio(figure, empty);
line(med('kept-empty', 'e2e_per_s'), () => {
  const { empty, finished_1m: finished, delayed_1m: delayed } = summary.kept;
  const worst = lowest([
    vsEmpty(finished.e2e_per_s, empty.e2e_per_s),
    vsEmpty(finished.submit_per_s, empty.submit_per_s),
    vsEmpty(delayed.e2e_per_s, empty.e2e_per_s),
    vsEmpty(delayed.submit_per_s, empty.submit_per_s),
  ]);
  return `1M kept, e2e (submit):    empty ${fmt(empty.e2e_per_s, '/s')} (${fmt(empty.submit_per_s, '/s')}); 1M finished ${fmt(finished.e2e_per_s, '/s')} (${fmt(finished.submit_per_s, '/s')}) = ${x(vsEmpty(finished.e2e_per_s, empty.e2e_per_s))}; 1M delayed ${fmt(delayed.e2e_per_s, '/s')} (${fmt(delayed.submit_per_s, '/s')}) = ${x(vsEmpty(delayed.e2e_per_s, empty.e2e_per_s))}  (goal: within 10% of empty)${goal(atLeast(worst, 0.9))}`;
});
line(
  httpE2e,
  () =>
    `HTTP e2e, durable:        accepted ${fmt(httpE2e, '/s')} vs BullMQ in-process ${fmt(peerE2e, '/s')} = ${x(summary.http_e2e_ratio_vs_bullmq)}  (goal >= 1x)${goal(atLeast(summary.http_e2e_ratio_vs_bullmq, 1))}`,
);
line(
  httpSubmit,
  () =>
    `HTTP submit, workers on:  ${fmt(httpSubmit, ' req/s')} (p99 ${fmt(summary.http_submit_p99_ms_median, ' ms')}) vs bare node:http ${fmt(httpLimit, ' req/s')} = ${x(summary.http_submit_ratio_vs_limit)}  (goal >= 0.5x)${goal(atLeast(summary.http_submit_ratio_vs_limit, 0.5))}`,
);
line(
  httpSubmitApiOnly,
  () =>
    `HTTP submit, API-only:    ${fmt(httpSubmitApiOnly, ' req/s')} (p99 ${fmt(summary.http_submit_api_only_p99_ms_median, ' ms')}) vs bare node:http ${fmt(httpLimit, ' req/s')} = ${x(summary.http_submit_api_only_ratio_vs_limit)}  (goal >= 0.5x)${goal(atLeast(summary.http_submit_api_only_ratio_vs_limit, 0.5))}`,
);
line(
  pollP99,
  () =>
    `long poll, commit->reply: p50 ${fmt(pollP50, ' ms')}, p99 ${fmt(pollP99, ' ms')}, max ${fmt(num(longpoll?.max_ms), ' ms')}; gate release->reply p50 ${fmt(num(longpoll?.release_p50_ms), ' ms')}, p99 ${fmt(num(longpoll?.release_p99_ms), ' ms')}  (goal p99 < 5 ms)${goal(pollP99 === null ? null : pollP99 < 5)}`,
);
if (longpoll && num(longpoll.parked) !== num(longpoll.K)) {
  lines.push(
    `  note: only ${String(longpoll.parked)}/${String(longpoll.K)} long polls were parked when the operation finished; the rest were answered at once and re-polled (${String(longpoll.polls_per_sample)} polls per sample): the server does not hold long polls yet, so this figure is a busy-poll figure`,
  );
}
line(
  sseP99 ?? wsP99,
  () =>
    `push, commit->receipt:    SSE p50 ${fmt(num(streamLatency?.sse_p50_ms), ' ms')}, p99 ${fmt(sseP99, ' ms')}, max ${fmt(num(streamLatency?.sse_max_ms), ' ms')}; WebSocket p50 ${fmt(num(streamLatency?.ws_p50_ms), ' ms')}, p99 ${fmt(wsP99, ' ms')}, max ${fmt(num(streamLatency?.ws_max_ms), ' ms')}  (goal p99 < 5 ms)${goal(sseP99 === null || wsP99 === null ? null : sseP99 < 5 && wsP99 < 5)}`,
);
const kb = (bytes: number | null) => (bytes === null ? 'n/a' : `${(bytes / 1024).toFixed(1)} KB`);
const subs = fmt(sseFanout?.subscribers ?? wsBroadcast?.subscribers ?? null);
const sseRss = sseFanout?.rss_bytes_per_conn ?? null;
const sseReach = sseFanout?.reach_all_p99_ms ?? null;
line(
  sseRss ?? wsBroadcast?.rss_bytes_per_conn ?? null,
  () =>
    `SSE fan-out, memory:      ${subs} idle subscribers, ${kb(sseRss)} RSS (heap ${kb(sseFanout?.heap_bytes_per_conn ?? null)}) per connection vs ws broadcast ${kb(wsBroadcast?.rss_bytes_per_conn ?? null)} (heap ${kb(wsBroadcast?.heap_bytes_per_conn ?? null)}) = ${x(summary.stream_fanout_rss_ratio_vs_ws)}  (goal < 8 KB)${goal(sseRss === null ? null : sseRss < 8192)}`,
);
line(
  sseReach ?? wsBroadcast?.reach_all_p99_ms ?? null,
  () =>
    `SSE fan-out, reach all:   commit->last subscriber p50 ${fmt(sseFanout?.reach_all_p50_ms ?? null, ' ms')}, p99 ${fmt(sseReach, ' ms')} (server done writing p50 ${fmt(sseFanout?.server_write_p50_ms ?? null, ' ms')}); per subscriber p50 ${fmt(sseFanout?.per_sub_p50_ms ?? null, ' ms')}, p99 ${fmt(sseFanout?.per_sub_p99_ms ?? null, ' ms')}; vs ws broadcast p50 ${fmt(wsBroadcast?.reach_all_p50_ms ?? null, ' ms')}, p99 ${fmt(wsBroadcast?.reach_all_p99_ms ?? null, ' ms')} (per client p50 ${fmt(wsBroadcast?.per_sub_p50_ms ?? null, ' ms')}) = ${x(summary.stream_fanout_reach_all_p99_ratio_vs_ws)}  (goal p99 < 250 ms)${goal(sseReach === null ? null : sseReach < 250)}`,
);
line(
  sseBroadcast?.rss_bytes_per_conn ?? null,
  () =>
    `  floor, bare node:http SSE: ${kb(sseBroadcast?.rss_bytes_per_conn ?? null)} RSS (heap ${kb(sseBroadcast?.heap_bytes_per_conn ?? null)}) per connection, reach all p50 ${fmt(sseBroadcast?.reach_all_p50_ms ?? null, ' ms')}, p99 ${fmt(sseBroadcast?.reach_all_p99_ms ?? null, ' ms')}`,
);
for (const [name, figures] of [
  ['SSE fan-out', sseFanout],
  ['ws broadcast', wsBroadcast],
  ['bare SSE broadcast', sseBroadcast],
] as const) {
  if (figures && figures.delivered !== figures.expected) {
    lines.push(
      `  note: ${name} delivered ${fmt(figures.delivered)} of ${fmt(figures.expected)} events (${fmt(figures.expected - figures.delivered)} missing)`,
    );
  }
}
const perS = (value: number | null) => fmt(value, '/s');
line(
  webhookDrain ?? webhookFloor,
  () =>
    `webhooks, throughput:     drain ${perS(webhookDrain)}, live ${perS(webhookLive)} signed deliveries vs bare node:http floor ${perS(webhookFloor)} = ${x(summary.webhook_drain_ratio_vs_floor)} (drain), ${x(summary.webhook_live_ratio_vs_floor)} (live)  (goal >= 5,000/s: drain${mark(atLeast(webhookDrain, 5000))}, live${mark(atLeast(webhookLive, 5000))})`,
);
line(
  webhookP99,
  () =>
    `webhook, commit->receipt: p50 ${fmt(summary.webhook_latency?.p50_ms ?? null, ' ms')}, p99 ${fmt(webhookP99, ' ms')}, max ${fmt(summary.webhook_latency?.max_ms ?? null, ' ms')}  (goal p99 < 10 ms)${goal(webhookP99 === null ? null : webhookP99 < 10)}`,
);
line(
  num(idle?.cpu_ms),
  () =>
    `idle, blocked webhooks:   ${String(idle?.lines)} lines blocked, ${fmt(num(idle?.cpu_ms), ' ms')} CPU over ${String(idle?.window_s)} s = ${fmt(num(idle?.cpu_share_of_core) === null ? null : Number(((idle?.cpu_share_of_core as number) * 100).toFixed(2)), '% of a core')}, ${fmt(num(idle?.write_calls))} write calls  (goal: no measurable CPU)`,
);
const hooks = summary.webhook_throughput;
if (hooks && hooks.verify_failures + hooks.duplicates + hooks.failed_attempts > 0) {
  lines.push(
    `  note: webhook deliveries: ${hooks.verify_failures} signatures failed to verify, ${hooks.duplicates} duplicates, ${hooks.failed_attempts} failed attempts`,
  );
}
const clientGzip = num(summary.client_bundle?.gzip_bytes);
line(
  clientGzip,
  () =>
    `client bundle (browser):  ${kb(num(summary.client_bundle?.min_bytes))} minified, ${kb(clientGzip)} gzipped  (goal < 6 KB gzipped)${goal(clientGzip === null ? null : clientGzip < 6144)}`,
);
const sqlite = summary.sqlite_limit;
if (sqlite) {
  lines.push(
    `SQLite ceiling (FULL):    ${fmt(num(sqlite.insert_per_s_autocommit), '/s')} one-row transactions, ${fmt(num(sqlite.insert_per_s_batch100), '/s')} rows in batches of 100`,
  );
}
if (postgresSummary) {
  const pickupP99 = num(pickup?.local_p99_ms);
  lines.push(
    `PostgreSQL e2e, 1 node:   accepted ${fmt(pgE2e, '/s')} vs graphile-worker ${fmt(pgPeers.graphile, '/s')}, pg-boss ${fmt(pgPeers.pgboss, '/s')}, BullMQ-pg ${fmt(pgPeers['bullmq-pg'], '/s')} = ${x(postgresSummary.ratio_vs_best_peer)} the best  (goal >= 3x)${goal(atLeast(postgresSummary.ratio_vs_best_peer, 3))}`,
    `PostgreSQL e2e, 3 nodes:  ${fmt(pgNodes, '/s')} = ${x(postgresSummary.nodes_ratio_vs_one)} one node (three processes on this machine's cores)`,
    `PostgreSQL idle pick-up:  same node p50 ${fmt(num(pickup?.local_p50_ms), ' ms')}, p99 ${fmt(pickupP99, ' ms')}; other node (NOTIFY) p50 ${fmt(num(pickup?.remote_p50_ms), ' ms')}, p99 ${fmt(num(pickup?.remote_p99_ms), ' ms')}  (goal p99 < 10 ms)${goal(pickupP99 === null ? null : pickupP99 < 10)}`,
  );
}
console.log(lines.join('\n'));
