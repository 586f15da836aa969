import type { Knex } from 'knex';

/**
 * Units ever put into stock per SKU, so that "available + reserved + sold = units put in" can be checked
 * by the invariant checker against the database alone.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('stock', (t) => {
    t.bigInteger('total_in')
      .unsigned()
      .notNullable()
      .defaultTo(0)
      .comment('units put in by admins; available + reserved + sold must equal it');
  });
  await knex('stock').update({ total_in: knex.raw('available + reserved + sold') });
}

/** Drops the column. */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('stock', (t) => {
    t.dropColumn('total_in');
  });
}
