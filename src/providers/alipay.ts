/**
 * Alipay adapter (OpenAPI v2 gateway, RSA2).
 *
 * Why not the official `alipay-sdk`: it was evaluated (v4.14) and does not do this job well enough to pay for its
 * ~60 transitive packages (urllib/undici, crypto-js, bignumber.js, @fidm/x509):
 * - its notification check takes an already-parsed object, not the raw body, and also accepts a signature made
 *   over the content *with* `sign_type` (a leniency the spec does not have);
 * - it stamps requests with the process's local time, while the gateway expects China time: wrong on UTC hosts;
 * - everything this adapter needs (sign the sorted parameters, verify notifications and responses with the Alipay
 *   public key) is a few lines of node:crypto, which keeps timeouts and retries consistent with the other adapters.
 * What we would miss from the SDK is the public-key *certificate* mode; this adapter supports public-key mode only.
 *
 * Payments use the cashier products (`alipay.trade.page.pay` / `alipay.trade.wap.pay`): createPayment builds a
 * signed cashier URL locally (no network call); the trade exists at Alipay only once the buyer opens it, so
 * query and close answer TRADE_NOT_EXIST until then. `time_expire` is always set.
 */
import { type KeyObject, createSign, createVerify } from 'node:crypto';
import iconv from 'iconv-lite';
import { z } from 'zod';
import { toMajorString } from '../shared/money';
import { type Download, decodedLines, downloadToTemp, listZipEntries, openZipEntry, splitCsvLine } from './bill-files';
import type { AlipayConfig } from './config';
import {
  ProviderUnavailableError,
  chinaDateTime,
  formCharset,
  httpCall,
  parseChinaDateTime,
  parseForm,
  yuanToFen,
} from './http';
import {
  type BillRow,
  type BillSource,
  type CloseResult,
  type CreatePaymentInput,
  type PaymentNotification,
  type PaymentProvider,
  type ProviderNotice,
  type ProviderPaymentState,
  type RefundInput,
  ProviderBusinessError,
} from './types';
import { accept, refuse } from './verdict';

/** Options of the Alipay adapter. */
export interface AlipayProviderOptions extends AlipayConfig {
  timeoutMs?: number;
  /** Clock for request timestamps (tests). */
  now?: () => Date;
}

/**
 * The string Alipay signs: every parameter but `sign` (and `sign_type` for notifications), sorted by key, `k=v&...`.
 */
