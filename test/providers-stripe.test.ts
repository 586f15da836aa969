/**
 * The Stripe adapter: webhooks signed with the SDK's own generateTestHeaderString, API calls against stripe-mock
 * (Stripe's official mock, a real peer that validates every request against Stripe's OpenAPI spec), balance
 * transactions from a local fake with Stripe's list shape, and the whole system taking a Stripe order to PAID.
 */
import { randomBytes } from 'node:crypto';
import Stripe from 'stripe';
import type { StripeConfig } from '../src/providers/config';
import { Secret } from '../src/providers/keys';
import { createStripeProvider, fromStripeAmount, toStripeAmount } from '../src/providers/stripe';
import { ProviderBusinessError, type PaymentProvider } from '../src/providers/types';
import { ProviderUnavailableError } from '../src/providers/http';
import { collect, startFakeServer } from './support/provider-fakes';
import { type StripeMock, startStripeMock } from './support/stripe-mock';
import { type TestSystem, createProduct, startSystem, userId, waitForStatus } from './support/system';

const WEBHOOK_SECRET = 'whsec_payflowTestSecret0123456789';
const SECRET_KEY = 'sk_test_payflowLocal0123456789';
const sdk = new Stripe(SECRET_KEY);

function config(overrides: Partial<StripeConfig> = {}): StripeConfig {
  return {
    secretKey: new Secret(SECRET_KEY),
    webhookSecret: new Secret(WEBHOOK_SECRET),
    livemode: false,
    paymentPageUrl: 'https://shop.example.com/pay',
    ...overrides,
  };
}

/** A `payment_intent.succeeded` event as Stripe sends it (the fields this adapter reads, plus the usual ones). */
function succeededEvent(intent: Record<string, unknown>, event: Record<string, unknown> = {}): string {
  const created = Math.floor(Date.now() / 1000);
  return JSON.stringify({
    id: `evt_${randomBytes(12).toString('hex')}`,
    object: 'event',
    api_version: '2026-10-28.endive',
    created,
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type: 'payment_intent.succeeded',
    data: {
      object: {
        id: `pi_${randomBytes(12).toString('hex')}`,
        object: 'payment_intent',
        amount: 2500,
        amount_received: 2500,
        currency: 'cny',
        status: 'succeeded',
        created,
        livemode: false,
        metadata: { out_trade_no: 'ord_stripe_1' },
        ...intent,
      },
    },
    ...event,
  });
}

const header = (payload: string, options: { secret?: string; timestamp?: number } = {}) =>
  sdk.webhooks.generateTestHeaderString({
    payload,
    secret: options.secret ?? WEBHOOK_SECRET,
    ...(options.timestamp ? { timestamp: options.timestamp } : {}),
  });

describe('Stripe amounts', () => {
  test.each([
    [1234, 'CNY', 1234],
    [500, 'JPY', 500],
    [500, 'KRW', 500],
    [100, 'ISK', 10000],
    [1234, 'KWD', 12340],
  ])('%i minor units of %s are %i at Stripe and back', (minor, currency, stripe) => {
    expect(toStripeAmount(minor, currency)).toBe(stripe);
    expect(fromStripeAmount(stripe, currency)).toBe(minor);
  });

  test('an amount Stripe cannot express is refused rather than rounded', () => {
    // BIF is zero-decimal at Stripe but two-decimal in our money helpers: 10.01 BIF cannot be charged.
    expect(toStripeAmount(1000, 'BIF')).toBe(10);
    expect(() => toStripeAmount(1001, 'BIF')).toThrow(/not a whole amount/);
    expect(fromStripeAmount(10001, 'ISK')).toBeUndefined();
  });
});

