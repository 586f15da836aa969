/**
 * Versioning of workflow code with executions in flight (README, "Changing workflow code safely").
 *
 * Every change that adds, removes or reorders commands (activities, timers, child workflows, search-attribute
 * upserts, ...) of a workflow that may be running is guarded by `patched(id)`: new executions take the new branch
 * and record a marker; an execution started by the old code replays the old branch, because its history has no
 * marker at that point. The workflow calls one function per change, from this module only, so the replay test can
 * swap the module for a fixture that switches every change on unguarded (test/replay.test.ts).
 *
 * Lifecycle of an id: `patched(id)` while histories without the marker may still replay; then `deprecatePatch(id)`
 * with only the new branch, once no open execution (and no history kept for replay) predates the change; then remove
 * the call once no open execution carries the marker. Never reuse an id.
 */
import { patched } from '@temporalio/workflow';

/** Patch ids, one per change, with what the change is. */
export const PATCH_IDS = {
  /**
   * orderPayment: when the order becomes PAID, queue the buyer's payment receipt in the outbox (recordPaymentReceipt).
   */
  paymentReceipt: 'order-payment-receipt',
  /**
   * orderPayment: a callback that does not match the order is confirmed with the provider before it moves the order.
   */
  confirmMismatch: 'order-payment-confirm-mismatch',
  /**
   * orderPayment: approving a review that opened after the order was PAID (e.g. a cooling-off refund the provider
   * refused) hands the order to fulfilment, instead of running the cooling-off step again and retrying the refund.
   */
  approveAfterPaid: 'order-payment-approve-after-paid',
  /**
   * latePayment: a late trade whose refund cannot be made (no paid amount reported, or the provider refuses) moves the
   * order to NEEDS_REVIEW with the reason, instead of refunding 0 or failing the workflow with nothing recorded.
   */
  lateRefundReview: 'late-payment-refund-review',
  /**
   * orderPayment: a trade other than the order's own, reported while the workflow ran, is handed to its latePayment
   * workflow (a child, abandoned) when the order's status is final, instead of only being noted.
   */
  handOffOtherTrades: 'order-payment-hand-off-other-trades',
  /**
   * latePayment: after leaving the order for review (a refund it could not make), the workflow waits for an
   * operator's refund decision and carries it out, instead of ending with nothing left to take the decision.
   */
  lateReviewDecision: 'late-payment-review-decision',
  /**
   * orderLifecycleV2: a payment reported after the order was decided without one is not dropped: a review decision
   * takes a payment reported during the review (a refund refunds it, an approval records it), and a payment reported
   * after an order closed unpaid is handed to its latePayment workflow when the order ends.
   */
  evidenceAfterDecision: 'order-evidence-after-decision',
  /**
   * orderLifecycleV2: a payment the provider reports partly or wholly refunded never confirms the order (it goes to
   * review), and a refund of it asks only for what is left.
   */
  refundedTrade: 'order-refunded-trade',
  /**
   * latePayment: a trade reported for a PAID order whose paying trade is unknown is left for review, never refunded
   * (it may be the very trade that paid).
   */
  lateUnknownPayingTrade: 'late-payment-unknown-paying-trade',
  /**
   * latePayment: that trade's order goes to NEEDS_REVIEW and the workflow waits for the decision: refund the trade, or
   * approve it as the trade that paid (recorded on the order). It used to end LEFT_FOR_REVIEW with nothing to decide on.
   */
  lateUnknownReview: 'late-payment-unknown-paying-trade-review',
  /**
   * latePayment: a trade the provider's query does not show paid yet (PENDING, NOT_FOUND, CLOSED) is queried again on a backoff
   * before the workflow concludes it was not paid; if it never shows, the order's timeline says so. It used to end
   * NOT_PAID_AT_PROVIDER at the first stale answer, with nothing recorded, for a notification the provider had signed.
   */
  lateRecheck: 'late-payment-recheck',
  /**
   * orderLifecycleV2: a step that fails for good after an approved review has made the order PAID (the buyer's
   * cooling-off refund the provider refuses) opens a new review, the order marked NEEDS_REVIEW, instead of being taken
   * for the approval failing: the workflow waited for a decision no API route could bring, with MySQL saying PAID.
   */
  afterApprovalFailure: 'order-after-approval-failure',
  /**
   * failedRefundReview: before carrying out a decision, the order is read: one no longer in review (settled another way)
   * is not refunded again; the decision is answered with why.
   */
  failedRefundOrderCheck: 'failed-refund-review-order-check',
  /**
   * latePayment: a provider that refuses the query of the late trade (a business error, not retried) sends the order to
   * review, where an operator's refund decision asks again; the run failed with nothing recorded before, the money kept
   * and nobody told (the inbox had handed the notification over).
   */
  lateQueryRefused: 'late-payment-query-refused',
  /**
   * latePayment: a trade reported while its order is in review held by another workflow (a failed refund's review,
   * another trade's) waits the review out and is then decided as any late trade; it was only noted on the timeline and
   * dropped, its money kept once the review settled the order.
   */
  lateWaitReview: 'late-payment-wait-review',
  /**
   * orderPayment: a payment reported during a review that opened without one, when the review then refunds (which
   * refunds nothing: it knew no payment), is handed to that trade's latePayment workflow like any trade the order did
   * not keep; it was taken for the kept trade and never refunded, the order REFUNDED with the buyer's money held.
   */
  reviewHandsOffReported: 'order-payment-review-hands-off-reported',
  /**
   * orderLifecycleV2, orderLifecycle and orderPayment: a close the provider answers "already paid" whose query does
   * not show the payment yet (a payment made a moment before the close; the query lags) is queried again a few times
   * (CLOSE_FOUND_PAID_RECHECK_DELAYS_MS) before the answer is taken: taken at once, the payment had no amount, did not
   * match the order and sent a buyer who paid the right amount to review.
   */
  closeFoundPaidRecheck: 'close-found-paid-recheck',
  /**
   * orderLifecycleV2 and orderLifecycle: a refund the provider accepted and then reported failed (its notice moved the
   * order to NEEDS_REVIEW, REFUND_FAILED) before the workflow marked the order REFUNDED leaves the order in that review:
   * the workflow ends NEEDS_REVIEW and answers the buyer so, with no refund number. It answered REFUNDED, with the
   * number of the refund that failed, while MySQL said NEEDS_REVIEW.
   */
  refundFailedBeforeSettle: 'order-refund-failed-before-settle',
  /**
   * orderLifecycleV2 and orderLifecycle: the wait between two review reminders doubles after each, up to a day; a review
   * recorded one every REVIEW_REMINDER_INTERVAL for as long as it waited (144 history events a day at the default hour).
   */
  reviewReminderBackoff: 'order-review-reminder-backoff',
  /**
   * latePayment: a trade whose query the provider refuses is not sent to review when it is the order's own paying trade
   * (order PAID by it: ALREADY_CONFIRMED; REFUNDED: REFUNDED), as a query would have answered. The review refused
   * approvals: a PAID, fulfilled order's own payment could be closed only by a refund (or a refund of 0).
   */
  lateQueryRefusedOwnTrade: 'late-payment-query-refused-own-trade',
  /**
   * reconciliation: a run cancelled through Temporal marks its row FAILED before it ends cancelled; the row stayed
   * RUNNING, so no firing of the Schedule asked for the day again and no alert counted it.
   */
  reconciliationCancelledFails: 'reconciliation-cancelled-fails',
  /**
   * latePayment: a trade reported again while the order waits in the review this trade opened, its workflow ended
   * (terminated, failed, reset, or from before runs waited for decisions), takes that review over; it waited it out
   * instead, for itself, while the API sent the review's decisions to it and each was refused (no handler).
   */
  lateOwnReviewTakeover: 'late-payment-own-review-takeover',
  /**
   * latePayment: a trade it could not refund opens its review in one transaction with the entry that routes the
   * review's decisions (enterLateReview), and waits while the order is in another review. It wrote the entry first and
   * ignored the status change's answer: an order in another review sent that review's decisions to this trade's run,
   * and this trade waited for decisions that never came to it.
   */
  lateReviewEntry: 'late-payment-review-entry',
  /**
   * orderLifecycle(V2): a review that automatic handling opened (stopForReview, which marks the order Stuck) clears the
   * mark once its decision is carried out; an approved order in its cooling-off window stayed Stuck.
   */
  reviewClearsStuck: 'order-review-clears-stuck',
  /**
   * orderLifecycle(V2): an update handler in the workflow's root scope runs non-cancellable; after a cancel through
   * Temporal it was rejected at its first wait (the root scope cancelled), after its state change was made.
   */
  handlersAfterCancel: 'order-handlers-after-cancel',
  /**
   * orderLifecycle(V2): a refund decision on a review that knows no payment, opened before the provider's payment was
   * closed (the close refused), closes that payment first; a close that finds it paid refunds that payment. The order
   * was marked REFUNDED and its stock released with the payment still payable.
   */
  reviewRefundCloses: 'order-review-refund-closes-payment',
  /**
   * orderLifecycle(V2): a buyer's escalation whose provider query finds the order paid while the workflow watches for a
   * late payment after the close takes that payment at once (it is refunded now, the buyer told LATE_PAYMENT_FOUND); it
   * was only written into the ticket, the buyer told CLOSED, and the refund waited for the watch to end.
   */
  escalationLateWatch: 'order-escalation-late-watch',
} as const;

