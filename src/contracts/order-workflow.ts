/**
 * The order workflows' own contract: ids, inputs, results, the values they carry, and their messages (signal,
 * updates, query). Free of zod and of anything else heavy: workflow code imports it, and every module a workflow
 * imports is loaded again for each workflow the worker keeps in its cache (zod alone cost about 1 MB per open
 * order). The HTTP side's schemas (zod) are in ./order.ts, which re-exports all of this.
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { ProviderName } from './providers';

// ---- Ids, statuses and names ----

/** Order statuses, as in the public contract. */
export const ORDER_STATUSES = [
  'AWAITING_PAYMENT',
  'PAID',
  'EXPIRED',
  'CANCELLED',
  'REFUNDED',
  'NEEDS_REVIEW',
  'FAILED',
] as const;
export type OrderStatus = (typeof ORDER_STATUSES)[number];

/** Statuses after which the order's workflow has nothing left to wait for. */
export const FINAL_STATUSES: readonly OrderStatus[] = ['PAID', 'EXPIRED', 'CANCELLED', 'REFUNDED', 'FAILED'];

/**
 * The order workflow type the API starts. Earlier types stay registered until their executions have drained (README,
 * "Changing workflow code safely"): `orderLifecycle` (the same code with two setup steps and a separate hand-off) and
 * `orderPayment` (the first, one closure).
 */
export const ORDER_WORKFLOW_TYPE = 'orderLifecycleV2';
/** Every order workflow type that may still have executions, newest first (for visibility queries). */
export const ORDER_WORKFLOW_TYPES = [ORDER_WORKFLOW_TYPE, 'orderLifecycle', 'orderPayment'] as const;

/** Workflow id of an order's payment lifecycle: one workflow per order. */
export function orderWorkflowId(orderId: string): string {
  return `order-${orderId}`;
}

/** Workflow id of the late-payment handler: one per provider trade, so it is started idempotently. */
export function latePaymentWorkflowId(provider: string, outTradeNo: string, tradeNo: string): string {
  return `late-payment-${provider}-${outTradeNo}-${tradeNo}`;
}

/** The refund number for an order's automatic refund: stable, so a retry never refunds twice. */
export function autoRefundNo(orderId: string, tradeNo: string): string {
  return `rf-${orderId}-${tradeNo}`.slice(0, 64);
}

/**
 * The refund number of a review decision that names the amount (refundAmount): stable for that amount, so a retry
 * refunds once, and apart from the automatic number and from other amounts. The amount leads, so cutting to the
 * providers' 64 characters never cuts it.
 */
export function reviewRefundNo(orderId: string, tradeNo: string, amount: number): string {
  return `rv${amount}-${orderId}-${tradeNo}`.slice(0, 64);
}

/** Why approving the review of a refund the provider reported failed is refused (by the API and by the workflow). */
export function failedRefundApproveRefusal(failedOutRefundNo: string, provider: string): string {
  return `refund ${failedOutRefundNo} failed at ${provider} after the buyer was told the money went back: only a refund decision settles it (refundAmount 0 when it was returned by other means)`;
}

/** Workflow id of the review of a refund the provider accepted and later reported failed: one per failed refund. */
export function failedRefundReviewWorkflowId(failedOutRefundNo: string): string {
  return `failed-refund-review-${failedOutRefundNo}`;
}

/** FNV-1a (32 bits) of a string, as 8 hex digits: deterministic, for refund numbers built in workflow code. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

/**
 * The refund number of a review decision that refunds again after a refund the provider accepted and then reported
 * failed: stable for that failed refund and amount (a retried decision refunds once), never the failed number (its own
 * prefix `rr`, apart from automatic `rf-` and review `rv` numbers, and a digest of the failed number, so a second
 * failure of this very refund gets another number). Amount and digest lead, so cutting to 64 characters never cuts them.
 */
export function failedRefundRetryNo(orderId: string, failedOutRefundNo: string, amount: number): string {
  return `rr${amount}-${fnv1a(failedOutRefundNo)}-${orderId}`.slice(0, 64);
}

