/**
 * Reconciliation (对账) against a provider's daily bill: the activities the `reconciliation` workflow calls. The run
 * records and their read model are in src/reconciliation/runs.ts, the classification of a line in
 * src/reconciliation/classify.ts.
 *
 * Idempotency: every compared line is stored once under a unique (run, row key) — `P:<tradeNo>` for a bill
 * payment, `R:<outRefundNo>` for a bill refund, `DW:`/`DR:<disputeId>` for a dispute's money withdrawn/reinstated,
 * `LP:`/`LR:` for local records the bill lacks, `#<row>` appended when the bill repeats a key. A retried comparison resumes at the row its last heartbeat recorded, with the
 * counts up to that row; rows it meets again are found stored and counted from the store, never classified or
 * counted twice. The report's totals are computed from the stored items, and the counts the comparison kept
 * are stored beside them so that any disagreement would show.
 */
import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import type { Knex } from 'knex';
import { FailureType, businessFailure, retryableFailure } from '../contracts/failures';
import {
  AUTOMATIC_RESOLVER,
  type ReconciliationClass,
  type ReconciliationResult,
  type ReconciliationStatus,
  type ReconciliationTotals,
  billDateOf,
  billDayHasEnded,
  billDayRange,
  emptyTotals,
  reconciliationNotificationId,
} from '../contracts/reconciliation';
import { appendOrderEvent } from '../db/order-events';
import { BillFormatError } from '../providers/bill-csv';
import {
  type BillRow,
  type BillSource,
  type PaymentProvider,
  ProviderBusinessError,
  type ProviderRegistry,
} from '../providers/types';
import {
  type LocalPayment,
  type LocalRefund,
  type NewItem,
  billKey,
  classifyBillPayment,
  classifyDispute,
  classifyDuplicate,
  classifyRefund,
} from '../reconciliation/classify';
import {
  ACTIVE_STATUSES,
  type RunRow,
  failedDaysBefore,
  missingDaysBefore,
  openDaysBefore,
  isoOf,
  numberOf,
  startReconciliation,
} from '../reconciliation/runs';
import { resolveItem } from '../reconciliation/resolutions';
import { routePaymentNotification } from '../temporal/route-notification';

/** Dependencies of the reconciliation activities. */
export interface ReconciliationDeps {
  db: Knex;
  providers: ProviderRegistry;
  /** The clock that decides whether a bill day has ended (ms since the epoch); default Date.now (tests inject one). */
  now?: () => number;
}

const DEFAULT_BATCH = 500;
/** The adapters' ProviderBusinessError code for a bill the provider has not published yet. */
const PROVIDER_BILL_NOT_READY = 'BILL_NOT_READY';
const LOCAL_PAGE = 500;
const REPAIR_PAGE = 100;

/** The activity context, or undefined when called outside an activity (direct calls in tests and tools). */
function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

/** Worker shutdown or a cancelled workflow: stop between batches so the next attempt resumes from the heartbeat. */
function throwIfCancelled(ctx: Context | undefined): void {
  const signal = ctx?.cancellationSignal;
  if (signal?.aborted)
    throw signal.reason instanceof Error ? signal.reason : new CancelledFailure(String(signal.reason));
}

async function requireRun(db: Knex, runId: string): Promise<RunRow> {
  const row = (await db('reconciliation_runs').where({ id: runId }).first()) as RunRow | undefined;
  if (!row) throw businessFailure(FailureType.RUN_NOT_FOUND, `no reconciliation run ${runId}`);
  return row;
}

/**
 * The run a phase step (compare, local records, repairs) works on: still active. A workflow reset in the Web UI to a
 * point after beginRun replays its answer and would run the phases again on a run that has ended, writing items under a
 * report the alerts read. (A reset of a run still active resumes it: only one execution of its workflow id is open.)
 */
async function requireActiveRun(db: Knex, runId: string): Promise<RunRow> {
  const run = await requireRun(db, runId);
  if (!ACTIVE_STATUSES.includes(run.status)) throw runNotActive(run.id, run.status);
  return run;
}

function billSourceOf(providers: ProviderRegistry, name: string): PaymentProvider & BillSource {
  const provider = providers[name] as (PaymentProvider & Partial<BillSource>) | undefined;
  if (!provider)
    throw businessFailure(FailureType.UNKNOWN_PROVIDER, `provider ${name} is not configured on this worker`);
  if (typeof provider.billRows !== 'function')
    throw businessFailure(FailureType.NO_BILLS, `provider ${name} has no bill download`);
  return provider as PaymentProvider & BillSource;
}

/** Refuses a bill day that has not ended yet in the provider's bill time zone (its bill would be partial). */
function requireEndedDay(deps: ReconciliationDeps, provider: string, date: string): void {
  if (billDayHasEnded(date, provider, (deps.now ?? Date.now)())) return;
  const endsAt = billDayRange(date, provider)?.end.toISOString();
  throw businessFailure(
    FailureType.BILL_DAY_NOT_ENDED,
    `the ${provider} bill day ${date} has not ended yet (it ends at ${endsAt}); a day is reconciled only once it has ended`,
    { date, endsAt },
  );
}

