/**
 * Reconciliation (对账) of one provider's bill day against our payments and refunds: compare the bill
 * (streamed, heartbeating its progress), find what we recorded and the bill lacks, repair lost callbacks,
 * store the report. One workflow per run: id = run id (`reconcile-<provider>-<date>[-r<n>]`) plus a random suffix.
 * `scheduledReconciliation` is what the daily Temporal Schedule starts: it opens yesterday's run.
 * Deterministic: every read and write is an activity.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  proxyActivities,
  setCurrentDetails,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import { SearchAttributeType, defineSearchAttributeKey } from '@temporalio/common';
import type { Activities } from '../activities';
import { FailureType, RECONCILIATION_NON_RETRYABLE } from '../contracts/failures';
import { billDateOf } from '../contracts/bill-days';
import type {
  ReconciliationInput,
  ReconciliationResult,
  ReconciliationStatus,
  ScheduledReconciliationInput,
} from '../contracts/reconciliation';
import { reconciliationCancelledFailsStep } from './patches';

/** Business failures of the bill steps: retrying cannot help, the run fails with the reason. */
const NON_RETRYABLE = RECONCILIATION_NON_RETRYABLE;

/** Short database steps. */
const SHORT: ActivityOptions = {
  startToCloseTimeout: '30s',
  retry: {
    initialInterval: '1s',
    backoffCoefficient: 2,
    maximumInterval: '30s',
    maximumAttempts: 20,
    nonRetryableErrorTypes: NON_RETRYABLE,
  },
};

/**
 * Long steps (a bill of a million rows): bounded by the heartbeat, not by a short start-to-close. A worker
 * that dies is noticed within the heartbeat timeout; the retry resumes from the last heartbeat. About an
 * hour of retries (a provider whose bill is not ready yet, an outage) before the run is marked FAILED.
 */
function longOptions(heartbeatTimeoutMs: number): ActivityOptions {
  return {
    startToCloseTimeout: '4h',
    heartbeatTimeout: heartbeatTimeoutMs,
    retry: {
      initialInterval: '1s',
      backoffCoefficient: 2,
      maximumInterval: '2m',
      maximumAttempts: 40,
      nonRetryableErrorTypes: NON_RETRYABLE,
    },
  };
}

type Acts = Activities;

/** Calls an activity with options and a summary that the Web UI shows on its event. */
function call<K extends keyof Acts>(
  options: ActivityOptions,
  name: K,
  summary: string,
  ...args: Parameters<Acts[K]>
): Promise<Awaited<ReturnType<Acts[K]>>> {
  const fn = proxyActivities<Acts>(options)[name] as unknown as {
    executeWithOptions(o: ActivityOptions, a: unknown[]): Promise<Awaited<ReturnType<Acts[K]>>>;
  };
  return fn.executeWithOptions({ ...options, summary }, args);
}

function errorMessage(err: unknown): string {
  const cause = err instanceof ActivityFailure && err.cause ? err.cause : err;
  return cause instanceof Error ? cause.message : String(cause);
}

