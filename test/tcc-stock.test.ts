/**
 * Stock as a TCC participant, against the real test database: all-or-nothing Try, idempotent Confirm and
 * Cancel, empty rollback, no hanging reservation, conflicts, oversell under concurrency, and a property test
 * over random (and concurrent) sequences of Try/Confirm/Cancel checked against the stock invariants.
 */
import { randomBytes } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import fc from 'fast-check';
import type { Knex } from 'knex';
import {
  bucketShare,
  cancelStock,
  confirmStock,
  type StockLine,
  tryReserveStock,
  tryReserveStockUnlessHeld,
} from '../src/db/stock';
import { createDb } from '../src/db/knex';
import { TEST_ENV } from './support/env';

let db: Knex;

beforeAll(() => {
  db = createDb(TEST_ENV.databaseUrl, { poolMax: 10 });
});

afterAll(async () => {
  await db?.destroy();
});

type FenceStatus = 'TRIED' | 'CONFIRMED' | 'CANCELLED';
interface Stock {
  available: number;
  reserved: number;
  sold: number;
}
interface Fence {
  resource: string;
  status: FenceStatus;
  quantity: number;
  emptyRollback: boolean;
}

const uid = (prefix: string) => `${prefix}-${randomBytes(8).toString('hex')}`;

/**
 * Inserts a product and its stock under a fresh random SKU, so suites can share the database; with
 * `buckets` > 1 the available units are spread over that many buckets (bucket 0 is the stock row).
 */
async function createSku(available: number, buckets = 1): Promise<string> {
  const sku = uid('tcc');
  const share = (b: number) => bucketShare(available, buckets, b);
  await db('products').insert({ sku, name: `TCC test ${sku}`, price: 100, currency: 'CNY' });
  await db('stock').insert({ sku, available: share(0), reserved: 0, sold: 0, total_in: available, buckets });
  for (let b = 1; b < buckets; b++)
    await db('stock_buckets').insert({ sku, bucket: b, available: share(b), reserved: 0, sold: 0 });
  return sku;
}

/** Every bucket of a SKU, bucket 0 first. */
async function bucketsOf(sku: string, conn: Knex = db): Promise<(Stock & { bucket: number })[]> {
  const base = (await conn('stock').where({ sku }).first('available', 'reserved', 'sold')) as
    Record<keyof Stock, number | string> | undefined;
  if (!base) throw new Error(`no stock row for ${sku}`);
  const rest = (await conn('stock_buckets')
    .where({ sku })
    .orderBy('bucket')
    .select('bucket', 'available', 'reserved', 'sold')) as Record<string, number | string>[];
  return [{ bucket: 0, ...base }, ...rest].map((r) => ({
    bucket: Number(r.bucket),
    available: Number(r.available),
    reserved: Number(r.reserved),
    sold: Number(r.sold),
  }));
}

/** The SKU's stock: the sum over its buckets. */
async function stockOf(sku: string, conn: Knex = db): Promise<Stock> {
  const sum = { available: 0, reserved: 0, sold: 0 };
  for (const b of await bucketsOf(sku, conn)) {
    sum.available += b.available;
    sum.reserved += b.reserved;
    sum.sold += b.sold;
  }
  return sum;
}

/** Each bucket's reserved and sold must be exactly what the tries recorded taking from it. */
async function assertBucketsMatchHolds(sku: string): Promise<void> {
  const fences = (await db('tcc_fence')
    .where({ participant: 'stock', resource: sku })
    .whereIn('status', ['TRIED', 'CONFIRMED'])
    .select('xid', 'status', 'quantity')) as {
    xid: string;
    status: FenceStatus;
    quantity: number;
  }[];
  const expected = new Map<number, { reserved: number; sold: number }>();
  for (const f of fences) {
    const holds = (await db('stock_holds').where({ xid: f.xid, sku }).select('bucket', 'quantity')) as {
      bucket: number;
      quantity: number;
    }[];
    const own = holds.length
      ? holds.map((h) => ({ bucket: Number(h.bucket), quantity: Number(h.quantity) }))
      : [{ bucket: 0, quantity: Number(f.quantity) }];
    expect(own.reduce((n, h) => n + h.quantity, 0)).toBe(Number(f.quantity));
    for (const h of own) {
      const e = expected.get(h.bucket) ?? { reserved: 0, sold: 0 };
      if (f.status === 'TRIED') e.reserved += h.quantity;
      else e.sold += h.quantity;
      expected.set(h.bucket, e);
    }
  }
  for (const b of await bucketsOf(sku)) {
    expect({ bucket: b.bucket, reserved: b.reserved, sold: b.sold }).toEqual({
      bucket: b.bucket,
      ...(expected.get(b.bucket) ?? { reserved: 0, sold: 0 }),
    });
  }
}

