/**
 * What a sandbox can leave on the host after it ended, found by its id: a process whose cgroup or
 * command line names it (a local sandbox's processes, its keeper, an exec's helper), a cgroup
 * directory, a mount. Zombies do not count: they hold nothing, their parent has only not reaped them yet.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export function hostLeftovers(ids: readonly string[]): string[] {
  const found: string[] = [];
  if (ids.length === 0) return found;
  const names = (text: string): string | undefined => ids.find((id) => text.includes(id));
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      if (/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))) continue;
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
      const id = names(readFileSync(`/proc/${pid}/cgroup`, 'utf8')) ?? names(cmd);
      if (id) found.push(`process ${pid} of ${id}: ${cmd.slice(0, 120)}`);
    } catch {
      // gone meanwhile
    }
  }
  const walk = (dir: string, depth: number): void => {
    let entries: string[];
    try {
      entries = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {
      return;
    }
    for (const name of entries) {
      const path = join(dir, name);
      if (names(name)) found.push(`cgroup ${path}`);
      else if (depth > 0) walk(path, depth - 1);
    }
  };
  walk('/sys/fs/cgroup', 4);
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const id = names(line);
    if (id) found.push(`mount of ${id}: ${line}`);
  }
  return found;
}
