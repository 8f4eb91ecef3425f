// Type-aware lint for the whole repository. Core modules never import adapters:
// the `no-restricted-imports` blocks below enforce the direction of dependencies.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      '**/node_modules/**',
      '**/dist/**',
      '.cache/**',
      'eslint.config.js',
      'scripts/*.mjs',
      'stryker.config.mjs',
      '.stryker-tmp*/**',
      'reports/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/no-confusing-void-expression': 'off',
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', name: ['describe', 'it', 'test', 'suite'], package: 'node:test' },
          ],
        },
      ],
    },
  },
  {
    files: ['packages/accepted/src/domain/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['../*'], message: 'domain imports nothing of ours.' }] },
      ],
    },
  },
  {
    files: ['packages/accepted/src/engine/**/*.ts', 'packages/accepted/src/store/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['**/store/sqlite/**', '**/store/postgres/**', '**/http/**', '**/cli/**'],
              message: 'Core never imports an adapter or an edge.',
            },
          ],
        },
      ],
    },
  },
  // The edges (http, stream, webhooks, and bridges to come) import the core and the wire
  // module, never one another; only the composition root (src/server) and the CLI join them.
  ...[
    ['wire', ['engine', 'store', 'http', 'stream', 'webhooks', 'server', 'cli']],
    ['stream', ['http', 'webhooks', 'server', 'cli', 'store/sqlite', 'store/postgres']],
    ['webhooks', ['http', 'stream', 'server', 'cli', 'store/sqlite', 'store/postgres']],
    ['http', ['stream', 'webhooks', 'server', 'cli', 'store/sqlite', 'store/postgres']],
  ].map(([edge, banned]) => ({
    files: [`packages/accepted/src/${edge}/**/*.ts`],
    // A subpath's entry point (`@accepted/server/http`) gathers what its users need.
    ignores: [`packages/accepted/src/${edge}/index.ts`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: banned.map((module) => `**/${module}/**`),
              message: `${edge} may import the core (domain, engine, store) and wire only.`,
            },
          ],
        },
      ],
    },
  })),
  // Browser scripts of the examples: plain JavaScript, no type information, browser globals.
  {
    files: ['examples/**/*.js'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: {
      globals: {
        window: 'readonly',
        document: 'readonly',
        EventSource: 'readonly',
        FormData: 'readonly',
        fetch: 'readonly',
      },
    },
  },
  // The `accepted` launcher: plain JavaScript that runs before any build, Node.js globals.
  {
    files: ['packages/accepted/bin/*.js'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
  },
  {
    files: [
      'packages/accepted/test/**/*.ts',
      'packages/client/test/**/*.ts',
      'packages/accepted/src/store/conformance.ts',
      'bench/**/*.ts',
    ],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unnecessary-condition': 'off',
    },
  },
);
