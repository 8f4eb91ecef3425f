import { AcceptedError } from './errors.ts';
import type { EventType, OperationEvent } from './events.ts';
import { parseDuration } from './options.ts';

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
  return text.split(',').map((part) => {
    const ms = parseDuration(part);
    if (ms === null) {
      throw new RangeError(`"${part.trim()}" is not a duration like 500ms, 5s, 5m, 2h or 1d`);
    }
    return ms;
  });
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/**
 * The bounds of every webhook duration and count a caller controls (docs/webhooks.md#limits).
 * Past them a request is refused (422 VALIDATION_FAILED naming the field) and an option throws
 * the same error, so that no stored time can leave the range of a `Date`.
 */
/** The defaults of the webhook options, stated once (`accepted serve` reads them here). */
export const WEBHOOK_DEFAULTS = Object.freeze({
  timeoutMs: 15_000,
  disableAfterMs: 5 * DAY,
  concurrency: 64,
  rotationOverlapMs: DAY,
  retentionMs: 14 * DAY,
  pollIntervalMs: 1000,
  dispatchLeaseMs: 10_000,
});

export const WEBHOOK_LIMITS = Object.freeze({
  /** An endpoint's `retrySchedule`: entries, and each delay. */
  endpointRetryEntries: 20,
  endpointRetryMinMs: 1_000,
  endpointRetryMaxMs: DAY,
  /** An endpoint's `rateLimit` (deliveries per second). */
  rateLimitMax: 100_000,
  descriptionMaxLength: 500,
  /** The wait a receiver's `Retry-After` may ask for. */
  retryAfterMaxMs: DAY,
  /** The server's `retrySchedule` option (`--webhook-retries`). */
  serverRetryEntries: 100,
  serverRetryMaxMs: DAY,
  timeoutMinMs: 100,
  timeoutMaxMs: 300_000,
  disableAfterMinMs: 1,
  disableAfterMaxMs: 365 * DAY,
  concurrencyMax: 1024,
  rotationOverlapMaxMs: 30 * DAY,
  retentionMinMs: 60_000,
  retentionMaxMs: 365 * DAY,
  pollIntervalMinMs: 10,
  pollIntervalMaxMs: 60_000,
  /** The dispatcher's lease on the `webhooks` consumer (how soon another node takes over). */
  dispatchLeaseMinMs: 100,
  dispatchLeaseMaxMs: 600_000,
});

/** A duration as the shortest exact text (`300000` -> `5m`). */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ['h', HOUR],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

interface Problem {
  field: string;
  message: string;
}

function invalid(what: string, problems: Problem[], fix: string): AcceptedError {
  return new AcceptedError(
    'VALIDATION_FAILED',
    `${what}: ${problems.map((p) => `${p.field} ${p.message}`).join('; ')}.`,
    { fields: problems, fix },
  );
}

/** Problems of a whole number of ms that must lie within [min, max]. */
function rangeProblem(field: string, value: unknown, min: number, max: number): Problem[] {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= min && value <= max) {
    return [];
  }
  return [
    {
      field,
      message: `must be a whole number of milliseconds from ${formatDuration(min)} to ${formatDuration(max)}`,
    },
  ];
}

function scheduleProblems(
  field: string,
  schedule: readonly unknown[],
  entries: number,
  min: number,
  max: number,
): Problem[] {
  if (!Array.isArray(schedule)) return [{ field, message: 'must be a list of delays' }];
  if (schedule.length > entries) {
    return [{ field, message: `must have at most ${entries} entries` }];
  }
  return schedule.flatMap((ms, i) => rangeProblem(`${field}/${i}`, ms, min, max));
}

/**
 * Checks the fields of an endpoint a caller sets (create or patch, HTTP or library): its
 * retry schedule, rate limit and description. Throws VALIDATION_FAILED naming each field.
 */
export function checkEndpointFields(fields: {
  retrySchedule?: readonly number[] | null;
  rateLimit?: number | null;
  description?: string | null;
}): void {
  const L = WEBHOOK_LIMITS;
  const problems: Problem[] = [];
  if (fields.retrySchedule !== undefined && fields.retrySchedule !== null) {
    problems.push(
      ...scheduleProblems(
        '/retrySchedule',
        fields.retrySchedule,
        L.endpointRetryEntries,
        L.endpointRetryMinMs,
        L.endpointRetryMaxMs,
      ),
    );
  }
  const rate = fields.rateLimit;
  if (
    rate !== undefined &&
    rate !== null &&
    !(Number.isSafeInteger(rate) && rate >= 1 && rate <= L.rateLimitMax)
  ) {
    problems.push({
      field: '/rateLimit',
      message: `must be a whole number from 1 to ${L.rateLimitMax}`,
    });
  }
  const description = fields.description;
  if (
    description !== undefined &&
    description !== null &&
    (typeof description !== 'string' || description.length > L.descriptionMaxLength)
  ) {
    problems.push({
      field: '/description',
      message: `must be a text of at most ${L.descriptionMaxLength} characters`,
    });
  }
  if (problems.length > 0) {
    throw invalid(
      'The webhook endpoint is not valid',
      problems,
      'Correct the fields listed in `fields` (limits: docs/webhooks.md#limits).',
    );
  }
}

/** The server's webhook options a caller may set (see `WebhookOptions`). */
export interface WebhookOptionValues {
  retrySchedule?: readonly number[];
  timeoutMs?: number;
  disableAfterMs?: number;
  concurrency?: number;
  rotationOverlapMs?: number;
  retentionMs?: number;
  pollIntervalMs?: number;
  dispatchLeaseMs?: number;
}

/** Checks the server's webhook options. Throws VALIDATION_FAILED naming each option. */
export function checkWebhookOptions(options: WebhookOptionValues): void {
  const L = WEBHOOK_LIMITS;
  const problems: Problem[] = [];
  const range = (name: keyof WebhookOptionValues, min: number, max: number) => {
    const value = options[name];
    if (value !== undefined) problems.push(...rangeProblem(`/${name}`, value, min, max));
  };
  if (options.retrySchedule !== undefined) {
    problems.push(
      ...scheduleProblems(
        '/retrySchedule',
        options.retrySchedule,
        L.serverRetryEntries,
        0,
        L.serverRetryMaxMs,
      ),
    );
  }
  range('timeoutMs', L.timeoutMinMs, L.timeoutMaxMs);
  range('disableAfterMs', L.disableAfterMinMs, L.disableAfterMaxMs);
  range('rotationOverlapMs', 0, L.rotationOverlapMaxMs);
  range('retentionMs', L.retentionMinMs, L.retentionMaxMs);
  range('pollIntervalMs', L.pollIntervalMinMs, L.pollIntervalMaxMs);
  range('dispatchLeaseMs', L.dispatchLeaseMinMs, L.dispatchLeaseMaxMs);
  const { concurrency } = options;
  if (
    concurrency !== undefined &&
    !(Number.isSafeInteger(concurrency) && concurrency >= 1 && concurrency <= L.concurrencyMax)
  ) {
    problems.push({
      field: '/concurrency',
      message: `must be a whole number from 1 to ${L.concurrencyMax}`,
    });
  }
  if (problems.length > 0) {
    throw invalid(
      'Webhook options are not valid',
      problems,
      'Correct the options listed in `fields` (limits: docs/webhooks.md#limits).',
    );
  }
}
