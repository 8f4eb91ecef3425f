// The configuration of a whole server, resolved in one place for `accepted serve` (flags and
// environment variables) and for the library (`createServer(options)`): each option is read
// from the library's options, then its flag, then its environment variable, then its default,
// and checked against its bounds. The defaults are the components' own (ENGINE_DEFAULTS,
// WEBHOOK_DEFAULTS, STREAM_DEFAULTS, DEFAULT_HTTP_LIMITS), stated once where they apply.
import { isIP } from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { isAcceptedError } from '../domain/errors.ts';
import { ConfigError, checkNumber, describeValue, type NumberSpec } from '../domain/options.ts';
import {
  WEBHOOK_DEFAULTS,
  WEBHOOK_LIMITS,
  checkWebhookOptions,
  parseDurations,
} from '../domain/webhooks.ts';
import { ENGINE_DEFAULTS } from '../engine/accepted.ts';
import { ApiKeys } from '../http/auth.ts';
import { DEFAULT_HTTP_LIMITS, HTTP_LIMIT_RANGES, type HttpLimits } from '../http/limits.ts';
import { STREAM_DEFAULTS } from '../stream/hub.ts';
import { MIN_STREAM_SECRET_LENGTH } from '../stream/tokens.ts';
import { AddressPolicy } from '../webhooks/ssrf.ts';
import { MAX_ATTEMPTS_LIMIT } from '../wire/submit.ts';

const DAY = 86_400_000;

/** A numeric setting: its key, flag, variable, grammar, bounds and default. */
interface NumericOption<K extends string = NumericKey> extends NumberSpec {
  key: K;
  flag: string;
  env: string;
  default: number;
}

type NumericKey =
  | keyof HttpLimits
  | 'port'
  | 'leaseMs'
  | 'concurrency'
  | 'shutdownGraceMs'
  | 'maxWaitSeconds'
  | 'heartbeatMs'
  | 'maxSubscriptions'
  | 'retentionMs'
  | 'idempotencyRetentionMs'
  | 'maxAttempts'
  | 'maxResultBytes'
  | 'pollIntervalMs'
  | 'leaseRecoveryIntervalMs'
  | 'webhookTimeoutMs'
  | 'webhookDisableAfterMs'
  | 'webhookConcurrency'
  | 'webhookRetentionMs'
  | 'webhookDispatchLeaseMs'
  | 'leaseHeartbeatMs'
  | 'retentionIntervalMs'
  | 'streamRetryMs'
  | 'streamMaxPending'
  | 'streamStallTimeoutMs'
  | 'webhookRotationOverlapMs'
  | 'webhookPollIntervalMs';

const http = (
  key: keyof HttpLimits,
  flag: string,
  env: string,
  kind: NumberSpec['kind'],
): NumericOption => {
  const [min, max] = HTTP_LIMIT_RANGES[key];
  return { key, flag, env, kind, min, max, default: DEFAULT_HTTP_LIMITS[key] };
};

