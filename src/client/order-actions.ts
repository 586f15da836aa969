/**
 * What people do to an order after it is placed: an operator's review decision, the buyer's cooling-off
 * refund, and one-click support. Each goes through the order's workflow (an update with a validator) while
 * it runs; support also works on a finished order, straight against MySQL and the provider.
 */
import { createHash, randomUUID } from 'node:crypto';
import {
  type Client,
  WithStartWorkflowOperation,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
} from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { Knex } from 'knex';
import { FailureType } from '../contracts/failures';
import {
  type EscalationResult,
  type FailedRefundReviewInput,
  type OrderStatus,
  type ReviewDecision,
  type ReviewRequest,
  type ReviewOutcome,
  REVIEW_DECISION_REFUSED,
  autoRefundNo,
  coolingOffRefundUpdate,
  escalateUpdate,
  failedRefundApproveRefusal,
  failedRefundReviewWorkflowId,
  latePaymentWorkflowId,
  orderWorkflowId,
  REVIEW_ROUND_ENTRIES,
  reviewDecisionUpdate,
} from '../contracts/order';
import { jsonColumn } from '../db/json';
import { LATE_PAYMENT_REFUND_FAILED, lateReviewTrade } from '../db/late-review';
import { REFUND_FAILED_REASON, unsettledFailedRefund } from '../db/order-transitions';
import { successAfterFailureRecorded } from '../db/refund-outcomes';
import { claimEscalation, createSupportTicket } from '../db/support-tickets';
import { ProviderPaymentState, type ProviderRegistry } from '../providers/types';
import { withTemporalDeadline } from '../temporal/calls';
import { type RoutableNotification, routePaymentNotification } from '../temporal/route-notification';
import type { failedRefundReview } from '../workflows/failed-refund-review';
import { ApiError, apiFailure } from './errors';

/** An escalation this soon after the order's last ticket is answered with that ticket. */
export const ESCALATION_COOLDOWN_SECONDS = 60;
/**
 * An order's escalations in a day (from the first of its window): past them, its latest ticket answers until the window
 * ends. Each is an update of the order's workflow, and Temporal refuses an execution's updates past a total, 2,000 by
 * default, which a review decision still needs: 20 a day leave an order in review 100 days of them. A day, not ever,
 * so that someone looping on a leaked order id cannot keep the buyer from support for good.
 */
export const ESCALATIONS_PER_ORDER_PER_DAY = 20;
/** How often, and how long at most, an escalation that lost the claim looks for the winner's ticket. */
const TICKET_WAIT_POLL_MS = 250;
const TICKET_WAIT_MAX_MS = 5_000;

/** How long an action waits for the workflow to catch up with a status MySQL already shows. */
const SETTLE_RETRIES = 10;
const SETTLE_DELAY_MS = 500;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Why the workflow refused an update, or that it has finished. */
function refusal(err: unknown): string | undefined {
  if (err instanceof WorkflowNotFoundError) return 'the order is no longer in progress';
  if (err instanceof WorkflowUpdateFailedError) return err.cause?.message ?? err.message;
  return undefined;
}

/** Review reasons that say a refund was refused or failed at the provider (or could not be computed). */
const REFUND_REVIEW_REASONS: ReadonlySet<string> = new Set([
  FailureType.PROVIDER_REJECTED,
  FailureType.REFUND_FAILED_AT_PROVIDER,
  FailureType.REFUND_AMOUNT_UNKNOWN,
  REFUND_FAILED_REASON,
]);

/** Review, cooling-off refund and support on existing orders. */
export class OrderActions {
  constructor(
    private readonly deps: {
      db: Knex;
      client: Client;
      providers: ProviderRegistry;
      updateTimeoutMs: number;
      /** Where the failedRefundReview workflow a REFUND_FAILED review decision starts runs. */
      taskQueue: string;
    },
  ) {}

  private async status(
    orderId: string,
  ): Promise<{ status: OrderStatus; statusReason: string | null; provider: string } | null> {
    const row = await this.deps.db('orders').where({ order_id: orderId }).first('status', 'status_reason', 'provider');
    return row ? { status: row.status, statusReason: row.status_reason ?? null, provider: row.provider } : null;
  }

