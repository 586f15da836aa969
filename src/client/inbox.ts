/**
 * The notification inbox processor: every stored notification is routed (src/temporal/route-notification.ts) to its
 * order's workflow, or, when that workflow has finished, to a late-payment workflow; one of another provider than the
 * order's is refused. A notification that cannot be routed right now (Temporal down, a restart) stays in the inbox and
 * is retried with backoff; none is ever dropped.
 */
import type { Client } from '@temporalio/client';
import type { Knex } from 'knex';
import type { FastifyBaseLogger } from 'fastify';
import type { PaymentNotification } from '../providers/types';
import { isTemporalUnreachable, withTemporalDeadline } from '../temporal/calls';
import { OrderProviderCache, routePaymentNotification } from '../temporal/route-notification';
import type { Metrics } from './metrics';

/**
 * How long a claimed row is leased to one processor before another may retry it: routing makes at most five Temporal
 * calls (a late payment's: the signal, a start, a describe, its result, a start again), each under its deadline, and
 * database reads that may wait up to 10 s for a pooled connection; so a lease of five deadlines and 15 s is not cut
 * short by a live processor (another replica routing the same row meanwhile costs Temporal calls, nothing else: every
 * effect is deduplicated), and a row claimed by a process that died is retried after it (40 s by default).
 */
const leaseMs = (callTimeoutMs: number) => 5 * callTimeoutMs + 15_000;
const MAX_BACKOFF_MS = 5 * 60_000;
/** Ids waiting in memory for a routing slot; beyond this the sweep finds them in MySQL instead. */
const MAX_QUEUED = 10_000;
/** Stored notifications remembered per process (about 100 bytes each). */
const MAX_REMEMBERED = 100_000;
/** How long redeliveries acknowledged from memory wait before their count is added to MySQL. */
const COUNT_FLUSH_MS = 200;

/** Options of the inbox processor. */
export interface InboxOptions {
  db: Knex;
  client: Client;
  taskQueue: string;
  logger: FastifyBaseLogger;
  metrics: Metrics;
  retryIntervalMs: number;
  /** Rows routed at once; each Temporal call has its own deadline, so one hanging row never holds up the others. */
  concurrency: number;
  /** Deadline of each Temporal call (signal, start, the recovery probe). */
  callTimeoutMs: number;
  /** Passed to late-payment workflows (RouteDeps). */
  lateRecheckDelaysMs?: number[];
}

/**
 * Routes inbox rows to workflows: `kick` after each stored notification, `start` for the retry sweep. Rows are
 * routed by a bounded pool (INBOX_CONCURRENCY); the lease in MySQL keeps two processors (or two API processes) off
 * one row. When Temporal cannot be reached, rows are marked UNREACHABLE; the sweep probes Temporal and, as soon as it
 * answers, releases all of them at once rather than letting each wait out its backoff.
 */
export class NotificationInbox {
  private timer: NodeJS.Timeout | undefined;
  private sweeping = false;
  private stopped = false;
  private running = 0;
  private readonly waiting: number[] = [];
  private readonly queued = new Set<number>();
  private readonly inFlight = new Set<Promise<void>>();
  /** Rows this process has routed (bounded): a provider's redeliveries of them are not even queued. */
  private readonly routed = new Set<number>();
  /** Payloads of queued rows that this process inserted itself (kick's `stored`), dropped once processed. */
  private readonly storedPayloads = new Map<number, PaymentNotification>();
  /** Rows this process inserted already leased to itself (see `leaseForInsert`): routed without a claiming UPDATE. */
  private readonly claimedAtInsert = new Set<number>();

  /** Orders' providers, read once per order by the callback route and the routing alike (a provider never changes). */
  readonly orderProviders = new OrderProviderCache();

