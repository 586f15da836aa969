/**
 * The classification of reconciliation differences (src/reconciliation/classify.ts), line by line and without a
 * database: every class and detail a bill payment or refund can get, and the keys items are stored under.
 */
import {
  type LocalPayment,
  type LocalRefund,
  billKey,
  classifyBillPayment,
  classifyDispute,
  classifyDuplicate,
  classifyRefund,
} from '../src/reconciliation/classify';
import type { BillRow } from '../src/providers/types';

const payment: BillRow = {
  kind: 'PAYMENT',
  outTradeNo: 'ord_1',
  tradeNo: 'T-1',
  amount: 1999,
  currency: 'CNY',
  at: '2026-11-25T02:00:00.000Z',
};
const refund: BillRow = {
  kind: 'REFUND',
  outTradeNo: 'ord_1',
  tradeNo: 'T-1',
  outRefundNo: 'rf-ord_1-T-1',
  amount: 1999,
  currency: 'CNY',
  at: '2026-11-25T03:00:00.000Z',
};

/** A Stripe dispute's balance transaction: the disputed money withdrawn from our balance. */
const withdrawal: BillRow = {
  kind: 'DISPUTE',
  outTradeNo: 'ord_1',
  tradeNo: 'T-1',
  disputeId: 'dp_1',
  disputeFunds: 'WITHDRAWN',
  amount: 1999,
  currency: 'CNY',
  at: '2026-11-26T04:00:00.000Z',
  providerStatus: 'needs_response',
};
/** The same dispute won: its money reinstated to our balance. */
const reinstatement: BillRow = {
  ...withdrawal,
  disputeFunds: 'REINSTATED',
  at: '2026-12-20T04:00:00.000Z',
  providerStatus: 'won',
};

/** A local payment paid by the bill's trade, for the bill's amount: what a MATCHED line looks like. */
function paidLocally(overrides: Partial<LocalPayment> = {}): LocalPayment {
  return {
    out_trade_no: 'ord_1',
    provider: 'sandbox',
    trade_no: 'T-1',
    status: 'PAID',
    amount: 1999,
    currency: 'CNY',
    paid_amount: 1999,
    paid_currency: 'CNY',
    order_status: 'PAID',
    paid_trade_no: 'T-1',
    ...overrides,
  };
}

function refundedLocally(overrides: Partial<LocalRefund> = {}): LocalRefund {
  return {
    out_refund_no: 'rf-ord_1-T-1',
    out_trade_no: 'ord_1',
    status: 'SUCCEEDED',
    amount: 1999,
    currency: 'CNY',
    ...overrides,
  };
}

