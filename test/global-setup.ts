/**
 * Jest global setup: provisions what the suites talk to, with visible progress and outside any test timeout:
 * the Temporal CLI (found or built), a Temporal dev server (reused when one listens, else started in memory),
 * a fresh MySQL test database with migrations, one workflow bundle shared by every suite, and a Chromium for
 * the waiting-page browser tests (found, or installed from Debian's packages).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { connectTemporal, ensureSearchAttributes } from '../src/temporal/connection';
import { createDb, migrateLatest } from '../src/db/knex';
import { ensureChromium } from '../tools/chromium';
import { ensureTemporalCli, isListening, startDevServer } from '../tools/temporal-cli';
import { workflowInterceptorModules } from '../src/workers/workflow-modules';
import { TEST_ENV, testBundlePath } from './support/env';

export default async function globalSetup(): Promise<void> {
  const log = (line: string) => process.stdout.write(`\n[test-setup] ${line}`);
  const env = TEST_ENV;

  const mysqlHost = new URL(env.databaseUrl);
  if (!(await isListening(`${mysqlHost.hostname}:${mysqlHost.port || 3306}`))) {
    throw new Error(
      `MySQL is not reachable at ${new URL(env.databaseUrl).host}; start MariaDB (see README) and run again`,
    );
  }
  log(`MySQL: recreating test database ${env.databaseUrl}`);
  const url = new URL(env.databaseUrl);
  const database = url.pathname.slice(1);
  url.pathname = '/mysql';
  const admin = createDb(url.toString(), { poolMax: 1 });
  await admin.raw(`DROP DATABASE IF EXISTS \`${database}\``);
  await admin.destroy();
  const applied = await migrateLatest(env.databaseUrl);
  log(`MySQL: applied ${applied.join(', ')}`);

  if (await isListening(env.temporalAddress)) {
    log(`Temporal: reusing the server on ${env.temporalAddress}`);
  } else {
    const binary = ensureTemporalCli(log);
    log(`Temporal: starting an in-memory dev server on ${env.temporalAddress} (${binary})`);
    const child = await startDevServer(
      binary,
      { address: env.temporalAddress, namespace: env.namespace, headless: true, logLevel: 'error' },
      'ignore',
    );
    (globalThis as { __temporalDevServer?: unknown }).__temporalDevServer = child;
  }
  const client = await connectTemporal({ temporalAddress: env.temporalAddress, temporalNamespace: env.namespace });
  await ensureSearchAttributes(client);
  await client.connection.close();

  log('Bundling workflow code once for all suites');
  const { code } = await bundleWorkflowCode({
    workflowsPath: require.resolve('../src/workflows'),
    // The log context (order id on workflow and activity log lines); tracing suites bundle their own with OTel's.
    workflowInterceptorModules: workflowInterceptorModules({ tracing: false }),
    logger: { trace() {}, debug() {}, info() {}, warn() {}, error: console.error, log() {} } as never,
  });
  mkdirSync(join(testBundlePath(), '..'), { recursive: true });
  writeFileSync(testBundlePath(), code);
  const chromiumPath = ensureChromium(log);
  log(`Chromium: ${chromiumPath}`);
  writeFileSync(join(testBundlePath(), '..', 'chromium-path'), chromiumPath);
  log('ready\n');
}