  /**
   * Notifications this process has stored (committed), by provider and notification id: a provider's redelivery of
   * one of them is already stored durably, so it is acknowledged without a write (most of a callback storm is
   * redeliveries, and a MySQL round trip is the dearest part of an acknowledgement). Bounded, oldest forgotten first;
   * a forgotten one, or one stored by another process, simply takes the INSERT .. ON DUPLICATE path again.
   */
  private readonly stored = new Map<string, number>();
  /** Deliveries acknowledged from memory, per inbox row, not yet added to `deliveries` in MySQL. */
  private readonly uncounted = new Map<number, number>();
  private countTimer: NodeJS.Timeout | undefined;
  private counting: Promise<void> | undefined;

  constructor(private readonly options: InboxOptions) {}

  /** Starts the periodic sweep that retries rows whose routing failed. */
  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.options.retryIntervalMs);
    this.timer.unref();
  }

  /**
   * Stops the sweep, forgets queued ids (they stay RECEIVED in MySQL), waits for in-flight routing to finish and adds
   * the deliveries counted in memory. Queued rows this process inserted leased to itself are handed back (due now), so
   * another replica's sweep routes them at once instead of after the lease.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    const leased = this.waiting.filter((id) => this.claimedAtInsert.has(id));
    this.waiting.length = 0;
    this.queued.clear();
    for (const id of leased) this.claimedAtInsert.delete(id);
    if (leased.length > 0)
      await this.options
        .db('notification_inbox')
        .whereIn('id', leased)
        .andWhere({ status: 'RECEIVED' })
        .update({ next_attempt_at: new Date() })
        .catch((err: unknown) =>
          this.options.logger.warn({ err, ids: leased }, 'queued notifications kept their lease; routed once it ends'),
        );
    await Promise.allSettled([...this.inFlight]);
    await this.flushDeliveries().catch((err: unknown) =>
      this.options.logger.warn({ err }, 'redelivery counts not added to the inbox'),
    );
  }

  /** The inbox row of a notification this process has stored, if it remembers one. */
  storedId(provider: string, notificationId: string): number | undefined {
    return this.stored.get(`${provider}\u0000${notificationId}`);
  }

  /** Remembers a notification whose row is committed (the INSERT .. ON DUPLICATE returned). */
  rememberStored(provider: string, notificationId: string, id: number): void {
    this.stored.set(`${provider}\u0000${notificationId}`, id);
    if (this.stored.size > MAX_REMEMBERED) this.stored.delete(this.stored.keys().next().value!);
  }

  /**
   * Counts a redelivery acknowledged from memory; the counts are added to MySQL together within COUNT_FLUSH_MS (one
   * UPDATE for all rows). `deliveries` is a diagnostic count: a process killed in between loses at most that much.
   */
  countDelivery(id: number): void {
    this.uncounted.set(id, (this.uncounted.get(id) ?? 0) + 1);
    this.scheduleCountFlush();
  }

  private scheduleCountFlush(): void {
    this.countTimer ??= setTimeout(() => {
      this.countTimer = undefined;
      void this.flushDeliveries().catch((err: unknown) =>
        this.options.logger.warn({ err }, 'redelivery counts not added to the inbox yet; will retry'),
      );
    }, COUNT_FLUSH_MS);
  }

  /** Adds the redeliveries counted in memory to their rows now (one statement); overlapping calls wait for each other. */
  async flushDeliveries(): Promise<void> {
    // A flush that failed has put its counts back; this one sends them again.
    while (this.counting) await this.counting.catch(() => undefined);
    if (this.uncounted.size === 0) return;
    const batch = new Map(this.uncounted);
    this.uncounted.clear();
    const { db } = this.options;
    const ids = [...batch.keys()];
    this.counting = db('notification_inbox')
      .whereIn('id', ids)
      .update({
        deliveries: db.raw(`deliveries + CASE id ${ids.map(() => 'WHEN ? THEN ?').join(' ')} ELSE 0 END`, [
          ...ids.flatMap((id) => [id, batch.get(id)!]),
        ]),
      })
      .then(
        () => undefined,
        (err: unknown) => {
          // Not lost yet: counted again with the next flush.
          for (const [id, n] of batch) this.uncounted.set(id, (this.uncounted.get(id) ?? 0) + n);
          if (!this.stopped) this.scheduleCountFlush();
          throw err;
        },
      )
      .finally(() => (this.counting = undefined));
    await this.counting;
  }

  /**
   * The lease a new row can be inserted with, so that routing it needs no claiming UPDATE: until the lease ends no
   * sweep (of this process or another) takes the row, exactly as after a claim. Undefined when this process could
   * not queue the row now (stopping, or the queue is full): the row is then inserted due at once, for the sweep.
   */
  leaseForInsert(): Date | undefined {
    if (this.stopped || this.queued.size >= MAX_QUEUED) return undefined;
    return new Date(Date.now() + leaseMs(this.options.callTimeoutMs));
  }

  /**
   * Records that this process inserted row `id` with `leaseForInsert()`'s lease: whichever kick routes it (this
   * request's, or a redelivery's that stored its duplicate first), routing needs no claiming UPDATE, which the lease
   * would refuse. Called as soon as the INSERT returns, before anything can kick the row.
   */
  insertedLeased(id: number): void {
    this.claimedAtInsert.add(id);
  }

  /**
   * Queues one row for routing without blocking the caller (used right after acknowledging). `stored`: the
   * notification as this request has just inserted it, so routing need not read the row back. A row inserted leased
   * that cannot be queued (stopping, queue full) waits for its lease to end, then the sweep takes it.
   */
  kick(id: number, stored?: PaymentNotification): void {
    if (this.stopped || this.queued.size >= MAX_QUEUED) {
      // Not queued now: forget the lease unless a queued kick of the same row still needs it.
      if (!this.queued.has(id)) this.claimedAtInsert.delete(id);
      return;
    }
    if (this.routed.has(id) || this.queued.has(id)) return;
    if (stored) this.storedPayloads.set(id, stored);
    this.queued.add(id);
    this.waiting.push(id);
    this.pump();
  }

  /** Starts queued rows while routing slots are free. */
  private pump(): void {
    while (this.running < this.options.concurrency && this.waiting.length > 0) {
      const id = this.waiting.shift()!;
      this.running++;
      const p = this.process(id)
        .catch((err: unknown) => this.options.logger.error({ err, id }, 'inbox processing failed'))
        .finally(() => {
          this.running--;
          this.queued.delete(id);
          this.storedPayloads.delete(id);
          this.claimedAtInsert.delete(id);
          this.inFlight.delete(p);
          this.pump();
        });
      this.inFlight.add(p);
    }
  }

  /** Releases UNREACHABLE rows when Temporal answers again, queues every due row, refreshes the backlog gauge. */
  async sweep(): Promise<number> {
    if (this.sweeping || this.stopped) return 0;
    this.sweeping = true;
    const { db, metrics } = this.options;
    try {
      await this.releaseIfTemporalIsBack();
      const due = (await db('notification_inbox')
        .where('status', 'RECEIVED')
        .andWhere('next_attempt_at', '<=', new Date())
        .orderBy('id')
        .limit(200)
        .pluck('id')) as number[];
      for (const id of due) this.kick(Number(id));
      const [{ n }] = (await db('notification_inbox').where('status', 'RECEIVED').count({ n: '*' })) as [{ n: number }];
      metrics.inboxBacklog.set(Number(n));
      return due.length;
    } catch (err) {
      this.options.logger.warn({ err }, 'inbox sweep failed; will retry');
      return 0;
    } finally {
      this.sweeping = false;
    }
  }

  /**
   * When rows wait because Temporal was unreachable, asks Temporal (one cheap call under the deadline); if it answers,
   * makes those rows due now. A leased row has no failure kind, so the lease is never cut short.
   */
  private async releaseIfTemporalIsBack(): Promise<void> {
    const { db, client, callTimeoutMs, logger } = this.options;
    const waiting = await db('notification_inbox')
      .where({ status: 'RECEIVED', failure_kind: 'UNREACHABLE' })
      .first('id');
    if (!waiting) return;
    try {
      await withTemporalDeadline(client, callTimeoutMs, () => client.workflowService.getSystemInfo({}));
    } catch {
      return;
    }
    const released = await db('notification_inbox')
      .where({ status: 'RECEIVED', failure_kind: 'UNREACHABLE' })
      .update({ next_attempt_at: new Date(), failure_kind: null });
    if (released > 0)
      logger.info({ released }, 'Temporal answers again; notifications held back by the outage are routed now');
  }

  private rememberRouted(id: number): void {
    this.routed.add(id);
    if (this.routed.size > MAX_QUEUED) this.routed.delete(this.routed.values().next().value!);
  }

  /** Claims a row (a lease, so concurrent processors do not both route it), routes it and records the outcome. */
  async process(id: number): Promise<void> {
    const { db, logger, metrics } = this.options;
    const now = new Date();
    // A row this process inserted with a lease is its own already (its first attempt counted at the insert).
    const claimed = this.claimedAtInsert.has(id)
      ? 1
      : await db('notification_inbox')
          .where({ id, status: 'RECEIVED' })
          .andWhere('next_attempt_at', '<=', now)
          .update({
            attempts: db.raw('attempts + 1'),
            next_attempt_at: new Date(now.getTime() + leaseMs(this.options.callTimeoutMs)),
            failure_kind: null,
          });
    // A claim the lease refused is still this process's when the row's own INSERT came back meanwhile (a redelivery's
    // duplicate can return first): that request's kick found the row queued here and left the routing to this call.
    if (claimed !== 1 && !this.claimedAtInsert.has(id)) return;
    // A row this process has just inserted is routed from what it inserted (the payload never changes); any other is
    // read back. The attempt count is read only when it is needed, for a failure's backoff.
    const stored = this.storedPayloads.get(id);
    const row = stored
      ? undefined
      : ((await db('notification_inbox').where({ id }).first('payload', 'attempts')) as
          { payload: string; attempts: number } | undefined);
    const n = stored ?? (JSON.parse(row!.payload) as PaymentNotification);
    try {
      const { client, taskQueue, callTimeoutMs, lateRecheckDelaysMs } = this.options;
      const outcome = await routePaymentNotification(
        { db, client, taskQueue, callTimeoutMs, orderProviders: this.orderProviders, lateRecheckDelaysMs },
        n,
      );
      const refused = outcome.destination === 'REFUSED';
      await db('notification_inbox')
        .where({ id, status: 'RECEIVED' })
        .update({
          status: outcome.destination,
          processed_at: new Date(),
          last_error: refused ? outcome.detail.slice(0, 1024) : null,
        });
      metrics.inboxRouted.inc({ destination: outcome.destination });
      this.rememberRouted(id);
      if (refused) {
        metrics.notificationsRefused.inc({ provider: n.provider, reason: outcome.reason, where: 'inbox' });
        logger.warn(
          { id, notificationId: n.notificationId, orderId: n.outTradeNo, reason: outcome.reason },
          `notification refused: ${outcome.detail}`,
        );
      }
    } catch (err) {
      const attempts = Number(
        row?.attempts ?? (await db('notification_inbox').where({ id }).first('attempts'))?.attempts ?? 1,
      );
      const backoff = Math.min(1000 * 2 ** Math.min(attempts, 12), MAX_BACKOFF_MS);
      const unreachable = isTemporalUnreachable(err);
      await db('notification_inbox')
        .where({ id, status: 'RECEIVED' })
        .update({
          next_attempt_at: new Date(Date.now() + backoff),
          last_error: String((err as Error).message).slice(0, 1024),
          failure_kind: unreachable ? 'UNREACHABLE' : 'ERROR',
        });
      metrics.inboxSignalFailures.inc();
      logger.warn(
        {
          err,
          id,
          notificationId: n.notificationId,
          orderId: n.outTradeNo,
          retryInMs: backoff,
          temporalUnreachable: unreachable,
        },
        'notification not routed yet; kept in the inbox',
      );
    }
  }
}
