/**
 * Operators' resolutions of reconciliation differences (table `reconciliation_resolutions`): marking a difference
 * handled, and what is still open once resolutions are taken into account (a run's report, the open-differences
 * gauge). A resolution belongs to a bill line, not to one run's item: provider, merchant, bill day and row key (what
 * identifies the same line across runs of a day), with the class and detail it was resolved as. A re-run of the day
 * lists the line again, resolved; a line that has become another difference is open again.
 */
import type { Knex } from 'knex';
import {
  CLASS_SEVERITY,
  DIFFERENCE_CLASSES,
  type ReconciliationClass,
  type ResolveItemRequest,
} from '../contracts/reconciliation';
import { type ItemView, joinResolution, numberOf, readItem } from './runs';

/** What resolving an item came to. */
export type ResolveOutcome =
  | { outcome: 'NOT_FOUND' }
  | { outcome: 'NOT_A_DIFFERENCE'; item: ItemView }
  /** The item with its resolution: this request's when `created`, else the one stored first (never overwritten). */
  | { outcome: 'RESOLVED'; created: boolean; item: ItemView };

/**
 * Resolves one difference item of a run, once: the unique bill-line key decides between concurrent operators, and a
 * second request (by anyone, with any note) answers the resolution stored first. Checked: the stored row is read back
 * and must be the item's resolution.
 */
export async function resolveItem(
  db: Knex,
  runId: string,
  itemId: number,
  request: ResolveItemRequest,
): Promise<ResolveOutcome> {
  const line = (await db('reconciliation_items as i')
    .join('reconciliation_runs as r', 'r.id', 'i.run_id')
    .where({ 'i.run_id': runId, 'i.id': itemId })
    .first('i.row_key', 'i.class', 'i.detail', 'r.provider', 'r.merchant_id', 'r.bill_date')) as
    | {
        row_key: string;
        class: ReconciliationClass;
        detail: string | null;
        provider: string;
        merchant_id: string | null;
        bill_date: string;
      }
    | undefined;
  if (!line) return { outcome: 'NOT_FOUND' };
  if (line.class === 'MATCHED') return { outcome: 'NOT_A_DIFFERENCE', item: (await readItem(db, runId, itemId))! };
  const key = {
    provider: line.provider,
    merchant_id: line.merchant_id ?? '',
    bill_date: line.bill_date,
    row_key: line.row_key,
    class: line.class,
    detail: line.detail ?? '',
  };
  let created = true;
  try {
    await db('reconciliation_resolutions').insert({
      ...key,
      operator: request.operator,
      note: request.note,
      run_id: runId,
      item_id: itemId,
    });
  } catch (err) {
    if ((err as { code?: string }).code !== 'ER_DUP_ENTRY') throw err;
    created = false; // resolved before (on this run or an earlier run of the day): that resolution stands
  }
  const stored = (await db('reconciliation_resolutions').where(key).first('operator', 'run_id', 'item_id')) as
    { operator: string; run_id: string; item_id: number } | undefined;
  const item = await readItem(db, runId, itemId);
  const mine = created
    ? stored?.operator === request.operator && stored.run_id === runId && numberOf(stored.item_id) === itemId
    : true;
  if (!stored || !mine || !item?.resolution || item.resolution.itemId !== numberOf(stored.item_id))
    throw new Error(`the resolution of item ${itemId} of run ${runId} was not stored as written`);
  return { outcome: 'RESOLVED', created, item };
}

/** Counts of a run's differences: how many are resolved, and the rest by severity. */
export interface ResolutionSummary {
  resolved: number;
  unresolved: { critical: number; review: number; repaired: number };
}

/** How many of a run's differences are resolved, and what is left by severity (what needs a person). */
export async function resolutionSummary(db: Knex, runId: string): Promise<ResolutionSummary> {
  const rows = (await joinResolution(
    db,
    db('reconciliation_items as i').join('reconciliation_runs as r', 'r.id', 'i.run_id'),
  )
    .where('i.run_id', runId)
    .whereIn('i.class', DIFFERENCE_CLASSES)
    .groupBy('i.class')
    .select('i.class')
    .count({ n: '*' })
    .count({ resolved: 'z.id' })) as Array<{ class: ReconciliationClass; n: number; resolved: number }>;
  const summary: ResolutionSummary = { resolved: 0, unresolved: { critical: 0, review: 0, repaired: 0 } };
  for (const r of rows) {
    const resolved = numberOf(r.resolved);
    summary.resolved += resolved;
    const severity = CLASS_SEVERITY[r.class];
    if (severity !== 'ok') summary.unresolved[severity] += numberOf(r.n) - resolved;
  }
  return summary;
}

/** Unresolved differences of one bill day and class. */
export interface OpenDifferences {
  billDate: string;
  class: Exclude<ReconciliationClass, 'MATCHED'>;
  count: number;
}

/**
 * What is still open for a provider: each bill day since `sinceDate` (inclusive) as its latest completed run left it,
 * without the differences an operator has resolved. Every such day is listed with every difference class (0 included),
 * so a day whose last difference is resolved reads 0 rather than vanishing. Counts only difference rows of those runs
 * (the (run, class) index), never their MATCHED lines.
 */
export async function openDifferencesByDay(db: Knex, provider: string, sinceDate: string): Promise<OpenDifferences[]> {
  const runs = (await db('reconciliation_runs')
    .where({ provider, status: 'COMPLETED' })
    .where('bill_date', '>=', sinceDate)
    .orderBy([
      { column: 'finished_at', order: 'desc' },
      { column: 'attempt', order: 'desc' },
    ])
    .select('id', 'bill_date')) as Array<{ id: string; bill_date: string }>;
  // The latest completed run of each day: a re-run that no longer finds a difference closes it, another day's does not.
  const latest = new Map<string, string>();
  for (const run of runs) if (!latest.has(run.bill_date)) latest.set(run.bill_date, run.id);
  if (latest.size === 0) return [];
  const counts = new Map<string, number>();
  for (const r of (await joinResolution(
    db,
    db('reconciliation_items as i').join('reconciliation_runs as r', 'r.id', 'i.run_id'),
  )
    .whereIn('i.run_id', [...latest.values()])
    .whereIn('i.class', DIFFERENCE_CLASSES)
    .whereNull('z.id')
    .groupBy('r.bill_date', 'i.class')
    .select('r.bill_date', 'i.class')
    .count({ n: '*' })) as Array<{ bill_date: string; class: string; n: number }>)
    counts.set(`${r.bill_date}/${r.class}`, numberOf(r.n));
  return [...latest.keys()]
    .sort()
    .flatMap((billDate) =>
      DIFFERENCE_CLASSES.map((cls) => ({ billDate, class: cls, count: counts.get(`${billDate}/${cls}`) ?? 0 })),
    );
}