/** Whether this execution queues the buyer's payment receipt when the order becomes PAID. */
export function paymentReceiptStep(): boolean {
  return patched(PATCH_IDS.paymentReceipt);
}

/** Whether this execution asks the provider before a mismatched callback moves the order to review. */
export function confirmMismatchStep(): boolean {
  return patched(PATCH_IDS.confirmMismatch);
}

/**
 * Whether approving a review of an order that was already PAID goes straight to fulfilment (no second refund attempt).
 */
export function approveAfterPaidStep(): boolean {
  return patched(PATCH_IDS.approveAfterPaid);
}

/** Whether this latePayment execution sends a refund it cannot make to review instead of failing. */
export function lateRefundReviewStep(): boolean {
  return patched(PATCH_IDS.lateRefundReview);
}

/** Whether this execution hands trades other than the order's own to their latePayment workflow when it ends. */
export function handOffOtherTradesStep(): boolean {
  return patched(PATCH_IDS.handOffOtherTrades);
}

/** Whether this latePayment execution waits for an operator's decision after leaving the order for review. */
export function lateReviewDecisionStep(): boolean {
  return patched(PATCH_IDS.lateReviewDecision);
}

/** Whether this execution takes a payment reported after its order was decided (review decision, hand-off at the end). */
export function evidenceAfterDecisionStep(): boolean {
  return patched(PATCH_IDS.evidenceAfterDecision);
}

