/**
 * Per-sandbox envd access tokens. A token is derived, not stored: HMAC-SHA256 of the sandbox id, its
 * tenant and the scopes of the key that obtained it, under a key of the daemon's home (created on first use,
 * mode 0600). It therefore survives a daemon restart with its sandbox, is useless for any other
 * sandbox, and gives its holder no more than the key that was shown it (a read-only key's token
 * cannot run commands). Checked in constant time.
 *
 * The same key derives a sandbox's E2B traffic access token (`trafficToken`): what opens every port
 * of a sandbox created with `allowPublicTraffic: false` through the port proxy (src/e2b/traffic.ts).
 * Derived, not stored either, so create and every later connect return the same token, as E2B's do.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Scope } from '../core/manager.js';

const SCOPES: readonly Scope[] = ['read', 'exec', 'files', 'manage'];
const KEY_FILE = 'e2b-envd.key';

export class EnvdTokens {
  private constructor(private readonly key: Buffer) {}

  /** The key in `home`, made once (32 random bytes) by whichever daemon gets there first. */
  static forHome(home: string): EnvdTokens {
    const path = join(home, KEY_FILE);
    try {
      const fd = openSync(path, 'wx', 0o600);
      try {
        writeSync(fd, randomBytes(32).toString('hex'));
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const key = Buffer.from(readFileSync(path, 'utf8').trim(), 'hex');
    if (key.length < 32) throw new Error(`${path} holds no usable key: remove it and restart the daemon`);
    return new EnvdTokens(key);
  }

  /** For tests: a key of their own. */
  static withKey(key: Buffer): EnvdTokens {
    return new EnvdTokens(key);
  }

  /** The token for this sandbox of `tenant`, with these scopes (undefined: every scope). */
  issue(sandboxId: string, tenant: string, scopes: readonly Scope[] | undefined): string {
    const granted = scopes === undefined ? '*' : SCOPES.filter((s) => scopes.includes(s)).join('+');
    return `abx1.${tenant}.${granted}.${this.mac(sandboxId, tenant, granted)}`;
  }

  /** The tenant and scopes (undefined: all) a token grants on this sandbox, or null when it is not this sandbox's. */
  verify(sandboxId: string, token: string): { tenant: string; scopes: readonly Scope[] | undefined } | null {
    const m = /^abx1\.([a-z0-9._-]{1,64})\.(\*|[a-z+]{0,40})\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (!m) return null;
    const tenant = m[1] as string;
    const granted = m[2] as string;
    const expected = Buffer.from(this.mac(sandboxId, tenant, granted));
    const given = Buffer.from(m[3] as string);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) return null;
    if (granted === '*') return { tenant, scopes: undefined };
    return { tenant, scopes: granted === '' ? [] : (granted.split('+') as Scope[]).filter((s) => SCOPES.includes(s)) };
  }

  /** The traffic access token of this sandbox (E2B's `trafficAccessToken`). */
  trafficToken(sandboxId: string): string {
    return `abt1.${this.trafficMac(sandboxId)}`;
  }

  /** Whether `token` is this sandbox's traffic access token (constant time). */
  verifyTraffic(sandboxId: string, token: string): boolean {
    const m = /^abt1\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (!m) return false;
    const expected = Buffer.from(this.trafficMac(sandboxId));
    const given = Buffer.from(m[1] as string);
    return expected.length === given.length && timingSafeEqual(expected, given);
  }

  /** Domain-separated from envd tokens: no envd token is a traffic token, nor the reverse. */
  private trafficMac(sandboxId: string): string {
    return createHmac('sha256', this.key).update(`e2b-traffic\n${sandboxId}`).digest('base64url');
  }

  private mac(sandboxId: string, tenant: string, granted: string): string {
    return createHmac('sha256', this.key).update(`${sandboxId}\n${tenant}\n${granted}`).digest('base64url');
  }
}
