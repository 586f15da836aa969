/**
 * Stock as a TCC participant. Every step writes the fence row in the same transaction as the stock change,
 * which gives: idempotent confirm/cancel, empty rollback (cancel before try), and no hanging reservation
 * (a try after its cancel is refused). Lines are processed in SKU order so concurrent orders never deadlock.
 */
import type { Knex } from 'knex';
import { appendOrderEvent } from './events';
import { businessFailure } from './failures';

const PARTICIPANT = 'stock';

/** One line to reserve, confirm or release. */
export interface StockLine {
  sku: string;
  quantity: number;
}

interface FenceRow {
  status: 'TRIED' | 'CONFIRMED' | 'CANCELLED';
  quantity: number;
}

/** Merges repeated SKUs and sorts by SKU, so concurrent transactions lock rows in the same order. */
function bySku(lines: StockLine[]): StockLine[] {
  const merged = new Map<string, number>();
  for (const line of lines) {
    if (!Number.isSafeInteger(line.quantity) || line.quantity <= 0) {
      throw businessFailure('ORDER_CONFLICT', `quantity for ${line.sku} must be a positive integer, got ${line.quantity}`);
    }
    merged.set(line.sku, (merged.get(line.sku) ?? 0) + line.quantity);
  }
  return [...merged].map(([sku, quantity]) => ({ sku, quantity })).sort((a, b) => (a.sku < b.sku ? -1 : a.sku > b.sku ? 1 : 0));
}

/** Inserts a fence row unless one exists; returns true when this call created it. */
async function insertFence(trx: Knex.Transaction, xid: string, resource: string, status: FenceRow['status'], quantity: number, emptyRollback = false): Promise<boolean> {
  try {
    await trx('tcc_fence').insert({ xid, participant: PARTICIPANT, resource, status, quantity, empty_rollback: emptyRollback });
    return true;
  } catch (err) {
    // A duplicate key rolls back only this statement in InnoDB; the transaction goes on.
    if ((err as { code?: string }).code === 'ER_DUP_ENTRY') return false;
    throw err;
  }
}

async function lockFence(trx: Knex.Transaction, xid: string, resource: string): Promise<FenceRow | undefined> {
  const row = (await trx('tcc_fence').where({ xid, participant: PARTICIPANT, resource }).forUpdate().first('status', 'quantity')) as FenceRow | undefined;
  return row ? { status: row.status, quantity: Number(row.quantity) } : undefined;
}

async function setFenceStatus(trx: Knex.Transaction, xid: string, resource: string, from: FenceRow['status'], to: FenceRow['status']): Promise<void> {
  const count = await trx('tcc_fence')
    .where({ xid, participant: PARTICIPANT, resource, status: from })
    .update({ status: to, updated_at: trx.fn.now(3) });
  if (count !== 1) throw new Error(`fence ${xid}/${resource} was not ${from}; concurrent change, will retry`);
}

/** TCC Try: moves quantity from available to reserved for every line, all or nothing. */
export async function tryReserveStock(db: Knex, orderId: string, lines: StockLine[]): Promise<{ reserved: StockLine[] }> {
  return db.transaction(async (trx) => {
    const reserved: StockLine[] = [];
    let newlyReserved = 0;
    for (const line of bySku(lines)) {
      const created = await insertFence(trx, orderId, line.sku, 'TRIED', line.quantity);
      if (!created) {
        const fence = await lockFence(trx, orderId, line.sku);
        if (fence?.status === 'CANCELLED') {
          throw businessFailure('TCC_TRY_AFTER_CANCEL', `stock for ${line.sku} was already released for order ${orderId}; refusing a late reservation`, { sku: line.sku });
        }
        reserved.push(line); // TRIED or CONFIRMED already: a retried Try is a no-op
        continue;
      }
      const count = await trx('stock')
        .where('sku', line.sku)
        .andWhere('available', '>=', line.quantity)
        .update({
          available: trx.raw('available - ?', [line.quantity]),
          reserved: trx.raw('reserved + ?', [line.quantity]),
          updated_at: trx.fn.now(3),
        });
      if (count !== 1) {
        // Rolling back the transaction also removes this Try's fence rows, so a later Cancel is an empty rollback.
        throw businessFailure('OUT_OF_STOCK', `not enough stock for ${line.sku}`, { sku: line.sku, requested: line.quantity });
      }
      reserved.push(line);
      newlyReserved++;
    }
    if (newlyReserved > 0) await appendOrderEvent(trx, orderId, 'STOCK_RESERVED', `Reserved ${describe(lines)}`, { lines });
    return { reserved };
  });
}

