/**
 * `agentbox doctor`: one line per thing this host needs, each failing one with a hint. Exit 0 when
 * the default runtime (local) works.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildRuntimes } from '../daemon/compose.js';
import { helperPath, resolvePaths } from '../core/config.js';
import { ImageStore } from '../images/image-store.js';
import { DEBIAN_HINT } from './runner.js';

export interface HostCheck {
  name: string;
  ok: boolean;
  /** what was found, or what is wrong */
  detail: string;
  hint?: string;
  /** a failing optional check does not fail `agentbox doctor` */
  optional?: boolean;
}

export async function hostChecks(env: NodeJS.ProcessEnv = process.env): Promise<HostCheck[]> {
  const paths = resolvePaths(env);
  const images = new ImageStore(paths.images);
  const runtimes = buildRuntimes(paths, images);
  const checks: HostCheck[] = [];

  const local = await runtimes.local?.probe();
  const userns = readNumber('/proc/sys/user/max_user_namespaces');
  checks.push({
    name: 'user namespaces',
    ok: userns === null || userns > 0,
    detail: userns === null ? 'no limit file (assumed available)' : `max_user_namespaces ${userns}`,
    hint: 'sysctl -w user.max_user_namespaces=15000',
  });
  const helper = helperPath();
  checks.push({ name: 'native helper', ok: existsSync(helper), detail: helper, hint: 'npm run build (needs gcc and libc6-dev)' });
  checks.push({
    name: 'runtime local (bubblewrap + cgroups)',
    ok: local?.ok === true,
    detail: local?.ok ? Object.entries(local.details ?? {}).map(([k, v]) => `${k} ${v}`).join(', ') : (local?.reason ?? 'unavailable'),
    ...(local && !local.ok && local.hint ? { hint: local.hint } : {}),
  });
  const busybox = images.get('busybox');
  checks.push({ name: 'image busybox', ok: true, detail: busybox ? `present in ${paths.images}` : 'not built yet; built on first use (under a second)' });
  let python = false;
  try {
    python = existsSync(join(images.resolve('debian').rootfs, 'usr', 'bin', 'python3'));
  } catch {
    python = false;
  }
  checks.push({ name: 'image debian (python3)', ok: python, optional: true, detail: python ? `present in ${paths.images}` : `missing in ${paths.images}`, hint: DEBIAN_HINT });
  const docker = await runtimes.docker?.probe();
  checks.push({
    name: 'runtime docker (dockerd)',
    ok: docker?.ok === true,
    optional: true,
    detail: docker?.ok ? `dockerd ${String(docker.details?.dockerd ?? '')}` : (docker?.reason ?? 'unavailable'),
    hint: docker && !docker.ok && docker.hint ? docker.hint : 'start dockerd',
  });
  const runsc = docker?.ok ? String(docker.details?.runtimes ?? '').split(' ').includes('runsc') : false;
  checks.push({
    name: 'runtime gvisor (runsc)',
    ok: runsc,
    optional: true,
    detail: runsc ? 'runsc registered with dockerd' : docker?.ok ? 'dockerd does not list runsc' : 'needs dockerd',
    hint: 'install gVisor and register runsc in /etc/docker/daemon.json with --network=none --host-uds=open',
  });
  checks.push({ name: 'runtime microvm', ok: false, optional: true, detail: 'not available yet in this version of agentbox', hint: 'use --isolation gvisor for a narrower kernel surface' });
  return checks;
}

function readNumber(path: string): number | null {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}