  /** Runs an update under the update deadline: a hung Temporal answers 503 instead of holding the request. */
  private update<R>(fn: () => Promise<R>): Promise<R> {
    return withTemporalDeadline(this.deps.client, this.deps.updateTimeoutMs, fn);
  }

  private handle(orderId: string) {
    return this.deps.client.workflow.getHandle(orderWorkflowId(orderId));
  }

  /**
   * The refund a provider reported failed that sent the order to review (reason REFUND_FAILED), and where the order goes
   * back to, read from the ORDER_NEEDS_REVIEW entry recordRefundOutcome wrote (its `from` and `outRefundNo`) and the
   * refund's row. REFUNDED when the failed refund was the order's own (or a late trade of a closed order); PAID when
   * the order was PAID and kept its own trade, the refund being of another.
   */
  private async failedRefund(
    orderId: string,
    provider: string,
    /** The failed refund to review, when the order is in review for something else (its own entry, if any). */
    wanted?: string,
  ): Promise<{ input: FailedRefundReviewInput; afterAnother: boolean }> {
    const entry =
      (await this.reviewEntries(orderId)).find(
        (d) => d.reason === REFUND_FAILED_REASON && d.outRefundNo && (!wanted || d.outRefundNo === wanted),
      ) ??
      (wanted ? { from: 'NEEDS_REVIEW' as OrderStatus, reason: REFUND_FAILED_REASON, outRefundNo: wanted } : undefined);
    const refund = entry?.outRefundNo
      ? ((await this.deps
          .db('refunds')
          .where({ out_refund_no: entry.outRefundNo, order_id: orderId })
          .first('provider', 'trade_no', 'amount', 'currency', 'status')) as
          | { provider: string; trade_no: string | null; amount: number | string; currency: string; status: string }
          | undefined)
      : undefined;
    if (!entry?.outRefundNo || !refund || refund.status !== 'FAILED' || !refund.trade_no)
      throw new ApiError(
        409,
        'ORDER_NOT_IN_REVIEW',
        `order ${orderId} is in review for a failed refund, but its failed refund is not on record; see docs/runbook.md`,
        { status: 'NEEDS_REVIEW' },
      );
    const order = (await this.deps.db('orders').where({ order_id: orderId }).first('paid_trade_no')) as
      { paid_trade_no: string | null } | undefined;
    const keptOwnTrade = entry.from === 'PAID' && !!order?.paid_trade_no && order.paid_trade_no !== refund.trade_no;
    return {
      input: {
        orderId,
        provider: (refund.provider || provider) as FailedRefundReviewInput['provider'],
        failedOutRefundNo: entry.outRefundNo,
        tradeNo: refund.trade_no,
        amount: Number(refund.amount),
        currency: refund.currency,
        back: keptOwnTrade ? 'PAID' : 'REFUNDED',
      },
      // The review moved on to this refund when another failed refund of the order was settled (order-transitions).
      afterAnother: entry.after !== undefined,
    };
  }

  /**
   * A decision on a failed refund: sent to that refund's failedRefundReview workflow, started by this very decision
   * when none runs (update-with-start; a retry of the decision reaches the same execution).
   */
  private async decideFailedRefund(
    input: FailedRefundReviewInput,
    decision: ReviewDecision,
    updateId: string,
  ): Promise<ReviewOutcome> {
    const start = new WithStartWorkflowOperation<typeof failedRefundReview>('failedRefundReview', {
      workflowId: failedRefundReviewWorkflowId(input.failedOutRefundNo),
      taskQueue: this.deps.taskQueue,
      args: [input],
      workflowIdConflictPolicy: 'USE_EXISTING',
      // One execution per failed refund, ever: a decision that finds it ended (the refund settled) is refused, never a
      // second run that would refund again (it continues as new rather than end while undecided).
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
      staticSummary: `Review of failed refund ${input.failedOutRefundNo} of order ${input.orderId}`.slice(0, 200),
    });
    try {
      return await this.deps.client.workflow.executeUpdateWithStart(reviewDecisionUpdate, {
        args: [decision],
        updateId,
        startWorkflowOperation: start,
      });
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      throw new ApiError(
        409,
        'ORDER_NOT_IN_REVIEW',
        `the review of failed refund ${input.failedOutRefundNo} has ended: it was settled by an earlier decision`,
        { status: 'NEEDS_REVIEW' },
      );
    }
  }

