import type { OperationEvent } from '../domain/events.ts';
import type { Accepted } from '../engine/accepted.ts';
import { Frame } from './frame.ts';
import type { Source, Subscription } from './subscription.ts';

/** Why the server closes a stream on its own. */
export type CloseReason = 'SHUTTING_DOWN' | 'SLOW_CONSUMER';

/** Settings of the push channels. Every field has a default; see docs/streams.md. */
export interface StreamOptions {
  /** Heartbeat comment (SSE) and ping (WebSocket) interval. Default 15 s. */
  heartbeatMs?: number;
  /** The `retry:` hint sent at the start of an SSE stream. Default 2000 ms. */
  retryMs?: number;
  /** Events held per subscription while its connection is congested. Default 256. */
  maxPending?: number;
  /** A connection that takes nothing for this long is closed (SLOW_CONSUMER). Default 60 s. */
  stallTimeoutMs?: number;
  /** Subscriptions per WebSocket connection. Default 100. */
  maxSubscriptions?: number;
  /** Secret that signs stream tokens (at least 32 characters). Default: random per process. */
  tokenSecret?: string;
}

export type StreamSettings = Readonly<Required<Omit<StreamOptions, 'tokenSecret'>>>;

/** The defaults of the stream options, stated once (`accepted serve` reads them here). */
export const STREAM_DEFAULTS: StreamSettings = Object.freeze({
  heartbeatMs: 15_000,
  retryMs: 2000,
  maxPending: 256,
  stallTimeoutMs: 60_000,
  maxSubscriptions: 100,
});

export function streamSettings(options: StreamOptions = {}): StreamSettings {
  const d = STREAM_DEFAULTS;
  return Object.freeze({
    heartbeatMs: Math.max(10, options.heartbeatMs ?? d.heartbeatMs),
    retryMs: Math.max(0, options.retryMs ?? d.retryMs),
    maxPending: Math.max(1, options.maxPending ?? d.maxPending),
    stallTimeoutMs: Math.max(10, options.stallTimeoutMs ?? d.stallTimeoutMs),
    maxSubscriptions: Math.max(1, options.maxSubscriptions ?? d.maxSubscriptions),
  });
}

export interface HubStats {
  connections: number;
  subscriptions: number;
  /** Whether the hub takes events from the feed (it does while anyone subscribes). */
  live: boolean;
  /** Events held for congested connections, in all and in the fullest subscription. */
  held: number;
  maxHeld: number;
  /** Subscriptions reading the log because they fell behind. */
  behind: number;
  /** Events dropped by conflation by the open subscriptions. */
  conflated: number;
}

/** A long-lived connection the hub keeps alive and closes at shutdown. */
export interface Connection {
  /** Since when the connection has been congested (epoch ms), or null. */
  readonly stalledSince: number | null;
  heartbeat(): void;
  close(reason: CloseReason): void;
}

/**
 * The node's fan-out point for push channels. It takes each new event once from the engine's
 * feed (which reads it from the store once), wraps it in one `Frame` (serialised at most once
 * per form), and offers it to the subscriptions indexed under its operation or its tenant, in
 * seq order. It also runs the one heartbeat timer for every connection, and closes
 * connections that stall or that are open at shutdown.
 */
export class StreamHub implements Source {
  private readonly byOperation = new Map<string, Set<Subscription>>();
  private readonly byTenant = new Map<string, Set<Subscription>>();
  private readonly connections = new Set<Connection>();
  private subscriptions = 0;
  private untail: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastHeartbeat = 0;
  private closed = false;

  constructor(
    readonly accepted: Accepted,
    readonly settings: StreamSettings,
    /**
     * Whether the HTTP server is Accepted's own (`accepted serve`, `createHttpServer`): then an
     * event stream takes its socket from node:http after the head. In a host's server (plugin,
     * handler) the response stays node:http's.
     */
    readonly ownsConnections = false,
  ) {}

