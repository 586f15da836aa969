/**
 * What every `npm run bench` mode shares: the system under test (DATABASE_URL's database or the mode's own, never
 * dropping one the bench did not create; PORT/SANDBOX_PORT or free ports; a task queue of its own; the server at
 * TEMPORAL_ADDRESS, or when nothing listens there its own in-memory dev server, or a cluster handed in), shutdown on
 * exit or Ctrl-C, HTTP helpers
 * (fetch for set-up calls, a keep-alive connection pool for load), latency summaries, the order clients of the
 * lifecycle bench, flag parsing, and the lines every report starts with (the command and the machine).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, type IncomingHttpHeaders, request as httpRequest } from 'node:http';
import { type Socket } from 'node:net';
import { cpus, loadavg, totalmem } from 'node:os';
import { join, relative, resolve } from 'node:path';
import type { Client } from '@temporalio/client';
import type { Knex } from 'knex';
import { connectTemporal } from '../src/temporal/connection';
import { type Config, loadConfig, loadConfigOrExit } from '../src/config';
import { type OrderPaymentResult, orderWorkflowId } from '../src/contracts/order';
import { createDb } from '../src/db/knex';
import { parseDuration } from '../src/shared/duration';
import { freePort, pidListeningOn, processCpuMs } from './processes';
import { prepareToolDatabase, withDatabase } from './tool-database';
import { ensureTemporalCli, isListening, startDevServer } from './temporal-cli';

export const ROOT = resolve(__dirname, '..');
export const REPORTS_DIR = join(ROOT, 'reports');
const HEALTH_TIMEOUT_MS = 120_000;
const CREATE_TIMEOUT_MS = 40_000;
const PAY_TIMEOUT_MS = 20_000;
/** Longest wait for one order to reach its final status after the buyer paid. */
const RESULT_TIMEOUT_MS = 120_000;
const CHILD_STOP_GRACE_MS = 10_000;

export const log = (message: string) => console.log(`[bench] ${message}`);

export function fail(message: string): never {
  console.error(`[bench] ${message}`);
  process.exit(1);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Aborted when the run must end early (the system under test died, or Ctrl-C): in-flight calls stop waiting. */
export const runAbort = new AbortController();
export const abortReason = () => String(runAbort.signal.reason ?? 'aborted');

// ---------------------------------------------------------------------------------------------------------------
// Flags, the command line and the machine

export type FlagKind = 'int' | 'duration' | 'flag';

/**
 * Parses `--name value`, `--name=value` and bare `--flag`s against a spec; `--help` prints the usage and exits.
 * Whole numbers must be 1..1,000,000; durations are `500ms`, `2s`, `1m` (returned in ms).
 */
export function parseFlags(
  argv: string[],
  spec: Record<string, FlagKind>,
  usage: string,
): Record<string, number | true> {
  const out: Record<string, number | true> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      console.log(usage);
      process.exit(0);
    }
    const match = /^--([a-z][a-z-]*)(?:=(.*))?$/.exec(arg);
    const kind = match ? spec[match[1]!] : undefined;
    if (!match || !kind) fail(`unknown argument "${arg}"\n${usage}`);
    const name = match[1]!;
    if (kind === 'flag') {
      if (match[2] !== undefined) fail(`--${name} takes no value\n${usage}`);
      out[name] = true;
      continue;
    }
    const text = match[2] ?? argv[++i];
    if (kind === 'int') {
      const value = Number(text);
      if (text === undefined || !Number.isInteger(value) || value < 1 || value > 1_000_000)
        fail(`--${name} needs a whole number from 1 to 1000000, got "${text ?? ''}"\n${usage}`);
      out[name] = value;
    } else {
      let ms = NaN;
      try {
        ms = parseDuration(text ?? '');
      } catch {
        /* reported below */
      }
      if (!(ms > 0)) fail(`--${name} needs a duration such as 2s or 500ms, got "${text ?? ''}"\n${usage}`);
      out[name] = ms;
    }
  }
  return out;
}

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_./:=,@%+-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** The command that produced this run, as it can be pasted again (with the environment that changes what runs). */
export function commandLine(): string {
  const args = process.argv.slice(2).map(shellQuote);
  const env = ['TEMPORAL_ADDRESS', 'BENCH_DB_POOL_MAX']
    .filter((k) => process.env[k] !== undefined)
    .map((k) => `${k}=${shellQuote(process.env[k]!)} `);
  const command =
    process.env.npm_lifecycle_event === 'bench'
      ? `npm run bench${args.length ? ` -- ${args.join(' ')}` : ''}`
      : ['npx tsx tools/bench.ts', ...args].join(' ');
  return `${env.join('')}${command}`;
}

/** Load average when the run started: other work on the machine skews every figure. */
const LOAD_AT_START = loadavg()[0] ?? 0;

/** Cores, CPU model, memory, Node, and the load average when the run started. */
export function machineFacts(): string {
  const model = cpus()[0]?.model?.replace(/\s+/g, ' ').trim() ?? 'unknown CPU';
  return `${cpus().length} cores (${model}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, load average ${LOAD_AT_START.toFixed(2)} at start`;
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP

export interface HttpResult {
  status: number;
  body: unknown;
}

/** One JSON call with fetch (set-up and the lifecycle clients); aborted with the run. */
export async function http(
  method: string,
  url: string,
  body: unknown,
  timeoutMs: number,
  headers: Record<string, string> = {},
): Promise<HttpResult> {
  const response = await fetch(url, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.any([runAbort.signal, AbortSignal.timeout(timeoutMs)]),
  });
  const text = await response.text();
  try {
    return { status: response.status, body: text ? (JSON.parse(text) as unknown) : undefined };
  } catch {
    return { status: response.status, body: text };
  }
}