function dayRange(run: RunRow): { start: Date; end: Date } {
  const range = billDayRange(run.bill_date, run.provider);
  if (!range) throw businessFailure(FailureType.BAD_DATE, `run ${run.id} has an invalid bill day ${run.bill_date}`);
  return range;
}

/** Marks the run RUNNING and records whose bill it is and how many rows to expect (the progress estimate). */
async function beginRun(
  deps: ReconciliationDeps,
  input: { runId: string; workflowId: string; workflowRunId: string },
): Promise<{ provider: string; date: string; merchantId: string; expectedRows: number }> {
  const { db } = deps;
  const run = await requireRun(db, input.runId);
  if (run.workflow_id !== input.workflowId)
    throw businessFailure(
      FailureType.RUN_OWNED_ELSEWHERE,
      `run ${run.id} belongs to workflow ${run.workflow_id}, not ${input.workflowId}`,
    );
  const provider = billSourceOf(deps.providers, run.provider);
  const { start, end } = dayRange(run);
  // Defence in depth (the API and the Schedule refuse such a day first): a run started directly for a day still
  // going on fails here, before it reads any bill.
  requireEndedDay(deps, run.provider, run.bill_date);
  const [{ n: payments }] = (await db('payments')
    .where({ provider: run.provider, merchant_id: provider.merchantId })
    .whereIn('status', ['PAID', 'REFUNDED'])
    .where('paid_at', '>=', start)
    .where('paid_at', '<', end)
    .count({ n: '*' })) as [{ n: number }];
  const [{ n: refunds }] = (await db('refunds as r')
    .join('payments as p', 'p.out_trade_no', 'r.out_trade_no')
    .where({ 'r.provider': run.provider, 'p.merchant_id': provider.merchantId, 'r.status': 'SUCCEEDED' })
    .where('r.refunded_at', '>=', start)
    .where('r.refunded_at', '<', end)
    .count({ n: '*' })) as [{ n: number }];
  const expectedRows = numberOf(payments) + numberOf(refunds);
  const opened = await db('reconciliation_runs')
    .where({ id: run.id })
    .whereIn('status', ACTIVE_STATUSES)
    .update({
      status: 'RUNNING',
      phase: 'BILL',
      merchant_id: provider.merchantId,
      workflow_run_id: input.workflowRunId,
      expected_rows: expectedRows,
      started_at: db.raw('COALESCE(started_at, CURRENT_TIMESTAMP(3))'),
      updated_at: db.fn.now(3),
    });
  // An ended run is never run again under its id (its report would change under the alerts that read it, and its row
  // would keep saying FAILED over a comparison that completed): a workflow reset in the Web UI fails here.
  if (opened !== 1) throw runNotActive(run.id, run.status);
  return { provider: run.provider, date: run.bill_date, merchantId: provider.merchantId, expectedRows };
}

/** What compareBill keeps in its heartbeat: the next row to read and the counts of every row before it. */
export interface BillProgress {
  phase: 'BILL';
  row: number;
  counts: ReconciliationTotals;
}

function resumePoint(details: unknown): BillProgress | undefined {
  const d = details as Partial<BillProgress> | undefined;
  if (
    !d ||
    d.phase !== 'BILL' ||
    typeof d.row !== 'number' ||
    d.row < 0 ||
    typeof d.counts !== 'object' ||
    d.counts === null
  )
    return undefined;
  return { phase: 'BILL', row: d.row, counts: { ...emptyTotals(), ...d.counts } };
}

/** Result of compareBill. */
export interface CompareBillResult {
  billRows: number;
  counts: ReconciliationTotals;
  resumedFromRow: number | null;
  attempt: number;
}

/**
 * Streams the provider's bill and compares it with local payments and refunds, a batch of rows per database
 * round trip, heartbeating `{ row, counts }` after each batch, and with the same progress on a timer (a third of the
 * heartbeat timeout) while no batch completes. A retry resumes at the heartbeat's row. The timer matters on a
 * resumed attempt: the provider re-reads the rows before the resume point (Stripe pages through the day's balance
 * transactions from its start, Alipay and WeChat Pay download and parse their file again), which takes minutes on a
 * large day; without a heartbeat meanwhile every retry timed out before its first batch and the run failed.
 */
