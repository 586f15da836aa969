/**
 * Calls on a Temporal client under a deadline, and how to tell "Temporal could not be reached" from an answer: for
 * every process that calls Temporal on a request or retry path (the API, the inbox, reconciliation repairs).
 */
import { type Client, isGrpcServiceError } from '@temporalio/client';
import { NamespaceNotFoundError } from '@temporalio/common';

/** gRPC status codes the client surfaces (from @grpc/grpc-js's `status`). */
const GRPC_DEADLINE_EXCEEDED = 4;
const GRPC_RESOURCE_EXHAUSTED = 8;
const GRPC_UNAVAILABLE = 14;

/** The gRPC status code of a Temporal client error, looking through the SDK's wrappers (ServiceError's cause). */
export function grpcCodeOf(err: unknown): number | undefined {
  for (
    let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0;
    e && depth < 5;
    e = e.cause as typeof e, depth++
  ) {
    if (typeof e.code === 'number') return e.code;
  }
  return undefined;
}

/**
 * True when Temporal refused a call for a limit that passes (RESOURCE_EXHAUSTED: a namespace's rate limit, or a
 * workflow's limit of updates in flight while earlier ones wait on a slow step): the same call can be sent again.
 */
export function isTemporalBusy(err: unknown): boolean {
  return grpcCodeOf(err) === GRPC_RESOURCE_EXHAUSTED;
}

/**
 * gRPC codes with which the server refuses a request it did not carry out, and would refuse again until someone
 * changes a setting: a search attribute the namespace does not know (INVALID_ARGUMENT), no permission or no
 * credentials, an API switched off on the server (FAILED_PRECONDITION, UNIMPLEMENTED).
 */
const GRPC_REFUSALS = new Set([3, 7, 9, 12, 16]);

/**
 * True when the server refused a call outright: the namespace does not exist, or a code of GRPC_REFUSALS. A start
 * refused so, before the server answered it, started nothing (unlike a deadline or UNAVAILABLE, where it may have
 * reached the server); any call refused so is refused again until a setting changes.
 */
export function isTemporalRefusal(err: unknown): boolean {
  if (err instanceof NamespaceNotFoundError) return true;
  // The code of a gRPC status only (the error itself, or the cause of the SDK's ServiceError): other errors carry
  // numeric codes of their own (a DOMException's 9 or 12) that mean nothing here.
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++)
    if (isGrpcServiceError(e)) return GRPC_REFUSALS.has(e.code);
  return false;
}

/** True when a Temporal call failed because the server could not be reached in time (refused, reset, black hole). */
export function isTemporalUnreachable(err: unknown): boolean {
  const code = grpcCodeOf(err);
  return code === GRPC_UNAVAILABLE || code === GRPC_DEADLINE_EXCEEDED;
}

/**
 * Runs `fn`'s Temporal calls under a deadline of `timeoutMs` from now. Without one, a call to an unreachable server
 * waits through the client's own gRPC retries (tens of seconds); with one it fails with DEADLINE_EXCEEDED in time for
 * the caller to record the failure and move on.
 */
export function withTemporalDeadline<R>(client: Client, timeoutMs: number, fn: () => Promise<R>): Promise<R> {
  return client.withDeadline(Date.now() + timeoutMs, fn);
}
