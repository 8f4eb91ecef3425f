// What every edge knows of a request it serves: its tenant and, for a caller that came with a
// stream token, what the token grants; and the small readings of a request that more than one
// edge makes (label filters, whether an event stream is wanted, a stream token's scope).
import type { FastifyRequest } from 'fastify';
import { AcceptedError } from '../domain/errors.ts';

/** What a valid stream token grants. */
export interface StreamGrant {
  tenant: string;
  /** When set, only this operation's streams. */
  operation: string | null;
  /** Epoch seconds. */
  expiresAt: number;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller's tenant (from its API key; `default` in local development mode). */
    tenant: string;
    /** Set when the caller came with a stream token instead of an API key. */
    streamGrant: StreamGrant | null;
  }
}

/** `label=key:value` filters (already checked by the query schema) as a record. */
export function labelPairs(pairs: readonly string[] | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of pairs ?? []) {
    const colon = pair.indexOf(':');
    labels[pair.slice(0, colon)] = pair.slice(colon + 1);
  }
  return labels;
}

/** Whether the client asks for Server-Sent Events (`Accept: text/event-stream`). */
export function wantsEventStream(request: FastifyRequest): boolean {
  return (request.headers.accept ?? '').includes('text/event-stream');
}

/** A stream token limited to one operation may not read another's (or the tenant's) events. */
export function assertOperationScope(request: FastifyRequest, operationId: string | null): void {
  const scope = request.streamGrant?.operation ?? null;
  if (scope === null || scope === operationId) return;
  throw new AcceptedError(
    'FORBIDDEN',
    operationId === null
      ? 'This stream token is limited to one operation.'
      : 'This stream token is limited to another operation.',
    { fix: 'Mint a token for this stream with POST /v1/stream-tokens.' },
  );
}
