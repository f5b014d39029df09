/**
 * The attack suite runs in a network namespace of its own, so that what an attack sends can reach
 * only the stand-ins bound there (stand-ins.ts). When root and not yet isolated, the CLI re-executes
 * itself under `unshare -n` (AGENTBOX_DOCTOR_NETNS marks the child, so it cannot loop); inside,
 * `lo` comes up and the stand-in addresses are added to it. Where that cannot be done the suite still
 * runs, and attacks that need a non-loopback stand-in are skipped with the reason: never aimed at a real address.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { EXIT_AGENTBOX_FAILED, EXIT_SIGNAL_BASE } from '../contract/exit-codes.js';
import { STAND_IN_ADDRESSES } from './stand-ins.js';

export const NETNS_MARKER = 'AGENTBOX_DOCTOR_NETNS';

/** Interfaces of the network namespace this process is in (/proc/self/net is per namespace; /sys/class/net is not). */
export function interfaces(): string[] {
  try {
    return readFileSync('/proc/self/net/dev', 'utf8')
      .split('\n')
      .slice(2)
      .map((l) => l.split(':')[0]?.trim() ?? '')
      .filter(Boolean);
  } catch {
    return [];
  }
}

/** Whether this process sees only `lo`: nothing it sends can leave the host. */
export function isIsolated(): boolean {
  const ifs = interfaces();
  return ifs.length > 0 && ifs.every((i) => i === 'lo');
}

/** Why a private namespace cannot be made here, or null when `unshare -n` works. */
function unshareProblem(): string | null {
  if (process.getuid?.() !== 0) return 'not root: no private network namespace, so no metadata or private-range stand-ins';
  const r = spawnSync('unshare', ['-n', 'true'], { stdio: 'ignore', timeout: 10_000 });
  if (r.error) return 'unshare (util-linux) is not installed: no private network namespace';
  if (r.status !== 0) return 'unshare -n failed: no private network namespace';
  const ip = spawnSync('ip', ['-V'], { stdio: 'ignore', timeout: 10_000 });
  if (ip.error) return 'ip (iproute2) is not installed: cannot set up the stand-in addresses';
  return null;
}

/**
 * Runs the same command again inside a new network namespace when that is possible and not done yet.
 * Returns the child's exit code, or null when this process should go on itself (already isolated,
 * or isolation is impossible: `reason` says why).
 */
export async function reexecIsolated(env: NodeJS.ProcessEnv = process.env): Promise<{ exitCode: number } | { exitCode: null; reason?: string }> {
  if (isIsolated()) return { exitCode: null };
  if (env[NETNS_MARKER] === '1') return { exitCode: null, reason: 'the private network namespace still has interfaces other than lo' };
  const problem = unshareProblem();
  if (problem) return { exitCode: null, reason: problem };
  const argv = [process.execPath, ...process.execArgv, ...process.argv.slice(1)];
  const child = spawn('unshare', ['-n', '--', ...argv], { stdio: 'inherit', env: { ...env, [NETNS_MARKER]: '1' } });
  const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  const code = await new Promise<number>((resolve) => {
    child.once('error', () => resolve(EXIT_AGENTBOX_FAILED));
    child.once('exit', (c, sig) => resolve(c ?? (sig ? EXIT_SIGNAL_BASE : EXIT_AGENTBOX_FAILED)));
  });
  process.off('SIGINT', onInt);
  process.off('SIGTERM', onTerm);
  return { exitCode: code };
}

/** Inside the private namespace: `lo` up and the stand-in addresses on it. Returns a problem, or null. */
export function prepareNamespace(): string | null {
  if (!isIsolated()) return 'not in a private network namespace';
  const ip = (args: string[]): string | null => {
    const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
    if (r.error) return r.error.message;
    if (r.status !== 0 && !/File exists/.test(r.stderr)) return `ip ${args.join(' ')}: ${r.stderr.trim()}`;
    return null;
  };
  const a = STAND_IN_ADDRESSES;
  for (const args of [
    ['link', 'set', 'lo', 'up'],
    ['addr', 'add', `${a.metadata}/32`, 'dev', 'lo'],
    ['addr', 'add', `${a.private}/32`, 'dev', 'lo'],
    ['addr', 'add', `${a.allowed}/32`, 'dev', 'lo'],
    ['addr', 'add', `${a.denied}/32`, 'dev', 'lo'],
  ]) {
    const problem = ip(args);
    if (problem) return problem;
  }
  return null;
}
