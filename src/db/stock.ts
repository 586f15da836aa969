/**
 * Stock as a TCC participant, on the fence primitives of tcc.ts: every step writes the fence row in the same
 * transaction as the stock change, which gives idempotent confirm/cancel, empty rollback (cancel before try) and
 * no hanging reservation (a try after its cancel is refused). A Try is all-or-nothing over the order's lines,
 * which are processed in SKU order so concurrent orders never deadlock on two SKUs.
 *
 * Hot SKUs can be sharded into N buckets (migration 20261128_0010): bucket 0 is the `stock` row, buckets
 * 1..N-1 rows of `stock_buckets`. A bucketed Try starts at a random bucket, takes what it needs with a
 * conditional update and moves on to the next bucket when one runs dry; `stock_holds` records what it took
 * from which bucket, so confirm, cancel and return touch only those buckets. A fence without holds took
 * everything from bucket 0 (every unsharded SKU, and reservations made before a SKU was sharded).
 */
import { randomInt } from 'node:crypto';
import type { Knex } from 'knex';
import { FailureType, businessFailure } from '../contracts/failures';
import { claimFingerprint } from './idempotency';
import { retryDeadlocks } from './knex';
import { OrderEventBatch, appendOrderEvent } from './order-events';
import { fenceOf, moveUnits } from './tcc-fence';

const fence = fenceOf('stock');

/** One line to reserve, confirm or release. */
export interface StockLine {
  sku: string;
  quantity: number;
}

/** Units of one SKU held in one bucket by one order. */
interface Hold {
  bucket: number;
  quantity: number;
}

type Column = 'available' | 'reserved' | 'sold';

/** Merges repeated SKUs and sorts by SKU, so concurrent transactions lock rows in the same order. */
function bySku(lines: StockLine[]): StockLine[] {
  const merged = new Map<string, number>();
  for (const line of lines) {
    if (!Number.isSafeInteger(line.quantity) || line.quantity <= 0) {
      throw businessFailure(
        FailureType.ORDER_CONFLICT,
        `quantity for ${line.sku} must be a positive integer, got ${line.quantity}`,
      );
    }
    merged.set(line.sku, (merged.get(line.sku) ?? 0) + line.quantity);
  }
  return [...merged]
    .map(([sku, quantity]) => ({ sku, quantity }))
    .sort((a, b) => (a.sku < b.sku ? -1 : a.sku > b.sku ? 1 : 0));
}

/** The row of one bucket: bucket 0 is the stock row itself. */
function bucketRow(trx: Knex.Transaction, sku: string, bucket: number): Knex.QueryBuilder {
  return bucket === 0 ? trx('stock').where('sku', sku) : trx('stock_buckets').where({ sku, bucket });
}

/** Moves `quantity` units of one bucket from one column to another if the source column holds enough. */
function shift(
  trx: Knex.Transaction,
  sku: string,
  bucket: number,
  quantity: number,
  from: Column,
  to: Column,
): Promise<boolean> {
  return moveUnits(trx, bucketRow(trx, sku, bucket), quantity, from, to);
}

/** How many of `units` bucket `bucket` of `buckets` gets when they are spread evenly (the first ones take the rest). */
export function bucketShare(units: number, buckets: number, bucket: number): number {
  return Math.floor(units / buckets) + (bucket < units % buckets ? 1 : 0);
}

/**
 * Takes up to `need` units from one bucket that was seen holding `seen`: a conditional update, so a concurrent
 * taker can only make it take less, never too much; when it lost the race it looks once more.
 */
async function takeUpTo(
  trx: Knex.Transaction,
  sku: string,
  bucket: number,
  need: number,
  seen: number,
): Promise<number> {
  const first = Math.min(need, seen);
  if (await shift(trx, sku, bucket, first, 'available', 'reserved')) return first;
  const row = (await bucketRow(trx, sku, bucket).first('available')) as { available: number | string } | undefined;
  const take = Math.min(need, Number(row?.available ?? 0));
  if (take > 0 && (await shift(trx, sku, bucket, take, 'available', 'reserved'))) return take;
  return 0;
}

/** What every bucket of a SKU holds right now (plain reads: no locks), bucket 0 first. */
async function bucketLevels(trx: Knex.Transaction, sku: string): Promise<{ bucket: number; available: number }[]> {
  const base = (await trx('stock').where('sku', sku).first('available')) as { available: number | string } | undefined;
  const rest = (await trx('stock_buckets').where('sku', sku).orderBy('bucket').select('bucket', 'available')) as {
    bucket: number;
    available: number | string;
  }[];
  return [
    { bucket: 0, available: Number(base?.available ?? 0) },
    ...rest.map((r) => ({ bucket: Number(r.bucket), available: Number(r.available) })),
  ];
}

