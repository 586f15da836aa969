/** An API process of a test's own (src/client/main.ts), for suites that need one outside the in-process system. */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { waitFor } from './system';

export interface SpawnedApi {
  child: ChildProcess;
  url: string;
  /** Everything the process printed so far. */
  output(): string;
  /** The first /healthz answer. */
  health: { status: number; body: unknown };
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Spawns the API with exactly `env` (and PATH) and waits until /healthz answers at all (any status). */
export async function spawnApi(env: Record<string, string>, port: number, what: string): Promise<SpawnedApi> {
  const root = join(__dirname, '..', '..');
  const child = spawn(join(root, 'node_modules', '.bin', 'tsx'), ['src/client/main.ts'], {
    cwd: root,
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  for (const stream of [child.stdout!, child.stderr!]) stream.on('data', (d: Buffer) => (output += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  const health = await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`the API exited ${child.exitCode}: ${output.slice(-1500)}`);
      return fetch(`${url}/healthz`).then(
        async (r) => ({ status: r.status, body: (await r.json()) as unknown }),
        () => undefined,
      );
    },
    { timeoutMs: 40_000, what },
  );
  return {
    child,
    url,
    output: () => output,
    health,
    async kill(signal = 'SIGTERM') {
      if (child.exitCode !== null) return;
      child.kill(signal);
      await new Promise((done) => (child.exitCode !== null ? done(undefined) : child.once('exit', done)));
    },
  };
}