describe('Stripe webhooks', () => {
  const provider: PaymentProvider = createStripeProvider(config({ accountId: 'acct_payflowOwn01' }));
  const verify = (payload: string | Buffer, signature: string | undefined, now = new Date()) =>
    provider.verifyNotification(
      Buffer.isBuffer(payload) ? payload : Buffer.from(payload),
      signature ? { 'stripe-signature': signature } : {},
      now,
    );

  test('an event signed with generateTestHeaderString is verified and normalised', () => {
    const payload = succeededEvent({
      id: 'pi_ok1',
      amount_received: 2500,
      currency: 'cny',
      metadata: { out_trade_no: 'ord_42' },
    });
    const event = JSON.parse(payload);
    expect(verify(payload, header(payload))).toEqual({
      ok: true,
      notification: {
        provider: 'stripe',
        notificationId: event.id,
        outTradeNo: 'ord_42',
        tradeNo: 'pi_ok1',
        amount: 2500,
        currency: 'CNY',
        merchantId: 'acct_payflowOwn01',
        paidAt: new Date(event.created * 1000).toISOString(),
      },
    });
  });

  test('a zero-decimal currency keeps its amount as is', () => {
    const payload = succeededEvent({ amount: 980, amount_received: 980, currency: 'jpy' });
    const verdict = verify(payload, header(payload));
    expect(verdict.ok && [verdict.notification.amount, verdict.notification.currency]).toEqual([980, 'JPY']);
  });

  test('an event signed with another secret is refused as BAD_SIGNATURE', () => {
    const payload = succeededEvent({});
    expect(verify(payload, header(payload, { secret: 'whsec_someoneElse0123456789' }))).toMatchObject({
      ok: false,
      rejection: { code: 'BAD_SIGNATURE' },
    });
  });

  test('a body changed by one byte after signing is refused', () => {
    const payload = succeededEvent({ amount_received: 2500 });
    const signature = header(payload);
    expect(verify(payload.replace('"amount_received":2500', '"amount_received":2501'), signature)).toMatchObject({
      ok: false,
      rejection: { code: 'BAD_SIGNATURE' },
    });
  });

  test('an event signed more than 300 s before it arrives is refused as STALE_TIMESTAMP', () => {
    const payload = succeededEvent({});
    const signedAt = Math.floor(Date.now() / 1000);
    expect(verify(payload, header(payload, { timestamp: signedAt }), new Date((signedAt + 301) * 1000))).toMatchObject({
      ok: false,
      rejection: { code: 'STALE_TIMESTAMP' },
    });
    expect(verify(payload, header(payload, { timestamp: signedAt }), new Date((signedAt + 299) * 1000)).ok).toBe(true);
  });

  test("without STRIPE_ACCOUNT_ID, a connected account's signed event naming our order is still refused as WRONG_MERCHANT", () => {
    // A Connect endpoint delivers connected accounts' events too: their metadata is theirs to write, our
    // out_trade_no and amount included. Before the fix the account was compared only when ours was configured.
    const platform = createStripeProvider(config());
    const payload = succeededEvent({}, { account: 'acct_someoneElse1' });
    expect(
      platform.verifyNotification(Buffer.from(payload), { 'stripe-signature': header(payload) }, new Date()),
    ).toMatchObject({
      ok: false,
      rejection: { code: 'WRONG_MERCHANT' },
    });
    const own = succeededEvent({});
    expect(platform.verifyNotification(Buffer.from(own), { 'stripe-signature': header(own) }, new Date()).ok).toBe(
      true,
    );
  });

  test('a missing or garbled Stripe-Signature header is refused', () => {
    const payload = succeededEvent({});
    expect(verify(payload, undefined)).toMatchObject({ ok: false, rejection: { code: 'MISSING_SIGNATURE' } });
    expect(verify(payload, 'nonsense')).toMatchObject({ ok: false, rejection: { code: 'MALFORMED_SIGNATURE' } });
  });

  test.each([
    ["another connected account's event", { account: 'acct_someoneElse1' }],
    ['a live-mode event at a test-mode account', { livemode: true }],
  ])('%s is refused as WRONG_MERCHANT', (_what, event) => {
    const payload = succeededEvent({}, event);
    expect(verify(payload, header(payload))).toMatchObject({ ok: false, rejection: { code: 'WRONG_MERCHANT' } });
  });

  test.each([
    ['a fractional amount_received', { amount_received: 2500.5 }],
    ['amount_received as a string', { amount_received: '25.00' }],
  ])('a signed event with %s is refused as MALFORMED_BODY', (_what, intent) => {
    const payload = succeededEvent(intent);
    expect(verify(payload, header(payload))).toMatchObject({ ok: false, rejection: { code: 'MALFORMED_BODY' } });
  });

  test.each([
    ['no out_trade_no in the metadata', { metadata: {} }],
    ['an out_trade_no no order of ours can have', { metadata: { out_trade_no: `ord_${'x'.repeat(100)}` } }],
  ])('a signed succeeded event with %s is a notice (acknowledged), never a payment', (_what, intent) => {
    const payload = succeededEvent(intent);
    const verdict = verify(payload, header(payload));
    expect(verdict).toMatchObject({ ok: false, rejection: { code: 'UNSUPPORTED_EVENT', notice: { kind: 'OTHER' } } });
    expect(!verdict.ok && verdict.rejection.notice?.outTradeNo).toBeUndefined();
  });

  test('payment_intent.canceled and charge.refunded are verified notices, not payments', () => {
    const canceled = succeededEvent({ status: 'canceled' }, { type: 'payment_intent.canceled' });
    expect(verify(canceled, header(canceled))).toMatchObject({
      ok: false,
      rejection: {
        code: 'UNSUPPORTED_EVENT',
        notice: { kind: 'TRADE_CLOSED', closeReason: 'UNPAID', outTradeNo: 'ord_stripe_1' },
      },
    });
    const refunded = JSON.stringify({
      id: 'evt_refund_1',
      object: 'event',
      created: Math.floor(Date.now() / 1000),
      livemode: false,
      type: 'charge.refunded',
      data: {
        object: {
          id: 'ch_1',
          object: 'charge',
          amount: 2500,
          amount_refunded: 2500,
          currency: 'cny',
          payment_intent: 'pi_r1',
          metadata: { out_trade_no: 'ord_r1' },
        },
      },
    });
    expect(verify(refunded, header(refunded))).toMatchObject({
      ok: false,
      rejection: {
        code: 'UNSUPPORTED_EVENT',
        notice: { kind: 'REFUND', refundedAmount: 2500, tradeNo: 'pi_r1', outTradeNo: 'ord_r1' },
      },
    });
  });
});

