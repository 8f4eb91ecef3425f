import { OPERATION_ERROR_CODE_PATTERN, PermanentError } from '../domain/errors.ts';
import { defineOperation, type HandlerContext } from './definition.ts';

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Operation types for trying the server without writing code (`accepted serve --demo`).
 */
export const demoOperations = [
  defineOperation<unknown, unknown>({
    type: 'demo.echo',
    description: 'Succeeds at once; its result is its input.',
    handler: (input) => input,
  }),
  defineOperation<{ ms: number }, { sleptMs: number }>({
    type: 'demo.sleep',
    description: 'Sleeps for `ms` milliseconds, honouring cancellation.',
    inputSchema: {
      type: 'object',
      required: ['ms'],
      additionalProperties: false,
      properties: { ms: { type: 'integer', minimum: 0, maximum: 86_400_000 } },
    },
    handler: async ({ ms }, ctx: HandlerContext) => {
      await sleep(ms, ctx.signal);
      return { sleptMs: ms };
    },
  }),
  defineOperation<{ message: string; code?: string; permanent?: boolean }, never>({
    type: 'demo.fail',
    description: 'Fails with exactly this error code and message; retried unless `permanent`.',
    inputSchema: {
      type: 'object',
      required: ['message'],
      additionalProperties: false,
      properties: {
        message: { type: 'string', maxLength: 1000 },
        code: { type: 'string', pattern: OPERATION_ERROR_CODE_PATTERN },
        permanent: { type: 'boolean' },
      },
    },
    backoff: { baseMs: 100, maxMs: 2000 },
    handler: ({ message, code, permanent }) => {
      if (permanent) throw new PermanentError(message, { code: code ?? 'DEMO_FAILURE' });
      throw Object.assign(new Error(message), { code: code ?? 'DEMO_FAILURE' });
    },
  }),
  defineOperation<{ steps: number; ms: number }, { steps: number }>({
    type: 'demo.progress',
    description: 'Reports progress after each of `steps` steps of `ms` milliseconds.',
    inputSchema: {
      type: 'object',
      required: ['steps', 'ms'],
      additionalProperties: false,
      properties: {
        steps: { type: 'integer', minimum: 1, maximum: 10_000 },
        ms: { type: 'integer', minimum: 0, maximum: 3_600_000 },
      },
    },
    handler: async ({ steps, ms }, ctx) => {
      for (let step = 1; step <= steps; step++) {
        await sleep(ms, ctx.signal);
        await ctx.progress({ fraction: step / steps, message: `step ${step} of ${steps}` });
      }
      return { steps };
    },
  }),
  defineOperation<{ failTimes: number }, { attempts: number }>({
    type: 'demo.flaky',
    description: 'Fails its first `failTimes` attempts, then succeeds.',
    inputSchema: {
      type: 'object',
      required: ['failTimes'],
      additionalProperties: false,
      properties: { failTimes: { type: 'integer', minimum: 0, maximum: 99 } },
    },
    maxAttempts: 10,
    backoff: { baseMs: 50, maxMs: 1000 },
    handler: ({ failTimes }, ctx) => {
      if (ctx.attempt <= failTimes) {
        throw Object.assign(new Error(`attempt ${ctx.attempt} fails on purpose`), {
          code: 'FLAKY',
        });
      }
      return { attempts: ctx.attempt };
    },
  }),
];
