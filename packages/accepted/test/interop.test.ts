import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import type { Accepted } from '../src/engine/accepted.ts';
import { demoOperations } from '../src/engine/demo.ts';
import { createHttpServer } from '../src/http/server.ts';
import { startEngine } from './helpers.ts';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

/**
 * A generic long-running-operation poller, written from the Azure SDK's documented behaviour
 * (standards.md §2): mode from the initial headers, status compared case-insensitively,
 * Retry-After honoured, a changed Operation-Location followed, error.code/error.message read
 * on failure, and on success a final GET of the initial `Location` for a POST.
 */
async function azureStylePoll(initial: Response, initialUrl: string): Promise<unknown> {
  const lower = (value: unknown) => (typeof value === 'string' ? value.toLowerCase() : value);
  let pollUrl =
    initial.headers.get('operation-location') ?? initial.headers.get('azure-asyncoperation');
  const location = initial.headers.get('location');
  if (!pollUrl) throw new Error('expected OperationLocation mode');
  await initial.arrayBuffer(); // In this mode the initial answer counts as running.
  let retryAfter = initial.headers.get('retry-after');
  for (;;) {
    const delayMs = retryAfter === null ? 2000 : Number(retryAfter) * 1000;
    await new Promise((resolve) => setTimeout(resolve, Math.min(delayMs, 2_147_483_647)));
    const response = await fetch(new URL(pollUrl, initialUrl));
    const body = (await response.json()) as {
      status?: unknown;
      error?: { code?: string; message?: string };
      resourceLocation?: string;
    };
    if (typeof body.status !== 'string')
      throw new Error('A non-string status makes the poller throw');
    const status = lower(body.status);
    if (status === 'succeeded') {
      const finalUrl = body.resourceLocation ?? location;
      if (!finalUrl) return body;
      const final = await fetch(new URL(finalUrl, initialUrl));
      return final.json();
    }
    if (status === 'failed') {
      const { code, message } = body.error ?? {};
      if (code === undefined || message === undefined)
        throw new Error('missing error code/message');
      throw new Error(`The long-running operation has failed. ${code}. ${message}`);
    }
    if (status === 'canceled' || status === 'cancelled') throw new Error('Operation was canceled');
    retryAfter = response.headers.get('retry-after');
    pollUrl = response.headers.get('operation-location') ?? pollUrl;
  }
}

