/** Worker process telemetry: the Temporal SDK's Prometheus exporter and the worker's own /metrics (npm run worker only). */
import type { Server } from 'node:http';
import { createServer } from 'node:net';
import { Runtime } from '@temporalio/worker';
import { serveWorkerMetrics } from './metrics';

/** True when nothing listens on host:port right now (several workers on one host must be given different ports). */
function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, host, () => probe.close(() => resolve(true)));
  });
}

/**
 * For `npm run worker`: installs the Temporal SDK's Prometheus exporter (temporal_* metrics: workflow task
 * failures, schedule-to-start latency, slots) and serves the worker registry. Must run before any connection.
 * A port already taken (another worker on this host) costs that endpoint with a warning, never the worker.
 */
export async function startWorkerTelemetry(config: { host: string; workerMetricsPort: number; temporalMetricsPort: number }): Promise<Server | undefined> {
  const warn = (what: string, port: number) =>
    console.warn(`[worker] ${what} not served: ${config.host}:${port} is taken (another worker on this host?); give each worker its own port`);
  if (config.temporalMetricsPort) {
    if (await portFree(config.host, config.temporalMetricsPort)) {
      Runtime.install({
        telemetryOptions: {
          metrics: { prometheus: { bindAddress: `${config.host}:${config.temporalMetricsPort}`, countersTotalSuffix: true, useSecondsForDurations: true } },
        },
      });
    } else warn('Temporal SDK metrics (TEMPORAL_METRICS_PORT)', config.temporalMetricsPort);
  }
  if (!config.workerMetricsPort) return undefined;
  try {
    return await serveWorkerMetrics(config.host, config.workerMetricsPort);
  } catch (err) {
    if ((err as { code?: string }).code !== 'EADDRINUSE') throw err;
    warn('worker metrics (WORKER_METRICS_PORT)', config.workerMetricsPort);
    return undefined;
  }
}
