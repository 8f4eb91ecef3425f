// The engine's retry delays (engine/backoff.ts): exponential with jitter, and bounded
// whatever a policy returns.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_RETRY_DELAY_MS } from '../src/domain/errors.ts';
import { backoffDelay } from '../src/engine/backoff.ts';

describe('backoffDelay', () => {
  it("bounds a policy function's answer to whole ms from 0 to 30 days", () => {
    const cases: [number, number][] = [
      [-5, 0],
      [-Infinity, 0],
      [Number.NaN, 0],
      [0, 0],
      [12.4, 12],
      [12.6, 13],
      [Infinity, MAX_RETRY_DELAY_MS],
      [1e16, MAX_RETRY_DELAY_MS],
    ];
    for (const [given, expected] of cases) {
      assert.equal(
        backoffDelay(() => given, 1, null),
        expected,
        `a policy returning ${given}`,
      );
    }
  });

  it('doubles from baseMs per attempt up to maxMs, without jitter', () => {
    const policy = { baseMs: 100, factor: 2, maxMs: 1000, jitter: 0 };
    const delays = [1, 2, 3, 4, 5, 6].map((attempt) => backoffDelay(policy, attempt, null));
    assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
    // An exponent that overflows, a negative or absurd maxMs: still in range.
    assert.equal(backoffDelay({ baseMs: 1000, factor: 10, jitter: 0 }, 400, null), 3_600_000);
    assert.equal(backoffDelay({ baseMs: 1000, maxMs: -1, jitter: 0 }, 1, null), 0);
    assert.equal(
      backoffDelay({ baseMs: 1000, maxMs: 1e20, jitter: 0 }, 60, null),
      MAX_RETRY_DELAY_MS,
    );
  });

  it('takes off up to `jitter` of the delay at random, spread over the range', () => {
    const samples = Array.from({ length: 400 }, () =>
      backoffDelay({ baseMs: 1000, factor: 2, jitter: 0.5 }, 1, null),
    );
    const min = Math.min(...samples);
    const max = Math.max(...samples);
    assert.ok(min >= 500 && max <= 1000, `from ${min} to ${max}`);
    // Spread over the range, not stuck at one end (each bound fails by chance with odds of
    // 0.8^400).
    assert.ok(min < 600 && max > 900, `from ${min} to ${max}`);
    // Jitter outside 0..1 is clamped: 0 (none) and 1 (all of it may go).
    assert.equal(backoffDelay({ baseMs: 1000, jitter: -3 }, 1, null), 1000);
    const full = Array.from({ length: 400 }, () =>
      backoffDelay({ baseMs: 1000, jitter: 7 }, 1, null),
    );
    assert.ok(Math.min(...full) < 100 && Math.max(...full) <= 1000);
    assert.equal(backoffDelay({ baseMs: 1000, jitter: Number.NaN }, 1, null), 1000);
  });
});
