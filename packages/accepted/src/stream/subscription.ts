import {
  endsOperationStream,
  matchesEvent,
  type EventFilter,
  type OperationEvent,
} from '../domain/events.ts';
import type { Accepted, EventSelection } from '../engine/accepted.ts';
import { Frame } from './frame.ts';

/** Events read from the log per page while a subscription catches up. */
export const CATCH_UP_PAGE = 500;

/** A connection that subscriptions write to (an SSE response, a WebSocket). */
export interface Sink {
  /** True while the connection's send buffer is over its high-water mark. */
  readonly congested: boolean;
  /**
   * Writes one event of `subscription`. When this makes the connection congested, the sink
   * calls `resume()` of each of its subscriptions once it has drained.
   */
  write(subscription: Subscription, frame: Frame): void;
  /** The subscription is over: its one operation reached a terminal event. */
  complete(subscription: Subscription): void;
  /** Reading the log failed: the subscription cannot go on. */
  fail(subscription: Subscription, error: unknown): void;
}

/** Where a subscription gets live events and the feed's position. */
export interface Source {
  readonly accepted: Accepted;
  /** The highest seq the node's feed has dispatched. */
  readonly position: number;
}

export interface SubscriptionOptions {
  /** Tenant and filters; `after` is the cursor to start from. */
  selection: EventSelection & { tenant: string; after: number };
  /** Set for a subscription to one operation: it completes after a terminal event. */
  operationId?: string;
  /** Events held for a congested connection before falling back to the log. */
  maxPending: number;
}

function isProgress(event: OperationEvent): boolean {
  return event.type === 'operation.progress';
}

/**
 * Drops each `operation.progress` event that a later event of the same operation in `events`
 * supersedes (conflation): the latest state and every other event are kept, in order.
 */
export function conflate(events: readonly OperationEvent[]): OperationEvent[] {
  const later = new Set<string>();
  const kept: OperationEvent[] = [];
  for (let i = events.length - 1; i >= 0; i--) {
    const event = events[i] as OperationEvent;
    if (!(isProgress(event) && later.has(event.operationId))) kept.push(event);
    later.add(event.operationId);
  }
  return kept.reverse();
}

/**
 * One subscriber's cursor over the log. It starts by reading the log after its cursor
 * (catch-up), then takes live events from the hub. While its connection is congested it
 * holds events (conflating superseded progress); past `maxPending` it drops them and goes
 * back to reading the log once the connection drains, so memory stays bounded and nothing is
 * lost.
 */
export class Subscription {
  readonly filter: EventFilter;
  readonly operationId: string | undefined;
  /** The last seq written to the connection (or passed over as already known). */
  private cursor: number;
  /** The highest seq written or held. */
  private queued: number;
  private mode: 'catch-up' | 'live' | 'ended' = 'catch-up';
  private reading = false;
  /** Fell behind (too much held): while catching up, superseded progress is dropped. */
  private lagging = false;
  /** Events held while the connection is congested; null where conflation dropped one. */
  private pending: (Frame | null)[] | null = null;
  private head = 0;
  private held = 0;
  /** Index in `pending` of each operation's held progress event. */
  private heldProgress: Map<string, number> | null = null;
  /** Events dropped by conflation (for tests and metrics). */
  conflated = 0;

  constructor(
    private readonly source: Source,
    readonly sink: Sink,
    private readonly options: SubscriptionOptions,
    /** The id the client knows this subscription by (WebSocket), or ''. */
    readonly id = '',
  ) {
    const { selection } = options;
    this.operationId = options.operationId;
    this.cursor = selection.after;
    this.queued = selection.after;
    const ids = [
      ...(selection.operationId === undefined ? [] : [selection.operationId]),
      ...(selection.operationIds ?? []),
    ];
    const set = <T>(values: readonly T[] | undefined) =>
      values && values.length > 0 ? new Set(values) : undefined;
    this.filter = {
      tenant: selection.tenant,
      operationIds: set(ids),
      types: set(selection.types),
      operationTypes: set(selection.operationTypes),
      labels:
        selection.labels && Object.keys(selection.labels).length > 0 ? selection.labels : undefined,
    };
  }

  /** Events held for the congested connection right now. */
  get holding(): number {
    return this.held;
  }

  /** True while it reads the log because it fell behind. */
  get behind(): boolean {
    return this.lagging;
  }

