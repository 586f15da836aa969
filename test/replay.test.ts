/**
 * Replay safety (README, "Changing workflow code safely"). Every history captured by `npm run histories:capture`
 * in test/histories/ (real executions of earlier and current workflow code) must replay against the workflow code
 * as it is now; a change that would break executions in flight fails here, before it is deployed. And the
 * `patched()` guard is shown to matter: the same workflow code with its guarded step switched on unconditionally
 * (src/workflows/patches.ts swapped for test/fixtures/patches-always-on.ts) is non-deterministic on every v1
 * history that passes the step's insertion point.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ReplayResult, WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { historyCost } from '../tools/history-cost';
import { type History, historyFromJson } from '../tools/history-json';

const HISTORIES = join(__dirname, 'histories');
const WORKFLOWS = join(__dirname, '..', 'src', 'workflows');
/** Scenarios every capture (every label) must hold, so the test cannot pass on an empty or partial folder. */
const REQUIRED_SCENARIOS = ['happy-path', 'lost-callback', 'expiry', 'review-refund', 'cooling-off-refund'];
/** The capture of the code from before the payment-receipt step; the guard test replays it. */
const BEFORE_RECEIPT = 'v1';

const quiet = { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} };
const files = readdirSync(HISTORIES)
  .filter((f) => f.endsWith('.json'))
  .sort();
const labelOf = (file: string) => file.slice(0, file.indexOf('-'));
const scenarioOf = (file: string) => file.slice(file.indexOf('-') + 1, -'.json'.length);
const load = (file: string): History => historyFromJson(JSON.parse(readFileSync(join(HISTORIES, file), 'utf8')));

/** Replays the files with one replay worker; the file name stands in for the workflow id. */
async function replay(
  bundle: WorkflowBundleWithSourceMap,
  names: string[],
): Promise<Map<string, ReplayResult['error']>> {
  const results = new Map<string, ReplayResult['error']>();
  const histories = names.map((name) => ({ workflowId: name, history: load(name) }));
  for await (const result of Worker.runReplayHistories(
    { workflowBundle: bundle, replayName: 'payflow-replay' },
    histories,
  )) {
    results.set(result.workflowId, result.error);
  }
  if (results.size !== names.length) throw new Error(`replayed ${results.size} of ${names.length} histories`);
  return results;
}

/** True when the execution marked its order PAID (so it passed the point where the receipt step was inserted). */
function marksPaid(history: History): boolean {
  return (history.events ?? []).some((e) => {
    const a = e.activityTaskScheduledEventAttributes;
    if (a?.activityType?.name !== 'transitionOrder') return false;
    const data = a.input?.payloads?.[0]?.data;
    return data != null && (JSON.parse(Buffer.from(data).toString('utf8')) as { to?: string }).to === 'PAID';
  });
}

/** The workflow code with src/workflows/patches.ts swapped for test/fixtures/<fixture>.ts by a webpack alias. */
async function bundleWith(fixture: string): Promise<WorkflowBundleWithSourceMap> {
  const bundle = await bundleWorkflowCode({
    workflowsPath: require.resolve(WORKFLOWS),
    logger: quiet as never,
    webpackConfigHook: (config) => ({
      ...config,
      resolve: {
        ...config.resolve,
        alias: {
          ...(config.resolve?.alias as Record<string, string> | undefined),
          [`${join(WORKFLOWS, 'patches')}$`]: join(__dirname, 'fixtures', `${fixture}.ts`),
        },
      },
    }),
  });
  expect(bundle.code).toContain(fixture);
  return bundle;
}

let current: WorkflowBundleWithSourceMap;
let currentResults: Map<string, ReplayResult['error']>;

beforeAll(async () => {
  // Core's own logs go to the quiet logger too: the guard test provokes non-determinism warnings on purpose.
  Runtime.install({ logger: quiet as never, telemetryOptions: { logging: { forward: {}, filter: 'ERROR' } } });
  current = await bundleWorkflowCode({ workflowsPath: require.resolve(WORKFLOWS), logger: quiet as never });
  currentResults = await replay(current, files);
}, 180_000);

