/**
 * The notification inbox processor: every stored notification is routed (src/temporal/route-notification.ts) to its
 * order's workflow, or, when that workflow has finished, to a late-payment workflow; one of another provider than the
 * order's is refused. A notification that cannot be routed right now (Temporal down, a restart) stays in the inbox and
 * is retried with backoff; none is ever dropped.
 */
import type { Client } from '@temporalio/client';
import type { Knex } from 'knex';
import type { FastifyBaseLogger } from 'fastify';
import type { PaymentNotification } from '../providers/types';
import { isTemporalUnreachable, withTemporalDeadline } from '../temporal/calls';
import { OrderProviderCache, routePaymentNotification } from '../temporal/route-notification';
import type { Metrics } from './metrics';

/**
 * How long a claimed row is leased to one processor before another may retry it: routing makes at most two Temporal
 * calls, each under its deadline, so a lease of two deadlines and a margin is never cut short by a live processor, and
 * a row claimed by a process that died is retried soon after (15 s by default).
 */
const leaseMs = (callTimeoutMs: number) => 2 * callTimeoutMs + 5_000;
const MAX_BACKOFF_MS = 5 * 60_000;
/** Ids waiting in memory for a routing slot; beyond this the sweep finds them in MySQL instead. */
const MAX_QUEUED = 10_000;

/** Options of the inbox processor. */
export interface InboxOptions {
  db: Knex;
  client: Client;
  taskQueue: string;
  logger: FastifyBaseLogger;
  metrics: Metrics;
  retryIntervalMs: number;
  /** Rows routed at once; each Temporal call has its own deadline, so one hanging row never holds up the others. */
  concurrency: number;
  /** Deadline of each Temporal call (signal, start, the recovery probe). */
  callTimeoutMs: number;
}

/**
 * Routes inbox rows to workflows: `kick` after each stored notification, `start` for the retry sweep. Rows are
 * routed by a bounded pool (INBOX_CONCURRENCY); the lease in MySQL keeps two processors (or two API processes) off
 * one row. When Temporal cannot be reached, rows are marked UNREACHABLE; the sweep probes Temporal and, as soon as it
 * answers, releases all of them at once rather than letting each wait out its backoff.
 */
export class NotificationInbox {
  private timer: NodeJS.Timeout | undefined;
  private sweeping = false;
  private stopped = false;
  private running = 0;
  private readonly waiting: number[] = [];
  private readonly queued = new Set<number>();
  private readonly inFlight = new Set<Promise<void>>();
  /** Rows this process has routed (bounded): a provider's redeliveries of them are not even queued. */
  private readonly routed = new Set<number>();

  /** Orders' providers, read once per order by the callback route and the routing alike (a provider never changes). */
  readonly orderProviders = new OrderProviderCache();

  constructor(private readonly options: InboxOptions) {}

