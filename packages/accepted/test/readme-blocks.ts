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

/** A fenced code block of a Markdown file, with the heading it stands under. */
export interface FencedBlock {
  /** The fence's info string (`ts`, `json`, `sh`), or '' for a plain fence. */
  lang: string;
  /** The line of the block's first line of code, from 1. */
  line: number;
  text: string;
  /** The heading the block is under (the nearest one above it), or ''. */
  heading: string;
}

/** The fenced code blocks of a Markdown file of the repository; throws on an unclosed one. */
export function fencedBlocks(file: string): FencedBlock[] {
  const lines = fs.readFileSync(path.join(repoRoot, file), 'utf8').split('\n');
  const blocks: FencedBlock[] = [];
  let open: FencedBlock | undefined;
  let heading = '';
  lines.forEach((text, index) => {
    if (open) {
      if (/^```\s*$/.test(text)) {
        blocks.push(open);
        open = undefined;
      } else {
        open.text += `${text}\n`;
      }
      return;
    }
    const fence = /^```(\S*)\s*$/.exec(text);
    if (fence) {
      open = { lang: fence[1] ?? '', line: index + 2, text: '', heading };
      return;
    }
    const title = /^#{1,6}\s+(.*)$/.exec(text);
    if (title) heading = (title[1] ?? '').trim();
  });
  if (open) throw new Error(`${file}:${open.line - 1}: a code block is never closed`);
  return blocks;
}

/** Every ```ts block of one Markdown file of the repository. */
export function typeScriptBlocks(file: string): CodeBlock[] {
  return fencedBlocks(file)
    .filter((block) => block.lang === 'ts' || block.lang === 'typescript')
    .map((block) => ({ file, line: block.line, code: block.text }));
}
