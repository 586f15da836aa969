/**
 * A provider's payment URL is stored whole, however long. Alipay's page-pay URL is the whole signed request as a query
 * string: with a 4096-bit application key (which the configuration accepts) and a return URL it is well over 1,024
 * characters, the old VARCHAR(1024); under STRICT mode the INSERT failed with a retryable ER_DATA_TOO_LONG and every
 * Alipay order retried its set-up until it failed, its units held meanwhile. Real Alipay adapter (it signs locally,
 * no call to the gateway), real test database.
 *
 * And a payment created for an order that no longer awaits it (an attempt of the set-up that outlived its timeout,
 * answered after the set-up gave up and failed the order) is neither recorded nor left open: real sandbox over HTTP.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { ApplicationFailure } from '@temporalio/common';
import type { Knex } from 'knex';
import { closeProviderPayment, createProviderPayment } from '../src/activities/payments';
import { createDb } from '../src/db/knex';
import { createAlipayProvider } from '../src/providers/alipay';
import { createSandboxProvider } from '../src/providers/sandbox';
import { createSandboxServer } from '../src/sandbox-provider/server';
import { TEST_ENV } from './support/env';

let db: Knex;

beforeAll(() => {
  db = createDb(TEST_ENV.databaseUrl, { poolMax: 2 });
});

afterAll(async () => {
  await db?.destroy();
});

/** A sandbox provider server of the test's own, and the adapter that calls it, for the length of `fn`. */
async function withSandbox(
  fn: (s: { baseUrl: string; provider: ReturnType<typeof createSandboxProvider> }) => Promise<void>,
): Promise<void> {
  const sandbox = createSandboxServer({
    secret: 'payment-url-secret',
    publicUrl: 'http://placeholder.invalid',
    notifySchedule: [60_000],
    logger: false,
  });
  await sandbox.app.listen({ host: '127.0.0.1', port: 0 });
  const baseUrl = `http://127.0.0.1:${(sandbox.app.server.address() as AddressInfo).port}`;
  sandbox.setPublicUrl(`${baseUrl}/`);
  try {
    await fn({
      baseUrl,
      provider: createSandboxProvider({ baseUrl, secret: 'payment-url-secret', merchantId: 'm-url' }),
    });
  } finally {
    await sandbox.close();
  }
}

/** The payment step for a 19.99 CNY sandbox order, its provider-side expiry `marginMs` after `deadline`. */
function sandboxPaymentStep(
  provider: ReturnType<typeof createSandboxProvider>,
  orderId: string,
  deadline: Date,
  marginMs: number,
) {
  return createProviderPayment(
    db,
    { sandbox: provider },
    {
      orderId,
      provider: 'sandbox',
      amount: 1999,
      currency: 'CNY',
      subject: `Order ${orderId}`,
      notifyUrl: 'http://127.0.0.1:9/callbacks/sandbox',
      deadline: deadline.toISOString(),
      providerExpiresAt: new Date(deadline.getTime() + marginMs).toISOString(),
    },
  );
}

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

