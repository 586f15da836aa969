/**
 * A notification that cannot be routed right now (the API cut off from Temporal: connection refused, or a black hole
 * where packets go nowhere) is still stored and acknowledged on the provider's first delivery, stays in the inbox with
 * its failure recorded, and is delivered as soon as Temporal is reachable again, whatever backoff it had reached.
 * The routing pool itself (bounded concurrency, per-row deadline, the lease) is tested against MySQL with a Temporal
 * client stand-in whose calls hang until their deadline, so no row can be shown to wait on another.
 */
import { randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type { Knex } from 'knex';
import { NotificationInbox } from '../src/client/inbox';
import { createMetrics } from '../src/client/metrics';
import { createDb } from '../src/db/knex';
import { type OutageKind, type TcpProxy, startTcpProxy } from './support/tcp-proxy';
import { TEST_ENV, freshDatabase } from './support/env';
import { insertInboxRow } from './support/inbox';
import { createProduct, placeOrder, startSystem, type TestSystem, waitFor, waitForStatus } from './support/system';

describe.each<[OutageKind, string]>([
  ['refuse', 'connection refused'],
  ['blackhole', 'a black hole'],
])('Temporal unreachable from the API (%s: %s)', (kind) => {
  let sys: TestSystem;
  let proxy: TcpProxy;

  beforeAll(async () => {
    proxy = await startTcpProxy(TEST_ENV.temporalAddress);
    // Active queries far away, so that only the callback path can make these orders PAID; a short call deadline.
    // A database of its own: the API of a suite running beside this one would route these rows itself (its inbox sweep
    // takes every due row in its database), over a link to Temporal that is not broken.
    sys = await startSystem(
      {
        DATABASE_URL: await freshDatabase(`inbox_${kind}`),
        QUERY_FIRST_DELAY: '10m',
        QUERY_MAX_INTERVAL: '10m',
        PAYMENT_TIMEOUT: '15m',
        INBOX_RETRY_INTERVAL: '500ms',
        TEMPORAL_CALL_TIMEOUT: '2s',
      },
      { clientTemporalAddress: proxy.address },
    );
  }, 60_000);

  afterAll(async () => {
    await proxy?.heal();
    await sys?.stop();
    await proxy?.close();
  });

  test('notifications are acknowledged at once, kept with the failure recorded, and all delivered soon after Temporal is back', async () => {
    const sku = await createProduct(sys, { stock: 3 });
    const orderIds: string[] = [];
    for (let i = 0; i < 3; i++) orderIds.push((await placeOrder(sys, sku)).orderId as string);

    await proxy.breakLink(kind);
    for (const orderId of orderIds) await sys.sandbox('POST', `/v1/payments/${orderId}/pay`, {});
    for (const orderId of orderIds) {
      // The provider got its "success" on the first delivery, within its answer limit, though Temporal is unreachable.
      const sent = await waitFor(
        async () => (await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications[0],
        { what: 'a delivery' },
      );
      const settled = await waitFor(
        async () => {
          const n = (await sys.sandbox('GET', `/_control/notifications?outTradeNo=${orderId}`)).body.notifications[0];
          return n.acknowledged || n.attempts > 1 ? n : undefined;
        },
        { what: `the ack of ${sent.id}` },
      );
      expect(settled).toMatchObject({ acknowledged: true, attempts: 1 });
    }
    // Each row's routing attempt fails within the call deadline and says why.
    const failed = await waitFor(
      async () => {
        const rows = await sys.db('notification_inbox').whereIn('out_trade_no', orderIds);
        return rows.length === 3 && rows.every((r) => r.failure_kind === 'UNREACHABLE' && r.last_error)
          ? rows
          : undefined;
      },
      { timeoutMs: 30_000, what: 'a failed routing attempt recorded on every inbox row' },
    );
    expect(failed.map((r) => r.status)).toEqual(['RECEIVED', 'RECEIVED', 'RECEIVED']);
    for (const orderId of orderIds)
      expect((await sys.db('orders').where({ order_id: orderId }).first()).status).toBe('AWAITING_PAYMENT');

    // A long outage: the rows' backoff has grown far (here pushed to 10 minutes, as after hours of failures).
    const farAway = new Date(Date.now() + 10 * 60_000);
    await sys
      .db('notification_inbox')
      .whereIn('out_trade_no', orderIds)
      .andWhere({ status: 'RECEIVED' })
      .update({ next_attempt_at: farAway });

    const healedAt = Date.now();
    await proxy.heal();
    // PAID within a minute although every row's next attempt was 10 minutes away: the recovery probe released them
    // (the backoff running out could not have, within this wait).
    for (const orderId of orderIds) await waitForStatus(sys, orderId, ['PAID'], 60_000);
    const delivered = await sys.db('notification_inbox').whereIn('out_trade_no', orderIds);
    for (const row of delivered) {
      expect(row.status).toBe('SIGNALLED');
      expect(row.attempts).toBeGreaterThanOrEqual(2);
      // Routed after the heal (MySQL's clock and this process's may differ by a little).
      expect(new Date(row.processed_at).getTime()).toBeGreaterThanOrEqual(healedAt - 2_000);
    }
  }, 120_000);
});

describe('the routing pool', () => {
  let db: Knex;
  const deadlines: number[] = [];
  /** A stand-in for the Temporal client: orders named "hang-*" never answer, so their call ends at its deadline. */
  const signalled: string[] = [];
  let current: { deadline?: number } = {};
  const fakeClient = {
    withDeadline<R>(deadline: number, fn: () => Promise<R>): Promise<R> {
      current = { deadline };
      deadlines.push(deadline);
      return fn();
    },
    workflow: {
      getHandle(workflowId: string) {
        const { deadline } = current;
        return {
          async signal() {
            if (workflowId.includes('hang-')) {
              await new Promise((r) => setTimeout(r, Math.max(0, (deadline ?? Date.now()) - Date.now())));
              throw Object.assign(new Error('4 DEADLINE_EXCEEDED: Deadline exceeded'), { code: 4 });
            }
            signalled.push(workflowId);
          },
        };
      },
    },
    workflowService: { getSystemInfo: async () => ({}) },
  } as unknown as Client;
  const logger = { info() {}, warn() {}, error() {}, debug() {} } as never;

  beforeAll(async () => {
    // A database of its own: the pool's sweep routes every due row it finds, and other suites' rows are not its to
    // touch.
    db = createDb(await freshDatabase('inbox_pool'), { poolMax: 8 });
  }, 60_000);
  afterAll(async () => {
    await db.destroy();
  });

  const insertRow = async (orderId: string) => (await insertInboxRow(db, orderId)).id;

  const inbox = (concurrency: number) =>
    new NotificationInbox({
      db,
      client: fakeClient,
      taskQueue: 'unused',
      logger,
      metrics: createMetrics(),
      retryIntervalMs: 60_000,
      concurrency,
      callTimeoutMs: 3_000,
    });

  /**
   * The row is SIGNALLED within 3 s (its lease, 25 s here, was not waited out), signalled once, on its first attempt;
   * stops the pool.
   */
  const expectRoutedOnceAtOnce = async (pool: NotificationInbox, id: number, orderId: string) => {
    await waitFor(async () => (await db('notification_inbox').where({ id }).first()).status === 'SIGNALLED', {
      what: 'the row routed at once, not after its lease',
      timeoutMs: 3_000,
    });
    await pool.stop();
    expect(signalled.filter((w) => w.endsWith(orderId))).toHaveLength(1);
    expect(await db('notification_inbox').where({ id }).first()).toMatchObject({ status: 'SIGNALLED', attempts: 1 });
  };

  test('a row whose Temporal call hangs holds up no other row, and fails at its own deadline', async () => {
    const tag = randomBytes(4).toString('hex');
    const hanging = [await insertRow(`hang-${tag}-1`), await insertRow(`hang-${tag}-2`)];
    const others: number[] = [];
    for (let i = 0; i < 5; i++) others.push(await insertRow(`ok-${tag}-${i}`));
    const pool = inbox(4);
    // The hanging rows go first: with one-at-a-time routing every other row would wait for their deadlines.
    for (const id of [...hanging, ...others]) pool.kick(id);
    const routed = await waitFor(
      async () => {
        const rows = await db('notification_inbox').whereIn('id', others).andWhere({ status: 'SIGNALLED' });
        return rows.length === others.length ? rows : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 50, what: 'the other rows routed' },
    );
    expect(routed).toHaveLength(5);
    // Routed while the hanging rows were still inside their call: nothing about them is recorded yet.
    const stillHanging = await db('notification_inbox').whereIn('id', hanging);
    expect(stillHanging.every((r) => r.status === 'RECEIVED' && r.last_error === null)).toBe(true);
    await pool.stop();
    const afterDeadline = await db('notification_inbox').whereIn('id', hanging);
    for (const r of afterDeadline) {
      expect(r).toMatchObject({ status: 'RECEIVED', failure_kind: 'UNREACHABLE', attempts: 1 });
      expect(r.last_error).toMatch(/DEADLINE_EXCEEDED/);
    }
  });

  test('the lease keeps two processors off one row: it is routed once', async () => {
    const orderId = `ok-lease-${randomBytes(4).toString('hex')}`;
    const id = await insertRow(orderId);
    const [a, b] = [inbox(4), inbox(4)];
    await Promise.all([a.process(id), b.process(id), a.process(id), b.process(id)]);
    expect(signalled.filter((w) => w.endsWith(orderId))).toHaveLength(1);
    expect(await db('notification_inbox').where({ id }).first()).toMatchObject({ status: 'SIGNALLED', attempts: 1 });
  });

  test('a row this process inserted leased is routed by whichever kick comes first, at once, not after its lease', async () => {
    const orderId = `ok-inserted-${randomBytes(4).toString('hex')}`;
    const id = await insertRow(orderId);
    const pool = inbox(4);
    // As the callback route inserts a new notification: leased to this process, its first attempt counted.
    const lease = pool.leaseForInsert()!;
    expect(lease.getTime()).toBeGreaterThan(Date.now() + 5_000);
    await db('notification_inbox').where({ id }).update({ attempts: 1, next_attempt_at: lease });
    pool.insertedLeased(id);
    // A redelivery stored its duplicate and kicked the row before the first request did (no payload in hand).
    pool.kick(id);
    pool.kick(id);
    await expectRoutedOnceAtOnce(pool, id, orderId);
  });

  test("a redelivery whose duplicate came back before the first request's INSERT: its refused claim strands nothing", async () => {
    const orderId = `ok-early-${randomBytes(4).toString('hex')}`;
    const id = await insertRow(orderId);
    const pool = inbox(4);
    // The first request inserted the row leased to this process, but its INSERT has not come back yet...
    await db('notification_inbox').where({ id }).update({ attempts: 1, next_attempt_at: pool.leaseForInsert()! });
    // ...while a redelivery's INSERT .. ON DUPLICATE already has: its kick claims the row, and the lease refuses that.
    pool.kick(id);
    // Now the first INSERT returns: the row is this process's, and that request's kick finds the row already queued.
    pool.insertedLeased(id);
    pool.kick(id);
    await expectRoutedOnceAtOnce(pool, id, orderId);
  });

  test('a process that stops hands back the rows it inserted leased and had not routed yet: another routes them at once', async () => {
    const tag = randomBytes(4).toString('hex');
    // One routing slot, taken by a call that hangs: the two rows inserted after it wait in the queue.
    const hanging = await insertRow(`hang-stop-${tag}`);
    const queued = [await insertRow(`ok-stop-${tag}-1`), await insertRow(`ok-stop-${tag}-2`)];
    const pool = inbox(1);
    pool.kick(hanging);
    for (const id of queued) {
      // As the callback route inserts a new notification: leased to this process, its first attempt counted.
      await db('notification_inbox').where({ id }).update({ attempts: 1, next_attempt_at: pool.leaseForInsert()! });
      pool.insertedLeased(id);
      pool.kick(id);
    }
    await pool.stop();
    // Before, they kept this process's lease (two call deadlines and 5 s) and waited it out.
    const rows = await db('notification_inbox').whereIn('id', queued);
    for (const r of rows) {
      expect(r.status).toBe('RECEIVED');
      expect(new Date(r.next_attempt_at).getTime()).toBeLessThanOrEqual(Date.now());
    }
    const other = inbox(4);
    expect(await other.sweep()).toBeGreaterThanOrEqual(2);
    await waitFor(
      async () => {
        const done = await db('notification_inbox').whereIn('id', queued).andWhere({ status: 'SIGNALLED' });
        return done.length === queued.length ? done : undefined;
      },
      { timeoutMs: 5_000, intervalMs: 50, what: 'the handed-back rows routed by another process' },
    );
    await other.stop();
  });

  test('when Temporal answers again, rows held back by the outage are released at once; a leased row is not', async () => {
    const tag = randomBytes(4).toString('hex');
    const waiting = await insertRow(`ok-back-${tag}`);
    const leased = await insertRow(`ok-leased-${tag}`);
    const later = new Date(Date.now() + 10 * 60_000);
    await db('notification_inbox')
      .where({ id: waiting })
      .update({ failure_kind: 'UNREACHABLE', attempts: 9, next_attempt_at: later, last_error: 'UNAVAILABLE' });
    // Claimed by another processor right now: its failure kind was cleared by the claim.
    await db('notification_inbox')
      .where({ id: leased })
      .update({ failure_kind: null, attempts: 3, next_attempt_at: later });
    const pool = inbox(4);
    await pool.sweep();
    await waitFor(async () => (await db('notification_inbox').where({ id: waiting }).first()).status === 'SIGNALLED', {
      what: 'the released row routed',
    });
    await pool.stop();
    expect(await db('notification_inbox').where({ id: leased }).first()).toMatchObject({
      status: 'RECEIVED',
      attempts: 3,
    });
  });
});
