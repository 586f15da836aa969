/** What a person is told about an order in each status: short, honest, with the next step. */
import type { OrderStatus } from './order';

/** User-facing message per status (English; the waiting page issue adds Chinese and support texts). */
export const USER_MESSAGES: Record<OrderStatus, string> = {
  AWAITING_PAYMENT: 'Waiting for your payment. Stock is held for you until the deadline.',
  PAID: 'Payment received and your order is confirmed.',
  EXPIRED: 'The payment deadline passed, so the order was closed and the items released. If money left your account, it is refunded automatically.',
  CANCELLED: 'The order was cancelled. If money left your account, it is refunded automatically.',
  REFUNDED: 'Your payment was refunded in full.',
  NEEDS_REVIEW: 'We received a payment that does not match this order. A person is checking it; nothing is lost, and you will be refunded if needed.',
  FAILED: 'The order could not be placed. No money was taken.',
};
