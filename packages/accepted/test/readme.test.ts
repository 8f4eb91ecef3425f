// The README's TypeScript examples compile as written: each ```ts block is a module that
// imports `@accepted/server` and `@accepted/client` by name, typechecked (strict, the
// repository's compiler options) against the workspace's sources, so a renamed export or a
// changed signature fails here rather than in a reader's editor. pack.test.ts compiles the
// same blocks against the packed packages.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import ts from 'typescript';
import { repoRoot, typeScriptBlocks } from './readme-blocks.ts';

/** The files whose ```ts blocks must compile: the README and the packages' (which npm shows). */
const DOCUMENTS = ['README.md', 'packages/accepted/README.md', 'packages/client/README.md'];

/** The repository's compiler options, with the packages resolved to their sources. */
function compilerOptions(): ts.CompilerOptions {
  const file = path.join(repoRoot, 'tsconfig.base.json');
  const read = ts.readConfigFile(file, (name) => ts.sys.readFile(name));
  assert.equal(read.error, undefined);
  const config = read.config as object;
  const parsed = ts.parseJsonConfigFileContent(config, ts.sys, repoRoot, undefined, file);
  return {
    ...parsed.options,
    noEmit: true,
    // The packages' `source` export condition: their TypeScript, which imports `.ts` paths.
    customConditions: ['source'],
    allowImportingTsExtensions: true,
  };
}

describe('README', () => {
  it('every TypeScript block typechecks against the packages', () => {
    const blocks = DOCUMENTS.flatMap(typeScriptBlocks);
    assert.ok(blocks.length >= 4, 'the README has its client and library examples');
    // Each block is a module beside the README (an ES module: the root package.json says so,
    // so top-level await is allowed), served from memory.
    const virtual = new Map(
      blocks.map((block, index) => [
        path.join(repoRoot, `${block.file}.block${index}.ts`),
        { block, text: block.code },
      ]),
    );
    const options = compilerOptions();
    const base = ts.createCompilerHost(options);
    const host: ts.CompilerHost = {
      ...base,
      fileExists: (name) => virtual.has(name) || base.fileExists(name),
      readFile: (name) => virtual.get(name)?.text ?? base.readFile(name),
      getSourceFile: (name, languageVersion, ...rest) => {
        const entry = virtual.get(name);
        return entry
          ? ts.createSourceFile(name, entry.text, languageVersion)
          : base.getSourceFile(name, languageVersion, ...rest);
      },
    };
    const program = ts.createProgram([...virtual.keys()], options, host);
    const problems = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()].map(
      (diagnostic) => ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'),
    );
    for (const [name, { block }] of virtual) {
      const source = program.getSourceFile(name);
      assert.ok(source, name);
      for (const diagnostic of ts.getPreEmitDiagnostics(program, source)) {
        const { line } = source.getLineAndCharacterOfPosition(diagnostic.start ?? 0);
        const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
        problems.push(`${block.file}:${block.line + line}: TS${diagnostic.code}: ${message}`);
      }
    }
    assert.deepEqual(problems, []);
  });
});
