/**
 * Bearer tokens -> tenant. Tokens come from the policy's tenants (plain `tokens` for tests, or
 * `tokenSha256`), or AGENTBOX_TOKEN for a single tenant. Compared as SHA-256 digests in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { UnauthorizedError } from '../core/errors.js';
import type { Caller, Scope } from '../core/manager.js';
import type { Policy } from '../policy/schema.js';

export const DEFAULT_TENANT = 'default';

interface TokenEntry {
  digest: Buffer;
  tenant: string;
  scopes?: readonly Scope[];
  labels?: Record<string, string>;
}

export class Authenticator {
  private readonly entries: TokenEntry[];

  constructor(policy: Policy, envToken: string | undefined) {
    this.entries = [];
    for (const t of policy.tenants ?? []) {
      for (const tok of t.tokens ?? []) this.entries.push({ digest: sha256(tok), tenant: t.name });
      for (const hex of t.tokenSha256 ?? []) this.entries.push({ digest: Buffer.from(hex, 'hex'), tenant: t.name });
      for (const st of t.scopedTokens ?? []) {
        const digest = st.token !== undefined ? sha256(st.token) : Buffer.from(st.sha256 ?? '', 'hex');
        this.entries.push({ digest, tenant: t.name, scopes: st.scopes, ...(st.labels ? { labels: st.labels } : {}) });
      }
    }
    if (envToken) this.entries.push({ digest: sha256(envToken), tenant: DEFAULT_TENANT });
  }

  /** Whether any token is configured at all (a non-loopback bind requires one). */
  get required(): boolean {
    return this.entries.length > 0;
  }

  /**
   * The caller of a request. Over the owner-only Unix socket a request without a token is the
   * local operator (tenant `default`); over TCP a token is needed as soon as any is configured.
   */
  authenticate(req: IncomingMessage, viaSocket: boolean): Caller {
    const header = req.headers.authorization;
    if (!header) {
      if (viaSocket || !this.required) return { tenant: DEFAULT_TENANT, actor: viaSocket ? 'local' : 'anonymous' };
      throw new UnauthorizedError('missing bearer token', { hint: 'send Authorization: Bearer <token> (set AGENTBOX_TOKEN for the CLI)' });
    }
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) throw new UnauthorizedError('malformed Authorization header', { hint: 'use Authorization: Bearer <token>' });
    const digest = sha256(m[1] as string);
    let found: TokenEntry | undefined;
    // Check every entry so timing does not tell which one matched.
    for (const e of this.entries) {
      if (e.digest.length === digest.length && timingSafeEqual(e.digest, digest)) found ??= e;
    }
    if (!found) throw new UnauthorizedError('invalid token', { hint: 'check AGENTBOX_TOKEN against the policy tenants' });
    return {
      tenant: found.tenant,
      actor: found.scopes ? `token:${found.tenant}:${found.scopes.join('+')}` : `token:${found.tenant}`,
      ...(found.scopes ? { scopes: found.scopes } : {}),
      ...(found.labels ? { labels: found.labels } : {}),
    };
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
