/**
 * Bench-only experiment (BENCH_PROMISE_STACKS=off, tools/bench-harness.ts): measures what the Temporal SDK's promise
 * stack tracking costs. In every workflow thread the SDK installs a V8 promise hook that, for every promise created
 * in workflow code (its own internals included: about 200 per order, 98 for the bench's reference workflow), compiles
 * two small functions and captures and source-maps a stack trace, so the Web UI's "Stack Trace" tab can show where a
 * running workflow waits. This preload makes `v8.promiseHooks.createHook` throw for the SDK's call in the workflow threads only; the SDK
 * then runs without the hook (the path it takes where the API does not exist, e.g. on Bun: "stack trace collection
 * will be disabled"). Never used in production by default: it removes that tab's content.
 */
'use strict';
const v8 = require('node:v8');
const { isMainThread } = require('node:worker_threads');

if (!isMainThread) {
  // Only the SDK's own hook (vm-shared.js): Node's AsyncLocalStorage, which the SDK uses too, creates promise hooks
  // through the same function.
  const createHook = v8.promiseHooks.createHook;
  v8.promiseHooks.createHook = function createHookUnlessTemporalStacks(hooks) {
    if (/[\\/]workflow[\\/]vm-shared\.js/.test(new Error().stack ?? '')) {
      throw new Error('promise stack tracking disabled by tools/no-promise-stacks.js (bench experiment)');
    }
    return createHook.call(this, hooks);
  };
}
