import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyPluginCallback,
} from 'fastify';
import { AcceptedError, toAnswerable } from '../domain/errors.ts';
import { refuseUpgrade } from '../stream/ws.ts';
import {
  fastifyBase,
  installAccepted,
  isApiPath,
  malformed,
  sendProblem,
  type AcceptedCore,
  type AcceptedHttpOptions,
} from './app.ts';
import { httpLimits } from '../http/limits.ts';
import { insidePrefix, normalizePrefix, pathOf } from '../wire/mount.ts';
import { PROBLEM_CONTENT_TYPE, toProblem } from '../wire/problem.ts';
import { fromFrameworkError } from '../http/problem.ts';

/**
 * Options of `acceptedPlugin`. Register it with Fastify's own `prefix` option
 * (`app.register(acceptedPlugin, { prefix: '/async', accepted })`): every route, link and
 * Location is then under it. The host's logger is used.
 */
export interface AcceptedPluginOptions extends AcceptedHttpOptions {
  prefix?: string;
}

/** Options of `createAcceptedHandler`. */
export interface AcceptedHandlerOptions extends AcceptedHttpOptions {
  /**
   * The path the API is served under, as clients see it (`/async`). Requests outside it are
   * passed on (`next()`), or answered 404 without `next`. Under Express, mount the handler at
   * this path or at the root (`app.use('/async', handler.handle)` or `app.use(handler.handle)`):
   * the path is taken from `req.baseUrl` and `req.url` together. Default: Express's mount path
   * (`req.baseUrl`), else the root. WebSocket upgrades never pass through Express: they are
   * taken at `<prefix>/v1/ws`, so give `prefix` when the API is mounted under a path.
   */
  prefix?: string;
  /** A pino logger (such as the host's), or false for none. Default: info level JSON. */
  logger?: FastifyBaseLogger | false;
}

/**
 * The API as a `(req, res)` handler and an `upgrade` handler, for Express and node:http. Every
 * member is a plain function: pass `handler.handle` and `handler.upgrade` as they are.
 */
export interface AcceptedHandler {
  /**
   * Serves a request for one of the API's routes. Any other request goes to `next()` when it
   * is given (Express middleware: the host's routes and 404 stay its own), else is answered
   * `404 ROUTE_NOT_FOUND` as problem+json. Works whether or not a body parser read the body
   * before (see docs/embedding.md).
   */
  handle: (req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void) => void;
  /**
   * Takes a WebSocket upgrade of `<prefix>/v1/ws`; `server.on('upgrade', handler.upgrade)`.
   * Any other upgrade goes to `next()` when it is given, else is refused `404` and closed.
   */
  upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer, next?: () => void) => void;
  /** Resolves once the routes are ready (the first request waits for it anyway). */
  ready: () => Promise<void>;
  /**
   * Stops: ends open streams (SSE, WebSocket) with `SHUTTING_DOWN`, and answers new requests
   * `503`. Call it before closing the host server, so that no stream holds it open.
   */
  close: () => Promise<void>;
  /** The Fastify instance that serves the routes (not listening on any port). */
  readonly fastify: FastifyInstance;
}

/** Where a request handed to `handle` is mounted, and how to give it back to the host. */
interface Mounted {
  prefix: string;
  /** The body a host's body parser read, to parse in place of the (read) stream. */
  body: Buffer | undefined;
  /** Gives the request back to the host (Express's `next`), its URL as the host had it. */
  passOn: (() => void) | undefined;
}

/** What Express and its body parsers put on a request. */
interface ExpressRequest extends IncomingMessage {
  baseUrl?: unknown;
  body?: unknown;
  rawBody?: unknown;
}

/**
 * The body as the client sent it, when something read the request stream before: a raw body
 * a parser kept (`req.rawBody`, `express.raw()`'s Buffer, `express.text()`'s string), else
 * the parsed value made JSON again (`express.json()`), which the same checks then parse.
 */
function consumedBody(req: ExpressRequest): Buffer | undefined {
  if (!req.readableDidRead && !req.readableEnded) return undefined;
  for (const body of [req.rawBody, req.body]) {
    if (Buffer.isBuffer(body)) return body;
    if (typeof body === 'string') return Buffer.from(body, 'utf8');
  }
  if (req.body === undefined) return Buffer.alloc(0);
  let json: unknown;
  try {
    json = JSON.stringify(req.body);
  } catch {
    throw malformed(
      'The body a parser read before this API cannot be written as JSON again.',
      'Mount the API before the body parser, or let the parser keep req.rawBody.',
    );
  }
  return Buffer.from(typeof json === 'string' ? json : '', 'utf8');
}

/**
 * The Fastify plugin: every route of the API (operations, events, SSE, long poll, WebSocket,
 * webhooks, the API descriptions, the probes) on the host's Fastify, encapsulated (its body
 * parser, hooks and error handler apply to its routes only), under Fastify's `prefix`.
 * WebSocket upgrades are taken from the host's server at `<prefix>/v1/ws`.
 */
