/**
 * Manual review: the order waits durably for an operator's decision (with a reminder on the timeline), then approves
 * (confirm, PAID, fulfilment) or refunds (refund, release or return everything, REFUNDED). A decision that cannot be
 * carried out (the provider refuses the refund, a TCC conflict) is recorded and answered to the operator; the order
 * stays in review for another decision instead of failing the workflow with nobody waiting.
 */
import type { SearchAttributeUpdatePair } from '@temporalio/common';
import { ApplicationFailure, condition, isCancellation, upsertSearchAttributes } from '@temporalio/workflow';
import { FailureType } from '../../contracts/failures';
import type { OrderPaymentResult, PaymentEvidence } from '../../contracts/order-workflow';
import { NeedsReviewKey, StuckKey } from '../../contracts/search-attributes';
import {
  afterApprovalFailureStep,
  evidenceAfterDecisionStep,
  reviewClearsStuckStep,
  reviewReminderBackoffStep,
  reviewRefundClosesStep,
} from '../patches';
import { MUST, errorMessage, failedForGood, failureType, runLocal } from '../shared/steps';
import { learnPaymentCloseFound } from './close';
import type { OrderContext } from './context';
import { coolOff } from './cooling-off';
import { refundInFull } from './refunds';

type End = Omit<OrderPaymentResult, 'orderId'>;

/** Automatic handling stopped (a TCC conflict, a refund the provider refuses): the order goes to a person, with why. */
export async function stopForReview(ctx: OrderContext, err: unknown): Promise<End> {
  const s = ctx.state;
  const type = failureType(err) ?? FailureType.UNEXPECTED_ERROR;
  s.reviewAfterPaid = s.paid;
  s.openReview();
  s.note('NEEDS_REVIEW', `Automatic handling stopped: ${type}: ${errorMessage(err)}`);
  upsertSearchAttributes([{ key: StuckKey, value: true }]);
  s.markedStuckForReview = true;
  await ctx.must('transitionOrder', 'local', 'mark order NEEDS_REVIEW', {
    orderId: s.orderId,
    from: ['AWAITING_PAYMENT', 'EXPIRED', 'CANCELLED', 'PAID'],
    to: 'NEEDS_REVIEW',
    reason: type,
    event: {
      type: 'ORDER_NEEDS_REVIEW',
      message: `Automatic handling stopped (${type}: ${errorMessage(err)}); an operator must decide`,
    },
  });
  s.inReview();
  return review(ctx, s.evidence, `${type}: ${errorMessage(err)}`);
}

export async function review(ctx: OrderContext, paid: PaymentEvidence | undefined, why: string): Promise<End> {
  const s = ctx.state;
  for (;;) {
    try {
      return await decideOnce(ctx, paid, why);
    } catch (err) {
      const d = s.reviewDecision;
      if (!d || !failedForGood(err)) throw err;
      const failure = { type: failureType(err) ?? FailureType.ACTIVITY_FAILED, message: errorMessage(err) };
      await runLocal('recordOrderEvent', MUST, 'review decision failed', {
        orderId: s.orderId,
        type: 'REVIEW_DECISION_FAILED',
        message: `${d.operator}'s decision to ${d.decision} could not be carried out (${failure.type}: ${failure.message}); waiting for another decision`,
      });
      upsertSearchAttributes([{ key: NeedsReviewKey, value: true }]);
      s.reviewFailed(d, failure);
      why = `the ${d.decision} decision failed: ${failure.message}`;
    }
  }
}

