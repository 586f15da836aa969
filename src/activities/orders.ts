/** Order rows: creation from the catalog, guarded status transitions, and reads for the late-payment path. */
import type { Knex } from 'knex';
import { DEFAULT_POINTS_CURRENCY, type OrderLine, type OrderStatus } from '../contracts/order';
import { bySkuOrder, jsonColumn } from '../db/json';
import { OrderEventBatch, appendOrderEvent } from '../db/order-events';
import {
  type TransitionDone,
  type TransitionInput,
  type TransitionResult,
  transitionIn,
} from '../db/order-transitions';
import { FailureType, businessFailure } from '../contracts/failures';
import { activityLog } from './log';

/** Input of createOrder. */
export interface CreateOrderInput {
  orderId: string;
  userId: string;
  items: { sku: string; quantity: number }[];
  provider: string;
  idempotencyKey?: string;
  /** Coupon to apply (must be the user's, AVAILABLE, in the order's currency). */
  couponCode?: string;
  /** Points to redeem; 1 point = 1 minor unit off. */
  points?: number;
}

/** The order as priced from the catalog. */
export interface PricedOrder {
  amount: number;
  currency: string;
  lines: OrderLine[];
  /** Coupon applied (its discount is already taken off `amount`). */
  couponCode?: string;
  discount?: number;
  /** Points redeemed (already taken off `amount`). */
  points?: number;
  /**
   * SKUs whose stock the order holds already (its Try fence TRIED or CONFIRMED: the API's Try before the start, or an
   * earlier attempt), read with the prices in the same statement, so the step that follows need not read them again.
   */
  heldSkus?: string[];
}

