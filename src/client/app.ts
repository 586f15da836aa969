/** The HTTP service: order API, provider callbacks, admin, health and metrics. */
import type { Client } from '@temporalio/client';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Knex } from 'knex';
import type { Config } from '../config';
import { type Logger, createLogger } from '../observability/logger';
import type { Tracing } from '../observability/tracing';
import { workerRegistry } from '../observability/worker-metrics';
import type { ProviderRegistry } from '../providers/types';
import { acceptEmptyJsonBodies } from '../shared/http';
import { withTemporalDeadline } from '../temporal/calls';
import { OrphanReservationSweeper } from './admission';
import { installErrorHandling } from './errors';
import { NotificationInbox } from './inbox';
import { type Metrics, createMetrics } from './metrics';
import { OrderLogController, installRequestTracing } from './observability';
import { OrderService } from './orders-service';
import { OutboxRelay, webhookSink } from './outbox-relay';
import { OrderActions } from './order-actions';
import { registerAdminRoutes } from './routes/admin';
import { registerOrderActionRoutes } from './routes/order-actions';
import { registerCallbackRoutes } from './routes/callbacks';
import {
  billProviders,
  ensureReconciliationSchedules,
  keepEnsuringReconciliationSchedules,
  refreshOpsGauges,
  registerOpsRoutes,
} from './routes/ops';
import { registerOrderRoutes } from './routes/orders';
import { registerWaitPage } from './routes/wait-page';

/** Dependencies of the API. */
export interface ApiDeps {
  config: Config;
  db: Knex;
  client: Client;
  providers: ProviderRegistry;
  metrics?: Metrics;
  /**
   * The process's pino logger (shared with the worker's Temporal runtime when both run in one process); true or
   * undefined = a new one from LOG_LEVEL / LOG_FORMAT; false = no logs (tests that want quiet output).
   */
  logger?: boolean | Logger;
  /** OpenTelemetry (createTracing(config, 'payflow-api')): a span per request; undefined = off, no hooks. */
  tracing?: Tracing;
  /** Reconciliation's clock (whether a bill day has ended); default Date.now (tests inject one). */
  now?: () => number;
}

/** The built API with its background inbox processor. */
export interface Api {
  app: FastifyInstance;
  /** The /metrics listener when METRICS_PORT is set (listen on it too); undefined: /metrics is served by `app`. */
  metricsApp?: FastifyInstance;
  inbox: NotificationInbox;
  /** Delivers the outbox's messages to OUTBOX_WEBHOOK_URL; undefined when that is unset. */
  outbox?: OutboxRelay;
  /** Releases pre-start stock reservations that no running workflow owns. */
  reservations: OrphanReservationSweeper;
  orders: OrderService;
  metrics: Metrics;
  /** Stops the inbox and reservation sweeps and closes the server. */
  close(): Promise<void>;
}

