/**
 * Admission of a new order before anything starts on Temporal (flash sales, 秒杀): a buyer who cannot get the units
 * is answered 409 OUT_OF_STOCK from MySQL alone, and a buyer who can gets them reserved (the order's TCC Try, fenced
 * by order id) before the order's workflow starts. The workflow's own Try then finds the fence TRIED and is a no-op;
 * from there on the workflow owns the reservation (confirm, or cancel on expiry, cancel or failure).
 *
 * One gap remains between the reservation and the workflow's start: the API may die in it, or the start may fail.
 * `OrphanReservationSweeper` closes it: a stock fence still TRIED after a grace period whose order has no running
 * workflow is cancelled (fenced, so it races safely with a late start: that Try is then refused, the order fails and
 * nobody was told 201). A workflow that starts after Temporal answered "not found" but stores its order before the
 * release keeps the reservation: the release locks the fences and re-reads the order row (cancelStockUnlessOwned). A
 * definite start failure is released at once by the API itself.
 */
import type { Client } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { FastifyBaseLogger } from 'fastify';
import type { Knex } from 'knex';
import { FailureType } from '../contracts/failures';
import { orderWorkflowId } from '../contracts/order';
import { IdempotencyKeyReusedError, keyedTries } from '../db/idempotency';
import { cancelStock, cancelStockUnlessOwned, tryReserveStock, type StockLine } from '../db/stock';
import { isTemporalRefusal, withTemporalDeadline } from '../temporal/calls';
import {
  type ApiError,
  apiFailure,
  idempotencyKeyReused,
  isTransientDependencyError,
  orderRefusalError,
} from './errors';
import type { Metrics } from './metrics';

/** Units available right now per known SKU (all buckets summed); unknown SKUs are absent. Plain reads, no locks. */
export async function availableUnits(db: Knex, skus: string[]): Promise<Map<string, number>> {
  const rows = (await db('products as p')
    .leftJoin('stock as s', 's.sku', 'p.sku')
    .whereIn('p.sku', skus)
    .select(
      'p.sku',
      db.raw(
        'COALESCE(s.available, 0) + COALESCE((SELECT SUM(b.available) FROM stock_buckets b WHERE b.sku = p.sku), 0) AS units',
      ),
    )) as {
    sku: string;
    units: number | string;
  }[];
  return new Map(rows.map((r) => [r.sku, Number(r.units)]));
}

/**
 * Reads shared by the requests that arrive together (a flash sale sends hundreds in the same millisecond), without
 * ever answering a request from a read made before it arrived: a request joins only the batch that is still waiting to
 * be sent, never the read in flight. So the answer is as fresh as a read of its own, and a burst of N requests costs
 * about two reads in a row instead of N, each MySQL round trip being the dearest thing a losing buyer costs (README,
 * "Flash sales").
 */
export class BatchedReads<V> {
  private waiting: { keys: Set<string>; done: Promise<Map<string, V>>; send: () => void } | undefined;
  private inFlight = 0;

  /**
   * @param readMany one read for many keys; a key it has no answer for is absent from the map
   * @param maxInFlight reads sent at once; a request that arrives while they run waits for the next batch, which goes
   *   out as soon as one comes back.
   */
  constructor(
    private readonly readMany: (keys: string[]) => Promise<Map<string, V>>,
    private readonly maxInFlight = 2,
  ) {}

  /** The answer for each of `keys` (absent when the read has none), from a read sent after this call. */
  read(keys: string[]): Promise<Map<string, V>> {
    let batch = this.waiting;
    if (!batch) {
      const keySet = new Set<string>();
      let send!: () => void;
      const done = new Promise<Map<string, V>>((resolve, reject) => {
        send = () => this.readMany([...keySet]).then(resolve, reject);
      });
      batch = this.waiting = { keys: keySet, done, send };
      // Requests of the same tick join before it goes; after that, only when no slot is free.
      process.nextTick(() => this.sendIfFree());
    }
    for (const key of keys) batch.keys.add(key);
    return batch.done.then((all) => new Map(keys.filter((k) => all.has(k)).map((k) => [k, all.get(k)!])));
  }