async function fencesOf(orderId: string): Promise<Fence[]> {
  const rows = (await db('tcc_fence')
    .where({ xid: orderId, participant: 'stock' })
    .orderBy('resource')
    .select('resource', 'status', 'quantity', 'empty_rollback')) as {
    resource: string;
    status: FenceStatus;
    quantity: number | string;
    empty_rollback: number | boolean;
  }[];
  return rows.map((r) => ({
    resource: r.resource,
    status: r.status,
    quantity: Number(r.quantity),
    emptyRollback: Boolean(Number(r.empty_rollback)),
  }));
}

async function fenceOf(orderId: string, sku: string): Promise<Fence | undefined> {
  return (await fencesOf(orderId)).find((f) => f.resource === sku);
}

async function eventTypes(orderId: string): Promise<string[]> {
  const rows = (await db('order_events').where({ order_id: orderId }).orderBy('id').select('type')) as {
    type: string;
  }[];
  return rows.map((r) => r.type);
}

/** Awaits a call that must fail with an ApplicationFailure and returns it. */
async function failureOf(call: Promise<unknown>): Promise<ApplicationFailure> {
  let result: unknown;
  try {
    result = await call;
  } catch (err) {
    if (err instanceof ApplicationFailure) return err;
    throw err;
  }
  throw new Error(`expected an ApplicationFailure, but the call returned ${JSON.stringify(result)}`);
}

describe('Try', () => {
  test('a try moves the quantity of every line from available to reserved and records a fence row per line', async () => {
    const a = await createSku(10);
    const b = await createSku(5);
    const order = uid('order');

    const result = await tryReserveStock(db, order, [
      { sku: a, quantity: 3 },
      { sku: b, quantity: 5 },
    ]);

    expect(result.reserved).toEqual(
      expect.arrayContaining([
        { sku: a, quantity: 3 },
        { sku: b, quantity: 5 },
      ]),
    );
    expect(await stockOf(a)).toEqual({ available: 7, reserved: 3, sold: 0 });
    expect(await stockOf(b)).toEqual({ available: 0, reserved: 5, sold: 0 });
    expect(await fencesOf(order)).toEqual(
      [
        { resource: a, status: 'TRIED', quantity: 3, emptyRollback: false },
        { resource: b, status: 'TRIED', quantity: 5, emptyRollback: false },
      ].sort((x, y) => (x.resource < y.resource ? -1 : 1)),
    );
    expect(await eventTypes(order)).toEqual(['STOCK_RESERVED']);
  });

  test('a multi-line try where one line lacks stock reserves nothing and fails with OUT_OF_STOCK naming that sku', async () => {
    const plenty = await createSku(10);
    const scarce = await createSku(1);
    const alsoPlenty = await createSku(10);
    const order = uid('order');

    const failure = await failureOf(
      tryReserveStock(db, order, [
        { sku: plenty, quantity: 2 },
        { sku: scarce, quantity: 2 },
        { sku: alsoPlenty, quantity: 2 },
      ]),
    );

    expect(failure.type).toBe('OUT_OF_STOCK');
    expect(failure.nonRetryable).toBe(true);
    expect(failure.details?.[0]).toMatchObject({ sku: scarce, requested: 2 });
    expect(await stockOf(plenty)).toEqual({ available: 10, reserved: 0, sold: 0 });
    expect(await stockOf(scarce)).toEqual({ available: 1, reserved: 0, sold: 0 });
    expect(await stockOf(alsoPlenty)).toEqual({ available: 10, reserved: 0, sold: 0 });
    // The whole transaction rolled back: no fence rows, no timeline entry.
    expect(await fencesOf(order)).toEqual([]);
    expect(await eventTypes(order)).toEqual([]);
  });

  test('a try of an sku without a stock row fails with OUT_OF_STOCK and reserves nothing', async () => {
    const real = await createSku(5);
    const order = uid('order');
    const ghost = uid('ghost');

    const failure = await failureOf(
      tryReserveStock(db, order, [
        { sku: real, quantity: 1 },
        { sku: ghost, quantity: 1 },
      ]),
    );

    expect(failure.type).toBe('OUT_OF_STOCK');
    expect(failure.details?.[0]).toMatchObject({ sku: ghost });
    expect(await stockOf(real)).toEqual({ available: 5, reserved: 0, sold: 0 });
    expect(await fencesOf(order)).toEqual([]);
  });

  test('after an OUT_OF_STOCK try, a cancel is an empty rollback and the stock stays untouched', async () => {
    const sku = await createSku(1);
    const order = uid('order');
    expect((await failureOf(tryReserveStock(db, order, [{ sku, quantity: 2 }]))).type).toBe('OUT_OF_STOCK');

    expect(await cancelStock(db, order, [{ sku, quantity: 2 }])).toEqual({ released: 0, emptyRollbacks: 1 });

    expect(await stockOf(sku)).toEqual({ available: 1, reserved: 0, sold: 0 });
    expect(await fenceOf(order, sku)).toMatchObject({ status: 'CANCELLED', emptyRollback: true, quantity: 0 });
  });
});

