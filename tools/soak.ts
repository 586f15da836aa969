/**
 * `npm run soak -- --orders N --concurrency C [--faults default|ci|none] [--duration 10m] [--apis N] [--database NAME]`
 *
 * Drives N orders through the public API and the sandbox with buyers who pay, pay late, pay the wrong
 * amount, cancel or never pay, while faults are injected: sandbox notification and API faults, workers
 * SIGKILLed and restarted, MySQL connections killed server-side, a dev server restart, forged and replayed
 * notifications. When the run has drained it checks every invariant (src/ops/invariants.ts) and prints a
 * report; the JSON goes to reports/soak-<time>.json. Exit code 0 only when every invariant holds and every
 * order converged.
 */
import { type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { Knex } from 'knex';
import { FAILURES } from '../src/contracts/failures';
import type { FaultSettings } from '../src/contracts/sandbox';
import { createDb } from '../src/db/knex';
import { type InvariantResult, checkInvariants, formatInvariants } from '../src/ops/invariants';
import { sandboxBillRows } from '../src/ops/sandbox-bills';
import { signSandboxPayload } from '../src/providers/sandbox-signature';
import { parseDuration } from '../src/shared/duration';
import { loadConfig } from '../src/config';
import { ChildService, freePort, portCpuMeter } from './processes';
import { databaseOf, prepareToolDatabase, withDatabase } from './tool-database';
import { ensureTemporalCli, isListening, startDevServer } from './temporal-cli';
import { workflowInterceptorModules } from '../src/workers/workflow-modules';
import { connectTemporal } from '../src/temporal/connection';
import { OrderStatusKey } from '../src/contracts/search-attributes';
import type { Client } from '@temporalio/client';

/** What faults a run injects, and when. */
export interface FaultProfile {
  name: string;
  sandbox: FaultSettings;
  workers: number;
  workerKillEveryMs?: number;
  mysqlKillEveryMs?: number;
  /** Restart the dev server once when this fraction of orders has been placed. */
  temporalRestartAt?: number;
  forgedEveryMs?: number;
}

/** Fault profiles: the issue's default, a small one for CI, and none. */
export const PROFILES: Record<string, FaultProfile> = {
  default: {
    name: 'default',
    sandbox: {
      dropNotifications: 0.3,
      duplicateNotifications: 0.2,
      reorderNotifications: 0.1,
      apiErrorRate: 0.05,
      acceptPaymentAfterClose: true,
      queryLagMs: 500,
    },
    workers: 2,
    workerKillEveryMs: 30_000,
    mysqlKillEveryMs: 60_000,
    temporalRestartAt: 0.5,
    forgedEveryMs: 2_000,
  },
  ci: {
    name: 'ci',
    sandbox: {
      dropNotifications: 0.3,
      duplicateNotifications: 0.2,
      reorderNotifications: 0.1,
      apiErrorRate: 0.05,
      notificationDelayMs: 200,
      acceptPaymentAfterClose: true,
      // The query API behind the notifications: late payments are re-queried (LATE_PAYMENT_RECHECKS below).
      queryLagMs: 500,
    },
    workers: 2,
    workerKillEveryMs: 20_000,
    mysqlKillEveryMs: 15_000,
    temporalRestartAt: 0.5,
    forgedEveryMs: 1_000,
  },
  none: { name: 'none', sandbox: {}, workers: 1 },
};

/** Buyer behaviours and their share of orders. */
const BEHAVIOURS = [
  ['pay', 0.58],
  ['payLate', 0.08],
  ['wrongAmount', 0.04],
  ['cancel', 0.1],
  ['neverPay', 0.14],
  ['payAfterDeadline', 0.03],
  ['scarceSku', 0.03],
] as const;
type Behaviour = (typeof BEHAVIOURS)[number][0];

/** Options of a soak run. */
export interface SoakOptions {
  orders: number;
  concurrency: number;
  profile: FaultProfile;
  /** Stop placing new orders after this long (the run still drains). */
  durationMs?: number;
  paymentTimeoutMs: number;
  /**
   * The run's MySQL database: DATABASE_URL's server and credentials (the app's configuration) with this name, or
   * DATABASE_URL as it is when omitted. Created and marked as the soak's when missing; a database the soak did not
   * create is never dropped (tools/tool-database.ts).
   */
  databaseName?: string;
  /** A Temporal server someone else runs (the cluster tests): its address, namespace and how to restart it. */
  temporal?: SoakTemporal;
  /** API processes the buyers spread over (default 1). */
  apis?: number;
  /** Ports of the API processes (one per API) and the sandbox; free ports when omitted. */
  ports?: { apis: number[]; sandbox: number };
  log: (line: string) => void;
  progress?: (line: string) => void;
}

/** A Temporal server the soak does not start itself. */
export interface SoakTemporal {
  address: string;
  namespace: string;
  /** What the report calls it. */
  label: string;
  /** Stops and starts the server (the profile's Temporal restart); absent: the restart fault is skipped. */
  restart?: () => Promise<void>;
}

/** The run's report. */
export interface SoakReport {
  profile: string;
  orders: number;
  placed: number;
  /** Attempts answered 409 OUT_OF_STOCK before any order existed (admission: no order, no workflow). */
  refusedOutOfStock: number;
  concurrency: number;
  runSeconds: number;
  statuses: Record<string, number>;
  behaviours: Record<string, number>;
  convergenceMs: { p50: number; p95: number; p99: number; max: number };
  converged: number;
  faults: Record<string, number>;
  errors: Record<string, number>;
  invariants: InvariantResult[];
  /**
   * Orders whose final status is not what their buyer's action, as the API and the sandbox answered it, must lead to
   * (a paid order PAID, a cancelled one CANCELLED, an unpaid one EXPIRED, a wrong amount in review, ...), one line each;
   * and buyer actions answered in a way a buyer should never be (a cancel refused, a payment refused before the
   * deadline).
   */
  unexpectedOutcomes: string[];
  /** Workflows still running (not parked in review) and notifications still being redelivered when settling ended. */
  unsettledAtEnd: { workflows: number; notifications: number };
  /** Which Temporal server and database the run used. */
  temporal: string;
  database: string;
  /** CPU (ms) of the Temporal server process(es) during the run, when the server runs on this machine. */
  temporalCpuMs: number | null;
  passed: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A placed order, its buyer's behaviour, and what that buyer's action was answered. */
interface BuyerOutcome {
  orderId: string;
  behaviour: Behaviour;
  /** `answeredAt`: when its answer came back (epoch ms), after any retries. */
  action?: { what: 'pay' | 'cancel'; status: number; body: unknown; answeredAt?: number };
}

/**
 * The final statuses a buyer's action may lead to. A payment the sandbox took (2xx) within seconds of the order is
 * PAID (a wrong amount: in review); one made late in the window, or after the deadline, PAID when it landed before our
 * close of the trade, REFUNDED after it (the sandbox takes it after the close: late money is given back). An order never
 * paid expires; a cancel the API accepted is CANCELLED. A payment or a cancel refused where it should not be expects
 * nothing: it is reported as it is.
 */
function expectedStatuses(o: BuyerOutcome, deadline?: number): string[] {
  const ok = o.action !== undefined && o.action.status >= 200 && o.action.status < 300;
  // A prompt payment that was answered only after the order's deadline (its create retried through a Temporal
  // restart, the order's timer running from the first attempt; the pay itself retried) raced the close as
  // payAfterDeadline does: judged as that.
  // Refused only as a closed trade (the sandbox's TRADE_CLOSED): any other refusal stays a failure.
  const refusedClosed = (o.action?.body as { code?: string } | undefined)?.code === 'TRADE_CLOSED';
  const pastDeadline =
    o.action?.what === 'pay' &&
    (ok || refusedClosed) &&
    o.action.answeredAt !== undefined &&
    deadline !== undefined &&
    o.action.answeredAt >= deadline;
  switch (pastDeadline && o.behaviour !== 'wrongAmount' ? 'payAfterDeadline' : o.behaviour) {
    case 'neverPay':
      return ['EXPIRED'];
    case 'cancel':
      return ok ? ['CANCELLED'] : [];
    case 'pay':
    case 'scarceSku':
      return ok ? ['PAID'] : [];
    case 'wrongAmount':
      return ok ? ['NEEDS_REVIEW'] : [];
    case 'payLate':
      return ok ? ['PAID', 'REFUNDED'] : ['EXPIRED'];
    case 'payAfterDeadline':
      // The deadline's timer starts the close; a payment that lands before the close itself (slowed by the faults)
      // paid an open trade, and the close then finds it paid: PAID is right then, REFUNDED after.
      return ok ? ['REFUNDED', 'PAID'] : ['EXPIRED'];
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function pick(): Behaviour {
  let r = Math.random();
  for (const [name, share] of BEHAVIOURS) {
    if (r < share) return name;
    r -= share;
  }
  return 'pay';
}

/**
 * How long the drain waits after the last order left AWAITING_PAYMENT: the provider-side expiry margin
 * (10 s), the sandbox's redelivery schedule (60 s in all) and a minute for refunds under load.
 */
const SETTLE_BOUND_MS = 130_000;

/** What is still in motion: running workflows of this run (review excepted) and notifications in redelivery. */
async function unsettled(
  temporal: Client,
  taskQueue: string,
  sandbox: string,
): Promise<{ workflows: number; notifications: number }> {
  let workflows = 0;
  for await (const wf of temporal.workflow.list({
    query: `TaskQueue = '${taskQueue}' AND ExecutionStatus = 'Running'`,
  })) {
    const inReview = wf.typedSearchAttributes.get(OrderStatusKey) === 'NEEDS_REVIEW';
    if (!inReview) workflows++;
  }
  const { body } = await httpJson(`${sandbox}/_control/notifications`);
  const notifications = (body.notifications as { acknowledged: boolean; dropped: boolean; gaveUp: boolean }[]).filter(
    (n) => !n.acknowledged && !n.dropped && !n.gaveUp,
  ).length;
  return { workflows, notifications };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- loosely typed JSON from our own API
async function httpJson(url: string, init: RequestInit = {}): Promise<{ status: number; body: any }> {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(45_000) });
  const text = await response.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    /* keep text */
  }
  return { status: response.status, body };
}

/** Retries an HTTP call through transient faults (5xx, resets, timeouts), as a real client would. */
async function withRetry<T extends { status: number }>(
  what: string,
  errors: Record<string, number>,
  fn: () => Promise<T>,
  attempts = 12,
): Promise<T> {
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    try {
      const r = await fn();
      if (r.status < 500) return r;
      errors[`${what} ${r.status}`] = (errors[`${what} ${r.status}`] ?? 0) + 1;
      last = new Error(`${what} answered ${r.status}`);
    } catch (err) {
      errors[`${what} network`] = (errors[`${what} network`] ?? 0) + 1;
      last = err;
    }
    await sleep(Math.min(500 * 2 ** i, 5000));
  }
  throw last;
}

/** Runs one soak and returns its report. */
export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const { log, profile } = options;
  const started = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'payflow-soak-'));
  // MySQL and Temporal as the app is configured (DATABASE_URL, TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE).
  const config = loadConfig();
  const databaseUrl = options.databaseName
    ? withDatabase(config.databaseUrl, options.databaseName)
    : config.databaseUrl;
  const databaseName = databaseOf(databaseUrl);
  const faults: Record<string, number> = {};
  const errors: Record<string, number> = {};
  const count = (bag: Record<string, number>, key: string) => (bag[key] = (bag[key] ?? 0) + 1);

  await prepareToolDatabase(databaseUrl, 'soak', { legacyNames: ['payflow_soak'], log });

  // Temporal: the server handed in; else a dev server of our own (file persistence) when the profile restarts it,
  // else the configured one.
  let temporalAddress = options.temporal?.address ?? config.temporalAddress;
  let namespace = options.temporal?.namespace ?? config.temporalNamespace;
  let temporalLabel = options.temporal?.label ?? `the server at ${temporalAddress}`;
  let devServer: ChildProcess | undefined;
  const dbFile = join(dir, 'temporal.db');
  const startOwnServer = async () =>
    startDevServer(
      ensureTemporalCli(log),
      { address: temporalAddress, namespace, headless: true, dbFile, logLevel: 'error' },
      'ignore',
    );
  if (!options.temporal && (profile.temporalRestartAt !== undefined || !(await isListening(temporalAddress)))) {
    temporalAddress = `127.0.0.1:${await freePort()}`;
    namespace = 'default';
    temporalLabel = `a dev server of its own on ${temporalAddress}`;
    log(`temporal: starting a dev server of its own on ${temporalAddress} (history in ${dbFile})`);
    devServer = await startOwnServer();
  } else {
    log(`temporal: using ${temporalLabel}, namespace ${namespace}`);
  }
  const restartable = devServer !== undefined || options.temporal?.restart !== undefined;
  const temporalPort = Number(temporalAddress.split(':')[1]);
  const temporalCpu = /^(127\.|localhost)/.test(temporalAddress) ? portCpuMeter(temporalPort) : undefined;

  log('bundling workflow code once for every worker (re)start');
  const bundlePath = join(dir, 'workflow-bundle.js');
  const { code } = await bundleWorkflowCode({
    workflowsPath: require.resolve('../src/workflows'),
    // The workers trace when the environment names an OTLP endpoint; their bundle must match.
    workflowInterceptorModules: workflowInterceptorModules({
      tracing: Boolean(process.env.OTEL_EXPORTER_OTLP_ENDPOINT || process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
    }),
    logger: { trace() {}, debug() {}, info() {}, warn() {}, error: console.error, log() {} } as never,
  });
  writeFileSync(bundlePath, code);

  const apiCount = options.ports?.apis.length ?? options.apis ?? 1;
  const apiPorts = options.ports?.apis ?? (await Promise.all(Array.from({ length: apiCount }, () => freePort())));
  const sandboxPort = options.ports?.sandbox ?? (await freePort());
  const secret = `soak-${randomBytes(8).toString('hex')}`;
  const adminToken = `soak-admin-${randomBytes(8).toString('hex')}`;
  const env: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    TEMPORAL_ADDRESS: temporalAddress,
    TEMPORAL_NAMESPACE: namespace,
    TASK_QUEUE: `soak-${randomBytes(4).toString('hex')}`,
    SANDBOX_PORT: String(sandboxPort),
    SANDBOX_SECRET: secret,
    SANDBOX_NOTIFY_SCHEDULE: '0s,1s,2s,4s,8s,15s,30s',
    ADMIN_TOKEN: adminToken,
    PAYMENT_TIMEOUT: `${options.paymentTimeoutMs}ms`,
    QUERY_FIRST_DELAY: '3s',
    QUERY_MAX_INTERVAL: '10s',
    PROVIDER_EXPIRY_MARGIN: '10s',
    INBOX_RETRY_INTERVAL: '1s',
    COOLING_OFF_PERIOD: '5s',
    LATE_PAYMENT_RECHECKS: '1s,2s,4s,8s',
    LOG_LEVEL: 'warn',
    // A throwaway copy: no daily reconciliation Schedule left behind; several workers on one host: no fixed metrics
    // ports.
    RECONCILIATION_SCHEDULE: 'off',
    WORKER_METRICS_PORT: '0',
    TEMPORAL_METRICS_PORT: '0',
    WORKFLOW_BUNDLE_PATH: bundlePath,
  };
  const apiUrls = apiPorts.map((port) => `http://127.0.0.1:${port}`);
  const api = apiUrls[0]!;
  const sandbox = `http://127.0.0.1:${sandboxPort}`;
  // Each API its own port and public base URL (the provider's notifications go back to the API that created the order).
  const children = [
    new ChildService('sandbox', resolve(__dirname, '../src/sandbox-provider/main.ts'), env, join(dir, 'sandbox.log')),
    ...apiPorts.map(
      (port, i) =>
        new ChildService(
          `api-${i + 1}`,
          resolve(__dirname, '../src/client/main.ts'),
          { ...env, PORT: String(port), PUBLIC_BASE_URL: apiUrls[i]! },
          join(dir, `api-${i + 1}.log`),
        ),
    ),
  ];
  const workers = Array.from(
    { length: profile.workers },
    (_, i) =>
      new ChildService(
        `worker-${i + 1}`,
        resolve(__dirname, '../src/workers/main.ts'),
        env,
        join(dir, `worker-${i + 1}.log`),
      ),
  );
  for (const c of [...children, ...workers]) c.start();
  log(`system: API ${apiUrls.join(', ')}, sandbox ${sandbox}, ${workers.length} worker(s); logs in ${dir}`);
  for (const url of apiUrls)
    for (let i = 0; i < 120 && (await httpJson(`${url}/healthz`).catch(() => ({ status: 0 }))).status !== 200; i++)
      await sleep(500);

  const adminHeaders = { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' };
  const skus = ['soak-tea', 'soak-mug', 'soak-pen'];
  for (const [i, sku] of skus.entries()) {
    await withRetry('admin', errors, () =>
      httpJson(`${api}/admin/products/${sku}`, {
        method: 'PUT',
        headers: adminHeaders,
        body: JSON.stringify({ name: sku, price: 990 + i * 1000, stock: options.orders * 3 }),
      }),
    );
  }
  await withRetry('admin', errors, () =>
    httpJson(`${api}/admin/products/soak-scarce`, {
      method: 'PUT',
      headers: adminHeaders,
      body: JSON.stringify({ name: 'scarce', price: 50_000, stock: 3 }),
    }),
  );
  await withRetry('faults', errors, () =>
    httpJson(`${sandbox}/_control/faults`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(profile.sandbox),
    }),
  );
  for (const key of Object.keys(profile.sandbox)) count(faults, `sandbox ${key}`);

  // Fault injectors.
  const timers: NodeJS.Timeout[] = [];
  let killDb: Knex | undefined;
  if (profile.workerKillEveryMs) {
    timers.push(
      setInterval(() => {
        const victim = workers[Math.floor(Math.random() * workers.length)]!;
        victim.kill('SIGKILL');
        count(faults, 'worker SIGKILL');
        setTimeout(() => victim.start(), 500 + Math.random() * 2000);
      }, profile.workerKillEveryMs),
    );
  }
  if (profile.mysqlKillEveryMs) {
    killDb = createDb(withDatabase(databaseUrl, 'information_schema'), { poolMax: 1 });
    const db = killDb;
    timers.push(
      setInterval(() => {
        void (async () => {
          const [rows] = (await db.raw(
            'SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()',
            [databaseName],
          )) as [{ ID: number }[]];
          for (const { ID } of rows) {
            // Counted only when the KILL was carried out (a connection gone meanwhile is no fault injected).
            const killed = await db.raw(`KILL ${Number(ID)}`).then(
              () => true,
              () => false,
            );
            if (killed) count(faults, 'mysql KILL connection');
          }
        })().catch((err: unknown) => count(errors, `mysql kill: ${(err as Error).message}`));
      }, profile.mysqlKillEveryMs),
    );
  }
  if (profile.forgedEveryMs) {
    timers.push(
      setInterval(() => {
        void (async () => {
          const body = JSON.stringify({
            id: `evt_forged_${randomBytes(6).toString('hex')}`,
            type: 'payment.succeeded',
            data: {
              outTradeNo: 'ord_forged',
              tradeNo: 'SBXFORGED',
              amount: 1,
              currency: 'CNY',
              merchantId: 'm_sandbox_001',
              paidAt: new Date().toISOString(),
            },
          });
          const now = Math.floor(Date.now() / 1000);
          const forged = await httpJson(`${api}/callbacks/sandbox`, {
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              'sandbox-signature': signSandboxPayload('wrong-secret', body, now),
            },
            body,
          });
          // Counted as injected only when refused as it must be (401); anything else is an error the test reads.
          if (forged.status === 401) count(faults, 'forged notification');
          else count(errors, `forged notification answered ${forged.status}`);
          const stale = await httpJson(`${api}/callbacks/sandbox`, {
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              'sandbox-signature': signSandboxPayload(secret, body, now - 3600),
            },
            body,
          });
          if (stale.status >= 400 && stale.status < 500) count(faults, 'stale replayed notification');
          else count(errors, `stale notification answered ${stale.status}`);
          // Replay a genuine notification that was already acknowledged: it must change nothing.
          const list = (await httpJson(`${sandbox}/_control/notifications`)).body?.notifications as
            { id: string; acknowledged: boolean }[] | undefined;
          const acked = (list ?? []).filter((n) => n.acknowledged);
          const replay = acked[Math.floor(Math.random() * acked.length)];
          if (replay) {
            const redelivered = await httpJson(`${sandbox}/_control/notifications/${replay.id}/redeliver`, {
              method: 'POST',
            });
            if (redelivered.status >= 200 && redelivered.status < 300) count(faults, 'genuine notification replayed');
          }
        })().catch(() => undefined);
      }, profile.forgedEveryMs),
    );
  }

  // Buyers.
  const behaviours: Record<string, number> = {};
  const orderIds: string[] = [];
  /** Each placed order's buyer behaviour and what its action (pay, cancel) was answered. */
  const outcomes: BuyerOutcome[] = [];
  let next = 0;
  let placed = 0;
  let refusedOutOfStock = 0;
  let done = 0;
  let restarted = false;
  let restarting: Promise<void> | undefined;
  const stopPlacingAt = options.durationMs ? started + options.durationMs : Infinity;
  const progress = setInterval(
    () =>
      options.progress?.(
        `placed ${placed}/${options.orders}, buyers done ${done}, faults ${Object.values(faults).reduce((a, b) => a + b, 0)}`,
      ),
    1000,
  );

  async function buyer(i: number): Promise<void> {
    const behaviour = pick();
    count(behaviours, behaviour);
    const sku = behaviour === 'scarceSku' ? 'soak-scarce' : skus[i % skus.length]!;
    // Orders spread over the APIs; a cancel goes to another API than the one that created the order.
    const via = apiUrls[i % apiUrls.length]!;
    const other = apiUrls[(i + 1) % apiUrls.length]!;
    const created = await withRetry('POST /orders', errors, () =>
      httpJson(`${via}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': `soak-${i}` },
        body: JSON.stringify({ userId: `soak-user-${i}`, items: [{ sku, quantity: 1 + (i % 2) }] }),
      }),
    );
    placed++;
    if (created.status === 409 && created.body?.error === FAILURES.OUT_OF_STOCK.api.code && !created.body?.orderId)
      refusedOutOfStock++;
    if (created.status !== 201 && created.status !== 200) {
      count(errors, `POST /orders ${created.status} ${created.body?.error ?? ''}`.trim());
      return;
    }
    const orderId = created.body.orderId as string;
    orderIds.push(orderId);
    const outcome: BuyerOutcome = { orderId, behaviour };
    outcomes.push(outcome);
    const pay = async (amount?: number) => {
      const r = await withRetry('pay', errors, () =>
        httpJson(`${sandbox}/v1/payments/${orderId}/pay`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(amount ? { amount } : {}),
        }),
      );
      outcome.action = { what: 'pay', status: r.status, body: r.body, answeredAt: Date.now() };
      return r;
    };
    const T = options.paymentTimeoutMs;
    switch (behaviour) {
      case 'pay':
      case 'scarceSku':
        await sleep(Math.random() * 3000);
        await pay();
        break;
      case 'payLate':
        await sleep(T * (0.6 + Math.random() * 0.3));
        await pay();
        break;
      case 'wrongAmount':
        await sleep(Math.random() * 3000);
        await pay(Math.max(1, created.body.amount - 1));
        break;
      case 'cancel':
        await sleep(Math.random() * 3000);
        {
          const r = await withRetry('cancel', errors, () =>
            httpJson(`${other}/orders/${orderId}/cancel`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: '{}',
            }),
          );
          outcome.action = { what: 'cancel', status: r.status, body: r.body };
        }
        break;
      case 'payAfterDeadline':
        await sleep(T + 2000 + Math.random() * 3000);
        await pay();
        break;
      case 'neverPay':
        break;
    }
  }

  async function client(): Promise<void> {
    while (next < options.orders && Date.now() < stopPlacingAt) {
      const i = next++;
      if (
        !restarted &&
        restartable &&
        profile.temporalRestartAt !== undefined &&
        i >= options.orders * profile.temporalRestartAt
      ) {
        restarted = true;
        restarting = restartTemporal().catch((err: unknown) => {
          count(errors, `temporal restart: ${(err as Error).message}`);
        });
      }
      await buyer(i).catch((err: unknown) => count(errors, `buyer: ${(err as Error).message}`));
      done++;
    }
  }

  async function restartTemporal(): Promise<void> {
    if (options.temporal?.restart) {
      log(`fault: restarting ${temporalLabel}`);
      await options.temporal.restart();
      count(faults, 'temporal server restart');
      log('fault: the Temporal server is back');
      return;
    }
    log('fault: stopping the Temporal dev server');
    const exited = new Promise((r) => devServer!.once('exit', r));
    devServer!.kill('SIGTERM');
    await exited;
    count(faults, 'temporal dev server restart');
    await sleep(3000);
    devServer = await startOwnServer();
    log('fault: Temporal dev server is back (same history file)');
  }

  await Promise.all(Array.from({ length: options.concurrency }, () => client()));
  await restarting;
  for (const t of timers) clearInterval(t);
  clearInterval(progress);
  log(`buyers finished (${placed} orders placed); stopping fault injection and draining`);

  // Drain: every order must reach a final or explicitly waiting state.
  const db = createDb(databaseUrl, { poolMax: 2 });
  const drainBound = options.paymentTimeoutMs + 60_000;
  const drainUntil = Date.now() + drainBound;
  for (;;) {
    const [{ n }] = (await db('orders').where('status', 'AWAITING_PAYMENT').count({ n: '*' })) as [{ n: number }];
    options.progress?.(`draining: ${n} order(s) still awaiting payment`);
    if (Number(n) === 0 || Date.now() > drainUntil) break;
    await sleep(1000);
  }
  // Then wait for the aftermath: notifications the sandbox is still redelivering, closed orders watching
  // for a late payment until the provider-side expiry, late-payment refunds, cooling-off periods. Only
  // orders parked in manual review stay open.
  const temporal = await connectTemporal({ temporalAddress, temporalNamespace: namespace });
  const settleUntil = Date.now() + SETTLE_BOUND_MS;
  let pending = { workflows: 0, notifications: 0 };
  for (;;) {
    pending = await unsettled(temporal, env.TASK_QUEUE!, sandbox);
    options.progress?.(
      `settling: ${pending.workflows} workflow(s) running, ${pending.notifications} notification(s) being redelivered`,
    );
    if ((pending.workflows === 0 && pending.notifications === 0) || Date.now() > settleUntil) break;
    await sleep(1000);
  }
  // On a server the soak does not own, nothing of the run stays running (orders parked in review wait forever).
  if (!devServer) {
    for await (const wf of temporal.workflow.list({
      query: `TaskQueue = '${env.TASK_QUEUE}' AND ExecutionStatus = 'Running'`,
    })) {
      await temporal.workflow
        .getHandle(wf.workflowId, wf.runId)
        .terminate('left running at the end of a soak run')
        .catch(() => undefined);
    }
  }
  await temporal.connection.close();

  const providerRows = await sandboxBillRows(sandbox, started);
  const invariants = await checkInvariants({ db, providerRows, convergenceBoundMs: 60_000 });
  const statuses = Object.fromEntries(
    ((await db('orders').groupBy('status').select('status').count({ n: '*' })) as { status: string; n: number }[]).map(
      (r) => [r.status, Number(r.n)],
    ),
  );
  const durations = (
    (await db('orders')
      .whereNot('status', 'AWAITING_PAYMENT')
      .select(db.raw('TIMESTAMPDIFF(MICROSECOND, created_at, updated_at) / 1000 AS ms'))) as { ms: number }[]
  )
    .map((r) => Number(r.ms))
    .sort((a, b) => a - b);
  const [{ total }] = (await db('orders').count({ total: '*' })) as [{ total: number }];
  const finals = new Map(
    (
      (await db('orders').whereIn('order_id', orderIds).select('order_id', 'status')) as {
        order_id: string;
        status: string;
      }[]
    ).map((r) => [r.order_id, r.status]),
  );
  const deadlines = new Map(
    (
      (await db('orders').whereIn('order_id', orderIds).whereNotNull('deadline').select('order_id', 'deadline')) as {
        order_id: string;
        deadline: Date | string;
      }[]
    ).map((r) => [r.order_id, new Date(r.deadline).getTime()]),
  );
  // Proof for every PAID order that its money was taken on an open trade: a payment the sandbox took after our close
  // is money for a closed order, which must be given back (payAfterDeadline accepts PAID only for one that landed
  // before the close; before, the soak took PAID on the workflow's word).
  const paidAfterClose = new Set<string>();
  for (const o of outcomes) {
    if (finals.get(o.orderId) !== 'PAID') continue;
    const { status, body } = await httpJson(`${sandbox}/_control/payments/${encodeURIComponent(o.orderId)}`);
    if (status === 200 && (body as { paidAfterClose?: boolean }).paidAfterClose) paidAfterClose.add(o.orderId);
  }
  const unexpectedOutcomes = outcomes.flatMap((o) => {
    const status = finals.get(o.orderId) ?? 'no order row';
    if (paidAfterClose.has(o.orderId))
      return [`${o.orderId} (${o.behaviour}): PAID, but the sandbox took its payment after our close of the trade`];
    const expected = expectedStatuses(o, deadlines.get(o.orderId));
    if (expected.includes(status)) return [];
    const error = (o.action?.body as { error?: string } | undefined)?.error;
    const action = o.action ? `${o.action.what} answered ${o.action.status}${error ? ` ${error}` : ''}` : 'no action';
    return [
      `${o.orderId} (${o.behaviour}, ${action}): ${status}, expected ${expected.join(' or ') || 'another answer'}`,
    ];
  });

  await db.destroy();
  await killDb?.destroy();
  for (const c of [...workers, ...children]) await c.stop();
  if (devServer && devServer.exitCode === null) devServer.kill('SIGTERM');
  const temporalCpuMs = temporalCpu?.stop() ?? null;

  const converged = durations.length;
  return {
    profile: profile.name,
    orders: options.orders,
    placed,
    refusedOutOfStock,
    concurrency: options.concurrency,
    runSeconds: Math.round((Date.now() - started) / 100) / 10,
    statuses,
    behaviours,
    convergenceMs: {
      p50: percentile(durations, 50),
      p95: percentile(durations, 95),
      p99: percentile(durations, 99),
      max: durations[durations.length - 1] ?? 0,
    },
    converged,
    faults,
    errors,
    invariants,
    unexpectedOutcomes,
    unsettledAtEnd: pending,
    temporal: temporalLabel,
    database: databaseName,
    temporalCpuMs,
    passed:
      invariants.every((r) => r.passed) &&
      converged === Number(total) &&
      unexpectedOutcomes.length === 0 &&
      pending.workflows === 0,
  };
}

/** Prints the report for a person. */
export function formatSoakReport(r: SoakReport): string {
  const lines = [
    `Soak (${r.profile}): ${r.placed}/${r.orders} orders, concurrency ${r.concurrency}, ${r.runSeconds}s`,
    `  final statuses: ${Object.entries(r.statuses)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    `  buyers: ${Object.entries(r.behaviours)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    `  refused before any order existed (409 OUT_OF_STOCK): ${r.refusedOutOfStock}`,
    `  converged: ${r.converged}/${r.placed - r.refusedOutOfStock}; creation -> final p50 ${Math.round(r.convergenceMs.p50)} ms, p95 ${Math.round(r.convergenceMs.p95)} ms, p99 ${Math.round(r.convergenceMs.p99)} ms, max ${Math.round(r.convergenceMs.max)} ms`,
    `  Temporal: ${r.temporal}${r.temporalCpuMs === null ? '' : `, server CPU ${(r.temporalCpuMs / 1000).toFixed(1)} s`}; MySQL database ${r.database}`,
    `  faults injected: ${
      Object.entries(r.faults)
        .map(([k, v]) => `${k} x${v}`)
        .join(', ') || 'none'
    }`,
    `  client-side errors (retried): ${
      Object.entries(r.errors)
        .map(([k, v]) => `${k} x${v}`)
        .join(', ') || 'none'
    }`,
    `  unsettled when settling ended: ${r.unsettledAtEnd.workflows} workflow(s), ${r.unsettledAtEnd.notifications} notification(s) being redelivered`,
    `  buyers who did not get what their action asks for: ${r.unexpectedOutcomes.length ? `\n    ${r.unexpectedOutcomes.join('\n    ')}` : 'none'}`,
    'Invariants:',
    formatInvariants(r.invariants)
      .split('\n')
      .map((l) => `  ${l}`)
      .join('\n'),
    r.passed ? 'RESULT: PASS' : 'RESULT: FAIL',
  ];
  return lines.join('\n');
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const profileName = arg('faults') ?? 'default';
  const profile = PROFILES[profileName];
  if (!profile) throw new Error(`unknown fault profile ${profileName}; use ${Object.keys(PROFILES).join(', ')}`);
  const orders = Number(arg('orders') ?? 300);
  const concurrency = Number(arg('concurrency') ?? 20);
  const apis = Number(arg('apis') ?? 1);
  if (!Number.isInteger(apis) || apis < 1 || apis > 8) throw new Error('--apis must be a whole number from 1 to 8');
  if (!Number.isInteger(orders) || orders < 1 || !Number.isInteger(concurrency) || concurrency < 1)
    throw new Error('--orders and --concurrency must be positive integers');
  const tty = process.stdout.isTTY;
  const report = await runSoak({
    orders,
    concurrency,
    profile,
    durationMs: arg('duration') ? parseDuration(arg('duration')!) : undefined,
    paymentTimeoutMs: parseDuration(arg('payment-timeout') ?? '20s'),
    // The database: --database NAME, else DATABASE_URL's own name when it is set, else payflow_soak; always on
    // DATABASE_URL's server. Ports: PORT (and the ones after it, one per API) and SANDBOX_PORT when set, else free
    // ones.
    databaseName: arg('database') ?? (process.env.DATABASE_URL ? undefined : 'payflow_soak'),
    apis,
    ports: process.env.PORT
      ? {
          apis: Array.from({ length: apis }, (_, i) => Number(process.env.PORT) + i),
          sandbox: Number(process.env.SANDBOX_PORT ?? 4000),
        }
      : undefined,
    log: (line) => console.log(`${tty ? '\r\x1b[K' : ''}[soak] ${line}`),
    progress: (line) => (tty ? process.stdout.write(`\r\x1b[K[soak] ${line}`) : undefined),
  });
  if (tty) process.stdout.write('\r\x1b[K');
  console.log(formatSoakReport(report));
  mkdirSync('reports', { recursive: true });
  const file = join('reports', `soak-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(report, null, 2));
  console.log(`JSON report: ${file}`);
  process.exit(report.passed ? 0 : 1);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(`[soak] ${(err as Error).stack ?? String(err)}`);
    process.exit(2);
  });
}
