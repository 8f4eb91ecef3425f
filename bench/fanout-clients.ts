// The subscribers of the fan-out benchmarks, as a child process driven by `fanout.ts` over IPC.
// Opens COUNT connections to TARGET_URL, BATCH at a time (each batch fully established before
// the next), and records, for every message received, the wall-clock time at which its bytes
// reached JavaScript, keyed by the event's `seq`.
// Env: MODE = sse (a raw http.request with `accept: text/event-stream`, frames parsed with
// eventsource-parser; only frames whose `event:` is EVENT_TYPE are recorded, keyed by their
// `id:`) or ws (a `ws` client; every message `{ "event": { "seq": n } }` is recorded).
// Commands: open, count, receipts, close.
import { createParser } from 'eventsource-parser';
import http from 'node:http';
import WebSocket from 'ws';
import { serveCommands, wallNow } from './fanout-ipc.ts';

const MODE = process.env.MODE === 'ws' ? 'ws' : 'sse';
const TARGET = new URL(process.env.TARGET_URL ?? 'http://127.0.0.1:8080/v1/events');
const COUNT = Number(process.env.COUNT ?? 1000);
const BATCH = Math.max(1, Number(process.env.BATCH ?? 250));
const EVENT_TYPE = process.env.EVENT_TYPE ?? 'operation.progress';
const OPEN_TIMEOUT_MS = 20_000;

/** Receipt times (wallNow) per event seq. */
const receipts = new Map<string, number[]>();
let received = 0;
let messageBytes = 0;
/** Connections that ended without being asked to. */
let dropped = 0;
let closing = false;
const closers: (() => void)[] = [];
const errors: string[] = [];

function record(key: string, time: number, bytes: number): void {
  let list = receipts.get(key);
  if (!list) receipts.set(key, (list = []));
  list.push(time);
  received++;
  messageBytes = bytes;
}

function openSse(): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const req = http.request(
      {
        host: TARGET.hostname,
        port: TARGET.port,
        path: `${TARGET.pathname}${TARGET.search}`,
        method: 'GET',
        agent: false,
        headers: { accept: 'text/event-stream' },
      },
      (res) => {
        req.setTimeout(0); // the stream may be idle for long
        const type = res.headers['content-type'] ?? '';
        if (res.statusCode !== 200 || !type.startsWith('text/event-stream')) {
          res.resume();
          reject(new Error(`HTTP ${res.statusCode} ${type}`));
          return;
        }
        let stamp = 0;
        const parser = createParser({
          onEvent: (event) => {
            if (event.event === EVENT_TYPE && event.id !== undefined) {
              record(event.id, stamp, Buffer.byteLength(event.data));
            }
          },
        });
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          stamp = wallNow();
          parser.feed(chunk);
        });
        res.on('close', () => {
          if (!closing) dropped++;
        });
        resolve();
      },
    );
    req.on('error', (error) => {
      if (!closing) reject(error);
    });
    req.setTimeout(OPEN_TIMEOUT_MS, () => req.destroy(new Error('no response headers')));
    req.end();
    closers.push(() => req.destroy());
  });
}

function openWs(): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(TARGET, {
      perMessageDeflate: false,
      handshakeTimeout: OPEN_TIMEOUT_MS,
    });
    ws.on('open', () => resolve());
    ws.on('error', (error) => {
      if (!closing) reject(error);
    });
    ws.on('message', (data: Buffer) => {
      const stamp = wallNow();
      const message = JSON.parse(data.toString('utf8')) as { event?: { seq?: number } };
      const seq = message.event?.seq;
      if (seq !== undefined) record(String(seq), stamp, data.length);
    });
    ws.on('close', () => {
      if (!closing) dropped++;
    });
    closers.push(() => ws.terminate());
  });
}

serveCommands(
  { mode: MODE, count: COUNT },
  {
    open: async () => {
      const start = performance.now();
      let open = 0;
      for (let i = 0; i < COUNT; i += BATCH) {
        const batch = Array.from({ length: Math.min(BATCH, COUNT - i) }, () =>
          MODE === 'ws' ? openWs() : openSse(),
        );
        for (const result of await Promise.allSettled(batch)) {
          if (result.status === 'fulfilled') open++;
          else if (errors.length < 5) errors.push(String(result.reason));
        }
      }
      return { open, failed: COUNT - open, errors, ms: Math.round(performance.now() - start) };
    },
    count: () => ({ received, dropped }),
    receipts: () => ({ receipts: Object.fromEntries(receipts), received, messageBytes, dropped }),
    close: () => {
      closing = true;
      for (const close of closers.splice(0)) close();
      return true;
    },
  },
  () => {
    closing = true;
    for (const close of closers.splice(0)) close();
    return Promise.resolve();
  },
);
