/**
 * Money defects of issue #16 (point 4), one test per defect, each seen failing before its fix: a refused cooling-off
 * refund and the review that follows it, which payments row a refund marks, the result of a late payment refunded by
 * the order's own workflow, a late-payment refund the provider refuses or whose amount is unknown, a second trade
 * reported while the order's workflow still runs, and the cooling-off update's answer for a refund that failed.
 *
 * The end-to-end tests run the whole system (real dev server, MariaDB, sandbox). Where the sandbox cannot produce the
 * situation (it has one trade per order, and always reports the paid amount) a worker with scripted activities on a
 * task queue of its own runs the real workflow code, as in test/workflow-branches.test.ts.
 */
import { randomBytes } from 'node:crypto';
import type { WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Activities } from '../src/activities';
import { composeOrderSteps, type SingleSteps } from '../src/activities/order-steps';
import { refundPayment } from '../src/activities/payments';
import {
  type LatePaymentInput,
  type LatePaymentResult,
  type OrderPaymentInput,
  type OrderStatus,
  type ReviewDecision,
  autoRefundNo,
  coolingOffRefundUpdate,
  reviewRefundNo,
  latePaymentWorkflowId,
  orderWorkflowId,
  paymentNotifiedSignal,
  paymentReadyUpdate,
  reviewDecisionUpdate,
  statusQuery,
  ORDER_WORKFLOW_TYPE,
} from '../src/contracts/order';
import { NeedsReviewKey, OrderStatusKey } from '../src/contracts/search-attributes';
import type { PaymentProvider, ProviderPaymentState } from '../src/providers/types';
import { routePaymentNotification } from '../src/temporal/route-notification';
import { TEST_ENV, testBundlePath } from './support/env';
import { createProduct, placeOrder, startSystem, type TestSystem, waitFor, waitForStatus } from './support/system';

let sys: TestSystem;
const admin = () => ({ authorization: `Bearer ${sys.config.adminToken}` });

/** Resolves with the promise's value, or fails after `ms` saying what did not happen (and `detail()` of the moment). */
async function within<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
  detail: () => Promise<unknown> = async () => undefined,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<'expired'>((resolve) => {
    timer = setTimeout(() => resolve('expired'), ms);
  });
  try {
    const first = await Promise.race([promise, expired]);
    if (first === 'expired')
      throw new Error(`${what} did not happen within ${ms}ms; ${JSON.stringify(await detail())}`);
    return first as T;
  } finally {
    clearTimeout(timer);
  }
}

/** How often the workflow scheduled an activity of this type (from its history). */
async function scheduled(handle: WorkflowHandle, activity: string): Promise<number> {
  const history = await handle.fetchHistory();
  return (history.events ?? []).filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === activity)
    .length;
}

/** Replays a finished execution's history against the workflow code under test: the new branches are deterministic. */
async function replaysCleanly(handle: WorkflowHandle): Promise<void> {
  await Worker.runReplayHistory(
    { workflowBundle: { codePath: testBundlePath() }, replayName: 'money-defects-replay' },
    await handle.fetchHistory(),
    handle.workflowId,
  );
}

/** The order's row and the workflow's own view, for failure messages. */
async function orderState(orderId: string) {
  const row = await sys
    .db('orders')
    .where({ order_id: orderId })
    .first('status', 'status_reason', 'fulfilment_ready_at');
  let workflow: unknown;
  try {
    const s = await sys.client.workflow.getHandle(orderWorkflowId(orderId)).query(statusQuery);
    workflow = { stage: s.stage, status: s.status };
  } catch (err) {
    workflow = String(err);
  }
  return { mysql: row, workflow };
}

/**
 * A paid order whose buyer's refund the provider will refuse: part of the payment was already refunded at the
 * provider (say from the merchant's console), so a full refund exceeds what is left (REFUND_AMOUNT_EXCEEDED).
 */
async function paidOrderWhoseRefundIsRefused(): Promise<{ orderId: string; sku: string; handle: WorkflowHandle }> {
  const sku = await createProduct(sys, { price: 2500, stock: 3 });
  const { orderId } = (await placeOrder(sys, sku)) as { orderId: string };
  expect((await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {})).status).toBe(200);
  const handle = sys.client.workflow.getHandle(orderWorkflowId(orderId));
  await waitFor(async () => (await handle.query(statusQuery)).stage === 'COOLING_OFF', {
    what: `order ${orderId} to enter its cooling-off window`,
  });
  const consoleRefund = await sys.sandbox('POST', '/v1/refunds', {
    outTradeNo: orderId,
    outRefundNo: `console-${orderId}`,
    amount: 1,
    reason: 'merchant console',
  });
  expect(consoleRefund.status).toBe(200);
  return { orderId, sku, handle };
}

beforeAll(async () => {
  // Only callbacks move an order (no active queries); a short deadline and provider-side expiry so that closed orders'
  // workflows finish soon; a cooling-off window long enough to ask for a refund in it.
  sys = await startSystem({
    PAYMENT_TIMEOUT: '4s',
    QUERY_FIRST_DELAY: '10m',
    QUERY_MAX_INTERVAL: '10m',
    PROVIDER_EXPIRY_MARGIN: '6s',
    COOLING_OFF_PERIOD: '30s',
  });
  await startScriptedWorker();
}, 90_000);

afterAll(async () => {
  await stopScriptedWorker();
  await sys?.stop();
});

afterEach(async () => {
  await sys.sandbox('POST', '/_control/reset');
});

describe('defect 1: a cooling-off refund the provider refuses, then the review', () => {
  test('approving the review confirms the order once: the refund is not tried again, the order is handed to fulfilment and the workflow ends PAID', async () => {
    const { orderId, handle } = await paidOrderWhoseRefundIsRefused();
    const refused = await sys.http('POST', `/orders/${orderId}/refund`, { reason: 'changed my mind' });
    expect(refused.status).toBe(409);
    // Inside the window: the buyer is told the refund went to review, not that the window closed.
    expect(refused.body).toMatchObject({ error: 'REFUND_IN_REVIEW', status: 'NEEDS_REVIEW' });
    await waitForStatus(sys, orderId, ['NEEDS_REVIEW']);
    expect(await scheduled(handle, 'refundPayment')).toBe(1);

    const approved = await sys.http(
      'POST',
      `/orders/${orderId}/review`,
      { decision: 'approve', operator: 'alice', reason: 'the provider refused the refund; the buyer keeps the goods' },
      admin(),
    );
    expect(approved.status).toBe(200);
    expect(approved.body).toEqual({ orderId, status: 'PAID' });

    const result = await within(
      handle.result(),
      20_000,
      `order ${orderId}'s workflow to finish after the approval`,
      () => orderState(orderId),
    );
    expect(result).toEqual({ orderId, status: 'PAID', reason: 'REVIEW_APPROVED' });
    expect(await scheduled(handle, 'refundPayment')).toBe(1);
    // The buyer asks again: the order is PAID and kept by support, not in review (the refund's update answer, kept under
    // its id, still says NEEDS_REVIEW), and nothing is refunded.
    const again = await sys.http('POST', `/orders/${orderId}/refund`, {});
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ error: 'COOLING_OFF_EXPIRED', status: 'PAID' });
    expect(await scheduled(handle, 'refundPayment')).toBe(1);
    const row = await sys
      .db('orders')
      .where({ order_id: orderId })
      .first('status', 'status_reason', 'fulfilment_ready_at');
    expect(row).toMatchObject({ status: 'PAID', status_reason: 'REVIEW_APPROVED' });
    expect(row.fulfilment_ready_at).not.toBeNull();
    // Only the console refund happened at the provider; our refused one is recorded, not succeeded.
    expect((await sys.sandbox('GET', `/v1/payments/${orderId}`)).body).toMatchObject({
      status: 'SUCCESS',
      refundedAmount: 1,
    });
    expect(await sys.db('refunds').where({ order_id: orderId }).select('status')).toEqual([{ status: 'PENDING' }]);
    await replaysCleanly(handle);
  });

  test('a refund decision on the same review is tried with the same refund number and, refused again, leaves the order in review for another decision', async () => {
    const { orderId, handle } = await paidOrderWhoseRefundIsRefused();
    expect((await sys.http('POST', `/orders/${orderId}/refund`, {})).status).toBe(409);
    await waitForStatus(sys, orderId, ['NEEDS_REVIEW']);
    const decided = await sys.http(
      'POST',
      `/orders/${orderId}/review`,
      { decision: 'refund', operator: 'bob', reason: 'try the refund once more' },
      admin(),
    );
    expect(decided.status).toBe(409);
    expect(decided.body.error).toBe('REVIEW_DECISION_FAILED');
    expect((await handle.query(statusQuery)).stage).toBe('AWAITING_REVIEW');
    expect((await sys.db('orders').where({ order_id: orderId }).first('status')).status).toBe('NEEDS_REVIEW');
    expect(await sys.db('refunds').where({ order_id: orderId }).select('out_refund_no')).toEqual([
      {
        out_refund_no: autoRefundNo(
          orderId,
          (await sys.db('payments').where({ out_trade_no: orderId }).first('trade_no')).trade_no,
        ),
      },
    ]);
    await handle.terminate('test done');
  });

  test('when the refund was made and a later step failed, approve is refused (it would fulfil a refunded order) and a refund decision settles the order', async () => {
    const orderId = newScriptedOrder({
      status: 'AWAITING_PAYMENT',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-first', amount: 1000 }],
      returnStockFailures: 1,
    });
    const handle = await startScriptedOrder(orderId, { coolingOffMs: 60_000 });
    await handle.signal(paymentNotifiedSignal, scriptedNotification(orderId, 'evt-first', 'T-first', 1000));
    await waitFor(async () => (await handle.query(statusQuery)).stage === 'COOLING_OFF', {
      what: 'the cooling-off window',
    });
    // The refund is made; returning the stock then fails: the order goes to review, the answer names the refund made.
    expect(await handle.executeUpdate(coolingOffRefundUpdate, { args: [{}] })).toEqual({
      status: 'NEEDS_REVIEW',
      refundNo: autoRefundNo(orderId, 'T-first'),
    });
    const approve = await handle
      .executeUpdate(reviewDecisionUpdate, { args: [{ decision: 'approve', operator: 'dave', reason: 'keep it' }] })
      .then(
        () => 'accepted',
        (err: Error) => `${err.message}: ${(err.cause as Error | undefined)?.message}`,
      );
    expect(approve).toMatch(/already refunded/);
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'dave', reason: 'finish the refund' }],
      }),
    ).toEqual({ status: 'REFUNDED' });
    expect(await within(handle.result(), 20_000, 'the order workflow to finish')).toEqual({
      orderId,
      status: 'REFUNDED',
      reason: 'REVIEW_REFUNDED',
    });
    expect(refundCalls(orderId).map((c) => (c.args as { outRefundNo: string }).outRefundNo)).toEqual([
      autoRefundNo(orderId, 'T-first'),
      autoRefundNo(orderId, 'T-first'),
    ]);
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('markFulfilmentReady');
  });
});