async function compareBill(
  deps: ReconciliationDeps,
  input: { runId: string; batchSize?: number },
): Promise<CompareBillResult> {
  const { db } = deps;
  const ctx = activityContext();
  const run = await requireActiveRun(db, input.runId);
  const provider = billSourceOf(deps.providers, run.provider);
  const batchSize = Math.max(1, Math.min(input.batchSize ?? DEFAULT_BATCH, 5000));
  const resume = resumePoint(ctx?.info.heartbeatDetails);
  const counts = resume?.counts ?? emptyTotals();
  let next = resume?.row ?? 0;
  await db('reconciliation_runs')
    .where({ id: run.id })
    .update({
      phase: 'BILL',
      bill_attempts: db.raw('bill_attempts + 1'),
      bill_rows: next,
      ...(resume ? { resumed_from_row: next } : {}),
      updated_at: db.fn.now(3),
    });

  let batch: BillRow[] = [];
  // What is stored so far: `counts` and `next` change together, with no await between (a copy: the SDK sends
  // heartbeats later, throttled).
  const progress = (): BillProgress => ({ phase: 'BILL', row: next, counts: { ...counts } });
  const keepAlive = ctx
    ? setInterval(() => ctx.heartbeat(progress()), Math.max(1_000, (ctx.info.heartbeatTimeoutMs ?? 30_000) / 3))
    : undefined;
  const flush = async () => {
    const classes = await compareBatch(db, run.id, run.provider, provider.merchantId, batch, next);
    for (const cls of classes) counts[cls] += 1;
    next += batch.length;
    batch = [];
    ctx?.heartbeat(progress());
    await db('reconciliation_runs')
      .where({ id: run.id })
      .update({ bill_rows: next, updated_at: db.fn.now(3) });
    throwIfCancelled(ctx);
  };
  try {
    for await (const row of provider.billRows(run.bill_date, { fromRow: next })) {
      batch.push(row);
      if (batch.length >= batchSize) await flush();
    }
    if (batch.length > 0) await flush();
  } catch (err) {
    if (err instanceof BillFormatError)
      throw businessFailure(FailureType.BILL_MALFORMED, `${run.provider} bill of ${run.bill_date}: ${err.message}`);
    // Not published yet (the provider's code, src/providers/alipay.ts and wechat.ts): the bill of a day that has
    // ended appears some hours later (Alipay and WeChat by about 09:00-10:00 China time). Retried with the
    // workflow's backoff, about an hour, like a transport fault; only then does the run fail, with this reason.
    if (err instanceof ProviderBusinessError && err.code === PROVIDER_BILL_NOT_READY)
      throw retryableFailure(
        FailureType.BILL_NOT_PUBLISHED,
        `${run.provider} has not published the bill of ${run.bill_date} yet (download attempt ${ctx?.info.attempt ?? 1}; ` +
          `retried with backoff for about an hour before the run fails): ${err.message}`,
      );
    if (err instanceof ProviderBusinessError)
      throw businessFailure(
        FailureType.PROVIDER_REJECTED,
        `${run.provider} refused the bill of ${run.bill_date}: ${err.message}`,
      );
    throw err; // transport faults, truncation, cancellation: retried, resuming from the last heartbeat
  } finally {
    clearInterval(keepAlive);
  }
  return { billRows: next, counts, resumedFromRow: resume ? resume.row : null, attempt: ctx?.info.attempt ?? 1 };
}

/**
 * Compares one batch of bill rows (rows firstRowNo.. of the bill) and stores an item per row. A row already
 * stored at the same position (an earlier attempt got this far) is counted from the store; a key the bill
 * repeats at another position is a duplicate in the bill.
 */