  /**
   * A refund that failed while the order was already in review for something else (its failure wrote an
   * ORDER_NEEDS_REVIEW entry from NEEDS_REVIEW, refund-outcomes) and that nothing has settled yet. Not a refund whose
   * failure failed its own refund step: that order's review (its workflow's) is about that very refund.
   */
  private async failedWhileInReview(orderId: string): Promise<string | undefined> {
    const named = (await this.reviewEntries(orderId))
      .filter((d) => d.from === 'NEEDS_REVIEW' && d.reason === REFUND_FAILED_REASON && d.outRefundNo)
      .map((d) => d.outRefundNo!);
    return unsettledFailedRefund(this.deps.db, orderId, { among: named });
  }

  /** The data of the order's ORDER_NEEDS_REVIEW timeline entries, latest first: why it went to review, each time. */
  private async reviewEntries(
    orderId: string,
  ): Promise<{ from?: OrderStatus; reason?: string; outRefundNo?: string; after?: string }[]> {
    const rows = (await this.deps
      .db('order_events')
      .where({ order_id: orderId, type: 'ORDER_NEEDS_REVIEW' })
      .orderBy('id', 'desc')
      .select('data')) as { data: unknown }[];
    return rows
      .map((e) => jsonColumn<{ from?: OrderStatus; reason?: string; outRefundNo?: string; after?: string }>(e.data))
      .filter((d) => d !== undefined);
  }

  /**
   * The order's review round: the count of its REVIEW_ROUND_ENTRIES (ORDER_NEEDS_REVIEW, and REVIEW_DECISION_FAILED,
   * written before a failed decision is answered), as GET /orders/:id shows it.
   */
  private async reviewRound(orderId: string): Promise<number> {
    const [row] = (await this.deps
      .db('order_events')
      .where({ order_id: orderId })
      .whereIn('type', REVIEW_ROUND_ENTRIES)
      .count({ n: '*' })) as { n: number | string }[];
    return Number(row?.n ?? 0);
  }

  /**
   * The update id of a review decision: the same for the same decision in the same round of the order's review, so a
   * retry (after a 503 from a slow provider) reaches the update already in flight, or its answer, instead of adding an
   * update beside it (ten in flight and Temporal refuses every further update of the order: the buyer's escalation,
   * cancel and refund too). The same decision sent after it failed, or in a later review, is a new decision: a retry
   * sent that late is told apart only when it names its round (`reviewRound`).
   */
  private reviewUpdateId(round: number, d: ReviewDecision): string {
    const digest = createHash('sha256')
      .update(JSON.stringify([d.decision, d.operator, d.reason, d.refundAmount ?? null]))
      .digest('hex')
      .slice(0, 24);
    return `review-${round}-${digest}`;
  }

