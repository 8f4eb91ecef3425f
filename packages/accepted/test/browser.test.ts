// End to end in a real headless Chromium: the browser example (examples/browser) follows an
// operation with EventSource and a stream token minted by its backend.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { launchChromium, skipWithoutChromium } from './chromium.ts';
import { generateApiKey } from '../src/http/auth.ts';
import { packageRoot, tempDir } from './helpers.ts';

const skip = skipWithoutChromium;

const repoRoot = path.resolve(packageRoot, '../..');
const exampleServer = path.join(repoRoot, 'examples/browser/server.ts');

const STREAM_TYPES = [
  'operation.snapshot',
  'operation.started',
  'operation.progress',
  'operation.succeeded',
  'operation.failed',
  'operation.canceled',
];

interface Progress {
  fraction: number;
  message?: string;
}
interface Monitor {
  id: string;
  status: string;
  progress: Progress | null;
  result: unknown;
}
/** What the page keeps in `window.acceptedEvents`. */
interface PageEvent {
  seq: number;
  type: string;
  operationId: string;
  operation?: Monitor;
  data?: { status: string; progress?: Progress | null; result?: unknown };
}

interface Example {
  child: ChildProcess;
  url: string;
  exited: Promise<number | null>;
}

/** Starts examples/browser/server.ts on any port and waits for its `listening on` line. */
async function startExample(dataDir: string, apiKey: string): Promise<Example> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', exampleServer, '--port', '0', '--data', dataDir, '--api-key', apiKey],
    { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the example did not start in 30 s')), 30_000);
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const match = /^listening on (http:\/\/\S+)$/.exec(line);
      if (match?.[1]) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the example exited early with ${code}`));
    });
  });
  return { child, url, exited };
}

async function stopExample(example: Example): Promise<void> {
  example.child.kill('SIGTERM');
  const timer = setTimeout(() => example.child.kill('SIGKILL'), 5000);
  await example.exited;
  clearTimeout(timer);
}

/**
 * Browser-side: opens an EventSource on `url` and counts the events it gets, until it is
 * CLOSED (the browser gave up), a terminal event arrives, or 10 s pass. A string, because
 * the test is typed without the DOM library.
 */
function probeScript(url: string): string {
  return `new Promise((resolve) => {
    const source = new EventSource(${JSON.stringify(url)});
    let received = 0;
    const done = () => { const readyState = source.readyState; source.close(); resolve({ received, readyState }); };
    for (const type of ${JSON.stringify(STREAM_TYPES)}) {
      source.addEventListener(type, () => {
        received += 1;
        if (/succeeded|failed|canceled/.test(type)) done();
      });
    }
    source.addEventListener('message', () => { received += 1; });
    source.addEventListener('error', () => { if (source.readyState === EventSource.CLOSED) done(); });
    setTimeout(done, 10000);
  })`;
}

describe('browser example in headless Chromium', { skip, timeout: 120_000 }, () => {
  const apiKey = generateApiKey().key;
  let example: Example | undefined;
  let browser: Browser | undefined;

  before(async () => {
    example = await startExample(tempDir('accepted-browser-'), apiKey);
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    if (example) await stopExample(example);
  });

  async function withPage(use: (page: Page, base: string) => Promise<void>): Promise<void> {
    const context = await browser!.newContext();
    try {
      await use(await context.newPage(), example!.url);
    } finally {
      await context.close();
    }
  }

  it('Start runs an operation and the page follows it to its result over SSE', async () => {
    const steps = 4;
    await withPage(async (page, base) => {
      const pageErrors: Error[] = [];
      page.on('pageerror', (error) => pageErrors.push(error));
      await page.goto(base);
      await page.getByLabel('Steps').fill(String(steps));
      await page.getByLabel('Milliseconds per step').fill('300');
      await page.getByRole('button', { name: 'Start' }).click();
      // Until the status settles (succeeded, or anything else that is not on the way).
      await page.waitForFunction(
        `!['idle', 'starting', 'queued', 'running'].includes(document.getElementById('status').textContent)`,
        undefined,
        { timeout: 30_000 },
      );
      if (process.env.ACCEPTED_SCREENSHOT) {
        await page.screenshot({ path: process.env.ACCEPTED_SCREENSHOT, fullPage: true });
      }
      assert.equal(await page.locator('#status').textContent(), 'succeeded');
      assert.deepEqual(pageErrors, []);

      const [value, max] = await page.evaluate<[number, number]>(
        `[document.getElementById('progress').value, document.getElementById('progress').max]`,
      );
      assert.equal(value, max, 'the progress bar is full');
      assert.equal(await page.locator('#message').textContent(), `step ${steps} of ${steps}`);

      const events = await page.evaluate<PageEvent[]>('window.acceptedEvents');
      const types = events.map((event) => event.type);
      for (let i = 1; i < events.length; i++) {
        assert.ok(events[i]!.seq > events[i - 1]!.seq, `seq increases: ${JSON.stringify(events)}`);
      }
      assert.equal(
        types[0],
        'operation.snapshot',
        'a stream without a cursor opens with a snapshot',
      );
      assert.equal(types.filter((type) => type === 'operation.snapshot').length, 1);
      const id = events[0]!.operationId;
      assert.equal(await page.locator('#operation-id').textContent(), id);
      assert.ok(events.every((event) => event.operationId === id));

      // One progress event per step. Steps done before the stream opened (none, unless the
      // machine is very slow: a step takes 300 ms) are in the snapshot instead, not repeated.
      const snapshotFraction = events[0]!.operation?.progress?.fraction ?? 0;
      const stepsInSnapshot = Math.round(snapshotFraction * steps);
      const progressed = events
        .filter((event) => event.type === 'operation.progress')
        .map((event) => event.data?.progress?.message);
      const expected: string[] = [];
      for (let step = stepsInSnapshot + 1; step <= steps; step++) {
        expected.push(`step ${step} of ${steps}`);
      }
      assert.deepEqual(progressed, expected);

      assert.equal(types.filter((type) => type === 'operation.succeeded').length, 1);
      assert.equal(types.at(-1), 'operation.succeeded', 'the terminal event comes last');

      const response = await fetch(`${base}/v1/operations/${id}`, {
        headers: { authorization: `Bearer ${apiKey}` },
      });
      assert.equal(response.status, 200);
      const monitor = (await response.json()) as Monitor;
      assert.equal(monitor.status, 'succeeded');
      assert.deepEqual(monitor.result, { steps });
      assert.deepEqual(events.at(-1)!.data?.result, monitor.result);
      const shown = JSON.parse((await page.locator('#result').textContent()) ?? '') as unknown;
      assert.deepEqual(shown, monitor.result, 'the page shows the operation’s result');
    });
  });

  it('the token is enforced: a bad, missing or foreign token gets no events', async () => {
    const start = async () => {
      const response = await fetch(`${example!.url}/demo/start`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ steps: 2, ms: 100 }),
      });
      assert.equal(response.status, 200);
      return (await response.json()) as { operationId: string; token: string };
    };
    const mine = await start();
    const other = await start();
    const streamOf = (token: string) =>
      `/v1/operations/${mine.operationId}/events?access_token=${encodeURIComponent(token)}`;

    await withPage(async (page, base) => {
      await page.goto(base);
      const refused: [string, string][] = [
        ['a malformed token', 'st_not-a-real-token'],
        ['no token', ''],
        ['a token for another operation', other.token],
      ];
      for (const [what, token] of refused) {
        const answer = await fetch(`${base}${streamOf(token)}`, {
          headers: { accept: 'text/event-stream' },
        });
        await answer.body?.cancel();
        assert.ok(answer.status >= 400, `${what} is refused (HTTP ${answer.status})`);
        const outcome = await page.evaluate<{ received: number; readyState: number }>(
          probeScript(streamOf(token)),
        );
        assert.deepEqual(outcome, { received: 0, readyState: 2 }, `${what}: no events, CLOSED`);
      }
      // The same probe with the right token does get events: the refusals above are real.
      const allowed = await page.evaluate<{ received: number; readyState: number }>(
        probeScript(streamOf(mine.token)),
      );
      assert.ok(allowed.received > 0, JSON.stringify(allowed));
    });
  });
});
