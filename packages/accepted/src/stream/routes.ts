import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AcceptedError, operationNotFound as notFound } from '../domain/errors.ts';
import type { EventType } from '../domain/events.ts';
import { isTerminal } from '../domain/operation.ts';
import type { Accepted } from '../engine/accepted.ts';
import { toWireEvent } from '../wire/monitor.ts';
import { bodyValidator, queryValidator } from '../wire/validate.ts';
import {
  STREAM_TOKEN_REQUEST_SCHEMA,
  TENANT_EVENTS_QUERY_SCHEMA,
  WS_QUERY_SCHEMA,
} from '../wire/schemas.ts';
import type { StreamHub } from './hub.ts';
import { openEventStream } from './sse.ts';
import { assertOperationScope, labelPairs, wantsEventStream } from '../wire/request.ts';
import type { StreamTokens } from './tokens.ts';

export interface StreamRoutesOptions {
  accepted: Accepted;
  hub: StreamHub;
  tokens: StreamTokens;
}

const parseTenantEventsQuery = queryValidator<{
  type?: EventType[];
  operationType?: string[];
  operation?: string[];
  label?: string[];
  after?: number;
  limit: number;
}>(TENANT_EVENTS_QUERY_SCHEMA);
const parseWsQuery = queryValidator<{ access_token?: string }>(WS_QUERY_SCHEMA);
const parseTokenRequest = bodyValidator<{ operation?: string; ttlSeconds: number }>(
  STREAM_TOKEN_REQUEST_SCHEMA,
);

/** The cursor in a `Last-Event-ID` header (what an EventSource sends when it reconnects). */
export function lastEventId(request: FastifyRequest): number | undefined {
  const header = request.headers['last-event-id'];
  if (header === undefined || header === '') return undefined;
  const text = Array.isArray(header) ? header[0] : header;
  const seq = Number(text);
  if (!/^\d{1,15}$/.test(text ?? '') || !Number.isSafeInteger(seq)) {
    throw new AcceptedError('INVALID_HEADER', 'Last-Event-ID must be the seq of an event.', {
      fields: [{ field: 'Last-Event-ID', message: 'must be a whole number' }],
      fix: 'Send back the id of the last event received, or omit the header to start afresh.',
    });
  }
  return seq;
}

/**
 * `GET /v1/operations/{id}/events` with `Accept: text/event-stream`: the snapshot (without a
 * cursor) or the events after the cursor, then live events, ending after a terminal event;
 * `204` when the operation is over and the client has every event.
 */
export async function operationEventStream(
  hub: StreamHub,
  request: FastifyRequest,
  reply: FastifyReply,
  id: string,
  after: number | undefined,
): Promise<FastifyReply> {
  assertOperationScope(request, id);
  const { accepted } = hub;
  const tenant = request.tenant;
  const cursor = lastEventId(request) ?? after;
  // The operation and the seq of the last event it shows, read together: the snapshot's id
  // is that seq, so a resume from it neither repeats what the snapshot showed nor skips more.
  const snapshot = await accepted.snapshot(id, { tenant });
  if (!snapshot) throw notFound(id);
  const selection = { tenant, operationId: id, after: cursor ?? snapshot.seq };
  if (cursor === undefined) {
    return openEventStream(hub, request, reply, { selection, operationId: id, snapshot });
  }
  // Over, and the client has it all: 204 tells an EventSource to stop reconnecting.
  if (isTerminal(snapshot.operation.status) && cursor >= snapshot.seq) {
    return reply.status(204).send();
  }
  return openEventStream(hub, request, reply, { selection, operationId: id });
}

/** Stream tokens, the tenant's event log (JSON page or stream), and the WebSocket route. */
export function registerStreamRoutes(app: FastifyInstance, options: StreamRoutesOptions): void {
  const { accepted, hub, tokens } = options;

  app.post('/v1/stream-tokens', async (request, reply) => {
    const body = parseTokenRequest(request.body);
    const tenant = request.tenant;
    if (body.operation !== undefined && !(await accepted.get(body.operation, { tenant }))) {
      throw notFound(body.operation);
    }
    const minted = tokens.mint({ tenant, operation: body.operation, ttlSeconds: body.ttlSeconds });
    void reply.status(201).header('cache-control', 'no-store');
    return {
      token: minted.token,
      expiresAt: new Date(minted.expiresAt * 1000).toISOString(),
      operation: body.operation ?? null,
    };
  });

  app.get('/v1/events', async (request, reply) => {
    const query = parseTenantEventsQuery(request.query);
    assertOperationScope(request, null);
    const stream = wantsEventStream(request);
    // One literal with every member (not a spread): each stream keeps this object, and a
    // spread gives every one of them a hidden class of its own (measured: ~240 B each).
    const selection = {
      tenant: request.tenant,
      after: stream
        ? (lastEventId(request) ?? query.after ?? (await accepted.lastSeq()))
        : (query.after ?? 0),
      operationIds: query.operation,
      types: query.type,
      operationTypes: query.operationType,
      labels: labelPairs(query.label),
    };
    if (stream) return openEventStream(hub, request, reply, { selection });
    const after = selection.after;
    const events = await accepted.readEvents({ ...selection, limit: query.limit });
    void reply.header('cache-control', 'no-cache');
    return { events: events.map(toWireEvent), nextAfter: events.at(-1)?.seq ?? after };
  });

  // A plain GET (no Upgrade header) reaches this route; upgrades are taken before routing.
  app.get('/v1/ws', (request, reply) => {
    parseWsQuery(request.query);
    void reply.header('upgrade', 'websocket');
    throw new AcceptedError('UPGRADE_REQUIRED', 'GET /v1/ws speaks WebSocket only.', {
      fix: 'Open it with a WebSocket client (new WebSocket("ws://host/v1/ws")).',
    });
  });
}
