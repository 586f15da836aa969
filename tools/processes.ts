/** Process plumbing shared by the tools that run their own copy of the system (soak, bench) and by tests. */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';

/** Ports the developer's own `npm start` uses: never handed out. */
const RESERVED_PORTS = new Set([3000, 4000]);

/** Ports this process has handed out: never handed out twice, though each is closed before its caller binds it. */
const handedOut = new Set<number>();

/**
 * A local port that is free right now, not one `npm start` uses, and not one handed out before in this process: the
 * kernel picks a random free port for each bind to port 0, so two calls in a row can answer the same port (seen in
 * CI: the API and the sandbox of one test system were both given it, and the configuration refused the pair).
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((done, fail) => {
      const server = createServer();
      server.once('error', fail);
      server.listen(0, '127.0.0.1', () => {
        const { port: p } = server.address() as AddressInfo;
        server.close(() => done(p));
      });
    });
    if (RESERVED_PORTS.has(port) || handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A service of the system (sandbox, API, worker) in a child process of its own, which can be killed and restarted. */
export class ChildService {
  proc: ChildProcess | undefined;
  constructor(
    readonly name: string,
    private readonly script: string,
    private readonly env: Record<string, string>,
    private readonly logFile: string,
  ) {}

  start(): void {
    this.proc = spawn(process.execPath, ['--import', 'tsx', this.script], {
      env: { ...process.env, ...this.env },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const append = (chunk: Buffer) => writeFileSync(this.logFile, chunk, { flag: 'a' });
    this.proc.stdout?.on('data', append);
    this.proc.stderr?.on('data', append);
  }

  kill(signal: NodeJS.Signals): void {
    this.proc?.kill(signal);
  }

  /** Resolves once the process has exited (at once when it is not running). */
  async exited(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise((r) => p.once('exit', r));
  }

  /** SIGTERM, then SIGKILL after 10 s. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = this.exited();
    p.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000)]);
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }
}

/**
 * One JSON call to a service of the system: the parsed body (or the raw text when it is not JSON) and the
 * status. Loosely typed on purpose: callers are tools and tests that check what they read.
 */
export async function jsonCall(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- loosely typed JSON from our own services
): Promise<{ status: number; body: any }> {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    /* not JSON: keep the text */
  }
  return { status: response.status, body: parsed };
}

/**
 * The pid of the process that listens on a local TCP port (Linux: /proc/net/tcp{,6} for the socket's inode, then the
 * process holding it), or undefined elsewhere or when none is found (another user's process without root). For the
 * tools' CPU accounting of a Temporal server they did not start.
 */
export function pidListeningOn(port: number): number | undefined {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address is HEXIP:HEXPORT, st 0A is LISTEN, the inode is the tenth field.
      if (f.length > 9 && f[3] === '0A' && parseInt(f[1]!.split(':')[1]!, 16) === port) inodes.add(f[9]!);
    }
  }
  if (inodes.size === 0) return undefined;
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
        const m = /^socket:\[(\d+)\]$/.exec(target);
        if (m && inodes.has(m[1]!)) return Number(pid);
      } catch {
        /* gone */
      }
    }
  }
  return undefined;
}

/** CPU time (ms) a process has used so far, from /proc (Linux); undefined elsewhere. Assumes USER_HZ = 100. */
export function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10; // utime + stime, in ticks of 10 ms
  } catch {
    return undefined;
  }
}

/**
 * CPU used by whatever serves a local port (the Temporal server a tool talks to), summed across restarts: sampled
 * every `everyMs`; a new pid behind the port (a restarted server) starts a new account. `stop()` returns the total,
 * or undefined when no process was ever found (a remote server).
 */
export function portCpuMeter(port: number, everyMs = 1000): { pid(): number | undefined; stop(): number | undefined } {
  const used = new Map<number, { first: number; last: number }>();
  let current: number | undefined;
  const sample = () => {
    if (current === undefined || processCpuMs(current) === undefined) current = pidListeningOn(port);
    if (current === undefined) return;
    const ms = processCpuMs(current);
    if (ms === undefined) return;
    const entry = used.get(current);
    if (entry) entry.last = ms;
    else used.set(current, { first: ms, last: ms });
  };
  sample();
  const timer = setInterval(sample, everyMs);
  timer.unref();
  return {
    pid: () => current,
    stop() {
      sample();
      clearInterval(timer);
      if (used.size === 0) return undefined;
      return [...used.values()].reduce((sum, e) => sum + (e.last - e.first), 0);
    },
  };
}

/**
 * CPU time (ms) used so far by every live process whose command name is `comm` (e.g. `postgres`: one process per
 * connection; `mariadbd`), from /proc (Linux); undefined when none runs here. Processes that exit in between take
 * their time with them, so compare samples over a span in which the set stays (a server's connection pool).
 */
export function commandCpuMs(comm: string): number | undefined {
  let total: number | undefined;
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== comm) continue;
    } catch {
      continue;
    }
    const ms = processCpuMs(Number(pid));
    if (ms !== undefined) total = (total ?? 0) + ms;
  }
  return total;
}

/** Stops a child process: SIGTERM, then SIGKILL if it has not exited after `graceMs`; resolves once it has exited. */
export function stopChildProcess(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      done();
    });
    child.kill('SIGTERM');
  });
}
