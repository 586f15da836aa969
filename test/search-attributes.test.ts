/**
 * The custom search attributes (src/contracts/search-attributes.ts) as an operator uses them: orders are driven
 * into distinct states through the public API and the sandbox (paid, expired, paid the wrong amount, escalated to
 * support, and stuck because confirming the stock keeps failing), then each attribute is listed with the query an
 * operator would type in the Web UI or `temporal workflow list --query`, scoped to this suite's task queue. Each
 * query must find exactly the orders it should. Visibility is eventually consistent, so every listing is polled
 * (bounded) until it matches.
 */
import { orderWorkflowId, statusQuery } from '../src/contracts/order';
import { SEARCH_ATTRIBUTES } from '../src/contracts/search-attributes';
import { createProduct, startSystem, type TestSystem, userId, waitFor, waitForStatus } from './support/system';

let sys: TestSystem;
let expiring: TestSystem;
const admin = () => ({ authorization: `Bearer ${sys.config.adminToken}` });

beforeAll(async () => {
  // Nothing but a callback, an escalation or the deadline moves an order (no active queries); no cooling-off window,
  // so a paid order finishes at once. Orders are acted on in `sys`, where the payment window (10 minutes) cannot pass
  // before the test acts however slow the server; the order that must expire is placed in `expiring` (6 s).
  const env = {
    QUERY_FIRST_DELAY: '10m',
    QUERY_MAX_INTERVAL: '10m',
    PROVIDER_EXPIRY_MARGIN: '1s',
    COOLING_OFF_PERIOD: '0s',
  };
  [sys, expiring] = await Promise.all([
    startSystem({ ...env, PAYMENT_TIMEOUT: '10m' }),
    startSystem({ ...env, PAYMENT_TIMEOUT: '6s' }),
  ]);
}, 120_000);

/** This suite's workflows: those on the task queues of its two systems. */
const ours = () => `TaskQueue IN ('${sys.config.taskQueue}', '${expiring.config.taskQueue}')`;

afterAll(async () => {
  // A failed run must not leave an order retrying its confirm forever on the shared dev server.
  if (sys && expiring) {
    for await (const wf of sys.client.workflow.list({ query: `${ours()} AND ExecutionStatus = 'Running'` })) {
      await sys.client.workflow
        .getHandle(wf.workflowId)
        .terminate('search-attributes suite cleanup')
        .catch(() => undefined);
    }
  }
  await sys?.stop();
  await expiring?.stop();
}, 120_000);

/** Workflow ids that `query` lists among this suite's workflows (its own task queues). */
async function listed(query: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const wf of sys.client.workflow.list({ query: `${ours()} AND (${query})` })) ids.push(wf.workflowId);
  return ids.sort();
}

/** Polls the listing until it is exactly `expected` (bounded; visibility is eventually consistent), then asserts it. */
async function expectListed(query: string, expected: string[]): Promise<void> {
  const want = [...expected].sort();
  const deadline = Date.now() + 60_000;
  let got = await listed(query);
  while (JSON.stringify(got) !== JSON.stringify(want) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    got = await listed(query);
  }
  expect({ query, workflows: got }).toEqual({ query, workflows: want });
}

/** Places an order of one unit of `sku` (price = the order's amount). */
async function placeOrder(
  sku: string,
  price: number,
  on: TestSystem = sys,
): Promise<{ orderId: string; sku: string; wf: string }> {
  const r = await on.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] });
  expect(r.status).toBe(201);
  expect(r.body.amount).toBe(price);
  return { orderId: r.body.orderId, sku, wf: orderWorkflowId(r.body.orderId) };
}

async function pay(orderId: string, amount?: number): Promise<void> {
  const r = await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, amount === undefined ? {} : { amount });
  expect(r.status).toBe(200);
}

