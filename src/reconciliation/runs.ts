/**
 * Reconciliation runs as MySQL records them: the read model the ops API serves (runs and their items), and opening a
 * run with its workflow, which the ops API and the daily schedule's activity share. The comparison itself is in
 * ./classify.ts (pure) and src/activities/reconciliation.ts (the workflow's activities).
 */
import { randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type { Knex } from 'knex';
import {
  CLASS_SEVERITY,
  type ReconciliationClass,
  type ReconciliationInput,
  type ReconciliationPhase,
  type ReconciliationStatus,
  type ReconciliationTotals,
  type ReconciliationTrigger,
  emptyTotals,
  reconciliationRunId,
} from '../contracts/reconciliation';

/** A run as the ops API shows it. */
export interface RunView {
  id: string;
  workflowId: string;
  provider: string;
  date: string;
  attempt: number;
  trigger: ReconciliationTrigger;
  status: ReconciliationStatus;
  phase: ReconciliationPhase | null;
  merchantId: string | null;
  workflowRunId: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  progress: {
    expectedRows: number | null;
    billRows: number;
    localRows: number;
    repairsTotal: number;
    repairsDone: number;
    billAttempts: number;
    resumedFromRow: number | null;
  };
  /** Count per class once COMPLETED (from the stored items). */
  totals: ReconciliationTotals | null;
  /** Count per class of the bill rows as the comparison counted them (audit: equals the bill part of totals). */
  counted: ReconciliationTotals | null;
  differences: number | null;
  bySeverity: { critical: number; review: number; repaired: number } | null;
  error: string | null;
}

/** A `reconciliation_runs` row as MySQL returns it. */
export interface RunRow {
  id: string;
  provider: string;
  bill_date: string;
  attempt: number;
  trigger: ReconciliationTrigger;
  status: ReconciliationStatus;
  phase: ReconciliationPhase | null;
  merchant_id: string | null;
  workflow_id: string;
  workflow_run_id: string | null;
  expected_rows: number | null;
  bill_rows: number;
  local_rows: number;
  repairs_total: number;
  repairs_done: number;
  bill_attempts: number;
  resumed_from_row: number | null;
  totals: string | null;
  counted: string | null;
  error: string | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
}

/** A DATETIME column as ISO 8601, or null. */
export const isoOf = (d: Date | null): string | null => (d ? new Date(d).toISOString() : null);
/** A numeric column (mysql2 returns DECIMAL and COUNT as strings) as a number; null counts as 0. */
export const numberOf = (v: unknown): number => Number(v ?? 0);

function toView(row: RunRow): RunView {
  const totals = row.totals
    ? ({ ...emptyTotals(), ...(JSON.parse(row.totals) as Partial<ReconciliationTotals>) } as ReconciliationTotals)
    : null;
  const bySeverity = totals
    ? (Object.entries(totals) as [ReconciliationClass, number][]).reduce(
        (acc, [cls, n]) => {
          const severity = CLASS_SEVERITY[cls];
          if (severity !== 'ok') acc[severity] += n;
          return acc;
        },
        { critical: 0, review: 0, repaired: 0 },
      )
    : null;
  return {
    id: row.id,
    workflowId: row.workflow_id,
    provider: row.provider,
    date: row.bill_date,
    attempt: numberOf(row.attempt),
    trigger: row.trigger,
    status: row.status,
    phase: row.phase,
    merchantId: row.merchant_id,
    workflowRunId: row.workflow_run_id,
    createdAt: isoOf(row.created_at)!,
    startedAt: isoOf(row.started_at),
    finishedAt: isoOf(row.finished_at),
    progress: {
      expectedRows: row.expected_rows === null ? null : numberOf(row.expected_rows),
      billRows: numberOf(row.bill_rows),
      localRows: numberOf(row.local_rows),
      repairsTotal: numberOf(row.repairs_total),
      repairsDone: numberOf(row.repairs_done),
      billAttempts: numberOf(row.bill_attempts),
      resumedFromRow: row.resumed_from_row === null ? null : numberOf(row.resumed_from_row),
    },
    totals,
    counted: row.counted ? (JSON.parse(row.counted) as ReconciliationTotals) : null,
    differences: totals ? Object.values(totals).reduce((a, b) => a + b, 0) - totals.MATCHED : null,
    bySeverity,
    error: row.error,
  };
}

/** Reads one run, or null. */
export async function readRun(db: Knex, id: string): Promise<RunView | null> {
  const row = (await db('reconciliation_runs').where({ id }).first()) as RunRow | undefined;
  return row ? toView(row) : null;
}

/** Runs of one provider (and day), newest first. */
export async function listRuns(
  db: Knex,
  filter: { provider?: string; date?: string; limit?: number },
): Promise<RunView[]> {
  const q = db('reconciliation_runs')
    .orderBy([
      { column: 'created_at', order: 'desc' },
      { column: 'attempt', order: 'desc' },
    ])
    .limit(filter.limit ?? 50);
  if (filter.provider) q.where({ provider: filter.provider });
  if (filter.date) q.where({ bill_date: filter.date });
  return ((await q) as RunRow[]).map(toView);
}

/** The request to open or reuse a run. */
export interface OpenRunRequest {
  provider: string;
  date: string;
  /** A new run even though the period already has one (refused while one is still in progress). */
  rerun: boolean;
  /**
   * A new run when the period's latest run FAILED (the daily Schedule: a day whose bill was asked for too early, or
   * whose run was cut short, is reconciled again when the Schedule asks for it again); otherwise as `rerun` says.
   */
  rerunFailed?: boolean;
  trigger: ReconciliationTrigger;
}

/** Statuses of a run still in progress: it may be (re)started, and its workflow may still write to it. */
export const ACTIVE_STATUSES: ReconciliationStatus[] = ['QUEUED', 'RUNNING'];

/**
 * The run of this provider and day: the latest existing one, or a new one (attempt 1, or the next attempt when
 * `rerun` asks for it and none is in progress). Concurrent callers get the same run: the unique
 * (provider, day, attempt) decides, and a loser re-reads.
 */
export async function openRun(db: Knex, request: OpenRunRequest): Promise<{ run: RunView; created: boolean }> {
  for (let tries = 0; tries < 5; tries += 1) {
    const latest = (await db('reconciliation_runs')
      .where({ provider: request.provider, bill_date: request.date })
      .orderBy('attempt', 'desc')
      .first()) as RunRow | undefined;
    const again = request.rerun || (request.rerunFailed === true && latest?.status === 'FAILED');
    if (latest && (!again || ACTIVE_STATUSES.includes(latest.status))) return { run: toView(latest), created: false };
    const attempt = (latest ? numberOf(latest.attempt) : 0) + 1;
    const id = reconciliationRunId(request.provider, request.date, attempt);
    try {
      // The workflow id is unique to this row: a Temporal namespace shared by several deployments (or a database
      // recreated under a long-lived server) never makes a run join another's execution of the same day.
      const workflowId = `${id}-${randomBytes(3).toString('hex')}`;
      await db('reconciliation_runs').insert({
        id,
        workflow_id: workflowId,
        provider: request.provider,
        bill_date: request.date,
        attempt,
        trigger: request.trigger,
        status: 'QUEUED',
      });
      return { run: (await readRun(db, id))!, created: true };
    } catch (err) {
      if ((err as { code?: string }).code !== 'ER_DUP_ENTRY') throw err;
    }
  }
  throw new Error(`could not open a reconciliation run for ${request.provider} ${request.date}: too much contention`);
}

/** Options of startReconciliation beyond the request. */
export interface StartOptions {
  heartbeatTimeoutMs?: number;
  batchSize?: number;
}

/**
 * Opens (or reuses) the run of a provider and day and makes sure its workflow runs. Idempotent: the same
 * request gives the same run; a run still QUEUED or RUNNING is (re)started with conflict policy USE_EXISTING, so
 * a live workflow is joined and one that died without finishing the run is started again (its stored items
 * make the new execution resume, not recount). A COMPLETED or FAILED run is returned as it is.
 */
export async function startReconciliation(
  db: Knex,
  client: Client,
  taskQueue: string,
  request: OpenRunRequest,
  options: StartOptions = {},
): Promise<{ run: RunView; created: boolean }> {
  const { run, created } = await openRun(db, request);
  if (!ACTIVE_STATUSES.includes(run.status)) return { run, created };
  const input: ReconciliationInput = { runId: run.id, provider: run.provider, date: run.date, ...options };
  await client.workflow.start('reconciliation', {
    workflowId: run.workflowId,
    taskQueue,
    args: [input],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
    staticSummary: `Reconcile ${run.provider} bill of ${run.date}${run.attempt > 1 ? ` (run ${run.attempt})` : ''}`,
  });
  return { run: (await readRun(db, run.id))!, created };
}

/** An operator's resolution of a difference, as the report shows it on every item of the same bill line. */
export interface ResolutionView {
  operator: string;
  note: string;
  resolvedAt: string;
  /** The run and item it was resolved on (an earlier run of the day when it carried over to a re-run). */
  runId: string;
  itemId: number;
}

/** One difference (or match) as the report lists it. */
export interface ItemView {
  id: number;
  class: ReconciliationClass;
  severity: (typeof CLASS_SEVERITY)[ReconciliationClass];
  detail: string | null;
  source: 'BILL' | 'LOCAL';
  kind: 'PAYMENT' | 'REFUND' | 'DISPUTE';
  rowNo: number | null;
  outTradeNo: string | null;
  tradeNo: string | null;
  outRefundNo: string | null;
  bill: { amount: number; currency: string; at: string | null } | null;
  local: { amount: number | null; currency: string | null } | null;
  evidence: Record<string, unknown>;
  repair: { status: string; detail: string | null; at: string | null };
  /** Who marked this difference handled, when and how; null while nobody has (always null for MATCHED). */
  resolution: ResolutionView | null;
}

/**
 * Joins `reconciliation_resolutions as z` to a query over `reconciliation_items as i` joined with
 * `reconciliation_runs as r`: the resolution of the item's bill line (provider, merchant, bill day, row key) with the
 * item's class and detail, wherever it was resolved. Shared by the report and the open-differences gauge.
 */
export function joinResolution(db: Knex, query: Knex.QueryBuilder): Knex.QueryBuilder {
  return query.leftJoin('reconciliation_resolutions as z', function () {
    this.on('z.provider', '=', 'r.provider')
      .andOn('z.merchant_id', '=', db.raw("COALESCE(r.merchant_id, '')"))
      .andOn('z.bill_date', '=', 'r.bill_date')
      .andOn('z.row_key', '=', 'i.row_key')
      .andOn('z.class', '=', 'i.class')
      .andOn('z.detail', '=', db.raw("COALESCE(i.detail, '')"));
  });
}

/** A run's items with the resolution of each (the columns toItemView reads). */
function itemsWithResolutions(db: Knex, runId: string): Knex.QueryBuilder {
  return joinResolution(
    db,
    db('reconciliation_items as i').join('reconciliation_runs as r', 'r.id', 'i.run_id').where('i.run_id', runId),
  ).select(
    'i.*',
    'z.operator as resolution_operator',
    'z.note as resolution_note',
    'z.resolved_at as resolution_at',
    'z.run_id as resolution_run_id',
    'z.item_id as resolution_item_id',
  );
}

function toItemView(r: Record<string, unknown>): ItemView {
  return {
    id: numberOf(r.id),
    class: r.class as ReconciliationClass,
    severity: CLASS_SEVERITY[r.class as ReconciliationClass],
    detail: (r.detail as string | null) ?? null,
    source: r.source as 'BILL' | 'LOCAL',
    kind: r.kind as ItemView['kind'],
    rowNo: r.row_no === null ? null : numberOf(r.row_no),
    outTradeNo: (r.out_trade_no as string | null) ?? null,
    tradeNo: (r.trade_no as string | null) ?? null,
    outRefundNo: (r.out_refund_no as string | null) ?? null,
    bill:
      r.bill_amount === null
        ? null
        : { amount: numberOf(r.bill_amount), currency: r.bill_currency as string, at: isoOf(r.bill_at as Date | null) },
    local:
      r.local_amount === null && r.local_currency === null
        ? null
        : {
            amount: r.local_amount === null ? null : numberOf(r.local_amount),
            currency: (r.local_currency as string | null) ?? null,
          },
    evidence: r.evidence ? (JSON.parse(r.evidence as string) as Record<string, unknown>) : {},
    repair: {
      status: r.repair_status as string,
      detail: (r.repair_detail as string | null) ?? null,
      at: isoOf(r.repaired_at as Date | null),
    },
    resolution:
      r.resolution_operator === null || r.resolution_operator === undefined
        ? null
        : {
            operator: r.resolution_operator as string,
            note: r.resolution_note as string,
            resolvedAt: isoOf(r.resolution_at as Date)!,
            runId: r.resolution_run_id as string,
            itemId: numberOf(r.resolution_item_id),
          },
  };
}

/**
 * A page of a run's items (differences only unless `classes` says otherwise), in id order after `after`; `resolved`
 * keeps only the resolved (true) or the unresolved (false) ones.
 */
export async function readItems(
  db: Knex,
  runId: string,
  filter: { classes?: ReconciliationClass[]; after?: number; limit: number; resolved?: boolean },
): Promise<ItemView[]> {
  const q = itemsWithResolutions(db, runId).orderBy('i.id').limit(filter.limit);
  if (filter.classes?.length) q.whereIn('i.class', filter.classes);
  else q.whereNot('i.class', 'MATCHED');
  if (filter.after !== undefined) q.where('i.id', '>', filter.after);
  if (filter.resolved === true) q.whereNotNull('z.id');
  if (filter.resolved === false) q.whereNull('z.id');
  return ((await q) as Array<Record<string, unknown>>).map(toItemView);
}

/** One item of a run, whatever its class, or null. */
export async function readItem(db: Knex, runId: string, itemId: number): Promise<ItemView | null> {
  const row = (await itemsWithResolutions(db, runId).where('i.id', itemId).first()) as
    Record<string, unknown> | undefined;
  return row ? toItemView(row) : null;
}

/**
 * The bill days in the `days` before `date` whose latest run of this provider is still open (QUEUED or RUNNING), oldest
 * first: normally none (a day's run ends within the hour); one whose workflow was terminated (which runs no workflow
 * code, so nothing marked the run) stays open for good unless it is asked for again.
 */
export function openDaysBefore(db: Knex, provider: string, date: string, days: number): Promise<string[]> {
  return daysWhoseLatestRun(db, provider, date, days, ACTIVE_STATUSES);
}

/**
 * The bill days in the `days` before `date` that have no run of this provider at all, after the earliest day in that
 * window that has one, oldest first: a firing that failed before it wrote its day's row (MySQL down for the step's
 * retries, a worker without the provider's settings, a firing the Schedule dropped in a long outage) left that day
 * unasked, and no alert counts a day with no row. Days before the first run in the window are not looked at: a new
 * deployment does not reconcile the week before it.
 */
export async function missingDaysBefore(db: Knex, provider: string, date: string, days: number): Promise<string[]> {
  const day = (at: number) => new Date(at).toISOString().slice(0, 10);
  const end = Date.parse(`${date}T00:00:00Z`);
  const since = day(end - days * 86_400_000);
  const present = new Set(
    (
      (await db('reconciliation_runs')
        .where({ provider })
        .where('bill_date', '>=', since)
        .where('bill_date', '<', date)
        .distinct('bill_date')) as Array<{ bill_date: string }>
    ).map((r) => r.bill_date),
  );
  const missing: string[] = [];
  let seen = false;
  for (let at = Date.parse(`${since}T00:00:00Z`); at < end; at += 86_400_000) {
    if (present.has(day(at))) seen = true;
    else if (seen) missing.push(day(at));
  }
  return missing;
}

/**
 * The bill days in the `days` before `date` whose latest run of this provider FAILED, oldest first. `finishedOnly`:
 * the latest finished run (a re-run in progress leaves its day counted until it completes, so an alert on the count
 * does not resolve and fire again with each attempt); `belowAttempt`: only days whose failed run is an earlier attempt.
 */
export function failedDaysBefore(
  db: Knex,
  provider: string,
  date: string,
  days: number,
  options: { finishedOnly?: boolean; belowAttempt?: number } = {},
): Promise<string[]> {
  return daysWhoseLatestRun(db, provider, date, days, ['FAILED'], options);
}

/** The bill days in the `days` before `date` whose latest run (see failedDaysBefore's options) is in `statuses`. */
async function daysWhoseLatestRun(
  db: Knex,
  provider: string,
  date: string,
  days: number,
  statuses: readonly string[],
  options: { finishedOnly?: boolean; belowAttempt?: number } = {},
): Promise<string[]> {
  const since = new Date(Date.parse(`${date}T00:00:00Z`) - days * 86_400_000).toISOString().slice(0, 10);
  const rows = (await db('reconciliation_runs as r')
    .where({ 'r.provider': provider })
    .whereIn('r.status', statuses)
    .where('r.bill_date', '>=', since)
    .where('r.bill_date', '<', date)
    .modify((q) => {
      if (options.belowAttempt !== undefined) q.where('r.attempt', '<', options.belowAttempt);
    })
    .whereNotExists(
      db('reconciliation_runs as n')
        .whereRaw('n.provider = r.provider AND n.bill_date = r.bill_date AND n.attempt > r.attempt')
        .modify((q) => {
          if (options.finishedOnly) q.whereIn('n.status', ['FAILED', 'COMPLETED']);
        })
        .select(db.raw('1')),
    )
    .orderBy('r.bill_date')
    .select('r.bill_date')) as Array<{ bill_date: string }>;
  return rows.map((r) => r.bill_date);
}
