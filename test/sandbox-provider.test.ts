/**
 * The sandbox payment provider over real HTTP: the server listens on a random port and a tiny
 * node:http server plays the merchant's notifyUrl.
 */
import http from 'node:http';
import { type AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import {
  CreatePaymentResponse,
  QueryPaymentResponse,
  RefundResponse,
  SANDBOX_SIGNATURE_HEADER,
  SandboxNotification,
  type FaultSettings,
} from '../src/contracts/sandbox';
import { verifySandboxSignature } from '../src/providers/sandbox-signature';
import { createSandboxServer, type SandboxServer } from '../src/sandbox-provider/server';
import { parseBill } from '../src/sandbox-provider/bill';
import { formatChinaDate } from '../src/sandbox-provider/china-time';
import { MAX_HOLD_MS, type NotificationView } from '../src/sandbox-provider/delivery';

const SECRET = 'sandbox-test-secret';
const SCHEDULE = [0, 100, 200, 400];

/** One notification as the merchant received it. */
interface Received {
  /** When it arrived (Date.now()). */
  at: number;
  rawBody: Buffer;
  signature: string | undefined;
  contentType: string | undefined;
  notification: SandboxNotification;
}

type Answer = { status: number; body: string };

/** The merchant's notify endpoint; `answer` decides the reply to the n-th request (0-based). */
class MerchantReceiver {
  readonly received: Received[] = [];
  answer: (n: number) => Answer = () => ({ status: 200, body: 'success' });
  private readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks);
      const n = this.received.length;
      this.received.push({
        at: Date.now(),
        rawBody,
        signature: req.headers[SANDBOX_SIGNATURE_HEADER] as string | undefined,
        contentType: req.headers['content-type'],
        notification: SandboxNotification.parse(JSON.parse(rawBody.toString('utf8'))),
      });
      const { status, body } = this.answer(n);
      res.writeHead(status, { 'content-type': 'text/plain' }).end(body);
    });
  });

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/notify`;
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  ids(): string[] {
    return this.received.map((r) => r.notification.id);
  }
}

let sandbox: SandboxServer;
let baseUrl: string;
let merchant: MerchantReceiver;
/** Shifts the sandbox clock, to observe expiry without waiting. */
let clockSkewMs = 0;
/** When set, the fault dice always show this value. */
let dice: number | undefined;

const sandboxNow = (): Date => new Date(Date.now() + clockSkewMs);

beforeEach(async () => {
  clockSkewMs = 0;
  dice = undefined;
  sandbox = createSandboxServer({
    secret: SECRET,
    publicUrl: 'http://placeholder.invalid',
    notifySchedule: SCHEDULE,
    logger: false,
    now: sandboxNow,
    random: () => dice ?? Math.random(),
  });
  await sandbox.app.listen({ host: '127.0.0.1', port: 0 });
  baseUrl = `http://127.0.0.1:${(sandbox.app.server.address() as AddressInfo).port}`;
  sandbox.setPublicUrl(`${baseUrl}/`);
  merchant = new MerchantReceiver();
  await merchant.start();
});

afterEach(async () => {
  await sandbox.close();
  await merchant.stop();
});

/** A sandbox answer; `json` is `{}` when the body is not JSON (bills, pages). */
interface Answered {
  status: number;
  json: Record<string, unknown>;
  text: string;
  headers: Headers;
}

async function call(method: string, path: string, body?: unknown): Promise<Answered> {
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // not JSON: callers read `text`
  }
  return { status: response.status, json, text, headers: response.headers };
}

function newOrder(overrides: Record<string, unknown> = {}): Record<string, unknown> & { outTradeNo: string } {
  return {
    outTradeNo: `ord_${randomUUID().slice(0, 8)}`,
    amount: 1234,
    currency: 'CNY',
    merchantId: 'm_test_001',
    notifyUrl: merchant.url,
    expiresAt: new Date(Date.now() + 15 * 60_000).toISOString(),
    subject: 'Green tea',
    ...overrides,
  };
}

