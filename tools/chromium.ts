/**
 * Finds a Chromium for the browser tests of the waiting page (playwright-core drives it; Playwright's own
 * browser download needs the internet, which this project must not). CHROMIUM_PATH wins; else the usual
 * Debian/Ubuntu paths; else, when running as root on a machine with apt-get, installs Debian's `chromium`
 * package once, with its output shown; else fails with the command to run.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome', '/snap/bin/chromium'];

function found(): string | undefined {
  const configured = process.env.CHROMIUM_PATH;
  if (configured) {
    if (!existsSync(configured)) throw new Error(`CHROMIUM_PATH=${configured} does not exist`);
    return configured;
  }
  return CANDIDATES.find((p) => existsSync(p));
}

/** The path of a Chromium binary, installing Debian's package when possible. */
export function ensureChromium(log: (line: string) => void): string {
  const existing = found();
  if (existing) return existing;
  const canApt = process.getuid?.() === 0 && spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0;
  if (!canApt) {
    throw new Error(
      'No Chromium found for the waiting-page browser tests: install it (Debian: sudo apt-get install -y chromium) or set CHROMIUM_PATH',
    );
  }
  log('Chromium: not found; installing Debian\'s "chromium" package (apt-get install -y chromium, about 30 s)');
  // Another apt-get may hold dpkg's lock (a second test run provisioning at the same time, unattended upgrades):
  // wait for it instead of failing the run.
  execFileSync('apt-get', ['-o', 'DPkg::Lock::Timeout=600', 'install', '-y', '--no-install-recommends', 'chromium'], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  const installed = found();
  if (!installed)
    throw new Error('apt-get installed chromium but no binary was found at the usual paths; set CHROMIUM_PATH');
  return installed;
}
