/**
 * settlePaid in one MySQL transaction (src/activities/settle-paid.ts), against the real test database: the same
 * rows and timeline as the composition of the single steps (three transactions), all or nothing when a participant
 * refuses, idempotent when run again, and the round trips it saves counted from the pool's own query events.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { couponParticipant, pointsParticipant } from '../src/activities/benefits';
import { createActivities } from '../src/activities';
import { HAND_OFF_WITHOUT_COOLING_OFF, type OrderStepInput, composeOrderSteps } from '../src/activities/order-steps';
import { PAYMENT_RECEIPT_TOPIC } from '../src/activities/receipts';
import { settlePaid } from '../src/activities/settle-paid';
import { createDb } from '../src/db/knex';
import { tryReserveStock } from '../src/db/stock';
import { TEST_ENV } from './support/env';
import { statementsOf } from './support/statements';

let db: Knex;
let activities: ReturnType<typeof createActivities>;

beforeAll(() => {
  db = createDb(TEST_ENV.databaseUrl, { poolMax: 4 });
  activities = createActivities({ db, providers: {} });
});

afterAll(async () => {
  await db?.destroy();
});

const uid = (prefix: string) => `${prefix}-${randomBytes(6).toString('hex')}`;

interface Placed {
  input: OrderStepInput;
  sku: string;
  coupon: string;
  userId: string;
}

/**
 * An order as it stands when its payment arrives: stock, coupon and points tried, the order AWAITING_PAYMENT with a
 * PENDING payment row. `quantity` 2 of one SKU at 1,000; coupon 300 off; 200 points.
 */
async function placeAwaitingPayment(): Promise<Placed> {
  const orderId = uid('settle');
  const userId = uid('user');
  const sku = uid('sku');
  const coupon = uid('cpn');
  await db('products').insert({ sku, name: 'settle test', price: 1000, currency: 'CNY' });
  await db('stock').insert({ sku, available: 5, reserved: 0, sold: 0, total_in: 5, buckets: 1 });
  await db('coupons').insert({ code: coupon, user_id: userId, discount: 300, currency: 'CNY', status: 'AVAILABLE' });
  await db('user_points').insert({ user_id: userId, available: 500, frozen: 0, spent: 0, total_in: 500 });
  await db('orders').insert({
    order_id: orderId,
    user_id: userId,
    status: 'AWAITING_PAYMENT',
    amount: 1500,
    currency: 'CNY',
    provider: 'sandbox',
    coupon_code: coupon,
    discount: 300,
    points_used: 200,
    subtotal: 2000,
  });
  await db('order_lines').insert({ order_id: orderId, sku, quantity: 2, unit_price: 1000 });
  await db('payments').insert({
    out_trade_no: orderId,
    order_id: orderId,
    provider: 'sandbox',
    merchant_id: 'm-1',
    trade_no: `T${orderId}`,
    status: 'PENDING',
    amount: 1500,
    currency: 'CNY',
    payment_url: 'http://sandbox/pay',
    expires_at: new Date(Date.now() + 600_000),
  });
  await tryReserveStock(db, orderId, [{ sku, quantity: 2 }]);
  await couponParticipant.try(db, { orderId, resource: coupon }, { userId, quantity: 0 });
  await pointsParticipant.try(db, { orderId, resource: userId }, { userId, quantity: 200 });
  const input: OrderStepInput = {
    orderId,
    userId,
    lines: [{ sku, quantity: 2 }],
    benefits: [
      { participant: 'coupon', resource: coupon, quantity: 300 },
      { participant: 'points', resource: userId, quantity: 200 },
    ],
    transition: {
      from: ['AWAITING_PAYMENT'],
      to: 'PAID',
      reason: 'PAID_VIA_CALLBACK',
      event: { type: 'ORDER_PAID', message: 'Paid (test)' },
      payment: {
        source: 'callback',
        tradeNo: `T${orderId}`,
        amount: 1500,
        currency: 'CNY',
        merchantId: 'm-1',
        paidAt: '2026-11-30T12:34:56.789Z',
      },
    },
  };
  return { input, sku, coupon, userId };
}

