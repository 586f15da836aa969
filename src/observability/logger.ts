/**
 * One structured logger (pino) for the API, the worker, activities and workflows.
 *
 * - `createLogger` builds the process's root logger: JSON lines by default, `LOG_FORMAT=pretty` for humans
 *   (pino-pretty, a devDependency), and an injectable destination stream (tests capture the lines).
 * - `TemporalLogger` adapts the Temporal SDK's `Logger` interface to pino; `Runtime.install({ logger })` gets
 *   one (src/workers/telemetry.ts), so the SDK's own lines, activity `log` / `Context.current().log` and
 *   workflow `log` (forwarded by the SDK's logger sink) come out through the same pino logger, with the SDK's
 *   attributes (workflowId, runId, activityType, ...) and ours (orderId, see src/workers/log-context.ts).
 */
import type { LogLevel, LogMetadata, Logger as SdkLogger } from '@temporalio/common';
import pino, { type DestinationStream, type Level, type Logger } from 'pino';
import { ConfigError } from '../config';
import { orderIdFromWorkflowId } from '../contracts/log-context';

export type { Logger };

/** `LOG_FORMAT`: JSON lines (default) or pino-pretty's coloured lines (development only). */
export type LogFormat = 'json' | 'pretty';

/** Options of createLogger. */
export interface LoggerOptions {
  level: Level | 'silent';
  format?: LogFormat;
  /** Where lines go (default stdout); tests pass a capturing stream. Ignored with format `pretty`. */
  destination?: DestinationStream;
  /** `name` field of every line, e.g. payflow-api / payflow-worker. */
  name?: string;
}

/** Builds a root logger. Throws a one-line ConfigError when `pretty` is asked for without pino-pretty installed. */
export function createLogger(options: LoggerOptions): Logger {
  const pinoOptions: pino.LoggerOptions = {
    level: options.level,
    ...(options.name ? { name: options.name } : {}),
    // The Temporal SDK reports failures under `error`; fastify and our own code use `err`.
    serializers: { err: pino.stdSerializers.err, error: pino.stdSerializers.err },
    redact: ['req.headers.authorization', 'headers.authorization'],
  };
  if (options.format === 'pretty') return pino(pinoOptions, prettyStream());
  return options.destination ? pino(pinoOptions, options.destination) : pino(pinoOptions);
}

function prettyStream(): DestinationStream {
  let pretty: (options: Record<string, unknown>) => DestinationStream;
  try {
    // A devDependency: loaded only when asked for, so production installs (npm ci --omit=dev) never need it.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    pretty = require('pino-pretty') as typeof pretty;
  } catch {
    throw new ConfigError(
      'Invalid configuration: LOG_FORMAT=pretty needs the pino-pretty package (a devDependency); install it or use LOG_FORMAT=json',
    );
  }
  return pretty({
    colorize: true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,taskToken,namespace,taskQueue',
  });
}

const PINO_LEVEL: Record<LogLevel, Level> = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
};

/**
 * The Temporal SDK's Logger on top of pino: `Runtime.install({ logger: new TemporalLogger(pinoLogger) })`.
 * `target` may be replaced later (the runtime is installed once per process; tests point it at a capture).
 */
export class TemporalLogger implements SdkLogger {
  constructor(public target: Logger) {}

  log(level: LogLevel, message: string, meta?: LogMetadata): void {
    const method = PINO_LEVEL[level] ?? 'info';
    if (!this.target.isLevelEnabled(method)) return;
    if (!meta) return this.target[method](message);
    // Lines the SDK writes outside the interceptors (workflow task failures, ...) still get the order of an order
    // workflow.
    if (meta.orderId === undefined && typeof meta.workflowId === 'string') {
      const orderId = orderIdFromWorkflowId(meta.workflowId);
      if (orderId !== undefined) meta = { ...meta, orderId };
    }
    // Symbol keys (the SDK's log timestamp) are not serialised; everything else becomes a JSON field.
    this.target[method](meta, message);
  }
  trace(message: string, meta?: LogMetadata): void {
    this.log('TRACE', message, meta);
  }
  debug(message: string, meta?: LogMetadata): void {
    this.log('DEBUG', message, meta);
  }
  info(message: string, meta?: LogMetadata): void {
    this.log('INFO', message, meta);
  }
  warn(message: string, meta?: LogMetadata): void {
    this.log('WARN', message, meta);
  }
  error(message: string, meta?: LogMetadata): void {
    this.log('ERROR', message, meta);
  }
}
