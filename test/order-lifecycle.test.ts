/**
 * The order payment lifecycle end to end: real dev server, real MySQL, the real sandbox over HTTP.
 */
import { createHash, randomBytes } from 'node:crypto';
import { orderIdForIdempotencyKey } from '../src/client/orders-service';
import { orderWorkflowId } from '../src/contracts/order';
import { signSandboxPayload } from '../src/providers/sandbox-signature';
import { createProduct, startSystem, stockOf, type TestSystem, userId, waitFor, waitForStatus } from './support/system';

let sys: TestSystem;

beforeAll(async () => {
  // A payment window no test can outlast, however slow the server: every order here is paid, cancelled or left open.
  // Stripe is configured (and never called) so that a retry can name another provider that this deployment offers.
  sys = await startSystem({
    PAYMENT_TIMEOUT: '10m',
    STRIPE_SECRET_KEY: 'sk_test_payflowLocal0123456789',
    STRIPE_WEBHOOK_SECRET: 'whsec_payflowTestSecret0123456789',
    STRIPE_PAYMENT_PAGE_URL: 'https://shop.example.com/pay',
    STRIPE_API_BASE: 'http://127.0.0.1:9',
  });
}, 60_000);

afterAll(async () => {
  // Orders left open (or watching for late money after a cancel) would otherwise run on for 10 minutes.
  if (sys) {
    for await (const wf of sys.client.workflow.list({
      query: `TaskQueue = '${sys.config.taskQueue}' AND ExecutionStatus = 'Running'`,
    })) {
      await sys.client.workflow
        .getHandle(wf.workflowId)
        .terminate('order-lifecycle suite cleanup')
        .catch(() => undefined);
    }
  }
  await sys?.stop();
}, 60_000);

afterEach(async () => {
  await sys.sandbox('POST', '/_control/reset');
});

async function placeOrder(sku: string, quantity = 1, headers: Record<string, string> = {}) {
  return sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity }] }, headers);
}

async function notificationsFor(orderId: string) {
  return (await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications as any[];
}

describe('happy path', () => {
  test('an order paid on the sandbox becomes PAID and its stock moves reserved -> sold exactly once', async () => {
    const sku = await createProduct(sys, { price: 1250, stock: 5 });
    const created = await placeOrder(sku, 2);
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      status: 'AWAITING_PAYMENT',
      amount: 2500,
      currency: 'CNY',
      payment: { provider: 'sandbox' },
    });
    expect(created.body.payment.paymentUrl).toBe(`${sys.sandboxUrl}/pay/${created.body.orderId}`);
    expect(await stockOf(sys, sku)).toEqual({ available: 3, reserved: 2, sold: 0 });

    const paid = await sys.sandbox('POST', `/v1/payments/${created.body.orderId}/pay`, {});
    expect(paid.status).toBe(200);
    const order = await waitForStatus(sys, created.body.orderId, ['PAID']);
    expect(order.payment).toMatchObject({ status: 'PAID', paidAmount: 2500 });
    expect(order.timeline.map((e: { type: string }) => e.type)).toEqual(
      expect.arrayContaining(['ORDER_CREATED', 'STOCK_RESERVED', 'PAYMENT_CREATED', 'STOCK_CONFIRMED', 'ORDER_PAID']),
    );
    expect(await stockOf(sys, sku)).toEqual({ available: 3, reserved: 0, sold: 2 });
    // The callback was acknowledged, so the sandbox stopped redelivering.
    const [n] = await waitFor(async () =>
      (await notificationsFor(created.body.orderId))[0]?.acknowledged
        ? notificationsFor(created.body.orderId)
        : undefined,
    );
    expect(n.acknowledged).toBe(true);
  });

  test('a multi-item order charges the catalog total of every line once', async () => {
    const a = await createProduct(sys, { price: 199, stock: 10 });
    const b = await createProduct(sys, { price: 1001, stock: 10 });
    const r = await sys.http('POST', '/orders', {
      userId: userId(),
      items: [
        { sku: a, quantity: 3 },
        { sku: b, quantity: 2 },
        { sku: a, quantity: 1 },
      ],
    });
    expect(r.status).toBe(201);
    expect(r.body.amount).toBe(4 * 199 + 2 * 1001);
    const order = (await sys.http('GET', `/orders/${r.body.orderId}`)).body;
    // Not the shop's id of the buyer (an email or a phone number, say): the order id is no credential.
    expect(order).not.toHaveProperty('userId');
    const page = await (await fetch(`${sys.apiUrl}/orders/${r.body.orderId}/wait`)).text();
    expect(page).toContain(r.body.orderId);
    expect(page).not.toContain('"userId"');
    expect(order.items).toEqual(
      expect.arrayContaining([
        { sku: a, quantity: 4, unitPrice: 199 },
        { sku: b, quantity: 2, unitPrice: 1001 },
      ]),
    );
  });
});

