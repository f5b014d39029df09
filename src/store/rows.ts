/**
 * Row shapes as SQLite returns them (and PostgreSQL, whose client is set up to give the same types: pg-worker.ts), and their mapping to and from the model's types.
 * Reading validates: a row that does not parse is an InternalError naming the row, never a half-typed object.
 */
import { z } from 'zod';
import { InternalError } from '../contract/errors.js';
import { SandboxSchema, type Sandbox, type SandboxSpec } from '../contract/model.js';

export interface StoredSandbox {
  sandbox: Sandbox;
  spec: SandboxSpec;
  /** The driver's opaque handle data (set after create), null before. */
  runtimeData: unknown | null;
  idleTimeoutMs: number | null;
  /**
   * The daemon replica that created it (ARCHITECTURE.md, "Replicas"); null for a row from before
   * replicas were recorded, or from a daemon that has no identity (tests): owned by whoever opens the store.
   */
  replica: string | null;
}

export interface StoredExec {
  id: string;
  sandboxId: string;
  tenant: string;
  cmd: string[];
  startedAt: string;
  /** null while the exec runs; for a lost one, when a restarted daemon found it */
  endedAt: string | null;
  /** null while the exec runs, and for a lost one */
  exitCode: number | null;
  /** The daemon died while it ran: its exit status and the rest of its output are unknown. */
  lost: boolean;
  timedOut: boolean;
  oomKilled: boolean;
  truncated: boolean;
  durationMs: number | null;
  stdoutTail: Buffer | null;
  stderrTail: Buffer | null;
}

export interface AuditEntry {
  id: number;
  at: string;
  tenant: string | null;
  actor: string | null;
  action: string;
  sandboxId: string | null;
  detail: unknown;
}

export interface SandboxRow {
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
  replica: string | null;
}

/** The columns written by insertSandbox (the rest start NULL). */
export type NewSandboxRow = Omit<SandboxRow, 'runtime_data_json' | 'ended_at' | 'end_reason' | 'ended_by'>;

export interface ExecRow {
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
  lost: number;
}

export interface AuditRow {
  id: number;
  at: string;
  tenant: string | null;
  actor: string | null;
  action: string;
  sandbox_id: string | null;
  detail_json: string | null;
}

const CmdSchema = z.array(z.string());

export function sandboxToRow(sb: Sandbox, spec: SandboxSpec, idleTimeoutMs: number | null, replica: string | null): NewSandboxRow {
  return {
    replica,
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
  };
}

export function toStoredSandbox(row: SandboxRow): StoredSandbox {
  return corruptIfThrows(`sandbox ${row.id}`, () => {
    const spec = parseSpec(row);
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
      ...(spec.volumes?.length ? { volumes: spec.volumes } : {}),
    });
    return {
      sandbox,
      spec,
      runtimeData: row.runtime_data_json === null ? null : (JSON.parse(row.runtime_data_json) as unknown),
      idleTimeoutMs: row.idle_timeout_ms,
      replica: row.replica ?? null,
    };
  });
}

/**
 * SandboxSpec is a plain interface in contract/model (no schema), so only its identity is checked here:
 * a JSON object for this very sandbox. A full check wants a SandboxSpecSchema next to the interface.
 */
function parseSpec(row: SandboxRow): SandboxSpec {
  const spec: unknown = JSON.parse(row.spec_json);
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec) || (spec as { id?: unknown }).id !== row.id) {
    throw new Error('spec_json is not the spec of this sandbox');
  }
  return spec as SandboxSpec;
}

export function toStoredExec(row: ExecRow): StoredExec {
  return corruptIfThrows(`exec ${row.id} of sandbox ${row.sandbox_id}`, () => ({
    id: row.id,
    sandboxId: row.sandbox_id,
    tenant: row.tenant,
    cmd: CmdSchema.parse(JSON.parse(row.cmd_json)),
    startedAt: row.started_at,
    endedAt: row.ended_at,
    exitCode: row.exit_code,
    lost: row.lost === 1,
    timedOut: row.timed_out === 1,
    oomKilled: row.oom_killed === 1,
    truncated: row.truncated === 1,
    durationMs: row.duration_ms,
    stdoutTail: row.stdout_tail,
    stderrTail: row.stderr_tail,
  }));
}

export function toAuditEntry(row: AuditRow): AuditEntry {
  return corruptIfThrows(`audit entry ${row.id}`, () => ({
    id: row.id,
    at: row.at,
    tenant: row.tenant,
    actor: row.actor,
    action: row.action,
    sandboxId: row.sandbox_id,
    detail: row.detail_json === null ? null : (JSON.parse(row.detail_json) as unknown),
  }));
}

function corruptIfThrows<T>(what: string, read: () => T): T {
  try {
    return read();
  } catch (err) {
    throw new InternalError(`the store's row for ${what} is corrupt`, {
      hint: 'inspect it with sqlite3 $AGENTBOX_HOME/agentbox.db (or psql "$AGENTBOX_DATABASE_URL")',
      cause: err,
    });
  }
}
