/**
 * The end of every order: DONE on visibility, the update handlers answered, and every trade other than the one the
 * order kept (a second payment during cooling-off or review) handed to its own latePayment workflow, which verifies
 * it with the provider and refunds it.
 */
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { ParentClosePolicy, allHandlersFinished, condition, log, startChild } from '@temporalio/workflow';
import { FailureType } from '../../contracts/failures';
import { latePaymentWorkflowId, type OrderPaymentResult } from '../../contracts/order-workflow';
import { latePayment } from '../late-payment';
import { evidenceAfterDecisionStep } from '../patches';
import type { OrderContext } from './context';

export async function finish(ctx: OrderContext, end: Omit<OrderPaymentResult, 'orderId'>): Promise<OrderPaymentResult> {
  const s = ctx.state;
  s.finished = true;
  ctx.enter('DONE', `order is ${end.status}`);
  ctx.publish();
  if (!s.ready) s.setupFailed(FailureType.ORDER_CLOSED, `order is ${end.status}`, {});
  // Let update handlers (early return, cancel, review) reply before the workflow completes.
  await condition(allHandlersFinished);
  // A trade that arrives during the hand-off is handed off too: the loop ends only when none is left.
  while (await handOffOtherTrades(ctx)) await condition(allHandlersFinished);
  log.info('order lifecycle finished', { orderId: s.orderId, status: end.status });
  return { orderId: s.orderId, ...end };
}

/** Starts the latePayment workflow of each trade not yet handed off; returns whether anything was. */
async function handOffOtherTrades(ctx: OrderContext): Promise<boolean> {
  const s = ctx.state;
  const others = s.otherTrades();
  // A payment reported after the order was decided without it (closed unpaid) is still the buyer's money.
  const unkept = s.unkeptEvidence();
  if (unkept && evidenceAfterDecisionStep()) others.push(unkept);
  if (others.length === 0) return false;
  if (s.evidence?.tradeNo === 'unknown') {
    // The provider did not name the trade that paid: a reported trade may be that very one, so none is refunded.
    for (const [tradeNo] of others) s.handedOff.add(tradeNo);
    s.note(
      'OTHER_TRADE_NOT_HANDED_OFF',
      `Trade(s) ${others.map(([t]) => t).join(', ')} reported, but the paying trade is unknown; left for reconciliation`,
    );
    return false;
  }
  for (const [tradeNo, notificationId] of others) {
    s.handedOff.add(tradeNo);
    const workflowId = latePaymentWorkflowId(ctx.provider, s.orderId, tradeNo);
    try {
      await startChild(latePayment, {
        workflowId,
        args: [{ provider: s.input.provider, outTradeNo: s.orderId, tradeNo, notificationId }],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
        staticSummary: `Trade ${tradeNo} reported while order ${s.orderId} was open (now ${s.status})`,
      });
      s.note(
        'OTHER_TRADE_HANDED_OFF',
        `Trade ${tradeNo} is not the one this order kept; ${workflowId} verifies and refunds it`,
      );
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      s.note(
        'OTHER_TRADE_HANDED_OFF',
        `Trade ${tradeNo} is not the one this order kept; ${workflowId} already handles it`,
      );
    }
  }
  return true;
}
