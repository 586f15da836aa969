/**
 * Contract of the order API: ids and statuses as schemas, and the HTTP request bodies (zod). Re-exports the
 * workflows' own contract (./order-workflow.ts: inputs, results, signal, updates, query), so the API, the worker and
 * the tools import one module. Workflow code must import ./order-workflow.ts instead: zod is never loaded into a
 * workflow (test/workflow-bundle.test.ts). The task queue is configuration (TASK_QUEUE, src/config.ts); failure
 * types are in ./failures.ts, provider names in ./providers.ts.
 */
import { z } from 'zod';
import { Currency, MinorUnits } from '../shared/money';
import { ORDER_STATUSES, type ReviewDecision as ReviewDecisionShape } from './order-workflow';
import { ProviderName } from './providers';

export * from './order-workflow';

// ---- Ids, statuses and names ----

/** Order ids: a business key, also the provider's out-trade-no. */
export const OrderId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'orderId must be 1-64 of [A-Za-z0-9_-]');

/** Order statuses, as in the public contract. */
export const OrderStatus = z.enum(ORDER_STATUSES);
export type OrderStatus = z.infer<typeof OrderStatus>;

/** SKUs: letters, digits and `._-`, up to 64. */
export const Sku = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'sku must be 1-64 of [A-Za-z0-9._-]');

/**
 * User ids: 1-64 characters of well-formed Unicode, without control characters or a space at either end. MySQL
 * compares ids ignoring trailing spaces (PAD SPACE) and stores a lone surrogate as U+FFFD, while an order id is hashed
 * from the exact string: "u1" and "u1 " would be two keys to the hash and one to the database (a 5xx for bad input);
 * a newline would write lines of its own into the workflow's details in the Web UI.
 */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
export const UserId = z
  .string()
  .min(1)
  .max(64)
  .refine((s) => !LONE_SURROGATE.test(s), 'userId must be well-formed Unicode (no lone surrogates)')
  // eslint-disable-next-line no-control-regex
  .refine((s) => !/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(s), 'userId must not contain control characters')
  .refine((s) => s.trim() === s, 'userId must not start or end with whitespace');

/** Most units of one SKU an order can hold (its lines of that SKU summed). */
export const MAX_QUANTITY_PER_SKU = 10_000;

/** Coupon codes: letters, digits and `._-`, up to 64. */
export const CouponCode = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'couponCode must be 1-64 of [A-Za-z0-9._-]');

// ---- HTTP request bodies (order API and admin) ----

/** `POST /orders` body. */
export const CreateOrderRequest = z
  .object({
    userId: UserId,
    items: z
      .array(z.object({ sku: Sku, quantity: z.number().int().min(1).max(MAX_QUANTITY_PER_SKU) }).strict())
      .min(1)
      .max(100)
      // Lines of one SKU are merged into one reservation: the cap holds for their sum, not only for each line.
      .superRefine((items, ctx) => {
        const total = new Map<string, number>();
        items.forEach((item, i) => {
          const sum = (total.get(item.sku) ?? 0) + item.quantity;
          total.set(item.sku, sum);
          if (sum > MAX_QUANTITY_PER_SKU && sum - item.quantity <= MAX_QUANTITY_PER_SKU)
            ctx.addIssue({
              code: z.ZodIssueCode.custom,
              path: [i, 'quantity'],
              message: `the lines of ${item.sku} add up to more than ${MAX_QUANTITY_PER_SKU} units`,
            });
        });
      }),
    provider: ProviderName.default('sandbox'),
    /** A coupon of this user; its discount comes off the catalog total. */
    couponCode: CouponCode.optional(),
    /**
     * Points to redeem, 1 point = 1 minor unit of POINTS_CURRENCY off (an order priced in another: 422
     * POINTS_CURRENCY_MISMATCH); the charged amount must stay above zero (else 422 ZERO_AMOUNT).
     */
    points: z.number().int().min(1).max(1_000_000_000_000).optional(),
  })
  .strict();
export type CreateOrderRequest = z.infer<typeof CreateOrderRequest>;

/**
 * `PUT /admin/coupons/:code` body: creates (or, while unused, replaces) a user's coupon. `currency`: CNY for a new
 * coupon when left out; a coupon replaced without it keeps its own.
 */
export const PutCouponRequest = z
  .object({ userId: UserId, discount: MinorUnits, currency: Currency.optional() })
  .strict();

