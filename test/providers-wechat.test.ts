/**
 * The WeChat Pay v3 adapter offline: notifications built from WeChat's documented sample (envelope and decrypted
 * transaction), encrypted with AEAD_AES_256_GCM and signed in the test with generated keys; API calls against a
 * local fake that checks our WECHATPAY2-SHA256-RSA2048 Authorization and signs its answers as the platform does;
 * the trade bill in WeChat's backtick layout, gzip'd, hash-checked.
 */
import { createCipheriv, createHash, createSign, createVerify, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { createProviders } from '../src/providers';
import type { WechatConfig } from '../src/providers/config';
import { ProviderUnavailableError } from '../src/providers/sandbox';
import type { PaymentProvider } from '../src/providers/types';
import {
  createWechatProvider,
  fromWechatOutTradeNo,
  parseWechatTradeBill,
  toWechatOutTradeNo,
} from '../src/providers/wechat';
import { type FakeServer, collect, rsaPair, startFakeServer } from './support/provider-fakes';

// From WeChat Pay's documented samples.
const MCH_ID = '1230000109';
const APP_ID = 'wxd678efh567hg6787';
const PLATFORM_SERIAL = '5157F09EFDC096DE15EBE81A47057A7232F1B8E1';
const MERCHANT_SERIAL = '1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C';

const API_V3_KEY = randomBytes(16).toString('hex'); // 32 bytes
const platformKeys = rsaPair(); // WeChat's platform key pair: signs notifications and answers
const merchantKeys = rsaPair(); // our merchant API key pair: signs requests
const strangerKeys = rsaPair();

function config(apiBase = 'https://api.mch.weixin.qq.com'): WechatConfig {
  return {
    mchId: MCH_ID,
    appId: APP_ID,
    apiV3Key: { reveal: () => API_V3_KEY } as WechatConfig['apiV3Key'],
    privateKey: merchantKeys.privateKey,
    certSerial: MERCHANT_SERIAL,
    platformKeys: new Map([[PLATFORM_SERIAL, platformKeys.publicKey]]),
    apiBase,
  };
}

/** The documented decrypted `transaction` resource. */
function sampleTransaction(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    transaction_id: '1217752501201407033233368018',
    amount: { payer_total: 100, total: 100, currency: 'CNY', payer_currency: 'CNY' },
    mchid: MCH_ID,
    trade_state: 'SUCCESS',
    bank_type: 'CMC',
    success_time: '2018-06-08T10:34:56+08:00',
    payer: { openid: 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o' },
    out_trade_no: '1217752501201407033233368018',
    appid: APP_ID,
    trade_state_desc: '支付成功',
    trade_type: 'NATIVE',
    attach: '自定义数据',
    scene_info: { device_id: '013467007045764' },
    ...overrides,
  };
}

function encrypt(plain: unknown, key = API_V3_KEY, associatedData = 'transaction') {
  const nonce = randomBytes(6).toString('hex'); // 12 characters, as WeChat's nonces
  const cipher = createCipheriv('aes-256-gcm', Buffer.from(key, 'utf8'), Buffer.from(nonce, 'utf8'));
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

/** The documented envelope around an encrypted resource. */
function envelope(
  resource: ReturnType<typeof encrypt>,
  eventType = 'TRANSACTION.SUCCESS',
  id = 'EV-2018022511223320873',
): string {
  return JSON.stringify({
    id,
    create_time: '2015-05-20T13:29:35+08:00',
    resource_type: 'encrypt-resource',
    event_type: eventType,
    summary: '支付成功',
    resource,
  });
}

/** Signs as the platform does: SHA256withRSA over `timestamp\nnonce\nbody\n`. */
function signed(
  body: string,
  timestamp: number,
  key = platformKeys.privateKey,
  serial = PLATFORM_SERIAL,
): Record<string, string> {
  const nonce = randomBytes(16).toString('hex');
  const signature = createSign('RSA-SHA256').update(`${timestamp}\n${nonce}\n${body}\n`, 'utf8').sign(key, 'base64');
  return {
    'wechatpay-timestamp': String(timestamp),
    'wechatpay-nonce': nonce,
    'wechatpay-signature': signature,
    'wechatpay-serial': serial,
    'wechatpay-signature-type': 'WECHATPAY2-SHA256-RSA2048',
  };
}

const NOW = new Date('2018-06-08T02:35:00Z');
const nowSeconds = Math.floor(NOW.getTime() / 1000);

function verify(provider: PaymentProvider, body: string | Buffer, headers: Record<string, string>) {
  return provider.verifyNotification(Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8'), headers, NOW);
}

describe('WeChat Pay notifications', () => {
  const provider = createWechatProvider(config());

  test('a correctly signed notification built from the documented sample decrypts and parses to the normalised payment', () => {
    const body = envelope(encrypt(sampleTransaction()));
    expect(verify(provider, body, signed(body, nowSeconds))).toEqual({
      ok: true,
      notification: {
        provider: 'wechat',
        notificationId: 'EV-2018022511223320873',
        outTradeNo: '1217752501201407033233368018',
        tradeNo: '1217752501201407033233368018',
        amount: 100,
        currency: 'CNY',
        merchantId: MCH_ID,
        paidAt: '2018-06-08T02:34:56.000Z',
      },
    });
  });

  test('a notification signed with another key, or naming an unknown platform serial, is refused as BAD_SIGNATURE', () => {
    const body = envelope(encrypt(sampleTransaction()));
    expect(verify(provider, body, signed(body, nowSeconds, strangerKeys.privateKey))).toMatchObject({
      ok: false,
      rejection: { code: 'BAD_SIGNATURE' },
    });
    expect(
      verify(provider, body, signed(body, nowSeconds, platformKeys.privateKey, 'PUB_KEY_ID_0000000000000000000000')),
    ).toMatchObject({ ok: false, rejection: { code: 'BAD_SIGNATURE' } });
  });

  test('a body changed by one byte after signing is refused', () => {
    const body = envelope(encrypt(sampleTransaction()));
    const headers = signed(body, nowSeconds);
    const changed = Buffer.from(body, 'utf8');
    changed[changed.indexOf('EV-2018') + 3] = '3'.charCodeAt(0);
    expect(verify(provider, changed, headers)).toMatchObject({ ok: false, rejection: { code: 'BAD_SIGNATURE' } });
  });

  test('a correctly signed notification more than 5 minutes old is refused as STALE_TIMESTAMP, one 4 minutes old is accepted', () => {
    const body = envelope(encrypt(sampleTransaction()));
    expect(verify(provider, body, signed(body, nowSeconds - 301))).toMatchObject({
      ok: false,
      rejection: { code: 'STALE_TIMESTAMP' },
    });
    expect(verify(provider, body, signed(body, nowSeconds + 301))).toMatchObject({
      ok: false,
      rejection: { code: 'STALE_TIMESTAMP' },
    });
    expect(verify(provider, body, signed(body, nowSeconds - 240)).ok).toBe(true);
  });

  test('a notification without the Wechatpay headers is refused as MISSING_SIGNATURE', () => {
    const body = envelope(encrypt(sampleTransaction()));
    const { 'wechatpay-signature': _dropped, ...headers } = signed(body, nowSeconds);
    expect(verify(provider, body, headers)).toMatchObject({ ok: false, rejection: { code: 'MISSING_SIGNATURE' } });
  });

  test.each([
    ['mchid', { mchid: '1900000109' }],
    ['appid', { appid: 'wx0000000000000000' }],
  ])("a genuinely signed notification for another merchant's %s is refused as WRONG_MERCHANT", (_field, overrides) => {
    const body = envelope(encrypt(sampleTransaction(overrides)));
    expect(verify(provider, body, signed(body, nowSeconds))).toMatchObject({
      ok: false,
      rejection: { code: 'WRONG_MERCHANT' },
    });
  });

  test.each([
    ['yuan as a string', '1.00'],
    ['a fraction of a fen', 100.5],
    ['a negative amount', -100],
  ])('a signed notification whose amount.total is %s is refused as MALFORMED_BODY', (_what, total) => {
    const body = envelope(
      encrypt(sampleTransaction({ amount: { payer_total: 100, total, currency: 'CNY', payer_currency: 'CNY' } })),
    );
    const verdict = verify(provider, body, signed(body, nowSeconds));
    expect(verdict).toMatchObject({ ok: false, rejection: { code: 'MALFORMED_BODY' } });
    expect(!verdict.ok && verdict.rejection.message).toMatch(/amount\.total/);
  });

  test('a resource encrypted with another API v3 key does not decrypt and is refused', () => {
    const body = envelope(encrypt(sampleTransaction(), randomBytes(16).toString('hex')));
    expect(verify(provider, body, signed(body, nowSeconds))).toMatchObject({
      ok: false,
      rejection: { code: 'MALFORMED_BODY', message: expect.stringMatching(/decrypt/) },
    });
  });

  test('a REFUND.SUCCESS notification is a verified refund notice: the refund SUCCEEDED', () => {
    const refund = {
      mchid: MCH_ID,
      transaction_id: '1217752501201407033233368018',
      out_trade_no: '1217752501201407033233368018',
      refund_id: '50000000382019052709732678859',
      out_refund_no: '1217752501201407033233368018',
      refund_status: 'SUCCESS',
      success_time: '2018-06-08T10:34:56+08:00',
      user_received_account: '招商银行信用卡0403',
      amount: { total: 999, refund: 999, payer_total: 999, payer_refund: 999 },
    };
    const body = envelope(encrypt(refund, API_V3_KEY, 'refund'), 'REFUND.SUCCESS', 'EV-refund-1');
    expect(verify(provider, body, signed(body, nowSeconds))).toMatchObject({
      ok: false,
      rejection: {
        code: 'UNSUPPORTED_EVENT',
        notice: {
          provider: 'wechat',
          kind: 'REFUND',
          refundedAmount: 999,
          outRefundNo: '1217752501201407033233368018',
          refundNo: '50000000382019052709732678859',
          refundStatus: 'SUCCEEDED',
          providerEvent: 'REFUND.SUCCESS/SUCCESS',
        },
      },
    });
  });

  test.each([
    ['REFUND.ABNORMAL', 'ABNORMAL'],
    ['REFUND.CLOSED', 'CLOSED'],
  ])(
    'a %s notification is a verified refund notice: the refund FAILED (the buyer has not got the money)',
    (event, status) => {
      // WeChat's documented refund resource of a refund to a bank card that could not be completed: no success_time.
      const refund = {
        mchid: MCH_ID,
        transaction_id: '1217752501201407033233368018',
        out_trade_no: '1217752501201407033233368018',
        refund_id: '50000000382019052709732678859',
        out_refund_no: 'rf-1217752501201407033233368018',
        refund_status: status,
        user_received_account: '招商银行信用卡0403',
        amount: { total: 999, refund: 999, payer_total: 999, payer_refund: 999 },
      };
      const body = envelope(encrypt(refund, API_V3_KEY, 'refund'), event, 'EV-refund-2');
      expect(verify(provider, body, signed(body, nowSeconds))).toMatchObject({
        ok: false,
        rejection: {
          code: 'UNSUPPORTED_EVENT',
          notice: {
            provider: 'wechat',
            notificationId: 'EV-refund-2',
            kind: 'REFUND',
            outTradeNo: '1217752501201407033233368018',
            outRefundNo: 'rf-1217752501201407033233368018',
            refundNo: '50000000382019052709732678859',
            refundStatus: 'FAILED',
            refundedAmount: 999,
            providerEvent: `${event}/${status}`,
          },
        },
      });
    },
  );

  test('acknowledgement is HTTP 204 and a refusal is answered with code FAIL', () => {
    expect(provider.ack.status).toBe(204);
    expect(provider.failureAck?.({ code: 'BAD_SIGNATURE', message: 'nope' })).toEqual({
      status: 401,
      contentType: 'application/json',
      body: '{"code":"FAIL","message":"nope"}',
    });
  });

  test('order ids made from an Idempotency-Key fit WeChat out_trade_no and map back exactly', () => {
    const orderId = `ord_k${createHash('sha256').update('u1\u0000key').digest('hex').slice(0, 32)}`;
    const sent = toWechatOutTradeNo(orderId);
    expect(sent).toMatch(/^[0-9A-Za-z_\-|*]{6,32}$/);
    expect(fromWechatOutTradeNo(sent)).toBe(orderId);
    expect(toWechatOutTradeNo('ord_mfz1abc0123456789abcdef')).toBe('ord_mfz1abc0123456789abcdef');
    expect(fromWechatOutTradeNo('ord_mfz1abc0123456789abcdef')).toBe('ord_mfz1abc0123456789abcdef');
  });
});

describe('WeChat Pay API calls', () => {
  let api: FakeServer;
  const orders = new Map<string, { state: string; total: number; transactionId?: string; successTime?: string }>();
  const refunds = new Map<string, Record<string, unknown>>();
  let bill = { gzip: Buffer.alloc(0), sha1: '' };
  let unsigned = false;

  function reply(status: number, json?: unknown) {
    const body = json === undefined ? '' : JSON.stringify(json);
    return {
      status,
      headers: {
        ...(unsigned ? {} : signed(body, Math.floor(Date.now() / 1000))),
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      body,
    };
  }

  beforeAll(async () => {
    api = await startFakeServer((req) => {
      if (req.url.startsWith('/billdownload'))
        return { status: 200, headers: { 'content-type': 'application/octet-stream' }, body: bill.gzip };
      // The API's own check of our Authorization header.
      const auth = /^WECHATPAY2-SHA256-RSA2048 (.*)$/.exec(String(req.headers.authorization ?? ''));
      const fields = Object.fromEntries([...(auth?.[1] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
      const message = `${req.method}\n${req.url}\n${fields.timestamp}\n${fields.nonce_str}\n${req.body.toString('utf8')}\n`;
      const ok =
        fields.mchid === MCH_ID &&
        fields.serial_no === MERCHANT_SERIAL &&
        Math.abs(Number(fields.timestamp) - Date.now() / 1000) < 300 &&
        createVerify('RSA-SHA256')
          .update(message, 'utf8')
          .verify(merchantKeys.publicKey, fields.signature ?? '', 'base64');
      if (!ok) return reply(401, { code: 'SIGN_ERROR', message: 'bad request signature' });
      const url = new URL(req.url, 'http://x');
      const body = req.body.length ? (JSON.parse(req.body.toString('utf8')) as Record<string, any>) : {};
      let m: RegExpExecArray | null;
      if (req.method === 'POST' && url.pathname === '/v3/pay/transactions/native') {
        orders.set(body.out_trade_no, { state: 'NOTPAY', total: body.amount.total });
        return reply(200, { code_url: `weixin://wxpay/bizpayurl?pr=${body.out_trade_no}` });
      }
      if (req.method === 'GET' && (m = /^\/v3\/pay\/transactions\/out-trade-no\/([^/]+)$/.exec(url.pathname))) {
        const order = orders.get(decodeURIComponent(m[1]!));
        if (!order || url.searchParams.get('mchid') !== MCH_ID)
          return reply(404, { code: 'ORDER_NOT_EXIST', message: '订单不存在' });
        return reply(200, {
          appid: APP_ID,
          mchid: MCH_ID,
          out_trade_no: decodeURIComponent(m[1]!),
          trade_state: order.state,
          ...(order.transactionId ? { transaction_id: order.transactionId, success_time: order.successTime } : {}),
          amount: { total: order.total, currency: 'CNY', ...(order.transactionId ? { payer_total: order.total } : {}) },
        });
      }
      if (req.method === 'POST' && (m = /^\/v3\/pay\/transactions\/out-trade-no\/([^/]+)\/close$/.exec(url.pathname))) {
        const order = orders.get(decodeURIComponent(m[1]!));
        if (!order) return reply(404, { code: 'ORDER_NOT_EXIST', message: '订单不存在' });
        if (order.state === 'SUCCESS') return reply(400, { code: 'ORDERPAID', message: '订单已支付' });
        order.state = 'CLOSED';
        return reply(204);
      }
      if (req.method === 'GET' && (m = /^\/v3\/refund\/domestic\/refunds\/([^/]+)$/.exec(url.pathname))) {
        const refund = refunds.get(decodeURIComponent(m[1]!));
        return refund ? reply(200, refund) : reply(404, { code: 'RESOURCE_NOT_EXISTS', message: '退款单不存在' });
      }
      if (req.method === 'POST' && url.pathname === '/v3/refund/domestic/refunds') {
        const order = orders.get(body.out_trade_no);
        if (!order || order.state !== 'SUCCESS' || body.amount.total !== order.total)
          return reply(400, { code: 'INVALID_REQUEST', message: 'bad refund' });
        const refund = {
          refund_id: `5000${refunds.size + 1}`,
          out_refund_no: body.out_refund_no,
          status: 'SUCCESS',
          success_time: '2024-01-01T12:00:00+08:00',
          amount: { refund: body.amount.refund, total: order.total },
        };
        refunds.set(body.out_refund_no, refund);
        return reply(200, refund);
      }
      if (req.method === 'GET' && url.pathname === '/v3/bill/tradebill') {
        if (url.searchParams.get('bill_date') === '2024-01-08')
          return reply(400, { code: 'STATEMENT_CREATING', message: '账单生成中' });
        if (url.searchParams.get('bill_date') !== '2024-01-01')
          return reply(400, { code: 'NO_STATEMENT_EXIST', message: '请求的账单文件不存在' });
        return reply(200, {
          hash_type: 'SHA1',
          hash_value: bill.sha1,
          download_url: `${api.url}/billdownload?token=t1&tartype=gzip`,
        });
      }
      return reply(404, { code: 'NOT_FOUND', message: req.url });
    });
  });

  afterAll(async () => {
    await api?.close();
  });

  const provider = () => createWechatProvider(config(api.url));

  test('createPayment sends a signed Native order in fen with a +08:00 expiry and returns code_url', async () => {
    const orderId = `ord_k${'ab'.repeat(16)}`;
    const created = await provider().createPayment({
      outTradeNo: orderId,
      amount: 1234,
      currency: 'CNY',
      subject: 'Order x',
      notifyUrl: 'https://shop.example.com/callbacks/wechat',
      expiresAt: '2024-01-01T02:30:00.000Z',
    });
    const sentNo = toWechatOutTradeNo(orderId);
    expect(created).toEqual({ tradeNo: '', paymentUrl: `weixin://wxpay/bizpayurl?pr=${sentNo}` });
    const sent = JSON.parse(api.requests.at(-1)!.body.toString('utf8'));
    expect(sent).toEqual({
      appid: APP_ID,
      mchid: MCH_ID,
      description: 'Order x',
      out_trade_no: sentNo,
      time_expire: '2024-01-01T10:30:00+08:00',
      notify_url: 'https://shop.example.com/callbacks/wechat',
      amount: { total: 1234, currency: 'CNY' },
    });
  });

  test('queryPayment maps SUCCESS, NOTPAY, CLOSED and REFUND and reports an unknown order as NOT_FOUND', async () => {
    const p = provider();
    orders.set('wx-q-paid', {
      state: 'SUCCESS',
      total: 1234,
      transactionId: '4200000001',
      successTime: '2024-01-01T10:00:05+08:00',
    });
    orders.set('wx-q-wait', { state: 'NOTPAY', total: 1234 });
    orders.set('wx-q-closed', { state: 'CLOSED', total: 1234 });
    orders.set('wx-q-refund', {
      state: 'REFUND',
      total: 1234,
      transactionId: '4200000002',
      successTime: '2024-01-01T10:00:05+08:00',
    });
    expect(await p.queryPayment('wx-q-paid')).toEqual({
      outTradeNo: 'wx-q-paid',
      status: 'PAID',
      tradeNo: '4200000001',
      paidAmount: 1234,
      currency: 'CNY',
      merchantId: MCH_ID,
      paidAt: '2024-01-01T02:00:05.000Z',
    });
    expect(await p.queryPayment('wx-q-wait')).toMatchObject({ status: 'PENDING' });
    expect(await p.queryPayment('wx-q-closed')).toMatchObject({ status: 'CLOSED' });
    expect(await p.queryPayment('wx-q-refund')).toMatchObject({ status: 'REFUNDED', paidAmount: 1234 });
    expect(await p.queryPayment('wx-q-none')).toEqual({ outTradeNo: 'wx-q-none', status: 'NOT_FOUND' });
  });

  test('closePayment closes an unpaid order and treats ORDERPAID as already paid', async () => {
    const p = provider();
    orders.set('wx-c-wait', { state: 'NOTPAY', total: 100 });
    orders.set('wx-c-paid', {
      state: 'SUCCESS',
      total: 100,
      transactionId: '4200000003',
      successTime: '2024-01-01T10:00:05+08:00',
    });
    expect(await p.closePayment('wx-c-wait')).toEqual({ result: 'CLOSED' });
    expect(orders.get('wx-c-wait')!.state).toBe('CLOSED');
    expect(await p.closePayment('wx-c-paid')).toEqual({ result: 'ALREADY_PAID' });
    expect(await p.closePayment('wx-c-none')).toEqual({ result: 'NOT_FOUND' });
  });

  test('a retried refund finds the refund made with the same out_refund_no and never posts a second one; the refund names our callback route as its notify_url', async () => {
    // As the worker builds it (createProviders): WeChat reports a refund's outcome (a PROCESSING one that ends ABNORMAL
    // or CLOSED included) only to the notify_url of the refund request.
    const p = createProviders({
      sandboxEnabled: false,
      sandboxUrl: 'http://127.0.0.1:1',
      sandboxSecret: 'unused-secret',
      sandboxMerchantId: 'unused',
      providers: { wechat: config(api.url) },
      publicBaseUrl: 'https://pay.example.com',
    }).wechat!;
    orders.set('wx-r-paid', {
      state: 'SUCCESS',
      total: 2000,
      transactionId: '4200000004',
      successTime: '2024-01-01T10:00:05+08:00',
    });
    const before = api.requests.length;
    const first = await p.refund({
      outTradeNo: 'wx-r-paid',
      outRefundNo: 'rf-wx-r-paid-1',
      amount: 500,
      reason: 'late',
    });
    const second = await p.refund({
      outTradeNo: 'wx-r-paid',
      outRefundNo: 'rf-wx-r-paid-1',
      amount: 500,
      reason: 'late',
    });
    expect(first).toEqual({
      refundNo: expect.stringMatching(/^5000\d+$/),
      amount: 500,
      refundedAt: '2024-01-01T04:00:00.000Z',
    });
    expect(second).toEqual(first);
    const posts = api.requests
      .slice(before)
      .filter((r) => r.method === 'POST' && r.url === '/v3/refund/domestic/refunds');
    expect(posts).toHaveLength(1);
    expect(JSON.parse(posts[0]!.body.toString('utf8'))).toMatchObject({
      out_refund_no: 'rf-wx-r-paid-1',
      notify_url: 'https://pay.example.com/callbacks/wechat',
      amount: { refund: 500, total: 2000, currency: 'CNY' },
    });
  });

  test('a refund WeChat answers PROCESSING is accepted (a bank card can take days; the bill reports one that fails), SUCCESS too; ABNORMAL or CLOSED is refused', async () => {
    const p = provider();
    const input = { outTradeNo: 'wx-r-proc', outRefundNo: 'rf-wx-r-proc-1', amount: 700, reason: 'cooling-off' };
    const answer = (status: string) => ({
      refund_id: '50000000382019052709732678859',
      out_refund_no: input.outRefundNo,
      transaction_id: '4200000006',
      out_trade_no: input.outTradeNo,
      channel: 'ORIGINAL',
      user_received_account: '招商银行信用卡0403',
      create_time: '2024-01-01T12:00:00+08:00',
      ...(status === 'SUCCESS' ? { success_time: '2024-01-01T12:00:30+08:00' } : {}),
      status,
      funds_account: 'AVAILABLE',
      amount: { total: 2000, refund: 700, payer_total: 2000, payer_refund: 700, currency: 'CNY' },
    });
    refunds.set(input.outRefundNo, answer('PROCESSING'));
    await expect(p.refund(input)).resolves.toMatchObject({ refundNo: '50000000382019052709732678859', amount: 700 });
    refunds.set(input.outRefundNo, answer('SUCCESS'));
    await expect(p.refund(input)).resolves.toEqual({
      refundNo: '50000000382019052709732678859',
      amount: 700,
      refundedAt: '2024-01-01T04:00:30.000Z',
    });
    for (const status of ['ABNORMAL', 'CLOSED']) {
      refunds.set(input.outRefundNo, answer(status));
      await expect(p.refund(input)).rejects.toMatchObject({ name: 'ProviderBusinessError', code: `REFUND_${status}` });
    }
  });

  test('an unsigned success answer is not trusted', async () => {
    orders.set('wx-unsigned', {
      state: 'SUCCESS',
      total: 1,
      transactionId: '4200000005',
      successTime: '2024-01-01T10:00:05+08:00',
    });
    unsigned = true;
    try {
      await expect(provider().queryPayment('wx-unsigned')).rejects.toBeInstanceOf(ProviderUnavailableError);
    } finally {
      unsigned = false;
    }
  });

  const billText = [
    '交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注',
    `\`2024-01-01 10:00:05,\`${APP_ID},\`${MCH_ID},\`0,\`,\`4200000001202401011234567890,\`ord_bill_w1,\`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,\`NATIVE,\`SUCCESS,\`OTHERS,\`CNY,\`12.34,\`0.00,\`0,\`0,\`0.00,\`0.00,\`,\`,\`商品, A,\`,\`0.07000,\`0.60%,\`12.34,\`0.00,\``,
    `\`2024-01-01 11:00:00,\`${APP_ID},\`${MCH_ID},\`0,\`,\`4200000001202401011234567891,\`${toWechatOutTradeNo(`ord_k${'cd'.repeat(16)}`)},\`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,\`NATIVE,\`SUCCESS,\`OTHERS,\`CNY,\`0.01,\`0.00,\`0,\`0,\`0.00,\`0.00,\`,\`,\`商品B,\`,\`0.00000,\`0.60%,\`0.01,\`0.00,\``,
    `\`2024-01-01 15:30:00,\`${APP_ID},\`${MCH_ID},\`0,\`,\`4200000001202401011234567890,\`ord_bill_w1,\`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,\`NATIVE,\`REFUND,\`OTHERS,\`CNY,\`0.00,\`0.00,\`50300000012024010112345678,\`rf-ord_bill_w1-1,\`5.00,\`0.00,\`ORIGINAL,\`SUCCESS,\`商品, A,\`,\`-0.03000,\`0.60%,\`0.00,\`5.00,\``,
    '总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额',
    '`3,`12.35,`5.00,`0.00,`0.04000,`12.35,`5.00',
  ].join('\r\n');

  test('billRows downloads the gzip bill, checks the SHA1 of the bill inside it and yields payments and refunds in fen, skipping the summary', async () => {
    const gzip = gzipSync(Buffer.from(billText, 'utf8'));
    // WeChat's hash_value is the original bill's (原始账单（gzip需要解压缩）的摘要值), not the gzip's.
    bill = { gzip, sha1: createHash('sha1').update(Buffer.from(billText, 'utf8')).digest('hex') };
    const rows = await collect(provider().billRows('2024-01-01'));
    expect(rows).toEqual([
      {
        kind: 'PAYMENT',
        outTradeNo: 'ord_bill_w1',
        tradeNo: '4200000001202401011234567890',
        amount: 1234,
        currency: 'CNY',
        at: '2024-01-01T02:00:05.000Z',
      },
      {
        kind: 'PAYMENT',
        outTradeNo: `ord_k${'cd'.repeat(16)}`,
        tradeNo: '4200000001202401011234567891',
        amount: 1,
        currency: 'CNY',
        at: '2024-01-01T03:00:00.000Z',
      },
      {
        kind: 'REFUND',
        outTradeNo: 'ord_bill_w1',
        tradeNo: '4200000001202401011234567890',
        outRefundNo: 'rf-ord_bill_w1-1',
        amount: 500,
        currency: 'CNY',
        at: '2024-01-01T07:30:00.000Z',
        refundStatus: 'SUCCEEDED',
        providerStatus: 'SUCCESS',
      },
    ]);
  });

  test('a bill file whose hash does not match the signed answer is refused', async () => {
    const gzip = gzipSync(Buffer.from(billText, 'utf8'));
    bill = { gzip, sha1: createHash('sha1').update('something else').digest('hex') };
    await expect(collect(provider().billRows('2024-01-01'))).rejects.toThrow(/hash/);
    // Nor is one whose hash is the gzip's own: WeChat never sends that, so it is not the bill WeChat signed for.
    bill = { gzip, sha1: createHash('sha1').update(gzip).digest('hex') };
    await expect(collect(provider().billRows('2024-01-01'))).rejects.toThrow(/hash/);
  });

  test("a day WeChat has no bill for (NO_STATEMENT_EXIST: no trade and no refund that day) is an empty bill once the day's bills are out; before 10:00 China time the next day, and while WeChat is creating it, BILL_NOT_READY", async () => {
    // Today in China time: its bills are not out before 10:00 tomorrow. A day long past: an empty bill.
    const today = new Date(Date.now() + 8 * 3_600_000).toISOString().slice(0, 10);
    await expect(collect(provider().billRows(today))).rejects.toMatchObject({ code: 'BILL_NOT_READY' });
    expect(await collect(provider().billRows('2024-01-09'))).toEqual([]);
    await expect(collect(provider().billRows('2024-01-08'))).rejects.toMatchObject({ code: 'BILL_NOT_READY' });
  });
});

describe('WeChat Pay trade bill parser', () => {
  const columnLine =
    '交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注';
  const refundLine = (refundNo: string, status: string) =>
    `\`2024-01-02 09:15:00,\`${APP_ID},\`${MCH_ID},\`0,\`,\`4200000001202401011234567890,\`ord_bill_w1,\`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,\`NATIVE,\`REFUND,\`CMB_CREDIT,\`CNY,\`0.00,\`0.00,\`5030000001202401021234${refundNo.slice(-4)},\`${refundNo},\`3.00,\`0.00,\`ORIGINAL,\`${status},\`商品A,\`,\`-0.02000,\`0.60%,\`0.00,\`3.00,\``;

  test.each([
    ['CHANGE', 'FAILED'],
    ['REFUNDCLOSE', 'FAILED'],
    ['PROCESSING', 'PROCESSING'],
    ['SUCCESS', 'SUCCEEDED'],
  ])('a REFUND line whose 退款状态 is %s keeps that outcome (%s), never a plain refund', async (status, outcome) => {
    const rows = await collect(
      parseWechatTradeBill([
        columnLine,
        refundLine('rf-ord_bill_w1-0002', status),
        '总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额',
        '`1,`0.00,`3.00,`0.00,`-0.02000,`0.00,`3.00',
      ]),
    );
    expect(rows).toEqual([
      {
        kind: 'REFUND',
        outTradeNo: 'ord_bill_w1',
        tradeNo: '4200000001202401011234567890',
        outRefundNo: 'rf-ord_bill_w1-0002',
        amount: 300,
        currency: 'CNY',
        at: '2024-01-02T01:15:00.000Z',
        refundStatus: outcome,
        providerStatus: status,
      },
    ]);
  });

  test('a bill without a 退款状态 column is refused rather than read as if every refund succeeded', async () => {
    const lines = ['交易时间,微信订单号,商户订单号,交易状态,货币种类,订单金额,商户退款单号,退款金额'];
    await expect(collect(parseWechatTradeBill(lines))).rejects.toThrow(/no column 退款状态/);
  });

  test('a row whose amount is not a yuan amount stops the parse with its line number', async () => {
    const lines = [
      '交易时间,微信订单号,商户订单号,交易状态,货币种类,订单金额,商户退款单号,退款金额,退款状态',
      '`2024-01-01 10:00:05,`42,`o1,`SUCCESS,`CNY,`1234,`0,`0.00,`'.replace('`1234', '`12.345'),
    ];
    await expect(collect(parseWechatTradeBill(lines))).rejects.toThrow(/line 2: 订单金额 "12.345"/);
  });
});
