/**
 * The order's state and its rules (src/workflows/order/state.ts) without Temporal, at production durations, on a
 * fake clock: what is paid, cancellable, decided; what the payment wait does next (query backoff, deadline); how long
 * the late watch, the cooling-off window and the review reminder last; notification dedup; which requests the
 * validators refuse. The workflow phases only act on these answers (their wiring is tested in workflow-branches).
 */
import type { OrderPaymentInput, PaymentNotifiedSignal } from '../src/contracts/order';
import {
  OrderState,
  describeMismatch,
  describeRefunded,
  evidenceFromProvider,
  refundableAmount,
  requestedBenefits,
} from '../src/workflows/order/state';

const MIN = 60_000;
const T0 = Date.parse('2026-11-30T12:00:00.000Z');

/** Production timings (config.ts defaults): 15 min to pay, first query after 30 s, then doubling up to 2 min. */
const PRODUCTION: OrderPaymentInput = {
  orderId: 'ord_state',
  userId: 'u1',
  items: [{ sku: 'sku-a', quantity: 1 }],
  provider: 'alipay',
  paymentTimeoutMs: 15 * MIN,
  queryFirstDelayMs: 30_000,
  queryMaxIntervalMs: 2 * MIN,
  providerExpiryMarginMs: 1 * MIN,
  publicBaseUrl: 'https://shop.example',
  coolingOffMs: 30 * MIN,
  reviewReminderMs: 60 * MIN,
};

/** A state on a clock the test moves by hand. */
function stateAt(input: Partial<OrderPaymentInput> = {}) {
  let now = T0;
  const state = new OrderState({ ...PRODUCTION, ...input }, () => now);
  return { state, advance: (ms: number) => (now += ms), set: (ms: number) => (now = ms), now: () => now };
}

/** A state as setup leaves it: priced, the clock started, the payment created. */
function opened(input: Partial<OrderPaymentInput> = {}) {
  const clock = stateAt(input);
  clock.state.opened({
    amount: 1000,
    currency: 'CNY',
    lines: [{ sku: 'sku-a', quantity: 1, unitPrice: 1000 }],
    benefits: [],
  });
  clock.state.startClock();
  clock.state.paymentCreated({ merchantId: 'm1', paymentUrl: 'https://pay.example/1' });
  clock.state.enter('AWAITING_PAYMENT');
  return clock;
}

const notice = (over: Partial<PaymentNotifiedSignal> = {}): PaymentNotifiedSignal => ({
  notificationId: 'n1',
  outTradeNo: 'ord_state',
  tradeNo: 'T1',
  amount: 1000,
  currency: 'CNY',
  merchantId: 'm1',
  paidAt: new Date(T0).toISOString(),
  provider: 'alipay',
  ...over,
});

