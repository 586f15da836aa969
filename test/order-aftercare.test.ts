/**
 * After the order is placed: manual review, the cooling-off refund, one-click support, and late money for a
 * finished order — end to end over HTTP with the real dev server, MySQL and sandbox.
 */
import { randomBytes } from 'node:crypto';
import { ESCALATIONS_PER_ORDER_PER_DAY } from '../src/client/order-actions';
import { latePaymentWorkflowId, orderWorkflowId } from '../src/contracts/order';
import { enterLateReview } from '../src/db/late-review';
import { freshDatabase } from './support/env';
import {
  createProduct,
  placeOrder as placeOrderFor,
  startSystem,
  stockOf,
  type TestSystem,
  waitFor,
  waitForStatus,
} from './support/system';

// The waits below are bounded generously: the dev server is shared and may answer slowly.
jest.setTimeout(120_000);

/**
 * Three systems, so that no test races a timer against the server's pace. None makes active queries (only callbacks,
 * escalation or the deadline move an order). `sys`: nothing expires while a test acts (payment window and cooling-off
 * window of 10 minutes); `shortWindow`: a cooling-off window of 6 s that a test waits out; `expiring`: a payment
 * window of 8 s that a test waits out (orders there are never paid in time on purpose).
 *
 * `expiring` has a database of its own. Every test system's inbox sweep routes any due inbox row of its database, and
 * routes a notification for a finished order to a late-payment workflow on its *own* task queue, whose worker asks its
 * own sandbox: on the shared test database another system (of this suite or of a suite running beside it) could claim
 * the late notification first, find no such payment in its sandbox (NOT_PAID_AT_PROVIDER) and never refund it.
 */
let sys: TestSystem;
let shortWindow: TestSystem;
let expiring: TestSystem;
const admin = () => ({ authorization: `Bearer ${sys.config.adminToken}` });
const noQueries = { QUERY_FIRST_DELAY: '10m', QUERY_MAX_INTERVAL: '10m', PROVIDER_EXPIRY_MARGIN: '1s' };

beforeAll(async () => {
  [sys, shortWindow, expiring] = await Promise.all([
    startSystem({ ...noQueries, PAYMENT_TIMEOUT: '10m', COOLING_OFF_PERIOD: '10m' }),
    startSystem({ ...noQueries, PAYMENT_TIMEOUT: '10m', COOLING_OFF_PERIOD: '6s' }),
    freshDatabase('aftercare').then((url) =>
      startSystem({
        ...noQueries,
        DATABASE_URL: url,
        PAYMENT_TIMEOUT: '8s',
        COOLING_OFF_PERIOD: '6s',
        LATE_PAYMENT_RECHECKS: '1s,2s,4s',
      }),
    ),
  ]);
}, 120_000);

afterAll(async () => {
  for (const s of [sys, shortWindow, expiring]) {
    if (!s) continue;
    // Orders left in review or in a long window: end them rather than leave them open on the shared dev server.
    for await (const wf of s.client.workflow.list({
      query: `TaskQueue = '${s.config.taskQueue}' AND ExecutionStatus = 'Running'`,
    })) {
      await s.client.workflow
        .getHandle(wf.workflowId)
        .terminate('order-aftercare suite cleanup')
        .catch(() => undefined);
    }
    await s.stop();
  }
}, 120_000);

afterEach(async () => {
  await Promise.all([sys, shortWindow, expiring].map((s) => s.sandbox('POST', '/_control/reset')));
});

async function placeOrder(sku: string, on: TestSystem = sys): Promise<string> {
  return (await placeOrderFor(on, sku)).orderId as string;
}

async function underReview(price: number) {
  const sku = await createProduct(sys, { price, stock: 3 });
  const orderId = await placeOrder(sku);
  await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, { amount: 1 });
  await waitForStatus(sys, orderId, ['NEEDS_REVIEW']);
  return { sku, orderId };
}