describe('the Try tells its caller it is committing', () => {
  test('`committing` is called once the Try has taken the units and before its COMMIT is sent; and before a refused Try rolls back', async () => {
    const sku = await createSku(1);
    const sent: string[] = [];
    const listener = (q: { sql: string }) => sent.push(q.sql);
    db.on('query', listener);
    try {
      await tryReserveStock(db, uid('order'), [{ sku, quantity: 1 }], { committing: () => sent.push('<committing>') });
      const taken = sent.findIndex((q) => /^update `stock`|update `stock_buckets`|update stock/i.test(q));
      expect(taken).toBeGreaterThanOrEqual(0);
      expect(sent.indexOf('<committing>')).toBeGreaterThan(taken);
      expect(sent.slice(sent.indexOf('<committing>') + 1)).toEqual([expect.stringMatching(/^commit/i)]);

      sent.length = 0;
      const refused = tryReserveStock(db, uid('order'), [{ sku, quantity: 1 }], {
        committing: () => sent.push('<committing>'),
      });
      await expect(refused).rejects.toMatchObject({ type: 'OUT_OF_STOCK' });
      expect(sent.slice(sent.indexOf('<committing>') + 1)).toEqual([expect.stringMatching(/^rollback/i)]);
    } finally {
      db.off('query', listener);
    }
  });
});

describe('idempotency', () => {
  test('a repeated try is a no-op: the stock moves only once', async () => {
    const sku = await createSku(10);
    const order = uid('order');
    const lines = [{ sku, quantity: 4 }];

    await tryReserveStock(db, order, lines);
    const again = await tryReserveStock(db, order, lines);
    await tryReserveStock(db, order, lines);

    expect(again.reserved).toEqual(lines);
    expect(await stockOf(sku)).toEqual({ available: 6, reserved: 4, sold: 0 });
    expect(await fenceOf(order, sku)).toMatchObject({ status: 'TRIED', quantity: 4 });
  });

  test('a try repeated after confirm is a no-op and does not reserve again', async () => {
    const sku = await createSku(10);
    const order = uid('order');
    const lines = [{ sku, quantity: 4 }];
    await tryReserveStock(db, order, lines);
    await confirmStock(db, order, lines);

    await tryReserveStock(db, order, lines);

    expect(await stockOf(sku)).toEqual({ available: 6, reserved: 0, sold: 4 });
    expect(await fenceOf(order, sku)).toMatchObject({ status: 'CONFIRMED' });
  });

  test('a repeated confirm is a no-op: reserved moves to sold only once', async () => {
    const sku = await createSku(10);
    const order = uid('order');
    const lines = [{ sku, quantity: 3 }];
    await tryReserveStock(db, order, lines);

    expect(await confirmStock(db, order, lines)).toEqual({ confirmed: 1 });
    expect(await confirmStock(db, order, lines)).toEqual({ confirmed: 0 });
    expect(await confirmStock(db, order, lines)).toEqual({ confirmed: 0 });

    expect(await stockOf(sku)).toEqual({ available: 7, reserved: 0, sold: 3 });
    expect(await fenceOf(order, sku)).toMatchObject({ status: 'CONFIRMED', quantity: 3 });
    expect((await eventTypes(order)).filter((t) => t === 'STOCK_CONFIRMED')).toHaveLength(1);
  });

  test('a repeated cancel is a no-op: reserved returns to available only once', async () => {
    const sku = await createSku(10);
    const order = uid('order');
    const lines = [{ sku, quantity: 3 }];
    await tryReserveStock(db, order, lines);

    expect(await cancelStock(db, order, lines)).toEqual({ released: 1, emptyRollbacks: 0 });
    expect(await cancelStock(db, order, lines)).toEqual({ released: 0, emptyRollbacks: 0 });
    expect(await cancelStock(db, order, lines)).toEqual({ released: 0, emptyRollbacks: 0 });

    expect(await stockOf(sku)).toEqual({ available: 10, reserved: 0, sold: 0 });
    expect(await fenceOf(order, sku)).toMatchObject({ status: 'CANCELLED', quantity: 3, emptyRollback: false });
    expect((await eventTypes(order)).filter((t) => t === 'STOCK_RELEASED')).toHaveLength(1);
  });

  test('a confirm uses the quantity the try held, whatever quantity the confirm call carries', async () => {
    const sku = await createSku(10);
    const order = uid('order');
    await tryReserveStock(db, order, [{ sku, quantity: 2 }]);

    await confirmStock(db, order, [{ sku, quantity: 9 }]);

    expect(await stockOf(sku)).toEqual({ available: 8, reserved: 0, sold: 2 });
  });
});

