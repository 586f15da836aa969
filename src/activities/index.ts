/**
 * Activity factory: every activity the workflows call, built once per worker from its dependencies.
 * Workflows import the `Activities` type only.
 */
import type { Knex } from 'knex';
import type { PaymentEvidence } from '../contracts/order';
import type { ProviderRegistry } from '../providers/types';
import { createBenefitActivities } from './benefits';
import { appendOrderEvent } from '../db/order-events';
import { type LateReviewEntry, enterLateReview } from '../db/late-review';
import { type OrderStepInput, composeOrderSteps } from './order-steps';
import { settlePaid } from './settle-paid';
import * as orders from './orders';
import * as payments from './payments';
import { recordPaymentReceipt } from './receipts';
import { createReconciliationActivities } from './reconciliation';
import * as stock from '../db/stock';
import { type SupportTicketInput, createSupportTicket } from '../db/support-tickets';
import * as support from './support';

/** Dependencies of the activities. */
export interface ActivityDeps {
  db: Knex;
  providers: ProviderRegistry;
  /** Reconciliation's clock (whether a bill day has ended); default Date.now. */
  now?: () => number;
  /** POINTS_CURRENCY: what points are worth 1 minor unit of; default CNY. */
  pointsCurrency?: string;
}

/** Builds the activities object registered on the worker. */
export function createActivities({ db, providers, now, pointsCurrency }: ActivityDeps) {
  const single = createSingleActivities({ db, providers, now, pointsCurrency });
  return {
    ...single,
    /**
     * The order workflow's merged steps (openOrder, settlePaid, releaseOrder, settleRefunded, handOff): one local
     * activity per phase.
     */
    ...composeOrderSteps(single),
    /** The same sequence as the composed settlePaid, in one MySQL transaction (settle-paid.ts). */
    settlePaid: (input: OrderStepInput) => settlePaid(db, input),
  };
}

/** The single steps: one activity per row change or provider call. */
function createSingleActivities({ db, providers, now, pointsCurrency }: ActivityDeps) {
  return {
    /** Prices the order from the catalog and stores it. */
    createOrder: (input: orders.CreateOrderInput) => orders.createOrder(db, input, { pointsCurrency }),
    /** TCC Try for stock. */
    reserveStock: (input: { orderId: string; lines: stock.StockLine[] }) =>
      stock.tryReserveStockUnlessHeld(db, input.orderId, input.lines),
    /** TCC Confirm for stock. */
    confirmStock: (input: { orderId: string; lines: stock.StockLine[] }) =>
      stock.confirmStock(db, input.orderId, input.lines),
    /** TCC Cancel for stock. */
    cancelStock: (input: { orderId: string; lines: stock.StockLine[] }) =>
      stock.cancelStock(db, input.orderId, input.lines),
    /** Returns sold stock after a refund of a confirmed order. */
    returnStock: (input: { orderId: string; lines: stock.StockLine[] }) =>
      stock.returnStock(db, input.orderId, input.lines),
    /** TCC for coupons and points (tryBenefit, confirmBenefit, cancelBenefit, returnBenefit). */
    ...createBenefitActivities(db),
    /** One-click support ticket with its snapshot. */
    createSupportTicket: (input: SupportTicketInput) => createSupportTicket(db, input),
    /** Cooling-off over: fulfilment-ready with an outbox message. */
    markFulfilmentReady: (orderId: string, message?: string) => support.markFulfilmentReady(db, orderId, message),
    /** PAID: the buyer's payment receipt queued in the outbox (behind the `order-payment-receipt` patch). */
    recordPaymentReceipt: (orderId: string) => recordPaymentReceipt(db, orderId),
    /** Guarded order status change with its timeline entry. */
    transitionOrder: (input: orders.TransitionInput) => orders.transitionOrder(db, input),
    /** Reads an order for the late-payment path. */
    getOrderSnapshot: (orderId: string) => orders.getOrderSnapshot(db, orderId),
    /** The late trade whose review holds the order, and the order's status before it (late-payment takeover). */
    lateReviewOf: (orderId: string) => orders.lateReviewOf(db, orderId),
    /**
     * Opens a late trade's review (NEEDS_REVIEW and the entry that routes its decisions, in one transaction) on the
     * order as the run saw it; else says the order is in another review, or has changed.
     */
    enterLateReview: (input: LateReviewEntry) => enterLateReview(db, input),
    /** Appends a timeline entry (for facts that change no row, e.g. a duplicate payment seen). */
    recordOrderEvent: async (input: {
      orderId: string;
      type: string;
      message: string;
      data?: Record<string, unknown>;
    }) => appendOrderEvent(db, input.orderId, input.type, input.message, input.data),
    createProviderPayment: (input: payments.CreateProviderPaymentInput) =>
      payments.createProviderPayment(db, providers, input),
    queryProviderPayment: (input: { provider: string; outTradeNo: string }) =>
      payments.queryProviderPayment(providers, input),
    closeProviderPayment: (input: { orderId: string; provider: string }) =>
      payments.closeProviderPayment(db, providers, input),
    refundPayment: (input: payments.RefundPaymentInput) => payments.refundPayment(db, providers, input),
    /** Reconciliation against provider bills (src/activities/reconciliation.ts). */
    ...createReconciliationActivities({ db, providers, now }),
  };
}

/** The activities' type, for `proxyActivities<Activities>()` in workflow code. */
export type Activities = ReturnType<typeof createActivities>;

export type { PaymentEvidence };
