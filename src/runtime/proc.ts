/** Small /proc readers used to tell a live sandbox from a recycled pid. */
import { readFileSync } from 'node:fs';

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
