/**
 * stripe-mock (Stripe's official API mock, a Go program) for the Stripe adapter tests: found or built once, like
 * the Temporal CLI (tools/temporal-cli.ts), then started per test file on free ports and stopped after it.
 *
 * Lookup order: STRIPE_MOCK_PATH, `stripe-mock` on PATH, the cached build in
 * ~/.cache/payflow/stripe-mock-<version>/ (PAYFLOW_CACHE_DIR / XDG_CACHE_HOME respected), else
 * `go install github.com/stripe/stripe-mock@v<version>` into that cache (Go from PATH or /usr/local/go/bin).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';

/** The pinned stripe-mock version (a plain `go install` module, no replace directives). */
export const STRIPE_MOCK_VERSION = '0.203.0';

function cacheDir(): string {
  const base =
    process.env.PAYFLOW_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'payflow');
  return join(base, `stripe-mock-${STRIPE_MOCK_VERSION}`);
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/** Finds or builds the stripe-mock binary; returns its path. */
export function ensureStripeMock(log: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): string {
  const configured = process.env.STRIPE_MOCK_PATH;
  if (configured) {
    if (!existsSync(configured)) throw new Error(`STRIPE_MOCK_PATH=${configured} does not exist`);
    return configured;
  }
  const fromPath = onPath('stripe-mock');
  if (fromPath) return fromPath;
  const cached = join(cacheDir(), 'stripe-mock');
  if (existsSync(cached)) return cached;
  const go = onPath('go') ?? (existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : undefined);
  if (!go)
    throw new Error(
      'No stripe-mock binary and no Go toolchain to build one: install Go, or put stripe-mock on PATH, or set STRIPE_MOCK_PATH.',
    );
  mkdirSync(cacheDir(), { recursive: true });
  log(
    `[stripe-mock] building v${STRIPE_MOCK_VERSION} from the Go module proxy into ${cacheDir()} (once; later runs reuse it)`,
  );
  const started = Date.now();
  const result = spawnSync(go, ['install', `github.com/stripe/stripe-mock@v${STRIPE_MOCK_VERSION}`], {
    env: { ...process.env, GOBIN: cacheDir(), GOFLAGS: process.env.GOFLAGS ?? '-mod=mod' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (result.status !== 0 || !existsSync(cached))
    throw new Error(`go install of stripe-mock failed (exit ${result.status})`);
  log(`[stripe-mock] built in ${Math.round((Date.now() - started) / 1000)}s: ${cached}`);
  return cached;
}

/** A running stripe-mock. */
export interface StripeMock {
  /** http://127.0.0.1:<port> */
  url: string;
  stop(): Promise<void>;
}

/** Starts stripe-mock on system-chosen ports (HTTP and HTTPS both bound to 127.0.0.1) and waits until it listens. */
export async function startStripeMock(timeoutMs = 60_000): Promise<StripeMock> {
  const binary = ensureStripeMock();
  const child: ChildProcess = spawn(binary, ['-http-addr', '127.0.0.1:0', '-https-addr', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`stripe-mock did not listen within ${timeoutMs} ms; output: ${output.slice(-500)}`));
    }, timeoutMs);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const m = /Listening for HTTP at address: (127\.0\.0\.1:\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(`http://${m[1]}`);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`stripe-mock exited with code ${code}; output: ${output.slice(-500)}`));
    });
  });
  return {
    url,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
