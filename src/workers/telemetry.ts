/** Worker process telemetry: the Temporal SDK's Prometheus exporter and the worker's own /metrics (npm run worker only). */
import type { Server } from 'node:http';
import { Runtime } from '@temporalio/worker';
import { serveWorkerMetrics } from './metrics';

/**
 * For `npm run worker`: installs the Temporal SDK's Prometheus exporter (temporal_* metrics: workflow task
 * failures, schedule-to-start latency, slots) and serves the worker registry. Must run before any connection.
 */
export async function startWorkerTelemetry(config: { host: string; workerMetricsPort: number; temporalMetricsPort: number }): Promise<Server | undefined> {
  if (config.temporalMetricsPort) {
    Runtime.install({
      telemetryOptions: {
        metrics: { prometheus: { bindAddress: `${config.host}:${config.temporalMetricsPort}`, countersTotalSuffix: true, useSecondsForDurations: true } },
      },
    });
  }
  return config.workerMetricsPort ? serveWorkerMetrics(config.host, config.workerMetricsPort) : undefined;
}
