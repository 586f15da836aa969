/**
 * Which late trade holds an order's review: the one the API sends that review's decisions to (src/client/order-actions.ts),
 * and the one whose new latePayment run takes the review over when the run that opened it has ended
 * (src/workflows/late-payment.ts). One read for both, so the two can never disagree.
 */
import type { Knex } from 'knex';
import type { OrderStatus } from '../contracts/order';
import { jsonColumn } from './json';

/** The status reason (and timeline entry type) of an order a late trade's failed refund left in review. */
export const LATE_PAYMENT_REFUND_FAILED = 'LATE_PAYMENT_REFUND_FAILED';

/** The trade the latest LATE_PAYMENT_REFUND_FAILED entry of the order names (the latest late review's), or null. */
export async function lateReviewTrade(db: Knex, orderId: string): Promise<string | null> {
  const entry = (await db('order_events')
    .where({ order_id: orderId, type: LATE_PAYMENT_REFUND_FAILED })
    .orderBy('id', 'desc')
    .first('data')) as { data: unknown } | undefined;
  return jsonColumn<{ tradeNo?: string }>(entry?.data)?.tradeNo ?? null;
}

/**
 * The late trade whose review holds an order (status reason LATE_PAYMENT_REFUND_FAILED), as lateReviewTrade names it,
 * and the status the order had when that review opened (the latest ORDER_NEEDS_REVIEW entry of that reason). Null
 * when the order is not in such a review.
 */
export async function lateReviewOf(
  db: Knex,
  orderId: string,
): Promise<{ tradeNo: string | null; from: OrderStatus | null } | null> {
  const order = (await db('orders').where({ order_id: orderId }).first('status', 'status_reason')) as
    { status: OrderStatus; status_reason: string | null } | undefined;
  if (order?.status !== 'NEEDS_REVIEW' || order.status_reason !== LATE_PAYMENT_REFUND_FAILED) return null;
  const opened = (await db('order_events')
    .where({ order_id: orderId, type: 'ORDER_NEEDS_REVIEW' })
    .whereRaw("JSON_UNQUOTE(JSON_EXTRACT(data, '$.reason')) = ?", [LATE_PAYMENT_REFUND_FAILED])
    // The entry that opened the review: not one a settled failed refund wrote while the order stayed in it (from
    // NEEDS_REVIEW, src/db/order-transitions.ts staysInReview).
    .whereRaw("COALESCE(JSON_UNQUOTE(JSON_EXTRACT(data, '$.from')), '') <> 'NEEDS_REVIEW'")
    .orderBy('id', 'desc')
    .first('data')) as { data: unknown } | undefined;
  return {
    tradeNo: await lateReviewTrade(db, orderId),
    from: jsonColumn<{ from?: OrderStatus }>(opened?.data)?.from ?? null,
  };
}
