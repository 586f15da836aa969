/**
 * The one interface every payment provider adapter implements. Activities and callback handlers use
 * only this; the workflow never knows which provider it talks to.
 */
import { z } from 'zod';
import { ProviderName } from '../contracts/providers';
import { Currency, MinorUnits } from '../shared/money';

/** Providers this build knows: declared with the contracts, which the order API and the workflows share. */
export { ProviderName };

/** A provider's view of one payment, normalised. */
export const ProviderPaymentState = z.object({
  outTradeNo: z.string(),
  /** NOT_FOUND: the provider has no such trade (e.g. Alipay before the QR is scanned). */
  status: z.enum(['NOT_FOUND', 'PENDING', 'PAID', 'CLOSED', 'REFUNDED']),
  tradeNo: z.string().optional(),
  /** What the buyer actually paid, in minor units. */
  paidAmount: MinorUnits.optional(),
  currency: Currency.optional(),
  merchantId: z.string().optional(),
  paidAt: z.string().optional(),
  refundedAmount: MinorUnits.optional(),
});
export type ProviderPaymentState = z.infer<typeof ProviderPaymentState>;

/** A verified, normalised "payment succeeded" notification. */
export const PaymentNotification = z.object({
  provider: ProviderName,
  /** The provider's own notification id: the dedup key (same across redeliveries). */
  notificationId: z.string(),
  outTradeNo: z.string(),
  tradeNo: z.string(),
  amount: MinorUnits,
  currency: Currency,
  merchantId: z.string(),
  paidAt: z.string(),
});
export type PaymentNotification = z.infer<typeof PaymentNotification>;

/**
 * A verified provider event that is not "payment succeeded": a trade closed unpaid, a trade closed by a full
 * refund (Alipay's TRADE_CLOSED after a refund is NOT a timeout close), a refund, a failed or cancelled payment.
 * It pays no order; adapters report it as an UNSUPPORTED_EVENT rejection that carries this notice, so the
 * callback route can audit it and answer with the provider's acknowledgement (the provider then stops retrying).
 * One kind does change something: a REFUND notice that names one of our refunds (outRefundNo) with its outcome
 * (refundStatus), which the route records before acknowledging (src/db/refund-outcomes.ts).
 */
export const ProviderNotice = z.object({
  provider: ProviderName,
  notificationId: z.string(),
  kind: z.enum(['TRADE_CLOSED', 'REFUND', 'PAYMENT_FAILED', 'OTHER']),
  /** For TRADE_CLOSED: closed unpaid (timeout, close call, cancel) or closed because it was refunded in full. */
  closeReason: z.enum(['UNPAID', 'FULLY_REFUNDED']).optional(),
  /** The provider's own event name (Alipay trade_status, WeChat event_type, Stripe event type). */
  providerEvent: z.string(),
  outTradeNo: z.string().optional(),
  tradeNo: z.string().optional(),
  outRefundNo: z.string().optional(),
  /**
   * Refunded so far (TRADE_CLOSED after a full refund, Alipay and Stripe charge REFUND notices), or the amount of the
   * one refund a notice reports the outcome of (WeChat REFUND.*, Stripe refund events), minor units.
   */
  refundedAmount: MinorUnits.optional(),
  /** The provider's own id of that refund (WeChat refund_id, Stripe re_...). */
  refundNo: z.string().optional(),
  /**
   * REFUND notices about one refund (outRefundNo): its outcome at the provider, when the notice states it. FAILED
   * (WeChat REFUND.ABNORMAL / REFUND.CLOSED, a Stripe refund failed or canceled) means the buyer did not get the money
   * although the provider had accepted the refund; PROCESSING, not completed yet.
   */
  refundStatus: z.enum(['SUCCEEDED', 'PROCESSING', 'FAILED']).optional(),
  /** A FAILED refund's reason, when the provider gives one (Stripe's failure_reason, e.g. expired_or_canceled_card). */
  failureReason: z.string().max(200).optional(),
  currency: Currency.optional(),
  merchantId: z.string(),
  at: z.string().optional(),
});
export type ProviderNotice = z.infer<typeof ProviderNotice>;

/** Why a notification was refused; every rejection is answered 4xx and changes no state. */
export type NotificationRejection = {
  code:
    | 'MISSING_SIGNATURE'
    | 'MALFORMED_SIGNATURE'
    | 'BAD_SIGNATURE'
    | 'STALE_TIMESTAMP'
    | 'MALFORMED_BODY'
    | 'UNSUPPORTED_EVENT'
    | 'WRONG_MERCHANT';
  message: string;
  /**
   * Set only with UNSUPPORTED_EVENT, and only after the signature (and merchant) were verified: a genuine event
   * that pays no order. The route may acknowledge it in the provider's format instead of answering 4xx.
   */
  notice?: ProviderNotice;
};

