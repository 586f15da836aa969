/**
 * Flash sale through the real API: one SKU with 100 units and many concurrent orders. Exactly 100 reservations
 * succeed, every other order gets 409 OUT_OF_STOCK, stock never goes negative, and once every reserved order is
 * paid, sold = 100 and available + reserved + sold = the initial stock.
 * Run twice: on one stock row, and on the same units sharded into 8 buckets (hot-SKU mode).
 * FLASH_SALE_ORDERS sets the number of concurrent orders (default 300; the issue asks for 1,000).
 */
import { randomBytes } from 'node:crypto';
import type { ReservationGate } from '../src/client/admission';
import type { ApiError } from '../src/client/errors';
import { OrderService, orderIdForIdempotencyKey, requestFingerprint } from '../src/client/orders-service';
import { keyedTry } from '../src/db/idempotency';
import { createDb } from '../src/db/knex';
import { tryReserveStock } from '../src/db/stock';
import { checkInvariants } from '../src/ops/invariants';
import { TEST_ENV } from './support/env';
import { createProduct, startSystem, stockOf, type TestSystem, userId, waitFor } from './support/system';

const UNITS = 100;
// Default 300: 1,000 through the API took ~150 s to place on the shared 2-core machine (see the report); set 1000 to
// run the figure.
const ORDERS = Number(process.env.FLASH_SALE_ORDERS ?? 300);

let sys: TestSystem;
/** Why the API answered 503 SERVICE_UNAVAILABLE (the error code of each 'dependency unavailable' log line). */
const unavailable: string[] = [];

beforeAll(async () => {
  const logDestination = {
    write(line: string) {
      const entry = JSON.parse(line) as { msg?: string; err?: { code?: string; type?: string; message?: string } };
      if (entry.msg === 'dependency unavailable; answered 503')
        unavailable.push(
          `${entry.err?.code ?? entry.err?.type ?? 'unknown'}: ${entry.err?.message?.slice(0, 120) ?? ''}`,
        );
    },
  };
  sys = await startSystem(
    { PAYMENT_TIMEOUT: '10m', QUERY_FIRST_DELAY: '5m', QUERY_MAX_INTERVAL: '5m', LOG_LEVEL: 'warn' },
    { logDestination },
  );
}, 60_000);

afterAll(async () => {
  await sys?.stop();
});

test.each([1, 8])(
  `${ORDERS} concurrent orders for ${UNITS} units in %i bucket(s): exactly ${UNITS} are reserved, the rest are OUT_OF_STOCK, and paying them all sells exactly ${UNITS}`,
  async (buckets) => {
    const sku = await createProduct(sys, { price: 990, stock: UNITS, buckets });
    let pendingRetries = 0;
    const retriedAfter: Record<string, number> = {};
    const started = Date.now();
    const results = await Promise.all(
      Array.from({ length: ORDERS }, async () => {
        // A real client: an Idempotency-Key, and a retry with the same key when the API answers 503 ORDER_PENDING
        // (the order took longer than the API waits to set up, which happens on this loaded 2-core machine) or sheds
        // the
        // request with 429 TOO_MANY_REQUESTS (more orders being set up at once than ORDER_START_CONCURRENCY, which
        // depends on how many of the concurrent buyers pass the stock read before the units are gone).
        const [user, key] = [userId(), `flash-${randomBytes(6).toString('hex')}`];
        let r = await sys.http(
          'POST',
          '/orders',
          { userId: user, items: [{ sku, quantity: 1 }] },
          { 'idempotency-key': key },
        );
        // A 503 SERVICE_UNAVAILABLE (a database drop-out under the hot SKU's lock contention) says "retry the same
        // request"; a real client does, with its Idempotency-Key. How often it happens is tracked in issue #12's notes.
        const pending = () =>
          (r.status === 503 && (r.body?.error === 'ORDER_PENDING' || r.body?.error === 'SERVICE_UNAVAILABLE')) ||
          (r.status === 429 && r.body?.error === 'TOO_MANY_REQUESTS');
        // Retried for up to 3 minutes: the bound must not assume how fast a loaded server sets orders up (30 s did).
        for (let i = 0; i < 180 && pending(); i++) {
          pendingRetries++;
          const why = `${r.status} ${r.body?.error ?? ''}`;
          retriedAfter[why] = (retriedAfter[why] ?? 0) + 1;
          await new Promise((res) => setTimeout(res, 1000));
          r = await sys.http(
            'POST',
            '/orders',
            { userId: user, items: [{ sku, quantity: 1 }] },
            { 'idempotency-key': key },
          );
        }
        if (r.status === 500) process.stdout.write(`\n[flash-sale] 500: ${JSON.stringify(r.body)}\n`);
        return {
          // A replay answers 201 too (Idempotent-Replayed), like the first answer.
          status: r.status,
          error: r.body?.error as string | undefined,
          orderId: r.body?.orderId as string,
        };
      }),
    );
    const placedMs = Date.now() - started;
    if (unavailable.length)
      process.stdout.write(
        `\n[flash-sale] ${unavailable.length} x 503 SERVICE_UNAVAILABLE: ${JSON.stringify([...new Set(unavailable)].slice(0, 5))}\n`,
      );
    const created = results.filter((r) => r.status === 201);
    const answers: Record<string, number> = {};
    for (const r of results)
      answers[`${r.status} ${r.error ?? ''}`.trim()] = (answers[`${r.status} ${r.error ?? ''}`.trim()] ?? 0) + 1;
    expect(answers).toEqual({ '201': UNITS, '409 OUT_OF_STOCK': ORDERS - UNITS });
    expect(await stockOf(sys, sku)).toEqual({ available: 0, reserved: UNITS, sold: 0 });

    const payStarted = Date.now();
    await Promise.all(
      created.map(async (c) =>
        expect((await sys.sandbox('POST', `/v1/payments/${c.orderId}/pay`, {})).status).toBe(200),
      ),
    );
    await waitFor(async () => (await stockOf(sys, sku)).sold === UNITS, {
      timeoutMs: 240_000,
      intervalMs: 500,
      what: `${UNITS} units sold`,
    });
    const paidMs = Date.now() - payStarted;
    const stock = await stockOf(sys, sku);
    expect(stock).toEqual({ available: 0, reserved: 0, sold: UNITS });
    expect(stock.available + stock.reserved + stock.sold).toBe(UNITS);
    // Stock is confirmed just before the order is marked PAID: wait for the orders too.
    const paidCount = async () =>
      Number(
        (
          await sys
            .db('orders')
            .whereIn(
              'order_id',
              created.map((c) => c.orderId),
            )
            .where('status', 'PAID')
            .count({ n: '*' })
        )[0]!.n,
      );
    await waitFor(async () => (await paidCount()) === UNITS, {
      timeoutMs: 120_000,
      intervalMs: 500,
      what: `${UNITS} orders PAID`,
    });
    expect(await paidCount()).toBe(UNITS);
    // The invariants for this SKU (other suites share the database, some with deliberately broken rows).
    const { total_in: totalIn, buckets: stored } = await sys.db('stock').where({ sku }).first('total_in', 'buckets');
    expect([Number(totalIn), Number(stored)]).toEqual([UNITS, buckets]);
    const [{ held }] = (await sys
      .db('tcc_fence')
      .where({ participant: 'stock', resource: sku, status: 'TRIED' })
      .sum({ held: 'quantity' })) as [{ held: number | null }];
    expect(Number(held ?? 0)).toBe(stock.reserved);
    if (buckets > 1) {
      // Every reservation took from a bucket and recorded it; the sales are spread over the buckets.
      const [{ units }] = (await sys.db('stock_holds').where({ sku }).sum({ units: 'quantity' })) as [
        { units: number },
      ];
      expect(Number(units)).toBe(UNITS);
      const used = await sys.db('stock_buckets').where({ sku }).andWhere('sold', '>', 0).count({ n: '*' });
      expect(Number(used[0]!.n)).toBeGreaterThan(0);
    }
    const violations = (await checkInvariants({ db: sys.db, convergenceBoundMs: 600_000, maxExamples: Infinity }))
      .flatMap((r) => r.examples)
      .filter((e) => e.includes(sku));
    expect(violations).toEqual([]);
    process.stdout.write(
      `\n[flash-sale] ${buckets} bucket(s): ${ORDERS} orders placed in ${placedMs} ms (${Math.round((ORDERS / placedMs) * 1000)}/s, ${pendingRetries} retries: ${JSON.stringify(retriedAfter)}); ${UNITS} paid and confirmed in ${paidMs} ms\n`,
    );
  },
  600_000,
);

