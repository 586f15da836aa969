import { createHmac, timingSafeEqual } from 'node:crypto';

/** Default accepted clock skew for a signed notification, as Stripe: 5 minutes. */
export const SIGNATURE_TOLERANCE_SECONDS = 300;

/** Computes the `Sandbox-Signature` header value for a raw body. */
export function signSandboxPayload(secret: string, rawBody: string | Buffer, unixSeconds: number): string {
  const mac = createHmac('sha256', secret).update(`${unixSeconds}.`).update(rawBody).digest('hex');
  return `t=${unixSeconds},v1=${mac}`;
}

/** Why a signature was refused. */
export type SignatureRejection = 'MISSING_SIGNATURE' | 'MALFORMED_SIGNATURE' | 'BAD_SIGNATURE' | 'STALE_TIMESTAMP';

/** Verifies the header over the exact raw bytes received; never over re-serialised JSON. */
export function verifySandboxSignature(
  secret: string,
  header: string | undefined,
  rawBody: Buffer,
  nowSeconds: number,
  toleranceSeconds = SIGNATURE_TOLERANCE_SECONDS,
): { ok: true; timestamp: number } | { ok: false; reason: SignatureRejection } {
  if (!header) return { ok: false, reason: 'MISSING_SIGNATURE' };
  let timestamp: number | undefined;
  const candidates: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) return { ok: false, reason: 'MALFORMED_SIGNATURE' };
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 't' && /^\d{1,12}$/.test(value)) timestamp = Number(value);
    else if (key === 'v1' && /^[0-9a-f]{64}$/.test(value)) candidates.push(value);
  }
  if (timestamp === undefined || candidates.length === 0) return { ok: false, reason: 'MALFORMED_SIGNATURE' };
  const expected = Buffer.from(signSandboxPayload(secret, rawBody, timestamp).split('v1=')[1]!, 'hex');
  const matches = candidates.some((c) => timingSafeEqual(Buffer.from(c, 'hex'), expected));
  if (!matches) return { ok: false, reason: 'BAD_SIGNATURE' };
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds) return { ok: false, reason: 'STALE_TIMESTAMP' };
  return { ok: true, timestamp };
}
