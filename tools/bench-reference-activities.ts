/**
 * The two activities of the bench's reference workflow (tools/bench-reference-workflow.ts): one tiny MySQL write
 * each, on a table of the bench's own database (`bench_reference`, created by the system under test).
 */
import type { Knex } from 'knex';

export const REFERENCE_TABLE = 'bench_reference';

/** Creates the reference workflow's table in the bench database (idempotent). */
export async function ensureReferenceTable(db: Knex): Promise<void> {
  if (await db.schema.hasTable(REFERENCE_TABLE)) return;
  await db.schema.createTable(REFERENCE_TABLE, (t) => {
    t.string('id', 64).primary();
    t.string('status', 16).notNullable();
    t.timestamp('updated_at', { precision: 3 }).notNullable().defaultTo(db.fn.now(3));
  });
}

export function referenceActivities(db: Knex) {
  return {
    /** Opens the "order": one INSERT (idempotent on retry). */
    async referenceOpen(id: string): Promise<void> {
      await db(REFERENCE_TABLE).insert({ id, status: 'OPEN' }).onConflict('id').ignore();
    },
    /** Closes it: one UPDATE. */
    async referenceClose(id: string): Promise<void> {
      await db(REFERENCE_TABLE)
        .where({ id })
        .update({ status: 'PAID', updated_at: db.fn.now(3) });
    },
  };
}

export type ReferenceActivities = ReturnType<typeof referenceActivities>;
