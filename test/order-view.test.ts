/**
 * GET /orders/:id's read (OrderService.get) in one statement: the order, its payment, its lines and its timeline, as
 * a plain read of each would give them: lines in primary-key order, the timeline in insertion order with
 * millisecond UTC times, texts byte for byte, no payment before one exists, null for an unknown order.
 */
import { randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type { Knex } from 'knex';
import { OrderService } from '../src/client/orders-service';
import { createDb } from '../src/db/knex';
import { TEST_ENV } from './support/env';

let db: Knex;
let orders: OrderService;

beforeAll(() => {
  db = createDb(TEST_ENV.databaseUrl, { poolMax: 2 });
  // No live stage is asked for, so the Temporal client is never used.
  orders = new OrderService({ db, client: {} as Client, config: {} as never });
});
afterAll(async () => {
  await db?.destroy();
});

test('the one read gives what plain reads of the order, payment, lines and timeline give', async () => {
  const orderId = `ord_view${randomBytes(8).toString('hex')}`;
  const [skuB, skuA] = [`view-b-${orderId}`, `view-a-${orderId}`];
  for (const sku of [skuA, skuB]) await db('products').insert({ sku, name: sku, price: 100, currency: 'CNY' });
  await db('orders').insert({
    order_id: orderId,
    user_id: 'u-view',
    status: 'AWAITING_PAYMENT',
    amount: 350,
    currency: 'CNY',
    provider: 'sandbox',
    subtotal: 350,
    deadline: new Date('2026-11-30T10:15:00.123Z'),
  });
  // Lines written in the opposite of their key order.
  await db('order_lines').insert([
    { order_id: orderId, sku: skuB, quantity: 1, unit_price: 150 },
    { order_id: orderId, sku: skuA, quantity: 2, unit_price: 100 },
  ]);
  const texts = ['Order created', 'He said "pay" \\ now; 已预留库存 ✓', 'line one\nline two'];
  const times = ['2026-11-30T10:00:00.001Z', '2026-11-30T10:00:00.999Z', '2026-11-30T09:59:59.500Z'];
  for (let i = 0; i < texts.length; i++)
    await db('order_events').insert({
      order_id: orderId,
      type: `STEP_${i}`,
      message: texts[i],
      at: new Date(times[i]!),
    });

  const before = await orders.get(orderId);
  expect(before).toMatchObject({
    orderId,
    userId: 'u-view',
    status: 'AWAITING_PAYMENT',
    amount: 350,
    currency: 'CNY',
    payment: null,
    deadline: '2026-11-30T10:15:00.123Z',
    items: [
      { sku: skuA, quantity: 2, unitPrice: 100 },
      { sku: skuB, quantity: 1, unitPrice: 150 },
    ],
    // Insertion order (by id), whatever the times say.
    timeline: texts.map((message, i) => ({ at: times[i], type: `STEP_${i}`, message })),
  });

  await db('payments').insert({
    out_trade_no: orderId,
    order_id: orderId,
    provider: 'sandbox',
    merchant_id: 'm',
    trade_no: 'SBX-1',
    status: 'PAID',
    amount: 350,
    currency: 'CNY',
    paid_amount: 350,
    payment_url: 'http://127.0.0.1/pay/x',
    expires_at: new Date('2026-11-30T10:20:00Z'),
  });
  expect((await orders.get(orderId))?.payment).toEqual({
    provider: 'sandbox',
    paymentUrl: 'http://127.0.0.1/pay/x',
    expiresAt: '2026-11-30T10:15:00.123Z',
    status: 'PAID',
    tradeNo: 'SBX-1',
    paidAmount: 350,
  });
  expect(await orders.get(`ord_none${randomBytes(8).toString('hex')}`)).toBeNull();
});

test("a failed order's timeline shows the buyer a refusal and the provider's refusal as written, any other failure only by its type", async () => {
  const failed = async (reason: string, message: string) => {
    const orderId = `ord_fail${randomBytes(8).toString('hex')}`;
    await db('orders').insert({
      order_id: orderId,
      user_id: 'u-view',
      status: 'FAILED',
      status_reason: reason,
      amount: 100,
      currency: 'CNY',
      provider: 'sandbox',
      subtotal: 100,
    });
    await db('order_events').insert({ order_id: orderId, type: 'ORDER_FAILED', message: `Order failed: ${message}` });
    return (await orders.get(orderId))!.timeline.find((e) => e.type === 'ORDER_FAILED')!.message;
  };
  // A driver's text names hosts (or SQL): never shown to whoever holds the order id.
  expect(await failed('UNEXPECTED_ERROR', 'connect ECONNREFUSED 10.1.2.3:3306')).toBe(
    'Order failed: the order could not be set up (UNEXPECTED_ERROR)',
  );
  expect(await failed('Error', 'select * from `products` - Lock wait timeout exceeded')).toBe(
    'Order failed: the order could not be set up (PAYMENT_CREATION_FAILED)',
  );
  expect(await failed('OUT_OF_STOCK', 'not enough stock for sku-a')).toBe('Order failed: not enough stock for sku-a');
  expect(await failed('PROVIDER_REJECTED', 'sandbox refused: OUT_TRADE_NO_USED')).toBe(
    'Order failed: sandbox refused: OUT_TRADE_NO_USED',
  );
});

test("an order's timeline never shows a failure's raw text, nor an operator's name or note; a mismatch and the provider's answer are shown as written", async () => {
  const orderId = `ord_revw${randomBytes(8).toString('hex')}`;
  await db('orders').insert({
    order_id: orderId,
    user_id: 'u-view',
    status: 'NEEDS_REVIEW',
    status_reason: 'REFUND_FAILED',
    amount: 100,
    currency: 'CNY',
    provider: 'sandbox',
    subtotal: 100,
  });
  const leak = 'connect ECONNREFUSED 10.1.2.3:3306';
  const written = [
    ['ORDER_NEEDS_REVIEW', `Automatic handling stopped (REFUND_FAILED: ${leak}); an operator must decide`],
    ['REVIEW_DECISION_FAILED', `alice@shop's decision to refund could not be carried out (ACTIVITY_FAILED: ${leak})`],
    ['REVIEW_REMINDER', `Still waiting for a review decision: the refund decision failed: ${leak}`],
    ['LATE_PAYMENT_REFUND_FAILED', `Payment T1 arrived after the order was EXPIRED and was not refunded: ${leak}`],
    [
      'LATE_PAYMENT_WAITS_FOR_REVIEW',
      `Payment T4 arrived after the order was closed and was not refunded (${leak}); the order is in review for REFUND_FAILED, so this payment's review opens once that is settled`,
    ],
    ['ORDER_NEEDS_REVIEW', `Late payment T1 could not be refunded (${leak}); an operator must decide`],
    ['ORDER_PAID', 'Approved by alice: over-payment kept, see ticket on 10.1.2.3'],
    ['ORDER_REFUNDED', 'Refunded by alice: buyer called'],
    [
      'REFUNDED',
      'Refunded 100 CNY (minor units) of the order payment at sandbox: review refund by alice: buyer called',
    ],
    ['LATE_PAYMENT_REFUNDED_BY_REVIEW', 'alice had late payment T1 refunded (100 CNY): second payment'],
    // Refund notices write the provider's failure text and what an operator must check.
    [
      'REFUND_FAILED',
      `Refund rf-1 of 100 CNY (minor units) failed at wechat after it was accepted (REFUND.ABNORMAL: card frozen at 10.1.2.3): the buyer has not received this money`,
    ],
    [
      'REFUND_SUCCEEDED_AFTER_FAILURE',
      `Refund rf-1 that failed at wechat was reported succeeded afterwards: the review's refund rv-1 of it was already sent, so the buyer may have been paid twice: ask alice to recover the excess`,
    ],
    ['ORDER_PAID', 'alice identified T1 as the trade that paid the order: console shows it'],
    [
      'NOTIFICATION_NOT_CONFIRMED',
      `A notification claimed payment T2 (amount 99 != 100) but sandbox could not be asked (${leak}); later queries will: ignored`,
    ],
    [
      'NOTIFICATION_NOT_CONFIRMED',
      'A notification claimed payment T3 (amount 99 != 100) but sandbox reports WAITING: ignored; the order keeps its deadline',
    ],
    [
      'ORDER_NEEDS_REVIEW',
      'Payment does not match the order (amount 99 != 100); kept for manual review, stock stays reserved',
    ],
  ];
  for (const [type, message] of written) await db('order_events').insert({ order_id: orderId, type, message });
  const shown = (await orders.get(orderId))!.timeline.map((e) => e.message);
  expect(shown).toHaveLength(written.length);
  for (const message of shown) {
    expect(message).not.toContain('10.1.2.3');
    expect(message).not.toContain('alice');
  }
  expect(shown.slice(-2)).toEqual(written.slice(-2).map(([, message]) => message));
  expect(shown[0]).toBe('Automatic handling stopped; the order is kept for a manual review');
  expect(shown).toContain('Refunded 100 CNY (minor units) of the order payment at sandbox: refunded after a review');
  expect(shown.join('\n')).not.toMatch(/frozen|paid twice|rv-1/);
});
