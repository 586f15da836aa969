/**
 * `npm run bench [-- --orders N --concurrency C]`: end-to-end throughput and latency of the order lifecycle.
 * `npm run bench -- --hot-sku`: reservations per second on one SKU, one row vs. buckets (src/tools/bench-hot-sku.ts).
 *
 * Self-contained: its own database (`payflow_bench`, dropped and re-migrated), its own free ports and task
 * queue, the Temporal server at TEMPORAL_ADDRESS when one listens (else an in-memory headless dev server it
 * starts and stops). The system under test (sandbox + API + worker, src/tools/bench-system.ts) runs in a
 * child process so that the load generator never shares its event loop.
 *
 * Each of C clients loops: POST /orders (create latency = until the 201), the buyer pays at the sandbox,
 * then the order workflow's result is awaited with a long poll (pay-to-PAID latency = from the pay request
 * until the workflow has completed as PAID). Prints a report and writes it to reports/bench-<time>.json.
 * Exit code 0 when every order reached PAID, 1 otherwise.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, relative, resolve } from 'node:path';
import type { Client } from '@temporalio/client';
import type { Knex } from 'knex';
import { connectTemporal } from '../client/temporal';
import { type Config, loadConfig, loadConfigOrExit } from '../config';
import { type OrderPaymentResult, orderWorkflowId } from '../contracts/order';
import { createDb, migrateLatest } from '../db/knex';
import { freePort } from './processes';
import { ensureTemporalCli, isListening, startDevServer } from './temporal-cli';

const ROOT = resolve(__dirname, '..', '..');
const BENCH_DATABASE = 'payflow_bench';
const HEALTH_TIMEOUT_MS = 120_000;
const CREATE_TIMEOUT_MS = 40_000;
const PAY_TIMEOUT_MS = 20_000;
/** Longest wait for one order to reach its final status after the buyer paid. */
const RESULT_TIMEOUT_MS = 120_000;
const CHILD_STOP_GRACE_MS = 10_000;

interface Options {
  orders: number;
  concurrency: number;
}

const USAGE = 'usage: npm run bench [-- --orders N --concurrency C]   (defaults: --orders 200 --concurrency 20)\n       npm run bench -- --hot-sku [--buckets N] [--seconds S] [--clients 50,200]';

function parseArgs(argv: string[]): Options {
  const options: Options = { orders: 200, concurrency: 20 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    const match = /^--(orders|concurrency)(?:=(.*))?$/.exec(arg);
    if (!match) fail(`unknown argument "${arg}"\n${USAGE}`);
    const name = match[1] as keyof Options;
    const text = match[2] ?? argv[++i];
    const value = Number(text);
    if (text === undefined || !Number.isInteger(value) || value < 1 || value > 1_000_000) fail(`--${name} needs a whole number from 1 to 1000000, got "${text ?? ''}"\n${USAGE}`);
    options[name] = value;
  }
  options.concurrency = Math.min(options.concurrency, options.orders);
  return options;
}

function fail(message: string): never {
  console.error(`[bench] ${message}`);
  process.exit(1);
}

const log = (message: string) => console.log(`[bench] ${message}`);

/** Aborted when the run must end early (the system under test died, or Ctrl-C): in-flight calls stop waiting. */
const runAbort = new AbortController();
const abortReason = () => String(runAbort.signal.reason ?? 'aborted');

/** The same MySQL server as `url`, another database. */
function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

async function dropDatabase(url: string): Promise<void> {
  const u = new URL(url);
  const database = u.pathname.replace(/^\//, '');
  if (!/^[A-Za-z0-9_]+$/.test(database)) throw new Error(`bad database name ${database}`);
  const admin = createDb(withDatabase(url, 'mysql'), { poolMax: 1 });
  try {
    await admin.raw(`DROP DATABASE IF EXISTS \`${database}\``);
  } finally {
    await admin.destroy();
  }
}

interface HttpResult {
  status: number;
  body: unknown;
}

async function http(method: string, url: string, body: unknown, timeoutMs: number, headers: Record<string, string> = {}): Promise<HttpResult> {
  const response = await fetch(url, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.any([runAbort.signal, AbortSignal.timeout(timeoutMs)]),
  });
  const text = await response.text();
  try {
    return { status: response.status, body: text ? (JSON.parse(text) as unknown) : undefined };
  } catch {
    return { status: response.status, body: text };
  }
}

