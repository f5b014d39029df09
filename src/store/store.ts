/**
 * SQLite store (better-sqlite3, WAL): sandboxes, exec history (a ring per sandbox), audit, usage.
 * Rows are validated with the model's schemas when read, so a corrupt row fails loudly.
 */
import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { InternalError } from '../core/errors.js';
import { SandboxSchema, type EndReason, type Sandbox, type SandboxSpec, type SandboxState } from '../core/model.js';
import { MIGRATIONS } from './migrations.js';

export interface StoredSandbox {
  sandbox: Sandbox;
  spec: SandboxSpec;
  runtimeData: unknown | null;
  idleTimeoutMs: number | null;
}

export interface StoredExec {
  id: string;
  sandboxId: string;
  tenant: string;
  cmd: string[];
  startedAt: string;
  endedAt: string | null;
  exitCode: number | null;
  timedOut: boolean;
  oomKilled: boolean;
  truncated: boolean;
  durationMs: number | null;
  stdoutTail: Buffer | null;
  stderrTail: Buffer | null;
}

export interface SandboxFilter {
  tenant?: string;
  states?: SandboxState[];
  labels?: Record<string, string>;
  /** Include deleted sandboxes too (by default only those not deleted). */
  includeEnded?: boolean;
}

export interface StoreOpts {
  /** Execs kept per sandbox; older ones are dropped. @default 100 */
  execsPerSandbox?: number;
}

interface SandboxRow {
  id: string;
  tenant: string;
  image: string;
  profile: string | null;
  runtime: string;
  isolation: string;
  state: string;
  limits_json: string;
  egress_json: string;
  labels_json: string;
  spec_json: string;
  runtime_data_json: string | null;
  created_at: string;
  expires_at: string | null;
  last_active_at: string;
  idle_timeout_ms: number | null;
  ended_at: string | null;
  end_reason: string | null;
  ended_by: string | null;
}

interface ExecRow {
  id: string;
  sandbox_id: string;
  tenant: string;
  cmd_json: string;
  started_at: string;
  ended_at: string | null;
  exit_code: number | null;
  timed_out: number;
  oom_killed: number;
  truncated: number;
  duration_ms: number | null;
  stdout_tail: Buffer | null;
  stderr_tail: Buffer | null;
}

function toStoredSandbox(row: SandboxRow): StoredSandbox {
  try {
    const sandbox = SandboxSchema.parse({
      id: row.id,
      tenant: row.tenant,
      image: row.image,
      profile: row.profile,
      runtime: row.runtime,
      isolation: row.isolation,
      state: row.state,
      limits: JSON.parse(row.limits_json),
      egress: JSON.parse(row.egress_json),
      labels: JSON.parse(row.labels_json),
      createdAt: row.created_at,
      expiresAt: row.expires_at,
      lastActiveAt: row.last_active_at,
      endedAt: row.ended_at,
      endReason: row.end_reason,
      endedBy: row.ended_by,
    });
    return {
      sandbox,
      spec: JSON.parse(row.spec_json) as SandboxSpec,
      runtimeData: row.runtime_data_json === null ? null : (JSON.parse(row.runtime_data_json) as unknown),
      idleTimeoutMs: row.idle_timeout_ms,
    };
  } catch (err) {
    throw new InternalError(`the store's row for sandbox ${row.id} is corrupt`, { hint: 'inspect it with sqlite3 $AGENTBOX_HOME/agentbox.db', cause: err });
  }
}

function toStoredExec(row: ExecRow): StoredExec {
  return {
    id: row.id,
    sandboxId: row.sandbox_id,
    tenant: row.tenant,
    cmd: JSON.parse(row.cmd_json) as string[],
    startedAt: row.started_at,
    endedAt: row.ended_at,
    exitCode: row.exit_code,
    timedOut: row.timed_out === 1,
    oomKilled: row.oom_killed === 1,
    truncated: row.truncated === 1,
    durationMs: row.duration_ms,
    stdoutTail: row.stdout_tail,
    stderrTail: row.stderr_tail,
  };
}

export class Store {
  private readonly db: Database.Database;
  private readonly execsPerSandbox: number;
  private readonly stmts;

