/**
 * One order's lifecycle state and its rules, with no Temporal in it: the phases and handlers of the order workflow
 * read and change the order only through this object, and its rules are unit-tested with a fake clock at production
 * durations (test/order-state.test.ts).
 *
 * The three questions that used to be answered in several places are answered here once:
 * - `paid`: the order's money is kept (status PAID);
 * - `cancellable`: the buyer (or an operator through Temporal) may still cancel;
 * - `decided`: the order's status is settled for the cancel update, though the workflow may still watch.
 */
import type { OrderBenefit } from '../../activities/benefits';
import {
  type OrderLine,
  type OrderPaymentInput,
  type OrderStage,
  type OrderStatus,
  type PaymentEvidence,
  type PaymentNotifiedSignal,
  type PaymentReady,
  type ReviewDecision,
  type TimelineEntry,
  sameReviewDecision,
} from '../../contracts/order-workflow';

/** Stages in which the order can still be cancelled (nothing paid is known yet). */
export const CANCELLABLE_STAGES: readonly OrderStage[] = [
  'CREATING_ORDER',
  'RESERVING',
  'CREATING_PAYMENT',
  'AWAITING_PAYMENT',
  'QUERYING_PROVIDER',
];
/** Stages in which a payment found by a support query is still confirmed by the wait loop. */
export const WAITING_STAGES: readonly OrderStage[] = ['AWAITING_PAYMENT', 'QUERYING_PROVIDER'];

/** What the early-return update answers: the payment URL, or why the order failed. */
export type Ready =
  { ok: true; value: PaymentReady } | { ok: false; type: string; message: string; details: Record<string, unknown> };

/** What happened to a notification handed to `notify()`. */
export type NotifyOutcome = 'DUPLICATE' | 'OTHER_ORDER' | 'OTHER_PROVIDER' | 'RECORDED';

/** The next wait of the payment loop: until when, and what follows when nothing arrives. */
export interface PaymentWait {
  until: number;
  then: 'QUERY' | 'DEADLINE';
}

/** The longest wait between two review reminders (reviewReminderDelay). */
export const REVIEW_REMINDER_MAX_MS = 24 * 3_600_000;

/** The order's state. Fields are read freely; they change only through the methods below. */
export class OrderState {
  stage: OrderStage = 'CREATING_ORDER';
  status: OrderStatus = 'AWAITING_PAYMENT';
  readonly timeline: TimelineEntry[] = [];
  // Set by setup.
  amount?: number;
  currency?: string;
  merchantId = '';
  lines: OrderLine[] = [];
  benefits: OrderBenefit[] = [];
  deadline?: number;
  providerExpiresAt?: number;
  ready?: Ready;
  /** The provider answered our close CLOSED or NOT_FOUND: nobody can pay this order's payment any more. */
  closedAtProvider = false;
  // The wait loop.
  nextCheckAt?: number;
  queryAttempts = 0;
  private queryDelay: number;
  // What arrived.
  evidence?: PaymentEvidence;
  /**
   * The closed order's watch for a late payment is open: a payment found now is refunded by the close step. False from
   * the moment that step has taken its final answer (the stage stays WATCHING_LATE_PAYMENT until the workflow ends).
   */
  lateWatchOpen = false;
  cancelRequest?: { reason?: string; via: 'buyer' | 'temporal' };
  refundRequest?: { reason?: string };
  refundNo?: string;
  reviewDecision?: ReviewDecision;
  /** Decisions that could not be carried out, and why (answered to the operator who sent them). */
  readonly reviewFailures = new Map<ReviewDecision, { type: string; message: string }>();
  /** The order was PAID when automatic handling stopped (e.g. the provider refused the buyer's cooling-off refund). */
  reviewAfterPaid = false;
  /** stopForReview marked the order Stuck (search attribute): cleared once a decision is carried out. */
  markedStuckForReview = false;
  /** The review opened (the order goes to NEEDS_REVIEW), with the payment known then: the one its reason describes. */
  private reviewOpened?: { evidence?: PaymentEvidence };
  coolingOffUntil?: number;
  /** The window's timer fired with no refund asked: the order is being handed to fulfilment, no refund is taken. */
  private coolingOffOver = false;
  /** settlePaid handed the order to fulfilment with PAID (no cooling-off window). */
  handedOffWhenPaid = false;
  decided = false;
  finished = false;
  escalatedAt?: Date;
  private readonly seenNotifications = new Set<string>();
  /** Every trade a notification reported, with its first notification id (arrival order). */
  readonly notifiedTrades = new Map<string, string>();
  /** Trades handed to their own latePayment workflow. */
  readonly handedOff = new Set<string>();

