/**
 * One strict parser for IP addresses, to numbers, and one way to write them back. Every egress
 * decision about an address goes through here, so that no spelling (hex-mapped IPv6, `0x7f.1`,
 * `2130706433`, zero compression, upper case) is judged differently from the address it reaches.
 */

export type IP = { family: 4; value: number } | { family: 6; value: bigint };

/**
 * An IPv4 address in any spelling inet_aton(3) (and so getaddrinfo) or the WHATWG URL parser
 * accepts: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x), the last part filling the
 * remaining bytes, one trailing dot allowed. `127.1`, `0x7f.1`, `017700000001`, `2130706433`.
 */
export function parseIPv4Loose(input: string): number | null {
  const s = input.endsWith('.') ? input.slice(0, -1) : input;
  const parts = s.split('.');
  if (parts.length < 1 || parts.length > 4) return null;
  const nums: number[] = [];
  for (const p of parts) {
    let n: number;
    if (/^0[xX][0-9a-fA-F]*$/.test(p)) n = p.length === 2 ? 0 : parseInt(p.slice(2), 16);
    else if (/^0[0-7]*$/.test(p)) n = parseInt(p, 8);
    else if (/^[1-9][0-9]*$/.test(p)) n = Number(p);
    else return null;
    if (!Number.isSafeInteger(n)) return null;
    nums.push(n);
  }
  const last = nums.pop() as number;
  if (nums.some((n) => n > 255)) return null;
  if (last >= 256 ** (4 - nums.length)) return null;
  let value = 0;
  nums.forEach((n, i) => (value += n * 256 ** (3 - i)));
  return value + last;
}

/** Strict dotted-quad decimal (what may end an IPv6 address): no leading zeros, exactly 4 parts. */
function parseDottedQuad(s: string): number | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let value = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return null;
    value = value * 256 + Number(p);
  }
  return value;
}

/** An IPv6 address (no brackets, no zone id: a `%` is refused), any case and zero compression. */
export function parseIPv6(s: string): bigint | null {
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return null;
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groupsOf = (part: string): number[] | null => {
    if (part === '') return [];
    const out: number[] = [];
    const pieces = part.split(':');
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i] as string;
      if (i === pieces.length - 1 && p.includes('.')) {
        const v4 = parseDottedQuad(p);
        if (v4 === null) return null;
        out.push(Math.floor(v4 / 65536), v4 % 65536);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groupsOf(halves[0] as string);
  const tail = halves.length === 2 ? groupsOf(halves[1] as string) : [];
  if (head === null || tail === null) return null;
  // A dotted tail is only allowed at the very end.
  if (halves.length === 2 && (halves[0] as string).includes('.')) return null;
  let groups: number[];
  if (halves.length === 2) {
    const fill = 8 - head.length - tail.length;
    if (fill < 1) return null;
    groups = [...head, ...new Array<number>(fill).fill(0), ...tail];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return null;
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

export function formatIPv4(v: number): string {
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
}

/** RFC 5952 text: lower case, longest run of two or more zero groups compressed. */
export function formatIPv6(v: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((v >> BigInt(i * 16)) & 0xffffn));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/**
 * Any address the proxy may be handed (a resolver answer, a hosts-file entry, a literal):
 * IPv6 without brackets or zone, or IPv4 in any spelling. null when it is not an address.
 */
export function parseIP(s: string): IP | null {
  if (s.includes(':')) {
    const v = parseIPv6(s);
    return v === null ? null : { family: 6, value: v };
  }
  const v = parseIPv4Loose(s);
  return v === null ? null : { family: 4, value: v };
}

export function formatIP(ip: IP): string {
  return ip.family === 4 ? formatIPv4(ip.value) : formatIPv6(ip.value);
}

const bits = (v: bigint, from: number, len: number): bigint => (v >> BigInt(128 - from - len)) & ((1n << BigInt(len)) - 1n);
const inV6 = (v: bigint, net: bigint, prefix: number): boolean => prefix === 0 || v >> BigInt(128 - prefix) === net >> BigInt(128 - prefix);

/**
 * The one address the OS connects to when handed `ip`: IPv4-mapped `::ffff:0:0/96` is the IPv4
 * address itself (a dual-stack socket sends it over IPv4). Everything else is itself.
 */
export function canonicalIP(ip: IP): IP {
  if (ip.family === 6 && inV6(ip.value, 0xffffn << 32n, 96)) return { family: 4, value: Number(ip.value & 0xffffffffn) };
  return ip;
}

/**
 * The IPv4 addresses an IPv6 address carries and may reach through a translator, tunnel or
 * relay: IPv4-compatible `::/96`, IPv4-translated `::ffff:0:0:0/96`, NAT64 `64:ff9b::/96` and
 * `64:ff9b:1::/48` (RFC 6052 /96 position), 6to4 `2002::/16`, Teredo `2001::/32` (server and
 * de-obfuscated client). Each one must be open for the IPv6 address to be.
 */
export function embeddedIPv4(v: bigint): { via: string; value: number }[] {
  const low32 = Number(v & 0xffffffffn);
  const out: { via: string; value: number }[] = [];
  if (inV6(v, 0n, 96) && v > 1n) out.push({ via: 'IPv4-compatible', value: low32 });
  if (inV6(v, 0xffffn << 48n, 96)) out.push({ via: 'IPv4-translated', value: low32 });
  if (inV6(v, 0x64ff9bn << 96n, 96)) out.push({ via: 'NAT64', value: low32 });
  if (inV6(v, 0x64ff9b0001n << 80n, 48)) out.push({ via: 'NAT64 local-use', value: low32 });
  if (inV6(v, 0x2002n << 112n, 16)) out.push({ via: '6to4', value: Number(bits(v, 16, 32)) });
  if (inV6(v, 0x20010000n << 96n, 32)) {
    out.push({ via: 'Teredo server', value: Number(bits(v, 32, 32)) });
    out.push({ via: 'Teredo client', value: ~low32 >>> 0 });
  }
  return out;
}

/** `a.b.c.d/n` or `v6/n` to a canonical network (mapped IPv6 ranges become IPv4 ranges); null when malformed. */
export function parseCidr(s: string): { ip: IP; prefix: number } | null {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
  if (!m) return null;
  const base = m[1] as string;
  const prefix = Number(m[2]);
  if (base.includes(':')) {
    const v = parseIPv6(base);
    if (v === null || prefix > 128) return null;
    if (prefix >= 96 && inV6(v, 0xffffn << 32n, 96)) return { ip: { family: 4, value: Number(v & 0xffffffffn) }, prefix: prefix - 96 };
    return { ip: { family: 6, value: v }, prefix };
  }
  const v = parseDottedQuad(base);
  if (v === null || prefix > 32) return null;
  return { ip: { family: 4, value: v }, prefix };
}

export function inCidr(ip: IP, net: { ip: IP; prefix: number }): boolean {
  if (ip.family !== net.ip.family) return false;
  if (ip.family === 4) {
    if (net.prefix === 0) return true;
    const shift = 32 - net.prefix;
    return Math.floor(ip.value / 2 ** shift) === Math.floor((net.ip.value as number) / 2 ** shift);
  }
  return inV6(ip.value, net.ip.value as bigint, net.prefix);
}
