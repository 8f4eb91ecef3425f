// A real node:http proxy in front of a real server, for the client's tests: it logs every
// request, counts the requests and WebSockets open at each moment, and lets a test answer a
// request itself (a 503) or cut a stream mid-way.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';

export interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

/** Return true when the request was answered (or cut) here; false to forward it. */
export type Intercept = (req: http.IncomingMessage, res: http.ServerResponse) => boolean;

export interface Proxy {
  url: string;
  seen: Seen[];
  /** Requests (and WebSockets) open now, and the most ever open at once. */
  open: number;
  maxOpen: number;
  intercept: Intercept | null;
  /** Called with every chunk of every answer forwarded: return true to cut the connection. */
  cut: ((req: Seen, chunk: Buffer) => boolean) | null;
  resetMax(): void;
  close(): Promise<void>;
}

export async function startProxy(target: string): Promise<Proxy> {
  const sockets = new Set<Duplex>();
  const proxy: Proxy = {
    url: '',
    seen: [],
    open: 0,
    maxOpen: 0,
    intercept: null,
    cut: null,
    resetMax: () => (proxy.maxOpen = proxy.open),
    close: async () => {
      for (const socket of sockets) socket.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  const opened = () => {
    proxy.open += 1;
    proxy.maxOpen = Math.max(proxy.maxOpen, proxy.open);
  };
  const server = http.createServer((req, res) => {
    const seen = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers };
    proxy.seen.push(seen);
    opened();
    res.on('close', () => (proxy.open -= 1));
    if (proxy.intercept?.(req, res)) return;
    const upstream = http.request(new URL(seen.url, target), {
      method: seen.method,
      headers: req.headers,
    });
    upstream.on('response', (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.on('data', (chunk: Buffer) => {
        if (proxy.cut?.(seen, chunk)) {
          res.destroy();
          upstream.destroy();
          return;
        }
        res.write(chunk);
      });
      answer.on('end', () => res.end());
    });
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    proxy.seen.push({ method: 'UPGRADE', url: req.url ?? '/', headers: req.headers });
    opened();
    sockets.add(socket);
    socket.on('close', () => {
      sockets.delete(socket);
      proxy.open -= 1;
    });
    socket.on('error', () => socket.destroy());
    const upstream = http.request(new URL(req.url ?? '/', target), { headers: req.headers });
    upstream.on('upgrade', (answer, upSocket, upHead) => {
      sockets.add(upSocket);
      const lines = ['HTTP/1.1 101 Switching Protocols'];
      for (let i = 0; i < answer.rawHeaders.length; i += 2) {
        lines.push(`${answer.rawHeaders[i]}: ${answer.rawHeaders[i + 1]}`);
      }
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      socket.write(upHead);
      upSocket.write(head);
      upSocket.pipe(socket).pipe(upSocket);
      upSocket.on('close', () => socket.destroy());
      upSocket.on('error', () => socket.destroy());
      socket.on('close', () => upSocket.destroy());
    });
    upstream.on('response', () => socket.destroy());
    upstream.on('error', () => socket.destroy());
    upstream.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}
