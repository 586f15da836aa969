/** Admin endpoints (Bearer ADMIN_TOKEN): PUT/GET /admin/products/:sku. */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Knex } from 'knex';
import { CouponCode, PutCouponRequest, PutPointsRequest, PutProductRequest, Sku, UserId } from '../../contracts/order';
import { retryDeadlocks } from '../../db/knex';
import { bucketShare } from '../../db/stock';
import { ApiError, parseOr400 } from '../errors';

/** Throws 401 unless the request carries the admin bearer token (compared in constant time). */
export function requireAdmin(request: FastifyRequest, token: string): void {
  if (!bearerMatches(request, token))
    throw new ApiError(401, 'UNAUTHORIZED', 'missing or wrong admin token (Authorization: Bearer <ADMIN_TOKEN>)');
}

/**
 * The operator a review decision is made by: with named operator tokens (OPERATOR_TOKENS), the name of the one the
 * request carries (401 otherwise, ADMIN_TOKEN included); without, ADMIN_TOKEN is required and the name is not known
 * (undefined: the body's `operator` stands).
 */
export function requireOperator(
  request: FastifyRequest,
  adminToken: string,
  operatorTokens: Map<string, string> | undefined,
): string | undefined {
  if (!operatorTokens) {
    requireAdmin(request, adminToken);
    return undefined;
  }
  // Every token compared, each as a SHA-256 digest (equal lengths, constant time): neither the time of a refusal nor
  // of a match tells which entry, or which length, a guess came near.
  const header = request.headers.authorization ?? '';
  const given = createHash('sha256')
    .update(header.startsWith('Bearer ') ? header.slice(7) : '')
    .digest();
  let operator: string | undefined;
  for (const [token, name] of operatorTokens)
    if (timingSafeEqual(given, createHash('sha256').update(token).digest()) && operator === undefined) operator = name;
  if (operator !== undefined) return operator;
  throw new ApiError(
    401,
    'UNAUTHORIZED',
    'missing or wrong operator token (Authorization: Bearer <your token from OPERATOR_TOKENS>; ADMIN_TOKEN does not decide reviews here)',
  );
}