async function createPayment(
  overrides: Record<string, unknown> = {},
): Promise<{ outTradeNo: string; tradeNo: string }> {
  const order = newOrder(overrides);
  const res = await call('POST', '/v1/payments', order);
  expect(res.status).toBe(200);
  return { outTradeNo: order.outTradeNo, tradeNo: CreatePaymentResponse.parse(res.json).tradeNo };
}

async function payFor(outTradeNo: string, amount?: number): Promise<QueryPaymentResponse> {
  const res = await call('POST', `/v1/payments/${outTradeNo}/pay`, amount === undefined ? {} : { amount });
  expect(res.status).toBe(200);
  return QueryPaymentResponse.parse(res.json);
}

async function setFaults(faults: FaultSettings): Promise<void> {
  expect((await call('PUT', '/_control/faults', faults)).status).toBe(200);
}

async function notificationsOf(outTradeNo: string): Promise<NotificationView[]> {
  return (await call('GET', `/_control/notifications?outTradeNo=${outTradeNo}`)).json
    .notifications as NotificationView[];
}

/** Polls until `condition` holds; bounded generously, since a loaded machine may run the sandbox's timers late. */
async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(20);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Pays a probe order whose notification is scheduled `delayMs` after this call, and waits until the merchant has it.
 * Timers fire in the order they are due, so a delivery the sandbox had scheduled earlier (by then) has been sent
 * before the probe: what a test asserts was not sent after this is proven not sent, not just "not yet".
 */
async function deliverProbe(delayMs: number): Promise<string> {
  await setFaults({ dropNotifications: 0, reorderNotifications: 0, notificationDelayMs: delayMs });
  const probe = await createPayment();
  await payFor(probe.outTradeNo);
  await setFaults({ notificationDelayMs: 0 });
  await waitUntil(() => merchant.received.some((r) => r.notification.data.outTradeNo === probe.outTradeNo));
  return probe.outTradeNo;
}

