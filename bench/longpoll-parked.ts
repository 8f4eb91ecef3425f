// The wait() pattern over HTTP: N operations, each submitted by one of C clients and then
// long-polled until it ends (`GET /v1/operations/{id}` with `Prefer: wait=30` and
// `If-None-Match` = the version it has), while PARKED other long polls are held open all
// along, on operations scheduled for tomorrow. The server (SQLite, durable, worker
// concurrency C) runs in a child process. If a parked poll costs the server something per
// event, the figure falls as PARKED grows. Prints one JSON line.
// Env: N (default 20000), C (default 64), PARKED (default 1000). The parked polls use one
// socket each: this process and the server each hold PARKED sockets, bounded by the open-file
// limit (`ulimit -n`, 20,000 on the benchmark machine).
import http from 'node:http';
import net from 'node:net';
import { STORE_LABEL, launchServer } from './http-server.ts';

const N = Number(process.env.N ?? 20_000);
const C = Number(process.env.C ?? 64);
const PARKED = Number(process.env.PARKED ?? 1_000);

const server = await launchServer({
  COUNT: '0',
  C: String(C),
  MAX_CONNECTIONS: String(PARKED + C + 100),
});
const agent = new http.Agent({ keepAlive: true, maxSockets: C });

interface Answer {
  status: number;
  etag: string | undefined;
  body: { id?: string; status?: string; updatedAt?: string; createdAt?: string };
}

function request(method: string, path: string, headers: Record<string, string>, body?: string) {
  return new Promise<Answer>((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: server.port, method, path, agent, headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          resolve({
            status: res.statusCode ?? 0,
            etag: res.headers.etag,
            body: text ? (JSON.parse(text) as Answer['body']) : {},
          });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const submit = (input: object, runAt?: string) =>
  request(
    'POST',
    '/v1/operations',
    { 'content-type': 'application/json' },
    JSON.stringify({ type: 'noop', input, ...(runAt ? { runAt } : {}) }),
  );

try {
  // The parked polls: one raw socket each, re-polling when the server's wait runs out.
  const tomorrow = new Date(Date.now() + 86_400_000).toISOString();
  const ids: string[] = [];
  let asked = 0;
  await Promise.all(
    Array.from({ length: C }, async () => {
      while (asked++ < PARKED) {
        const answer = await submit({ parked: true }, tomorrow);
        if (answer.status !== 202 || !answer.body.id) throw new Error(`submit ${answer.status}`);
        ids.push(answer.body.id);
      }
    }),
  );
  const sockets: net.Socket[] = [];
  let parkedAnswers = 0;
  for (const [i, id] of ids.entries()) {
    // Addresses 127.0.0.2... so that no source address passes the per-address bound.
    const socket = net.connect({
      host: '127.0.0.1',
      port: server.port,
      localAddress: `127.0.${1 + Math.floor(i / 900)}.${2 + (i % 250)}`,
    });
    const poll = () =>
      socket.write(
        `GET /v1/operations/${id} HTTP/1.1\r\nHost: 127.0.0.1\r\nPrefer: wait=60\r\n\r\n`,
      );
    socket.on('connect', poll);
    socket.on('data', () => {
      parkedAnswers++;
      poll();
    });
    socket.on('error', (error) => {
      throw error;
    });
    sockets.push(socket);
    // 200 at a time, each batch connected before the next: a burst past the listen backlog
    // sets off the kernel's SYN-flood defence, which resets some of them.
    if (i % 200 === 199 || i === ids.length - 1) {
      await Promise.all(
        sockets
          .slice(-200)
          .map(
            (s) =>
              new Promise((resolve) =>
                s.readyState === 'open' ? resolve(null) : s.once('connect', resolve),
              ),
          ),
      );
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 500));

  const latencies: number[] = [];
  let next = 0;
  let polls = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: C }, async () => {
      while (next < N) {
        next++;
        const started = performance.now();
        const submitted = await submit({ i: next });
        const id = submitted.body.id;
        if (submitted.status !== 202 || !id) throw new Error(`submit ${submitted.status}`);
        let etag = submitted.etag;
        for (;;) {
          polls++;
          const answer = await request('GET', `/v1/operations/${id}`, {
            prefer: 'wait=30',
            ...(etag ? { 'if-none-match': etag } : {}),
          });
          if (answer.status === 200) {
            etag = answer.etag;
            if (answer.body.status === 'succeeded') break;
            if (answer.body.status !== 'queued' && answer.body.status !== 'running') {
              throw new Error(`${id} ended ${answer.body.status}`);
            }
          } else if (answer.status !== 304) {
            throw new Error(`poll ${answer.status}`);
          }
        }
        latencies.push(performance.now() - started);
      }
    }),
  );
  const t1 = performance.now();
  latencies.sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      system: 'accepted-longpoll-parked',
      store: STORE_LABEL,
      N,
      connections: C,
      parked: PARKED,
      parked_answers: parkedAnswers,
      e2e_per_s: Math.round(N / ((t1 - t0) / 1000)),
      polls_per_op: Math.round((polls / N) * 100) / 100,
      p50_ms: Math.round((latencies[N >> 1] ?? 0) * 10) / 10,
      p99_ms: Math.round((latencies[Math.floor(N * 0.99)] ?? 0) * 10) / 10,
    }),
  );
  for (const socket of sockets) socket.destroy();
} finally {
  agent.destroy();
  await server.stop();
}
