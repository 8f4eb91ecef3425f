// The idle Server-Sent Events clients of `soak.ts`, as a child process driven over IPC
// (`fanout-ipc.ts`), so that holding them costs the server's and the load generator's event
// loops nothing. `open` { urls, batch } opens one stream per URL (a raw `http.request` with
// `accept: text/event-stream`, no agent: one connection each), `batch` at a time, each batch
// fully established before the next; frames are parsed with eventsource-parser and counted:
// events by their `event:` name, comments (the server's `: keepalive` heartbeats), bytes, and
// streams that ended without being asked to (`dropped`, with how: end or error).
// Commands: open, counters, close.
import { createParser } from 'eventsource-parser';
import http from 'node:http';
import { serveCommands } from './fanout-ipc.ts';

const OPEN_TIMEOUT_MS = 20_000;

export interface ClientCounters {
  open: number;
  /** Events received, by their `event:` name. */
  events: Record<string, number>;
  /** Comment frames (heartbeats). */
  comments: number;
  bytes: number;
  /** Streams that ended or failed without `close`. */
  dropped: number;
  dropReasons: string[];
}

const counters: ClientCounters = {
  open: 0,
  events: {},
  comments: 0,
  bytes: 0,
  dropped: 0,
  dropReasons: [],
};
let closing = false;
const closers: (() => void)[] = [];

function dropped(reason: string): void {
  if (closing) return;
  counters.dropped++;
  counters.open--;
  if (counters.dropReasons.length < 5) counters.dropReasons.push(reason);
}

function openStream(url: URL): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    let gone = false;
    let lastError = '';
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: `${url.pathname}${url.search}`,
        method: 'GET',
        agent: false,
        headers: { accept: 'text/event-stream' },
      },
      (res) => {
        req.setTimeout(0); // idle for long: heartbeats only
        const type = res.headers['content-type'] ?? '';
        if (res.statusCode !== 200 || !type.startsWith('text/event-stream')) {
          res.resume();
          settled = true;
          reject(new Error(`HTTP ${res.statusCode} ${type}`));
          return;
        }
        const parser = createParser({
          onEvent: (event) => {
            const name = event.event ?? 'message';
            counters.events[name] = (counters.events[name] ?? 0) + 1;
          },
          onComment: () => {
            counters.comments++;
          },
        });
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          counters.bytes += chunk.length;
          parser.feed(chunk);
        });
        res.on('error', (error) => (lastError = String(error)));
        res.on('close', () => {
          if (gone) return;
          gone = true;
          dropped(
            `${res.complete ? 'ended by the server' : `cut${lastError ? ` (${lastError})` : ''}`}: ${url.pathname}`,
          );
        });
        counters.open++;
        settled = true;
        resolve();
      },
    );
    req.on('error', (error) => {
      if (!settled) {
        settled = true;
        reject(error);
      } else {
        lastError = String(error);
      }
    });
    req.setTimeout(OPEN_TIMEOUT_MS, () => req.destroy(new Error('no response headers')));
    req.end();
    closers.push(() => req.destroy());
  });
}

serveCommands(
  {},
  {
    open: async (args) => {
      const { urls, batch = 250 } = args as { urls: string[]; batch?: number };
      const start = performance.now();
      const errors: string[] = [];
      let failed = 0;
      for (let i = 0; i < urls.length; i += batch) {
        const opened = await Promise.allSettled(
          urls.slice(i, i + batch).map((url) => openStream(new URL(url))),
        );
        for (const result of opened) {
          if (result.status === 'rejected') {
            failed++;
            if (errors.length < 5) errors.push(String(result.reason));
          }
        }
      }
      return { open: counters.open, failed, errors, ms: Math.round(performance.now() - start) };
    },
    counters: () => ({ ...counters, events: { ...counters.events } }),
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
