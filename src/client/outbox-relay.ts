/**
 * The outbox relay: delivers the messages the workflows' activities write to the `outbox` table in the same transaction
 * as the change that causes them (a payment receipt with PAID, a fulfilment hand-off when the cooling-off window ends)
 * to the shop's systems, over a signed webhook (src/contracts/outbox.ts says what the receiver gets).
 *
 * At least once, in MySQL alone: a pass claims a batch of due messages with `FOR UPDATE SKIP LOCKED` and a lease
 * (`next_attempt_at`, renewed before a send late in a slow batch), so API processes running side by side do not send
 * one message at once, and a message whose relay died mid-delivery is handed out again when its lease ends. A
 * delivered message gets `published_at`; a failed one waits its backoff (5 s, doubling, at most 10 min) with the error
 * kept in `last_error`, and is tried again for as long as it takes: nothing is dropped. The receiver deduplicates by
 * the body's `id`.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { Knex } from 'knex';
import { OUTBOX_HEADERS, type OutboxDelivery } from '../contracts/outbox';
import { retryDeadlocks } from '../db/knex';
import { signOutbox } from '../shared/outbox-signature';
import type { Metrics } from './metrics';

export { signOutbox, verifyOutboxSignature } from '../shared/outbox-signature';

/** One message handed out for delivery. */
export interface ClaimedMessage {
  id: number;
  delivery: OutboxDelivery;
}

/** How long a claimed message is not handed out again while its delivery runs (well above the delivery timeout). */
export const OUTBOX_LEASE_MS = 60_000;
/** A delivery that has no answer after this fails (and is retried). */
export const OUTBOX_DELIVERY_TIMEOUT_MS = 10_000;
const FIRST_BACKOFF_MS = 5_000;
const MAX_BACKOFF_MS = 600_000;

/** The wait after failed delivery number `attempts` (1, 2, ...): 5 s, doubling, at most 10 min. */
export function outboxBackoffMs(attempts: number): number {
  return Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** Math.max(0, Math.min(attempts - 1, 20)));
}

const afterMs = (ms: number) => ['DATE_ADD(NOW(3), INTERVAL ? MICROSECOND)', [Math.round(ms * 1000)]] as const;

/**
 * Claims up to `limit` due messages (unpublished, not leased, past their backoff), oldest first: each gets a lease and
 * its attempt counted, in one transaction whose row locks are skipped by other relays' claims.
 */
export async function claimOutbox(db: Knex, limit: number, leaseMs = OUTBOX_LEASE_MS): Promise<ClaimedMessage[]> {
  // READ COMMITTED: the locking read takes no gap locks, so claims side by side only skip each other's rows (under
  // REPEATABLE READ their next-key locks on the unpublished index deadlocked); a deadlock still possible is retried.
  return retryDeadlocks(() =>
    db.transaction((trx) => claimIn(trx, limit, leaseMs), { isolationLevel: 'read committed' }),
  );
}

async function claimIn(trx: Knex.Transaction, limit: number, leaseMs: number): Promise<ClaimedMessage[]> {
  const rows = (await trx('outbox')
    .whereNull('published_at')
    .andWhere((q) => q.whereNull('next_attempt_at').orWhere('next_attempt_at', '<=', trx.raw('NOW(3)')))
    // In the order of ix_outbox_due (never tried first, then by when due): no sort, and the scan stops at `limit`.
    .orderBy([
      { column: 'next_attempt_at', order: 'asc' },
      { column: 'id', order: 'asc' },
    ])
    .limit(limit)
    .forUpdate()
    .skipLocked()
    .select('id', 'topic', 'message_key', 'payload', 'created_at', 'attempts')) as {
    id: number | string;
    topic: string;
    message_key: string;
    payload: string;
    created_at: Date;
    attempts: number;
  }[];
  if (!rows.length) return [];
  const [sql, bindings] = afterMs(leaseMs);
  await trx('outbox')
    .whereIn(
      'id',
      rows.map((r) => r.id),
    )
    .update({ attempts: trx.raw('attempts + 1'), next_attempt_at: trx.raw(sql, bindings) });
  return rows.map((r) => ({
    id: Number(r.id),
    delivery: {
      id: `${r.topic}:${r.message_key}`,
      topic: r.topic,
      key: r.message_key,
      createdAt: new Date(r.created_at).toISOString(),
      attempt: r.attempts + 1,
      payload: parsePayload(r.payload),
    },
  }));
}

