/**
 * Property-based fuzzing of every HTTP input (fast-check): order bodies, callback bodies and headers of every provider,
 * admin bodies, path parameters. Properties: never a 5xx, always the documented error shape on 4xx, and never a
 * state change from a rejected input.
 *
 * Callbacks run against a system with all four providers configured (keys generated per run): the sandbox, Alipay,
 * WeChat Pay and Stripe, each with a real unpaid order of its own. For each provider: random bodies and signature
 * headers; correctly signed but malformed bodies; forged notifications for its real orders (another key or secret,
 * missing, garbled or mismatched signature headers, bodies and headers tampered with after signing, timestamps
 * outside the window where the provider signs one, another merchant / app / account, another provider's body); the
 * same notification delivered many times (stored once, `deliveries` counting, the order paid once) and replayed
 * outside the timestamp window; and notifications correctly signed by each provider for the orders of each other
 * one (409 PROVIDER_MISMATCH, audited). FUZZ_RUNS scales it (the default keeps `npm test` quick).
 */
import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { orderWorkflowId } from '../src/contracts/order';
import { signSandboxPayload } from '../src/providers/sandbox-signature';
import { freshDatabase } from './support/env';
import {
  ACK,
  ALIPAY_CONTENT_TYPE,
  type Delivery,
  type NotifiedOrder,
  PROVIDER_NAMES,
  type ProviderName,
  type ProviderSecrets,
  SIGNATURE_HEADER,
  alipayFields,
  alipayForm,
  alipaySign,
  createProviderKeys,
  freshIds,
  genuineDelivery,
  sandboxBody,
  sandboxHeaders,
  signedAt,
  startFakeProviderApi,
  stripeEvent,
  stripeSignature,
  wechatBody,
  wechatEncrypt,
  wechatHeaders,
} from './support/provider-notifications';
import { createProduct, startSystem, type TestSystem, userId, waitFor, waitForStatus } from './support/system';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
/**
 * Forged notifications per provider, cross-provider notifications per signing provider, replayed orders per provider.
 */
const FORGED_RUNS = Math.ceil(RUNS / 2);
const CROSS_RUNS = Math.ceil(RUNS / 4);
const REPLAY_RUNS = Math.max(3, Math.ceil(RUNS / 100));
// Replaying a reported failure: FUZZ_SEED=<seed> FUZZ_PATH=<path> with -t naming the one test.
if (process.env.FUZZ_SEED)
  fc.configureGlobal({
    seed: Number(process.env.FUZZ_SEED),
    ...(process.env.FUZZ_PATH ? { path: process.env.FUZZ_PATH } : {}),
    endOnFailure: true,
  });
// Each property sends RUNS requests (plus state checks); allow for that on a busy 2-core machine.
jest.setTimeout(60_000 + RUNS * 150);
let sys: TestSystem;
let sku: string;
let totalRequests = 0;

const keys = createProviderKeys();
let secrets: ProviderSecrets;
let fakeApi: Awaited<ReturnType<typeof startFakeProviderApi>>;
/**
 * Two real unpaid orders per provider: one plain id, one made from an Idempotency-Key (ord_k..., WeChat's K... form).
 */
const orders = {} as Record<ProviderName, NotifiedOrder[]>;
/** Every order this suite placed: their workflows wait on providers that do not exist and are ended in afterAll. */
const placed: string[] = [];

beforeAll(async () => {
  fakeApi = await startFakeProviderApi(keys.secrets);
  // A database of its own: the no-state-change check fingerprints whole tables, which parallel suites would touch.
  sys = await startSystem({
    DATABASE_URL: await freshDatabase('fuzz'),
    ...keys.env(fakeApi.url),
    // No provider query, close or expiry during the run: the fake API only creates payments.
    QUERY_FIRST_DELAY: '10m',
    QUERY_MAX_INTERVAL: '10m',
    PAYMENT_TIMEOUT: '15m',
  });
  secrets = {
    ...keys.secrets,
    sandbox: { secret: sys.config.sandboxSecret, merchantId: sys.config.sandboxMerchantId },
  };
  sku = await createProduct(sys, { stock: 1000 });
  for (const provider of PROVIDER_NAMES)
    orders[provider] = [await placeOrder(provider, false), await placeOrder(provider, true)];
}, 60_000);

afterAll(async () => {
  console.log(`fuzz: ${totalRequests} requests sent, ${placed.length} orders placed`);
  // Paid orders' workflows have completed; the others would wait 15 minutes on providers that do not exist.
  await Promise.all(
    placed.map((id) =>
      sys?.client.workflow
        .getHandle(orderWorkflowId(id))
        .terminate('fuzz suite over')
        .catch(() => undefined),
    ),
  );
  await sys?.stop();
  await fakeApi?.close();
});

/**
 * Places a one-unit order paying with `provider` (the real API and workflow; WeChat and Stripe create at the fake API).
 */
async function placeOrder(provider: ProviderName, keyed: boolean): Promise<NotifiedOrder> {
  const r = await sys.http(
    'POST',
    '/orders',
    { userId: userId(), items: [{ sku, quantity: 1 }], provider },
    keyed ? { 'idempotency-key': `fuzz-${randomBytes(8).toString('hex')}` } : {},
  );
  if (r.status !== 201) throw new Error(`placing a ${provider} order failed: ${r.status} ${JSON.stringify(r.body)}`);
  placed.push(r.body.orderId);
  const payment = (await sys.db('payments').where({ out_trade_no: r.body.orderId }).first('trade_no')) as {
    trade_no: string | null;
  };
  return {
    orderId: r.body.orderId,
    amount: r.body.amount,
    currency: r.body.currency,
    ...(provider === 'stripe' ? { tradeNo: payment.trade_no ?? undefined } : {}),
  };
}

