/**
 * A provider's redeliveries of a notification already stored (most of a callback storm) are acknowledged without a
 * MySQL write: the API remembers what it stored, counts the redeliveries in memory and adds them to `deliveries` a
 * moment later in one statement. The first delivery is still stored before it is acknowledged, and an API that does
 * not remember it (another process, a restart) stores it again through INSERT .. ON DUPLICATE KEY, as before.
 */
import { orderWorkflowId } from '../src/contracts/order';
import { createProduct, placeOrder, startSystem, type TestSystem, waitFor, waitForStatus } from './support/system';

let sys: TestSystem;
/** The statements that store a notification, as the API's pool sent them. */
let inserts = 0;
/** Reads of a stored notification's payload back from the inbox, as the API's pool sent them. */
let payloadReads = 0;
/** Claiming UPDATEs of an inbox row (a lease taken after the insert), as the API's pool sent them. */
let claims = 0;
/** Reads of an order's provider (the callback route's check), as the API's pool sent them. */
let providerReads = 0;

beforeAll(async () => {
  // Only notifications can pay these orders: the first active query is far away.
  sys = await startSystem({ QUERY_FIRST_DELAY: '10m', QUERY_MAX_INTERVAL: '10m', PAYMENT_TIMEOUT: '15m' });
  sys.db.on('query', (q: { sql: string }) => {
    if (/insert into notification_inbox/i.test(q.sql)) inserts++;
    if (/^select `payload`.* from `notification_inbox`/i.test(q.sql)) payloadReads++;
    if (/^update `notification_inbox` set `attempts` = attempts \+ 1/i.test(q.sql)) claims++;
    if (/^select `provider` from `orders`/i.test(q.sql)) providerReads++;
  });
}, 60_000);
afterAll(async () => {
  await sys?.stop();
});

async function notificationsFor(orderId: string) {
  return (await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications as {
    id: string;
    acknowledged: boolean;
    sends: number;
  }[];
}

test('redeliveries of a stored notification are acknowledged without a write, counted, and pay the order once', async () => {
  const sku = await createProduct(sys, { stock: 1 });
  const { orderId } = await placeOrder(sys, sku);
  const insertsBefore = inserts;
  const readsBefore = payloadReads;
  const claimsBefore = claims;
  const providerReadsBefore = providerReads;
  await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  const [first] = await waitFor(async () => {
    const list = await notificationsFor(orderId);
    return list[0]?.acknowledged ? list : undefined;
  });
  // The first delivery was stored before it was acknowledged: one INSERT (per send until the first acknowledgement).
  const firstSends = first!.sends;
  expect(inserts - insertsBefore).toBe(firstSends);

  for (let i = 0; i < 10; i++) {
    const r = await sys.sandbox('POST', `/_control/notifications/${first!.id}/redeliver`);
    expect(r.status).toBe(200);
  }
  const after = await waitFor(async () => {
    const [n] = await notificationsFor(orderId);
    return n && n.sends >= firstSends + 10 && n.acknowledged ? n : undefined;
  });
  expect(after.sends).toBe(firstSends + 10);
  // Ten more acknowledgements, no more INSERTs.
  expect(inserts - insertsBefore).toBe(firstSends);

  await waitForStatus(sys, orderId, ['PAID']);
  await sys.client.workflow.getHandle(orderWorkflowId(orderId)).result();
  await sys.api.inbox.flushDeliveries();
  const rows = await sys.db('notification_inbox').where({ out_trade_no: orderId }).select('status', 'deliveries');
  expect(rows).toEqual([{ status: 'SIGNALLED', deliveries: firstSends + 10 }]);
  // Routed from what this process stored: the payload was never read back, and the row was inserted leased to this
  // process (one attempt), so no claiming UPDATE was sent either.
  expect(payloadReads - readsBefore).toBe(0);
  expect(claims - claimsBefore).toBe(0);
  // The order was placed through this API, which remembered its provider: the callback's provider check read nothing.
  expect(providerReads - providerReadsBefore).toBe(0);
  expect(await sys.db('notification_inbox').where({ out_trade_no: orderId }).first('attempts')).toEqual({
    attempts: 1,
  });
  expect(await sys.db('order_events').where({ order_id: orderId, type: 'ORDER_PAID' }).count({ n: '*' })).toEqual([
    { n: 1 },
  ]);
});

test('counted redeliveries reach MySQL on their own within a moment, without a flush being asked for', async () => {
  const sku = await createProduct(sys, { stock: 1 });
  const { orderId } = await placeOrder(sys, sku);
  await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  const [first] = await waitFor(async () => {
    const list = await notificationsFor(orderId);
    return list[0]?.acknowledged ? list : undefined;
  });
  for (let i = 0; i < 3; i++) await sys.sandbox('POST', `/_control/notifications/${first!.id}/redeliver`);
  await waitFor(
    async () => {
      const row = await sys.db('notification_inbox').where({ out_trade_no: orderId }).first('deliveries');
      return Number(row?.deliveries) === 4 ? row : undefined;
    },
    { what: 'four deliveries counted', timeoutMs: 10_000 },
  );
});

test('a row stored with its lease but never routed (the API died after the acknowledgement) is routed by the sweep once the lease ends', async () => {
  const sku = await createProduct(sys, { stock: 1 });
  const { orderId } = await placeOrder(sys, sku);
  // What the callback route writes for a new notification, leased to a process that then died: nobody queued it.
  const payment = await sys.db('payments').where({ out_trade_no: orderId }).first('merchant_id', 'amount');
  const notification = {
    provider: 'sandbox',
    notificationId: `lost-${orderId}`,
    outTradeNo: orderId,
    tradeNo: `T-${orderId}`,
    amount: Number(payment.amount),
    currency: 'CNY',
    merchantId: payment.merchant_id as string,
    paidAt: new Date().toISOString(),
  };
  await sys.db('notification_inbox').insert({
    provider: 'sandbox',
    notification_id: notification.notificationId,
    out_trade_no: orderId,
    event_type: 'payment.succeeded',
    raw_body: '{}',
    headers: '{}',
    payload: JSON.stringify(notification),
    status: 'RECEIVED',
    attempts: 1,
    next_attempt_at: new Date(Date.now() + 1500),
  });
  // Leased: the sweep leaves it alone.
  expect(await sys.api.inbox.sweep()).toBe(0);
  // Lease over: the sweep routes it.
  await new Promise((r) => setTimeout(r, 1600));
  await waitFor(async () => ((await sys.api.inbox.sweep()) >= 0 ? await rowStatus() : undefined), {
    what: 'the lost notification routed',
    timeoutMs: 15_000,
  });
  async function rowStatus() {
    const row = await sys.db('notification_inbox').where({ notification_id: notification.notificationId }).first();
    return row?.status === 'SIGNALLED' ? row : undefined;
  }
  expect(await rowStatus()).toMatchObject({ status: 'SIGNALLED', attempts: 2 });
  // The routed notification paid the order (the sandbox never called back: nothing else could have).
  await waitForStatus(sys, orderId, ['PAID']);
});
