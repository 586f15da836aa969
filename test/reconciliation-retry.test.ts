/**
 * When a reconciliation run may run and how it waits for its bill: a bill the provider has not published yet
 * (BILL_NOT_READY) is retried with backoff until it is there, and a run of a bill day that has not ended is refused
 * by the workflow's own first step even when it is started directly (the API refuses it before: see
 * test/reconciliation.test.ts). A worker of its own with a stub bill source; no sandbox, no orders.
 */
import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { MockActivityEnvironment } from '@temporalio/testing';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { createReconciliationActivities } from '../src/activities/reconciliation';
import type { Knex } from 'knex';
import { keepEnsuringReconciliationSchedules } from '../src/client/routes/ops';
import { createMetrics } from '../src/client/metrics';
import { billDateOf, billDayRange } from '../src/contracts/reconciliation';
import { createDb } from '../src/db/knex';
import { type BillRow, ProviderBusinessError, type ProviderRegistry } from '../src/providers/types';
import { startReconciliation } from '../src/reconciliation/runs';
import { createWorker } from '../src/workers/worker';
import { TEST_ENV, testBundlePath } from './support/env';
import { paidPaymentRow } from './support/payment-rows';
import { installQuietRuntime } from './support/runtime';

const tag = randomBytes(3).toString('hex');
const merchantId = `m_retry_${tag}`;
const taskQueue = `recon-retry-${tag}`;

let db: Knex;
let client: Client;
let connection: NativeConnection;
let worker: Worker;
let running: Promise<void>;

/**
 * What the stub bill source does: fail the first `notReady` downloads as not published yet, then serve `rows`; the
 * first download breaks off (a transport fault) after `breakAt` rows, and a download that resumes takes `skipMs` per
 * row before the resume point (as Stripe pages through a day from its start).
 */
const bill = {
  notReady: 0,
  downloads: 0,
  rows: [] as BillRow[],
  breakAt: 0,
  skipMs: 0,
  /** Rows of a given day, when a test serves several days (else `rows` for any day). */
  byDate: {} as Record<string, BillRow[]>,
  /** Downloads of these days wait for `release` (a run held in its bill phase). */
  held: new Set<string>(),
  release: Promise.resolve(),
};

const stub = {
  name: 'sandbox',
  merchantId,
  async *billRows(date: string, options?: { fromRow?: number }): AsyncIterable<BillRow> {
    bill.downloads += 1;
    if (bill.held.has(date)) await bill.release;
    if (bill.downloads <= bill.notReady)
      throw new ProviderBusinessError('BILL_NOT_READY', `stub has no trade bill for ${date} (yet)`);
    const from = options?.fromRow ?? 0;
    if (from > 0 && bill.skipMs) await new Promise((r) => setTimeout(r, from * bill.skipMs));
    for (const [i, row] of (bill.byDate[date] ?? bill.rows).entries()) {
      if (i < from) continue;
      if (bill.breakAt && bill.downloads === 1 && i === bill.breakAt) throw new Error('stub: connection reset by peer');
      yield row;
    }
  },
} as unknown as ProviderRegistry[string];

/** A day of no other business, at random so that no earlier test run's workflow has its id. */
const randomPastDay = () => billDateOf(Date.UTC(2003, 0, 1) + Math.floor(Math.random() * 5000) * 86_400_000);

/** A random past day with no run yet, nor on the day after it (earlier test runs leave theirs in the database). */
async function freshPastDay(): Promise<string> {
  for (;;) {
    const day = randomPastDay();
    const next = billDateOf(billDayRange(day)!.end.getTime() + 3_600_000);
    const [{ n }] = (await db('reconciliation_runs').whereIn('bill_date', [day, next]).count({ n: '*' })) as [
      { n: number },
    ];
    if (Number(n) === 0) return day;
  }
}

async function waitForEnd(runId: string): Promise<Record<string, any>> {
  for (const deadline = Date.now() + 60_000; Date.now() < deadline;) {
    const row = await db('reconciliation_runs').where({ id: runId }).first();
    if (row.status === 'COMPLETED' || row.status === 'FAILED') return row;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`run ${runId} did not finish in 60 s`);
}

