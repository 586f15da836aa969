/**
 * A self-hosted Temporal cluster on this machine: the real server (frontend, history, matching and worker services in
 * one process, several history shards) on PostgreSQL, its SQL tool, and the Web UI server. Each binary is built once
 * from the Go module proxy (like the Temporal CLI, tools/temporal-cli.ts) and cached outside the clone.
 *
 * The server runs its own config template (config/docker.yaml of go.temporal.io/server, the one the server image
 * renders) with the settings in docker/temporal.env, the file docker-compose.yml gives its `temporal` service, and
 * the dynamic config docker/temporal-dynamicconfig.yaml: what runs here is what compose describes.
 *
 *   tsx tools/temporal-cluster.ts ensure   # builds (or finds) the three binaries, with progress
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  statSync,
} from 'node:fs';
import { join, resolve } from 'node:path';
import { Connection } from '@temporalio/client';
import { cacheDir, goInstall, isListening } from './temporal-cli';

/** The pinned server version (the one the Temporal CLI 1.5.1 bundles, and the compose image's tag). */
export const TEMPORAL_SERVER_VERSION = '1.29.1';
/** The pinned Web UI server version (the compose image temporalio/ui's tag). */
export const TEMPORAL_UI_VERSION = '2.42.1';

const ROOT = resolve(__dirname, '..');
/** The shared server settings (compose env_file) and dynamic config. */
export const SERVER_SETTINGS_FILE = join(ROOT, 'docker', 'temporal.env');
export const DYNAMIC_CONFIG_FILE = join(ROOT, 'docker', 'temporal-dynamicconfig.yaml');

const SERVER_MODULE = 'go.temporal.io/server';
const UI_MODULE = 'github.com/temporalio/ui-server/v2';

/** The cache base (~/.cache/payflow or PAYFLOW_CACHE_DIR), as for the Temporal CLI. */
function cacheBase(): string {
  return resolve(cacheDir(), '..');
}

export function serverCacheDir(): string {
  return join(cacheBase(), `temporal-server-${TEMPORAL_SERVER_VERSION}`);
}

export function uiCacheDir(): string {
  return join(cacheBase(), `temporal-ui-server-${TEMPORAL_UI_VERSION}`);
}

/** The three binaries and the directories that hold what they read (config templates, schemas). */
export interface ClusterBinaries {
  server: string;
  sql: string;
  ui: string;
  /** --root of the server: holds config/docker.yaml. */
  serverRoot: string;
  /** --root of the UI server: holds config/docker.yaml. */
  uiRoot: string;
  /** schema/postgresql/v12/{temporal,visibility}/versioned live under this directory. */
  schemaDir: string;
}

function findGo(): string {
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir && existsSync(join(dir, 'go'))) return join(dir, 'go');
  if (existsSync('/usr/local/go/bin/go')) return '/usr/local/go/bin/go';
  throw new Error('no Go toolchain (go on PATH or /usr/local/go/bin/go) to fetch the Temporal server module');
}

/** The module's source directory in Go's module cache (downloaded when missing; quick when cached). */
function moduleDir(module: string, version: string): string {
  const result = spawnSync(findGo(), ['mod', 'download', '-json', `${module}@v${version}`], {
    encoding: 'utf8',
    env: { ...process.env, GOFLAGS: '-mod=mod' },
  });
  const info = JSON.parse(result.stdout || '{}') as { Dir?: string; Error?: string };
  if (!info.Dir) throw new Error(`go mod download ${module}@v${version} failed: ${info.Error ?? result.stderr}`);
  return info.Dir;
}

/** Files copied from Go's module cache are read-only; the copies should be removable like the rest of the cache. */
function writable(path: string): void {
  const stat = statSync(path);
  chmodSync(path, stat.isDirectory() ? 0o755 : stat.mode | 0o200);
  if (stat.isDirectory()) for (const entry of readdirSync(path)) writable(join(path, entry));
}

/**
 * Finds or builds the server, the SQL tool and the UI server (first build: about 4 minutes for the server on 2 cores,
 * seconds for the SQL tool, a minute or two for the UI server; later runs reuse the binaries), and copies the config
 * templates and schemas they need next to them.
 */
