/**
 * Orders with stock, a coupon and points through the real API, worker, MySQL and sandbox: server-side pricing,
 * all three participants consumed when paid, all three released when the order expires, and failures (used
 * coupon, too few points, nothing left to pay) that release what was already taken.
 */
import { randomBytes } from 'node:crypto';
import { orderWorkflowId } from '../src/contracts/order';
import { checkInvariants } from '../src/ops/invariants';
import { createProviders } from '../src/providers';
import { type Api, buildApi } from '../src/client/app';
import { orderIdForIdempotencyKey } from '../src/client/orders-service';
import { createProduct, startSystem, stockOf, type TestSystem, userId, waitFor, waitForStatus } from './support/system';

jest.setTimeout(120_000); // the shared 2-core machine is often loaded: waits are bounded generously

/**
 * `sys`: a 10-minute payment window, so that nothing expires while a test looks at or pays an order, however slow the
 * server; `expiring`: a 3 s window for the test that waits for an order to expire. Both share the database.
 */
let sys: TestSystem;
let expiring: TestSystem;
let admin: Record<string, string>;

beforeAll(async () => {
  [sys, expiring] = await Promise.all([
    startSystem({
      PAYMENT_TIMEOUT: '10m',
      QUERY_FIRST_DELAY: '1s',
      QUERY_MAX_INTERVAL: '1s',
      PROVIDER_EXPIRY_MARGIN: '1s',
    }),
    startSystem({
      PAYMENT_TIMEOUT: '3s',
      QUERY_FIRST_DELAY: '1s',
      QUERY_MAX_INTERVAL: '1s',
      PROVIDER_EXPIRY_MARGIN: '1s',
    }),
  ]);
  admin = { authorization: `Bearer ${sys.config.adminToken}` };
}, 120_000);

afterAll(async () => {
  // A cancelled order's workflow watches for late money until its (10-minute) provider-side expiry: end it.
  if (sys) {
    for await (const wf of sys.client.workflow.list({
      query: `TaskQueue = '${sys.config.taskQueue}' AND ExecutionStatus = 'Running'`,
    })) {
      await sys.client.workflow
        .getHandle(wf.workflowId)
        .terminate('order-benefits suite cleanup')
        .catch(() => undefined);
    }
  }
  await sys?.stop();
  await expiring?.stop();
}, 120_000);

async function coupon(user: string, discount: number, on: TestSystem = sys): Promise<string> {
  const code = `C-${randomBytes(5).toString('hex')}`;
  const r = await on.http('PUT', `/admin/coupons/${code}`, { userId: user, discount, currency: 'CNY' }, admin);
  expect(r.status).toBe(201);
  return code;
}

async function points(user: string, balance: number, on: TestSystem = sys): Promise<void> {
  const r = await on.http('PUT', `/admin/points/${user}`, { balance }, admin);
  expect(r.status).toBe(200);
}

const couponOf = async (code: string) => (await sys.http('GET', `/admin/coupons/${code}`, undefined, admin)).body;
const pointsOf = async (user: string) => {
  const { available, frozen, spent } = (await sys.http('GET', `/admin/points/${user}`, undefined, admin)).body;
  return { available, frozen, spent };
};

/** A buyer with a 300 coupon and 1,000 points ordering 2 x 1,999 of a fresh SKU with 500 of the points. */
async function placeDiscountedOrder(on: TestSystem = sys) {
  const sku = await createProduct(on, { price: 1999, stock: 5 });
  const user = userId();
  const code = await coupon(user, 300, on);
  await points(user, 1000, on);
  const r = await on.http('POST', '/orders', {
    userId: user,
    items: [{ sku, quantity: 2 }],
    couponCode: code,
    points: 500,
  });
  return { sku, user, code, r };
}

test('the charged amount is the catalog total minus the coupon minus the points, and all three are held while unpaid', async () => {
  const { sku, user, code, r } = await placeDiscountedOrder();
  expect(r.status).toBe(201);
  expect(r.body.amount).toBe(2 * 1999 - 300 - 500);
  expect((await sys.sandbox('GET', `/v1/payments/${r.body.orderId}`)).body.amount).toBe(3198);
  expect(await stockOf(sys, sku)).toEqual({ available: 3, reserved: 2, sold: 0 });
  expect(await couponOf(code)).toMatchObject({ status: 'FROZEN', orderId: r.body.orderId });
  expect(await pointsOf(user)).toEqual({ available: 500, frozen: 500, spent: 0 });
  // End it before the suite moves on (its window is 10 minutes).
  expect((await sys.http('POST', `/orders/${r.body.orderId}/cancel`, {})).body).toMatchObject({ status: 'CANCELLED' });
});

