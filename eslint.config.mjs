// Lint: type-aware rules everywhere; workflow code additionally banned from anything non-deterministic.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

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
            ...nodeBuiltins.map((name) => ({ name, message: 'Workflow code must be deterministic: no Node built-ins.' })),
            ...['knex', 'mysql2', 'fastify', 'pino', 'prom-client', '@temporalio/client', '@temporalio/worker', '@temporalio/activity'].map(
              (name) => ({ name, message: 'Workflow code must not do I/O; call an activity instead.' }),
            ),
          ],
          patterns: [
            { group: ['**/activities', '**/activities/*'], allowTypeImports: true, message: 'Import activities as types only.' },
            { group: ['**/db/*', '**/client/*', '**/providers/*', '**/sandbox-provider/*', '**/config'], message: 'Workflow code must not reach I/O modules.' },
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
        { object: 'Math', property: 'random', message: 'Math.random is replaced deterministically; prefer uuid4() from @temporalio/workflow for ids.' },
      ],
    },
  },
);
