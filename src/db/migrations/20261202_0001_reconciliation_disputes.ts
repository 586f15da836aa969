import type { Knex } from 'knex';

/**
 * Reconciliation items of a Stripe dispute (chargeback): kind DISPUTE, class DISPUTED for the money withdrawn, row keys
 * `DW:`/`DR:<disputeId>`. The columns are plain strings, so no data changes: only the comments that list their values
 * (a comment-only MODIFY: same type, nullability and table collation, so MySQL/MariaDB change the metadata alone).
 */
const BEFORE = {
  rowKey: 'P:<tradeNo> | R:<outRefundNo> (bill), LP:/LR: (local only), #<row> for repeats',
  kind: 'PAYMENT | REFUND',
  class: 'MATCHED | PAID_NOT_RECORDED | MISSING_AT_PROVIDER | AMOUNT_MISMATCH | REFUND_MISMATCH | UNKNOWN_TRADE',
};
const AFTER = {
  rowKey:
    'P:<tradeNo> | R:<outRefundNo> | RF:<outRefundNo> | DW:/DR:<disputeId> (bill), LP:/LR: (local only), #<row> for repeats',
  kind: 'PAYMENT | REFUND | DISPUTE',
  class:
    'MATCHED | PAID_NOT_RECORDED | MISSING_AT_PROVIDER | AMOUNT_MISMATCH | REFUND_MISMATCH | UNKNOWN_TRADE | DISPUTED',
};

async function comment(knex: Knex, text: typeof BEFORE): Promise<void> {
  await knex.schema.alterTable('reconciliation_items', (t) => {
    t.string('row_key', 200).notNullable().comment(text.rowKey).alter();
    t.string('kind', 8).notNullable().comment(text.kind).alter();
    t.string('class', 24).notNullable().comment(text.class).alter();
  });
}

/** Lists the dispute values in the comments of reconciliation_items' row_key, kind and class. */
export async function up(knex: Knex): Promise<void> {
  await comment(knex, AFTER);
}

/** Restores the comments `up` replaced. */
export async function down(knex: Knex): Promise<void> {
  await comment(knex, BEFORE);
}
