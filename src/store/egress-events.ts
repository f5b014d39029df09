/**
 * The egress log: one row per connection attempt through a sandbox's proxy, written when the
 * attempt is decided and completed with its byte counts when the connection ends. Kept per
 * sandbox as a ring (the newest `keepPerSandbox`), like the exec history.
 */
import type { DeniedHost, EgressAttempt, EgressEvent } from '../contract/model.js';
import type { SqlDb, SqlStatement } from './sql-db.js';

export type NewEgressEvent = EgressAttempt & { sandboxId: string; tenant: string };

export interface EgressOutcome {
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
  error: string | null;
}

interface EgressRow {
  id: number;
  sandbox_id: string;
  tenant: string;
  at: string;
  kind: string;
  method: string | null;
  host: string;
  port: number;
  address: string | null;
  decision: string;
  rule: string;
  bytes_up: number;
  bytes_down: number;
  duration_ms: number | null;
  error: string | null;
}

export class EgressEvents {
  private readonly insert: SqlStatement<[NewEgressEvent & { at: string; error: string | null }], { id: number }>;
  private readonly finishStmt: SqlStatement<[EgressOutcome & { id: number }]>;
  private readonly trim: SqlStatement<[{ sandboxId: string; keep: number }]>;
  private readonly list: SqlStatement<[{ sandboxId: string; decision: string | null; limit: number }], EgressRow>;
  private readonly denied: SqlStatement<[string], { host: string; port: number; attempts: number; last_at: string; rule: string }>;
  private readonly bytes: SqlStatement<[string], { total: number | null }>;
  private inserts = 0;

  constructor(db: SqlDb, private readonly keepPerSandbox = 10_000) {
    this.insert = db.prepare(`
      INSERT INTO egress_events (sandbox_id, tenant, at, kind, method, host, port, address, decision, rule, error)
      VALUES (@sandboxId, @tenant, @at, @kind, @method, @host, @port, @address, @decision, @rule, @error)
      RETURNING id`);
    this.finishStmt = db.prepare(
      'UPDATE egress_events SET bytes_up = @bytesUp, bytes_down = @bytesDown, duration_ms = @durationMs, error = @error WHERE id = @id',
    );
    this.trim = db.prepare(`
      DELETE FROM egress_events WHERE sandbox_id = @sandboxId AND id <= (
        SELECT id FROM egress_events WHERE sandbox_id = @sandboxId ORDER BY id DESC LIMIT 1 OFFSET @keep)`);
    this.list = db.prepare(`
      SELECT * FROM egress_events WHERE sandbox_id = @sandboxId AND (CAST(@decision AS TEXT) IS NULL OR decision = @decision)
      ORDER BY id DESC LIMIT @limit`);
    // The rule of each host's latest denial: SQLite takes bare columns from the row that holds max(id);
    // PostgreSQL has no bare columns, so it takes each host's newest row by a window.
    this.denied = db.prepare({
      sqlite: `
        SELECT host, port, count(*) AS attempts, max(id) AS last_id, at AS last_at, rule FROM egress_events
        WHERE sandbox_id = ? AND decision = 'denied' GROUP BY host, port ORDER BY last_id DESC`,
      postgres: `
        SELECT host, port, attempts, last_id, last_at, rule FROM (
          SELECT host, port, count(*) OVER byHost AS attempts, id AS last_id, at AS last_at, rule,
            row_number() OVER (byHost ORDER BY id DESC) AS newest
          FROM egress_events WHERE sandbox_id = ? AND decision = 'denied'
          WINDOW byHost AS (PARTITION BY host, port)) AS d
        WHERE newest = 1 ORDER BY last_id DESC`,
    });
    this.bytes = db.prepare('SELECT sum(bytes_up + bytes_down) AS total FROM egress_events WHERE sandbox_id = ?');
  }

  /** Records a decided attempt; returns its id for `finish`. */
  record(e: NewEgressEvent): number {
    const id = Number(this.insert.get({ ...e, at: new Date().toISOString(), error: e.error ?? null })?.id);
    // Trimming on every insert would double the writes of a busy sandbox; every 100th keeps the ring bounded.
    if (++this.inserts % 100 === 0) this.trim.run({ sandboxId: e.sandboxId, keep: this.keepPerSandbox });
    return id;
  }

  finish(id: number, outcome: EgressOutcome): void {
    this.finishStmt.run({ id, ...outcome });
  }

  /** Newest first. */
  forSandbox(sandboxId: string, opts: { decision?: EgressEvent['decision']; limit?: number } = {}): EgressEvent[] {
    return this.list.all({ sandboxId, decision: opts.decision ?? null, limit: opts.limit ?? 200 }).map(toEvent);
  }

  /** Hosts the sandbox was refused, newest first, with how often and by which rule. */
  deniedHosts(sandboxId: string): DeniedHost[] {
    return this.denied.all(sandboxId).map((r) => ({ host: r.host, port: r.port, attempts: r.attempts, lastAt: r.last_at, rule: r.rule }));
  }

  /** Bytes the sandbox has moved through its proxy so far (for the quota after a daemon restart). */
  bytesUsed(sandboxId: string): number {
    return this.bytes.get(sandboxId)?.total ?? 0;
  }
}

function toEvent(r: EgressRow): EgressEvent {
  return {
    id: r.id,
    sandboxId: r.sandbox_id,
    tenant: r.tenant,
    at: r.at,
    kind: r.kind === 'http' ? 'http' : 'connect',
    method: r.method,
    host: r.host,
    port: r.port,
    address: r.address,
    decision: r.decision === 'allowed' ? 'allowed' : 'denied',
    rule: r.rule,
    bytesUp: r.bytes_up,
    bytesDown: r.bytes_down,
    durationMs: r.duration_ms,
    error: r.error,
  };
}
