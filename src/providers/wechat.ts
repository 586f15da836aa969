/**
 * WeChat Pay API v3 adapter (Native payments: the buyer scans `code_url`).
 *
 * No SDK: node:crypto does everything v3 needs (SHA256withRSA request signing, response and notification
 * verification with the platform key named by `Wechatpay-Serial`, AEAD_AES_256_GCM decryption), and the
 * well-kept `wechatpay-axios-plugin` would bring axios for what is ~50 lines here.
 *
 * out_trade_no: WeChat allows 6-32 of [0-9A-Za-z_-|*]. Order ids made from an Idempotency-Key are
 * `ord_k` + 32 hex (37 chars); they are sent as `K` + the same 16 bytes in base64url (23 chars), and mapped back
 * on every answer, notification and bill row. Every other order id is sent unchanged.
 */
import { type KeyObject, createDecipheriv, createSign, createVerify, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { type Download, decodedLines, digestOf, downloadToTemp, openGzip } from './bill-files';
import type { WechatConfig } from './config';
import { ProviderUnavailableError, chinaRfc3339, header, httpCall, parseChinaDateTime, yuanToFen } from './http';
import {
  type BillRow,
  type BillSource,
  type CloseResult,
  type CreatePaymentInput,
  type PaymentNotification,
  type PaymentProvider,
  type ProviderPaymentState,
  type RefundInput,
  ProviderBusinessError,
} from './types';
import { accept, refuse } from './verdict';

/** Notifications and responses more than this far from our clock are refused (WeChat's own rule). */
export const WECHAT_TIMESTAMP_TOLERANCE_SECONDS = 300;

/** Options of the WeChat Pay adapter. */
export interface WechatProviderOptions extends WechatConfig {
  /**
   * Where WeChat sends a refund's outcome (REFUND.SUCCESS / ABNORMAL / CLOSED): our callback route. WeChat notifies a
   * refund only at the notify_url of its request, so without it a refund accepted PROCESSING that ends ABNORMAL (a
   * closed card) or CLOSED is never reported here.
   */
  refundNotifyUrl?: string;
  timeoutMs?: number;
  now?: () => Date;
}

/** Our order id -> WeChat out_trade_no (see the file comment). */
export function toWechatOutTradeNo(orderId: string): string {
  const keyed = /^ord_k([0-9a-f]{32})$/.exec(orderId);
  if (keyed) return `K${Buffer.from(keyed[1]!, 'hex').toString('base64url')}`;
  if (!/^[0-9A-Za-z_\-|*]{6,32}$/.test(orderId))
    throw new ProviderBusinessError(
      'OUT_TRADE_NO_INVALID',
      `order id ${orderId} cannot be a WeChat out_trade_no (6-32 of [0-9A-Za-z_-|*])`,
    );
  return orderId;
}

/** WeChat out_trade_no -> our order id. */
export function fromWechatOutTradeNo(outTradeNo: string): string {
  return /^K[A-Za-z0-9_-]{22}$/.test(outTradeNo)
    ? `ord_k${Buffer.from(outTradeNo.slice(1), 'base64url').toString('hex')}`
    : outTradeNo;
}

/** Why a WeChat signature was refused. */
export type WechatSignatureRejection =
  'MISSING_SIGNATURE' | 'MALFORMED_SIGNATURE' | 'BAD_SIGNATURE' | 'STALE_TIMESTAMP';

/** Verifies `Wechatpay-Signature` over `timestamp\nnonce\nbody\n` with the platform key named by `Wechatpay-Serial`. */
export function verifyWechatSignature(
  platformKeys: Map<string, KeyObject>,
  headers: Record<string, string | string[] | undefined>,
  rawBody: Buffer,
  nowSeconds: number,
): { ok: true } | { ok: false; reason: WechatSignatureRejection; message: string } {
  const timestamp = header(headers, 'wechatpay-timestamp');
  const nonce = header(headers, 'wechatpay-nonce');
  const signature = header(headers, 'wechatpay-signature');
  const serial = header(headers, 'wechatpay-serial');
  if (!timestamp || !nonce || !signature || !serial)
    return {
      ok: false,
      reason: 'MISSING_SIGNATURE',
      message: 'Wechatpay-Timestamp/-Nonce/-Signature/-Serial headers are required',
    };
  if (!/^\d{1,12}$/.test(timestamp) || !/^[A-Za-z0-9+/]+={0,2}$/.test(signature))
    return { ok: false, reason: 'MALFORMED_SIGNATURE', message: 'malformed timestamp or signature' };
  const signatureType = header(headers, 'wechatpay-signature-type');
  if (signatureType && signatureType !== 'WECHATPAY2-SHA256-RSA2048')
    return { ok: false, reason: 'MALFORMED_SIGNATURE', message: `unsupported signature type ${signatureType}` };
  const key = platformKeys.get(serial);
  if (!key)
    return { ok: false, reason: 'BAD_SIGNATURE', message: `no platform key with serial ${serial.slice(0, 64)}` };
  const verifier = createVerify('RSA-SHA256');
  verifier.update(`${timestamp}\n${nonce}\n`);
  verifier.update(rawBody);
  verifier.update('\n');
  if (!verifier.verify(key, signature, 'base64'))
    return { ok: false, reason: 'BAD_SIGNATURE', message: 'signature does not verify with the platform key' };
  if (Math.abs(nowSeconds - Number(timestamp)) > WECHAT_TIMESTAMP_TOLERANCE_SECONDS)
    return { ok: false, reason: 'STALE_TIMESTAMP', message: `timestamp ${timestamp} is more than 5 minutes off` };
  return { ok: true };
}

/** AEAD_AES_256_GCM decryption of a notification `resource` (the 16-byte tag ends the ciphertext). */
export function decryptWechatResource(
  apiV3Key: string,
  resource: { ciphertext: string; nonce: string; associated_data?: string },
): string {
  const data = Buffer.from(resource.ciphertext, 'base64');
  if (data.length < 17) throw new Error('ciphertext too short');
  const decipher = createDecipheriv('aes-256-gcm', Buffer.from(apiV3Key, 'utf8'), Buffer.from(resource.nonce, 'utf8'));
  decipher.setAuthTag(data.subarray(data.length - 16));
  decipher.setAAD(Buffer.from(resource.associated_data ?? '', 'utf8'));
  return Buffer.concat([decipher.update(data.subarray(0, data.length - 16)), decipher.final()]).toString('utf8');
}

const Fen = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

const Envelope = z.object({
  id: z.string().min(1),
  create_time: z.string().optional(),
  event_type: z.string().min(1),
  resource_type: z.string().optional(),
  resource: z.object({
    algorithm: z.literal('AEAD_AES_256_GCM'),
    ciphertext: z.string().min(1),
    nonce: z.string().min(1),
    associated_data: z.string().optional(),
    original_type: z.string().optional(),
  }),
});

const Transaction = z.object({
  appid: z.string(),
  mchid: z.string(),
  out_trade_no: z.string().min(1),
  transaction_id: z.string().min(1),
  trade_state: z.string(),
  success_time: z.string().optional(),
  amount: z.object({
    total: Fen,
    payer_total: Fen.optional(),
    currency: z.string().regex(/^[A-Z]{3}$/),
    payer_currency: z.string().optional(),
  }),
});

const RefundResource = z.object({
  mchid: z.string(),
  out_trade_no: z.string().min(1),
  transaction_id: z.string().optional(),
  out_refund_no: z.string().min(1),
  refund_id: z.string().optional(),
  refund_status: z.string(),
  success_time: z.string().optional(),
  amount: z.object({ total: Fen, refund: Fen, payer_total: Fen.optional(), payer_refund: Fen.optional() }),
});

/** Creates the WeChat Pay adapter. */
export function createWechatProvider(options: WechatProviderOptions): PaymentProvider & BillSource {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const now = options.now ?? (() => new Date());
  const apiOrigin = new URL(options.apiBase);
  const basePath = apiOrigin.pathname.replace(/\/$/, '');

  function authorization(method: string, pathAndQuery: string, body: string): string {
    const timestamp = Math.floor(now().getTime() / 1000);
    const nonce = randomBytes(16).toString('hex');
    const signature = createSign('RSA-SHA256')
      .update(`${method}\n${pathAndQuery}\n${timestamp}\n${nonce}\n${body}\n`, 'utf8')
      .sign(options.privateKey, 'base64');
    return `WECHATPAY2-SHA256-RSA2048 mchid="${options.mchId}",nonce_str="${nonce}",signature="${signature}",timestamp="${timestamp}",serial_no="${options.certSerial}"`;
  }

  /** Calls the API with a signed request; 2xx answers must carry a valid platform signature. */
  async function api(
    method: 'GET' | 'POST',
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: Record<string, unknown> }> {
    const pathAndQuery = `${basePath}${path}`;
    const text = body === undefined ? '' : JSON.stringify(body);
    const answer = await httpCall(
      `${apiOrigin.origin}${pathAndQuery}`,
      {
        method,
        headers: {
          authorization: authorization(method, pathAndQuery, text),
          accept: 'application/json',
          'user-agent': 'payflow',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : text,
      },
      `wechat ${method} ${path}`,
      timeoutMs,
    );
    const headers = Object.fromEntries(answer.headers.entries());
    const signed = headers['wechatpay-signature'] !== undefined;
    if (answer.status < 300 || signed) {
      const verdict = verifyWechatSignature(
        options.platformKeys,
        headers,
        answer.body,
        Math.floor(now().getTime() / 1000),
      );
      if (!verdict.ok)
        throw new ProviderUnavailableError(
          `wechat ${method} ${path}: response not trusted (${verdict.reason}: ${verdict.message})`,
        );
    }
    let json: Record<string, unknown> = {};
    if (answer.text.trim() !== '') {
      try {
        json = JSON.parse(answer.text) as Record<string, unknown>;
      } catch {
        throw new ProviderUnavailableError(`wechat ${method} ${path} answered ${answer.status} with a non-JSON body`);
      }
    }
    if (answer.status === 429 || json.code === 'SYSTEM_ERROR' || json.code === 'FREQUENCY_LIMITED') {
      throw new ProviderUnavailableError(
        `wechat ${method} ${path}: ${String(json.code ?? answer.status)} ${String(json.message ?? '')}`,
      );
    }
    return { status: answer.status, json };
  }

  function fail(what: string, r: { status: number; json: Record<string, unknown> }): ProviderBusinessError {
    return new ProviderBusinessError(
      String(r.json.code ?? `HTTP_${r.status}`),
      `wechat ${what}: ${String(r.json.message ?? r.status)}`,
    );
  }

  async function transaction(outTradeNo: string): Promise<{ status: number; json: Record<string, unknown> }> {
    return api(
      'GET',
      `/v3/pay/transactions/out-trade-no/${encodeURIComponent(toWechatOutTradeNo(outTradeNo))}?mchid=${options.mchId}`,
    );
  }

  return {
    name: 'wechat',
    merchantId: options.mchId,
    ack: { status: 204, contentType: 'text/plain', body: '' },
    failureAck(rejection) {
      const signature = ['MISSING_SIGNATURE', 'MALFORMED_SIGNATURE', 'BAD_SIGNATURE', 'STALE_TIMESTAMP'].includes(
        rejection.code,
      );
      return {
        status: signature ? 401 : 400,
        contentType: 'application/json',
        body: JSON.stringify({ code: 'FAIL', message: rejection.message }),
      };
    },

    async createPayment(input: CreatePaymentInput) {
      if (input.currency !== 'CNY')
        throw new ProviderBusinessError('UNSUPPORTED_CURRENCY', `wechat pay takes CNY only, not ${input.currency}`);
      const r = await api('POST', '/v3/pay/transactions/native', {
        appid: options.appId,
        mchid: options.mchId,
        description: Array.from(input.subject).slice(0, 40).join(''),
        out_trade_no: toWechatOutTradeNo(input.outTradeNo),
        time_expire: chinaRfc3339(new Date(input.expiresAt)),
        notify_url: input.notifyUrl,
        amount: { total: input.amount, currency: 'CNY' },
      });
      if (r.status !== 200 || typeof r.json.code_url !== 'string') throw fail('create payment', r);
      // WeChat assigns transaction_id when the buyer pays; notifications and queries carry it.
      return { tradeNo: '', paymentUrl: r.json.code_url };
    },

    async queryPayment(outTradeNo: string): Promise<ProviderPaymentState> {
      const r = await transaction(outTradeNo);
      if (r.status === 404 || r.json.code === 'ORDER_NOT_EXIST') return { outTradeNo, status: 'NOT_FOUND' };
      if (r.status !== 200) throw fail('query payment', r);
      const parsed = Transaction.partial({ transaction_id: true, amount: true }).safeParse(r.json);
      if (!parsed.success)
        throw new ProviderUnavailableError(
          `wechat query answered an unexpected shape: ${parsed.error.issues[0]?.message}`,
        );
      const t = parsed.data;
      const base = {
        outTradeNo,
        tradeNo: t.transaction_id,
        currency: t.amount?.currency ?? 'CNY',
        merchantId: t.mchid,
      };
      const paidAt = t.success_time ? new Date(t.success_time).toISOString() : undefined;
      switch (t.trade_state) {
        case 'SUCCESS':
          return { ...base, status: 'PAID', paidAmount: t.amount?.total, paidAt };
        case 'REFUND':
          return { ...base, status: 'REFUNDED', paidAmount: t.amount?.total, paidAt };
        case 'NOTPAY':
        case 'USERPAYING':
        case 'PAYERROR':
          return { ...base, status: 'PENDING' };
        case 'CLOSED':
        case 'REVOKED':
          return { ...base, status: 'CLOSED' };
        default:
          throw new ProviderUnavailableError(`wechat query answered unknown trade_state ${t.trade_state}`);
      }
    },

    async closePayment(outTradeNo: string): Promise<CloseResult> {
      const r = await api(
        'POST',
        `/v3/pay/transactions/out-trade-no/${encodeURIComponent(toWechatOutTradeNo(outTradeNo))}/close`,
        { mchid: options.mchId },
      );
      if (r.status === 204 || r.status === 200) return { result: 'CLOSED' };
      if (r.json.code === 'ORDERPAID') return { result: 'ALREADY_PAID' };
      if (r.json.code === 'ORDER_CLOSED') return { result: 'CLOSED' };
      if (r.status === 404 || r.json.code === 'ORDER_NOT_EXIST') return { result: 'NOT_FOUND' };
      throw fail('close payment', r);
    },

    async refund(input: RefundInput) {
      // Look the refund number up first: a retry must find the refund it already made, never create a second one.
      let r = await api('GET', `/v3/refund/domestic/refunds/${encodeURIComponent(input.outRefundNo)}`);
      if (r.status === 404 || r.json.code === 'RESOURCE_NOT_EXISTS') {
        const t = await transaction(input.outTradeNo);
        const total =
          t.status === 200 ? Fen.safeParse((t.json.amount as { total?: unknown } | undefined)?.total) : undefined;
        if (!total?.success) throw fail('refund (order total)', t);
        r = await api('POST', '/v3/refund/domestic/refunds', {
          out_trade_no: toWechatOutTradeNo(input.outTradeNo),
          out_refund_no: input.outRefundNo,
          ...(input.reason ? { reason: Array.from(input.reason).slice(0, 80).join('') } : {}),
          ...(options.refundNotifyUrl ? { notify_url: options.refundNotifyUrl } : {}),
          amount: { refund: input.amount, total: total.data, currency: 'CNY' },
        });
      }
      if (r.status !== 200) throw fail('refund', r);
      const status = String(r.json.status);
      // PROCESSING is accepted: WeChat completes it (a refund to a bank card can take days), and the same out_refund_no
      // can never refund twice. Holding the refund step until SUCCESS would keep the order's workflow in it for days
      // and raise the stuck-step alert for a normal refund. One that ends ABNORMAL (a closed card) or CLOSED is
      // reported by WeChat's REFUND.ABNORMAL / REFUND.CLOSED notification, which the callback route records: the refund
      // FAILED, its order NEEDS_REVIEW (src/db/refund-outcomes.ts). The day's trade bill shows it too, with its
      // 退款状态, which reconciliation classes REFUND_MISMATCH (PROVIDER_FAILED).
      if (status !== 'SUCCESS' && status !== 'PROCESSING')
        throw new ProviderBusinessError(`REFUND_${status}`, `wechat refund ${input.outRefundNo} is ${status}`);
      const amount = Fen.safeParse((r.json.amount as { refund?: unknown } | undefined)?.refund);
      const at =
        typeof r.json.success_time === 'string'
          ? r.json.success_time
          : typeof r.json.create_time === 'string'
            ? r.json.create_time
            : undefined;
      return {
        refundNo: String(r.json.refund_id ?? input.outRefundNo),
        amount: amount.success ? amount.data : input.amount,
        refundedAt: at ? new Date(at).toISOString() : now().toISOString(),
      };
    },

    verifyNotification(rawBody, headers, at) {
      const verdict = verifyWechatSignature(options.platformKeys, headers, rawBody, Math.floor(at.getTime() / 1000));
      if (!verdict.ok) return refuse(verdict.reason, verdict.message);
      let body: unknown;
      try {
        body = JSON.parse(rawBody.toString('utf8'));
      } catch {
        return refuse('MALFORMED_BODY', 'body is not valid JSON');
      }
      const envelope = Envelope.safeParse(body);
      if (!envelope.success)
        return refuse(
          'MALFORMED_BODY',
          `${envelope.error.issues[0]?.path.join('.')}: ${envelope.error.issues[0]?.message}`,
        );
      const e = envelope.data;
      let plain: unknown;
      try {
        plain = JSON.parse(decryptWechatResource(options.apiV3Key.reveal(), e.resource));
      } catch {
        return refuse('MALFORMED_BODY', 'resource does not decrypt with WECHAT_API_V3_KEY');
      }
      if (e.event_type.startsWith('REFUND.')) {
        const refund = RefundResource.safeParse(plain);
        if (!refund.success)
          return refuse(
            'MALFORMED_BODY',
            `resource.${refund.error.issues[0]?.path.join('.')}: ${refund.error.issues[0]?.message}`,
          );
        const f = refund.data;
        if (f.mchid !== options.mchId)
          return refuse('WRONG_MERCHANT', `notification is for merchant ${f.mchid}, not ours`);
        const outcome = wechatRefundNoticeOutcome(e.event_type, f.refund_status);
        return refuse('UNSUPPORTED_EVENT', `${e.event_type}: the outcome of refund ${f.out_refund_no}, not a payment`, {
          provider: 'wechat',
          notificationId: e.id,
          kind: 'REFUND',
          providerEvent: `${e.event_type}/${f.refund_status}`,
          outTradeNo: fromWechatOutTradeNo(f.out_trade_no),
          tradeNo: f.transaction_id,
          outRefundNo: f.out_refund_no,
          ...(f.refund_id ? { refundNo: f.refund_id } : {}),
          ...(outcome ? { refundStatus: outcome } : {}),
          refundedAmount: f.amount.refund,
          currency: 'CNY',
          merchantId: f.mchid,
          at: f.success_time ? new Date(f.success_time).toISOString() : undefined,
        });
      }
      const parsed = Transaction.safeParse(plain);
      if (!parsed.success)
        return refuse(
          'MALFORMED_BODY',
          `resource.${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`,
        );
      const t = parsed.data;
      if (t.mchid !== options.mchId)
        return refuse('WRONG_MERCHANT', `notification is for merchant ${t.mchid}, not ours`);
      if (t.appid !== options.appId) return refuse('WRONG_MERCHANT', `notification is for app ${t.appid}, not ours`);
      if (e.event_type !== 'TRANSACTION.SUCCESS' || t.trade_state !== 'SUCCESS') {
        return refuse('UNSUPPORTED_EVENT', `${e.event_type} with trade_state ${t.trade_state}: not a payment`, {
          provider: 'wechat',
          notificationId: e.id,
          kind:
            t.trade_state === 'CLOSED' || t.trade_state === 'REVOKED'
              ? 'TRADE_CLOSED'
              : t.trade_state === 'PAYERROR'
                ? 'PAYMENT_FAILED'
                : 'OTHER',
          ...(t.trade_state === 'CLOSED' || t.trade_state === 'REVOKED' ? { closeReason: 'UNPAID' as const } : {}),
          providerEvent: `${e.event_type}/${t.trade_state}`,
          outTradeNo: fromWechatOutTradeNo(t.out_trade_no),
          tradeNo: t.transaction_id,
          merchantId: t.mchid,
        });
      }
      const paidAt = t.success_time ? new Date(t.success_time) : undefined;
      const notification: PaymentNotification = {
        provider: 'wechat',
        notificationId: e.id,
        outTradeNo: fromWechatOutTradeNo(t.out_trade_no),
        tradeNo: t.transaction_id,
        amount: t.amount.total,
        currency: t.amount.currency,
        merchantId: t.mchid,
        paidAt: paidAt && !Number.isNaN(paidAt.getTime()) ? paidAt.toISOString() : at.toISOString(),
      };
      return accept(notification);
    },

    async *billRows(date: string, billOptions?: { fromRow?: number }): AsyncGenerator<BillRow> {
      if (!/^\d{4}-\d{2}-\d{2}$/.test(date))
        throw new ProviderBusinessError('BAD_BILL_DATE', `bill date ${date} is not YYYY-MM-DD`);
      const r = await api('GET', `/v3/bill/tradebill?bill_date=${date}&bill_type=ALL&tar_type=GZIP`);
      if (r.json.code === 'STATEMENT_CREATING')
        throw new ProviderBusinessError('BILL_NOT_READY', `wechat is still creating the trade bill for ${date}`);
      if (r.json.code === 'NO_STATEMENT_EXIST') {
        // WeChat's answer for a day on which the merchant had no trade and no refund (its FAQ: check whether the day
        // had any; retry STATEMENT_CREATING until the bill comes or this answer does, then stop): an empty bill, once
        // the day's bills are out (from 10:00 China time the next day). Before that, not ready: asked too early.
        if (now().getTime() < Date.parse(`${date}T10:00:00+08:00`) + 86_400_000)
          throw new ProviderBusinessError('BILL_NOT_READY', `wechat has no trade bill for ${date} yet`);
        return;
      }
      if (r.status !== 200 || typeof r.json.download_url !== 'string' || typeof r.json.hash_value !== 'string')
        throw fail('trade bill', r);
      const url = new URL(r.json.download_url);
      let download: Download | undefined;
      try {
        download = await downloadToTemp(
          url.toString(),
          {
            headers: {
              authorization: authorization('GET', `${url.pathname}${url.search}`, ''),
              accept: 'application/json',
            },
          },
          `wechat bill download for ${date}`,
        );
        // The file itself is not signed: the hash from the signed answer is what makes it trustworthy. WeChat hashes the
        // original bill, before compression (hash_value: 原始账单（gzip需要解压缩）的摘要值), not the gzip it serves.
        const expected = String(r.json.hash_value).toLowerCase();
        const actual = await digestOf(openGzip(download.path), r.json.hash_type === 'SHA256' ? 'sha256' : 'sha1');
        if (actual !== expected)
          throw new ProviderUnavailableError(`wechat bill for ${date}: file hash ${actual} does not match ${expected}`);
        let index = 0;
        for await (const row of parseWechatTradeBill(decodedLines(openGzip(download.path), 'utf8'))) {
          if (index++ >= (billOptions?.fromRow ?? 0)) yield row;
        }
      } finally {
        await download?.dispose();
      }
    },
  };
}

/**
 * The outcome a refund notification reports: its resource's refund_status (SUCCESS, PROCESSING, CLOSED, ABNORMAL), and
 * its event type (REFUND.SUCCESS, REFUND.ABNORMAL, REFUND.CLOSED) when the status is one WeChat has not documented.
 * Undefined when neither says, or when they disagree: such a notice is acknowledged and changes nothing.
 */
function wechatRefundNoticeOutcome(
  eventType: string,
  refundStatus: string,
): 'SUCCEEDED' | 'PROCESSING' | 'FAILED' | undefined {
  const byStatus = wechatRefundOutcome(refundStatus);
  const byEvent =
    eventType === 'REFUND.SUCCESS'
      ? 'SUCCEEDED'
      : eventType === 'REFUND.ABNORMAL' || eventType === 'REFUND.CLOSED'
        ? 'FAILED'
        : undefined;
  if (byStatus && byEvent && byStatus !== byEvent) return undefined;
  return byStatus ?? byEvent;
}

/** A refund status WeChat documents (SUCCESS, PROCESSING, CLOSED, ABNORMAL) as an outcome; undefined for any other. */
function wechatRefundOutcome(status: string): 'SUCCEEDED' | 'PROCESSING' | 'FAILED' | undefined {
  if (status === 'SUCCESS') return 'SUCCEEDED';
  if (status === 'PROCESSING') return 'PROCESSING';
  return status === 'CLOSED' || status === 'ABNORMAL' ? 'FAILED' : undefined;
}

/** WeChat's 退款状态 as a refund outcome: SUCCESS, PROCESSING, or FAILED for anything else (REFUNDCLOSE, CHANGE). */
function wechatRefundStatus(status: string): 'SUCCEEDED' | 'PROCESSING' | 'FAILED' {
  return wechatRefundOutcome(status) ?? 'FAILED';
}

/**
 * Parses WeChat Pay's trade bill (bill_type ALL) lines: a column line, rows whose every field starts with a
 * backtick, then a summary block (its own column line starting 总交易单数 and one row). Amounts are yuan.
 * SUCCESS rows are payments; REFUND rows are refunds (amount: 申请退款金额, else 退款金额) with their outcome from
 * 退款状态: the bill lists refunds that did not complete too (REFUNDCLOSE: closed; CHANGE: the money could not reach
 * the buyer's account; PROCESSING), and those must never reconcile as done. A bill without 退款状态 is refused.
 */
export async function* parseWechatTradeBill(lines: AsyncIterable<string> | Iterable<string>): AsyncGenerator<BillRow> {
  let columns: Map<string, number> | undefined;
  let lineNo = 0;
  for await (const rawLine of lines) {
    lineNo++;
    const line = rawLine.replace(/\r$/, '');
    if (line.trim() === '') continue;
    if (!columns) {
      columns = new Map(line.split(',').map((name, i) => [name.trim(), i]));
      for (const need of [
        '交易时间',
        '微信订单号',
        '商户订单号',
        '交易状态',
        '货币种类',
        '订单金额',
        '商户退款单号',
        '退款金额',
        '退款状态',
      ]) {
        if (!columns.has(need)) throw new Error(`wechat bill: no column ${need} in the column line (line ${lineNo})`);
      }
      continue;
    }
    if (!line.startsWith('`')) break; // 总交易单数,... starts the summary block
    const cells = line.split(',`').map((c, i) => (i === 0 ? c.slice(1) : c).trim());
    const cell = (name: string) => {
      const i = columns!.get(name);
      return i === undefined ? '' : (cells[i] ?? '');
    };
    const state = cell('交易状态');
    if (state !== 'SUCCESS' && state !== 'REFUND') continue;
    const amountColumn = state === 'SUCCESS' ? '订单金额' : cell('申请退款金额') !== '' ? '申请退款金额' : '退款金额';
    const amount = yuanToFen(cell(amountColumn));
    if (amount === undefined)
      throw new Error(
        `wechat bill line ${lineNo}: ${amountColumn} ${JSON.stringify(cell(amountColumn))} is not a yuan amount`,
      );
    const at = parseChinaDateTime(cell('交易时间'));
    if (!at) throw new Error(`wechat bill line ${lineNo}: 交易时间 ${JSON.stringify(cell('交易时间'))} is not a time`);
    yield {
      kind: state === 'SUCCESS' ? 'PAYMENT' : 'REFUND',
      outTradeNo: fromWechatOutTradeNo(cell('商户订单号')),
      tradeNo: cell('微信订单号'),
      ...(state === 'REFUND' ? { outRefundNo: cell('商户退款单号') } : {}),
      amount,
      currency: cell('货币种类') || 'CNY',
      at,
      ...(state === 'REFUND'
        ? { refundStatus: wechatRefundStatus(cell('退款状态')), providerStatus: cell('退款状态') }
        : {}),
    };
  }
  if (!columns) throw new Error('wechat bill: no column line found');
}
