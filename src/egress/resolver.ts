/**
 * How the proxy turns a name into addresses. The system resolver (so /etc/hosts counts), with an
 * optional hosts(5) file of overrides in front (AGENTBOX_EGRESS_HOSTS: split-horizon names, tests).
 * The proxy connects to exactly the address it checked, so a second lookup cannot rebind the name.
 */
import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';

export type Resolver = (host: string) => Promise<string[]>;

export class ResolveError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

const TIMEOUT_MS = 5000;

export function parseHostsFile(text: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const [address, ...names] = (raw.split('#')[0] ?? '').trim().split(/\s+/);
    if (!address || isIP(address) === 0) continue;
    for (const n of names) {
      const key = n.toLowerCase();
      map.set(key, [...(map.get(key) ?? []), address]);
    }
  }
  return map;
}

export function systemResolver(opts: { overrides?: Map<string, string[]> } = {}): Resolver {
  return async (host: string) => {
    const name = host.toLowerCase().replace(/\.$/, '');
    if (isIP(name) !== 0) return [name];
    const fixed = opts.overrides?.get(name);
    if (fixed) return fixed;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ResolveError('ETIMEOUT', `resolving ${name} took over ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    });
    try {
      const found = await Promise.race([lookup(name, { all: true, verbatim: true }), timeout]);
      if (found.length === 0) throw new ResolveError('ENOTFOUND', `${name} has no address`);
      return found.map((a) => a.address);
    } catch (err) {
      if (err instanceof ResolveError) throw err;
      const code = (err as NodeJS.ErrnoException).code ?? 'EFAIL';
      throw new ResolveError(code, `cannot resolve ${name} (${code})`);
    } finally {
      clearTimeout(timer);
    }
  };
}

/** The resolver of a daemon: the system's, with AGENTBOX_EGRESS_HOSTS in front when set. */
export function resolverFromEnv(env: NodeJS.ProcessEnv = process.env): Resolver {
  const file = env.AGENTBOX_EGRESS_HOSTS;
  return systemResolver(file ? { overrides: parseHostsFile(readFileSync(file, 'utf8')) } : {});
}
