/**
 * The order workflow's merged steps (README, "What one order costs"). Each is a short sequence of the single MySQL
 * steps, run as one local activity, so an order pays one activity execution per phase instead of one per row change.
 * Every guarantee of the single steps still holds, because each inner step keeps its own:
 *
 * - every TCC step writes its participant's fence in the same transaction as the resource it moves (stock.ts,
 *   tcc.ts), so Try/Confirm/Cancel/Return stay idempotent, an empty rollback stays possible and a late Try after a
 *   Cancel is still refused;
 * - the order's status change is conditional (`transitionOrder`: only from the listed statuses, checked row count);
 * - the outbox rows (receipt, fulfilment) are written once, guarded by the order row.
 *
 * So a merged step that fails half-way (a crash, a lost connection) is simply run again by its retry policy: the parts
 * already done are no-ops, the rest completes. Order matters where money does: stock is confirmed before the order
 * says PAID, released before it says EXPIRED/CANCELLED/FAILED.
 *
 * The steps are composed over the single activities (not over the database), so the workflow tests that script the
 * single steps run this very composition. One exception in production: the worker runs `settlePaid` as one MySQL
 * transaction of the same sequence (settle-paid.ts, over the same in-transaction code as the single steps);
 * test/settle-paid.test.ts shows the two leave the same rows and timeline.
 */
import { FailureType } from '../contracts/failures';
import type { OrderLine, OrderStatus, PaymentEvidence } from '../contracts/order';
import type { StockLine } from '../db/stock';
import type { BenefitCall, OrderBenefit } from './benefits';
import type { CreateOrderInput, PricedOrder, TransitionInput, TransitionResult } from './orders';
import type { CreateProviderPaymentInput, CreatedPayment } from './payments';

/** The order as the workflow carries it after it is opened. */
export interface OpenedOrder {
  amount: number;
  currency: string;
  lines: OrderLine[];
  /** Coupon and points held for the order (TCC participants besides stock). */
  benefits: OrderBenefit[];
}

/** Input of openOrderWithPayment: the order to open, and the provider payment to create for its amount. */
export interface OpenWithPaymentInput {
  order: CreateOrderInput;
  payment: Omit<CreateProviderPaymentInput, 'orderId' | 'provider' | 'amount' | 'currency'>;
}

/** The opened order with its provider payment. */
export interface OpenedWithPayment extends OpenedOrder {
  payment: CreatedPayment;
}

/** The participants of an order, and the status change that closes the step. */
export interface OrderStepInput {
  orderId: string;
  userId: string;
  lines: StockLine[];
  benefits: OrderBenefit[];
  transition: StepTransition;
  /**
   * settleRefunded: every participant was confirmed (a PAID order), so each is returned without trying a cancel first.
   */
  sold?: boolean;
  /**
   * settlePaid: the order has no cooling-off window, so it is handed to fulfilment (outbox) in the same step once
   * it is PAID.
   */
  handOff?: boolean;
}

/** A status change: from which statuses, to which, why, with its timeline entry (and the payment that caused it). */
export interface StepTransition {
  from: OrderStatus[];
  to: OrderStatus;
  reason: string;
  event: { type: string; message: string; data?: Record<string, unknown> };
  payment?: PaymentEvidence;
}

/** The single steps the merged ones are made of (the activities of the same names). */
export interface SingleSteps {
  createOrder(input: CreateOrderInput): Promise<PricedOrder>;
  reserveStock(input: { orderId: string; lines: StockLine[] }): Promise<unknown>;
  confirmStock(input: { orderId: string; lines: StockLine[] }): Promise<unknown>;
  cancelStock(input: { orderId: string; lines: StockLine[] }): Promise<unknown>;
  returnStock(input: { orderId: string; lines: StockLine[] }): Promise<unknown>;
  tryBenefit(input: BenefitCall): Promise<unknown>;
  confirmBenefit(input: BenefitCall): Promise<unknown>;
  cancelBenefit(input: BenefitCall): Promise<unknown>;
  returnBenefit(input: BenefitCall): Promise<unknown>;
  transitionOrder(input: TransitionInput): Promise<TransitionResult>;
  recordPaymentReceipt(orderId: string): Promise<unknown>;
  markFulfilmentReady(orderId: string, message?: string): Promise<{ written: boolean }>;
  createProviderPayment(input: CreateProviderPaymentInput): Promise<CreatedPayment>;
}

/** The timeline entry of a hand-off to fulfilment made right after PAID (no cooling-off window). */
export const HAND_OFF_WITHOUT_COOLING_OFF = 'Paid, no cooling-off window; handed to fulfilment';

const failureTypeOf = (err: unknown) => (err as { type?: string } | null)?.type;
const lineOf = (l: StockLine): StockLine => ({ sku: l.sku, quantity: l.quantity });

