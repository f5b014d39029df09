/**
 * Sandbox tokens (ARCHITECTURE.md, "Sandbox tokens"): minting, listing, revoking, and what a
 * presented token stands for. A token is `abx_sbt_` + 32 random bytes (base64url), kept as its
 * sha256 only; it names one sandbox, its tenant and scopes (never manage), and holds at most 1 h,
 * never past its sandbox's end.
 */
import { createHash, randomBytes } from 'node:crypto';
import { BadRequestError, ForbiddenError, NotFoundError } from '../../contract/errors.js';
import {
  CreateSandboxTokenRequestSchema,
  DEFAULT_SANDBOX_TOKEN_TTL,
  MAX_SANDBOX_TOKEN_TTL_MS,
  SANDBOX_TOKEN_PREFIX,
  SANDBOX_TOKEN_SCOPES,
  type CreateSandboxTokenRequest,
  type SandboxToken,
  type SandboxTokenScope,
} from '../../contract/tokens.js';
import { formatDuration, parseDuration } from '../../policy/duration.js';
import type { SandboxTokenRow } from '../../store/sandbox-tokens.js';
import type { Store, StoredSandbox } from '../../store/store.js';
import type { Caller } from './access.js';

export function sandboxTokenSha256(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

function toToken(r: SandboxTokenRow): SandboxToken {
  return { id: r.id, sandboxId: r.sandboxId, scopes: scopesOf(r), createdAt: r.createdAt, expiresAt: r.expiresAt, revokedAt: r.revokedAt };
}

/** The row's scopes, only ever those a sandbox token may hold (whatever the row says). */
function scopesOf(r: SandboxTokenRow): SandboxTokenScope[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(r.scopesJson);
  } catch {
    return [];
  }
  return Array.isArray(parsed) ? SANDBOX_TOKEN_SCOPES.filter((s) => parsed.includes(s)) : [];
}

/**
 * A new token for the sandbox `stored` (the caller has been checked for manage on it): no scope the
 * caller does not hold itself, ttl at most 1 h. Returns the row as the API shows it and the secret.
 */
export function mintSandboxToken(store: Store, stored: StoredSandbox, req: CreateSandboxTokenRequest, caller: Caller, now = new Date()): { token: string; record: SandboxToken } {
  const r = CreateSandboxTokenRequestSchema.parse(req);
  const ttl = r.ttl ?? DEFAULT_SANDBOX_TOKEN_TTL;
  const ttlMs = parseDuration(ttl);
  if (ttlMs > MAX_SANDBOX_TOKEN_TTL_MS) {
    throw new BadRequestError(`ttl ${JSON.stringify(ttl)} is longer than a sandbox token may hold (${formatDuration(MAX_SANDBOX_TOKEN_TTL_MS)})`, { hint: 'ask for at most 1h (default 15m) and mint a new token when it runs out' });
  }
  const missing = caller.scopes ? r.scopes.filter((s) => !caller.scopes?.includes(s)) : [];
  if (missing.length > 0) {
    throw new ForbiddenError(`this token may not give a sandbox token the scope ${missing.join(', ')}: it does not hold it`, { hint: `it has the scopes ${caller.scopes?.join(', ')}` });
  }
  const token = `${SANDBOX_TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
  const row: SandboxTokenRow = {
    id: `sbt_${randomBytes(8).toString('hex')}`,
    sandboxId: stored.sandbox.id,
    tenant: stored.sandbox.tenant,
    scopesJson: JSON.stringify(r.scopes),
    tokenSha256: sandboxTokenSha256(token),
    createdAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + ttlMs).toISOString(),
    revokedAt: null,
  };
  // Expired rows go here, on the next mint: their table stays as small as the live tokens.
  store.sandboxTokens.prune(now);
  store.sandboxTokens.insert(row);
  return { token, record: toToken(row) };
}

export function listSandboxTokens(store: Store, sandboxId: string): SandboxToken[] {
  return store.sandboxTokens.list(sandboxId).map(toToken);
}

export function revokeSandboxToken(store: Store, sandboxId: string, tokenId: string, now = new Date()): SandboxToken {
  if (!store.sandboxTokens.revoke(sandboxId, tokenId, now.toISOString())) {
    throw new NotFoundError(`no token ${tokenId.slice(0, 64)} of sandbox ${sandboxId}`, { hint: `agentbox token ls ${sandboxId} lists its tokens` });
  }
  const row = store.sandboxTokens.list(sandboxId).find((t) => t.id === tokenId);
  if (!row) throw new NotFoundError(`no token ${tokenId.slice(0, 64)} of sandbox ${sandboxId}`);
  return toToken(row);
}

/**
 * The caller a presented sandbox token stands for (by its sha256), or undefined when it is unknown,
 * revoked, expired, or its sandbox is gone or has ended (whatever rows survived).
 */
export function sandboxTokenCaller(store: Store, tokenSha256: string, now = Date.now()): Caller | undefined {
  const row = store.sandboxTokens.byHash(tokenSha256);
  if (!row || row.revokedAt !== null || !(Date.parse(row.expiresAt) > now)) return undefined;
  const sb = store.getSandbox(row.sandboxId)?.sandbox;
  if (!sb || sb.tenant !== row.tenant || (sb.state !== 'running' && sb.state !== 'creating')) return undefined;
  const scopes = scopesOf(row);
  if (scopes.length === 0) return undefined;
  return { tenant: row.tenant, actor: `sandbox-token:${row.id}`, scopes, sandboxId: row.sandboxId };
}
