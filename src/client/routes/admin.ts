/** Admin endpoints (Bearer ADMIN_TOKEN): PUT/GET /admin/products/:sku. */
import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Knex } from 'knex';
import { PutProductRequest, Sku } from '../../contracts/order';
import { ApiError, parseOr400 } from '../errors';

/** Throws 401 unless the request carries the admin bearer token (compared in constant time). */
export function requireAdmin(request: FastifyRequest, token: string): void {
  const header = request.headers.authorization ?? '';
  const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
  const expected = Buffer.from(token);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new ApiError(401, 'UNAUTHORIZED', 'missing or wrong admin token (Authorization: Bearer <ADMIN_TOKEN>)');
  }
}

async function readProduct(db: Knex, sku: string) {
  const row = await db('products as p').join('stock as s', 's.sku', 'p.sku').where('p.sku', sku).first('p.sku', 'p.name', 'p.price', 'p.currency', 's.available', 's.reserved', 's.sold');
  if (!row) return null;
  return {
    sku: row.sku as string,
    name: row.name as string,
    price: Number(row.price),
    currency: row.currency as string,
    stock: { available: Number(row.available), reserved: Number(row.reserved), sold: Number(row.sold) },
  };
}

/** Registers the admin product routes. */
export function registerAdminRoutes(app: FastifyInstance, deps: { db: Knex; adminToken: string }): void {
  app.put<{ Params: { sku: string } }>('/admin/products/:sku', async (request, reply) => {
    requireAdmin(request, deps.adminToken);
    const sku = parseOr400(Sku, request.params.sku);
    const body = parseOr400(PutProductRequest, request.body);
    const created = await deps.db.transaction(async (trx) => {
      const existing = await trx('products').where({ sku }).forUpdate().first('sku');
      if (existing) {
        await trx('products').where({ sku }).update({ name: body.name, price: body.price, currency: body.currency, updated_at: trx.fn.now(3) });
        // Replaces available stock; units already reserved or sold stay accounted for.
        await trx('stock')
          .where({ sku })
          .update({ available: body.stock, total_in: trx.raw('? + reserved + sold', [body.stock]), updated_at: trx.fn.now(3) });
      } else {
        await trx('products').insert({ sku, name: body.name, price: body.price, currency: body.currency });
        await trx('stock').insert({ sku, available: body.stock, reserved: 0, sold: 0, total_in: body.stock });
      }
      return !existing;
    });
    return reply.code(created ? 201 : 200).send(await readProduct(deps.db, sku));
  });

  app.get<{ Params: { sku: string } }>('/admin/products/:sku', async (request) => {
    requireAdmin(request, deps.adminToken);
    const sku = parseOr400(Sku, request.params.sku);
    const product = await readProduct(deps.db, sku);
    if (!product) throw new ApiError(404, 'PRODUCT_NOT_FOUND', `no product ${sku}`);
    return product;
  });
}
