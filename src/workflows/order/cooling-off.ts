/**
 * After PAID: the cooling-off window, in which the buyer may take the money back without review; then the hand-off
 * to fulfilment (outbox). The window is a durable timer; a refund request ends it early.
 */
import { condition } from '@temporalio/workflow';
import type { OrderPaymentResult, PaymentEvidence } from '../../contracts/order-workflow';
import { clock } from '../shared/steps';
import type { OrderContext } from './context';
import { endedInFailedRefundReview, refundInFull } from './refunds';

export async function coolOff(ctx: OrderContext, paid: PaymentEvidence): Promise<Omit<OrderPaymentResult, 'orderId'>> {
  const s = ctx.state;
  const window = s.startCoolingOff();
  if (window > 0) {
    const until = s.coolingOffUntil!;
    ctx.enter('COOLING_OFF', `refundable without review until ${new Date(until).toISOString()}`);
    ctx.publish();
    await condition(() => s.refundRequest !== undefined, window, {
      summary: `cooling-off window until ${clock(until)}`,
    });
    if (s.refundRequest) {
      const { reason } = s.refundRequest;
      ctx.enter('REFUNDING', 'buyer refunded inside the cooling-off window');
      await refundInFull(ctx, paid, 'cooling-off', `cooling-off refund${reason ? `: ${reason}` : ''}`);
      const marked = await ctx.must(
        'settleRefunded',
        'local',
        `return ${s.lines.length} SKU(s)${s.benefits.length ? ', coupon and points' : ''}; mark REFUNDED`,
        {
          ...ctx.participants(),
          sold: true,
          transition: {
            from: ['PAID'],
            to: 'REFUNDED',
            reason: 'COOLING_OFF_REFUND',
            event: {
              type: 'ORDER_REFUNDED',
              message: 'Refunded in full inside the cooling-off window; stock returned',
            },
          },
        },
      );
      const inReview = endedInFailedRefundReview(ctx, marked);
      if (inReview) return inReview;
      s.settled('REFUNDED');
      return { status: 'REFUNDED', reason: 'COOLING_OFF_REFUND' };
    }
    s.endCoolingOff();
  }
  if (!s.handedOffWhenPaid) await ctx.must('handOff', 'local', 'hand off to fulfilment (outbox)', s.orderId);
  return { status: 'PAID' };
}