describe('Stripe refund events', () => {
  const provider: PaymentProvider = createStripeProvider(config({ accountId: 'acct_payflowOwn01' }));

  /** An event whose object is a Refund, as Stripe sends refund.failed, refund.updated and charge.refund.updated. */
  function refundEvent(type: string, refund: Record<string, unknown>): string {
    return JSON.stringify({
      id: `evt_${randomBytes(12).toString('hex')}`,
      object: 'event',
      api_version: '2026-10-28.endive',
      created: Math.floor(Date.now() / 1000),
      livemode: false,
      type,
      data: {
        object: {
          id: 're_3Nf1',
          object: 'refund',
          amount: 2500,
          currency: 'usd',
          payment_intent: 'pi_r1',
          charge: 'ch_r1',
          reason: 'requested_by_customer',
          metadata: { out_refund_no: 'rf-ord_r1-pi_r1', out_trade_no: 'ord_r1' },
          status: 'failed',
          failure_reason: 'expired_or_canceled_card',
          ...refund,
        },
      },
    });
  }

  test.each([
    ['refund.failed', 'failed', 'FAILED'],
    ['charge.refund.updated', 'failed', 'FAILED'],
    ['charge.refund.updated', 'canceled', 'FAILED'],
    ['refund.updated', 'canceled', 'FAILED'],
    ['charge.refund.updated', 'succeeded', 'SUCCEEDED'],
    ['refund.updated', 'pending', 'PROCESSING'],
  ])(
    '%s with status %s is a verified refund notice: the refund %s, with our refund number',
    (type, status, outcome) => {
      const payload = refundEvent(type, { status });
      expect(
        provider.verifyNotification(Buffer.from(payload), { 'stripe-signature': header(payload) }, new Date()),
      ).toMatchObject({
        ok: false,
        rejection: {
          code: 'UNSUPPORTED_EVENT',
          notice: {
            provider: 'stripe',
            kind: 'REFUND',
            providerEvent: type,
            outTradeNo: 'ord_r1',
            tradeNo: 'pi_r1',
            outRefundNo: 'rf-ord_r1-pi_r1',
            refundNo: 're_3Nf1',
            refundStatus: outcome,
            refundedAmount: 2500,
            currency: 'USD',
          },
        },
      });
    },
  );

  test("a failed refund's failure_reason is kept; a refund without our metadata has no refund number", () => {
    const failed = refundEvent('refund.failed', {});
    const verdict = provider.verifyNotification(
      Buffer.from(failed),
      { 'stripe-signature': header(failed) },
      new Date(),
    );
    expect(!verdict.ok && verdict.rejection.notice?.failureReason).toBe('expired_or_canceled_card');
    const dashboard = refundEvent('refund.failed', { metadata: {} });
    const other = provider.verifyNotification(
      Buffer.from(dashboard),
      { 'stripe-signature': header(dashboard) },
      new Date(),
    );
    expect(!other.ok && other.rejection.notice).toMatchObject({ kind: 'REFUND', refundStatus: 'FAILED' });
    expect(!other.ok && other.rejection.notice?.outRefundNo).toBeUndefined();
  });
});