test("a retry sent to another API process while its key's first request is in its Try is asked to retry (503), then joins that order: never told OUT_OF_STOCK by its units", async () => {
  // The client timed out and its retry (same Idempotency-Key) reached another replica, whose own buyers were reserving
  // the last units: that replica's gate could not see the first request's Try, refused the retry 409 OUT_OF_STOCK, and
  // the first request's order then kept the unit; a later retry was told 201. Two answers for one key.
  const sku = await createProduct(sys, { price: 990, stock: 1 });
  const request = { userId: userId(), items: [{ sku, quantity: 1 }], provider: 'sandbox' as const };
  const key = `elsewhere-${randomBytes(6).toString('hex')}`;
  const orderId = orderIdForIdempotencyKey(request.userId, key);
  const db = createDb(TEST_ENV.databaseUrl, { poolMax: 4 });
  const blocker = await db.transaction();
  try {
    // The first request's Try, on "another process", held mid-way: the stock row is locked by someone else, so the Try
    // has inserted its fingerprint and fence and waits at the stock update, uncommitted.
    await blocker('stock').where({ sku }).forUpdate().first('sku');
    const first = tryReserveStock(db, orderId, request.items, {
      fingerprint: requestFingerprint(request, request.items),
    });
    // Until this order's own fingerprint row is locked by that Try (a read that does not wait is refused).
    await waitFor(async () => (await keyedTry(db, orderId)) === 'in progress', {
      what: 'the first Try holding its fingerprint row, uncommitted',
    });
    // This replica: another buyer's Try of the last unit is in flight here, so the units read alone would refuse.
    const replica = new OrderService({ db, client: sys.client, config: sys.config });
    const settle = (replica as unknown as { gate: ReservationGate }).gate.claim([{ sku, quantity: 1 }], 'ord_other');
    const answer = () =>
      replica.create(request, key).then(
        (r) => r,
        (err: ApiError) => ({ status: err.statusCode, error: err.code }),
      );
    try {
      expect(await answer()).toEqual({ status: 503, error: 'ORDER_PENDING' });
      await blocker.commit();
      await first;
      // The retry the 503 asks for joins the order.
      expect(await answer()).toMatchObject({ replayed: true, body: { orderId, status: 'AWAITING_PAYMENT' } });
    } finally {
      settle();
    }
    expect(await stockOf(sys, sku)).toEqual({ available: 0, reserved: 1, sold: 0 });
  } finally {
    if (!blocker.isCompleted()) await blocker.rollback();
    await db.destroy();
  }
});
