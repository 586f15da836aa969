/** Provider-facing steps: create, query, close, refund; each records what happened in MySQL. */
import type { Knex } from 'knex';
import type { PaymentProvider, ProviderPaymentState, ProviderRegistry } from '../providers/types';
import { ProviderBusinessError } from '../providers/types';
import { appendOrderEvent } from '../db/order-events';
import { successAfterFailureRecorded } from '../db/refund-outcomes';
import { FailureType, businessFailure } from '../contracts/failures';
import { activityLog } from './log';

function providerFor(providers: ProviderRegistry, name: string): PaymentProvider {
  const provider = Object.hasOwn(providers, name) ? providers[name] : undefined;
  if (!provider) throw businessFailure(FailureType.UNKNOWN_PROVIDER, `provider ${name} is not configured`);
  return provider;
}

/** Provider business errors become non-retryable failures; transport faults stay retryable. */
async function guard<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ProviderBusinessError)
      throw businessFailure(FailureType.PROVIDER_REJECTED, err.message, { code: err.code });
    throw err;
  }
}

/** Input of createProviderPayment. */
export interface CreateProviderPaymentInput {
  orderId: string;
  provider: string;
  amount: number;
  currency: string;
  subject: string;
  notifyUrl: string;
  /** Our deadline: shown to the buyer. */
  deadline: string;
  /** Provider-side expiry: a little after our deadline so that our close call decides. */
  providerExpiresAt: string;
}

/** A payment created at the provider: its trade number, where the buyer pays, and the merchant it pays. */
export interface CreatedPayment {
  tradeNo: string;
  paymentUrl: string;
  merchantId: string;
  /**
   * The order's deadline and the provider-side expiry the payment was created with (ISO): the input's, or an earlier
   * attempt's when one fixed them first. Absent from results recorded before they were returned.
   */
  deadline?: string;
  providerExpiresAt?: string;
}

/**
 * The order's deadline, fixed by the first attempt of the payment step: an order waiting for payment with no deadline
 * yet takes the input's; one that has one keeps it. A retry of the step whose workflow task was lost (a worker killed
 * after the provider call) computes a later deadline from its own clock: the provider would keep the first attempt's
 * expiry (it answers the same payment) while the buyer was shown the later deadline, and Stripe refuses a request
 * changed under the same Idempotency-Key. One statement on the first attempt (the conditional UPDATE); a read only
 * when it changed nothing. The provider-side expiry keeps the input's margin after the deadline. A stored deadline
 * already past is replaced by the input's (the earlier attempt may never have reached the provider).
 */
async function fixDeadline(
  db: Knex,
  input: Pick<CreateProviderPaymentInput, 'orderId' | 'deadline' | 'providerExpiresAt'>,
): Promise<{ deadline: string; providerExpiresAt: string }> {
  const claimed = await db('orders')
    .where({ order_id: input.orderId, status: 'AWAITING_PAYMENT' })
    .whereNull('deadline')
    .update({ deadline: new Date(input.deadline) });
  if (claimed === 1) return { deadline: input.deadline, providerExpiresAt: input.providerExpiresAt };
  const row = (await db('orders').where({ order_id: input.orderId }).first('deadline')) as
    { deadline: Date | string | null } | undefined;
  // No row, or not waiting (the transaction below says which), or a deadline of its own: the stored one when any.
  if (!row?.deadline) return { deadline: input.deadline, providerExpiresAt: input.providerExpiresAt };
  const stored = new Date(row.deadline).getTime();
  // Already past (the earlier attempt was claimed long ago, an outage between: it may never have reached the
  // provider): a fresh window, as before the claim existed, rather than an order opened past its deadline.
  if (stored <= Date.now()) {
    await db('orders')
      .where({ order_id: input.orderId, status: 'AWAITING_PAYMENT', deadline: new Date(stored) })
      .update({ deadline: new Date(input.deadline) });
    return { deadline: input.deadline, providerExpiresAt: input.providerExpiresAt };
  }
  const margin = Date.parse(input.providerExpiresAt) - Date.parse(input.deadline);
  return { deadline: new Date(stored).toISOString(), providerExpiresAt: new Date(stored + margin).toISOString() };
}