  /**
   * @param mergedSteps this execution runs the merged steps (type orderLifecycleV2): the order opened with its payment
   *   in one activity, and settlePaid hands an order without cooling-off to fulfilment. False for the previous type,
   *   orderLifecycle, whose executions run (and replay) two setup activities and a separate hand-off.
   */
  constructor(
    readonly input: OrderPaymentInput,
    private readonly now: () => number = Date.now,
    readonly mergedSteps = true,
  ) {
    this.queryDelay = input.queryFirstDelayMs;
  }

  get orderId(): string {
    return this.input.orderId;
  }

  // ---- the three answers ----

  /** The order's money is kept: PAID (not REFUNDED, not in review). */
  get paid(): boolean {
    return this.status === 'PAID';
  }

  /** The buyer may still cancel: nothing paid is known and the order is not past its wait. */
  get cancellable(): boolean {
    return CANCELLABLE_STAGES.includes(this.stage) && !this.evidence && !this.finished;
  }

  /** Whether the payment loop has something to act on: a payment, or a cancel. */
  get woken(): boolean {
    return this.evidence !== undefined || this.cancelRequest !== undefined;
  }

  // ---- timeline and stages ----

  note(type: string, message: string): void {
    this.timeline.push({ at: new Date(this.now()).toISOString(), type, message });
  }

  enter(stage: OrderStage): void {
    this.stage = stage;
  }

  // ---- setup ----

  opened(o: { amount: number; currency: string; lines: OrderLine[]; benefits: OrderBenefit[] }): void {
    this.amount = o.amount;
    this.currency = o.currency;
    this.lines = o.lines;
    this.benefits = o.benefits;
  }

  /** Fixes the payment deadline from now, before the provider payment is created (its expiry is derived from it). */
  startClock(): number {
    this.deadline = this.now() + this.input.paymentTimeoutMs;
    this.providerExpiresAt = this.deadline + this.input.providerExpiryMarginMs;
    return this.deadline;
  }

  paymentCreated(p: { merchantId: string; paymentUrl: string; deadline?: string; providerExpiresAt?: string }): void {
    this.merchantId = p.merchantId;
    // An earlier attempt of the step fixed the deadline (this attempt's clock is later): the provider's payment
    // expires by that one, so the order's timer and the buyer's "pay before" follow it.
    if (p.deadline !== undefined && p.providerExpiresAt !== undefined) {
      this.deadline = Date.parse(p.deadline);
      this.providerExpiresAt = Date.parse(p.providerExpiresAt);
    }
    this.ready = {
      ok: true,
      value: {
        orderId: this.orderId,
        status: 'AWAITING_PAYMENT',
        amount: this.amount!,
        currency: this.currency!,
        payment: {
          provider: this.input.provider,
          paymentUrl: p.paymentUrl,
          expiresAt: new Date(this.deadline!).toISOString(),
        },
      },
    };
  }

  setupFailed(type: string, message: string, details: Record<string, unknown>): void {
    this.ready = { ok: false, type, message, details };
  }

  // ---- the payment wait ----

  /**
   * The next wait of the payment loop, or undefined when the loop is over (a payment or cancel arrived, or the
   * deadline passed). Waits until the next query on a doubling backoff (first delay, capped), never past the deadline.
   */
  nextWait(): PaymentWait | undefined {
    const deadline = this.deadline!;
    const now = this.now();
    if (this.woken || now >= deadline) {
      this.nextCheckAt = undefined;
      return undefined;
    }
    const until = Math.min(now + this.queryDelay, deadline);
    this.nextCheckAt = until;
    return { until, then: until === deadline ? 'DEADLINE' : 'QUERY' };
  }

