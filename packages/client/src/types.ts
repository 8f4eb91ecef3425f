// The shapes the HTTP API answers with (docs/http.md, docs/streams.md), as the client sees them.

/** `queued` and `running` are in progress; `succeeded`, `failed` and `canceled` are final. */
export type OperationStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled';

/** The latest progress a handler reported. */
export interface Progress {
  /** Share done, 0 to 1. */
  fraction?: number;
  message?: string;
  data?: unknown;
}

/** Why an operation failed or was canceled: `CANCELED`, `TIMEOUT`, or the handler's code. */
export interface OperationError {
  code: string;
  message: string;
  details?: unknown;
}

/** The status monitor of one operation (`GET /v1/operations/{id}`). */
export interface Operation<R = unknown> {
  /** `op_` and 30 letters and digits. */
  id: string;
  type: string;
  status: OperationStatus;
  progress: Progress | null;
  /** The handler's result once `succeeded`, else `null`. */
  result: R | null;
  error: OperationError | null;
  attempts: number;
  maxAttempts: number;
  labels: Record<string, string>;
  cancelRequested: boolean;
  runAt: string;
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  /** 1 at creation, one more on every change; the `ETag`. */
  version: number;
  links: { self: string; events: string; cancel: string };
}

/** The kinds of event in the log. */
export type EventType =
  | 'operation.queued'
  | 'operation.started'
  | 'operation.progress'
  | 'operation.cancel_requested'
  | 'operation.retrying'
  | 'operation.succeeded'
  | 'operation.failed'
  | 'operation.canceled'
  | 'operation.deleted'
  | 'endpoint.disabled';

/** One event of the log, the same on every channel. */
export interface OperationEvent {
  /** The position in the log: the cursor. */
  seq: number;
  id: string;
  operationId: string;
  operationType: string;
  labels: Record<string, string>;
  type: EventType;
  version: number;
  time: string;
  data: {
    /** The status after the change; absent on `endpoint.disabled`. */
    status?: OperationStatus;
    attempt?: number;
    progress?: Progress;
    result?: unknown;
    error?: OperationError;
    runAt?: string;
    /** On `endpoint.disabled`: the webhook endpoint and why the server disabled it. */
    endpoint?: {
      id: string;
      url: string;
      reason: 'GONE' | 'FAILING';
      message: string;
    };
  };
}

/** The first event of a stream opened without a cursor: the operation as it is. */
export interface SnapshotEvent {
  seq: number;
  type: 'operation.snapshot';
  operationId: string;
  operation: Operation;
}

/** What {@link OperationHandle.events} yields. */
export type StreamEvent = OperationEvent | SnapshotEvent;

/** One page of `GET /v1/operations`. */
export interface OperationPage {
  items: Operation[];
  /** Pass back as `cursor` for the next page; `null` on the last page. */
  nextCursor: string | null;
}

/** A stream token from `POST /v1/stream-tokens`. */
export interface StreamToken {
  token: string;
  expiresAt: string;
  operation: string | null;
}

/** The RFC 9457 problem document of every HTTP error, with its stable `code`. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  code?: string;
  fix?: string;
  fields?: { field: string; message: string }[];
  details?: Record<string, unknown>;
  instance?: string;
}

/**
 * Operation types, each with its input and result: `{ 'report.generate': { input: {...};
 * result: {...} } }`. `OperationTypes<typeof operations>` from `@accepted/server` builds one
 * from the server's definitions.
 */
export type OperationMap = Record<string, { input: unknown; result: unknown }>;

/**
 * An event handler of {@link WebSocketLike}. Its parameter is checked both ways (as a method's
 * is), so that the handlers of every WebSocket class fit, each with its own event type.
 */
export type WebSocketHandler<E> = { handle(event: E): void }['handle'];

/**
 * The minimal WebSocket the client needs. The browser's, Node.js 22+'s global one and the `ws`
 * package's class all fit, with no cast.
 */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: WebSocketHandler<unknown> | null;
  onmessage: WebSocketHandler<{ data: unknown }> | null;
  onclose: WebSocketHandler<unknown> | null;
  onerror: WebSocketHandler<unknown> | null;
}

/** A WebSocket class: `WebSocket` in browsers and Node.js 22+, or `WebSocket` from `ws`. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;
