// End-to-end throughput of no-op operations through the HTTP API on the durable SQLite store.
// The server (Accepted + HTTP, worker concurrency C) runs in a child process; autocannon here
// POSTs N submits over C keep-alive connections. The clock starts when autocannon starts and
// stops when the server has read the N-th operation.succeeded event from the log.
// Env: N (default 20000), C (default 64). Prints one JSON line.
import autocannon from 'autocannon';
import { STORE_LABEL, launchServer, submitLoad } from './http-server.ts';

const N = Number(process.env.N ?? 20_000);
const C = Number(process.env.C ?? 64);

function timeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function toError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

const server = await launchServer({ COUNT: String(N), C: String(C) });
try {
  // The promise autocannon returns settles at its next 1 s sampling tick, so the end of the
  // submits is taken from its response events instead.
  let responses = 0;
  let tSubmitted = 0;
  const t0 = Date.now();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      { ...submitLoad(server.port, C), amount: N },
      (error: unknown, result) => (error ? reject(toError(error)) : resolve(result)),
    );
    instance.on('response', () => {
      if (++responses === N) tSubmitted = Date.now();
    });
  });
  if (result.errors !== 0 || result.non2xx !== 0 || result['2xx'] !== N || tSubmitted === 0) {
    throw new Error(
      `submits failed: ${result['2xx']}/${N} 2xx, non2xx ${result.non2xx}, errors ${result.errors}, timeouts ${result.timeouts}`,
    );
  }
  const done = await timeout(server.done, 120_000, `waiting for ${N} successes`);
  console.log(
    JSON.stringify({
      system: 'accepted-http-e2e',
      store: STORE_LABEL,
      N,
      connections: C,
      e2e_per_s: Math.round(N / ((done.time - t0) / 1000)),
      submit_per_s: Math.round(N / ((tSubmitted - t0) / 1000)),
      submit_p50_ms: result.latency.p50,
      submit_p99_ms: result.latency.p99,
      drain_ms: Math.max(0, done.time - tSubmitted),
      non2xx: result.non2xx,
      errors: result.errors,
      stats: done.stats,
    }),
  );
} finally {
  await server.stop();
}
