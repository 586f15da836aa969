/**
 * Resolving reconciliation differences: an operator marks a difference item handled (who, when, note) through the ops
 * API; the resolution belongs to the bill line (provider, merchant, bill day, row key, class and detail), so it carries
 * over to a re-run of the same day; the open-differences gauge counts only what nobody has resolved, per bill day.
 * The reconciliation activities are called directly (no workflow) with a fake bill source, the ops routes over HTTP on
 * a port of their own, against a database of this file's own.
 */
import { randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Knex } from 'knex';
import { createReconciliationActivities } from '../src/activities/reconciliation';
import { installErrorHandling } from '../src/client/errors';
import { createMetrics } from '../src/client/metrics';
import { refreshOpsGauges, registerOpsRoutes } from '../src/client/routes/ops';
import { billDateOf, billDayRange } from '../src/contracts/reconciliation';
import { createDb } from '../src/db/knex';
import type { BillRow, BillSource, PaymentProvider } from '../src/providers/types';
import { openRun } from '../src/reconciliation/runs';
import { freshDatabase } from './support/env';

const DAY = 86_400_000;
const TOKEN = 'resolve-admin-token';
const tag = randomBytes(3).toString('hex');
const merchantId = `m_resolve_${tag}`;
let db: Knex;
let app: FastifyInstance;
let base: string;

/** The bill the fake provider serves, per bill day. */
const bills = new Map<string, BillRow[]>();
const fakeSandbox = {
  name: 'sandbox',
  merchantId,
  async *billRows(date: string, options?: { fromRow?: number }) {
    for (const row of (bills.get(date) ?? []).slice(options?.fromRow ?? 0)) yield row;
  },
} as unknown as PaymentProvider & BillSource;

beforeAll(async () => {
  // A database of its own: the gauge reads every completed run of the last 31 days.
  db = createDb(await freshDatabase('resolve'), { poolMax: 5 });
  app = Fastify({ logger: false });
  installErrorHandling(app);
  registerOpsRoutes(app, {
    db,
    // The routes under test never reach Temporal (only starting a run does).
    client: {} as Client,
    config: { adminToken: TOKEN, taskQueue: `resolve-${tag}` },
    providers: { sandbox: fakeSandbox },
  });
  base = await app.listen({ port: 0, host: '127.0.0.1' });
}, 60_000);

afterAll(async () => {
  await app?.close();
  await db?.destroy();
});

const admin = { authorization: `Bearer ${TOKEN}` };

