/** Prometheus metrics of the HTTP service; one registry per app instance so tests can run several. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * How many bill days back `payflow_reconciliation_open_differences` looks (a month of daily runs); each day is a series of
 * its own (label bill_date), so the gauge has at most about 32 days x 6 classes series per provider.
 */
export const OPEN_DIFFERENCE_DAYS = 31;

/** Creates the registry and the service's metrics. */
export function createMetrics(options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'payflow_' });
  return {
    registry,
    httpDuration: new Histogram({
      name: 'payflow_http_request_duration_seconds',
      help: 'HTTP request duration by route and status',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    ordersCreated: new Counter({
      name: 'payflow_orders_created_total',
      help: 'POST /orders outcomes',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    notifications: new Counter({
      name: 'payflow_notifications_received_total',
      help: 'Provider notifications by outcome (accepted, duplicate, rejected)',
      labelNames: ['provider', 'outcome'],
      registers: [registry],
    }),
    signatureRejected: new Counter({
      name: 'payflow_notification_rejected_total',
      help: 'Notifications refused before storage, by reason',
      labelNames: ['provider', 'reason'],
      registers: [registry],
    }),
    notificationsRefused: new Counter({
      name: 'payflow_notifications_cross_provider_total',
      help: "Verified notifications refused because their provider is not the order's payment provider, by where they were caught",
      labelNames: ['provider', 'reason', 'where'],
      registers: [registry],
    }),
    refundsFailed: new Counter({
      name: 'payflow_refunds_failed_total',
      help: 'Refunds a provider reported failed or closed after accepting them (WeChat REFUND.ABNORMAL/CLOSED, Stripe refund failed/canceled): the local refund became FAILED and its order NEEDS_REVIEW; the buyer has not got the money',
      labelNames: ['provider'],
      registers: [registry],
    }),
    orphanReservationsReleased: new Counter({
      name: 'payflow_orphan_reservations_released_total',
      help: 'Orders whose pre-start stock reservation no running workflow owned, released by the sweeper',
      registers: [registry],
    }),
    keyProbeFailures: new Counter({
      name: 'payflow_key_probe_failures_total',
      help: 'Batched Idempotency-Key probes that could not be read; their buyers took the full reads instead',
      registers: [registry],
    }),
    inboxSignalFailures: new Counter({
      name: 'payflow_inbox_signal_failures_total',
      help: 'Signals that failed and will be retried',
      registers: [registry],
    }),
    inboxRouted: new Counter({
      name: 'payflow_inbox_routed_total',
      help: 'Inbox notifications by destination',
      labelNames: ['destination'],
      registers: [registry],
    }),
    inboxBacklog: new Gauge({
      name: 'payflow_inbox_backlog',
      help: 'Notifications stored but not yet signalled',
      registers: [registry],
    }),
    outboxDelivered: new Counter({
      name: 'payflow_outbox_delivered_total',
      help: 'Outbox messages the relay delivered (2xx from OUTBOX_WEBHOOK_URL), by topic',
      labelNames: ['topic'],
      registers: [registry],
    }),
    outboxDeliveryFailures: new Counter({
      name: 'payflow_outbox_delivery_failures_total',
      help: 'Outbox deliveries that failed and will be retried, by topic',
      labelNames: ['topic'],
      registers: [registry],
    }),
    outboxBacklog: new Gauge({
      name: 'payflow_outbox_backlog',
      help: 'Outbox messages not yet delivered (read from MySQL at scrape time)',
      registers: [registry],
    }),
    outboxOldestUnpublished: new Gauge({
      name: 'payflow_outbox_oldest_unpublished_seconds',
      help: 'Age of the oldest undelivered outbox message, 0 when none (read from MySQL at scrape time)',
      registers: [registry],
    }),
    ordersInReview: new Gauge({
      name: 'payflow_orders_in_review',
      help: 'Orders in NEEDS_REVIEW (read from MySQL at scrape time)',
      registers: [registry],
    }),
    ordersOverdue: new Gauge({
      name: 'payflow_orders_overdue',
      help: 'Orders still AWAITING_PAYMENT 30 minutes after their payment deadline (or an hour after creation with none): no running workflow is closing them (read from MySQL at scrape time)',
      registers: [registry],
    }),
    ordersStuck: new Gauge({
      name: 'payflow_orders_stuck',
      help: 'Running order workflows marked Stuck: a confirm, release or return failed 5 times and keeps retrying (Temporal visibility at scrape time)',
      registers: [registry],
    }),
    reconciliationDifferences: new Gauge({
      name: 'payflow_reconciliation_differences',
      help: 'Lines per class in the latest completed reconciliation run of each provider (MATCHED included)',
      labelNames: ['provider', 'class'],
      registers: [registry],
    }),
    reconciliationOpenDifferences: new Gauge({
      name: 'payflow_reconciliation_open_differences',
      help: `Unresolved differences per provider, bill day and class (MATCHED left out) over the last ${OPEN_DIFFERENCE_DAYS} bill days, each day as its latest completed run found it: a difference stays until an operator resolves it (POST /ops/reconciliations/:id/items/:itemId/resolution) or a re-run of its day shows it gone`,
      labelNames: ['provider', 'bill_date', 'class'],
      registers: [registry],
    }),
    reconciliationFailedDays: new Gauge({
      name: 'payflow_reconciliation_failed_days',
      help: `Bill days of the last ${OPEN_DIFFERENCE_DAYS} whose latest reconciliation run FAILED: not reconciled at all (each daily firing runs the week's again; older ones need an operator's re-run)`,
      labelNames: ['provider'],
      registers: [registry],
    }),
    reconciliationScheduleReady: new Gauge({
      name: 'payflow_reconciliation_schedule_ready',
      help: 'Whether the daily reconciliation Schedule of each provider exists (1) or its creation keeps failing and is retried (0); absent when RECONCILIATION_SCHEDULE=off',
      labelNames: ['provider'],
      registers: [registry],
    }),
    reconciliationLastSuccess: new Gauge({
      name: 'payflow_reconciliation_last_success_timestamp_seconds',
      help: 'When the latest reconciliation run of each provider completed',
      labelNames: ['provider'],
      registers: [registry],
    }),
  };
}

/** The service's metrics. */
export type Metrics = ReturnType<typeof createMetrics>;
