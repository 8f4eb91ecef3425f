// The end-to-end workload every store is measured with, the same as the peers': N no-op
// operations submitted one by one with C in flight; the clock stops when the last
// operation.succeeded has been read from the log (the instance's worker concurrency is C).
import type { Accepted } from '../packages/accepted/src/index.ts';

export interface E2eFigures {
  N: number;
  submit_per_s: number;
  e2e_per_s: number;
  /** Submit to operation.succeeded (commit times), in ms. */
  p50_ms: number | undefined;
  p99_ms: number | undefined;
}

/** Runs the workload on a started instance with a `noop` operation type. */
export async function e2eLoad(accepted: Accepted, N: number, C: number): Promise<E2eFigures> {
  const created = new Map<string, number>();
  const latencies: number[] = [];
  let done = 0;
  const controller = new AbortController();
  const finished = (async () => {
    for await (const event of accepted.events({
      types: ['operation.succeeded'],
      signal: controller.signal,
      after: await accepted.store.lastSeq(),
    })) {
      const t = created.get(event.operationId);
      if (t !== undefined) latencies.push(event.time - t);
      if (++done === N) return;
    }
  })();

  const t0 = performance.now();
  let next = 0;
  async function submitter() {
    while (next < N) {
      const i = next++;
      const op = await accepted.submit('noop', { i });
      created.set(op.id, op.createdAt);
    }
  }
  await Promise.all(Array.from({ length: C }, submitter));
  const tSubmit = performance.now();
  await finished;
  const t1 = performance.now();
  controller.abort();
  latencies.sort((a, b) => a - b);
  return {
    N,
    submit_per_s: Math.round(N / ((tSubmit - t0) / 1000)),
    e2e_per_s: Math.round(N / ((t1 - t0) / 1000)),
    p50_ms: latencies[N >> 1],
    p99_ms: latencies[Math.floor(N * 0.99)],
  };
}
