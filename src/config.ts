import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { DEFAULT_POINTS_CURRENCY } from './contracts/order';
import { LATE_PAYMENT_RECHECK_DELAYS_MS } from './contracts/order-workflow';
import { ProviderEnvError, type ProvidersConfig, providersFromEnv, testMoneyProblem } from './providers/config';
import { parseDuration } from './shared/duration';
import { Currency } from './shared/money';

/** Default of WORKFLOW_TASK_POLLERS. */
export const DEFAULT_WORKFLOW_TASK_POLLERS = 40;

const port = z
  .string()
  .regex(/^\d{1,5}$/, 'must be a port number (0-65535)')
  .transform(Number)
  .pipe(z.number().int().max(65535, 'must be a port number (0-65535)'));
/** The longest delay Node's setTimeout and setInterval honour. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** How long POST /orders waits for an order's workflow start and early-return update (src/client/orders-service.ts). */
export const ORDER_START_TIMEOUT_MS = 30_000;
const MIN_PRODUCTION_RESERVATION_GRACE_MS = ORDER_START_TIMEOUT_MS + 5_000;
const duration = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((text, ctx) => {
      try {
        return parseDuration(text);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
        return z.NEVER;
      }
    });
/** A comma-separated list of durations (ms); `none` is the empty list. */
const durations = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((text, ctx) => {
      try {
        return text.trim() === 'none' ? [] : text.split(',').map((part) => parseDuration(part));
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
        return z.NEVER;
      }
    });
const url = z.url({ protocol: /^https?$/, message: 'must be an http(s) URL' });

/** The development defaults of the two shared secrets: published in the README, so never accepted in production. */
export const DEV_SANDBOX_SECRET = 'sandbox-dev-secret';
export const DEV_ADMIN_TOKEN = 'dev-admin-token';
/** The development default of OUTBOX_WEBHOOK_SECRET (npm start's demo receiver): published, never accepted in production. */
export const DEV_OUTBOX_SECRET = 'outbox-dev-secret';
/**
 * Values of these secrets that have been published (README, docker-compose.yml examples, tests): refused in production.
 */
const PUBLISHED_SECRETS = new Set([
  DEV_SANDBOX_SECRET,
  DEV_ADMIN_TOKEN,
  DEV_OUTBOX_SECRET,
  'change-me-sandbox-secret',
  'change-me-admin-token',
  'test-sandbox-secret',
  'test-admin-token',
]);
/** Shortest secret production accepts (a random 32-character token carries about 190 bits). */
export const MIN_PRODUCTION_SECRET_LENGTH = 32;