describe('notifications', () => {
  test('five duplicate notifications confirm once and decrement stock once', async () => {
    const sku = await createProduct(sys, { stock: 3 });
    const { body } = await placeOrder(sku);
    await sys.setFaults({ duplicateNotifications: 1 });
    await sys.sandbox('POST', `/v1/payments/${body.orderId}/pay`, {});
    const [n] = await waitFor(async () => {
      const list = await notificationsFor(body.orderId);
      return list[0]?.acknowledged ? list : undefined;
    });
    for (let i = 0; i < 4; i++) await sys.sandbox('POST', `/_control/notifications/${n.id}/redeliver`);
    await waitForStatus(sys, body.orderId, ['PAID']);
    const seen = await notificationsFor(body.orderId);
    expect(seen[0].sends).toBeGreaterThanOrEqual(5);
    // Every delivery was stored before it was answered; wait until the one row is routed and the workflow has
    // finished, so that no duplicate could still be on its way to confirm the order again.
    const inbox = await waitFor(
      async () => {
        const rows = await sys.db('notification_inbox').where({ out_trade_no: body.orderId });
        // Redeliveries acknowledged from memory reach `deliveries` a moment later.
        return rows.every((r) => r.status !== 'RECEIVED') && rows.reduce((n, r) => n + Number(r.deliveries), 0) >= 5
          ? rows
          : undefined;
      },
      { what: 'the notification to be routed, every delivery counted' },
    );
    expect(inbox).toHaveLength(1);
    expect(inbox[0].deliveries).toBeGreaterThanOrEqual(5);
    await sys.client.workflow.getHandle(orderWorkflowId(body.orderId)).result();
    const events = await sys.db('order_events').where({ order_id: body.orderId, type: 'ORDER_PAID' });
    expect(events).toHaveLength(1);
    expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 1 });
  });

  test('with every notification dropped the order still becomes PAID through active queries', async () => {
    const sku = await createProduct(sys, { stock: 2 });
    await sys.setFaults({ dropNotifications: 1 });
    const { body } = await placeOrder(sku);
    await sys.sandbox('POST', `/v1/payments/${body.orderId}/pay`, {});
    const order = await waitForStatus(sys, body.orderId, ['PAID']);
    expect((await notificationsFor(body.orderId))[0]).toMatchObject({ dropped: true, sends: 0 });
    expect(await sys.db('notification_inbox').where({ out_trade_no: body.orderId })).toHaveLength(0);
    expect(order.timeline.find((e: { type: string }) => e.type === 'ORDER_PAID').message).toMatch(/learned from query/);
    expect(await stockOf(sys, sku)).toEqual({ available: 1, reserved: 0, sold: 1 });
  });

  test('a paid amount that differs from the order goes to NEEDS_REVIEW and keeps stock reserved', async () => {
    const sku = await createProduct(sys, { price: 5000, stock: 2 });
    const { body } = await placeOrder(sku);
    await sys.sandbox('POST', `/v1/payments/${body.orderId}/pay`, { amount: 1 });
    const order = await waitForStatus(sys, body.orderId, ['NEEDS_REVIEW']);
    expect(order.statusReason).toBe('PAYMENT_MISMATCH');
    expect(order.timeline.some((e: { message: string }) => /amount 1 != 5000/.test(e.message))).toBe(true);
    expect(await stockOf(sys, sku)).toEqual({ available: 1, reserved: 1, sold: 0 });
  });
});

