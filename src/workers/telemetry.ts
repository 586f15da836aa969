/**
 * The Temporal SDK runtime of a process (installed once, before any connection): its logger (our pino logger,
 * so SDK, activity and workflow lines are JSON lines like the API's) and, for `npm run worker`, the SDK's
 * Prometheus exporter; plus the worker's own /metrics.
 */
import type { Server } from 'node:http';
import { createServer } from 'node:net';
import { Runtime } from '@temporalio/worker';
import { type Logger, TemporalLogger } from '../observability/logger';
import { serveWorkerMetrics } from './metrics';

/** Options of installTemporalRuntime. */
export interface TemporalRuntimeOptions {
  /** Receives the SDK's lines, activity logs and workflow logs (through the SDK's logger sink). */
  logger: Logger | TemporalLogger;
  /** host:port of the SDK's Prometheus exporter (temporal_* metrics); undefined = not installed. */
  prometheusBindAddress?: string;
}

/**
 * `Runtime.install` for the whole process, exactly once and before any NativeConnection or Worker exists (the
 * SDK refuses a second install). The native core's own warnings are forwarded to the same logger.
 */
export function installTemporalRuntime(options: TemporalRuntimeOptions): TemporalLogger {
  const logger = options.logger instanceof TemporalLogger ? options.logger : new TemporalLogger(options.logger);
  Runtime.install({
    logger,
    telemetryOptions: {
      logging: { filter: { core: 'WARN', other: 'ERROR' }, forward: {} },
      ...(options.prometheusBindAddress
        ? {
            metrics: {
              prometheus: {
                bindAddress: options.prometheusBindAddress,
                countersTotalSuffix: true,
                useSecondsForDurations: true,
              },
            },
          }
        : {}),
    },
  });
  return logger;
}

/** True when nothing listens on host:port right now (several workers on one host must be given different ports). */
function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, host, () => probe.close(() => resolve(true)));
  });
}

/**
 * For `npm run worker`: installs the Temporal runtime with the process logger and the SDK's Prometheus exporter
 * (temporal_* metrics: workflow task failures, schedule-to-start latency, slots), and serves the worker registry.
 * Must run before any connection. A port already taken (another worker on this host) costs that endpoint with a
 * warning, never the worker.
 */
export async function startWorkerTelemetry(
  config: { host: string; workerMetricsPort: number; temporalMetricsPort: number },
  logger: Logger,
): Promise<Server | undefined> {
  const warn = (what: string, port: number) =>
    logger.warn(
      { host: config.host, port },
      `${what} not served: ${config.host}:${port} is taken (another worker on this host?); give each worker its own port`,
    );
  let prometheusBindAddress: string | undefined;
  if (config.temporalMetricsPort) {
    if (await portFree(config.host, config.temporalMetricsPort))
      prometheusBindAddress = `${config.host}:${config.temporalMetricsPort}`;
    else warn('Temporal SDK metrics (TEMPORAL_METRICS_PORT)', config.temporalMetricsPort);
  }
  installTemporalRuntime({ logger, prometheusBindAddress });
  if (!config.workerMetricsPort) return undefined;
  try {
    return await serveWorkerMetrics(config.host, config.workerMetricsPort);
  } catch (err) {
    if ((err as { code?: string }).code !== 'EADDRINUSE') throw err;
    warn('worker metrics (WORKER_METRICS_PORT)', config.workerMetricsPort);
    return undefined;
  }
}