describe('merchant API', () => {
  test('creating the same order twice returns the same trade, and reusing its number for another amount is refused', async () => {
    const order = newOrder();
    const first = await call('POST', '/v1/payments', order);
    expect(first.status).toBe(200);
    expect(first.json).toEqual({
      tradeNo: expect.stringMatching(/^SBX\d{8}\d{12}$/),
      paymentUrl: `${baseUrl}/pay/${order.outTradeNo}`,
      status: 'WAIT_BUYER_PAY',
    });

    const again = await call('POST', '/v1/payments', order);
    expect(again.json).toEqual(first.json);

    const otherAmount = await call('POST', '/v1/payments', { ...order, amount: 1 });
    expect(otherAmount.status).toBe(409);
    expect(otherAmount.json.code).toBe('OUT_TRADE_NO_USED');
    const otherMerchant = await call('POST', '/v1/payments', { ...order, merchantId: 'm_other' });
    expect(otherMerchant.json.code).toBe('OUT_TRADE_NO_USED');
  });

  test('an invalid body or an expiry in the past is refused with VALIDATION_FAILED', async () => {
    const invalid = await call('POST', '/v1/payments', newOrder({ amount: -5 }));
    expect(invalid.status).toBe(400);
    expect(invalid.json).toEqual({ code: 'VALIDATION_FAILED', message: expect.stringContaining('amount') });

    const past = await call('POST', '/v1/payments', newOrder({ expiresAt: new Date(Date.now() - 1000).toISOString() }));
    expect(past.status).toBe(400);
    expect(past.json.code).toBe('VALIDATION_FAILED');

    const malformed = await fetch(`${baseUrl}/v1/payments`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{nope',
    });
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as { code: string }).code).toBe('VALIDATION_FAILED');
  });

  test('querying an unknown order answers NOT_FOUND, and unknown routes answer 404 JSON', async () => {
    const unknown = await call('GET', '/v1/payments/never_created');
    expect(unknown.status).toBe(200);
    expect(unknown.json).toEqual({ outTradeNo: 'never_created', status: 'NOT_FOUND' });

    const route = await call('GET', '/v2/nothing');
    expect(route.status).toBe(404);
    expect(route.json.code).toBe('NOT_FOUND');
  });

  test('closing a paid payment is refused with ORDER_PAID; closing an unpaid one closes it and payment is then refused', async () => {
    const paid = await createPayment();
    await payFor(paid.outTradeNo);
    const closePaid = await call('POST', `/v1/payments/${paid.outTradeNo}/close`);
    expect(closePaid.status).toBe(409);
    expect(closePaid.json.code).toBe('ORDER_PAID');

    const unpaid = await createPayment();
    // A bodyless POST with a JSON content type is accepted: many HTTP clients send one.
    const close = await fetch(`${baseUrl}/v1/payments/${unpaid.outTradeNo}/close`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
    });
    expect(close.status).toBe(200);
    expect(await close.json()).toEqual({ status: 'CLOSED' });
    expect((await call('POST', `/v1/payments/${unpaid.outTradeNo}/close`)).json).toEqual({ status: 'CLOSED' });

    const pay = await call('POST', `/v1/payments/${unpaid.outTradeNo}/pay`, {});
    expect(pay.status).toBe(409);
    expect(pay.json.code).toBe('TRADE_CLOSED');
    expect((await call('GET', `/v1/payments/${unpaid.outTradeNo}`)).json.status).toBe('CLOSED');

    const unknown = await call('POST', '/v1/payments/never_created/close');
    expect(unknown.status).toBe(404);
    expect(unknown.json.code).toBe('TRADE_NOT_EXIST');
  });

  test('paying twice is refused with TRADE_ALREADY_PAID', async () => {
    const { outTradeNo } = await createPayment();
    await payFor(outTradeNo);
    const again = await call('POST', `/v1/payments/${outTradeNo}/pay`, {});
    expect(again.status).toBe(409);
    expect(again.json.code).toBe('TRADE_ALREADY_PAID');
  });

  test('with acceptPaymentAfterClose a closed payment can still be paid, as an Alipay QR code can', async () => {
    const { outTradeNo } = await createPayment();
    await call('POST', `/v1/payments/${outTradeNo}/close`);
    await setFaults({ acceptPaymentAfterClose: true });

    const paid = await payFor(outTradeNo);
    expect(paid.status).toBe('SUCCESS');
    await waitUntil(() => merchant.received.length === 1);
    expect(merchant.received[0]!.notification.data.outTradeNo).toBe(outTradeNo);
    // The soak's oracle: money taken on a closed trade is never the order's to keep.
    expect((await call('GET', `/_control/payments/${outTradeNo}`)).json).toMatchObject({
      status: 'SUCCESS',
      paidAfterClose: true,
    });
    const open = await createPayment();
    await payFor(open.outTradeNo);
    expect((await call('GET', `/_control/payments/${open.outTradeNo}`)).json).toMatchObject({ paidAfterClose: false });
    expect((await call('GET', '/_control/payments/no-such-order')).status).toBe(404);
  });

  test('acceptPaymentAfterClose stops at the provider-side expiry; only acceptPaymentAfterExpiry takes money later', async () => {
    const { outTradeNo } = await createPayment({ expiresAt: new Date(Date.now() + 60_000).toISOString() });
    await call('POST', `/v1/payments/${outTradeNo}/close`);
    await setFaults({ acceptPaymentAfterClose: true });
    clockSkewMs = 61_000;
    const refused = await call('POST', `/v1/payments/${outTradeNo}/pay`, {});
    expect(refused.status).toBe(409);
    expect(refused.json.code).toBe('TRADE_CLOSED');
    const page = await fetch(`${baseUrl}/pay/${outTradeNo}`);
    expect(await page.text()).not.toContain('<form');

    await setFaults({ acceptPaymentAfterExpiry: true });
    expect((await payFor(outTradeNo)).status).toBe('SUCCESS');
  });

  test('expiry is lazy: an expired unpaid payment is reported CLOSED when next observed and can no longer be paid', async () => {
    const { outTradeNo } = await createPayment({ expiresAt: new Date(Date.now() + 60_000).toISOString() });
    expect((await call('GET', `/v1/payments/${outTradeNo}`)).json.status).toBe('WAIT_BUYER_PAY');

    clockSkewMs = 61_000;
    const pay = await call('POST', `/v1/payments/${outTradeNo}/pay`, {});
    expect(pay.status).toBe(409);
    expect(pay.json.code).toBe('TRADE_CLOSED');
    expect((await call('GET', `/v1/payments/${outTradeNo}`)).json).toMatchObject({ status: 'CLOSED', paidAt: null });
  });

  test('a query reports what the buyer actually paid, so a tampered amount is visible', async () => {
    const { outTradeNo, tradeNo } = await createPayment();
    const paid = await payFor(outTradeNo, 1);
    expect(paid).toMatchObject({
      outTradeNo,
      tradeNo,
      status: 'SUCCESS',
      amount: 1234,
      paidAmount: 1,
      currency: 'CNY',
      refundedAmount: 0,
    });
    await waitUntil(() => merchant.received.length === 1);
    expect(merchant.received[0]!.notification.data.amount).toBe(1);
  });
});

