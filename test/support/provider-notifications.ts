/**
 * Every provider configured in one test system, with keys generated here, and payment notifications built and signed
 * the way each provider does (independently of the adapters): Alipay's RSA2 `sign` field over the sorted form
 * fields, WeChat Pay v3's SHA256withRSA `Wechatpay-*` headers over `timestamp\nnonce\nbody\n` with an
 * AEAD_AES_256_GCM resource, Stripe's `Stripe-Signature: t=..,v1=HMAC(t.body)`, the sandbox's `Sandbox-Signature`.
 *
 * A tiny fake provider API answers the two calls creating an order needs (WeChat's Native prepay, Stripe's
 * PaymentIntent create; Alipay's cashier URL is signed locally) and refuses everything else with 503: a system
 * using it must keep QUERY_FIRST_DELAY and PAYMENT_TIMEOUT long so that no query or close is ever due.
 */
import { type KeyObject, createCipheriv, createHmac, createSign, randomBytes } from 'node:crypto';
import { chinaDateTime, chinaRfc3339 } from '../../src/providers/http';
import { signSandboxPayload } from '../../src/providers/sandbox-signature';
import { toWechatOutTradeNo } from '../../src/providers/wechat';
import { toMajorString } from '../../src/shared/money';
import { type FakeServer, rsaPair, startFakeServer } from './provider-fakes';

export type ProviderName = 'sandbox' | 'alipay' | 'wechat' | 'stripe';
export const PROVIDER_NAMES: readonly ProviderName[] = ['sandbox', 'alipay', 'wechat', 'stripe'];

/** The header each provider signs with (Alipay signs inside the form body). */
export const SIGNATURE_HEADER: Record<ProviderName, string | undefined> = {
  sandbox: 'sandbox-signature',
  alipay: undefined,
  wechat: 'wechatpay-signature',
  stripe: 'stripe-signature',
};

/** What each provider expects back once a notification is stored (the adapters' `ack`). */
export const ACK: Record<ProviderName, { status: number; body: string }> = {
  sandbox: { status: 200, body: 'success' },
  alipay: { status: 200, body: 'success' },
  wechat: { status: 204, body: '' },
  stripe: { status: 200, body: '{"received":true}' },
};

/** The order a notification speaks for. */
export interface NotifiedOrder {
  orderId: string;
  amount: number;
  currency: string;
  /** The provider's trade number when known at creation (Stripe's PaymentIntent id). */
  tradeNo?: string;
}

/** One HTTP delivery to POST /callbacks/:provider. */
export interface Delivery {
  provider: ProviderName;
  body: Buffer;
  headers: Record<string, string>;
}

/** What each provider signs with (its private side: what only the provider should hold). */
export interface ProviderSecrets {
  sandbox: { secret: string; merchantId: string };
  alipay: { appId: string; sellerId: string; alipayPrivateKey: KeyObject };
  wechat: { mchId: string; appId: string; apiV3Key: string; platformPrivateKey: KeyObject; platformSerial: string };
  stripe: { webhookSecret: string; accountId: string };
}

/** Fresh keys for Alipay, WeChat Pay and Stripe, the env that configures them, and a stranger's RSA key. */
export function createProviderKeys(): {
  secrets: Omit<ProviderSecrets, 'sandbox'>;
  stranger: KeyObject;
  env: (apiBase: string) => Record<string, string>;
} {
  const alipayApp = rsaPair(); // ours: signs requests to the gateway
  const alipay = rsaPair(); // Alipay's: signs notifications
  const wechatMerchant = rsaPair(); // ours: signs API requests
  const wechatPlatform = rsaPair(); // WeChat Pay's platform key: signs notifications and answers
  const stranger = rsaPair();
  const secrets = {
    alipay: { appId: '2021000000000001', sellerId: '2088000000000001', alipayPrivateKey: alipay.privateKey },
    wechat: {
      mchId: '1230000109',
      appId: 'wx0123456789abcdef',
      apiV3Key: randomBytes(16).toString('hex'),
      platformPrivateKey: wechatPlatform.privateKey,
      platformSerial: 'PUB_KEY_ID_0114232134912410000000',
    },
    stripe: {
      webhookSecret: `whsec_${randomBytes(18).toString('base64url').replace(/[-_]/g, 'x')}`,
      accountId: 'acct_payflowFuzz01',
    },
  };
  const env = (apiBase: string): Record<string, string> => ({
    ALIPAY_APP_ID: secrets.alipay.appId,
    ALIPAY_SELLER_ID: secrets.alipay.sellerId,
    ALIPAY_PRIVATE_KEY: alipayApp.privatePem,
    ALIPAY_PUBLIC_KEY: alipay.publicPem,
    ALIPAY_GATEWAY: `${apiBase}/alipay/gateway.do`,
    WECHAT_MCH_ID: secrets.wechat.mchId,
    WECHAT_APP_ID: secrets.wechat.appId,
    WECHAT_API_V3_KEY: secrets.wechat.apiV3Key,
    WECHAT_PRIVATE_KEY: wechatMerchant.privatePem,
    WECHAT_CERT_SERIAL: '1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C',
    WECHAT_PLATFORM_KEYS: `${secrets.wechat.platformSerial}=${wechatPlatform.publicPem}`,
    WECHAT_API_BASE: apiBase,
    STRIPE_SECRET_KEY: 'sk_test_payflowFuzz0123456789',
    STRIPE_WEBHOOK_SECRET: secrets.stripe.webhookSecret,
    STRIPE_ACCOUNT_ID: secrets.stripe.accountId,
    STRIPE_PAYMENT_PAGE_URL: 'https://shop.example.com/pay',
    STRIPE_API_BASE: apiBase,
  });
  return { secrets, stranger: stranger.privateKey, env };
}

