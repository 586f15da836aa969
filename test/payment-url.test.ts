/**
 * A provider's payment URL is stored whole, however long. Alipay's page-pay URL is the whole signed request as a query
 * string: with a 4096-bit application key (which the configuration accepts) and a return URL it is well over 1,024
 * characters, the old VARCHAR(1024); under STRICT mode the INSERT failed with a retryable ER_DATA_TOO_LONG and every
 * Alipay order retried its set-up until it failed, its units held meanwhile. Real Alipay adapter (it signs locally,
 * no call to the gateway), real test database.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { createProviderPayment } from '../src/activities/payments';
import { createDb } from '../src/db/knex';
import { createAlipayProvider } from '../src/providers/alipay';
import { TEST_ENV } from './support/env';

let db: Knex;

beforeAll(() => {
  db = createDb(TEST_ENV.databaseUrl, { poolMax: 2 });
});

afterAll(async () => {
  await db?.destroy();
});

test('an Alipay page-pay URL signed with a 4096-bit key and a return URL is stored whole on the order and the payment', async () => {
  const app = generateKeyPairSync('rsa', { modulusLength: 4096 });
  const alipay = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const provider = createAlipayProvider({
    appId: '2014072300007148',
    sellerId: '2088102119685838',
    privateKey: app.privateKey,
    alipayPublicKey: alipay.publicKey,
    gateway: 'https://openapi.alipay.com/gateway.do',
    payMethod: 'page',
    returnUrl: 'https://shop.example.com/checkout/alipay/return?from=payflow&locale=zh-CN',
  });
  const orderId = `url-${randomBytes(6).toString('hex')}`;
  await db('orders').insert({
    order_id: orderId,
    user_id: 'u-url',
    status: 'AWAITING_PAYMENT',
    amount: 1999,
    currency: 'CNY',
    provider: 'alipay',
    subtotal: 1999,
  });
  const deadline = new Date(Date.now() + 15 * 60_000);
  const created = await createProviderPayment(
    db,
    { alipay: provider },
    {
      orderId,
      provider: 'alipay',
      amount: 1999,
      currency: 'CNY',
      subject: `订单 Order ${orderId}`,
      notifyUrl: 'https://pay.shop.example.com/callbacks/alipay',
      deadline: deadline.toISOString(),
      providerExpiresAt: new Date(deadline.getTime() + 60_000).toISOString(),
    },
  );
  expect(created.paymentUrl.length).toBeGreaterThan(1024);
  const order = await db('orders').where({ order_id: orderId }).first('payment_url');
  const payment = await db('payments').where({ out_trade_no: orderId }).first('payment_url', 'status');
  expect(order.payment_url).toBe(created.paymentUrl);
  expect(payment).toEqual({ payment_url: created.paymentUrl, status: 'PENDING' });
});
