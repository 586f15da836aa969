/**
 * A payment the provider reports after the order's workflow has finished (a late callback, later a
 * reconciliation finding). One workflow per provider trade: verify with the provider, then refund with a
 * stable refund number unless the payment is the one that paid the order. Never lost, never refunded twice.
 */
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { OrderSnapshot } from '../activities/orders';
import { FailureType } from '../contracts/failures';
import {
  LATE_PAYMENT_RECHECK_DELAYS_MS,
  LATE_PAYMENT_REVIEW_POLL_MS,
  type LatePaymentInput,
  type LatePaymentResult,
  type OrderStatus,
  type PaymentEvidence,
  type ReviewDecision,
  type ReviewOutcome,
  REVIEW_DECISION_REFUSED,
  autoRefundNo,
  reviewRefundNo,
  reviewDecisionProblem,
  sameReviewDecision,
  reviewDecisionUpdate,
} from '../contracts/order-workflow';
import { NeedsReviewKey, OrderStatusKey } from '../contracts/search-attributes';
import {
  lateRecheckStep,
  lateRefundReviewStep,
  lateReviewDecisionStep,
  lateUnknownPayingTradeStep,
  lateQueryRefusedStep,
  lateOwnReviewTakeoverStep,
  lateQueryRefusedOwnTradeStep,
  lateUnknownReviewStep,
  lateWaitReviewStep,
  lateReviewEntryStep,
} from './patches';
import { MUST, errorMessage, failedForGood, failureType } from './shared/steps';

/** What the provider's query reported about the late trade. */
type ProviderState = Awaited<ReturnType<Activities['queryProviderPayment']>>;

const acts = proxyActivities<Activities>(MUST);

/** Verifies a late payment with the provider and refunds it when the order did not keep it. */
export async function latePayment(input: LatePaymentInput): Promise<LatePaymentResult> {
  const { outTradeNo: orderId } = input;
  setCurrentDetails(`verifying late payment ${input.tradeNo} for order ${orderId}`);
  const first = await queryTrade(input);
  if ('refused' in first) return queryRefused(input, first.refused);
  let state = first.state;
  if (notShownYet(state) && lateRecheckStep()) {
    const checked = await recheck(input, state);
    if (checked.refused !== undefined) return queryRefused(input, checked.refused);
    state = checked.state;
    if (checked.unverified) return checked.unverified;
  }
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
  const own = ownTradeSettled(order, input.tradeNo);
  if (own) return own;
  if (order.status === 'NEEDS_REVIEW' || order.status === 'AWAITING_PAYMENT') return heldElsewhere(input, order, state);
  // PAID by a trade the provider did not name (a query that answered without one): this trade may be that very one.
  if (
    order.status === 'PAID' &&
    (order.paidTradeNo === null || order.paidTradeNo === 'unknown') &&
    lateUnknownPayingTradeStep()
  ) {
    await acts.recordOrderEvent({
      orderId,
      type: 'LATE_PAYMENT_SEEN',
      message: `Payment ${input.tradeNo} reported for an order paid by a trade the provider did not name: it may be that trade; left for review, not refunded`,
    });
    // Behind `late-payment-unknown-paying-trade-review`: a review an operator can decide (refund it, or approve it as
    // the trade that paid), instead of an end with nothing to decide on (and a new run at every report of the trade).
    if (lateUnknownReviewStep())
      return leaveForReview(
        input,
        order,
        `the order is PAID by a trade ${input.provider} did not name, and ${input.tradeNo} may be that trade: approve it as the paying trade, or refund it`,
        state,
      );
    upsertSearchAttributes([{ key: NeedsReviewKey, value: true }]);
    return { outcome: 'LEFT_FOR_REVIEW', detail: 'the order is PAID by a trade the provider did not name' };
  }
  // The order is closed (EXPIRED, CANCELLED, FAILED) or was paid by another trade: this money is not ours to keep.
  // Behind the patch `late-payment-refund-review`: a refund that cannot be made goes to review instead of failing.
  if (lateRefundReviewStep()) return refundOrReview(input, order, state);
  const amount = state.paidAmount ?? 0;
  const currency = state.currency ?? order.currency;
  setCurrentDetails(`refunding ${amount} ${currency} of late payment ${input.tradeNo}`);
  await CancellationScope.nonCancellable(async () => {
    await refundTrade(input, amount, currency, `payment arrived after the order was ${order.status}`);
    if (order.status !== 'PAID') await markLateRefunded(input, amount, currency, state);
  });
  return { outcome: 'REFUNDED', detail: `refunded ${amount} ${currency}` };
}

