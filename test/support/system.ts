/**
 * Starts the whole system in the test process against the real services: the sandbox provider and the API
 * on free ports, a worker on a task queue of its own, all sharing the test database and dev server.
 */
import { randomBytes } from 'node:crypto';
import { type Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import type { Knex } from 'knex';
import type { DestinationStream } from 'pino';
import type { Api } from '../../src/client/app';
import { type Config, loadConfig } from '../../src/config';
import type { FaultSettings } from '../../src/contracts/sandbox';
import { type Logger, type TemporalLogger, createLogger } from '../../src/observability/logger';
import type { Tracing, TracingOverrides } from '../../src/observability/tracing';
import { freePort, jsonCall } from '../../tools/processes';
import { startStack } from '../../tools/stack';
import { installTemporalRuntime } from '../../src/workers/telemetry';
import type { WorkflowSource } from '../../src/workers/worker';
import { systemEnv, testBundlePath } from './env';

/** Quiet by default: only errors, on stderr (the API logs nothing). */
const quietLogger = createLogger({ level: 'error', destination: process.stderr });
/** The Temporal runtime of this test file's process: installed once; each system points it at its own logger. */
let runtimeLogger: TemporalLogger | undefined;

/** Options of startSystem. */
export interface StartSystemOptions {
  /** Temporal address for the API's client when it differs from the worker's (tests put a proxy there). */
  clientTemporalAddress?: string;
  /**
   * Where the system's JSON log lines go (API, worker, activities, workflows; at LOG_LEVEL). Without it the
   * API logs nothing and the Temporal runtime only errors, on stderr.
   */
  logDestination?: DestinationStream;
  /** Tracing overrides, e.g. an in-memory exporter (tracing is on whenever an exporter is given). */
  tracing?: TracingOverrides;
  /** Workflow code; default the bundle global setup built (no OTel workflow interceptors). */
  workflows?: WorkflowSource;
  /** Reconciliation's clock for the API and the worker (whether a bill day has ended); default Date.now. */
  now?: () => number;
}

/** A running system for one test file. */
export interface TestSystem {
  config: Config;
  db: Knex;
  client: Client;
  api: Api;
  apiUrl: string;
  sandboxUrl: string;
  worker: Worker;
  /** The logger the API and the Temporal runtime write to. */
  logger: Logger;
  /** The API's and the worker's tracing (undefined when off). */
  tracing: { api?: Tracing; worker?: Tracing };
  /** Calls the API (JSON in and out). */
  http(
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; body: any }>;
  /** Calls the sandbox provider. */
  sandbox(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  setFaults(faults: FaultSettings): Promise<void>;
  restartWorker(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts sandbox + API + worker with test-friendly timings; `env` overrides any variable. */
export async function startSystem(
  env: Record<string, string> = {},
  options: StartSystemOptions = {},
): Promise<TestSystem> {
  runtimeLogger ??= installTemporalRuntime({ logger: quietLogger });
  // Ports chosen before the servers start: the notify URL must name the API's port before the API starts.
  const [apiPort, sandboxPort] = [await freePort(), await freePort()];
  const config = loadConfig(
    systemEnv({ apiPort, sandboxPort, taskQueue: `test-${randomBytes(6).toString('hex')}` }, env),
  );
  const logger = options.logDestination
    ? createLogger({ level: config.logLevel, destination: options.logDestination })
    : quietLogger;
  runtimeLogger.target = logger;
  const stack = await startStack({
    config,
    logger: options.logDestination ? logger : false,
    clientTemporalAddress: options.clientTemporalAddress,
    workflows: options.workflows ?? { workflowBundle: { codePath: testBundlePath() } },
    tracing: options.tracing,
    // The client's connection stays open to the end of the process (jest exits it): see StackOptions.closeClientOnStop.
    closeClientOnStop: false,
    now: options.now,
  });
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const sandboxUrl = config.sandboxUrl;
  return {
    config,
    db: stack.db,
    client: stack.client,
    api: stack.api,
    apiUrl,
    sandboxUrl,
    logger,
    tracing: stack.tracing,
    get worker() {
      return stack.worker;
    },
    restartWorker: () => stack.restartWorker(),
    http: (method, path, body, headers) => jsonCall(apiUrl, method, path, body, headers),
    sandbox: (method, path, body) => jsonCall(sandboxUrl, method, path, body),
    async setFaults(faults) {
      const r = await jsonCall(sandboxUrl, 'PUT', '/_control/faults', faults);
      if (r.status !== 200) throw new Error(`setting faults failed: ${r.status} ${JSON.stringify(r.body)}`);
    },
    stop: () => stack.stop(),
  };
}

/**
 * Polls `fn` until it returns a truthy value or the timeout passes; returns the last value. The default bound is
 * generous (the dev server is shared and CI's machine loaded) yet below jest's 60 s, so a timeout says what it waited
 * for.
 */
export async function waitFor<T>(
  fn: () => Promise<T>,
  { timeoutMs = 45_000, intervalMs = 200, what = 'condition' } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last as NonNullable<T>;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
}

/** Creates a product with a unique SKU through the admin API. */
export async function createProduct(
  sys: TestSystem,
  { price = 1999, stock = 10, currency = 'CNY', buckets = undefined as number | undefined } = {},
): Promise<string> {
  const sku = `sku-${randomBytes(5).toString('hex')}`;
  const r = await sys.http(
    'PUT',
    `/admin/products/${sku}`,
    { name: `Test ${sku}`, price, currency, stock, ...(buckets ? { buckets } : {}) },
    { authorization: `Bearer ${sys.config.adminToken}` },
  );
  if (r.status !== 201) throw new Error(`creating product failed: ${r.status} ${JSON.stringify(r.body)}`);
  return sku;
}

/** Places an order for `quantity` of one SKU through the API, expects 201, and returns the answer's body. */
export async function placeOrder(sys: TestSystem, sku: string, quantity = 1): Promise<any> {
  const r = await sys.http('POST', '/orders', { userId: userId(), items: [{ sku, quantity }] });
  expect(r.status).toBe(201);
  return r.body;
}

/** Reads a product's stock through the admin API. */
export async function stockOf(
  sys: TestSystem,
  sku: string,
): Promise<{ available: number; reserved: number; sold: number }> {
  const r = await sys.http('GET', `/admin/products/${sku}`, undefined, {
    authorization: `Bearer ${sys.config.adminToken}`,
  });
  return r.body.stock;
}

/** Waits until the order reaches one of the statuses and returns it. */
export async function waitForStatus(
  sys: TestSystem,
  orderId: string,
  statuses: string[],
  timeoutMs = 45_000,
): Promise<any> {
  return waitFor(
    async () => {
      const r = await sys.http('GET', `/orders/${orderId}`);
      return statuses.includes(r.body?.status) ? r.body : undefined;
    },
    { timeoutMs, what: `order ${orderId} to become ${statuses.join(' or ')}` },
  );
}

/** A fresh user id. */
export function userId(): string {
  return `user-${randomBytes(4).toString('hex')}`;
}
