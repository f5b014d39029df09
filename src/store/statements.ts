/**
 * Every SQL statement of the store, prepared once per connection and typed by its parameters and row.
 * Optional filters are bound as NULL (`@x IS NULL OR ...`) so even listSandboxes needs no SQL built at run time;
 * `CAST(@x AS TEXT) IS NULL` where both engines run one text: PostgreSQL cannot tell the type of a
 * parameter that is first met compared with NULL, and the cast changes nothing for SQLite.
 * Where PostgreSQL needs other SQL (JSON functions, types of NULL parameters), both texts stand side by side.
 */
import type { AuditRow, ExecRow, NewSandboxRow, SandboxRow } from './rows.js';
import type { SqlDb, SqlStatement, SqlText } from './sql-db.js';

export interface ListSandboxesParams {
  tenant: string | null;
  /** JSON array of states, or null for any state. */
  states: string | null;
  /** JSON object of label key → value that must all match, or null. */
  labels: string | null;
  /** 1: deleted sandboxes too (only when states is null). */
  includeEnded: 0 | 1;
}

export interface FinishExecParams {
  id: string;
  exitCode: number;
  timedOut: 0 | 1;
  oomKilled: 0 | 1;
  truncated: 0 | 1;
  durationMs: number;
  endedAt: string;
  stdoutTail: Buffer;
  stderrTail: Buffer;
}

export interface MarkEndedParams {
  id: string;
  state: string;
  reason: string;
  endedBy: string | null;
  at: string;
}

/** P is the tuple of bind arguments; statements with @named parameters take one object: [Params]. */
type Stmt<P extends unknown[], R = unknown> = SqlStatement<P, R>;

/** Each statement typed by its bind arguments and its row. */
export interface Statements {
  insertSandbox: Stmt<[NewSandboxRow]>;
  getSandbox: Stmt<[string], SandboxRow>;
  listSandboxes: Stmt<[ListSandboxesParams], SandboxRow>;
  setRuntimeData: Stmt<[data: string, id: string]>;
  setState: Stmt<[state: string, id: string]>;
  setEgress: Stmt<[egressJson: string, id: string]>;
  touch: Stmt<[at: string, id: string]>;
  setExpiresAt: Stmt<[at: string | null, id: string]>;
  markEnded: Stmt<[MarkEndedParams]>;
  countActive: Stmt<[tenant: string], { n: number; mem: number }>;
  /** Holds a tenant's lock until the transaction ends: an advisory lock on PostgreSQL, the database's write lock on SQLite. */
  lockTenant: Stmt<[key: string]>;
  countByState: Stmt<[], { state: string; n: number }>;
  purgeExecs: Stmt<[olderThan: string]>;
  purgeSandboxes: Stmt<[olderThan: string]>;
  insertExec: Stmt<[id: string, sandboxId: string, tenant: string, cmdJson: string, startedAt: string, replica: string | null]>;
  trimExecs: Stmt<[{ sandboxId: string; keep: number }]>;
  finishExec: Stmt<[FinishExecParams]>;
  loseUnfinishedExecs: Stmt<[{ endedAt: string; replica: string | null; unnamed: 0 | 1 }]>;
  getExec: Stmt<[sandboxId: string, execId: string], ExecRow>;
  listExecs: Stmt<[sandboxId: string, limit: number], ExecRow>;
  audit: Stmt<[at: string, tenant: string | null, actor: string | null, action: string, sandboxId: string | null, detailJson: string | null]>;
  listAudit: Stmt<[{ sandboxId: string | null; limit: number }], AuditRow>;
  addExecMs: Stmt<[tenant: string, day: string, ms: number]>;
  execMsOn: Stmt<[tenant: string, day: string], { exec_ms: number }>;
}