/** Builds the merged steps over the single ones. */
export function composeOrderSteps(one: SingleSteps) {
  const call = (p: { orderId: string; userId: string }, b: OrderBenefit): BenefitCall => ({
    orderId: p.orderId,
    userId: p.userId,
    ...b,
  });
  const stock = (p: OrderStepInput) => ({ orderId: p.orderId, lines: p.lines.map(lineOf) });
  const mark = (p: OrderStepInput) => one.transitionOrder({ orderId: p.orderId, ...p.transition });

  /**
   * Steps 1-2 of architecture.md: price and store the order, then the TCC Try of every participant (stock first; a
   * Try the API already made before the start is a no-op here). A business failure (unknown SKU, out of stock, a
   * coupon taken) is thrown as is; the workflow then runs `releaseOrder`, whose cancels are empty rollbacks for
   * the participants this step never reached.
   */
  async function openOrder(input: CreateOrderInput): Promise<OpenedOrder> {
    const priced = await one.createOrder(input);
    // The stock Try, unless pricing found every line held already (the API's Try before the start, read in the same
    // statement as the prices); reserveStock itself checks again and Tries only what is not held.
    const held = new Set(priced.heldSkus ?? []);
    if (!priced.lines.every((l) => held.has(l.sku)))
      await one.reserveStock({ orderId: input.orderId, lines: priced.lines.map(lineOf) });
    const benefits: OrderBenefit[] = [
      ...(priced.couponCode
        ? [{ participant: 'coupon' as const, resource: priced.couponCode, quantity: priced.discount ?? 0 }]
        : []),
      ...(priced.points ? [{ participant: 'points' as const, resource: input.userId, quantity: priced.points }] : []),
    ];
    for (const b of benefits) await one.tryBenefit(call(input, b));
    return { amount: priced.amount, currency: priced.currency, lines: priced.lines, benefits };
  }

  return {
    openOrder,

    /**
     * Steps 1-3 as one local activity: `openOrder`, then the provider payment for the amount it priced (created at
     * the provider, idempotent there by out-trade-no = order id, and recorded). A retry after a failure between the
     * two (the provider unreachable, a lost connection) opens the order again, which finds it stored and its Tries
     * made (no-ops), and asks the provider again, which answers the same payment. A business failure of either part
     * is thrown as is; the workflow then runs `releaseOrder` over what the order asked for (every cancel reads the
     * quantity its Try held from the fence, so it needs nothing this step would have returned).
     */
    async openOrderWithPayment(input: OpenWithPaymentInput): Promise<OpenedWithPayment> {
      const opened = await openOrder(input.order);
      const payment = await one.createProviderPayment({
        ...input.payment,
        orderId: input.order.orderId,
        provider: input.order.provider,
        amount: opened.amount,
        currency: opened.currency,
      });
      return { ...opened, payment };
    },

    /**
     * Step 5: TCC Confirm of every participant, the order marked (PAID, the payment recorded on it), and the buyer's
     * receipt queued in the outbox. Confirm comes first: an order never says PAID with its stock only reserved.
     * `handOff` (no cooling-off window): the order is handed to fulfilment too, as `handOff` would right after.
     */
    async settlePaid(input: OrderStepInput): Promise<TransitionResult> {
      await one.confirmStock(stock(input));
      for (const b of input.benefits) await one.confirmBenefit(call(input, b));
      const result = await mark(input);
      if (result.status === 'PAID') await one.recordPaymentReceipt(input.orderId);
      if (result.status === 'PAID' && input.handOff)
        await one.markFulfilmentReady(input.orderId, HAND_OFF_WITHOUT_COOLING_OFF);
      return result;
    },

    /**
     * Step 6 (and a failed setup): TCC Cancel of every participant (an empty rollback where no Try ran), then the
     * order's closing status. An order whose row was never written (pricing failed) has nothing to mark.
     */
    async releaseOrder(input: OrderStepInput): Promise<TransitionResult | { changed: false; status: 'NONE' }> {
      await one.cancelStock(stock(input));
      for (const b of input.benefits) await one.cancelBenefit(call(input, b));
      try {
        return await mark(input);
      } catch (err) {
        if (failureTypeOf(err) === FailureType.ORDER_NOT_FOUND) return { changed: false, status: 'NONE' };
        throw err;
      }
    },

    /**
     * After a refund: every participant back where it came from, then the order REFUNDED. `sold` (a PAID order): each
     * is returned. Else (a review refund) what is only reserved is released (cancel) and what was sold is returned
     * (cancel refuses it with TCC_CONFLICT, return gives it back).
     */
    async settleRefunded(input: OrderStepInput): Promise<TransitionResult> {
      const onConflict = (fallback: () => Promise<unknown>) => async (err: unknown) => {
        if (failureTypeOf(err) !== FailureType.TCC_CONFLICT) throw err;
        await fallback();
      };
      if (input.sold) {
        await one.returnStock(stock(input));
        for (const b of input.benefits) await one.returnBenefit(call(input, b));
      } else {
        await one.cancelStock(stock(input)).catch(onConflict(() => one.returnStock(stock(input))));
        for (const b of input.benefits)
          await one.cancelBenefit(call(input, b)).catch(onConflict(() => one.returnBenefit(call(input, b))));
      }
      return mark(input);
    },

    /** After cooling-off: the order handed to fulfilment (outbox), once. */
    handOff: (orderId: string) => one.markFulfilmentReady(orderId),
  };
}