describe('defect 6: the cooling-off update answers a refund number only for a refund that was made', () => {
  test('a refused cooling-off refund is answered NEEDS_REVIEW without a refund number', async () => {
    const { orderId, handle } = await paidOrderWhoseRefundIsRefused();
    const answer = await handle.executeUpdate(coolingOffRefundUpdate, { args: [{ reason: 'changed my mind' }] });
    expect(answer).toEqual({ status: 'NEEDS_REVIEW' });
    expect(await sys.db('refunds').where({ order_id: orderId, status: 'SUCCEEDED' })).toHaveLength(0);
    await handle.terminate('test done');
  });
});

describe('defect 2: refundPayment marks the order payment REFUNDED only for the trade that paid it', () => {
  test('refunding a second trade of a PAID order leaves the order payment PAID; refunding the paying trade marks it REFUNDED; repeats change nothing', async () => {
    const sku = await createProduct(sys, { price: 1500, stock: 2 });
    const { orderId } = (await placeOrder(sys, sku)) as { orderId: string };
    await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    await waitForStatus(sys, orderId, ['PAID']);
    const paying = (await sys.db('payments').where({ out_trade_no: orderId }).first('trade_no')).trade_no as string;
    // A provider that takes every refund (the sandbox keeps one trade per order, so it cannot hold a second one).
    const refunds: string[] = [];
    const provider = {
      name: 'sandbox',
      merchantId: sys.config.sandboxMerchantId,
      async refund(input: { outRefundNo: string; amount: number }) {
        refunds.push(input.outRefundNo);
        return { refundNo: `R-${input.outRefundNo}`, amount: input.amount, refundedAt: new Date().toISOString() };
      },
    } as unknown as PaymentProvider;
    const second = `SECOND-${randomBytes(4).toString('hex')}`;
    const refundOf = (tradeNo: string) =>
      refundPayment(
        sys.db,
        { sandbox: provider },
        {
          orderId,
          provider: 'sandbox',
          tradeNo,
          outRefundNo: autoRefundNo(orderId, tradeNo),
          amount: 1500,
          currency: 'CNY',
          reason: 'test',
        },
      );

    await refundOf(second);
    await refundOf(second);
    expect(await sys.db('payments').where({ out_trade_no: orderId }).first('status', 'trade_no')).toEqual({
      status: 'PAID',
      trade_no: paying,
    });
    expect(
      await sys
        .db('refunds')
        .where({ out_refund_no: autoRefundNo(orderId, second) })
        .first('status', 'trade_no'),
    ).toEqual({ status: 'SUCCEEDED', trade_no: second });

    await refundOf(paying);
    await refundOf(paying);
    expect(await sys.db('payments').where({ out_trade_no: orderId }).first('status', 'trade_no')).toEqual({
      status: 'REFUNDED',
      trade_no: paying,
    });
    expect(await sys.db('order_events').where({ order_id: orderId, type: 'REFUNDED' })).toHaveLength(2);
  });
});

describe('defect 3: the result of a late payment refunded by the order workflow', () => {
  test('says REFUNDED / LATE_PAYMENT_REFUNDED, as MySQL does', async () => {
    const sku = await createProduct(sys, { price: 1200, stock: 1 });
    const { orderId } = (await placeOrder(sys, sku)) as { orderId: string };
    await waitForStatus(sys, orderId, ['EXPIRED']);
    // Paid after our close, before the provider-side expiry (Alipay's closed QR that stays payable).
    await sys.setFaults({ acceptPaymentAfterClose: true });
    expect((await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {})).status).toBe(200);
    const result = await within(
      sys.client.workflow.getHandle(orderWorkflowId(orderId)).result(),
      30_000,
      `order ${orderId}'s workflow to finish`,
      () => orderState(orderId),
    );
    const row = await sys.db('orders').where({ order_id: orderId }).first('status', 'status_reason');
    expect(row).toEqual({ status: 'REFUNDED', status_reason: 'LATE_PAYMENT_REFUNDED' });
    expect(result).toEqual({ orderId, status: row.status, reason: row.status_reason });
  });
});

describe('defect 4: a late-payment refund that cannot be made', () => {
  test('refused by the provider: the order goes to NEEDS_REVIEW with the reason, the timeline says why, and the workflow waits for a decision the API routes to it', async () => {
    const sku = await createProduct(sys, { price: 1800, stock: 1 });
    const { orderId } = (await placeOrder(sys, sku)) as { orderId: string };
    await waitForStatus(sys, orderId, ['EXPIRED']);
    await within(
      sys.client.workflow.getHandle(orderWorkflowId(orderId)).result(),
      30_000,
      `order ${orderId}'s workflow to finish`,
    );
    // A debit that settles after the provider-side expiry; its notification is held back until the provider's
    // console has refunded part of it, so that our full refund is refused.
    await sys.setFaults({ acceptPaymentAfterExpiry: true, dropNotifications: 1 });
    const paid = await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    expect(paid.status).toBe(200);
    expect(
      (await sys.sandbox('POST', '/v1/refunds', { outTradeNo: orderId, outRefundNo: `console-${orderId}`, amount: 1 }))
        .status,
    ).toBe(200);
    await sys.setFaults({ dropNotifications: 0 });
    const [n] = (await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications;
    await sys.sandbox('POST', `/_control/notifications/${n.id}/redeliver`);
    await waitFor(
      async () => await sys.db('notification_inbox').where({ out_trade_no: orderId, status: 'LATE' }).first('id'),
      { what: 'the notification to be routed to a late-payment workflow' },
    );

    const late = sys.client.workflow.getHandle<(i: LatePaymentInput) => Promise<LatePaymentResult>>(
      latePaymentWorkflowId('sandbox', orderId, paid.body.tradeNo),
    );
    await waitForStatus(sys, orderId, ['NEEDS_REVIEW']);
    const row = await sys.db('orders').where({ order_id: orderId }).first('status', 'status_reason');
    expect(row).toEqual({ status: 'NEEDS_REVIEW', status_reason: 'LATE_PAYMENT_REFUND_FAILED' });
    const events = await sys.db('order_events').where({ order_id: orderId }).select('type', 'message');
    expect(events.map((e: { type: string }) => e.type)).toEqual(
      expect.arrayContaining(['LATE_PAYMENT_REFUND_FAILED', 'ORDER_NEEDS_REVIEW']),
    );
    // The money is still at the provider, less the console refund; our refund is recorded, not succeeded.
    expect((await sys.sandbox('GET', `/v1/payments/${orderId}`)).body).toMatchObject({
      status: 'SUCCESS',
      refundedAmount: 1,
    });
    expect(await sys.db('refunds').where({ order_id: orderId }).select('status')).toEqual([{ status: 'PENDING' }]);

    // The workflow stays to take the operator's decision (it used to end here, leaving nobody to decide): the API routes
    // the decision to it by the order's status reason. Keeping a late payment is refused; a refund the provider refuses
    // again is answered with the reason, and the order stays in review for another decision.
    expect((await late.describe()).status.name).toBe('RUNNING');
    const kept = await sys.http(
      'POST',
      `/orders/${orderId}/review`,
      { decision: 'approve', operator: 'alice', reason: 'keep it' },
      admin(),
    );
    // Answered as a refusal of the decision, at once (it was retried for 5 s, then answered ORDER_NOT_IN_REVIEW).
    expect(kept.status).toBe(409);
    expect(kept.body).toMatchObject({ error: 'REVIEW_DECISION_REFUSED', message: expect.stringMatching(/never kept/) });
    const refused = await sys.http(
      'POST',
      `/orders/${orderId}/review`,
      { decision: 'refund', operator: 'alice', reason: 'the buyer paid an expired order' },
      admin(),
    );
    expect(refused.status).toBe(409);
    expect(refused.body).toMatchObject({
      error: 'REVIEW_DECISION_FAILED',
      status: 'NEEDS_REVIEW',
      failure: { type: 'PROVIDER_REJECTED', message: expect.stringMatching(/exceeds/) },
    });
    expect(await sys.db('orders').where({ order_id: orderId }).first('status')).toEqual({ status: 'NEEDS_REVIEW' });
    expect((await late.describe()).status.name).toBe('RUNNING');
    await late.terminate('test done');
  });

  test('no paid amount reported: nothing is refunded (never a refund of 0), the order goes to NEEDS_REVIEW, and an operator refund decision settles it once the provider reports the amount', async () => {
    const orderId = newScriptedOrder({
      status: 'EXPIRED',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-late', amount: undefined }],
    });
    const late = await scripted.client.workflow.start('latePayment', {
      workflowId: latePaymentWorkflowId('sandbox', orderId, 'T-late'),
      taskQueue: scripted.taskQueue,
      args: [{ provider: 'sandbox', outTradeNo: orderId, tradeNo: 'T-late' } satisfies LatePaymentInput],
    });
    await waitFor(async () => scriptOf(orderId).status === 'NEEDS_REVIEW', { what: 'the order left for review' });
    expect(refundCalls(orderId)).toEqual([]);
    expect(callsOf(orderId).map((c) => c.name)).toEqual(
      expect.arrayContaining(['event:LATE_PAYMENT_REFUND_FAILED', 'review:NEEDS_REVIEW']),
    );

    // Listed with the orders in review, as an order's own workflow in review is.
    await waitFor(async () => (await late.describe()).typedSearchAttributes.get(NeedsReviewKey) === true, {
      what: 'NeedsReview on the late-payment workflow',
    });
    // Still no amount at the provider: the decision is answered with why, nothing is refunded, the order stays.
    const decide = () =>
      late.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'bob', reason: 'money for an expired order' }],
      });
    expect(await decide()).toEqual({
      status: 'NEEDS_REVIEW',
      failure: { type: 'PROVIDER_REJECTED', message: expect.stringMatching(/no paid amount/) },
    });
    expect(refundCalls(orderId)).toEqual([]);
    expect(callsOf(orderId).map((c) => c.name)).toContain('event:REVIEW_DECISION_FAILED');

    // The provider now reports what was paid: the next decision refunds it in full, with the trade's stable number.
    scriptOf(orderId).trades[0]!.amount = 700;
    expect(await decide()).toEqual({ status: 'REFUNDED' });
    expect(await late.result()).toEqual({ outcome: 'REFUNDED', detail: expect.stringMatching(/700 CNY.*bob/) });
    const refunds = refundCalls(orderId);
    expect(refunds.map((c) => c.args)).toEqual([
      expect.objectContaining({ tradeNo: 'T-late', amount: 700, outRefundNo: autoRefundNo(orderId, 'T-late') }),
    ]);
    expect(scriptOf(orderId)).toMatchObject({ status: 'REFUNDED', paidTradeNo: 'T-late' });
    const listed = (await late.describe()).typedSearchAttributes;
    expect([listed.get(OrderStatusKey), listed.get(NeedsReviewKey)]).toEqual(['REFUNDED', false]);
    await replaysCleanly(late);
  });

  test('a late trade of a PAID order the provider would not refund: the refund decision returns the order to PAID', async () => {
    const orderId = newScriptedOrder({
      status: 'PAID',
      paidTradeNo: 'T-own',
      trades: [
        { tradeNo: 'T-own', amount: 1000 },
        { tradeNo: 'T-second', amount: 1000 },
      ],
      refundRefusals: 1,
    });
    const late = await scripted.client.workflow.start('latePayment', {
      workflowId: latePaymentWorkflowId('sandbox', orderId, 'T-second'),
      taskQueue: scripted.taskQueue,
      args: [{ provider: 'sandbox', outTradeNo: orderId, tradeNo: 'T-second' } satisfies LatePaymentInput],
    });
    await waitFor(async () => scriptOf(orderId).status === 'NEEDS_REVIEW', { what: 'the order left for review' });
    expect(
      await late.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'carol', reason: 'duplicate payment' }],
      }),
    ).toEqual({ status: 'PAID' });
    expect(await late.result()).toMatchObject({ outcome: 'REFUNDED' });
    // Two attempts under the same refund number (the refused one and the decided one); the order keeps its own trade.
    expect(refundCalls(orderId).map((c) => (c.args as { outRefundNo: string }).outRefundNo)).toEqual([
      autoRefundNo(orderId, 'T-second'),
      autoRefundNo(orderId, 'T-second'),
    ]);
    expect(scriptOf(orderId)).toMatchObject({ status: 'PAID', paidTradeNo: 'T-own' });
    await replaysCleanly(late);
  });
});

