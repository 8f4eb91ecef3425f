// The webhook receiver of `webhook-throughput.ts` and `webhook-floor.ts`: a plain `node:http`
// server on a free loopback port, in a child process of its own (so that it does not share
// the sender's event loop), driven over IPC (`fanout-ipc.ts`). Every request is read to its
// end and answered 204 at once; every `verifyEvery`-th (from `arm`) and the first is checked with
// `verifyWebhook` against the endpoint's secret, so the count is of real, signed deliveries.
// Commands: `arm` { secret, verifyEvery, expect } (resets the counters), `wait` { timeoutMs }
// (answers once `expect` requests have ended, or at the timeout, with the counters and the
// wall-clock times of the first and of the expect-th), `counters`.
import http from 'node:http';
import { verifyWebhook } from '../packages/accepted/src/webhooks/signature.ts';
import { serveCommands, wallNow } from './fanout-ipc.ts';
import type { Counters } from './webhook-common.ts';

let secret = '';
let verifyEvery = 100;
let expect = Infinity;
let counters: Counters;
let ids = new Set<string>();
let waiter: (() => void) | null = null;

function reset(): void {
  counters = {
    received: 0,
    verified: 0,
    verifyFailures: 0,
    errors: [],
    duplicates: 0,
    bytes: 0,
    first: 0,
    last: 0,
  };
  ids = new Set();
}
reset();

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const now = wallNow();
    res.writeHead(204).end();
    const n = ++counters.received;
    if (n === 1) counters.first = now;
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    counters.bytes += body.length;
    const id = req.headers['webhook-id'];
    if (typeof id === 'string') {
      if (ids.has(id)) counters.duplicates++;
      else ids.add(id);
    }
    if (n % verifyEvery === 0 || n === 1) {
      try {
        verifyWebhook(secret, req.headers, body);
        counters.verified++;
      } catch (error) {
        counters.verifyFailures++;
        if (counters.errors.length < 3) counters.errors.push(String(error));
      }
    }
    if (n === expect) {
      counters.last = now;
      waiter?.();
      waiter = null;
    }
  });
});
server.keepAliveTimeout = 30_000;
await new Promise<void>((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const address = server.address();
if (address === null || typeof address === 'string') throw new Error('no TCP address');

serveCommands(
  { port: address.port },
  {
    arm: (args) => {
      const options = args as { secret: string; verifyEvery?: number; expect: number };
      secret = options.secret;
      verifyEvery = Math.max(1, options.verifyEvery ?? 100);
      expect = options.expect;
      reset();
      return true;
    },
    wait: async (args) => {
      const { timeoutMs } = args as { timeoutMs: number };
      if (counters.received < expect) {
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          waiter = resolve;
          timer = setTimeout(() => {
            waiter = null;
            resolve();
          }, timeoutMs);
        });
        clearTimeout(timer);
      }
      return { ...counters, reached: counters.received >= expect };
    },
    counters: () => ({ ...counters }),
  },
  async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  },
);
