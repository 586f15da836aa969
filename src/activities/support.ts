/**
 * The fulfilment hand-off through the outbox (support tickets are in src/db/support-tickets.ts, shared with the API).
 */
import { FULFILMENT_TOPIC } from '../contracts/outbox';
import type { Knex } from 'knex';
import { bySkuOrder, jsonColumn } from '../db/json';
import { OrderEventBatch } from '../db/order-events';
import type { OutboxMessage } from './receipts';

/**
 * Cooling-off over: marks the order ready for fulfilment and writes the outbox message in one transaction. The
 * conditional update comes first and is the guard (PAID, not handed off yet: a repeat changes no row and writes
 * nothing); it also locks the row, so the read that follows (the order with its lines, one statement) sees it as it
 * stays until the commit.
 */
export async function markFulfilmentReady(
  db: Knex,
  orderId: string,
  message = 'Cooling-off period over; handed to fulfilment',
): Promise<{ written: boolean }> {
  return db.transaction((trx) => markFulfilmentReadyIn(trx, orderId, message));
}

/** The hand-off inside a caller's transaction, the order read by the conditional update's lock. */
async function markFulfilmentReadyIn(
  trx: Knex.Transaction,
  orderId: string,
  message: string,
): Promise<{ written: boolean }> {
  if (!(await claimHandOff(trx, orderId))) return { written: false };
  const [rows] = (await trx.raw(
    `SELECT o.amount, o.currency, o.user_id,
            (SELECT JSON_ARRAYAGG(JSON_OBJECT('sku', l.sku, 'quantity', l.quantity))
               FROM order_lines l WHERE l.order_id = o.order_id) AS lines_json
       FROM orders o WHERE o.order_id = ?`,
    [orderId],
  )) as [{ amount: number; currency: string; user_id: string; lines_json: unknown }[]];
  const order = rows[0]!;
  const lines = (jsonColumn<{ sku: string; quantity: number }[]>(order.lines_json) ?? []).map((l) => ({
    sku: l.sku,
    quantity: Number(l.quantity),
  }));
  const events = new OrderEventBatch(orderId);
  await queueHandOffIn(
    trx,
    { orderId, userId: order.user_id, amount: Number(order.amount), currency: order.currency, lines },
    events,
    message,
  );
  await events.write(trx);
  return { written: true };
}

/**
 * The guard of the hand-off: marks a PAID order not yet handed off (a repeat changes no row). Inside the caller's
 * transaction, which then holds the order row until it commits.
 */
export async function claimHandOff(trx: Knex.Transaction, orderId: string): Promise<boolean> {
  const marked = await trx('orders')
    .where({ order_id: orderId, status: 'PAID' })
    .whereNull('fulfilment_ready_at')
    .update({ fulfilment_ready_at: trx.fn.now(3) });
  return marked === 1;
}

/** The order as the fulfilment message carries it. */
export interface HandOffOrder {
  orderId: string;
  userId: string;
  amount: number;
  currency: string;
  lines: { sku: string; quantity: number }[];
}

/** The fulfilment outbox message of an order whose hand-off was claimed, and its timeline entry (in `events`). */
export async function queueHandOffIn(
  trx: Knex.Transaction,
  order: HandOffOrder,
  events: OrderEventBatch,
  message: string,
): Promise<void> {
  const handOff = handOffMessage(order, message);
  await trx('outbox').insert(handOff.row);
  events.add(handOff.eventType, handOff.event);
}

/** The outbox topic of orders handed to fulfilment; the message key is the order id. */
export { FULFILMENT_TOPIC } from '../contracts/outbox';

/** The fulfilment message of an order as its outbox row, with its timeline message. */
export function handOffMessage(order: HandOffOrder, message: string): OutboxMessage {
  return {
    row: {
      topic: FULFILMENT_TOPIC,
      message_key: order.orderId,
      payload: JSON.stringify({
        orderId: order.orderId,
        userId: order.userId,
        amount: order.amount,
        currency: order.currency,
        items: bySkuOrder(order.lines.map((l) => ({ sku: l.sku, quantity: l.quantity }))),
      }),
    },
    eventType: 'FULFILMENT_READY',
    event: message,
  };
}
