import { AcceptedError } from '../domain/errors.ts';
import type { EventType, OperationEvent } from '../domain/events.ts';
import { randomId } from '../domain/ids.ts';
import {
  CALLBACK_TARGET,
  DEFAULT_RETRY_SCHEDULE,
  type Endpoint,
  type EndpointPatch,
  type SecretEntry,
} from '../domain/webhooks.ts';
import type { Accepted } from '../engine/accepted.ts';
import type { Logger } from '../engine/definition.ts';
import { toWireEvent } from '../http/monitor.ts';
import type { AttemptOutcome, ClaimedDelivery, Store } from '../store/store.ts';
import { WebhookSender, type SendResult } from './sender.ts';
import { generateSigningKeyPair, generateWebhookSecret, webhookHeaders } from './signature.ts';
import { AddressPolicy, checkWebhookUrl } from './ssrf.ts';

/** Settings of webhook delivery. Every field has a default; see docs/webhooks.md. */
export interface WebhookOptions {
  accepted: Accepted;
  /** CIDRs deliveries may reach although the block list forbids them (development, tests). */
  allow?: readonly string[];
  /** Delays between attempts (ms); the first attempt is immediate. Default: Standard Webhooks'. */
  retrySchedule?: readonly number[];
  /** Time limit of one attempt. Default 15 s. */
  timeoutMs?: number;
  /** An endpoint failing without a success for this long is disabled. Default 5 days. */
  disableAfterMs?: number;
  /** Deliveries in flight at once. Default 64. */
  concurrency?: number;
  /** How long a rotated-out secret keeps signing. Default 24 h. */
  rotationOverlapMs?: number;
  /** How long finished deliveries and their attempts are kept. Default 14 days. */
  retentionMs?: number;
  /** Safety poll for new events and due retries. Default 1000 ms. */
  pollIntervalMs?: number;
  logger?: Logger;
}

/** What `createEndpoint` takes (already validated by the HTTP layer or the caller). */
export interface EndpointInput {
  url: string;
  description?: string | null;
  eventTypes?: EventType[] | null;
  labels?: Record<string, string> | null;
  retrySchedule?: number[] | null;
  rateLimit?: number | null;
  /** Also sign with ed25519 (`v1a`); the response carries the public key. */
  ed25519?: boolean;
}

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** ±20% around a delay, so that retries of many deliveries spread out. */
function jitter(ms: number): number {
  return Math.round(ms * (0.8 + Math.random() * 0.4));
}

/** Public key (`whpk_`) of an ed25519 signing key (`whsk_` + base64 of seed ‖ public key). */
export function publicKeyOf(signingKey: string): string {
  const raw = Buffer.from(signingKey.slice('whsk_'.length), 'base64');
  return `whpk_${raw.subarray(32).toString('base64')}`;
}

/**
 * Webhook delivery for one node: a dispatcher that turns new events into durable deliveries
 * (by the store's cursor), and a sender that claims due deliveries, signs them (Standard
 * Webhooks), posts them through the SSRF guard and records every attempt. Nothing is sent
 * from memory: a crash or restart loses no delivery, and a lease keeps two nodes from sending
 * the same attempt at once.
 */
export class Webhooks {
  readonly policy: AddressPolicy;
  readonly store: Store;
  private readonly sender: WebhookSender;
  private readonly log: Logger;
  private readonly settings: Required<
    Omit<WebhookOptions, 'accepted' | 'allow' | 'logger' | 'retrySchedule'>
  > & { retrySchedule: readonly number[] };
  private untail: (() => void) | null = null;
  private timers: NodeJS.Timeout[] = [];
  private wakeTimer: NodeJS.Timeout | null = null;
  private running = false;
  private dispatching: Promise<void> | null = null;
  private dispatchAgain = false;
  /** The claim loop while it runs (stop waits for it: it reads the store). */
  private pumping: Promise<void> | null = null;
  private pumpAgain = false;
  private inFlight = 0;
  private readonly idle: (() => void)[] = [];
  /** Deliveries per endpoint in the current second, for endpoints with a rate limit. */
  private rate = { second: 0, counts: new Map<string, number>() };
  /** Counters for tests, benchmarks and metrics. */
  readonly stats = { dispatched: 0, attempts: 0, delivered: 0, failed: 0, retried: 0 };

