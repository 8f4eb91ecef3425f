// The client commands of the `accepted` binary: submit, watch, ls, get, cancel, retry. They
// talk to a server over HTTP with @accepted/client, like any other client.
import { parseArgs } from 'node:util';
import {
  AcceptedClientError,
  createClient,
  type Client,
  type Operation,
  type OperationHandle,
  type Via,
} from '@accepted/client';
import { WebSocket } from 'ws';
import { parseDuration } from '../domain/options.ts';
import { UsageError, asUsage } from './config.ts';

/** Exit statuses: the operation's outcome, or what went wrong. */
export const EXIT = { succeeded: 0, failed: 1, usage: 2, canceled: 3 } as const;

export const CLIENT_COMMANDS = ['submit', 'watch', 'ls', 'get', 'cancel', 'retry'] as const;
type ClientCommand = (typeof CLIENT_COMMANDS)[number];

export const CLIENT_USAGE = `Usage:
  accepted submit TYPE [JSON] [--wait] [--via sse|ws|longpoll|poll] [--label KEY=VALUE]...
  accepted watch ID           follow an operation: a live progress bar, then its outcome
  accepted ls [--status S]... [--type TYPE] [--label KEY=VALUE]... [--limit N] [--cursor C]
  accepted get ID
  accepted cancel ID
  accepted retry ID

Options of every command:
  --url URL           the server (env ACCEPTED_URL, default http://127.0.0.1:8080)
  --api-key KEY       the API key (env ACCEPTED_API_KEY)
  --json              print JSON: the status monitor, or for ls one page
  --timeout DURATION  give up waiting after this long (submit --wait, watch): 30s, 5m

Exit status: 0 succeeded (or done), 1 failed (or a request failed), 2 usage error,
3 canceled. submit --wait, watch and get of a finished operation report its outcome.
`;

const VIAS: readonly Via[] = ['sse', 'ws', 'longpoll', 'poll'];
const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'canceled'] as const;
const BAR_WIDTH = 30;

export function isClientCommand(command: string): command is ClientCommand {
  return (CLIENT_COMMANDS as readonly string[]).includes(command);
}

