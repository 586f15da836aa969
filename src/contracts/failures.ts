/**
 * The one list of failure types: every ApplicationFailure type the activities and workflows raise, the fallbacks the
 * workflows record when an error has no type, and the types the workflows and the API branch on; for each, what the
 * API answers when it meets that failure. Nothing outside this module spells a failure type as a string
 * (test/failure-contract.test.ts checks). Safe for workflow code: @temporalio/common only, no I/O.
 */
import { ApplicationFailure } from '@temporalio/common';

/** What the API answers for a failure: HTTP status, the `error` code, and the failure's detail fields it passes on. */
export interface ApiAnswer {
  status: number;
  code: string;
  details?: readonly string[];
  /** The `message` the buyer is told, where the failure's own message is written for operators. */
  message?: string;
}

/** One failure type. */
export interface FailureSpec {
  /** When it happens. */
  meaning: string;
  /** What the API answers when this failure reaches it (absent: the API never answers it as such). */
  api?: ApiAnswer;
  /**
   * A refusal of an order (pricing, stock, coupon, points, a reservation already released) that POST /orders answers
   * as `api`, wherever it is met: the API's own Try before the start, the workflow's setup, a retry with the same
   * Idempotency-Key (src/client/errors.ts, orderRefusalError). Any other setup failure answers as
   * PAYMENT_CREATION_FAILED (409 ORDER_FAILED, the same on every retry: src/client/errors.ts, orderFailedError).
   */
  tellsBuyer?: true;
}

/** Every failure type, with its meaning and the API's answer. */
export const FAILURES = {
  // ---- an order's setup: the buyer is told why (POST /orders) ----
  OUT_OF_STOCK: {
    meaning: 'not enough stock for a line',
    api: { status: 409, code: 'OUT_OF_STOCK', details: ['sku'] },
    tellsBuyer: true,
  },
  UNKNOWN_SKU: {
    meaning: 'a line names a SKU the catalog lacks',
    api: { status: 422, code: 'UNKNOWN_SKU', details: ['skus'] },
    tellsBuyer: true,
  },
  MIXED_CURRENCY: {
    meaning: 'the lines are priced in different currencies',
    api: { status: 422, code: 'MIXED_CURRENCY' },
    tellsBuyer: true,
  },
  ORDER_CONFLICT: {
    meaning:
      'the request contradicts the order (another user, bad quantities, a refund number reused with other terms)',
    api: { status: 409, code: 'ORDER_CONFLICT' },
    tellsBuyer: true,
  },
  COUPON_UNAVAILABLE: {
    meaning: 'unknown, foreign, already frozen or used coupon',
    api: { status: 409, code: 'COUPON_UNAVAILABLE', details: ['couponCode'] },
    tellsBuyer: true,
  },
  INSUFFICIENT_POINTS: {
    meaning: 'fewer points available than the order redeems',
    api: { status: 409, code: 'INSUFFICIENT_POINTS', details: ['requested'] },
    tellsBuyer: true,
  },
  POINTS_CURRENCY_MISMATCH: {
    meaning: 'points redeemed on an order priced in another currency than the one points are worth (POINTS_CURRENCY)',
    api: { status: 422, code: 'POINTS_CURRENCY_MISMATCH', details: ['currency', 'pointsCurrency'] },
    tellsBuyer: true,
  },
  ZERO_AMOUNT: {
    meaning: 'discount and points cover the whole order: nothing to charge',
    api: { status: 422, code: 'ZERO_AMOUNT', details: ['subtotal', 'discount', 'points'] },
    tellsBuyer: true,
  },
  /**
   * The order failed for good (its workflow released everything), so its Idempotency-Key can never place it: 409, not
   * a 503 that would ask for a retry which can only get the same answer.
   */
  PAYMENT_CREATION_FAILED: {
    meaning: 'the payment could not be set up (a setup failure without a type, or one the buyer is not told about)',
    api: { status: 409, code: 'ORDER_FAILED' },
  },

  // ---- orders, TCC and providers ----
  ORDER_NOT_FOUND: { meaning: 'no such order', api: { status: 404, code: 'ORDER_NOT_FOUND' } },
  /**
   * Refused so that no reservation hangs forever. For POST /orders a business outcome, not a fault: the order's
   * reservation was released (its start came after the orphan sweeper's grace) and no retry with this Idempotency-Key
   * can ever reserve again, so 409 and never a 503 inviting that retry. The same answer whether the API's own Try
   * before the start or the workflow's Try in its setup was refused.
   */
  TCC_TRY_AFTER_CANCEL: {
    meaning: 'a Try arrived after its Cancel (the reservation was already released)',
    api: {
      status: 409,
      code: 'RESERVATION_RELEASED',
      message:
        'the reservation of this order was already released (its setup came too late); place the order again with a new Idempotency-Key',
    },
    tellsBuyer: true,
  },
  TCC_CONFLICT: {
    meaning:
      'confirm after cancel, cancel after confirm, or a return of what was never sold: a bug or an operator mistake; alert',
  },
  PROVIDER_REJECTED: { meaning: 'the payment provider refused the call (a business error, not a transport fault)' },
  UNKNOWN_PROVIDER: { meaning: 'the provider is not configured here', api: { status: 404, code: 'UNKNOWN_PROVIDER' } },

  // ---- recorded by the order workflows ----
  ORDER_CLOSED: { meaning: 'the order finished before its payment was ready (the early-return update is refused)' },
  REFUND_AMOUNT_UNKNOWN: { meaning: 'a payment reported no amount, so it cannot be refunded automatically' },
  REFUND_FAILED_AT_PROVIDER: {
    meaning:
      "the order's latest refund was reported failed by its provider after it was accepted: the order is not marked refunded",
  },
  UNEXPECTED_ERROR: { meaning: 'automatic handling stopped on an error without a type (the order goes to review)' },
  ACTIVITY_FAILED: { meaning: "an operator's review decision failed on an error without a type" },

  // ---- reconciliation runs ----
  RECONCILIATION_FAILED: { meaning: 'a reconciliation run gave up (the run is marked FAILED with the cause)' },
  RUN_NOT_FOUND: { meaning: 'no reconciliation run with that id' },
  RUN_OWNED_ELSEWHERE: { meaning: 'the run belongs to another workflow execution' },
  RUN_NOT_ACTIVE: {
    meaning:
      'the run has ended (FAILED or COMPLETED) and is not run again under its id (a reset workflow): ask for a re-run',
  },
  NO_BILLS: { meaning: 'the provider has no bill download' },
  BAD_DATE: { meaning: "the run's bill day is not a calendar day" },
  BILL_MALFORMED: { meaning: "the provider's bill cannot be parsed" },
  BILL_DAY_NOT_ENDED: {
    meaning:
      "the bill day has not ended yet in the provider's bill time zone: its bill would be partial, so it is not reconciled",
    api: { status: 422, code: 'BILL_DAY_NOT_ENDED', details: ['date', 'endsAt'] },
  },
  BILL_NOT_PUBLISHED: {
    meaning:
      "the provider has not published the day's bill yet (Alipay isp.bill_not_exist, WeChat STATEMENT_CREATING): retried with backoff for about an hour, then the run fails",
  },
  NO_CLIENT: { meaning: 'a step that needs a Temporal client ran outside an activity' },
  NO_TASK_QUEUE: { meaning: 'a repair ran outside an activity, with no task queue for late-payment workflows' },
} as const satisfies Record<string, FailureSpec>;