/** Whether the request's `Authorization: Bearer` token is `token`, compared in constant time. */
export function bearerMatches(request: FastifyRequest, token: string): boolean {
  const header = request.headers.authorization ?? '';
  const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

async function readProduct(db: Knex, sku: string) {
  const row = await db('products as p')
    .join('stock as s', 's.sku', 'p.sku')
    .leftJoin(
      db('stock_buckets')
        .where({ sku })
        .groupBy('sku')
        .select('sku')
        .sum({ a: 'available', r: 'reserved', d: 'sold' })
        .as('b'),
      'b.sku',
      'p.sku',
    )
    .where('p.sku', sku)
    .first(
      'p.sku',
      'p.name',
      'p.price',
      'p.currency',
      's.available',
      's.reserved',
      's.sold',
      's.buckets',
      'b.a',
      'b.r',
      'b.d',
    );
  if (!row) return null;
  return {
    sku: row.sku as string,
    name: row.name as string,
    price: Number(row.price),
    currency: row.currency as string,
    // A sharded SKU's stock is the sum over its buckets (bucket 0 is the stock row).
    stock: {
      available: Number(row.available) + Number(row.a ?? 0),
      reserved: Number(row.reserved) + Number(row.r ?? 0),
      sold: Number(row.sold) + Number(row.d ?? 0),
    },
    buckets: Number(row.buckets),
  };
}

/**
 * Sets a product's available stock to `stock`, spread evenly over `buckets` buckets (bucket 0 is the stock row),
 * keeping every reserved and sold unit where it is. Buckets can be removed only when they hold nothing
 * reserved or sold, because confirm and cancel of the orders holding them go back to those rows.
 */
async function replaceStock(
  trx: Knex.Transaction,
  sku: string,
  stock: number,
  requested: number | undefined,
  expectedAvailable: number | undefined,
): Promise<void> {
  const base = (await trx('stock').where({ sku }).forUpdate().first('buckets', 'available', 'reserved', 'sold')) as {
    buckets: number;
    available: number;
    reserved: number;
    sold: number;
  };
  const rows = (await trx('stock_buckets')
    .where({ sku })
    .forUpdate()
    .orderBy('bucket')
    .select('bucket', 'available', 'reserved', 'sold')) as {
    bucket: number;
    available: number;
    reserved: number;
    sold: number;
  }[];
  if (expectedAvailable !== undefined) {
    // Compared under the locks of every row of the SKU: no Try, cancel or return can move a unit until the commit.
    const sum = (k: 'available' | 'reserved' | 'sold') => Number(base[k]) + rows.reduce((n, r) => n + Number(r[k]), 0);
    if (sum('available') !== expectedAvailable)
      throw new ApiError(
        409,
        'STOCK_CHANGED',
        `${sku} has ${sum('available')} available, not ${expectedAvailable}: read it again and decide`,
        { available: sum('available'), reserved: sum('reserved'), sold: sum('sold'), expectedAvailable },
      );
  }
  const buckets = requested ?? Math.max(1, Number(base.buckets));
  const removed = rows.filter((r) => Number(r.bucket) >= buckets);
  if (removed.some((r) => Number(r.reserved) > 0 || Number(r.sold) > 0)) {
    throw new ApiError(
      409,
      'STOCK_BUCKETS_IN_USE',
      `cannot shrink ${sku} to ${buckets} bucket(s): the buckets removed still hold reserved or sold units`,
    );
  }
  if (removed.length) await trx('stock_buckets').where({ sku }).andWhere('bucket', '>=', buckets).delete();
  const existing = new Set(rows.map((r) => Number(r.bucket)));
  const added = [];
  for (let b = 1; b < buckets; b++)
    if (!existing.has(b)) added.push({ sku, bucket: b, available: 0, reserved: 0, sold: 0 });
  if (added.length) await trx('stock_buckets').insert(added);
  const share = (b: number) => bucketShare(stock, buckets, b);
  for (let b = 1; b < buckets; b++)
    await trx('stock_buckets')
      .where({ sku, bucket: b })
      .update({ available: share(b), updated_at: trx.fn.now(3) });
  const kept = rows.filter((r) => Number(r.bucket) < buckets);
  const held =
    Number(base.reserved) + Number(base.sold) + kept.reduce((n, r) => n + Number(r.reserved) + Number(r.sold), 0);
  await trx('stock')
    .where({ sku })
    .update({ available: share(0), buckets, total_in: stock + held, updated_at: trx.fn.now(3) });
}

async function readCoupon(db: Knex, code: string) {
  const row = await db('coupons')
    .where({ code })
    .first('code', 'user_id', 'discount', 'currency', 'status', 'order_id');
  if (!row) return null;
  return {
    code: row.code as string,
    userId: row.user_id as string,
    discount: Number(row.discount),
    currency: row.currency as string,
    status: row.status as string,
    orderId: (row.order_id as string | null) ?? null,
  };
}

async function readPoints(db: Knex, userId: string) {
  const row = await db('user_points').where({ user_id: userId }).first('available', 'frozen', 'spent');
  return {
    userId,
    available: Number(row?.available ?? 0),
    frozen: Number(row?.frozen ?? 0),
    spent: Number(row?.spent ?? 0),
  };
}

/** Registers the admin product, coupon and points routes. */
export function registerAdminRoutes(app: FastifyInstance, deps: { db: Knex; adminToken: string }): void {
  app.put<{ Params: { sku: string } }>('/admin/products/:sku', async (request, reply) => {
    requireAdmin(request, deps.adminToken);
    const sku = parseOr400(Sku, request.params.sku);
    const body = parseOr400(PutProductRequest, request.body);
    // Concurrent PUTs of new SKUs take gap locks on the same index range and can deadlock: retried.
    const created = await retryDeadlocks(() =>
      deps.db.transaction(async (trx) => {
        const existing = await trx('products').where({ sku }).forUpdate().first('sku');
        if (!existing && body.expectedAvailable !== undefined && body.expectedAvailable !== 0)
          throw new ApiError(
            409,
            'STOCK_CHANGED',
            `${sku} does not exist: it has 0 available, not ${body.expectedAvailable}`,
            {
              available: 0,
              reserved: 0,
              sold: 0,
              expectedAvailable: body.expectedAvailable,
            },
          );
        if (existing) {
          await trx('products')
            .where({ sku })
            .update({
              name: body.name,
              price: body.price,
              ...(body.currency ? { currency: body.currency } : {}),
              updated_at: trx.fn.now(3),
            });
        } else {
          await trx('products').insert({ sku, name: body.name, price: body.price, currency: body.currency ?? 'CNY' });
          await trx('stock').insert({ sku, available: 0, reserved: 0, sold: 0, total_in: 0, buckets: 1 });
        }
        // Replaces available stock; units already reserved or sold stay accounted for.
        await replaceStock(trx, sku, body.stock, body.buckets, body.expectedAvailable);
        return !existing;
      }),
    );
    return reply.code(created ? 201 : 200).send(await readProduct(deps.db, sku));
  });

  app.put<{ Params: { code: string } }>('/admin/coupons/:code', async (request, reply) => {
    requireAdmin(request, deps.adminToken);
    const code = parseOr400(CouponCode, request.params.code);
    const body = parseOr400(PutCouponRequest, request.body);
    const created = await retryDeadlocks(() =>
      deps.db.transaction(async (trx) => {
        const existing = (await trx('coupons').where({ code }).forUpdate().first('status')) as
          { status: string } | undefined;
        if (existing && existing.status !== 'AVAILABLE')
          throw new ApiError(409, 'COUPON_IN_USE', `coupon ${code} is ${existing.status} and cannot be replaced`);
        if (existing)
          await trx('coupons')
            .where({ code })
            .update({
              user_id: body.userId,
              discount: body.discount,
              ...(body.currency ? { currency: body.currency } : {}),
              updated_at: trx.fn.now(3),
            });
        else
          await trx('coupons').insert({
            code,
            user_id: body.userId,
            discount: body.discount,
            currency: body.currency ?? 'CNY',
            status: 'AVAILABLE',
          });
        return !existing;
      }),
    );
    return reply.code(created ? 201 : 200).send(await readCoupon(deps.db, code));
  });

  app.get<{ Params: { code: string } }>('/admin/coupons/:code', async (request) => {
    requireAdmin(request, deps.adminToken);
    const coupon = await readCoupon(deps.db, parseOr400(CouponCode, request.params.code));
    if (!coupon) throw new ApiError(404, 'COUPON_NOT_FOUND', `no coupon ${request.params.code}`);
    return coupon;
  });

  app.put<{ Params: { userId: string } }>('/admin/points/:userId', async (request) => {
    requireAdmin(request, deps.adminToken);
    const userId = parseOr400(UserId, request.params.userId);
    const body = parseOr400(PutPointsRequest, request.body);
    // Sets the available balance; frozen and spent points stay accounted for in total_in.
    if (body.expectedAvailable === undefined) {
      await deps.db.raw(
        'INSERT INTO user_points (user_id, available, frozen, spent, total_in) VALUES (?, ?, 0, 0, ?) ON DUPLICATE KEY UPDATE total_in = VALUES(available) + frozen + spent, available = VALUES(available), updated_at = CURRENT_TIMESTAMP(3)',
        [userId, body.balance, body.balance],
      );
    } else {
      // Compare and set: only from the balance the operator read (a user without a row has 0, and gets one).
      const expected = body.expectedAvailable;
      const created =
        expected === 0 &&
        (
          (await deps.db.raw(
            'INSERT IGNORE INTO user_points (user_id, available, frozen, spent, total_in) VALUES (?, ?, 0, 0, ?)',
            [userId, body.balance, body.balance],
          )) as [{ affectedRows: number }]
        )[0].affectedRows === 1;
      const set =
        created ||
        (await deps
          .db('user_points')
          .where({ user_id: userId, available: expected })
          .update({
            total_in: deps.db.raw('? + frozen + spent', [body.balance]),
            available: body.balance,
            updated_at: deps.db.fn.now(3),
          })) === 1;
      // (An UPDATE that changes nothing counts 0 rows: setting the balance it already has, read back, is no conflict.)
      const now = set ? undefined : await readPoints(deps.db, userId);
      if (now && !(now.available === expected && expected === body.balance)) {
        throw new ApiError(
          409,
          'POINTS_BALANCE_CHANGED',
          `points of ${userId} are ${now.available} available, not ${expected}: read them again and decide`,
          { available: now.available, frozen: now.frozen, spent: now.spent, expectedAvailable: expected },
        );
      }
    }
    return readPoints(deps.db, userId);
  });

  app.get<{ Params: { userId: string } }>('/admin/points/:userId', async (request) => {
    requireAdmin(request, deps.adminToken);
    return readPoints(deps.db, parseOr400(UserId, request.params.userId));
  });

  app.get<{ Params: { sku: string } }>('/admin/products/:sku', async (request) => {
    requireAdmin(request, deps.adminToken);
    const sku = parseOr400(Sku, request.params.sku);
    const product = await readProduct(deps.db, sku);
    if (!product) throw new ApiError(404, 'PRODUCT_NOT_FOUND', `no product ${sku}`);
    return product;
  });
}
