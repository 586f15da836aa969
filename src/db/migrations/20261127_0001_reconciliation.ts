import type { Knex } from 'knex';

/**
 * Reconciliation against provider bills: one row per run (provider + bill day + attempt) with its progress
 * and report, one row per compared line with its class and evidence. The unique (run, row key) is what
 * makes a retried or resumed comparison idempotent: a line already stored is never counted again.
 * Also indexes payments and refunds by completion time, which the "paid locally, missing at the provider"
 * scan of one bill day needs.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('reconciliation_runs', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('One reconciliation run of one provider bill day');
    t.string('id', 96).primary().comment('reconcile-<provider>-<date>[-r<attempt>]: the report id');
    t.string('provider', 32).notNullable();
    t.string('bill_date', 10)
      .notNullable()
      .comment('YYYY-MM-DD in the provider bill time zone (China time; UTC for Stripe)');
    t.integer('attempt').unsigned().notNullable().comment('1 for the first run of the day, 2.. for explicit re-runs');
    t.string('trigger', 16).notNullable().comment('API | SCHEDULE');
    t.string('status', 16).notNullable().comment('QUEUED | RUNNING | COMPLETED | FAILED');
    t.string('phase', 16).nullable().comment('BILL | LOCAL | REPAIR | DONE');
    t.string('merchant_id', 128).nullable().comment('our merchant id at the provider, whose bill this is');
    t.string('workflow_id', 128)
      .notNullable()
      .comment('Temporal workflow id: the run id plus a random suffix fixed when the row is written');
    t.string('workflow_run_id', 64).nullable();
    t.bigInteger('expected_rows')
      .unsigned()
      .nullable()
      .comment('local payments + refunds of the day: the progress estimate');
    t.bigInteger('bill_rows').unsigned().notNullable().defaultTo(0).comment('bill rows compared so far');
    t.bigInteger('local_rows').unsigned().notNullable().defaultTo(0).comment('local-only records found so far');
    t.integer('repairs_total').unsigned().notNullable().defaultTo(0);
    t.integer('repairs_done').unsigned().notNullable().defaultTo(0);
    t.integer('bill_attempts')
      .unsigned()
      .notNullable()
      .defaultTo(0)
      .comment('attempts of the bill comparison activity');
    t.bigInteger('resumed_from_row')
      .unsigned()
      .nullable()
      .comment('row the last retried comparison resumed at (heartbeat)');
    t.text('totals').nullable().comment('JSON: count per class, from the stored items');
    t.text('counted')
      .nullable()
      .comment('JSON: count per class as the comparison counted it (audit: must equal totals)');
    t.string('error', 1024).nullable();
    t.dateTime('created_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.dateTime('started_at', { precision: 3 }).nullable();
    t.dateTime('finished_at', { precision: 3 }).nullable();
    t.dateTime('updated_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.unique(['provider', 'bill_date', 'attempt'], { indexName: 'uq_recon_runs_period' });
    t.unique(['workflow_id'], { indexName: 'uq_recon_runs_workflow' });
    t.index(['provider', 'status', 'finished_at'], 'ix_recon_runs_status');
  });

  await knex.schema.createTable('reconciliation_items', (t) => {
    t.collate('utf8mb4_bin');
    t.comment('One compared line of a run: a bill row, or a local record the bill lacks');
    t.bigIncrements('id', { primaryKey: true });
    t.string('run_id', 96).notNullable();
    t.string('row_key', 200)
      .notNullable()
      .comment('P:<tradeNo> | R:<outRefundNo> (bill), LP:/LR: (local only), #<row> for repeats');
    t.bigInteger('row_no').unsigned().nullable().comment('0-based detail row of the bill; null for local-only records');
    t.string('source', 8).notNullable().comment('BILL | LOCAL');
    t.string('kind', 8).notNullable().comment('PAYMENT | REFUND');
    t.string('class', 24)
      .notNullable()
      .comment('MATCHED | PAID_NOT_RECORDED | MISSING_AT_PROVIDER | AMOUNT_MISMATCH | REFUND_MISMATCH | UNKNOWN_TRADE');
    t.string('detail', 32).nullable().comment('sub-reason, e.g. AMOUNT, CURRENCY, DUPLICATED, MISSING_LOCALLY');
    t.string('out_trade_no', 64).nullable();
    t.string('trade_no', 128).nullable();
    t.string('out_refund_no', 128).nullable();
    t.bigInteger('bill_amount').nullable().comment('minor units, positive for refunds too');
    t.string('bill_currency', 3).nullable();
    t.dateTime('bill_at', { precision: 3 }).nullable();
    t.bigInteger('local_amount').nullable();
    t.string('local_currency', 3).nullable();
    t.text('evidence').nullable().comment('JSON: what each side said');
    t.string('repair_status', 24).notNullable().defaultTo('NONE').comment('NONE | PENDING | SIGNALLED | LATE_PAYMENT');
    t.string('repair_detail', 255).nullable();
    t.dateTime('repaired_at', { precision: 3 }).nullable();
    t.dateTime('created_at', { precision: 3 }).notNullable().defaultTo(knex.raw('CURRENT_TIMESTAMP(3)'));
    t.unique(['run_id', 'row_key'], { indexName: 'uq_recon_items_key' });
    t.index(['run_id', 'class', 'id'], 'ix_recon_items_class');
    t.index(['run_id', 'repair_status'], 'ix_recon_items_repair');
  });

  await knex.schema.alterTable('payments', (t) => {
    t.index(['paid_at'], 'ix_payments_paid_at');
  });
  await knex.schema.alterTable('refunds', (t) => {
    t.index(['refunded_at'], 'ix_refunds_refunded_at');
  });
}

/** Drops what `up` created. */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('refunds', (t) => {
    t.dropIndex(['refunded_at'], 'ix_refunds_refunded_at');
  });
  await knex.schema.alterTable('payments', (t) => {
    t.dropIndex(['paid_at'], 'ix_payments_paid_at');
  });
  await knex.schema.dropTableIfExists('reconciliation_items');
  await knex.schema.dropTableIfExists('reconciliation_runs');
}