describe('manual review', () => {
  test('an unauthenticated or malformed decision is refused with no effect', async () => {
    const { sku, orderId } = await underReview(3000);
    const body = { decision: 'approve', operator: 'alice', reason: 'looks fine' };
    expect((await sys.http('POST', `/orders/${orderId}/review`, body)).status).toBe(401);
    expect(
      (await sys.http('POST', `/orders/${orderId}/review`, body, { authorization: 'Bearer wrong-token-123' })).status,
    ).toBe(401);
    const malformed = await sys.http(
      'POST',
      `/orders/${orderId}/review`,
      { decision: 'maybe', operator: 'alice', reason: 'x' },
      admin(),
    );
    expect(malformed.status).toBe(400);
    expect(malformed.body.error).toBe('VALIDATION_FAILED');
    expect((await sys.http('GET', `/orders/${orderId}`)).body.status).toBe('NEEDS_REVIEW');
    expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 1, sold: 0 });
  });

  test('approve confirms the order: stock sold, the provider keeps the payment, the decision is in the timeline', async () => {
    const { sku, orderId } = await underReview(3000);
    const r = await sys.http(
      'POST',
      `/orders/${orderId}/review`,
      { decision: 'approve', operator: 'alice', reason: 'buyer topped up by bank transfer' },
      admin(),
    );
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ orderId, status: 'PAID' });
    expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 1 });
    expect((await sys.sandbox('GET', `/v1/payments/${orderId}`)).body.status).toBe('SUCCESS');
    // The decision, with its operator and note, is in the order's timeline; whoever holds the order id sees only
    // that it was approved after a review.
    const paidEntry = await sys.db('order_events').where({ order_id: orderId, type: 'ORDER_PAID' }).first('message');
    expect(paidEntry.message).toMatch(/alice.*bank transfer/);
    const order = (await sys.http('GET', `/orders/${orderId}`)).body;
    expect(order.timeline.find((e: { type: string; message: string }) => e.type === 'ORDER_PAID').message).toBe(
      'Approved after a review',
    );
    // A second decision is refused: the order is no longer in review.
    expect(
      (
        await sys.http(
          'POST',
          `/orders/${orderId}/review`,
          { decision: 'refund', operator: 'bob', reason: 'second opinion' },
          admin(),
        )
      ).status,
    ).toBe(409);
  });

  test("a decision naming a late trade is carried out only in that trade's review: one whose review is over is refused, naming the open one", async () => {
    // An order two late trades could not refund: T-a's review is open; T-b's waits behind it.
    const orderId = `ord_lt${randomBytes(6).toString('hex')}`;
    await sys.db('orders').insert({
      order_id: orderId,
      user_id: 'u-late',
      status: 'EXPIRED',
      amount: 1000,
      currency: 'CNY',
      provider: 'sandbox',
    });
    const seen = { status: 'EXPIRED' as const, paidTradeNo: null };
    await enterLateReview(sys.db, { orderId, tradeNo: 'T-a', provider: 'sandbox', why: 'refund refused', seen });
    const decide = (tradeNo: string) =>
      sys.http(
        'POST',
        `/orders/${orderId}/review`,
        { decision: 'refund', operator: 'ada', reason: 'refund it', refundAmount: 500, tradeNo },
        admin(),
      );
    // Made for T-b (a page showing its review, a retry of a decision for a review now over): refused, T-a named.
    const stale = await decide('T-b');
    expect(stale.status).toBe(409);
    expect(stale.body).toMatchObject({ error: 'REVIEW_DECISION_REFUSED', tradeNo: 'T-a' });
    // For T-a: sent to T-a's latePayment workflow (none runs in this test, so the order is answered not in review).
    const right = await decide('T-a');
    expect(right.status).toBe(409);
    expect(right.body.error).toBe('ORDER_NOT_IN_REVIEW');
    // Naming a trade in another kind of review is refused: it would be silently ignored.
    const { orderId: own } = await underReview(3000);
    const elsewhere = await sys.http(
      'POST',
      `/orders/${own}/review`,
      { decision: 'refund', operator: 'ada', reason: 'refund it', tradeNo: 'T-a' },
      admin(),
    );
    expect([elsewhere.status, elsewhere.body.error]).toEqual([409, 'REVIEW_DECISION_REFUSED']);
    expect(elsewhere.body.message).toMatch(/tradeNo does not apply/);
  });

  test('refund returns what was paid and releases the stock', async () => {
    const { sku, orderId } = await underReview(4500);
    const r = await sys.http(
      'POST',
      `/orders/${orderId}/review`,
      { decision: 'refund', operator: 'bob', reason: 'wrong amount paid' },
      admin(),
    );
    expect(r.body).toEqual({ orderId, status: 'REFUNDED' });
    expect(await stockOf(sys, sku)).toEqual({ available: 3, reserved: 0, sold: 0 });
    expect((await sys.sandbox('GET', `/v1/payments/${orderId}`)).body).toMatchObject({
      status: 'REFUNDED',
      refundedAmount: 1,
    });
  });

  test('the same decision sent again while the first is carried out joins it: the same answer, never "not in review"', async () => {
    // An operator's retry after a 503 (the provider slower than the update's deadline), or a double click: the
    // workflow refused it as "not waiting for a review decision", the API retried for 5 s and answered 409
    // ORDER_NOT_IN_REVIEW for an order MySQL still showed in review.
    const { sku, orderId } = await underReview(4700);
    const decision = { decision: 'refund', operator: 'bob', reason: 'wrong amount paid' };
    // The provider takes 8 s to answer the refund: longer than the API's retries of a refused decision.
    await sys.setFaults({ apiLatencyMs: 8_000 });
    const first = sys.http('POST', `/orders/${orderId}/review`, decision, admin());
    await waitFor(async () => (await sys.db('refunds').where({ order_id: orderId }).first('status'))?.status, {
      timeoutMs: 30_000,
      what: 'the refund under way',
    });
    const second = await sys.http('POST', `/orders/${orderId}/review`, decision, admin());
    expect(second.status).toBe(200);
    expect((await first).status).toBe(200);
    expect(second.body).toEqual((await first).body);
    expect(second.body).toEqual({ orderId, status: 'REFUNDED' });
    expect(await sys.db('refunds').where({ order_id: orderId })).toHaveLength(1);
    expect(await stockOf(sys, sku)).toEqual({ available: 3, reserved: 0, sold: 0 });
    // Decided once, in one update: the retry reached the update in flight by its id (one per decision and review
    // round) instead of adding one beside it (ten in flight, and Temporal refuses every further update of the order).
    const history = await sys.client.workflow.getHandle(orderWorkflowId(orderId)).fetchHistory();
    const decided = (history.events ?? []).filter(
      (e) => e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.name === 'reviewDecision',
    );
    expect(decided).toHaveLength(1);
    const status = await sys.client.workflow.getHandle(orderWorkflowId(orderId)).query<{
      timeline: { type: string }[];
    }>('status');
    expect(status.timeline.filter((e) => e.type === 'REVIEW_DECIDED')).toHaveLength(1);
  }, 60_000);
});

