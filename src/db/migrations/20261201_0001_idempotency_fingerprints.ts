import type { Knex } from 'knex';

/**
 * What a request with an Idempotency-Key asked for, stored with its order's first stock Try (same transaction): a
 * later request with the same key is compared with it before it can reserve anything, so a different body is refused
 * (422 IDEMPOTENCY_KEY_REUSED) instead of reserving its extra lines under the first order's id.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('idempotency_fingerprints', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('Idempotency-Key requests: the normalised request of the first Try of a key, one row per keyed order');
    t.string('order_id', 64)
      .primary()
      .comment('the order the (user id, Idempotency-Key) names: orderIdForIdempotencyKey');
    t.string('fingerprint', 64)
      .notNullable()
      .comment('SHA-256 (hex) of the normalised request: user id, merged items by SKU, provider, coupon code, points');
    t.dateTime('created_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
  });
}

/** Drops what `up` added. */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('idempotency_fingerprints');
}
