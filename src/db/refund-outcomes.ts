/**
 * A refund's outcome as its provider reports it later, by notification. A refund the provider accepted without
 * completing it (WeChat answers PROCESSING for a refund to a bank card, which can take days; a Stripe refund can be
 * `pending`) is recorded SUCCEEDED by the refund step, and its order goes on to REFUNDED: holding the step until the
 * money arrives would keep the order's workflow in it for days. When the provider then reports that refund failed or
 * closed (WeChat REFUND.ABNORMAL / REFUND.CLOSED, a Stripe refund failed or canceled), the buyer never got the money:
 * the refund becomes FAILED and the order goes to NEEDS_REVIEW (REFUND_FAILED) for an operator, both in one
 * transaction with their timeline entries, before the provider's notification is acknowledged.
 *
 * Only a verified notice of the provider that made the refund, for the order the refund belongs to, changes anything,
 * and only forward: SUCCEEDED or PENDING to FAILED, conditional on the status read under the row lock and checked. A
 * redelivery finds the refund FAILED and changes nothing. A success notice changes nothing (the refund is recorded
 * SUCCEEDED already, or the refund step that is still running records it), and a failed refund never comes back.
 */
import type { Knex } from 'knex';
import type { OrderStatus } from '../contracts/order';
import type { ProviderNotice } from '../providers/types';
import { retryDeadlocks } from './knex';
import { OrderEventBatch } from './order-events';
import { REFUND_FAILED_REASON, transitionIn } from './order-transitions';
import { failedRefundRetryPattern } from '../contracts/order-workflow';

/** A REFUND notice that names one of our refund numbers and states that refund's outcome. */
export type RefundOutcomeNotice = ProviderNotice & {
  outRefundNo: string;
  refundStatus: NonNullable<ProviderNotice['refundStatus']>;
};

/** Whether a notice reports the outcome of one refund of ours (by our refund number), which recordRefundOutcome takes. */
export function isRefundOutcome(notice: ProviderNotice): notice is RefundOutcomeNotice {
  return notice.kind === 'REFUND' && !!notice.outRefundNo && notice.refundStatus !== undefined;
}

/**
 * Statuses from which a failed refund sends its order to review: REFUNDED (the usual case: a cooling-off, review or
 * late-payment refund), PAID (a second trade refunded while the order kept its own; or the refund step of a
 * cooling-off refund has recorded the refund and the workflow has not yet marked REFUNDED), and the closed statuses
 * (a late payment's refund recorded, the order not yet marked REFUNDED). AWAITING_PAYMENT is its workflow's alone; an
 * order already in NEEDS_REVIEW stays there with the new timeline entry.
 */
const SENT_TO_REVIEW_FROM: OrderStatus[] = ['REFUNDED', 'PAID', 'EXPIRED', 'CANCELLED', 'FAILED'];

/** The status reason of an order a failed refund sent to review. */
export { REFUND_FAILED_REASON } from './order-transitions';

/** What recordRefundOutcome did. */
export type RefundOutcomeResult =
  /** The refund was SUCCEEDED or PENDING here and is FAILED now; the order went to review unless it was its workflow's. */
  | {
      outcome: 'FAILED_RECORDED';
      orderId: string;
      refundWas: 'SUCCEEDED' | 'PENDING';
      orderStatus: OrderStatus | undefined;
      orderChanged: boolean;
    }
  /** A redelivery (or another event for the same failure): the refund is FAILED already. */
  | { outcome: 'ALREADY_FAILED'; orderId: string }
  /** Not a failure, or nothing to change (a success for a refund recorded as made). */
  | { outcome: 'NO_CHANGE'; orderId: string; detail: string }
  /** No refund of ours has that number (a refund made in the provider's console, another system's). */
  | { outcome: 'UNKNOWN_REFUND' }
  /** Our refund number, but another provider's refund or another order's: refused, nothing changed. */
  | { outcome: 'NOT_THIS_REFUND'; orderId: string; detail: string }
  /**
   * A refund FAILED here reported succeeded (WeChat, after the merchant resubmitted the ABNORMAL refund under its
   * number): recorded on the timeline (once); the refund's review then refuses a new refund of it (order-actions).
   */
  | { outcome: 'SUCCEEDED_AFTER_FAILURE'; orderId: string; recordedNow: boolean };

/** The timeline entry of a failed refund its provider reported succeeded afterwards. */
export const REFUND_SUCCEEDED_AFTER_FAILURE = 'REFUND_SUCCEEDED_AFTER_FAILURE';