describe('refunds', () => {
  test('a refund retried with the same number is not refunded twice, a different one is a conflict, and too much is refused', async () => {
    const { outTradeNo } = await createPayment({ amount: 1000 });
    await payFor(outTradeNo);

    const refund = { outTradeNo, outRefundNo: `${outTradeNo}_r1`, amount: 300 };
    const first = await call('POST', '/v1/refunds', refund);
    expect(first.status).toBe(200);
    const firstBody = RefundResponse.parse(first.json);
    expect(firstBody).toMatchObject({ ...refund, status: 'SUCCESS' });
    expect((await call('POST', '/v1/refunds', refund)).json).toEqual(first.json);
    expect((await call('GET', `/v1/payments/${outTradeNo}`)).json).toMatchObject({
      status: 'SUCCESS',
      refundedAmount: 300,
    });

    const conflict = await call('POST', '/v1/refunds', { ...refund, amount: 301 });
    expect(conflict.status).toBe(409);
    expect(conflict.json.code).toBe('REFUND_NO_CONFLICT');

    const tooMuch = await call('POST', '/v1/refunds', { outTradeNo, outRefundNo: `${outTradeNo}_r2`, amount: 701 });
    expect(tooMuch.status).toBe(409);
    expect(tooMuch.json.code).toBe('REFUND_AMOUNT_EXCEEDED');
  });

  test('refunding the whole paid amount makes the payment REFUNDED, and a retry afterwards still answers the same', async () => {
    const { outTradeNo } = await createPayment({ amount: 1000 });
    await payFor(outTradeNo);
    const r1 = { outTradeNo, outRefundNo: `${outTradeNo}_a`, amount: 400 };
    const r2 = { outTradeNo, outRefundNo: `${outTradeNo}_b`, amount: 600 };
    const first = await call('POST', '/v1/refunds', r1);
    expect((await call('POST', '/v1/refunds', r2)).status).toBe(200);

    expect((await call('GET', `/v1/payments/${outTradeNo}`)).json).toMatchObject({
      status: 'REFUNDED',
      refundedAmount: 1000,
    });
    expect((await call('POST', '/v1/refunds', r1)).json).toEqual(first.json);
    const more = await call('POST', '/v1/refunds', { outTradeNo, outRefundNo: `${outTradeNo}_c`, amount: 1 });
    expect(more.json.code).toBe('REFUND_AMOUNT_EXCEEDED');
    expect((await call('POST', `/v1/payments/${outTradeNo}/close`)).json.code).toBe('ORDER_PAID');
  });

  test('refunding an unpaid payment is refused with TRADE_NOT_PAID and an unknown one with TRADE_NOT_EXIST', async () => {
    const { outTradeNo } = await createPayment();
    const unpaid = await call('POST', '/v1/refunds', { outTradeNo, outRefundNo: 'r_unpaid', amount: 1 });
    expect(unpaid.status).toBe(409);
    expect(unpaid.json.code).toBe('TRADE_NOT_PAID');

    const unknown = await call('POST', '/v1/refunds', {
      outTradeNo: 'never_created',
      outRefundNo: 'r_unknown',
      amount: 1,
    });
    expect(unknown.status).toBe(404);
    expect(unknown.json.code).toBe('TRADE_NOT_EXIST');
  });
});