function field(body: unknown, name: string): unknown {
  return typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[name] : undefined;
}

/** A short kind for an HTTP failure: `HTTP 409 OUT_OF_STOCK`. */
function httpKind(r: HttpResult): string {
  const code = field(r.body, 'error') ?? field(r.body, 'code');
  return `HTTP ${r.status}${typeof code === 'string' ? ` ${code}` : ''}`;
}

/** A short kind for a thrown error: timeouts, refused connections, Temporal errors. */
function errorKind(err: unknown): string {
  if (runAbort.signal.aborted) return 'aborted (run ended early)';
  const e = err as { name?: string; code?: string; cause?: { code?: string }; message?: string };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return 'timeout';
  const code = e?.cause?.code ?? e?.code;
  if (typeof code === 'string') return code;
  if (/deadline/i.test(e?.message ?? '')) return 'timeout';
  return e?.name ?? 'Error';
}

function errorText(err: unknown): string {
  const e = err as { message?: string; cause?: { message?: string } };
  return [e?.message, e?.cause?.message].filter(Boolean).join(': ') || String(err);
}

/** Latency summary in milliseconds (nearest-rank percentiles). */
interface Summary {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

function summarize(values: number[]): Summary | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
  const round = (v: number) => Math.round(v * 10) / 10;
  return {
    count: sorted.length,
    min: round(sorted[0]!),
    mean: round(sorted.reduce((s, v) => s + v, 0) / sorted.length),
    p50: round(at(50)),
    p95: round(at(95)),
    p99: round(at(99)),
    max: round(sorted[sorted.length - 1]!),
  };
}

/** What happened to one order of the run. */
interface OrderRecord {
  n: number;
  orderId?: string;
  createMs?: number;
  payToPaidMs?: number;
  status?: string;
  error?: string;
}

/** Shared state of the load generator. */
class Load {
  next = 0;
  created = 0;
  paid = 0;
  failed = 0;
  inFlight = 0;
  readonly records: OrderRecord[] = [];
  readonly errors = new Map<string, { count: number; example: string }>();
  startedAt = 0;
  endedAt = 0;

  error(record: OrderRecord, kind: string, example: string): void {
    record.error = kind;
    this.failed++;
    const entry = this.errors.get(kind);
    if (entry) entry.count++;
    else this.errors.set(kind, { count: 1, example: example.slice(0, 300) });
  }
}

interface Ctx {
  apiUrl: string;
  sandboxUrl: string;
  sku: string;
  temporal: Client;
}

/** One simulated buyer: creates, pays and waits for orders until the run has none left. */
async function client(load: Load, options: Options, ctx: Ctx, clientNo: number): Promise<void> {
  while (!runAbort.signal.aborted) {
    const n = load.next++;
    if (n >= options.orders) return;
    const record: OrderRecord = { n };
    load.records.push(record);
    load.inFlight++;
    try {
      await oneOrder(load, record, ctx, clientNo);
    } finally {
      load.inFlight--;
    }
  }
}

