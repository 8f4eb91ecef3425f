import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { AcceptedError, isAcceptedError } from '../domain/errors.ts';
import type { EventType, OperationEvent } from '../domain/events.ts';
import { randomId } from '../domain/ids.ts';
import { ConfigError } from '../domain/options.ts';
import {
  CALLBACK_TARGET,
  DEFAULT_RETRY_SCHEDULE,
  WEBHOOK_LIMITS,
  checkEndpointFields,
  checkWebhookOptions,
  type Endpoint,
  type EndpointPatch,
  type SecretEntry,
  WEBHOOK_DEFAULTS,
} from '../domain/webhooks.ts';
import type { Accepted } from '../engine/accepted.ts';
import type { Logger } from '../domain/logger.ts';
import { toWireEvent } from '../wire/monitor.ts';
import { WEBHOOK_CONSUMER } from '../store/consumer-rules.ts';
import type { ConsumerLease, ConsumerState, ConsumerStore } from '../store/consumers.ts';
import type { AttemptOutcome, ClaimedDelivery, WebhookStore } from '../store/store.ts';
import { WebhookSender, type SendResult } from './sender.ts';
import { generateSigningKeyPair, generateWebhookSecret, webhookHeaders } from './signature.ts';
import { AddressPolicy, checkWebhookUrl } from './ssrf.ts';

/**
 * Settings of webhook delivery. Every field has a default and a bound (docs/webhooks.md#limits):
 * a value out of bounds throws VALIDATION_FAILED naming it.
 */
export interface WebhookOptions {
  accepted: Accepted;
  /** CIDRs deliveries may reach although the block list forbids them (development, tests). */
  allow?: readonly string[];
  /**
   * Delays between attempts (ms, each 0 to 24 h, at most 100); the first attempt is
   * immediate. Default: Standard Webhooks'.
   */
  retrySchedule?: readonly number[];
  /** Time limit of one attempt, 100 ms to 5 min. Default 15 s. */
  timeoutMs?: number;
  /** An endpoint failing without a success for this long is disabled (up to 365 d). Default 5 d. */
  disableAfterMs?: number;
  /** Deliveries in flight at once, 1 to 1024. Default 64. */
  concurrency?: number;
  /** How long a rotated-out secret keeps signing, 0 to 30 d. Default 24 h. */
  rotationOverlapMs?: number;
  /** How long finished deliveries and their attempts are kept, 1 min to 365 d. Default 14 d. */
  retentionMs?: number;
  /** Safety poll for new events and due retries, 10 ms to 60 s. Default 1000 ms. */
  pollIntervalMs?: number;
  /**
   * The dispatcher's lease on the store's `webhooks` consumer, 100 ms to 10 min: one node
   * dispatches at a time, and another takes over this long after it stops renewing (it died).
   * Default 10 s.
   */
  dispatchLeaseMs?: number;
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

/** The store's webhook and consumer capabilities; a clear error when it lacks them. */
function capabilities(accepted: Accepted): { webhooks: WebhookStore; consumers: ConsumerStore } {
  const { webhooks, consumers, kind } = accepted.store;
  const missing = [webhooks ? null : 'webhooks', consumers ? null : 'consumers'].filter(
    (name): name is string => name !== null,
  );
  if (!webhooks || !consumers) {
    throw new ConfigError(
      'store',
      `Webhooks need a store with the ${missing.join(' and ')} capabilities (${missing.map((name) => `store.${name}`).join(', ')}); the ${kind} store has not.`,
      'Use a store that offers them (the SQLite and PostgreSQL stores do), or run without webhooks.',
    );
  }
  return { webhooks, consumers };
}

/** Who holds the dispatcher's lease: this process (host, pid) and this instance. */
function newHolder(): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
}

/**
 * Webhook delivery for one node: a dispatcher that turns new events into durable deliveries
 * (the first user of the relay cursor: the store's `webhooks` consumer, leased to one node at a
 * time), and a sender that claims due deliveries, signs them (Standard
 * Webhooks), posts them through the SSRF guard and records every attempt. Nothing is sent
 * from memory: a crash or restart loses no delivery, and a lease keeps two nodes from sending
 * the same attempt at once.
 */
export class Webhooks {
  readonly policy: AddressPolicy;
  /** The store's webhook tables (`Store.webhooks`). */
  readonly store: WebhookStore;
  /** The store's relay cursor (`Store.consumers`): the dispatcher's lease and position. */
  readonly consumers: ConsumerStore;
  /** This instance's name as the holder of the dispatcher's lease. */
  readonly holder = newHolder();
  private readonly sender: WebhookSender;
  private readonly log: Logger;
  private readonly settings: Required<
    Omit<WebhookOptions, 'accepted' | 'allow' | 'logger' | 'retrySchedule'>
  > & { retrySchedule: readonly number[] };
  /** The dispatcher's lease while this node holds it (as last acquired or committed). */
  private lease: ConsumerLease | null = null;
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
  /** Every event up to this seq is known to have been dispatched (by this node or another). */
  private dispatchedTo = -1;
  /**
   * Counters for tests, benchmarks and metrics. `lag`: events in the log after the dispatcher's
   * committed position, as last seen (by this node's pass or poll; `relay()` reads it now).
   * `dispatching`: whether this node held the dispatcher's lease then.
   */
  readonly stats = {
    dispatched: 0,
    attempts: 0,
    delivered: 0,
    failed: 0,
    retried: 0,
    lag: 0,
    dispatching: false,
  };