test('a paid order consumes the stock, uses the coupon and spends the points', async () => {
  const { sku, user, code, r } = await placeDiscountedOrder();
  expect(r.status).toBe(201);
  expect((await sys.sandbox('POST', `/v1/payments/${r.body.orderId}/pay`, {})).status).toBe(200);
  await waitForStatus(sys, r.body.orderId, ['PAID'], 60_000);
  expect(await stockOf(sys, sku)).toEqual({ available: 3, reserved: 0, sold: 2 });
  expect(await couponOf(code)).toMatchObject({ status: 'USED', orderId: r.body.orderId });
  expect(await pointsOf(user)).toEqual({ available: 500, frozen: 0, spent: 500 });
});

test('an order nobody pays expires and releases the stock, the coupon and the points', async () => {
  const { sku, user, code, r } = await placeDiscountedOrder(expiring);
  expect(r.status).toBe(201);
  const order = await waitForStatus(expiring, r.body.orderId, ['EXPIRED'], 90_000);
  expect(await stockOf(sys, sku)).toEqual({ available: 5, reserved: 0, sold: 0 });
  expect(await couponOf(code)).toMatchObject({ status: 'AVAILABLE', orderId: null });
  expect(await pointsOf(user)).toEqual({ available: 1000, frozen: 0, spent: 0 });
  const types = order.timeline.map((e: { type: string }) => e.type);
  expect(types).toEqual(expect.arrayContaining(['STOCK_RELEASED', 'COUPON_RELEASED', 'POINTS_RELEASED']));
});

test('an order whose coupon is already used fails with 409 COUPON_UNAVAILABLE at pricing and leaves the stock as it was', async () => {
  const sku = await createProduct(sys, { price: 1000, stock: 4 });
  const user = userId();
  const code = await coupon(user, 100);
  const first = await sys.http('POST', '/orders', { userId: user, items: [{ sku, quantity: 1 }], couponCode: code });
  expect(first.status).toBe(201);
  expect((await sys.sandbox('POST', `/v1/payments/${first.body.orderId}/pay`, {})).status).toBe(200);
  await waitForStatus(sys, first.body.orderId, ['PAID'], 60_000);
  expect(await couponOf(code)).toMatchObject({ status: 'USED' });

  const second = await sys.http('POST', '/orders', { userId: user, items: [{ sku, quantity: 2 }], couponCode: code });
  expect(second.status).toBe(409);
  expect(second.body).toMatchObject({ error: 'COUPON_UNAVAILABLE' });
  expect(await stockOf(sys, sku)).toEqual({ available: 3, reserved: 0, sold: 1 });
});

test('a coupon taken by a concurrent order between pricing and reservation fails cleanly and releases the stock and the points', async () => {
  const sku = await createProduct(sys, { price: 1000, stock: 10 });
  const user = userId();
  const code = await coupon(user, 100);
  await points(user, 50);
  // Both orders price the coupon as available; only one Try can freeze it. Keyed, so that the test knows the loser's
  // order id (a refusal names none).
  const keys = [1, 2].map(() => `k-${randomBytes(6).toString('hex')}`);
  const results = await Promise.all(
    keys.map((key) =>
      sys.http(
        'POST',
        '/orders',
        { userId: user, items: [{ sku, quantity: 1 }], couponCode: code },
        { 'idempotency-key': key },
      ),
    ),
  );
  expect(results.map((r) => r.status).sort()).toEqual([201, 409]);
  const loser = results.find((r) => r.status === 409)!;
  await expectRefusal(loser, 409, { error: 'COUPON_UNAVAILABLE', couponCode: code });
  const loserId = orderIdForIdempotencyKey(user, keys[results.indexOf(loser)]!);
  // The loser fails at pricing (the winner already froze the coupon: no order row is written) or at its Try (the row
  // says FAILED), depending on which of the two got there first; either way its workflow ends FAILED having released
  // its stock and points, and the same answer.
  expect(await sys.client.workflow.getHandle(orderWorkflowId(loserId)).result()).toMatchObject({
    status: 'FAILED',
    reason: 'COUPON_UNAVAILABLE',
  });
  const row = await sys.db('orders').where({ order_id: loserId }).first('status');
  expect(row === undefined || row.status === 'FAILED').toBe(true);
  expect(await stockOf(sys, sku)).toEqual({ available: 9, reserved: 1, sold: 0 });
  expect(await pointsOf(user)).toEqual({ available: 50, frozen: 0, spent: 0 });
});

