import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { ValidateFunction } from 'ajv';
import sjson from 'secure-json-parse';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import {
  AcceptedError,
  ERROR_CODES,
  operationNotFound as notFound,
  toAnswerable,
} from '../domain/errors.ts';
import { checkJsonText, MAX_JSON_DEPTH } from '../domain/json.ts';
import { isTerminal, type Operation } from '../domain/operation.ts';
import type { Logger } from '../domain/logger.ts';
import { createAjv, fieldProblems } from '../wire/ajv.ts';
import { monitorAt } from '../wire/mount.ts';
import { toProblem } from '../wire/problem.ts';
import type { Frame } from './frame.ts';
import type { CloseReason, Connection, StreamHub } from './hub.ts';
import {
  WS_CLIENT_MESSAGE_SCHEMAS,
  WS_PROTOCOL_VERSION,
  type ClientMessage,
  type ClientMessageType,
} from '../wire/stream-protocol.ts';
import { Subscription, type Sink } from './subscription.ts';
import type { StreamGrant } from './tokens.ts';

/** Bytes queued for a client beyond which its subscriptions hold their events. */
const HIGH_WATER = 64 * 1024;
/** How long a closing connection may take to finish its close handshake. */
const CLOSE_GRACE_MS = 2000;
/**
 * Deepest nesting of a message: one level more than an HTTP body may have, because a submit
 * wraps the body of `POST /v1/operations` in `operation`.
 */
export const WS_MAX_JSON_DEPTH = MAX_JSON_DEPTH + 1;

/** Who opened a connection: the tenant, and the stream token's grant when it came with one. */
export interface WsIdentity {
  tenant: string;
  grant: StreamGrant | null;
}

export interface WebSocketOptions {
  hub: StreamHub;
  /**
   * Checks the upgrade request's credentials (`url` is the request target, its path inside
   * the mount); throws (or rejects with) UNAUTHENTICATED or another error.
   */
  authenticate: (request: IncomingMessage, url: URL) => WsIdentity | Promise<WsIdentity>;
  /** Largest message accepted, in bytes. */
  maxPayload: number;
  /** Refuses a submit's callbackUrl that deliveries could not be sent to. */
  checkCallbackUrl?: (url: string) => void;
  log: Logger;
}

const ajv = createAjv();
const validators = new Map<string, ValidateFunction>(
  Object.entries(WS_CLIENT_MESSAGE_SCHEMAS).map(([type, schema]) => [type, ajv.compile(schema)]),
);

function invalidMessage(message: string, fields?: { field: string; message: string }[]) {
  return new AcceptedError('INVALID_MESSAGE', message, {
    fields,
    fix: 'Send one JSON object per text frame, with a type and members as docs/streams.md says.',
  });
}

/**
 * The JSON value of one text frame; INVALID_MESSAGE when it is not JSON, JSON_TOO_DEEP or
 * NUMBER_OUT_OF_RANGE (checked on the text, before parsing) as for an HTTP body.
 */
function parseJson(data: RawData, isBinary: boolean): unknown {
  if (isBinary) throw invalidMessage('Messages must be JSON in text frames.');
  const text = Array.isArray(data)
    ? Buffer.concat(data).toString('utf8')
    : Buffer.from(data as Buffer).toString('utf8');
  checkJsonText(text, WS_MAX_JSON_DEPTH, 'The message');
  try {
    return sjson.parse(text, null, { protoAction: 'error', constructorAction: 'error' });
  } catch {
    throw invalidMessage('The message is not valid JSON.');
  }
}

/** The request id of a message, when it has a usable one (even if the rest is wrong). */
function requestId(value: unknown): string | number | undefined {
  const id = (value as { id?: unknown } | null)?.id;
  return (typeof id === 'string' && id.length <= 64) || Number.isSafeInteger(id)
    ? (id as string | number)
    : undefined;
}

