import type { FastifyReply, FastifyRequest } from 'fastify';
import type { EventSelection } from '../engine/accepted.ts';
import type { Logger } from '../domain/logger.ts';
import { monitorAt } from '../wire/mount.ts';
import { isTerminal, type Operation } from '../domain/operation.ts';
import { detachFromHttp, responseWire, type StreamWire } from './detach.ts';
import { sseMessage, type Frame } from './frame.ts';
import type { CloseReason, Connection, StreamHub } from './hub.ts';
import { Subscription, type Sink } from './subscription.ts';

/** How long a closed SSE response may still flush to its client before the socket is cut. */
const CLOSE_GRACE_MS = 5000;

/**
 * One Server-Sent Events response carrying one subscription. Writes go straight to the
 * socket (taken from node:http after the head where the server is ours, `detach.ts`); when
 * its buffer is full (`write` returns false) the subscription holds its events until `drain`.
 */
class SseConnection implements Sink, Connection {
  congested = false;
  stalledSince: number | null = null;
  private subscription: Subscription | null = null;
  private done = false;

  constructor(
    private readonly wire: StreamWire,
    private readonly hub: StreamHub,
    private readonly log: Logger,
  ) {
    wire.onClose(() => this.cleanup());
  }

  /** Subscribes and starts: catch-up from the cursor, then live events. */
  begin(subscription: Subscription): void {
    this.subscription = subscription;
    this.hub.attach(this);
    this.hub.add(subscription);
  }

  send(chunk: string | Buffer): void {
    if (!this.wire.write(chunk)) this.congest();
  }

  write(_subscription: Subscription, frame: Frame): void {
    this.send(frame.sse);
  }

  private congest(): void {
    if (this.congested) return;
    this.congested = true;
    this.stalledSince = Date.now();
    this.wire.onceDrain(() => {
      this.congested = false;
      this.stalledSince = null;
      this.subscription?.resume();
    });
  }

  complete(): void {
    this.finish();
  }

  fail(_subscription: Subscription, error: unknown): void {
    this.log.warn({ err: error }, 'event stream failed to read the log; closing it');
    this.finish();
  }

  heartbeat(): void {
    if (!this.congested) this.send(': keepalive\n\n');
  }

  close(reason: CloseReason): void {
    if (this.done) return;
    this.finish(sseMessage('stream.closing', { reason }));
    // A client that reads nothing would hold the socket open while the end waits to flush.
    setTimeout(() => this.wire.destroy(), CLOSE_GRACE_MS).unref();
  }

  private finish(last?: string): void {
    if (this.done) return;
    this.done = true;
    this.wire.end(last);
    this.cleanup();
  }

  private cleanup(): void {
    this.done = true;
    if (this.subscription) this.hub.remove(this.subscription);
    this.hub.detach(this);
  }
}

export interface EventStreamRequest {
  /** Tenant and filters; `after` is where the stream starts. */
  selection: EventSelection & { tenant: string; after: number };
  /** A stream of one operation: it starts with this snapshot (when given) and ends after a terminal event. */
  operationId?: string;
  /** The operation and the seq of the last event it reflects (`accepted.snapshot`). */
  snapshot?: { operation: Operation; seq: number };
}

/**
 * Answers with an event stream: headers, the `retry:` hint, the snapshot if any, then every
 * event of the selection after its cursor (from the log) and live ones as they come.
 */
export function openEventStream(
  hub: StreamHub,
  request: FastifyRequest,
  reply: FastifyReply,
  stream: EventStreamRequest,
): FastifyReply {
  const headers = {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
  };
  if (request.method === 'HEAD') return reply.status(200).headers(headers).send();
  // The route awaited the store before this: the client may have gone, or the server begun
  // to stop, meanwhile. Neither may leave a stream attached to the hub that nothing ends.
  const socket = reply.raw.socket;
  if (reply.raw.destroyed || request.raw.destroyed || !socket || socket.destroyed) {
    return reply.hijack();
  }
  void reply.hijack();
  const res = reply.raw;
  if (hub.isClosed) {
    // As a stream open at shutdown is closed: the notice, then the end (an EventSource
    // reconnects, to another node or after the restart; a status other than 200 would stop it).
    responseWire(res, headers).end(
      `retry: ${hub.settings.retryMs}\n\n${sseMessage('stream.closing', { reason: 'SHUTTING_DOWN' })}`,
    );
    return reply;
  }
  // On a server of ours the stream keeps the socket alone; in a host's server the response
  // stays node:http's (the host's own listeners on it, access logs and metrics, see it end).
  const wire =
    (hub.ownsConnections ? detachFromHttp(request.raw, res, headers) : null) ??
    responseWire(res, headers);
  const connection = new SseConnection(wire, hub, request.log);
  connection.send(`retry: ${hub.settings.retryMs}\n\n`);
  const { snapshot, operationId } = stream;
  if (snapshot) {
    const operation = monitorAt(snapshot.operation, request.acceptedPrefix);
    connection.send(
      sseMessage(
        'operation.snapshot',
        { seq: snapshot.seq, type: 'operation.snapshot', operationId, operation },
        snapshot.seq,
      ),
    );
    if (isTerminal(snapshot.operation.status)) {
      connection.complete();
      return reply;
    }
  }
  connection.begin(
    new Subscription(hub, connection, {
      selection: stream.selection,
      operationId,
      maxPending: hub.settings.maxPending,
    }),
  );
  return reply;
}