export function field(body: unknown, name: string): unknown {
  return typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[name] : undefined;
}

/** The API's error code of a JSON body (`{ error: CODE }`), or the sandbox's (`{ code }`). */
export function errorCode(body: unknown): string | undefined {
  const code = field(body, 'error') ?? field(body, 'code');
  return typeof code === 'string' ? code : undefined;
}

/** A short kind for an HTTP failure: `HTTP 409 OUT_OF_STOCK`. */
export function httpKind(r: HttpResult): string {
  const code = errorCode(r.body);
  return `HTTP ${r.status}${code ? ` ${code}` : ''}`;
}

/** A short kind for a thrown error: timeouts, refused connections, Temporal errors. */
export function errorKind(err: unknown): string {
  if (runAbort.signal.aborted) return 'aborted (run ended early)';
  const e = err as { name?: string; code?: string; cause?: { code?: string }; message?: string };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return 'timeout';
  const code = e?.cause?.code ?? e?.code;
  if (typeof code === 'string') return code;
  if (/deadline/i.test(e?.message ?? '')) return 'timeout';
  return e?.name ?? 'Error';
}

export function errorText(err: unknown): string {
  const e = err as { message?: string; cause?: { message?: string } };
  return [e?.message, e?.cause?.message].filter(Boolean).join(': ') || String(err);
}

/** One answer on a keep-alive connection, with its latency (request written to last byte read). */
export interface PoolReply {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  ms: number;
}

/**
 * A cheap load generator: `connections` keep-alive HTTP/1.1 connections to one origin (node:http's Agent, no
 * fetch machinery per request). Callers run at most `connections` requests at once, so a latency is the
 * server's answer time, not time spent queued in the client. `opened` counts the connections made: more than
 * `connections` means the server closed some (or they broke) and they were reopened.
 */
export class KeepAlivePool {
  private readonly agent: Agent;
  private readonly seen = new WeakSet<Socket>();
  private readonly target: URL;
  opened = 0;

  constructor(
    origin: string,
    readonly connections: number,
  ) {
    this.target = new URL(origin);
    this.agent = new Agent({
      keepAlive: true,
      maxSockets: connections,
      maxFreeSockets: connections,
      scheduling: 'fifo',
    });
  }

  request(
    method: string,
    path: string,
    options: { body?: string; headers?: Record<string, string>; timeoutMs?: number } = {},
  ): Promise<PoolReply> {
    const body = options.body === undefined ? undefined : Buffer.from(options.body);
    return new Promise((done, failed) => {
      const t0 = performance.now();
      const req = httpRequest(
        {
          host: this.target.hostname,
          port: this.target.port,
          method,
          path,
          agent: this.agent,
          headers: { ...options.headers, ...(body ? { 'content-length': String(body.length) } : {}) },
          signal: AbortSignal.any([runAbort.signal, AbortSignal.timeout(options.timeoutMs ?? 60_000)]),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            done({
              status: res.statusCode ?? 0,
              headers: res.headers,
              text: Buffer.concat(chunks).toString('utf8'),
              ms: performance.now() - t0,
            }),
          );
          res.on('error', failed);
        },
      );
      req.on('socket', (socket) => {
        if (this.seen.has(socket)) return;
        this.seen.add(socket);
        this.opened++;
      });
      req.on('error', failed);
      req.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/** Runs `fn` over `items` with `workers` at a time (each worker takes the next item when its last one is done). */
export async function inParallel<T>(
  items: readonly T[],
  workers: number,
  fn: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(workers, items.length) }, async () => {
      while (!runAbort.signal.aborted && next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

/**
 * Runs `fn` for each item at a fixed arrival rate (open loop): item i is due `i / perSecond` seconds after the start,
 * whatever the system's pace, as buyers and providers arrive on their own clock. `fn` gets the time the item was
 * due, so that latency is measured from the arrival and not from when a slow system let the next request go (no
 * coordinated omission). At most `maxInFlight` run at once; an item past that waits for a slot, and the wait counts.
 */
export async function atRate<T>(
  items: readonly T[],
  perSecond: number,
  maxInFlight: number,
  fn: (item: T, dueAt: number) => Promise<void>,
): Promise<void> {
  const t0 = performance.now();
  const running = new Set<Promise<void>>();
  for (let i = 0; i < items.length && !runAbort.signal.aborted; i++) {
    const dueAt = t0 + (i * 1000) / perSecond;
    const wait = dueAt - performance.now();
    if (wait > 1) await sleep(wait);
    while (running.size >= maxInFlight) await Promise.race(running);
    const task: Promise<void> = fn(items[i]!, dueAt).finally(() => running.delete(task));
    running.add(task);
  }
  await Promise.all(running);
}

/** Counts by key, printed as `a x3, b x1`. */
export class Tally {
  readonly counts = new Map<string, number>();
  add(key: string, n = 1): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + n);
  }
  get(key: string): number {
    return this.counts.get(key) ?? 0;
  }
  get total(): number {
    return [...this.counts.values()].reduce((a, b) => a + b, 0);
  }
  toJSON(): Record<string, number> {
    return Object.fromEntries([...this.counts].sort((a, b) => b[1] - a[1]));
  }
  toString(): string {
    return this.counts.size === 0
      ? 'none'
      : [...this.counts]
          .sort((a, b) => b[1] - a[1])
          .map(([k, n]) => `${k} x${n}`)
          .join(', ');
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Figures

/** Latency summary in milliseconds (nearest-rank percentiles). */
export interface Summary {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
}

export function summarize(values: number[]): Summary | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
  const round = (v: number) => Math.round(v * 10) / 10;
  return {
    count: sorted.length,
    min: round(sorted[0]!),
    mean: round(sorted.reduce((s, v) => s + v, 0) / sorted.length),
    p50: round(at(50)),
    p90: round(at(90)),
    p95: round(at(95)),
    p99: round(at(99)),
    max: round(sorted[sorted.length - 1]!),
  };
}

/** `p50 12.0   p95 ...   max ...   (n=...)` with the percentiles asked for. */
export function latencyRow(
  s: Summary | null,
  percentiles: ('p50' | 'p90' | 'p95' | 'p99')[] = ['p50', 'p95', 'p99'],
): string {
  if (!s) return 'n/a';
  const f = (v: number) => v.toFixed(1).padStart(8);
  return `${percentiles.map((p) => `${p} ${f(s[p])}`).join('   ')}   max ${f(s.max)}   (n=${s.count})`;
}

export function table(rows: [string, string][]): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join('\n');
}

export const perSecond = (n: number, ms: number) => (ms > 0 ? Math.round((n / (ms / 1000)) * 100) / 100 : 0);

export { pidListeningOn, processCpuMs };

/** Resident memory of a process in MiB, from /proc (Linux); undefined elsewhere. */
export function processRssMb(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 102.4) / 10 : undefined;
  } catch {
    return undefined;
  }
}

/** Busy and total CPU time of the whole machine (all cores), for the utilisation during the load. */
export function machineCpu(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const { times } of cpus()) {
    const sum = times.user + times.nice + times.sys + times.irq + times.idle;
    total += sum;
    busy += sum - times.idle;
  }
  return { busy, total };
}

