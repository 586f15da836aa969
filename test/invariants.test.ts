/**
 * The invariant checker itself: each invariant passes on a consistent database and reports the ids of the
 * orders or SKUs that break it (so a soak cannot pass because the checker sees nothing).
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { createDb } from '../src/db/knex';
import { checkInvariants } from '../src/ops/invariants';
import type { BillRow } from '../src/providers/types';
import { freshDatabase } from './support/env';

let db: Knex;
beforeAll(async () => {
  // A database of its own: the checker reads whole tables, and other suites leave orders of theirs behind.
  db = createDb(await freshDatabase('invariants'), { poolMax: 4 });
});
afterAll(async () => {
  await db.destroy();
});

const id = (p: string) => `${p}_${randomBytes(5).toString('hex')}`;

async function product(stock: { available: number; reserved: number; sold: number; total_in: number }) {
  const sku = id('inv');
  await db('products').insert({ sku, name: sku, price: 100, currency: 'CNY' });
  await db('stock').insert({ sku, ...stock });
  return sku;
}

async function order(status: string, sku: string, quantity: number, fence?: string) {
  const orderId = id('ord');
  await db('orders').insert({
    order_id: orderId,
    user_id: 'u',
    status,
    amount: 100 * quantity,
    currency: 'CNY',
    provider: 'sandbox',
    deadline: new Date(Date.now() + 60_000),
  });
  await db('order_lines').insert({ order_id: orderId, sku, quantity, unit_price: 100 });
  if (fence)
    await db('tcc_fence').insert({ xid: orderId, participant: 'stock', resource: sku, status: fence, quantity });
  return orderId;
}

async function verdicts(providerRows?: BillRow[]) {
  const results = await checkInvariants({ db, providerRows, convergenceBoundMs: 60_000, maxExamples: Infinity });
  return Object.fromEntries(results.map((r) => [r.name, r]));
}

// Each test builds its own inconsistency; earlier tests' rows stay, so assertions look for this test's ids.
test('a consistent set of orders passes the stock invariants', async () => {
  const sku = await product({ available: 7, reserved: 1, sold: 2, total_in: 10 });
  await order('PAID', sku, 2, 'CONFIRMED');
  await order('AWAITING_PAYMENT', sku, 1, 'TRIED');
  await order('EXPIRED', sku, 3, 'CANCELLED');
  const v = await verdicts();
  for (const name of [
    'stock-conserved',
    'sold-equals-paid-units',
    'reserved-equals-open-tries',
    'closed-orders-hold-no-stock',
  ]) {
    expect(v[name]!.examples.join(' ')).not.toContain(sku);
  }
});

test('stock that does not add up to what was put in is reported with its SKU', async () => {
  const sku = await product({ available: 5, reserved: 0, sold: 0, total_in: 6 });
  const v = await verdicts();
  expect(v['stock-conserved']!.passed).toBe(false);
  expect(v['stock-conserved']!.examples.join(' ')).toContain(sku);
});

test('an expired order that still holds stock, and sold units without a PAID order, are reported', async () => {
  const sku = await product({ available: 8, reserved: 1, sold: 1, total_in: 10 });
  const expired = await order('EXPIRED', sku, 1, 'TRIED');
  const v = await verdicts();
  expect(v['closed-orders-hold-no-stock']!.examples.join(' ')).toContain(expired);
  expect(v['sold-equals-paid-units']!.examples.join(' ')).toContain(sku);
  expect(v['fence-matches-status']!.examples.join(' ')).toContain(expired);
});

test('an order left awaiting payment long after its deadline is reported as not converged', async () => {
  const sku = await product({ available: 9, reserved: 1, sold: 0, total_in: 10 });
  const stuck = await order('AWAITING_PAYMENT', sku, 1, 'TRIED');
  await db('orders')
    .where({ order_id: stuck })
    .update({ deadline: new Date(Date.now() - 3_600_000) });
  expect((await verdicts())['orders-converged']!.examples.join(' ')).toContain(stuck);
});

test('money kept for a closed order and a refund missing locally are reported', async () => {
  const sku = await product({ available: 10, reserved: 0, sold: 0, total_in: 10 });
  const expired = await order('EXPIRED', sku, 1, 'CANCELLED');
  const paid = await order('PAID', sku, 1, 'CONFIRMED');
  const rows: BillRow[] = [
    { kind: 'PAYMENT', outTradeNo: expired, tradeNo: 'T1', amount: 100, currency: 'CNY', at: new Date().toISOString() },
    { kind: 'PAYMENT', outTradeNo: paid, tradeNo: 'T2', amount: 100, currency: 'CNY', at: new Date().toISOString() },
    {
      kind: 'REFUND',
      outTradeNo: paid,
      tradeNo: 'T2',
      outRefundNo: `rf-${paid}`,
      amount: 100,
      currency: 'CNY',
      at: new Date().toISOString(),
    },
  ];
  const v = await verdicts(rows);
  expect(v['provider-payments-owned']!.examples.join(' ')).toContain(expired);
  expect(v['provider-refunds-match']!.examples.join(' ')).toContain(`rf-${paid}`);
  expect(v['money-matches-status']!.examples.join(' ')).toContain(paid);
});

test('a PAID order whose second payment was refunded holds its amount: not reported; one that holds less is', async () => {
  const sku = await product({ available: 10, reserved: 0, sold: 0, total_in: 10 });
  const whole = await order('PAID', sku, 1, 'CONFIRMED');
  const short = await order('PAID', sku, 1, 'CONFIRMED');
  const at = new Date().toISOString();
  const rows: BillRow[] = [
    { kind: 'PAYMENT', outTradeNo: whole, tradeNo: 'W1', amount: 100, currency: 'CNY', at },
    { kind: 'PAYMENT', outTradeNo: whole, tradeNo: 'W2', amount: 100, currency: 'CNY', at },
    {
      kind: 'REFUND',
      outTradeNo: whole,
      tradeNo: 'W2',
      outRefundNo: `rf-${whole}-W2`,
      amount: 100,
      currency: 'CNY',
      at,
    },
    { kind: 'PAYMENT', outTradeNo: short, tradeNo: 'S1', amount: 100, currency: 'CNY', at },
    {
      kind: 'REFUND',
      outTradeNo: short,
      tradeNo: 'S1',
      outRefundNo: `rf-${short}-S1`,
      amount: 40,
      currency: 'CNY',
      at,
    },
  ];
  const examples = (await verdicts(rows))['money-matches-status']!.examples.join(' ');
  expect(examples).not.toContain(whole);
  expect(examples).toContain(short);
});

test("orders older than the bills' period are not compared with them (they are on earlier bills)", async () => {
  const sku = await product({ available: 10, reserved: 0, sold: 0, total_in: 10 });
  const old = await order('PAID', sku, 1, 'CONFIRMED');
  await db('orders')
    .where({ order_id: old })
    .update({ created_at: new Date(Date.now() - 10 * 86_400_000) });
  const within = await order('PAID', sku, 1, 'CONFIRMED');
  const since = new Date(Date.now() - 3 * 86_400_000);
  const results = await checkInvariants({
    db,
    providerRows: [],
    providerRowsSince: since,
    convergenceBoundMs: 60_000,
    maxExamples: Infinity,
  });
  const examples = results.find((r) => r.name === 'money-matches-status')!.examples.join(' ');
  expect(examples).not.toContain(old);
  expect(examples).toContain(within);
  // Without a period, every order is compared: the old one is reported too.
  expect((await verdicts([]))['money-matches-status']!.examples.join(' ')).toContain(old);
});

test('tries committed while the checker reads are never reported: every table is read in one snapshot', async () => {
  // A coupon frozen and released again and again, each change in one transaction with its fence, as a TCC Try and
  // Cancel make it; the checker, read table by table, saw the fences before a Try and the coupon after it.
  const code = id('cpn');
  await db('coupons').insert({ code, user_id: 'u', discount: 10, currency: 'CNY' });
  let writing = true;
  const writer = (async () => {
    for (let round = 0; writing; round++) {
      const xid = id(`o${round}`);
      await db.transaction(async (trx) => {
        await trx('tcc_fence').insert({ xid, participant: 'coupon', resource: code, status: 'TRIED', quantity: 1 });
        await trx('coupons').where({ code, status: 'AVAILABLE' }).update({ status: 'FROZEN', order_id: xid });
      });
      await db.transaction(async (trx) => {
        await trx('tcc_fence').where({ xid, participant: 'coupon' }).update({ status: 'CANCELLED' });
        await trx('coupons').where({ code, status: 'FROZEN' }).update({ status: 'AVAILABLE', order_id: null });
      });
    }
  })();
  const seen: string[] = [];
  try {
    for (let check = 0; check < 150; check++)
      seen.push(...((await verdicts())['coupons-match-fences']?.examples ?? []).filter((e) => e.startsWith(code)));
  } finally {
    writing = false;
    await writer;
  }
  expect(seen).toEqual([]);
});

test("a refund made in the day before the bills' period, on those bills, is not reported as unknown locally", async () => {
  // The bills are read from a day before the period (its first China day whole); the refund of that day is ours.
  const sku = await product({ available: 10, reserved: 0, sold: 0, total_in: 10 });
  const refunded = await order('REFUNDED', sku, 1, 'CANCELLED');
  const since = new Date(Date.now() - 3_600_000);
  const outRefundNo = `rf-${refunded}-P1`;
  await db('refunds').insert({
    out_refund_no: outRefundNo,
    order_id: refunded,
    out_trade_no: refunded,
    provider: 'sandbox',
    trade_no: 'P1',
    amount: 100,
    currency: 'CNY',
    reason: 'buyer asked',
    status: 'SUCCEEDED',
    created_at: new Date(since.getTime() - 2 * 3_600_000),
  });
  const at = new Date(since.getTime() - 2 * 3_600_000).toISOString();
  const rows: BillRow[] = [
    { kind: 'REFUND', outTradeNo: refunded, tradeNo: 'P1', outRefundNo, amount: 100, currency: 'CNY', at },
  ];
  const results = await checkInvariants({
    db,
    providerRows: rows,
    providerRowsSince: since,
    convergenceBoundMs: 60_000,
    maxExamples: Infinity,
  });
  const examples = results.find((r) => r.name === 'provider-refunds-match')!.examples.join(' ');
  // Before the fix: "<no>: refunded at the provider, no local refund".
  expect(examples).not.toContain(outRefundNo);
});

test("with the sandbox's bills, orders of other providers are not compared with them", async () => {
  const sku = await product({ available: 10, reserved: 0, sold: 0, total_in: 10 });
  const wechatOrder = await order('PAID', sku, 1, 'CONFIRMED');
  await db('orders').where({ order_id: wechatOrder }).update({ provider: 'wechat' });
  const sandboxOrder = await order('PAID', sku, 1, 'CONFIRMED');
  const results = await checkInvariants({
    db,
    providerRows: [],
    billsProvider: 'sandbox',
    convergenceBoundMs: 60_000,
    maxExamples: Infinity,
  });
  const examples = results.find((r) => r.name === 'money-matches-status')!.examples.join(' ');
  expect(examples).not.toContain(wechatOrder);
  // The sandbox's own order, with no payment on its bills, still is.
  expect(examples).toContain(sandboxOrder);
});
