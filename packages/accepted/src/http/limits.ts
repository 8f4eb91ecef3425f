import { STATUS_CODES, type Server } from 'node:http';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { AcceptedError, ERROR_CODES } from '../domain/errors.ts';
import { PROBLEM_CONTENT_TYPE, toProblem } from '../wire/problem.ts';

/**
 * The bounds the HTTP server puts on what a client controls at the connection level: header
 * size, how long a request may take to arrive, idle keep-alive, and how many connections
 * one address and everyone may hold. docs/limits.md lists every bound of the API.
 */
export interface HttpLimits {
  /** Largest request body, in bytes. */
  bodyLimit: number;
  /** Largest request line and headers together, in bytes (431 HEADERS_TOO_LARGE). */
  maxHeaderSize: number;
  /** Time from the connection (or the previous answer) to the end of the headers (408). */
  headersTimeoutMs: number;
  /** Time from the start of a request to the end of its body (408). Not the answer's time. */
  requestTimeoutMs: number;
  /** How long an idle keep-alive connection stays open between requests. */
  keepAliveTimeoutMs: number;
  /** Connections open at once, from everyone; 0 for no limit (503 TOO_MANY_CONNECTIONS). */
  maxConnections: number;
  /** Connections open at once from one IPv4 address or IPv6 /64; 0 for no limit. */
  maxConnectionsPerIp: number;
}

export const DEFAULT_HTTP_LIMITS: Readonly<HttpLimits> = Object.freeze({
  bodyLimit: 1024 * 1024,
  maxHeaderSize: 16 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 72_000,
  maxConnections: 10_000,
  maxConnectionsPerIp: 1_000,
});

/** The ranges each limit may be set to (the CLI checks the same ones). */
export const HTTP_LIMIT_RANGES: Readonly<Record<keyof HttpLimits, [number, number]>> = {
  bodyLimit: [1024, 1024 * 1024 * 1024],
  maxHeaderSize: [1024, 1024 * 1024],
  headersTimeoutMs: [10, 3_600_000],
  requestTimeoutMs: [10, 3_600_000],
  keepAliveTimeoutMs: [10, 3_600_000],
  maxConnections: [0, 10_000_000],
  maxConnectionsPerIp: [0, 10_000_000],
};

/** The limits given, with the defaults for the rest; VALIDATION_FAILED on a value out of range. */
export function httpLimits(given: Partial<HttpLimits>): HttpLimits {
  const limits = { ...DEFAULT_HTTP_LIMITS };
  for (const name of Object.keys(HTTP_LIMIT_RANGES) as (keyof HttpLimits)[]) {
    const value = given[name];
    if (value === undefined) continue;
    const [min, max] = HTTP_LIMIT_RANGES[name];
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      throw new AcceptedError(
        'VALIDATION_FAILED',
        `${name} must be a whole number from ${min} to ${max} (got ${String(value)}).`,
        { fields: [{ field: name, message: `must be from ${min} to ${max}` }] },
      );
    }
    limits[name] = value;
  }
  if (limits.headersTimeoutMs > limits.requestTimeoutMs) {
    throw new AcceptedError(
      'VALIDATION_FAILED',
      `headersTimeoutMs (${limits.headersTimeoutMs}) must not be longer than requestTimeoutMs (${limits.requestTimeoutMs}).`,
      { fields: [{ field: 'headersTimeoutMs', message: 'longer than requestTimeoutMs' }] },
    );
  }
  return Object.freeze(limits);
}

/**
 * An HTTP/1.1 answer written straight to a socket, for the cases the framework never sees
 * (a request that does not parse, a timeout, a connection over the cap): problem+json, then
 * the connection closes.
 */
export function rawProblemResponse(error: AcceptedError): string {
  const problem = toProblem(error);
  const body = JSON.stringify(problem);
  const retry = ERROR_CODES[error.code].status === 503 ? 'retry-after: 1\r\n' : '';
  return (
    `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status] ?? problem.title}\r\n` +
    `content-type: ${PROBLEM_CONTENT_TYPE}; charset=utf-8\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\n${retry}cache-control: no-store\r\n` +
    `connection: close\r\n\r\n${body}`
  );
}

/** How long a socket we answered and half-closed may linger for the client to read it. */
const LINGER_MS = 1000;

