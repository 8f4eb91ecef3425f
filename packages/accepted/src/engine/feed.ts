import { matchesEvent, type EventFilter, type OperationEvent } from '../domain/events.ts';
import type { Store, StoreHint } from '../store/store.ts';
import type { Logger } from './definition.ts';

interface Subscriber {
  filter: EventFilter;
  onEvent: (event: OperationEvent) => void;
}

/**
 * The node's one reader of the log tail. It learns of new events by store hints (or a slow
 * safety poll), reads each new event once (or takes it from the hint when the store has it at
 * hand), and hands it to every matching subscriber. Subscribers that need history read the
 * store themselves first; see `Accepted.events`.
 */
export class EventFeed {
  private cursor = 0;
  private readonly subscribers = new Set<Subscriber>();
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
      if (this.subscribers.size === 0) return;
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

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
  }

  subscribe(filter: EventFilter, onEvent: (event: OperationEvent) => void): () => void {
    const subscriber = { filter, onEvent };
    this.subscribers.add(subscriber);
    return () => this.subscribers.delete(subscriber);
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
    if (this.subscribers.size === 0 && this.reading === null) {
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
    for (const subscriber of this.subscribers) {
      if (!matchesEvent(subscriber.filter, event)) continue;
      try {
        subscriber.onEvent(event);
      } catch (error) {
        this.log.error({ err: error }, 'event subscriber threw');
      }
    }
  }
}