describe('Stripe API calls against stripe-mock', () => {
  let mock: StripeMock;
  const seen: Array<{ method: string; url: string; headers: Record<string, string>; body: string }> = [];
  const recordingFetch: typeof fetch = async (input, init) => {
    const headers = Object.fromEntries(
      new Headers(init?.headers as ConstructorParameters<typeof Headers>[0]).entries(),
    );
    seen.push({
      method: init?.method ?? 'GET',
      url: String(input),
      headers,
      body: typeof init?.body === 'string' ? init.body : '',
    });
    return fetch(input, init);
  };

  beforeAll(async () => {
    mock = await startStripeMock();
  }, 300_000);

  afterAll(async () => {
    await mock?.stop();
  });

  const provider = () =>
    createStripeProvider({
      ...config({ apiBase: mock.url }),
      httpClient: Stripe.createFetchHttpClient(recordingFetch),
    });
  const form = (body: string) => new URLSearchParams(body);
  const lastSeen = (match: (r: (typeof seen)[number]) => boolean) => [...seen].reverse().find(match)!;

  test('createPayment creates a PaymentIntent in Stripe units with our order id and an Idempotency-Key', async () => {
    const p = provider();
    const created = await p.createPayment({
      outTradeNo: 'ord_jpy_1',
      amount: 980,
      currency: 'JPY',
      subject: 'Order ord_jpy_1',
      notifyUrl: 'unused',
      expiresAt: '2030-01-01T00:00:00.000Z',
    });
    expect(created.tradeNo).toMatch(/^pi_/);
    const url = new URL(created.paymentUrl);
    expect(`${url.origin}${url.pathname}`).toBe('https://shop.example.com/pay');
    expect(url.searchParams.get('payment_intent')).toBe(created.tradeNo);
    expect(url.searchParams.get('payment_intent_client_secret')).toMatch(/_secret_/);
    const request = lastSeen((r) => r.method === 'POST' && r.url.endsWith('/v1/payment_intents'));
    const body = form(request.body);
    expect(body.get('amount')).toBe('980');
    expect(body.get('currency')).toBe('jpy');
    expect(body.get('metadata[out_trade_no]')).toBe('ord_jpy_1');
    expect(body.get('metadata[expires_at]')).toBe('2030-01-01T00:00:00.000Z');
    expect(request.headers['idempotency-key']).toBe('payflow-create-ord_jpy_1');
  });

  test('queryPayment retrieves the intent it created and reports an unpaid one as PENDING', async () => {
    const p = provider();
    const { tradeNo } = await p.createPayment({
      outTradeNo: 'ord_q_1',
      amount: 100,
      currency: 'USD',
      subject: 's',
      notifyUrl: 'unused',
      expiresAt: '2030-01-01T00:00:00.000Z',
    });
    expect(await p.queryPayment('ord_q_1')).toEqual({
      outTradeNo: 'ord_q_1',
      status: 'PENDING',
      tradeNo,
      currency: 'USD',
      merchantId: 'stripe-test',
    });
    expect(seen.at(-1)!.url).toContain(`/v1/payment_intents/${tradeNo}`);
  });

  test('queryPayment for an order it never created searches by metadata and finds nothing that is not ours', async () => {
    expect(await provider().queryPayment('ord_unknown_1')).toEqual({
      outTradeNo: 'ord_unknown_1',
      status: 'NOT_FOUND',
    });
    const search = lastSeen((r) => r.url.includes('/v1/payment_intents/search'));
    expect(new URL(search.url).searchParams.get('query')).toBe("metadata['out_trade_no']:'ord_unknown_1'");
  });

  test('closePayment cancels an unpaid intent', async () => {
    const p = provider();
    const { tradeNo } = await p.createPayment({
      outTradeNo: 'ord_c_1',
      amount: 100,
      currency: 'USD',
      subject: 's',
      notifyUrl: 'unused',
      expiresAt: '2030-01-01T00:00:00.000Z',
    });
    expect(await p.closePayment('ord_c_1')).toEqual({ result: 'CLOSED' });
    const cancel = lastSeen((r) => r.method === 'POST' && r.url.endsWith(`/v1/payment_intents/${tradeNo}/cancel`));
    expect(form(cancel.body).get('cancellation_reason')).toBe('abandoned');
  });

  test('refund looks for our refund number first, then creates the refund with an Idempotency-Key', async () => {
    const p = provider();
    const { tradeNo } = await p.createPayment({
      outTradeNo: 'ord_r_1',
      amount: 100,
      currency: 'USD',
      subject: 's',
      notifyUrl: 'unused',
      expiresAt: '2030-01-01T00:00:00.000Z',
    });
    const result = await p.refund({
      outTradeNo: 'ord_r_1',
      outRefundNo: 'rf-ord_r_1-pi',
      amount: 100,
      reason: 'late payment',
    });
    expect(result.refundNo).toMatch(/^re_/);
    const list = lastSeen((r) => r.method === 'GET' && r.url.includes('/v1/refunds'));
    expect(new URL(list.url).searchParams.get('payment_intent')).toBe(tradeNo);
    const create = lastSeen((r) => r.method === 'POST' && r.url.endsWith('/v1/refunds'));
    expect(create.headers['idempotency-key']).toBe('payflow-refund-rf-ord_r_1-pi');
    const body = form(create.body);
    expect([
      body.get('payment_intent'),
      body.get('amount'),
      body.get('metadata[out_refund_no]'),
      body.get('metadata[out_trade_no]'),
    ]).toEqual([tradeNo, '100', 'rf-ord_r_1-pi', 'ord_r_1']);
  });

  test('billRows asks for the UTC day of balance transactions with the intents expanded', async () => {
    await collect(provider().billRows('2024-01-01'));
    const request = lastSeen((r) => r.url.includes('/v1/balance_transactions'));
    const params = new URL(request.url).searchParams;
    expect(params.get('created[gte]')).toBe(String(Date.UTC(2024, 0, 1) / 1000));
    expect(params.get('created[lt]')).toBe(String(Date.UTC(2024, 0, 2) / 1000));
    expect([...params].filter(([k]) => /^expand\[\d*\]$/.test(k)).map(([, v]) => v)).toEqual([
      'data.source.payment_intent',
    ]);
  });
});