describe('the payment wait, at production durations', () => {
  test('queries back off 30 s, 1 min, then every 2 min, and the last wait is cut at the 15-minute deadline', () => {
    const { state, set } = opened();
    const waits: { after: number; then: string }[] = [];
    for (let wait = state.nextWait(); wait; wait = state.nextWait()) {
      waits.push({ after: (wait.until - T0) / 1000, then: wait.then });
      set(wait.until); // the timer fires on time, nothing arrived
      if (wait.then === 'QUERY') state.queryStarted();
    }
    expect(waits).toEqual([
      { after: 30, then: 'QUERY' },
      { after: 90, then: 'QUERY' },
      { after: 210, then: 'QUERY' },
      { after: 330, then: 'QUERY' },
      { after: 450, then: 'QUERY' },
      { after: 570, then: 'QUERY' },
      { after: 690, then: 'QUERY' },
      { after: 810, then: 'QUERY' },
      { after: 900, then: 'DEADLINE' },
    ]);
    expect(state.queryAttempts).toBe(8);
    expect(state.nextCheckAt).toBeUndefined();
  });

  test('a slow query pushes the next wait from when it ended, never past the deadline', () => {
    const { state, set } = opened();
    set(state.nextWait()!.until);
    state.queryStarted();
    set(T0 + 14 * MIN + 50_000); // the query (with its retries) took until 10 s before the deadline
    expect(state.nextWait()).toEqual({ until: T0 + 15 * MIN, then: 'DEADLINE' });
  });

  test('the wait ends at once when a payment or a cancel arrives, or when the deadline has passed', () => {
    const paid = opened();
    paid.state.notify(notice());
    expect(paid.state.nextWait()).toBeUndefined();

    const cancelled = opened();
    expect(cancelled.state.requestCancel('changed my mind', 'buyer')).toBe(true);
    expect(cancelled.state.nextWait()).toBeUndefined();

    const late = opened();
    late.advance(15 * MIN);
    expect(late.state.nextWait()).toBeUndefined();
  });

  test('after the close, the late watch lasts until the provider-side expiry (deadline + 1 min) and one second more', () => {
    const { state, set } = opened();
    set(T0 + 15 * MIN + 2000); // closing and releasing took 2 s
    expect(state.lateWatchMs()).toBe(1 * MIN - 2000 + 1000);
    set(T0 + 17 * MIN); // a restart kept the workflow past the expiry: no watch, only the final query
    expect(state.lateWatchMs()).toBe(0);
  });

  test("a payment step retried with a later clock keeps the deadline and expiry an earlier attempt fixed (the provider's)", () => {
    const { state, set } = stateAt();
    state.opened({
      amount: 1000,
      currency: 'CNY',
      lines: [{ sku: 'sku-a', quantity: 1, unitPrice: 1000 }],
      benefits: [],
    });
    set(T0 + 23_000); // the first attempt's workflow task was lost; this one starts 23 s later
    expect(state.startClock()).toBe(T0 + 23_000 + 15 * MIN);
    state.paymentCreated({
      merchantId: 'm1',
      paymentUrl: 'https://pay.example/1',
      deadline: new Date(T0 + 15 * MIN).toISOString(),
      providerExpiresAt: new Date(T0 + 16 * MIN).toISOString(),
    });
    state.enter('AWAITING_PAYMENT');
    expect(state.deadline).toBe(T0 + 15 * MIN);
    expect(state.ready).toMatchObject({
      ok: true,
      value: { payment: { expiresAt: new Date(T0 + 15 * MIN).toISOString() } },
    });
    let last = 0;
    for (let wait = state.nextWait(); wait; wait = state.nextWait()) {
      last = wait.until;
      set(wait.until);
    }
    expect(last).toBe(T0 + 15 * MIN);
    set(T0 + 15 * MIN + 2000);
    expect(state.lateWatchMs()).toBe(1 * MIN - 2000 + 1000);
  });
});

describe('after PAID', () => {
  test('the cooling-off window is 30 minutes from the moment it opens; none when the order has no window', () => {
    const { state, advance } = opened();
    advance(40_000);
    expect(state.startCoolingOff()).toBe(30 * MIN);
    expect(state.coolingOffUntil).toBe(T0 + 40_000 + 30 * MIN);
    const none = opened({ coolingOffMs: 0 });
    expect(none.state.startCoolingOff()).toBe(0);
    expect(none.state.coolingOffUntil).toBeUndefined();
  });

  test('a review reminds every hour by default', () => {
    expect(opened().state.reviewReminderMs).toBe(60 * MIN);
    expect(opened({ reviewReminderMs: undefined }).state.reviewReminderMs).toBe(60 * MIN);
  });

  test('the wait between review reminders doubles from the interval up to a day: a month of waiting is 33 reminders', () => {
    const { state } = opened();
    expect([0, 1, 2, 3, 4, 5, 6].map((sent) => state.reviewReminderDelay(sent) / MIN)).toEqual([
      60, 120, 240, 480, 960, 1440, 1440,
    ]);
    expect(state.reviewReminderDelay(1_000)).toBe(24 * 60 * MIN);
    let elapsed = 0;
    let sent = 0;
    while (elapsed + state.reviewReminderDelay(sent) <= 30 * 24 * 60 * MIN)
      elapsed += state.reviewReminderDelay(sent++);
    expect(sent).toBe(33);
    // An interval set above a day is kept, never shortened.
    expect(opened({ reviewReminderMs: 48 * 60 * MIN }).state.reviewReminderDelay(3)).toBe(48 * 60 * MIN);
  });
});