/**
 * Reserves one line; throws OUT_OF_STOCK (rolling everything back) when the SKU runs dry.
 * An unsharded SKU costs one conditional update. A sharded one first tries one random bucket for the whole
 * line; only when that bucket is short does it read every bucket's level and take from those seen holding
 * stock (a conditional update that waited for a taker and then found the row dry keeps it locked until
 * commit, so blindly walking dry buckets in different orders deadlocks).
 */
async function reserveLine(trx: Knex.Transaction, orderId: string, line: StockLine): Promise<Hold[]> {
  const { sku, quantity } = line;
  // An unsharded SKU (the common case) is one conditional update: it takes the units only if the row is not sharded
  // and holds enough. Only when it takes nothing is the row read, to tell "out of stock" from "sharded". A plain read:
  // a locking statement on the stock row would queue every taker of a sharded SKU behind whoever holds bucket 0,
  // which is exactly what buckets are for avoiding.
  if (
    await moveUnits(trx, trx('stock').where('sku', sku).andWhere('buckets', '<=', 1), quantity, 'available', 'reserved')
  )
    return [{ bucket: 0, quantity }];
  const row = (await trx('stock').where('sku', sku).first('buckets')) as { buckets: number } | undefined;
  if (!row) throw outOfStock(line);
  const buckets = Number(row.buckets);
  if (buckets <= 1) throw outOfStock(line);

  const holds: Hold[] = [];
  const first = randomInt(buckets);
  if (await shift(trx, sku, first, quantity, 'available', 'reserved')) holds.push({ bucket: first, quantity });
  else {
    const levels = (await bucketLevels(trx, sku)).filter((b) => b.available > 0);
    if (levels.reduce((n, b) => n + b.available, 0) < quantity) throw outOfStock(line);
    const start = randomInt(levels.length);
    let need = quantity;
    for (let i = 0; i < levels.length && need > 0; i++) {
      const { bucket, available } = levels[(start + i) % levels.length]!;
      const took = await takeUpTo(trx, sku, bucket, need, available);
      if (took > 0) {
        holds.push({ bucket, quantity: took });
        need -= took;
      }
    }
    if (need > 0) throw outOfStock(line);
  }
  await trx('stock_holds').insert(holds.map((h) => ({ xid: orderId, sku, bucket: h.bucket, quantity: h.quantity })));
  return holds;
}

function outOfStock(line: StockLine): Error {
  // Rolling back the transaction also removes this Try's fence rows, so a later Cancel is an empty rollback.
  return businessFailure(FailureType.OUT_OF_STOCK, `not enough stock for ${line.sku}`, {
    sku: line.sku,
    requested: line.quantity,
  });
}

/** What a fenced reservation holds, bucket by bucket (no holds rows: all of it in bucket 0). */
async function holdsOf(trx: Knex.Transaction, orderId: string, sku: string, quantity: number): Promise<Hold[]> {
  const rows = (await trx('stock_holds')
    .where({ xid: orderId, sku })
    .orderBy('bucket')
    .select('bucket', 'quantity')) as { bucket: number; quantity: number | string }[];
  if (rows.length === 0) return [{ bucket: 0, quantity }];
  return rows.map((r) => ({ bucket: Number(r.bucket), quantity: Number(r.quantity) }));
}

/** Moves every hold of one fenced line between columns; a bucket short of units means the books are broken. */
async function shiftHolds(
  trx: Knex.Transaction,
  orderId: string,
  sku: string,
  quantity: number,
  from: Column,
  to: Column,
): Promise<void> {
  await shiftAll(trx, orderId, sku, await holdsOf(trx, orderId, sku, quantity), from, to);
}

async function shiftAll(
  trx: Knex.Transaction,
  orderId: string,
  sku: string,
  holds: Hold[],
  from: Column,
  to: Column,
): Promise<void> {
  for (const hold of holds) {
    if (!(await shift(trx, sku, hold.bucket, hold.quantity, from, to))) {
      throw new Error(
        `stock ${sku} bucket ${hold.bucket} has less ${from} than order ${orderId} holds there; invariant broken`,
      );
    }
  }
}

