/**
 * The buyer's payment receipt, queued in the transactional outbox (topic `order.payment_receipt`, one message per
 * order) as soon as the order is PAID, so the notification service can e-mail / text the buyer at once instead of
 * after the cooling-off window (when `order.fulfilment_ready` is written). The receipt states what the provider
 * says was paid (trade, paid amount and currency, time), read from MySQL, the system of record.
 */
import { PAYMENT_RECEIPT_TOPIC } from '../contracts/outbox';
import type { Knex } from 'knex';
import { bySkuOrder, jsonColumn } from '../db/json';
import { OrderEventBatch } from '../db/order-events';

/** Outbox topic of payment receipts; the message key is the order id. */
export { PAYMENT_RECEIPT_TOPIC } from '../contracts/outbox';

/** Result of recordPaymentReceipt: `written` false when the receipt was already queued or the order is not PAID. */
export interface PaymentReceiptResult {
  written: boolean;
  reason?: 'ALREADY_QUEUED' | 'NOT_PAID';
}

/** An order as its receipt needs it, read in one statement with the row locked (see lockOrderForReceipt). */
export interface ReceiptOrder {
  orderId: string;
  status: string;
  userId: string;
  amount: number;
  currency: string;
  provider: string;
  paidTradeNo: string | null;
  lines: { sku: string; quantity: number; unitPrice: number }[];
  /** The payments row's account of the payment (null before one is recorded). */
  payment: { tradeNo: string | null; paidAmount: number | null; paidCurrency: string | null; paidAt: string | null };
}

/**
 * Locks the order row and reads it with its lines and its payment row, in one statement (the lines and the payment
 * as JSON subqueries). Undefined when the order does not exist.
 */
export async function lockOrderForReceipt(trx: Knex.Transaction, orderId: string): Promise<ReceiptOrder | undefined> {
  const [rows] = (await trx.raw(
    `SELECT o.status, o.user_id, o.amount, o.currency, o.provider, o.paid_trade_no,
            (SELECT JSON_ARRAYAGG(JSON_OBJECT('sku', l.sku, 'quantity', l.quantity, 'unit_price', l.unit_price))
               FROM order_lines l WHERE l.order_id = o.order_id) AS lines_json,
            (SELECT JSON_OBJECT('trade_no', p.trade_no, 'paid_amount', p.paid_amount, 'paid_currency', p.paid_currency,
                                'paid_at', CONCAT(DATE_FORMAT(p.paid_at, '%Y-%m-%dT%H:%i:%s.%f'), 'Z'))
               FROM payments p WHERE p.out_trade_no = o.order_id) AS payment_json
       FROM orders o WHERE o.order_id = ? FOR UPDATE`,
    [orderId],
  )) as [Record<string, unknown>[]];
  const row = rows[0];
  if (!row) return undefined;
  const lines = jsonColumn<{ sku: string; quantity: number; unit_price: number }[]>(row.lines_json) ?? [];
  const payment = jsonColumn<{
    trade_no: string | null;
    paid_amount: number | null;
    paid_currency: string | null;
    paid_at: string | null;
  }>(row.payment_json);
  return {
    orderId,
    status: row.status as string,
    userId: row.user_id as string,
    amount: Number(row.amount),
    currency: row.currency as string,
    provider: row.provider as string,
    paidTradeNo: (row.paid_trade_no as string | null) ?? null,
    // In SKU order (binary collation), as the receipt has always listed them.
    lines: bySkuOrder(
      lines.map((l) => ({ sku: l.sku, quantity: Number(l.quantity), unitPrice: Number(l.unit_price) })),
    ),
    payment: {
      tradeNo: payment?.trade_no ?? null,
      paidAmount: payment?.paid_amount == null ? null : Number(payment.paid_amount),
      paidCurrency: payment?.paid_currency ?? null,
      // DATETIME(3) printed with %f has six digits; an ISO string has three.
      paidAt: payment?.paid_at ? new Date(payment.paid_at.replace(/(\.\d{3})\d*Z$/, '$1Z')).toISOString() : null,
    },
  };
}

/**
 * Queues the receipt of a PAID order with its timeline entry, in one transaction. Idempotent: the order row is locked,
 * and the unique (topic, message_key) key refuses a second message for the order (a retried attempt whose commit
 * succeeded): nothing more to do. An order that is not PAID gets no receipt.
 */
export async function recordPaymentReceipt(db: Knex, orderId: string): Promise<PaymentReceiptResult> {
  return db.transaction(async (trx) => {
    const order = await lockOrderForReceipt(trx, orderId);
    if (!order) return { written: false, reason: 'NOT_PAID' };
    const events = new OrderEventBatch(orderId);
    const result = await queueReceiptIn(trx, order, events);
    await events.write(trx);
    return result;
  });
}

/**
 * The receipt inside the caller's transaction, the order locked and read by lockOrderForReceipt (settlePaid passes
 * the order as its own transaction has just made it: PAID, with the payment it recorded). One INSERT: a duplicate key
 * means the receipt was already queued (InnoDB rolls back only that statement).
 */
export async function queueReceiptIn(
  trx: Knex.Transaction,
  order: ReceiptOrder,
  events: OrderEventBatch,
): Promise<PaymentReceiptResult> {
  if (order.status !== 'PAID') return { written: false, reason: 'NOT_PAID' };
  const receipt = receiptMessage(order);
  try {
    await trx('outbox').insert(receipt.row);
  } catch (err) {
    if ((err as { code?: string }).code === 'ER_DUP_ENTRY') return { written: false, reason: 'ALREADY_QUEUED' };
    throw err;
  }
  events.add(receipt.eventType, receipt.event);
  return { written: true };
}

/** An outbox row and the timeline entry (type, message) that says it was queued. */
export interface OutboxMessage {
  row: { topic: string; message_key: string; payload: string };
  eventType: string;
  event: string;
}

/** The receipt of a PAID order as its outbox row, and its timeline message. */
export function receiptMessage(order: ReceiptOrder): OutboxMessage {
  const paidAmount = order.payment.paidAmount ?? order.amount;
  const paidCurrency = order.payment.paidCurrency ?? order.currency;
  const tradeNo = order.paidTradeNo ?? order.payment.tradeNo ?? null;
  return {
    row: {
      topic: PAYMENT_RECEIPT_TOPIC,
      message_key: order.orderId,
      payload: JSON.stringify({
        orderId: order.orderId,
        userId: order.userId,
        provider: order.provider,
        tradeNo,
        orderAmount: order.amount,
        paidAmount,
        currency: paidCurrency,
        paidAt: order.payment.paidAt,
        items: order.lines,
      }),
    },
    eventType: 'RECEIPT_QUEUED',
    event: `Payment receipt queued for the buyer (${paidAmount} ${paidCurrency}, trade ${tradeNo ?? 'unknown'})`,
  };
}
