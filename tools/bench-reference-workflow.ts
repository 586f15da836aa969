/**
 * The engine's floor for `npm run bench`: a lean workflow of the order's minimal shape. Update-with-start answered
 * after one activity (the order's "payment URL"), then a signal (the order's "payment notification"), then one more
 * activity, done. Each activity does one cheap MySQL write (tools/bench-reference-activities.ts).
 *
 * Bench-only: bundled on its own by the system under test (tools/bench-system.ts) for a worker and task queue of
 * its own; it is not part of the production bundle (src/workflows/index.ts). No interceptors, no search attributes,
 * no timers, no queries: what is left is what Temporal itself costs for that shape.
 */
import {
  condition,
  defineSignal,
  defineUpdate,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { ReferenceActivities } from './bench-reference-activities';

export interface ReferenceInput {
  id: string;
  /** Local activities (as the order workflow's MySQL steps) or activity tasks on the task queue. */
  local: boolean;
}

export interface ReferenceResult {
  id: string;
  status: 'PAID';
}

/** Answered once the first activity has run (as the order's paymentReady update once the payment exists). */
export const referenceReadyUpdate = defineUpdate<{ id: string }>('referenceReady');
/** The "payment notification". */
export const referencePaidSignal = defineSignal('referencePaid');

const OPTIONS: ActivityOptions = {
  startToCloseTimeout: '15s',
  retry: { initialInterval: '200ms', backoffCoefficient: 2, maximumInterval: '5s' },
};
const remote = proxyActivities<ReferenceActivities>(OPTIONS);
const local = proxyLocalActivities<ReferenceActivities>(OPTIONS);

export async function benchReference(input: ReferenceInput): Promise<ReferenceResult> {
  const acts = input.local ? local : remote;
  let opened = false;
  let paid = false;
  setHandler(referenceReadyUpdate, async () => {
    await condition(() => opened);
    return { id: input.id };
  });
  setHandler(referencePaidSignal, () => {
    paid = true;
  });
  await acts.referenceOpen(input.id);
  opened = true;
  await condition(() => paid);
  await acts.referenceClose(input.id);
  return { id: input.id, status: 'PAID' };
}
