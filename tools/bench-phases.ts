/**
 * Phases of the default `npm run bench`: the same lifecycle clients (create -> pay -> PAID, tools/bench-harness.ts)
 * run against several workflows in one run, on the same Temporal server, MySQL and system-under-test process:
 *
 *  - `reference`        the bench's lean reference workflow (tools/bench-reference-workflow.ts): update-with-start
 *                       answered after one local activity, a signal, one more local activity, done. The engine's floor.
 *  - `reference-remote` the same with activity tasks instead of local activities (not run unless asked for).
 *  - `first`            real orders through POST /orders, started as the first type `orderPayment` (the API's
 *                       update-with-start with the type name swapped by a bench-only client interceptor; see
 *                       tools/bench-system.ts): same input, admission, MySQL, sandbox and callbacks. Not run unless
 *                       asked for (`--only`).
 *  - `before`           the same, started as the previous type `orderLifecycle` (two setup activities, a separate
 *                       hand-off).
 *  - `after`            real orders through POST /orders as the API starts them: `orderLifecycleV2`.
 *
 * Every phase is first warmed up (a few unmeasured orders each), then each is measured in turn: `orders` orders with
 * `concurrency` clients, CPU measured over the measured part only, then the history of a sample of its workflows read
 * and costed (tools/history-cost.ts).
 */
import { ORDER_WORKFLOW_TYPE } from '../src/contracts/order-workflow';
import type { OrderWorkflowType } from './bench-routes';
import type { Knex } from 'knex';
import { historyCost } from './history-cost';
import {
  type BenchSystem,
  type LifecycleDriver,
  Load,
  type Summary,
  abortReason,
  apiDriver,
  cpuMeter,
  errorKind,
  errorText,
  field,
  http,
  httpKind,
  log,
  perSecond,
  runAbort,
  runLifecycleClients,
  sleep,
  startProgress,
  summarize,
} from './bench-harness';

export const PHASES = ['reference', 'reference-remote', 'first', 'before', 'after'] as const;
export type PhaseName = (typeof PHASES)[number];
export const DEFAULT_PHASES: PhaseName[] = ['reference', 'before', 'after'];

export const PHASE_INFO: Record<PhaseName, { workflowType: string; how: string }> = {
  reference: { workflowType: 'benchReference (local activities)', how: 'bench route: update-with-start, signal' },
  'reference-remote': {
    workflowType: 'benchReference (activity tasks)',
    how: 'bench route: update-with-start, signal',
  },
  first: { workflowType: 'orderPayment', how: 'POST /orders (type swapped), pay at sandbox' },
  before: { workflowType: 'orderLifecycle', how: 'POST /orders (type swapped), pay at sandbox' },
  after: { workflowType: ORDER_WORKFLOW_TYPE, how: 'POST /orders, pay at sandbox' },
};

export interface PhaseOptions {
  orders: number;
  concurrency: number;
  warmup: number;
  historySample: number;
  /** Measured rounds per phase (`--rounds`): the phases alternate, round after round, on the same stock. */
  rounds?: number;
}

/** Mean, min and max of one figure over the sampled histories. */
export interface Spread {
  mean: number;
  min: number;
  max: number;
}

export interface HistorySample {
  sampled: number;
  events: Spread;
  workflowTasks: Spread;
  activities: Spread;
  upserts: Spread;
  /** Activity types (tasks and local activities) of the first sampled history, in order. */
  activityTypes: string[];
  errors: number;
}

export interface PhaseResult {
  phase: PhaseName;
  workflowType: string;
  ok: boolean;
  orders: number;
  paid: number;
  failed: number;
  wallTimeMs: number;
  ordersPerSecond: number;
  createLatencyMs: Summary | null;
  payToPaidLatencyMs: Summary | null;
  warmup: { orders: number; paid: number; failed: number };
  errors: Record<string, { count: number; example: string }>;
  /** Final statuses in MySQL of the phase's orders (reference: its rows in bench_reference). */
  finalStatuses: Record<string, number>;
  stock: { available: number; reserved: number; sold: number } | null;
  stockConsistent: boolean | null;
  history: HistorySample | null;
  cpu: {
    machineBusyPercent: number;
    systemUnderTestMs: number | null;
    temporalServerMs: number | null;
    loadGeneratorMs: number;
    appMsPerOrder: number | null;
    temporalMsPerOrder: number | null;
    text: string;
  };
  records: { n: number; orderId?: string; createMs?: number; payToPaidMs?: number; status?: string; error?: string }[];
}

const round1 = (v: number) => Math.round(v * 10) / 10;

