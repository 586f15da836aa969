/**
 * settlePaid, the paid order's merged step, as one MySQL transaction: TCC Confirm of every participant, the order
 * PAID with its payment recorded, the buyer's receipt queued. The composition over the single steps
 * (order-steps.ts) runs the same sequence as three transactions; this one makes 10 statements for a one-line order
 * instead of 21 (the order row locked and read once with its lines and payment, the fences of every line locked with
 * their holds in one statement, the timeline entries written in one INSERT).
 *
 * Every guarantee of the single steps holds, and some get stronger:
 * - the TCC fences move in the same transaction as the units, coupon and points they guard (as in each single step);
 * - the order can never say PAID with its stock only reserved: both commit together or neither does;
 * - the status change is conditional on the status read under the row lock, its row count checked;
 * - the receipt is one row per order (unique topic and key: a duplicate means already queued);
 * - a retry after a failure (or a commit whose answer was lost) finds the fences CONFIRMED, the order PAID and the
 *   receipt queued, and changes nothing: the step is idempotent as a whole.
 * `handOff` (an order without a cooling-off window): the hand-off to fulfilment (its mark, the outbox message, the
 * timeline entry) commits in the same transaction at no extra statement (the mark rides on the status update, the
 * message on the receipt's INSERT); a retry finds it made.
 * The stock rows are updated last, so a hot SKU's row is locked only from its update to the commit.
 */
import type { Knex } from 'knex';
import { FailureType, businessFailure } from '../contracts/failures';
import type { OrderStatus, PaymentEvidence } from '../contracts/order';
import { retryDeadlocks } from '../db/knex';
import { OrderEventBatch } from '../db/order-events';
import { reportedPayment } from '../db/order-transitions';
import { confirmStockIn } from '../db/stock';
import { benefitParticipants } from './benefits';
import { HAND_OFF_WITHOUT_COOLING_OFF, type OrderStepInput } from './order-steps';
import { type TransitionResult, logTransition, transitionIn } from './orders';
import { type ReceiptOrder, lockOrderForReceipt, queueReceiptIn, receiptMessage } from './receipts';
import { claimHandOff, handOffMessage, queueHandOffIn } from './support';

export async function settlePaid(db: Knex, input: OrderStepInput): Promise<TransitionResult> {
  const { orderId } = input;
  const done = await retryDeadlocks(() =>
    db.transaction(async (trx) => {
      const order = await lockOrderForReceipt(trx, orderId);
      if (!order) throw businessFailure(FailureType.ORDER_NOT_FOUND, `order ${orderId} does not exist`);
      const events = new OrderEventBatch(orderId);
      // Timeline order as before: stock, coupon, points, the status change, the receipt.
      const stock = await confirmStockIn(trx, orderId, input.lines, events);
      for (const b of input.benefits)
        await benefitParticipants[b.participant].confirmIn(trx, { orderId, resource: b.resource }, events);
      const transition = input.transition;
      // No cooling-off window: the hand-off to fulfilment commits with PAID. An order that goes from AWAITING_PAYMENT
      // to PAID in this very update was never PAID before (the status only moves forward), so it has neither a
      // receipt nor a hand-off yet: the update marks it, and both messages go in one INSERT. Any other way to PAID (a
      // retry that finds it PAID, a review approving an order that was PAID before it went to review) goes through
      // each message's own guard.
      const handOffNow = input.handOff === true && transition.to === 'PAID';
      const firstPaid = transition.to === 'PAID' && order.status === 'AWAITING_PAYMENT';
      const changed = await transitionIn(
        trx,
        { orderId, ...transition },
        order.status as OrderStatus,
        events,
        handOffNow && firstPaid ? { fulfilment_ready_at: trx.fn.now(3) } : {},
      );
      if (changed.status === 'PAID') {
        // The order as this transaction left it: the payment it recorded, else what the payments row already says.
        const paid = changed.changed ? transition.payment : undefined;
        const receiptOrder: ReceiptOrder = {
          ...order,
          status: changed.status,
          paidTradeNo: paid?.tradeNo ?? order.paidTradeNo,
          payment: paid && changed.paymentRecorded ? recordedPayment(paid) : order.payment,
        };
        if (changed.changed && firstPaid) {
          // First PAID in this transaction: neither message can exist yet, so both go in one INSERT.
          const messages = [receiptMessage(receiptOrder)];
          if (handOffNow) messages.push(handOffMessage(order, HAND_OFF_WITHOUT_COOLING_OFF));
          await trx('outbox').insert(messages.map((m) => m.row));
          for (const m of messages) events.add(m.eventType, m.event);
        } else {
          // Already PAID, or PAID again after a review: each message behind its own guard.
          await queueReceiptIn(trx, receiptOrder, events);
          if (handOffNow && (await claimHandOff(trx, orderId)))
            await queueHandOffIn(trx, order, events, HAND_OFF_WITHOUT_COOLING_OFF);
        }
      }
      await events.write(trx);
      await stock.sell();
      return changed;
    }),
  );
  logTransition({ orderId, ...input.transition }, done);
  return { changed: done.changed, status: done.status };
}

/** A payment as the payments row records it: unreported fields (-1, 'unknown': an approved review of such one) null. */
function recordedPayment(paid: PaymentEvidence): ReceiptOrder['payment'] {
  const { amount, currency } = reportedPayment(paid);
  return {
    tradeNo: paid.tradeNo,
    paidAmount: amount,
    paidCurrency: currency,
    paidAt: new Date(paid.paidAt).toISOString(),
  };
}
