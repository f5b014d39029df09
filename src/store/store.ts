/**
 * The store (synchronous): sandboxes, exec history (a ring per sandbox), audit, usage; on SQLite
 * (`Store.open(path)`, sqlite-db.ts) or PostgreSQL (`Store.connect(url)`, pg-db.ts), behind one seam
 * (sql-db.ts). Rows are validated with the model's schemas when read, so a corrupt row fails loudly
 * (InternalError naming it).
 */
import { InternalError } from '../contract/errors.js';
import type { Egress, EndReason, Sandbox, SandboxSpec, SandboxState } from '../contract/model.js';
import { EgressEvents } from './egress-events.js';
import { SnapshotRecords } from './snapshot-records.js';
import { migrate, schemaVersion } from './migrations.js';
import { PgDb, type PgConnectOpts } from './pg-db.js';
import { SqliteDb } from './sqlite-db.js';
import {
  sandboxToRow,
  toAuditEntry,
  toStoredExec,
  toStoredSandbox,
  type AuditEntry,
  type StoredExec,
  type StoredSandbox,
} from './rows.js';
import { prepareStatements, type Statements } from './statements.js';
import { VolumeRows } from './volumes.js';
import { PortAccessRows } from './port-access.js';
import { SandboxTokenRows } from './sandbox-tokens.js';
import { WebhookDeliveries } from './webhook-deliveries.js';
import { ReplicaRows } from './replicas.js';

export type { AuditEntry, StoredExec, StoredSandbox } from './rows.js';

export interface SandboxFilter {
  tenant?: string;
  /** Only these states (an empty list matches nothing). When given, includeEnded is ignored. */
  states?: SandboxState[];
  /** Every pair must match. */
  labels?: Record<string, string>;
  /** Include deleted sandboxes too. @default false (everything but state 'deleted') */
  includeEnded?: boolean;
}

export interface StoreOpts {
  /** Execs kept per sandbox; inserting one more drops the oldest. @default 100 */
  execsPerSandbox?: number;
}

/** Where the store lives: a SQLite file, or a PostgreSQL database (AGENTBOX_DATABASE_URL). */
export type StoreLocation = { path: string } | { databaseUrl: string };

export interface NewExec {
  id: string;
  sandboxId: string;
  tenant: string;
  cmd: string[];
  startedAt: string;
  /** The daemon replica running it (null: none named). */
  replica?: string | null;
}

export interface ExecOutcome {
  exitCode: number;
  timedOut: boolean;
  oomKilled: boolean;
  truncated: boolean;
  durationMs: number;
  endedAt: string;
  stdoutTail: Buffer;
  stderrTail: Buffer;
}

export interface SandboxEnd {
  state: SandboxState;
  reason: EndReason;
  endedBy: string | null;
  at: string;
}

export interface NewAuditEntry {
  tenant: string | null;
  actor: string | null;
  action: string;
  sandboxId: string | null;
  detail: unknown;
  /** @default now */
  at?: string;
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;

export class Store {
  private readonly db: SqliteDb | PgDb;
  private readonly stmts: Statements;
  private readonly execsPerSandbox: number;
  /** The egress proxies' connection log. */
  readonly egress: EgressEvents;
  readonly snapshots: SnapshotRecords;
  /** Named volumes and which sandbox mounts which. */
  readonly volumes: VolumeRows;
  /** Access to sandboxes' ports from browsers (the port proxy). */
  readonly portAccess: PortAccessRows;
  /** Short-lived API tokens scoped to one sandbox. */
  readonly sandboxTokens: SandboxTokenRows;
  /** Webhook deliveries: the log the tenant reads and the sender's queue. */
  readonly webhooks: WebhookDeliveries;
  /** Daemon replicas sharing this store, and their leases. */
  readonly replicas: ReplicaRows;

  private constructor(db: SqliteDb | PgDb, opts: StoreOpts) {
    const keep = opts.execsPerSandbox ?? 100;
    if (!Number.isInteger(keep) || keep < 1) throw new InternalError(`execsPerSandbox must be a positive integer, got ${keep}`);
    this.db = db;
    this.execsPerSandbox = keep;
    this.stmts = prepareStatements(db);
    this.egress = new EgressEvents(db);
    this.snapshots = new SnapshotRecords(db);
    this.volumes = new VolumeRows(db);
    this.portAccess = new PortAccessRows(db);
    this.sandboxTokens = new SandboxTokenRows(db);
    this.webhooks = new WebhookDeliveries(db);
    this.replicas = new ReplicaRows(db);
  }