async function oneOrder(load: Load, record: OrderRecord, ctx: Ctx, clientNo: number): Promise<void> {
  const t0 = performance.now();
  let created: HttpResult;
  try {
    created = await http('POST', `${ctx.apiUrl}/orders`, { userId: `bench-user-${clientNo}`, items: [{ sku: ctx.sku, quantity: 1 }] }, CREATE_TIMEOUT_MS);
  } catch (err) {
    return load.error(record, `create: ${errorKind(err)}`, errorText(err));
  }
  if (created.status !== 201) return load.error(record, `create: ${httpKind(created)}`, JSON.stringify(created.body));
  record.createMs = performance.now() - t0;
  load.created++;
  const orderId = String(field(created.body, 'orderId'));
  record.orderId = orderId;

  const t1 = performance.now();
  try {
    const paid = await http('POST', `${ctx.sandboxUrl}/v1/payments/${encodeURIComponent(orderId)}/pay`, {}, PAY_TIMEOUT_MS);
    if (paid.status !== 200) return load.error(record, `pay: ${httpKind(paid)}`, JSON.stringify(paid.body));
  } catch (err) {
    return load.error(record, `pay: ${errorKind(err)}`, errorText(err));
  }

  const timeout = AbortSignal.timeout(RESULT_TIMEOUT_MS);
  try {
    const handle = ctx.temporal.workflow.getHandle(orderWorkflowId(orderId));
    const result = (await ctx.temporal.withAbortSignal(AbortSignal.any([runAbort.signal, timeout]), () => handle.result())) as OrderPaymentResult;
    record.status = result.status;
    if (result.status !== 'PAID') return load.error(record, `result: ${result.status}`, `${orderId}: ${result.status}${result.reason ? ` (${result.reason})` : ''}`);
    record.payToPaidMs = performance.now() - t1;
    load.paid++;
  } catch (err) {
    const kind = !runAbort.signal.aborted && timeout.aborted ? `timeout after ${RESULT_TIMEOUT_MS / 1000}s` : errorKind(err);
    return load.error(record, `result: ${kind}`, `${orderId}: ${errorText(err)}`);
  }
}

/** Progress: one updating line on a terminal, a line every few seconds otherwise. */
let stopProgressOnExit: (() => void) | undefined;

function startProgress(load: Load, options: Options): () => void {
  const tty = process.stdout.isTTY === true;
  const line = () => {
    const elapsed = (performance.now() - load.startedAt) / 1000;
    const rate = elapsed > 0 ? load.paid / elapsed : 0;
    return `[bench] ${String(load.paid).padStart(String(options.orders).length)}/${options.orders} paid · ${load.created} created · ${load.failed} errors · ${load.inFlight} in flight · ${elapsed.toFixed(1)} s · ${rate.toFixed(1)} orders/s`;
  };
  const timer = setInterval(
    () => {
      if (tty) process.stdout.write(`\r\x1b[2K${line()}`);
      else console.log(line());
    },
    tty ? 200 : 5000,
  );
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    if (tty) process.stdout.write(`\r\x1b[2K${line()}\n`);
    else console.log(line());
  };
  stopProgressOnExit = stop;
  return stop;
}

/** Everything the run started, stopped in reverse order by `shutdown`. */
interface Resources {
  devServer?: ChildProcess;
  /** The run's task queue: workflows still running on it at the end have no worker left and are terminated. */
  taskQueue?: string;
  system?: ChildProcess;
  temporal?: Client;
  db?: Knex;
}

function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((done) => {
    const timer = setTimeout(() => done(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      done(true);
    });
  });
}

/** SIGTERM, then SIGKILL after the grace period. */
async function stopChild(child: ChildProcess | undefined, name: string, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (await waitForExit(child, graceMs)) return;
  log(`${name} did not stop within ${graceMs / 1000}s; killing it`);
  child.kill('SIGKILL');
  await waitForExit(child, 5000);
}

/** Terminates the run's workflows that are still running (an interrupted or failed run), so none is left orphaned. */
async function terminateLeftovers(temporal: Client, taskQueue: string): Promise<void> {
  let terminated = 0;
  try {
    await temporal.withDeadline(Date.now() + 20_000, async () => {
      for await (const wf of temporal.workflow.list({ query: `TaskQueue = '${taskQueue}' AND ExecutionStatus = 'Running'` })) {
        await temporal.workflow
          .getHandle(wf.workflowId, wf.runId)
          .terminate('left running by an unfinished bench run')
          .then(() => terminated++, () => undefined);
      }
    });
  } catch (err) {
    log(`could not clean up workflows on ${taskQueue}: ${errorText(err)}`);
  }
  if (terminated > 0) log(`terminated ${terminated} workflow(s) left running on task queue ${taskQueue}`);
}

