/**
 * The request an Idempotency-Key was first used with, as a fingerprint (src/client/orders-service.ts computes it),
 * stored in the transaction of the order's first stock Try. Every later Try of a keyed request compares its own
 * fingerprint first, inside its transaction, so a different body under a used key is refused before it reserves
 * anything: two requests racing with different bodies queue on the row's primary key, and the second compares.
 */
import type { Knex } from 'knex';

/** A request whose Idempotency-Key was first used with a different request. */
export class IdempotencyKeyReusedError extends Error {
  override name = 'IdempotencyKeyReusedError';
  constructor(readonly orderId: string) {
    super(`the Idempotency-Key of order ${orderId} was first used with a different request`);
  }
}

/**
 * Stores the fingerprint of the key's first request, or compares with the stored one, inside the caller's
 * transaction: 'first' when this request stored it, 'same' when an earlier request with the same fingerprint did.
 * Throws IdempotencyKeyReusedError when the stored one differs (the caller's transaction must then roll back).
 */
export async function claimFingerprint(
  trx: Knex.Transaction,
  orderId: string,
  fingerprint: string,
): Promise<'first' | 'same'> {
  try {
    await trx('idempotency_fingerprints').insert({ order_id: orderId, fingerprint });
    return 'first';
  } catch (err) {
    // A duplicate key rolls back only this statement in InnoDB; the row it met is committed (an uncommitted one
    // would have made the INSERT wait for its transaction), so a plain read sees it.
    if ((err as { code?: string }).code !== 'ER_DUP_ENTRY') throw err;
  }
  const stored = await fingerprintOf(trx, orderId);
  if (stored !== fingerprint) throw new IdempotencyKeyReusedError(orderId);
  return 'same';
}

/** Whether the server is MariaDB (asked once per pool): some locking syntax differs from MySQL's. */
const mariaDb = new WeakMap<Knex, Promise<boolean>>();
function isMariaDb(db: Knex): Promise<boolean> {
  let answer = mariaDb.get(db);
  if (!answer) {
    answer = Promise.resolve(db.raw('SELECT VERSION() AS v')).then((result: unknown) => {
      const [rows] = result as [{ v: string }[]];
      return /mariadb/i.test(String(rows[0]?.v));
    });
    answer.catch(() => mariaDb.delete(db));
    mariaDb.set(db, answer);
  }
  return answer;
}

/**
 * Where a Try of this keyed order stands, by its fingerprint row (a Try's first insert), on any process: `committed`,
 * `in progress` (the row is locked by an uncommitted insert), or `none`. A locking read that does not wait (NOWAIT):
 * a request about to be refused learns whether its key's first request is reserving right now, without queueing
 * behind that Try's hot-row locks or holding a connection for them. Autocommit: any gap lock ends with the statement.
 * MariaDB spells it `LOCK IN SHARE MODE NOWAIT` (a lock not granted at once: ER_LOCK_WAIT_TIMEOUT); MySQL 8 `FOR SHARE
 * NOWAIT` (ER_LOCK_NOWAIT), and refuses the other spelling.
 */
export async function keyedTry(db: Knex, orderId: string): Promise<'committed' | 'in progress' | 'none'> {
  const lock = (await isMariaDb(db)) ? 'LOCK IN SHARE MODE NOWAIT' : 'FOR SHARE NOWAIT';
  try {
    const [rows] = (await db.raw(`SELECT 1 AS x FROM idempotency_fingerprints WHERE order_id = ? ${lock}`, [
      orderId,
    ])) as [unknown[]];
    return rows.length > 0 ? 'committed' : 'none';
  } catch (err) {
    if (lockNotGranted(err)) return 'in progress';
    throw err;
  }
}

/**
 * keyedTry for many keys in one statement (the keyed buyers of a sale refused together); when a lock is not granted at
 * once the statement cannot say whose, and each key is asked alone.
 */
export async function keyedTries(
  db: Knex,
  orderIds: string[],
): Promise<Map<string, 'committed' | 'in progress' | 'none'>> {
  if (orderIds.length <= 1)
    return new Map(await Promise.all(orderIds.map(async (id) => [id, await keyedTry(db, id)] as const)));
  const lock = (await isMariaDb(db)) ? 'LOCK IN SHARE MODE NOWAIT' : 'FOR SHARE NOWAIT';
  try {
    const [rows] = (await db.raw(
      `SELECT order_id FROM idempotency_fingerprints WHERE order_id IN (${orderIds.map(() => '?').join(', ')}) ${lock}`,
      orderIds,
    )) as [{ order_id: string }[]];
    const found = new Set(rows.map((r) => r.order_id));
    return new Map(orderIds.map((id) => [id, found.has(id) ? 'committed' : 'none']));
  } catch (err) {
    if (!lockNotGranted(err)) throw err;
    // Each key alone, a few at a time (a batch can hold hundreds of keys, the pool a few dozen connections); one that
    // cannot be read (a pool timeout, say) is left out, and its request goes on to the full reads of its order, never
    // failing the other buyers of the batch.
    const answers = new Map<string, 'committed' | 'in progress' | 'none'>();
    const left = [...orderIds];
    await Promise.all(
      Array.from({ length: Math.min(ALONE_AT_ONCE, left.length) }, async () => {
        for (let id = left.shift(); id !== undefined; id = left.shift())
          await keyedTry(db, id).then(
            (answer) => void answers.set(id!, answer),
            () => undefined,
          );
      }),
    );
    return answers;
  }
}

/** Keys asked alone at once when a batch's read found one locked. */
const ALONE_AT_ONCE = 4;

/** A locking read refused because a lock was not granted at once (NOWAIT): MariaDB's code, MySQL 8's. */
function lockNotGranted(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'ER_LOCK_WAIT_TIMEOUT' || code === 'ER_LOCK_NOWAIT';
}

/** The fingerprint stored for a keyed order, or undefined (no Try of it committed, or placed before they were kept). */
export async function fingerprintOf(db: Knex | Knex.Transaction, orderId: string): Promise<string | undefined> {
  const row = (await db('idempotency_fingerprints').where({ order_id: orderId }).first('fingerprint')) as
    { fingerprint: string } | undefined;
  return row?.fingerprint;
}
