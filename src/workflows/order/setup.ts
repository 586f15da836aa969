/**
 * Steps 1-3 of architecture.md: price and store the order with the TCC Try of every participant, create the
 * provider payment, and answer the waiting API (early return). Both steps are local activities: they run in the
 * first workflow task, so the buyer's payment URL costs no task round trip through the server.
 */
import { FailureType } from '../../contracts/failures';
import { SETUP, errorMessage, failureDetails, failureType, runLocal } from '../shared/steps';
import type { OrderContext } from './context';
import { requestedBenefits } from './state';

/** Returns true when the payment exists and the API has its URL; false when the order failed (everything released). */
export async function setUp(ctx: OrderContext): Promise<boolean> {
  const s = ctx.state;
  const { input } = s;
  try {
    ctx.enter('CREATING_ORDER', `pricing ${input.items.length} item(s) and reserving stock`);
    const opened = await runLocal(
      'openOrder',
      SETUP,
      `price ${input.items.length} item(s), reserve stock${input.couponCode || input.points ? ', coupon and points' : ''}`,
      {
        orderId: s.orderId,
        userId: input.userId,
        items: input.items,
        provider: input.provider,
        idempotencyKey: input.idempotencyKey,
        ...(input.couponCode !== undefined ? { couponCode: input.couponCode } : {}),
        ...(input.points !== undefined ? { points: input.points } : {}),
      },
    );
    s.opened(opened);
    s.note('STOCK_RESERVED', `Reserved ${opened.lines.map((l) => `${l.quantity} x ${l.sku}`).join(', ')}`);
    for (const b of opened.benefits)
      s.note(
        `${b.participant.toUpperCase()}_RESERVED`,
        `Reserved ${b.participant === 'coupon' ? `coupon ${b.resource}` : `${b.quantity} points`}`,
      );

    ctx.enter('CREATING_PAYMENT', `creating the ${input.provider} payment`);
    const deadline = s.startClock();
    const payment = await runLocal('createProviderPayment', SETUP, `create ${input.provider} payment`, {
      orderId: s.orderId,
      provider: input.provider,
      amount: opened.amount,
      currency: opened.currency,
      subject: `Order ${s.orderId}`,
      notifyUrl: `${input.publicBaseUrl}/callbacks/${input.provider}`,
      deadline: new Date(deadline).toISOString(),
      providerExpiresAt: new Date(s.providerExpiresAt!).toISOString(),
    });
    s.paymentCreated(payment);
    s.note('PAYMENT_CREATED', `Payment created at ${input.provider}; pay before ${new Date(deadline).toISOString()}`);
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