  private constructor(db: Database.Database, opts: StoreOpts) {
    this.db = db;
    this.execsPerSandbox = opts.execsPerSandbox ?? 100;
    this.stmts = {
      insertSandbox: db.prepare(`INSERT INTO sandboxes (id, tenant, image, profile, runtime, isolation, state, limits_json, egress_json, labels_json,
        spec_json, runtime_data_json, created_at, expires_at, last_active_at, idle_timeout_ms, ended_at, end_reason, ended_by)
        VALUES (@id, @tenant, @image, @profile, @runtime, @isolation, @state, @limits_json, @egress_json, @labels_json,
        @spec_json, NULL, @created_at, @expires_at, @last_active_at, @idle_timeout_ms, NULL, NULL, NULL)`),
      getSandbox: db.prepare('SELECT * FROM sandboxes WHERE id = ?'),
      setRuntimeData: db.prepare('UPDATE sandboxes SET runtime_data_json = ? WHERE id = ?'),
      setState: db.prepare('UPDATE sandboxes SET state = ? WHERE id = ?'),
      touch: db.prepare('UPDATE sandboxes SET last_active_at = ? WHERE id = ?'),
      markEnded: db.prepare('UPDATE sandboxes SET state = @state, end_reason = @reason, ended_by = @endedBy, ended_at = @at WHERE id = @id'),
      countActive: db.prepare(`SELECT COUNT(*) AS n, COALESCE(SUM(json_extract(limits_json, '$.memoryMb')), 0) AS mem
        FROM sandboxes WHERE tenant = ? AND state IN ('creating', 'running')`),
      purgeExecs: db.prepare(`DELETE FROM execs WHERE sandbox_id IN (SELECT id FROM sandboxes WHERE ended_at IS NOT NULL AND ended_at < ?)`),
      purgeSandboxes: db.prepare('DELETE FROM sandboxes WHERE ended_at IS NOT NULL AND ended_at < ?'),
      insertExec: db.prepare('INSERT INTO execs (id, sandbox_id, tenant, cmd_json, started_at) VALUES (?, ?, ?, ?, ?)'),
      trimExecs: db.prepare(`DELETE FROM execs WHERE sandbox_id = @sandboxId AND id NOT IN
        (SELECT id FROM execs WHERE sandbox_id = @sandboxId ORDER BY started_at DESC, rowid DESC LIMIT @keep)`),
      finishExec: db.prepare(`UPDATE execs SET exit_code = @exitCode, timed_out = @timedOut, oom_killed = @oomKilled, truncated = @truncated,
        duration_ms = @durationMs, ended_at = @endedAt, stdout_tail = @stdoutTail, stderr_tail = @stderrTail WHERE id = @id`),
      getExec: db.prepare('SELECT * FROM execs WHERE sandbox_id = ? AND id = ?'),
      listExecs: db.prepare('SELECT * FROM execs WHERE sandbox_id = ? ORDER BY started_at DESC, rowid DESC LIMIT ?'),
      audit: db.prepare('INSERT INTO audit (at, tenant, actor, action, sandbox_id, detail_json) VALUES (?, ?, ?, ?, ?, ?)'),
      addExecMs: db.prepare(`INSERT INTO usage (tenant, day, exec_ms) VALUES (?, ?, ?)
        ON CONFLICT (tenant, day) DO UPDATE SET exec_ms = exec_ms + excluded.exec_ms`),
      execMsOn: db.prepare('SELECT exec_ms FROM usage WHERE tenant = ? AND day = ?'),
    };
  }

