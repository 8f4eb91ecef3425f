// Chaos on PostgreSQL: three `accepted serve` nodes on a private PostgreSQL server, under a
// mixed load and with an SSE client of the tenant's log on each node, while every backend of
// the nodes is killed at once (twice), the server crashes and restarts (twice), restarts
// cleanly (once) and then stays away for a while. The nodes refuse with 503 + Retry-After
// meanwhile, never hang, never exit, say on /readyz that they are not ready while the store is
// away, and carry on by themselves; every acknowledged operation ends exactly once; and every
// SSE client, resuming with Last-Event-ID across its dropped streams, receives the log with no
// gap and no repeat (a slow client may be spared stale progress events: docs/streams.md).
// One node reaches PostgreSQL through a TCP proxy that, during the load, lets a COMMIT through
// and loses its answer (the connection dies after the server committed), several times: no
// write is applied twice (each operation's log follows the rules, one event per transition,
// versions without gap or repeat), every acknowledged submit exists once, and every submit
// answered 503 exists at most once.
// (It replaces the first test of #1, which had two nodes, a fast and an immediate restart and
// an outage.)
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ResumingEventStream,
  coverageProblems,
  pause,
  request,
  summary as said,
  waitFor,
} from './chaos-helpers.ts';
import type { Answer, LogEvent } from './chaos-helpers.ts';
import { startServer, tempDir, type Server } from './helpers.ts';
import { pgClusterUnavailable, startPgCluster, type PgCluster } from './pg-cluster.ts';
import type pg from 'pg';
import { rawSession } from './pg-helpers.ts';
import { startPgProxy } from './pg-proxy.ts';

const unavailable = pgClusterUnavailable();

const NODES = 3;
const TOTAL = 2_600;
const IN_FLIGHT = 24;
const SCHEMA = 'accepted';
const TERMINAL = ['succeeded', 'failed', 'canceled'];
/**
 * Acknowledged submits before each fault. `terminate`: every backend of the nodes killed at
 * once; `crash`: an immediate restart (the server's processes killed, crash recovery);
 * `restart`: a clean (fast) restart; `outage`: stopped until every node was seen to say so.
 */
const FAULTS: { at: number; kind: 'terminate' | 'crash' | 'restart' | 'outage' }[] = [
  { at: 300, kind: 'terminate' },
  { at: 650, kind: 'crash' },
  { at: 1_000, kind: 'terminate' },
  { at: 1_350, kind: 'crash' },
  { at: 1_650, kind: 'restart' },
  { at: 1_950, kind: 'outage' },
];
/** Long enough to be running when a fault comes, so that its lease is at stake. */
const LONG_MS = 3_000;
/** The node that reaches PostgreSQL through the proxy. */
const PROXIED = NODES - 1;
/**
 * Acknowledged submits before each COMMIT answer the proxy loses (between the faults above,
 * while the load runs): the server committed, the node learns only that the connection died.
 */
const LOSE_COMMIT_AT = [100, 200, 450, 550, 800, 900, 1_150, 1_250, 1_500, 1_800, 2_200, 2_400];

/** The i-th submit of the load, and the status it must end in. */
function submission(i: number): { body: Record<string, unknown>; ends: string } {
  const base = { maxAttempts: 10 };
  if (i % 40 === 0) {
    return {
      body: { ...base, type: 'demo.sleep', input: { ms: LONG_MS }, labels: { kind: 'long' } },
      ends: 'succeeded',
    };
  }
  switch (i % 5) {
    case 1:
      return {
        body: { ...base, type: 'demo.progress', input: { steps: 3, ms: 20 } },
        ends: 'succeeded',
      };
    case 2:
      return {
        body: { ...base, type: 'demo.fail', input: { message: 'on purpose', permanent: true } },
        ends: 'failed',
      };
    case 3:
      return { body: { ...base, type: 'demo.flaky', input: { failTimes: 1 } }, ends: 'succeeded' };
    case 4:
      return { body: { ...base, type: 'demo.echo', input: { n: i } }, ends: 'succeeded' };
    default:
      return { body: { ...base, type: 'demo.sleep', input: { ms: 20 } }, ends: 'succeeded' };
  }
}

