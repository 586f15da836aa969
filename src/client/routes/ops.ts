/**
 * Ops endpoints (Bearer ADMIN_TOKEN): reconciliation runs — start one for a provider and bill day
 * (idempotent per provider + day; `rerun: true` for a new run of a finished day), read a run's report with
 * its differences and their resolutions, list runs, resolve a difference (once; it carries over to re-runs of the
 * day). Also the daily reconciliation Schedule and the gauges /metrics reads from MySQL.
 */
import { type Client, ScheduleAlreadyRunning } from '@temporalio/client';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { Knex } from 'knex';
import { z } from 'zod';
import type { Config } from '../../config';
import {
  BillDate,
  ReconciliationClass,
  ResolveItemRequest,
  type ScheduledReconciliationInput,
  StartReconciliationRequest,
  billDayHasEnded,
  billDayRange,
  billTimeZone,
  reconciliationScheduleId,
} from '../../contracts/reconciliation';
import { FailureType } from '../../contracts/failures';
import { ORDER_WORKFLOW_TYPES } from '../../contracts/order';
import type { ProviderRegistry } from '../../providers/types';
import { openDifferencesByDay, resolutionSummary, resolveItem } from '../../reconciliation/resolutions';
import { failedDaysBefore, listRuns, readItems, readRun, startReconciliation } from '../../reconciliation/runs';
import { withTemporalDeadline } from '../../temporal/calls';
import { ApiError, apiFailure, parseOr400 } from '../errors';
import { OPEN_DIFFERENCE_DAYS, type Metrics } from '../metrics';
import { requireAdmin } from './admin';
import { retryInBackground } from '../retry-in-background';

const ReportQuery = z
  .object({
    class: z
      .string()
      .transform((v) => v.split(',').filter(Boolean))
      .pipe(z.array(ReconciliationClass))
      .optional(),
    after: z.coerce.number().int().min(0).optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(200),
    /** Only the items an operator has resolved (true) or not (false). */
    resolved: z
      .enum(['true', 'false'])
      .transform((v) => v === 'true')
      .optional(),
  })
  .strict();

/** A run id as the routes accept it (anything else cannot name a run). */
const RUN_ID = /^[A-Za-z0-9_-]{1,96}$/;
/** An item id: a positive integer that a JavaScript number holds exactly. */
const ITEM_ID = /^[1-9]\d{0,14}$/;

const ListQuery = z.object({ provider: z.string().min(1).max(32).optional(), date: BillDate.optional() }).strict();

/** Providers that can deliver bills (have `billRows`). */
export function billProviders(providers: ProviderRegistry): string[] {
  return Object.entries(providers)
    .filter(([, p]) => typeof (p as { billRows?: unknown }).billRows === 'function')
    .map(([name]) => name);
}

