/** Registers the project's search attributes on a Temporal server not started by our tooling (e.g. docker compose). */
import { loadConfigOrExit } from '../config';
import { connectTemporal, ensureSearchAttributes } from '../temporal/connection';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const client = await connectTemporal(config);
  await ensureSearchAttributes(client);
  await client.connection.close();
  console.log(`search attributes registered in namespace ${config.temporalNamespace}`);
}

main().catch((err: unknown) => {
  console.error(`[search-attributes] ${(err as Error).message}`);
  process.exit(1);
});
