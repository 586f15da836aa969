/**
 * DTM for `npm run bench -- --tcc` (issue #16's comparison): builds, once, DTM's server and tools/dtm-tcc (the TCC
 * participants behind DTM's barrier and the transactions' driver) from the Go module proxy into the cache
 * (~/.cache/payflow/dtm-<version>), with go's package progress on the terminal; prepares DTM's own store and the
 * barrier table in MariaDB; starts the server on free ports; and runs one set of transactions through it.
 *
 * `go install github.com/dtm-labs/dtm@v1.19.0` is refused here (the proxy answers 403 for the module's version list,
 * which `go install` reads), while the version itself is served: so tools/dtm-tcc/go.mod pins it and both binaries
 * are built with `go build` in a copy of that directory in the cache (the clone stays clean).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Knex } from 'knex';
import { ROOT, runAbort } from './bench-harness';
import { freePort, stopChildProcess } from './processes';
import { databaseOf } from './tool-database';
import { cacheDir as temporalCacheDir, findGo, isListening } from './temporal-cli';

export const DTM_VERSION = '1.19.0';
const SOURCE = join(ROOT, 'tools', 'dtm-tcc');
const SOURCE_FILES = ['go.mod', 'go.sum', 'main.go'];

/** Where the two binaries live: beside the Temporal CLI's cache, outside the clone. */
export function dtmCacheDir(): string {
  return join(temporalCacheDir(), '..', `dtm-${DTM_VERSION}`);
}

export interface DtmBinaries {
  server: string;
  driver: string;
  /** DTM's SQL scripts (its store's tables, the barrier table), copied beside the binaries when they were built. */
  sqlDir: string;
}

function hashOf(files: string[]): string {
  const hash = createHash('sha256');
  for (const f of files) if (existsSync(join(SOURCE, f))) hash.update(f).update(readFileSync(join(SOURCE, f)));
  return hash.digest('hex').slice(0, 12);
}

/**
 * Finds or builds DTM's server and the driver. Each binary's name carries a hash of what it is built from (the
 * server: go.mod and go.sum, which pin DTM and its dependencies; the driver: those and main.go), so a change to
 * tools/dtm-tcc builds again and a stale binary is never reused; binaries of older hashes are removed. Each build
 * writes to a temporary name and is renamed when complete, so an interrupted build is never taken for a binary.
 */
export function ensureDtm(log: (line: string) => void): DtmBinaries {
  const dir = dtmCacheDir();
  const server = join(dir, `dtm-${hashOf(['go.mod', 'go.sum'])}`);
  const driver = join(dir, `dtm-tcc-${hashOf(SOURCE_FILES)}`);
  const sqlDir = join(dir, `sqls-v${DTM_VERSION}`);
  if (existsSync(server) && existsSync(driver) && existsSync(sqlDir)) return { server, driver, sqlDir };

  const go = findGo();
  if (!go) throw new Error('no Go toolchain (go on PATH or /usr/local/go/bin/go) to build DTM');
  const src = join(dir, 'src');
  mkdirSync(src, { recursive: true });
  for (const f of SOURCE_FILES) copyFileSync(join(SOURCE, f), join(src, f));
  const env = { ...process.env, GOFLAGS: process.env.GOFLAGS ?? '-mod=mod' };
  const build = (label: string, out: string, args: string[]) => {
    if (existsSync(out)) return;
    log(`[dtm] building ${label} from the Go module proxy into ${dir} (the first build takes minutes on 2 cores)`);
    const started = Date.now();
    const partial = `${out}.partial`;
    const result = spawnSync(go, ['build', '-v', '-o', partial, ...args], {
      cwd: src,
      env,
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    if (result.status !== 0 || !existsSync(partial))
      throw new Error(`go build of ${label} failed (exit ${result.status})`);
    renameSync(partial, out);
    log(`[dtm] built ${label} in ${Math.round((Date.now() - started) / 1000)} s: ${out}`);
  };
  build(`DTM v${DTM_VERSION}'s server`, server, [
    `-ldflags=-X main.Version=v${DTM_VERSION}`,
    'github.com/dtm-labs/dtm',
  ]);
  build('the DTM TCC driver (tools/dtm-tcc)', driver, ['.']);
  const listed = spawnSync(go, ['list', '-m', '-f', '{{.Dir}}', 'github.com/dtm-labs/dtm'], {
    cwd: src,
    env,
    encoding: 'utf8',
  });
  const moduleDir = listed.stdout.trim();
  if (listed.status !== 0 || !moduleDir || !existsSync(join(moduleDir, 'sqls')))
    throw new Error(`DTM's module source not found (go list: ${listed.stderr.trim() || moduleDir})`);
  cpSync(join(moduleDir, 'sqls'), sqlDir, { recursive: true });
  for (const name of readdirSync(dir))
    if (/^dtm(-tcc)?-[0-9a-f]{12}$/.test(name) && ![server, driver].includes(join(dir, name)))
      rmSync(join(dir, name), { force: true });
  return { server, driver, sqlDir };
}

/** DTM's SQL script for MySQL, its `dtm.` / `dtm_barrier.` schema names taken out (run in the database given). */
function scriptStatements(file: string): string[] {
  return readFileSync(file, 'utf8')
    .split(';')
    .map((s) => s.trim())
    .filter((s) => s && !/^create database/i.test(s))
    .map((s) => s.replace(/\bdtm(_barrier)?\./g, ''));
}

/** DTM's store tables in `storeDb` (created afresh) and the barrier table `dtm_barrier` in the participants' `db`. */
export async function prepareDtmTables(
  db: Knex,
  storeDb: string,
  binaries: DtmBinaries,
  log: (line: string) => void,
): Promise<void> {
  await db.raw('CREATE DATABASE IF NOT EXISTS ?? DEFAULT CHARACTER SET utf8mb4', [storeDb]);
  for (const s of scriptStatements(join(binaries.sqlDir, 'dtmsvr.storage.mysql.sql')))
    await db.raw(s.replace(/\b(drop table if exists|create table if not exists) /i, `$1 \`${storeDb}\`.`));
  for (const s of scriptStatements(join(binaries.sqlDir, 'dtmcli.barrier.mysql.sql')))
    await db.raw(s.replace(/\bbarrier\b/, 'dtm_barrier'));
  log(`[dtm] store tables in ${storeDb}, barrier table dtm_barrier in the participants' database`);
}

export interface DtmServer {
  api: string;
  pid: number | undefined;
  stop(): Promise<void>;
}

/** A MySQL URL's parts, for DTM's config and the driver's DSN. */
export function mysqlParts(url: string): { host: string; port: number; user: string; password: string; db: string } {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port || 3306),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    db: databaseOf(url),
  };
}

