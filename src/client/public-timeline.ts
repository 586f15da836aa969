/**
 * What GET /orders/:id shows of an order's timeline. Whoever holds an order id reads it (the buyer, the waiting page),
 * while the workflow writes its entries for operators too: a failure's raw text (a driver's error naming hosts or
 * SQL, a provider's answer), an operator's name. Entries that can carry such text are shown by what happened, not by
 * how it failed; operators read the original in the order's timeline table and the workflow's history.
 */
import { FailureType, isFailureType, orderRefusal } from '../contracts/failures';

export interface TimelineEntry {
  type: string;
  message: string;
}

/** Entry types written with a failure's raw text or an operator's name, and what the public timeline says instead. */
const REDACTED: Record<string, string> = {
  REVIEW_DECISION_FAILED: 'A review decision could not be carried out; the order waits for another decision',
  REVIEW_REMINDER: 'Still waiting for a review decision',
  LATE_PAYMENT_REFUNDED_BY_REVIEW: 'A payment that arrived late was refunded after a review',
  REFUND_FAILED_SETTLED_BY_REVIEW: 'A refund that had failed at the provider was settled after a review',
  LATE_PAYMENT_WAITS_FOR_REVIEW:
    "A payment that arrived late could not be refunded automatically; it will be reviewed once the order's current review is settled",
  LATE_PAYMENT_REFUND_FAILED:
    'A payment arrived after the order was closed and could not be refunded automatically; it is kept for a manual review',
  // Written by refund notices with the provider's failure text, refund numbers and operators' instructions.
  REFUND_FAILED: 'A refund failed at the payment provider after it was accepted; the order is being reviewed',
  REFUND_SUCCEEDED_AFTER_FAILURE: 'A refund reported failed was reported completed by the payment provider afterwards',
};

/**
 * A notification the provider did not confirm: "...but <provider> reports <status>: ignored" is shown as written; "...but
 * <provider> could not be asked (<error>)" is not.
 */
const UNCONFIRMED_UNASKED =
  'A payment notification could not be confirmed with the provider and was ignored; the order keeps its deadline';

/** The text of a payment-mismatch review as the workflow writes it: amounts, currencies, merchant: no failure text. */
const MISMATCH_REVIEW = /^Payment does not match the order \(/;

/** The public text of one timeline entry of an order whose status_reason is `reason`. */
export function publicTimelineMessage(entry: TimelineEntry, reason: string | null | undefined): string {
  switch (entry.type) {
    case 'ORDER_FAILED':
      return publicFailureEntry(reason, entry.message);
    case 'ORDER_NEEDS_REVIEW':
      return MISMATCH_REVIEW.test(entry.message)
        ? entry.message
        : 'Automatic handling stopped; the order is kept for a manual review';
    // A review's decision names its operator and carries their free-text reason: shown as what was decided.
    case 'ORDER_PAID':
      if (/^Approved by /.test(entry.message)) return 'Approved after a review';
      if (/ as the trade that paid the order/.test(entry.message))
        return 'The payment was identified as the one that paid the order after a review';
      return entry.message;
    case 'ORDER_REFUNDED':
      return /^Refunded by /.test(entry.message) ? 'Refunded after a review' : entry.message;
    case 'REFUNDED':
      return entry.message.replace(/: review refund by [\s\S]*$/, ': refunded after a review');
    case 'NOTIFICATION_NOT_CONFIRMED':
      return / could not be asked \(/.test(entry.message) ? UNCONFIRMED_UNASKED : entry.message;
    default:
      return REDACTED[entry.type] ?? entry.message;
  }
}

/**
 * The public text of an order's ORDER_FAILED timeline entry. The workflow writes "Order failed: <message>"; a refusal the
 * buyer is told (out of stock, a coupon not theirs) and the provider's own refusal are kept; any other failure's text
 * is replaced by its type, as orderFailedError answers it.
 */
function publicFailureEntry(reason: string | null | undefined, message: string): string {
  if (orderRefusal(reason) || reason === FailureType.PROVIDER_REJECTED) return message;
  const type = isFailureType(reason) ? reason : FailureType.PAYMENT_CREATION_FAILED;
  return `Order failed: the order could not be set up (${type})`;
}