/** WeChat Pay's response/notification signature headers over `timestamp\nnonce\nbody\n`. */
export function wechatHeaders(
  body: string | Buffer,
  o: { at: number; key: KeyObject; serial: string; nonce?: string },
): Record<string, string> {
  const nonce = o.nonce ?? randomBytes(16).toString('hex');
  const signature = createSign('RSA-SHA256')
    .update(`${o.at}\n${nonce}\n`)
    .update(body)
    .update('\n')
    .sign(o.key, 'base64');
  return {
    'wechatpay-timestamp': String(o.at),
    'wechatpay-nonce': nonce,
    'wechatpay-signature': signature,
    'wechatpay-serial': o.serial,
    'wechatpay-signature-type': 'WECHATPAY2-SHA256-RSA2048',
  };
}

/**
 * The fake provider API: WeChat's Native prepay (a signed `code_url`) and Stripe's PaymentIntent create; every other
 * call is answered 503 and counted in `unexpected`.
 */
export async function startFakeProviderApi(
  secrets: Pick<ProviderSecrets, 'wechat'>,
): Promise<FakeServer & { unexpected: string[] }> {
  const unexpected: string[] = [];
  const fake = await startFakeServer((req): { status: number; headers: Record<string, string>; body: string } => {
    const path = new URL(req.url, 'http://fake').pathname;
    if (req.method === 'POST' && path === '/v3/pay/transactions/native') {
      const body = JSON.stringify({ code_url: `weixin://wxpay/bizpayurl?pr=${randomBytes(6).toString('hex')}` });
      const at = Math.floor(Date.now() / 1000);
      return {
        status: 200,
        headers: {
          'content-type': 'application/json',
          ...wechatHeaders(body, { at, key: secrets.wechat.platformPrivateKey, serial: secrets.wechat.platformSerial }),
        },
        body,
      };
    }
    if (req.method === 'POST' && path === '/v1/payment_intents') {
      const form = new URLSearchParams(req.body.toString('utf8'));
      const id = `pi_${randomBytes(12).toString('hex')}`;
      const intent = {
        id,
        object: 'payment_intent',
        amount: Number(form.get('amount')),
        amount_received: 0,
        currency: form.get('currency'),
        status: 'requires_payment_method',
        client_secret: `${id}_secret_${randomBytes(8).toString('hex')}`,
        created: Math.floor(Date.now() / 1000),
        livemode: false,
        metadata: { out_trade_no: form.get('metadata[out_trade_no]'), expires_at: form.get('metadata[expires_at]') },
      };
      return {
        status: 200,
        headers: { 'content-type': 'application/json', 'request-id': `req_${randomBytes(6).toString('hex')}` },
        body: JSON.stringify(intent),
      };
    }
    unexpected.push(`${req.method} ${path}`);
    return {
      status: 503,
      headers: { 'content-type': 'application/json' },
      body: '{"error":"the fuzz suite\'s fake provider API only creates payments"}',
    };
  });
  return Object.assign(fake, { unexpected });
}

/** Ids a notification carries: the provider's notification id (the inbox dedup key) and its trade number. */
export interface NotificationIds {
  id: string;
  tradeNo: string;
}

