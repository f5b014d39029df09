/**
 * The SQLite engine of the store (better-sqlite3, synchronous, WAL). Several connections, in one
 * process or several, may share one file: WAL lets readers run beside a writer, and busy_timeout
 * makes a second writer wait instead of failing.
 */
import Database from 'better-sqlite3';
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { sqlFor, type SqlDb, type SqlStatement, type SqlText } from './sql-db.js';

export class SqliteDb implements SqlDb {
  readonly dialect = 'sqlite' as const;

  private constructor(readonly raw: Database.Database) {}

  /**
   * Open (creating if needed). A new parent directory gets mode 0700 and the file 0600, whatever
   * the umask (SQLite gives its -wal and -shm files the database file's mode). `:memory:` works for
   * throwaway stores.
   */
  static open(path: string): SqliteDb {
    if (path !== ':memory:') createPrivateFile(path);
    const db = new Database(path);
    try {
      db.pragma('busy_timeout = 5000'); // first, so that switching to WAL also waits for other connections
      db.pragma('journal_mode = WAL');
      // WAL + NORMAL: a commit survives a crash of the daemon, not a power cut, and costs no fsync;
      // with FULL every exec (five small writes) waited for the disk and capped throughput near 25/s.
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      return new SqliteDb(db);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  get open(): boolean {
    return this.raw.open;
  }

  prepare<P extends unknown[] = unknown[], R = unknown>(sql: SqlText): SqlStatement<P, R> {
    return this.raw.prepare<P, R>(sqlFor(sql, 'sqlite'));
  }

  exec(script: string): void {
    this.raw.exec(script);
  }

  transaction<T>(fn: () => T): T {
    return this.raw.transaction(fn)();
  }

  close(): void {
    if (this.raw.open) this.raw.close();
  }
}

/** Creates the file owner-only before SQLite opens it, so it is never readable by others, even briefly. */
function createPrivateFile(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  closeSync(openSync(path, 'a', 0o600));
  chmodSync(path, 0o600);
}