async function compareBatch(
  db: Knex,
  runId: string,
  billProvider: string,
  merchantId: string,
  rows: BillRow[],
  firstRowNo: number,
): Promise<ReconciliationClass[]> {
  const keys = rows.map(billKey);
  const repeatKeys = keys.map((key, i) => `${key}#${firstRowNo + i}`);
  const stored = new Map<string, { rowNo: number | null; cls: ReconciliationClass }>();
  for (const r of (await db('reconciliation_items')
    .where({ run_id: runId })
    .whereIn('row_key', [...new Set([...keys, ...repeatKeys])])
    .select('row_key', 'row_no', 'class')) as Array<{
    row_key: string;
    row_no: number | null;
    class: ReconciliationClass;
  }>) {
    stored.set(r.row_key, { rowNo: r.row_no === null ? null : numberOf(r.row_no), cls: r.class });
  }
  // A dispute's line is shown beside the payment of its order (evidence), so its payment is read as well.
  const tradeNos = [...new Set(rows.filter((r) => r.kind !== 'REFUND').map((r) => r.outTradeNo))];
  const refundNos = [...new Set(rows.filter((r) => r.kind === 'REFUND' && r.outRefundNo).map((r) => r.outRefundNo!))];
  const payments = new Map<string, LocalPayment>();
  if (tradeNos.length) {
    for (const p of (await db('payments as p')
      .leftJoin('orders as o', 'o.order_id', 'p.order_id')
      .whereIn('p.out_trade_no', tradeNos)
      .select(
        'p.out_trade_no',
        'p.provider',
        'p.trade_no',
        'p.status',
        'p.amount',
        'p.currency',
        'p.paid_amount',
        'p.paid_currency',
        'o.status as order_status',
        'o.paid_trade_no',
      )) as LocalPayment[]) {
      payments.set(p.out_trade_no, p);
    }
  }
  const refunds = new Map<string, LocalRefund>();
  if (refundNos.length) {
    for (const r of (await db('refunds')
      .whereIn('out_refund_no', refundNos)
      .select('out_refund_no', 'out_trade_no', 'status', 'amount', 'currency')) as LocalRefund[]) {
      refunds.set(r.out_refund_no, r);
    }
  }

  const firstSeen = new Map<string, number>();
  const inserts: Record<string, unknown>[] = [];
  const classes: ReconciliationClass[] = [];
  rows.forEach((row, i) => {
    const rowNo = firstRowNo + i;
    let key = keys[i]!;
    const earlier = stored.get(key);
    if (earlier && earlier.rowNo === rowNo) {
      classes.push(earlier.cls); // stored by an earlier attempt: count it, do not classify again
      return;
    }
    const firstRow = earlier ? earlier.rowNo : firstSeen.get(key);
    let item: NewItem;
    if (firstRow !== undefined && firstRow !== null) {
      key = repeatKeys[i]!;
      const repeat = stored.get(key);
      if (repeat) {
        classes.push(repeat.cls);
        return;
      }
      item = classifyDuplicate(row, firstRow);
    } else {
      firstSeen.set(key, rowNo);
      item = classifyLine(row, payments, refunds, billProvider);
    }
    classes.push(item.class);
    inserts.push({
      run_id: runId,
      row_key: key.slice(0, 200),
      row_no: rowNo,
      source: 'BILL',
      kind: item.kind,
      class: item.class,
      detail: item.detail,
      out_trade_no: row.outTradeNo.slice(0, 64),
      trade_no: row.tradeNo.slice(0, 128),
      out_refund_no: row.outRefundNo?.slice(0, 128) ?? null,
      bill_amount: row.amount,
      bill_currency: row.currency,
      bill_at: new Date(row.at),
      local_amount: item.local_amount,
      local_currency: item.local_currency,
      evidence: Object.keys(item.evidence).length ? JSON.stringify({ merchantId, ...item.evidence }) : null,
      repair_status: item.repair_status,
    });
  });
  // A zombie attempt (heartbeat timed out, still running) may store the same rows: same keys, same content.
  if (inserts.length)
    await db('reconciliation_items').insert(inserts).onConflict(['run_id', 'row_key']).merge(['run_id']);
  return classes;
}

/** Classifies a bill line the run meets for the first time, by its kind. */
function classifyLine(
  row: BillRow,
  payments: Map<string, LocalPayment>,
  refunds: Map<string, LocalRefund>,
  billProvider: string,
): NewItem {
  switch (row.kind) {
    case 'PAYMENT':
      return classifyBillPayment(row, payments.get(row.outTradeNo), billProvider);
    case 'REFUND':
      return classifyRefund(row, refunds.get(row.outRefundNo ?? ''));
    case 'DISPUTE':
      return classifyDispute(row, payments.get(row.outTradeNo), billProvider);
  }
}

/**
 * Finds what we recorded for the day and the bill lacks: payments paid locally (MISSING_AT_PROVIDER, critical)
 * and succeeded refunds (REFUND_MISMATCH; DUPLICATED when another refund of the same trade and amount matched).
 * Stored items are skipped, so a retry simply continues.
 */
