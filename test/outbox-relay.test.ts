/**
 * The outbox relay (src/client/outbox-relay.ts) against a database of its own (it claims whatever is due, so the
 * suites beside it must not share its outbox): claims are leased and never handed out twice at once, failures wait
 * their backoff and are retried, a lease that runs out (a relay that died mid-delivery) is delivered again with the same
 * message id, and signatures check. End to end: a real order paid through the sandbox reaches the sandbox's stand-in of
 * the shop's systems as a signed receipt and a fulfilment hand-off, each once.
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Knex } from 'knex';
import { OUTBOX_HEADERS, type OutboxDelivery } from '../src/contracts/outbox';
import {
  OutboxRelay,
  claimOutbox,
  markDelivered,
  markFailed,
  outboxBackoffMs,
  renewLease,
  signOutbox,
  verifyOutboxSignature,
  webhookSink,
} from '../src/client/outbox-relay';
import { createMetrics } from '../src/client/metrics';
import { refreshOpsGauges } from '../src/client/routes/ops';
import { createDb } from '../src/db/knex';
import { freshDatabase } from './support/env';
import { createProduct, startSystem, type TestSystem, userId, waitFor, waitForStatus } from './support/system';

const quiet = { warn: () => undefined, info: () => undefined } as never;
let dbUrl: string;
let db: Knex;

beforeAll(async () => {
  dbUrl = await freshDatabase('outbox');
  db = createDb(dbUrl, { poolMax: 6 });
}, 60_000);
afterAll(async () => {
  await db?.destroy();
});
beforeEach(async () => {
  await db('outbox').del();
});

async function write(n: number, topic = 'order.payment_receipt'): Promise<string[]> {
  const keys = Array.from({ length: n }, () => `ord_${randomBytes(6).toString('hex')}`);
  await db('outbox').insert(keys.map((k) => ({ topic, message_key: k, payload: JSON.stringify({ orderId: k }) })));
  return keys;
}
const row = (key: string) =>
  db('outbox').where({ message_key: key }).first('attempts', 'published_at', 'last_error', 'next_attempt_at');
/** Makes every unpublished message due now (its lease or backoff over). */
const dueNow = () =>
  db('outbox')
    .whereNull('published_at')
    .update({ next_attempt_at: db.raw('NOW(3) - INTERVAL 1 SECOND') });

test('a claimed message is leased: not handed out again until delivered, failed or its lease ends', async () => {
  const [key] = await write(1);
  const [claimed] = await claimOutbox(db, 10);
  expect(claimed!.delivery).toMatchObject({
    id: `order.payment_receipt:${key}`,
    topic: 'order.payment_receipt',
    key,
    attempt: 1,
    payload: { orderId: key },
  });
  expect(await claimOutbox(db, 10)).toEqual([]);
  // Its relay died mid-delivery: once the lease ends it is delivered again, under the same id, as attempt 2.
  await dueNow();
  const [again] = await claimOutbox(db, 10);
  expect(again!.delivery).toMatchObject({ id: claimed!.delivery.id, attempt: 2 });
  expect(await markDelivered(db, again!.id)).toBe(true);
  // The first relay's late answer finds it delivered; nothing is due any more.
  expect(await markDelivered(db, claimed!.id)).toBe(false);
  await dueNow();
  expect(await claimOutbox(db, 10)).toEqual([]);
  expect((await row(key!))!.published_at).not.toBeNull();
});

test('a relay whose lease ran out behind slow sends neither sends the message nor cuts short the new claim', async () => {
  const [key] = await write(1);
  const [mine] = await claimOutbox(db, 10);
  // This relay's batch went slowly; the lease ended and another relay claimed the message.
  await dueNow();
  const [theirs] = await claimOutbox(db, 10);
  expect(theirs!.delivery.attempt).toBe(2);
  expect(await renewLease(db, mine!.id, mine!.delivery.attempt)).toBe(false);
  // Its failure, recorded late, leaves the other relay's lease alone.
  const before = (await row(key!))!.next_attempt_at;
  await markFailed(db, mine!.id, mine!.delivery.attempt, 'HTTP 500');
  expect((await row(key!))!).toMatchObject({ next_attempt_at: before, last_error: null });
  expect(await renewLease(db, theirs!.id, theirs!.delivery.attempt)).toBe(true);
});

