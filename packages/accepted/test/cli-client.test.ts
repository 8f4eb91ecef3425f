// The client commands of the `accepted` binary (submit, watch, ls, get, cancel, retry), run as
// real child processes against a real `accepted serve --demo` with an API key.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { generateApiKey } from '../src/http/auth.ts';
import { cliArgs, packageRoot, startServer, tempDir, type Server } from './helpers.ts';

interface Monitor {
  id: string;
  status: string;
  result: unknown;
  error: { code: string; message: string } | null;
  labels: Record<string, string>;
}

const apiKey = generateApiKey().key;
let server: Server;

before(async () => {
  server = await startServer(tempDir('accepted-cli-client-'), [], {
    ACCEPTED_API_KEYS: `acme:${apiKey}`,
  });
});

after(async () => {
  server.child.kill('SIGTERM');
  await server.exited;
});

/** Runs `accepted ...args` with the server and key in the environment (unless overridden). */
function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, cliArgs(...args), {
    cwd: packageRoot,
    env: { ...process.env, ACCEPTED_URL: server.url, ACCEPTED_API_KEY: apiKey, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

const monitor = (stdout: string) => JSON.parse(stdout) as Monitor;

describe('accepted submit / watch / get / cancel / retry / ls', () => {
  it('submit --wait reaches the same result over every channel, and --json prints the monitor', async () => {
    for (const via of ['sse', 'ws', 'longpoll', 'poll']) {
      const run = await cli([
        'submit',
        'demo.progress',
        '{"steps":2,"ms":20}',
        '--wait',
        '--via',
        via,
        '--json',
      ]);
      assert.equal(run.code, 0, run.stderr);
      const final = monitor(run.stdout);
      assert.equal(final.status, 'succeeded', via);
      assert.deepEqual(final.result, { steps: 2 });
    }
  });

  it('watch follows an operation to its result, a line per change when not on a terminal', async () => {
    const submitted = await cli(['submit', 'demo.progress', '{"steps":3,"ms":150}']);
    assert.equal(submitted.code, 0, submitted.stderr);
    const id = submitted.stdout.trim();
    assert.match(id, /^op_[0-9A-Za-z]{30}$/);
    const watched = await cli(['watch', id]);
    assert.equal(watched.code, 0, watched.stderr);
    const lines = watched.stdout.trimEnd().split('\n');
    assert.ok(!watched.stdout.includes('\r'), 'no carriage returns off a terminal');
    assert.ok(lines.some((line) => line.includes('100%') && line.includes('step 3 of 3')));
    assert.ok(
      lines.some((line) => /^\[#{30}\] 100% {2}succeeded/.test(line)),
      watched.stdout,
    );
    assert.match(watched.stdout, new RegExp(`${id} succeeded in \\d+\\.\\ds \\(attempt 1 of 3\\)`));
    assert.deepEqual(JSON.parse(watched.stdout.slice(watched.stdout.indexOf('{'))), { steps: 3 });

    const json = await cli(['watch', id, '--json']);
    assert.equal(json.code, 0);
    assert.equal(json.stdout.trim().split('\n').length, 1, 'only the final monitor');
    assert.equal(monitor(json.stdout).status, 'succeeded');
  });

  it('the exit status is the outcome: 1 failed, 3 canceled; retry and get', async () => {
    const failed = await cli([
      'submit',
      'demo.fail',
      '{"message":"disk full","code":"NO_SPACE","permanent":true}',
      '--wait',
      '--json',
    ]);
    assert.equal(failed.code, 1);
    const failure = monitor(failed.stdout);
    assert.deepEqual(failure.error, { code: 'NO_SPACE', message: 'disk full' });
    const human = await cli(['get', failure.id]);
    assert.equal(human.code, 1);
    assert.equal(monitor(human.stdout).status, 'failed');

    const sleeping = await cli(['submit', 'demo.sleep', '{"ms":60000}', '--label', 'team=cli']);
    const id = sleeping.stdout.trim();
    const watching = cli(['watch', id]);
    const canceled = await cli(['cancel', id]);
    assert.equal(canceled.code, 0, canceled.stderr);
    const watched = await watching;
    assert.equal(watched.code, 3, watched.stdout + watched.stderr);
    assert.match(watched.stdout, /CANCELED: /);

    const retried = await cli(['retry', id, '--json']);
    assert.equal(retried.code, 0, retried.stderr);
    assert.equal(monitor(retried.stdout).status, 'queued');
    assert.equal((await cli(['cancel', id])).code, 0);
    assert.equal((await cli(['watch', id, '--json'])).code, 3);
  });

  it('ls prints a page, filtered, as lines or as one JSON page', async () => {
    const label = `l${Date.now()}`;
    for (let i = 0; i < 3; i++) {
      const run = await cli([
        'submit',
        'demo.echo',
        String(i),
        '--wait',
        '--label',
        `batch=${label}`,
      ]);
      assert.equal(run.code, 0, run.stderr);
    }
    const page = await cli(['ls', '--label', `batch=${label}`, '--limit', '2', '--json']);
    assert.equal(page.code, 0, page.stderr);
    const parsed = JSON.parse(page.stdout) as { items: Monitor[]; nextCursor: string | null };
    assert.equal(parsed.items.length, 2);
    assert.ok(parsed.nextCursor);
    const rest = await cli(['ls', '--label', `batch=${label}`, '--cursor', parsed.nextCursor]);
    assert.equal(rest.stdout.trim().split('\n').length, 1);
    assert.match(rest.stdout, /demo\.echo {2}succeeded/);
    const failedOnly = await cli(['ls', '--status', 'failed', '--json']);
    const failedPage = JSON.parse(failedOnly.stdout) as { items: Monitor[] };
    // Not empty: the demo.fail of the test above is listed, and only failed ones.
    assert.ok(failedPage.items.length > 0, failedOnly.stdout);
    assert.ok(failedPage.items.every((item) => item.status === 'failed'));
  });

  it('usage errors exit 2; refused requests exit 1 with the problem code', async () => {
    for (const args of [
      ['submit'],
      ['submit', 'demo.echo', '{not json'],
      ['submit', 'demo.echo', '--via', 'pigeon'],
      ['watch'],
      ['ls', '--status', 'lost'],
      ['get', 'op_1', '--bogus'],
    ]) {
      const run = await cli(args);
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, /Usage:/);
    }
    const anonymous = await cli(['ls'], { ACCEPTED_API_KEY: '' });
    assert.equal(anonymous.code, 1);
    assert.match(anonymous.stderr, /UNAUTHENTICATED/);
    const withFlag = await cli(['ls', '--api-key', apiKey], { ACCEPTED_API_KEY: '' });
    assert.equal(withFlag.code, 0, withFlag.stderr);
    const missing = await cli(['get', 'op_000000000000000000000000000000']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /OPERATION_NOT_FOUND/);
    const help = await cli(['watch', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /accepted watch ID/);
  });
});