/** Every environment variable the system reads, validated once at start-up. */
const EnvSchema = z.object({
  DATABASE_URL: z
    .string()
    .default('mysql://root@127.0.0.1:3306/payments')
    .refine(
      (v) => /^mysql2?:\/\/[^/]+\/[A-Za-z0-9_]+$/.test(v),
      'must look like mysql://user:pass@host:port/database (percent-encode any / @ ? # in the password)',
    ),
  TEMPORAL_ADDRESS: z
    .string()
    .regex(/^[^:\s]+:\d+$/, 'must be host:port')
    .default('127.0.0.1:7233'),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  /**
   * TLS to the Temporal frontend (a cluster behind TLS, Temporal Cloud); implied by the certificate or API key below.
   */
  TEMPORAL_TLS: z.enum(['true', 'false'], { message: 'must be true or false' }).optional(),
  /**
   * mTLS client certificate and key (PEM files), e.g. for a Temporal Cloud namespace with certificates; both or
   * neither.
   */
  TEMPORAL_TLS_CERT_PATH: z.string().min(1).optional(),
  TEMPORAL_TLS_KEY_PATH: z.string().min(1).optional(),
  /** CA bundle (PEM file) that signed the server's certificate, when it is not a public CA. */
  TEMPORAL_TLS_CA_PATH: z.string().min(1).optional(),
  /** Server name to verify instead of the address's host. */
  TEMPORAL_TLS_SERVER_NAME: z.string().min(1).optional(),
  /** API key (Temporal Cloud API-key authentication; sent as a bearer token over TLS). */
  TEMPORAL_API_KEY: z.string().min(1).optional(),
  TASK_QUEUE: z.string().min(1).default('order-payments'),
  /**
   * A prebuilt workflow bundle (bundleWorkflowCode with workflowInterceptorModules) so worker restarts skip bundling.
   */
  WORKFLOW_BUNDLE_PATH: z.string().min(1).optional(),
  /** Interface the servers bind to; 0.0.0.0 in containers. */
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: port.default(3000),
  SANDBOX_PORT: port.default(4000),
  /**
   * Node's convention: `production` turns on production mode (no sandbox provider unless enabled, no default secrets).
   */
  NODE_ENV: z.string().optional(),
  /** The sandbox (fake) provider: on in development, off in production unless set to true (a staging deployment). */
  SANDBOX_ENABLED: z.enum(['true', 'false'], { message: 'must be true or false' }).optional(),
  SANDBOX_SECRET: z.string().min(8, 'must be at least 8 characters').default(DEV_SANDBOX_SECRET),
  /**
   * Production only: accept providers' test money (a Stripe test-mode key, Alipay's sandbox gateway, an endpoint over
   * plain HTTP such as stripe-mock), loudly logged: a staging deployment. Refused without it.
   */
  PROVIDER_TEST_MODE: z.enum(['true', 'false'], { message: 'must be true or false' }).default('false'),
  SANDBOX_MERCHANT_ID: z.string().min(1).default('m_sandbox_001'),
  ADMIN_TOKEN: z.string().min(8, 'must be at least 8 characters').default(DEV_ADMIN_TOKEN),
  /**
   * The shop's backend (its session layer) vouching for a buyer: an order that spends a coupon or points must carry
   * `Authorization: Bearer <SHOP_API_TOKEN>`, since its `userId` names whose stored value is spent. Unset: such orders
   * are refused in production and accepted without it in development.
   */
  SHOP_API_TOKEN: z.string().min(8, 'must be at least 8 characters').optional(),
  /**
   * Named operators for review decisions, `name:token,name:token`: set, a decision (POST /orders/:id/review) needs one
   * of these tokens instead of ADMIN_TOKEN, and its `operator` is the token's name (a body naming someone else is
   * refused), so the timeline's "who decided" is who held the token, not what the caller typed. Unset: ADMIN_TOKEN, and
   * `operator` as sent.
   */
  OPERATOR_TOKENS: z.string().optional(),
  /**
   * The currency points are worth 1 minor unit of: an order redeems points only when it is priced in it (else 422
   * POINTS_CURRENCY_MISMATCH). Points are stored value: 10,000 points meant as 100.00 CNY must not take 100.00 USD
   * (or 10,000 JPY) off an order.
   */
  POINTS_CURRENCY: Currency.default(DEFAULT_POINTS_CURRENCY),
  PAYMENT_TIMEOUT: duration('15m'),
  QUERY_FIRST_DELAY: duration('30s'),
  QUERY_MAX_INTERVAL: duration('2m'),
  /** After PAID, the window in which the buyer may refund without review (交易冷静期); 0 disables it. */
  COOLING_OFF_PERIOD: duration('30m'),
  /** How often an order waiting for manual review records a reminder. */
  REVIEW_REMINDER_INTERVAL: duration('1h'),
  /** Extra time the provider keeps the payment open after our deadline, so that our close call decides. */
  PROVIDER_EXPIRY_MARGIN: duration('1m'),
  /** Sandbox redelivery schedule for unacknowledged notifications (a compressed WeChat schedule). */
  SANDBOX_NOTIFY_SCHEDULE: durations('0s,2s,4s,8s,15s,30s,1m,2m,5m,10m,30m,1h'),
  /**
   * A late payment's waits before querying again a trade the provider's query does not show yet (its query lagging the
   * notification it signed); empty (`none`) asks once.
   */
  LATE_PAYMENT_RECHECKS: durations(LATE_PAYMENT_RECHECK_DELAYS_MS.map((ms) => `${ms / 1000}s`).join(',')),
  /** How often the API retries inbox notifications that could not be signalled yet. */
  INBOX_RETRY_INTERVAL: duration('5s'),
  /**
   * How many inbox notifications the API routes to Temporal at once (the others wait their turn, in memory and in
   * MySQL).
   */
  INBOX_CONCURRENCY: z
    .string()
    .regex(/^\d{1,4}$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(1, 'must be at least 1'))
    .default(16),
  /**
   * Deadline of each Temporal call the API makes on a request or the inbox path (signal, update, query, start), so an
   * unreachable or black-holed Temporal fails the call in seconds instead of after the client's own long gRPC retries.
   */
  TEMPORAL_CALL_TIMEOUT: duration('5s'),
  /**
   * Deadline of an update the API waits on that runs activities (cancel, review decision, cooling-off refund,
   * escalation).
   */
  TEMPORAL_UPDATE_TIMEOUT: duration('15s'),
  /** Orders one API process sets up at once (reserved, workflow starting); more are shed with 429 and Retry-After. */
  ORDER_START_CONCURRENCY: z
    .string()
    .regex(/^\d{1,5}$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(1, 'must be at least 1'))
    .default(256),
  /**
   * Where the outbox relay delivers the outbox's messages (payment receipts, fulfilment hand-offs): an HTTPS endpoint of
   * the shop's own systems, signed with OUTBOX_WEBHOOK_SECRET. Unset: no relay runs; the messages stay in the outbox
   * table (payflow_outbox_backlog, alert PayflowOutboxStalled).
   */
  OUTBOX_WEBHOOK_URL: url.optional(),
  /** HMAC-SHA256 key of the relay's Payflow-Signature header; the receiver verifies with it. */
  OUTBOX_WEBHOOK_SECRET: z.string().min(8, 'must be at least 8 characters').default(DEV_OUTBOX_SECRET),
  /** How often the relay looks for messages to deliver when it found none. */
  OUTBOX_RELAY_INTERVAL: duration('1s'),
  /** How long a stock reservation made before its workflow's start may wait for that workflow before it is released. */
  RESERVATION_GRACE: duration('60s'),
  /** How often the API looks for such orphaned reservations. */
  RESERVATION_SWEEP_INTERVAL: duration('15s'),
  PUBLIC_BASE_URL: url.optional(),
  SANDBOX_URL: url.optional(),
  /** Base of the cashier URLs a buyer's browser opens (defaults to SANDBOX_URL). */
  SANDBOX_PUBLIC_URL: url.optional(),
  TEMPORAL_UI_URL: url.default('http://127.0.0.1:8233'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /**
   * json (default): one JSON object per line; pretty: pino-pretty's coloured lines, for development (a devDependency).
   */
  LOG_FORMAT: z.enum(['json', 'pretty'], { message: 'must be json or pretty' }).default('json'),
  /** OTLP/HTTP base URL of a collector (standard variable; traces go to <url>/v1/traces); unset = tracing off. */
  OTEL_EXPORTER_OTLP_ENDPOINT: url.optional(),
  /** Full OTLP/HTTP traces URL (standard variable; wins over OTEL_EXPORTER_OTLP_ENDPOINT). */
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: url.optional(),
  /** service.name of the spans (standard variable); default payflow-api for the API, payflow-worker for the worker. */
  OTEL_SERVICE_NAME: z
    .string()
    .regex(/^\S{1,255}$/, 'must be 1-255 characters without spaces')
    .optional(),
  /**
   * Workflows one worker keeps in memory (maxCachedWorkflows). Size it to the orders that will wake within a minute or
   * so (those being created and paid right now: about the order rate x 60 s), not to all open ones: an order past the
   * cache is replayed from its history when it next wakes (about 20 ms more for that task, bench --open), while a full
   * cache of idle workflows slows every new order. Measured with 10,000 orders open (bench --open, docs/benchmarks.md):
   * at 2,000 cached the new orders ran at 0.66 of the empty system's rate with twice its app CPU per order and the
   * process near 1.25 GB; at 500, at 0.89 to 1.14 of it (four runs, both phases on a quiet machine) under 0.6 GB.
   */
  WORKFLOW_CACHE_SIZE: z
    .string()
    .regex(/^\d{1,7}$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(10, 'must be at least 10'))
    .default(500),
  /**
   * The most workflow-task polls one worker keeps open, autoscaled from 1 up to this on the server's hints (the
   * SDK's poller autoscaling, Temporal server 1.28 or later). The SDK's own default is a fixed 10, of which only 2 poll
   * for new workflows (the rest wait on the worker's sticky queue): when a flash sale started 100 winners' workflows at
   * once, their first tasks waited up to 2 s for a poll, and the sale's last winner was answered at 4.2 to 4.7 s; with
   * autoscaling up to 40, at 2.1 to 2.6 s (bench --flash-sale, docs/benchmarks.md, "Measured a seventh time").
   */
  WORKFLOW_TASK_POLLERS: z
    .string()
    .regex(/^\d{1,4}$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(2, 'must be at least 2').max(1000, 'must be at most 1000'))
    .default(DEFAULT_WORKFLOW_TASK_POLLERS),
  /**
   * The API's /metrics on a listener of its own (on HOST), so that the port buyers reach does not serve it; 0 = on PORT
   * beside the API (development, tests).
   */
  METRICS_PORT: port.default(0),
  /** Worker's own Prometheus metrics (payflow_activity_*, payflow_orders_settled_total); 0 = not served. */
  WORKER_METRICS_PORT: port.default(9464),
  /** The Temporal SDK's Prometheus exporter in the worker (temporal_* metrics); 0 = not installed. */
  TEMPORAL_METRICS_PORT: port.default(9465),
  /**
   * Cron (5 fields, in each provider's bill time zone) of the daily reconciliation of yesterday's bills; `off` = no
   * schedule.
   */
  RECONCILIATION_SCHEDULE: z
    .string()
    .default('30 10 * * *')
    .superRefine((v, ctx) => {
      const problem = v === 'off' ? undefined : cronProblem(v);
      if (problem)
        ctx.addIssue({
          code: 'custom',
          message: `must be a 5-field cron expression such as "30 10 * * *", a shorthand such as @daily, or off (${problem})`,
        });
    }),
});

/** The fields of a 5-field cron: name, lowest and highest value, names accepted for values. */
const CRON_FIELDS: [name: string, min: number, max: number, names?: string[]][] = [
  ['minute', 0, 59],
  ['hour', 0, 23],
  ['day of month', 1, 31],
  ['month', 1, 12, ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC']],
  ['day of week', 0, 7, ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT']],
];

/**
 * What is wrong with a 5-field cron expression (`*`, values, ranges, steps and lists, month and weekday names), or
 * undefined. Checked at start-up: the Schedule is created in the background, and a value Temporal refuses there (a
 * minute of 61) left the service running without reconciliation, its one safety net for lost notifications.
 */
export function cronProblem(text: string): string | undefined {
  // Temporal's shorthands (robfig/cron's): @daily is "0 0 * * *", and so on.
  if (/^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$/.test(text.trim())) return undefined;
  const fields = text.trim().split(/\s+/);
  if (fields.length !== 5) return `${fields.length} fields`;
  for (const [i, field] of fields.entries()) {
    const [name, min, max, names] = CRON_FIELDS[i]!;
    const value = (v: string): number | undefined => {
      const byName = names?.indexOf(v.toUpperCase()) ?? -1;
      if (byName >= 0) return byName + (min === 1 ? 1 : 0);
      if (!/^\d{1,2}$/.test(v)) return undefined;
      const n = Number(v);
      return n >= min && n <= max ? n : undefined;
    };
    for (const item of field.split(',')) {
      const m = /^(\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:\/(\d{1,2}))?$/.exec(item);
      if (!m) return `${name} "${item}" is not a value, a range, * or a step`;
      if (m[2] !== undefined && Number(m[2]) === 0) return `${name} step 0`;
      if (m[1] === '*') continue;
      const [from, to] = m[1]!.split('-');
      const a = value(from!);
      const b = to === undefined ? a : value(to);
      if (a === undefined || b === undefined) return `${name} "${item}" is outside ${min}-${max}`;
      if (a > b) return `${name} range "${item}" runs backwards`;
    }
  }
  return undefined;
}

/** Validated, typed configuration shared by the API, the worker, the sandbox and the tools. */
export interface Config {
  /**
   * NODE_ENV=production: the sandbox provider is off unless SANDBOX_ENABLED=true, and default or short secrets are
   * refused.
   */
  production: boolean;
  /** PROVIDER_TEST_MODE=true in production: providers' test money accepted (staging), warned at start-up. */
  providerTestMode: boolean;
  /**
   * Whether the sandbox (fake) provider is offered: development always, production only with SANDBOX_ENABLED=true
   * (staging).
   */
  sandboxEnabled: boolean;
  databaseUrl: string;
  temporalAddress: string;
  temporalNamespace: string;
  /**
   * TLS and API key for the Temporal connections; undefined = plain connection (dev server). See
   * temporalConnectionOptions.
   */
  temporalTls: TemporalTlsConfig | undefined;
  temporalApiKey: string | undefined;
  taskQueue: string;
  /** WORKFLOW_BUNDLE_PATH: the worker loads this prebuilt bundle instead of bundling src/workflows at start-up. */
  workflowBundlePath?: string;
  host: string;
  port: number;
  sandboxPort: number;
  sandboxSecret: string;
  sandboxMerchantId: string;
  sandboxNotifySchedule: number[];
  /** LATE_PAYMENT_RECHECKS: a late payment's waits before querying again a trade its provider does not show yet. */
  lateRecheckDelaysMs: number[];
  adminToken: string;
  /**
   * SHOP_API_TOKEN: the bearer token of the shop's backend, required on an order that spends a coupon or points.
   * Undefined: such orders are refused in production, accepted in development.
   */
  shopApiToken: string | undefined;
  /** OPERATOR_TOKENS: operator name by token; undefined when unset (review decisions take ADMIN_TOKEN). */
  operatorTokens: Map<string, string> | undefined;
  /** POINTS_CURRENCY: 1 point = 1 minor unit of this currency; orders in another currency cannot redeem points. */
  pointsCurrency: string;
  paymentTimeoutMs: number;
  queryFirstDelayMs: number;
  queryMaxIntervalMs: number;
  providerExpiryMarginMs: number;
  coolingOffMs: number;
  reviewReminderMs: number;
  inboxRetryIntervalMs: number;
  /** INBOX_CONCURRENCY: notifications routed at once by one API process. */
  inboxConcurrency: number;
  /** TEMPORAL_CALL_TIMEOUT: deadline of one Temporal call on a request or inbox path. */
  temporalCallTimeoutMs: number;
  /** TEMPORAL_UPDATE_TIMEOUT: deadline of an update that runs activities before it answers. */
  temporalUpdateTimeoutMs: number;
  /** ORDER_START_CONCURRENCY: orders set up at once per API process before shedding with 429. */
  orderStartConcurrency: number;
  /** RESERVATION_GRACE: age after which a pre-start reservation with no running workflow is released. */
  reservationGraceMs: number;
  /** RESERVATION_SWEEP_INTERVAL: period of the orphaned-reservation sweep. */
  reservationSweepIntervalMs: number;
  /**
   * The outbox relay: where it delivers (OUTBOX_WEBHOOK_URL; undefined: no relay runs), its signing key
   * (OUTBOX_WEBHOOK_SECRET) and its idle interval (OUTBOX_RELAY_INTERVAL).
   */
  outbox: { webhookUrl?: string; secret: string; intervalMs: number };
  publicBaseUrl: string;
  sandboxUrl: string;
  sandboxPublicUrl: string;
  temporalUiUrl: string;
  logLevel: z.infer<typeof EnvSchema>['LOG_LEVEL'];
  /** LOG_FORMAT: json lines (default) or pretty (development). */
  logFormat: z.infer<typeof EnvSchema>['LOG_FORMAT'];
  /** OpenTelemetry tracing: off (no provider, no interceptors) while otlpTracesUrl is undefined. */
  tracing: {
    /**
     * Where spans are exported (OTLP/HTTP protobuf), from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
     * OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces.
     */
    otlpTracesUrl: string | undefined;
    /** OTEL_SERVICE_NAME; undefined = each part's own default (payflow-api, payflow-worker). */
    serviceName: string | undefined;
  };
  /** Workflows one worker keeps in its cache (WORKFLOW_CACHE_SIZE). */
  workflowCacheSize: number;
  /** The most workflow-task polls one worker keeps open, autoscaled (WORKFLOW_TASK_POLLERS). */
  workflowTaskPollers: number;
  /** Port of the worker's /metrics (0 = off). */
  workerMetricsPort: number;
  /** METRICS_PORT: the API's /metrics listener; 0 = served on PORT. */
  metricsPort: number;
  /** Port of the Temporal SDK's Prometheus exporter in the worker (0 = off). */
  temporalMetricsPort: number;
  /** Cron of the daily reconciliation Schedule, or undefined when RECONCILIATION_SCHEDULE=off. */
  reconciliationSchedule: string | undefined;
  /** Alipay, WeChat Pay and Stripe settings (src/providers/config.ts); a provider absent here is not offered. */
  providers: ProvidersConfig;
}

/** TLS settings of the Temporal connections (files already read, so a bad path fails at start-up). */
export interface TemporalTlsConfig {
  clientCertPair?: { crt: Buffer; key: Buffer };
  serverRootCACertificate?: Buffer;
  serverNameOverride?: string;
}

/** Thrown for a bad environment; its message is one line naming the variable. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * A variable's value as an error message may show it: secrets hidden, and everything before the last '@' of a URL
 * (after its scheme) blanked. Not a URL parser: the value is shown because it is malformed, and a password may hold
 * '/', ':' or '@' that a parser would take for the end of it, so the user info is taken to run up to the last '@'.
 */
function shown(name: string, value: string): string {
  if (/SECRET|TOKEN|PASSWORD|KEY/.test(name)) return '(hidden)';
  const at = value.lastIndexOf('@');
  if (at < 0) return JSON.stringify(value);
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(value)?.[0] ?? '';
  return JSON.stringify(`${scheme}***${value.slice(at)}`);
}

/** Reads and validates configuration from an environment map (process.env by default). */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = EnvSchema.safeParse(cleaned);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const name = String(issue.path[0] ?? 'environment');
    const message = issue.message.replace(/\s*[\r\n]+\s*/g, ' ');
    throw new ConfigError(`Invalid configuration: ${name}=${shown(name, env[name] ?? '')}: ${message}`);
  }
  const e = parsed.data;
  if (e.QUERY_FIRST_DELAY <= 0) throw new ConfigError('Invalid configuration: QUERY_FIRST_DELAY must be more than 0');
  if (e.QUERY_MAX_INTERVAL < e.QUERY_FIRST_DELAY)
    throw new ConfigError('Invalid configuration: QUERY_MAX_INTERVAL must not be shorter than QUERY_FIRST_DELAY');
  if (e.PORT !== 0 && e.PORT === e.SANDBOX_PORT)
    throw new ConfigError('Invalid configuration: SANDBOX_PORT must differ from PORT');
  if (e.METRICS_PORT !== 0 && e.METRICS_PORT === e.PORT)
    throw new ConfigError('Invalid configuration: METRICS_PORT must differ from PORT (0 serves /metrics on PORT)');
  if (e.REVIEW_REMINDER_INTERVAL <= 0)
    throw new ConfigError('Invalid configuration: REVIEW_REMINDER_INTERVAL must be more than 0');
  if (e.OUTBOX_RELAY_INTERVAL <= 0)
    throw new ConfigError('Invalid configuration: OUTBOX_RELAY_INTERVAL must be more than 0');
  if (e.RESERVATION_SWEEP_INTERVAL <= 0)
    throw new ConfigError('Invalid configuration: RESERVATION_SWEEP_INTERVAL must be more than 0');
  if (e.TEMPORAL_UPDATE_TIMEOUT <= 0)
    throw new ConfigError('Invalid configuration: TEMPORAL_UPDATE_TIMEOUT must be more than 0');
  if (e.TEMPORAL_CALL_TIMEOUT <= 0)
    throw new ConfigError('Invalid configuration: TEMPORAL_CALL_TIMEOUT must be more than 0');
  if (e.PAYMENT_TIMEOUT <= 0) throw new ConfigError('Invalid configuration: PAYMENT_TIMEOUT must be more than 0');
  if (e.INBOX_RETRY_INTERVAL <= 0)
    throw new ConfigError('Invalid configuration: INBOX_RETRY_INTERVAL must be more than 0');
  // Node's timers take at most 2^31-1 ms (about 24.8 days); a longer one fires after 1 ms, every time: a sweep or a
  // deadline set that long would run back to back.
  for (const name of [
    'INBOX_RETRY_INTERVAL',
    'RESERVATION_SWEEP_INTERVAL',
    'OUTBOX_RELAY_INTERVAL',
    'TEMPORAL_CALL_TIMEOUT',
    'TEMPORAL_UPDATE_TIMEOUT',
  ] as const) {
    if (e[name] > MAX_TIMER_MS) throw new ConfigError(`Invalid configuration: ${name} must be at most 24d`);
  }
  const production = e.NODE_ENV === 'production';
  // A reservation made before its workflow's start is released by the sweeper after RESERVATION_GRACE when no workflow
  // holds it; the start may take up to its own deadline, so a shorter grace fails orders whose start was only slow.
  if (production && e.RESERVATION_GRACE < MIN_PRODUCTION_RESERVATION_GRACE_MS)
    throw new ConfigError(
      `Invalid configuration: RESERVATION_GRACE must be at least ${MIN_PRODUCTION_RESERVATION_GRACE_MS / 1000}s in production (an order's workflow start may take ${ORDER_START_TIMEOUT_MS / 1000}s)`,
    );
  const sandboxEnabled = e.SANDBOX_ENABLED === undefined ? !production : e.SANDBOX_ENABLED === 'true';
  if (production) {
    requireProductionSecret('ADMIN_TOKEN', cleaned.ADMIN_TOKEN);
    if (e.SHOP_API_TOKEN !== undefined) requireProductionSecret('SHOP_API_TOKEN', e.SHOP_API_TOKEN);
    if (e.SHOP_API_TOKEN !== undefined && e.SHOP_API_TOKEN === e.ADMIN_TOKEN)
      throw new ConfigError(
        'Invalid configuration: SHOP_API_TOKEN must differ from ADMIN_TOKEN (the shop backend is not an operator)',
      );
    if (sandboxEnabled) requireProductionSecret('SANDBOX_SECRET', cleaned.SANDBOX_SECRET);
    if (e.OUTBOX_WEBHOOK_URL) {
      requireProductionSecret('OUTBOX_WEBHOOK_SECRET', cleaned.OUTBOX_WEBHOOK_SECRET);
      // Receipts name buyers and amounts; the signature protects them from change, not from being read.
      if (!/^https:\/\//i.test(e.OUTBOX_WEBHOOK_URL))
        throw new ConfigError(
          'Invalid configuration: OUTBOX_WEBHOOK_URL must be an https URL in production (the messages name buyers and amounts)',
        );
    }
  }
  const operatorTokens = parseOperatorTokens(e.OPERATOR_TOKENS, production, [
    e.ADMIN_TOKEN,
    e.SHOP_API_TOKEN,
    e.SANDBOX_SECRET,
    e.OUTBOX_WEBHOOK_SECRET,
  ]);
  const temporalTls = temporalTlsFromEnv(e);
  let providers: ProvidersConfig;
  try {
    providers = providersFromEnv(cleaned);
  } catch (err) {
    if (!(err instanceof ProviderEnvError)) throw err;
    const value = cleaned[err.variable];
    throw new ConfigError(
      `Invalid configuration: ${err.variable}${value === undefined ? '' : `=${shown(err.variable, value)}:`} ${err.reason}`,
    );
  }
  const publicBaseUrl = (e.PUBLIC_BASE_URL ?? `http://127.0.0.1:${e.PORT}`).replace(/\/$/, '');
  const providerTestMode = production && e.PROVIDER_TEST_MODE === 'true';
  if (production) {
    if (!providers.alipay && !providers.wechat && !providers.stripe && !sandboxEnabled)
      throw new ConfigError(
        'Invalid configuration: no payment provider is configured: set the ALIPAY_*, WECHAT_* or STRIPE_* variables (or SANDBOX_ENABLED=true on staging); every order would be refused PROVIDER_NOT_AVAILABLE',
      );
    const problem = testMoneyProblem(providers);
    if (problem && !providerTestMode)
      throw new ConfigError(
        `Invalid configuration: ${problem.variable} ${problem.reason} (set PROVIDER_TEST_MODE=true only on a staging deployment)`,
      );
    requireReachableNotifyUrl(providers, e.PUBLIC_BASE_URL, publicBaseUrl);
  }
  return {
    production,
    sandboxEnabled,
    providerTestMode,
    databaseUrl: e.DATABASE_URL,
    temporalAddress: e.TEMPORAL_ADDRESS,
    temporalNamespace: e.TEMPORAL_NAMESPACE,
    temporalTls,
    temporalApiKey: e.TEMPORAL_API_KEY,
    taskQueue: e.TASK_QUEUE,
    workflowBundlePath: e.WORKFLOW_BUNDLE_PATH,
    host: e.HOST,
    port: e.PORT,
    sandboxPort: e.SANDBOX_PORT,
    sandboxSecret: e.SANDBOX_SECRET,
    sandboxMerchantId: e.SANDBOX_MERCHANT_ID,
    sandboxNotifySchedule: e.SANDBOX_NOTIFY_SCHEDULE,
    lateRecheckDelaysMs: e.LATE_PAYMENT_RECHECKS,
    adminToken: e.ADMIN_TOKEN,
    shopApiToken: e.SHOP_API_TOKEN,
    operatorTokens,
    pointsCurrency: e.POINTS_CURRENCY,
    paymentTimeoutMs: e.PAYMENT_TIMEOUT,
    queryFirstDelayMs: e.QUERY_FIRST_DELAY,
    queryMaxIntervalMs: e.QUERY_MAX_INTERVAL,
    providerExpiryMarginMs: e.PROVIDER_EXPIRY_MARGIN,
    coolingOffMs: e.COOLING_OFF_PERIOD,
    reviewReminderMs: e.REVIEW_REMINDER_INTERVAL,
    inboxRetryIntervalMs: e.INBOX_RETRY_INTERVAL,
    inboxConcurrency: e.INBOX_CONCURRENCY,
    temporalCallTimeoutMs: e.TEMPORAL_CALL_TIMEOUT,
    temporalUpdateTimeoutMs: e.TEMPORAL_UPDATE_TIMEOUT,
    orderStartConcurrency: e.ORDER_START_CONCURRENCY,
    reservationGraceMs: e.RESERVATION_GRACE,
    reservationSweepIntervalMs: e.RESERVATION_SWEEP_INTERVAL,
    outbox: {
      ...(e.OUTBOX_WEBHOOK_URL ? { webhookUrl: e.OUTBOX_WEBHOOK_URL } : {}),
      secret: e.OUTBOX_WEBHOOK_SECRET,
      intervalMs: e.OUTBOX_RELAY_INTERVAL,
    },
    publicBaseUrl,
    sandboxUrl: (e.SANDBOX_URL ?? `http://127.0.0.1:${e.SANDBOX_PORT}`).replace(/\/$/, ''),
    sandboxPublicUrl: (e.SANDBOX_PUBLIC_URL ?? e.SANDBOX_URL ?? `http://127.0.0.1:${e.SANDBOX_PORT}`).replace(
      /\/$/,
      '',
    ),
    temporalUiUrl: e.TEMPORAL_UI_URL.replace(/\/$/, ''),
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
    tracing: {
      otlpTracesUrl:
        e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ??
        (e.OTEL_EXPORTER_OTLP_ENDPOINT ? `${e.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, '')}/v1/traces` : undefined),
      serviceName: e.OTEL_SERVICE_NAME,
    },
    workflowCacheSize: e.WORKFLOW_CACHE_SIZE,
    workflowTaskPollers: e.WORKFLOW_TASK_POLLERS,
    workerMetricsPort: e.WORKER_METRICS_PORT,
    metricsPort: e.METRICS_PORT,
    temporalMetricsPort: e.TEMPORAL_METRICS_PORT,
    reconciliationSchedule: e.RECONCILIATION_SCHEDULE === 'off' ? undefined : e.RECONCILIATION_SCHEDULE.trim(),
    providers,
  };
}

/**
 * Alipay and WeChat Pay post their notifications to the URL given with each payment (PUBLIC_BASE_URL/callbacks/...):
 * in production it must be one they can reach, over HTTPS (WeChat Pay refuses any other), on a public name. A loopback,
 * private or single-label host (the compose file's `http://api:3000`, say) would lose every notification silently: the
 * providers retry for about a day and give up, and a payment made after the order's last query is found only by the
 * next reconciliation, the order closed and its stock sold meanwhile. (Stripe's endpoint is set in its dashboard.)
 */
function requireReachableNotifyUrl(providers: ProvidersConfig, given: string | undefined, url: string): void {
  const notifying = (['alipay', 'wechat'] as const).filter((p) => providers[p]);
  if (notifying.length === 0) return;
  const fix = `set PUBLIC_BASE_URL to the public HTTPS address of this API that ${notifying.join(' and ')} can reach (e.g. https://pay.example.com)`;
  if (given === undefined)
    throw new ConfigError(`Invalid configuration: PUBLIC_BASE_URL is not set, and production needs it: ${fix}`);
  const { protocol, hostname } = new URL(url);
  const host = hostname.replace(/^\[|\]$/g, '');
  const internal =
    (!host.includes('.') && !host.includes(':')) ||
    host === 'localhost' ||
    /^(127\.|10\.|192\.168\.|169\.254\.|0\.)/.test(host) ||
    /^172\.(1[6-9]|2\d|3[01])\./.test(host) ||
    /\.(local|internal|localhost)$/.test(host) ||
    host === '::1';
  if (protocol !== 'https:' || internal)
    throw new ConfigError(
      `Invalid configuration: PUBLIC_BASE_URL=${url} cannot receive ${notifying.join(' and ')} notifications (${protocol !== 'https:' ? 'not HTTPS' : 'not a public host'}): ${fix}`,
    );
}

/**
 * OPERATOR_TOKENS as a map of token to operator name. Entries `name:token`, separated by commas (a trailing one and
 * blanks around entries are ignored): a name of 1 to 64 letters, digits and `._@-`; a token of printable ASCII without
 * spaces (what an Authorization header can carry), at least 16 characters (32 in production, not a published default);
 * every name and token once; no token equal to another secret of the deployment (an operator token names one
 * person). Errors name an entry by its position, never by its text: a reversed entry (`token:name`) would otherwise
 * print the token.
 */
function parseOperatorTokens(
  value: string | undefined,
  production: boolean,
  otherSecrets: (string | undefined)[],
): Map<string, string> | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const bad = (entry: number, why: string) =>
    new ConfigError(
      `Invalid configuration: OPERATOR_TOKENS entry ${entry} ${why} (expected name:token,name:token; e.g. alice:$(openssl rand -hex 32))`,
    );
  const byToken = new Map<string, string>();
  const names = new Set<string>();
  const entries = value.split(',').map((e) => e.trim());
  if (entries[entries.length - 1] === '') entries.pop();
  entries.forEach((entry, i) => {
    const n = i + 1;
    const at = entry.indexOf(':');
    const name = entry.slice(0, at).trim();
    const token = entry.slice(at + 1).trim();
    if (at < 1 || !/^[A-Za-z0-9._@-]{1,64}$/.test(name))
      throw bad(n, 'has no valid operator name before its colon (1-64 letters, digits or ._@-)');
    if (!/^[\x21-\x7e]+$/.test(token))
      throw bad(n, 'has a token with spaces, line breaks or characters an Authorization header cannot carry');
    const minimum = production ? MIN_PRODUCTION_SECRET_LENGTH : 16;
    if (token.length < minimum) throw bad(n, `has a token shorter than ${minimum} characters`);
    if (production && PUBLISHED_SECRETS.has(token)) throw bad(n, 'has a published default token');
    if (names.has(name)) throw bad(n, 'names an operator named before');
    if (byToken.has(token)) throw bad(n, "has another operator's token");
    if (otherSecrets.includes(token)) throw bad(n, 'has a token equal to another secret of the deployment');
    names.add(name);
    byToken.set(token, name);
  });
  return byToken.size ? byToken : undefined;
}

/** In production a secret must be set, must not be a published default, and must be long enough to resist guessing. */
function requireProductionSecret(
  name: 'ADMIN_TOKEN' | 'SANDBOX_SECRET' | 'SHOP_API_TOKEN' | 'OUTBOX_WEBHOOK_SECRET',
  value: string | undefined,
): void {
  const fix = `set ${name} to a random secret of at least ${MIN_PRODUCTION_SECRET_LENGTH} characters (e.g. openssl rand -hex 32)`;
  if (value === undefined)
    throw new ConfigError(
      `Invalid configuration: ${name} is not set, and production (NODE_ENV=production) has no default: ${fix}`,
    );
  if (PUBLISHED_SECRETS.has(value))
    throw new ConfigError(
      `Invalid configuration: ${name} is a published default, refused in production (NODE_ENV=production): ${fix}`,
    );
  if (value.length < MIN_PRODUCTION_SECRET_LENGTH)
    throw new ConfigError(`Invalid configuration: ${name} is too short for production (NODE_ENV=production): ${fix}`);
}

/** loadConfig for process entry points: prints the one-line error and exits 1 instead of a stack trace. */
export function loadConfigOrExit(env: Record<string, string | undefined> = process.env): Config {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }
}

