#!/usr/bin/env node
// The `accepted` command. Installed from the registry (or a packed tarball) it runs the
// compiled dist/. In a checkout of the repository it runs the TypeScript sources through tsx,
// so that `npx accepted` works right after `npm install` or `npm ci`, with no build, and never
// runs a stale build.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fs.realpathSync(fileURLToPath(import.meta.url)));
const packageDir = path.dirname(here);
const source = path.join(packageDir, 'src', 'cli', 'main.ts');
const built = path.join(packageDir, 'dist', 'cli', 'main.js');

/** tsx's loader API when tsx can be imported (a checkout with its dev dependencies). */
async function tsx() {
  try {
    return await import('tsx/esm/api');
  } catch {
    return undefined;
  }
}

async function load() {
  const checkout = !packageDir.split(path.sep).includes('node_modules') && fs.existsSync(source);
  const loader = checkout ? await tsx() : undefined;
  if (loader) {
    // The repository's tsconfig maps @accepted/client to its sources too.
    const tsconfig = path.join(packageDir, '..', '..', 'tsconfig.json');
    loader.register(fs.existsSync(tsconfig) ? { tsconfig } : {});
    return import(pathToFileURL(source).href);
  }
  if (fs.existsSync(built)) return import(pathToFileURL(built).href);
  process.stderr.write(
    checkout
      ? `accepted: neither tsx nor a build: run 'npm install' (or 'npm run build') in the repository.\n`
      : `accepted: ${built} is missing: this copy of @accepted/server was not built.\n`,
  );
  process.exit(1);
}

const { main } = await load();
main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0) process.exit(code);
  },
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
