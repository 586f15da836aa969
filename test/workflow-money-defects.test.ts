/**
 * Money defects of issue #16 (point 4), one test per defect, each seen failing before its fix: a refused cooling-off
 * refund and the review that follows it, which payments row a refund marks, the result of a late payment refunded by
 * the order's own workflow, a late-payment refund the provider refuses or whose amount is unknown, a second trade
 * reported while the order's workflow still runs, and the cooling-off update's answer for a refund that failed.
 *
 * The end-to-end tests run the whole system (real dev server, MariaDB, sandbox). Where the sandbox cannot produce the
 * situation (it has one trade per order, and always reports the paid amount) a worker with scripted activities on a
 * task queue of its own runs the real workflow code, as in test/workflow-branches.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { refundPayment } from '../src/activities/payments';
import { autoRefundNo } from '../src/contracts/order';
import type { PaymentProvider } from '../src/providers/types';
import { createProduct, placeOrder, startSystem, type TestSystem, waitForStatus } from './support/system';

let sys: TestSystem;

beforeAll(async () => {
  sys = await startSystem({ QUERY_FIRST_DELAY: '10m', QUERY_MAX_INTERVAL: '10m' });
}, 90_000);

afterAll(async () => {
  await sys?.stop();
});

describe('defect 2: refundPayment marks the order payment REFUNDED only for the trade that paid it', () => {
  test('refunding a second trade of a PAID order leaves the order payment PAID; refunding the paying trade marks it REFUNDED; repeats change nothing', async () => {
    const sku = await createProduct(sys, { price: 1500, stock: 2 });
    const { orderId } = (await placeOrder(sys, sku)) as { orderId: string };
    await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    await waitForStatus(sys, orderId, ['PAID']);
    const paying = (await sys.db('payments').where({ out_trade_no: orderId }).first('trade_no')).trade_no as string;
    // A provider that takes every refund (the sandbox keeps one trade per order, so it cannot hold a second one).
    const refunds: string[] = [];
    const provider = {
      name: 'sandbox',
      merchantId: sys.config.sandboxMerchantId,
      async refund(input: { outRefundNo: string; amount: number }) {
        refunds.push(input.outRefundNo);
        return { refundNo: `R-${input.outRefundNo}`, amount: input.amount, refundedAt: new Date().toISOString() };
      },
    } as unknown as PaymentProvider;
    const second = `SECOND-${randomBytes(4).toString('hex')}`;
    const refundOf = (tradeNo: string) =>
      refundPayment(sys.db, { sandbox: provider }, { orderId, provider: 'sandbox', tradeNo, outRefundNo: autoRefundNo(orderId, tradeNo), amount: 1500, currency: 'CNY', reason: 'test' });

    await refundOf(second);
    await refundOf(second);
    expect(await sys.db('payments').where({ out_trade_no: orderId }).first('status', 'trade_no')).toEqual({ status: 'PAID', trade_no: paying });
    expect(await sys.db('refunds').where({ out_refund_no: autoRefundNo(orderId, second) }).first('status', 'trade_no')).toEqual({ status: 'SUCCEEDED', trade_no: second });

    await refundOf(paying);
    await refundOf(paying);
    expect(await sys.db('payments').where({ out_trade_no: orderId }).first('status', 'trade_no')).toEqual({ status: 'REFUNDED', trade_no: paying });
    expect(await sys.db('order_events').where({ order_id: orderId, type: 'REFUNDED' })).toHaveLength(2);
  });
});