/** Reads a PEM file named by a variable; a missing or unreadable file is a one-line ConfigError naming it. */
function pemFile(variable: string, path: string): Buffer {
  try {
    const content = readFileSync(path);
    if (!content.includes('-----BEGIN')) throw new Error('not a PEM file');
    return content;
  } catch (err) {
    throw new ConfigError(
      `Invalid configuration: ${variable}=${JSON.stringify(path)}: cannot read it (${(err as Error).message})`,
    );
  }
}

function temporalTlsFromEnv(e: z.infer<typeof EnvSchema>): TemporalTlsConfig | undefined {
  if (Boolean(e.TEMPORAL_TLS_CERT_PATH) !== Boolean(e.TEMPORAL_TLS_KEY_PATH)) {
    throw new ConfigError(
      'Invalid configuration: TEMPORAL_TLS_CERT_PATH and TEMPORAL_TLS_KEY_PATH must be set together (mTLS client certificate and key)',
    );
  }
  const wanted =
    e.TEMPORAL_TLS === 'true' ||
    Boolean(e.TEMPORAL_TLS_CERT_PATH || e.TEMPORAL_TLS_CA_PATH || e.TEMPORAL_TLS_SERVER_NAME || e.TEMPORAL_API_KEY);
  if (!wanted) return undefined;
  if (e.TEMPORAL_TLS === 'false') {
    throw new ConfigError(
      'Invalid configuration: TEMPORAL_TLS=false contradicts the TEMPORAL_TLS_* / TEMPORAL_API_KEY settings, which need TLS',
    );
  }
  return {
    ...(e.TEMPORAL_TLS_CERT_PATH && e.TEMPORAL_TLS_KEY_PATH
      ? {
          clientCertPair: {
            crt: pemFile('TEMPORAL_TLS_CERT_PATH', e.TEMPORAL_TLS_CERT_PATH),
            key: pemFile('TEMPORAL_TLS_KEY_PATH', e.TEMPORAL_TLS_KEY_PATH),
          },
        }
      : {}),
    ...(e.TEMPORAL_TLS_CA_PATH
      ? { serverRootCACertificate: pemFile('TEMPORAL_TLS_CA_PATH', e.TEMPORAL_TLS_CA_PATH) }
      : {}),
    ...(e.TEMPORAL_TLS_SERVER_NAME ? { serverNameOverride: e.TEMPORAL_TLS_SERVER_NAME } : {}),
  };
}

