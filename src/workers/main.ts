/** Worker process: `npm run worker`. Runs order workflows and their activities until SIGINT/SIGTERM. */
import { ConfigError, loadConfigOrExit, startupWarnings } from '../config';
import { createDb } from '../db/knex';
import { createLogger } from '../observability/logger';
import { createTracing } from '../observability/tracing';
import { createProviders } from '../providers';
import { connectTemporal, connectWorkerTemporal, ensureSearchAttributes } from '../temporal/connection';
import { startWorkerTelemetry } from './telemetry';
import { createWorker } from './worker';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger({ level: config.logLevel, format: config.logFormat, name: 'payflow-worker' });
  for (const warning of startupWarnings(config)) logger.warn(warning.fields, warning.message);
  try {
    const metricsServer = await startWorkerTelemetry(config, logger);
    const tracing = createTracing(config, 'payflow-worker');
    const db = createDb(config.databaseUrl, { poolMax: 20 });
    const client = await connectTemporal(config);
    await ensureSearchAttributes(client);
    await client.connection.close();
    // A prebuilt bundle (WORKFLOW_BUNDLE_PATH) so restarts skip bundling.
    const bundlePath = config.workflowBundlePath;
    const connection = await connectWorkerTemporal(config);
    const worker = await createWorker({
      config,
      connection,
      db,
      providers: createProviders(config, { db }),
      workflows: bundlePath ? { workflowBundle: { codePath: bundlePath } } : undefined,
      tracing,
    });
    // Started by a supervising process (soak, bench) over IPC: never outlive it.
    if (process.connected) process.once('disconnect', () => worker.shutdown());
    logger.info(
      { taskQueue: config.taskQueue, temporalAddress: config.temporalAddress, tracing: tracing?.serviceName ?? 'off' },
      `worker polling task queue "${config.taskQueue}"`,
    );
    await worker.run(); // resolves after SIGINT/SIGTERM (the SDK installs the handlers) once in-flight tasks finish
    // The last native connection closed shuts the Temporal runtime down (and its log forwarding), so the process can
    // exit.
    await connection.close();
    await db.destroy();
    await tracing?.shutdown();
    metricsServer?.close();
    logger.info('worker stopped');
  } catch (err) {
    logger.fatal({ err }, 'worker failed');
    process.exit(1);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof ConfigError ? err.message : `[worker] ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
