/**
 * lateReviewOf, against the real test database: the late trade whose review holds an order, read from the entries
 * latePayment writes when it leaves the order for review (the same entries the API routes decisions by), and the
 * status the order had before. A run of that trade's workflow that finds the review its own takes it over
 * (test/workflow-money-defects.test.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { lateReviewOf, transitionOrder } from '../src/activities/orders';
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

test('a paid order a second late trade left in review names the latest trade, and PAID before it', async () => {
  const orderId = await closedOrder('PAID');
  await leftForReview(orderId, 'T-a', ['PAID']);
  // A second trade's entry after the first (the API routes decisions to the latest).
  await appendOrderEvent(db, orderId, 'LATE_PAYMENT_REFUND_FAILED', 'Payment T-b was not refunded', {
    tradeNo: 'T-b',
  });
  expect(await lateReviewOf(db, orderId)).toEqual({ tradeNo: 'T-b', from: 'PAID' });
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