/** Looks this many times before continuing as new (a review can last weeks: the history stays short). */
const REVIEW_POLLS_PER_RUN = 100;

/**
 * The order is in review, held by another workflow (a failed refund's review, another late trade's): what this trade's
 * money should become depends on its outcome (kept as the paying trade, or refunded). Looks again every
 * `reviewPollMs`; once the order has left review, the run starts over as new and decides the trade as any late trade
 * (a review that approved this very trade finds it ALREADY_CONFIRMED).
 */
async function waitOutReview(input: LatePaymentInput): Promise<LatePaymentResult> {
  const { outTradeNo: orderId, tradeNo } = input;
  setCurrentDetails(`late payment ${tradeNo} waits until order ${orderId} leaves review, then is decided`);
  // Listed with the orders in review (NeedsReview = true): a trade waiting on a review nobody decides is seen.
  upsertSearchAttributes([{ key: NeedsReviewKey, value: true }]);
  for (let polls = 0; polls < REVIEW_POLLS_PER_RUN; polls++) {
    await sleep(input.reviewPollMs ?? LATE_PAYMENT_REVIEW_POLL_MS);
    const now = await acts.getOrderSnapshot(orderId);
    if (now?.status !== 'NEEDS_REVIEW') break;
  }
  return continueAsNew<typeof latePayment>({ ...input, seenInReview: true });
}

/**
 * The provider refused to say what became of the late trade: the order goes to review with why (a person sees the
 * money that may be held), and an operator's refund decision asks the provider again. An unknown order is left to
 * reconciliation, which reports the bill's trade.
 */
async function queryRefused(input: LatePaymentInput, err: unknown): Promise<LatePaymentResult> {
  const why = `${input.provider} refused the query of trade ${input.tradeNo} (${failureType(err) ?? FailureType.UNEXPECTED_ERROR}: ${errorMessage(err)}); nothing was refunded`;
  const order = await acts.getOrderSnapshot(input.outTradeNo);
  if (!order) return { outcome: 'UNKNOWN_ORDER', detail: `no order ${input.outTradeNo}; ${why}` };
  if (order.provider !== input.provider)
    return { outcome: 'PROVIDER_MISMATCH', detail: `order ${input.outTradeNo} pays with ${order.provider}; ${why}` };
  // In a review held by another workflow (its decisions are routed there), or waiting: as for any late trade then.
  if (order.status === 'NEEDS_REVIEW' || order.status === 'AWAITING_PAYMENT') return heldElsewhere(input, order);
  // The order's own paying trade reported again (a redelivery with a new id, Alipay's TRADE_FINISHED after its
  // TRADE_SUCCESS): answered as the query path answers it, never sent to review, where approvals are refused. (A trade
  // that may be the paying one, the order PAID by a trade the provider did not name, still goes to review: a refund
  // decision with refundAmount 0 closes it without refunding.) Behind `late-payment-query-refused-own-trade`.
  const own = ownTradeSettled(order, input.tradeNo);
  if (own && lateQueryRefusedOwnTradeStep()) return own;
  return leaveForReview(input, order, why);
}

/** The trade is the order's own paying trade and the order is settled by it (PAID, or REFUNDED): nothing to do. */
function ownTradeSettled(order: OrderSnapshot, tradeNo: string): LatePaymentResult | undefined {
  if (order.paidTradeNo !== tradeNo) return undefined;
  if (order.status === 'PAID')
    return { outcome: 'ALREADY_CONFIRMED', detail: 'this payment already paid the order (a redelivered notification)' };
  if (order.status === 'REFUNDED') return { outcome: 'REFUNDED', detail: 'already refunded' };
  return undefined;
}