/** Everything settlePaid touches, in a form two orders can be compared by (ids and times left out). */
async function snapshot(p: Placed) {
  const { orderId } = p.input;
  const order = await db('orders')
    .where({ order_id: orderId })
    .first('status', 'status_reason', 'paid_trade_no', 'fulfilment_ready_at');
  const payment = await db('payments')
    .where({ out_trade_no: orderId })
    .first('status', 'trade_no', 'paid_amount', 'paid_currency', 'paid_at');
  const stock = await db('stock').where({ sku: p.sku }).first('available', 'reserved', 'sold');
  const fences = await db('tcc_fence').where({ xid: orderId }).orderBy('participant').select('participant', 'status');
  const coupon = await db('coupons').where({ code: p.coupon }).first('status');
  const points = await db('user_points').where({ user_id: p.userId }).first('available', 'frozen', 'spent');
  const receipts = (await db('outbox').where({ topic: PAYMENT_RECEIPT_TOPIC, message_key: orderId }).select('payload'))
    .map((r: { payload: string }) => JSON.parse(r.payload) as Record<string, unknown>)
    .map((r) => ({
      ...r,
      orderId: 'ORDER',
      userId: 'USER',
      tradeNo: r.tradeNo === `T${orderId}`,
      items: (r.items as { sku: string }[]).map((i) => ({ ...i, sku: i.sku === p.sku })),
    }));
  const fulfilment = (
    await db('outbox').where({ topic: 'order.fulfilment_ready', message_key: orderId }).select('payload')
  )
    .map((r: { payload: string }) => JSON.parse(r.payload) as Record<string, unknown>)
    .map((r) => ({
      ...r,
      orderId: r.orderId === orderId,
      userId: r.userId === p.userId,
      items: (r.items as { sku: string }[]).map((i) => ({ ...i, sku: i.sku === p.sku })),
    }));
  const events = (await db('order_events').where({ order_id: orderId }).orderBy('id').select('type', 'message')).map(
    (e: { type: string; message: string }) => ({
      type: e.type,
      message: e.message
        .replaceAll(orderId, 'ORDER')
        .replaceAll(p.coupon, 'COUPON')
        .replaceAll(p.userId, 'USER')
        .replaceAll(p.sku, 'SKU'),
    }),
  );
  return {
    order: {
      ...order,
      paid_trade_no: order.paid_trade_no === `T${orderId}`,
      fulfilment_ready_at: order.fulfilment_ready_at !== null,
    },
    payment: { ...payment, trade_no: typeof payment.trade_no },
    stock,
    fences,
    coupon,
    points,
    receipts,
    fulfilment,
    events,
  };
}

test('leaves exactly what the three single steps leave, in one transaction and fewer round trips', async () => {
  const one = await placeAwaitingPayment();
  const composed = await placeAwaitingPayment();
  const oneStatements = await statementsOf(db, () => settlePaid(db, one.input));
  // The composition over the single activities: confirmStock, confirmBenefit x2, transitionOrder, recordPaymentReceipt.
  const composedStatements = await statementsOf(db, () => composeOrderSteps(activities).settlePaid(composed.input));

  const a = await snapshot(one);
  expect(a).toEqual(await snapshot(composed));
  expect(a.order).toEqual({
    status: 'PAID',
    status_reason: 'PAID_VIA_CALLBACK',
    paid_trade_no: true,
    fulfilment_ready_at: false,
  });
  expect(a.fulfilment).toEqual([]);
  expect(a.stock).toEqual({ available: 3, reserved: 0, sold: 2 });
  expect(a.fences.map((f: { status: string }) => f.status)).toEqual(['CONFIRMED', 'CONFIRMED', 'CONFIRMED']);
  expect(a.coupon).toEqual({ status: 'USED' });
  expect(a.points).toEqual({ available: 300, frozen: 0, spent: 200 });
  expect(a.receipts).toEqual([
    expect.objectContaining({
      paidAmount: 1500,
      orderAmount: 1500,
      currency: 'CNY',
      paidAt: '2026-11-30T12:34:56.789Z',
      items: [{ sku: true, quantity: 2, unitPrice: 1000 }],
      tradeNo: true,
    }),
  ]);
  expect(a.events.map((e) => e.type).slice(-5)).toEqual([
    'STOCK_CONFIRMED',
    'COUPON_CONFIRMED',
    'POINTS_CONFIRMED',
    'ORDER_PAID',
    'RECEIPT_QUEUED',
  ]);

  // One BEGIN/COMMIT pair instead of five; the whole step in well under the composition's statements.
  const begins = (s: string[]) => s.filter((q) => /^(BEGIN|START TRANSACTION)/i.test(q)).length;
  expect(begins(oneStatements)).toBe(1);
  expect(begins(composedStatements)).toBe(5);
  expect(oneStatements.length).toBeLessThanOrEqual(composedStatements.length - 12);
});

