import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { operationNotFound as notFound } from '../domain/errors.ts';
import { isTerminal, type Operation, type OperationStatus } from '../domain/operation.ts';
import type { Accepted, IdempotentSubmit } from '../engine/accepted.ts';
import {
  ifMatchVersions,
  knownVersion,
  noneMatch,
  parseIdempotencyKey,
  parsePrefer,
  parseTraceparent,
  preferredReturn,
  preferredWait,
} from '../wire/headers.ts';
import { etagOf, operationPath, retryAfterOf, toWireEvent } from '../wire/monitor.ts';
import { monitorAt } from '../wire/mount.ts';
import { queryValidator } from '../wire/validate.ts';
import { EVENTS_QUERY_SCHEMA, LIST_QUERY_SCHEMA, MONITOR_QUERY_SCHEMA } from '../wire/schemas.ts';
import { assertOperationScope, labelPairs, wantsEventStream } from '../wire/request.ts';

export interface OperationRoutesOptions {
  accepted: Accepted;
  /** Longest hold of a long poll or of a `Prefer: wait` submit, in seconds. */
  maxWaitSeconds: number;
  /**
   * The absolute base URL of this API as clients see it, its mount prefix included (for
   * `Operation-Location`).
   */
  baseUrl: (request: FastifyRequest) => string;
  /**
   * Serves the events route as a stream when the client asks for `text/event-stream` (the
   * stream edge's, joined in by the composition root); without it the route answers JSON.
   */
  eventStream?: (
    request: FastifyRequest,
    reply: FastifyReply,
    id: string,
    after: number | undefined,
  ) => Promise<unknown>;
  /** Refuses a callbackUrl deliveries could not be sent to (URL_NOT_ALLOWED). */
  checkCallbackUrl?: (url: string) => void;
}

interface IdParams {
  id: string;
}

const parseMonitorQuery = queryValidator<{ wait?: number }>(MONITOR_QUERY_SCHEMA);
const parseListQuery = queryValidator<{
  status?: OperationStatus[];
  type?: string;
  label?: string[];
  limit: number;
  cursor?: string;
}>(LIST_QUERY_SCHEMA);
const parseEventsQuery = queryValidator<{ after?: number; limit: number }>(EVENTS_QUERY_SCHEMA);

/** An AbortSignal that fires if the client goes away before its answer is sent. */
function whileConnected(reply: FastifyReply): { signal: AbortSignal; done: () => void } {
  const controller = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableFinished) controller.abort();
  };
  // Gone already (before the hold began): 'close' will not come again.
  if (reply.raw.socket === null || reply.raw.socket.destroyed) controller.abort();
  reply.raw.once('close', onClose);
  return { signal: controller.signal, done: () => reply.raw.off('close', onClose) };
}

/**
 * The operations resource: submit (with `Prefer` and `Idempotency-Key`), the status monitor
 * (with conditional GET and long polling), list, events, cancel, retry and delete.
 */
