/**
 * The outbox relay: delivers the messages the workflows' activities write to the `outbox` table in the same transaction
 * as the change that causes them (a payment receipt with PAID, a fulfilment hand-off when the cooling-off window ends)
 * to the shop's systems, over a signed webhook (src/contracts/outbox.ts says what the receiver gets).
 *
 * At least once, in MySQL alone: a pass claims a batch of due messages with `FOR UPDATE SKIP LOCKED` and a lease
 * (`next_attempt_at`), so API processes running side by side never hand out the same message at once, and a message
 * whose relay died mid-delivery is handed out again when its lease ends. A delivered message gets `published_at`; a
 * failed one waits its backoff (5 s, doubling, at most 10 min) with the error kept in `last_error`, and is tried again
 * for as long as it takes: nothing is dropped. The receiver deduplicates by the message id.
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
    .orderBy('id')
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

/** Records a failed delivery: the message is due again after its backoff. */
export async function markFailed(db: Knex, id: number, attempt: number, error: string): Promise<void> {
  const [sql, bindings] = afterMs(outboxBackoffMs(attempt));
  await db('outbox')
    .where({ id })
    .whereNull('published_at')
    .update({ next_attempt_at: db.raw(sql, bindings), last_error: error.slice(0, 500) });
}

/** Delivers one message; throws when it was not delivered (a non-2xx answer, a timeout, a refused connection). */
export type OutboxSink = (delivery: OutboxDelivery) => Promise<void>;

/** The webhook sink: a signed POST to `url`, delivered on a 2xx answer. */
export function webhookSink(url: string, secret: string, timeoutMs = OUTBOX_DELIVERY_TIMEOUT_MS): OutboxSink {
  return async (delivery) => {
    const body = JSON.stringify(delivery);
    const response = await fetch(url, {
      method: 'POST',
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
    if (!response.ok) throw new Error(`HTTP ${response.status}${text ? `: ${text.slice(0, 200)}` : ''}`);
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

/** Runs passes until stopped: back to back while messages are due, every `intervalMs` when none are. */
export class OutboxRelay {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  private stopped = true;

  constructor(private readonly options: OutboxRelayOptions) {}

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  /** Stops looking; a pass in progress finishes its deliveries (each bounded by its timeout). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.pass().then((claimed) => this.schedule(claimed ? 0 : this.options.intervalMs));
    }, ms);
    this.timer.unref();
  }

  /** One pass: claims due messages and delivers them; returns how many it claimed. Overlapping calls share one pass. */
  pass(): Promise<number> {
    this.running ??= this.deliverDue()
      .catch((err: unknown) => {
        this.options.logger.warn({ err }, 'outbox relay pass failed; will retry');
        return 0;
      })
      .finally(() => (this.running = undefined));
    return this.running;
  }

  private async deliverDue(): Promise<number> {
    const { db, sink, logger, metrics } = this.options;
    const claimed = await claimOutbox(db, this.options.batchSize ?? 50);
    const queue = [...claimed];
    const worker = async () => {
      for (let m = queue.shift(); m; m = queue.shift()) {
        const { topic } = m.delivery;
        try {
          await sink(m.delivery);
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err);
          metrics?.outboxDeliveryFailures.inc({ topic });
          logger.warn(
            { messageId: m.delivery.id, attempt: m.delivery.attempt, err: message },
            'outbox message not delivered; will retry',
          );
          await markFailed(db, m.id, m.delivery.attempt, message);
          continue;
        }
        metrics?.outboxDelivered.inc({ topic });
        await markDelivered(db, m.id);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.concurrency ?? 4, queue.length) }, worker));
    return claimed.length;
  }
}
