/**
 * The payment-receipt step (in orderLifecycle's settlePaid; patch `order-payment-receipt` in orderPayment): a PAID
 * order queues one receipt for the buyer in the
 * outbox at once, stating what the provider says was paid; the activity is idempotent and writes nothing for an
 * order that is not PAID. Real API, worker, MySQL and sandbox.
 */
import { recordPaymentReceipt, PAYMENT_RECEIPT_TOPIC } from '../src/activities/receipts';
import { orderWorkflowId } from '../src/contracts/order';
import { historyCost } from '../tools/history-cost';
import { createProduct, startSystem, type TestSystem, userId, waitFor, waitForStatus } from './support/system';

let sys: TestSystem;
const admin = () => ({ authorization: `Bearer ${sys.config.adminToken}` });

beforeAll(async () => {
  // A cooling-off window no test can outlast (it shows the receipt is queued when PAID, not when the window ends), and
  // a payment window no test can outlast before it pays, however slow the server.
  sys = await startSystem({
    PAYMENT_TIMEOUT: '10m',
    QUERY_FIRST_DELAY: '10m',
    QUERY_MAX_INTERVAL: '10m',
    COOLING_OFF_PERIOD: '30m',
  });
}, 60_000);

afterAll(async () => {
  // The orders wait out their cooling-off window: end them rather than leave them open on the shared dev server.
  if (sys) {
    for await (const wf of sys.client.workflow.list({
      query: `TaskQueue = '${sys.config.taskQueue}' AND ExecutionStatus = 'Running'`,
    })) {
      await sys.client.workflow
        .getHandle(wf.workflowId)
        .terminate('payment-receipt suite cleanup')
        .catch(() => undefined);
    }
  }
  await sys?.stop();
}, 60_000);

async function placeOrder(price: number) {
  const sku = await createProduct(sys, { price, stock: 3 });
  const r = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 2 }] });
  expect(r.status).toBe(201);
  return { sku, orderId: r.body.orderId as string };
}

const receipts = (orderId: string) => sys.db('outbox').where({ topic: PAYMENT_RECEIPT_TOPIC, message_key: orderId });

/** The receipt rows once there are any (the step runs right after the PAID transition MySQL already shows). */
async function queuedReceipts(orderId: string) {
  return waitFor(
    async () => {
      const rows = await receipts(orderId);
      return rows.length > 0 ? rows : undefined;
    },
    { timeoutMs: 45_000, what: `the receipt of ${orderId}` },
  );
}

test('a paid order queues one receipt at once, inside the cooling-off window, with what was paid', async () => {
  const { sku, orderId } = await placeOrder(1250);
  await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  const order = await waitForStatus(sys, orderId, ['PAID']);
  const rows = await queuedReceipts(orderId);
  expect(rows).toHaveLength(1);
  expect(JSON.parse(rows[0].payload)).toMatchObject({
    orderId,
    provider: 'sandbox',
    tradeNo: order.payment.tradeNo,
    orderAmount: 2500,
    paidAmount: 2500,
    currency: 'CNY',
    items: [{ sku, quantity: 2, unitPrice: 1250 }],
  });
  // Still in the cooling-off window: fulfilment has not been told yet, the buyer already has a receipt.
  expect(await sys.db('outbox').where({ topic: 'order.fulfilment_ready', message_key: orderId })).toHaveLength(0);
  const timeline = (await sys.http('GET', `/orders/${orderId}`)).body.timeline.map((e: { type: string }) => e.type);
  expect(timeline.filter((t: string) => t === 'RECEIPT_QUEUED')).toHaveLength(1);
  expect(timeline.indexOf('ORDER_PAID')).toBeLessThan(timeline.indexOf('RECEIPT_QUEUED'));
  // The receipt is queued by the step that marks the order PAID (settlePaid, a local activity of orderLifecycle); the
  // patch that added it to the previous type, orderPayment, is proven by the replay test on the v1/v2 histories.
  // A local activity's marker reaches the history only when its workflow task completes, after its MySQL commit: on a
  // loaded machine the receipt can be read before that (CI saw only openOrderWithPayment), so the history is awaited.
  const handle = sys.client.workflow.getHandle(orderWorkflowId(orderId));
  const types = await waitFor(
    async () => {
      const t = historyCost((await handle.fetchHistory()).events ?? []).activityTypes;
      return t.includes('settlePaid') ? t : undefined;
    },
    { timeoutMs: 30_000, what: `settlePaid in the history of ${orderId}` },
  );
  expect(types).toContain('settlePaid');
  // A repeat (a retried activity whose first commit succeeded) writes nothing more.
  expect(await recordPaymentReceipt(sys.db, orderId)).toEqual({ written: false, reason: 'ALREADY_QUEUED' });
  expect(await receipts(orderId)).toHaveLength(1);
});

test('an approved review receipts what the buyer actually paid; an unpaid order gets no receipt', async () => {
  const { orderId } = await placeOrder(1500);
  await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, { amount: 2999 });
  await waitForStatus(sys, orderId, ['NEEDS_REVIEW']);
  expect(await recordPaymentReceipt(sys.db, orderId)).toEqual({ written: false, reason: 'NOT_PAID' });
  expect(await receipts(orderId)).toHaveLength(0);
  const r = await sys.http(
    'POST',
    `/orders/${orderId}/review`,
    { decision: 'approve', operator: 'alice', reason: 'one fen short, accepted' },
    admin(),
  );
  expect(r.body).toEqual({ orderId, status: 'PAID' });
  const rows = await queuedReceipts(orderId);
  expect(rows).toHaveLength(1);
  expect(JSON.parse(rows[0].payload)).toMatchObject({ orderId, orderAmount: 3000, paidAmount: 2999, currency: 'CNY' });
  expect(await recordPaymentReceipt(sys.db, 'ord_does_not_exist')).toEqual({ written: false, reason: 'NOT_PAID' });
});