/**
 * A fingerprint of every table a rejected request must not touch: row counts, order and payment statuses, inbox
 * deliveries, stock.
 */
async function stateFingerprint(): Promise<string> {
  // Redeliveries acknowledged from memory are counted into `deliveries` a moment later: added now, so that only the
  // request under test can move the count.
  await sys.api.inbox.flushDeliveries();
  const counts = [
    'orders',
    'order_lines',
    'order_events',
    'stock',
    'products',
    'notification_inbox',
    'tcc_fence',
    'payments',
    'refunds',
  ].map((t) => `(SELECT COUNT(*) FROM \`${t}\`) AS \`${t}\``);
  const statuses = (t: string) =>
    `(SELECT GROUP_CONCAT(s, '=', n ORDER BY s) FROM (SELECT status AS s, COUNT(*) AS n FROM \`${t}\` GROUP BY status) AS g) AS \`${t}_statuses\``;
  // One round trip for the counts (this runs twice per fuzzed request), one for the stock rows.
  const [[summary], stock] = await Promise.all([
    sys.db.raw<[unknown[]]>(
      `SELECT ${counts.join(', ')}, ${statuses('orders')}, ${statuses('payments')}, (SELECT COALESCE(SUM(deliveries), 0) FROM notification_inbox) AS deliveries`,
    ),
    sys.db('stock').orderBy('sku').select('sku', 'available', 'reserved', 'sold'),
  ]);
  return createHash('sha256')
    .update(JSON.stringify([summary, stock]))
    .digest('hex');
}

async function send(
  method: string,
  path: string,
  body: string | Buffer | undefined,
  headers: Record<string, string>,
): Promise<{ status: number; text: string }> {
  totalRequests++;
  const response = await fetch(`${sys.apiUrl}${path}`, {
    method,
    headers,
    body: typeof body === 'string' || body === undefined ? body : new Uint8Array(body),
  });
  return { status: response.status, text: await response.text() };
}

const deliver = (d: Delivery) => send('POST', `/callbacks/${d.provider}`, d.body, d.headers);

function expectErrorShape(r: { status: number; text: string }) {
  expect(r.status).toBeGreaterThanOrEqual(400);
  expect(r.status).toBeLessThan(500);
  const body = JSON.parse(r.text) as { error?: unknown; message?: unknown };
  expect(typeof body.error).toBe('string');
  expect(typeof body.message).toBe('string');
}

const SIGNATURE_CODES = ['MISSING_SIGNATURE', 'MALFORMED_SIGNATURE', 'BAD_SIGNATURE'];
/** The callback route's status for each refusal reason. */
const statusOf = (reason: string) =>
  SIGNATURE_CODES.includes(reason) || reason === 'STALE_TIMESTAMP' ? 401 : reason === 'PROVIDER_MISMATCH' ? 409 : 400;

async function lastRejectionId(): Promise<number> {
  const [row] = (await sys.db('notification_rejections').max({ id: 'id' })) as [{ id: number | null }];
  return Number(row.id ?? 0);
}

/**
 * Delivers `d` and expects it refused: 4xx with the API's error shape, the status of its reason, the reason among
 * `reasons`, one audit row for it (provider, reason, body hash), and no state change.
 */
async function expectRefused(d: Delivery, reasons: readonly string[]): Promise<{ error: string; message: string }> {
  const before = await stateFingerprint();
  const audited = await lastRejectionId();
  const r = await deliver(d);
  expect(r.status).toBeLessThan(500);
  expectErrorShape(r);
  const body = JSON.parse(r.text) as { error: string; message: string };
  expect(reasons).toContain(body.error);
  expect(r.status).toBe(statusOf(body.error));
  const rows = await sys
    .db('notification_rejections')
    .where('id', '>', audited)
    .select('provider', 'reason', 'body_sha256', 'body_length');
  expect(rows).toEqual([
    {
      provider: d.provider,
      reason: body.error,
      body_sha256: createHash('sha256').update(d.body).digest('hex'),
      body_length: d.body.length,
    },
  ]);
  expect(await stateFingerprint()).toBe(before);
  return body;
}

/** Printable ASCII only: what an HTTP client can put in a header value. */
const headerSafe = (s: string) => s.replace(/[^\x21-\x7e]/g, '');