/** A failure type's name. */
export type FailureType = keyof typeof FAILURES;

/** The failure types by name, for code that raises or compares them: `FailureType.OUT_OF_STOCK`. */
export const FailureType = Object.fromEntries(Object.keys(FAILURES).map((k) => [k, k])) as {
  readonly [K in FailureType]: K;
};

/** Failure types the API answers (those with an `api` answer). */
export type AnsweredFailure = {
  [K in FailureType]: (typeof FAILURES)[K] extends { api: ApiAnswer } ? K : never;
}[FailureType];

/** Whether a string (an ApplicationFailure's type, an order's status reason) is one of the failure types. */
export function isFailureType(type: unknown): type is FailureType {
  return typeof type === 'string' && Object.hasOwn(FAILURES, type);
}

/**
 * The API's answer when an order is refused for `type` (a `tellsBuyer` failure); undefined for any other type, which
 * POST /orders answers as PAYMENT_CREATION_FAILED (409 ORDER_FAILED).
 */
export function orderRefusal(type: string | null | undefined): ApiAnswer | undefined {
  const spec: FailureSpec | undefined = isFailureType(type) ? FAILURES[type] : undefined;
  return spec?.tellsBuyer ? spec.api : undefined;
}

/** Failures of a reconciliation run's steps that retrying cannot help: the run fails with the reason at once. */
export const RECONCILIATION_NON_RETRYABLE: FailureType[] = [
  FailureType.RUN_NOT_FOUND,
  FailureType.RUN_OWNED_ELSEWHERE,
  FailureType.RUN_NOT_ACTIVE,
  FailureType.UNKNOWN_PROVIDER,
  FailureType.NO_BILLS,
  FailureType.BAD_DATE,
  FailureType.BILL_DAY_NOT_ENDED,
  FailureType.BILL_MALFORMED,
  FailureType.PROVIDER_REJECTED,
  FailureType.NO_CLIENT,
  FailureType.NO_TASK_QUEUE,
];

/** Creates a retryable failure of a declared type: the activity's retry policy tries again (with its backoff). */
export function retryableFailure(type: FailureType, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: false });
}

/** Creates a non-retryable failure of a declared type with structured details (business failures never retry). */
export function businessFailure(
  type: FailureType,
  message: string,
  details?: Record<string, unknown>,
): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true, details: details ? [details] : undefined });
}
