// An operation type whose handlers wait until the test opens their gate (or their signal
// aborts): how a test holds an operation running for as long as it needs.
import { defineOperation } from '../src/engine/definition.ts';
import { eventually } from './helpers.ts';

/** The open gates of the running handlers, by the `name` of their input. */
export const gates = new Map<string, () => void>();

export const gateOperation = defineOperation<{ name: string }, { name: string }>({
  type: 'test.gate',
  handler: async ({ name }, ctx) => {
    await new Promise<void>((resolve, reject) => {
      gates.set(name, resolve);
      ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), {
        once: true,
      });
    });
    return { name };
  },
});

/** Waits for the handler of `name` to start, then lets it finish. */
export async function open(name: string): Promise<void> {
  await eventually(() => gates.has(name));
  gates.get(name)?.();
  gates.delete(name);
}
