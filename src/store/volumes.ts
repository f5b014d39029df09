/**
 * Named volumes' rows: the volumes themselves (tenant-owned, unique by name within a tenant) and
 * which sandbox mounts which volume where, so that a volume in use by a running sandbox cannot be
 * removed, and a restarted daemon knows which volumes to keep mounted.
 */
import type Database from 'better-sqlite3';
import { InternalError } from '../contract/errors.js';

/** Migration 4 (migrations.ts). */
export const VOLUMES_SQL = `
  CREATE TABLE volumes (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    size_mb INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (tenant, name)
  );
  CREATE TABLE sandbox_volumes (
    sandbox_id TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    name TEXT NOT NULL,
    target TEXT NOT NULL,
    read_only INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, target)
  );
  CREATE INDEX sandbox_volumes_volume ON sandbox_volumes (volume_id);
`;

export interface StoredVolume {
  id: string;
  tenant: string;
  name: string;
  sizeMb: number;
  createdAt: string;
}

export interface SandboxVolumeRow {
  sandboxId: string;
  volumeId: string;
  name: string;
  target: string;
  readOnly: boolean;
}

interface VolumeRow {
  id: string;
  tenant: string;
  name: string;
  size_mb: number;
  created_at: string;
}

interface MountRow {
  sandbox_id: string;
  volume_id: string;
  name: string;
  target: string;
  read_only: number;
}

/** Sandbox states that hold a volume mounted (lifecycle.ts ACTIVE). */
const ACTIVE_SQL = `('creating', 'running')`;

function toVolume(r: VolumeRow): StoredVolume {
  if (typeof r.id !== 'string' || typeof r.name !== 'string' || !Number.isInteger(r.size_mb)) {
    throw new InternalError(`the store's row for volume ${String(r.id)} is corrupt`, { hint: 'inspect it with sqlite3 $AGENTBOX_HOME/agentbox.db' });
  }
  return { id: r.id, tenant: r.tenant, name: r.name, sizeMb: r.size_mb, createdAt: r.created_at };
}

function toMount(r: MountRow): SandboxVolumeRow {
  return { sandboxId: r.sandbox_id, volumeId: r.volume_id, name: r.name, target: r.target, readOnly: r.read_only === 1 };
}

export class VolumeRows {
  private readonly insertStmt: Database.Statement<[VolumeRow]>;
  private readonly getStmt: Database.Statement<[string, string], VolumeRow>;
  private readonly getByIdStmt: Database.Statement<[string], VolumeRow>;
  private readonly listStmt: Database.Statement<[{ tenant: string | null }], VolumeRow>;
  private readonly deleteStmt: Database.Statement<[string]>;
  private readonly insertMount: Database.Statement<[MountRow]>;
  private readonly mountsOfStmt: Database.Statement<[string], MountRow>;
  private readonly usersStmt: Database.Statement<[string], { sandbox_id: string }>;
  private readonly activeStmt: Database.Statement<[], MountRow>;
  private readonly forgetStmt: Database.Statement<[]>;

  constructor(private readonly db: Database.Database) {
    this.insertStmt = db.prepare('INSERT INTO volumes (id, tenant, name, size_mb, created_at) VALUES (@id, @tenant, @name, @size_mb, @created_at)');
    this.getStmt = db.prepare('SELECT * FROM volumes WHERE tenant = ? AND name = ?');
    this.getByIdStmt = db.prepare('SELECT * FROM volumes WHERE id = ?');
    this.listStmt = db.prepare('SELECT * FROM volumes WHERE @tenant IS NULL OR tenant = @tenant ORDER BY tenant, name');
    this.deleteStmt = db.prepare('DELETE FROM volumes WHERE id = ?');
    this.insertMount = db.prepare(
      'INSERT OR REPLACE INTO sandbox_volumes (sandbox_id, volume_id, name, target, read_only) VALUES (@sandbox_id, @volume_id, @name, @target, @read_only)',
    );
    this.mountsOfStmt = db.prepare('SELECT * FROM sandbox_volumes WHERE sandbox_id = ? ORDER BY rowid');
    this.usersStmt = db.prepare(`
      SELECT DISTINCT sv.sandbox_id FROM sandbox_volumes sv JOIN sandboxes s ON s.id = sv.sandbox_id
      WHERE sv.volume_id = ? AND s.state IN ${ACTIVE_SQL} ORDER BY sv.sandbox_id`);
    this.activeStmt = db.prepare(`
      SELECT sv.* FROM sandbox_volumes sv JOIN sandboxes s ON s.id = sv.sandbox_id WHERE s.state IN ${ACTIVE_SQL}`);
    this.forgetStmt = db.prepare('DELETE FROM sandbox_volumes WHERE sandbox_id NOT IN (SELECT id FROM sandboxes)');
  }

  insert(v: StoredVolume): void {
    this.insertStmt.run({ id: v.id, tenant: v.tenant, name: v.name, size_mb: v.sizeMb, created_at: v.createdAt });
  }

  get(tenant: string, name: string): StoredVolume | undefined {
    const row = this.getStmt.get(tenant, name);
    return row === undefined ? undefined : toVolume(row);
  }

  getById(id: string): StoredVolume | undefined {
    const row = this.getByIdStmt.get(id);
    return row === undefined ? undefined : toVolume(row);
  }

  /** A tenant's volumes by name; every tenant's without one. */
  list(tenant?: string): StoredVolume[] {
    return this.listStmt.all({ tenant: tenant ?? null }).map(toVolume);
  }

  delete(id: string): void {
    this.deleteStmt.run(id);
  }

  /** Record where a sandbox mounts which volumes (before it starts, so a remove sees it at once). */
  addMounts(mounts: SandboxVolumeRow[]): void {
    this.db.transaction(() => {
      for (const m of mounts) {
        this.insertMount.run({ sandbox_id: m.sandboxId, volume_id: m.volumeId, name: m.name, target: m.target, read_only: m.readOnly ? 1 : 0 });
      }
    })();
  }

  mountsOf(sandboxId: string): SandboxVolumeRow[] {
    return this.mountsOfStmt.all(sandboxId).map(toMount);
  }

  /** Ids of the creating or running sandboxes that mount the volume. */
  activeUsers(volumeId: string): string[] {
    return this.usersStmt.all(volumeId).map((r) => r.sandbox_id);
  }

  /** Drop the mounts of sandboxes whose rows are gone (Store.purgeEnded). */
  forgetGoneSandboxes(): void {
    this.forgetStmt.run();
  }

  /** Every mount of every creating or running sandbox. */
  activeMounts(): SandboxVolumeRow[] {
    return this.activeStmt.all().map(toMount);
  }
}
