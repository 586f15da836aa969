/**
 * Provisioning of the Temporal CLI (dev server + Web UI): find an existing binary, else the cached one,
 * else build it once from the Go module proxy with visible progress; then start `temporal server start-dev`.
 *
 *   tsx tools/temporal-cli.ts ensure   # prints the binary path
 *   tsx tools/temporal-cli.ts dev      # runs the dev server in the foreground (file persistence under data/)
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { connect } from 'node:net';
import { homedir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { searchAttributeFlags } from '../src/temporal/connection';

/** The pinned CLI version: the newest whose go.mod installs with `go install` (temporal-notes.md). */
export const TEMPORAL_CLI_VERSION = '1.5.1';
const MODULE = 'github.com/temporalio/cli/cmd/temporal';

/** Where the built binary is cached: outside the clone, so CI's fresh clones reuse it. */
export function cacheDir(): string {
  const base =
    process.env.PAYFLOW_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'payflow');
  return join(base, `temporal-${TEMPORAL_CLI_VERSION}`);
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

export function findGo(): string | undefined {
  return onPath('go') ?? (existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : undefined);
}

/** Finds or builds the temporal binary: TEMPORAL_CLI_PATH, then PATH, then the cache, then `go install`. */
export function ensureTemporalCli(log: (line: string) => void = (l) => console.log(l)): string {
  const configured = process.env.TEMPORAL_CLI_PATH;
  if (configured) {
    if (!existsSync(configured)) throw new Error(`TEMPORAL_CLI_PATH=${configured} does not exist`);
    return configured;
  }
  const fromPath = onPath('temporal');
  if (fromPath) return fromPath;
  return goInstall({
    tool: 'temporal',
    module: MODULE,
    version: TEMPORAL_CLI_VERSION,
    dir: cacheDir(),
    label: `Temporal CLI v${TEMPORAL_CLI_VERSION}`,
    missing:
      'No temporal binary found and no Go toolchain to build one. Install the Temporal CLI (https://docs.temporal.io/cli) and put it on PATH, or set TEMPORAL_CLI_PATH.',
    log,
  });
}

/**
 * Builds a Go command once from the Go module proxy into `dir` (GOBIN), with go's package progress on the terminal,
 * and returns its path; a binary already there is reused. For the Temporal CLI and the other Go tools the project
 * provisions itself (promtool for the alert rules).
 */
export function goInstall(spec: {
  tool: string;
  module: string;
  version: string;
  dir: string;
  label: string;
  missing: string;
  log: (line: string) => void;
}): string {
  const binary = join(spec.dir, spec.tool);
  if (existsSync(binary)) return binary;
  const go = findGo();
  if (!go) throw new Error(spec.missing);
  mkdirSync(spec.dir, { recursive: true });
  spec.log(`[${spec.tool}] building ${spec.label} from the Go module proxy into ${spec.dir}`);
  spec.log(
    `[${spec.tool}] the first build takes minutes on 2 cores; later runs reuse the binary. Package progress follows:`,
  );
  const started = Date.now();
  const result = spawnSync(go, ['install', '-v', `${spec.module}@v${spec.version}`], {
    env: { ...process.env, GOBIN: spec.dir, GOFLAGS: process.env.GOFLAGS ?? '-mod=mod' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (result.status !== 0 || !existsSync(binary))
    throw new Error(`go install of ${spec.label} failed (exit ${result.status})`);
  spec.log(`[${spec.tool}] built in ${Math.round((Date.now() - started) / 1000)}s: ${binary}`);
  return binary;
}

/** True when something accepts TCP connections at host:port. */
export function isListening(address: string, timeoutMs = 1000): Promise<boolean> {
  const [host, port] = address.split(':');
  return new Promise((done) => {
    const socket = connect({ host, port: Number(port) });
    const end = (ok: boolean) => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(timeoutMs, () => end(false));
    socket.once('connect', () => end(true));
    socket.once('error', () => end(false));
  });
}

/** Options for the dev server. */
export interface DevServerOptions {
  address: string;
  namespace: string;
  uiPort?: number;
  /** SQLite file for persistence across restarts; omitted = in memory. */
  dbFile?: string;
  headless?: boolean;
  logLevel?: string;
}

/** Arguments for `temporal server start-dev`, with the project's search attributes and the dynamic config it needs. */
export function devServerArgs(options: DevServerOptions): string[] {
  const [ip, port] = options.address.split(':');
  const args = [
    'server',
    'start-dev',
    '--ip',
    ip!,
    '--port',
    port!,
    '--namespace',
    options.namespace,
    '--log-level',
    options.logLevel ?? 'warn',
  ];
  if (options.headless) args.push('--headless');
  else args.push('--ui-port', String(options.uiPort ?? 8233));
  if (options.dbFile) {
    mkdirSync(resolve(options.dbFile, '..'), { recursive: true });
    args.push(
      '--db-filename',
      options.dbFile,
      '--sqlite-pragma',
      'journal_mode=wal',
      '--sqlite-pragma',
      'synchronous=normal',
    );
  }
  args.push(...searchAttributeFlags());
  for (const kv of [
    'frontend.enableExecuteMultiOperation=true',
    'frontend.enableUpdateWorkflowExecution=true',
    'system.enableEagerWorkflowStart=true',
    'frontend.workerVersioningWorkflowAPIs=true',
  ]) {
    args.push('--dynamic-config-value', kv);
  }
  return args;
}

/** Starts the dev server as a child process and waits until its frontend accepts connections. */
export async function startDevServer(
  binary: string,
  options: DevServerOptions,
  stdio: 'inherit' | 'ignore' = 'inherit',
): Promise<ChildProcess> {
  const child = spawn(binary, devServerArgs(options), { stdio: ['ignore', stdio, stdio] });
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`temporal dev server exited with code ${child.exitCode}`);
    if (await isListening(options.address)) return child;
    await new Promise((r) => setTimeout(r, 250));
  }
  child.kill('SIGTERM');
  throw new Error(`temporal dev server did not listen on ${options.address} within 60s`);
}

async function main(): Promise<void> {
  const command = process.argv[2] ?? 'ensure';
  const binary = ensureTemporalCli();
  if (command === 'ensure') {
    console.log(binary);
    return;
  }
  if (command === 'dev') {
    const address = process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
    if (await isListening(address)) {
      console.log(`[temporal] a server already listens on ${address}; not starting another`);
      return;
    }
    const child = await startDevServer(binary, {
      address,
      namespace: process.env.TEMPORAL_NAMESPACE ?? 'default',
      uiPort: Number(process.env.TEMPORAL_UI_PORT ?? 8233),
      dbFile: process.env.TEMPORAL_DB_FILE ?? resolve('data/temporal.db'),
    });
    console.log(
      `[temporal] dev server on ${address}, Web UI on http://127.0.0.1:${process.env.TEMPORAL_UI_PORT ?? 8233}`,
    );
    const stop = () => child.kill('SIGTERM');
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    await new Promise((r) => child.once('exit', r));
    return;
  }
  throw new Error(`unknown command ${command}; use ensure or dev`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(`[temporal] ${(err as Error).message}`);
    process.exit(1);
  });
}
