/**
 * The review of a refund the provider accepted and later reported failed (src/db/refund-outcomes.ts: the refund FAILED,
 * the order NEEDS_REVIEW with reason REFUND_FAILED). The order's own workflow has ended by then, so this one takes the
 * operator's decision: one execution per failed refund (failedRefundReviewWorkflowId), started by the API with the
 * first decision (`POST /orders/:id/review`), so a retried decision reaches the same execution.
 *
 * Only `refund` settles it: the buyer was told the money went back. The amount (the decision's refundAmount, else the
 * failed refund's) is refunded under a new number, stable for that failed refund and amount (failedRefundRetryNo), and
 * the order goes back to the status it had (REFUNDED, or PAID when it kept its payment and another trade was refunded)
 * with a timeline entry. refundAmount 0 closes it without a refund: the operator states the money went back by other
 * means. A decision that cannot be carried out (the provider refuses the refund) is recorded, answered with the reason,
 * and the order stays in review for another decision. Deterministic: activities are imported as types only.
 */
import {
  ApplicationFailure,
  CancellationScope,
  allHandlersFinished,
  condition,
  continueAsNew,
  proxyActivities,
  setCurrentDetails,
  setHandler,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import { FailureType } from '../contracts/failures';
import {
  type FailedRefundReviewInput,
  type FailedRefundReviewResult,
  type OrderStatus,
  type ReviewDecision,
  type ReviewOutcome,
  REVIEW_DECISION_REFUSED,
  failedRefundApproveRefusal,
  failedRefundRetryNo,
  reviewDecisionProblem,
  sameReviewDecision,
  reviewDecisionUpdate,
} from '../contracts/order-workflow';
import { failedRefundOrderCheckStep } from './patches';
import { MUST, errorMessage, failedForGood, failureType } from './shared/steps';

const acts = proxyActivities<Activities>(MUST);

/** How long the review waits for a (further) decision before it ends, the order left in review for a new run. */
const DECISION_WAIT = '30 days';

/** Takes operators' decisions on one failed refund until one is carried out (see the file comment). */
export async function failedRefundReview(input: FailedRefundReviewInput): Promise<FailedRefundReviewResult> {
  const { orderId, failedOutRefundNo: failedNo } = input;
  let status: OrderStatus = 'NEEDS_REVIEW';
  /** The failed refund is settled (the order may still be in review, for another failed refund of it). */
  let settled = false;
  /** The decision being carried out, if any. */
  let decision: ReviewDecision | undefined;
  const failures = new Map<ReviewDecision, { type: string; message: string }>();

  setHandler(
    reviewDecisionUpdate,
    async (d): Promise<ReviewOutcome> => {
      // The same decision again while it is carried out (an operator's retry) waits for the same answer.
      const mine = decision && sameReviewDecision(decision, d) ? decision : d;
      decision ??= d;
      await condition(() => settled || status !== 'NEEDS_REVIEW' || decision !== mine);
      const failure = failures.get(mine);
      return failure ? { status, failure } : { status };
    },
    {
      validator: (d: ReviewDecision) => {
        const problem = reviewDecisionProblem(d);
        if (problem) throw new Error(problem);
        if (d.decision === 'approve')
          throw ApplicationFailure.create({
            type: REVIEW_DECISION_REFUSED,
            nonRetryable: true,
            message: failedRefundApproveRefusal(failedNo, input.provider),
          });
        if (d.refundAmount !== undefined && d.refundAmount > input.amount)
          throw ApplicationFailure.create({
            type: REVIEW_DECISION_REFUSED,
            nonRetryable: true,
            message: `refundAmount ${d.refundAmount} is more than the failed refund's ${input.amount} ${input.currency} (minor units)`,
          });
        if (settled || status !== 'NEEDS_REVIEW')
          throw new Error(`the failed refund ${failedNo} of order ${orderId} has been settled; the order is ${status}`);
        // Refused for good (not retried by the API): the decision being carried out may settle the refund.
        if (decision && !sameReviewDecision(decision, d))
          throw ApplicationFailure.create({
            type: REVIEW_DECISION_REFUSED,
            nonRetryable: true,
            message: `another decision on the failed refund ${failedNo} is being carried out`,
          });
      },
    },
  );

  for (;;) {
    setCurrentDetails(`refund ${failedNo} failed at ${input.provider}; waiting for an operator's refund decision`);
    // A decision accepted in the same activation as the wait's timer is carried out, not left behind: the handler
    // waits for it to be settled, so continuing as new only after allHandlersFinished would wait for ever.
    if (!(await condition(() => decision !== undefined, DECISION_WAIT)) && decision === undefined) {
      await condition(allHandlersFinished);
      // The same execution goes on waiting (a fresh history): the API starts this id only once
      // (REJECT_DUPLICATE), so a decision that finds it ended is refused, never given a second run that refunds again.
      await continueAsNew<typeof failedRefundReview>(input);
    }
    const d = decision!;
    if (failedRefundOrderCheckStep()) {
      const order = await acts.getOrderSnapshot(orderId);
      if (order?.status !== 'NEEDS_REVIEW') {
        const message = `order ${orderId} is ${order?.status ?? 'missing'}, no longer in review: failed refund ${failedNo} was settled another way; nothing refunded`;
        failures.set(d, { type: FailureType.ORDER_CONFLICT, message });
        status = order?.status ?? status;
        settled = true; // answers the decision even when the order row is gone (its status stays NEEDS_REVIEW here)
        await condition(allHandlersFinished);
        return { outcome: 'NOT_IN_REVIEW', status, detail: message };
      }
    }
    const amount = d.refundAmount ?? input.amount;
    const outRefundNo = amount > 0 ? failedRefundRetryNo(orderId, failedNo, amount) : undefined;
    try {
      if (outRefundNo === failedNo)
        throw ApplicationFailure.create({
          type: FailureType.ORDER_CONFLICT,
          nonRetryable: true,
          message: `refund number ${outRefundNo} is the failed refund's own`,
        });
      await CancellationScope.nonCancellable(async () => {
        if (outRefundNo) {
          setCurrentDetails(`refunding ${amount} ${input.currency} again under ${outRefundNo} (${d.operator})`);
          await acts.refundPayment({
            orderId,
            provider: input.provider,
            tradeNo: input.tradeNo,
            outRefundNo,
            amount,
            currency: input.currency,
            reason: `review refund by ${d.operator} after refund ${failedNo} failed: ${d.reason}`.slice(0, 255),
            // Checked again here, not only by the API when the decision came: a success reported since then refuses it.
            retriesFailedRefund: failedNo,
          });
        }
        const what = outRefundNo
          ? `refunded ${amount} ${input.currency} (minor units) again under ${outRefundNo}`
          : `closed it without a new refund (the money was returned by other means)`;
        const done = await acts.transitionOrder({
          orderId,
          from: ['NEEDS_REVIEW'],
          to: input.back,
          reason:
            input.back === 'PAID' ? 'LATE_TRADE_REFUNDED' : outRefundNo ? 'REFUND_RETRIED' : 'REFUND_FAILED_SETTLED',
          // The failed refund stays the latest when nothing is refunded again: this decision settles that one only.
          settlesFailedRefund: failedNo,
          event: {
            type: 'REFUND_FAILED_SETTLED_BY_REVIEW',
            message: `${d.operator} settled failed refund ${failedNo}: ${what}; ${d.reason}`,
            data: {
              operator: d.operator,
              decision: d.decision,
              failedOutRefundNo: failedNo,
              ...(outRefundNo ? { outRefundNo } : {}),
              amount,
            },
          },
        });
        // `back`, or NEEDS_REVIEW when another failed refund of the order is unsettled: in review for that one now.
        status = done.status;
      });
      settled = true;
      await condition(allHandlersFinished);
      return outRefundNo
        ? {
            outcome: 'REFUNDED',
            status,
            outRefundNo,
            detail: `refunded ${amount} ${input.currency} on ${d.operator}'s decision`,
          }
        : { outcome: 'CLOSED_WITHOUT_REFUND', status, detail: `closed by ${d.operator} without a new refund` };
    } catch (err) {
      if (!failedForGood(err)) throw err;
      const failure = { type: failureType(err) ?? FailureType.UNEXPECTED_ERROR, message: errorMessage(err) };
      await acts.recordOrderEvent({
        orderId,
        type: 'REVIEW_DECISION_FAILED',
        message: `${d.operator}'s refund after failed refund ${failedNo} could not be carried out (${failure.type}: ${failure.message}); waiting for another decision`,
        data: { failedOutRefundNo: failedNo, ...(outRefundNo ? { outRefundNo } : {}) },
      });
      failures.set(d, failure);
      decision = undefined;
    }
  }
}
