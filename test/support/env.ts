/** Where the test suites find their services; every value can be overridden from the environment. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createDb, migrateLatest } from '../../src/db/knex';

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

/** The Chromium global setup found or installed (see tools/chromium.ts). */
export function testChromiumPath(): string {
  return readFileSync(join(__dirname, '..', '..', '.cache', 'chromium-path'), 'utf8').trim();
}

/**
 * The environment of a test system (in-process or child processes): the test database and dev server, its own
 * ports and task queue, test-friendly timings; `overrides` win.
 */
export function systemEnv(
  own: { apiPort: number; sandboxPort: number; taskQueue: string },
  overrides: Record<string, string> = {},
): Record<string, string> {
  return {
    DATABASE_URL: TEST_ENV.databaseUrl,
    TEMPORAL_ADDRESS: TEST_ENV.temporalAddress,
    TEMPORAL_NAMESPACE: TEST_ENV.namespace,
    TASK_QUEUE: own.taskQueue,
    PORT: String(own.apiPort),
    SANDBOX_PORT: String(own.sandboxPort),
    SANDBOX_SECRET: 'test-sandbox-secret',
    SANDBOX_NOTIFY_SCHEDULE: '0ms,300ms,600ms,1200ms,2s,3s,5s',
    ADMIN_TOKEN: 'test-admin-token',
    PAYMENT_TIMEOUT: '30s',
    QUERY_FIRST_DELAY: '1s',
    QUERY_MAX_INTERVAL: '2s',
    PROVIDER_EXPIRY_MARGIN: '30s',
    INBOX_RETRY_INTERVAL: '500ms',
    COOLING_OFF_PERIOD: '0s',
    LOG_LEVEL: 'warn',
    // Test systems must not leave daily Schedules behind on the shared dev server (reconciliation tests create their
    // own).
    RECONCILIATION_SCHEDULE: 'off',
    ...overrides,
  };
}

/**
 * A freshly migrated database of a suite's own (the test database's name + `_<suffix>`), for suites that read or
 * fingerprint whole tables, which the suites running beside them would otherwise change.
 */
export async function freshDatabase(suffix: string): Promise<string> {
  const url = new URL(TEST_ENV.databaseUrl);
  url.pathname = `${url.pathname}_${suffix}`;
  const admin = createDb(TEST_ENV.databaseUrl, { poolMax: 1 });
  try {
    await admin.raw(`DROP DATABASE IF EXISTS \`${url.pathname.slice(1)}\``);
  } finally {
    await admin.destroy();
  }
  await migrateLatest(url.toString());
  return url.toString();
}