test('a redirect is a failed delivery, never followed (a POST re-sent as a GET without its body)', async () => {
  const server = createServer((request, response) => {
    if (request.method === 'POST') response.writeHead(301, { location: '/moved' }).end();
    else response.writeHead(200).end('a page');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  try {
    const delivery = { id: 't:k', topic: 't', key: 'k', createdAt: new Date().toISOString(), attempt: 1, payload: {} };
    await expect(webhookSink(`http://127.0.0.1:${port}/outbox`, 's3cret-s3cret')(delivery)).rejects.toThrow(/HTTP 301/);
  } finally {
    server.close();
  }
});

test('relays claiming at the same moment never hand out the same message', async () => {
  await write(40);
  const claims = await Promise.all([claimOutbox(db, 15), claimOutbox(db, 15), claimOutbox(db, 15)]);
  const ids = claims.flat().map((c) => c.id);
  expect(new Set(ids).size).toBe(ids.length);
  expect(ids.length).toBe(40);
});

test('a failed delivery waits its backoff with the error kept, and is retried until delivered', async () => {
  const [key] = await write(1);
  const [claimed] = await claimOutbox(db, 10);
  await markFailed(db, claimed!.id, 1, 'HTTP 503: down for maintenance');
  const failed = (await row(key!))!;
  expect(failed).toMatchObject({ attempts: 1, published_at: null, last_error: 'HTTP 503: down for maintenance' });
  expect(await claimOutbox(db, 10)).toEqual([]);
  expect([1, 2, 3, 8, 20].map(outboxBackoffMs)).toEqual([5_000, 10_000, 20_000, 600_000, 600_000]);
  await dueNow();
  const [retried] = await claimOutbox(db, 10);
  expect(retried!.delivery.attempt).toBe(2);
});

test('the relay delivers what is due to its sink, retries what failed, and the gauges show what waits', async () => {
  const keys = await write(3);
  const seen: OutboxDelivery[] = [];
  let refuse = true;
  const metrics = createMetrics({ defaultMetrics: false });
  const relay = new OutboxRelay({
    db,
    logger: quiet,
    metrics,
    intervalMs: 60_000,
    sink: async (d) => {
      if (refuse && d.key === keys[1]) throw new Error('HTTP 500');
      seen.push(d);
    },
  });
  expect(await relay.pass()).toEqual({ claimed: 3, delivered: 2, failed: 1 });
  expect(seen.map((d) => d.key).sort()).toEqual([keys[0], keys[2]].sort());
  expect((await row(keys[1]!))!).toMatchObject({ attempts: 1, last_error: 'HTTP 500', published_at: null });
  await refreshOpsGauges(db, metrics, []);
  expect((await metrics.outboxBacklog.get()).values[0]!.value).toBe(1);
  refuse = false;
  await dueNow();
  expect(await relay.pass()).toEqual({ claimed: 1, delivered: 1, failed: 0 });
  expect(seen.at(-1)).toMatchObject({ key: keys[1], attempt: 2 });
  await refreshOpsGauges(db, metrics, []);
  expect((await metrics.outboxBacklog.get()).values[0]!.value).toBe(0);
  expect((await metrics.outboxOldestUnpublished.get()).values[0]!.value).toBe(0);
  const delivered = (await metrics.outboxDelivered.get()).values.find(
    (v) => v.labels.topic === 'order.payment_receipt',
  );
  expect(delivered?.value).toBe(3);
});

test('a signature checks only with its secret, over the very body, within five minutes', () => {
  const body = JSON.stringify({ id: 'order.payment_receipt:ord_1' });
  const now = 1_800_000_000;
  const header = signOutbox('s3cret-s3cret', body, now);
  expect(verifyOutboxSignature('s3cret-s3cret', header, body, now + 10)).toBe(true);
  expect(verifyOutboxSignature('another-secret', header, body, now)).toBe(false);
  expect(verifyOutboxSignature('s3cret-s3cret', header, body.replace('ord_1', 'ord_2'), now)).toBe(false);
  expect(verifyOutboxSignature('s3cret-s3cret', header, body, now + 301)).toBe(false);
  expect(verifyOutboxSignature('s3cret-s3cret', undefined, body, now)).toBe(false);
  expect(verifyOutboxSignature('s3cret-s3cret', 't=abc,v1=zz', body, now)).toBe(false);
});

describe('end to end, with a real order and the sandbox stand-in of the shop', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ DATABASE_URL: dbUrl, COOLING_OFF_PERIOD: '1s' });
  }, 60_000);
  afterAll(async () => {
    await sys?.stop();
  }, 60_000);

  test("a paid order's receipt and fulfilment hand-off reach the shop, signed, each once however often delivered", async () => {
    const relay = new OutboxRelay({
      db: sys.db,
      logger: quiet,
      intervalMs: 100,
      sink: webhookSink(`${sys.sandboxUrl}/shop/outbox`, sys.config.outbox.secret),
    });
    const sku = await createProduct(sys, { price: 1500, stock: 2 });
    const placed = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity: 1 }] });
    expect(placed.status).toBe(201);
    const orderId = placed.body.orderId as string;
    await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    await waitForStatus(sys, orderId, ['PAID']);
    await waitFor(
      async () =>
        (await sys.db('orders').where({ order_id: orderId }).first('fulfilment_ready_at'))?.fulfilment_ready_at,
      { what: 'the hand-off to fulfilment' },
    );
    relay.start();
    try {
      const received = await waitFor(
        async () => {
          const r = await sys.sandbox('GET', '/shop/outbox');
          const mine = (r.body.received as (OutboxDelivery & { deliveries: number })[]).filter(
            (d) => d.key === orderId,
          );
          return mine.length === 2 ? mine : undefined;
        },
        { what: "the order's two messages at the shop" },
      );
      expect(received.map((d) => d.topic).sort()).toEqual(['order.fulfilment_ready', 'order.payment_receipt']);
      expect(received.find((d) => d.topic === 'order.payment_receipt')!.payload).toMatchObject({
        orderId,
        paidAmount: 1500,
        currency: 'CNY',
      });
      await waitFor(
        async () =>
          (await sys.db('outbox').where({ message_key: orderId }).whereNotNull('published_at').count({ n: '*' }))[0]
            ?.n === 2,
        { what: 'both messages marked delivered' },
      );
    } finally {
      await relay.stop();
    }
    // A redelivery (a relay that died after the shop answered) is counted once by the shop; a forged one is refused.
    const receipt = (await claimAgain(sys.db, orderId))!;
    const sink = webhookSink(`${sys.sandboxUrl}/shop/outbox`, sys.config.outbox.secret);
    await sink(receipt);
    const after = await sys.sandbox('GET', '/shop/outbox');
    const mine = (after.body.received as (OutboxDelivery & { deliveries: number })[]).filter((d) => d.key === orderId);
    expect(mine).toHaveLength(2);
    expect(mine.find((d) => d.id === receipt.id)!.deliveries).toBe(2);
    await expect(webhookSink(`${sys.sandboxUrl}/shop/outbox`, 'not-the-secret')(receipt)).rejects.toThrow(/HTTP 401/);
    const forged = await fetch(`${sys.sandboxUrl}/shop/outbox`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [OUTBOX_HEADERS.signature]: 't=1,v1=00' },
      body: JSON.stringify(receipt),
    });
    expect(forged.status).toBe(401);
  }, 90_000);
});

/** The delivery the relay made of an order's receipt, as a relay whose lease ran out would make it again. */
async function claimAgain(sdb: Knex, orderId: string): Promise<OutboxDelivery | undefined> {
  const r = (await sdb('outbox')
    .where({ message_key: orderId, topic: 'order.payment_receipt' })
    .first('topic', 'message_key', 'payload', 'created_at', 'attempts')) as
    { topic: string; message_key: string; payload: string; created_at: Date; attempts: number } | undefined;
  if (!r) return undefined;
  return {
    id: `${r.topic}:${r.message_key}`,
    topic: r.topic,
    key: r.message_key,
    createdAt: new Date(r.created_at).toISOString(),
    attempt: r.attempts + 1,
    payload: JSON.parse(r.payload),
  };
}
