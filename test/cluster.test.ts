/**
 * The production topology, for real: a self-hosted Temporal server 1.29.1 on PostgreSQL with the history shards of
 * docker/temporal.env and its Web UI, the namespace and search attributes set up by our tooling, two worker processes,
 * two API processes and the sandbox (tools/cluster-topology.ts, what `npm start -- --cluster` runs). No mocks.
 *
 * Its own resources, so that it can run beside the main CI pass: Temporal on CLUSTER_TEST_TEMPORAL_PORT (default
 * 7400, and the nine ports after it), PostgreSQL databases payflow_cluster_test_{temporal,visibility}, MySQL database
 * CLUSTER_TEST_DATABASE_URL (default payflow_cluster_test). Run with `npm run test:cluster`.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import type { Knex } from 'knex';
import { type Config, loadConfig } from '../src/config';
import { type OrderPaymentResult, orderWorkflowId } from '../src/contracts/order';
import { SEARCH_ATTRIBUTES } from '../src/contracts/search-attributes';
import { createDb } from '../src/db/knex';
import { checkInvariants, formatInvariants } from '../src/ops/invariants';
import { sandboxBillRows } from '../src/ops/sandbox-bills';
import { type Topology, startTopology } from '../tools/cluster-topology';
import { freePort, jsonCall } from '../tools/processes';
import { PROFILES, formatSoakReport, runSoak } from '../tools/soak';
import {
  dropTemporalDatabases,
  ensureClusterBinaries,
  postgresFromEnv,
  readServerSettings,
} from '../tools/temporal-cluster';
import { withDatabase } from '../tools/tool-database';

const TEMPORAL_PORT = Number(process.env.CLUSTER_TEST_TEMPORAL_PORT ?? 7400);
const DATABASE_URL = process.env.CLUSTER_TEST_DATABASE_URL ?? 'mysql://root@127.0.0.1:3306/payflow_cluster_test';
const PG_DATABASES = { temporal: 'payflow_cluster_test_temporal', visibility: 'payflow_cluster_test_visibility' };
const NAMESPACE = 'payflow-cluster-test';
const SHARDS = Number(readServerSettings().NUM_HISTORY_SHARDS);
const SOAK_ORDERS = Number(process.env.CLUSTER_SOAK_ORDERS ?? 200);
const ADMIN = { authorization: 'Bearer cluster-test-admin-token' };

let topology: Topology;
let config: Config;
let client: Client;
let db: Knex;
let dir: string;
const started = Date.now();

async function dropMysql(url: string): Promise<void> {
  const admin = createDb(withDatabase(url, 'information_schema'), { poolMax: 1 });
  try {
    await admin.raw(`DROP DATABASE IF EXISTS \`${new URL(url).pathname.slice(1)}\``);
  } finally {
    await admin.destroy();
  }
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 90_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn().catch(() => undefined);
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (logs in ${dir})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Creates an order through `api` (retrying 503/429 as a client does) and pays it at the sandbox. */
async function orderAndPay(api: string, sku: string, user: string, pay = true): Promise<string> {
  let created: { status: number; body: { orderId?: string } } | undefined;
  for (let attempt = 0; attempt < 20; attempt++) {
    created = await jsonCall(
      api,
      'POST',
      '/orders',
      { userId: user, items: [{ sku, quantity: 1 }] },
      { 'idempotency-key': `cluster-${user}` },
    );
    if (created.status !== 503 && created.status !== 429) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  expect(created!.status).toBe(201);
  const orderId = created!.body.orderId!;
  if (pay) expect((await jsonCall(topology.sandboxUrl, 'POST', `/v1/payments/${orderId}/pay`, {})).status).toBe(200);
  return orderId;
}

async function statuses(orderIds: string[]): Promise<Map<string, string>> {
  const rows = (await db('orders').whereIn('order_id', orderIds).select('order_id', 'status')) as {
    order_id: string;
    status: string;
  }[];
  return new Map(rows.map((r) => [r.order_id, r.status]));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'payflow-cluster-'));
  const postgres = postgresFromEnv();
  // The suite's own databases, fresh: PostgreSQL for Temporal, MySQL for the orders.
  dropTemporalDatabases(
    ensureClusterBinaries(() => undefined),
    { frontendPort: TEMPORAL_PORT, namespace: NAMESPACE, postgres, databases: PG_DATABASES, logDir: dir },
  );
  await dropMysql(DATABASE_URL);
  const [apiPort1, apiPort2, sandboxPort, uiPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const env: Record<string, string> = {
    DATABASE_URL,
    TEMPORAL_ADDRESS: `127.0.0.1:${TEMPORAL_PORT}`,
    TEMPORAL_NAMESPACE: NAMESPACE,
    TASK_QUEUE: 'cluster-test',
    PORT: String(apiPort1),
    SANDBOX_PORT: String(sandboxPort),
    SANDBOX_SECRET: 'cluster-test-sandbox-secret',
    SANDBOX_NOTIFY_SCHEDULE: '0ms,300ms,600ms,1200ms,2s,3s,5s',
    ADMIN_TOKEN: 'cluster-test-admin-token',
    PAYMENT_TIMEOUT: '2m',
    QUERY_FIRST_DELAY: '1s',
    QUERY_MAX_INTERVAL: '2s',
    PROVIDER_EXPIRY_MARGIN: '30s',
    INBOX_RETRY_INTERVAL: '500ms',
    COOLING_OFF_PERIOD: '0s',
    LOG_LEVEL: 'warn',
    RECONCILIATION_SCHEDULE: 'off',
    WORKER_METRICS_PORT: '0',
    TEMPORAL_METRICS_PORT: '0',
  };
  config = loadConfig(env);
  topology = await startTopology({
    config,
    workers: 2,
    apis: 2,
    apiPorts: [apiPort1, apiPort2],
    uiPort,
    postgres,
    databases: PG_DATABASES,
    dir,
    env,
    log: (line) => process.stdout.write(`[cluster] ${line}\n`),
  });
  // A connection of the test's own, closed only when the process ends (a call the SDK retries after a server restart
  // must not meet a closed channel).
  client = new Client({
    connection: await Connection.connect({ address: config.temporalAddress }),
    namespace: NAMESPACE,
  });
  db = createDb(DATABASE_URL, { poolMax: 4 });
  for (const sku of ['cl-tea', 'cl-mug']) {
    expect(
      (
        await jsonCall(
          topology.apis[0]!.url,
          'PUT',
          `/admin/products/${sku}`,
          { name: sku, price: 1290, stock: 1000 },
          ADMIN,
        )
      ).status,
    ).toBe(201);
  }
  process.stdout.write(
    `[cluster] topology up ${((Date.now() - started) / 1000).toFixed(1)}s after the suite started; logs in ${dir}\n`,
  );
}, 240_000);

