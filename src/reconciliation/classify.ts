/**
 * The classification of reconciliation differences: what one line of a provider's bill is, given what we recorded
 * (MATCHED, PAID_NOT_RECORDED, AMOUNT_MISMATCH, REFUND_MISMATCH, UNKNOWN_TRADE, DISPUTED; see
 * contracts/reconciliation.ts).
 * Pure: no database, no clock; the activities read the rows and store the items (src/activities/reconciliation.ts).
 */
import type { ReconciliationClass } from '../contracts/reconciliation';
import type { BillRow } from '../providers/types';

const num = (v: unknown): number => Number(v ?? 0);

/** A local payment row with its order's status, as bill lines are matched against it. */
export interface LocalPayment {
  out_trade_no: string;
  /** The provider the order pays with (only read where a bill's rows are matched). */
  provider?: string;
  trade_no: string | null;
  status: string;
  amount: number;
  currency: string;
  paid_amount: number | null;
  paid_currency: string | null;
  order_status: string | null;
  paid_trade_no: string | null;
}

/** A local refund row, as bill refund lines are matched against it. */
export interface LocalRefund {
  out_refund_no: string;
  out_trade_no: string;
  status: string;
  amount: number;
  currency: string;
}

/** A stored item before insertion. */
export interface NewItem {
  class: ReconciliationClass;
  detail: string | null;
  kind: 'PAYMENT' | 'REFUND' | 'DISPUTE';
  local_amount: number | null;
  local_currency: string | null;
  evidence: Record<string, unknown>;
  repair_status: 'NONE' | 'PENDING';
}

/**
 * The key a bill line is stored under in its run: `P:<tradeNo>` for a payment, `R:<outRefundNo>` for a refund,
 * `RF:<outRefundNo>` for a line of its own reporting that refund failed (Stripe's refund_failure), which the same bill
 * may list beside the refund's own line: not a duplicate of it. A dispute's lines: `DW:<disputeId>` for the money
 * withdrawn, `DR:<disputeId>` for the money reinstated, never the payment's or a refund's key.
 */
export function billKey(row: BillRow): string {
  if (row.kind === 'PAYMENT') return `P:${row.tradeNo}`;
  if (row.kind === 'DISPUTE')
    return `${row.disputeFunds === 'REINSTATED' ? 'DR' : 'DW'}:${row.disputeId ?? `${row.tradeNo}@${row.at}`}`;
  const refund = row.outRefundNo ?? `${row.tradeNo}@${row.at}`;
  return row.refundFailureLine ? `RF:${refund}` : `R:${refund}`;
}

/** What a reconciliation item's evidence shows of the local payment and its order. */
function paymentView(local: LocalPayment) {
  return {
    paymentStatus: local.status,
    orderStatus: local.order_status,
    tradeNo: local.trade_no,
    paidTradeNo: local.paid_trade_no,
    amount: num(local.amount),
    paidAmount: local.paid_amount === null ? null : num(local.paid_amount),
    currency: local.paid_currency ?? local.currency,
  };
}

/** Classifies one payment line of a provider's bill against the local payment of the same out-trade-no (pure). */
export function classifyBillPayment(row: BillRow, local: LocalPayment | undefined, billProvider: string): NewItem {
  const bill = { tradeNo: row.tradeNo, amount: row.amount, currency: row.currency, at: row.at };
  if (!local) {
    return {
      class: 'UNKNOWN_TRADE',
      detail: 'NO_LOCAL_PAYMENT',
      kind: 'PAYMENT',
      local_amount: null,
      local_currency: null,
      evidence: { bill, local: null },
      repair_status: 'NONE',
    };
  }
  if (local.provider !== undefined && local.provider !== billProvider) {
    // One provider's bill never speaks for another provider's order: flagged for a person, never repaired.
    const localView = { provider: local.provider, orderStatus: local.order_status };
    return {
      class: 'UNKNOWN_TRADE',
      detail: 'OTHER_PROVIDER',
      kind: 'PAYMENT',
      local_amount: null,
      local_currency: local.currency,
      evidence: { bill, local: localView },
      repair_status: 'NONE',
    };
  }
  const localView = paymentView(local);
  const paidLocally =
    (local.status === 'PAID' || local.status === 'REFUNDED') &&
    (local.trade_no === row.tradeNo || local.paid_trade_no === row.tradeNo);
  // A line the provider itself marks as not settled (a Stripe bank debit still pending, or failed) is not a payment to
  // repair into PAID: a person watches it (the provider's success event, or its failure line, decides).
  if (!paidLocally && row.providerStatus !== undefined && row.providerStatus !== 'succeeded') {
    return {
      class: 'UNKNOWN_TRADE',
      detail: 'PROVIDER_NOT_SETTLED',
      kind: 'PAYMENT',
      local_amount: null,
      local_currency: local.currency,
      evidence: { bill: { ...bill, providerStatus: row.providerStatus }, local: localView },
      repair_status: 'NONE',
    };
  }
  if (!paidLocally) {
    return {
      class: 'PAID_NOT_RECORDED',
      detail: `ORDER_${local.order_status ?? 'UNKNOWN'}`.slice(0, 32),
      kind: 'PAYMENT',
      local_amount: null,
      local_currency: local.currency,
      evidence: { bill, local: localView },
      repair_status: 'PENDING',
    };
  }
  const localAmount = local.paid_amount === null ? num(local.amount) : num(local.paid_amount);
  const localCurrency = local.paid_currency ?? local.currency;
  const detail = localCurrency !== row.currency ? 'CURRENCY' : localAmount !== row.amount ? 'AMOUNT' : null;
  return {
    class: detail ? 'AMOUNT_MISMATCH' : 'MATCHED',
    detail,
    kind: 'PAYMENT',
    local_amount: localAmount,
    local_currency: localCurrency,
    evidence: detail ? { bill, local: localView } : {},
    repair_status: 'NONE',
  };
}

