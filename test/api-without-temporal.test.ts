/**
 * An API process started while Temporal is down (a replica restarted during an outage: a deploy, an OOM kill, a
 * node drain) must still take the providers' callbacks: it stores each one in the inbox and acknowledges it, and the
 * inbox hands it to the order's workflow once Temporal answers. It used to connect to Temporal before listening and
 * exit when it could not, so every replica that restarted during an outage crash-looped and no callback was stored.
 */
import { randomBytes } from 'node:crypto';
import { signSandboxPayload } from '../src/providers/sandbox-signature';
import { freePort } from '../tools/processes';
import { freshDatabase, systemEnv } from './support/env';
import { type SpawnedApi, spawnApi } from './support/spawned-api';
import { type TestSystem, createProduct, placeOrder, startSystem, waitForStatus } from './support/system';

jest.setTimeout(120_000);

let sys: TestSystem;
let api: SpawnedApi | undefined;
/** A database of the suite's own: the second API's inbox sweeps every due row, and must not touch other suites'. */
let databaseUrl: string;

beforeAll(async () => {
  databaseUrl = await freshDatabase('no_temporal');
  // No query of the provider before the test ends: only the callback can make the order PAID.
  sys = await startSystem({
    DATABASE_URL: databaseUrl,
    QUERY_FIRST_DELAY: '10m',
    QUERY_MAX_INTERVAL: '10m',
    PAYMENT_TIMEOUT: '15m',
  });
}, 60_000);

afterAll(async () => {
  await api?.kill('SIGKILL');
  await sys?.stop();
});

test('an API started while Temporal is down answers, stores and acknowledges a callback; the payment reaches the order once Temporal answers', async () => {
  // The buyer pays; the sandbox's own notifications are dropped, so the only one is sent below.
  await sys.setFaults({ dropNotifications: 1 });
  const sku = await createProduct(sys, { stock: 3, price: 1234 });
  const order = await placeOrder(sys, sku);
  const orderId: string = order.orderId;
  const paid = await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  expect(paid.status).toBe(200);
  const payment = await sys.sandbox('GET', `/v1/payments/${orderId}`);
  expect(payment.body.status).toBe('SUCCESS');

  // A second API process, its Temporal address a port nobody listens on.
  const apiPort = await freePort();
  const sandboxPort = Number(new URL(sys.sandboxUrl).port);
  const env = systemEnv(
    { apiPort, sandboxPort, taskQueue: sys.config.taskQueue },
    {
      DATABASE_URL: databaseUrl,
      TEMPORAL_ADDRESS: '127.0.0.1:1',
      QUERY_FIRST_DELAY: '10m',
      QUERY_MAX_INTERVAL: '10m',
      PAYMENT_TIMEOUT: '15m',
    },
  );
  api = await spawnApi(env, apiPort, 'the API without Temporal to answer /healthz');
  const { url, health } = api;
  expect(health.status).toBe(503);
  expect(health.body).toMatchObject({ status: 'degraded', checks: { mysql: 'ok', temporal: 'unreachable' } });

  const body = JSON.stringify({
    id: `n-${randomBytes(6).toString('hex')}`,
    type: 'payment.succeeded',
    data: {
      outTradeNo: orderId,
      tradeNo: payment.body.tradeNo,
      amount: payment.body.paidAmount,
      currency: 'CNY',
      merchantId: sys.config.sandboxMerchantId,
      paidAt: new Date().toISOString(),
    },
  });
  const ack = await fetch(`${url}/callbacks/sandbox`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'sandbox-signature': signSandboxPayload(sys.config.sandboxSecret, body, Math.floor(Date.now() / 1000)),
    },
    body,
  });
  expect(ack.status).toBe(200);
  expect(await ack.text()).toBe('success');
  const stored = await sys.db('notification_inbox').where({ out_trade_no: orderId }).first('status');
  expect(stored).toBeDefined();

  // The replica goes away; the inbox of the API that reaches Temporal routes the stored notification.
  await api.kill();
  const view = await waitForStatus(sys, orderId, ['PAID'], 60_000);
  expect(view.status).toBe('PAID');
});
