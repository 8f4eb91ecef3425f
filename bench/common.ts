// Pieces the latency benchmarks share: a `gate` operation whose handler waits until the
// benchmark opens it, a deadline for one step, and percentiles.
import { defineOperation } from '../packages/accepted/src/index.ts';

interface Gate {
  /** Resolves when the operation's handler has started. */
  started: Promise<void>;
  /** Lets the handler finish (set once it has started). */
  open?: () => void;
  ready: () => void;
}

const gates = new Map<string, Gate>();

/** The gate of one operation (made on first use, by the handler or by the benchmark). */
export function gate(id: string): Gate {
  let entry = gates.get(id);
  if (!entry) {
    let ready!: () => void;
    const started = new Promise<void>((resolve) => (ready = resolve));
    entry = { started, ready };
    gates.set(id, entry);
  }
  return entry;
}

/** Forgets a gate once its sample is measured. */
export function forgetGate(id: string): void {
  gates.delete(id);
}

/** Lets every handler still waiting finish (at the end of a benchmark). */
export function openAllGates(): void {
  for (const entry of gates.values()) entry.open?.();
}

/** `gate`: its handler starts, reports it, and ends (with null) when the benchmark opens it. */
export const gateOperation = defineOperation({
  type: 'gate',
  handler: (_input, ctx) =>
    new Promise<null>((resolve) => {
      const entry = gate(ctx.operationId);
      entry.open = () => resolve(null);
      entry.ready();
    }),
});

/** `promise`, or a rejection naming `what` if it takes longer than `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The q-quantile of ascending values, to `digits` decimals (NaN when empty). */
export function percentile(sorted: readonly number[], q: number, digits = 3): number {
  const value = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] ?? NaN;
  return Number(value.toFixed(digits));
}
