import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Where an event stream writes once its head is sent: the connection's socket, taken from
 * node:http (`detachFromHttp`), or the response itself (`responseWire`) where it cannot be.
 */
export interface StreamWire {
  /** False when the bytes had to be buffered: wait for `onDrain`. */
  write(chunk: string | Buffer): boolean;
  /** Sends `last` (if any), then ends the stream. */
  end(last?: string): void;
  /** Cuts the connection at once. */
  destroy(): void;
  onceDrain(listener: () => void): void;
  onClose(listener: () => void): void;
}

/** What node:http puts on an accepted socket for the request/response cycle (Node 20-24). */
const HTTP_SOCKET_LISTENERS: Readonly<Record<string, readonly string[]>> = {
  data: ['bound socketOnData'],
  end: ['bound socketOnEnd'],
  close: ['bound socketOnClose'],
  drain: ['bound socketOnDrain'],
  error: ['socketOnError'],
  timeout: ['socketOnTimeout'],
  resume: ['onSocketResume'],
  pause: ['onSocketPause'],
};

/** The sockets taken from each server, which its `closeAllConnections()` no longer sees. */
const detached = new WeakMap<object, Set<Socket>>();

/** Destroys the event streams' sockets taken from `server` (what `closeAllConnections` misses). */
export function closeDetachedSockets(server: object): void {
  for (const socket of detached.get(server) ?? []) socket.destroy();
}

interface HttpParser {
  _consumed?: boolean;
  unconsume?: () => void;
  remove?: () => void;
  close?: () => void;
  incoming?: unknown;
  socket?: unknown;
  onIncoming?: unknown;
}

/**
 * Unhooks node:http's parser from its socket and closes it, as node:http frees a parser: its
 * own function, so that no closure of the stream keeps the parser (and through it the
 * request) alive.
 */
function releaseParser(parser: HttpParser): void {
  if (parser._consumed) parser.unconsume?.();
  parser._consumed = false;
  parser.remove?.();
  parser.incoming = null;
  parser.socket = null;
  parser.onIncoming = null;
  // Its C++ side is freed once the stack has unwound (as node:http closes a parser).
  setImmediate(() => parser.close?.());
}

/** Registers a taken socket with its server until it closes (`closeDetachedSockets`). */
function track(socket: Socket): void {
  const server = (socket as { server?: object }).server;
  if (!server) return;
  let sockets = detached.get(server);
  if (!sockets) detached.set(server, (sockets = new Set()));
  sockets.add(socket);
  socket.once('close', () => sockets.delete(socket));
}

/**
 * The stream's view of a taken socket. A class, not closures: one small object per
 * connection, the methods shared.
 */
class SocketWire implements StreamWire {
  constructor(private readonly socket: Socket) {}
  write(chunk: string | Buffer): boolean {
    return this.socket.write(chunk);
  }
  end(last?: string): void {
    if (last === undefined) this.socket.end();
    else this.socket.end(last);
  }
  destroy(): void {
    this.socket.destroy();
  }
  onceDrain(listener: () => void): void {
    this.socket.once('drain', listener);
  }
  onClose(listener: () => void): void {
    this.socket.once('close', listener);
  }
}

/**
 * Answers `res` with status 200 and `headers` on its socket, then takes the socket away from
 * node:http, as node:http does itself for an upgrade: its listeners off the socket, the
 * parser unhooked and closed, the response detached. What node:http would otherwise keep for
 * the whole life of a stream (the request and response objects, the listeners bound to them,
 * the parser and its header slots: about 5 KB a connection, docs/benchmarks.md) is then
 * garbage, and the stream writes to the socket. The body is delimited by the end of the
 * connection (`Connection: close`, no chunked framing): a stream is never followed by another
 * request on its connection.
 *
 * Null, with nothing done, where the socket is not node:http's as expected (another Node
 * version, HTTP/2, a proxy's socket): the stream then writes through the response.
 */
export function detachFromHttp(
  req: IncomingMessage,
  res: ServerResponse,
  headers: Readonly<Record<string, string>>,
): StreamWire | null {
  const socket: (Socket & { parser?: HttpParser | null }) | null = res.socket;
  const parser = socket?.parser;
  if (!socket || !parser || res.headersSent || socket.destroyed || !socket.writable) return null;
  if ((socket as { _httpMessage?: unknown })._httpMessage !== res) return null;
  const found = Object.entries(HTTP_SOCKET_LISTENERS).map(([event, names]) => ({
    event,
    listeners: socket.listeners(event).filter((fn) => names.includes(fn.name)),
  }));
  // Each of node:http's own listeners, exactly once: otherwise this Node is not the one known.
  if (found.some(({ listeners }) => listeners.length !== 1)) return null;
  if (typeof parser.unconsume !== 'function' || typeof parser.close !== 'function') return null;

  // The head, as node:http would write it, with the headers hooks set on the response.
  const all: Record<string, string | number | readonly string[]> = {};
  for (const [name, value] of Object.entries(res.getHeaders())) {
    if (value !== undefined) all[name] = value;
  }
  Object.assign(all, headers, { date: new Date().toUTCString(), connection: 'close' });
  let head = 'HTTP/1.1 200 OK\r\n';
  for (const [name, value] of Object.entries(all)) {
    for (const one of Array.isArray(value) ? value : [value]) head += `${name}: ${String(one)}\r\n`;
  }

  for (const { event, listeners } of found) {
    for (const listener of listeners) socket.removeListener(event, listener as () => void);
  }
  releaseParser(parser);
  socket.parser = null;
  (req as { parser?: unknown }).parser = null;
  res.detachSocket(socket);
  // node:http wrapped `on` and its kin to unconsume the parser when a reader attaches; with no
  // parser, the wrapper puts the socket's own methods back at its first call (below). (Not
  // deleted here: a deleted property turns the socket into a dictionary, 1.6 KB more.)
  // An error (a reset) ends the stream like a close; unhandled, it would end the process.
  socket.on('error', destroySocket);
  // The client ended its side: end ours, as node:http does (servers do not stay half-open).
  socket.on('end', endSocket);
  track(socket);
  socket.setTimeout(0);
  // Whatever the client sends now is not a request of ours: read and dropped.
  socket.on('data', ignore);
  socket.resume();
  socket.write(`${head}\r\n`);
  return new SocketWire(socket);
}

function destroySocket(this: Socket): void {
  this.destroy();
}
function endSocket(this: Socket): void {
  this.end();
}
function ignore(): void {}

/** The fallback: the stream writes through node:http's response (chunked). */
export function responseWire(
  res: ServerResponse,
  headers: Readonly<Record<string, string>>,
): StreamWire {
  res.writeHead(200, headers);
  return {
    write: (chunk) => res.write(chunk),
    end: (last) => {
      if (last === undefined) res.end();
      else res.end(last);
    },
    destroy: () => res.destroy(),
    onceDrain: (listener) => res.once('drain', listener),
    onClose: (listener) => res.on('close', listener),
  };
}
