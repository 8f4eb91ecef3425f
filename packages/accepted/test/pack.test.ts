// The packages as users get them: `npm pack` of @accepted/client and @accepted/server (their
// `prepack` builds dist/), both tarballs installed with `npm install` in a new project outside
// the repository, from npm's cache where it can. There `npx accepted serve --demo` starts and
// answers a submit, the installed packages work at run time (the library in process, the client
// over HTTP), and a TypeScript file that imports them, with the README's examples, typechecks
// against the packed declarations (strict, skipLibCheck off).
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { repoRoot, typeScriptBlocks } from './readme-blocks.ts';

const run = promisify(execFile);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'accepted-pack-'));
const app = path.join(work, 'app');

/**
 * The environment of the npm and node processes: this node first on PATH (CI runs the tests on
 * a second Node, with `npm_config_nodedir` its headers), and none of the other `npm_*`
 * variables `npm test` sets, which would point npm at the repository, not the new project.
 */
const env: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(
    ([key]) =>
      !key.toLowerCase().startsWith('npm_') ||
      /^npm_config_(cache|registry|userconfig|globalconfig|nodedir)$/i.test(key),
  ),
);
env.PATH = `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}`;
env.npm_config_update_notifier = 'false';
env.npm_config_fund = 'false';
env.npm_config_audit = 'false';

async function npm(cwd: string, ...args: string[]): Promise<string> {
  try {
    const { stdout } = await run('npm', args, { cwd, env, maxBuffer: 64 << 20 });
    return stdout;
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`npm ${args.join(' ')} failed in ${cwd}:\n${stdout ?? ''}\n${stderr ?? ''}`, {
      cause: error,
    });
  }
}

const readJson = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
const versionIn = (dir: string, name: string) =>
  (readJson(path.join(dir, 'node_modules', name, 'package.json')) as { version: string }).version;

interface Packed {
  filename: string;
  files: { path: string }[];
}

/** `npm pack` of one workspace package into `work`: its tarball and the files in it. */
async function pack(dir: string): Promise<Packed> {
  const [packed] = JSON.parse(
    await npm(path.join(repoRoot, 'packages', dir), 'pack', '--json', '--pack-destination', work),
  ) as Packed[];
  assert.ok(packed);
  return packed;
}

/** Every file an `exports` or `bin` entry of a package.json names. */
function targets(manifest: { exports?: unknown; bin?: Record<string, string> }): string[] {
  const out = Object.values(manifest.bin ?? {});
  const walk = (value: unknown, key = '') => {
    if (typeof value === 'string') {
      if (key !== 'source') out.push(value);
    } else if (value && typeof value === 'object') {
      for (const [k, v] of Object.entries(value)) walk(v, k);
    }
  };
  walk(manifest.exports);
  return out.map((file) => path.posix.normalize(file));
}