let shuttingDown: Promise<void> | undefined;
function shutdown(res: Resources): Promise<void> {
  shuttingDown ??= (async () => {
    if (res.temporal && res.taskQueue) await terminateLeftovers(res.temporal, res.taskQueue);
    await res.temporal?.connection.close().catch(() => undefined);
    await res.db?.destroy().catch(() => undefined);
    const stopping = performance.now();
    const wasRunning = res.system !== undefined && res.system.exitCode === null && res.system.signalCode === null;
    await stopChild(res.system, 'the system under test', CHILD_STOP_GRACE_MS);
    if (wasRunning) log(`system under test stopped in ${((performance.now() - stopping) / 1000).toFixed(1)}s`);
    if (res.system?.connected) res.system.disconnect();
    await stopChild(res.devServer, 'the Temporal dev server', 5000);
  })();
  return shuttingDown;
}

function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no output)';
  }
}

/**
 * Waits until the child reports that its worker polls (IPC "ready": the API answers /healthz while the worker
 * is still bundling the workflow code, and orders created then would only measure that) and /healthz is 200.
 */
async function waitForHealth(apiUrl: string, system: ChildProcess, logFile: string): Promise<void> {
  let ready = false;
  const onMessage = (message: unknown) => {
    if (field(message, 'type') === 'ready') ready = true;
  };
  system.on('message', onMessage);
  try {
    const deadline = Date.now() + HEALTH_TIMEOUT_MS;
    let last = 'no answer yet';
    while (Date.now() < deadline) {
      if (system.exitCode !== null || system.signalCode !== null) {
        throw new Error(`the system under test exited (${system.exitCode ?? system.signalCode}) before it was healthy; its output:\n${tail(logFile)}`);
      }
      try {
        const r = await http('GET', `${apiUrl}/healthz`, undefined, 2000);
        if (r.status === 200 && ready) return;
        last = r.status === 200 ? 'healthz 200, worker not started yet' : `HTTP ${r.status} ${JSON.stringify(r.body)}`;
      } catch (err) {
        last = errorText(err);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`the system under test was not ready within ${HEALTH_TIMEOUT_MS / 1000}s (last: ${last}); output:\n${tail(logFile)}`);
  } finally {
    system.off('message', onMessage);
  }
}

/** CPU time (ms) a process has used so far, from /proc (Linux); undefined elsewhere. Assumes USER_HZ = 100. */
function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10; // utime + stime, in ticks of 10 ms
  } catch {
    return undefined;
  }
}

/** Busy and total CPU time of the whole machine (all cores), for the utilisation during the load. */
function machineCpu(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const { times } of cpus()) {
    const sum = times.user + times.nice + times.sys + times.irq + times.idle;
    total += sum;
    busy += sum - times.idle;
  }
  return { busy, total };
}

function table(rows: [string, string][]): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join('\n');
}

function latencyRow(s: Summary | null): string {
  if (!s) return 'n/a';
  const f = (v: number) => v.toFixed(1).padStart(8);
  return `p50 ${f(s.p50)}   p95 ${f(s.p95)}   p99 ${f(s.p99)}   max ${f(s.max)}   (n=${s.count})`;
}

