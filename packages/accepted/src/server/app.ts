import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import sjson from 'secure-json-parse';
import {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
} from 'fastify';
import { AcceptedError, ERROR_CODES, isAcceptedError, toAnswerable } from '../domain/errors.ts';
import { checkJsonText } from '../domain/json.ts';
import { DEFAULT_TENANT, type Accepted } from '../engine/accepted.ts';
import { markDepthChecked } from '../engine/submit.ts';
import { StreamHub, streamSettings, type StreamOptions } from '../stream/hub.ts';
import { operationEventStream, registerStreamRoutes } from '../stream/routes.ts';
import { StreamTokens, type StreamGrant } from '../stream/tokens.ts';
import { webSocketUpgrade, type WebSocketUpgrade } from '../stream/ws.ts';
import { registerWebhookRoutes } from '../webhooks/routes.ts';
import type { Webhooks } from '../webhooks/service.ts';
import { asyncApiDocument } from '../http/asyncapi.ts';
import {
  bearerToken,
  TENANT_PATTERN,
  type ApiKeys,
  type AuthenticateContext,
  type AuthenticateHook,
} from '../http/auth.ts';
import { assertSingleValued } from '../wire/headers.ts';
import type { HttpLimits } from '../http/limits.ts';
import { pathOf } from '../wire/mount.ts';
import { openApiDocument } from '../http/openapi.ts';
import { registerOperationRoutes } from '../http/operations.ts';
import { PROBLEM_CONTENT_TYPE, toProblem } from '../wire/problem.ts';
import { emptyJsonBody, fromFrameworkError, isClientGone, malformedJson } from '../http/problem.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /** The push channels' fan-out point (its `stats()` tell what streams hold). */
    streamHub: StreamHub;
  }
}

/**
 * What every way of serving the API takes (`createHttpServer`, `acceptedPlugin`,
 * `createAcceptedHandler`). The limits default to `DEFAULT_HTTP_LIMITS` (docs/limits.md);
 * mounted in a host application, only `bodyLimit` applies: the connection-level limits
 * (header size, timeouts, connection caps) are the host server's.
 */
export interface AcceptedHttpOptions extends Partial<HttpLimits> {
  accepted: Accepted;
  /**
   * API keys mapped to tenants. Without them (and without `authenticate`) every request is
   * served as the `default` tenant: local development only (the CLI refuses to bind a public
   * address that way).
   */
  apiKeys?: ApiKeys;
  /**
   * The host application's own authentication, deciding the tenant of each request (and of
   * each WebSocket upgrade). A Bearer token that is one of `apiKeys` wins; every other
   * request goes to the hook. See docs/embedding.md.
   */
  authenticate?: AuthenticateHook;
  /** Longest long poll or `Prefer: wait` hold, in seconds. Default 60. */
  maxWaitSeconds?: number;
  /**
   * The absolute URL of the server's root as clients reach it (behind a proxy: the public
   * one), used in `Operation-Location` and the API descriptions; the mount prefix is added to
   * it. Default: from the request's protocol and Host header.
   */
  publicUrl?: string;
  /** Push channels (SSE, WebSocket) and stream tokens; see docs/streams.md. */
  streams?: StreamOptions;
  /**
   * Webhook delivery (`createWebhooks`): serves the webhook routes, and checks every
   * `callbackUrl` against its address policy at submit. Without it there are no webhook
   * routes and callbacks are stored but not sent.
   */
  webhooks?: Webhooks;
}

/** How the API is served: its own server, a plugin in a host's Fastify, a (req, res) handler. */
export type MountMode = 'server' | 'plugin' | 'handler';

export interface CoreOptions extends AcceptedHttpOptions {
  mode: MountMode;
  limits: HttpLimits;
  log: FastifyBaseLogger;
  /** The mount prefix of a request (`''` at the root) and its path inside the mount. */
  locate: (request: FastifyRequest) => { prefix: string; path: string };
  /** Whether the request's connection was refused by a connection cap (already answered). */
  isRefused?: (socket: object | null | undefined) => boolean;
  /** Hands a request for no route of the API back to the host; true when it did. */
  passOn?: (request: FastifyRequest, reply: FastifyReply) => boolean;
  /** The body a host's body parser already read, to parse in place of the request stream. */
  consumedBody?: (raw: IncomingMessage) => Buffer | undefined;
}

export interface AcceptedCore {
  hub: StreamHub;
  /** Takes WebSocket upgrades of `<prefix>/v1/ws` (the host forwards them). */
  upgrade: WebSocketUpgrade;
}

