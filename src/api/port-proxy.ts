/**
 * The port proxy (ARCHITECTURE.md, "Terminals and ports"): with a ports domain, a request whose Host
 * is `PORT-ID.<domain>` goes to PORT inside sandbox ID — HTTP and WebSocket alike — over a
 * connection made from inside (`Runtime.openPort`), so the sandbox needs no network. It is E2B's
 * `getHost(port)` shape, and what a browser needs (absolute links work, unlike a path prefix).
 *
 * Who gets through: the holder of an access token of that port (`agentbox-port-token` header, or
 * `?agentbox_port_token=` once: the browser is redirected with it as a cookie of that host only), a
 * request with the owner tenant's API token, or anyone once the owner made the port public. The
 * proxy's own credentials are stripped before the request reaches the sandbox.
 */
import { request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { AgentboxError, UnauthorizedError, NotFoundError } from '../contract/errors.js';
import type { Caller, SandboxManager } from '../core/manager.js';
import type { Authenticator, Listener } from './auth.js';
import { sendError } from './http-util.js';
import { join } from './join-streams.js';

export const PORT_TOKEN_HEADER = 'agentbox-port-token';
export const PORT_TOKEN_PARAM = 'agentbox_port_token';
/** E2B's traffic access token header: read for `fallback`, stripped like the proxy's own credentials. */
export const E2B_TRAFFIC_TOKEN_HEADER = 'e2b-traffic-access-token';
const COOKIE = 'agentbox_port_token';

export interface PortTarget {
  sandboxId: string;
  port: number;
}

export interface PortProxyOpts {
  /** `PORT-ID.<domain>` names a sandbox's port (e.g. `localhost`, or `sandboxes.example.com`). */
  domain: string;
  manager: SandboxManager;
  auth: Authenticator;
  listener: Listener;
  logger: Logger;
  /**
   * Asked when none of the proxy's own rules lets a request through, with the request's
   * `e2b-traffic-access-token` (E2B's rules: src/e2b/traffic.ts): a connection, or undefined (404).
   */
  fallback?: (t: PortTarget, trafficToken: string | undefined) => Promise<Duplex | undefined>;
}

/** The sandbox port a Host header names, or undefined when it is not under the ports domain. */
export function portTargetOf(host: string | undefined, domain: string): PortTarget | undefined {
  if (!host) return undefined;
  const name = host.toLowerCase().replace(/:\d+$/, '');
  const suffix = `.${domain.toLowerCase()}`;
  if (!name.endsWith(suffix)) return undefined;
  const m = /^(\d{1,5})-([a-z0-9_]{1,64})$/.exec(name.slice(0, -suffix.length));
  if (!m) return undefined;
  const port = Number(m[1]);
  return port >= 1 && port <= 65535 ? { port, sandboxId: m[2] as string } : undefined;
}

function cookieToken(cookie: string | undefined): string | undefined {
  for (const part of (cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === COOKIE) return v.join('=');
  }
  return undefined;
}

/**
 * The request's headers as the sandbox's server gets them: none of the proxy's credentials. An
 * Authorization header goes on unless it was an agentbox API token (`ownBearer`): the app may use
 * HTTP authentication of its own.
 */
function forwardedHeaders(req: IncomingMessage, ownBearer: boolean): IncomingHttpHeaders {
  const headers: IncomingHttpHeaders = { ...req.headers };
  delete headers[PORT_TOKEN_HEADER];
  delete headers[E2B_TRAFFIC_TOKEN_HEADER];
  if (ownBearer) delete headers.authorization;
  if (headers.cookie) {
    const rest = headers.cookie.split(';').filter((p) => p.trim().split('=')[0] !== COOKIE).join(';').trim();
    if (rest) headers.cookie = rest;
    else delete headers.cookie;
  }
  headers['x-forwarded-host'] = req.headers.host ?? '';
  headers['x-forwarded-proto'] = 'http';
  headers['x-forwarded-for'] = req.socket.remoteAddress ?? '';
  return headers;
}

export class PortProxy {
  constructor(private readonly opts: PortProxyOpts) {}

  target(req: IncomingMessage): PortTarget | undefined {
    return portTargetOf(req.headers.host, this.opts.domain);
  }

  /**
   * A connection to the target for this request, if it may have one (NotFoundError otherwise), and
   * whether its Authorization header was an agentbox API token (then it is not passed on).
   */
  private async open(req: IncomingMessage, t: PortTarget, url: URL): Promise<{ conn: Duplex; ownBearer: boolean }> {
    const caller = this.apiCaller(req);
    if (caller) return { conn: await this.opts.manager.openPort(t.sandboxId, t.port, caller), ownBearer: true };
    return { conn: await this.openByGrant(req, t, url), ownBearer: false };
  }

  /** The caller an `Authorization: Bearer` API token names; undefined for none, or one that is not agentbox's (the app's own). */
  private apiCaller(req: IncomingMessage): Caller | undefined {
    if (!/^bearer /i.test(req.headers.authorization ?? '')) return undefined;
    try {
      const caller = this.opts.auth.authenticate(req, this.opts.listener);
      return caller.actor === 'anonymous' ? undefined : caller;
    } catch (err) {
      if (err instanceof UnauthorizedError) return undefined;
      throw err;
    }
  }

  private async openByGrant(req: IncomingMessage, t: PortTarget, url: URL): Promise<Duplex> {
    const header = req.headers[PORT_TOKEN_HEADER];
    const token = (typeof header === 'string' ? header : undefined) ?? url.searchParams.get(PORT_TOKEN_PARAM) ?? cookieToken(req.headers.cookie);
    try {
      return await this.opts.manager.openPortByGrant(t.sandboxId, t.port, token ?? undefined);
    } catch (err) {
      if (!(err instanceof NotFoundError) || !this.opts.fallback) throw err;
      const traffic = req.headers[E2B_TRAFFIC_TOKEN_HEADER];
      const conn = await this.opts.fallback(t, typeof traffic === 'string' ? traffic : undefined);
      if (!conn) throw err;
      return conn;
    }
  }

  async handle(req: IncomingMessage, res: ServerResponse, t: PortTarget): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://port');
    const fromParam = url.searchParams.get(PORT_TOKEN_PARAM);
    let conn: Duplex;
    let ownBearer: boolean;
    try {
      ({ conn, ownBearer } = await this.open(req, t, url));
    } catch (err) {
      req.resume();
      sendError(res, err, this.opts.logger);
      return;
    }
    if (fromParam !== null && req.method === 'GET') {
      // A link that carries the token: kept as a cookie of this host only, and out of the address bar.
      conn.destroy();
      url.searchParams.delete(PORT_TOKEN_PARAM);
      res.writeHead(302, {
        location: `${url.pathname}${url.search}`,
        'set-cookie': `${COOKIE}=${encodeURIComponent(fromParam)}; Path=/; HttpOnly; SameSite=Lax`,
        'cache-control': 'no-store',
      });
      res.end();
      return;
    }
    const upstream = request({ method: req.method, path: req.url, headers: forwardedHeaders(req, ownBearer), createConnection: () => conn as Socket });
    upstream.on('response', (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.statusMessage, ur.headers);
      ur.pipe(res);
      ur.on('error', () => res.destroy());
    });
    upstream.on('error', (err) => {
      this.opts.logger.debug({ sandbox_id: t.sandboxId, port: t.port, err: err.message }, 'port proxy: the server inside failed');
      if (!res.headersSent) sendError(res, new AgentboxError('internal', `the server on port ${t.port} in sandbox ${t.sandboxId} closed the connection: ${err.message}`), this.opts.logger, 502);
      else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) conn.destroy();
    });
    req.pipe(upstream);
  }

  /** An upgrade (a WebSocket of the app inside): the request's head sent on, then bytes both ways. */
  async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, t: PortTarget): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://port');
    const { conn, ownBearer } = await this.open(req, t, url);
    const headers = forwardedHeaders(req, ownBearer);
    const lines = [`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1`];
    for (const [k, v] of Object.entries(headers)) {
      for (const one of Array.isArray(v) ? v : v === undefined ? [] : [v]) lines.push(`${k}: ${one.replace(/[\r\n]/g, '')}`);
    }
    conn.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (head.length > 0) conn.write(head);
    join(socket, conn);
  }
}
