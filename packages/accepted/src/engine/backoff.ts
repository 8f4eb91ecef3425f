import type { Backoff } from './definition.ts';

export const DEFAULT_BACKOFF = { baseMs: 1000, factor: 2, maxMs: 3_600_000, jitter: 0.5 };

/** Delay in ms before the attempt after `attempt` (1-based) failed with `error`. */
export function backoffDelay(policy: Backoff | undefined, attempt: number, error: unknown): number {
  if (typeof policy === 'function') {
    const ms = policy(attempt, error);
    return Number.isFinite(ms) && ms > 0 ? ms : 0;
  }
  const { baseMs, factor, maxMs, jitter } = { ...DEFAULT_BACKOFF, ...policy };
  const full = Math.min(maxMs, baseMs * factor ** Math.max(0, attempt - 1));
  const spread = Math.min(1, Math.max(0, jitter));
  return Math.round(full * (1 - spread) + Math.random() * full * spread);
}