/**
 * The provider's answer about the order's latest trade, or its refusal (a business error, not retried; transport
 * faults are retried by the activity until they pass). A refusal is returned only behind the patch
 * `late-payment-query-refused`: before it, the run failed with nothing recorded.
 */
async function queryTrade(input: LatePaymentInput): Promise<{ state: ProviderState } | { refused: unknown }> {
  try {
    return { state: await acts.queryProviderPayment({ provider: input.provider, outTradeNo: input.outTradeNo }) };
  } catch (err) {
    if (!failedForGood(err) || !lateQueryRefusedStep()) throw err;
    return { refused: err };
  }
}

/**
 * The order is in review (held by another workflow) or still waiting for payment (its own workflow gone): the trade is
 * noted on the timeline; behind `late-payment-wait-review`, a review is waited out and the trade then decided,
 * otherwise it is left for a person.
 */
async function heldElsewhere(
  input: LatePaymentInput,
  order: OrderSnapshot,
  /** The provider's account of the trade, when its query answered (not after a refused one). */
  state?: ProviderState,
): Promise<LatePaymentResult> {
  // The review may be this trade's own, opened by an earlier run of this workflow id that has ended without taking its
  // decision (terminated, failed, reset, or one from before runs waited for their decisions): the API routes that
  // review's decisions to this id's latest run, this one, so it takes the review over instead of waiting it out (it
  // would wait for itself, every decision refused for want of a handler). Behind `late-payment-own-review-takeover`.
  if (order.status === 'NEEDS_REVIEW' && lateOwnReviewTakeoverStep()) {
    const review = await acts.lateReviewOf(input.outTradeNo);
    if (review?.tradeNo === input.tradeNo) {
      await acts.recordOrderEvent({
        orderId: input.outTradeNo,
        type: 'LATE_PAYMENT_REVIEW_RESUMED',
        message: `Payment ${input.tradeNo} reported again while the order waits in the review it opened, whose workflow had ended: this run takes the decision`,
      });
      // Carried out as that review would have: a refund returns the order to the status it had before it (PAID when it
      // keeps another trade, when no entry says). A review opened on a PAID order whose paying trade is unknown, or is
      // this very trade (a refused query sent it there before `late-payment-query-refused-own-trade`), may also approve
      // the trade as the one that paid, as the original review could: the provider has just shown it paid.
      // (An entry from NEEDS_REVIEW, which a lateReviewOf before it skipped them may have recorded, says nothing.)
      const opened = review.from === 'NEEDS_REVIEW' ? null : review.from;
      const from: OrderStatus =
        opened ?? (order.paidTradeNo !== null && order.paidTradeNo !== input.tradeNo ? 'PAID' : 'EXPIRED');
      const mayBePaying =
        from === 'PAID' &&
        (order.paidTradeNo === null || order.paidTradeNo === 'unknown' || order.paidTradeNo === input.tradeNo);
      const keepable =
        mayBePaying && state?.status === 'PAID' && state.tradeNo === input.tradeNo && state.paidAmount
          ? state
          : undefined;
      return awaitRefundDecision(
        input,
        { ...order, status: from },
        'the review this trade opened, resumed by a new run',
        keepable,
      );
    }
  }
  const waits = order.status === 'NEEDS_REVIEW' && lateWaitReviewStep();
  if (!(waits && input.seenInReview))
    await acts.recordOrderEvent({
      orderId: input.outTradeNo,
      type: 'LATE_PAYMENT_SEEN',
      message: waits
        ? `Payment ${input.tradeNo} reported while the order is in review; decided once the review is over`
        : `Payment ${input.tradeNo} reported while the order is ${order.status}; left for review`,
    });
  if (waits) return waitOutReview(input);
  return { outcome: 'LEFT_FOR_REVIEW', detail: `order is ${order.status}` };
}