describe('a payment line of the bill', () => {
  test('that matches the local payment in trade, amount and currency is MATCHED with no evidence kept', () => {
    expect(classifyBillPayment(payment, paidLocally(), 'sandbox')).toEqual({
      class: 'MATCHED',
      detail: null,
      kind: 'PAYMENT',
      local_amount: 1999,
      local_currency: 'CNY',
      evidence: {},
      repair_status: 'NONE',
    });
  });

  test('for an order we never created is an UNKNOWN_TRADE for a person, never repaired', () => {
    const item = classifyBillPayment(payment, undefined, 'sandbox');
    expect(item).toMatchObject({
      class: 'UNKNOWN_TRADE',
      detail: 'NO_LOCAL_PAYMENT',
      repair_status: 'NONE',
      local_amount: null,
    });
    expect(item.evidence).toEqual({
      bill: { tradeNo: 'T-1', amount: 1999, currency: 'CNY', at: payment.at },
      local: null,
    });
  });

  test("of one provider never speaks for another provider's order: UNKNOWN_TRADE, OTHER_PROVIDER", () => {
    const item = classifyBillPayment(payment, paidLocally({ provider: 'alipay', status: 'PENDING' }), 'sandbox');
    expect(item).toMatchObject({ class: 'UNKNOWN_TRADE', detail: 'OTHER_PROVIDER', repair_status: 'NONE' });
    expect(item.evidence).toMatchObject({ local: { provider: 'alipay', orderStatus: 'PAID' } });
  });

  /** The payment of an order still waiting to be paid here (no trade recorded). */
  const awaitingPayment = () =>
    paidLocally({
      status: 'PENDING',
      trade_no: null,
      paid_amount: null,
      paid_currency: null,
      order_status: 'AWAITING_PAYMENT',
      paid_trade_no: null,
    });

  test('paid at the provider but not locally is PAID_NOT_RECORDED, to be repaired, named after the order status', () => {
    const item = classifyBillPayment(payment, awaitingPayment(), 'sandbox');
    expect(item).toMatchObject({
      class: 'PAID_NOT_RECORDED',
      detail: 'ORDER_AWAITING_PAYMENT',
      repair_status: 'PENDING',
      local_amount: null,
      local_currency: 'CNY',
    });
    const closed = classifyBillPayment(
      payment,
      paidLocally({ status: 'CLOSED', order_status: null, paid_trade_no: null, trade_no: 'T-0' }),
      'sandbox',
    );
    expect(closed).toMatchObject({ class: 'PAID_NOT_RECORDED', detail: 'ORDER_UNKNOWN' });
  });

  test('a payment line the provider marks not settled (a Stripe bank debit still pending, or failed) is for a person, never repaired into PAID', () => {
    const waiting = awaitingPayment();
    for (const providerStatus of ['pending', 'failed']) {
      const item = classifyBillPayment({ ...payment, providerStatus }, waiting, 'sandbox');
      expect(item).toMatchObject({ class: 'UNKNOWN_TRADE', detail: 'PROVIDER_NOT_SETTLED', repair_status: 'NONE' });
      expect(item.evidence).toMatchObject({ bill: { providerStatus } });
    }
    // Paid locally (the provider's success event came since): the line is that payment.
    expect(classifyBillPayment({ ...payment, providerStatus: 'pending' }, paidLocally(), 'sandbox').class).toBe(
      'MATCHED',
    );
  });

  test('paid locally by another trade of the same order is not this trade: PAID_NOT_RECORDED', () => {
    const item = classifyBillPayment({ ...payment, tradeNo: 'T-2' }, paidLocally(), 'sandbox');
    expect(item).toMatchObject({ class: 'PAID_NOT_RECORDED', repair_status: 'PENDING' });
  });

  test("counts as paid locally when the order's paid trade is the bill's, even if the payment row names another", () => {
    expect(classifyBillPayment(payment, paidLocally({ trade_no: 'T-0', paid_trade_no: 'T-1' }), 'sandbox').class).toBe(
      'MATCHED',
    );
    expect(classifyBillPayment(payment, paidLocally({ status: 'REFUNDED' }), 'sandbox').class).toBe('MATCHED');
  });

  test('paid locally for another amount is an AMOUNT_MISMATCH (AMOUNT), compared with what was paid, not the order amount', () => {
    expect(classifyBillPayment(payment, paidLocally({ paid_amount: 1000 }), 'sandbox')).toMatchObject({
      class: 'AMOUNT_MISMATCH',
      detail: 'AMOUNT',
      local_amount: 1000,
    });
    // The order's amount differs but the buyer paid the bill's amount: it matches.
    expect(classifyBillPayment(payment, paidLocally({ amount: 2500 }), 'sandbox').class).toBe('MATCHED');
    // No paid amount recorded: the order's amount is what we expected.
    expect(classifyBillPayment(payment, paidLocally({ amount: 2500, paid_amount: null }), 'sandbox')).toMatchObject({
      class: 'AMOUNT_MISMATCH',
      detail: 'AMOUNT',
      local_amount: 2500,
    });
  });

  test('paid locally in another currency is an AMOUNT_MISMATCH (CURRENCY), before the amount is compared', () => {
    const item = classifyBillPayment(payment, paidLocally({ paid_currency: 'USD', paid_amount: 5 }), 'sandbox');
    expect(item).toMatchObject({ class: 'AMOUNT_MISMATCH', detail: 'CURRENCY', local_currency: 'USD' });
    expect(item.evidence).toMatchObject({
      bill: { amount: 1999, currency: 'CNY' },
      local: { currency: 'USD', paidAmount: 5 },
    });
  });

  test('reads amounts MySQL returns as strings as numbers', () => {
    const fromMysql = paidLocally({ amount: '1999' as unknown as number, paid_amount: '1999' as unknown as number });
    expect(classifyBillPayment(payment, fromMysql, 'sandbox')).toMatchObject({ class: 'MATCHED', local_amount: 1999 });
  });
});

