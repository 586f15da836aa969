/**
 * Times in MySQL are UTC whatever the server's time zone: mysql2 reads and writes Dates as UTC, and every pooled
 * session sets time_zone = '+00:00', so the columns MySQL fills itself (created_at, updated_at) agree with the
 * ones the application writes (deadline, paid_at). Shown against a session in another zone, which disagrees.
 */
import type { Knex } from 'knex';
import { createDb } from '../src/db/knex';
import { TEST_ENV } from './support/env';

let db: Knex;
beforeAll(() => {
  db = createDb(TEST_ENV.databaseUrl, { poolMax: 2 });
});
afterAll(async () => {
  await db.destroy();
});

test('pooled sessions run in UTC, so CURRENT_TIMESTAMP read back as a Date is the real time', async () => {
  const [[{ tz }]] = (await db.raw('SELECT @@session.time_zone AS tz')) as [[{ tz: string }]];
  expect(tz).toBe('+00:00');
  // Between the times just before the query and just after its answer (however slow), give or take a second of the
  // two processes' clocks: hours off would mean a session in another zone.
  const before = Date.now();
  const [[{ now }]] = (await db.raw('SELECT CURRENT_TIMESTAMP(3) AS now')) as [[{ now: Date }]];
  const after = Date.now();
  expect(new Date(now).getTime()).toBeGreaterThanOrEqual(before - 1_000);
  expect(new Date(now).getTime()).toBeLessThanOrEqual(after + 1_000);
});

test('a session in another zone would store local times that read back hours off (what the pool setting prevents)', async () => {
  await db.transaction(async (trx) => {
    await trx.raw("SET SESSION time_zone = '+08:00'");
    const [[{ now }]] = (await trx.raw('SELECT CURRENT_TIMESTAMP(3) AS now')) as [[{ now: Date }]];
    expect(Math.round((new Date(now).getTime() - Date.now()) / 3_600_000)).toBe(8);
    await trx.raw("SET SESSION time_zone = '+00:00'");
  });
});