/** Creates the order priced from the catalog (never from the client). Idempotent: a retry returns the stored order. */
export async function createOrder(
  db: Knex,
  input: CreateOrderInput,
  options: { pointsCurrency?: string } = {},
): Promise<PricedOrder> {
  const pointsCurrency = options.pointsCurrency ?? DEFAULT_POINTS_CURRENCY;
  return db.transaction(async (trx) => {
    // One read for both cases: the order if a retry finds it stored (with its lines), and the catalog prices; and the
    // order's stock fences, read with a shared lock and kept locked until this order row is committed. That lock is
    // what makes taking over a pre-start reservation safe against the orphan sweeper, which releases it only with
    // the same rows locked and no order row claiming it (cancelStockUnlessOwned, src/db/stock.ts): whichever commits
    // first wins, and a take-over that comes second finds the fences CANCELLED and makes the Try that is refused.
    // Keyed by every column of the fence's primary key, so only the order's own rows are locked.
    const skus = input.items.map((i) => i.sku);
    const [rows] = (await trx.raw(
      `SELECT (SELECT JSON_OBJECT('amount', o.amount, 'currency', o.currency, 'user_id', o.user_id,
                                  'coupon_code', o.coupon_code, 'discount', o.discount, 'points_used', o.points_used,
                                  'lines', (SELECT JSON_ARRAYAGG(JSON_OBJECT('sku', l.sku, 'quantity', l.quantity,
                                                                             'unit_price', l.unit_price))
                                              FROM order_lines l WHERE l.order_id = o.order_id))
                 FROM orders o WHERE o.order_id = ?) AS existing_json,
              (SELECT JSON_ARRAYAGG(JSON_OBJECT('sku', p.sku, 'price', p.price, 'currency', p.currency))
                 FROM products p WHERE p.sku IN (${skus.map(() => '?').join(', ')})) AS products_json,
              (SELECT JSON_ARRAYAGG(JSON_OBJECT('sku', f.resource, 'status', f.status)) FROM tcc_fence f
                WHERE f.xid = ? AND f.participant = 'stock' AND f.resource IN (${skus.map(() => '?').join(', ')})
                LOCK IN SHARE MODE) AS fences_json`,
      [input.orderId, ...skus, input.orderId, ...skus],
    )) as [{ existing_json: unknown; products_json: unknown; fences_json: unknown }[]];
    const fences = jsonColumn<{ sku: string; status: string }[]>(rows[0]?.fences_json) ?? [];
    const heldSkus = fences.filter((f) => f.status === 'TRIED' || f.status === 'CONFIRMED').map((f) => f.sku);
    const existing = jsonColumn<{
      amount: number;
      currency: string;
      user_id: string;
      coupon_code: string | null;
      discount: number;
      points_used: number;
      lines: { sku: string; quantity: number; unit_price: number }[] | null;
    }>(rows[0]?.existing_json);
    if (existing) {
      if (existing.user_id !== input.userId)
        throw businessFailure(FailureType.ORDER_CONFLICT, `order ${input.orderId} belongs to another user`);
      return {
        amount: Number(existing.amount),
        currency: existing.currency,
        lines: bySkuOrder(
          (existing.lines ?? []).map((l) => ({
            sku: l.sku,
            quantity: Number(l.quantity),
            unitPrice: Number(l.unit_price),
          })),
        ),
        couponCode: existing.coupon_code ?? undefined,
        discount: Number(existing.discount),
        points: Number(existing.points_used),
        heldSkus,
      };
    }
    // The order's units were released before its row was written (the sweeper released an orphaned reservation, or
    // the workflow gave up on a setup attempt that is only now getting here): a Try can never reserve them again, so
    // no row is written either. Written, it would wait for payment for ever, with no workflow to close it.
    const released = fences.find((f) => f.status === 'CANCELLED');
    if (released)
      throw businessFailure(
        FailureType.TCC_TRY_AFTER_CANCEL,
        `stock for ${released.sku} was already released for order ${input.orderId}; refusing to write the order`,
        { sku: released.sku },
      );
    const products = (jsonColumn<{ sku: string; price: number; currency: string }[]>(rows[0]?.products_json) ?? []).map(
      (p) => ({ sku: p.sku, price: Number(p.price), currency: p.currency }),
    );
    const bySku = new Map(products.map((p) => [p.sku, p]));
    const missing = skus.filter((s) => !bySku.has(s));
    if (missing.length)
      throw businessFailure(FailureType.UNKNOWN_SKU, `unknown SKU: ${missing.join(', ')}`, { skus: missing });
    const currencies = new Set(products.map((p) => p.currency));
    if (currencies.size > 1)
      throw businessFailure(
        FailureType.MIXED_CURRENCY,
        `items are priced in different currencies: ${[...currencies].join(', ')}`,
      );
    const lines: OrderLine[] = input.items.map((i) => ({
      sku: i.sku,
      quantity: i.quantity,
      unitPrice: Number(bySku.get(i.sku)!.price),
    }));
    // Each line's subtotal is added exactly once; integer minor units, checked for overflow.
    const subtotal = lines.reduce((sum, l) => sum + l.unitPrice * l.quantity, 0);
    if (!Number.isSafeInteger(subtotal)) throw businessFailure(FailureType.ORDER_CONFLICT, 'order total is too large');
    const currency = products[0]!.currency;
    // Coupon and points are priced here, on the server; their Try (tryBenefit) holds them atomically afterwards.
    let discount = 0;
    if (input.couponCode !== undefined) {
      const coupon = (await trx('coupons')
        .where({ code: input.couponCode })
        .first('user_id', 'discount', 'currency', 'status')) as
        { user_id: string; discount: number; currency: string; status: string } | undefined;
      if (!coupon || coupon.user_id !== input.userId || coupon.status !== 'AVAILABLE' || coupon.currency !== currency) {
        throw businessFailure(
          FailureType.COUPON_UNAVAILABLE,
          `coupon ${input.couponCode} is not available to this buyer for a ${currency} order`,
          { couponCode: input.couponCode },
        );
      }
      discount = Number(coupon.discount);
    }
    const points = input.points ?? 0;
    if (!Number.isSafeInteger(points) || points < 0)
      throw businessFailure(FailureType.ORDER_CONFLICT, `points must be a non-negative integer, got ${points}`);
    // 1 point = 1 minor unit of the points' currency: an order priced in another redeems none.
    if (points > 0 && currency !== pointsCurrency)
      throw businessFailure(
        FailureType.POINTS_CURRENCY_MISMATCH,
        `points are worth ${pointsCurrency} and this order is priced in ${currency}: order without points`,
        { currency, pointsCurrency },
      );
    // A total of zero or less is refused: there would be nothing to pay at a provider.
    const amount = subtotal - discount - points;
    if (amount <= 0) {
      throw businessFailure(
        FailureType.ZERO_AMOUNT,
        `coupon (${discount}) and points (${points}) cover the whole total ${subtotal}; use fewer points`,
        { subtotal, discount, points },
      );
    }
    await trx('orders').insert({
      order_id: input.orderId,
      user_id: input.userId,
      status: 'AWAITING_PAYMENT',
      amount,
      currency,
      provider: input.provider,
      idempotency_key: input.idempotencyKey ?? null,
      coupon_code: input.couponCode ?? null,
      discount,
      points_used: points,
      subtotal,
    });
    await trx('order_lines').insert(
      lines.map((l) => ({ order_id: input.orderId, sku: l.sku, quantity: l.quantity, unit_price: l.unitPrice })),
    );
    await appendOrderEvent(
      trx,
      input.orderId,
      'ORDER_CREATED',
      `Order created for ${lines.length} item(s), total ${amount} ${currency} (minor units)`,
      { amount, currency, subtotal, discount, points },
    );
    return { amount, currency, lines, couponCode: input.couponCode, discount, points, heldSkus };
  });
}

