/** Builds verifyNotification results, zod-validating what adapters normalised before anyone acts on it. */
import { type NotificationRejection, PaymentNotification, ProviderNotice } from './types';

/** The result type of PaymentProvider.verifyNotification. */
export type Verdict = { ok: true; notification: PaymentNotification } | { ok: false; rejection: NotificationRejection };

/** A verified payment, validated against PaymentNotification (an invalid one is refused, never half-trusted). */
export function accept(notification: PaymentNotification): Verdict {
  const parsed = PaymentNotification.safeParse(notification);
  if (!parsed.success)
    return {
      ok: false,
      rejection: {
        code: 'MALFORMED_BODY',
        message: `normalised notification invalid: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`,
      },
    };
  return { ok: true, notification: parsed.data };
}

/** A refusal; a `notice` (verified non-payment event) is validated against ProviderNotice. */
export function refuse(code: NotificationRejection['code'], message: string, notice?: ProviderNotice): Verdict {
  if (!notice) return { ok: false, rejection: { code, message } };
  const parsed = ProviderNotice.safeParse(notice);
  if (!parsed.success)
    return {
      ok: false,
      rejection: {
        code: 'MALFORMED_BODY',
        message: `normalised notice invalid: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`,
      },
    };
  return { ok: false, rejection: { code, message, notice: parsed.data } };
}
