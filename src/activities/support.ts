/**
 * The fulfilment hand-off through the outbox (support tickets are in src/db/support-tickets.ts, shared with the API).
 */
import type { Knex } from 'knex';
import { appendOrderEvent } from '../db/order-events';

/** Cooling-off over: marks the order ready for fulfilment and writes the outbox message in one transaction. */
export async function markFulfilmentReady(db: Knex, orderId: string): Promise<{ written: boolean }> {
  return db.transaction(async (trx) => {
    const order = await trx('orders')
      .where({ order_id: orderId })
      .forUpdate()
      .first('status', 'fulfilment_ready_at', 'amount', 'currency', 'user_id');
    if (!order || order.status !== 'PAID' || order.fulfilment_ready_at) return { written: false };
    const lines = await trx('order_lines').where({ order_id: orderId }).select('sku', 'quantity');
    await trx('orders')
      .where({ order_id: orderId, status: 'PAID' })
      .whereNull('fulfilment_ready_at')
      .update({ fulfilment_ready_at: trx.fn.now(3) });
    await trx('outbox').insert({
      topic: 'order.fulfilment_ready',
      message_key: orderId,
      payload: JSON.stringify({
        orderId,
        userId: order.user_id,
        amount: Number(order.amount),
        currency: order.currency,
        items: lines,
      }),
    });
    await appendOrderEvent(trx, orderId, 'FULFILMENT_READY', 'Cooling-off period over; handed to fulfilment');
    return { written: true };
  });
}