  constructor(private readonly options: WebhookOptions) {
    this.store = options.accepted.store;
    this.log = options.logger ?? silent;
    this.policy = new AddressPolicy(options.allow ?? []);
    this.settings = {
      retrySchedule: options.retrySchedule ?? DEFAULT_RETRY_SCHEDULE,
      timeoutMs: options.timeoutMs ?? 15_000,
      disableAfterMs: options.disableAfterMs ?? 5 * 24 * 3600_000,
      concurrency: Math.max(1, options.concurrency ?? 64),
      rotationOverlapMs: options.rotationOverlapMs ?? 24 * 3600_000,
      retentionMs: options.retentionMs ?? 14 * 24 * 3600_000,
      pollIntervalMs: Math.max(10, options.pollIntervalMs ?? 1000),
    };
    this.sender = new WebhookSender({
      policy: this.policy,
      timeoutMs: this.settings.timeoutMs,
      maxSockets: this.settings.concurrency,
    });
  }

  /** Starts dispatching and sending (call after `accepted.start()`). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.untail = this.options.accepted.tail(() => this.dispatch());
    const poll = setInterval(() => {
      this.dispatch();
      this.pump();
    }, this.settings.pollIntervalMs);
    const purge = setInterval(() => void this.purge(), 3600_000);
    for (const timer of [poll, purge]) timer.unref();
    this.timers.push(poll, purge);
    this.dispatch();
    this.pump();
  }

  /** Stops taking new work and waits (up to `timeoutMs`) for attempts in flight. */
  async stop(timeoutMs = this.settings.timeoutMs): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.untail?.();
    this.untail = null;
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        this.idle.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    await this.dispatching;
    await this.pumping;
    this.sender.close();
  }

  /** Refuses a URL deliveries could not be sent to (URL_NOT_ALLOWED, 422). */
  checkUrl(url: string, field = '/url'): void {
    checkWebhookUrl(url, this.policy, field);
  }

  // ---- endpoints, secrets, deliveries (what the HTTP routes call) --------------------------

  async createEndpoint(
    tenant: string,
    input: EndpointInput,
  ): Promise<{ endpoint: Endpoint; secret: string }> {
    this.checkUrl(input.url);
    const secret = generateWebhookSecret();
    const endpoint = await this.store.createEndpoint(
      {
        id: randomId('ep'),
        tenant,
        url: input.url,
        description: input.description ?? null,
        eventTypes: input.eventTypes ?? null,
        labels: input.labels ?? null,
        secret,
        signingKey: input.ed25519 ? generateSigningKeyPair().secretKey : null,
        retrySchedule: input.retrySchedule ?? null,
        rateLimit: input.rateLimit ?? null,
      },
      Date.now(),
    );
    this.dispatch();
    return { endpoint, secret };
  }

  async getEndpoint(tenant: string, id: string): Promise<Endpoint> {
    const endpoint = await this.store.getEndpoint(id, tenant);
    if (!endpoint) {
      throw new AcceptedError('ENDPOINT_NOT_FOUND', `No webhook endpoint ${id}.`, {
        fix: 'List the endpoints with GET /v1/webhooks/endpoints.',
      });
    }
    return endpoint;
  }

  async updateEndpoint(
    tenant: string,
    id: string,
    patch: EndpointPatch,
    ifVersion: readonly number[] | undefined,
  ): Promise<Endpoint> {
    if (patch.url !== undefined) this.checkUrl(patch.url);
    const endpoint = await this.store.updateEndpoint(id, tenant, patch, Date.now(), ifVersion);
    if (patch.enabled === true) this.pump();
    return endpoint;
  }

  async rotateEndpointSecret(
    tenant: string,
    id: string,
    ifVersion?: readonly number[],
  ): Promise<{ endpoint: Endpoint; secret: string }> {
    const secret = generateWebhookSecret();
    const now = Date.now();
    const endpoint = await this.store.rotateEndpointSecret(
      id,
      tenant,
      secret,
      now + this.settings.rotationOverlapMs,
      now,
      ifVersion,
    );
    return { endpoint, secret };
  }

  deleteEndpoint(
    tenant: string,
    id: string,
    ifVersion: readonly number[] | undefined,
  ): Promise<void> {
    return this.store.deleteEndpoint(id, tenant, Date.now(), ifVersion);
  }

  callbackSecrets(tenant: string): Promise<SecretEntry[]> {
    return this.store.callbackSecrets(tenant, generateWebhookSecret(), Date.now());
  }

  rotateCallbackSecret(tenant: string): Promise<SecretEntry[]> {
    const now = Date.now();
    return this.store.rotateCallbackSecret(
      tenant,
      generateWebhookSecret(),
      now + this.settings.rotationOverlapMs,
      now,
    );
  }

  async replayDelivery(tenant: string, id: string) {
    const delivery = await this.store.replayDelivery(id, tenant, Date.now());
    this.pump();
    return delivery;
  }

  async replayEndpoint(tenant: string, id: string, since: number): Promise<number> {
    const count = await this.store.replayEndpoint(id, tenant, since, Date.now());
    this.pump();
    return count;
  }

  // ---- the dispatcher: log -> deliveries ----------------------------------------------------

  /** Whether another dispatch or pump was asked for while one ran (read through a call). */
  private asked(what: 'dispatch' | 'pump'): boolean {
    return this.running && (what === 'dispatch' ? this.dispatchAgain : this.pumpAgain);
  }

  /** Reads the log after the dispatcher's cursor into deliveries (coalesced, one at a time). */
  private dispatch(): void {
    if (!this.running) return;
    if (this.dispatching) {
      this.dispatchAgain = true;
      return;
    }
    this.dispatching = (async () => {
      try {
        do {
          this.dispatchAgain = false;
          for (;;) {
            const made = await this.store.dispatchDeliveries({
              limit: 500,
              now: Date.now(),
              newId: () => randomId('dlv'),
              newSecret: generateWebhookSecret,
              payload: (event) => this.payload(event),
            });
            this.stats.dispatched += made.deliveries;
            if (made.deliveries > 0) this.pump();
            if (made.events < 500) break;
          }
        } while (this.asked('dispatch'));
      } catch (error) {
        this.log.error({ err: error }, 'webhook dispatch failed; the next event or poll retries');
      } finally {
        this.dispatching = null;
      }
    })();
  }

  /** The Standard Webhooks payload: `{ type, timestamp, data }`, data being the wire event. */
  private payload(event: OperationEvent): string {
    return JSON.stringify({
      type: event.type,
      timestamp: new Date(event.time).toISOString(),
      data: toWireEvent(event),
    });
  }

  // ---- the sender: deliveries -> attempts ---------------------------------------------------

  /** Claims due deliveries up to the concurrency limit and sends them. */
  private pump(): void {
    if (!this.running) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = (async () => {
      try {
        do {
          this.pumpAgain = false;
          while (this.running && this.inFlight < this.settings.concurrency) {
            const claimed = await this.store.claimDeliveries({
              now: Date.now(),
              limit: this.settings.concurrency - this.inFlight,
              leaseMs: this.settings.timeoutMs * 2 + 5_000,
            });
            for (const delivery of claimed) this.launch(delivery);
            if (claimed.length === 0) break;
          }
        } while (this.asked('pump'));
        await this.scheduleWake();
      } catch (error) {
        this.log.error({ err: error }, 'webhook claim failed; the next poll retries');
      } finally {
        this.pumping = null;
      }
    })();
  }

  /** Wakes the sender when the earliest pending retry comes due. */
  private async scheduleWake(): Promise<void> {
    if (this.inFlight >= this.settings.concurrency) return;
    const at = await this.store.nextDeliveryAt();
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
    if (at === null || !this.running) return;
    const delay = at - Date.now();
    if (delay > this.settings.pollIntervalMs) return; // the poll comes first
    this.wakeTimer = setTimeout(() => this.pump(), Math.max(0, delay));
    this.wakeTimer.unref();
  }

  private launch(claimed: ClaimedDelivery): void {
    this.inFlight++;
    void this.attempt(claimed)
      .catch((error: unknown) =>
        this.log.error({ err: error, delivery: claimed.delivery.id }, 'webhook attempt failed'),
      )
      .finally(() => {
        this.inFlight--;
        if (this.inFlight === 0) for (const resolve of this.idle.splice(0)) resolve();
        this.pump();
      });
  }

  /** Whether this endpoint may take one more delivery this second. */
  private withinRate(claimed: ClaimedDelivery, now: number): boolean {
    if (claimed.rateLimit === null) return true;
    const second = Math.floor(now / 1000);
    if (second !== this.rate.second) this.rate = { second, counts: new Map() };
    const target = claimed.delivery.target;
    const count = this.rate.counts.get(target) ?? 0;
    if (count >= claimed.rateLimit) return false;
    this.rate.counts.set(target, count + 1);
    return true;
  }

  private async attempt(claimed: ClaimedDelivery): Promise<void> {
    const { delivery } = claimed;
    const startedAt = Date.now();
    const number = delivery.attempts + 1;
    // The same clock reading for the rate window and for `webhook-timestamp`.
    if (!this.withinRate(claimed, startedAt)) {
      await this.store.recordAttempt({
        attempt: {
          deliveryId: delivery.id,
          attempt: number,
          startedAt,
          durationMs: 0,
          status: null,
          error: null,
          responseBody: '',
        },
        result: 'retry',
        deferred: true,
        nextAttemptAt: (Math.floor(startedAt / 1000) + 1) * 1000,
      });
      return;
    }
    const secrets = claimed.signingKey ? [...claimed.secrets, claimed.signingKey] : claimed.secrets;
    const headers = {
      'content-type': 'application/json',
      'user-agent': 'Accepted-Webhooks/1',
      ...webhookHeaders({
        id: delivery.eventId,
        timestamp: Math.floor(startedAt / 1000),
        body: delivery.payload,
        secrets,
      }),
    };
    const sent = await this.sender.send({ url: delivery.url, headers, body: delivery.payload });
    this.stats.attempts++;
    const outcome = this.judge(claimed, number, sent);
    await this.store.recordAttempt({
      ...outcome,
      attempt: {
        deliveryId: delivery.id,
        attempt: number,
        startedAt,
        durationMs: Math.round(sent.durationMs),
        status: sent.status,
        error: sent.error?.code ?? null,
        responseBody: sent.body,
      },
    });
    if (outcome.result === 'delivered') this.stats.delivered++;
    else if (outcome.result === 'failed') this.stats.failed++;
    else this.stats.retried++;
    if (outcome.disableEndpoint) {
      this.log.warn(
        { endpoint: delivery.target, reason: outcome.disableEndpoint.reason },
        outcome.disableEndpoint.message,
      );
    }
  }

  /** What one attempt's result means for its delivery and endpoint. */
  private judge(
    claimed: ClaimedDelivery,
    number: number,
    sent: SendResult,
  ): Omit<AttemptOutcome, 'attempt'> {
    const { delivery } = claimed;
    if (sent.ok) return { result: 'delivered' };
    const isEndpoint = delivery.target !== CALLBACK_TARGET;
    if (sent.status === 410) {
      return {
        result: 'failed',
        ...(isEndpoint
          ? {
              disableEndpoint: {
                reason: 'GONE',
                message: 'The endpoint answered 410 Gone: disabled.',
              },
            }
          : {}),
      };
    }
    const now = Date.now();
    let disableEndpoint: AttemptOutcome['disableEndpoint'];
    const since = claimed.failingSince ?? now;
    if (isEndpoint && now - since >= this.settings.disableAfterMs) {
      disableEndpoint = {
        reason: 'FAILING',
        message: `The endpoint has failed every attempt since ${new Date(since).toISOString()}: disabled.`,
      };
    }
    const schedule = claimed.retrySchedule ?? this.settings.retrySchedule;
    const delay = schedule[number - delivery.roundStart - 1];
    if (delay === undefined || disableEndpoint) {
      return { result: 'failed', ...(disableEndpoint ? { disableEndpoint } : {}) };
    }
    const wait =
      sent.retryAfterMs !== null && (sent.status === 429 || sent.status === 503)
        ? Math.min(sent.retryAfterMs, 24 * 3600_000)
        : jitter(delay);
    return { result: 'retry', nextAttemptAt: now + wait };
  }

  private async purge(): Promise<void> {
    try {
      const before = Date.now() - this.settings.retentionMs;
      while ((await this.store.purgeDeliveries(before, 1000)) === 1000) {
        await new Promise((resolve) => setImmediate(resolve));
      }
    } catch (error) {
      this.log.error({ err: error }, 'webhook retention cleanup failed');
    }
  }
}

/** Webhook delivery for an Accepted instance; call `start()` after `accepted.start()`. */
export function createWebhooks(options: WebhookOptions): Webhooks {
  return new Webhooks(options);
}
