/** Refunds the order workflow makes: in full, with the trade's stable refund number, so a retry never refunds twice. */
import { ApplicationFailure } from '@temporalio/workflow';
import { FailureType } from '../../contracts/failures';
import { autoRefundNo, reviewRefundNo, type PaymentEvidence } from '../../contracts/order-workflow';
import { refundedTradeStep } from '../patches';
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

/** Step 7: money that arrived for a closed order is refunded, and the order says REFUNDED. */
export async function refundLatePayment(ctx: OrderContext, late: PaymentEvidence): Promise<void> {
  const s = ctx.state;
  ctx.enter('REFUNDING', `refunding late payment ${late.tradeNo}`);
  s.note('LATE_PAYMENT', `Payment ${late.tradeNo} arrived for a closed order; refunding`);
  await refundInFull(ctx, late, 'late payment', 'payment arrived after the order was closed');
  await ctx.must('transitionOrder', 'local', 'mark order REFUNDED', {
    orderId: s.orderId,
    from: ['EXPIRED', 'CANCELLED', 'FAILED'],
    to: 'REFUNDED',
    reason: 'LATE_PAYMENT_REFUNDED',
    event: { type: 'ORDER_REFUNDED', message: `Late payment ${late.tradeNo} refunded in full` },
    payment: late,
  });
  s.settled('REFUNDED');
}