  constructor(private readonly options: WebhookOptions) {
    const { webhooks, consumers } = capabilities(options.accepted);
    this.store = webhooks;
    this.consumers = consumers;
    this.log = options.logger ?? silent;
    this.policy = new AddressPolicy(options.allow ?? []);
    checkWebhookOptions(options);
    this.settings = {
      retrySchedule: options.retrySchedule ?? DEFAULT_RETRY_SCHEDULE,
      timeoutMs: options.timeoutMs ?? WEBHOOK_DEFAULTS.timeoutMs,
      disableAfterMs: options.disableAfterMs ?? WEBHOOK_DEFAULTS.disableAfterMs,
      concurrency: options.concurrency ?? WEBHOOK_DEFAULTS.concurrency,
      rotationOverlapMs: options.rotationOverlapMs ?? WEBHOOK_DEFAULTS.rotationOverlapMs,
      retentionMs: options.retentionMs ?? WEBHOOK_DEFAULTS.retentionMs,
      pollIntervalMs: options.pollIntervalMs ?? WEBHOOK_DEFAULTS.pollIntervalMs,
      dispatchLeaseMs: options.dispatchLeaseMs ?? WEBHOOK_DEFAULTS.dispatchLeaseMs,
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
    const poll = setInterval(() => void this.poll(), this.settings.pollIntervalMs);
    const purge = setInterval(() => void this.purge(), 3600_000);
    for (const timer of [poll, purge]) timer.unref();
    this.timers.push(poll, purge);
    this.dispatch();
    this.pump();
    // Retention at start too, not only hourly: a node restarted more often than that (every
    // deploy) would otherwise never purge.
    void this.purge();
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
    // Give the dispatcher's lease back: another node takes over at once, not at its expiry.
    const lease = this.lease;
    this.lease = null;
    this.stats.dispatching = false;
    try {
      if (lease) await this.consumers.release(lease);
    } catch (error) {
      this.log.warn({ err: error }, 'webhook dispatcher lease not released; it expires');
    }
    this.sender.close();
  }

  /** The dispatcher's consumer as the store has it now: position, holder, lease, lag. */
  relay(): Promise<ConsumerState | null> {
    return this.consumers.get(WEBHOOK_CONSUMER);
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
    checkEndpointFields(input);
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
    checkEndpointFields(patch);
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

  /**
   * The safety poll: dispatches only when the log has grown past what is known dispatched,
   * and looks for due deliveries. Both are reads when there is nothing to do: an idle server
   * commits nothing, however many deliveries wait.
   */
  private async poll(): Promise<void> {
    if (!this.running) return;
    try {
      if (!this.dispatching && (await this.options.accepted.lastSeq()) > this.dispatchedTo) {
        this.dispatch();
      }
    } catch (error) {
      this.log.error({ err: error }, 'webhook poll failed; the next poll retries');
    }
    this.pump();
  }

  /**
   * The dispatcher's lease, or null when this node is not to dispatch now. A lease held with
   * more than half its time left is used as it is (each batch renews it, in the transaction
   * that makes its deliveries); otherwise the consumer is read first (a read: a node that sees
   * another's lease running, or nothing left to dispatch, writes nothing) and then acquired or
   * renewed.
   */
  private async dispatchLease(seen: number): Promise<ConsumerLease | null> {
    const now = Date.now();
    const held = this.lease;
    if (held && held.leaseUntil - now > this.settings.dispatchLeaseMs / 2) return held;
    const state = await this.consumers.get(WEBHOOK_CONSUMER);
    if (state) {
      this.stats.lag = state.lag;
      if (state.position >= seen) {
        // Dispatched already, by this node or another.
        if (seen > this.dispatchedTo) this.dispatchedTo = seen;
        return null;
      }
      const other = state.holder !== null && state.holder !== this.holder;
      if (other && state.leaseUntil !== null && state.leaseUntil > now) {
        this.lease = null;
        this.stats.dispatching = false;
        return null;
      }
    }
    const lease = await this.consumers.acquire({
      name: WEBHOOK_CONSUMER,
      holder: this.holder,
      leaseMs: this.settings.dispatchLeaseMs,
      now,
      startAt: 'latest',
    });
    this.lease = lease;
    this.stats.dispatching = lease !== null;
    return lease;
  }

  /**
   * Reads the log after the dispatcher's position into deliveries (coalesced, one pass at a
   * time), under the `webhooks` consumer's lease: on several nodes one dispatches, and another
   * takes over once its lease expires.
   */
  private dispatch(): void {
    if (!this.running) return;
    if (this.dispatching) {
      this.dispatchAgain = true;
      return;
    }
    // Cleared when the pass settles, never inside it: a pass may end before its first await,
    // and its own `finally` would then run before this assignment and leave it set for good.
    this.dispatching = (async () => {
      try {
        do {
          this.dispatchAgain = false;
          // Every event up to `seen` is visible now: once a pass reads the log to its end,
          // they have all been dispatched.
          const seen = await this.options.accepted.lastSeq();
          let lease = await this.dispatchLease(seen);
          if (lease === null) break;
          for (;;) {
            const made = await this.store.dispatchDeliveries({
              lease,
              limit: 500,
              now: Date.now(),
              newId: () => randomId('dlv'),
              newSecret: generateWebhookSecret,
              payload: (event) => this.payload(event),
            });
            lease = made.lease;
            this.lease = lease;
            this.stats.dispatched += made.deliveries;
            if (made.deliveries > 0) this.pump();
            if (made.events < 500) break;
          }
          this.stats.lag = Math.max(0, seen - lease.position);
          if (seen > this.dispatchedTo) this.dispatchedTo = seen;
        } while (this.asked('dispatch'));
      } catch (error) {
        if (isAcceptedError(error) && error.code === 'LEASE_LOST') {
          // Taken over (this node stalled past its lease): the other node goes on.
          this.lease = null;
          this.stats.dispatching = false;
          this.log.warn({ err: error }, 'webhook dispatcher lease lost to another node');
        } else {
          this.log.error({ err: error }, 'webhook dispatch failed; the next event or poll retries');
        }
      }
    })().finally(() => {
      this.dispatching = null;
      if (this.asked('dispatch')) this.dispatch();
    });
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

  /**
   * Claims due deliveries up to the concurrency limit and sends them. It claims (a write)
   * only when the store says something is claimable now (`nextDeliveryAt`, a read, whose rule
   * is the claim's own), and otherwise sleeps until that time: deliveries waiting behind the
   * head of their line, or for their endpoint's next rate window, never wake it early.
   */
  private pump(): void {
    if (!this.running) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    // Cleared when the pass settles, never inside it: with every slot busy a pass ends before
    // its first await, and a `finally` inside would run before this assignment and leave
    // `pumping` set for good (every later pump() would only set pumpAgain: a stalled sender).
    this.pumping = (async () => {
      let wakeAt: number | null;
      try {
        do {
          this.pumpAgain = false;
          wakeAt = null;
          while (this.running) {
            const free = this.settings.concurrency - this.inFlight;
            if (free <= 0) break; // the end of an attempt pumps again
            const now = Date.now();
            const at = await this.store.nextDeliveryAt(now);
            if (at === null || at > now) {
              wakeAt = at;
              break;
            }
            const claimed = await this.store.claimDeliveries({
              now,
              limit: free,
              leaseMs: this.settings.timeoutMs * 2 + 5_000,
            });
            for (const delivery of claimed) this.launch(delivery);
            // Another node took it meanwhile: no wake-up at once (that could spin), the poll
            // looks again.
            if (claimed.length === 0) break;
          }
        } while (this.asked('pump'));
        this.wake(wakeAt);
      } catch (error) {
        this.log.error({ err: error }, 'webhook claim failed; the next poll retries');
      }
    })().finally(() => {
      this.pumping = null;
      // Asked for between the pass's last look and now: go again.
      if (this.asked('pump')) this.pump();
    });
  }

  /** Wakes the sender when the earliest claimable delivery comes due (unless the poll is first). */
  private wake(at: number | null): void {
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
    if (at === null || !this.running) return;
    const delay = at - Date.now();
    if (delay > this.settings.pollIntervalMs) return; // the poll comes first
    this.wakeTimer = setTimeout(
      () => {
        this.wakeTimer = null;
        this.pump();
      },
      Math.max(0, delay),
    );
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

  private async attempt(claimed: ClaimedDelivery): Promise<void> {
    const { delivery } = claimed;
    // The claim's clock reading: the second the endpoint's rate window counted this attempt
    // in is the second `webhook-timestamp` shows.
    const startedAt = claimed.claimedAt;
    const number = delivery.attempts + 1;
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
      lease: claimed.leaseToken,
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
  ): Omit<AttemptOutcome, 'attempt' | 'lease'> {
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
    // Schedules are bounded when set; the cut also covers one stored before the bounds.
    const bounded = Math.min(Math.max(0, delay), WEBHOOK_LIMITS.endpointRetryMaxMs);
    const wait =
      sent.retryAfterMs !== null && (sent.status === 429 || sent.status === 503)
        ? Math.min(Math.max(0, sent.retryAfterMs), WEBHOOK_LIMITS.retryAfterMaxMs)
        : jitter(Number.isFinite(bounded) ? bounded : WEBHOOK_LIMITS.endpointRetryMaxMs);
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