/** Registers the /ops routes. */
export function registerOpsRoutes(
  app: FastifyInstance,
  deps: {
    db: Knex;
    client: Client;
    config: Pick<Config, 'adminToken' | 'taskQueue'>;
    providers: ProviderRegistry;
    /** The clock that decides whether a bill day has ended (ms since the epoch); default Date.now. */
    now?: () => number;
  },
): void {
  const { db, client, config } = deps;
  const now = deps.now ?? Date.now;

  app.post('/ops/reconciliations', async (request, reply) => {
    requireAdmin(request, config.adminToken);
    const body = parseOr400(StartReconciliationRequest, request.body);
    if (!billProviders(deps.providers).includes(body.provider)) {
      throw new ApiError(
        422,
        'PROVIDER_NOT_RECONCILABLE',
        `provider ${body.provider} is not configured here or has no bill download`,
        { provider: body.provider },
      );
    }
    const day = billDayRange(body.date, body.provider)!;
    if (day.start.getTime() > now()) {
      throw new ApiError(422, 'BILL_NOT_AVAILABLE', `the bill day ${body.date} has not begun yet`, { date: body.date });
    }
    // A day still going on has a partial bill: local payments recorded after it was fetched would be reported missing
    // at the provider, and the completed run would keep the rest of the day's lost callbacks from being repaired.
    if (!billDayHasEnded(body.date, body.provider, now())) {
      throw apiFailure(
        FailureType.BILL_DAY_NOT_ENDED,
        `the ${body.provider} bill day ${body.date} has not ended yet (it ends at ${day.end.toISOString()}, ` +
          `${billTimeZone(body.provider).zone} midnight); reconcile it once it has ended`,
        { date: body.date, endsAt: day.end.toISOString() },
      );
    }
    const { run, created } = await startReconciliation(db, client, config.taskQueue, { ...body, trigger: 'API' });
    return reply.code(created ? 202 : 200).send({ ...run, links: { self: `/ops/reconciliations/${run.id}` } });
  });

  app.get('/ops/reconciliations', async (request) => {
    requireAdmin(request, config.adminToken);
    const query = parseOr400(ListQuery, request.query);
    return { runs: await listRuns(db, query) };
  });

  app.get<{ Params: { id: string } }>('/ops/reconciliations/:id', async (request) => {
    requireAdmin(request, config.adminToken);
    const query = parseOr400(ReportQuery, request.query);
    const id = request.params.id;
    const run = RUN_ID.test(id) ? await readRun(db, id) : null;
    if (!run) throw new ApiError(404, 'RECONCILIATION_NOT_FOUND', `no reconciliation run ${id.slice(0, 100)}`);
    const items = await readItems(db, run.id, {
      classes: query.class,
      after: query.after,
      limit: query.limit,
      resolved: query.resolved,
    });
    // `resolved` and `unresolved` (by severity): what still needs a person once operators' resolutions count.
    const summary = await resolutionSummary(db, run.id);
    return { ...run, ...summary, items, nextAfter: items.length === query.limit ? items.at(-1)!.id : null };
  });

  // Marks a difference handled: who, what was done. Stored once per bill line (provider, merchant, day, row key, class
  // and detail), so it carries over to re-runs of the day and takes the line out of the open-differences gauge; asking
  // again answers the first resolution, never overwritten.
  app.post<{ Params: { id: string; itemId: string } }>(
    '/ops/reconciliations/:id/items/:itemId/resolution',
    async (request, reply) => {
      requireAdmin(request, config.adminToken);
      const body = parseOr400(ResolveItemRequest, request.body);
      const { id, itemId } = request.params;
      const notFound = () =>
        new ApiError(
          404,
          'RECONCILIATION_ITEM_NOT_FOUND',
          `no item ${itemId.slice(0, 20)} in reconciliation run ${id.slice(0, 100)}`,
        );
      if (!RUN_ID.test(id) || !ITEM_ID.test(itemId)) throw notFound();
      const result = await resolveItem(db, id, Number(itemId), body);
      if (result.outcome === 'NOT_FOUND') throw notFound();
      if (result.outcome === 'NOT_A_DIFFERENCE')
        throw new ApiError(
          409,
          'ITEM_NOT_A_DIFFERENCE',
          `item ${itemId} of ${id} is ${result.item.class}: only a difference can be resolved`,
          { class: result.item.class },
        );
      request.log.info(
        {
          runId: id,
          itemId: result.item.id,
          class: result.item.class,
          created: result.created,
          operator: body.operator,
        },
        result.created ? 'reconciliation difference resolved' : 'reconciliation difference already resolved',
      );
      return reply.code(result.created ? 201 : 200).send(result.item);
    },
  );
}

/**
 * Creates the daily reconciliation Schedule of every provider with bills (idempotent: an existing one gets the
 * configured spec again, so a changed RECONCILIATION_SCHEDULE applies). Each firing starts
 * `scheduledReconciliation`, which opens yesterday's run: the same run an operator would get from the API.
 */