test('every custom search attribute finds the orders in its state, and only those', async () => {
  // Each order has its own amount, so OrderAmount ranges pick them apart.
  const prices = { escalated: 1200, stuck: 4200, paid: 2500, review: 3000, expired: 800 };
  const skus = {} as Record<keyof typeof prices, string>;
  for (const [k, price] of Object.entries(prices))
    skus[k as keyof typeof prices] = await createProduct(sys, { price, stock: 5 });

  // Escalated: the notification is lost; the buyer asks support, whose query finds the payment.
  const escalated = await placeOrder(skus.escalated, prices.escalated);
  await sys.setFaults({ dropNotifications: 1 });
  try {
    await pay(escalated.orderId);
  } finally {
    await sys.setFaults({ dropNotifications: 0 });
  }
  const escalatedAfter = new Date(Date.now() - 1000);
  const help = await sys.http('POST', `/orders/${escalated.orderId}/escalate`, {
    note: 'I paid, the page still waits',
  });
  expect(help.body).toMatchObject({ resolution: 'PAYMENT_FOUND' });

  // Stuck: the stock row lost the unit this order reserved (a broken invariant), so confirming it fails on every
  // attempt; after STUCK_AFTER_ATTEMPTS the workflow marks itself Stuck and keeps retrying.
  const stuck = await placeOrder(skus.stuck, prices.stuck);
  expect(await sys.db('stock').where({ sku: stuck.sku, reserved: 1 }).update({ reserved: 0 })).toBe(1);
  await pay(stuck.orderId);

  const paid = await placeOrder(skus.paid, prices.paid);
  await pay(paid.orderId);
  const review = await placeOrder(skus.review, prices.review);
  await pay(review.orderId, prices.review - 1); // one fen short: NEEDS_REVIEW
  const expired = await placeOrder(skus.expired, prices.expired, expiring); // nobody pays
  const all = [paid, expired, review, escalated, stuck].map((o) => o.wf);

  await waitForStatus(sys, paid.orderId, ['PAID'], 60_000);
  await waitForStatus(sys, escalated.orderId, ['PAID'], 60_000);
  await waitForStatus(sys, review.orderId, ['NEEDS_REVIEW'], 60_000);
  await waitForStatus(expiring, expired.orderId, ['EXPIRED'], 90_000);
  await sys.client.workflow.getHandle(expired.wf).result(); // done watching for a late payment
  const stuckHandle = sys.client.workflow.getHandle(stuck.wf);
  await waitFor(async () => (await stuckHandle.query(statusQuery)).timeline.some((e) => e.type === 'STUCK'), {
    timeoutMs: 90_000,
    what: 'the stuck mark',
  });

  // Every custom attribute is exercised below.
  expect(SEARCH_ATTRIBUTES.map((a) => a.name).sort()).toEqual([
    'Escalated',
    'EscalatedAt',
    'NeedsReview',
    'OrderAmount',
    'OrderStage',
    'OrderStatus',
    'PaymentProvider',
    'Stuck',
  ]);

  // OrderStatus: what MySQL says, kept on the workflow.
  await expectListed(`OrderStatus = 'PAID'`, [paid.wf, escalated.wf]);
  await expectListed(`OrderStatus = 'EXPIRED'`, [expired.wf]);
  await expectListed(`OrderStatus = 'NEEDS_REVIEW'`, [review.wf]);
  await expectListed(`OrderStatus = 'AWAITING_PAYMENT'`, [stuck.wf]);
  await expectListed(`OrderStatus IN ('EXPIRED', 'NEEDS_REVIEW')`, [expired.wf, review.wf]);
  // OrderStage: the live step.
  await expectListed(`OrderStage = 'AWAITING_REVIEW'`, [review.wf]);
  await expectListed(`OrderStage = 'CONFIRMING'`, [stuck.wf]);
  await expectListed(`OrderStage = 'DONE'`, [paid.wf, escalated.wf, expired.wf]);
  // PaymentProvider: set when the order starts.
  await expectListed(`PaymentProvider = 'sandbox'`, all);
  await expectListed(`PaymentProvider = 'alipay'`, []);
  // OrderAmount: minor units (fen).
  await expectListed(`OrderAmount > 1000`, [paid.wf, review.wf, escalated.wf, stuck.wf]);
  await expectListed(`OrderAmount BETWEEN 2000 AND 3000`, [paid.wf, review.wf]);
  await expectListed(`OrderAmount < 1000`, [expired.wf]);
  // The flags operators watch.
  await expectListed(`NeedsReview = true`, [review.wf]);
  await expectListed(`Escalated = true`, [escalated.wf]);
  // "Escalated today" (and not yesterday): the time of the first escalation.
  const startOfDay = new Date(new Date().setUTCHours(0, 0, 0, 0)).toISOString();
  await expectListed(`EscalatedAt >= '${startOfDay}'`, [escalated.wf]);
  await expectListed(
    `EscalatedAt >= '${escalatedAfter.toISOString()}' AND EscalatedAt <= '${new Date().toISOString()}'`,
    [escalated.wf],
  );
  await expectListed(`EscalatedAt < '${escalatedAfter.toISOString()}'`, []);
  await expectListed(`Stuck = true`, [stuck.wf]);
  // The same fact as a gauge for alerting (visibility is shared with other suites: at least this one).
  const metrics = await (await fetch(`${sys.apiUrl}/metrics`)).text();
  expect(Number(/^payflow_orders_stuck (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
  // Combined, as in a saved view.
  await expectListed(`ExecutionStatus = 'Running' AND NeedsReview = true AND OrderAmount >= 1000`, [review.wf]);
  await expectListed(`OrderStatus = 'PAID' AND Escalated = true`, [escalated.wf]);

  // The stock row is repaired: the retried confirm succeeds, the order is PAID and no longer listed as Stuck.
  expect(await sys.db('stock').where({ sku: stuck.sku, reserved: 0 }).update({ reserved: 1 })).toBe(1);
  expect(await stuckHandle.result()).toMatchObject({ status: 'PAID' });
  await expectListed(`Stuck = true`, []);
  await expectListed(`Stuck = false`, [stuck.wf]);
  await expectListed(`OrderStatus = 'PAID'`, [paid.wf, escalated.wf, stuck.wf]);

  // The review is decided: the order leaves the review queue.
  const decided = await sys.http(
    'POST',
    `/orders/${review.orderId}/review`,
    { decision: 'refund', operator: 'alice', reason: 'wrong amount paid' },
    admin(),
  );
  expect(decided.body).toEqual({ orderId: review.orderId, status: 'REFUNDED' });
  await expectListed(`NeedsReview = true`, []);
  await expectListed(`OrderStatus = 'REFUNDED'`, [review.wf]);
}, 400_000);
