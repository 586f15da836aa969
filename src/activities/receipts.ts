/**
 * The buyer's payment receipt, queued in the transactional outbox (topic `order.payment_receipt`, one message per
 * order) as soon as the order is PAID, so the notification service can e-mail / text the buyer at once instead of
 * after the cooling-off window (when `order.fulfilment_ready` is written). The receipt states what the provider
 * says was paid (trade, paid amount and currency, time), read from MySQL, the system of record.
 */
import type { Knex } from 'knex';
import { appendOrderEvent } from '../db/order-events';

/** Outbox topic of payment receipts; the message key is the order id. */
export const PAYMENT_RECEIPT_TOPIC = 'order.payment_receipt';

/** Result of recordPaymentReceipt: `written` false when the receipt was already queued or the order is not PAID. */
export interface PaymentReceiptResult {
  written: boolean;
  reason?: 'ALREADY_QUEUED' | 'NOT_PAID';
}

/**
 * Queues the receipt of a PAID order with its timeline entry, in one transaction. Idempotent: the order row is locked,
 * and an existing message for the order (a retried attempt whose commit succeeded) means nothing more to do; the
 * unique (topic, message_key) key backs this up. An order that is not PAID gets no receipt.
 */
export async function recordPaymentReceipt(db: Knex, orderId: string): Promise<PaymentReceiptResult> {
  return db.transaction(async (trx) => {
    const order = await trx('orders')
      .where({ order_id: orderId })
      .forUpdate()
      .first('status', 'user_id', 'amount', 'currency', 'provider', 'paid_trade_no');
    if (!order || order.status !== 'PAID') return { written: false, reason: 'NOT_PAID' };
    const queued = await trx('outbox').where({ topic: PAYMENT_RECEIPT_TOPIC, message_key: orderId }).first('id');
    if (queued) return { written: false, reason: 'ALREADY_QUEUED' };
    const payment = await trx('payments')
      .where({ out_trade_no: orderId })
      .first('trade_no', 'paid_amount', 'paid_currency', 'paid_at');
    const lines = await trx('order_lines')
      .where({ order_id: orderId })
      .orderBy('sku')
      .select('sku', 'quantity', 'unit_price');
    const paidAmount = payment?.paid_amount == null ? Number(order.amount) : Number(payment.paid_amount);
    const paidCurrency = (payment?.paid_currency as string | null) ?? (order.currency as string);
    const tradeNo = (order.paid_trade_no as string | null) ?? (payment?.trade_no as string | null) ?? null;
    await trx('outbox').insert({
      topic: PAYMENT_RECEIPT_TOPIC,
      message_key: orderId,
      payload: JSON.stringify({
        orderId,
        userId: order.user_id,
        provider: order.provider,
        tradeNo,
        orderAmount: Number(order.amount),
        paidAmount,
        currency: paidCurrency,
        paidAt: payment?.paid_at ? new Date(payment.paid_at as Date).toISOString() : null,
        items: lines.map((l: { sku: string; quantity: number; unit_price: number }) => ({
          sku: l.sku,
          quantity: Number(l.quantity),
          unitPrice: Number(l.unit_price),
        })),
      }),
    });
    await appendOrderEvent(
      trx,
      orderId,
      'RECEIPT_QUEUED',
      `Payment receipt queued for the buyer (${paidAmount} ${paidCurrency}, trade ${tradeNo ?? 'unknown'})`,
    );
    return { written: true };
  });
}