/** The body with one byte changed (to a different value). */
function flipByte(body: Buffer, pos: number, by: number): Buffer {
  const copy = Buffer.from(body);
  const i = pos % copy.length;
  copy[i] = (copy[i]! + by) % 256;
  return copy;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

const jsonish = fc.oneof(
  fc.json(),
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc
    .record(
      {
        userId: fc.oneof(fc.string(), fc.integer(), fc.constant(null)),
        items: fc.oneof(
          fc.array(
            fc.record(
              {
                sku: fc.oneof(fc.string(), fc.constant('no-such-sku-fuzz')),
                quantity: fc.oneof(fc.integer(), fc.double(), fc.string()),
              },
              { requiredKeys: [] },
            ),
            { maxLength: 5 },
          ),
          fc.anything(),
        ),
        provider: fc.oneof(fc.string(), fc.constant('sandbox')),
        price: fc.integer(),
      },
      { requiredKeys: [] },
    )
    .map((v) => JSON.stringify(v)),
);

test('fuzzed order bodies never cause a 5xx or a state change', async () => {
  await fc.assert(
    fc.asyncProperty(
      jsonish,
      fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded'),
      async (body, contentType) => {
        const before = await stateFingerprint();
        const r = await send('POST', '/orders', body, { 'content-type': contentType });
        expect(r.status).toBeLessThan(500);
        if (r.status >= 400) expectErrorShape(r);
        expect(r.status).not.toBe(201); // no fuzzed body names a real SKU
        expect(await stateFingerprint()).toBe(before);
      },
    ),
    { numRuns: RUNS },
  );
});

/**
 * Random signature headers for a provider's callback, given the raw body (some correctly signed but stale or by a
 * stranger).
 */
function randomHeaders(provider: ProviderName): fc.Arbitrary<(raw: string) => Record<string, string>> {
  const hex = fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), maxLength: 70 });
  const signatureish = fc.oneof(
    fc.string({ maxLength: 200 }),
    fc.tuple(fc.integer({ min: 0, max: 2 ** 40 }), hex).map(([t, h]) => `t=${t},v1=${h}`),
    fc.constant(undefined),
  );
  const stale = Math.floor(Date.now() / 1000) - 10_000;
  const one = (name: string) => signatureish.map((sig) => () => (sig === undefined ? {} : { [name]: headerSafe(sig) }));
  switch (provider) {
    case 'sandbox':
      return fc.oneof(
        one('sandbox-signature'),
        fc.constant((raw: string) => ({ 'sandbox-signature': signSandboxPayload(secrets.sandbox.secret, raw, stale) })),
      );
    case 'stripe':
      return fc.oneof(
        one('stripe-signature'),
        fc.constant((raw: string) => ({
          'stripe-signature': stripeSignature(raw, { secret: secrets.stripe.webhookSecret, at: stale }),
        })),
      );
    case 'wechat':
      return fc.oneof(
        fc
          .record(
            {
              'wechatpay-timestamp': fc.oneof(
                fc.string({ maxLength: 20 }),
                fc.integer({ min: 0, max: 2 ** 40 }).map(String),
              ),
              'wechatpay-nonce': fc.string({ maxLength: 40 }),
              'wechatpay-signature': fc.oneof(fc.string({ maxLength: 200 }), fc.base64String({ maxLength: 344 })),
              'wechatpay-serial': fc.oneof(fc.string({ maxLength: 64 }), fc.constant(secrets.wechat.platformSerial)),
              'wechatpay-signature-type': fc.oneof(
                fc.string({ maxLength: 40 }),
                fc.constant('WECHATPAY2-SHA256-RSA2048'),
              ),
            },
            { requiredKeys: [] },
          )
          .map((h) => () => Object.fromEntries(Object.entries(h).map(([name, value]) => [name, headerSafe(value)]))),
        fc.constantFrom('stale', 'stranger').map(
          (how) => (raw: string) =>
            wechatHeaders(raw, {
              at: how === 'stale' ? stale : Math.floor(Date.now() / 1000),
              key: how === 'stale' ? secrets.wechat.platformPrivateKey : keys.stranger,
              serial: secrets.wechat.platformSerial,
            }),
        ),
      );
    case 'alipay':
      return fc.constant(() => ({})); // Alipay signs inside the form body
  }
}

/** Alipay's notification field names, for forms that look like its notifications. */
const ALIPAY_FIELDS = [
  'notify_id',
  'notify_time',
  'notify_type',
  'app_id',
  'seller_id',
  'out_trade_no',
  'trade_no',
  'trade_status',
  'total_amount',
  'receipt_amount',
  'refund_fee',
  'gmt_payment',
  'charset',
  'sign',
  'sign_type',
];

/** Random bodies shaped like each provider's notifications (beside the generic ones). */
function providerShapedBody(provider: ProviderName): fc.Arbitrary<string> {
  const realOrder = fc.constantFrom(...PROVIDER_NAMES.flatMap((p) => orders[p].map((o) => o.orderId)));
  switch (provider) {
    case 'sandbox':
      return fc.record({ id: fc.string(), type: fc.string(), data: fc.anything() }).map((v) => JSON.stringify(v));
    case 'alipay':
      return fc.oneof(
        fc
          .dictionary(
            fc.oneof(fc.constantFrom(...ALIPAY_FIELDS), fc.string({ maxLength: 12 })),
            fc.oneof(
              fc.string({ maxLength: 60 }),
              realOrder,
              fc.constantFrom(
                'RSA2',
                'TRADE_SUCCESS',
                'TRADE_CLOSED',
                '19.99',
                secrets.alipay.appId,
                secrets.alipay.sellerId,
                'gbk',
                'utf-8',
              ),
            ),
            { maxKeys: 20 },
          )
          .map((fields) => new URLSearchParams(fields).toString()),
        // Unencoded pairs: bad escapes, repeated keys, stray separators.
        fc
          .array(fc.tuple(fc.string({ maxLength: 12 }), fc.string({ maxLength: 30 })), { maxLength: 12 })
          .map((pairs) => pairs.map(([key, value]) => `${key}=${value}`).join('&')),
      );
    case 'wechat':
      return fc
        .record(
          {
            id: fc.string(),
            event_type: fc.oneof(
              fc.constantFrom('TRANSACTION.SUCCESS', 'REFUND.SUCCESS', 'TRANSACTION.CLOSED'),
              fc.string(),
            ),
            resource: fc.record(
              {
                algorithm: fc.oneof(fc.constant('AEAD_AES_256_GCM'), fc.string()),
                ciphertext: fc.base64String({ maxLength: 400 }),
                nonce: fc.string({ maxLength: 16 }),
                associated_data: fc.string({ maxLength: 16 }),
              },
              { requiredKeys: [] },
            ),
          },
          { requiredKeys: [] },
        )
        .map((v) => JSON.stringify(v));
    case 'stripe':
      return fc
        .record(
          {
            id: fc.string(),
            object: fc.constant('event'),
            type: fc.oneof(fc.constantFrom('payment_intent.succeeded', 'charge.refunded'), fc.string()),
            livemode: fc.boolean(),
            data: fc.record({
              object: fc.record(
                {
                  id: fc.string(),
                  object: fc.constant('payment_intent'),
                  amount_received: fc.integer(),
                  currency: fc.string(),
                  metadata: fc.record({ out_trade_no: realOrder }),
                },
                { requiredKeys: [] },
              ),
            }),
          },
          { requiredKeys: [] },
        )
        .map((v) => JSON.stringify(v));
  }
}

