/**
 * Provisioning with the rights docker-compose's MySQL user has: everything on its own database, nothing else (no
 * `mysql` database to connect to). `ensureDatabase` and the migrations must work with exactly that, or the compose
 * file's migrate service fails and nothing after it starts.
 */
import { randomBytes } from 'node:crypto';
import { createDb, ensureDatabase, migrateLatest, unlockMigrations } from '../src/db/knex';
import { TEST_ENV } from './support/env';

test("a user granted only its own database creates it and migrates it (compose's payflow user)", async () => {
  const tag = randomBytes(4).toString('hex');
  const user = `prov_${tag}`;
  const database = `payflow_prov_${tag}`;
  const password = randomBytes(12).toString('hex');
  const root = createDb(TEST_ENV.databaseUrl, { poolMax: 1 });
  await root.raw(`CREATE USER ?@'%' IDENTIFIED BY ?`, [user, password]);
  await root.raw(`GRANT ALL PRIVILEGES ON \`${database}\`.* TO ?@'%'`, [user]);
  const url = new URL(TEST_ENV.databaseUrl);
  url.username = user;
  url.password = password;
  url.pathname = `/${database}`;
  try {
    // Before the fix: "Access denied for user ... to database 'mysql'".
    await ensureDatabase(url.toString());
    expect((await migrateLatest(url.toString())).length).toBeGreaterThan(0);
  } finally {
    await root.raw(`DROP DATABASE IF EXISTS \`${database}\``);
    await root.raw(`DROP USER IF EXISTS ?@'%'`, [user]);
    await root.destroy();
  }
});

test('a migration lock left set by a killed migration blocks every later migrate until `migrate unlock` frees it', async () => {
  const url = new URL(TEST_ENV.databaseUrl);
  url.pathname = `/payflow_lock_${randomBytes(4).toString('hex')}`;
  const root = createDb(TEST_ENV.databaseUrl, { poolMax: 1 });
  try {
    await migrateLatest(url.toString());
    // What a migration killed after its first DDL leaves behind (MySQL commits the lock row with that DDL).
    const db = createDb(url.toString(), { poolMax: 1 });
    await db('knex_migrations_lock').update({ is_locked: 1 });
    await db.destroy();
    await expect(migrateLatest(url.toString())).rejects.toThrow(/already locked/i);
    expect(await unlockMigrations(url.toString())).toBe(true);
    expect(await migrateLatest(url.toString())).toEqual([]);
    expect(await unlockMigrations(url.toString())).toBe(false);
  } finally {
    await root.raw(`DROP DATABASE IF EXISTS \`${url.pathname.slice(1)}\``);
    await root.destroy();
  }
});
