/**
 * Access to a sandbox's port from a browser through the daemon's port proxy: tokens (random,
 * stored by sha256, expiring, revocable) and public ports. The proxy itself has no caller: it asks
 * `allowed()` with what the request carries, and acts as the sandbox's tenant when it is.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { PortGrant } from '../../store/port-access.js';
import type { Store } from '../../store/store.js';

export const DEFAULT_TOKEN_TTL_MS = 3600_000;

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function newPortToken(): string {
  return `abp_${randomBytes(32).toString('base64url')}`;
}

export function newGrantId(): string {
  return `pga_${randomBytes(8).toString('hex')}`;
}

const live = (g: PortGrant, now: number): boolean => g.expiresAt === null || Date.parse(g.expiresAt) > now;

/** Whether a request carrying TOKEN (or none) may reach PORT of sandbox ID. */
export function portAccessAllowed(store: Store, sandboxId: string, port: number, token: string | undefined): boolean {
  const now = Date.now();
  if (token) {
    const hash = sha256(token);
    const g = store.portAccess.byToken(hash);
    // The lookup is by hash; the comparison again in constant time, for the record.
    if (g && g.sandboxId === sandboxId && g.port === port && live(g, now) && g.tokenSha256 !== null && timingSafeEqual(Buffer.from(g.tokenSha256), Buffer.from(hash))) return true;
  }
  return store.portAccess.list(sandboxId, port).some((g) => g.public && live(g, now));
}
