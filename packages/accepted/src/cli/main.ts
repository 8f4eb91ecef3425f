#!/usr/bin/env node
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { AcceptedError } from '../domain/errors.ts';
import { createAccepted } from '../engine/accepted.ts';
import type { AnyOperationDefinition } from '../engine/definition.ts';
import { demoOperations } from '../engine/demo.ts';
import { TENANT_PATTERN, generateApiKey } from '../http/auth.ts';
import { createHttpServer } from '../http/server.ts';
import { createWebhooks } from '../webhooks/service.ts';
import { pino } from 'pino';
import { sqliteStore } from '../store/sqlite/sqlite-store.ts';
import { postgresStore } from '../store/postgres/postgres-store.ts';
import { isClientCommand, runClientCommand } from './client.ts';
import {
  SERVE_USAGE,
  UsageError,
  asUsage,
  resolveServeConfig,
  type ServeConfig,
} from './config.ts';

const USAGE = `Usage: accepted <command> [options]

Commands:
  serve     run the server (see 'accepted serve --help')
  keygen    print a new API key, and the line that configures it [--tenant NAME]
  submit    submit an operation: TYPE [JSON] [--wait] [--via sse|ws|longpoll|poll]
  watch     follow an operation with a live progress bar, then print its outcome: ID
  ls        list operations [--status S] [--type T] [--label K=V] [--limit N]
  get       print an operation's status monitor: ID
  cancel    cancel an operation: ID
  retry     run a failed or canceled operation again: ID
            (client commands: --url/ACCEPTED_URL, --api-key/ACCEPTED_API_KEY, --json;
            see 'accepted submit --help')
`;

type Definitions = AnyOperationDefinition[];

async function loadHandlers(file: string): Promise<Definitions> {
  const mod = (await import(pathToFileURL(file).href)) as {
    default?: unknown;
    operations?: unknown;
  };
  const found = mod.operations ?? mod.default;
  if (!Array.isArray(found)) {
    throw new UsageError(
      `${file} must export its operation definitions as an array (export default [...] or export const operations = [...])`,
    );
  }
  return found as Definitions;
}