test.each(PROVIDER_NAMES)(
  'fuzzed %s callbacks (bodies, signatures, timestamps, encodings, sizes) are refused without state change',
  async (provider) => {
    // Bodies around the 64 KiB limit: fully random for the sandbox; for the others a random chunk repeated (generating
    // 60 000 random characters per run costs more than the request).
    const large =
      provider === 'sandbox'
        ? fc.string({ unit: 'binary', minLength: 60_000, maxLength: 65_000 })
        : fc
            .tuple(fc.string({ unit: 'binary', minLength: 1, maxLength: 64 }), fc.integer({ min: 60_000, max: 70_000 }))
            .map(([chunk, size]) => chunk.repeat(Math.ceil(size / chunk.length)).slice(0, size));
    const body = fc.oneof(jsonish, large, providerShapedBody(provider));
    await fc.assert(
      fc.asyncProperty(
        body,
        randomHeaders(provider),
        fc.constantFrom('application/json', 'application/x-www-form-urlencoded; charset=utf-8', 'text/plain'),
        async (raw, headers, contentType) => {
          const before = await stateFingerprint();
          const r = await send('POST', `/callbacks/${provider}`, raw, { 'content-type': contentType, ...headers(raw) });
          expect(r.status).toBeLessThan(500);
          expectErrorShape(r);
          expect(await stateFingerprint()).toBe(before);
        },
      ),
      { numRuns: provider === 'sandbox' ? RUNS : Math.ceil(RUNS / 2) },
    );
  },
);

/** A correctly signed delivery of an arbitrary body (for Alipay: arbitrary fields with a valid `sign`). */
function signedMalformed(provider: ProviderName): fc.Arbitrary<Delivery> {
  const now = () => Math.floor(Date.now() / 1000);
  const json = (raw: string, headers: (raw: string) => Record<string, string>): Delivery => ({
    provider,
    body: Buffer.from(raw),
    headers: { 'content-type': 'application/json', ...headers(raw) },
  });
  switch (provider) {
    case 'sandbox':
      return jsonish.map((raw) =>
        json(raw, (b) => ({ 'sandbox-signature': signSandboxPayload(secrets.sandbox.secret, b, now()) })),
      );
    case 'stripe':
      return jsonish.map((raw) =>
        json(raw, (b) => ({ 'stripe-signature': stripeSignature(b, { secret: secrets.stripe.webhookSecret }) })),
      );
    case 'wechat': {
      const sign = (b: string) =>
        wechatHeaders(b, { at: now(), key: secrets.wechat.platformPrivateKey, serial: secrets.wechat.platformSerial });
      // Random JSON, or a well-formed envelope whose resource decrypts (with our key) to something that is not a
      // transaction.
      const envelope = fc
        .tuple(fc.constantFrom('TRANSACTION.SUCCESS', 'REFUND.SUCCESS'), fc.jsonValue())
        .map(([eventType, plain]) =>
          JSON.stringify({
            id: `EV-${randomBytes(6).toString('hex')}`,
            event_type: eventType,
            resource: wechatEncrypt(plain, secrets.wechat.apiV3Key),
          }),
        );
      return fc.oneof(jsonish, envelope).map((raw) => json(raw, sign));
    }
    case 'alipay':
      // Random values only: trade_status then never names a real status, so no such form is a valid notification.
      return fc
        .dictionary(
          fc.oneof(
            fc.constantFrom(...ALIPAY_FIELDS.filter((f) => f !== 'sign' && f !== 'sign_type')),
            fc.string({ maxLength: 12 }),
          ),
          fc.string({ maxLength: 60 }),
          { maxKeys: 20 },
        )
        .map((fields) => {
          const { sign: _sign, sign_type: _signType, ...signed } = fields;
          return {
            provider,
            body: Buffer.from(alipayForm(signed, alipaySign(signed, secrets.alipay.alipayPrivateKey))),
            headers: { 'content-type': ALIPAY_CONTENT_TYPE },
          };
        });
  }
}