/** Whether this execution sends a payment reported refunded to review, and refunds only what is left of it. */
export function refundedTradeStep(): boolean {
  return patched(PATCH_IDS.refundedTrade);
}

/** Whether this latePayment execution leaves a trade of a PAID order whose paying trade is unknown for review. */
export function lateUnknownPayingTradeStep(): boolean {
  return patched(PATCH_IDS.lateUnknownPayingTrade);
}

/** Whether this latePayment execution sends that trade's order to review and waits for the decision. */
export function lateUnknownReviewStep(): boolean {
  return patched(PATCH_IDS.lateUnknownReview);
}

/** Whether this latePayment execution queries again a trade the provider does not show yet, before giving up on it. */
export function lateRecheckStep(): boolean {
  return patched(PATCH_IDS.lateRecheck);
}

/** Whether a step failing after an approved review made the order PAID opens a new review (this execution). */
export function afterApprovalFailureStep(): boolean {
  return patched(PATCH_IDS.afterApprovalFailure);
}

/** Whether this failedRefundReview reads the order before carrying out a decision. */
export function failedRefundOrderCheckStep(): boolean {
  return patched(PATCH_IDS.failedRefundOrderCheck);
}

/** Whether this execution sends a late trade whose query the provider refuses to review (else the run fails). */
export function lateQueryRefusedStep(): boolean {
  return patched(PATCH_IDS.lateQueryRefused);
}

/** Whether this execution waits out the order's review before deciding a late trade (else it is only noted). */
export function lateWaitReviewStep(): boolean {
  return patched(PATCH_IDS.lateWaitReview);
}

/** Whether this orderPayment hands off a payment reported during a review that refunded nothing. */
export function reviewHandsOffReportedStep(): boolean {
  return patched(PATCH_IDS.reviewHandsOffReported);
}

/** Whether this execution asks the provider again after a close found the order paid but the query does not show it. */
export function closeFoundPaidRecheckStep(): boolean {
  return patched(PATCH_IDS.closeFoundPaidRecheck);
}

/** Whether this execution takes a REFUNDED mark refused by a failed-refund review (the refund's notice) as that review. */
export function refundFailedBeforeSettleStep(): boolean {
  return patched(PATCH_IDS.refundFailedBeforeSettle);
}

/** Whether this execution doubles the wait between review reminders (asked after the first reminder). */
export function reviewReminderBackoffStep(): boolean {
  return patched(PATCH_IDS.reviewReminderBackoff);
}

/** Whether this latePayment execution answers a refused query of the order's own paying trade without review. */
export function lateQueryRefusedOwnTradeStep(): boolean {
  return patched(PATCH_IDS.lateQueryRefusedOwnTrade);
}

/** Whether this reconciliation run marks its row FAILED when it is cancelled through Temporal. */
export function reconciliationCancelledFailsStep(): boolean {
  return patched(PATCH_IDS.reconciliationCancelledFails);
}

/** Whether this latePayment execution takes over the review its trade opened in an earlier, ended run. */
export function lateOwnReviewTakeoverStep(): boolean {
  return patched(PATCH_IDS.lateOwnReviewTakeover);
}

/** Whether this latePayment execution opens its review with enterLateReview (waiting out another review). */
export function lateReviewEntryStep(): boolean {
  return patched(PATCH_IDS.lateReviewEntry);
}

/** Whether this execution clears the Stuck mark of a review automatic handling opened, once it is decided. */
export function reviewClearsStuckStep(): boolean {
  return patched(PATCH_IDS.reviewClearsStuck);
}

/** Whether an update handler started after a cancel through Temporal runs non-cancellable (asked only then). */
export function handlersAfterCancelStep(): boolean {
  return patched(PATCH_IDS.handlersAfterCancel);
}

/** Whether a refund decision on a review with no payment known closes the provider's payment first (asked only then). */
export function reviewRefundClosesStep(): boolean {
  return patched(PATCH_IDS.reviewRefundCloses);
}

/** Whether an escalation's query that finds a late payment during the watch after the close takes it (asked only then). */
export function escalationLateWatchStep(): boolean {
  return patched(PATCH_IDS.escalationLateWatch);
}