export function ensureClusterBinaries(log: (line: string) => void = (l) => console.log(l)): ClusterBinaries {
  const missing =
    'No Go toolchain to build the Temporal server (go on PATH or /usr/local/go/bin). Install Go, or use docker compose.';
  const serverDir = serverCacheDir();
  const uiDir = uiCacheDir();
  const server = goInstall({
    tool: 'server',
    module: `${SERVER_MODULE}/cmd/server`,
    version: TEMPORAL_SERVER_VERSION,
    dir: serverDir,
    label: `Temporal server v${TEMPORAL_SERVER_VERSION}`,
    missing,
    log,
  });
  const sql = goInstall({
    tool: 'sql',
    module: `${SERVER_MODULE}/cmd/tools/sql`,
    version: TEMPORAL_SERVER_VERSION,
    dir: serverDir,
    label: `temporal-sql-tool v${TEMPORAL_SERVER_VERSION}`,
    missing,
    log,
  });
  const ui = goInstall({
    tool: 'server',
    module: `${UI_MODULE}/cmd/server`,
    version: TEMPORAL_UI_VERSION,
    dir: uiDir,
    label: `Temporal Web UI server v${TEMPORAL_UI_VERSION}`,
    missing,
    log,
  });
  const serverTemplate = join(serverDir, 'config', 'docker.yaml');
  const schemaDir = join(serverDir, 'schema');
  if (!existsSync(serverTemplate) || !existsSync(join(schemaDir, 'postgresql'))) {
    const dir = moduleDir(SERVER_MODULE, TEMPORAL_SERVER_VERSION);
    mkdirSync(join(serverDir, 'config'), { recursive: true });
    cpSync(join(dir, 'config', 'docker.yaml'), serverTemplate);
    cpSync(join(dir, 'schema', 'postgresql'), join(schemaDir, 'postgresql'), { recursive: true });
    writable(serverDir);
  }
  if (!existsSync(join(uiDir, 'config', 'docker.yaml'))) {
    const dir = moduleDir(UI_MODULE, TEMPORAL_UI_VERSION);
    mkdirSync(join(uiDir, 'config'), { recursive: true });
    cpSync(join(dir, 'config', 'docker.yaml'), join(uiDir, 'config', 'docker.yaml'));
    writable(uiDir);
  }
  return { server, sql, ui, serverRoot: serverDir, uiRoot: uiDir, schemaDir };
}

/** KEY=VALUE lines of docker/temporal.env (comments and blank lines skipped). */
export function readServerSettings(file = SERVER_SETTINGS_FILE): Record<string, string> {
  const settings: Record<string, string> = {};
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`${file}: not KEY=VALUE: ${line}`);
    settings[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return settings;
}

/** Where the cluster keeps its data and listens. */
export interface ClusterOptions {
  /** Frontend gRPC port; the other services take the next nine ports (see clusterPorts). */
  frontendPort: number;
  /** Web UI port, or undefined for no UI. */
  uiPort?: number;
  namespace: string;
  postgres: { host: string; port: number; user: string; password: string };
  /** PostgreSQL database names (default: DBNAME and VISIBILITY_DBNAME of docker/temporal.env). */
  databases?: { temporal: string; visibility: string };
  /** Where the server's and the UI's output go. */
  logDir: string;
}

/** The ports of the four services: the frontend's and the nine after it. */
export function clusterPorts(frontendPort: number): Record<string, number> {
  const p = frontendPort;
  return {
    FRONTEND_GRPC_PORT: p,
    FRONTEND_MEMBERSHIP_PORT: p + 1,
    FRONTEND_HTTP_PORT: p + 2,
    HISTORY_GRPC_PORT: p + 3,
    HISTORY_MEMBERSHIP_PORT: p + 4,
    MATCHING_GRPC_PORT: p + 5,
    MATCHING_MEMBERSHIP_PORT: p + 6,
    WORKER_GRPC_PORT: p + 7,
    WORKER_MEMBERSHIP_PORT: p + 8,
  };
}

/** PostgreSQL from the environment (TEMPORAL_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432). */
export function postgresFromEnv(env: Record<string, string | undefined> = process.env): ClusterOptions['postgres'] {
  const url = new URL(env.TEMPORAL_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432');
  return {
    host: url.hostname,
    port: Number(url.port || 5432),
    user: decodeURIComponent(url.username || 'postgres'),
    password: decodeURIComponent(url.password),
  };
}

export function databaseNames(options: Pick<ClusterOptions, 'databases'>): { temporal: string; visibility: string } {
  const settings = readServerSettings();
  return (
    options.databases ?? {
      temporal: settings.DBNAME ?? 'temporal',
      visibility: settings.VISIBILITY_DBNAME ?? 'temporal_visibility',
    }
  );
}

/** The server's environment: the shared settings, then where this one runs. Nothing else leaks in from ours. */
export function serverEnvironment(options: ClusterOptions): Record<string, string> {
  const settings = readServerSettings();
  const { temporal, visibility } = databaseNames(options);
  const { host, port, user, password } = options.postgres;
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    ...settings,
    POSTGRES_SEEDS: host,
    DB_PORT: String(port),
    VISIBILITY_DB_PORT: String(port),
    POSTGRES_USER: user,
    POSTGRES_PWD: password,
    DBNAME: temporal,
    VISIBILITY_DBNAME: visibility,
    BIND_ON_IP: '127.0.0.1',
    TEMPORAL_BROADCAST_ADDRESS: '127.0.0.1',
    DYNAMIC_CONFIG_FILE_PATH: DYNAMIC_CONFIG_FILE,
    ...Object.fromEntries(Object.entries(clusterPorts(options.frontendPort)).map(([k, v]) => [k, String(v)])),
  };
}

