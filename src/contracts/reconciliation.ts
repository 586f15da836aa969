/**
 * Contract of the reconciliation workflow family (对账): run ids, the difference classes and their severity,
 * the workflow inputs and results, the ops API request schema and the bill-day calendar. Shared by the
 * workflows, the activities, the ops routes and the CLI. Safe for workflow code (zod only, no I/O).
 */
import { z } from 'zod';
import { billDayRange } from './bill-days';
import { ProviderName } from './providers';

/**
 * What one compared line can turn out to be.
 * - MATCHED: the provider's row and our record agree; also a dispute's reinstatement (detail DISPUTE_REINSTATED: a
 *   won dispute gave a paid order's money back, which needs nobody), recorded with its evidence.
 * - PAID_NOT_RECORDED: paid at the provider, not paid locally (a lost callback): auto-repaired by signalling the
 *   order's workflow, or by the late-payment path when the order is closed.
 * - MISSING_AT_PROVIDER: paid locally, absent from the provider's bill: critical, never auto-repaired.
 * - AMOUNT_MISMATCH: amount or currency differ (or the provider lists one trade twice): review.
 * - REFUND_MISMATCH: a refund missing on either side, duplicated, of another amount, or one the provider's bill says
 *   did not complete (failed, closed, returned, processing): review.
 * - UNKNOWN_TRADE: the provider lists a payment for an order we never created: review.
 * - DISPUTED: the provider took a payment's money back from our balance because the buyer disputed it (a Stripe
 *   chargeback, detail FUNDS_WITHDRAWN) while the order may stay paid and shipped: review, never repaired.
 */
export const ReconciliationClass = z.enum([
  'MATCHED',
  'PAID_NOT_RECORDED',
  'MISSING_AT_PROVIDER',
  'AMOUNT_MISMATCH',
  'REFUND_MISMATCH',
  'UNKNOWN_TRADE',
  'DISPUTED',
]);
export type ReconciliationClass = z.infer<typeof ReconciliationClass>;

/** How each class is handled: counted, repaired automatically, left for a person, or paged at once. */
export const CLASS_SEVERITY: Record<ReconciliationClass, 'ok' | 'repaired' | 'review' | 'critical'> = {
  MATCHED: 'ok',
  PAID_NOT_RECORDED: 'repaired',
  MISSING_AT_PROVIDER: 'critical',
  AMOUNT_MISMATCH: 'review',
  REFUND_MISMATCH: 'review',
  UNKNOWN_TRADE: 'review',
  DISPUTED: 'review',
};

/** Every class with a zero count: the shape of a report's totals. */
export function emptyTotals(): Record<ReconciliationClass, number> {
  return Object.fromEntries(ReconciliationClass.options.map((c) => [c, 0])) as Record<ReconciliationClass, number>;
}

/** Life of a run: QUEUED (row written, workflow starting), RUNNING, then COMPLETED or FAILED. */
export const ReconciliationStatus = z.enum(['QUEUED', 'RUNNING', 'COMPLETED', 'FAILED']);
export type ReconciliationStatus = z.infer<typeof ReconciliationStatus>;

/** Phases a running run goes through (progress of the CLI's bar). */
export type ReconciliationPhase = 'BILL' | 'LOCAL' | 'REPAIR' | 'DONE';

/** Who asked for a run. */
export type ReconciliationTrigger = 'API' | 'SCHEDULE';

/** A bill day `YYYY-MM-DD` that exists in the calendar. */
export const BillDate = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'date must be YYYY-MM-DD')
  .refine((d) => billDayRange(d) !== undefined, 'date is not a real calendar day');

/** `POST /ops/reconciliations` body: one run per provider and day; `rerun` asks for a new run of a finished period. */
export const StartReconciliationRequest = z
  .object({
    provider: ProviderName,
    date: BillDate,
    rerun: z.boolean().default(false),
  })
  .strict();
export type StartReconciliationRequest = z.infer<typeof StartReconciliationRequest>;

/** The operator name of resolutions the reconciliation makes itself (a later bill settled the difference). */
export const AUTOMATIC_RESOLVER = 'reconciliation';

/**
 * `POST /ops/reconciliations/:id/items/:itemId/resolution` body: who resolved a difference (1-64 characters, not the
 * name the reconciliation signs its own resolutions with) and what was done about it (3-500 characters: refunded by
 * hand, confirmed with the provider, the ticket). Trimmed first.
 */
export const ResolveItemRequest = z
  .object({
    operator: z
      .string()
      .trim()
      .min(1)
      .max(64)
      .refine((name) => name.toLowerCase() !== AUTOMATIC_RESOLVER, {
        message: `operator "${AUTOMATIC_RESOLVER}" is the reconciliation's own name: give yours`,
      }),
    note: z.string().trim().min(3).max(500),
  })
  .strict();
export type ResolveItemRequest = z.infer<typeof ResolveItemRequest>;

/** The classes that are differences (every class but MATCHED): what can be resolved, what the gauge counts. */
export const DIFFERENCE_CLASSES = ReconciliationClass.options.filter(
  (c): c is Exclude<ReconciliationClass, 'MATCHED'> => c !== 'MATCHED',
);

/**
 * Run id (the report's id): `reconcile-<provider>-<date>`, then `-r2`, `-r3` for explicit re-runs. Its workflow id is
 * the run id plus a random suffix fixed when the run is opened (`reconcile-sandbox-2026-11-25-3fa9c1`).
 */
export function reconciliationRunId(provider: string, date: string, attempt: number): string {
  return attempt <= 1 ? `reconcile-${provider}-${date}` : `reconcile-${provider}-${date}-r${attempt}`;
}

/** Id of the Temporal Schedule that reconciles one provider daily on one task queue. */
export function reconciliationScheduleId(taskQueue: string, provider: string): string {
  return `reconciliation-${taskQueue}-${provider}`;
}

/** Input of the `reconciliation` workflow (one run). */
export interface ReconciliationInput {
  runId: string;
  provider: string;
  date: string;
  /** Heartbeat timeout of the long activities (default 30 s); a dead worker is noticed within it. */
  heartbeatTimeoutMs?: number;
  /** Bill rows compared per database round trip (default 500). */
  batchSize?: number;
}

/** Counts per class, as a report and the workflow result carry them. */
export type ReconciliationTotals = Record<ReconciliationClass, number>;

/** Result of the `reconciliation` workflow. */
export interface ReconciliationResult {
  runId: string;
  status: 'COMPLETED';
  billRows: number;
  totals: ReconciliationTotals;
  /** Everything that is not MATCHED. */
  differences: number;
  repaired: number;
}

/** Input of the `scheduledReconciliation` workflow the Temporal Schedule starts every day. */
export interface ScheduledReconciliationInput {
  provider: string;
  /** Which day to reconcile, counted back from the run's own time in the bill time zone (default 1: yesterday). */
  daysBack?: number;
}

export { billDateOf, billDayHasEnded, billDayRange, billTimeZone } from './bill-days';

/** The synthetic notification id a reconciliation repair signals with: stable, so the workflow deduplicates it. */
export function reconciliationNotificationId(provider: string, tradeNo: string): string {
  return `recon-${provider}-${tradeNo}`;
}