describe('a refund line of the bill', () => {
  test('that matches the local refund is MATCHED', () => {
    expect(classifyRefund(refund, refundedLocally())).toEqual({
      class: 'MATCHED',
      detail: null,
      kind: 'REFUND',
      local_amount: 1999,
      local_currency: 'CNY',
      evidence: {},
      repair_status: 'NONE',
    });
  });

  test.each([
    ['no local refund', 'MISSING_LOCALLY', undefined],
    ['a local refund not succeeded', 'LOCAL_PENDING', refundedLocally({ status: 'PENDING' })],
    ['a local refund of another order', 'OTHER_TRADE', refundedLocally({ out_trade_no: 'ord_2' })],
    ['a local refund in another currency', 'CURRENCY', refundedLocally({ currency: 'USD' })],
    ['a local refund of another amount', 'AMOUNT', refundedLocally({ amount: 999 })],
  ])('against %s is a REFUND_MISMATCH (%s) for a person, never repaired', (_what, detail, local) => {
    const item = classifyRefund(refund, local);
    expect(item).toMatchObject({ class: 'REFUND_MISMATCH', detail, kind: 'REFUND', repair_status: 'NONE' });
    expect(item.evidence).toMatchObject({ bill: { outRefundNo: 'rf-ord_1-T-1', amount: 1999 } });
  });
});

describe('a refund line whose outcome at the provider is not success', () => {
  test.each([
    ['WeChat REFUNDCLOSE (the refund was closed)', 'FAILED', 'REFUNDCLOSE', 'PROVIDER_FAILED'],
    ['WeChat CHANGE (the money could not reach the card)', 'FAILED', 'CHANGE', 'PROVIDER_FAILED'],
    ['WeChat PROCESSING (not done when the bill was made)', 'PROCESSING', 'PROCESSING', 'PROVIDER_PROCESSING'],
    ['Stripe refund_failure (the refund came back)', 'FAILED', 'refund_failure', 'PROVIDER_FAILED'],
  ] as const)(
    'against a local refund recorded as succeeded, %s is a REFUND_MISMATCH for a person, never MATCHED',
    (_what, refundStatus, providerStatus, detail) => {
      const row: BillRow = { ...refund, refundStatus, providerStatus };
      const item = classifyRefund(row, refundedLocally());
      expect(item).toMatchObject({ class: 'REFUND_MISMATCH', detail, kind: 'REFUND', repair_status: 'NONE' });
      expect(item.evidence).toMatchObject({
        bill: { outRefundNo: 'rf-ord_1-T-1', refundStatus, providerStatus },
        local: { status: 'SUCCEEDED', amount: 1999 },
      });
    },
  );

  test('a failed refund the bill lists and we never recorded is still a REFUND_MISMATCH, naming the failure', () => {
    expect(classifyRefund({ ...refund, refundStatus: 'FAILED', providerStatus: 'CHANGE' }, undefined)).toMatchObject({
      class: 'REFUND_MISMATCH',
      detail: 'PROVIDER_FAILED',
      local_amount: null,
    });
  });

  test('a refund the bill states SUCCEEDED is compared as before', () => {
    expect(
      classifyRefund({ ...refund, refundStatus: 'SUCCEEDED', providerStatus: 'SUCCESS' }, refundedLocally()),
    ).toMatchObject({
      class: 'MATCHED',
      detail: null,
    });
  });

  test("a failure line is stored apart from the refund's own line, so the two are not taken for a duplicate", () => {
    const failure: BillRow = {
      ...refund,
      refundStatus: 'FAILED',
      providerStatus: 'refund_failure',
      refundFailureLine: true,
    };
    expect(billKey(failure)).toBe('RF:rf-ord_1-T-1');
    expect(billKey(failure)).not.toBe(billKey(refund));
    expect(billKey({ ...refund, refundStatus: 'FAILED', providerStatus: 'REFUNDCLOSE' })).toBe('R:rf-ord_1-T-1');
  });
});

