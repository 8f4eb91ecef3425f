// The size of the browser build of @accepted/client: packages/client/src/index.ts bundled by
// esbuild (ESM, minified, for browsers), then gzipped (level 9). Prints one JSON line:
// { bench: 'client-bundle', min_bytes, gzip_bytes }. The goal is under 6 KB gzipped.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const result = await build({
  entryPoints: [path.join(root, 'packages/client/src/index.ts')],
  bundle: true,
  minify: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  write: false,
});
const code = result.outputFiles[0]?.contents;
if (!code) throw new Error('esbuild produced no output');
const gzip = gzipSync(code, { level: 9 });
console.log(
  JSON.stringify({
    bench: 'client-bundle',
    min_bytes: code.byteLength,
    gzip_bytes: gzip.byteLength,
  }),
);
