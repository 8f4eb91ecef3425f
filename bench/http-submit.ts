// HTTP submit rate, the same load as the peer ceiling (`run.sh http-limit`: autocannon, C
// connections, D seconds, the same body), against the server in a child process. Run twice:
// with workers on (concurrency C, the normal single-node deployment) and as an API-only node
// (`worker: false`: the store only accepts). Env: C (default 64), D (seconds, default 8).
// Prints one JSON line.
import autocannon from 'autocannon';
import { STORE_LABEL, launchServer, submitLoad } from './http-server.ts';

const C = Number(process.env.C ?? 64);
const D = Number(process.env.D ?? 8);

interface Figure {
  req_per_s: number;
  p50_ms: number;
  p99_ms: number;
  requests: number;
  errors: number;
  non2xx: number;
}

async function measure(worker: boolean): Promise<Figure> {
  const server = await launchServer({ C: String(C), WORKER: worker ? '1' : '0' });
  try {
    const result = await autocannon({ ...submitLoad(server.port, C), duration: D });
    const figure = {
      req_per_s: Math.round(result.requests.average),
      p50_ms: result.latency.p50,
      p99_ms: result.latency.p99,
      requests: result.requests.total,
      errors: result.errors,
      non2xx: result.non2xx,
    };
    if (figure.errors !== 0 || figure.non2xx !== 0) {
      throw new Error(
        `submits failed (worker ${worker}): non2xx ${figure.non2xx}, errors ${figure.errors}, timeouts ${result.timeouts}`,
      );
    }
    return figure;
  } finally {
    await server.stop();
  }
}

const workers = await measure(true);
const apiOnly = await measure(false);
console.log(
  JSON.stringify({
    system: 'accepted-http-submit',
    store: STORE_LABEL,
    connections: C,
    duration_s: D,
    req_per_s: workers.req_per_s,
    p99_ms: workers.p99_ms,
    api_only_req_per_s: apiOnly.req_per_s,
    api_only_p99_ms: apiOnly.p99_ms,
    workers,
    api_only: apiOnly,
  }),
);