/** Routes anyone may call: probes and the API descriptions. */
const PUBLIC_ROUTES = new Set(['/healthz', '/readyz', '/v1/openapi.json', '/v1/asyncapi.json']);

/** Routes that also take a stream token (`?access_token=`): browsers cannot set headers. */
const STREAM_ROUTES = [/^\/v1\/operations\/[^/:]+\/events$/, /^\/v1\/events$/, /^\/v1\/ws$/];

/** The methods each route answers, to tell 405 (wrong method) from 404 (no such path). */
const ROUTE_METHODS: readonly [RegExp, readonly string[]][] = [
  [/^\/v1\/operations$/, ['GET', 'HEAD', 'POST']],
  [/^\/v1\/operations\/[^/:]+$/, ['GET', 'HEAD', 'DELETE']],
  [/^\/v1\/operations\/[^/:]+\/events$/, ['GET', 'HEAD']],
  [/^\/v1\/operations\/[^/:]+:(cancel|retry)$/, ['POST']],
  [/^\/v1\/events$/, ['GET', 'HEAD']],
  [/^\/v1\/stream-tokens$/, ['POST']],
  [/^\/v1\/webhooks\/endpoints$/, ['GET', 'HEAD', 'POST']],
  [/^\/v1\/webhooks\/endpoints\/[^/:]+$/, ['GET', 'HEAD', 'PATCH', 'DELETE']],
  [/^\/v1\/webhooks\/endpoints\/[^/:]+:(rotate-secret|replay)$/, ['POST']],
  [/^\/v1\/webhooks\/callback-secret$/, ['GET', 'HEAD']],
  [/^\/v1\/webhooks\/callback-secret:rotate$/, ['POST']],
  [/^\/v1\/webhooks\/deliveries$/, ['GET', 'HEAD']],
  [/^\/v1\/webhooks\/deliveries\/[^/:]+$/, ['GET', 'HEAD']],
  [/^\/v1\/webhooks\/deliveries\/[^/:]+\/attempts$/, ['GET', 'HEAD']],
  [/^\/v1\/webhooks\/deliveries\/[^/:]+:replay$/, ['POST']],
  [/^\/v1\/ws$/, ['GET']],
  [/^\/(healthz|readyz|v1\/openapi\.json|v1\/asyncapi\.json)$/, ['GET', 'HEAD']],
];

/**
 * Whether a path (inside the mount) is one of the API's routes, whatever the method: the
 * others are the host's. The webhook routes exist only with webhooks.
 */
export function isApiPath(path: string, webhooks: boolean): boolean {
  if (!webhooks && path.startsWith('/v1/webhooks/')) return false;
  return ROUTE_METHODS.some(([pattern]) => pattern.test(path));
}

/** A Host header: a name or an IPv4 address, or an IPv6 address in brackets, and a port. */
const HOST = /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._~%!$&'()*+,;=-]{1,255})(?::\d{1,5})?$/;

export function malformed(message: string, fix?: string): AcceptedError {
  return new AcceptedError('MALFORMED_REQUEST', message, { fix });
}

/** Refuses a missing Host (HTTP/1.1, RFC 9112 §3.2), a malformed one, and repeated headers. */
function checkHeaders(request: FastifyRequest): void {
  assertSingleValued(request.raw.rawHeaders);
  const host = request.headers.host;
  if (host === undefined) {
    if (request.raw.httpVersion === '1.1') {
      throw malformed('The request has no Host header.', 'Send Host: <the server’s name>.');
    }
  } else if (!HOST.test(host)) {
    throw malformed('The Host header is not a host name or address.', 'Send Host: name[:port].');
  }
}

/**
 * Answers `error` as problem+json (with Retry-After on a 503). Its `instance` is the path as
 * the client sent it: the path only, since a query may hold a stream token, which must not be
 * echoed.
 */
export function sendProblem(
  reply: FastifyReply,
  request: FastifyRequest,
  error: AcceptedError,
  path = pathOf(request.url),
) {
  const problem = toProblem(error, path);
  const retryAfter = error.details?.retryAfter;
  if (typeof retryAfter === 'number') void reply.header('retry-after', String(retryAfter));
  else if (ERROR_CODES[error.code].status === 503) void reply.header('retry-after', '1');
  void reply.status(problem.status).type(PROBLEM_CONTENT_TYPE).send(problem);
}

/** 401 UNAUTHENTICATED, with the challenge its WWW-Authenticate header names. */
function unauthenticated(message: string, challenge: 'missing' | 'invalid_token', fix: string) {
  return new AcceptedError('UNAUTHENTICATED', message, { fix, details: { challenge } });
}

