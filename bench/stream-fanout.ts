// SUBSCRIBERS (default 10,000) concurrent Server-Sent Events subscribers on one Accepted node,
// E events pushed to all of them (`fanout.ts` says how it is measured). The server
// (`stream-fanout-server.ts`) and the subscribers (`fanout-clients.ts`) are child processes on
// 127.0.0.1; the events are the operation.progress events of one running `gate` operation.
// Each subscriber holds the tenant stream filtered to that operation,
// `GET /v1/events?operation=<id>` (STREAM=operation: the stream of one operation,
// `GET /v1/operations/<id>/events`, which starts with a snapshot). Its peer in the same run
// is `ws-broadcast.ts`. Env: as fanout.ts, STREAM, MESSAGE_BYTES. Prints one JSON line.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runFanout, type ServerInfo } from './fanout.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const perOperation = process.env.STREAM === 'operation';

await runFanout<ServerInfo & { operation: string }>({
  bench: 'stream-fanout',
  serverFile: path.join(here, 'stream-fanout-server.ts'),
  mode: 'sse',
  targetUrl: ({ port, operation }) =>
    perOperation
      ? `http://127.0.0.1:${port}/v1/operations/${operation}/events`
      : `http://127.0.0.1:${port}/v1/events?operation=${operation}`,
  describe: () => ({
    channel: 'sse',
    stream: perOperation ? '/v1/operations/{id}/events' : '/v1/events?operation={id}',
    store: 'sqlite-full',
  }),
});