/** Every numeric setting of a server. The usage text and docs/cli.md list the same. */
export const NUMERIC_OPTIONS: readonly NumericOption[] = Object.freeze([
  {
    key: 'port',
    flag: '--port',
    env: 'ACCEPTED_PORT',
    kind: 'int',
    min: 0,
    max: 65535,
    default: 8080,
  },
  {
    key: 'leaseMs',
    flag: '--lease',
    env: 'ACCEPTED_LEASE',
    kind: 'duration',
    min: 100,
    max: 3_600_000,
    default: ENGINE_DEFAULTS.leaseMs,
  },
  {
    key: 'concurrency',
    flag: '--concurrency',
    env: 'ACCEPTED_CONCURRENCY',
    kind: 'int',
    min: 1,
    max: 10_000,
    default: ENGINE_DEFAULTS.concurrency,
  },
  // A plain number is milliseconds here (the flag predates units).
  {
    key: 'shutdownGraceMs',
    flag: '--grace',
    env: 'ACCEPTED_GRACE_MS',
    kind: 'duration',
    bare: 'ms',
    min: 0,
    max: 3_600_000,
    default: ENGINE_DEFAULTS.shutdownGraceMs,
  },
  {
    key: 'maxAttempts',
    flag: '--max-attempts',
    env: 'ACCEPTED_MAX_ATTEMPTS',
    kind: 'int',
    min: 1,
    max: MAX_ATTEMPTS_LIMIT,
    default: ENGINE_DEFAULTS.maxAttempts,
  },
  {
    key: 'retentionMs',
    flag: '--retention',
    env: 'ACCEPTED_RETENTION',
    kind: 'duration',
    min: 60_000,
    max: 3650 * DAY,
    default: ENGINE_DEFAULTS.retentionMs,
  },
  {
    key: 'idempotencyRetentionMs',
    flag: '--idempotency-retention',
    env: 'ACCEPTED_IDEMPOTENCY_RETENTION',
    kind: 'duration',
    min: 60_000,
    max: 365 * DAY,
    default: ENGINE_DEFAULTS.idempotencyRetentionMs,
  },
  {
    key: 'maxResultBytes',
    flag: '--max-result-size',
    env: 'ACCEPTED_MAX_RESULT_SIZE',
    kind: 'size',
    min: 1024,
    max: 1024 * 1024 * 1024,
    default: ENGINE_DEFAULTS.maxResultBytes,
  },
  {
    key: 'pollIntervalMs',
    flag: '--poll-interval',
    env: 'ACCEPTED_POLL_INTERVAL',
    kind: 'duration',
    min: 10,
    max: 60_000,
    default: ENGINE_DEFAULTS.pollIntervalMs,
  },
  {
    key: 'leaseRecoveryIntervalMs',
    flag: '--lease-recovery-interval',
    env: 'ACCEPTED_LEASE_RECOVERY_INTERVAL',
    kind: 'duration',
    min: 10,
    max: 3_600_000,
    default: ENGINE_DEFAULTS.leaseRecoveryIntervalMs,
  },
  {
    key: 'maxWaitSeconds',
    flag: '--max-wait',
    env: 'ACCEPTED_MAX_WAIT',
    kind: 'int',
    min: 1,
    max: 3600,
    default: 60,
  },
  {
    key: 'heartbeatMs',
    flag: '--heartbeat',
    env: 'ACCEPTED_HEARTBEAT',
    kind: 'duration',
    min: 10,
    max: 3_600_000,
    default: STREAM_DEFAULTS.heartbeatMs,
  },
  {
    key: 'maxSubscriptions',
    flag: '--max-subscriptions',
    env: 'ACCEPTED_MAX_SUBSCRIPTIONS',
    kind: 'int',
    min: 1,
    max: 10_000,
    default: STREAM_DEFAULTS.maxSubscriptions,
  },
  {
    key: 'webhookTimeoutMs',
    flag: '--webhook-timeout',
    env: 'ACCEPTED_WEBHOOK_TIMEOUT',
    kind: 'duration',
    min: WEBHOOK_LIMITS.timeoutMinMs,
    max: WEBHOOK_LIMITS.timeoutMaxMs,
    default: WEBHOOK_DEFAULTS.timeoutMs,
  },
  {
    key: 'webhookDisableAfterMs',
    flag: '--webhook-disable-after',
    env: 'ACCEPTED_WEBHOOK_DISABLE_AFTER',
    kind: 'duration',
    min: WEBHOOK_LIMITS.disableAfterMinMs,
    max: WEBHOOK_LIMITS.disableAfterMaxMs,
    default: WEBHOOK_DEFAULTS.disableAfterMs,
  },
  {
    key: 'webhookConcurrency',
    flag: '--webhook-concurrency',
    env: 'ACCEPTED_WEBHOOK_CONCURRENCY',
    kind: 'int',
    min: 1,
    max: WEBHOOK_LIMITS.concurrencyMax,
    default: WEBHOOK_DEFAULTS.concurrency,
  },
  {
    key: 'webhookRetentionMs',
    flag: '--webhook-retention',
    env: 'ACCEPTED_WEBHOOK_RETENTION',
    kind: 'duration',
    min: WEBHOOK_LIMITS.retentionMinMs,
    max: WEBHOOK_LIMITS.retentionMaxMs,
    default: WEBHOOK_DEFAULTS.retentionMs,
  },
  {
    key: 'webhookDispatchLeaseMs',
    flag: '--webhook-dispatch-lease',
    env: 'ACCEPTED_WEBHOOK_DISPATCH_LEASE',
    kind: 'duration',
    min: WEBHOOK_LIMITS.dispatchLeaseMinMs,
    max: WEBHOOK_LIMITS.dispatchLeaseMaxMs,
    default: WEBHOOK_DEFAULTS.dispatchLeaseMs,
  },
  // 0: a third of the lease (the engine's own default, which depends on --lease).
  {
    key: 'leaseHeartbeatMs',
    flag: '--lease-heartbeat',
    env: 'ACCEPTED_LEASE_HEARTBEAT',
    kind: 'duration',
    min: 0,
    max: 3_600_000,
    default: 0,
  },
  {
    key: 'retentionIntervalMs',
    flag: '--retention-interval',
    env: 'ACCEPTED_RETENTION_INTERVAL',
    kind: 'duration',
    min: 1000,
    max: 86_400_000,
    default: ENGINE_DEFAULTS.retentionIntervalMs,
  },
  {
    key: 'streamRetryMs',
    flag: '--stream-retry',
    env: 'ACCEPTED_STREAM_RETRY',
    kind: 'duration',
    min: 0,
    max: 3_600_000,
    default: STREAM_DEFAULTS.retryMs,
  },
  {
    key: 'streamMaxPending',
    flag: '--stream-max-pending',
    env: 'ACCEPTED_STREAM_MAX_PENDING',
    kind: 'int',
    min: 1,
    max: 100_000,
    default: STREAM_DEFAULTS.maxPending,
  },
  {
    key: 'streamStallTimeoutMs',
    flag: '--stream-stall-timeout',
    env: 'ACCEPTED_STREAM_STALL_TIMEOUT',
    kind: 'duration',
    min: 10,
    max: 3_600_000,
    default: STREAM_DEFAULTS.stallTimeoutMs,
  },
  {
    key: 'webhookRotationOverlapMs',
    flag: '--webhook-rotation-overlap',
    env: 'ACCEPTED_WEBHOOK_ROTATION_OVERLAP',
    kind: 'duration',
    min: 0,
    max: WEBHOOK_LIMITS.rotationOverlapMaxMs,
    default: WEBHOOK_DEFAULTS.rotationOverlapMs,
  },
  {
    key: 'webhookPollIntervalMs',
    flag: '--webhook-poll-interval',
    env: 'ACCEPTED_WEBHOOK_POLL_INTERVAL',
    kind: 'duration',
    min: WEBHOOK_LIMITS.pollIntervalMinMs,
    max: WEBHOOK_LIMITS.pollIntervalMaxMs,
    default: WEBHOOK_DEFAULTS.pollIntervalMs,
  },
  http('bodyLimit', '--body-limit', 'ACCEPTED_BODY_LIMIT', 'size'),
  http('maxHeaderSize', '--max-header-size', 'ACCEPTED_MAX_HEADER_SIZE', 'size'),
  http('headersTimeoutMs', '--headers-timeout', 'ACCEPTED_HEADERS_TIMEOUT', 'duration'),
  http('requestTimeoutMs', '--request-timeout', 'ACCEPTED_REQUEST_TIMEOUT', 'duration'),
  http('keepAliveTimeoutMs', '--keep-alive-timeout', 'ACCEPTED_KEEP_ALIVE_TIMEOUT', 'duration'),
  http('maxConnections', '--max-connections', 'ACCEPTED_MAX_CONNECTIONS', 'int'),
  http('maxConnectionsPerIp', '--max-connections-per-ip', 'ACCEPTED_MAX_CONNECTIONS_PER_IP', 'int'),
]);

