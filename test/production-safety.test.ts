/**
 * Production safety: in production mode (NODE_ENV=production) no fake provider and no published secret; a verified
 * notification only speaks for its own provider's payment (API, inbox, order workflow, late-payment workflow,
 * reconciliation); a notification that does not match the order is confirmed with the provider before it moves it.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import {
  DEV_ADMIN_TOKEN,
  DEV_OUTBOX_SECRET,
  DEV_SANDBOX_SECRET,
  loadConfig,
  publicMetricsWarning,
  sandboxInProductionWarning,
  startupWarnings,
} from '../src/config';
import { latePaymentWorkflowId, orderWorkflowId, paymentNotifiedSignal, statusQuery } from '../src/contracts/order';
import { classifyBillPayment } from '../src/reconciliation/classify';
import { createProviders } from '../src/providers';
import { signSandboxPayload } from '../src/providers/sandbox-signature';
import { configErrorOf } from './support/config-error';
import { insertInboxRow } from './support/inbox';
import { rsaPair } from './support/provider-fakes';
import { createProduct, placeOrder, startSystem, type TestSystem, waitFor, waitForStatus } from './support/system';

const STRONG = (label: string) => `${label}-${randomBytes(24).toString('hex')}`;
const PROD = { NODE_ENV: 'production', ADMIN_TOKEN: STRONG('admin') };
/** A live-mode Stripe account: production starts only with a provider, and never with test money. */
const STRIPE_LIVE = {
  STRIPE_SECRET_KEY: `sk_live_${randomBytes(16).toString('hex')}`,
  STRIPE_WEBHOOK_SECRET: `whsec_${randomBytes(16).toString('hex')}`,
  STRIPE_PAYMENT_PAGE_URL: 'https://shop.example.com/pay',
};