afterAll(async () => {
  await topology?.stop();
  await db?.destroy();
  process.stdout.write(`[cluster] suite took ${((Date.now() - started) / 1000).toFixed(1)}s\n`);
}, 60_000);

test('the server runs the configured history shards on PostgreSQL, the namespace has every search attribute, and the Web UI serves it', async () => {
  const info = await client.workflowService.getClusterInfo({});
  expect(info.historyShardCount).toBe(SHARDS);
  expect(SHARDS).toBeGreaterThan(1);
  expect(info.serverVersion).toBe('1.29.1');
  expect(info.persistenceStore).toMatch(/postgres/);
  expect(info.visibilityStore).toMatch(/postgres/);
  const listed = await client.connection.operatorService.listSearchAttributes({ namespace: NAMESPACE });
  for (const { name } of SEARCH_ATTRIBUTES) expect(Object.keys(listed.customAttributes ?? {})).toContain(name);
  const ui = await fetch(`${topology.cluster.uiUrl}/api/v1/namespaces`);
  expect(ui.status).toBe(200);
  expect(
    ((await ui.json()) as { namespaces: { namespaceInfo: { name: string } }[] }).namespaces.map(
      (n) => n.namespaceInfo.name,
    ),
  ).toContain(NAMESPACE);
});

test('orders created through both APIs complete, each readable through the other API, and both workers take work', async () => {
  const [a, b] = topology.apis.map((api) => api.url) as [string, string];
  const orders = await Promise.all(
    Array.from({ length: 20 }, (_, i) => orderAndPay(i % 2 === 0 ? a : b, 'cl-tea', `both-${i}`)),
  );
  await until(
    '20 orders PAID',
    async () => [...(await statuses(orders)).values()].filter((s) => s === 'PAID').length === 20,
  );
  for (const [i, orderId] of orders.entries()) {
    const other = i % 2 === 0 ? b : a;
    const read = await jsonCall(other, 'GET', `/orders/${orderId}`);
    expect(read.status).toBe(200);
    expect(read.body.status).toBe('PAID');
    const result = (await client.workflow.getHandle(orderWorkflowId(orderId)).result()) as OrderPaymentResult;
    expect(result.status).toBe('PAID');
  }
  // Which worker process ran the workflow tasks: their identities are pid@host.
  const pids = new Set(topology.workers.map((w) => String(w.proc!.pid)));
  const seen = new Set<string>();
  for (const orderId of orders) {
    const history = await client.workflow.getHandle(orderWorkflowId(orderId)).fetchHistory();
    for (const event of history.events ?? []) {
      const identity =
        event.workflowTaskStartedEventAttributes?.identity ?? event.activityTaskStartedEventAttributes?.identity;
      if (identity) seen.add(identity.split('@')[0]!);
    }
  }
  expect([...seen].every((pid) => pids.has(pid))).toBe(true);
  expect(seen.size).toBe(2);
}, 120_000);