/** A whole server's settings, resolved and checked. Frozen. */
export interface ServerConfig extends HttpLimits, Record<NumericKey, number> {
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
  demo: boolean;
  /** A module exporting operation definitions, or null. */
  handlers: string | null;
  /** Run handlers on this node; false makes an API-only node (`--api-only`). */
  worker: boolean;
  logLevel: string;
  /** Flush every commit to disk (`full`, default) or only to the OS (`normal`). */
  durability: 'full' | 'normal';
  /** API keys mapped to tenants; null in local development mode (no keys). */
  apiKeys: ApiKeys | null;
  /** Serve a non-loopback address without API keys (refused unless set). */
  insecure: boolean;
  /** The public base URL for `Operation-Location`, or null to use the request's Host. */
  publicUrl: string | null;
  /** Delays between webhook attempts (ms), or null for the Standard Webhooks schedule. */
  webhookRetries: number[] | null;
  /** CIDRs webhooks may reach although the SSRF block list forbids them. */
  webhookAllow: string[];
  /** Secret that signs stream tokens, or null for a random one per process. */
  streamSecret: string | null;
}

/** What a library caller may set: any setting, by its key (`retentionMs`, `store`, ...). */
export type ServerOptions = Partial<Omit<ServerConfig, 'apiKeys'>> & {
  apiKeys?: ApiKeys | null;
};

