/**
 * Contract of the order payment workflow family, in four sections: ids and names, the HTTP request bodies, the
 * workflow inputs and results, and the workflow's messages (signal, updates, query). The task queue is configuration
 * (TASK_QUEUE, src/config.ts); failure types are in ./failures.ts, provider names in ./providers.ts. Imported by the
 * workflow, the worker and the HTTP client side, so that all three agree. Safe for workflow code (zod and
 * @temporalio/workflow only).
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import { z } from 'zod';
import { Currency, MinorUnits } from '../shared/money';
import { ProviderName } from './providers';

// ---- Ids, statuses and names ----

/** Workflow id of an order's payment lifecycle: one workflow per order. */
export function orderWorkflowId(orderId: string): string {
  return `order-${orderId}`;
}

/** Order ids: a business key, also the provider's out-trade-no. */
export const OrderId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'orderId must be 1-64 of [A-Za-z0-9_-]');

/** Order statuses, as in the public contract. */
export const OrderStatus = z.enum(['AWAITING_PAYMENT', 'PAID', 'EXPIRED', 'CANCELLED', 'REFUNDED', 'NEEDS_REVIEW', 'FAILED']);
export type OrderStatus = z.infer<typeof OrderStatus>;

/** Statuses after which the order's workflow has nothing left to wait for. */
export const FINAL_STATUSES: readonly OrderStatus[] = ['PAID', 'EXPIRED', 'CANCELLED', 'REFUNDED', 'FAILED'];

/** SKUs: letters, digits and `._-`, up to 64. */
export const Sku = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'sku must be 1-64 of [A-Za-z0-9._-]');

/** Coupon codes: letters, digits and `._-`, up to 64. */
export const CouponCode = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'couponCode must be 1-64 of [A-Za-z0-9._-]');

/** Workflow id of the late-payment handler: one per provider trade, so it is started idempotently. */
export function latePaymentWorkflowId(provider: string, outTradeNo: string, tradeNo: string): string {
  return `late-payment-${provider}-${outTradeNo}-${tradeNo}`;
}

/** The refund number for an order's automatic refund: stable, so a retry never refunds twice. */
export function autoRefundNo(orderId: string, tradeNo: string): string {
  return `rf-${orderId}-${tradeNo}`.slice(0, 64);
}

// ---- HTTP request bodies (order API and admin) ----

/** `POST /orders` body. */
export const CreateOrderRequest = z
  .object({
    userId: z.string().min(1).max(64),
    items: z
      .array(z.object({ sku: Sku, quantity: z.number().int().min(1).max(10_000) }).strict())
      .min(1)
      .max(100),
    provider: ProviderName.default('sandbox'),
    /** A coupon of this user; its discount comes off the catalog total. */
    couponCode: CouponCode.optional(),
    /** Points to redeem, 1 point = 1 minor unit off; the charged amount must stay above zero (else 422 ZERO_AMOUNT). */
    points: z.number().int().min(1).max(1_000_000_000_000).optional(),
  })
  .strict();
export type CreateOrderRequest = z.infer<typeof CreateOrderRequest>;

/** `PUT /admin/coupons/:code` body: creates (or, while unused, replaces) a user's coupon. */
export const PutCouponRequest = z
  .object({ userId: z.string().min(1).max(64), discount: MinorUnits, currency: Currency.default('CNY') })
  .strict();

/** `PUT /admin/points/:userId` body: sets the user's available points (frozen and spent points stay accounted for). */
export const PutPointsRequest = z.object({ balance: z.number().int().min(0).max(1_000_000_000_000) }).strict();

/** Most buckets a SKU's stock can be sharded into. */
export const MAX_STOCK_BUCKETS = 64;

/** `PUT /admin/products/:sku` body. */
export const PutProductRequest = z
  .object({
    name: z.string().min(1).max(200),
    price: MinorUnits,
    currency: Currency.default('CNY'),
    stock: z.number().int().min(0).max(1_000_000_000),
    /**
     * Hot SKUs: shard the stock into this many buckets so concurrent reservations update different rows
     * (default: keep the current count; a new product has 1). Available stock is spread evenly over them.
     */
    buckets: z.number().int().min(1).max(MAX_STOCK_BUCKETS).optional(),
  })
  .strict();
export type PutProductRequest = z.infer<typeof PutProductRequest>;

/** An operator's decision on an order in NEEDS_REVIEW: approve (confirm as paid) or refund (return the money, release everything). */
export const ReviewDecision = z
  .object({
    decision: z.enum(['approve', 'refund']),
    operator: z.string().min(1).max(64),
    reason: z.string().min(3).max(500),
  })
  .strict();
export type ReviewDecision = z.infer<typeof ReviewDecision>;

// ---- Workflow inputs, results and the values they carry ----

/** One order line as the workflow carries it (price snapshot from the catalog). */
export interface OrderLine {
  sku: string;
  quantity: number;
  unitPrice: number;
}

/** Input of the orderPayment workflow. Durations are fixed at start so config changes never alter a running order. */
export interface OrderPaymentInput {
  orderId: string;
  userId: string;
  items: { sku: string; quantity: number }[];
  provider: CreateOrderRequest['provider'];
  idempotencyKey?: string;
  /** Coupon and points to redeem (TCC participants 'coupon' and 'points'); absent on orders without them. */
  couponCode?: string;
  points?: number;
  paymentTimeoutMs: number;
  queryFirstDelayMs: number;
  queryMaxIntervalMs: number;
  providerExpiryMarginMs: number;
  /** Base URL that notify URLs are built from. */
  publicBaseUrl: string;
  /** Cooling-off window after PAID (0 or absent: none). */
  coolingOffMs?: number;
  /** Reminder interval while waiting for manual review (absent: 1 hour). */
  reviewReminderMs?: number;
}

