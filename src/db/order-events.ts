import type { Knex } from 'knex';

/** Appends one entry to an order's timeline, inside the caller's transaction. */
export async function appendOrderEvent(
  trx: Knex | Knex.Transaction,
  orderId: string,
  type: string,
  message: string,
  data?: Record<string, unknown>,
): Promise<void> {
  await trx('order_events').insert({
    order_id: orderId,
    type,
    message: message.slice(0, 512),
    data: data ? JSON.stringify(data) : null,
  });
}
