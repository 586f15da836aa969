/**
 * Reconciliation end to end: real dev server, MySQL, the sandbox provider and its bill over HTTP.
 * Active queries are an hour away, so only callbacks or reconciliation can resolve an order; the sandbox
 * merchant id is unique to this file, so the bill and the local records of the day are this file's alone.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { billDateOf, reconciliationScheduleId } from '../src/contracts/reconciliation';
import { refundPayment } from '../src/activities/payments';
import { ensureReconciliationSchedules } from '../src/client/routes/ops';
import { createSandboxProvider } from '../src/providers/sandbox';
import { freshDatabase } from './support/env';
import { paidPaymentRow } from './support/payment-rows';
import { createProduct, startSystem, type TestSystem, userId, waitFor, waitForStatus } from './support/system';

let sys: TestSystem;
const DAY = 86_400_000;
/**
 * The system's reconciliation clock runs this far ahead of the real one: the tests pay orders now and reconcile their
 * day as the next morning would, once it has ended (a day still going on is refused). 0 for the real clock.
 */
let clockOffsetMs = DAY;
const merchantId = `m_recon_${randomBytes(4).toString('hex')}`;
const admin = () => ({ authorization: `Bearer ${sys.config.adminToken}` });

beforeAll(async () => {
  sys = await startSystem(
    {
      // A database of its own: the ops gauges read the latest completed run of the whole runs table, and the bill suite
      // completes sandbox runs of its own alongside (a CI run saw its 100,000-row run in this suite's gauge).
      DATABASE_URL: await freshDatabase('recon'),
      SANDBOX_MERCHANT_ID: merchantId,
      QUERY_FIRST_DELAY: '1h',
      QUERY_MAX_INTERVAL: '1h',
      PAYMENT_TIMEOUT: '2h',
      PROVIDER_EXPIRY_MARGIN: '1m',
    },
    { now: () => Date.now() + clockOffsetMs },
  );
}, 60_000);

afterAll(async () => {
  await sys?.stop();
}, 120_000);

afterEach(async () => {
  await sys.sandbox('POST', '/_control/reset');
});

/** Starts (or joins) the run of a day through the API and waits until it has finished. */
async function reconcile(date: string, rerun = false): Promise<any> {
  const started = await sys.http('POST', '/ops/reconciliations', { provider: 'sandbox', date, rerun }, admin());
  expect([200, 202]).toContain(started.status);
  const report = await waitFor(
    async () => {
      const r = await sys.http('GET', `/ops/reconciliations/${started.body.id}?limit=1000`, undefined, admin());
      return r.body.status === 'COMPLETED' || r.body.status === 'FAILED' ? r.body : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 500, what: `reconciliation ${started.body.id} to finish` },
  );
  // The workflow completes right after the report is stored; never leave it to a worker this file is about to stop.
  await sys.client.workflow
    .getHandle(report.workflowId)
    .result()
    .catch(() => undefined);
  return report;
}

/** Runs `npm run reconcile` (through tsx) against this file's API for a sandbox day. */
function runReconcileCli(
  day: string,
  rerun: boolean,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [
        join(__dirname, '..', 'node_modules', 'tsx', 'dist', 'cli.mjs'),
        join(__dirname, '..', 'src', 'ops', 'reconcile.ts'),
        '--provider',
        'sandbox',
        '--date',
        day,
        ...(rerun ? ['--rerun'] : []),
        '--api',
        sys.apiUrl,
      ],
      { env: { ...process.env, ADMIN_TOKEN: sys.config.adminToken }, timeout: 90_000 },
      (err, out, errOut) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: out, stderr: errOut }),
    );
  });
}

