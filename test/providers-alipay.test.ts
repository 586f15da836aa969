/**
 * The Alipay adapter offline: notifications built from Alipay's documented sample fields and signed in the test
 * with a key generated here; the gateway calls against a local fake gateway that checks our RSA2 request
 * signatures and signs its answers like Alipay; the trade bill from a GBK ZIP in Alipay's layout.
 */
import { createSign, createVerify } from 'node:crypto';
import iconv from 'iconv-lite';
import { createAlipayProvider, parseAlipayTradeBill } from '../src/providers/alipay';
import type { AlipayConfig } from '../src/providers/config';
import { chinaDateTime } from '../src/providers/http';
import { ProviderUnavailableError } from '../src/providers/sandbox';
import type { PaymentProvider } from '../src/providers/types';
import { type FakeServer, buildZip, collect, rsaPair, startFakeServer } from './support/provider-fakes';

// From Alipay's documented notification sample.
const APP_ID = '2014072300007148';
const SELLER_ID = '2088102119685838';

const appKeys = rsaPair(); // the merchant's application key pair: we sign requests, the gateway verifies
const alipayKeys = rsaPair(); // Alipay's key pair: Alipay signs notifications and answers, we verify
const strangerKeys = rsaPair();

function config(gateway = 'https://openapi.alipay.com/gateway.do'): AlipayConfig {
  return {
    appId: APP_ID,
    sellerId: SELLER_ID,
    privateKey: appKeys.privateKey,
    alipayPublicKey: alipayKeys.publicKey,
    gateway,
    payMethod: 'page',
  };
}

/** Alipay's documented notification fields (trade_status_sync for a page-pay trade). */
function sampleNotification(overrides: Record<string, string | undefined> = {}): Record<string, string> {
  const fields: Record<string, string | undefined> = {
    gmt_create: '2015-04-27 15:45:57',
    charset: 'utf-8',
    seller_email: 'zhu***@domain.com',
    subject: '订单 Order 6823789339978248',
    buyer_id: '2088102122524333',
    invoice_amount: '10.00',
    notify_id: '4a91b7a78a503640467525113fb7d8bg8e',
    fund_bill_list: '[{"amount":"10.00","fundChannel":"ALIPAYACCOUNT"}]',
    notify_type: 'trade_status_sync',
    trade_status: 'TRADE_SUCCESS',
    receipt_amount: '10.00',
    app_id: APP_ID,
    buyer_pay_amount: '10.00',
    seller_id: SELLER_ID,
    gmt_payment: '2015-04-27 15:45:57',
    notify_time: '2015-04-27 15:45:57',
    version: '1.0',
    out_trade_no: '6823789339978248',
    total_amount: '10.00',
    trade_no: '2015042721001004330000121536',
    auth_app_id: APP_ID,
    buyer_logon_id: 'zhu***@domain.com',
    point_amount: '0.00',
    ...overrides,
  };
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)) as Record<string, string>;
}

/** Signs as the spec says, independently of the adapter: drop sign/sign_type, sort, k=v&..., SHA256withRSA. */
function signNotification(fields: Record<string, string>, key = alipayKeys.privateKey): string {
  const content = Object.keys(fields)
    .filter((k) => k !== 'sign' && k !== 'sign_type')
    .sort()
    .map((k) => `${k}=${fields[k]}`)
    .join('&');
  const sign = createSign('RSA-SHA256').update(content, 'utf8').sign(key, 'base64');
  return new URLSearchParams({ ...fields, sign_type: 'RSA2', sign }).toString();
}

const NOW = new Date('2015-04-27T07:46:00Z');

