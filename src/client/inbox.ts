/**
 * The notification inbox processor: every stored notification is signalled to its order's workflow, or,
 * when that workflow has finished, handed to a late-payment workflow. A notification that cannot be routed
 * right now (Temporal down, a restart) stays in the inbox and is retried with backoff; none is ever dropped.
 */
import { type Client, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import type { Knex } from 'knex';
import type { FastifyBaseLogger } from 'fastify';
import { latePaymentWorkflowId, orderWorkflowId, paymentNotifiedSignal } from '../contracts/order';
import type { PaymentNotification } from '../providers/types';
import type { Metrics } from './metrics';

/** How long a claimed row is leased to one processor before another may retry it. */
const LEASE_MS = 30_000;
const MAX_BACKOFF_MS = 5 * 60_000;

/** Options of the inbox processor. */
export interface InboxOptions {
  db: Knex;
  client: Client;
  taskQueue: string;
  logger: FastifyBaseLogger;
  metrics: Metrics;
  retryIntervalMs: number;
}

/** Routes inbox rows to workflows; `kick` after each stored notification, `start` for the retry sweep. */
export class NotificationInbox {
  private timer: NodeJS.Timeout | undefined;
  private sweeping = false;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(private readonly options: InboxOptions) {}

  /** Starts the periodic sweep that retries rows whose signal failed. */
  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.options.retryIntervalMs);
    this.timer.unref();
  }

  /** Stops the sweep and waits for in-flight routing to finish. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await Promise.allSettled([...this.inFlight]);
  }

  /** Processes one row soon, without blocking the caller (used right after acknowledging). */
  kick(id: number): void {
    const p = this.process(id).catch((err: unknown) => this.options.logger.error({ err, id }, 'inbox processing failed'));
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  /** Retries every due row; also refreshes the backlog gauge. */
  async sweep(): Promise<number> {
    if (this.sweeping) return 0;
    this.sweeping = true;
    try {
      const due = (await this.options.db('notification_inbox')
        .where('status', 'RECEIVED')
        .andWhere('next_attempt_at', '<=', new Date())
        .orderBy('id')
        .limit(200)
        .pluck('id')) as number[];
      for (const id of due) await this.process(id);
      const [{ n }] = (await this.options.db('notification_inbox').where('status', 'RECEIVED').count({ n: '*' })) as [{ n: number }];
      this.options.metrics.inboxBacklog.set(Number(n));
      return due.length;
    } catch (err) {
      this.options.logger.warn({ err }, 'inbox sweep failed; will retry');
      return 0;
    } finally {
      this.sweeping = false;
    }
  }

  /** Claims a row (a lease, so concurrent processors do not both route it), routes it and records the outcome. */
  async process(id: number): Promise<void> {
    const { db, logger, metrics } = this.options;
    const now = new Date();
    const claimed = await db('notification_inbox')
      .where({ id, status: 'RECEIVED' })
      .andWhere('next_attempt_at', '<=', now)
      .update({ attempts: db.raw('attempts + 1'), next_attempt_at: new Date(now.getTime() + LEASE_MS) });
    if (claimed !== 1) return;
    const row = await db('notification_inbox').where({ id }).first('payload', 'attempts');
    const n = JSON.parse(row.payload as string) as PaymentNotification;
    try {
      const destination = await this.route(n);
      await db('notification_inbox').where({ id, status: 'RECEIVED' }).update({ status: destination, processed_at: new Date(), last_error: null });
      metrics.inboxRouted.inc({ destination });
    } catch (err) {
      const attempts = Number(row.attempts);
      const backoff = Math.min(1000 * 2 ** Math.min(attempts, 12), MAX_BACKOFF_MS);
      await db('notification_inbox')
        .where({ id, status: 'RECEIVED' })
        .update({ next_attempt_at: new Date(Date.now() + backoff), last_error: String((err as Error).message).slice(0, 1024) });
      metrics.inboxSignalFailures.inc();
      logger.warn({ err, id, notificationId: n.notificationId, orderId: n.outTradeNo, retryInMs: backoff }, 'notification not routed yet; kept in the inbox');
    }
  }

  private async route(n: PaymentNotification): Promise<'SIGNALLED' | 'LATE'> {
    const { client, taskQueue } = this.options;
    try {
      await client.workflow.getHandle(orderWorkflowId(n.outTradeNo)).signal(paymentNotifiedSignal, {
        notificationId: n.notificationId,
        outTradeNo: n.outTradeNo,
        tradeNo: n.tradeNo,
        amount: n.amount,
        currency: n.currency,
        merchantId: n.merchantId,
        paidAt: n.paidAt,
      });
      return 'SIGNALLED';
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    }
    // The order's workflow has finished (or never existed): a durable workflow of its own decides.
    try {
      await client.workflow.start('latePayment', {
        workflowId: latePaymentWorkflowId(n.provider, n.outTradeNo, n.tradeNo),
        taskQueue,
        args: [{ provider: n.provider, outTradeNo: n.outTradeNo, tradeNo: n.tradeNo, notificationId: n.notificationId }],
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
        staticSummary: `Late payment ${n.tradeNo} for order ${n.outTradeNo}`,
      });
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
    return 'LATE';
  }
}
