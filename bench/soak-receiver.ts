// The webhook receiver of `soak.ts`: a plain `node:http` server on a free loopback port, in a
// child process of its own (so that it does not share the server's or the load generator's
// event loop), driven over IPC (`fanout-ipc.ts`). It fails about half of the attempts it
// gets, decided by a hash (FNV-1a) of the request's `webhook-id`, so that retries can succeed
// and the outcome of every delivery is known in advance:
//   - half of the ids (hash even): 204 at once;
//   - 3/8 (hash odd, not the last class): 500 on the first attempt, 204 on the next;
//   - 1/8 (hash odd, (hash >> 1) % 4 === 3): 500 on every attempt: a dead letter once the
//     endpoint's schedule is spent (`attempts` from `arm`).
// With 4 attempts per delivery (a retry schedule of 3 delays) that fails half of the attempts
// in expectation: 3/8 x 1 + 1/8 x 4 = 7/8 failed of 1/2 x 1 + 3/8 x 2 + 1/8 x 4 = 7/4 made.
// Every `verifyEvery`-th request (and the first) has its signature checked with
// `verifyWebhook`. State is per delivery in flight only (ids failed once, dead ids not yet
// spent), plus the set of ids answered 2xx to count duplicates.
// Commands: `arm` { secret, attempts, verifyEvery } (resets the counters), `counters`.
import http from 'node:http';
import { verifyWebhook } from '../packages/accepted/src/webhooks/signature.ts';
import { serveCommands } from './fanout-ipc.ts';

export interface ReceiverCounters {
  /** Requests read to their end. */
  received: number;
  /** Answered 204 (first time for that id). */
  ok: number;
  /** Answered 500. */
  failed: number;
  /** Ids of each class seen for the first time. */
  firstOk: number;
  firstOnce: number;
  firstDead: number;
  /** `once` ids answered 204 on their second attempt. */
  recovered: number;
  /** `dead` ids that have had every attempt (`attempts`): dead letters, as far as it knows. */
  spent: number;
  /** Attempts of a `dead` id past `attempts` (the server tried more than its schedule). */
  overAttempts: number;
  /** Requests for an id already answered 2xx (a delivery sent again after success). */
  duplicates: number;
  verified: number;
  verifyFailures: number;
  errors: string[];
  /** Deliveries in flight as the receiver sees them: `once` ids failed once, unspent `dead` ids. */
  onceWaiting: number;
  deadWaiting: number;
}

type Fate = 'ok' | 'once' | 'dead';

/** FNV-1a, 32 bits, over the UTF-16 code units (the ids are ASCII). */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

export function fateOf(id: string): Fate {
  const hash = fnv1a(id);
  if ((hash & 1) === 0) return 'ok';
  return ((hash >>> 1) & 3) === 3 ? 'dead' : 'once';
}

let secret = '';
let attempts = 4;
let verifyEvery = 100;
let counters: ReceiverCounters;
/** `once` ids that got their 500. */
let failedOnce = new Set<string>();
/** `dead` ids not yet spent, and the attempts they have had. */
let deadTries = new Map<string, number>();
/** `dead` ids that have had every attempt. */
let spentIds = new Set<string>();
/** Ids answered 2xx. */
let answered = new Set<string>();

function reset(): void {
  counters = {
    received: 0,
    ok: 0,
    failed: 0,
    firstOk: 0,
    firstOnce: 0,
    firstDead: 0,
    recovered: 0,
    spent: 0,
    overAttempts: 0,
    duplicates: 0,
    verified: 0,
    verifyFailures: 0,
    errors: [],
    onceWaiting: 0,
    deadWaiting: 0,
  };
  failedOnce = new Set();
  deadTries = new Map();
  spentIds = new Set();
  answered = new Set();
}
reset();

/** The answer to one attempt of `id`: true for 204, false for 500. */
function decide(id: string): boolean {
  if (answered.has(id)) {
    counters.duplicates++;
    return true;
  }
  switch (fateOf(id)) {
    case 'ok':
      counters.firstOk++;
      answered.add(id);
      return true;
    case 'once':
      if (failedOnce.delete(id)) {
        counters.recovered++;
        answered.add(id);
        return true;
      }
      counters.firstOnce++;
      failedOnce.add(id);
      return false;
    case 'dead': {
      if (spentIds.has(id)) {
        counters.overAttempts++;
        return false;
      }
      const tries = (deadTries.get(id) ?? 0) + 1;
      if (tries === 1) counters.firstDead++;
      if (tries >= attempts) {
        counters.spent++;
        deadTries.delete(id);
        spentIds.add(id);
      } else {
        deadTries.set(id, tries);
      }
      return false;
    }
  }
}

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const n = ++counters.received;
    const header = req.headers['webhook-id'];
    const id = typeof header === 'string' ? header : '';
    const good = id !== '' && decide(id);
    if (good) {
      counters.ok++;
      res.writeHead(204).end();
    } else {
      counters.failed++;
      res.writeHead(500, { 'content-type': 'text/plain' }).end('soak: failing on purpose');
    }
    if (n % verifyEvery === 0 || n === 1) {
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      try {
        verifyWebhook(secret, req.headers, body);
        counters.verified++;
      } catch (error) {
        counters.verifyFailures++;
        if (counters.errors.length < 3) counters.errors.push(String(error));
      }
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
      const options = args as { secret: string; attempts: number; verifyEvery?: number };
      secret = options.secret;
      attempts = options.attempts;
      verifyEvery = Math.max(1, options.verifyEvery ?? 100);
      reset();
      return true;
    },
    counters: () => ({ ...counters, onceWaiting: failedOnce.size, deadWaiting: deadTries.size }),
  },
  async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  },
);
