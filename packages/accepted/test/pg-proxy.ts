// A TCP proxy between a store and PostgreSQL, for faults a test must place exactly: it can
// cut every connection, refuse new ones for a while, or let a COMMIT through and lose its
// answer (the server commits; the client never learns it).
import net from 'node:net';

export interface PgProxy {
  /** A URL like `target`, through the proxy. */
  url: string;
  /** The next COMMIT reaches the server; its answer is dropped and the connection cut. */
  loseNextCommitAnswer(): void;
  /** Resolves once a COMMIT answer was lost (after `loseNextCommitAnswer`). */
  readonly commitLost: Promise<void>;
  /** How many COMMIT answers were lost so far (each after a `loseNextCommitAnswer`). */
  readonly commitsLost: number;
  /**
   * True from `loseNextCommitAnswer` until the COMMIT it picked was answered (and the answer
   * lost), or its connection died first: then nothing was lost (`commitsLost` did not grow),
   * and the next COMMIT needs `loseNextCommitAnswer` again.
   */
  readonly armed: boolean;
  close(): Promise<void>;
}

const COMMIT = Buffer.from('COMMIT\0');

export async function startPgProxy(target: string): Promise<PgProxy> {
  const to = new URL(target);
  const sockets = new Set<net.Socket>();
  let arm = false;
  /** Connections whose COMMIT was picked and not answered yet. */
  let picked = 0;
  let lostCount = 0;
  let resolveLost: () => void = () => undefined;
  const commitLost = new Promise<void>((resolve) => (resolveLost = resolve));
  const lost = () => {
    lostCount++;
    resolveLost();
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(to.port || 5432), to.hostname);
    sockets.add(client);
    sockets.add(upstream);
    let dropping = false;
    const cut = () => {
      if (dropping) {
        dropping = false;
        picked--;
      }
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      if (arm && chunk.includes(COMMIT)) {
        arm = false;
        dropping = true;
        picked++;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (dropping) {
        // The server has answered the COMMIT: it committed. The client never hears it.
        cut();
        lost();
        return;
      }
      client.write(chunk);
    });
    for (const socket of [client, upstream]) {
      socket.on('error', cut);
      socket.on('close', () => {
        sockets.delete(socket);
        cut();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as net.AddressInfo;
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String(address.port);
  return {
    url: url.toString(),
    loseNextCommitAnswer: () => {
      arm = true;
    },
    commitLost,
    get commitsLost() {
      return lostCount;
    },
    get armed() {
      return arm || picked > 0;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