/** Creates the payment at the provider (idempotent there by out-trade-no = orderId) and records it. */
export async function createProviderPayment(
  db: Knex,
  providers: ProviderRegistry,
  input: CreateProviderPaymentInput,
): Promise<CreatedPayment> {
  const provider = providerFor(providers, input.provider);
  const { deadline, providerExpiresAt } = await fixDeadline(db, input);
  const created = await guard(() =>
    provider.createPayment({
      outTradeNo: input.orderId,
      amount: input.amount,
      currency: input.currency,
      subject: input.subject,
      notifyUrl: input.notifyUrl,
      expiresAt: providerExpiresAt,
    }),
  );
  // The order first, and only while it still awaits its payment: an attempt of this step that outlived its timeout
  // (the provider answered late; the set-up retried, gave up and failed the order) must not write a payment URL onto an
  // order that is FAILED, where the waiting page would offer it to the buyer.
  const closedAs = await db.transaction(async (trx) => {
    const updated = await trx('orders')
      .where({ order_id: input.orderId, status: 'AWAITING_PAYMENT' })
      .update({ payment_url: created.paymentUrl, updated_at: trx.fn.now(3) });
    if (updated !== 1) {
      const order = (await trx('orders').where({ order_id: input.orderId }).first('status')) as
        { status: string } | undefined;
      if (!order) throw businessFailure(FailureType.ORDER_NOT_FOUND, `order ${input.orderId} does not exist`);
      return order.status;
    }
    await trx.raw(
      `INSERT INTO payments (out_trade_no, order_id, provider, merchant_id, trade_no, status, amount, currency, payment_url, expires_at)
       VALUES (?, ?, ?, ?, ?, 'PENDING', ?, ?, ?, ?)
       ON DUPLICATE KEY UPDATE trade_no = VALUES(trade_no), payment_url = VALUES(payment_url)`,
      [
        input.orderId,
        input.orderId,
        provider.name,
        provider.merchantId,
        created.tradeNo,
        input.amount,
        input.currency,
        created.paymentUrl,
        new Date(providerExpiresAt),
      ],
    );
    await appendOrderEvent(
      trx,
      input.orderId,
      'PAYMENT_CREATED',
      `Payment created at ${provider.name}; pay before ${deadline}`,
      { tradeNo: created.tradeNo, providerExpiresAt },
    );
    return undefined;
  });
  if (closedAs !== undefined) {
    // Nobody may pay an order closed unpaid: close what this call created (a payment made meanwhile is the provider's to
    // report, and a late payment is refunded like any other). An order paid (this attempt outlived one that succeeded,
    // and the buyer paid) keeps its payment: there is nothing to close.
    const closedUnpaid = closedAs === 'FAILED' || closedAs === 'EXPIRED' || closedAs === 'CANCELLED';
    const closed = await (
      closedUnpaid ? guard(() => provider.closePayment(input.orderId)) : Promise.resolve(undefined)
    ).catch((err: unknown) => {
      activityLog.warn('could not close the payment of an order that no longer awaits payment', {
        provider: provider.name,
        orderStatus: closedAs,
        error: String((err as Error)?.message ?? err),
      });
      return undefined;
    });
    activityLog.warn('provider payment created for an order that no longer awaits payment: not recorded', {
      provider: provider.name,
      tradeNo: created.tradeNo,
      orderStatus: closedAs,
      closeResult: closed?.result ?? (closedUnpaid ? 'NOT_CLOSED' : 'NOT_ASKED'),
    });
    throw businessFailure(
      FailureType.ORDER_CLOSED,
      `order ${input.orderId} is ${closedAs}: its payment is not recorded` +
        (closed ? ` (provider close: ${closed.result})` : closedUnpaid ? ' (the provider could not close it)' : ''),
    );
  }
  activityLog.info('provider payment created', {
    provider: provider.name,
    tradeNo: created.tradeNo,
    amount: input.amount,
    currency: input.currency,
    providerExpiresAt,
  });
  return { ...created, merchantId: provider.merchantId, deadline, providerExpiresAt };
}

/** Asks the provider for the payment's state (active query). */
export async function queryProviderPayment(
  providers: ProviderRegistry,
  input: { provider: string; outTradeNo: string },
): Promise<ProviderPaymentState> {
  return guard(() => providerFor(providers, input.provider).queryPayment(input.outTradeNo));
}