/** Where and how to reach Temporal: the address, and TLS / API key when configured. */
export type TemporalEndpoint = Pick<Config, 'temporalAddress'> &
  Partial<Pick<Config, 'temporalTls' | 'temporalApiKey'>>;

/**
 * Options for every connection to Temporal (the API's client, the worker's native connection, the tools):
 * the address, and TLS plus the API key when configured. One place, so no connection forgets them.
 */
export function temporalConnectionOptions(config: TemporalEndpoint): {
  address: string;
  tls?: TemporalTlsConfig | true;
  apiKey?: string;
} {
  const tls = config.temporalTls && Object.keys(config.temporalTls).length === 0 ? true : config.temporalTls;
  return {
    address: config.temporalAddress,
    ...(tls ? { tls } : {}),
    ...(config.temporalApiKey ? { apiKey: config.temporalApiKey } : {}),
  };
}

/**
 * The start-up warning of a production process that accepts providers' test money (PROVIDER_TEST_MODE=true, staging).
 * Undefined otherwise.
 */
export function providerTestModeWarning(config: Pick<Config, 'providerTestMode' | 'providers'>): string | undefined {
  if (!config.providerTestMode) return undefined;
  const problem = testMoneyProblem(config.providers);
  return (
    `PROVIDER TEST MODE IN PRODUCTION MODE (PROVIDER_TEST_MODE=true)${problem ? `: ${problem.variable} ${problem.reason}` : ''}. ` +
    'Acceptable only on a staging deployment; unset PROVIDER_TEST_MODE anywhere real goods ship.'
  );
}

