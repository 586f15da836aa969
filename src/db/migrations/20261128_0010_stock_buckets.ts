import type { Knex } from 'knex';

/**
 * Hot-SKU stock buckets. A SKU's stock can be sharded into N buckets so that concurrent reservations in a
 * flash sale update different rows instead of queueing on one. Bucket 0 is the SKU's `stock` row itself,
 * buckets 1..N-1 are rows of `stock_buckets`; a SKU's totals are always the sum over all of its buckets, so an
 * unsharded SKU (buckets = 1) reads exactly as before. `stock_holds` records which buckets a bucketed Try took
 * from, so that confirm and cancel touch only those; a fence without holds took everything from bucket 0.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('stock', (t) => {
    t.smallint('buckets')
      .unsigned()
      .notNullable()
      .defaultTo(1)
      .comment('1 = one row; N = this row is bucket 0 of N (others in stock_buckets)');
  });
  await knex.schema.createTable('stock_buckets', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('Buckets 1..N-1 of a sharded SKU (bucket 0 is the stock row); unsigned: never negative');
    t.string('sku', 64).notNullable();
    t.smallint('bucket').unsigned().notNullable();
    t.bigInteger('available').unsigned().notNullable().defaultTo(0);
    t.bigInteger('reserved').unsigned().notNullable().defaultTo(0);
    t.bigInteger('sold').unsigned().notNullable().defaultTo(0);
    t.dateTime('updated_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.primary(['sku', 'bucket']);
    t.foreign('sku', 'fk_stock_buckets_stock').references('stock.sku');
  });
  await knex.schema.createTable('stock_holds', (t) => {
    t.collate('utf8mb4_bin');
    t.comment(
      'Which buckets a bucketed stock Try took from; written in the Try transaction, read by confirm/cancel/return',
    );
    t.string('xid', 64).notNullable().comment('order id (the TCC transaction)');
    t.string('sku', 64).notNullable();
    t.smallint('bucket').unsigned().notNullable();
    t.bigInteger('quantity').unsigned().notNullable();
    t.primary(['xid', 'sku', 'bucket']);
  });
}

export async function down(knex: Knex): Promise<void> {
  // Folds every bucket back into its stock row first, so no unit is lost by the rollback.
  await knex.raw(
    `UPDATE stock s JOIN (SELECT sku, SUM(available) a, SUM(reserved) r, SUM(sold) d FROM stock_buckets GROUP BY sku) b ON b.sku = s.sku
     SET s.available = s.available + b.a, s.reserved = s.reserved + b.r, s.sold = s.sold + b.d`,
  );
  await knex.schema.dropTable('stock_holds');
  await knex.schema.dropTable('stock_buckets');
  await knex.schema.alterTable('stock', (t) => {
    t.dropColumn('buckets');
  });
}
