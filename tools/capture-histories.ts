/**
 * `npm run histories:capture -- --label v2 [--only happy-path,expiry] [--out test/histories] [--own-server]`
 *
 * Captures real workflow histories for the replay test (test/replay.test.ts). Starts its own copy of the system
 * (sandbox provider, API and a worker running the CURRENT code in src/workflows, on free ports and a task queue of
 * its own, against the database HISTORIES_DATABASE_URL, default payflow_histories, created and migrated if missing;
 * the dev server on TEMPORAL_ADDRESS is reused, or one is started in memory on a free port, always with
 * `--own-server`, e.g. when other runs may stop the shared one), drives one real order through each
 * scenario below with second-scale timeouts, waits until every workflow has finished, fetches each history and
 * writes it as `<out>/<label>-<scenario>.json` in the JSON form `historyToJSON` produces (what
 * `Worker.runReplayHistories` and `historyFromJSON` load, the same as `temporal workflow show --output json`).
 *
 * Capture with the code that is deployed BEFORE changing a workflow, and again after the change; the replay test
 * replays every file against the new code (README, "Changing workflow code safely"). Exit code 0 only when every
 * scenario ended as intended, so the files are what their names say.
 */
import { type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { Runtime } from '@temporalio/worker';
import { orderIdForIdempotencyKey } from '../src/client/orders-service';
import { loadConfig } from '../src/config';
import { latePaymentWorkflowId, orderWorkflowId } from '../src/contracts/order';
import type { FaultSettings } from '../src/contracts/sandbox';
import { migrateLatest } from '../src/db/knex';
import { historyToJson } from './history-json';
import { freePort, jsonCall } from './processes';
import { type Stack, startStack } from './stack';
import { ensureTemporalCli, isListening, startDevServer } from './temporal-cli';

/** Timings of the captured system: every branch of the workflow is reached within seconds. */
const TIMINGS = {
  PAYMENT_TIMEOUT: '5s',
  QUERY_FIRST_DELAY: '2s',
  QUERY_MAX_INTERVAL: '2s',
  PROVIDER_EXPIRY_MARGIN: '3s',
  COOLING_OFF_PERIOD: '4s',
  REVIEW_REMINDER_INTERVAL: '2s',
  SANDBOX_NOTIFY_SCHEDULE: '0ms,300ms,600ms,1200ms,2s,3s,5s',
  INBOX_RETRY_INTERVAL: '500ms',
};

/** A captured workflow: the file name's scenario part and the workflow to fetch. */
interface Captured {
  scenario: string;
  workflowId: string;
}

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The running system plus the calls a buyer, an operator and the provider make. */
class Driver {
  constructor(
    readonly stack: Stack,
    private readonly apiUrl: string,
    private readonly sandboxUrl: string,
    private readonly log: (line: string) => void,
  ) {}

  private call(
    base: string,
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; body: Json }> {
    return jsonCall(base, method, path, body, headers);
  }

  api(method: string, path: string, body?: unknown, headers?: Record<string, string>) {
    return this.call(this.apiUrl, method, path, body, headers);
  }

  sandbox(method: string, path: string, body?: unknown) {
    return this.call(this.sandboxUrl, method, path, body);
  }

  admin() {
    return { authorization: `Bearer ${this.stack.config.adminToken}` };
  }

  async faults(settings: FaultSettings): Promise<void> {
    const r = await this.sandbox('PUT', '/_control/faults', settings);
    if (r.status !== 200) throw new Error(`setting sandbox faults failed: ${r.status} ${JSON.stringify(r.body)}`);
  }

  private products: Promise<unknown> = Promise.resolve();

  /** Creates a product with a unique SKU; one at a time (the catalog is set up, not under test). */
  product(price: number, stock = 5): Promise<string> {
    const created = this.products.then(async () => {
      const sku = `hist-${randomBytes(4).toString('hex')}`;
      const r = await this.api(
        'PUT',
        `/admin/products/${sku}`,
        { name: `History ${sku}`, price, currency: 'CNY', stock },
        this.admin(),
      );
      if (r.status !== 201) throw new Error(`creating product failed: ${r.status} ${JSON.stringify(r.body)}`);
      return sku;
    });
    this.products = created.catch(() => undefined);
    return created;
  }

  /** Places an order and returns the API's answer (201 expected unless `expect` says otherwise). */
  async order(body: Record<string, unknown>, expect = 201): Promise<Json> {
    const r = await this.api('POST', '/orders', { userId: `hist-user-${randomBytes(3).toString('hex')}`, ...body });
    if (r.status !== expect)
      throw new Error(`POST /orders answered ${r.status}, expected ${expect}: ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async pay(orderId: string, amount?: number): Promise<void> {
    const r = await this.sandbox('POST', `/v1/payments/${orderId}/pay`, amount === undefined ? {} : { amount });
    if (r.status !== 200) throw new Error(`paying ${orderId} failed: ${r.status} ${JSON.stringify(r.body)}`);
  }

  /** Waits until MySQL shows one of the statuses (and, when given, the reason). */
  async status(
    orderId: string,
    statuses: string[],
    { reason, timeoutMs = 30_000 }: { reason?: string; timeoutMs?: number } = {},
  ): Promise<Json> {
    const deadline = Date.now() + timeoutMs;
    let last: Json;
    while (Date.now() < deadline) {
      last = (await this.api('GET', `/orders/${orderId}`)).body;
      if (statuses.includes(last?.status)) {
        if (reason && last.statusReason !== reason)
          throw new Error(`order ${orderId} is ${last.status} for ${last.statusReason}, expected ${reason}`);
        return last;
      }
      await sleep(200);
    }
    throw new Error(
      `order ${orderId} did not become ${statuses.join(' or ')} within ${timeoutMs}ms (last ${last?.status})`,
    );
  }

  /** Waits for the workflow's result and checks it. */
  async finished(workflowId: string, expected: Record<string, unknown>): Promise<void> {
    const result = (await this.stack.client.workflow.getHandle(workflowId).result()) as Record<string, unknown>;
    for (const [k, v] of Object.entries(expected)) {
      if (result[k] !== v)
        throw new Error(`${workflowId} ended with ${JSON.stringify(result)}, expected ${k}=${JSON.stringify(v)}`);
    }
    this.log(`${workflowId} finished: ${JSON.stringify(result)}`);
  }

  /** Posts an order action, retrying while the workflow has not yet reached the stage that accepts it. */
  async action(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Json> {
    for (let attempt = 0; ; attempt++) {
      const r = await this.api('POST', path, body, headers);
      if (r.status === 200) return r.body;
      if (attempt >= 20) throw new Error(`POST ${path} answered ${r.status}: ${JSON.stringify(r.body)}`);
      await sleep(250);
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The scenarios; each drives one order (or one late payment) to its end and names what to capture. */
const SCENARIOS: Record<string, (d: Driver) => Promise<Captured[]>> = {
  /** Paid through the provider's callback; cooling-off window passes; handed to fulfilment. */
  async 'happy-path'(d) {
    const sku = await d.product(1999);
    const { orderId } = await d.order({ items: [{ sku, quantity: 1 }] });
    await d.pay(orderId);
    await d.status(orderId, ['PAID'], { reason: 'PAID_VIA_CALLBACK' });
    await d.finished(orderWorkflowId(orderId), { status: 'PAID' });
    return [{ scenario: 'happy-path', workflowId: orderWorkflowId(orderId) }];
  },

  /** Several SKUs, a coupon and points (every TCC participant), paid by callback. */
  async 'benefits-paid'(d) {
    const [a, b] = [await d.product(1999), await d.product(500)];
    const userId = `hist-user-${randomBytes(3).toString('hex')}`;
    const code = `HIST${randomBytes(3).toString('hex').toUpperCase()}`;
    const coupon = await d.api('PUT', `/admin/coupons/${code}`, { userId, discount: 300, currency: 'CNY' }, d.admin());
    if (coupon.status >= 300)
      throw new Error(`creating coupon failed: ${coupon.status} ${JSON.stringify(coupon.body)}`);
    const points = await d.api('PUT', `/admin/points/${userId}`, { balance: 1000 }, d.admin());
    if (points.status >= 300)
      throw new Error(`granting points failed: ${points.status} ${JSON.stringify(points.body)}`);
    const { orderId } = await d.order({
      userId,
      items: [
        { sku: a, quantity: 2 },
        { sku: b, quantity: 1 },
      ],
      couponCode: code,
      points: 200,
    });
    await d.pay(orderId);
    await d.status(orderId, ['PAID']);
    await d.finished(orderWorkflowId(orderId), { status: 'PAID' });
    return [{ scenario: 'benefits-paid', workflowId: orderWorkflowId(orderId) }];
  },

  /** Nobody pays: deadline, close at the provider, release, watch until the provider-side expiry, final query. */
  async expiry(d) {
    const sku = await d.product(1500);
    const { orderId } = await d.order({ items: [{ sku, quantity: 1 }] });
    await d.status(orderId, ['EXPIRED'], { reason: 'PAYMENT_TIMEOUT' });
    await d.finished(orderWorkflowId(orderId), { status: 'EXPIRED' });
    return [{ scenario: 'expiry', workflowId: orderWorkflowId(orderId) }];
  },

  /** The buyer cancels while the order waits for payment. */
  async cancelled(d) {
    const sku = await d.product(1500);
    const { orderId } = await d.order({ items: [{ sku, quantity: 1 }] });
    const r = await d.api('POST', `/orders/${orderId}/cancel`, { reason: 'changed my mind' });
    if (r.status !== 200 || r.body.status !== 'CANCELLED')
      throw new Error(`cancel answered ${r.status} ${JSON.stringify(r.body)}`);
    await d.finished(orderWorkflowId(orderId), { status: 'CANCELLED' });
    return [{ scenario: 'cancelled', workflowId: orderWorkflowId(orderId) }];
  },

  /**
   * Setup fails inside the workflow: the coupon was used up after the order was placed (a sold-out SKU no longer gets
   * a workflow at all: the API answers 409 OUT_OF_STOCK before any start). Everything is released; the order is FAILED.
   */
  async 'setup-failed'(d) {
    const sku = await d.product(1500);
    const userId = `hist-user-${randomBytes(3).toString('hex')}`;
    const code = `HIST${randomBytes(3).toString('hex').toUpperCase()}`;
    const coupon = await d.api(
      'PUT',
      `/admin/coupons/${code}`,
      { userId: `${userId}-other`, discount: 300, currency: 'CNY' },
      d.admin(),
    );
    if (coupon.status >= 300)
      throw new Error(`creating coupon failed: ${coupon.status} ${JSON.stringify(coupon.body)}`);
    // A refusal names no order (there is none to read); the workflow's id follows from the Idempotency-Key.
    const key = `hist-${randomBytes(4).toString('hex')}`;
    const r = await d.api(
      'POST',
      '/orders',
      { userId, items: [{ sku, quantity: 1 }], couponCode: code },
      { 'idempotency-key': key },
    );
    if (r.status !== 409) throw new Error(`POST /orders answered ${r.status}, expected 409: ${JSON.stringify(r.body)}`);
    const workflowId = orderWorkflowId(orderIdForIdempotencyKey(userId, key));
    await d.finished(workflowId, { status: 'FAILED' });
    return [{ scenario: 'setup-failed', workflowId }];
  },

  /** Paid the wrong amount: NEEDS_REVIEW, a reminder, then an operator approves; cooling-off; fulfilment. */
  async 'review-approve'(d) {
    const sku = await d.product(3000);
    const { orderId } = await d.order({ items: [{ sku, quantity: 1 }] });
    await d.pay(orderId, 2999);
    await d.status(orderId, ['NEEDS_REVIEW'], { reason: 'PAYMENT_MISMATCH' });
    await sleep(2500); // one review reminder in the history
    const r = await d.action(
      `/orders/${orderId}/review`,
      { decision: 'approve', operator: 'histories', reason: 'buyer paid the rest by bank transfer' },
      d.admin(),
    );
    if (r.status !== 'PAID') throw new Error(`review approve answered ${JSON.stringify(r)}`);
    await d.finished(orderWorkflowId(orderId), { status: 'PAID' });
    return [{ scenario: 'review-approve', workflowId: orderWorkflowId(orderId) }];
  },

  /** Paid the wrong amount: NEEDS_REVIEW, then an operator refunds it. */
  async 'review-refund'(d) {
    const sku = await d.product(4500);
    const { orderId } = await d.order({ items: [{ sku, quantity: 1 }] });
    await d.pay(orderId, 1);
    await d.status(orderId, ['NEEDS_REVIEW'], { reason: 'PAYMENT_MISMATCH' });
    const r = await d.action(
      `/orders/${orderId}/review`,
      { decision: 'refund', operator: 'histories', reason: 'wrong amount paid' },
      d.admin(),
    );
    if (r.status !== 'REFUNDED') throw new Error(`review refund answered ${JSON.stringify(r)}`);
    await d.finished(orderWorkflowId(orderId), { status: 'REFUNDED', reason: 'REVIEW_REFUNDED' });
    return [{ scenario: 'review-refund', workflowId: orderWorkflowId(orderId) }];
  },

  /** Paid, then refunded by the buyer inside the cooling-off window. */
  async 'cooling-off-refund'(d) {
    const sku = await d.product(2500);
    const { orderId } = await d.order({ items: [{ sku, quantity: 1 }] });
    await d.pay(orderId);
    await d.status(orderId, ['PAID']);
    const r = await d.action(`/orders/${orderId}/refund`, { reason: 'changed my mind' });
    if (r.status !== 'REFUNDED') throw new Error(`cooling-off refund answered ${JSON.stringify(r)}`);
    await d.finished(orderWorkflowId(orderId), { status: 'REFUNDED', reason: 'COOLING_OFF_REFUND' });
    return [{ scenario: 'cooling-off-refund', workflowId: orderWorkflowId(orderId) }];
  },

  /** Money arrives while the expired order watches until the provider-side expiry: refunded by the order's workflow. */
  async 'late-payment-refunded'(d) {
    const sku = await d.product(4200);
    const { orderId } = await d.order({ items: [{ sku, quantity: 1 }] });
    await d.status(orderId, ['EXPIRED']);
    await d.pay(orderId); // the sandbox takes money on a closed trade (acceptPaymentAfterClose)
    await d.status(orderId, ['REFUNDED'], { reason: 'LATE_PAYMENT_REFUNDED' });
    await d.finished(orderWorkflowId(orderId), { status: 'REFUNDED', reason: 'LATE_PAYMENT_REFUNDED' });
    return [{ scenario: 'late-payment-refunded', workflowId: orderWorkflowId(orderId) }];
  },

  /** Money arrives after the order's workflow finished: the latePayment workflow refunds it. */
  async 'late-payment-workflow'(d) {
    const sku = await d.product(3300);
    const { orderId } = await d.order({ items: [{ sku, quantity: 1 }] });
    await d.finished(orderWorkflowId(orderId), { status: 'EXPIRED' });
    await d.pay(orderId); // past the provider-side expiry: later settlement (acceptPaymentAfterExpiry)
    await d.status(orderId, ['REFUNDED'], { reason: 'LATE_PAYMENT_REFUNDED' });
    const { tradeNo } = (await d.sandbox('GET', `/v1/payments/${orderId}`)).body as { tradeNo: string };
    const id = latePaymentWorkflowId('sandbox', orderId, tradeNo);
    await d.finished(id, { outcome: 'REFUNDED' });
    return [{ scenario: 'late-payment-workflow', workflowId: id }];
  },
};

/**
 * Run first, on their own: every notification of these payments is dropped (a fault that would change the other
 * scenarios), so the workflow learns of the payment from the provider instead of a callback.
 */
const LOST_CALLBACK_SCENARIOS: Record<string, (d: Driver, orderId: string) => Promise<Captured[]>> = {
  /** The active query on the workflow's timer finds the payment. */
  async 'lost-callback'(d, orderId) {
    await d.status(orderId, ['PAID'], { reason: 'PAID_VIA_QUERY' });
    await d.finished(orderWorkflowId(orderId), { status: 'PAID' });
    return [{ scenario: 'lost-callback', workflowId: orderWorkflowId(orderId) }];
  },
  /** The buyer escalates to support before the first query: the support update queries and finds the payment. */
  async escalated(d, orderId) {
    const r = await d.api('POST', `/orders/${orderId}/escalate`, { note: 'I paid, the page still waits' });
    if (r.status !== 200 || r.body.resolution !== 'PAYMENT_FOUND')
      throw new Error(`escalation answered ${r.status} ${JSON.stringify(r.body)}`);
    await d.status(orderId, ['PAID'], { reason: 'PAID_VIA_QUERY' });
    await d.finished(orderWorkflowId(orderId), { status: 'PAID' });
    return [{ scenario: 'escalated', workflowId: orderWorkflowId(orderId) }];
  },
};

/** Places and pays the orders of the wanted lost-callback scenarios with notifications dropped; returns their runs. */
async function lostCallbacks(
  d: Driver,
  wanted: (name: string) => boolean,
): Promise<{ name: string; done: Promise<Captured[]> }[]> {
  const names = Object.keys(LOST_CALLBACK_SCENARIOS).filter(wanted);
  if (names.length === 0) return [];
  const orders: string[] = [];
  for (const _ of names) {
    const sku = await d.product(1999);
    orders.push(((await d.order({ items: [{ sku, quantity: 1 }] })) as { orderId: string }).orderId);
  }
  await d.faults({ dropNotifications: 1 });
  try {
    for (const orderId of orders) await d.pay(orderId); // the sandbox decides to drop each payment's notifications now
  } finally {
    await d.faults({ dropNotifications: 0 });
  }
  return names.map((name, i) => ({ name, done: LOST_CALLBACK_SCENARIOS[name]!(d, orders[i]!) }));
}

export const SCENARIO_NAMES = [...Object.keys(LOST_CALLBACK_SCENARIOS), ...Object.keys(SCENARIOS)];

function parseArgs(argv: string[]): { label: string; only?: string[]; out: string; ownServer: boolean } {
  const value = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const label = value('label');
  if (!label || !/^[A-Za-z0-9][A-Za-z0-9_.]*$/.test(label)) {
    throw new Error(
      'usage: npm run histories:capture -- --label <version, e.g. v2> [--only a,b] [--out test/histories] [--own-server] (the label is the file prefix: letters, digits, _ and .)',
    );
  }
  const only = value('only')?.split(',').filter(Boolean);
  for (const name of only ?? [])
    if (!SCENARIO_NAMES.includes(name))
      throw new Error(`unknown scenario "${name}"; known: ${SCENARIO_NAMES.join(', ')}`);
  return {
    label,
    only,
    out: resolve(value('out') ?? join(__dirname, '..', 'test', 'histories')),
    ownServer: argv.includes('--own-server'),
  };
}

async function main(): Promise<void> {
  const started = Date.now();
  const log = (line: string) =>
    console.log(`[histories ${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${line}`);
  const { label, only, out, ownServer } = parseArgs(process.argv.slice(2));
  const wanted = (name: string) => !only || only.includes(name);

  const databaseUrl = process.env.HISTORIES_DATABASE_URL ?? 'mysql://root@127.0.0.1:3306/payflow_histories';
  const applied = await migrateLatest(databaseUrl);
  log(`MySQL: ${databaseUrl} ready${applied.length ? ` (applied ${applied.join(', ')})` : ''}`);

  let temporalAddress = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
  let devServer: ChildProcess | undefined;
  if (!ownServer && (await isListening(temporalAddress))) {
    log(`Temporal: using the server on ${temporalAddress}`);
  } else {
    const binary = ensureTemporalCli(log);
    temporalAddress = `127.0.0.1:${await freePort()}`;
    log(`Temporal: starting an in-memory dev server on ${temporalAddress}`);
    devServer = await startDevServer(
      binary,
      { address: temporalAddress, namespace: 'default', headless: true, logLevel: 'error' },
      'ignore',
    );
  }

  Runtime.install({
    logger: {
      log() {},
      trace() {},
      debug() {},
      info() {},
      warn: (m: string) => console.warn(`[temporal-sdk] ${m}`),
      error: (m: string) => console.error(`[temporal-sdk] ${m}`),
    } as never,
  });
  const [apiPort, sandboxPort] = [await freePort(), await freePort()];
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    TEMPORAL_ADDRESS: temporalAddress,
    TEMPORAL_NAMESPACE: process.env.TEMPORAL_NAMESPACE ?? 'default',
    TASK_QUEUE: `histories-${randomBytes(4).toString('hex')}`,
    PORT: String(apiPort),
    SANDBOX_PORT: String(sandboxPort),
    SANDBOX_SECRET: `histories-${randomBytes(8).toString('hex')}`,
    ADMIN_TOKEN: `histories-admin-${randomBytes(8).toString('hex')}`,
    RECONCILIATION_SCHEDULE: 'off',
    LOG_LEVEL: 'warn',
    ...TIMINGS,
  });
  log(`bundling src/workflows and starting sandbox, API and worker (task queue ${config.taskQueue})`);
  const stack = await startStack({ config, logger: false, dbPoolMax: 10 });
  const driver = new Driver(stack, `http://127.0.0.1:${apiPort}`, config.sandboxUrl, log);
  let failed = false;
  try {
    log('lost-callback, escalated: paying with every notification dropped (a query must find the payment)');
    const runs = await lostCallbacks(driver, wanted);
    // The rest run side by side; the sandbox keeps taking money for closed trades, as some providers do.
    await driver.faults({ acceptPaymentAfterClose: true, acceptPaymentAfterExpiry: true });
    for (const [name, run] of Object.entries(SCENARIOS)) {
      if (!wanted(name)) continue;
      log(`${name}: started`);
      runs.push({ name, done: run(driver) });
    }
    const settled = await Promise.allSettled(runs.map((r) => r.done));
    const captured: Captured[] = [];
    settled.forEach((s, i) => {
      if (s.status === 'fulfilled') captured.push(...s.value);
      else {
        failed = true;
        log(`${runs[i]!.name}: FAILED: ${(s.reason as Error).message}`);
      }
    });

    mkdirSync(out, { recursive: true });
    for (const c of captured) {
      const history = await stack.client.workflow.getHandle(c.workflowId).fetchHistory();
      const file = join(out, `${label}-${c.scenario}.json`);
      writeFileSync(file, `${historyToJson(history)}\n`);
      log(
        `${c.scenario}: wrote ${relative(process.cwd(), file)} (${history.events?.length ?? 0} events, workflow ${c.workflowId})`,
      );
    }
    log(
      failed
        ? 'some scenarios failed; their histories were not written'
        : `captured ${captured.length} histories with label "${label}"`,
    );
  } finally {
    await stack.stop();
    devServer?.kill('SIGTERM');
  }
  process.exitCode = failed ? 1 : 0;
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(`[histories] ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  });
}