test('a payment created after its order failed is not recorded on the order, and is closed at the provider', async () => {
  await withSandbox(async ({ baseUrl, provider }) => {
    const deadline = new Date(Date.now() + 15 * 60_000);
    /** An order row in `status`, and an attempt of the set-up's payment step for it that answers only now. */
    const lateAttemptFor = async (status: 'FAILED' | 'PAID') => {
      const orderId = `url-${randomBytes(6).toString('hex')}`;
      await db('orders').insert({
        order_id: orderId,
        user_id: 'u-url',
        status,
        ...(status === 'FAILED' ? { status_reason: 'PAYMENT_CREATION_FAILED' } : {}),
        amount: 1999,
        currency: 'CNY',
        provider: 'sandbox',
        subtotal: 1999,
      });
      const attempt = sandboxPaymentStep(provider, orderId, deadline, 60_000);
      return { orderId, attempt };
    };

    // The set-up gave up while this attempt was still waiting for the provider: the order is FAILED, released.
    const { orderId, attempt } = await lateAttemptFor('FAILED');
    await expect(attempt).rejects.toBeInstanceOf(ApplicationFailure);
    await expect(attempt).rejects.toMatchObject({ type: 'ORDER_CLOSED', nonRetryable: true });
    // Nothing the waiting page could offer the buyer: no URL on the order, no payment row, no timeline entry.
    const order = await db('orders').where({ order_id: orderId }).first('status', 'payment_url', 'deadline');
    expect(order).toEqual({ status: 'FAILED', payment_url: null, deadline: null });
    expect(await db('payments').where({ out_trade_no: orderId }).first()).toBeUndefined();
    expect(await db('order_events').where({ order_id: orderId, type: 'PAYMENT_CREATED' }).first()).toBeUndefined();
    // And nobody can pay it at the provider.
    expect((await provider.queryPayment(orderId)).status).toBe('CLOSED');
    const paid = await fetch(`${baseUrl}/v1/payments/${orderId}/pay`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    expect(paid.status).toBeGreaterThanOrEqual(400);

    // An order already paid (this attempt outlived one that succeeded, and the buyer paid): nothing is written, and its
    // payment is not asked to close.
    const late = await lateAttemptFor('PAID');
    await expect(late.attempt).rejects.toMatchObject({ type: 'ORDER_CLOSED' });
    expect(await db('payments').where({ out_trade_no: late.orderId }).first()).toBeUndefined();
    expect((await provider.queryPayment(late.orderId)).status).toBe('PENDING');
  });
});

test("a retried payment step keeps the first attempt's deadline and provider expiry: the buyer is shown the provider's own", async () => {
  // The set-up's workflow task was lost after its payment step ran (a worker killed): the retry runs the step again
  // with a later clock. The provider answers the payment the first attempt created, which expires by the first
  // attempt's time; the retry used to move the order's deadline (and the buyer's "pay before") later than that, and
  // to ask the provider with a different expiry (Stripe refuses a changed request under the same Idempotency-Key).
  await withSandbox(async ({ baseUrl, provider }) => {
    const orderId = `url-${randomBytes(6).toString('hex')}`;
    await db('orders').insert({
      order_id: orderId,
      user_id: 'u-url',
      status: 'AWAITING_PAYMENT',
      amount: 1999,
      currency: 'CNY',
      provider: 'sandbox',
      subtotal: 1999,
    });
    const attempt = (deadline: Date) => sandboxPaymentStep(provider, orderId, deadline, 10_000);
    const first = new Date(Date.now() + 15 * 60_000);
    const a = await attempt(first);
    expect(a.deadline).toBe(first.toISOString());
    const b = await attempt(new Date(first.getTime() + 23_000));
    expect(b.tradeNo).toBe(a.tradeNo);
    expect(b.deadline).toBe(first.toISOString());
    expect(b.providerExpiresAt).toBe(new Date(first.getTime() + 10_000).toISOString());
    const order = await db('orders').where({ order_id: orderId }).first('deadline');
    expect(new Date(order.deadline).toISOString()).toBe(first.toISOString());
    // The provider's payment expires by the first attempt: what the order now says too.
    const atProvider = await fetch(`${baseUrl}/v1/payments/${orderId}`).then(async (r) => (await r.json()) as any);
    expect(atProvider.expiresAt).toBe(b.providerExpiresAt);
    const entries = await db('order_events').where({ order_id: orderId, type: 'PAYMENT_CREATED' }).select('message');
    expect(entries.map((e: { message: string }) => e.message)).toEqual([
      `Payment created at sandbox; pay before ${first.toISOString()}`,
      `Payment created at sandbox; pay before ${first.toISOString()}`,
    ]);
    // A stored deadline already past (an outage between the attempts; the first may never have reached the provider):
    // the retry gets a fresh window, never an order opened past its deadline.
    await db('orders')
      .where({ order_id: orderId })
      .update({ deadline: new Date(Date.now() - 1000) });
    const fresh = new Date(Date.now() + 15 * 60_000);
    const c = await attempt(fresh);
    expect(c.deadline).toBe(fresh.toISOString());
    const now = await db('orders').where({ order_id: orderId }).first('deadline');
    expect(new Date(now.deadline).toISOString()).toBe(fresh.toISOString());
  });
});

test('a close retried after its first attempt closed the trade answers that close, even when the provider took a payment since', async () => {
  // The deadline's close ran and closed the trade; its workflow task was lost; meanwhile the provider took a payment
  // that was in flight as the trade closed (the sandbox's acceptPaymentAfterClose). The retried close used to ask
  // again, hear ALREADY_PAID and confirm the order with money taken after its close.
  await withSandbox(async ({ baseUrl, provider }) => {
    const orderId = `url-${randomBytes(6).toString('hex')}`;
    await db('orders').insert({
      order_id: orderId,
      user_id: 'u-url',
      status: 'AWAITING_PAYMENT',
      amount: 1999,
      currency: 'CNY',
      provider: 'sandbox',
      subtotal: 1999,
    });
    await sandboxPaymentStep(provider, orderId, new Date(Date.now() + 15 * 60_000), 60_000);
    const close = () => closeProviderPayment(db, { sandbox: provider }, { orderId, provider: 'sandbox' });
    expect(await close()).toEqual({ result: 'CLOSED' });
    const faults = await fetch(`${baseUrl}/_control/faults`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ acceptPaymentAfterClose: true }),
    });
    expect(faults.status).toBe(200);
    const paid = await fetch(`${baseUrl}/v1/payments/${orderId}/pay`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    expect(paid.status).toBe(200);
    expect((await provider.queryPayment(orderId)).status).toBe('PAID');
    // The retry answers the close the first attempt made; the payment is the late watch's to find and refund.
    expect(await close()).toEqual({ result: 'CLOSED' });
    const entries = await db('order_events').where({ order_id: orderId }).select('type');
    expect(entries.map((e: { type: string }) => e.type)).not.toContain('CLOSE_FOUND_PAID');
  });
});
