/**
 * Round trips per step, counted from the pool's own `query` events (one per statement sent, BEGIN and COMMIT
 * included), against the real test database. A MySQL round trip costs the caller 25 to 80 µs of CPU on a 2-core VM,
 * and on a busy one also a wait for a turn of its event loop (docs/benchmarks.md, seventh section), so each step's
 * count is a budget: a change that adds a statement to an order's happy path fails here, with the statements listed.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { createActivities } from '../src/activities';
import { composeOrderSteps } from '../src/activities/order-steps';
import { createOrder } from '../src/activities/orders';
import { markFulfilmentReady } from '../src/activities/support';
import { IdempotencyKeyReusedError } from '../src/db/idempotency';
import { createDb } from '../src/db/knex';
import { tryReserveStock } from '../src/db/stock';
import { TEST_ENV } from './support/env';
import { statementsOf } from './support/statements';

let db: Knex;

beforeAll(() => {
  db = createDb(TEST_ENV.databaseUrl, { poolMax: 2 });
});

afterAll(async () => {
  await db?.destroy();
});

const uid = (prefix: string) => `${prefix}-${randomBytes(6).toString('hex')}`;

async function product(stock: number): Promise<string> {
  const sku = uid('budget');
  await db('products').insert({ sku, name: 'budget test', price: 700, currency: 'CNY' });
  await db('stock').insert({ sku, available: stock, reserved: 0, sold: 0, total_in: stock, buckets: 1 });
  return sku;
}

test('the stock Try of an unsharded SKU: isolation, BEGIN, fence, timeline entry, one conditional update, COMMIT', async () => {
  const sku = await product(3);
  const orderId = uid('ord');
  const sent = await statementsOf(db, () => tryReserveStock(db, orderId, [{ sku, quantity: 2 }]));
  expect(sent).toHaveLength(6);
  expect(sent.filter((q) => /^select/i.test(q))).toEqual([]);
  expect(await db('stock').where({ sku }).first('available', 'reserved')).toEqual({ available: 1, reserved: 2 });
  // Too few units: the conditional update takes nothing, one read tells "out of stock" from "sharded".
  await expect(tryReserveStock(db, uid('ord'), [{ sku, quantity: 2 }])).rejects.toMatchObject({
    type: 'OUT_OF_STOCK',
  });
  expect(await db('stock').where({ sku }).first('available', 'reserved')).toEqual({ available: 1, reserved: 2 });
});

test("a keyed request's stock Try: one statement more, the fingerprint INSERT, and a different request reserves nothing", async () => {
  const sku = await product(3);
  const orderId = uid('ord');
  const sent = await statementsOf(db, () =>
    tryReserveStock(db, orderId, [{ sku, quantity: 1 }], { fingerprint: 'a'.repeat(64) }),
  );
  expect(sent).toHaveLength(7);
  expect(sent.filter((q) => /^insert into `idempotency_fingerprints`/i.test(q))).toHaveLength(1);
  // The same request again: the INSERT meets the stored row, one read compares, nothing else changes.
  await expect(
    tryReserveStock(db, orderId, [{ sku, quantity: 1 }], { fingerprint: 'a'.repeat(64) }),
  ).resolves.toMatchObject({ request: 'same' });
  // Another request under the same key: refused before any fence or unit.
  await expect(
    tryReserveStock(db, orderId, [{ sku, quantity: 2 }], { fingerprint: 'b'.repeat(64) }),
  ).rejects.toBeInstanceOf(IdempotencyKeyReusedError);
  expect(await db('stock').where({ sku }).first('available', 'reserved')).toEqual({ available: 2, reserved: 1 });
});

test('creating an order: one read (a stored order and the prices together), three inserts, BEGIN, COMMIT', async () => {
  const sku = await product(5);
  const input = { orderId: uid('ord'), userId: uid('user'), items: [{ sku, quantity: 2 }], provider: 'sandbox' };
  const sent = await statementsOf(db, () => createOrder(db, input));
  expect(sent).toHaveLength(6);
  // A retry finds the stored order in that same read and writes nothing.
  const retry = await statementsOf(db, async () =>
    expect(await createOrder(db, input)).toMatchObject({
      amount: 1400,
      currency: 'CNY',
      lines: [{ sku, quantity: 2, unitPrice: 700 }],
    }),
  );
  expect(retry.filter((q) => /^(insert|update)/i.test(q))).toEqual([]);
  expect(retry).toHaveLength(3);
  // Another user's retry of the same id is refused.
  await expect(createOrder(db, { ...input, userId: uid('other') })).rejects.toMatchObject({ type: 'ORDER_CONFLICT' });
});

test('the hand-off to fulfilment: the guard update, one read with the lines, two inserts, BEGIN, COMMIT', async () => {
  const sku = await product(5);
  const orderId = uid('ord');
  await createOrder(db, { orderId, userId: uid('user'), items: [{ sku, quantity: 1 }], provider: 'sandbox' });
  // Not PAID: the guard changes no row and nothing is written.
  expect(await markFulfilmentReady(db, orderId)).toEqual({ written: false });
  await db('orders').where({ order_id: orderId }).update({ status: 'PAID' });
  const sent = await statementsOf(db, () => markFulfilmentReady(db, orderId));
  expect(sent).toHaveLength(6);
  const [message] = await db('outbox').where({ topic: 'order.fulfilment_ready', message_key: orderId });
  expect(JSON.parse(message.payload)).toMatchObject({ orderId, amount: 700, items: [{ sku, quantity: 1 }] });
  expect(await markFulfilmentReady(db, orderId)).toEqual({ written: false });
});

test('opening an order whose stock the API held before the start: the prices and the holds in one read, no Try', async () => {
  const steps = composeOrderSteps(createActivities({ db, providers: {} }));
  const sku = await product(5);
  const orderId = uid('ord');
  await tryReserveStock(db, orderId, [{ sku, quantity: 2 }]); // the API's Try
  const input = { orderId, userId: uid('user'), items: [{ sku, quantity: 2 }], provider: 'sandbox' };
  const sent = await statementsOf(db, () => steps.openOrder(input));
  // createOrder's six statements and nothing else: no read of the fences, no second Try.
  expect(sent).toHaveLength(6);
  expect(sent.filter((q) => /tcc_fence|`stock`/i.test(q) && !/^SELECT \(SELECT/i.test(q))).toEqual([]);
  expect(await db('stock').where({ sku }).first('available', 'reserved')).toEqual({ available: 3, reserved: 2 });

  // Not held (no Try before the start): the step makes the Try itself.
  const other = uid('ord');
  const tried = await statementsOf(db, () => steps.openOrder({ ...input, orderId: other }));
  expect(tried.some((q) => /^insert into `tcc_fence`/i.test(q))).toBe(true);
  expect(await db('stock').where({ sku }).first('available', 'reserved')).toEqual({ available: 1, reserved: 4 });
});
