/** The sandbox provider adapter: the PaymentProvider interface over the sandbox's HTTP API. */
import {
  CreatePaymentResponse,
  QueryPaymentResponse,
  RefundResponse,
  SANDBOX_ACK_BODY,
  SANDBOX_SIGNATURE_HEADER,
  SandboxError,
  SandboxNotification,
} from '../contracts/sandbox';
import { BillTruncatedError, decodeText, parseBillStream } from './bill-csv';
import { verifySandboxSignature } from './sandbox-signature';
import {
  type BillRow,
  type BillSource,
  type CloseResult,
  type CreatePaymentInput,
  type PaymentProvider,
  type ProviderPaymentState,
  type RefundInput,
  ProviderBusinessError,
} from './types';

/** Options of the sandbox adapter. */
export interface SandboxProviderOptions {
  baseUrl: string;
  secret: string;
  merchantId: string;
  /** Per-request timeout; a slower answer counts as a transport fault and is retried. */
  timeoutMs?: number;
}

/** Transport or server fault from the provider: retrying may help. */
export class ProviderUnavailableError extends Error {
  override name = 'ProviderUnavailableError';
}

/** Creates the sandbox adapter. */
export function createSandboxProvider(options: SandboxProviderOptions): PaymentProvider & BillSource {
  const timeoutMs = options.timeoutMs ?? 10_000;

  async function call(
    method: 'GET' | 'POST',
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: unknown }> {
    let response: Response;
    try {
      response = await fetch(`${options.baseUrl}${path}`, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new ProviderUnavailableError(`sandbox ${method} ${path} failed: ${(err as Error).message}`);
    }
    const text = await response.text();
    if (response.status >= 500)
      throw new ProviderUnavailableError(
        `sandbox ${method} ${path} answered ${response.status}: ${text.slice(0, 200)}`,
      );
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      throw new ProviderUnavailableError(`sandbox ${method} ${path} answered ${response.status} with a non-JSON body`);
    }
    return { status: response.status, json };
  }

  function businessError(status: number, json: unknown, what: string): ProviderBusinessError {
    const parsed = SandboxError.safeParse(json);
    const code = parsed.success ? parsed.data.code : `HTTP_${status}`;
    const message = parsed.success ? (parsed.data.message ?? code) : JSON.stringify(json).slice(0, 200);
    return new ProviderBusinessError(code, `${what}: ${message}`);
  }

  /** Streams `GET /v1/bills/:date` of our merchant, parsed as it arrives; aborted when the consumer stops early. */
  async function* billRows(date: string, rowOptions: { fromRow?: number } = {}): AsyncGenerator<BillRow> {
    const controller = new AbortController();
    // No answer (headers, or the next chunk) within timeoutMs is a transport fault; a long bill may take longer in all.
    let idle = setTimeout(() => controller.abort(new Error(`no data for ${timeoutMs} ms`)), timeoutMs);
    const path = `/v1/bills/${encodeURIComponent(date)}?merchantId=${encodeURIComponent(options.merchantId)}`;
    try {
      let response: Response;
      try {
        response = await fetch(`${options.baseUrl}${path}`, { signal: controller.signal });
      } catch (err) {
        throw new ProviderUnavailableError(`sandbox GET ${path} failed: ${(err as Error).message}`);
      }
      if (response.status !== 200) {
        const text = await response.text();
        if (response.status >= 500)
          throw new ProviderUnavailableError(`sandbox GET ${path} answered ${response.status}: ${text.slice(0, 200)}`);
        let json: unknown = {};
        try {
          json = JSON.parse(text);
        } catch {
          /* not JSON: the status says enough */
        }
        throw businessError(response.status, json, 'download bill');
      }
      const charset = /charset=([^;]+)/i.exec(response.headers.get('content-type') ?? '')?.[1]?.trim() ?? 'utf-8';
      const body = response.body;
      if (!body) throw new BillTruncatedError('the bill answer has no body');
      const reader = body.getReader();
      const bytes = async function* (): AsyncGenerator<Uint8Array> {
        for (;;) {
          let next: Awaited<ReturnType<typeof reader.read>>;
          try {
            next = await reader.read();
          } catch (err) {
            throw new ProviderUnavailableError(`sandbox bill download broke off: ${(err as Error).message}`);
          }
          if (next.done) return;
          clearTimeout(idle);
          idle = setTimeout(() => controller.abort(new Error(`no data for ${timeoutMs} ms`)), timeoutMs);
          yield next.value;
        }
      };
      yield* parseBillStream(decodeText(bytes(), charset), rowOptions);
    } finally {
      clearTimeout(idle);
      controller.abort();
    }
  }

  return {
    name: 'sandbox',
    merchantId: options.merchantId,
    billRows,
    ack: { status: 200, contentType: 'text/plain', body: SANDBOX_ACK_BODY },

    async createPayment(input: CreatePaymentInput) {
      const { status, json } = await call('POST', '/v1/payments', {
        outTradeNo: input.outTradeNo,
        amount: input.amount,
        currency: input.currency,
        merchantId: options.merchantId,
        notifyUrl: input.notifyUrl,
        expiresAt: input.expiresAt,
        subject: input.subject,
      });
      if (status !== 200) throw businessError(status, json, 'create payment');
      const parsed = CreatePaymentResponse.parse(json);
      return { tradeNo: parsed.tradeNo, paymentUrl: parsed.paymentUrl };
    },

    async queryPayment(outTradeNo: string): Promise<ProviderPaymentState> {
      const { status, json } = await call('GET', `/v1/payments/${encodeURIComponent(outTradeNo)}`);
      if (status !== 200) throw businessError(status, json, 'query payment');
      const q = QueryPaymentResponse.parse(json);
      const mapped = {
        WAIT_BUYER_PAY: 'PENDING',
        SUCCESS: 'PAID',
        CLOSED: 'CLOSED',
        REFUNDED: 'REFUNDED',
        NOT_FOUND: 'NOT_FOUND',
      } as const;
      return {
        outTradeNo,
        status: mapped[q.status],
        tradeNo: q.tradeNo ?? undefined,
        paidAmount: q.paidAmount ?? undefined,
        currency: q.currency,
        merchantId: q.merchantId,
        paidAt: q.paidAt ?? undefined,
        refundedAmount: q.refundedAmount,
      };
    },

    async closePayment(outTradeNo: string): Promise<CloseResult> {
      const { status, json } = await call('POST', `/v1/payments/${encodeURIComponent(outTradeNo)}/close`);
      if (status === 200) return { result: 'CLOSED' };
      const err = businessError(status, json, 'close payment');
      if (err.code === 'ORDER_PAID') return { result: 'ALREADY_PAID' };
      if (err.code === 'TRADE_NOT_EXIST') return { result: 'NOT_FOUND' };
      throw err;
    },

    async refund(input: RefundInput) {
      const { status, json } = await call('POST', '/v1/refunds', {
        outTradeNo: input.outTradeNo,
        outRefundNo: input.outRefundNo,
        amount: input.amount,
        reason: input.reason,
      });
      if (status !== 200) throw businessError(status, json, 'refund');
      const r = RefundResponse.parse(json);
      return { refundNo: r.refundNo, amount: r.amount, refundedAt: r.refundedAt };
    },

    verifyNotification(rawBody, headers, now) {
      const header = headers[SANDBOX_SIGNATURE_HEADER];
      const verdict = verifySandboxSignature(
        options.secret,
        Array.isArray(header) ? header[0] : header,
        rawBody,
        Math.floor(now.getTime() / 1000),
      );
      if (!verdict.ok)
        return { ok: false, rejection: { code: verdict.reason, message: `signature check failed: ${verdict.reason}` } };
      let body: unknown;
      try {
        body = JSON.parse(rawBody.toString('utf8'));
      } catch {
        return { ok: false, rejection: { code: 'MALFORMED_BODY', message: 'body is not valid JSON' } };
      }
      const parsed = SandboxNotification.safeParse(body);
      if (!parsed.success) {
        const isOtherEvent =
          typeof body === 'object' &&
          body !== null &&
          'type' in body &&
          (body as { type: unknown }).type !== 'payment.succeeded';
        return isOtherEvent
          ? {
              ok: false,
              rejection: {
                code: 'UNSUPPORTED_EVENT',
                message: `event type ${String((body as { type: unknown }).type)} is not handled`,
              },
            }
          : {
              ok: false,
              rejection: { code: 'MALFORMED_BODY', message: parsed.error.issues[0]?.message ?? 'invalid notification' },
            };
      }
      const n = parsed.data;
      return {
        ok: true,
        notification: {
          provider: 'sandbox',
          notificationId: n.id,
          outTradeNo: n.data.outTradeNo,
          tradeNo: n.data.tradeNo,
          amount: n.data.amount,
          currency: n.data.currency,
          merchantId: n.data.merchantId,
          paidAt: n.data.paidAt,
        },
      };
    },
  };
}