/** A LIKE pattern of the numbers failedRefundRetryNo gives for one failed refund, whatever the amount. */
export function failedRefundRetryPattern(failedOutRefundNo: string): string {
  return `rr%-${fnv1a(failedOutRefundNo)}-%`;
}

/** Input of the failedRefundReview workflow: the failed refund and where its order goes back to, read by the API. */
export interface FailedRefundReviewInput {
  orderId: string;
  provider: ProviderName;
  /** Our number of the refund the provider reported failed. */
  failedOutRefundNo: string;
  /** The trade that refund refunded, and its amount (minor units) and currency. */
  tradeNo: string;
  amount: number;
  currency: string;
  /**
   * The status the order goes back to once the money is returned: REFUNDED when the failed refund was the order's own
   * (or a late trade of a closed order), PAID when the order kept its payment and the refund was of another trade.
   */
  back: 'REFUNDED' | 'PAID';
}

/** What the failedRefundReview workflow did. */
export interface FailedRefundReviewResult {
  /** NOT_IN_REVIEW: the order had left review (settled another way) when the decision came; nothing was refunded. */
  outcome: 'REFUNDED' | 'CLOSED_WITHOUT_REFUND' | 'NO_DECISION' | 'NOT_IN_REVIEW';
  status: OrderStatus;
  outRefundNo?: string;
  detail: string;
}

/**
 * An operator's decision on an order in NEEDS_REVIEW: approve (confirm as paid) or refund (return the money, release
 * everything).
 */
export interface ReviewDecision {
  decision: 'approve' | 'refund';
  operator: string;
  reason: string;
  /**
   * A refund decision's amount in minor units, as the provider's console shows what is left of the trade: needed when
   * the provider reports the trade refunded without the amounts (WeChat Pay's REFUND state), or when more was refunded
   * at the provider since the review opened. 0 closes the order REFUNDED without a refund (all of it was refunded).
   * Without it, a refund decision refunds what the workflow knows is left.
   */
  refundAmount?: number;
}

/**
 * The failure type of a review decision the order's workflow refuses although it waits for one (approving an order
 * with no payment known, or one already refunded): the API answers it 409 REVIEW_DECISION_REFUSED at once.
 */
export const REVIEW_DECISION_REFUSED = 'REVIEW_DECISION_REFUSED';

/**
 * What is wrong with a review decision, or undefined when it is well formed: the same rules as the API's schema
 * (order.ts), checked in the workflow's validator without zod.
 */
export function reviewDecisionProblem(d: unknown): string | undefined {
  if (typeof d !== 'object' || d === null) return 'a review decision must be an object';
  const { decision, operator, reason, refundAmount, ...rest } = d as Record<string, unknown>;
  if (Object.keys(rest).length) return `unknown field(s): ${Object.keys(rest).join(', ')}`;
  if (decision !== 'approve' && decision !== 'refund') return "decision must be 'approve' or 'refund'";
  if (typeof operator !== 'string' || operator.length < 1 || operator.length > 64)
    return 'operator must be 1-64 characters';
  if (typeof reason !== 'string' || reason.length < 3 || reason.length > 500) return 'reason must be 3-500 characters';
  if (refundAmount !== undefined) {
    if (decision !== 'refund') return 'refundAmount goes with a refund decision only';
    if (!Number.isSafeInteger(refundAmount) || (refundAmount as number) < 0)
      return 'refundAmount must be a whole number of minor units, 0 or more';
  }
  return undefined;
}

/**
 * Whether two review decisions are the same decision (an operator's retry after a timed-out answer, a double click):
 * one sent while the other is carried out joins it and gets its answer, instead of being refused as "not waiting for a
 * decision" (answered 409 ORDER_NOT_IN_REVIEW for an order still in review).
 */
export function sameReviewDecision(a: ReviewDecision, b: ReviewDecision): boolean {
  return (
    a.decision === b.decision && a.operator === b.operator && a.reason === b.reason && a.refundAmount === b.refundAmount
  );
}

// ---- Workflow inputs, results and the values they carry ----

