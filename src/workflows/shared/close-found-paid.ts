/**
 * After a close the provider answered "already paid": the provider's account of that payment. Deterministic: workflow
 * code only.
 */
import { sleep } from '@temporalio/workflow';
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
 * (patch `close-found-paid-recheck`, asked only then) before its answer is taken as it is.
 */
export async function queryAfterCloseFoundPaid(provider: string, orderId: string): Promise<ProviderPaymentState> {
  let state = await run('queryProviderPayment', MUST, `query ${provider} after close`, {
    provider,
    outTradeNo: orderId,
  });
  if (shown(state) || !closeFoundPaidRecheckStep()) return state;
  for (const [i, delay] of CLOSE_FOUND_PAID_RECHECK_DELAYS_MS.entries()) {
    await sleep(delay);
    state = await run('queryProviderPayment', MUST, `query ${provider} again after close (${i + 2})`, {
      provider,
      outTradeNo: orderId,
    });
    if (shown(state)) break;
  }
  return state;
}