  /** A query is about to run: counts it and doubles the next delay (up to the maximum interval). */
  queryStarted(): number {
    this.queryAttempts++;
    this.queryDelay = Math.min(this.queryDelay * 2, this.input.queryMaxIntervalMs);
    return this.queryAttempts;
  }

  /** How long to watch for a late payment after a close: until the provider-side expiry and a second (0: ask now). */
  lateWatchMs(): number {
    if (this.providerExpiresAt === undefined) return 0;
    return Math.max(0, this.providerExpiresAt - this.now() + 1000);
  }

  /** Opens the cooling-off window from now; returns its length (0: no window, fulfilment at once). */
  /** Whether settlePaid should hand the order to fulfilment as it marks it PAID: merged steps and no window. */
  get handOffWhenPaid(): boolean {
    return this.mergedSteps && (this.input.coolingOffMs ?? 0) <= 0;
  }

  startCoolingOff(): number {
    const window = this.input.coolingOffMs ?? 0;
    if (window > 0) this.coolingOffUntil = this.now() + window;
    return window;
  }

  /**
   * The window ended with no refund asked. The stage stays COOLING_OFF while the hand-off to fulfilment runs; a refund
   * asked now is refused at once, not accepted and then answered that the order stayed PAID.
   */
  endCoolingOff(): void {
    this.coolingOffOver = true;
  }

  /** How long a review waits before its next reminder on the timeline (default one hour). */
  get reviewReminderMs(): number {
    return this.input.reviewReminderMs ?? 3_600_000;
  }

  /**
   * How long a review waits before reminder `sent + 1`: REVIEW_REMINDER_INTERVAL, doubling after each reminder up to a
   * day (never below the interval). A review nobody looks at for a month records 33 reminders instead of 720 (six
   * history events each), so its history stays far from Temporal's limits.
   */
  reviewReminderDelay(sent: number): number {
    const base = this.reviewReminderMs;
    return Math.max(base, Math.min(base * 2 ** sent, REVIEW_REMINDER_MAX_MS));
  }

  // ---- what arrives ----

  /** Takes a verified notification: deduplicated by id; another order's or another provider's is ignored. */
  notify(n: PaymentNotifiedSignal): NotifyOutcome {
    if (this.seenNotifications.has(n.notificationId)) return 'DUPLICATE';
    this.seenNotifications.add(n.notificationId);
    if (n.outTradeNo !== this.orderId) {
      this.note('NOTIFICATION_IGNORED', `Notification ${n.notificationId} is for ${n.outTradeNo}, not this order`);
      return 'OTHER_ORDER';
    }
    if (n.provider !== undefined && n.provider !== this.input.provider) {
      this.note(
        'NOTIFICATION_IGNORED',
        `Notification ${n.notificationId} comes from ${n.provider}; this order pays with ${this.input.provider}`,
      );
      return 'OTHER_PROVIDER';
    }
    this.note('PAYMENT_NOTIFIED', `Provider notified payment ${n.tradeNo} (${n.amount} ${n.currency})`);
    if (!this.notifiedTrades.has(n.tradeNo)) this.notifiedTrades.set(n.tradeNo, n.notificationId);
    const { provider: _sender, ...claimed } = n;
    this.evidence ??= { source: 'callback', ...claimed };
    return 'RECORDED';
  }

  /** A payment the provider reported to a query (or after a close); kept only when none is known yet. */
  found(state: ProviderPaymentState, source: 'query' | 'close'): boolean {
    if (this.evidence) return false;
    this.evidence = evidenceFromProvider(state, source, this.now());
    return true;
  }

  /** A claimed payment the provider did not confirm: forgotten, so the wait goes on to the order's own deadline. */
  dropEvidence(): void {
    this.evidence = undefined;
  }

  /** The provider's own account of a payment replaces a claim that did not match; returns the new evidence. */
  replaceEvidence(state: ProviderPaymentState, source: 'query' | 'close'): PaymentEvidence {
    this.evidence = evidenceFromProvider(state, source, this.now());
    return this.evidence;
  }