describe('defect 5: a second trade reported while the order workflow still runs is refunded', () => {
  test('during the cooling-off window: once the order is settled, the second trade is refunded with its own refund number and the order keeps its payment', async () => {
    const orderId = newScriptedOrder({
      status: 'AWAITING_PAYMENT',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-first', amount: 1000 }],
    });
    const handle = await startScriptedOrder(orderId, { coolingOffMs: 4000 });
    await handle.signal(paymentNotifiedSignal, scriptedNotification(orderId, 'evt-first', 'T-first', 1000));
    await waitFor(async () => (await handle.query(statusQuery)).stage === 'COOLING_OFF', {
      what: 'the cooling-off window',
    });
    // The buyer pays a second time (a second trade at the provider); its callback reaches the running workflow.
    scriptOf(orderId).trades.push({ tradeNo: 'T-second', amount: 1000 });
    await handle.signal(paymentNotifiedSignal, scriptedNotification(orderId, 'evt-second', 'T-second', 1000));

    expect(await within(handle.result(), 20_000, 'the order workflow to finish')).toEqual({ orderId, status: 'PAID' });
    const refund = await waitFor(async () => callsOf(orderId).find((c) => c.name === 'refundPayment'), {
      what: 'the second trade to be refunded',
    });
    expect(refund.args).toMatchObject({
      orderId,
      tradeNo: 'T-second',
      outRefundNo: autoRefundNo(orderId, 'T-second'),
      amount: 1000,
    });
    expect(refundCalls(orderId)).toHaveLength(1);
    const late = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, 'T-second'));
    expect(await late.result()).toMatchObject({ outcome: 'REFUNDED' });
    expect(scriptOf(orderId)).toMatchObject({ status: 'PAID', paidTradeNo: 'T-first' });
    await replaysCleanly(handle);
    await replaysCleanly(late);
  });

  test('during a review: after the decision, the second trade is refunded as well', async () => {
    const orderId = newScriptedOrder({
      status: 'AWAITING_PAYMENT',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-first', amount: 1 }],
    });
    const handle = await startScriptedOrder(orderId, {});
    await handle.signal(paymentNotifiedSignal, scriptedNotification(orderId, 'evt-first', 'T-first', 1));
    await waitFor(async () => (await handle.query(statusQuery)).stage === 'AWAITING_REVIEW', { what: 'the review' });
    scriptOf(orderId).trades.push({ tradeNo: 'T-second', amount: 1000 });
    await handle.signal(paymentNotifiedSignal, scriptedNotification(orderId, 'evt-second', 'T-second', 1000));
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'carol', reason: 'wrong amount paid' }],
      }),
    ).toEqual({ status: 'REFUNDED' });

    expect(await within(handle.result(), 20_000, 'the order workflow to finish')).toEqual({
      orderId,
      status: 'REFUNDED',
      reason: 'REVIEW_REFUNDED',
    });
    await waitFor(async () => refundCalls(orderId).length === 2, {
      what: 'both trades to be refunded',
    });
    expect(
      refundCalls(orderId)
        .map((c) => c.args as { tradeNo: string; amount: number })
        .map(({ tradeNo, amount }) => ({ tradeNo, amount })),
    ).toEqual([
      { tradeNo: 'T-first', amount: 1 },
      { tradeNo: 'T-second', amount: 1000 },
    ]);
  });

  test('a redelivery of the trade that paid the order is not handed on', async () => {
    const orderId = newScriptedOrder({
      status: 'AWAITING_PAYMENT',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-first', amount: 1000 }],
    });
    const handle = await startScriptedOrder(orderId, { coolingOffMs: 1000 });
    await handle.signal(paymentNotifiedSignal, scriptedNotification(orderId, 'evt-first', 'T-first', 1000));
    await handle.signal(paymentNotifiedSignal, scriptedNotification(orderId, 'recon-sandbox-T-first', 'T-first', 1000));
    expect(await within(handle.result(), 20_000, 'the order workflow to finish')).toEqual({ orderId, status: 'PAID' });
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('refundPayment');
    const history = await handle.fetchHistory();
    expect((history.events ?? []).some((e) => e.startChildWorkflowExecutionInitiatedEventAttributes)).toBe(false);
  });
});

describe('defects found by review: a payment reported after the order was decided without it', () => {
  /** An order whose close the provider refuses at the deadline: it goes to review with no payment known. */
  async function reviewWithNoPayment(
    timing: Partial<OrderPaymentInput> = {},
  ): Promise<{ orderId: string; handle: WorkflowHandle }> {
    const orderId = newScriptedOrder({ status: 'AWAITING_PAYMENT', paidTradeNo: null, trades: [], closeRefusals: 1 });
    const handle = await startScriptedOrder(orderId, { paymentTimeoutMs: 1000, ...timing });
    await waitFor(async () => (await handle.query(statusQuery)).stage === 'AWAITING_REVIEW', {
      what: 'the review after the refused close',
    });
    expect(scriptOf(orderId).status).toBe('NEEDS_REVIEW');
    return { orderId, handle };
  }

  test('approving a review with no payment known is refused: it would fulfil an unpaid order', async () => {
    const { orderId, handle } = await reviewWithNoPayment();
    await expect(
      handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'approve', operator: 'dave', reason: 'looks fine' }],
      }),
    ).rejects.toMatchObject({
      cause: { type: 'REVIEW_DECISION_REFUSED', message: expect.stringMatching(/no known payment/) },
    });
    // Through the API (the order's row as MySQL would hold it): 409 REVIEW_DECISION_REFUSED, answered at once (a refusal
    // of another kind is retried for 5 s as a workflow not yet waiting, then answered ORDER_NOT_IN_REVIEW).
    await sys.db('orders').insert({
      order_id: orderId,
      user_id: 'u1',
      status: 'NEEDS_REVIEW',
      amount: 1000,
      currency: 'CNY',
      provider: 'sandbox',
    });
    const viaApi = await sys.http(
      'POST',
      `/orders/${orderId}/review`,
      { decision: 'approve', operator: 'dave', reason: 'looks fine' },
      admin(),
    );
    expect(viaApi.status).toBe(409);
    expect(viaApi.body).toMatchObject({
      error: 'REVIEW_DECISION_REFUSED',
      message: expect.stringMatching(/no known payment/),
    });
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('transition:PAID');
    // A refund decision closes it, with nothing to refund.
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'dave', reason: 'never paid' }],
      }),
    ).toEqual({ status: 'REFUNDED' });
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('refundPayment');
    await within(handle.result(), 20_000, 'the order workflow to finish');
    await replaysCleanly(handle);
  });

  test('a payment reported during that review is refunded by a refund decision', async () => {
    const { orderId, handle } = await reviewWithNoPayment();
    // The buyer's payment went through as the close was refused; its callback reaches the waiting workflow.
    scriptOf(orderId).trades.push({ tradeNo: 'T-late', amount: 1000 });
    await handle.signal(paymentNotifiedSignal, scriptedNotification(orderId, 'evt-late', 'T-late', 1000));
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'erin', reason: 'close failed' }],
      }),
    ).toEqual({ status: 'REFUNDED' });
    expect(await within(handle.result(), 20_000, 'the order workflow to finish')).toEqual({
      orderId,
      status: 'REFUNDED',
      reason: 'REVIEW_REFUNDED',
    });
    const refunds = refundCalls(orderId);
    expect(refunds.map((c) => c.args)).toEqual([
      expect.objectContaining({ tradeNo: 'T-late', amount: 1000, outRefundNo: autoRefundNo(orderId, 'T-late') }),
    ]);
    await replaysCleanly(handle);
  });

  test('a refund decision closes the payment at the provider before it releases the order', async () => {
    const { orderId, handle } = await reviewWithNoPayment();
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'dave', reason: 'never paid' }],
      }),
    ).toEqual({ status: 'REFUNDED' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    // The refused close at the deadline, then the decision's close, before anything is released.
    const names = callsOf(orderId).map((c) => c.name);
    expect(names.filter((n) => n === 'closeProviderPayment')).toHaveLength(2);
    expect(names.lastIndexOf('closeProviderPayment')).toBeLessThan(names.indexOf('cancelStock'));
    expect(names).not.toContain('refundPayment');
    expect(scriptOf(orderId).status).toBe('REFUNDED');
    await replaysCleanly(handle);
  });

  test("the decision's close finds the order paid (its notification lost): that payment is refunded", async () => {
    const { orderId, handle } = await reviewWithNoPayment();
    // The buyer paid while the order waited in review; no notification reached the workflow.
    scriptOf(orderId).trades.push({ tradeNo: 'T-quiet', amount: 1000 });
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'dave', reason: 'never paid' }],
      }),
    ).toEqual({ status: 'REFUNDED' });
    expect(await within(handle.result(), 20_000, 'the order workflow to finish')).toEqual({
      orderId,
      status: 'REFUNDED',
      reason: 'REVIEW_REFUNDED',
    });
    expect(refundCalls(orderId).map((c) => c.args)).toEqual([
      expect.objectContaining({ tradeNo: 'T-quiet', amount: 1000, outRefundNo: autoRefundNo(orderId, 'T-quiet') }),
    ]);
    const names = callsOf(orderId).map((c) => c.name);
    expect(names.indexOf('refundPayment')).toBeLessThan(names.indexOf('cancelStock'));
    await replaysCleanly(handle);
  });

  test('a refund decision of 0 (no payment known) refunds in full a payment its close finds', async () => {
    const { orderId, handle } = await reviewWithNoPayment();
    scriptOf(orderId).trades.push({ tradeNo: 'T-quiet', amount: 1000 });
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'dave', reason: 'never paid', refundAmount: 0 }],
      }),
    ).toEqual({ status: 'REFUNDED' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    expect(refundCalls(orderId).map((c) => c.args)).toEqual([
      expect.objectContaining({ tradeNo: 'T-quiet', amount: 1000 }),
    ]);
  });

  test("the decision's close refused again past the provider's expiry: nobody can pay it, so the order is released", async () => {
    const { orderId, handle } = await reviewWithNoPayment({ providerExpiryMarginMs: 0 });
    scriptOf(orderId).closeRefusals = 5;
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'dave', reason: 'keys revoked' }],
      }),
    ).toEqual({ status: 'REFUNDED' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    expect(scriptOf(orderId).status).toBe('REFUNDED');
    expect(callsOf(orderId).map((c) => c.name)).toContain('cancelStock');
    const timeline = (await handle.query(statusQuery)).timeline.map((e) => e.type);
    expect(timeline).toContain('CLOSE_FAILED');
    await replaysCleanly(handle);
  });

  test("the decision's close refused again before the provider's expiry: the decision fails, the order stays in review with its stock, the next closes it", async () => {
    const { orderId, handle } = await reviewWithNoPayment({ providerExpiryMarginMs: 10 * 60_000 });
    scriptOf(orderId).closeRefusals = 1;
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'dave', reason: 'never paid' }],
      }),
    ).toMatchObject({
      status: 'NEEDS_REVIEW',
      failure: { type: 'PROVIDER_REJECTED', message: expect.stringMatching(/decide again after then/) },
    });
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('cancelStock');
    expect(scriptOf(orderId).status).toBe('NEEDS_REVIEW');
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'dave', reason: 'provider fixed' }],
      }),
    ).toEqual({ status: 'REFUNDED' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    expect(callsOf(orderId).filter((c) => c.name === 'closeProviderPayment')).toHaveLength(3);
    await replaysCleanly(handle);
  });

  test('a payment reported during that review is recorded by an approval', async () => {
    const { orderId, handle } = await reviewWithNoPayment();
    scriptOf(orderId).trades.push({ tradeNo: 'T-late', amount: 1000 });
    await handle.signal(paymentNotifiedSignal, scriptedNotification(orderId, 'evt-late', 'T-late', 1000));
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'approve', operator: 'erin', reason: 'paid after all' }],
      }),
    ).toEqual({ status: 'PAID' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    expect(scriptOf(orderId)).toMatchObject({ status: 'PAID', paidTradeNo: 'T-late' });
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('refundPayment');
  });
});

