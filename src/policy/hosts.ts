/**
 * Host patterns of egress allow and deny lists: `example.com`, `*.example.com` (subdomains only,
 * not example.com itself), either with an optional `:PORT`; IPv6 literals in brackets.
 * In an allow list a pattern without a port allows ports 80 and 443 only (HTTP and HTTPS): any
 * other port has to be named. In a deny list a pattern without a port denies every port.
 *
 * Every host, in a pattern or in a request, is first brought to ONE canonical spelling
 * (canonicalHost): IDNA/UTS-46 mapping (case, full-width letters, Unicode dots such as U+3002),
 * percent-decoding, trailing dots dropped, IP literals in any spelling to their canonical text.
 * What does not canonicalise to a valid DNS name or IP address is refused, never passed on.
 */
import { domainToASCII } from 'node:url';
import { canonicalIP, formatIP, parseIPv4Loose, parseIPv6, type IP } from '../egress/ip.js';

interface HostPattern {
  wildcard: boolean;
  /** Canonical: see canonicalHost; without the `*.` of a wildcard. */
  host: string;
  /** The address when `host` is an IP literal. */
  ip: IP | null;
  port: number | null;
}

/** Ports a portless allow-list entry opens. */
export const DEFAULT_ALLOW_PORTS: readonly number[] = [80, 443];

const LABEL_RE = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;
/** ASCII a host name can never hold (WHATWG forbidden host code points and more). */
const FORBIDDEN_RE = /[\x00-\x20\x7f/\\?#@:[\]<>^|"'`{},;=!$&()+~*%]/;

export type CanonicalHost = { kind: 'ip'; text: string; ip: IP } | { kind: 'name'; text: string };

/**
 * The one spelling of a host that every decision uses, or what is wrong with it. IPv6 comes in
 * brackets or bare, without a zone id; IPv4-mapped IPv6 becomes the IPv4 address it is.
 */
export function canonicalHost(raw: string): CanonicalHost | string {
  if (raw.length === 0 || raw.length > 1024) return 'is not a host name';
  const bracketed = raw.startsWith('[');
  if (bracketed || raw.includes(':')) {
    const inner = bracketed ? (raw.endsWith(']') ? raw.slice(1, -1) : null) : raw;
    if (inner === null) return 'is not a valid bracketed IPv6 address';
    if (inner.includes('%')) return 'has an IPv6 zone id, which egress never takes';
    const v = parseIPv6(inner);
    if (v === null) return 'is not a valid IPv6 address';
    const ip = canonicalIP({ family: 6, value: v });
    return { kind: 'ip', text: formatIP(ip), ip };
  }
  let s = raw;
  if (/[\x00-\x20\x7f]/.test(s)) return 'is not a host name (letters, digits, - and . only; no spaces or control characters)';
  if (s.includes('%')) {
    try {
      s = decodeURIComponent(s);
    } catch {
      return 'has malformed percent-encoding';
    }
  }
  if (FORBIDDEN_RE.test(s)) return 'is not a host name (letters, digits, - and . only)';
  const ascii = domainToASCII(s);
  if (ascii === '') return 'is not a valid host name (IDNA)';
  const name = ascii.replace(/\.+$/, '');
  const labels = name.split('.');
  // A name whose last label is a number is an IPv4 literal to getaddrinfo and to URL parsers.
  if (/^(0x[0-9a-f]*|[0-9]+)$/i.test(labels[labels.length - 1] as string)) {
    const v4 = parseIPv4Loose(name);
    if (v4 === null) return 'looks like an IPv4 address but is not a valid one';
    const ip: IP = { family: 4, value: v4 };
    return { kind: 'ip', text: formatIP(ip), ip };
  }
  if (name.length === 0 || name.length > 253 || !labels.every((l) => LABEL_RE.test(l))) {
    return 'is not a host name (letters, digits, - and . only)';
  }
  return { kind: 'name', text: name };
}

/**
 * Suffixes under which anyone can get a name of their own. `*.` on one of them would let a
 * sandbox send data to a host its author registered. One-label suffixes (`*.com`, `*.dev`) are
 * refused anyway; this short list adds common two-level and shared-hosting suffixes, and
 * `cc` second levels (`*.co.uk`, `*.com.au`) are caught by rule.
 */
const SHARED_SUFFIXES = new Set([
  'github.io', 'githubusercontent.com', 'gitlab.io', 'herokuapp.com', 'appspot.com', 'blogspot.com',
  'cloudfront.net', 'amazonaws.com', 'azurewebsites.net', 'vercel.app', 'netlify.app', 'pages.dev',
  'workers.dev', 'web.app', 'firebaseapp.com', 'ngrok.io', 'ngrok-free.app', 'trycloudflare.com',
]);
const CC_SECOND_LEVELS = new Set(['co', 'com', 'net', 'org', 'gov', 'edu', 'ac', 'or', 'ne', 'go', 'gob', 'nic']);

function parse(input: string): HostPattern | string {
  const s = input.trim();
  let port: number | null = null;
  let hostPart: string;
  if (s.startsWith('[')) {
    const m = /^(\[[^\]]*\])(?::(\d{1,5}))?$/.exec(s);
    if (!m) return 'is not a valid bracketed IPv6 address';
    hostPart = m[1] as string;
    if (m[2] !== undefined) port = Number(m[2]);
  } else {
    const parts = s.split(':');
    if (parts.length > 2) return 'write IPv6 addresses in brackets, e.g. [2001:db8::1]:443';
    if (parts.length === 2) {
      if (!/^\d{1,5}$/.test(parts[1] as string)) return 'has a port that is not a number';
      port = Number(parts[1]);
    }
    hostPart = parts[0] as string;
  }
  if (port !== null && (port < 1 || port > 65535)) return 'has a port outside 1-65535';
  const wildcard = hostPart.startsWith('*.');
  if ((wildcard ? hostPart.slice(2) : hostPart).includes('*')) return 'may only use * as a whole leading label, as in *.example.com';
  const c = canonicalHost(wildcard ? hostPart.slice(2) : hostPart);
  if (typeof c === 'string') return c;
  if (wildcard && c.kind === 'ip') return 'puts a wildcard on an IP address';
  return { wildcard, host: c.text, ip: c.kind === 'ip' ? c.ip : null, port };
}