describe('cooling-off period', () => {
  test('a refund inside the window succeeds once, a second request is answered the same, stock comes back', async () => {
    const sku = await createProduct(sys, { price: 2500, stock: 2 });
    const orderId = await placeOrder(sku);
    await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    await waitForStatus(sys, orderId, ['PAID']);
    const first = await sys.http('POST', `/orders/${orderId}/refund`, { reason: 'changed my mind' });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ orderId, status: 'REFUNDED' });
    const second = await sys.http('POST', `/orders/${orderId}/refund`, {});
    expect(second.status).toBe(200);
    expect(second.body).toEqual(first.body);
    expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 0 });
    expect((await sys.sandbox('GET', `/v1/payments/${orderId}`)).body).toMatchObject({
      status: 'REFUNDED',
      refundedAmount: 2500,
    });
    expect(await sys.db('refunds').where({ order_id: orderId })).toHaveLength(1);
    // Another refund of the same order (a second trade refunded as late money) does not change the answer: a repeat
    // names this refund, not whichever of the order's refunds the database returns first.
    await sys.db('refunds').insert({
      out_refund_no: `rf-0-${orderId}`.slice(0, 64),
      order_id: orderId,
      out_trade_no: orderId,
      provider: 'sandbox',
      trade_no: 'T-second-trade',
      amount: 100,
      currency: 'CNY',
      reason: 'late payment',
      status: 'SUCCEEDED',
    });
    try {
      const third = await sys.http('POST', `/orders/${orderId}/refund`, {});
      expect(third.body).toEqual(first.body);
    } finally {
      // Not a refund the provider made: gone before any suite checks the books.
      await sys
        .db('refunds')
        .where({ out_refund_no: `rf-0-${orderId}`.slice(0, 64) })
        .delete();
    }
  });

  test('a second refund request while the first is being carried out joins it: the same refund, never "the window is over"', async () => {
    // A double click, or the buyer's retry after a 503 from a slow refund: refused by the workflow, the second request
    // was answered 409 COOLING_OFF_EXPIRED ("ask support for a refund") while the refund went through, and support
    // refunding by hand would have refunded twice.
    const sku = await createProduct(sys, { price: 2600, stock: 2 });
    const orderId = await placeOrder(sku);
    await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    await waitForStatus(sys, orderId, ['PAID']);
    // The provider takes 8 s to answer the refund (the first request still waits within its update deadline).
    await sys.setFaults({ apiLatencyMs: 8_000 });
    const first = sys.http('POST', `/orders/${orderId}/refund`, { reason: 'changed my mind' });
    await waitFor(async () => (await sys.db('refunds').where({ order_id: orderId }).first('status'))?.status, {
      timeoutMs: 30_000,
      what: 'the refund under way',
    });
    const second = await sys.http('POST', `/orders/${orderId}/refund`, {});
    expect(second.status).toBe(200);
    expect((await first).status).toBe(200);
    expect(second.body).toEqual((await first).body);
    expect(second.body).toMatchObject({ orderId, status: 'REFUNDED' });
    expect(await sys.db('refunds').where({ order_id: orderId })).toHaveLength(1);
    expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 0 });
    // One update in the workflow: the retry joined the first by its id, instead of waiting beside it (ten such reached
    // the workflow's limit of updates in flight, and every later update of the order was refused).
    const history = await sys.client.workflow.getHandle(orderWorkflowId(orderId)).fetchHistory();
    const refunds = (history.events ?? []).filter(
      (e) => e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.name === 'coolingOffRefund',
    );
    expect(refunds).toHaveLength(1);
  }, 60_000);

  test('after the window the order is handed to fulfilment and a refund is refused with a clear error', async () => {
    const s = shortWindow;
    const sku = await createProduct(s, { stock: 2 });
    const orderId = await placeOrder(sku, s);
    await s.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    await waitForStatus(s, orderId, ['PAID'], 60_000);
    await waitFor(
      async () => (await s.db('orders').where({ order_id: orderId }).first('fulfilment_ready_at')).fulfilment_ready_at,
      { timeoutMs: 60_000, what: 'fulfilment hand-off' },
    );
    const outbox = await s.db('outbox').where({ topic: 'order.fulfilment_ready', message_key: orderId });
    expect(outbox).toHaveLength(1);
    expect(JSON.parse(outbox[0].payload)).toMatchObject({ orderId, items: [{ sku, quantity: 1 }] });
    const r = await s.http('POST', `/orders/${orderId}/refund`, {});
    expect(r.status).toBe(409);
    expect(r.body.error).toBe('COOLING_OFF_EXPIRED');
    expect(await stockOf(s, sku)).toEqual({ available: 1, reserved: 0, sold: 1 });
  });
});

