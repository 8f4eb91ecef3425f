// The composition root: one resolver for flags, environment and library options, with each
// default stated once, and createServer building, starting and stopping a whole server.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError } from '../src/domain/options.ts';
import { WEBHOOK_DEFAULTS } from '../src/domain/webhooks.ts';
import { ENGINE_DEFAULTS } from '../src/engine/accepted.ts';
import { DEFAULT_HTTP_LIMITS } from '../src/http/limits.ts';
import { NUMERIC_OPTIONS, resolveServerConfig } from '../src/server/config.ts';
import { createServer } from '../src/server/server.ts';
import { STREAM_DEFAULTS } from '../src/stream/hub.ts';
import { tempDir } from './helpers.ts';
import { pino } from 'pino';

describe('the server configuration', () => {
  it('takes each default from the component that owns it', () => {
    const config = resolveServerConfig();
    assert.equal(config.concurrency, ENGINE_DEFAULTS.concurrency);
    assert.equal(config.leaseMs, ENGINE_DEFAULTS.leaseMs);
    assert.equal(config.retentionMs, ENGINE_DEFAULTS.retentionMs);
    assert.equal(config.maxAttempts, ENGINE_DEFAULTS.maxAttempts);
    assert.equal(config.webhookTimeoutMs, WEBHOOK_DEFAULTS.timeoutMs);
    assert.equal(config.webhookConcurrency, WEBHOOK_DEFAULTS.concurrency);
    assert.equal(config.heartbeatMs, STREAM_DEFAULTS.heartbeatMs);
    assert.equal(config.bodyLimit, DEFAULT_HTTP_LIMITS.bodyLimit);
    assert.ok(Object.isFrozen(config));
  });

  it('reads every numeric setting from its flag, its variable or the library, in that order of weight', () => {
    for (const option of NUMERIC_OPTIONS) {
      // A value inside the bounds and unlike the default, written as the flag would take it.
      const value =
        option.key === 'requestTimeoutMs' || option.min === option.default
          ? option.max
          : option.min;
      const text = option.kind === 'duration' ? `${value}ms` : String(value);
      const byFlag = resolveServerConfig({ argv: [option.flag, text], env: {} });
      assert.equal(byFlag[option.key], value, `${option.flag} ${text}`);
      const byEnv = resolveServerConfig({ env: { [option.env]: text } });
      assert.equal(byEnv[option.key], value, `${option.env}=${text}`);
      const byLibrary = resolveServerConfig({
        argv: [option.flag, text],
        options: { [option.key]: option.default },
      });
      assert.equal(byLibrary[option.key], option.default, `${option.key} wins over the flag`);
    }
  });

  it('reaches the library options from accepted serve: --retention, --max-attempts, --api-only', () => {
    const config = resolveServerConfig({
      argv: [
        '--retention',
        '30d',
        '--max-attempts',
        '7',
        '--api-only',
        '--webhook-retention',
        '2d',
      ],
    });
    assert.equal(config.retentionMs, 30 * 86_400_000);
    assert.equal(config.maxAttempts, 7);
    assert.equal(config.worker, false);
    assert.equal(config.webhookRetentionMs, 2 * 86_400_000);
    assert.equal(resolveServerConfig({ env: { ACCEPTED_API_ONLY: '1' } }).worker, false);
  });

  it('names the option as it was given: the flag from the command line, the key from the library', () => {
    assert.throws(
      () => resolveServerConfig({ argv: ['--retention', 'forever'] }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.option === '--retention' &&
        /^--retention must be a duration from 1m to 3650d/.test(error.message),
    );
    assert.throws(
      () => resolveServerConfig({ options: { retentionMs: -5 } }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.option === 'retentionMs' &&
        /^retentionMs must be a duration/.test(error.message) &&
        !('status' in error),
    );
    assert.throws(
      () => createServer({ maxAttempts: 1000 }),
      (error: unknown) => error instanceof ConfigError && error.option === 'maxAttempts',
    );
  });
});

describe('createServer', () => {
  it('builds a whole server from library options, serves it, and stops in order', async () => {
    const dir = tempDir();
    const server = createServer({
      port: 0,
      dataDir: dir,
      demo: true,
      retentionMs: 3_600_000,
      logger: pino({ level: 'silent' }),
    });
    assert.equal(server.config.dataDir, path.resolve(dir));
    const url = await server.start();
    try {
      const answer = await fetch(`${url}/v1/operations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', prefer: 'wait=10' },
        body: JSON.stringify({ type: 'demo.echo', input: { hello: 'server' } }),
      });
      assert.equal(answer.status, 200);
      const monitor = (await answer.json()) as { status: string; result: unknown };
      assert.equal(monitor.status, 'succeeded');
      assert.deepEqual(monitor.result, { hello: 'server' });
    } finally {
      await server.stop();
    }
    // Stopped: the engine refuses work and the port is closed.
    await assert.rejects(fetch(`${url}/v1/operations`));
    await assert.rejects(server.accepted.submit('demo.echo', {}), /shutting down/i);
  });

  it('refuses submits from the moment stop() is called, before webhook delivery has stopped', async () => {
    const server = createServer({
      port: 0,
      dataDir: tempDir(),
      demo: true,
      logger: pino({ level: 'silent' }),
    });
    await server.start();
    const stopped = server.stop();
    await assert.rejects(server.accepted.submit('demo.echo', {}), /shutting down/i);
    await stopped;
  });
});
