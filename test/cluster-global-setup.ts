/**
 * Global setup of the cluster suite: the Temporal server, its SQL tool and the Web UI server found in the cache or
 * built once from the Go module proxy, with go's progress on the terminal, outside any test's timeout (first build
 * about 4 minutes on 2 cores, then seconds).
 */
import { ensureClusterBinaries } from '../src/tools/temporal-cluster';

export default function clusterGlobalSetup(): void {
  const started = Date.now();
  const bin = ensureClusterBinaries((line) => process.stdout.write(`\n[cluster-setup] ${line}`));
  process.stdout.write(`\n[cluster-setup] server, SQL tool and Web UI server ready in ${Math.round((Date.now() - started) / 1000)}s (${bin.serverRoot})\n`);
}
