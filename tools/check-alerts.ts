/**
 * `npm run alerts:check`: validates the Prometheus alert rules (ops/alerts/payflow-rules.yml) and runs their unit
 * tests (ops/alerts/payflow-rules.test.yml) with promtool, which it finds (PROMTOOL_PATH, PATH) or builds once from
 * the Go module proxy into the project's cache (several minutes the first time).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { goInstall } from './temporal-cli';

const PROMETHEUS_VERSION = '0.316.0'; // Prometheus v3.x is tagged v0.3xx.y in Go modules
const ALERTS = resolve(__dirname, '..', 'ops', 'alerts');

function findPromtool(): string {
  if (process.env.PROMTOOL_PATH) return process.env.PROMTOOL_PATH;
  for (const dir of (process.env.PATH ?? '').split(delimiter))
    if (dir && existsSync(join(dir, 'promtool'))) return join(dir, 'promtool');
  const base =
    process.env.PAYFLOW_CACHE_DIR ??
    join(process.env.XDG_CACHE_HOME ?? join(process.env.HOME ?? '/root', '.cache'), 'payflow');
  return goInstall({
    tool: 'promtool',
    module: 'github.com/prometheus/prometheus/cmd/promtool',
    version: PROMETHEUS_VERSION,
    dir: join(base, 'promtool'),
    label: `promtool (Prometheus module v${PROMETHEUS_VERSION})`,
    missing: 'No promtool and no Go toolchain to build it: install Prometheus (promtool) or set PROMTOOL_PATH',
    log: (line) => console.log(line),
  });
}

const promtool = findPromtool();
let failed = false;
for (const args of [
  ['check', 'rules', 'payflow-rules.yml'],
  ['test', 'rules', 'payflow-rules.test.yml'],
]) {
  console.log(`$ promtool ${args.join(' ')}`);
  const r = spawnSync(promtool, args, { cwd: ALERTS, stdio: 'inherit' });
  if (r.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
