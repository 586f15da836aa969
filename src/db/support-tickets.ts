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

/** What claimEscalation decided. */
export type EscalationClaim = { claimed: true } | { claimed: false; reason: 'COOLING_DOWN' | 'LIMIT_REACHED' };

/**
 * Claims the order's next escalation, under the claim row's lock: refused while the last claim is younger than
 * `cooldownSeconds`, or once `maxPerDay` were claimed in the order's current day-long window (it starts with the first
 * claim after the previous one ended; the database's clock). Concurrent callers are serialised, so one escalation runs
 * per cool-down however many are sent at once.
 */
export async function claimEscalation(
  db: Knex,
  orderId: string,
  limits: { cooldownSeconds: number; maxPerDay: number },
): Promise<EscalationClaim> {
  // The row first, on its own (concurrent inserts of one key inside the locking transaction deadlock each other).
  await db('escalation_claims')
    .insert({ order_id: orderId, claimed_at: null, window_started_at: null, escalations: 0 })
    .onConflict()
    .ignore();
  return db.transaction(async (trx) => {
    const row = (await trx('escalation_claims')
      .where({ order_id: orderId })
      .forUpdate()
      .first(
        'escalations',
        trx.raw('claimed_at > CURRENT_TIMESTAMP(3) - INTERVAL ? SECOND AS cooling', [limits.cooldownSeconds]),
        trx.raw('window_started_at > CURRENT_TIMESTAMP(3) - INTERVAL 1 DAY AS in_window'),
      )) as { escalations: number; cooling: number | null; in_window: number | null };
    if (row.cooling) return { claimed: false, reason: 'COOLING_DOWN' };
    if (row.in_window && row.escalations >= limits.maxPerDay) return { claimed: false, reason: 'LIMIT_REACHED' };
    const changed = await trx('escalation_claims')
      .where({ order_id: orderId })
      .update(
        row.in_window
          ? { escalations: row.escalations + 1, claimed_at: trx.fn.now(3) }
          : { escalations: 1, claimed_at: trx.fn.now(3), window_started_at: trx.fn.now(3) },
      );
    if (changed !== 1) throw new Error(`escalation claim of ${orderId} vanished under its lock`);
    return { claimed: true };
  });
}