describe("Stripe adapter decisions on Stripe's answers", () => {
  const intents = new Map<string, Record<string, unknown>>();
  const refunds: Array<Record<string, unknown>> = [];
  let fake: Awaited<ReturnType<typeof startFakeServer>>;

  beforeAll(async () => {
    fake = await startFakeServer((req) => {
      const url = new URL(req.url, 'http://x');
      const json = (body: unknown, status = 200) => ({
        status,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      let m: RegExpExecArray | null;
      if (req.method === 'GET' && (m = /^\/v1\/payment_intents\/(pi_\w+)$/.exec(url.pathname))) {
        const pi = intents.get(m[1]!);
        return pi
          ? json(pi)
          : json(
              { error: { type: 'invalid_request_error', code: 'resource_missing', message: 'No such payment_intent' } },
              404,
            );
      }
      if (req.method === 'GET' && url.pathname === '/v1/refunds')
        return json({ object: 'list', url: '/v1/refunds', has_more: false, data: refunds });
      if (req.method === 'POST' && url.pathname === '/v1/refunds' && req.body.includes('rf-ord_pi_busy'))
        return json(
          {
            error: {
              type: 'idempotency_error',
              message:
                'There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through). Please try again later.',
            },
          },
          409,
        );
      if (req.method === 'POST' && url.pathname === '/v1/refunds')
        return json({ error: { type: 'invalid_request_error', message: 'this test expects no new refund' } }, 400);
      return json({ error: { type: 'invalid_request_error', message: `unexpected ${req.method} ${req.url}` } }, 400);
    });
  });

  afterAll(async () => {
    await fake?.close();
  });

  const intent = (id: string, status: string, extra: Record<string, unknown> = {}) => ({
    id,
    object: 'payment_intent',
    amount: 2500,
    amount_received: status === 'succeeded' ? 2500 : 0,
    currency: 'cny',
    status,
    created: 1704103200,
    metadata: { out_trade_no: `ord_${id}` },
    ...extra,
  });
  const provider = () =>
    createStripeProvider({
      ...config({ apiBase: fake.url }),
      findPaymentIntentId: async (order) => (order.startsWith('ord_pi_') ? order.slice(4) : undefined),
    });

  test('a succeeded intent is PAID, and one whose charge is refunded in full is REFUNDED', async () => {
    intents.set(
      'pi_paid1',
      intent('pi_paid1', 'succeeded', {
        latest_charge: {
          id: 'ch_1',
          object: 'charge',
          amount: 2500,
          amount_refunded: 0,
          currency: 'cny',
          created: 1704103205,
        },
      }),
    );
    intents.set(
      'pi_refd1',
      intent('pi_refd1', 'succeeded', {
        latest_charge: {
          id: 'ch_2',
          object: 'charge',
          amount: 2500,
          amount_refunded: 2500,
          currency: 'cny',
          created: 1704103205,
        },
      }),
    );
    expect(await provider().queryPayment('ord_pi_paid1')).toEqual({
      outTradeNo: 'ord_pi_paid1',
      status: 'PAID',
      tradeNo: 'pi_paid1',
      paidAmount: 2500,
      currency: 'CNY',
      merchantId: 'stripe-test',
      paidAt: '2024-01-01T10:00:05.000Z',
    });
    expect(await provider().queryPayment('ord_pi_refd1')).toMatchObject({
      status: 'REFUNDED',
      paidAmount: 2500,
      refundedAmount: 2500,
    });
  });

  test('closing a succeeded intent reports ALREADY_PAID instead of cancelling it', async () => {
    intents.set('pi_paid2', intent('pi_paid2', 'succeeded'));
    expect(await provider().closePayment('ord_pi_paid2')).toEqual({ result: 'ALREADY_PAID' });
    expect(fake.requests.some((r) => r.url.includes('/cancel'))).toBe(false);
  });

  test('an intent whose metadata names another order is never acted on', async () => {
    intents.set('pi_other', intent('pi_other', 'succeeded', { metadata: { out_trade_no: 'ord_someone_else' } }));
    await expect(provider().queryPayment('ord_pi_other')).rejects.toMatchObject({ code: 'PAYMENT_INTENT_MISMATCH' });
  });

  test('a refund retried after the 24 h idempotency window finds the first refund by our refund number', async () => {
    intents.set('pi_paid3', intent('pi_paid3', 'succeeded'));
    refunds.push({
      id: 're_first',
      object: 'refund',
      amount: 2500,
      currency: 'cny',
      status: 'succeeded',
      created: 1704106800,
      metadata: { out_refund_no: 'rf-ord_pi_paid3-1' },
      payment_intent: 'pi_paid3',
    });
    expect(
      await provider().refund({ outTradeNo: 'ord_pi_paid3', outRefundNo: 'rf-ord_pi_paid3-1', amount: 2500 }),
    ).toEqual({ refundNo: 're_first', amount: 2500, refundedAt: '2024-01-01T11:00:00.000Z' });
    expect(fake.requests.filter((r) => r.method === 'POST' && r.url.startsWith('/v1/refunds'))).toHaveLength(0);
  });

  test("a refund whose Idempotency-Key is still in use by an earlier attempt (409) is retryable, not the provider's refusal", async () => {
    // An attempt of the refund step that outlived its timeout is still executing at Stripe: the next attempt, with the
    // same key, is answered 409. Taken as a refusal, the step failed for good and the order went to review while its
    // refund went through.
    intents.set('pi_busy', intent('pi_busy', 'succeeded'));
    const attempt = provider().refund({ outTradeNo: 'ord_pi_busy', outRefundNo: 'rf-ord_pi_busy-1', amount: 2500 });
    await expect(attempt).rejects.toBeInstanceOf(ProviderUnavailableError);
    await expect(attempt).rejects.not.toBeInstanceOf(ProviderBusinessError);
    // Every attempt carried the refund's one Idempotency-Key: retrying it can never refund twice.
    const posts = fake.requests.filter(
      (r) => r.method === 'POST' && r.url.startsWith('/v1/refunds') && r.body.includes('rf-ord_pi_busy'),
    );
    for (const p of posts) expect(p.headers['idempotency-key']).toBe('payflow-refund-rf-ord_pi_busy-1');
    // One request per attempt: the retries are the activity's. The SDK retried this three times with its backoff
    // (and up to 45 s for three timeouts), so an attempt outlived the activity's 15 s and overlapped the next.
    expect(posts).toHaveLength(1);
  });
});

describe('Stripe balance transactions as a bill', () => {
  test('charges and refunds become bill rows in presentment currency and minor units, across pages; other types are skipped', async () => {
    const charge = (id: string, pi: string, order: string, amount: number, currency: string) => ({
      id: `txn_${id}`,
      object: 'balance_transaction',
      type: 'charge',
      created: 1704103205,
      currency: 'usd',
      amount: 999,
      source: {
        id: `ch_${id}`,
        object: 'charge',
        amount,
        currency,
        metadata: {},
        payment_intent: { id: pi, object: 'payment_intent', metadata: { out_trade_no: order } },
      },
    });
    const pages = [
      {
        object: 'list',
        url: '/v1/balance_transactions',
        has_more: true,
        data: [
          charge('1', 'pi_1', 'ord_b1', 1234, 'cny'),
          {
            id: 'txn_po',
            object: 'balance_transaction',
            type: 'payout',
            created: 1704103300,
            currency: 'usd',
            amount: -5000,
            source: { id: 'po_1', object: 'payout' },
          },
        ],
      },
      {
        object: 'list',
        url: '/v1/balance_transactions',
        has_more: false,
        data: [
          charge('2', 'pi_2', 'ord_b2', 980, 'jpy'),
          {
            id: 'txn_3',
            object: 'balance_transaction',
            type: 'refund',
            created: 1704123000,
            currency: 'usd',
            amount: -70,
            source: {
              id: 're_1',
              object: 'refund',
              amount: 500,
              currency: 'cny',
              metadata: { out_refund_no: 'rf-ord_b1-1', out_trade_no: 'ord_b1' },
              payment_intent: { id: 'pi_1', object: 'payment_intent', metadata: { out_trade_no: 'ord_b1' } },
            },
          },
        ],
      },
    ];
    // The second page fails once (a 500): it is asked for again where it failed, not the bill from its first page.
    let secondPageFailures = 1;
    const fake = await startFakeServer((req) => {
      const after = new URL(req.url, 'http://x').searchParams.get('starting_after');
      if (after === 'txn_po' && secondPageFailures-- > 0)
        return {
          status: 500,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ error: { type: 'api_error', message: 'try again' } }),
        };
      return {
        status: 200,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(after === 'txn_po' ? pages[1] : pages[0]),
      };
    });
    try {
      const rows = await collect(createStripeProvider(config({ apiBase: fake.url })).billRows('2024-01-01'));
      expect(rows).toEqual([
        {
          kind: 'PAYMENT',
          outTradeNo: 'ord_b1',
          tradeNo: 'pi_1',
          amount: 1234,
          currency: 'CNY',
          at: '2024-01-01T10:00:05.000Z',
        },
        {
          kind: 'PAYMENT',
          outTradeNo: 'ord_b2',
          tradeNo: 'pi_2',
          amount: 980,
          currency: 'JPY',
          at: '2024-01-01T10:00:05.000Z',
        },
        {
          kind: 'REFUND',
          outTradeNo: 'ord_b1',
          tradeNo: 'pi_1',
          outRefundNo: 'rf-ord_b1-1',
          amount: 500,
          currency: 'CNY',
          at: '2024-01-01T15:30:00.000Z',
        },
      ]);
      // The failed second page, asked for again from where it failed.
      expect(fake.requests.map((r) => new URL(r.url, 'http://x').searchParams.get('starting_after'))).toEqual([
        null,
        'txn_po',
        'txn_po',
      ]);
    } finally {
      await fake.close();
    }
  });
});

