// Shared by the chaos tests (chaos-pg, chaos-disk): requests that always end in an answer or a
// recorded failure (never a hang), and an SSE client of the tenant's log that resumes with
// Last-Event-ID whenever its stream drops.
import http from 'node:http';
import { createParser } from 'eventsource-parser';

/**
 * Long enough never to cut a slow but working answer on a loaded machine; short enough that a
 * request the server never answers fails the test instead of hanging it.
 */
export const HANG_MS = 60_000;

/** What one request got: an HTTP answer, or `status` 0 and why there was none. */
export interface Answer {
  status: number;
  contentType: string;
  retryAfter: string | null;
  /** The problem document's `code`, when the body is one. */
  code: string | null;
  text: string;
  /** Set when there was no answer: the connection failed or the request hung (timeout). */
  failure: string | null;
}

/** Sends one request and reads the whole answer, within HANG_MS. */
export async function request(
  url: string,
  init: { method?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<Answer> {
  try {
    const response = await fetch(url, {
      method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
      headers: {
        ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...init.headers,
      },
      ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
      signal: AbortSignal.timeout(HANG_MS),
    });
    const text = await response.text();
    const contentType = response.headers.get('content-type') ?? '';
    let code: string | null = null;
    if (contentType.startsWith('application/problem+json')) {
      try {
        const parsed = JSON.parse(text) as { code?: unknown };
        code = typeof parsed.code === 'string' ? parsed.code : null;
      } catch {
        code = null;
      }
    }
    return {
      status: response.status,
      contentType,
      retryAfter: response.headers.get('retry-after'),
      code,
      text,
      failure: null,
    };
  } catch (error) {
    const name = (error as Error).name;
    const failure =
      name === 'TimeoutError'
        ? `no answer within ${HANG_MS} ms (a hang)`
        : `no answer: ${String((error as { cause?: unknown }).cause ?? error)}`;
    return { status: 0, contentType: '', retryAfter: null, code: null, text: '', failure };
  }
}

/** A short sentence about an answer, for failure messages. */
export function summary(answer: Answer): string {
  if (answer.failure !== null) return answer.failure;
  return `${answer.status} ${answer.code ?? ''} ${answer.text.slice(0, 300)}`.trim();
}

/** Waits `ms` (pacing, not a measurement). */
export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A client of `GET /v1/events` (the whole tenant's log) as a careful EventSource is: it
 * records every event it receives (seq, type, operation) and, whenever its stream ends, fails
 * or is refused, opens it again with `Last-Event-ID` set to the id of the last event received.
 * `cut()` drops the connection from the client's side (a network blip).
 */
export class ResumingEventStream {
  /** Every event received, in the order received, over all connections. */
  readonly events: LogEvent[] = [];
  /** Events whose SSE `id:` is not their seq, or that came without one (must stay empty). */
  readonly badIds: string[] = [];
  /** Answers other than 200 to an open (status and body). */
  readonly refusals: { status: number; body: string }[] = [];
  /** Connections opened, and how many of them resumed with Last-Event-ID. */
  connects = 0;
  resumes = 0;
  /** Streams that ended or failed without the client cutting them. */
  drops = 0;
  /**
   * Every connection: the Last-Event-ID it sent, its status, what it received and how it
   * ended (for the failure message of a gap or a repeat).
   */
  readonly connections: {
    from: string | null;
    status: number;
    first: number | null;
    last: number | null;
    received: number;
    ended: string;
  }[] = [];
  private lastId: string | undefined;
  /** Drops the open connection (as the client's own doing), or null between connections. */
  private cutCurrent: (() => void) | null = null;
  private stopped = false;

  constructor(
    private readonly baseUrl: string,
    readonly name: string,
    private readonly reconnectMs = 200,
  ) {
    this.open();
  }

  /** The last seq received, or 0. */
  get last(): number {
    return this.events.at(-1)?.seq ?? 0;
  }

  private open(): void {
    if (this.stopped) return;
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (this.lastId !== undefined) {
      headers['last-event-id'] = this.lastId;
      this.resumes++;
    }
    this.connects++;
    const connection = {
      from: this.lastId ?? null,
      status: 0,
      first: null as number | null,
      last: null as number | null,
      received: 0,
      ended: '',
    };
    this.connections.push(connection);
    let over = false;
    let cutByUs = false;
    const again = (error?: unknown) => {
      if (over) return;
      over = true;
      connection.ended = cutByUs ? 'cut' : error instanceof Error ? error.message : 'ended';
      if (this.cutCurrent === cut) this.cutCurrent = null;
      if (!cutByUs && !this.stopped) this.drops++;
      if (!this.stopped) setTimeout(() => this.open(), this.reconnectMs).unref();
    };
    const parser = createParser({
      onEvent: (message) => {
        if (!message.event?.startsWith('operation.')) return;
        const event = JSON.parse(message.data) as LogEvent;
        if (message.id !== String(event.seq)) {
          this.badIds.push(`event seq ${event.seq} sent with id ${String(message.id)}`);
        }
        this.events.push({ seq: event.seq, type: event.type, operationId: event.operationId });
        connection.first ??= event.seq;
        connection.last = event.seq;
        connection.received++;
        if (message.id !== undefined) this.lastId = message.id;
      },
    });
    const req = http.get(`${this.baseUrl}/v1/events`, { headers, agent: false }, (res) => {
      res.setEncoding('utf8');
      connection.status = res.statusCode ?? 0;
      if (res.statusCode !== 200) {
        let body = '';
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => this.refusals.push({ status: res.statusCode ?? 0, body }));
        res.on('close', () => again());
        return;
      }
      res.on('data', (chunk: string) => parser.feed(chunk));
      res.on('close', () => again());
    });
    const cut = () => {
      cutByUs = true;
      req.destroy();
    };
    req.on('error', (error) => again(error));
    req.on('close', () => again());
    this.cutCurrent = cut;
  }

  /** The connections around the one that received `seq` (or of the first that came after). */
  connectionsNear(seq: number): string {
    const i = Math.max(
      0,
      this.connections.findIndex((c) => c.last !== null && c.last >= seq),
    );
    return JSON.stringify(this.connections.slice(Math.max(0, i - 2), i + 3));
  }

  /** Drops the connection; the client reconnects by itself, with Last-Event-ID. */
  cut(): void {
    this.cutCurrent?.();
  }

  stop(): void {
    this.stopped = true;
    this.cutCurrent?.();
    this.cutCurrent = null;
  }
}

/**
 * Resolves once `check` holds, polling; after `ms` (a condition never met: a hang, not a slow
 * answer) fails saying what was awaited and the state of things then.
 */
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  ms: number,
  state: () => string = () => '',
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not met within ${ms} ms: ${what}. ${state()}`);
    await pause(10);
  }
}

/** One event of the log, as a client received it or as the events table has it. */
export interface LogEvent {
  seq: number;
  type: string;
  operationId: string;
}

/**
 * How `received` (the events a client got, in the order it got them) differs from `log`
 * (every event of the log, ascending) from the client's first event on: `problems` is empty
 * when it differs only as docs/streams.md allows; `at` is the first seq at fault;
 * `conflated` counts the progress events rightly dropped. Every event is received at most once, in seq order,
 * and every event of the log is received, but for one exception: a stale `operation.progress`
 * event may be dropped for a slow client (conflation) when a later event of the same
 * operation reaches it ("the latest state and every other event are kept").
 */
export function coverageProblems(
  received: readonly LogEvent[],
  log: readonly LogEvent[],
): { problems: string[]; at: number | null; conflated: number } {
  const first = received[0];
  if (first === undefined) return { problems: ['received nothing'], at: null, conflated: 0 };
  const expected = log.filter((event) => event.seq >= first.seq);
  const problems: string[] = [];
  const list = (seqs: number[]) =>
    `${seqs.length} (${seqs.slice(0, 20).join(', ')}${seqs.length > 20 ? ', ...' : ''})`;
  const bySeq = new Map(expected.map((event) => [event.seq, event]));
  const seen = new Map<number, number>();
  /** The last seq received of each operation. */
  const lastOf = new Map<string, number>();
  for (const event of received) {
    seen.set(event.seq, (seen.get(event.seq) ?? 0) + 1);
    lastOf.set(event.operationId, event.seq);
  }
  const repeated = [...seen].filter(([, n]) => n > 1).map(([seq]) => seq);
  if (repeated.length > 0) problems.push(`repeated ${list(repeated)}`);
  const backwards = received
    .filter((event, i) => i > 0 && event.seq <= (received[i - 1]?.seq ?? 0))
    .map((event) => event.seq);
  if (backwards.length > 0) problems.push(`out of order at ${list(backwards)}`);
  const unlike = received
    .filter((event) => {
      const logged = bySeq.get(event.seq);
      return logged?.type !== event.type || logged.operationId !== event.operationId;
    })
    .map((event) => event.seq);
  if (unlike.length > 0) problems.push(`not in the log as received ${list(unlike)}`);
  const missing = expected.filter((event) => !seen.has(event.seq));
  const conflated = (event: LogEvent) =>
    event.type === 'operation.progress' && (lastOf.get(event.operationId) ?? 0) > event.seq;
  const lost = missing.filter((event) => !conflated(event)).map((event) => event.seq);
  if (lost.length > 0) problems.push(`missing ${list(lost)}`);
  const at = Math.min(
    repeated[0] ?? Infinity,
    backwards[0] ?? Infinity,
    unlike[0] ?? Infinity,
    lost[0] ?? Infinity,
  );
  return {
    problems,
    at: Number.isFinite(at) ? at : null,
    conflated: missing.length - lost.length,
  };
}