  get position(): number {
    return this.accepted.tailPosition;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** What the push channels hold right now (for tests and metrics). */
  stats(): HubStats {
    const all = new Set<Subscription>();
    for (const set of this.byOperation.values()) for (const s of set) all.add(s);
    for (const set of this.byTenant.values()) for (const s of set) all.add(s);
    let held = 0;
    let maxHeld = 0;
    let behind = 0;
    let conflated = 0;
    for (const subscription of all) {
      held += subscription.holding;
      maxHeld = Math.max(maxHeld, subscription.holding);
      if (subscription.behind) behind++;
      conflated += subscription.conflated;
    }
    return {
      connections: this.connections.size,
      subscriptions: this.subscriptions,
      live: this.untail !== null,
      held,
      maxHeld,
      behind,
      conflated,
    };
  }

  /** Indexes a subscription and starts it (catch-up from its cursor, then live). */
  add(subscription: Subscription): void {
    const ids = subscription.filter.operationIds;
    if (ids) {
      for (const id of ids) this.index(this.byOperation, id, subscription);
    } else {
      this.index(this.byTenant, subscription.filter.tenant ?? '', subscription);
    }
    this.subscriptions++;
    this.untail ??= this.accepted.tail((event) => this.dispatch(event));
    subscription.start();
  }

  remove(subscription: Subscription): void {
    subscription.end();
    const ids = subscription.filter.operationIds;
    let removed = false;
    if (ids) {
      for (const id of ids) removed = this.unindex(this.byOperation, id, subscription) || removed;
    } else {
      removed = this.unindex(this.byTenant, subscription.filter.tenant ?? '', subscription);
    }
    if (!removed) return;
    this.subscriptions--;
    if (this.subscriptions === 0) {
      // Nobody listens: let the feed skip ahead; later subscribers read the log.
      this.untail?.();
      this.untail = null;
    }
  }

  attach(connection: Connection): void {
    this.connections.add(connection);
    if (!this.timer) {
      const { heartbeatMs, stallTimeoutMs } = this.settings;
      this.lastHeartbeat = Date.now();
      this.timer = setInterval(() => this.sweep(), Math.min(heartbeatMs, stallTimeoutMs / 2));
      this.timer.unref();
    }
  }

  detach(connection: Connection): void {
    this.connections.delete(connection);
    if (this.connections.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  /** Closes every connection (stating the reason) and refuses new ones. */
  close(reason: CloseReason = 'SHUTTING_DOWN'): void {
    this.closed = true;
    for (const connection of [...this.connections]) connection.close(reason);
  }

  private index(map: Map<string, Set<Subscription>>, key: string, subscription: Subscription) {
    let set = map.get(key);
    if (!set) map.set(key, (set = new Set()));
    set.add(subscription);
  }

  private unindex(map: Map<string, Set<Subscription>>, key: string, subscription: Subscription) {
    const set = map.get(key);
    if (!set?.delete(subscription)) return false;
    if (set.size === 0) map.delete(key);
    return true;
  }

  private dispatch(event: OperationEvent): void {
    const one = this.byOperation.get(event.operationId);
    const all = this.byTenant.get(event.tenant);
    if (!one && !all) return;
    const frame = new Frame(event);
    if (one) for (const subscription of one) subscription.offer(frame);
    if (all) for (const subscription of all) subscription.offer(frame);
  }

  /** Heartbeats, and the last resort for connections that take nothing for too long. */
  private sweep(): void {
    const now = Date.now();
    const beat = now - this.lastHeartbeat >= this.settings.heartbeatMs;
    if (beat) this.lastHeartbeat = now;
    for (const connection of [...this.connections]) {
      const since = connection.stalledSince;
      if (since !== null && now - since >= this.settings.stallTimeoutMs) {
        connection.close('SLOW_CONSUMER');
      } else if (beat) {
        connection.heartbeat();
      }
    }
  }
}