/** Whether the order's timeline says refund `outRefundNo` was reported succeeded after it failed. */
export async function successAfterFailureRecorded(
  db: Knex | Knex.Transaction,
  orderId: string,
  outRefundNo: string,
): Promise<boolean> {
  const row = await db('order_events')
    .where({ order_id: orderId, type: REFUND_SUCCEEDED_AFTER_FAILURE })
    .whereRaw("JSON_UNQUOTE(JSON_EXTRACT(data, '$.outRefundNo')) = ?", [outRefundNo])
    .first('id');
  return row !== undefined;
}

/** Records a refund's outcome reported by its provider (see the file comment). Throws on a database fault. */
export async function recordRefundOutcome(db: Knex, notice: RefundOutcomeNotice): Promise<RefundOutcomeResult> {
  return retryDeadlocks(() => db.transaction((trx) => recordIn(trx, notice)));
}

async function recordIn(trx: Knex.Transaction, notice: RefundOutcomeNotice): Promise<RefundOutcomeResult> {
  const no = notice.outRefundNo;
  const refund = (await trx('refunds')
    .where({ out_refund_no: no })
    .forUpdate()
    .first(
      'order_id',
      'out_trade_no',
      'provider',
      'trade_no',
      'status',
      'amount',
      'currency',
      'refund_no',
      'created_at',
    )) as
    | {
        order_id: string;
        out_trade_no: string;
        provider: string;
        trade_no: string | null;
        status: string;
        amount: number | string;
        currency: string;
        refund_no: string | null;
        created_at: Date;
      }
    | undefined;
  if (!refund) return { outcome: 'UNKNOWN_REFUND' };
  const orderId = refund.order_id;
  // One provider's keys never move another provider's refund; a refund number never speaks for another order.
  if (refund.provider !== notice.provider)
    return {
      outcome: 'NOT_THIS_REFUND',
      orderId,
      detail: `refund ${no} was made at ${refund.provider}, not ${notice.provider}`,
    };
  if (notice.outTradeNo !== undefined && notice.outTradeNo !== refund.out_trade_no)
    return {
      outcome: 'NOT_THIS_REFUND',
      orderId,
      detail: `refund ${no} refunds order ${refund.out_trade_no}; the notice names ${notice.outTradeNo}`,
    };
  // WeChat only: a refund it reported ABNORMAL may be resubmitted under the same number (the runbook says so) and then
  // succeed, so its SUCCESS after the failure is news. Stripe's failed is final, and its events come in any order: a
  // succeeded event after the failure is an older one, and changes nothing.
  if (notice.refundStatus === 'SUCCEEDED' && refund.status === 'FAILED' && notice.provider === 'wechat') {
    // The money reached the buyer after all. The refund stays FAILED here (its review is what settles it, and a stale
    // redelivery of the failure must not undo anything), but a review must not pay it a second time: the entry is what
    // the API reads to refuse a new refund of it.
    const recorded = await successAfterFailureRecorded(trx, orderId, no);
    if (!recorded) {
      // A review's refund of this failed refund already recorded (src/activities/payments.ts recordRetryOfFailed, under
      // the lock this transaction holds; or a late trade's review refund of the same trade): it may have reached the
      // provider, and the buyer may have been paid twice.
      const retries = (
        (await trx('refunds')
          .where({ order_id: orderId })
          .andWhere((q) =>
            q
              .where('out_refund_no', 'like', failedRefundRetryPattern(no))
              // A late trade's review refunds under its own `rv` number when the trade's automatic refund failed: one
              // made after this refund (an `rv` refund from before it, a refused decision's, paid nothing twice).
              .orWhere((rv) =>
                rv
                  .where('out_refund_no', 'like', 'rv%')
                  .andWhere('trade_no', refund.trade_no ?? '')
                  .andWhere((after) =>
                    after
                      .where('created_at', '>', refund.created_at)
                      .orWhere((tie) => tie.where('created_at', refund.created_at).andWhere('out_refund_no', '>', no)),
                  ),
              ),
          )
          .whereIn('status', ['PENDING', 'SUCCEEDED'])
          .forShare()
          .select('out_refund_no')) as { out_refund_no: string }[]
      ).map((r) => r.out_refund_no);
      const events = new OrderEventBatch(orderId);
      events.add(
        REFUND_SUCCEEDED_AFTER_FAILURE,
        `Refund ${no} that failed at ${notice.provider} was reported succeeded afterwards (${notice.providerEvent}, after a resubmission under its number): the buyer has this money; ` +
          (retries.length
            ? `the review's refund ${retries.join(', ')} of it was already sent or being sent, so the buyer may have been paid twice: check both at ${notice.provider} and recover the excess`
            : `check it at ${notice.provider}, then close its review without a new refund (refundAmount 0)`),
        {
          outRefundNo: no,
          providerEvent: notice.providerEvent,
          notificationId: notice.notificationId,
          ...(retries.length ? { retryRefunds: retries } : {}),
        },
      );
      await events.write(trx);
    }
    return { outcome: 'SUCCEEDED_AFTER_FAILURE', orderId, recordedNow: !recorded };
  }
  if (notice.refundStatus !== 'FAILED')
    return {
      outcome: 'NO_CHANGE',
      orderId,
      detail: `the provider reports the refund ${notice.refundStatus}; it is ${refund.status} here`,
    };
  if (refund.status === 'FAILED') return { outcome: 'ALREADY_FAILED', orderId };
  if (refund.status !== 'SUCCEEDED' && refund.status !== 'PENDING')
    return { outcome: 'NO_CHANGE', orderId, detail: `the refund is ${refund.status} here` };
  const refundWas = refund.status;

  const changed = await trx('refunds')
    .where({ out_refund_no: no, status: refundWas })
    .update({ status: 'FAILED', updated_at: trx.fn.now(3) });
  if (changed !== 1) throw new Error(`refund ${no} changed concurrently; the provider's redelivery will retry`);

  // The order's payment row said REFUNDED for this refund (it returned the trade that paid the order): the money did
  // not go back, so the row says PAID again, unless another refund of that trade did go through.
  if (refundWas === 'SUCCEEDED' && refund.trade_no) {
    const other = await trx('refunds')
      .where({ order_id: orderId, trade_no: refund.trade_no, status: 'SUCCEEDED' })
      .first('out_refund_no');
    if (!other)
      await trx('payments')
        .where({ out_trade_no: orderId, status: 'REFUNDED', trade_no: refund.trade_no })
        .update({ status: 'PAID', updated_at: trx.fn.now(3) });
  }

  const events = new OrderEventBatch(orderId);
  const why = `${notice.providerEvent}${notice.failureReason ? `: ${notice.failureReason}` : ''}`;
  events.add(
    'REFUND_FAILED',
    `Refund ${no} of ${refund.amount} ${refund.currency} (minor units) failed at ${notice.provider} after it was accepted (${why}): the buyer has not received this money` +
      (refundWas === 'PENDING' ? '; the refund step that is still running reports it' : ''),
    {
      outRefundNo: no,
      refundNo: notice.refundNo ?? refund.refund_no,
      tradeNo: refund.trade_no,
      provider: notice.provider,
      providerEvent: notice.providerEvent,
      notificationId: notice.notificationId,
      ...(notice.failureReason ? { failureReason: notice.failureReason } : {}),
      refundWas,
    },
  );
  let orderStatus: OrderStatus | undefined;
  let orderChanged = false;
  // A PENDING refund belongs to a refund step still running: the order is its workflow's, and the step, finding the
  // refund FAILED, fails and sends the order to review itself (refundPayment).
  if (refundWas === 'SUCCEEDED') {
    const order = (await trx('orders').where({ order_id: orderId }).forUpdate().first('status', 'status_reason')) as
      { status: OrderStatus; status_reason: string | null } | undefined;
    if (order) {
      const done = await transitionIn(
        trx,
        {
          orderId,
          from: SENT_TO_REVIEW_FROM,
          to: 'NEEDS_REVIEW',
          reason: REFUND_FAILED_REASON,
          event: {
            type: 'ORDER_NEEDS_REVIEW',
            message: `Refund ${no} failed at ${notice.provider} (${why}): the buyer has not been paid back; an operator must decide how to return the money`,
            data: { outRefundNo: no },
          },
        },
        order.status,
        events,
      );
      orderStatus = done.status;
      orderChanged = done.changed;
      // Already in review for something else: that review keeps the order (and its reason), and this entry names the
      // failed refund, whose review the API now sends decisions to first (order-actions, review).
      // (In review for another failed refund already: that one is decided first, and the next after it, as before.)
      if (order.status === 'NEEDS_REVIEW' && order.status_reason !== REFUND_FAILED_REASON)
        events.add(
          'ORDER_NEEDS_REVIEW',
          `Refund ${no} failed at ${notice.provider} (${why}) while the order was in review for something else: the buyer has not been paid back; the next review decision settles this refund first`,
          { from: 'NEEDS_REVIEW', reason: REFUND_FAILED_REASON, outRefundNo: no },
        );
    }
  }
  await events.write(trx);
  return { outcome: 'FAILED_RECORDED', orderId, refundWas, orderStatus, orderChanged };
}
