/**
 * POST /callbacks/:provider: verify the signature on the raw bytes, store in the inbox, acknowledge in the
 * provider's format, then signal. Rejections are 4xx, audited, and change no order. Verified events that are not
 * payments are acknowledged; one that reports a refund of ours failed is recorded first (src/db/refund-outcomes.ts).
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Knex } from 'knex';
import { FailureType } from '../../contracts/failures';
import { type RefundOutcomeNotice, isRefundOutcome, recordRefundOutcome } from '../../db/refund-outcomes';
import type { PaymentProvider, ProviderRegistry } from '../../providers/types';
import { providerMismatch } from '../../temporal/route-notification';
import { apiFailure } from '../errors';
import type { NotificationInbox } from '../inbox';
import type { Metrics } from '../metrics';
import { bindOrderId } from '../observability';

/** Largest notification body accepted. */
const MAX_BODY_BYTES = 64 * 1024;

/** Headers kept with an inbox row (enough to re-verify; nothing secret). */
function keptHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const kept: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name === 'authorization' || name === 'cookie' || value === undefined) continue;
    kept[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return kept;
}

/** Registers the callback route in its own scope, where every body is read as raw bytes. */
export function registerCallbackRoutes(
  app: FastifyInstance,
  deps: { db: Knex; providers: ProviderRegistry; inbox: NotificationInbox; metrics: Metrics; now?: () => Date },
): void {
  const now = deps.now ?? (() => new Date());
  const orderProviders = deps.inbox.orderProviders;
  // Every configured provider's series exists from the start: increase() cannot see a counter's first sample, so an
  // alert on a series that appeared at 1 would miss the first failed refund.
  for (const name of Object.keys(deps.providers)) deps.metrics.refundsFailed.inc({ provider: name }, 0);
  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: MAX_BODY_BYTES }, (_req, body, done) =>
      done(null, body),
    );

    /** Records a refund's reported outcome (a failed one moves the refund and the order), logs and counts it. */
    async function recordRefund(
      request: FastifyRequest,
      reply: FastifyReply,
      provider: PaymentProvider,
      notice: RefundOutcomeNotice,
    ): Promise<void> {
      const result = await recordRefundOutcome(deps.db, notice);
      if (result.outcome !== 'UNKNOWN_REFUND') bindOrderId(request, reply, result.orderId);
      const facts = {
        provider: provider.name,
        outRefundNo: notice.outRefundNo,
        refundStatus: notice.refundStatus,
        providerEvent: notice.providerEvent,
        notificationId: notice.notificationId,
        result,
      };
      switch (result.outcome) {
        case 'FAILED_RECORDED':
          deps.metrics.refundsFailed.inc({ provider: provider.name });
          request.log.error(
            facts,
            `refund ${notice.outRefundNo} failed at ${provider.name} after it was accepted: refund FAILED` +
              (result.orderChanged
                ? `, order ${result.orderId} NEEDS_REVIEW`
                : `, order left ${result.orderStatus ?? 'to its refund step'}`),
          );
          return;
        case 'ALREADY_FAILED':
          request.log.info(facts, 'refund failure redelivered; recorded already');
          return;
        case 'NO_CHANGE':
          request.log.info(facts, `refund notice changes nothing: ${result.detail}`);
          return;
        case 'UNKNOWN_REFUND':
          request.log.warn(facts, 'refund notice for a refund number we do not know; nothing changed');
          return;
        case 'NOT_THIS_REFUND':
          request.log.warn(facts, `refund notice refused, nothing changed: ${result.detail}`);
          return;
        case 'SUCCEEDED_AFTER_FAILURE':
          request.log.warn(
            facts,
            `refund ${notice.outRefundNo} that had failed is reported succeeded: its review must close without a new refund`,
          );
          return;
      }
    }

    scope.post<{ Params: { provider: string } }>('/callbacks/:provider', async (request, reply) => {
      const name = request.params.provider;
      // Own properties only: "valueOf" or "__proto__" must not resolve to something on Object.prototype.
      const provider = Object.hasOwn(deps.providers, name) ? deps.providers[name] : undefined;
      if (!provider)
        throw apiFailure(FailureType.UNKNOWN_PROVIDER, `no provider ${request.params.provider.slice(0, 40)}`);
      const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
      const verdict = provider.verifyNotification(raw, request.headers, now());
      const reject = async (reason: string, message: string) => {
        deps.metrics.signatureRejected.inc({ provider: provider.name, reason });
        deps.metrics.notifications.inc({ provider: provider.name, outcome: 'rejected' });
        // The audit row is best effort: a refused notification is answered 4xx even if MySQL is down.
        await deps
          .db('notification_rejections')
          .insert({
            provider: provider.name,
            reason,
            body_sha256: createHash('sha256').update(raw).digest('hex'),
            body_length: raw.length,
            remote_address: request.ip.slice(0, 64),
          })
          .catch((err: unknown) => request.log.warn({ err }, 'could not record a notification rejection'));
        request.log.warn({ provider: provider.name, reason }, 'notification rejected');
        const status =
          reason === 'BAD_SIGNATURE' ||
          reason === 'MISSING_SIGNATURE' ||
          reason === 'STALE_TIMESTAMP' ||
          reason === 'MALFORMED_SIGNATURE'
            ? 401
            : reason === 'PROVIDER_MISMATCH'
              ? 409
              : 400;
        // Our error shape, plus the provider's own failure fields where it defines some (WeChat's code/message).
        const own = provider.failureAck?.({ code: reason as never, message });
        let extra: Record<string, unknown> = {};
        if (own?.contentType.startsWith('application/json')) {
          try {
            extra = JSON.parse(own.body) as Record<string, unknown>;
          } catch {
            extra = {};
          }
        }
        return reply.code(status).send({ ...extra, error: reason, message });
      };
      if (!verdict.ok && verdict.rejection.code === 'UNSUPPORTED_EVENT' && verdict.rejection.notice) {
        const notice = verdict.rejection.notice;
        // A refund's outcome is recorded before the acknowledgement: should MySQL fail, the answer is 5xx and the
        // provider redelivers.
        if (isRefundOutcome(notice)) await recordRefund(request, reply, provider, notice);
        // Verified, ours, but not a payment (a refund-close, a cancel): acknowledge so the provider stops retrying.
        deps.metrics.notifications.inc({ provider: provider.name, outcome: 'acknowledged_notice' });
        request.log.info({ provider: provider.name, notice }, 'verified non-payment notification acknowledged');
        return reply.code(provider.ack.status).type(provider.ack.contentType).send(provider.ack.body);
      }
      if (!verdict.ok) return reject(verdict.rejection.code, verdict.rejection.message);
      const n = verdict.notification;
      if (n.merchantId !== provider.merchantId)
        return reject('WRONG_MERCHANT', `notification is for merchant ${n.merchantId}, not ours`);
      // A notification only speaks for its own provider's payment: one provider's secret must never move another's
      // order.
      const mismatch = await providerMismatch(
        deps.db,
        { provider: provider.name, outTradeNo: n.outTradeNo },
        orderProviders,
      );
      if (mismatch) {
        deps.metrics.notificationsRefused.inc({
          provider: provider.name,
          reason: 'PROVIDER_MISMATCH',
          where: 'callback',
        });
        return reject('PROVIDER_MISMATCH', `refused: ${mismatch}`);
      }
      bindOrderId(request, reply, n.outTradeNo);

      // A redelivery of a notification this process stored is stored already: acknowledged without a write, counted
      // in memory (added to `deliveries` within a moment), and routed if its row still waits.
      const known = deps.inbox.storedId(provider.name, n.notificationId);
      if (known !== undefined) {
        deps.inbox.countDelivery(known);
        deps.metrics.notifications.inc({ provider: provider.name, outcome: 'duplicate' });
        await reply.code(provider.ack.status).type(provider.ack.contentType).send(provider.ack.body);
        deps.inbox.kick(known);
        return reply;
      }

      // Persist first, in one statement: INSERT .. ON DUPLICATE KEY counts redeliveries (affectedRows 1 = new,
      // 2 = duplicate) and LAST_INSERT_ID(id) hands back the stored row's id either way. A new row is inserted
      // leased to this process (its first attempt), so routing it needs no claiming UPDATE; a duplicate keeps its
      // lease and attempts.
      const lease = deps.inbox.leaseForInsert();
      const [result] = (await deps.db.raw(
        `INSERT INTO notification_inbox (provider, notification_id, out_trade_no, event_type, raw_body, headers, payload, status, attempts, next_attempt_at)
         VALUES (?, ?, ?, 'payment.succeeded', ?, ?, ?, 'RECEIVED', ?, COALESCE(?, CURRENT_TIMESTAMP(3)))
         ON DUPLICATE KEY UPDATE deliveries = deliveries + 1, id = LAST_INSERT_ID(id)`,
        [
          provider.name,
          n.notificationId,
          n.outTradeNo,
          raw.toString('utf8'),
          JSON.stringify(keptHeaders(request.headers)),
          JSON.stringify(n),
          lease ? 1 : 0,
          lease ?? null,
        ],
      )) as [{ affectedRows: number; insertId: number }];
      const duplicate = result.affectedRows !== 1;
      if (!duplicate && lease) deps.inbox.insertedLeased(Number(result.insertId));
      deps.inbox.rememberStored(provider.name, n.notificationId, Number(result.insertId));
      deps.metrics.notifications.inc({ provider: provider.name, outcome: duplicate ? 'duplicate' : 'accepted' });
      await reply.code(provider.ack.status).type(provider.ack.contentType).send(provider.ack.body);
      // Acknowledged; now route it (a row already routed is skipped by the inbox). A failure leaves the row RECEIVED
      // for the retry sweep.
      deps.inbox.kick(Number(result.insertId), duplicate ? undefined : n);
      return reply;
    });
  });
}
