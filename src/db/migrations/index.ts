import type { Knex } from 'knex';
import * as init from './20261126_0001_init';
import * as stockTotalIn from './20261126_0002_stock_total_in';
import * as reconciliation from './20261127_0001_reconciliation';
import * as supportOutbox from './20261127_0002_support_outbox';
import * as couponsPoints from './20261127_0003_coupons_points';
import * as stockBuckets from './20261128_0010_stock_buckets';
import * as inboxFailureKind from './20261130_0001_inbox_failure_kind';
import * as idempotencyFingerprints from './20261201_0001_idempotency_fingerprints';
import * as reconciliationDisputes from './20261202_0001_reconciliation_disputes';
import * as refundFailedStatus from './20261202_0002_refund_failed_status';
import * as reconciliationResolutions from './20261203_0001_reconciliation_resolutions';
import * as paymentUrlText from './20261204_0001_payment_url_text';
import * as escalationClaims from './20261205_0001_escalation_claims';
import * as outboxDelivery from './20261206_0001_outbox_delivery';

/** Every migration, in order. Listed explicitly so that migrations work the same under tsx, jest and a bundle. */
const migrations: Record<string, { up(knex: Knex): Promise<void>; down(knex: Knex): Promise<void> }> = {
  '20261126_0001_init': init,
  '20261126_0002_stock_total_in': stockTotalIn,
  '20261127_0001_reconciliation': reconciliation,
  '20261127_0002_support_outbox': supportOutbox,
  '20261127_0003_coupons_points': couponsPoints,
  '20261128_0010_stock_buckets': stockBuckets,
  '20261130_0001_inbox_failure_kind': inboxFailureKind,
  '20261201_0001_idempotency_fingerprints': idempotencyFingerprints,
  '20261202_0001_reconciliation_disputes': reconciliationDisputes,
  '20261202_0002_refund_failed_status': refundFailedStatus,
  '20261203_0001_reconciliation_resolutions': reconciliationResolutions,
  '20261204_0001_payment_url_text': paymentUrlText,
  '20261205_0001_escalation_claims': escalationClaims,
  '20261206_0001_outbox_delivery': outboxDelivery,
};

/** knex migration source over the statically imported migrations. */
export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => Object.keys(migrations),
  getMigrationName: (name) => name,
  getMigration: async (name) => migrations[name]!,
};