test('too few points fail with 409 INSUFFICIENT_POINTS and release the stock and the coupon already frozen', async () => {
  const sku = await createProduct(sys, { price: 1000, stock: 4 });
  const user = userId();
  const code = await coupon(user, 100);
  await points(user, 99);
  const key = `k-${randomBytes(6).toString('hex')}`;
  const send = () =>
    sys.http(
      'POST',
      '/orders',
      { userId: user, items: [{ sku, quantity: 1 }], couponCode: code, points: 100 },
      { 'idempotency-key': key },
    );
  const r = await send();
  await expectRefusal(r, 409, { error: 'INSUFFICIENT_POINTS', requested: 100 });
  // The API answers as soon as the Try fails; the compensation completes before the order is marked FAILED.
  const order = await waitForStatus(sys, orderIdForIdempotencyKey(user, key), ['FAILED']);
  expect(order.statusReason).toBe('INSUFFICIENT_POINTS');
  expect(await stockOf(sys, sku)).toEqual({ available: 4, reserved: 0, sold: 0 });
  expect(await couponOf(code)).toMatchObject({ status: 'AVAILABLE', orderId: null });
  expect(await pointsOf(user)).toEqual({ available: 99, frozen: 0, spent: 0 });
  // A retry with the same key: the same answer, read from the FAILED row.
  expect(await send()).toEqual(r);
});

test('an order that coupon and points would make free is refused with 422 ZERO_AMOUNT and holds nothing', async () => {
  const sku = await createProduct(sys, { price: 500, stock: 2 });
  const user = userId();
  const code = await coupon(user, 300);
  await points(user, 1000);
  const r = await sys.http('POST', '/orders', {
    userId: user,
    items: [{ sku, quantity: 1 }],
    couponCode: code,
    points: 200,
  });
  expect(r.status).toBe(422);
  expect(r.body).toMatchObject({ error: 'ZERO_AMOUNT' });
  expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 0 });
  expect(await couponOf(code)).toMatchObject({ status: 'AVAILABLE' });
  expect(await pointsOf(user)).toEqual({ available: 1000, frozen: 0, spent: 0 });
});

test('points redeemed on an order priced in another currency than POINTS_CURRENCY are refused 422 and hold nothing', async () => {
  // 10,000 points granted as 100.00 CNY took 100.00 USD off a USD order (1 point = 1 minor unit, whatever the
  // currency), and 10,000 JPY off a JPY one; the refund handed the points back to be spent again.
  const user = userId();
  await points(user, 10_000);
  for (const currency of ['USD', 'JPY']) {
    const sku = await createProduct(sys, { price: 20_000, stock: 2, currency });
    const r = await sys.http('POST', '/orders', { userId: user, items: [{ sku, quantity: 1 }], points: 10_000 });
    expect(r.status).toBe(422);
    expect(r.body).toMatchObject({ error: 'POINTS_CURRENCY_MISMATCH', currency, pointsCurrency: 'CNY' });
    expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 0 });
  }
  expect(await pointsOf(user)).toEqual({ available: 10_000, frozen: 0, spent: 0 });
  // In the points' own currency they are redeemed as before.
  const cny = await createProduct(sys, { price: 20_000, stock: 1 });
  const ok = await sys.http('POST', '/orders', { userId: user, items: [{ sku: cny, quantity: 1 }], points: 10_000 });
  expect(ok.status).toBe(201);
  expect(ok.body).toMatchObject({ amount: 10_000, currency: 'CNY' });
  expect(await pointsOf(user)).toEqual({ available: 0, frozen: 10_000, spent: 0 });
});

