// The wire schemas are the one source of the contract: a field added to the monitor's JSON
// Schema (src/wire/schemas.ts) reaches the OpenAPI document and the server's types with no
// other file touched, and the client's types fail the typecheck until they follow. The test
// makes that change in a copy of the sources and watches both happen.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { packageRoot, tempDir } from './helpers.ts';

const run = promisify(execFile);
const repo = path.resolve(packageRoot, '../..');
const tsc = path.join(repo, 'node_modules/typescript/bin/tsc');

/** A copy of both packages' sources and the client's type check, compiled on their own. */
function copySources(): string {
  const root = tempDir('accepted-drift-');
  const copy = (from: string) =>
    fs.cpSync(path.join(repo, from), path.join(root, from), { recursive: true });
  copy('packages/accepted/src');
  copy('packages/client/src');
  copy('packages/client/test/wire-types.ts');
  copy('tsconfig.base.json');
  copy('package.json');
  copy('packages/accepted/package.json');
  copy('packages/client/package.json');
  fs.symlinkSync(path.join(repo, 'node_modules'), path.join(root, 'node_modules'));
  fs.writeFileSync(
    path.join(root, 'tsconfig.json'),
    JSON.stringify({
      extends: './tsconfig.base.json',
      compilerOptions: { noEmit: true, allowImportingTsExtensions: true },
      files: ['packages/client/test/wire-types.ts', 'packages/accepted/src/wire/monitor.ts'],
    }),
  );
  return root;
}

/** Adds a required `priority` field to the monitor's schema, in that file only. */
function addMonitorField(root: string): void {
  const file = path.join(root, 'packages/accepted/src/wire/schemas.ts');
  const text = fs.readFileSync(file, 'utf8');
  const start = text.indexOf('export const MONITOR_SCHEMA = {');
  assert.ok(start >= 0, 'MONITOR_SCHEMA is in wire/schemas.ts');
  const required = text.indexOf("required: [\n    'id',", start);
  const properties = text.indexOf('properties: {\n', start);
  assert.ok(required > start && properties > required, 'the schema has required and properties');
  const patched =
    text.slice(0, required) +
    "required: [\n    'priority',\n    'id'," +
    text.slice(required + "required: [\n    'id',".length, properties) +
    "properties: {\n    priority: { type: 'integer', minimum: 0 },\n" +
    text.slice(properties + 'properties: {\n'.length);
  fs.writeFileSync(file, patched);
}

async function typecheck(root: string): Promise<{ ok: boolean; output: string }> {
  try {
    await run(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json')], { cwd: root });
    return { ok: true, output: '' };
  } catch (error) {
    return { ok: false, output: String((error as { stdout?: string }).stdout) };
  }
}

/** The StatusMonitor schema the OpenAPI document of this copy publishes. */
async function publishedMonitor(root: string): Promise<{ required: string[]; properties: object }> {
  const openapi = path.join(root, 'packages/accepted/src/http/openapi.ts');
  const script = `
    const { openApiDocument } = await import(${JSON.stringify(openapi)});
    const doc = openApiDocument({ definitions: new Map(), auth: true });
    process.stdout.write(JSON.stringify(doc.components.schemas.StatusMonitor));`;
  const { stdout } = await run(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', script],
    {
      cwd: root,
    },
  );
  return JSON.parse(stdout) as { required: string[]; properties: object };
}

describe('the wire schemas are the one source of the contract', () => {
  it('a field added to the monitor schema reaches OpenAPI and the server types, and the client types fail until they follow', async () => {
    const root = copySources();
    const before = await typecheck(root);
    assert.equal(before.ok, true, `the unchanged copy typechecks:\n${before.output}`);
    const published = await publishedMonitor(root);
    assert.equal('priority' in published.properties, false);

    addMonitorField(root);

    const after = await publishedMonitor(root);
    assert.ok('priority' in after.properties, 'OpenAPI publishes the new field');
    assert.ok(after.required.includes('priority'), 'as required, as the schema says');
    const checked = await typecheck(root);
    assert.equal(checked.ok, false, 'the typecheck fails');
    // The server must fill the field (its type is the schema's) ...
    assert.match(checked.output, /src\/wire\/monitor\.ts\(\d+,\d+\): error .*priority/);
    // ... and the client's hand-written type no longer matches the schema.
    assert.match(checked.output, /client\/test\/wire-types\.ts\(\d+,\d+\): error/);
  });
});