test('a worker SIGKILLed mid-flight and the Temporal server killed and restarted lose nothing', async () => {
  const [a, b] = topology.apis.map((api) => api.url) as [string, string];
  const orders = await Promise.all(
    Array.from({ length: 30 }, (_, i) => orderAndPay(i % 2 === 0 ? a : b, 'cl-mug', `crash-${i}`, false)),
  );
  // Payments go out, and while their notifications are being handled one worker and the server die together.
  await Promise.all(
    orders.map(async (orderId) =>
      expect((await jsonCall(topology.sandboxUrl, 'POST', `/v1/payments/${orderId}/pay`, {})).status).toBe(200),
    ),
  );
  const victim = topology.workers[0]!;
  victim.kill('SIGKILL');
  const crashed = topology.cluster.restartServer({ signal: 'SIGKILL', downMs: 3000 });
  const paidAtCrash = [...(await statuses(orders)).values()].filter((s) => s === 'PAID').length;
  await crashed;
  await victim.exited();
  topology.restartWorker(victim);
  // The crash landed while orders were still in flight (else this test would prove nothing).
  expect(paidAtCrash).toBeLessThan(orders.length);

  await until(
    '30 orders PAID after the crash',
    async () => [...(await statuses(orders)).values()].filter((s) => s === 'PAID').length === orders.length,
    150_000,
  );
  for (const orderId of orders) {
    const result = (await client.workflow.getHandle(orderWorkflowId(orderId)).result()) as OrderPaymentResult;
    expect(result.status).toBe('PAID');
  }
  // Visibility kept every workflow and its search attributes; the namespace kept its attributes.
  const listed = await until('visibility to list the 30 orders PAID', async () => {
    const { count } = await client.workflow.count(
      `TaskQueue = 'cluster-test' AND ExecutionStatus = 'Completed' AND OrderStatus = 'PAID'`,
    );
    return count >= orders.length + 20 ? count : undefined;
  });
  expect(listed).toBe(orders.length + 20);
  const attributes = await client.connection.operatorService.listSearchAttributes({ namespace: NAMESPACE });
  for (const { name } of SEARCH_ATTRIBUTES) expect(Object.keys(attributes.customAttributes ?? {})).toContain(name);
  expect((await client.workflowService.getClusterInfo({})).historyShardCount).toBe(SHARDS);

  const invariants = await checkInvariants({
    db,
    providerRows: await sandboxBillRows(topology.sandboxUrl, started),
    convergenceBoundMs: 60_000,
  });
  if (invariants.some((r) => !r.passed)) console.log(formatInvariants(invariants));
  expect(invariants.filter((r) => !r.passed)).toEqual([]);
  const stock = (await db('stock').where({ sku: 'cl-mug' }).first('available', 'reserved', 'sold')) as {
    available: number;
    reserved: number;
    sold: number;
  };
  expect(stock).toMatchObject({ available: 1000 - orders.length, reserved: 0, sold: orders.length });
}, 240_000);

test(`a ${SOAK_ORDERS}-order soak with worker kills, MySQL connection kills and a Temporal server restart passes every invariant`, async () => {
  const report = await runSoak({
    orders: SOAK_ORDERS,
    concurrency: 20,
    profile: PROFILES.ci!,
    paymentTimeoutMs: Number(process.env.CLUSTER_SOAK_PAYMENT_TIMEOUT_MS ?? 15_000),
    databaseName: `${new URL(DATABASE_URL).pathname.slice(1)}_soak`,
    apis: 2,
    temporal: {
      address: config.temporalAddress,
      namespace: NAMESPACE,
      label: `the cluster's server at ${config.temporalAddress}`,
      restart: () => topology.cluster.restartServer({ signal: 'SIGTERM', downMs: 2000 }),
    },
    log: (line) => process.stdout.write(`[soak] ${line}\n`),
  });
  console.log(formatSoakReport(report));
  for (const fault of ['worker SIGKILL', 'mysql KILL connection', 'temporal server restart', 'forged notification']) {
    expect(report.faults[fault] ?? 0).toBeGreaterThanOrEqual(1);
  }
  expect(report.placed).toBe(report.orders);
  expect(report.invariants.filter((r) => !r.passed)).toEqual([]);
  expect(report.converged).toBe(report.placed - report.refusedOutOfStock);
  expect(report.temporalCpuMs).not.toBeNull();
  expect(report.passed).toBe(true);
}, 600_000);