// The guarded status change itself lives in src/db/order-transitions.ts, where code outside the worker can use it too.
export { type TransitionDone, type TransitionInput, type TransitionResult, transitionIn };

/** Moves an order from one of `from` to `to` in one transaction with its event; repeat = no-op. */
export async function transitionOrder(db: Knex, input: TransitionInput): Promise<TransitionResult> {
  const result = await db.transaction(async (trx) => {
    const row = (await trx('orders')
      .where({ order_id: input.orderId })
      .forUpdate()
      .first('status', 'status_reason')) as { status: OrderStatus; status_reason: string | null } | undefined;
    if (!row) throw businessFailure(FailureType.ORDER_NOT_FOUND, `order ${input.orderId} does not exist`);
    const events = new OrderEventBatch(input.orderId);
    const changed = await transitionIn(trx, input, row.status, events);
    await events.write(trx);
    return { ...changed, reason: row.status_reason ?? undefined };
  });
  logTransition(input, result);
  if (result.changed) return { changed: true, status: result.status };
  return { changed: false, status: result.status, ...(result.reason ? { reason: result.reason } : {}) };
}

/** The log line of a status change (after its transaction committed). */
export function logTransition(input: TransitionInput, result: TransitionDone): void {
  if (result.changed)
    activityLog.info('order status changed', {
      from: result.from,
      to: result.status,
      reason: input.reason,
      event: input.event.type,
    });
  else activityLog.debug('order status unchanged', { status: result.status, wanted: input.to });
}

/** What the late-payment path needs to know about an order. */
export interface OrderSnapshot {
  orderId: string;
  status: OrderStatus;
  amount: number;
  currency: string;
  provider: string;
  paidTradeNo: string | null;
}

// Which late trade holds an order's review is read in src/db/late-review.ts, where the API's routing reads it too.
export { lateReviewOf } from '../db/late-review';

/** Reads an order's status and payment facts, or null when it does not exist. */
export async function getOrderSnapshot(db: Knex, orderId: string): Promise<OrderSnapshot | null> {
  const row = await db('orders')
    .where({ order_id: orderId })
    .first('order_id', 'status', 'amount', 'currency', 'provider', 'paid_trade_no');
  if (!row) return null;
  return {
    orderId: row.order_id,
    status: row.status,
    amount: Number(row.amount),
    currency: row.currency,
    provider: row.provider,
    paidTradeNo: row.paid_trade_no ?? null,
  };
}
