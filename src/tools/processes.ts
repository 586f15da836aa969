/** Process plumbing shared by the tools that run their own copy of the system (soak, bench) and by tests. */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';

/** Ports the developer's own `npm start` uses: never handed out. */
const RESERVED_PORTS = new Set([3000, 4000]);

/** A local port that is free right now (and not one `npm start` uses). */
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
    if (!RESERVED_PORTS.has(port)) return port;
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
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- loosely typed JSON from our own services
export async function jsonCall(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
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
