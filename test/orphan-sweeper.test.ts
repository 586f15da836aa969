/**
 * The orphan sweeper against a workflow that takes over its order's pre-start reservation while the sweeper is
 * deciding (README, "Flash sales"): the sweeper asks Temporal whether the order's workflow runs, and only then
 * releases. A workflow started between the two (a client retrying with the same Idempotency-Key after the grace)
 * stores its order finding the fence TRIED and makes no Try of its own; a release after that would leave an order
 * waiting for payment with its units sellable to someone else. Here the Temporal client is a stub whose describe()
 * first runs the workflow's take-over step (openOrder, against the real test database) and then answers NotFound,
 * the answer it had when it was asked.
 */
import { randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/client';
import type { FastifyBaseLogger } from 'fastify';
import type { Knex } from 'knex';
import { createActivities } from '../src/activities';
import { reserveBeforeStart, OrphanReservationSweeper } from '../src/client/admission';
import { createMetrics } from '../src/client/metrics';
import { createDb } from '../src/db/knex';
import { freshDatabase } from './support/env';

let db: Knex;

beforeAll(async () => {
  // A database of its own: a sweeper sweeps every TRIED fence past its grace in the database it is given.
  db = createDb(await freshDatabase('orphan_sweeper'), { poolMax: 4 });
}, 60_000);

afterAll(async () => {
  await db?.destroy();
});

const uid = (prefix: string) => `${prefix}${randomBytes(6).toString('hex')}`;
const quiet = { warn() {}, error() {}, info() {}, debug() {} } as unknown as FastifyBaseLogger;

async function product(units: number): Promise<string> {
  const sku = uid('sku-sweep-');
  await db('products').insert({ sku, name: 'sweeper test', price: 500, currency: 'CNY' });
  await db('stock').insert({ sku, available: units, reserved: 0, sold: 0, total_in: units, buckets: 1 });
  return sku;
}

const stockOf = async (sku: string) =>
  (await db('stock').where({ sku }).first('available', 'reserved', 'sold')) as Record<string, number>;
const fenceOf = async (orderId: string) =>
  (await db('tcc_fence').where({ xid: orderId, participant: 'stock' }).first('status'))?.status as string | undefined;

/** A pre-start reservation (what POST /orders makes before its start) already past the grace. */
async function orphanedReservation(sku: string): Promise<{ orderId: string; userId: string }> {
  const [orderId, userId] = [uid('ord_sweep'), uid('user-')];
  await reserveBeforeStart(db, orderId, [{ sku, quantity: 1 }]);
  await db('tcc_fence')
    .where({ xid: orderId, participant: 'stock' })
    .update({ created_at: new Date(Date.now() - 120_000) });
  return { orderId, userId };
}

/** A Temporal client whose describe() runs `meanwhile` (the workflow starting) and then answers NotFound. */
function clientWhoseWorkflowStartsWhileAsked(meanwhile: () => Promise<unknown>): Client {
  return {
    withDeadline: (_deadline: number, fn: () => Promise<unknown>) => fn(),
    workflow: {
      getHandle: (workflowId: string) => ({
        async describe() {
          await meanwhile();
          throw new WorkflowNotFoundError('workflow not found', workflowId, undefined);
        },
      }),
    },
  } as unknown as Client;
}

function sweeperWith(client: Client): OrphanReservationSweeper {
  return new OrphanReservationSweeper({
    db,
    client,
    logger: quiet,
    metrics: createMetrics({ defaultMetrics: false }),
    graceMs: 60_000,
    intervalMs: 60_000,
    callTimeoutMs: 5_000,
  });
}

test('a workflow that takes over the reservation between the sweeper’s describe() and its release keeps its units', async () => {
  const sku = await product(1);
  const { orderId, userId } = await orphanedReservation(sku);
  const steps = createActivities({ db, providers: {} });
  const input = { orderId, userId, items: [{ sku, quantity: 1 }], provider: 'sandbox' };

  // The retry's workflow opens the order while the sweeper waits for Temporal's answer: it finds its stock held.
  let opened: unknown;
  const sweeper = sweeperWith(clientWhoseWorkflowStartsWhileAsked(async () => (opened = await steps.openOrder(input))));
  const released = await sweeper.sweep();

  expect(opened).toMatchObject({ amount: 500, lines: [{ sku, quantity: 1 }] });
  expect(released).toBe(0);
  expect(await fenceOf(orderId)).toBe('TRIED');
  expect(await stockOf(sku)).toEqual({ available: 0, reserved: 1, sold: 0 });
  expect((await db('orders').where({ order_id: orderId }).first('status'))?.status).toBe('AWAITING_PAYMENT');
  // The order can still be paid for: its Confirm finds the Try.
  await expect(steps.confirmStock({ orderId, lines: [{ sku, quantity: 1 }] })).resolves.toEqual({ confirmed: 1 });
});

test('a take-over that comes after the release finds it released and is refused (TCC_TRY_AFTER_CANCEL), units sellable', async () => {
  const sku = await product(1);
  const { orderId, userId } = await orphanedReservation(sku);
  const steps = createActivities({ db, providers: {} });
  const input = { orderId, userId, items: [{ sku, quantity: 1 }], provider: 'sandbox' };

  // The workflow starts only once the sweeper holds the order's fences locked (its release is under way).
  let takeOver: Promise<unknown> | undefined;
  const onResponse = (_response: unknown, query: { sql: string }) => {
    if (!takeOver && /from `tcc_fence`.* for update$/i.test(query.sql)) takeOver = steps.openOrder(input);
  };
  db.on('query-response', onResponse);
  try {
    expect(await sweeperWith(clientWhoseWorkflowStartsWhileAsked(async () => {})).sweep()).toBe(1);
  } finally {
    db.off('query-response', onResponse);
  }
  expect(takeOver).toBeDefined();
  await expect(takeOver).rejects.toMatchObject({ type: 'TCC_TRY_AFTER_CANCEL' });
  expect(await fenceOf(orderId)).toBe('CANCELLED');
  expect(await stockOf(sku)).toEqual({ available: 1, reserved: 0, sold: 0 });
});

test('a true orphan (no order row) and one whose order already failed are still released; a repeat is a no-op', async () => {
  const sku = await product(2);
  const orphan = await orphanedReservation(sku);
  const failed = await orphanedReservation(sku);
  await createActivities({ db, providers: {} }).createOrder({
    orderId: failed.orderId,
    userId: failed.userId,
    items: [{ sku, quantity: 1 }],
    provider: 'sandbox',
  });
  await db('orders').where({ order_id: failed.orderId }).update({ status: 'FAILED' });
  const sweeper = sweeperWith(clientWhoseWorkflowStartsWhileAsked(async () => {}));
  expect(await sweeper.sweep()).toBe(2);
  expect([await fenceOf(orphan.orderId), await fenceOf(failed.orderId)]).toEqual(['CANCELLED', 'CANCELLED']);
  expect(await stockOf(sku)).toEqual({ available: 2, reserved: 0, sold: 0 });
  expect(await sweeper.sweep()).toBe(0);
});

test("one order the sweeper cannot settle (an answer it cannot read) does not keep the others' units; Temporal unreachable ends the pass", async () => {
  const sku = await product(4);
  const first = await orphanedReservation(sku);
  const second = await orphanedReservation(sku);
  // The older candidate's describe() fails with something other than "not found" (a bad answer); later, Temporal
  // cannot be reached at all.
  let reachable = true;
  let asked = 0;
  const client = {
    withDeadline: (_deadline: number, fn: () => Promise<unknown>) => fn(),
    workflow: {
      getHandle: (workflowId: string) => ({
        async describe() {
          asked++;
          if (!reachable) throw Object.assign(new Error('14 UNAVAILABLE: connection refused'), { code: 14 });
          if (workflowId.endsWith(first.orderId)) throw new Error('an answer the sweeper cannot read');
          throw new WorkflowNotFoundError('workflow not found', workflowId, undefined);
        },
      }),
    },
  } as unknown as Client;
  const sweeper = sweeperWith(client);
  expect(await sweeper.sweep()).toBe(1);
  expect([await fenceOf(first.orderId), await fenceOf(second.orderId)]).toEqual(['TRIED', 'CANCELLED']);
  expect(asked).toBe(2);
  // Unreachable: the pass stops at the first of the three candidates (each would fail the same way), releases nothing.
  const third = await orphanedReservation(sku);
  const fourth = await orphanedReservation(sku);
  reachable = false;
  asked = 0;
  expect(await sweeper.sweep()).toBe(0);
  expect(asked).toBe(1);
  expect(await Promise.all([first, third, fourth].map((o) => fenceOf(o.orderId)))).toEqual(['TRIED', 'TRIED', 'TRIED']);
  expect(await stockOf(sku)).toEqual({ available: 1, reserved: 3, sold: 0 });
});

test('a setup attempt that reaches createOrder after its reservation was released writes no order row', async () => {
  // The workflow gave up on a setup attempt that outlived its step's time (MySQL stalled) and released the order; the
  // attempt, still running, then wrote an AWAITING_PAYMENT row that no workflow would ever close (GET said "awaiting
  // payment" for ever, every retry with the key was told 503 ORDER_PENDING).
  const sku = await product(1);
  const { orderId, userId } = await orphanedReservation(sku);
  const steps = createActivities({ db, providers: {} });
  await steps.cancelStock({ orderId, lines: [{ sku, quantity: 1 }] });
  await expect(
    steps.createOrder({ orderId, userId, items: [{ sku, quantity: 1 }], provider: 'sandbox' }),
  ).rejects.toMatchObject({ type: 'TCC_TRY_AFTER_CANCEL' });
  expect(await db('orders').where({ order_id: orderId }).first('status')).toBeUndefined();
  expect(await stockOf(sku)).toEqual({ available: 1, reserved: 0, sold: 0 });
});
