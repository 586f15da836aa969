/**
 * A refund the provider accepted but had not completed (WeChat answers PROCESSING for a refund to a bank card, which
 * can take days; a Stripe refund can be `pending`) is recorded here as made, and the order becomes REFUNDED. When the
 * provider later reports that refund failed or closed (WeChat REFUND.ABNORMAL / REFUND.CLOSED, Stripe refund.failed /
 * charge.refund.updated), the buyer never got the money: the verified notification, through the real callback route,
 * moves the local refund to FAILED (once: a redelivery changes nothing and is still acknowledged), sends the order to
 * NEEDS_REVIEW (REFUND_FAILED) with its timeline entries, and counts it in payflow_refunds_failed_total, which pages.
 * A notification for a refund number that is not ours, or not this provider's, is acknowledged and changes nothing.
 */
import { randomBytes } from 'node:crypto';
import { WithStartWorkflowOperation, WorkflowNotFoundError } from '@temporalio/client';
import type { ApplicationFailure } from '@temporalio/common';
import { transitionOrder } from '../src/activities/orders';
import { refundPayment } from '../src/activities/payments';
import {
  type FailedRefundReviewInput,
  autoRefundNo,
  failedRefundRetryNo,
  failedRefundReviewWorkflowId,
  orderWorkflowId,
  reviewDecisionUpdate,
  reviewRefundNo,
} from '../src/contracts/order';
import { chinaRfc3339 } from '../src/providers/http';
import type { PaymentProvider } from '../src/providers/types';
import { toWechatOutTradeNo } from '../src/providers/wechat';
import type { failedRefundReview } from '../src/workflows/failed-refund-review';
import { type FakeServer, startFakeServer } from './support/provider-fakes';
import {
  type Delivery,
  createProviderKeys,
  freshIds,
  genuineDelivery,
  stripeSignature,
  wechatEncrypt,
  wechatHeaders,
} from './support/provider-notifications';
import { type TestSystem, createProduct, startSystem, userId, waitFor, waitForStatus } from './support/system';

const keys = createProviderKeys();
const wx = keys.secrets.wechat;
let fakeApi: FakeServer;
let sys: TestSystem;

// ---- A small WeChat Pay API: Native prepay, the transaction query, and refunds that stay PROCESSING ----

/** Paid trades by WeChat out_trade_no. */
const wxPaid = new Map<string, { total: number; transactionId: string }>();
/** Refunds by out_refund_no, as WeChat answers them. */
const wxRefunds = new Map<string, Record<string, unknown>>();
/** How many refunds were asked for, by out_refund_no. */
const wxRefundPosts = new Map<string, number>();
/** WeChat out_trade_nos whose refunds this fake refuses (NOT_ENOUGH: the merchant's balance is short). */
const wxRefuseRefunds = new Set<string>();

function wxAnswer(status: number, json: unknown) {
  const body = JSON.stringify(json);
  const at = Math.floor(Date.now() / 1000);
  return {
    status,
    headers: {
      'content-type': 'application/json',
      ...wechatHeaders(body, { at, key: wx.platformPrivateKey, serial: wx.platformSerial }),
    },
    body,
  };
}

async function startFakeWechat(): Promise<FakeServer> {
  return startFakeServer((req) => {
    const url = new URL(req.url, 'http://fake');
    let m: RegExpExecArray | null;
    if (req.method === 'POST' && url.pathname === '/v3/pay/transactions/native')
      return wxAnswer(200, { code_url: `weixin://wxpay/bizpayurl?pr=${randomBytes(6).toString('hex')}` });
    if (req.method === 'GET' && (m = /^\/v3\/pay\/transactions\/out-trade-no\/([^/]+)$/.exec(url.pathname))) {
      const outTradeNo = decodeURIComponent(m[1]!);
      const paid = wxPaid.get(outTradeNo);
      if (!paid) return { status: 404, body: '{"code":"ORDER_NOT_EXIST","message":"订单不存在"}' };
      return wxAnswer(200, {
        appid: wx.appId,
        mchid: wx.mchId,
        out_trade_no: outTradeNo,
        transaction_id: paid.transactionId,
        trade_state: 'SUCCESS',
        success_time: chinaRfc3339(new Date()),
        amount: { total: paid.total, payer_total: paid.total, currency: 'CNY' },
      });
    }
    if (req.method === 'GET' && (m = /^\/v3\/refund\/domestic\/refunds\/([^/]+)$/.exec(url.pathname))) {
      const refund = wxRefunds.get(decodeURIComponent(m[1]!));
      return refund
        ? wxAnswer(200, refund)
        : { status: 404, body: '{"code":"RESOURCE_NOT_EXISTS","message":"退款单不存在"}' };
    }
    if (req.method === 'POST' && url.pathname === '/v3/refund/domestic/refunds') {
      const body = JSON.parse(req.body.toString('utf8'));
      wxRefundPosts.set(body.out_refund_no, (wxRefundPosts.get(body.out_refund_no) ?? 0) + 1);
      if (wxRefuseRefunds.has(body.out_trade_no))
        return wxAnswer(403, { code: 'NOT_ENOUGH', message: '基本账户余额不足，请充值后重新发起' });
      const paid = wxPaid.get(body.out_trade_no)!;
      const refund = {
        refund_id: `5030${randomBytes(8).toString('hex')}`,
        out_refund_no: body.out_refund_no,
        transaction_id: paid.transactionId,
        out_trade_no: body.out_trade_no,
        channel: 'ORIGINAL',
        user_received_account: '招商银行信用卡0403',
        create_time: chinaRfc3339(new Date()),
        // A refund to a bank card: accepted, not completed.
        status: 'PROCESSING',
        amount: {
          total: body.amount.total,
          refund: body.amount.refund,
          payer_total: body.amount.total,
          payer_refund: body.amount.refund,
          currency: 'CNY',
        },
      };
      wxRefunds.set(body.out_refund_no, refund);
      return wxAnswer(200, refund);
    }
    return { status: 503, body: '{"code":"SYSTEM_ERROR","message":"not in this fake"}' };
  });
}

/** The system's log lines (LOG_LEVEL info), parsed. */
const logLines: Record<string, any>[] = [];
const logDestination = {
  write(chunk: string) {
    for (const text of chunk.split('\n')) if (text.trim()) logLines.push(JSON.parse(text) as Record<string, any>);
  },
};

beforeAll(async () => {
  fakeApi = await startFakeWechat();
  sys = await startSystem(
    {
      ...keys.env(fakeApi.url),
      // Only notifications pay these orders; the buyer can refund for ten minutes after paying.
      QUERY_FIRST_DELAY: '10m',
      QUERY_MAX_INTERVAL: '10m',
      PAYMENT_TIMEOUT: '15m',
      COOLING_OFF_PERIOD: '10m',
      LOG_LEVEL: 'info',
    },
    { logDestination },
  );
}, 60_000);

afterAll(async () => {
  await sys?.stop();
  await fakeApi?.close();
});

// ---- Notifications as the providers send them ----

type WechatRefundEvent = 'REFUND.SUCCESS' | 'REFUND.ABNORMAL' | 'REFUND.CLOSED';

