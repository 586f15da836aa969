/**
 * `npm run bench -- --tcc [--transactions 2000] [--concurrency 10,50] [--warmup W] [--quick]`: the TCC part of an
 * order on its own (issue #16): Try and Confirm of stock (one SKU line of one unit), one coupon and some points, N
 * transactions at each concurrency, in these variants side by side in one run:
 *
 *  - `direct`: payflow's real participants (tryReserveStock / confirmStock of src/db/stock.ts, the coupon and points
 *    participants through createBenefitActivities of src/activities/benefits.ts) called from the bench, no Temporal;
 *  - `local`: one workflow per transaction (tools/bench-tcc-workflow.ts) running the Try of all three as one local
 *    activity and their Confirm as a second one (the same functions inside), started with the client and awaited;
 *  - `native`: `local` with its client on the worker's NativeConnection (eager start needs that), the control for:
 *  - `eager`: `native` started with eager workflow start (requestEagerStart): the server answers the start with the
 *    workflow's first task for this process's worker, skipping its matching service (the task queue round trip). A dev
 *    server the bench starts has `system.enableEagerWorkflowStart` on; another server may not (the count of eager
 *    starts is printed);
 *  - `activities`: the same workflow with two activity tasks instead;
 *  - `dtm`: DTM v1.19.0 itself (tools/dtm.ts): its server, built once from the Go module proxy, with its store on the
 *    same MariaDB, coordinating the same Try and Confirm of the same rows by tools/dtm-tcc, participants written as
 *    DTM's documentation writes them (one conditional UPDATE each behind DTM's barrier, in Go). `--no-dtm` leaves it
 *    out; a failed build or start is reported and the other variants still run.
 *
 * The worker runs in the bench's own process (its own task queue, the bench workflow bundled on its own), so the
 * bench process's CPU (process.cpuUsage: client, worker, activities, all threads) is what payflow's side of a
 * transaction costs; the Temporal server's is read from /proc/<pid>/stat when it runs here (started by the bench, or
 * found by the port it listens on). Each variant's transactions and users are seeded apart (stock, one coupon AVAILABLE
 * per transaction for its user, points per user) in a database of the bench's own (`payflow_bench_tcc`, or
 * DATABASE_URL's: tools/tool-database.ts), and the books are checked after each run: stock sold = transactions, every
 * fence CONFIRMED, every coupon USED by its order, points spent exact. Exit code 1 when a check fails or a transaction
 * failed. Prints the figures side by side, each variant's ratio to DTM measured in the same run, the ones issue #16
 * quotes for DTM v1.19 beside them, and writes reports/bench-tcc-<time>.json.
 */
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { join, relative } from 'node:path';
import { Client } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import type { Knex } from 'knex';
import pino from 'pino';
import { createBenefitActivities, type BenefitCall } from '../src/activities/benefits';
import { type Config, loadConfigOrExit } from '../src/config';
import { createDb } from '../src/db/knex';
import { confirmStock, tryReserveStock } from '../src/db/stock';
import { createLogger } from '../src/observability/logger';
import { connectTemporal, connectWorkerTemporal } from '../src/temporal/connection';
import { installTemporalRuntime } from '../src/workers/telemetry';
import { workflowTaskPollerBehavior } from '../src/workers/worker';
import {
  REPORTS_DIR,
  ROOT,
  type Summary,
  Tally,
  abortReason,
  commandLine,
  errorKind,
  errorText,
  fail,
  inParallel,
  log,
  logSummary,
  machineCpu,
  machineFacts,
  ownHelperProcess,
  ownTemporalServer,
  parseFlags,
  perSecond,
  runAbort,
  startProgress,
  summarize,
  writeReport,
} from './bench-harness';
import type { TccActivities, TccCall, benchTcc } from './bench-tcc-workflow';
import { commandCpuMs, freePort, pidListeningOn, processCpuMs, stopChildProcess } from './processes';
import {
  DTM_VERSION,
  type DtmBinaries,
  type DtmServer,
  ensureDtm,
  prepareDtmTables,
  runDtmSet,
  startDtmServer,
} from './dtm';
import { ensureTemporalCli, isListening, startDevServer } from './temporal-cli';
import { prepareToolDatabase, withDatabase } from './tool-database';

const DATABASE = 'payflow_bench_tcc';
const VARIANTS = ['direct', 'local', 'native', 'eager', 'activities', 'dtm'] as const;
type Variant = (typeof VARIANTS)[number];

/** What every transaction takes: one unit of the run's SKU, its user's coupon, POINTS of its user's points. */
const POINTS = 300;
const POINTS_SEEDED = 1000;
const COUPON_DISCOUNT = 500;
/** Units of stock beyond the run's transactions, so that a unit taken twice shows in the books, not as OUT_OF_STOCK. */
const SPARE_STOCK = 100;

/** Issue #16's figures for DTM v1.19 on the issue's machine, printed beside the `dtm` variant measured here. */
export const DTM = {
  label: "DTM v1.19 as issue #16 quotes it (measured on the issue's machine, not by this run)",
  version: 'v1.19',
  transactionsPerSecond: [157, 184] as const,
  cpuMsPerTransaction: [10, 12] as const,
};

