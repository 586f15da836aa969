import type { Knex } from 'knex';

/**
 * Why an inbox row's last routing attempt failed: UNREACHABLE (Temporal could not be reached in time) rows are all
 * released at once when Temporal answers again, instead of each waiting out its own backoff.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('notification_inbox', (t) => {
    t.string('failure_kind', 16)
      .nullable()
      .comment('UNREACHABLE | ERROR: why the last routing attempt failed; NULL while leased or routed');
    t.index(['status', 'failure_kind'], 'ix_inbox_failure_kind');
  });
}

/** Drops what `up` added. */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('notification_inbox', (t) => {
    t.dropIndex(['status', 'failure_kind'], 'ix_inbox_failure_kind');
    t.dropColumn('failure_kind');
  });
}