/** Loopback addresses: what a server without API keys may bind. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || host === '[::1]';
}

const d = (key: NumericKey) => {
  const option = NUMERIC_OPTIONS.find((o) => o.key === key);
  return option ? describeValue(option.kind, option.default) : '';
};

export const SERVE_USAGE = `Usage: accepted serve [options]

  --port N            port to listen on (env ACCEPTED_PORT, default ${d('port')}; 0 = any free port)
  --host ADDR         address to bind (env ACCEPTED_HOST, default 127.0.0.1)
  --data DIR          data folder for the embedded store (env ACCEPTED_DATA, default ./.data)
  --store URL         run on PostgreSQL (postgres://user:pass@host:5432/db) instead of the
                      embedded store; every node given the same URL and schema shares the
                      work (env ACCEPTED_STORE, or DATABASE_URL)
  --schema NAME       PostgreSQL schema for Accepted's tables, created if missing (env
                      ACCEPTED_SCHEMA, default accepted)
  --lease DURATION    lease of a running operation: a node that stops renewing it (it died)
                      loses the operation to another after this; 500ms, 30s or 1m (env
                      ACCEPTED_LEASE, default ${d('leaseMs')})
  --demo              register the demo operation types (demo.echo, demo.sleep, ...)
  --handlers FILE     a module exporting operation definitions (default export or
                      'operations'): .js or .mjs, or .ts on Node.js 22.18+ (or with tsx)
  --api-only          accept and answer, but run no handlers on this node (env
                      ACCEPTED_API_ONLY=1)
  --concurrency N     handlers run at once (env ACCEPTED_CONCURRENCY, default ${d('concurrency')})
  --grace DURATION    shutdown grace for running handlers; a plain number is ms (env
                      ACCEPTED_GRACE_MS, default ${d('shutdownGraceMs')})
  --max-attempts N    attempts when neither the submit nor the type says (env
                      ACCEPTED_MAX_ATTEMPTS, default ${d('maxAttempts')})
  --retention DURATION
                      how long finished operations and their events are kept, such as 12h
                      or 30d (env ACCEPTED_RETENTION, default ${d('retentionMs')})
  --idempotency-retention DURATION
                      how long an Idempotency-Key is remembered (env
                      ACCEPTED_IDEMPOTENCY_RETENTION, default ${d('idempotencyRetentionMs')})
  --max-result-size SIZE
                      largest result a handler may return (env ACCEPTED_MAX_RESULT_SIZE,
                      default ${d('maxResultBytes')})
  --poll-interval DURATION
                      safety poll for new work and events, should a wake-up be lost (env
                      ACCEPTED_POLL_INTERVAL, default ${d('pollIntervalMs')})
  --lease-recovery-interval DURATION
                      how often expired leases are looked for (env
                      ACCEPTED_LEASE_RECOVERY_INTERVAL, default ${d('leaseRecoveryIntervalMs')}, at most --lease)
  --lease-heartbeat DURATION
                      how often held leases are renewed (env ACCEPTED_LEASE_HEARTBEAT,
                      default a third of --lease)
  --retention-interval DURATION
                      how often finished operations past --retention are removed (env
                      ACCEPTED_RETENTION_INTERVAL, default ${d('retentionIntervalMs')})
  --durability MODE   full (default) or normal (env ACCEPTED_DURABILITY)
  --log-level LEVEL   trace|debug|info|warn|error|silent (env ACCEPTED_LOG_LEVEL, default info)
  --api-keys FILE     API keys mapped to tenants, JSON (env ACCEPTED_API_KEYS_FILE); keys may
                      also come as tenant:key pairs in ACCEPTED_API_KEYS. Without keys the
                      server runs in local development mode: loopback only, one tenant.
  --insecure          allow a non-loopback --host without API keys (anyone may call it)
  --max-wait S        longest long poll or Prefer: wait, in seconds (env ACCEPTED_MAX_WAIT,
                      default ${d('maxWaitSeconds')})
  --public-url URL    this API's URL as clients see it, for Operation-Location (env
                      ACCEPTED_PUBLIC_URL; default: from the request's Host)
  --webhook-retries L delays between webhook attempts, such as 5s,5m,30m,2h (env
                      ACCEPTED_WEBHOOK_RETRIES; default 5s,5m,30m,2h,5h,10h,14h,20h,24h)
  --webhook-allow CIDR  a range webhooks may reach although it is private or loopback, for
                      development (repeatable; env ACCEPTED_WEBHOOK_ALLOW, comma-separated)
  --webhook-timeout D time limit of one webhook attempt (env ACCEPTED_WEBHOOK_TIMEOUT,
                      default ${d('webhookTimeoutMs')})
  --webhook-disable-after D  disable an endpoint that has failed every attempt for this
                      long (env ACCEPTED_WEBHOOK_DISABLE_AFTER, default ${d('webhookDisableAfterMs')})
  --webhook-concurrency N
                      webhook attempts in flight on this node (env
                      ACCEPTED_WEBHOOK_CONCURRENCY, default ${d('webhookConcurrency')})
  --webhook-retention DURATION
                      how long finished deliveries and their attempts are kept (env
                      ACCEPTED_WEBHOOK_RETENTION, default ${d('webhookRetentionMs')})
  --webhook-rotation-overlap DURATION
                      how long an old secret still signs after a rotation (env
                      ACCEPTED_WEBHOOK_ROTATION_OVERLAP, default ${d('webhookRotationOverlapMs')})
  --webhook-poll-interval DURATION
                      safety poll for due webhook deliveries (env
                      ACCEPTED_WEBHOOK_POLL_INTERVAL, default ${d('webhookPollIntervalMs')})
  --webhook-dispatch-lease DURATION
                      how long one node holds the webhook dispatcher (the relay cursor)
                      before another may take over (env ACCEPTED_WEBHOOK_DISPATCH_LEASE,
                      default ${d('webhookDispatchLeaseMs')})
  --heartbeat DURATION
                      keepalive interval of event streams and WebSockets: 500ms, 15s or 1m;
                      a plain number is seconds (env ACCEPTED_HEARTBEAT, default ${d('heartbeatMs')})
  --max-subscriptions N
                      subscriptions one WebSocket may hold (env ACCEPTED_MAX_SUBSCRIPTIONS,
                      default ${d('maxSubscriptions')})
  --stream-retry DURATION
                      the reconnection delay event streams advise (SSE retry:) (env
                      ACCEPTED_STREAM_RETRY, default ${d('streamRetryMs')})
  --stream-max-pending N
                      events held per subscription while its connection is congested
                      (env ACCEPTED_STREAM_MAX_PENDING, default ${d('streamMaxPending')})
  --stream-stall-timeout DURATION
                      a connection that takes nothing for this long is closed (env
                      ACCEPTED_STREAM_STALL_TIMEOUT, default ${d('streamStallTimeoutMs')})
  --stream-secret SECRET
                      signs stream tokens, at least 32 characters; the same on every node
                      that must accept the same tokens (env ACCEPTED_STREAM_SECRET; default:
                      random at each start)

  Limits (docs/limits.md):
  --body-limit SIZE   largest request body and operation input: bytes, or 512kb, 4mb (env
                      ACCEPTED_BODY_LIMIT, default ${d('bodyLimit')})
  --max-header-size SIZE
                      largest request line and headers (env ACCEPTED_MAX_HEADER_SIZE,
                      default ${d('maxHeaderSize')})
  --headers-timeout DURATION
                      time for a request's headers to arrive (env ACCEPTED_HEADERS_TIMEOUT,
                      default ${d('headersTimeoutMs')})
  --request-timeout DURATION
                      time for a whole request, body included, to arrive; not the answer's
                      time, so long polls and streams are not cut (env
                      ACCEPTED_REQUEST_TIMEOUT, default ${d('requestTimeoutMs')})
  --keep-alive-timeout DURATION
                      idle time of a keep-alive connection between requests (env
                      ACCEPTED_KEEP_ALIVE_TIMEOUT, default ${d('keepAliveTimeoutMs')})
  --max-connections N connections open at once, 0 for no limit (env
                      ACCEPTED_MAX_CONNECTIONS, default ${d('maxConnections')})
  --max-connections-per-ip N
                      connections open at once from one IPv4 address or IPv6 /64, 0 for no
                      limit; behind a proxy every client has the proxy's address (env
                      ACCEPTED_MAX_CONNECTIONS_PER_IP, default ${d('maxConnectionsPerIp')})
`;

/** The flag of each webhook option, for the error that names it. */
const WEBHOOK_FLAGS: Record<string, string> = {
  '/retrySchedule': '--webhook-retries',
  '/timeoutMs': '--webhook-timeout',
  '/disableAfterMs': '--webhook-disable-after',
};