function sqlTool(
  bin: ClusterBinaries,
  options: ClusterOptions,
  database: string,
  args: string[],
): { ok: boolean; output: string } {
  const { host, port, user, password } = options.postgres;
  const result = spawnSync(
    bin.sql,
    [
      '--plugin',
      readServerSettings().DB ?? 'postgres12',
      '--ep',
      host,
      '-p',
      String(port),
      '-u',
      user,
      '--pw',
      password,
      '--db',
      database,
      ...args,
    ],
    {
      encoding: 'utf8',
    },
  );
  return { ok: result.status === 0, output: `${result.stdout ?? ''}${result.stderr ?? ''}`.trim() };
}

/**
 * Creates the two databases when missing and brings their schemas to the version this server needs. Each step is
 * idempotent (tried here: create-database and setup-schema -v 0.0 leave an existing database and its schema version
 * alone, update-schema applies only the versions above the current one), as in the server image's auto-setup. The
 * shard count is written into the databases by the server's first start and cannot change afterwards.
 */
export function ensureTemporalDatabases(
  bin: ClusterBinaries,
  options: ClusterOptions,
  log: (line: string) => void,
): void {
  const names = databaseNames(options);
  for (const [kind, database] of [
    ['temporal', names.temporal],
    ['visibility', names.visibility],
  ] as const) {
    const created = sqlTool(bin, options, database, ['create-database']);
    if (!created.ok) throw new Error(`creating PostgreSQL database ${database} failed: ${created.output}`);
    const setup = sqlTool(bin, options, database, ['setup-schema', '-v', '0.0']);
    if (!setup.ok) throw new Error(`setup-schema of ${database} failed: ${setup.output}`);
    const dir = join(bin.schemaDir, 'postgresql', 'v12', kind, 'versioned');
    const update = sqlTool(bin, options, database, ['update-schema', '-d', dir]);
    if (!update.ok) throw new Error(`update-schema of ${database} failed: ${update.output}`);
    const current = /found zero updates from current version ([\d.]+)/.exec(update.output);
    log(
      `PostgreSQL: ${database} (${kind}) ${current ? `schema already at v${current[1]}` : 'created or migrated to the current schema'}`,
    );
  }
}

/** Drops both databases (tests and the bench, for databases of their own only). */
export function dropTemporalDatabases(bin: ClusterBinaries, options: ClusterOptions): void {
  const names = databaseNames(options);
  for (const database of [names.temporal, names.visibility]) {
    const dropped = sqlTool(bin, options, database, ['drop-database', '--force']);
    if (!dropped.ok && !/does not exist/i.test(dropped.output))
      throw new Error(`dropping ${database} failed: ${dropped.output}`);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function spawnLogged(binary: string, args: string[], env: Record<string, string>, logFile: string): ChildProcess {
  const fd = openSync(logFile, 'a');
  try {
    return spawn(binary, args, { env, stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
}

function tailOf(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no output)';
  }
}

async function stopProcess(child: ChildProcess | undefined, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  if (await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)])) return;
  child.kill('SIGKILL');
  await exited;
}

/** The running server (and UI): start, stop, restart, and where it is. */
export class TemporalCluster {
  server: ChildProcess | undefined;
  ui: ChildProcess | undefined;
  readonly address: string;
  readonly serverLog: string;
  readonly uiLog: string;

  constructor(
    readonly bin: ClusterBinaries,
    readonly options: ClusterOptions,
  ) {
    this.address = `127.0.0.1:${options.frontendPort}`;
    mkdirSync(options.logDir, { recursive: true });
    this.serverLog = join(options.logDir, 'temporal-server.log');
    this.uiLog = join(options.logDir, 'temporal-ui.log');
  }

  get uiUrl(): string | undefined {
    return this.options.uiPort ? `http://127.0.0.1:${this.options.uiPort}` : undefined;
  }