/**
 * Writes `response` and closes the socket: half-closes it first and waits (up to a second)
 * for the client to close its side, so that bytes the client is still sending do not make
 * the kernel reset the connection before the client has read the answer.
 */
export function answerAndClose(socket: Duplex, response: string): void {
  if (socket.destroyed) return;
  const destroy = () => socket.destroy();
  socket.once('end', destroy);
  socket.once('error', destroy);
  setTimeout(destroy, LINGER_MS).unref();
  if (socket.writable) socket.end(response);
  else destroy();
}

/** Expands an IPv6 address to its eight groups (`::` filled in). */
function ipv6Groups(address: string): string[] {
  const [head = '', tail] = address.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const fill = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...fill, ...right].map((group) => group.toLowerCase().replace(/^0+(?=.)/, ''));
}

/**
 * The key a connection counts under: an IPv4 address (also when written IPv4-mapped,
 * `::ffff:1.2.3.4`), or the /64 of an IPv6 address, since one IPv6 client usually holds a
 * whole /64 and could take a fresh address per connection.
 */
export function addressKey(address: string | undefined): string {
  if (address === undefined) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1] !== undefined) return mapped[1];
  if (isIP(address) !== 6) return address;
  return `${ipv6Groups(address.replace(/%.*$/, '')).slice(0, 4).join(':')}::/64`;
}

/**
 * Counts open connections, in all and per address, and refuses one over a cap. A refused
 * connection is accepted, answered at once with `503 TOO_MANY_CONNECTIONS` (problem+json,
 * `Retry-After: 1`) and closed: a client then learns why, where a reset at accept looks like
 * a server that is down. It costs the server one short write per refused connection, which
 * it does not count.
 */
export class ConnectionLimiter {
  private total = 0;
  private readonly perAddress = new Map<string, number>();
  private readonly refused = new WeakSet<object>();

  constructor(
    private readonly limits: Pick<HttpLimits, 'maxConnections' | 'maxConnectionsPerIp'>,
  ) {}

  /** Starts counting on `server`'s connections. */
  attach(server: Server): void {
    server.on('connection', (socket: Socket) => {
      this.admit(socket);
    });
  }

  /** Whether a connection was refused (its requests must not be served). */
  isRefused(socket: object | null | undefined): boolean {
    return socket !== null && socket !== undefined && this.refused.has(socket);
  }

  /** Connections counted now, in all and from one address. */
  stats(address?: string): { total: number; fromAddress: number } {
    return {
      total: this.total,
      fromAddress: address === undefined ? 0 : (this.perAddress.get(addressKey(address)) ?? 0),
    };
  }

  private admit(socket: Socket): void {
    const { maxConnections, maxConnectionsPerIp } = this.limits;
    // A socket without an address (a Unix socket) counts only towards the total.
    const key = socket.remoteAddress === undefined ? null : addressKey(socket.remoteAddress);
    const fromKey = key === null ? 0 : (this.perAddress.get(key) ?? 0);
    const overTotal = maxConnections > 0 && this.total >= maxConnections;
    const overAddress = key !== null && maxConnectionsPerIp > 0 && fromKey >= maxConnectionsPerIp;
    if (overTotal || overAddress) {
      this.refused.add(socket);
      answerAndClose(
        socket,
        rawProblemResponse(
          new AcceptedError(
            'TOO_MANY_CONNECTIONS',
            overAddress
              ? `This address has ${fromKey} connections open, the most the server allows (${maxConnectionsPerIp}).`
              : `The server has ${this.total} connections open, the most it allows (${maxConnections}).`,
            {
              details: overAddress
                ? { limit: maxConnectionsPerIp, scope: 'address' }
                : { limit: maxConnections, scope: 'server' },
              fix: overAddress
                ? 'Reuse connections (keep-alive, one multiplexed event stream) instead of opening more; retry after Retry-After.'
                : 'Retry after Retry-After, or against another node.',
            },
          ),
        ),
      );
      return;
    }
    this.total++;
    if (key !== null) this.perAddress.set(key, fromKey + 1);
    socket.once('close', () => {
      this.total--;
      if (key === null) return;
      const left = (this.perAddress.get(key) ?? 1) - 1;
      if (left === 0) this.perAddress.delete(key);
      else this.perAddress.set(key, left);
    });
  }
}
