import {
  AbortError,
  NetworkError,
  OperationFailedError,
  ProblemError,
  TimeoutError,
} from './errors.ts';
import { readSse } from './sse.ts';
import type {
  Operation,
  OperationMap,
  OperationPage,
  OperationStatus,
  Problem,
  StreamEvent,
  StreamToken,
  WebSocketConstructor,
} from './types.ts';

/** Retries of one request: exponential backoff with full jitter, or `Retry-After` when sent. */
export interface RetryOptions {
  /** Retries after the first attempt. Default 4. */
  retries?: number;
  /** Ceiling of the first delay, doubled on every retry. Default 200 ms. */
  baseMs?: number;
  /** Largest ceiling of a delay. Default 10000 ms. */
  maxMs?: number;
}

export interface ClientOptions {
  /** The API's URL, such as `https://api.example.com` (no `/v1`). */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <apiKey>`. Keep it out of web pages. */
  apiKey?: string;
  /** A stream token (`POST /v1/stream-tokens`) for `events()` and the WebSocket, in pages. */
  accessToken?: string;
  /** The `fetch` to use. Default: the global one. */
  fetch?: typeof fetch;
  /**
   * The WebSocket class for `via: 'ws'`. Default: the global one (browsers, Node.js 22+); on
   * Node.js 20, pass `WebSocket` from the `ws` package.
   */
  WebSocket?: WebSocketConstructor;
  /** Retries of failed requests, or `false` for none. */
  retry?: RetryOptions | false;
  /** Headers sent with every request. */
  headers?: Record<string, string>;
}

/** What every call takes. */
export interface CallOptions {
  /** Aborts the call and its requests; it rejects with {@link AbortError}. */
  signal?: AbortSignal;
  /** Gives up after this long; the call rejects with {@link TimeoutError}. */
  timeoutMs?: number;
}

export interface SubmitOptions extends CallOptions {
  /** Default: a new UUID, reused by every retry of this submit. */
  idempotencyKey?: string;
  labels?: Record<string, string>;
  /** Do not start before this time. */
  runAt?: string | Date;
  maxAttempts?: number;
  /** Time limit of each attempt on the server (the submit's `timeoutMs`). */
  attemptTimeoutMs?: number;
  callbackUrl?: string;
  /** `Prefer: wait=N`: let the server hold the submit up to N seconds for the outcome. */
  waitSeconds?: number;
}

/** How to learn the outcome: Server-Sent Events, the WebSocket, long polls or plain polls. */
export type Via = 'sse' | 'ws' | 'longpoll' | 'poll';

export interface WaitOptions extends CallOptions {
  /** Default `longpoll`. */
  via?: Via;
  /** `poll` only: the delay between polls. Default: the server's `Retry-After`, else 1 s. */
  intervalMs?: number;
}

export interface EventsOptions {
  /** Start after this `seq`. Default: a snapshot of the operation, then its events. */
  after?: number;
  signal?: AbortSignal;
}

export interface ListOptions extends CallOptions {
  status?: OperationStatus | readonly OperationStatus[];
  type?: string;
  /** Every pair must match. */
  labels?: Record<string, string>;
  /** Operations a page, 1 to 500. Default 50. */
  limit?: number;
  cursor?: string;
}

export interface MapOptions {
  /** Most calls of `fn` in flight at once. Default 8. */
  concurrency?: number;
  /** Items not started when it fires are rejected with {@link AbortError}. */
  signal?: AbortSignal;
}

/** One operation: read, wait for, follow or cancel it. */
export interface OperationHandle<R = unknown> {
  readonly id: string;
  /** The status monitor as this handle last read it, if it has. */
  operation: Operation<R> | undefined;
  get(options?: CallOptions): Promise<Operation<R>>;
  /** Resolves with the final status monitor, whatever its status. */
  wait(options?: WaitOptions): Promise<Operation<R>>;
  /** The result; {@link OperationFailedError} when the operation failed or was canceled. */
  result(options?: WaitOptions): Promise<R>;
  /** The snapshot (unless `after`), then every event until the terminal one; resumes by `seq`. */
  events(options?: EventsOptions): AsyncGenerator<StreamEvent, void, undefined>;
  cancel(options?: CallOptions): Promise<Operation<R>>;
}

type TypeOf<Ops> = keyof Ops & string;
type InputOf<Ops, K extends keyof Ops> = Ops[K] extends { input: infer I } ? I : unknown;
type ResultOf<Ops, K extends keyof Ops> = Ops[K] extends { result: infer R } ? R : unknown;

export interface Client<Ops extends OperationMap = OperationMap> {
  /** Submits an operation (`202`, or the final monitor with `waitSeconds`). */
  submit<K extends TypeOf<Ops>>(
    type: K,
    input: InputOf<Ops, K>,
    options?: SubmitOptions,
  ): Promise<OperationHandle<ResultOf<Ops, K>>>;
  /** Submits and waits; resolves with the result or throws {@link OperationFailedError}. */
  run<K extends TypeOf<Ops>>(
    type: K,
    input: InputOf<Ops, K>,
    options?: SubmitOptions & WaitOptions,
  ): Promise<ResultOf<Ops, K>>;
  /** A handle on an existing operation; sends nothing. */
  operation<R = unknown>(id: string): OperationHandle<R>;
  get(id: string, options?: CallOptions): Promise<Operation>;
  cancel(id: string, options?: CallOptions): Promise<Operation>;
  /** Runs a failed or canceled operation again. */
  retry(id: string, options?: CallOptions): Promise<Operation>;
  /** Every page of operations, newest first. */
  list(options?: ListOptions): AsyncGenerator<OperationPage, void, undefined>;
  /**
   * Calls `fn` on every item, at most `concurrency` at once; the outcomes in the items' order,
   * failures included (as `Promise.allSettled` gives them).
   */
  map<T, R>(
    items: Iterable<T>,
    fn: (item: T, index: number) => R | Promise<R>,
    options?: MapOptions,
  ): Promise<PromiseSettledResult<Awaited<R>>[]>;
  /** Mints a stream token for a page (`POST /v1/stream-tokens`). */
  streamToken(
    options?: CallOptions & { operation?: string; ttlSeconds?: number },
  ): Promise<StreamToken>;
}

/** Problem codes that may succeed when sent again (docs/errors.md). */
const RETRYABLE = [
  'IDEMPOTENCY_KEY_IN_FLIGHT',
  'STORE_LOCKED',
  'SHUTTING_DOWN',
  'STORE_UNAVAILABLE',
  'NOT_STARTED',
  'INTERNAL',
];
const ENDS = ['operation.succeeded', 'operation.failed', 'operation.canceled', 'operation.deleted'];
const WS_OPEN = 1;

const isDone = (status: OperationStatus) =>
  status === 'succeeded' || status === 'failed' || status === 'canceled';

const ignore = () => undefined;

/** Resolves after `ms`; rejects with the signal's reason when it aborts first. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const stop = () => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', stop);
      resolve();
    }, ms);
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
  });
}

/** A `Retry-After` value (seconds or an HTTP date) in ms, or undefined. */
function retryAfterMs(value: string | null): number | undefined {
  if (value === null) return undefined;
  const ms = /^\s*\d+\s*$/.test(value) ? Number(value) * 1000 : Date.parse(value) - Date.now();
  return Number.isNaN(ms) ? undefined : Math.max(0, ms);
}

/** A version 4 UUID, also outside secure contexts (where `randomUUID` is missing). */
function uuid(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = ((b[6] ?? 0) & 15) | 64;
  b[8] = ((b[8] ?? 0) & 63) | 128;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Runs `work` under one signal that the caller's signal and `timeoutMs` abort, with
 * {@link AbortError} or {@link TimeoutError}; everything `work` started is aborted when it ends.
 */
async function scoped<T>(options: CallOptions, work: (signal: AbortSignal) => Promise<T>) {
  const controller = new AbortController();
  const { signal, timeoutMs } = options;
  const abort = () => controller.abort(new AbortError(signal?.reason));
  if (signal?.aborted) abort();
  else signal?.addEventListener('abort', abort, { once: true });
  const timer =
    timeoutMs === undefined
      ? undefined
      : setTimeout(() => controller.abort(new TimeoutError(timeoutMs)), timeoutMs);
  try {
    if (controller.signal.aborted) throw controller.signal.reason as Error;
    return await work(controller.signal);
  } catch (error) {
    throw controller.signal.aborted ? (controller.signal.reason as Error) : error;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', abort);
    controller.abort();
  }
}

interface Request {
  method?: string;
  path: string;
  body?: unknown;
  headers?: Record<string, string>;
  signal: AbortSignal;
  /** Send again after a network error (the server may have acted): GETs and keyed submits. */
  safe?: boolean;
}

/**
 * A client of one Accepted server.
 *
 * ```ts
 * const client = createClient({ baseUrl: 'http://localhost:8080' });
 * const result = await client.run('demo.sleep', { ms: 500 });
 * ```
 *
 * With a type map (`OperationTypes<typeof operations>` from `@accepted/server`), operation types,
 * inputs and results are checked at compile time.
 */
export function createClient<Ops extends OperationMap = OperationMap>(
  options: ClientOptions,
): Client<Ops> {
  const base = options.baseUrl.replace(/\/+$/, '');
  const retry = options.retry === false ? { retries: 0 } : (options.retry ?? {});
  const retries = retry.retries ?? 4;
  const backoff = (attempt: number) =>
    Math.random() * Math.min(retry.maxMs ?? 10_000, (retry.baseMs ?? 200) * 2 ** attempt);
  const operationPath = (id: string) => `/v1/operations/${encodeURIComponent(id)}`;

  async function send(request: Request): Promise<Response> {
    const { signal, body, method = 'GET' } = request;
    const headers: Record<string, string> = {
      accept: 'application/json',
      ...options.headers,
      ...request.headers,
    };
    if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const init = {
      method,
      headers,
      signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    };
    for (let attempt = 0; ; attempt++) {
      let response: Response;
      try {
        response = await (options.fetch ?? fetch)(base + request.path, init);
      } catch (error) {
        if (signal.aborted) throw signal.reason as Error;
        if (!(request.safe ?? method === 'GET') || attempt >= retries) {
          throw new NetworkError(error);
        }
        await sleep(backoff(attempt), signal);
        continue;
      }
      if (response.ok || response.status === 304) return response;
      const problem = (await response.json().catch(ignore)) as Problem | undefined;
      const error = new ProblemError(response.status, problem ?? {});
      const again =
        response.status === 429 || response.status === 503 || RETRYABLE.includes(error.code);
      if (!again || attempt >= retries) throw error;
      await sleep(retryAfterMs(response.headers.get('retry-after')) ?? backoff(attempt), signal);
    }
  }

  const read = async <T>(request: Request): Promise<T> => (await (await send(request)).json()) as T;

  function submitIn(signal: AbortSignal, type: string, input: unknown, o: SubmitOptions) {
    const headers: Record<string, string> = {
      'idempotency-key': o.idempotencyKey ?? uuid(),
    };
    if (o.waitSeconds) headers.prefer = `wait=${o.waitSeconds}`;
    const runAt = o.runAt instanceof Date ? o.runAt.toISOString() : o.runAt;
    const body = {
      type,
      input,
      labels: o.labels,
      runAt,
      maxAttempts: o.maxAttempts,
      timeoutMs: o.attemptTimeoutMs,
      callbackUrl: o.callbackUrl,
    };
    return read<Operation>({
      method: 'POST',
      path: '/v1/operations',
      body,
      headers,
      signal,
      safe: true,
    });
  }

  function mint(signal: AbortSignal, body: { operation?: string; ttlSeconds?: number }) {
    return read<StreamToken>({
      method: 'POST',
      path: '/v1/stream-tokens',
      body,
      signal,
      safe: true,
    });
  }

  /** The stream of one operation, reconnecting with `Last-Event-ID` after a lost connection. */
  async function* events(id: string, o: EventsOptions = {}): AsyncGenerator<StreamEvent> {
    const controller = new AbortController();
    const { signal } = controller;
    const abort = () => controller.abort(new AbortError(o.signal?.reason));
    if (o.signal?.aborted) abort();
    else o.signal?.addEventListener('abort', abort, { once: true });
    let after = o.after;
    const token =
      options.accessToken && !options.apiKey
        ? `?access_token=${encodeURIComponent(options.accessToken)}`
        : '';
    try {
      for (let attempt = 0; ; attempt++) {
        const headers: Record<string, string> = { accept: 'text/event-stream' };
        if (after !== undefined) headers['last-event-id'] = String(after);
        const response = await send({
          path: `${operationPath(id)}/events${token}`,
          headers,
          signal,
        });
        if (response.status === 204 || !response.body) return;
        let lost: unknown = 'The event stream ended before the terminal event.';
        try {
          for await (const message of readSse(response.body)) {
            if (message.event === 'stream.closing') break;
            const event = JSON.parse(message.data) as StreamEvent;
            after = event.seq;
            attempt = 0;
            yield event;
            const status = 'operation' in event ? event.operation.status : undefined;
            if (ENDS.includes(event.type) || (status && isDone(status))) return;
          }
        } catch (error) {
          if (signal.aborted) throw signal.reason as Error;
          lost = error;
        }
        // The connection ended before the terminal event: resume after the last seq.
        if (attempt >= retries) throw new NetworkError(lost);
        await sleep(backoff(attempt), signal);
      }
    } finally {
      o.signal?.removeEventListener('abort', abort);
      controller.abort();
    }
  }

  /** Follows the operation over the WebSocket until its terminal event. */
  async function followWs(id: string, signal: AbortSignal): Promise<void> {
    const Ws = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ws) {
      throw new TypeError(
        "via: 'ws' needs a WebSocket class, and this runtime has no global WebSocket " +
          '(Node.js before 22): pass one, as in createClient({ baseUrl, WebSocket }) with ' +
          "WebSocket from 'ws'.",
      );
    }
    let after: number | undefined;
    for (let attempt = 0; ; attempt++) {
      // A stream token works with every WebSocket class: browsers cannot send headers.
      const token = options.apiKey
        ? (await mint(signal, { operation: id, ttlSeconds: 60 })).token
        : options.accessToken;
      const url = `${base.replace(/^http/, 'ws')}/v1/ws${token ? `?access_token=${encodeURIComponent(token)}` : ''}`;
      const done = await new Promise<boolean>((resolve, reject) => {
        const ws = new Ws(url);
        const end = (error?: Error) => {
          signal.removeEventListener('abort', stop);
          ws.onclose = ws.onmessage = null;
          ws.close();
          if (error) reject(error);
          else resolve(true);
        };
        const stop = () => end(signal.reason as Error);
        signal.addEventListener('abort', stop, { once: true });
        ws.onerror = ignore;
        ws.onclose = () => {
          signal.removeEventListener('abort', stop);
          resolve(false);
        };
        ws.onopen = () => {
          if (ws.readyState === WS_OPEN) {
            ws.send(JSON.stringify({ type: 'subscribe', id: 1, operation: id, after }));
          }
        };
        ws.onmessage = ({ data }) => {
          const message = JSON.parse(String(data)) as {
            type: string;
            seq?: number;
            event?: StreamEvent;
            operation?: Operation;
          } & Problem & { message?: string };
          attempt = 0;
          if (message.type === 'error') {
            end(new ProblemError(0, { ...message, detail: message.message }));
          } else if (message.type === 'snapshot') {
            after = message.seq;
            if (message.operation && isDone(message.operation.status)) end();
          } else if (message.type === 'event' && message.event) {
            after = message.event.seq;
            if (ENDS.includes(message.event.type)) end();
          } else if (message.type === 'complete') {
            end();
          }
        };
      });
      if (done) return;
      if (attempt >= retries) throw new NetworkError('The WebSocket closed.');
      await sleep(backoff(attempt), signal);
    }
  }

  async function waitIn(
    signal: AbortSignal,
    id: string,
    known: Operation | undefined,
    o: WaitOptions,
  ): Promise<Operation> {
    let operation = known;
    const via = o.via ?? 'longpoll';
    if (via === 'sse' || via === 'ws') {
      if (!operation || !isDone(operation.status)) {
        if (via === 'ws') await followWs(id, signal);
        else {
          const stream = events(id, { signal });
          while (!(await stream.next()).done) {
            // Read to the terminal event: the stream ends there.
          }
        }
      }
      return read<Operation>({ path: operationPath(id), signal });
    }
    for (;;) {
      if (operation && isDone(operation.status)) return operation;
      if (via === 'poll') {
        const response = await send({ path: operationPath(id), signal });
        operation = (await response.json()) as Operation;
        if (isDone(operation.status)) return operation;
        const delay = retryAfterMs(response.headers.get('retry-after'));
        await sleep(o.intervalMs ?? delay ?? 1000, signal);
      } else {
        // Long poll: the server holds the request until the version moves past ours.
        const headers: Record<string, string> = { prefer: 'wait=30' };
        if (operation) headers['if-none-match'] = `"${operation.version}"`;
        const response = await send({ path: operationPath(id), headers, signal });
        if (response.status !== 304) operation = (await response.json()) as Operation;
      }
    }
  }

  function handle<R>(id: string, known?: Operation<R>): OperationHandle<R> {
    const h: OperationHandle<R> = {
      id,
      operation: known,
      get: async (o = {}) => (h.operation = (await client.get(id, o)) as Operation<R>),
      wait: async (o = {}) =>
        (h.operation = (await scoped(o, (signal) =>
          waitIn(signal, id, h.operation, o),
        )) as Operation<R>),
      result: async (o) => {
        const operation = await h.wait(o);
        if (operation.status !== 'succeeded') throw new OperationFailedError(operation);
        return operation.result as R;
      },
      events: (o) => events(id, o),
      cancel: async (o = {}) => (h.operation = (await client.cancel(id, o)) as Operation<R>),
    };
    return h;
  }

  const client: Client<Ops> = {
    submit: (type, input, o = {}) =>
      scoped(o, (signal) => submitIn(signal, type, input, o)).then((op) =>
        handle(op.id, op as Operation<never>),
      ),
    run: (type, input, o = {}) =>
      scoped(o, async (signal) => {
        const submitted = await submitIn(signal, type, input, { waitSeconds: 10, ...o });
        const operation = await waitIn(signal, submitted.id, submitted, o);
        if (operation.status !== 'succeeded') throw new OperationFailedError(operation);
        return operation.result as never;
      }),
    operation: (id) => handle(id),
    get: (id, o = {}) => scoped(o, (signal) => read({ path: operationPath(id), signal })),
    cancel: (id, o = {}) =>
      scoped(o, (signal) => read({ method: 'POST', path: `${operationPath(id)}:cancel`, signal })),
    retry: (id, o = {}) =>
      scoped(o, (signal) => read({ method: 'POST', path: `${operationPath(id)}:retry`, signal })),
    async *list(o = {}) {
      let cursor = o.cursor;
      do {
        const query = new URLSearchParams();
        for (const status of [o.status ?? []].flat()) query.append('status', status);
        for (const [key, value] of Object.entries(o.labels ?? {})) {
          query.append('label', `${key}:${value}`);
        }
        if (o.type) query.set('type', o.type);
        if (o.limit) query.set('limit', String(o.limit));
        if (cursor) query.set('cursor', cursor);
        const page = await scoped(o, (signal) =>
          read<OperationPage>({ path: `/v1/operations?${query.toString()}`, signal }),
        );
        yield page;
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
    },
    async map(items, fn, o = {}) {
      const all = [...items];
      const outcomes: PromiseSettledResult<Awaited<ReturnType<typeof fn>>>[] = [];
      let next = 0;
      const worker = async () => {
        while (next < all.length) {
          const index = next++;
          try {
            if (o.signal?.aborted) throw new AbortError(o.signal.reason);
            outcomes[index] = {
              status: 'fulfilled',
              value: await fn(all[index] as (typeof all)[number], index),
            };
          } catch (reason) {
            outcomes[index] = { status: 'rejected', reason };
          }
        }
      };
      const workers = Math.min(Math.max(1, o.concurrency ?? 8), all.length);
      await Promise.all(Array.from({ length: workers }, worker));
      return outcomes;
    },
    streamToken: (o = {}) =>
      scoped(o, (signal) => mint(signal, { operation: o.operation, ttlSeconds: o.ttlSeconds })),
  };
  return client;
}
