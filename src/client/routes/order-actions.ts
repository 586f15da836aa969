/** POST /orders/:id/review (admin), POST /orders/:id/refund (cooling-off), POST /orders/:id/escalate (support). */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { FailureType } from '../../contracts/failures';
import { describeStatus } from '../../contracts/messages';
import { OrderId, ReviewRequest } from '../../contracts/order';
import { ApiError, apiFailure, parseOr400 } from '../errors';
import type { OrderActions } from '../order-actions';
import { requireOperator } from './admin';

const RefundBody = z.object({ reason: z.string().max(200).optional() }).strict();
const EscalateBody = z.object({ note: z.string().max(500).optional() }).strict();

function orderIdOf(value: string): string {
  const parsed = OrderId.safeParse(value);
  if (!parsed.success) throw apiFailure(FailureType.ORDER_NOT_FOUND, `no order ${value.slice(0, 80)}`);
  return parsed.data;
}

/** Registers the post-placement order routes. */
export function registerOrderActionRoutes(
  app: FastifyInstance,
  actions: OrderActions,
  adminToken: string,
  operatorTokens?: Map<string, string>,
): void {
  app.post<{ Params: { orderId: string } }>('/orders/:orderId/review', async (request) => {
    const operator = requireOperator(request, adminToken, operatorTokens);
    const orderId = orderIdOf(request.params.orderId);
    const body = parseOr400(ReviewRequest, request.body);
    // With named tokens the decision is the token holder's: a body naming someone else is refused, not rewritten.
    if (operator !== undefined && body.operator !== operator)
      throw new ApiError(
        403,
        'OPERATOR_MISMATCH',
        `this token is ${operator}'s: a decision made with it names operator "${operator}", not "${body.operator}"`,
      );
    return actions.review(orderId, body);
  });

  app.post<{ Params: { orderId: string } }>('/orders/:orderId/refund', async (request) => {
    const orderId = orderIdOf(request.params.orderId);
    const body = parseOr400(RefundBody, request.body ?? {});
    return actions.refund(orderId, body.reason);
  });

  app.post<{ Params: { orderId: string } }>('/orders/:orderId/escalate', async (request) => {
    const orderId = orderIdOf(request.params.orderId);
    const body = parseOr400(EscalateBody, request.body ?? {});
    const result = await actions.escalate(orderId, body.note);
    return { ...result, messages: describeEscalation(result) };
  });
}

/** What the buyer should be told after escalating. */
function describeEscalation(result: { status: string; stage: string; resolution: string; ticketId: string }) {
  const base = describeStatus({ status: result.status as never, stage: result.stage as never, now: new Date() });
  if (result.resolution === 'PAYMENT_FOUND') {
    return {
      ...base,
      user: {
        en: `We found your payment at the payment provider and are confirming your order now; this usually takes under a minute. Ticket ${result.ticketId}.`,
        zh: `我们已在支付机构查到您的付款，正在确认订单，通常不超过一分钟。工单号 ${result.ticketId}。`,
      },
    };
  }
  if (result.resolution === 'LATE_PAYMENT_FOUND') {
    return {
      ...base,
      user: {
        en: `We found your payment at the payment provider; this order was already closed, so the payment is being refunded to you in full now. Ticket ${result.ticketId}.`,
        zh: `我们已在支付机构查到您的付款；该订单此前已关闭，款项正在全额原路退回。工单号 ${result.ticketId}。`,
      },
    };
  }
  return base;
}
