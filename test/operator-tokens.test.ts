/**
 * Named operators (OPERATOR_TOKENS): a review decision is made with the operator's own token, and its `operator` is
 * that token's name. With ADMIN_TOKEN alone anyone holding it could decide as anyone: the timeline's "decided by" was
 * whatever the caller typed.
 */
import { type TestSystem, createProduct, placeOrder, startSystem, waitForStatus } from './support/system';

jest.setTimeout(60_000);

const ALICE = 'alice-review-token-0123456789';
const BOB = 'bob-review-token-0123456789';
let sys: TestSystem;

beforeAll(async () => {
  sys = await startSystem({ OPERATOR_TOKENS: `alice:${ALICE},bob:${BOB}` });
}, 60_000);

afterAll(async () => {
  await sys?.stop();
});

test("a review decision takes an operator's own token and that operator's name only; ADMIN_TOKEN no longer decides", async () => {
  const sku = await createProduct(sys, { price: 3000, stock: 2 });
  const { orderId } = await placeOrder(sys, sku);
  await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, { amount: 1 });
  await waitForStatus(sys, orderId, ['NEEDS_REVIEW']);
  const decide = (token: string, operator: string) =>
    sys.http(
      'POST',
      `/orders/${orderId}/review`,
      { decision: 'refund', operator, reason: 'paid 0.01 for a 30.00 order' },
      { authorization: `Bearer ${token}` },
    );

  const admin = await decide(sys.config.adminToken, 'alice');
  expect(admin.status).toBe(401);
  expect(admin.body.error).toBe('UNAUTHORIZED');
  const impersonated = await decide(BOB, 'alice');
  expect(impersonated.status).toBe(403);
  expect(impersonated.body).toMatchObject({ error: 'OPERATOR_MISMATCH' });
  expect((await sys.http('GET', `/orders/${orderId}`)).body.status).toBe('NEEDS_REVIEW');

  const decided = await decide(ALICE, 'alice');
  expect(decided.status).toBe(200);
  expect(decided.body).toEqual({ orderId, status: 'REFUNDED' });
  const entries = (await sys.db('order_events').where({ order_id: orderId }).select('message')) as {
    message: string;
  }[];
  expect(entries.some((e) => /alice/.test(e.message))).toBe(true);
  // The admin routes still take ADMIN_TOKEN, and not an operator's token.
  const product = (token: string) =>
    sys.http('GET', `/admin/products/${sku}`, undefined, { authorization: `Bearer ${token}` });
  expect((await product(sys.config.adminToken)).status).toBe(200);
  expect((await product(ALICE)).status).toBe(401);
});
