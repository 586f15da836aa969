/**
 * The outbox relay's webhook signature (src/contracts/outbox.ts): made by the relay (src/client/outbox-relay.ts),
 * checked by receivers (the sandbox's stand-in of the shop, src/sandbox-provider/shop-receiver.ts; a receiver in
 * another language does the same).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { OUTBOX_SIGNATURE_TOLERANCE_S } from '../contracts/outbox';

/** The `Payflow-Signature` header of a body sent at `unixSeconds`. */
export function signOutbox(secret: string, body: string, unixSeconds: number): string {
  const mac = createHmac('sha256', secret).update(`${unixSeconds}.${body}`).digest('hex');
  return `t=${unixSeconds},v1=${mac}`;
}

/**
 * Whether a `Payflow-Signature` header signs this raw body with this secret, within the tolerance of `nowSeconds`
 * (for receivers).
 */
export function verifyOutboxSignature(
  secret: string,
  header: string | undefined,
  body: string,
  nowSeconds = Math.floor(Date.now() / 1000),
): boolean {
  const parts = new Map((header ?? '').split(',').map((p) => p.split('=', 2) as [string, string]));
  const t = Number(parts.get('t'));
  const v1 = parts.get('v1') ?? '';
  if (!Number.isInteger(t) || Math.abs(nowSeconds - t) > OUTBOX_SIGNATURE_TOLERANCE_S || !/^[0-9a-f]{64}$/.test(v1))
    return false;
  const expected = createHmac('sha256', secret).update(`${t}.${body}`).digest();
  return timingSafeEqual(expected, Buffer.from(v1, 'hex'));
}