function parsePayload(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Marks a message delivered; false when it already was (another relay's redelivery after a lease ran out). */
export async function markDelivered(db: Knex, id: number): Promise<boolean> {
  const n = await db('outbox')
    .where({ id })
    .whereNull('published_at')
    .update({ published_at: db.raw('NOW(3)'), next_attempt_at: null, last_error: null });
  return n === 1;
}

/**
 * Records a failed delivery: the message is due again after its backoff. Only while the claim is still this one (its
 * attempt number): a relay whose lease ran out must not cut short the lease of the relay that claimed it since.
 */
export async function markFailed(db: Knex, id: number, attempt: number, error: string): Promise<void> {
  const [sql, bindings] = afterMs(outboxBackoffMs(attempt));
  await db('outbox')
    .where({ id, attempts: attempt })
    .whereNull('published_at')
    .update({ next_attempt_at: db.raw(sql, bindings), last_error: error.slice(0, 500) });
}

/**
 * Renews the lease of a claimed message just before it is sent; false when the claim is no longer this one (its lease
 * ran out while the batch went slowly and another relay claimed it, or it was delivered): then it is not sent.
 */
export async function renewLease(db: Knex, id: number, attempt: number, leaseMs = OUTBOX_LEASE_MS): Promise<boolean> {
  const [sql, bindings] = afterMs(leaseMs);
  const n = await db('outbox')
    .where({ id, attempts: attempt })
    .whereNull('published_at')
    .update({ next_attempt_at: db.raw(sql, bindings) });
  return n === 1;
}

/** Delivers one message; throws when it was not delivered (a non-2xx answer, a timeout, a refused connection). */
export type OutboxSink = (delivery: OutboxDelivery) => Promise<void>;

/** The webhook sink: a signed POST to `url`, delivered on a 2xx answer. */
export function webhookSink(url: string, secret: string, timeoutMs = OUTBOX_DELIVERY_TIMEOUT_MS): OutboxSink {
  return async (delivery) => {
    const body = JSON.stringify(delivery);
    const response = await fetch(url, {
      method: 'POST',
      // A redirect is a failure, never followed: fetch would re-send a 301/302/303 as a GET without the body, and a 2xx
      // to that would mark a message delivered that never arrived.
      redirect: 'manual',
      headers: {
        'content-type': 'application/json',
        [OUTBOX_HEADERS.messageId]: delivery.id,
        [OUTBOX_HEADERS.topic]: delivery.topic,
        [OUTBOX_HEADERS.signature]: signOutbox(secret, body, Math.floor(Date.now() / 1000)),
      },
      body,
      signal: AbortSignal.timeout(timeoutMs),
    });
    // The body is not needed; reading it frees the connection.
    const text = await response.text().catch(() => '');
    if (!response.ok) {
      const moved = response.headers.get('location');
      throw new Error(
        `HTTP ${response.status}${moved ? ` (redirect to ${moved.slice(0, 200)}: not followed)` : ''}${text ? `: ${text.slice(0, 200)}` : ''}`,
      );
    }
  };
}

export interface OutboxRelayOptions {
  db: Knex;
  sink: OutboxSink;
  logger: FastifyBaseLogger;
  metrics?: Metrics;
  /** The wait before looking again when a pass found nothing due. */
  intervalMs: number;
  /** Messages claimed per pass. */
  batchSize?: number;
  /** Deliveries in flight at once. */
  concurrency?: number;
}

/** What one pass did. */
export interface RelayPass {
  claimed: number;
  delivered: number;
  failed: number;
}

/** The longest the relay waits between passes while every delivery fails (the receiver is down). */
const MAX_IDLE_MS = 60_000;

/**
 * Runs passes until stopped: back to back while messages are delivered, every `intervalMs` when none are due, and,
 * while every delivery fails, waits that double up to a minute.
 */
export class OutboxRelay {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<RelayPass> | undefined;
  /** Set by stop(): no new pass, no new send. */
  private stopping = false;
  private idleMs: number;

  constructor(private readonly options: OutboxRelayOptions) {
    this.idleMs = options.intervalMs;
  }

  start(): void {
    this.stopping = false;
    this.schedule(0);
  }

  /**
   * Stops looking; sends in flight finish (each bounded by its timeout), claimed messages not yet sent are left to their
   * lease (another relay, or this one after a restart, sends them when it ends).
   */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.stopping) return;
    this.timer = setTimeout(() => {
      void this.pass().then((done) => {
        const { intervalMs } = this.options;
        const allFailed = done.delivered === 0 && done.failed > 0;
        this.idleMs = allFailed ? Math.min(Math.max(this.idleMs * 2, intervalMs), MAX_IDLE_MS) : intervalMs;
        this.schedule(done.delivered > 0 ? 0 : this.idleMs);
      });
    }, ms);
    this.timer.unref();
  }

  /** One pass: claims due messages and delivers them. Overlapping calls share one pass. */
  pass(): Promise<RelayPass> {
    this.running ??= this.deliverDue()
      .catch((err: unknown) => {
        this.options.logger.warn({ err }, 'outbox relay pass failed; will retry');
        return { claimed: 0, delivered: 0, failed: 1 };
      })
      .finally(() => (this.running = undefined));
    return this.running;
  }

  private async deliverDue(): Promise<RelayPass> {
    const { db, sink, logger, metrics } = this.options;
    const claimed = await claimOutbox(db, this.options.batchSize ?? 50);
    const claimedAt = Date.now();
    const queue = [...claimed];
    const done: RelayPass = { claimed: claimed.length, delivered: 0, failed: 0 };
    const deliverOne = async (m: ClaimedMessage) => {
      const { topic } = m.delivery;
      // Past half its lease, the batch's claim may run out behind slow sends: renewed, or left to the relay that holds
      // it now. Before that nobody else can hold it (the claim's own lease), so no statement is spent on it.
      if (Date.now() - claimedAt > OUTBOX_LEASE_MS / 2 && !(await renewLease(db, m.id, m.delivery.attempt))) return;
      try {
        await sink(m.delivery);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        done.failed++;
        metrics?.outboxDeliveryFailures.inc({ topic });
        logger.warn(
          { messageId: m.delivery.id, attempt: m.delivery.attempt, err: message },
          'outbox message not delivered; will retry',
        );
        await markFailed(db, m.id, m.delivery.attempt, message);
        return;
      }
      done.delivered++;
      metrics?.outboxDelivered.inc({ topic });
      await markDelivered(db, m.id);
    };
    const worker = async () => {
      for (let m = queue.shift(); m && !this.stopping; m = queue.shift()) {
        // A database fault on one message leaves it to its lease; the others go on.
        await deliverOne(m).catch((err: unknown) => {
          done.failed++;
          logger.warn({ err, messageId: m?.delivery.id }, 'outbox delivery bookkeeping failed; left to its lease');
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.concurrency ?? 4, queue.length) }, worker));
    return done;
  }
}
