/** The sandbox's daily bills as normalised provider rows, for the invariant checker. */
import type { BillRow } from '../providers/types';
import { parseBill } from '../sandbox-provider/bill';
import { fromMajorString } from '../shared/money';

/** Reads the sandbox's bills for every China day since `since` as normalised provider rows. */
export async function sandboxBillRows(sandbox: string, since: number): Promise<BillRow[]> {
  const days = new Set<string>();
  for (let t = since - 86_400_000; t <= Date.now() + 86_400_000; t += 3_600_000) {
    days.add(new Date(t + 8 * 3_600_000).toISOString().slice(0, 10));
  }
  const rows: BillRow[] = [];
  for (const day of days) {
    const r = await fetch(`${sandbox}/v1/bills/${day}`);
    if (!r.ok) throw new Error(`bill ${day}: ${r.status}`);
    for (const rec of parseBill(await r.text())) {
      const currency = rec['币种'];
      const amount = Math.abs(fromMajorString(rec['商家实收（元）'], currency));
      rows.push({
        kind: rec['业务类型'] === '退款' ? 'REFUND' : 'PAYMENT',
        outTradeNo: rec['商户订单号'].trim(),
        tradeNo: rec['交易号'].trim(),
        outRefundNo: rec['退款批次号/请求号'].trim() || undefined,
        amount,
        currency,
        at: rec['完成时间'],
      });
    }
  }
  return rows;
}

