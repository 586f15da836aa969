/**
 * A payment the provider reports after the order's workflow has finished (a late callback, later a
 * reconciliation finding). One workflow per provider trade: verify with the provider, then refund with a
 * stable refund number unless the payment is the one that paid the order. Never lost, never refunded twice.
 */
import { CancellationScope, proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { OrderSnapshot } from '../activities/orders';
import { FailureType } from '../contracts/failures';
import { type LatePaymentInput, type LatePaymentResult, autoRefundNo } from '../contracts/order-workflow';
import { lateRefundReviewStep } from './patches';
import { MUST, errorMessage, failedForGood, failureType } from './shared/steps';

const acts = proxyActivities<Activities>(MUST);

/** Verifies a late payment with the provider and refunds it when the order did not keep it. */
export async function latePayment(input: LatePaymentInput): Promise<LatePaymentResult> {
  const { outTradeNo: orderId } = input;
  setCurrentDetails(`verifying late payment ${input.tradeNo} for order ${orderId}`);
  const state = await acts.queryProviderPayment({ provider: input.provider, outTradeNo: orderId });
  if (state.status !== 'PAID' || state.tradeNo !== input.tradeNo) {
    return {
      outcome: 'NOT_PAID_AT_PROVIDER',
      detail: `provider reports ${state.status} for trade ${state.tradeNo ?? 'none'}`,
    };
  }
  const order = await acts.getOrderSnapshot(orderId);
  if (!order) return { outcome: 'UNKNOWN_ORDER', detail: `no order ${orderId}; left for reconciliation and review` };
  if (order.provider !== input.provider) {
    // One provider's trade never speaks for an order paid with another: nothing is refunded or changed.
    return {
      outcome: 'PROVIDER_MISMATCH',
      detail: `order ${orderId} pays with ${order.provider}, not ${input.provider}; nothing changed`,
    };
  }
  if (order.status === 'PAID' && order.paidTradeNo === input.tradeNo) {
    return { outcome: 'ALREADY_CONFIRMED', detail: 'this payment already paid the order (a redelivered notification)' };
  }
  if (order.status === 'NEEDS_REVIEW' || order.status === 'AWAITING_PAYMENT') {
    await acts.recordOrderEvent({
      orderId,
      type: 'LATE_PAYMENT_SEEN',
      message: `Payment ${input.tradeNo} reported while the order is ${order.status}; left for review`,
    });
    return { outcome: 'LEFT_FOR_REVIEW', detail: `order is ${order.status}` };
  }
  if (order.status === 'REFUNDED' && order.paidTradeNo === input.tradeNo) {
    return { outcome: 'REFUNDED', detail: 'already refunded' };
  }
  // The order is closed (EXPIRED, CANCELLED, FAILED) or was paid by another trade: this money is not ours to keep.
  // Behind the patch `late-payment-refund-review`: a refund that cannot be made goes to review instead of failing.
  if (lateRefundReviewStep()) return refundOrReview(input, order, state);
  const amount = state.paidAmount ?? 0;
  const currency = state.currency ?? order.currency;
  setCurrentDetails(`refunding ${amount} ${currency} of late payment ${input.tradeNo}`);
  await CancellationScope.nonCancellable(async () => {
    await acts.refundPayment({
      orderId,
      provider: input.provider,
      tradeNo: input.tradeNo,
      outRefundNo: autoRefundNo(orderId, input.tradeNo),
      amount,
      currency,
      reason: `payment arrived after the order was ${order.status}`,
    });
    if (order.status !== 'PAID') await markLateRefunded(input, amount, currency, state);
  });
  return { outcome: 'REFUNDED', detail: `refunded ${amount} ${currency}` };
}

/**
 * Refunds the late trade in full; when that cannot be done (the provider did not say how much was paid, or refuses the
 * refund), the order goes to NEEDS_REVIEW with the reason and the timeline says why, so the money held is seen by a
 * person (review gauge and alert) instead of the workflow failing with nothing recorded.
 */
async function refundOrReview(
  input: LatePaymentInput,
  order: OrderSnapshot,
  state: Awaited<ReturnType<Activities['queryProviderPayment']>>,
): Promise<LatePaymentResult> {
  const { outTradeNo: orderId, tradeNo } = input;
  const currency = state.currency ?? order.currency;
  const amount = state.paidAmount;
  if (amount === undefined || amount <= 0) {
    return leaveForReview(
      input,
      order,
      `${input.provider} reports trade ${tradeNo} paid without a paid amount (${amount ?? 'none'}); nothing was refunded`,
    );
  }
  setCurrentDetails(`refunding ${amount} ${currency} of late payment ${tradeNo}`);
  let refused: string | undefined;
  await CancellationScope.nonCancellable(async () => {
    try {
      await acts.refundPayment({
        orderId,
        provider: input.provider,
        tradeNo,
        outRefundNo: autoRefundNo(orderId, tradeNo),
        amount,
        currency,
        reason: `payment arrived after the order was ${order.status}`,
      });
    } catch (err) {
      // A business refusal (non-retryable); transport faults are retried by the activity until they pass.
      if (!failedForGood(err)) throw err;
      refused = `the refund of ${amount} ${currency} was refused (${failureType(err) ?? FailureType.UNEXPECTED_ERROR}: ${errorMessage(err)})`;
      return;
    }
    if (order.status !== 'PAID') await markLateRefunded(input, amount, currency, state);
  });
  if (refused) return leaveForReview(input, order, refused);
  return { outcome: 'REFUNDED', detail: `refunded ${amount} ${currency}` };
}

/**
 * A closed order (EXPIRED, CANCELLED, FAILED) whose late trade was refunded in full becomes REFUNDED, with that trade.
 */
async function markLateRefunded(
  input: LatePaymentInput,
  amount: number,
  currency: string,
  state: Awaited<ReturnType<Activities['queryProviderPayment']>>,
): Promise<void> {
  const { outTradeNo: orderId, tradeNo } = input;
  await acts.transitionOrder({
    orderId,
    from: ['EXPIRED', 'CANCELLED', 'FAILED'],
    to: 'REFUNDED',
    reason: 'LATE_PAYMENT_REFUNDED',
    event: { type: 'ORDER_REFUNDED', message: `Late payment ${tradeNo} refunded in full` },
    payment: {
      source: 'callback',
      tradeNo,
      amount,
      currency,
      merchantId: state.merchantId ?? '',
      paidAt: state.paidAt ?? new Date().toISOString(),
      notificationId: input.notificationId,
    },
  });
}

/** Records why a late trade was not refunded and moves the order to NEEDS_REVIEW (whatever it was), for an operator. */
async function leaveForReview(input: LatePaymentInput, order: OrderSnapshot, why: string): Promise<LatePaymentResult> {
  const { outTradeNo: orderId, tradeNo } = input;
  setCurrentDetails(`late payment ${tradeNo} not refunded: ${why}; order left for review`);
  await CancellationScope.nonCancellable(async () => {
    await acts.recordOrderEvent({
      orderId,
      type: 'LATE_PAYMENT_REFUND_FAILED',
      message: `Payment ${tradeNo} arrived after the order was ${order.status} and was not refunded: ${why}`,
      data: { tradeNo, provider: input.provider },
    });
    await acts.transitionOrder({
      orderId,
      from: ['EXPIRED', 'CANCELLED', 'FAILED', 'PAID', 'REFUNDED'],
      to: 'NEEDS_REVIEW',
      reason: 'LATE_PAYMENT_REFUND_FAILED',
      event: {
        type: 'ORDER_NEEDS_REVIEW',
        message: `Late payment ${tradeNo} could not be refunded (${why}); an operator must decide`,
        data: { tradeNo },
      },
    });
  });
  return { outcome: 'LEFT_FOR_REVIEW', detail: why };
}