/**
 * The workflow's TCC Try of stock, usually made by the API before the start already (see src/client/admission.ts):
 * one plain read of the order's fences answers it when every line is held (TRIED or CONFIRMED), instead of a
 * transaction that would find the same. A fence only ever leaves TRIED for CONFIRMED or CANCELLED, so a Try seen held
 * is a Try that happened; anything else (no fence, a CANCELLED one) takes the full Try, which refuses a Try after
 * its Cancel. A plain read suffices against the orphan sweeper: the workflow calls this after its order row is
 * committed, and the sweeper releases nothing an order row claims (cancelStockUnlessOwned).
 */
export async function tryReserveStockUnlessHeld(
  db: Knex,
  orderId: string,
  lines: StockLine[],
): Promise<{ reserved: StockLine[] }> {
  const wanted = bySku(lines);
  const rows = (await db('tcc_fence')
    .where({ xid: orderId, participant: 'stock' })
    .whereIn(
      'resource',
      wanted.map((l) => l.sku),
    )
    .select('resource', 'status')) as { resource: string; status: string }[];
  const held = new Set(rows.filter((r) => r.status === 'TRIED' || r.status === 'CONFIRMED').map((r) => r.resource));
  if (wanted.every((l) => held.has(l.sku))) return { reserved: wanted };
  return tryReserveStock(db, orderId, lines);
}

/**
 * TCC Try: moves quantity from available to reserved for every line, all or nothing. With a `fingerprint` (the API's
 * Try of a request with an Idempotency-Key), the request is first compared with the key's first one, in the same
 * transaction (claimFingerprint): a different request throws IdempotencyKeyReusedError and reserves nothing;
 * `request` then says whether this was the key's first request ('first') or a repeat of it ('same').
 */
export async function tryReserveStock(
  db: Knex,
  orderId: string,
  lines: StockLine[],
  options: {
    fingerprint?: string;
    /**
     * Called as the Try is about to commit (its statements done, the COMMIT not yet sent), or as it is about to roll
     * back: from then on a read may see its units taken, so whoever counts them as "being reserved" must stop (the
     * API's ReservationGate; src/client/admission.ts). Called again by a retried attempt; must be idempotent.
     */
    committing?: () => void;
  } = {},
): Promise<{ reserved: StockLine[]; request?: 'first' | 'same' }> {
  // Deadlocks between takers of one hot SKU are retried here at once, before Temporal's slower activity retry.
  return retryDeadlocks(() => reserveAll(db, orderId, lines, options.fingerprint, options.committing));
}

async function reserveAll(
  db: Knex,
  orderId: string,
  lines: StockLine[],
  fingerprint: string | undefined,
  committing: (() => void) | undefined,
): Promise<{ reserved: StockLine[]; request?: 'first' | 'same' }> {
  // READ COMMITTED: the bucket levels read before taking are the latest committed counts, not a snapshot.
  return db.transaction(
    async (trx) => {
      try {
        return await reserveIn(trx, orderId, lines, fingerprint);
      } finally {
        // Last thing before knex sends COMMIT (or ROLLBACK): nothing awaits between here and that.
        committing?.();
      }
    },
    { isolationLevel: 'read committed' },
  );
}

async function reserveIn(
  trx: Knex.Transaction,
  orderId: string,
  lines: StockLine[],
  fingerprint: string | undefined,
): Promise<{ reserved: StockLine[]; request?: 'first' | 'same' }> {
  // Before any fence: a request that is not the key's first one must not reserve a line the first one did not ask
  // for (under the first order's id, until that order ends).
  const request = fingerprint === undefined ? undefined : await claimFingerprint(trx, orderId, fingerprint);
  const fresh: StockLine[] = [];
  for (const line of bySku(lines)) {
    const key = { orderId, resource: line.sku };
    if (await fence.insert(trx, key, 'TRIED', line.quantity)) {
      fresh.push(line);
      continue;
    }
    const existing = await fence.lock(trx, key);
    if (existing?.status === 'CANCELLED') {
      throw businessFailure(
        FailureType.TCC_TRY_AFTER_CANCEL,
        `stock for ${line.sku} was already released for order ${orderId}; refusing a late reservation`,
        { sku: line.sku },
      );
    }
    // TRIED or CONFIRMED already: a retried Try is a no-op for this line.
  }
  const answer = { reserved: bySku(lines), ...(request ? { request } : {}) };
  if (fresh.length === 0) return answer;
  // The timeline entry first, the stock rows last: a hot row stays locked only from its update to the commit.
  await appendOrderEvent(trx, orderId, 'STOCK_RESERVED', `Reserved ${describe(lines)}`, { lines });
  // Which buckets each line took from is in stock_holds.
  for (const line of fresh) await reserveLine(trx, orderId, line);
  return answer;
}