/**
 * The webhook settings against the bounds the webhook sender enforces (`WEBHOOK_LIMITS`, one
 * rule): a value past them is a configuration error naming the flag, not a failure at start.
 */
function checkWebhookSettings(values: Parameters<typeof checkWebhookOptions>[0]): void {
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
    throw new ConfigError(
      'webhookRetries',
      problems.length > 0 ? problems.join('; ') : error.message,
    );
  }
}

const FLAGS = {
  host: { type: 'string' },
  data: { type: 'string' },
  store: { type: 'string' },
  schema: { type: 'string' },
  demo: { type: 'boolean' },
  handlers: { type: 'string' },
  'api-only': { type: 'boolean' },
  durability: { type: 'string' },
  'log-level': { type: 'string' },
  'api-keys': { type: 'string' },
  insecure: { type: 'boolean' },
  'public-url': { type: 'string' },
  'stream-secret': { type: 'string' },
  'webhook-retries': { type: 'string' },
  'webhook-allow': { type: 'string', multiple: true },
  ...Object.fromEntries(NUMERIC_OPTIONS.map((o) => [o.flag.slice(2), { type: 'string' }])),
} as const;

export interface ResolveInput {
  /** Command-line arguments of `accepted serve` (after the command). */
  argv?: readonly string[];
  /** Environment variables; default none (the CLI passes `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** The library's options, by key; they win over flags and the environment. */
  options?: ServerOptions;
}