test("someone else's or an unknown coupon is refused with 409 COUPON_UNAVAILABLE before anything is reserved", async () => {
  const sku = await createProduct(sys, { price: 1000, stock: 2 });
  const code = await coupon(userId(), 100);
  for (const couponCode of [code, 'NO-SUCH-COUPON']) {
    const r = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }], couponCode });
    expect(r.status).toBe(409);
    expect(r.body.error).toBe('COUPON_UNAVAILABLE');
  }
  expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 0 });
});

test("an operator's points change made from a balance read before an order froze points is refused, not a blind overwrite", async () => {
  const sku = await createProduct(sys, { price: 1999, stock: 5 });
  const user = userId();
  await points(user, 1000);
  // The operator reads 1,000 and means to add 200.
  const read = await pointsOf(user);
  expect(read.available).toBe(1000);
  // Meanwhile the buyer's order freezes 500 of them.
  const r = await sys.http('POST', '/orders', { userId: user, items: [{ sku, quantity: 1 }], points: 500 });
  expect(r.status).toBe(201);
  expect(await pointsOf(user)).toEqual({ available: 500, frozen: 500, spent: 0 });
  // Set from the stale read, 1,200 available would hand the buyer 500 points twice.
  const stale = await sys.http('PUT', `/admin/points/${user}`, { balance: 1200, expectedAvailable: 1000 }, admin);
  expect(stale.status).toBe(409);
  expect(stale.body).toMatchObject({ error: 'POINTS_BALANCE_CHANGED', available: 500, frozen: 500 });
  expect(await pointsOf(user)).toEqual({ available: 500, frozen: 500, spent: 0 });
  // From the balance as it is now, the change is made.
  const fresh = await sys.http('PUT', `/admin/points/${user}`, { balance: 700, expectedAvailable: 500 }, admin);
  expect(fresh.status).toBe(200);
  expect(await pointsOf(user)).toEqual({ available: 700, frozen: 500, spent: 0 });
  // A user with no points yet has 0 to expect; setting the balance it has is no conflict.
  const newcomer = userId();
  expect(
    (await sys.http('PUT', `/admin/points/${newcomer}`, { balance: 50, expectedAvailable: 0 }, admin)).status,
  ).toBe(200);
  expect(
    (await sys.http('PUT', `/admin/points/${newcomer}`, { balance: 50, expectedAvailable: 50 }, admin)).status,
  ).toBe(200);
  expect(
    (await sys.http('PUT', `/admin/points/${newcomer}`, { balance: 60, expectedAvailable: 0 }, admin)).status,
  ).toBe(409);
  expect(await pointsOf(newcomer)).toEqual({ available: 50, frozen: 0, spent: 0 });
});

test('coupon and points admin endpoints need the admin token and validate their bodies', async () => {
  expect((await sys.http('PUT', '/admin/coupons/X1', { userId: 'u', discount: 1, currency: 'CNY' })).status).toBe(401);
  expect(
    (await sys.http('PUT', '/admin/points/u', { balance: 1 }, { authorization: 'Bearer wrong-token!' })).status,
  ).toBe(401);
  expect((await sys.http('PUT', '/admin/coupons/X1', { userId: 'u', discount: -1 }, admin)).body.error).toBe(
    'VALIDATION_FAILED',
  );
  expect((await sys.http('PUT', '/admin/points/u', { balance: 1.5 }, admin)).body.error).toBe('VALIDATION_FAILED');
  expect(
    (await sys.http('POST', '/orders', { userId: 'u', items: [{ sku: 'x', quantity: 1 }], points: 0 })).body.error,
  ).toBe('VALIDATION_FAILED');
});

/**
 * A refusal of POST /orders, in the contract's error shape (`{ error, message, ...details }`, architecture.md): the
 * failure's declared details and no order id, whichever step refused it. A client told an order id must be able to
 * read that order; a refused request placed none.
 */
async function expectRefusal(r: { status: number; body: any }, status: number, details: Record<string, unknown>) {
  if (r.body?.orderId !== undefined)
    expect({ named: r.body.orderId, read: (await sys.http('GET', `/orders/${r.body.orderId}`)).status }).toEqual({
      named: r.body.orderId,
      read: 200,
    });
  expect(r).toEqual({ status, body: { message: expect.any(String), ...details } });
}

