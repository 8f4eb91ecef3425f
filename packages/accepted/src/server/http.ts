import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { AcceptedError } from '../domain/errors.ts';
import { refuseUpgrade } from '../stream/ws.ts';
import {
  fastifyBase,
  installAccepted,
  malformed,
  sendProblem,
  type AcceptedHttpOptions,
} from './app.ts';
import {
  ConnectionLimiter,
  answerAndClose,
  httpLimits,
  rawProblemResponse,
} from '../http/limits.ts';
import { pathOf } from '../wire/mount.ts';
import { fromClientError, fromFrameworkError } from '../http/problem.ts';

export { noneMatch } from '../wire/headers.ts';
export { DEFAULT_HTTP_LIMITS, type HttpLimits } from '../http/limits.ts';
export type { AcceptedHttpOptions } from './app.ts';

/**
 * Options of `createHttpServer`: those of every way of serving the API, and the logger. The
 * limits (`bodyLimit`, `maxHeaderSize`, the timeouts and the connection caps) default to
 * `DEFAULT_HTTP_LIMITS`; docs/limits.md lists them all.
 */
export interface HttpOptions extends AcceptedHttpOptions {
  /** A pino logger to share with the engine, or false for none. Default: info level JSON. */
  logger?: FastifyBaseLogger | false;
}

/**
 * The HTTP API on a Fastify server of its own: operations (submit, monitor, long poll, list,
 * events, cancel, retry, delete), streams, webhooks, health, readiness and the API
 * descriptions. Every error is problem+json with a stable `code`. The routes are those of
 * `acceptedPlugin` (one core, `installAccepted`); this adds the server-level limits.
 */
export function createHttpServer(options: HttpOptions): FastifyInstance {
  const limits = httpLimits(options);
  const limiter = new ConnectionLimiter(limits);
  const app = Fastify({
    ...fastifyBase(options.logger, limits.bodyLimit),
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

  const { upgrade } = installAccepted(app, {
    ...options,
    mode: 'server',
    limits,
    log: app.log,
    locate: (request) => ({ prefix: '', path: pathOf(request.url) }),
    isRefused: (socket) => limiter.isRefused(socket),
  });
  const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (upgrade.handle(request, socket, head, '')) return;
    socket.on('error', () => socket.destroy());
    const path = pathOf(request.url ?? '/');
    refuseUpgrade(
      socket,
      new AcceptedError('ROUTE_NOT_FOUND', `No WebSocket at ${path}.`, { fix: 'Open /v1/ws.' }),
      path,
    );
  };
  app.server.on('upgrade', onUpgrade);
  app.addHook('preClose', (done) => {
    app.server.off('upgrade', onUpgrade);
    done();
  });

  return app;
}
