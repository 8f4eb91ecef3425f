#!/usr/bin/env node
// Runs every test file with Node's test runner (TypeScript through tsx), prints the spec
// report, and ends with one line: "N passed, N failed".
//
// Two passes: every file on the embedded store (SQLite), then the behavioural suites below
// again on PostgreSQL (ACCEPTED_TEST_STORE=postgres; the server is ACCEPTED_TEST_PG, each
// file in fresh schemas). Their suite names end in [sqlite] or [postgres]; the last line
// counts both passes.
//
//   node scripts/test.mjs [--store=sqlite|postgres|both] [part-of-a-file-name ...]
//
// --store=sqlite runs the first pass only, --store=postgres the second only (default both,
// or what ACCEPTED_TEST_STORE says). Outside CI, an unreachable PostgreSQL skips the second
// pass with a message; in CI (CI set to anything but empty, false or 0) it runs and fails.
// Every skipped test is listed with its reason before the last line, and counted.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** The suites that run on both stores (file names under packages/accepted/test). */
const BOTH_STORES = [
  'engine.test.ts',
  'engine-defects.test.ts',
  'worker.test.ts',
  'http-api.test.ts',
  'http.test.ts',
  'http-edges.test.ts',
  'stream.test.ts',
  'stream-defects.test.ts',
  'wait.test.ts',
  'webhooks.test.ts',
  'webhook-defects.test.ts',
  'properties.test.ts',
  'webhook-properties.test.ts',
  'engine-properties.test.ts',
  'fuzz.test.ts',
];
/** As test/ci.ts: CI set to anything but empty, `false` or `0`. */
const IN_CI =
  process.env.CI !== undefined && !['', 'false', '0'].includes(process.env.CI.trim().toLowerCase());
const PG_URL = process.env.ACCEPTED_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
const storeArg = args.find((a) => a.startsWith('--store='))?.slice('--store='.length);
const only = args.filter((a) => !a.startsWith('--store='));
const stores = storeArg ?? process.env.ACCEPTED_TEST_STORE ?? 'both';
if (!['sqlite', 'postgres', 'both'].includes(stores)) {
  console.error(`--store must be sqlite, postgres or both (got "${stores}")`);
  process.exit(2);
}

function findTests(dir) {
  const out = [];
  if (!fs.existsSync(dir)) return out;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory() && entry.name !== 'node_modules') out.push(...findTests(full));
    else if (entry.isFile() && entry.name.endsWith('.test.ts')) out.push(full);
  }
  return out;
}

const files = fs
  .readdirSync(path.join(root, 'packages'))
  .flatMap((pkg) => findTests(path.join(root, 'packages', pkg, 'test')))
  .filter((file) => only.length === 0 || only.some((o) => file.includes(o)))
  .sort();
const serverSuite = path.join(root, 'packages', 'accepted', 'test');
const onBoth = files.filter(
  (file) => path.dirname(file) === serverSuite && BOTH_STORES.includes(path.basename(file)),
);

/** Null if something accepts connections at the PostgreSQL URL's host and port, else why not. */
function pgUnreachable() {
  let url;
  try {
    url = new URL(PG_URL);
  } catch {
    return Promise.resolve(`ACCEPTED_TEST_PG is not a URL: ${PG_URL}`);
  }
  const host = url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1';
  const port = Number(url.port || 5432);
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(3000, () => socket.destroy(new Error('timed out')));
    socket.once('connect', () => {
      socket.destroy();
      resolve(null);
    });
    socket.once('error', (error) => resolve(`${host}:${port}: ${error.message}`));
  });
}

/** One run of the test runner over `list` with `store`; resolves to its counts. */
function run(list, store) {
  const tap = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-test-')), 'report.tap');
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--test',
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      '--test-reporter=tap',
      `--test-reporter-destination=${tap}`,
      ...list,
    ],
    {
      cwd: root,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, ACCEPTED_TEST_STORE: store },
    },
  );
  return new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      const report = fs.existsSync(tap) ? fs.readFileSync(tap, 'utf8') : '';
      const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(report)?.[1] ?? 0);
      let failed = count('fail') + count('cancelled');
      // `ok N - name # SKIP reason` at any depth: the skipped tests, with their reasons.
      const skips = [...report.matchAll(/^\s*ok \d+ - (.*?) # SKIP(?: (.*))?$/gm)].map(
        (m) => `${m[1]}${m[2] ? `: ${m[2]}` : ''}`,
      );
      // A runner that died before its report still fails the run.
      if ((code ?? 1) !== 0 && failed === 0) failed = 1;
      resolve({ passed: count('pass'), failed, skips, ok: code === 0 && !signal });
    });
  });
}

const results = [];
if (stores !== 'postgres' && files.length > 0) {
  results.push({ store: 'sqlite', ...(await run(files, 'sqlite')) });
}
if (stores !== 'sqlite' && onBoth.length > 0) {
  const why = await pgUnreachable();
  if (why && !IN_CI) {
    console.log(`\nskipping the PostgreSQL pass: ${PG_URL} is unreachable (${why})`);
  } else {
    console.log(
      `\n== the behavioural suites again on PostgreSQL (ACCEPTED_TEST_STORE=postgres): ` +
        `${onBoth.length} files, suite names ending in [postgres]\n`,
    );
    results.push({ store: 'postgres', ...(await run(onBoth, 'postgres')) });
  }
}
const skipped = results.flatMap((r) => r.skips.map((skip) => `[${r.store}] ${skip}`));
if (skipped.length > 0) {
  console.log(`\n${skipped.length} skipped:`);
  for (const skip of skipped) console.log(`  - ${skip}`);
}
const passed = results.reduce((sum, r) => sum + r.passed, 0);
const failed = results.reduce((sum, r) => sum + r.failed, 0);
if (results.length > 1) {
  console.log(
    results
      .map((r) => `${r.store}: ${r.passed} passed, ${r.failed} failed, ${r.skips.length} skipped`)
      .join('; '),
  );
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
