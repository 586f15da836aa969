/**
 * The order workflow's merged steps (README, "What one order costs"). Each step is a short sequence of the existing
 * MySQL steps, run as one local activity, so an order pays one activity execution per phase instead of one per
 * row change. Every guarantee of the single steps still holds, because each inner step keeps its own:
 *
 * - every TCC step writes its participant's fence in the same transaction as the resource it moves (stock.ts,
 *   tcc.ts), so Try/Confirm/Cancel/Return stay idempotent, an empty rollback stays possible and a late Try after a
 *   Cancel is still refused;
 * - the order's status change is conditional (`transitionOrder`: only from the listed statuses, checked row count);
 * - the outbox rows (receipt, fulfilment) are written once, guarded by the order row.
 *
 * So a step that fails half-way (a crash, a lost connection) is simply run again by its retry policy: the parts
 * already done are no-ops, the rest completes. Order matters where money does: stock is confirmed before the order
 * says PAID, released before it says EXPIRED/CANCELLED/FAILED.
 */
import type { Knex } from 'knex';
import type { OrderLine, OrderStatus, PaymentEvidence } from '../contracts/order';
import { createBenefitActivities, type OrderBenefit } from './benefits';
import { createOrder, transitionOrder, type CreateOrderInput, type TransitionResult } from './orders';
import { recordPaymentReceipt } from './receipts';
import { cancelStock, confirmStock, returnStock, tryReserveStock, type StockLine } from './stock';
import { markFulfilmentReady } from './support';

/** The order as the workflow carries it after it is opened. */
export interface OpenedOrder {
  amount: number;
  currency: string;
  lines: OrderLine[];
  /** Coupon and points held for the order (TCC participants besides stock). */
  benefits: OrderBenefit[];
}

/** The participants of an order, for the steps that move all of them. */
export interface OrderParticipants {
  orderId: string;
  userId: string;
  lines: StockLine[];
  benefits: OrderBenefit[];
}

/** A status change that closes a step: from which statuses, to which, why, with its timeline entry. */
export interface StepTransition {
  from: OrderStatus[];
  to: OrderStatus;
  reason: string;
  event: { type: string; message: string; data?: Record<string, unknown> };
  payment?: PaymentEvidence;
}

const lineOf = (l: StockLine): StockLine => ({ sku: l.sku, quantity: l.quantity });

/** Builds the merged steps over one database. */
export function createOrderSteps(db: Knex) {
  const benefit = createBenefitActivities(db);
  const call = (p: OrderParticipants, b: OrderBenefit) => ({ orderId: p.orderId, userId: p.userId, ...b });

  return {
    /**
     * Steps 1-2 of architecture.md: price and store the order, then the TCC Try of every participant (stock first; a
     * Try the API already made before the start is a no-op here). A business failure (unknown SKU, out of stock, a
     * coupon taken) is thrown as is; the workflow then runs `releaseOrder`, whose cancels are empty rollbacks for
     * the participants this step never reached.
     */
    async openOrder(input: CreateOrderInput): Promise<OpenedOrder> {
      const priced = await createOrder(db, input);
      const lines = priced.lines;
      await tryReserveStock(db, input.orderId, lines.map(lineOf));
      const benefits: OrderBenefit[] = [
        ...(priced.couponCode ? [{ participant: 'coupon' as const, resource: priced.couponCode, quantity: priced.discount ?? 0 }] : []),
        ...(priced.points ? [{ participant: 'points' as const, resource: input.userId, quantity: priced.points }] : []),
      ];
      const p = { orderId: input.orderId, userId: input.userId, lines, benefits };
      for (const b of benefits) await benefit.tryBenefit(call(p, b));
      return { amount: priced.amount, currency: priced.currency, lines, benefits };
    },

    /**
     * Step 5: TCC Confirm of every participant, the order marked PAID (the payment recorded on it), and the buyer's
     * receipt queued in the outbox. Confirm comes first: an order never says PAID with its stock only reserved.
     */
    async settlePaid(input: OrderParticipants & { transition: StepTransition }): Promise<TransitionResult> {
      await confirmStock(db, input.orderId, input.lines.map(lineOf));
      for (const b of input.benefits) await benefit.confirmBenefit(call(input, b));
      const result = await transitionOrder(db, { orderId: input.orderId, ...input.transition });
      if (result.status === 'PAID') await recordPaymentReceipt(db, input.orderId);
      return result;
    },

    /**
     * Step 6 (and a failed setup): TCC Cancel of every participant (an empty rollback where no Try ran), then the
     * order's closing status. An order whose row was never written (pricing failed) has nothing to mark.
     */
    async releaseOrder(input: OrderParticipants & { transition: StepTransition }): Promise<TransitionResult | { changed: false; status: 'NONE' }> {
      await cancelStock(db, input.orderId, input.lines.map(lineOf));
      for (const b of input.benefits) await benefit.cancelBenefit(call(input, b));
      const exists = await db('orders').where({ order_id: input.orderId }).first('order_id');
      if (!exists) return { changed: false, status: 'NONE' };
      return transitionOrder(db, { orderId: input.orderId, ...input.transition });
    },

    /**
     * After a refund: every participant back where it came from, then the order REFUNDED. `confirmed`: the order was
     * PAID, so sold stock, used coupon and spent points are returned; else (a review refund of an order that never
     * confirmed) reservations are released. A participant in the other state is handled by what it is in.
     */
    async settleRefunded(input: OrderParticipants & { transition: StepTransition }): Promise<TransitionResult> {
      const lines = input.lines.map(lineOf);
      // Cancel releases what is only reserved and refuses (TCC_CONFLICT) what was sold; return gives back what was sold.
      await cancelStock(db, input.orderId, lines).catch(async (err: unknown) => {
        if ((err as { type?: string }).type !== 'TCC_CONFLICT') throw err;
        await returnStock(db, input.orderId, lines);
      });
      for (const b of input.benefits) {
        await benefit.cancelBenefit(call(input, b)).catch(async (err: unknown) => {
          if ((err as { type?: string }).type !== 'TCC_CONFLICT') throw err;
          await benefit.returnBenefit(call(input, b));
        });
      }
      return transitionOrder(db, { orderId: input.orderId, ...input.transition });
    },

    /** After cooling-off: the order handed to fulfilment (outbox), once. */
    handOff: (orderId: string) => markFulfilmentReady(db, orderId),
  };
}