describe('interoperability: OpenAPI 3.1 and Azure-style pollers', { timeout: 60_000 }, () => {
  let accepted: Accepted;
  let base: string;
  let close: () => Promise<void>;

  before(async () => {
    accepted = await startEngine({ operations: demoOperations });
    const app = createHttpServer({ accepted, logger: false });
    base = await app.listen({ port: 0, host: '127.0.0.1' });
    close = () => app.close();
  });
  after(() => close());

  const submit = (body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${base}/v1/operations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });

  it('serves an OpenAPI 3.1 document that a real validator accepts', async () => {
    const document = (await (await fetch(`${base}/v1/openapi.json`)).json()) as Record<
      string,
      unknown
    >;
    const validator = new Validator();
    const result = await validator.validate(document);
    assert.deepEqual(result.errors, undefined, JSON.stringify(result.errors, null, 2));
    assert.equal(result.valid, true);
    assert.equal(validator.version, '3.1');
    const paths = document.paths as Record<string, Record<string, unknown>>;
    for (const [path, methods] of [
      ['/v1/operations', ['get', 'post']],
      ['/v1/operations/{id}', ['get', 'delete']],
      ['/v1/operations/{id}:cancel', ['post']],
      ['/v1/operations/{id}:retry', ['post']],
      ['/v1/operations/{id}/events', ['get']],
      ['/v1/events', ['get']],
      ['/v1/stream-tokens', ['post']],
      ['/v1/ws', ['get']],
      ['/healthz', ['get']],
      ['/readyz', ['get']],
      ['/v1/openapi.json', ['get']],
      ['/v1/asyncapi.json', ['get']],
    ] as const) {
      for (const method of methods) assert.ok(paths[path]?.[method], `${method} ${path}`);
    }
    // The submit schema is the one that validates: every registered type with its input.
    const schemas = (document.components as { schemas: Record<string, unknown> }).schemas;
    const submitSchema = schemas.SubmitRequest as { oneOf: { title: string }[] };
    assert.deepEqual(
      submitSchema.oneOf.map((v) => v.title),
      demoOperations.map((d) => d.type).sort(),
    );
    assert.deepEqual(schemas['Input.demo.sleep'], demoOperations[1]?.inputSchema);
  });

  it('answers what the document describes (monitor, pages, events, problems)', async () => {
    const document = (await (await fetch(`${base}/v1/openapi.json`)).json()) as Record<
      string,
      unknown
    >;
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats(ajv);
    ajv.addSchema({ $id: 'https://accepted.invalid/openapi.json', ...document });
    const check = (schema: string, value: unknown) => {
      const validate = ajv.getSchema(
        `https://accepted.invalid/openapi.json#/components/schemas/${schema}`,
      );
      assert.ok(validate, schema);
      assert.ok(validate(value), `${schema}: ${JSON.stringify(validate.errors)}`);
    };
    const request = { type: 'demo.sleep', input: { ms: 5 }, labels: { team: 'a' } };
    check('SubmitRequest', request);
    const bad = ajv.getSchema(
      'https://accepted.invalid/openapi.json#/components/schemas/SubmitRequest',
    );
    assert.equal(bad?.({ type: 'demo.sleep', input: { ms: 'x' } }), false, 'input schemas apply');

    const accepted202 = await submit(request, { prefer: 'wait=5' });
    const monitor = (await accepted202.json()) as { id: string; status: string };
    assert.equal(monitor.status, 'succeeded');
    check('StatusMonitor', monitor);
    const queued = await submit({ type: 'demo.echo', runAt: '2999-01-01T00:00:00Z' });
    check('StatusMonitor', await queued.json());
    const failed = await submit(
      { type: 'demo.fail', input: { message: 'm', permanent: true } },
      { prefer: 'wait=5' },
    );
    check('StatusMonitor', await failed.json());
    check('OperationPage', await (await fetch(`${base}/v1/operations?limit=2`)).json());
    check('EventPage', await (await fetch(`${base}/v1/operations/${monitor.id}/events`)).json());
    check('Problem', await (await submit({ type: 'nope' })).json());
    check('Problem', await (await fetch(`${base}/v1/operations?limit=x`)).json());
  });

  it('an Azure-style poller drives an operation to succeeded and gets its result', async () => {
    const initial = await submit({ type: 'demo.sleep', input: { ms: 200 } });
    assert.equal(initial.status, 202);
    const result = await azureStylePoll(initial, `${base}/v1/operations`);
    const final = result as { status: string; result: unknown };
    assert.equal(final.status, 'succeeded');
    assert.deepEqual(final.result, { sleptMs: 200 });
  });

  it('an Azure-style poller surfaces error.code and error.message of a failed operation', async () => {
    const initial = await submit({
      type: 'demo.fail',
      input: { message: 'the quota is used up', code: 'QUOTA_EXCEEDED', permanent: true },
    });
    await assert.rejects(
      azureStylePoll(initial, `${base}/v1/operations`),
      /The long-running operation has failed\. QUOTA_EXCEEDED\. the quota is used up/,
    );
  });

  it('an Azure-style poller sees a canceled operation as canceled', async () => {
    const initial = await submit({ type: 'demo.sleep', input: { ms: 60_000 } });
    const { id } = (await initial.clone().json()) as { id: string };
    await fetch(`${base}/v1/operations/${id}:cancel`, { method: 'POST' });
    await assert.rejects(
      azureStylePoll(initial, `${base}/v1/operations`),
      /Operation was canceled/,
    );
  });
});
