/**
 * Deadlines, closing races and money that arrives late: real dev server, real MySQL, real sandbox.
 * PAYMENT_TIMEOUT is a few seconds on `sys` so that deadlines pass during the test; a test that must pay before the
 * deadline uses `patient`, where nothing expires while it acts.
 */
import { WorkflowNotFoundError } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import { latePaymentWorkflowId, orderWorkflowId, statusQuery } from '../src/contracts/order';
import { testBundlePath } from './support/env';
import {
  createProduct,
  placeOrder as placeOrderFor,
  startSystem,
  stockOf,
  type TestSystem,
  waitFor,
  waitForStatus,
} from './support/system';

// The waits below are bounded generously: the dev server is shared and may answer slowly.
jest.setTimeout(120_000);

let sys: TestSystem;
let patient: TestSystem;

beforeAll(async () => {
  [sys, patient] = await Promise.all([
    // A generous update deadline: one test slows the provider down while the order is being placed.
    startSystem({
      PAYMENT_TIMEOUT: '4s',
      QUERY_FIRST_DELAY: '1s',
      QUERY_MAX_INTERVAL: '1s',
      PROVIDER_EXPIRY_MARGIN: '30s',
      TEMPORAL_UPDATE_TIMEOUT: '60s',
    }),
    startSystem({ PAYMENT_TIMEOUT: '10m', QUERY_FIRST_DELAY: '10m', QUERY_MAX_INTERVAL: '10m' }),
  ]);
}, 120_000);

afterAll(async () => {
  await sys?.stop();
  await patient?.stop();
});

afterEach(async () => {
  await Promise.all([sys, patient].map((s) => s.sandbox('POST', '/_control/reset')));
});

async function placeOrder(sku: string, on: TestSystem = sys): Promise<string> {
  return (await placeOrderFor(on, sku)).orderId as string;
}

test('an order nobody pays expires: provider payment CLOSED and stock back to available', async () => {
  const sku = await createProduct(sys, { stock: 3 });
  const orderId = await placeOrder(sku);
  expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 1, sold: 0 });
  const order = await waitForStatus(sys, orderId, ['EXPIRED'], 90_000);
  expect(order.statusReason).toBe('PAYMENT_TIMEOUT');
  expect((await sys.sandbox('GET', `/v1/payments/${orderId}`)).body.status).toBe('CLOSED');
  expect(await stockOf(sys, sku)).toEqual({ available: 3, reserved: 0, sold: 0 });
  const types = order.timeline.map((e: { type: string }) => e.type);
  expect(types.indexOf('PAYMENT_CLOSED')).toBeLessThan(types.indexOf('STOCK_RELEASED'));
  // The buyer can no longer pay a closed order.
  expect((await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {})).body.code).toBe('TRADE_CLOSED');
});

test('a buyer who pays between our deadline and our close call gets a PAID order', async () => {
  const sku = await createProduct(sys, { stock: 2 });
  // Slow the provider API down (8 s a call) before the order is placed: creating its payment outlasts the 4 s payment
  // window, so the deadline has passed when the workflow goes on, and its close call, made at once, waits 8 s at the
  // provider. The buyer pays in that time (the cashier is not slowed); the close then finds the payment.
  await sys.setFaults({ apiLatencyMs: 8_000 });
  const orderId = await placeOrder(sku);
  const handle = sys.client.workflow.getHandle(orderWorkflowId(orderId));
  await waitFor(async () => (await handle.query(statusQuery)).stage === 'CLOSING', {
    timeoutMs: 60_000,
    what: 'stage CLOSING',
  });
  const pay = await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  expect(pay.status).toBe(200);
  const order = await waitForStatus(sys, orderId, ['PAID', 'EXPIRED'], 90_000);
  expect(order.status).toBe('PAID');
  expect(order.timeline.map((e: { type: string }) => e.type)).toContain('CLOSE_FOUND_PAID');
  expect(await stockOf(sys, sku)).toEqual({ available: 1, reserved: 0, sold: 1 });
});

test('a buyer who paid after the close and escalates during the late watch is told the payment was found, and it is refunded at once, not when the watch ends', async () => {
  const sku = await createProduct(sys, { price: 3900, stock: 2 });
  const orderId = await placeOrder(sku);
  await waitForStatus(sys, orderId, ['EXPIRED'], 90_000);
  const handle = sys.client.workflow.getHandle(orderWorkflowId(orderId));
  await waitFor(
    async () => {
      const st = await handle.query(statusQuery);
      return st.stage === 'WATCHING_LATE_PAYMENT' ? st : undefined;
    },
    { what: 'the watch for a late payment' },
  );
  // The provider still takes the money (a QR closed before it was scanned), and its notification is lost.
  await sys.setFaults({ acceptPaymentAfterClose: true, dropNotifications: 1 });
  expect((await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {})).status).toBe(200);
  const r = await sys.http('POST', `/orders/${orderId}/escalate`, { note: 'I paid after all' });
  expect(r.status).toBe(200);
  expect(r.body).toMatchObject({ resolution: 'LATE_PAYMENT_FOUND', providerStatus: 'PAID' });
  const order = await waitForStatus(sys, orderId, ['REFUNDED'], 60_000);
  expect(order.statusReason).toBe('LATE_PAYMENT_REFUNDED');
  // Refunded while the watch still had time to run (30 s past the deadline): the escalation's query did it.
  const refunded = await sys.db('refunds').where({ order_id: orderId }).first('created_at');
  const expiresAt = (await sys.db('payments').where({ order_id: orderId }).first('expires_at')).expires_at as Date;
  expect(new Date(refunded.created_at).getTime()).toBeLessThan(new Date(expiresAt).getTime());
  expect((await sys.sandbox('GET', `/v1/payments/${orderId}`)).body).toMatchObject({
    status: 'REFUNDED',
    refundedAmount: 3900,
  });
  // The new branch (its patch marker in the history) replays.
  await handle.result();
  await Worker.runReplayHistory(
    { workflowBundle: { codePath: testBundlePath() }, replayName: 'late-watch-escalation' },
    await handle.fetchHistory(),
    handle.workflowId,
  );
});

