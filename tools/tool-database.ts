/**
 * The databases the tools (bench, soak) run on: named by the app's own DATABASE_URL (server, credentials and database
 * name), and never dropped unless the tool created them. A database a tool creates carries a marker table
 * (`payflow_tool_database`, one row naming the tool); the next run of that tool may drop and re-create it. A database
 * without the marker is someone else's: the tool uses it only when it holds no orders, migrates it, and never drops it.
 */
import { createDb, migrateLatest } from '../src/db/knex';

const MARKER = 'payflow_tool_database';

/** The same MySQL server as `url`, another database. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export function databaseOf(url: string): string {
  return new URL(url).pathname.replace(/^\//, '');
}

/** What prepareToolDatabase did. */
export interface ToolDatabase {
  url: string;
  database: string;
  /**
   * created: new (marked as the tool's); recreated: the tool's own from an earlier run, dropped and made anew; reused:
   * someone else's empty database.
   */
  state: 'created' | 'recreated' | 'reused';
}

/**
 * Makes `url`'s database ready for a run of `tool`: created and marked when missing; dropped and re-created when an
 * earlier run of the same tool created it (marker), or when it has one of `legacyNames` (the fixed databases the tools
 * used before the marker existed); migrated and used when it is someone else's but holds no orders; refused otherwise.
 */
export async function prepareToolDatabase(
  url: string,
  tool: string,
  options: { legacyNames?: string[]; log?: (line: string) => void } = {},
): Promise<ToolDatabase> {
  const database = databaseOf(url);
  if (!/^[A-Za-z0-9_]+$/.test(database)) throw new Error(`database name "${database}" must be [A-Za-z0-9_]+`);
  const admin = createDb(withDatabase(url, 'information_schema'), { poolMax: 1 });
  let state: ToolDatabase['state'] = 'created';
  try {
    const [schemas] = (await admin.raw(
      'SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?',
      [database],
    )) as [{ name: string }[]];
    if (schemas.length > 0) {
      const [tables] = (await admin.raw(
        'SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?',
        [database],
      )) as [{ name: string }[]];
      const names = new Set(tables.map((t) => t.name));
      let owner: string | undefined;
      if (names.has(MARKER)) {
        const [rows] = (await admin.raw(`SELECT tool FROM \`${database}\`.\`${MARKER}\` LIMIT 1`)) as [
          { tool: string }[],
        ];
        owner = rows[0]?.tool;
      }
      if (owner === tool || (owner === undefined && options.legacyNames?.includes(database))) {
        await admin.raw(`DROP DATABASE \`${database}\``);
        state = 'recreated';
      } else {
        let orders = 0;
        if (names.has('orders')) {
          const [rows] = (await admin.raw(`SELECT COUNT(*) AS n FROM \`${database}\`.orders`)) as [{ n: number }[]];
          orders = Number(rows[0]?.n ?? 0);
        }
        if (orders > 0) {
          throw new Error(
            `database ${database} exists, was not created by ${tool}${owner ? ` (it is ${owner}'s)` : ''} and holds ${orders} order(s): ${tool} never drops or fills a database it did not create. Name a new database in DATABASE_URL${tool === 'soak' ? ' or with --database' : ''}.`,
          );
        }
        state = 'reused';
      }
    }
  } finally {
    await admin.destroy();
  }
  await migrateLatest(url);
  if (state !== 'reused') {
    const db = createDb(url, { poolMax: 1 });
    try {
      await db.raw(
        `CREATE TABLE IF NOT EXISTS \`${MARKER}\` (tool VARCHAR(64) NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)`,
      );
      await db.raw(`INSERT INTO \`${MARKER}\` (tool) VALUES (?)`, [tool]);
    } finally {
      await db.destroy();
    }
  }
  options.log?.(
    `MySQL: ${database} ${state === 'created' ? `created (marked as ${tool}'s)` : state === 'recreated' ? `dropped and re-created (an earlier ${tool} run's)` : 'exists and holds no orders: used as it is, never dropped'}`,
  );
  return { url, database, state };
}
