import { Runtime } from '@temporalio/worker';

/**
 * Installs the process's Temporal runtime with a logger that prints only errors (a suite's workers would otherwise log
 * every poll and task); a runtime another suite in this process installed first is kept.
 */
export function installQuietRuntime(): void {
  try {
    Runtime.install({
      logger: {
        log() {},
        trace() {},
        debug() {},
        info() {},
        warn() {},
        error: (m: string, meta?: unknown) => console.error(m, meta),
      } as never,
    });
  } catch {
    /* already installed by another suite in this process */
  }
}