test("a bank debit's line still pending (or failed) at the bill carries the charge's status; a succeeded charge's does not", async () => {
  const line = (id: string, type: string, status: string) => ({
    id: `txn_${id}`,
    object: 'balance_transaction',
    type,
    created: 1704103205,
    currency: 'usd',
    amount: 1000,
    source: {
      id: `py_${id}`,
      object: 'charge',
      amount: 1000,
      currency: 'usd',
      status,
      metadata: {},
      payment_intent: { id: `pi_${id}`, object: 'payment_intent', metadata: { out_trade_no: `ord_${id}` } },
    },
  });
  const fake = await startFakeServer(() => ({
    status: 200,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      object: 'list',
      url: '/v1/balance_transactions',
      has_more: false,
      data: [
        line('ach', 'payment', 'pending'),
        line('card', 'charge', 'succeeded'),
        line('bounced', 'payment', 'failed'),
      ],
    }),
  }));
  try {
    const rows = await collect(createStripeProvider(config({ apiBase: fake.url })).billRows('2024-01-01'));
    expect(rows.map((r) => [r.outTradeNo, r.kind, r.providerStatus])).toEqual([
      ['ord_ach', 'PAYMENT', 'pending'],
      ['ord_card', 'PAYMENT', undefined],
      ['ord_bounced', 'PAYMENT', 'failed'],
    ]);
  } finally {
    await fake.close();
  }
});

describe('Stripe refunds that fail after they were made', () => {
  test('a refund_failure balance transaction is a bill row of its own, FAILED, and the refund line tells its status', async () => {
    const intent = { id: 'pi_9', object: 'payment_intent', metadata: { out_trade_no: 'ord_b9' } };
    // The refund as Stripe shows it once the card network returned it: status failed, with the failure's txn.
    const failedRefund = {
      id: 're_9',
      object: 'refund',
      amount: 500,
      currency: 'cny',
      status: 'failed',
      failure_reason: 'expired_or_canceled_card',
      failure_balance_transaction: 'txn_9f',
      balance_transaction: 'txn_9r',
      charge: 'ch_9',
      metadata: { out_refund_no: 'rf-ord_b9-1', out_trade_no: 'ord_b9' },
      payment_intent: intent,
    };
    const page = {
      object: 'list',
      url: '/v1/balance_transactions',
      has_more: false,
      data: [
        {
          id: 'txn_9r',
          object: 'balance_transaction',
          type: 'refund',
          created: 1704103205,
          currency: 'usd',
          amount: -70,
          source: failedRefund,
        },
        {
          id: 'txn_9f',
          object: 'balance_transaction',
          type: 'refund_failure',
          created: 1704123000,
          currency: 'usd',
          amount: 70,
          source: failedRefund,
        },
      ],
    };
    const fake = await startFakeServer(() => ({
      status: 200,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(page),
    }));
    try {
      const rows = await collect(createStripeProvider(config({ apiBase: fake.url })).billRows('2024-01-01'));
      const common = {
        kind: 'REFUND',
        outTradeNo: 'ord_b9',
        tradeNo: 'pi_9',
        outRefundNo: 'rf-ord_b9-1',
        amount: 500,
        currency: 'CNY',
        refundStatus: 'FAILED',
      };
      expect(rows).toEqual([
        { ...common, at: '2024-01-01T10:00:05.000Z', providerStatus: 'failed' },
        { ...common, at: '2024-01-01T15:30:00.000Z', providerStatus: 'refund_failure', refundFailureLine: true },
      ]);
    } finally {
      await fake.close();
    }
  });
});