describe('one-click support', () => {
  test('escalation queries the provider at once and resolves a paid order whose notification was lost', async () => {
    const sku = await createProduct(sys, { stock: 2 });
    const orderId = await placeOrder(sku);
    await sys.setFaults({ dropNotifications: 1 });
    await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    // The sandbox decided at once that the notification is lost; with no queries and a 10-minute window nothing else
    // can tell the order about the payment, so it is still waiting.
    expect((await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications).toEqual([
      expect.objectContaining({ dropped: true, sends: 0 }),
    ]);
    expect((await sys.http('GET', `/orders/${orderId}`)).body.status).toBe('AWAITING_PAYMENT');
    const r = await sys.http('POST', `/orders/${orderId}/escalate`, { note: 'I paid, the page still waits' });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ orderId, providerStatus: 'PAID', resolution: 'PAYMENT_FOUND' });
    expect(r.body.messages.user.en).toMatch(/found your payment/);
    await waitForStatus(sys, orderId, ['PAID']);
    const [ticket] = await sys.db('support_tickets').where({ order_id: orderId });
    expect(ticket).toMatchObject({
      ticket_id: r.body.ticketId,
      provider_status: 'PAID',
      resolution: 'PAYMENT_FOUND',
      note: 'I paid, the page still waits',
    });
    expect(JSON.parse(ticket.snapshot).timeline.length).toBeGreaterThan(0);
    const handle = sys.client.workflow.getHandle(orderWorkflowId(orderId));
    const described = await handle.describe();
    expect(described.searchAttributes.Escalated).toEqual([true]);

    // Pressed again (and again) within the cool-down: the same ticket answers, with the order's status now; no new
    // ticket, no second update of the workflow, no second query of the provider.
    const updates = async () =>
      (await handle.fetchHistory()).events!.filter((e) => e.workflowExecutionUpdateAcceptedEventAttributes).length;
    const before = await updates();
    for (const note of ['still nothing?', 'hello?']) {
      const again = await sys.http('POST', `/orders/${orderId}/escalate`, { note });
      expect(again.status).toBe(200);
      expect(again.body).toMatchObject({
        ticketId: r.body.ticketId,
        orderId,
        status: 'PAID',
        resolution: 'PAYMENT_FOUND',
      });
    }
    const tickets = await sys.db('support_tickets').where({ order_id: orderId });
    expect(tickets).toHaveLength(1);
    // The buyer's later words are added to it.
    expect(tickets[0].note).toBe('I paid, the page still waits | still nothing? | hello?');
    expect(await updates()).toBe(before);
  });

  test('escalations sent together run one update of the workflow and one ticket; the others answer with that ticket and add their notes', async () => {
    const sku = await createProduct(sys, { stock: 1 });
    const orderId = await placeOrder(sku);
    const handle = sys.client.workflow.getHandle(orderWorkflowId(orderId));
    // The order's own first update (update-with-start) is in the history already.
    const updates = async () =>
      (await handle.fetchHistory()).events!.filter((e) => e.workflowExecutionUpdateAcceptedEventAttributes).length;
    const before = await updates();
    const answers = await Promise.all(
      Array.from({ length: 12 }, (_, i) => sys.http('POST', `/orders/${orderId}/escalate`, { note: `n${i}` })),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(12).fill(200));
    const tickets = await sys.db('support_tickets').where({ order_id: orderId });
    expect(tickets).toHaveLength(1);
    expect(new Set(answers.map((a) => a.body.ticketId))).toEqual(new Set([tickets[0].ticket_id]));
    expect(tickets[0].note.split(' | ').sort()).toEqual(Array.from({ length: 12 }, (_, i) => `n${i}`).sort());
    expect(await updates()).toBe(before + 1);
    expect(await sys.db('escalation_claims').where({ order_id: orderId }).first('escalations')).toEqual({
      escalations: 1,
    });
    expect((await sys.http('POST', `/orders/${orderId}/cancel`, {})).status).toBe(200);
  });

  test("past the order's escalations for the day its latest ticket answers, with no update of the workflow; the next day it may escalate again", async () => {
    const sku = await createProduct(sys, { stock: 1 });
    const orderId = await placeOrder(sku);
    const handle = sys.client.workflow.getHandle(orderWorkflowId(orderId));
    const first = await sys.http('POST', `/orders/${orderId}/escalate`, {});
    expect(first.status).toBe(200);
    // Out of the cool-down, at the day's limit (as after that many escalations a minute apart, the window begun 2 h ago).
    const backdate = async (claims: Record<string, unknown>) => {
      await sys
        .db('support_tickets')
        .where({ order_id: orderId })
        .update({ created_at: sys.db.raw('created_at - INTERVAL 1 HOUR') });
      await sys
        .db('escalation_claims')
        .where({ order_id: orderId })
        .update({ claimed_at: sys.db.raw('claimed_at - INTERVAL 1 HOUR'), ...claims });
    };
    await backdate({
      escalations: ESCALATIONS_PER_ORDER_PER_DAY,
      window_started_at: sys.db.raw('CURRENT_TIMESTAMP(3) - INTERVAL 2 HOUR'),
    });
    const updates = async () =>
      (await handle.fetchHistory()).events!.filter((e) => e.workflowExecutionUpdateAcceptedEventAttributes).length;
    const before = await updates();
    const again = await sys.http('POST', `/orders/${orderId}/escalate`, { note: 'once more' });
    expect(again.status).toBe(200);
    expect(again.body.ticketId).toBe(first.body.ticketId);
    expect(await sys.db('support_tickets').where({ order_id: orderId })).toHaveLength(1);
    expect(await updates()).toBe(before);
    // A day after the window began: a new escalation runs, and starts a new window.
    await backdate({ window_started_at: sys.db.raw('CURRENT_TIMESTAMP(3) - INTERVAL 25 HOUR') });
    const fresh = await sys.http('POST', `/orders/${orderId}/escalate`, {});
    expect(fresh.status).toBe(200);
    expect(fresh.body.ticketId).not.toBe(first.body.ticketId);
    expect(await updates()).toBe(before + 1);
    expect(await sys.db('escalation_claims').where({ order_id: orderId }).first('escalations')).toEqual({
      escalations: 1,
    });
    expect((await sys.http('POST', `/orders/${orderId}/cancel`, {})).status).toBe(200);
  });

  test('escalating a finished order still records a ticket with the provider state', async () => {
    // On the 8 s system: after the cancel the workflow watches for late money until the provider-side expiry.
    const s = expiring;
    const sku = await createProduct(s, { stock: 1 });
    const orderId = await placeOrder(sku, s);
    expect((await s.http('POST', `/orders/${orderId}/cancel`, {})).body.status).toBe('CANCELLED');
    await s.client.workflow.getHandle(orderWorkflowId(orderId)).result();
    const r = await s.http('POST', `/orders/${orderId}/escalate`, {});
    expect(r.body).toMatchObject({ orderId, status: 'CANCELLED', providerStatus: 'CLOSED', resolution: 'CLOSED' });
    expect(await s.db('support_tickets').where({ order_id: orderId })).toHaveLength(1);
    // Again at once: the same ticket, not a second one (nor a second query of the provider).
    expect((await s.http('POST', `/orders/${orderId}/escalate`, {})).body.ticketId).toBe(r.body.ticketId);
    expect(await s.db('support_tickets').where({ order_id: orderId })).toHaveLength(1);
  });
});

