/**
 * E2B's `user` option. agentbox runs every command and file operation as the sandbox user (uid
 * 1000, `sandbox`) and never as root: E2B's default user (`user`) is that user; `root` is refused.
 */
import { BadRequestError, ForbiddenError } from '../contract/errors.js';

const SANDBOX_USER_NAMES = new Set(['', 'user', 'sandbox']);

export function checkSandboxUser(user: string | null | undefined): void {
  if (user === null || user === undefined || SANDBOX_USER_NAMES.has(user)) return;
  throw new ForbiddenError(`agentbox runs commands and file operations only as the sandbox user (uid 1000), not as ${JSON.stringify(user.slice(0, 64))}`, {
    hint: 'leave the user option out (or pass user: "user"); root is never granted inside an agentbox sandbox',
  });
}

/** The user an envd RPC names in `Authorization: Basic base64(user:)` (the SDK's way), or undefined. */
export function userFromBasicAuth(header: string | null): string | undefined {
  if (header === null) return undefined;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(header.trim());
  if (!m) throw new BadRequestError('malformed Authorization header', { hint: 'envd takes Authorization: Basic base64(user:)' });
  const decoded = Buffer.from(m[1] as string, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon === -1 ? decoded : decoded.slice(0, colon);
}