/** One order line as the workflow carries it (price snapshot from the catalog). */
export interface OrderLine {
  sku: string;
  quantity: number;
  unitPrice: number;
}

/** Input of the orderPayment workflow. Durations are fixed at start so config changes never alter a running order. */
export interface OrderPaymentInput {
  orderId: string;
  userId: string;
  items: { sku: string; quantity: number }[];
  provider: ProviderName;
  idempotencyKey?: string;
  /** Coupon and points to redeem (TCC participants 'coupon' and 'points'); absent on orders without them. */
  couponCode?: string;
  points?: number;
  paymentTimeoutMs: number;
  queryFirstDelayMs: number;
  queryMaxIntervalMs: number;
  providerExpiryMarginMs: number;
  /** Base URL that notify URLs are built from. */
  publicBaseUrl: string;
  /** Cooling-off window after PAID (0 or absent: none). */
  coolingOffMs?: number;
  /** Reminder interval while waiting for manual review (absent: 1 hour). */
  reviewReminderMs?: number;
}

/** Result of the workflow. */
/** The status reason of an order a failed refund sent to review (src/db/refund-outcomes.ts). */
export const REFUND_FAILED_REASON = 'REFUND_FAILED';

export interface OrderPaymentResult {
  orderId: string;
  status: OrderStatus;
  reason?: string;
}

/** What the API returns once stock is reserved and the provider payment exists (early return). */
export interface PaymentReady {
  orderId: string;
  status: OrderStatus;
  amount: number;
  currency: string;
  payment: { provider: string; paymentUrl: string; expiresAt: string };
}

/** A payment the workflow has learned of, from a callback or an active query (they count the same). */
export interface PaymentEvidence {
  source: 'callback' | 'query' | 'close';
  notificationId?: string;
  tradeNo: string;
  amount: number;
  currency: string;
  merchantId: string;
  paidAt: string;
  /**
   * What the provider reports already refunded of this trade (from a query: a refund made outside this workflow, say
   * from the merchant's console); -1 when it reports the trade REFUNDED without the amount. Absent when nothing is.
   */
  refundedAmount?: number;
}

/** Stages the workflow moves through; the status query reports the current one. */
export type OrderStage =
  | 'CREATING_ORDER'
  | 'RESERVING'
  | 'CREATING_PAYMENT'
  | 'AWAITING_PAYMENT'
  | 'QUERYING_PROVIDER'
  | 'CONFIRMING'
  | 'CLOSING'
  | 'RELEASING'
  | 'WATCHING_LATE_PAYMENT'
  | 'REFUNDING'
  | 'NEEDS_REVIEW'
  | 'AWAITING_REVIEW'
  | 'COOLING_OFF'
  | 'DONE';

/** One entry of the workflow's own timeline (workflow time, deterministic). */
export interface TimelineEntry {
  at: string;
  type: string;
  message: string;
}

/** Input of the latePayment workflow: a payment the provider reported after the order workflow finished. */
export interface LatePaymentInput {
  provider: ProviderName;
  outTradeNo: string;
  tradeNo: string;
  notificationId?: string;
  /**
   * Waits (ms) before each further query when the provider does not show the trade yet (PENDING or NOT_FOUND: its
   * query lags its notification); default LATE_PAYMENT_RECHECK_DELAYS_MS. Tests shorten it.
   */
  recheckDelaysMs?: number[];
  /**
   * How often a trade reported while its order is in review (held by another workflow) looks whether the review is
   * over; default LATE_PAYMENT_REVIEW_POLL_MS. Tests shorten it.
   */
  reviewPollMs?: number;
  /** Set by the run itself when it continues as new while waiting out a review: its LATE_PAYMENT_SEEN is written. */
  seenInReview?: boolean;
}

/** How often a late trade waits out its order's review before looking again: an hour. */
export const LATE_PAYMENT_REVIEW_POLL_MS = 3_600_000;

/** latePayment's default waits before querying a trade the provider does not show yet: 30 s, 2, 5 and 10 min. */
export const LATE_PAYMENT_RECHECK_DELAYS_MS: readonly number[] = [30_000, 120_000, 300_000, 600_000];

