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
    // The sandbox's bills where it runs (development, staging); elsewhere the money is compared with the providers'
    // bills by reconciliation (npm run reconcile), and this checks the database's own invariants.
    const providerRows = config.sandboxEnabled ? await sandboxBillRows(config.sandboxUrl, since) : undefined;
    const results = await checkInvariants({
      db,
      providerRows,
      providerRowsSince: new Date(since),
      billsProvider: 'sandbox',
      convergenceBoundMs: bound,
    });
    console.log(formatInvariants(results));
    if (!providerRows)
      console.log(
        'NOTE  money against the providers: not checked here (no sandbox in production); run npm run reconcile for each provider and day',
      );
    process.exitCode = results.every((r) => r.passed) ? 0 : 1;
  } finally {
    await db.destroy();
  }
}

main().catch((err: unknown) => {
  console.error(`[invariants] ${(err as Error).message}`);
  process.exit(2);
});
