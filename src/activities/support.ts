/** Support tickets (one-click customer service) and the fulfilment hand-off through the outbox. */
import type { Knex } from 'knex';
import { appendOrderEvent } from './events';

/** Input of createSupportTicket. */
export interface SupportTicketInput {
  ticketId: string;
  orderId: string;
  orderStatus: string;
  stage?: string;
  providerStatus?: string;
  resolution: string;
  snapshot: Record<string, unknown>;
  note?: string;
}

/** Records a ticket with its snapshot; idempotent by ticket id (a retried activity writes it once). */
export async function createSupportTicket(db: Knex, input: SupportTicketInput): Promise<{ ticketId: string }> {
  await db.transaction(async (trx) => {
    const exists = await trx('support_tickets').where({ ticket_id: input.ticketId }).first('ticket_id');
    if (exists) return;
    await trx('support_tickets').insert({
      ticket_id: input.ticketId,
      order_id: input.orderId,
      order_status: input.orderStatus,
      stage: input.stage ?? null,
      provider_status: input.providerStatus ?? null,
      resolution: input.resolution,
      snapshot: JSON.stringify(input.snapshot),
      note: input.note?.slice(0, 500) ?? null,
    });
    await trx('orders').where({ order_id: input.orderId }).whereNull('escalated_at').update({ escalated_at: trx.fn.now(3) });
    await appendOrderEvent(trx, input.orderId, 'SUPPORT_ESCALATED', `Buyer asked for help; ticket ${input.ticketId} (provider says ${input.providerStatus ?? 'unknown'}; ${input.resolution})`, {
      ticketId: input.ticketId,
    });
  });
  return { ticketId: input.ticketId };
}

/** Cooling-off over: marks the order ready for fulfilment and writes the outbox message in one transaction. */
export async function markFulfilmentReady(db: Knex, orderId: string): Promise<{ written: boolean }> {
  return db.transaction(async (trx) => {
    const order = await trx('orders').where({ order_id: orderId }).forUpdate().first('status', 'fulfilment_ready_at', 'amount', 'currency', 'user_id');
    if (!order || order.status !== 'PAID' || order.fulfilment_ready_at) return { written: false };
    const lines = await trx('order_lines').where({ order_id: orderId }).select('sku', 'quantity');
    await trx('orders').where({ order_id: orderId, status: 'PAID' }).whereNull('fulfilment_ready_at').update({ fulfilment_ready_at: trx.fn.now(3) });
    await trx('outbox').insert({
      topic: 'order.fulfilment_ready',
      message_key: orderId,
      payload: JSON.stringify({ orderId, userId: order.user_id, amount: Number(order.amount), currency: order.currency, items: lines }),
    });
    await appendOrderEvent(trx, orderId, 'FULFILMENT_READY', 'Cooling-off period over; handed to fulfilment');
    return { written: true };
  });
}