/** CPU used from now until `stop()`: the machine's busy share, the system under test, Temporal, the load generator. */
export function cpuMeter(
  system: BenchSystem,
): () => { machineBusyPercent: number; systemMs?: number; temporalMs?: number; loadGeneratorMs: number; text: string } {
  const own = process.cpuUsage();
  const machine = machineCpu();
  const pids = system.pids();
  const before = { system: pids.system.map(processCpuMs), temporal: processCpuMs(pids.temporal) };
  return () => {
    const after = machineCpu();
    const machineBusyPercent =
      Math.round(((after.busy - machine.busy) / Math.max(1, after.total - machine.total)) * 1000) / 10;
    const now = system.pids();
    const sum = (values: (number | undefined)[]) =>
      values.some((v) => v === undefined) ? undefined : values.reduce<number>((a, v) => a + v!, 0);
    // A restarted API is a new pid: count what the processes alive now used since they started or since the mark.
    const systemAfter = sum(now.system.map(processCpuMs));
    const systemBefore = sum(before.system.filter((_, i) => pids.system[i] === now.system[i]));
    const systemMs = systemAfter === undefined || systemBefore === undefined ? undefined : systemAfter - systemBefore;
    const temporalAfter = processCpuMs(now.temporal);
    const temporalMs =
      temporalAfter === undefined || before.temporal === undefined ? undefined : temporalAfter - before.temporal;
    const load = process.cpuUsage(own);
    const loadGeneratorMs = Math.round((load.user + load.system) / 1000);
    const s = (ms: number | undefined) => (ms === undefined ? 'n/a' : `${(ms / 1000).toFixed(1)} s`);
    return {
      machineBusyPercent,
      systemMs,
      temporalMs,
      loadGeneratorMs,
      text: `machine ${machineBusyPercent}% busy of ${cpus().length} cores; system under test ${s(systemMs)}; load generator ${s(loadGeneratorMs)}${temporalMs === undefined ? '' : `; Temporal ${s(temporalMs)}`}`,
    };
  };
}