  /**
   * Open a SQLite file (creating it, and its directory, owner-only if needed) and migrate.
   * `:memory:` works for throwaway stores.
   */
  static open(path: string, opts: StoreOpts = {}): Store {
    return Store.migrated(SqliteDb.open(path), opts);
  }

  /**
   * Connect to a PostgreSQL database (`postgres://` or `postgresql://` URL) and migrate. A bad URL is
   * a BadRequestError, an unreachable server or a refused login a RuntimeUnavailableError, each with a hint.
   */
  static connect(databaseUrl: string, opts: StoreOpts & PgConnectOpts = {}): Store {
    return Store.migrated(PgDb.connect(databaseUrl, opts), opts);
  }

  /** The daemon's store: PostgreSQL when a database URL is given, the SQLite file otherwise. */
  static openAt(where: StoreLocation, opts: StoreOpts = {}): Store {
    return 'databaseUrl' in where ? Store.connect(where.databaseUrl, opts) : Store.open(where.path, opts);
  }

  private static migrated(db: SqliteDb | PgDb, opts: StoreOpts): Store {
    try {
      migrate(db);
      return new Store(db, opts);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** Which engine holds the rows. */
  get dialect(): 'sqlite' | 'postgres' {
    return this.db.dialect;
  }

  close(): void {
    this.db.close();
  }

  /** The last migration applied (SQLite: PRAGMA user_version; PostgreSQL: the table schema_version). */
  get schemaVersion(): number {
    return schemaVersion(this.db);
  }

  // --- sandboxes ---

  /** REPLICA: the daemon replica creating it (null: none named). */
  insertSandbox(sb: Sandbox, spec: SandboxSpec, idleTimeoutMs: number | null, replica: string | null = null): void {
    this.stmts.insertSandbox.run(sandboxToRow(sb, spec, idleTimeoutMs, replica));
  }

  /**
   * Insert the row unless the tenant's active sandboxes (rows creating or running, every replica's)
   * would then pass QUOTA; false, inserting nothing, when they would. Counted and inserted in one
   * transaction under the tenant's lock, so replicas creating at once cannot pass a quota together.
   */
  insertSandboxWithin(sb: Sandbox, spec: SandboxSpec, idleTimeoutMs: number | null, replica: string | null, quota: { sandboxes?: number | undefined; memoryMb?: number | undefined }): boolean {
    return this.db.transaction(() => {
      this.stmts.lockTenant.run(`agentbox-quota:${sb.tenant}`);
      const used = this.countActive(sb.tenant);
      if (quota.sandboxes !== undefined && used.sandboxes + 1 > quota.sandboxes) return false;
      if (quota.memoryMb !== undefined && used.memoryMb + sb.limits.memoryMb > quota.memoryMb) return false;
      this.insertSandbox(sb, spec, idleTimeoutMs, replica);
      return true;
    });
  }

  getSandbox(id: string): StoredSandbox | undefined {
    const row = this.stmts.getSandbox.get(id);
    return row === undefined ? undefined : toStoredSandbox(row);
  }

  /** Oldest first. */
  listSandboxes(filter: SandboxFilter = {}): StoredSandbox[] {
    const rows = this.stmts.listSandboxes.all({
      tenant: filter.tenant ?? null,
      states: filter.states === undefined ? null : JSON.stringify(filter.states),
      labels: filter.labels === undefined ? null : JSON.stringify(filter.labels),
      includeEnded: filter.includeEnded === true ? 1 : 0,
    });
    return rows.map(toStoredSandbox);
  }

  /** Stores the driver's handle data (anything JSON can carry). */
  setRuntimeData(id: string, data: unknown): void {
    this.stmts.setRuntimeData.run(JSON.stringify(data ?? null), id);
  }

  /** A running sandbox's egress after an operator approved another host. */
  setEgress(id: string, egress: Egress): void {
    this.stmts.setEgress.run(JSON.stringify(egress), id);
  }

  setState(id: string, state: SandboxState): void {
    this.stmts.setState.run(state, id);
  }

  /** Records activity (for the idle timeout). */
  touch(id: string, atIso: string): void {
    this.stmts.touch.run(atIso, id);
  }

  /** A new end of life for the reaper (null: none). */
  setExpiresAt(id: string, atIso: string | null): void {
    this.stmts.setExpiresAt.run(atIso, id);
  }

  /**
   * Record the end of a sandbox. False when it changed nothing: the sandbox had already ended (a
   * stopped or failed one can still become deleted, keeping its first reason, time and actor).
   */
  markEnded(id: string, end: SandboxEnd): boolean {
    return this.stmts.markEnded.run({ id, state: end.state, reason: end.reason, endedBy: end.endedBy, at: end.at }).changes > 0;
  }

  /** Sandboxes of the tenant that hold resources (creating or running) and their memory limits summed. */
  countActive(tenant: string): { sandboxes: number; memoryMb: number } {
    const row = this.stmts.countActive.get(tenant);
    return { sandboxes: row?.n ?? 0, memoryMb: row?.mem ?? 0 };
  }

  /** How many sandboxes the store holds in each state (every tenant). */
  countByState(): Record<string, number> {
    return Object.fromEntries(this.stmts.countByState.all().map((r) => [r.state, r.n]));
  }

  /** Drops sandboxes that ended before the given time, with their execs; returns how many. Audit entries stay. */
  purgeEnded(olderThanIso: string): number {
    return this.db.transaction(() => {
      this.stmts.purgeExecs.run(olderThanIso);
      const purged = this.stmts.purgeSandboxes.run(olderThanIso).changes;
      this.volumes.forgetGoneSandboxes();
      return purged;
    });
  }

  // --- execs ---

  /** Records a started exec and drops the sandbox's oldest ones beyond execsPerSandbox, atomically. */
  insertExec(e: NewExec): void {
    this.db.transaction(() => {
      this.stmts.insertExec.run(e.id, e.sandboxId, e.tenant, JSON.stringify(e.cmd), e.startedAt, e.replica ?? null);
      this.stmts.trimExecs.run({ sandboxId: e.sandboxId, keep: this.execsPerSandbox });
    });
  }

  finishExec(id: string, r: ExecOutcome): void {
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

  /**
   * Execs whose row says they still run, at the start of a daemon: their daemon died meanwhile. Each is
   * marked lost, ended now; returns how many. With REPLICA, only that replica's, and those of no replica
   * unless `unnamed` is false: other replicas on the same database may be running theirs. Without, every
   * one (a home's only daemon).
   */
  loseUnfinishedExecs(at: string, replica: string | null = null, opts: { unnamed?: boolean } = {}): number {
    return this.stmts.loseUnfinishedExecs.run({ endedAt: at, replica, unnamed: opts.unnamed === false ? 0 : 1 }).changes;
  }

  getExec(sandboxId: string, execId: string): StoredExec | undefined {
    const row = this.stmts.getExec.get(sandboxId, execId);
    return row === undefined ? undefined : toStoredExec(row);
  }

  /** Newest first. */
  listExecs(sandboxId: string, limit = 100): StoredExec[] {
    return this.stmts.listExecs.all(sandboxId, limit).map(toStoredExec);
  }

  // --- audit ---

  audit(e: NewAuditEntry): void {
    const detail = e.detail === undefined || e.detail === null ? null : JSON.stringify(e.detail);
    this.stmts.audit.run(e.at ?? new Date().toISOString(), e.tenant, e.actor, e.action, e.sandboxId, detail);
  }

  /** Newest first. */
  listAudit(filter: { sandboxId?: string; limit?: number } = {}): AuditEntry[] {
    return this.stmts.listAudit.all({ sandboxId: filter.sandboxId ?? null, limit: filter.limit ?? 100 }).map(toAuditEntry);
  }

  // --- usage ---

  /** Adds exec time to the tenant's day ('YYYY-MM-DD', UTC by the caller's convention); rounded to whole ms. */
  addExecMs(tenant: string, day: string, ms: number): void {
    checkDay(day);
    if (!Number.isFinite(ms)) throw new InternalError(`exec time must be a finite number of ms, got ${ms}`);
    this.stmts.addExecMs.run(tenant, day, Math.max(0, Math.round(ms)));
  }

  execMsOn(tenant: string, day: string): number {
    checkDay(day);
    return this.stmts.execMsOn.get(tenant, day)?.exec_ms ?? 0;
  }
}

function checkDay(day: string): void {
  if (!DAY.test(day)) throw new InternalError(`usage day must be YYYY-MM-DD, got "${day}"`);
}
