/**
 * Guarded order status changes: forward-only, conditional on the status read under the row lock, the row count checked,
 * the timeline entry written in the same transaction. Used by the worker's steps (transitionOrder, settlePaid in
 * src/activities) and shared from here so that code outside the worker makes the very same change.
 */
import type { Knex } from 'knex';
import { FailureType, businessFailure } from '../contracts/failures';
import type { OrderStatus, PaymentEvidence } from '../contracts/order';
import { REFUND_FAILED_REASON } from '../contracts/order-workflow';
import { OrderEventBatch } from './order-events';

export { REFUND_FAILED_REASON };

/** Input of transitionOrder: a guarded, forward-only status change. */
export interface TransitionInput {
  orderId: string;
  from: OrderStatus[];
  to: OrderStatus;
  reason?: string;
  event: { type: string; message: string; data?: Record<string, unknown> };
  /** Payment that caused the change (PAID, NEEDS_REVIEW): recorded on the payment row. */
  payment?: PaymentEvidence;
  /**
   * The failed refund (our number) an operator's review decision settles (src/workflows/failed-refund-review.ts): that
   * refund being the order's latest no longer refuses the change, as when the operator states the money was returned
   * by other means. Any other failed refund still does.
   */
  settlesFailedRefund?: string;
  /**
   * Failed refunds (our numbers) this change closes as well, when they are FAILED: a late trade's review decided
   * (src/workflows/late-payment.ts), which settles the trade's own automatic refund the provider reported failed. Each
   * gets its REFUND_FAILED_SETTLED_BY_REVIEW entry in this transaction, before the check that refuses a refund claim
   * over an unsettled one (so a decision of refundAmount 0, the money returned by other means, can close the review).
   * Unlike `settlesFailedRefund`, the order's own review is the one that ends.
   */
  closesFailedRefunds?: string[];
  /** With closesFailedRefunds: only refunds marked FAILED at or before this time (ISO 8601) are closed. */
  failedBefore?: string;
}

/** Result of transitionOrder: `changed` false means the order was already in `to` or in a status not in `from`. */
export interface TransitionResult {
  changed: boolean;
  status: OrderStatus;
  /** Unchanged (transitionOrder): the order's status reason, e.g. REFUND_FAILED when a failed refund's notice has it. */
  reason?: string;
}

/** What transitionIn did: the result, the status it left, and whether the payment row took the evidence. */
export interface TransitionDone extends TransitionResult {
  from?: OrderStatus;
  paymentRecorded: boolean;
}

/**
 * The status change inside the caller's transaction, the order row already locked (`SELECT ... FOR UPDATE`) and its
 * status read as `current`; the timeline entry is added to `events`. The update is still conditional on that status
 * and its row count checked.
 */