describe('notifications', () => {
  test('a payment is notified with a valid signature and redelivered until the merchant answers success, then never again', async () => {
    merchant.answer = (n) =>
      n === 0
        ? { status: 500, body: 'oops' }
        : n === 1
          ? { status: 200, body: 'fail' }
          : { status: 200, body: 'success\n' };
    const { outTradeNo, tradeNo } = await createPayment();
    const paid = await payFor(outTradeNo);

    await waitUntil(async () => (await notificationsOf(outTradeNo))[0]?.acknowledged === true);
    // A fourth attempt would be due at most the longest retry delay after the acknowledged one.
    await deliverProbe(Math.max(...SCHEDULE));
    expect(merchant.received.filter((r) => r.notification.data.outTradeNo === outTradeNo)).toHaveLength(3);

    const [first] = merchant.received;
    expect(first!.notification).toEqual({
      id: expect.stringMatching(/^evt_/),
      type: 'payment.succeeded',
      createdAt: expect.any(String),
      data: { outTradeNo, tradeNo, amount: 1234, currency: 'CNY', merchantId: 'm_test_001', paidAt: paid.paidAt },
    });
    for (const delivery of merchant.received.filter((r) => r.notification.data.outTradeNo === outTradeNo)) {
      expect(delivery.contentType).toBe('application/json');
      // Same event, same bytes on every redelivery: the id is the merchant's dedup key.
      expect(delivery.rawBody.equals(first!.rawBody)).toBe(true);
      const verdict = verifySandboxSignature(
        SECRET,
        delivery.signature,
        delivery.rawBody,
        Math.floor(Date.now() / 1000),
      );
      expect(verdict).toEqual({ ok: true, timestamp: expect.any(Number) });
    }
    expect(
      verifySandboxSignature('wrong-secret', first!.signature, first!.rawBody, Math.floor(Date.now() / 1000)).ok,
    ).toBe(false);
    expect(await notificationsOf(outTradeNo)).toEqual([
      expect.objectContaining({
        attempts: 3,
        sends: 3,
        acknowledged: true,
        gaveUp: false,
        lastStatus: 200,
        lastError: null,
      }),
    ]);
  });

  test('delivery gives up once the schedule is exhausted and records why the last attempt failed', async () => {
    merchant.answer = () => ({ status: 503, body: 'busy' });
    const { outTradeNo } = await createPayment();
    await payFor(outTradeNo);

    await waitUntil(async () => (await notificationsOf(outTradeNo))[0]?.gaveUp === true);
    expect(merchant.received).toHaveLength(SCHEDULE.length);
    expect((await notificationsOf(outTradeNo))[0]).toMatchObject({
      attempts: 4,
      acknowledged: false,
      lastStatus: 503,
      lastError: 'answered HTTP 503',
    });
  });

  test('with dropNotifications=1 nothing is ever delivered, but a query still says SUCCESS', async () => {
    await setFaults({ dropNotifications: 1 });
    const { outTradeNo } = await createPayment();
    await payFor(outTradeNo);

    // A probe paid afterwards (faults off) arrives; the dropped one, which would have been due first, never did.
    const probe = await deliverProbe(0);
    expect(merchant.received.map((r) => r.notification.data.outTradeNo)).toEqual([probe]);
    expect((await call('GET', `/v1/payments/${outTradeNo}`)).json.status).toBe('SUCCESS');
    expect(await notificationsOf(outTradeNo)).toEqual([
      expect.objectContaining({ dropped: true, attempts: 0, sends: 0 }),
    ]);
  });

  test('with duplicateNotifications=1 each attempt is sent several times with the same id, and redeliver sends one more', async () => {
    await setFaults({ duplicateNotifications: 1 });
    const { outTradeNo } = await createPayment();
    await payFor(outTradeNo);

    await waitUntil(async () => (await notificationsOf(outTradeNo))[0]?.acknowledged === true);
    const [view] = await notificationsOf(outTradeNo);
    expect(view!.attempts).toBe(1);
    expect(view!.sends).toBeGreaterThanOrEqual(2);
    expect(view!.sends).toBeLessThanOrEqual(3);
    expect(merchant.received).toHaveLength(view!.sends);
    expect(new Set(merchant.ids())).toEqual(new Set([view!.id]));

    await setFaults({ duplicateNotifications: 0 });
    const redelivered = await call('POST', `/_control/notifications/${view!.id}/redeliver`);
    expect(redelivered.json).toMatchObject({ id: view!.id, attempts: 2, sends: view!.sends + 1, acknowledged: true });
    expect(merchant.ids()).toEqual(Array(view!.sends + 1).fill(view!.id));

    expect((await call('POST', '/_control/notifications/evt_unknown/redeliver')).status).toBe(404);
  });

  test('with reorderNotifications=1 a notification is held back until the next one is sent', async () => {
    await setFaults({ reorderNotifications: 1 });
    const held = await createPayment();
    await payFor(held.outTradeNo);
    await setFaults({ reorderNotifications: 0 });
    // Held, not sent (without the fault its first attempt would have been due at once).
    expect(await notificationsOf(held.outTradeNo)).toEqual([
      expect.objectContaining({ attempts: 0, sends: 0, dropped: false }),
    ]);
    expect(merchant.received).toHaveLength(0);

    const next = await createPayment();
    await payFor(next.outTradeNo);
    await waitUntil(() => merchant.received.length === 2);
    expect(merchant.received.map((r) => r.notification.data.outTradeNo)).toEqual([next.outTradeNo, held.outTradeNo]);
  });

  test('a held-back notification is released after at most 2 s when no other one comes', async () => {
    await setFaults({ reorderNotifications: 1 });
    const { outTradeNo } = await createPayment();
    const paying = Date.now();
    await payFor(outTradeNo);
    await waitUntil(() => merchant.received.length === 1);
    // Held for the whole 2 s (timers never fire early), and then released though no other notification came. How much
    // later than 2 s it arrives depends on the machine's load, so that bound is generous.
    const heldMs = merchant.received[0]!.at - paying;
    expect(heldMs).toBeGreaterThanOrEqual(MAX_HOLD_MS - 5);
    expect(heldMs).toBeLessThan(MAX_HOLD_MS + 10_000);
  });

  test('notificationDelayMs delays the first attempt', async () => {
    await setFaults({ notificationDelayMs: 400 });
    const { outTradeNo } = await createPayment();
    const paying = Date.now();
    await payFor(outTradeNo);
    await waitUntil(() => merchant.received.length === 1);
    // Sent no earlier than 400 ms after the payment (timers never fire early); how much later depends on the load.
    expect(merchant.received[0]!.at - paying).toBeGreaterThanOrEqual(400 - 5);
  });

  test('close() cancels pending redeliveries', async () => {
    merchant.answer = () => ({ status: 500, body: '' });
    // A sandbox of its own whose debug log says when an attempt failed: its retry is scheduled in the same turn of the
    // event loop, and the sandbox is closed right after that turn, so a redelivery is pending (100 ms ahead) when it
    // closes, however loaded the machine.
    let closing: Promise<void> | undefined;
    const own: SandboxServer = createSandboxServer({
      secret: SECRET,
      publicUrl: 'http://placeholder.invalid',
      notifySchedule: SCHEDULE,
      now: sandboxNow,
      logger: pino(
        { level: 'debug' },
        {
          write(line: string) {
            const entry = JSON.parse(line) as { msg?: string; status?: number };
            if (entry.msg === 'notification sent' && entry.status === 500 && !closing)
              closing = new Promise((resolve) => setImmediate(() => resolve(own.close())));
          },
        },
      ),
    });
    await own.app.listen({ host: '127.0.0.1', port: 0 });
    baseUrl = `http://127.0.0.1:${(own.app.server.address() as AddressInfo).port}`;
    const { outTradeNo } = await createPayment();
    await payFor(outTradeNo);
    await waitUntil(() => closing !== undefined);
    await closing;
    // A timer that fires after the cancelled redelivery would have: had it not been cancelled, it would have gone
    // first.
    await sleep(SCHEDULE[1]! * 2);
    expect(merchant.received).toHaveLength(1);
  });
});

