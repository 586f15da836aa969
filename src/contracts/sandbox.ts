/**
 * Contract of the sandbox payment provider's HTTP API (architecture.md, "Sandbox provider").
 * Shared by the sandbox server and by the sandbox adapter the activities use, so the two cannot drift.
 */
import { z } from 'zod';
import { Currency, MinorUnits } from '../shared/money';

/** Payment status as the sandbox reports it (modelled on Alipay/WeChat trade states). */
export const SandboxPaymentStatus = z.enum(['WAIT_BUYER_PAY', 'SUCCESS', 'CLOSED', 'REFUNDED']);
export type SandboxPaymentStatus = z.infer<typeof SandboxPaymentStatus>;

/** Merchant order ids: letters, digits, `_` and `-`, up to 64 characters (out-trade-no = orderId). */
export const OutTradeNo = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'outTradeNo must be 1-64 of [A-Za-z0-9_-]');

/** `POST /v1/payments` body. */
export const CreatePaymentRequest = z
  .object({
    outTradeNo: OutTradeNo,
    amount: MinorUnits.refine((v) => v > 0, 'amount must be positive'),
    currency: Currency,
    merchantId: z.string().min(1),
    notifyUrl: z.url(),
    expiresAt: z.iso.datetime({ offset: true }),
    subject: z.string().max(256).optional(),
  })
  .strict();
export type CreatePaymentRequest = z.infer<typeof CreatePaymentRequest>;

/** `POST /v1/payments` 200 answer. */
export const CreatePaymentResponse = z.object({
  tradeNo: z.string(),
  paymentUrl: z.string(),
  status: SandboxPaymentStatus,
});
export type CreatePaymentResponse = z.infer<typeof CreatePaymentResponse>;

/** `GET /v1/payments/:outTradeNo` answer; NOT_FOUND when the merchant order is unknown. */
export const QueryPaymentResponse = z.object({
  outTradeNo: z.string(),
  tradeNo: z.string().nullable().optional(),
  status: z.union([SandboxPaymentStatus, z.literal('NOT_FOUND')]),
  amount: MinorUnits.optional(),
  /** What the buyer actually paid; differs from amount only when a test tampers with it. */
  paidAmount: MinorUnits.nullable().optional(),
  currency: Currency.optional(),
  merchantId: z.string().optional(),
  paidAt: z.string().nullable().optional(),
  refundedAmount: MinorUnits.optional(),
  expiresAt: z.string().optional(),
});
export type QueryPaymentResponse = z.infer<typeof QueryPaymentResponse>;

/** `POST /v1/payments/:outTradeNo/pay` body: the buyer pays; `amount` overrides to test tampering. */
export const PayRequest = z.object({ amount: MinorUnits.optional() }).strict();
export type PayRequest = z.infer<typeof PayRequest>;

/** `POST /v1/refunds` body; idempotent by outRefundNo. */
export const RefundRequest = z
  .object({
    outTradeNo: OutTradeNo,
    outRefundNo: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
    amount: MinorUnits.refine((v) => v > 0, 'amount must be positive'),
    reason: z.string().max(256).optional(),
  })
  .strict();
export type RefundRequest = z.infer<typeof RefundRequest>;

/** `POST /v1/refunds` 200 answer. */
export const RefundResponse = z.object({
  outRefundNo: z.string(),
  outTradeNo: z.string(),
  refundNo: z.string(),
  amount: MinorUnits,
  status: z.literal('SUCCESS'),
  refundedAt: z.string(),
});
export type RefundResponse = z.infer<typeof RefundResponse>;

/** Error body of the sandbox API: `{ code, message }` (4xx business errors, 5xx injected faults). */
export const SandboxError = z.object({ code: z.string(), message: z.string().optional() });
export type SandboxError = z.infer<typeof SandboxError>;

/** Sandbox error codes with a business meaning. */
export const SandboxErrorCode = {
  /** close of a paid payment (like WeChat ORDERPAID / Alipay TRADE_STATUS_ERROR) */
  ORDER_PAID: 'ORDER_PAID',
  TRADE_NOT_EXIST: 'TRADE_NOT_EXIST',
  /** create with the same outTradeNo but different amount/currency/merchant */
  OUT_TRADE_NO_USED: 'OUT_TRADE_NO_USED',
  /** pay on a payment that is closed or expired */
  TRADE_CLOSED: 'TRADE_CLOSED',
  TRADE_NOT_PAID: 'TRADE_NOT_PAID',
  REFUND_AMOUNT_EXCEEDED: 'REFUND_AMOUNT_EXCEEDED',
  /** same outRefundNo with a different amount or trade */
  REFUND_NO_CONFLICT: 'REFUND_NO_CONFLICT',
  VALIDATION_FAILED: 'VALIDATION_FAILED',
  SYSTEM_ERROR: 'SYSTEM_ERROR',
} as const;

/** `PUT /_control/faults` body; every field optional, rates in 0..1. */
export const FaultSettings = z
  .object({
    dropNotifications: z.number().min(0).max(1),
    duplicateNotifications: z.number().min(0).max(1),
    reorderNotifications: z.number().min(0).max(1),
    notificationDelayMs: z.number().int().min(0).max(3_600_000),
    apiErrorRate: z.number().min(0).max(1),
    apiLatencyMs: z.number().int().min(0).max(600_000),
    /**
     * Models Alipay's "closed before scan, QR still payable": pay succeeds on a CLOSED payment until the
     * provider-side expiry (`expiresAt`) we gave when creating it; after that no provider takes money.
     */
    acceptPaymentAfterClose: z.boolean(),
    /**
     * A payment that settles after the provider-side expiry as well (a delayed bank debit, a Stripe async
     * payment method). Only a callback or the reconciliation against the bill can find it.
     */
    acceptPaymentAfterExpiry: z.boolean(),
    /**
     * The query API lags the notifications (a replica behind the primary, as Alipay's trade.query can right after a
     * payment): for this long after a payment, the query answers the payment as it was before it was paid.
     */
    queryLagMs: z.number().int().min(0).max(3_600_000),
  })
  .partial()
  .strict();
export type FaultSettings = z.infer<typeof FaultSettings>;

/** The notification body the sandbox POSTs to notifyUrl. */
export const SandboxNotification = z
  .object({
    id: z.string().min(1).max(128),
    type: z.literal('payment.succeeded'),
    createdAt: z.string().optional(),
    data: z
      .object({
        outTradeNo: OutTradeNo,
        tradeNo: z.string().min(1).max(128),
        amount: MinorUnits,
        currency: Currency,
        merchantId: z.string().min(1).max(128),
        paidAt: z.iso.datetime({ offset: true }),
      })
      .strict(),
  })
  .strict();
export type SandboxNotification = z.infer<typeof SandboxNotification>;

/** Header carrying the notification signature: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + rawBody)>`. */
export const SANDBOX_SIGNATURE_HEADER = 'sandbox-signature';

/** Body the merchant must answer (with HTTP 200) for the sandbox to stop redelivering. */
export const SANDBOX_ACK_BODY = 'success';
