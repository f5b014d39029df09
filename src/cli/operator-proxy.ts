/**
 * The dashboard for the host's operator (`agentbox dashboard`): a browser cannot speak to the home's
 * owner-only Unix socket, so this serves a loopback HTTP port that relays to it. Whoever reaches the
 * socket is the operator; whoever reaches a loopback port is any local user, so every request that
 * can read or change anything must carry a one-time token made for this run (as a bearer header, or
 * on a WebSocket as the page's `agentbox.bearer.` subprotocol). The token is stripped before the
 * request goes on: on the socket, no credential is what makes the caller the operator.
 *
 * Without the token only the dashboard's own page and files are served (an allow-list: they hold no data). A request for
 * another host name is refused (DNS rebinding); the daemon's browser guard refuses foreign origins.
 */
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { BEARER_PROTOCOL_PREFIX, bearerToken, browserSocketToken } from '../api/auth.js';
import { hostNameOf } from '../api/request-guard.js';

/** What passes without the token (GET and HEAD only): the dashboard's page and files (src/api/dashboard.ts), which hold no data. */
const PUBLIC_PATHS = /^\/(?:|index\.html|overview|sandboxes(?:\/[A-Za-z0-9_.-]{1,128})?|assets\/[A-Za-z0-9][A-Za-z0-9._-]{0,200})\/?$/;
const LOOPBACK_NAMES = new Set(['127.0.0.1', 'localhost', '[::1]']);
/** Hop-by-hop headers a relay does not pass on (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'proxy-authenticate']);

export interface OperatorProxy {
  /** The address to open: the token rides in the fragment, which a browser never sends. */
  url: string;
  token: string;
  port: number;
  close(): Promise<void>;
}

export async function startOperatorProxy(opts: { socketPath: string; port?: number; host?: string }): Promise<OperatorProxy> {
  const token = randomBytes(24).toString('base64url');
  const digest = sha256(token);
  const matches = (offered: string | undefined): boolean => offered !== undefined && timingSafeEqual(sha256(offered), digest);
  let port = 0;
  const hostAllowed = (req: IncomingMessage): boolean => {
    const name = hostNameOf(req.headers.host ?? '');
    const m = /:(\d+)$/.exec(req.headers.host ?? '');
    return name !== undefined && LOOPBACK_NAMES.has(name) && Number(m?.[1]) === port;
  };

  const server: Server = createServer((req, res) => {
    try {
      if (!hostAllowed(req)) return refuse(res, 403, 'forbidden', `this relay serves only 127.0.0.1:${port}`);
      const bearer = bearerToken(req.headers.authorization ?? '');
      const method = req.method ?? 'GET';
      const path = new URL(req.url ?? '/', 'http://relay').pathname;
      const needsToken = !PUBLIC_PATHS.test(path) || (method !== 'GET' && method !== 'HEAD');
      if (req.headers.authorization !== undefined && !matches(bearer)) return refuse(res, 401, 'unauthorized', 'not the token this `agentbox dashboard` printed');
      if (needsToken && bearer === undefined) return refuse(res, 401, 'unauthorized', 'send the token `agentbox dashboard` printed as Authorization: Bearer');
      const headers = stripHopByHop(req.headers);
      delete headers.authorization;
      const upstream = request({ socketPath: opts.socketPath, method, path: req.url, headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, stripHopByHop(answer.headers));
        answer.pipe(res);
      });
      upstream.on('error', () => (res.headersSent ? res.destroy() : refuse(res, 502, 'runtime_unavailable', 'the daemon did not answer on its socket')));
      req.pipe(upstream);
    } catch {
      res.destroy();
    }
  });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    if (!hostAllowed(req)) return refuseRaw(socket, 403, 'forbidden');
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim()).filter(Boolean);
    const headerBearer = bearerToken(req.headers.authorization ?? '');
    let fromProtocol: string | undefined;
    try {
      fromProtocol = browserSocketToken(req);
    } catch {
      return refuseRaw(socket, 401, 'unauthorized'); // malformed, or more than one
    }
    if ((fromProtocol === undefined) === (headerBearer === undefined) || !matches(fromProtocol ?? headerBearer)) return refuseRaw(socket, 401, 'unauthorized');
    const headers = stripHopByHop(req.headers);
    delete headers.authorization;
    const rest = offered.filter((p) => !p.startsWith(BEARER_PROTOCOL_PREFIX));
    if (rest.length > 0) headers['sec-websocket-protocol'] = rest.join(', ');
    else delete headers['sec-websocket-protocol'];
    headers.connection = 'Upgrade';
    headers.upgrade = req.headers.upgrade ?? 'websocket';
    const upstream = connect(opts.socketPath);
    upstream.on('error', () => socket.destroy());
    socket.on('close', () => upstream.destroy());
    upstream.on('close', () => socket.destroy());
    upstream.once('connect', () => {
      const lines = [`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1`, ...Object.entries(headers).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => `${k}: ${x}`) : v === undefined ? [] : [`${k}: ${v}`]))];
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length > 0) upstream.write(head);
      socket.pipe(upstream);
      upstream.pipe(socket);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/#token=${token}`,
    token,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Headers less hop-by-hop ones (an upgrade sets its own). */
function stripHopByHop<T extends Record<string, string | string[] | undefined>>(headers: T): Record<string, string | string[] | undefined> {
  const out: Record<string, string | string[] | undefined> = {};
  for (const [k, v] of Object.entries(headers)) if (!HOP_BY_HOP.has(k.toLowerCase())) out[k] = v;
  return out;
}

function refuse(res: ServerResponse, status: number, code: string, message: string): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify({ error: { code, message, hint: 'open the address `agentbox dashboard` printed (its token is in the part after #)' } }));
}

function refuseRaw(socket: Duplex, status: number, code: string): void {
  const body = JSON.stringify({ error: { code, message: 'this relay needs the token `agentbox dashboard` printed' } });
  socket.end(`HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : 'Forbidden'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
