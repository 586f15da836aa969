/**
 * Admission before the workflow (flash sales): a buyer who cannot get stock is answered 409 OUT_OF_STOCK without
 * anything started on Temporal (counted from Temporal visibility on this system's own task queue); units are
 * reserved before the start and owned by the order from then on; a reservation whose workflow never started (the API
 * died in between) is released by the sweeper; a definite start failure releases at once; released stock is
 * sellable at once; overload is shed with 429 + Retry-After, and the same Idempotency-Key then gets the same order.
 */
import { ORDER_WORKFLOW_TYPE, orderWorkflowId } from '../src/contracts/order';
import { randomBytes } from 'node:crypto';
import { releaseReservation, reserveBeforeStart } from '../src/client/admission';
import type { Client } from '@temporalio/client';
import type { ApiError } from '../src/client/errors';
import { OrderService, orderIdForIdempotencyKey } from '../src/client/orders-service';
import { createDb } from '../src/db/knex';
import { TEST_ENV, freshDatabase } from './support/env';
import { statementsOf } from './support/statements';
import { createProduct, placeOrder, startSystem, stockOf, type TestSystem, userId, waitFor } from './support/system';

const admin = (sys: TestSystem) => ({ authorization: `Bearer ${sys.config.adminToken}` });

/** The ids of the order workflows started on this system's task queue, once visibility shows `expected` of them. */
async function workflowsOnQueue(sys: TestSystem, expected: number): Promise<string[]> {
  const query = `WorkflowType = '${ORDER_WORKFLOW_TYPE}' AND TaskQueue = '${sys.config.taskQueue}'`;
  await waitFor(async () => (await sys.client.workflow.count(query)).count >= expected, {
    timeoutMs: 60_000,
    what: `${expected} workflows in visibility`,
  });
  const ids: string[] = [];
  for await (const wf of sys.client.workflow.list({ query })) ids.push(wf.workflowId);
  return ids;
}

