/**
 * Recording of the worker's Prometheus metrics (declared in src/observability/worker-metrics.ts) by an activity
 * interceptor, so that activity code stays free of metrics plumbing, and the worker's own /metrics server.
 * `npm run worker` serves them on WORKER_METRICS_PORT and installs the Temporal SDK's own Prometheus exporter on
 * TEMPORAL_METRICS_PORT.
 */
import { createServer, type Server } from 'node:http';
import { ApplicationFailure } from '@temporalio/common';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import { collectDefaultMetrics } from 'prom-client';
import type { PaymentEvidence } from '../contracts/order';
import { workerMetrics, workerRegistry } from '../observability/worker-metrics';

/** How the payment behind a status change was learned; reconciliation repairs arrive as signals with a `recon-` id. */
function via(payment: PaymentEvidence | undefined): string {
  if (!payment) return 'none';
  if (payment.notificationId?.startsWith('recon-')) return 'reconciliation';
  return payment.source;
}

/** The activity interceptor that records the worker's metrics. */
export const metricsInterceptor: ActivityInterceptorsFactory = (ctx) => ({
  inbound: {
    async execute(input, next) {
      const activity = ctx.info.activityType;
      if (ctx.info.attempt > 1) workerMetrics.activityRetries.inc({ activity });
      try {
        const result = await next(input);
        // A status change: transitionOrder itself, or a merged step of the order workflow that ends with one.
        const [arg] = input.args as [
          | ({ to?: string; payment?: PaymentEvidence } & { transition?: { to: string; payment?: PaymentEvidence } })
          | undefined,
        ];
        const transition = activity === 'transitionOrder' ? arg : arg?.transition;
        if (transition?.to && (result as { changed?: boolean } | undefined)?.changed)
          workerMetrics.ordersSettled.inc({ status: transition.to, via: via(transition.payment) });
        return result;
      } catch (err) {
        const type =
          err instanceof ApplicationFailure
            ? (err.type ?? 'ApplicationFailure')
            : err instanceof Error
              ? err.name
              : 'unknown';
        workerMetrics.activityFailures.inc({ activity, type });
        throw err;
      }
    },
  },
});

/** Serves the worker registry (with Node process metrics) at `http://<host>:<port>/metrics`. */
export async function serveWorkerMetrics(host: string, port: number): Promise<Server> {
  collectDefaultMetrics({ register: workerRegistry, prefix: 'payflow_worker_' });
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    workerRegistry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': workerRegistry.contentType }).end(text),
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