/** A WeChat refund notification (envelope around the AEAD_AES_256_GCM `refund` resource), signed by the platform. */
function wechatRefundNotification(
  event: WechatRefundEvent,
  r: { orderId: string; outRefundNo: string; transactionId: string; refundId?: string; amount: number; id?: string },
): Delivery {
  const status = event.slice('REFUND.'.length);
  const resource = {
    mchid: wx.mchId,
    out_trade_no: toWechatOutTradeNo(r.orderId),
    transaction_id: r.transactionId,
    out_refund_no: r.outRefundNo,
    refund_id: r.refundId ?? `5030${randomBytes(8).toString('hex')}`,
    refund_status: status,
    ...(status === 'SUCCESS' ? { success_time: chinaRfc3339(new Date()) } : {}),
    user_received_account: '招商银行信用卡0403',
    amount: { total: r.amount, refund: r.amount, payer_total: r.amount, payer_refund: r.amount },
  };
  const body = JSON.stringify({
    id: r.id ?? `EV-${randomBytes(12).toString('hex')}`,
    create_time: chinaRfc3339(new Date()),
    resource_type: 'encrypt-resource',
    event_type: event,
    summary: { SUCCESS: '退款成功', ABNORMAL: '退款异常', CLOSED: '退款关闭' }[status],
    resource: wechatEncrypt(resource, wx.apiV3Key, 'refund'),
  });
  return { provider: 'wechat', body: Buffer.from(body), headers: signedWechat(body) };
}

/** A WeChat notification about the refund of a seeded order (seedRefundedOrder). */
function seededRefundNotification(
  event: WechatRefundEvent,
  seeded: { orderId: string; outRefundNo: string; tradeNo: string; refundNo: string; amount: number },
): Delivery {
  return wechatRefundNotification(event, {
    orderId: seeded.orderId,
    outRefundNo: seeded.outRefundNo,
    transactionId: seeded.tradeNo,
    refundId: seeded.refundNo,
    amount: seeded.amount,
  });
}

function signedWechat(body: string | Buffer): Record<string, string> {
  return {
    'content-type': 'application/json',
    ...wechatHeaders(body, {
      at: Math.floor(Date.now() / 1000),
      key: wx.platformPrivateKey,
      serial: wx.platformSerial,
    }),
  };
}

/** A Stripe event whose object is a Refund (refund.failed, charge.refund.updated, ...), signed with the endpoint secret. */
function stripeRefundEvent(
  type: string,
  r: { refundId: string; intentId: string; outRefundNo?: string; outTradeNo: string; amount: number; status: string },
): Delivery {
  const created = Math.floor(Date.now() / 1000);
  const body = JSON.stringify({
    id: `evt_${randomBytes(12).toString('hex')}`,
    object: 'event',
    api_version: '2026-10-28.endive',
    created,
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type,
    data: {
      object: {
        id: r.refundId,
        object: 'refund',
        amount: r.amount,
        balance_transaction: `txn_${randomBytes(8).toString('hex')}`,
        charge: `ch_${randomBytes(8).toString('hex')}`,
        created: created - 3600,
        currency: 'usd',
        metadata: {
          ...(r.outRefundNo ? { out_refund_no: r.outRefundNo } : {}),
          out_trade_no: r.outTradeNo,
          reason: 'cooling-off refund',
        },
        payment_intent: r.intentId,
        reason: 'requested_by_customer',
        status: r.status,
        ...(r.status === 'failed'
          ? {
              failure_reason: 'expired_or_canceled_card',
              failure_balance_transaction: `txn_${randomBytes(8).toString('hex')}`,
            }
          : {}),
      },
    },
  });
  return {
    provider: 'stripe',
    body: Buffer.from(body),
    headers: {
      'content-type': 'application/json',
      'stripe-signature': stripeSignature(body, { secret: keys.secrets.stripe.webhookSecret }),
    },
  };
}

async function deliver(d: Delivery): Promise<{ status: number; body: string }> {
  const response = await fetch(`${sys.apiUrl}/callbacks/${d.provider}`, {
    method: 'POST',
    headers: d.headers,
    body: d.body,
  });
  return { status: response.status, body: await response.text() };
}

// ---- What the database and the metrics say ----