/** TCC Confirm: reserved -> sold. Idempotent; refuses (alert-worthy) when the reservation was cancelled. */
export async function confirmStock(db: Knex, orderId: string, lines: StockLine[]): Promise<{ confirmed: number }> {
  return db.transaction(async (trx) => {
    const events = new OrderEventBatch(orderId);
    const { confirmed, sell } = await confirmStockIn(trx, orderId, lines, events);
    await events.write(trx);
    await sell();
    return { confirmed };
  });
}

/**
 * The Confirm inside the caller's transaction (confirmStock, and settlePaid's one transaction), its timeline entry
 * added to `events`. One statement locks every line's fence with its holds, one moves the TRIED fences to CONFIRMED
 * (row count checked). The units themselves move reserved -> sold when the caller calls `sell`, which it does as the
 * last statements before its commit: a hot SKU's row stays locked only from its update to the commit.
 */
export async function confirmStockIn(
  trx: Knex.Transaction,
  orderId: string,
  lines: StockLine[],
  events: OrderEventBatch,
): Promise<{ confirmed: number; sell: () => Promise<void> }> {
  const wanted = bySku(lines);
  const fences = await lockFencesWithHolds(trx, orderId, wanted);
  const toConfirm: { line: StockLine; holds: Hold[] }[] = [];
  for (const line of wanted) {
    const row = fences.get(line.sku);
    if (!row)
      throw businessFailure(FailureType.TCC_CONFLICT, `confirm without try for ${line.sku} in order ${orderId}`, {
        sku: line.sku,
      });
    if (row.status === 'CONFIRMED' || row.status === 'RETURNED') continue;
    if (row.status === 'CANCELLED')
      throw businessFailure(FailureType.TCC_CONFLICT, `confirm after cancel for ${line.sku} in order ${orderId}`, {
        sku: line.sku,
      });
    toConfirm.push({ line, holds: row.holds });
  }
  if (toConfirm.length === 0) return { confirmed: 0, sell: async () => {} };
  const moved = await trx('tcc_fence')
    .where({ xid: orderId, participant: 'stock', status: 'TRIED' })
    .whereIn(
      'resource',
      toConfirm.map((c) => c.line.sku),
    )
    .update({ status: 'CONFIRMED', updated_at: trx.fn.now(3) });
  if (moved !== toConfirm.length)
    throw new Error(
      `stock fences of order ${orderId} changed concurrently (${moved} of ${toConfirm.length}); will retry`,
    );
  events.add('STOCK_CONFIRMED', `Stock sold: ${describe(lines)}`);
  const sell = async () => {
    for (const { line, holds } of toConfirm) await shiftAll(trx, orderId, line.sku, holds, 'reserved', 'sold');
  };
  return { confirmed: toConfirm.length, sell };
}

/**
 * The stock fences of an order's lines, locked, each with what it holds bucket by bucket (one statement; a fence
 * without holds rows took everything from bucket 0).
 */
async function lockFencesWithHolds(
  trx: Knex.Transaction,
  orderId: string,
  lines: StockLine[],
): Promise<Map<string, { status: string; quantity: number; holds: Hold[] }>> {
  const rows = (await trx('tcc_fence as f')
    .leftJoin('stock_holds as h', function joinHolds() {
      this.on('h.xid', '=', 'f.xid').andOn('h.sku', '=', 'f.resource');
    })
    .where({ 'f.xid': orderId, 'f.participant': 'stock' })
    .whereIn(
      'f.resource',
      lines.map((l) => l.sku),
    )
    .orderBy(['f.resource', 'h.bucket'])
    .forUpdate()
    .select('f.resource', 'f.status', 'f.quantity', 'h.bucket', 'h.quantity as hold_quantity')) as {
    resource: string;
    status: string;
    quantity: number | string;
    bucket: number | null;
    hold_quantity: number | string | null;
  }[];
  const fences = new Map<string, { status: string; quantity: number; holds: Hold[] }>();
  for (const r of rows) {
    let fence = fences.get(r.resource);
    if (!fence) fences.set(r.resource, (fence = { status: r.status, quantity: Number(r.quantity), holds: [] }));
    if (r.bucket !== null) fence.holds.push({ bucket: Number(r.bucket), quantity: Number(r.hold_quantity) });
  }
  for (const fence of fences.values())
    if (fence.holds.length === 0) fence.holds.push({ bucket: 0, quantity: fence.quantity });
  return fences;
}

/** TCC Cancel: reserved -> available. Idempotent; an empty rollback when no Try happened; refuses after confirm. */
export async function cancelStock(
  db: Knex,
  orderId: string,
  lines: StockLine[],
): Promise<{ released: number; emptyRollbacks: number }> {
  return db.transaction((trx) => cancelStockIn(trx, orderId, lines));
}