export function freshIds(): NotificationIds {
  return { id: randomBytes(12).toString('hex'), tradeNo: randomBytes(10).toString('hex') };
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

// ---- Sandbox ----

export function sandboxBody(
  s: ProviderSecrets['sandbox'],
  order: NotifiedOrder,
  ids: NotificationIds,
  o: { merchantId?: string; amount?: number } = {},
): string {
  return JSON.stringify({
    id: `n-${ids.id}`,
    type: 'payment.succeeded',
    data: {
      outTradeNo: order.orderId,
      tradeNo: `sb-${ids.tradeNo}`,
      amount: o.amount ?? order.amount,
      currency: order.currency,
      merchantId: o.merchantId ?? s.merchantId,
      paidAt: new Date().toISOString(),
    },
  });
}

export function sandboxHeaders(body: string | Buffer, o: { secret: string; at?: number }): Record<string, string> {
  return {
    'content-type': 'application/json',
    'sandbox-signature': signSandboxPayload(o.secret, body, o.at ?? nowSeconds()),
  };
}

// ---- Alipay ----

/** A TRADE_SUCCESS asynchronous notification's fields (Alipay's documented trade_status_sync fields). */
export function alipayFields(
  s: ProviderSecrets['alipay'],
  order: NotifiedOrder,
  ids: NotificationIds,
  o: { appId?: string; sellerId?: string; amount?: number } = {},
): Record<string, string> {
  const now = new Date();
  const yuan = toMajorString(o.amount ?? order.amount, 'CNY');
  return {
    gmt_create: chinaDateTime(new Date(now.getTime() - 30_000)),
    charset: 'utf-8',
    seller_email: 'shop***@example.com',
    subject: `Order ${order.orderId}`,
    buyer_id: '2088102122524333',
    invoice_amount: yuan,
    notify_id: ids.id,
    fund_bill_list: `[{"amount":"${yuan}","fundChannel":"ALIPAYACCOUNT"}]`,
    notify_type: 'trade_status_sync',
    trade_status: 'TRADE_SUCCESS',
    receipt_amount: yuan,
    app_id: o.appId ?? s.appId,
    buyer_pay_amount: yuan,
    seller_id: o.sellerId ?? s.sellerId,
    gmt_payment: chinaDateTime(now),
    notify_time: chinaDateTime(now),
    version: '1.0',
    out_trade_no: order.orderId,
    total_amount: yuan,
    trade_no: `2026${ids.tradeNo}`,
    auth_app_id: o.appId ?? s.appId,
    buyer_logon_id: 'buy***@example.com',
    point_amount: '0.00',
  };
}

/**
 * RSA2 over every field but `sign` and `sign_type`, sorted, `k=v&...` (with `withSignType`, the mistake the spec
 * excludes).
 */
export function alipaySign(fields: Record<string, string>, key: KeyObject, o: { withSignType?: boolean } = {}): string {
  const content = Object.keys(fields)
    .filter((k) => k !== 'sign' && (o.withSignType || k !== 'sign_type'))
    .sort()
    .map((k) => `${k}=${fields[k]}`)
    .join('&');
  return createSign('RSA-SHA256').update(content, 'utf8').sign(key, 'base64');
}

/** The form body Alipay POSTs; `sign` undefined or `signType` null = left out. */
export function alipayForm(
  fields: Record<string, string>,
  sign: string | undefined,
  signType: string | null = 'RSA2',
): string {
  return new URLSearchParams({
    ...fields,
    ...(signType === null ? {} : { sign_type: signType }),
    ...(sign === undefined ? {} : { sign }),
  }).toString();
}

export const ALIPAY_CONTENT_TYPE = 'application/x-www-form-urlencoded; charset=utf-8';

// ---- WeChat Pay ----

/** AEAD_AES_256_GCM with the API v3 key, as WeChat encrypts a notification's resource. */
export function wechatEncrypt(plain: unknown, apiV3Key: string, associatedData = 'transaction') {
  const nonce = randomBytes(6).toString('hex');
  const cipher = createCipheriv('aes-256-gcm', Buffer.from(apiV3Key, 'utf8'), Buffer.from(nonce, 'utf8'));
  cipher.setAAD(Buffer.from(associatedData, 'utf8'));
  const data = Buffer.concat([cipher.update(JSON.stringify(plain), 'utf8'), cipher.final(), cipher.getAuthTag()]);
  return {
    original_type: associatedData,
    algorithm: 'AEAD_AES_256_GCM',
    ciphertext: data.toString('base64'),
    associated_data: associatedData,
    nonce,
  };
}

/** A TRANSACTION.SUCCESS notification body (envelope around the encrypted transaction). */
export function wechatBody(
  s: ProviderSecrets['wechat'],
  order: NotifiedOrder,
  ids: NotificationIds,
  o: { mchid?: string; appid?: string; apiV3Key?: string; amount?: number } = {},
): string {
  const now = new Date();
  const total = o.amount ?? order.amount;
  const transaction = {
    transaction_id: `4200${ids.tradeNo}`,
    amount: { payer_total: total, total, currency: 'CNY', payer_currency: 'CNY' },
    mchid: o.mchid ?? s.mchId,
    trade_state: 'SUCCESS',
    bank_type: 'OTHERS',
    success_time: chinaRfc3339(now),
    payer: { openid: 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o' },
    out_trade_no: toWechatOutTradeNo(order.orderId),
    appid: o.appid ?? s.appId,
    trade_state_desc: '支付成功',
    trade_type: 'NATIVE',
  };
  return JSON.stringify({
    id: `EV-${ids.id}`,
    create_time: chinaRfc3339(now),
    resource_type: 'encrypt-resource',
    event_type: 'TRANSACTION.SUCCESS',
    summary: '支付成功',
    resource: wechatEncrypt(transaction, o.apiV3Key ?? s.apiV3Key),
  });
}

// ---- Stripe ----

/** A payment_intent.succeeded event for the order (metadata.out_trade_no names it). */
export function stripeEvent(
  order: NotifiedOrder,
  ids: NotificationIds,
  o: { livemode?: boolean; account?: string; amount?: number } = {},
): string {
  const created = nowSeconds();
  const amount = o.amount ?? order.amount;
  return JSON.stringify({
    id: `evt_${ids.id}`,
    object: 'event',
    api_version: '2026-10-28.endive',
    created,
    livemode: o.livemode ?? false,
    ...(o.account === undefined ? {} : { account: o.account }),
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type: 'payment_intent.succeeded',
    data: {
      object: {
        id: order.tradeNo ?? `pi_${ids.tradeNo}`,
        object: 'payment_intent',
        amount,
        amount_received: amount,
        currency: order.currency.toLowerCase(),
        status: 'succeeded',
        created,
        livemode: o.livemode ?? false,
        metadata: { out_trade_no: order.orderId },
      },
    },
  });
}

/** `t=<at>,<scheme>=HMAC-SHA256(secret, "<at>.<body>")`, as Stripe signs webhooks. */
export function stripeSignature(body: string | Buffer, o: { secret: string; at?: number; scheme?: string }): string {
  const at = o.at ?? nowSeconds();
  const mac = createHmac('sha256', o.secret).update(`${at}.`).update(body).digest('hex');
  return `t=${at},${o.scheme ?? 'v1'}=${mac}`;
}

// ---- Any provider ----

/**
 * A correctly signed "payment succeeded" notification from `provider` for `order`, signed at `at` (unix seconds;
 * default now).
 */
export function genuineDelivery(
  s: ProviderSecrets,
  provider: ProviderName,
  order: NotifiedOrder,
  ids: NotificationIds,
  o: { at?: number; amount?: number } = {},
): Delivery {
  switch (provider) {
    case 'sandbox': {
      const body = sandboxBody(s.sandbox, order, ids, { amount: o.amount });
      return {
        provider,
        body: Buffer.from(body),
        headers: sandboxHeaders(body, { secret: s.sandbox.secret, at: o.at }),
      };
    }
    case 'alipay': {
      const fields = alipayFields(s.alipay, order, ids, { amount: o.amount });
      return {
        provider,
        body: Buffer.from(alipayForm(fields, alipaySign(fields, s.alipay.alipayPrivateKey))),
        headers: { 'content-type': ALIPAY_CONTENT_TYPE },
      };
    }
    case 'wechat': {
      const body = wechatBody(s.wechat, order, ids, { amount: o.amount });
      return {
        provider,
        body: Buffer.from(body),
        headers: {
          'content-type': 'application/json',
          ...wechatHeaders(body, {
            at: o.at ?? nowSeconds(),
            key: s.wechat.platformPrivateKey,
            serial: s.wechat.platformSerial,
          }),
        },
      };
    }
    case 'stripe': {
      const body = stripeEvent(order, ids, { amount: o.amount });
      return {
        provider,
        body: Buffer.from(body),
        headers: {
          'content-type': 'application/json',
          'stripe-signature': stripeSignature(body, { secret: s.stripe.webhookSecret, at: o.at }),
        },
      };
    }
  }
}

/**
 * The same delivery with its signature made at `at` instead: what a captured notification looks like when it is
 * replayed that long after it was sent. Alipay has no timestamp in its signature (undefined).
 */
export function signedAt(s: ProviderSecrets, d: Delivery, at: number): Delivery | undefined {
  switch (d.provider) {
    case 'sandbox':
      return { ...d, headers: { ...d.headers, ...sandboxHeaders(d.body, { secret: s.sandbox.secret, at }) } };
    case 'wechat':
      return {
        ...d,
        headers: {
          ...d.headers,
          ...wechatHeaders(d.body, {
            at,
            key: s.wechat.platformPrivateKey,
            serial: s.wechat.platformSerial,
            nonce: d.headers['wechatpay-nonce'],
          }),
        },
      };
    case 'stripe':
      return {
        ...d,
        headers: { ...d.headers, 'stripe-signature': stripeSignature(d.body, { secret: s.stripe.webhookSecret, at }) },
      };
    case 'alipay':
      return undefined;
  }
}