test.each(PROVIDER_NAMES)(
  'correctly signed but malformed %s notifications are refused without state change',
  async (provider) => {
    await fc.assert(
      fc.asyncProperty(signedMalformed(provider), async (d) => {
        const before = await stateFingerprint();
        const r = await deliver(d);
        expect(r.status).toBeLessThan(500);
        expectErrorShape(r);
        expect(await stateFingerprint()).toBe(before);
      }),
      { numRuns: provider === 'sandbox' ? RUNS : Math.ceil(RUNS / 2) },
    );
  },
);

/** Random knobs a forgery draws from. */
const knobs = fc.record({
  order: fc.nat(),
  pick: fc.nat(),
  pos: fc.nat(),
  by: fc.integer({ min: 1, max: 255 }),
  junk: fc.string({ maxLength: 120 }),
  word: fc.stringMatching(/^[0-9A-Za-z_]{1,24}$/),
  skew: fc.integer({ min: 301, max: 100_000_000 }),
  future: fc.boolean(),
  swap: fc.boolean(),
  delta: fc.integer({ min: 1, max: 100 }),
});
type Knobs = typeof knobs extends fc.Arbitrary<infer K> ? K : never;

/** Forgeries by provider (the ones that apply to how it signs). */
const FORGERIES = {
  sandbox: [
    'wrong-secret',
    'missing-signature',
    'garbled-signature',
    'tampered-body',
    'tampered-timestamp',
    'stale',
    'wrong-merchant',
    'other-provider-body',
  ],
  alipay: [
    'wrong-key',
    'missing-signature',
    'garbled-signature',
    'bad-sign-type',
    'sign-type-signed',
    'tampered-field',
    'added-field',
    'removed-field',
    'wrong-app',
    'wrong-seller',
    'other-provider-body',
  ],
  wechat: [
    'wrong-key',
    'unknown-serial',
    'missing-header',
    'garbled-signature',
    'bad-timestamp',
    'bad-signature-type',
    'tampered-body',
    'tampered-nonce',
    'tampered-timestamp',
    'stale',
    'wrong-api-v3-key',
    'wrong-mchid',
    'wrong-appid',
    'other-provider-body',
  ],
  stripe: [
    'wrong-secret',
    'missing-signature',
    'garbled-signature',
    'v0-only',
    'tampered-body',
    'tampered-timestamp',
    'stale',
    'live-mode',
    'wrong-account',
    'other-provider-body',
  ],
} as const satisfies Record<ProviderName, readonly string[]>;

const different = (value: string, ours: string) => (value === ours ? `${value}x` : value);

/**
 * A forged notification to POST /callbacks/<provider> for one of its real unpaid orders (so that accepting it would
 * pay that order), and the reasons it may be refused with.
 */