/** An order of one unit on the 8 s system that nobody paid: EXPIRED, its workflow (with its late watch) ended. */
async function expiredOrderWithItsWorkflowEnded(price: number): Promise<{ sku: string; orderId: string }> {
  const sku = await createProduct(expiring, { price, stock: 1 });
  const orderId = await placeOrder(sku, expiring);
  await waitForStatus(expiring, orderId, ['EXPIRED'], 90_000);
  await expiring.client.workflow.getHandle(orderWorkflowId(orderId)).result();
  return { sku, orderId };
}

test("a buyer who escalates a closed order that the provider reports paid (its notification lost) gets the money back now, not at the next day's reconciliation", async () => {
  const s = expiring;
  const { sku, orderId } = await expiredOrderWithItsWorkflowEnded(1900);
  await s.setFaults({ acceptPaymentAfterExpiry: true, dropNotifications: 1 });
  expect((await s.sandbox('POST', `/v1/payments/${orderId}/pay`, {})).status).toBe(200);
  await s.setFaults({ dropNotifications: 0 });
  const r = await s.http('POST', `/orders/${orderId}/escalate`, { note: 'I paid but the order says expired' });
  expect(r.status).toBe(200);
  expect(r.body).toMatchObject({
    orderId,
    status: 'EXPIRED',
    providerStatus: 'PAID',
    resolution: 'LATE_PAYMENT_FOUND',
  });
  expect(r.body.messages.user.en).toMatch(/refunded/);
  // Before, the ticket said CLOSED and nothing moved until reconciliation found the payment the next day.
  await waitForStatus(s, orderId, ['REFUNDED'], 90_000);
  expect((await s.sandbox('GET', `/v1/payments/${orderId}`)).body).toMatchObject({
    status: 'REFUNDED',
    refundedAmount: 1900,
  });
  expect(await s.db('refunds').where({ order_id: orderId, status: 'SUCCEEDED' })).toHaveLength(1);
  const [ticket] = await s.db('support_tickets').where({ order_id: orderId });
  expect(ticket).toMatchObject({ resolution: 'LATE_PAYMENT_FOUND', provider_status: 'PAID' });
  expect(await stockOf(s, sku)).toEqual({ available: 1, reserved: 0, sold: 0 });
}, 120_000);