describe('admission', () => {
  /**
   * `sys` keeps the default grace (60 s) before a sweeper may release a reservation whose workflow is not running. The
   * sweeper tests need a short one (2 s), but a sweeper sweeps its whole database: with 2 s on the shared test database
   * it could release the units of any suite's order whose workflow start took longer than that under load (starts of
   * 15 s and more were seen in CI), this suite's winners included. So `sweeping` has a database of its own, and no
   * workflow is started there.
   */
  let sys: TestSystem;
  let sweeping: TestSystem;
  beforeAll(async () => {
    const env = { PAYMENT_TIMEOUT: '10m', QUERY_FIRST_DELAY: '5m', QUERY_MAX_INTERVAL: '5m' };
    [sys, sweeping] = await Promise.all([
      startSystem(env),
      freshDatabase('sweeper').then((url) =>
        startSystem({ ...env, DATABASE_URL: url, RESERVATION_GRACE: '2s', RESERVATION_SWEEP_INTERVAL: '500ms' }),
      ),
    ]);
  }, 120_000);
  afterAll(async () => {
    await sys?.stop();
    await sweeping?.stop();
  });

  test.each([1, 4])(
    '60 buyers for 10 units in %i bucket(s): 10 orders, 50 answers 409 OUT_OF_STOCK, and only the 10 winners started a workflow',
    async (buckets) => {
      const sku = await createProduct(sys, { stock: 10, buckets });
      const before = await workflowsOnQueue(sys, 0);
      // The orders that ran a Try of this SKU (a fence INSERT), as the API's pool sent them.
      const tried = new Set<string>();
      const onQuery = (q: { sql: string; bindings?: unknown[] }) => {
        if (/insert into `tcc_fence`/i.test(q.sql) && q.bindings?.includes(sku))
          for (const b of q.bindings) if (typeof b === 'string' && b.startsWith('ord_')) tried.add(b);
      };
      sys.db.on('query', onQuery);
      const results = await Promise.all(
        Array.from({ length: 60 }, () =>
          sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] }),
        ),
      );
      sys.db.off('query', onQuery);
      const winners = results.filter((r) => r.status === 201).map((r) => r.body.orderId as string);
      const losers = results.filter((r) => r.status === 409);
      expect(winners).toHaveLength(10);
      // Buyers whose units were all being reserved waited and read again instead of racing for the row lock: the
      // winners ran a Try, and hardly anyone else (a read sent just before a Try committed can still let one through;
      // without the gate, most of the 60 run one).
      expect([...tried]).toEqual(expect.arrayContaining(winners));
      expect(tried.size).toBeLessThanOrEqual(15);
      expect(losers).toHaveLength(50);
      for (const l of losers) expect(l.body).toMatchObject({ error: 'OUT_OF_STOCK', sku });
      expect(await stockOf(sys, sku)).toEqual({ available: 0, reserved: 10, sold: 0 });
      const started = (await workflowsOnQueue(sys, before.length + 10)).filter((id) => !before.includes(id));
      expect(started.sort()).toEqual(winners.map((id) => `order-${id}`).sort());
      // No loser left anything behind: the only stock fences of this SKU are the winners'.
      const fences = await sys.db('tcc_fence').where({ participant: 'stock', resource: sku }).pluck('xid');
      expect(fences.sort()).toEqual([...winners].sort());
    },
    120_000,
  );

  test('as many buyers as units, all at once: every buyer gets a unit (a Try seen committed by a units read is never counted twice)', async () => {
    // The gate subtracts the units of Tries in flight from what a read reports. A Try whose commit the read already saw
    // must not count: it was (until fixed) released from the gate only when its commit came back, so a read answered
    // in between counted its units twice, and a buyer was told OUT_OF_STOCK with a unit left that nobody held.
    for (let round = 0; round < 4; round++) {
      const sku = await createProduct(sys, { stock: 8 });
      const results = await Promise.all(
        Array.from({ length: 8 }, () =>
          sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] }),
        ),
      );
      expect(results.map((r) => r.status)).toEqual(Array(8).fill(201));
      expect(await stockOf(sys, sku)).toEqual({ available: 0, reserved: 8, sold: 0 });
    }
  }, 120_000);

  test('stock released by a cancel is sellable again at once', async () => {
    const sku = await createProduct(sys, { stock: 1 });
    const first = await placeOrder(sys, sku);
    expect((await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] })).body.error).toBe(
      'OUT_OF_STOCK',
    );
    expect((await sys.http('POST', `/orders/${first.orderId}/cancel`, {})).body.status).toBe('CANCELLED');
    // No waiting: the cancel's answer comes after the release.
    const second = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] });
    expect(second.status).toBe(201);
  });

  test('a reservation whose workflow never started (the API died in between) is released by the sweeper', async () => {
    const s = sweeping;
    const sku = await createProduct(s, { stock: 1 });
    const orderId = `ord_orphan${randomBytes(8).toString('hex')}`;
    // Exactly what POST /orders does before its start, and then nothing: the process "died".
    await reserveBeforeStart(s.db, orderId, [{ sku, quantity: 1 }]);
    expect(await stockOf(s, sku)).toEqual({ available: 0, reserved: 1, sold: 0 });
    expect((await s.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] })).body.error).toBe(
      'OUT_OF_STOCK',
    );
    await waitFor(async () => (await stockOf(s, sku)).available === 1, {
      timeoutMs: 60_000,
      what: 'the orphaned unit released',
    });
    expect(await s.db('tcc_fence').where({ xid: orderId, participant: 'stock' }).first()).toMatchObject({
      status: 'CANCELLED',
    });
    const metrics = await (await fetch(`${s.apiUrl}/metrics`)).text();
    expect(metrics).toMatch(/payflow_orphan_reservations_released_total [1-9]/);
    // Sellable again: a new order's reservation (what POST /orders makes before it starts the workflow) gets the unit.
    await expect(
      reserveBeforeStart(s.db, `ord_again${randomBytes(8).toString('hex')}`, [{ sku, quantity: 1 }]),
    ).resolves.toBeUndefined();
  });

  test('the same Idempotency-Key after its reservation was released is refused, never answered 201 without units', async () => {
    const s = sweeping;
    const sku = await createProduct(s, { stock: 1 });
    const [user, key] = [userId(), `k-${randomBytes(6).toString('hex')}`];
    await reserveBeforeStart(s.db, orderIdForIdempotencyKey(user, key), [{ sku, quantity: 1 }]);
    await waitFor(async () => (await stockOf(s, sku)).available === 1, {
      timeoutMs: 60_000,
      what: 'the orphaned unit released',
    });
    const r = await s.http(
      'POST',
      '/orders',
      { userId: user, items: [{ sku, quantity: 1 }] },
      { 'idempotency-key': key },
    );
    expect(r.status).toBe(409);
    expect(r.body.error).toBe('RESERVATION_RELEASED');
    expect(await stockOf(s, sku)).toEqual({ available: 1, reserved: 0, sold: 0 });
  });

  test("a start that arrives after its reservation was released is refused as the API's own Try refuses it: 409 RESERVATION_RELEASED, never a 5xx, and a retry answers the same", async () => {
    const sku = await createProduct(sys, { stock: 2 });
    const user = userId();
    const send = (key: string) =>
      sys.http('POST', '/orders', { userId: user, items: [{ sku, quantity: 1 }] }, { 'idempotency-key': key });
    const released = (orderId: string) => releaseReservation(sys.db, orderId, [{ sku, quantity: 1 }]);

    // The API's own Try refused (admission): the key's reservation was released before this request came.
    const early = `k-${randomBytes(6).toString('hex')}`;
    await reserveBeforeStart(sys.db, orderIdForIdempotencyKey(user, early), [{ sku, quantity: 1 }]);
    await released(orderIdForIdempotencyKey(user, early));
    const admission = await send(early);

    // The workflow's Try refused (setup): the API reserved and started, but the start reached a worker only after the
    // sweeper had released the reservation (here: no worker while the test releases it, as the sweeper would).
    const late = `k-${randomBytes(6).toString('hex')}`;
    const lateId = orderIdForIdempotencyKey(user, late);
    sys.worker.shutdown();
    await waitFor(async () => sys.worker.getState() === 'STOPPED', { what: 'the worker stopped' });
    const pending = send(late);
    await waitFor(() => sys.db('tcc_fence').where({ xid: lateId, participant: 'stock', status: 'TRIED' }).first(), {
      what: 'the pre-start reservation',
    });
    await released(lateId);
    await sys.restartWorker();
    const setup = await pending;
    // Its units released before its row was written: no row is written (one would wait for payment with nothing to
    // close it); the workflow ended FAILED with the refusal.
    expect(await sys.db('orders').where({ order_id: lateId }).first('status')).toBeUndefined();
    expect(await sys.client.workflow.getHandle(orderWorkflowId(lateId)).result()).toMatchObject({
      status: 'FAILED',
      reason: 'TCC_TRY_AFTER_CANCEL',
    });

    const refusal = { status: 409, body: { error: 'RESERVATION_RELEASED', message: expect.any(String) } };
    expect({ admission, setup }).toEqual({ admission: refusal, setup: refusal });
    expect(setup.body).toEqual(admission.body);
    // Retries with the same keys: the same answer (from keys whose orders have no row).
    expect({ admission: await send(early), setup: await send(late) }).toEqual({ admission, setup });
    expect(await stockOf(sys, sku)).toEqual({ available: 2, reserved: 0, sold: 0 });
  });

  test('the same Idempotency-Key with another SKU while the first request is still setting up is refused 422 before anything is reserved', async () => {
    const [a, b] = [await createProduct(sys, { stock: 2 }), await createProduct(sys, { stock: 2 })];
    const [user, key] = [userId(), `k-${randomBytes(6).toString('hex')}`];
    const orderId = orderIdForIdempotencyKey(user, key);
    const send = (skus: string[]) =>
      sys.http(
        'POST',
        '/orders',
        { userId: user, items: skus.map((sku) => ({ sku, quantity: 1 })) },
        { 'idempotency-key': key },
      );
    // No worker: the first request has reserved its units and waits for its workflow's payment URL.
    sys.worker.shutdown();
    await waitFor(async () => sys.worker.getState() === 'STOPPED', { what: 'the worker stopped' });
    const first = send([a]);
    await waitFor(() => sys.db('tcc_fence').where({ xid: orderId, participant: 'stock', status: 'TRIED' }).first(), {
      what: 'the pre-start reservation',
    });
    const other = send([a, b]);
    let answeredWithoutWorker = false;
    void other.then(() => (answeredWithoutWorker = true));
    await waitFor(async () => answeredWithoutWorker, { timeoutMs: 5_000, what: 'the refusal' }).catch(() => undefined);
    await sys.restartWorker();
    expect(await other).toMatchObject({ status: 422, body: { error: 'IDEMPOTENCY_KEY_REUSED' } });
    expect((await first).body.orderId).toBe(orderId);
    // Nothing of B was ever reserved, and the order's timeline names only A.
    expect(await stockOf(sys, b)).toEqual({ available: 2, reserved: 0, sold: 0 });
    expect(await sys.db('tcc_fence').where({ xid: orderId, resource: b })).toEqual([]);
    const reserved = await sys.db('order_events').where({ order_id: orderId, type: 'STOCK_RESERVED' }).pluck('message');
    expect(reserved.join('; ')).not.toContain(b);
    expect(await stockOf(sys, a)).toEqual({ available: 1, reserved: 1, sold: 0 });
    // Refused without waiting for the first request's workflow, which no worker ran then.
    expect(answeredWithoutWorker).toBe(true);
  });

  test('a retry with the same Idempotency-Key of an order that took the last unit joins that order instead of being told OUT_OF_STOCK', async () => {
    const sku = await createProduct(sys, { stock: 1 });
    const [user, key] = [userId(), `k-${randomBytes(6).toString('hex')}`];
    // The first request reserved the last unit and then lost its answer (a 503 ORDER_PENDING, a dropped connection):
    // here, its reservation made by hand, with no order row yet.
    const orderId = orderIdForIdempotencyKey(user, key);
    await reserveBeforeStart(sys.db, orderId, [{ sku, quantity: 1 }]);
    const retry = await sys.http(
      'POST',
      '/orders',
      { userId: user, items: [{ sku, quantity: 1 }] },
      { 'idempotency-key': key },
    );
    expect(retry.status).toBe(201);
    expect(retry.body.orderId).toBe(orderId);
    expect(await stockOf(sys, sku)).toEqual({ available: 0, reserved: 1, sold: 0 });
  });

  test('the same Idempotency-Key sent twice at once for the last unit gives one order to both, never OUT_OF_STOCK to one', async () => {
    for (let round = 0; round < 5; round++) {
      const sku = await createProduct(sys, { stock: 1 });
      const [user, key] = [userId(), `k-${randomBytes(6).toString('hex')}`];
      const send = () =>
        sys.http('POST', '/orders', { userId: user, items: [{ sku, quantity: 1 }] }, { 'idempotency-key': key });
      const answers = await Promise.all([send(), send()]);
      // A retry that arrives while the first is still being set up may be asked to come back (503 ORDER_PENDING);
      // it is never told the unit its own order holds is gone.
      for (const a of answers) expect(a.body.error).not.toBe('OUT_OF_STOCK');
      expect(answers.filter((a) => a.status < 300).map((a) => a.body.orderId)).toContain(
        orderIdForIdempotencyKey(user, key),
      );
      expect(await stockOf(sys, sku)).toEqual({ available: 0, reserved: 1, sold: 0 });
    }
  });

  test('a start that takes too long answers 503 ORDER_PENDING; without an Idempotency-Key it says to follow the order, not to send it again', async () => {
    // It said "retry with the same Idempotency-Key" to a request that sent none: the retry was a second order, its
    // units held twice.
    const sku = await createProduct(sys, { stock: 5 });
    const timedOut = {
      withDeadline: async () => {
        throw new Error('13 INTERNAL: DEADLINE_EXCEEDED: deadline exceeded');
      },
    } as unknown as Client;
    const orders = new OrderService({ db: sys.db, client: timedOut, config: sys.config });
    const request = { userId: userId(), items: [{ sku, quantity: 1 }], provider: 'sandbox' as const };
    const answer = (key?: string) =>
      orders.create(request, key).then(
        () => undefined,
        (err: ApiError) => ({ status: err.statusCode, code: err.code, message: err.message, details: err.details }),
      );
    const unkeyed = await answer();
    expect(unkeyed).toMatchObject({ status: 503, code: 'ORDER_PENDING' });
    expect(unkeyed?.message).toContain(`GET /orders/${String(unkeyed?.details.orderId)}`);
    expect(unkeyed?.message).not.toMatch(/retry with the same Idempotency-Key/);
    const keyed = await answer(`slow-${randomBytes(6).toString('hex')}`);
    expect(keyed).toMatchObject({ status: 503, code: 'ORDER_PENDING' });
    expect(keyed?.message).toMatch(/retry with the same Idempotency-Key/);
  });

  test('a refused buyer costs one read; a keyed one two more (its fingerprint row without waiting, then its order row or fence), not the full order read', async () => {
    // A sale's losers mostly send keys: they paid the order view's read, the reservation's and the fingerprint's, and
    // were answered twice as slowly as buyers without a key (npm run bench -- --flash-sale --keyed).
    const db = createDb(TEST_ENV.databaseUrl, { poolMax: 2 });
    try {
      const orders = new OrderService({ db, client: sys.client, config: sys.config });
      const sku = await createProduct(sys, { stock: 0 });
      const request = { userId: userId(), items: [{ sku, quantity: 1 }], provider: 'sandbox' as const };
      const refusal = (key?: string) =>
        orders.create(request, key).then(
          () => undefined,
          (err: ApiError) => err.code,
        );
      await refusal(`warm-${randomBytes(6).toString('hex')}`); // the pool's first query asks the server's version once
      let answer: string | undefined;
      const unkeyed = await statementsOf(db, async () => (answer = await refusal()));
      expect(answer).toBe('OUT_OF_STOCK');
      expect(unkeyed).toHaveLength(1);
      const keyed = await statementsOf(db, async () => (answer = await refusal(`k-${randomBytes(6).toString('hex')}`)));
      expect(answer).toBe('OUT_OF_STOCK');
      expect(keyed).toHaveLength(3);
      expect(keyed[1]).toMatch(/FROM idempotency_fingerprints .*NOWAIT/);
      expect(keyed[2]).toMatch(/FROM orders WHERE order_id IN .*UNION SELECT xid AS id FROM tcc_fence/s);
    } finally {
      await db.destroy();
    }
  });

  test('an order that fails before it owns its units (coupon unavailable) releases the pre-start reservation at once', async () => {
    const sku = await createProduct(sys, { stock: 1, price: 1000 });
    const owner = userId();
    const code = `C${randomBytes(4).toString('hex')}`;
    expect(
      (await sys.http('PUT', `/admin/coupons/${code}`, { userId: owner, discount: 100, currency: 'CNY' }, admin(sys)))
        .status,
    ).toBeLessThan(300);
    // Someone else's coupon: createOrder refuses it after the API reserved the unit.
    const r = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }], couponCode: code });
    expect(r.status).toBe(409);
    expect(r.body.error).toBe('COUPON_UNAVAILABLE');
    expect(await stockOf(sys, sku)).toEqual({ available: 1, reserved: 0, sold: 0 });
  });
});

