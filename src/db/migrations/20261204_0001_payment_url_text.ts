import type { Knex } from 'knex';

/**
 * orders.payment_url and payments.payment_url become TEXT. Alipay's page-pay "URL" is the whole signed request as a
 * query string: about 900 characters with a 2048-bit key and a short notify URL, over 1,024 (the old VARCHAR) with a
 * return URL or a 4096-bit key, which the configuration accepts. Under STRICT mode the INSERT failed with
 * ER_DATA_TOO_LONG, a retryable error: every Alipay order retried its set-up until it failed, its units held meanwhile.
 */
export async function up(knex: Knex): Promise<void> {
  for (const table of ['orders', 'payments'])
    await knex.schema.alterTable(table, (t) => {
      t.text('payment_url').nullable().alter();
    });
}

/** Back to VARCHAR(1024): refused by MySQL (strict mode) while a stored URL is longer, rather than cutting it. */
export async function down(knex: Knex): Promise<void> {
  for (const table of ['orders', 'payments'])
    await knex.schema.alterTable(table, (t) => {
      t.string('payment_url', 1024).nullable().alter();
    });
}
