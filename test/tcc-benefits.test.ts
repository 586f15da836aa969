/**
 * Coupons and points as TCC participants on the generic fence (src/db/tcc-fence.ts), against the real test
 * database: holds, idempotent confirm/cancel, empty rollback, no hanging reservation, conflicts, and property tests
 * over random sequential and concurrent interleavings (duplicates included) checked against a reference model.
 */
import { randomBytes } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import fc from 'fast-check';
import type { Knex } from 'knex';
import { couponParticipant, pointsParticipant } from '../src/activities/benefits';
import { createDb } from '../src/db/knex';
import { TEST_ENV } from './support/env';

let db: Knex;

beforeAll(() => {
  db = createDb(TEST_ENV.databaseUrl, { poolMax: 10 });
});

afterAll(async () => {
  await db?.destroy();
});

const uid = (prefix: string) => `${prefix}-${randomBytes(8).toString('hex')}`;

type Kind = 'coupon' | 'points';
type OpName = 'try' | 'confirm' | 'cancel' | 'giveBack';
type FenceStatus = 'NONE' | 'TRIED' | 'CONFIRMED' | 'CANCELLED' | 'RETURNED';
type Outcome = 'ok' | string;

async function createCoupon(userId: string, discount = 300): Promise<string> {
  const code = uid('cpn');
  await db('coupons').insert({ code, user_id: userId, discount, currency: 'CNY', status: 'AVAILABLE' });
  return code;
}

async function createPoints(userId: string, balance: number): Promise<void> {
  await db('user_points').insert({ user_id: userId, available: balance, frozen: 0, spent: 0, total_in: balance });
}

async function couponOf(code: string) {
  const row = await db('coupons').where({ code }).first('status', 'order_id');
  return { status: row.status as string, orderId: (row.order_id as string | null) ?? null };
}

async function pointsOf(userId: string) {
  const row = await db('user_points').where({ user_id: userId }).first('available', 'frozen', 'spent');
  return { available: Number(row.available), frozen: Number(row.frozen), spent: Number(row.spent) };
}

async function fenceOf(
  orderId: string,
  participant: Kind,
  resource: string,
): Promise<{ status: FenceStatus; quantity: number; emptyRollback: boolean } | undefined> {
  const row = await db('tcc_fence')
    .where({ xid: orderId, participant, resource })
    .first('status', 'quantity', 'empty_rollback');
  return row
    ? { status: row.status, quantity: Number(row.quantity), emptyRollback: Boolean(Number(row.empty_rollback)) }
    : undefined;
}

/**
 * Runs one fenced call; business failures become their type, transient errors (deadlock, concurrent change) are
 * retried like Temporal would.
 */
const transientRetries = new Map<string, number>();
async function call(
  kind: Kind,
  op: OpName,
  orderId: string,
  resource: string,
  userId: string,
  quantity: number,
): Promise<Outcome> {
  const participant = kind === 'coupon' ? couponParticipant : pointsParticipant;
  const key = { orderId, resource };
  for (let attempt = 0; ; attempt++) {
    try {
      if (op === 'try') await participant.try(db, key, { userId, quantity });
      else if (op === 'confirm') await participant.confirm(db, key);
      else if (op === 'cancel') await participant.cancel(db, key);
      else await participant.giveBack(db, key);
      return 'ok';
    } catch (err) {
      if (err instanceof ApplicationFailure) return err.type ?? 'UNTYPED';
      const code = (err as { code?: string }).code ?? (err as Error).message.slice(0, 40);
      transientRetries.set(code, (transientRetries.get(code) ?? 0) + 1);
      if (attempt >= 20) throw err;
    }
  }
}

