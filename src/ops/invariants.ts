/**
 * The invariant checker: what must hold for money and stock once a system has drained. Runs against any
 * database plus the provider's bills, so it can check a production deployment as well as a soak run.
 */
import type { Knex } from 'knex';
import type { BillRow } from '../providers/types';

/** One invariant's verdict. */
export interface InvariantResult {
  name: string;
  description: string;
  passed: boolean;
  violations: number;
  /** Up to ten violating ids with a short reason. */
  examples: string[];
}

/** Inputs of the checker. */
export interface InvariantInput {
  db: Knex;
  /** Every provider movement (payments and refunds) for the period, e.g. from the providers' bills. */
  providerRows?: BillRow[];
  /**
   * Where that period begins: the money of orders (and local refunds) created before it is not on those bills, so it
   * is not compared with them (it would all read as "provider holds 0"). Absent: every order is compared.
   */
  providerRowsSince?: Date;
  /**
   * The provider whose bills `providerRows` are: only its orders and refunds are compared with them (a staging system
   * offering the sandbox beside real providers would otherwise read every real order as "provider holds 0"). Absent:
   * every order.
   */
  billsProvider?: string;
  /** An order may stay AWAITING_PAYMENT at most this long after its deadline. */
  convergenceBoundMs: number;
  /**
   * How many examples each verdict lists (default 10; `violations` counts them all). A check of a database shared with
   * other work that looks for its own rows among the examples needs them all (Infinity).
   */
  maxExamples?: number;
  now?: Date;
}

const MAX_EXAMPLES = 10;

/** One verdict with every example (checkInvariants keeps `maxExamples` of them). */
function result(name: string, description: string, bad: string[]): InvariantResult {
  return { name, description, passed: bad.length === 0, violations: bad.length, examples: bad };
}

/**
 * Checks every invariant and returns one verdict each (all are evaluated even when some fail). Every table is read in
 * one REPEATABLE READ transaction, so in one snapshot: the invariants compare tables that one transaction changes
 * together (a Try's fence and its coupon, stock and its fences), and read one after the other on a live system they
 * disagreed whenever a Try committed between two reads.
 */
export async function checkInvariants(input: InvariantInput): Promise<InvariantResult[]> {
  const results = await input.db.transaction(
    // InnoDB takes the snapshot at the transaction's first read; every later read sees the database as it was then.
    (trx) => checkInSnapshot({ ...input, db: trx }),
    { isolationLevel: 'repeatable read' },
  );
  const keep = input.maxExamples ?? MAX_EXAMPLES;
  return results.map((r) => ({ ...r, examples: r.examples.slice(0, keep) }));
}