/**
 * Classifies one refund line of a provider's bill against the local refund of the same refund number (pure). A line
 * whose refund the provider has not completed (failed, closed, returned, still processing) is a REFUND_MISMATCH
 * (PROVIDER_FAILED, PROVIDER_PROCESSING) whatever we recorded: the buyer may not have the money.
 */
export function classifyRefund(row: BillRow, local: LocalRefund | undefined): NewItem {
  const bill = {
    outRefundNo: row.outRefundNo,
    tradeNo: row.tradeNo,
    outTradeNo: row.outTradeNo,
    amount: row.amount,
    currency: row.currency,
    at: row.at,
    ...(row.refundStatus ? { refundStatus: row.refundStatus } : {}),
    ...(row.providerStatus ? { providerStatus: row.providerStatus } : {}),
    ...(row.refundFailureLine ? { refundFailureLine: true } : {}),
  };
  const base = { kind: 'REFUND' as const, repair_status: 'NONE' as const };
  const notDone =
    row.refundStatus === 'FAILED'
      ? 'PROVIDER_FAILED'
      : row.refundStatus === 'PROCESSING'
        ? 'PROVIDER_PROCESSING'
        : null;
  if (notDone)
    return {
      ...base,
      class: 'REFUND_MISMATCH',
      detail: notDone,
      local_amount: local ? num(local.amount) : null,
      local_currency: local?.currency ?? null,
      evidence: {
        bill,
        local: local
          ? {
              status: local.status,
              outTradeNo: local.out_trade_no,
              amount: num(local.amount),
              currency: local.currency,
            }
          : null,
      },
    };
  if (!local)
    return {
      ...base,
      class: 'REFUND_MISMATCH',
      detail: 'MISSING_LOCALLY',
      local_amount: null,
      local_currency: null,
      evidence: { bill, local: null },
    };
  const localView = {
    status: local.status,
    outTradeNo: local.out_trade_no,
    amount: num(local.amount),
    currency: local.currency,
  };
  const detail =
    local.status !== 'SUCCEEDED'
      ? `LOCAL_${local.status}`
      : local.out_trade_no !== row.outTradeNo
        ? 'OTHER_TRADE'
        : local.currency !== row.currency
          ? 'CURRENCY'
          : num(local.amount) !== row.amount
            ? 'AMOUNT'
            : null;
  return {
    ...base,
    class: detail ? 'REFUND_MISMATCH' : 'MATCHED',
    detail,
    local_amount: num(local.amount),
    local_currency: local.currency,
    evidence: detail ? { bill, local: localView } : {},
  };
}

/**
 * Classifies one dispute line of a provider's bill (pure), with the local payment of its order as evidence. Money
 * withdrawn is DISPUTED (FUNDS_WITHDRAWN) for a person whatever we recorded: the order may be paid and shipped while
 * its money is gone. Money reinstated (a won dispute) is recorded as MATCHED (DISPUTE_REINSTATED) with its evidence:
 * the order's money is back, nobody needs to act.
 */
export function classifyDispute(row: BillRow, local: LocalPayment | undefined, billProvider: string): NewItem {
  const bill = {
    disputeId: row.disputeId,
    disputeFunds: row.disputeFunds,
    outTradeNo: row.outTradeNo,
    tradeNo: row.tradeNo,
    amount: row.amount,
    currency: row.currency,
    at: row.at,
    ...(row.providerStatus ? { providerStatus: row.providerStatus } : {}),
  };
  const localView = local ? { provider: local.provider ?? billProvider, ...paymentView(local) } : null;
  const reinstated = row.disputeFunds === 'REINSTATED';
  return {
    class: reinstated ? 'MATCHED' : 'DISPUTED',
    detail: reinstated ? 'DISPUTE_REINSTATED' : 'FUNDS_WITHDRAWN',
    kind: 'DISPUTE',
    local_amount: local ? (local.paid_amount === null ? num(local.amount) : num(local.paid_amount)) : null,
    local_currency: local ? (local.paid_currency ?? local.currency) : null,
    evidence: { bill, local: localView },
    repair_status: 'NONE',
  };
}

/**
 * A bill line whose key the bill already listed at `firstListedAtRow`: a payment listed twice is an AMOUNT_MISMATCH,
 * a refund listed twice a REFUND_MISMATCH, a dispute's line listed twice DISPUTED, all DUPLICATED_IN_BILL and left for
 * a person (pure).
 */
export function classifyDuplicate(row: BillRow, firstListedAtRow: number): NewItem {
  const evidence = {
    bill: {
      tradeNo: row.tradeNo,
      outRefundNo: row.outRefundNo,
      amount: row.amount,
      currency: row.currency,
      at: row.at,
    },
    firstListedAtRow,
  };
  const base = {
    detail: 'DUPLICATED_IN_BILL',
    local_amount: null,
    local_currency: null,
    repair_status: 'NONE' as const,
  };
  switch (row.kind) {
    case 'PAYMENT':
      return { ...base, class: 'AMOUNT_MISMATCH', kind: 'PAYMENT', evidence };
    case 'REFUND':
      return { ...base, class: 'REFUND_MISMATCH', kind: 'REFUND', evidence };
    case 'DISPUTE':
      return {
        ...base,
        class: 'DISPUTED',
        kind: 'DISPUTE',
        evidence: { ...evidence, bill: { ...evidence.bill, disputeId: row.disputeId, disputeFunds: row.disputeFunds } },
      };
  }
}