export async function ensureReconciliationSchedules(
  client: Client,
  config: Pick<Config, 'taskQueue' | 'reconciliationSchedule'>,
  providers: ProviderRegistry,
  logger?: Pick<FastifyBaseLogger, 'info' | 'warn'>,
): Promise<string[]> {
  const cron = config.reconciliationSchedule;
  if (!cron) return [];
  const ids: string[] = [];
  for (const provider of billProviders(providers)) {
    const scheduleId = reconciliationScheduleId(config.taskQueue, provider);
    const args: [ScheduledReconciliationInput] = [{ provider, daysBack: 1 }];
    // Cron in the provider's bill time zone: "10:30" is 10:30 where the provider cuts its days.
    const spec = { cronExpressions: [cron], timezone: billTimeZone(provider).zone };
    const action = {
      type: 'startWorkflow' as const,
      workflowType: 'scheduledReconciliation',
      args,
      taskQueue: config.taskQueue,
      // Two deployments sharing a namespace fire at the same instant (the same cron and zone): an id without the task
      // queue made the second start "already started", and that deployment's day went unreconciled.
      workflowId: `scheduled-reconcile-${config.taskQueue}-${provider}`,
      staticSummary: `Daily ${provider} reconciliation of yesterday's bill`,
    };
    try {
      await client.schedule.create({
        scheduleId,
        spec,
        action,
        // A day missed while the server was down still gets reconciled; never two days' starts at once.
        policies: { overlap: 'BUFFER_ONE', catchupWindow: '1 day' },
      });
      logger?.info({ scheduleId, cron, timezone: spec.timezone }, 'reconciliation schedule created');
    } catch (err) {
      if (!(err instanceof ScheduleAlreadyRunning)) throw err;
      await client.schedule.getHandle(scheduleId).update((previous) => ({ ...previous, spec, action }));
    }
    ids.push(scheduleId);
  }
  return ids;
}

/**
 * Creates the reconciliation Schedules in the background (`ensure`), again after every failure until it succeeds (10 s,
 * doubling, at most 5 minutes): a Temporal that could not be reached when the API started, or a server that refused
 * the call, must not leave the service without its daily reconciliation (the safety net for lost notifications). Until the Schedules exist,
 * `payflow_reconciliation_schedule_ready` is 0 for each provider (alert PayflowReconciliationScheduleMissing); then 1.
 */
export function keepEnsuringReconciliationSchedules(options: {
  ensure: () => Promise<string[]>;
  providers: string[];
  metrics: Pick<Metrics, 'reconciliationScheduleReady'>;
  logger: Pick<FastifyBaseLogger, 'error' | 'info'>;
  retryMs?: number[];
}): { stop(): void; done: Promise<void> } {
  const { ensure, providers, metrics, logger } = options;
  const ready = (value: 0 | 1) => {
    for (const provider of providers) metrics.reconciliationScheduleReady.set({ provider }, value);
  };
  return retryInBackground({
    attempt: async () => {
      await ensure();
      ready(1);
    },
    onFailure: (err, attempt, retryInMs) => {
      ready(0);
      logger.error({ err, attempt, retryInMs }, 'reconciliation schedule not created; will retry');
    },
    retryMs: options.retryMs,
  });
}

/** An order AWAITING_PAYMENT this long after its deadline is overdue (the close and release take seconds). */
export const OVERDUE_AFTER_DEADLINE_MIN = 30;
/** An order AWAITING_PAYMENT with no deadline (its payment step never ran) this long after it was written is overdue. */
export const OVERDUE_WITHOUT_DEADLINE_MIN = 60;

/**
 * Refreshes the gauges that are facts elsewhere before a scrape: orders in review and overdue, the last reconciliation
 * per provider (MySQL), orders marked Stuck (Temporal visibility: the workflow sets that search attribute).
 */
