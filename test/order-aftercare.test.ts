/**
 * After the order is placed: manual review, the cooling-off refund, one-click support, and late money for a
 * finished order — end to end over HTTP with the real dev server, MySQL and sandbox.
 */
import { orderWorkflowId } from '../src/contracts/order';
import { createProduct, placeOrder as placeOrderFor, startSystem, stockOf, type TestSystem, waitFor, waitForStatus } from './support/system';

let sys: TestSystem;
const admin = () => ({ authorization: `Bearer ${sys.config.adminToken}` });

beforeAll(async () => {
  // No active queries (only callbacks, escalation or the deadline move an order); a short cooling-off window.
  sys = await startSystem({ PAYMENT_TIMEOUT: '8s', QUERY_FIRST_DELAY: '10m', QUERY_MAX_INTERVAL: '10m', PROVIDER_EXPIRY_MARGIN: '1s', COOLING_OFF_PERIOD: '6s' });
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

async function underReview(price: number) {
  const sku = await createProduct(sys, { price, stock: 3 });
  const orderId = await placeOrder(sku);
  await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, { amount: 1 });
  await waitForStatus(sys, orderId, ['NEEDS_REVIEW']);
  return { sku, orderId };
}

describe('manual review', () => {
  test('an unauthenticated or malformed decision is refused with no effect', async () => {
    const { sku, orderId } = await underReview(3000);
    const body = { decision: 'approve', operator: 'alice', reason: 'looks fine' };
    expect((await sys.http('POST', `/orders/${orderId}/review`, body)).status).toBe(401);
    expect((await sys.http('POST', `/orders/${orderId}/review`, body, { authorization: 'Bearer wrong-token-123' })).status).toBe(401);
    const malformed = await sys.http('POST', `/orders/${orderId}/review`, { decision: 'maybe', operator: 'alice', reason: 'x' }, admin());
    expect(malformed.status).toBe(400);
    expect(malformed.body.error).toBe('VALIDATION_FAILED');
    expect((await sys.http('GET', `/orders/${orderId}`)).body.status).toBe('NEEDS_REVIEW');
    expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 1, sold: 0 });
  });

  test('approve confirms the order: stock sold, the provider keeps the payment, the decision is in the timeline', async () => {
    const { sku, orderId } = await underReview(3000);
    const r = await sys.http('POST', `/orders/${orderId}/review`, { decision: 'approve', operator: 'alice', reason: 'buyer topped up by bank transfer' }, admin());
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ orderId, status: 'PAID' });
    expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 1 });
    expect((await sys.sandbox('GET', `/v1/payments/${orderId}`)).body.status).toBe('SUCCESS');
    const order = (await sys.http('GET', `/orders/${orderId}`)).body;
    expect(order.timeline.find((e: { type: string; message: string }) => e.type === 'ORDER_PAID').message).toMatch(/alice.*bank transfer/);
    // A second decision is refused: the order is no longer in review.
    expect((await sys.http('POST', `/orders/${orderId}/review`, { decision: 'refund', operator: 'bob', reason: 'second opinion' }, admin())).status).toBe(409);
  });

  test('refund returns what was paid and releases the stock', async () => {
    const { sku, orderId } = await underReview(4500);
    const r = await sys.http('POST', `/orders/${orderId}/review`, { decision: 'refund', operator: 'bob', reason: 'wrong amount paid' }, admin());
    expect(r.body).toEqual({ orderId, status: 'REFUNDED' });
    expect(await stockOf(sys, sku)).toEqual({ available: 3, reserved: 0, sold: 0 });
    expect((await sys.sandbox('GET', `/v1/payments/${orderId}`)).body).toMatchObject({ status: 'REFUNDED', refundedAmount: 1 });
  });
});

