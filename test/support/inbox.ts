/** For inbox tests: a stored, verified notification row, as the callback route writes it, due for routing now. */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { RoutableNotification } from '../../src/temporal/route-notification';

/**
 * Inserts a RECEIVED inbox row for `orderId` (fields of the notification overridable) and returns its id and payload.
 */
export async function insertInboxRow(
  db: Knex,
  orderId: string,
  overrides: Partial<RoutableNotification> = {},
): Promise<{ id: number; payload: RoutableNotification }> {
  const notificationId = `n-${randomBytes(6).toString('hex')}`;
  const payload: RoutableNotification = {
    provider: 'sandbox',
    notificationId,
    outTradeNo: orderId,
    tradeNo: `t-${notificationId}`,
    amount: 100,
    currency: 'CNY',
    merchantId: 'm',
    paidAt: new Date().toISOString(),
    ...overrides,
  };
  const [id] = await db('notification_inbox').insert({
    provider: payload.provider,
    notification_id: payload.notificationId,
    out_trade_no: orderId,
    event_type: 'payment.succeeded',
    raw_body: '{}',
    headers: '{}',
    payload: JSON.stringify(payload),
    status: 'RECEIVED',
  });
  return { id: Number(id), payload };
}
