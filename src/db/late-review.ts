/**
 * A late trade's review of an order: how latePayment opens it (enterLateReview), which late trade holds it (the one
 * the API sends that review's decisions to, src/client/order-actions.ts, and the one whose new latePayment run takes
 * the review over when the run that opened it has ended, src/workflows/late-payment.ts). One read for both, so the two
 * can never disagree: the ORDER_NEEDS_REVIEW entry that opened the review, written in the transaction that changed the
 * status, so no other trade's entry can steer the decisions.
 */
import type { Knex } from 'knex';
import { FailureType, businessFailure } from '../contracts/failures';
import type { OrderStatus } from '../contracts/order';
import { jsonColumn } from './json';
import { OrderEventBatch } from './order-events';
import { transitionIn } from './order-transitions';

/** The status reason (and timeline entry type) of an order a late trade's failed refund left in review. */
export const LATE_PAYMENT_REFUND_FAILED = 'LATE_PAYMENT_REFUND_FAILED';

/** The statuses a late trade's review opens from: the order's own workflow has closed it. */
const LATE_REVIEW_FROM: OrderStatus[] = ['EXPIRED', 'CANCELLED', 'FAILED', 'PAID', 'REFUNDED'];

interface OpenedEntry {
  from?: OrderStatus;
  tradeNo?: string;
}

/**
 * The latest ORDER_NEEDS_REVIEW entry that opened a late trade's review of the order (reason LATE_PAYMENT_REFUND_FAILED,
 * not one a settled failed refund wrote while the order stayed in it: from NEEDS_REVIEW, src/db/order-transitions.ts
 * staysInReview), with the trade it names and the status the order had.
 */
async function openedLateReview(db: Knex, orderId: string): Promise<OpenedEntry | null> {
  const entry = (await db('order_events')
    .where({ order_id: orderId, type: 'ORDER_NEEDS_REVIEW' })
    .whereRaw("JSON_UNQUOTE(JSON_EXTRACT(data, '$.reason')) = ?", [LATE_PAYMENT_REFUND_FAILED])
    .whereRaw("COALESCE(JSON_UNQUOTE(JSON_EXTRACT(data, '$.from')), '') <> 'NEEDS_REVIEW'")
    .orderBy('id', 'desc')
    .first('data')) as { data: unknown } | undefined;
  return entry ? (jsonColumn<OpenedEntry>(entry.data) ?? {}) : null;
}

/**
 * The trade the latest late review of the order names, from its opening entry (every such entry has named its trade
 * since the review was introduced, in 9fcb699). Null when there is none.
 */
export async function lateReviewTrade(db: Knex, orderId: string): Promise<string | null> {
  return (await openedLateReview(db, orderId))?.tradeNo ?? null;
}

/**
 * The late trade whose review holds an order (status reason LATE_PAYMENT_REFUND_FAILED), as lateReviewTrade names it,
 * and the status the order had when that review opened. Null when the order is not in such a review.
 */
export async function lateReviewOf(
  db: Knex,
  orderId: string,
): Promise<{ tradeNo: string | null; from: OrderStatus | null } | null> {
  const order = (await db('orders').where({ order_id: orderId }).first('status', 'status_reason')) as
    { status: OrderStatus; status_reason: string | null } | undefined;
  if (order?.status !== 'NEEDS_REVIEW' || order.status_reason !== LATE_PAYMENT_REFUND_FAILED) return null;
  const opened = await openedLateReview(db, orderId);
  return { tradeNo: opened?.tradeNo ?? null, from: opened?.from ?? null };
}

/** A late trade latePayment could not refund, to be left for an operator's decision. */
export interface LateReviewEntry {
  orderId: string;
  tradeNo: string;
  provider: string;
  /** Why it was not refunded. */
  why: string;
  /** The order as the run saw it when it decided this trade: its status and paying trade. */
  seen: { status: OrderStatus; paidTradeNo: string | null };
}