describe('a coupon lost to another order', () => {
  const keyed = (user: string, sku: string, code: string, key: string) => () =>
    sys.http(
      'POST',
      '/orders',
      { userId: user, items: [{ sku, quantity: 1 }], couponCode: code },
      { 'idempotency-key': key },
    );

  test('before pricing (no order row is written): 409 COUPON_UNAVAILABLE names no order, and a retry with the same Idempotency-Key answers the same', async () => {
    const sku = await createProduct(sys, { price: 1000, stock: 4 });
    const user = userId();
    const code = await coupon(user, 100);
    const winner = await sys.http('POST', '/orders', { userId: user, items: [{ sku, quantity: 1 }], couponCode: code });
    expect(winner.status).toBe(201);
    const key = `k-${randomBytes(6).toString('hex')}`;
    const send = keyed(user, sku, code, key);
    const loser = await send();
    await expectRefusal(loser, 409, { error: 'COUPON_UNAVAILABLE', couponCode: code });
    expect(
      await sys
        .db('orders')
        .where({ order_id: orderIdForIdempotencyKey(user, key) })
        .first('status'),
    ).toBe(undefined);
    const retry = await send();
    await expectRefusal(retry, 409, { error: 'COUPON_UNAVAILABLE', couponCode: code });
    expect(retry.body).toEqual(loser.body);
    // The loser's unit went back; the winner's is held.
    expect(await stockOf(sys, sku)).toEqual({ available: 3, reserved: 1, sold: 0 });
    expect((await sys.http('POST', `/orders/${winner.body.orderId}/cancel`, {})).body.status).toBe('CANCELLED');
  });

  test('in its Try after pricing (the row says FAILED): the same answer as before pricing, and a retry with the same Idempotency-Key answers the same', async () => {
    const sku = await createProduct(sys, { price: 1000, stock: 4 });
    const user = userId();
    const code = await coupon(user, 100);
    const key = `k-${randomBytes(6).toString('hex')}`;
    const orderId = orderIdForIdempotencyKey(user, key);
    const send = keyed(user, sku, code, key);
    // The coupon row locked here: pricing reads it (a plain read) as AVAILABLE and writes the order row; the coupon's
    // Try then waits on the lock, and meanwhile another order "freezes" the coupon.
    const trx = await sys.db.transaction();
    let pending: ReturnType<typeof send>;
    try {
      await trx('coupons').where({ code }).forUpdate().first('code');
      pending = send();
      await waitFor(() => sys.db('orders').where({ order_id: orderId }).first('order_id'), { what: 'the priced row' });
      await trx('coupons').where({ code }).update({ status: 'FROZEN', order_id: 'ord_rival' });
      await trx.commit();
    } catch (err) {
      await trx.rollback();
      throw err;
    }
    const loser = await pending;
    await expectRefusal(loser, 409, { error: 'COUPON_UNAVAILABLE', couponCode: code });
    expect(await waitForStatus(sys, orderId, ['FAILED'])).toMatchObject({ statusReason: 'COUPON_UNAVAILABLE' });
    const retry = await send();
    expect(retry).toEqual(loser);
    expect(await stockOf(sys, sku)).toEqual({ available: 4, reserved: 0, sold: 0 });
    // The rival lets the coupon go (the suite's last test checks coupons against their fences).
    await sys.db('coupons').where({ code, order_id: 'ord_rival' }).update({ status: 'AVAILABLE', order_id: null });
  });
});

