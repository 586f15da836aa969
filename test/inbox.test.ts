/**
 * A notification that cannot be signalled right now (the API cut off from Temporal) is still stored and
 * acknowledged, stays in the inbox, and is signalled once Temporal is reachable again: never dropped.
 */
import { createProduct, startSystem, type TestSystem, userId, waitFor, waitForStatus } from './support/system';
import { TEST_ENV } from './support/env';
import { type TcpProxy, startTcpProxy } from './support/tcp-proxy';

let sys: TestSystem;
let proxy: TcpProxy;

beforeAll(async () => {
  proxy = await startTcpProxy(TEST_ENV.temporalAddress);
  // Active queries far away, so that only the callback path can make this order PAID.
  sys = await startSystem({ QUERY_FIRST_DELAY: '10m', QUERY_MAX_INTERVAL: '10m', PAYMENT_TIMEOUT: '15m', INBOX_RETRY_INTERVAL: '500ms' }, { clientTemporalAddress: proxy.address });
}, 60_000);

afterAll(async () => {
  proxy?.heal();
  await sys?.stop();
  await proxy?.close();
});

test('a notification that cannot be signalled is acknowledged, kept, retried and finally delivered', async () => {
  const sku = await createProduct(sys, { stock: 1 });
  const created = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] });
  expect(created.status).toBe(201);
  const { orderId } = created.body;

  proxy.breakLink();
  await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  // The provider got its "success": the notification is stored durably even though Temporal is unreachable.
  await waitFor(async () => (await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications[0]?.acknowledged, { what: 'the ack' });
  const row = await waitFor(
    async () => {
      const r = await sys.db('notification_inbox').where({ out_trade_no: orderId }).first();
      return r && r.attempts >= 1 && r.last_error ? r : undefined;
    },
    { timeoutMs: 45_000, what: 'a failed signal attempt recorded in the inbox' },
  );
  expect(row.status).toBe('RECEIVED');
  expect((await sys.db('orders').where({ order_id: orderId }).first()).status).toBe('AWAITING_PAYMENT');

  proxy.heal();
  await waitForStatus(sys, orderId, ['PAID'], 60_000);
  const delivered = await sys.db('notification_inbox').where({ out_trade_no: orderId }).first();
  expect(delivered.status).toBe('SIGNALLED');
  expect(delivered.attempts).toBeGreaterThanOrEqual(2);
}, 120_000);
