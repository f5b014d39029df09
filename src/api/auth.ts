/**
 * Bearer tokens -> tenant. Tokens come from the policy's tenants (plain `tokens` for tests, or
 * `tokenSha256`), or AGENTBOX_TOKEN for a single tenant. Compared as SHA-256 digests in constant time.
 * Sandbox tokens (`abx_sbt_...`, ARCHITECTURE.md "Sandbox tokens") are looked up by their SHA-256
 * through the function the composition root gives, so this file knows nothing of the store.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Caller, Scope } from '../core/manager.js';
import { BadRequestError, UnauthorizedError } from '../contract/errors.js';
import { MIN_TOKEN_LENGTH, OPERATOR_TENANT, type Policy } from '../policy/schema.js';
import { SANDBOX_TOKEN_PREFIX } from '../contract/tokens.js';

export const DEFAULT_TENANT = OPERATOR_TENANT;

/**
 * Which listener a server serves, fixed when the server is created. Trust comes from this alone:
 * only the owner-only Unix socket makes a tokenless request the local operator. Nothing read off a
 * connection (its peer address can become unreadable when the client resets it) decides trust.
 */
export type Listener = 'unix' | 'tcp';

interface TokenEntry {
  digest: Buffer;
  tenant: string;
  scopes?: readonly Scope[];
  labels?: Record<string, string>;
}

/** The caller a live sandbox token stands for, by the token's SHA-256 (hex); undefined when unknown, revoked, expired or its sandbox ended. */
export type SandboxTokenLookup = (tokenSha256: string) => Caller | undefined;

export class Authenticator {
  private readonly entries: TokenEntry[];

  constructor(policy: Policy, envToken: string | undefined, private readonly sandboxTokens?: SandboxTokenLookup) {
    this.entries = [];
    for (const t of policy.tenants ?? []) {
      for (const tok of t.tokens ?? []) this.entries.push({ digest: sha256(tok), tenant: t.name });
      for (const hex of t.tokenSha256 ?? []) this.entries.push({ digest: Buffer.from(hex, 'hex'), tenant: t.name });
      for (const st of t.scopedTokens ?? []) {
        const digest = st.token !== undefined ? sha256(st.token) : Buffer.from(st.sha256 ?? '', 'hex');
        this.entries.push({ digest, tenant: t.name, scopes: st.scopes, ...(st.labels ? { labels: st.labels } : {}) });
      }
    }
    if (envToken !== undefined && envToken !== '') {
      if (envToken.length < MIN_TOKEN_LENGTH || !/^[\x21-\x7e]+$/.test(envToken)) {
        throw new BadRequestError(`AGENTBOX_TOKEN is too weak: at least ${MIN_TOKEN_LENGTH} printable characters without spaces, it has ${envToken.length}`, {
          hint: 'set AGENTBOX_TOKEN=$(openssl rand -hex 24), or unset it and use the owner-only Unix socket',
        });
      }
      if (envToken.startsWith(SANDBOX_TOKEN_PREFIX)) {
        throw new BadRequestError(`AGENTBOX_TOKEN may not start with ${SANDBOX_TOKEN_PREFIX}: that prefix names sandbox tokens`, { hint: 'set AGENTBOX_TOKEN=$(openssl rand -hex 24)' });
      }
      this.entries.push({ digest: sha256(envToken), tenant: DEFAULT_TENANT });
    }
  }

  /** Whether any token is configured at all (a non-loopback bind requires one). */
  get required(): boolean {
    return this.entries.length > 0;
  }