  /** An operator's decision on an order in NEEDS_REVIEW; refused (409) unless the order waits for one. */
  async review(orderId: string, request: ReviewRequest): Promise<{ orderId: string; status: OrderStatus }> {
    const { failedOutRefundNo: named, tradeNo: namedTrade, reviewRound: namedRound, ...decision } = request;
    const current = await this.status(orderId);
    if (!current) throw apiFailure(FailureType.ORDER_NOT_FOUND, `no order ${orderId}`);
    if (current.status !== 'NEEDS_REVIEW')
      throw new ApiError(409, 'ORDER_NOT_IN_REVIEW', `order is ${current.status}, not waiting for review`, {
        status: current.status,
      });
    let send: () => Promise<ReviewOutcome>;
    const round = await this.reviewRound(orderId);
    // A decision made in an earlier round (a retry sent after it was carried out and the order went to review again, a
    // page left open across a failed decision) is refused, never carried out on the review open now.
    if (namedRound !== undefined && namedRound !== round)
      throw new ApiError(
        409,
        REVIEW_DECISION_REFUSED,
        `order ${orderId}'s review has moved on: the decision was made in review round ${namedRound}, the order is in round ${round}; read the order again and decide for the review open now`,
        { reviewRound: round },
      );
    const updateId = this.reviewUpdateId(round, decision);
    // A refund of the order that failed while it was in review for something else is settled first: decisions are
    // routed by the order's reason, which still names that other review, so the failed refund would otherwise never
    // get one (and an approval there would leave its buyer unpaid).
    const failedFirst =
      current.statusReason === REFUND_FAILED_REASON ? undefined : await this.failedWhileInReview(orderId);
    if (failedFirst !== undefined && named !== failedFirst)
      throw new ApiError(
        409,
        REVIEW_DECISION_REFUSED,
        `order ${orderId} is in review for ${current.statusReason ?? 'a reason not recorded'}, and its refund ${failedFirst} failed at the provider meanwhile: decide that refund first, naming it with failedOutRefundNo (refund, or refundAmount 0 if the money was returned another way); then this review`,
        { failedOutRefundNo: failedFirst },
      );
    // The workflow that waits for the decision: the order's own, or, for an order a late payment left in review (status
    // reason LATE_PAYMENT_REFUND_FAILED, set only by a `latePayment` workflow after the order's own has ended), that
    // trade's `latePayment` workflow, named by the entry that opened the review.
    const lateTrade =
      current.statusReason === LATE_PAYMENT_REFUND_FAILED && failedFirst === undefined
        ? await lateReviewTrade(this.deps.db, orderId)
        : null;
    if (namedTrade !== undefined && !lateTrade)
      throw new ApiError(
        409,
        REVIEW_DECISION_REFUSED,
        `order ${orderId} is not in a late payment's review (reason ${current.statusReason ?? 'none'}${failedFirst !== undefined ? `, and its refund ${failedFirst} failed meanwhile` : ''}): tradeNo does not apply`,
        { decision: decision.decision },
      );
    // The decision names the trade it was made for: one whose review has closed (a retry after a timed-out answer, a
    // page showing an older review) is refused rather than carried out on the trade whose review is open now.
    if (namedTrade !== undefined && namedTrade !== lateTrade)
      throw new ApiError(
        409,
        REVIEW_DECISION_REFUSED,
        `order ${orderId} is in review for late payment ${lateTrade}, not ${namedTrade} (its review is over, or it is not this order's): decide again for ${lateTrade}`,
        { tradeNo: lateTrade },
      );
    if (current.statusReason === REFUND_FAILED_REASON || failedFirst !== undefined) {
      const { input: failed, afterAnother } = await this.failedRefund(orderId, current.provider, failedFirst);
      if (named !== undefined && named !== failed.failedOutRefundNo)
        throw new ApiError(
          409,
          REVIEW_DECISION_REFUSED,
          `order ${orderId} is in review for failed refund ${failed.failedOutRefundNo}, not ${named} (settled, or not one of this order's)`,
          { failedOutRefundNo: failed.failedOutRefundNo },
        );
      if (afterAnother && named === undefined)
        throw new ApiError(
          409,
          REVIEW_DECISION_REFUSED,
          `several refunds of order ${orderId} failed at the provider and another was settled before: it is now in review for ${failed.failedOutRefundNo}; name it with failedOutRefundNo (a decision that names none may be a retry of the one that settled the other)`,
          { failedOutRefundNo: failed.failedOutRefundNo },
        );
      if (decision.decision === 'approve')
        throw new ApiError(
          409,
          REVIEW_DECISION_REFUSED,
          failedRefundApproveRefusal(failed.failedOutRefundNo, failed.provider),
          { decision: decision.decision },
        );
      // The provider reported the failed refund succeeded after all (a resubmission): a new refund would pay twice.
      if (
        (decision.refundAmount ?? failed.amount) > 0 &&
        (await successAfterFailureRecorded(this.deps.db, orderId, failed.failedOutRefundNo))
      )
        throw new ApiError(
          409,
          REVIEW_DECISION_REFUSED,
          `refund ${failed.failedOutRefundNo} failed, then ${failed.provider} reported it succeeded: the buyer has this money; close the review with refundAmount 0 (no new refund)`,
          { failedOutRefundNo: failed.failedOutRefundNo },
        );
      send = () => this.decideFailedRefund(failed, decision, updateId);
    } else {
      if (named !== undefined)
        throw new ApiError(
          409,
          REVIEW_DECISION_REFUSED,
          `order ${orderId} is not in review for a failed refund (reason ${current.statusReason ?? 'none'}): failedOutRefundNo does not apply`,
          { decision: decision.decision },
        );
      const handle = lateTrade
        ? this.deps.client.workflow.getHandle(latePaymentWorkflowId(current.provider, orderId, lateTrade))
        : this.handle(orderId);
      send = () => handle.executeUpdate(reviewDecisionUpdate, { args: [decision], updateId });
    }
    // MySQL says NEEDS_REVIEW a moment before the workflow reaches its wait: retry a refusal briefly then.
    for (let attempt = 0; ; attempt++) {
      try {
        const { status, failure } = await this.update(send);
        if (failure) {
          // Nothing was decided: the order is still in review, waiting for another decision.
          throw new ApiError(
            409,
            'REVIEW_DECISION_FAILED',
            `the ${decision.decision} decision could not be carried out: ${failure.message}`,
            { status, failure },
          );
        }
        return { orderId, status };
      } catch (err) {
        if (
          err instanceof WorkflowUpdateFailedError &&
          err.cause instanceof ApplicationFailure &&
          err.cause.type === REVIEW_DECISION_REFUSED
        )
          throw new ApiError(409, REVIEW_DECISION_REFUSED, err.cause.message, { decision: decision.decision });
        const why = refusal(err);
        if (!why) throw err;
        const now = await this.status(orderId);
        if (now?.status === 'NEEDS_REVIEW' && attempt < SETTLE_RETRIES && !(err instanceof WorkflowNotFoundError)) {
          await sleep(SETTLE_DELAY_MS);
          continue;
        }
        throw new ApiError(409, 'ORDER_NOT_IN_REVIEW', why, { status: now?.status });
      }
    }
  }