/** Runs one statement on a connection of its own (a restart kills any connection kept). */
async function sql<T>(cluster: PgCluster, text: string): Promise<T[]> {
  const client = await rawSession(cluster.url);
  try {
    return (await client.query<T & pg.QueryResultRow>(text)).rows;
  } finally {
    await client.end();
  }
}

/** An operation's row, and the submit (its `submit` label) it came from. */
interface OperationRow {
  id: string;
  status: string;
  version: number;
  attempts: number;
  submit: string | null;
}
/** An event of the table. */
interface EventRow {
  seq: number;
  operation_id: string;
  type: string;
  version: number;
  data: string;
}

/**
 * The first way an operation's log (its events, by seq) breaks the rules, or null: it is
 * queued once; each attempt starts once, from the queue, numbered 1, 2, ...; a running attempt
 * reports each progress once (the demo handlers never report the same twice) and ends once,
 * with a retry of that attempt or a terminal event, after which nothing comes; versions go
 * 1, 2, ... with no gap or repeat, and the row has the last one and the attempts started. (No
 * client cancels, retries or deletes here, and no node shuts down: nothing else may happen.)
 */
function logProblem(row: OperationRow, events: EventRow[]): string | null {
  let state: 'new' | 'queued' | 'running' | 'ended' = 'new';
  let attempt = 0;
  const reported = new Set<string>();
  for (const [i, event] of events.entries()) {
    const at = `${event.type} (seq ${event.seq})`;
    if (event.version !== i + 1) return `${at} has version ${event.version}, not ${i + 1}`;
    const data = JSON.parse(event.data) as { attempt?: unknown };
    if (event.type === 'operation.queued') {
      if (state !== 'new') return `${at}: queued again, ${state}`;
      state = 'queued';
    } else if (event.type === 'operation.started') {
      if (state !== 'queued' || data.attempt !== attempt + 1) {
        return `${at}: attempt ${String(data.attempt)} started, ${state} after attempt ${attempt}`;
      }
      attempt++;
      state = 'running';
      reported.clear();
    } else if (event.type === 'operation.progress') {
      if (state !== 'running') return `${at} while ${state}`;
      if (reported.has(event.data)) return `${at}: the same progress twice in attempt ${attempt}`;
      reported.add(event.data);
    } else if (event.type === 'operation.retrying') {
      if (state !== 'running' || data.attempt !== attempt) {
        return `${at} of attempt ${String(data.attempt)}, ${state} in attempt ${attempt}`;
      }
      state = 'queued';
    } else if (TERMINAL.includes(event.type.slice('operation.'.length))) {
      if (state !== 'running') return `${at} while ${state}`;
      state = 'ended';
    } else {
      return `${at}: not expected here`;
    }
  }
  if (state === 'new') return 'no operation.queued';
  if (row.version !== events.length) {
    return `the row is at version ${row.version}, its last event at ${events.length}`;
  }
  if (row.attempts !== attempt)
    return `the row counts ${row.attempts} attempts, ${attempt} started`;
  return null;
}