  /**
   * The caller of a request that came in on `listener`. On the owner-only Unix socket a request
   * without a token is the local operator (tenant `default`); on TCP a token is needed on every
   * request as soon as any is configured, whatever happens to the connection.
   */
  authenticate(req: IncomingMessage, listener: Listener): Caller {
    const header = req.headers.authorization;
    const offered = browserSocketToken(req);
    if (offered !== undefined) {
      if (header) throw new UnauthorizedError('two credentials: an Authorization header and a bearer WebSocket subprotocol', { hint: 'send one of them' });
      return this.authenticateToken(offered);
    }
    if (!header) {
      if (listener === 'unix') return { tenant: DEFAULT_TENANT, actor: 'local' };
      if (!this.required) return { tenant: DEFAULT_TENANT, actor: 'anonymous' };
      throw new UnauthorizedError('missing bearer token', { hint: 'send Authorization: Bearer <token> (set AGENTBOX_TOKEN for the CLI)' });
    }
    const token = bearerToken(header);
    if (token === undefined) throw new UnauthorizedError('malformed Authorization header', { hint: 'use Authorization: Bearer <token>' });
    return this.authenticateToken(token);
  }

  /** The caller a token stands for, checked exactly as a bearer token is (another surface's header, e.g. E2B's X-API-KEY). */
  authenticateToken(token: string): Caller {
    const digest = sha256(token);
    if (token.startsWith(SANDBOX_TOKEN_PREFIX)) {
      const caller = this.sandboxTokens?.(digest.toString('hex'));
      // Never anything wider than one sandbox and no manage, whatever the lookup returned.
      if (!caller || caller.sandboxId === undefined || !caller.scopes || caller.scopes.includes('manage')) {
        throw new UnauthorizedError('invalid token', { hint: 'a sandbox token holds until it expires, is revoked, or its sandbox ends: mint a new one' });
      }
      return caller;
    }
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

/**
 * SHA-256 of the bearer token a request carries (of the empty string when it has none): what an
 * MCP session is bound to. Only meaningful after authenticate() accepted the request.
 */
export function credentialDigest(req: IncomingMessage): Buffer {
  return sha256(bearerToken(req.headers.authorization ?? '') ?? '');
}

/** What a page's WebSocket offers as its protocol; the daemon answers with it, never with the bearer one. */
export const BROWSER_SOCKET_PROTOCOL = 'agentbox.v1';
export const BEARER_PROTOCOL_PREFIX = 'agentbox.bearer.';

/**
 * A browser cannot set headers on a WebSocket, so a page (the dashboard) offers its token as a
 * subprotocol: `Sec-WebSocket-Protocol: agentbox.v1, agentbox.bearer.<base64url(token)>` (the shape
 * Kubernetes uses). Only on an upgrade; undefined when none is offered. A malformed one is refused.
 */
export function browserSocketToken(req: IncomingMessage): string | undefined {
  const header = req.headers['sec-websocket-protocol'];
  if (header === undefined || String(req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return undefined;
  const bearer = header.split(',').map((p) => p.trim()).filter((p) => p.startsWith(BEARER_PROTOCOL_PREFIX));
  if (bearer.length === 0) return undefined;
  const encoded = bearer[0]!.slice(BEARER_PROTOCOL_PREFIX.length);
  if (bearer.length > 1 || !/^[A-Za-z0-9_-]+$/.test(encoded)) {
    throw new UnauthorizedError('malformed bearer WebSocket subprotocol', { hint: `offer one ${BEARER_PROTOCOL_PREFIX}<base64url of the token>` });
  }
  return Buffer.from(encoded, 'base64url').toString('utf8');
}

/**
 * The subprotocol a WebSocket server answers with (ws's handleProtocols): agentbox.v1 when the page
 * offered it; never the bearer one, which would echo the token back.
 */
export function chooseSocketProtocol(offered: Set<string>): string | false {
  return offered.has(BROWSER_SOCKET_PROTOCOL) ? BROWSER_SOCKET_PROTOCOL : false;
}

/** The token of an `Authorization: Bearer <token>` header, or undefined when it is not one. */
export function bearerToken(header: string): string | undefined {
  return /^Bearer\s+(\S+)$/i.exec(header)?.[1];
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
