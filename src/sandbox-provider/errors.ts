/** Errors of the sandbox API: every one is answered as JSON `{ code, message }` with its HTTP status. */
import { type ZodError } from 'zod';
import { SandboxErrorCode } from '../contracts/sandbox';

/** Codes only the sandbox server uses, beyond the shared SandboxErrorCode. */
export const SandboxLocalErrorCode = {
  /** pay on a payment that is already SUCCESS or REFUNDED */
  TRADE_ALREADY_PAID: 'TRADE_ALREADY_PAID',
  /** unknown route or unknown notification id */
  NOT_FOUND: 'NOT_FOUND',
} as const;

/** A refusal with an HTTP status and a machine-readable code. */
export class SandboxApiError extends Error {
  override name = 'SandboxApiError';
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** 400 VALIDATION_FAILED naming every field that was wrong, on one line. */
export function validationError(error: ZodError, what: string): SandboxApiError {
  const details = error.issues.map((issue) => `${issue.path.join('.') || what}: ${issue.message}`).join('; ');
  return new SandboxApiError(400, SandboxErrorCode.VALIDATION_FAILED, `Invalid ${what}: ${details}`);
}

/** 404 TRADE_NOT_EXIST for an outTradeNo the sandbox never saw. */
export function tradeNotExist(outTradeNo: string): SandboxApiError {
  return new SandboxApiError(
    404,
    SandboxErrorCode.TRADE_NOT_EXIST,
    `No payment with outTradeNo ${outTradeNo}; create it first`,
  );
}