/** One reconciliation run. */
export async function reconciliation(input: ReconciliationInput): Promise<ReconciliationResult> {
  const { runId, provider, date } = input;
  const long = longOptions(input.heartbeatTimeoutMs ?? 30_000);
  try {
    setCurrentDetails(`**BILL**: downloading and comparing the ${provider} bill of ${date}`);
    await call(SHORT, 'beginReconciliationRun', `open run ${runId}`, {
      runId,
      workflowId: workflowInfo().workflowId,
      workflowRunId: workflowInfo().runId,
    });
    const compared = await call(long, 'compareBill', `compare the ${provider} bill of ${date}`, {
      runId,
      batchSize: input.batchSize,
    });

    setCurrentDetails(`**LOCAL**: ${compared.billRows} bill rows compared; looking for local records the bill lacks`);
    const local = await call(long, 'findLocalOnlyRecords', 'find local payments and refunds missing from the bill', {
      runId,
    });

    setCurrentDetails(
      `**REPAIR**: ${compared.counts.PAID_NOT_RECORDED} payment(s) paid at ${provider} but not recorded`,
    );
    await call(long, 'repairLostPayments', `repair ${compared.counts.PAID_NOT_RECORDED} lost payment(s)`, { runId });

    const result = await call(SHORT, 'finishReconciliationRun', 'store the report', {
      runId,
      counted: compared.counts,
    });
    setCurrentDetails(
      `**DONE**: ${result.billRows} bill rows, ${result.totals.MATCHED} matched, ${result.differences} difference(s) ` +
        `(${local.payments} local payment(s) and ${local.refunds} refund(s) missing from the bill), ${result.repaired} repaired`,
    );
    return result;
  } catch (err) {
    /** Marks the run FAILED with why, even while the workflow is being cancelled. */
    const markFailed = (summary: string, error: string) =>
      CancellationScope.nonCancellable(() =>
        call(SHORT, 'failReconciliationRun', summary, { runId, error, workflowId: workflowInfo().workflowId }),
      );
    if (isCancellation(err)) {
      // Cancelled through Temporal (the Web UI's Cancel): the run is marked FAILED, as the runbook's dashboard and
      // alerts count, and the Schedule's next firing runs the day again; left RUNNING, it was never asked for again.
      if (reconciliationCancelledFailsStep())
        await markFailed('mark the run FAILED (cancelled)', 'cancelled through Temporal before the run completed');
      throw err;
    }
    const message = errorMessage(err);
    setCurrentDetails(`**FAILED**: ${message}`);
    await markFailed('mark the run FAILED', message);
    throw ApplicationFailure.create({
      type: FailureType.RECONCILIATION_FAILED,
      message: `reconciliation ${runId} failed: ${message}`,
      nonRetryable: true,
    });
  }
}

/**
 * Started by the daily Schedule: opens (idempotently) the run of the bill day `daysBack` days before the firing the
 * Schedule meant (`TemporalScheduledStartTime`, not the time this runs: a firing caught up after an outage, or a
 * backfill, reconciles its own day, not the day of its late start), and starts it. A day whose run FAILED is run again,
 * and so are the failed days of the week before (`retriedDays`, startScheduledReconciliation) and the days whose run is
 * still open, its workflow terminated (`resumedDays`).
 */
export async function scheduledReconciliation(input: ScheduledReconciliationInput): Promise<{
  runId: string;
  status: ReconciliationStatus;
  created: boolean;
  retriedDays: string[];
  /** Days whose run was still open: joined, or started again where its workflow was gone (older runs: absent). */
  resumedDays?: string[];
  /** Days with no run at all after a reconciled one in the week before: started (older runs: absent). */
  missedDays?: string[];
  date: string;
}> {
  const date = billDateOf(scheduledTime() - (input.daysBack ?? 1) * 86_400_000, input.provider);
  setCurrentDetails(`starting the ${input.provider} reconciliation of ${date}`);
  const started = await call(
    SHORT,
    'startScheduledReconciliation',
    `start the ${input.provider} reconciliation of ${date}`,
    { provider: input.provider, date },
  );
  return { ...started, date };
}

const ScheduledStartTimeKey = defineSearchAttributeKey('TemporalScheduledStartTime', SearchAttributeType.DATETIME);

/** The time the Schedule meant this firing for (set by the server on every scheduled start); else now. */
function scheduledTime(): number {
  const info = workflowInfo();
  const typed = info.typedSearchAttributes.get(ScheduledStartTimeKey);
  if (typed) return typed.getTime();
  const [untyped] = (info.searchAttributes?.TemporalScheduledStartTime ?? []) as unknown[];
  const at = untyped instanceof Date ? untyped.getTime() : typeof untyped === 'string' ? Date.parse(untyped) : NaN;
  return Number.isFinite(at) ? at : Date.now();
}
