import type { Socket } from 'node:net';
import sjson from 'secure-json-parse';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import { AcceptedError, ERROR_CODES, isAcceptedError, toAnswerable } from '../domain/errors.ts';
import { checkJsonText } from '../domain/json.ts';
import { DEFAULT_TENANT, type Accepted } from '../engine/accepted.ts';
import { markDepthChecked } from '../engine/submit.ts';
import { StreamHub, streamSettings, type StreamOptions } from '../stream/hub.ts';
import { registerStreamRoutes } from '../stream/routes.ts';
import { StreamTokens, type StreamGrant } from '../stream/tokens.ts';
import { attachWebSocket } from '../stream/ws.ts';
import { registerWebhookRoutes } from '../webhooks/routes.ts';
import type { Webhooks } from '../webhooks/service.ts';
import { asyncApiDocument } from './asyncapi.ts';
import { bearerToken, type ApiKeys } from './auth.ts';
import { assertSingleValued } from './headers.ts';
import {
  ConnectionLimiter,
  answerAndClose,
  httpLimits,
  rawProblemResponse,
  type HttpLimits,
} from './limits.ts';
import { openApiDocument } from './openapi.ts';
import { registerOperationRoutes } from './operations.ts';
import {
  PROBLEM_CONTENT_TYPE,
  emptyJsonBody,
  fromClientError,
  fromFrameworkError,
  isClientGone,
  malformedJson,
  toProblem,
} from './problem.ts';

export { noneMatch } from './headers.ts';
export { DEFAULT_HTTP_LIMITS, type HttpLimits } from './limits.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /** The push channels' fan-out point (its `stats()` tell what streams hold). */
    streamHub: StreamHub;
  }
}

/**
 * Options of `createHttpServer`. The limits (`bodyLimit`, `maxHeaderSize`, the timeouts and
 * the connection caps) default to `DEFAULT_HTTP_LIMITS`; docs/limits.md lists them all.
 */