async function findLocalOnly(
  deps: ReconciliationDeps,
  input: { runId: string },
): Promise<{ payments: number; refunds: number }> {
  const { db } = deps;
  const ctx = activityContext();
  const run = await requireActiveRun(db, input.runId);
  const merchantId = run.merchant_id ?? billSourceOf(deps.providers, run.provider).merchantId;
  const { start, end } = dayRange(run);
  await db('reconciliation_runs')
    .where({ id: run.id })
    .update({ phase: 'LOCAL', updated_at: db.fn.now(3) });
  const found = { payments: 0, refunds: 0 };

  /** This run's item keyed `<prefix>:<column>` (a row the bill comparison already recorded). */
  const itemKeyed = (prefix: string, column: string) =>
    db('reconciliation_items as i')
      .where('i.run_id', run.id)
      .where('i.row_key', db.raw(`CONCAT('${prefix}:', ${column})`))
      .select(db.raw('1'));
  // The payment's line in the bill of the day before or after: our paid time and the provider's line time can fall on
  // either side of midnight (Stripe: the webhook's event time against the charge's balance transaction, a second
  // apart). Such a payment is in a bill, not missing from every one: no critical alarm at each midnight.
  const neighbours = [billDateOf(start.getTime() - 1, run.provider), billDateOf(end.getTime(), run.provider)];
  const inNeighbourBill = db('reconciliation_items as j')
    .join('reconciliation_runs as nr', 'nr.id', 'j.run_id')
    .where('nr.provider', run.provider)
    .whereIn('nr.bill_date', neighbours)
    .where('j.source', 'BILL')
    .where('j.row_key', db.raw("CONCAT('P:', p.trade_no)"))
    .select(db.raw('1'));

  for (let after = ''; ;) {
    const page = (await db('payments as p')
      .leftJoin('orders as o', 'o.order_id', 'p.order_id')
      .where({ 'p.provider': run.provider, 'p.merchant_id': merchantId })
      .whereIn('p.status', ['PAID', 'REFUNDED'])
      .where('p.paid_at', '>=', start)
      .where('p.paid_at', '<', end)
      .where('p.out_trade_no', '>', after)
      .whereNotExists(itemKeyed('P', 'p.trade_no'))
      .whereNotExists(itemKeyed('LP', 'p.out_trade_no'))
      .whereNotExists(inNeighbourBill)
      .orderBy('p.out_trade_no')
      .limit(LOCAL_PAGE)
      .select(
        'p.out_trade_no',
        'p.trade_no',
        'p.status',
        'p.amount',
        'p.currency',
        'p.paid_amount',
        'p.paid_currency',
        'p.paid_at',
        'o.status as order_status',
      )) as Array<LocalPayment & { paid_at: Date }>;
    if (page.length === 0) break;
    after = page.at(-1)!.out_trade_no;
    await db('reconciliation_items')
      .insert(
        page.map((p) => ({
          run_id: run.id,
          row_key: `LP:${p.out_trade_no}`,
          source: 'LOCAL',
          kind: 'PAYMENT',
          class: 'MISSING_AT_PROVIDER',
          detail: 'NOT_IN_BILL',
          out_trade_no: p.out_trade_no,
          trade_no: p.trade_no,
          local_amount: p.paid_amount ?? p.amount,
          local_currency: p.paid_currency ?? p.currency,
          evidence: JSON.stringify({
            merchantId,
            local: {
              paymentStatus: p.status,
              orderStatus: p.order_status,
              tradeNo: p.trade_no,
              paidAt: isoOf(p.paid_at),
              amount: numberOf(p.amount),
              paidAmount: p.paid_amount,
            },
            bill: null,
          }),
          repair_status: 'NONE',
        })),
      )
      .onConflict(['run_id', 'row_key'])
      .merge(['run_id']);
    found.payments += page.length;
    await progressLocal(db, run.id, found, ctx);
    if (page.length < LOCAL_PAGE) break;
  }

  for (let after = ''; ;) {
    const page = (await db('refunds as r')
      .join('payments as p', 'p.out_trade_no', 'r.out_trade_no')
      .where({ 'r.provider': run.provider, 'p.merchant_id': merchantId, 'r.status': 'SUCCEEDED' })
      .where('r.refunded_at', '>=', start)
      .where('r.refunded_at', '<', end)
      .where('r.out_refund_no', '>', after)
      .whereNotExists(itemKeyed('R', 'r.out_refund_no'))
      .whereNotExists(itemKeyed('LR', 'r.out_refund_no'))
      .orderBy('r.out_refund_no')
      .limit(LOCAL_PAGE)
      .select(
        'r.out_refund_no',
        'r.out_trade_no',
        'r.trade_no',
        'r.amount',
        'r.currency',
        'r.refunded_at',
        'r.reason',
      )) as Array<LocalRefund & { trade_no: string | null; refunded_at: Date; reason: string }>;
    if (page.length === 0) break;
    after = page.at(-1)!.out_refund_no;
    const items = [];
    for (const r of page) {
      // Recorded twice: another local refund of the same trade and amount is the one the provider made.
      const twin = (await db('refunds as r2')
        .join('reconciliation_items as i', function () {
          this.on('i.row_key', '=', db.raw("CONCAT('R:', r2.out_refund_no)")).andOnVal('i.run_id', '=', run.id);
        })
        .where({ 'r2.out_trade_no': r.out_trade_no, 'r2.amount': r.amount, 'i.class': 'MATCHED' })
        .whereNot('r2.out_refund_no', r.out_refund_no)
        .first('r2.out_refund_no')) as { out_refund_no: string } | undefined;
      items.push({
        run_id: run.id,
        row_key: `LR:${r.out_refund_no}`,
        source: 'LOCAL',
        kind: 'REFUND',
        class: 'REFUND_MISMATCH',
        detail: twin ? 'DUPLICATED' : 'MISSING_AT_PROVIDER',
        out_trade_no: r.out_trade_no,
        trade_no: r.trade_no,
        out_refund_no: r.out_refund_no,
        local_amount: r.amount,
        local_currency: r.currency,
        evidence: JSON.stringify({
          merchantId,
          local: {
            outRefundNo: r.out_refund_no,
            amount: numberOf(r.amount),
            currency: r.currency,
            refundedAt: isoOf(r.refunded_at),
            reason: r.reason,
          },
          bill: null,
          ...(twin ? { duplicateOf: twin.out_refund_no } : {}),
        }),
        repair_status: 'NONE',
      });
    }
    await db('reconciliation_items').insert(items).onConflict(['run_id', 'row_key']).merge(['run_id']);
    found.refunds += page.length;
    await progressLocal(db, run.id, found, ctx);
    if (page.length < LOCAL_PAGE) break;
  }
  await resolveBilledAfterMidnight(db, run);
  return found;
}

