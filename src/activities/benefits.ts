/**
 * Coupons and loyalty points as TCC participants ('coupon' keyed by coupon code, 'points' keyed by user id),
 * on the generic fence in tcc.ts. Points are worth 1 minor unit each.
 */
import type { Knex } from 'knex';
import { FailureType, businessFailure } from '../contracts/failures';
import { defineParticipant, moveUnits, type Participant, type TccKey } from '../db/tcc-fence';

/** The user's points row (the points participant's resource is the user id). */
const points = (trx: Knex.Transaction, key: TccKey) => trx('user_points').where('user_id', key.resource);

/** What a coupon or points Try needs besides the key. */
export interface BenefitTryInput {
  userId: string;
  /** Points to freeze (points participant); ignored for coupons, which are held whole. */
  quantity: number;
}

function mustChangeOne(changed: number | boolean, what: string): void {
  if (changed !== 1 && changed !== true) throw new Error(`${what}; invariant broken`);
}

/** A coupon: AVAILABLE -> FROZEN (try) -> USED (confirm), FROZEN -> AVAILABLE (cancel), USED -> AVAILABLE (refund). */
export const couponParticipant: Participant<BenefitTryInput> = defineParticipant<BenefitTryInput>({
  name: 'coupon',
  async hold(trx, key, input) {
    const coupon = (await trx('coupons')
      .where({ code: key.resource })
      .forUpdate()
      .first('user_id', 'discount', 'currency', 'status')) as
      { user_id: string; discount: number; currency: string; status: string } | undefined;
    if (!coupon || coupon.user_id !== input.userId || coupon.status !== 'AVAILABLE') {
      throw businessFailure(FailureType.COUPON_UNAVAILABLE, `coupon ${key.resource} is not available to this buyer`, {
        couponCode: key.resource,
      });
    }
    // The order was priced with this coupon in an earlier transaction, without its lock: an operator may have changed
    // the coupon since (PUT /admin/coupons while it is AVAILABLE). Held as priced, or not at all: else the buyer pays
    // for one discount while a coupon worth another is used up (the fence records the coupon's). An order row is
    // always written before the Try; a bare participant call (tests) has none to compare with.
    const priced = (await trx('orders').where({ order_id: key.orderId }).first('discount', 'currency')) as
      { discount: number; currency: string } | undefined;
    if (priced && (Number(priced.discount) !== Number(coupon.discount) || priced.currency !== coupon.currency)) {
      throw businessFailure(
        FailureType.COUPON_UNAVAILABLE,
        `coupon ${key.resource} changed since the order was priced (${priced.discount} ${priced.currency} then, ${coupon.discount} ${coupon.currency} now)`,
        { couponCode: key.resource },
      );
    }
    await trx('coupons')
      .where({ code: key.resource, status: 'AVAILABLE' })
      .update({ status: 'FROZEN', order_id: key.orderId, updated_at: trx.fn.now(3) });
    return Number(coupon.discount);
  },
  async commit(trx, key) {
    const n = await trx('coupons')
      .where({ code: key.resource, status: 'FROZEN', order_id: key.orderId })
      .update({ status: 'USED', updated_at: trx.fn.now(3) });
    mustChangeOne(n, `coupon ${key.resource} is not frozen for order ${key.orderId}`);
  },
  async release(trx, key) {
    const n = await trx('coupons')
      .where({ code: key.resource, status: 'FROZEN', order_id: key.orderId })
      .update({ status: 'AVAILABLE', order_id: null, updated_at: trx.fn.now(3) });
    mustChangeOne(n, `coupon ${key.resource} is not frozen for order ${key.orderId}`);
  },
  async giveBack(trx, key) {
    const n = await trx('coupons')
      .where({ code: key.resource, status: 'USED', order_id: key.orderId })
      .update({ status: 'AVAILABLE', order_id: null, updated_at: trx.fn.now(3) });
    mustChangeOne(n, `coupon ${key.resource} was not used by order ${key.orderId}`);
  },
  describe: (key, quantity) => `coupon ${key.resource} (${quantity} off)`,
});

/** Points: available -> frozen (try) -> spent (confirm), frozen -> available (cancel), spent -> available (refund). */
export const pointsParticipant: Participant<BenefitTryInput> = defineParticipant<BenefitTryInput>({
  name: 'points',
  async hold(trx, key, input) {
    if (!Number.isSafeInteger(input.quantity) || input.quantity <= 0)
      throw businessFailure(FailureType.ORDER_CONFLICT, `points must be a positive integer, got ${input.quantity}`);
    if (key.resource !== input.userId)
      throw businessFailure(FailureType.ORDER_CONFLICT, 'points can only be taken from the ordering user');
    const moved = await moveUnits(trx, points(trx, key), input.quantity, 'available', 'frozen');
    if (!moved)
      throw businessFailure(
        FailureType.INSUFFICIENT_POINTS,
        `fewer than ${input.quantity} points are available to this buyer`,
        { requested: input.quantity },
      );
    return input.quantity;
  },
  async commit(trx, key, q) {
    mustChangeOne(
      await moveUnits(trx, points(trx, key), q, 'frozen', 'spent'),
      `user ${key.resource} has fewer frozen points than order ${key.orderId} holds`,
    );
  },
  async release(trx, key, q) {
    mustChangeOne(
      await moveUnits(trx, points(trx, key), q, 'frozen', 'available'),
      `user ${key.resource} has fewer frozen points than order ${key.orderId} holds`,
    );
  },
  async giveBack(trx, key, q) {
    mustChangeOne(
      await moveUnits(trx, points(trx, key), q, 'spent', 'available'),
      `user ${key.resource} has fewer spent points than order ${key.orderId} used`,
    );
  },
  describe: (key, quantity) => `${quantity} points of ${key.resource}`,
});

/** The benefit participants by name. */
export const benefitParticipants = { coupon: couponParticipant, points: pointsParticipant } as const;
export type BenefitName = keyof typeof benefitParticipants;

/** One benefit of an order, as the workflow carries it. */
export interface OrderBenefit {
  participant: BenefitName;
  resource: string;
  quantity: number;
}

/** Activity input for a benefit's try/confirm/cancel/return. */
export interface BenefitCall extends OrderBenefit {
  orderId: string;
  userId: string;
}

function participantOf(name: string): Participant<BenefitTryInput> {
  if (!Object.hasOwn(benefitParticipants, name))
    throw businessFailure(FailureType.ORDER_CONFLICT, `unknown TCC participant ${name}`);
  return benefitParticipants[name as BenefitName];
}

/** Activities over any benefit participant. */
export function createBenefitActivities(db: Knex) {
  return {
    /** TCC Try for a coupon or points. */
    tryBenefit: (c: BenefitCall) =>
      participantOf(c.participant).try(
        db,
        { orderId: c.orderId, resource: c.resource },
        { userId: c.userId, quantity: c.quantity },
      ),
    /** TCC Confirm for a coupon or points. */
    confirmBenefit: (c: BenefitCall) =>
      participantOf(c.participant).confirm(db, { orderId: c.orderId, resource: c.resource }),
    /** TCC Cancel for a coupon or points. */
    cancelBenefit: (c: BenefitCall) =>
      participantOf(c.participant).cancel(db, { orderId: c.orderId, resource: c.resource }),
    /** Gives a used coupon or spent points back after a refund. */
    returnBenefit: (c: BenefitCall) =>
      participantOf(c.participant).giveBack(db, { orderId: c.orderId, resource: c.resource }),
  };
}