  /** The cursor a client resumes from: the last seq it was sent. */
  get position(): number {
    return this.cursor;
  }

  get ended(): boolean {
    return this.mode === 'ended';
  }

  /** Starts reading the log after the cursor; live events follow once it is caught up. */
  start(): void {
    void this.catchUp();
  }

  /** Stops for good; nothing more is written. */
  end(): void {
    this.mode = 'ended';
    this.pending = null;
    this.heldProgress = null;
    this.held = 0;
  }

  /** A live event from the hub, in seq order. */
  offer(frame: Frame): void {
    if (this.mode !== 'live') return; // catching up: the log read covers it
    const event = frame.event;
    if (event.seq <= this.queued || !matchesEvent(this.filter, event)) return;
    this.queued = event.seq;
    if (this.held === 0 && !this.sink.congested) {
      this.emit(frame, true);
      return;
    }
    this.hold(frame);
    if (this.held > this.options.maxPending) {
      // Too far behind: let go of what is held and read it from the log once drained.
      this.pending = null;
      this.heldProgress = null;
      this.held = 0;
      this.queued = this.cursor;
      this.mode = 'catch-up';
      this.lagging = true;
    }
  }

  /** The connection drained: write what is held, then catch up from the log if needed. */
  resume(): void {
    while (this.held > 0 && this.pending && !this.sink.congested) {
      const frame = this.pending[this.head];
      this.pending[this.head++] = null;
      if (!frame) continue;
      this.held--;
      if (isProgress(frame.event)) this.heldProgress?.delete(frame.event.operationId);
      this.emit(frame, true);
      if (this.mode === 'ended') return;
    }
    if (this.held === 0) {
      this.pending = null;
      this.heldProgress = null;
      this.head = 0;
    }
    if (this.mode === 'catch-up' && !this.sink.congested) void this.catchUp();
  }

  /** Read through a call: the mode may change while a read is awaited. */
  private catchingUp(): boolean {
    return this.mode === 'catch-up';
  }

  private hold(frame: Frame): void {
    const pending = (this.pending ??= []);
    const progress = (this.heldProgress ??= new Map<string, number>());
    const opId = frame.event.operationId;
    const superseded = progress.get(opId);
    if (superseded !== undefined) {
      // A newer event of the operation makes its held progress event stale.
      pending[superseded] = null;
      progress.delete(opId);
      this.held--;
      this.conflated++;
    }
    if (isProgress(frame.event)) progress.set(opId, pending.length);
    pending.push(frame);
    this.held++;
  }

  /**
   * Writes one event. `last`: no later event of this subscription is known, so a terminal
   * event of its one operation completes it; its deletion always does.
   */
  private emit(frame: Frame, last: boolean): void {
    const event = frame.event;
    this.sink.write(this, frame);
    this.cursor = event.seq;
    if (this.operationId !== undefined && endsOperationStream(event.type, last)) {
      this.end();
      this.sink.complete(this);
    }
  }

  /**
   * Reads the log after the cursor, a page at a time, while the connection takes it. Goes
   * live once a short page was read and the feed dispatched nothing meanwhile (an event it
   * dispatched during the read might be missing from the page).
   */
  private async catchUp(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      while (this.catchingUp() && !this.sink.congested) {
        const mark = this.source.position;
        const page = await this.source.accepted.readEvents({
          ...this.options.selection,
          after: this.cursor,
          limit: CATCH_UP_PAGE,
        });
        if (!this.catchingUp()) return;
        const short = page.length < CATCH_UP_PAGE;
        // A resumed client gets every event; one that fell behind gets the latest state.
        const kept = this.lagging ? conflate(page) : page;
        this.conflated += page.length - kept.length;
        for (let i = 0; i < kept.length; i++) {
          this.emit(new Frame(kept[i] as OperationEvent), short && i === kept.length - 1);
          if (!this.catchingUp()) return;
        }
        const lastRead = page[page.length - 1];
        if (lastRead && lastRead.seq > this.cursor) this.cursor = lastRead.seq;
        if (short && this.source.position <= mark) {
          this.queued = this.cursor;
          this.mode = 'live';
          this.lagging = false;
        }
      }
    } catch (error) {
      if (this.mode !== 'ended') {
        this.end();
        this.sink.fail(this, error);
      }
    } finally {
      this.reading = false;
    }
  }
}
