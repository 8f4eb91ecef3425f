import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import path from 'node:path';
import { isAcceptedError } from '../domain/errors.ts';
import { checkWebhookOptions, parseDurations, WEBHOOK_LIMITS } from '../domain/webhooks.ts';
import { ApiKeys } from '../http/auth.ts';
import { DEFAULT_HTTP_LIMITS, HTTP_LIMIT_RANGES, type HttpLimits } from '../http/limits.ts';
import { AddressPolicy } from '../webhooks/ssrf.ts';
import { MIN_STREAM_SECRET_LENGTH } from '../stream/tokens.ts';

/** `accepted serve` settings: flags first, then environment, then defaults. Frozen. */
export interface ServeConfig extends HttpLimits {
  port: number;
  host: string;
  /** Folder holding the embedded database (`accepted.db`). */
  dataDir: string;
  /**
   * A PostgreSQL URL (`postgres://...`): run on PostgreSQL, shared by every node pointed at
   * it, instead of the embedded store in `dataDir`. Null for the embedded store.
   */
  store: string | null;
  /** The PostgreSQL schema holding Accepted's tables. Default `accepted`. */
  schema: string;
  /** Lease of a running operation, in ms: a node that dies loses its operations after this. */
  leaseMs: number;
  demo: boolean;
  handlers: string | null;
  concurrency: number;
  /** How long running handlers may finish after SIGTERM/SIGINT, in ms. */
  shutdownGraceMs: number;
  logLevel: string;
  /** Flush every commit to disk (`full`, default) or only to the OS (`normal`). */
  durability: 'full' | 'normal';
  /** API keys mapped to tenants; null in local development mode (no keys). */
  apiKeys: ApiKeys | null;
  /** Serve a non-loopback address without API keys (refused unless set). */
  insecure: boolean;
  /** Longest long poll / `Prefer: wait`, in seconds. */
  maxWaitSeconds: number;
  /** The public base URL for `Operation-Location`, or null to use the request's Host. */
  publicUrl: string | null;
  /** Delays between webhook attempts (ms), or null for the Standard Webhooks schedule. */
  webhookRetries: number[] | null;
  /** CIDRs webhooks may reach although the SSRF block list forbids them. */
  webhookAllow: string[];
  /** Time limit of one webhook attempt. */
  webhookTimeoutMs: number;
  /** An endpoint failing without a success for this long is disabled. */
  webhookDisableAfterMs: number;
  /** Heartbeat of event streams (comment) and WebSockets (ping), in ms. */
  heartbeatMs: number;
  /** Secret that signs stream tokens, or null for a random one per process. */
  streamSecret: string | null;
}

