/** Order API: POST /orders, GET /orders/:orderId, POST /orders/:orderId/cancel. */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { FailureType } from '../../contracts/failures';
import { CreateOrderRequest, OrderId } from '../../contracts/order';
import { ApiError, apiFailure, parseOr400 } from '../errors';
import type { Metrics } from '../metrics';
import { bindOrderId } from '../observability';
import type { OrderService } from '../orders-service';

const IdempotencyKey = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[\x21-\x7e]+$/, 'Idempotency-Key must be printable ASCII without spaces');
const CancelBody = z.object({ reason: z.string().max(200).optional() }).strict();

/** Registers the order routes. */
export function registerOrderRoutes(app: FastifyInstance, orders: OrderService, metrics: Metrics): void {
  app.post('/orders', async (request, reply) => {
    const body = parseOr400(CreateOrderRequest, request.body);
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
    return order;
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
