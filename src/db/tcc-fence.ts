/**
 * A generic TCC participant over the tcc_fence table. A participant supplies only its business changes
 * (hold / commit / release / give back); this module writes the fence row in the same MySQL transaction, which
 * gives every participant the same guarantees as stock:
 * - confirm and cancel are idempotent (a repeat is a no-op with the same answer);
 * - a cancel before its try is recorded as an empty rollback and succeeds;
 * - a try after its cancel is refused (TCC_TRY_AFTER_CANCEL), so no reservation hangs;
 * - confirm after cancel and cancel after confirm raise TCC_CONFLICT (alert-worthy, non-retryable).
 * Used by coupons and points (src/activities/benefits.ts); stock (src/db/stock.ts) uses the same fence
 * primitives (`fenceOf`) for its all-or-nothing multi-line Try.
 */
import type { Knex } from 'knex';
import { FailureType, businessFailure } from '../contracts/failures';
import { OrderEventBatch, appendOrderEvent } from './order-events';

/**
 * Moves `quantity` units from one column of the row(s) `row` selects to another, only if the source column holds
 * that many (a conditional update, so concurrent movers can never take a column below zero); true when it moved.
 * The business change of stock buckets and points: available -> reserved/frozen -> sold/spent and back.
 */
export async function moveUnits(
  trx: Knex.Transaction,
  row: Knex.QueryBuilder,
  quantity: number,
  from: string,
  to: string,
): Promise<boolean> {
  const count = await row.andWhere(from, '>=', quantity).update({
    [from]: trx.raw('?? - ?', [from, quantity]),
    [to]: trx.raw('?? + ?', [to, quantity]),
    updated_at: trx.fn.now(3),
  });
  return count === 1;
}

/** Fence statuses; RETURNED is a confirmed hold given back after a refund. */
export type FenceStatus = 'TRIED' | 'CONFIRMED' | 'CANCELLED' | 'RETURNED';

/** One participant's resource in one order. `quantity` is what the try holds (units, minor units or points). */
export interface TccKey {
  orderId: string;
  resource: string;
}

/** The business side of a participant; each method runs inside the fence's transaction. */
export interface ParticipantSpec<TTry> {
  name: string;
  /** Holds the resource for the order (throws a business failure when it cannot); returns the quantity held. */
  hold(trx: Knex.Transaction, key: TccKey, input: TTry): Promise<number>;
  /** Consumes what the try held. */
  commit(trx: Knex.Transaction, key: TccKey, quantity: number): Promise<void>;
  /** Gives back what the try held. */
  release(trx: Knex.Transaction, key: TccKey, quantity: number): Promise<void>;
  /** Gives back what a confirm consumed (refund of a paid order). */
  giveBack(trx: Knex.Transaction, key: TccKey, quantity: number): Promise<void>;
  /** Timeline wording. */
  describe(key: TccKey, quantity: number): string;
}

/** A participant's four fenced operations. */
export interface Participant<TTry> {
  name: string;
  try(db: Knex, key: TccKey, input: TTry): Promise<{ status: 'TRIED' | 'CONFIRMED'; quantity: number }>;
  confirm(db: Knex, key: TccKey): Promise<{ confirmed: boolean }>;
  /** The Confirm inside the caller's transaction, its timeline entry added to `events` (settlePaid). */
  confirmIn(trx: Knex.Transaction, key: TccKey, events: OrderEventBatch): Promise<{ confirmed: boolean }>;
  cancel(db: Knex, key: TccKey): Promise<{ released: boolean; emptyRollback: boolean }>;
  giveBack(db: Knex, key: TccKey): Promise<{ returned: boolean }>;
}

export interface FenceRow {
  status: FenceStatus;
  quantity: number;
}

/** The fence row of one (order, participant, resource), read and moved inside the caller's transaction. */
export interface Fence {
  /** Inserts the row unless one exists; true when this call created it. */
  insert(
    trx: Knex.Transaction,
    key: TccKey,
    status: FenceStatus,
    quantity: number,
    emptyRollback?: boolean,
  ): Promise<boolean>;
  /** Locks and reads the row (undefined when there is none). */
  lock(trx: Knex.Transaction, key: TccKey): Promise<FenceRow | undefined>;
  /** Moves the row from one status to another; throws (retryable) when it was not in `from`. */
  move(trx: Knex.Transaction, key: TccKey, from: FenceStatus, to: FenceStatus): Promise<void>;
  /** Sets the quantity held once the business change knows it. */
  setQuantity(trx: Knex.Transaction, key: TccKey, quantity: number): Promise<void>;
}