export function alipaySignContent(
  params: Map<string, string> | Record<string, string>,
  exclude: readonly string[],
  skipEmpty: boolean,
): string {
  const entries = params instanceof Map ? [...params] : Object.entries(params);
  return entries
    .filter(([k, v]) => !exclude.includes(k) && !(skipEmpty && v === ''))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

/** Signs request parameters with the app private key (RSA2 = SHA256withRSA, base64); empty values are not signed. */
export function signAlipayRequest(params: Record<string, string>, privateKey: KeyObject): string {
  return createSign('RSA-SHA256')
    .update(alipaySignContent(params, ['sign'], true), 'utf8')
    .sign(privateKey, 'base64');
}

/** The exact text of `"<key>": {...}` in a gateway response, which is what Alipay signs. */
export function alipayResponseNode(raw: string, key: string): string | undefined {
  const at = raw.indexOf(`"${key}"`);
  if (at < 0) return undefined;
  let i = raw.indexOf(':', at + key.length + 2);
  if (i < 0) return undefined;
  i++;
  while (raw[i] === ' ' || raw[i] === '\n' || raw[i] === '\r' || raw[i] === '\t') i++;
  if (raw[i] !== '{') return undefined;
  let depth = 0;
  let inString = false;
  for (let j = i; j < raw.length; j++) {
    const ch = raw[j];
    if (inString) {
      if (ch === '\\') j++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === '{') depth++;
    else if (ch === '}' && --depth === 0) return raw.slice(i, j + 1);
  }
  return undefined;
}

/** Alipay's gateway codes that mean "try again later". */
const RETRYABLE_SUB_CODES = new Set(['ACQ.SYSTEM_ERROR', 'isp.unknow-error', 'aop.ACQ.SYSTEM_ERROR']);

const Yuan = z.string().refine((v) => yuanToFen(v) !== undefined, 'must be a yuan amount with at most 2 decimals');

/** The fields of an asynchronous trade notification this adapter reads (after the signature is verified). */
const AlipayNotify = z.object({
  notify_id: z.string().min(1),
  notify_time: z.string().min(1),
  app_id: z.string().min(1),
  seller_id: z.string().min(1),
  out_trade_no: z.string().min(1),
  trade_no: z.string().min(1),
  trade_status: z.enum(['WAIT_BUYER_PAY', 'TRADE_CLOSED', 'TRADE_SUCCESS', 'TRADE_FINISHED']),
  total_amount: Yuan,
  receipt_amount: Yuan.optional(),
  refund_fee: Yuan.optional(),
  out_biz_no: z.string().optional(),
  gmt_payment: z.string().optional(),
  gmt_refund: z.string().optional(),
  gmt_close: z.string().optional(),
});

/** Creates the Alipay adapter. */
export function createAlipayProvider(options: AlipayProviderOptions): PaymentProvider & BillSource {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const now = options.now ?? (() => new Date());

  function commonParams(
    method: string,
    bizContent: Record<string, unknown>,
    extra: Record<string, string> = {},
  ): Record<string, string> {
    const params: Record<string, string> = {
      app_id: options.appId,
      method,
      format: 'JSON',
      charset: 'utf-8',
      sign_type: 'RSA2',
      timestamp: chinaDateTime(now()),
      version: '1.0',
      biz_content: JSON.stringify(bizContent),
      ...extra,
    };
    params.sign = signAlipayRequest(params, options.privateKey);
    return params;
  }

  /** Calls the gateway and verifies the response signature; returns the response node and its codes. */
  async function exec(
    method: string,
    bizContent: Record<string, unknown>,
  ): Promise<{ code: string; subCode?: string; message: string; node: Record<string, unknown> }> {
    const params = commonParams(method, bizContent);
    const answer = await httpCall(
      options.gateway,
      {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded;charset=utf-8', accept: 'application/json' },
        body: new URLSearchParams(params).toString(),
      },
      `alipay ${method}`,
      timeoutMs,
    );
    if (answer.status !== 200) throw new ProviderUnavailableError(`alipay ${method} answered HTTP ${answer.status}`);
    const key = `${method.replaceAll('.', '_')}_response`;
    let parsed: { sign?: unknown } & Record<string, unknown>;
    try {
      parsed = JSON.parse(answer.text) as typeof parsed;
    } catch {
      throw new ProviderUnavailableError(`alipay ${method} answered with a non-JSON body`);
    }
    const nodeKey = key in parsed ? key : 'error_response';
    const nodeText = alipayResponseNode(answer.text, nodeKey);
    const node = parsed[nodeKey] as Record<string, unknown> | undefined;
    if (!nodeText || !node || typeof node !== 'object')
      throw new ProviderUnavailableError(`alipay ${method} answered without ${key}`);
    const code = String(node.code ?? '');
    const signed = typeof parsed.sign === 'string' && parsed.sign !== '';
    if (signed) {
      const ok = createVerify('RSA-SHA256')
        .update(nodeText, 'utf8')
        .verify(options.alipayPublicKey, parsed.sign as string, 'base64');
      // A response we cannot authenticate proves nothing; retrying (and alerting) is the only safe answer.
      if (!ok)
        throw new ProviderUnavailableError(
          `alipay ${method}: the response signature does not verify with ALIPAY_PUBLIC_KEY`,
        );
    } else if (code === '10000') {
      throw new ProviderUnavailableError(`alipay ${method}: an unsigned success response is not trusted`);
    }
    const subCode = typeof node.sub_code === 'string' ? node.sub_code : undefined;
    const message = `${String(node.msg ?? '')}${node.sub_msg ? `: ${String(node.sub_msg)}` : ''}`;
    if (code === '20000' || (subCode && RETRYABLE_SUB_CODES.has(subCode)))
      throw new ProviderUnavailableError(`alipay ${method}: ${code} ${subCode ?? ''} ${message}`);
    return { code, subCode, message, node };
  }

  function fail(method: string, r: { code: string; subCode?: string; message: string }): ProviderBusinessError {
    return new ProviderBusinessError(r.subCode ?? `ALIPAY_${r.code}`, `alipay ${method}: ${r.message || r.code}`);
  }

  function fen(text: unknown, field: string): number {
    const value = typeof text === 'string' ? yuanToFen(text) : undefined;
    if (value === undefined)
      throw new ProviderUnavailableError(
        `alipay answered ${field}=${JSON.stringify(text)}, which is not a yuan amount`,
      );
    return value;
  }

  async function query(outTradeNo: string): Promise<ProviderPaymentState> {
    const r = await exec('alipay.trade.query', { out_trade_no: outTradeNo });
    if (r.subCode === 'ACQ.TRADE_NOT_EXIST') return { outTradeNo, status: 'NOT_FOUND' };
    if (r.code !== '10000') throw fail('alipay.trade.query', r);
    const n = r.node;
    const status = String(n.trade_status);
    const paidAt = typeof n.send_pay_date === 'string' ? parseChinaDateTime(n.send_pay_date) : undefined;
    const base = {
      outTradeNo,
      tradeNo: typeof n.trade_no === 'string' ? n.trade_no : undefined,
      currency: 'CNY',
      merchantId: options.sellerId,
    };
    switch (status) {
      case 'WAIT_BUYER_PAY':
        return { ...base, status: 'PENDING' };
      case 'TRADE_SUCCESS':
      case 'TRADE_FINISHED':
        return { ...base, status: 'PAID', paidAmount: fen(n.total_amount, 'total_amount'), paidAt };
      case 'TRADE_CLOSED':
        // A trade closed after a full refund keeps its payment date; one closed unpaid never had one.
        return paidAt
          ? {
              ...base,
              status: 'REFUNDED',
              paidAmount: fen(n.total_amount, 'total_amount'),
              paidAt,
              refundedAmount: fen(n.total_amount, 'total_amount'),
            }
          : { ...base, status: 'CLOSED' };
      default:
        throw new ProviderUnavailableError(`alipay.trade.query answered unknown trade_status ${status}`);
    }
  }

  const provider: PaymentProvider & BillSource = {
    name: 'alipay',
    merchantId: options.sellerId,
    ack: { status: 200, contentType: 'text/plain', body: 'success' },

    async createPayment(input: CreatePaymentInput) {
      if (input.currency !== 'CNY')
        throw new ProviderBusinessError('UNSUPPORTED_CURRENCY', `alipay takes CNY only, not ${input.currency}`);
      const method = options.payMethod === 'wap' ? 'alipay.trade.wap.pay' : 'alipay.trade.page.pay';
      const params = commonParams(
        method,
        {
          out_trade_no: input.outTradeNo,
          total_amount: toMajorString(input.amount, 'CNY'),
          subject: input.subject.slice(0, 256),
          product_code: options.payMethod === 'wap' ? 'QUICK_WAP_WAY' : 'FAST_INSTANT_TRADE_PAY',
          time_expire: chinaDateTime(new Date(input.expiresAt)),
        },
        { notify_url: input.notifyUrl, ...(options.returnUrl ? { return_url: options.returnUrl } : {}) },
      );
      // Alipay assigns its trade number once the buyer pays; the notification and queries carry it.
      return { tradeNo: '', paymentUrl: `${options.gateway}?${new URLSearchParams(params).toString()}` };
    },

    queryPayment: query,

    async closePayment(outTradeNo: string): Promise<CloseResult> {
      const r = await exec('alipay.trade.close', { out_trade_no: outTradeNo });
      if (r.code === '10000') return { result: 'CLOSED' };
      if (r.subCode === 'ACQ.TRADE_NOT_EXIST') return { result: 'NOT_FOUND' };
      if (r.subCode === 'ACQ.TRADE_STATUS_ERROR') {
        // Not WAIT_BUYER_PAY any more: paid, or already closed (e.g. our own earlier close). Ask which.
        const state = await query(outTradeNo);
        if (state.status === 'PAID' || state.status === 'REFUNDED') return { result: 'ALREADY_PAID' };
        if (state.status === 'CLOSED') return { result: 'CLOSED' };
        if (state.status === 'NOT_FOUND') return { result: 'NOT_FOUND' };
        throw new ProviderUnavailableError(
          `alipay.trade.close refused with TRADE_STATUS_ERROR while the trade is ${state.status}`,
        );
      }
      throw fail('alipay.trade.close', r);
    },

    async refund(input: RefundInput) {
      // out_request_no makes the refund idempotent: a retry with the same number never refunds twice.
      const r = await exec('alipay.trade.refund', {
        out_trade_no: input.outTradeNo,
        refund_amount: toMajorString(input.amount, 'CNY'),
        out_request_no: input.outRefundNo,
        ...(input.reason ? { refund_reason: input.reason.slice(0, 256) } : {}),
      });
      if (r.code !== '10000') throw fail('alipay.trade.refund', r);
      const tradeNo = String(r.node.trade_no ?? '');
      if (r.node.fund_change !== 'Y') {
        // A repeated request (or a refund still in progress) answers fund_change=N: confirm with the refund query.
        const q = await exec('alipay.trade.fastpay.refund.query', {
          out_trade_no: input.outTradeNo,
          out_request_no: input.outRefundNo,
          query_options: ['gmt_refund_pay'],
        });
        if (q.code !== '10000') throw fail('alipay.trade.fastpay.refund.query', q);
        if (q.node.refund_status !== 'REFUND_SUCCESS')
          throw new ProviderUnavailableError(`alipay refund ${input.outRefundNo} is not confirmed yet`);
        const amount = fen(q.node.refund_amount, 'refund_amount');
        const at = typeof q.node.gmt_refund_pay === 'string' ? parseChinaDateTime(q.node.gmt_refund_pay) : undefined;
        return { refundNo: `${tradeNo}/${input.outRefundNo}`, amount, refundedAt: at ?? now().toISOString() };
      }
      const at = typeof r.node.gmt_refund_pay === 'string' ? parseChinaDateTime(r.node.gmt_refund_pay) : undefined;
      return {
        refundNo: `${tradeNo}/${input.outRefundNo}`,
        amount: input.amount,
        refundedAt: at ?? now().toISOString(),
      };
    },

    verifyNotification(rawBody, _headers, _now) {
      const charset = formCharset(rawBody);
      const params = parseForm(rawBody, charset);
      if (!params) return refuse('MALFORMED_BODY', 'body is not a well-formed form (bad escape or repeated field)');
      const sign = params.get('sign');
      const signType = params.get('sign_type');
      if (!sign) return refuse('MISSING_SIGNATURE', 'no sign field');
      if (signType !== 'RSA2') return refuse('MALFORMED_SIGNATURE', `sign_type ${signType ?? '(none)'} is not RSA2`);
      if (!/^[A-Za-z0-9+/]+={0,2}$/.test(sign)) return refuse('MALFORMED_SIGNATURE', 'sign is not base64');
      const content = alipaySignContent(params, ['sign', 'sign_type'], false);
      // Alipay signs the content's bytes in the notification's charset (UTF-8, or GBK for apps set to it).
      const ok = createVerify('RSA-SHA256')
        .update(iconv.encode(content, charset))
        .verify(options.alipayPublicKey, sign, 'base64');
      if (!ok) return refuse('BAD_SIGNATURE', 'sign does not verify with the Alipay public key');

      const parsed = AlipayNotify.safeParse(Object.fromEntries(params));
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        return refuse('MALFORMED_BODY', `${issue?.path.join('.') ?? 'body'}: ${issue?.message ?? 'invalid'}`);
      }
      const n = parsed.data;
      if (n.app_id !== options.appId) return refuse('WRONG_MERCHANT', `notification is for app ${n.app_id}, not ours`);
      if (n.seller_id !== options.sellerId)
        return refuse('WRONG_MERCHANT', `notification is for seller ${n.seller_id}, not ours`);

      const refundFee = n.refund_fee === undefined ? 0 : yuanToFen(n.refund_fee)!;
      // Told by refund fields that say something: an empty one never makes a payment a refund notice (which is
      // acknowledged without being stored, so the payment would never reach the inbox).
      const isRefund = refundFee > 0 || !!n.gmt_refund || !!n.out_biz_no;
      const common = {
        provider: 'alipay' as const,
        notificationId: n.notify_id,
        outTradeNo: n.out_trade_no,
        tradeNo: n.trade_no,
        merchantId: n.seller_id,
        currency: 'CNY',
        providerEvent: n.trade_status,
      };
      if (n.trade_status === 'TRADE_CLOSED') {
        const notice: ProviderNotice = isRefund
          ? {
              ...common,
              kind: 'TRADE_CLOSED',
              closeReason: 'FULLY_REFUNDED',
              refundedAmount: refundFee,
              outRefundNo: n.out_biz_no,
              at: parseChinaDateTime(n.gmt_refund ?? n.gmt_close ?? n.notify_time),
            }
          : {
              ...common,
              kind: 'TRADE_CLOSED',
              closeReason: 'UNPAID',
              at: parseChinaDateTime(n.gmt_close ?? n.notify_time),
            };
        return refuse(
          'UNSUPPORTED_EVENT',
          isRefund
            ? 'TRADE_CLOSED after a full refund: no order changes'
            : 'TRADE_CLOSED unpaid (timeout or close): no order changes',
          notice,
        );
      }
      if (n.trade_status === 'WAIT_BUYER_PAY') {
        return refuse('UNSUPPORTED_EVENT', 'WAIT_BUYER_PAY: nothing paid yet', { ...common, kind: 'OTHER' });
      }
      if (isRefund) {
        // A partial refund is notified as TRADE_SUCCESS (or TRADE_FINISHED) with the refund fields: not a new payment.
        const notice: ProviderNotice = {
          ...common,
          kind: 'REFUND',
          refundedAmount: refundFee,
          outRefundNo: n.out_biz_no,
          at: parseChinaDateTime(n.gmt_refund ?? n.notify_time),
        };
        return refuse(
          'UNSUPPORTED_EVENT',
          `${n.trade_status} carrying a refund of ${n.refund_fee ?? '?'} yuan: no order changes`,
          notice,
        );
      }
      const notification: PaymentNotification = {
        provider: 'alipay',
        notificationId: n.notify_id,
        outTradeNo: n.out_trade_no,
        tradeNo: n.trade_no,
        amount: yuanToFen(n.total_amount)!,
        currency: 'CNY',
        merchantId: n.seller_id,
        paidAt: parseChinaDateTime(n.gmt_payment ?? n.notify_time) ?? now().toISOString(),
      };
      return accept(notification);
    },

    async *billRows(date: string, billOptions?: { fromRow?: number }): AsyncGenerator<BillRow> {
      if (!/^\d{4}-\d{2}-\d{2}$/.test(date))
        throw new ProviderBusinessError('BAD_BILL_DATE', `bill date ${date} is not YYYY-MM-DD`);
      const r = await exec('alipay.data.dataservice.bill.downloadurl.query', { bill_type: 'trade', bill_date: date });
      if (r.subCode === 'isp.bill_not_exist')
        throw new ProviderBusinessError('BILL_NOT_READY', `alipay has no trade bill for ${date} (yet)`);
      if (r.code !== '10000' || typeof r.node.bill_download_url !== 'string')
        throw fail('alipay.data.dataservice.bill.downloadurl.query', r);
      let download: Download | undefined;
      try {
        download = await downloadToTemp(r.node.bill_download_url, {}, `alipay bill download for ${date}`);
        const entries = (await listZipEntries(download.path)).filter((e) => /\.csv$/i.test(e.name));
        const detail = entries.find((e) => !e.name.includes('汇总')) ?? entries[0];
        if (!detail) throw new Error(`alipay bill for ${date} holds no CSV`);
        let index = 0;
        for await (const row of parseAlipayTradeBill(decodedLines(await openZipEntry(download.path, detail), 'gbk'))) {
          if (index++ >= (billOptions?.fromRow ?? 0)) yield row;
        }
      } finally {
        await download?.dispose();
      }
    },
  };
  return provider;
}

