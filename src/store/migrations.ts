/**
 * Numbered schema migrations; `PRAGMA user_version` records the last one applied.
 * Append only: never edit a migration that has shipped, add the next number instead.
 */
import type Database from 'better-sqlite3';
import { InternalError } from '../contract/errors.js';
import { VOLUMES_SQL } from './volumes.js';
import { PORT_ACCESS_SQL } from './port-access.js';
import { WEBHOOK_DELIVERIES_SQL } from './webhook-deliveries.js';
import { REPLICAS_SQL } from './replicas.js';
import { SANDBOX_TOKENS_SQL } from './sandbox-tokens.js';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'sandboxes, execs, audit, usage',
    sql: `
      CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        image TEXT NOT NULL,
        profile TEXT,
        runtime TEXT NOT NULL,
        isolation TEXT NOT NULL,
        state TEXT NOT NULL,
        limits_json TEXT NOT NULL,
        egress_json TEXT NOT NULL,
        labels_json TEXT NOT NULL,
        spec_json TEXT NOT NULL,
        runtime_data_json TEXT,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        last_active_at TEXT NOT NULL,
        idle_timeout_ms INTEGER,
        ended_at TEXT,
        end_reason TEXT,
        ended_by TEXT
      );
      CREATE INDEX sandboxes_tenant_state ON sandboxes (tenant, state);
      CREATE INDEX sandboxes_state ON sandboxes (state);
      CREATE TABLE execs (
        id TEXT PRIMARY KEY,
        sandbox_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        cmd_json TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        exit_code INTEGER,
        timed_out INTEGER NOT NULL DEFAULT 0,
        oom_killed INTEGER NOT NULL DEFAULT 0,
        truncated INTEGER NOT NULL DEFAULT 0,
        duration_ms REAL,
        stdout_tail BLOB,
        stderr_tail BLOB
      );
      CREATE INDEX execs_sandbox ON execs (sandbox_id, started_at);
      CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        tenant TEXT,
        actor TEXT,
        action TEXT NOT NULL,
        sandbox_id TEXT,
        detail_json TEXT
      );
      CREATE INDEX audit_sandbox ON audit (sandbox_id);
      CREATE TABLE usage (
        tenant TEXT NOT NULL,
        day TEXT NOT NULL,
        exec_ms INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, day)
      );
    `,
  },
  {
    version: 2,
    name: 'egress connection log',
    sql: `
      CREATE TABLE egress_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sandbox_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        method TEXT,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        address TEXT,
        decision TEXT NOT NULL,
        rule TEXT NOT NULL,
        bytes_up INTEGER NOT NULL DEFAULT 0,
        bytes_down INTEGER NOT NULL DEFAULT 0,
        duration_ms REAL,
        error TEXT
      );
      CREATE INDEX egress_events_sandbox ON egress_events (sandbox_id, id);
    `,
  },
  {
    version: 3,
    name: 'snapshots',
    sql: `
      CREATE TABLE snapshots (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        name TEXT,
        sandbox_id TEXT NOT NULL,
        image TEXT NOT NULL,
        disk_mb INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('creating', 'ready')),
        created_at TEXT NOT NULL
      );
      CREATE UNIQUE INDEX snapshots_name ON snapshots (tenant, name) WHERE name IS NOT NULL;
      CREATE INDEX snapshots_tenant ON snapshots (tenant, created_at);
    `,
  },
  { version: 4, name: 'named volumes and their mounts', sql: VOLUMES_SQL },
  {
    version: 5,
    name: 'execs lost with their daemon',
    // 1: the daemon died while the exec ran; a restarted daemon set ended_at when it found it.
    sql: `
      ALTER TABLE execs ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;
      CREATE INDEX execs_unfinished ON execs (ended_at) WHERE ended_at IS NULL;
    `,
  },
  {
    version: 6,
    name: 'snapshots keep the labels of their sandbox',
    // A token limited to labelled sandboxes sees only snapshots of such sandboxes. Older snapshots take
    // their sandbox's labels where its row is still kept; otherwise none (visible to unscoped tokens only).
    sql: `
      ALTER TABLE snapshots ADD COLUMN labels_json TEXT NOT NULL DEFAULT '{}';
      UPDATE snapshots SET labels_json = coalesce((SELECT labels_json FROM sandboxes WHERE sandboxes.id = snapshots.sandbox_id), '{}');
    `,
  },
  {
    version: 7,
    name: 'snapshots that hold memory',
    sql: 'ALTER TABLE snapshots ADD COLUMN memory INTEGER NOT NULL DEFAULT 0;',
  },
  {
    version: 8,
    name: 'access to sandboxes\' ports from browsers',
    sql: PORT_ACCESS_SQL,
  },
  { version: 9, name: 'webhook deliveries (the log and the queue)', sql: WEBHOOK_DELIVERIES_SQL },
  { version: 10, name: 'daemon replicas on one store: who created and runs what, heartbeats, leases', sql: REPLICAS_SQL },
  { version: 11, name: 'sandbox tokens: short-lived API tokens scoped to one sandbox, by sha256', sql: SANDBOX_TOKENS_SQL },
];

export function schemaVersion(db: Database.Database): number {
  return db.pragma('user_version', { simple: true }) as number;
}

/**
 * Apply every migration newer than the file's `user_version`, each in its own transaction
 * (schema and version bump commit together or not at all).
 * IMMEDIATE transactions and a re-read of the version inside them make two processes that open
 * the same new file at once safe: the second waits (busy_timeout) and then finds nothing to do.
 * A file written by a newer agentbox is refused rather than used with a schema we do not know.
 */
export function migrate(db: Database.Database, migrations: readonly Migration[] = MIGRATIONS): void {
  checkOrder(migrations);
  const latest = migrations.at(-1)?.version ?? 0;
  const found = schemaVersion(db);
  if (found > latest) {
    throw new InternalError(`the database's schema version ${found} is newer than this agentbox knows (${latest})`, {
      hint: 'upgrade agentbox, or point AGENTBOX_HOME at another directory',
    });
  }
  for (const m of migrations) {
    const apply = db.transaction(() => {
      if (schemaVersion(db) >= m.version) return;
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    });
    try {
      apply.immediate();
    } catch (err) {
      throw new InternalError(`schema migration ${m.version} (${m.name}) failed`, { cause: err });
    }
  }
}

function checkOrder(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    if (!Number.isInteger(m.version) || m.version !== i + 1) {
      throw new InternalError(`migration "${m.name}" has version ${m.version}, expected ${i + 1}`);
    }
  });
}
