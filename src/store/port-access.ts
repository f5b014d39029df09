/**
 * Who may reach a sandbox's port through the port proxy (ARCHITECTURE.md, "Terminals and ports"):
 * from a browser: access tokens, stored by their sha256 only, each with its expiry; and ports made public.
 * Rows go when their sandbox ends (`endSandbox`), or when revoked.
 */
import type { SqlDb } from './sql-db.js';

/** Migration 8 (migrations.ts). */
export const PORT_ACCESS_SQL = `
  CREATE TABLE port_access (
    id TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL,
    port INTEGER NOT NULL,
    token_sha256 TEXT,
    public INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    expires_at TEXT
  );
  CREATE INDEX port_access_sandbox ON port_access (sandbox_id, port);
  CREATE UNIQUE INDEX port_access_token ON port_access (token_sha256) WHERE token_sha256 IS NOT NULL;
`;

export interface PortGrant {
  id: string;
  sandboxId: string;
  port: number;
  /** null for a `public` grant. */
  tokenSha256: string | null;
  public: boolean;
  createdAt: string;
  /** null: until revoked or the sandbox ends. */
  expiresAt: string | null;
}

interface Row {
  id: string;
  sandbox_id: string;
  port: number;
  token_sha256: string | null;
  public: number;
  created_at: string;
  expires_at: string | null;
}

const toGrant = (r: Row): PortGrant => ({ id: r.id, sandboxId: r.sandbox_id, port: r.port, tokenSha256: r.token_sha256, public: r.public === 1, createdAt: r.created_at, expiresAt: r.expires_at });

export class PortAccessRows {
  constructor(private readonly db: SqlDb) {}

  insert(g: PortGrant): void {
    this.db
      .prepare('INSERT INTO port_access (id, sandbox_id, port, token_sha256, public, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(g.id, g.sandboxId, g.port, g.tokenSha256, g.public ? 1 : 0, g.createdAt, g.expiresAt);
  }

  /** The grants of a sandbox's port (all its ports when `port` is undefined), expired ones included. */
  list(sandboxId: string, port?: number): PortGrant[] {
    const rows = port === undefined
      ? (this.db.prepare('SELECT * FROM port_access WHERE sandbox_id = ? ORDER BY created_at').all(sandboxId) as Row[])
      : (this.db.prepare('SELECT * FROM port_access WHERE sandbox_id = ? AND port = ? ORDER BY created_at').all(sandboxId, port) as Row[]);
    return rows.map(toGrant);
  }

  byToken(tokenSha256: string): PortGrant | undefined {
    const r = this.db.prepare('SELECT * FROM port_access WHERE token_sha256 = ?').get(tokenSha256) as Row | undefined;
    return r ? toGrant(r) : undefined;
  }

  /** Revoke every grant of a port (`port` undefined: of every port); how many went. */
  revoke(sandboxId: string, port?: number): number {
    return port === undefined
      ? this.db.prepare('DELETE FROM port_access WHERE sandbox_id = ?').run(sandboxId).changes
      : this.db.prepare('DELETE FROM port_access WHERE sandbox_id = ? AND port = ?').run(sandboxId, port).changes;
  }

  /** Drop grants past their expiry. */
  prune(now: Date): number {
    return this.db.prepare('DELETE FROM port_access WHERE expires_at IS NOT NULL AND expires_at <= ?').run(now.toISOString()).changes;
  }
}