describe('coupon', () => {
  test('a try freezes the coupon for the order, a confirm marks it used, and a repeated confirm changes nothing', async () => {
    const user = uid('u');
    const code = await createCoupon(user, 500);
    const orderId = uid('o');
    expect(await call('coupon', 'try', orderId, code, user, 0)).toBe('ok');
    expect(await couponOf(code)).toEqual({ status: 'FROZEN', orderId });
    expect(await fenceOf(orderId, 'coupon', code)).toEqual({ status: 'TRIED', quantity: 500, emptyRollback: false });
    expect(await call('coupon', 'confirm', orderId, code, user, 0)).toBe('ok');
    expect(await call('coupon', 'confirm', orderId, code, user, 0)).toBe('ok');
    expect(await couponOf(code)).toEqual({ status: 'USED', orderId });
    expect((await fenceOf(orderId, 'coupon', code))?.status).toBe('CONFIRMED');
  });

  test('a coupon frozen by one order is refused to another with COUPON_UNAVAILABLE and no fence row is left', async () => {
    const user = uid('u');
    const code = await createCoupon(user);
    const [first, second] = [uid('o'), uid('o')];
    expect(await call('coupon', 'try', first, code, user, 0)).toBe('ok');
    expect(await call('coupon', 'try', second, code, user, 0)).toBe('COUPON_UNAVAILABLE');
    expect(await fenceOf(second, 'coupon', code)).toBeUndefined();
    expect(await couponOf(code)).toEqual({ status: 'FROZEN', orderId: first });
  });

  test("another user's coupon is refused with COUPON_UNAVAILABLE", async () => {
    const code = await createCoupon(uid('owner'));
    expect(await call('coupon', 'try', uid('o'), code, uid('thief'), 0)).toBe('COUPON_UNAVAILABLE');
    expect((await couponOf(code)).status).toBe('AVAILABLE');
  });

  test('a cancel before the try is an empty rollback, and the late try is refused so the coupon never hangs', async () => {
    const user = uid('u');
    const code = await createCoupon(user);
    const orderId = uid('o');
    expect(await call('coupon', 'cancel', orderId, code, user, 0)).toBe('ok');
    expect(await fenceOf(orderId, 'coupon', code)).toEqual({ status: 'CANCELLED', quantity: 0, emptyRollback: true });
    expect(await call('coupon', 'try', orderId, code, user, 0)).toBe('TCC_TRY_AFTER_CANCEL');
    expect(await couponOf(code)).toEqual({ status: 'AVAILABLE', orderId: null });
  });

  test('confirm after cancel and cancel after confirm both fail with TCC_CONFLICT and change nothing', async () => {
    const user = uid('u');
    const [c1, c2] = [await createCoupon(user), await createCoupon(user)];
    const [o1, o2] = [uid('o'), uid('o')];
    await call('coupon', 'try', o1, c1, user, 0);
    await call('coupon', 'cancel', o1, c1, user, 0);
    expect(await call('coupon', 'confirm', o1, c1, user, 0)).toBe('TCC_CONFLICT');
    expect(await couponOf(c1)).toEqual({ status: 'AVAILABLE', orderId: null });
    await call('coupon', 'try', o2, c2, user, 0);
    await call('coupon', 'confirm', o2, c2, user, 0);
    expect(await call('coupon', 'cancel', o2, c2, user, 0)).toBe('TCC_CONFLICT');
    expect(await couponOf(c2)).toEqual({ status: 'USED', orderId: o2 });
  });

  test('a used coupon given back after a refund is available again, once', async () => {
    const user = uid('u');
    const code = await createCoupon(user);
    const orderId = uid('o');
    await call('coupon', 'try', orderId, code, user, 0);
    await call('coupon', 'confirm', orderId, code, user, 0);
    expect(await call('coupon', 'giveBack', orderId, code, user, 0)).toBe('ok');
    expect(await call('coupon', 'giveBack', orderId, code, user, 0)).toBe('ok');
    expect(await couponOf(code)).toEqual({ status: 'AVAILABLE', orderId: null });
    expect((await fenceOf(orderId, 'coupon', code))?.status).toBe('RETURNED');
  });
});

