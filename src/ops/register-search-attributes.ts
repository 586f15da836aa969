/**
 * Sets up the namespace on a Temporal server not started by our tooling (docker compose's `migrate` service, a
 * self-hosted cluster): registers TEMPORAL_NAMESPACE when missing (a self-hosted server creates none), then the
 * project's search attributes, with retry (src/ops/temporal-namespace.ts). The same setup `npm start -- --cluster`
 * runs.
 */
import { loadConfigOrExit } from '../config';
import { ensureNamespace } from './temporal-namespace';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  await ensureNamespace(config, { timeoutMs: 120_000, log: (line) => console.log(`[namespace] ${line}`) });
}

main().catch((err: unknown) => {
  console.error(`[namespace] ${(err as Error).message}`);
  process.exit(1);
});
