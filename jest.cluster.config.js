/**
 * Jest for the cluster suite (`npm run test:cluster`): the production topology on a self-hosted Temporal server on
 * PostgreSQL, in a pass of its own (its own global setup builds the server; nothing of the main pass's set-up, so it
 * never touches payflow_test or the dev server).
 */
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  testMatch: ['**/test/cluster.test.ts'],
  testPathIgnorePatterns: ['/node_modules/'],
  globalSetup: '<rootDir>/test/cluster-global-setup.ts',
  globalTeardown: undefined,
  maxWorkers: 1,
};
