import type { Knex } from 'knex';

/**
 * Coupons and loyalty points as TCC participants (fence rows in tcc_fence with participant 'coupon' / 'points'),
 * and the order's discount and points. Points are worth 1 minor unit each (1 point = 1 fen/cent).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('coupons', (t) => {
    t.collate('utf8mb4_bin');
    t.comment(
      'Coupons of users: AVAILABLE -> FROZEN (TCC Try) -> USED (Confirm), or back to AVAILABLE (Cancel, refund)',
    );
    t.string('code', 64).primary();
    t.string('user_id', 64).notNullable();
    t.bigInteger('discount').unsigned().notNullable().comment('minor units off the order total');
    t.specificType('currency', 'CHAR(3)').notNullable();
    t.string('status', 16).notNullable().defaultTo('AVAILABLE').comment('AVAILABLE | FROZEN | USED');
    t.string('order_id', 64).nullable().comment('order holding or having used the coupon');
    t.timestamp('created_at', { precision: 3 }).notNullable().defaultTo(knex.fn.now(3));
    t.timestamp('updated_at', { precision: 3 }).notNullable().defaultTo(knex.fn.now(3));
  });
  await knex.schema.createTable('user_points', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('Loyalty points per user; available + frozen + spent = total_in (unsigned: never negative)');
    t.string('user_id', 64).primary();
    t.bigInteger('available').unsigned().notNullable().defaultTo(0);
    t.bigInteger('frozen').unsigned().notNullable().defaultTo(0).comment('held by TCC Try, awaiting payment');
    t.bigInteger('spent').unsigned().notNullable().defaultTo(0);
    t.bigInteger('total_in').unsigned().notNullable().defaultTo(0).comment('points put in by admins');
    t.timestamp('updated_at', { precision: 3 }).notNullable().defaultTo(knex.fn.now(3));
  });
  await knex.schema.alterTable('orders', (t) => {
    t.string('coupon_code', 64).nullable();
    t.bigInteger('discount').unsigned().notNullable().defaultTo(0).comment('coupon discount, minor units');
    t.bigInteger('points_used')
      .unsigned()
      .notNullable()
      .defaultTo(0)
      .comment('points redeemed, 1 point = 1 minor unit');
    t.bigInteger('subtotal').unsigned().nullable().comment('catalog total before discount and points');
  });
}

/** Drops the tables and columns. */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('orders', (t) => {
    t.dropColumn('coupon_code');
    t.dropColumn('discount');
    t.dropColumn('points_used');
    t.dropColumn('subtotal');
  });
  await knex.schema.dropTableIfExists('user_points');
  await knex.schema.dropTableIfExists('coupons');
}