/**
 * Installs the whole API on `app` (a Fastify instance or an encapsulated plugin context):
 * the strict JSON body parser, authentication, problem+json errors, the operation, stream and
 * webhook routes, the API descriptions and the probes. It registers no server-level option:
 * the caller chooses how requests (and WebSocket upgrades) reach it.
 */
export function installAccepted(app: FastifyInstance, options: CoreOptions): AcceptedCore {
  const { accepted, apiKeys, limits, mode, locate } = options;
  // Under the (req, res) handler the request's URL is the one inside the mount.
  const answer = (reply: FastifyReply, request: FastifyRequest, error: AcceptedError) =>
    sendProblem(
      reply,
      request,
      error,
      mode === 'handler' ? request.acceptedPrefix + pathOf(request.url) : pathOf(request.url),
    );
  const hook = options.authenticate;
  let closing = false;
  const publicUrl = options.publicUrl?.replace(/\/+$/, '');
  const baseUrl = (request: FastifyRequest) =>
    `${publicUrl ?? `${request.protocol}://${request.host}`}${request.acceptedPrefix}`;

  // Only JSON bodies, for every route: UTF-8 (a byte that is not is refused, not replaced),
  // at most MAX_JSON_DEPTH levels deep, numbers a double holds exactly; a parse error names
  // the position, and prototype poisoning is refused.
  app.removeAllContentTypeParsers();
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const parseJson = (
    request: FastifyRequest,
    body: string | Buffer,
    done: (err: Error | null, value?: unknown) => void,
  ) => {
    let value: unknown;
    try {
      const encoding = request.headers['content-encoding'];
      // A body a host's parser read was decoded by it already.
      const decoded = options.consumedBody?.(request.raw) !== undefined;
      if (!decoded && encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
        throw new AcceptedError(
          'UNSUPPORTED_MEDIA_TYPE',
          `Content-Encoding ${encoding} is not supported.`,
          { fix: 'Send the JSON body uncompressed.' },
        );
      }
      let text: string;
      try {
        text = typeof body === 'string' ? body : utf8.decode(body);
      } catch {
        throw new AcceptedError('INVALID_ENCODING', 'The body is not valid UTF-8.', {
          fix: 'Encode the JSON body as UTF-8 (RFC 8259 §8.1).',
        });
      }
      if (text.length === 0) throw emptyJsonBody();
      checkJsonText(text);
      try {
        value = sjson.parse(text, null, { protoAction: 'error', constructorAction: 'error' });
      } catch (error) {
        throw malformedJson(error);
      }
      markDepthChecked(value, text.length);
    } catch (error) {
      done(error as Error);
      return;
    }
    done(null, value);
  };
  const parsing = { parseAs: 'buffer', bodyLimit: limits.bodyLimit } as const;
  app.addContentTypeParser('application/json', parsing, parseJson);
  app.addContentTypeParser(/^application\/[a-z0-9.+-]*\+json$/, parsing, parseJson);

  const consumedBody = options.consumedBody;
  if (consumedBody) {
    // A host's body parser (express.json(), express.raw(), ...) read the stream already: the
    // same parser runs on what it read. `receivedEncodedLength` is the request's own length,
    // so that Content-Length and the body limit are checked against what the client sent.
    app.addHook('preParsing', async (request, _reply, payload) => {
      const body = consumedBody(request.raw);
      if (body === undefined) return payload;
      const replay = Readable.from([body], { objectMode: false }) as Readable & {
        receivedEncodedLength?: number;
      };
      const length = Number(request.headers['content-length']);
      if (Number.isSafeInteger(length)) replay.receivedEncodedLength = length;
      return replay;
    });
  }

  const tokens = new StreamTokens(options.streams?.tokenSecret);
  const hub = new StreamHub(accepted, streamSettings(options.streams), options.mode === 'server');
  if (!app.hasDecorator('streamHub')) app.decorate('streamHub', hub);

  /**
   * Who is calling, in this order: on a stream route without a Bearer token, a stream token
   * (`?access_token=`); a Bearer token that is one of the API keys; the host's `authenticate`
   * hook; without keys or hook (local development), anyone, as tenant `default`.
   */
  async function identify(
    raw: IncomingMessage,
    context: AuthenticateContext,
    accessToken: unknown,
  ): Promise<{ tenant: string; grant: StreamGrant | null }> {
    const token = bearerToken(raw.headers.authorization);
    if (
      token === null &&
      typeof accessToken === 'string' &&
      STREAM_ROUTES.some((r) => r.test(context.path))
    ) {
      const grant = tokens.verify(accessToken);
      return { tenant: grant.tenant, grant };
    }
    const owner = token === null || !apiKeys ? null : apiKeys.lookup(token);
    if (owner) return { tenant: owner.tenant, grant: null };
    if (hook) {
      const caller = await hook(raw, context);
      if (caller === null || caller === undefined) {
        throw unauthenticated(
          token === null ? 'This request is not authenticated.' : 'The credentials are not valid.',
          token === null ? 'missing' : 'invalid_token',
          'Sign in to the application that serves this API, or send its credentials.',
        );
      }
      const tenant = (caller as { tenant?: unknown }).tenant;
      if (typeof tenant !== 'string' || !TENANT_PATTERN.test(tenant)) {
        // The host's bug, not the client's: logged, and answered 500 INTERNAL.
        throw new Error(
          `The authenticate hook returned the tenant ${JSON.stringify(tenant)}, which is not a tenant name (1 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit).`,
        );
      }
      return { tenant, grant: null };
    }
    if (!apiKeys) return { tenant: DEFAULT_TENANT, grant: null };
    throw unauthenticated(
      token === null ? 'This API needs an API key.' : 'The API key is not valid.',
      token === null ? 'missing' : 'invalid_token',
      'Send Authorization: Bearer <API key>; ask the operator for a key.',
    );
  }

  if (!app.hasRequestDecorator('tenant')) app.decorateRequest('tenant', DEFAULT_TENANT);
  if (!app.hasRequestDecorator('streamGrant')) app.decorateRequest('streamGrant', null);
  if (!app.hasRequestDecorator('acceptedPrefix')) app.decorateRequest('acceptedPrefix', '');
  // Before the body is read: a caller without valid credentials learns nothing and costs little.
  app.addHook('onRequest', async (request, reply) => {
    // Over a connection cap: already answered 503 on the socket, which is closing.
    if (options.isRefused?.(request.raw.socket)) {
      reply.hijack();
      return;
    }
    const { prefix, path } = locate(request);
    request.acceptedPrefix = prefix;
    if (closing) {
      void reply.header('connection', 'close');
      throw new AcceptedError('SHUTTING_DOWN', 'This server is shutting down.', {
        fix: 'Send the request to another node, or again after the restart.',
      });
    }
    checkHeaders(request);
    if (PUBLIC_ROUTES.has(path)) return;
    try {
      const caller = await identify(
        request.raw,
        { kind: 'http', path, request: mode === 'plugin' ? request : null },
        (request.query as Record<string, unknown>).access_token,
      );
      request.tenant = caller.tenant;
      request.streamGrant = caller.grant;
      // No id, filter or cursor holds U+0000, and PostgreSQL text cannot: refused alike on
      // both stores (after authentication: a caller without credentials learns nothing).
      if (/%00|\0/i.test(request.url)) {
        throw malformed(
          'The URL holds U+0000 (%00).',
          'Remove the NUL character from the path and query.',
        );
      }
    } catch (error) {
      if (isAcceptedError(error) && error.code === 'UNAUTHENTICATED') {
        void reply.header(
          'www-authenticate',
          error.details?.challenge === 'invalid_token'
            ? 'Bearer realm="accepted", error="invalid_token"'
            : 'Bearer realm="accepted"',
        );
      }
      throw error;
    }
  });

  app.setErrorHandler((error, request, reply) => {
    const known = isAcceptedError(error)
      ? error
      : fromFrameworkError(error as { code?: string; statusCode?: number; message: string });
    if (known) {
      answer(reply, request, known);
      return;
    }
    const failure = error as { code?: string; message?: string };
    if (isClientGone(failure, request.raw.socket)) {
      // An aborted upload, a closed socket: nothing failed here, and nobody hears the answer.
      request.log.debug({ err: error }, 'client went away');
      answer(
        reply,
        request,
        malformed('The client closed the connection before the request was complete.'),
      );
      return;
    }
    request.log.error({ err: error }, 'unhandled error');
    answer(reply, request, toAnswerable(error).error);
  });

  // A plugin without a prefix shares the host's not-found handler: the host's 404 stays its own.
  if (mode !== 'plugin' || app.prefix !== '') {
    app.setNotFoundHandler((request, reply) => {
      const { path } = locate(request);
      // Under the handler, a path that is not the API's is the host's (see passOn).
      const allowed =
        mode !== 'handler' || isApiPath(path, options.webhooks !== undefined)
          ? ROUTE_METHODS.find(([pattern]) => pattern.test(path))?.[1]
          : undefined;
      if (allowed) {
        void reply.header('allow', allowed.join(', '));
        answer(
          reply,
          request,
          new AcceptedError('METHOD_NOT_ALLOWED', `${request.method} is not allowed on ${path}.`, {
            fix: `Use ${allowed.join(', ')}.`,
          }),
        );
        return;
      }
      if (options.passOn?.(request, reply)) return;
      answer(
        reply,
        request,
        new AcceptedError('ROUTE_NOT_FOUND', `No route ${request.method} ${path}.`, {
          fix: 'See /v1/openapi.json or docs/http.md for the routes.',
        }),
      );
    });
  }

  registerOperationRoutes(app, {
    accepted,
    maxWaitSeconds: options.maxWaitSeconds ?? 60,
    baseUrl,
    eventStream: (request, reply, id, after) =>
      operationEventStream(hub, request, reply, id, after),
    checkCallbackUrl: options.webhooks
      ? (url) => options.webhooks?.checkUrl(url, '/callbackUrl')
      : undefined,
  });
  if (options.webhooks) registerWebhookRoutes(app, options.webhooks);
  registerStreamRoutes(app, { accepted, hub, tokens });
  const upgrade = webSocketUpgrade({
    hub,
    checkCallbackUrl: options.webhooks
      ? (url) => options.webhooks?.checkUrl(url, '/operation/callbackUrl')
      : undefined,
    maxPayload: limits.bodyLimit,
    log: options.log,
    authenticate: (request, url) => {
      if (options.isRefused?.(request.socket)) {
        throw new AcceptedError('TOO_MANY_CONNECTIONS', 'This connection is over the cap.', {
          fix: 'Retry after a second, or reuse an open connection.',
        });
      }
      assertSingleValued(request.rawHeaders);
      return identify(
        request,
        { kind: 'websocket', path: url.pathname, request: null },
        url.searchParams.get('access_token') ?? undefined,
      );
    },
  });
  // Streams never end on their own: close them (saying why) so that the server can stop.
  app.addHook('preClose', (done) => {
    closing = true;
    upgrade.close();
    hub.close('SHUTTING_DOWN');
    done();
  });

  // The API descriptions, each built on first request from the same options, once per
  // prefix (an Express mount may be reached under more than one).
  const described = (prefix: string) => ({
    definitions: accepted.definitions,
    serverUrl: publicUrl !== undefined ? publicUrl + prefix : prefix === '' ? undefined : prefix,
    auth: apiKeys !== undefined || hook !== undefined,
    webhooks: options.webhooks !== undefined,
    limits,
  });
  for (const [path, build] of [
    ['/v1/openapi.json', openApiDocument],
    ['/v1/asyncapi.json', asyncApiDocument],
  ] as const) {
    const texts = new Map<string, string>();
    app.get(path, (request, reply) => {
      const prefix = request.acceptedPrefix;
      let text = texts.get(prefix);
      if (text === undefined) {
        text = JSON.stringify(build(described(prefix)));
        if (texts.size < 16) texts.set(prefix, text);
      }
      void reply.type('application/json; charset=utf-8').header('cache-control', 'no-cache');
      return reply.send(text);
    });
  }

  app.get('/healthz', () => ({ status: 'ok' }));

  app.get('/readyz', async (request, reply) => {
    try {
      await accepted.ready();
      return { status: 'ready', store: accepted.store.kind };
    } catch (error) {
      request.log.warn({ err: error }, 'not ready');
      answer(
        reply,
        request,
        isAcceptedError(error)
          ? error
          : new AcceptedError('STORE_UNAVAILABLE', 'The store does not answer.', {
              fix: 'Check the data directory or database; the server retries on its own.',
            }),
      );
      return reply;
    }
  });

  return { hub, upgrade };
}

/**
 * What every Fastify instance of the API starts with, served or embedded: the logger (a pino
 * logger to share, false for none, else info-level JSON), the body limit, no request logging,
 * and no Fastify 503 at close (our own onRequest hook answers 503 SHUTTING_DOWN as
 * problem+json instead).
 */
export function fastifyBase(
  logger: FastifyBaseLogger | false | undefined,
  bodyLimit: number,
): FastifyServerOptions & { loggerInstance?: FastifyBaseLogger } {
  return {
    ...(logger === false
      ? { logger: false }
      : logger
        ? { loggerInstance: logger }
        : { logger: { level: 'info' } }),
    bodyLimit,
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: false,
  };
}