describe('captured histories', () => {
  test('the folder holds every required scenario for each captured version, including the capture from before the receipt step', () => {
    // Versions captured by the tool are labelled v<N>; other files (e.g. a production history saved with
    // `temporal workflow show --output json`) are replayed too but need not cover the scenarios.
    const labels = [...new Set(files.map(labelOf))].filter((l) => /^v\d+$/.test(l));
    expect(labels).toEqual(expect.arrayContaining([BEFORE_RECEIPT, 'v2', 'v3', 'v4']));
    for (const label of labels) {
      const scenarios = files.filter((f) => labelOf(f) === label).map(scenarioOf);
      expect({ label, scenarios }).toEqual({ label, scenarios: expect.arrayContaining(REQUIRED_SCENARIOS) });
    }
    // A latePayment execution is captured too, and every order workflow type: orderPayment (v1, v2: executions still
    // running when orderLifecycle was deployed), orderLifecycle (v3) and orderLifecycleV2 (v4).
    const types = new Set(
      files.map((f) => load(f).events?.[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name),
    );
    expect([...types]).toEqual(
      expect.arrayContaining(['latePayment', 'orderPayment', 'orderLifecycle', 'orderLifecycleV2']),
    );
  });

  test.each(files)('%s replays against the current workflow code', (file) => {
    expect(currentResults.has(file)).toBe(true);
    const error = currentResults.get(file);
    expect(error && `${error.name}: ${error.message}`).toBeUndefined();
  });
});

describe('the patched() guard of the payment-receipt step', () => {
  let unguarded: WorkflowBundleWithSourceMap;
  const before = files.filter(
    (f) =>
      labelOf(f) === BEFORE_RECEIPT &&
      load(f).events?.[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name === 'orderPayment',
  );
  const passing = before.filter((f) => marksPaid(load(f)));
  const notPassing = before.filter((f) => !marksPaid(load(f)));

  beforeAll(async () => {
    // The same workflow code, with patches.ts aliased to a fixture whose checks are always true (no patched() call).
    unguarded = await bundleWith('patches-always-on');
  }, 180_000);

  test('the fixture stands in for every patch function (a missing one would be undefined in the aliased bundle)', async () => {
    const real = Object.keys(await import('../src/workflows/patches')).filter((k) => k.endsWith('Step'));
    const fixture = Object.keys(await import('./fixtures/patches-always-on'));
    expect(fixture.sort()).toEqual(real.sort());
  });

  test('v1 histories on both sides of the insertion point are present', () => {
    expect(passing.map(scenarioOf)).toEqual(
      expect.arrayContaining(['happy-path', 'lost-callback', 'cooling-off-refund']),
    );
    expect(notPassing.map(scenarioOf)).toEqual(expect.arrayContaining(['expiry', 'review-refund']));
  });

  test('unguarded, every v1 history that reaches PAID fails replay with a non-determinism error', async () => {
    const results = await replay(unguarded, passing);
    for (const file of passing) {
      const error = results.get(file);
      expect({ file, error: error?.name }).toEqual({ file, error: 'DeterminismViolationError' });
      expect(error).toBeInstanceOf(DeterminismViolationError);
      expect(error!.message).toMatch(/nondeterminism/i);
    }
  }, 120_000);

  test('unguarded, v1 histories that never reach PAID still replay (the failure is the inserted step, nothing else)', async () => {
    const results = await replay(unguarded, notPassing);
    for (const file of notPassing)
      expect({ file, error: results.get(file)?.message }).toEqual({ file, error: undefined });
  }, 120_000);

  test('guarded (the real patches module), the same v1 histories replay', () => {
    for (const file of passing)
      expect({ file, error: currentResults.get(file)?.message }).toEqual({ file, error: undefined });
  });
});

describe('the merged setup and hand-off: a new type (orderLifecycleV2), the previous one (orderLifecycle) kept for draining', () => {
  const ofType = (label: string, type: string) =>
    files.filter(
      (f) =>
        labelOf(f) === label &&
        load(f).events?.[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name === type,
    );
  const v3 = ofType('v3', 'orderLifecycle');
  const v4 = ofType('v4', 'orderLifecycleV2');
  const localActivities = (f: string) => historyCost(load(f).events ?? []).activityTypes;

  test('v3 histories (orderLifecycle: openOrder, then createProviderPayment) and v4 histories (orderLifecycleV2: one openOrderWithPayment) are present', () => {
    expect(v3.length).toBeGreaterThanOrEqual(REQUIRED_SCENARIOS.length);
    expect(v4.length).toBeGreaterThanOrEqual(REQUIRED_SCENARIOS.length);
    for (const f of v3) expect({ f, first: localActivities(f)[0] }).toEqual({ f, first: 'openOrder' });
    for (const f of v4) expect({ f, first: localActivities(f)[0] }).toEqual({ f, first: 'openOrderWithPayment' });
  });

  test('a v3 history presented as the new type fails replay with a non-determinism error: the type is what keeps it safe', async () => {
    // The same events with only the type name changed: the merged steps meet openOrder's marker where they expect
    // openOrderWithPayment's.
    const renamed = v3.map((f) => {
      const history = load(f);
      const started = history.events![0]!.workflowExecutionStartedEventAttributes!;
      started.workflowType = { name: 'orderLifecycleV2' };
      return { workflowId: f, history };
    });
    const errors: Record<string, string | undefined> = {};
    for await (const r of Worker.runReplayHistories(
      { workflowBundle: current, replayName: 'payflow-renamed' },
      renamed,
    ))
      errors[r.workflowId] = r.error?.name;
    expect(Object.keys(errors).sort()).toEqual([...v3].sort());
    for (const f of v3) expect({ f, error: errors[f] }).toEqual({ f, error: 'DeterminismViolationError' });
  }, 120_000);

  test('as recorded, the v3 histories replay against the current code, and so do the v4 ones', () => {
    for (const file of [...v3, ...v4])
      expect({ file, error: currentResults.get(file)?.message }).toEqual({ file, error: undefined });
  });
});