  private sendIfFree(): void {
    const batch = this.waiting;
    if (!batch || this.inFlight >= this.maxInFlight) return;
    this.waiting = undefined;
    this.inFlight++;
    batch.send();
    void batch.done
      .catch(() => undefined)
      .finally(() => {
        this.inFlight--;
        this.sendIfFree();
      });
  }
}

/** Units available now per known SKU (all buckets summed; unknown SKUs absent), read for the buyers who arrive together. */
export class AvailabilityReads extends BatchedReads<number> {}

/**
 * Where an Idempotency-Key stands, for a keyed request about to be refused for stock: its first request's Try under
 * way (`in progress`), committed (`committed`), or never run, with (`traces`: an order row or a stock fence, of an order
 * placed before fingerprints were kept) or without (`none`) anything of its order in MySQL.
 */
export type KeyProbe = 'in progress' | 'committed' | 'traces' | 'none';

/**
 * The probe of many keys' orders in two statements: their fingerprint rows read without waiting for locks
 * (keyedTries), then, for those without one, whether their order has a row or a stock fence. A key it could not read
 * is left out of the answer (and the whole answer empty when a statement failed): its request goes on to the full reads
 * of its order, never refused, nor failed, for another buyer's sake.
 */
export async function probeKeys(
  db: Knex,
  orderIds: string[],
  /** Told of a statement that failed (a log line and a counter: a lasting failure must not go unseen). */
  failed: (err: unknown, keys: number) => void = () => undefined,
): Promise<Map<string, KeyProbe>> {
  try {
    const tries = await keyedTries(db, orderIds);
    const unseen = orderIds.filter((id) => tries.get(id) === 'none');
    const traced = new Set<string>();
    if (unseen.length) {
      const marks = unseen.map(() => '?').join(', ');
      const [rows] = (await db.raw(
        `SELECT order_id AS id FROM orders WHERE order_id IN (${marks})
         UNION SELECT xid AS id FROM tcc_fence WHERE xid IN (${marks}) AND participant = 'stock'`,
        [...unseen, ...unseen],
      )) as [{ id: string }[]];
      for (const r of rows) traced.add(r.id);
    }
    const probes = new Map<string, KeyProbe>();
    for (const id of orderIds) {
      const tried = tries.get(id);
      if (tried !== undefined) probes.set(id, tried === 'none' ? (traced.has(id) ? 'traces' : 'none') : tried);
    }
    return probes;
  } catch (err) {
    // Told, never thrown from: the buyers go on to the full reads whatever the reporting does.
    try {
      failed(err, orderIds.length);
    } catch {
      // nothing: a failing logger must not fail a buyer's request
    }
    return new Map();
  }
}

/**
 * The units of each SKU this process is reserving right now (Tries in flight). When a flash sale opens, hundreds of
 * buyers read the same units at once; without this, every one of them runs a Try and they queue on the stock row's
 * lock, the losers only learning they lost after the winners' transactions (a second and more on two cores). Here
 * units being reserved count as taken: a buyer whose units are all spoken for is answered OUT_OF_STOCK at once, no
 * Try. Should a Try in flight fail, its units are sellable again to the next buyer at once (nothing is held for it).
 * A claim ends as its Try is about to commit (tryReserveStock's `committing`), not when the commit is answered: a units
 * read answered in between may already see the units taken, and counting them claimed as well refused a buyer with a
 * unit left that nobody held (seen in the bench's warm-up: 5 buyers at once for 5 units, one refused). Ending a claim
 * early errs the other way (a read may count units as free that the Try is committing), which only lets a buyer run a
 * Try that MySQL's conditional update refuses. Per process; across processes that update decides.
 */