describe('production mode refuses what only development may have', () => {
  test.each([
    ['ADMIN_TOKEN unset', { NODE_ENV: 'production' }, /^Invalid configuration: ADMIN_TOKEN is not set/],
    [
      'ADMIN_TOKEN the published default',
      { NODE_ENV: 'production', ADMIN_TOKEN: DEV_ADMIN_TOKEN },
      /^Invalid configuration: ADMIN_TOKEN is a published default/,
    ],
    [
      "ADMIN_TOKEN docker-compose's old example",
      { NODE_ENV: 'production', ADMIN_TOKEN: 'change-me-admin-token' },
      /^Invalid configuration: ADMIN_TOKEN is a published default/,
    ],
    [
      'ADMIN_TOKEN short',
      { NODE_ENV: 'production', ADMIN_TOKEN: 'short-but-over-8' },
      /^Invalid configuration: ADMIN_TOKEN is too short/,
    ],
    [
      'SANDBOX_SECRET unset on staging',
      { ...PROD, SANDBOX_ENABLED: 'true' },
      /^Invalid configuration: SANDBOX_SECRET is not set/,
    ],
    [
      'SANDBOX_SECRET the published default on staging',
      { ...PROD, SANDBOX_ENABLED: 'true', SANDBOX_SECRET: DEV_SANDBOX_SECRET },
      /^Invalid configuration: SANDBOX_SECRET is a published default/,
    ],
    [
      'SANDBOX_SECRET short on staging',
      { ...PROD, SANDBOX_ENABLED: 'true', SANDBOX_SECRET: 'abcdefghijk' },
      /^Invalid configuration: SANDBOX_SECRET is too short/,
    ],
    [
      'OUTBOX_WEBHOOK_SECRET unset with a relay',
      { ...PROD, OUTBOX_WEBHOOK_URL: 'https://shop.example.com/payflow-outbox' },
      /^Invalid configuration: OUTBOX_WEBHOOK_SECRET is not set/,
    ],
    [
      'OUTBOX_WEBHOOK_SECRET the published default',
      {
        ...PROD,
        OUTBOX_WEBHOOK_URL: 'https://shop.example.com/payflow-outbox',
        OUTBOX_WEBHOOK_SECRET: DEV_OUTBOX_SECRET,
      },
      /^Invalid configuration: OUTBOX_WEBHOOK_SECRET is a published default/,
    ],
    [
      'OUTBOX_WEBHOOK_URL over plain HTTP',
      {
        ...PROD,
        OUTBOX_WEBHOOK_URL: 'http://shop.example.com/payflow-outbox',
        OUTBOX_WEBHOOK_SECRET: STRONG('outbox'),
      },
      /^Invalid configuration: OUTBOX_WEBHOOK_URL must be an https URL in production/,
    ],
    [
      'SHOP_API_TOKEN short',
      { ...PROD, SHOP_API_TOKEN: 'abcdefghijk' },
      /^Invalid configuration: SHOP_API_TOKEN is too short/,
    ],
    [
      'SHOP_API_TOKEN a published value',
      { ...PROD, SHOP_API_TOKEN: 'test-admin-token' },
      /^Invalid configuration: SHOP_API_TOKEN is a published default/,
    ],
    [
      'SHOP_API_TOKEN the admin token',
      { ...PROD, SHOP_API_TOKEN: PROD.ADMIN_TOKEN },
      /^Invalid configuration: SHOP_API_TOKEN must differ from ADMIN_TOKEN/,
    ],
  ])('%s: one line naming the variable', (_name, env, expected) => {
    const message = configErrorOf(env);
    expect(message).toMatch(expected);
    expect(message).not.toContain('\n');
    expect(message).not.toContain(DEV_ADMIN_TOKEN);
  });

  test('without SANDBOX_ENABLED the sandbox provider is absent, and nothing warns', () => {
    const config = loadConfig({ ...PROD, ...STRIPE_LIVE });
    expect(config).toMatchObject({ production: true, sandboxEnabled: false });
    expect(Object.keys(createProviders(config))).toEqual(['stripe']);
    expect(sandboxInProductionWarning(config)).toBeUndefined();
    expect(startupWarnings(config)).toEqual([]);
  });

  test('the API warns when production serves /metrics on the public port (METRICS_PORT unset), not otherwise', () => {
    expect(publicMetricsWarning(loadConfig({ ...PROD, ...STRIPE_LIVE }))).toMatch(
      /METRICS IS SERVED ON THE PUBLIC PORT/i,
    );
    expect(publicMetricsWarning(loadConfig({ ...PROD, ...STRIPE_LIVE, METRICS_PORT: '9466' }))).toBeUndefined();
    expect(publicMetricsWarning(loadConfig({}))).toBeUndefined();
    // Logged by the API with the other start-up warnings; the worker serves no /metrics of the API.
    const config = loadConfig({ ...PROD, ...STRIPE_LIVE });
    expect(startupWarnings(config, { api: true }).map((w) => w.message)).toEqual([publicMetricsWarning(config)]);
    expect(startupWarnings(config)).toEqual([]);
  });

  test('SANDBOX_ENABLED=true (staging) offers the sandbox, with a loud warning', () => {
    const config = loadConfig({ ...PROD, SANDBOX_ENABLED: 'true', SANDBOX_SECRET: STRONG('sandbox') });
    expect(Object.keys(createProviders(config))).toEqual(['sandbox']);
    expect(sandboxInProductionWarning(config)).toMatch(/SANDBOX PROVIDER ENABLED IN PRODUCTION MODE/);
  });

  test('production refuses a RESERVATION_GRACE shorter than an order start may take; development accepts it', () => {
    // The sweeper releases a pre-start reservation no workflow holds after the grace: shorter than the start's own
    // deadline (30 s), it failed orders whose start was only slow.
    const error = configErrorOf({ ...PROD, ...STRIPE_LIVE, RESERVATION_GRACE: '20s' });
    expect(error).toMatch(/RESERVATION_GRACE must be at least 35s in production/);
    expect(loadConfig({ ...PROD, ...STRIPE_LIVE, RESERVATION_GRACE: '35s' }).reservationGraceMs).toBe(35_000);
    expect(loadConfig({ RESERVATION_GRACE: '2s' }).reservationGraceMs).toBe(2_000);
  });

  test('development keeps working without any setting', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      production: false,
      sandboxEnabled: true,
      adminToken: DEV_ADMIN_TOKEN,
      sandboxSecret: DEV_SANDBOX_SECRET,
    });
    expect(Object.keys(createProviders(config))).toEqual(['sandbox']);
  });

  test.each([
    [
      'the API',
      'src/client/main.ts',
      { NODE_ENV: 'production', ADMIN_TOKEN: DEV_ADMIN_TOKEN },
      /^Invalid configuration: ADMIN_TOKEN is a published default/,
    ],
    ['the worker', 'src/workers/main.ts', { NODE_ENV: 'production' }, /^Invalid configuration: ADMIN_TOKEN is not set/],
    [
      'the sandbox server',
      'src/sandbox-provider/main.ts',
      { ...PROD, ...STRIPE_LIVE },
      /^Invalid configuration: the sandbox provider does not run in production/,
    ],
  ])(
    '%s refuses to start, with one line on stderr',
    (_name, entry, env, expected) => {
      const root = join(__dirname, '..');
      const run = spawnSync(join(root, 'node_modules', '.bin', 'tsx'), [entry], {
        cwd: root,
        env: {
          PATH: process.env.PATH,
          ...env,
          TEMPORAL_ADDRESS: '127.0.0.1:1',
          DATABASE_URL: 'mysql://root@127.0.0.1:1/none',
        },
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(run.status).toBe(1);
      expect(run.stderr.trim()).toMatch(expected);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
    },
    40_000,
  );
});

