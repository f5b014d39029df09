/**
 * What a web page must not be able to do to a daemon on loopback: drive it cross-site (CSRF: a
 * form or a no-preflight fetch) or read it through a name it controls (DNS rebinding). Checked on
 * every route before anything else, auth included.
 *
 * - `Host` must be a name this daemon serves (TCP only: the Unix socket has no names to rebind).
 * - A browser's cross-origin request is refused: an `Origin` other than the daemon's own, or
 *   `Sec-Fetch-Site: cross-site | same-site`.
 * - Routes that take JSON refuse a body of another type (415): text/plain, form-urlencoded and
 *   multipart are exactly what a page can send without a CORS preflight.
 * - Percent-encoding that does not decode (or decodes to NUL) in the path or the query is a 400.
 */
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { BadRequestError, ForbiddenError } from '../contract/errors.js';
import type { Listener } from './auth.js';

export class UnsupportedMediaTypeError extends BadRequestError {}

/** Names every TCP listener serves, whatever it is bound to. */
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];
const WILDCARDS = new Set(['0.0.0.0', '::', '[::]']);

/**
 * The `Host` names (no port, lower-case, IPv6 in brackets) a TCP listener bound to `bound`
 * answers to: loopback, the bound address, the operator's extra names and, on a wildcard bind,
 * this machine's hostname and interface addresses.
 */
export function servedHostNames(bound: string, extra: readonly string[] = []): Set<string> {
  const names = new Set<string>(LOOPBACK_NAMES);
  const add = (n: string): void => {
    const name = n.trim().toLowerCase().replace(/\.$/, '');
    if (name === '') return;
    names.add(isIP(name) === 6 ? `[${name}]` : name);
  };
  for (const n of extra) add(n);
  if (WILDCARDS.has(bound)) {
    add(hostname());
    for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) add(a.address.replace(/%.*$/, ''));
  } else {
    add(bound.replace(/^\[|\]$/g, ''));
  }
  return names;
}

/** `name[:port]` or `[v6]:port` -> the lower-case name (brackets kept for IPv6); undefined when malformed. */
export function hostNameOf(host: string): string | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]/@]+)(?::(\d{1,5}))?$/.exec(host.trim());
  return m ? (m[1] as string).toLowerCase().replace(/\.$/, '') : undefined;
}

export interface GuardOpts {
  listener: Listener;
  /** Names the TCP listener serves (servedHostNames); unused on the Unix socket. */
  hostNames: ReadonlySet<string>;
}

export function checkBrowserRequest(req: IncomingMessage, opts: GuardOpts): void {
  const host = req.headers.host;
  if (opts.listener === 'tcp' && host !== undefined) {
    const name = hostNameOf(host);
    if (name === undefined || !opts.hostNames.has(name)) {
      throw new ForbiddenError(`this daemon does not serve the host name ${JSON.stringify(host.slice(0, 100))}`, {
        hint: 'use http://127.0.0.1:PORT, or list the name with serve --allowed-host NAME (AGENTBOX_ALLOWED_HOSTS)',
      });
    }
  }
  const site = header(req, 'sec-fetch-site');
  if (site === 'cross-site' || site === 'same-site') {
    throw new ForbiddenError('cross-site browser requests are not allowed', { hint: 'call the API from a program (CLI, SDK, curl), not from a web page' });
  }
  const origin = header(req, 'origin');
  if (origin !== undefined && (host === undefined || origin.toLowerCase() !== `http://${host.toLowerCase()}`)) {
    throw new ForbiddenError(`requests from origin ${JSON.stringify(origin.slice(0, 100))} are not allowed`, {
      hint: 'call the API from a program (CLI, SDK, curl): programs send no Origin header',
    });
  }
}

/** A JSON route's body must say it is JSON; an empty body without a type is fine (nothing to forge). */
export function checkJsonBody(req: IncomingMessage): void {
  const type = header(req, 'content-type');
  const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
  if (type === undefined ? !hasBody : isJsonType(type)) return;
  throw new UnsupportedMediaTypeError(`this route takes application/json, not ${type ?? 'a body without a content type'}`, {
    hint: 'send the body with Content-Type: application/json',
  });
}

function isJsonType(type: string): boolean {
  const essence = (type.split(';')[0] ?? '').trim().toLowerCase();
  return essence === 'application/json';
}

/** Path and query must percent-decode cleanly: a request the router cannot read is a 400, not a 500. */
export function checkEncoding(rawUrl: string): void {
  const q = rawUrl.indexOf('?');
  const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
  const parts = [...path.split('/'), ...(q === -1 ? [] : rawUrl.slice(q + 1).split(/[&=]/).map((p) => p.replace(/\+/g, ' ')))];
  for (const part of parts) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(part);
    } catch {
      throw new BadRequestError('malformed percent-encoding in the URL', { hint: 'percent-encode names and paths as UTF-8 (encodeURIComponent)' });
    }
    if (decoded.includes('\0')) throw new BadRequestError('a NUL byte in the URL', { hint: 'names and paths cannot contain NUL' });
  }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}
