/**
 * The workflow of `npm run bench -- --tcc` (tools/bench-tcc.ts): the TCC part of one order and nothing else. The Try
 * of stock, coupon and points as one activity, then their Confirm as a second one, done. The activities call
 * payflow's real participants (src/db/stock.ts, src/activities/benefits.ts); `local` picks local activities (as the
 * order workflow runs its MySQL steps) or activity tasks on the task queue.
 *
 * Bench-only: bundled on its own by the bench's in-process worker, for a task queue of its own; not part of the
 * production bundle (src/workflows/index.ts). No interceptors, search attributes, timers, signals or queries.
 */
import { proxyActivities, proxyLocalActivities, type ActivityOptions } from '@temporalio/workflow';

/** One order's participants: one SKU line of one unit, one coupon, `points` points of the ordering user. */
export interface TccCall {
  orderId: string;
  userId: string;
  sku: string;
  couponCode: string;
  points: number;
}

/** The two activities (implemented in tools/bench-tcc.ts over the real participants). */
export interface TccActivities {
  /** TCC Try of stock, coupon and points, one after the other (as the order's openOrder step). */
  tccTry(call: TccCall): Promise<void>;
  /** TCC Confirm of the three (as the order's settlePaid step). */
  tccConfirm(call: TccCall): Promise<void>;
}

export interface TccInput {
  call: TccCall;
  /** Local activities, or activity tasks on the task queue. */
  local: boolean;
}

const OPTIONS: ActivityOptions = {
  startToCloseTimeout: '15s',
  // A business failure (out of stock, coupon taken) is non-retryable and fails the workflow: the bench counts it.
  retry: { initialInterval: '200ms', backoffCoefficient: 2, maximumInterval: '5s', maximumAttempts: 5 },
};
const remote = proxyActivities<TccActivities>(OPTIONS);
const local = proxyLocalActivities<TccActivities>(OPTIONS);

export async function benchTcc(input: TccInput): Promise<{ orderId: string }> {
  const acts = input.local ? local : remote;
  await acts.tccTry(input.call);
  await acts.tccConfirm(input.call);
  return { orderId: input.call.orderId };
}