/**
 * Starts DTM's server with its store in `storeDb` on the URL's MariaDB, on free ports; resolves once it listens. Its
 * config file (the database password in it) is the owner's alone and removed when the server stops. DTM binds its
 * ports on every interface (it has no address setting) and its log starts with the loaded config, password included:
 * the log goes to `logFile` under reports/.
 */
export async function startDtmServer(
  binaries: DtmBinaries,
  databaseUrl: string,
  storeDb: string,
  logFile: string,
): Promise<DtmServer> {
  const m = mysqlParts(databaseUrl);
  const [http, grpc, jrpc] = [await freePort(), await freePort(), await freePort()];
  const conf = join(dtmCacheDir(), `conf-${http}.yml`);
  writeFileSync(
    conf,
    [
      'Store:',
      '  Driver: mysql',
      `  Host: ${JSON.stringify(m.host)}`,
      `  Port: ${m.port}`,
      `  User: ${JSON.stringify(m.user)}`,
      `  Password: ${JSON.stringify(m.password)}`,
      `  Db: ${JSON.stringify(storeDb)}`,
      `HttpPort: ${http}`,
      `GrpcPort: ${grpc}`,
      `JsonRpcPort: ${jrpc}`,
      'LogLevel: error',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const out = openSync(logFile, 'a', 0o600);
  const child: ChildProcess = spawn(binaries.server, ['-c', conf], { stdio: ['ignore', out, out] });
  closeSync(out);
  const stop = async () => {
    await stopChildProcess(child);
    rmSync(conf, { force: true });
  };
  const deadline = Date.now() + 30_000;
  while (!(await isListening(`127.0.0.1:${http}`))) {
    if (child.exitCode !== null) throw new Error(`DTM's server exited (${child.exitCode}); see ${logFile}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`DTM's server did not listen on ${http} within 30 s; see ${logFile}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { api: `http://127.0.0.1:${http}/api/dtmsvr`, pid: child.pid, stop };
}

/** What the driver prints for one set. */
export interface DtmSetResult {
  completed: number;
  failed: number;
  /** Failed transactions by kind (FAILURE: a branch refused, so DTM cancelled; error: anything else). */
  errors: Record<string, number>;
  examples: Record<string, string>;
  wallMs: number;
  latenciesMs: number[];
  cpuMs: number;
}

/**
 * Runs one seeded set through DTM: the driver serves the branches and runs the transactions, then prints JSON. The
 * database reaches it through the environment (not the command line, where `ps` shows it); the run's abort kills it.
 */
export function runDtmSet(
  binaries: DtmBinaries,
  server: DtmServer,
  databaseUrl: string,
  set: { prefix: string; sku: string; transactions: number; points: number },
  concurrency: number,
): Promise<DtmSetResult> {
  const m = mysqlParts(databaseUrl);
  const env = {
    ...process.env,
    DTM_TCC_DB_HOST: m.host,
    DTM_TCC_DB_PORT: String(m.port),
    DTM_TCC_DB_USER: m.user,
    DTM_TCC_DB_PASSWORD: m.password,
    DTM_TCC_DB_NAME: m.db,
  };
  const args = [
    `-dtm=${server.api}`,
    `-prefix=${set.prefix}`,
    `-sku=${set.sku}`,
    `-transactions=${set.transactions}`,
    `-concurrency=${concurrency}`,
    `-points=${set.points}`,
  ];
  return new Promise((done, reject) => {
    const child = spawn(binaries.driver, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    const abort = () => child.kill('SIGKILL');
    runAbort.signal.addEventListener('abort', abort, { once: true });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      runAbort.signal.removeEventListener('abort', abort);
      if (code !== 0) return reject(new Error(`dtm-tcc exited ${code}: ${stderr.slice(-500)}`));
      try {
        done(JSON.parse(stdout.trim().split('\n').pop()!) as DtmSetResult);
      } catch (err) {
        reject(new Error(`dtm-tcc printed no result (${String(err)}): ${stdout.slice(-300)} ${stderr.slice(-300)}`));
      }
    });
  });
}
