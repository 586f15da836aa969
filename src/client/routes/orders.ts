/** Order API: POST /orders, GET /orders/:orderId, POST /orders/:orderId/cancel. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { FailureType } from '../../contracts/failures';
import { CreateOrderRequest, OrderId } from '../../contracts/order';
import { ApiError, apiFailure, parseOr400 } from '../errors';
import type { Metrics } from '../metrics';
import { bindOrderId } from '../observability';
import { publicOrderView, type OrderService } from '../orders-service';
import { bearerMatches } from './admin';

/** Who may spend a buyer's stored value (coupons, points) on an order: the shop's backend, by its token. */
export interface ShopAuth {
  /** SHOP_API_TOKEN; undefined: benefits refused in production, open in development. */
  token: string | undefined;
  production: boolean;
}

/**
 * An order's `userId` is whatever the caller wrote, and POST /orders is open to anyone: spending that user's coupon or
 * points needs the shop's backend to vouch for the buyer (its session layer signed the buyer in). Checked before the
 * body reaches MySQL, so an unauthenticated caller also learns nothing of a balance (no INSUFFICIENT_POINTS oracle).
 * An order without them needs nothing (the public contract): its Authorization header, if any, is not read.
 */
function requireShopAuth(request: FastifyRequest, auth: ShopAuth, spendsBenefits: boolean): void {
  if (!spendsBenefits) return;
  if (auth.token !== undefined && !bearerMatches(request, auth.token))
    throw new ApiError(
      401,
      'SHOP_AUTH_REQUIRED',
      'an order that spends a coupon or points must come from the shop backend (Authorization: Bearer <SHOP_API_TOKEN>)',
    );
  if (auth.token === undefined && auth.production)
    throw new ApiError(
      403,
      'BENEFITS_NOT_ENABLED',
      'coupons and points are not enabled: the operator has not set SHOP_API_TOKEN for the shop backend',
    );
}

const IdempotencyKey = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[\x21-\x7e]+$/, 'Idempotency-Key must be printable ASCII without spaces');
const CancelBody = z.object({ reason: z.string().max(200).optional() }).strict();

/** Registers the order routes. */
export function registerOrderRoutes(
  app: FastifyInstance,
  orders: OrderService,
  metrics: Metrics,
  shopAuth: ShopAuth,
): void {
  app.post('/orders', async (request, reply) => {
    const body = parseOr400(CreateOrderRequest, request.body);
    requireShopAuth(request, shopAuth, body.couponCode !== undefined || body.points !== undefined);
    const rawKey = request.headers['idempotency-key'];
    const key =
      rawKey === undefined ? undefined : parseOr400(IdempotencyKey, Array.isArray(rawKey) ? rawKey[0] : rawKey);
    try {
      const { replayed, body: result } = await orders.create(body, key);
      bindOrderId(request, reply, result.orderId);
      metrics.ordersCreated.inc({ outcome: replayed ? 'replayed' : 'created' });
      // A replay answers as the request that placed the order was answered (201, the same body), as Stripe replays
      // the original status; the header tells the client that this request placed nothing.
      if (replayed) void reply.header('idempotent-replayed', 'true');
      return reply.code(201).send(result);
    } catch (err) {
      metrics.ordersCreated.inc({ outcome: err instanceof ApiError ? err.code : 'error' });
      throw err;
    }
  });

  app.get<{ Params: { orderId: string } }>('/orders/:orderId', async (request) => {
    const orderId = parseOrderId(request.params.orderId);
    const order = await orders.get(orderId, { live: true });
    if (!order) throw apiFailure(FailureType.ORDER_NOT_FOUND, `no order ${orderId}`);
    return publicOrderView(order);
  });

  app.post<{ Params: { orderId: string } }>('/orders/:orderId/cancel', async (request) => {
    const orderId = parseOrderId(request.params.orderId);
    const body = parseOr400(CancelBody, request.body ?? {});
    return orders.cancel(orderId, body.reason);
  });
}

function parseOrderId(value: string): string {
  const parsed = OrderId.safeParse(value);
  if (!parsed.success) throw apiFailure(FailureType.ORDER_NOT_FOUND, `no order ${value.slice(0, 80)}`);
  return parsed.data;
}
