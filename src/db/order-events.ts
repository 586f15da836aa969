import type { Knex } from 'knex';

/** Appends one entry to an order's timeline, inside the caller's transaction. */
export async function appendOrderEvent(
  trx: Knex | Knex.Transaction,
  orderId: string,
  type: string,
  message: string,
  data?: Record<string, unknown>,
): Promise<void> {
  await trx('order_events').insert(eventRow(orderId, type, message, data));
}

function eventRow(orderId: string, type: string, message: string, data?: Record<string, unknown>) {
  return { order_id: orderId, type, message: message.slice(0, 512), data: data ? JSON.stringify(data) : null };
}

/**
 * Timeline entries gathered while a transaction runs and written in one multi-row INSERT just before it commits, in
 * the order they were added (ids ascend in row order, and the timeline sorts by id). For transactions that make
 * several changes (settlePaid): one round trip instead of one per entry, and the same atomicity, since the entries
 * commit or roll back with the changes they describe.
 */
export class OrderEventBatch {
  private readonly rows: ReturnType<typeof eventRow>[] = [];

  constructor(private readonly orderId: string) {}

  add(type: string, message: string, data?: Record<string, unknown>): void {
    this.rows.push(eventRow(this.orderId, type, message, data));
  }

  async write(trx: Knex.Transaction): Promise<void> {
    if (this.rows.length) await trx('order_events').insert(this.rows.splice(0));
  }
}