/** A payment row as the order's workflow leaves it once paid (PAID, paid in full at `paidAt`). */
const paidLocally = (outTradeNo: string, tradeNo: string, amount: number, paidAt: Date) =>
  paidPaymentRow({ outTradeNo, tradeNo, amount, paidAt, provider: 'sandbox', merchantId });

beforeAll(async () => {
  installQuietRuntime();
  db = createDb(TEST_ENV.databaseUrl, { poolMax: 5 });
  client = new Client({
    connection: await Connection.connect({ address: TEST_ENV.temporalAddress }),
    namespace: TEST_ENV.namespace,
  });
  connection = await NativeConnection.connect({ address: TEST_ENV.temporalAddress });
  worker = await createWorker({
    config: { temporalAddress: TEST_ENV.temporalAddress, temporalNamespace: TEST_ENV.namespace, taskQueue },
    db,
    providers: { sandbox: stub },
    connection,
    workflows: { workflowBundle: { codePath: testBundlePath() } },
  });
  running = worker.run();
}, 60_000);

afterAll(async () => {
  if (worker?.getState() === 'RUNNING') worker.shutdown();
  await running?.catch(() => undefined);
  await connection?.close();
  await db?.destroy();
});

beforeEach(() => {
  Object.assign(bill, {
    notReady: 0,
    downloads: 0,
    rows: [],
    breakAt: 0,
    skipMs: 0,
    byDate: {},
    held: new Set(),
    release: Promise.resolve(),
  });
});

test('a retry that re-reads a long stretch of the bill before its resume point heartbeats meanwhile, and the run completes', async () => {
  // 30 payments, each recorded here too (MATCHED: nothing to repair), in batches of 5; the first download breaks off at row 15; the retry's re-read of those
  // 15 rows takes 4.5 s, more than the 3 s heartbeat timeout. Before the fix nothing heartbeated during it: every
  // retry timed out the same way, resuming at row 15 again, until the run failed.
  const day = randomPastDay();
  const paidAt = new Date(billDayRange(day)!.start.getTime() + 3_600_000);
  const suffix = randomBytes(3).toString('hex');
  bill.rows = Array.from({ length: 30 }, (_, i) => ({
    kind: 'PAYMENT',
    outTradeNo: `skip${suffix}_${i}`,
    tradeNo: `SBXSKIP${suffix}${i}`,
    amount: 100,
    currency: 'CNY',
    at: paidAt.toISOString(),
  })) as BillRow[];
  await db('payments').insert(bill.rows.map((row) => paidLocally(row.outTradeNo, row.tradeNo, 100, paidAt)));
  bill.breakAt = 15;
  bill.skipMs = 300;
  const { run } = await startReconciliation(
    db,
    client,
    taskQueue,
    { provider: 'sandbox', date: day, rerun: false, trigger: 'API' },
    { heartbeatTimeoutMs: 3_000, batchSize: 5 },
  );
  const done = await waitForEnd(run.id);
  expect({ status: done.status, error: done.error }).toEqual({ status: 'COMPLETED', error: null });
  expect(Number(done.bill_rows)).toBe(30);
  expect(Number(done.resumed_from_row)).toBe(15);
  expect(Number(done.bill_attempts)).toBe(2);
  expect(JSON.parse(done.totals)).toMatchObject({ MATCHED: 30, PAID_NOT_RECORDED: 0 });
}, 90_000);