describe('Stripe disputes (chargebacks) in the bill', () => {
  /** A Dispute as the balance transaction's expanded source shows it, with its PaymentIntent expanded. */
  const dispute = (overrides: Record<string, unknown> = {}) => ({
    id: 'dp_1',
    object: 'dispute',
    amount: 1234,
    currency: 'cny',
    status: 'needs_response',
    reason: 'fraudulent',
    charge: 'ch_d1',
    payment_intent: { id: 'pi_d1', object: 'payment_intent', metadata: { out_trade_no: 'ord_d1' } },
    metadata: {},
    is_charge_refundable: false,
    ...overrides,
  });
  /** A balance transaction of a dispute: negative when the money is withdrawn, positive when it is reinstated. */
  const line = (id: string, amount: number, source: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
    id,
    object: 'balance_transaction',
    type: 'adjustment',
    reporting_category: amount < 0 ? 'dispute' : 'dispute_reversal',
    created: 1704103205,
    currency: 'usd',
    amount,
    fee: amount < 0 ? 1500 : 0,
    net: amount < 0 ? amount - 1500 : amount,
    source,
    ...extra,
  });

  async function billOf(data: unknown[]) {
    const fake = await startFakeServer(() => ({
      status: 200,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ object: 'list', url: '/v1/balance_transactions', has_more: false, data }),
    }));
    try {
      return await collect(createStripeProvider(config({ apiBase: fake.url })).billRows('2024-01-01'));
    } finally {
      await fake.close();
    }
  }

  test('a withdrawal and a reinstatement are bill rows of their own, linked to the order through the intent, in presentment minor units', async () => {
    const rows = await billOf([
      {
        id: 'txn_c1',
        object: 'balance_transaction',
        type: 'charge',
        created: 1704090000,
        currency: 'usd',
        amount: 172,
        source: {
          id: 'ch_d1',
          object: 'charge',
          amount: 1234,
          currency: 'cny',
          metadata: {},
          payment_intent: { id: 'pi_d1', object: 'payment_intent', metadata: { out_trade_no: 'ord_d1' } },
        },
      },
      line('txn_dw1', -172, dispute()),
      line(
        'txn_dr0',
        172,
        dispute({
          id: 'dp_0',
          status: 'won',
          charge: 'ch_d0',
          payment_intent: { id: 'pi_d0', object: 'payment_intent', metadata: { out_trade_no: 'ord_d0' } },
        }),
        { created: 1704123000 },
      ),
      // Not a dispute: an adjustment of another kind, and an Issuing dispute (of a card we issued) stay out of the bill.
      line('txn_adj', -50, { id: 'tr_1', object: 'transfer', amount: 50, currency: 'usd' }),
      {
        ...line('txn_idp', -100, { id: 'idp_1', object: 'issuing.dispute', amount: 100, currency: 'usd' }),
        type: 'issuing_dispute',
      },
    ]);
    expect(rows).toEqual([
      {
        kind: 'PAYMENT',
        outTradeNo: 'ord_d1',
        tradeNo: 'pi_d1',
        amount: 1234,
        currency: 'CNY',
        at: '2024-01-01T06:20:00.000Z',
      },
      {
        kind: 'DISPUTE',
        outTradeNo: 'ord_d1',
        tradeNo: 'pi_d1',
        disputeId: 'dp_1',
        disputeFunds: 'WITHDRAWN',
        amount: 1234,
        currency: 'CNY',
        at: '2024-01-01T10:00:05.000Z',
        providerStatus: 'needs_response',
      },
      {
        kind: 'DISPUTE',
        outTradeNo: 'ord_d0',
        tradeNo: 'pi_d0',
        disputeId: 'dp_0',
        disputeFunds: 'REINSTATED',
        amount: 1234,
        currency: 'CNY',
        at: '2024-01-01T15:30:00.000Z',
        providerStatus: 'won',
      },
    ]);
  });

  test("a dispute line of type dispute (older API versions) counts too, and without an expanded intent the charge's intent names the order", async () => {
    const rows = await billOf([
      line(
        'txn_dw2',
        -980,
        dispute({
          id: 'dp_2',
          amount: 980,
          currency: 'jpy',
          status: 'lost',
          payment_intent: null,
          charge: {
            id: 'ch_d2',
            object: 'charge',
            metadata: {},
            payment_intent: { id: 'pi_d2', object: 'payment_intent', metadata: { out_trade_no: 'ord_d2' } },
          },
        }),
        { type: 'dispute' },
      ),
    ]);
    expect(rows).toEqual([
      {
        kind: 'DISPUTE',
        outTradeNo: 'ord_d2',
        tradeNo: 'pi_d2',
        disputeId: 'dp_2',
        disputeFunds: 'WITHDRAWN',
        amount: 980,
        currency: 'JPY',
        at: '2024-01-01T10:00:05.000Z',
        providerStatus: 'lost',
      },
    ]);
  });

  test('a dispute of a charge we cannot link to an order is still a row, never dropped', async () => {
    const rows = await billOf([line('txn_dw3', -500, dispute({ id: 'dp_3', payment_intent: null, charge: 'ch_x' }))]);
    expect(rows).toMatchObject([
      { kind: 'DISPUTE', outTradeNo: '', tradeNo: 'ch_x', disputeId: 'dp_3', disputeFunds: 'WITHDRAWN', amount: 1234 },
    ]);
  });
});