export const acceptedPlugin: FastifyPluginCallback<AcceptedPluginOptions> = (
  instance,
  options,
  done,
) => {
  const prefix = instance.prefix;
  const core = installAccepted(instance, {
    ...options,
    mode: 'plugin',
    limits: httpLimits(options),
    log: instance.log,
    locate: (request) => {
      const path = pathOf(request.url);
      return { prefix, path: path.startsWith(prefix) ? path.slice(prefix.length) : path };
    },
  });
  const server = instance.server;
  const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (core.upgrade.handle(request, socket, head, prefix)) return;
    // Someone else may take it; if nobody listens but us, refuse it rather than let it hang.
    if (server.listenerCount('upgrade') > 1) return;
    refuseNotFound(socket, request);
  };
  server.on('upgrade', onUpgrade);
  instance.addHook('onClose', (_instance, done) => {
    server.off('upgrade', onUpgrade);
    done();
  });
  done();
};
Object.assign(acceptedPlugin, { [Symbol.for('fastify.display-name')]: 'accepted' });

function refuseNotFound(socket: Duplex, request: IncomingMessage): void {
  socket.on('error', () => socket.destroy());
  const path = pathOf(request.url ?? '/');
  refuseUpgrade(
    socket,
    new AcceptedError('ROUTE_NOT_FOUND', `No WebSocket at ${path}.`, {
      fix: 'Open <prefix>/v1/ws.',
    }),
    path,
  );
}

/** Answers 404 ROUTE_NOT_FOUND as problem+json, for a request outside the API (no `next`). */
function answerNotFound(req: IncomingMessage, res: ServerResponse, path: string): void {
  const problem = toProblem(
    new AcceptedError('ROUTE_NOT_FOUND', `No route ${req.method ?? 'GET'} ${path}.`, {
      fix: 'See <prefix>/v1/openapi.json for the routes.',
    }),
    path,
  );
  const body = JSON.stringify(problem);
  res.writeHead(404, {
    'content-type': `${PROBLEM_CONTENT_TYPE}; charset=utf-8`,
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

/**
 * The API as a `(req, res, next?)` handler and an `upgrade(req, socket, head)` handler, for
 * Express (`app.use('/async', handler.handle)`) and node:http. Built on the same core as
 * `acceptedPlugin`, on a Fastify instance of its own that listens on nothing.
 */
export function createAcceptedHandler(options: AcceptedHandlerOptions): AcceptedHandler {
  const fixedPrefix = options.prefix === undefined ? undefined : normalizePrefix(options.prefix);
  const limits = httpLimits(options);
  const webhooks = options.webhooks !== undefined;
  const mounted = new WeakMap<IncomingMessage, Mounted>();
  const app = Fastify({
    ...fastifyBase(options.logger, limits.bodyLimit),
    frameworkErrors: (error, request, reply) => {
      sendProblem(
        reply,
        request,
        fromFrameworkError(error) ?? malformed('The request is not valid.', 'See docs/http.md.'),
      );
    },
  });
  const core: AcceptedCore = installAccepted(app, {
    ...options,
    mode: 'handler',
    limits,
    log: app.log,
    locate: (request) => ({
      prefix: mounted.get(request.raw)?.prefix ?? '',
      path: pathOf(request.url),
    }),
    passOn: (request, reply) => {
      const passOn = mounted.get(request.raw)?.passOn;
      if (!passOn) return false;
      reply.hijack();
      passOn();
      return true;
    },
    consumedBody: (raw) => mounted.get(raw)?.body,
  });
  let readiness: Promise<void> | null = null;
  let isReady = false;
  const ready = () =>
    (readiness ??= Promise.resolve(app.ready()).then(() => {
      isReady = true;
    }));

  function handle(req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void) {
    const express = req as ExpressRequest;
    const url = req.url ?? '/';
    const mount = typeof express.baseUrl === 'string' ? express.baseUrl : '';
    const prefix = fixedPrefix ?? mount;
    const inside = insidePrefix(mount + url, prefix);
    if (inside === null || !isApiPath(pathOf(inside), webhooks)) {
      if (next) next();
      else answerNotFound(req, res, pathOf(mount + url));
      return;
    }
    let body: Buffer | undefined;
    try {
      body = consumedBody(express);
    } catch (error) {
      const problem = toProblem(toAnswerable(error).error, prefix + pathOf(inside));
      const text = JSON.stringify(problem);
      res.writeHead(problem.status, {
        'content-type': `${PROBLEM_CONTENT_TYPE}; charset=utf-8`,
        'content-length': Buffer.byteLength(text),
      });
      res.end(text);
      return;
    }
    mounted.set(req, {
      prefix,
      body,
      passOn: next
        ? () => {
            req.url = url;
            next();
          }
        : undefined,
    });
    req.url = inside;
    // The host's own logging at the end of the answer sees the URL it knew.
    res.once('close', () => {
      if (req.url === inside) req.url = url;
    });
    if (isReady) {
      app.routing(req, res);
      return;
    }
    ready().then(
      () => app.routing(req, res),
      (error: unknown) => {
        app.log.error({ err: error }, 'the API failed to start');
        if (next) next(error);
        else res.destroy();
      },
    );
  }

  function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, next?: () => void) {
    if (core.upgrade.handle(req, socket, head, fixedPrefix ?? '')) return;
    if (next) next();
    else refuseNotFound(socket, req);
  }

  return {
    handle,
    upgrade,
    ready,
    close: async () => {
      await app.close();
    },
    fastify: app,
  };
}