async function checkInSnapshot(input: InvariantInput): Promise<InvariantResult[]> {
  const { db } = input;
  const now = input.now ?? new Date();
  const results: InvariantResult[] = [];

  // A sharded SKU's counts are the sums over its buckets (bucket 0 is the stock row itself).
  const stock = (await db('stock as s')
    .leftJoin(
      db('stock_buckets').groupBy('sku').select('sku').sum({ a: 'available', r: 'reserved', d: 'sold' }).as('b'),
      'b.sku',
      's.sku',
    )
    .select(
      's.sku',
      db.raw('s.available + COALESCE(b.a, 0) AS available'),
      db.raw('s.reserved + COALESCE(b.r, 0) AS reserved'),
      db.raw('s.sold + COALESCE(b.d, 0) AS sold'),
      's.total_in',
    )) as Record<string, number | string>[];
  results.push(
    result(
      'stock-conserved',
      'for every SKU, available + reserved + sold = units put in, and none is negative',
      stock
        .filter(
          (s) =>
            Number(s.available) + Number(s.reserved) + Number(s.sold) !== Number(s.total_in) ||
            [s.available, s.reserved, s.sold].some((v) => Number(v) < 0),
        )
        .map((s) => `${s.sku}: ${s.available}+${s.reserved}+${s.sold} != ${s.total_in}`),
    ),
  );

  const soldByPaid = new Map(
    (
      (await db('order_lines as l')
        .join('orders as o', 'o.order_id', 'l.order_id')
        .where('o.status', 'PAID')
        .groupBy('l.sku')
        .select('l.sku')
        .sum({ units: 'l.quantity' })) as {
        sku: string;
        units: number;
      }[]
    ).map((r) => [r.sku, Number(r.units)]),
  );
  results.push(
    result(
      'sold-equals-paid-units',
      'for every SKU, sold = units in PAID orders',
      stock
        .filter((s) => Number(s.sold) !== (soldByPaid.get(String(s.sku)) ?? 0))
        .map((s) => `${s.sku}: sold ${s.sold}, PAID units ${soldByPaid.get(String(s.sku)) ?? 0}`),
    ),
  );

  const heldByTry = new Map(
    (
      (await db('tcc_fence')
        .where({ participant: 'stock', status: 'TRIED' })
        .groupBy('resource')
        .select('resource')
        .sum({ units: 'quantity' })) as { resource: string; units: number }[]
    ).map((r) => [r.resource, Number(r.units)]),
  );
  results.push(
    result(
      'reserved-equals-open-tries',
      'for every SKU, reserved = units held by unresolved TCC tries',
      stock
        .filter((s) => Number(s.reserved) !== (heldByTry.get(String(s.sku)) ?? 0))
        .map((s) => `${s.sku}: reserved ${s.reserved}, held ${heldByTry.get(String(s.sku)) ?? 0}`),
    ),
  );

  results.push(await checkBuckets(db));
  results.push(...(await checkBenefits(db)));

  const closedHolding = (await db('tcc_fence as f')
    .join('orders as o', 'o.order_id', 'f.xid')
    .whereIn('o.status', ['EXPIRED', 'CANCELLED', 'FAILED', 'REFUNDED'])
    .whereIn('f.status', ['TRIED', 'CONFIRMED'])
    .select('o.order_id', 'o.status', 'f.resource', 'f.status as fence')) as {
    order_id: string;
    status: string;
    resource: string;
    fence: string;
  }[];
  results.push(
    result(
      'closed-orders-hold-no-stock',
      'no EXPIRED, CANCELLED, FAILED or REFUNDED order holds or consumed stock',
      closedHolding.map((r) => `${r.order_id} (${r.status}) has ${r.resource} ${r.fence}`),
    ),
  );

  const openTryOwners = (await db('tcc_fence as f')
    .join('orders as o', 'o.order_id', 'f.xid')
    .where('f.status', 'TRIED')
    .whereNotIn('o.status', ['AWAITING_PAYMENT', 'NEEDS_REVIEW'])
    .select('o.order_id', 'o.status')) as { order_id: string; status: string }[];
  // A reservation made before its workflow started (POST /orders) must be owned by an order, or released, in time.
  const orphanTries = (await db('tcc_fence as f')
    .leftJoin('orders as o', 'o.order_id', 'f.xid')
    .whereNull('o.order_id')
    .where({ 'f.participant': 'stock', 'f.status': 'TRIED' })
    .andWhere('f.created_at', '<', new Date(now.getTime() - input.convergenceBoundMs))
    .distinct('f.xid')) as { xid: string }[];
  const paidUnconfirmed = (await db('orders as o')
    .where('o.status', 'PAID')
    .whereExists(db('tcc_fence as f').whereRaw('f.xid = o.order_id').whereNot('f.status', 'CONFIRMED'))
    .select('o.order_id')) as { order_id: string }[];
  results.push(
    result(
      'fence-matches-status',
      'stock is reserved only for waiting orders (a reservation made before its order is released in time), and every PAID order confirmed all its stock',
      [
        ...openTryOwners.map((r) => `${r.order_id} (${r.status}) still holds a try`),
        ...paidUnconfirmed.map((r) => `${r.order_id} is PAID with unconfirmed stock`),
        ...orphanTries.map((r) => `${r.xid} holds a reservation but no order was ever created for it`),
      ],
    ),
  );

  const stale = (await db('orders')
    .where('status', 'AWAITING_PAYMENT')
    .andWhere((q) =>
      q
        .where('deadline', '<', new Date(now.getTime() - input.convergenceBoundMs))
        .orWhere((q2) =>
          q2.whereNull('deadline').andWhere('created_at', '<', new Date(now.getTime() - input.convergenceBoundMs)),
        ),
    )
    .select('order_id', 'deadline')) as { order_id: string; deadline: Date | null }[];
  results.push(
    result(
      'orders-converged',
      `every order reached a final or explicitly waiting state within its deadline + ${Math.round(input.convergenceBoundMs / 1000)}s`,
      stale.map(
        (o) =>
          `${o.order_id} still AWAITING_PAYMENT (deadline ${o.deadline ? new Date(o.deadline).toISOString() : 'none'})`,
      ),
    ),
  );

  if (input.providerRows)
    results.push(...(await checkMoney(db, input.providerRows, input.providerRowsSince, input.billsProvider)));
  return results;
}