/** Input of createPayment. */
export interface CreatePaymentInput {
  outTradeNo: string;
  amount: number;
  currency: string;
  subject: string;
  notifyUrl: string;
  /** Provider-side expiry: after it the buyer can no longer pay. */
  expiresAt: string;
}

/** Result of closePayment: CLOSED, or the provider reports the trade already paid. */
export type CloseResult = { result: 'CLOSED' } | { result: 'ALREADY_PAID' } | { result: 'NOT_FOUND' };

/** Input of refund; outRefundNo must be stable for one refund, so a retry never refunds twice. */
export interface RefundInput {
  outTradeNo: string;
  outRefundNo: string;
  amount: number;
  reason?: string;
}

/** A business error from a provider (not a transport fault): retrying the same call cannot help. */
export class ProviderBusinessError extends Error {
  override name = 'ProviderBusinessError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The adapter interface. Transport faults throw plain errors (retried); business errors throw ProviderBusinessError.
 */
export interface PaymentProvider {
  readonly name: ProviderName;
  /** Our merchant id at this provider; notifications for another merchant are not ours. */
  readonly merchantId: string;
  createPayment(input: CreatePaymentInput): Promise<{ tradeNo: string; paymentUrl: string }>;
  queryPayment(outTradeNo: string): Promise<ProviderPaymentState>;
  closePayment(outTradeNo: string): Promise<CloseResult>;
  refund(input: RefundInput): Promise<{ refundNo: string; amount: number; refundedAt: string }>;
  /** Verifies the raw body and headers, then parses; never parses before verifying. */
  verifyNotification(
    rawBody: Buffer,
    headers: Record<string, string | string[] | undefined>,
    now: Date,
  ): { ok: true; notification: PaymentNotification } | { ok: false; rejection: NotificationRejection };
  /** The acknowledgement the provider expects once the notification is stored durably. */
  readonly ack: { status: number; contentType: string; body: string };
  /**
   * The provider's own format for a refused notification (e.g. WeChat's `{"code":"FAIL"}`); absent = the API's JSON
   * error.
   */
  failureAck?(rejection: NotificationRejection): { status: number; contentType: string; body: string };
}

/**
 * The providers this deployment offers, by name (see createProviders): what the worker and the API reach them through.
 */
export type ProviderRegistry = Record<string, PaymentProvider>;

/**
 * One normalised line of a provider's daily bill (reconciliation input). Amounts are positive minor units. DISPUTE
 * lines (Stripe's chargebacks) name the disputed payment's order and trade, and whether the line withdrew the
 * disputed money from our balance or reinstated it (a won dispute).
 */
export const BillRow = z.object({
  kind: z.enum(['PAYMENT', 'REFUND', 'DISPUTE']),
  outTradeNo: z.string(),
  tradeNo: z.string(),
  /** Merchant refund number, for REFUND rows. */
  outRefundNo: z.string().optional(),
  amount: MinorUnits,
  currency: Currency,
  /** When the payment or refund completed (ISO 8601). */
  at: z.string(),
  /**
   * REFUND rows: the refund's outcome as the bill states it (WeChat's 退款状态, the Stripe refund's status). Absent
   * when the bill lists completed refunds only (Alipay, the sandbox). Anything but SUCCEEDED means the buyer may not
   * have the money: never MATCHED.
   */
  refundStatus: z.enum(['SUCCEEDED', 'PROCESSING', 'FAILED']).optional(),
  /**
   * The provider's own word for that outcome (e.g. REFUNDCLOSE, CHANGE, refund_failure), or a dispute's status (e.g.
   * needs_response, won, lost), kept as evidence. PAYMENT rows: set only when the provider says the payment is not
   * settled (a Stripe charge `pending` or `failed`): never repaired into a paid order.
   */
  providerStatus: z.string().optional(),
  /**
   * A line of its own that reports an earlier refund failed and its money came back (Stripe's `refund_failure`
   * balance transaction): stored apart from the refund's own line, which the bill may list too.
   */
  refundFailureLine: z.literal(true).optional(),
  /** DISPUTE rows: the provider's id of the dispute (Stripe `dp_...`/`du_...`). */
  disputeId: z.string().optional(),
  /**
   * DISPUTE rows: what the line did with the disputed amount. WITHDRAWN: taken from our balance (the buyer's bank
   * reversed the payment); REINSTATED: given back (the dispute was won).
   */
  disputeFunds: z.enum(['WITHDRAWN', 'REINSTATED']).optional(),
});
export type BillRow = z.infer<typeof BillRow>;

/** Optional capability of a provider adapter: stream one day's bill (date YYYY-MM-DD, provider's time zone). */
export interface BillSource {
  /** Streams rows without holding the whole bill in memory; `fromRow` skips rows already processed (resume). */
  billRows(date: string, options?: { fromRow?: number }): AsyncIterable<BillRow>;
}
