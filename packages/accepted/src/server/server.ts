// The composition root: one function builds a whole server (store, engine, webhook delivery,
// the HTTP API with its streams) from one resolved configuration, and starts and stops the
// parts in the one right order. `accepted serve` is this plus flags and signals; an
// application gets the same server with `createServer(options)`.
import path from 'node:path';
import { pino, type Logger as PinoLogger } from 'pino';
import type { FastifyInstance } from 'fastify';
import { createAccepted, type Accepted } from '../engine/accepted.ts';
import type { AnyOperationDefinition } from '../engine/definition.ts';
import { demoOperations } from '../engine/demo.ts';
import { createHttpServer } from './http.ts';
import type { AuthenticateHook } from '../http/auth.ts';
import type { Store } from '../store/store.ts';
import { postgresStore } from '../store/postgres/postgres-store.ts';
import { sqliteStore } from '../store/sqlite/sqlite-store.ts';
import { createWebhooks, type Webhooks } from '../webhooks/service.ts';
import { closeDetachedSockets } from '../stream/detach.ts';
import { resolveServerConfig, type ServerConfig, type ServerOptions } from './config.ts';

export interface CreateServerOptions extends ServerOptions {
  /** The operation types this server accepts and runs (with `demo: true`, the demo ones too). */
  operations?: readonly AnyOperationDefinition[];
  /**
   * A store of your own (`sqliteStore(...)`, `postgresStore(...)`); default: PostgreSQL when
   * `store` is a URL, else the embedded store in `dataDir`.
   */
  storeInstance?: Store;
  /** A pino logger; default: JSON lines on stdout at `logLevel`. */
  logger?: PinoLogger;
  /** The host's own authentication, deciding each request's tenant (docs/embedding.md). */
  authenticate?: AuthenticateHook;
}

export interface AcceptedServer {
  readonly config: ServerConfig;
  readonly accepted: Accepted;
  readonly webhooks: Webhooks;
  readonly http: FastifyInstance;
  readonly logger: PinoLogger;
  /** Opens the store, starts the workers and webhook delivery, then listens. Returns the URL. */
  start(): Promise<string>;
  /**
   * Stops in the reverse order: submits are refused at once (503 SHUTTING_DOWN), webhook
   * attempts in flight are recorded, running handlers get `shutdownGraceMs` to finish, then
   * the HTTP server closes (streams end; connections still open after 2 s are cut).
   */
  stop(options?: { graceful?: boolean }): Promise<void>;
}

/** The store a configuration names. */
export function storeFor(config: ServerConfig, logger: PinoLogger): Store {
  return config.store
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
}

/**
 * Builds a whole server from options (checked by the same resolver as `accepted serve`'s
 * flags: a wrong one throws a ConfigError naming it) or from a configuration already resolved.
 */
export function createServer(
  options: CreateServerOptions = {},
  resolved: ServerConfig = resolveServerConfig({ options }),
): AcceptedServer {
  const config = resolved;
  const logger = options.logger ?? pino({ level: config.logLevel });
  const operations = [...(config.demo ? demoOperations : []), ...(options.operations ?? [])];
  const store = options.storeInstance ?? storeFor(config, logger);
  const accepted = createAccepted({
    store,
    operations,
    worker: config.worker,
    concurrency: config.concurrency,
    leaseMs: config.leaseMs,
    ...(config.leaseHeartbeatMs > 0 ? { heartbeatMs: config.leaseHeartbeatMs } : {}),
    retentionIntervalMs: config.retentionIntervalMs,
    leaseRecoveryIntervalMs: config.leaseRecoveryIntervalMs,
    pollIntervalMs: config.pollIntervalMs,
    maxAttempts: config.maxAttempts,
    retentionMs: config.retentionMs,
    idempotencyRetentionMs: config.idempotencyRetentionMs,
    shutdownGraceMs: config.shutdownGraceMs,
    // The input is part of the body: one limit for both.
    maxInputBytes: config.bodyLimit,
    maxResultBytes: config.maxResultBytes,
    logger,
  });
  const webhooks = createWebhooks({
    accepted,
    allow: config.webhookAllow,
    retrySchedule: config.webhookRetries ?? undefined,
    timeoutMs: config.webhookTimeoutMs,
    disableAfterMs: config.webhookDisableAfterMs,
    concurrency: config.webhookConcurrency,
    retentionMs: config.webhookRetentionMs,
    dispatchLeaseMs: config.webhookDispatchLeaseMs,
    rotationOverlapMs: config.webhookRotationOverlapMs,
    pollIntervalMs: config.webhookPollIntervalMs,
    logger,
  });
  const http = createHttpServer({
    accepted,
    webhooks,
    logger,
    apiKeys: config.apiKeys ?? undefined,
    ...(options.authenticate ? { authenticate: options.authenticate } : {}),
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
      maxSubscriptions: config.maxSubscriptions,
      retryMs: config.streamRetryMs,
      maxPending: config.streamMaxPending,
      stallTimeoutMs: config.streamStallTimeoutMs,
      tokenSecret: config.streamSecret ?? undefined,
    },
  });
  let state: 'new' | 'started' | 'stopping' | 'stopped' = 'new';
  return {
    config,
    accepted,
    webhooks,
    http,
    logger,
    async start() {
      if (state !== 'new') throw new Error('createServer: start() runs once');
      state = 'started';
      await accepted.start();
      webhooks.start();
      return http.listen({ port: config.port, host: config.host });
    },
    async stop(stopOptions = {}) {
      if (state === 'stopping' || state === 'stopped') return;
      const graceful = stopOptions.graceful ?? true;
      state = 'stopping';
      // Submits are refused at once (the engine's stop begins synchronously); webhook
      // attempts in flight finish and are recorded before the store closes.
      await accepted.stop({
        graceful,
        timeoutMs: config.shutdownGraceMs,
        beforeClose: () => webhooks.stop(graceful ? config.shutdownGraceMs : 0),
      });
      // Streams end at once; a connection that never sent a request would hold the close
      // until its header timeout, so whatever is left after 2 s is cut.
      const cut = setTimeout(
        () => {
          http.server.closeAllConnections();
          closeDetachedSockets(http.server);
        },
        graceful ? 2000 : 0,
      );
      await http.close();
      clearTimeout(cut);
      state = 'stopped';
    },
  };
}
