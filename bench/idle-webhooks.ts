// Idle means idle (issue 12, #2): the CPU an `accepted serve` process uses while 100 webhook
// lines are blocked. One endpoint points at a port where nothing listens; 100 `demo.echo`
// operations each queue their events for it; once the head of every line has failed its
// first attempt (the next one an hour away), the rest of each line waits behind it. The
// process's CPU time (user + system, from /proc) is read over WINDOW_S seconds of that.
// Prints one JSON line. Env: WINDOW_S (30), LINES (100), SETTLE_S (1), ACCEPTED_CLI (the CLI to run: set it
// to another checkout's packages/accepted/src/cli/main.ts to measure that one).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const WINDOW_S = Number(process.env.WINDOW_S ?? 30);
const LINES = Number(process.env.LINES ?? 100);
/** Seconds to wait, once the lines are blocked, before the window opens. */
const SETTLE_S = Number(process.env.SETTLE_S ?? 1);
const here = path.dirname(fileURLToPath(import.meta.url));
const cli =
  process.env.ACCEPTED_CLI ??
  path.join(here, '..', 'packages', 'accepted', 'src', 'cli', 'main.ts');

/** A port nothing listens on: bound, then closed. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** CPU seconds (user + system) of a process so far, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime
  return ticks / 100; // USER_HZ
}

/**
 * Write-family system calls of a process so far (`syscw` of /proc/<pid>/io): disk writes, and
 * also the eventfd wake-ups of Node's and V8's threads (V8's memory reducer, which collects the
 * garbage of start-up in the first ~20 s, makes a few thousand of those).
 */
function writeCalls(pid: number): number {
  const match = /^syscw: (\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/io`, 'utf8'));
  return Number(match?.[1] ?? Number.NaN);
}

const data = fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-idle-'));
const child = spawn(
  process.execPath,
  [
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
    '--webhook-retries',
    '1h,1h',
  ],
  { cwd: path.dirname(cli), stdio: ['ignore', 'pipe', 'inherit'] },
);
const url = await new Promise<string>((resolve, reject) => {
  const lines = readline.createInterface({ input: child.stdout });
  lines.on('line', (line) => {
    try {
      const entry = JSON.parse(line) as { msg?: string; url?: string };
      if (entry.msg === 'accepted ready' && entry.url) resolve(entry.url);
    } catch {
      // not a log line
    }
  });
  child.on('exit', (code) => reject(new Error(`the server exited with ${code}`)));
});

try {
  const json = { 'content-type': 'application/json' };
  const port = await closedPort();
  const created = await fetch(`${url}/v1/webhooks/endpoints`, {
    method: 'POST',
    headers: json,
    body: JSON.stringify({ url: `http://127.0.0.1:${port}/hook` }),
  });
  if (created.status !== 201)
    throw new Error(`endpoint: ${created.status} ${await created.text()}`);
  for (let i = 0; i < LINES; i++) {
    const submitted = await fetch(`${url}/v1/operations`, {
      method: 'POST',
      headers: { ...json, prefer: 'wait=10' },
      body: JSON.stringify({ type: 'demo.echo', input: { i } }),
    });
    if (submitted.status !== 200) throw new Error(`submit: ${submitted.status}`);
  }
  // Blocked: the head of every line has failed once and waits an hour.
  const deadline = Date.now() + 60_000;
  for (;;) {
    const page = (await (
      await fetch(`${url}/v1/webhooks/deliveries?status=pending&limit=500`)
    ).json()) as { items: { operationId: string; attempts: number }[] };
    const tried = new Set(page.items.filter((d) => d.attempts > 0).map((d) => d.operationId));
    if (tried.size >= LINES) break;
    if (Date.now() > deadline) throw new Error(`only ${tried.size} lines blocked after 60 s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await new Promise((resolve) => setTimeout(resolve, SETTLE_S * 1000)); // the last writes settle
  const pid = child.pid as number;
  const cpu0 = cpuSeconds(pid);
  const writes0 = writeCalls(pid);
  await new Promise((resolve) => setTimeout(resolve, WINDOW_S * 1000));
  const cpu = cpuSeconds(pid) - cpu0;
  const writes = writeCalls(pid) - writes0;
  console.log(
    JSON.stringify({
      system: process.env.ACCEPTED_CLI ? 'accepted-other' : 'accepted',
      lines: LINES,
      window_s: WINDOW_S,
      cpu_ms: Math.round(cpu * 1000),
      cpu_share_of_core: Number((cpu / WINDOW_S).toFixed(4)),
      write_calls: writes,
    }),
  );
} finally {
  child.kill('SIGKILL');
  fs.rmSync(data, { recursive: true, force: true });
}
