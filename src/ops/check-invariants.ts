/**
 * `npm run invariants [-- --since 2026-11-25]`: checks every invariant against the configured database
 * and the sandbox provider's bills (from --since, default yesterday in China time, to today).
 * Exit code 1 when any invariant fails. Works against any deployment the config points at.
 */
import { loadConfigOrExit } from '../config';
import { createDb } from '../db/knex';
import { checkInvariants, formatInvariants } from '../ops/invariants';
import { sandboxBillRows } from '../ops/sandbox-bills';
import { parseDuration } from '../shared/duration';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const sinceArg = process.argv.indexOf('--since');
  const since = sinceArg >= 0 ? Date.parse(process.argv[sinceArg + 1] ?? '') : Date.now() - 86_400_000;
  if (Number.isNaN(since)) throw new Error('--since takes a date such as 2026-11-25');
  const boundArg = process.argv.indexOf('--bound');
  const bound = boundArg >= 0 ? parseDuration(process.argv[boundArg + 1] ?? '') : 5 * 60_000;
  const db = createDb(config.databaseUrl, { poolMax: 2 });
  try {
    const providerRows = await sandboxBillRows(config.sandboxUrl, since);
    const results = await checkInvariants({
      db,
      providerRows,
      providerRowsSince: new Date(since),
      convergenceBoundMs: bound,
    });
    console.log(formatInvariants(results));
    process.exitCode = results.every((r) => r.passed) ? 0 : 1;
  } finally {
    await db.destroy();
  }
}

main().catch((err: unknown) => {
  console.error(`[invariants] ${(err as Error).message}`);
  process.exit(2);
});
