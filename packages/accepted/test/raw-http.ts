import assert from 'node:assert/strict';
import net from 'node:net';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';

/**
 * Test tools for the HTTP edge: a real pino logger whose lines are kept in memory, and raw
 * TCP clients (`node:net`) that send exactly the bytes a test writes, broken or slow.
 */

export interface LogLine {
  level: number;
  msg: string;
  err?: { code?: string; message?: string; stack?: string };
  [key: string]: unknown;
}

/** A pino logger at `trace` whose every line lands in `lines`, parsed. */
export function capturingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line !== '') lines.push(JSON.parse(line) as LogLine);
      }
      callback();
    },
  });
  return { logger: pino({ level: 'trace' }, sink), lines };
}

/** Lines at error level or above (50 error, 60 fatal). */
export const errorLines = (lines: LogLine[]) => lines.filter((line) => line.level >= 50);

export function portOf(app: FastifyInstance): number {
  return (app.server.address() as net.AddressInfo).port;
}

/** One raw connection: what it has received so far, and whether the server closed it. */
export interface RawConnection {
  socket: net.Socket;
  /** Everything received so far. */
  received(): string;
  /** Resolves when the connection is closed (by either side), with everything received. */
  closed: Promise<string>;
  /** Resolves once `check` holds for what was received (or rejects when it closes first). */
  until(check: (text: string) => boolean): Promise<string>;
  write(data: string | Buffer): void;
  destroy(): void;
}

/** Opens a connection to 127.0.0.1:`port` and resolves once it is connected. */
export async function connect(port: number): Promise<RawConnection> {
  const socket = net.connect(port, '127.0.0.1');
  let text = '';
  const waiters: { check: (text: string) => boolean; resolve: (t: string) => void }[] = [];
  let isClosed = false;
  const closeWaiters: ((error: Error) => void)[] = [];
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
    for (const waiter of [...waiters]) {
      if (waiter.check(text)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(text);
      }
    }
  });
  socket.on('error', () => {
    // A reset after the answer: what was received is what counts.
  });
  const closed = new Promise<string>((resolve) => {
    socket.on('close', () => {
      isClosed = true;
      for (const reject of closeWaiters) reject(new Error(`closed; received: ${text}`));
      resolve(text);
    });
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return {
    socket,
    received: () => text,
    closed,
    until(check) {
      if (check(text)) return Promise.resolve(text);
      if (isClosed) return Promise.reject(new Error(`closed; received: ${text}`));
      return new Promise<string>((resolve, reject) => {
        waiters.push({ check, resolve });
        closeWaiters.push(reject);
      });
    },
    write(data) {
      socket.write(data);
    },
    destroy() {
      socket.destroy();
    },
  };
}

/** Sends `data` on a new connection and resolves with everything received until it closes. */
export async function exchange(port: number, data: string | Buffer): Promise<string> {
  const connection = await connect(port);
  connection.write(data);
  return connection.closed;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The first HTTP/1.1 response in `text` (Content-Length or chunked framing). */
export function parseResponse(text: string): RawResponse {
  const end = text.indexOf('\r\n\r\n');
  assert.ok(end > 0, `an HTTP response: ${JSON.stringify(text.slice(0, 200))}`);
  const [statusLine = '', ...lines] = text.slice(0, end).split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1]);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let rest = text.slice(end + 4);
  let body = rest;
  if (headers['content-length'] !== undefined) {
    body = rest.slice(0, Number(headers['content-length']));
  } else if (headers['transfer-encoding'] === 'chunked') {
    body = '';
    for (;;) {
      const lineEnd = rest.indexOf('\r\n');
      const length = parseInt(rest.slice(0, lineEnd), 16);
      if (!(length > 0)) break;
      body += rest.slice(lineEnd + 2, lineEnd + 2 + length);
      rest = rest.slice(lineEnd + 2 + length + 2);
    }
  }
  return { status, headers, body: Buffer.from(body, 'latin1').toString('utf8') };
}

/** True once `text` holds a whole response (headers, and the body its framing announces). */
export function hasWholeResponse(text: string): boolean {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1];
  if (length !== undefined)
    return Buffer.byteLength(text.slice(end + 4), 'latin1') >= Number(length);
  return /\r\n0\r\n\r\n/.test(text.slice(end));
}

/** Asserts that `text` starts with a problem+json answer of `status` and `code`; returns it. */
export function assertProblem(
  text: string,
  status: number,
  code: string,
): { response: RawResponse; problem: Record<string, unknown> } {
  const response = parseResponse(text);
  assert.equal(response.status, status, text.slice(0, 400));
  assert.match(response.headers['content-type'] ?? '', /^application\/problem\+json/, text);
  const problem = JSON.parse(response.body) as Record<string, unknown>;
  assert.equal(problem.code, code, response.body);
  assert.equal(problem.status, status);
  assert.equal(typeof problem.title, 'string');
  assert.equal(typeof problem.detail, 'string');
  return { response, problem };
}

/** A request as raw text: request line, headers (in order, repeats allowed), body. */
export function rawRequest(
  method: string,
  path: string,
  headers: [string, string][] = [],
  body?: string | Buffer,
): Buffer {
  const head = [`${method} ${path} HTTP/1.1`, ...headers.map(([k, v]) => `${k}: ${v}`)];
  if (
    body !== undefined &&
    !headers.some(([k]) => /^(content-length|transfer-encoding)$/i.test(k))
  ) {
    head.push(`content-length: ${Buffer.byteLength(body)}`);
  }
  return Buffer.concat([
    Buffer.from(`${head.join('\r\n')}\r\n\r\n`, 'latin1'),
    body === undefined ? Buffer.alloc(0) : typeof body === 'string' ? Buffer.from(body) : body,
  ]);
}