async function serve(config: ServeConfig): Promise<void> {
  const operations: Definitions = [];
  if (config.demo) operations.push(...demoOperations);
  if (config.handlers) operations.push(...(await loadHandlers(config.handlers)));
  const logger = pino({ level: config.logLevel });
  const store = config.store
    ? postgresStore({
        url: config.store,
        schema: config.schema,
        // The store carries on by itself; operators see why requests get 503 meanwhile.
        onError: (error, what) => logger.warn({ err: error }, `PostgreSQL: ${what}`),
      })
    : sqliteStore({
        filename: path.join(config.dataDir, 'accepted.db'),
        durability: config.durability,
      });
  const accepted = createAccepted({
    store,
    operations,
    leaseMs: config.leaseMs,
    leaseRecoveryIntervalMs: Math.min(5000, config.leaseMs),
    concurrency: config.concurrency,
    shutdownGraceMs: config.shutdownGraceMs,
    // The input is part of the body: one limit for both.
    maxInputBytes: config.bodyLimit,
    logger,
  });
  await accepted.start();
  const webhooks = createWebhooks({
    accepted,
    allow: config.webhookAllow,
    retrySchedule: config.webhookRetries ?? undefined,
    timeoutMs: config.webhookTimeoutMs,
    disableAfterMs: config.webhookDisableAfterMs,
    logger,
  });
  webhooks.start();
  const app = createHttpServer({
    accepted,
    webhooks,
    logger,
    apiKeys: config.apiKeys ?? undefined,
    maxWaitSeconds: config.maxWaitSeconds,
    publicUrl: config.publicUrl ?? undefined,
    bodyLimit: config.bodyLimit,
    maxHeaderSize: config.maxHeaderSize,
    headersTimeoutMs: config.headersTimeoutMs,
    requestTimeoutMs: config.requestTimeoutMs,
    keepAliveTimeoutMs: config.keepAliveTimeoutMs,
    maxConnections: config.maxConnections,
    maxConnectionsPerIp: config.maxConnectionsPerIp,
    streams: {
      heartbeatMs: config.heartbeatMs,
      tokenSecret: config.streamSecret ?? undefined,
    },
  });
  const url = await app.listen({ port: config.port, host: config.host });
  if (!config.apiKeys) {
    logger.warn(
      { host: config.host, insecure: config.insecure },
      config.insecure
        ? 'INSECURE: no API keys and a non-loopback address; anyone who reaches it may call it'
        : 'local development mode: no API keys, loopback only, every request is tenant "default"',
    );
  }
  logger.info(
    {
      url,
      store: store.kind,
      ...(config.store ? { schema: config.schema } : { data: config.dataDir }),
      auth: config.apiKeys ? `${config.apiKeys.size} API keys` : 'none',
      operationTypes: [...accepted.definitions.keys()],
    },
    'accepted ready',
  );
  let stopping = false;
  // Drain order: the engine first (submits get 503 SHUTTING_DOWN, polls keep working while
  // handlers finish), then the HTTP server.
  const drain = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal, graceMs: config.shutdownGraceMs }, 'draining');
    void (async () => {
      try {
        // Webhook attempts in flight finish and are recorded before the store closes.
        await webhooks.stop(config.shutdownGraceMs);
        await accepted.stop({ graceful: true, timeoutMs: config.shutdownGraceMs });
        // Streams end at once; a connection that never sent a request would hold the close
        // until its header timeout, so whatever is left after 2 s is cut.
        const cut = setTimeout(() => app.server.closeAllConnections(), 2000);
        await app.close();
        clearTimeout(cut);
        logger.info('stopped');
        process.exit(0);
      } catch (error) {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      }
    })();
  };
  process.on('SIGTERM', drain);
  process.on('SIGINT', drain);
}

function keygen(argv: readonly string[]): void {
  const { values } = asUsage(() =>
    parseArgs({ args: [...argv], strict: true, options: { tenant: { type: 'string' } } }),
  );
  const tenant = values.tenant ?? 'default';
  if (!TENANT_PATTERN.test(tenant)) {
    throw new UsageError('--tenant must be 1 to 64 letters, digits, dots, dashes or underscores');
  }
  const { key, sha256 } = generateApiKey();
  process.stdout.write(
    `API key (give it to the client; it is not stored anywhere):\n  ${key}\n\n` +
      `Entry for the --api-keys file (holds only the digest):\n  ${JSON.stringify({ tenant, sha256 })}\n\n` +
      `Or in the environment:\n  ACCEPTED_API_KEYS=${tenant}:${key}\n`,
  );
}

export async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h') {
    process.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  try {
    if (command === 'serve') {
      if (rest.includes('--help') || rest.includes('-h')) {
        process.stdout.write(SERVE_USAGE);
        return 0;
      }
      await serve(resolveServeConfig(rest));
      return 0;
    }
    if (command === 'keygen') {
      keygen(rest);
      return 0;
    }
    if (isClientCommand(command)) return await runClientCommand(command, rest);
    throw new UsageError(`unknown command "${command}"`);
  } catch (error) {
    if (error instanceof AcceptedError) {
      process.stderr.write(`accepted: ${error.message}\n${error.fix ? `${error.fix}\n` : ''}`);
      return 1;
    }
    if (error instanceof UsageError) {
      process.stderr.write(
        `accepted: ${error.message}\n\n${command === 'serve' ? SERVE_USAGE : USAGE}`,
      );
      return 2;
    }
    throw error;
  }
}

// Run when executed directly (also through the npm bin symlink, hence realpath).
const invoked = process.argv[1] ? pathToFileURL(fs.realpathSync(process.argv[1])).href : '';
if (import.meta.url === invoked) {
  main(process.argv.slice(2)).then(
    (code) => {
      if (code !== 0) process.exit(code);
    },
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
}