export function registerOperationRoutes(app: FastifyInstance, options: OperationRoutesOptions) {
  const { accepted, maxWaitSeconds } = options;

  /** Holds the request until the operation changes (or ends), for at most `timeoutMs`. */
  async function hold(
    request: FastifyRequest,
    reply: FastifyReply,
    id: string,
    afterVersion: number | undefined,
    timeoutMs: number,
  ): Promise<Operation> {
    const connection = whileConnected(reply);
    try {
      return await accepted.wait(id, {
        tenant: request.tenant,
        afterVersion,
        timeoutMs,
        signal: connection.signal,
      });
    } finally {
      connection.done();
    }
  }

  async function getOwn(request: FastifyRequest, id: string): Promise<Operation> {
    const operation = await accepted.get(id, { tenant: request.tenant });
    if (!operation) throw notFound(id);
    return operation;
  }

  /** The caller's tenant and the versions its If-Match allows, for cancel, retry, delete. */
  const conditional = (request: FastifyRequest) => ({
    tenant: request.tenant,
    ifVersion: ifMatchVersions(request.headers['if-match']),
  });

  /** ETag, no caching, and Retry-After while the operation is in progress. */
  function stateHeaders(reply: FastifyReply, operation: Operation): void {
    void reply.header('etag', etagOf(operation)).header('cache-control', 'no-cache');
    const retryAfter = retryAfterOf(operation);
    if (retryAfter !== null) void reply.header('retry-after', retryAfter);
  }

  /**
   * Where a poller goes next: `Operation-Location` and `Location`, both the monitor's absolute
   * URL (a generic LRO poller's final GET follows `Location`; it must lead to the monitor).
   */
  function pollingHeaders(request: FastifyRequest, reply: FastifyReply, operation: Operation) {
    const url = `${options.baseUrl(request)}${operationPath(operation.id)}`;
    void reply.header('location', url).header('operation-location', url);
  }

  app.post('/v1/operations', async (request, reply) => {
    const preferences = parsePrefer(request.headers.prefer);
    const waitSeconds = preferredWait(preferences);
    const holdMs = waitSeconds ? Math.min(waitSeconds, maxWaitSeconds) * 1000 : 0;
    const key = parseIdempotencyKey(request.headers['idempotency-key']);
    // A traceparent that is not valid W3C Trace Context is ignored, as the spec says.
    const traceparent = parseTraceparent(request.headers.traceparent);
    const tenant = request.tenant;
    const callbackUrl = (request.body as { callbackUrl?: unknown } | null)?.callbackUrl;
    if (typeof callbackUrl === 'string') options.checkCallbackUrl?.(callbackUrl);

    let submitted: IdempotentSubmit;
    if (key === undefined) {
      const operation = await accepted.submitRequest(request.body, { tenant, traceparent });
      submitted = { replayed: false, operation };
    } else {
      submitted = await accepted.submitIdempotent(request.body, {
        tenant,
        traceparent,
        key,
        holdMs,
      });
    }

    let operation = submitted.operation;
    let status = 202;
    const applied: string[] = [];
    if (submitted.replayed) {
      status = submitted.status;
      void reply.header('idempotent-replayed', 'true');
    } else if (holdMs > 0) {
      applied.push(`wait=${holdMs / 1000}`);
      try {
        operation = await hold(request, reply, operation.id, undefined, holdMs);
        status = isTerminal(operation.status) ? 200 : 202;
      } finally {
        if (key !== undefined) await accepted.settleIdempotencyKey(key, status, { tenant });
      }
    } else if (preferences.has('respond-async')) {
      applied.push('respond-async');
    }

    const representation = preferredReturn(preferences);
    if (representation) applied.push(`return=${representation}`);
    void reply.header('vary', 'Prefer');
    if (applied.length > 0) void reply.header('preference-applied', applied.join(', '));
    stateHeaders(reply, operation);
    if (status === 202) {
      pollingHeaders(request, reply, operation);
    } else {
      // Final already: no polling headers, so that generic pollers take this answer as done.
      void reply.header('content-location', request.acceptedPrefix + operationPath(operation.id));
    }
    void reply.status(status);
    return representation === 'minimal'
      ? reply.send()
      : monitorAt(operation, request.acceptedPrefix);
  });

  app.get('/v1/operations', async (request, reply) => {
    const query = parseListQuery(request.query);
    const labels = labelPairs(query.label);
    const page = await accepted.list({
      tenant: request.tenant,
      status: query.status,
      type: query.type,
      labels,
      limit: query.limit,
      cursor: query.cursor,
    });
    if (page.nextCursor !== null) {
      // The query as the client wrote it (repeated parameters stay repeated), new cursor.
      const next = new URLSearchParams(request.url.slice(request.url.indexOf('?') + 1));
      next.set('cursor', page.nextCursor);
      void reply.header(
        'link',
        `<${request.acceptedPrefix}/v1/operations?${next.toString()}>; rel="next"`,
      );
    }
    void reply.header('cache-control', 'no-cache');
    return {
      items: page.items.map((item) => monitorAt(item, request.acceptedPrefix)),
      nextCursor: page.nextCursor,
    };
  });

  app.get<{ Params: IdParams }>('/v1/operations/:id', async (request, reply) => {
    const query = parseMonitorQuery(request.query);
    const preferences = parsePrefer(request.headers.prefer);
    const waitSeconds = preferredWait(preferences) ?? query.wait ?? 0;
    const ifNoneMatch = request.headers['if-none-match'];
    // The durable state (`snapshot`), as `hold` returns: an ETag never names a version that
    // the log does not hold yet, nor one a crash could take back.
    const current = await accepted.snapshot(request.params.id, { tenant: request.tenant });
    if (!current) throw notFound(request.params.id);
    let operation = current.operation;
    void reply.header('vary', 'Prefer');
    if (waitSeconds > 0) {
      const seconds = Math.min(waitSeconds, maxWaitSeconds);
      void reply.header('preference-applied', `wait=${seconds}`);
      // Wait past the version the client has (If-None-Match), else past the current one.
      const base = Math.min(knownVersion(ifNoneMatch) ?? operation.version, operation.version);
      if (!isTerminal(operation.status) && operation.version <= base) {
        // Jitter (up to 1/16, as Consul does) spreads the re-polls of many parked clients.
        const ms = seconds * 1000 * (1 + Math.random() / 16);
        operation = await hold(request, reply, operation.id, base, ms);
      }
    }
    stateHeaders(reply, operation);
    if (noneMatch(ifNoneMatch, etagOf(operation))) return reply.status(304).send();
    return monitorAt(operation, request.acceptedPrefix);
  });

  app.get<{ Params: IdParams }>('/v1/operations/:id/events', async (request, reply) => {
    const { id } = request.params;
    const query = parseEventsQuery(request.query);
    if (options.eventStream && wantsEventStream(request)) {
      return options.eventStream(request, reply, id, query.after);
    }
    assertOperationScope(request, id);
    await getOwn(request, id);
    const after = query.after ?? 0;
    const events = await accepted.readEvents({
      tenant: request.tenant,
      operationId: id,
      after,
      limit: query.limit,
    });
    void reply.header('cache-control', 'no-cache');
    return { events: events.map(toWireEvent), nextAfter: events.at(-1)?.seq ?? after };
  });

  type Action = (request: FastifyRequest, reply: FastifyReply, id: string) => Promise<unknown>;
  /** Custom methods (AIP-136): `POST /v1/operations/{id}:cancel` and `{id}:retry`. */
  const actions = new Map<string, Action>([
    [
      'cancel',
      async (request, reply, id) => {
        const operation = await accepted.cancel(id, conditional(request));
        stateHeaders(reply, operation);
        if (isTerminal(operation.status)) return monitorAt(operation, request.acceptedPrefix);
        // Running: cancellation is requested; the handler is aborted and the end comes later.
        pollingHeaders(request, reply, operation);
        return reply.status(202).send(monitorAt(operation, request.acceptedPrefix));
      },
    ],
    [
      'retry',
      async (request, reply, id) => {
        const operation = await accepted.retry(id, conditional(request));
        stateHeaders(reply, operation);
        pollingHeaders(request, reply, operation);
        return reply.status(202).send(monitorAt(operation, request.acceptedPrefix));
      },
    ],
  ]);

  // One route for every action: the router cannot tell `{id}:cancel` from `{id}:retry`. Any
  // other POST here goes to the not-found handler, which answers 405 (POST on an operation)
  // or 404 (an unknown action) from the one table of routes.
  app.post<{ Params: { target: string } }>('/v1/operations/:target', async (request, reply) => {
    const { target } = request.params;
    const colon = target.lastIndexOf(':');
    const action = colon === -1 ? undefined : actions.get(target.slice(colon + 1));
    if (!action) return reply.callNotFound();
    return action(request, reply, target.slice(0, colon));
  });

  app.delete<{ Params: IdParams }>('/v1/operations/:id', async (request, reply) => {
    await accepted.delete(request.params.id, conditional(request));
    return reply.status(204).send();
  });
}
