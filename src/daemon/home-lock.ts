/**
 * Exactly one daemon per AGENTBOX_HOME. The daemon holds a lock on `$home/daemon.lock` for its
 * whole life; the kernel drops it when the process ends, however it ends (kill -9 included), so a
 * lock is never stale and nobody has to guess from a socket probe or a pid file. Next to it,
 * `$home/daemon.json` says who holds it, and `$home/daemon.pid` its pid alone (for scripts); both are
 * believed only while the lock is held.
 *
 * The lock is an fcntl lock taken through SQLite's exclusive locking mode: Node has no flock, and
 * better-sqlite3 is already here for the store.
 */
import Database from 'better-sqlite3';
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConflictError } from '../contract/errors.js';

/** What the lock holder says about itself in `$home/daemon.json`. */
export interface DaemonRecord {
  pid: number;
  version: string;
  build: string;
  startedAt: string;
  /** The Unix socket it listens on, once it does; null when it has none. */
  socket: string | null;
  tcp: { host: string; port: number } | null;
}

export type LockState = { held: false } | { held: true; record: DaemonRecord | undefined };

const lockFile = (home: string): string => join(home, 'daemon.lock');
const recordFile = (home: string): string => join(home, 'daemon.json');
const pidFile = (home: string): string => join(home, 'daemon.pid');

export class DaemonRunningError extends ConflictError {
  constructor(home: string, holder: DaemonRecord | undefined) {
    super(`another agentbox daemon${holder ? ` (pid ${holder.pid})` : ''} is already running for ${home}`, {
      hint: 'use it (the CLI finds it): agentbox daemon status; or agentbox daemon stop first',
    });
  }
}

/** An fcntl lock on a file, held until release() or the process's end. */
export class FileLock {
  private constructor(
    readonly path: string,
    private db: Database.Database | undefined,
  ) {}

  /** The lock, or undefined when another process holds it for longer than `waitMs`. */
  static tryAcquire(path: string, waitMs: number): FileLock | undefined {
    return FileLock.take(path, openLock(path, waitMs));
  }

  /** Whether another process holds the lock now. Never blocks; holds it for a few microseconds itself. */
  static isHeld(path: string): boolean {
    let db: Database.Database;
    try {
      db = openLock(path, 0);
    } catch {
      return false;
    }
    const lock = FileLock.take(path, db);
    lock?.release();
    return lock === undefined;
  }

  /** Lock the file through `db`; undefined (and `db` closed) when another process holds it. */
  private static take(path: string, db: Database.Database): FileLock | undefined {
    try {
      db.exec('BEGIN EXCLUSIVE');
    } catch (err) {
      db.close();
      if (isBusy(err)) return undefined;
      throw err;
    }
    return new FileLock(path, db);
  }

  release(): void {
    this.db?.close();
    this.db = undefined;
  }
}

export class HomeLock {
  private constructor(
    readonly home: string,
    private lock: FileLock | undefined,
  ) {}

  /**
   * Take the home's lock or throw DaemonRunningError. The short wait covers a CLI that is only
   * looking (lockState holds the lock for microseconds), never a running daemon.
   */
  static acquire(home: string): HomeLock {
    mkdirSync(home, { recursive: true, mode: 0o700 });
    const lock = FileLock.tryAcquire(lockFile(home), 250);
    if (!lock) throw new DaemonRunningError(home, readRecord(home));
    return new HomeLock(home, lock);
  }

  /** Say who holds the lock (written atomically: readers never see half a record). */
  publish(record: DaemonRecord): void {
    for (const [file, text] of [[recordFile(this.home), JSON.stringify(record)], [pidFile(this.home), String(record.pid)]] as const) {
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, `${text}\n`, { mode: 0o600 });
      renameSync(tmp, file);
    }
  }

  release(): void {
    if (!this.lock) return;
    rmSync(recordFile(this.home), { force: true });
    rmSync(pidFile(this.home), { force: true });
    this.lock.release();
    this.lock = undefined;
  }
}

/** Whether a daemon holds the home's lock, and what it says about itself. Never blocks. */
export function lockState(home: string): LockState {
  try {
    mkdirSync(home, { recursive: true, mode: 0o700 });
  } catch {
    return { held: false };
  }
  return FileLock.isHeld(lockFile(home)) ? { held: true, record: readRecord(home) } : { held: false };
}

/**
 * Held by the one CLI that is starting the home's daemon, until it answers: CLIs that find no
 * daemon at the same moment wait here instead of each starting one (the losers would exit, but
 * only after costing a Node start each).
 */
export function acquireStartLock(home: string, waitMs: number): FileLock | undefined {
  mkdirSync(home, { recursive: true, mode: 0o700 });
  return FileLock.tryAcquire(join(home, 'daemon-start.lock'), waitMs);
}

/**
 * The pid the kernel says holds the home's lock (from /proc/locks), whatever daemon.json says:
 * what `agentbox daemon stop` signals, so that a stale record can never name an unrelated process.
 */
export function lockHolderPid(home: string): number | undefined {
  let ino: number;
  try {
    ino = statSync(lockFile(home)).ino;
  } catch {
    return undefined;
  }
  let table: string;
  try {
    table = readFileSync('/proc/locks', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of table.split('\n')) {
    // 1: POSIX  ADVISORY  WRITE 4242 08:01:1234567 1073741824 1073742335
    const m = /^\d+:\s+POSIX\s+ADVISORY\s+\w+\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/.exec(line);
    if (m && Number(m[2]) === ino && Number(m[1]) !== process.pid) return Number(m[1]);
  }
  return undefined;
}

function openLock(path: string, waitMs: number): Database.Database {
  const db = new Database(path, { timeout: waitMs });
  db.pragma('locking_mode = EXCLUSIVE');
  return db;
}

function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED';
}

function readRecord(home: string): DaemonRecord | undefined {
  try {
    const rec = JSON.parse(readFileSync(recordFile(home), 'utf8')) as DaemonRecord;
    return Number.isInteger(rec.pid) ? rec : undefined;
  } catch {
    return undefined;
  }
}