/**
 * The orphan sweeper's Cancel (src/client/admission.ts): the order's stock is released only if, with its fences
 * locked, no order row claims it yet (`ownerStatuses`: the statuses in which a workflow owns the order's
 * reservation). The sweeper decides from Temporal that no workflow runs, but a workflow may start right after that
 * answer and take the reservation over: its createOrder reads the fences with a shared lock and finds them TRIED,
 * writes the order row and makes no Try of its own. Locking the same fence rows here serialises the two in MySQL:
 * - the take-over committed first: this transaction waits for its lock, then reads the order row, and releases
 *   nothing (`owned`);
 * - this transaction locked first: the take-over waits, then finds the fences CANCELLED, so its Try is the full one
 *   and is refused (TCC_TRY_AFTER_CANCEL), which the workflow answers as a refused order.
 * READ COMMITTED, so the order row is read as last committed, after the fence lock was granted.
 */
export async function cancelStockUnlessOwned(
  db: Knex,
  orderId: string,
  lines: StockLine[],
  ownerStatuses: readonly string[],
): Promise<{ released: number; emptyRollbacks: number; owned: boolean }> {
  return db.transaction(
    async (trx) => {
      await trx('tcc_fence')
        .where({ xid: orderId, participant: 'stock' })
        .whereIn(
          'resource',
          bySku(lines).map((l) => l.sku),
        )
        .orderBy('resource')
        .forUpdate()
        .select('resource');
      const order = (await trx('orders').where({ order_id: orderId }).first('status')) as
        { status: string } | undefined;
      if (order && ownerStatuses.includes(order.status)) return { released: 0, emptyRollbacks: 0, owned: true };
      return { ...(await cancelStockIn(trx, orderId, lines)), owned: false };
    },
    { isolationLevel: 'read committed' },
  );
}

/** The Cancel of every line inside the caller's transaction, with its timeline entry when it released anything. */
async function cancelStockIn(
  trx: Knex.Transaction,
  orderId: string,
  lines: StockLine[],
): Promise<{ released: number; emptyRollbacks: number }> {
  let released = 0;
  let emptyRollbacks = 0;
  for (const line of bySku(lines)) {
    const key = { orderId, resource: line.sku };
    if (await fence.insert(trx, key, 'CANCELLED', 0, true)) {
      emptyRollbacks++;
      continue;
    }
    const row = await fence.lock(trx, key);
    if (!row || row.status === 'CANCELLED') continue;
    if (row.status === 'CONFIRMED' || row.status === 'RETURNED') {
      throw businessFailure(FailureType.TCC_CONFLICT, `cancel after confirm for ${line.sku} in order ${orderId}`, {
        sku: line.sku,
      });
    }
    await fence.move(trx, key, 'TRIED', 'CANCELLED');
    await shiftHolds(trx, orderId, line.sku, row.quantity, 'reserved', 'available');
    released++;
  }
  if (released > 0) await appendOrderEvent(trx, orderId, 'STOCK_RELEASED', `Stock returned: ${describe(lines)}`);
  return { released, emptyRollbacks };
}

/**
 * Returns sold stock to available after a refund of a confirmed order (cooling-off, review refund).
 * Idempotent through the fence: CONFIRMED -> RETURNED once; a repeat is a no-op.
 */
export async function returnStock(db: Knex, orderId: string, lines: StockLine[]): Promise<{ returned: number }> {
  return db.transaction(async (trx) => {
    let returned = 0;
    for (const line of bySku(lines)) {
      const key = { orderId, resource: line.sku };
      const row = await fence.lock(trx, key);
      if (!row || row.status === 'RETURNED' || row.status === 'CANCELLED') continue;
      if (row.status !== 'CONFIRMED')
        throw businessFailure(
          FailureType.TCC_CONFLICT,
          `cannot return ${line.sku} of order ${orderId}: it was never sold (${row.status})`,
        );
      await fence.move(trx, key, 'CONFIRMED', 'RETURNED');
      await shiftHolds(trx, orderId, line.sku, row.quantity, 'sold', 'available');
      returned++;
    }
    if (returned > 0)
      await appendOrderEvent(trx, orderId, 'STOCK_RETURNED', `Stock returned after refund: ${describe(lines)}`);
    return { returned };
  });
}

function describe(lines: StockLine[]): string {
  return lines.map((l) => `${l.quantity} x ${l.sku}`).join(', ');
}
