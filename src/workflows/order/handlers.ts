/**
 * The order's messages: the status query, the early-return update, the payment signal and the updates of buyers,
 * operators and support. Each handler only asks the state (`OrderState`) and waits for it; the phases act.
 */
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  setHandler,
  upsertSearchAttributes,
  uuid4,
} from '@temporalio/workflow';
import {
  type ReviewDecision,
  reviewDecisionProblem,
  cancelOrderUpdate,
  coolingOffRefundUpdate,
  escalateUpdate,
  paymentNotifiedSignal,
  paymentReadyUpdate,
  REVIEW_DECISION_REFUSED,
  reviewDecisionUpdate,
  statusQuery,
  type EscalationResult,
  type OrderWorkflowStatus,
  type ReviewOutcome,
} from '../../contracts/order-workflow';
import { EscalatedAtKey, EscalatedKey } from '../../contracts/search-attributes';
import { MUST, QUERY, errorMessage, run, runLocal } from '../shared/steps';
import { escalationLateWatchStep, handlersAfterCancelStep } from '../patches';
import type { OrderContext } from './context';
import { WAITING_STAGES } from './state';

const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());

/**
 * An update handler runs in the workflow's root scope (unless it came with the start: buffered, it is dispatched
 * inside the lifecycle's own non-cancellable scope), which a cancel through Temporal cancels while the lifecycle,
 * non-cancellable, goes on to a safe end (for days, when the order is in review): every wait and activity of a
 * handler running then, or started after, was rejected, so an operator's decision, carried out, was answered as
 * failed, a buyer's cooling-off refund, made, was answered as refused, and escalations failed. A handler in the root
 * scope runs non-cancellable (behind `order-handlers-after-cancel`, asked only there). The early-return update is
 * not wrapped: a happy-path order records no marker.
 */
function shielded<A extends unknown[], R>(handler: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return (...args) =>
    CancellationScope.current().cancellable && handlersAfterCancelStep()
      ? CancellationScope.nonCancellable(() => handler(...args))
      : handler(...args);
}

