// Mutation testing with StrykerJS (docs/testing.md): `npm run mutation` mutates the store
// rules, the engine's worker and backoff and the webhook dispatch, and runs, for each mutant,
// the test files whose run reached it (coverage per test file). Narrow a run with
// `npm run mutation -- --mutate <file>` and MUTATION_TESTS=<comma list of test files>;
// MUTATION_REPORT=<name> writes the reports as reports/mutation/<name>.json and .html.
const REPORT = `reports/mutation/${process.env.MUTATION_REPORT ?? 'mutation'}`;
const TESTS = [
  'packages/accepted/test/store-rules.test.ts',
  'packages/accepted/test/sqlite-store.test.ts',
  'packages/accepted/test/relay.test.ts',
  'packages/accepted/test/engine.test.ts',
  'packages/accepted/test/engine-defects.test.ts',
  'packages/accepted/test/properties.test.ts',
  'packages/accepted/test/webhooks.test.ts',
];

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'tap',
  tap: {
    testFiles: process.env.MUTATION_TESTS ? process.env.MUTATION_TESTS.split(',') : TESTS,
    // node:test run in-process (no --test: it would spawn a child without Stryker's hook).
    nodeArgs: ['-r', '{{hookFile}}', '--import', 'tsx', '--test-reporter=tap', '{{testFile}}'],
    forceBail: true,
  },
  checkers: ['typescript'],
  tsconfigFile: 'tsconfig.json',
  typescriptChecker: { prioritizePerformanceOverAccuracy: true },
  mutate: [
    'packages/accepted/src/store/rules.ts',
    'packages/accepted/src/store/consumer-rules.ts',
    'packages/accepted/src/engine/backoff.ts',
    'packages/accepted/src/engine/worker.ts',
    'packages/accepted/src/webhooks/service.ts',
  ],
  ignorePatterns: ['.cache', 'dist', '.data', 'reports'],
  coverageAnalysis: 'perTest',
  ignoreStatic: true,
  concurrency: 2,
  timeoutMS: 60_000,
  timeoutFactor: 2,
  reporters: ['clear-text', 'progress-append-only', 'json', 'html'],
  jsonReporter: { fileName: `${REPORT}.json` },
  htmlReporter: { fileName: `${REPORT}.html` },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};
