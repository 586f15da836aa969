/** API process: `npm run api`. Serves the order API and callbacks on PORT. */
import { ConfigError, loadConfigOrExit, startupWarnings } from '../config';
import { createDb } from '../db/knex';
import { createLogger } from '../observability/logger';
import { createTracing } from '../observability/tracing';
import { createProviders } from '../providers';
import { isTemporalUnreachable } from '../temporal/calls';
import { connectTemporal, ensureSearchAttributes } from '../temporal/connection';
import { buildApi } from './app';
import { retryInBackground } from './retry-in-background';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger({ level: config.logLevel, format: config.logFormat, name: 'payflow-api' });
  for (const warning of startupWarnings(config, { api: true })) logger.warn(warning.fields, warning.message);
  try {
    // Off (undefined) unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then a span per request, continued into Temporal.
    const tracing = createTracing(config, 'payflow-api');
    const db = createDb(config.databaseUrl, { poolMax: 20 });
    // Temporal is not needed to start: a replica restarted while Temporal is down still stores and acknowledges
    // callbacks (the inbox hands them over once Temporal answers), and the search attributes are registered in the
    // background (a server that refuses the call leaves a logged error naming the settings, not a dead API).
    const client = await connectTemporal(config, { tracing, lazy: true });
    const api = buildApi({ config, db, client, providers: createProviders(config, { db }), logger, tracing });
    await api.app.listen({ host: config.host, port: config.port });
    await api.metricsApp?.listen({ host: config.host, port: config.metricsPort });
    const attributes = retryInBackground({
      attempt: () => ensureSearchAttributes(client),
      onFailure: (err, attempt, retryInMs) => {
        // Unreachable is expected during an outage; any other answer is a setting to fix (a namespace that does not
        // exist, credentials refused, an operator API closed to this key): said plainly, at error level.
        if (isTemporalUnreachable(err))
          logger.warn(
            { err, attempt, retryInMs },
            'Temporal unreachable: search attributes not checked yet; will retry',
          );
        else
          logger.error(
            { err, attempt, retryInMs, namespace: config.temporalNamespace, address: config.temporalAddress },
            'Temporal refused the search-attribute check: check TEMPORAL_NAMESPACE and the credentials (TEMPORAL_API_KEY, TLS), or register the attributes once with src/ops/register-search-attributes.ts; will retry',
          );
      },
    });
    const stop = async () => {
      attributes.stop();
      await api.close();
      await client.connection.close();
      await db.destroy();
      await tracing?.shutdown();
      process.exit(0);
    };
    process.once('SIGINT', () => void stop());
    process.once('SIGTERM', () => void stop());
    if (process.connected) process.once('disconnect', () => void stop());
  } catch (err) {
    logger.fatal({ err }, 'API failed to start');
    process.exit(1);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof ConfigError ? err.message : `[api] ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
