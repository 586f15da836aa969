/** Where the test suites find their services; every value can be overridden from the environment. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Test service addresses: a separate database from development, the dev server on its usual port by default. */
export const TEST_ENV = {
  databaseUrl: process.env.TEST_DATABASE_URL ?? 'mysql://root@127.0.0.1:3306/payflow_test',
  temporalAddress: process.env.TEST_TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
  namespace: process.env.TEST_TEMPORAL_NAMESPACE ?? 'default',
};

/** The workflow bundle global setup writes once. */
export function testBundlePath(): string {
  return join(__dirname, '..', '..', '.cache', 'test-workflow-bundle.js');
}

/** The Chromium global setup found or installed (see src/tools/chromium.ts). */
export function testChromiumPath(): string {
  return readFileSync(join(__dirname, '..', '..', '.cache', 'chromium-path'), 'utf8').trim();
}
