// A diagnostic floor for `stream-fanout.ts`, not part of `npm run bench`: the same
// SUBSCRIBERS SSE subscribers and E events, measured the same way (`fanout.ts`), on a bare
// node:http server that writes each frame to every open response (`sse-broadcast-server.ts`).
// Env: as fanout.ts, and MESSAGE_BYTES (default 400). Prints one JSON line.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runFanout, type ServerInfo } from './fanout.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

await runFanout<ServerInfo>({
  bench: 'sse-broadcast',
  serverFile: path.join(here, 'sse-broadcast-server.ts'),
  mode: 'sse',
  targetUrl: (info) => `http://127.0.0.1:${info.port}/v1/events`,
  describe: () => ({ channel: 'sse', server: 'bare node:http' }),
});
