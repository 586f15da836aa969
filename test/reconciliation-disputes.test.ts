/**
 * Stripe disputes (chargebacks) in reconciliation: the Stripe adapter reading a fake Stripe's balance transactions,
 * the reconciliation activities called directly (no workflow) against a database of this file's own. A withdrawal is
 * stored as a DISPUTED item that counts as an open difference (report, review backlog, gauge); a reinstatement is
 * recorded and needs nobody; a retried comparison stores each line once.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { createReconciliationActivities } from '../src/activities/reconciliation';
import { createMetrics } from '../src/client/metrics';
import { refreshOpsGauges } from '../src/client/routes/ops';
import { billDateOf, billDayRange } from '../src/contracts/reconciliation';
import { createDb } from '../src/db/knex';
import { Secret } from '../src/providers/keys';
import { createStripeProvider } from '../src/providers/stripe';
import { openRun, readItems, readRun } from '../src/reconciliation/runs';
import { freshDatabase } from './support/env';
import { paidPaymentRow } from './support/payment-rows';
import { type FakeServer, startFakeServer } from './support/provider-fakes';

const tag = randomBytes(3).toString('hex');
const merchantId = `acct_disputes${tag}`;
let db: Knex;
let stripe: FakeServer;
/** The balance transactions the fake Stripe lists (one page). */
let transactions: unknown[] = [];

beforeAll(async () => {
  // A database of its own: the gauge sums every completed Stripe run of the last 31 days.
  db = createDb(await freshDatabase('disputes'), { poolMax: 5 });
  stripe = await startFakeServer(() => ({
    status: 200,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ object: 'list', url: '/v1/balance_transactions', has_more: false, data: transactions }),
  }));
}, 60_000);

afterAll(async () => {
  await stripe?.close();
  await db?.destroy();
});

const provider = () =>
  createStripeProvider({
    secretKey: new Secret('sk_test_payflowDisputes0123456789'),
    webhookSecret: new Secret('whsec_payflowDisputes0123456789'),
    livemode: false,
    paymentPageUrl: 'https://shop.example.com/pay',
    accountId: merchantId,
    apiBase: stripe.url,
  });

const intent = (id: string, order: string) => ({ id, object: 'payment_intent', metadata: { out_trade_no: order } });

/** An order paid through Stripe at `paidAt`, with its payment row, as the order workflow leaves it. */
async function paidOrder(order: string, pi: string, amount: number, paidAt: Date): Promise<void> {
  await db('orders').insert({
    order_id: order,
    user_id: 'u-disputes',
    status: 'PAID',
    amount,
    currency: 'CNY',
    provider: 'stripe',
    paid_trade_no: pi,
  });
  await db('payments').insert(
    paidPaymentRow({ outTradeNo: order, tradeNo: pi, amount, paidAt, provider: 'stripe', merchantId }),
  );
}

