/**
 * The small soak that runs in CI: a few hundred orders through the public API and the sandbox with every
 * fault type at least once (sandbox faults, worker SIGKILL, MySQL KILL, a dev server restart, forged and
 * replayed notifications); afterwards every invariant must hold and every order must have converged.
 * Runs as its own jest pass (npm run test:soak) so that its load does not disturb the timing of other suites.
 */
import { PROFILES, formatSoakReport, runSoak } from '../tools/soak';
import { freshDatabase } from './support/env';

test(
  'a few hundred orders under every fault type converge with no invariant violated',
  async () => {
    // The suite's own database, made fresh here: the soak never drops a database it did not create.
    const database = new URL(await freshDatabase('soak')).pathname.slice(1);
    const report = await runSoak({
      orders: Number(process.env.SOAK_ORDERS ?? 200),
      concurrency: 20,
      profile: PROFILES.ci!,
      paymentTimeoutMs: 20_000,
      databaseName: database,
      log: (line) => process.stdout.write(`[soak] ${line}\n`),
    });
    console.log(formatSoakReport(report));
    for (const fault of [
      'worker SIGKILL',
      'mysql KILL connection',
      'temporal dev server restart',
      'forged notification',
      'genuine notification replayed',
    ]) {
      expect(report.faults[fault] ?? 0).toBeGreaterThanOrEqual(1);
    }
    expect(report.placed).toBe(report.orders);
    expect(report.invariants.filter((r) => !r.passed)).toEqual([]);
    // Every buyer got what their action asks for (paid: PAID, cancelled: CANCELLED, never paid: EXPIRED, ...), and a
    // forged or stale notification was refused every time (the faults above count only refused ones).
    expect(report.unexpectedOutcomes).toEqual([]);
    expect(Object.keys(report.errors).filter((e) => /^(forged|stale) notification answered/.test(e))).toEqual([]);
    // Settling ended because nothing was left running (orders parked in review aside), not at its time bound.
    expect(report.unsettledAtEnd.workflows).toBe(0);
    // A buyer refused for want of stock gets no order at all (admission before the workflow): every order that exists
    // converged.
    expect(report.converged).toBe(report.placed - report.refusedOutOfStock);
    expect(report.passed).toBe(true);
  },
  15 * 60_000,
);
