/**
 * The fulfilment hand-off through the outbox (support tickets are in src/db/support-tickets.ts, shared with the API).
 */
import type { Knex } from 'knex';
import { bySkuOrder, jsonColumn } from '../db/json';
import { appendOrderEvent } from '../db/order-events';

/**
 * Cooling-off over: marks the order ready for fulfilment and writes the outbox message in one transaction. The
 * conditional update comes first and is the guard (PAID, not handed off yet: a repeat changes no row and writes
 * nothing); it also locks the row, so the read that follows (the order with its lines, one statement) sees it as it
 * stays until the commit.
 */
export async function markFulfilmentReady(db: Knex, orderId: string): Promise<{ written: boolean }> {
  return db.transaction(async (trx) => {
    const marked = await trx('orders')
      .where({ order_id: orderId, status: 'PAID' })
      .whereNull('fulfilment_ready_at')
      .update({ fulfilment_ready_at: trx.fn.now(3) });
    if (marked !== 1) return { written: false };
    const [rows] = (await trx.raw(
      `SELECT o.amount, o.currency, o.user_id,
              (SELECT JSON_ARRAYAGG(JSON_OBJECT('sku', l.sku, 'quantity', l.quantity))
                 FROM order_lines l WHERE l.order_id = o.order_id) AS lines_json
         FROM orders o WHERE o.order_id = ?`,
      [orderId],
    )) as [{ amount: number; currency: string; user_id: string; lines_json: unknown }[]];
    const order = rows[0]!;
    const lines = bySkuOrder(
      (jsonColumn<{ sku: string; quantity: number }[]>(order.lines_json) ?? []).map((l) => ({
        sku: l.sku,
        quantity: Number(l.quantity),
      })),
    );
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
