import type { Knex } from 'knex';

/**
 * An operator's resolution of a reconciliation difference: who marked it handled, when, and what was done (the note).
 * It belongs to the bill line, not to one run's item: keyed by provider, merchant, bill day and the line's row key
 * (what identifies the same line across runs of the day, see src/activities/reconciliation.ts), so a re-run of the day
 * lists the line again with the same resolution. The class and detail are part of the key: a line that turns into
 * another difference on a re-run (an AMOUNT mismatch that is now a CURRENCY one, a refund PROVIDER_PROCESSING that is
 * now PROVIDER_FAILED) is a new problem that nobody has resolved. Written once (the unique key decides between
 * concurrent operators) and never updated.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('reconciliation_resolutions', (t) => {
    t.collate('utf8mb4_bin');
    t.comment(
      'An operator resolution of a reconciliation difference, per bill line; carries over to re-runs of the day',
    );
    t.bigIncrements('id', { primaryKey: true });
    t.string('provider', 32).notNullable();
    t.string('merchant_id', 128).notNullable().comment("the run's merchant id: whose bill the line is on");
    t.string('bill_date', 10).notNullable().comment('YYYY-MM-DD in the provider bill time zone');
    t.string('row_key', 200).notNullable().comment('reconciliation_items.row_key of the line');
    t.string('class', 24).notNullable().comment('the difference class resolved (never MATCHED)');
    t.string('detail', 32).notNullable().defaultTo('').comment("the item's detail, '' when it has none");
    t.string('operator', 64).notNullable().comment('who resolved it');
    t.string('note', 500).notNullable().comment('what was done: refunded by hand, confirmed with the provider, ticket');
    t.string('run_id', 96).notNullable().comment('the run whose item was resolved');
    t.bigInteger('item_id').unsigned().notNullable().comment('the reconciliation_items.id resolved');
    t.dateTime('resolved_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.unique(['provider', 'merchant_id', 'bill_date', 'row_key', 'class', 'detail'], {
      indexName: 'uq_recon_resolutions_line',
    });
  });
}

/** Drops what `up` created (the resolutions are lost: the alerts fire again for every open difference). */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('reconciliation_resolutions');
}