describe('points', () => {
  test('a try freezes the points, a confirm spends them and a cancel of another order returns its points', async () => {
    const user = uid('u');
    await createPoints(user, 1000);
    const [paid, dropped] = [uid('o'), uid('o')];
    expect(await call('points', 'try', paid, user, user, 300)).toBe('ok');
    expect(await call('points', 'try', dropped, user, user, 200)).toBe('ok');
    expect(await pointsOf(user)).toEqual({ available: 500, frozen: 500, spent: 0 });
    expect(await call('points', 'confirm', paid, user, user, 300)).toBe('ok');
    expect(await call('points', 'cancel', dropped, user, user, 200)).toBe('ok');
    expect(await call('points', 'cancel', dropped, user, user, 200)).toBe('ok');
    expect(await pointsOf(user)).toEqual({ available: 700, frozen: 0, spent: 300 });
  });

  test('a try for more points than available fails with INSUFFICIENT_POINTS and holds nothing', async () => {
    const user = uid('u');
    await createPoints(user, 100);
    const orderId = uid('o');
    expect(await call('points', 'try', orderId, user, user, 101)).toBe('INSUFFICIENT_POINTS');
    expect(await call('points', 'try', uid('o'), uid('nobody'), uid('nobody'), 1)).toBe('ORDER_CONFLICT');
    expect(await fenceOf(orderId, 'points', user)).toBeUndefined();
    expect(await pointsOf(user)).toEqual({ available: 100, frozen: 0, spent: 0 });
  });

  test('points of a user without a balance are refused with INSUFFICIENT_POINTS', async () => {
    const user = uid('u');
    expect(await call('points', 'try', uid('o'), user, user, 1)).toBe('INSUFFICIENT_POINTS');
  });

  test('a cancel before the try is an empty rollback and the late try is refused', async () => {
    const user = uid('u');
    await createPoints(user, 100);
    const orderId = uid('o');
    expect(await call('points', 'cancel', orderId, user, user, 50)).toBe('ok');
    expect(await call('points', 'try', orderId, user, user, 50)).toBe('TCC_TRY_AFTER_CANCEL');
    expect(await call('points', 'confirm', orderId, user, user, 50)).toBe('TCC_CONFLICT');
    expect(await pointsOf(user)).toEqual({ available: 100, frozen: 0, spent: 0 });
  });
});

/** Reference model of one participant's resource shared by several orders of one user. */
class Model {
  status: FenceStatus[];
  points = { available: 0, frozen: 0, spent: 0 };
  coupon: { status: 'AVAILABLE' | 'FROZEN' | 'USED'; owner: number | null } = { status: 'AVAILABLE', owner: null };
  constructor(
    readonly kind: Kind,
    balance: number,
    readonly quantities: number[],
  ) {
    this.status = quantities.map(() => 'NONE');
    this.points.available = balance;
  }
  apply(op: OpName, i: number): Outcome {
    const s = this.status[i]!;
    const q = this.quantities[i]!;
    const p = this.points;
    switch (op) {
      case 'try':
        if (s === 'CANCELLED' || s === 'RETURNED') return 'TCC_TRY_AFTER_CANCEL';
        if (s !== 'NONE') return 'ok';
        if (this.kind === 'points') {
          if (p.available < q) return 'INSUFFICIENT_POINTS';
          p.available -= q;
          p.frozen += q;
        } else {
          if (this.coupon.status !== 'AVAILABLE') return 'COUPON_UNAVAILABLE';
          this.coupon = { status: 'FROZEN', owner: i };
        }
        this.status[i] = 'TRIED';
        return 'ok';
      case 'confirm':
        if (s === 'NONE' || s === 'CANCELLED') return 'TCC_CONFLICT';
        if (s !== 'TRIED') return 'ok';
        if (this.kind === 'points') {
          p.frozen -= q;
          p.spent += q;
        } else this.coupon = { status: 'USED', owner: i };
        this.status[i] = 'CONFIRMED';
        return 'ok';
      case 'cancel':
        if (s === 'CONFIRMED' || s === 'RETURNED') return 'TCC_CONFLICT';
        if (s === 'TRIED') {
          if (this.kind === 'points') {
            p.frozen -= q;
            p.available += q;
          } else this.coupon = { status: 'AVAILABLE', owner: null };
        }
        this.status[i] = 'CANCELLED';
        return 'ok';
      case 'giveBack':
        if (s === 'TRIED') return 'TCC_CONFLICT';
        if (s !== 'CONFIRMED') return 'ok';
        if (this.kind === 'points') {
          p.spent -= q;
          p.available += q;
        } else this.coupon = { status: 'AVAILABLE', owner: null };
        this.status[i] = 'RETURNED';
        return 'ok';
    }
  }
}

const opArb = fc.record({
  op: fc.constantFrom<OpName>('try', 'try', 'confirm', 'cancel', 'giveBack'),
  order: fc.nat({ max: 3 }),
});
const kindArb = fc.constantFrom<Kind>('coupon', 'points');
const quantitiesArb = fc.array(fc.integer({ min: 1, max: 60 }), { minLength: 4, maxLength: 4 });

