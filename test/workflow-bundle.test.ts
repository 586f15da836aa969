/**
 * What the workflow bundle holds. Every module a workflow imports is evaluated again for each workflow the worker
 * keeps in its cache, so a heavy import is paid per open order: zod, pulled in through the API's contracts, cost
 * about 1.2 MB of memory per open order (measured with `npm run bench -- --open`, issue #16 point 8). The bundle the
 * worker runs may hold the Temporal SDK and the project's own workflow modules, nothing else.
 */
import { readFileSync } from 'node:fs';
import { testBundlePath } from './support/env';

/** Packages the SDK's workflow runtime itself needs. */
const ALLOWED_PACKAGES = ['@temporalio/common', '@temporalio/workflow', 'nexus-rpc', 'long', 'ms'];

const code = readFileSync(testBundlePath(), 'utf8');
const packages = [...new Set([...code.matchAll(/node_modules\/((?:@[^/]+\/)?[^/"'\s]+)/g)].map((m) => m[1]!))].sort();
const ownModules = [...new Set([...code.matchAll(/\.\/src\/[^"'\s]+\.ts/g)].map((m) => m[0]))].sort();

test('the workflow bundle holds no package beyond the SDK runtime (no zod, no I/O library)', () => {
  expect(packages.filter((p) => !ALLOWED_PACKAGES.includes(p))).toEqual([]);
  expect(packages).toContain('@temporalio/workflow'); // the scan reads the bundle at all
});

test('the workflow bundle holds only workflow modules and the light contracts they import', () => {
  const outside = ownModules.filter((m) => !m.startsWith('./src/workflows/'));
  expect(outside).toEqual([
    './src/contracts/bill-days.ts',
    './src/contracts/failures.ts',
    './src/contracts/log-context.ts',
    './src/contracts/order-workflow.ts',
    './src/contracts/search-attributes.ts',
  ]);
  expect(ownModules).toContain('./src/workflows/order/index.ts');
});