function spread(values: number[]): Spread {
  if (values.length === 0) return { mean: NaN, min: NaN, max: NaN };
  return {
    mean: round1(values.reduce((a, b) => a + b, 0) / values.length),
    min: Math.min(...values),
    max: Math.max(...values),
  };
}

/** Reads and costs the histories of up to `count` workflows spread evenly over the list. */
export async function sampleHistories(
  system: BenchSystem,
  workflowIds: string[],
  count: number,
): Promise<HistorySample | null> {
  if (workflowIds.length === 0 || count <= 0) return null;
  const step = Math.max(1, workflowIds.length / count);
  const picked = [
    ...new Set(
      Array.from({ length: Math.min(count, workflowIds.length) }, (_, i) => workflowIds[Math.floor(i * step)]!),
    ),
  ];
  const costs: ReturnType<typeof historyCost>[] = [];
  let errors = 0;
  for (const id of picked) {
    try {
      const history = await system.temporal.withDeadline(Date.now() + 10_000, () =>
        system.temporal.workflow.getHandle(id).fetchHistory(),
      );
      costs.push(historyCost(history.events ?? []));
    } catch {
      errors++;
    }
  }
  if (costs.length === 0)
    return {
      sampled: 0,
      events: spread([]),
      workflowTasks: spread([]),
      activities: spread([]),
      upserts: spread([]),
      activityTypes: [],
      errors,
    };
  return {
    sampled: costs.length,
    events: spread(costs.map((c) => c.events)),
    workflowTasks: spread(costs.map((c) => c.workflowTasks)),
    activities: spread(costs.map((c) => c.activities)),
    upserts: spread(costs.map((c) => c.upserts)),
    activityTypes: costs[0]!.activityTypes,
    errors,
  };
}

/** The bench's reference workflow through the system's bench routes (tools/bench-routes.ts). */
export function referenceDriver(system: BenchSystem, idPrefix: string, local: boolean): LifecycleDriver {
  return {
    async create(_clientNo, n) {
      const id = `${idPrefix}-${n}`;
      try {
        const r = await http('POST', `${system.apiUrl}/bench/reference`, { id, local }, 40_000);
        if (r.status !== 201) return { error: `create: ${httpKind(r)}`, example: JSON.stringify(r.body) };
        return { orderId: id, workflowId: String(field(r.body, 'workflowId')) };
      } catch (err) {
        return { error: `create: ${errorKind(err)}`, example: errorText(err) };
      }
    },
    async pay(id) {
      try {
        const r = await http('POST', `${system.apiUrl}/bench/reference/${encodeURIComponent(id)}/pay`, {}, 20_000);
        if (r.status !== 200) return { error: `pay: ${httpKind(r)}`, example: JSON.stringify(r.body) };
      } catch (err) {
        return { error: `pay: ${errorKind(err)}`, example: errorText(err) };
      }
      return undefined;
    },
  };
}

/** Makes the system's API start orders as `type` (bench route). */
export async function setOrderWorkflowType(system: BenchSystem, type: OrderWorkflowType): Promise<void> {
  const r = await http('POST', `${system.apiUrl}/bench/order-workflow-type`, { type }, 10_000);
  if (r.status !== 200)
    throw new Error(`could not make the API start ${type}: ${httpKind(r)} ${JSON.stringify(r.body)}`);
}

async function orderStatuses(db: Knex, sku: string): Promise<Record<string, number>> {
  const rows = (await db('orders as o')
    .whereExists((q) =>
      q.select(db.raw('1')).from('order_lines as l').whereRaw('l.order_id = o.order_id').andWhere('l.sku', sku),
    )
    .select('o.status')
    .count({ n: '*' })
    .groupBy('o.status')
    .orderBy('o.status')) as { status: string; n: number | string }[];
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
}

async function referenceStatuses(db: Knex, idPrefix: string): Promise<Record<string, number>> {
  const rows = (await db('bench_reference')
    .where('id', 'like', `${idPrefix}-%`)
    .select('status')
    .count({ n: '*' })
    .groupBy('status')) as { status: string; n: number | string }[];
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
}

/** A phase set up and warmed up, ready to be measured. */
export interface PreparedPhase {
  phase: PhaseName;
  isReference: boolean;
  sku: string;
  idPrefix: string;
  /** The phase's clients: the warm-up's, or a measured round's (ids of the reference differ per round). */
  driver: (warm: boolean, round?: number) => LifecycleDriver;
  warm: Load;
}

/** Sends the API's order starts as this phase's workflow type (a no-op for the reference phases). */
async function selectPhase(system: BenchSystem, phase: PhaseName): Promise<void> {
  const type = { first: 'orderPayment', before: 'orderLifecycle', after: ORDER_WORKFLOW_TYPE } as const;
  if (phase === 'first' || phase === 'before' || phase === 'after') await setOrderWorkflowType(system, type[phase]);
}

