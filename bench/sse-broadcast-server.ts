// A diagnostic floor for `stream-fanout.ts` (not part of `npm run bench`): a bare node:http
// server that answers every request with an event stream (the headers Accepted sends and a
// `retry:` line) and, on `step`, writes one SSE frame of MESSAGE_BYTES (default 400) to every
// open response. What an SSE connection costs in Node before any code of Accepted runs.
// Run by `sse-broadcast.ts` as a child process (with --expose-gc) over IPC (`fanout-ipc.ts`).
import http from 'node:http';
import { memoryAfterGc, serveCommands, wallNow } from './fanout-ipc.ts';

const MESSAGE_BYTES = Number(process.env.MESSAGE_BYTES ?? 400);

const open = new Set<http.ServerResponse>();
const server = http.createServer((req, res) => {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
  });
  res.write('retry: 2000\n\n');
  open.add(res);
  res.on('close', () => open.delete(res));
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const address = server.address();
if (address === null || typeof address === 'string') throw new Error('no TCP address');

let seq = 0;
function event(pad: string): string {
  return JSON.stringify({
    seq,
    id: `evt_${seq.toString(16).padStart(8, '0')}`,
    operationId: 'op_0VbfRq2UxUVjajQ1VuCwK6KozJfQEy',
    operationType: 'gate',
    type: 'operation.progress',
    version: seq + 2,
    time: new Date().toISOString(),
    labels: {},
    data: { status: 'running', progress: { fraction: 0.5, message: `step ${seq}`, data: pad } },
  });
}
const pad = 'x'.repeat(Math.max(0, MESSAGE_BYTES - event('').length));

serveCommands(
  { port: address.port },
  {
    memory: () => ({ ...memoryAfterGc(), connections: open.size }),
    step: async () => {
      const t0 = wallNow();
      seq++;
      const frame = `id: ${seq}\nevent: operation.progress\ndata: ${event(pad)}\n\n`;
      for (const res of open) res.write(frame);
      await new Promise((resolve) => setImmediate(resolve));
      return { seq, t0, written: wallNow(), clients: open.size };
    },
  },
  async () => {
    for (const res of open) res.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  },
);