test('a payment that arrives after the order expired is refunded automatically, once', async () => {
  const sku = await createProduct(sys, { price: 4200, stock: 2 });
  const orderId = await placeOrder(sku);
  await waitForStatus(sys, orderId, ['EXPIRED'], 90_000);
  // Like an Alipay QR closed before it was scanned, the provider still takes the money.
  await sys.setFaults({ acceptPaymentAfterClose: true });
  const pay = await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  expect(pay.status).toBe(200);
  const order = await waitForStatus(sys, orderId, ['REFUNDED'], 90_000);
  expect(order.statusReason).toBe('LATE_PAYMENT_REFUNDED');
  const provider = (await sys.sandbox('GET', `/v1/payments/${orderId}`)).body;
  expect(provider).toMatchObject({ status: 'REFUNDED', refundedAmount: 4200 });
  // Redelivering the notification must not refund again. The redelivery is answered once the API has stored it; wait
  // until both deliveries are stored and routed and every workflow that could refund this trade has finished.
  const [n] = (await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications;
  await sys.sandbox('POST', `/_control/notifications/${n.id}/redeliver`);
  await waitFor(
    async () => {
      const rows = await sys.db('notification_inbox').where({ out_trade_no: orderId }).select('status', 'deliveries');
      return (
        rows.length > 0 &&
        rows.every((r) => r.status !== 'RECEIVED') &&
        rows.reduce((sum, r) => sum + Number(r.deliveries), 0) >= 2
      );
    },
    { timeoutMs: 60_000, what: 'both deliveries stored and routed' },
  );
  await sys.client.workflow.getHandle(orderWorkflowId(orderId)).result();
  await sys.client.workflow
    .getHandle(latePaymentWorkflowId('sandbox', orderId, pay.body.tradeNo))
    .result()
    .catch((err: unknown) => {
      // Refunded by the order's own workflow while it still watched: no late-payment workflow was needed.
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    });
  const refunds = await sys.db('refunds').where({ order_id: orderId });
  expect(refunds).toHaveLength(1);
  expect(refunds[0]).toMatchObject({ status: 'SUCCEEDED', amount: 4200 });
  expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 0 });
});

test('a notification redelivered after the order was paid is acknowledged and refunds nothing', async () => {
  // On `patient`: the buyer must pay before the deadline, whatever the server's pace.
  const s = patient;
  const sku = await createProduct(s, { stock: 2 });
  const orderId = await placeOrder(sku, s);
  expect((await s.sandbox('POST', `/v1/payments/${orderId}/pay`, {})).status).toBe(200);
  await waitForStatus(s, orderId, ['PAID'], 60_000);
  await s.client.workflow.getHandle(orderWorkflowId(orderId)).result();
  const [n] = (await s.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications;
  await s.sandbox('POST', `/_control/notifications/${n.id}/redeliver`);
  const after = (await s.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications[0];
  expect(after.lastStatus).toBe(200);
  // The late-payment path (what a notification for a finished workflow is routed to) recognises the trade that paid
  // the order.
  const tradeNo = (await s.http('GET', `/orders/${orderId}`)).body.payment.tradeNo;
  const late = await s.client.workflow.execute('latePayment', {
    workflowId: latePaymentWorkflowId('sandbox', orderId, tradeNo),
    taskQueue: s.config.taskQueue,
    args: [{ provider: 'sandbox', outTradeNo: orderId, tradeNo }],
  });
  expect(late).toMatchObject({ outcome: 'ALREADY_CONFIRMED' });
  expect(await s.db('refunds').where({ order_id: orderId })).toHaveLength(0);
  expect((await s.http('GET', `/orders/${orderId}`)).body.status).toBe('PAID');
});

test('a payment refunded at the provider before its callback arrived (lost) is never confirmed: the query finds it refunded and the order goes to review, stock still held', async () => {
  const sku = await createProduct(sys, { stock: 2 });
  await sys.setFaults({ dropNotifications: 1 });
  const orderId = await placeOrder(sku);
  expect((await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {})).status).toBe(200);
  const { amount } = (await sys.sandbox('GET', `/v1/payments/${orderId}`)).body as { amount: number };
  // Refunded in full from the merchant's console before the workflow's first query (1 s).
  const refund = await sys.sandbox('POST', '/v1/refunds', {
    outTradeNo: orderId,
    outRefundNo: `console-${orderId}`,
    amount,
  });
  expect(refund.status).toBe(200);
  const order = await waitForStatus(sys, orderId, ['NEEDS_REVIEW', 'PAID'], 90_000);
  expect(order.status).toBe('NEEDS_REVIEW');
  expect(order.statusReason).toBe('PAYMENT_MISMATCH');
  expect(await stockOf(sys, sku)).toEqual({ available: 1, reserved: 1, sold: 0 });
  const fulfilment = await sys.db('orders').where({ order_id: orderId }).first('fulfilment_ready_at');
  expect(fulfilment.fulfilment_ready_at).toBeNull();
});
