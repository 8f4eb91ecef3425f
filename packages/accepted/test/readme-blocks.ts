// The TypeScript code blocks of the README (```ts fences), for the tests that compile them
// as written: readme.test.ts against the workspace's sources, pack.test.ts against the packed
// packages.
import fs from 'node:fs';
import path from 'node:path';

export const repoRoot = path.resolve(import.meta.dirname, '../../..');

export interface CodeBlock {
  /** The Markdown file, relative to the repository's root. */
  file: string;
  /** The line of the block's first line of code, from 1. */
  line: number;
  code: string;
}

/** Every ```ts block of one Markdown file of the repository. */
export function typeScriptBlocks(file: string): CodeBlock[] {
  const lines = fs.readFileSync(path.join(repoRoot, file), 'utf8').split('\n');
  const blocks: CodeBlock[] = [];
  let open: CodeBlock | undefined;
  lines.forEach((text, index) => {
    if (open) {
      if (/^```\s*$/.test(text)) {
        blocks.push(open);
        open = undefined;
      } else {
        open.code += `${text}\n`;
      }
    } else if (/^```(ts|typescript)\s*$/.test(text)) {
      open = { file, line: index + 2, code: '' };
    }
  });
  return blocks;
}