/** Loopback addresses: what a server without API keys may bind. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || host === '[::1]';
}

export const SERVE_USAGE = `Usage: accepted serve [options]

  --port N            port to listen on (env ACCEPTED_PORT, default 8080; 0 = any free port)
  --host ADDR         address to bind (env ACCEPTED_HOST, default 127.0.0.1)
  --data DIR          data folder for the embedded store (env ACCEPTED_DATA, default ./.data)
  --store URL         run on PostgreSQL (postgres://user:pass@host:5432/db) instead of the
                      embedded store; every node given the same URL and schema shares the
                      work (env ACCEPTED_STORE, or DATABASE_URL)
  --schema NAME       PostgreSQL schema for Accepted's tables, created if missing (env
                      ACCEPTED_SCHEMA, default accepted)
  --lease DURATION    lease of a running operation: a node that stops renewing it (it died)
                      loses the operation to another after this; 500ms, 30s or 1m (env
                      ACCEPTED_LEASE, default 30s)
  --demo              register the demo operation types (demo.echo, demo.sleep, ...)
  --handlers FILE     a module exporting operation definitions (default export or 'operations')
  --concurrency N     handlers run at once (env ACCEPTED_CONCURRENCY, default 32)
  --grace MS          shutdown grace for running handlers (env ACCEPTED_GRACE_MS, default 10000)
  --durability MODE   full (default) or normal (env ACCEPTED_DURABILITY)
  --log-level LEVEL   trace|debug|info|warn|error|silent (env ACCEPTED_LOG_LEVEL, default info)
  --api-keys FILE     API keys mapped to tenants, JSON (env ACCEPTED_API_KEYS_FILE); keys may
                      also come as tenant:key pairs in ACCEPTED_API_KEYS. Without keys the
                      server runs in local development mode: loopback only, one tenant.
  --insecure          allow a non-loopback --host without API keys (anyone may call it)
  --max-wait S        longest long poll or Prefer: wait, in seconds (env ACCEPTED_MAX_WAIT,
                      default 60)
  --public-url URL    this API's URL as clients see it, for Operation-Location (env
                      ACCEPTED_PUBLIC_URL; default: from the request's Host)
  --webhook-retries L delays between webhook attempts, such as 5s,5m,30m,2h (env
                      ACCEPTED_WEBHOOK_RETRIES; default 5s,5m,30m,2h,5h,10h,14h,20h,24h)
  --webhook-allow CIDR  a range webhooks may reach although it is private or loopback, for
                      development (repeatable; env ACCEPTED_WEBHOOK_ALLOW, comma-separated)
  --webhook-timeout D time limit of one webhook attempt (env ACCEPTED_WEBHOOK_TIMEOUT,
                      default 15s)
  --webhook-disable-after D  disable an endpoint that has failed every attempt for this
                      long (env ACCEPTED_WEBHOOK_DISABLE_AFTER, default 5d)
  --heartbeat DURATION
                      keepalive interval of event streams and WebSockets: 500ms, 15s or 1m;
                      a plain number is seconds (env ACCEPTED_HEARTBEAT, default 15s)
  --stream-secret SECRET
                      signs stream tokens, at least 32 characters; the same on every node
                      that must accept the same tokens (env ACCEPTED_STREAM_SECRET; default:
                      random at each start)

  Limits (docs/limits.md):
  --body-limit SIZE   largest request body and operation input: bytes, or 512kb, 4mb (env
                      ACCEPTED_BODY_LIMIT, default 1mb)
  --max-header-size SIZE
                      largest request line and headers (env ACCEPTED_MAX_HEADER_SIZE,
                      default 16kb)
  --headers-timeout DURATION
                      time for a request's headers to arrive (env ACCEPTED_HEADERS_TIMEOUT,
                      default 10s)
  --request-timeout DURATION
                      time for a whole request, body included, to arrive; not the answer's
                      time, so long polls and streams are not cut (env
                      ACCEPTED_REQUEST_TIMEOUT, default 30s)
  --keep-alive-timeout DURATION
                      idle time of a keep-alive connection between requests (env
                      ACCEPTED_KEEP_ALIVE_TIMEOUT, default 72s)
  --max-connections N connections open at once, 0 for no limit (env
                      ACCEPTED_MAX_CONNECTIONS, default 10000)
  --max-connections-per-ip N
                      connections open at once from one IPv4 address or IPv6 /64, 0 for no
                      limit; behind a proxy every client has the proxy's address (env
                      ACCEPTED_MAX_CONNECTIONS_PER_IP, default 1000)
`;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

function int(name: string, value: string | undefined, fallback: number, min: number, max: number) {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${name} must be a whole number from ${min} to ${max} (got "${value}")`);
  }
  return n;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000 };

/**
 * A duration in whole milliseconds: a number with a unit (`500ms`, `15s`, `1.5m`), or a
 * plain number of seconds.
 */
function duration(
  name: string,
  value: string | undefined,
  fallbackMs: number,
  minMs: number,
  maxMs: number,
): number {
  if (value === undefined || value === '') return fallbackMs;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
  const ms = match ? Number(match[1]) * (DURATION_UNITS[match[2] ?? 's'] ?? 1000) : NaN;
  if (!Number.isSafeInteger(ms) || ms < minMs || ms > maxMs) {
    throw new UsageError(
      `${name} must be a duration from ${minMs}ms to ${maxMs / 60_000}m, such as 500ms, 15s or 1m (got "${value}")`,
    );
  }
  return ms;
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 * 1024,
  mb: 1024 * 1024,
  mib: 1024 * 1024,
};