/** Places an order for one unit of `sku` and pays it at the sandbox; returns the order id and when it was paid. */
async function placeAndPay(sku: string): Promise<{ orderId: string; paidAt: string; tradeNo: string }> {
  // As the API asks: when setting the order up takes too long (503 ORDER_PENDING), retry with the same key.
  const body = { userId: userId(), items: [{ sku, quantity: 1 }] };
  const key = { 'idempotency-key': `recon-${randomBytes(8).toString('hex')}` };
  let created = await sys.http('POST', '/orders', body, key);
  for (let retry = 0; created.status === 503 && retry < 5; retry++)
    created = await sys.http('POST', '/orders', body, key);
  if (created.status !== 201 && created.status !== 200)
    throw new Error(`order not created: ${created.status} ${JSON.stringify(created.body)}`);
  // A replay can answer before the provider payment exists (empty paymentUrl): the buyer can only pay once it does.
  if (!created.body.payment?.paymentUrl) {
    await waitFor(async () => (await sys.http('GET', `/orders/${created.body.orderId}`)).body.payment?.paymentUrl, {
      timeoutMs: 60_000,
      what: 'the payment URL',
    });
  }
  const paid = await sys.sandbox('POST', `/v1/payments/${created.body.orderId}/pay`, {});
  if (paid.status !== 200) throw new Error(`not paid: ${paid.status} ${JSON.stringify(paid.body)}`);
  return { orderId: created.body.orderId, paidAt: paid.body.paidAt, tradeNo: paid.body.tradeNo };
}

async function inParallel<T>(count: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        results[i] = await fn(i);
      }
    }),
  );
  return results;
}

async function statuses(orderIds: string[]): Promise<Record<string, number>> {
  const rows = (await sys
    .db('orders')
    .whereIn('order_id', orderIds)
    .groupBy('status')
    .select('status')
    .count({ n: '*' })) as { status: string; n: number }[];
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
}

function sumTotals(reports: any[]): Record<string, number> {
  const sum: Record<string, number> = {};
  for (const r of reports)
    for (const [cls, n] of Object.entries(r.totals as Record<string, number>)) sum[cls] = (sum[cls] ?? 0) + n;
  return sum;
}

/** Every bill day the given payments fall on (one, unless the test ran across China's midnight). */
const daysOf = (paid: { paidAt: string }[]) => [...new Set(paid.map((p) => billDateOf(new Date(p.paidAt).getTime())))];

const ORDERS = 200;
let paidOrders: { orderId: string; paidAt: string; tradeNo: string }[] = [];