/** Closes the payment at the provider so that nobody can pay it any more; reports ALREADY_PAID when too late. */
export async function closeProviderPayment(
  db: Knex,
  providers: ProviderRegistry,
  input: { orderId: string; provider: string },
): Promise<{ result: 'CLOSED' | 'ALREADY_PAID' | 'NOT_FOUND' }> {
  const provider = providerFor(providers, input.provider);
  // An earlier attempt of this step closed the trade and recorded it, and its workflow task was then lost (a worker
  // killed, a Temporal restart): that close is the answer. Asking again let a payment the provider took after our
  // close (one in flight as the trade closed) answer ALREADY_PAID, and the order was confirmed PAID with money taken
  // after it was closed (seen in the cluster soak). Answered CLOSED, the order closes, and its late watch (or the
  // payment's notification) finds that payment and refunds it.
  const recorded = await db('payments').where({ out_trade_no: input.orderId, status: 'CLOSED' }).first('out_trade_no');
  if (recorded) {
    activityLog.info('provider payment close already recorded by an earlier attempt', { provider: provider.name });
    return { result: 'CLOSED' };
  }
  const closed = await guard(() => provider.closePayment(input.orderId));
  await db.transaction(async (trx) => {
    if (closed.result !== 'ALREADY_PAID') {
      await trx('payments')
        .where({ out_trade_no: input.orderId, status: 'PENDING' })
        .update({ status: 'CLOSED', updated_at: trx.fn.now(3) });
    }
    const message =
      closed.result === 'ALREADY_PAID'
        ? `Close refused by ${provider.name}: the buyer has already paid`
        : closed.result === 'CLOSED'
          ? `Payment closed at ${provider.name}; it can no longer be paid`
          : `${provider.name} has no such payment; nothing to close`;
    await appendOrderEvent(
      trx,
      input.orderId,
      closed.result === 'ALREADY_PAID' ? 'CLOSE_FOUND_PAID' : 'PAYMENT_CLOSED',
      message,
    );
  });
  activityLog.info('provider payment close answered', { provider: provider.name, result: closed.result });
  return closed;
}

/** Input of refundPayment. */
export interface RefundPaymentInput {
  orderId: string;
  provider: string;
  tradeNo: string;
  /** Stable for this refund: a retry with the same number never refunds twice. */
  outRefundNo: string;
  amount: number;
  currency: string;
  reason: string;
  /**
   * The failed refund (our number) this refund pays again (src/workflows/failed-refund-review.ts): refused for good,
   * before anything is sent, when its provider has reported that refund succeeded after all (a resubmission under its
   * number, src/db/refund-outcomes.ts): the buyer has that money, and a new refund would pay it twice.
   */
  retriesFailedRefund?: string;
}

/**
 * The check of a refund that pays a failed refund again, and its PENDING row, in one transaction: refused for good
 * when the provider has since reported that failed refund succeeded (a WeChat resubmission under its number), unless
 * this refund is SUCCEEDED already (an earlier attempt was answered). A PENDING row of this refund is refused too: it
 * may or may not have reached the provider, and the buyer has the money either way; the operator checks the console.
 * READ COMMITTED, the failed refund's row locked first: the success notice (src/db/refund-outcomes.ts, which locks that
 * row for update) is either committed and seen, or comes after this commit and finds this refund's row, which its
 * entry then names (the buyer may have been paid twice: nothing more can stop a call already sent).
 */
async function recordRetryOfFailed(db: Knex, input: RefundPaymentInput, failedNo: string): Promise<void> {
  await db.transaction(
    async (trx) => {
      await trx('refunds').where({ out_refund_no: failedNo }).forShare().first('status');
      const own = (await trx('refunds').where({ out_refund_no: input.outRefundNo }).forShare().first('status')) as
        { status: string } | undefined;
      if (own?.status === 'SUCCEEDED') return;
      if (await successAfterFailureRecorded(trx, input.orderId, failedNo))
        throw businessFailure(
          FailureType.ORDER_CONFLICT,
          own
            ? `refund ${failedNo} failed, then its provider reported it succeeded, while ${input.outRefundNo} was already recorded (it may have reached the provider: check it there); not sent again; close the review with refundAmount 0 once checked`
            : `refund ${failedNo} failed, then its provider reported it succeeded: the buyer has this money, so ${input.outRefundNo} was not sent; close the review with refundAmount 0`,
          { failedOutRefundNo: failedNo },
        );
      await insertPendingRefund(trx, input);
    },
    { isolationLevel: 'read committed' },
  );
}