export class ReservationGate {
  private readonly claimed = new Map<string, number>();
  /**
   * Orders whose Try is in flight here: a retry of one (same Idempotency-Key) is not turned away by its own claim. One
   * claim per order at most: a request that finds its order claiming does not claim again.
   */
  private readonly orders = new Set<string>();

  /** Whether this order's own Try is in flight in this process. */
  claiming(orderId: string): boolean {
    return this.orders.has(orderId);
  }

  /** The first line that the available units, less those being reserved here now, cannot cover. */
  contested(items: StockLine[], available: Map<string, number>): StockLine | undefined {
    return items.find((i) => (available.get(i.sku) ?? 0) - (this.claimed.get(i.sku) ?? 0) < i.quantity);
  }

  /** Marks the lines as being reserved; the returned release (idempotent) is called once the Try has settled. */
  claim(items: StockLine[], orderId: string): () => void {
    for (const i of items) this.claimed.set(i.sku, (this.claimed.get(i.sku) ?? 0) + i.quantity);
    this.orders.add(orderId);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.orders.delete(orderId);
      for (const i of items) {
        const left = (this.claimed.get(i.sku) ?? 0) - i.quantity;
        if (left > 0) this.claimed.set(i.sku, left);
        else this.claimed.delete(i.sku);
      }
    };
  }
}

/**
 * A bound on the Tries one process runs at once. Tries of a hot SKU queue on its stock row's lock in MySQL, each
 * holding a pooled connection while it waits; a hundred winners of a sale would hold the whole pool, and every other
 * request of the API (a loser's units read, a callback's INSERT) would wait behind them for a connection. Tries on one
 * row are serialised by that lock anyway, so waiting here costs them nothing and keeps the pool free.
 */
export class TrySlots {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly size: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.size) await new Promise<void>((r) => this.waiting.push(r));
    else this.running++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}

/** The first line the available units cannot cover, if any. */
export function shortLine(items: StockLine[], available: Map<string, number>): StockLine | undefined {
  return items.find((i) => (available.get(i.sku) ?? 0) < i.quantity);
}

/** The 409 a buyer gets when the units are not there. */
export function outOfStockError(line: StockLine, orderId?: string): ApiError {
  return apiFailure(FailureType.OUT_OF_STOCK, `not enough stock for ${line.sku}`, {
    sku: line.sku,
    ...(orderId ? { orderId } : {}),
  });
}

/**
 * Reserves every line for the order (the TCC Try, all or nothing, fenced by order id, so a retry with the same
 * Idempotency-Key reserves nothing twice). Answers 409 OUT_OF_STOCK when the units are gone. With the `fingerprint` of
 * a keyed request, a request that differs from the key's first one is answered 422 IDEMPOTENCY_KEY_REUSED before
 * anything is reserved; the result then says whether this was the key's first request or a repeat of it.
 */
export async function reserveBeforeStart(
  db: Knex,
  orderId: string,
  items: StockLine[],
  fingerprint?: string,
  committing?: () => void,
): Promise<'first' | 'same' | undefined> {
  try {
    return await tryReserveStockPatiently(db, orderId, items, fingerprint, committing);
  } catch (err) {
    if (err instanceof IdempotencyKeyReusedError) throw idempotencyKeyReused(err.orderId);
    if (err instanceof ApplicationFailure && err.type === FailureType.OUT_OF_STOCK) {
      const sku = (err.details?.[0] as { sku?: string } | undefined)?.sku ?? items[0]!.sku;
      throw outOfStockError({ sku, quantity: items.find((i) => i.sku === sku)?.quantity ?? 0 });
    }
    // The reservation was released already (the sweeper, or the order's own workflow): answered as the workflow's Try
    // refused after its Cancel is answered (orderRefusalError, the one mapping).
    const refused =
      err instanceof ApplicationFailure && err.type === FailureType.TCC_TRY_AFTER_CANCEL
        ? orderRefusalError(err.type, err.message, err.details?.[0] as Record<string, unknown> | undefined)
        : undefined;
    throw refused ?? err;
  }
}

