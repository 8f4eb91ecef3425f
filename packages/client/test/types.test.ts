// Types flow from the server's operation definitions to the client: `npm run typecheck`
// compiles this file, and each `@ts-expect-error` fails the typecheck if its line compiles.
/* eslint-disable @typescript-eslint/no-unused-vars, @typescript-eslint/no-unnecessary-type-parameters -- values are declared only for the compiler to check their types */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WebSocket as WsWebSocket } from 'ws';
import {
  createClient,
  type Operation,
  type OperationHandle,
  type WebSocketConstructor,
} from '@accepted/client';
import { defineOperation, type OperationTypes } from '../../accepted/src/engine/definition.ts';

const operations = [
  // `type` inferred as a literal from the definition.
  defineOperation({
    type: 'report.generate',
    handler: (input: { month: string; pages?: number }) =>
      Promise.resolve({ url: `https://example.com/${input.month}.pdf` }),
  }),
  // Explicit input and result: the literal `type` is the third type argument.
  defineOperation<{ ms: number }, { sleptMs: number }, 'demo.sleep'>({
    type: 'demo.sleep',
    handler: ({ ms }) => ({ sleptMs: ms }),
  }),
  // A `type` that is a plain string cannot be named in the map: it is left out.
  defineOperation<{ a: 1 }, { b: 2 }>({ type: 'anything', handler: () => ({ b: 2 }) }),
];
type Operations = OperationTypes<typeof operations>;

type Equal<A, B> =
  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const expectType = <T extends true>(value: T) => value;

/** Never called: the checks are the compiler's. */
async function compileTimeChecks(): Promise<void> {
  const client = createClient<Operations>({ baseUrl: 'http://127.0.0.1:8080' });
  expectType<Equal<keyof Operations, 'report.generate' | 'demo.sleep'>>(true);
  expectType<Equal<Operations['report.generate']['input'], { month: string; pages?: number }>>(
    true,
  );

  const report = await client.run('report.generate', { month: '2026-01' });
  expectType<Equal<typeof report, { url: string }>>(true);
  const handle = await client.submit('demo.sleep', { ms: 5 });
  expectType<Equal<typeof handle, OperationHandle<{ sleptMs: number }>>>(true);
  const final = await handle.wait({ via: 'sse' });
  expectType<Equal<typeof final, Operation<{ sleptMs: number }>>>(true);
  const results = await client.map([1, 2], (ms) => client.run('demo.sleep', { ms }));
  expectType<Equal<typeof results, PromiseSettledResult<{ sleptMs: number }>[]>>(true);

  // @ts-expect-error an unknown operation type
  await client.run('report.nope', { month: '2026-01' });
  // @ts-expect-error a missing input field
  await client.run('report.generate', { pages: 2 });
  // @ts-expect-error an input field of the wrong type
  await client.submit('demo.sleep', { ms: '5' });
  // @ts-expect-error the result is not what the handler returns
  const wrong: { sleptMs: string } = await client.run('demo.sleep', { ms: 1 });
  // @ts-expect-error not a channel
  await handle.wait({ via: 'carrier-pigeon' });

  // Without a map, any type and any input, and the results are unknown.
  const untyped = createClient({ baseUrl: 'http://127.0.0.1:8080' });
  const anything = await untyped.run('whatever.type', { free: 'form' });
  expectType<Equal<typeof anything, unknown>>(true);
}

/** Never called: every WebSocket class fits the `WebSocket` option, with no cast. */
function webSocketClasses(): void {
  // The `ws` package's class (Node.js 20), as an option and as the exported type.
  createClient({ baseUrl: 'http://127.0.0.1:8080', WebSocket: WsWebSocket });
  const fromWs: WebSocketConstructor = WsWebSocket;
  // The global one of Node.js 22+ (and browsers), as @types/node declares it.
  createClient({ baseUrl: 'http://127.0.0.1:8080', WebSocket: globalThis.WebSocket });
  const fromGlobal: WebSocketConstructor = globalThis.WebSocket;
  // @ts-expect-error not a WebSocket class
  createClient({ baseUrl: 'http://127.0.0.1:8080', WebSocket: Map });
  // @ts-expect-error a class without the handlers the client sets
  const handlerless: WebSocketConstructor = class {
    readonly readyState = 1;
    send(_data: string) {}
    close() {}
  };
}

describe('types', () => {
  it('are checked by the typecheck (this file compiles)', () => {
    assert.equal(typeof compileTimeChecks, 'function');
    assert.equal(typeof webSocketClasses, 'function');
  });
});
