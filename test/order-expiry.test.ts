/**
 * Deadlines, closing races and money that arrives late: real dev server, real MySQL, real sandbox.
 * PAYMENT_TIMEOUT is a few seconds here so that deadlines pass during the test.
 */
import { latePaymentWorkflowId, orderWorkflowId, statusQuery } from '../src/contracts/order';
import { createProduct, placeOrder as placeOrderFor, startSystem, stockOf, type TestSystem, waitFor, waitForStatus } from './support/system';

let sys: TestSystem;

beforeAll(async () => {
  sys = await startSystem({ PAYMENT_TIMEOUT: '4s', QUERY_FIRST_DELAY: '1s', QUERY_MAX_INTERVAL: '1s', PROVIDER_EXPIRY_MARGIN: '30s' });
}, 60_000);

afterAll(async () => {
  await sys?.stop();
});

afterEach(async () => {
  await sys.sandbox('POST', '/_control/reset');
});

async function placeOrder(sku: string): Promise<string> {
  return (await placeOrderFor(sys, sku)).orderId as string;
}

test('an order nobody pays expires: provider payment CLOSED and stock back to available', async () => {
  const sku = await createProduct(sys, { stock: 3 });
  const orderId = await placeOrder(sku);
  expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 1, sold: 0 });
  const order = await waitForStatus(sys, orderId, ['EXPIRED'], 20_000);
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
  const orderId = await placeOrder(sku);
  const handle = sys.client.workflow.getHandle(orderWorkflowId(orderId));
  // Slow the provider API down so that the close call is still in flight when the buyer pays.
  await waitFor(async () => (await handle.query(statusQuery)).queryAttempts >= 1, { what: 'a first active query' });
  await sys.setFaults({ apiLatencyMs: 2500 });
  await waitFor(async () => (await handle.query(statusQuery)).stage === 'CLOSING', { timeoutMs: 15_000, intervalMs: 50, what: 'stage CLOSING' });
  const pay = await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  expect(pay.status).toBe(200);
  const order = await waitForStatus(sys, orderId, ['PAID', 'EXPIRED'], 30_000);
  expect(order.status).toBe('PAID');
  expect(order.timeline.map((e: { type: string }) => e.type)).toContain('CLOSE_FOUND_PAID');
  expect(await stockOf(sys, sku)).toEqual({ available: 1, reserved: 0, sold: 1 });
});

test('a payment that arrives after the order expired is refunded automatically, once', async () => {
  const sku = await createProduct(sys, { price: 4200, stock: 2 });
  const orderId = await placeOrder(sku);
  await waitForStatus(sys, orderId, ['EXPIRED'], 20_000);
  // Like an Alipay QR closed before it was scanned, the provider still takes the money.
  await sys.setFaults({ acceptPaymentAfterClose: true });
  const pay = await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  expect(pay.status).toBe(200);
  const order = await waitForStatus(sys, orderId, ['REFUNDED'], 20_000);
  expect(order.statusReason).toBe('LATE_PAYMENT_REFUNDED');
  const provider = (await sys.sandbox('GET', `/v1/payments/${orderId}`)).body;
  expect(provider).toMatchObject({ status: 'REFUNDED', refundedAmount: 4200 });
  // Redelivering the notification must not refund again.
  const [n] = (await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications;
  await sys.sandbox('POST', `/_control/notifications/${n.id}/redeliver`);
  await new Promise((r) => setTimeout(r, 1000));
  const refunds = await sys.db('refunds').where({ order_id: orderId });
  expect(refunds).toHaveLength(1);
  expect(refunds[0]).toMatchObject({ status: 'SUCCEEDED', amount: 4200 });
  expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 0 });
});

test('a notification redelivered after the order was paid is acknowledged and refunds nothing', async () => {
  const sku = await createProduct(sys, { stock: 2 });
  const orderId = await placeOrder(sku);
  await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  await waitForStatus(sys, orderId, ['PAID']);
  await sys.client.workflow.getHandle(orderWorkflowId(orderId)).result();
  const [n] = (await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications;
  await sys.sandbox('POST', `/_control/notifications/${n.id}/redeliver`);
  const after = (await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications[0];
  expect(after.lastStatus).toBe(200);
  // The late-payment path (what a notification for a finished workflow is routed to) recognises the trade that paid the order.
  const tradeNo = (await sys.http('GET', `/orders/${orderId}`)).body.payment.tradeNo;
  const late = await sys.client.workflow.execute('latePayment', {
    workflowId: latePaymentWorkflowId('sandbox', orderId, tradeNo),
    taskQueue: sys.config.taskQueue,
    args: [{ provider: 'sandbox', outTradeNo: orderId, tradeNo }],
  });
  expect(late).toMatchObject({ outcome: 'ALREADY_CONFIRMED' });
  expect(await sys.db('refunds').where({ order_id: orderId })).toHaveLength(0);
  expect((await sys.http('GET', `/orders/${orderId}`)).body.status).toBe('PAID');
});