function forge(
  provider: ProviderName,
  kind: string,
  order: NotifiedOrder,
  k: Knobs,
): { d: Delivery; reasons: readonly string[] } {
  const ids = freshIds();
  const at = nowSeconds();
  // A signature at `skew` seconds in the past, or (where the provider checks both ways) in the future.
  const staleAt = k.future ? at + k.skew + 10 : at - k.skew;
  const d = (body: string | Buffer, headers: Record<string, string>): Delivery => ({
    provider,
    body: Buffer.from(body),
    headers,
  });
  if (kind === 'other-provider-body') {
    // Another provider's genuine notification for this order, posted here; with `swap`, its signature under this
    // provider's header.
    const others = PROVIDER_NAMES.filter((p) => p !== provider);
    const other = genuineDelivery(secrets, others[k.pick % others.length]!, order, ids);
    const signature =
      Object.entries(other.headers).find(([name]) => name.endsWith('-signature'))?.[1] ?? headerSafe(k.junk);
    const ownHeader = SIGNATURE_HEADER[provider];
    const headers = k.swap && ownHeader ? { ...other.headers, [ownHeader]: signature } : other.headers;
    return { d: { provider, body: other.body, headers }, reasons: [...SIGNATURE_CODES, 'MALFORMED_BODY'] };
  }
  switch (provider) {
    case 'sandbox': {
      const s = secrets.sandbox;
      const body = sandboxBody(s, order, ids);
      const signature = sandboxHeaders(body, { secret: s.secret, at })['sandbox-signature']!;
      switch (kind) {
        case 'wrong-secret':
          return {
            d: d(body, sandboxHeaders(body, { secret: different(k.word, s.secret), at })),
            reasons: ['BAD_SIGNATURE'],
          };
        case 'missing-signature':
          return { d: d(body, { 'content-type': 'application/json' }), reasons: ['MISSING_SIGNATURE'] };
        case 'garbled-signature':
          return {
            d: d(body, { 'content-type': 'application/json', 'sandbox-signature': headerSafe(k.junk) }),
            reasons: SIGNATURE_CODES,
          };
        case 'tampered-body':
          return {
            d: d(flipByte(Buffer.from(body), k.pos, k.by), {
              'content-type': 'application/json',
              'sandbox-signature': signature,
            }),
            reasons: ['BAD_SIGNATURE', 'MALFORMED_SIGNATURE'],
          };
        case 'tampered-timestamp':
          return {
            d: d(body, {
              'content-type': 'application/json',
              'sandbox-signature': signature.replace(`t=${at}`, `t=${k.swap ? at + k.delta : at - k.delta}`),
            }),
            reasons: ['BAD_SIGNATURE'],
          };
        case 'stale':
          return { d: d(body, sandboxHeaders(body, { secret: s.secret, at: staleAt })), reasons: ['STALE_TIMESTAMP'] };
        case 'wrong-merchant': {
          const forged = sandboxBody(s, order, ids, { merchantId: different(k.word, s.merchantId) });
          return { d: d(forged, sandboxHeaders(forged, { secret: s.secret, at })), reasons: ['WRONG_MERCHANT'] };
        }
      }
      break;
    }
    case 'alipay': {
      const s = secrets.alipay;
      const fields = alipayFields(s, order, ids);
      const sign = alipaySign(fields, s.alipayPrivateKey);
      const form = (body: string) => d(body, { 'content-type': ALIPAY_CONTENT_TYPE });
      const names = Object.keys(fields).sort();
      const name = names[k.pick % names.length]!;
      switch (kind) {
        case 'wrong-key':
          return { d: form(alipayForm(fields, alipaySign(fields, keys.stranger))), reasons: ['BAD_SIGNATURE'] };
        case 'missing-signature':
          return { d: form(alipayForm(fields, k.swap ? '' : undefined)), reasons: ['MISSING_SIGNATURE'] };
        case 'garbled-signature':
          return { d: form(alipayForm(fields, k.junk)), reasons: SIGNATURE_CODES };
        case 'bad-sign-type': {
          const types = [null, 'RSA', 'rsa2', '', different(k.word, 'RSA2')]; // null: no sign_type at all
          return { d: form(alipayForm(fields, sign, types[k.pick % types.length]!)), reasons: ['MALFORMED_SIGNATURE'] };
        }
        case 'sign-type-signed':
          // Signed over the content *with* sign_type: a leniency of some SDKs, not of the spec.
          return {
            d: form(
              alipayForm(
                fields,
                alipaySign({ ...fields, sign_type: 'RSA2' }, s.alipayPrivateKey, { withSignType: true }),
              ),
            ),
            reasons: ['BAD_SIGNATURE'],
          };
        // A field changed, added or removed after signing. A changed `charset` may also garble the form's decoding.
        case 'tampered-field':
          return {
            d: form(alipayForm({ ...fields, [name]: different(k.swap ? k.junk : k.word, fields[name]!) }, sign)),
            reasons: [...SIGNATURE_CODES, 'MALFORMED_BODY'],
          };
        case 'added-field':
          return { d: form(alipayForm({ ...fields, [`x_${k.word}`]: k.junk }, sign)), reasons: ['BAD_SIGNATURE'] };
        case 'removed-field': {
          const { [name]: _removed, ...rest } = fields;
          return { d: form(alipayForm(rest, sign)), reasons: ['BAD_SIGNATURE'] };
        }
        case 'wrong-app':
        case 'wrong-seller': {
          const forged = alipayFields(
            s,
            order,
            ids,
            kind === 'wrong-app' ? { appId: different(k.word, s.appId) } : { sellerId: different(k.word, s.sellerId) },
          );
          return { d: form(alipayForm(forged, alipaySign(forged, s.alipayPrivateKey))), reasons: ['WRONG_MERCHANT'] };
        }
      }
      break;
    }
    case 'wechat': {
      const s = secrets.wechat;
      const body = wechatBody(s, order, ids);
      const signed = (
        b: string | Buffer,
        o: { at?: number; key?: typeof s.platformPrivateKey; serial?: string } = {},
      ): Record<string, string> => ({
        'content-type': 'application/json',
        ...wechatHeaders(b, {
          at: o.at ?? at,
          key: o.key ?? s.platformPrivateKey,
          serial: o.serial ?? s.platformSerial,
        }),
      });
      const good = signed(body);
      const HEADERS = ['wechatpay-timestamp', 'wechatpay-nonce', 'wechatpay-signature', 'wechatpay-serial'] as const;
      switch (kind) {
        case 'wrong-key':
          return { d: d(body, signed(body, { key: keys.stranger })), reasons: ['BAD_SIGNATURE'] };
        case 'unknown-serial':
          return {
            d: d(body, signed(body, { serial: different(k.word, s.platformSerial) })),
            reasons: ['BAD_SIGNATURE'],
          };
        case 'missing-header': {
          const dropped = HEADERS[k.pick % HEADERS.length]!;
          const { [dropped]: _dropped, ...rest } = good;
          return { d: d(body, k.swap ? { ...rest, [dropped]: '' } : rest), reasons: ['MISSING_SIGNATURE'] };
        }
        case 'garbled-signature':
          return { d: d(body, { ...good, 'wechatpay-signature': headerSafe(k.junk) }), reasons: SIGNATURE_CODES };
        case 'bad-timestamp': {
          const value = headerSafe(k.junk);
          return {
            d: d(body, { ...good, 'wechatpay-timestamp': /^\d{1,12}$/.test(value) ? `${value}x` : value }),
            reasons: ['MISSING_SIGNATURE', 'MALFORMED_SIGNATURE'],
          };
        }
        case 'bad-signature-type':
          return {
            d: d(body, { ...good, 'wechatpay-signature-type': different(k.word, 'WECHATPAY2-SHA256-RSA2048') }),
            reasons: ['MALFORMED_SIGNATURE'],
          };
        case 'tampered-body':
          return { d: d(flipByte(Buffer.from(body), k.pos, k.by), good), reasons: ['BAD_SIGNATURE'] };
        case 'tampered-nonce':
          return {
            d: d(body, { ...good, 'wechatpay-nonce': `${good['wechatpay-nonce']}${k.word}` }),
            reasons: ['BAD_SIGNATURE'],
          };
        case 'tampered-timestamp':
          return {
            d: d(body, { ...good, 'wechatpay-timestamp': String(k.swap ? at + k.delta : at - k.delta) }),
            reasons: ['BAD_SIGNATURE'],
          };
        case 'stale':
          return { d: d(body, signed(body, { at: staleAt })), reasons: ['STALE_TIMESTAMP'] };
        case 'wrong-api-v3-key': {
          // Signed with the platform key, but the resource was not encrypted with our API v3 key.
          const forged = wechatBody(s, order, ids, { apiV3Key: randomBytes(16).toString('hex') });
          return { d: d(forged, signed(forged)), reasons: ['MALFORMED_BODY'] };
        }
        case 'wrong-mchid':
        case 'wrong-appid': {
          const forged = wechatBody(
            s,
            order,
            ids,
            kind === 'wrong-mchid' ? { mchid: different(k.word, s.mchId) } : { appid: different(k.word, s.appId) },
          );
          return { d: d(forged, signed(forged)), reasons: ['WRONG_MERCHANT'] };
        }
      }
      break;
    }
    case 'stripe': {
      const s = secrets.stripe;
      const body = stripeEvent(order, ids);
      const header = (b: string | Buffer, o: { at?: number; secret?: string; scheme?: string } = {}) => ({
        'content-type': 'application/json',
        'stripe-signature': stripeSignature(b, {
          secret: o.secret ?? s.webhookSecret,
          at: o.at ?? at,
          scheme: o.scheme,
        }),
      });
      const good = header(body);
      switch (kind) {
        case 'wrong-secret':
          return {
            d: d(body, header(body, { secret: `whsec_${different(k.word, s.webhookSecret)}` })),
            reasons: ['BAD_SIGNATURE'],
          };
        case 'missing-signature':
          return { d: d(body, { 'content-type': 'application/json' }), reasons: ['MISSING_SIGNATURE'] };
        case 'garbled-signature':
          return {
            d: d(body, { 'content-type': 'application/json', 'stripe-signature': headerSafe(k.junk) }),
            reasons: SIGNATURE_CODES,
          };
        case 'v0-only':
          return { d: d(body, header(body, { scheme: 'v0' })), reasons: ['MALFORMED_SIGNATURE'] };
        case 'tampered-body':
          return { d: d(flipByte(Buffer.from(body), k.pos, k.by), good), reasons: ['BAD_SIGNATURE'] };
        case 'tampered-timestamp':
          return {
            d: d(body, {
              ...good,
              'stripe-signature': good['stripe-signature'].replace(
                `t=${at}`,
                `t=${k.swap ? at + k.delta : at - k.delta}`,
              ),
            }),
            reasons: ['BAD_SIGNATURE'],
          };
        case 'stale':
          // Only the past: Stripe's own check (the SDK's) bounds a signature's age, not a timestamp ahead of our clock.
          return { d: d(body, header(body, { at: at - k.skew })), reasons: ['STALE_TIMESTAMP'] };
        case 'live-mode':
        case 'wrong-account': {
          const forged = stripeEvent(
            order,
            ids,
            kind === 'live-mode' ? { livemode: true } : { account: `acct_${different(k.word, s.accountId.slice(5))}` },
          );
          return { d: d(forged, header(forged)), reasons: ['WRONG_MERCHANT'] };
        }
      }
      break;
    }
  }
  throw new Error(`no forgery ${kind} for ${provider}`);
}