describe('rejected notifications', () => {
  async function postCallback(raw: string, signature: string | undefined) {
    const response = await fetch(`${sys.apiUrl}/callbacks/sandbox`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(signature ? { 'sandbox-signature': signature } : {}) },
      body: raw,
    });
    return { status: response.status, body: await response.text() };
  }

  async function unpaidOrder() {
    const sku = await createProduct(sys, { price: 700, stock: 1 });
    const { body } = await placeOrder(sku);
    return body.orderId as string;
  }

  function notification(orderId: string, overrides: Record<string, unknown> = {}) {
    return JSON.stringify({
      id: `evt_forged_${randomBytes(4).toString('hex')}`,
      type: 'payment.succeeded',
      data: {
        outTradeNo: orderId,
        tradeNo: 'SBX-FORGED',
        amount: 700,
        currency: 'CNY',
        merchantId: sys.config.sandboxMerchantId,
        paidAt: new Date().toISOString(),
        ...overrides,
      },
    });
  }

  const now = () => Math.floor(Date.now() / 1000);

  test.each([
    ['a bad signature', (raw: string) => signSandboxPayload('not-the-secret', raw, now()), 401, 'BAD_SIGNATURE'],
    [
      'a stale timestamp',
      (raw: string) => signSandboxPayload('test-sandbox-secret', raw, now() - 3600),
      401,
      'STALE_TIMESTAMP',
    ],
    ['no signature', () => undefined, 401, 'MISSING_SIGNATURE'],
  ])('a notification with %s is refused with 4xx and changes nothing', async (_what, sign, status, code) => {
    const orderId = await unpaidOrder();
    const raw = notification(orderId);
    const r = await postCallback(raw, sign(raw));
    expect(r.status).toBe(status);
    expect(JSON.parse(r.body).error).toBe(code);
    await expectUntouched(orderId, raw, code);
  });

  test('a correctly signed body that is not JSON is refused with 400', async () => {
    const orderId = await unpaidOrder();
    const raw = `{"id": "evt_x", "type": "payment.succeeded", "data": {"outTradeNo": "${orderId}"`;
    const r = await postCallback(raw, signSandboxPayload('test-sandbox-secret', raw, now()));
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error).toBe('MALFORMED_BODY');
    await expectUntouched(orderId, raw, 'MALFORMED_BODY');
  });

  test('a body changed by one byte after signing is refused', async () => {
    const orderId = await unpaidOrder();
    const raw = notification(orderId);
    const signature = signSandboxPayload('test-sandbox-secret', raw, now());
    const tampered = raw.replace('"amount":700', '"amount":701');
    const r = await postCallback(tampered, signature);
    expect(r.status).toBe(401);
    await expectUntouched(orderId, tampered, 'BAD_SIGNATURE');
  });

  test('a genuine notification for another merchant is refused', async () => {
    const orderId = await unpaidOrder();
    const raw = notification(orderId, { merchantId: 'someone-else' });
    const r = await postCallback(raw, signSandboxPayload('test-sandbox-secret', raw, now()));
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error).toBe('WRONG_MERCHANT');
    await expectUntouched(orderId, raw, 'WRONG_MERCHANT');
  });

  /**
   * The refused body was handled to the end (its audit row, written just before the refusal, is there), and nothing
   * of the order moved: no inbox row, no signal in the workflow's history, the timeline as it was.
   */
  async function expectUntouched(orderId: string, body: string, reason: string) {
    const sha = createHash('sha256').update(body).digest('hex');
    await waitFor(async () => sys.db('notification_rejections').where({ body_sha256: sha, reason }).first(), {
      what: `the ${reason} audit row`,
    });
    const history = await sys.client.workflow.getHandle(orderWorkflowId(orderId)).fetchHistory();
    expect((history.events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes)).toEqual([]);
    const order = (await sys.http('GET', `/orders/${orderId}`)).body;
    expect(order.status).toBe('AWAITING_PAYMENT');
    // The units are reserved by POST /orders before the workflow starts and prices the order (README, "Flash sales").
    expect(order.timeline.map((e: { type: string }) => e.type)).toEqual([
      'STOCK_RESERVED',
      'ORDER_CREATED',
      'PAYMENT_CREATED',
    ]);
    expect(await sys.db('notification_inbox').where({ out_trade_no: orderId })).toHaveLength(0);
  }
});