describe('faults', () => {
  test('faults are merged on PUT, returned on GET and cleared by reset; invalid settings are refused', async () => {
    await setFaults({ apiLatencyMs: 5 });
    await setFaults({ dropNotifications: 0.5 });
    expect((await call('GET', '/_control/faults')).json).toEqual({
      dropNotifications: 0.5,
      duplicateNotifications: 0,
      reorderNotifications: 0,
      notificationDelayMs: 0,
      apiErrorRate: 0,
      apiLatencyMs: 5,
      acceptPaymentAfterClose: false,
      acceptPaymentAfterExpiry: false,
      queryLagMs: 0,
    });
    const reset = await call('POST', '/_control/reset');
    expect(Object.values(reset.json).every((v) => v === 0 || v === false)).toBe(true);

    const invalid = await call('PUT', '/_control/faults', { dropNotifications: 2 });
    expect(invalid.status).toBe(400);
    expect(invalid.json.code).toBe('VALIDATION_FAILED');
  });

  test('with queryLagMs the query answers a payment as it was before it was paid, until the lag has passed', async () => {
    await setFaults({ queryLagMs: 400 });
    const order = newOrder();
    expect((await call('POST', '/v1/payments', order)).status).toBe(200);
    expect((await call('POST', `/v1/payments/${order.outTradeNo}/pay`, {})).status).toBe(200);
    expect((await call('GET', `/v1/payments/${order.outTradeNo}`)).json).toMatchObject({
      status: 'WAIT_BUYER_PAY',
      paidAmount: null,
      paidAt: null,
    });
    await new Promise((r) => setTimeout(r, 450));
    expect((await call('GET', `/v1/payments/${order.outTradeNo}`)).json).toMatchObject({
      status: 'SUCCESS',
      paidAmount: order.amount,
    });
  });

  test('with apiErrorRate=1 the merchant API answers 500 SYSTEM_ERROR, sometimes after the call took effect', async () => {
    await setFaults({ apiErrorRate: 1 });
    const lostBefore = newOrder();
    const lostAfter = newOrder();

    dice = 0.25; // the first half of injected errors: refused before processing
    const before = await call('POST', '/v1/payments', lostBefore);
    expect(before.status).toBe(500);
    expect(before.json.code).toBe('SYSTEM_ERROR');
    dice = 0.75; // the second half: processed, then the answer is lost
    expect((await call('POST', '/v1/payments', lostAfter)).json.code).toBe('SYSTEM_ERROR');

    await call('POST', '/_control/reset');
    expect((await call('GET', `/v1/payments/${lostBefore.outTradeNo}`)).json.status).toBe('NOT_FOUND');
    expect((await call('GET', `/v1/payments/${lostAfter.outTradeNo}`)).json.status).toBe('WAIT_BUYER_PAY');
  });

  test('apiLatencyMs delays merchant API answers but not the buyer paying', async () => {
    const { outTradeNo } = await createPayment();
    await setFaults({ apiLatencyMs: 300 });
    const started = Date.now();
    await call('GET', `/v1/payments/${outTradeNo}`);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290); // never earlier: timers do not fire early
    // With merchant calls held for 10 minutes, the buyer pays while one still waits (a paying delayed like them would
    // not finish before the test's timeout): no bound on how fast the machine is.
    await setFaults({ apiLatencyMs: 600_000 });
    let merchantCallAnswered = false;
    const held = call('GET', `/v1/payments/${outTradeNo}`).finally(() => (merchantCallAnswered = true));
    await payFor(outTradeNo);
    expect(merchantCallAnswered).toBe(false);
    await sandbox.close(); // ends the held call's pause
    await held.catch(() => undefined);
  });
});

