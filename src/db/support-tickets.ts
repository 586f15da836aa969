/**
 * Support tickets of one-click customer service: written by the worker's escalate step while the order's workflow
 * runs, and by the API itself once the workflow has finished.
 */
import type { Knex } from 'knex';
import { appendOrderEvent } from './order-events';

/** Input of createSupportTicket. */
export interface SupportTicketInput {
  ticketId: string;
  orderId: string;
  orderStatus: string;
  stage?: string;
  providerStatus?: string;
  resolution: string;
  snapshot: Record<string, unknown>;
  note?: string;
}

/** Records a ticket with its snapshot; idempotent by ticket id (a retried activity writes it once). */
export async function createSupportTicket(db: Knex, input: SupportTicketInput): Promise<{ ticketId: string }> {
  await db.transaction(async (trx) => {
    const exists = await trx('support_tickets').where({ ticket_id: input.ticketId }).first('ticket_id');
    if (exists) return;
    await trx('support_tickets').insert({
      ticket_id: input.ticketId,
      order_id: input.orderId,
      order_status: input.orderStatus,
      stage: input.stage ?? null,
      provider_status: input.providerStatus ?? null,
      resolution: input.resolution,
      snapshot: JSON.stringify(input.snapshot),
      note: input.note?.slice(0, 500) ?? null,
    });
    await trx('orders')
      .where({ order_id: input.orderId })
      .whereNull('escalated_at')
      .update({ escalated_at: trx.fn.now(3) });
    await appendOrderEvent(
      trx,
      input.orderId,
      'SUPPORT_ESCALATED',
      `Buyer asked for help; ticket ${input.ticketId} (provider says ${input.providerStatus ?? 'unknown'}; ${input.resolution})`,
      {
        ticketId: input.ticketId,
      },
    );
  });
  return { ticketId: input.ticketId };
}