  /** The buyer's refund inside the cooling-off window: full refund, stock returned. A repeat answers the same. */
  async refund(
    orderId: string,
    reason: string | undefined,
  ): Promise<{ orderId: string; status: OrderStatus; refundNo?: string }> {
    const current = await this.status(orderId);
    if (!current) throw apiFailure(FailureType.ORDER_NOT_FOUND, `no order ${orderId}`);
    if (current.status === 'REFUNDED' && current.statusReason === 'COOLING_OFF_REFUND') return this.refunded(orderId);
    if (current.status !== 'PAID')
      throw new ApiError(409, 'ORDER_NOT_REFUNDABLE', `order is ${current.status}; only a paid order can be refunded`, {
        status: current.status,
      });
    for (let attempt = 0; ; attempt++) {
      try {
        const result = await this.update(() =>
          // One update id per order's refund: a retry after a timed-out answer joins the refund in flight instead of
          // adding an update that waits beside it (ten such filled the workflow's limit, and every later update of the
          // order, escalations too, was refused).
          this.handle(orderId).executeUpdate(coolingOffRefundUpdate, {
            args: [{ reason }],
            updateId: `cooling-off-refund-${orderId}`,
          }),
        );
        // NEEDS_REVIEW: the window was open but the provider refused the refund; the order is with support now (the
        // buyer must not be told the window had closed). Anything else: the window ended first.
        // A completed update's answer is kept under its id for the run's life: a later request is answered it again.
        // The order PAID now was kept by the review that refused refund opened (it closes the buyer's request).
        if (result.status === 'NEEDS_REVIEW' && (await this.status(orderId))?.status === 'PAID')
          throw new ApiError(
            409,
            'COOLING_OFF_EXPIRED',
            'the provider refused the refund asked for earlier, and support has since kept the order: ask support for a refund',
            { status: 'PAID' },
          );
        if (result.status === 'NEEDS_REVIEW')
          throw new ApiError(
            409,
            'REFUND_IN_REVIEW',
            'the provider refused the refund; the order has been passed to support for review',
            { status: result.status },
          );
        if (result.status !== 'REFUNDED')
          throw new ApiError(409, 'COOLING_OFF_EXPIRED', `the refund could not be made (order is ${result.status})`, {
            status: result.status,
          });
        return { orderId, status: result.status, refundNo: result.refundNo };
      } catch (err) {
        if (err instanceof ApiError) throw err;
        const why = refusal(err);
        if (!why) throw err;
        const now = await this.status(orderId);
        if (now?.status === 'REFUNDED' && now.statusReason === 'COOLING_OFF_REFUND') return this.refunded(orderId);
        // PAID when this request came, in review now: the refund (this request's, or a repeat's it joined) was refused
        // by the provider, as the workflow's own answer says above; or the order went to review for another reason
        // meanwhile, and nothing was refunded automatically.
        if (now?.status === 'NEEDS_REVIEW')
          throw REFUND_REVIEW_REASONS.has(now.statusReason ?? '')
            ? new ApiError(
                409,
                'REFUND_IN_REVIEW',
                'the provider refused the refund; the order has been passed to support for review',
                { status: now.status },
              )
            : new ApiError(
                409,
                'ORDER_IN_REVIEW',
                `the order is with support for review (${now.statusReason ?? 'no reason recorded'}); it was not refunded automatically`,
                { status: now.status, statusReason: now.statusReason },
              );
        // PAID in MySQL but not yet handed to fulfilment: the workflow is entering its window; retry briefly.
        const row = await this.deps.db('orders').where({ order_id: orderId }).first('fulfilment_ready_at');
        if (
          now?.status === 'PAID' &&
          !row?.fulfilment_ready_at &&
          attempt < SETTLE_RETRIES &&
          !(err instanceof WorkflowNotFoundError)
        ) {
          await sleep(SETTLE_DELAY_MS);
          continue;
        }
        throw new ApiError(
          409,
          'COOLING_OFF_EXPIRED',
          `the cooling-off period is over; ask support for a refund (${why})`,
          { status: now?.status },
        );
      }
    }
  }

