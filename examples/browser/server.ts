// The browser example's backend: it holds the API key, and gives the page only a short-lived
// stream token for the one operation it started.
//
//   node --import tsx examples/browser/server.ts [--port 8090] [--host 127.0.0.1]
//                                                [--data DIR] [--api-key KEY]
//
// One port serves both the page and the API, so the page needs no CORS. A small node:http
// front server answers the example's own routes (`/`, `/app.js`, `/demo/start`) and hands
// every other request to the Accepted HTTP API unchanged. The API checks an API key (or a
// stream token) on every route but a few public ones, so the example's routes, which need
// no key, cannot be registered on the API's Fastify app itself.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { demoOperations } from '../../packages/accepted/src/engine/demo.ts';
import {
  ApiKeys,
  createHttpServer,
  generateApiKey,
} from '../../packages/accepted/src/http/index.ts';
import { createAccepted } from '../../packages/accepted/src/index.ts';
import { sqliteStore } from '../../packages/accepted/src/store/sqlite/index.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

const { values: flags } = parseArgs({
  options: {
    port: { type: 'string', default: '8090' },
    host: { type: 'string', default: '127.0.0.1' },
    data: { type: 'string' },
    'api-key': { type: 'string' },
  },
  strict: true,
});
const port = Number(flags.port);
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  process.stderr.write('--port must be a whole number from 0 to 65535\n');
  process.exit(2);
}

// Data: a SQLite file in --data, or in a temp folder removed at exit.
const tempData = flags.data === undefined;
const dataDir = flags.data ?? fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-browser-'));
fs.mkdirSync(dataDir, { recursive: true });

// The API key lives only in this process. Pass --api-key to call the API yourself (curl).
const apiKey = flags['api-key'] ?? generateApiKey().key;
const apiKeys = new ApiKeys();
apiKeys.add({ tenant: 'demo', key: apiKey });

const accepted = createAccepted({
  store: sqliteStore({ filename: path.join(dataDir, 'accepted.db') }),
  operations: demoOperations,
});
await accepted.start();
const app = createHttpServer({ accepted, apiKeys, logger: false });
await app.ready();

const page = fs.readFileSync(path.join(here, 'index.html'));
const script = fs.readFileSync(path.join(here, 'app.js'));

function send(res: http.ServerResponse, status: number, type: string, body: string | Buffer) {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  res.end(body);
}

function sendJson(res: http.ServerResponse, status: number, value: unknown) {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  let text = '';
  for await (const chunk of req) {
    text += String(chunk);
    if (text.length > 1024) throw new Error('body too large');
  }
  return text === '' ? {} : JSON.parse(text);
}

/** A whole number in [min, max], or the default when absent. */
function intOr(value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new Error(`expected a whole number from ${min} to ${max}`);
  }
  return value;
}

/** What a backend does with its API key: submit the work, mint a token for its stream. */
async function startDemo(req: http.IncomingMessage, res: http.ServerResponse) {
  let steps: number;
  let ms: number;
  try {
    const body = (await readJson(req)) as { steps?: unknown; ms?: unknown } | null;
    steps = intOr(body?.steps, 5, 1, 50);
    ms = intOr(body?.ms, 400, 0, 5000);
  } catch (error) {
    sendJson(res, 400, { error: `Bad request: ${(error as Error).message}` });
    return;
  }
  // app.inject stands for the fetch a backend on another host would make to the API.
  const authorization = `Bearer ${apiKey}`;
  const submitted = await app.inject({
    method: 'POST',
    url: '/v1/operations',
    headers: { authorization },
    payload: { type: 'demo.progress', input: { steps, ms } },
  });
  if (submitted.statusCode !== 202 && submitted.statusCode !== 200) {
    sendJson(res, 502, {
      error: 'The API refused the submit.',
      problem: submitted.json<unknown>(),
    });
    return;
  }
  const { id } = submitted.json<{ id: string }>();
  const minted = await app.inject({
    method: 'POST',
    url: '/v1/stream-tokens',
    headers: { authorization },
    payload: { operation: id, ttlSeconds: 300 },
  });
  if (minted.statusCode !== 201) {
    sendJson(res, 502, {
      error: 'The API refused a stream token.',
      problem: minted.json<unknown>(),
    });
    return;
  }
  const { token } = minted.json<{ token: string }>();
  sendJson(res, 200, { operationId: id, token });
}

const front = http.createServer((req, res) => {
  const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
  const read = req.method === 'GET' || req.method === 'HEAD';
  if (read && pathname === '/') {
    send(res, 200, 'text/html; charset=utf-8', page);
  } else if (read && pathname === '/app.js') {
    send(res, 200, 'text/javascript; charset=utf-8', script);
  } else if (pathname === '/demo/start') {
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      sendJson(res, 405, { error: 'Use POST.' });
      return;
    }
    startDemo(req, res).catch((error: unknown) => {
      console.error('demo start failed', error);
      if (!res.headersSent) sendJson(res, 500, { error: 'The demo failed to start.' });
    });
  } else {
    // Everything else is the API, authenticated as usual (a key, or a stream token).
    app.routing(req, res);
  }
});
// WebSocket upgrades (GET /v1/ws) go to the API too.
front.on('upgrade', (req, socket, head) => app.server.emit('upgrade', req, socket, head));

front.on('error', (error) => {
  console.error(`cannot listen on ${flags.host}:${port}: ${error.message}`);
  process.exit(1);
});
front.listen(port, flags.host, () => {
  const address = front.address();
  const bound = typeof address === 'object' && address !== null ? address.port : port;
  const host = flags.host.includes(':') ? `[${flags.host}]` : flags.host;
  console.log(`listening on http://${host}:${bound}`);
});

let stopping = false;
async function stop() {
  if (stopping) process.exit(1);
  stopping = true;
  await accepted.stop({ graceful: false });
  await app.close(); // ends open streams
  front.closeAllConnections();
  await new Promise((resolve) => front.close(resolve));
  if (tempData) fs.rmSync(dataDir, { recursive: true, force: true });
  process.exit(0);
}
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());