describe('empty rollback and hanging reservation', () => {
  test('a cancel before any try is an empty rollback: the fence row is CANCELLED with empty_rollback and stock is untouched', async () => {
    const sku = await createSku(10);
    const order = uid('order');

    expect(await cancelStock(db, order, [{ sku, quantity: 3 }])).toEqual({ released: 0, emptyRollbacks: 1 });

    expect(await stockOf(sku)).toEqual({ available: 10, reserved: 0, sold: 0 });
    expect(await fenceOf(order, sku)).toEqual({ resource: sku, status: 'CANCELLED', quantity: 0, emptyRollback: true });
    const raw = (await db('tcc_fence')
      .where({ xid: order, participant: 'stock', resource: sku })
      .first('empty_rollback')) as { empty_rollback: number };
    expect(Number(raw.empty_rollback)).toBe(1);
    expect(await eventTypes(order)).toEqual([]);
    // A second cancel is still a no-op.
    expect(await cancelStock(db, order, [{ sku, quantity: 3 }])).toEqual({ released: 0, emptyRollbacks: 0 });
  });

  test('a try that arrives after its cancel is refused with TCC_TRY_AFTER_CANCEL and leaves no hanging reservation', async () => {
    const a = await createSku(10);
    const b = await createSku(10);
    const order = uid('order');
    await cancelStock(db, order, [{ sku: b, quantity: 1 }]);

    const failure = await failureOf(
      tryReserveStock(db, order, [
        { sku: a, quantity: 2 },
        { sku: b, quantity: 1 },
      ]),
    );

    expect(failure.type).toBe('TCC_TRY_AFTER_CANCEL');
    expect(failure.nonRetryable).toBe(true);
    expect(failure.details?.[0]).toMatchObject({ sku: b });
    expect(await stockOf(a)).toEqual({ available: 10, reserved: 0, sold: 0 });
    expect(await stockOf(b)).toEqual({ available: 10, reserved: 0, sold: 0 });
    // The refused try rolled back entirely: no TRIED fence for the other line either.
    expect(await fencesOf(order)).toEqual([{ resource: b, status: 'CANCELLED', quantity: 0, emptyRollback: true }]);
  });

  test('a try after a real cancel is refused too, and the released stock stays available', async () => {
    const sku = await createSku(10);
    const order = uid('order');
    await tryReserveStock(db, order, [{ sku, quantity: 4 }]);
    await cancelStock(db, order, [{ sku, quantity: 4 }]);

    expect((await failureOf(tryReserveStock(db, order, [{ sku, quantity: 4 }]))).type).toBe('TCC_TRY_AFTER_CANCEL');

    expect(await stockOf(sku)).toEqual({ available: 10, reserved: 0, sold: 0 });
  });
});

describe('conflicts', () => {
  test('a confirm after cancel fails with TCC_CONFLICT and changes nothing', async () => {
    const sku = await createSku(10);
    const order = uid('order');
    const lines = [{ sku, quantity: 2 }];
    await tryReserveStock(db, order, lines);
    await cancelStock(db, order, lines);
    const before = { stock: await stockOf(sku), fence: await fenceOf(order, sku), events: await eventTypes(order) };

    const failure = await failureOf(confirmStock(db, order, lines));

    expect(failure.type).toBe('TCC_CONFLICT');
    expect(failure.nonRetryable).toBe(true);
    expect(failure.details?.[0]).toMatchObject({ sku });
    expect({ stock: await stockOf(sku), fence: await fenceOf(order, sku), events: await eventTypes(order) }).toEqual(
      before,
    );
    expect(before.stock).toEqual({ available: 10, reserved: 0, sold: 0 });
  });

  test('a confirm after an empty rollback fails with TCC_CONFLICT and changes nothing', async () => {
    const sku = await createSku(10);
    const order = uid('order');
    await cancelStock(db, order, [{ sku, quantity: 2 }]);

    expect((await failureOf(confirmStock(db, order, [{ sku, quantity: 2 }]))).type).toBe('TCC_CONFLICT');

    expect(await stockOf(sku)).toEqual({ available: 10, reserved: 0, sold: 0 });
    expect(await fenceOf(order, sku)).toMatchObject({ status: 'CANCELLED', emptyRollback: true });
  });

  test('a cancel after confirm fails with TCC_CONFLICT and changes nothing', async () => {
    const sku = await createSku(10);
    const order = uid('order');
    const lines = [{ sku, quantity: 2 }];
    await tryReserveStock(db, order, lines);
    await confirmStock(db, order, lines);
    const before = { stock: await stockOf(sku), fence: await fenceOf(order, sku), events: await eventTypes(order) };

    const failure = await failureOf(cancelStock(db, order, lines));

    expect(failure.type).toBe('TCC_CONFLICT');
    expect(failure.nonRetryable).toBe(true);
    expect(failure.details?.[0]).toMatchObject({ sku });
    expect({ stock: await stockOf(sku), fence: await fenceOf(order, sku), events: await eventTypes(order) }).toEqual(
      before,
    );
    expect(before.stock).toEqual({ available: 8, reserved: 0, sold: 2 });
  });

  test('a confirm without any try fails with TCC_CONFLICT and writes no fence row', async () => {
    const sku = await createSku(10);
    const order = uid('order');

    expect((await failureOf(confirmStock(db, order, [{ sku, quantity: 1 }]))).type).toBe('TCC_CONFLICT');

    expect(await stockOf(sku)).toEqual({ available: 10, reserved: 0, sold: 0 });
    expect(await fencesOf(order)).toEqual([]);
  });
});