/** Writes the JSON report and returns its path relative to the repository. */
export function writeReport(name: string, report: unknown): string {
  mkdirSync(REPORTS_DIR, { recursive: true });
  const file = join(REPORTS_DIR, `${name}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  return relative(ROOT, file);
}

/** Progress: one updating line on a terminal, a line every few seconds otherwise. */
let stopProgressOnExit: (() => void) | undefined;

export function startProgress(line: () => string): () => void {
  const tty = process.stdout.isTTY === true;
  const timer = setInterval(
    () => {
      if (tty) process.stdout.write(`\r\x1b[2K[bench] ${line()}`);
      else console.log(`[bench] ${line()}`);
    },
    tty ? 200 : 5000,
  );
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    if (tty) process.stdout.write(`\r\x1b[2K[bench] ${line()}\n`);
    else console.log(`[bench] ${line()}`);
  };
  stopProgressOnExit = stop;
  return stop;
}

// ---------------------------------------------------------------------------------------------------------------
// The system under test

function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((done) => {
    const timer = setTimeout(() => done(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      done(true);
    });
  });
}

const running = (child: ChildProcess | undefined): boolean =>
  child !== undefined && child.exitCode === null && child.signalCode === null;

/** SIGTERM, then SIGKILL after the grace period. */
async function stopChild(child: ChildProcess | undefined, name: string, graceMs: number): Promise<void> {
  if (!child || !running(child)) return;
  child.kill('SIGTERM');
  if (await waitForExit(child, graceMs)) return;
  log(`${name} did not stop within ${graceMs / 1000}s; killing it`);
  child.kill('SIGKILL');
  await waitForExit(child, 5000);
}

export function tail(file: string, lines = 30): string {
  try {
    return readFileSync(resolve(ROOT, file), 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no output)';
  }
}

/** The system under test's log lines grouped by level and message (ids and numbers masked), most frequent first. */
function logGroups(file: string): { key: string; level: number; count: number; example: string }[] {
  let text = '';
  try {
    text = readFileSync(resolve(ROOT, file), 'utf8');
  } catch {
    return [];
  }
  const seen = new Map<string, { key: string; level: number; count: number; example: string }>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let key = line.slice(0, 120);
    let level = 0;
    try {
      const entry = JSON.parse(line) as { level?: number; msg?: string; err?: { message?: string } };
      level = entry.level ?? 0;
      key = `${entry.msg ?? ''}${entry.err?.message ? ` (${entry.err.message.slice(0, 120)})` : ''}`;
    } catch {
      /* a plain line: grouped by its start */
    }
    // Ids and numbers vary from line to line; the kind of message does not.
    key = key
      .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?::\d+)*/gi, '<id>')
      .replace(/\d+/g, '#');
    const group = seen.get(`${level} ${key}`);
    if (group) {
      group.count++;
      group.example = line;
    } else seen.set(`${level} ${key}`, { key, level, count: 1, example: line });
  }
  return [...seen.values()].sort((a, b) => b.count - a.count);
}

const LEVEL_NAMES: Record<number, string> = { 40: 'warn', 50: 'error', 60: 'fatal' };

/** What the system under test logged, for a failed run: each kind of line once, with a count and the last example. */
export function logDigest(file: string, groups = 8): string {
  const all = logGroups(file);
  if (all.length === 0) return '    (no output)';
  return all
    .slice(0, groups)
    .map(
      (g) =>
        `    x${g.count}  ${LEVEL_NAMES[g.level] ?? (g.level ? `level ${g.level}` : 'text')}: ${g.key}\n        e.g. ${g.example.slice(0, 400)}`,
    )
    .join('\n');
}

/** One line for every report: the warnings and errors the system under test logged during the run, by kind. */
export function logSummary(file: string): string {
  const bad = logGroups(file).filter((g) => g.level >= 40);
  if (bad.length === 0) return 'no warnings or errors';
  return bad
    .slice(0, 4)
    .map((g) => `${LEVEL_NAMES[g.level] ?? g.level} x${g.count} "${g.key.slice(0, 90)}"`)
    .join(', ')
    .concat(bad.length > 4 ? `, and ${bad.length - 4} more kinds` : '');
}

/** A TypeScript entry point of the project in a child process, its output appended to `logFile`, with IPC. */
function spawnTs(script: string, env: Record<string, string>, logFile: string): ChildProcess {
  const fd = openSync(logFile, 'a');
  try {
    // BENCH_CPU_PROF=<dir>: the system under test writes a V8 CPU profile there when it exits (profile before
    // optimising).
    const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
    // BENCH_VM_WATCHDOG=off: the experiment of tools/vm-no-watchdog.js (what the SDK's per-entry watchdog costs).
    const watchdog = process.env.BENCH_VM_WATCHDOG === 'off' ? ['--require', join(__dirname, 'vm-no-watchdog.js')] : [];
    // BENCH_PROMISE_STACKS=off: the experiment of tools/no-promise-stacks.js (what the SDK's promise stacks cost).
    const stacks =
      process.env.BENCH_PROMISE_STACKS === 'off' ? ['--require', join(__dirname, 'no-promise-stacks.js')] : [];
    return spawn(process.execPath, [...profile, ...watchdog, ...stacks, '--import', 'tsx', script], {
      cwd: ROOT,
      env,
      stdio: ['ignore', fd, fd, 'ipc'],
    });
  } finally {
    closeSync(fd);
  }
}

/** Everything a run started, stopped in reverse order by `shutdown`. */
interface Resources {
  devServer?: ChildProcess;
  /** A Temporal server the bench started other than a dev server (the cluster of `--cluster`). */
  temporalServer?: { stop(): Promise<void> };
  /** The run's task queue: workflows still running on it at the end have no worker left and are terminated. */
  taskQueue?: string;
  system?: ChildProcess;
  api?: ChildProcess;
  temporal?: Client;
  db?: Knex;
}

const res: Resources = {};
let shuttingDown: Promise<void> | undefined;

/** Terminates the run's workflows that are still running, so none is left orphaned on a shared server. */
async function terminateLeftovers(temporal: Client, taskQueue: string): Promise<void> {
  let terminated = 0;
  try {
    await temporal.withDeadline(Date.now() + 60_000, async () => {
      const ids: { workflowId: string; runId: string }[] = [];
      // The production task queue and the bench's reference workflow's (tools/bench-system.ts, BENCH_REFERENCE=on).
      const query = `(TaskQueue = '${taskQueue}' OR TaskQueue = '${taskQueue}-reference') AND ExecutionStatus = 'Running'`;
      for await (const wf of temporal.workflow.list({ query })) ids.push(wf);
      await inParallel(ids, 16, async (wf) => {
        await temporal.workflow
          .getHandle(wf.workflowId, wf.runId)
          .terminate('left running by a bench run')
          .then(
            () => terminated++,
            () => undefined,
          );
      });
    });
  } catch (err) {
    log(`could not clean up workflows on ${taskQueue}: ${errorText(err)}`);
  }
  if (terminated > 0)
    log(`terminated ${terminated} workflow(s) left running on task queue ${taskQueue} (or its -reference queue)`);
}

function shutdown(): Promise<void> {
  shuttingDown ??= (async () => {
    // An in-memory dev server of our own disappears with everything on it; a shared one (or a cluster on databases
    // that stay) must be left clean.
    if (res.temporal && res.taskQueue && !res.devServer) await terminateLeftovers(res.temporal, res.taskQueue);
    await res.temporal?.connection.close().catch(() => undefined);
    await res.db?.destroy().catch(() => undefined);
    const stopping = performance.now();
    const wasRunning = running(res.system);
    await stopChild(res.api, 'the API', CHILD_STOP_GRACE_MS);
    await stopChild(res.system, 'the system under test', CHILD_STOP_GRACE_MS);
    if (wasRunning) log(`system under test stopped in ${((performance.now() - stopping) / 1000).toFixed(1)}s`);
    for (const child of [res.api, res.system]) if (child?.connected) child.disconnect();
    await stopChild(res.devServer, 'the Temporal dev server', 5000);
    await res.temporalServer?.stop();
    await Promise.all(helpers.splice(0).map((h) => h.stop().catch(() => undefined)));
  })();
  return shuttingDown;
}

/** Stops everything the current system under test started, so that another can be started in the same run. */
export async function stopSystem(): Promise<void> {
  await shutdown();
  for (const key of Object.keys(res) as (keyof Resources)[]) delete res[key];
  shuttingDown = undefined;
}

/** Other processes a mode started (DTM's server for --tcc): stopped with the rest on a signal and at the end. */
const helpers: { stop(): Promise<void> }[] = [];

/** Registers a helper process, so that a signal (which exits without the mode's own `finally`) still stops it. */
export function ownHelperProcess(helper: { stop(): Promise<void> }): void {
  helpers.push(helper);
}

/** Registers a Temporal server the bench started itself, so that Ctrl-C and the end of the run stop it. */
export function ownTemporalServer(server: { stop(): Promise<void> }): void {
  res.temporalServer = server;
}

/** Runs one bench mode: Ctrl-C (twice to force) stops the system under test; everything is stopped at the end. */
export async function runBench(mode: () => Promise<number>): Promise<number> {
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) process.exit(130);
    interrupted = true;
    runAbort.abort('interrupted');
    stopProgressOnExit?.();
    log(`${signal}: stopping the system under test (again to force)`);
    void shutdown().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await mode();
  } finally {
    await shutdown();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** How to start the system under test. */
export interface SystemOptions {
  /**
   * The mode's database name on DATABASE_URL's server, used when DATABASE_URL is not set (when it is, its own name is
   * used). Created and marked as the bench's when missing, re-created when an earlier bench run created it, never
   * dropped otherwise (tools/tool-database.ts).
   */
  database: string;
  /** A Temporal server to use instead of TEMPORAL_ADDRESS's (the cluster of `--cluster`). */
  temporal?: { address: string; namespace: string; note: string; pid: () => number | undefined };
  /** Prefix of the log file under reports/. */
  name: string;
  /** Environment of the system under test on top of the bench's (timeouts, delays). */
  env?: Record<string, string>;
  /** The API in a process of its own (so that it can be killed: `restartApi`); sandbox and worker in another. */
  separateApi?: boolean;
}

/** A running system under test. */
export interface BenchSystem {
  runId: string;
  apiUrl: string;
  sandboxUrl: string;
  adminToken: string;
  config: Config;
  database: string;
  temporalAddress: string;
  temporalNote: string;
  temporal: Client;
  /** The bench's own connection to the system's database (2 connections). */
  db: Knex;
  systemLog: string;
  /** Process ids: the system under test (one, or API and sandbox+worker) and the Temporal server when it runs here. */
  pids(): { system: (number | undefined)[]; temporal?: number };
  /** Creates a product with `stock` units through the admin API. */
  createProduct(sku: string, stock: number, extra?: Record<string, unknown>): Promise<void>;
  /** SIGKILLs the API process and starts it again (separateApi only); resolves when /healthz answers 200 again. */
  restartApi(): Promise<{ downMs: number }>;
}

/**
 * Waits until the child reports that its worker polls (IPC "ready": the API answers /healthz while the worker
 * is still bundling the workflow code, and orders created then would only measure that) and /healthz is 200.
 */
async function waitForHealth(
  apiUrl: string,
  children: ChildProcess[],
  logFile: string,
  ready: () => boolean,
): Promise<void> {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    const dead = children.find((c) => !running(c));
    if (dead)
      throw new Error(
        `the system under test exited (${dead.exitCode ?? dead.signalCode}) before it was healthy; its output:\n${tail(logFile)}`,
      );
    try {
      const r = await http('GET', `${apiUrl}/healthz`, undefined, 2000);
      if (r.status === 200 && ready()) return;
      last = r.status === 200 ? 'healthz 200, worker not started yet' : `HTTP ${r.status} ${JSON.stringify(r.body)}`;
    } catch (err) {
      last = errorText(err);
    }
    await sleep(250);
  }
  throw new Error(
    `the system under test was not ready within ${HEALTH_TIMEOUT_MS / 1000}s (last: ${last}); output:\n${tail(logFile)}`,
  );
}

/**
 * Starts the system under test: Temporal (the server at TEMPORAL_ADDRESS when one listens, else an in-memory
 * headless dev server on a free port), a fresh database of the bench's own, and sandbox + API + worker
 * (tools/bench-system.ts) on free ports and a task queue of their own, in a child process so that the load
 * generator never shares its event loop. Resolves once the worker polls and /healthz answers 200.
 */
export async function startSystem(options: SystemOptions): Promise<BenchSystem> {
  const base = loadConfigOrExit();
  const runId = randomBytes(4).toString('hex');
  mkdirSync(REPORTS_DIR, { recursive: true });
  const systemLog = join(REPORTS_DIR, `${options.name}-${new Date().toISOString().replace(/[:.]/g, '-')}.system.log`);

  let temporalAddress = options.temporal?.address ?? base.temporalAddress;
  const namespace = options.temporal?.namespace ?? base.temporalNamespace;
  let temporalNote: string;
  let temporalPid: () => number | undefined = () => res.devServer?.pid;
  if (options.temporal) {
    temporalNote = options.temporal.note;
    temporalPid = options.temporal.pid;
    log(`Temporal: ${temporalNote}`);
  } else if (await isListening(temporalAddress)) {
    // A server on this machine: its CPU is measured through the pid that listens on the port.
    const pid = /^(127\.|localhost:)/.test(temporalAddress)
      ? pidListeningOn(Number(temporalAddress.split(':').pop()))
      : undefined;
    temporalNote = `existing server at ${temporalAddress}${pid ? ` (pid ${pid}; shared with whatever else uses it)` : ' (its CPU is not measured: no local process of this user listens there)'}`;
    temporalPid = () => pid;
    log(`Temporal: using the server at ${temporalAddress}`);
  } else {
    const binary = ensureTemporalCli((l) => log(l));
    temporalAddress = `127.0.0.1:${await freePort()}`;
    log(
      `Temporal: nothing at ${base.temporalAddress}; starting an in-memory headless dev server on ${temporalAddress}`,
    );
    res.devServer = await startDevServer(
      binary,
      { address: temporalAddress, namespace, headless: true, logLevel: 'error' },
      'ignore',
    );
    temporalNote = `in-memory dev server at ${temporalAddress} (started by the bench)`;
  }

  // DATABASE_URL as configured (its name included) when set, else the mode's own database on the default server.
  const databaseUrl = process.env.DATABASE_URL ? base.databaseUrl : withDatabase(base.databaseUrl, options.database);
  const { database } = await prepareToolDatabase(databaseUrl, 'bench', { legacyNames: [options.database], log });

  // PORT and SANDBOX_PORT when the environment sets them, else free ports (never those of a developer's `npm start`).
  const apiPort = process.env.PORT ? base.port : await freePort();
  const sandboxPort = process.env.SANDBOX_PORT ? base.sandboxPort : await freePort();
  const adminToken = `bench-admin-${randomBytes(8).toString('hex')}`;
  const childEnv: Record<string, string | undefined> = {
    ...process.env,
    DATABASE_URL: databaseUrl,
    TEMPORAL_ADDRESS: temporalAddress,
    TEMPORAL_NAMESPACE: namespace,
    TASK_QUEUE: `bench-${runId}`,
    PORT: String(apiPort),
    SANDBOX_PORT: String(sandboxPort),
    ADMIN_TOKEN: adminToken,
    SANDBOX_SECRET: `bench-sandbox-${randomBytes(12).toString('hex')}`,
    LOG_LEVEL: 'warn',
    // The bench measures pay -> PAID with the workflow's result; no cooling-off window keeps it open.
    COOLING_OFF_PERIOD: '0s',
    // A throwaway copy must not leave a daily reconciliation Schedule (for its task queue) on the server.
    RECONCILIATION_SCHEDULE: 'off',
    // A worker of its own process must not take the metrics ports of a developer's `npm start`.
    WORKER_METRICS_PORT: '0',
    TEMPORAL_METRICS_PORT: '0',
    // Derived from the ports above; inherited values would point at another copy of the system.
    PUBLIC_BASE_URL: undefined,
    SANDBOX_URL: undefined,
    SANDBOX_PUBLIC_URL: undefined,
    ...options.env,
  };
  for (const key of Object.keys(childEnv)) if (childEnv[key] === undefined) delete childEnv[key];
  const env = childEnv as Record<string, string>;
  const config = loadConfig(env);
  res.taskQueue = config.taskQueue;

  const layout = options.separateApi
    ? 'API in its own process; sandbox and worker in another'
    : 'sandbox, API and worker in one process';
  log(
    `starting the system under test (API ${config.publicBaseUrl}, sandbox ${config.sandboxUrl}, task queue ${config.taskQueue}; ${layout}); its output goes to ${relative(ROOT, systemLog)}`,
  );
  const startedAt = performance.now();
  let ready = false;
  res.system = spawnTs(
    join(__dirname, 'bench-system.ts'),
    options.separateApi ? { ...env, BENCH_SYSTEM_API: 'off' } : env,
    systemLog,
  );
  res.system.on('message', (message: unknown) => {
    if (field(message, 'type') === 'ready') ready = true;
  });
  res.system.once('exit', (code, signal) => {
    if (!shuttingDown)
      runAbort.abort(`system under test exited with ${code ?? signal}; see ${relative(ROOT, systemLog)}`);
  });
  let apiKilledOnPurpose = false;
  const startApi = () => {
    const api = spawnTs(join(ROOT, 'src/client/main.ts'), env, systemLog);
    api.once('exit', (code, signal) => {
      if (!shuttingDown && !apiKilledOnPurpose)
        runAbort.abort(`the API exited with ${code ?? signal}; see ${relative(ROOT, systemLog)}`);
    });
    return api;
  };
  if (options.separateApi) res.api = startApi();
  const children = () => [res.system!, ...(res.api ? [res.api] : [])];
  await waitForHealth(config.publicBaseUrl, children(), systemLog, () => ready);
  log(`system ready (worker polling, /healthz 200) after ${((performance.now() - startedAt) / 1000).toFixed(1)}s`);

  res.temporal = await connectTemporal({ temporalAddress, temporalNamespace: namespace });
  res.db = createDb(databaseUrl, { poolMax: 2 });
  const temporal = res.temporal;
  const db = res.db;
  return {
    runId,
    apiUrl: config.publicBaseUrl,
    sandboxUrl: config.sandboxUrl,
    adminToken,
    config,
    database,
    temporalAddress,
    temporalNote,
    temporal,
    db,
    systemLog: relative(ROOT, systemLog),
    pids: () => ({ system: children().map((c) => c.pid), temporal: temporalPid() }),
    async createProduct(sku, stock, extra = {}) {
      const put = await http(
        'PUT',
        `${config.publicBaseUrl}/admin/products/${sku}`,
        { name: `Bench item ${sku}`, price: 1999, currency: 'CNY', stock, ...extra },
        10_000,
        {
          authorization: `Bearer ${adminToken}`,
        },
      );
      if (put.status !== 201 && put.status !== 200)
        throw new Error(`creating the product failed: ${httpKind(put)} ${JSON.stringify(put.body)}`);
    },
    async restartApi() {
      if (!res.api) throw new Error('restartApi needs separateApi');
      const t0 = performance.now();
      apiKilledOnPurpose = true;
      res.api.kill('SIGKILL');
      await waitForExit(res.api, 10_000);
      apiKilledOnPurpose = false;
      res.api = startApi();
      await waitForHealth(config.publicBaseUrl, children(), systemLog, () => true);
      return { downMs: performance.now() - t0 };
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The lifecycle clients: create, pay at the sandbox, wait for PAID

/** What happened to one order of a lifecycle run. */
export interface OrderRecord {
  n: number;
  orderId?: string;
  workflowId?: string;
  createMs?: number;
  payToPaidMs?: number;
  status?: string;
  error?: string;
}

/** Shared state of the lifecycle clients. */
export class Load {
  next = 0;
  created = 0;
  paid = 0;
  failed = 0;
  inFlight = 0;
  readonly records: OrderRecord[] = [];
  readonly errors = new Map<string, { count: number; example: string }>();
  startedAt = 0;
  endedAt = 0;

  error(record: OrderRecord, kind: string, example: string): void {
    record.error = kind;
    this.failed++;
    const entry = this.errors.get(kind);
    if (entry) entry.count++;
    else this.errors.set(kind, { count: 1, example: example.slice(0, 300) });
  }

  createLatency(): Summary | null {
    return summarize(this.records.flatMap((r) => (r.createMs === undefined ? [] : [r.createMs])));
  }

  payToPaidLatency(): Summary | null {
    return summarize(this.records.flatMap((r) => (r.payToPaidMs === undefined ? [] : [r.payToPaidMs])));
  }
}

/** A failure of one step of one order: a short kind (for counting) and an example message. */
export interface StepError {
  error: string;
  example: string;
}

/**
 * How a lifecycle client drives one order: create it (until the buyer could pay), pay, and wait for the order to
 * reach its final status. `apiDriver` is the public API and the sandbox; other drivers (the bench's reference
 * workflow) keep the same loop and the same measurements.
 */
export interface LifecycleDriver {
  create(clientNo: number, n: number): Promise<{ orderId: string; workflowId: string } | StepError>;
  pay(orderId: string): Promise<StepError | undefined>;
  /** The final status ('PAID' is success); throws on a timeout or a failure. Default: the workflow's result. */
  settled?(orderId: string, workflowId: string, signal: AbortSignal): Promise<{ status: string; reason?: string }>;
}

/** The public API: POST /orders for one unit of `sku`, the buyer pays at the sandbox (which calls the API back). */
export function apiDriver(system: BenchSystem, sku: string, userPrefix = 'bench-user'): LifecycleDriver {
  return {
    async create(clientNo) {
      let created: HttpResult;
      try {
        created = await http(
          'POST',
          `${system.apiUrl}/orders`,
          { userId: `${userPrefix}-${clientNo}`, items: [{ sku, quantity: 1 }] },
          CREATE_TIMEOUT_MS,
        );
      } catch (err) {
        return { error: `create: ${errorKind(err)}`, example: errorText(err) };
      }
      if (created.status !== 201)
        return { error: `create: ${httpKind(created)}`, example: JSON.stringify(created.body) };
      const orderId = String(field(created.body, 'orderId'));
      return { orderId, workflowId: orderWorkflowId(orderId) };
    },
    async pay(orderId) {
      try {
        const paid = await http(
          'POST',
          `${system.sandboxUrl}/v1/payments/${encodeURIComponent(orderId)}/pay`,
          {},
          PAY_TIMEOUT_MS,
        );
        if (paid.status !== 200) return { error: `pay: ${httpKind(paid)}`, example: JSON.stringify(paid.body) };
      } catch (err) {
        return { error: `pay: ${errorKind(err)}`, example: errorText(err) };
      }
      return undefined;
    },
  };
}

/**
 * `clients` simulated buyers, each looping: create an order (create latency = until the buyer can pay: the API's
 * 201 with the payment URL), pay, then wait for the order's final status (pay-to-PAID latency = from the pay request
 * until the workflow completed as PAID, a long poll on its result unless the driver says otherwise). Orders are
 * started while `more(n)` says so (a count, or a deadline).
 */
export async function runLifecycleClients(
  system: BenchSystem,
  sku: string,
  clients: number,
  more: (n: number) => boolean,
  load = new Load(),
  driver: LifecycleDriver = apiDriver(system, sku),
): Promise<Load> {
  load.startedAt = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, clientNo) => {
      while (!runAbort.signal.aborted && more(load.next)) {
        const record: OrderRecord = { n: load.next++ };
        load.records.push(record);
        load.inFlight++;
        try {
          await oneOrder(system, load, record, driver, clientNo);
        } finally {
          load.inFlight--;
        }
      }
    }),
  );
  load.endedAt = performance.now();
  return load;
}

/** The order workflow's (or any workflow's) result, as the lifecycle clients wait for it by default. */
async function workflowResult(
  system: BenchSystem,
  workflowId: string,
  signal: AbortSignal,
): Promise<{ status: string; reason?: string }> {
  const handle = system.temporal.workflow.getHandle(workflowId);
  return (await system.temporal.withAbortSignal(signal, () => handle.result())) as OrderPaymentResult;
}

async function oneOrder(
  system: BenchSystem,
  load: Load,
  record: OrderRecord,
  driver: LifecycleDriver,
  clientNo: number,
): Promise<void> {
  const t0 = performance.now();
  const created = await driver.create(clientNo, record.n);
  if ('error' in created) return load.error(record, created.error, created.example);
  record.createMs = performance.now() - t0;
  load.created++;
  const { orderId, workflowId } = created;
  record.orderId = orderId;
  record.workflowId = workflowId;

  const t1 = performance.now();
  const payError = await driver.pay(orderId);
  if (payError) return load.error(record, payError.error, payError.example);

  const timeout = AbortSignal.timeout(RESULT_TIMEOUT_MS);
  try {
    const signal = AbortSignal.any([runAbort.signal, timeout]);
    const result = await (driver.settled
      ? driver.settled(orderId, workflowId, signal)
      : workflowResult(system, workflowId, signal));
    record.status = result.status;
    if (result.status !== 'PAID')
      return load.error(
        record,
        `result: ${result.status}`,
        `${orderId}: ${result.status}${result.reason ? ` (${result.reason})` : ''}`,
      );
    record.payToPaidMs = performance.now() - t1;
    load.paid++;
  } catch (err) {
    const kind =
      !runAbort.signal.aborted && timeout.aborted ? `timeout after ${RESULT_TIMEOUT_MS / 1000}s` : errorKind(err);
    return load.error(record, `result: ${kind}`, `${orderId}: ${errorText(err)}`);
  }
}

/** Orders placed for a later phase of a run (not a measurement in itself). */
export interface PlacedOrders {
  orderIds: string[];
  ms: number;
  /** Answers that were retried (429/503, network errors) or that ended an order (anything else but 201). */
  problems: Tally;
}

/**
 * Places `count` one-unit orders of `sku` with `clients` at a time, as distinct users, each with an Idempotency-Key
 * so that a shed (429), pending (503) or broken request can be sent again safely (after Retry-After, else a second).
 */
export async function placeOrders(
  system: BenchSystem,
  sku: string,
  count: number,
  clients: number,
  userPrefix: string,
): Promise<PlacedOrders> {
  const orderIds: string[] = [];
  const problems = new Tally();
  const t0 = performance.now();
  await inParallel(
    Array.from({ length: count }, (_, i) => i),
    clients,
    async (i) => {
      for (let attempt = 1; attempt <= 20 && !runAbort.signal.aborted; attempt++) {
        let waitMs = 1000;
        try {
          const r = await fetch(`${system.apiUrl}/orders`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'idempotency-key': `${userPrefix}-${i}` },
            body: JSON.stringify({ userId: `${userPrefix}-${i}`, items: [{ sku, quantity: 1 }] }),
            signal: AbortSignal.any([runAbort.signal, AbortSignal.timeout(CREATE_TIMEOUT_MS)]),
          });
          const body = (await r.json().catch(() => undefined)) as unknown;
          if (r.status === 201 || r.status === 200) {
            orderIds.push(String(field(body, 'orderId')));
            return;
          }
          problems.add(httpKind({ status: r.status, body }));
          if (r.status !== 429 && r.status !== 503) return;
          const retryAfter = Number(r.headers.get('retry-after'));
          if (retryAfter > 0) waitMs = retryAfter * 1000;
        } catch (err) {
          problems.add(`network ${errorKind(err)}`);
        }
        await sleep(waitMs);
      }
    },
  );
  return { orderIds, ms: performance.now() - t0, problems };
}
