import { ApplicationFailure } from '@temporalio/common';

/** Error types that are business outcomes, never retried. Names are part of the workflow contract. */
export const BusinessFailure = {
  OUT_OF_STOCK: 'OUT_OF_STOCK',
  UNKNOWN_SKU: 'UNKNOWN_SKU',
  MIXED_CURRENCY: 'MIXED_CURRENCY',
  ORDER_NOT_FOUND: 'ORDER_NOT_FOUND',
  ORDER_CONFLICT: 'ORDER_CONFLICT',
  /** A Try arrived after its Cancel: refused so that no reservation hangs forever. */
  TCC_TRY_AFTER_CANCEL: 'TCC_TRY_AFTER_CANCEL',
  /** Confirm after cancel or cancel after confirm: a bug or an operator mistake; alert. */
  TCC_CONFLICT: 'TCC_CONFLICT',
  /** Unknown, foreign, already frozen or used coupon. */
  COUPON_UNAVAILABLE: 'COUPON_UNAVAILABLE',
  /** Fewer points available than the order redeems. */
  INSUFFICIENT_POINTS: 'INSUFFICIENT_POINTS',
  /** Discount and points cover the whole order: nothing to charge (refused; see createOrder). */
  ZERO_AMOUNT: 'ZERO_AMOUNT',
  PROVIDER_REJECTED: 'PROVIDER_REJECTED',
  UNKNOWN_PROVIDER: 'UNKNOWN_PROVIDER',
} as const;

/** Creates a non-retryable failure of a business type with structured details. */
export function businessFailure(type: keyof typeof BusinessFailure, message: string, details?: Record<string, unknown>): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true, details: details ? [details] : undefined });
}
