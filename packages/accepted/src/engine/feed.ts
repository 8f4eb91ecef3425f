import { matchesEvent, type EventFilter, type OperationEvent } from '../domain/events.ts';
import type { Store, StoreHint } from '../store/store.ts';
import type { Logger } from './definition.ts';

interface Subscriber {
  filter: EventFilter;
  onEvent: (event: OperationEvent) => void;
}

/** What the feed holds and has done (for tests and metrics). */
export interface FeedStats {
  /** Subscribers now, in all. */
  subscribers: number;
  /** Operation ids with subscribers indexed under them (filters that name operations). */
  indexedOperations: number;
  /** Subscribers offered every event (filters that name no operation). */
  unindexed: number;
  /** Events dispatched so far. */
  dispatched: number;
  /** Subscribers offered an event so far (each filter checked once per offer). */
  offered: number;
}

/**
 * The node's one reader of the log tail. It learns of new events by store hints (or a slow
 * safety poll), reads each new event once (or takes it from the hint when the store has it at
 * hand), and hands it to every matching subscriber. Subscribers that need history read the
 * store themselves first; see `Accepted.events`.
 *
 * Subscribers whose filter names operations (a `wait`, an `events({ operationId })`) are
 * indexed by operation id: an event is offered to those of its own operation and to the
 * subscribers that name none, so a hundred thousand pending waits cost nothing per event of
 * another operation.
 */
export class EventFeed {
  private cursor = 0;
  private readonly byOperation = new Map<string, Set<Subscriber>>();
  private readonly unindexed = new Set<Subscriber>();
  private count = 0;
  private dispatched = 0;
  private offered = 0;
  private reading: Promise<void> | null = null;
  private target = 0;
  private unsubscribe: (() => void) | null = null;
  private poll: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: Store,
    private readonly pollMs: number,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    this.cursor = await this.store.lastSeq();
    this.target = this.cursor;
    this.unsubscribe = this.store.subscribe((hint) => this.onHint(hint));
    this.poll = setInterval(() => {
      if (this.count === 0) return;
      this.store.lastSeq().then(
        (seq) => this.advanceTo(seq),
        (error: unknown) => this.log.warn({ err: error }, 'event feed poll failed'),
      );
    }, this.pollMs);
    this.poll.unref();
  }

  /** The highest seq handed to subscribers (or skipped while nobody listened). */
  get position(): number {
    return this.cursor;
  }

  stats(): FeedStats {
    return {
      subscribers: this.count,
      indexedOperations: this.byOperation.size,
      unindexed: this.unindexed.size,
      dispatched: this.dispatched,
      offered: this.offered,
    };
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
  }

  /**
   * Calls `onEvent` with every new event that matches `filter`. Returns the function that
   * stops it (calling it again does nothing).
   */
  subscribe(filter: EventFilter, onEvent: (event: OperationEvent) => void): () => void {
    const subscriber: Subscriber = { filter, onEvent };
    const ids = filter.operationIds;
    if (ids && ids.size > 0) {
      for (const id of ids) {
        let set = this.byOperation.get(id);
        if (!set) this.byOperation.set(id, (set = new Set()));
        set.add(subscriber);
      }
    } else {
      this.unindexed.add(subscriber);
    }
    this.count++;
    let subscribed = true;
    return () => {
      if (!subscribed) return;
      subscribed = false;
      this.count--;
      if (!ids || ids.size === 0) {
        this.unindexed.delete(subscriber);
        return;
      }
      for (const id of ids) {
        const set = this.byOperation.get(id);
        if (set?.delete(subscriber) && set.size === 0) this.byOperation.delete(id);
      }
    };
  }

  private onHint(hint: StoreHint): void {
    const events = hint.events;
    const first = events?.[0];
    if (this.reading === null && events && first && first.seq <= this.cursor + 1) {
      for (const event of events) {
        if (event.seq <= this.cursor) continue;
        this.dispatch(event);
        this.cursor = event.seq;
      }
    }
    this.advanceTo(hint.lastSeq);
  }

  private advanceTo(seq: number): void {
    if (seq <= this.cursor) return;
    if (this.count === 0 && this.reading === null) {
      // Nobody listens: skip ahead. A later subscriber reads its history from the store.
      this.cursor = seq;
      return;
    }
    this.target = Math.max(this.target, seq);
    this.reading ??= this.readUpTo().finally(() => {
      this.reading = null;
    });
  }

  private async readUpTo(): Promise<void> {
    try {
      while (this.cursor < this.target) {
        const batch = await this.store.readEvents({ after: this.cursor, limit: 1000 });
        if (batch.length === 0) break;
        for (const event of batch) {
          this.dispatch(event);
          this.cursor = event.seq;
        }
      }
    } catch (error) {
      this.log.warn({ err: error }, 'event feed read failed; the next hint or poll retries');
    }
  }

  private dispatch(event: OperationEvent): void {
    this.dispatched++;
    const own = this.byOperation.get(event.operationId);
    if (own) for (const subscriber of own) this.offer(subscriber, event);
    for (const subscriber of this.unindexed) this.offer(subscriber, event);
  }

  private offer(subscriber: Subscriber, event: OperationEvent): void {
    this.offered++;
    if (!matchesEvent(subscriber.filter, event)) return;
    try {
      subscriber.onEvent(event);
    } catch (error) {
      this.log.error({ err: error }, 'event subscriber threw');
    }
  }
}
