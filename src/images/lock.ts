/**
 * A per-name build lock: a file created with O_EXCL holding `pid starttime`. A lock whose
 * process is gone (or whose pid now belongs to another process: the start time differs) is
 * stale and taken over. Works across processes and within one.
 */
import { closeSync, existsSync, linkSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConflictError } from '../contract/errors.js';
import { abortReason } from './run-tool.js';

const POLL_MS = 100;
/** A lock file still empty after this long belongs to a process that died between create and write. */
const EMPTY_GRACE_MS = 5_000;

/** Field 22 of /proc/PID/stat (start time in clock ticks), or undefined when there is no such process. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function isStale(path: string): boolean {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch {
    return false; // gone already: the next open will tell
  }
  if (text === '') {
    try {
      return Date.now() - statSync(path).mtimeMs > EMPTY_GRACE_MS;
    } catch {
      return false;
    }
  }
  const [pidText, started] = text.split(' ');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return true;
  const now = startTime(pid);
  return now === undefined || (started !== undefined && now !== started);
}

/** Whether a live process holds the lock at `path`. */
export function lockHeld(path: string): boolean {
  return existsSync(path) && !isStale(path);
}

export interface LockOpts {
  /** How long to wait for another holder before giving up with `conflict`. */
  waitMs: number;
  /** What the conflict error says is being done, e.g. `image debian is being built`. */
  what: string;
  signal?: AbortSignal;
}

/** Take the lock at `path`; resolves with its release function. */
export async function acquireLock(path: string, opts: LockOpts): Promise<() => void> {
  const deadline = Date.now() + opts.waitMs;
  for (;;) {
    if (opts.signal?.aborted) throw abortReason(opts.signal);
    try {
      const fd = openSync(path, 'wx', 0o644);
      try {
        writeSync(fd, `${process.pid} ${startTime(process.pid) ?? ''}\n`);
      } finally {
        closeSync(fd);
      }
      return () => rmSync(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (isStale(path)) {
      // Rename rather than delete, then look again: another waiter may have replaced the stale
      // lock with a live one since we read it; such a lock is put back (link fails if taken).
      const aside = `${path}.stale-${randomBytes(4).toString('hex')}`;
      try {
        renameSync(path, aside);
      } catch {
        continue; // someone else moved it first
      }
      if (!isStale(aside)) {
        try {
          linkSync(aside, path);
        } catch {
          // a third waiter holds the name now; the lock we moved is still honoured by its owner
        }
      }
      rmSync(aside, { force: true });
      continue;
    }
    if (Date.now() >= deadline) {
      const holder = (() => {
        try {
          return readFileSync(path, 'utf8').split(' ')[0] ?? '?';
        } catch {
          return '?';
        }
      })();
      throw new ConflictError(`${opts.what} by process ${holder.trim()}`, { hint: 'wait for that build to finish, then try again' });
    }
    await sleep(POLL_MS);
  }
}
