/** Worker process: `npm run worker`. Runs order workflows and their activities until SIGINT/SIGTERM. */
import { loadConfigOrExit } from '../config';
import { connectTemporal, ensureSearchAttributes } from '../client/temporal';
import { createDb } from '../db/knex';
import { createProviders } from '../providers';
import { startWorkerTelemetry } from './telemetry';
import { createWorker } from './worker';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const metricsServer = await startWorkerTelemetry(config);
  const db = createDb(config.databaseUrl, { poolMax: 20 });
  const client = await connectTemporal(config);
  await ensureSearchAttributes(client);
  await client.connection.close();
  // WORKFLOW_BUNDLE_PATH: a prebuilt bundle (bundleWorkflowCode) so restarts skip bundling.
  const bundlePath = process.env.WORKFLOW_BUNDLE_PATH;
  const worker = await createWorker({
    config,
    db,
    providers: createProviders(config, { db }),
    workflows: bundlePath ? { workflowBundle: { codePath: bundlePath } } : undefined,
  });
  // Started by a supervising process (soak, bench) over IPC: never outlive it.
  if (process.connected) process.once('disconnect', () => worker.shutdown());
  console.log(`[worker] polling task queue "${config.taskQueue}" on ${config.temporalAddress}`);
  await worker.run(); // resolves after SIGINT/SIGTERM (the SDK installs the handlers) once in-flight tasks finish
  await db.destroy();
  metricsServer?.close();
  console.log('[worker] stopped');
}

main().catch((err: unknown) => {
  console.error(`[worker] ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
