// Several nodes on one PostgreSQL database: three `accepted serve` processes share a schema,
// operations are submitted across them, one is killed mid-way. Every acknowledged operation
// must end, none may succeed twice, and an SSE subscriber on a surviving node must see the
// whole log in order.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createParser } from 'eventsource-parser';
import { PostgresStore } from '../src/store/postgres/postgres-store.ts';
import { startServer, tempDir, type Server } from './helpers.ts';
import { PG_URL, dropSchema, newSchema, pgUnavailable } from './pg-helpers.ts';

const unavailable = await pgUnavailable();
const TOTAL = 2_000;
const KILL_AFTER = 700;
const IN_FLIGHT = 48;

interface Seen {
  seq: number;
  type: string;
  operationId: string;
}

/** Follows `GET /v1/events` (SSE) from the start of the log; collects every event. */
function followEvents(url: string, signal: AbortSignal): { seen: Seen[]; done: Promise<void> } {
  const seen: Seen[] = [];
  const done = (async () => {
    const response = await fetch(`${url}/v1/events?after=0`, {
      headers: { accept: 'text/event-stream' },
      signal,
    });
    assert.equal(response.status, 200);
    const parser = createParser({
      onEvent(message) {
        if (!message.id) return;
        const event = JSON.parse(message.data) as {
          seq: number;
          type: string;
          operationId: string;
        };
        seen.push({ seq: Number(message.id), type: event.type, operationId: event.operationId });
      },
    });
    const decoder = new TextDecoder();
    try {
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        parser.feed(decoder.decode(chunk, { stream: true }));
      }
    } catch (error) {
      if (!signal.aborted) throw error;
    }
  })();
  return { seen, done };
}

describe('several nodes on one PostgreSQL database', { skip: unavailable ?? false }, () => {
  it('three servers, 2,000 operations, one SIGKILLed mid-way: nothing lost, nothing doubled', async () => {
    const schema = newSchema();
    const args = ['--store', PG_URL, '--schema', schema, '--lease', '2s', '--concurrency', '32'];
    const servers: Server[] = [];
    const store = new PostgresStore({ url: PG_URL, schema });
    const stop = new AbortController();
    try {
      // The first one creates the schema; the others find it (or wait on the migration lock).
      for (let i = 0; i < 3; i++) servers.push(await startServer(tempDir(), args));
      await store.open();
      const [victim, a, b] = servers as [Server, Server, Server];
      const sse = followEvents(b.url, stop.signal);

      const acknowledged: string[] = [];
      let killed = false;
      let next = 0;
      const submitter = async (lane: number) => {
        while (next < TOTAL) {
          const i = next++;
          // Spread over the three; once the victim is dead, over the two others.
          const live = killed ? [a, b] : servers;
          const target = live[(i + lane) % live.length] as Server;
          let response: Response;
          try {
            response = await fetch(`${target.url}/v1/operations`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              // Long enough that every node's slots are busy when the victim dies (submits
              // outrun the 3 x 32 slots), so it surely dies holding leases.
              body: JSON.stringify({ type: 'demo.sleep', input: { ms: 300 } }),
            });
          } catch {
            continue; // the victim died under this request: not acknowledged
          }
          if (response.status !== 202) continue;
          const body = (await response.json()) as { id: string };
          acknowledged.push(body.id);
          if (!killed && acknowledged.length >= KILL_AFTER) {
            killed = true;
            victim.child.kill('SIGKILL');
          }
        }
      };
      await Promise.all(Array.from({ length: IN_FLIGHT }, (_, lane) => submitter(lane)));
      assert.ok(killed, 'the victim was killed');
      assert.ok(
        acknowledged.length > TOTAL - IN_FLIGHT - 10,
        `${acknowledged.length} acknowledged`,
      );
      await victim.exited;

      // Every acknowledged operation ends: the survivors recover the victim's leases.
      const deadline = Date.now() + 60_000;
      for (;;) {
        const pending = await store.list({
          tenant: 'default',
          status: ['queued', 'running'],
          limit: 1,
        });
        if (pending.items.length === 0) break;
        assert.ok(Date.now() < deadline, 'operations still not finished after 60 s');
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      for (const id of acknowledged) {
        const op = await store.get(id);
        assert.equal(op?.status, 'succeeded', `operation ${id} is ${op?.status}`);
      }

      // The log: exactly one operation.succeeded per operation.
      const log: Seen[] = [];
      for (let after = 0; ;) {
        const page = await store.readEvents({ after, limit: 1000 });
        if (page.length === 0) break;
        for (const e of page) log.push({ seq: e.seq, type: e.type, operationId: e.operationId });
        after = page[page.length - 1]!.seq;
      }
      const succeeded = new Map<string, number>();
      for (const e of log) {
        if (e.type === 'operation.succeeded') {
          succeeded.set(e.operationId, (succeeded.get(e.operationId) ?? 0) + 1);
        }
      }
      for (const id of acknowledged) assert.equal(succeeded.get(id), 1, `${id} succeeded once`);
      for (const [id, count] of succeeded) assert.equal(count, 1, `${id} succeeded ${count} times`);
      const recovered = log.filter((e) => e.type === 'operation.retrying').length;
      assert.ok(recovered > 0, 'some operations of the dead node were recovered');

      // The SSE subscriber on a survivor saw the whole log, in order, no gap, no repeat.
      const lastSeq = log[log.length - 1]!.seq;
      const sseDeadline = Date.now() + 20_000;
      while ((sse.seen[sse.seen.length - 1]?.seq ?? 0) < lastSeq) {
        assert.ok(Date.now() < sseDeadline, 'the SSE subscriber did not catch up');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.deepEqual(
        sse.seen.map((e) => e.seq),
        log.map((e) => e.seq),
      );
      assert.deepEqual(sse.seen, log);
    } finally {
      stop.abort();
      await store.close();
      for (const server of servers) {
        if (server.child.exitCode === null && server.child.signalCode === null) {
          server.child.kill('SIGTERM');
          await server.exited;
        }
      }
      await dropSchema(schema);
    }
  });
});