/**
 * Sharded SKUs bucket by bucket: every bucket's reserved and sold are exactly what the open and confirmed
 * tries recorded taking from it (a try without holds took from bucket 0), and every try's holds add up to it.
 */
async function checkBuckets(db: Knex): Promise<InvariantResult> {
  const bad: string[] = [];
  const fences = (await db('tcc_fence as f')
    .join('stock as s', 's.sku', 'f.resource')
    .where('f.participant', 'stock')
    .andWhere('s.buckets', '>', 1)
    .whereIn('f.status', ['TRIED', 'CONFIRMED'])
    .select('f.xid', 'f.resource as sku', 'f.status', 'f.quantity')) as {
    xid: string;
    sku: string;
    status: string;
    quantity: number;
  }[];
  const holds = (await db('stock_holds as h')
    .join('stock as s', 's.sku', 'h.sku')
    .where('s.buckets', '>', 1)
    .select('h.xid', 'h.sku', 'h.bucket', 'h.quantity')) as {
    xid: string;
    sku: string;
    bucket: number;
    quantity: number;
  }[];
  const holdsOf = new Map<string, { bucket: number; quantity: number }[]>();
  for (const h of holds)
    holdsOf.set(`${h.xid}/${h.sku}`, [
      ...(holdsOf.get(`${h.xid}/${h.sku}`) ?? []),
      { bucket: Number(h.bucket), quantity: Number(h.quantity) },
    ]);
  const expected = new Map<string, { reserved: number; sold: number }>();
  for (const f of fences) {
    const own = holdsOf.get(`${f.xid}/${f.sku}`) ?? [{ bucket: 0, quantity: Number(f.quantity) }];
    const total = own.reduce((n, h) => n + h.quantity, 0);
    if (total !== Number(f.quantity))
      bad.push(`${f.xid}/${f.sku}: holds add up to ${total}, the try holds ${f.quantity}`);
    for (const h of own) {
      const e = expected.get(`${f.sku}#${h.bucket}`) ?? { reserved: 0, sold: 0 };
      if (f.status === 'TRIED') e.reserved += h.quantity;
      else e.sold += h.quantity;
      expected.set(`${f.sku}#${h.bucket}`, e);
    }
  }
  const rows = (await db('stock')
    .where('buckets', '>', 1)
    .select('sku', db.raw('0 AS bucket'), 'reserved', 'sold')
    .unionAll(
      db('stock_buckets as b')
        .join('stock as s', 's.sku', 'b.sku')
        .where('s.buckets', '>', 1)
        .select('b.sku', 'b.bucket', 'b.reserved', 'b.sold'),
    )) as {
    sku: string;
    bucket: number;
    reserved: number;
    sold: number;
  }[];
  for (const r of rows) {
    const e = expected.get(`${r.sku}#${Number(r.bucket)}`) ?? { reserved: 0, sold: 0 };
    if (Number(r.reserved) !== e.reserved || Number(r.sold) !== e.sold) {
      bad.push(
        `${r.sku} bucket ${r.bucket}: reserved ${r.reserved} sold ${r.sold}, tries hold ${e.reserved} and confirmed ${e.sold}`,
      );
    }
  }
  return result(
    'stock-buckets-match-holds',
    'for every sharded SKU, each bucket holds exactly what the tries recorded taking from it',
    bad,
  );
}