test("a dispute's withdrawal is an open DISPUTED difference of its order, its reinstatement is recorded and needs nobody, and a retried comparison stores each line once", async () => {
  // Yesterday (UTC, Stripe's bill day): within the gauge's 31 days, and a day that has ended.
  const day = billDateOf(Date.now() - 86_400_000, 'stripe');
  const start = billDayRange(day, 'stripe')!.start.getTime();
  const at = (hours: number) => Math.floor((start + hours * 3_600_000) / 1000);
  const [paid, disputed, won] = [`ord_paid${tag}`, `ord_disputed${tag}`, `ord_won${tag}`] as const;
  // Paid today and disputed at once; disputed weeks ago (its withdrawal was another day's difference) and won today.
  await paidOrder(paid, `pi_paid${tag}`, 1234, new Date(start + 3_600_000));
  await paidOrder(disputed, `pi_disputed${tag}`, 1234, new Date(start + 3_600_000));
  await paidOrder(won, `pi_won${tag}`, 5000, new Date(start - 40 * 86_400_000));
  const dispute = (id: string, pi: string, order: string, amount: number, status: string) => ({
    id,
    object: 'dispute',
    amount,
    currency: 'cny',
    status,
    reason: 'fraudulent',
    charge: `ch_${id}`,
    payment_intent: intent(pi, order),
    metadata: {},
  });
  const charge = (pi: string, order: string, amount: number) => ({
    id: `txn_c_${pi}`,
    object: 'balance_transaction',
    type: 'charge',
    created: at(1),
    currency: 'cny',
    amount,
    source: {
      id: `ch_${pi}`,
      object: 'charge',
      amount,
      currency: 'cny',
      metadata: {},
      payment_intent: intent(pi, order),
    },
  });
  transactions = [
    charge(`pi_paid${tag}`, paid, 1234),
    charge(`pi_disputed${tag}`, disputed, 1234),
    {
      id: `txn_dw${tag}`,
      object: 'balance_transaction',
      type: 'adjustment',
      reporting_category: 'dispute',
      created: at(5),
      currency: 'cny',
      amount: -1234,
      fee: 1500,
      net: -2734,
      source: dispute(`dp_a${tag}`, `pi_disputed${tag}`, disputed, 1234, 'needs_response'),
    },
    {
      id: `txn_dr${tag}`,
      object: 'balance_transaction',
      type: 'adjustment',
      reporting_category: 'dispute_reversal',
      created: at(6),
      currency: 'cny',
      amount: 5000,
      fee: 0,
      net: 5000,
      source: dispute(`dp_b${tag}`, `pi_won${tag}`, won, 5000, 'won'),
    },
  ];

  const activities = createReconciliationActivities({ db, providers: { stripe: provider() } });
  const { run } = await openRun(db, { provider: 'stripe', date: day, rerun: false, trigger: 'API' });
  await activities.beginReconciliationRun({ runId: run.id, workflowId: run.workflowId, workflowRunId: 'r1' });
  const first = await activities.compareBill({ runId: run.id });
  // A second attempt without a heartbeat (its first died before one) reads the whole bill again.
  const retried = await activities.compareBill({ runId: run.id });
  expect(retried.counts).toEqual(first.counts);
  await activities.findLocalOnlyRecords({ runId: run.id });
  const result = await activities.finishReconciliationRun({ runId: run.id, counted: retried.counts });

  const items = (await db('reconciliation_items')
    .where({ run_id: run.id })
    .orderBy('row_no')
    .select('row_key', 'kind', 'class', 'detail', 'out_trade_no', 'trade_no', 'bill_amount', 'bill_currency')) as Array<
    Record<string, unknown>
  >;
  expect(items.map((i) => ({ ...i, bill_amount: Number(i.bill_amount) }))).toEqual([
    {
      row_key: `P:pi_paid${tag}`,
      kind: 'PAYMENT',
      class: 'MATCHED',
      detail: null,
      out_trade_no: paid,
      trade_no: `pi_paid${tag}`,
      bill_amount: 1234,
      bill_currency: 'CNY',
    },
    {
      row_key: `P:pi_disputed${tag}`,
      kind: 'PAYMENT',
      class: 'MATCHED',
      detail: null,
      out_trade_no: disputed,
      trade_no: `pi_disputed${tag}`,
      bill_amount: 1234,
      bill_currency: 'CNY',
    },
    {
      row_key: `DW:dp_a${tag}`,
      kind: 'DISPUTE',
      class: 'DISPUTED',
      detail: 'FUNDS_WITHDRAWN',
      out_trade_no: disputed,
      trade_no: `pi_disputed${tag}`,
      bill_amount: 1234,
      bill_currency: 'CNY',
    },
    {
      row_key: `DR:dp_b${tag}`,
      kind: 'DISPUTE',
      class: 'MATCHED',
      detail: 'DISPUTE_REINSTATED',
      out_trade_no: won,
      trade_no: `pi_won${tag}`,
      bill_amount: 5000,
      bill_currency: 'CNY',
    },
  ]);
  expect(result).toMatchObject({ billRows: 4, differences: 1, totals: { MATCHED: 3, DISPUTED: 1 } });

  // The report shows it as a difference for a person, with the order's state beside the dispute's.
  const view = await readRun(db, run.id);
  expect(view).toMatchObject({ status: 'COMPLETED', error: null, differences: 1 });
  expect(view!.bySeverity).toEqual({ critical: 0, review: 1, repaired: 0 });
  const open = await readItems(db, run.id, { limit: 10 });
  expect(open).toHaveLength(1);
  expect(open[0]).toMatchObject({
    class: 'DISPUTED',
    severity: 'review',
    kind: 'DISPUTE',
    outTradeNo: disputed,
    bill: { amount: 1234, currency: 'CNY' },
    local: { amount: 1234, currency: 'CNY' },
    evidence: {
      merchantId,
      bill: { disputeId: `dp_a${tag}`, disputeFunds: 'WITHDRAWN', providerStatus: 'needs_response' },
      local: { orderStatus: 'PAID', paymentStatus: 'PAID' },
    },
  });

  // The open-differences gauge (what the review backlog alert reads) counts it; the reinstatement is not there.
  const metrics = createMetrics({ defaultMetrics: false });
  await refreshOpsGauges(db, metrics, ['stripe']);
  const gauge = await metrics.reconciliationOpenDifferences.get();
  const byClass = Object.fromEntries(gauge.values.map((v) => [v.labels.class, v.value]));
  expect(byClass).toMatchObject({ DISPUTED: 1, AMOUNT_MISMATCH: 0, REFUND_MISMATCH: 0, UNKNOWN_TRADE: 0 });
  expect(byClass.MATCHED).toBeUndefined();
}, 60_000);