/** Fence primitives of one participant; defineParticipant and the multi-line stock participant build on them. */
export function fenceOf(participant: string): Fence {
  const where = (key: TccKey) => ({ xid: key.orderId, participant, resource: key.resource });
  return {
    async insert(trx, key, status, quantity, emptyRollback = false) {
      try {
        await trx('tcc_fence').insert({ ...where(key), status, quantity, empty_rollback: emptyRollback });
        return true;
      } catch (err) {
        // A duplicate key rolls back only this statement in InnoDB; the transaction goes on.
        if ((err as { code?: string }).code === 'ER_DUP_ENTRY') return false;
        throw err;
      }
    },
    async lock(trx, key) {
      const row = (await trx('tcc_fence').where(where(key)).forUpdate().first('status', 'quantity')) as
        FenceRow | undefined;
      return row ? { status: row.status, quantity: Number(row.quantity) } : undefined;
    },
    async move(trx, key, from, to) {
      const count = await trx('tcc_fence')
        .where({ ...where(key), status: from })
        .update({ status: to, updated_at: trx.fn.now(3) });
      if (count !== 1)
        throw new Error(
          `fence ${participant} ${key.resource} of order ${key.orderId} was not ${from}; concurrent change, will retry`,
        );
    },
    async setQuantity(trx, key, quantity) {
      await trx('tcc_fence').where(where(key)).update({ quantity });
    },
  };
}

/** Builds a fenced participant from its business changes. */
export function defineParticipant<TTry>(spec: ParticipantSpec<TTry>): Participant<TTry> {
  const name = spec.name;
  const fence = fenceOf(name);
  const label = (key: TccKey) => `${name} ${key.resource} of order ${key.orderId}`;
  const insertFence = fence.insert;
  const lockFence = fence.lock;
  const move = fence.move;

  const event = (suffix: string) => `${name.toUpperCase()}_${suffix}`;

  const confirmIn: Participant<TTry>['confirmIn'] = async (trx, key, events) => {
    const fence = await lockFence(trx, key);
    if (!fence)
      throw businessFailure(FailureType.TCC_CONFLICT, `confirm without try for ${label(key)}`, {
        participant: name,
        resource: key.resource,
      });
    if (fence.status === 'CONFIRMED' || fence.status === 'RETURNED') return { confirmed: false };
    if (fence.status === 'CANCELLED')
      throw businessFailure(FailureType.TCC_CONFLICT, `confirm after cancel for ${label(key)}`, {
        participant: name,
        resource: key.resource,
      });
    await move(trx, key, 'TRIED', 'CONFIRMED');
    await spec.commit(trx, key, fence.quantity);
    events.add(event('CONFIRMED'), `Used ${spec.describe(key, fence.quantity)}`);
    return { confirmed: true };
  };

  return {
    name,
    async try(db, key, input) {
      return db.transaction(async (trx) => {
        if (!(await insertFence(trx, key, 'TRIED', 0))) {
          const fence = await lockFence(trx, key);
          if (!fence || fence.status === 'CANCELLED' || fence.status === 'RETURNED') {
            throw businessFailure(
              FailureType.TCC_TRY_AFTER_CANCEL,
              `${label(key)} was already released; refusing a late reservation`,
              { participant: name, resource: key.resource },
            );
          }
          return { status: fence.status, quantity: fence.quantity }; // a retried Try is a no-op
        }
        // A failing hold throws, rolling back the fence row too, so a later cancel is an empty rollback.
        const quantity = await spec.hold(trx, key, input);
        await fence.setQuantity(trx, key, quantity);
        await appendOrderEvent(trx, key.orderId, event('RESERVED'), `Reserved ${spec.describe(key, quantity)}`, {
          participant: name,
          resource: key.resource,
          quantity,
        });
        return { status: 'TRIED' as const, quantity };
      });
    },
    async confirm(db, key) {
      return db.transaction(async (trx) => {
        const events = new OrderEventBatch(key.orderId);
        const result = await confirmIn(trx, key, events);
        await events.write(trx);
        return result;
      });
    },
    confirmIn,
    async cancel(db, key) {
      return db.transaction(async (trx) => {
        if (await insertFence(trx, key, 'CANCELLED', 0, true)) return { released: false, emptyRollback: true };
        const fence = await lockFence(trx, key);
        if (!fence || fence.status === 'CANCELLED') return { released: false, emptyRollback: false };
        if (fence.status === 'CONFIRMED' || fence.status === 'RETURNED') {
          throw businessFailure(FailureType.TCC_CONFLICT, `cancel after confirm for ${label(key)}`, {
            participant: name,
            resource: key.resource,
          });
        }
        await move(trx, key, 'TRIED', 'CANCELLED');
        await spec.release(trx, key, fence.quantity);
        await appendOrderEvent(trx, key.orderId, event('RELEASED'), `Released ${spec.describe(key, fence.quantity)}`);
        return { released: true, emptyRollback: false };
      });
    },
    async giveBack(db, key) {
      return db.transaction(async (trx) => {
        const fence = await lockFence(trx, key);
        if (!fence || fence.status === 'RETURNED' || fence.status === 'CANCELLED') return { returned: false };
        if (fence.status !== 'CONFIRMED')
          throw businessFailure(
            FailureType.TCC_CONFLICT,
            `cannot return ${label(key)}: it was never used (${fence.status})`,
          );
        await move(trx, key, 'CONFIRMED', 'RETURNED');
        await spec.giveBack(trx, key, fence.quantity);
        await appendOrderEvent(
          trx,
          key.orderId,
          event('RETURNED'),
          `Returned after refund: ${spec.describe(key, fence.quantity)}`,
        );
        return { returned: true };
      });
    },
  };
}