async function main(): Promise<number> {
  if (process.argv.includes('--hot-sku')) return (await import('./bench-hot-sku')).runHotSkuBench(process.argv.slice(2));
  const options = parseArgs(process.argv.slice(2));
  const base = loadConfigOrExit();
  const runId = randomBytes(4).toString('hex');
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const reportsDir = join(ROOT, 'reports');
  mkdirSync(reportsDir, { recursive: true });
  const systemLog = join(reportsDir, `bench-${stamp}.system.log`);
  const res: Resources = {};

  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) process.exit(130);
    interrupted = true;
    runAbort.abort('interrupted');
    stopProgressOnExit?.();
    log(`${signal}: stopping the system under test (again to force)`);
    void shutdown(res).finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const runStarted = performance.now();
    log(`${options.orders} orders, ${options.concurrency} concurrent clients, run ${runId}`);

    // Temporal: the server already listening, or an in-memory headless dev server of our own.
    let temporalAddress = base.temporalAddress;
    let temporalNote: string;
    if (await isListening(temporalAddress)) {
      temporalNote = `existing server at ${temporalAddress}`;
      log(`Temporal: using the server at ${temporalAddress}`);
    } else {
      const binary = ensureTemporalCli((l) => log(l));
      temporalAddress = `127.0.0.1:${await freePort()}`;
      log(`Temporal: nothing at ${base.temporalAddress}; starting an in-memory headless dev server on ${temporalAddress}`);
      res.devServer = await startDevServer(binary, { address: temporalAddress, namespace: base.temporalNamespace, headless: true, logLevel: 'error' }, 'ignore');
      temporalNote = `in-memory dev server at ${temporalAddress} (started by the bench)`;
    }

    // MySQL: a database of our own, fresh every run.
    const databaseUrl = withDatabase(base.databaseUrl, BENCH_DATABASE);
    log(`MySQL: recreating ${BENCH_DATABASE}`);
    await dropDatabase(databaseUrl);
    await migrateLatest(databaseUrl);

    // The system under test, in a child process on free ports and a task queue of its own.
    const [apiPort, sandboxPort] = [await freePort(), await freePort()];
    const adminToken = `bench-admin-${randomBytes(8).toString('hex')}`;
    const childEnv: Record<string, string | undefined> = {
      ...process.env,
      DATABASE_URL: databaseUrl,
      TEMPORAL_ADDRESS: temporalAddress,
      TEMPORAL_NAMESPACE: base.temporalNamespace,
      TASK_QUEUE: `bench-${runId}`,
      PORT: String(apiPort),
      SANDBOX_PORT: String(sandboxPort),
      ADMIN_TOKEN: adminToken,
      LOG_LEVEL: 'warn',
      // The bench measures pay -> PAID with the workflow's result; no cooling-off window keeps it open.
      COOLING_OFF_PERIOD: '0s',
      // A throwaway copy must not leave a daily reconciliation Schedule (for its task queue) on the server.
      RECONCILIATION_SCHEDULE: 'off',
      // Derived from the ports above; inherited values would point at another copy of the system.
      PUBLIC_BASE_URL: undefined,
      SANDBOX_URL: undefined,
    };
    for (const key of Object.keys(childEnv)) if (childEnv[key] === undefined) delete childEnv[key];
    const sut: Config = loadConfig(childEnv);
    const logFd = openSync(systemLog, 'a');
    log(`starting the system under test (API ${sut.publicBaseUrl}, sandbox ${sut.sandboxUrl}, task queue ${sut.taskQueue}); its output goes to ${relative(ROOT, systemLog)}`);
    res.system = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'bench-system.ts')], {
      cwd: ROOT,
      env: childEnv as NodeJS.ProcessEnv,
      stdio: ['ignore', logFd, logFd, 'ipc'],
    });
    closeSync(logFd);
    res.system.once('exit', (code, signal) => {
      if (!shuttingDown) runAbort.abort(`system under test exited with ${code ?? signal}; see ${relative(ROOT, systemLog)}`);
    });
    const startedSystemAt = performance.now();
    await waitForHealth(sut.publicBaseUrl, res.system, systemLog);
    log(`system ready (worker polling, /healthz 200) after ${((performance.now() - startedSystemAt) / 1000).toFixed(1)}s`);

    // One product with stock for every order.
    const sku = `bench-${runId}`;
    const price = 1999;
    const put = await http('PUT', `${sut.publicBaseUrl}/admin/products/${sku}`, { name: `Bench item ${runId}`, price, currency: 'CNY', stock: options.orders }, 10_000, {
      authorization: `Bearer ${adminToken}`,
    });
    if (put.status !== 201 && put.status !== 200) throw new Error(`creating the product failed: ${httpKind(put)} ${JSON.stringify(put.body)}`);

    res.temporal = await connectTemporal({ temporalAddress, temporalNamespace: base.temporalNamespace });
    res.taskQueue = sut.taskQueue;
    res.db = createDb(databaseUrl, { poolMax: 2 });

    // The load.
    const load = new Load();
    const cpuBefore = process.cpuUsage();
    const machineBefore = machineCpu();
    const systemCpuBefore = processCpuMs(res.system.pid);
    const temporalCpuBefore = processCpuMs(res.devServer?.pid);
    load.startedAt = performance.now();
    const stopProgress = startProgress(load, options);
    await Promise.all(
      Array.from({ length: options.concurrency }, (_, i) => client(load, options, { apiUrl: sut.publicBaseUrl, sandboxUrl: sut.sandboxUrl, sku, temporal: res.temporal! }, i)),
    );
    load.endedAt = performance.now();
    stopProgress();
    const notStarted = options.orders - Math.min(load.next, options.orders);
    if (notStarted > 0) {
      load.failed += notStarted;
      load.errors.set('not started', { count: notStarted, example: `the run ended early: ${abortReason()}` });
    }
    if (runAbort.signal.aborted) log(`run ended early: ${abortReason()}`);
    const loadCpu = process.cpuUsage(cpuBefore);
    const machineAfter = machineCpu();
    const machineBusyPct = Math.round(((machineAfter.busy - machineBefore.busy) / Math.max(1, machineAfter.total - machineBefore.total)) * 1000) / 10;
    const cpuDelta = (before: number | undefined, pid: number | undefined) => {
      const after = processCpuMs(pid);
      return before === undefined || after === undefined ? undefined : after - before;
    };
    const systemCpuMs = cpuDelta(systemCpuBefore, res.system.pid);
    const temporalCpuMs = cpuDelta(temporalCpuBefore, res.devServer?.pid);

    // What MySQL says.
    const statusRows = (await res.db('orders').select('status').count({ n: '*' }).groupBy('status').orderBy('status')) as { status: string; n: number | string }[];
    const finalStatuses = Object.fromEntries(statusRows.map((r) => [r.status, Number(r.n)]));
    const stockRow = (await res.db('stock').where({ sku }).first('available', 'reserved', 'sold')) as Record<string, number | string> | undefined;
    const stock = stockRow ? { available: Number(stockRow.available), reserved: Number(stockRow.reserved), sold: Number(stockRow.sold) } : undefined;

    const wallMs = load.endedAt - load.startedAt;
    const createLatency = summarize(load.records.flatMap((r) => (r.createMs === undefined ? [] : [r.createMs])));
    const payLatency = summarize(load.records.flatMap((r) => (r.payToPaidMs === undefined ? [] : [r.payToPaidMs])));
    const paidInDb = finalStatuses.PAID ?? 0;
    // One unit per order: sold units are PAID orders, reserved units are orders still holding stock.
    const holding = (finalStatuses.AWAITING_PAYMENT ?? 0) + (finalStatuses.NEEDS_REVIEW ?? 0);
    // Only meaningful for a run that finished: an interrupted one leaves orders between their steps.
    const stockConsistent = runAbort.signal.aborted
      ? null
      : stock !== undefined && stock.sold === paidInDb && stock.reserved === holding && stock.available + stock.reserved + stock.sold === options.orders;
    const allPaid = load.paid === options.orders && paidInDb === options.orders && load.failed === 0;
    const ok = allPaid && stockConsistent === true;
    const errors = Object.fromEntries([...load.errors].sort((a, b) => b[1].count - a[1].count));

    const report = {
      ok,
      startedAt: new Date(Date.now() - (performance.now() - runStarted)).toISOString(),
      options,
      environment: {
        node: process.version,
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model,
        temporal: temporalNote,
        namespace: base.temporalNamespace,
        taskQueue: sut.taskQueue,
        database: BENCH_DATABASE,
        apiUrl: sut.publicBaseUrl,
        sandboxUrl: sut.sandboxUrl,
        sku,
      },
      wallTimeMs: Math.round(wallMs),
      ordersPerSecond: Math.round((load.paid / (wallMs / 1000)) * 100) / 100,
      paid: load.paid,
      created: load.created,
      failed: load.failed,
      createLatencyMs: createLatency,
      payToPaidLatencyMs: payLatency,
      finalStatuses,
      stock: stock ?? null,
      stockConsistent,
      errors,
      cpu: {
        machineCores: cpus().length,
        machineBusyPercent: machineBusyPct,
        loadGeneratorMs: Math.round((loadCpu.user + loadCpu.system) / 1000),
        systemUnderTestMs: systemCpuMs ?? null,
        systemUnderTestMsPerOrder: systemCpuMs === undefined || load.paid === 0 ? null : Math.round(systemCpuMs / load.paid),
        temporalDevServerMs: temporalCpuMs ?? null,
      },
      systemLog: relative(ROOT, systemLog),
      orders: load.records.map((r) => ({
        ...r,
        createMs: r.createMs === undefined ? undefined : Math.round(r.createMs * 10) / 10,
        payToPaidMs: r.payToPaidMs === undefined ? undefined : Math.round(r.payToPaidMs * 10) / 10,
      })),
    };
    const reportFile = join(reportsDir, `bench-${stamp}.json`);
    writeFileSync(reportFile, `${JSON.stringify(report, null, 2)}\n`);

    console.log(`
Benchmark report ${ok ? '(all orders PAID)' : '(NOT all orders PAID)'}
${table([
  ['orders', String(options.orders)],
  ['concurrency', String(options.concurrency)],
  ['wall time', `${(wallMs / 1000).toFixed(2)} s`],
  ['throughput', `${report.ordersPerSecond.toFixed(2)} orders/s (completed to PAID)`],
  ['create latency ms', latencyRow(createLatency)],
  ['pay->PAID ms', latencyRow(payLatency)],
  ['final statuses', Object.entries(finalStatuses).map(([s, n]) => `${s}=${n}`).join('  ') || '(no orders in MySQL)'],
  ['stock', stock ? `available=${stock.available} reserved=${stock.reserved} sold=${stock.sold}${stockConsistent === null ? '  (not checked: the run ended early)' : stockConsistent ? '' : '  (INCONSISTENT with the order statuses)'}` : '(unreadable)'],
  ['errors', load.errors.size === 0 ? 'none' : [...load.errors].map(([k, v]) => `${k} x${v.count}`).join(', ')],
  [
    'cpu during load',
    `machine ${machineBusyPct}% busy of ${cpus().length} cores; system under test ${systemCpuMs === undefined ? 'n/a' : `${(systemCpuMs / 1000).toFixed(1)} s (${report.cpu.systemUnderTestMsPerOrder ?? '?'} ms/order)`}; load generator ${(report.cpu.loadGeneratorMs / 1000).toFixed(1)} s${temporalCpuMs === undefined ? '' : `; Temporal ${(temporalCpuMs / 1000).toFixed(1)} s`}`,
  ],
  ['temporal', temporalNote],
  ['report', relative(ROOT, reportFile)],
])}`);
    for (const [kind, { example }] of load.errors) console.log(`  e.g. ${kind}: ${example}`);
    if (!ok) console.log(`\n  system under test output (last lines of ${relative(ROOT, systemLog)}):\n${tail(systemLog, 15).replace(/^/gm, '    ')}`);
    return ok ? 0 : 1;
  } finally {
    await shutdown(res);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`[bench] ${(err as Error).message ?? String(err)}`);
    process.exitCode = 1;
  },
);
