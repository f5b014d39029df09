/**
 * Daemon replicas that share one store (ARCHITECTURE.md, "Replicas"): who is alive (a heartbeat row
 * each) and leases, so that a job meant to run once across replicas (the reaper of cluster sandboxes)
 * runs on exactly one of them at a time. Times are ISO strings, compared as text, as everywhere in the store.
 * The statements are the subset SQLite and PostgreSQL share (upsert with a WHERE, since SQLite 3.24).
 */
import type { SqlDb, SqlStatement } from './sql-db.js';
import { z } from 'zod';
import { InternalError } from '../contract/errors.js';

/** Migration 10 (migrations.ts): also records which replica created a sandbox and runs an exec. */
export const REPLICAS_SQL = replicasSql('');
/** The same on PostgreSQL: times compared as text compare by bytes, as in SQLite, whatever the database's collation. */
export const REPLICAS_PG_SQL = replicasSql(' COLLATE "C"');

function replicasSql(bytes: string): string {
  return `
  ALTER TABLE sandboxes ADD COLUMN replica TEXT;
  ALTER TABLE execs ADD COLUMN replica TEXT;
  CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    url TEXT,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    seen_at TEXT${bytes} NOT NULL
  );
  CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TEXT${bytes} NOT NULL
  );
`;
}

export interface ReplicaRecord {
  id: string;
  /** Where its API is reached by the others' clients, when it said (AGENTBOX_ADVERTISE_URL). */
  url: string | null;
  host: string;
  pid: number;
  startedAt: string;
  /** Its last heartbeat. */
  seenAt: string;
}

const RowSchema = z.object({
  id: z.string(),
  url: z.string().nullable(),
  host: z.string(),
  pid: z.number().int(),
  started_at: z.string(),
  seen_at: z.string(),
});

export class ReplicaRows {
  private readonly upsert: SqlStatement<[{ id: string; url: string | null; host: string; pid: number; at: string }]>;
  private readonly all: SqlStatement<[], unknown>;
  private readonly one: SqlStatement<[string], unknown>;
  private readonly take: SqlStatement<[{ name: string; holder: string; now: string; until: string }]>;
  private readonly drop: SqlStatement<[{ name: string; holder: string }]>;
  private readonly leave: SqlStatement<[string]>;
  private readonly touch: SqlStatement<[string, string]>;

  constructor(db: SqlDb) {
    // A restarted replica keeps its id: its row is updated, with a new start time, pid and address.
    this.upsert = db.prepare(`
      INSERT INTO replicas (id, url, host, pid, started_at, seen_at) VALUES (@id, @url, @host, @pid, @at, @at)
      ON CONFLICT (id) DO UPDATE SET url = excluded.url, host = excluded.host, pid = excluded.pid,
        started_at = excluded.started_at, seen_at = excluded.seen_at`);
    this.all = db.prepare('SELECT * FROM replicas ORDER BY id');
    this.one = db.prepare('SELECT * FROM replicas WHERE id = ?');
    // Taken when free, expired, or already ours (then renewed); a row changed means we hold it.
    this.take = db.prepare(`
      INSERT INTO leases (name, holder, expires_at) VALUES (@name, @holder, @until)
      ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
      WHERE leases.holder = excluded.holder OR leases.expires_at <= @now`);
    this.drop = db.prepare('DELETE FROM leases WHERE name = @name AND holder = @holder');
    this.leave = db.prepare('DELETE FROM replicas WHERE id = ?');
    this.touch = db.prepare('UPDATE replicas SET seen_at = ? WHERE id = ?');
  }

  /** A replica starts (STARTED true) or says it is still alive. */
  heartbeat(r: { id: string; url: string | null; host: string; pid: number }, at: string, started: boolean): void {
    if (started) this.upsert.run({ ...r, at });
    else if (this.touch.run(at, r.id).changes === 0) this.upsert.run({ ...r, at }); // its row was removed meanwhile
  }

  /** A replica that stops cleanly says so; one that died is recognised by its old `seenAt`. */
  remove(id: string): void {
    this.leave.run(id);
  }

  list(): ReplicaRecord[] {
    return this.all.all().map(toRecord);
  }

  get(id: string): ReplicaRecord | undefined {
    const row = this.one.get(id);
    return row === undefined ? undefined : toRecord(row);
  }

  /**
   * Take or renew the lease NAME for HOLDER until NOW + TTL_MS; true when HOLDER holds it now. Atomic
   * in both databases (one statement), so two replicas asking at once never both get it.
   */
  tryLease(name: string, holder: string, now: Date, ttlMs: number): boolean {
    const until = new Date(now.getTime() + ttlMs).toISOString();
    return this.take.run({ name, holder, now: now.toISOString(), until }).changes > 0;
  }

  /** Give a lease back early (a replica that stops); a lease someone else holds is left alone. */
  releaseLease(name: string, holder: string): void {
    this.drop.run({ name, holder });
  }
}

function toRecord(row: unknown): ReplicaRecord {
  const parsed = RowSchema.safeParse(row);
  if (!parsed.success) throw new InternalError('the store\'s row for a replica is corrupt', { cause: parsed.error });
  const r = parsed.data;
  return { id: r.id, url: r.url, host: r.host, pid: r.pid, startedAt: r.started_at, seenAt: r.seen_at };
}