  /**
   * The order's status is settled in MySQL (PAID, EXPIRED, CANCELLED, FAILED, REFUNDED): the cancel update can answer.
   */
  settled(status: Exclude<OrderStatus, 'AWAITING_PAYMENT' | 'NEEDS_REVIEW'>, handedOff = false): void {
    this.status = status;
    this.decided = true;
    if (handedOff) this.handedOffWhenPaid = true;
  }

  /**
   * A refund of the order failed at the provider after it was accepted, and its notice moved the order to review before
   * this workflow marked it REFUNDED: the order stays in that review (another workflow takes its decisions), and the
   * buyer is answered NEEDS_REVIEW with no refund number.
   */
  leftInFailedRefundReview(): void {
    this.status = 'NEEDS_REVIEW';
    this.refundNo = undefined;
    this.decided = true;
  }

  /** The order is marked NEEDS_REVIEW in MySQL; the workflow is about to wait for a decision. */
  inReview(): void {
    this.status = 'NEEDS_REVIEW';
  }

  /**
   * Why a buyer's cancel is refused now, or undefined when it is accepted: while the order is cancellable, and as a
   * repeat of a cancel still being carried out, the order not yet decided (it joins it and answers what it comes to): a
   * buyer's retry after a timed-out cancel must not be told the order can no longer be cancelled while it is being
   * cancelled. (The API sends one update id per order's cancel, so its own retries attach to the first update.)
   */
  cancelRefusal(): string | undefined {
    if (this.cancelRequest && !this.decided && !this.finished) return undefined;
    if (!this.cancellable)
      return `order ${this.orderId} can no longer be cancelled (stage ${this.stage}, status ${this.status})`;
    return undefined;
  }

  /** A cancel request; returns whether it was taken (only while cancellable, only the first). */
  requestCancel(reason: string | undefined, via: 'buyer' | 'temporal'): boolean {
    if (!this.cancellable || this.cancelRequest) return false;
    this.cancelRequest = { reason, via };
    return true;
  }

  /**
   * Why a cooling-off refund request is refused now, or undefined when it is accepted. A repeat while the first is
   * being carried out is accepted and joins it (its handler keeps the first request and answers what it comes to): a
   * buyer's retry after a timeout, or a double click, must not be told the window has closed while the refund runs.
   */
  refundRefusal(): string | undefined {
    if (this.refundRequest && (this.stage === 'COOLING_OFF' || this.stage === 'REFUNDING')) return undefined;
    if (this.stage !== 'COOLING_OFF' || this.refundRequest || this.coolingOffOver)
      return `order ${this.orderId} is not in its cooling-off window (stage ${this.stage}, status ${this.status})`;
    return undefined;
  }

  /** Whether the order waits for a review decision now (and has none being carried out). */
  get awaitingReviewDecision(): boolean {
    return (this.stage === 'AWAITING_REVIEW' || this.stage === 'NEEDS_REVIEW') && !this.reviewDecision;
  }

  /** The order goes to review; the payment known now is the one the review's reason is about. */
  openReview(): void {
    this.reviewOpened ??= { evidence: this.evidence };
  }

