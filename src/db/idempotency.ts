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

/**
 * Whether a Try of this keyed order has committed its fingerprint, waiting for one in progress (on any process): a
 * locking read of the row waits for the uncommitted insert's lock, and sees the row once that Try commits (none if it
 * rolled back). For a request about to be refused, so that it is not refused by its own first request's units.
 */
export async function keyInTryElsewhere(db: Knex, orderId: string): Promise<boolean> {
  const [rows] = (await db.raw('SELECT 1 AS x FROM idempotency_fingerprints WHERE order_id = ? LOCK IN SHARE MODE', [
    orderId,
  ])) as [unknown[]];
  return rows.length > 0;
}

/** The fingerprint stored for a keyed order, or undefined (no Try of it committed, or placed before they were kept). */
export async function fingerprintOf(db: Knex | Knex.Transaction, orderId: string): Promise<string | undefined> {
  const row = (await db('idempotency_fingerprints').where({ order_id: orderId }).first('fingerprint')) as
    { fingerprint: string } | undefined;
  return row?.fingerprint;
}
