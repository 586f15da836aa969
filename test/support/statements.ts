import type { Knex } from 'knex';

/** The statements a pool sends while `fn` runs (knex's `query` event: one per round trip, BEGIN and COMMIT included). */
export async function statementsOf(db: Knex, fn: () => Promise<unknown>): Promise<string[]> {
  const seen: string[] = [];
  const listener = (q: { sql: string }) => seen.push(q.sql);
  db.on('query', listener);
  try {
    await fn();
  } finally {
    db.off('query', listener);
  }
  return seen;
}
