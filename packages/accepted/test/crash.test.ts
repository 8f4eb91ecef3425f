import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { OperationEvent } from '../src/domain/events.ts';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.ts';
import { startServer, tempDir } from './helpers.ts';

async function submit(url: string, body: unknown): Promise<string> {
  const response = await fetch(`${url}/v1/operations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 202);
  return ((await response.json()) as { id: string }).id;
}

async function status(url: string, id: string): Promise<string> {
  const response = await fetch(`${url}/v1/operations/${id}`);
  return ((await response.json()) as { status: string }).status;
}

async function allEvents(dataDir: string): Promise<OperationEvent[]> {
  const store = new SqliteStore({ filename: path.join(dataDir, 'accepted.db') });
  await store.open();
  const events: OperationEvent[] = [];
  for (;;) {
    const batch = await store.readEvents({ after: events.at(-1)?.seq ?? 0, limit: 5000 });
    if (batch.length === 0) break;
    events.push(...batch);
  }
  await store.close();
  return events;
}

describe('crash safety of the real server', { timeout: 180_000 }, () => {
  it('loses no acknowledged operation and runs none to success twice across a SIGKILL', async () => {
    const dataDir = tempDir('accepted-crash-');
    const first = await startServer(dataDir, ['--concurrency', '64']);
    const acknowledged: string[] = [];
    let submitted = 0;
    let killed = false;
    const submitter = async () => {
      while (submitted < 1000 && !killed) {
        submitted++;
        try {
          acknowledged.push(await submit(first.url, { type: 'demo.sleep', input: { ms: 300 } }));
        } catch {
          if (!killed) throw new Error('a submit failed before the kill');
        }
      }
    };
    const submitters = Array.from({ length: 16 }, submitter);
    // Kill mid-way: once 400 are acknowledged and some are running right now (asked of the
    // server: which ones run depends on how far the workers are behind the submits).
    while (acknowledged.length < 400) await new Promise((resolve) => setTimeout(resolve, 5));
    let sawRunning = false;
    while (!sawRunning && acknowledged.length < 1000) {
      const page = (await (
        await fetch(`${first.url}/v1/operations?status=running&limit=1`)
      ).json()) as { items: unknown[] };
      sawRunning = page.items.length > 0;
    }
    killed = true;
    first.child.kill('SIGKILL');
    await Promise.all(submitters);
    await first.exited;
    assert.ok(sawRunning, 'the kill should interrupt running operations');
    assert.ok(acknowledged.length < 1000, 'the kill came before every submit was acknowledged');

    const second = await startServer(dataDir, ['--concurrency', '64']);
    const pending = new Set(acknowledged);
    while (pending.size > 0) {
      for (const id of [...pending]) {
        const s = await status(second.url, id);
        assert.notEqual(s, 'failed', `${id} failed`);
        if (s === 'succeeded') pending.delete(id);
      }
      if (pending.size > 0) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0);

    const events = await allEvents(dataDir);
    const succeeded = new Map<string, number>();
    for (const event of events) {
      if (event.type === 'operation.succeeded') {
        succeeded.set(event.operationId, (succeeded.get(event.operationId) ?? 0) + 1);
      }
    }
    for (const id of acknowledged)
      assert.equal(succeeded.get(id), 1, `${id} succeeded ${succeeded.get(id) ?? 0} times`);
    const recovered = events.filter(
      (e) => e.type === 'operation.retrying' && e.data.error?.code === 'LEASE_EXPIRED',
    );
    assert.ok(recovered.length > 0, 'operations interrupted by the kill were recovered');
  });

  it('drains on SIGTERM: refuses submits, answers polls, finishes the running operation, exits 0', async () => {
    const dataDir = tempDir('accepted-drain-');
    const server = await startServer(dataDir);
    const id = await submit(server.url, { type: 'demo.sleep', input: { ms: 1500 } });
    while ((await status(server.url, id)) !== 'running')
      await new Promise((r) => setTimeout(r, 10));
    server.child.kill('SIGTERM');
    await server.logged('draining');
    assert.equal(await status(server.url, id), 'running', 'polls are answered while draining');
    const refused = await fetch(`${server.url}/v1/operations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'demo.echo', input: 1 }),
    });
    assert.equal(refused.status, 503);
    assert.equal(((await refused.json()) as { code: string }).code, 'SHUTTING_DOWN');
    assert.equal((await fetch(`${server.url}/readyz`)).status, 503);
    assert.equal(await server.exited, 0);
    const history = (await allEvents(dataDir)).filter((e) => e.operationId === id);
    assert.equal(history.at(-1)?.type, 'operation.succeeded', JSON.stringify(history));
  });

  it('past the grace period, aborts and requeues running work without spending an attempt', async () => {
    const dataDir = tempDir('accepted-drain-');
    const server = await startServer(dataDir, ['--grace', '100']);
    const id = await submit(server.url, { type: 'demo.sleep', input: { ms: 60_000 } });
    while ((await status(server.url, id)) !== 'running')
      await new Promise((r) => setTimeout(r, 10));
    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0);
    const last = (await allEvents(dataDir)).filter((e) => e.operationId === id).at(-1);
    assert.equal(last?.type, 'operation.retrying');
    assert.equal(last?.data.error?.code, 'WORKER_SHUTDOWN');
    const store = new SqliteStore({ filename: path.join(dataDir, 'accepted.db') });
    await store.open();
    const op = await store.get(id);
    await store.close();
    assert.equal(op?.status, 'queued');
    assert.equal(op?.attempts, 0);
  });
});