/**
 * Resolves a server's settings: each from the library's options, then its flag, then its
 * environment variable, then its default. Throws a ConfigError that names the option as it
 * was given (`--retention`, `ACCEPTED_RETENTION` is reported as its flag, `retentionMs`).
 */
export function resolveServerConfig(input: ResolveInput = {}): ServerConfig {
  const env = input.env ?? {};
  const given = input.options ?? {};
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    values = parseArgs({
      args: [...(input.argv ?? [])],
      strict: true,
      allowPositionals: false,
      options: FLAGS,
    }).values;
  } catch (error) {
    throw new ConfigError('argv', (error as Error).message);
  }
  const flag = (name: string) => values[name] as string | undefined;
  const text = (
    key: keyof ServerOptions,
    name: string,
    envName: string,
    fallback: string | null,
  ): { value: string | null; by: string } => {
    const value = given[key];
    if (value !== undefined) return { value: value as string | null, by: key };
    return { value: flag(name) ?? env[envName] ?? fallback, by: `--${name}` };
  };

  const numbers = {} as Record<NumericKey, number>;
  for (const option of NUMERIC_OPTIONS) {
    const value = given[option.key];
    if (value !== undefined) {
      numbers[option.key] = checkNumber(option.key, option, value, option.default);
    } else {
      const raw = flag(option.flag.slice(2)) ?? env[option.env];
      numbers[option.key] = checkNumber(option.flag, option, raw, option.default);
    }
  }
  if (numbers.headersTimeoutMs > numbers.requestTimeoutMs) {
    throw new ConfigError(
      'headersTimeoutMs',
      `--headers-timeout (${numbers.headersTimeoutMs}ms) must not be longer than --request-timeout (${numbers.requestTimeoutMs}ms)`,
    );
  }
  if (numbers.leaseRecoveryIntervalMs > numbers.leaseMs) {
    // Looking for expired leases less often than they expire only delays recovery.
    numbers.leaseRecoveryIntervalMs = numbers.leaseMs;
  }

  const durability = text('durability', 'durability', 'ACCEPTED_DURABILITY', 'full');
  if (durability.value !== 'full' && durability.value !== 'normal') {
    throw new ConfigError(
      durability.by,
      `${durability.by} must be full or normal (got "${durability.value ?? ''}")`,
    );
  }
  const store = text('store', 'store', 'ACCEPTED_STORE', env.DATABASE_URL ?? null);
  const storeUrl = store.value === '' ? null : store.value;
  if (storeUrl !== null && !/^postgres(ql)?:\/\//.test(storeUrl)) {
    throw new ConfigError(
      store.by,
      `${store.by} must be a PostgreSQL URL such as postgres://user:password@host:5432/db (got "${storeUrl.replace(/\/\/[^@/]*@/, '//***@')}")`,
    );
  }
  const schema = text('schema', 'schema', 'ACCEPTED_SCHEMA', 'accepted');
  if (!/^[a-z_][a-z0-9_]{0,47}$/.test(schema.value ?? '')) {
    throw new ConfigError(
      schema.by,
      `${schema.by} must be lowercase letters, digits and _ (at most 48), starting with a letter or _ (got "${schema.value ?? ''}")`,
    );
  }
  const logLevel = text('logLevel', 'log-level', 'ACCEPTED_LOG_LEVEL', 'info');
  if (
    !['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(logLevel.value ?? '')
  ) {
    throw new ConfigError(
      logLevel.by,
      `${logLevel.by} must be one of trace, debug, info, warn, error, silent`,
    );
  }
  let apiKeys: ApiKeys | null = given.apiKeys ?? null;
  if (given.apiKeys === undefined) {
    const keyFile = flag('api-keys') ?? env.ACCEPTED_API_KEYS_FILE;
    const keyList = env.ACCEPTED_API_KEYS;
    if ((keyFile !== undefined && keyFile !== '') || (keyList !== undefined && keyList !== '')) {
      apiKeys = new ApiKeys();
      try {
        if (keyFile) apiKeys.addFromFile(path.resolve(keyFile));
        if (keyList) apiKeys.addFromList(keyList);
      } catch (error) {
        throw new ConfigError('apiKeys', (error as Error).message);
      }
    }
  }
  const host = String(text('host', 'host', 'ACCEPTED_HOST', '127.0.0.1').value);
  const insecure = given.insecure ?? (values.insecure as boolean | undefined) ?? false;
  if (!apiKeys && !isLoopback(host) && !insecure) {
    throw new ConfigError(
      'host',
      `refusing to serve ${host} without API keys: anyone who reaches it could submit and read operations. Configure keys (--api-keys FILE or ACCEPTED_API_KEYS), bind 127.0.0.1, or pass --insecure`,
    );
  }
  const publicUrl = text('publicUrl', 'public-url', 'ACCEPTED_PUBLIC_URL', null);
  if (publicUrl.value !== null && !/^https?:\/\/[^/]+/.test(publicUrl.value)) {
    throw new ConfigError(
      publicUrl.by,
      `${publicUrl.by} must be an http(s) URL (got "${publicUrl.value}")`,
    );
  }
  const secret = text('streamSecret', 'stream-secret', 'ACCEPTED_STREAM_SECRET', null);
  const streamSecret = secret.value === '' || secret.value === null ? null : secret.value;
  if (streamSecret !== null && streamSecret.length < MIN_STREAM_SECRET_LENGTH) {
    throw new ConfigError(
      secret.by,
      `${secret.by} must have at least ${MIN_STREAM_SECRET_LENGTH} characters (got ${streamSecret.length}); make one with \`openssl rand -hex 32\``,
    );
  }
  let webhookRetries: number[] | null = given.webhookRetries ?? null;
  const retries = flag('webhook-retries') ?? env.ACCEPTED_WEBHOOK_RETRIES;
  if (given.webhookRetries === undefined && retries !== undefined && retries !== '') {
    try {
      webhookRetries = parseDurations(retries);
    } catch (error) {
      throw new ConfigError(
        '--webhook-retries',
        `--webhook-retries must be delays like 5s,5m,30m,2h (units ms, s, m, h, d): ${(error as Error).message}`,
      );
    }
  }
  const webhookAllow =
    given.webhookAllow ??
    [
      ...((values['webhook-allow'] as string[] | undefined) ?? []),
      ...(env.ACCEPTED_WEBHOOK_ALLOW ?? '').split(','),
    ]
      .map((cidr) => cidr.trim())
      .filter((cidr) => cidr !== '');
  try {
    new AddressPolicy(webhookAllow);
  } catch (error) {
    throw new ConfigError('webhookAllow', `--webhook-allow: ${(error as Error).message}`);
  }
  checkWebhookSettings({
    retrySchedule: webhookRetries ?? undefined,
    timeoutMs: numbers.webhookTimeoutMs,
    disableAfterMs: numbers.webhookDisableAfterMs,
  });
  const apiOnly =
    values['api-only'] === true || ['1', 'true'].includes(env.ACCEPTED_API_ONLY ?? '');
  const handlers = given.handlers ?? flag('handlers') ?? null;
  return Object.freeze({
    ...numbers,
    apiKeys,
    webhookRetries,
    webhookAllow: [...webhookAllow],
    insecure,
    publicUrl: publicUrl.value,
    host,
    dataDir: path.resolve(given.dataDir ?? flag('data') ?? env.ACCEPTED_DATA ?? '.data'),
    store: storeUrl,
    schema: schema.value ?? '',
    demo: given.demo ?? (values.demo as boolean | undefined) ?? false,
    handlers: handlers ? path.resolve(handlers) : null,
    worker: given.worker ?? !apiOnly,
    logLevel: logLevel.value ?? '',
    durability: durability.value,
    streamSecret,
  });
}