  /**
   * The answer to a repeated cooling-off refund: the refund of the trade the order kept (its number is stable,
   * autoRefundNo), not any other refund of the order (a second trade's, refunded as late money).
   */
  private async refunded(orderId: string) {
    const { db } = this.deps;
    const order = (await db('orders').where({ order_id: orderId }).first('paid_trade_no')) as
      { paid_trade_no: string | null } | undefined;
    const own = order?.paid_trade_no ? autoRefundNo(orderId, order.paid_trade_no) : undefined;
    const refund = (await db('refunds')
      .where({ order_id: orderId, status: 'SUCCEEDED' })
      .modify((q) => {
        if (own) q.andWhere({ out_refund_no: own });
      })
      .orderBy('created_at')
      .first('out_refund_no')) as { out_refund_no: string } | undefined;
    return { orderId, status: 'REFUNDED' as const, refundNo: refund?.out_refund_no };
  }

  /** One-click support: asks the provider now, records a ticket with a snapshot, marks the workflow. */
  async escalate(orderId: string, note: string | undefined): Promise<EscalationResult> {
    const current = await this.status(orderId);
    if (!current) throw apiFailure(FailureType.ORDER_NOT_FOUND, `no order ${orderId}`);
    // Asked again within the cool-down: the ticket just written answers (no workflow update, provider query or ticket).
    // Each escalation is an update of the order's workflow (Temporal caps them per execution), a query of the provider
    // (its rate limit is the merchant's) and a ticket for support: a buyer pressing the button, or a leaked link in a
    // loop, must not spend them.
    const recent = await this.recentTicket(orderId);
    if (recent) return this.answerWithTicket(recent, note, current.status);
    // The cool-down is claimed under a row lock before anything is spent: escalations sent together (a double click,
    // a loop) run one update; the others answer with its ticket once it is written.
    const claim = await claimEscalation(this.deps.db, orderId, {
      cooldownSeconds: ESCALATION_COOLDOWN_SECONDS,
      maxPerDay: ESCALATIONS_PER_ORDER_PER_DAY,
    });
    if (!claim.claimed) {
      const ticket = await this.ticketOfOtherEscalation(orderId, claim.reason);
      if (ticket) return this.answerWithTicket(ticket, note, current.status);
      throw new ApiError(
        429,
        'ESCALATION_IN_PROGRESS',
        'this order is being escalated already; its ticket is not written yet: ask again in a moment',
      );
    }
    // The claim is kept whatever happens next: an update that timed out here (a slow provider query) may still be
    // accepted and write its ticket, and giving the claim back would let a retry start a second one meanwhile.
    return this.escalateClaimed(orderId, note, current);
  }

