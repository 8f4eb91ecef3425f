import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { UsageError, resolveServeConfig } from '../src/cli/config.ts';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts';
import { cliArgs, packageRoot, startServer, tempDir } from './helpers.ts';

describe('accepted serve: configuration', () => {
  it('takes flags over environment over defaults', () => {
    const config = resolveServeConfig(['--port', '9000', '--demo'], {
      ACCEPTED_PORT: '7000',
      ACCEPTED_HOST: '0.0.0.0',
      ACCEPTED_CONCURRENCY: '8',
    });
    assert.equal(config.port, 9000);
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.concurrency, 8);
    assert.equal(config.demo, true);
    assert.equal(config.durability, 'full');
    assert.ok(Object.isFrozen(config));
  });

  it('names the flag at fault', () => {
    assert.throws(
      () => resolveServeConfig(['--port', 'http'], {}),
      (e: unknown) => {
        assert.ok(e instanceof UsageError);
        assert.match(e.message, /--port must be a whole number from 0 to 65535/);
        return true;
      },
    );
    assert.throws(
      () => resolveServeConfig(['--durability', 'maybe'], {}),
      /--durability must be full or normal/,
    );
    assert.throws(() => resolveServeConfig(['--bogus'], {}), UsageError);
  });

  it('exits 2 with usage on a bad command line', () => {
    const result = spawnSync(process.execPath, cliArgs('serve', '--port', 'x'), {
      cwd: packageRoot,
      encoding: 'utf8',
    });
    assert.equal(result.status, 2);
    assert.match(result.stderr, /--port must be a whole number/);
    assert.match(result.stderr, /Usage: accepted serve/);
  });

  it('explains a data directory held by another process, without a stack trace', async () => {
    const dir = tempDir('accepted-locked-');
    const holder = new SqliteStore({ filename: path.join(dir, 'accepted.db') });
    await holder.open();
    try {
      const result = spawnSync(process.execPath, cliArgs('serve', '--port', '0', '--data', dir), {
        cwd: packageRoot,
        encoding: 'utf8',
      });
      assert.equal(result.status, 1);
      assert.match(result.stderr, /is in use by another process/);
      assert.match(result.stderr, /another --data directory/);
      assert.doesNotMatch(result.stderr, /\n\s+at /);
    } finally {
      await holder.close();
    }
  });

  it('loads operation types from --handlers and runs them', async () => {
    const dir = tempDir('accepted-handlers-');
    const file = path.join(dir, 'handlers.mjs');
    fs.writeFileSync(
      file,
      `export const operations = [{ type: 'math.double', inputSchema: { type: 'number' }, handler: (n) => n * 2 }];\n`,
    );
    const server = await startServer(dir, ['--handlers', file]);
    const { url } = server;
    try {
      const submitted = await fetch(`${url}/v1/operations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'math.double', input: 21 }),
      });
      const { id } = (await submitted.json()) as { id: string };
      let monitor: { status: string; result: unknown } = { status: 'queued', result: null };
      while (monitor.status !== 'succeeded') {
        monitor = (await (await fetch(`${url}/v1/operations/${id}`)).json()) as typeof monitor;
        assert.notEqual(monitor.status, 'failed');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.equal(monitor.result, 42);
      const bad = await fetch(`${url}/v1/operations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'math.double', input: 'x' }),
      });
      assert.equal(bad.status, 422);
    } finally {
      server.child.kill('SIGTERM');
      await server.exited;
    }
  });
});
