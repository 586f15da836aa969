/**
 * A late trade's review of an order: how latePayment opens it (enterLateReview), which late trade holds it (the one
 * the API sends that review's decisions to, src/client/order-actions.ts, and the one whose new latePayment run takes
 * the review over when the run that opened it has ended, src/workflows/late-payment.ts). One read for both, so the two
 * can never disagree: the ORDER_NEEDS_REVIEW entry that opened the review, written in the transaction that changed the
 * status, so no other trade's entry can steer the decisions.
 */
import type { Knex } from 'knex';
import { FailureType, businessFailure, retryableFailure } from '../contracts/failures';
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
 * The trade the latest late review of the order names: its opening entry's, or (an entry without one) the latest
 * LATE_PAYMENT_REFUND_FAILED timeline entry's. Null when there is none.
 */
export async function lateReviewTrade(db: Knex, orderId: string): Promise<string | null> {
  return (await openedLateReview(db, orderId))?.tradeNo ?? (await latestRefundFailedTrade(db, orderId));
}

async function latestRefundFailedTrade(db: Knex, orderId: string): Promise<string | null> {
  const entry = (await db('order_events')
    .where({ order_id: orderId, type: LATE_PAYMENT_REFUND_FAILED })
    .orderBy('id', 'desc')
    .first('data')) as { data: unknown } | undefined;
  return jsonColumn<{ tradeNo?: string }>(entry?.data)?.tradeNo ?? null;
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
  return {
    tradeNo: opened?.tradeNo ?? (await latestRefundFailedTrade(db, orderId)),
    from: opened?.from ?? null,
  };
}

/** A late trade latePayment could not refund, to be left for an operator's decision. */
export interface LateReviewEntry {
  orderId: string;
  tradeNo: string;
  provider: string;
  /** Why it was not refunded. */
  why: string;
}

/** The order as the late trade's review opened on it: the status it goes back to after a refund, and its paying trade. */
export interface LateReviewOpened {
  from: OrderStatus;
  paidTradeNo: string | null;
}

/**
 * Opens the late trade's review: the order goes to NEEDS_REVIEW (reason LATE_PAYMENT_REFUND_FAILED) with its timeline
 * entry naming the trade, in one transaction under the order's row lock, so the entry that routes the decisions exists
 * exactly when the order is in this trade's review. Idempotent: a retry that finds the review this trade's answers as
 * the first call did. While the order is in review for something else (a failed refund, another late trade), a
 * retryable ORDER_IN_ANOTHER_REVIEW: the activity's retries wait for that review to be settled (its decisions go to
 * its own workflow) without a history event each; `firstAttempt` records once on the timeline that this trade waits.
 */
export async function enterLateReview(
  db: Knex,
  input: LateReviewEntry,
  firstAttempt: boolean,
): Promise<LateReviewOpened> {
  const { orderId, tradeNo, why } = input;
  const entered = await db.transaction(async (trx): Promise<LateReviewOpened | { waitsFor: string }> => {
    const row = (await trx('orders')
      .where({ order_id: orderId })
      .forUpdate()
      .first('status', 'status_reason', 'paid_trade_no')) as
      { status: OrderStatus; status_reason: string | null; paid_trade_no: string | null } | undefined;
    if (!row) throw businessFailure(FailureType.ORDER_NOT_FOUND, `order ${orderId} does not exist`);
    const events = new OrderEventBatch(orderId);
    if (row.status === 'NEEDS_REVIEW' && row.status_reason === LATE_PAYMENT_REFUND_FAILED) {
      const opened = await openedLateReview(trx, orderId);
      if (opened?.tradeNo === tradeNo && opened.from)
        return { from: opened.from, paidTradeNo: row.paid_trade_no ?? null };
    }
    if (!LATE_REVIEW_FROM.includes(row.status)) {
      const holder =
        row.status === 'NEEDS_REVIEW' ? `in review for ${row.status_reason ?? 'no recorded reason'}` : row.status;
      if (firstAttempt) {
        events.add(
          'LATE_PAYMENT_WAITS_FOR_REVIEW',
          `Payment ${tradeNo} arrived after the order was closed and was not refunded (${why}); the order is ${holder}, so this payment's review opens once that is settled`,
          { tradeNo, provider: input.provider, status: row.status, reason: row.status_reason },
        );
        await events.write(trx);
      }
      return { waitsFor: holder };
    }
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
    return { from: row.status, paidTradeNo: row.paid_trade_no ?? null };
  });
  // Thrown after the commit, so that the timeline entry of the first attempt stays.
  if ('waitsFor' in entered)
    throw retryableFailure(
      FailureType.ORDER_IN_ANOTHER_REVIEW,
      `order ${orderId} is ${entered.waitsFor}: late payment ${tradeNo}'s review waits for it`,
    );
  return entered;
}
