// The browser build of @accepted/client (esbuild, ESM, minified: what `npm run bench` measures)
// run in a real headless Chromium against a real server, served from the API's origin.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { Browser } from 'playwright-core';
import { launchChromium, skipWithoutChromium } from '../../accepted/test/chromium.ts';
import { startServer, tempDir, type Server } from '../../accepted/test/helpers.ts';
import { startProxy, type Proxy } from './proxy.ts';

const skip = skipWithoutChromium;

const entry = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/index.ts');
const PAGE = `<!doctype html><meta charset="utf-8"><title>client</title>
<script type="module">
  import * as sdk from '/accepted-client.js';
  window.sdk = sdk;
</script>`;

/** What the page reports back. */
interface Outcome {
  echoed: unknown;
  types: string[];
  finals: { via: string; status: string; result: unknown }[];
  failure: { name: string; code: string; isOperationFailed: boolean };
}

describe('the browser build in headless Chromium', { skip, timeout: 120_000 }, () => {
  let server: Server | undefined;
  let front: Proxy | undefined;
  let browser: Browser | undefined;

  before(async () => {
    const out = path.join(tempDir('accepted-client-browser-'), 'accepted-client.js');
    await build({
      entryPoints: [entry],
      bundle: true,
      minify: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      outfile: out,
    });
    const bundle = fs.readFileSync(out);
    server = await startServer(tempDir('accepted-client-browser-data-'));
    // One origin for the page, the bundle and the API (no CORS): the proxy answers the first
    // two and forwards everything else, WebSocket upgrades included.
    front = await startProxy(server.url);
    front.intercept = (req, res) => {
      const [type, body] =
        req.url === '/'
          ? ['text/html; charset=utf-8', PAGE]
          : req.url === '/accepted-client.js'
            ? ['text/javascript; charset=utf-8', bundle]
            : [];
      if (body === undefined || type === undefined) return false;
      res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
      return true;
    };
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await front?.close();
    if (server) {
      server.child.kill('SIGTERM');
      await server.exited;
    }
  });

  it('runs, follows events and waits over every channel, with typed errors', async () => {
    const context = await browser!.newContext();
    try {
      const page = await context.newPage();
      const pageErrors: Error[] = [];
      page.on('pageerror', (error) => pageErrors.push(error));
      await page.goto(front!.url);
      await page.waitForFunction('window.sdk !== undefined');
      // A string, because the test is typed without the DOM library.
      const outcome = await page.evaluate<Outcome>(`(async () => {
        const client = window.sdk.createClient({ baseUrl: location.origin });
        const echoed = await client.run('demo.echo', { from: 'the browser' });
        const handle = await client.submit('demo.progress', { steps: 3, ms: 50 });
        const types = [];
        for await (const event of handle.events()) types.push(event.type);
        const finals = [];
        for (const via of ['sse', 'ws', 'longpoll', 'poll']) {
          const next = await client.submit('demo.progress', { steps: 2, ms: 30 });
          const final = await next.wait({ via, timeoutMs: 20000 });
          finals.push({ via, status: final.status, result: final.result });
        }
        let failure;
        try {
          await client.run('demo.fail', { message: 'nope', permanent: true }, { via: 'sse' });
        } catch (error) {
          failure = {
            name: error.name,
            code: error.code,
            isOperationFailed: error instanceof window.sdk.OperationFailedError,
          };
        }
        return { echoed, types, finals, failure };
      })()`);
      assert.deepEqual(outcome.echoed, { from: 'the browser' });
      assert.equal(outcome.types[0], 'operation.snapshot');
      assert.equal(outcome.types.at(-1), 'operation.succeeded');
      for (const final of outcome.finals) {
        assert.deepEqual(final, { via: final.via, status: 'succeeded', result: { steps: 2 } });
      }
      assert.deepEqual(
        outcome.finals.map((final) => final.via),
        ['sse', 'ws', 'longpoll', 'poll'],
      );
      assert.deepEqual(outcome.failure, {
        name: 'OperationFailedError',
        code: 'DEMO_FAILURE',
        isOperationFailed: true,
      });
      assert.deepEqual(pageErrors, []);
    } finally {
      await context.close();
    }
  });
});