/** payflow_refunds_failed_total for a provider, as the API's /metrics serves it (undefined: no such series). */
async function refundFailures(provider: string): Promise<number | undefined> {
  const text = await (await fetch(`${sys.apiUrl}/metrics`)).text();
  const m = new RegExp(`^payflow_refunds_failed_total\\{provider="${provider}"\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/** Everything a refund notice may change for one order: its row, its refunds, its payment, its timeline. */
async function snapshot(orderId: string) {
  const [order, refunds, payment, events] = await Promise.all([
    sys.db('orders').where({ order_id: orderId }).first('status', 'status_reason', 'updated_at'),
    sys.db('refunds').where({ order_id: orderId }).orderBy('out_refund_no').select('out_refund_no', 'status'),
    sys.db('payments').where({ out_trade_no: orderId }).first('status', 'trade_no'),
    sys.db('order_events').where({ order_id: orderId }).orderBy('id').select('type', 'message', 'data'),
  ]);
  return { order, refunds, payment, events };
}

/**
 * An order refunded earlier, as refundPayment and the workflow left it: REFUNDED, its payment REFUNDED, its refund
 * SUCCEEDED (the provider had accepted it).
 */
async function seedRefundedOrder(
  provider: 'wechat' | 'stripe',
  o: { orderStatus?: string; refundStatus?: string } = {},
): Promise<{ orderId: string; tradeNo: string; outRefundNo: string; refundNo: string; amount: number }> {
  const orderId = `ord_rn${randomBytes(8).toString('hex')}`;
  const tradeNo =
    provider === 'stripe' ? `pi_${randomBytes(12).toString('hex')}` : `4200${randomBytes(10).toString('hex')}`;
  const refundNo =
    provider === 'stripe' ? `re_${randomBytes(12).toString('hex')}` : `5030${randomBytes(8).toString('hex')}`;
  const outRefundNo = autoRefundNo(orderId, tradeNo);
  const amount = provider === 'stripe' ? 2500 : 1999;
  const currency = provider === 'stripe' ? 'USD' : 'CNY';
  const merchantId = provider === 'stripe' ? keys.secrets.stripe.accountId : wx.mchId;
  await sys.db('orders').insert({
    order_id: orderId,
    user_id: userId(),
    status: o.orderStatus ?? 'REFUNDED',
    status_reason: 'COOLING_OFF_REFUND',
    amount,
    currency,
    provider,
    paid_trade_no: tradeNo,
  });
  await sys.db('payments').insert({
    out_trade_no: orderId,
    order_id: orderId,
    provider,
    merchant_id: merchantId,
    trade_no: tradeNo,
    status: 'REFUNDED',
    amount,
    currency,
    paid_amount: amount,
    paid_currency: currency,
    paid_at: new Date(Date.now() - 3_600_000),
    expires_at: new Date(Date.now() - 3_000_000),
  });
  await sys.db('refunds').insert({
    out_refund_no: outRefundNo,
    order_id: orderId,
    out_trade_no: orderId,
    provider,
    trade_no: tradeNo,
    amount,
    currency,
    reason: 'cooling-off refund',
    status: o.refundStatus ?? 'SUCCEEDED',
    refund_no: refundNo,
    refunded_at: new Date(Date.now() - 1_800_000),
  });
  return { orderId, tradeNo, outRefundNo, refundNo, amount };
}

/** An operator's review decision through the API. */
function decide(orderId: string, decision: Record<string, unknown>) {
  return sys.http('POST', `/orders/${orderId}/review`, decision, {
    authorization: `Bearer ${sys.config.adminToken}`,
  });
}

/**
 * A seeded WeChat order whose refund WeChat then reports ABNORMAL: NEEDS_REVIEW (REFUND_FAILED); with `inReviewFor`,
 * an order already in review for that reason, which it keeps.
 */
async function seedFailedRefund(o: { orderStatus?: string; inReviewFor?: string } = {}) {
  const seeded = await seedRefundedOrder('wechat', o.inReviewFor ? { orderStatus: 'NEEDS_REVIEW' } : o);
  if (o.inReviewFor)
    await sys.db('orders').where({ order_id: seeded.orderId }).update({ status_reason: o.inReviewFor });
  wxPaid.set(toWechatOutTradeNo(seeded.orderId), { total: seeded.amount, transactionId: seeded.tradeNo });
  const abnormal = seededRefundNotification('REFUND.ABNORMAL', seeded);
  expect((await deliver(abnormal)).status).toBe(204);
  expect((await snapshot(seeded.orderId)).order).toMatchObject({
    status: 'NEEDS_REVIEW',
    status_reason: o.inReviewFor ?? 'REFUND_FAILED',
  });
  return seeded;
}

// ---- The defect, end to end ----

test('payflow_refunds_failed_total is exported at 0 for every configured provider before any refund fails', async () => {
  // A counter that first appears at 1 is invisible to increase(): the alert would miss the first failure.
  for (const provider of ['sandbox', 'alipay', 'wechat', 'stripe']) expect(await refundFailures(provider)).toBe(0);
});

test('a WeChat refund answered PROCESSING that then ends REFUND.ABNORMAL takes the REFUNDED order to NEEDS_REVIEW, once', async () => {
  // The buyer pays a WeChat order, then asks for the money back inside the cooling-off window.
  const sku = await createProduct(sys, { price: 1999, stock: 2 });
  const placed = await sys.http('POST', '/orders', {
    userId: userId(),
    items: [{ sku, quantity: 1 }],
    provider: 'wechat',
  });
  expect(placed.status).toBe(201);
  const orderId: string = placed.body.orderId;
  const ids = freshIds();
  const transactionId = `4200${ids.tradeNo}`;
  wxPaid.set(toWechatOutTradeNo(orderId), { total: 1999, transactionId });
  const paid = genuineDelivery(
    { ...keys.secrets, sandbox: { secret: '', merchantId: '' } },
    'wechat',
    placed.body,
    ids,
  );
  expect((await deliver(paid)).status).toBe(204);
  await waitForStatus(sys, orderId, ['PAID']);
  const refunded = await waitFor(
    async () => {
      const r = await sys.http('POST', `/orders/${orderId}/refund`, { reason: 'changed my mind' });
      return r.status === 200 ? r.body : undefined;
    },
    { what: 'the cooling-off refund' },
  );
  expect(refunded).toMatchObject({ orderId, status: 'REFUNDED' });
  await sys.client.workflow.getHandle(orderWorkflowId(orderId)).result();

  // WeChat accepted the refund without completing it; we recorded it as made.
  const outRefundNo = autoRefundNo(orderId, transactionId);
  expect(wxRefunds.get(outRefundNo)).toMatchObject({ status: 'PROCESSING' });
  const before = await snapshot(orderId);
  expect(before.order.status).toBe('REFUNDED');
  expect(before.refunds).toEqual([{ out_refund_no: outRefundNo, status: 'SUCCEEDED' }]);
  const failuresBefore = (await refundFailures('wechat')) ?? 0;

  // Days later the card turns out to be closed: WeChat reports the refund ABNORMAL.
  const abnormal = wechatRefundNotification('REFUND.ABNORMAL', {
    orderId,
    outRefundNo,
    transactionId,
    refundId: String(wxRefunds.get(outRefundNo)!.refund_id),
    amount: 1999,
  });
  const answer = await deliver(abnormal);
  expect(answer).toEqual({ status: 204, body: '' });

  const after = await snapshot(orderId);
  expect(after.refunds).toEqual([{ out_refund_no: outRefundNo, status: 'FAILED' }]);
  expect(after.order).toMatchObject({ status: 'NEEDS_REVIEW', status_reason: 'REFUND_FAILED' });
  // The order's payment no longer says REFUNDED: its money did not go back.
  const paymentRow = async () => sys.db('payments').where({ out_trade_no: orderId }).first('status', 'trade_no');
  expect(await paymentRow()).toEqual({ status: 'PAID', trade_no: transactionId });
  const added = after.events.slice(before.events.length);
  expect(added.map((e: { type: string }) => e.type)).toEqual(['REFUND_FAILED', 'ORDER_NEEDS_REVIEW']);
  expect(added[0].message).toMatch(new RegExp(`${outRefundNo}.*REFUND\\.ABNORMAL`));
  expect(JSON.parse(added[1].data)).toMatchObject({ from: 'REFUNDED', to: 'NEEDS_REVIEW', reason: 'REFUND_FAILED' });
  expect(await refundFailures('wechat')).toBe(failuresBefore + 1);
  expect(logLines).toContainEqual(
    expect.objectContaining({
      level: 50, // error
      orderId,
      outRefundNo,
      msg: expect.stringMatching(/failed at wechat after it was accepted/),
    }),
  );
  const view = (await sys.http('GET', `/orders/${orderId}`)).body;
  expect(view.status).toBe('NEEDS_REVIEW');
  // The buyer is not promised a confirmation nobody can make: the money goes back.
  expect(view.messages.code).toBe('REFUND_FAILED');

  // WeChat redelivers it (our answer was lost): acknowledged again, nothing changes, nothing is counted twice.
  const again = await deliver({ ...abnormal, headers: signedWechat(abnormal.body) });
  expect(again).toEqual({ status: 204, body: '' });
  expect(await snapshot(orderId)).toEqual(after);
  expect(await refundFailures('wechat')).toBe(failuresBefore + 1);

  // An operator decides the review (docs/runbook.md, REFUND_FAILED): approving is refused, keeping the money is not a
  // decision anyone makes here.
  const approve = await decide(orderId, { decision: 'approve', operator: 'alice', reason: 'keep it' });
  expect(approve).toMatchObject({ status: 409, body: { error: 'REVIEW_DECISION_REFUSED' } });
  expect((await snapshot(orderId)).order.status).toBe('NEEDS_REVIEW');
  // A refund decision refunds again under a new number, and the order is REFUNDED again.
  const decision = { decision: 'refund', operator: 'alice', reason: 'the card was closed; refund to the new card' };
  const refunded2 = await decide(orderId, decision);
  expect(refunded2).toMatchObject({ status: 200, body: { orderId, status: 'REFUNDED' } });
  const retryNo = failedRefundRetryNo(orderId, outRefundNo, 1999);
  expect(retryNo).not.toBe(outRefundNo);
  expect(wxRefundPosts.get(retryNo)).toBe(1);
  expect(wxRefundPosts.get(outRefundNo)).toBe(1);
  const settled = await snapshot(orderId);
  expect(settled.order).toMatchObject({ status: 'REFUNDED', status_reason: 'REFUND_RETRIED' });
  expect(settled.refunds).toEqual(
    [
      { out_refund_no: outRefundNo, status: 'FAILED' },
      { out_refund_no: retryNo, status: 'SUCCEEDED' },
    ].sort((a, b) => a.out_refund_no.localeCompare(b.out_refund_no)),
  );
  const settledEvents = settled.events.slice(after.events.length).map((e: { type: string }) => e.type);
  expect(settledEvents).toEqual(['REFUNDED', 'REFUND_FAILED_SETTLED_BY_REVIEW']);
  // The refund again returned the order's own payment, and says so.
  const again2 = settled.events.slice(after.events.length)[0];
  expect(again2.message).toMatch(/of the order payment/);
  expect(JSON.parse(again2.data)).toMatchObject({ paymentRefunded: true, tradeNo: transactionId });
  expect(await paymentRow()).toEqual({ status: 'REFUNDED', trade_no: transactionId });
  // The same decision again (the operator's retry) refunds nothing more.
  expect(await decide(orderId, decision)).toMatchObject({ status: 409, body: { error: 'ORDER_NOT_IN_REVIEW' } });
  expect(wxRefundPosts.get(retryNo)).toBe(1);
}, 90_000);

// ---- WeChat, one case each ----

test('REFUND.CLOSED fails the refund of a REFUNDED order just as ABNORMAL does', async () => {
  const seeded = await seedRefundedOrder('wechat');
  const failuresBefore = (await refundFailures('wechat')) ?? 0;
  const closed = seededRefundNotification('REFUND.CLOSED', seeded);
  expect((await deliver(closed)).status).toBe(204);
  const after = await snapshot(seeded.orderId);
  expect(after.refunds).toEqual([{ out_refund_no: seeded.outRefundNo, status: 'FAILED' }]);
  expect(after.order).toMatchObject({ status: 'NEEDS_REVIEW', status_reason: 'REFUND_FAILED' });
  expect(after.events.map((e: { type: string }) => e.type)).toEqual(['REFUND_FAILED', 'ORDER_NEEDS_REVIEW']);
  expect(await refundFailures('wechat')).toBe(failuresBefore + 1);
});

test('REFUND.SUCCESS for a refund we hold as made is acknowledged and changes nothing', async () => {
  const seeded = await seedRefundedOrder('wechat');
  const before = await snapshot(seeded.orderId);
  const success = seededRefundNotification('REFUND.SUCCESS', seeded);
  expect(await deliver(success)).toEqual({ status: 204, body: '' });
  expect(await snapshot(seeded.orderId)).toEqual(before);
});

test('REFUND.SUCCESS after ABNORMAL (the refund resubmitted under its number) is recorded, and its review refuses to refund it again', async () => {
  // The review paid the failed refund again under a new number while WeChat had paid the resubmitted one: twice.
  const seeded = await seedFailedRefund();
  const success = seededRefundNotification('REFUND.SUCCESS', seeded);
  expect(await deliver(success)).toEqual({ status: 204, body: '' });
  // Redelivered: recorded once.
  expect(await deliver({ ...success, headers: signedWechat(success.body) })).toEqual({ status: 204, body: '' });
  const after = await snapshot(seeded.orderId);
  expect(after.refunds).toEqual([{ out_refund_no: seeded.outRefundNo, status: 'FAILED' }]);
  expect(after.events.filter((e: { type: string }) => e.type === 'REFUND_SUCCEEDED_AFTER_FAILURE')).toHaveLength(1);
  const again = await decide(seeded.orderId, { decision: 'refund', operator: 'gus', reason: 'card closed' });
  expect(again).toMatchObject({
    status: 409,
    body: { error: 'REVIEW_DECISION_REFUSED', failedOutRefundNo: seeded.outRefundNo },
  });
  const retryNo = failedRefundRetryNo(seeded.orderId, seeded.outRefundNo, seeded.amount);
  expect(wxRefundPosts.get(retryNo)).toBeUndefined();
  // Closed without a new refund, the order is REFUNDED again.
  const closed = await decide(seeded.orderId, {
    decision: 'refund',
    operator: 'gus',
    reason: 'WeChat paid the resubmitted refund',
    refundAmount: 0,
  });
  expect(closed).toMatchObject({ status: 200, body: { status: 'REFUNDED' } });
  expect(wxRefundPosts.get(retryNo)).toBeUndefined();
  // The order's payment went back: its row says REFUNDED again (it said PAID while the refund stood failed).
  expect((await snapshot(seeded.orderId)).payment).toEqual({ status: 'REFUNDED', trade_no: seeded.tradeNo });
});

/** A refund of the seeded order's trade recorded by a review (its row, as refundPayment writes it). */
async function refundRow(
  seeded: { orderId: string; tradeNo: string; amount: number },
  outRefundNo: string,
  status: 'PENDING' | 'SUCCEEDED',
) {
  await sys.db('refunds').insert({
    out_refund_no: outRefundNo,
    order_id: seeded.orderId,
    out_trade_no: seeded.orderId,
    provider: 'wechat',
    trade_no: seeded.tradeNo,
    amount: seeded.amount,
    currency: 'CNY',
    reason: 'a review refund',
    status,
  });
}

/** WeChat reports the seeded failed refund succeeded (a resubmission): the timeline entry that records it. */
async function successAfterFailure(seeded: Parameters<typeof seededRefundNotification>[1]) {
  expect(await deliver(seededRefundNotification('REFUND.SUCCESS', seeded))).toEqual({ status: 204, body: '' });
  return (await snapshot(seeded.orderId)).events.find(
    (e: { type: string }) => e.type === 'REFUND_SUCCEEDED_AFTER_FAILURE',
  );
}

/** A stand-in for WeChat's refund API that records what it was sent. */
function recordingWechat(sent: string[]): PaymentProvider {
  return {
    name: 'wechat',
    merchantId: wx.mchId,
    async refund(input) {
      sent.push(input.outRefundNo);
      return {
        refundNo: `5030${randomBytes(8).toString('hex')}`,
        amount: input.amount,
        refundedAt: new Date().toISOString(),
      };
    },
  } as Pick<PaymentProvider, 'name' | 'merchantId' | 'refund'> as PaymentProvider;
}

/** The review's refund of a seeded failed refund, as failedRefundReview sends it. */
function reviewRetry(seeded: { orderId: string; tradeNo: string; outRefundNo: string; amount: number }) {
  return {
    orderId: seeded.orderId,
    provider: 'wechat',
    tradeNo: seeded.tradeNo,
    outRefundNo: failedRefundRetryNo(seeded.orderId, seeded.outRefundNo, seeded.amount),
    amount: seeded.amount,
    currency: 'CNY',
    reason: 'review refund by gus after refund failed',
    retriesFailedRefund: seeded.outRefundNo,
  };
}

test("the review's refund step itself refuses to pay a failed refund again once WeChat reported it succeeded, even after the API let the decision through", async () => {
  // The decision passed the API's check; the success notice came before the review's refund step ran.
  const seeded = await seedFailedRefund();
  expect(await deliver(seededRefundNotification('REFUND.SUCCESS', seeded))).toEqual({ status: 204, body: '' });
  const sent: string[] = [];
  const retry = reviewRetry(seeded);
  await expect(refundPayment(sys.db, { wechat: recordingWechat(sent) }, retry)).rejects.toMatchObject({
    type: 'ORDER_CONFLICT',
    nonRetryable: true,
    message: expect.stringMatching(/reported it succeeded: the buyer has this money/),
  });
  expect(sent).toEqual([]);
  expect(await sys.db('refunds').where({ out_refund_no: retry.outRefundNo }).first()).toBeUndefined();
});

test('a review refund whose row an earlier attempt wrote is not sent again once the failed refund was reported succeeded; one already answered goes on under its number', async () => {
  const seeded = await seedFailedRefund();
  const sent: string[] = [];
  const retry = reviewRetry(seeded);
  // An earlier attempt recorded the refund PENDING (WeChat refused it, or the call timed out), then the success came.
  await refundRow(seeded, retry.outRefundNo, 'PENDING');
  // The success names the review's refund already recorded: the buyer may have been paid twice.
  const entry = await successAfterFailure(seeded);
  expect(entry.message).toMatch(/may have been paid twice/);
  expect(JSON.parse(entry.data)).toMatchObject({ retryRefunds: [retry.outRefundNo] });
  // Sent before the fix: the row's existence skipped the check.
  await expect(refundPayment(sys.db, { wechat: recordingWechat(sent) }, retry)).rejects.toMatchObject({
    type: 'ORDER_CONFLICT',
    message: expect.stringMatching(/may have reached the provider/),
  });
  expect(sent).toEqual([]);
  // An attempt that was answered (SUCCEEDED) is the provider's already: the same number goes on, never refused.
  await sys.db('refunds').where({ out_refund_no: retry.outRefundNo }).update({ status: 'SUCCEEDED' });
  await refundPayment(sys.db, { wechat: recordingWechat(sent) }, retry);
  expect(sent).toEqual([retry.outRefundNo]);
});

test("a success notice after a late trade's review refunded the trade under its own number names that refund: the buyer may have been paid twice", async () => {
  const seeded = await seedFailedRefund();
  const rv = reviewRefundNo(seeded.orderId, seeded.tradeNo, seeded.amount);
  await refundRow(seeded, rv, 'SUCCEEDED');
  const entry = await successAfterFailure(seeded);
  expect(JSON.parse(entry.data)).toMatchObject({ retryRefunds: [rv] });
});

test('an rv refund of the trade made before the automatic refund (a decision WeChat refused) raises no alarm of a double payment', async () => {
  const seeded = await seedFailedRefund();
  const rv = reviewRefundNo(seeded.orderId, seeded.tradeNo, seeded.amount - 1);
  await refundRow(seeded, rv, 'PENDING');
  await sys
    .db('refunds')
    .where({ out_refund_no: rv })
    .update({ created_at: new Date(Date.now() - 86_400_000) });
  const entry = await successAfterFailure(seeded);
  expect(entry.message).not.toMatch(/paid twice/);
  expect(JSON.parse(entry.data).retryRefunds).toBeUndefined();
});

test('a success notice being recorded while the review refund step checks is waited for and seen (the step reads after the lock, not from an older snapshot)', async () => {
  const seeded = await seedFailedRefund();
  const sent: string[] = [];
  // The notice's transaction, held open: the failed refund locked for update and its entry written, not committed.
  const notice = await sys.db.transaction();
  try {
    await notice('refunds').where({ out_refund_no: seeded.outRefundNo }).forUpdate().first('status');
    await notice('order_events').insert({
      order_id: seeded.orderId,
      type: 'REFUND_SUCCEEDED_AFTER_FAILURE',
      message: 'reported succeeded afterwards',
      data: JSON.stringify({ outRefundNo: seeded.outRefundNo }),
    });
    const step = refundPayment(sys.db, { wechat: recordingWechat(sent) }, reviewRetry(seeded)).then(
      () => 'sent',
      (err: unknown) => err,
    );
    await new Promise((r) => setTimeout(r, 300));
    await notice.commit();
    // Before the fix the step's first plain read fixed its snapshot before the notice committed: it sent.
    expect(await step).toMatchObject({ type: 'ORDER_CONFLICT' });
  } finally {
    if (!notice.isCompleted()) await notice.rollback();
  }
  expect(sent).toEqual([]);
});

test('a refund failure for a refund number we do not know is acknowledged and changes nothing', async () => {
  const seeded = await seedRefundedOrder('wechat');
  const before = await snapshot(seeded.orderId);
  const failuresBefore = (await refundFailures('wechat')) ?? 0;
  const unknownNo = `rf-not-ours-${randomBytes(6).toString('hex')}`;
  const unknown = wechatRefundNotification('REFUND.ABNORMAL', {
    orderId: seeded.orderId,
    outRefundNo: unknownNo,
    transactionId: seeded.tradeNo,
    amount: seeded.amount,
  });
  expect(await deliver(unknown)).toEqual({ status: 204, body: '' });
  expect(await snapshot(seeded.orderId)).toEqual(before);
  expect(await sys.db('refunds').where({ out_refund_no: unknownNo }).first()).toBeUndefined();
  expect((await refundFailures('wechat')) ?? 0).toBe(failuresBefore);
  expect(logLines).toContainEqual(
    expect.objectContaining({
      level: 40, // warn
      outRefundNo: unknownNo,
      refundStatus: 'FAILED',
      msg: expect.stringMatching(/refund number we do not know/),
    }),
  );
});

test("a WeChat refund failure naming another provider's refund number changes nothing", async () => {
  // One provider's keys must never move another provider's refund (or order).
  const stripeRefund = await seedRefundedOrder('stripe');
  const before = await snapshot(stripeRefund.orderId);
  const forged = wechatRefundNotification('REFUND.ABNORMAL', {
    orderId: stripeRefund.orderId,
    outRefundNo: stripeRefund.outRefundNo,
    transactionId: `4200${randomBytes(10).toString('hex')}`,
    amount: stripeRefund.amount,
  });
  expect((await deliver(forged)).status).toBe(204);
  expect(await snapshot(stripeRefund.orderId)).toEqual(before);
});

test('a refund failure arriving while the refund step has not recorded the refund yet fails that step instead of REFUNDED', async () => {
  // The order's refund step asked WeChat, which answered PROCESSING; before the step records it, the failure arrives.
  const seeded = await seedRefundedOrder('wechat', { orderStatus: 'PAID' });
  await sys.db('refunds').where({ out_refund_no: seeded.outRefundNo }).del();
  await sys.db('payments').where({ out_trade_no: seeded.orderId }).update({ status: 'PAID' });
  const racing = {
    name: 'wechat',
    merchantId: wx.mchId,
    async refund(input) {
      const abnormal = wechatRefundNotification('REFUND.ABNORMAL', {
        orderId: seeded.orderId,
        outRefundNo: input.outRefundNo,
        transactionId: seeded.tradeNo,
        refundId: seeded.refundNo,
        amount: input.amount,
      });
      expect((await deliver(abnormal)).status).toBe(204);
      return { refundNo: seeded.refundNo, amount: input.amount, refundedAt: new Date().toISOString() };
    },
  } as Pick<PaymentProvider, 'name' | 'merchantId' | 'refund'> as PaymentProvider;
  const step = refundPayment(
    sys.db,
    { wechat: racing },
    {
      orderId: seeded.orderId,
      provider: 'wechat',
      tradeNo: seeded.tradeNo,
      outRefundNo: seeded.outRefundNo,
      amount: seeded.amount,
      currency: 'CNY',
      reason: 'cooling-off refund',
    },
  );
  const failure = (await step.then(
    () => undefined,
    (err: unknown) => err,
  )) as ApplicationFailure | undefined;
  expect(failure).toMatchObject({ type: 'PROVIDER_REJECTED', nonRetryable: true });
  const after = await snapshot(seeded.orderId);
  expect(after.refunds).toEqual([{ out_refund_no: seeded.outRefundNo, status: 'FAILED' }]);
  // The order's workflow owns the order while its refund step runs: the failed step sends it to review.
  expect(after.order.status).toBe('PAID');
  expect(after.payment.status).toBe('PAID');
  expect(after.events.map((e: { type: string }) => e.type)).toEqual(['REFUND_FAILED']);
  // Its workflow sends the order to review for that failure (as stopForReview does): the decision is that review's, on
  // that very refund, not the failed-refund review's that an order already in review for something else gets.
  await sys
    .db('orders')
    .where({ order_id: seeded.orderId })
    .update({ status: 'NEEDS_REVIEW', status_reason: 'PROVIDER_REJECTED' });
  const decided = await decide(seeded.orderId, { decision: 'approve', operator: 'fay', reason: 'keep the paid order' });
  // Sent to the order's own workflow (not running here: this seeded order has none), never to a failed-refund review.
  expect({ status: decided.status, error: decided.body.error }).toEqual({ status: 409, error: 'ORDER_NOT_IN_REVIEW' });
  expect(decided.body.failedOutRefundNo).toBeUndefined();
  await expect(
    sys.client.workflow.getHandle(failedRefundReviewWorkflowId(seeded.outRefundNo)).describe(),
  ).rejects.toBeInstanceOf(WorkflowNotFoundError);
});

test("a failure recorded between the refund step and the order's REFUNDED mark: the mark changes nothing and names that review, whose decision refunds again", async () => {
  // The cooling-off refund was recorded SUCCEEDED (the step returned); its ABNORMAL lands before the workflow's mark.
  const seeded = await seedFailedRefund({ orderStatus: 'PAID' });
  const marked = await transitionOrder(sys.db, {
    orderId: seeded.orderId,
    from: ['PAID'],
    to: 'REFUNDED',
    reason: 'COOLING_OFF_REFUND',
    event: { type: 'ORDER_REFUNDED', message: 'Refunded in full inside the cooling-off window; stock returned' },
  });
  // What the order workflow reads to end in that review instead of answering the buyer REFUNDED (workflow-branches).
  expect(marked).toEqual({ changed: false, status: 'NEEDS_REVIEW', reason: 'REFUND_FAILED' });
  expect((await snapshot(seeded.orderId)).order).toMatchObject({
    status: 'NEEDS_REVIEW',
    status_reason: 'REFUND_FAILED',
  });
  const answer = await decide(seeded.orderId, { decision: 'refund', operator: 'dan', reason: 'refund again' });
  expect(answer).toMatchObject({ status: 200, body: { orderId: seeded.orderId, status: 'REFUNDED' } });
  expect(wxRefundPosts.get(failedRefundRetryNo(seeded.orderId, seeded.outRefundNo, seeded.amount))).toBe(1);
  expect((await snapshot(seeded.orderId)).order.status).toBe('REFUNDED');
});

// ---- Stripe ----

test('Stripe refund.failed for a refund carrying our out_refund_no takes the REFUNDED order to NEEDS_REVIEW, once', async () => {
  const seeded = await seedRefundedOrder('stripe');
  const before = await snapshot(seeded.orderId);
  const failuresBefore = (await refundFailures('stripe')) ?? 0;
  const failed = stripeRefundEvent('refund.failed', {
    refundId: seeded.refundNo,
    intentId: seeded.tradeNo,
    outRefundNo: seeded.outRefundNo,
    outTradeNo: seeded.orderId,
    amount: seeded.amount,
    status: 'failed',
  });
  expect(await deliver(failed)).toEqual({ status: 200, body: '{"received":true}' });
  const after = await snapshot(seeded.orderId);
  expect(after.refunds).toEqual([{ out_refund_no: seeded.outRefundNo, status: 'FAILED' }]);
  expect(after.order).toMatchObject({ status: 'NEEDS_REVIEW', status_reason: 'REFUND_FAILED' });
  const added = after.events.slice(before.events.length);
  expect(added.map((e: { type: string }) => e.type)).toEqual(['REFUND_FAILED', 'ORDER_NEEDS_REVIEW']);
  expect(added[0].message).toMatch(/expired_or_canceled_card/);
  expect(await refundFailures('stripe')).toBe(failuresBefore + 1);

  // The same event again, and Stripe's charge.refund.updated for the same failure: nothing more changes.
  const update = stripeRefundEvent('charge.refund.updated', {
    refundId: seeded.refundNo,
    intentId: seeded.tradeNo,
    outRefundNo: seeded.outRefundNo,
    outTradeNo: seeded.orderId,
    amount: seeded.amount,
    status: 'failed',
  });
  for (const d of [failed, update]) expect((await deliver(d)).status).toBe(200);
  expect(await snapshot(seeded.orderId)).toEqual(after);
  expect(await refundFailures('stripe')).toBe(failuresBefore + 1);
});

test('Stripe charge.refund.updated to canceled fails the refund; to succeeded it changes nothing', async () => {
  const canceled = await seedRefundedOrder('stripe');
  expect(
    (
      await deliver(
        stripeRefundEvent('charge.refund.updated', {
          refundId: canceled.refundNo,
          intentId: canceled.tradeNo,
          outRefundNo: canceled.outRefundNo,
          outTradeNo: canceled.orderId,
          amount: canceled.amount,
          status: 'canceled',
        }),
      )
    ).status,
  ).toBe(200);
  expect((await snapshot(canceled.orderId)).refunds).toEqual([
    { out_refund_no: canceled.outRefundNo, status: 'FAILED' },
  ]);
  expect((await snapshot(canceled.orderId)).order.status).toBe('NEEDS_REVIEW');

  const succeeded = await seedRefundedOrder('stripe');
  const before = await snapshot(succeeded.orderId);
  expect(
    (
      await deliver(
        stripeRefundEvent('charge.refund.updated', {
          refundId: succeeded.refundNo,
          intentId: succeeded.tradeNo,
          outRefundNo: succeeded.outRefundNo,
          outTradeNo: succeeded.orderId,
          amount: succeeded.amount,
          status: 'succeeded',
        }),
      )
    ).status,
  ).toBe(200);
  expect(await snapshot(succeeded.orderId)).toEqual(before);
});

test('a Stripe refund failure without our out_refund_no (a refund made in the Dashboard) is acknowledged and changes nothing', async () => {
  const seeded = await seedRefundedOrder('stripe');
  const before = await snapshot(seeded.orderId);
  const dashboard = stripeRefundEvent('refund.failed', {
    refundId: `re_${randomBytes(12).toString('hex')}`,
    intentId: seeded.tradeNo,
    outTradeNo: seeded.orderId,
    amount: 100,
    status: 'failed',
  });
  expect((await deliver(dashboard)).status).toBe(200);
  expect(await snapshot(seeded.orderId)).toEqual(before);
});

// ---- Deciding a REFUND_FAILED review ----

test('refundAmount 0 closes a REFUND_FAILED review REFUNDED without a new refund', async () => {
  const seeded = await seedFailedRefund();
  const before = await snapshot(seeded.orderId);
  const answer = await decide(seeded.orderId, {
    decision: 'refund',
    operator: 'bob',
    reason: 'paid back by bank transfer, ticket 4711',
    refundAmount: 0,
  });
  expect(answer).toMatchObject({ status: 200, body: { orderId: seeded.orderId, status: 'REFUNDED' } });
  const after = await snapshot(seeded.orderId);
  expect(after.order).toMatchObject({ status: 'REFUNDED', status_reason: 'REFUND_FAILED_SETTLED' });
  expect(after.refunds).toEqual([{ out_refund_no: seeded.outRefundNo, status: 'FAILED' }]);
  const added = after.events.slice(before.events.length);
  expect(added.map((e: { type: string }) => e.type)).toEqual(['REFUND_FAILED_SETTLED_BY_REVIEW']);
  expect(added[0].message).toMatch(/without a new refund.*bank transfer/);
  expect([...wxRefundPosts.keys()].some((no) => no.includes(seeded.orderId))).toBe(false);
});

test('a refund decision the provider refuses is answered REVIEW_DECISION_FAILED; the order waits for another', async () => {
  const seeded = await seedFailedRefund();
  const wxNo = toWechatOutTradeNo(seeded.orderId);
  wxRefuseRefunds.add(wxNo);
  const decision = { decision: 'refund', operator: 'carol', reason: 'refund again to the same card' };
  const refused = await decide(seeded.orderId, decision);
  expect(refused).toMatchObject({
    status: 409,
    body: { error: 'REVIEW_DECISION_FAILED', message: expect.stringMatching(/余额不足/) },
  });
  const retryNo = failedRefundRetryNo(seeded.orderId, seeded.outRefundNo, seeded.amount);
  expect(wxRefundPosts.get(retryNo)).toBe(1);
  const waiting = await snapshot(seeded.orderId);
  expect(waiting.order).toMatchObject({ status: 'NEEDS_REVIEW', status_reason: 'REFUND_FAILED' });
  expect(waiting.events.map((e: { type: string }) => e.type)).toContain('REVIEW_DECISION_FAILED');

  // The balance is topped up: the same decision again is carried out, under the same new number.
  wxRefuseRefunds.delete(wxNo);
  const done = await decide(seeded.orderId, decision);
  expect(done).toMatchObject({ status: 200, body: { status: 'REFUNDED' } });
  expect(wxRefundPosts.get(retryNo)).toBe(2);
  expect(wxRefunds.get(retryNo)).toMatchObject({ amount: expect.objectContaining({ refund: seeded.amount }) });
  const after = await snapshot(seeded.orderId);
  expect(after.order.status).toBe('REFUNDED');
  expect(after.refunds).toContainEqual({ out_refund_no: retryNo, status: 'SUCCEEDED' });
  expect(after.refunds).toContainEqual({ out_refund_no: seeded.outRefundNo, status: 'FAILED' });
});

test('a decision naming a review round that has moved on is refused, never carried out on the review open now', async () => {
  // An operator's tool sends the round it showed: its retry of a decision sent after that decision failed (a new
  // round) is refused instead of being carried out as a new decision.
  const seeded = await seedFailedRefund();
  const wxNo = toWechatOutTradeNo(seeded.orderId);
  const shown = (await sys.http('GET', `/orders/${seeded.orderId}`)).body;
  expect(shown.status).toBe('NEEDS_REVIEW');
  const round = shown.reviewRound as number;
  expect(round).toBeGreaterThanOrEqual(1);
  wxRefuseRefunds.add(wxNo);
  const decision = { decision: 'refund', operator: 'gus', reason: 'refund again to the same card', reviewRound: round };
  expect(await decide(seeded.orderId, decision)).toMatchObject({
    status: 409,
    body: { error: 'REVIEW_DECISION_FAILED' },
  });
  wxRefuseRefunds.delete(wxNo);
  const retryNo = failedRefundRetryNo(seeded.orderId, seeded.outRefundNo, seeded.amount);
  const posts = wxRefundPosts.get(retryNo);
  expect((await sys.http('GET', `/orders/${seeded.orderId}`)).body.reviewRound).toBe(round + 1);

  // The same body again (a retry, a page left open): refused, naming the round now open; nothing sent to WeChat.
  const stale = await decide(seeded.orderId, decision);
  expect(stale).toMatchObject({ status: 409, body: { error: 'REVIEW_DECISION_REFUSED', reviewRound: round + 1 } });
  expect(stale.body.message).toMatch(/moved on/);
  expect(wxRefundPosts.get(retryNo)).toBe(posts);
  expect((await snapshot(seeded.orderId)).order.status).toBe('NEEDS_REVIEW');

  // Decided again for the round open now: carried out.
  const done = await decide(seeded.orderId, { ...decision, reviewRound: round + 1 });
  expect(done).toMatchObject({ status: 200, body: { status: 'REFUNDED' } });
  expect((await sys.http('GET', `/orders/${seeded.orderId}`)).body.reviewRound).toBeUndefined();
});

test('a failed refund of another trade of a PAID order is refunded again (a named amount) and the order is PAID again', async () => {
  const seeded = await seedRefundedOrder('wechat');
  // The order is PAID by its own trade; the failed refund was of a second trade of the same order.
  const ownTrade = `4200${randomBytes(10).toString('hex')}`;
  await sys.db('orders').where({ order_id: seeded.orderId }).update({ status: 'PAID', paid_trade_no: ownTrade });
  await sys.db('payments').where({ out_trade_no: seeded.orderId }).update({ status: 'PAID', trade_no: ownTrade });
  wxPaid.set(toWechatOutTradeNo(seeded.orderId), { total: seeded.amount, transactionId: ownTrade });
  const abnormal = seededRefundNotification('REFUND.ABNORMAL', seeded);
  expect((await deliver(abnormal)).status).toBe(204);
  expect((await snapshot(seeded.orderId)).order).toMatchObject({
    status: 'NEEDS_REVIEW',
    status_reason: 'REFUND_FAILED',
  });
  const answer = await decide(seeded.orderId, {
    decision: 'refund',
    operator: 'dave',
    reason: 'part of it was refunded in the console already',
    refundAmount: 1500,
  });
  expect(answer).toMatchObject({ status: 200, body: { status: 'PAID' } });
  const retryNo = failedRefundRetryNo(seeded.orderId, seeded.outRefundNo, 1500);
  expect(wxRefundPosts.get(retryNo)).toBe(1);
  const after = await snapshot(seeded.orderId);
  expect(after.order).toMatchObject({ status: 'PAID', status_reason: 'LATE_TRADE_REFUNDED' });
  // The order's own payment is untouched: the refund was of the other trade.
  expect(after.payment).toEqual({ status: 'PAID', trade_no: ownTrade });
  expect(after.refunds).toContainEqual({ out_refund_no: retryNo, status: 'SUCCEEDED' });
});

test('the same refund decision sent twice at once refunds once and both are answered REFUNDED', async () => {
  const seeded = await seedFailedRefund();
  const decision = { decision: 'refund', operator: 'erin', reason: 'refund again, the card is open now' };
  const [a, b] = await Promise.all([decide(seeded.orderId, decision), decide(seeded.orderId, decision)]);
  expect([a.status, b.status]).toEqual([200, 200]);
  expect([a.body.status, b.body.status]).toEqual(['REFUNDED', 'REFUNDED']);
  const retryNo = failedRefundRetryNo(seeded.orderId, seeded.outRefundNo, seeded.amount);
  expect(wxRefundPosts.get(retryNo)).toBe(1);
  const settled = (await snapshot(seeded.orderId)).events.filter(
    (e: { type: string }) => e.type === 'REFUND_FAILED_SETTLED_BY_REVIEW',
  );
  expect(settled).toHaveLength(1);
});

test('a different decision that finds the failed refund settled (its review ended) is refused, never a second run that refunds again', async () => {
  const seeded = await seedFailedRefund();
  const first = await decide(seeded.orderId, { decision: 'refund', operator: 'fay', reason: 'card is open again' });
  expect(first).toMatchObject({ status: 200, body: { status: 'REFUNDED' } });
  // The race as a second operator meets it: MySQL still read NEEDS_REVIEW (the first decision not yet committed), and
  // the decision reaches Temporal after the review run has ended. Before the fix update-with-start began a new run,
  // which refunded 300 more under a new number and answered 200.
  await sys
    .db('orders')
    .where({ order_id: seeded.orderId })
    .update({ status: 'NEEDS_REVIEW', status_reason: 'REFUND_FAILED' });
  const second = await decide(seeded.orderId, {
    decision: 'refund',
    operator: 'gus',
    reason: 'part of it by bank transfer',
    refundAmount: 300,
  });
  expect(second).toMatchObject({ status: 409, body: { error: 'ORDER_NOT_IN_REVIEW' } });
  expect(wxRefundPosts.get(failedRefundRetryNo(seeded.orderId, seeded.outRefundNo, 300))).toBeUndefined();
  expect(wxRefundPosts.get(failedRefundRetryNo(seeded.orderId, seeded.outRefundNo, seeded.amount))).toBe(1);
});

test('a failed refund review whose order left review another way refunds nothing and answers why', async () => {
  const seeded = await seedFailedRefund();
  // Settled another way meanwhile (another failed refund's review, an operator's fix): the order is REFUNDED.
  await sys
    .db('orders')
    .where({ order_id: seeded.orderId })
    .update({ status: 'REFUNDED', status_reason: 'REFUND_RETRIED' });
  const input: FailedRefundReviewInput = {
    orderId: seeded.orderId,
    provider: 'wechat',
    failedOutRefundNo: seeded.outRefundNo,
    tradeNo: seeded.tradeNo,
    amount: seeded.amount,
    currency: 'CNY',
    back: 'REFUNDED',
  };
  const start = new WithStartWorkflowOperation<typeof failedRefundReview>('failedRefundReview', {
    workflowId: failedRefundReviewWorkflowId(seeded.outRefundNo),
    taskQueue: sys.config.taskQueue,
    args: [input],
    workflowIdConflictPolicy: 'USE_EXISTING',
  });
  const answer = await sys.client.workflow.executeUpdateWithStart(reviewDecisionUpdate, {
    args: [{ decision: 'refund', operator: 'hal', reason: 'refund again' }],
    startWorkflowOperation: start,
  });
  expect(answer).toEqual({
    status: 'REFUNDED',
    failure: { type: 'ORDER_CONFLICT', message: expect.stringMatching(/no longer in review/) },
  });
  expect(await (await start.workflowHandle()).result()).toMatchObject({ outcome: 'NOT_IN_REVIEW' });
  expect(wxRefundPosts.get(failedRefundRetryNo(seeded.orderId, seeded.outRefundNo, seeded.amount))).toBeUndefined();
});

test('two refunds of an order both reported failed: settling the one under review keeps the order in review for the other, never REFUNDED over a buyer unpaid', async () => {
  const seeded = await seedRefundedOrder('wechat');
  // A second trade of the order (a duplicate payment) was refunded too, under its own number; both refunds then fail.
  const dup = {
    tradeNo: `4200${randomBytes(10).toString('hex')}`,
    refundNo: `5030${randomBytes(8).toString('hex')}`,
    amount: 500,
  };
  const dupRefundNo = autoRefundNo(seeded.orderId, dup.tradeNo);
  await sys.db('refunds').insert({
    out_refund_no: dupRefundNo,
    order_id: seeded.orderId,
    out_trade_no: seeded.orderId,
    provider: 'wechat',
    trade_no: dup.tradeNo,
    amount: dup.amount,
    currency: 'CNY',
    reason: 'duplicate payment',
    status: 'SUCCEEDED',
    refund_no: dup.refundNo,
    refunded_at: new Date(Date.now() - 1_700_000),
  });
  const abnormal = (outRefundNo: string, transactionId: string, refundId: string, amount: number) =>
    deliver(
      wechatRefundNotification('REFUND.ABNORMAL', {
        orderId: seeded.orderId,
        outRefundNo,
        transactionId,
        refundId,
        amount,
      }),
    );
  expect((await abnormal(dupRefundNo, dup.tradeNo, dup.refundNo, dup.amount)).status).toBe(204);
  expect((await abnormal(seeded.outRefundNo, seeded.tradeNo, seeded.refundNo, seeded.amount)).status).toBe(204);
  const reviewFor = async () =>
    (await snapshot(seeded.orderId)).events
      .filter((e: { type: string }) => e.type === 'ORDER_NEEDS_REVIEW')
      .map((e: { data: string | Record<string, unknown> }) =>
        typeof e.data === 'string' ? JSON.parse(e.data) : e.data,
      )
      .at(-1)?.outRefundNo;
  expect(await reviewFor()).toBe(dupRefundNo);

  // The duplicate's money went back another way: its review is settled, and the order stays in review for the other.
  const first = await decide(seeded.orderId, {
    decision: 'refund',
    operator: 'ida',
    reason: 'duplicate repaid by bank transfer',
    refundAmount: 0,
  });
  expect(first).toMatchObject({ status: 200, body: { status: 'NEEDS_REVIEW' } });
  expect((await snapshot(seeded.orderId)).order).toMatchObject({
    status: 'NEEDS_REVIEW',
    status_reason: 'REFUND_FAILED',
  });
  expect(await reviewFor()).toBe(seeded.outRefundNo);

  // The first decision again (the operator's retry after a timeout, a second operator on the same screen): refused,
  // naming the refund now in review. Before, it was carried out on that one, closing it without a refund.
  const retried = await decide(seeded.orderId, {
    decision: 'refund',
    operator: 'ida',
    reason: 'duplicate repaid by bank transfer',
    refundAmount: 0,
  });
  expect(retried).toMatchObject({ status: 409, body: { error: 'REVIEW_DECISION_REFUSED' } });
  expect(retried.body.message).toContain(seeded.outRefundNo);
  // Naming the settled one is refused too.
  expect(
    await decide(seeded.orderId, {
      decision: 'refund',
      operator: 'ida',
      reason: 'the duplicate again',
      refundAmount: 0,
      failedOutRefundNo: dupRefundNo,
    }),
  ).toMatchObject({ status: 409, body: { error: 'REVIEW_DECISION_REFUSED' } });
  expect((await snapshot(seeded.orderId)).order).toMatchObject({ status: 'NEEDS_REVIEW' });

  // Then the other, named: now the order may say REFUNDED.
  const second = await decide(seeded.orderId, {
    decision: 'refund',
    operator: 'ida',
    reason: 'resubmitted at WeChat as an abnormal refund',
    refundAmount: 0,
    failedOutRefundNo: seeded.outRefundNo,
  });
  expect(second).toMatchObject({ status: 200, body: { status: 'REFUNDED' } });
  expect((await snapshot(seeded.orderId)).order).toMatchObject({ status: 'REFUNDED' });
});

test('a refund that fails while its order is in review for something else is settled first, and the order stays in that review', async () => {
  // Decisions were routed by the order's reason alone, which still named the other review: the failed refund never got
  // one, and an approval there left its buyer unpaid.
  const seeded = await seedFailedRefund({ inReviewFor: 'PAYMENT_MISMATCH' });
  const failed = await snapshot(seeded.orderId);
  expect(failed.refunds).toEqual([{ out_refund_no: seeded.outRefundNo, status: 'FAILED' }]);
  // The other review keeps the order and its reason; an entry names the failed refund.
  expect(failed.order).toMatchObject({ status: 'NEEDS_REVIEW', status_reason: 'PAYMENT_MISMATCH' });
  expect(failed.events.map((e: { type: string }) => e.type)).toEqual(['REFUND_FAILED', 'ORDER_NEEDS_REVIEW']);

  // A decision that does not name the failed refund is refused, naming it: it is settled first.
  const unnamed = await decide(seeded.orderId, { decision: 'approve', operator: 'erin', reason: 'amount is fine' });
  expect(unnamed).toMatchObject({
    status: 409,
    body: { error: 'REVIEW_DECISION_REFUSED', failedOutRefundNo: seeded.outRefundNo },
  });
  const settled = await decide(seeded.orderId, {
    decision: 'refund',
    operator: 'erin',
    reason: 'the card was closed; refund again',
    failedOutRefundNo: seeded.outRefundNo,
  });
  expect(settled).toMatchObject({ status: 200, body: { status: 'NEEDS_REVIEW' } });
  const retryNo = failedRefundRetryNo(seeded.orderId, seeded.outRefundNo, seeded.amount);
  expect(wxRefundPosts.get(retryNo)).toBe(1);
  const after = await snapshot(seeded.orderId);
  expect(after.refunds).toContainEqual({ out_refund_no: retryNo, status: 'SUCCEEDED' });
  // Still in the other review, for its own decision.
  expect(after.order).toMatchObject({ status: 'NEEDS_REVIEW', status_reason: 'PAYMENT_MISMATCH' });
  expect(after.events.map((e: { type: string }) => e.type)).toContain('REFUND_FAILED_SETTLED_BY_REVIEW');
  // The order's own payment was refunded again: its payment row says so.
  expect(after.payment).toEqual({ status: 'REFUNDED', trade_no: seeded.tradeNo });
  // The next decision goes to that review (its workflow, here none: seeded, so the API finds no review waiting), no
  // longer to the settled refund's.
  const next = await decide(seeded.orderId, { decision: 'approve', operator: 'erin', reason: 'amount is fine' });
  expect(next.status).toBe(409);
  expect(next.body.error).not.toBe('REVIEW_DECISION_REFUSED');
  expect(next.body.failedOutRefundNo).toBeUndefined();
  expect(wxRefundPosts.get(retryNo)).toBe(1);
});

test("a refundAmount above the failed refund's amount is refused 409 REVIEW_DECISION_REFUSED, nothing refunded", async () => {
  const seeded = await seedFailedRefund();
  const answer = await decide(seeded.orderId, {
    decision: 'refund',
    operator: 'jon',
    reason: 'typo',
    refundAmount: seeded.amount + 1,
  });
  expect(answer).toMatchObject({ status: 409, body: { error: 'REVIEW_DECISION_REFUSED' } });
  expect(answer.body.message).toMatch(/more than the failed refund/);
  expect(wxRefundPosts.get(failedRefundRetryNo(seeded.orderId, seeded.outRefundNo, seeded.amount + 1))).toBeUndefined();
  expect((await snapshot(seeded.orderId)).order).toMatchObject({ status: 'NEEDS_REVIEW' });
});