describe.each([1, 4])('concurrency (%i bucket(s))', (buckets) => {
  test('100 concurrent single-unit tries on 20 units: exactly 20 succeed, the rest are OUT_OF_STOCK, stock never goes negative', async () => {
    const sku = await createSku(20, buckets);
    const orders = Array.from({ length: 100 }, () => uid('order'));

    // Watch the row from a separate pool while the tries run: every committed state must be consistent.
    const watcher = createDb(TEST_ENV.databaseUrl, { poolMax: 1 });
    const samples: Stock[] = [];
    let running = true;
    const watching = (async () => {
      while (running) samples.push(await stockOf(sku, watcher));
    })();

    let results: PromiseSettledResult<unknown>[];
    try {
      results = await Promise.allSettled(orders.map((order) => tryReserveStock(db, order, [{ sku, quantity: 1 }])));
    } finally {
      running = false;
      await watching;
      await watcher.destroy();
    }

    const succeeded = results.filter((r) => r.status === 'fulfilled').length;
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    expect(succeeded).toBe(20);
    expect(failures).toHaveLength(80);
    for (const err of failures) {
      expect(err).toBeInstanceOf(ApplicationFailure);
      expect((err as ApplicationFailure).type).toBe('OUT_OF_STOCK');
    }
    expect(await stockOf(sku)).toEqual({ available: 0, reserved: 20, sold: 0 });
    const tried = await db('tcc_fence')
      .where({ participant: 'stock', resource: sku, status: 'TRIED' })
      .count({ n: '*' });
    expect(Number(tried[0]!.n)).toBe(20);
    expect(samples.length).toBeGreaterThan(0);
    for (const s of samples) {
      expect(s.available).toBeGreaterThanOrEqual(0);
      expect(s.reserved).toBeGreaterThanOrEqual(0);
      expect(s.available + s.reserved).toBe(20);
    }
    await assertBucketsMatchHolds(sku);
  });

  test('concurrent try, confirm and cancel of one order end in exactly one consistent outcome', async () => {
    for (let round = 0; round < 10; round++) {
      const sku = await createSku(5, buckets);
      const order = uid('order');
      const lines = [{ sku, quantity: 2 }];
      await tryReserveStock(db, order, lines);

      const [confirm, cancel] = await Promise.allSettled([
        withRetry(() => confirmStock(db, order, lines)),
        withRetry(() => cancelStock(db, order, lines)),
      ]);

      // Exactly one of them wins; the loser sees the winner's fence and raises TCC_CONFLICT.
      expect([confirm.status, cancel.status].sort()).toEqual(['fulfilled', 'rejected']);
      const loser = (
        confirm.status === 'rejected' ? confirm.reason : (cancel as PromiseRejectedResult).reason
      ) as unknown;
      expect(loser).toBeInstanceOf(ApplicationFailure);
      expect((loser as ApplicationFailure).type).toBe('TCC_CONFLICT');
      const fence = await fenceOf(order, sku);
      expect(await stockOf(sku)).toEqual(
        fence?.status === 'CONFIRMED' ? { available: 3, reserved: 0, sold: 2 } : { available: 5, reserved: 0, sold: 0 },
      );
      expect(fence?.status).toBe(confirm.status === 'fulfilled' ? 'CONFIRMED' : 'CANCELLED');
      await assertBucketsMatchHolds(sku);
    }
  });
});

