#!/usr/bin/env node
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { AcceptedError } from '../domain/errors.ts';
import { isConfigError } from '../domain/options.ts';
import type { AnyOperationDefinition } from '../engine/definition.ts';
import { TENANT_PATTERN, generateApiKey } from '../http/auth.ts';
import { createServer } from '../server/server.ts';
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

const TYPESCRIPT = /\.(c|m)?ts$/;

/**
 * Imports a handlers module. A TypeScript file runs where Node.js can run it: Node.js 22.18+
 * strips types itself; before that, tsx (from the application's own dependencies, or this
 * process's loader) compiles it; without either, the error says what to do.
 */
async function importHandlers(file: string): Promise<unknown> {
  const url = pathToFileURL(file).href;
  const nodeStripsTypes = Boolean((process.features as { typescript?: unknown }).typescript);
  const underTsx = process.execArgv.some((arg) => arg.includes('tsx'));
  if (!TYPESCRIPT.test(file) || nodeStripsTypes || underTsx) return import(url);
  type TsxApi = { tsImport(specifier: string, parent: string): Promise<unknown> };
  let tsx = null as TsxApi | null;
  for (const from of [path.join(process.cwd(), 'noop.js'), import.meta.url]) {
    try {
      const resolved = createRequire(from).resolve('tsx/esm/api');
      tsx = (await import(pathToFileURL(resolved).href)) as TsxApi;
      break;
    } catch {
      // not installed there
    }
  }
  if (!tsx) {
    throw new UsageError(
      `--handlers ${file} is TypeScript, which Node.js ${process.versions.node} cannot run by itself: use Node.js 22.18 or later, or install tsx in your project (npm install --save-dev tsx), or compile the file to .js`,
    );
  }
  return tsx.tsImport(url, import.meta.url);
}

async function loadHandlers(file: string): Promise<Definitions> {
  if (!fs.existsSync(file)) throw new UsageError(`--handlers ${file}: no such file`);
  const mod = (await importHandlers(file)) as { default?: unknown; operations?: unknown };
  const found = mod.operations ?? mod.default;
  if (!Array.isArray(found)) {
    throw new UsageError(
      `${file} must export its operation definitions as an array (export default [...] or export const operations = [...])`,
    );
  }
  return found as Definitions;
}

async function serve(config: ServeConfig): Promise<void> {
  const operations: Definitions = config.handlers ? await loadHandlers(config.handlers) : [];
  const server = createServer({ operations }, config);
  const { logger, accepted } = server;
  const url = await server.start();
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
      store: accepted.store.kind,
      ...(config.store ? { schema: config.schema } : { data: config.dataDir }),
      auth: config.apiKeys ? `${config.apiKeys.size} API keys` : 'none',
      operationTypes: [...accepted.definitions.keys()],
      ...(config.worker ? {} : { worker: false }),
    },
    'accepted ready',
  );
  let stopping = false;
  // Drain order (createServer's stop): submits get 503 SHUTTING_DOWN at once, webhook
  // attempts in flight are recorded, handlers finish within the grace, then HTTP closes.
  const drain = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal, graceMs: config.shutdownGraceMs }, 'draining');
    server.stop({ graceful: true }).then(
      () => {
        logger.info('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
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
    if (error instanceof AcceptedError || isConfigError(error)) {
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