const USAGE = `usage: npm run bench -- --tcc [--transactions N] [--concurrency 10,50] [--warmup W] [--quick] [--no-dtm]
  --transactions  measured TCC transactions per variant and concurrency    (default 2000; --quick 100)
  --concurrency   clients, each with one transaction in flight; a list runs each   (default 10,50)
  --warmup        transactions per variant before the measured runs, not counted   (default N/10, at most 50)
One transaction: Try, then Confirm, of stock (1 unit of one SKU), one coupon and ${POINTS} points. Variants, side by side:
  direct      payflow's participants called from the bench (no Temporal)
  local       one workflow per transaction: the three Tries as one local activity, the three Confirms as another
  native      the same as local, its client on the worker's own (Rust) connection: the control for eager
  eager       native, started eagerly: the start hands its first workflow task straight to this process's worker,
              with no trip through the server's task queue (when the server allows it: counted, and printed)
  activities  the same workflow with two activity tasks
  dtm         DTM v1.19.0's server (built once from the Go module proxy) coordinating the same Try and Confirm of the
              same rows, participants in Go behind DTM's barrier (tools/dtm-tcc); --no-dtm leaves it out
The worker runs in the bench process; its CPU and the Temporal server's (when it runs here) are reported per
transaction, as are DTM's driver (client and participants) and DTM's server.`;

interface TccOptions {
  transactions: number;
  concurrency: number[];
  warmup: number;
  quick: boolean;
  dtm: boolean;
}

/** `--concurrency 10,50` (or `=10,50`) taken out of argv: parseFlags knows single numbers only. */
function takeConcurrency(argv: string[]): { list?: string; rest: string[] } {
  const rest: string[] = [];
  let list: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--concurrency') list = argv[++i] ?? '';
    else if (arg.startsWith('--concurrency=')) list = arg.slice('--concurrency='.length);
    else rest.push(arg);
  }
  return { list, rest };
}

