/**
 * Routing of a verified payment notification, for every path that has one (the API's inbox, reconciliation's repair
 * of a lost payment): to the order's running workflow as a signal, else to the late-payment workflow of that trade.
 * First, the one check every path owes: a notification only speaks for its own provider's payment.
 */
import { type Client, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import type { Knex } from 'knex';
import {
  type LatePaymentInput,
  type LatePaymentResult,
  type PaymentNotifiedSignal,
  latePaymentWorkflowId,
  orderWorkflowId,
  paymentNotifiedSignal,
} from '../contracts/order';
import { withTemporalDeadline } from './calls';

/**
 * A verified payment notification, from a callback or rebuilt from a provider's bill: the signal's fields, provider
 * required.
 */
export type RoutableNotification = PaymentNotifiedSignal & { provider: string };

/** Where a notification went: the live workflow, a late-payment workflow, or nowhere (refused, with why). */
export type RouteOutcome =
  | { destination: 'SIGNALLED' | 'LATE'; detail: string }
  | { destination: 'REFUSED'; reason: 'PROVIDER_MISMATCH'; detail: string };

/** What routing needs: MySQL for the order's provider, a Temporal client, the task queue of late-payment workflows. */
export interface RouteDeps {
  db: Knex;
  client: Client;
  taskQueue: string;
  /** Deadline of each Temporal call, so an unreachable server fails the attempt in seconds. */
  callTimeoutMs: number;
  /** Orders' providers already read (the API shares one between its callback route and its inbox). */
  orderProviders?: OrderProviderCache;
  /** A late payment's waits before querying again a trade its provider does not show yet; unset: the workflow's own. */
  lateRecheckDelaysMs?: number[];
  /** How often a late trade whose order is in review looks again; unset: the workflow's own (an hour). */
  lateReviewPollMs?: number;
}

/**
 * The provider an order pays with, when the order exists. A notification of another provider is refused: a secret of
 * one provider (the sandbox's, say) must never move an order paid elsewhere.
 */
export async function providerMismatch(
  db: Knex,
  n: Pick<RoutableNotification, 'provider' | 'outTradeNo'>,
  cache?: OrderProviderCache,
): Promise<string | undefined> {
  const provider = cache ? await cache.get(db, n.outTradeNo) : await orderProvider(db, n.outTradeNo);
  if (provider === undefined || provider === n.provider) return undefined;
  return `a ${n.provider} notification for order ${n.outTradeNo}, which pays with ${provider}`;
}

async function orderProvider(db: Knex, orderId: string): Promise<string | undefined> {
  return ((await db('orders').where({ order_id: orderId }).first('provider')) as { provider: string } | undefined)
    ?.provider;
}

/**
 * An order's payment provider never changes once the order exists, so the callback route remembers it: a provider
 * redelivering one notification dozens of times costs one read, not dozens. Unknown orders are not remembered.
 */
export class OrderProviderCache {
  private readonly known = new Map<string, string>();

  constructor(private readonly maxEntries = 100_000) {}

  async get(db: Knex, orderId: string): Promise<string | undefined> {
    const hit = this.known.get(orderId);
    if (hit !== undefined) return hit;
    const provider = await orderProvider(db, orderId);
    if (provider !== undefined) this.remember(orderId, provider);
    return provider;
  }

  /**
   * Remembers an order's provider learned elsewhere: the API that created the order (its workflow answered with the
   * payment, so the row exists), so the first callback of an order placed through this process costs no read.
   */
  remember(orderId: string, provider: string): void {
    this.known.set(orderId, provider);
    // Oldest first in a Map's order: drop from the front past the bound.
    if (this.known.size > this.maxEntries) this.known.delete(this.known.keys().next().value!);
  }
}

/** Routes one notification; throws when Temporal cannot be reached (the caller keeps it and retries). */
export async function routePaymentNotification(
  deps: RouteDeps,
  n: RoutableNotification,
  options: { lateSummary?: string } = {},
): Promise<RouteOutcome> {
  const { db, client, taskQueue, callTimeoutMs } = deps;
  const mismatch = await providerMismatch(db, n, deps.orderProviders);
  if (mismatch) return { destination: 'REFUSED', reason: 'PROVIDER_MISMATCH', detail: mismatch };
  try {
    await withTemporalDeadline(client, callTimeoutMs, () =>
      client.workflow.getHandle(orderWorkflowId(n.outTradeNo)).signal(paymentNotifiedSignal, {
        notificationId: n.notificationId,
        outTradeNo: n.outTradeNo,
        tradeNo: n.tradeNo,
        amount: n.amount,
        currency: n.currency,
        merchantId: n.merchantId,
        paidAt: n.paidAt,
        provider: n.provider,
      }),
    );
    return { destination: 'SIGNALLED', detail: `signalled the live order workflow (notification ${n.notificationId})` };
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
  }
  // The order's workflow has finished (or never existed): a durable workflow of its own decides, one per trade.
  const workflowId = latePaymentWorkflowId(n.provider, n.outTradeNo, n.tradeNo);
  const args: [LatePaymentInput] = [
    {
      provider: n.provider as LatePaymentInput['provider'],
      outTradeNo: n.outTradeNo,
      tradeNo: n.tradeNo,
      notificationId: n.notificationId,
      ...(deps.lateRecheckDelaysMs ? { recheckDelaysMs: deps.lateRecheckDelaysMs } : {}),
      ...(deps.lateReviewPollMs ? { reviewPollMs: deps.lateReviewPollMs } : {}),
    },
  ];
  const start = (workflowIdReusePolicy: 'REJECT_DUPLICATE' | 'ALLOW_DUPLICATE') =>
    withTemporalDeadline(client, callTimeoutMs, () =>
      client.workflow.start('latePayment', {
        workflowId,
        taskQueue,
        args,
        workflowIdReusePolicy,
        staticSummary: options.lateSummary ?? `Late payment ${n.tradeNo} for order ${n.outTradeNo}`,
      }),
    );
  try {
    await start('REJECT_DUPLICATE');
    return { destination: 'LATE', detail: `order workflow finished; started ${workflowId}` };
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
  // A run of that trade's workflow exists. Running, or ended having settled the trade: it handles it. Ended without
  // settling it (failed, terminated, or found nothing to refund on a stale query, or left it for review): this report
  // is new evidence, so the trade is verified again by a new run, never counted as handled by a run that did nothing.
  const previous = await lastRunOutcome(deps, workflowId);
  if (previous.handled)
    return { destination: 'LATE', detail: `order workflow finished; ${workflowId} ${previous.how}` };
  try {
    await start('ALLOW_DUPLICATE');
  } catch (err) {
    // Another router started it again meanwhile.
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    return { destination: 'LATE', detail: `order workflow finished; ${workflowId} already handles it` };
  }
  return {
    destination: 'LATE',
    detail: `order workflow finished; ${workflowId} started again (its last run ${previous.how})`,
  };
}

/** Late-payment outcomes that settle a trade: nothing is left to do for it, whatever is reported later. */
const SETTLED_OUTCOMES: ReadonlySet<LatePaymentResult['outcome']> = new Set([
  'REFUNDED',
  'ALREADY_CONFIRMED',
  'PROVIDER_MISMATCH',
]);

/** Whether the latest run of a late-payment workflow handles (or has settled) its trade, and how, for the record. */
async function lastRunOutcome(deps: RouteDeps, workflowId: string): Promise<{ handled: boolean; how: string }> {
  const { client, callTimeoutMs } = deps;
  const handle = client.workflow.getHandle(workflowId);
  const status = (await withTemporalDeadline(client, callTimeoutMs, () => handle.describe())).status.name;
  if (status === 'RUNNING') return { handled: true, how: 'already handles it' };
  if (status !== 'COMPLETED') return { handled: false, how: `ended ${status}` };
  const result = (await withTemporalDeadline(client, callTimeoutMs, () => handle.result())) as LatePaymentResult;
  return SETTLED_OUTCOMES.has(result.outcome)
    ? { handled: true, how: `settled it (${result.outcome})` }
    : { handled: false, how: `ended ${result.outcome}: ${result.detail}` };
}
