/**
 * lateReviewOf and enterLateReview, against the real test database: the late trade whose review holds an order, read
 * from the entry that opened the review (the same entry the API routes decisions by), and the status the order had
 * before; how latePayment opens that review, and waits while the order is in another. A run of that trade's workflow that finds the review its own takes it over
 * (test/workflow-money-defects.test.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { lateReviewOf, transitionOrder } from '../src/activities/orders';
import { enterLateReview, lateReviewTrade } from '../src/db/late-review';
import { autoRefundNo } from '../src/contracts/order';
import { createDb } from '../src/db/knex';
import { appendOrderEvent } from '../src/db/order-events';
import { TEST_ENV } from './support/env';

let db: Knex;

beforeAll(() => {
  db = createDb(TEST_ENV.databaseUrl, { poolMax: 2 });
});
afterAll(async () => {
  await db?.destroy();
});

async function closedOrder(status: string): Promise<string> {
  const orderId = `lr-${randomBytes(6).toString('hex')}`;
  await db('orders').insert({
    order_id: orderId,
    user_id: 'u-late-review',
    status,
    amount: 1000,
    currency: 'CNY',
    provider: 'sandbox',
  });
  return orderId;
}

/** What latePayment's leaveForReview writes: its entry naming the trade, then the order to review. */
async function leftForReview(orderId: string, tradeNo: string, from: ('EXPIRED' | 'PAID')[]) {
  await appendOrderEvent(db, orderId, 'LATE_PAYMENT_REFUND_FAILED', `Payment ${tradeNo} was not refunded`, {
    tradeNo,
    provider: 'sandbox',
  });
  await transitionOrder(db, {
    orderId,
    from,
    to: 'NEEDS_REVIEW',
    reason: 'LATE_PAYMENT_REFUND_FAILED',
    event: { type: 'ORDER_NEEDS_REVIEW', message: `Late payment ${tradeNo} could not be refunded`, data: { tradeNo } },
  });
}

test("an order a late trade left in review names that trade and the order's status before the review", async () => {
  const orderId = await closedOrder('EXPIRED');
  await leftForReview(orderId, 'T-first', ['EXPIRED']);
  expect(await lateReviewOf(db, orderId)).toEqual({ tradeNo: 'T-first', from: 'EXPIRED' });
});

test("a second late trade's entry written while the order is in the first trade's review does not take the first review's decisions", async () => {
  const orderId = await closedOrder('PAID');
  await leftForReview(orderId, 'T-a', ['PAID']);
  // Before late-payment-review-entry, a second trade wrote its entry and then failed to move the order (already in
  // review): the API routed the first review's decisions to the second trade's run (seen failing: T-b).
  await leftForReview(orderId, 'T-b', ['PAID']);
  expect(await lateReviewOf(db, orderId)).toEqual({ tradeNo: 'T-a', from: 'PAID' });
  expect(await lateReviewTrade(db, orderId)).toBe('T-a');
});

const entry = (orderId: string, tradeNo: string, seen: { status: 'EXPIRED' | 'PAID'; paidTradeNo?: string }) => ({
  orderId,
  tradeNo,
  provider: 'sandbox',
  why: 'refund refused',
  seen: { status: seen.status, paidTradeNo: seen.paidTradeNo ?? null },
});
const typesOf = async (orderId: string) =>
  (await db('order_events').where({ order_id: orderId }).orderBy('id').select('type')).map((r) => r.type);

test('enterLateReview moves a closed order to review with the entry naming the trade, in one step, and a retry answers the same', async () => {
  const orderId = await closedOrder('EXPIRED');
  const opened = { outcome: 'opened', from: 'EXPIRED', paidTradeNo: null };
  expect(await enterLateReview(db, entry(orderId, 'T-e', { status: 'EXPIRED' }))).toEqual(opened);
  expect(await db('orders').where({ order_id: orderId }).first('status', 'status_reason')).toEqual({
    status: 'NEEDS_REVIEW',
    status_reason: 'LATE_PAYMENT_REFUND_FAILED',
  });
  expect(await lateReviewOf(db, orderId)).toEqual({ tradeNo: 'T-e', from: 'EXPIRED' });
  // The activity retried after its commit (a lost answer): the same answer, nothing written again.
  expect(await enterLateReview(db, entry(orderId, 'T-e', { status: 'EXPIRED' }))).toEqual(opened);
  expect(await typesOf(orderId)).toEqual(['LATE_PAYMENT_REFUND_FAILED', 'ORDER_NEEDS_REVIEW']);
});

test('enterLateReview leaves an order in another review as it is (the trade is held, noted on the timeline), and opens once that review is settled', async () => {
  const orderId = await closedOrder('PAID');
  await db('orders').where({ order_id: orderId }).update({ paid_trade_no: 'T-own' });
  const paid = { status: 'PAID' as const, paidTradeNo: 'T-own' };
  await enterLateReview(db, entry(orderId, 'T-first', paid));
  expect(await enterLateReview(db, entry(orderId, 'T-second', paid))).toEqual({
    outcome: 'held',
    status: 'NEEDS_REVIEW',
    reason: 'LATE_PAYMENT_REFUND_FAILED',
  });
  // The first review keeps its decisions; the second trade is on the timeline.
  expect(await lateReviewOf(db, orderId)).toEqual({ tradeNo: 'T-first', from: 'PAID' });
  expect(await typesOf(orderId)).toEqual([
    'LATE_PAYMENT_REFUND_FAILED',
    'ORDER_NEEDS_REVIEW',
    'LATE_PAYMENT_WAITS_FOR_REVIEW',
  ]);
  // The first review is settled: the order is PAID again, and the second trade's review opens from PAID.
  await transitionOrder(db, {
    orderId,
    from: ['NEEDS_REVIEW'],
    to: 'PAID',
    reason: 'LATE_TRADE_REFUNDED',
    event: { type: 'LATE_PAYMENT_REFUNDED_BY_REVIEW', message: 'T-first refunded' },
  });
  expect(await enterLateReview(db, entry(orderId, 'T-second', paid))).toEqual({
    outcome: 'opened',
    from: 'PAID',
    paidTradeNo: 'T-own',
  });
  expect(await lateReviewOf(db, orderId)).toEqual({ tradeNo: 'T-second', from: 'PAID' });
});

