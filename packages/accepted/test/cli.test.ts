import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { UsageError, resolveServeConfig } from '../src/cli/config.ts';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts';
import { cliArgs, packageRoot, startServer, tempDir } from './helpers.ts';

describe('accepted serve: configuration', () => {
  it('takes flags over environment over defaults', () => {
    const config = resolveServeConfig(['--port', '9000', '--demo', '--insecure'], {
      ACCEPTED_PORT: '7000',
      ACCEPTED_HOST: '0.0.0.0',
      ACCEPTED_CONCURRENCY: '8',
      ACCEPTED_MAX_WAIT: '30',
    });
    assert.equal(config.port, 9000);
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.concurrency, 8);
    assert.equal(config.demo, true);
    assert.equal(config.durability, 'full');
    assert.equal(config.maxWaitSeconds, 30);
    assert.equal(config.apiKeys, null);
    assert.ok(Object.isFrozen(config));
  });

  it('refuses a public address without API keys unless --insecure', () => {
    assert.throws(
      () => resolveServeConfig(['--host', '0.0.0.0'], {}),
      /refusing to serve 0\.0\.0\.0 without API keys/,
    );
    assert.equal(resolveServeConfig(['--host', '127.0.0.2'], {}).apiKeys, null);
    assert.equal(resolveServeConfig(['--host', '::1'], {}).host, '::1');
    const keyed = resolveServeConfig(['--host', '0.0.0.0'], {
      ACCEPTED_API_KEYS: 'acme:0123456789abcdefghij,beta:abcdefghij0123456789',
    });
    assert.equal(keyed.apiKeys?.size, 2);
    assert.equal(keyed.apiKeys.lookup('0123456789abcdefghij')?.tenant, 'acme');
    assert.equal(keyed.apiKeys.lookup('abcdefghij0123456789')?.tenant, 'beta');
    assert.equal(keyed.apiKeys.lookup('0123456789abcdefghiX'), null);
  });

  it('reads API keys from a file (keys or digests) and refuses weak ones', () => {
    const dir = tempDir('accepted-keys-');
    const file = path.join(dir, 'keys.json');
    const digest = createHash('sha256').update('a-long-enough-key-for-ci').digest('hex');
    fs.writeFileSync(
      file,
      JSON.stringify({
        keys: [
          { tenant: 'acme', key: 'a-long-enough-key-for-acme', name: 'web' },
          { tenant: 'ci', sha256: digest },
        ],
      }),
    );
    const config = resolveServeConfig(['--api-keys', file], {});
    assert.equal(config.apiKeys?.lookup('a-long-enough-key-for-acme')?.tenant, 'acme');
    assert.equal(config.apiKeys.lookup('a-long-enough-key-for-ci')?.tenant, 'ci');
    fs.writeFileSync(file, JSON.stringify({ keys: [{ tenant: 'acme', key: 'short' }] }));
    assert.throws(() => resolveServeConfig(['--api-keys', file], {}), /too short/);
    fs.writeFileSync(
      file,
      JSON.stringify({ keys: [{ tenant: 'bad tenant!', key: 'x'.repeat(30) }] }),
    );
    assert.throws(() => resolveServeConfig(['--api-keys', file], {}), /not a valid tenant/);
    assert.throws(
      () => resolveServeConfig(['--api-keys', path.join(dir, 'none.json')], {}),
      /Cannot read/,
    );
  });

  it('accepted keygen prints a key whose digest line configures it', () => {
    const result = spawnSync(process.execPath, cliArgs('keygen', '--tenant', 'acme'), {
      cwd: packageRoot,
      encoding: 'utf8',
    });
    assert.equal(result.status, 0);
    const key = /^\s+(acc_[A-Za-z0-9_-]{43})$/m.exec(result.stdout)?.[1];
    assert.ok(key, result.stdout);
    const entry = JSON.parse(/^\s+(\{.*\})$/m.exec(result.stdout)?.[1] ?? '{}') as {
      tenant: string;
      sha256: string;
    };
    assert.equal(entry.tenant, 'acme');
    assert.equal(entry.sha256, createHash('sha256').update(key).digest('hex'));
  });

  it('with ACCEPTED_API_KEYS, the real server answers 401 without a key and serves the key’s tenant', async () => {
    const dir = tempDir('accepted-auth-');
    const key = 'server-test-key-0123456789';
    const server = await startServer(dir, [], { ACCEPTED_API_KEYS: `acme:${key}` });
    try {
      const anonymous = await fetch(`${server.url}/v1/operations`);
      assert.equal(anonymous.status, 401);
      const listed = await fetch(`${server.url}/v1/operations`, {
        headers: { authorization: `Bearer ${key}` },
      });
      assert.equal(listed.status, 200);
    } finally {
      server.child.kill('SIGTERM');
      await server.exited;
    }
  });

  it('logs local development mode when it runs without keys', async () => {
    const server = await startServer(tempDir('accepted-dev-'));
    try {
      await server.logged(
        'local development mode: no API keys, loopback only, every request is tenant "default"',
      );
    } finally {
      server.child.kill('SIGTERM');
      await server.exited;
    }
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