/** TCC Confirm: reserved -> sold. Idempotent; refuses (alert-worthy) when the reservation was cancelled. */
export async function confirmStock(db: Knex, orderId: string, lines: StockLine[]): Promise<{ confirmed: number }> {
  return db.transaction(async (trx) => {
    let confirmed = 0;
    for (const line of bySku(lines)) {
      const fence = await lockFence(trx, orderId, line.sku);
      if (!fence) throw businessFailure('TCC_CONFLICT', `confirm without try for ${line.sku} in order ${orderId}`, { sku: line.sku });
      if (fence.status === 'CONFIRMED') continue;
      if (fence.status === 'CANCELLED') throw businessFailure('TCC_CONFLICT', `confirm after cancel for ${line.sku} in order ${orderId}`, { sku: line.sku });
      await setFenceStatus(trx, orderId, line.sku, 'TRIED', 'CONFIRMED');
      const count = await trx('stock')
        .where('sku', line.sku)
        .andWhere('reserved', '>=', fence.quantity)
        .update({
          reserved: trx.raw('reserved - ?', [fence.quantity]),
          sold: trx.raw('sold + ?', [fence.quantity]),
          updated_at: trx.fn.now(3),
        });
      if (count !== 1) throw new Error(`stock row ${line.sku} has less reserved than order ${orderId} holds; invariant broken`);
      confirmed++;
    }
    if (confirmed > 0) await appendOrderEvent(trx, orderId, 'STOCK_CONFIRMED', `Stock sold: ${describe(lines)}`);
    return { confirmed };
  });
}

/** TCC Cancel: reserved -> available. Idempotent; an empty rollback when no Try happened; refuses after confirm. */
export async function cancelStock(db: Knex, orderId: string, lines: StockLine[]): Promise<{ released: number; emptyRollbacks: number }> {
  return db.transaction(async (trx) => {
    let released = 0;
    let emptyRollbacks = 0;
    for (const line of bySku(lines)) {
      if (await insertFence(trx, orderId, line.sku, 'CANCELLED', 0, true)) {
        emptyRollbacks++;
        continue;
      }
      const fence = await lockFence(trx, orderId, line.sku);
      if (!fence || fence.status === 'CANCELLED') continue;
      if (fence.status === 'CONFIRMED') throw businessFailure('TCC_CONFLICT', `cancel after confirm for ${line.sku} in order ${orderId}`, { sku: line.sku });
      await setFenceStatus(trx, orderId, line.sku, 'TRIED', 'CANCELLED');
      const count = await trx('stock')
        .where('sku', line.sku)
        .andWhere('reserved', '>=', fence.quantity)
        .update({
          available: trx.raw('available + ?', [fence.quantity]),
          reserved: trx.raw('reserved - ?', [fence.quantity]),
          updated_at: trx.fn.now(3),
        });
      if (count !== 1) throw new Error(`stock row ${line.sku} has less reserved than order ${orderId} holds; invariant broken`);
      released++;
    }
    if (released > 0) await appendOrderEvent(trx, orderId, 'STOCK_RELEASED', `Stock returned: ${describe(lines)}`);
    return { released, emptyRollbacks };
  });
}

function describe(lines: StockLine[]): string {
  return lines.map((l) => `${l.quantity} x ${l.sku}`).join(', ');
}

/**
 * Returns sold stock to available after a refund of a confirmed order (cooling-off, review refund).
 * Idempotent through the fence: CONFIRMED -> RETURNED once; a repeat is a no-op.
 */
export async function returnStock(db: Knex, orderId: string, lines: StockLine[]): Promise<{ returned: number }> {
  return db.transaction(async (trx) => {
    let returned = 0;
    for (const line of bySku(lines)) {
      const fence = (await trx('tcc_fence').where({ xid: orderId, participant: PARTICIPANT, resource: line.sku }).forUpdate().first('status', 'quantity')) as
        | { status: string; quantity: number }
        | undefined;
      if (!fence || fence.status === 'RETURNED' || fence.status === 'CANCELLED') continue;
      if (fence.status !== 'CONFIRMED') throw businessFailure('TCC_CONFLICT', `cannot return ${line.sku} of order ${orderId}: it was never sold (${fence.status})`);
      const moved = await trx('tcc_fence')
        .where({ xid: orderId, participant: PARTICIPANT, resource: line.sku, status: 'CONFIRMED' })
        .update({ status: 'RETURNED', updated_at: trx.fn.now(3) });
      if (moved !== 1) throw new Error(`fence ${orderId}/${line.sku} changed concurrently; will retry`);
      const count = await trx('stock')
        .where('sku', line.sku)
        .andWhere('sold', '>=', Number(fence.quantity))
        .update({ sold: trx.raw('sold - ?', [Number(fence.quantity)]), available: trx.raw('available + ?', [Number(fence.quantity)]), updated_at: trx.fn.now(3) });
      if (count !== 1) throw new Error(`stock row ${line.sku} has less sold than order ${orderId} bought; invariant broken`);
      returned++;
    }
    if (returned > 0) await appendOrderEvent(trx, orderId, 'STOCK_RETURNED', `Stock returned after refund: ${describe(lines)}`);
    return { returned };
  });
}
