/**
 * What every workflow of this project shares: the activity option sets (declared retries and timeouts), running a
 * step with a summary the Web UI shows, and reading a failure's type, details and message through the SDK's wrappers.
 * Deterministic: workflow-side code only.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  TemporalFailure,
  isCancellation,
  proxyActivities,
  proxyLocalActivities,
  type ActivityOptions,
  type LocalActivityOptions,
} from '@temporalio/workflow';
import type { Activities } from '../../activities';

/**
 * Steps before the buyer has a payment URL: bounded, so a broken dependency fails the order instead of hanging the API.
 */
export const SETUP: ActivityOptions & LocalActivityOptions = {
  startToCloseTimeout: '15s',
  scheduleToCloseTimeout: '2m',
  retry: { initialInterval: '200ms', backoffCoefficient: 2, maximumInterval: '5s' },
};
/** Steps that must eventually happen (confirm, cancel, close, mark): retried until they succeed. */
export const MUST: ActivityOptions & LocalActivityOptions = {
  startToCloseTimeout: '15s',
  retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '30s' },
};
/** An active query is best effort: a failed one waits for the next timer. */
export const QUERY: ActivityOptions = {
  startToCloseTimeout: '10s',
  retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '2s', maximumAttempts: 3 },
};

type Fn<K extends keyof Activities> = {
  executeWithOptions(
    o: ActivityOptions | LocalActivityOptions,
    a: unknown[],
  ): Promise<Awaited<ReturnType<Activities[K]>>>;
};
const remote = proxyActivities<Activities>(MUST);
const local = proxyLocalActivities<Activities>(MUST);

/** Runs an activity (a task on the queue, any worker) with the given options and a summary shown on its event. */
export function run<K extends keyof Activities>(
  name: K,
  options: ActivityOptions,
  summary: string,
  ...args: Parameters<Activities[K]>
): Promise<Awaited<ReturnType<Activities[K]>>> {
  return (remote[name] as unknown as Fn<K>).executeWithOptions({ ...options, summary }, args);
}

/**
 * Runs a short MySQL or provider step as a local activity: executed by the worker that runs the workflow, recorded
 * as one marker event, no task round trip through the server. Same retry semantics and failures as `run`.
 */
export function runLocal<K extends keyof Activities>(
  name: K,
  options: LocalActivityOptions,
  summary: string,
  ...args: Parameters<Activities[K]>
): Promise<Awaited<ReturnType<Activities[K]>>> {
  return (local[name] as unknown as Fn<K>).executeWithOptions({ ...options, summary }, args);
}

function causeOf(err: unknown): unknown {
  return err instanceof ActivityFailure && err.cause ? err.cause : err;
}

/** The business failure type an activity raised (ApplicationFailure.type), if any. */
export function failureType(err: unknown): string | undefined {
  const cause = causeOf(err);
  return cause instanceof ApplicationFailure ? (cause.type ?? undefined) : undefined;
}

/** The first details object of an activity's ApplicationFailure, or {}. */
export function failureDetails(err: unknown): Record<string, unknown> {
  const cause = causeOf(err);
  const first = cause instanceof ApplicationFailure ? cause.details?.[0] : undefined;
  return typeof first === 'object' && first !== null ? (first as Record<string, unknown>) : {};
}

/** The message of what actually failed (the activity's error, not the wrapper's). */
export function errorMessage(err: unknown): string {
  const cause = causeOf(err);
  return cause instanceof Error ? cause.message : String(cause);
}

/**
 * Whether an activity failed for good: its error is non-retryable (a business failure). A local activity's failure
 * reaches the workflow as the activity's own error (no ActivityFailure wrapper, no retry state), so both are read.
 */
export function failedForGood(err: unknown): boolean {
  if (err instanceof ActivityFailure && err.retryState === 'NON_RETRYABLE_FAILURE') return true;
  const cause = causeOf(err);
  return cause instanceof ApplicationFailure && cause.nonRetryable === true;
}

/**
 * Whether an activity with a bounded number of attempts ran out of them: a failure that is neither a cancellation
 * nor non-retryable. (A local activity's failure carries no retry state; a remote one's says MAXIMUM_ATTEMPTS_REACHED.)
 */
export function outOfAttempts(err: unknown): boolean {
  if (err instanceof ActivityFailure && err.retryState === 'MAXIMUM_ATTEMPTS_REACHED') return true;
  return (
    !isCancellation(err) &&
    !failedForGood(err) &&
    (err instanceof ActivityFailure || err instanceof ApplicationFailure || err instanceof TemporalFailure)
  );
}

/** A time of day for timer summaries in the Web UI, e.g. "14:32:05 UTC". */
export function clock(ms: number): string {
  return `${new Date(ms).toISOString().slice(11, 19)} UTC`;
}
