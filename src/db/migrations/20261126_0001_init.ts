import type { Knex } from 'knex';

/**
 * Initial schema: catalog, stock, orders, TCC fence, provider payments and refunds, the notification
 * inbox and the order event log. Money columns are BIGINT minor units with a CHAR(3) currency beside them.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('products', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('Catalog: the only source of prices');
    t.string('sku', 64).primary();
    t.string('name', 200).notNullable();
    t.bigInteger('price').unsigned().notNullable().comment('unit price in minor units');
    t.string('currency', 3).notNullable().defaultTo('CNY');
    t.dateTime('created_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.dateTime('updated_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
  });

  await knex.schema.createTable('stock', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('Stock per SKU; unsigned columns make negative stock impossible');
    t.string('sku', 64).primary();
    t.bigInteger('available').unsigned().notNullable().defaultTo(0).comment('free to reserve');
    t.bigInteger('reserved').unsigned().notNullable().defaultTo(0).comment('held by TCC Try, awaiting payment');
    t.bigInteger('sold').unsigned().notNullable().defaultTo(0).comment('confirmed by paid orders');
    t.dateTime('updated_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.foreign('sku', 'fk_stock_product').references('products.sku');
  });

  await knex.schema.createTable('orders', (t) => {
    t.collate('utf8mb4_bin');
    t.string('order_id', 64).primary();
    t.string('user_id', 64).notNullable();
    t.string('status', 24)
      .notNullable()
      .comment('AWAITING_PAYMENT | PAID | EXPIRED | CANCELLED | REFUNDED | NEEDS_REVIEW | FAILED');
    t.string('status_reason', 255).nullable().comment('why the order is in its status (machine code)');
    t.bigInteger('amount').unsigned().notNullable().comment('total in minor units, from the catalog');
    t.string('currency', 3).notNullable();
    t.string('provider', 32).notNullable();
    t.string('idempotency_key', 128).nullable();
    t.dateTime('deadline', { precision: 3 }).nullable().comment('pay before this time');
    t.string('payment_url', 1024).nullable();
    t.string('paid_trade_no', 128).nullable().comment('provider trade that paid this order');
    t.dateTime('created_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.dateTime('updated_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.unique(['user_id', 'idempotency_key'], { indexName: 'uq_orders_idempotency' });
    t.index(['status', 'updated_at'], 'ix_orders_status');
  });

  await knex.schema.createTable('order_lines', (t) => {
    t.collate('utf8mb4_bin');
    t.string('order_id', 64).notNullable();
    t.string('sku', 64).notNullable();
    t.integer('quantity').unsigned().notNullable();
    t.bigInteger('unit_price').unsigned().notNullable().comment('price snapshot at order time, minor units');
    t.primary(['order_id', 'sku']);
    t.foreign('order_id', 'fk_order_lines_order').references('orders.order_id');
  });

  await knex.schema.createTable('tcc_fence', (t) => {
    t.collate('utf8mb4_bin');
    t.comment(
      'TCC fence: one row per (transaction, participant, resource); written in the same transaction as the business change',
    );
    t.string('xid', 64).notNullable().comment('global transaction id = order id');
    t.string('participant', 32).notNullable().comment('stock | coupon | points');
    t.string('resource', 128).notNullable().comment('sku, coupon code, user id');
    t.string('status', 16).notNullable().comment('TRIED | CONFIRMED | CANCELLED');
    t.bigInteger('quantity').unsigned().notNullable().defaultTo(0).comment('amount held by the Try');
    t.boolean('empty_rollback').notNullable().defaultTo(false).comment('cancel arrived before any try');
    t.dateTime('created_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.dateTime('updated_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.primary(['xid', 'participant', 'resource']);
    t.index(['status', 'updated_at'], 'ix_tcc_fence_status');
  });

  await knex.schema.createTable('payments', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('Provider payments; out_trade_no = order id');
    t.string('out_trade_no', 64).primary();
    t.string('order_id', 64).notNullable();
    t.string('provider', 32).notNullable();
    t.string('merchant_id', 128).notNullable();
    t.string('trade_no', 128).nullable();
    t.string('status', 16).notNullable().comment('PENDING | PAID | CLOSED | REFUNDED');
    t.bigInteger('amount').unsigned().notNullable().comment('amount requested, minor units');
    t.string('currency', 3).notNullable();
    t.bigInteger('paid_amount').unsigned().nullable().comment('amount the provider says was paid');
    t.string('paid_currency', 3).nullable();
    t.dateTime('paid_at', { precision: 3 }).nullable();
    t.string('payment_url', 1024).nullable();
    t.dateTime('expires_at', { precision: 3 }).notNullable().comment('provider-side expiry');
    t.dateTime('created_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.dateTime('updated_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.index(['order_id'], 'ix_payments_order');
    t.index(['trade_no'], 'ix_payments_trade');
  });

  await knex.schema.createTable('refunds', (t) => {
    t.collate('utf8mb4_bin');
    t.string('out_refund_no', 64).primary().comment('our refund number: stable per refund');
    t.string('order_id', 64).notNullable();
    t.string('out_trade_no', 64).notNullable();
    t.string('provider', 32).notNullable();
    t.string('trade_no', 128).nullable();
    t.bigInteger('amount').unsigned().notNullable().comment('minor units');
    t.string('currency', 3).notNullable();
    t.string('reason', 255).notNullable();
    t.string('status', 16).notNullable().comment('PENDING | SUCCEEDED');
    t.string('refund_no', 128).nullable().comment('provider refund id');
    t.dateTime('refunded_at', { precision: 3 }).nullable();
    t.dateTime('created_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.dateTime('updated_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.index(['order_id'], 'ix_refunds_order');
  });

  await knex.schema.createTable('notification_inbox', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('Every verified provider notification, stored before it is acknowledged');
    t.bigIncrements('id', { primaryKey: true });
    t.string('provider', 32).notNullable();
    t.string('notification_id', 128).notNullable().comment("provider's id, same across redeliveries");
    t.string('out_trade_no', 64).notNullable();
    t.string('event_type', 64).notNullable();
    t.text('raw_body', 'mediumtext').notNullable().comment('exact bytes received (utf-8)');
    t.text('headers').notNullable().comment('JSON of the request headers');
    t.text('payload').notNullable().comment('the verified, normalised notification (JSON)');
    t.string('status', 16).notNullable().comment('RECEIVED | SIGNALLED | LATE | ORPHAN');
    t.integer('attempts').unsigned().notNullable().defaultTo(0).comment('signal attempts');
    t.integer('deliveries').unsigned().notNullable().defaultTo(1).comment('times the provider delivered it');
    t.dateTime('next_attempt_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.string('last_error', 1024).nullable();
    t.dateTime('received_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.dateTime('processed_at', { precision: 3 }).nullable();
    t.unique(['provider', 'notification_id'], { indexName: 'uq_inbox_provider_notification' });
    t.index(['status', 'next_attempt_at'], 'ix_inbox_pending');
    t.index(['out_trade_no'], 'ix_inbox_trade');
  });

  await knex.schema.createTable('notification_rejections', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('Audit of refused notifications (bad signature, stale, malformed); never touches orders');
    t.bigIncrements('id', { primaryKey: true });
    t.string('provider', 32).notNullable();
    t.string('reason', 32).notNullable();
    t.string('body_sha256', 64).notNullable();
    t.integer('body_length').unsigned().notNullable();
    t.string('remote_address', 64).nullable();
    t.dateTime('received_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.index(['received_at'], 'ix_rejections_time');
  });

  await knex.schema.createTable('order_events', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('Order timeline, written in the same transaction as the change it describes');
    t.bigIncrements('id', { primaryKey: true });
    t.string('order_id', 64).notNullable();
    t.string('type', 48).notNullable();
    t.string('message', 512).notNullable();
    t.text('data').nullable().comment('JSON details');
    t.dateTime('at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.index(['order_id', 'id'], 'ix_order_events_order');
  });
}

/** Drops everything `up` created, children first. */
export async function down(knex: Knex): Promise<void> {
  for (const table of [
    'order_events',
    'notification_rejections',
    'notification_inbox',
    'refunds',
    'payments',
    'tcc_fence',
    'order_lines',
    'orders',
    'stock',
    'products',
  ]) {
    await knex.schema.dropTableIfExists(table);
  }
}
