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
    for (const rec of parseBill(await fetchBill(sandbox, day))) {
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

/** Downloads one day's bill, retrying provider faults (5xx) with backoff as any bill downloader must. */
async function fetchBill(sandbox: string, day: string): Promise<string> {
  let last = '';
  for (let attempt = 0; attempt < 10; attempt++) {
    try {
      const r = await fetch(`${sandbox}/v1/bills/${day}`, { signal: AbortSignal.timeout(30_000) });
      if (r.ok) return await r.text();
      last = `HTTP ${r.status}`;
      if (r.status < 500) break;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((done) => setTimeout(done, Math.min(200 * 2 ** attempt, 5000)));
  }
  throw new Error(`could not download the sandbox bill for ${day}: ${last}`);
}