  /** A ticket already written answers an escalation: the buyer's words still reach support, added to it. */
  private async answerWithTicket(
    ticket: EscalationResult,
    note: string | undefined,
    status: EscalationResult['status'],
  ): Promise<EscalationResult> {
    if (note)
      await this.deps
        .db('support_tickets')
        .where({ ticket_id: ticket.ticketId })
        .update({ note: this.deps.db.raw("LEFT(CONCAT_WS(' | ', note, ?), 500)", [note]) });
    return { ...ticket, status };
  }

  /**
   * The ticket of the escalation that holds the claim: inside the cool-down, the one being written (waited for, at most
   * as long as an update may take); past the order's limit, its latest ticket, however old.
   */
  private async ticketOfOtherEscalation(
    orderId: string,
    reason: 'COOLING_DOWN' | 'LIMIT_REACHED',
  ): Promise<EscalationResult | undefined> {
    if (reason === 'LIMIT_REACHED') return this.recentTicket(orderId, { anyAge: true });
    // Long enough for an escalation's provider query in the usual case; past it, 429 and the buyer asks again.
    const deadline = Date.now() + Math.min(this.deps.updateTimeoutMs, TICKET_WAIT_MAX_MS);
    for (;;) {
      const ticket = await this.recentTicket(orderId);
      if (ticket || Date.now() >= deadline) return ticket;
      await sleep(TICKET_WAIT_POLL_MS);
    }
  }

  /** The escalation that holds the claim: the workflow's update, or, once the workflow has finished, the API's own. */
  private async escalateClaimed(
    orderId: string,
    note: string | undefined,
    current: { status: EscalationResult['status']; provider: string },
  ): Promise<EscalationResult> {
    try {
      return await this.update(() => this.handle(orderId).executeUpdate(escalateUpdate, { args: [{ note }] }));
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    }
    // The workflow has finished: support still gets the facts, straight from MySQL and the provider.
    const provider = this.deps.providers[current.provider];
    let providerStatus = 'UNKNOWN';
    let providerState: Record<string, unknown> = {};
    if (provider) {
      try {
        const state = await provider.queryPayment(orderId);
        providerStatus = state.status;
        providerState = { ...state };
      } catch (e) {
        providerState = { error: (e as Error).message };
      }
    }
    const timeline = await this.deps
      .db('order_events')
      .where({ order_id: orderId })
      .orderBy('id')
      .select('at', 'type', 'message');
    let resolution: EscalationResult['resolution'] = current.status === 'NEEDS_REVIEW' ? 'IN_REVIEW' : 'CLOSED';
    // The buyer says they paid a closed order, and the provider agrees (the notification lost, reconciliation a day
    // away): the money is handed to its late-payment workflow now, as the notification would have been (one per trade,
    // so a notification or a reconciliation finding it later joins the same one), and refunded.
    const late = await this.lateTradeOfClosedOrder(orderId, current, providerState);
    if (late) {
      try {
        const routed = await routePaymentNotification(
          {
            db: this.deps.db,
            client: this.deps.client,
            taskQueue: this.deps.taskQueue,
            callTimeoutMs: this.deps.updateTimeoutMs,
          },
          late,
          { lateSummary: `Late payment ${late.tradeNo} for order ${orderId} (found by the buyer's escalation)` },
        );
        if (routed.destination !== 'REFUSED') resolution = 'LATE_PAYMENT_FOUND';
        providerState = { ...providerState, routed: routed.detail };
      } catch (e) {
        // Temporal could not be reached: the ticket is still written (support sees the payment and why it was not
        // handed on); the notification, when it comes, or reconciliation hands the trade on.
        providerState = { ...providerState, routeError: (e as Error).message };
      }
    }
    const ticketId = `tkt-${randomUUID()}`;
    await createSupportTicket(this.deps.db, {
      ticketId,
      orderId,
      orderStatus: current.status,
      stage: 'DONE',
      providerStatus,
      resolution,
      snapshot: { status: current.status, timeline, provider: providerState },
      note,
    });
    return { ticketId, orderId, status: current.status, stage: 'DONE', providerStatus, resolution };
  }