async function decideOnce(ctx: OrderContext, paid: PaymentEvidence | undefined, why: string): Promise<End> {
  const s = ctx.state;
  s.decided = true;
  ctx.enter('AWAITING_REVIEW', `waiting for an operator: ${why}`);
  ctx.publish();
  // The first wait is the interval; after a reminder the wait doubles (behind a patch, asked only then, so a review
  // decided before its first reminder records no marker).
  for (let sent = 0; !s.reviewDecision;) {
    const wait = sent > 0 && reviewReminderBackoffStep() ? s.reviewReminderDelay(sent) : s.reviewReminderMs;
    const got = await condition(() => s.reviewDecision !== undefined, wait, {
      summary: 'wait for a review decision',
    });
    if (!got) {
      await runLocal('recordOrderEvent', MUST, 'review reminder', {
        orderId: s.orderId,
        type: 'REVIEW_REMINDER',
        message: `Still waiting for a review decision: ${why}`,
      });
      sent++;
    }
  }
  const d = s.reviewDecision;
  const by = { operator: d.operator, decision: d.decision };
  // A review that opened with no payment known (a close the provider refused, say) may see the payment reported while
  // it waits: the decision is about that payment (a refund refunds it, an approval records it), never made without it.
  if (!paid && s.evidence && evidenceAfterDecisionStep()) paid = s.evidence;
  if (d.decision === 'approve') {
    ctx.enter('CONFIRMING', `approved by ${d.operator}`);
    await ctx.must('settlePaid', 'local', 'confirm everything; mark PAID (review approved)', {
      ...ctx.participants(),
      transition: {
        from: ['NEEDS_REVIEW'],
        to: 'PAID',
        reason: 'REVIEW_APPROVED',
        event: { type: 'ORDER_PAID', message: `Approved by ${d.operator}: ${d.reason}`, data: by },
        payment: paid,
      },
    });
    s.settled('PAID');
    ctx.publish(unstuck(ctx));
    // An order that was already PAID when it went to review (a step after PAID failed, e.g. the buyer's cooling-off
    // refund the provider refused) stays paid and goes to fulfilment: the refund asked for is closed by this decision.
    if (paid && !s.reviewAfterPaid) {
      try {
        return await coolOff(ctx, paid);
      } catch (err) {
        // The approval is carried out (PAID in MySQL): a failure after it (the buyer's refund in the window, refused) is
        // a new reason for a person, not this decision failing, and the order must say NEEDS_REVIEW for a decision to
        // reach it.
        if (isCancellation(err) || !failedForGood(err) || !afterApprovalFailureStep()) throw err;
        s.decisionCarriedOut();
        return stopForReview(ctx, err);
      }
    }
    if (s.reviewAfterPaid)
      s.note(
        'REVIEW_APPROVED',
        `${d.operator} kept the paid order; the buyer's refund request is closed by this decision`,
      );
    await ctx.must('handOff', 'local', 'hand off to fulfilment (outbox, review approved)', s.orderId);
    return { status: 'PAID', reason: 'REVIEW_APPROVED' };
  }
  ctx.enter('REFUNDING', `refund decided by ${d.operator}`);
  // No payment known, and the provider's payment never closed (the review opened because the close was refused): it is
  // closed first, so nobody can pay an order we release; a close that finds it paid refunds that payment.
  let amount = d.refundAmount;
  if (!paid && !s.closedAtProvider && reviewRefundClosesStep()) {
    paid = await closeBeforeRefund(ctx);
    // A payment found now was not known when the operator decided (who could name only 0 then): refunded in full.
    if (paid) amount = undefined;
  }
  // A payment whose amount is unknown fails the decision (REFUND_AMOUNT_UNKNOWN) rather than closing the order
  // unrefunded.
  if (paid) await refundInFull(ctx, paid, 'review', `review refund by ${d.operator}: ${d.reason}`, amount);
  await ctx.must('settleRefunded', 'local', 'release or return everything; mark REFUNDED (review)', {
    ...ctx.participants(),
    transition: {
      from: ['NEEDS_REVIEW'],
      to: 'REFUNDED',
      reason: 'REVIEW_REFUNDED',
      event: { type: 'ORDER_REFUNDED', message: `Refunded by ${d.operator}: ${d.reason}`, data: by },
    },
  });
  s.settled('REFUNDED');
  const clear = unstuck(ctx);
  if (clear.length) upsertSearchAttributes(clear);
  return { status: 'REFUNDED', reason: 'REVIEW_REFUNDED' };
}

/**
 * Closes the provider's payment of a review that knows no payment, before a refund decision releases the order: the
 * payment found paid when the close is refused so (the buyer paid during the review; its notification lost), or
 * undefined once it is closed. A close that fails for good while the payment can still be paid fails the decision
 * (recorded, answered to the operator: decide again after the provider's expiry), the order's stock still held; after
 * that expiry nobody can pay it, and the order is released (a payment made before it whose notification was lost is
 * found by reconciliation), so a close the provider refuses for good (revoked keys, say) never holds the order for good.
 */
async function closeBeforeRefund(ctx: OrderContext): Promise<PaymentEvidence | undefined> {
  const s = ctx.state;
  const expiry = s.providerExpiresAt;
  let closed;
  try {
    closed = await ctx.must('closeProviderPayment', 'task', `close ${ctx.provider} payment before the refund`, {
      orderId: s.orderId,
      provider: ctx.provider,
    });
  } catch (err) {
    if (isCancellation(err) || !failedForGood(err) || expiry === undefined) throw err;
    const why = errorMessage(err);
    if (Date.now() < expiry)
      throw ApplicationFailure.create({
        type: failureType(err) ?? FailureType.PROVIDER_REJECTED,
        message: `${ctx.provider} refused to close the payment (${why}); it can be paid until ${new Date(expiry).toISOString()}: decide again after then`,
        nonRetryable: true,
      });
    s.note(
      'CLOSE_FAILED',
      `${ctx.provider} refused to close the payment (${why}); it expired at the provider at ${new Date(expiry).toISOString()}, so nobody can pay it: releasing`,
    );
    s.closedAtProvider = true;
    return s.evidence;
  }
  if (closed.result === 'ALREADY_PAID')
    await learnPaymentCloseFound(ctx, 'The buyer paid during the review: that payment is refunded');
  else s.closedAtProvider = true;
  return s.evidence;
}

/**
 * The Stuck mark stopForReview set, cleared once the decision is carried out (behind `order-review-clears-stuck`,
 * asked only then): it stayed set, so an approved order in its cooling-off window fired PayflowOrdersStuck (critical)
 * for half an hour, and a closed one stayed listed by `Stuck = true`.
 */
function unstuck(ctx: OrderContext): SearchAttributeUpdatePair[] {
  const s = ctx.state;
  if (!s.markedStuckForReview || !reviewClearsStuckStep()) return [];
  s.markedStuckForReview = false;
  return [{ key: StuckKey, value: false }];
}