test('one line, no coupon or points: at most 10 statements, BEGIN and COMMIT included', async () => {
  const p = await placeAwaitingPayment();
  // The benefits confirmed elsewhere already: settlePaid is then the stock, the order, the receipt.
  await couponParticipant.confirm(db, { orderId: p.input.orderId, resource: p.coupon });
  await pointsParticipant.confirm(db, { orderId: p.input.orderId, resource: p.userId });
  const statements = await statementsOf(db, () => settlePaid(db, { ...p.input, benefits: [] }));
  expect(statements.length).toBeLessThanOrEqual(10);
  expect((await db('orders').where({ order_id: p.input.orderId }).first('status')).status).toBe('PAID');
});

test('run again, it changes nothing: no second receipt, no new timeline entry, stock sold once', async () => {
  const p = await placeAwaitingPayment();
  expect(await settlePaid(db, p.input)).toEqual({ changed: true, status: 'PAID' });
  const first = await snapshot(p);
  expect(await settlePaid(db, p.input)).toEqual({ changed: false, status: 'PAID' });
  expect(await snapshot(p)).toEqual(first);
});

test('all or nothing: a participant that refuses leaves the stock, the order and the outbox as they were', async () => {
  const p = await placeAwaitingPayment();
  const before = await snapshot(p);
  // The points were released (a cancel won the race): their Confirm is a TCC_CONFLICT.
  await pointsParticipant.cancel(db, { orderId: p.input.orderId, resource: p.userId });
  const afterCancel = await snapshot(p);
  await expect(settlePaid(db, p.input)).rejects.toMatchObject({ type: 'TCC_CONFLICT' });
  const after = await snapshot(p);
  expect(after).toEqual(afterCancel);
  expect(after.order).toEqual(before.order);
  expect(after.stock).toEqual({ available: 3, reserved: 2, sold: 0 });
  expect(after.coupon).toEqual({ status: 'FROZEN' });
  expect(after.receipts).toEqual([]);
});

test('an order already PAID by an earlier step gets its receipt from the payments row', async () => {
  const p = await placeAwaitingPayment();
  await activities.confirmStock({ orderId: p.input.orderId, lines: p.input.lines });
  await activities.transitionOrder({ orderId: p.input.orderId, ...p.input.transition });
  expect(await settlePaid(db, p.input)).toEqual({ changed: false, status: 'PAID' });
  const s = await snapshot(p);
  expect(s.receipts).toEqual([expect.objectContaining({ paidAmount: 1500, paidAt: '2026-11-30T12:34:56.789Z' })]);
  expect(s.stock).toEqual({ available: 3, reserved: 0, sold: 2 });
  expect(s.coupon).toEqual({ status: 'USED' });
});

test('a review approving an order that was PAID before it went to review: the receipt it has is kept, nothing fails', async () => {
  const p = await placeAwaitingPayment();
  await settlePaid(db, p.input);
  const approve: OrderStepInput = {
    ...p.input,
    transition: {
      from: ['NEEDS_REVIEW'],
      to: 'PAID',
      reason: 'REVIEW_APPROVED',
      event: { type: 'ORDER_PAID', message: 'Approved (test)' },
    },
  };
  // Twice (without, then with the hand-off): the buyer's refund failed after PAID, so the order went to review with
  // its receipt queued; an operator approves.
  for (const input of [approve, { ...approve, handOff: true }]) {
    await activities.transitionOrder({
      orderId: p.input.orderId,
      ...approve.transition,
      from: ['PAID'],
      to: 'NEEDS_REVIEW',
    });
    expect(await settlePaid(db, input)).toEqual({ changed: true, status: 'PAID' });
  }
  const s = await snapshot(p);
  expect(s.receipts).toHaveLength(1);
  expect(s.fulfilment).toHaveLength(1);
  expect(s.order).toMatchObject({ status: 'PAID', status_reason: 'REVIEW_APPROVED', fulfilment_ready_at: true });
});