describe('lost callbacks', () => {
  test('with 30% of notifications dropped and no active queries, one run finds and repairs every lost payment and a re-run finds no difference', async () => {
    const sku = await createProduct(sys, { price: 1500, stock: ORDERS + 20 });
    await sys.setFaults({ dropNotifications: 0.3 });
    const t0 = Date.now();
    const lap = (from: number) => `${((Date.now() - from) / 1000).toFixed(1)} s`;
    paidOrders = await inParallel(ORDERS, 20, () => placeAndPay(sku));
    const placed = lap(t0);
    const ids = paidOrders.map((o) => o.orderId);

    const notifications = (await sys.sandbox('GET', '/_control/notifications')).body.notifications as {
      outTradeNo: string;
      dropped: boolean;
    }[];
    const lost = new Set(notifications.filter((n) => ids.includes(n.outTradeNo) && n.dropped).map((n) => n.outTradeNo));
    expect(lost.size).toBeGreaterThan(20); // 30% of 200; fewer than 21 has a probability below 1e-9
    expect(lost.size).toBeLessThan(ORDERS);
    // Every delivered callback lands; the lost ones stay unpaid (queries are an hour away).
    await waitFor(async () => (await statuses(ids)).PAID === ORDERS - lost.size, {
      timeoutMs: 120_000,
      what: 'delivered callbacks to mark their orders PAID',
    });
    expect((await statuses(ids)).AWAITING_PAYMENT).toBe(lost.size);
    const callbacksDone = lap(t0);

    const days = daysOf(paidOrders);
    const t1 = Date.now();
    const first = await Promise.all(days.map((d) => reconcile(d)));
    const firstRun = lap(t1);
    for (const r of first) {
      expect(r.status).toBe('COMPLETED');
      expect(r.counted).toEqual(r.totals); // bill rows only here: the comparison's own counts equal the stored items
    }
    const totals = sumTotals(first);
    expect(totals).toEqual({
      MATCHED: ORDERS - lost.size,
      PAID_NOT_RECORDED: lost.size,
      MISSING_AT_PROVIDER: 0,
      AMOUNT_MISMATCH: 0,
      REFUND_MISMATCH: 0,
      UNKNOWN_TRADE: 0,
      DISPUTED: 0,
    });
    const found = first.flatMap((r) => r.items).filter((i: any) => i.class === 'PAID_NOT_RECORDED');
    expect(new Set(found.map((i: any) => i.outTradeNo))).toEqual(lost);
    expect(found.every((i: any) => i.repair.status === 'SIGNALLED' && i.severity === 'repaired')).toBe(true);

    // The repairs went through the order workflows: every order is PAID, each lost one with the repair in its timeline.
    await waitFor(async () => (await statuses(ids)).PAID === ORDERS, {
      timeoutMs: 120_000,
      what: 'repaired orders to become PAID',
    });
    const repaired = lap(t1);
    const [oneLost] = [...lost];
    const order = (await sys.http('GET', `/orders/${oneLost}`)).body;
    expect(order.timeline.map((e: { type: string }) => e.type)).toEqual(
      expect.arrayContaining(['RECONCILIATION_REPAIR', 'ORDER_PAID']),
    );
    expect((await sys.http('GET', `/admin/products/${sku}`, undefined, admin())).body.stock).toMatchObject({
      reserved: 0,
      sold: ORDERS,
    });

    // Asking again for the same day gives the same run; a re-run must be asked for, and finds nothing left.
    const again = await sys.http(
      'POST',
      '/ops/reconciliations',
      { provider: 'sandbox', date: days[0], rerun: false },
      admin(),
    );
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(first[0].id);
    const t2 = Date.now();
    const second = await Promise.all(days.map((d) => reconcile(d, true)));
    console.log(
      `[recon] ${ORDERS} orders placed and paid in ${placed}, callbacks settled by ${callbacksDone}; ${lost.size} lost; ` +
        `first run ${firstRun}, every order PAID ${repaired} after it started; re-run ${lap(t2)}`,
    );
    expect(second[0].id).toBe(`${first[0].id}-r2`);
    expect(sumTotals(second)).toEqual({
      MATCHED: ORDERS,
      PAID_NOT_RECORDED: 0,
      MISSING_AT_PROVIDER: 0,
      AMOUNT_MISMATCH: 0,
      REFUND_MISMATCH: 0,
      UNKNOWN_TRADE: 0,
      DISPUTED: 0,
    });
    expect(second.every((r) => r.differences === 0 && r.items.length === 0)).toBe(true);

    const metrics = (await fetch(`${sys.apiUrl}/metrics`).then((r) => r.text())).split('\n');
    expect(metrics).toContain(
      `payflow_reconciliation_differences{provider="sandbox",class="MATCHED"} ${second.at(-1).totals.MATCHED}`,
    );
    expect(metrics).toContain('payflow_reconciliation_differences{provider="sandbox",class="PAID_NOT_RECORDED"} 0');
  }, 420_000);
});

/** The bill day of the ghost payment the differences test records, which the CLI test reconciles again. */
let differencesDay: string | undefined;