describe('bills', () => {
  test("the bill of the payment's China day lists the payment and the refund, ids with trailing tabs and the refund negative", async () => {
    const { outTradeNo, tradeNo } = await createPayment({ amount: 1234, subject: 'Tea, "green"' });
    const paid = await payFor(outTradeNo, 1200);
    await call('POST', '/v1/refunds', { outTradeNo, outRefundNo: `${outTradeNo}_r1`, amount: 200 });
    const day = formatChinaDate(new Date(paid.paidAt!));

    const res = await call('GET', `/v1/bills/${day}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    const lines = res.text.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^#/);
    expect(lines).toContain(
      '交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,币种,订单金额（元）,商家实收（元）,退款批次号/请求号,服务费（元）',
    );
    expect(lines).toContain(
      '#-----------------------------------------业务明细列表结束------------------------------------',
    );
    expect(lines).toContain('#交易合计：1笔，商家实收共计：12.00元');
    expect(lines).toContain('#退款合计：1笔，退款共计：-2.00元');
    expect(lines.at(-1)).toMatch(/^#导出时间：/);
    expect(res.text).toContain(`"${tradeNo}\t","${outTradeNo}\t",交易,"Tea, ""green"""`);

    const rows = parseBill(res.text);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatchObject({
      交易号: `${tradeNo}\t`,
      商户订单号: `${outTradeNo}\t`,
      业务类型: '交易',
      商品名称: 'Tea, "green"',
      币种: 'CNY',
      '订单金额（元）': '12.34',
      '商家实收（元）': '12.00',
      '退款批次号/请求号': '',
      '服务费（元）': '0.00',
    });
    expect(rows[0]!.完成时间).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/);
    expect(rows[0]!.完成时间.startsWith(day)).toBe(true);
    expect(rows[1]).toMatchObject({
      业务类型: '退款',
      '商家实收（元）': '-2.00',
      '退款批次号/请求号': `${outTradeNo}_r1\t`,
    });
  });

  test('a bill of another day does not list the payment, and an invalid date is refused', async () => {
    const { outTradeNo } = await createPayment();
    const paid = await payFor(outTradeNo);
    const dayBefore = formatChinaDate(new Date(new Date(paid.paidAt!).getTime() - 24 * 3_600_000));
    const other = await call('GET', `/v1/bills/${dayBefore}`);
    expect(other.text).not.toContain(outTradeNo);

    expect((await call('GET', '/v1/bills/2024-02-30')).json.code).toBe('VALIDATION_FAILED');
    expect((await call('GET', '/v1/bills/yesterday')).status).toBe(400);
  });
});

describe('cashier page', () => {
  test('the cashier page shows the order and its form pays it, then shows it paid', async () => {
    const { outTradeNo } = await createPayment({ subject: '<script>alert(1)</script>' });
    const page = await fetch(`${baseUrl}/pay/${outTradeNo}`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const html = await page.text();
    expect(html).toContain('¥12.34');
    expect(html).toContain('CNY 12.34');
    expect(html).toContain('m_test_001');
    expect(html).toContain('Awaiting payment');
    expect(html).toMatch(/\d+ min \d{2} s/);
    expect(html).toContain(`<form method="post" action="/pay/${outTradeNo}">`);
    expect(html).not.toContain('<script>');
    expect(html).toContain('&#60;script&#62;');

    const submit = await fetch(`${baseUrl}/pay/${outTradeNo}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: '',
      redirect: 'manual',
    });
    expect(submit.status).toBe(303);
    expect(submit.headers.get('location')).toBe(`/pay/${outTradeNo}`);

    const after = await (await fetch(`${baseUrl}/pay/${outTradeNo}`)).text();
    expect(after).toContain('Paid');
    expect(after).not.toContain('<form');
    expect((await call('GET', `/v1/payments/${outTradeNo}`)).json).toMatchObject({
      status: 'SUCCESS',
      paidAmount: 1234,
    });
    await waitUntil(() => merchant.received.length === 1);
  });

  test('paying a closed order from the cashier shows the refusal, and an unknown order is a 404 page', async () => {
    const { outTradeNo } = await createPayment();
    await call('POST', `/v1/payments/${outTradeNo}/close`);
    const submit = await fetch(`${baseUrl}/pay/${outTradeNo}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: '',
      redirect: 'manual',
    });
    expect(submit.status).toBe(303);
    expect(submit.headers.get('location')).toBe(`/pay/${outTradeNo}?error=TRADE_CLOSED`);
    const html = await (await fetch(`${baseUrl}${submit.headers.get('location')}`)).text();
    expect(html).toContain('this order is closed');

    const unknown = await fetch(`${baseUrl}/pay/never_created`);
    expect(unknown.status).toBe(404);
    expect(await unknown.text()).toContain('never_created');
  });
});