export interface HttpOptions extends Partial<HttpLimits> {
  accepted: Accepted;
  /**
   * API keys mapped to tenants. Without them every request is served as the `default`
   * tenant: local development only (the CLI refuses to bind a public address that way).
   */
  apiKeys?: ApiKeys;
  /** Longest long poll or `Prefer: wait` hold, in seconds. Default 60. */
  maxWaitSeconds?: number;
  /**
   * The API's absolute URL as clients reach it (behind a proxy: the public one), used in
   * `Operation-Location`. Default: from the request's protocol and Host header.
   */
  publicUrl?: string;
  /** A pino logger to share with the engine, or false for none. Default: info level JSON. */
  logger?: FastifyBaseLogger | false;
  /** Push channels (SSE, WebSocket) and stream tokens; see docs/streams.md. */
  streams?: StreamOptions;
  /**
   * Webhook delivery (`createWebhooks`): serves the webhook routes, and checks every
   * `callbackUrl` against its address policy at submit. Without it there are no webhook
   * routes and callbacks are stored but not sent.
   */
  webhooks?: Webhooks;
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

/** A Host header: a name or an IPv4 address, or an IPv6 address in brackets, and a port. */
const HOST = /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._~%!$&'()*+,;=-]{1,255})(?::\d{1,5})?$/;

function malformed(message: string, fix?: string): AcceptedError {
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

function sendProblem(reply: FastifyReply, request: FastifyRequest, error: AcceptedError) {
  // The path only: a query may hold a stream token, which must not be echoed.
  const problem = toProblem(error, request.url.split('?')[0]);
  const retryAfter = error.details?.retryAfter;
  if (typeof retryAfter === 'number') void reply.header('retry-after', String(retryAfter));
  else if (ERROR_CODES[error.code].status === 503) void reply.header('retry-after', '1');
  void reply.status(problem.status).type(PROBLEM_CONTENT_TYPE).send(problem);
}

/**
 * The HTTP API on Fastify: operations (submit, monitor, long poll, list, events, cancel,
 * retry, delete), health, readiness and the OpenAPI document. Every error is problem+json
 * with a stable `code`.
 */
export function createHttpServer(options: HttpOptions): FastifyInstance {
  const { accepted, apiKeys } = options;
  const limits = httpLimits(options);
  const limiter = new ConnectionLimiter(limits);
  let closing = false;
  const app = Fastify({
    ...(options.logger === false
      ? { logger: false }
      : options.logger
        ? { loggerInstance: options.logger }
        : { logger: { level: 'info' } }),
    bodyLimit: limits.bodyLimit,
    logController: new LogController({ disableRequestLogging: true }),
    // Our own onRequest hook answers 503 SHUTTING_DOWN as problem+json instead.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    // Node applies these while a request arrives (its headers, then its body), never while
    // it is answered: a long poll, an event stream or a WebSocket is not cut by them.
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    http: {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      maxHeaderSize: limits.maxHeaderSize,
      // How often Node looks for requests past their timeout.
      connectionsCheckingInterval: Math.max(
        5,
        Math.min(1000, Math.floor(limits.headersTimeoutMs / 4)),
      ),
      // Node's own refusal is an empty 400; checkHeaders answers problem+json instead.
      requireHostHeader: false,
    },
    // What Node's parser refuses (a malformed request, headers too large, a timeout) never
    // reaches a route: answer it here, as problem+json on the raw socket.
    clientErrorHandler: (error: Error & { code?: string }, socket: Socket) => {
      const problem = socket.destroyed ? null : fromClientError(error);
      if (problem === null) {
        app.log.debug({ err: error }, 'client went away');
        socket.destroy();
        return;
      }
      app.log.debug({ err: error, code: problem.code }, 'refused a request that did not parse');
      const inFlight = (socket as { _httpMessage?: { headersSent: boolean } | null })._httpMessage;
      if (inFlight) {
        // A request is being read (its body was too slow): answer unless an answer has begun,
        // and close at once, so that the request is never served.
        if (!inFlight.headersSent && socket.writable) socket.write(rawProblemResponse(problem));
        socket.destroy();
        return;
      }
      answerAndClose(socket, rawProblemResponse(problem));
    },
    frameworkErrors: (error, request, reply) => {
      sendProblem(
        reply,
        request,
        fromFrameworkError(error) ?? malformed('The request is not valid.', 'See docs/http.md.'),
      );
    },
  });
  limiter.attach(app.server);
  // Node drops headers past the 2,000th without a word; the header size bounds their number.
  app.server.maxHeadersCount = 0;
  // An `Expect` other than 100-continue: RFC 9110 §10.1.1 lets a server ignore it (Node would
  // answer an empty 417). Served as if it were not there.
  app.server.on('checkExpectation', (req, res) => app.server.emit('request', req, res));
  const publicUrl = options.publicUrl?.replace(/\/+$/, '');
  const baseUrl = (request: FastifyRequest) => publicUrl ?? `${request.protocol}://${request.host}`;

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
      if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
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
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, parseJson);
  app.addContentTypeParser(/^application\/[a-z0-9.+-]*\+json$/, { parseAs: 'buffer' }, parseJson);

  const tokens = new StreamTokens(options.streams?.tokenSecret);
  const hub = new StreamHub(accepted, streamSettings(options.streams));
  app.decorate('streamHub', hub);

  /**
   * Who is calling: an API key (`Authorization: Bearer`), or on stream routes a stream token
   * (`?access_token=`); without API keys (local development) anyone, as tenant `default`.
   */
  function authenticate(
    path: string,
    authorization: string | undefined,
    accessToken: unknown,
  ): { tenant: string; grant: StreamGrant | null } {
    const token = bearerToken(authorization);
    if (
      token === null &&
      typeof accessToken === 'string' &&
      STREAM_ROUTES.some((r) => r.test(path))
    ) {
      const grant = tokens.verify(accessToken);
      return { tenant: grant.tenant, grant };
    }
    if (!apiKeys) return { tenant: DEFAULT_TENANT, grant: null };
    const owner = token === null ? null : apiKeys.lookup(token);
    if (owner) return { tenant: owner.tenant, grant: null };
    throw new AcceptedError(
      'UNAUTHENTICATED',
      token === null ? 'This API needs an API key.' : 'The API key is not valid.',
      {
        fix: 'Send Authorization: Bearer <API key>; ask the operator for a key.',
        details: { challenge: token === null ? 'missing' : 'invalid_token' },
      },
    );
  }

  app.decorateRequest('tenant', DEFAULT_TENANT);
  app.decorateRequest('streamGrant', null);
  // Before the body is read: a caller without a valid key learns nothing and costs little.
  app.addHook('onRequest', async (request, reply) => {
    // Over a connection cap: already answered 503 on the socket, which is closing.
    if (limiter.isRefused(request.raw.socket)) {
      reply.hijack();
      return;
    }
    if (closing) {
      void reply.header('connection', 'close');
      throw new AcceptedError('SHUTTING_DOWN', 'This server is shutting down.', {
        fix: 'Send the request to another node, or again after the restart.',
      });
    }
    checkHeaders(request);
    const path = request.url.split('?')[0] ?? '';
    if (PUBLIC_ROUTES.has(path)) return;
    try {
      const caller = authenticate(
        path,
        request.headers.authorization,
        (request.query as Record<string, unknown>).access_token,
      );
      request.tenant = caller.tenant;
      request.streamGrant = caller.grant;
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
      sendProblem(reply, request, known);
      return;
    }
    const failure = error as { code?: string; message?: string };
    if (isClientGone(failure, request.raw.socket)) {
      // An aborted upload, a closed socket: nothing failed here, and nobody hears the answer.
      request.log.debug({ err: error }, 'client went away');
      sendProblem(
        reply,
        request,
        malformed('The client closed the connection before the request was complete.'),
      );
      return;
    }
    request.log.error({ err: error }, 'unhandled error');
    sendProblem(reply, request, toAnswerable(error).error);
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    const allowed = ROUTE_METHODS.find(([pattern]) => pattern.test(path))?.[1];
    if (allowed) {
      void reply.header('allow', allowed.join(', '));
      sendProblem(
        reply,
        request,
        new AcceptedError('METHOD_NOT_ALLOWED', `${request.method} is not allowed on ${path}.`, {
          fix: `Use ${allowed.join(', ')}.`,
        }),
      );
      return;
    }
    sendProblem(
      reply,
      request,
      new AcceptedError('ROUTE_NOT_FOUND', `No route ${request.method} ${path}.`, {
        fix: 'See /v1/openapi.json or docs/http.md for the routes.',
      }),
    );
  });

  registerOperationRoutes(app, {
    accepted,
    maxWaitSeconds: options.maxWaitSeconds ?? 60,
    baseUrl,
    hub,
    checkCallbackUrl: options.webhooks
      ? (url) => options.webhooks?.checkUrl(url, '/callbackUrl')
      : undefined,
  });
  if (options.webhooks) registerWebhookRoutes(app, options.webhooks);
  registerStreamRoutes(app, { accepted, hub, tokens });
  const detachWebSocket = attachWebSocket(app.server, {
    hub,
    checkCallbackUrl: options.webhooks
      ? (url) => options.webhooks?.checkUrl(url, '/operation/callbackUrl')
      : undefined,
    maxPayload: limits.bodyLimit,
    log: app.log,
    authenticate: (request, url) => {
      if (limiter.isRefused(request.socket)) {
        throw new AcceptedError('TOO_MANY_CONNECTIONS', 'This connection is over the cap.', {
          fix: 'Retry after a second, or reuse an open connection.',
        });
      }
      assertSingleValued(request.rawHeaders);
      return authenticate(
        url.pathname,
        request.headers.authorization,
        url.searchParams.get('access_token') ?? undefined,
      );
    },
  });
  // Streams never end on their own: close them (saying why) so that the server can stop.
  app.addHook('preClose', (done) => {
    closing = true;
    detachWebSocket();
    hub.close('SHUTTING_DOWN');
    done();
  });

  // The API descriptions, each built once on first request from the same options.
  const described = {
    definitions: accepted.definitions,
    serverUrl: publicUrl,
    auth: apiKeys !== undefined,
    webhooks: options.webhooks !== undefined,
    limits,
  };
  for (const [path, build] of [
    ['/v1/openapi.json', openApiDocument],
    ['/v1/asyncapi.json', asyncApiDocument],
  ] as const) {
    let text: string | null = null;
    app.get(path, (_request, reply) => {
      text ??= JSON.stringify(build(described));
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
      sendProblem(
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

  return app;
}