/** A size in bytes: a whole number, or with a unit (`512kb`, `4mb`; 1 kb = 1024 bytes). */
function size(name: string, value: string | undefined, fallback: number, min: number, max: number) {
  if (value === undefined || value === '') return fallback;
  const match = /^(\d+)\s*([a-z]*)$/i.exec(value.trim());
  const unit = SIZE_UNITS[(match?.[2] ?? '').toLowerCase()];
  const n = match && unit !== undefined ? Number(match[1]) * unit : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(
      `${name} must be a size from ${min} to ${max} bytes, such as 65536, 512kb or 4mb (got "${value}")`,
    );
  }
  return n;
}

/** `--webhook-disable-after`: a duration with a unit (`5d` for days too), default 5 days. */
function webhookDisableAfter(value: string | undefined): number {
  if (value === undefined || value === '') return 5 * 24 * 3_600_000;
  const days = /^(\d+(?:\.\d+)?)d$/.exec(value.trim());
  if (days) return Math.round(Number(days[1]) * 24 * 3_600_000);
  try {
    const [ms] = parseDurations(value);
    if (ms !== undefined && ms > 0) return ms;
  } catch {
    // reported below
  }
  throw new UsageError(
    `--webhook-disable-after must be a duration such as 12h or 5d (got "${value}")`,
  );
}

/** The flag of each webhook option, for the usage error that names it. */
const WEBHOOK_FLAGS: Record<string, string> = {
  '/retrySchedule': '--webhook-retries',
  '/timeoutMs': '--webhook-timeout',
  '/disableAfterMs': '--webhook-disable-after',
};

/**
 * The webhook flags against the bounds the webhook sender enforces (`WEBHOOK_LIMITS`, one
 * rule): a value past them is a usage error naming the flag, not a failure at start.
 */
function checkWebhookFlags(values: Parameters<typeof checkWebhookOptions>[0]): void {
  try {
    checkWebhookOptions(values);
  } catch (error) {
    if (!isAcceptedError(error)) throw error;
    const problems = (error.fields ?? []).map((problem) => {
      const [, option = problem.field, entry] =
        /^(\/[A-Za-z]+)(?:\/(\d+))?$/.exec(problem.field) ?? [];
      const flag = WEBHOOK_FLAGS[option] ?? option;
      const which = entry === undefined ? flag : `${flag} (delay ${Number(entry) + 1})`;
      return `${which} ${problem.message}`;
    });
    throw new UsageError(problems.length > 0 ? problems.join('; ') : error.message);
  }
}