/** An order whose lost callback's trade the provider reports refunded (in part or in full) when queried. */
async function reviewOfRefundedTrade(
  refunded: number | 'unreported',
): Promise<{ orderId: string; handle: WorkflowHandle }> {
  const orderId = newScriptedOrder({
    status: 'AWAITING_PAYMENT',
    paidTradeNo: null,
    trades: [{ tradeNo: 'T-1', amount: 1000, refunded }],
  });
  const handle = await startScriptedOrder(orderId, { queryFirstDelayMs: 200 });
  await waitFor(async () => (await handle.query(statusQuery)).stage === 'AWAITING_REVIEW', { what: 'the review' });
  expect(scriptOf(orderId).status).toBe('NEEDS_REVIEW');
  expect(callsOf(orderId).map((c) => c.name)).not.toContain('confirmStock');
  return { orderId, handle };
}

describe('defects found by review: a payment the provider reports refunded', () => {
  test('refunded in full at the provider (a lost callback, then a console refund): never confirmed; a refund decision refunds nothing more', async () => {
    const { orderId, handle } = await reviewOfRefundedTrade(1000);
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'fay', reason: 'refunded from the console' }],
      }),
    ).toEqual({ status: 'REFUNDED' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('refundPayment');
    expect(callsOf(orderId).map((c) => c.name)).toContain('cancelStock');
    await replaysCleanly(handle);
  });

  test('refunded in part: never confirmed; a refund decision refunds what is left', async () => {
    const { orderId, handle } = await reviewOfRefundedTrade(300);
    await handle.executeUpdate(reviewDecisionUpdate, {
      args: [{ decision: 'refund', operator: 'fay', reason: 'partly refunded from the console' }],
    });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    const refunds = refundCalls(orderId);
    expect(refunds.map((c) => c.args)).toEqual([expect.objectContaining({ tradeNo: 'T-1', amount: 700 })]);
  });
});