describe('cooling-off period', () => {
  test('a refund inside the window succeeds once, a second request is answered the same, stock comes back', async () => {
    const sku = await createProduct(sys, { price: 2500, stock: 2 });
    const orderId = await placeOrder(sku);
    await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    await waitForStatus(sys, orderId, ['PAID']);
    const first = await sys.http('POST', `/orders/${orderId}/refund`, { reason: 'changed my mind' });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ orderId, status: 'REFUNDED' });
    const second = await sys.http('POST', `/orders/${orderId}/refund`, {});
    expect(second.status).toBe(200);
    expect(second.body).toEqual(first.body);
    expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 0 });
    expect((await sys.sandbox('GET', `/v1/payments/${orderId}`)).body).toMatchObject({ status: 'REFUNDED', refundedAmount: 2500 });
    expect(await sys.db('refunds').where({ order_id: orderId })).toHaveLength(1);
  });

  test('after the window the order is handed to fulfilment and a refund is refused with a clear error', async () => {
    const sku = await createProduct(sys, { stock: 2 });
    const orderId = await placeOrder(sku);
    await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    await waitForStatus(sys, orderId, ['PAID']);
    await waitFor(async () => (await sys.db('orders').where({ order_id: orderId }).first('fulfilment_ready_at')).fulfilment_ready_at, { timeoutMs: 20_000, what: 'fulfilment hand-off' });
    const outbox = await sys.db('outbox').where({ topic: 'order.fulfilment_ready', message_key: orderId });
    expect(outbox).toHaveLength(1);
    expect(JSON.parse(outbox[0].payload)).toMatchObject({ orderId, items: [{ sku, quantity: 1 }] });
    const r = await sys.http('POST', `/orders/${orderId}/refund`, {});
    expect(r.status).toBe(409);
    expect(r.body.error).toBe('COOLING_OFF_EXPIRED');
    expect(await stockOf(sys, sku)).toEqual({ available: 1, reserved: 0, sold: 1 });
  });
});

describe('one-click support', () => {
  test('escalation queries the provider at once and resolves a paid order whose notification was lost', async () => {
    const sku = await createProduct(sys, { stock: 2 });
    const orderId = await placeOrder(sku);
    await sys.setFaults({ dropNotifications: 1 });
    await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    await new Promise((r) => setTimeout(r, 500));
    expect((await sys.http('GET', `/orders/${orderId}`)).body.status).toBe('AWAITING_PAYMENT');
    const r = await sys.http('POST', `/orders/${orderId}/escalate`, { note: 'I paid, the page still waits' });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ orderId, providerStatus: 'PAID', resolution: 'PAYMENT_FOUND' });
    expect(r.body.messages.user.en).toMatch(/found your payment/);
    await waitForStatus(sys, orderId, ['PAID']);
    const [ticket] = await sys.db('support_tickets').where({ order_id: orderId });
    expect(ticket).toMatchObject({ ticket_id: r.body.ticketId, provider_status: 'PAID', resolution: 'PAYMENT_FOUND', note: 'I paid, the page still waits' });
    expect(JSON.parse(ticket.snapshot).timeline.length).toBeGreaterThan(0);
    const described = await sys.client.workflow.getHandle(orderWorkflowId(orderId)).describe();
    expect(described.searchAttributes.Escalated).toEqual([true]);
  });

  test('escalating a finished order still records a ticket with the provider state', async () => {
    const sku = await createProduct(sys, { stock: 1 });
    const orderId = await placeOrder(sku);
    expect((await sys.http('POST', `/orders/${orderId}/cancel`, {})).body.status).toBe('CANCELLED');
    await sys.client.workflow.getHandle(orderWorkflowId(orderId)).result();
    const r = await sys.http('POST', `/orders/${orderId}/escalate`, {});
    expect(r.body).toMatchObject({ orderId, status: 'CANCELLED', providerStatus: 'CLOSED', resolution: 'CLOSED' });
    expect(await sys.db('support_tickets').where({ order_id: orderId })).toHaveLength(1);
  });
});

test('a notification for an order whose workflow completed as EXPIRED is refunded exactly once, despite five deliveries and a worker restart', async () => {
  const sku = await createProduct(sys, { price: 1800, stock: 1 });
  const orderId = await placeOrder(sku);
  await waitForStatus(sys, orderId, ['EXPIRED'], 30_000);
  await sys.client.workflow.getHandle(orderWorkflowId(orderId)).result();
  // The workflow watched until the provider-side expiry; only a payment that settles even later (a delayed
  // debit) can still arrive, and then only by callback.
  await sys.setFaults({ acceptPaymentAfterExpiry: true });
  await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  const [n] = await waitFor(async () => {
    const list = (await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications;
    return list[0]?.acknowledged ? list : undefined;
  });
  await sys.sandbox('POST', `/_control/notifications/${n.id}/redeliver`);
  await sys.restartWorker();
  for (let i = 0; i < 3; i++) await sys.sandbox('POST', `/_control/notifications/${n.id}/redeliver`);
  await waitForStatus(sys, orderId, ['REFUNDED'], 30_000);
  await new Promise((r) => setTimeout(r, 1000));
  expect((await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications[0].sends).toBeGreaterThanOrEqual(5);
  expect(await sys.db('refunds').where({ order_id: orderId })).toHaveLength(1);
  expect((await sys.sandbox('GET', `/v1/payments/${orderId}`)).body).toMatchObject({ status: 'REFUNDED', refundedAmount: 1800 });
  expect(await stockOf(sys, sku)).toEqual({ available: 1, reserved: 0, sold: 0 });
});