describe(
  'chaos on PostgreSQL: three nodes, killed backends, crashes, a restart and an outage',
  {
    skip: unavailable ?? false,
  },
  () => {
    it('every acknowledged operation ends once, refusals are 503 + Retry-After, SSE clients see the log without gap or repeat', async (t) => {
      const cluster = await startPgCluster();
      const proxy = await startPgProxy(cluster.url);
      const args = (url: string) => ['--store', url, '--schema', SCHEMA, '--lease', '2s'];
      const servers: Server[] = [];
      for (let i = 0; i < NODES; i++) {
        servers.push(await startServer(tempDir(), args(i === PROXIED ? proxy.url : cluster.url)));
      }
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
      const streams = servers.map((server, i) => new ResumingEventStream(server.url, `node ${i}`));

      /** Acknowledged operations and the status each must end in. */
      const acknowledged = new Map<string, string>();
      /** Every submit sent, by its `submit` label: its node, its answer, the id if 202. */
      const tries = new Map<string, { node: number; answer: string; id: string | null }>();
      /** 503 answers, by node, and those that broke the rules (no Retry-After, ...). */
      const refused = servers.map(() => 0);
      const badRefusals: string[] = [];
      /** Anything but 202 or 503, and requests without an answer (must stay empty). */
      const wrong: string[] = [];
      const check503 = (node: number, answer: Answer) => {
        refused[node] = (refused[node] ?? 0) + 1;
        if (answer.retryAfter === null) badRefusals.push(`node ${node}: 503 without Retry-After`);
        if (!answer.contentType.startsWith('application/problem+json')) {
          badRefusals.push(`node ${node}: 503 as ${answer.contentType}`);
        }
        if (answer.code !== 'STORE_UNAVAILABLE') {
          badRefusals.push(`node ${node}: 503 ${String(answer.code)}`);
        }
      };

      let next = 0;
      const submitter = async (lane: number) => {
        while (next < TOTAL && deaths.length === 0) {
          const i = next++;
          const node = lane % NODES; // each node has lanes of its own, all along
          const target = servers[node] as Server;
          const { body, ends } = submission(i);
          for (let attempt = 1; ; attempt++) {
            // Each try is labelled, so that the table says which tries were applied.
            const tag = `${i}.${attempt}`;
            const labels = { ...(body.labels as Record<string, string> | undefined), submit: tag };
            const answer = await request(`${target.url}/v1/operations`, {
              body: { ...body, labels },
            });
            if (answer.status === 202) {
              const id = (JSON.parse(answer.text) as { id: string }).id;
              acknowledged.set(id, ends);
              tries.set(tag, { node, answer: `202 ${id}`, id });
              break;
            }
            const short = answer.failure ?? `${answer.status} ${answer.code ?? ''}`.trim();
            tries.set(tag, { node, answer: short, id: null });
            if (answer.status === 503) {
              check503(node, answer);
              await pause(100); // not taken: the same submit again
              if (deaths.length > 0) return;
              continue;
            }
            wrong.push(`node ${node}: ${said(answer)}`);
            break;
          }
        }
      };

      const readiness = async () =>
        Promise.all(servers.map(async (server) => request(`${server.url}/readyz`)));
      const statuses = (answers: Answer[]) => answers.map((a) => a.status);
      /** Every /readyz answer taken while the server was stopped (each must be 503). */
      const readyWhileDown: string[] = [];
      const reached = (count: number) => () => acknowledged.size >= count || deaths.length > 0;
      const progress = () =>
        `acknowledged ${acknowledged.size}, submits begun ${next}, faults ${JSON.stringify(timeline)}, deaths ${JSON.stringify(deaths)}, wrong answers ${wrong.length}`;

      const load = Promise.all(Array.from({ length: IN_FLIGHT }, (_, lane) => submitter(lane)));
      const faults: string[] = [];
      /** The faults and the lost COMMIT answers, in the order they came. */
      const timeline: string[] = [];
      const noteFault = (line: string) => {
        faults.push(line);
        timeline.push(line);
      };
      // Meanwhile the proxy loses a COMMIT answer of its node now and then: the server
      // committed, the node learns only that the connection died (arming again when the
      // connection died before the server answered).
      let loadOver = false;
      const over = () => {
        loadOver = true;
      };
      void load.then(over, over);
      let losses = 0;
      const loser = (async () => {
        for (const at of LOSE_COMMIT_AT) {
          await waitFor(`${at} acknowledged`, () => reached(at)() || loadOver, 120_000, progress);
          const before = proxy.commitsLost;
          while (proxy.commitsLost === before && !loadOver && deaths.length === 0) {
            if (!proxy.armed) proxy.loseNextCommitAnswer();
            await pause(10);
          }
          if (proxy.commitsLost === before) return;
          losses++;
          timeline.push(`a COMMIT answer of node ${PROXIED} lost at ${acknowledged.size}`);
        }
      })();
      void loser.catch(() => undefined); // awaited below
      try {
        for (const fault of FAULTS) {
          await waitFor(`${fault.at} acknowledged`, reached(fault.at), 120_000, progress);
          // Some operations are running (long ones among them): their leases ride the fault.
          await waitFor(
            'a long operation running',
            async () =>
              deaths.length > 0 ||
              (
                await sql<{ n: number }>(
                  cluster,
                  `SELECT count(*)::int AS n FROM "${SCHEMA}".operations
                 WHERE status = 'running' AND labels->>'kind' = 'long'`,
                )
              )[0]?.n !== 0,
            60_000,
            progress,
          );
          if (deaths.length > 0) break;
          // Each client's stream drops at the fault (a network blip): it resumes while the
          // store is away or coming back.
          for (const stream of streams) stream.cut();
          if (fault.kind === 'terminate') {
            const killed = await sql<{ pid: number }>(
              cluster,
              `SELECT pg_terminate_backend(pid) AS pid FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND datname = 'postgres'`,
            );
            noteFault(`terminated ${killed.length} backends at ${acknowledged.size}`);
          } else if (fault.kind === 'crash') {
            await cluster.restart('immediate');
            noteFault(`restarted (immediate) at ${acknowledged.size}`);
          } else if (fault.kind === 'restart') {
            await cluster.restart('fast');
            noteFault(`restarted (fast) at ${acknowledged.size}`);
          } else {
            // Away for a while: every node says it is not ready, and each refuses submits.
            await cluster.stop('fast');
            const refusedBefore = [...refused];
            let last: number[] = [];
            const state = () =>
              `readyz ${JSON.stringify(last)}, refused ${JSON.stringify(refused)} (before ${JSON.stringify(refusedBefore)}), warned ${JSON.stringify(warned)}, acknowledged ${acknowledged.size}, next ${next}`;
            await waitFor(
              'the outage is seen by every node',
              async () => {
                const answers = await readiness();
                last = statuses(answers);
                for (const [i, answer] of answers.entries()) {
                  if (answer.status !== 503) readyWhileDown.push(`node ${i}: ${said(answer)}`);
                }
                return (
                  (statuses(answers).every((s) => s === 503) &&
                    refused.every((n, i) => n > (refusedBefore[i] ?? 0)) &&
                    warned.every(Boolean)) ||
                  deaths.length > 0
                );
              },
              60_000,
              state,
            );
            // One more round with every node refused in the meantime: still all 503.
            for (const [i, answer] of (await readiness()).entries()) {
              if (answer.status !== 503) readyWhileDown.push(`node ${i}: ${said(answer)}`);
            }
            await cluster.start();
            noteFault(`outage at ${acknowledged.size}`);
          }
          // Back: every node is ready again by itself.
          let states: number[] = [];
          await waitFor(
            `every node ready after the fault (${fault.kind})`,
            async () => {
              states = statuses(await readiness());
              return deaths.length > 0 || states.every((s) => s === 200);
            },
            60_000,
            () => `readyz ${JSON.stringify(states)}; ${progress()}`,
          );
        }
        await load;
        await loser;

        assert.deepEqual(deaths, [], 'no node exits');
        // Every operation ends. Those refused with 503 whose commit went through after all
        // are in the table too: they end as well.
        let unfinished: number | undefined;
        await waitFor(
          'every operation ends',
          async () => {
            unfinished = (
              await sql<{ n: number }>(
                cluster,
                `SELECT count(*)::int AS n FROM "${SCHEMA}".operations
                 WHERE status NOT IN ('succeeded', 'failed', 'canceled')`,
              )
            )[0]?.n;
            return unfinished === 0;
          },
          120_000,
          () => `${String(unfinished)} not finished`,
        );

        // No write was applied twice, whatever answer its caller got.
        const rows = await sql<OperationRow>(
          cluster,
          `SELECT id, status, version, attempts, labels->>'submit' AS submit
           FROM "${SCHEMA}".operations`,
        );
        const history = new Map<string, EventRow[]>();
        for (const event of await sql<EventRow>(
          cluster,
          `SELECT seq::int AS seq, operation_id, type, version, data FROM "${SCHEMA}".events
           ORDER BY seq`,
        )) {
          const list = history.get(event.operation_id) ?? [];
          list.push(event);
          history.set(event.operation_id, list);
        }
        const twice: string[] = [];
        for (const row of rows) {
          const events = history.get(row.id) ?? [];
          const problem = logProblem(row, events);
          if (problem === null) continue;
          twice.push(
            twice.length < 3
              ? `${row.id} (submit ${String(row.submit)}): ${problem}; its log: ${events.map((e) => `${e.seq} ${e.type} v${e.version} ${e.data.slice(0, 100)}`).join(' | ')}`
              : `${row.id}: ${problem}`,
          );
        }
        const inTable = new Set(rows.map((row) => row.id));
        for (const id of history.keys()) {
          if (!inTable.has(id)) twice.push(`events of ${id}, not in the table`);
        }
        assert.deepEqual(
          twice,
          [],
          `each operation's log has one event per transition, versions 1, 2, ... (nothing applied twice); timeline: ${timeline.join('; ')}`,
        );
        const applied = new Map<string, string[]>();
        for (const row of rows) {
          const tag = row.submit ?? 'none';
          applied.set(tag, [...(applied.get(tag) ?? []), row.id]);
        }
        const notOnceApplied: string[] = [];
        for (const [tag, ids] of applied) {
          const sent = tries.get(tag);
          if (!sent) notOnceApplied.push(`${ids.join(', ')}: no such submit (${tag})`);
          else if (ids.length > 1) {
            notOnceApplied.push(
              `submit ${tag} to node ${sent.node}, answered ${sent.answer}, is applied ${ids.length} times: ${ids.join(', ')}`,
            );
          }
        }
        let applied503 = 0;
        for (const [tag, sent] of tries) {
          const ids = applied.get(tag) ?? [];
          if (sent.id !== null) {
            if (ids.length !== 1 || ids[0] !== sent.id) {
              notOnceApplied.push(
                `acknowledged submit ${tag} (${sent.id}) is in the table as ${JSON.stringify(ids)}`,
              );
            }
          } else if (sent.answer.startsWith('503')) {
            if (ids.length > 0) applied503++;
          } else if (ids.length > 0) {
            notOnceApplied.push(
              `submit ${tag} to node ${sent.node} was answered ${sent.answer}, yet applied: ${ids.join(', ')}`,
            );
          }
        }
        assert.deepEqual(
          notOnceApplied,
          [],
          `every acknowledged submit exists once, every other at most once (and not when answered an error); timeline: ${timeline.join('; ')}`,
        );

        assert.deepEqual(wrong, [], 'every submit is answered, 202 or 503');
        assert.deepEqual(badRefusals, [], 'every 503 is STORE_UNAVAILABLE with Retry-After');
        assert.deepEqual(readyWhileDown, [], '/readyz answers 503 on every node while it is down');
        assert.equal(faults.length, FAULTS.length, faults.join('; '));
        assert.equal(losses, LOSE_COMMIT_AT.length, `COMMIT answers lost: ${timeline.join('; ')}`);
        assert.deepEqual(warned, [true, true, true], 'each node logged that PostgreSQL was away');
        assert.ok(
          refused.every((n) => n > 0),
          `each node refused submits while the store was away: ${refused.join(', ')}`,
        );
        assert.equal(acknowledged.size, TOTAL);
        assert.deepEqual(statuses(await readiness()), [200, 200, 200], '/readyz is 200 after');
        t.diagnostic(
          `${timeline.join('; ')}; 503 refusals by node: ${refused.join(', ')}; ${applied503} submits refused with 503 were applied (COMMIT answer lost)`,
        );

        // Every operation ends with exactly one terminal event that says how.
        const operations = await sql<{ id: string; status: string }>(
          cluster,
          `SELECT id, status FROM "${SCHEMA}".operations`,
        );
        const terminalEvents = await sql<{ operation_id: string; types: string[] }>(
          cluster,
          `SELECT operation_id, array_agg(type ORDER BY seq) AS types FROM "${SCHEMA}".events
         WHERE type IN ('operation.succeeded', 'operation.failed', 'operation.canceled')
         GROUP BY operation_id`,
        );
        const ended = new Map(terminalEvents.map((r) => [r.operation_id, r.types]));
        const status = new Map(operations.map((r) => [r.id, r.status]));
        const unended: string[] = [];
        for (const [id, ends] of acknowledged) {
          if (status.get(id) !== ends)
            unended.push(`${id} is ${String(status.get(id))}, not ${ends}`);
        }
        assert.deepEqual(unended, [], 'every acknowledged operation ends as its type says');
        const notOnce: string[] = [];
        for (const { id, status: s } of operations) {
          const types = ended.get(id) ?? [];
          if (!TERMINAL.includes(s) || types.length !== 1 || types[0] !== `operation.${s}`) {
            notOnce.push(`${id}: ${s}, terminal events ${JSON.stringify(types)}`);
          }
        }
        // The whole history of the first few at fault, for the diagnosis.
        const histories: string[] = [];
        for (const line of notOnce.slice(0, 3)) {
          const rows = await sql<{ seq: number; type: string; version: number; data: string }>(
            cluster,
            `SELECT seq::int AS seq, type, version, left(data, 120) AS data FROM "${SCHEMA}".events
             WHERE operation_id = '${line.slice(0, line.indexOf(':'))}' ORDER BY seq`,
          );
          histories.push(rows.map((r) => `${r.seq} ${r.type} v${r.version} ${r.data}`).join(' | '));
        }
        assert.deepEqual(
          notOnce,
          [],
          `every operation ends exactly once; faults: ${timeline.join('; ')}; histories: ${histories.join(' || ')}`,
        );

        // The whole log of the tenant, from the table, as GET /v1/events pages it too.
        const log = (
          await sql<{ seq: number; type: string; operation_id: string }>(
            cluster,
            `SELECT seq::int AS seq, type, operation_id FROM "${SCHEMA}".events
             WHERE tenant = 'default' ORDER BY seq`,
          )
        ).map((r) => ({ seq: r.seq, type: r.type, operationId: r.operation_id }));
        const paged: LogEvent[] = [];
        for (let after = 0; ;) {
          const page = await request(
            `${(servers[0] as Server).url}/v1/events?after=${after}&limit=1000`,
          );
          assert.equal(page.status, 200, said(page));
          const { events, nextAfter } = JSON.parse(page.text) as {
            events: LogEvent[];
            nextAfter: number;
          };
          if (events.length === 0) break;
          paged.push(
            ...events.map((e) => ({ seq: e.seq, type: e.type, operationId: e.operationId })),
          );
          after = nextAfter;
        }
        assert.deepEqual(paged, log, 'GET /v1/events pages the log as the table has it');

        // Each client receives, after its first event, every event of the log once, in order
        // (but stale progress events, which a slow client may be spared: docs/streams.md).
        const end = log.at(-1)?.seq ?? 0;
        await waitFor(
          `every SSE client receives the log up to ${end}`,
          () => streams.every((s) => s.last >= end),
          120_000,
          () => streams.map((s) => `${s.name} at ${s.last}, ${s.connects} connections`).join('; '),
        );
        for (const stream of streams) {
          const { problems, at, conflated } = coverageProblems(stream.events, log);
          t.diagnostic(
            `${stream.name}: ${stream.events.length} events received (${conflated} stale progress events conflated), ${stream.connects} connections, ${stream.resumes} resumed, ${stream.drops} dropped by the server, ${stream.refusals.length} refused`,
          );
          assert.deepEqual(
            problems,
            [],
            `${stream.name}: the log from its first event, no gap, no repeat; connections: ${at === null ? '' : stream.connectionsNear(at)}`,
          );
          assert.deepEqual(stream.badIds, [], `${stream.name}: each event's id is its seq`);
          assert.ok(stream.resumes >= FAULTS.length, `${stream.name}: resumed at every fault`);
          assert.deepEqual(
            stream.refusals.filter((r) => r.status !== 503),
            [],
            `${stream.name}: a stream is refused only with 503`,
          );
        }
      } finally {
        for (const stream of streams) stream.stop();
        for (const server of servers) server.child.kill('SIGKILL');
        await load.catch(() => undefined);
        await loser.catch(() => undefined);
        await proxy.close();
      }
    });
  },
);