/** Checks one client message; INVALID_MESSAGE when it is not one. */
function checkMessage(value: unknown): ClientMessage {
  const type = (value as { type?: unknown } | null)?.type;
  const validate = typeof type === 'string' ? validators.get(type) : undefined;
  if (!validate) {
    throw invalidMessage(
      `The message needs a type: one of ${Object.keys(WS_CLIENT_MESSAGE_SCHEMAS).join(', ')}.`,
      [{ field: '/type', message: 'is missing or unknown' }],
    );
  }
  if (!validate(value)) {
    const fields = fieldProblems('', validate.errors);
    throw invalidMessage(
      `The ${type as ClientMessageType} message is not valid: ${fields.map((f) => `${f.field} ${f.message}`).join('; ')}.`,
      fields,
    );
  }
  return value as ClientMessage;
}

/** Answers a refused upgrade with a problem+json HTTP response, then closes the socket. */
export function refuseUpgrade(socket: Duplex, error: AcceptedError, path: string): void {
  const problem = toProblem(error, path);
  const body = JSON.stringify(problem);
  const status = ERROR_CODES[error.code].status;
  // As over HTTP: every 503 says when to come back.
  const extra =
    (error.code === 'UNAUTHENTICATED' ? 'www-authenticate: Bearer realm="accepted"\r\n' : '') +
    (status === 503 ? 'retry-after: 1\r\n' : '');
  socket.end(
    `HTTP/1.1 ${status} ${problem.title}\r\ncontent-type: application/problem+json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`,
  );
}