test('escalating a paid order whose paying trade was never named (a query said paid without it) leaves it paid: its trade is not late money', async () => {
  const s = shortWindow;
  const sku = await createProduct(s, { stock: 1 });
  const orderId = await placeOrder(sku, s);
  await s.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  await waitForStatus(s, orderId, ['PAID'], 60_000);
  await s.client.workflow.getHandle(orderWorkflowId(orderId)).result();
  // As when the provider's query said PAID without naming the trade: the order kept "unknown".
  await s.db('orders').where({ order_id: orderId }).update({ paid_trade_no: 'unknown' });
  const r = await s.http('POST', `/orders/${orderId}/escalate`, {});
  expect(r.body).toMatchObject({ orderId, status: 'PAID', providerStatus: 'PAID', resolution: 'CLOSED' });
  // Routed as late money, the trade the order was paid with went to a late-payment workflow and the order to review.
  await expect(
    s.client.workflow
      .getHandle(
        latePaymentWorkflowId('sandbox', orderId, (await s.sandbox('GET', `/v1/payments/${orderId}`)).body.tradeNo),
      )
      .describe(),
  ).rejects.toThrow();
  expect((await s.http('GET', `/orders/${orderId}`)).body.status).toBe('PAID');
}, 90_000);

test('a notification for an order whose workflow completed as EXPIRED is refunded exactly once, despite five deliveries and a worker restart', async () => {
  const s = expiring;
  const { sku, orderId } = await expiredOrderWithItsWorkflowEnded(1800);
  // The workflow watched until the provider-side expiry; only a payment that settles even later (a delayed
  // debit) can still arrive, and then only by callback.
  await s.setFaults({ acceptPaymentAfterExpiry: true });
  const paid = await s.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
  expect(paid.status).toBe(200);
  const [n] = await waitFor(
    async () => {
      const list = (await s.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications;
      return list[0]?.acknowledged ? list : undefined;
    },
    { timeoutMs: 60_000, what: 'the first delivery to be acknowledged' },
  );
  await s.sandbox('POST', `/_control/notifications/${n.id}/redeliver`);
  await s.restartWorker();
  for (let i = 0; i < 3; i++) await s.sandbox('POST', `/_control/notifications/${n.id}/redeliver`);
  await waitForStatus(s, orderId, ['REFUNDED'], 90_000);
  // Each redelivery was answered only once the API had stored it; wait until every stored delivery has been routed
  // and the late-payment workflow of this trade has finished, so that no refund can still be on its way.
  expect(
    (await s.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications[0].sends,
  ).toBeGreaterThanOrEqual(5);
  await waitFor(
    async () => {
      const rows = await s.db('notification_inbox').where({ out_trade_no: orderId }).select('status', 'deliveries');
      return (
        rows.length > 0 &&
        rows.every((r) => r.status !== 'RECEIVED') &&
        rows.reduce((sum, r) => sum + Number(r.deliveries), 0) >= 5
      );
    },
    { timeoutMs: 60_000, what: 'all five deliveries stored and routed' },
  );
  await s.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, paid.body.tradeNo)).result();
  expect(await s.db('refunds').where({ order_id: orderId })).toHaveLength(1);
  expect((await s.sandbox('GET', `/v1/payments/${orderId}`)).body).toMatchObject({
    status: 'REFUNDED',
    refundedAmount: 1800,
  });
  expect(await stockOf(s, sku)).toEqual({ available: 1, reserved: 0, sold: 0 });
});