/** Result of the workflow. */
export interface OrderPaymentResult {
  orderId: string;
  status: OrderStatus;
  reason?: string;
}

/** What the API returns once stock is reserved and the provider payment exists (early return). */
export interface PaymentReady {
  orderId: string;
  status: OrderStatus;
  amount: number;
  currency: string;
  payment: { provider: string; paymentUrl: string; expiresAt: string };
}

/** A payment the workflow has learned of, from a callback or an active query (they count the same). */
export interface PaymentEvidence {
  source: 'callback' | 'query' | 'close';
  notificationId?: string;
  tradeNo: string;
  amount: number;
  currency: string;
  merchantId: string;
  paidAt: string;
}

/** Stages the workflow moves through; the status query reports the current one. */
export type OrderStage =
  | 'CREATING_ORDER'
  | 'RESERVING'
  | 'CREATING_PAYMENT'
  | 'AWAITING_PAYMENT'
  | 'QUERYING_PROVIDER'
  | 'CONFIRMING'
  | 'CLOSING'
  | 'RELEASING'
  | 'WATCHING_LATE_PAYMENT'
  | 'REFUNDING'
  | 'NEEDS_REVIEW'
  | 'AWAITING_REVIEW'
  | 'COOLING_OFF'
  | 'DONE';

/** One entry of the workflow's own timeline (workflow time, deterministic). */
export interface TimelineEntry {
  at: string;
  type: string;
  message: string;
}

/** Input of the latePayment workflow: a payment the provider reported after the order workflow finished. */
export interface LatePaymentInput {
  provider: CreateOrderRequest['provider'];
  outTradeNo: string;
  tradeNo: string;
  notificationId?: string;
}

/** What the latePayment workflow decided. */
export interface LatePaymentResult {
  outcome: 'ALREADY_CONFIRMED' | 'REFUNDED' | 'NOT_PAID_AT_PROVIDER' | 'LEFT_FOR_REVIEW' | 'UNKNOWN_ORDER' | 'PROVIDER_MISMATCH';
  detail: string;
}

// ---- Messages of the order workflow: its signal, updates and query, with their arguments and answers ----

/** Signal sent by the callback handler after a notification is verified and stored. */
export interface PaymentNotifiedSignal {
  notificationId: string;
  outTradeNo: string;
  tradeNo: string;
  amount: number;
  currency: string;
  merchantId: string;
  paidAt: string;
  /** The provider that sent it (absent from signals sent before this field existed); another provider's is ignored. */
  provider?: string;
}

/**
 * Result of the `status` query. The texts people are told are not part of it: the API computes them (describeStatus)
 * from these fields. Executions started by older code also answer a `messages` field, which readers ignore.
 */
export interface OrderWorkflowStatus {
  orderId: string;
  stage: OrderStage;
  status: OrderStatus;
  amount?: number;
  currency?: string;
  deadline?: string;
  nextCheckAt?: string;
  queryAttempts: number;
  timeline: TimelineEntry[];
}

/**
 * What became of a review decision. A decision that cannot be carried out (the provider refuses the refund, a TCC
 * conflict on approve) leaves the order in NEEDS_REVIEW waiting for another decision, with `failure` saying why.
 */
export interface ReviewOutcome {
  status: OrderStatus;
  failure?: { type: string; message: string };
}

/** What one-click support found and recorded. */
export interface EscalationResult {
  ticketId: string;
  orderId: string;
  status: OrderStatus;
  stage: OrderStage;
  providerStatus: string;
  /** PAYMENT_FOUND: the provider says paid and the order is now being confirmed. */
  resolution: 'PAYMENT_FOUND' | 'WAITING_FOR_PAYMENT' | 'IN_PROGRESS' | 'CLOSED' | 'IN_REVIEW';
}

/** Early-return update: resolves with PaymentReady once the payment exists, or fails with a FailureType (contracts/failures.ts). */
export const paymentReadyUpdate = defineUpdate<PaymentReady>('paymentReady');
/** A verified payment notification (deduplicated inside the workflow by notificationId). */
export const paymentNotifiedSignal = defineSignal<[PaymentNotifiedSignal]>('paymentNotified');
/** User cancel; resolves with the final status (CANCELLED, or PAID when the buyer paid first). */
export const cancelOrderUpdate = defineUpdate<{ status: OrderStatus }, [{ reason?: string }]>('cancelOrder');
/** Live status of the order's lifecycle. */
export const statusQuery = defineQuery<OrderWorkflowStatus>('status');

/** Manual review decision (authenticated endpoint); the validator refuses it unless the order waits for review. */
export const reviewDecisionUpdate = defineUpdate<ReviewOutcome, [ReviewDecision]>('reviewDecision');

/** Buyer's refund inside the cooling-off window; the validator refuses it outside the window. */
export const coolingOffRefundUpdate = defineUpdate<{ status: OrderStatus; refundNo?: string }, [{ reason?: string }]>('coolingOffRefund');

/** One-click support: query the provider now, record a ticket with a snapshot, mark the workflow. */
export const escalateUpdate = defineUpdate<EscalationResult, [{ note?: string }]>('escalate');