test('a bill that is not published yet is downloaded again with backoff and the run completes once it is there', async () => {
  const day = randomPastDay();
  const paidAt = new Date(billDayRange(day)!.start.getTime() + 3_600_000);
  const outTradeNo = `retry${tag}_1`;
  const tradeNo = `SBXRETRY${tag}1`;
  await db('payments').insert(paidLocally(outTradeNo, tradeNo, 1200, paidAt));
  bill.notReady = 2;
  bill.rows = [
    { kind: 'PAYMENT', outTradeNo, tradeNo, amount: 1200, currency: 'CNY', at: paidAt.toISOString() },
  ] as BillRow[];

  const { run } = await startReconciliation(db, client, taskQueue, {
    provider: 'sandbox',
    date: day,
    rerun: false,
    trigger: 'API',
  });
  const done = await waitForEnd(run.id);
  expect({ status: done.status, error: done.error }).toEqual({ status: 'COMPLETED', error: null });
  expect(bill.downloads).toBe(3);
  expect(Number(done.bill_attempts)).toBe(3);
  expect(JSON.parse(done.totals)).toMatchObject({ MATCHED: 1, MISSING_AT_PROVIDER: 0 });
}, 90_000);

test('a run of a bill day that has not ended, started directly (not through the API), fails before reading any bill', async () => {
  const today = billDateOf(Date.now());
  bill.rows = [];
  const { run } = await startReconciliation(db, client, taskQueue, {
    provider: 'sandbox',
    date: today,
    rerun: true,
    trigger: 'API',
  });
  try {
    const done = await waitForEnd(run.id);
    expect(done.status).toBe('FAILED');
    expect(done.error).toContain(`the sandbox bill day ${today} has not ended yet`);
    expect(bill.downloads).toBe(0);
  } finally {
    // The shared test database: leave no run of today behind for other suites.
    await db('reconciliation_runs').where({ id: run.id }).delete();
  }
}, 60_000);

test("the daily Schedule's request for a day whose run FAILED runs it again; an operator's plain request does not", async () => {
  const day = await freshPastDay();
  const failedId = `reconcile-sandbox-${day}`;
  await db('reconciliation_runs').insert({
    id: failedId,
    workflow_id: `${failedId}-failed`,
    provider: 'sandbox',
    bill_date: day,
    attempt: 1,
    trigger: 'SCHEDULE',
    status: 'FAILED',
    error: 'the bill was not published yet (asked too early)',
  });
  // Plain (the API without rerun): the FAILED run is the answer, nothing starts.
  const plain = await startReconciliation(db, client, taskQueue, {
    provider: 'sandbox',
    date: day,
    rerun: false,
    trigger: 'API',
  });
  expect(plain).toMatchObject({ created: false, run: { id: failedId, status: 'FAILED' } });
  // The Schedule's request (startScheduledReconciliation): a new attempt, which completes.
  const scheduled = await startReconciliation(db, client, taskQueue, {
    provider: 'sandbox',
    date: day,
    rerun: false,
    rerunFailed: true,
    trigger: 'SCHEDULE',
  });
  expect(scheduled.created).toBe(true);
  expect(scheduled.run.attempt).toBe(2);
  const done = await waitForEnd(scheduled.run.id);
  expect(done.status).toBe('COMPLETED');
  // Asked again for a day whose latest run completed: that run, no third.
  const again = await startReconciliation(db, client, taskQueue, {
    provider: 'sandbox',
    date: day,
    rerun: false,
    rerunFailed: true,
    trigger: 'SCHEDULE',
  });
  expect(again).toMatchObject({ created: false, run: { id: scheduled.run.id, status: 'COMPLETED' } });
}, 60_000);