/** The refund's PENDING row, before the provider is called (a row already there is kept). */
function insertPendingRefund(db: Knex | Knex.Transaction, input: RefundPaymentInput) {
  return db.raw(
    `INSERT INTO refunds (out_refund_no, order_id, out_trade_no, provider, trade_no, amount, currency, reason, status)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'PENDING') ON DUPLICATE KEY UPDATE out_refund_no = out_refund_no`,
    [
      input.outRefundNo,
      input.orderId,
      input.orderId,
      input.provider,
      input.tradeNo,
      input.amount,
      input.currency,
      input.reason.slice(0, 255),
    ],
  );
}

/** Refunds at the provider with a stable refund number, recording the refund before and after. */
export async function refundPayment(
  db: Knex,
  providers: ProviderRegistry,
  input: RefundPaymentInput,
): Promise<{ refundNo: string; amount: number }> {
  const provider = providerFor(providers, input.provider);
  if (input.retriesFailedRefund)
    await recordRetryOfFailed(db, { ...input, provider: provider.name }, input.retriesFailedRefund);
  else await insertPendingRefund(db, { ...input, provider: provider.name });
  const existing = await db('refunds').where({ out_refund_no: input.outRefundNo }).first('amount', 'order_id');
  if (Number(existing.amount) !== input.amount || existing.order_id !== input.orderId) {
    throw businessFailure(
      FailureType.ORDER_CONFLICT,
      `refund ${input.outRefundNo} already exists with different terms`,
    );
  }
  const result = await guard(() =>
    provider.refund({
      outTradeNo: input.orderId,
      outRefundNo: input.outRefundNo,
      amount: input.amount,
      reason: input.reason,
    }),
  );
  await db.transaction(async (trx) => {
    const count = await trx('refunds')
      .where({ out_refund_no: input.outRefundNo, status: 'PENDING' })
      .update({
        status: 'SUCCEEDED',
        refund_no: result.refundNo,
        refunded_at: new Date(result.refundedAt),
        updated_at: trx.fn.now(3),
      });
    if (count === 0) {
      // Not PENDING any more: recorded by an earlier attempt (SUCCEEDED: done), or the provider's notification that the
      // refund failed came in while this step ran (FAILED, src/db/refund-outcomes.ts): the money did not go back, so
      // the step fails for good and the workflow sends the order to review instead of marking it REFUNDED.
      const now = (await trx('refunds').where({ out_refund_no: input.outRefundNo }).first('status')) as
        { status: string } | undefined;
      if (now?.status === 'FAILED')
        throw businessFailure(
          FailureType.PROVIDER_REJECTED,
          `refund ${input.outRefundNo} failed at ${provider.name} after it was accepted (the provider's notification says so); nothing was refunded`,
          { outRefundNo: input.outRefundNo },
        );
    }
    if (count === 1) {
      // The order's payment row is REFUNDED only when this refund returned the money that paid the order: the trade
      // recorded on the row (PAID, or REFUNDED already by another refund of it), or, on a row no trade has paid yet
      // (PENDING, CLOSED), the late trade being refunded. A second trade of a paid order leaves the row (and the order's
      // payment) as it is.
      const marked = await trx('payments')
        .where({ out_trade_no: input.orderId })
        .andWhere((q) =>
          q
            .whereIn('status', ['PENDING', 'CLOSED'])
            .orWhere((paid) => paid.whereIn('status', ['PAID', 'REFUNDED']).andWhere({ trade_no: input.tradeNo })),
        )
        .update({ status: 'REFUNDED', updated_at: trx.fn.now(3) });
      const ofPayment =
        marked === 1 ? 'the order payment' : `trade ${input.tradeNo}, not the trade that paid the order`;
      await appendOrderEvent(
        trx,
        input.orderId,
        'REFUNDED',
        `Refunded ${input.amount} ${input.currency} (minor units) of ${ofPayment} at ${provider.name}: ${input.reason}`,
        {
          outRefundNo: input.outRefundNo,
          refundNo: result.refundNo,
          tradeNo: input.tradeNo,
          paymentRefunded: marked === 1,
        },
      );
    }
  });
  activityLog.info('refund done at the provider', {
    provider: provider.name,
    outRefundNo: input.outRefundNo,
    refundNo: result.refundNo,
    amount: result.amount,
    currency: input.currency,
  });
  return { refundNo: result.refundNo, amount: result.amount };
}
