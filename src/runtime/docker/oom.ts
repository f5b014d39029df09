/**
 * OOM kills of a container's memory cgroup, read on the host: the `oom_kill` counter of
 * memory.oom_control (cgroup v1) or memory.events (v2), compared before and after an exec.
 * Under gVisor the limit is enforced inside by PID 1 (native/memory-watchdog.h), which logs its kills.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cgroupsOf } from '../proc.js';

const CGROOT = '/sys/fs/cgroup';

/** Candidate memory-cgroup directories of a container, best first (cgroupfs and systemd drivers, v1 and v2). */
export function memoryCgroupDirs(containerId: string, hostPid: number | undefined): string[] {
  const dirs: string[] = [];
  if (hostPid && hostPid > 0) {
    try {
      for (const c of cgroupsOf(hostPid)) if (c.controllers.length === 0 || c.controllers.includes('memory')) dirs.push(c.dir);
    } catch {
      // the process is gone or not on this host (remote DOCKER_HOST): fall back to the usual places
    }
  }
  dirs.push(
    join(CGROOT, 'memory', 'docker', containerId),
    join(CGROOT, 'memory', 'system.slice', `docker-${containerId}.scope`),
    join(CGROOT, 'docker', containerId),
    join(CGROOT, 'system.slice', `docker-${containerId}.scope`),
  );
  return dirs;
}

/** The `oom_kill` count of the first readable directory, or undefined when none is (remote engine). */
export function oomKills(dirs: readonly string[]): number | undefined {
  for (const dir of dirs) {
    for (const file of ['memory.oom_control', 'memory.events']) {
      let text: string;
      try {
        text = readFileSync(join(dir, file), 'utf8');
      } catch {
        continue;
      }
      const m = /^oom_kill (\d+)$/m.exec(text);
      if (m) return Number(m[1]);
    }
  }
  return undefined;
}

/** The first directory that has a readable counter (resolved once per container). */
export function findOomDir(dirs: readonly string[]): string | undefined {
  return dirs.find((d) => oomKills([d]) !== undefined);
}

/** Where PID 1's memory watchdog logs its kills inside a gVisor sandbox (WATCHDOG_LOG in memory-watchdog.h). */
export const WATCHDOG_LOG = '/tmp/.agentbox/oom';

/** Whether the watchdog log (`TAG PID RSS_KB USED_KB LIMIT_KB COMM` lines) holds a kill under one of `tags`. */
export function watchdogKilled(log: string, tags: readonly string[]): boolean {
  return log.split('\n').some((line) => tags.includes(line.split(' ')[0] ?? ''));
}