/** One WebSocket client: its subscriptions, requests and keepalive. */
class WsConnection implements Sink, Connection {
  congested = false;
  stalledSince: number | null = null;
  private alive = true;
  private readonly subscriptions = new Map<string, Subscription>();
  /**
   * Subscribes under way (reading the store), by subscription id, each settled when it is
   * over. Each holds a slot of `maxSubscriptions` from before its first await, so that a
   * burst of subscribes cannot pass the cap while they all wait.
   */
  private readonly starting = new Map<string, Promise<void>>();
  private nextId = 1;
  private closing = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly identity: WsIdentity,
    private readonly hub: StreamHub,
    private readonly log: Logger,
    private readonly checkCallbackUrl: ((url: string) => void) | undefined,
    /** The mount prefix, in front of the monitors' links. */
    private readonly prefix: string,
  ) {
    hub.attach(this);
    ws.on('message', (data, isBinary) => void this.onMessage(data, isBinary));
    ws.on('pong', () => {
      this.alive = true;
    });
    ws.on('error', (error) => this.log.debug({ err: error }, 'websocket error'));
    ws.on('close', () => this.cleanup());
    this.sendJson({
      type: 'welcome',
      protocol: WS_PROTOCOL_VERSION,
      tenant: identity.tenant,
      heartbeatMs: hub.settings.heartbeatMs,
    });
    if (hub.isClosed) this.close('SHUTTING_DOWN');
  }

  /** Open and not closing: subscriptions may still be started. */
  private get open(): boolean {
    return !this.closing && this.ws.readyState === WebSocket.OPEN;
  }

  private sendText(text: string): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    if (this.congested || this.ws.bufferedAmount + text.length <= HIGH_WATER) {
      this.ws.send(text);
      return;
    }
    // This message crosses the mark: hold events until it has been handed to the socket.
    this.congested = true;
    this.stalledSince = Date.now();
    this.ws.send(text, () => {
      this.congested = false;
      this.stalledSince = null;
      for (const subscription of this.subscriptions.values()) subscription.resume();
    });
  }

  private sendJson(message: Record<string, unknown>): void {
    this.sendText(JSON.stringify(message));
  }

  write(subscription: Subscription, frame: Frame): void {
    // The event's JSON is made once per node and spliced into every subscriber's message.
    this.sendText(
      `{"type":"event","subscription":${JSON.stringify(subscription.id)},"event":${frame.json}}`,
    );
  }

  complete(subscription: Subscription): void {
    this.drop(subscription);
    this.sendJson({ type: 'complete', subscription: subscription.id });
  }

  fail(subscription: Subscription, error: unknown): void {
    this.log.warn({ err: error }, 'websocket subscription failed to read the log');
    this.drop(subscription);
    const { error: known } = toAnswerable(
      error,
      'The subscription failed; subscribe again with after set to your last seq.',
    );
    this.sendJson({
      type: 'error',
      code: known.code,
      message: known.message,
      subscription: subscription.id,
    });
  }

  heartbeat(): void {
    if (!this.alive) {
      this.ws.terminate(); // no pong since the last ping
      return;
    }
    this.alive = false;
    this.ws.ping();
  }

  close(reason: CloseReason): void {
    if (this.closing) return;
    this.closing = true;
    this.sendJson({ type: 'closing', reason });
    this.ws.close(reason === 'SHUTTING_DOWN' ? 1001 : 1008, reason);
    setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS).unref();
    this.cleanup();
  }

  private drop(subscription: Subscription): void {
    this.subscriptions.delete(subscription.id);
    this.hub.remove(subscription);
  }

  private cleanup(): void {
    this.closing = true; // a subscribe still reading the store will not start
    for (const subscription of this.subscriptions.values()) this.hub.remove(subscription);
    this.subscriptions.clear();
    this.hub.detach(this);
  }

  private async onMessage(data: RawData, isBinary: boolean): Promise<void> {
    let id: string | number | undefined;
    try {
      const value = parseJson(data, isBinary);
      id = requestId(value);
      await this.handle(checkMessage(value));
    } catch (error) {
      const { error: known, unexpected } = toAnswerable(
        error,
        'The server failed to handle this message.',
      );
      if (unexpected) this.log.error({ err: error }, 'websocket message failed');
      this.sendJson({
        type: 'error',
        ...(id === undefined ? {} : { id }),
        code: known.code,
        message: known.message,
        ...(known.fields ? { fields: known.fields } : {}),
        ...(known.fix ? { fix: known.fix } : {}),
        ...(known.details ? { details: known.details } : {}),
      });
    }
  }

  private ack(id: string | number | undefined, members: Record<string, unknown>): void {
    this.sendJson({ type: 'ack', ...(id === undefined ? {} : { id }), ...members });
  }

  /** Stream tokens only read; submit and cancel need an API key. */
  private assertCanWrite(): void {
    if (this.identity.grant === null) return;
    throw new AcceptedError('FORBIDDEN', 'A stream token cannot submit or cancel.', {
      fix: 'Submit and cancel from a backend that holds an API key.',
    });
  }

  private assertScope(operationId: string | null): void {
    const scope = this.identity.grant?.operation ?? null;
    if (scope === null || scope === operationId) return;
    throw new AcceptedError('FORBIDDEN', 'This stream token is limited to another operation.', {
      fix: 'Mint a token for this operation, or one without an operation.',
    });
  }

  private async handle(message: ClientMessage): Promise<void> {
    const { accepted } = this.hub;
    const tenant = this.identity.tenant;
    switch (message.type) {
      case 'ping':
        this.sendJson({ type: 'pong', ...(message.id === undefined ? {} : { id: message.id }) });
        return;
      case 'submit': {
        this.assertCanWrite();
        const callbackUrl = (message.operation as { callbackUrl?: unknown }).callbackUrl;
        if (typeof callbackUrl === 'string') this.checkCallbackUrl?.(callbackUrl);
        if (message.idempotencyKey !== undefined) {
          const result = await accepted.submitIdempotent(message.operation, {
            tenant,
            key: message.idempotencyKey,
          });
          this.ack(message.id, {
            request: 'submit',
            operation: monitorAt(result.operation, this.prefix),
            replayed: result.replayed,
          });
          return;
        }
        const operation = await accepted.submitRequest(message.operation, { tenant });
        this.ack(message.id, {
          request: 'submit',
          operation: monitorAt(operation, this.prefix),
          replayed: false,
        });
        return;
      }
      case 'cancel': {
        this.assertCanWrite();
        const operation = await accepted.cancel(message.operation, { tenant });
        this.ack(message.id, { request: 'cancel', operation: monitorAt(operation, this.prefix) });
        return;
      }
      case 'unsubscribe': {
        // A subscribe still under way ends first (acknowledged, or refused), then this one.
        await this.starting.get(message.subscription);
        const subscription = this.subscriptions.get(message.subscription);
        if (!subscription) {
          throw new AcceptedError(
            'SUBSCRIPTION_NOT_FOUND',
            `No subscription ${message.subscription} on this connection.`,
            { fix: 'Use the subscription id of a subscribe acknowledgement.' },
          );
        }
        this.drop(subscription);
        this.ack(message.id, {
          request: 'unsubscribe',
          subscription: subscription.id,
          cursor: subscription.position,
        });
        return;
      }
      case 'subscribe':
        await this.subscribe(message);
        return;
    }
  }

  private async subscribe(message: Extract<ClientMessage, { type: 'subscribe' }>): Promise<void> {
    const { settings } = this.hub;
    if (!this.open) return; // closing: nothing more starts, and nobody reads an answer
    if (this.subscriptions.size + this.starting.size >= settings.maxSubscriptions) {
      throw new AcceptedError(
        'TOO_MANY_SUBSCRIPTIONS',
        `A connection may have at most ${settings.maxSubscriptions} subscriptions.`,
        { fix: 'Unsubscribe from some, or use one filter subscription for many operations.' },
      );
    }
    if ((message.operation === undefined) === (message.filter === undefined)) {
      throw invalidMessage('A subscribe message needs either operation or filter, not both.', [
        { field: '/operation', message: 'give operation or filter' },
      ]);
    }
    this.assertScope(message.operation ?? null);
    // The slot is taken now, before the first await, and given back however this ends: a
    // started subscription holds it in `subscriptions` from then on.
    const subscriptionId = `s${this.nextId++}`;
    let settle!: () => void;
    this.starting.set(subscriptionId, new Promise<void>((resolve) => (settle = resolve)));
    try {
      if (message.operation === undefined) {
        await this.subscribeFilter(subscriptionId, message);
      } else {
        await this.subscribeOperation(subscriptionId, message.operation, message);
      }
    } finally {
      this.starting.delete(subscriptionId);
      settle();
    }
  }

  /** A subscription to a filter: from `after`, else from now on. */
  private async subscribeFilter(
    subscriptionId: string,
    message: Extract<ClientMessage, { type: 'subscribe' }>,
  ): Promise<void> {
    const { accepted, settings } = this.hub;
    const filter = message.filter ?? {};
    const after = message.after ?? (await accepted.lastSeq());
    const subscription = new Subscription(
      this.hub,
      this,
      {
        selection: {
          tenant: this.identity.tenant,
          after,
          operationIds: filter.operations,
          types: filter.types,
          operationTypes: filter.operationTypes,
          labels: filter.labels,
        },
        maxPending: settings.maxPending,
      },
      subscriptionId,
    );
    this.start(message.id, subscription);
  }

  /**
   * A subscription to one operation: without `after`, a snapshot and its seq (read together,
   * so that the events after that seq are exactly those the snapshot does not show), then the
   * events after it; with `after`, the events after that.
   */
  private async subscribeOperation(
    subscriptionId: string,
    operationId: string,
    message: Extract<ClientMessage, { type: 'subscribe' }>,
  ): Promise<void> {
    const { accepted, settings } = this.hub;
    const tenant = this.identity.tenant;
    const current = await accepted.snapshot(operationId, { tenant });
    if (!current) throw notFound(operationId);
    const { operation, seq } = current;
    const withSnapshot = message.after === undefined;
    const after = message.after ?? seq;
    if (!this.open) return;
    if (isTerminal(operation.status) && after >= seq) {
      // Over, and nothing the client lacks but (without a cursor) the snapshot.
      this.ack(message.id, { request: 'subscribe', subscription: subscriptionId, cursor: after });
      if (withSnapshot) this.sendSnapshot(subscriptionId, seq, operation);
      this.sendJson({ type: 'complete', subscription: subscriptionId });
      return;
    }
    const subscription = new Subscription(
      this.hub,
      this,
      { selection: { tenant, operationId, after }, operationId, maxPending: settings.maxPending },
      subscriptionId,
    );
    this.start(message.id, subscription, withSnapshot ? operation : undefined);
  }

  private sendSnapshot(subscription: string, seq: number, operation: Operation): void {
    this.sendJson({
      type: 'snapshot',
      subscription,
      seq,
      operation: monitorAt(operation, this.prefix),
    });
  }

  /** Acknowledges, sends the snapshot if any, then starts the subscription. */
  private start(
    id: string | number | undefined,
    subscription: Subscription,
    snapshot?: Operation,
  ): void {
    if (!this.open) return;
    const cursor = subscription.position;
    this.subscriptions.set(subscription.id, subscription);
    this.ack(id, { request: 'subscribe', subscription: subscription.id, cursor });
    if (snapshot) this.sendSnapshot(subscription.id, cursor, snapshot);
    this.hub.add(subscription);
  }
}

