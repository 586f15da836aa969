/**
 * After a close the provider answered "already paid": the provider's account of that payment. Deterministic: workflow
 * code only.
 */
import { condition } from '@temporalio/workflow';
import { CLOSE_FOUND_PAID_RECHECK_DELAYS_MS } from '../../contracts/order-workflow';
import type { ProviderPaymentState } from '../order/state';
import { closeFoundPaidRecheckStep } from '../patches';
import { MUST, run } from './steps';

/** The query shows the payment: paid (or paid and refunded since), with its amount. */
function shown(state: ProviderPaymentState): boolean {
  return (state.status === 'PAID' || state.status === 'REFUNDED') && state.paidAmount !== undefined;
}

/**
 * Queries the provider for an order its close found paid. A query that does not show the payment yet (it lags the
 * close's answer: the buyer paid a moment before) is asked again after each of CLOSE_FOUND_PAID_RECHECK_DELAYS_MS
 * (patch `close-found-paid-recheck`, asked only then) before its answer is taken as it is; the waits end early when
 * `known()` says the payment was learned another way (its notification arrived). `rechecked`: this execution took the
 * patch (so a payment learned meanwhile is the caller's to keep). The delays are part of the patched histories: change
 * them only behind a new patch id.
 */
export async function queryAfterCloseFoundPaid(
  provider: string,
  orderId: string,
  known: () => boolean,
): Promise<{ state: ProviderPaymentState; rechecked: boolean }> {
  let state = await run('queryProviderPayment', MUST, `query ${provider} after close`, {
    provider,
    outTradeNo: orderId,
  });
  if (shown(state) || !closeFoundPaidRecheckStep()) return { state, rechecked: false };
  for (const [i, delay] of CLOSE_FOUND_PAID_RECHECK_DELAYS_MS.entries()) {
    if (await condition(known, delay)) break;
    state = await run('queryProviderPayment', MUST, `query ${provider} again after close (${i + 2})`, {
      provider,
      outTradeNo: orderId,
    });
    if (shown(state)) break;
  }
  return { state, rechecked: true };
}
