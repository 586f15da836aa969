/**
 * The order payment lifecycle, workflow type `orderLifecycleV2` (architecture.md, steps 1-7), read top to bottom:
 *
 *   1-3. open the order (price, TCC Try of stock, coupon and points), create the provider payment, answer the API;
 *   4.   wait for the callback, a cancel or the deadline, querying the provider when the callback is late;
 *   5.   a payment: check it and confirm everything (or send a mismatch to review);
 *   6-7. no payment: close at the provider, release everything, watch for late money and refund it;
 *   then cooling-off and the hand-off to fulfilment, or a review; at the end, other trades are handed off.
 *
 * Each phase is a module of this folder; the order's state and its rules are `OrderState` (state.ts). Deterministic:
 * no I/O here, every side effect is an activity. The previous types are kept for executions started before this one
 * existed (README, "Changing workflow code safely"): `orderLifecycle` below (this code with two more local activities,
 * chosen by a flag fixed at the start, so no marker or search-attribute upsert is spent on it) and `orderPayment`
 * (../order-payment.ts, unchanged).
 *
 * A cancel through Temporal (`temporal workflow cancel`, the Web UI's Cancel) is handled like the buyer's cancel
 * while the order can still be cancelled; the lifecycle itself runs non-cancellable, so a cancel never cuts a step
 * off half-way or ends the workflow with a reservation held and the provider's payment open.
 */
import { CancellationScope, isCancellation } from '@temporalio/workflow';
import type { OrderPaymentInput, OrderPaymentResult } from '../../contracts/order-workflow';
import { closeUnpaid } from './close';
import { confirmPayment } from './confirm';
import { OrderContext } from './context';
import { coolOff } from './cooling-off';
import { finish } from './finish';
import { registerHandlers } from './handlers';
import { review, stopForReview } from './review';
import { setUp } from './setup';
import { OrderState } from './state';
import { waitForPayment } from './wait';

export async function orderLifecycleV2(input: OrderPaymentInput): Promise<OrderPaymentResult> {
  return start(input, true);
}

/**
 * The previous type, kept registered for executions started before orderLifecycleV2 (drained, then removed): the same
 * phases, with the order opened and its payment created in two local activities (openOrder, createProviderPayment),
 * and the hand-off to fulfilment always a step of its own. Its recorded histories (test/histories/v3-*) replay.
 */
export async function orderLifecycle(input: OrderPaymentInput): Promise<OrderPaymentResult> {
  return start(input, false);
}

function start(input: OrderPaymentInput, mergedSteps: boolean): Promise<OrderPaymentResult> {
  const cancelledThroughTemporal = CancellationScope.current().cancelRequested;
  return CancellationScope.nonCancellable(() => lifecycle(input, mergedSteps, cancelledThroughTemporal));
}

async function lifecycle(
  input: OrderPaymentInput,
  mergedSteps: boolean,
  cancelledThroughTemporal: Promise<never>,
): Promise<OrderPaymentResult> {
  const s = new OrderState(input, Date.now, mergedSteps);
  const ctx = new OrderContext(s);
  registerHandlers(ctx);
  cancelledThroughTemporal.catch(() => {
    if (s.requestCancel('cancelled through Temporal by an operator', 'temporal')) {
      s.note(
        'CANCEL_REQUESTED',
        'The workflow was cancelled through Temporal: closing the payment and releasing everything',
      );
    } else {
      s.note(
        'CANCEL_IGNORED',
        `The workflow was cancelled through Temporal in stage ${s.stage}; the order goes on to a safe end`,
      );
    }
  });
  s.note('STARTED', 'Order lifecycle started');

  // Steps 1-3.
  if (!(await setUp(ctx)))
    return finish(ctx, { status: 'FAILED', reason: s.ready?.ok === false ? s.ready.type : undefined });
  try {
    for (;;) {
      // Step 4.
      await waitForPayment(ctx);
      // Steps 6-7 (a close that finds the order paid goes on to step 5).
      if (!s.evidence) {
        const closed = await closeUnpaid(ctx);
        if (closed) return finish(ctx, closed);
      }
      // Step 5.
      const checked = await confirmPayment(ctx);
      if (checked.kind === 'NOT_CONFIRMED') continue;
      if (checked.kind === 'REVIEW') return finish(ctx, await review(ctx, checked.paid, checked.why));
      return finish(ctx, await coolOff(ctx, checked.paid));
    }
  } catch (err) {
    if (isCancellation(err)) throw err;
    // Something we cannot resolve automatically: never leave money in flight behind a failed workflow.
    return finish(ctx, await stopForReview(ctx, err));
  }
}