/**
 * The provider's query does not show the trade paid yet (waiting, unknown, or closed as it was before the payment): its
 * query can lag the notification it signed. REFUNDED or PAID (by this trade or another) is an answer.
 */
function notShownYet(state: ProviderState): boolean {
  return state.status === 'PENDING' || state.status === 'NOT_FOUND' || state.status === 'CLOSED';
}

/**
 * Queries the provider again, on a backoff, while it does not show the trade yet: a signed notification said it was
 * paid, so one stale answer is no proof that it was not (the callback is acknowledged and the inbox marks it handed
 * over: nobody would report it again before the next bill). When the trade never shows, the order's timeline says so
 * (LATE_PAYMENT_UNVERIFIED: reconciliation will find the payment in the bill if it was made) and the answer is
 * NOT_PAID_AT_PROVIDER, which a later report of the trade starts a new run after.
 */
async function recheck(
  input: LatePaymentInput,
  first: ProviderState,
): Promise<{ state: ProviderState; unverified?: LatePaymentResult; refused?: unknown }> {
  const { outTradeNo: orderId, tradeNo } = input;
  const delays = input.recheckDelaysMs ?? LATE_PAYMENT_RECHECK_DELAYS_MS;
  let state = first;
  let waited = 0;
  for (const [i, delay] of delays.entries()) {
    setCurrentDetails(
      `${input.provider} reports ${state.status} for order ${orderId}, not trade ${tradeNo} paid; query ${i + 2} of ${delays.length + 1} in ${Math.round(delay / 1000)} s`,
    );
    await sleep(delay);
    waited += delay;
    const answer = await queryTrade(input);
    if ('refused' in answer) return { state, refused: answer.refused };
    state = answer.state;
    if (!notShownYet(state)) return { state };
  }
  const detail = `${input.provider} still reports ${state.status} for trade ${tradeNo} after ${delays.length + 1} queries over ${Math.round(waited / 1000)} s`;
  if (await acts.getOrderSnapshot(orderId))
    await acts.recordOrderEvent({
      orderId,
      type: 'LATE_PAYMENT_UNVERIFIED',
      message: `A signed notification reported trade ${tradeNo} paid, but ${detail}; nothing refunded: reconciliation checks it against the bill`,
    });
  return { state, unverified: { outcome: 'NOT_PAID_AT_PROVIDER', detail } };
}

/**
 * Refunds the late trade in full; when that cannot be done (the provider did not say how much was paid, or refuses the
 * refund), the order goes to NEEDS_REVIEW with the reason and the timeline says why, so the money held is seen by a
 * person (review gauge and alert) instead of the workflow failing with nothing recorded.
 */