export function parseTccArgs(argv: string[]): TccOptions {
  const { list, rest } = takeConcurrency(argv);
  const flags = parseFlags(rest, { transactions: 'int', warmup: 'int', quick: 'flag', 'no-dtm': 'flag' }, USAGE);
  const quick = flags.quick === true;
  const transactions = (flags.transactions as number | undefined) ?? (quick ? 100 : 2000);
  let concurrency = [10, 50];
  if (list !== undefined) {
    concurrency = list.split(',').map((s) => Number(s.trim()));
    if (concurrency.length === 0 || concurrency.some((c) => !Number.isInteger(c) || c < 1 || c > 200))
      fail(`--concurrency takes whole numbers from 1 to 200, comma-separated; got "${list}"\n${USAGE}`);
    concurrency = [...new Set(concurrency)];
  }
  if (transactions > 100_000) fail(`--transactions at most 100000\n${USAGE}`);
  const warmup = (flags.warmup as number | undefined) ?? Math.min(50, Math.ceil(transactions / 10));
  return {
    transactions,
    concurrency: concurrency.map((c) => Math.min(c, transactions)),
    warmup,
    quick,
    dtm: flags['no-dtm'] !== true,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The participants, as the workflow's activities and as the direct variant calls them

/** The two steps over payflow's real participants: stock first, then the coupon, then the points (as openOrder). */
export function tccActivities(db: Knex): TccActivities {
  const benefits = createBenefitActivities(db);
  const coupon = (c: TccCall): BenefitCall => ({
    orderId: c.orderId,
    userId: c.userId,
    participant: 'coupon',
    resource: c.couponCode,
    quantity: COUPON_DISCOUNT,
  });
  const points = (c: TccCall): BenefitCall => ({
    orderId: c.orderId,
    userId: c.userId,
    participant: 'points',
    resource: c.userId,
    quantity: c.points,
  });
  return {
    async tccTry(c) {
      await tryReserveStock(db, c.orderId, [{ sku: c.sku, quantity: 1 }]);
      await benefits.tryBenefit(coupon(c));
      await benefits.tryBenefit(points(c));
    },
    async tccConfirm(c) {
      await confirmStock(db, c.orderId, [{ sku: c.sku, quantity: 1 }]);
      await benefits.confirmBenefit(coupon(c));
      await benefits.confirmBenefit(points(c));
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Temporal: the server at TEMPORAL_ADDRESS, else an in-memory dev server of the bench's own

interface TemporalServer {
  address: string;
  note: string;
  pid: number | undefined;
  ours: boolean;
}

async function temporalServer(base: Config): Promise<TemporalServer> {
  const address = base.temporalAddress;
  if (await isListening(address)) {
    const pid = /^(127\.|localhost:)/.test(address) ? pidListeningOn(Number(address.split(':').pop())) : undefined;
    log(`Temporal: using the server at ${address}`);
    return {
      address,
      pid,
      ours: false,
      note: `existing server at ${address}${pid ? ` (pid ${pid}; shared with whatever else uses it)` : ' (its CPU is not measured: no local process of this user listens there)'}`,
    };
  }
  const binary = ensureTemporalCli((l) => log(l));
  const own = `127.0.0.1:${await freePort()}`;
  log(`Temporal: nothing at ${address}; starting an in-memory headless dev server on ${own}`);
  const child = await startDevServer(
    binary,
    { address: own, namespace: base.temporalNamespace, headless: true, logLevel: 'error' },
    'ignore',
  );
  ownTemporalServer({ stop: () => stopChildProcess(child) });
  return {
    address: own,
    pid: child.pid,
    ours: true,
    note: `in-memory dev server at ${own} (pid ${child.pid}; started by the bench)`,
  };
}

/** Terminates the run's workflows still running (a run ended early on a shared server), so none is left behind. */
async function terminateLeftovers(client: Client, taskQueue: string): Promise<void> {
  let terminated = 0;
  try {
    await client.withDeadline(Date.now() + 30_000, async () => {
      const query = `TaskQueue = '${taskQueue}' AND ExecutionStatus = 'Running'`;
      for await (const wf of client.workflow.list({ query }))
        await client.workflow
          .getHandle(wf.workflowId, wf.runId)
          .terminate('left running by a bench --tcc run')
          .then(
            () => terminated++,
            () => undefined,
          );
    });
  } catch (err) {
    log(`could not clean up workflows on ${taskQueue}: ${errorText(err)}`);
  }
  if (terminated > 0) log(`terminated ${terminated} workflow(s) left running on ${taskQueue}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Seeding, running and checking one set of transactions

/** One run's transactions and the rows seeded for them; every id starts with `prefix-`. */
interface TxSet {
  prefix: string;
  sku: string;
  stockSeeded: number;
  calls: TccCall[];
}

/** A SKU with the run's stock, and per transaction a user with POINTS_SEEDED points and a coupon AVAILABLE to them. */
async function seed(db: Knex, prefix: string, n: number): Promise<TxSet> {
  const sku = `${prefix}-sku`;
  const stockSeeded = n + SPARE_STOCK;
  await db('products').insert({ sku, name: `TCC bench ${prefix}`, price: 1999, currency: 'CNY' });
  await db('stock').insert({ sku, available: stockSeeded, reserved: 0, sold: 0, total_in: stockSeeded, buckets: 1 });
  const calls = Array.from({ length: n }, (_, i) => ({
    orderId: `${prefix}-${i}`,
    userId: `${prefix}-u${i}`,
    sku,
    couponCode: `${prefix}-c${i}`,
    points: POINTS,
  }));
  await db.batchInsert(
    'coupons',
    calls.map((c) => ({
      code: c.couponCode,
      user_id: c.userId,
      discount: COUPON_DISCOUNT,
      currency: 'CNY',
      status: 'AVAILABLE',
    })),
    500,
  );
  await db.batchInsert(
    'user_points',
    calls.map((c) => ({ user_id: c.userId, available: POINTS_SEEDED, frozen: 0, spent: 0, total_in: POINTS_SEEDED })),
    500,
  );
  return { prefix, sku, stockSeeded, calls };
}

interface Books {
  ok: boolean;
  text: string;
  problems: string[];
}

/**
 * The idempotency records of a set: payflow's fences (every one CONFIRMED, 3 per transaction), or for `dtm` DTM's
 * barrier rows (a `try` and a `confirm` per branch, 3 branches per transaction, no `cancel`).
 */
async function checkFences(db: Knex, set: TxSet, variant: Variant, problems: string[]): Promise<string> {
  const n = set.calls.length;
  if (variant === 'dtm') {
    const rows = (await db('dtm_barrier')
      .where('gid', 'like', `${set.prefix}-%`)
      .groupBy('op')
      .select('op', db.raw('COUNT(*) AS n'))) as { op: string; n: number }[];
    const count = (op: string) => Number(rows.find((r) => r.op === op)?.n ?? 0);
    for (const op of ['try', 'confirm'])
      if (count(op) !== 3 * n) problems.push(`${count(op)} barrier ${op} rows of ${3 * n}`);
    const other = rows.filter((r) => r.op !== 'try' && r.op !== 'confirm');
    if (other.length) problems.push(`other barrier rows: ${other.map((r) => `${r.op} x${Number(r.n)}`).join(', ')}`);
    return `${count('confirm')} barrier confirms`;
  }
  const fences = (await db('tcc_fence')
    .where('xid', 'like', `${set.prefix}-%`)
    .groupBy('participant', 'status')
    .select('participant', 'status', db.raw('COUNT(*) AS n'))) as { participant: string; status: string; n: number }[];
  let confirmed = 0;
  for (const participant of ['stock', 'coupon', 'points']) {
    const count = Number(fences.find((f) => f.participant === participant && f.status === 'CONFIRMED')?.n ?? 0);
    confirmed += count;
    if (count !== n) problems.push(`${count} ${participant} fences CONFIRMED of ${n}`);
  }
  const other = fences.filter(
    (f) => f.status !== 'CONFIRMED' || !['stock', 'coupon', 'points'].includes(f.participant),
  );
  if (other.length)
    problems.push(`other fences: ${other.map((f) => `${f.participant} ${f.status} x${Number(f.n)}`).join(', ')}`);
  return `${confirmed} fences CONFIRMED`;
}

/**
 * Stock sold = transactions, every fence (or DTM barrier pair) in place, every coupon USED by its own order, points
 * spent exact; for `dtm`, also every global transaction `succeed` in DTM's store (`dtmStore`), none left for its cron.
 */
async function checkBooks(db: Knex, set: TxSet, variant: Variant, dtmStore?: string): Promise<Books> {
  const n = set.calls.length;
  const problems: string[] = [];
  const stock = (await db('stock').where('sku', set.sku).first('available', 'reserved', 'sold')) as
    { available: number | string; reserved: number | string; sold: number | string } | undefined;
  const sold = Number(stock?.sold ?? NaN);
  if (!stock) problems.push(`stock row ${set.sku} missing`);
  else {
    if (sold !== n) problems.push(`stock sold ${sold}, transactions ${n}`);
    if (Number(stock.reserved) !== 0) problems.push(`stock reserved ${stock.reserved}, expected 0`);
    if (Number(stock.available) !== set.stockSeeded - n)
      problems.push(`stock available ${stock.available}, expected ${set.stockSeeded - n}`);
  }

  let fenceText = await checkFences(db, set, variant, problems);
  if (variant === 'dtm' && dtmStore) {
    const rows = (await db(`${dtmStore}.trans_global`)
      .where('gid', 'like', `${set.prefix}-%`)
      .groupBy('status')
      .select('status', db.raw('COUNT(*) AS n'))) as { status: string; n: number }[];
    const succeeded = Number(rows.find((r) => r.status === 'succeed')?.n ?? 0);
    if (succeeded !== n) problems.push(`${succeeded} DTM transactions succeed of ${n}`);
    const other = rows.filter((r) => r.status !== 'succeed');
    if (other.length) problems.push(`DTM transactions ${other.map((r) => `${r.status} x${Number(r.n)}`).join(', ')}`);
    fenceText += `, ${succeeded} DTM transactions succeed`;
  }

  const coupons = (await db('coupons')
    .where('code', 'like', `${set.prefix}-c%`)
    .select('code', 'status', 'order_id')) as { code: string; status: string; order_id: string | null }[];
  const byCode = new Map(coupons.map((c) => [c.code, c]));
  let used = 0;
  const badCoupons: string[] = [];
  for (const call of set.calls) {
    const c = byCode.get(call.couponCode);
    if (c?.status === 'USED' && c.order_id === call.orderId) used++;
    else badCoupons.push(`${call.couponCode} ${c ? `${c.status} by ${c.order_id ?? 'nobody'}` : 'missing'}`);
  }
  if (badCoupons.length)
    problems.push(`${badCoupons.length} coupons not USED by their order, e.g. ${badCoupons.slice(0, 3).join('; ')}`);

  const points = (await db('user_points')
    .where('user_id', 'like', `${set.prefix}-u%`)
    .select('user_id', 'available', 'frozen', 'spent')) as {
    user_id: string;
    available: number | string;
    frozen: number | string;
    spent: number | string;
  }[];
  const pointsOf = new Map(points.map((p) => [p.user_id, p]));
  let spent = 0;
  const badPoints: string[] = [];
  for (const call of set.calls) {
    const p = pointsOf.get(call.userId);
    spent += Number(p?.spent ?? 0);
    if (!p || Number(p.spent) !== POINTS || Number(p.frozen) !== 0 || Number(p.available) !== POINTS_SEEDED - POINTS)
      badPoints.push(
        `${call.userId} ${p ? `available ${p.available} frozen ${p.frozen} spent ${p.spent}` : 'missing'}`,
      );
  }
  if (badPoints.length)
    problems.push(
      `${badPoints.length} users' points not exactly ${POINTS} spent, e.g. ${badPoints.slice(0, 3).join('; ')}`,
    );

  const ok = problems.length === 0;
  const text = ok
    ? `OK: stock sold ${sold} = ${n} transactions (0 reserved), ${fenceText}, ${used} coupons USED by their orders, points spent ${spent} = ${n} x ${POINTS} (0 frozen)`
    : `FAILED: ${problems.join('; ')}`;
  return { ok, text, problems };
}

/** Figures of one measured set. */
interface RunResult {
  variant: Variant;
  concurrency: number;
  warmup: boolean;
  transactions: number;
  completed: number;
  failed: number;
  errors: Record<string, number>;
  errorExamples: Record<string, string>;
  wallMs: number;
  transactionsPerSecond: number;
  latencyMs: Summary | null;
  cpu: {
    benchMsPerTransaction: number | null;
    temporalMsPerTransaction: number | null;
    benchPlusTemporalMsPerTransaction: number | null;
    mariadbMsPerTransaction: number | null;
    machineBusyPercent: number;
  };
  books: Books;
  /** `eager` only: transactions the server started eagerly (it may decline and dispatch through the task queue). */
  eagerlyStarted?: number;
}

/** The failure's kind: the ApplicationFailure type deep in a workflow or activity failure, else errorKind's. */
function failureKind(err: unknown): string {
  for (let e = err as { type?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (typeof e.type === 'string' && e.type) return e.type;
  }
  return errorKind(err);
}

/** The innermost failure's message (a workflow's failure wraps the activity's, which wraps the participant's). */
function innermostMessage(err: unknown): string {
  let e = err as { message?: string; cause?: unknown } | undefined;
  while (e && typeof e.cause === 'object' && e.cause !== null) e = e.cause as typeof e;
  return e?.message ?? errorText(err);
}

const mariadbCpuMs = () => commandCpuMs('mariadbd') ?? commandCpuMs('mysqld');

/** One set's transactions as run: latencies of the completed ones, failures, and the client side's CPU over the run. */
interface Executed {
  latencies: number[];
  errors: Record<string, number>;
  examples: Record<string, string>;
  failed: number;
  wallMs: number;
  clientCpuMs: number;
}

/** The set run from this process: `concurrency` clients, each with one transaction in flight (payflow's variants). */
async function runInProcess(
  set: TxSet,
  concurrency: number,
  label: string,
  execute: (call: TccCall) => Promise<void>,
): Promise<Executed> {
  const latencies: number[] = [];
  const errors = new Tally();
  const examples: Record<string, string> = {};
  const stopProgress = startProgress(
    () => `${label}: ${latencies.length}/${set.calls.length} done${errors.total ? `, ${errors.total} failed` : ''}`,
  );
  const own0 = process.cpuUsage();
  const t0 = performance.now();
  await inParallel(set.calls, concurrency, async (call) => {
    const started = performance.now();
    try {
      await execute(call);
      latencies.push(performance.now() - started);
    } catch (err) {
      const kind = failureKind(err);
      errors.add(kind);
      examples[kind] ??= innermostMessage(err).slice(0, 300);
    }
  });
  const wallMs = performance.now() - t0;
  const own = process.cpuUsage(own0);
  stopProgress();
  return {
    latencies,
    errors: errors.toJSON(),
    examples,
    failed: errors.total,
    wallMs,
    clientCpuMs: (own.user + own.system) / 1000,
  };
}

/**
 * Runs a set (`execute`), then checks the books. `coordinatorPid` is the Temporal server's or DTM's: its CPU over
 * the run is the coordinator's share; the client side's (this process, or DTM's driver) comes from `execute`.
 */
async function runSet(
  db: Knex,
  set: TxSet,
  variant: Variant,
  concurrency: number,
  warmup: boolean,
  coordinatorPid: number | undefined,
  execute: (label: string) => Promise<Executed>,
  dtmStore?: string,
): Promise<RunResult> {
  const label = `${variant}${warmup ? ' warm-up' : ''} @ ${concurrency}`;
  const machine0 = machineCpu();
  const temporal0 = processCpuMs(coordinatorPid);
  const mariadb0 = mariadbCpuMs();
  const run = await execute(label);
  const temporal1 = processCpuMs(coordinatorPid);
  const mariadb1 = mariadbCpuMs();
  const machine1 = machineCpu();

  const { latencies, wallMs } = run;
  const completed = latencies.length;
  const per = (ms: number | undefined) =>
    ms === undefined || completed === 0 ? null : Math.round((ms / completed) * 100) / 100;
  const benchMs = run.clientCpuMs;
  const temporalMs = temporal0 === undefined || temporal1 === undefined ? undefined : temporal1 - temporal0;
  const mariadbMs = mariadb0 === undefined || mariadb1 === undefined ? undefined : mariadb1 - mariadb0;
  const books = await checkBooks(db, set, variant, dtmStore);
  log(`books after ${label}: ${books.text}`);
  return {
    variant,
    concurrency,
    warmup,
    transactions: set.calls.length,
    completed,
    failed: run.failed,
    errors: run.errors,
    errorExamples: run.examples,
    wallMs: Math.round(wallMs),
    transactionsPerSecond: perSecond(completed, wallMs),
    latencyMs: summarize(latencies),
    cpu: {
      benchMsPerTransaction: per(benchMs),
      temporalMsPerTransaction: per(temporalMs),
      benchPlusTemporalMsPerTransaction: temporalMs === undefined ? null : per(benchMs + temporalMs),
      mariadbMsPerTransaction: per(mariadbMs),
      machineBusyPercent:
        Math.round(((machine1.busy - machine0.busy) / Math.max(1, machine1.total - machine0.total)) * 1000) / 10,
    },
    books,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The mode

/** `xA-B`: a figure's ratio to the ends of one of DTM's ranges (the larger DTM figure gives the smaller ratio). */
function ratioToRange(value: number | null, range: readonly [number, number]): string {
  if (value === null) return 'n/a';
  return `x${(value / range[1]).toFixed(2)}-${(value / range[0]).toFixed(2)}`;
}

/** `xR`: a figure's ratio to DTM's, measured in the same run at the same concurrency. */
function ratioTo(value: number | null | undefined, dtm: number | null | undefined): string {
  if (value === null || value === undefined || !dtm) return 'n/a';
  return `x${(value / dtm).toFixed(2)}`;
}

/** One concurrency's variants side by side, each against DTM measured beside it, and issue #16's DTM figures. */
function sideBySide(results: RunResult[]): string {
  const ms = (v: number | null) => (v === null ? 'n/a' : v.toFixed(2));
  const dtm = results.find((r) => r.variant === 'dtm');
  const issue = `DTM ${DTM.version} (issue #16)`;
  const rows: [string, (r: RunResult) => string, string][] = [
    [
      'transactions done / asked',
      (r) => `${r.completed}/${r.transactions}${r.failed ? ` (${r.failed} failed)` : ''}`,
      "issue's machine",
    ],
    ['transactions/s', (r) => r.transactionsPerSecond.toFixed(1), DTM.transactionsPerSecond.join('-')],
    [
      'latency p50 / p99 ms',
      (r) => (r.latencyMs ? `${r.latencyMs.p50.toFixed(1)} / ${r.latencyMs.p99.toFixed(1)}` : 'n/a'),
      'n/a',
    ],
    ['client + participants CPU ms/tx', (r) => ms(r.cpu.benchMsPerTransaction), '-'],
    ['coordinator CPU ms/tx', (r) => ms(r.cpu.temporalMsPerTransaction), '-'],
    ['both CPU ms/tx', (r) => ms(r.cpu.benchPlusTemporalMsPerTransaction), `${DTM.cpuMsPerTransaction.join('-')} *`],
    ['MariaDB CPU ms/tx (shared)', (r) => ms(r.cpu.mariadbMsPerTransaction), '-'],
    [
      'both + MariaDB CPU ms/tx',
      (r) =>
        ms(
          r.cpu.benchPlusTemporalMsPerTransaction === null || r.cpu.mariadbMsPerTransaction === null
            ? null
            : r.cpu.benchPlusTemporalMsPerTransaction + r.cpu.mariadbMsPerTransaction,
        ),
      '-',
    ],
    ['transactions/s vs DTM here', (r) => ratioTo(r.transactionsPerSecond, dtm?.transactionsPerSecond), '-'],
    [
      'both CPU vs DTM here',
      (r) => ratioTo(r.cpu.benchPlusTemporalMsPerTransaction, dtm?.cpu.benchPlusTemporalMsPerTransaction),
      '-',
    ],
    ["transactions/s vs issue's DTM", (r) => ratioToRange(r.transactionsPerSecond, DTM.transactionsPerSecond), 'x1'],
    ['machine busy', (r) => `${r.cpu.machineBusyPercent}%`, '-'],
    ['wall time', (r) => `${(r.wallMs / 1000).toFixed(1)} s`, '-'],
    ['books', (r) => (r.books.ok ? 'OK' : 'FAILED'), '-'],
  ];
  const header = ['', ...results.map((r) => r.variant), issue];
  const cells = [header, ...rows.map(([label, f, d]) => [label, ...results.map(f), d])];
  const widths = header.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  return cells.map((row) => `  ${row.map((c, i) => c.padEnd(widths[i]!)).join('   ')}`.trimEnd()).join('\n');
}

/** DTM's server and driver, started for the run; or why the `dtm` variant does not run. */
async function startDtm(
  db: Knex,
  url: string,
  database: string,
  stamp: string,
): Promise<{ binaries: DtmBinaries; server: DtmServer; storeDb: string } | { unavailable: string }> {
  try {
    const binaries = ensureDtm(log);
    const storeDb = `${database}_dtm`;
    await prepareDtmTables(db, storeDb, binaries, log);
    const logFile = join(REPORTS_DIR, `bench-tcc-${stamp}.dtm.log`);
    const server = await startDtmServer(binaries, url, storeDb, logFile);
    ownHelperProcess(server);
    log(
      `DTM v${DTM_VERSION}: server at ${server.api} (pid ${server.pid}; store ${storeDb}; log ${relative(ROOT, logFile)})`,
    );
    return { binaries, server, storeDb };
  } catch (err) {
    const reason = errorText(err);
    log(`DTM: not run (${reason}); the other variants still run`);
    return { unavailable: reason };
  }
}

export async function runTccBench(argv: string[]): Promise<number> {
  const options = parseTccArgs(argv);
  const base = loadConfigOrExit();
  const startedAt = new Date().toISOString();
  const runId = randomBytes(4).toString('hex');
  const taskQueue = `bench-tcc-${runId}`;
  const stamp = startedAt.replace(/[:.]/g, '-');
  log(
    `tcc: ${options.transactions} transactions per variant (${VARIANTS.filter((v) => v !== 'dtm' || options.dtm).join(', ')}) at concurrency ${options.concurrency.join(', ')}, after ${options.warmup} warm-up transactions per variant`,
  );

  const server = await temporalServer(base);
  const url = process.env.DATABASE_URL ? base.databaseUrl : withDatabase(base.databaseUrl, DATABASE);
  const { database } = await prepareToolDatabase(url, 'bench', { log });
  const poolMax = Math.max(...options.concurrency) + 2;
  const db = createDb(url, { poolMax });

  // The SDK's own lines (warnings and worse) go to a log file, not between the bench's lines.
  const workerLog = join(REPORTS_DIR, `bench-tcc-${stamp}.worker.log`);
  installTemporalRuntime({
    logger: createLogger({
      level: 'warn',
      name: 'payflow-bench-tcc',
      destination: pino.destination({ dest: workerLog, mkdir: true, sync: true }),
    }),
  });
  const endpoint = { ...base, temporalAddress: server.address };
  const connection = await connectWorkerTemporal(endpoint);
  const client = await connectTemporal(endpoint);
  // Eager start needs the client on the worker's own connection: the worker that takes the first task is the one
  // sharing it.
  const eagerClient = new Client({ connection, namespace: base.temporalNamespace });
  const activities = tccActivities(db);
  log(`bundling the bench workflow (tools/bench-tcc-workflow.ts) for task queue ${taskQueue}`);
  const worker = await Worker.create({
    connection,
    namespace: base.temporalNamespace,
    taskQueue,
    workflowsPath: require.resolve('./bench-tcc-workflow'),
    activities,
    maxConcurrentActivityTaskExecutions: 100,
    // Slots above the polls: an eager start needs a free workflow-task slot in this worker when it is sent, and every
    // outstanding poll holds one (with the SDK's 40 and polls autoscaled to 40, 1 of 1,000 starts at 50 concurrent
    // found one).
    maxConcurrentWorkflowTaskExecutions: 100,
    // Polled as the production worker polls (WORKFLOW_TASK_POLLERS): every transaction is a new workflow.
    workflowTaskPollerBehavior: workflowTaskPollerBehavior(base.workflowTaskPollers),
  });

  /** Transactions whose workflow the server started eagerly (its first task in the start's answer). */
  const eagerStarts = new Set<string>();
  const perCall = (variant: Variant) => async (call: TccCall) => {
    if (variant === 'direct') {
      await activities.tccTry(call);
      await activities.tccConfirm(call);
      return;
    }
    const onWorkerConnection = variant === 'native' || variant === 'eager';
    const handle = await (onWorkerConnection ? eagerClient : client).workflow.start<typeof benchTcc>('benchTcc', {
      taskQueue,
      workflowId: call.orderId,
      args: [{ call, local: variant !== 'activities' }],
      requestEagerStart: variant === 'eager',
      // Nothing of a run outlives it for long on a shared server.
      workflowExecutionTimeout: '2m',
    });
    // The server may decline an eager start (no slot free in the worker, the feature off): counted, not assumed.
    if (handle.eagerlyStarted) eagerStarts.add(call.orderId);
    await handle.result();
  };

  const dtm = options.dtm ? await startDtm(db, url, database, stamp) : { unavailable: 'left out (--no-dtm)' };
  const variants = VARIANTS.filter((v) => v !== 'dtm' || !('unavailable' in dtm));
  const dtmUnavailable = 'unavailable' in dtm ? dtm.unavailable : undefined;
  /** The set's runner and its coordinator's pid: DTM's driver and server, or this process and the Temporal server. */
  const runner = (variant: Variant, set: TxSet, concurrency: number) => {
    if (variant !== 'dtm' || 'unavailable' in dtm)
      return {
        coordinatorPid: server.pid,
        execute: (label: string) => runInProcess(set, concurrency, label, perCall(variant)),
      };
    return {
      coordinatorPid: dtm.server.pid,
      execute: async (label: string): Promise<Executed> => {
        const stopProgress = startProgress(() => `${label}: ${set.calls.length} transactions in DTM's driver`);
        const started = performance.now();
        try {
          const r = await runDtmSet(
            dtm.binaries,
            dtm.server,
            url,
            { prefix: set.prefix, sku: set.sku, transactions: set.calls.length, points: POINTS },
            concurrency,
          );
          return {
            latencies: r.latenciesMs,
            errors: r.errors,
            examples: r.examples,
            failed: r.failed,
            wallMs: r.wallMs,
            clientCpuMs: r.cpuMs,
          };
        } catch (err) {
          // The driver died (or was killed): the set counts as failed, and the variants measured so far still print.
          return {
            latencies: [],
            errors: { driver: set.calls.length },
            examples: { driver: errorText(err).slice(0, 300) },
            failed: set.calls.length,
            wallMs: performance.now() - started,
            clientCpuMs: 0,
          };
        } finally {
          stopProgress();
        }
      },
    };
  };
  const measure = async (variant: Variant, set: TxSet, concurrency: number, warmup: boolean) => {
    const { coordinatorPid, execute } = runner(variant, set, concurrency);
    const store = 'storeDb' in dtm ? dtm.storeDb : undefined;
    const result = await runSet(db, set, variant, concurrency, warmup, coordinatorPid, execute, store);
    if (variant === 'eager') {
      result.eagerlyStarted = set.calls.filter((c) => eagerStarts.has(c.orderId)).length;
      log(`eager @ ${concurrency}: ${result.eagerlyStarted} of ${set.calls.length} workflows started eagerly`);
    }
    return result;
  };

  const warmups: RunResult[] = [];
  const results: RunResult[] = [];
  try {
    await worker.runUntil(async () => {
      // Every variant warmed up first (the worker's workflow code, JIT, the pool's connections), then measured in
      // turn at each concurrency.
      if (options.warmup > 0)
        for (const variant of variants) {
          if (runAbort.signal.aborted) break;
          const set = await seed(db, `tcc-${runId}-${variant}-w`, options.warmup);
          warmups.push(await measure(variant, set, Math.min(options.concurrency[0]!, options.warmup), true));
        }
      for (const concurrency of options.concurrency)
        for (const variant of variants) {
          if (runAbort.signal.aborted) break;
          const set = await seed(db, `tcc-${runId}-${variant}-c${concurrency}`, options.transactions);
          results.push(await measure(variant, set, concurrency, false));
        }
    });
  } finally {
    if (!server.ours && (runAbort.signal.aborted || [...warmups, ...results].some((r) => r.failed > 0)))
      await terminateLeftovers(client, taskQueue);
    await client.connection.close().catch(() => undefined);
    await connection.close().catch(() => undefined);
    if (!('unavailable' in dtm)) await dtm.server.stop();
    await db.destroy().catch(() => undefined);
  }
  if (runAbort.signal.aborted) log(`run ended early: ${abortReason()}`);

  const all = [...warmups, ...results];
  const ok =
    !runAbort.signal.aborted &&
    results.length === options.concurrency.length * variants.length &&
    all.every((r) => r.failed === 0 && r.books.ok);
  const report = {
    ok,
    command: commandLine(),
    startedAt,
    machine: machineFacts(),
    cpus: cpus().length,
    options,
    perTransaction: {
      stock: '1 unit of the run SKU (one stock row, no buckets)',
      coupon: `one coupon per transaction, AVAILABLE for its user (${COUPON_DISCOUNT} off)`,
      points: `${POINTS} points of the transaction's user (seeded ${POINTS_SEEDED})`,
      steps:
        'Try: tryReserveStock, coupon try, points try; Confirm: confirmStock, coupon confirm, points confirm (6 MySQL transactions)',
    },
    temporal: server.note,
    taskQueue,
    database,
    cpuFields:
      "benchMsPerTransaction: client and participants (this process; DTM's driver for dtm); temporalMsPerTransaction: the coordinator (the Temporal server; DTM's server for dtm)",
    dtm: {
      measured: dtmUnavailable === undefined,
      notRun: dtmUnavailable,
      version: DTM_VERSION,
      storeDatabase: 'storeDb' in dtm ? dtm.storeDb : undefined,
      issueFigures: DTM,
    },
    warmups,
    results,
    workerLog: relative(ROOT, workerLog),
  };
  const reportFile = writeReport('bench-tcc', report);

  console.log(`\nTCC benchmark ${ok ? '(every transaction done, books OK)' : '(FAILED: see books and errors)'}`);
  console.log(`  command   ${report.command}`);
  console.log(`  machine   ${report.machine}`);
  console.log(`  temporal  ${server.note}`);
  console.log(
    `  dtm       ${dtmUnavailable === undefined ? `DTM v${DTM_VERSION}, built from the Go module proxy; store ${'storeDb' in dtm ? dtm.storeDb : ''} on the same MariaDB` : `not run: ${dtmUnavailable}`}`,
  );
  console.log(`  database  ${database}; SDK log: ${logSummary(report.workerLog)} (${report.workerLog})`);
  console.log(
    `  one transaction: Try then Confirm of 1 unit of stock, 1 coupon, ${POINTS} points (6 MySQL transactions); ${options.transactions} per variant and concurrency, ${options.warmup} warm-up each first`,
  );
  for (const concurrency of options.concurrency) {
    const row = results.filter((r) => r.concurrency === concurrency);
    if (row.length === 0) continue;
    console.log(`\n  concurrency ${concurrency}`);
    console.log(sideBySide(row));
    const eager = row.find((r) => r.variant === 'eager');
    if (eager) console.log(`  eager: ${eager.eagerlyStarted} of ${eager.transactions} workflows started eagerly`);
  }
  console.log(`\n  ${DTM.label}: ${DTM.transactionsPerSecond.join('-')} transactions/s at ${DTM.cpuMsPerTransaction.join('-')} ms CPU each.
  * issue #16's CPU per transaction, set beside "both": client + participants (this process; DTM's driver) and the
    coordinator (the Temporal server; DTM's server). MariaDB's share is its own row (shared with anything else running);
    it holds DTM's store, while a dev server the bench starts keeps Temporal's history in its own memory (its
    persistence CPU is in the coordinator row), so compare "both + MariaDB" for the whole cost. The participants
    differ: payflow's also keep a fence quantity, the coupon's pricing check and stock holds per bucket, which
    tools/dtm-tcc's do not (both write the barrier or fence row, the business row and a timeline entry).
    "vs DTM here": ours / DTM's measured in this run at the same concurrency (transactions/s: higher is better; CPU:
    lower is better).
  direct: the participants called from the bench; local / activities: one workflow per transaction (in-process worker,
  task queue ${taskQueue}), Try and Confirm as 2 local activities / 2 activity tasks; native: local, its client on the
  worker's connection; eager: native, started with eager workflow start (the first workflow task comes back in the
  start's answer, to this process's worker); dtm: DTM's server coordinating
  tools/dtm-tcc's participants (Go, DTM's barrier, a conditional UPDATE and a timeline entry each), wait_result on (a transaction ends
  when every Confirm is done). CPU is per completed transaction.`);
  for (const r of all) {
    for (const [kind, count] of Object.entries(r.errors))
      console.log(
        `  ${r.variant}${r.warmup ? ' warm-up' : ''} @ ${r.concurrency}: ${kind} x${count}, e.g. ${r.errorExamples[kind]}`,
      );
    if (!r.books.ok)
      console.log(`  books ${r.variant}${r.warmup ? ' warm-up' : ''} @ ${r.concurrency}: ${r.books.problems[0]}`);
  }
  console.log(`  report: ${reportFile}`);
  return ok ? 0 : 1;
}
