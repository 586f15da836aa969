/** Refunds the order workflow makes: in full, with the trade's stable refund number, so a retry never refunds twice. */
import { ApplicationFailure } from '@temporalio/workflow';
import { FailureType } from '../../contracts/failures';
import {
  autoRefundNo,
  REFUND_FAILED_REASON,
  reviewRefundNo,
  type OrderPaymentResult,
  type PaymentEvidence,
} from '../../contracts/order-workflow';
import { refundFailedBeforeSettleStep, refundedTradeStep } from '../patches';
import type { OrderContext } from './context';
import { refundableAmount } from './state';

/**
 * Refunds what a payment paid. The number is kept (and answered to the buyer) only once the provider has made the
 * refund. A payment whose amount the provider did not report cannot be refunded automatically: a business failure,
 * which sends the order to review instead of refunding a guess. `operatorAmount`, a review decision's refundAmount
 * (what is left at the provider, as its console shows), is refunded instead, under a number of its own: an earlier
 * attempt of another amount (refused, the refund number then taken) never blocks it.
 */
export async function refundInFull(
  ctx: OrderContext,
  paid: PaymentEvidence,
  why: string,
  reason: string,
  operatorAmount?: number,
): Promise<void> {
  const s = ctx.state;
  // Part or all of it refunded at the provider already (the merchant's console, say): only what is left.
  const partly = paid.refundedAmount !== undefined && refundedTradeStep();
  const amount = operatorAmount ?? refundableAmount(partly ? paid : { ...paid, refundedAmount: undefined });
  if (amount === undefined) {
    throw ApplicationFailure.create({
      type: FailureType.REFUND_AMOUNT_UNKNOWN,
      message: partly
        ? `payment ${paid.tradeNo} is reported refunded without the amounts; refund what is left by hand`
        : `payment ${paid.tradeNo} reported no amount; refund it by hand`,
      nonRetryable: true,
    });
  }
  if (amount === 0) {
    s.note(
      'ALREADY_REFUNDED',
      `Payment ${paid.tradeNo} is refunded in full at the provider already: nothing to refund`,
    );
    return;
  }
  const outRefundNo =
    operatorAmount === undefined
      ? autoRefundNo(s.orderId, paid.tradeNo)
      : reviewRefundNo(s.orderId, paid.tradeNo, operatorAmount);
  await ctx.must('refundPayment', 'task', `refund ${amount} ${paid.currency} (${why})`, {
    orderId: s.orderId,
    provider: ctx.provider,
    tradeNo: paid.tradeNo,
    outRefundNo,
    amount,
    currency: paid.currency,
    reason,
  });
  s.refundNo = outRefundNo;
}

/**
 * The end when the REFUNDED mark after a refund was refused because the order is in review for a failed refund: the
 * provider accepted a refund of this order and then reported it failed, and that notice moved the order to
 * NEEDS_REVIEW (src/db/refund-outcomes.ts) between the refund step and the mark. The failed refund's review settles the
 * order (the API sends its decisions to a failedRefundReview workflow), so this workflow ends with the order in it, and
 * the buyer is not told REFUNDED. Undefined when the mark was not refused so (done, or done already).
 */
export function endedInFailedRefundReview(
  ctx: OrderContext,
  /** The mark's result (TransitionResult, src/db/order-transitions.ts). */
  marked: { changed: boolean; status: string; reason?: string },
): Omit<OrderPaymentResult, 'orderId'> | undefined {
  if (marked.changed || marked.status !== 'NEEDS_REVIEW' || marked.reason !== REFUND_FAILED_REASON) return undefined;
  if (!refundFailedBeforeSettleStep()) return undefined;
  const s = ctx.state;
  s.note(
    'REFUND_FAILED',
    `A refund of this order was reported failed by ${ctx.provider} before the order was marked REFUNDED (refund ${s.refundNo ?? 'unknown'} made by this workflow): the order is in review for the failed refund`,
  );
  s.leftInFailedRefundReview();
  return { status: 'NEEDS_REVIEW', reason: REFUND_FAILED_REASON };
}

/** Step 7: money that arrived for a closed order is refunded, and the order says REFUNDED. */
export async function refundLatePayment(
  ctx: OrderContext,
  late: PaymentEvidence,
): Promise<Omit<OrderPaymentResult, 'orderId'> | undefined> {
  const s = ctx.state;
  ctx.enter('REFUNDING', `refunding late payment ${late.tradeNo}`);
  s.note('LATE_PAYMENT', `Payment ${late.tradeNo} arrived for a closed order; refunding`);
  await refundInFull(ctx, late, 'late payment', 'payment arrived after the order was closed');
  const marked = await ctx.must('transitionOrder', 'local', 'mark order REFUNDED', {
    orderId: s.orderId,
    from: ['EXPIRED', 'CANCELLED', 'FAILED'],
    to: 'REFUNDED',
    reason: 'LATE_PAYMENT_REFUNDED',
    event: { type: 'ORDER_REFUNDED', message: `Late payment ${late.tradeNo} refunded in full` },
    payment: late,
  });
  const inReview = endedInFailedRefundReview(ctx, marked);
  if (inReview) return inReview;
  s.settled('REFUNDED');
  return undefined;
}