/**
 * The day before's payments reported missing from its bill whose line is in this run's bill, matched: paid a moment
 * before midnight by our clock, billed a moment after it by the provider's. The day before's run came first (a bill is
 * reconciled the morning after its day, when the next day's is not out) and could not look here, and its critical
 * difference stayed open for good; it is resolved now, by this run, with why. A payment in neither bill stays open.
 */
async function resolveBilledAfterMidnight(db: Knex, run: RunRow): Promise<void> {
  const { start } = dayRange(run);
  const dayBefore = billDateOf(start.getTime() - 1, run.provider);
  const open = (await db('reconciliation_items as i')
    .join('reconciliation_runs as r', 'r.id', 'i.run_id')
    // Any completed run of that day (a resolution belongs to the bill line, whichever run lists it: the alerts read the
    // latest completed one, which a later attempt still running or failed does not replace).
    .where({ 'r.provider': run.provider, 'r.bill_date': dayBefore, 'r.status': 'COMPLETED' })
    .where({ 'i.class': 'MISSING_AT_PROVIDER', 'i.detail': 'NOT_IN_BILL', 'i.kind': 'PAYMENT' })
    .whereExists(
      db('reconciliation_items as j')
        .where('j.run_id', run.id)
        .where('j.class', 'MATCHED')
        .whereRaw("j.row_key = CONCAT('P:', i.trade_no)")
        .select(db.raw('1')),
    )
    .select('i.run_id', 'i.id', 'i.row_key', 'r.merchant_id') // a resolution's key has the merchant too
    .orderBy('r.finished_at', 'asc')) as Array<{
    run_id: string;
    id: number;
    row_key: string;
    merchant_id: string | null;
  }>;
  const lines = new Map(open.map((item) => [`${item.merchant_id ?? ''}\n${item.row_key}`, item]));
  for (const item of lines.values())
    await resolveItem(db, item.run_id, numberOf(item.id), {
      operator: AUTOMATIC_RESOLVER,
      note: `its line is in the ${run.provider} bill of ${run.bill_date} (run ${run.id}), matched: paid just before midnight by our clock, billed just after it`,
    });
}

async function progressLocal(
  db: Knex,
  runId: string,
  found: { payments: number; refunds: number },
  ctx: Context | undefined,
): Promise<void> {
  ctx?.heartbeat({ phase: 'LOCAL', ...found });
  const [{ n }] = (await db('reconciliation_items').where({ run_id: runId, source: 'LOCAL' }).count({ n: '*' })) as [
    { n: number },
  ];
  await db('reconciliation_runs')
    .where({ id: runId })
    .update({ local_rows: numberOf(n), updated_at: db.fn.now(3) });
  throwIfCancelled(ctx);
}

/** Deadline of each Temporal call of a repair (the activity retries a repair that timed out). */
const REPAIR_CALL_TIMEOUT_MS = 10_000;

/**
 * Repairs every PAID_NOT_RECORDED item of the run: signals the order's live workflow with a synthetic,
 * stable notification id (the workflow deduplicates it, so a retry changes nothing), or, when the order's
 * workflow has finished, starts the late-payment workflow of that trade (id per trade: started once). Each
 * repair is recorded on its item and in the order's timeline, once.
 */