  /**
   * The trade the provider reports paid for an order whose workflow has finished, as a notification to route, when the
   * order did not keep it: closed unpaid (EXPIRED, CANCELLED, FAILED) or paid by another trade. Undefined when the
   * provider's answer is not a payment with its trade and amount, or the order kept this very trade.
   */
  private async lateTradeOfClosedOrder(
    orderId: string,
    current: { status: EscalationResult['status']; provider: string },
    state: Record<string, unknown>,
  ): Promise<RoutableNotification | undefined> {
    const paid = ProviderPaymentState.safeParse(state);
    if (!paid.success || paid.data.status !== 'PAID') return undefined;
    const { tradeNo, paidAmount, currency, merchantId, paidAt } = paid.data;
    if (!tradeNo || paidAmount === undefined || !currency) return undefined;
    const row = (await this.deps.db('orders').where({ order_id: orderId }).first('paid_trade_no')) as
      { paid_trade_no: string | null } | undefined;
    const kept = row?.paid_trade_no ?? null;
    // Closed unpaid: any trade paid is late money. Paid or refunded: only a trade other than the known one it kept (a
    // trade recorded as unknown, or none, may be this very one: routed, it would put a good order in review). Waiting,
    // or in review (a person decides): nothing.
    const closedUnpaid = current.status === 'EXPIRED' || current.status === 'CANCELLED' || current.status === 'FAILED';
    const keptAnother =
      (current.status === 'PAID' || current.status === 'REFUNDED') &&
      kept !== null &&
      kept !== 'unknown' &&
      kept !== tradeNo;
    if (!closedUnpaid && !keptAnother) return undefined;
    const provider = this.deps.providers[current.provider];
    return {
      provider: current.provider,
      notificationId: `escalation:${current.provider}:${tradeNo}`,
      outTradeNo: orderId,
      tradeNo,
      amount: paidAmount,
      currency,
      merchantId: merchantId ?? provider?.merchantId ?? '',
      paidAt: paidAt ?? new Date().toISOString(),
    };
  }

  /**
   * The order's ticket written in the last ESCALATION_COOLDOWN_SECONDS (the database's clock), if any; with `anyAge`,
   * its latest.
   */
  private async recentTicket(
    orderId: string,
    options: { anyAge?: boolean } = {},
  ): Promise<EscalationResult | undefined> {
    const row = (await this.deps
      .db('support_tickets')
      .where({ order_id: orderId })
      .modify((q) => {
        if (!options.anyAge)
          q.where(
            'created_at',
            '>',
            this.deps.db.raw('CURRENT_TIMESTAMP(3) - INTERVAL ? SECOND', [ESCALATION_COOLDOWN_SECONDS]),
          );
      })
      .orderBy('created_at', 'desc')
      .first('ticket_id', 'order_status', 'stage', 'provider_status', 'resolution')) as
      | {
          ticket_id: string;
          order_status: string;
          stage: string | null;
          provider_status: string | null;
          resolution: string;
        }
      | undefined;
    if (!row) return undefined;
    return {
      ticketId: row.ticket_id,
      orderId,
      status: row.order_status as EscalationResult['status'],
      stage: (row.stage ?? 'DONE') as EscalationResult['stage'],
      providerStatus: row.provider_status ?? 'UNKNOWN',
      resolution: row.resolution as EscalationResult['resolution'],
    };
  }
}