export function prepareStatements(db: SqlDb): Statements {
  // Parameter and row types come from the Statements interface (inferred from the property's type).
  const prepare = <P extends unknown[], R>(sql: SqlText): Stmt<P, R> => db.prepare<P, R>(sql);
  return {
    insertSandbox: prepare(`
      INSERT INTO sandboxes (id, tenant, image, profile, runtime, isolation, state, limits_json, egress_json, labels_json,
        spec_json, created_at, expires_at, last_active_at, idle_timeout_ms, replica)
      VALUES (@id, @tenant, @image, @profile, @runtime, @isolation, @state, @limits_json, @egress_json, @labels_json,
        @spec_json, @created_at, @expires_at, @last_active_at, @idle_timeout_ms, @replica)`),
    getSandbox: prepare('SELECT * FROM sandboxes WHERE id = ?'),
    // SQLite compares labels key by key through json_each, so keys need no quoting inside a JSON path;
    // PostgreSQL's jsonb containment does the same (label values are strings: contained means equal).
    // PostgreSQL cannot tell the type of a parameter that is only compared with NULL: the casts say it.
    listSandboxes: prepare({
      sqlite: `
        SELECT * FROM sandboxes AS s
        WHERE (@tenant IS NULL OR s.tenant = @tenant)
          AND (@states IS NULL OR s.state IN (SELECT value FROM json_each(@states)))
          AND (@states IS NOT NULL OR @includeEnded = 1 OR s.state != 'deleted')
          AND (@labels IS NULL OR NOT EXISTS (
            SELECT 1 FROM json_each(@labels) AS want
            WHERE (SELECT have.value FROM json_each(s.labels_json) AS have WHERE have.key = want.key) IS NOT want.value))
        ORDER BY s.created_at, s.rowid`,
      postgres: `
        SELECT * FROM sandboxes AS s
        WHERE (@tenant::text IS NULL OR s.tenant = @tenant::text)
          AND (@states::text IS NULL OR s.state IN (SELECT jsonb_array_elements_text(@states::jsonb)))
          AND (@states::text IS NOT NULL OR @includeEnded::integer = 1 OR s.state <> 'deleted')
          AND (@labels::text IS NULL OR s.labels_json::jsonb @> @labels::jsonb)
        ORDER BY s.created_at, s.rowid`,
    }),
    setRuntimeData: prepare('UPDATE sandboxes SET runtime_data_json = ? WHERE id = ?'),
    setState: prepare('UPDATE sandboxes SET state = ? WHERE id = ?'),
    setEgress: prepare('UPDATE sandboxes SET egress_json = ? WHERE id = ?'),
    touch: prepare('UPDATE sandboxes SET last_active_at = ? WHERE id = ?'),
    setExpiresAt: prepare('UPDATE sandboxes SET expires_at = ? WHERE id = ?'),
    // A sandbox ends once: later ends (a reaper pass racing a delete) change nothing, except that a
    // stopped or failed one may still be deleted, keeping why, when and by whom it ended.
    markEnded: prepare(`
      UPDATE sandboxes SET state = @state,
        end_reason = COALESCE(end_reason, @reason),
        ended_by = CASE WHEN ended_at IS NULL THEN @endedBy ELSE ended_by END,
        ended_at = COALESCE(ended_at, @at)
      WHERE id = @id AND (ended_at IS NULL OR (@state = 'deleted' AND state <> 'deleted'))`),
    // PostgreSQL: hashtext is a 32-bit key per tenant (two tenants sharing one only wait for each other).
    // SQLite: a write first, so the transaction holds the write lock before it reads (two processes on one
    // file would otherwise both read, then fail to upgrade); the row it leaves is never a lease anyone takes.
    lockTenant: prepare({
      sqlite: "INSERT INTO leases (name, holder, expires_at) VALUES (?, '', '') ON CONFLICT (name) DO NOTHING",
      postgres: 'SELECT pg_advisory_xact_lock(hashtext(CAST(? AS TEXT)))',
    }),
    countActive: prepare({
      sqlite: `
        SELECT COUNT(*) AS n, COALESCE(SUM(json_extract(limits_json, '$.memoryMb')), 0) AS mem
        FROM sandboxes WHERE tenant = ? AND state IN ('creating', 'running')`,
      postgres: `
        SELECT COUNT(*) AS n, COALESCE(SUM((limits_json::jsonb ->> 'memoryMb')::numeric), 0) AS mem
        FROM sandboxes WHERE tenant = ? AND state IN ('creating', 'running')`,
    }),
    countByState: prepare('SELECT state, COUNT(*) AS n FROM sandboxes GROUP BY state'),
    purgeExecs: prepare(
      'DELETE FROM execs WHERE sandbox_id IN (SELECT id FROM sandboxes WHERE ended_at IS NOT NULL AND ended_at < ?)',
    ),
    purgeSandboxes: prepare('DELETE FROM sandboxes WHERE ended_at IS NOT NULL AND ended_at < ?'),

    insertExec: prepare(
      'INSERT INTO execs (id, sandbox_id, tenant, cmd_json, started_at, replica) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    // Keeps the newest `keep` execs of the sandbox (rowid breaks ties between equal start times; on
    // PostgreSQL rowid is a column of that name, migrations.ts).
    trimExecs: prepare(`
      DELETE FROM execs WHERE sandbox_id = @sandboxId AND rowid NOT IN
        (SELECT rowid FROM execs WHERE sandbox_id = @sandboxId ORDER BY started_at DESC, rowid DESC LIMIT @keep)`),
    finishExec: prepare(`
      UPDATE execs SET exit_code = @exitCode, timed_out = @timedOut, oom_killed = @oomKilled, truncated = @truncated,
        duration_ms = @durationMs, ended_at = @endedAt, stdout_tail = @stdoutTail, stderr_tail = @stderrTail
      WHERE id = @id AND lost = 0`),
    // Only the execs of one replica (and, with unnamed, those of none): another replica's may still be running.
    loseUnfinishedExecs: prepare(`
      UPDATE execs SET lost = 1, ended_at = @endedAt
      WHERE ended_at IS NULL AND (CAST(@replica AS TEXT) IS NULL OR replica = @replica OR (CAST(@unnamed AS INTEGER) = 1 AND replica IS NULL))`),
    getExec: prepare('SELECT * FROM execs WHERE sandbox_id = ? AND id = ?'),
    listExecs: prepare(
      'SELECT * FROM execs WHERE sandbox_id = ? ORDER BY started_at DESC, rowid DESC LIMIT ?',
    ),

    audit: prepare(
      'INSERT INTO audit (at, tenant, actor, action, sandbox_id, detail_json) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    listAudit: prepare(
      'SELECT * FROM audit WHERE (CAST(@sandboxId AS TEXT) IS NULL OR sandbox_id = @sandboxId) ORDER BY id DESC LIMIT @limit',
    ),

    // PostgreSQL wants the existing row's column named by its table (a bare one is ambiguous with excluded's).
    addExecMs: prepare({
      sqlite: `
        INSERT INTO usage (tenant, day, exec_ms) VALUES (?, ?, ?)
        ON CONFLICT (tenant, day) DO UPDATE SET exec_ms = exec_ms + excluded.exec_ms`,
      postgres: `
        INSERT INTO usage (tenant, day, exec_ms) VALUES (?, ?, ?)
        ON CONFLICT (tenant, day) DO UPDATE SET exec_ms = usage.exec_ms + excluded.exec_ms`,
    }),
    execMsOn: prepare('SELECT exec_ms FROM usage WHERE tenant = ? AND day = ?'),
  };
}