describe('hot-SKU buckets', () => {
  test('a try takes from one bucket, moves on when buckets run dry, and records what it took where; confirm and cancel touch only those buckets', async () => {
    const sku = await createSku(5, 3); // buckets hold 2, 2, 1
    const [a, b, c] = [uid('bkt'), uid('bkt'), uid('bkt')];
    await tryReserveStock(db, a, [{ sku, quantity: 4 }]); // needs at least two buckets
    const holdsA = (await db('stock_holds').where({ xid: a, sku }).select('bucket', 'quantity')) as {
      bucket: number;
      quantity: number;
    }[];
    expect(holdsA.length).toBeGreaterThanOrEqual(2);
    expect(holdsA.reduce((n, h) => n + Number(h.quantity), 0)).toBe(4);
    await tryReserveStock(db, b, [{ sku, quantity: 1 }]);
    expect(await stockOf(sku)).toEqual({ available: 0, reserved: 5, sold: 0 });
    expect((await failureOf(tryReserveStock(db, c, [{ sku, quantity: 1 }]))).type).toBe('OUT_OF_STOCK');
    await assertBucketsMatchHolds(sku);

    // Confirming b changes only the bucket b took from.
    const before = await bucketsOf(sku);
    const [holdB] = (await db('stock_holds').where({ xid: b, sku }).select('bucket')) as { bucket: number }[];
    await confirmStock(db, b, [{ sku, quantity: 1 }]);
    const after = await bucketsOf(sku);
    for (const [i, bucket] of after.entries()) {
      if (bucket.bucket === Number(holdB!.bucket))
        expect(bucket).toEqual({ ...before[i]!, reserved: before[i]!.reserved - 1, sold: before[i]!.sold + 1 });
      else expect(bucket).toEqual(before[i]);
    }
    // Cancelling a puts its units back exactly where it took them.
    await cancelStock(db, a, [{ sku, quantity: 4 }]);
    for (const bucket of await bucketsOf(sku)) {
      const took = holdsA.filter((h) => Number(h.bucket) === bucket.bucket).reduce((n, h) => n + Number(h.quantity), 0);
      const was = before.find((x) => x.bucket === bucket.bucket)!;
      expect(bucket.available).toBe(was.available + took);
    }
    expect(await stockOf(sku)).toEqual({ available: 4, reserved: 0, sold: 1 });
    await assertBucketsMatchHolds(sku);
  });

  test('a reservation made before its SKU was sharded is confirmed from bucket 0, where it was taken', async () => {
    const sku = await createSku(6);
    const order = uid('bkt');
    await tryReserveStock(db, order, [{ sku, quantity: 2 }]);
    expect(await db('stock_holds').where({ xid: order })).toHaveLength(0);
    // Shard: bucket 0 keeps its reservation, the free units are spread over three buckets.
    await db('stock').where({ sku }).update({ buckets: 3, available: 2 });
    await db('stock_buckets').insert([1, 2].map((bucket) => ({ sku, bucket, available: 1, reserved: 0, sold: 0 })));
    await confirmStock(db, order, [{ sku, quantity: 2 }]);
    expect((await bucketsOf(sku)).map((b) => [b.bucket, b.available, b.reserved, b.sold])).toEqual([
      [0, 2, 0, 2],
      [1, 1, 0, 0],
      [2, 1, 0, 0],
    ]);
    await assertBucketsMatchHolds(sku);
  });
});

/* ------------------------------------------------------------------------------------------------------------ */
/* Property-based: random sequences of Try / Confirm / Cancel on one SKU.                                        */
/* ------------------------------------------------------------------------------------------------------------ */

type OpKind = 'try' | 'confirm' | 'cancel';
interface Op {
  kind: OpKind;
  order: number;
}
type Outcome = 'ok' | 'OUT_OF_STOCK' | 'TCC_TRY_AFTER_CANCEL' | 'TCC_CONFLICT';

/** Errors the activity layer would retry (Temporal retries them); anything else is a real failure. */
function isTransient(err: unknown): boolean {
  if (err instanceof ApplicationFailure) return false;
  const e = err as { code?: string; message?: string };
  return e.code === 'ER_LOCK_DEADLOCK' || e.code === 'ER_LOCK_WAIT_TIMEOUT' || /will retry/.test(e.message ?? '');
}

const transientRetries = new Map<string, number>();

/** Runs an activity body the way a Temporal retry policy would: transient database errors are retried. */
async function withRetry<T>(call: () => Promise<T>, attempts = 20): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      if (!isTransient(err) || attempt >= attempts) throw err;
      const code = (err as { code?: string }).code ?? 'retryable error';
      transientRetries.set(code, (transientRetries.get(code) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, Math.random() * 5 * attempt));
    }
  }
}

