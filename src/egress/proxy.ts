/**
 * One sandbox's egress proxy: an HTTP proxy on a Unix socket that only that sandbox can reach.
 * CONNECT tunnels any allowed host:port (HTTPS without interception, SSH, ...); plain HTTP
 * requests in absolute form are forwarded by their URL's host. Every attempt is decided
 * (rules.ts), resolved, checked by address (addresses.ts), connected to that same address and
 * logged with its bytes each way.
 */
import { chmodSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { EgressAttempt, EgressEvent } from '../contract/model.js';
import type { AddressRules } from './addresses.js';
import type { Resolver } from './resolver.js';
import { ResolveError } from './resolver.js';
import { canonicalTarget } from '../policy/hosts.js';
import { decideHost, denyByAddress, explainDenial, type HostRules, type Verdict } from './rules.js';
import { clientHelloServerName } from './tls-sni.js';
import { SANDBOX_API_HOST, SANDBOX_API_URL } from '../contract/tokens.js';

export type ProxyAttempt = EgressAttempt;

/** What the proxy needs from its owner: rules that may change while it runs, and somewhere to log. */
export interface ProxyContext {
  sandboxId: string;
  rules(): HostRules;
  addresses: AddressRules;
  resolve: Resolver;
  /** Bytes the sandbox may still move; <= 0 means the quota is used up. */
  quotaLeft(): number;
  quotaMb: number;
  /** Log a decided attempt; the returned function completes the entry when the connection ends. */
  record(a: ProxyAttempt): (o: { bytesUp: number; bytesDown: number; error: string | null }) => void;
  /** Count bytes against the quota as they pass. */
  addBytes(n: number): void;
  /**
   * Whether each request of a connection may go on as this sandbox's (the cluster proxy checks every
   * request's Proxy-Authorization, not only the first of a kept-alive connection). @default all
   */
  admits?(req: IncomingMessage): boolean;
  /**
   * Serves plain-HTTP requests for SANDBOX_API_HOST (port 80): the daemon's API for this sandbox's
   * own tokens (src/api/sandbox-gateway.ts). Absent: that host is not served.
   */
  gateway?: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
}

const CONNECT_TIMEOUT_MS = 10_000;
/** The answer to a request without this sandbox's credential (the cluster proxy's); the connection closes. */
export const PROXY_AUTH_REQUIRED = 'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="agentbox egress"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n';
const MAX_HEADER_BYTES = 16 * 1024;
/** Name lookups one sandbox may have in flight; more are refused (503) rather than queued behind slow ones. */
export const MAX_LOOKUPS_IN_FLIGHT = 16;
/** Hop-by-hop headers (RFC 9110 7.6.1) and the proxy's own: never forwarded. */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'upgrade', 'transfer-encoding']);

type Admission = { ok: true; address: string; rule: string } | { ok: false; status: number; rule: string; address: string | null };