describe('defects found by a second review: decisions on refunded and unchecked payments', () => {
  const refuse = (handle: WorkflowHandle, decision: Record<string, unknown>) =>
    handle.executeUpdate(reviewDecisionUpdate, {
      args: [{ operator: 'gus', reason: 'checked the console', ...decision } as never],
    });

  test('reported refunded without the amounts (WeChat Pay): a refund decision names what is left, and settles the order', async () => {
    const { orderId, handle } = await reviewOfRefundedTrade('unreported');
    // Without the amount the decision cannot be carried out; it is refused at once, saying what to send.
    await expect(refuse(handle, { decision: 'refund' })).rejects.toMatchObject({
      cause: { type: 'REVIEW_DECISION_REFUSED', message: expect.stringMatching(/refundAmount/) },
    });
    // Approving would ship goods for money given back.
    await expect(refuse(handle, { decision: 'approve' })).rejects.toMatchObject({
      cause: { type: 'REVIEW_DECISION_REFUSED', message: expect.stringMatching(/given back/) },
    });
    await expect(refuse(handle, { decision: 'refund', refundAmount: 1001 })).rejects.toMatchObject({
      cause: { type: 'REVIEW_DECISION_REFUSED', message: expect.stringMatching(/more than/) },
    });
    expect(await refuse(handle, { decision: 'refund', refundAmount: 600 })).toEqual({ status: 'REFUNDED' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    expect(refundCalls(orderId).map((c) => c.args)).toEqual([
      expect.objectContaining({ tradeNo: 'T-1', amount: 600, outRefundNo: reviewRefundNo(orderId, 'T-1', 600) }),
    ]);
    await replaysCleanly(handle);
  });

  test('refunded in full without the amounts: refundAmount 0 closes the order with no refund', async () => {
    const { orderId, handle } = await reviewOfRefundedTrade('unreported');
    expect(await refuse(handle, { decision: 'refund', refundAmount: 0 })).toEqual({ status: 'REFUNDED' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('refundPayment');
    expect(scriptOf(orderId).status).toBe('REFUNDED');
  });

  test('more refunded at the provider since the review opened: a refund of the amount the operator names is made under a number of its own', async () => {
    const { orderId, handle } = await reviewOfRefundedTrade(300);
    // The workflow knows 700 are left; the console says 500 (another 200 refunded since): the provider refuses 700.
    scriptOf(orderId).refundRefusals = 1;
    const first = await refuse(handle, { decision: 'refund' });
    expect(first).toMatchObject({ status: 'NEEDS_REVIEW', failure: { type: 'PROVIDER_REJECTED' } });
    expect(await refuse(handle, { decision: 'refund', refundAmount: 500 })).toEqual({ status: 'REFUNDED' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    expect(refundCalls(orderId).map((c) => c.args)).toEqual([
      expect.objectContaining({ amount: 700, outRefundNo: autoRefundNo(orderId, 'T-1') }),
      expect.objectContaining({ amount: 500, outRefundNo: reviewRefundNo(orderId, 'T-1', 500) }),
    ]);
  });

  test('refunded in full at the provider: approve is refused (it would ship goods for money given back)', async () => {
    const { orderId, handle } = await reviewOfRefundedTrade(1000);
    await expect(refuse(handle, { decision: 'approve' })).rejects.toMatchObject({
      cause: { type: 'REVIEW_DECISION_REFUSED', message: expect.stringMatching(/given back/) },
    });
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('transition:PAID');
    await refuse(handle, { decision: 'refund' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
  });

  test('a payment reported during a review that opened without one, and not matching the order, is not approved unchecked', async () => {
    const orderId = newScriptedOrder({ status: 'AWAITING_PAYMENT', paidTradeNo: null, trades: [], closeRefusals: 1 });
    const handle = await startScriptedOrder(orderId, { paymentTimeoutMs: 1000 });
    await waitFor(async () => (await handle.query(statusQuery)).stage === 'AWAITING_REVIEW', {
      what: 'the review after the refused close',
    });
    // One fen: a signed callback the workflow takes as the payment, never compared with the order.
    await handle.signal(paymentNotifiedSignal, scriptedNotification(orderId, 'evt-fen', 'T-fen', 1));
    await expect(refuse(handle, { decision: 'approve' })).rejects.toMatchObject({
      cause: { type: 'REVIEW_DECISION_REFUSED', message: expect.stringMatching(/does not match the order/) },
    });
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('transition:PAID');
    expect(await refuse(handle, { decision: 'refund' })).toEqual({ status: 'REFUNDED' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    expect(refundCalls(orderId).map((c) => c.args)).toEqual([expect.objectContaining({ tradeNo: 'T-fen', amount: 1 })]);
  });

  test('refundAmount goes with a refund decision only, in whole minor units (the workflow and the API refuse it otherwise)', async () => {
    const { orderId, handle } = await reviewOfRefundedTrade('unreported');
    await expect(refuse(handle, { decision: 'approve', refundAmount: 5 })).rejects.toMatchObject({
      cause: { message: expect.stringMatching(/refund decision only/) },
    });
    await expect(refuse(handle, { decision: 'refund', refundAmount: 1.5 })).rejects.toMatchObject({
      cause: { message: expect.stringMatching(/whole number/) },
    });
    for (const body of [
      { decision: 'approve', refundAmount: 5 },
      { decision: 'refund', refundAmount: -1 },
      { decision: 'refund', refundAmount: '5' },
    ]) {
      const r = await sys.http(
        'POST',
        `/orders/${orderId}/review`,
        { operator: 'gus', reason: 'console', ...body },
        admin(),
      );
      expect([r.status, r.body.error]).toEqual([400, 'VALIDATION_FAILED']);
    }
    await refuse(handle, { decision: 'refund', refundAmount: 0 });
    await within(handle.result(), 20_000, 'the order workflow to finish');
  });
});

describe('defects found by a third review', () => {
  const decide = (handle: WorkflowHandle, decision: Record<string, unknown>) =>
    handle.executeUpdate(reviewDecisionUpdate, {
      args: [{ operator: 'ida', reason: 'checked the console', ...decision } as never],
    });

  test('a late payment whose refund the provider keeps refusing under its own number is refunded under the number of the amount the operator names', async () => {
    const orderId = newScriptedOrder({
      status: 'EXPIRED',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-late', amount: 1000 }],
      refundRefusals: 2,
    });
    const late = await scripted.client.workflow.start('latePayment', {
      workflowId: latePaymentWorkflowId('sandbox', orderId, 'T-late'),
      taskQueue: scripted.taskQueue,
      args: [{ provider: 'sandbox', outTradeNo: orderId, tradeNo: 'T-late' } satisfies LatePaymentInput],
    });
    await waitFor(async () => scriptOf(orderId).status === 'NEEDS_REVIEW', { what: 'the order left for review' });
    // The trade's own number is refused again (a refund the provider failed under it, say).
    expect(await decide(late, { decision: 'refund' })).toMatchObject({ status: 'NEEDS_REVIEW' });
    expect(await decide(late, { decision: 'refund', refundAmount: 1000 })).toEqual({ status: 'REFUNDED' });
    expect(await late.result()).toMatchObject({ outcome: 'REFUNDED' });
    expect(refundCalls(orderId).map((c) => (c.args as { outRefundNo: string }).outRefundNo)).toEqual([
      autoRefundNo(orderId, 'T-late'),
      autoRefundNo(orderId, 'T-late'),
      reviewRefundNo(orderId, 'T-late', 1000),
    ]);
    expect(scriptOf(orderId)).toMatchObject({ status: 'REFUNDED', paidTradeNo: 'T-late' });
    await replaysCleanly(late);
  });

  test('approve is refused once this workflow has refunded the payment, even when the step after the refund failed', async () => {
    // A mismatch review (1 fen short); the refund decision refunds, then releasing the stock fails for good.
    const orderId = newScriptedOrder({
      status: 'AWAITING_PAYMENT',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-short', amount: 999 }],
      // The release conflicts, and so does the return it falls back to.
      cancelStockFailures: 1,
      returnStockFailures: 1,
    });
    const handle = await startScriptedOrder(orderId, { queryFirstDelayMs: 200 });
    await waitFor(async () => (await handle.query(statusQuery)).stage === 'AWAITING_REVIEW', { what: 'the review' });
    expect(await decide(handle, { decision: 'refund' })).toMatchObject({ status: 'NEEDS_REVIEW' });
    expect(refundCalls(orderId)).toHaveLength(1);
    await expect(decide(handle, { decision: 'approve' })).rejects.toMatchObject({
      cause: { type: 'REVIEW_DECISION_REFUSED', message: expect.stringMatching(/already refunded/) },
    });
    expect(await decide(handle, { decision: 'refund' })).toEqual({ status: 'REFUNDED' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('transition:PAID');
  });

  test('a payment reported without its amount can be refunded by the amount the operator names', async () => {
    const orderId = newScriptedOrder({
      status: 'AWAITING_PAYMENT',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-noamount', amount: undefined }],
    });
    const handle = await startScriptedOrder(orderId, { queryFirstDelayMs: 200 });
    await waitFor(async () => (await handle.query(statusQuery)).stage === 'AWAITING_REVIEW', { what: 'the review' });
    expect(await decide(handle, { decision: 'refund', refundAmount: 1000 })).toEqual({ status: 'REFUNDED' });
    await within(handle.result(), 20_000, 'the order workflow to finish');
    expect(refundCalls(orderId).map((c) => c.args)).toEqual([
      expect.objectContaining({ tradeNo: 'T-noamount', amount: 1000 }),
    ]);
  });
});

describe('defects found by a review of the order workflow', () => {
  test("a buyer's cooling-off refund the provider refuses after an approved review opens a new review with the order NEEDS_REVIEW, and a refund decision settles it", async () => {
    // Paid 1200 for a 1000 order (confirmed with the provider): review. Approved: PAID, cooling-off. The buyer's refund
    // is refused by the provider. Before the fix the refusal was taken for the approval failing: the workflow waited in
    // review while MySQL said PAID (every API decision refused 409), and the buyer's refund call hung.
    const orderId = newScriptedOrder({
      status: 'AWAITING_PAYMENT',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-over', amount: 1200 }],
      refundRefusals: 1,
    });
    const handle = await startScriptedOrder(orderId, { coolingOffMs: 60_000 });
    await handle.signal(paymentNotifiedSignal, scriptedNotification(orderId, 'evt-over', 'T-over', 1200));
    await waitFor(async () => (await handle.query(statusQuery)).stage === 'AWAITING_REVIEW', { what: 'the review' });
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'approve', operator: 'ivy', reason: 'buyer agreed to the price' }],
      }),
    ).toEqual({ status: 'PAID' });
    await waitFor(async () => (await handle.query(statusQuery)).stage === 'COOLING_OFF', {
      what: 'the cooling-off window after the approval',
    });
    expect(scriptOf(orderId).status).toBe('PAID');
    const answer = await within(
      handle.executeUpdate(coolingOffRefundUpdate, { args: [{ reason: 'changed my mind' }] }),
      20_000,
      "the buyer's refund to be answered",
      () => orderState(orderId),
    );
    expect(answer).toEqual({ status: 'NEEDS_REVIEW' });
    expect(scriptOf(orderId).status).toBe('NEEDS_REVIEW');
    expect((await handle.query(statusQuery)).stage).toBe('AWAITING_REVIEW');
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('event:REVIEW_DECISION_FAILED');
    // A decision reaches it, and settles it: refunded once (the refused attempt and this one share the number).
    expect(
      await handle.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'ivy', reason: 'refund as the buyer asked' }],
      }),
    ).toEqual({ status: 'REFUNDED' });
    expect(await within(handle.result(), 20_000, 'the order workflow to finish')).toEqual({
      orderId,
      status: 'REFUNDED',
      reason: 'REVIEW_REFUNDED',
    });
    expect(refundCalls(orderId).map((c) => (c.args as { outRefundNo: string; amount: number }).amount)).toEqual([
      1200, 1200,
    ]);
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('markFulfilmentReady');
    await replaysCleanly(handle);
  });
});

describe('defects found by review: late payments', () => {
  const routeDeps = () => ({
    db: sys.db,
    client: scripted.client,
    taskQueue: scripted.taskQueue,
    callTimeoutMs: 10_000,
    lateRecheckDelaysMs: [200, 400],
  });
  const notification = (orderId: string, tradeNo: string, id: string) =>
    scriptedNotification(orderId, id, tradeNo, 1000);
  const queries = (orderId: string) => callsOf(orderId).filter((c) => c.name === 'queryProviderPayment').length;

  test('a trade the provider does not show at the first query (its query lags the notification it signed) is queried again and refunded by the same run', async () => {
    const orderId = newScriptedOrder({ status: 'EXPIRED', paidTradeNo: null, trades: [] });
    await routePaymentNotification(
      { ...routeDeps(), lateRecheckDelaysMs: [1_000, 1_000, 1_000] },
      notification(orderId, 'T-lag', 'evt-lag'),
    );
    const late = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, 'T-lag'));
    await waitFor(async () => queries(orderId) >= 1, { what: 'the first query of the late trade' });
    // The provider catches up: before the fix the run had already ended NOT_PAID_AT_PROVIDER, nothing recorded.
    scriptOf(orderId).trades.push({ tradeNo: 'T-lag', amount: 1000 });
    expect(await late.result()).toMatchObject({ outcome: 'REFUNDED' });
    expect(queries(orderId)).toBeGreaterThanOrEqual(2);
    expect(refundCalls(orderId)).toHaveLength(1);
    expect(scriptOf(orderId)).toMatchObject({ status: 'REFUNDED', paidTradeNo: 'T-lag' });
    await replaysCleanly(late);
  });

  test('a late trade whose query the provider refuses goes to review with why, and a refund decision settles it (the run failed with nothing recorded before)', async () => {
    const orderId = newScriptedOrder({
      status: 'EXPIRED',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-ref', amount: 1000 }],
      queryRefusals: 1_000, // every time
    });
    await routePaymentNotification(routeDeps(), notification(orderId, 'T-ref', 'evt-ref'));
    const late = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, 'T-ref'));
    await waitFor(async () => (await late.describe()).typedSearchAttributes.get(NeedsReviewKey) === true, {
      what: 'the late trade waiting in review',
    });
    expect(scriptOf(orderId).status).toBe('NEEDS_REVIEW');
    const review = callsOf(orderId).find((c) => c.name === 'event:LATE_PAYMENT_REFUND_FAILED');
    expect((review?.args as { message: string }).message).toMatch(
      /refused the query of trade T-ref .*PROVIDER_REJECTED/,
    );
    expect(refundCalls(orderId)).toHaveLength(0);
    // The provider keeps refusing the query: a decision without an amount cannot be carried out (the run waits for
    // another); one that names the amount (from the provider's console) is.
    expect(
      await late.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'kim', reason: 'refund it' }],
      }),
    ).toEqual({
      status: 'NEEDS_REVIEW',
      failure: { type: 'PROVIDER_REJECTED', message: 'payment_intent ambiguous for this order' },
    });
    expect(refundCalls(orderId)).toHaveLength(0);
    expect(
      await late.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'kim', reason: 'the console shows 10.00 paid', refundAmount: 1000 }],
      }),
    ).toEqual({ status: 'REFUNDED' });
    expect(await late.result()).toMatchObject({ outcome: 'REFUNDED' });
    expect(refundCalls(orderId).map((c) => (c.args as { amount: number }).amount)).toEqual([1000]);
    // The named amount replaces the trade's automatic refund, should its provider have reported it failed: refused if
    // that one was then reported succeeded, and closed by the decision if it failed before it.
    expect(refundCalls(orderId)[0]!.args).toMatchObject({ retriesFailedRefund: autoRefundNo(orderId, 'T-ref') });
    expect(callsOf(orderId).find((c) => c.name === 'transition:REFUNDED')?.args).toMatchObject({
      closesFailedRefunds: [autoRefundNo(orderId, 'T-ref')],
      failedBefore: expect.any(String),
    });
    expect(scriptOf(orderId)).toMatchObject({ status: 'REFUNDED' });
    await replaysCleanly(late);
  });

  test.each([
    { status: 'PAID' as const, outcome: 'ALREADY_CONFIRMED' },
    { status: 'REFUNDED' as const, outcome: 'REFUNDED' },
  ])(
    "the order's own trade reported again with the query refused is not sent to review (order $status: $outcome)",
    async ({ status, outcome }) => {
      // A redelivery with a new id (Alipay's TRADE_FINISHED after TRADE_SUCCESS) of the trade that paid the order, while
      // the provider refuses queries (a rotated key): the review it opened refused approvals, so only a refund of the
      // fulfilled order's own payment could close it.
      const orderId = newScriptedOrder({
        status,
        paidTradeNo: 'T-own',
        trades: [{ tradeNo: 'T-own', amount: 1000 }],
        queryRefusals: 1_000,
      });
      await routePaymentNotification(routeDeps(), notification(orderId, 'T-own', 'evt-finished'));
      const late = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, 'T-own'));
      expect(await within(late.result(), 20_000, 'the late run to end')).toMatchObject({ outcome });
      expect(callsOf(orderId).map((c) => c.name)).not.toContain('transition:NEEDS_REVIEW');
      expect(callsOf(orderId).map((c) => c.name)).not.toContain('enterLateReview');
      expect(callsOf(orderId).map((c) => c.name)).not.toContain('event:LATE_PAYMENT_REFUND_FAILED');
      expect(refundCalls(orderId)).toHaveLength(0);
      expect(scriptOf(orderId)).toMatchObject({ status, paidTradeNo: 'T-own' });
      await replaysCleanly(late);
    },
  );

  test('a trade that may be the paying one (the order PAID by a trade the provider did not name), its query refused, goes to review, which a refund of 0 closes PAID', async () => {
    const orderId = newScriptedOrder({
      status: 'PAID',
      paidTradeNo: 'unknown',
      trades: [{ tradeNo: 'T-maybe', amount: 1000 }],
      queryRefusals: 1_000,
    });
    await routePaymentNotification(routeDeps(), notification(orderId, 'T-maybe', 'evt-maybe'));
    const late = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, 'T-maybe'));
    await waitFor(async () => (await late.describe()).typedSearchAttributes.get(NeedsReviewKey) === true, {
      what: 'the trade waiting in review',
    });
    expect(scriptOf(orderId).status).toBe('NEEDS_REVIEW');
    // It may be the very trade that paid: the operator, having checked the console, closes it without a refund.
    expect(
      await late.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'lee', reason: 'it is the paying trade', refundAmount: 0 }],
      }),
    ).toEqual({ status: 'PAID' });
    expect(refundCalls(orderId)).toHaveLength(0);
    expect(scriptOf(orderId)).toMatchObject({ status: 'PAID', paidTradeNo: 'unknown' });
    await replaysCleanly(late);
  });

  /** Reports `tradeNo` again (a new notification id) and waits for its new run to take its review over. */
  async function reportedAgainInItsReview(orderId: string, tradeNo: string) {
    await routePaymentNotification(routeDeps(), notification(orderId, tradeNo, `evt-${tradeNo}-again`));
    const late = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, tradeNo));
    await waitFor(async () => (await late.describe()).typedSearchAttributes.get(NeedsReviewKey) === true, {
      what: 'the run to take the review over',
    });
    return late;
  }
  /** Sends a review decision to a late-payment run and waits (bounded) for its answer. */
  function decideWithin(late: WorkflowHandle, decision: ReviewDecision) {
    return within(
      late.executeUpdate(reviewDecisionUpdate, { args: [decision] }),
      20_000,
      'the decision to be carried out',
    );
  }

  test('a trade reported again while the order waits in the review it opened, its run ended (terminated), takes that review over: the decision is carried out, not refused for want of a handler', async () => {
    // An earlier run of this trade left the order in review (its refund refused) and ended without the decision.
    const orderId = newScriptedOrder({
      status: 'NEEDS_REVIEW',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-mine', amount: 1000 }],
      lateReview: { tradeNo: 'T-mine', from: 'EXPIRED' },
    });
    const late = await reportedAgainInItsReview(orderId, 'T-mine');
    expect(callsOf(orderId).map((c) => c.name)).toContain('event:LATE_PAYMENT_REVIEW_RESUMED');
    expect(
      await decideWithin(late, { decision: 'refund', operator: 'ada', reason: 'refund the late payment' }),
    ).toEqual({ status: 'REFUNDED' });
    expect(await late.result()).toMatchObject({ outcome: 'REFUNDED' });
    expect(refundCalls(orderId)).toHaveLength(1);
    // Back from review to REFUNDED (the order was EXPIRED when the review opened), recording the trade.
    expect(scriptOf(orderId)).toMatchObject({ status: 'REFUNDED', paidTradeNo: 'T-mine' });
    await replaysCleanly(late);
  });

  test("the same decision sent again while the late trade's refund is carried out joins it: one refund, the same answer", async () => {
    // Refused before ("not waiting for a decision"): the API retried for 5 s, then answered ORDER_NOT_IN_REVIEW for an
    // order in review, to an operator retrying after a 503 from a slow provider.
    const orderId = newScriptedOrder({
      status: 'NEEDS_REVIEW',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-slow', amount: 1000 }],
      lateReview: { tradeNo: 'T-slow', from: 'EXPIRED' },
      refundDelayMs: 8_000,
    });
    const late = await reportedAgainInItsReview(orderId, 'T-slow');
    const decision: ReviewDecision = { decision: 'refund', operator: 'ada', reason: 'refund the late payment' };
    const first = decideWithin(late, decision);
    await waitFor(async () => refundCalls(orderId).length === 1, { what: 'the refund under way' });
    const second = await decideWithin(late, decision);
    expect(second).toEqual({ status: 'REFUNDED' });
    expect(await first).toEqual(second);
    expect(refundCalls(orderId)).toHaveLength(1);
    await replaysCleanly(late);
  });

  test('a taken-over review of a PAID order whose paying trade is unknown may still approve the trade as the paying one, as the original review could', async () => {
    const orderId = newScriptedOrder({
      status: 'NEEDS_REVIEW',
      paidTradeNo: 'unknown',
      trades: [{ tradeNo: 'T-pays', amount: 1000 }],
      lateReview: { tradeNo: 'T-pays', from: 'PAID' },
    });
    const late = await reportedAgainInItsReview(orderId, 'T-pays');
    expect(
      await decideWithin(late, {
        decision: 'approve',
        operator: 'ada',
        reason: 'the console shows it paid this order',
      }),
    ).toEqual({ status: 'PAID' });
    expect(await late.result()).toMatchObject({ outcome: 'ALREADY_CONFIRMED' });
    expect(refundCalls(orderId)).toHaveLength(0);
    expect(scriptOf(orderId)).toMatchObject({ status: 'PAID', paidTradeNo: 'T-pays' });
    await replaysCleanly(late);
  });

  test("a taken-over review of the order's own paying trade, decided refund, leaves the order REFUNDED, never PAID by nobody", async () => {
    // A refused query sent the paying trade of a PAID order to review (before late-payment-query-refused-own-trade).
    const orderId = newScriptedOrder({
      status: 'NEEDS_REVIEW',
      paidTradeNo: 'T-own-paid',
      trades: [{ tradeNo: 'T-own-paid', amount: 1000 }],
      lateReview: { tradeNo: 'T-own-paid', from: 'PAID' },
    });
    const late = await reportedAgainInItsReview(orderId, 'T-own-paid');
    expect(
      await decideWithin(late, { decision: 'refund', operator: 'ada', reason: 'the buyer asked for the money back' }),
    ).toEqual({ status: 'REFUNDED' });
    expect(refundCalls(orderId)).toHaveLength(1);
    expect(scriptOf(orderId)).toMatchObject({ status: 'REFUNDED' });
    await replaysCleanly(late);
  });

  test('a trade whose refund is refused while its order enters another review waits that review out, then is decided again on the order as it is: the other review keeps its decisions, and this trade is not forgotten', async () => {
    // A PAID order (its own trade T-own) is reported a second trade T-X; its refund is refused, and meanwhile the order
    // goes to another review (a failed refund's notice, say).
    const orderId = newScriptedOrder({
      status: 'PAID',
      paidTradeNo: 'T-own',
      trades: [{ tradeNo: 'T-X', amount: 1000 }],
      refundRefusals: 2,
      anotherReviewOnRefusal: true,
    });
    await routePaymentNotification({ ...routeDeps(), lateReviewPollMs: 300 }, notification(orderId, 'T-X', 'evt-x'));
    const late = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, 'T-X'));
    await waitFor(async () => callsOf(orderId).some((c) => c.name === 'event:LATE_PAYMENT_WAITS_FOR_REVIEW'), {
      what: 'T-X to find the order in the other review',
    });
    // The other review is not T-X's: nothing of T-X's review was written (before the fix its entry was, and the API
    // sent the other review's decisions to T-X), and T-X is listed with the orders in review while it waits.
    expect(scriptOf(orderId).lateReview).toBeUndefined();
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('event:LATE_PAYMENT_REFUND_FAILED');
    await waitFor(async () => (await late.describe()).typedSearchAttributes.get(NeedsReviewKey) === true, {
      what: 'T-X listed with the orders in review while it waits',
    });
    // The other review is settled, the order PAID again: T-X is decided again, its refund refused again, and its own
    // review opens, from PAID.
    scriptOf(orderId).status = 'PAID';
    await waitFor(async () => scriptOf(orderId).lateReview?.tradeNo === 'T-X', {
      what: "T-X's own review to open",
      timeoutMs: 20_000,
    });
    expect(scriptOf(orderId)).toMatchObject({ status: 'NEEDS_REVIEW', lateReview: { from: 'PAID' } });
    const current = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, 'T-X'));
    expect(
      await decideWithin(current, { decision: 'refund', operator: 'ada', reason: 'refund the second payment' }),
    ).toEqual({ status: 'PAID' });
    expect(refundCalls(orderId)).toHaveLength(3);
    // Back to PAID with its own trade: T-X was another trade.
    expect(scriptOf(orderId)).toMatchObject({ status: 'PAID', paidTradeNo: 'T-own' });
    const back = callsOf(orderId)
      .filter((c) => c.name === 'transition:PAID')
      .at(-1)?.args as { reason: string };
    expect(back.reason).toBe('LATE_TRADE_REFUNDED');
    await replaysCleanly(current);
  });

  test('a trade that may be the paying one whose order changed before its review opened (the paying trade named meanwhile) is decided again: refunded, never offered for approval', async () => {
    // PAID by a trade the provider did not name: T-Y may be it, so it goes to review. Before the review opens, another
    // review names T-A as the paying trade.
    const orderId = newScriptedOrder({
      status: 'PAID',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-Y', amount: 1000 }],
      changeBeforeReview: { paidTradeNo: 'T-A' },
    });
    await routePaymentNotification(routeDeps(), notification(orderId, 'T-Y', 'evt-y'));
    const late = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, 'T-Y'));
    // Before the fix the review opened with approval offered: approving T-Y would have replaced T-A as the paying trade,
    // both payments kept.
    expect(await within(late.result(), 20_000, 'T-Y to be decided')).toMatchObject({ outcome: 'REFUNDED' });
    expect(refundCalls(orderId).map((c) => c.args as { tradeNo: string })).toEqual([
      expect.objectContaining({ tradeNo: 'T-Y' }),
    ]);
    expect(scriptOf(orderId)).toMatchObject({ status: 'PAID', paidTradeNo: 'T-A' });
    expect(scriptOf(orderId).lateReview).toBeUndefined();
    await replaysCleanly(late);
  });

  test('a trade reported while its order is in review held by another workflow waits the review out, then is refunded when the review kept another trade (it was only noted, and dropped)', async () => {
    // The order is in review (a failed refund's, say), its own workflow gone; the provider reports a second trade T-B.
    const orderId = newScriptedOrder({
      status: 'NEEDS_REVIEW',
      paidTradeNo: null,
      trades: [
        { tradeNo: 'T-A', amount: 1000 },
        { tradeNo: 'T-B', amount: 1000 },
      ],
    });
    await routePaymentNotification({ ...routeDeps(), lateReviewPollMs: 300 }, notification(orderId, 'T-B', 'evt-b'));
    const late = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, 'T-B'));
    // It finds the order in review, then looks again (three looks: one at the start, two while waiting).
    await waitFor(async () => callsOf(orderId).filter((c) => c.name === 'getOrderSnapshot').length >= 3, {
      what: 'the late trade to look at its order in review again',
    });
    expect((await late.describe()).status.name).toBe('RUNNING');
    expect(refundCalls(orderId)).toHaveLength(0);
    expect(callsOf(orderId).filter((c) => c.name === 'event:LATE_PAYMENT_SEEN')).toHaveLength(1);
    // The review settles: the order kept T-A. T-B is money the order does not keep.
    Object.assign(scriptOf(orderId), { status: 'PAID', paidTradeNo: 'T-A' });
    expect(await within(late.result(), 20_000, 'the late trade to be decided')).toMatchObject({ outcome: 'REFUNDED' });
    expect(refundCalls(orderId).map((c) => c.args as { tradeNo: string; amount: number })).toEqual([
      expect.objectContaining({ tradeNo: 'T-B', amount: 1000 }),
    ]);
    expect(scriptOf(orderId)).toMatchObject({ status: 'PAID', paidTradeNo: 'T-A' });
    expect(callsOf(orderId).filter((c) => c.name === 'event:LATE_PAYMENT_SEEN')).toHaveLength(1);
    await replaysCleanly(late);
  });

  test('a refused query for an order in review held elsewhere does not take over that review: the trade waits it out, then is queried again and refunded', async () => {
    const orderId = newScriptedOrder({
      status: 'NEEDS_REVIEW',
      paidTradeNo: null,
      trades: [{ tradeNo: 'T-R', amount: 1000 }],
      queryRefusals: 1,
    });
    await routePaymentNotification({ ...routeDeps(), lateReviewPollMs: 300 }, notification(orderId, 'T-R', 'evt-r'));
    const late = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, 'T-R'));
    await waitFor(async () => callsOf(orderId).filter((c) => c.name === 'getOrderSnapshot').length >= 3, {
      what: 'the late trade to wait out the review',
    });
    // No review of its own (decisions of that review still reach the workflow holding it), no status change.
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('event:LATE_PAYMENT_REFUND_FAILED');
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('transition:NEEDS_REVIEW');
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('enterLateReview');
    expect((await late.describe()).typedSearchAttributes.get(NeedsReviewKey)).toBe(true);
    Object.assign(scriptOf(orderId), { status: 'EXPIRED' });
    expect(await within(late.result(), 20_000, 'the late trade to be decided')).toMatchObject({ outcome: 'REFUNDED' });
    expect(refundCalls(orderId)).toHaveLength(1);
    expect(scriptOf(orderId)).toMatchObject({ status: 'REFUNDED', paidTradeNo: 'T-R' });
    await replaysCleanly(late);
  });

  test('a trade whose late-payment run found nothing to refund (a stale query) is verified again when reported again', async () => {
    // The order closed unpaid; its workflow is gone. The provider's query does not show the trade yet, nor on the
    // two queries after it: the run ends NOT_PAID_AT_PROVIDER and the order's timeline says so.
    const orderId = newScriptedOrder({ status: 'EXPIRED', paidTradeNo: null, trades: [] });
    const first = await routePaymentNotification(routeDeps(), notification(orderId, 'T-9', 'evt-9'));
    expect(first).toMatchObject({ destination: 'LATE' });
    const late = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, 'T-9'));
    expect(await late.result()).toMatchObject({
      outcome: 'NOT_PAID_AT_PROVIDER',
      detail: expect.stringMatching(/still reports PENDING for trade T-9 after 3 queries/),
    });
    expect(queries(orderId)).toBe(3);
    expect(callsOf(orderId).map((c) => c.name)).toContain('event:LATE_PAYMENT_UNVERIFIED');
    await replaysCleanly(late);

    // The provider now shows it; the redelivery (or the next reconciliation) must not be answered "already handled".
    scriptOf(orderId).trades.push({ tradeNo: 'T-9', amount: 1000 });
    const second = await routePaymentNotification(routeDeps(), notification(orderId, 'T-9', 'evt-9b'));
    expect(second.detail).toMatch(/started again/);
    expect(await late.result()).toMatchObject({ outcome: 'REFUNDED' });
    expect(refundCalls(orderId)).toHaveLength(1);

    // Settled: a third report starts nothing.
    const third = await routePaymentNotification(routeDeps(), notification(orderId, 'T-9', 'evt-9c'));
    expect(third.detail).toMatch(/settled it \(REFUNDED\)/);
    expect(refundCalls(orderId)).toHaveLength(1);
  });

  /** An order PAID by a trade the provider did not name; a trade of it reported late waits in review for a decision. */
  async function unknownPayingTradeReview(id: string) {
    const orderId = newScriptedOrder({
      status: 'PAID',
      paidTradeNo: 'unknown',
      trades: [{ tradeNo: 'T-real', amount: 1000 }],
    });
    await routePaymentNotification(routeDeps(), notification(orderId, 'T-real', `evt-${id}`));
    const late = scripted.client.workflow.getHandle(latePaymentWorkflowId('sandbox', orderId, 'T-real'));
    await waitFor(async () => (await late.describe()).typedSearchAttributes.get(NeedsReviewKey) === true, {
      what: 'the late trade waiting in review',
    });
    expect(scriptOf(orderId).status).toBe('NEEDS_REVIEW');
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('refundPayment');
    expect(callsOf(orderId).map((c) => c.name)).toContain('event:LATE_PAYMENT_SEEN');
    // Reported again meanwhile: the run waiting for the decision is the one, no second run.
    const again = await routePaymentNotification(routeDeps(), notification(orderId, 'T-real', `evt-${id}-2`));
    expect(again.detail).not.toMatch(/started again/);
    return { orderId, late };
  }

  test('a trade reported for an order PAID by a trade the provider did not name is never refunded unasked: the order waits in review, and approving records it as the paying trade', async () => {
    const { orderId, late } = await unknownPayingTradeReview('keep');
    expect(
      await late.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'approve', operator: 'hal', reason: 'the trade the query did not name' }],
      }),
    ).toEqual({ status: 'PAID' });
    expect(await late.result()).toMatchObject({ outcome: 'ALREADY_CONFIRMED' });
    expect(scriptOf(orderId)).toMatchObject({ status: 'PAID', paidTradeNo: 'T-real' });
    expect(callsOf(orderId).map((c) => c.name)).not.toContain('refundPayment');
    // Settled: a later report of the trade starts nothing.
    const later = await routePaymentNotification(routeDeps(), notification(orderId, 'T-real', 'evt-keep-3'));
    expect(later.detail).toMatch(/settled it/);
    await replaysCleanly(late);
  });

  test('that review refunds the trade on a refund decision, and the order stays PAID', async () => {
    const { orderId, late } = await unknownPayingTradeReview('refund');
    expect(
      await late.executeUpdate(reviewDecisionUpdate, {
        args: [{ decision: 'refund', operator: 'hal', reason: 'a second payment' }],
      }),
    ).toEqual({ status: 'PAID' });
    expect(await late.result()).toMatchObject({ outcome: 'REFUNDED' });
    expect(refundCalls(orderId).map((c) => c.args)).toEqual([
      expect.objectContaining({ tradeNo: 'T-real', amount: 1000 }),
    ]);
    expect(scriptOf(orderId).status).toBe('PAID');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Scripted activities: the real workflow code on a task queue of its own, with a provider and an order row in memory.

interface ScriptedOrder {
  status: OrderStatus;
  paidTradeNo: string | null;
  /** The provider's trades for this order, oldest first; a query reports the latest (REFUNDED when refunded in full). */
  trades: { tradeNo: string; amount: number | undefined; refunded?: number | 'unreported' }[];
  /** closeProviderPayment is refused by the provider (a business failure) this many times. */
  closeRefusals?: number;
  /** returnStock fails (a business failure) this many times. */
  returnStockFailures?: number;
  /** cancelStock fails (a business failure) this many times. */
  cancelStockFailures?: number;
  /** refundPayment is refused by the provider (a business failure) this many times. */
  refundRefusals?: number;
  /** refundPayment takes this long to answer (a slow provider). */
  refundDelayMs?: number;
  /** The next refusal of refundPayment also puts the order in another review (a failed refund's notice, meanwhile). */
  anotherReviewOnRefusal?: boolean;
  /** Applied to the order once, as enterLateReview is called (another review settled meanwhile). */
  changeBeforeReview?: Partial<Pick<ScriptedOrder, 'status' | 'paidTradeNo'>>;
  /** queryProviderPayment is refused by the provider (a business failure) this many times. */
  queryRefusals?: number;
  /** The late trade whose review holds the order (its LATE_PAYMENT_REFUND_FAILED entry), and the status before it. */
  lateReview?: { tradeNo: string; from: OrderStatus };
  calls: { name: string; args: unknown }[];
}
const MERCHANT = 'm_scripted';
const scriptedOrders = new Map<string, ScriptedOrder>();
const scripted = {
  taskQueue: `money-defects-${randomBytes(4).toString('hex')}`,
  client: undefined as unknown as TestSystem['client'],
  worker: undefined as Worker | undefined,
  running: undefined as Promise<void> | undefined,
  connection: undefined as NativeConnection | undefined,
};

function scriptOf(orderId: string): ScriptedOrder {
  const s = scriptedOrders.get(orderId);
  if (!s) throw ApplicationFailure.nonRetryable(`no script for ${orderId}`);
  return s;
}
function callsOf(orderId: string) {
  return scriptOf(orderId).calls;
}
/** The refundPayment calls the order's scripted activities received, in order. */
function refundCalls(orderId: string) {
  return callsOf(orderId).filter((c) => c.name === 'refundPayment');
}
function newScriptedOrder(initial: Omit<ScriptedOrder, 'calls'>): string {
  const orderId = `md_${randomBytes(6).toString('hex')}`;
  scriptedOrders.set(orderId, { ...initial, calls: [] });
  return orderId;
}
function record(orderId: string, name: string, args: unknown) {
  scriptOf(orderId).calls.push({ name, args });
}
function scriptedNotification(orderId: string, notificationId: string, tradeNo: string, amount: number) {
  return {
    notificationId,
    outTradeNo: orderId,
    tradeNo,
    amount,
    currency: 'CNY',
    merchantId: MERCHANT,
    paidAt: new Date().toISOString(),
    provider: 'sandbox',
  };
}

const scriptedActivities: Partial<Activities> = {
  async createOrder(input) {
    record(input.orderId, 'createOrder', input);
    return { amount: 1000, currency: 'CNY', lines: input.items.map((i) => ({ ...i, unitPrice: 1000 / i.quantity })) };
  },
  async reserveStock(input) {
    record(input.orderId, 'reserveStock', input);
    return { reserved: input.lines };
  },
  async confirmStock(input) {
    record(input.orderId, 'confirmStock', input);
    return { confirmed: input.lines.length };
  },
  async cancelStock(input) {
    record(input.orderId, 'cancelStock', input);
    const script = scriptOf(input.orderId);
    if (script.cancelStockFailures) {
      script.cancelStockFailures--;
      throw ApplicationFailure.create({ type: 'TCC_CONFLICT', message: 'stock row changed', nonRetryable: true });
    }
    // Review refund of a confirmed order: cancel conflicts, the stock is returned instead (as the real TCC does).
    if (scriptOf(input.orderId).calls.some((c) => c.name === 'confirmStock'))
      throw ApplicationFailure.create({ type: 'TCC_CONFLICT', message: 'already confirmed', nonRetryable: true });
    return { released: input.lines.length, emptyRollbacks: 0 };
  },
  async returnStock(input) {
    record(input.orderId, 'returnStock', input);
    const s = scriptOf(input.orderId);
    if (s.returnStockFailures) {
      s.returnStockFailures--;
      throw ApplicationFailure.create({
        type: 'TCC_CONFLICT',
        message: 'stock row changed under the return',
        nonRetryable: true,
      });
    }
    return { returned: input.lines.length };
  },
  async transitionOrder(input) {
    record(input.orderId, `transition:${input.to}`, input);
    const s = scriptOf(input.orderId);
    if (s.status === input.to || !input.from.includes(s.status)) return { changed: false, status: s.status };
    s.status = input.to;
    if (input.payment) s.paidTradeNo = input.payment.tradeNo;
    return { changed: true, status: input.to };
  },
  async lateReviewOf(orderId) {
    record(orderId, 'lateReviewOf', orderId);
    const s = scriptOf(orderId);
    return s.status === 'NEEDS_REVIEW' && s.lateReview ? s.lateReview : null;
  },
  async enterLateReview(input) {
    // As src/db/late-review.ts: the review opened (with the entry naming the trade) on the order as the run saw it; an
    // order in another review holds the trade; one that changed since sends the run back to decide again.
    record(input.orderId, 'enterLateReview', input);
    const s = scriptOf(input.orderId);
    if (s.changeBeforeReview) {
      Object.assign(s, s.changeBeforeReview);
      s.changeBeforeReview = undefined;
    }
    if (s.status === 'NEEDS_REVIEW' && s.lateReview?.tradeNo === input.tradeNo)
      return { outcome: 'opened', from: s.lateReview.from, paidTradeNo: s.paidTradeNo };
    if (s.status === 'NEEDS_REVIEW' || s.status === 'AWAITING_PAYMENT') {
      record(input.orderId, 'event:LATE_PAYMENT_WAITS_FOR_REVIEW', input);
      return { outcome: 'held', status: s.status, reason: null };
    }
    if (s.status !== input.seen.status || s.paidTradeNo !== input.seen.paidTradeNo)
      return { outcome: 'changed', status: s.status, paidTradeNo: s.paidTradeNo };
    record(input.orderId, 'event:LATE_PAYMENT_REFUND_FAILED', {
      message: `Payment ${input.tradeNo} arrived after the order was ${s.status} and was not refunded: ${input.why}`,
    });
    record(input.orderId, 'review:NEEDS_REVIEW', input);
    s.lateReview = { tradeNo: input.tradeNo, from: s.status };
    s.status = 'NEEDS_REVIEW';
    return { outcome: 'opened', from: s.lateReview.from, paidTradeNo: s.paidTradeNo };
  },
  async getOrderSnapshot(orderId) {
    record(orderId, 'getOrderSnapshot', orderId);
    const s = scriptOf(orderId);
    return {
      orderId,
      status: s.status,
      amount: 1000,
      currency: 'CNY',
      provider: 'sandbox',
      paidTradeNo: s.paidTradeNo,
    };
  },
  async createProviderPayment(input) {
    record(input.orderId, 'createProviderPayment', input);
    return {
      tradeNo: `T-${input.orderId}`,
      paymentUrl: `http://sandbox.test/pay/${input.orderId}`,
      merchantId: MERCHANT,
    };
  },
  async queryProviderPayment(input) {
    record(input.outTradeNo, 'queryProviderPayment', input);
    const script = scriptOf(input.outTradeNo);
    if (script.queryRefusals) {
      script.queryRefusals--;
      throw ApplicationFailure.create({
        type: 'PROVIDER_REJECTED',
        message: 'payment_intent ambiguous for this order',
        nonRetryable: true,
      });
    }
    const latest = script.trades.at(-1);
    if (!latest) return { outTradeNo: input.outTradeNo, status: 'PENDING' } satisfies ProviderPaymentState;
    return {
      outTradeNo: input.outTradeNo,
      // 'unreported': refunded in part or in full, the amounts not reported (WeChat Pay's trade state REFUND).
      status:
        latest.refunded === 'unreported' || (latest.refunded !== undefined && latest.refunded === latest.amount)
          ? 'REFUNDED'
          : 'PAID',
      tradeNo: latest.tradeNo,
      ...(latest.amount === undefined ? {} : { paidAmount: latest.amount }),
      ...(latest.refunded === undefined || latest.refunded === 'unreported' ? {} : { refundedAmount: latest.refunded }),
      currency: 'CNY',
      merchantId: MERCHANT,
      paidAt: new Date().toISOString(),
    } satisfies ProviderPaymentState;
  },
  async closeProviderPayment(input) {
    record(input.orderId, 'closeProviderPayment', input);
    const s = scriptOf(input.orderId);
    if (s.closeRefusals) {
      s.closeRefusals--;
      throw ApplicationFailure.create({
        type: 'PROVIDER_REJECTED',
        message: 'payment_intent_unexpected_state',
        nonRetryable: true,
      });
    }
    // Too late to close: the buyer has paid (the latest trade, not refunded in full).
    const latest = s.trades.at(-1);
    if (latest && latest.refunded === undefined) return { result: 'ALREADY_PAID' };
    return { result: 'CLOSED' };
  },
  async refundPayment(input) {
    record(input.orderId, 'refundPayment', input);
    const s = scriptOf(input.orderId);
    if (s.refundDelayMs) await new Promise((r) => setTimeout(r, s.refundDelayMs));
    if (s.refundRefusals) {
      s.refundRefusals--;
      if (s.anotherReviewOnRefusal) {
        s.status = 'NEEDS_REVIEW';
        s.anotherReviewOnRefusal = false;
      }
      throw ApplicationFailure.create({ type: 'PROVIDER_REJECTED', message: 'trade frozen', nonRetryable: true });
    }
    return { refundNo: `R-${input.outRefundNo}`, amount: input.amount };
  },
  async markFulfilmentReady(orderId) {
    record(orderId, 'markFulfilmentReady', orderId);
    return { written: true };
  },
  async recordPaymentReceipt(orderId) {
    record(orderId, 'recordPaymentReceipt', orderId);
    return { written: true };
  },
  async recordOrderEvent(input) {
    record(input.orderId, `event:${input.type}`, input);
  },
};

async function startScriptedWorker(): Promise<void> {
  // The Temporal runtime is the one startSystem installed.
  scripted.connection = await NativeConnection.connect({ address: TEST_ENV.temporalAddress });
  scripted.worker = await Worker.create({
    connection: scripted.connection,
    namespace: TEST_ENV.namespace,
    taskQueue: scripted.taskQueue,
    workflowBundle: { codePath: testBundlePath() },
    // The merged steps the workflow runs (as local activities) are composed over the scripted single steps, as in
    // production.
    activities: { ...scriptedActivities, ...composeOrderSteps(scriptedActivities as SingleSteps) },
  });
  scripted.running = scripted.worker.run();
  scripted.client = sys.client;
}

async function stopScriptedWorker(): Promise<void> {
  scripted.worker?.shutdown();
  await scripted.running;
  await scripted.connection?.close();
}

async function startScriptedOrder(orderId: string, timing: Partial<OrderPaymentInput>): Promise<WorkflowHandle> {
  const input: OrderPaymentInput = {
    orderId,
    userId: 'u1',
    items: [{ sku: 'sku-a', quantity: 1 }],
    provider: 'sandbox',
    paymentTimeoutMs: 60_000,
    queryFirstDelayMs: 60_000,
    queryMaxIntervalMs: 60_000,
    providerExpiryMarginMs: 1000,
    publicBaseUrl: 'http://api.test',
    ...timing,
  };
  const handle = await scripted.client.workflow.start(ORDER_WORKFLOW_TYPE, {
    workflowId: orderWorkflowId(orderId),
    taskQueue: scripted.taskQueue,
    args: [input],
  });
  await handle.executeUpdate(paymentReadyUpdate);
  return handle;
}
