// Shared by the webhook benchmarks (`webhook-throughput.ts`, `webhook-floor.ts`): the receiver
// child process (`webhook-receiver.ts`) and what it reports.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, type Child } from './fanout-ipc.ts';

/** What the receiver counted since its last `arm`. */
export interface Counters {
  received: number;
  /** Sampled requests (every `verifyEvery`-th, and the first) whose signature verified. */
  verified: number;
  /** Sampled requests whose signature did not verify; `errors` holds the first few. */
  verifyFailures: number;
  errors: string[];
  /** Requests whose webhook-id had been seen before (a delivery sent twice). */
  duplicates: number;
  /** Body bytes received, summed. */
  bytes: number;
  /** Wall-clock ms (performance.timeOrigin + now) of the first request's end. */
  first: number;
  /** Wall-clock ms of the end of the expect-th request (0 until then). */
  last: number;
}

export interface Receiver {
  child: Child<{ port: number }>;
  url: string;
  /** Resets the counters: the next `expect` requests are counted, signed with `secret`. */
  arm(secret: string, expect: number, verifyEvery?: number): Promise<void>;
  /** Waits until `expect` requests have ended; throws after `timeoutMs` with the counts. */
  wait(timeoutMs: number): Promise<Counters>;
}

const here = path.dirname(fileURLToPath(import.meta.url));

/** Starts the receiver in a child process of its own. */
export async function launchReceiver(): Promise<Receiver> {
  const child = await launch<{ port: number }>(path.join(here, 'webhook-receiver.ts'), {});
  return {
    child,
    url: `http://127.0.0.1:${child.info.port}/hooks`,
    arm: async (secret, expect, verifyEvery = 100) => {
      await child.request('arm', { secret, expect, verifyEvery });
    },
    wait: async (timeoutMs) => {
      const counters = await child.request<Counters & { reached: boolean }>(
        'wait',
        { timeoutMs },
        timeoutMs + 10_000,
      );
      if (!counters.reached) {
        throw new Error(
          `receiver: ${counters.received} requests after ${timeoutMs} ms (${JSON.stringify(counters)})`,
        );
      }
      return counters;
    },
  };
}