  /** Starts the server and waits until its frontend answers; refuses when something already listens there. */
  async startServer(timeoutMs = 90_000): Promise<void> {
    for (const port of Object.values(clusterPorts(this.options.frontendPort))) {
      if (await isListening(`127.0.0.1:${port}`))
        throw new Error(
          `port ${port} is taken (the cluster uses ${this.options.frontendPort} to ${this.options.frontendPort + 8}); stop what listens there or choose another frontend port`,
        );
    }
    const args = ['--root', this.bin.serverRoot, '--config', 'config', '--env', 'docker', '--allow-no-auth', 'start'];
    const child = spawnLogged(this.bin.server, args, serverEnvironment(this.options), this.serverLog);
    this.server = child;
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(
          `the Temporal server exited (${child.exitCode ?? child.signalCode}); its log ${this.serverLog} ends:\n${tailOf(this.serverLog)}`,
        );
      if (await this.healthy()) return;
      await sleep(250);
    }
    throw new Error(
      `the Temporal server did not answer on ${this.address} within ${timeoutMs / 1000}s; its log ${this.serverLog} ends:\n${tailOf(this.serverLog)}`,
    );
  }

  /** The frontend answers GetSystemInfo (it listens before it can serve). */
  async healthy(): Promise<boolean> {
    if (!(await isListening(this.address))) return false;
    try {
      const connection = await Connection.connect({ address: this.address, connectTimeout: '2s' });
      try {
        await connection.withDeadline(Date.now() + 3000, () => connection.workflowService.getSystemInfo({}));
        return true;
      } finally {
        await connection.close();
      }
    } catch {
      return false;
    }
  }

  /** Starts the Web UI server (its own config template, the compose image's) and waits until it serves. */
  async startUi(timeoutMs = 30_000): Promise<void> {
    if (!this.options.uiPort) return;
    if (await isListening(`127.0.0.1:${this.options.uiPort}`))
      throw new Error(`port ${this.options.uiPort} (Web UI) is taken`);
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/tmp',
      TEMPORAL_ADDRESS: this.address,
      TEMPORAL_UI_PORT: String(this.options.uiPort),
      TEMPORAL_DEFAULT_NAMESPACE: this.options.namespace,
      TEMPORAL_NOTIFY_ON_NEW_VERSION: 'false',
    };
    this.ui = spawnLogged(
      this.bin.ui,
      ['--root', this.bin.uiRoot, '--config', 'config', '--env', 'docker', 'start'],
      env,
      this.uiLog,
    );
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.ui.exitCode !== null)
        throw new Error(
          `the Web UI server exited (${this.ui.exitCode}); its log ${this.uiLog} ends:\n${tailOf(this.uiLog)}`,
        );
      if (await isListening(`127.0.0.1:${this.options.uiPort}`)) return;
      await sleep(250);
    }
    throw new Error(`the Web UI server did not listen on ${this.options.uiPort} within ${timeoutMs / 1000}s`);
  }

  /** Stops the server (SIGTERM, SIGKILL after the grace period) and starts it again on the same databases. */
  async restartServer(options: { signal?: 'SIGTERM' | 'SIGKILL'; downMs?: number } = {}): Promise<void> {
    if (options.signal === 'SIGKILL' && this.server && this.server.exitCode === null) {
      const exited = new Promise((r) => this.server!.once('exit', r));
      this.server.kill('SIGKILL');
      await exited;
    } else {
      await stopProcess(this.server, 20_000);
    }
    // The freed ports can linger for a moment.
    for (let i = 0; i < 40 && (await isListening(this.address)); i++) await sleep(250);
    await sleep(options.downMs ?? 0);
    await this.startServer();
  }

  /** pid of the server process, for CPU accounting. */
  get serverPid(): number | undefined {
    return this.server?.exitCode === null ? this.server.pid : undefined;
  }

  async stop(): Promise<void> {
    await stopProcess(this.ui, 5000);
    await stopProcess(this.server, 20_000);
  }
}

async function main(): Promise<void> {
  const command = process.argv[2] ?? 'ensure';
  if (command !== 'ensure') throw new Error(`unknown command ${command}; use ensure`);
  const started = Date.now();
  const bin = ensureClusterBinaries((l) => console.log(`[cluster] ${l}`));
  console.log(
    `[cluster] server ${bin.server}\n[cluster] sql tool ${bin.sql}\n[cluster] Web UI server ${bin.ui}\n[cluster] ready in ${Math.round((Date.now() - started) / 1000)}s`,
  );
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(`[cluster] ${(err as Error).message}`);
    process.exit(1);
  });
}
