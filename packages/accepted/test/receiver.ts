// A real webhook receiver on loopback for the webhook tests: it keeps every request (headers
// and the exact body bytes) and answers as the test says, at once, later, or when a promise
// settles (to hold a request open).
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';

/** How the receiver answers one request: by default 200 with the body `ok`. */
export interface Reply {
  status: number;
  /** Answer this much later. */
  delayMs?: number;
  headers?: Record<string, string>;
  body?: string;
}

/** One request as the receiver saw it. */
export interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** When its body had arrived (ms since the epoch). */
  at: number;
}

export class Receiver {
  readonly received: Received[] = [];
  answer: (request: Received, index: number) => Reply | Promise<Reply> = () => ({ status: 200 });
  /** The most requests of one `webhook-id` open at the same time. */
  maxConcurrentPerId = 0;
  url = '';
  private readonly open = new Map<string, number>();
  private readonly server = http.createServer((req, res) => {
    const id = String(req.headers['webhook-id']);
    const now = (this.open.get(id) ?? 0) + 1;
    this.open.set(id, now);
    this.maxConcurrentPerId = Math.max(this.maxConcurrentPerId, now);
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const request: Received = {
        path: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        at: Date.now(),
      };
      this.received.push(request);
      void Promise.resolve(this.answer(request, this.received.length - 1)).then((reply) => {
        const send = () => {
          this.open.set(id, (this.open.get(id) ?? 1) - 1);
          if (res.destroyed) return;
          res.writeHead(reply.status, reply.headers ?? {});
          res.end(reply.body ?? 'ok');
        };
        if (reply.delayMs) setTimeout(send, reply.delayMs);
        else send();
      });
    });
  });

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** Requests for one path, parsed. */
  at(path: string): {
    headers: http.IncomingHttpHeaders;
    payload: { type: string; data: { seq: number; operationId: string; type: string } };
  }[] {
    return this.received
      .filter((r) => r.path === path)
      .map((r) => ({ headers: r.headers, payload: JSON.parse(r.body) as never }));
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** A loopback port nothing listens on (taken, then released). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