describe('handOff (an order without a cooling-off window)', () => {
  const handingOff = (p: Placed): OrderStepInput => ({ ...p.input, handOff: true });

  test('hands the order to fulfilment with PAID in the same transaction, leaving what settlePaid then the hand-off leave', async () => {
    const one = await placeAwaitingPayment();
    const composed = await placeAwaitingPayment();
    const oneStatements = await statementsOf(db, () => settlePaid(db, handingOff(one)));
    const composedStatements = await statementsOf(db, () =>
      composeOrderSteps(activities).settlePaid(handingOff(composed)),
    );
    const a = await snapshot(one);
    expect(a).toEqual(await snapshot(composed));
    expect(a.order).toMatchObject({ status: 'PAID', fulfilment_ready_at: true });
    expect(a.fulfilment).toEqual([
      { orderId: true, userId: true, amount: 1500, currency: 'CNY', items: [{ sku: true, quantity: 2 }] },
    ]);
    expect(a.events.map((e) => e.type).slice(-3)).toEqual(['ORDER_PAID', 'RECEIPT_QUEUED', 'FULFILMENT_READY']);
    expect(a.events.at(-1)!.message).toBe(HAND_OFF_WITHOUT_COOLING_OFF);
    // The hand-off costs no statement: its mark rides on the status update, its message on the receipt's INSERT, its
    // timeline entry on the batch.
    const plain = await placeAwaitingPayment();
    const plainStatements = await statementsOf(db, () => settlePaid(db, plain.input));
    expect(oneStatements.length).toBe(plainStatements.length);
    expect(oneStatements.filter((q) => /^insert into `outbox`/i.test(q))).toHaveLength(1);
    expect(oneStatements.filter((q) => /^(BEGIN|START TRANSACTION)/i.test(q))).toHaveLength(1);
    expect(composedStatements.length).toBeGreaterThan(oneStatements.length);
  });

  test('run again, it changes nothing: one fulfilment message, one timeline entry', async () => {
    const p = await placeAwaitingPayment();
    expect(await settlePaid(db, handingOff(p))).toEqual({ changed: true, status: 'PAID' });
    const first = await snapshot(p);
    expect(first.fulfilment).toHaveLength(1);
    expect(await settlePaid(db, handingOff(p))).toEqual({ changed: false, status: 'PAID' });
    expect(await snapshot(p)).toEqual(first);
  });

  test('an order already handed off (by the handOff step) is not handed off twice', async () => {
    const p = await placeAwaitingPayment();
    await settlePaid(db, p.input);
    expect(await activities.handOff(p.input.orderId)).toEqual({ written: true });
    const before = await snapshot(p);
    expect(await settlePaid(db, handingOff(p))).toEqual({ changed: false, status: 'PAID' });
    expect(await snapshot(p)).toEqual(before);
    expect(before.fulfilment).toHaveLength(1);
  });

  test('an order PAID by an earlier step, not yet handed off, is handed off once through the guard', async () => {
    const p = await placeAwaitingPayment();
    await activities.confirmStock({ orderId: p.input.orderId, lines: p.input.lines });
    await activities.transitionOrder({ orderId: p.input.orderId, ...p.input.transition });
    expect(await settlePaid(db, handingOff(p))).toEqual({ changed: false, status: 'PAID' });
    const s = await snapshot(p);
    expect(s.order).toMatchObject({ status: 'PAID', fulfilment_ready_at: true });
    expect(s.fulfilment).toHaveLength(1);
    expect(s.receipts).toHaveLength(1);
    expect(s.events.map((e) => e.type).slice(-2)).toEqual(['RECEIPT_QUEUED', 'FULFILMENT_READY']);
  });

  test('all or nothing: a participant that refuses leaves no fulfilment message and the order unmarked', async () => {
    const p = await placeAwaitingPayment();
    await pointsParticipant.cancel(db, { orderId: p.input.orderId, resource: p.userId });
    await expect(settlePaid(db, handingOff(p))).rejects.toMatchObject({ type: 'TCC_CONFLICT' });
    const after = await snapshot(p);
    expect(after.order).toMatchObject({ status: 'AWAITING_PAYMENT', fulfilment_ready_at: false });
    expect(after.fulfilment).toEqual([]);
  });
});