test.each([
  ['a larger discount', { discount: 900 }],
  ['another currency', { currency: 'USD' }],
])(
  'a coupon an operator changes to %s between pricing and its Try is refused COUPON_UNAVAILABLE, not used up at the price of the old one',
  async (_name, change) => {
    const sku = await createProduct(sys, { price: 1000, stock: 4 });
    const user = userId();
    const code = await coupon(user, 100);
    const key = `k-${randomBytes(6).toString('hex')}`;
    const orderId = orderIdForIdempotencyKey(user, key);
    // As in "a coupon lost to another order": pricing reads the coupon while its row is locked here, the Try waits.
    const trx = await sys.db.transaction();
    let pending: Promise<{ status: number; body: any }>;
    try {
      await trx('coupons').where({ code }).forUpdate().first('code');
      pending = sys.http(
        'POST',
        '/orders',
        { userId: user, items: [{ sku, quantity: 1 }], couponCode: code },
        { 'idempotency-key': key },
      );
      await waitFor(() => sys.db('orders').where({ order_id: orderId }).first('order_id'), { what: 'the priced row' });
      await trx('coupons').where({ code }).update(change);
      await trx.commit();
    } catch (err) {
      await trx.rollback();
      throw err;
    }
    const r = await pending;
    expect(r).toMatchObject({ status: 409, body: { error: 'COUPON_UNAVAILABLE', couponCode: code } });
    expect(await waitForStatus(sys, orderId, ['FAILED'])).toMatchObject({ statusReason: 'COUPON_UNAVAILABLE' });
    expect(await couponOf(code)).toMatchObject({ status: 'AVAILABLE', orderId: null });
    expect(await stockOf(sys, sku)).toEqual({ available: 4, reserved: 0, sold: 0 });
    // Nothing held for the order: the coupon's fence is a rollback, if any.
    expect(
      await sys.db('tcc_fence').where({ xid: orderId, participant: 'coupon' }).whereNot({ status: 'CANCELLED' }),
    ).toEqual([]);
  },
);

describe("spending a buyer's coupon or points needs the shop backend (SHOP_API_TOKEN)", () => {
  // POST /orders is open to anyone and its userId is the caller's word: without this, anyone could freeze or spend
  // another user's points on an order of their own, and read a balance from 201 against INSUFFICIENT_POINTS.
  const TOKEN = `shop-${randomBytes(20).toString('hex')}`;
  let shop: Api;
  let shopUrl: string;
  beforeAll(async () => {
    shop = buildApi({
      config: { ...sys.config, shopApiToken: TOKEN },
      db: sys.db,
      client: sys.client,
      providers: createProviders(sys.config, { db: sys.db }),
      logger: false,
    });
    shopUrl = await shop.app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(async () => shop?.close());

  const post = async (body: unknown, authorization?: string) => {
    const r = await fetch(`${shopUrl}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
      body: JSON.stringify(body),
    });
    return { status: r.status, body: (await r.json()) as any };
  };

  test('without the token, or with a wrong one: 401 and the balance untouched; with it: 201 and the points held', async () => {
    const sku = await createProduct(sys, { price: 1000, stock: 5 });
    const victim = userId();
    await points(victim, 1000);
    const code = await coupon(victim, 100);
    for (const authorization of [undefined, 'Bearer wrong', `Bearer ${TOKEN}x`, TOKEN]) {
      for (const spend of [{ points: 999 }, { couponCode: code }, { points: 5_000 }]) {
        const r = await post({ userId: victim, items: [{ sku, quantity: 1 }], ...spend }, authorization);
        expect(r).toMatchObject({ status: 401, body: { error: 'SHOP_AUTH_REQUIRED' } });
      }
    }
    expect(await pointsOf(victim)).toEqual({ available: 1000, frozen: 0, spent: 0 });
    expect(await couponOf(code)).toMatchObject({ status: 'AVAILABLE', orderId: null });
    expect(await stockOf(sys, sku)).toEqual({ available: 5, reserved: 0, sold: 0 });
    expect(await sys.db('orders').where({ user_id: victim }).first()).toBeUndefined();

    // An order that spends nothing needs no token (the public contract), whatever Authorization it carries.
    const plain = await post({ userId: victim, items: [{ sku, quantity: 1 }] }, 'Bearer something-of-the-gateway');
    expect(plain.status).toBe(201);
    const vouched = await post({ userId: victim, items: [{ sku, quantity: 1 }], points: 300 }, `Bearer ${TOKEN}`);
    expect(vouched).toMatchObject({ status: 201, body: { amount: 700 } });
    expect(await pointsOf(victim)).toEqual({ available: 700, frozen: 300, spent: 0 });
    for (const id of [plain.body.orderId, vouched.body.orderId])
      expect((await sys.http('POST', `/orders/${id}/cancel`, {})).status).toBe(200);
  });
});

test('after all of the above the coupon and points invariants hold', async () => {
  const results = await checkInvariants({ db: sys.db, convergenceBoundMs: 60_000 });
  const benefits = results.filter((r) => r.name === 'points-conserved' || r.name === 'coupons-match-fences');
  expect(benefits.map((r) => [r.name, r.passed, r.examples])).toEqual([
    ['points-conserved', true, []],
    ['coupons-match-fences', true, []],
  ]);
});
