/**
 * Steps 1-3 of architecture.md: price and store the order with the TCC Try of every participant, create the
 * provider payment, and answer the waiting API (early return). One local activity (openOrderWithPayment; two,
 * openOrder then createProviderPayment, in the previous type orderLifecycle): it runs in the first workflow task, so
 * the buyer's payment URL costs no task round trip through the server.
 */
import { FailureType } from '../../contracts/failures';
import { SETUP, errorMessage, failureDetails, failureType, runLocal } from '../shared/steps';
import type { OrderContext } from './context';
import type { OpenedOrder } from '../../activities/order-steps';
import { type OrderState, requestedBenefits } from './state';

/** Returns true when the payment exists and the API has its URL; false when the order failed (everything released). */
export async function setUp(ctx: OrderContext): Promise<boolean> {
  const s = ctx.state;
  const { input } = s;
  try {
    ctx.enter('CREATING_ORDER', `pricing ${input.items.length} item(s) and reserving stock`);
    const order = {
      orderId: s.orderId,
      userId: input.userId,
      items: input.items,
      provider: input.provider,
      idempotencyKey: input.idempotencyKey,
      ...(input.couponCode !== undefined ? { couponCode: input.couponCode } : {}),
      ...(input.points !== undefined ? { points: input.points } : {}),
    };
    const tries = `reserve stock${input.couponCode || input.points ? ', coupon and points' : ''}`;
    if (s.mergedSteps) {
      const deadline = s.startClock();
      const opened = await runLocal(
        'openOrderWithPayment',
        SETUP,
        `price ${input.items.length} item(s), ${tries}, create ${input.provider} payment`,
        { order, payment: paymentRequest(s, deadline) },
      );
      s.opened(opened);
      noteOpened(s, opened);
      s.paymentCreated(opened.payment);
    } else {
      // The previous type, orderLifecycle: two local activities.
      const opened = await runLocal('openOrder', SETUP, `price ${input.items.length} item(s), ${tries}`, order);
      s.opened(opened);
      noteOpened(s, opened);
      ctx.enter('CREATING_PAYMENT', `creating the ${input.provider} payment`);
      const deadline = s.startClock();
      const payment = await runLocal('createProviderPayment', SETUP, `create ${input.provider} payment`, {
        orderId: s.orderId,
        provider: input.provider,
        amount: opened.amount,
        currency: opened.currency,
        ...paymentRequest(s, deadline),
      });
      s.paymentCreated(payment);
    }
    s.note(
      'PAYMENT_CREATED',
      `Payment created at ${input.provider}; pay before ${new Date(s.deadline!).toISOString()}`,
    );
    return true;
  } catch (err) {
    const type = failureType(err) ?? FailureType.PAYMENT_CREATION_FAILED;
    const message = errorMessage(err);
    s.setupFailed(type, message, failureDetails(err));
    s.note('FAILED', `Order failed: ${type}: ${message}`);
    // Every participant the order asked for is cancelled: what its Try held is released, and a Try that never ran
    // becomes an empty rollback (its fence refuses a late Try). The order row, if pricing wrote it, says FAILED.
    ctx.enter('RELEASING', 'releasing stock, coupon and points of a failed order');
    const lines = s.lines.length ? s.lines : input.items;
    await ctx.must('releaseOrder', 'local', 'release stock, coupon and points of a failed order', {
      orderId: s.orderId,
      userId: input.userId,
      lines: lines.map((l) => ({ sku: l.sku, quantity: l.quantity })),
      benefits: s.benefits.length ? s.benefits : requestedBenefits(input),
      transition: {
        from: ['AWAITING_PAYMENT'],
        to: 'FAILED',
        reason: type,
        event: { type: 'ORDER_FAILED', message: `Order failed: ${message}` },
      },
    });
    s.settled('FAILED');
    return false;
  }
}

/** What the provider payment is created with: subject, callback address, our deadline and the provider's expiry. */
function paymentRequest(s: OrderState, deadline: number) {
  return {
    subject: `Order ${s.orderId}`,
    notifyUrl: `${s.input.publicBaseUrl}/callbacks/${s.input.provider}`,
    deadline: new Date(deadline).toISOString(),
    providerExpiresAt: new Date(s.providerExpiresAt!).toISOString(),
  };
}

/** Timeline entries for what the order's Tries reserved. */
function noteOpened(s: OrderState, opened: OpenedOrder): void {
  s.note('STOCK_RESERVED', `Reserved ${opened.lines.map((l) => `${l.quantity} x ${l.sku}`).join(', ')}`);
  for (const b of opened.benefits)
    s.note(
      `${b.participant.toUpperCase()}_RESERVED`,
      `Reserved ${b.participant === 'coupon' ? `coupon ${b.resource}` : `${b.quantity} points`}`,
    );
}