/**
 * What enterLateReview did: `opened`, the review is this trade's (now, or by an earlier attempt), opened from `from`;
 * `held`, the order is in another review (or not closed): nothing written but a timeline entry, the run waits that
 * review out and decides the trade again; `changed`, the order is no longer as the run saw it (another review settled
 * meanwhile): nothing written, the run decides the trade again on the order as it is.
 */
export type LateReviewEntered =
  | { outcome: 'opened'; from: OrderStatus; paidTradeNo: string | null }
  | { outcome: 'held'; status: OrderStatus; reason: string | null }
  | { outcome: 'changed'; status: OrderStatus; paidTradeNo: string | null };

/**
 * Opens the late trade's review: the order goes to NEEDS_REVIEW (reason LATE_PAYMENT_REFUND_FAILED) with its timeline
 * entry naming the trade, in one transaction under the order's row lock, so the entry that routes the decisions exists
 * exactly when the order is in this trade's review. Only on the order the run decided on (`seen`): a review opened on an
 * order that has changed since would offer decisions (approve this trade as the paying one) that no longer hold.
 * Idempotent: a retry that finds the review this trade's answers as the first call did.
 */
export async function enterLateReview(db: Knex, input: LateReviewEntry): Promise<LateReviewEntered> {
  const { orderId, tradeNo, why } = input;
  return db.transaction(async (trx): Promise<LateReviewEntered> => {
    const row = (await trx('orders')
      .where({ order_id: orderId })
      .forUpdate()
      .first('status', 'status_reason', 'paid_trade_no')) as
      { status: OrderStatus; status_reason: string | null; paid_trade_no: string | null } | undefined;
    if (!row) throw businessFailure(FailureType.ORDER_NOT_FOUND, `order ${orderId} does not exist`);
    const paidTradeNo = row.paid_trade_no ?? null;
    const events = new OrderEventBatch(orderId);
    if (row.status === 'NEEDS_REVIEW' && row.status_reason === LATE_PAYMENT_REFUND_FAILED) {
      const opened = await openedLateReview(trx, orderId);
      if (opened?.tradeNo === tradeNo && opened.from) return { outcome: 'opened', from: opened.from, paidTradeNo };
    }
    if (!LATE_REVIEW_FROM.includes(row.status)) {
      const holder =
        row.status === 'NEEDS_REVIEW' ? `in review for ${row.status_reason ?? 'no recorded reason'}` : row.status;
      events.add(
        'LATE_PAYMENT_WAITS_FOR_REVIEW',
        `Payment ${tradeNo} arrived after the order was closed and was not refunded (${why}); the order is ${holder}: this payment is decided again once that is settled`,
        { tradeNo, provider: input.provider, status: row.status, reason: row.status_reason },
      );
      await events.write(trx);
      return { outcome: 'held', status: row.status, reason: row.status_reason };
    }
    if (row.status !== input.seen.status || paidTradeNo !== input.seen.paidTradeNo)
      return { outcome: 'changed', status: row.status, paidTradeNo };
    events.add(
      LATE_PAYMENT_REFUND_FAILED,
      `Payment ${tradeNo} arrived after the order was ${row.status} and was not refunded: ${why}`,
      { tradeNo, provider: input.provider },
    );
    const done = await transitionIn(
      trx,
      {
        orderId,
        from: LATE_REVIEW_FROM,
        to: 'NEEDS_REVIEW',
        reason: LATE_PAYMENT_REFUND_FAILED,
        event: {
          type: 'ORDER_NEEDS_REVIEW',
          message: `Late payment ${tradeNo} could not be refunded (${why}); an operator must decide`,
          data: { tradeNo },
        },
      },
      row.status,
      events,
    );
    if (!done.changed) throw new Error(`order ${orderId} did not enter review from ${row.status}; will retry`);
    await events.write(trx);
    return { outcome: 'opened', from: row.status, paidTradeNo };
  });
}