/** Runs a command-line parse, reporting a bad command line as a UsageError (exit 2). */
export function asUsage<R>(parse: () => R): R {
  try {
    return parse();
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

export function resolveServeConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): ServeConfig {
  const parsed = asUsage(() =>
    parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        port: { type: 'string' },
        host: { type: 'string' },
        data: { type: 'string' },
        store: { type: 'string' },
        schema: { type: 'string' },
        lease: { type: 'string' },
        demo: { type: 'boolean' },
        handlers: { type: 'string' },
        concurrency: { type: 'string' },
        grace: { type: 'string' },
        durability: { type: 'string' },
        'log-level': { type: 'string' },
        'api-keys': { type: 'string' },
        insecure: { type: 'boolean' },
        'max-wait': { type: 'string' },
        'public-url': { type: 'string' },
        heartbeat: { type: 'string' },
        'stream-secret': { type: 'string' },
        'webhook-retries': { type: 'string' },
        'webhook-allow': { type: 'string', multiple: true },
        'webhook-timeout': { type: 'string' },
        'webhook-disable-after': { type: 'string' },
        'body-limit': { type: 'string' },
        'max-header-size': { type: 'string' },
        'headers-timeout': { type: 'string' },
        'request-timeout': { type: 'string' },
        'keep-alive-timeout': { type: 'string' },
        'max-connections': { type: 'string' },
        'max-connections-per-ip': { type: 'string' },
      },
    }),
  );
  const v = parsed.values;
  const durability = v.durability ?? env.ACCEPTED_DURABILITY ?? 'full';
  if (durability !== 'full' && durability !== 'normal') {
    throw new UsageError(`--durability must be full or normal (got "${durability}")`);
  }
  const storeUrl = v.store ?? env.ACCEPTED_STORE ?? env.DATABASE_URL ?? '';
  if (storeUrl !== '' && !/^postgres(ql)?:\/\//.test(storeUrl)) {
    throw new UsageError(
      `--store must be a PostgreSQL URL such as postgres://user:password@host:5432/db (got "${storeUrl.replace(/\/\/[^@/]*@/, '//***@')}")`,
    );
  }
  const schema = v.schema ?? env.ACCEPTED_SCHEMA ?? 'accepted';
  if (!/^[a-z_][a-z0-9_]{0,47}$/.test(schema)) {
    throw new UsageError(
      `--schema must be lowercase letters, digits and _ (at most 48), starting with a letter or _ (got "${schema}")`,
    );
  }
  const logLevel = v['log-level'] ?? env.ACCEPTED_LOG_LEVEL ?? 'info';
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(logLevel)) {
    throw new UsageError(`--log-level must be one of trace, debug, info, warn, error, silent`);
  }
  const keyFile = v['api-keys'] ?? env.ACCEPTED_API_KEYS_FILE;
  const keyList = env.ACCEPTED_API_KEYS;
  let apiKeys: ApiKeys | null = null;
  if ((keyFile !== undefined && keyFile !== '') || (keyList !== undefined && keyList !== '')) {
    apiKeys = new ApiKeys();
    if (keyFile) apiKeys.addFromFile(path.resolve(keyFile));
    if (keyList) apiKeys.addFromList(keyList);
  }
  const host = v.host ?? env.ACCEPTED_HOST ?? '127.0.0.1';
  const insecure = v.insecure ?? false;
  if (!apiKeys && !isLoopback(host) && !insecure) {
    throw new UsageError(
      `refusing to serve ${host} without API keys: anyone who reaches it could submit and read operations. Configure keys (--api-keys FILE or ACCEPTED_API_KEYS), bind 127.0.0.1, or pass --insecure`,
    );
  }
  const publicUrl = v['public-url'] ?? env.ACCEPTED_PUBLIC_URL ?? null;
  if (publicUrl !== null && !/^https?:\/\/[^/]+/.test(publicUrl)) {
    throw new UsageError(`--public-url must be an http(s) URL (got "${publicUrl}")`);
  }
  const secret = v['stream-secret'] ?? env.ACCEPTED_STREAM_SECRET;
  const streamSecret = secret === undefined || secret === '' ? null : secret;
  if (streamSecret !== null && streamSecret.length < MIN_STREAM_SECRET_LENGTH) {
    throw new UsageError(
      `--stream-secret must have at least ${MIN_STREAM_SECRET_LENGTH} characters (got ${streamSecret.length}); make one with \`openssl rand -hex 32\``,
    );
  }
  const retries = v['webhook-retries'] ?? env.ACCEPTED_WEBHOOK_RETRIES;
  let webhookRetries: number[] | null = null;
  if (retries !== undefined && retries !== '') {
    try {
      webhookRetries = parseDurations(retries);
    } catch (error) {
      throw new UsageError(
        `--webhook-retries must be delays like 5s,5m,30m,2h (units ms, s, m, h): ${(error as Error).message}`,
      );
    }
  }
  const webhookAllow = [
    ...(v['webhook-allow'] ?? []),
    ...(env.ACCEPTED_WEBHOOK_ALLOW ?? '').split(','),
  ]
    .map((cidr) => cidr.trim())
    .filter((cidr) => cidr !== '');
  try {
    new AddressPolicy(webhookAllow);
  } catch (error) {
    throw new UsageError(`--webhook-allow: ${(error as Error).message}`);
  }
  const range = (name: keyof HttpLimits) => HTTP_LIMIT_RANGES[name];
  const durationLimit = (flag: string, value: string | undefined, name: keyof HttpLimits) =>
    duration(flag, value, DEFAULT_HTTP_LIMITS[name], ...range(name));
  const intLimit = (flag: string, value: string | undefined, name: keyof HttpLimits) =>
    int(flag, value, DEFAULT_HTTP_LIMITS[name], ...range(name));
  const limits: HttpLimits = {
    bodyLimit: size(
      '--body-limit',
      v['body-limit'] ?? env.ACCEPTED_BODY_LIMIT,
      DEFAULT_HTTP_LIMITS.bodyLimit,
      ...range('bodyLimit'),
    ),
    maxHeaderSize: size(
      '--max-header-size',
      v['max-header-size'] ?? env.ACCEPTED_MAX_HEADER_SIZE,
      DEFAULT_HTTP_LIMITS.maxHeaderSize,
      ...range('maxHeaderSize'),
    ),
    headersTimeoutMs: durationLimit(
      '--headers-timeout',
      v['headers-timeout'] ?? env.ACCEPTED_HEADERS_TIMEOUT,
      'headersTimeoutMs',
    ),
    requestTimeoutMs: durationLimit(
      '--request-timeout',
      v['request-timeout'] ?? env.ACCEPTED_REQUEST_TIMEOUT,
      'requestTimeoutMs',
    ),
    keepAliveTimeoutMs: durationLimit(
      '--keep-alive-timeout',
      v['keep-alive-timeout'] ?? env.ACCEPTED_KEEP_ALIVE_TIMEOUT,
      'keepAliveTimeoutMs',
    ),
    maxConnections: intLimit(
      '--max-connections',
      v['max-connections'] ?? env.ACCEPTED_MAX_CONNECTIONS,
      'maxConnections',
    ),
    maxConnectionsPerIp: intLimit(
      '--max-connections-per-ip',
      v['max-connections-per-ip'] ?? env.ACCEPTED_MAX_CONNECTIONS_PER_IP,
      'maxConnectionsPerIp',
    ),
  };
  if (limits.headersTimeoutMs > limits.requestTimeoutMs) {
    throw new UsageError(
      `--headers-timeout (${limits.headersTimeoutMs}ms) must not be longer than --request-timeout (${limits.requestTimeoutMs}ms)`,
    );
  }
  const webhookDisableAfterMs = webhookDisableAfter(
    v['webhook-disable-after'] ?? env.ACCEPTED_WEBHOOK_DISABLE_AFTER,
  );
  const webhookTimeoutMs = duration(
    '--webhook-timeout',
    v['webhook-timeout'] ?? env.ACCEPTED_WEBHOOK_TIMEOUT,
    15_000,
    WEBHOOK_LIMITS.timeoutMinMs,
    WEBHOOK_LIMITS.timeoutMaxMs,
  );
  checkWebhookFlags({
    retrySchedule: webhookRetries ?? undefined,
    timeoutMs: webhookTimeoutMs,
    disableAfterMs: webhookDisableAfterMs,
  });
  return Object.freeze({
    ...limits,
    apiKeys,
    webhookRetries,
    webhookAllow,
    webhookDisableAfterMs,
    webhookTimeoutMs,
    insecure,
    maxWaitSeconds: int('--max-wait', v['max-wait'] ?? env.ACCEPTED_MAX_WAIT, 60, 1, 3600),
    publicUrl,
    port: int('--port', v.port ?? env.ACCEPTED_PORT, 8080, 0, 65535),
    host,
    dataDir: path.resolve(v.data ?? env.ACCEPTED_DATA ?? '.data'),
    store: storeUrl === '' ? null : storeUrl,
    schema,
    leaseMs: duration('--lease', v.lease ?? env.ACCEPTED_LEASE, 30_000, 100, 3_600_000),
    demo: v.demo ?? false,
    handlers: v.handlers ? path.resolve(v.handlers) : null,
    concurrency: int('--concurrency', v.concurrency ?? env.ACCEPTED_CONCURRENCY, 32, 1, 10_000),
    shutdownGraceMs: int('--grace', v.grace ?? env.ACCEPTED_GRACE_MS, 10_000, 0, 3_600_000),
    logLevel,
    durability,
    heartbeatMs: duration(
      '--heartbeat',
      v.heartbeat ?? env.ACCEPTED_HEARTBEAT,
      15_000,
      10,
      3_600_000,
    ),
    streamSecret,
  });
}