async function post(path: string, body: unknown, headers: Record<string, string>) {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

const resolve = (runId: string, itemId: number | string, body: unknown, headers: Record<string, string> = admin) =>
  post(`/ops/reconciliations/${runId}/items/${itemId}/resolution`, body, headers);

async function report(runId: string, query = 'limit=1000') {
  const res = await fetch(`${base}/ops/reconciliations/${runId}?${query}`, { headers: admin });
  expect(res.status).toBe(200);
  return (await res.json()) as any;
}

/** Runs the reconciliation of a day as the workflow would (a re-run when the day has a run already). */
async function reconcileDay(date: string): Promise<string> {
  const activities = createReconciliationActivities({
    db,
    providers: { sandbox: fakeSandbox },
    now: () => Date.now() + 2 * DAY,
  });
  const { run } = await openRun(db, { provider: 'sandbox', date, rerun: true, trigger: 'API' });
  await activities.beginReconciliationRun({ runId: run.id, workflowId: run.workflowId, workflowRunId: 'r' });
  const compared = await activities.compareBill({ runId: run.id });
  await activities.findLocalOnlyRecords({ runId: run.id });
  await activities.finishReconciliationRun({ runId: run.id, counted: compared.counts });
  return run.id;
}

/** An order paid locally at `paidAt`, as the order workflow leaves it. */
async function paidOrder(order: string, tradeNo: string, amount: number, paidAt: Date, currency = 'CNY') {
  await db('orders').insert({
    order_id: order,
    user_id: 'u-resolve',
    status: 'PAID',
    amount,
    currency,
    provider: 'sandbox',
    paid_trade_no: tradeNo,
  });
  await db('payments').insert({
    out_trade_no: order,
    order_id: order,
    provider: 'sandbox',
    merchant_id: merchantId,
    trade_no: tradeNo,
    status: 'PAID',
    amount,
    currency,
    paid_amount: amount,
    paid_currency: currency,
    paid_at: paidAt,
    expires_at: new Date(paidAt.getTime() + 3_600_000),
  });
}

const payment = (order: string, tradeNo: string, amount: number, at: Date, currency = 'CNY'): BillRow => ({
  kind: 'PAYMENT',
  outTradeNo: order,
  tradeNo,
  amount,
  currency,
  at: at.toISOString(),
});

/** The open-differences gauge as /metrics would show it: value per `bill_date/class`, zeros left out. */
async function openGauge(): Promise<Record<string, number>> {
  const metrics = createMetrics({ defaultMetrics: false });
  await refreshOpsGauges(db, metrics, ['sandbox']);
  const out: Record<string, number> = {};
  for (const v of (await metrics.reconciliationOpenDifferences.get()).values) {
    expect(v.labels.provider).toBe('sandbox');
    if (v.value) out[`${v.labels.bill_date}/${v.labels.class}`] = v.value;
  }
  return out;
}

/** The day `daysAgo` bill days before today (China time, the sandbox's), and an instant inside it. */
function day(daysAgo: number): { date: string; at: (hours: number) => Date } {
  const date = billDateOf(Date.now() - daysAgo * DAY);
  const start = billDayRange(date)!.start.getTime();
  return { date, at: (hours) => new Date(start + hours * 3_600_000) };
}

// Day A: one matched payment, a trade we never created (UNKNOWN_TRADE), a payment we recorded that the bill lacks
// (MISSING_AT_PROVIDER) and a tampered local amount (AMOUNT_MISMATCH).
const A = day(3);
const ids = {
  matched: `ord_match${tag}`,
  unknown: `ord_unknown${tag}`,
  missing: `ord_missing${tag}`,
  tampered: `ord_tamper${tag}`,
};
let runA1: string;
let items: Record<'matched' | 'unknown' | 'missing' | 'tampered', number>;

describe('resolving a difference', () => {
  beforeAll(async () => {
    await paidOrder(ids.matched, `T-match${tag}`, 1000, A.at(1));
    await paidOrder(ids.missing, `T-missing${tag}`, 700, A.at(2));
    await paidOrder(ids.tampered, `T-tamper${tag}`, 2000, A.at(3));
    await db('payments').where({ out_trade_no: ids.tampered }).update({ paid_amount: 1999 });
    bills.set(A.date, [
      payment(ids.matched, `T-match${tag}`, 1000, A.at(1)),
      payment(ids.unknown, `T-unknown${tag}`, 500, A.at(1.5)),
      payment(ids.tampered, `T-tamper${tag}`, 2000, A.at(3)),
    ]);
    runA1 = await reconcileDay(A.date);
    const all = (await report(runA1, 'limit=1000&class=MATCHED,UNKNOWN_TRADE,MISSING_AT_PROVIDER,AMOUNT_MISMATCH'))
      .items as Array<{ id: number; outTradeNo: string; class: string }>;
    const idOf = (order: string) => all.find((i) => i.outTradeNo === order)!.id;
    items = {
      matched: idOf(ids.matched),
      unknown: idOf(ids.unknown),
      missing: idOf(ids.missing),
      tampered: idOf(ids.tampered),
    };
    expect(all.map((i) => i.class).sort()).toEqual([
      'AMOUNT_MISMATCH',
      'MATCHED',
      'MISSING_AT_PROVIDER',
      'UNKNOWN_TRADE',
    ]);
  }, 60_000);

  test("needs the admin token and a body of operator (1-64 characters, not the reconciliation's own name) and note (3-500 characters), nothing else", async () => {
    const good = { operator: 'alice', note: 'refunded by hand at the provider, ticket PAY-1' };
    expect((await resolve(runA1, items.unknown, good, {})).status).toBe(401);
    expect((await resolve(runA1, items.unknown, good, { authorization: 'Bearer wrong-token-of-19c' })).status).toBe(
      401,
    );
    for (const bad of [
      {},
      { operator: 'alice' },
      { note: 'a fine note' },
      { operator: '', note: 'a fine note' },
      { operator: '   ', note: 'a fine note' },
      { operator: 'a'.repeat(65), note: 'a fine note' },
      // The name the reconciliation signs its own resolutions with (a later bill settled the line): never a person's.
      { operator: 'reconciliation', note: 'a fine note' },
      { operator: ' Reconciliation ', note: 'a fine note' },
      { operator: 'alice', note: 'ab' },
      { operator: 'alice', note: 'n'.repeat(501) },
      { operator: 7, note: 'a fine note' },
      { ...good, resolvedAt: '2020-01-01T00:00:00Z' },
    ]) {
      const answer = await resolve(runA1, items.unknown, bad);
      expect({ bad, status: answer.status, error: answer.body.error }).toEqual({
        bad,
        status: 400,
        error: 'VALIDATION_FAILED',
      });
    }
    // Nothing was stored (the limits themselves are accepted below: operator of 64, notes of 3 and 500 characters).
    expect(await db('reconciliation_resolutions').count({ n: '*' })).toEqual([{ n: 0 }]);
  });

  test('an unknown run or item is 404, an item of another run is 404, a MATCHED item is 409', async () => {
    const good = { operator: 'alice', note: 'checked with the provider' };
    expect(await resolve('reconcile-sandbox-1999-01-01', items.unknown, good)).toMatchObject({
      status: 404,
      body: { error: 'RECONCILIATION_ITEM_NOT_FOUND' },
    });
    expect(await resolve(runA1, 999_999_999, good)).toMatchObject({
      status: 404,
      body: { error: 'RECONCILIATION_ITEM_NOT_FOUND' },
    });
    const other = await openRun(db, { provider: 'sandbox', date: day(30).date, rerun: false, trigger: 'API' });
    expect(await resolve(other.run.id, items.unknown, good)).toMatchObject({
      status: 404,
      body: { error: 'RECONCILIATION_ITEM_NOT_FOUND' },
    });
    expect((await resolve(runA1, 'abc', good)).status).toBe(404);
    expect(await resolve(runA1, items.matched, good)).toMatchObject({
      status: 409,
      body: { error: 'ITEM_NOT_A_DIFFERENCE', class: 'MATCHED' },
    });
    expect(await db('reconciliation_resolutions').count({ n: '*' })).toEqual([{ n: 0 }]);
  });

  test('is stored once: resolving again, or at the same time, answers the first resolution and never overwrites who or when', async () => {
    const first = await resolve(runA1, items.unknown, { operator: 'a'.repeat(64), note: 'abc' });
    expect(first.status).toBe(201);
    expect(first.body).toMatchObject({
      id: items.unknown,
      class: 'UNKNOWN_TRADE',
      outTradeNo: ids.unknown,
      resolution: { operator: 'a'.repeat(64), note: 'abc', runId: runA1, itemId: items.unknown },
    });
    expect(Date.parse(first.body.resolution.resolvedAt)).toBeGreaterThan(Date.now() - 60_000);

    const again = await resolve(runA1, items.unknown, { operator: 'bob', note: 'something else entirely' });
    expect(again).toEqual({ status: 200, body: first.body });

    // Two operators at once on another item: one resolution, both told the same one.
    const both = await Promise.all([
      resolve(runA1, items.tampered, { operator: 'carol', note: 'n'.repeat(500) }),
      resolve(runA1, items.tampered, { operator: 'dave', note: 'local row corrected, ticket PAY-2' }),
    ]);
    expect(both.map((b) => b.status).sort()).toEqual([200, 201]);
    expect(both[0]!.body.resolution).toEqual(both[1]!.body.resolution);
    expect(await db('reconciliation_resolutions').count({ n: '*' })).toEqual([{ n: 2 }]);

    // The report shows each item's resolution, filters on it, and counts what is still open.
    const shown = await report(runA1);
    const byId = new Map((shown.items as Array<{ id: number; resolution: unknown }>).map((i) => [i.id, i]));
    expect(byId.get(items.unknown)!.resolution).toEqual(first.body.resolution);
    expect(byId.get(items.missing)!.resolution).toBeNull();
    expect(shown).toMatchObject({
      differences: 3,
      resolved: 2,
      unresolved: { critical: 1, review: 0, repaired: 0 },
    });
    const open = await report(runA1, 'resolved=false');
    expect(open.items.map((i: { id: number }) => i.id)).toEqual([items.missing]);
    const done = await report(runA1, 'resolved=true');
    expect(done.items.map((i: { id: number }) => i.id).sort()).toEqual([items.unknown, items.tampered].sort());
  });

  test('carries over to a re-run of the same day, unless the line has become another difference', async () => {
    const before = (await report(runA1)).items as Array<{ id: number; resolution: unknown }>;
    // The local row of the tampered payment now says another currency: the same line, a new difference.
    await db('payments').where({ out_trade_no: ids.tampered }).update({ paid_amount: 2000, paid_currency: 'USD' });
    const runA2 = await reconcileDay(A.date);
    expect(runA2).toBe(`${runA1}-r2`);
    const after = (await report(runA2)).items as Array<{
      id: number;
      outTradeNo: string;
      class: string;
      detail: string;
      resolution: unknown;
    }>;
    const find = (order: string) => after.find((i) => i.outTradeNo === order)!;
    expect(find(ids.unknown).id).not.toBe(items.unknown);
    expect(find(ids.unknown).resolution).toEqual(before.find((i) => i.id === items.unknown)!.resolution);
    expect(find(ids.missing).resolution).toBeNull();
    expect(find(ids.tampered)).toMatchObject({ class: 'AMOUNT_MISMATCH', detail: 'CURRENCY', resolution: null });

    // Resolving the carried-over item on the re-run answers the resolution made on the first run.
    const again = await resolve(runA2, find(ids.unknown).id, { operator: 'erin', note: 'seen it again' });
    expect(again.status).toBe(200);
    expect(again.body.resolution).toMatchObject({ operator: 'a'.repeat(64), runId: runA1, itemId: items.unknown });
  });
});

describe('the open-differences gauge', () => {
  test('counts only unresolved differences, per bill day: a resolved item leaves it, a new one on another day appears on its own', async () => {
    const A2 = `${runA1}-r2`;
    // Day A's latest run: the critical MISSING_AT_PROVIDER and the tampered line's new CURRENCY difference are open.
    expect(await openGauge()).toEqual({
      [`${A.date}/MISSING_AT_PROVIDER`]: 1,
      [`${A.date}/AMOUNT_MISMATCH`]: 1,
    });
    const a2 = (await report(A2)).items as Array<{ id: number; outTradeNo: string }>;
    const idIn = (order: string) => a2.find((i) => i.outTradeNo === order)!.id;
    expect(
      (await resolve(A2, idIn(ids.missing), { operator: 'alice', note: 'provider confirmed; ticket PAY-3' })).status,
    ).toBe(201);
    expect(await openGauge()).toEqual({ [`${A.date}/AMOUNT_MISMATCH`]: 1 });
    expect((await resolve(A2, idIn(ids.tampered), { operator: 'alice', note: 'currency fixed upstream' })).status).toBe(
      201,
    );
    expect(await openGauge()).toEqual({});

    // A new difference on another day: its own series, whatever was resolved on day A.
    const B = day(2);
    await paidOrder(`ord_b${tag}`, `T-b${tag}`, 300, B.at(4));
    bills.set(B.date, []);
    const runB = await reconcileDay(B.date);
    expect(await openGauge()).toEqual({ [`${B.date}/MISSING_AT_PROVIDER`]: 1 });

    // The next day's clean run changes nothing for day B; a re-run of day A finds its resolved lines resolved still.
    const C = day(1);
    bills.set(C.date, []);
    await reconcileDay(C.date);
    await reconcileDay(A.date);
    expect(await openGauge()).toEqual({ [`${B.date}/MISSING_AT_PROVIDER`]: 1 });

    // Every day within the window is exported, each difference class at 0 when nothing is open (a resolved day's
    // alert resolves on a value, not on a vanished series).
    const metrics = createMetrics({ defaultMetrics: false });
    await refreshOpsGauges(db, metrics, ['sandbox']);
    const series = (await metrics.reconciliationOpenDifferences.get()).values;
    expect(new Set(series.map((v) => v.labels.bill_date))).toEqual(new Set([A.date, B.date, C.date]));
    expect(series.filter((v) => v.labels.bill_date === A.date).map((v) => [v.labels.class, v.value])).toEqual(
      expect.arrayContaining([
        ['MISSING_AT_PROVIDER', 0],
        ['AMOUNT_MISMATCH', 0],
        ['UNKNOWN_TRADE', 0],
      ]),
    );
    expect(series.some((v) => v.labels.class === 'MATCHED')).toBe(false);

    const b = (await report(runB)).items as Array<{ id: number }>;
    await resolve(runB, b[0]!.id, { operator: 'alice', note: 'provider confirmed; ticket PAY-4' });
    expect(await openGauge()).toEqual({});
  }, 60_000);

  test('a day whose latest run FAILED is counted until a run of that day completes, whatever later days do', async () => {
    const provider = `failed${randomBytes(3).toString('hex')}`;
    const metrics = createMetrics({ defaultMetrics: false });
    const date = (daysAgo: number) => new Date(Date.now() - daysAgo * DAY).toISOString().slice(0, 10);
    let attempt = 0;
    const run = async (billDate: string, status: 'FAILED' | 'COMPLETED' | 'RUNNING') => {
      attempt++;
      await db('reconciliation_runs').insert({
        id: `reconcile-${provider}-${billDate}-r${attempt}`,
        provider,
        bill_date: billDate,
        attempt,
        trigger: 'SCHEDULE',
        status,
        merchant_id: merchantId,
        workflow_id: `wf-${provider}-${attempt}`,
        ...(status === 'COMPLETED' ? { totals: JSON.stringify({ MATCHED: 1 }), finished_at: new Date() } : {}),
      });
    };
    const failedDays = async () => {
      await refreshOpsGauges(db, metrics, [provider]);
      return (await metrics.reconciliationFailedDays.get()).values.find((v) => v.labels.provider === provider)?.value;
    };
    expect(await failedDays()).toBe(0);
    await run(date(3), 'FAILED');
    expect(await failedDays()).toBe(1);
    await run(date(2), 'COMPLETED'); // the next day's clean run (it clears the stale alert, not this)
    expect(await failedDays()).toBe(1);
    await run(date(3), 'RUNNING'); // a re-run in progress: still counted (no resolve-and-fire per attempt)
    expect(await failedDays()).toBe(1);
    await db('reconciliation_runs')
      .where({ provider, bill_date: date(3), status: 'RUNNING' })
      .update({ status: 'FAILED' });
    expect(await failedDays()).toBe(1);
    await run(date(3), 'COMPLETED'); // the failed day run again
    expect(await failedDays()).toBe(0);
  });

  test("a day's difference stays until it is resolved or a re-run of its day shows it gone, whatever other days' runs find", async () => {
    const provider = `gauge${randomBytes(3).toString('hex')}`;
    const metrics = createMetrics({ defaultMetrics: false });
    const date = (daysAgo: number) => new Date(Date.now() - daysAgo * DAY).toISOString().slice(0, 10);
    let attempt = 0;
    const completed = async (billDate: string, differences: string[]) => {
      attempt++;
      const id = `reconcile-${provider}-${billDate}-r${attempt}`;
      await db('reconciliation_runs').insert({
        id,
        provider,
        bill_date: billDate,
        attempt,
        trigger: 'API',
        status: 'COMPLETED',
        merchant_id: merchantId,
        workflow_id: `wf-${provider}-${attempt}`,
        totals: JSON.stringify({ MATCHED: 10, MISSING_AT_PROVIDER: differences.length }),
        finished_at: new Date(Date.now() + attempt * 1000),
      });
      for (const key of differences)
        await db('reconciliation_items').insert({
          run_id: id,
          row_key: key,
          source: 'LOCAL',
          kind: 'PAYMENT',
          class: 'MISSING_AT_PROVIDER',
          detail: 'NOT_IN_BILL',
        });
      return id;
    };
    const open = async () => {
      await refreshOpsGauges(db, metrics, [provider]);
      return (await metrics.reconciliationOpenDifferences.get()).values
        .filter((v) => v.labels.provider === provider && v.labels.class === 'MISSING_AT_PROVIDER' && v.value > 0)
        .map((v) => `${v.labels.bill_date}=${v.value}`)
        .sort();
    };
    await completed(date(2), ['LP:x']);
    expect(await open()).toEqual([`${date(2)}=1`]);
    await completed(date(1), []); // the next day's clean run
    expect(await open()).toEqual([`${date(2)}=1`]);
    await completed(date(5), []); // a re-run of an older day
    expect(await open()).toEqual([`${date(2)}=1`]);
    const rerun = await completed(date(2), ['LP:x', 'LP:y']); // a re-run that finds one more
    expect(await open()).toEqual([`${date(2)}=2`]);
    const item = (await db('reconciliation_items').where({ run_id: rerun, row_key: 'LP:y' }).first('id')) as {
      id: number;
    };
    expect((await resolve(rerun, Number(item.id), { operator: 'ops', note: 'not ours' })).status).toBe(201);
    expect(await open()).toEqual([`${date(2)}=1`]);
    await completed(date(2), []); // a re-run of that day that no longer finds it
    expect(await open()).toEqual([]);
  });
});