async function repairLostPayments(
  deps: ReconciliationDeps,
  input: { runId: string },
  client?: Client,
): Promise<{ repaired: number }> {
  const { db } = deps;
  const ctx = activityContext();
  const temporal = client ?? ctx?.client;
  if (!temporal) throw businessFailure(FailureType.NO_CLIENT, 'repairs need a Temporal client');
  const taskQueue = ctx?.info.taskQueue;
  if (!taskQueue)
    throw businessFailure(FailureType.NO_TASK_QUEUE, 'repairs run as an activity, on the order workflows task queue');
  const run = await requireActiveRun(db, input.runId);
  const provider = billSourceOf(deps.providers, run.provider);
  const [{ n: total }] = (await db('reconciliation_items')
    .where({ run_id: run.id, class: 'PAID_NOT_RECORDED' })
    .count({ n: '*' })) as [{ n: number }];
  await db('reconciliation_runs')
    .where({ id: run.id })
    .update({ phase: 'REPAIR', repairs_total: numberOf(total), updated_at: db.fn.now(3) });
  let repaired = 0;
  for (;;) {
    const page = (await db('reconciliation_items')
      .where({ run_id: run.id, class: 'PAID_NOT_RECORDED', repair_status: 'PENDING' })
      .orderBy('id')
      .limit(REPAIR_PAGE)
      .select('id', 'out_trade_no', 'trade_no', 'bill_amount', 'bill_currency', 'bill_at')) as Array<{
      id: number;
      out_trade_no: string;
      trade_no: string;
      bill_amount: number;
      bill_currency: string;
      bill_at: Date;
    }>;
    if (page.length === 0) break;
    for (const item of page) {
      const notificationId = reconciliationNotificationId(run.provider, item.trade_no);
      const routed = await routePaymentNotification(
        { db, client: temporal, taskQueue, callTimeoutMs: REPAIR_CALL_TIMEOUT_MS },
        {
          provider: run.provider,
          notificationId,
          outTradeNo: item.out_trade_no,
          tradeNo: item.trade_no,
          amount: numberOf(item.bill_amount),
          currency: item.bill_currency,
          merchantId: provider.merchantId,
          paidAt: new Date(item.bill_at).toISOString(),
        },
        {
          lateSummary: `Late payment ${item.trade_no} for order ${item.out_trade_no} (found by reconciliation ${run.id})`,
        },
      );
      const outcome = {
        status: routed.destination === 'LATE' ? 'LATE_PAYMENT' : routed.destination,
        detail: routed.detail,
      };
      await db.transaction(async (trx) => {
        const changed = await trx('reconciliation_items')
          .where({ id: item.id, repair_status: 'PENDING' })
          .update({
            repair_status: outcome.status,
            repair_detail: outcome.detail.slice(0, 255),
            repaired_at: trx.fn.now(3),
          });
        if (changed !== 1) return;
        await trx('reconciliation_runs')
          .where({ id: run.id })
          .update({ repairs_done: trx.raw('repairs_done + 1'), updated_at: trx.fn.now(3) });
        await appendOrderEvent(
          trx,
          item.out_trade_no,
          'RECONCILIATION_REPAIR',
          `Reconciliation ${run.id}: ${run.provider} lists payment ${item.trade_no} (${item.bill_amount} ${item.bill_currency}) that was not recorded; ${outcome.detail}`,
          { runId: run.id, tradeNo: item.trade_no, notificationId, action: outcome.status },
        );
      });
      repaired += 1;
      ctx?.heartbeat({ phase: 'REPAIR', repaired });
      throwIfCancelled(ctx);
    }
  }
  return { repaired };
}

/** Computes the report from the stored items, records it and completes the run (idempotent). */
async function finishRun(
  deps: ReconciliationDeps,
  input: { runId: string; counted: ReconciliationTotals },
): Promise<ReconciliationResult> {
  const { db } = deps;
  const totals = emptyTotals();
  const billTotals = emptyTotals();
  for (const r of (await db('reconciliation_items')
    .where({ run_id: input.runId })
    .groupBy('class', 'source')
    .select('class', 'source')
    .count({ n: '*' })) as Array<{
    class: ReconciliationClass;
    source: string;
    n: number;
  }>) {
    totals[r.class] += numberOf(r.n);
    if (r.source === 'BILL') billTotals[r.class] += numberOf(r.n);
  }
  const [{ n: repairedCount }] = (await db('reconciliation_items')
    .where({ run_id: input.runId })
    .whereIn('repair_status', ['SIGNALLED', 'LATE_PAYMENT'])
    .count({ n: '*' })) as [{ n: number }];
  const billRows = Object.values(billTotals).reduce((a, b) => a + b, 0);
  const mismatch = (Object.keys(billTotals) as ReconciliationClass[]).filter(
    (c) => billTotals[c] !== (input.counted[c] ?? 0),
  );
  const completed = await db('reconciliation_runs')
    .where({ id: input.runId })
    .whereIn('status', ACTIVE_STATUSES)
    .update({
      status: 'COMPLETED',
      phase: 'DONE',
      bill_rows: billRows,
      totals: JSON.stringify(totals),
      counted: JSON.stringify(input.counted),
      error: mismatch.length
        ? `the comparison counted ${mismatch.map((c) => `${c}=${input.counted[c]}`).join(', ')} but stored ${mismatch.map((c) => `${c}=${billTotals[c]}`).join(', ')}`
        : null,
      finished_at: db.fn.now(3),
      updated_at: db.fn.now(3),
    });
  if (completed !== 1) {
    // Completed by this very step (a retry after its answer was lost): the same report. Else it ended another way
    // (FAILED meanwhile): the run must not be reported completed while its row says otherwise.
    const row = (await db('reconciliation_runs').where({ id: input.runId }).first('status')) as
      { status: ReconciliationStatus } | undefined;
    if (row?.status !== 'COMPLETED') throw runNotActive(input.runId, row?.status ?? 'missing');
  }
  const differences = Object.values(totals).reduce((a, b) => a + b, 0) - totals.MATCHED;
  return { runId: input.runId, status: 'COMPLETED', billRows, totals, differences, repaired: numberOf(repairedCount) };
}

/** A run that has ended is not run (or completed) again under its id. */
function runNotActive(runId: string, status: string) {
  return businessFailure(
    FailureType.RUN_NOT_ACTIVE,
    `run ${runId} is ${status}: it is not run again under its id; ask for a re-run (rerun: true)`,
  );
}

