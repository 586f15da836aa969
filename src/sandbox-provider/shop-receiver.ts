/**
 * A stand-in for the shop's own systems in development (`npm start`): the endpoint the outbox relay delivers to
 * (OUTBOX_WEBHOOK_URL = `<sandbox>/shop/outbox`). It does what a real receiver must (src/contracts/outbox.ts): checks
 * the signature over the raw body, answers 2xx only for a message it has, and counts a redelivery of a message id once.
 * `GET /shop/outbox` lists what arrived, newest first (the last 200), so a developer sees the receipt and the
 * fulfilment hand-off of the order they just paid.
 */
import type { FastifyInstance } from 'fastify';
import { OUTBOX_HEADERS, type OutboxDelivery } from '../contracts/outbox';
import { verifyOutboxSignature } from '../shared/outbox-signature';

const KEPT = 200;

export function registerShopReceiver(app: FastifyInstance, secret: string): void {
  const received = new Map<string, OutboxDelivery & { receivedAt: string; deliveries: number }>();
  void app.register(
    async (scope) => {
      // The signature covers the raw body: parse it here, after checking.
      scope.removeContentTypeParser('application/json');
      scope.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => done(null, body));
      scope.post('/outbox', async (request, reply) => {
        const body = typeof request.body === 'string' ? request.body : '';
        const signature = request.headers[OUTBOX_HEADERS.signature];
        if (!verifyOutboxSignature(secret, Array.isArray(signature) ? signature[0] : signature, body))
          return reply.code(401).send({ error: 'BAD_SIGNATURE' });
        let delivery: OutboxDelivery;
        try {
          delivery = JSON.parse(body) as OutboxDelivery;
        } catch {
          return reply.code(400).send({ error: 'MALFORMED' });
        }
        const seen = received.get(delivery.id);
        if (seen) seen.deliveries++;
        else {
          received.set(delivery.id, { ...delivery, receivedAt: new Date().toISOString(), deliveries: 1 });
          if (received.size > KEPT) received.delete(received.keys().next().value!);
          request.log.info({ messageId: delivery.id }, `shop received ${delivery.topic} for ${delivery.key}`);
        }
        return reply.code(204).send();
      });
      scope.get('/outbox', async () => ({ received: [...received.values()].reverse() }));
    },
    { prefix: '/shop' },
  );
}