describe('paid, cancellable, decided: one answer each', () => {
  test('an order waiting for payment is cancellable, not paid, not decided', () => {
    const { state } = opened();
    expect({ paid: state.paid, cancellable: state.cancellable, decided: state.decided }).toEqual({
      paid: false,
      cancellable: true,
      decided: false,
    });
  });

  test('a known payment ends cancellability before the order is marked PAID', () => {
    const { state } = opened();
    state.notify(notice());
    expect(state.cancellable).toBe(false);
    expect(state.paid).toBe(false);
    expect(state.requestCancel('too late', 'buyer')).toBe(false);
  });

  test('PAID is paid and decided; REFUNDED and NEEDS_REVIEW are not paid', () => {
    const { state } = opened();
    state.settled('PAID');
    expect({ paid: state.paid, decided: state.decided }).toEqual({ paid: true, decided: true });
    state.settled('REFUNDED');
    expect(state.paid).toBe(false);
    const review = opened();
    review.state.inReview();
    expect({ paid: review.state.paid, decided: review.state.decided }).toEqual({ paid: false, decided: false });
  });

  test('only the first cancel is taken, and none once the order is past the wait', () => {
    const { state } = opened();
    expect(state.requestCancel('first', 'buyer')).toBe(true);
    expect(state.requestCancel('second', 'temporal')).toBe(false);
    expect(state.cancelRequest).toEqual({ reason: 'first', via: 'buyer' });
    const closing = opened();
    closing.state.enter('CLOSING');
    expect(closing.state.requestCancel('late', 'buyer')).toBe(false);
  });

  test('a repeated cancel is accepted while the first is carried out (it joins it); a cancel of an order past the wait that nobody cancelled is refused', () => {
    const { state } = opened();
    expect(state.cancelRefusal()).toBeUndefined();
    state.requestCancel('first', 'buyer');
    state.enter('CLOSING');
    // A retry after the first timed out: not "can no longer be cancelled" while it is being cancelled.
    expect(state.cancelRefusal()).toBeUndefined();
    expect(state.requestCancel('retry', 'buyer')).toBe(false);
    const expiring = opened();
    expiring.state.enter('CLOSING');
    expect(expiring.state.cancelRefusal()).toMatch(/can no longer be cancelled \(stage CLOSING/);
    const paid = opened();
    paid.state.notify(notice());
    expect(paid.state.cancelRefusal()).toMatch(/can no longer be cancelled/);
    // A cancel whose close found the order paid: decided, so a repeat is refused (the API answers from MySQL).
    const foundPaid = opened();
    foundPaid.state.requestCancel('first', 'buyer');
    foundPaid.state.enter('CLOSING');
    expect(foundPaid.state.cancelRefusal()).toBeUndefined();
    foundPaid.state.notify(notice());
    foundPaid.state.settled('PAID');
    expect(foundPaid.state.cancelRefusal()).toMatch(/can no longer be cancelled/);
  });
});

describe('notifications', () => {
  test('a redelivered notification counts once; the first payment is the evidence, later trades are remembered', () => {
    const { state } = opened();
    expect(state.notify(notice())).toBe('RECORDED');
    expect(state.notify(notice())).toBe('DUPLICATE');
    expect(state.notify(notice({ notificationId: 'n2', tradeNo: 'T2' }))).toBe('RECORDED');
    expect(state.evidence).toMatchObject({ source: 'callback', tradeNo: 'T1' });
    expect(state.timeline.filter((e) => e.type === 'PAYMENT_NOTIFIED')).toHaveLength(2);
    state.settled('PAID');
    expect(state.otherTrades()).toEqual([['T2', 'n2']]);
  });

  test('a payment reported after the order closed unpaid is not kept: it is handed off, once; a paid or refunded one is', () => {
    const closed = opened();
    closed.state.settled('EXPIRED');
    expect(closed.state.unkeptEvidence()).toBeUndefined();
    closed.state.notify(notice());
    expect(closed.state.otherTrades()).toEqual([]);
    expect(closed.state.unkeptEvidence()).toEqual(['T1', 'n1']);
    closed.state.handedOff.add('T1');
    expect(closed.state.unkeptEvidence()).toBeUndefined();

    const paid = opened();
    paid.state.notify(notice());
    paid.state.settled('PAID');
    expect(paid.state.unkeptEvidence()).toBeUndefined();

    const refunded = opened();
    refunded.state.notify(notice());
    refunded.state.refundNo = 'auto-T1';
    refunded.state.settled('REFUNDED');
    expect(refunded.state.unkeptEvidence()).toBeUndefined();
  });

  test('a query answer of a refunded trade carries what was refunded; what is left to refund follows from it', () => {
    const { state } = opened();
    state.found({ status: 'PAID', tradeNo: 'TQ', paidAmount: 1000, refundedAmount: 300 }, 'query');
    expect(state.evidence).toMatchObject({ amount: 1000, refundedAmount: 300 });
    expect(describeRefunded(state.evidence!)).toBe('the provider reports 300 of trade TQ refunded');
    expect(refundableAmount(state.evidence!)).toBe(700);
    const whole = evidenceFromProvider({ status: 'REFUNDED', tradeNo: 'TR', paidAmount: 1000 }, 'query', T0);
    expect(whole.refundedAmount).toBe(-1);
    expect(describeRefunded(whole)).toBe('the provider reports trade TR refunded');
    expect(refundableAmount(whole)).toBeUndefined();
    const clean = evidenceFromProvider({ status: 'PAID', tradeNo: 'TP', paidAmount: 1000 }, 'query', T0);
    expect(clean).not.toHaveProperty('refundedAmount');
    expect(describeRefunded(clean)).toBeUndefined();
    expect(refundableAmount(clean)).toBe(1000);
  });

  test("another order's or another provider's notification is ignored and noted", () => {
    const { state } = opened();
    expect(state.notify(notice({ outTradeNo: 'ord_other' }))).toBe('OTHER_ORDER');
    expect(state.notify(notice({ notificationId: 'n3', provider: 'wechat' }))).toBe('OTHER_PROVIDER');
    expect(state.evidence).toBeUndefined();
    expect(state.timeline.filter((e) => e.type === 'NOTIFICATION_IGNORED')).toHaveLength(2);
  });

  test('a query answer becomes the evidence only when none is known; unknown fields never match the order', () => {
    const { state } = opened();
    expect(state.found({ status: 'PAID', tradeNo: 'TQ' }, 'query')).toBe(true);
    expect(state.evidence).toMatchObject({
      source: 'query',
      tradeNo: 'TQ',
      amount: -1,
      currency: 'unknown',
      merchantId: 'unknown',
    });
    expect(state.mismatch(state.evidence!)).toBe('amount -1 != 1000; currency unknown != CNY; merchant unknown != m1');
    expect(state.found({ status: 'PAID', tradeNo: 'TQ2', paidAmount: 1000 }, 'query')).toBe(false);
  });
});

describe('what the validators refuse', () => {
  test('a cooling-off refund only inside the window; a repeat while it is carried out joins it, one after is refused', () => {
    const { state } = opened();
    expect(state.refundRefusal()).toMatch(/not in its cooling-off window/);
    state.enter('COOLING_OFF');
    expect(state.refundRefusal()).toBeUndefined();
    state.refundRequest = {};
    // The buyer's retry after a timeout, or a double click: the same refund, not "the window is over".
    expect(state.refundRefusal()).toBeUndefined();
    state.enter('REFUNDING');
    expect(state.refundRefusal()).toBeUndefined();
    // The refund failed and the order went to review, or it is done: a request now is refused.
    state.enter('NEEDS_REVIEW');
    expect(state.refundRefusal()).toMatch(/not in its cooling-off window/);
    state.enter('DONE');
    expect(state.refundRefusal()).toMatch(/not in its cooling-off window/);
  });

  test('a cooling-off refund asked after the window ended, while the order is handed to fulfilment, is refused', () => {
    const { state } = opened();
    state.enter('COOLING_OFF');
    // The window's timer fired; the hand-off (a local activity) runs with the stage still COOLING_OFF. The validator
    // accepted the refund then, and the update answered PAID with no refund (seen failing: accepted).
    state.endCoolingOff();
    expect(state.refundRefusal()).toMatch(/not in its cooling-off window/);
  });

  test('a review decision only while the order waits for one; approving a refunded order is refused', () => {
    const { state } = opened();
    const approve = { decision: 'approve' as const, operator: 'ops', reason: 'checked' };
    expect(state.reviewRefusal(approve)).toMatch(/not waiting for a review decision/);
    state.enter('AWAITING_REVIEW');
    // No payment known: approving would fulfil an unpaid order; a refund decision closes it.
    expect(state.reviewRefusal(approve)).toMatch(/no known payment/);
    expect(state.reviewRefusal({ ...approve, decision: 'refund' })).toBeUndefined();
    state.notify(notice());
    expect(state.reviewRefusal(approve)).toBeUndefined();
    state.reviewAfterPaid = true;
    state.refundNo = 'rf-1';
    expect(state.reviewRefusal(approve)).toMatch(/already refunded/);
    expect(state.reviewRefusal({ ...approve, decision: 'refund' })).toBeUndefined();
  });

  test('a failed decision leaves the order waiting for another, and answers its operator', () => {
    const { state } = opened();
    state.inReview();
    state.enter('AWAITING_REVIEW');
    const d = { decision: 'refund' as const, operator: 'ops', reason: 'refund it' };
    state.reviewDecision = d;
    expect(state.reviewSettled(d)).toBe(false);
    state.reviewFailed(d, { type: 'PROVIDER_REJECTED', message: 'frozen' });
    expect(state.reviewSettled(d)).toBe(true);
    expect(state.reviewDecision).toBeUndefined();
    expect(state.reviewRefusal(d)).toBeUndefined();
  });
});

describe('support and setup', () => {
  test('an escalation answers what the order is doing now', () => {
    const waiting = opened();
    expect(waiting.state.escalationResolution()).toBe('WAITING_FOR_PAYMENT');
    waiting.state.found(
      { status: 'PAID', tradeNo: 'T1', paidAmount: 1000, currency: 'CNY', merchantId: 'm1' },
      'query',
    );
    expect(waiting.state.escalationResolution()).toBe('PAYMENT_FOUND');
    const review = opened();
    review.state.inReview();
    expect(review.state.escalationResolution()).toBe('IN_REVIEW');
    const paid = opened();
    paid.state.settled('PAID');
    expect(paid.state.escalationResolution()).toBe('CLOSED');
  });

  test('a failed setup releases every benefit the order asked for, and the mismatch check names each problem', () => {
    expect(requestedBenefits({ userId: 'u1', couponCode: 'C1', points: 200 })).toEqual([
      { participant: 'coupon', resource: 'C1', quantity: 0 },
      { participant: 'points', resource: 'u1', quantity: 200 },
    ]);
    expect(requestedBenefits({ userId: 'u1' })).toEqual([]);
    const paid = {
      source: 'callback' as const,
      tradeNo: 'T',
      amount: 999,
      currency: 'USD',
      merchantId: 'm2',
      paidAt: '',
    };
    expect(describeMismatch(paid, 1000, 'CNY', 'm1')).toBe(
      'amount 999 != 1000; currency USD != CNY; merchant m2 != m1',
    );
    expect(
      describeMismatch({ ...paid, amount: 1000, currency: 'CNY', merchantId: 'm1' }, 1000, 'CNY', 'm1'),
    ).toBeUndefined();
  });

  test('the payment URL is answered with the deadline fixed when the clock started', () => {
    const { state } = opened();
    expect(state.ready).toEqual({
      ok: true,
      value: {
        orderId: 'ord_state',
        status: 'AWAITING_PAYMENT',
        amount: 1000,
        currency: 'CNY',
        payment: {
          provider: 'alipay',
          paymentUrl: 'https://pay.example/1',
          expiresAt: new Date(T0 + 15 * MIN).toISOString(),
        },
      },
    });
    expect(state.providerExpiresAt).toBe(T0 + 16 * MIN);
  });
});
