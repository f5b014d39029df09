/** Small /proc readers: a live process vs a recycled pid, and where a process's cgroups are. */
import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';

/** Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat). */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); field 22 is therefore fields[19]
    if (fields[0] === 'Z') return undefined;
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

export function isSameProcess(pid: number, startTime: number): boolean {
  return processStartTime(pid) === startTime;
}

/** One cgroup of a process: its hierarchy's controllers (v1; `[]` for the v2 hierarchy) and its directory. */
export interface ProcessCgroup {
  controllers: string[];
  dir: string;
}

interface CgroupMount {
  point: string;
  /** v1: the controllers (and name=...) of the hierarchy; v2: null. */
  controllers: Set<string> | null;
}

function cgroupMounts(): CgroupMount[] {
  const mounts: CgroupMount[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const point = left.split(' ')[4];
    const [fstype, , superOpts] = right.split(' ');
    if (!point) continue;
    if (fstype === 'cgroup2') mounts.push({ point, controllers: null });
    else if (fstype === 'cgroup') mounts.push({ point, controllers: new Set((superOpts ?? '').split(',')) });
  }
  return mounts;
}

/** Every cgroup of a process, one per hierarchy, with the directory where this host mounts it. */
export function cgroupsOf(pid: number): ProcessCgroup[] {
  const mounts = cgroupMounts();
  const out: ProcessCgroup[] = [];
  for (const line of readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const [, ctrls, path] = m as unknown as [string, string, string];
    const controllers = ctrls === '' ? [] : ctrls.split(',');
    const mount = controllers.length === 0
      ? mounts.find((x) => x.controllers === null)
      : mounts.find((x) => x.controllers !== null && controllers.every((c) => x.controllers!.has(c)));
    if (mount && isAbsolute(path)) out.push({ controllers, dir: join(mount.point, path) });
  }
  return out;
}