describe('a production API', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ ...PROD, ...STRIPE_LIVE });
  }, 60_000);
  afterAll(async () => {
    await sys?.stop();
  });

  test('refuses a sandbox order and has no sandbox callback', async () => {
    const sku = await createProduct(sys, { stock: 1 });
    const order = await sys.http('POST', '/orders', {
      userId: 'u-prod',
      items: [{ sku, quantity: 1 }],
      provider: 'sandbox',
    });
    expect(order.status).toBe(422);
    expect(order.body).toMatchObject({ error: 'PROVIDER_NOT_AVAILABLE', provider: 'sandbox', available: ['stripe'] });
    // The default provider is the sandbox: with nothing configured, an order naming none is refused the same way.
    expect((await sys.http('POST', '/orders', { userId: 'u-prod', items: [{ sku, quantity: 1 }] })).body.error).toBe(
      'PROVIDER_NOT_AVAILABLE',
    );
    const raw = JSON.stringify({ id: 'n-prod', type: 'payment.succeeded', data: {} });
    const callback = await fetch(`${sys.apiUrl}/callbacks/sandbox`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'sandbox-signature': signSandboxPayload(DEV_SANDBOX_SECRET, raw, Math.floor(Date.now() / 1000)),
      },
      body: raw,
    });
    expect(callback.status).toBe(404);
    expect(await callback.json()).toMatchObject({ error: 'UNKNOWN_PROVIDER' });
    expect(await sys.db('orders').where({ user_id: 'u-prod' }).first()).toBeUndefined();
    expect(
      (await sys.http('GET', '/admin/products/x', undefined, { authorization: `Bearer ${DEV_ADMIN_TOKEN}` })).status,
    ).toBe(401);
  });

  test("without SHOP_API_TOKEN, an order that spends a coupon or points is refused before anything is read: no one can spend another user's", async () => {
    const sku = await createProduct(sys, { stock: 1 });
    const admin = { authorization: `Bearer ${sys.config.adminToken}` };
    expect((await sys.http('PUT', '/admin/points/u-prod-points', { balance: 1000 }, admin)).status).toBe(200);
    for (const spend of [{ points: 10 }, { points: 5_000 }, { couponCode: 'C-ANY' }]) {
      const r = await sys.http('POST', '/orders', { userId: 'u-prod-points', items: [{ sku, quantity: 1 }], ...spend });
      expect(r).toMatchObject({ status: 403, body: { error: 'BENEFITS_NOT_ENABLED' } });
    }
    expect((await sys.http('GET', '/admin/points/u-prod-points', undefined, admin)).body).toMatchObject({
      available: 1000,
      frozen: 0,
    });
  });
});

/** A sandbox-signed notification body for an order, as the sandbox (or anyone with its secret) would send it. */
function sandboxNotification(
  sys: TestSystem,
  data: { outTradeNo: string; amount: number; currency?: string; tradeNo?: string; merchantId?: string },
) {
  const raw = JSON.stringify({
    id: `n-${randomBytes(6).toString('hex')}`,
    type: 'payment.succeeded',
    data: {
      outTradeNo: data.outTradeNo,
      tradeNo: data.tradeNo ?? `forged-${randomBytes(4).toString('hex')}`,
      amount: data.amount,
      currency: data.currency ?? 'CNY',
      merchantId: data.merchantId ?? sys.config.sandboxMerchantId,
      paidAt: new Date().toISOString(),
    },
  });
  return {
    raw,
    headers: {
      'content-type': 'application/json',
      'sandbox-signature': signSandboxPayload(sys.config.sandboxSecret, raw, Math.floor(Date.now() / 1000)),
    },
  };
}

