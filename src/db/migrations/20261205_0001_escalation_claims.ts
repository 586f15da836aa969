import type { Knex } from 'knex';

/**
 * escalation_claims: one row per escalated order, claimed under its row lock before an escalation starts its workflow
 * update. The cool-down was a read of the last ticket, written only at the end of the update (after the provider
 * query): escalations sent together all passed it, each an update of the order's workflow (Temporal caps them per
 * execution), a provider query and a ticket. `escalations` also caps an order's escalations in a day.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('escalation_claims', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('One-click support: the last escalation claim of each order (its cool-down) and how many it has had');
    t.string('order_id', 64).primary();
    t.dateTime('claimed_at', { precision: 3 }).nullable().comment('when the running or last escalation was claimed');
    t.dateTime('window_started_at', { precision: 3 }).nullable().comment('start of the day-long window counted');
    t.integer('escalations').unsigned().notNullable().defaultTo(0).comment('claims in that window');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('escalation_claims');
}