test("a late payment whose provider's query still shows it unpaid (the query lagging its notification) is refunded once the query catches up, by the same run", async () => {
  const s = expiring;
  const { orderId } = await expiredOrderWithItsWorkflowEnded(1300);
  // The sandbox's query answers the payment as it was before it was paid (CLOSED, by our close at the deadline) for
  // 2.5 s after it: the late-payment run's first query sees that; its re-queries (1 s, 2 s, 4 s here) see it paid.
  await s.setFaults({ acceptPaymentAfterExpiry: true, queryLagMs: 2_500 });
  try {
    const paid = await s.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    expect(paid.status).toBe(200);
    const late = s.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, paid.body.tradeNo));
    await waitFor(async () => (await late.describe().catch(() => undefined)) !== undefined, {
      timeoutMs: 60_000,
      what: 'the late-payment workflow of the trade',
    });
    // Before the fix this run ended NOT_PAID_AT_PROVIDER at its first, stale answer, with nothing refunded.
    expect(await late.result()).toMatchObject({ outcome: 'REFUNDED' });
    const history = await late.fetchHistory();
    const queries = history.events!.filter(
      (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'queryProviderPayment',
    ).length;
    expect(queries).toBeGreaterThanOrEqual(2);
    await waitForStatus(s, orderId, ['REFUNDED'], 30_000);
    expect(await s.db('refunds').where({ order_id: orderId })).toHaveLength(1);
    expect((await s.sandbox('GET', `/v1/payments/${orderId}`)).body).toMatchObject({
      status: 'REFUNDED',
      refundedAmount: 1300,
    });
  } finally {
    await s.setFaults({ queryLagMs: 0, acceptPaymentAfterExpiry: false });
  }
});