async function setUp(kind: Kind, balance: number) {
  const user = uid('prop');
  const resource = kind === 'coupon' ? await createCoupon(user) : user;
  if (kind === 'points') await createPoints(user, balance);
  return { user, resource, orderIds: [0, 1, 2, 3].map(() => uid('po')) };
}

/** What must hold whatever the interleaving: conservation, holds matching fences, one holder of a coupon at most. */
async function assertInvariants(
  kind: Kind,
  balance: number,
  resource: string,
  orderIds: string[],
  quantities: number[],
) {
  const fences = await Promise.all(orderIds.map(async (o) => (await fenceOf(o, kind, resource))?.status ?? 'NONE'));
  if (kind === 'points') {
    const p = await pointsOf(resource);
    expect(p.available + p.frozen + p.spent).toBe(balance);
    const sum = (st: FenceStatus) => fences.reduce((acc, f, i) => acc + (f === st ? quantities[i]! : 0), 0);
    expect(p.frozen).toBe(sum('TRIED'));
    expect(p.spent).toBe(sum('CONFIRMED'));
  } else {
    const c = await couponOf(resource);
    const holders = fences
      .map((f, i) => ({ f, id: orderIds[i] }))
      .filter((x) => x.f === 'TRIED' || x.f === 'CONFIRMED');
    expect(holders.length).toBeLessThanOrEqual(1);
    const holder = holders[0];
    expect(c).toEqual(
      holder
        ? { status: holder.f === 'TRIED' ? 'FROZEN' : 'USED', orderId: holder.id }
        : { status: 'AVAILABLE', orderId: null },
    );
  }
}

describe('properties', () => {
  test('any sequential mix of duplicated try, confirm, cancel and give-back matches the reference model call by call', async () => {
    await fc.assert(
      fc.asyncProperty(
        kindArb,
        fc.integer({ min: 0, max: 150 }),
        quantitiesArb,
        fc.array(opArb, { minLength: 1, maxLength: 16 }),
        async (kind, balance, quantities, ops) => {
          const { user, resource, orderIds } = await setUp(kind, balance);
          const model = new Model(kind, balance, quantities);
          for (const { op, order } of ops) {
            const outcome = await call(kind, op, orderIds[order]!, resource, user, quantities[order]!);
            expect({ op, order, outcome }).toEqual({ op, order, outcome: model.apply(op, order) });
          }
          for (const [i, orderId] of orderIds.entries())
            expect((await fenceOf(orderId, kind, resource))?.status ?? 'NONE').toBe(model.status[i]);
          if (kind === 'points') expect(await pointsOf(resource)).toEqual(model.points);
          await assertInvariants(kind, balance, resource, orderIds, quantities);
        },
      ),
      { numRuns: 40 },
    );
  });

  test('concurrent batches of duplicated try, confirm, cancel and give-back keep every invariant', async () => {
    await fc.assert(
      fc.asyncProperty(
        kindArb,
        fc.integer({ min: 0, max: 150 }),
        quantitiesArb,
        fc.array(fc.array(opArb, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 4 }),
        async (kind, balance, quantities, batches) => {
          const { user, resource, orderIds } = await setUp(kind, balance);
          for (const batch of batches) {
            const outcomes = await Promise.all(
              batch.map(({ op, order }) => call(kind, op, orderIds[order]!, resource, user, quantities[order]!)),
            );
            // Only business answers come back; anything else would have thrown.
            for (const o of outcomes)
              expect([
                'ok',
                'TCC_CONFLICT',
                'TCC_TRY_AFTER_CANCEL',
                'INSUFFICIENT_POINTS',
                'COUPON_UNAVAILABLE',
              ]).toContain(o);
          }
          await assertInvariants(kind, balance, resource, orderIds, quantities);
        },
      ),
      { numRuns: 40 },
    );
  });

  afterAll(() => {
    if (transientRetries.size > 0)
      process.stdout.write(
        `\n[tcc-benefits] transient errors retried: ${[...transientRetries].map(([k, v]) => `${k} x${v}`).join(', ')}\n`,
      );
  });
});