  /** Why a review decision is refused now, or undefined when it is accepted. */
  reviewRefusal(d: ReviewDecision): string | undefined {
    if ((this.stage !== 'AWAITING_REVIEW' && this.stage !== 'NEEDS_REVIEW') || this.reviewDecision) {
      return `order ${this.orderId} is not waiting for a review decision (stage ${this.stage})`;
    }
    const paid = this.evidence;
    if (d.decision === 'refund') {
      if (d.refundAmount === undefined) {
        // Reported refunded without the amounts: what is left is not known here, and a refund of a guess is refused.
        if (paid && refundableAmount(paid) === undefined)
          return `payment ${paid.tradeNo} is ${describeRefunded(paid) ?? 'reported without an amount'}: what is left to refund is not known here; decide refund with refundAmount, what is left of it at the provider (0 if nothing is)`;
        return undefined;
      }
      if (!paid && d.refundAmount > 0)
        return `order ${this.orderId} has no known payment to refund ${d.refundAmount} of; decide refund without refundAmount to close it`;
      // (A payment whose amount was not reported, -1, bounds nothing: the provider caps a refund at what was paid.)
      if (paid && Number.isSafeInteger(paid.amount) && paid.amount > 0 && d.refundAmount > paid.amount)
        return `refundAmount ${d.refundAmount} is more than payment ${paid.tradeNo} paid (${paid.amount} ${paid.currency})`;
      return undefined;
    }
    // No payment known (a review opened by a failed close, say): approving would hand unpaid goods to fulfilment. A
    // payment reported during the review is known, and can be approved.
    if (d.decision === 'approve' && !this.reviewAfterPaid && !this.evidence) {
      return `order ${this.orderId} has no known payment: approving would fulfil an unpaid order; decide refund to close it, or wait until the payment is reported`;
    }
    // This workflow refunded the payment (the buyer's cooling-off refund, or a refund decision whose next step then
    // failed): approving would hand a refunded order to fulfilment.
    if (d.decision === 'approve' && this.refundNo !== undefined) {
      return `order ${this.orderId} was already refunded (${this.refundNo}); only a refund decision can settle it`;
    }
    if (paid) {
      // Given back at the provider in full, or by an amount not reported: approving would ship goods for nothing. (Part
      // of it refunded, the amount known: the operator may keep the order for the rest.)
      const left = refundableAmount(paid);
      if (paid.refundedAmount !== undefined && !(left !== undefined && left > 0))
        return `payment ${paid.tradeNo}: ${describeRefunded(paid)}; approving would fulfil an order whose money was given back; decide refund`;
      // A payment reported while the order waited in review is not the one the review was opened for: nobody checked
      // it against the order. One that does not match is refused; approving it would confirm it unseen.
      if (this.reviewOpened && paid !== this.reviewOpened.evidence) {
        const problem = this.mismatch(paid);
        if (problem)
          return `payment ${paid.tradeNo} was reported during the review and does not match the order (${problem}); approving would confirm it unchecked; decide refund`;
      }
    }
    return undefined;
  }

  /**
   * The decision being carried out when `d` is the same decision (an operator's retry, a double click): `d` joins it
   * and waits for its answer. Undefined when none is carried out, or another one is.
   */
  decisionToJoin(d: ReviewDecision): ReviewDecision | undefined {
    const inFlight = this.reviewDecision;
    return inFlight && sameReviewDecision(inFlight, d) && !this.reviewSettled(inFlight) ? inFlight : undefined;
  }

  /** Whether the review update for `d` can answer: the order left review, or `d` failed and another is awaited. */
  reviewSettled(d: ReviewDecision): boolean {
    return (
      (this.status !== 'NEEDS_REVIEW' && this.stage !== 'NEEDS_REVIEW') || this.finished || this.reviewDecision !== d
    );
  }

  /** The decision was carried out: a later review waits for a decision of its own. */
  decisionCarriedOut(): void {
    this.reviewDecision = undefined;
  }

  /** Records that a decision could not be carried out; the order waits for another one. */
  reviewFailed(d: ReviewDecision, failure: { type: string; message: string }): void {
    this.reviewFailures.set(d, failure);
    this.reviewDecision = undefined;
  }

  /** The payment's problems against the order (amount, currency, merchant), or undefined when it matches. */
  mismatch(paid: PaymentEvidence): string | undefined {
    return describeMismatch(paid, this.amount!, this.currency!, this.merchantId);
  }

  /**
   * Trades reported while the workflow ran that are not the order's evidence, not yet handed off. (The evidence is
   * left out even when the order did not keep it: see `unkeptEvidence`.)
   */
  otherTrades(): [tradeNo: string, notificationId: string][] {
    const kept = this.evidence?.tradeNo;
    return [...this.notifiedTrades].filter(([tradeNo]) => tradeNo !== kept && !this.handedOff.has(tradeNo));
  }

  /**
   * A reported payment the order has not kept and this workflow did not refund: it arrived after the order was decided
   * without it (closed EXPIRED, CANCELLED or FAILED; or refunded by a review that knew no payment), so it is still the
   * buyer's money. Returns the trade and its notification, unless handed off already.
   */
  unkeptEvidence(): [tradeNo: string, notificationId: string] | undefined {
    const tradeNo = this.evidence?.tradeNo;
    if (tradeNo === undefined || this.handedOff.has(tradeNo)) return undefined;
    if (this.status === 'PAID' || this.status === 'NEEDS_REVIEW' || this.status === 'AWAITING_PAYMENT')
      return undefined;
    if (this.refundNo !== undefined) return undefined;
    const notificationId = this.notifiedTrades.get(tradeNo);
    return notificationId === undefined ? undefined : [tradeNo, notificationId];
  }