function verify(provider: PaymentProvider, body: string | Buffer) {
  return provider.verifyNotification(
    Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8'),
    { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
    NOW,
  );
}

describe('Alipay notifications', () => {
  const provider = createAlipayProvider(config());

  test('a correctly signed notification with the documented sample fields parses to the normalised payment', () => {
    const verdict = verify(provider, signNotification(sampleNotification()));
    expect(verdict).toEqual({
      ok: true,
      notification: {
        provider: 'alipay',
        notificationId: '4a91b7a78a503640467525113fb7d8bg8e',
        outTradeNo: '6823789339978248',
        tradeNo: '2015042721001004330000121536',
        amount: 1000,
        currency: 'CNY',
        merchantId: SELLER_ID,
        paidAt: '2015-04-27T07:45:57.000Z',
      },
    });
  });

  test.each([
    ['88.88', 8888],
    ['0.01', 1],
    ['12.3', 1230],
    ['1024', 102400],
    ['19999999.99', 1999999999],
  ])('total_amount %s yuan becomes %i fen exactly', (yuan, fen) => {
    const verdict = verify(
      provider,
      signNotification(sampleNotification({ total_amount: yuan, receipt_amount: yuan })),
    );
    expect(verdict.ok && verdict.notification.amount).toBe(fen);
  });

  test('TRADE_FINISHED counts as paid', () => {
    const verdict = verify(provider, signNotification(sampleNotification({ trade_status: 'TRADE_FINISHED' })));
    expect(verdict.ok).toBe(true);
  });

  test('a notification signed with another key is refused as BAD_SIGNATURE', () => {
    const verdict = verify(provider, signNotification(sampleNotification(), strangerKeys.privateKey));
    expect(verdict).toMatchObject({ ok: false, rejection: { code: 'BAD_SIGNATURE' } });
  });

  test('a body changed by one byte after signing is refused', () => {
    const body = Buffer.from(signNotification(sampleNotification()), 'utf8');
    const at = body.indexOf('total_amount=10.00') + 'total_amount=1'.length;
    body[at] = '1'.charCodeAt(0); // 10.00 -> 11.00
    expect(verify(provider, body)).toMatchObject({ ok: false, rejection: { code: 'BAD_SIGNATURE' } });
  });

  test('a signature computed with sign_type included is refused, as the spec excludes it', () => {
    const fields = { ...sampleNotification(), sign_type: 'RSA2' };
    const content = Object.keys(fields)
      .sort()
      .map((k) => `${k}=${fields[k as keyof typeof fields]}`)
      .join('&');
    const sign = createSign('RSA-SHA256').update(content, 'utf8').sign(alipayKeys.privateKey, 'base64');
    expect(verify(provider, new URLSearchParams({ ...fields, sign }).toString())).toMatchObject({
      ok: false,
      rejection: { code: 'BAD_SIGNATURE' },
    });
  });

  test('a notification without sign, or with the old RSA sign_type, is refused', () => {
    const fields = sampleNotification();
    expect(verify(provider, new URLSearchParams(fields).toString())).toMatchObject({
      ok: false,
      rejection: { code: 'MISSING_SIGNATURE' },
    });
    const rsa1 = signNotification(fields).replace('sign_type=RSA2', 'sign_type=RSA');
    expect(verify(provider, rsa1)).toMatchObject({ ok: false, rejection: { code: 'MALFORMED_SIGNATURE' } });
  });

  test.each([
    ['app_id', { app_id: '2021000000000001', auth_app_id: '2021000000000001' }],
    ['seller_id', { seller_id: '2088000000000001' }],
  ])("a genuinely signed notification for another merchant's %s is refused as WRONG_MERCHANT", (_field, overrides) => {
    const verdict = verify(provider, signNotification(sampleNotification(overrides)));
    expect(verdict).toMatchObject({ ok: false, rejection: { code: 'WRONG_MERCHANT' } });
  });

  test.each(['10.001', '1e3', '-10.00', '10,00', ' 10.00', '010.00', ''])(
    'a signed notification with total_amount %j is refused as MALFORMED_BODY',
    (amount) => {
      const verdict = verify(provider, signNotification(sampleNotification({ total_amount: amount })));
      expect(verdict).toMatchObject({ ok: false, rejection: { code: 'MALFORMED_BODY' } });
      expect(!verdict.ok && verdict.rejection.message).toMatch(/total_amount/);
    },
  );

  test('TRADE_CLOSED after a full refund is a verified notice of a refund-close, not a timeout close', () => {
    const verdict = verify(
      provider,
      signNotification(
        sampleNotification({
          trade_status: 'TRADE_CLOSED',
          refund_fee: '10.00',
          gmt_refund: '2015-04-28 10:00:00.123',
          out_biz_no: 'rf-6823789339978248',
          gmt_close: '2015-04-28 10:00:01',
          notify_id: 'n-refund-close',
        }),
      ),
    );
    expect(verdict).toMatchObject({
      ok: false,
      rejection: {
        code: 'UNSUPPORTED_EVENT',
        notice: {
          provider: 'alipay',
          kind: 'TRADE_CLOSED',
          closeReason: 'FULLY_REFUNDED',
          refundedAmount: 1000,
          outRefundNo: 'rf-6823789339978248',
          outTradeNo: '6823789339978248',
          merchantId: SELLER_ID,
          at: '2015-04-28T02:00:00.123Z',
        },
      },
    });
  });

  test('TRADE_CLOSED without refund fields is a verified notice of an unpaid close', () => {
    const fields = sampleNotification({
      trade_status: 'TRADE_CLOSED',
      gmt_payment: undefined,
      gmt_close: '2015-04-27 16:00:00',
      receipt_amount: undefined,
      buyer_pay_amount: undefined,
      notify_id: 'n-timeout',
    });
    const verdict = verify(provider, signNotification(fields));
    expect(verdict).toMatchObject({
      ok: false,
      rejection: {
        code: 'UNSUPPORTED_EVENT',
        notice: { kind: 'TRADE_CLOSED', closeReason: 'UNPAID', at: '2015-04-27T08:00:00.000Z' },
      },
    });
    expect(!verdict.ok && verdict.rejection.notice?.refundedAmount).toBeUndefined();
  });

  test('a TRADE_SUCCESS that carries a partial refund is a refund notice, not a second payment', () => {
    const verdict = verify(
      provider,
      signNotification(
        sampleNotification({
          refund_fee: '3.00',
          gmt_refund: '2015-04-28 10:00:00',
          out_biz_no: 'rf-partial-1',
          notify_id: 'n-partial',
        }),
      ),
    );
    expect(verdict).toMatchObject({
      ok: false,
      rejection: {
        code: 'UNSUPPORTED_EVENT',
        notice: { kind: 'REFUND', refundedAmount: 300, outRefundNo: 'rf-partial-1' },
      },
    });
  });

  test('a TRADE_SUCCESS whose refund fields are present but empty is the payment, not a refund notice', () => {
    const verdict = verify(
      provider,
      signNotification(sampleNotification({ refund_fee: '0.00', gmt_refund: '', out_biz_no: '' })),
    );
    expect(verdict).toMatchObject({ ok: true, notification: { outTradeNo: '6823789339978248', amount: 1000 } });
  });

  test('a notification in GBK (the charset an app may be set to) verifies over its GBK bytes', () => {
    const fields = sampleNotification({ charset: 'gbk' });
    const content = Object.keys(fields)
      .sort()
      .map((k) => `${k}=${fields[k]}`)
      .join('&');
    const sign = createSign('RSA-SHA256').update(iconv.encode(content, 'gbk')).sign(alipayKeys.privateKey, 'base64');
    const encode = (v: string) =>
      [...iconv.encode(v, 'gbk')]
        .map((b) =>
          /[A-Za-z0-9._~-]/.test(String.fromCharCode(b))
            ? String.fromCharCode(b)
            : `%${b.toString(16).toUpperCase().padStart(2, '0')}`,
        )
        .join('');
    const body = Object.entries({ ...fields, sign_type: 'RSA2', sign })
      .map(([k, v]) => `${k}=${encode(v)}`)
      .join('&');
    const verdict = verify(provider, body);
    expect(verdict.ok && verdict.notification.outTradeNo).toBe('6823789339978248');
  });

  test('the acknowledgement is the body success', () => {
    expect(provider.ack).toEqual({ status: 200, contentType: 'text/plain', body: 'success' });
  });
});

describe('Alipay gateway calls', () => {
  let gateway: FakeServer;
  let billZip: Buffer = Buffer.alloc(0);
  /** The fake gateway's trades and refunds (refunds keyed by out_request_no: Alipay's idempotency). */
  const trades = new Map<string, { status: string; total: string; tradeNo: string; paidAt?: string }>();
  const refunds = new Map<string, { outTradeNo: string; amount: string }>();
  let tamper = false;

  function answer(method: string, node: Record<string, unknown>) {
    const key = `${method.replaceAll('.', '_')}_response`;
    const nodeText = JSON.stringify(node);
    const sign = createSign('RSA-SHA256').update(nodeText, 'utf8').sign(alipayKeys.privateKey, 'base64');
    const shown = tamper ? nodeText.replace(/"total_amount":"[^"]*"/, '"total_amount":"0.01"') : nodeText;
    return {
      status: 200,
      headers: { 'content-type': 'application/json;charset=utf-8' },
      body: `{"${key}":${shown},"sign":"${sign}"}`,
    };
  }

  const fail = (method: string, subCode: string) =>
    answer(method, { code: '40004', msg: 'Business Failed', sub_code: subCode, sub_msg: subCode });

  beforeAll(async () => {
    gateway = await startFakeServer((req) => {
      if (req.url.startsWith('/bill.zip'))
        return { status: 200, headers: { 'content-type': 'application/zip' }, body: billZip };
      const params = new URLSearchParams(req.body.toString('utf8'));
      // The gateway's own checks of our request: RSA2 over all non-empty parameters but sign, and a China-time stamp.
      const content = [...params]
        .filter(([k, v]) => k !== 'sign' && v !== '')
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, v]) => `${k}=${v}`)
        .join('&');
      const signed = createVerify('RSA-SHA256')
        .update(content, 'utf8')
        .verify(appKeys.publicKey, params.get('sign') ?? '', 'base64');
      const stamp = params.get('timestamp') ?? '';
      const skewMs = Math.abs(new Date(`${stamp.replace(' ', 'T')}+08:00`).getTime() - Date.now());
      if (!signed || params.get('sign_type') !== 'RSA2' || params.get('app_id') !== APP_ID || !(skewMs < 60_000)) {
        return {
          status: 200,
          body: JSON.stringify({
            error_response: {
              code: '40002',
              msg: 'Invalid Arguments',
              sub_code: 'isv.invalid-signature',
              sub_msg: 'bad request signature',
            },
          }),
        };
      }
      const method = params.get('method')!;
      const biz = JSON.parse(params.get('biz_content') ?? '{}') as Record<string, string>;
      const trade = trades.get(biz.out_trade_no ?? '');
      switch (method) {
        case 'alipay.trade.query':
          if (!trade) return fail(method, 'ACQ.TRADE_NOT_EXIST');
          return answer(method, {
            code: '10000',
            msg: 'Success',
            out_trade_no: biz.out_trade_no,
            trade_no: trade.tradeNo,
            trade_status: trade.status,
            total_amount: trade.total,
            ...(trade.paidAt ? { send_pay_date: trade.paidAt } : {}),
          });
        case 'alipay.trade.close':
          if (!trade) return fail(method, 'ACQ.TRADE_NOT_EXIST');
          if (trade.status !== 'WAIT_BUYER_PAY') return fail(method, 'ACQ.TRADE_STATUS_ERROR');
          trade.status = 'TRADE_CLOSED';
          return answer(method, {
            code: '10000',
            msg: 'Success',
            out_trade_no: biz.out_trade_no,
            trade_no: trade.tradeNo,
          });
        case 'alipay.trade.refund': {
          if (!trade || trade.status !== 'TRADE_SUCCESS') return fail(method, 'ACQ.TRADE_STATUS_ERROR');
          const again = refunds.has(biz.out_request_no!);
          if (!again) refunds.set(biz.out_request_no!, { outTradeNo: biz.out_trade_no!, amount: biz.refund_amount! });
          return answer(method, {
            code: '10000',
            msg: 'Success',
            trade_no: trade.tradeNo,
            out_trade_no: biz.out_trade_no,
            fund_change: again ? 'N' : 'Y',
            refund_fee: biz.refund_amount,
            gmt_refund_pay: '2024-01-01 12:00:00',
          });
        }
        case 'alipay.trade.fastpay.refund.query': {
          const refund = refunds.get(biz.out_request_no!);
          if (!refund) return answer(method, { code: '10000', msg: 'Success' });
          return answer(method, {
            code: '10000',
            msg: 'Success',
            out_request_no: biz.out_request_no,
            refund_amount: refund.amount,
            refund_status: 'REFUND_SUCCESS',
            gmt_refund_pay: '2024-01-01 12:00:00',
          });
        }
        case 'alipay.data.dataservice.bill.downloadurl.query':
          if (biz.bill_date !== '2024-01-01') return fail(method, 'isp.bill_not_exist');
          return answer(method, {
            code: '10000',
            msg: 'Success',
            bill_download_url: `${gateway.url}/bill.zip?token=abc`,
          });
        default:
          return fail(method, 'isv.missing-method');
      }
    });
  });

  afterAll(async () => {
    await gateway?.close();
  });

  const provider = () => createAlipayProvider(config(`${gateway.url}/gateway.do`));

  test('createPayment builds a cashier URL whose RSA2 signature, amount and China-time expiry are right', async () => {
    const created = await provider().createPayment({
      outTradeNo: 'ord_pay_1',
      amount: 1234,
      currency: 'CNY',
      subject: 'Order ord_pay_1',
      notifyUrl: 'https://shop.example.com/callbacks/alipay',
      expiresAt: '2024-01-01T02:30:00.000Z',
    });
    expect(created.tradeNo).toBe('');
    const url = new URL(created.paymentUrl);
    expect(`${url.origin}${url.pathname}`).toBe(`${gateway.url}/gateway.do`);
    const params = new URLSearchParams(url.search);
    const content = [...params]
      .filter(([k, v]) => k !== 'sign' && v !== '')
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => `${k}=${v}`)
      .join('&');
    expect(
      createVerify('RSA-SHA256').update(content, 'utf8').verify(appKeys.publicKey, params.get('sign')!, 'base64'),
    ).toBe(true);
    expect(params.get('method')).toBe('alipay.trade.page.pay');
    expect(params.get('notify_url')).toBe('https://shop.example.com/callbacks/alipay');
    expect(JSON.parse(params.get('biz_content')!)).toEqual({
      out_trade_no: 'ord_pay_1',
      total_amount: '12.34',
      subject: 'Order ord_pay_1',
      product_code: 'FAST_INSTANT_TRADE_PAY',
      time_expire: '2024-01-01 10:30:00',
    });
  });

  test('createPayment refuses a currency other than CNY', async () => {
    await expect(
      provider().createPayment({
        outTradeNo: 'o1',
        amount: 100,
        currency: 'USD',
        subject: 's',
        notifyUrl: 'https://x/cb',
        expiresAt: new Date().toISOString(),
      }),
    ).rejects.toMatchObject({ code: 'UNSUPPORTED_CURRENCY' });
  });

  test('queryPayment maps each trade status, with yuan amounts in fen and a refund-close told apart from an unpaid close', async () => {
    trades.set('q-wait', { status: 'WAIT_BUYER_PAY', total: '12.34', tradeNo: 't-wait' });
    trades.set('q-paid', { status: 'TRADE_SUCCESS', total: '12.34', tradeNo: 't-paid', paidAt: '2024-01-01 10:00:05' });
    trades.set('q-refunded', {
      status: 'TRADE_CLOSED',
      total: '0.50',
      tradeNo: 't-ref',
      paidAt: '2024-01-01 10:00:05',
    });
    trades.set('q-closed', { status: 'TRADE_CLOSED', total: '12.34', tradeNo: 't-closed' });
    const p = provider();
    expect(await p.queryPayment('q-missing')).toEqual({ outTradeNo: 'q-missing', status: 'NOT_FOUND' });
    expect(await p.queryPayment('q-wait')).toMatchObject({ status: 'PENDING', tradeNo: 't-wait' });
    expect(await p.queryPayment('q-paid')).toEqual({
      outTradeNo: 'q-paid',
      status: 'PAID',
      tradeNo: 't-paid',
      paidAmount: 1234,
      currency: 'CNY',
      merchantId: SELLER_ID,
      paidAt: '2024-01-01T02:00:05.000Z',
    });
    expect(await p.queryPayment('q-refunded')).toMatchObject({
      status: 'REFUNDED',
      paidAmount: 50,
      refundedAmount: 50,
    });
    expect(await p.queryPayment('q-closed')).toMatchObject({ status: 'CLOSED' });
  });

  test('closePayment closes a waiting trade, reports a paid one as ALREADY_PAID and an already closed one as CLOSED', async () => {
    trades.set('c-wait', { status: 'WAIT_BUYER_PAY', total: '1.00', tradeNo: 't-c1' });
    trades.set('c-paid', { status: 'TRADE_SUCCESS', total: '1.00', tradeNo: 't-c2', paidAt: '2024-01-01 10:00:00' });
    const p = provider();
    expect(await p.closePayment('c-wait')).toEqual({ result: 'CLOSED' });
    expect(trades.get('c-wait')!.status).toBe('TRADE_CLOSED');
    expect(await p.closePayment('c-wait')).toEqual({ result: 'CLOSED' });
    expect(await p.closePayment('c-paid')).toEqual({ result: 'ALREADY_PAID' });
    expect(await p.closePayment('c-never-scanned')).toEqual({ result: 'NOT_FOUND' });
  });

  test('a retried refund reuses out_request_no, so the gateway refunds once and the retry is confirmed by the refund query', async () => {
    trades.set('r-paid', { status: 'TRADE_SUCCESS', total: '20.00', tradeNo: 't-r1', paidAt: '2024-01-01 10:00:00' });
    const p = provider();
    const first = await p.refund({
      outTradeNo: 'r-paid',
      outRefundNo: 'rf-r-paid-1',
      amount: 500,
      reason: 'late payment',
    });
    const second = await p.refund({
      outTradeNo: 'r-paid',
      outRefundNo: 'rf-r-paid-1',
      amount: 500,
      reason: 'late payment',
    });
    expect(first).toEqual({ refundNo: 't-r1/rf-r-paid-1', amount: 500, refundedAt: '2024-01-01T04:00:00.000Z' });
    expect(second).toEqual(first);
    expect([...refunds].filter(([, r]) => r.outTradeNo === 'r-paid')).toEqual([
      ['rf-r-paid-1', { outTradeNo: 'r-paid', amount: '5.00' }],
    ]);
    const refundCalls = gateway.requests.filter(
      (r) => new URLSearchParams(r.body.toString()).get('method') === 'alipay.trade.refund',
    );
    expect(
      refundCalls.map((r) => JSON.parse(new URLSearchParams(r.body.toString()).get('biz_content')!).out_request_no),
    ).toEqual(['rf-r-paid-1', 'rf-r-paid-1']);
  });

  test('an answer whose signature does not match its content is not trusted', async () => {
    trades.set('t-tampered', {
      status: 'TRADE_SUCCESS',
      total: '99.00',
      tradeNo: 't-x',
      paidAt: '2024-01-01 10:00:00',
    });
    tamper = true;
    try {
      await expect(provider().queryPayment('t-tampered')).rejects.toBeInstanceOf(ProviderUnavailableError);
    } finally {
      tamper = false;
    }
  });

  test('a request signed with the wrong application key is refused by the gateway and surfaces as an error', async () => {
    const wrong = createAlipayProvider({ ...config(`${gateway.url}/gateway.do`), privateKey: strangerKeys.privateKey });
    await expect(wrong.queryPayment('q-paid')).rejects.toMatchObject({ code: 'isv.invalid-signature' });
  });

  test('billRows downloads the GBK ZIP and yields its payments and refunds, skipping headers and summary lines', async () => {
    const detail = [
      '#支付宝业务明细查询',
      `#账号：[${SELLER_ID}0156]`,
      '#起始日期：[2024年01月01日 00:00:00]   终止日期：[2024年01月02日 00:00:00]',
      '#-----------------------------------------业务明细列表----------------------------------------',
      '支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注',
      '2024010122001412340000000001\t,ord_bill_1\t,交易,商品 A,2024-01-01 09:59:50,2024-01-01 10:00:05,,,,,buy***@example.com,12.34,12.34,0.00,0.00,0.00,0.00,0.00,,0.00,0.00,,-0.07,0.00,',
      '2024010122001412340000000002\t,ord_bill_2\t,交易,"商品 B, 大号",2024-01-01 11:00:00,2024-01-01 11:00:09,,,,,buy***@example.com,0.01,0.01,0.00,0.00,0.00,0.00,0.00,,0.00,0.00,,0.00,0.00,',
      '2024010122001412340000000001\t,ord_bill_1\t,退款,商品 A,2024-01-01 09:59:50,2024-01-01 15:30:00,,,,,buy***@example.com,-5.00,-5.00,0.00,0.00,0.00,0.00,0.00,,0.00,0.00,rf-ord_bill_1-1\t,0.03,0.00,',
      '#-----------------------------------------业务明细列表结束------------------------------------',
      '#交易合计：2笔，商家实收共计：12.35元',
      '#退款合计：1笔，退款共计：-5.00元',
      '#导出时间：[2024年01月02日 10:23:45]',
    ].join('\r\n');
    const summary = ['#支付宝业务汇总查询', '门店编号,门店名称,交易订单总笔数,退款订单总笔数', ',,2,1'].join('\r\n');
    billZip = buildZip([
      { name: iconv.encode(`${SELLER_ID}0156_20240101_业务明细.csv`, 'gbk'), data: iconv.encode(detail, 'gbk') },
      { name: iconv.encode(`${SELLER_ID}0156_20240101_业务明细(汇总).csv`, 'gbk'), data: iconv.encode(summary, 'gbk') },
    ]);
    const rows = await collect(provider().billRows('2024-01-01'));
    expect(rows).toEqual([
      {
        kind: 'PAYMENT',
        outTradeNo: 'ord_bill_1',
        tradeNo: '2024010122001412340000000001',
        amount: 1234,
        currency: 'CNY',
        at: '2024-01-01T02:00:05.000Z',
      },
      {
        kind: 'PAYMENT',
        outTradeNo: 'ord_bill_2',
        tradeNo: '2024010122001412340000000002',
        amount: 1,
        currency: 'CNY',
        at: '2024-01-01T03:00:09.000Z',
      },
      {
        kind: 'REFUND',
        outTradeNo: 'ord_bill_1',
        tradeNo: '2024010122001412340000000001',
        outRefundNo: 'rf-ord_bill_1-1',
        amount: 500,
        currency: 'CNY',
        at: '2024-01-01T07:30:00.000Z',
      },
    ]);
    expect(await collect(provider().billRows('2024-01-01', { fromRow: 2 }))).toEqual(rows.slice(2));
  });

  test('billRows for a day without a bill says BILL_NOT_READY', async () => {
    await expect(collect(provider().billRows('2024-01-05'))).rejects.toMatchObject({ code: 'BILL_NOT_READY' });
  });
});

describe('Alipay trade bill parser', () => {
  test('a detail row whose amount is not a yuan amount stops the parse with its line number', async () => {
    const lines = [
      '#支付宝业务明细查询',
      '支付宝交易号,商户订单号,业务类型,完成时间,订单金额（元）,退款批次号/请求号',
      '2024\t,o1\t,交易,2024-01-01 10:00:00,12.345,',
    ];
    await expect(collect(parseAlipayTradeBill(lines))).rejects.toThrow(/line 3: 订单金额（元） "12.345"/);
  });

  test('China time stamps are formatted in UTC+8 whatever the host time zone', () => {
    expect(chinaDateTime(new Date('2024-12-31T16:00:00Z'))).toBe('2025-01-01 00:00:00');
  });
});