/**
 * Records why a run failed (after the workflow gave up on an activity). Only the run's own workflow marks it: a
 * workflow refused with RUN_OWNED_ELSEWHERE (another deployment's, on a shared task queue) leaves the owner's run alone.
 * (`workflowId` is absent in the input of runs started before it was sent: unconditional then, as it was.)
 */
async function failRun(
  deps: ReconciliationDeps,
  input: { runId: string; error: string; workflowId?: string },
): Promise<void> {
  await deps
    .db('reconciliation_runs')
    .where({ id: input.runId })
    .modify((q) => {
      if (input.workflowId !== undefined) q.where({ workflow_id: input.workflowId });
    })
    .whereIn('status', ACTIVE_STATUSES)
    .update({
      status: 'FAILED',
      error: input.error.slice(0, 1024),
      finished_at: deps.db.fn.now(3),
      updated_at: deps.db.fn.now(3),
    });
}

/** For the scheduled workflow: opens the day's run (never a re-run) and starts its workflow, idempotently. */
async function startScheduledRun(
  deps: ReconciliationDeps,
  input: { provider: string; date: string },
): Promise<{
  runId: string;
  status: ReconciliationStatus;
  created: boolean;
  retriedDays: string[];
  resumedDays: string[];
  missedDays: string[];
}> {
  const ctx = activityContext();
  if (!ctx) throw businessFailure(FailureType.NO_CLIENT, 'startScheduledRun runs as an activity');
  billSourceOf(deps.providers, input.provider);
  requireEndedDay(deps, input.provider, input.date);
  const { run, created } = await startReconciliation(deps.db, ctx.client, ctx.info.taskQueue, {
    provider: input.provider,
    date: input.date,
    rerun: false,
    rerunFailed: true,
    trigger: 'SCHEDULE',
  });
  // The Schedule asks for one day per firing: a day whose run FAILED (its bill not published yet at the firing, the
  // provider down for the hour of retries) would never be asked for again, its chargebacks, lost payments and refund
  // failures never found, while the next day's clean run cleared the stale alert. Each firing runs those again.
  // Idempotent on retry: a day run again has an active (or newer) latest run, no longer FAILED.
  // Read before the failed days are started again (their new runs are open too, and are not what this looks for).
  const resumedDays = await openDaysBefore(deps.db, input.provider, input.date, FAILED_DAYS_RETRIED);
  /** Starts (or joins) a run of an earlier day for the Schedule; `rerunFailed`: a new run of a day whose run FAILED. */
  const startDay = (date: string, rerunFailed = false) =>
    startReconciliation(deps.db, ctx.client, ctx.info.taskQueue, {
      provider: input.provider,
      date,
      rerun: false,
      ...(rerunFailed ? { rerunFailed: true } : {}),
      trigger: 'SCHEDULE',
    });
  const retriedDays = await failedDaysBefore(deps.db, input.provider, input.date, FAILED_DAYS_RETRIED, {
    belowAttempt: AUTOMATIC_ATTEMPTS,
  });
  for (const date of retriedDays) await startDay(date, true);
  // A day whose run is still open from an earlier firing: its workflow is joined where it runs, and started again
  // under the same id where it is gone (terminated in the Web UI, which marks nothing). Its day was otherwise never
  // asked for again and no alert counted it: an open run is not FAILED, and the next day's clean run cleared the
  // stale alert.
  for (const date of resumedDays) await startDay(date);
  // A day with no run at all after one that has a run: its firing failed before it wrote the day's row, and nothing
  // else would ever ask for it (the retries above and the alerts count rows).
  const missedDays = await missingDaysBefore(deps.db, input.provider, input.date, FAILED_DAYS_RETRIED);
  for (const date of missedDays) await startDay(date);
  return { runId: run.id, status: run.status, created, retriedDays, resumedDays, missedDays };
}

/** How many bill days before its own a scheduled firing looks back for days whose latest run FAILED. */
export const FAILED_DAYS_RETRIED = 7;
/**
 * Runs of a day the Schedule makes at most (its own and two more): a day that fails every time (a malformed bill, a
 * provider that refuses it) is left to an operator, warned by PayflowReconciliationDayFailed, not retried all week.
 */
export const AUTOMATIC_ATTEMPTS = 3;

/** The reconciliation activities, for the worker's activity factory. */
export function createReconciliationActivities(deps: ReconciliationDeps) {
  return {
    beginReconciliationRun: (input: { runId: string; workflowId: string; workflowRunId: string }) =>
      beginRun(deps, input),
    compareBill: (input: { runId: string; batchSize?: number }) => compareBill(deps, input),
    findLocalOnlyRecords: (input: { runId: string }) => findLocalOnly(deps, input),
    repairLostPayments: (input: { runId: string }) => repairLostPayments(deps, input),
    finishReconciliationRun: (input: { runId: string; counted: ReconciliationTotals }) => finishRun(deps, input),
    failReconciliationRun: (input: { runId: string; error: string; workflowId?: string }) => failRun(deps, input),
    startScheduledReconciliation: (input: { provider: string; date: string }) => startScheduledRun(deps, input),
  };
}
