/**
 * The order payment lifecycle (architecture.md, steps 1-7): Try, create payment, early return, wait for a
 * callback / cancel / timer with active queries, check, confirm or close-then-cancel, refund late money.
 * Deterministic: no I/O here; every side effect is an activity.
 */
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  ParentClosePolicy,
  allHandlersFinished,
  condition,
  isCancellation,
  log,
  metricMeter,
  setCurrentDetails,
  startChild,
  uuid4,
  setHandler,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { OrderBenefit } from '../activities/benefits';
import { FailureType } from '../contracts/failures';
import {
  type OrderLine,
  type OrderPaymentInput,
  type OrderPaymentResult,
  type OrderStage,
  type OrderStatus,
  type OrderWorkflowStatus,
  type PaymentEvidence,
  type EscalationResult,
  type PaymentReady,
  type ReviewDecision,
  reviewDecisionProblem,
  type TimelineEntry,
  autoRefundNo,
  cancelOrderUpdate,
  coolingOffRefundUpdate,
  escalateUpdate,
  latePaymentWorkflowId,
  paymentNotifiedSignal,
  paymentReadyUpdate,
  type ReviewOutcome,
  reviewDecisionUpdate,
  statusQuery,
} from '../contracts/order-workflow';
import {
  EscalatedAtKey,
  EscalatedKey,
  NeedsReviewKey,
  OrderAmountKey,
  OrderStageKey,
  OrderStatusKey,
  StuckKey,
} from '../contracts/search-attributes';
import { latePayment } from './late-payment';
import { queryAfterCloseFoundPaid } from './shared/close-found-paid';
import { type ProviderPaymentState, describeMismatch, evidenceFromProvider } from './order/state';
import { MUST, QUERY, SETUP, clock, errorMessage, failureDetails, failureType, run } from './shared/steps';
import {
  approveAfterPaidStep,
  confirmMismatchStep,
  handOffOtherTradesStep,
  paymentReceiptStep,
  reviewHandsOffReportedStep,
} from './patches';

/** Confirm/cancel/return attempts after which the order is marked Stuck (search attribute + metric); retries go on. */
export const STUCK_AFTER_ATTEMPTS = 5;

/** Stages in which a payment found by a support query can still be confirmed by the main loop. */
const WAITING_STAGES: OrderStage[] = ['AWAITING_PAYMENT', 'QUERYING_PROVIDER'];

const CANCELLABLE_STAGES: OrderStage[] = [
  'CREATING_ORDER',
  'RESERVING',
  'CREATING_PAYMENT',
  'AWAITING_PAYMENT',
  'QUERYING_PROVIDER',
];

/**
 * One order's payment lifecycle; workflow id `order-<orderId>`.
 *
 * A cancel through Temporal (`temporal workflow cancel`, the Web UI's Cancel) is handled like the buyer's cancel
 * while the order can still be cancelled: close at the provider, release stock, coupon and points, CANCELLED,
 * watch for late money. The lifecycle itself runs non-cancellable, so a cancel never cuts a step off half-way or
 * ends the workflow with a reservation held and the provider's payment open; later it is only noted.
 */
export async function orderPayment(input: OrderPaymentInput): Promise<OrderPaymentResult> {
  const cancelledThroughTemporal = CancellationScope.current().cancelRequested;
  return CancellationScope.nonCancellable(() => orderLifecycle(input, cancelledThroughTemporal));
}

