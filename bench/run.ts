// `npm run bench`: Accepted's benchmarks and the peers' in one invocation, alternated so that
// both see the same machine, each run in its own process. Prints one JSON line per run, then
// medians and the ratio to the peer. Env: RUNS (default 3), N, C (passed through).
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

const anchors = anchorsDir();
const ours: Record<string, unknown>[] = [];
const bullmq: Record<string, unknown>[] = [];
for (let i = 0; i < runs; i++) {
  ours.push(run(process.execPath, ['--import', 'tsx', 'bench/e2e-inprocess.ts'], root));
  bullmq.push(run('bash', ['run.sh', 'bullmq'], anchors));
}
const sqliteLimit = run('bash', ['run.sh', 'sqlite-limit'], anchors);

const ourE2e = median(ours.map((r) => Number(r.e2e_per_s)));
const peerE2e = median(bullmq.map((r) => Number(r.e2e_per_s)));
const summary = {
  date: new Date().toISOString(),
  machine: `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, node ${process.version}`,
  runs,
  accepted_e2e_per_s_median: ourE2e,
  accepted_submit_per_s_median: median(ours.map((r) => Number(r.submit_per_s))),
  accepted_p50_ms_median: median(ours.map((r) => Number(r.p50_ms))),
  bullmq_e2e_per_s_median: peerE2e,
  bullmq_p50_ms_median: median(bullmq.map((r) => Number(r.p50_ms))),
  ratio_vs_bullmq: Number((ourE2e / peerE2e).toFixed(2)),
  sqlite_limit: sqliteLimit,
};
console.log(JSON.stringify(summary));
console.log(
  `\nend to end, in-process, durable: accepted ${ourE2e}/s vs BullMQ (Redis) ${peerE2e}/s = ${summary.ratio_vs_bullmq}x (median of ${runs})`,
);
