import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { UsageError, resolveServeConfig } from '../src/cli/config.ts';
import { DEFAULT_HTTP_LIMITS } from '../src/http/limits.ts';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts';
import { cliArgs, packageRoot, startServer, tempDir } from './helpers.ts';
import { assertProblem, connect, exchange } from './raw-http.ts';

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

  it('reads --heartbeat as a duration in ms, s or m (a plain number is seconds)', () => {
    const heartbeat = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
      resolveServeConfig(argv, env).heartbeatMs;
    assert.equal(heartbeat([]), 15_000);
    assert.equal(heartbeat(['--heartbeat', '500ms']), 500);
    assert.equal(heartbeat(['--heartbeat', '15s']), 15_000);
    assert.equal(heartbeat(['--heartbeat', '1m']), 60_000);
    assert.equal(heartbeat(['--heartbeat', '1.5m']), 90_000);
    assert.equal(heartbeat(['--heartbeat', '30']), 30_000);
    assert.equal(heartbeat([], { ACCEPTED_HEARTBEAT: '2s' }), 2000);
    assert.equal(heartbeat([], { ACCEPTED_HEARTBEAT: '' }), 15_000);
    assert.equal(heartbeat(['--heartbeat', '250ms'], { ACCEPTED_HEARTBEAT: '2s' }), 250);
    for (const bad of ['fast', '15 s', '10h', '-1s', '5ms', '61m', '0.0001s']) {
      assert.throws(
        () => resolveServeConfig([`--heartbeat=${bad}`], {}),
        (e: unknown) => {
          assert.ok(e instanceof UsageError, bad);
          assert.match(e.message, /^--heartbeat must be a duration from 10ms to 1h/);
          assert.ok(e.message.includes(`(got "${bad}")`), e.message);
          return true;
        },
      );
    }
    assert.throws(
      () => resolveServeConfig([], { ACCEPTED_HEARTBEAT: 'soon' }),
      /--heartbeat must be a duration/,
    );
  });

  it('takes --stream-secret or ACCEPTED_STREAM_SECRET, at least 32 characters', () => {
    const secret = 's'.repeat(32);
    assert.equal(resolveServeConfig([], {}).streamSecret, null);
    assert.equal(resolveServeConfig([], { ACCEPTED_STREAM_SECRET: '' }).streamSecret, null);
    assert.equal(resolveServeConfig(['--stream-secret', secret], {}).streamSecret, secret);
    assert.equal(resolveServeConfig([], { ACCEPTED_STREAM_SECRET: secret }).streamSecret, secret);
    assert.equal(
      resolveServeConfig(['--stream-secret', `${secret}-flag`], { ACCEPTED_STREAM_SECRET: secret })
        .streamSecret,
      `${secret}-flag`,
    );
    for (const [argv, env] of [
      [['--stream-secret', 'too-short'], {}],
      [[], { ACCEPTED_STREAM_SECRET: 's'.repeat(31) }],
    ] as const) {
      assert.throws(
        () => resolveServeConfig([...argv], env),
        (e: unknown) => {
          assert.ok(e instanceof UsageError);
          assert.match(e.message, /^--stream-secret must have at least 32 characters/);
          assert.doesNotMatch(e.message, /too-short|s{31}/, 'the secret is not echoed');
          return true;
        },
      );
    }
  });

  it('reads --store (or ACCEPTED_STORE, then DATABASE_URL), --schema and --lease', () => {
    const pg = 'postgres://u:p@127.0.0.1:5432/db';
    assert.equal(resolveServeConfig([], {}).store, null);
    assert.equal(resolveServeConfig(['--store', pg], {}).store, pg);
    assert.equal(resolveServeConfig([], { DATABASE_URL: pg }).store, pg);
    assert.equal(
      resolveServeConfig([], { ACCEPTED_STORE: pg, DATABASE_URL: 'postgres://other/db' }).store,
      pg,
    );
    assert.equal(resolveServeConfig(['--schema', 'acc_1'], {}).schema, 'acc_1');
    assert.equal(resolveServeConfig(['--lease', '2s'], {}).leaseMs, 2000);
    assert.equal(resolveServeConfig([], {}).leaseMs, 30_000);
    for (const [argv, pattern] of [
      [['--store', 'mysql://u:secret@h/db'], /^--store must be a PostgreSQL URL/],
      [['--schema', 'Bad-Name'], /^--schema must be lowercase/],
      [['--lease', 'forever'], /^--lease must be a duration/],
    ] as const) {
      assert.throws(
        () => resolveServeConfig([...argv], {}),
        (e: unknown) =>
          e instanceof UsageError && pattern.test(e.message) && !e.message.includes('secret'),
      );
    }
  });

  it('reads the webhook flags: retries with units, repeatable allow CIDRs, the timeout', () => {
    const config = resolveServeConfig(
      [
        '--webhook-retries',
        '500ms,5s,2m,1h',
        '--webhook-allow',
        '127.0.0.0/8',
        '--webhook-allow',
        '::1/128',
      ],
      { ACCEPTED_WEBHOOK_ALLOW: '10.0.0.0/8', ACCEPTED_WEBHOOK_TIMEOUT: '2s' },
    );
    assert.deepEqual(config.webhookRetries, [500, 5000, 120_000, 3_600_000]);
    assert.deepEqual(config.webhookAllow, ['127.0.0.0/8', '::1/128', '10.0.0.0/8']);
    assert.equal(config.webhookTimeoutMs, 2000);
    assert.equal(
      resolveServeConfig(['--webhook-disable-after', '2d'], {}).webhookDisableAfterMs,
      2 * 24 * 3_600_000,
    );
    assert.equal(
      resolveServeConfig([], { ACCEPTED_WEBHOOK_DISABLE_AFTER: '90m' }).webhookDisableAfterMs,
      90 * 60_000,
    );
    assert.throws(
      () => resolveServeConfig(['--webhook-disable-after', 'later'], {}),
      /--webhook-disable-after must be a duration/,
    );
    const defaults = resolveServeConfig([], {});
    assert.equal(defaults.webhookRetries, null);
    assert.deepEqual(defaults.webhookAllow, []);
    assert.equal(defaults.webhookTimeoutMs, 15_000);
    assert.deepEqual(
      resolveServeConfig([], { ACCEPTED_WEBHOOK_RETRIES: '1s,1m' }).webhookRetries,
      [1000, 60_000],
    );
    for (const [argv, pattern] of [
      [['--webhook-retries', '5s,soon'], /^--webhook-retries must be delays/],
      [['--webhook-allow', '300.1.2.3/8'], /^--webhook-allow: /],
      [['--webhook-timeout', 'forever'], /^--webhook-timeout must be a duration/],
      // Past the bounds the webhook sender holds (WEBHOOK_LIMITS): named, at parse time.
      [['--webhook-retries', '5s,25h'], /^--webhook-retries \(delay 2\) must be/],
      [
        ['--webhook-retries', Array(101).fill('1s').join(',')],
        /^--webhook-retries must have at most 100/,
      ],
      [['--webhook-disable-after', '400d'], /^--webhook-disable-after must be/],
      [['--webhook-timeout', '301s'], /^--webhook-timeout must be a duration/],
    ] as const) {
      assert.throws(
        () => resolveServeConfig([...argv], {}),
        (e: unknown) => e instanceof UsageError && pattern.test(e.message),
      );
    }
  });

  it('a real server signs stream tokens with --stream-secret and sends heartbeats at --heartbeat', async () => {
    const secret = 'a-shared-stream-secret-0123456789';
    const server = await startServer(tempDir('accepted-streams-'), ['--heartbeat', '50ms'], {
      ACCEPTED_STREAM_SECRET: secret,
    });
    try {
      const minted = await fetch(`${server.url}/v1/stream-tokens`, { method: 'POST' });
      assert.equal(minted.status, 201);
      const { token } = (await minted.json()) as { token: string };
      const [payload, signature] = token.slice('st_'.length).split('.');
      assert.equal(
        signature,
        createHmac('sha256', secret)
          .update(payload ?? '')
          .digest('base64url'),
      );
      // node:http rather than fetch: an aborted fetch has undici open a spare connection,
      // which would hold the server's shutdown until that connection's headers time out.
      const stream = await new Promise<{ status?: number; text: string }>((resolve, reject) => {
        let text = '';
        // A deadline, so a server that never sends a keepalive fails the test instead of
        // hanging it (two are due within 100 ms).
        const deadline = setTimeout(() => {
          request.destroy();
          reject(new Error(`no two keepalives within 30 s; got ${JSON.stringify(text)}`));
        }, 30_000);
        const request = http.get(
          `${server.url}/v1/events?access_token=${token}`,
          { headers: { accept: 'text/event-stream' }, agent: false },
          (response) => {
            response.setEncoding('utf8');
            response.on('data', (chunk: string) => {
              text += chunk;
              if ((text.match(/: keepalive\n\n/g) ?? []).length < 2) return;
              clearTimeout(deadline);
              resolve({ status: response.statusCode, text });
              request.destroy();
            });
            response.on('end', () => {
              clearTimeout(deadline);
              resolve({ status: response.statusCode, text });
            });
          },
        );
        request.on('error', (error) => {
          clearTimeout(deadline);
          reject(error);
        });
      });
      assert.equal(stream.status, 200);
      assert.match(stream.text, /^retry: \d+\n\n: keepalive\n\n: keepalive\n\n/);
      // The configured interval, as the server states it to every WebSocket client.
      const welcome = await new Promise<{ heartbeatMs: number }>((resolve, reject) => {
        const ws = new WebSocket(`${server.url.replace('http', 'ws')}/v1/ws`);
        ws.once('message', (data: Buffer) => {
          resolve(JSON.parse(data.toString('utf8')) as { heartbeatMs: number });
          ws.terminate();
        });
        ws.once('error', reject);
      });
      assert.equal(welcome.heartbeatMs, 50);
    } finally {
      server.child.kill('SIGTERM');
      await server.exited;
    }
  });

  it('reads the limit flags (sizes, durations, connection caps) over environment over defaults', () => {
    const defaults = resolveServeConfig([], {});
    assert.deepEqual(
      {
        bodyLimit: defaults.bodyLimit,
        maxHeaderSize: defaults.maxHeaderSize,
        headersTimeoutMs: defaults.headersTimeoutMs,
        requestTimeoutMs: defaults.requestTimeoutMs,
        keepAliveTimeoutMs: defaults.keepAliveTimeoutMs,
        maxConnections: defaults.maxConnections,
        maxConnectionsPerIp: defaults.maxConnectionsPerIp,
      },
      DEFAULT_HTTP_LIMITS,
    );
    const config = resolveServeConfig(
      [
        '--body-limit',
        '4mb',
        '--headers-timeout',
        '2s',
        '--request-timeout',
        '1m',
        '--max-connections',
        '0',
      ],
      {
        ACCEPTED_BODY_LIMIT: '1kb',
        ACCEPTED_MAX_HEADER_SIZE: '32kb',
        ACCEPTED_KEEP_ALIVE_TIMEOUT: '500ms',
        ACCEPTED_MAX_CONNECTIONS_PER_IP: '50',
      },
    );
    assert.equal(config.bodyLimit, 4 * 1024 * 1024);
    assert.equal(config.maxHeaderSize, 32 * 1024);
    assert.equal(config.headersTimeoutMs, 2000);
    assert.equal(config.requestTimeoutMs, 60_000);
    assert.equal(config.keepAliveTimeoutMs, 500);
    assert.equal(config.maxConnections, 0);
    assert.equal(config.maxConnectionsPerIp, 50);
    for (const [args, pattern] of [
      [['--body-limit', '2gb'], /--body-limit must be a size/],
      [['--body-limit', '12'], /--body-limit must be a size from 1kb to 1gb/],
      [['--max-header-size', 'big'], /--max-header-size must be a size/],
      [['--headers-timeout', '0'], /--headers-timeout must be a duration/],
      [['--request-timeout', 'soon'], /--request-timeout must be a duration/],
      [['--keep-alive-timeout', '2h'], /--keep-alive-timeout must be a duration/],
      [['--max-connections', '10000001'], /--max-connections must be a whole number/],
      [['--max-connections-per-ip', 'x'], /--max-connections-per-ip must be a whole number/],
      [
        ['--headers-timeout', '40s', '--request-timeout', '30s'],
        /--headers-timeout \(40000ms\) must not be longer than --request-timeout/,
      ],
    ] as const) {
      assert.throws(
        () => resolveServeConfig(args, {}),
        (e: unknown) => e instanceof UsageError && pattern.test(e.message),
        args.join(' '),
      );
    }
  });

  it('a real server applies the limit flags: the per-address cap and the headers timeout', async () => {
    const server = await startServer(tempDir('accepted-limits-'), [
      '--max-connections-per-ip',
      '1',
      '--headers-timeout',
      '100ms',
      '--request-timeout',
      '200ms',
    ]);
    try {
      const port = Number(new URL(server.url).port);
      // The one connection allowed sends nothing: it is cut at the headers timeout, with 408.
      const first = await connect(port);
      // The second, while the first is open, is over the cap.
      const second = await exchange(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
      assertProblem(second, 503, 'TOO_MANY_CONNECTIONS');
      assertProblem(await first.closed, 408, 'REQUEST_TIMEOUT');
    } finally {
      server.child.kill('SIGTERM');
      await server.exited;
    }
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

  it('loads operation types from a TypeScript --handlers file', async () => {
    const dir = tempDir('accepted-handlers-ts-');
    const file = path.join(dir, 'handlers.ts');
    fs.writeFileSync(
      file,
      [
        "import type { OperationDefinition } from '@accepted/server';",
        'interface Pair { a: number; b: number }',
        'const add: OperationDefinition<Pair, number> = {',
        "  type: 'math.add',",
        '  handler: ({ a, b }: Pair): number => a + b,',
        '};',
        'export default [add];',
        '',
      ].join('\n'),
    );
    const server = await startServer(dir, ['--handlers', file]);
    try {
      const answer = await fetch(`${server.url}/v1/operations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', prefer: 'wait=10' },
        body: JSON.stringify({ type: 'math.add', input: { a: 2, b: 40 } }),
      });
      const monitor = (await answer.json()) as { status: string; result: unknown };
      assert.equal(monitor.status, 'succeeded');
      assert.equal(monitor.result, 42);
    } finally {
      server.child.kill('SIGTERM');
      await server.exited;
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