async function refundOrReview(
  input: LatePaymentInput,
  order: OrderSnapshot,
  state: ProviderState,
): Promise<LatePaymentResult> {
  const { tradeNo } = input;
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
      await refundTrade(input, amount, currency, `payment arrived after the order was ${order.status}`);
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
 * Refunds the late trade under its stable refund number (an operator's named amount under its own), so no retry or
 * second decision refunds twice.
 */
function refundTrade(
  input: LatePaymentInput,
  amount: number,
  currency: string,
  reason: string,
  outRefundNo?: string,
  /** The failed refund this one pays again: refused if its provider has since reported it succeeded. */
  retriesFailedRefund?: string,
) {
  return acts.refundPayment({
    orderId: input.outTradeNo,
    provider: input.provider,
    tradeNo: input.tradeNo,
    outRefundNo: outRefundNo ?? autoRefundNo(input.outTradeNo, input.tradeNo),
    amount,
    currency,
    reason,
    ...(retriesFailedRefund ? { retriesFailedRefund } : {}),
  });
}

/**
 * A closed order (EXPIRED, CANCELLED, FAILED) whose late trade was refunded in full becomes REFUNDED, with that trade.
 */
async function markLateRefunded(
  input: LatePaymentInput,
  amount: number,
  currency: string,
  state: ProviderState,
): Promise<void> {
  const { outTradeNo: orderId, tradeNo } = input;
  await acts.transitionOrder({
    orderId,
    from: ['EXPIRED', 'CANCELLED', 'FAILED'],
    to: 'REFUNDED',
    reason: 'LATE_PAYMENT_REFUNDED',
    event: { type: 'ORDER_REFUNDED', message: `Late payment ${tradeNo} refunded in full` },
    payment: lateTradeEvidence(input, amount, currency, state),
  });
}

/** The late trade as payment evidence, for the order that records it when the trade is refunded. */
function lateTradeEvidence(
  input: LatePaymentInput,
  amount: number,
  currency: string,
  state: ProviderState,
): PaymentEvidence {
  return {
    source: 'callback',
    tradeNo: input.tradeNo,
    amount,
    currency,
    merchantId: state.merchantId ?? '',
    paidAt: state.paidAt ?? new Date().toISOString(),
    notificationId: input.notificationId,
  };
}

/**
 * Records why a late trade was not refunded and moves the order to NEEDS_REVIEW (whatever it was), for an operator.
 * With `keepable` (the provider's account of the trade), the trade may be the order's own paying trade, and an
 * approval records it as such.
 */
async function leaveForReview(
  input: LatePaymentInput,
  order: OrderSnapshot,
  why: string,
  keepable?: ProviderState,
): Promise<LatePaymentResult> {
  const { outTradeNo: orderId, tradeNo } = input;
  if (lateReviewEntryStep()) {
    // One transaction: the order to NEEDS_REVIEW and the entry the API routes this review's decisions by, on the order
    // as this run saw it. An order in another review is waited out, and one that changed meanwhile (another review
    // settled) is decided again from the start: what this review would offer (approve the trade as the paying one,
    // where the order goes back to) was worked out on the order as it was.
    setCurrentDetails(`late payment ${tradeNo} not refunded: ${why}; opening its review`);
    const entered = await CancellationScope.nonCancellable(() =>
      acts.enterLateReview({
        orderId,
        tradeNo,
        provider: input.provider,
        why,
        seen: { status: order.status, paidTradeNo: order.paidTradeNo },
      }),
    );
    if (entered.outcome === 'held') return waitOutReview(input);
    if (entered.outcome === 'changed') return continueAsNew<typeof latePayment>(input);
    return awaitRefundDecision(input, { ...order, status: entered.from }, why, keepable);
  }
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
  // Behind the patch `late-payment-review-decision`: the workflow stays to take the operator's decision.
  if (lateReviewDecisionStep()) return awaitRefundDecision(input, order, why, keepable);
  return { outcome: 'LEFT_FOR_REVIEW', detail: why };
}

/**
 * Waits for an operator's decision on a late trade this workflow could not refund (`POST /orders/:id/review` routes it
 * here by the order's status reason, LATE_PAYMENT_REFUND_FAILED). Only `refund` settles it: the money is never the
 * order's to keep. The provider is asked again for the trade's paid amount, the trade is refunded in full under its
 * stable refund number (a retry or a second decision can never refund twice), and the order goes back where it was:
 * PAID when it kept another trade, else REFUNDED. A decision that cannot be carried out (the provider refuses again)
 * is recorded, answered with the reason, and the workflow waits for another.
 */
async function awaitRefundDecision(
  input: LatePaymentInput,
  order: OrderSnapshot,
  why: string,
  keepable?: ProviderState,
): Promise<LatePaymentResult> {
  const { outTradeNo: orderId, tradeNo } = input;
  let status: OrderStatus = 'NEEDS_REVIEW';
  let decision: ReviewDecision | undefined;
  const failures = new Map<ReviewDecision, { type: string; message: string }>();
  setHandler(
    reviewDecisionUpdate,
    async (sent): Promise<ReviewOutcome> => {
      // The same decision again while it is carried out waits for its answer (no earlier history has one: validators
      // that refused it do not run on replay).
      const d = decision && sameReviewDecision(decision, sent) ? decision : sent;
      decision = d;
      await condition(() => status !== 'NEEDS_REVIEW' || decision !== d);
      const failure = failures.get(d);
      return failure ? { status, failure } : { status };
    },
    {
      validator: (d: ReviewDecision) => {
        // Refusals of the decision itself are typed, so the API answers the operator at once (409
        // REVIEW_DECISION_REFUSED); an untyped refusal is retried as a workflow not yet waiting, then answered
        // ORDER_NOT_IN_REVIEW, which this review is not. (Validators do not run on replay: no patch.)
        const refuse = (message: string) =>
          ApplicationFailure.create({ type: REVIEW_DECISION_REFUSED, message, nonRetryable: true });
        const problem = reviewDecisionProblem(d);
        if (problem) throw refuse(problem);
        if (status === 'NEEDS_REVIEW' && decision && sameReviewDecision(decision, d)) return;
        if (status !== 'NEEDS_REVIEW' || decision)
          throw new Error(`late payment ${tradeNo} of order ${orderId} is not waiting for a decision`);
        if (d.decision === 'approve' && !keepable)
          throw refuse(`a late payment is never kept: only a refund decision settles trade ${tradeNo}`);
        if (d.decision === 'approve' && !(keepable?.tradeNo === tradeNo && keepable.paidAmount))
          throw refuse(
            `${input.provider} reported no paid amount for trade ${tradeNo}: it cannot be recorded as the paying trade`,
          );
      },
    },
  );
  // Listed with the orders in review (NeedsReview = true), as the order's own workflow would be.
  upsertSearchAttributes([
    { key: OrderStatusKey, value: 'NEEDS_REVIEW' },
    { key: NeedsReviewKey, value: true },
  ]);
  for (;;) {
    setCurrentDetails(`late payment ${tradeNo} not refunded (${why}); waiting for an operator's refund decision`);
    await condition(() => decision !== undefined);
    const d = decision!;
    const decidedAt = new Date().toISOString();
    if (d.decision === 'approve' && keepable) {
      const kept = await keepAsPayingTrade(input, order, keepable, d);
      status = 'PAID';
      return kept;
    }
    let failure: { type: string; message: string };
    try {
      // A provider that keeps refusing the query: an amount the operator names (from its console) is refunded anyway
      // (queryTrade answers the refusal behind `late-payment-query-refused`); without one, the decision fails as before.
      const answer =
        d.refundAmount === undefined
          ? { state: await acts.queryProviderPayment({ provider: input.provider, outTradeNo: orderId }) }
          : await queryTrade(input);
      const state = 'state' in answer ? answer.state : undefined;
      const paidAmount = state?.tradeNo === tradeNo ? state.paidAmount : undefined;
      // An amount the operator names (what is left of the trade at the provider, as its console shows; 0 when nothing
      // is) is refunded under a number of its own: the trade's own number may belong to a refund the provider failed.
      const named = d.refundAmount;
      const amount = named ?? paidAmount;
      // The trade's automatic refund (its stable number), which a named amount replaces when the provider reported it
      // failed (only a failure recorded before the decision, `decidedAt`, is settled by it).
      const automatic = autoRefundNo(orderId, tradeNo);
      if (amount !== undefined && (amount > 0 || named === 0)) {
        const currency = state?.currency ?? order.currency;
        await CancellationScope.nonCancellable(async () => {
          if (amount > 0)
            await refundTrade(
              input,
              amount,
              currency,
              `review refund by ${d.operator}: ${d.reason}`.slice(0, 255),
              named === undefined ? undefined : reviewRefundNo(orderId, tradeNo, amount),
              // Refused if the automatic refund failed and was then reported succeeded (a WeChat resubmission).
              named === undefined ? undefined : automatic,
            );
          // A PAID order keeps its status when another trade paid it; refunding the very trade that paid it (a review
          // of the order's own trade) leaves it REFUNDED, never PAID by nobody.
          const back: OrderStatus = order.status === 'PAID' && order.paidTradeNo !== tradeNo ? 'PAID' : 'REFUNDED';
          await acts.transitionOrder({
            orderId,
            from: ['NEEDS_REVIEW'],
            to: back,
            reason: back === 'PAID' ? 'LATE_TRADE_REFUNDED' : 'LATE_PAYMENT_REFUNDED',
            // The trade's automatic refund, when its provider reported it failed after accepting it: this decision
            // settles it (with refundAmount 0 the operator states the money went back by other means), instead of
            // the change being refused over it (REFUND_FAILED_AT_PROVIDER) and the review never closing.
            // Only with a named amount (without one the step above refunds under that very number), and only a failure
            // recorded before the decision (`decidedAt`, the workflow's clock against MySQL's: a skew refuses, never
            // settles, and the next decision goes through). With refundAmount 0 a failure reported between the decision
            // and this change still refuses it; with an amount, the `rv` refund made in between settles it anyway.
            ...(named === undefined ? {} : { closesFailedRefunds: [automatic], failedBefore: decidedAt }),
            // A closed order records the trade it refunded, as markLateRefunded does; a paid order keeps its own.
            ...(back === 'REFUNDED' && state && paidAmount !== undefined && paidAmount > 0
              ? { payment: lateTradeEvidence(input, paidAmount, currency, state) }
              : {}),
            event: {
              type: 'LATE_PAYMENT_REFUNDED_BY_REVIEW',
              message: `${d.operator} had late payment ${tradeNo} refunded (${amount} ${currency}): ${d.reason}`,
              data: { operator: d.operator, decision: d.decision, tradeNo },
            },
          });
          status = back;
        });
        upsertSearchAttributes([
          { key: OrderStatusKey, value: status },
          { key: NeedsReviewKey, value: false },
        ]);
        return { outcome: 'REFUNDED', detail: `refunded ${amount} ${currency} on ${d.operator}'s decision` };
      }
      failure = {
        type: FailureType.PROVIDER_REJECTED,
        message: `${input.provider} reports no paid amount for trade ${tradeNo} (it reports ${state?.status} for ${state?.tradeNo ?? 'no trade'})`,
      };
    } catch (err) {
      if (!failedForGood(err)) throw err;
      failure = { type: failureType(err) ?? FailureType.UNEXPECTED_ERROR, message: errorMessage(err) };
    }
    await acts.recordOrderEvent({
      orderId,
      type: 'REVIEW_DECISION_FAILED',
      message: `${d.operator}'s refund of late payment ${tradeNo} could not be carried out (${failure.type}: ${failure.message}); waiting for another decision`,
    });
    failures.set(d, failure);
    decision = undefined;
  }
}

/**
 * An operator approved a late trade of an order PAID by a trade the provider did not name as that very trade: the order
 * goes back to PAID with the trade recorded (so later reports of it are redeliveries), nothing is refunded.
 */
async function keepAsPayingTrade(
  input: LatePaymentInput,
  order: OrderSnapshot,
  state: ProviderState,
  d: ReviewDecision,
): Promise<LatePaymentResult> {
  const { outTradeNo: orderId, tradeNo } = input;
  const amount = state.paidAmount!;
  const currency = state.currency ?? order.currency;
  await CancellationScope.nonCancellable(() =>
    acts.transitionOrder({
      orderId,
      from: ['NEEDS_REVIEW'],
      to: 'PAID',
      reason: 'LATE_TRADE_IDENTIFIED',
      payment: lateTradeEvidence(input, amount, currency, state),
      event: {
        type: 'ORDER_PAID',
        message: `${d.operator} identified ${tradeNo} as the trade that paid the order: ${d.reason}`,
        data: { operator: d.operator, decision: d.decision, tradeNo },
      },
    }),
  );
  upsertSearchAttributes([
    { key: OrderStatusKey, value: 'PAID' },
    { key: NeedsReviewKey, value: false },
  ]);
  return { outcome: 'ALREADY_CONFIRMED', detail: `${d.operator} recorded ${tradeNo} as the trade that paid the order` };
}
