/**
 * Which resolved addresses a sandbox may connect to. Everything that is not a public unicast
 * address is closed unless the operator opens a range (`egress.allowRanges`). Cloud-metadata
 * addresses are stricter still: only a range that names exactly that address opens one, so
 * opening 169.254.0.0/16 for a link-local service does not hand out the instance's credentials.
 *
 * Every address is parsed to a number first (ip.ts), whatever its spelling; IPv4-mapped IPv6 is
 * judged as the IPv4 address it is, and an IPv6 address that carries IPv4 addresses (NAT64, 6to4,
 * Teredo, IPv4-compatible, IPv4-translated) is open only when each of them is open too.
 */
import { canonicalIP, embeddedIPv4, formatIP, inCidr, parseCidr, parseIP, type IP } from './ip.js';

type Net = { ip: IP; prefix: number };
const net = (cidr: string): Net => {
  const n = parseCidr(cidr);
  if (!n) throw new Error(`bad built-in range ${cidr}`);
  return n;
};

/** Special-purpose ranges (IANA registries, RFC 6890 and successors) a sandbox never reaches by default. */
const CLOSED_RANGES: readonly (readonly [Net, string])[] = (
  [
    ['0.0.0.0/8', 'this-network'],
    ['10.0.0.0/8', 'private'],
    ['100.64.0.0/10', 'carrier-grade NAT'],
    ['127.0.0.0/8', 'loopback'],
    ['169.254.0.0/16', 'link-local'],
    ['172.16.0.0/12', 'private'],
    ['192.0.0.0/24', 'IETF protocol assignments'],
    ['192.88.99.0/24', '6to4 relay anycast'],
    ['192.168.0.0/16', 'private'],
    ['198.18.0.0/15', 'benchmarking'],
    ['224.0.0.0/4', 'multicast'],
    ['240.0.0.0/4', 'reserved'],
    ['::/128', 'unspecified'],
    ['::1/128', 'loopback'],
    ['64:ff9b:1::/48', 'local NAT64'],
    ['100::/64', 'discard'],
    ['2001::/23', 'IETF protocol assignments'],
    ['5f00::/16', 'segment routing'],
    ['fc00::/7', 'unique local (private)'],
    ['fe80::/10', 'link-local'],
    ['fec0::/10', 'site-local'],
    ['ff00::/8', 'multicast'],
  ] as const
).map(([cidr, why]) => [net(cidr), why] as const);

/** Instance-metadata endpoints of the common clouds (AWS incl. IPv6 and time sync, GCP incl. IPv6, Azure, OpenStack, Oracle, Alibaba, DigitalOcean). */
export const METADATA_ADDRESSES: readonly string[] = [
  '169.254.169.254', '169.254.170.2', '169.254.169.253', '169.254.169.123', '100.100.100.200', '192.0.0.192', 'fd00:ec2::254', 'fd00:ec2::23', 'fd00:ec2::123', 'fd20:ce::254',
];
export const METADATA_NAMES: readonly string[] = [
  'metadata.google.internal', 'metadata', 'metadata.goog', 'metadata.azure.internal', 'instance-data', 'instance-data.ec2.internal',
];

export interface AddressVerdict {
  allowed: boolean;
  /** The rule that decided, for the audit log and the 403: `range:private`, `allowRanges:10.77.0.0/16`, `public`. */
  rule: string;
}

/**
 * The one text of an address the OS connects to, whatever its spelling: `::ffff:7f00:1`,
 * `0:0:0:0:0:FFFF:127.0.0.1`, `0x7f.1` and `2130706433` are all `127.0.0.1`. Input that is not an
 * address comes back lower-cased, unchanged otherwise.
 */
export function normalizeAddress(address: string): string {
  const ip = parseIP(address);
  return ip ? formatIP(canonicalIP(ip)) : address.toLowerCase();
}

const same = (a: IP, b: IP): boolean => a.family === b.family && a.value === b.value;
const METADATA: readonly IP[] = METADATA_ADDRESSES.map((a) => canonicalIP(parseIP(a) as IP));

export class AddressRules {
  private readonly opened: { cidr: string; net: Net; exact: boolean }[];

  /** `allowRanges` are CIDRs (the policy schema checks them); one that is not opens nothing. */
  constructor(allowRanges: readonly string[]) {
    this.opened = allowRanges.flatMap((cidr) => {
      const n = parseCidr(cidr);
      return n ? [{ cidr, net: n, exact: n.prefix === (n.ip.family === 4 ? 32 : 128) }] : [];
    });
  }

  check(rawAddress: string): AddressVerdict {
    // A zone id (fe80::1%eth0) or brackets have no place here: not an address, refused.
    const parsed = parseIP(rawAddress);
    if (!parsed) return { allowed: false, rule: 'not_an_address' };
    const ip = canonicalIP(parsed);
    const own = this.checkOne(ip);
    if (!own.allowed || ip.family === 4) return own;
    for (const inner of embeddedIPv4(ip.value)) {
      const v = this.checkOne({ family: 4, value: inner.value });
      if (!v.allowed) return { allowed: false, rule: `${v.rule} (${inner.via})` };
    }
    return own;
  }

  private checkOne(ip: IP): AddressVerdict {
    if (METADATA.some((m) => same(m, ip))) {
      const opener = this.opened.find((o) => o.exact && same(o.net.ip, ip));
      return opener ? { allowed: true, rule: `allowRanges:${opener.cidr}` } : { allowed: false, rule: 'metadata_address' };
    }
    const closed = CLOSED_RANGES.find(([n]) => inCidr(ip, n));
    if (!closed) return { allowed: true, rule: 'public_address' };
    const opener = this.opened.find((o) => inCidr(ip, o.net));
    if (opener) return { allowed: true, rule: `allowRanges:${opener.cidr}` };
    return { allowed: false, rule: `range:${closed[1]}` };
  }
}
