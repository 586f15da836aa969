/** Rows of the payments table as the order's workflow leaves them, for suites that seed reconciliation data. */

/** A payment PAID in full at `paidAt` (its provider-side expiry an hour later). */
export function paidPaymentRow(p: {
  outTradeNo: string;
  tradeNo: string;
  amount: number;
  paidAt: Date;
  provider: string;
  merchantId: string;
}) {
  return {
    out_trade_no: p.outTradeNo,
    order_id: p.outTradeNo,
    provider: p.provider,
    merchant_id: p.merchantId,
    trade_no: p.tradeNo,
    status: 'PAID',
    amount: p.amount,
    currency: 'CNY',
    paid_amount: p.amount,
    paid_currency: 'CNY',
    paid_at: p.paidAt,
    expires_at: new Date(p.paidAt.getTime() + 3_600_000),
  };
}