async function runOp(op: Op, orderIds: string[], quantities: number[], sku: string): Promise<Outcome> {
  const orderId = orderIds[op.order]!;
  const lines: StockLine[] = [{ sku, quantity: quantities[op.order]! }];
  const calls: Record<OpKind, () => Promise<unknown>> = {
    try: () => tryReserveStock(db, orderId, lines),
    confirm: () => confirmStock(db, orderId, lines),
    cancel: () => cancelStock(db, orderId, lines),
  };
  try {
    await withRetry(calls[op.kind]);
    return 'ok';
  } catch (err) {
    if (
      err instanceof ApplicationFailure &&
      ['OUT_OF_STOCK', 'TCC_TRY_AFTER_CANCEL', 'TCC_CONFLICT'].includes(err.type ?? '')
    )
      return err.type as Outcome;
    throw err;
  }
}

/** The reference model of one SKU's TCC participant, for sequential runs. */
class Model {
  readonly status: ('NONE' | FenceStatus)[];
  readonly stock: Stock;
  constructor(
    initial: number,
    private readonly quantities: number[],
  ) {
    this.status = quantities.map(() => 'NONE');
    this.stock = { available: initial, reserved: 0, sold: 0 };
  }

  apply(op: Op): Outcome {
    const q = this.quantities[op.order]!;
    const s = this.status[op.order]!;
    switch (op.kind) {
      case 'try':
        if (s === 'CANCELLED') return 'TCC_TRY_AFTER_CANCEL';
        if (s !== 'NONE') return 'ok';
        if (this.stock.available < q) return 'OUT_OF_STOCK';
        this.stock.available -= q;
        this.stock.reserved += q;
        this.status[op.order] = 'TRIED';
        return 'ok';
      case 'confirm':
        if (s === 'NONE' || s === 'CANCELLED') return 'TCC_CONFLICT';
        if (s === 'TRIED') {
          this.stock.reserved -= q;
          this.stock.sold += q;
          this.status[op.order] = 'CONFIRMED';
        }
        return 'ok';
      case 'cancel':
        if (s === 'CONFIRMED') return 'TCC_CONFLICT';
        if (s === 'TRIED') {
          this.stock.reserved -= q;
          this.stock.available += q;
        }
        this.status[op.order] = 'CANCELLED';
        return 'ok';
    }
  }
}

/** Checks the invariants that must hold after any sequence, whatever the interleaving. */
async function assertInvariants(
  sku: string,
  initial: number,
  orderIds: string[],
  quantities: number[],
  outcomes: { op: Op; outcome: Outcome }[],
): Promise<void> {
  const stock = await stockOf(sku);
  expect(stock.available).toBeGreaterThanOrEqual(0);
  expect(stock.reserved).toBeGreaterThanOrEqual(0);
  expect(stock.sold).toBeGreaterThanOrEqual(0);
  expect(stock.available + stock.reserved + stock.sold).toBe(initial);

  let tried = 0;
  let confirmed = 0;
  for (const [i, orderId] of orderIds.entries()) {
    const fences = await fencesOf(orderId);
    expect(fences.length).toBeLessThanOrEqual(1);
    const fence = fences[0];
    const mine = outcomes.filter((o) => o.op.order === i);
    const okConfirm = mine.some((o) => o.op.kind === 'confirm' && o.outcome === 'ok');
    const okCancel = mine.some((o) => o.op.kind === 'cancel' && o.outcome === 'ok');
    const okTry = mine.some((o) => o.op.kind === 'try' && o.outcome === 'ok');
    // An order never ends both confirmed and cancelled.
    expect(okConfirm && okCancel).toBe(false);
    if (!fence) {
      expect(okTry || okCancel || okConfirm).toBe(false);
      continue;
    }
    expect(['TRIED', 'CONFIRMED', 'CANCELLED']).toContain(fence.status);
    if (okConfirm) expect(fence.status).toBe('CONFIRMED');
    if (okCancel) expect(fence.status).toBe('CANCELLED');
    if (mine.some((o) => o.outcome === 'TCC_TRY_AFTER_CANCEL')) expect(fence.status).toBe('CANCELLED');
    if (fence.status === 'TRIED' || fence.status === 'CONFIRMED') expect(okTry).toBe(true);
    if (fence.emptyRollback) {
      expect(fence.status).toBe('CANCELLED');
      expect(fence.quantity).toBe(0);
    } else {
      expect(fence.quantity).toBe(quantities[i]);
    }
    if (fence.status === 'TRIED') tried += fence.quantity;
    if (fence.status === 'CONFIRMED') confirmed += fence.quantity;
    const events = await eventTypes(orderId);
    expect(events.filter((t) => t === 'STOCK_CONFIRMED').length).toBe(fence.status === 'CONFIRMED' ? 1 : 0);
    expect(events.filter((t) => t === 'STOCK_RELEASED').length).toBe(
      fence.status === 'CANCELLED' && !fence.emptyRollback ? 1 : 0,
    );
  }
  expect(stock.reserved).toBe(tried);
  expect(stock.sold).toBe(confirmed);
  await assertBucketsMatchHolds(sku);
}