describe('a notification only speaks for its own provider', () => {
  let sys: TestSystem;
  const alipayApp = rsaPair();
  const alipayPublic = rsaPair();
  let orderId: string;
  let amount: number;

  beforeAll(async () => {
    // Alipay configured beside the sandbox; its cashier URL is signed locally, and no query runs during the test.
    sys = await startSystem({
      ALIPAY_APP_ID: '2021000000000001',
      ALIPAY_SELLER_ID: '2088000000000001',
      ALIPAY_PRIVATE_KEY: alipayApp.privatePem,
      ALIPAY_PUBLIC_KEY: alipayPublic.publicPem,
      ALIPAY_GATEWAY: 'http://127.0.0.1:9/gateway.do',
      QUERY_FIRST_DELAY: '10m',
      QUERY_MAX_INTERVAL: '10m',
      PAYMENT_TIMEOUT: '15m',
    });
    const sku = await createProduct(sys, { stock: 5, price: 1980 });
    const created = await sys.http('POST', '/orders', {
      userId: 'u-alipay',
      items: [{ sku, quantity: 1 }],
      provider: 'alipay',
    });
    expect(created.status).toBe(201);
    orderId = created.body.orderId;
    amount = created.body.amount;
  }, 60_000);

  afterAll(async () => {
    // The Alipay gateway here is unreachable: end the order's workflow rather than leave it retrying a close.
    await sys?.client.workflow
      .getHandle(orderWorkflowId(orderId))
      .terminate('test over')
      .catch(() => undefined);
    await sys?.stop();
  });

  test("the issue's forged notification (sandbox-signed, for an Alipay order) is refused with 409, audited, counted, and changes nothing", async () => {
    const { raw, headers } = sandboxNotification(sys, { outTradeNo: orderId, amount });
    const r = await fetch(`${sys.apiUrl}/callbacks/sandbox`, { method: 'POST', headers, body: raw });
    expect(r.status).toBe(409);
    expect(await r.json()).toMatchObject({
      error: 'PROVIDER_MISMATCH',
      message: expect.stringContaining('pays with alipay'),
    });
    const audited = await sys
      .db('notification_rejections')
      .where({ provider: 'sandbox', reason: 'PROVIDER_MISMATCH' })
      .orderBy('id', 'desc')
      .first();
    expect(audited).toBeDefined();
    expect(await sys.db('notification_inbox').where({ out_trade_no: orderId }).first()).toBeUndefined();
    const metrics = await (await fetch(`${sys.apiUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /payflow_notifications_cross_provider_total\{provider="sandbox",reason="PROVIDER_MISMATCH",where="callback"\} 1/,
    );
    expect((await sys.http('GET', `/orders/${orderId}`)).body.status).toBe('AWAITING_PAYMENT');
  });

  test('the inbox refuses a stored notification of another provider; the workflow ignores a signal of another provider', async () => {
    // Stored as if before the callback route refused such notifications; due now: this test's process() call or the
    // API's sweep routes it, whichever claims it first (the lease).
    const { id, payload } = await insertInboxRow(sys.db, orderId, { amount, merchantId: sys.config.sandboxMerchantId });
    await sys.api.inbox.process(Number(id));
    const row = await waitFor(
      async () => {
        const r = await sys.db('notification_inbox').where({ id }).first();
        return r.status !== 'RECEIVED' ? r : undefined;
      },
      { what: 'the inbox row routed' },
    );
    expect(row).toMatchObject({ status: 'REFUSED', last_error: expect.stringContaining('pays with alipay') });

    const handle = sys.client.workflow.getHandle(orderWorkflowId(orderId));
    await handle.signal(paymentNotifiedSignal, { ...payload, notificationId: `${payload.notificationId}-direct` });
    const status = await waitFor(
      async () => {
        const s = await handle.query(statusQuery);
        return s.timeline.some((t) => t.type === 'NOTIFICATION_IGNORED' && t.message.includes('comes from sandbox'))
          ? s
          : undefined;
      },
      { what: 'the ignored signal on the workflow timeline' },
    );
    expect(status.status).toBe('AWAITING_PAYMENT');
    expect((await sys.http('GET', `/orders/${orderId}`)).body.status).toBe('AWAITING_PAYMENT');
  });

  test('a late-payment workflow for a trade of another provider changes nothing', async () => {
    // The sandbox really holds a paid trade under this Alipay order's id: the strongest form of the forgery.
    const created = await sys.sandbox('POST', '/v1/payments', {
      outTradeNo: orderId,
      amount,
      currency: 'CNY',
      merchantId: sys.config.sandboxMerchantId,
      expiresAt: new Date(Date.now() + 600_000).toISOString(),
      notifyUrl: 'http://127.0.0.1:9/none',
    });
    expect(created.status).toBeLessThan(300);
    const paid = await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    expect(paid.status).toBe(200);
    const tradeNo = (await sys.sandbox('GET', `/v1/payments/${orderId}`)).body.tradeNo as string;
    const result = await sys.client.workflow.execute('latePayment', {
      workflowId: latePaymentWorkflowId('sandbox', orderId, tradeNo),
      taskQueue: sys.config.taskQueue,
      args: [{ provider: 'sandbox', outTradeNo: orderId, tradeNo, notificationId: 'n-late' }],
    });
    expect(result).toMatchObject({ outcome: 'PROVIDER_MISMATCH' });
    expect(await sys.db('refunds').where({ order_id: orderId }).first()).toBeUndefined();
    expect((await sys.http('GET', `/orders/${orderId}`)).body.status).toBe('AWAITING_PAYMENT');
  });

  test("reconciliation never takes one provider's bill line for another provider's order", () => {
    const row = {
      kind: 'PAYMENT',
      outTradeNo: orderId,
      tradeNo: 't-1',
      amount,
      currency: 'CNY',
      at: new Date().toISOString(),
    } as const;
    const local = {
      out_trade_no: orderId,
      provider: 'alipay',
      trade_no: null,
      status: 'PENDING',
      amount,
      currency: 'CNY',
      paid_amount: null,
      paid_currency: null,
      order_status: 'AWAITING_PAYMENT',
      paid_trade_no: null,
    };
    expect(classifyBillPayment(row as never, local, 'sandbox')).toMatchObject({
      class: 'UNKNOWN_TRADE',
      detail: 'OTHER_PROVIDER',
      repair_status: 'NONE',
    });
    // The same line in the order's own provider's bill is a lost payment to repair.
    expect(classifyBillPayment(row as never, local, 'alipay')).toMatchObject({
      class: 'PAID_NOT_RECORDED',
      repair_status: 'PENDING',
    });
  });
});

describe('a mismatch is confirmed with the provider before it freezes an order', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ QUERY_FIRST_DELAY: '10m', QUERY_MAX_INTERVAL: '10m', PAYMENT_TIMEOUT: '15m' });
  }, 60_000);
  afterAll(async () => {
    await sys?.stop();
  });

  test('a mismatched notification the provider does not confirm is recorded and changes nothing; the order keeps its deadline and is paid later', async () => {
    const sku = await createProduct(sys, { stock: 2, price: 1999 });
    const order = await placeOrder(sys, sku);
    const before = (await sys.http('GET', `/orders/${order.orderId}`)).body;
    // Signed with the sandbox secret, one fen short, while nothing is paid at the sandbox.
    const { raw, headers } = sandboxNotification(sys, { outTradeNo: order.orderId, amount: order.amount - 1 });
    const r = await fetch(`${sys.apiUrl}/callbacks/sandbox`, { method: 'POST', headers, body: raw });
    expect(r.status).toBe(200);
    const after = await waitFor(
      async () => {
        const o = (await sys.http('GET', `/orders/${order.orderId}`)).body;
        return o.timeline.some((t: { type: string }) => t.type === 'NOTIFICATION_NOT_CONFIRMED') ? o : undefined;
      },
      { what: 'the unconfirmed notification on the timeline' },
    );
    expect(after.status).toBe('AWAITING_PAYMENT');
    expect(after.payment.expiresAt).toBe(before.payment.expiresAt);
    expect(after.timeline.find((t: { type: string }) => t.type === 'NOTIFICATION_NOT_CONFIRMED').message).toMatch(
      /reports (WAITING|NOT_PAID|PENDING|CREATED)/,
    );
    expect(await sys.db('stock').where({ sku }).first()).toMatchObject({ reserved: 1 });
    // Back in the wait with its deadline: the live stage says so.
    const live = await waitFor(
      async () => {
        const s = await sys.client.workflow.getHandle(orderWorkflowId(order.orderId)).query(statusQuery);
        return s.stage === 'AWAITING_PAYMENT' ? s : undefined;
      },
      { what: 'the workflow back in AWAITING_PAYMENT' },
    );
    expect(live.deadline).toBeDefined();

    // The buyer then really pays: the order is PAID as usual.
    await sys.sandbox('POST', `/v1/payments/${order.orderId}/pay`, {});
    await waitForStatus(sys, order.orderId, ['PAID'], 60_000);
  });

  test('a mismatch the provider confirms (really paid one fen short) still goes to review', async () => {
    const sku = await createProduct(sys, { stock: 1, price: 1999 });
    const order = await placeOrder(sys, sku);
    await sys.sandbox('POST', `/v1/payments/${order.orderId}/pay`, { amount: order.amount - 1 });
    const review = await waitForStatus(sys, order.orderId, ['NEEDS_REVIEW'], 60_000);
    expect(review.statusReason).toBe('PAYMENT_MISMATCH');
  });
});
