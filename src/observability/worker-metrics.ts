/**
 * The worker's Prometheus metrics (prom-client): retries per activity (a confirm that keeps retrying is a stuck
 * confirm), failures by type, and orders settled with how their payment was learned (callback, query, close, or a
 * reconciliation repair). The worker records them (src/workers/metrics.ts) and serves them; when the API runs in the
 * same process (npm start, tests), its /metrics includes them too, which is why they live here and not with the worker.
 */
import { Counter, Registry } from 'prom-client';

/** The worker's registry: one per process, shared by every worker in it. */
export const workerRegistry = new Registry();

/** The worker's metrics. */
export const workerMetrics = {
  activityRetries: new Counter({
    name: 'payflow_activity_retries_total',
    help: 'Activity attempts after the first, by activity (confirmStock / transitionOrder retrying = a stuck confirm)',
    labelNames: ['activity'],
    registers: [workerRegistry],
  }),
  activityFailures: new Counter({
    name: 'payflow_activity_failures_total',
    help: 'Failed activity attempts, by activity and failure type',
    labelNames: ['activity', 'type'],
    registers: [workerRegistry],
  }),
  ordersSettled: new Counter({
    name: 'payflow_orders_settled_total',
    help: 'Order status changes made by the worker, by new status and how the payment was learned (callback, query, close, reconciliation, none)',
    labelNames: ['status', 'via'],
    registers: [workerRegistry],
  }),
};