  /** Starts the periodic sweep that retries rows whose routing failed. */
  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.options.retryIntervalMs);
    this.timer.unref();
  }

  /** Stops the sweep, forgets queued ids (they stay RECEIVED in MySQL) and waits for in-flight routing to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.waiting.length = 0;
    this.queued.clear();
    await Promise.allSettled([...this.inFlight]);
  }

  /** Queues one row for routing without blocking the caller (used right after acknowledging). */
  kick(id: number): void {
    if (this.stopped || this.routed.has(id) || this.queued.has(id) || this.queued.size >= MAX_QUEUED) return;
    this.queued.add(id);
    this.waiting.push(id);
    this.pump();
  }

  /** Starts queued rows while routing slots are free. */
  private pump(): void {
    while (this.running < this.options.concurrency && this.waiting.length > 0) {
      const id = this.waiting.shift()!;
      this.running++;
      const p = this.process(id)
        .catch((err: unknown) => this.options.logger.error({ err, id }, 'inbox processing failed'))
        .finally(() => {
          this.running--;
          this.queued.delete(id);
          this.inFlight.delete(p);
          this.pump();
        });
      this.inFlight.add(p);
    }
  }

  /** Releases UNREACHABLE rows when Temporal answers again, queues every due row, refreshes the backlog gauge. */
  async sweep(): Promise<number> {
    if (this.sweeping || this.stopped) return 0;
    this.sweeping = true;
    const { db, metrics } = this.options;
    try {
      await this.releaseIfTemporalIsBack();
      const due = (await db('notification_inbox')
        .where('status', 'RECEIVED')
        .andWhere('next_attempt_at', '<=', new Date())
        .orderBy('id')
        .limit(200)
        .pluck('id')) as number[];
      for (const id of due) this.kick(Number(id));
      const [{ n }] = (await db('notification_inbox').where('status', 'RECEIVED').count({ n: '*' })) as [{ n: number }];
      metrics.inboxBacklog.set(Number(n));
      return due.length;
    } catch (err) {
      this.options.logger.warn({ err }, 'inbox sweep failed; will retry');
      return 0;
    } finally {
      this.sweeping = false;
    }
  }

  /**
   * When rows wait because Temporal was unreachable, asks Temporal (one cheap call under the deadline); if it answers,
   * makes those rows due now. A leased row has no failure kind, so the lease is never cut short.
   */
  private async releaseIfTemporalIsBack(): Promise<void> {
    const { db, client, callTimeoutMs, logger } = this.options;
    const waiting = await db('notification_inbox')
      .where({ status: 'RECEIVED', failure_kind: 'UNREACHABLE' })
      .first('id');
    if (!waiting) return;
    try {
      await withTemporalDeadline(client, callTimeoutMs, () => client.workflowService.getSystemInfo({}));
    } catch {
      return;
    }
    const released = await db('notification_inbox')
      .where({ status: 'RECEIVED', failure_kind: 'UNREACHABLE' })
      .update({ next_attempt_at: new Date(), failure_kind: null });
    if (released > 0)
      logger.info({ released }, 'Temporal answers again; notifications held back by the outage are routed now');
  }

  private rememberRouted(id: number): void {
    this.routed.add(id);
    if (this.routed.size > MAX_QUEUED) this.routed.delete(this.routed.values().next().value!);
  }

  /** Claims a row (a lease, so concurrent processors do not both route it), routes it and records the outcome. */
  async process(id: number): Promise<void> {
    const { db, logger, metrics } = this.options;
    const now = new Date();
    const claimed = await db('notification_inbox')
      .where({ id, status: 'RECEIVED' })
      .andWhere('next_attempt_at', '<=', now)
      .update({
        attempts: db.raw('attempts + 1'),
        next_attempt_at: new Date(now.getTime() + leaseMs(this.options.callTimeoutMs)),
        failure_kind: null,
      });
    if (claimed !== 1) return;
    const row = await db('notification_inbox').where({ id }).first('payload', 'attempts');
    const n = JSON.parse(row.payload as string) as PaymentNotification;
    try {
      const { client, taskQueue, callTimeoutMs } = this.options;
      const outcome = await routePaymentNotification(
        { db, client, taskQueue, callTimeoutMs, orderProviders: this.orderProviders },
        n,
      );
      const refused = outcome.destination === 'REFUSED';
      await db('notification_inbox')
        .where({ id, status: 'RECEIVED' })
        .update({
          status: outcome.destination,
          processed_at: new Date(),
          last_error: refused ? outcome.detail.slice(0, 1024) : null,
        });
      metrics.inboxRouted.inc({ destination: outcome.destination });
      this.rememberRouted(id);
      if (refused) {
        metrics.notificationsRefused.inc({ provider: n.provider, reason: outcome.reason, where: 'inbox' });
        logger.warn(
          { id, notificationId: n.notificationId, orderId: n.outTradeNo, reason: outcome.reason },
          `notification refused: ${outcome.detail}`,
        );
      }
    } catch (err) {
      const attempts = Number(row.attempts);
      const backoff = Math.min(1000 * 2 ** Math.min(attempts, 12), MAX_BACKOFF_MS);
      const unreachable = isTemporalUnreachable(err);
      await db('notification_inbox')
        .where({ id, status: 'RECEIVED' })
        .update({
          next_attempt_at: new Date(Date.now() + backoff),
          last_error: String((err as Error).message).slice(0, 1024),
          failure_kind: unreachable ? 'UNREACHABLE' : 'ERROR',
        });
      metrics.inboxSignalFailures.inc();
      logger.warn(
        {
          err,
          id,
          notificationId: n.notificationId,
          orderId: n.outTradeNo,
          retryInMs: backoff,
          temporalUnreachable: unreachable,
        },
        'notification not routed yet; kept in the inbox',
      );
    }
  }
}