test.each(PROVIDER_NAMES)(
  'forged %s notifications for real orders (keys, signatures, tampering, stale timestamps, merchants) are refused, audited, and change nothing',
  async (provider) => {
    const kinds = FORGERIES[provider];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...kinds), knobs, async (kind, k) => {
        const { d, reasons } = forge(provider, kind, orders[provider][k.order % orders[provider].length]!, k);
        await expectRefused(d, reasons);
      }),
      // Every forgery at least once, whatever the run count. No shrinking: an accepted forgery pays an order whose
      // workflow then keeps changing state, which would make every shrunk case fail too and hide the real one.
      {
        numRuns: Math.max(FORGED_RUNS, kinds.length),
        endOnFailure: true,
        examples: kinds.map((kind, i) => [
          kind,
          {
            order: i,
            pick: i,
            pos: 7 * i,
            by: 1,
            junk: 'x',
            word: 'forged',
            skew: 301,
            future: i % 2 === 1,
            swap: i % 2 === 0,
            delta: 1,
          },
        ]),
      },
    );
  },
);

test.each(PROVIDER_NAMES)(
  'a notification correctly signed by %s for an order paying with another provider is refused with 409 PROVIDER_MISMATCH, audited, and changes nothing',
  async (signer) => {
    const targets = PROVIDER_NAMES.filter((p) => p !== signer);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...targets),
        fc.nat(),
        fc.option(fc.integer({ min: 1, max: 10_000_000 }), { nil: undefined }),
        async (target, which, amount) => {
          const order = orders[target][which % orders[target].length]!;
          const d = genuineDelivery(secrets, signer, order, freshIds(), { amount });
          const refused = await expectRefused(d, ['PROVIDER_MISMATCH']);
          expect(refused.message).toContain(`pays with ${target}`);
          expect(await sys.db('notification_inbox').where({ out_trade_no: order.orderId }).first()).toBeUndefined();
        },
      ),
      {
        numRuns: Math.max(CROSS_RUNS, 2 * targets.length),
        endOnFailure: true,
        examples: targets.flatMap(
          (t) =>
            [
              [t, 0, undefined],
              [t, 1, undefined],
            ] as [ProviderName, number, undefined][],
        ),
      },
    );
  },
);
test('fuzzed admin requests without the token are refused; with it, invalid bodies change nothing', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(fc.string({ maxLength: 80 }), fc.constant(sku)),
      jsonish,
      fc.oneof(fc.constant(undefined), fc.string({ maxLength: 60 }), fc.constant(`Bearer ${sys.config.adminToken}`)),
      async (pathSku, body, auth) => {
        const before = await stateFingerprint();
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (auth !== undefined) headers.authorization = auth.replace(/[^\x20-\x7e]/g, '');
        const r = await send('PUT', `/admin/products/${encodeURIComponent(pathSku)}`, body, headers);
        expect(r.status).toBeLessThan(500);
        if (r.status >= 400) {
          expectErrorShape(r);
          expect(await stateFingerprint()).toBe(before);
        }
      },
    ),
    { numRuns: RUNS },
  );
});

