/**
 * The outbox relay's delivery contract: what the shop's systems receive at OUTBOX_WEBHOOK_URL for each outbox message
 * (a payment receipt when an order is PAID, a fulfilment hand-off when its cooling-off window ends).
 *
 * `POST <OUTBOX_WEBHOOK_URL>`, body `OutboxDelivery` as JSON, headers:
 * - `Payflow-Message-Id`: the message's id, `<topic>:<key>`: the same on every redelivery. Delivery is at least once
 *   (a relay that dies after the receiver answered delivers again): the receiver deduplicates by the body's `id`,
 *   which the signature covers (this header, which it does not, is for logs and routing).
 * - `Payflow-Topic`: the topic.
 * - `Payflow-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" keyed by OUTBOX_WEBHOOK_SECRET>`.
 *   The receiver recomputes it over the raw body, compares in constant time, and refuses a `t` more than five
 *   minutes away from its clock (a replayed request).
 *
 * Any 2xx answer means delivered; anything else, or no answer within ten seconds, is retried with backoff (5 s, then
 * doubling, at most 10 min apart), for as long as it takes. A 3xx is a failure, never followed. No order is promised
 * between messages: a receipt and a hand-off written together (no cooling-off window) are sent side by side, and a
 * backlog drains in any order; each message stands on its own.
 */

/** Topic of payment receipts (one per PAID order; key: the order id). */
export const PAYMENT_RECEIPT_TOPIC = 'order.payment_receipt';
/** Topic of fulfilment hand-offs (one per order whose cooling-off window ended; key: the order id). */
export const FULFILMENT_TOPIC = 'order.fulfilment_ready';

/** The body of one delivery. */
export interface OutboxDelivery {
  /** `<topic>:<key>`, stable across redeliveries. */
  id: string;
  topic: string;
  key: string;
  /** When the message was written (with the change that caused it), ISO 8601. */
  createdAt: string;
  /** 1 for the first delivery, more for redeliveries. */
  attempt: number;
  /** The message itself (src/activities/receipts.ts receiptMessage, src/activities/support.ts handOffMessage). */
  payload: unknown;
}

export const OUTBOX_HEADERS = {
  messageId: 'payflow-message-id',
  topic: 'payflow-topic',
  signature: 'payflow-signature',
} as const;

/** How far a signature's timestamp may be from the receiver's clock. */
export const OUTBOX_SIGNATURE_TOLERANCE_S = 300;
