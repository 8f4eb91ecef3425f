import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AcceptedError } from '../domain/errors.ts';
import {
  CALLBACK_TARGET,
  formatDuration,
  parseDurations,
  type Attempt,
  type Delivery,
  type DeliveryStatus,
  type Endpoint,
  type EndpointPatch,
  type SecretEntry,
} from '../domain/webhooks.ts';
import { ifMatchVersions } from '../wire/headers.ts';
import { bodyValidator, queryValidator } from '../wire/validate.ts';
import {
  DELIVERY_QUERY_SCHEMA,
  ENDPOINT_CREATE_SCHEMA,
  ENDPOINT_PATCH_SCHEMA,
  PAGE_QUERY_SCHEMA,
  REPLAY_REQUEST_SCHEMA,
} from '../wire/webhook-schemas.ts';
import { publicKeyOf, type EndpointInput, type Webhooks } from './service.ts';

const iso = (ms: number) => new Date(ms).toISOString();
const isoOrNull = (ms: number | null) => (ms === null ? null : iso(ms));

/** Milliseconds as the shortest exact duration text (`300000` → `5m`). */
export { formatDuration };

/** One duration text in ms; NaN when it cannot be one (the bounds check names the field). */
function durationMs(text: string): number {
  try {
    return parseDurations(text)[0] ?? Number.NaN;
  } catch {
    return Number.NaN;
  }
}

export function toWireEndpoint(endpoint: Endpoint, secret?: string) {
  return {
    id: endpoint.id,
    url: endpoint.url,
    description: endpoint.description,
    eventTypes: endpoint.eventTypes,
    labels: endpoint.labels,
    retrySchedule: endpoint.retrySchedule?.map(formatDuration) ?? null,
    rateLimit: endpoint.rateLimit,
    enabled: endpoint.enabled,
    disabledReason: endpoint.disabledReason,
    disabledAt: isoOrNull(endpoint.disabledAt),
    failingSince: isoOrNull(endpoint.failingSince),
    publicKey: endpoint.signingKey === null ? null : publicKeyOf(endpoint.signingKey),
    ...(secret === undefined ? {} : { secret }),
    createdAt: iso(endpoint.createdAt),
    updatedAt: iso(endpoint.updatedAt),
    version: endpoint.version,
  };
}

export function toWireDelivery(delivery: Delivery) {
  return {
    id: delivery.id,
    endpoint: delivery.target === CALLBACK_TARGET ? null : delivery.target,
    url: delivery.url,
    operationId: delivery.operationId,
    eventId: delivery.eventId,
    eventType: delivery.eventType,
    status: delivery.status,
    attempts: delivery.attempts,
    nextAttemptAt: isoOrNull(delivery.nextAttemptAt),
    lastStatus: delivery.lastStatus,
    lastError: delivery.lastError,
    createdAt: iso(delivery.createdAt),
    updatedAt: iso(delivery.updatedAt),
    deliveredAt: isoOrNull(delivery.deliveredAt),
  };
}

function toWireAttempt(attempt: Attempt) {
  return {
    attempt: attempt.attempt,
    startedAt: iso(attempt.startedAt),
    durationMs: attempt.durationMs,
    status: attempt.status,
    error: attempt.error,
    responseBody: attempt.responseBody,
  };
}

function toWireSecrets(secrets: SecretEntry[]) {
  return {
    secrets: secrets.map((entry) => ({
      secret: entry.secret,
      expiresAt: isoOrNull(entry.expiresAt),
    })),
  };
}

interface EndpointBody {
  url?: string;
  description?: string | null;
  eventTypes?: EndpointInput['eventTypes'];
  labels?: Record<string, string> | null;
  retrySchedule?: string[] | null;
  rateLimit?: number | null;
  enabled?: boolean;
  ed25519?: boolean;
}

const parseCreate = bodyValidator<EndpointBody & { url: string }>(ENDPOINT_CREATE_SCHEMA);
const parsePatch = bodyValidator<EndpointBody>(ENDPOINT_PATCH_SCHEMA);
const parseReplay = bodyValidator<{ since: string }>(REPLAY_REQUEST_SCHEMA);
const parsePage = queryValidator<{ limit: number; cursor?: string }>(PAGE_QUERY_SCHEMA);
const parseDeliveryQuery = queryValidator<{
  endpoint?: string;
  operation?: string;
  status?: DeliveryStatus[];
  limit: number;
  cursor?: string;
}>(DELIVERY_QUERY_SCHEMA);

/** The fields common to create and patch, in domain terms. */
function endpointFields(body: EndpointBody): EndpointPatch {
  const patch: EndpointPatch = {};
  if (body.url !== undefined) patch.url = body.url;
  if (body.description !== undefined) patch.description = body.description;
  if (body.eventTypes !== undefined) patch.eventTypes = body.eventTypes;
  if (body.labels !== undefined) patch.labels = body.labels;
  if (body.retrySchedule !== undefined) {
    // Checked against the bounds by the service (`checkEndpointFields`), field by field.
    patch.retrySchedule = body.retrySchedule === null ? null : body.retrySchedule.map(durationMs);
  }
  if (body.rateLimit !== undefined) patch.rateLimit = body.rateLimit;
  if (body.enabled !== undefined) patch.enabled = body.enabled;
  return patch;
}

/** The versions of a required `If-Match` (428 without one). `*` allows any version. */
function requiredIfMatch(request: FastifyRequest): number[] | undefined {
  const header = request.headers['if-match'];
  if (header === undefined) {
    throw new AcceptedError('PRECONDITION_REQUIRED', 'Changing an endpoint needs If-Match.', {
      fix: 'Read the endpoint, then send its ETag in If-Match (or If-Match: * to skip the check).',
    });
  }
  return ifMatchVersions(header);
}