/**
 * The order's stock reservation, made by an earlier request with the same Idempotency-Key: `held` (reserved or sold),
 * `released` (cancelled: by its workflow after a failure, by the API after a definite start failure, or by the orphan
 * sweeper; a Try can never reserve for this order again), or undefined when no request reserved anything yet.
 */
export async function reservationOf(db: Knex, orderId: string): Promise<'held' | 'released' | undefined> {
  const statuses = (await db('tcc_fence').where({ xid: orderId, participant: 'stock' }).pluck('status')) as string[];
  if (statuses.some((s) => s === 'TRIED' || s === 'CONFIRMED')) return 'held';
  return statuses.length ? 'released' : undefined;
}

/** Lock contention on a hot SKU's rows: the Try was rolled back and may simply be run again. */
function isContention(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'ER_LOCK_DEADLOCK' || code === 'ER_LOCK_WAIT_TIMEOUT';
}

/**
 * The Try, run again while takers of a hot SKU deadlock one another (tryReserveStock already retries a few times at
 * once). Before each new attempt the units are read again: contention peaks as the last units go, and a buyer who can
 * no longer get them is answered OUT_OF_STOCK instead of waiting or getting a 503.
 */
async function tryReserveStockPatiently(
  db: Knex,
  orderId: string,
  items: StockLine[],
  fingerprint: string | undefined,
  committing: (() => void) | undefined,
): Promise<'first' | 'same' | undefined> {
  for (let attempt = 1; ; attempt++) {
    try {
      return (await tryReserveStock(db, orderId, items, { fingerprint, committing })).request;
    } catch (err) {
      if (!isContention(err) || attempt >= 20) throw err;
      const short = shortLine(
        items,
        await availableUnits(
          db,
          items.map((i) => i.sku),
        ),
      );
      // Units the order itself holds (an earlier request with its key, racing this one on its fingerprint row) are
      // not missing units: the next attempt joins them.
      if (short && !(fingerprint !== undefined && (await reservationOf(db, orderId)) === 'held'))
        throw outOfStockError(short);
      await new Promise((r) => setTimeout(r, 10 + Math.random() * 40 * Math.min(attempt, 5)));
    }
  }
}

/**
 * Releases an order's pre-start reservation (idempotent; a no-op for lines its workflow already confirmed or released).
 */
export async function releaseReservation(db: Knex, orderId: string, items: StockLine[]): Promise<void> {
  await cancelStock(db, orderId, items);
}

/** Order statuses in which the order's workflow owns its stock reservation: the sweeper leaves such orders alone. */
const OWNED_BY_WORKFLOW = ['AWAITING_PAYMENT', 'NEEDS_REVIEW'] as const;

/**
 * Releases a pre-start reservation unless an order row shows a workflow took it over (the fences locked, the row read
 * again: cancelStockUnlessOwned). For a start that looks refused: a take-over that comes after it is refused
 * (TCC_TRY_AFTER_CANCEL), one that came before keeps its units. True when the units were released or already were.
 */
export async function releaseUnlessOwned(db: Knex, orderId: string, items: StockLine[]): Promise<boolean> {
  return !(await cancelStockUnlessOwned(db, orderId, items, OWNED_BY_WORKFLOW)).owned;
}

/** A sweeper failure that is not one order's own: a lost dependency, or Temporal refusing this process's calls. */
function failsEveryOrder(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (code === 'ER_LOCK_DEADLOCK' || code === 'ER_LOCK_WAIT_TIMEOUT') return false;
  return isTransientDependencyError(err) || isTemporalRefusal(err);
}

