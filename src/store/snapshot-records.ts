/**
 * Snapshot rows. A row is `creating` from before its files are written until they are complete and
 * verified, then `ready`; a daemon that dies in between leaves a `creating` row, which the next
 * start removes together with whatever files it had (core/manager/snapshots.ts), so a listed
 * snapshot is always a complete one.
 */
import type { Snapshot } from '../contract/model.js';
import type { SqlDb, SqlStatement } from './sql-db.js';

interface SnapshotRow {
  id: string;
  tenant: string;
  name: string | null;
  sandbox_id: string;
  image: string;
  disk_mb: number;
  bytes: number;
  sha256: string;
  state: string;
  created_at: string;
  labels_json: string;
  memory: number;
}

export type NewSnapshot = Pick<Snapshot, 'id' | 'tenant' | 'name' | 'sandboxId' | 'image' | 'diskMb' | 'createdAt' | 'labels' | 'memory'>;

function fromRow(r: SnapshotRow): Snapshot {
  return { id: r.id, tenant: r.tenant, name: r.name, sandboxId: r.sandbox_id, image: r.image, diskMb: r.disk_mb, bytes: r.bytes, sha256: r.sha256, createdAt: r.created_at, labels: JSON.parse(r.labels_json) as Record<string, string>, memory: r.memory === 1 };
}

export class SnapshotRecords {
  private readonly insert: SqlStatement<[Omit<NewSnapshot, 'labels' | 'memory'> & { labels: string; memory: number }]>;
  private readonly ready: SqlStatement<[{ id: string; bytes: number; sha256: string }]>;
  private readonly get: SqlStatement<[{ id: string; tenant: string | null }], SnapshotRow>;
  private readonly byName: SqlStatement<[{ name: string; tenant: string }], SnapshotRow>;
  private readonly list: SqlStatement<[{ tenant: string | null }], SnapshotRow>;
  private readonly creatingRows: SqlStatement<[], SnapshotRow>;
  private readonly del: SqlStatement<[string]>;
  private readonly bytes: SqlStatement<[string], { total: number | null }>;
  private readonly ids: SqlStatement<[], { id: string }>;

  constructor(db: SqlDb) {
    this.insert = db.prepare(`
      INSERT INTO snapshots (id, tenant, name, sandbox_id, image, disk_mb, bytes, sha256, state, created_at, labels_json, memory)
      VALUES (@id, @tenant, @name, @sandboxId, @image, @diskMb, 0, '', 'creating', @createdAt, @labels, @memory)`);
    this.ready = db.prepare("UPDATE snapshots SET state = 'ready', bytes = @bytes, sha256 = @sha256 WHERE id = @id AND state = 'creating'");
    this.get = db.prepare("SELECT * FROM snapshots WHERE id = @id AND state = 'ready' AND (CAST(@tenant AS TEXT) IS NULL OR tenant = @tenant)");
    this.byName = db.prepare("SELECT * FROM snapshots WHERE name = @name AND tenant = @tenant AND state = 'ready'");
    this.list = db.prepare("SELECT * FROM snapshots WHERE state = 'ready' AND (CAST(@tenant AS TEXT) IS NULL OR tenant = @tenant) ORDER BY created_at DESC, id");
    this.creatingRows = db.prepare("SELECT * FROM snapshots WHERE state = 'creating'");
    this.del = db.prepare('DELETE FROM snapshots WHERE id = ?');
    this.bytes = db.prepare('SELECT sum(bytes) AS total FROM snapshots WHERE tenant = ?');
    this.ids = db.prepare('SELECT id FROM snapshots');
  }

  /** A `creating` row; throws a unique violation (sql-db.ts isUniqueViolation) for a name the tenant already uses. */
  begin(s: NewSnapshot): void {
    this.insert.run({ ...s, labels: JSON.stringify(s.labels), memory: s.memory ? 1 : 0 });
  }

  markReady(id: string, bytes: number, sha256: string): boolean {
    return this.ready.run({ id, bytes, sha256 }).changes === 1;
  }

  /** A ready snapshot; of this tenant only, unless tenant is null (the operator). */
  find(id: string, tenant: string | null): Snapshot | undefined {
    const r = this.get.get({ id, tenant });
    return r && fromRow(r);
  }

  findByName(name: string, tenant: string): Snapshot | undefined {
    const r = this.byName.get({ name, tenant });
    return r && fromRow(r);
  }

  listReady(tenant: string | null): Snapshot[] {
    return this.list.all({ tenant }).map(fromRow);
  }

  /** Rows a daemon left half-made when it died (or being made now, by another replica), with their sandbox. */
  unfinished(): { id: string; sandboxId: string }[] {
    return this.creatingRows.all().map((r) => ({ id: r.id, sandboxId: r.sandbox_id }));
  }

  allIds(): Set<string> {
    return new Set(this.ids.all().map((r) => r.id));
  }

  remove(id: string): boolean {
    return this.del.run(id).changes === 1;
  }

  /** Host disk the tenant's snapshots hold (creating ones count 0 until they are measured). */
  tenantBytes(tenant: string): number {
    return this.bytes.get(tenant)?.total ?? 0;
  }
}