describe('differences that need a person', () => {
  test('a tampered local amount, a refund recorded twice and a payment the provider never saw are reported in their classes and left alone', async () => {
    const sku = await createProduct(sys, { price: 2000, stock: 5 });
    const [tampered, refunded] = await Promise.all([placeAndPay(sku), placeAndPay(sku)]);
    await waitForStatus(sys, tampered.orderId, ['PAID']);
    await waitForStatus(sys, refunded.orderId, ['PAID']);

    // Our record of one payment says 1 fen less than the buyer paid.
    await sys.db('payments').where({ out_trade_no: tampered.orderId }).update({ paid_amount: 1999 });
    // One refund made at the provider, recorded twice locally (a second refund number, same trade and amount).
    const provider = createSandboxProvider({ baseUrl: sys.sandboxUrl, secret: sys.config.sandboxSecret, merchantId });
    const refundNo = `rf-${refunded.orderId}-part`;
    await refundPayment(
      sys.db,
      { sandbox: provider },
      {
        orderId: refunded.orderId,
        provider: 'sandbox',
        tradeNo: refunded.tradeNo,
        outRefundNo: refundNo,
        amount: 500,
        currency: 'CNY',
        reason: 'partial refund',
      },
    );
    const original = await sys.db('refunds').where({ out_refund_no: refundNo }).first();
    await sys.db('refunds').insert({ ...original, out_refund_no: `${refundNo}-again`, refund_no: null });
    // A payment we recorded as paid that the provider does not know.
    const ghost = `ord_ghost${randomBytes(6).toString('hex')}`;
    const ghostPaidAt = new Date();
    await sys.db('payments').insert(
      paidPaymentRow({
        outTradeNo: ghost,
        tradeNo: `SBXGHOST${randomBytes(4).toString('hex')}`,
        amount: 700,
        paidAt: ghostPaidAt,
        provider: 'sandbox',
        merchantId,
      }),
    );

    const days = daysOf([tampered, refunded, { paidAt: ghostPaidAt.toISOString() }]);
    differencesDay = billDateOf(ghostPaidAt.getTime());
    const reports = await Promise.all(days.map((d) => reconcile(d, true)));
    const items = reports.flatMap((r) => r.items);
    const totals = sumTotals(reports);
    expect(totals).toMatchObject({
      AMOUNT_MISMATCH: 1,
      REFUND_MISMATCH: 1,
      MISSING_AT_PROVIDER: 1,
      PAID_NOT_RECORDED: 0,
      UNKNOWN_TRADE: 0,
    });
    expect(totals.MATCHED).toBe(paidOrders.length + 2); // earlier orders, the refunded order's payment, the real refund

    expect(items.find((i: any) => i.class === 'AMOUNT_MISMATCH')).toMatchObject({
      severity: 'review',
      detail: 'AMOUNT',
      outTradeNo: tampered.orderId,
      bill: { amount: 2000, currency: 'CNY' },
      local: { amount: 1999 },
      repair: { status: 'NONE' },
    });
    expect(items.find((i: any) => i.class === 'REFUND_MISMATCH')).toMatchObject({
      severity: 'review',
      detail: 'DUPLICATED',
      source: 'LOCAL',
      outRefundNo: `${refundNo}-again`,
      evidence: { duplicateOf: refundNo },
      repair: { status: 'NONE' },
    });
    expect(items.find((i: any) => i.class === 'MISSING_AT_PROVIDER')).toMatchObject({
      severity: 'critical',
      outTradeNo: ghost,
      local: { amount: 700 },
      repair: { status: 'NONE' },
    });
    expect(reports.reduce((n, r) => n + r.bySeverity.critical, 0)).toBe(1);

    // Nothing was "fixed": the records are as we left them and no order was touched by the run.
    expect(Number((await sys.db('payments').where({ out_trade_no: tampered.orderId }).first()).paid_amount)).toBe(1999);
    expect(
      await sys.db('refunds').where({ out_trade_no: refunded.orderId, status: 'SUCCEEDED' }).count({ n: '*' }),
    ).toEqual([{ n: 2 }]);
    expect(await statuses([tampered.orderId, refunded.orderId])).toEqual({ PAID: 2 });
    expect(
      await sys
        .db('order_events')
        .whereIn('order_id', [tampered.orderId, refunded.orderId, ghost])
        .where({ type: 'RECONCILIATION_REPAIR' }),
    ).toHaveLength(0);

    const metrics = (await fetch(`${sys.apiUrl}/metrics`).then((r) => r.text())).split('\n');
    expect(metrics).toContain('payflow_reconciliation_differences{provider="sandbox",class="MISSING_AT_PROVIDER"} 1');
  }, 120_000);

  test('money paid for a closed order is refunded once: by its workflow while it still watches, by the late-payment workflow once it has ended', async () => {
    const sku = await createProduct(sys, { price: 990, stock: 2 });
    // A: cancelled a moment ago; its workflow watches until the provider-side expiry, so the repair signals it.
    const created = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] });
    const watching = created.body.orderId as string;
    expect((await sys.http('POST', `/orders/${watching}/cancel`, {})).body.status).toBe('CANCELLED');
    // B: expired long ago; its workflow is gone (finished, and past retention), only the rows remain.
    const ended = `ord_old${randomBytes(6).toString('hex')}`;
    const expiresAt = new Date(Date.now() + 3_600_000);
    await sys.db('orders').insert({
      order_id: ended,
      user_id: userId(),
      status: 'EXPIRED',
      status_reason: 'PAYMENT_TIMEOUT',
      amount: 990,
      currency: 'CNY',
      provider: 'sandbox',
    });
    const opened = await sys.sandbox('POST', '/v1/payments', {
      outTradeNo: ended,
      amount: 990,
      currency: 'CNY',
      merchantId,
      notifyUrl: `${sys.apiUrl}/callbacks/sandbox`,
      expiresAt: expiresAt.toISOString(),
    });
    await sys.db('payments').insert({
      out_trade_no: ended,
      order_id: ended,
      provider: 'sandbox',
      merchant_id: merchantId,
      trade_no: opened.body.tradeNo,
      status: 'CLOSED',
      amount: 990,
      currency: 'CNY',
      expires_at: expiresAt,
    });

    // The provider still lets both buyers pay (Alipay's "closed before scan"), and both callbacks are lost.
    await sys.setFaults({ acceptPaymentAfterClose: true, dropNotifications: 1 });
    const paid = [
      await sys.sandbox('POST', `/v1/payments/${watching}/pay`, {}),
      await sys.sandbox('POST', `/v1/payments/${ended}/pay`, {}),
    ];
    expect(paid.map((p) => p.status)).toEqual([200, 200]);

    const reports = await Promise.all(daysOf(paid.map((p) => p.body)).map((d) => reconcile(d, true)));
    const items = reports.flatMap((r) => r.items);
    expect(items.find((i: any) => i.outTradeNo === watching)).toMatchObject({
      class: 'PAID_NOT_RECORDED',
      detail: 'ORDER_CANCELLED',
      repair: { status: 'SIGNALLED' },
    });
    expect(items.find((i: any) => i.outTradeNo === ended)).toMatchObject({
      class: 'PAID_NOT_RECORDED',
      detail: 'ORDER_EXPIRED',
      repair: { status: 'LATE_PAYMENT' },
    });
    for (const orderId of [watching, ended]) {
      const order = await waitForStatus(sys, orderId, ['REFUNDED'], 90_000);
      expect(order.timeline.map((e: { type: string }) => e.type)).toEqual(
        expect.arrayContaining(['RECONCILIATION_REPAIR', 'ORDER_REFUNDED']),
      );
      expect((await sys.sandbox('GET', `/v1/payments/${orderId}`)).body).toMatchObject({
        status: 'REFUNDED',
        refundedAmount: 990,
      });
    }
  }, 240_000);
});

