import { MAX_RETRY_DELAY_MS } from '../domain/errors.ts';
import type { Backoff } from './definition.ts';

export const DEFAULT_BACKOFF = { baseMs: 1000, factor: 2, maxMs: 3_600_000, jitter: 0.5 };

/**
 * A retry delay as the engine stores it, from a backoff or a `RetryAfterError` (of this copy of
 * the package or another): a whole number of ms from 0 to MAX_RETRY_DELAY_MS. NaN, 0 and
 * negative mean no delay; more than 30 days (Infinity included) is 30 days.
 */
export function boundedDelay(ms: number): number {
  if (Number.isNaN(ms) || ms <= 0) return 0;
  return Math.round(Math.min(ms, MAX_RETRY_DELAY_MS));
}

/**
 * Delay in ms before the attempt after `attempt` (1-based) failed with `error`. Whatever the
 * policy returns (a function's NaN, Infinity or 1e16, an exponent that overflows) comes out
 * between 0 and MAX_RETRY_DELAY_MS (30 days).
 */
export function backoffDelay(policy: Backoff | undefined, attempt: number, error: unknown): number {
  if (typeof policy === 'function') return boundedDelay(policy(attempt, error));
  const { baseMs, factor, maxMs, jitter } = { ...DEFAULT_BACKOFF, ...policy };
  const full = boundedDelay(
    Math.min(boundedDelay(maxMs), baseMs * factor ** Math.max(0, attempt - 1)),
  );
  const spread = Number.isFinite(jitter) ? Math.min(1, Math.max(0, jitter)) : 0;
  return boundedDelay(full * (1 - spread) + Math.random() * full * spread);
}
