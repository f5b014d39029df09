/**
 * Real headless Chromium for the browser tests: Debian's `chromium` (CI installs it) driven by
 * puppeteer-core, with flags that work offline and as root; screenshots into test-artifacts/,
 * checked to be pictures.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import puppeteer, { type Browser } from 'puppeteer-core';
import { packageRoot } from '../../src/core/config.js';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
/** Where screenshots go (CI keeps the folder as artifacts; git ignores it). */
export const ARTIFACTS = join(packageRoot, 'test-artifacts');

/** A skip reason when there is no Chromium or no built dashboard, else undefined. */
export function browserSkip(): string | undefined {
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (set CHROMIUM)`;
  if (!existsSync(join(packageRoot, 'dist', 'dashboard', 'index.html'))) return 'the dashboard is not built (npm run build)';
  return undefined;
}

/** Chromium with a throwaway profile; `close()` also removes the profile. */
export async function launchChromium(): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'agentbox-chrome-'));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    // --no-sandbox: the tests run as root, where Chromium's own sandbox refuses to start.
    args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--no-first-run', '--no-default-browser-check', '--disable-dev-shm-usage'],
  });
  // Once the browser process is gone (on 'disconnected' it may still be writing its profile).
  const removeProfile = (): void => {
    try {
      rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
    } catch {
      // a temp dir left behind is not a test failure
    }
  };
  const child = browser.process();
  if (child && child.exitCode === null) child.once('exit', removeProfile);
  else removeProfile();
  return browser;
}

/** Distinct RGBA values in RGBA bytes (every `step`-th pixel). */
export function distinctColours(rgba: Buffer, step = 1): number {
  const seen = new Set<number>();
  for (let i = 0; i < rgba.length; i += 4 * step) seen.add(rgba.readUInt32BE(i));
  return seen.size;
}

/** Distinct colours of a PNG file. */
export function pngColours(path: string, step = 1): number {
  return distinctColours(PNG.sync.read(readFileSync(path)).data, step);
}

export function artifactPath(name: string): string {
  mkdirSync(ARTIFACTS, { recursive: true });
  return join(ARTIFACTS, name);
}
