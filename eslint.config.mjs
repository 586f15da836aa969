// Lint: type-aware rules everywhere; workflow code additionally banned from anything non-deterministic; each process's
// folder (client = the API, workers, activities = the worker's steps) kept out of the others and of the shared modules.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

/** A relative import of a project folder at any depth ('../activities', '../../activities/stock'); never a package. */
const folder = (name) => `^(\\.{1,2}/)+(.+/)?${name}(/.*)?$`;
const activities = {
  regex: folder('activities'),
  message:
    "Activities are the worker's steps: share code through src/db, src/temporal, src/reconciliation or src/providers instead.",
};
const workers = {
  regex: folder('workers'),
  message:
    "The worker process is nobody's library: move what both need to a shared module (src/temporal, src/observability, ...).",
};
const tools = {
  regex: folder('tools'),
  message: 'tools/ holds the development tools, outside the production image: production code never imports them.',
};
const client = {
  regex: folder('client'),
  message: "The API is nobody's library: move what both need to a shared module (src/temporal, src/db, ...).",
};

export default tseslint.config(
  { ignores: ['node_modules', 'data', '.cache', 'coverage', 'reports', '**/*.js', '**/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    files: ['src/workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            ...nodeBuiltins.map((name) => ({
              name,
              message: 'Workflow code must be deterministic: no Node built-ins.',
            })),
            ...[
              'knex',
              'mysql2',
              'fastify',
              'pino',
              'prom-client',
              '@temporalio/client',
              '@temporalio/worker',
              '@temporalio/activity',
            ].map((name) => ({ name, message: 'Workflow code must not do I/O; call an activity instead.' })),
          ],
          patterns: [
            {
              group: ['**/activities', '**/activities/*'],
              allowTypeImports: true,
              message: 'Import activities as types only.',
            },
            {
              // Every module a workflow imports is evaluated again for each cached workflow (test/workflow-bundle.test.ts).
              group: [
                'zod',
                '**/contracts/order',
                '**/contracts/reconciliation',
                '**/contracts/sandbox',
                '**/contracts/providers',
                '**/shared/money',
              ],
              allowTypeImports: true,
              message:
                'Workflow code imports light contracts only (contracts/order-workflow, bill-days, failures): these pull zod into every cached workflow.',
            },
            {
              group: [
                '**/tools/*',
                '**/db/*',
                '**/client/*',
                '**/workers/*',
                '**/providers/*',
                '**/sandbox-provider/*',
                '**/temporal/*',
                '**/reconciliation/*',
                '**/observability/*',
                '**/config',
              ],
              message: 'Workflow code must not reach I/O modules.',
            },
          ],
        },
      ],
      'no-restricted-globals': [
        'error',
        { name: 'setTimeout', message: 'Use sleep() from @temporalio/workflow.' },
        { name: 'setInterval', message: 'Use sleep() in a loop.' },
        { name: 'fetch', message: 'Network I/O belongs in activities.' },
        { name: 'process', message: 'Workflows must not read the environment.' },
      ],
      'no-restricted-properties': [
        'error',
        {
          object: 'Math',
          property: 'random',
          message: 'Math.random is replaced deterministically; prefer uuid4() from @temporalio/workflow for ids.',
        },
      ],
    },
  },
  {
    // The API: no worker code. Workflows only as types (the client names the workflow function so arguments type-check).
    files: ['src/client/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            activities,
            workers,
            tools,
            { regex: folder('workflows'), allowTypeImports: true, message: 'The API imports workflows as types only.' },
          ],
        },
      ],
    },
  },
  {
    files: ['src/workers/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [client, tools] }] },
  },
  {
    // Production code never depends on the development tools; the folders below repeat this in their own rule.
    files: ['src/{activities,ops,sandbox-provider}/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [tools] }] },
  },
  {
    // Modules every process shares: they import none of the process folders.
    files: ['src/{contracts,db,observability,providers,reconciliation,shared,temporal}/**/*.ts', 'src/config.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [activities, workers, client, tools] }] },
  },
);
