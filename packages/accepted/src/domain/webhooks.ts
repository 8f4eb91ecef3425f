import type { EventType, OperationEvent } from './events.ts';

/**
 * Webhooks in domain terms. An **endpoint** is a URL a tenant subscribed, with filters and
 * secrets; a **delivery** is one event on its way to one target (an endpoint, or the
 * `callbackUrl` of the event's operation); an **attempt** is one HTTP request of a delivery.
 */

/** Where a delivery goes: an endpoint's id, or `callback` for the operation's callbackUrl. */
export const CALLBACK_TARGET = 'callback';

/** A signing secret, and until when it still signs (null: the current one). */
export interface SecretEntry {
  secret: string;
  /** Epoch ms after which a rotated-out secret stops signing; null for the current one. */
  expiresAt: number | null;
}

export interface Endpoint {
  id: string;
  tenant: string;
  url: string;
  description: string | null;
  /** Only these event types; null for every type. */
  eventTypes: EventType[] | null;
  /** Only events of operations with every one of these labels; null for any. */
  labels: Record<string, string> | null;
  /** Newest first: the current secret, then rotated-out ones still signing. */
  secrets: SecretEntry[];
  /** An ed25519 signing key (`whsk_...`) that adds a `v1a` signature, or null. */
  signingKey: string | null;
  /** Delays before each retry, in ms; null for the server's schedule. */
  retrySchedule: number[] | null;
  /** Most deliveries per second to this endpoint; null for no limit. */
  rateLimit: number | null;
  enabled: boolean;
  /** Why it was disabled (`GONE` for a 410, `FAILING` after failing too long, `MANUAL`). */
  disabledReason: string | null;
  disabledAt: number | null;
  /** Start of the current run of failed attempts, or null when the last one succeeded. */
  failingSince: number | null;
  createdAt: number;
  updatedAt: number;
  version: number;
}

export interface NewEndpoint {
  id: string;
  tenant: string;
  url: string;
  description: string | null;
  eventTypes: EventType[] | null;
  labels: Record<string, string> | null;
  secret: string;
  signingKey: string | null;
  retrySchedule: number[] | null;
  rateLimit: number | null;
}

/** What `PATCH` may change. `enabled: true` also clears the failure record. */
export interface EndpointPatch {
  url?: string;
  description?: string | null;
  eventTypes?: EventType[] | null;
  labels?: Record<string, string> | null;
  retrySchedule?: number[] | null;
  rateLimit?: number | null;
  enabled?: boolean;
}

export type DeliveryStatus = 'pending' | 'delivered' | 'failed';

export interface Delivery {
  id: string;
  tenant: string;
  /** An endpoint id, or `callback`. */
  target: string;
  url: string;
  operationId: string;
  eventId: string;
  eventSeq: number;
  eventType: EventType;
  /** The exact body sent (`{ type, timestamp, data }`), fixed when the delivery is made. */
  payload: string;
  status: DeliveryStatus;
  /** Attempts made so far, replays included. */
  attempts: number;
  /** Attempts made before the last replay: the retry schedule counts from here. */
  roundStart: number;
  /** When the next attempt may start (pending only). */
  nextAttemptAt: number | null;
  lastStatus: number | null;
  lastError: string | null;
  createdAt: number;
  updatedAt: number;
  deliveredAt: number | null;
}

export interface Attempt {
  deliveryId: string;
  attempt: number;
  startedAt: number;
  durationMs: number;
  /** The HTTP status, or null when no response came. */
  status: number | null;
  /** Why it failed without a response (`TIMEOUT`, `CONNECT_FAILED`, ...), or null. */
  error: string | null;
  /** The first 4 KB of the response body. */
  responseBody: string;
}

/** The Standard Webhooks schedule: immediately, then these delays between attempts. */
export const DEFAULT_RETRY_SCHEDULE: readonly number[] = [
  5_000,
  5 * 60_000,
  30 * 60_000,
  2 * 3600_000,
  5 * 3600_000,
  10 * 3600_000,
  14 * 3600_000,
  20 * 3600_000,
  24 * 3600_000,
];

/** Events a callbackUrl receives: every change of its operation but progress and deletion. */
export function callbackWants(type: EventType): boolean {
  return (
    type.startsWith('operation.') && type !== 'operation.progress' && type !== 'operation.deleted'
  );
}

/** Whether an endpoint subscribed to this event (its tenant, types and labels). */
export function endpointWants(endpoint: Endpoint, event: OperationEvent): boolean {
  if (!endpoint.enabled || endpoint.tenant !== event.tenant) return false;
  if (endpoint.eventTypes && !endpoint.eventTypes.includes(event.type)) return false;
  if (endpoint.labels) {
    for (const key in endpoint.labels) {
      if (event.labels[key] !== endpoint.labels[key]) return false;
    }
  }
  return true;
}

/** Parses `5s,5m,30m,2h` (units ms, s, m, h) into milliseconds. Throws RangeError. */
export function parseDurations(text: string): number[] {
  const out: number[] = [];
  for (const part of text.split(',')) {
    const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(part);
    if (!match) throw new RangeError(`"${part.trim()}" is not a duration like 500ms, 5s, 5m or 2h`);
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] as 'ms' | 's' | 'm' | 'h'];
    out.push(Math.round(Number(match[1]) * unit));
  }
  return out;
}
