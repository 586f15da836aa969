import type { Knex } from 'knex';

/**
 * The outbox relay's bookkeeping (src/client/outbox-relay.ts): how many times a message was handed out for delivery,
 * when it may be handed out again (a lease while a relay delivers it, then the backoff after a failure), and the last
 * failure. `published_at` still says it was delivered.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('outbox', (t) => {
    t.integer('attempts').unsigned().notNullable().defaultTo(0).comment('deliveries started');
    t.dateTime('next_attempt_at', { precision: 3 })
      .nullable()
      .comment('not handed out again before this (lease of a delivery in progress, or backoff)');
    t.string('last_error', 500).nullable().comment("the last failed delivery's error");
    // The relay's claim: unpublished rows that are due, without reading those waiting out a lease or a backoff.
    t.index(['published_at', 'next_attempt_at', 'id'], 'ix_outbox_due');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('outbox', (t) => {
    t.dropIndex(['published_at', 'next_attempt_at', 'id'], 'ix_outbox_due');
    t.dropColumn('attempts');
    t.dropColumn('next_attempt_at');
    t.dropColumn('last_error');
  });
}