async function orderLifecycle(
  input: OrderPaymentInput,
  cancelledThroughTemporal: Promise<never>,
): Promise<OrderPaymentResult> {
  const { orderId } = input;
  const timeline: TimelineEntry[] = [];
  let stage: OrderStage = 'CREATING_ORDER';
  let status: OrderStatus = 'AWAITING_PAYMENT';
  let amount: number | undefined;
  let currency: string | undefined;
  let deadline: number | undefined;
  let nextCheckAt: number | undefined;
  let queryAttempts = 0;
  let ready:
    | { ok: true; value: PaymentReady }
    | { ok: false; type: string; message: string; details: Record<string, unknown> }
    | undefined;
  let evidence: PaymentEvidence | undefined;
  let cancelRequested: { reason?: string } | undefined;
  let finished = false;
  let reviewDecision: ReviewDecision | undefined;
  /** Decisions that could not be carried out, and why (answered to the operator who sent them). */
  const reviewFailures = new Map<ReviewDecision, { type: string; message: string }>();
  let refundRequested: { reason?: string } | undefined;
  cancelledThroughTemporal.catch(() => {
    if (CANCELLABLE_STAGES.includes(stage) && !cancelRequested) {
      cancelRequested = { reason: 'cancelled through Temporal by an operator' };
      note(
        'CANCEL_REQUESTED',
        'The workflow was cancelled through Temporal: closing the payment and releasing everything',
      );
    } else {
      note(
        'CANCEL_IGNORED',
        `The workflow was cancelled through Temporal in stage ${stage}; the order goes on to a safe end`,
      );
    }
  });
  let refundNo: string | undefined;
  /** The order was PAID when automatic handling stopped (e.g. the provider refused the buyer's cooling-off refund). */
  let reviewAfterPaid = false;
  /** The payment known when the review opened (awaitReview's), which an approval confirms. */
  let reviewPayment: PaymentEvidence | undefined;
  /** A review refund decision carried out with no payment known: a payment reported meanwhile was not refunded. */
  let reviewRefundedNothing = false;
  let coolingOffUntil: number | undefined;
  /** The order's status is decided (the cancel update can answer), though the workflow may still watch. */
  let decided = false;
  let providerExpiresAt: number | undefined;
  const seenNotifications = new Set<string>();
  /** Every trade a notification reported for this order, with its first notification id (arrival order). */
  const notifiedTrades = new Map<string, string>();
  /** Trades handed to their own latePayment workflow when this workflow ends. */
  const handedOff = new Set<string>();

  const note = (type: string, message: string) => {
    timeline.push({ at: new Date().toISOString(), type, message });
  };
  const enter = (next: OrderStage, details: string) => {
    stage = next;
    setCurrentDetails(`**${next}**: ${details}`);
    upsertSearchAttributes([{ key: OrderStageKey, value: next }]);
  };
  const setStatus = (next: OrderStatus) => {
    status = next;
    upsertSearchAttributes([
      { key: OrderStatusKey, value: next },
      { key: NeedsReviewKey, value: next === 'NEEDS_REVIEW' },
    ]);
  };

  /** Coupon and points of this order (TCC participants besides stock), and those whose Try was started. */
  let benefits: OrderBenefit[] = [];
  const benefitsTried: OrderBenefit[] = [];
  const benefitCall = (b: OrderBenefit) => ({ orderId, userId: input.userId, ...b });
  const describeBenefit = (b: OrderBenefit) =>
    b.participant === 'coupon' ? `coupon ${b.resource}` : `${b.quantity} points`;

  /**
   * Runs a step that must eventually succeed (TCC confirm, cancel and return; closing the provider payment; a refund;
   * a status change; the fulfilment outbox row). After STUCK_AFTER_ATTEMPTS failed attempts the
   * order is marked Stuck (search attribute, metric, timeline) and the step keeps retrying with backoff until it
   * succeeds.
   */
  async function mustRun<K extends keyof Activities>(
    name: K,
    summary: string,
    ...args: Parameters<Activities[K]>
  ): Promise<Awaited<ReturnType<Activities[K]>>> {
    try {
      return await run(
        name,
        { ...MUST, retry: { ...MUST.retry, maximumAttempts: STUCK_AFTER_ATTEMPTS } },
        summary,
        ...args,
      );
    } catch (err) {
      if (!(err instanceof ActivityFailure) || err.retryState !== 'MAXIMUM_ATTEMPTS_REACHED') throw err;
      upsertSearchAttributes([{ key: StuckKey, value: true }]);
      metricMeter
        .createCounter(
          'order_tcc_stuck',
          'steps',
          'Must-succeed steps (TCC confirm/cancel/return, close, refund, status change) that kept failing',
        )
        .add(1, { activity: name });
      note('STUCK', `${summary} failed ${STUCK_AFTER_ATTEMPTS} times (${errorMessage(err)}); still retrying`);
      const result = await run(name, MUST, `${summary} (retrying while stuck)`, ...args);
      if (status !== 'NEEDS_REVIEW') upsertSearchAttributes([{ key: StuckKey, value: false }]);
      note('UNSTUCK', `${summary} succeeded after being stuck`);
      return result;
    }
  }

  /** TCC Confirm of every participant. */
  async function confirmAll(why: string): Promise<void> {
    await mustRun('confirmStock', `confirm ${lines.length} SKU(s)${why}`, { orderId, lines: stockLines(lines) });
    for (const b of benefits) await mustRun('confirmBenefit', `confirm ${describeBenefit(b)}${why}`, benefitCall(b));
  }

  /** TCC Cancel of every participant whose Try may have run (an empty rollback where it did not). */
  async function cancelAll(why: string): Promise<void> {
    await mustRun('cancelStock', `release ${lines.length} SKU(s)${why}`, { orderId, lines: stockLines(lines) });
    for (const b of benefitsTried)
      await mustRun('cancelBenefit', `release ${describeBenefit(b)}${why}`, benefitCall(b));
  }

  /**
   * After a refund of a confirmed order: stock back to available, coupon back to AVAILABLE, points back to the balance.
   */
  async function returnAll(why: string): Promise<void> {
    await mustRun('returnStock', `return ${lines.length} SKU(s) to stock${why}`, { orderId, lines: stockLines(lines) });
    for (const b of benefits) await mustRun('returnBenefit', `return ${describeBenefit(b)}${why}`, benefitCall(b));
  }

  /** Review refund: each participant is cancelled if only tried, or returned if it was already confirmed. */
  async function releaseOrReturnAll(why: string): Promise<void> {
    try {
      await mustRun('cancelStock', `release ${lines.length} SKU(s)${why}`, { orderId, lines: stockLines(lines) });
    } catch (err) {
      if (failureType(err) !== FailureType.TCC_CONFLICT) throw err;
      await mustRun('returnStock', `return ${lines.length} SKU(s)${why}`, { orderId, lines: stockLines(lines) });
    }
    for (const b of benefits) {
      try {
        await mustRun('cancelBenefit', `release ${describeBenefit(b)}${why}`, benefitCall(b));
      } catch (err) {
        if (failureType(err) !== FailureType.TCC_CONFLICT) throw err;
        await mustRun('returnBenefit', `return ${describeBenefit(b)}${why}`, benefitCall(b));
      }
    }
  }

  setHandler(statusQuery, (): OrderWorkflowStatus => ({
    orderId,
    stage,
    status,
    amount,
    currency,
    deadline: deadline === undefined ? undefined : new Date(deadline).toISOString(),
    nextCheckAt: nextCheckAt === undefined ? undefined : new Date(nextCheckAt).toISOString(),
    queryAttempts,
    timeline,
  }));

  setHandler(paymentReadyUpdate, async () => {
    await condition(() => ready !== undefined);
    if (ready!.ok) return ready!.value;
    throw ApplicationFailure.create({
      type: ready!.type,
      message: ready!.message,
      details: [ready!.details],
      nonRetryable: true,
    });
  });

  setHandler(paymentNotifiedSignal, (n) => {
    if (seenNotifications.has(n.notificationId)) return; // providers redeliver; the id is the dedup key
    seenNotifications.add(n.notificationId);
    if (n.outTradeNo !== orderId) {
      note('NOTIFICATION_IGNORED', `Notification ${n.notificationId} is for ${n.outTradeNo}, not this order`);
      return;
    }
    if (n.provider !== undefined && n.provider !== input.provider) {
      // One provider's notification never speaks for a payment made with another (the API and inbox refuse it too).
      note(
        'NOTIFICATION_IGNORED',
        `Notification ${n.notificationId} comes from ${n.provider}; this order pays with ${input.provider}`,
      );
      return;
    }
    note('PAYMENT_NOTIFIED', `Provider notified payment ${n.tradeNo} (${n.amount} ${n.currency})`);
    if (!notifiedTrades.has(n.tradeNo)) notifiedTrades.set(n.tradeNo, n.notificationId);
    const { provider: _sender, ...claimed } = n;
    if (!evidence) evidence = { source: 'callback', ...claimed };
  });

  setHandler(
    reviewDecisionUpdate,
    async (d): Promise<ReviewOutcome> => {
      reviewDecision = d;
      note('REVIEW_DECIDED', `${d.operator} decided to ${d.decision}: ${d.reason}`);
      // Done when the order left review, or when this decision failed and the order waits for another. Accepted while
      // the stage is NEEDS_REVIEW, the order is still being marked (its status not yet NEEDS_REVIEW): wait for that
      // too,
      // or the update would answer the status from before the review without the decision having been carried out.
      await condition(
        () => (status !== 'NEEDS_REVIEW' && stage !== 'NEEDS_REVIEW') || finished || reviewDecision !== d,
      );
      const failure = reviewFailures.get(d);
      return failure ? { status, failure } : { status };
    },
    {
      validator: (d: ReviewDecision) => {
        const problem = reviewDecisionProblem(d);
        if (problem) throw new Error(problem);
        // Kept for draining: this workflow refunds what it knows was paid, never an amount an operator names.
        if (d.refundAmount !== undefined)
          throw new Error('refundAmount is not taken by an order started before it existed (orderPayment)');
        // NEEDS_REVIEW: the order is marked in MySQL and the workflow is about to wait; the decision is kept.
        if ((stage !== 'AWAITING_REVIEW' && stage !== 'NEEDS_REVIEW') || reviewDecision)
          throw new Error(`order ${orderId} is not waiting for a review decision (stage ${stage})`);
        // (Validators are not replayed: these refusals need no patch. orderLifecycleV2's state.ts refuses the same.)
        // No payment known (a review opened by a failed close, say): approving would hand unpaid goods to fulfilment.
        // (The payment the review opened with: an approval confirms that one; one reported during this type's review
        // is not checked against the order, and would be confirmed as nothing paid.)
        if (d.decision === 'approve' && !reviewAfterPaid && !reviewPayment) {
          throw new Error(
            `order ${orderId} has no known payment: approving would fulfil an unpaid order; decide refund to close it`,
          );
        }
        // This workflow refunded the payment (the buyer's cooling-off refund, or a refund decision whose next step then
        // failed): approving would hand a refunded order to fulfilment.
        if (d.decision === 'approve' && refundNo !== undefined) {
          throw new Error(`order ${orderId} was already refunded (${refundNo}); only a refund decision can settle it`);
        }
      },
    },
  );

  setHandler(
    coolingOffRefundUpdate,
    async (r) => {
      refundRequested ??= r;
      await condition(() => status !== 'PAID' || finished);
      return { status, refundNo: refundNo };
    },
    {
      validator: (_r: { reason?: string }) => {
        if (stage !== 'COOLING_OFF' || refundRequested)
          throw new Error(`order ${orderId} is not in its cooling-off window (stage ${stage}, status ${status})`);
      },
    },
  );

  let escalatedAt: Date | undefined;
  setHandler(escalateUpdate, async ({ note: buyerNote }): Promise<EscalationResult> => {
    // One upsert command as before (replay-safe); the time is the first escalation's, kept on later ones.
    escalatedAt ??= new Date();
    upsertSearchAttributes([
      { key: EscalatedKey, value: true },
      { key: EscalatedAtKey, value: escalatedAt },
    ]);
    note('ESCALATED', 'Buyer asked for help; querying the provider now');
    let providerStatus = 'UNKNOWN';
    let providerState: Record<string, unknown> = {};
    try {
      const state = await run('queryProviderPayment', QUERY, `query ${input.provider} for support`, {
        provider: input.provider,
        outTradeNo: orderId,
      });
      providerStatus = state.status;
      providerState = { ...state };
      if (state.status === 'PAID' && !evidence && WAITING_STAGES.includes(stage)) {
        evidence = evidenceFromQuery(state, 'query');
        note('PAYMENT_FOUND_BY_QUERY', 'Support query found the payment; confirming now');
      }
    } catch (err) {
      providerState = { error: errorMessage(err) };
    }
    const resolution: EscalationResult['resolution'] =
      evidence && status === 'AWAITING_PAYMENT'
        ? 'PAYMENT_FOUND'
        : status === 'NEEDS_REVIEW'
          ? 'IN_REVIEW'
          : status === 'AWAITING_PAYMENT'
            ? 'WAITING_FOR_PAYMENT'
            : finished || decided
              ? 'CLOSED'
              : 'IN_PROGRESS';
    const ticketId = `tkt-${uuid4()}`;
    await run('createSupportTicket', MUST, 'record support ticket', {
      ticketId,
      orderId,
      orderStatus: status,
      stage,
      providerStatus,
      resolution,
      snapshot: { stage, status, deadline, queryAttempts, timeline, provider: providerState },
      note: buyerNote,
    });
    return { ticketId, orderId, status, stage, providerStatus, resolution };
  });

  setHandler(
    cancelOrderUpdate,
    async ({ reason }) => {
      cancelRequested ??= { reason };
      await condition(() => decided || finished);
      return { status };
    },
    {
      validator: (_request: { reason?: string }) => {
        // A repeat of a cancel being carried out joins it (a retry after a timed-out cancel; as orderLifecycleV2).
        if (cancelRequested && !decided && !finished) return;
        if (!CANCELLABLE_STAGES.includes(stage) || evidence || finished) {
          throw new Error(`order ${orderId} can no longer be cancelled (stage ${stage}, status ${status})`);
        }
      },
    },
  );

  upsertSearchAttributes([{ key: OrderStatusKey, value: status }]);
  note('STARTED', 'Order lifecycle started');

  // Steps 1-3: create, Try, create payment, early return. Compensation is registered before the Try.
  let lines: OrderLine[] = [];
  let merchantId = '';
  let reserveAttempted = false;
  try {
    enter('CREATING_ORDER', 'pricing items from the catalog');
    const priced = await run('createOrder', SETUP, `price ${input.items.length} item(s) from the catalog`, {
      orderId,
      userId: input.userId,
      items: input.items,
      provider: input.provider,
      idempotencyKey: input.idempotencyKey,
      ...(input.couponCode !== undefined ? { couponCode: input.couponCode } : {}),
      ...(input.points !== undefined ? { points: input.points } : {}),
    });
    lines = priced.lines;
    benefits = [
      ...(priced.couponCode
        ? [{ participant: 'coupon' as const, resource: priced.couponCode, quantity: priced.discount ?? 0 }]
        : []),
      ...(priced.points ? [{ participant: 'points' as const, resource: input.userId, quantity: priced.points }] : []),
    ];
    amount = priced.amount;
    currency = priced.currency;
    upsertSearchAttributes([{ key: OrderAmountKey, value: amount }]);

    enter('RESERVING', `reserving ${lines.length} SKU(s)`);
    reserveAttempted = true;
    await run('reserveStock', SETUP, `reserve ${lines.length} SKU(s)`, { orderId, lines: stockLines(lines) });
    note('STOCK_RESERVED', `Reserved ${lines.map((l) => `${l.quantity} x ${l.sku}`).join(', ')}`);
    for (const b of benefits) {
      benefitsTried.push(b); // compensation registered before the Try
      await run('tryBenefit', SETUP, `reserve ${describeBenefit(b)}`, benefitCall(b));
      note(`${b.participant.toUpperCase()}_RESERVED`, `Reserved ${describeBenefit(b)}`);
    }

    enter('CREATING_PAYMENT', `creating the ${input.provider} payment`);
    const now = Date.now();
    deadline = now + input.paymentTimeoutMs;
    const payment = await run('createProviderPayment', SETUP, `create ${input.provider} payment`, {
      orderId,
      provider: input.provider,
      amount,
      currency,
      subject: `Order ${orderId}`,
      notifyUrl: `${input.publicBaseUrl}/callbacks/${input.provider}`,
      deadline: new Date(deadline).toISOString(),
      providerExpiresAt: new Date(deadline + input.providerExpiryMarginMs).toISOString(),
    });
    merchantId = payment.merchantId;
    providerExpiresAt = deadline + input.providerExpiryMarginMs;
    note('PAYMENT_CREATED', `Payment created at ${input.provider}; pay before ${new Date(deadline).toISOString()}`);
    ready = {
      ok: true,
      value: {
        orderId,
        status: 'AWAITING_PAYMENT',
        amount,
        currency,
        payment: {
          provider: input.provider,
          paymentUrl: payment.paymentUrl,
          expiresAt: new Date(deadline).toISOString(),
        },
      },
    };
  } catch (err) {
    const type = failureType(err) ?? FailureType.PAYMENT_CREATION_FAILED;
    const message = errorMessage(err);
    ready = { ok: false, type, message, details: failureDetails(err) };
    note('FAILED', `Order failed: ${type}: ${message}`);
    await CancellationScope.nonCancellable(async () => {
      if (reserveAttempted) {
        enter('RELEASING', 'releasing stock, coupon and points of a failed order');
        await cancelAll('');
      }
      if (amount !== undefined) {
        await mustRun('transitionOrder', 'mark order FAILED', {
          orderId,
          from: ['AWAITING_PAYMENT'],
          to: 'FAILED',
          reason: type,
          event: { type: 'ORDER_FAILED', message: `Order failed: ${message}` },
        });
      }
    });
    setStatus('FAILED');
    return finish({ orderId, status: 'FAILED', reason: type });
  }

  try {
    return await settle();
  } catch (err) {
    if (isCancellation(err)) throw err;
    // Something we cannot resolve automatically (a TCC conflict, a refund the provider refuses): never leave
    // money in flight behind a failed workflow; hand the order to a person with the reason.
    const type = failureType(err) ?? FailureType.UNEXPECTED_ERROR;
    reviewAfterPaid = (status as OrderStatus) === 'PAID'; // (setStatus() changes it inside nested functions, which narrowing ignores)
    note('NEEDS_REVIEW', `Automatic handling stopped: ${type}: ${errorMessage(err)}`);
    upsertSearchAttributes([{ key: StuckKey, value: true }]);
    await mustRun('transitionOrder', 'mark order NEEDS_REVIEW', {
      orderId,
      from: ['AWAITING_PAYMENT', 'EXPIRED', 'CANCELLED', 'PAID'],
      to: 'NEEDS_REVIEW',
      reason: type,
      event: {
        type: 'ORDER_NEEDS_REVIEW',
        message: `Automatic handling stopped (${type}: ${errorMessage(err)}); an operator must decide`,
      },
    });
    setStatus('NEEDS_REVIEW');
    return awaitReview(evidence, `${type}: ${errorMessage(err)}`);
  }

  async function settle(): Promise<OrderPaymentResult> {
    const deadlineAt = deadline!;
    // Step 4: wait for a callback, a cancel or the deadline; query the provider on a backoff meanwhile.
    let delay = input.queryFirstDelayMs;
    enter('AWAITING_PAYMENT', `waiting for payment until ${new Date(deadlineAt).toISOString()}`);
    while (!evidence && !cancelRequested && Date.now() < deadlineAt) {
      const now = Date.now();
      nextCheckAt = Math.min(now + delay, deadlineAt);
      const woke = await condition(() => evidence !== undefined || cancelRequested !== undefined, nextCheckAt - now, {
        summary:
          nextCheckAt === deadlineAt
            ? `wait for payment until the deadline, ${clock(deadlineAt)}`
            : `wait for payment until ${clock(nextCheckAt)}, then query ${input.provider}`,
      });
      if (woke || Date.now() >= deadlineAt) break;
      enter('QUERYING_PROVIDER', `asking ${input.provider} (query ${queryAttempts + 1})`);
      queryAttempts++;
      try {
        const state = await run('queryProviderPayment', QUERY, `query ${input.provider} (attempt ${queryAttempts})`, {
          provider: input.provider,
          outTradeNo: orderId,
        });
        if ((state.status === 'PAID' || state.status === 'REFUNDED') && !evidence) {
          evidence = evidenceFromQuery(state, 'query');
          note('PAYMENT_FOUND_BY_QUERY', `No callback yet, but ${input.provider} reports the payment as paid`);
        }
      } catch (err) {
        note('QUERY_FAILED', `Query ${queryAttempts} failed, will try again: ${errorMessage(err)}`);
      }
      if (!evidence) enter('AWAITING_PAYMENT', `waiting for payment until ${new Date(deadlineAt).toISOString()}`);
      delay = Math.min(delay * 2, input.queryMaxIntervalMs);
    }
    nextCheckAt = undefined;

    if (!evidence) {
      // Step 6: close at the provider first, so that nobody can pay an order we release.
      const target: OrderStatus = cancelRequested ? 'CANCELLED' : 'EXPIRED';
      enter(
        'CLOSING',
        cancelRequested ? 'buyer cancelled; closing the payment' : 'deadline reached; closing the payment',
      );
      note(
        cancelRequested ? 'CANCEL_REQUESTED' : 'DEADLINE_REACHED',
        cancelRequested ? 'Buyer asked to cancel' : 'Payment deadline reached',
      );
      const closed = await mustRun('closeProviderPayment', `close ${input.provider} payment`, {
        orderId,
        provider: input.provider,
      });
      if (closed.result === 'ALREADY_PAID') {
        note('CLOSE_FOUND_PAID', 'The buyer paid just before the close: treating the order as paid');
        if (!evidence) {
          const { state, rechecked } = await queryAfterCloseFoundPaid(
            input.provider,
            orderId,
            () => evidence !== undefined,
          );
          // An execution that rechecks keeps a payment whose notification arrived meanwhile (it names the amount); one
          // that does not replaces it with the query's answer, as it always did (old histories replay the same).
          if (!rechecked || !evidence) evidence = evidenceFromQuery(state, 'close');
        }
      } else {
        await CancellationScope.nonCancellable(async () => {
          enter('RELEASING', `releasing ${lines.length} SKU(s)${benefits.length ? ', coupon and points' : ''}`);
          await cancelAll('');
          await mustRun('transitionOrder', `mark order ${target}`, {
            orderId,
            from: ['AWAITING_PAYMENT'],
            to: target,
            reason: cancelRequested ? 'USER_CANCELLED' : 'PAYMENT_TIMEOUT',
            event: {
              type: `ORDER_${target}`,
              message: cancelRequested
                ? `Cancelled by the buyer${cancelRequested.reason ? `: ${cancelRequested.reason}` : ''}`
                : 'Not paid before the deadline; stock released',
            },
          });
        });
        setStatus(target);
        decided = true;
        note(
          `ORDER_${target}`,
          target === 'EXPIRED' ? 'Not paid in time; stock released' : 'Cancelled; stock released',
        );
        // Step 7: some providers still take money after a close (Alipay's QR closed before it was scanned stays
        // payable). Watch until the provider-side expiry, then ask once more; money that arrived is refunded.
        if (!evidence && providerExpiresAt !== undefined) {
          // Even when releasing took us past the expiry (a slow database, a restart), ask once: the soak found
          // money paid between our close and the expiry whose notification was lost.
          if (Date.now() < providerExpiresAt) {
            enter(
              'WATCHING_LATE_PAYMENT',
              `closed; watching for a late payment until ${new Date(providerExpiresAt).toISOString()}`,
            );
            await condition(() => evidence !== undefined, providerExpiresAt - Date.now() + 1000, {
              summary: `watch for a late payment until the provider-side expiry, ${clock(providerExpiresAt)}`,
            });
          }
          if (!evidence) {
            const state = await run('queryProviderPayment', MUST, `final query ${input.provider} after expiry`, {
              provider: input.provider,
              outTradeNo: orderId,
            });
            if (state.status === 'PAID') evidence = evidenceFromQuery(state, 'query');
          }
        }
        if (evidence) {
          await refundLatePayment(evidence);
          // The result says what MySQL says: REFUNDED for a late payment, not why the order had closed before it.
          return finish({ orderId, status, reason: 'LATE_PAYMENT_REFUNDED' });
        }
        return finish({ orderId, status, reason: cancelRequested ? 'USER_CANCELLED' : 'PAYMENT_TIMEOUT' });
      }
    }

    // Step 5: paid. Check amount, currency and merchant; a mismatch goes to review, never to confirm. A callback that
    // does not match is first checked with the provider: anyone holding a secret could have sent it.
    let paid = evidence!;
    let mismatch = describeMismatch(paid, amount!, currency!, merchantId);
    if (mismatch && paid.source === 'callback' && confirmMismatchStep()) {
      const confirmed = await confirmWithProvider(paid, mismatch);
      if (!confirmed) {
        // Not paid at the provider: the claim changes nothing; the order waits on until its own deadline.
        evidence = undefined;
        return settle();
      }
      paid = evidence = confirmed;
      mismatch = describeMismatch(paid, amount!, currency!, merchantId);
    }
    if (mismatch) {
      enter('NEEDS_REVIEW', mismatch);
      note('NEEDS_REVIEW', `Payment does not match the order: ${mismatch}`);
      await mustRun('transitionOrder', 'mark order NEEDS_REVIEW', {
        orderId,
        from: ['AWAITING_PAYMENT'],
        to: 'NEEDS_REVIEW',
        reason: 'PAYMENT_MISMATCH',
        event: {
          type: 'ORDER_NEEDS_REVIEW',
          message: `Payment does not match the order (${mismatch}); kept for manual review, stock stays reserved`,
        },
        payment: paid,
      });
      setStatus('NEEDS_REVIEW');
      return awaitReview(paid, mismatch);
    }

    enter('CONFIRMING', `payment ${paid.tradeNo} matches; confirming`);
    await CancellationScope.nonCancellable(async () => {
      await confirmAll('');
      await mustRun('transitionOrder', 'mark order PAID', {
        orderId,
        from: ['AWAITING_PAYMENT'],
        to: 'PAID',
        reason: `PAID_VIA_${paid.source.toUpperCase()}`,
        event: {
          type: 'ORDER_PAID',
          message: `Paid (${paid.amount} ${paid.currency}, trade ${paid.tradeNo}, learned from ${paid.source})`,
        },
        payment: paid,
      });
    });
    setStatus('PAID');
    note('ORDER_PAID', `Paid; learned from ${paid.source}`);
    return afterPaid(paid);
  }

  /**
   * Asks the provider about a callback that does not match the order. Returns the provider's own account of the payment
   * when it reports one, else records on the order's timeline that the claim was not confirmed and returns undefined.
   */
  async function confirmWithProvider(claimed: PaymentEvidence, mismatch: string): Promise<PaymentEvidence | undefined> {
    enter('QUERYING_PROVIDER', `a notification does not match the order (${mismatch}); asking ${input.provider} first`);
    let answer: string;
    try {
      const state = await run('queryProviderPayment', QUERY, `confirm mismatched notification with ${input.provider}`, {
        provider: input.provider,
        outTradeNo: orderId,
      });
      if (state.status === 'PAID' || state.status === 'REFUNDED') return evidenceFromQuery(state, 'query');
      answer = `${input.provider} reports ${state.status}`;
    } catch (err) {
      answer = `${input.provider} could not be asked (${errorMessage(err)}); later queries will`;
    }
    const message = `A notification claimed payment ${claimed.tradeNo} (${mismatch}) but ${answer}: ignored; the order keeps its deadline`;
    note('NOTIFICATION_NOT_CONFIRMED', message);
    await mustRun('recordOrderEvent', 'record the unconfirmed notification', {
      orderId,
      type: 'NOTIFICATION_NOT_CONFIRMED',
      message,
    });
    return undefined;
  }

  /** Cooling-off window (refund without review), then the hand-off to fulfilment. */
  async function afterPaid(paid: PaymentEvidence): Promise<OrderPaymentResult> {
    decided = true;
    // Added behind the patch `order-payment-receipt` (src/workflows/patches.ts): executions started before the change
    // replay without this step; every new execution queues the buyer's receipt as soon as the order is PAID.
    if (paymentReceiptStep())
      await run('recordPaymentReceipt', MUST, "queue the buyer's payment receipt (outbox)", orderId);
    const window = input.coolingOffMs ?? 0;
    if (window > 0) {
      coolingOffUntil = Date.now() + window;
      enter('COOLING_OFF', `refundable without review until ${new Date(coolingOffUntil).toISOString()}`);
      await condition(() => refundRequested !== undefined, window, {
        summary: `cooling-off window until ${clock(coolingOffUntil)}`,
      });
      if (refundRequested) {
        enter('REFUNDING', 'buyer refunded inside the cooling-off window');
        await CancellationScope.nonCancellable(async () => {
          await refundInFull(
            paid,
            'cooling-off',
            `cooling-off refund${refundRequested?.reason ? `: ${refundRequested.reason}` : ''}`,
          );
          await returnAll('');
          await mustRun('transitionOrder', 'mark order REFUNDED', {
            orderId,
            from: ['PAID'],
            to: 'REFUNDED',
            reason: 'COOLING_OFF_REFUND',
            event: {
              type: 'ORDER_REFUNDED',
              message: 'Refunded in full inside the cooling-off window; stock returned',
            },
          });
        });
        setStatus('REFUNDED');
        return finish({ orderId, status: 'REFUNDED', reason: 'COOLING_OFF_REFUND' });
      }
    }
    await mustRun('markFulfilmentReady', 'hand off to fulfilment (outbox)', orderId);
    return finish({ orderId, status: 'PAID' });
  }

  /** Waits durably for an operator's decision, with a reminder on the timeline; then approves or refunds. */
  /**
   * Waits for an operator's decision and carries it out. A decision that cannot be carried out (a business
   * failure: the provider refuses the refund, a TCC conflict) is recorded in the timeline and answered to the
   * operator; the order stays in review for another decision instead of failing the workflow with the order
   * parked in NEEDS_REVIEW and nobody waiting.
   */
  async function awaitReview(paid: PaymentEvidence | undefined, why: string): Promise<OrderPaymentResult> {
    // What an approval confirms (a plain variable: no command, nothing to patch).
    reviewPayment = paid;
    for (;;) {
      try {
        return await reviewOnce(paid, why);
      } catch (err) {
        const d = reviewDecision;
        if (!d || !(err instanceof ActivityFailure) || err.retryState !== 'NON_RETRYABLE_FAILURE') throw err;
        const failure = { type: failureType(err) ?? FailureType.ACTIVITY_FAILED, message: errorMessage(err) };
        await run('recordOrderEvent', MUST, 'review decision failed', {
          orderId,
          type: 'REVIEW_DECISION_FAILED',
          message: `${d.operator}'s decision to ${d.decision} could not be carried out (${failure.type}: ${failure.message}); waiting for another decision`,
        });
        upsertSearchAttributes([{ key: NeedsReviewKey, value: true }]);
        reviewFailures.set(d, failure);
        reviewDecision = undefined;
        why = `the ${d.decision} decision failed: ${failure.message}`;
      }
    }
  }

  async function reviewOnce(paid: PaymentEvidence | undefined, why: string): Promise<OrderPaymentResult> {
    decided = true;
    enter('AWAITING_REVIEW', `waiting for an operator: ${why}`);
    while (!reviewDecision) {
      const got = await condition(() => reviewDecision !== undefined, input.reviewReminderMs ?? 3_600_000, {
        summary: 'wait for a review decision',
      });
      if (!got)
        await run('recordOrderEvent', MUST, 'review reminder', {
          orderId,
          type: 'REVIEW_REMINDER',
          message: `Still waiting for a review decision: ${why}`,
        });
    }
    const d = reviewDecision;
    upsertSearchAttributes([{ key: NeedsReviewKey, value: false }]);
    if (d.decision === 'approve') {
      enter('CONFIRMING', `approved by ${d.operator}`);
      await CancellationScope.nonCancellable(async () => {
        await confirmAll(' (review approved)');
        await mustRun('transitionOrder', 'mark order PAID (review approved)', {
          orderId,
          from: ['NEEDS_REVIEW'],
          to: 'PAID',
          reason: 'REVIEW_APPROVED',
          event: {
            type: 'ORDER_PAID',
            message: `Approved by ${d.operator}: ${d.reason}`,
            data: { operator: d.operator, decision: d.decision },
          },
          payment: paid,
        });
      });
      setStatus('PAID');
      // Behind the patch `order-payment-approve-after-paid`: an order that was already PAID when it went to review (a
      // step after PAID failed, e.g. the buyer's cooling-off refund that the provider refused) stays paid and goes to
      // fulfilment. Before, it went through the cooling-off step again, where the refund still asked for was tried
      // at once; refused again, the workflow waited for a review while MySQL said PAID and every decision was refused.
      if (paid && reviewAfterPaid && approveAfterPaidStep()) {
        note(
          'REVIEW_APPROVED',
          `${d.operator} kept the paid order; the buyer's refund request is closed by this decision`,
        );
        await mustRun('markFulfilmentReady', 'hand off to fulfilment (outbox, review approved)', orderId);
        return finish({ orderId, status: 'PAID', reason: 'REVIEW_APPROVED' });
      }
      return paid ? afterPaid(paid) : finish({ orderId, status: 'PAID', reason: 'REVIEW_APPROVED' });
    }
    enter('REFUNDING', `refund decided by ${d.operator}`);
    await CancellationScope.nonCancellable(async () => {
      if (paid && paid.amount > 0) {
        await refundInFull(paid, 'review', `review refund by ${d.operator}: ${d.reason}`);
      }
      if (!paid) reviewRefundedNothing = true;
      await releaseOrReturnAll(' (review refund)');
      await mustRun('transitionOrder', 'mark order REFUNDED (review)', {
        orderId,
        from: ['NEEDS_REVIEW'],
        to: 'REFUNDED',
        reason: 'REVIEW_REFUNDED',
        event: {
          type: 'ORDER_REFUNDED',
          message: `Refunded by ${d.operator}: ${d.reason}`,
          data: { operator: d.operator, decision: d.decision },
        },
      });
    });
    setStatus('REFUNDED');
    return finish({ orderId, status: 'REFUNDED', reason: 'REVIEW_REFUNDED' });
  }

  /**
   * Refunds what a payment paid, with the stable refund number of its trade, so no retry refunds twice. The number is
   * kept (and answered to the buyer) only once the provider has made the refund.
   */
  async function refundInFull(paid: PaymentEvidence, why: string, reason: string): Promise<void> {
    const outRefundNo = autoRefundNo(orderId, paid.tradeNo);
    await mustRun('refundPayment', `refund ${paid.amount} ${paid.currency} (${why})`, {
      orderId,
      provider: input.provider,
      tradeNo: paid.tradeNo,
      outRefundNo,
      amount: paid.amount,
      currency: paid.currency,
      reason,
    });
    refundNo = outRefundNo;
  }

  async function refundLatePayment(late: PaymentEvidence): Promise<void> {
    enter('REFUNDING', `refunding late payment ${late.tradeNo}`);
    note('LATE_PAYMENT', `Payment ${late.tradeNo} arrived for a closed order; refunding`);
    await CancellationScope.nonCancellable(async () => {
      await refundInFull(late, 'late payment', 'payment arrived after the order was closed');
      await mustRun('transitionOrder', 'mark order REFUNDED', {
        orderId,
        from: ['EXPIRED', 'CANCELLED', 'FAILED'],
        to: 'REFUNDED',
        reason: 'LATE_PAYMENT_REFUNDED',
        event: { type: 'ORDER_REFUNDED', message: `Late payment ${late.tradeNo} refunded in full` },
        payment: late,
      });
    });
    setStatus('REFUNDED');
  }

  async function finish(result: OrderPaymentResult): Promise<OrderPaymentResult> {
    finished = true;
    enter('DONE', `order is ${result.status}`);
    if (!ready)
      ready = { ok: false, type: FailureType.ORDER_CLOSED, message: `order is ${result.status}`, details: {} };
    // Let update handlers (early return, cancel) reply before the workflow completes.
    await condition(allHandlersFinished);
    // A trade that arrives during the hand-off is handed off too: the loop ends only when none is left.
    while (await handOffOtherTrades()) await condition(allHandlersFinished);
    log.info('order lifecycle finished', { orderId, status: result.status });
    return result;
  }

  /**
   * Behind the patch `order-payment-hand-off-other-trades`: a trade other than the one this order kept (or refunded),
   * reported while the workflow ran (a second payment during the cooling-off window or a review), is handed to the
   * latePayment workflow of that trade once the order's status is final, as if it had arrived after the workflow
   * ended: it verifies the trade with the provider and refunds it with the trade's stable refund number (or leaves the
   * order for review). Before, it was only noted on the timeline while the inbox and reconciliation counted it as
   * delivered, and the money was never refunded. Returns whether anything was handed off.
   */
  async function handOffOtherTrades(): Promise<boolean> {
    // A payment reported during a review that then refunded nothing was neither kept nor refunded (patch
    // `order-payment-review-hands-off-reported`, asked only in that case).
    const unkept = reviewRefundedNothing && evidence !== undefined && reviewHandsOffReportedStep();
    const kept = unkept ? undefined : evidence?.tradeNo;
    const others = [...notifiedTrades].filter(([tradeNo]) => tradeNo !== kept && !handedOff.has(tradeNo));
    if (others.length === 0) return false;
    if (kept === 'unknown') {
      // The provider did not name the trade that paid: a reported trade may be that very one, so none is refunded.
      for (const [tradeNo] of others) handedOff.add(tradeNo);
      note(
        'OTHER_TRADE_NOT_HANDED_OFF',
        `Trade(s) ${others.map(([t]) => t).join(', ')} reported, but the paying trade is unknown; left for reconciliation`,
      );
      return false;
    }
    if (!handOffOtherTradesStep()) return false;
    for (const [tradeNo, notificationId] of others) {
      handedOff.add(tradeNo);
      const workflowId = latePaymentWorkflowId(input.provider, orderId, tradeNo);
      try {
        await startChild(latePayment, {
          workflowId,
          args: [{ provider: input.provider, outTradeNo: orderId, tradeNo, notificationId }],
          parentClosePolicy: ParentClosePolicy.ABANDON,
          workflowIdReusePolicy: 'REJECT_DUPLICATE',
          staticSummary: `Trade ${tradeNo} reported while order ${orderId} was open (now ${status})`,
        });
        note(
          'OTHER_TRADE_HANDED_OFF',
          `Trade ${tradeNo} is not the one this order kept; ${workflowId} verifies and refunds it`,
        );
      } catch (err) {
        if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
        note(
          'OTHER_TRADE_HANDED_OFF',
          `Trade ${tradeNo} is not the one this order kept; ${workflowId} already handles it`,
        );
      }
    }
    return true;
  }
}

function stockLines(lines: OrderLine[]): { sku: string; quantity: number }[] {
  return lines.map((l) => ({ sku: l.sku, quantity: l.quantity }));
}

/** Payment evidence from a provider query (the same reading as orderLifecycle's). */
function evidenceFromQuery(state: ProviderPaymentState, source: 'query' | 'close'): PaymentEvidence {
  return evidenceFromProvider(state, source, Date.now());
}