const ORDERS = 3;
const opArb = fc.record({
  kind: fc.constantFrom<OpKind>('try', 'try', 'confirm', 'cancel'),
  order: fc.nat({ max: ORDERS - 1 }),
});
const scenarioArb = {
  initial: fc.integer({ min: 0, max: 6 }),
  quantities: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: ORDERS, maxLength: ORDERS }),
};

describe.each([1, 3])('properties (%i bucket(s))', (buckets) => {
  test('any sequential mix of try, confirm and cancel matches the reference model call by call and keeps the invariants', async () => {
    await fc.assert(
      fc.asyncProperty(
        scenarioArb.initial,
        scenarioArb.quantities,
        fc.array(opArb, { minLength: 1, maxLength: 14 }),
        async (initial, quantities, ops) => {
          const sku = await createSku(initial, buckets);
          const orderIds = quantities.map(() => uid('prop'));
          const model = new Model(initial, quantities);
          const outcomes: { op: Op; outcome: Outcome }[] = [];
          for (const op of ops) {
            const outcome = await runOp(op, orderIds, quantities, sku);
            expect({ op, outcome }).toEqual({ op, outcome: model.apply(op) });
            outcomes.push({ op, outcome });
          }
          expect(await stockOf(sku)).toEqual(model.stock);
          for (const [i, orderId] of orderIds.entries()) {
            expect((await fenceOf(orderId, sku))?.status ?? 'NONE').toBe(model.status[i]);
          }
          await assertInvariants(sku, initial, orderIds, quantities, outcomes);
        },
      ),
      { numRuns: 30 },
    );
  });

  test('concurrent batches of try, confirm and cancel (duplicates included) keep every invariant', async () => {
    await fc.assert(
      fc.asyncProperty(
        scenarioArb.initial,
        scenarioArb.quantities,
        // Batches run one after another; the calls inside a batch run concurrently in the generated order.
        fc.array(fc.array(opArb, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 4 }),
        async (initial, quantities, batches) => {
          const sku = await createSku(initial, buckets);
          const orderIds = quantities.map(() => uid('conc'));
          const outcomes: { op: Op; outcome: Outcome }[] = [];
          for (const batch of batches) {
            const results = await Promise.all(batch.map((op) => runOp(op, orderIds, quantities, sku)));
            batch.forEach((op, i) => outcomes.push({ op, outcome: results[i]! }));
          }
          await assertInvariants(sku, initial, orderIds, quantities, outcomes);
        },
      ),
      { numRuns: 30 },
    );
  });

  afterAll(() => {
    // Deadlocks between concurrent calls of one order are expected and retried (as Temporal would); show how many.
    if (transientRetries.size > 0)
      process.stdout.write(
        `\n[tcc-stock] transient errors retried: ${[...transientRetries].map(([k, v]) => `${k} x${v}`).join(', ')}\n`,
      );
  });
});

describe("the workflow's Try after the API's (tryReserveStockUnlessHeld)", () => {
  test('a reservation already held is answered by one read: no transaction, no second hold', async () => {
    const sku = await createSku(5);
    const order = uid('ord');
    await tryReserveStock(db, order, [{ sku, quantity: 2 }]);
    const queries: string[] = [];
    const onQuery = (q: { sql: string }) => queries.push(q.sql);
    db.on('query', onQuery);
    try {
      expect(await tryReserveStockUnlessHeld(db, order, [{ sku, quantity: 2 }])).toEqual({
        reserved: [{ sku, quantity: 2 }],
      });
    } finally {
      db.off('query', onQuery);
    }
    expect(queries).toHaveLength(1);
    expect(await db('stock').where({ sku }).first('available', 'reserved')).toEqual({ available: 3, reserved: 2 });
  });

  test('without a held reservation it is the full Try: it reserves, and refuses a Try after the Cancel', async () => {
    const sku = await createSku(5);
    const fresh = uid('ord');
    await tryReserveStockUnlessHeld(db, fresh, [{ sku, quantity: 1 }]);
    expect(await db('stock').where({ sku }).first('reserved')).toEqual({ reserved: 1 });
    const cancelled = uid('ord');
    await cancelStock(db, cancelled, [{ sku, quantity: 1 }]); // empty rollback: the Cancel came first
    const err = await tryReserveStockUnlessHeld(db, cancelled, [{ sku, quantity: 1 }]).catch((e: unknown) => e);
    expect((err as ApplicationFailure).type).toBe('TCC_TRY_AFTER_CANCEL');
    expect(await db('stock').where({ sku }).first('available', 'reserved')).toEqual({ available: 4, reserved: 1 });
  });
});
