import knexFactory, { type Knex } from 'knex';
import { migrationSource } from './migrations';

/** Opens a knex pool on a `mysql://` URL; times are UTC, big integers come back as numbers when safe. */
export function createDb(databaseUrl: string, options: { poolMax?: number } = {}): Knex {
  const url = new URL(databaseUrl);
  return knexFactory({
    client: 'mysql2',
    connection: {
      host: url.hostname,
      port: Number(url.port || 3306),
      user: decodeURIComponent(url.username || 'root'),
      password: decodeURIComponent(url.password),
      database: url.pathname.replace(/^\//, ''),
      timezone: 'Z',
      dateStrings: false,
      supportBigNumbers: true,
      bigNumberStrings: false,
      charset: 'utf8mb4',
    },
    pool: {
      min: 0,
      max: options.poolMax ?? 10,
      // Strict SQL, and the session clock in UTC: mysql2 writes and reads Dates as UTC ('Z'), so the columns MySQL
      // fills itself (created_at, updated_at: CURRENT_TIMESTAMP) must be UTC too, whatever the server's time zone.
      afterCreate: (
        conn: { query: (sql: string, cb: (err: Error | null) => void) => void },
        done: (err: Error | null, conn: unknown) => void,
      ) => {
        conn.query(
          "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO', time_zone = '+00:00'",
          (err) => done(err, conn),
        );
      },
    },
    acquireConnectionTimeout: 10_000,
  });
}

/** Creates the database named in the URL if it does not exist (provisioning, never by hand). */
export async function ensureDatabase(databaseUrl: string): Promise<void> {
  const url = new URL(databaseUrl);
  const database = url.pathname.replace(/^\//, '');
  if (!/^[A-Za-z0-9_]+$/.test(database)) throw new Error(`Database name "${database}" must be [A-Za-z0-9_]+`);
  // No default database: a user granted only its own database (docker-compose's MySQL user has ALL ON payments.*) may
  // create that one, but not connect to `mysql`.
  url.pathname = '/';
  const admin = createDb(url.toString(), { poolMax: 1 });
  try {
    await admin.raw(`CREATE DATABASE IF NOT EXISTS \`${database}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  } finally {
    await admin.destroy();
  }
}

/** Creates the database if needed and runs every pending migration; returns the names applied. */
export async function migrateLatest(databaseUrl: string): Promise<string[]> {
  await ensureDatabase(databaseUrl);
  const db = createDb(databaseUrl, { poolMax: 1 });
  try {
    const [, applied] = (await db.migrate.latest({ migrationSource })) as [number, string[]];
    return applied;
  } finally {
    await db.destroy();
  }
}

/**
 * Frees knex's migration lock. MySQL commits the lock row with a migration's first DDL, so a migration killed midway
 * (a stopped container, an OOM) leaves it set and every later `migrate latest` fails with "Migration table is already
 * locked". Only when no migration is running: `npm run migrate -- unlock` (docs/runbook.md). Returns whether it was set.
 */
export async function unlockMigrations(databaseUrl: string): Promise<boolean> {
  const db = createDb(databaseUrl, { poolMax: 1 });
  try {
    if (!(await db.schema.hasTable('knex_migrations_lock'))) return false;
    const locked = await db('knex_migrations_lock').where({ is_locked: 1 }).first('is_locked');
    await db.migrate.forceFreeMigrationsLock({ migrationSource });
    return locked !== undefined;
  } finally {
    await db.destroy();
  }
}

/** Current UTC time with millisecond precision, as MySQL DATETIME(3) wants it. */
export function nowUtc(): Date {
  return new Date();
}

/**
 * Runs a whole transaction again when MySQL picked it as a deadlock victim (it was rolled back entirely, so
 * running it again is safe), a few times with a short random pause; any other error, or the last deadlock,
 * is thrown. For transactions that contend by design: gap locks of concurrent inserts, hot stock buckets.
 */
export async function retryDeadlocks<T>(transaction: () => Promise<T>, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await transaction();
    } catch (err) {
      if ((err as { code?: string }).code !== 'ER_LOCK_DEADLOCK' || attempt >= attempts) throw err;
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 20 * attempt));
    }
  }
}
