/**
 * Egress of a new sandbox. The profile's egress (or defaults.egress) is the ceiling: modes go
 * none < allowlist < open and a request may not go higher, nor name hosts the ceiling does not
 * cover. egress.globalDeny always wins: denied hosts leave a profile's list, and a request that
 * names one explicitly is refused.
 */
import { BadRequestError, PolicyDeniedError } from '../contract/errors.js';
import type { Egress } from '../contract/model.js';
import type { CreateSandboxRequest } from '../contract/requests.js';
import { AddressRules } from '../egress/addresses.js';
import { hostPatternProblem, patternAddress, patternCovers, patternHost } from './hosts.js';
import { presetHosts } from './presets.js';
import type { Policy, ProfileEgress } from './schema.js';
import { says } from './wording.js';

type EgressMode = Egress['mode'];
const MODE_RANK: Readonly<Record<EgressMode, number>> = { none: 0, allowlist: 1, open: 2 };

interface Ceiling {
  maxMode: EgressMode;
  /** Hosts a request may name; null = any host (the deny list and the proxy's range rules still apply). */
  hosts: string[] | null;
  /** What a request that says nothing about egress gets. */
  base: Egress;
}

/** Without profile or defaults.egress: no network unless asked, and then an allowlist at most. */
const IMPLICIT: Ceiling = { maxMode: 'allowlist', hosts: null, base: { mode: 'none', allow: [] } };

function ceilingOf(policy: Policy, e: ProfileEgress | undefined): Ceiling {
  if (e === undefined) return IMPLICIT;
  const hosts = unique([...(e.allow ?? []), ...(e.presets ?? []).flatMap((p) => presetHosts(policy.egress.presets, p) ?? [])]);
  return {
    maxMode: e.mode,
    hosts: e.mode === 'open' ? null : hosts,
    base: { mode: e.mode, allow: e.mode === 'none' ? [] : hosts },
  };
}

export function resolveEgress(policy: Policy, profileEgress: ProfileEgress | undefined, req: CreateSandboxRequest['egress'], who: string): Egress {
  const ceiling = ceilingOf(policy, profileEgress);
  const deny = policy.egress.globalDeny;
  const denied = (host: string) => deny.some((d) => patternCovers(d, host));
  if (req === undefined) return { mode: ceiling.base.mode, allow: ceiling.base.allow.filter((h) => !denied(h)) };

  const mode: EgressMode = req.mode ?? (req.allow !== undefined ? 'allowlist' : ceiling.base.mode);
  if (MODE_RANK[mode] > MODE_RANK[ceiling.maxMode]) {
    throw new PolicyDeniedError(`egress mode ${mode} is more than ${says(who, 'allow')} (${ceiling.maxMode})`, {
      hint: `${says(who, 'allow')} egress up to ${ceiling.maxMode}; ask for less or use a profile that allows ${mode}`,
    });
  }
  if (mode === 'none') {
    if ((req.allow?.length ?? 0) > 0) throw new BadRequestError('egress mode none takes no allow list', { hint: 'ask for egress allowlist with those hosts, or drop them' });
    return { mode, allow: [] };
  }
  if (req.allow === undefined) return { mode, allow: ceiling.base.allow.filter((h) => !denied(h)) };

  for (const host of req.allow) {
    const problem = hostPatternProblem(host);
    if (problem !== null) throw new BadRequestError(`egress allow: ${problem}`, { hint: 'allow HOST (ports 80 and 443), HOST:PORT or *.DOMAIN' });
    if (denied(host)) {
      throw new PolicyDeniedError(`egress to ${host} is on the policy's global deny list`, {
        hint: 'egress.globalDeny always wins over an allow list; ask the operator if this host must be reachable',
      });
    }
    const closed = closedAddressProblem(host, policy.egress.allowRanges);
    if (closed !== null) throw new PolicyDeniedError(`egress allow: ${closed}`, { hint: CLOSED_HINT });
    if (ceiling.hosts !== null && !ceiling.hosts.some((h) => patternCovers(h, host, { allow: true }))) {
      throw new PolicyDeniedError(`egress to ${host} is not allowed by ${who}`, {
        hint: `${says(who, 'allow')} egress to ${ceiling.hosts.join(', ') || 'no host'}; ask for those only or use another profile`,
      });
    }
  }
  return { mode, allow: unique(req.allow) };
}

/** Names that mean this host's loopback wherever the proxy runs (RFC 6761 .localhost, Debian's hosts file). */
const LOOPBACK_NAMES: ReadonlySet<string> = new Set(['localhost', 'localhost.localdomain', 'ip6-localhost', 'ip6-loopback']);

const CLOSED_HINT = 'name a public host; an operator can open a private or loopback range in the policy (egress.allowRanges), a cloud-metadata address only by its exact /32';

/**
 * What is wrong with an allow entry that names an IP literal (any spelling) the proxy would
 * refuse anyway (loopback, private, metadata, ...), or null. Refused when the list is made, so
 * nobody believes a closed address is reachable, and no spelling of one sits in an allowlist.
 */
export function closedAddressProblem(pattern: string, allowRanges: readonly string[]): string | null {
  const rules = new AddressRules(allowRanges);
  const address = patternAddress(pattern);
  if (address !== null) {
    const v = rules.check(address);
    return v.allowed ? null : `"${pattern}" names ${address}, a closed address (${v.rule}): sandboxes never reach it unless egress.allowRanges opens it`;
  }
  const named = patternHost(pattern);
  if (named === null) return null;
  const loopbackName = LOOPBACK_NAMES.has(named.host) || named.host.endsWith('.localhost');
  if (loopbackName && !rules.check('127.0.0.1').allowed && !rules.check('::1').allowed) {
    return `"${pattern}" names this host's loopback, a closed address: sandboxes never reach it unless egress.allowRanges opens it`;
  }
  return null;
}

function unique(list: string[]): string[] {
  return [...new Set(list)];
}