describe('a Stripe order end to end', () => {
  let mock: StripeMock;
  let sys: TestSystem;

  beforeAll(async () => {
    mock = await startStripeMock();
    sys = await startSystem({
      STRIPE_SECRET_KEY: SECRET_KEY,
      STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
      STRIPE_PAYMENT_PAGE_URL: 'https://shop.example.com/pay',
      STRIPE_API_BASE: mock.url,
    });
  }, 300_000);

  afterAll(async () => {
    await sys?.stop();
    await mock?.stop();
  });

  async function postWebhook(payload: string, signature: string) {
    const response = await fetch(`${sys.apiUrl}/callbacks/stripe`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'stripe-signature': signature },
      body: payload,
    });
    return { status: response.status, body: await response.text() };
  }

  async function stripeOrder(price: number) {
    const sku = await createProduct(sys, { price, stock: 3 });
    const created = await sys.http('POST', '/orders', {
      userId: userId(),
      items: [{ sku, quantity: 1 }],
      provider: 'stripe',
    });
    expect(created.status).toBe(201);
    const order = (await sys.http('GET', `/orders/${created.body.orderId}`)).body;
    return { created: created.body, intentId: order.payment.tradeNo as string };
  }

  test('a payment_intent.succeeded webhook signed by the SDK is accepted by POST /callbacks/stripe and the order reaches PAID', async () => {
    const { created, intentId } = await stripeOrder(2500);
    expect(created.payment.provider).toBe('stripe');
    expect(intentId).toMatch(/^pi_/);
    expect(created.payment.paymentUrl).toContain(`payment_intent=${intentId}`);
    const payload = succeededEvent({
      id: intentId,
      amount: 2500,
      amount_received: 2500,
      currency: 'cny',
      metadata: { out_trade_no: created.orderId },
    });
    const answer = await postWebhook(payload, header(payload));
    expect(answer).toEqual({ status: 200, body: '{"received":true}' });
    const order = await waitForStatus(sys, created.orderId, ['PAID']);
    expect(order.payment).toMatchObject({ provider: 'stripe', status: 'PAID', tradeNo: intentId, paidAmount: 2500 });
    expect(order.timeline.map((e: { type: string }) => e.type)).toContain('ORDER_PAID');
  });

  test('a webhook signed with another secret is refused with 401 and the order stays unpaid', async () => {
    const { created, intentId } = await stripeOrder(700);
    const payload = succeededEvent({
      id: intentId,
      amount: 700,
      amount_received: 700,
      metadata: { out_trade_no: created.orderId },
    });
    const answer = await postWebhook(payload, header(payload, { secret: 'whsec_forgedForged0123456789' }));
    expect(answer.status).toBe(401);
    expect((await sys.http('GET', `/orders/${created.orderId}`)).body.status).toBe('AWAITING_PAYMENT');
    expect(await sys.db('notification_inbox').where({ out_trade_no: created.orderId })).toHaveLength(0);
  });

  test('a verified succeeded event that names no order of ours (a Dashboard charge, an id too long to be ours) is acknowledged and stored nowhere', async () => {
    // Stripe sends every event of the account to the endpoint. Answered 400 (no out_trade_no) or 500 (an id longer
    // than the inbox column), it was redelivered for three days.
    for (const metadata of [{}, { out_trade_no: `ord_${'x'.repeat(100)}` }, { out_trade_no: 'ord 1; drop' }]) {
      const payload = succeededEvent({ id: `pi_foreign${randomBytes(3).toString('hex')}`, metadata });
      const answer = await postWebhook(payload, header(payload));
      expect(answer).toEqual({ status: 200, body: '{"received":true}' });
      expect(await sys.db('notification_inbox').where({ notification_id: JSON.parse(payload).id })).toHaveLength(0);
    }
  });

  test('an order for a provider this deployment has not configured answers 422 PROVIDER_NOT_AVAILABLE', async () => {
    const sku = await createProduct(sys, { price: 100, stock: 1 });
    const r = await sys.http('POST', '/orders', {
      userId: userId(),
      items: [{ sku, quantity: 1 }],
      provider: 'alipay',
    });
    expect(r.status).toBe(422);
    expect(r.body).toMatchObject({ error: 'PROVIDER_NOT_AVAILABLE', provider: 'alipay' });
    expect(r.body.available).toEqual(expect.arrayContaining(['sandbox', 'stripe']));
  });
});
