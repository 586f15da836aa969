/**
 * Step 4: wait for the provider's callback (a signal), a cancel, or the deadline; when the callback is late, ask
 * the provider on a doubling backoff. The state decides every wait (`OrderState.nextWait`); this loop only sleeps.
 */
import { condition } from '@temporalio/workflow';
import { QUERY, clock, errorMessage, run } from '../shared/steps';
import type { OrderContext } from './context';

export async function waitForPayment(ctx: OrderContext): Promise<void> {
  const s = ctx.state;
  const waiting = () =>
    ctx.enter('AWAITING_PAYMENT', `waiting for payment until ${new Date(s.deadline!).toISOString()}`);
  waiting();
  ctx.publish();
  for (let wait = s.nextWait(); wait; wait = s.nextWait()) {
    const summary =
      wait.then === 'DEADLINE'
        ? `wait for payment until the deadline, ${clock(wait.until)}`
        : `wait for payment until ${clock(wait.until)}, then query ${ctx.provider}`;
    const woke = await condition(() => s.woken, wait.until - Date.now(), { summary });
    if (woke || wait.then === 'DEADLINE') break;
    const attempt = s.queryStarted();
    ctx.enter('QUERYING_PROVIDER', `asking ${ctx.provider} (query ${attempt})`);
    try {
      const state = await run('queryProviderPayment', QUERY, `query ${ctx.provider} (attempt ${attempt})`, {
        provider: ctx.provider,
        outTradeNo: s.orderId,
      });
      if ((state.status === 'PAID' || state.status === 'REFUNDED') && s.found(state, 'query')) {
        s.note('PAYMENT_FOUND_BY_QUERY', `No callback yet, but ${ctx.provider} reports the payment as paid`);
      }
    } catch (err) {
      s.note('QUERY_FAILED', `Query ${attempt} failed, will try again: ${errorMessage(err)}`);
    }
    if (!s.evidence) waiting();
  }
  s.nextCheckAt = undefined;
}