function isPublicSuffix(host: string): boolean {
  const labels = host.split('.');
  if (labels.length === 1) return true;
  if (SHARED_SUFFIXES.has(host)) return true;
  return labels.length === 2 && CC_SECOND_LEVELS.has(labels[0] as string) && (labels[1] as string).length === 2;
}

/**
 * What is wrong with a host pattern, or null when it is fine. `broad: true` (deny lists) lets
 * wildcards cover public suffixes: denying too much is safe, allowing too much is not.
 */
export function hostPatternProblem(pattern: string, opts: { broad?: boolean } = {}): string | null {
  if (pattern.trim() === '*') {
    return opts.broad ? null : '"*" would allow every host on the internet; give a profile egress mode open if that is really meant';
  }
  const p = parse(pattern);
  if (typeof p === 'string') return `"${pattern}" ${p}`;
  if (p.wildcard && !opts.broad && isPublicSuffix(p.host)) {
    return `"${pattern}" is a wildcard on the public suffix ${p.host}: anyone can register a name under it and receive data from the sandbox; list the domains you trust instead`;
  }
  return null;
}

/**
 * Ports a pattern names: its own, else (an allow-list entry) 80 and 443, else (a deny-list entry)
 * every port, as null.
 */
function portsOf(p: HostPattern, allow: boolean): readonly number[] | null {
  if (p.port !== null) return [p.port];
  return allow ? DEFAULT_ALLOW_PORTS : null;
}

export interface MatchOpts {
  /** Allow-list semantics: a portless pattern covers ports 80 and 443 only. Default: deny-list (every port). */
  allow?: boolean;
}

/**
 * Whether `host` (a name or `name:port`, any spelling: it is canonicalised) is matched by
 * `pattern`. Malformed input never matches.
 */
export function hostMatches(pattern: string, host: string, opts: MatchOpts = {}): boolean {
  const h = parse(host);
  if (typeof h === 'string' || h.wildcard) return false;
  if (pattern.trim() === '*') return true;
  const p = parse(pattern);
  if (typeof p === 'string') return false;
  const ports = portsOf(p, opts.allow === true);
  if (ports !== null && (h.port === null ? p.port !== null : !ports.includes(h.port))) return false;
  return p.wildcard ? h.host.endsWith(`.${p.host}`) : h.host === p.host;
}

/** Whether every host that `inner` matches is also matched by `outer` (both patterns of the same kind of list). */
export function patternCovers(outer: string, inner: string, opts: MatchOpts = {}): boolean {
  const i = parse(inner);
  if (typeof i === 'string') return false;
  if (outer.trim() === '*') return true;
  const o = parse(outer);
  if (typeof o === 'string') return false;
  const outerPorts = portsOf(o, opts.allow === true);
  const innerPorts = portsOf(i, opts.allow === true);
  if (outerPorts !== null && (innerPorts === null || !innerPorts.every((n) => outerPorts.includes(n)))) return false;
  if (!i.wildcard) return o.wildcard ? i.host.endsWith(`.${o.host}`) : i.host === o.host;
  return o.wildcard && (i.host === o.host || i.host.endsWith(`.${o.host}`));
}

/** The canonical address an allow or deny entry names, when it names an IP literal (in any spelling); else null. */
export function patternAddress(pattern: string): string | null {
  const p = parse(pattern);
  return typeof p === 'string' || p.ip === null ? null : p.host;
}

/** The canonical host of a pattern and whether it is a wildcard; null when the pattern is malformed. */
export function patternHost(pattern: string): { host: string; wildcard: boolean } | null {
  const p = parse(pattern);
  return typeof p === 'string' ? null : { host: p.host, wildcard: p.wildcard };
}

/** The canonical `host:port` (`[v6]:port`) of a request's target, or what is wrong with the host. */
export function canonicalTarget(host: string, port: number): { host: string; subject: string } | string {
  const c = canonicalHost(host);
  if (typeof c === 'string') return c;
  return { host: c.text, subject: c.text.includes(':') ? `[${c.text}]:${port}` : `${c.text}:${port}` };
}