test('each scheduled firing runs again the days of the week before its own whose latest run FAILED; not a day whose latest run completed, nor one older', async () => {
  const dayAfter = (d: string) => billDateOf(billDayRange(d)!.end.getTime() + 3_600_000);
  const daysBefore = (d: string, n: number) =>
    billDateOf(billDayRange(d)!.start.getTime() - n * 86_400_000 + 3_600_000);
  // A day whose week before and day after have no run of any earlier test (runs of random days build up in the shared
  // database, and a FAILED one in the window would be run again too).
  let day: string;
  for (;;) {
    day = await freshPastDay();
    const [{ n }] = (await db('reconciliation_runs')
      .where({ provider: 'sandbox' })
      .whereBetween('bill_date', [daysBefore(day, 8), day])
      .count({ n: '*' })) as [{ n: number }];
    if (Number(n) === 0) break;
  }
  const firingDay = dayAfter(day);
  const failedRun = async (date: string, attempt: number, status = 'FAILED') => {
    const id = `reconcile-sandbox-${date}${attempt > 1 ? `-r${attempt}` : ''}-${tag}`;
    await db('reconciliation_runs').insert({
      id,
      workflow_id: `${id}-wf`,
      provider: 'sandbox',
      bill_date: date,
      attempt,
      trigger: 'SCHEDULE',
      status,
      error: status === 'FAILED' ? 'the bill was not published yet (asked too early)' : null,
    });
  };
  // The day before the firing's own, failed; two days before, failed then completed on a second attempt; three days
  // before, failed on its third attempt (the Schedule's last: an operator's now); eight days before, failed (out of the
  // week: an operator's too).
  await failedRun(day, 1);
  const settled = daysBefore(day, 1);
  const exhausted = daysBefore(day, 2);
  const old = daysBefore(day, 7);
  await failedRun(settled, 1);
  await failedRun(settled, 2, 'COMPLETED');
  for (const attempt of [1, 2, 3]) await failedRun(exhausted, attempt);
  await failedRun(old, 1);
  // A firing whose day is `firingDay` (the Schedule's daysBack counts from now when no scheduled time is set).
  const daysBack = Math.round((Date.parse(billDateOf(Date.now())) - Date.parse(firingDay)) / 86_400_000);
  const result = await client.workflow.execute('scheduledReconciliation', {
    taskQueue,
    workflowId: `scheduled-retry-${tag}-${day}`,
    args: [{ provider: 'sandbox', daysBack }],
  });
  expect(result).toMatchObject({ date: firingDay, retriedDays: [day] });
  const latest = async (date: string) =>
    db('reconciliation_runs').where({ provider: 'sandbox', bill_date: date }).orderBy('attempt', 'desc').first();
  const rerun = await latest(day);
  expect(rerun).toMatchObject({ attempt: 2, trigger: 'SCHEDULE' });
  expect((await waitForEnd(rerun.id)).status).toBe('COMPLETED');
  expect((await waitForEnd(result.runId)).status).toBe('COMPLETED');
  expect(await latest(settled)).toMatchObject({ attempt: 2, status: 'COMPLETED' });
  expect(await latest(old)).toMatchObject({ attempt: 1, status: 'FAILED' });
  expect(await latest(exhausted)).toMatchObject({ attempt: 3, status: 'FAILED' });
  // The same firing again (a retried activity, or the Schedule's catch-up): nothing more is started.
  const again = await client.workflow.execute('scheduledReconciliation', {
    taskQueue,
    workflowId: `scheduled-retry-${tag}-${day}-again`,
    args: [{ provider: 'sandbox', daysBack }],
  });
  expect(again).toMatchObject({ runId: result.runId, created: false, retriedDays: [] });
  expect((await latest(day)).attempt).toBe(2);
  // Leave no FAILED day behind for another run of this suite.
  await db('reconciliation_runs').whereIn('bill_date', [exhausted, old]).where({ provider: 'sandbox' }).delete();
}, 90_000);

test('a bill day with no run at all after a reconciled one (its firing failed before writing the row) is run by the next firing, once', async () => {
  const day = await quietWeek();
  const before = billDateOf(billDayRange(day)!.start.getTime() - 86_400_000 + 3_600_000);
  // The day before was reconciled; the firing for `day` failed before it wrote anything (MySQL down for the step's
  // retries), so `day` has no row, and the firing after it is for the next day.
  const id = `reconcile-sandbox-${before}-${tag}`;
  await db('reconciliation_runs').insert({
    id,
    workflow_id: `${id}-wf`,
    provider: 'sandbox',
    bill_date: before,
    attempt: 1,
    trigger: 'SCHEDULE',
    status: 'COMPLETED',
  });
  const fired = await fireScheduleAfter(day, 'after-gap');
  expect(fired).toMatchObject({ retriedDays: [], resumedDays: [], missedDays: [day] });
  const run = await db('reconciliation_runs').where({ provider: 'sandbox', bill_date: day }).first();
  expect(run).toMatchObject({ attempt: 1, trigger: 'SCHEDULE' });
  expect((await waitForEnd(run.id)).status).toBe('COMPLETED');
  expect((await waitForEnd(fired.runId)).status).toBe('COMPLETED');
  // The same firing again: the day has its run now, nothing more is started.
  expect(await fireScheduleAfter(day, 'after-gap-again')).toMatchObject({ missedDays: [] });
  expect(await db('reconciliation_runs').where({ provider: 'sandbox', bill_date: day }).count({ n: '*' })).toEqual([
    { n: 1 },
  ]);
}, 90_000);