/**
 * Sets a phase up (its product) and runs its warm-up: the same orders, not measured (JIT, connection pools, the
 * server's caches for a workflow type). The bench warms every phase up before measuring any, so that the first
 * measured phase does not pay for the process's own warm-up.
 */
export async function preparePhase(
  system: BenchSystem,
  phase: PhaseName,
  options: PhaseOptions,
): Promise<PreparedPhase> {
  const isReference = phase === 'reference' || phase === 'reference-remote';
  const sku = `bench-${system.runId}-${phase}`;
  const idPrefix = `${phase}-${system.runId}`;
  let driver: PreparedPhase['driver'];
  if (isReference) {
    driver = (warm, round = 1) =>
      referenceDriver(
        system,
        warm ? `${idPrefix}-warm` : round > 1 ? `${idPrefix}-r${round}` : idPrefix,
        phase === 'reference',
      );
  } else {
    await system.createProduct(sku, options.orders * (options.rounds ?? 1) + options.warmup);
    driver = (warm) => apiDriver(system, sku, warm ? `bench-warm-${phase}` : `bench-${phase}`);
  }
  const warm = new Load();
  if (options.warmup > 0) {
    await selectPhase(system, phase);
    log(`${phase}: warm-up, ${options.warmup} orders`);
    await runLifecycleClients(
      system,
      sku,
      Math.min(options.concurrency, options.warmup),
      (n) => n < options.warmup,
      warm,
      driver(true),
    );
  }
  return { phase, isReference, sku, idPrefix, driver, warm };
}

/**
 * Measures a prepared phase: the measured load, MySQL check, history sample. `round` (1-based, with `--rounds`): the
 * phase's earlier rounds left their orders on the same SKU, so the MySQL check counts them too.
 */
export async function runPhase(
  system: BenchSystem,
  prepared: PreparedPhase,
  options: PhaseOptions,
  round = 1,
): Promise<PhaseResult> {
  const { phase, isReference, sku, idPrefix, driver, warm } = prepared;
  await selectPhase(system, phase);
  await sleep(1000);
  const rounds = options.rounds ?? 1;
  log(
    `${phase}: ${rounds > 1 ? `round ${round}/${rounds}, ` : ''}${options.orders} orders (${PHASE_INFO[phase].workflowType}), ${options.concurrency} clients`,
  );
  const load = new Load();
  const cpu = cpuMeter(system);
  const stopProgress = startProgress(() => {
    const elapsed = (performance.now() - load.startedAt) / 1000;
    const rate = elapsed > 0 ? load.paid / elapsed : 0;
    return `${phase}: ${String(load.paid).padStart(String(options.orders).length)}/${options.orders} paid · ${load.created} created · ${load.failed} errors · ${load.inFlight} in flight · ${elapsed.toFixed(1)} s · ${rate.toFixed(1)} orders/s`;
  });
  await runLifecycleClients(system, sku, options.concurrency, (n) => n < options.orders, load, driver(false, round));
  stopProgress();
  const used = cpu();
  const notStarted = options.orders - Math.min(load.next, options.orders);
  if (notStarted > 0) {
    load.failed += notStarted;
    load.errors.set('not started', { count: notStarted, example: `the run ended early: ${abortReason()}` });
  }
  if (runAbort.signal.aborted) log(`run ended early: ${abortReason()}`);

  // What MySQL says (warm-up orders included: they share the phase's SKU).
  let finalStatuses: Record<string, number>;
  let stock: PhaseResult['stock'] = null;
  let stockConsistent: boolean | null = null;
  const total = options.orders * round + options.warmup;
  if (isReference) {
    finalStatuses = await referenceStatuses(system.db, idPrefix);
  } else {
    finalStatuses = await orderStatuses(system.db, sku);
    const row = (await system.db('stock').where({ sku }).first('available', 'reserved', 'sold')) as
      Record<string, number | string> | undefined;
    stock = row ? { available: Number(row.available), reserved: Number(row.reserved), sold: Number(row.sold) } : null;
    const holding = (finalStatuses.AWAITING_PAYMENT ?? 0) + (finalStatuses.NEEDS_REVIEW ?? 0);
    stockConsistent = runAbort.signal.aborted
      ? null
      : stock !== null &&
        stock.sold === (finalStatuses.PAID ?? 0) &&
        stock.reserved === holding &&
        stock.available + stock.reserved + stock.sold === options.orders * rounds + options.warmup;
  }
  const paidInDb = finalStatuses.PAID ?? 0;
  const expectedPaid = isReference ? options.orders * round + warm.paid : total;
  const ok =
    load.paid === options.orders &&
    load.failed === 0 &&
    warm.failed === 0 &&
    paidInDb === expectedPaid &&
    stockConsistent !== false;

  const history = await sampleHistories(
    system,
    load.records.filter((r) => r.status === 'PAID' && r.workflowId).map((r) => r.workflowId!),
    options.historySample,
  );
  const wallMs = load.endedAt - load.startedAt;
  const perOrder = (ms: number | undefined) => (ms === undefined || load.paid === 0 ? null : round1(ms / load.paid));
  return {
    phase,
    workflowType: PHASE_INFO[phase].workflowType,
    ok,
    orders: options.orders,
    paid: load.paid,
    failed: load.failed,
    wallTimeMs: Math.round(wallMs),
    ordersPerSecond: perSecond(load.paid, wallMs),
    createLatencyMs: load.createLatency(),
    payToPaidLatencyMs: load.payToPaidLatency(),
    warmup: { orders: options.warmup, paid: warm.paid, failed: warm.failed },
    errors: Object.fromEntries(
      [
        ...[...warm.errors].map(([k, v]): [string, { count: number; example: string }] => [`warm-up ${k}`, v]),
        ...load.errors,
      ].sort((a, b) => b[1].count - a[1].count),
    ),
    finalStatuses,
    stock,
    stockConsistent,
    history,
    cpu: {
      machineBusyPercent: used.machineBusyPercent,
      systemUnderTestMs: used.systemMs ?? null,
      temporalServerMs: used.temporalMs ?? null,
      loadGeneratorMs: used.loadGeneratorMs,
      appMsPerOrder: perOrder(used.systemMs),
      temporalMsPerOrder: perOrder(used.temporalMs),
      text: used.text,
    },
    records: load.records.map((r) => ({
      n: r.n,
      orderId: r.orderId,
      status: r.status,
      error: r.error,
      createMs: r.createMs === undefined ? undefined : round1(r.createMs),
      payToPaidMs: r.payToPaidMs === undefined ? undefined : round1(r.payToPaidMs),
    })),
  };
}