describe('a dispute (chargeback) line of the bill', () => {
  test("that withdraws a paid order's money is DISPUTED for a person, whatever we recorded, with both sides as evidence", () => {
    expect(classifyDispute(withdrawal, paidLocally({ provider: 'stripe' }), 'stripe')).toEqual({
      class: 'DISPUTED',
      detail: 'FUNDS_WITHDRAWN',
      kind: 'DISPUTE',
      local_amount: 1999,
      local_currency: 'CNY',
      evidence: {
        bill: {
          disputeId: 'dp_1',
          disputeFunds: 'WITHDRAWN',
          outTradeNo: 'ord_1',
          tradeNo: 'T-1',
          amount: 1999,
          currency: 'CNY',
          at: withdrawal.at,
          providerStatus: 'needs_response',
        },
        local: {
          provider: 'stripe',
          paymentStatus: 'PAID',
          orderStatus: 'PAID',
          tradeNo: 'T-1',
          paidTradeNo: 'T-1',
          amount: 1999,
          paidAmount: 1999,
          currency: 'CNY',
        },
      },
      repair_status: 'NONE',
    });
  });

  test('that withdraws money of an order we have no payment for is DISPUTED all the same', () => {
    expect(classifyDispute(withdrawal, undefined, 'stripe')).toMatchObject({
      class: 'DISPUTED',
      detail: 'FUNDS_WITHDRAWN',
      local_amount: null,
      evidence: { bill: { disputeId: 'dp_1' }, local: null },
    });
  });

  test('that reinstates the money of a won dispute is recorded with its evidence and needs nobody: MATCHED, DISPUTE_REINSTATED', () => {
    expect(classifyDispute(reinstatement, paidLocally({ provider: 'stripe' }), 'stripe')).toMatchObject({
      class: 'MATCHED',
      detail: 'DISPUTE_REINSTATED',
      kind: 'DISPUTE',
      repair_status: 'NONE',
      evidence: { bill: { disputeId: 'dp_1', disputeFunds: 'REINSTATED', providerStatus: 'won' } },
    });
  });

  test("is stored apart from the payment's and refunds' lines: the withdrawal and the reinstatement of one dispute under keys of their own", () => {
    expect(billKey(withdrawal)).toBe('DW:dp_1');
    expect(billKey(reinstatement)).toBe('DR:dp_1');
    expect(new Set([billKey(payment), billKey(refund), billKey(withdrawal), billKey(reinstatement)]).size).toBe(4);
  });

  test('listed twice, a withdrawal is DISPUTED, DUPLICATED_IN_BILL', () => {
    expect(classifyDuplicate(withdrawal, 3)).toMatchObject({
      class: 'DISPUTED',
      detail: 'DUPLICATED_IN_BILL',
      kind: 'DISPUTE',
      evidence: { firstListedAtRow: 3 },
    });
  });
});

describe('keys and duplicates', () => {
  test('a payment is stored under its trade number, a refund under its refund number (or trade and time without one)', () => {
    expect(billKey(payment)).toBe('P:T-1');
    expect(billKey(refund)).toBe('R:rf-ord_1-T-1');
    expect(billKey({ ...refund, outRefundNo: undefined })).toBe(`R:T-1@${refund.at}`);
  });

  test('a line the bill lists twice is a mismatch of its kind, DUPLICATED_IN_BILL, naming the first row', () => {
    expect(classifyDuplicate(payment, 7)).toMatchObject({
      class: 'AMOUNT_MISMATCH',
      detail: 'DUPLICATED_IN_BILL',
      kind: 'PAYMENT',
      evidence: { firstListedAtRow: 7 },
    });
    expect(classifyDuplicate(refund, 0)).toMatchObject({
      class: 'REFUND_MISMATCH',
      detail: 'DUPLICATED_IN_BILL',
      kind: 'REFUND',
      evidence: { firstListedAtRow: 0 },
    });
  });
});
