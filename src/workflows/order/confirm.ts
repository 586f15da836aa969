/**
 * Step 5: a payment is known. Check amount, currency and merchant; a mismatch goes to review, never to confirm. A
 * callback that does not match is first checked with the provider: anyone holding a secret could have sent it.
 * A matching payment: TCC Confirm of every participant, PAID, the receipt queued (one local activity).
 */
import type { PaymentEvidence } from '../../contracts/order-workflow';
import { refundedTradeStep } from '../patches';
import { QUERY, errorMessage, run, runLocal, MUST } from '../shared/steps';
import type { OrderContext } from './context';
import { describeRefunded } from './state';

export type Checked =
  | { kind: 'PAID'; paid: PaymentEvidence }
  | { kind: 'REVIEW'; paid: PaymentEvidence; why: string }
  | { kind: 'NOT_CONFIRMED' };

export async function confirmPayment(ctx: OrderContext): Promise<Checked> {
  const s = ctx.state;
  let paid = s.evidence!;
  let mismatch = s.mismatch(paid);
  if (mismatch && paid.source === 'callback') {
    const confirmed = await confirmWithProvider(ctx, paid, mismatch);
    // Not paid at the provider: the claim changes nothing; the order waits on until its own deadline.
    if (!confirmed) return { kind: 'NOT_CONFIRMED' };
    paid = confirmed;
    mismatch = s.mismatch(paid);
  }
  // Money the provider reports refunded (from the merchant's console, say) is not all ours: it never confirms.
  const refunded = describeRefunded(paid);
  if (!mismatch && refunded && refundedTradeStep()) mismatch = refunded;
  if (mismatch) {
    s.openReview();
    ctx.enter('NEEDS_REVIEW', mismatch);
    s.note('NEEDS_REVIEW', `Payment does not match the order: ${mismatch}`);
    await ctx.must('transitionOrder', 'local', 'mark order NEEDS_REVIEW', {
      orderId: s.orderId,
      from: ['AWAITING_PAYMENT'],
      to: 'NEEDS_REVIEW',
      reason: 'PAYMENT_MISMATCH',
      event: {
        type: 'ORDER_NEEDS_REVIEW',
        message: `Payment does not match the order (${mismatch}); kept for manual review, stock stays reserved`,
      },
      payment: paid,
    });
    s.inReview();
    return { kind: 'REVIEW', paid, why: mismatch };
  }

  ctx.enter('CONFIRMING', `payment ${paid.tradeNo} matches; confirming`);
  const handOff = s.handOffWhenPaid;
  await ctx.must(
    'settlePaid',
    'local',
    `confirm ${s.lines.length} SKU(s)${s.benefits.length ? ', coupon and points' : ''}; mark PAID; queue receipt${handOff ? '; hand off to fulfilment' : ''}`,
    {
      ...ctx.participants(),
      ...(handOff ? { handOff: true } : {}),
      transition: {
        from: ['AWAITING_PAYMENT'],
        to: 'PAID',
        reason: `PAID_VIA_${paid.source.toUpperCase()}`,
        event: {
          type: 'ORDER_PAID',
          message: `Paid (${paid.amount} ${paid.currency}, trade ${paid.tradeNo}, learned from ${paid.source})`,
        },
        payment: paid,
      },
    },
  );
  s.settled('PAID', handOff);
  s.note('ORDER_PAID', `Paid; learned from ${paid.source}`);
  return { kind: 'PAID', paid };
}

/**
 * Asks the provider about a callback that does not match the order. Returns the provider's own account of the payment
 * (now the order's evidence) when it reports one; else records that the claim was not confirmed, forgets the claim
 * and returns undefined.
 */
async function confirmWithProvider(
  ctx: OrderContext,
  claimed: PaymentEvidence,
  mismatch: string,
): Promise<PaymentEvidence | undefined> {
  const s = ctx.state;
  ctx.enter('QUERYING_PROVIDER', `a notification does not match the order (${mismatch}); asking ${ctx.provider} first`);
  let answer: string;
  try {
    const state = await run('queryProviderPayment', QUERY, `confirm mismatched notification with ${ctx.provider}`, {
      provider: ctx.provider,
      outTradeNo: s.orderId,
    });
    if (state.status === 'PAID' || state.status === 'REFUNDED') return s.replaceEvidence(state, 'query');
    answer = `${ctx.provider} reports ${state.status}`;
  } catch (err) {
    answer = `${ctx.provider} could not be asked (${errorMessage(err)}); later queries will`;
  }
  const message = `A notification claimed payment ${claimed.tradeNo} (${mismatch}) but ${answer}: ignored; the order keeps its deadline`;
  s.note('NOTIFICATION_NOT_CONFIRMED', message);
  s.dropEvidence();
  await runLocal('recordOrderEvent', MUST, 'record the unconfirmed notification', {
    orderId: s.orderId,
    type: 'NOTIFICATION_NOT_CONFIRMED',
    message,
  });
  return undefined;
}
