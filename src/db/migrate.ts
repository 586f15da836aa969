/** `npm run migrate` / `npm run migrate:down`: creates the database if missing, then migrates. */
import { loadConfigOrExit } from '../config';
import { createDb, ensureDatabase, migrateLatest } from './knex';
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
  } else {
    console.error(`Unknown command "${command}"; use latest or down`);
    process.exit(2);
  }
}

main().catch((err: unknown) => {
  console.error(`Migration failed: ${(err as Error).message}`);
  process.exit(1);
});