/**
 * `PUT /admin/points/:userId` body: the new available balance. With `expectedAvailable` (the balance the operator
 * read), the change is made only if the balance is still that (409 POINTS_BALANCE_CHANGED otherwise, with the current
 * one): an order that froze or returned points in between is not overwritten.
 */
export const PutPointsRequest = z
  .object({
    balance: z.number().int().min(0).max(1_000_000_000_000),
    expectedAvailable: z.number().int().min(0).max(1_000_000_000_000).optional(),
  })
  .strict();

/** The currency a point is worth 1 minor unit of unless POINTS_CURRENCY says otherwise. */
export const DEFAULT_POINTS_CURRENCY = 'CNY';

/** Most buckets a SKU's stock can be sharded into. */
export const MAX_STOCK_BUCKETS = 64;

/**
 * `PUT /admin/products/:sku` body. `currency`: CNY for a new product when left out; a product replaced without it keeps
 * its own (as it keeps its buckets): a price change sent without the currency must not re-denominate a USD product.
 */
export const PutProductRequest = z
  .object({
    name: z.string().min(1).max(200),
    price: MinorUnits,
    currency: Currency.optional(),
    stock: z.number().int().min(0).max(1_000_000_000),
    /**
     * Hot SKUs: shard the stock into this many buckets so concurrent reservations update different rows
     * (default: keep the current count; a new product has 1). Available stock is spread evenly over them.
     */
    buckets: z.number().int().min(1).max(MAX_STOCK_BUCKETS).optional(),
    /**
     * The available stock the operator read (GET, summed over the buckets): the stock is replaced only if it is still
     * that, else 409 STOCK_CHANGED with the current figures. Orders reserve and release units all the time; without
     * it a replacement made from a stale read re-adds units that were sold in between.
     */
    expectedAvailable: z.number().int().min(0).max(1_000_000_000).optional(),
  })
  .strict();
export type PutProductRequest = z.infer<typeof PutProductRequest>;

/**
 * An operator's decision on an order in NEEDS_REVIEW: approve (confirm as paid) or refund (return the money, release
 * everything).
 */
const ReviewDecisionFields = z.object({
  decision: z.enum(['approve', 'refund']),
  operator: z.string().min(1).max(64),
  reason: z.string().min(3).max(500),
  /** Minor units left to refund of the trade, as the provider's console shows it (see the workflow contract). */
  refundAmount: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
});
const refundAmountWithRefund = (d: { refundAmount?: number; decision: string }) =>
  d.refundAmount === undefined || d.decision === 'refund';
const refundAmountMessage = { message: 'refundAmount goes with a refund decision only', path: ['refundAmount'] };
/**
 * Timeline entries that open a review round: the order went to review (again), or a decision failed and the review
 * waits for another. Their count is the order's review round (GET /orders/:id `reviewRound`, POST .../review).
 */
export const REVIEW_ROUND_ENTRIES = ['ORDER_NEEDS_REVIEW', 'REVIEW_DECISION_FAILED'] as const;

export const ReviewDecision = ReviewDecisionFields.strict().refine(refundAmountWithRefund, refundAmountMessage);
export type ReviewDecision = z.infer<typeof ReviewDecision>;

/**
 * `POST /orders/:id/review` body: the decision, and for an order in review for a refund its provider reported failed,
 * optionally which failed refund it is about (`failedOutRefundNo`, our refund number). Required once several refunds
 * of the order have failed: a decision that names none may be a retry of the one that settled the previous refund. For
 * an order in a late payment's review, optionally which trade (`tradeNo`).
 */
export const ReviewRequest = ReviewDecisionFields.extend({
  failedOutRefundNo: z.string().min(1).max(64).optional(),
  /** For an order in a late payment's review: the trade the decision is for (refused when another trade's is open). */
  tradeNo: z.string().min(1).max(128).optional(),
  /**
   * The review round the decision was made in, as GET /orders/:id showed it (`reviewRound`): refused once the review
   * has moved on (a retry sent after the decision was carried out and a new review opened). Optional; an operator tool
   * should always send it.
   */
  reviewRound: z.number().int().min(0).max(1_000_000).optional(),
})
  .strict()
  .refine(refundAmountWithRefund, refundAmountMessage);
export type ReviewRequest = z.infer<typeof ReviewRequest>;
// The schema and the workflow's hand-written check describe the same decision.
const _sameDecision: ReviewDecisionShape extends ReviewDecision
  ? ReviewDecision extends ReviewDecisionShape
    ? true
    : never
  : never = true;
void _sameDecision;