test('fuzzed path parameters never cause a 5xx', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.string({ maxLength: 120 }),
        fc.constantFrom('valueOf', '__proto__', 'constructor', 'toString', 'hasOwnProperty'),
      ),
      fc.constantFrom('GET /orders/', 'POST /orders/cancel', 'GET /admin/products/', 'POST /callbacks/'),
      async (param, route) => {
        const [method, prefix] = route.split(' ') as [string, string];
        const path =
          prefix === '/orders/cancel'
            ? `/orders/${encodeURIComponent(param)}/cancel`
            : `${prefix}${encodeURIComponent(param)}`;
        const before = await stateFingerprint();
        const r = await send(method, path, method === 'POST' ? '{}' : undefined, {
          'content-type': 'application/json',
          authorization: `Bearer ${sys.config.adminToken}`,
        });
        expect(r.status).toBeLessThan(500);
        if (r.status >= 400) expectErrorShape(r);
        expect(await stateFingerprint()).toBe(before);
      },
    ),
    { numRuns: RUNS },
  );
});

// Last: the orders these runs pay finish in the background (receipt, fulfilment), which the fingerprints above would
// see.
test.each(PROVIDER_NAMES)(
  'a correctly signed %s notification delivered many times is stored once and pays its order once; replayed outside the timestamp window it is refused',
  async (provider) => {
    const sold = async () => Number(((await sys.db('stock').where({ sku }).first('sold')) as { sold: number }).sold);
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 6 }),
        fc.boolean(),
        fc.boolean(),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 301, max: 10_000_000 }),
        async (early, concurrent, keyed, late, skew) => {
          const order = await placeOrder(provider, keyed);
          const soldBefore = await sold();
          const d = genuineDelivery(secrets, provider, order, freshIds());
          const ack = async () => {
            const r = await deliver(d);
            return { status: r.status, body: r.text };
          };
          // The same bytes and headers, `early` times (at once, or one after another) while the order waits...
          const answers = concurrent
            ? await Promise.all(Array.from({ length: early }, ack))
            : await Array.from({ length: early }).reduce<Promise<Array<{ status: number; body: string }>>>(
                async (acc) => [...(await acc), await ack()],
                Promise.resolve([]),
              );
          for (const answer of answers) expect(answer).toEqual(ACK[provider]);
          await waitForStatus(sys, order.orderId, ['PAID']);
          await sys.client.workflow.getHandle(orderWorkflowId(order.orderId)).result();
          // ...and `late` times after its workflow has completed.
          for (let i = 0; i < late; i++) expect(await ack()).toEqual(ACK[provider]);

          const row = await waitFor(
            async () => {
              const rows = (await sys.db('notification_inbox').where({ out_trade_no: order.orderId })) as Array<{
                provider: string;
                status: string;
                deliveries: number;
              }>;
              expect(rows).toHaveLength(1);
              // Redeliveries acknowledged from memory are added to `deliveries` within a moment.
              return rows[0]!.status !== 'RECEIVED' && Number(rows[0]!.deliveries) >= early + late
                ? rows[0]
                : undefined;
            },
            { what: 'the inbox row routed, every delivery counted' },
          );
          expect(row).toMatchObject({ provider, status: 'SIGNALLED', deliveries: early + late });
          expect(await sys.db('orders').where({ order_id: order.orderId }).first('status')).toEqual({ status: 'PAID' });
          expect(await sys.db('payments').where({ out_trade_no: order.orderId }).select('status')).toEqual([
            { status: 'PAID' },
          ]);
          expect(
            await sys.db('order_events').where({ order_id: order.orderId, type: 'ORDER_PAID' }).count({ n: '*' }),
          ).toEqual([{ n: 1 }]);
          expect(await sold()).toBe(soldBefore + 1);

          // Captured and replayed `skew` seconds later: outside the window wherever the provider signs a timestamp.
          // Alipay signs none (it retries for 25 hours); its replays are only deduplicated by notify_id, as above.
          const replayed = signedAt(secrets, d, Math.floor(Date.now() / 1000) - skew);
          if (replayed) {
            await expectRefused(replayed, ['STALE_TIMESTAMP']);
            await sys.api.inbox.flushDeliveries();
            expect(
              await sys.db('notification_inbox').where({ out_trade_no: order.orderId }).first('deliveries'),
            ).toEqual({ deliveries: early + late });
          }
        },
      ),
      { numRuns: REPLAY_RUNS, endOnFailure: true },
    );
  },
);

test('no provider API beyond creating payments was needed', () => {
  expect(fakeApi.unexpected).toEqual([]);
});