export async function transitionIn(
  trx: Knex.Transaction,
  input: TransitionInput,
  current: OrderStatus,
  events: OrderEventBatch,
  /** More columns the same update sets when it changes the status (settlePaid's hand-off mark). */
  alsoSet: Record<string, unknown> = {},
): Promise<TransitionDone> {
  if (current === input.to || !input.from.includes(current))
    return { changed: false, status: current, paymentRecorded: false };
  if (input.settlesFailedRefund && current === 'NEEDS_REVIEW') {
    // The refund failed while the order was in review for something else (another workflow's review, which routes by
    // the order's reason and waits for its own decision): the failed refund is settled (this entry says so), and the
    // order stays in that review, its reason untouched, for the next decision to reach it.
    const order = (await trx('orders').where({ order_id: input.orderId }).first('status_reason')) as
      { status_reason: string | null } | undefined;
    if (order && order.status_reason !== REFUND_FAILED_REASON)
      return staysInReview(events, input, current, {
        message: `Failed refund ${input.settlesFailedRefund} is settled; the order stays in review for ${order.status_reason ?? 'its other review'}`,
        data: { from: current, reason: order.status_reason, after: input.settlesFailedRefund },
      });
  }
  if (input.closesFailedRefunds?.length) await closeFailedRefunds(trx, input, input.closesFailedRefunds);
  if (claimsRefund(input)) {
    const next = await refuseOnFailedRefund(trx, input);
    // A review settled one failed refund while another of the order's is still unsettled: the order stays in review,
    // now for that one (the API routes the next decision to it by this entry), instead of REFUNDED over a buyer unpaid.
    if (next)
      return staysInReview(events, input, current, {
        message: `Refund ${next} of this order also failed at the provider and is not settled: the order stays in review for it`,
        data: { from: input.to, reason: REFUND_FAILED_REASON, outRefundNo: next, after: input.settlesFailedRefund },
      });
  }
  const count = await trx('orders')
    .where({ order_id: input.orderId, status: current })
    .update({
      status: input.to,
      status_reason: input.reason ?? null,
      ...(input.payment ? { paid_trade_no: input.payment.tradeNo } : {}),
      ...alsoSet,
      updated_at: trx.fn.now(3),
    });
  if (count !== 1) throw new Error(`order ${input.orderId} changed concurrently; will retry`);
  // A failed refund of the order's own payment settled REFUNDED (refunded again, or the money returned another way):
  // the payment row, set back to PAID when the refund failed (refund-outcomes), says REFUNDED again.
  if (input.settlesFailedRefund && input.to === 'REFUNDED')
    await trx('payments')
      .where({ out_trade_no: input.orderId, status: 'PAID' })
      .update({ status: 'REFUNDED', updated_at: trx.fn.now(3) });
  let paymentRecorded = false;
  if (input.payment) {
    // A provider that did not report the amount or currency (evidence from a query: -1, 'unknown') leaves them unknown
    // here too: written as they are, they broke the columns' types on every retry, and the order, paid, never moved.
    const reported = reportedPayment(input.payment);
    const paid = await trx('payments')
      .where({ out_trade_no: input.orderId })
      .whereIn('status', ['PENDING', 'CLOSED', 'PAID'])
      .update({
        status: 'PAID',
        trade_no: input.payment.tradeNo,
        paid_amount: reported.amount,
        paid_currency: reported.currency,
        paid_at: new Date(input.payment.paidAt),
        updated_at: trx.fn.now(3),
      });
    paymentRecorded = paid === 1;
  }
  events.add(input.event.type, input.event.message, {
    from: current,
    to: input.to,
    reason: input.reason,
    ...input.event.data,
  });
  return { changed: true, status: input.to, from: current, paymentRecorded };
}

/** What a payment's evidence says was paid, each field null where the provider did not report it (-1, 'unknown'). */
export function reportedPayment(payment: PaymentEvidence): { amount: number | null; currency: string | null } {
  return {
    amount: Number.isSafeInteger(payment.amount) && payment.amount >= 0 ? payment.amount : null,
    currency: /^[A-Z]{3}$/.test(payment.currency) ? payment.currency : null,
  };
}

/**
 * A review's decision carried out (its entry) while the order stays in review (the ORDER_NEEDS_REVIEW entry says for
 * what): nothing changes on the order row.
 */
function staysInReview(
  events: OrderEventBatch,
  input: TransitionInput,
  current: OrderStatus,
  review: { message: string; data: Record<string, unknown> },
): TransitionDone {
  events.add(input.event.type, input.event.message, {
    from: current,
    to: current,
    reason: input.reason,
    ...input.event.data,
  });
  events.add('ORDER_NEEDS_REVIEW', review.message, review.data);
  return { changed: false, status: current, paymentRecorded: false };
}

/** The REFUND_FAILED_SETTLED_BY_REVIEW entries of those of `refunds` that are FAILED, written now (see closesFailedRefunds). */
async function closeFailedRefunds(trx: Knex.Transaction, input: TransitionInput, refunds: string[]): Promise<void> {
  const failed = (await trx('refunds as f')
    .where({ 'f.order_id': input.orderId, 'f.status': 'FAILED' })
    .whereIn('f.out_refund_no', refunds)
    // Not one already settled (by the failed refund's own review): its entry is written once.
    .whereNotExists(settledByReview(trx))
    .modify((q) => {
      if (input.failedBefore) q.where('f.updated_at', '<=', new Date(input.failedBefore));
    })
    .forShare()
    .select('f.out_refund_no')) as { out_refund_no: string }[];
  if (!failed.length) return;
  const events = new OrderEventBatch(input.orderId);
  for (const { out_refund_no: no } of failed)
    events.add(
      'REFUND_FAILED_SETTLED_BY_REVIEW',
      `Failed refund ${no} is settled by this review's decision: ${input.event.message}`,
      { ...input.event.data, failedOutRefundNo: no },
    );
  await events.write(trx);
}