describe('order API', () => {
  test('out of stock answers 409 OUT_OF_STOCK and leaves no reservation, no order and no workflow behind', async () => {
    const a = await createProduct(sys, { stock: 5 });
    const b = await createProduct(sys, { stock: 1 });
    const r = await sys.http('POST', '/orders', {
      userId: userId(),
      items: [
        { sku: a, quantity: 2 },
        { sku: b, quantity: 2 },
      ],
    });
    expect(r.status).toBe(409);
    expect(r.body).toMatchObject({ error: 'OUT_OF_STOCK', sku: b });
    expect(await stockOf(sys, a)).toEqual({ available: 5, reserved: 0, sold: 0 });
    expect(await stockOf(sys, b)).toEqual({ available: 1, reserved: 0, sold: 0 });
    // Answered from MySQL before anything started: there is no order to look up.
    expect(r.body.orderId).toBeUndefined();
    expect(await sys.db('tcc_fence').whereIn('resource', [a, b])).toEqual([]);
  });

  test('an unknown SKU answers 422 UNKNOWN_SKU', async () => {
    const r = await sys.http('POST', '/orders', {
      userId: userId(),
      items: [{ sku: 'no-such-sku-anywhere', quantity: 1 }],
    });
    expect(r.status).toBe(422);
    expect(r.body).toMatchObject({ error: 'UNKNOWN_SKU', skus: ['no-such-sku-anywhere'] });
  });

  test.each([
    ['no items', { userId: 'u1', items: [] }],
    ['a negative quantity', { userId: 'u1', items: [{ sku: 'a', quantity: -1 }] }],
    ['a client-supplied price', { userId: 'u1', items: [{ sku: 'a', quantity: 1, price: 1 }] }],
    ['a fractional quantity', { userId: 'u1', items: [{ sku: 'a', quantity: 1.5 }] }],
    ['an unknown provider', { userId: 'u1', items: [{ sku: 'a', quantity: 1 }], provider: 'paypal' }],
    // MySQL compares "u1 " equal to "u1" while the order id hashes the exact string: a 5xx before the rule.
    ['a userId ending in a space', { userId: 'u1 ', items: [{ sku: 'a', quantity: 1 }] }],
    ['a userId with a newline', { userId: 'u1\n- 1 x free-sku', items: [{ sku: 'a', quantity: 1 }] }],
    ['a userId with a lone surrogate', { userId: 'u\ud800', items: [{ sku: 'a', quantity: 1 }] }],
    [
      'lines of one SKU adding up to more than 10,000',
      {
        userId: 'u1',
        items: [
          { sku: 'a', quantity: 10_000 },
          { sku: 'b', quantity: 1 },
          { sku: 'a', quantity: 1 },
        ],
      },
    ],
  ])('a body with %s answers 400 VALIDATION_FAILED', async (_what, body) => {
    const r = await sys.http('POST', '/orders', body);
    expect(r.status).toBe(400);
    expect(r.body.error).toBe('VALIDATION_FAILED');
    expect(typeof r.body.message).toBe('string');
  });

  test('malformed JSON answers 400 in the error shape', async () => {
    const response = await fetch(`${sys.apiUrl}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"userId":',
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: string }).error).toBe('VALIDATION_FAILED');
  });

  test('the same Idempotency-Key twice gives one order: 201 with the same body, replays marked Idempotent-Replayed', async () => {
    const sku = await createProduct(sys, { stock: 5 });
    const body = { userId: userId(), items: [{ sku, quantity: 1 }] };
    const key = `key-${randomBytes(4).toString('hex')}`;
    const post = async () => {
      const r = await fetch(`${sys.apiUrl}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify(body),
      });
      return { status: r.status, replayed: r.headers.get('idempotent-replayed'), body: (await r.json()) as any };
    };
    const [first, second] = await Promise.all([post(), post()]);
    const third = await post();
    // Sent together, one of the two placed the order and the other joined it (or, still being set up, was asked to
    // come back); the third is answered from the stored order. Each answer that has the order is the first one's.
    expect([first.status, second.status]).toContain(201);
    const placed = [first, second].filter((r) => r.status === 201);
    expect(placed.filter((r) => r.replayed === null)).toHaveLength(1);
    for (const r of [...placed, third]) expect(r.body).toEqual(placed.find((p) => p.replayed === null)!.body);
    expect(third).toMatchObject({ status: 201, replayed: 'true' });
    expect(third.body.payment.paymentUrl).toBe(`${sys.sandboxUrl}/pay/${third.body.orderId}`);
    expect(await stockOf(sys, sku)).toEqual({ available: 4, reserved: 1, sold: 0 });
    const reused = await sys.http(
      'POST',
      '/orders',
      { ...body, items: [{ sku, quantity: 2 }] },
      { 'idempotency-key': key },
    );
    expect(reused.status).toBe(422);
    expect(reused.body.error).toBe('IDEMPOTENCY_KEY_REUSED');
  });

  test('a user cancel closes the payment, releases stock, and a second cancel is a no-op', async () => {
    const sku = await createProduct(sys, { stock: 2 });
    const { body } = await placeOrder(sku);
    const r = await sys.http('POST', `/orders/${body.orderId}/cancel`, {});
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ orderId: body.orderId, status: 'CANCELLED' });
    expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 0 });
    expect((await sys.sandbox('GET', `/v1/payments/${body.orderId}`)).body.status).toBe('CLOSED');
    expect((await sys.http('POST', `/orders/${body.orderId}/cancel`, {})).status).toBe(200);
  });

  test('the same Idempotency-Key with a different points, coupon or provider is refused 422 IDEMPOTENCY_KEY_REUSED, never answered with the first order', async () => {
    const [a, b] = [await createProduct(sys, { stock: 5 }), await createProduct(sys, { stock: 5 })];
    const body = {
      userId: userId(),
      items: [
        { sku: a, quantity: 1 },
        { sku: b, quantity: 1 },
      ],
    };
    const key = `key-${randomBytes(4).toString('hex')}`;
    const first = await sys.http('POST', '/orders', body, { 'idempotency-key': key });
    expect(first.status).toBe(201);
    // The same request written differently is the same request: lines in another order, a line split in two, the
    // default provider named.
    const same = await sys.http(
      'POST',
      '/orders',
      {
        ...body,
        items: [
          { sku: b, quantity: 1 },
          { sku: a, quantity: 1 },
        ],
        provider: 'sandbox',
      },
      { 'idempotency-key': key },
    );
    expect(same.status).toBeLessThan(300);
    expect(same.body.orderId).toBe(first.body.orderId);
    for (const changed of [{ points: 10 }, { couponCode: 'NOT-THE-FIRST-ONE' }, { provider: 'stripe' }]) {
      const reused = await sys.http('POST', '/orders', { ...body, ...changed }, { 'idempotency-key': key });
      expect({ changed, status: reused.status, error: reused.body.error }).toEqual({
        changed,
        status: 422,
        error: 'IDEMPOTENCY_KEY_REUSED',
      });
    }
    expect(await stockOf(sys, a)).toEqual({ available: 4, reserved: 1, sold: 0 });
    expect(await stockOf(sys, b)).toEqual({ available: 4, reserved: 1, sold: 0 });
  });

  test('a setup the provider refuses answers 409 ORDER_FAILED with its reason, the same the first time and on every retry, and never asks for a retry that cannot succeed', async () => {
    const sku = await createProduct(sys, { price: 1500, stock: 2 });
    const [user, key] = [userId(), `key-${randomBytes(4).toString('hex')}`];
    const orderId = orderIdForIdempotencyKey(user, key);
    // The order's out-trade-no is taken at the provider by a payment of another amount: it refuses the order's payment
    // (OUT_TRADE_NO_USED), which no retry can change.
    const taken = await sys.sandbox('POST', '/v1/payments', {
      outTradeNo: orderId,
      amount: 1,
      currency: 'CNY',
      merchantId: sys.config.sandboxMerchantId,
      notifyUrl: `${sys.apiUrl}/callbacks/sandbox`,
      expiresAt: new Date(Date.now() + 600_000).toISOString(),
    });
    expect(taken.status).toBe(200);
    const post = async () => {
      const r = await fetch(`${sys.apiUrl}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify({ userId: user, items: [{ sku, quantity: 1 }] }),
      });
      return { status: r.status, retryAfter: r.headers.get('retry-after'), body: (await r.json()) as any };
    };
    const first = await post();
    expect(first).toMatchObject({
      status: 409,
      retryAfter: null,
      body: { error: 'ORDER_FAILED', reason: 'PROVIDER_REJECTED', orderId },
    });
    // The provider's own words help the buyer and support; they stay.
    expect(first.body.message).toMatch(/already used by a payment with a different amount/);
    await waitForStatus(sys, orderId, ['FAILED']);
    // Answered from the FAILED order now: the same answer.
    expect(await post()).toEqual(first);
    expect(await post()).toEqual(first);
    expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 0 });
  });

  test('bodyless POSTs sent with Content-Type: application/json and an empty body are accepted, as the contract gives them no body', async () => {
    const sku = await createProduct(sys, { stock: 2 });
    const { body } = await placeOrder(sku);
    const emptyJson = (path: string) =>
      fetch(`${sys.apiUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '' });
    const refund = await emptyJson(`/orders/${body.orderId}/refund`);
    // Not paid: refused for what the order is, not for the empty body.
    expect({ status: refund.status, error: ((await refund.json()) as { error: string }).error }).toEqual({
      status: 409,
      error: 'ORDER_NOT_REFUNDABLE',
    });
    const cancel = await emptyJson(`/orders/${body.orderId}/cancel`);
    expect({ status: cancel.status, body: await cancel.json() }).toEqual({
      status: 200,
      body: { orderId: body.orderId, status: 'CANCELLED' },
    });
    // A body that is there must still be JSON, and POST /orders still needs one.
    const broken = await fetch(`${sys.apiUrl}/orders/${body.orderId}/cancel`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"reason":',
    });
    expect(broken.status).toBe(400);
    const create = await emptyJson('/orders');
    expect({ status: create.status, error: ((await create.json()) as { error: string }).error }).toEqual({
      status: 400,
      error: 'VALIDATION_FAILED',
    });
  });

  test('a paid order cannot be cancelled', async () => {
    const sku = await createProduct(sys, { stock: 2 });
    const { body } = await placeOrder(sku);
    await sys.sandbox('POST', `/v1/payments/${body.orderId}/pay`, {});
    await waitForStatus(sys, body.orderId, ['PAID']);
    const r = await sys.http('POST', `/orders/${body.orderId}/cancel`, {});
    expect(r.status).toBe(409);
    expect(r.body).toMatchObject({ error: 'ORDER_NOT_CANCELLABLE', status: 'PAID' });
  });

  test('an unknown order answers 404 ORDER_NOT_FOUND', async () => {
    expect((await sys.http('GET', '/orders/ord_nope')).body.error).toBe('ORDER_NOT_FOUND');
    expect((await sys.http('GET', '/orders/ord_nope')).status).toBe(404);
  });

  test('admin endpoints refuse a missing or wrong token', async () => {
    expect((await sys.http('PUT', '/admin/products/x1', { name: 'x', price: 1, stock: 1 })).status).toBe(401);
    expect(
      (await sys.http('GET', '/admin/products/x1', undefined, { authorization: 'Bearer wrong-token-xx' })).status,
    ).toBe(401);
  });

  test('a hot SKU can be sharded into buckets: stock is spread over them, reads as one sum, and buckets holding reservations cannot be removed', async () => {
    const auth = { authorization: `Bearer ${sys.config.adminToken}` };
    const sku = await createProduct(sys, { price: 500, stock: 10 });
    const put = (body: Record<string, unknown>) =>
      sys.http('PUT', `/admin/products/${sku}`, { name: 'hot', price: 500, ...body }, auth);
    expect((await put({ stock: 10, buckets: 0 })).status).toBe(400);
    expect((await put({ stock: 10, buckets: 65 })).status).toBe(400);
    const sharded = await put({ stock: 10, buckets: 4 });
    expect(sharded.body).toMatchObject({ stock: { available: 10, reserved: 0, sold: 0 }, buckets: 4 });
    expect(
      (await sys.db('stock_buckets').where({ sku }).orderBy('bucket').select('bucket', 'available')).map((b) => [
        b.bucket,
        Number(b.available),
      ]),
    ).toEqual([
      [1, 3],
      [2, 2],
      [3, 2],
    ]);
    expect(Number((await sys.db('stock').where({ sku }).first('available')).available)).toBe(3);

    const order = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 4 }] });
    expect(order.status).toBe(201);
    expect(await stockOf(sys, sku)).toEqual({ available: 6, reserved: 4, sold: 0 });
    const held = (await sys.db('stock_holds').where({ xid: order.body.orderId }).select('bucket')).map((h) =>
      Number(h.bucket),
    );
    // Shrinking to one bucket would drop buckets that hold this order's units (unless it took only from bucket 0).
    const shrink = await put({ stock: 6, buckets: 1 });
    if (held.some((b) => b > 0)) expect(shrink).toMatchObject({ status: 409, body: { error: 'STOCK_BUCKETS_IN_USE' } });
    else expect(shrink.status).toBe(200);
    expect((await put({ stock: 20, buckets: 8 })).body).toMatchObject({
      stock: { available: 20, reserved: 4, sold: 0 },
      buckets: 8,
    });
    const { total_in: totalIn } = await sys.db('stock').where({ sku }).first('total_in');
    expect(Number(totalIn)).toBe(24);
  });

  test('concurrent PUTs of new and existing products all succeed (gap-lock deadlocks between them are retried)', async () => {
    const auth = { authorization: `Bearer ${sys.config.adminToken}` };
    const skus = Array.from({ length: 8 }, () => `conc-${randomBytes(4).toString('hex')}`);
    const first = await Promise.all(
      skus.map((sku, i) =>
        sys.http(
          'PUT',
          `/admin/products/${sku}`,
          { name: sku, price: 100 + i, stock: 5, ...(i % 2 ? { buckets: 3 } : {}) },
          auth,
        ),
      ),
    );
    expect(first.map((r) => r.status)).toEqual(skus.map(() => 201));
    const again = await Promise.all(
      skus.map((sku, i) => sys.http('PUT', `/admin/products/${sku}`, { name: sku, price: 100 + i, stock: 7 }, auth)),
    );
    expect(again.map((r) => r.status)).toEqual(skus.map(() => 200));
    for (const r of again) expect(r.body.stock).toEqual({ available: 7, reserved: 0, sold: 0 });
  });

  test('a product or coupon replaced without a currency keeps its own; a new one is CNY', async () => {
    // An operator changing the stock or price of a USD product sent { name, price, stock }: the product became CNY,
    // 1,000 cents turned into 1,000 fen, and every new order was charged in the wrong currency.
    const auth = { authorization: `Bearer ${sys.config.adminToken}` };
    const sku = `cur-${randomBytes(4).toString('hex')}`;
    expect(
      (await sys.http('PUT', `/admin/products/${sku}`, { name: 'mug', price: 1000, currency: 'USD', stock: 3 }, auth))
        .status,
    ).toBe(201);
    const replaced = await sys.http('PUT', `/admin/products/${sku}`, { name: 'mug', price: 1200, stock: 5 }, auth);
    expect(replaced.status).toBe(200);
    expect(replaced.body).toMatchObject({ price: 1200, currency: 'USD', stock: { available: 5 } });
    const order = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] });
    expect(order.status).toBe(201);
    expect(order.body).toMatchObject({ amount: 1200, currency: 'USD' });
    // Said outright, the currency changes.
    const toEur = await sys.http(
      'PUT',
      `/admin/products/${sku}`,
      { name: 'mug', price: 900, currency: 'EUR', stock: 5 },
      auth,
    );
    expect(toEur.body).toMatchObject({ price: 900, currency: 'EUR' });
    const fresh = `cur-${randomBytes(4).toString('hex')}`;
    expect(
      (await sys.http('PUT', `/admin/products/${fresh}`, { name: 'tea', price: 300, stock: 1 }, auth)).body,
    ).toMatchObject({ currency: 'CNY' });

    const code = `CUR-${randomBytes(4).toString('hex')}`;
    const user = userId();
    expect(
      (await sys.http('PUT', `/admin/coupons/${code}`, { userId: user, discount: 100, currency: 'USD' }, auth)).status,
    ).toBe(201);
    const coupon = await sys.http('PUT', `/admin/coupons/${code}`, { userId: user, discount: 150 }, auth);
    expect(coupon.status).toBe(200);
    expect(coupon.body).toMatchObject({ discount: 150, currency: 'USD' });
    const newCoupon = `CUR-${randomBytes(4).toString('hex')}`;
    expect(
      (await sys.http('PUT', `/admin/coupons/${newCoupon}`, { userId: user, discount: 10 }, auth)).body,
    ).toMatchObject({ currency: 'CNY' });
  });

  test('a stock replacement from a stale read is refused with expectedAvailable: units reserved since the read are not sold twice', async () => {
    // An operator read 10 available, an order then reserved 4 (across buckets), and the operator's "set it to 10"
    // would have made 10 sellable while 4 were already held: 14 units promised from 10.
    const auth = { authorization: `Bearer ${sys.config.adminToken}` };
    const sku = await createProduct(sys, { price: 500, stock: 10 });
    const put = (body: Record<string, unknown>) =>
      sys.http('PUT', `/admin/products/${sku}`, { name: 'hot', price: 500, ...body }, auth);
    expect((await put({ stock: 10, buckets: 3 })).status).toBe(200);
    const read = await sys.http('GET', `/admin/products/${sku}`, undefined, auth);
    expect(read.body).toMatchObject({ stock: { available: 10 } });
    const order = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 4 }] });
    expect(order.status).toBe(201);

    const stale = await put({ stock: 10, expectedAvailable: read.body.stock.available });
    expect(stale.status).toBe(409);
    expect(stale.body).toMatchObject({
      error: 'STOCK_CHANGED',
      available: 6,
      reserved: 4,
      sold: 0,
      expectedAvailable: 10,
    });
    expect(await stockOf(sys, sku)).toEqual({ available: 6, reserved: 4, sold: 0 });
    // Read again, decided again: accepted.
    const fresh = await put({ stock: 8, expectedAvailable: 6 });
    expect(fresh.status).toBe(200);
    expect(fresh.body).toMatchObject({ stock: { available: 8, reserved: 4, sold: 0 } });
    // A product that does not exist has 0 available.
    const missing = `nope-${randomBytes(4).toString('hex')}`;
    const create = (expectedAvailable: number) =>
      sys.http('PUT', `/admin/products/${missing}`, { name: 'n', price: 1, stock: 1, expectedAvailable }, auth);
    expect((await create(2)).body).toMatchObject({ error: 'STOCK_CHANGED', available: 0 });
    expect((await create(0)).status).toBe(201);
  });

  test('healthz and metrics answer', async () => {
    expect((await sys.http('GET', '/healthz')).body).toMatchObject({
      status: 'ok',
      checks: { mysql: 'ok', temporal: 'ok' },
    });
    const metrics = await fetch(`${sys.apiUrl}/metrics`);
    expect(await metrics.text()).toMatch(/payflow_notifications_received_total/);
  });
});
