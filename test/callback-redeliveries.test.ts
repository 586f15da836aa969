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

beforeAll(async () => {
  // Only notifications can pay these orders: the first active query is far away.
  sys = await startSystem({ QUERY_FIRST_DELAY: '10m', QUERY_MAX_INTERVAL: '10m', PAYMENT_TIMEOUT: '15m' });
  sys.db.on('query', (q: { sql: string }) => {
    if (/insert into notification_inbox/i.test(q.sql)) inserts++;
    if (/^select `payload`.* from `notification_inbox`/i.test(q.sql)) payloadReads++;
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
  // Routed from what this process stored: the payload was never read back.
  expect(payloadReads - readsBefore).toBe(0);
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