test('enterLateReview opens no review on an order that changed since the run saw it (its paying trade named meanwhile)', async () => {
  const orderId = await closedOrder('PAID');
  await db('orders').where({ order_id: orderId }).update({ paid_trade_no: 'T-A' });
  expect(await enterLateReview(db, entry(orderId, 'T-Y', { status: 'PAID' }))).toEqual({
    outcome: 'changed',
    status: 'PAID',
    paidTradeNo: 'T-A',
  });
  expect(await db('orders').where({ order_id: orderId }).first('status')).toEqual({ status: 'PAID' });
  expect(await typesOf(orderId)).toEqual([]);
});

test('enterLateReview refuses for good an order that does not exist', async () => {
  await expect(enterLateReview(db, entry('no-such-order', 'T-n', { status: 'EXPIRED' }))).rejects.toMatchObject({
    type: 'ORDER_NOT_FOUND',
    nonRetryable: true,
  });
});

test("a failed refund settled while the order stays in the late trade's review does not change the status the review opened from", async () => {
  const orderId = await closedOrder('PAID');
  await leftForReview(orderId, 'T-c', ['PAID']);
  // What staysInReview writes when another refund's failure is settled meanwhile: an entry from NEEDS_REVIEW.
  await appendOrderEvent(db, orderId, 'ORDER_NEEDS_REVIEW', 'the order stays in review for its late trade', {
    from: 'NEEDS_REVIEW',
    reason: 'LATE_PAYMENT_REFUND_FAILED',
  });
  expect(await lateReviewOf(db, orderId)).toEqual({ tradeNo: 'T-c', from: 'PAID' });
});

test('an order in review for another reason, or not in review, is no late trade’s review', async () => {
  const other = await closedOrder('PAID');
  await transitionOrder(db, {
    orderId: other,
    from: ['PAID'],
    to: 'NEEDS_REVIEW',
    reason: 'REFUND_FAILED',
    event: { type: 'ORDER_NEEDS_REVIEW', message: 'a refund failed' },
  });
  expect(await lateReviewOf(db, other)).toBeNull();
  expect(await lateReviewOf(db, await closedOrder('EXPIRED'))).toBeNull();
  expect(await lateReviewOf(db, 'no-such-order')).toBeNull();
});

test("a late review's decision closes the trade's own automatic refund reported failed (refundAmount 0 closes it), and only that one", async () => {
  const orderId = await closedOrder('EXPIRED');
  const failedRefund = (tradeNo: string) => ({
    out_refund_no: autoRefundNo(orderId, tradeNo),
    order_id: orderId,
    out_trade_no: orderId,
    provider: 'sandbox',
    trade_no: tradeNo,
    amount: 1000,
    currency: 'CNY',
    reason: 'payment arrived after the order was EXPIRED',
    status: 'FAILED',
  });
  // The automatic refund of T-f was accepted, then reported failed: the run left the order for review.
  await db('refunds').insert(failedRefund('T-f'));
  await enterLateReview(db, entry(orderId, 'T-f', { status: 'EXPIRED' }));
  const decided = {
    orderId,
    from: ['NEEDS_REVIEW' as const],
    to: 'REFUNDED' as const,
    reason: 'LATE_PAYMENT_REFUNDED',
    event: {
      type: 'LATE_PAYMENT_REFUNDED_BY_REVIEW',
      message: 'ada had late payment T-f refunded (0 CNY): returned by bank transfer',
      data: { operator: 'ada', tradeNo: 'T-f' },
    },
  };
  // Refused over the failed refund before (seen failing: the review could never close with refundAmount 0).
  await expect(transitionOrder(db, decided)).rejects.toMatchObject({ type: 'REFUND_FAILED_AT_PROVIDER' });
  // Another trade's failed refund is not this decision's to close.
  await db('refunds').insert(failedRefund('T-other'));
  await expect(
    transitionOrder(db, { ...decided, closesFailedRefunds: [autoRefundNo(orderId, 'T-f')] }),
  ).rejects.toMatchObject({ type: 'REFUND_FAILED_AT_PROVIDER', message: expect.stringContaining('T-other') });
  await db('refunds')
    .where({ out_refund_no: autoRefundNo(orderId, 'T-other') })
    .del();
  // A failure recorded after the decision was taken (between its refund step and this change) is not the operator's
  // to have settled: still refused.
  const closing = { closesFailedRefunds: [autoRefundNo(orderId, 'T-f')] };
  await expect(
    transitionOrder(db, { ...decided, ...closing, failedBefore: new Date(Date.now() - 60_000).toISOString() }),
  ).rejects.toMatchObject({ type: 'REFUND_FAILED_AT_PROVIDER' });
  expect(
    await transitionOrder(db, { ...decided, ...closing, failedBefore: new Date(Date.now() + 1_000).toISOString() }),
  ).toEqual({
    changed: true,
    status: 'REFUNDED',
  });
  const settled = await db('order_events').where({ order_id: orderId, type: 'REFUND_FAILED_SETTLED_BY_REVIEW' });
  expect(settled).toHaveLength(1);
  expect(JSON.parse(settled[0].data)).toMatchObject({ failedOutRefundNo: autoRefundNo(orderId, 'T-f') });
});
