/**
 * Global setup of the cluster suite: the Temporal server, its SQL tool and the Web UI server found in the cache or
 * built once from the Go module proxy, with go's progress on the terminal, outside any test's timeout (first build
 * about 4 minutes on 2 cores, then seconds).
 */
import { isListening } from '../tools/temporal-cli';
import { ensureClusterBinaries, postgresFromEnv } from '../tools/temporal-cluster';

export default async function clusterGlobalSetup(): Promise<void> {
  const started = Date.now();
  const pg = postgresFromEnv();
  if (!(await isListening(`${pg.host}:${pg.port}`))) {
    throw new Error(
      `PostgreSQL is not reachable at ${pg.host}:${pg.port} (TEMPORAL_POSTGRES_URL); start it (pg_ctlcluster --skip-systemctl-redirect 15 main start) and run again`,
    );
  }
  const bin = ensureClusterBinaries((line) => process.stdout.write(`\n[cluster-setup] ${line}`));
  process.stdout.write(
    `\n[cluster-setup] server, SQL tool and Web UI server ready in ${Math.round((Date.now() - started) / 1000)}s (${bin.serverRoot})\n`,
  );
}
