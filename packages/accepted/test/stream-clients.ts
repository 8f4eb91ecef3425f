import http from 'node:http';
import { createParser } from 'eventsource-parser';
import WebSocket from 'ws';

/** One SSE message as the client parsed it. */
export interface SseMessage {
  id: string | undefined;
  event: string | undefined;
  data: string;
}

export interface WireEventLike {
  seq: number;
  type: string;
  operationId: string;
  version: number;
  labels: Record<string, string>;
  data: { status: string; progress?: { fraction?: number; message?: string; data?: unknown } };
}

/** A real SSE client over its own socket: parses what arrives, resolves waits on it. */
export class SseClient {
  readonly messages: SseMessage[] = [];
  comments = 0;
  retry: number | null = null;
  status = 0;
  headers: http.IncomingHttpHeaders = {};
  body = '';
  /** Resolves when the server ends the response (or the socket closes). */
  readonly ended: Promise<void>;
  private request: http.ClientRequest;
  private waiters: (() => void)[] = [];
  private response: http.IncomingMessage | null = null;

  constructor(url: string, headers: Record<string, string> = {}) {
    const parser = createParser({
      onEvent: (message) => {
        this.messages.push({ id: message.id, event: message.event, data: message.data });
        this.notify();
      },
      onComment: () => {
        this.comments++;
        this.notify();
      },
      onRetry: (ms) => {
        this.retry = ms;
      },
    });
    let end!: () => void;
    this.ended = new Promise((resolve) => (end = resolve));
    this.request = http.get(
      url,
      { headers: { accept: 'text/event-stream', ...headers }, agent: false },
      (response) => {
        this.response = response;
        this.status = response.statusCode ?? 0;
        this.headers = response.headers;
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          if (this.status === 200) parser.feed(chunk);
          else this.body += chunk;
        });
        response.on('end', end);
        response.on('close', end);
        this.notify();
      },
    );
    this.request.on('error', end);
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }

  /** Resolves once `check` holds after some message arrived (or at once). */
  async until(check: () => boolean, what = 'condition', ms = 15_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check()) {
      if (Date.now() > deadline) {
        throw new Error(
          `SSE: ${what} not met; got ${JSON.stringify(this.messages.map((m) => m.event))}`,
        );
      }
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  /** Resolves when the response headers arrived. */
  async opened(): Promise<void> {
    await this.until(() => this.status !== 0, 'response');
  }

  /** The events (not snapshots or stream notices), parsed. */
  get events(): WireEventLike[] {
    return this.messages
      .filter((m) => m.event?.startsWith('operation.') && m.event !== 'operation.snapshot')
      .map((m) => JSON.parse(m.data) as WireEventLike);
  }

  get seqs(): number[] {
    return this.events.map((e) => e.seq);
  }

  /** The id of the last message with one (what an EventSource resends as Last-Event-ID). */
  get lastId(): string | undefined {
    return this.messages.filter((m) => m.id !== undefined).at(-1)?.id;
  }

  /** Stop reading, as a stalled client does (the socket stays open). */
  pause(): void {
    this.response?.pause();
    this.response?.socket.pause();
  }

  resume(): void {
    this.response?.socket.resume();
    this.response?.resume();
  }

  close(): void {
    this.request.destroy();
  }
}

/** A WebSocket client that records every message. */
export class WsClient {
  readonly messages: Record<string, unknown>[] = [];
  pings = 0;
  closeCode: number | null = null;
  closeReason = '';
  readonly socket: WebSocket;
  readonly closed: Promise<void>;

  constructor(url: string, headers: Record<string, string> = {}) {
    this.socket = new WebSocket(url, { headers });
    this.socket.on('message', (data) =>
      this.messages.push(JSON.parse((data as Buffer).toString('utf8')) as Record<string, unknown>),
    );
    this.socket.on('ping', () => this.pings++);
    this.closed = new Promise((resolve) =>
      this.socket.on('close', (code, reason) => {
        this.closeCode = code;
        this.closeReason = String(reason);
        resolve();
      }),
    );
  }

  /** Resolves when open; rejects with the HTTP status of a refused upgrade. */
  opened(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.socket.readyState === WebSocket.OPEN) resolve();
      this.socket.once('open', () => resolve());
      this.socket.once('unexpected-response', (_request, response) =>
        reject(new Error(`upgrade refused: ${response.statusCode}`)),
      );
      this.socket.once('error', reject);
    });
  }

  send(message: Record<string, unknown>): void {
    this.socket.send(JSON.stringify(message));
  }

  /** The first message that satisfies `match`, waiting for it if needed. */
  async next(
    match: (message: Record<string, unknown>) => boolean,
    ms = 15_000,
  ): Promise<Record<string, unknown>> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.messages.find(match);
      if (found) return found;
      if (Date.now() > deadline) {
        throw new Error(
          `WS: no matching message; got ${JSON.stringify(this.messages.map((m) => m.type))}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Sends a request and waits for its ack or error (matched by id). */
  async request(message: Record<string, unknown>): Promise<Record<string, unknown>> {
    this.send(message);
    return this.next((m) => (m.type === 'ack' || m.type === 'error') && m.id === message.id);
  }

  /** The events of one subscription, parsed. */
  events(subscription: unknown): WireEventLike[] {
    return this.messages
      .filter((m) => m.type === 'event' && m.subscription === subscription)
      .map((m) => m.event as WireEventLike);
  }

  close(): void {
    this.socket.terminate();
  }
}
