import type { Knex } from 'knex';

/**
 * refunds.status gains FAILED: a refund the provider accepted without completing it (WeChat PROCESSING, a pending
 * Stripe refund), recorded SUCCEEDED, that the provider later reported failed or closed (src/db/refund-outcomes.ts).
 * The column is a VARCHAR(16) already; only its comment, which lists the statuses, changes.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('refunds', (t) => {
    t.string('status', 16)
      .notNullable()
      .comment('PENDING | SUCCEEDED | FAILED (accepted, then reported failed or closed by the provider)')
      .alter();
  });
}

/** Restores the comment; FAILED rows keep their status (turning them back into SUCCEEDED would hide money owed). */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('refunds', (t) => {
    t.string('status', 16).notNullable().comment('PENDING | SUCCEEDED').alter();
  });
}