  /** What support resolution an escalation answers now. */
  escalationResolution(): 'PAYMENT_FOUND' | 'IN_REVIEW' | 'WAITING_FOR_PAYMENT' | 'CLOSED' | 'IN_PROGRESS' {
    if (this.evidence && this.status === 'AWAITING_PAYMENT') return 'PAYMENT_FOUND';
    if (this.status === 'NEEDS_REVIEW') return 'IN_REVIEW';
    if (this.status === 'AWAITING_PAYMENT') return 'WAITING_FOR_PAYMENT';
    return this.finished || this.decided ? 'CLOSED' : 'IN_PROGRESS';
  }
}

/** What a provider query reports about a payment. */
export interface ProviderPaymentState {
  status: string;
  tradeNo?: string;
  paidAmount?: number;
  currency?: string;
  merchantId?: string;
  paidAt?: string;
  refundedAmount?: number;
}

/** Payment evidence from a provider query: unknown fields stay visibly unknown (and so never match an order). */
export function evidenceFromProvider(
  state: ProviderPaymentState,
  source: 'query' | 'close',
  now: number,
): PaymentEvidence {
  return {
    source,
    tradeNo: state.tradeNo ?? 'unknown',
    amount: state.paidAmount ?? -1,
    currency: state.currency ?? 'unknown',
    merchantId: state.merchantId ?? 'unknown',
    paidAt: state.paidAt ?? new Date(now).toISOString(),
    ...(state.refundedAmount !== undefined && state.refundedAmount > 0
      ? { refundedAmount: state.refundedAmount }
      : state.status === 'REFUNDED'
        ? { refundedAmount: -1 }
        : {}),
  };
}

/**
 * Why a payment the provider reports partly or wholly refunded cannot confirm the order (the money is no longer all
 * ours: shipping the goods would give them away), or undefined when nothing of it is refunded.
 */
export function describeRefunded(paid: PaymentEvidence): string | undefined {
  if (paid.refundedAmount === undefined) return undefined;
  return paid.refundedAmount < 0
    ? `the provider reports trade ${paid.tradeNo} refunded`
    : `the provider reports ${paid.refundedAmount} of trade ${paid.tradeNo} refunded`;
}

/**
 * What is left to refund of a payment: its amount less what the provider reports refunded already; undefined when
 * that cannot be known (no amount, or a refunded amount not reported).
 */
export function refundableAmount(paid: PaymentEvidence): number | undefined {
  if (!Number.isSafeInteger(paid.amount) || paid.amount <= 0) return undefined;
  const refunded = paid.refundedAmount ?? 0;
  if (refunded < 0) return undefined;
  return Math.max(0, paid.amount - refunded);
}

/**
 * The benefits an order asks for, before pricing: what a failed setup must release (an empty rollback where untried).
 */
export function requestedBenefits(input: Pick<OrderPaymentInput, 'userId' | 'couponCode' | 'points'>): OrderBenefit[] {
  return [
    ...(input.couponCode !== undefined
      ? [{ participant: 'coupon' as const, resource: input.couponCode, quantity: 0 }]
      : []),
    ...(input.points ? [{ participant: 'points' as const, resource: input.userId, quantity: input.points }] : []),
  ];
}

/** Why a payment does not match the order, or undefined when amount, currency and merchant all match. */
export function describeMismatch(
  paid: PaymentEvidence,
  amount: number,
  currency: string,
  merchantId: string,
): string | undefined {
  const problems: string[] = [];
  if (paid.amount !== amount) problems.push(`amount ${paid.amount} != ${amount}`);
  if (paid.currency !== currency) problems.push(`currency ${paid.currency} != ${currency}`);
  if (paid.merchantId !== merchantId) problems.push(`merchant ${paid.merchantId} != ${merchantId}`);
  return problems.length ? problems.join('; ') : undefined;
}