export class SandboxProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Duplex>();
  private path: string | undefined;
  private lookups = 0;

  constructor(private readonly ctx: ProxyContext) {
    // Strict parsing (no lenient llhttp flags): Content-Length with Transfer-Encoding, differing
    // duplicate Content-Lengths, obs-fold and oversized heads are refused with 400/431 before a
    // request reaches onRequest, so the proxy and the upstream never frame a body differently.
    this.server = createServer(
      { headersTimeout: 30_000, requestTimeout: 0, keepAliveTimeout: 5_000, maxHeaderSize: MAX_HEADER_BYTES, insecureHTTPParser: false, joinDuplicateHeaders: false },
      (req, res) => void this.onRequest(req, res),
    );
    this.server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => void this.onConnect(req, socket, head));
    this.server.on('connection', (s: Socket) => this.track(s));
    this.server.on('clientError', (_err, socket: Duplex) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
  }

  /** Listen on a Unix socket (a stale one from an earlier daemon is replaced). */
  async listen(path: string): Promise<void> {
    rmSync(path, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(path, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    // The sandbox user inside is not the daemon's; the directory around the socket keeps everyone else out.
    chmodSync(path, 0o666);
    this.path = path;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.path) rmSync(this.path, { force: true });
  }

  /** Serve a connection accepted elsewhere (the cluster proxy's listener), its head unread or put back. */
  accept(socket: Socket): void {
    this.server.emit('connection', socket);
  }

  /** Tear down every open connection (e.g. the quota ran out); the listener stays. */
  dropConnections(): void {
    for (const s of this.sockets) s.destroy();
  }

  private track(s: Duplex): void {
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
  }

  private async admit(kind: EgressEvent['kind'], method: string | null, host: string, port: number): Promise<Admission & { done: ReturnType<ProxyContext['record']> }> {
    const deny = (status: number, rule: string, address: string | null, error?: string) => ({
      ok: false as const,
      status,
      rule,
      address,
      done: this.ctx.record({ kind, method, host, port, address, decision: 'denied', rule, ...(error ? { error } : {}) }),
    });
    const byName: Verdict = decideHost(this.ctx.rules(), host, port);
    if (!byName.allowed) return deny(byName.rule === 'invalid_host' ? 400 : 403, byName.rule, null);
    if (this.ctx.quotaLeft() <= 0) return deny(403, 'byte_quota', null);
    // The canonical spelling is what gets resolved: getaddrinfo would take `127.1` or `0x7f.1` as written.
    const target = canonicalTarget(host, port);
    if (typeof target === 'string') return deny(400, 'invalid_host', null);
    if (this.lookups >= MAX_LOOKUPS_IN_FLIGHT) return deny(503, 'dns:too_many_lookups', null);
    let addresses: string[];
    this.lookups++;
    try {
      addresses = await this.ctx.resolve(target.host);
    } catch (err) {
      const code = err instanceof ResolveError ? err.code : 'EFAIL';
      return deny(502, `dns:${code}`, null, err instanceof Error ? err.message : String(err));
    } finally {
      this.lookups--;
    }
    let firstDenial: { rule: string; address: string } | undefined;
    for (const address of addresses) {
      const v = denyByAddress(this.ctx.rules(), address, port) ?? this.ctx.addresses.check(address);
      if (v.allowed) {
        const rule = v.rule === 'public_address' ? byName.rule : `${byName.rule} ${v.rule}`;
        return { ok: true, address, rule, done: this.ctx.record({ kind, method, host, port, address, decision: 'allowed', rule }) };
      }
      firstDenial ??= { rule: v.rule, address };
    }
    return deny(403, firstDenial?.rule ?? 'dns:ENOTFOUND', firstDenial?.address ?? null);
  }

  private denialText(rule: string, host: string, port: number, address: string | null): string {
    return explainDenial(rule, { sandboxId: this.ctx.sandboxId, host, port, address, allow: this.ctx.rules().allow, quotaMb: this.ctx.quotaMb });
  }

  private async onConnect(req: IncomingMessage, client: Duplex, head: Buffer): Promise<void> {
    (client as Partial<Socket>).setNoDelay?.(true);
    client.on('error', () => undefined);
    if (this.ctx.admits && !this.ctx.admits(req)) {
      client.end(PROXY_AUTH_REQUIRED);
      return;
    }
    const target = parseAuthority(req.url ?? '');
    if (!target) {
      client.end('HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nagentbox egress: CONNECT needs HOST:PORT\n');
      return;
    }
    if (target.host === SANDBOX_API_HOST) {
      const body = `agentbox egress: ${SANDBOX_API_HOST} is served over plain HTTP only: ${SANDBOX_API_URL} (it never leaves the host)\n`;
      client.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      return;
    }
    const a = await this.admit('connect', 'CONNECT', target.host, target.port);
    if (!a.ok) {
      const body = `${this.denialText(a.rule, target.host, target.port, a.address)}\n`;
      // Clients that hide the body of a refused CONNECT (curl, Python) still show the reason phrase.
      const reason = `Egress to ${target.host}:${target.port} denied (${a.rule})`.replace(/[^\x20-\x7e]/g, '?');
      client.end(
        `HTTP/1.1 ${a.status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
          `X-Agentbox-Egress-Rule: ${a.rule}\r\nConnection: close\r\n\r\n${body}`,
      );
      a.done({ bytesUp: 0, bytesDown: 0, error: null });
      return;
    }
    const counter = new ByteCounter(this.ctx);
    // No Nagle on either leg: TLS handshakes are chains of small writes, each one waited for.
    const upstream = connect({ host: a.address, port: target.port, noDelay: true });
    this.track(upstream);
    const timer = setTimeout(() => upstream.destroy(new Error(`connect timed out after ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
    let established = false;
    let error: string | null = null;
    upstream.once('connect', () => {
      clearTimeout(timer);
      established = true;
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.on('data', (c: Buffer) => counter.down(c.length));
      upstream.pipe(client);
      // The server may speak first (SSH): downstream flows at once; upstream waits until the
      // first bytes show whether a TLS ClientHello names another host.
      this.gateClientHello(client, head, target.host, target.port, (verdict) => {
        if (verdict !== null) {
          error ??= verdict.error;
          this.ctx.record({ kind: 'connect', method: 'CONNECT', host: verdict.name, port: target.port, address: a.address, decision: 'denied', rule: verdict.rule })({ bytesUp: 0, bytesDown: 0, error: null });
          client.destroy();
          upstream.destroy();
          return;
        }
        client.on('data', (c: Buffer) => counter.up(c.length));
        client.pipe(upstream);
      }, (first) => {
        counter.up(first.length);
        upstream.write(first);
      });
    });
    upstream.on('error', (err) => {
      clearTimeout(timer);
      error ??= err.message;
      if (!established && client.writable) {
        const body = `agentbox egress: ${target.host}:${target.port} (${a.address}) is allowed but could not be reached: ${err.message}\n`;
        client.end(`HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      }
    });
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      a.done({ bytesUp: counter.upBytes, bytesDown: counter.downBytes, error });
    };
    // One side closed: the other gets what is still queued for it first (an echo, a response after
    // the sandbox's half-close), unless the close was an error. Destroying it at once cut such tails off.
    upstream.once('close', (hadError) => {
      if (established) closeAfterFlush(client, hadError);
      finish();
    });
    client.once('close', () => {
      closeAfterFlush(upstream, client.errored !== null || !established);
      finish();
    });
  }

  /**
   * Reads the first bytes of a tunnel. Not TLS, or TLS whose SNI is the tunnel's own host (any
   * spelling) or a host the sandbox may reach itself: `pass(first)` then `done(null)`. Otherwise
   * `done` with the refusal (rule `sni:NAME`): domain fronting through an allowed tunnel.
   */
  private gateClientHello(
    client: Duplex,
    head: Buffer,
    host: string,
    port: number,
    done: (refusal: { rule: string; name: string; error: string } | null) => void,
    pass: (first: Buffer) => void,
  ): void {
    let buf = head;
    const decide = (): boolean => {
      const r = clientHelloServerName(buf);
      if (r.kind === 'need_more') return false;
      client.off('data', onData);
      client.pause();
      if (r.kind === 'malformed') {
        done({ rule: 'tls:malformed_client_hello', name: host, error: `refused: malformed TLS ClientHello (${r.why})` });
        return true;
      }
      if (r.kind === 'hello' && r.serverName !== null) {
        const sni = canonicalTarget(r.serverName, port);
        const own = canonicalTarget(host, port);
        const same = typeof sni !== 'string' && typeof own !== 'string' && sni.host === own.host;
        if (!same) {
          const v = typeof sni === 'string' ? { allowed: false, rule: 'invalid_host' } : decideHost(this.ctx.rules(), sni.host, port);
          if (!v.allowed) {
            const name = typeof sni === 'string' ? r.serverName.replace(/[^\x21-\x7e]/g, '?').slice(0, 253) : sni.host;
            done({ rule: `sni:${name}`, name, error: `refused: the TLS ClientHello names ${name} (${v.rule}), not ${host}` });
            return true;
          }
        }
      }
      if (buf.length > 0) pass(buf);
      done(null);
      client.resume();
      return true;
    };
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      decide();
    };
    if (buf.length > 0 && decide()) return;
    client.on('data', onData);
  }

  /** The daemon's API for this sandbox's tokens: not egress (no rule, no quota, no log entry), the token decides. */
  private async toGateway(req: IncomingMessage, res: ServerResponse, port: number): Promise<void> {
    if (port !== 80 || !this.ctx.gateway) {
      req.resume();
      return plain(res, 404, `agentbox egress: ${port !== 80 ? `the agentbox API is at ${SANDBOX_API_URL} (port 80)` : `this daemon does not serve ${SANDBOX_API_HOST}`}\n`);
    }
    try {
      await this.ctx.gateway(req, res);
    } catch {
      if (!res.headersSent) plain(res, 500, 'agentbox egress: the agentbox API failed\n');
      else res.destroy();
    }
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.ctx.admits && !this.ctx.admits(req)) {
      req.resume();
      // Through the server, not the socket: a pipelined request's response has no socket until the one before it is sent.
      res.writeHead(407, { 'Proxy-Authenticate': 'Basic realm="agentbox egress"', 'Content-Length': '0', Connection: 'close' });
      res.end();
      return;
    }
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      return plain(res, 400, 'agentbox egress: this is an HTTP proxy; send requests in absolute form (http_proxy) or use CONNECT for HTTPS\n');
    }
    if (url.protocol !== 'http:') return plain(res, 400, `agentbox egress: ${url.protocol} URLs go through CONNECT (https_proxy), not as plain requests\n`);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = url.port ? Number(url.port) : 80;
    const framing = requestProblem(req, url, port);
    if (framing !== null) {
      req.resume();
      return plain(res, 400, `agentbox egress: ${framing}\n`);
    }
    if (host === SANDBOX_API_HOST) return this.toGateway(req, res, port);
    const a = await this.admit('http', req.method ?? 'GET', host, port);
    if (!a.ok) {
      res.setHeader('X-Agentbox-Egress-Rule', a.rule);
      plain(res, a.status, `${this.denialText(a.rule, host, port, a.address)}\n`);
      req.resume();
      a.done({ bytesUp: 0, bytesDown: 0, error: null });
      return;
    }
    const counter = new ByteCounter(this.ctx);
    const headers: Record<string, string | string[]> = {};
    const connectionListed = new Set(String(req.headers.connection ?? '').toLowerCase().split(',').map((s) => s.trim()));
    for (const [k, v] of Object.entries(req.headers)) {
      if (v === undefined || HOP_HEADERS.has(k) || connectionListed.has(k)) continue;
      headers[k] = v;
    }
    headers.host = url.host;
    const upstream = httpRequest({ host: a.address, port, method: req.method, path: `${url.pathname}${url.search}`, headers, setHost: false, agent: false, timeout: CONNECT_TIMEOUT_MS });
    let error: string | null = null;
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      a.done({ bytesUp: counter.upBytes, bytesDown: counter.downBytes, error });
    };
    upstream.on('timeout', () => upstream.destroy(new Error(`no answer within ${CONNECT_TIMEOUT_MS} ms`)));
    upstream.on('error', (err) => {
      error ??= err.message;
      if (!res.headersSent) plain(res, 502, `agentbox egress: ${host}:${port} (${a.address}) is allowed but could not be reached: ${err.message}\n`);
      else res.destroy();
      finish();
    });
    upstream.on('response', (up) => {
      upstream.setTimeout(0);
      const out: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && !HOP_HEADERS.has(k)) out[k] = v;
      res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
      up.on('data', (c: Buffer) => counter.down(c.length));
      up.pipe(res);
      up.once('end', finish);
      up.once('error', (err) => {
        error ??= err.message;
        res.destroy();
        finish();
      });
    });
    req.on('data', (c: Buffer) => counter.up(c.length));
    req.pipe(upstream);
    res.once('close', () => {
      if (!res.writableFinished) {
        error ??= 'the sandbox closed the connection';
        upstream.destroy();
      }
      finish();
    });
  }
}

/** How long a tunnel's surviving side may take to flush what is queued for it once the other side closed. */
const FLUSH_MS = 30_000;

/** End `s` once what was written to it has gone out (at once when `now`, or when it is done already). */
function closeAfterFlush(s: Duplex, now: boolean): void {
  if (now || s.destroyed || s.writableFinished) {
    s.destroy();
    return;
  }
  const timer = setTimeout(() => s.destroy(), FLUSH_MS);
  timer.unref();
  s.once('finish', () => {
    clearTimeout(timer);
    s.destroy();
  });
  s.once('close', () => clearTimeout(timer));
  s.end();
}

/** Counts one connection's bytes each way and charges them to the sandbox's quota. */
class ByteCounter {
  upBytes = 0;
  downBytes = 0;
  constructor(private readonly ctx: ProxyContext) {}
  up(n: number): void {
    this.upBytes += n;
    this.ctx.addBytes(n);
  }
  down(n: number): void {
    this.downBytes += n;
    this.ctx.addBytes(n);
  }
}

function plain(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
  res.end(body);
}

/**
 * What makes a plain-HTTP request unsafe to forward, or null. The request line's absolute URL is
 * what the proxy checks and connects to; a `Host` header naming anything else would let the
 * upstream (a CDN, a virtual host) serve another site (domain fronting), and userinfo or
 * ambiguous body framing are refused rather than guessed at.
 */
export function requestProblem(req: IncomingMessage, url: URL, port: number): string | null {
  if (url.username !== '' || url.password !== '') return 'a proxied URL may not carry user:password@';
  const raw = req.rawHeaders;
  const values = (name: string): string[] => {
    const out: string[] = [];
    for (let i = 0; i + 1 < raw.length; i += 2) if ((raw[i] as string).toLowerCase() === name) out.push(raw[i + 1] as string);
    return out;
  };
  const hosts = values('host');
  if (hosts.length > 1) return 'more than one Host header';
  if (hosts.length === 1) {
    const m = /^(\[[^\]]*\]|[^:]*)(?::(\d{1,5}))?$/.exec(hosts[0] as string);
    const headerPort = m?.[2] !== undefined ? Number(m[2]) : 80;
    const headerHost = m ? canonicalTarget(m[1] as string, headerPort) : 'malformed';
    const urlHost = canonicalTarget(url.hostname, port);
    if (typeof headerHost === 'string' || typeof urlHost === 'string' || headerHost.subject !== urlHost.subject) {
      return `the Host header (${JSON.stringify(hosts[0])}) does not name the URL's host ${url.host}`;
    }
  }
  const lengths = values('content-length');
  const codings = values('transfer-encoding');
  if (lengths.length > 1) return 'more than one Content-Length header';
  if (lengths.length > 0 && codings.length > 0) return 'both Content-Length and Transfer-Encoding';
  if (codings.length > 1 || (codings.length === 1 && (codings[0] as string).trim().toLowerCase() !== 'chunked')) {
    return 'a Transfer-Encoding other than one plain chunked';
  }
  if (lengths.length === 1 && !/^\d{1,15}$/.test((lengths[0] as string).trim())) return 'a Content-Length that is not a number';
  return null;
}

/** `host:port` or `[v6]:port` of a CONNECT request. */
export function parseAuthority(s: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:/[\]]+)):(\d{1,5})$/.exec(s);
  if (!m) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  return { host: (m[1] ?? m[2] ?? '').toLowerCase(), port };
}