/** `npx accepted serve --demo --port 0` in `cwd`, once it is ready. */
async function startDemo(cwd: string, data: string) {
  // In a process group of its own: npx runs the bin through a shell, and `stop` is for all.
  const child = spawn('npx', ['accepted', 'serve', '--demo', '--port', '0', '--data', data], {
    cwd,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  // 'close': every process holding the pipes has ended.
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const stop = async () => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
    } catch {
      // The whole group has ended already.
    }
    await exited;
  };
  let output = '';
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        const ready = /"url":"([^"]+)"[^\n]*"msg":"accepted ready"/.exec(output);
        if (ready?.[1]) resolve(ready[1]);
      });
      void exited.then((code) => reject(new Error(`exited with ${code}:\n${output}`)));
      setTimeout(() => reject(new Error(`not ready in 60 s:\n${output}`)), 60_000).unref();
    });
    return { url, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** A submit answered `202` with the monitor's URL. */
async function submitTo(url: string) {
  const response = await fetch(`${url}/v1/operations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'demo.echo', input: { from: 'npx accepted' } }),
  });
  assert.equal(response.status, 202);
  assert.match(response.headers.get('location') ?? '', /\/v1\/operations\/op_/);
}

let server: Packed;
let client: Packed;

before(async () => {
  // The client first: the server's declarations import the client's.
  client = await pack('client');
  server = await pack('accepted');
  fs.mkdirSync(app);
  fs.writeFileSync(
    path.join(app, 'package.json'),
    JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }),
  );
  // The compiler and the types app.ts needs at the repository's versions: in npm's cache.
  await npm(
    app,
    'install',
    '--prefer-offline',
    '--ignore-scripts',
    path.join(work, server.filename),
    path.join(work, client.filename),
    `typescript@${versionIn(repoRoot, 'typescript')}`,
    `@types/node@${versionIn(repoRoot, '@types/node')}`,
    `@types/ws@${versionIn(repoRoot, '@types/ws')}`,
  );
  // Install scripts were skipped: the one needed is better-sqlite3's, which downloads or
  // compiles its native module. The repository's build is the same one when the versions
  // match (and was built for this node: CI rebuilds it for Node 24); else compile it here.
  const native = path.join('node_modules', 'better-sqlite3', 'build', 'Release');
  if (versionIn(app, 'better-sqlite3') === versionIn(repoRoot, 'better-sqlite3')) {
    fs.mkdirSync(path.join(app, native), { recursive: true });
    fs.copyFileSync(
      path.join(repoRoot, native, 'better_sqlite3.node'),
      path.join(app, native, 'better_sqlite3.node'),
    );
  } else {
    await npm(app, 'rebuild', 'better-sqlite3');
  }
});

after(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

describe('the accepted command in this checkout', () => {
  it('`npx accepted serve --demo` starts from the repository (its sources, through tsx)', async () => {
    const demo = await startDemo(repoRoot, path.join(work, 'checkout-data'));
    try {
      await submitTo(demo.url);
    } finally {
      await demo.stop();
    }
  });
});

describe('npm pack', () => {
  it('packs the built code, the declarations and the bin, and no sources or tests', () => {
    for (const [packed, dir] of [
      [server, 'accepted'],
      [client, 'client'],
    ] as const) {
      const files = new Set(packed.files.map((file) => file.path));
      const manifest = readJson(path.join(repoRoot, 'packages', dir, 'package.json')) as {
        exports: unknown;
        bin?: Record<string, string>;
      };
      for (const target of targets(manifest)) {
        assert.ok(files.has(target), `${packed.filename} lacks ${target}`);
      }
      for (const file of files) {
        assert.match(file, /^(package\.json|README\.md|LICENSE|bin\/.*\.js|dist\/.*)$/, file);
      }
    }
  });

  it('installs in a new project, the server depending on the packed client', () => {
    const lock = readJson(path.join(app, 'package-lock.json')) as {
      packages: Record<string, { resolved?: string; version?: string }>;
    };
    const entries = Object.keys(lock.packages).filter((key) => key.includes('@accepted/'));
    // One copy of the client, the tarball, not one from the registry under the server.
    assert.deepEqual(entries.sort(), [
      'node_modules/@accepted/client',
      'node_modules/@accepted/server',
    ]);
    assert.equal(
      lock.packages['node_modules/@accepted/client']?.resolved,
      `file:../${client.filename}`,
    );
    // The bin runs the installed copy's dist/, not a checkout.
    const bin = fs.realpathSync(path.join(app, 'node_modules', '.bin', 'accepted'));
    assert.equal(
      bin,
      path.join(fs.realpathSync(app), 'node_modules/@accepted/server/bin/accepted.js'),
    );
  });

  it('`npx accepted serve --demo` starts there and answers a submit; both packages run', async () => {
    const demo = await startDemo(app, path.join(app, 'data'));
    try {
      await submitTo(demo.url);

      // The installed packages at run time: the library in process, the client over HTTP.
      fs.writeFileSync(
        path.join(app, 'check.js'),
        `import { createAccepted, defineOperation } from '@accepted/server';
import { sqliteStore } from '@accepted/server/sqlite';
import { createClient } from '@accepted/client';

const accepted = createAccepted({
  store: sqliteStore({ filename: 'data/library.db' }),
  operations: [defineOperation({ type: 'double', handler: ({ n }) => ({ n: n * 2 }) })],
});
await accepted.start();
const op = await accepted.submit('double', { n: 21 });
const library = (await accepted.wait(op.id)).result;
await accepted.stop();

const client = createClient({ baseUrl: process.argv[2] });
const handle = await client.submit('demo.echo', { over: 'http' });
// Node.js 22+ has a global WebSocket, which the client takes when given none.
const via = typeof WebSocket === 'function' ? 'ws' : 'sse';
const http = (await handle.wait({ via, timeoutMs: 20000 })).result;
console.log(JSON.stringify({ library, http }));
`,
      );
      const { stdout } = await run(process.execPath, ['check.js', demo.url], { cwd: app, env });
      assert.deepEqual(JSON.parse(stdout), { library: { n: 42 }, http: { over: 'http' } });
    } finally {
      await demo.stop();
    }
  });

  it('a TypeScript file importing both packages, and the README examples, typecheck', async () => {
    fs.writeFileSync(
      path.join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2023',
          lib: ['ES2023'],
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: ['node'],
        },
        include: ['*.ts'],
      }),
    );
    fs.writeFileSync(
      path.join(app, 'app.ts'),
      `import { createAccepted, defineOperation, PermanentError, type OperationTypes } from '@accepted/server';
import { sqliteStore } from '@accepted/server/sqlite';
import { postgresStore } from '@accepted/server/postgres';
import { createHttpServer, ApiKeys } from '@accepted/server/http';
import { createWebhooks } from '@accepted/server/webhooks';
import { storeConformance } from '@accepted/server/store-conformance';
import { createServer, ConfigError, type ServerConfig } from '@accepted/server/server';
import { createClient, type Operation } from '@accepted/client';
import { verifyWebhook } from '@accepted/client/webhooks';
import { WebSocket } from 'ws';

const operations = [
  defineOperation<{ n: number }, { n: number }, 'double'>({
    type: 'double',
    handler: ({ n }) => {
      if (n < 0) throw new PermanentError('Negative.', { code: 'NEGATIVE' });
      return { n: n * 2 };
    },
  }),
];
const accepted = createAccepted({ store: sqliteStore({ filename: 'data/a.db' }), operations });
export const app = createHttpServer({ accepted, apiKeys: new ApiKeys() });
export const webhooks = createWebhooks({ accepted });
export const unused = [postgresStore, storeConformance, verifyWebhook, ConfigError];
export const server = createServer({ operations, port: 0, retentionMs: 86_400_000 });
export const config: ServerConfig = server.config;

const client = createClient<OperationTypes<typeof operations>>({
  baseUrl: 'http://127.0.0.1:8080',
  WebSocket,
});
export const doubled: Promise<{ n: number }> = client.run('double', { n: 21 }, { via: 'ws' });
export const monitor: Promise<Operation> = client.get('op_x');
`,
    );
    const blocks = typeScriptBlocks('README.md');
    assert.ok(blocks.length >= 2);
    blocks.forEach((block, index) => {
      fs.writeFileSync(path.join(app, `readme${index}.ts`), block.code);
    });
    const tsc = path.join(app, 'node_modules', 'typescript', 'bin', 'tsc');
    const compiled = await run(process.execPath, [tsc, '-p', '.'], { cwd: app, env }).then(
      () => '',
      (error: unknown) => String((error as { stdout?: string }).stdout ?? error),
    );
    assert.equal(compiled, '');
  });
});