/** Where output goes; a test or another program may pass its own. */
export interface Io {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

const OPTIONS = {
  url: { type: 'string' },
  'api-key': { type: 'string' },
  json: { type: 'boolean', default: false },
  timeout: { type: 'string' },
  wait: { type: 'boolean', default: false },
  via: { type: 'string' },
  label: { type: 'string', multiple: true },
  status: { type: 'string', multiple: true },
  type: { type: 'string' },
  limit: { type: 'string' },
  cursor: { type: 'string' },
} as const;

/** `30s`, `5m`, `500ms`, or a plain number of seconds. */
function duration(value: string): number {
  const ms = parseDuration(value, 's');
  if (ms === null)
    throw new UsageError(`--timeout must be a duration such as 30s or 5m (got "${value}")`);
  return ms;
}

function labels(pairs: readonly string[] | undefined): Record<string, string> | undefined {
  if (!pairs) return undefined;
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--label must be KEY=VALUE (got "${pair}")`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

function exitFor(operation: Operation): number {
  if (operation.status === 'failed') return EXIT.failed;
  if (operation.status === 'canceled') return EXIT.canceled;
  return EXIT.succeeded;
}

function one(positionals: readonly string[], what: string): string {
  const [value, ...extra] = positionals;
  if (value === undefined) throw new UsageError(`missing ${what}`);
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
  return value;
}

/** One line about an operation, for people. */
function summary(operation: Operation): string {
  const progress = operation.progress;
  const parts = [operation.id, operation.type, operation.status];
  if (progress?.fraction !== undefined) parts.push(`${Math.round(progress.fraction * 100)}%`);
  if (progress?.message) parts.push(progress.message);
  return parts.join('  ');
}

/** The outcome, for people: the result, or the error. */
function outcome(operation: Operation): string {
  const elapsed =
    operation.finishedAt && operation.startedAt
      ? ` in ${((Date.parse(operation.finishedAt) - Date.parse(operation.startedAt)) / 1000).toFixed(1)}s`
      : '';
  const head = `${operation.id} ${operation.status}${elapsed} (attempt ${operation.attempts} of ${operation.maxAttempts})`;
  if (operation.status === 'succeeded') {
    return `${head}\n${JSON.stringify(operation.result, null, 2)}\n`;
  }
  const error = operation.error ? `\n${operation.error.code}: ${operation.error.message}` : '';
  return `${head}${error}\n`;
}

function bar(fraction: number | undefined): string {
  const done = Math.round((fraction ?? 0) * BAR_WIDTH);
  const percent = fraction === undefined ? '  ?' : String(Math.round(fraction * 100)).padStart(3);
  return `[${'#'.repeat(done)}${'.'.repeat(BAR_WIDTH - done)}] ${percent}%`;
}

/**
 * Follows an operation's events: a bar redrawn in place on a terminal, a line per change
 * otherwise (nothing with --json); then reads the final monitor.
 */
async function watch(
  handle: OperationHandle,
  io: Io,
  json: boolean,
  signal: AbortSignal | undefined,
): Promise<Operation> {
  const tty = io.stdout.isTTY === true && !json;
  let status = '';
  let fraction: number | undefined;
  let message = '';
  let last = '';
  const draw = () => {
    const line = `${bar(fraction)}  ${status.padEnd(9)} ${message}`;
    if (line === last || json) return;
    last = line;
    if (tty) io.stdout.write(`\r\x1b[2K${line}`);
    else io.stdout.write(`${line.trimEnd()}\n`);
  };
  for await (const event of handle.events({ signal })) {
    if ('operation' in event) {
      status = event.operation.status;
      fraction = event.operation.progress?.fraction;
      message = event.operation.progress?.message ?? '';
    } else {
      status = event.data.status ?? status;
      if (event.data.progress) {
        fraction = event.data.progress.fraction;
        message = event.data.progress.message ?? '';
      }
      if (event.type === 'operation.succeeded') fraction = 1;
    }
    draw();
  }
  if (tty) io.stdout.write('\n');
  return handle.get({ signal });
}

async function run(command: ClientCommand, argv: readonly string[], io: Io): Promise<number> {
  const { values, positionals } = asUsage(() =>
    parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true }),
  );
  const url = values.url ?? io.env.ACCEPTED_URL ?? 'http://127.0.0.1:8080';
  if (!/^https?:\/\//.test(url))
    throw new UsageError(`--url must be an http(s) URL (got "${url}")`);
  const client: Client = createClient({
    baseUrl: url,
    apiKey: values['api-key'] ?? (io.env.ACCEPTED_API_KEY || undefined),
    WebSocket,
  });
  const signal =
    values.timeout === undefined ? undefined : AbortSignal.timeout(duration(values.timeout));
  const print = (operation: Operation, human: string) =>
    io.stdout.write(values.json ? `${JSON.stringify(operation)}\n` : human);

  switch (command) {
    case 'submit': {
      const [type, raw, ...extra] = positionals;
      if (type === undefined) throw new UsageError('missing the operation TYPE');
      if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
      const via = values.via;
      if (via !== undefined && !(VIAS as readonly string[]).includes(via)) {
        throw new UsageError(`--via must be one of ${VIAS.join(', ')} (got "${via}")`);
      }
      let input: unknown = null;
      if (raw !== undefined) {
        try {
          input = JSON.parse(raw);
        } catch {
          throw new UsageError(`the input is not valid JSON: ${raw}`);
        }
      }
      const handle = await client.submit(type, input, { labels: labels(values.label), signal });
      if (!values.wait) {
        if (values.json) io.stdout.write(`${JSON.stringify(handle.operation)}\n`);
        else io.stdout.write(`${handle.id}\n`);
        return EXIT.succeeded;
      }
      const final = await handle.wait({ via: via as Via | undefined, signal });
      print(final, outcome(final));
      return exitFor(final);
    }
    case 'watch': {
      const final = await watch(
        client.operation(one(positionals, 'the operation ID')),
        io,
        values.json,
        signal,
      );
      print(final, outcome(final));
      return exitFor(final);
    }
    case 'get': {
      const operation = await client.get(one(positionals, 'the operation ID'), { signal });
      print(operation, `${JSON.stringify(operation, null, 2)}\n`);
      return exitFor(operation);
    }
    case 'cancel': {
      const operation = await client.cancel(one(positionals, 'the operation ID'), { signal });
      print(
        operation,
        `${summary(operation)}${operation.cancelRequested ? '  (cancel requested)' : ''}\n`,
      );
      return EXIT.succeeded;
    }
    case 'retry': {
      const operation = await client.retry(one(positionals, 'the operation ID'), { signal });
      print(operation, `${summary(operation)}\n`);
      return EXIT.succeeded;
    }
    case 'ls': {
      if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
      const statuses = (values.status ?? []).flatMap((s) => s.split(','));
      for (const status of statuses) {
        if (!(STATUSES as readonly string[]).includes(status)) {
          throw new UsageError(`--status must be one of ${STATUSES.join(', ')} (got "${status}")`);
        }
      }
      const limit = values.limit === undefined ? undefined : Number(values.limit);
      if (limit !== undefined && !(Number.isSafeInteger(limit) && limit >= 1 && limit <= 500)) {
        throw new UsageError(
          `--limit must be a whole number from 1 to 500 (got "${values.limit}")`,
        );
      }
      const pages = client.list({
        status: statuses as (typeof STATUSES)[number][],
        type: values.type,
        labels: labels(values.label),
        limit,
        cursor: values.cursor,
        signal,
      });
      const page = (await pages.next()).value ?? { items: [], nextCursor: null };
      await pages.return();
      if (values.json) {
        io.stdout.write(`${JSON.stringify(page)}\n`);
      } else {
        for (const operation of page.items) io.stdout.write(`${summary(operation)}\n`);
        if (page.nextCursor) io.stdout.write(`more: --cursor ${page.nextCursor}\n`);
      }
      return EXIT.succeeded;
    }
  }
}

/** Runs one client command; returns the exit status. */
export async function runClientCommand(
  command: ClientCommand,
  argv: readonly string[],
  io: Io = { stdout: process.stdout, stderr: process.stderr, env: process.env },
): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(CLIENT_USAGE);
    return EXIT.succeeded;
  }
  try {
    return await run(command, argv, io);
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr.write(`accepted ${command}: ${error.message}\n\n${CLIENT_USAGE}`);
      return EXIT.usage;
    }
    if (
      error instanceof AcceptedClientError &&
      (error.code === 'ABORTED' || error.code === 'CLIENT_TIMEOUT')
    ) {
      io.stderr.write(`accepted ${command}: gave up waiting (--timeout)\n`);
      return EXIT.failed;
    }
    if (error instanceof AcceptedClientError) {
      const fix = (error as { problem?: { fix?: string } }).problem?.fix;
      io.stderr.write(
        `accepted ${command}: ${error.code}: ${error.message}\n${fix ? `${fix}\n` : ''}`,
      );
      return EXIT.failed;
    }
    throw error;
  }
}