describe('overload', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({
      PAYMENT_TIMEOUT: '10m',
      QUERY_FIRST_DELAY: '5m',
      QUERY_MAX_INTERVAL: '5m',
      ORDER_START_CONCURRENCY: '1',
    });
  }, 60_000);
  afterAll(async () => {
    await sys?.stop();
  });

  test('is shed with 429 and Retry-After before anything is reserved; the same Idempotency-Key then gets the same order', async () => {
    const sku = await createProduct(sys, { stock: 20 });
    const calls = Array.from({ length: 6 }, () => ({ user: userId(), key: `k-${randomBytes(6).toString('hex')}` }));
    const first = await Promise.all(
      calls.map(async (c) => {
        const r = await fetch(`${sys.apiUrl}/orders`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': c.key },
          body: JSON.stringify({ userId: c.user, items: [{ sku, quantity: 1 }] }),
        });
        return {
          status: r.status,
          retryAfter: r.headers.get('retry-after'),
          body: (await r.json()) as { error?: string; orderId?: string },
        };
      }),
    );
    const shed = first.filter((r) => r.status === 429);
    expect(shed.length).toBeGreaterThan(0);
    for (const s of shed) expect(s).toMatchObject({ retryAfter: '1', body: { error: 'TOO_MANY_REQUESTS' } });
    // A shed request reserved nothing.
    const placed = first.filter((r) => r.status === 201).length;
    expect((await stockOf(sys, sku)).reserved).toBe(placed);
    // Retried one at a time with the same keys: every buyer gets an order, the one its key names.
    for (const [i, c] of calls.entries()) {
      const r = await sys.http(
        'POST',
        '/orders',
        { userId: c.user, items: [{ sku, quantity: 1 }] },
        { 'idempotency-key': c.key },
      );
      expect(r.status).toBe(201);
      expect(r.body.orderId).toBe(orderIdForIdempotencyKey(c.user, c.key));
      if (first[i]!.status === 201) expect(r.body.orderId).toBe(first[i]!.body.orderId);
    }
    expect((await stockOf(sys, sku)).reserved).toBe(calls.length);
  });
});