export async function refreshOpsGauges(
  db: Knex,
  metrics: Metrics,
  providers: string[],
  client?: Client,
  callTimeoutMs = 5_000,
  logger?: Pick<FastifyBaseLogger, 'warn'>,
): Promise<void> {
  const [{ n }] = (await db('orders').where({ status: 'NEEDS_REVIEW' }).count({ n: '*' })) as [{ n: number }];
  metrics.ordersInReview.set(Number(n));
  // An order its workflow would have closed long ago: the workflow was terminated or failed (a reset revives it, the
  // runbook's "workflow closed, order still open"), or no worker runs. Its reservation hangs, and money paid for it is
  // only noted by latePayment (LEFT_FOR_REVIEW), so this is what pages (PayflowOrdersOverdue).
  const [{ overdue }] = (await db('orders')
    .where({ status: 'AWAITING_PAYMENT' })
    .andWhere((q) =>
      q
        .where('deadline', '<', db.raw(`NOW(3) - INTERVAL ${OVERDUE_AFTER_DEADLINE_MIN} MINUTE`))
        .orWhere((w) =>
          w
            .whereNull('deadline')
            .andWhere('created_at', '<', db.raw(`NOW(3) - INTERVAL ${OVERDUE_WITHOUT_DEADLINE_MIN} MINUTE`)),
        ),
    )
    .count({ overdue: '*' })) as [{ overdue: number }];
  metrics.ordersOverdue.set(Number(overdue));
  // Undelivered outbox messages (the index on published_at, id finds them), and how long the oldest has waited: a relay
  // that is off, or a receiver that keeps failing, shows here (alert PayflowOutboxStalled).
  const [[outbox]] = (await db.raw(
    `SELECT (SELECT COUNT(*) FROM outbox WHERE published_at IS NULL) AS n,
            (SELECT TIMESTAMPDIFF(SECOND, created_at, NOW(3)) FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 1)
              AS oldest`,
  )) as [[{ n: number | string; oldest: number | string | null }]];
  metrics.outboxBacklog.set(Number(outbox.n));
  metrics.outboxOldestUnpublished.set(Math.max(0, Number(outbox.oldest ?? 0)));
  // Temporal down (or its attributes not registered yet) costs this one gauge, not the MySQL ones after it.
  const stuck = client
    ? await withTemporalDeadline(client, callTimeoutMs, () =>
        client.workflow.count(
          `WorkflowType IN (${ORDER_WORKFLOW_TYPES.map((t) => `'${t}'`).join(', ')}) AND ExecutionStatus = 'Running' AND Stuck = true`,
        ),
      ).catch((err: unknown) => {
        // The gauge keeps its last value until Temporal answers again; this says why it is not fresh.
        logger?.warn({ err }, 'payflow_orders_stuck not refreshed: Temporal did not answer the count');
        return undefined;
      })
    : undefined;
  if (stuck) metrics.ordersStuck.set(stuck.count);
  // One series per provider, bill day and class: a new day's difference is an alert of its own (it pages afresh while
  // another day's is still firing) and a day whose differences are all resolved reads 0. About 32 days x 6 classes
  // per provider at most.
  const since = new Date(Date.now() - (OPEN_DIFFERENCE_DAYS + 1) * 86_400_000).toISOString().slice(0, 10);
  const open: Array<{ provider: string; billDate: string; class: string; count: number }> = [];
  const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
  for (const provider of providers) {
    metrics.reconciliationFailedDays.set(
      { provider },
      (await failedDaysBefore(db, provider, tomorrow, OPEN_DIFFERENCE_DAYS + 1, { finishedOnly: true })).length,
    );
    const last = (await db('reconciliation_runs')
      .where({ provider, status: 'COMPLETED' })
      .orderBy('finished_at', 'desc')
      .first('totals', 'finished_at')) as { totals: string | null; finished_at: Date } | undefined;
    if (!last) continue;
    const totals = JSON.parse(last.totals ?? '{}') as Record<string, number>;
    for (const cls of ReconciliationClass.options)
      metrics.reconciliationDifferences.set({ provider, class: cls }, totals[cls] ?? 0);
    metrics.reconciliationLastSuccess.set({ provider }, new Date(last.finished_at).getTime() / 1000);
    // What is still open: each day's latest completed run, without what operators resolved. The latest run of any day
    // (above) moves on to the next day's clean run, which would clear a day's unresolved MISSING_AT_PROVIDER with nobody
    // having fixed it.
    open.push(...(await openDifferencesByDay(db, provider, since)).map((o) => ({ provider, ...o })));
  }
  // Replaced at once (no await between): a day that left the window, or a provider no longer configured, disappears.
  metrics.reconciliationOpenDifferences.reset();
  for (const o of open)
    metrics.reconciliationOpenDifferences.set({ provider: o.provider, bill_date: o.billDate, class: o.class }, o.count);
}
