// The peer of `stream-fanout-server.ts`: a plain `ws` WebSocketServer on a free loopback port,
// no compression, no protocol. On `step` it builds one message of MESSAGE_BYTES (default 400)
// shaped like an Accepted event message, serialises it once and sends it to every client
// (`for (const c of wss.clients) c.send(msg)`); t0 is taken before the message is built,
// `written` at the first setImmediate after the loop.
// Run by `ws-broadcast.ts` as a child process (with --expose-gc) over IPC (`fanout-ipc.ts`).
import { WebSocketServer } from 'ws';
import { memoryAfterGc, serveCommands, wallNow } from './fanout-ipc.ts';

const MESSAGE_BYTES = Number(process.env.MESSAGE_BYTES ?? 400);

const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
await new Promise<void>((resolve, reject) => {
  wss.once('listening', resolve);
  wss.once('error', reject);
});
const address = wss.address();
if (address === null || typeof address === 'string') throw new Error('no TCP address');

let seq = 0;
/** The same members as an Accepted `event` message, padded to MESSAGE_BYTES. */
function message(pad: string): string {
  seq++;
  return JSON.stringify({
    type: 'event',
    subscription: 's1',
    event: {
      seq,
      id: `evt_${seq.toString(16).padStart(8, '0')}`,
      operationId: 'op_0VbfRq2UxUVjajQ1VuCwK6KozJfQEy',
      operationType: 'gate',
      type: 'operation.progress',
      version: seq + 2,
      time: new Date().toISOString(),
      labels: {},
      data: { status: 'running', progress: { fraction: 0.5, message: `step ${seq}`, data: pad } },
    },
  });
}
const bare = message('').length;
seq = 0;
const pad = 'x'.repeat(Math.max(0, MESSAGE_BYTES - bare));

serveCommands(
  { port: address.port },
  {
    memory: () => ({ ...memoryAfterGc(), connections: wss.clients.size }),
    step: async () => {
      const t0 = wallNow();
      const msg = message(pad);
      for (const c of wss.clients) c.send(msg);
      await new Promise((resolve) => setImmediate(resolve));
      return { seq, t0, written: wallNow(), clients: wss.clients.size, bytes: msg.length };
    },
  },
  async () => {
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  },
);
