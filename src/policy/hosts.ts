/**
 * Host patterns of egress allow and deny lists: `example.com`, `*.example.com` (subdomains only,
 * not example.com itself), either with an optional `:PORT`; IPv6 literals in brackets.
 * A pattern without a port matches every port.
 */
import { isIP } from 'node:net';

interface HostPattern {
  wildcard: boolean;
  /** Lower case, no trailing dot, without the `*.` of a wildcard. */
  host: string;
  port: number | null;
}

const LABEL_RE = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

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
  let s = input.trim().toLowerCase();
  let port: number | null = null;
  let host: string;
  if (s.startsWith('[')) {
    const m = /^\[([0-9a-f:.]+)\](?::(\d+))?$/.exec(s);
    if (!m || isIP(m[1] as string) !== 6) return 'is not a valid bracketed IPv6 address';
    host = m[1] as string;
    if (m[2] !== undefined) port = Number(m[2]);
  } else {
    const parts = s.split(':');
    if (parts.length > 2) return 'write IPv6 addresses in brackets, e.g. [2001:db8::1]:443';
    if (parts.length === 2) {
      if (!/^\d{1,5}$/.test(parts[1] as string)) return 'has a port that is not a number';
      port = Number(parts[1]);
    }
    s = parts[0] as string;
    host = s.endsWith('.') ? s.slice(0, -1) : s;
  }
  if (port !== null && (port < 1 || port > 65535)) return 'has a port outside 1-65535';
  const wildcard = host.startsWith('*.');
  if (wildcard) host = host.slice(2);
  if (host.includes('*')) return 'may only use * as a whole leading label, as in *.example.com';
  if (host.length === 0 || host.length > 253) return 'is not a host name';
  if (isIP(host) === 0 && !host.split('.').every((l) => LABEL_RE.test(l))) {
    return 'is not a host name (letters, digits, - and . only)';
  }
  return { wildcard, host, port };
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

/** Whether `host` (a name or `name:port`) is matched by `pattern`. Malformed input never matches. */
export function hostMatches(pattern: string, host: string): boolean {
  const h = parse(host);
  if (typeof h === 'string' || h.wildcard) return false;
  if (pattern.trim() === '*') return true;
  const p = parse(pattern);
  if (typeof p === 'string') return false;
  if (p.port !== null && p.port !== h.port) return false;
  return p.wildcard ? h.host.endsWith(`.${p.host}`) : h.host === p.host;
}

/** Whether every host that `inner` matches is also matched by `outer` (both patterns). */
export function patternCovers(outer: string, inner: string): boolean {
  const i = parse(inner);
  if (typeof i === 'string') return false;
  if (outer.trim() === '*') return true;
  const o = parse(outer);
  if (typeof o === 'string') return false;
  if (o.port !== null && o.port !== i.port) return false;
  if (!i.wildcard) return o.wildcard ? i.host.endsWith(`.${o.host}`) : i.host === o.host;
  return o.wildcard && (i.host === o.host || i.host.endsWith(`.${o.host}`));
}
