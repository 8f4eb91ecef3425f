import type { OperationEvent } from '../domain/events.ts';
import { toWireEvent } from '../wire/monitor.ts';

/**
 * One event, serialised once for every subscriber of this node: the wire JSON, and the SSE
 * bytes built from it. Each form is made the first time a subscriber needs it, then shared.
 */
export class Frame {
  private jsonText: string | null = null;
  private sseBytes: Buffer | null = null;

  constructor(readonly event: OperationEvent) {}

  /** The event as the wire JSON (see docs/streams.md). */
  get json(): string {
    return (this.jsonText ??= JSON.stringify(toWireEvent(this.event)));
  }

  /** `id:`, `event:` and `data:` lines and the blank line that dispatches them. */
  get sse(): Buffer {
    // JSON text never contains a raw line break, so the data fits one `data:` line.
    return (this.sseBytes ??= Buffer.from(
      `id: ${this.event.seq}\nevent: ${this.event.type}\ndata: ${this.json}\n\n`,
    ));
  }
}

/** An SSE message of the stream itself (a snapshot, a closing notice). */
export function sseMessage(event: string, data: unknown, id?: number): string {
  return `${id === undefined ? '' : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}
