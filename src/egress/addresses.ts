/**
 * Which resolved addresses a sandbox may connect to. Everything that is not a public unicast
 * address is closed unless the operator opens a range (`egress.allowRanges`). Cloud-metadata
 * addresses are stricter still: only a range that names exactly that address opens one, so
 * opening 169.254.0.0/16 for a link-local service does not hand out the instance's credentials.
 */
import { BlockList, isIP } from 'node:net';

/** Special-purpose ranges (IANA registries, RFC 6890 and successors) a sandbox never reaches by default. */
const CLOSED_RANGES: readonly (readonly [string, number, 'ipv4' | 'ipv6', string])[] = [
  ['0.0.0.0', 8, 'ipv4', 'this-network'],
  ['10.0.0.0', 8, 'ipv4', 'private'],
  ['100.64.0.0', 10, 'ipv4', 'carrier-grade NAT'],
  ['127.0.0.0', 8, 'ipv4', 'loopback'],
  ['169.254.0.0', 16, 'ipv4', 'link-local'],
  ['172.16.0.0', 12, 'ipv4', 'private'],
  ['192.0.0.0', 24, 'ipv4', 'IETF protocol assignments'],
  ['192.168.0.0', 16, 'ipv4', 'private'],
  ['198.18.0.0', 15, 'ipv4', 'benchmarking'],
  ['224.0.0.0', 4, 'ipv4', 'multicast'],
  ['240.0.0.0', 4, 'ipv4', 'reserved'],
  ['::', 128, 'ipv6', 'unspecified'],
  ['::1', 128, 'ipv6', 'loopback'],
  ['64:ff9b:1::', 48, 'ipv6', 'local NAT64'],
  ['100::', 64, 'ipv6', 'discard'],
  ['fc00::', 7, 'ipv6', 'unique local (private)'],
  ['fe80::', 10, 'ipv6', 'link-local'],
  ['fec0::', 10, 'ipv6', 'site-local'],
  ['ff00::', 8, 'ipv6', 'multicast'],
];

/** Instance-metadata endpoints of the common clouds (AWS, GCP, Azure, OpenStack, Oracle, Alibaba, DigitalOcean). */
export const METADATA_ADDRESSES: readonly string[] = ['169.254.169.254', '169.254.170.2', '169.254.169.253', '100.100.100.200', 'fd00:ec2::254', 'fd00:ec2::23'];
export const METADATA_NAMES: readonly string[] = [
  'metadata.google.internal', 'metadata', 'metadata.goog', 'metadata.azure.internal', 'instance-data', 'instance-data.ec2.internal',
];

export interface AddressVerdict {
  allowed: boolean;
  /** The rule that decided, for the audit log and the 403: `range:private`, `allowRanges:10.77.0.0/16`, `public`. */
  rule: string;
}

/** `::ffff:1.2.3.4` and friends are the IPv4 address they carry. */
export function normalizeAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? (m[1] as string) : address.toLowerCase();
}

function family(address: string): 'ipv4' | 'ipv6' {
  return isIP(address) === 4 ? 'ipv4' : 'ipv6';
}

export class AddressRules {
  private readonly opened: { cidr: string; list: BlockList; exact: string | null }[];

  constructor(allowRanges: readonly string[]) {
    this.opened = allowRanges.map((cidr) => {
      const [base, bitsText] = cidr.split('/') as [string, string];
      const net = normalizeAddress(base);
      const bits = Number(bitsText);
      const list = new BlockList();
      list.addSubnet(net, bits, family(net));
      const exact = bits === (family(net) === 'ipv4' ? 32 : 128) ? net : null;
      return { cidr, list, exact };
    });
  }

  check(rawAddress: string): AddressVerdict {
    const address = normalizeAddress(rawAddress);
    if (isIP(address) === 0) return { allowed: false, rule: 'not_an_address' };
    const fam = family(address);
    if (METADATA_ADDRESSES.includes(address)) {
      const opener = this.opened.find((o) => o.exact === address);
      return opener ? { allowed: true, rule: `allowRanges:${opener.cidr}` } : { allowed: false, rule: 'metadata_address' };
    }
    const closed = CLOSED_RANGES.find(([net, bits, f]) => f === fam && inRange(address, fam, net, bits));
    if (!closed) return { allowed: true, rule: 'public_address' };
    const opener = this.opened.find((o) => o.list.check(address, fam));
    if (opener) return { allowed: true, rule: `allowRanges:${opener.cidr}` };
    return { allowed: false, rule: `range:${closed[3]}` };
  }
}

const rangeLists = new Map<string, BlockList>();
function inRange(address: string, fam: 'ipv4' | 'ipv6', net: string, bits: number): boolean {
  const key = `${net}/${bits}`;
  let list = rangeLists.get(key);
  if (!list) {
    list = new BlockList();
    list.addSubnet(net, bits, fam);
    rangeLists.set(key, list);
  }
  return list.check(address, fam);
}