/**
 * The start-up warning of a production process that offers the sandbox provider (a staging deployment): anyone who
 * can reach the sandbox cashier can pay its orders for free, so it must never go unnoticed. Undefined otherwise.
 */
export function sandboxInProductionWarning(config: Pick<Config, 'production' | 'sandboxEnabled'>): string | undefined {
  if (!config.production || !config.sandboxEnabled) return undefined;
  return (
    'SANDBOX PROVIDER ENABLED IN PRODUCTION MODE (SANDBOX_ENABLED=true): orders with provider "sandbox" are paid by the ' +
    'fake cashier without real money. Acceptable only on a staging deployment; unset SANDBOX_ENABLED anywhere real goods ship.'
  );
}

/**
 * The API's warning when production serves /metrics on the port buyers reach (METRICS_PORT unset): business figures
 * for anyone, and each scrape reads MySQL and Temporal. docker-compose.yml sets METRICS_PORT.
 */
export function publicMetricsWarning(config: Config): string | undefined {
  if (!config.production || config.metricsPort !== 0) return undefined;
  return `/metrics IS SERVED ON THE PUBLIC PORT ${config.port} in production mode (business figures, unauthenticated): set METRICS_PORT to serve it on a port of its own`;
}

/**
 * Every start-up warning of this configuration (the sandbox or providers' test money in production; for the API
 * process, `/metrics` on the public port), to be logged.
 */
export function startupWarnings(
  config: Config,
  options: { api?: boolean } = {},
): { fields: Record<string, unknown>; message: string }[] {
  const sandbox = sandboxInProductionWarning(config);
  const testMoney = providerTestModeWarning(config);
  const metrics = options.api ? publicMetricsWarning(config) : undefined;
  return [
    ...(sandbox ? [{ fields: { sandboxEnabled: true, production: true }, message: sandbox }] : []),
    ...(testMoney ? [{ fields: { providerTestMode: true, production: true }, message: testMoney }] : []),
    ...(metrics ? [{ fields: { metricsPort: 0, production: true }, message: metrics }] : []),
  ];
}