/** Builds the API (routes registered, inbox sweep started); call `app.listen` to serve. */
export function buildApi(deps: ApiDeps): Api {
  const { config, db, client, providers } = deps;
  const metrics = deps.metrics ?? createMetrics();
  const logger: FastifyBaseLogger =
    deps.logger === false
      ? createLogger({ level: 'silent' })
      : typeof deps.logger === 'object'
        ? deps.logger
        : createLogger({ level: config.logLevel, format: config.logFormat, name: 'payflow-api' });
  const app = Fastify({
    loggerInstance: logger,
    // fastify's request lines, with the route's :orderId bound (src/client/observability.ts).
    logController: new OrderLogController(),
    bodyLimit: 256 * 1024,
    // On close, drop idle keep-alive connections instead of waiting for them to time out.
    forceCloseConnections: 'idle',
  });
  if (deps.tracing) installRequestTracing(app, deps.tracing);
  installErrorHandling(app);
  // Cancel, refund and escalate take an optional body; a client that sends Content-Type: application/json with none
  // must not get a 400 (the callback routes keep their own raw-body parser).
  acceptEmptyJsonBodies(app);
  app.addHook('onResponse', async (request, reply) => {
    metrics.httpDuration.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });

  const inbox = new NotificationInbox({
    db,
    client,
    taskQueue: config.taskQueue,
    logger: app.log,
    metrics,
    retryIntervalMs: config.inboxRetryIntervalMs,
    concurrency: config.inboxConcurrency,
    callTimeoutMs: config.temporalCallTimeoutMs,
    lateRecheckDelaysMs: config.lateRecheckDelaysMs,
  });
  const orders = new OrderService({
    db,
    client,
    config,
    providers,
    orderProviders: inbox.orderProviders,
    keyProbeFailed: (err, keys) => {
      metrics.keyProbeFailures.inc();
      app.log.warn({ err, keys }, 'Idempotency-Key probe failed; its buyers take the full reads');
    },
    startRefused: (err, orderId, units) =>
      app.log.error(
        { err, orderId, units, namespace: config.temporalNamespace, address: config.temporalAddress },
        'Temporal refused to start an order workflow: check TEMPORAL_NAMESPACE, the credentials (TEMPORAL_API_KEY, TLS) and the search attributes (src/ops/register-search-attributes.ts); answered 503',
      ),
  });
  registerOrderRoutes(app, orders, metrics, { token: config.shopApiToken, production: config.production });
  registerWaitPage(app, orders);
  registerOrderActionRoutes(
    app,
    new OrderActions({
      db,
      client,
      providers,
      updateTimeoutMs: config.temporalUpdateTimeoutMs,
      taskQueue: config.taskQueue,
    }),
    config.adminToken,
    config.operatorTokens,
  );
  registerCallbackRoutes(app, { db, providers, inbox, metrics });
  registerAdminRoutes(app, { db, adminToken: config.adminToken });
  registerOpsRoutes(app, { db, client, config, providers, now: deps.now });

  app.get('/healthz', async (request, reply) => {
    // Anyone can ask, so a failing dependency is only named: what it said (a driver's "Access denied for user
    // 'app'@'10.…'", an address) goes to the log, for operators.
    const checks: Record<string, string> = {};
    const unreachable = (dependency: string) => (err: unknown) => {
      request.log.warn({ err, dependency }, `healthz: ${dependency} unreachable`);
      checks[dependency] = 'unreachable';
    };
    await db.raw('SELECT 1').then(() => (checks.mysql = 'ok'), unreachable('mysql'));
    await withTemporalDeadline(client, config.temporalCallTimeoutMs, () =>
      client.workflowService.getSystemInfo({}),
    ).then(() => (checks.temporal = 'ok'), unreachable('temporal'));
    const ok = Object.values(checks).every((v) => v === 'ok');
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'degraded', checks });
  });
  // With METRICS_PORT, a listener of its own (not the port buyers reach). The ops gauges cost MySQL and Temporal reads:
  // requests that arrive while a refresh runs share it (one refresh at a time, however many scrapes or callers).
  const metricsApp = config.metricsPort
    ? Fastify({ loggerInstance: logger, forceCloseConnections: 'idle' })
    : undefined;
  let refreshing: Promise<void> | undefined;
  (metricsApp ?? app).get('/metrics', async (_request, reply) => {
    refreshing ??= refreshOpsGauges(db, metrics, Object.keys(providers), client, config.temporalCallTimeoutMs, app.log)
      .catch((err: unknown) => app.log.warn({ err }, 'ops gauges not refreshed'))
      .finally(() => (refreshing = undefined));
    await refreshing;
    // A worker in this process (npm start, tests) records into workerRegistry; separate processes each serve their own.
    return reply
      .type(metrics.registry.contentType)
      .send((await metrics.registry.metrics()) + (await workerRegistry.metrics()));
  });

  inbox.start();
  const reservations = new OrphanReservationSweeper({
    db,
    client,
    logger: app.log,
    metrics,
    graceMs: config.reservationGraceMs,
    intervalMs: config.reservationSweepIntervalMs,
    callTimeoutMs: config.temporalCallTimeoutMs,
  });
  reservations.start();
  // The outbox relay (OUTBOX_WEBHOOK_URL): every API process runs one; their claims skip each other's rows.
  const outbox = config.outbox.webhookUrl
    ? new OutboxRelay({
        db,
        sink: webhookSink(config.outbox.webhookUrl, config.outbox.secret),
        logger: app.log,
        metrics,
        intervalMs: config.outbox.intervalMs,
      })
    : undefined;
  if (outbox) outbox.start();
  else
    app.log.info(
      'outbox relay off (OUTBOX_WEBHOOK_URL unset): receipts and fulfilment hand-offs stay in the outbox table (payflow_outbox_backlog)',
    );
  // The daily reconciliation Schedule (RECONCILIATION_SCHEDULE; off in tests): created idempotently in the background,
  // and again after a failure until it exists.
  const schedules = config.reconciliationSchedule
    ? keepEnsuringReconciliationSchedules({
        ensure: () => ensureReconciliationSchedules(client, config, providers, app.log),
        providers: billProviders(providers),
        metrics,
        logger: app.log,
      })
    : undefined;
  return {
    app,
    ...(metricsApp ? { metricsApp } : {}),
    inbox,
    reservations,
    outbox,
    orders,
    metrics,
    /**
     * Stops taking requests first (Fastify answers new ones 503 while it waits for those in flight, whose callbacks
     * still store and queue their notifications), then the inbox (routing in flight finishes; rows queued and leased
     * here are handed back), the sweeper and the outbox relay (deliveries in flight finish).
     */
    async close() {
      schedules?.stop();
      await app.close();
      await metricsApp?.close();
      await inbox.stop();
      await reservations.stop();
      await outbox?.stop();
    },
  };
}