/** Coupons and points against their TCC fences (participants 'coupon' and 'points'). */
async function checkBenefits(db: Knex): Promise<InvariantResult[]> {
  const sums = async (status: string) =>
    new Map(
      (
        (await db('tcc_fence')
          .where({ participant: 'points', status })
          .groupBy('resource')
          .select('resource')
          .sum({ q: 'quantity' })) as { resource: string; q: number }[]
      ).map((r) => [r.resource, Number(r.q)]),
    );
  const [frozenByTry, spentByConfirm] = [await sums('TRIED'), await sums('CONFIRMED')];
  const points = (await db('user_points').select('user_id', 'available', 'frozen', 'spent', 'total_in')) as Record<
    string,
    number | string
  >[];
  const pointsBad = points.flatMap((p) => {
    const [a, f, s, t] = [p.available, p.frozen, p.spent, p.total_in].map(Number) as [number, number, number, number];
    const user = String(p.user_id);
    const bad: string[] = [];
    if (a + f + s !== t) bad.push(`${user}: ${a}+${f}+${s} != ${t}`);
    if (f !== (frozenByTry.get(user) ?? 0))
      bad.push(`${user}: frozen ${f}, held by tries ${frozenByTry.get(user) ?? 0}`);
    if (s !== (spentByConfirm.get(user) ?? 0))
      bad.push(`${user}: spent ${s}, confirmed ${spentByConfirm.get(user) ?? 0}`);
    return bad;
  });

  const holders = (await db('tcc_fence')
    .where({ participant: 'coupon' })
    .whereIn('status', ['TRIED', 'CONFIRMED'])
    .select('xid', 'resource', 'status')) as {
    xid: string;
    resource: string;
    status: string;
  }[];
  const holderOf = new Map<string, { xid: string; status: string }[]>();
  for (const h of holders) holderOf.set(h.resource, [...(holderOf.get(h.resource) ?? []), h]);
  const coupons = (await db('coupons').select('code', 'status', 'order_id')) as {
    code: string;
    status: string;
    order_id: string | null;
  }[];
  const couponsBad = coupons.flatMap((c) => {
    const hs = holderOf.get(c.code) ?? [];
    const expected =
      hs.length === 0
        ? { status: 'AVAILABLE', order: null }
        : { status: hs[0]!.status === 'TRIED' ? 'FROZEN' : 'USED', order: hs[0]!.xid };
    if (hs.length > 1) return [`${c.code}: held by ${hs.length} orders`];
    if (c.status !== expected.status || (expected.order !== null && c.order_id !== expected.order))
      return [`${c.code}: ${c.status} for ${c.order_id}, fences say ${expected.status} for ${expected.order}`];
    return [];
  });
  return [
    result(
      'points-conserved',
      'for every user, available + frozen + spent = points put in; frozen = open tries; spent = confirmed',
      pointsBad,
    ),
    result(
      'coupons-match-fences',
      'every coupon is FROZEN for its one open try, USED by its one confirmed order, or AVAILABLE',
      couponsBad,
    ),
  ];
}

