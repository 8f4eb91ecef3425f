// #1: a PostgreSQL restart must not kill the nodes. Two `accepted serve` processes on a private
// PostgreSQL server take submits while the server restarts (twice) and then stays away for a
// while: they answer 503 with Retry-After while it is gone, carry on by themselves when it is
// back, and every acknowledged operation ends exactly once.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventually, startServer, tempDir, type Server } from './helpers.ts';
import { pgClusterUnavailable, startPgCluster } from './pg-cluster.ts';
import { rawSession } from './pg-helpers.ts';

const unavailable = pgClusterUnavailable();
const TOTAL = 2_000;
const IN_FLIGHT = 32;

interface Tally {
  acknowledged: string[];
  unavailable: number;
  /** 503 answers that lacked Retry-After (must stay 0). */
  withoutRetryAfter: number;
  /** Any other answer: status and body (must stay empty). */
  other: string[];
}

describe('#1 a PostgreSQL restart does not kill the nodes', { skip: unavailable ?? false }, () => {
  it('two nodes ride out two restarts and an outage: 503 + Retry-After meanwhile, every acknowledged operation ends once', async () => {
    const cluster = await startPgCluster();
    const schema = 'accepted';
    const args = ['--store', cluster.url, '--schema', schema, '--lease', '2s'];
    const servers: Server[] = [];
    for (let i = 0; i < 2; i++) servers.push(await startServer(tempDir(), args));
    const tally: Tally = { acknowledged: [], unavailable: 0, withoutRetryAfter: 0, other: [] };
    const deaths: string[] = [];
    for (const [i, server] of servers.entries()) {
      void server.exited.then((code) => deaths.push(`node ${i} exited with ${code}`));
    }
    // While the server is away, each node says so in its log (a warning, not a crash).
    const warned = servers.map(() => false);
    for (const [i, server] of servers.entries()) {
      void server.logged('PostgreSQL: LISTEN could not reconnect; retrying').then(() => {
        warned[i] = true;
      });
    }

    let next = 0;
    const submitter = async (lane: number) => {
      while (next < TOTAL && deaths.length === 0) {
        const i = next++;
        const target = servers[(i + lane) % servers.length] as Server;
        let response: Response;
        try {
          response = await fetch(`${target.url}/v1/operations`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ type: 'demo.sleep', input: { ms: 20 } }),
          });
        } catch (error) {
          deaths.push(`node ${(i + lane) % servers.length} did not answer: ${String(error)}`);
          return;
        }
        const text = await response.text();
        if (response.status === 202) {
          tally.acknowledged.push((JSON.parse(text) as { id: string }).id);
        } else if (response.status === 503) {
          tally.unavailable++;
          if (!response.headers.get('retry-after')) tally.withoutRetryAfter++;
          next--; // not taken: submit it again
          await new Promise((resolve) => setTimeout(resolve, 50));
        } else {
          tally.other.push(`${response.status} ${text}`);
        }
      }
    };
    const load = Promise.all(Array.from({ length: IN_FLIGHT }, (_, lane) => submitter(lane)));

    const ready = async (server: Server) => (await fetch(`${server.url}/readyz`)).status;
    try {
      await eventually(() => tally.acknowledged.length >= 400 || deaths.length > 0, 60_000);
      await cluster.restart('fast');
      await eventually(() => tally.acknowledged.length >= 900 || deaths.length > 0, 60_000);
      await cluster.restart('immediate');
      await eventually(() => tally.acknowledged.length >= 1_400 || deaths.length > 0, 60_000);
      // Away for a while: both nodes say they are not ready and refuse submits with 503.
      await cluster.stop('fast');
      const refusedBefore = tally.unavailable;
      await eventually(async () => {
        const states = await Promise.all(servers.map(ready));
        return (
          (states.every((s) => s === 503) &&
            tally.unavailable > refusedBefore &&
            warned.every(Boolean)) ||
          deaths.length > 0
        );
      }, 60_000);
      await cluster.start();
      await eventually(
        async () => (await Promise.all(servers.map(ready))).every((s) => s === 200),
        60_000,
      );
      await load;

      assert.deepEqual(deaths, [], 'every node survives');
      assert.deepEqual(warned, [true, true], 'each node logged that PostgreSQL was away');
      assert.deepEqual(tally.other, [], 'only 202 and 503 answers');
      assert.equal(tally.withoutRetryAfter, 0, 'every 503 carries Retry-After');
      assert.ok(tally.unavailable > 0, 'submits were refused while the store was away');
      assert.equal(tally.acknowledged.length, TOTAL);

      // Every acknowledged operation ends, with exactly one terminal event.
      const sql = await rawSession(cluster.url);
      try {
        const terminal = async () =>
          (
            await sql.query<{ operation_id: string; n: number }>(
              `SELECT operation_id, count(*)::int AS n FROM "${schema}".events
               WHERE type IN ('operation.succeeded', 'operation.failed', 'operation.canceled')
               GROUP BY operation_id`,
            )
          ).rows;
        await eventually(async () => (await terminal()).length >= TOTAL, 120_000);
        const ended = new Map((await terminal()).map((r) => [r.operation_id, r.n]));
        for (const id of tally.acknowledged) assert.equal(ended.get(id), 1, `${id} ends once`);
        const { rows } = await sql.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM "${schema}".operations WHERE status <> 'succeeded'`,
        );
        assert.equal(rows[0]?.n, 0, 'every operation succeeded');
      } finally {
        await sql.end();
      }
    } finally {
      for (const server of servers) server.child.kill('SIGKILL');
    }
  });
});
