/** Jest: SWC transpiles TypeScript (type checking is `npm run typecheck`); suites run against real services. */
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  // The soak and the cluster suite run in passes of their own (npm run test:soak, npm run test:cluster) so their load
  // does not disturb other suites' timing.
  testPathIgnorePatterns: ['/node_modules/', '/test/soak\\.test\\.ts$', '/test/cluster\\.test\\.ts$'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022', parser: { syntax: 'typescript' } } }] },
  globalSetup: '<rootDir>/test/global-setup.ts',
  globalTeardown: '<rootDir>/test/global-teardown.ts',
  testTimeout: 60_000,
  maxWorkers: 2,
  // The Temporal native runtime can keep a handle alive after workers shut down; never hang CI on it.
  forceExit: true,
  verbose: true,
};