/** Takes WebSocket upgrades of `GET /v1/ws`, wherever the host server emits them. */
export interface WebSocketUpgrade {
  /**
   * Takes the upgrade when its path is `prefix` + `/v1/ws`: checks credentials before the
   * handshake (a refused one is answered as problem+json), then speaks the JSON protocol of
   * docs/streams.md. Returns false, touching nothing, for any other path.
   */
  handle(request: IncomingMessage, socket: Duplex, head: Buffer, prefix: string): boolean;
  /** Stops taking upgrades (later ones are refused 503 SHUTTING_DOWN). */
  close(): void;
}

/** The WebSocket upgrade handler of one hub; the server (or the host) forwards upgrades to it. */
export function webSocketUpgrade(options: WebSocketOptions): WebSocketUpgrade {
  const { hub, log } = options;
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: options.maxPayload,
    perMessageDeflate: false,
    clientTracking: false,
  });
  let closed = false;
  const shuttingDown = () => closed || hub.isClosed;
  async function open(
    request: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    url: URL,
    prefix: string,
  ): Promise<void> {
    let identity: WsIdentity;
    try {
      if (shuttingDown()) {
        throw new AcceptedError('SHUTTING_DOWN', 'This server is shutting down.', {
          fix: 'Reconnect to another node, or after the restart.',
        });
      }
      identity = await options.authenticate(request, url);
      if (shuttingDown()) {
        throw new AcceptedError('SHUTTING_DOWN', 'This server is shutting down.', {
          fix: 'Reconnect to another node, or after the restart.',
        });
      }
    } catch (error) {
      const { error: known, unexpected } = toAnswerable(
        error,
        'The server failed to open the connection.',
      );
      if (unexpected) log.error({ err: error }, 'websocket upgrade failed');
      refuseUpgrade(socket, known, prefix + url.pathname);
      return;
    }
    // Gone while its credentials were checked: nothing to open.
    if (socket.destroyed) return;
    wss.handleUpgrade(request, socket, head, (ws) => {
      new WsConnection(ws, identity, hub, log, options.checkCallbackUrl, prefix);
    });
  }
  return {
    handle(request, socket, head, prefix) {
      const url = new URL(request.url ?? '/', 'http://localhost');
      if (url.pathname !== `${prefix}/v1/ws`) return false;
      socket.on('error', () => socket.destroy());
      // The route inside the mount, as the HTTP routes see it.
      url.pathname = '/v1/ws';
      void open(request, socket, head, url, prefix);
      return true;
    },
    close() {
      closed = true;
      wss.close();
    },
  };
}