describe('a refund the provider reported failed', () => {
  /** A refund of trade T1 (1,000 CNY) of the order, as refundPayment and the refund notices leave it. */
  const refundRow = (orderId: string, outRefundNo: string, status: string, createdAt = new Date()) =>
    db('refunds').insert({
      out_refund_no: outRefundNo,
      order_id: orderId,
      out_trade_no: orderId,
      provider: 'wechat',
      trade_no: 'T1',
      amount: 1000,
      currency: 'CNY',
      reason: 'review refund',
      status,
      created_at: createdAt,
    });
  /** An order in review whose refund (made by a review decision) the provider has just reported failed. */
  async function reviewWithFailedRefund(): Promise<string> {
    const orderId = uid('rfail');
    await db('orders').insert({
      order_id: orderId,
      user_id: 'u',
      status: 'NEEDS_REVIEW',
      amount: 1000,
      currency: 'CNY',
      provider: 'wechat',
    });
    await refundRow(orderId, `rf-${orderId}-T1`, 'FAILED', new Date(Date.now() - 60_000));
    return orderId;
  }
  const toRefunded = (orderId: string) => ({
    orderId,
    from: ['NEEDS_REVIEW' as const],
    to: 'REFUNDED' as const,
    reason: 'REVIEW_REFUNDED',
    event: { type: 'ORDER_REFUNDED', message: 'refunded after a review' },
  });

  test('keeps the order from being marked REFUNDED (the notice came between the refund step and the status change)', async () => {
    const orderId = await reviewWithFailedRefund();
    await expect(activities.transitionOrder(toRefunded(orderId))).rejects.toMatchObject({
      type: 'REFUND_FAILED_AT_PROVIDER',
      nonRetryable: true,
    });
    // A late trade refunded with the order kept PAID says the same about its refund.
    await expect(
      activities.transitionOrder({ ...toRefunded(orderId), to: 'PAID', reason: 'LATE_TRADE_REFUNDED' }),
    ).rejects.toMatchObject({ type: 'REFUND_FAILED_AT_PROVIDER' });
    expect(await db('orders').where({ order_id: orderId }).first('status')).toEqual({ status: 'NEEDS_REVIEW' });
    // Approving (keeping the money) is not a refund: not refused.
    expect(
      await activities.transitionOrder({ ...toRefunded(orderId), to: 'PAID', reason: 'REVIEW_APPROVED' }),
    ).toMatchObject({ changed: true, status: 'PAID' });
  });

  test('a later refund that succeeded (the operator named the amount, under its own number) lets the order be REFUNDED', async () => {
    const orderId = await reviewWithFailedRefund();
    await refundRow(orderId, `rv1000-${orderId}-T1`, 'SUCCEEDED');
    expect(await activities.transitionOrder(toRefunded(orderId))).toMatchObject({ changed: true, status: 'REFUNDED' });
  });
});

test('a payment whose amount and currency the provider did not report goes to review with them unknown, not stuck on the columns', async () => {
  // A query that found the trade paid but reported no amount (evidenceFromProvider: -1, 'unknown'): the order goes to
  // review for the mismatch. Before, the payments row refused -1 in its unsigned column on every retry, and the order
  // stayed AWAITING_PAYMENT, paid, for good (seen failing: out of range).
  const { input } = await placeAwaitingPayment();
  const unreported = {
    source: 'query' as const,
    tradeNo: 'T-unreported',
    amount: -1,
    currency: 'unknown',
    merchantId: 'unknown',
    paidAt: new Date().toISOString(),
  };
  const done = await activities.transitionOrder({
    orderId: input.orderId,
    from: ['AWAITING_PAYMENT'],
    to: 'NEEDS_REVIEW',
    reason: 'AMOUNT_MISMATCH',
    payment: unreported,
    event: { type: 'ORDER_NEEDS_REVIEW', message: 'Payment does not match the order' },
  });
  expect(done).toEqual({ changed: true, status: 'NEEDS_REVIEW' });
  expect(
    await db('payments')
      .where({ out_trade_no: input.orderId })
      .first('status', 'trade_no', 'paid_amount', 'paid_currency'),
  ).toEqual({ status: 'PAID', trade_no: 'T-unreported', paid_amount: null, paid_currency: null });
  // An operator approves it as the order's payment: the buyer's receipt states the order's amount, never "-1 unknown".
  const approved = await settlePaid(db, {
    ...input,
    transition: {
      from: ['NEEDS_REVIEW'],
      to: 'PAID',
      reason: 'REVIEW_APPROVED',
      event: { type: 'ORDER_PAID', message: 'Approved (test)' },
      payment: unreported,
    },
  });
  expect(approved).toEqual({ changed: true, status: 'PAID' });
  const [receipt] = await db('outbox')
    .where({ topic: PAYMENT_RECEIPT_TOPIC, message_key: input.orderId })
    .select('payload');
  expect(JSON.parse(receipt.payload)).toMatchObject({ paidAmount: 1500, currency: 'CNY', tradeNo: 'T-unreported' });
});
