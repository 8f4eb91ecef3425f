import sjson from 'secure-json-parse';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import { AcceptedError, isAcceptedError } from '../domain/errors.ts';
import type { Accepted } from '../engine/accepted.ts';
import { etagOf, operationPath, retryAfterOf, toMonitor, toWireEvent } from './monitor.ts';
import {
  PROBLEM_CONTENT_TYPE,
  emptyJsonBody,
  fromFrameworkError,
  malformedJson,
  toProblem,
} from './problem.ts';

export interface HttpOptions {
  accepted: Accepted;
  /** Largest request body. Default 1 MiB. */
  bodyLimit?: number;
  /** A pino logger to share with the engine, or false for none. Default: info level JSON. */
  logger?: FastifyBaseLogger | false;
}

interface IdParams {
  id: string;
}

/** Does any entity tag in an If-None-Match value match `etag` (weak comparison)? */
export function noneMatch(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  const opaque = etag.replace(/^W\//, '');
  return header
    .split(',')
    .map((tag) => tag.trim())
    .some((tag) => tag === '*' || tag.replace(/^W\//, '') === opaque);
}

function absoluteUrl(request: FastifyRequest, path: string): string {
  return `${request.protocol}://${request.host}${path}`;
}

function sendProblem(reply: FastifyReply, request: FastifyRequest, error: AcceptedError) {
  const problem = toProblem(error, request.url);
  void reply.status(problem.status).type(PROBLEM_CONTENT_TYPE).send(problem);
}

/**
 * The HTTP API on Fastify. This surface: submit, the status monitor, an operation's
 * events, health and readiness. Every error is problem+json with a stable `code`.
 */
export function createHttpServer(options: HttpOptions): FastifyInstance {
  const { accepted } = options;
  const app = Fastify({
    ...(options.logger === false
      ? { logger: false }
      : options.logger
        ? { loggerInstance: options.logger }
        : { logger: { level: 'info' } }),
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });

  // Only JSON bodies; a parse error names the position, and prototype poisoning is refused.
  app.removeAllContentTypeParsers();
  const parseJson = (
    _request: unknown,
    body: string | Buffer,
    done: (err: Error | null, value?: unknown) => void,
  ) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.length === 0) {
      done(emptyJsonBody());
      return;
    }
    try {
      done(null, sjson.parse(text, null, { protoAction: 'error', constructorAction: 'error' }));
    } catch (error) {
      done(malformedJson(error));
    }
  };
  app.addContentTypeParser('application/json', { parseAs: 'string' }, parseJson);
  app.addContentTypeParser(/^application\/[a-z0-9.+-]*\+json$/, { parseAs: 'string' }, parseJson);

  app.setErrorHandler((error, request, reply) => {
    const known = isAcceptedError(error)
      ? error
      : fromFrameworkError(error as { code?: string; statusCode?: number; message: string });
    if (known) {
      sendProblem(reply, request, known);
      return;
    }
    request.log.error({ err: error }, 'unhandled error');
    sendProblem(
      reply,
      request,
      new AcceptedError('INTERNAL', 'The server failed to handle this request.', {
        fix: 'Retry later; if it persists, report it with the time of the request.',
      }),
    );
  });

  app.setNotFoundHandler((request, reply) => {
    sendProblem(
      reply,
      request,
      new AcceptedError(
        'ROUTE_NOT_FOUND',
        `No route ${request.method} ${request.url.split('?')[0] ?? ''}.`,
        {
          fix: 'See /v1/openapi.json (next release) or docs/http.md for the routes.',
        },
      ),
    );
  });

  app.post('/v1/operations', async (request, reply) => {
    const operation = await accepted.submitRequest(request.body, {
      traceparent:
        typeof request.headers.traceparent === 'string' ? request.headers.traceparent : undefined,
    });
    const path = operationPath(operation.id);
    void reply
      .status(202)
      .header('location', path)
      .header('operation-location', absoluteUrl(request, path))
      .header('retry-after', '1')
      .header('etag', etagOf(operation));
    return toMonitor(operation);
  });

  app.get<{ Params: IdParams }>('/v1/operations/:id', async (request, reply) => {
    const operation = await accepted.get(request.params.id);
    if (!operation) {
      throw new AcceptedError('OPERATION_NOT_FOUND', `No operation ${request.params.id}.`, {
        fix: 'Check the id; finished operations are removed after their retention period.',
      });
    }
    const etag = etagOf(operation);
    void reply.header('etag', etag).header('cache-control', 'no-cache');
    const retryAfter = retryAfterOf(operation);
    if (retryAfter !== null) void reply.header('retry-after', retryAfter);
    if (noneMatch(request.headers['if-none-match'], etag)) {
      return reply.status(304).send();
    }
    return toMonitor(operation);
  });

  app.get<{ Params: IdParams; Querystring: { after?: string; limit?: string } }>(
    '/v1/operations/:id/events',
    async (request) => {
      const { id } = request.params;
      if (!(await accepted.get(id))) {
        throw new AcceptedError('OPERATION_NOT_FOUND', `No operation ${id}.`);
      }
      const after = Number(request.query.after ?? 0);
      const limit = Number(request.query.limit ?? 100);
      if (!Number.isSafeInteger(after) || after < 0) {
        throw new AcceptedError('VALIDATION_FAILED', 'after must be a whole number >= 0.', {
          fields: [{ field: '/after', message: 'must be a whole number >= 0' }],
        });
      }
      if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000) {
        throw new AcceptedError(
          'VALIDATION_FAILED',
          'limit must be a whole number from 1 to 1000.',
          {
            fields: [{ field: '/limit', message: 'must be from 1 to 1000' }],
          },
        );
      }
      const events = [];
      for await (const event of accepted.events({ operationId: id, after, follow: false })) {
        events.push(toWireEvent(event));
        if (events.length === limit) break;
      }
      const last = events[events.length - 1];
      return { events, nextAfter: last ? last.seq : after };
    },
  );

  app.get('/healthz', () => ({ status: 'ok' }));

  app.get('/readyz', async (request, reply) => {
    try {
      await accepted.ready();
      return { status: 'ready', store: accepted.store.kind };
    } catch (error) {
      request.log.warn({ err: error }, 'not ready');
      return reply
        .status(503)
        .type(PROBLEM_CONTENT_TYPE)
        .send(
          toProblem(
            isAcceptedError(error)
              ? error
              : new AcceptedError('STORE_UNAVAILABLE', 'The store does not answer.', {
                  fix: 'Check the data directory or database; the server retries on its own.',
                }),
            request.url,
          ),
        );
    }
  });

  return app;
}