export function registerHandlers(ctx: OrderContext): void {
  const s = ctx.state;

  setHandler(statusQuery, (): OrderWorkflowStatus => ({
    orderId: s.orderId,
    stage: s.stage,
    status: s.status,
    amount: s.amount,
    currency: s.currency,
    deadline: iso(s.deadline),
    nextCheckAt: iso(s.nextCheckAt),
    queryAttempts: s.queryAttempts,
    timeline: s.timeline,
  }));

  // Not wrapped: every order's own update (the payment URL) must record no marker. The API sends it with the start, so
  // it runs in the lifecycle's non-cancellable scope anyway; only one sent on its own later sees a cancel.
  setHandler(paymentReadyUpdate, async () => {
    await condition(() => s.ready !== undefined);
    const ready = s.ready!;
    if (ready.ok) return ready.value;
    throw ApplicationFailure.create({
      type: ready.type,
      message: ready.message,
      details: [ready.details],
      nonRetryable: true,
    });
  });

  setHandler(paymentNotifiedSignal, (n) => void s.notify(n));

  setHandler(
    cancelOrderUpdate,
    shielded(async ({ reason }: { reason?: string }) => {
      s.requestCancel(reason, 'buyer');
      await condition(() => s.decided || s.finished);
      return { status: s.status };
    }),
    {
      validator: (_request: { reason?: string }) => {
        const refused = s.cancelRefusal();
        if (refused) throw new Error(refused);
      },
    },
  );

  setHandler(
    reviewDecisionUpdate,
    shielded(async (sent: ReviewDecision): Promise<ReviewOutcome> => {
      // The same decision again while it is carried out (an operator's retry, a double click) waits for its answer.
      // Accepted only by validators that know this (they do not run on replay), so no earlier history has such an
      // update: no patch.
      const joined = s.decisionToJoin(sent);
      const d = joined ?? sent;
      if (!joined) {
        s.reviewDecision = d;
        s.note('REVIEW_DECIDED', `${d.operator} decided to ${d.decision}: ${d.reason}`);
      }
      // Done when the order left review, or when this decision failed and the order waits for another. Accepted while
      // the order is still being marked (stage NEEDS_REVIEW): wait for that too, so the answer is never the status
      // from before the review.
      await condition(() => s.reviewSettled(d));
      const failure = s.reviewFailures.get(d);
      return failure ? { status: s.status, failure } : { status: s.status };
    }),
    {
      validator: (d: ReviewDecision) => {
        const problem = reviewDecisionProblem(d);
        if (problem) throw new Error(problem);
        if (s.decisionToJoin(d)) return;
        const refusal = s.reviewRefusal(d);
        if (!refusal) return;
        // Waiting for a decision, but not this one (an approval with no payment known, of a refunded order): typed, so
        // the API answers the operator at once instead of waiting for a review the order is already in.
        if (s.awaitingReviewDecision)
          throw ApplicationFailure.create({ type: REVIEW_DECISION_REFUSED, message: refusal, nonRetryable: true });
        throw new Error(refusal);
      },
    },
  );

  setHandler(
    coolingOffRefundUpdate,
    shielded(async (r: { reason?: string }) => {
      s.refundRequest ??= r;
      await condition(() => s.status !== 'PAID' || s.finished);
      return { status: s.status, refundNo: s.refundNo };
    }),
    {
      validator: (_request: { reason?: string }) => {
        const refusal = s.refundRefusal();
        if (refusal) throw new Error(refusal);
      },
    },
  );

  setHandler(
    escalateUpdate,
    shielded(async ({ note: buyerNote }: { note?: string }): Promise<EscalationResult> => {
      // The time is the first escalation's, kept on later ones.
      s.escalatedAt ??= new Date();
      upsertSearchAttributes([
        { key: EscalatedKey, value: true },
        { key: EscalatedAtKey, value: s.escalatedAt },
      ]);
      s.note('ESCALATED', 'Buyer asked for help; querying the provider now');
      let providerStatus = 'UNKNOWN';
      let providerState: Record<string, unknown> = {};
      let lateFound = false;
      try {
        const state = await run('queryProviderPayment', QUERY, `query ${ctx.provider} for support`, {
          provider: ctx.provider,
          outTradeNo: s.orderId,
        });
        providerStatus = state.status;
        providerState = { ...state };
        if (state.status === 'PAID' && WAITING_STAGES.includes(s.stage) && s.found(state, 'query')) {
          s.note('PAYMENT_FOUND_BY_QUERY', 'Support query found the payment; confirming now');
        } else if (
          state.status === 'PAID' &&
          s.lateWatchOpen &&
          !s.evidence &&
          escalationLateWatchStep() &&
          s.found(state, 'query')
        ) {
          // Paid after the close: the watch wakes on it and refunds it now, not when the watch ends.
          lateFound = true;
          s.note('LATE_PAYMENT_FOUND_BY_QUERY', 'Support query found a payment made after the close; refunding it now');
        }
      } catch (err) {
        providerState = { error: errorMessage(err) };
      }
      const resolution = lateFound ? 'LATE_PAYMENT_FOUND' : s.escalationResolution();
      const ticketId = `tkt-${uuid4()}`;
      await runLocal('createSupportTicket', MUST, 'record support ticket', {
        ticketId,
        orderId: s.orderId,
        orderStatus: s.status,
        stage: s.stage,
        providerStatus,
        resolution,
        snapshot: {
          stage: s.stage,
          status: s.status,
          deadline: s.deadline,
          queryAttempts: s.queryAttempts,
          timeline: s.timeline,
          provider: providerState,
        },
        note: buyerNote,
      });
      return { ticketId, orderId: s.orderId, status: s.status, stage: s.stage, providerStatus, resolution };
    }),
  );
}
