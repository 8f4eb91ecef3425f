// The peer of `stream-fanout.ts`: the same SUBSCRIBERS idle connections and E events, measured
// the same way (`fanout.ts`), on a plain `ws` WebSocketServer that broadcasts one ~400-byte
// JSON message to every client (`ws-broadcast-server.ts`). No log, no store, no filter: the
// floor of what pushing one message to every connection of one Node process costs.
// Env: as fanout.ts, and MESSAGE_BYTES (default 400). Prints one JSON line.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runFanout, type ServerInfo } from './fanout.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

await runFanout<ServerInfo>({
  bench: 'ws-broadcast',
  serverFile: path.join(here, 'ws-broadcast-server.ts'),
  mode: 'ws',
  targetUrl: (info) => `ws://127.0.0.1:${info.port}/`,
  describe: () => ({ channel: 'ws', server: 'ws WebSocketServer, perMessageDeflate off' }),
});
