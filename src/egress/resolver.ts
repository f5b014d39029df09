/**
 * How the proxy turns a name into addresses: hosts(5) files first (AGENTBOX_EGRESS_HOSTS, then
 * /etc/hosts), then DNS through c-ares (node's dns.Resolver), never getaddrinfo. getaddrinfo runs
 * on libuv's thread pool (4 threads shared by the whole daemon, file I/O included): a sandbox
 * asking for names whose answers are slow would stall every sandbox's egress and the daemon's
 * disk. c-ares queries run on the event loop, with a timeout per try and a bounded number of
 * tries, and do not apply resolv.conf search domains (a short name is not quietly completed).
 * The proxy connects to exactly the address it checked, so a second lookup cannot rebind the name.
 *
 * AGENTBOX_EGRESS_DNS=HOST[:PORT],...: the DNS servers to ask instead of /etc/resolv.conf's.
 */
import { Resolver as AresResolver } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { canonicalIP, formatIP, parseIP } from './ip.js';
import { BadRequestError } from '../contract/errors.js';

export type Resolver = (host: string) => Promise<string[]>;

export class ResolveError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** Whole lookup, all tries of both families. */
const TIMEOUT_MS = 5000;
/** One try of one query; c-ares doubles it on each retry. */
const TRY_TIMEOUT_MS = 1500;
const TRIES = 2;

export function parseHostsFile(text: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const [address, ...names] = (raw.split('#')[0] ?? '').trim().split(/\s+/);
    const ip = address ? parseIP(address) : null;
    if (!ip || address?.includes('%')) continue;
    for (const n of names) {
      const key = n.toLowerCase().replace(/\.+$/, '');
      map.set(key, [...(map.get(key) ?? []), formatIP(canonicalIP(ip))]);
    }
  }
  return map;
}

function readHosts(path: string): Map<string, string[]> {
  try {
    return parseHostsFile(readFileSync(path, 'utf8'));
  } catch {
    return new Map();
  }
}

export interface ResolverOpts {
  /** Names answered before anything else (AGENTBOX_EGRESS_HOSTS, tests). */
  overrides?: Map<string, string[]>;
  /** The system hosts file, read once; null for none. @default /etc/hosts */
  hostsFile?: string | null;
  /** DNS servers (`1.2.3.4`, `127.0.0.1:5353`, `[::1]:53`); default /etc/resolv.conf's. */
  servers?: readonly string[];
}

export function systemResolver(opts: ResolverOpts = {}): Resolver {
  const hosts = opts.hostsFile === null ? new Map<string, string[]>() : readHosts(opts.hostsFile ?? '/etc/hosts');
  const ares = new AresResolver({ timeout: TRY_TIMEOUT_MS, tries: TRIES });
  if (opts.servers && opts.servers.length > 0) ares.setServers([...opts.servers]);
  return async (host: string) => {
    const name = host.toLowerCase().replace(/\.+$/, '');
    const literal = parseIP(name);
    if (literal) return [formatIP(canonicalIP(literal))];
    const fixed = opts.overrides?.get(name) ?? hosts.get(name);
    if (fixed) return fixed;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ResolveError('ETIMEOUT', `resolving ${name} took over ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    });
    try {
      const [v4, v6] = await Promise.race([Promise.allSettled([ares.resolve4(name), ares.resolve6(name)]), timeout]);
      const found = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
      if (found.length > 0) return found;
      const failure = [v4, v6].find((r): r is PromiseRejectedResult => r.status === 'rejected');
      const code = (failure?.reason as NodeJS.ErrnoException | undefined)?.code ?? 'ENOTFOUND';
      throw new ResolveError(code === 'ENODATA' ? 'ENOTFOUND' : code, `cannot resolve ${name} (${code})`);
    } catch (err) {
      if (err instanceof ResolveError) throw err;
      const code = (err as NodeJS.ErrnoException).code ?? 'EFAIL';
      throw new ResolveError(code, `cannot resolve ${name} (${code})`);
    } finally {
      clearTimeout(timer);
    }
  };
}

/** `AGENTBOX_EGRESS_DNS`: comma-separated servers; what is not a server address is a startup error. */
export function parseDnsServers(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+))(?::(\d{1,5}))?$|^([0-9a-fA-F:]+)$/.exec(raw);
    const addr = m?.[1] ?? m?.[2] ?? m?.[4];
    const port = m?.[3] !== undefined ? Number(m[3]) : 53;
    const ip = addr ? parseIP(addr) : null;
    if (!ip || port < 1 || port > 65535 || (ip.family === 4 && !/^\d+\.\d+\.\d+\.\d+$/.test(addr ?? ''))) {
      throw new BadRequestError(`AGENTBOX_EGRESS_DNS: "${raw}" is not a DNS server address`, { hint: 'use IP, IP:PORT or [IPv6]:PORT, comma-separated' });
    }
    out.push(ip.family === 6 ? `[${formatIP(ip)}]:${port}` : `${formatIP(ip)}:${port}`);
  }
  return out;
}

/** The resolver of a daemon: AGENTBOX_EGRESS_HOSTS in front, /etc/hosts, then DNS (AGENTBOX_EGRESS_DNS or resolv.conf). */
export function resolverFromEnv(env: NodeJS.ProcessEnv = process.env): Resolver {
  const file = env.AGENTBOX_EGRESS_HOSTS;
  const servers = env.AGENTBOX_EGRESS_DNS ? parseDnsServers(env.AGENTBOX_EGRESS_DNS) : undefined;
  return systemResolver({ ...(file ? { overrides: parseHostsFile(readFileSync(file, 'utf8')) } : {}), ...(servers ? { servers } : {}) });
}