/** Options of the sweeper. */
export interface SweeperOptions {
  db: Knex;
  client: Client;
  logger: FastifyBaseLogger;
  metrics: Metrics;
  /** How long a reservation may wait for its workflow before it counts as orphaned. */
  graceMs: number;
  intervalMs: number;
  callTimeoutMs: number;
}

/** Finds stock reservations that no running workflow owns and releases them. */
export class OrphanReservationSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;

  constructor(private readonly options: SweeperOptions) {}

  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /** One pass; returns how many orders' reservations it released. Overlapping calls share one pass. */
  sweep(): Promise<number> {
    this.running ??= this.pass()
      .catch((err: unknown) => {
        this.options.logger.warn({ err }, 'orphan reservation sweep failed; will retry');
        return 0;
      })
      .finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<number> {
    const { db, logger, graceMs } = this.options;
    // Candidates: TRIED stock fences past the grace whose order row is missing (the workflow never priced it) or is no
    // longer waiting for payment. A waiting order's workflow owns its fences; it is not even asked.
    const rows = (await db('tcc_fence as f')
      .leftJoin('orders as o', 'o.order_id', 'f.xid')
      .where({ 'f.participant': 'stock', 'f.status': 'TRIED' })
      .andWhere('f.created_at', '<', new Date(Date.now() - graceMs))
      .andWhere((q) => q.whereNull('o.order_id').orWhereNotIn('o.status', OWNED_BY_WORKFLOW))
      .orderBy('f.created_at')
      .limit(200)
      .select('f.xid', 'f.resource', 'f.quantity')) as { xid: string; resource: string; quantity: number | string }[];
    const byOrder = new Map<string, StockLine[]>();
    for (const r of rows)
      byOrder.set(r.xid, [...(byOrder.get(r.xid) ?? []), { sku: r.resource, quantity: Number(r.quantity) }]);
    let released = 0;
    for (const [orderId, lines] of byOrder) {
      try {
        if (await this.releaseUnlessRunning(orderId, lines)) released++;
      } catch (err) {
        // A failure every next order would meet too (Temporal or MySQL unreachable, Temporal busy or refusing this
        // process's calls): the pass ends (logged by sweep) and the next one retries. Any other failure is this
        // order's (a deadlock on its rows, an answer the sweeper cannot read): logged, and the rest of the pass goes
        // on, so one order cannot keep every other orphan's units from coming back.
        if (failsEveryOrder(err)) throw err;
        logger.warn({ err, orderId }, 'orphan sweep: could not settle this reservation; retried next pass');
      }
    }
    return released;
  }

  /** Releases one candidate's units unless its workflow runs or owns them; true when it released some. */
  private async releaseUnlessRunning(orderId: string, lines: StockLine[]): Promise<boolean> {
    const { db, client, logger, metrics, callTimeoutMs } = this.options;
    let running: boolean;
    try {
      const description = await withTemporalDeadline(client, callTimeoutMs, () =>
        client.workflow.getHandle(orderWorkflowId(orderId)).describe(),
      );
      running = description.status.name === 'RUNNING';
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
      running = false;
    }
    if (running) return false;
    // Temporal's "not found" may be stale by now: a start right after it (a client retrying with the same
    // Idempotency-Key) may have stored the order, finding the reservation held. The release re-reads the order row
    // with the fences locked and leaves an order its workflow owns alone; a take-over that comes after it finds
    // the fences CANCELLED and is refused (TCC_TRY_AFTER_CANCEL).
    const { released: n, owned } = await cancelStockUnlessOwned(db, orderId, lines, OWNED_BY_WORKFLOW);
    if (owned) {
      logger.info({ orderId }, 'orphan sweep: the order was taken over by its workflow meanwhile; left alone');
      return false;
    }
    if (n === 0) return false;
    metrics.orphanReservationsReleased.inc();
    logger.warn(
      { orderId, lines },
      'released a stock reservation that no running workflow owns (API stopped between reserving and starting, or the start failed)',
    );
    return true;
  }
}