function withEtag(reply: FastifyReply, endpoint: Endpoint): FastifyReply {
  return reply.header('etag', `"${endpoint.version}"`).header('cache-control', 'no-store');
}

/** Stream tokens only read: they never reach these routes (the auth hook refuses them). */
export function registerWebhookRoutes(app: FastifyInstance, webhooks: Webhooks): void {
  const base = '/v1/webhooks/endpoints';

  app.post(base, async (request, reply) => {
    const body = parseCreate(request.body);
    const { endpoint, secret } = await webhooks.createEndpoint(request.tenant, {
      ...endpointFields(body),
      url: body.url,
      ed25519: body.ed25519 === true,
    });
    void withEtag(reply, endpoint)
      .status(201)
      .header('location', `${request.acceptedPrefix}${base}/${endpoint.id}`);
    return toWireEndpoint(endpoint, secret);
  });

  app.get(base, async (request, reply) => {
    const query = parsePage(request.query);
    const page = await webhooks.store.listEndpoints({
      tenant: request.tenant,
      limit: query.limit,
      cursor: query.cursor,
    });
    void reply.header('cache-control', 'no-store');
    return { items: page.items.map((e) => toWireEndpoint(e)), nextCursor: page.nextCursor };
  });

  app.get<{ Params: { id: string } }>(`${base}/:id`, async (request, reply) => {
    const endpoint = await webhooks.getEndpoint(request.tenant, request.params.id);
    void withEtag(reply, endpoint);
    return toWireEndpoint(endpoint);
  });

  app.patch<{ Params: { id: string } }>(`${base}/:id`, async (request, reply) => {
    const ifVersion = requiredIfMatch(request);
    const patch = endpointFields(parsePatch(request.body));
    const endpoint = await webhooks.updateEndpoint(
      request.tenant,
      request.params.id,
      patch,
      ifVersion,
    );
    void withEtag(reply, endpoint);
    return toWireEndpoint(endpoint);
  });

  app.delete<{ Params: { id: string } }>(`${base}/:id`, async (request, reply) => {
    const ifVersion = requiredIfMatch(request);
    await webhooks.deleteEndpoint(request.tenant, request.params.id, ifVersion);
    return reply.status(204).send();
  });

  // `{id}:rotate-secret` and `{id}:replay` (the router cannot tell the two apart).
  app.post<{ Params: { target: string } }>(`${base}/:target`, async (request, reply) => {
    const { target } = request.params;
    const colon = target.lastIndexOf(':');
    const id = target.slice(0, colon);
    const action = colon === -1 ? '' : target.slice(colon + 1);
    if (action === 'rotate-secret') {
      const { endpoint, secret } = await webhooks.rotateEndpointSecret(
        request.tenant,
        id,
        ifMatchVersions(request.headers['if-match']),
      );
      void withEtag(reply, endpoint);
      return toWireEndpoint(endpoint, secret);
    }
    if (action === 'replay') {
      const { since } = parseReplay(request.body);
      const replayed = await webhooks.replayEndpoint(request.tenant, id, Date.parse(since));
      return reply.status(202).send({ replayed });
    }
    return reply.callNotFound();
  });

  app.get('/v1/webhooks/callback-secret', async (request, reply) => {
    void reply.header('cache-control', 'no-store');
    return toWireSecrets(await webhooks.callbackSecrets(request.tenant));
  });

  app.post('/v1/webhooks/callback-secret:rotate', async (request, reply) => {
    void reply.header('cache-control', 'no-store');
    return toWireSecrets(await webhooks.rotateCallbackSecret(request.tenant));
  });

  app.get('/v1/webhooks/deliveries', async (request, reply) => {
    const query = parseDeliveryQuery(request.query);
    const page = await webhooks.store.listDeliveries({
      tenant: request.tenant,
      endpointId: query.endpoint,
      operationId: query.operation,
      status: query.status,
      limit: query.limit,
      cursor: query.cursor,
    });
    void reply.header('cache-control', 'no-store');
    return { items: page.items.map(toWireDelivery), nextCursor: page.nextCursor };
  });

  app.get<{ Params: { id: string } }>('/v1/webhooks/deliveries/:id', async (request, reply) => {
    const delivery = await webhooks.store.getDelivery(request.params.id, request.tenant);
    if (!delivery) throw deliveryNotFound(request.params.id);
    void reply.header('cache-control', 'no-store');
    return toWireDelivery(delivery);
  });

  app.get<{ Params: { id: string } }>(
    '/v1/webhooks/deliveries/:id/attempts',
    async (request, reply) => {
      const attempts = await webhooks.store.listAttempts(request.params.id, request.tenant);
      void reply.header('cache-control', 'no-store');
      return { items: attempts.map(toWireAttempt) };
    },
  );

  app.post<{ Params: { target: string } }>(
    '/v1/webhooks/deliveries/:target',
    async (request, reply) => {
      const { target } = request.params;
      if (!target.endsWith(':replay')) return reply.callNotFound();
      const delivery = await webhooks.replayDelivery(request.tenant, target.slice(0, -7));
      return reply.status(202).send(toWireDelivery(delivery));
    },
  );
}

function deliveryNotFound(id: string): AcceptedError {
  return new AcceptedError('DELIVERY_NOT_FOUND', `No webhook delivery ${id}.`, {
    fix: 'List the deliveries with GET /v1/webhooks/deliveries.',
  });
}