/**
 * Parses Alipay's trade bill (业务明细) lines, already decoded from GBK: `#` header lines, a column line, detail
 * rows, then `#` summary lines. Columns are found by name; ids carry a trailing tab; refunds are negative.
 */
export async function* parseAlipayTradeBill(lines: AsyncIterable<string> | Iterable<string>): AsyncGenerator<BillRow> {
  let columns: Map<string, number> | undefined;
  let lineNo = 0;
  for await (const rawLine of lines) {
    lineNo++;
    const line = rawLine.replace(/\r$/, '');
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      if (columns) break; // the summary block after the detail rows
      continue;
    }
    const cells = splitCsvLine(line).map((c) => c.trim());
    if (!columns) {
      columns = new Map(cells.map((name, i) => [name, i]));
      for (const need of ['商户订单号', '业务类型', '完成时间', '订单金额（元）']) {
        if (!columns.has(need)) throw new Error(`alipay bill: no column ${need} in the column line (line ${lineNo})`);
      }
      if (!columns.has('支付宝交易号') && !columns.has('交易号'))
        throw new Error(`alipay bill: no column 支付宝交易号 (line ${lineNo})`);
      continue;
    }
    const cell = (name: string) => {
      const i = columns!.get(name);
      return i === undefined ? '' : (cells[i] ?? '');
    };
    const type = cell('业务类型');
    if (type !== '交易' && type !== '退款') continue;
    const amountText = cell('订单金额（元）').replace(/^-/, '');
    const amount = yuanToFen(amountText);
    if (amount === undefined)
      throw new Error(
        `alipay bill line ${lineNo}: 订单金额（元） ${JSON.stringify(cell('订单金额（元）'))} is not a yuan amount`,
      );
    const at = parseChinaDateTime(cell('完成时间'));
    if (!at) throw new Error(`alipay bill line ${lineNo}: 完成时间 ${JSON.stringify(cell('完成时间'))} is not a time`);
    const refundNo = cell('退款批次号/请求号');
    yield {
      kind: type === '交易' ? 'PAYMENT' : 'REFUND',
      outTradeNo: cell('商户订单号'),
      tradeNo: cell('支付宝交易号') || cell('交易号'),
      ...(type === '退款' && refundNo ? { outRefundNo: refundNo } : {}),
      amount,
      currency: 'CNY',
      at,
    };
  }
  if (!columns) throw new Error('alipay bill: no column line found');
}
