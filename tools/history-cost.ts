/**
 * What one workflow execution cost the server, read from its history: events, workflow tasks, activity executions
 * (task-queue activities and local activities alike), search-attribute upserts and fired timers. Used by the budget
 * test (test/history-budget.test.ts) and the benchmark.
 */
import { temporal } from '@temporalio/proto';

type Event = temporal.api.history.v1.IHistoryEvent;
const { EventType } = temporal.api.enums.v1;

export interface HistoryCost {
  events: number;
  workflowTasks: number;
  /** Activity executions the workflow used: scheduled activities plus local-activity markers. */
  activities: number;
  /** Their types, in history order. */
  activityTypes: string[];
  upserts: number;
  timersFired: number;
}

/** The local activity a marker records, if it is one. */
function localActivityType(e: Event): string | undefined {
  const m = e.markerRecordedEventAttributes;
  if (m?.markerName !== 'core_local_activity') return undefined;
  const data = m.details?.data?.payloads?.[0]?.data;
  if (data == null) return 'local';
  return (JSON.parse(Buffer.from(data).toString('utf8')) as { activity_type?: string }).activity_type ?? 'local';
}

export function historyCost(events: Event[]): HistoryCost {
  const activityTypes: string[] = [];
  let workflowTasks = 0;
  let upserts = 0;
  let timersFired = 0;
  for (const e of events) {
    if (e.eventType === EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED) workflowTasks++;
    else if (e.eventType === EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) upserts++;
    else if (e.eventType === EventType.EVENT_TYPE_TIMER_FIRED) timersFired++;
    else if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
      activityTypes.push(e.activityTaskScheduledEventAttributes?.activityType?.name ?? 'activity');
    else if (e.eventType === EventType.EVENT_TYPE_MARKER_RECORDED) {
      const type = localActivityType(e);
      if (type) activityTypes.push(type);
    }
  }
  return {
    events: events.length,
    workflowTasks,
    activities: activityTypes.length,
    activityTypes,
    upserts,
    timersFired,
  };
}
