/**
 * Bench-only experiment (BENCH_VM_WATCHDOG=off, tools/bench-harness.ts): measures what the Temporal SDK's
 * runaway-activation guard costs. The SDK enters the workflow sandbox with `vm` `runInContext(ctx, { timeout })` (its
 * isolateExecutionTimeout, 5 s) several times per activation, and Node starts and joins a watchdog thread for every
 * call that has a timeout. This preload, loaded in every thread of the system under test, drops that option in the
 * workflow threads only, so the same run can be measured without the per-call thread. Never used in production: the
 * guard is what fails a workflow task whose code loops forever instead of hanging the worker's workflow thread.
 */
'use strict';
const vm = require('node:vm');
const { isMainThread } = require('node:worker_threads');

if (!isMainThread) {
  const runInContext = vm.Script.prototype.runInContext;
  vm.Script.prototype.runInContext = function runInContextWithoutWatchdog(context, options) {
    if (options && typeof options === 'object' && options.timeout !== undefined) {
      const { timeout: _dropped, ...rest } = options;
      return runInContext.call(this, context, rest);
    }
    return runInContext.call(this, context, options);
  };
}