/** Money invariants: the provider's movements against local orders and refunds. */
async function checkMoney(
  db: Knex,
  rows: BillRow[],
  since: Date | undefined,
  provider: string | undefined,
): Promise<InvariantResult[]> {
  const inPeriod = (o: { created_at: Date | string }) => since === undefined || new Date(o.created_at) >= since;
  const ofProvider = (q: Knex.QueryBuilder) => (provider ? q.where('provider', provider) : q);
  const orders = new Map(
    (
      (await ofProvider(db('orders')).select(
        'order_id',
        'status',
        'amount',
        'currency',
        'paid_trade_no',
        'created_at',
      )) as {
        order_id: string;
        status: string;
        amount: number;
        currency: string;
        paid_trade_no: string | null;
        created_at: Date | string;
      }[]
    ).map((o) => [o.order_id, o]),
  );
  const allLocalRefunds = (await ofProvider(db('refunds'))
    .where('status', 'SUCCEEDED')
    .select('out_refund_no', 'order_id', 'amount', 'created_at')) as {
    out_refund_no: string;
    order_id: string;
    amount: number;
    created_at: Date | string;
  }[];
  // Those of the period must be on its bills; a bill line is looked up among all of them (the bills begin a day
  // before the period, so a refund of that day is on them and was not made in the period).
  const localRefunds = allLocalRefunds.filter(inPeriod);
  const payments = rows.filter((r) => r.kind === 'PAYMENT');
  const refunds = rows.filter((r) => r.kind === 'REFUND');

  const paidElsewhere = payments
    .filter((p) => !['PAID', 'REFUNDED', 'NEEDS_REVIEW'].includes(orders.get(p.outTradeNo)?.status ?? 'UNKNOWN'))
    .map(
      (p) =>
        `${p.outTradeNo}: paid at provider (${p.tradeNo}, ${p.amount}) but order is ${orders.get(p.outTradeNo)?.status ?? 'unknown'}`,
    );

  const refundProblems: string[] = [];
  const providerRefundsByNo = new Map<string, BillRow[]>();
  for (const r of refunds)
    providerRefundsByNo.set(r.outRefundNo ?? '?', [...(providerRefundsByNo.get(r.outRefundNo ?? '?') ?? []), r]);
  const localByNo = new Map(allLocalRefunds.map((r) => [r.out_refund_no, r]));
  for (const [no, list] of providerRefundsByNo) {
    const local = localByNo.get(no);
    if (list.length !== 1) refundProblems.push(`${no}: ${list.length} refunds at the provider`);
    if (!local) refundProblems.push(`${no}: refunded at the provider, no local refund`);
    else if (Number(local.amount) !== list.reduce((s, r) => s + r.amount, 0))
      refundProblems.push(`${no}: provider ${list[0]!.amount} != local ${local.amount}`);
  }
  for (const local of localRefunds)
    if (!providerRefundsByNo.has(local.out_refund_no))
      refundProblems.push(`${local.out_refund_no}: local refund missing at the provider`);

  const paidAt = new Map<string, BillRow[]>();
  for (const p of payments) paidAt.set(p.outTradeNo, [...(paidAt.get(p.outTradeNo) ?? []), p]);
  const refundedAt = new Map<string, number>();
  for (const r of refunds) refundedAt.set(r.outTradeNo, (refundedAt.get(r.outTradeNo) ?? 0) + r.amount);
  const movementProblems: string[] = [];
  for (const o of orders.values()) {
    if (!inPeriod(o)) continue;
    const paid = (paidAt.get(o.order_id) ?? []).reduce((s, p) => s + p.amount, 0);
    const refunded = refundedAt.get(o.order_id) ?? 0;
    // What the provider holds, not what it was paid: a second payment of a PAID order, refunded, leaves it whole.
    if (o.status === 'PAID' && paid - refunded !== Number(o.amount))
      movementProblems.push(`${o.order_id}: PAID but provider holds ${paid - refunded} of ${o.amount}`);
    if (o.status === 'REFUNDED' && (paid === 0 || refunded !== paid))
      movementProblems.push(`${o.order_id}: REFUNDED but provider paid ${paid}, refunded ${refunded}`);
    if (['EXPIRED', 'CANCELLED', 'FAILED'].includes(o.status) && paid - refunded !== 0)
      movementProblems.push(`${o.order_id}: ${o.status} but provider holds ${paid - refunded}`);
  }

  return [
    result(
      'provider-payments-owned',
      'every payment the provider holds as paid belongs to a PAID, REFUNDED or NEEDS_REVIEW order',
      paidElsewhere,
    ),
    result(
      'provider-refunds-match',
      'every refund at the provider matches exactly one local refund, and vice versa',
      refundProblems,
    ),
    result(
      'money-matches-status',
      'PAID orders hold exactly their amount, REFUNDED ones nothing, closed ones nothing',
      movementProblems,
    ),
  ];
}

/** A short text report of invariant verdicts. */
export function formatInvariants(results: InvariantResult[]): string {
  return results
    .map(
      (r) =>
        `${r.passed ? 'PASS' : 'FAIL'}  ${r.name}: ${r.description}${r.passed ? '' : `\n      ${r.violations} violation(s), e.g.\n        ${r.examples.join('\n        ')}`}`,
    )
    .join('\n');
}