/** The REFUND_FAILED_SETTLED_BY_REVIEW entry of the failed refund `f` (of the outer query), for a NOT EXISTS. */
function settledByReview(db: Knex | Knex.Transaction) {
  return db('order_events as e')
    .whereRaw('e.order_id = f.order_id')
    .where('e.type', 'REFUND_FAILED_SETTLED_BY_REVIEW')
    .whereRaw("JSON_UNQUOTE(JSON_EXTRACT(e.data, '$.failedOutRefundNo')) = f.out_refund_no")
    .select(db.raw('1'));
}

/** A change that says money went back to the buyer: REFUNDED, or a late trade refunded with the order kept PAID. */
function claimsRefund(input: TransitionInput): boolean {
  return input.to === 'REFUNDED' || input.reason === 'LATE_TRADE_REFUNDED';
}

/**
 * Refuses such a change while a refund of the order that its provider reported failed after accepting it
 * (src/db/refund-outcomes.ts) is unsettled: not settled by a failed refund's review (its
 * REFUND_FAILED_SETTLED_BY_REVIEW entry, or this change's `settlesFailedRefund`), and not followed by a later review
 * refund of the same trade that was made (`rv...`, SUCCEEDED or PENDING: an operator named what is left of the trade to
 * return; an automatic refund of the same trade, say a second partial one, settles nothing). A notice that arrives between a workflow's refund step and its
 * status change would otherwise be overwritten by a REFUNDED the buyer never got, and so would a second failed refund
 * (another trade's) behind the one a review settles. Read with a shared lock, so a failure being recorded now is
 * waited for. Without `settlesFailedRefund`, a business failure: the decision fails and the order waits for another.
 * With it, the other unsettled refund's number: the caller keeps the order in review for that one.
 */
async function refuseOnFailedRefund(trx: Knex.Transaction, input: TransitionInput): Promise<string | undefined> {
  const unsettled = await unsettledFailedRefund(trx, input.orderId, {
    except: input.settlesFailedRefund,
    lock: true,
  });
  if (!unsettled) return undefined;
  if (input.settlesFailedRefund) return unsettled;
  throw businessFailure(
    FailureType.REFUND_FAILED_AT_PROVIDER,
    `refund ${unsettled} of order ${input.orderId} was reported failed by the provider; the order is not marked ${input.to}`,
    { outRefundNo: unsettled },
  );
}

/**
 * The oldest refund of the order its provider reported failed after accepting it that nothing has settled (see
 * refuseOnFailedRefund), but `except`; with `lock`, read with a shared lock (inside a transaction).
 */
export async function unsettledFailedRefund(
  db: Knex | Knex.Transaction,
  orderId: string,
  options: { except?: string; lock?: boolean; among?: string[] } = {},
): Promise<string | undefined> {
  if (options.among?.length === 0) return undefined;
  const query = db('refunds as f')
    .where({ 'f.order_id': orderId, 'f.status': 'FAILED' })
    .whereNot('f.out_refund_no', options.except ?? '')
    .modify((q) => {
      if (options.among) q.whereIn('f.out_refund_no', options.among);
    })
    .whereNotExists(
      db('refunds as s')
        .whereRaw('s.order_id = f.order_id AND s.trade_no <=> f.trade_no')
        .where('s.out_refund_no', 'like', 'rv%')
        .whereIn('s.status', ['SUCCEEDED', 'PENDING'])
        .whereRaw(
          '(s.created_at > f.created_at OR (s.created_at = f.created_at AND s.out_refund_no > f.out_refund_no))',
        )
        .select(db.raw('1')),
    )
    .whereNotExists(settledByReview(db))
    .orderBy([
      { column: 'f.created_at', order: 'asc' },
      { column: 'f.out_refund_no', order: 'asc' },
    ]);
  const row = (await (options.lock ? query.forShare() : query).first('f.out_refund_no')) as
    { out_refund_no: string } | undefined;
  return row?.out_refund_no;
}
