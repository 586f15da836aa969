/** Custom search attributes the order workflows keep current, so operators can list orders in the UI and CLI. */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Order status (AWAITING_PAYMENT, PAID, ...). */
export const OrderStatusKey = defineSearchAttributeKey('OrderStatus', SearchAttributeType.KEYWORD);
/** Live stage of the workflow (RESERVING, AWAITING_PAYMENT, CONFIRMING, ...). */
export const OrderStageKey = defineSearchAttributeKey('OrderStage', SearchAttributeType.KEYWORD);
/** Provider name. */
export const PaymentProviderKey = defineSearchAttributeKey('PaymentProvider', SearchAttributeType.KEYWORD);
/** Order amount in minor units. */
export const OrderAmountKey = defineSearchAttributeKey('OrderAmount', SearchAttributeType.INT);
/** Set while an order waits for manual review. */
export const NeedsReviewKey = defineSearchAttributeKey('NeedsReview', SearchAttributeType.BOOL);
/** Set when a customer escalated to support. */
export const EscalatedKey = defineSearchAttributeKey('Escalated', SearchAttributeType.BOOL);
/** When the buyer first escalated (for "escalated today": `EscalatedAt >= '2026-11-26T00:00:00Z'`). */
export const EscalatedAtKey = defineSearchAttributeKey('EscalatedAt', SearchAttributeType.DATETIME);
/** Set when confirm/cancel keeps failing and operators should look. */
export const StuckKey = defineSearchAttributeKey('Stuck', SearchAttributeType.BOOL);

/** Every custom attribute with its server type name, for registration (`--search-attribute NAME=Type`). */
export const SEARCH_ATTRIBUTES: { name: string; type: 'Keyword' | 'Int' | 'Bool' | 'Datetime' }[] = [
  { name: OrderStatusKey.name, type: 'Keyword' },
  { name: OrderStageKey.name, type: 'Keyword' },
  { name: PaymentProviderKey.name, type: 'Keyword' },
  { name: OrderAmountKey.name, type: 'Int' },
  { name: NeedsReviewKey.name, type: 'Bool' },
  { name: EscalatedKey.name, type: 'Bool' },
  { name: EscalatedAtKey.name, type: 'Datetime' },
  { name: StuckKey.name, type: 'Bool' },
];
