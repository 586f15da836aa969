/** API process: `npm run api`. Serves the order API and callbacks on PORT. */
import { loadConfigOrExit } from '../config';
import { createDb } from '../db/knex';
import { createProviders } from '../providers';
import { buildApi } from './app';
import { connectTemporal, ensureSearchAttributes } from './temporal';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const db = createDb(config.databaseUrl, { poolMax: 20 });
  const client = await connectTemporal(config);
  await ensureSearchAttributes(client);
  const api = buildApi({ config, db, client, providers: createProviders(config, { db }) });
  await api.app.listen({ host: config.host, port: config.port });
  const stop = async () => {
    await api.close();
    await client.connection.close();
    await db.destroy();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
  if (process.connected) process.once('disconnect', () => void stop());
}

main().catch((err: unknown) => {
  console.error(`[api] ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