describe('ops API and schedule', () => {
  test('the ops API requires the admin token, refuses bad or future days and unknown runs, and gives concurrent callers one run', async () => {
    expect((await sys.http('POST', '/ops/reconciliations', { provider: 'sandbox', date: '2021-03-04' })).status).toBe(
      401,
    );
    expect((await sys.http('GET', '/ops/reconciliations/reconcile-sandbox-2021-03-04')).status).toBe(401);
    const bad = await sys.http('POST', '/ops/reconciliations', { provider: 'sandbox', date: '2024-02-30' }, admin());
    expect(bad).toMatchObject({ status: 400, body: { error: 'VALIDATION_FAILED' } });
    const extra = await sys.http(
      'POST',
      '/ops/reconciliations',
      { provider: 'sandbox', date: '2024-02-03', force: true },
      admin(),
    );
    expect(extra.status).toBe(400);
    const future = await sys.http(
      'POST',
      '/ops/reconciliations',
      { provider: 'sandbox', date: billDateOf(Date.now() + 3 * 86_400_000) },
      admin(),
    );
    expect(future).toMatchObject({ status: 422, body: { error: 'BILL_NOT_AVAILABLE' } });
    expect(
      (await sys.http('GET', '/ops/reconciliations/reconcile-sandbox-1999-01-01', undefined, admin())).body.error,
    ).toBe('RECONCILIATION_NOT_FOUND');

    // A day of no business, picked at random so that no earlier test run's workflow has this id.
    const day = billDateOf(Date.UTC(2001, 0, 1) + Math.floor(Math.random() * 6000) * 86_400_000);
    const answers = await Promise.all(
      [1, 2, 3].map(() => sys.http('POST', '/ops/reconciliations', { provider: 'sandbox', date: day }, admin())),
    );
    expect(new Set(answers.map((a) => a.body.id))).toEqual(new Set([`reconcile-sandbox-${day}`]));
    expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 202]);
    const done = await reconcile(day);
    expect(done).toMatchObject({
      status: 'COMPLETED',
      attempt: 1,
      trigger: 'API',
      differences: 0,
      progress: { billRows: 0 },
    });
    const listed = await sys.http('GET', `/ops/reconciliations?provider=sandbox&date=${day}`, undefined, admin());
    expect(listed.body.runs.map((r: any) => r.id)).toEqual([`reconcile-sandbox-${day}`]);
  }, 60_000);

  test('a day that has not ended in the bill time zone is refused by the API and by npm run reconcile, and no run is opened', async () => {
    clockOffsetMs = 0;
    try {
      const today = billDateOf(Date.now());
      // Earlier tests reconciled today's orders as the next morning would; count what is there before.
      const runsOfToday = async () =>
        Number(
          (await sys.db('reconciliation_runs').where({ provider: 'sandbox', bill_date: today }).count({ n: '*' }))[0]!
            .n,
        );
      const before = await runsOfToday();
      const refused = await sys.http('POST', '/ops/reconciliations', { provider: 'sandbox', date: today }, admin());
      expect(refused).toMatchObject({ status: 422, body: { error: 'BILL_DAY_NOT_ENDED', date: today } });
      expect(refused.body.message).toContain(`sandbox bill day ${today} has not ended yet`);
      const rerun = await sys.http(
        'POST',
        '/ops/reconciliations',
        { provider: 'sandbox', date: today, rerun: true },
        admin(),
      );
      expect(rerun).toMatchObject({ status: 422, body: { error: 'BILL_DAY_NOT_ENDED' } });
      const { code, stdout, stderr } = await runReconcileCli(today, false);
      expect(code).toBe(1);
      expect(stdout).toBe('');
      expect(stderr).toMatch(/HTTP 422 BILL_DAY_NOT_ENDED .*has not ended yet/);
      // No run was opened: the next morning's Schedule opens the day's run and reconciles the whole day.
      expect(await runsOfToday()).toBe(before);
    } finally {
      clockOffsetMs = DAY;
    }
  }, 60_000);

  test('the daily Schedule is created idempotently and, when it fires, opens the run of the previous bill day', async () => {
    const config = { taskQueue: sys.config.taskQueue, reconciliationSchedule: '30 10 * * *' };
    const providers = {
      sandbox: createSandboxProvider({ baseUrl: sys.sandboxUrl, secret: sys.config.sandboxSecret, merchantId }),
    };
    const scheduleId = reconciliationScheduleId(sys.config.taskQueue, 'sandbox');
    try {
      expect(await ensureReconciliationSchedules(sys.client, config, providers)).toEqual([scheduleId]);
      expect(await ensureReconciliationSchedules(sys.client, config, providers)).toEqual([scheduleId]);
      const handle = sys.client.schedule.getHandle(scheduleId);
      const described = await handle.describe();
      expect(described.spec.timezone).toBe('Asia/Shanghai');
      expect(described.action).toMatchObject({
        type: 'startWorkflow',
        workflowType: 'scheduledReconciliation',
        taskQueue: sys.config.taskQueue,
        // Deployments sharing a namespace fire at the same instant: the id the server stamps the time on is their own.
        workflowId: `scheduled-reconcile-${sys.config.taskQueue}-sandbox`,
      });

      const yesterday = billDateOf(Date.now() - 86_400_000);
      const firedBefore = (await handle.describe()).info.recentActions.at(-1)?.action.workflow.workflowId;
      await handle.trigger();
      // The workflow the trigger started (its own id, whatever ran before), and the run of yesterday it opened.
      const firedId = await waitFor(
        async () => {
          const latest = (await handle.describe()).info.recentActions.at(-1)?.action.workflow.workflowId;
          return latest !== firedBefore ? latest : undefined;
        },
        { timeoutMs: 60_000, what: 'the workflow the trigger started' },
      );
      const fired = await sys.client.workflow.getHandle(firedId).result();
      expect(fired).toMatchObject({ date: yesterday });
      const run = await waitFor(
        async () => {
          const row = await sys.db('reconciliation_runs').where({ id: fired.runId }).first();
          return row && (row.status === 'COMPLETED' || row.status === 'FAILED') ? row : undefined;
        },
        { timeoutMs: 90_000, what: "the scheduled run of yesterday's bill" },
      );
      expect(run).toMatchObject({ status: 'COMPLETED', bill_date: yesterday });
      await sys.client.workflow.getHandle(run.workflow_id).result();
      // A run this firing created says so; one it found (a run of yesterday already made) was made before.
      if (fired.created) expect(run.trigger).toBe('SCHEDULE');

      // A firing that runs late (caught up after an outage, or backfilled) reconciles the day before the firing it was
      // meant for, not the day before now: before the fix a late firing reconciled the wrong day, and its own never.
      const firingDay = billDateOf(Date.now() - (40 + Math.floor(Math.random() * 300)) * 86_400_000);
      const firing = new Date(`${firingDay}T02:30:00Z`); // 10:30 in Asia/Shanghai, the cron above
      const meant = billDateOf(firing.getTime() - 86_400_000);
      await handle.backfill([
        { start: new Date(firing.getTime() - 60_000), end: new Date(firing.getTime() + 60_000), overlap: 'ALLOW_ALL' },
      ]);
      const late = await waitFor(
        async () => {
          const row = await sys
            .db('reconciliation_runs')
            .where({ provider: 'sandbox', bill_date: meant, trigger: 'SCHEDULE' })
            .first();
          return row && (row.status === 'COMPLETED' || row.status === 'FAILED') ? row : undefined;
        },
        { timeoutMs: 90_000, what: `the backfilled firing's run of ${meant}` },
      );
      expect(late).toMatchObject({ status: 'COMPLETED' });
    } finally {
      await sys.client.schedule
        .getHandle(scheduleId)
        .delete()
        .catch(() => undefined);
    }
  }, 150_000);

  test('npm run reconcile shows the progress, prints the report and exits 2 when differences need a person', async () => {
    // The day of the differences above (not "now": the suite may run across midnight in the bill time zone), reconciled
    // as the next morning would (the system's clock is a day ahead: see clockOffsetMs).
    const day = differencesDay ?? billDateOf(Date.now());
    const { code, stdout, stderr } = await runReconcileCli(day, true);
    expect(stderr).toBe('');
    expect(stdout).toMatch(new RegExp(`reconcile-sandbox-${day}-r\\d+: new run of the sandbox bill of ${day}`));
    expect(stdout).toMatch(/MISSING_AT_PROVIDER\s+CRITICAL/);
    expect(stdout).toContain('Needs a person');
    expect(stdout).toMatch(new RegExp(`/ops/reconciliations/reconcile-sandbox-${day}-r\\d+/items/<id>/resolution`));
    expect(code).toBe(2); // the tampered amount, the duplicate refund and the ghost payment are still there, unresolved
  }, 120_000);

  test('every metric the alert rules use is exported by the API or the worker, or is a Temporal SDK metric', async () => {
    const rules = readFileSync(join(__dirname, '..', 'ops', 'alerts', 'payflow-rules.yml'), 'utf8');
    const exprs = rules
      .split(/^\s+expr:/m)
      .slice(1)
      .map((rest) => rest.split(/^\s+for:/m)[0]!);
    const used = new Set(exprs.flatMap((expr) => expr.match(/\b(payflow|temporal)_[a-z_]+\b/g) ?? []));
    expect(used.size).toBeGreaterThan(10);
    const exported = await fetch(`${sys.apiUrl}/metrics`).then((r) => r.text());
    // Names the SDK's Prometheus exporter emits (countersTotalSuffix, seconds), as seen from a worker of this build.
    const sdk = [
      'temporal_workflow_task_execution_failed_total',
      'temporal_activity_schedule_to_start_latency_bucket',
      'temporal_num_pollers',
    ];
    const missing = [...used].filter(
      (name) =>
        !(name.startsWith('temporal_') ? sdk.includes(name) : new RegExp(`^# TYPE ${name} `, 'm').test(exported)),
    );
    expect(missing).toEqual([]);
    // The worker counted how orders were paid in this file: by callback, and by reconciliation repairs.
    expect(exported).toMatch(/^payflow_orders_settled_total\{status="PAID",via="callback"\} [1-9]/m);
    expect(exported).toMatch(/^payflow_orders_settled_total\{status="PAID",via="reconciliation"\} [1-9]/m);
    expect(rules.match(/^\s+- alert: /gm)?.length).toBe(rules.match(/^\s+severity: (critical|warning)$/gm)?.length);
  });
});