/**
 * One phase's rounds (`--rounds`) as one result: orders, wall time and CPU summed, so the rate is all the phase's
 * PAID orders over all its measured time; latencies over every order; the MySQL check and the stock of the last
 * round (it counts every round's orders); the history sample of the first.
 */
export function mergeRounds(rounds: PhaseResult[]): PhaseResult {
  const [first] = rounds;
  if (!first) throw new Error('mergeRounds: no rounds');
  if (rounds.length === 1) return first;
  const last = rounds[rounds.length - 1]!;
  const total = (f: (r: PhaseResult) => number) => rounds.reduce((sum, r) => sum + f(r), 0);
  const totalOrNull = (f: (r: PhaseResult) => number | null) =>
    rounds.some((r) => f(r) === null) ? null : total((r) => f(r)!);
  const paid = total((r) => r.paid);
  const wallMs = total((r) => r.wallTimeMs);
  const records = rounds.flatMap((r) => r.records);
  const values = (f: (r: PhaseResult['records'][number]) => number | undefined) =>
    records.map(f).filter((v): v is number => v !== undefined);
  const systemMs = totalOrNull((r) => r.cpu.systemUnderTestMs);
  const temporalMs = totalOrNull((r) => r.cpu.temporalServerMs);
  const perOrder = (ms: number | null) => (ms === null || paid === 0 ? null : round1(ms / paid));
  const errors: PhaseResult['errors'] = {};
  for (const r of rounds)
    for (const [kind, e] of Object.entries(r.errors))
      errors[kind] = { count: (errors[kind]?.count ?? 0) + e.count, example: errors[kind]?.example ?? e.example };
  return {
    ...last,
    ok: rounds.every((r) => r.ok),
    orders: total((r) => r.orders),
    paid,
    failed: total((r) => r.failed),
    wallTimeMs: wallMs,
    ordersPerSecond: perSecond(paid, wallMs),
    createLatencyMs: summarize(values((r) => r.createMs)),
    payToPaidLatencyMs: summarize(values((r) => r.payToPaidMs)),
    errors,
    history: first.history,
    cpu: {
      machineBusyPercent: round1(total((r) => r.cpu.machineBusyPercent * r.wallTimeMs) / (wallMs || 1)),
      systemUnderTestMs: systemMs,
      temporalServerMs: temporalMs,
      loadGeneratorMs: total((r) => r.cpu.loadGeneratorMs),
      appMsPerOrder: perOrder(systemMs),
      temporalMsPerOrder: perOrder(temporalMs),
      text: `${rounds.length} rounds: ${rounds.map((r) => r.cpu.text).join(' | ')}`,
    },
    records,
  };
}