test('a week with no run at all (a new deployment) is not reconciled by the first firing', async () => {
  const day = await quietWeek();
  expect(await fireScheduleAfter(day, 'first-firing')).toMatchObject({ missedDays: [] });
  expect(await db('reconciliation_runs').where({ provider: 'sandbox', bill_date: day }).count({ n: '*' })).toEqual([
    { n: 0 },
  ]);
}, 90_000);

/** A random past day whose week before and day after have no run (a FAILED or open one there would be run too). */
async function quietWeek(): Promise<string> {
  for (;;) {
    const day = await freshPastDay();
    const weekBefore = billDateOf(billDayRange(day)!.start.getTime() - 8 * 86_400_000 + 3_600_000);
    const [{ n }] = (await db('reconciliation_runs')
      .where({ provider: 'sandbox' })
      .whereBetween('bill_date', [weekBefore, day])
      .count({ n: '*' })) as [{ n: number }];
    if (Number(n) === 0) return day;
  }
}

/** Waits until a run has asked the stub for its bill (and, when its day is held, waits there). */
async function waitForDownload(): Promise<void> {
  for (const deadline = Date.now() + 30_000; bill.downloads === 0;) {
    if (Date.now() > deadline) throw new Error('the run did not reach its bill in 30 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The daily Schedule's firing for the day after `day` (its daysBack counted from today). */
function fireScheduleAfter(day: string, id: string) {
  const firingDay = billDateOf(billDayRange(day)!.end.getTime() + 3_600_000);
  const daysBack = Math.round((Date.parse(billDateOf(Date.now())) - Date.parse(firingDay)) / 86_400_000);
  return client.workflow.execute('scheduledReconciliation', {
    taskQueue,
    workflowId: `scheduled-${id}-${tag}-${day}`,
    args: [{ provider: 'sandbox', daysBack }],
  });
}

/** An operator's run of the day (the API's, without rerun), waited for until it ends; its row. */
async function reconcile(date: string): Promise<Record<string, any>> {
  const { run } = await startReconciliation(db, client, taskQueue, {
    provider: 'sandbox',
    date,
    rerun: false,
    trigger: 'API',
  });
  return waitForEnd(run.id);
}

/** A run of a quiet day started and held in its bill download until `release` is called. */
async function startHeldRun() {
  const day = await quietWeek();
  let release!: () => void;
  bill.release = new Promise<void>((r) => (release = r));
  bill.held.add(day);
  const { run } = await startReconciliation(db, client, taskQueue, {
    provider: 'sandbox',
    date: day,
    rerun: false,
    trigger: 'API',
  });
  return { day, run, release };
}

test('a run cancelled through Temporal is marked FAILED, and the next firing of the Schedule runs its day again', async () => {
  const { day, run, release } = await startHeldRun();
  try {
    await waitForDownload();
    const handle = client.workflow.getHandle(run.workflowId);
    await handle.cancel();
    await expect(handle.result()).rejects.toThrow();
    // Left RUNNING before: no firing asked for the day again, no alert counted it.
    expect(await db('reconciliation_runs').where({ id: run.id }).first()).toMatchObject({
      status: 'FAILED',
      error: expect.stringMatching(/cancelled/),
    });
  } finally {
    release();
  }
  const fired = await fireScheduleAfter(day, 'after-cancel');
  expect(fired).toMatchObject({ retriedDays: [day], resumedDays: [] });
  const latest = await db('reconciliation_runs')
    .where({ provider: 'sandbox', bill_date: day })
    .orderBy('attempt', 'desc')
    .first();
  expect(latest).toMatchObject({ attempt: 2 });
  expect((await waitForEnd(latest.id)).status).toBe('COMPLETED');
  expect((await waitForEnd(fired.runId)).status).toBe('COMPLETED');
}, 90_000);

test('a run whose workflow was terminated (it stays RUNNING: no workflow code ran) is started again by the next firing under its id, and completes', async () => {
  const { day, run, release } = await startHeldRun();
  const handle = client.workflow.getHandle(run.workflowId);
  try {
    await waitForDownload();
    const first = (await handle.describe()).runId;
    // Still in its bill phase: a firing joins it and starts nothing beside it.
    expect(await fireScheduleAfter(day, 'while-running')).toMatchObject({ retriedDays: [], resumedDays: [day] });
    expect((await handle.describe()).runId).toBe(first);
    await handle.terminate('an operator ended it in the Web UI');
    expect(await db('reconciliation_runs').where({ id: run.id }).first()).toMatchObject({ status: 'RUNNING' });
    // The next firing starts it again under its id: a new execution of the same run.
    expect(await fireScheduleAfter(day, 'after-terminate')).toMatchObject({ retriedDays: [], resumedDays: [day] });
    expect((await handle.describe()).runId).not.toBe(first);
  } finally {
    release();
  }
  expect((await waitForEnd(run.id)).status).toBe('COMPLETED');
  expect(await db('reconciliation_runs').where({ provider: 'sandbox', bill_date: day }).count({ n: '*' })).toEqual([
    { n: 1 },
  ]);
  // Completed: the next firing resumes nothing.
  expect(await fireScheduleAfter(day, 'after-terminate-again')).toMatchObject({ resumedDays: [] });
}, 90_000);

test("a run that has ended is not run again under its id (a workflow reset in the Web UI), and another workflow's failure leaves a run it does not own alone", async () => {
  const day = await quietWeek();
  const id = `reconcile-sandbox-${day}-${tag}`;
  await db('reconciliation_runs').insert({
    id,
    workflow_id: `${id}-wf`,
    provider: 'sandbox',
    bill_date: day,
    attempt: 1,
    trigger: 'SCHEDULE',
    status: 'FAILED',
    error: 'the bill was not published yet (asked too early)',
  });
  // The same workflow id run again (what a reset does): it completed and stored its items while the row said FAILED.
  const reset = client.workflow.execute('reconciliation', {
    taskQueue,
    workflowId: `${id}-wf`,
    args: [{ runId: id, provider: 'sandbox', date: day }],
  });
  await expect(reset).rejects.toMatchObject({
    cause: expect.objectContaining({ message: expect.stringMatching(/is FAILED: it is not run again under its id/) }),
  });
  expect(await db('reconciliation_runs').where({ id }).first()).toMatchObject({
    status: 'FAILED',
    error: 'the bill was not published yet (asked too early)',
  });
  expect(await db('reconciliation_items').where({ run_id: id }).count({ n: '*' })).toEqual([{ n: 0 }]);
  // A run waiting for its own workflow, and another deployment's workflow started for it: refused, and its failure
  // does not mark the owner's run FAILED.
  await db('reconciliation_runs').where({ id }).update({ status: 'QUEUED', error: null });
  const foreign = client.workflow.execute('reconciliation', {
    taskQueue,
    workflowId: `${id}-someone-else`,
    args: [{ runId: id, provider: 'sandbox', date: day }],
  });
  await expect(foreign).rejects.toMatchObject({
    cause: expect.objectContaining({ message: expect.stringMatching(/belongs to workflow .*-wf, not/) }),
  });
  expect(await db('reconciliation_runs').where({ id }).first()).toMatchObject({ status: 'QUEUED', error: null });
  await db('reconciliation_runs').where({ id }).delete();
}, 60_000);

test('the phase steps work only on an active run (a reset replays the opening and would compare an ended run again); a reset of an active run resumes it', async () => {
  const day = await quietWeek();
  const id = `reconcile-sandbox-${day}-${tag}`;
  await db('reconciliation_runs').insert({
    id,
    workflow_id: `${id}-wf`,
    workflow_run_id: 'execution-that-opened-it',
    provider: 'sandbox',
    bill_date: day,
    attempt: 1,
    trigger: 'SCHEDULE',
    status: 'RUNNING',
    phase: 'LOCAL',
  });
  const acts = createReconciliationActivities({ db, providers: { sandbox: stub } });
  const asExecution = (runId: string) =>
    new MockActivityEnvironment({ workflowExecution: { workflowId: `${id}-wf`, runId } } as never, {
      logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} },
    });
  const failureOf = (p: Promise<unknown>) =>
    p.then(
      () => undefined,
      (err: { type?: string }) => err.type,
    );
  // Active: the execution a reset made (beginRun's answer replayed, not run again) goes on with the run.
  expect(await asExecution('a-reset-execution').run(acts.findLocalOnlyRecords, { runId: id })).toEqual({
    payments: 0,
    refunds: 0,
  });
  // Ended: refused before it reads the bill or writes an item.
  await db('reconciliation_runs').where({ id }).update({ status: 'COMPLETED' });
  for (const step of [acts.compareBill, acts.findLocalOnlyRecords])
    expect(await failureOf(asExecution('a-reset-execution').run(step, { runId: id }))).toBe('RUN_NOT_ACTIVE');
  expect(bill.downloads).toBe(0);
  expect(await db('reconciliation_items').where({ run_id: id }).count({ n: '*' })).toEqual([{ n: 0 }]);
  await db('reconciliation_runs').where({ id }).delete();
});

test('a payment whose bill line falls on the day before our paid time (a second across midnight) is not reported missing from the bill; one in no bill still is', async () => {
  const day = await freshPastDay();
  const { end } = billDayRange(day)!;
  const next = billDateOf(end.getTime() + 3_600_000);
  const suffix = randomBytes(3).toString('hex');
  const payment = (n: string, paidAt: Date) => paidLocally(`mid${suffix}_${n}`, `SBXMID${suffix}${n}`, 900, paidAt);
  // The provider's line at 23:59:59.4 of `day`; our paid time (the notification's) 0.5 s after midnight.
  const straddling = payment('a', new Date(end.getTime() + 500));
  // Paid at noon of the next day, in no bill at all: still a critical difference.
  const missing = payment('b', new Date(end.getTime() + 12 * 3_600_000));
  await db('payments').insert([straddling, missing]);
  bill.byDate = {
    [day]: [
      {
        kind: 'PAYMENT',
        outTradeNo: straddling.out_trade_no,
        tradeNo: straddling.trade_no,
        amount: 900,
        currency: 'CNY',
        at: new Date(end.getTime() - 600).toISOString(),
      },
    ] as BillRow[],
    [next]: [],
  };
  const first = await reconcile(day);
  expect(first.status).toBe('COMPLETED');
  expect(JSON.parse(first.totals)).toMatchObject({ MATCHED: 1, MISSING_AT_PROVIDER: 0 });
  const second = await reconcile(next);
  expect(second.status).toBe('COMPLETED');
  const missingItems = await db('reconciliation_items')
    .where({ run_id: second.id, class: 'MISSING_AT_PROVIDER' })
    .pluck('out_trade_no');
  expect(missingItems).toEqual([missing.out_trade_no]);
}, 60_000);

test("a payment paid just before midnight by our clock and billed just after it by the provider's: the day's critical difference is resolved by the next day's run, which finds the line; one in no bill stays open", async () => {
  const day = await freshPastDay();
  const { end } = billDayRange(day)!;
  const next = billDateOf(end.getTime() + 3_600_000);
  const suffix = randomBytes(3).toString('hex');
  const payment = (n: string, paidAt: Date) => paidLocally(`eve${suffix}_${n}`, `SBXEVE${suffix}${n}`, 900, paidAt);
  // Our paid time 0.4 s before midnight; the provider's line 0.3 s after it, in the next day's bill.
  const straddling = payment('a', new Date(end.getTime() - 400));
  // Paid in the evening, in no bill at all.
  const missing = payment('b', new Date(end.getTime() - 3 * 3_600_000));
  await db('payments').insert([straddling, missing]);
  bill.byDate = {
    [day]: [],
    [next]: [
      {
        kind: 'PAYMENT',
        outTradeNo: straddling.out_trade_no,
        tradeNo: straddling.trade_no,
        amount: 900,
        currency: 'CNY',
        at: new Date(end.getTime() + 300).toISOString(),
      },
    ] as BillRow[],
  };
  const first = await reconcile(day);
  const openOf = async (runId: string) =>
    (await db('reconciliation_items as i')
      .leftJoin('reconciliation_resolutions as z', 'z.item_id', 'i.id')
      .where({ 'i.run_id': runId, 'i.class': 'MISSING_AT_PROVIDER' })
      .orderBy('i.out_trade_no')
      .select('i.out_trade_no', 'z.operator')) as { out_trade_no: string; operator: string | null }[];
  // The day's run comes first (the next day's bill is not out): both reported missing.
  expect(await openOf(first.id)).toEqual([
    { out_trade_no: straddling.out_trade_no, operator: null },
    { out_trade_no: missing.out_trade_no, operator: null },
  ]);
  const second = await reconcile(next);
  expect(JSON.parse(second.totals)).toMatchObject({ MATCHED: 1 });
  expect(await openOf(first.id)).toEqual([
    { out_trade_no: straddling.out_trade_no, operator: 'reconciliation' },
    { out_trade_no: missing.out_trade_no, operator: null },
  ]);
}, 60_000);

test('the daily Schedules are created again after a failure until they exist, and the gauge says whether they do', async () => {
  // Created once in the background, a failure (Temporal unreachable as the API started, or a refusal) left the service
  // without its daily reconciliation, and no alert could tell: the last-success gauge of a run that never ran is absent.
  const metrics = createMetrics();
  const ready = async () =>
    Object.fromEntries(
      (await metrics.reconciliationScheduleReady.get()).values.map((v) => [v.labels.provider, v.value]),
    );
  let calls = 0;
  const seenWhileFailing: Record<string, number>[] = [];
  const errors: unknown[] = [];
  const keeper = keepEnsuringReconciliationSchedules({
    ensure: async () => {
      calls++;
      if (calls > 1) seenWhileFailing.push(await ready());
      if (calls <= 2) throw new Error(`Temporal unreachable (${calls})`);
      return ['s-alipay', 's-wechat'];
    },
    providers: ['alipay', 'wechat'],
    metrics,
    logger: { error: (o: unknown) => errors.push(o), info: () => undefined },
    retryMs: [20, 40],
  });
  await keeper.done;
  expect(calls).toBe(3);
  expect(errors).toHaveLength(2);
  // Between the failures the gauge said 0 for each provider; once created, 1.
  expect(seenWhileFailing).toEqual([
    { alipay: 0, wechat: 0 },
    { alipay: 0, wechat: 0 },
  ]);
  expect(await ready()).toEqual({ alipay: 1, wechat: 1 });

  // Stopped (the API closing) while waiting a minute to retry: it ends at once, with no further attempt.
  let more = 0;
  let failed!: () => void;
  const firstFailure = new Promise<void>((resolve) => (failed = resolve));
  const stopped = keepEnsuringReconciliationSchedules({
    ensure: async () => {
      more++;
      throw new Error('refused');
    },
    providers: ['stripe'],
    metrics,
    logger: { error: () => failed(), info: () => undefined },
    retryMs: [60_000],
  });
  await firstFailure;
  const at = Date.now();
  stopped.stop();
  await stopped.done;
  expect(Date.now() - at).toBeLessThan(1_000);
  expect(more).toBe(1);
});
