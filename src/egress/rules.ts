/**
 * The name-level decision of a sandbox's proxy, before anything is resolved: the global deny list
 * wins over everything, cloud-metadata names are never reachable by name, then the sandbox's mode
 * and allowlist (including hosts an operator approved while it runs) decide.
 * The address-level decision comes after resolving (addresses.ts).
 */
import { canonicalHost, canonicalTarget, hostMatches, patternAddress } from '../policy/hosts.js';
import { METADATA_NAMES } from './addresses.js';

export interface HostRules {
  mode: 'allowlist' | 'open';
  allow: readonly string[];
  globalDeny: readonly string[];
}

export interface Verdict {
  allowed: boolean;
  rule: string;
}

/** `host` as a hosts.ts pattern subject: IPv6 literals in brackets. */
export function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Built-in metadata names, canonical, so that no spelling of one (case, dots, IDNA) slips by. */
const METADATA_CANONICAL: ReadonlySet<string> = new Set(
  METADATA_NAMES.map((n) => {
    const c = canonicalHost(n);
    return typeof c === 'string' ? n : c.text;
  }),
);

/**
 * The name-level verdict on `host:port`. The host is canonicalised first (policy/hosts.ts); one
 * that does not canonicalise to a valid name or address is refused, never resolved as written.
 */
export function decideHost(rules: HostRules, host: string, port: number): Verdict {
  const target = canonicalTarget(host, port);
  if (typeof target === 'string') return { allowed: false, rule: 'invalid_host' };
  const { subject } = target;
  if (METADATA_CANONICAL.has(target.host)) return { allowed: false, rule: 'metadata_name' };
  const deny = rules.globalDeny.find((p) => hostMatches(p, subject));
  if (deny !== undefined) return { allowed: false, rule: `globalDeny:${deny}` };
  if (rules.mode === 'open') return { allowed: true, rule: 'mode:open' };
  const allow = rules.allow.find((p) => hostMatches(p, subject, { allow: true }));
  if (allow !== undefined) return { allowed: true, rule: `allow:${allow}` };
  return { allowed: false, rule: 'not_allowlisted' };
}

/**
 * The global deny list's word on a resolved address: an entry that names an IP literal denies
 * that address however the sandbox got to it (a name of its own that resolves there, as
 * `1-2-3-4.nip.io` does, or another spelling). Null when no entry names it.
 */
export function denyByAddress(rules: HostRules, address: string, port: number): Verdict | null {
  const target = canonicalTarget(address, port);
  if (typeof target === 'string') return { allowed: false, rule: 'invalid_address' };
  const deny = rules.globalDeny.find((p) => patternAddress(p) !== null && hostMatches(p, target.subject));
  return deny === undefined ? null : { allowed: false, rule: `globalDeny:${deny}` };
}

/** A sentence for the 403 a denied sandbox gets, so that the agent (or its operator) knows what to do. */
export function explainDenial(rule: string, o: { sandboxId: string; host: string; port: number; address: string | null; allow: readonly string[]; quotaMb: number }): string {
  const target = hostPort(o.host, o.port);
  const approve =
    `An operator can approve it for this sandbox, live: agentbox egress allow ${o.sandboxId} ${target} ` +
    `(or POST /v1/sandboxes/${o.sandboxId}/egress/allow {"host":"${target}"}).`;
  const why = ((): string => {
    if (rule === 'not_allowlisted') {
      return `${target} is not on this sandbox's egress allowlist (${o.allow.length ? o.allow.join(', ') : 'empty'}; an entry without a port covers ports 80 and 443 only). ${approve}`;
    }
    if (rule.startsWith('globalDeny:')) return `${target} is on the operator's global deny list (${rule.slice(11)}), which no allowlist or approval overrides.`;
    if (rule === 'metadata_name' || rule === 'metadata_address') {
      return `${target}${o.address ? ` (${o.address})` : ''} is a cloud metadata endpoint; sandboxes never reach those unless the operator opens that exact address in egress.allowRanges.`;
    }
    if (rule.startsWith('range:')) {
      return `${target} resolves to ${o.address}, a ${rule.slice(6)} address; such ranges are closed unless the operator lists them in egress.allowRanges.`;
    }
    if (rule === 'byte_quota') return `this sandbox has used its egress quota of ${o.quotaMb} MiB.`;
    if (rule.startsWith('dns:')) return `${o.host} could not be resolved (${rule.slice(4)}).`;
    if (rule === 'invalid_host') return `${JSON.stringify(o.host)} is not a valid host name or IP address; nothing was resolved.`;
    if (rule.startsWith('sni:')) return `the TLS ClientHello names ${rule.slice(4)}, which is not the tunnel's host and is not allowed itself (domain fronting).`;
    return `refused (${rule}).`;
  })();
  return `agentbox egress: access to ${target} denied (${rule}): ${why}`;
}
