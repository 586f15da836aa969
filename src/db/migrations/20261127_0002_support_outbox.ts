import type { Knex } from 'knex';

/**
 * Support tickets (one-click customer service), the fulfilment outbox (written when the cooling-off window
 * ends), and the order columns that record those moments.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('support_tickets', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('One-click support escalations with a snapshot of the order and the provider state');
    t.string('ticket_id', 64).primary();
    t.string('order_id', 64).notNullable();
    t.string('order_status', 24).notNullable();
    t.string('stage', 32).nullable();
    t.string('provider_status', 16).nullable().comment('what the provider said when asked at escalation time');
    t.string('resolution', 32).notNullable().comment('PAYMENT_FOUND | WAITING | CLOSED | ...');
    t.text('snapshot', 'mediumtext').notNullable().comment('JSON: timeline, stage, provider answer');
    t.string('note', 500).nullable().comment("the buyer's words, if any");
    t.dateTime('created_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.index(['order_id'], 'ix_support_tickets_order');
  });
  await knex.schema.createTable('outbox', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('Transactional outbox: messages for other systems, written with the change that causes them');
    t.bigIncrements('id', { primaryKey: true });
    t.string('topic', 64).notNullable();
    t.string('message_key', 128).notNullable().comment('idempotency key of the message (e.g. the order id)');
    t.text('payload').notNullable().comment('JSON');
    t.dateTime('created_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.dateTime('published_at', { precision: 3 }).nullable();
    t.unique(['topic', 'message_key'], { indexName: 'uq_outbox_topic_key' });
    t.index(['published_at', 'id'], 'ix_outbox_unpublished');
  });
  await knex.schema.alterTable('orders', (t) => {
    t.dateTime('fulfilment_ready_at', { precision: 3 })
      .nullable()
      .comment('cooling-off window ended; handed to fulfilment');
    t.dateTime('escalated_at', { precision: 3 }).nullable().comment('first one-click support escalation');
  });
}

/** Drops what `up` created. */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('orders', (t) => {
    t.dropColumn('fulfilment_ready_at');
    t.dropColumn('escalated_at');
  });
  await knex.schema.dropTableIfExists('outbox');
  await knex.schema.dropTableIfExists('support_tickets');
}
