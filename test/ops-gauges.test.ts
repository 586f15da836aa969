/**
 * The gauges read from MySQL at scrape time that the alert rules page on (ops/alerts/payflow-rules.yml): here, the
 * orders no running workflow is closing (PayflowOrdersOverdue).
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { createMetrics } from '../src/client/metrics';
import { refreshOpsGauges } from '../src/client/routes/ops';
import { createDb } from '../src/db/knex';
import { connectTemporal } from '../src/temporal/connection';
import { freshDatabase } from './support/env';

let db: Knex;
beforeAll(async () => {
  // A database of its own: the gauge counts the whole orders table, and other suites leave orders behind.
  db = createDb(await freshDatabase('gauges'), { poolMax: 2 });
});
afterAll(async () => {
  await db.destroy();
});

const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000);

async function order(status: string, deadline: Date | null, createdAt = new Date()): Promise<string> {
  const orderId = `gauge_${randomBytes(5).toString('hex')}`;
  await db('orders').insert({
    order_id: orderId,
    user_id: 'u',
    status,
    amount: 100,
    currency: 'CNY',
    provider: 'sandbox',
    deadline,
    created_at: createdAt,
  });
  return orderId;
}

test('an order still AWAITING_PAYMENT 30 minutes past its deadline (its workflow terminated), or an hour after creation with no payment made, is counted overdue; nothing else is', async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  const overdue = async () => {
    await refreshOpsGauges(db, metrics, []);
    return (await metrics.ordersOverdue.get()).values[0]!.value;
  };
  expect(await overdue()).toBe(0);
  // Waiting, or just past its deadline (the workflow is closing it), or closed long ago: not overdue.
  await order('AWAITING_PAYMENT', new Date(Date.now() + 60_000));
  await order('AWAITING_PAYMENT', minutesAgo(10));
  await order('EXPIRED', minutesAgo(120));
  await order('AWAITING_PAYMENT', null, minutesAgo(5));
  expect(await overdue()).toBe(0);
  // Its workflow terminated while it waited: nothing will close it.
  await order('AWAITING_PAYMENT', minutesAgo(31));
  // Its workflow ended before the payment was created.
  await order('AWAITING_PAYMENT', null, minutesAgo(61));
  expect(await overdue()).toBe(2);
});

test('with Temporal unreachable, the MySQL gauges are still refreshed: only the Stuck count waits for Temporal', async () => {
  // An API started during an outage (it starts without Temporal) used to export no reconciliation gauge at all: the
  // Stuck count's failure aborted the refresh before them.
  const metrics = createMetrics({ defaultMetrics: false });
  metrics.ordersStuck.set(7);
  const client = await connectTemporal(
    { temporalAddress: '127.0.0.1:1', temporalNamespace: 'default' },
    { lazy: true },
  );
  try {
    await refreshOpsGauges(db, metrics, ['sandbox'], client, 1_000);
  } finally {
    await client.connection.close();
  }
  expect((await metrics.reconciliationFailedDays.get()).values).toEqual([
    expect.objectContaining({ labels: { provider: 'sandbox' }, value: 0 }),
  ]);
  // The Stuck count keeps its last value (here the one set before) until Temporal answers again.
  expect((await metrics.ordersStuck.get()).values[0]!.value).toBe(7);
});