/**
 * The order workflows' waits before asking again a provider that answered our close "already paid" but whose query
 * does not show the payment yet (it lags its own close answer by a moment): 1, 2, 4, 8 and 15 s.
 */
export const CLOSE_FOUND_PAID_RECHECK_DELAYS_MS: readonly number[] = [1_000, 2_000, 4_000, 8_000, 15_000];

/** What the latePayment workflow decided. */
export interface LatePaymentResult {
  outcome:
    | 'ALREADY_CONFIRMED'
    | 'REFUNDED'
    | 'NOT_PAID_AT_PROVIDER'
    | 'LEFT_FOR_REVIEW'
    | 'UNKNOWN_ORDER'
    | 'PROVIDER_MISMATCH';
  detail: string;
}

// ---- Messages of the order workflow: its signal, updates and query, with their arguments and answers ----

/** Signal sent by the callback handler after a notification is verified and stored. */
export interface PaymentNotifiedSignal {
  notificationId: string;
  outTradeNo: string;
  tradeNo: string;
  amount: number;
  currency: string;
  merchantId: string;
  paidAt: string;
  /** The provider that sent it (absent from signals sent before this field existed); another provider's is ignored. */
  provider?: string;
}

/**
 * Result of the `status` query. The texts people are told are not part of it: the API computes them (describeStatus)
 * from these fields. Executions started by older code also answer a `messages` field, which readers ignore.
 */
export interface OrderWorkflowStatus {
  orderId: string;
  stage: OrderStage;
  status: OrderStatus;
  amount?: number;
  currency?: string;
  deadline?: string;
  nextCheckAt?: string;
  queryAttempts: number;
  timeline: TimelineEntry[];
}

/**
 * What became of a review decision. A decision that cannot be carried out (the provider refuses the refund, a TCC
 * conflict on approve) leaves the order in NEEDS_REVIEW waiting for another decision, with `failure` saying why.
 */
export interface ReviewOutcome {
  status: OrderStatus;
  failure?: { type: string; message: string };
}

/** What one-click support found and recorded. */
export interface EscalationResult {
  ticketId: string;
  orderId: string;
  status: OrderStatus;
  stage: OrderStage;
  providerStatus: string;
  /**
   * PAYMENT_FOUND: the provider says paid and the order is now being confirmed. LATE_PAYMENT_FOUND: the order was
   * closed (or kept another trade), the provider says this trade is paid: it is handed to its late-payment workflow,
   * which refunds it.
   */
  resolution: 'PAYMENT_FOUND' | 'LATE_PAYMENT_FOUND' | 'WAITING_FOR_PAYMENT' | 'IN_PROGRESS' | 'CLOSED' | 'IN_REVIEW';
}

/**
 * Early-return update: resolves with PaymentReady once the payment exists, or fails with a FailureType
 * (contracts/failures.ts).
 */
export const paymentReadyUpdate = defineUpdate<PaymentReady>('paymentReady');
/** A verified payment notification (deduplicated inside the workflow by notificationId). */
export const paymentNotifiedSignal = defineSignal<[PaymentNotifiedSignal]>('paymentNotified');
/** User cancel; resolves with the final status (CANCELLED, or PAID when the buyer paid first). */
export const cancelOrderUpdate = defineUpdate<{ status: OrderStatus }, [{ reason?: string }]>('cancelOrder');
/** Live status of the order's lifecycle. */
export const statusQuery = defineQuery<OrderWorkflowStatus>('status');

/** Manual review decision (authenticated endpoint); the validator refuses it unless the order waits for review. */
export const reviewDecisionUpdate = defineUpdate<ReviewOutcome, [ReviewDecision]>('reviewDecision');

/** Buyer's refund inside the cooling-off window; the validator refuses it outside the window. */
export const coolingOffRefundUpdate = defineUpdate<{ status: OrderStatus; refundNo?: string }, [{ reason?: string }]>(
  'coolingOffRefund',
);

/** One-click support: query the provider now, record a ticket with a snapshot, mark the workflow. */
export const escalateUpdate = defineUpdate<EscalationResult, [{ note?: string }]>('escalate');
