/**
 * Steps 6-7: no payment by the deadline (or the buyer cancelled). Close at the provider first, so nobody can pay an
 * order we release; then release every participant and mark the order; then watch for money the provider still
 * took until its own expiry, and refund it.
 */
import { condition } from '@temporalio/workflow';
import type { OrderPaymentResult } from '../../contracts/order-workflow';
import { queryAfterCloseFoundPaid } from '../shared/close-found-paid';
import { MUST, clock, run } from '../shared/steps';
import type { OrderContext } from './context';
import { refundLatePayment } from './refunds';

/**
 * A close the provider refused because the buyer has paid: noted with `why`, and, unless a notification told it
 * already, the payment as the provider's query shows it becomes the order's evidence.
 */
export async function learnPaymentCloseFound(ctx: OrderContext, why: string): Promise<void> {
  const s = ctx.state;
  s.note('CLOSE_FOUND_PAID', why);
  if (!s.evidence) {
    // found() keeps a payment whose notification arrived meanwhile (it names the amount; a lagging query may not).
    const { state } = await queryAfterCloseFoundPaid(ctx.provider, s.orderId, () => s.evidence !== undefined);
    s.found(state, 'close');
  }
}

/** Returns the order's end, or undefined when the close found the order paid (the caller confirms it). */
export async function closeUnpaid(ctx: OrderContext): Promise<Omit<OrderPaymentResult, 'orderId'> | undefined> {
  const s = ctx.state;
  const cancel = s.cancelRequest;
  const target = cancel ? 'CANCELLED' : 'EXPIRED';
  ctx.enter('CLOSING', cancel ? 'buyer cancelled; closing the payment' : 'deadline reached; closing the payment');
  s.note(
    cancel ? 'CANCEL_REQUESTED' : 'DEADLINE_REACHED',
    cancel ? 'Buyer asked to cancel' : 'Payment deadline reached',
  );
  const closed = await ctx.must('closeProviderPayment', 'task', `close ${ctx.provider} payment`, {
    orderId: s.orderId,
    provider: ctx.provider,
  });
  if (closed.result === 'ALREADY_PAID') {
    await learnPaymentCloseFound(ctx, 'The buyer paid just before the close: treating the order as paid');
    return undefined;
  }
  s.closedAtProvider = true;

  ctx.enter('RELEASING', `releasing ${s.lines.length} SKU(s)${s.benefits.length ? ', coupon and points' : ''}`);
  await ctx.must(
    'releaseOrder',
    'local',
    `release ${s.lines.length} SKU(s)${s.benefits.length ? ', coupon and points' : ''}; mark ${target}`,
    {
      ...ctx.participants(),
      transition: {
        from: ['AWAITING_PAYMENT'],
        to: target,
        reason: cancel ? 'USER_CANCELLED' : 'PAYMENT_TIMEOUT',
        event: {
          type: `ORDER_${target}`,
          message: cancel
            ? `Cancelled by the buyer${cancel.reason ? `: ${cancel.reason}` : ''}`
            : 'Not paid before the deadline; stock released',
        },
      },
    },
  );
  s.settled(target);
  s.note(`ORDER_${target}`, target === 'EXPIRED' ? 'Not paid in time; stock released' : 'Cancelled; stock released');

  // Some providers still take money after a close (Alipay's QR closed before it was scanned stays payable). Even when
  // releasing took us past the expiry (a slow database, a restart), ask once: money paid between our close and the
  // expiry whose notification was lost is found here.
  const watchMs = s.lateWatchMs();
  if (watchMs > 1000) {
    ctx.enter(
      'WATCHING_LATE_PAYMENT',
      `closed; watching for a late payment until ${new Date(s.providerExpiresAt!).toISOString()}`,
    );
    ctx.publish();
    s.lateWatchOpen = true;
    await condition(() => s.evidence !== undefined, watchMs, {
      summary: `watch for a late payment until the provider-side expiry, ${clock(s.providerExpiresAt!)}`,
    });
  }
  if (!s.evidence) {
    const state = await run('queryProviderPayment', MUST, `final query ${ctx.provider} after expiry`, {
      provider: ctx.provider,
      outTradeNo: s.orderId,
    });
    if (state.status === 'PAID') s.found(state, 'query');
  }
  // Closed from here, in the continuation that reads the evidence (no await since the final answer): an escalation's
  // query answered in the same activation either lands before (and is refunded below) or finds the watch closed and
  // promises nothing.
  s.lateWatchOpen = false;
  if (s.evidence) {
    const inReview = await refundLatePayment(ctx, s.evidence);
    if (inReview) return inReview;
    // The result says what MySQL says: REFUNDED for a late payment, not why the order had closed before it.
    return { status: 'REFUNDED', reason: 'LATE_PAYMENT_REFUNDED' };
  }
  return { status: target, reason: cancel ? 'USER_CANCELLED' : 'PAYMENT_TIMEOUT' };
}
