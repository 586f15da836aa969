/**
 * `npm run migrate` / `npm run migrate:down`: creates the database if missing, then migrates. `npm run migrate --
 * unlock`: frees the migration lock a killed migration left set (only when no migration is running).
 */
import { loadConfigOrExit } from '../config';
import { createDb, ensureDatabase, migrateLatest, unlockMigrations } from './knex';
import { migrationSource } from './migrations';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const command = process.argv[2] ?? 'latest';
  if (command === 'latest') {
    const applied = await migrateLatest(config.databaseUrl);
    console.log(applied.length ? `Applied migrations: ${applied.join(', ')}` : 'Database schema is up to date');
  } else if (command === 'down') {
    await ensureDatabase(config.databaseUrl);
    const db = createDb(config.databaseUrl, { poolMax: 1 });
    try {
      const [, undone] = (await db.migrate.down({ migrationSource })) as [number, string[]];
      console.log(undone.length ? `Rolled back: ${undone.join(', ')}` : 'Nothing to roll back');
    } finally {
      await db.destroy();
    }
  } else if (command === 'unlock') {
    const wasLocked = await unlockMigrations(config.databaseUrl);
    console.log(wasLocked ? 'Migration lock freed' : 'The migration lock was not set');
  } else {
    console.error(`Unknown command "${command}"; use latest, down or unlock`);
    process.exit(2);
  }
}

main().catch((err: unknown) => {
  const message = (err as Error).message;
  console.error(`Migration failed: ${message}`);
  if (/already locked/i.test(message))
    console.error(
      'A migration killed midway leaves the lock set. If no other migration is running now: npm run migrate -- unlock, then migrate again.',
    );
  process.exit(1);
});
