/**
 * Logging from activity code. Inside an activity this is the activity context's logger (`Context.current().log`):
 * JSON lines through the process's pino logger, with the SDK's workflowId, runId and activityType and our
 * orderId (src/workers/log-context.ts). Outside one (a test or tool calling the function directly) it is silent.
 */
import { asyncLocalStorage } from '@temporalio/activity';

type Meta = Record<string, unknown>;

/** The current activity's logger, or nothing outside an activity. */
export const activityLog = {
  debug: (message: string, meta?: Meta): void => asyncLocalStorage.getStore()?.log.debug(message, meta),
  info: (message: string, meta?: Meta): void => asyncLocalStorage.getStore()?.log.info(message, meta),
  warn: (message: string, meta?: Meta): void => asyncLocalStorage.getStore()?.log.warn(message, meta),
  error: (message: string, meta?: Meta): void => asyncLocalStorage.getStore()?.log.error(message, meta),
};
