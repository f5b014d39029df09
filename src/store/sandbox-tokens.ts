/**
 * Sandbox tokens (ARCHITECTURE.md, "Sandbox tokens"): short-lived API tokens scoped to one sandbox,
 * stored by their sha256 only, each with its expiry; revoked one by one (`revoked_at`), and all
 * dropped when their sandbox ends (`endSandbox`). SQL that SQLite and PostgreSQL both run.
 */
import type { SqlDb } from './sql-db.js';

/** Migration 11 (migrations.ts). */
export const SANDBOX_TOKENS_SQL = tokensSql('');
/** The same on PostgreSQL: times compared and ordered as text go by bytes, as in SQLite. */
export const SANDBOX_TOKENS_PG_SQL = tokensSql(' COLLATE "C"');

function tokensSql(bytes: string): string {
  return `
  CREATE TABLE sandbox_tokens (
    id TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    scopes_json TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    created_at TEXT${bytes} NOT NULL,
    expires_at TEXT${bytes} NOT NULL,
    revoked_at TEXT
  );
  CREATE UNIQUE INDEX sandbox_tokens_hash ON sandbox_tokens (token_sha256);
  CREATE INDEX sandbox_tokens_sandbox ON sandbox_tokens (sandbox_id);
`;
}

export interface SandboxTokenRow {
  id: string;
  sandboxId: string;
  tenant: string;
  /** JSON text, as stored: the caller of this module parses and validates it. */
  scopesJson: string;
  tokenSha256: string;
  createdAt: string;
  expiresAt: string;
  revokedAt: string | null;
}

interface Row {
  id: string;
  sandbox_id: string;
  tenant: string;
  scopes_json: string;
  token_sha256: string;
  created_at: string;
  expires_at: string;
  revoked_at: string | null;
}

const toToken = (r: Row): SandboxTokenRow => ({
  id: r.id,
  sandboxId: r.sandbox_id,
  tenant: r.tenant,
  scopesJson: r.scopes_json,
  tokenSha256: r.token_sha256,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
  revokedAt: r.revoked_at,
});

export class SandboxTokenRows {
  constructor(private readonly db: SqlDb) {}

  insert(t: SandboxTokenRow): void {
    this.db
      .prepare('INSERT INTO sandbox_tokens (id, sandbox_id, tenant, scopes_json, token_sha256, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(t.id, t.sandboxId, t.tenant, t.scopesJson, t.tokenSha256, t.createdAt, t.expiresAt, t.revokedAt);
  }

  /** A sandbox's tokens, oldest first, revoked and expired ones included. */
  list(sandboxId: string): SandboxTokenRow[] {
    return (this.db.prepare('SELECT * FROM sandbox_tokens WHERE sandbox_id = ? ORDER BY created_at, id').all(sandboxId) as Row[]).map(toToken);
  }

  byHash(tokenSha256: string): SandboxTokenRow | undefined {
    const r = this.db.prepare('SELECT * FROM sandbox_tokens WHERE token_sha256 = ?').get(tokenSha256) as Row | undefined;
    return r ? toToken(r) : undefined;
  }

  /** Mark one token of the sandbox revoked (a second revoke keeps the first time); whether it exists. */
  revoke(sandboxId: string, id: string, at: string): boolean {
    this.db.prepare('UPDATE sandbox_tokens SET revoked_at = ? WHERE sandbox_id = ? AND id = ? AND revoked_at IS NULL').run(at, sandboxId, id);
    return this.db.prepare('SELECT 1 FROM sandbox_tokens WHERE sandbox_id = ? AND id = ?').get(sandboxId, id) !== undefined;
  }

  /** Drop every token of a sandbox (it ended); how many went. */
  dropSandbox(sandboxId: string): number {
    return this.db.prepare('DELETE FROM sandbox_tokens WHERE sandbox_id = ?').run(sandboxId).changes;
  }

  /** Drop tokens past their expiry; how many went. */
  prune(now: Date): number {
    return this.db.prepare('DELETE FROM sandbox_tokens WHERE expires_at <= ?').run(now.toISOString()).changes;
  }
}