  /** Open (creating if needed, owner-only) and migrate. `:memory:` works for throwaway stores. */
  static open(path: string, opts: StoreOpts = {}): Store {
    if (path !== ':memory:') {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600));
      chmodSync(path, 0o600);
    }
    const db = new Database(path);
    db.pragma('journal_mode = WAL');
    db.pragma('busy_timeout = 5000');
    db.pragma('foreign_keys = ON');
    migrate(db);
    return new Store(db, opts);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  get schemaVersion(): number {
    return this.db.pragma('user_version', { simple: true }) as number;
  }

  insertSandbox(sb: Sandbox, spec: SandboxSpec, idleTimeoutMs: number | null): void {
    this.stmts.insertSandbox.run({
      id: sb.id,
      tenant: sb.tenant,
      image: sb.image,
      profile: sb.profile,
      runtime: sb.runtime,
      isolation: sb.isolation,
      state: sb.state,
      limits_json: JSON.stringify(sb.limits),
      egress_json: JSON.stringify(sb.egress),
      labels_json: JSON.stringify(sb.labels),
      spec_json: JSON.stringify(spec),
      created_at: sb.createdAt,
      expires_at: sb.expiresAt,
      last_active_at: sb.lastActiveAt,
      idle_timeout_ms: idleTimeoutMs,
    });
  }

  getSandbox(id: string): StoredSandbox | undefined {
    const row = this.stmts.getSandbox.get(id) as SandboxRow | undefined;
    return row ? toStoredSandbox(row) : undefined;
  }

  listSandboxes(filter: SandboxFilter = {}): StoredSandbox[] {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.tenant !== undefined) {
      where.push('tenant = ?');
      params.push(filter.tenant);
    }
    if (filter.states && filter.states.length > 0) {
      where.push(`state IN (${filter.states.map(() => '?').join(', ')})`);
      params.push(...filter.states);
    } else if (!filter.includeEnded) {
      where.push("state != 'deleted'");
    }
    for (const [k, v] of Object.entries(filter.labels ?? {})) {
      where.push('json_extract(labels_json, ?) = ?');
      params.push(`$."${k.replace(/"/g, '')}"`, v);
    }
    const sql = `SELECT * FROM sandboxes ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, rowid`;
    return (this.db.prepare(sql).all(...params) as SandboxRow[]).map(toStoredSandbox);
  }

  setRuntimeData(id: string, data: unknown): void {
    this.stmts.setRuntimeData.run(JSON.stringify(data), id);
  }

  setState(id: string, state: SandboxState): void {
    this.stmts.setState.run(state, id);
  }

  touch(id: string, atIso: string): void {
    this.stmts.touch.run(atIso, id);
  }

  markEnded(id: string, end: { state: SandboxState; reason: EndReason; endedBy: string | null; at: string }): void {
    this.stmts.markEnded.run({ id, state: end.state, reason: end.reason, endedBy: end.endedBy, at: end.at });
  }

  countActive(tenant: string): { sandboxes: number; memoryMb: number } {
    const row = this.stmts.countActive.get(tenant) as { n: number; mem: number };
    return { sandboxes: row.n, memoryMb: row.mem };
  }

  /** Drop ended sandboxes (and their execs) that ended before the given time. */
  purgeEnded(olderThanIso: string): number {
    return this.db.transaction(() => {
      this.stmts.purgeExecs.run(olderThanIso);
      return this.stmts.purgeSandboxes.run(olderThanIso).changes;
    })();
  }

  insertExec(e: { id: string; sandboxId: string; tenant: string; cmd: string[]; startedAt: string }): void {
    this.db.transaction(() => {
      this.stmts.insertExec.run(e.id, e.sandboxId, e.tenant, JSON.stringify(e.cmd), e.startedAt);
      this.stmts.trimExecs.run({ sandboxId: e.sandboxId, keep: this.execsPerSandbox });
    })();
  }

  finishExec(
    id: string,
    r: { exitCode: number; timedOut: boolean; oomKilled: boolean; truncated: boolean; durationMs: number; endedAt: string; stdoutTail: Buffer; stderrTail: Buffer },
  ): void {
    this.stmts.finishExec.run({
      id,
      exitCode: r.exitCode,
      timedOut: r.timedOut ? 1 : 0,
      oomKilled: r.oomKilled ? 1 : 0,
      truncated: r.truncated ? 1 : 0,
      durationMs: r.durationMs,
      endedAt: r.endedAt,
      stdoutTail: r.stdoutTail,
      stderrTail: r.stderrTail,
    });
  }

  getExec(sandboxId: string, execId: string): StoredExec | undefined {
    const row = this.stmts.getExec.get(sandboxId, execId) as ExecRow | undefined;
    return row ? toStoredExec(row) : undefined;
  }

  /** Newest first. */
  listExecs(sandboxId: string, limit = 100): StoredExec[] {
    return (this.stmts.listExecs.all(sandboxId, limit) as ExecRow[]).map(toStoredExec);
  }

  audit(e: { tenant: string | null; actor: string | null; action: string; sandboxId: string | null; detail: unknown }): void {
    this.stmts.audit.run(new Date().toISOString(), e.tenant, e.actor, e.action, e.sandboxId, e.detail === null || e.detail === undefined ? null : JSON.stringify(e.detail));
  }

  listAudit(filter: { sandboxId?: string; limit?: number } = {}): { at: string; tenant: string | null; actor: string | null; action: string; sandboxId: string | null; detail: unknown }[] {
    const rows = (
      filter.sandboxId
        ? this.db.prepare('SELECT * FROM audit WHERE sandbox_id = ? ORDER BY id DESC LIMIT ?').all(filter.sandboxId, filter.limit ?? 100)
        : this.db.prepare('SELECT * FROM audit ORDER BY id DESC LIMIT ?').all(filter.limit ?? 100)
    ) as { at: string; tenant: string | null; actor: string | null; action: string; sandbox_id: string | null; detail_json: string | null }[];
    return rows.map((r) => ({ at: r.at, tenant: r.tenant, actor: r.actor, action: r.action, sandboxId: r.sandbox_id, detail: r.detail_json ? (JSON.parse(r.detail_json) as unknown) : null }));
  }

  addExecMs(tenant: string, day: string, ms: number): void {
    this.stmts.addExecMs.run(tenant, day, Math.round(ms));
  }

  execMsOn(tenant: string, day: string): number {
    return (this.stmts.execMsOn.get(tenant, day) as { exec_ms: number } | undefined)?.exec_ms ?? 0;
  }
}

function migrate(db: Database.Database): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  for (const m of MIGRATIONS) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    })();
  }
}
