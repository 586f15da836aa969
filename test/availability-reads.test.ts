/**
 * The shared units read of POST /orders (AvailabilityReads), against the real test database: buyers who arrive
 * together share one read, and no buyer is ever answered from a read sent before it arrived, so a unit released
 * just before a buyer asks is seen by that buyer. And the keys of keyed buyers about to be refused, probed together
 * (probeKeys): a key whose first request's Try is under way, committed, never run, or run before fingerprints were kept.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import {
  AvailabilityReads,
  BatchedReads,
  availableUnits,
  probeKeys,
  reserveBeforeStart,
} from '../src/client/admission';
import { createDb } from '../src/db/knex';
import { TEST_ENV } from './support/env';

let db: Knex;

beforeAll(() => {
  db = createDb(TEST_ENV.databaseUrl, { poolMax: 4 });
});
afterAll(async () => {
  await db?.destroy();
});

async function createSku(available: number): Promise<string> {
  const sku = `avail-${randomBytes(6).toString('hex')}`;
  await db('products').insert({ sku, name: `Availability ${sku}`, price: 100, currency: 'CNY' });
  await db('stock').insert({ sku, available, reserved: 0, sold: 0, total_in: available, buckets: 1 });
  return sku;
}

/** The real read, counted, with the SKUs each read asked for. */
function countedReads(): { calls: string[][]; read: (skus: string[]) => Promise<Map<string, number>> } {
  const calls: string[][] = [];
  return {
    calls,
    read: (skus) => {
      calls.push([...skus].sort());
      return availableUnits(db, skus);
    },
  };
}

const until = async (ok: () => boolean) => {
  for (let i = 0; i < 500 && !ok(); i++) await new Promise((r) => setTimeout(r, 2));
  expect(ok()).toBe(true);
};

test('buyers who arrive together share one read, each answered for its own SKUs only', async () => {
  const [a, b] = await Promise.all([createSku(3), createSku(0)]);
  const counted = countedReads();
  const reads = new AvailabilityReads(counted.read, 1);
  const answers = await Promise.all([
    ...Array.from({ length: 50 }, () => reads.read([a])),
    reads.read([b]),
    reads.read([a, b, 'no-such-sku']),
  ]);
  expect(counted.calls).toEqual([[a, b, 'no-such-sku'].sort()]);
  expect(answers[0]).toEqual(new Map([[a, 3]]));
  expect(answers[50]).toEqual(new Map([[b, 0]]));
  // An unknown SKU is absent, as with a read of its own (the API answers 422 UNKNOWN_SKU).
  expect(answers[51]).toEqual(
    new Map([
      [a, 3],
      [b, 0],
    ]),
  );
});

test('a buyer who arrives while a read is in flight gets a later read, which sees a unit released meanwhile', async () => {
  const sku = await createSku(0);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let done = 0;
  // The first read has read MySQL (0 units) but not yet answered when the unit comes back and two more buyers ask.
  const reads = new AvailabilityReads(async (skus) => {
    const units = await availableUnits(db, skus);
    done++;
    if (done === 1) await gate;
    return units;
  }, 1);
  const first = reads.read([sku]);
  await until(() => done === 1);
  await db('stock').where({ sku }).update({ available: 1 });
  const second = reads.read([sku]);
  const third = reads.read([sku]);
  release();
  expect((await first).get(sku)).toBe(0);
  expect((await second).get(sku)).toBe(1);
  expect((await third).get(sku)).toBe(1);
  // The two who arrived during the first read shared the next one.
  expect(done).toBe(2);
});

test('with two reads allowed in flight, a buyer arriving during one read is sent at once', async () => {
  const sku = await createSku(5);
  const counted = countedReads();
  const reads = new AvailabilityReads(counted.read, 2);
  const first = reads.read([sku]);
  await new Promise((r) => setImmediate(r));
  const second = reads.read([sku]);
  await new Promise((r) => setImmediate(r));
  expect(counted.calls).toHaveLength(2);
  await expect(Promise.all([first, second])).resolves.toEqual([new Map([[sku, 5]]), new Map([[sku, 5]])]);
});

test('a failed read fails every buyer of its batch, and the next batch reads again', async () => {
  const sku = await createSku(2);
  let fail = true;
  const reads = new AvailabilityReads(async (skus) => {
    if (fail) throw new Error('connection lost');
    return availableUnits(db, skus);
  }, 1);
  const failed = Promise.all([reads.read([sku]), reads.read([sku])]);
  await expect(failed).rejects.toThrow('connection lost');
  fail = false;
  await expect(reads.read([sku])).resolves.toEqual(new Map([[sku, 2]]));
});

test('keyed buyers refused together probe their keys in one batch: in progress, committed, traces of an older order, none', async () => {
  const id = (tag: string) => `probe-${tag}-${randomBytes(5).toString('hex')}`;
  const [inProgress, committed, traced, none] = [id('busy'), id('done'), id('old'), id('none')];
  await db('idempotency_fingerprints').insert({ order_id: committed, fingerprint: 'f'.repeat(64) });
  // An order reserved before fingerprints were kept: a stock fence, no fingerprint row.
  const sku = await createSku(5);
  await reserveBeforeStart(db, traced, [{ sku, quantity: 1 }]);
  // A first request in its Try on another process: its fingerprint row inserted, not committed.
  const trx = await db.transaction();
  try {
    await trx('idempotency_fingerprints').insert({ order_id: inProgress, fingerprint: 'b'.repeat(64) });
    const probes = new BatchedReads((ids) => probeKeys(db, ids));
    const answers = await Promise.all([inProgress, committed, traced, none].map((k) => probes.read([k])));
    expect(answers.map((a, i) => a.get([inProgress, committed, traced, none][i]!))).toEqual([
      'in progress',
      'committed',
      'traces',
      'none',
    ]);
    // A batch larger than the keys asked alone at once, with the reserving key among them: each still answered.
    const unused = Array.from({ length: 9 }, (_, i) => id(`unused${i}`));
    expect(await probeKeys(db, [...unused.slice(0, 5), inProgress, ...unused.slice(5)])).toEqual(
      new Map([...unused.map((k): [string, string] => [k, 'none']), [inProgress, 'in progress']]),
    );
    // Without the key being reserved, one statement answers all four (no lock to wait for).
    expect(await probeKeys(db, [committed, traced, none])).toEqual(
      new Map([
        [committed, 'committed'],
        [traced, 'traces'],
        [none, 'none'],
      ]),
    );
  } finally {
    await trx.rollback();
  }
});

test('a probe that cannot be read answers nothing for its keys (their requests take the full reads), never a refusal, and says so', async () => {
  const closed = createDb(TEST_ENV.databaseUrl, { poolMax: 1 });
  await closed.destroy();
  const told: { err: unknown; keys: number }[] = [];
  expect(await probeKeys(closed, ['probe-a', 'probe-b'], (err, keys) => told.push({ err, keys }))).toEqual(new Map());
  // The app logs it and counts it (payflow_key_probe_failures_total): it was swallowed without a trace.
  expect(told).toEqual([{ err: expect.any(Error), keys: 2 }]);
});
