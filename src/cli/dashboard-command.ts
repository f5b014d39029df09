/**
 * `agentbox dashboard`: the dashboard as the host's operator. The daemon's Unix socket makes its
 * caller the operator, and a browser cannot speak to a Unix socket, so this serves a loopback HTTP
 * proxy to it (ARCHITECTURE: Dashboard), guarded by a random token made for this run and handed to
 * the page in the URL's fragment (never sent to a server, never logged). The proxy checks that token
 * (a bearer header, or the WebSocket bearer subprotocol) and strips it: over the socket no token is
 * needed, and the daemon would refuse this one. The page's own files pass without it (they hold no
 * data); every other path needs it.
 */
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { createServer, request, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Command } from 'commander';
import { BadRequestError } from '../contract/errors.js';
import { resolvePaths } from '../core/config.js';
import { answers, ensureLocalDaemon } from './connect.js';

const BEARER_PROTOCOL_PREFIX = 'agentbox.bearer.';
/** Paths the proxy passes without its token: the dashboard's page and files (src/api/dashboard.ts). */
const PUBLIC_PATHS = /^\/(?:|index\.html|overview|sandboxes(?:\/[A-Za-z0-9_.-]{1,128})?|assets\/[A-Za-z0-9][A-Za-z0-9._-]{0,200})\/?$/;

export interface DashboardProxyOpts {
  /** The daemon's Unix socket. */
  socketPath: string;
  /** The token the page must show. */
  token: string;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** A loopback HTTP server that forwards to the daemon's Unix socket as the operator, for holders of `token` only. */
export function createDashboardProxy(opts: DashboardProxyOpts): Server {
  const want = digest(opts.token);
  const same = (offered: string | undefined): boolean => offered !== undefined && timingSafeEqual(digest(offered), want);
  let port = 0;
  const hostOk = (req: IncomingMessage): boolean => {
    // Only the names this proxy is reached by: a page of another name (DNS rebinding) gets nothing.
    const host = String(req.headers.host ?? '').toLowerCase();
    return host === `127.0.0.1:${port}` || host === `localhost:${port}`;
  };
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://proxy').pathname;
    if (!hostOk(req)) return refuse(res, 403, 'forbidden', 'this proxy answers only to 127.0.0.1 and localhost');
    if (!PUBLIC_PATHS.test(path)) {
      const m = /^Bearer\s+(\S+)$/i.exec(String(req.headers.authorization ?? ''));
      if (!same(m?.[1])) return refuse(res, 401, 'unauthorized', 'missing or wrong token for this dashboard proxy', 'open the address `agentbox dashboard` printed (its #token=... part signs the page in)');
    }
    const headers = { ...req.headers };
    delete headers.authorization;
    const up = request({ socketPath: opts.socketPath, method: req.method, path: req.url, headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    up.on('error', (err) => {
      if (!res.headersSent) refuse(res, 502, 'runtime_unavailable', `the daemon's socket did not answer: ${err.message}`, 'is the daemon running? agentbox daemon status');
      else res.destroy();
    });
    req.pipe(up);
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const offered = String(req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean);
    const bearer = offered.filter((p) => p.startsWith(BEARER_PROTOCOL_PREFIX));
    const token = bearer.length === 1 ? Buffer.from((bearer[0] as string).slice(BEARER_PROTOCOL_PREFIX.length), 'base64url').toString('utf8') : undefined;
    if (!hostOk(req) || !same(token)) {
      const body = JSON.stringify({ error: { code: 'unauthorized', message: 'missing or wrong token for this dashboard proxy' } });
      socket.end(`HTTP/1.1 401 ${STATUS_CODES[401]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      return;
    }
    const rest = offered.filter((p) => !p.startsWith(BEARER_PROTOCOL_PREFIX));
    const lines = [`${req.method} ${req.url} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i] as string;
      const lower = name.toLowerCase();
      if (lower === 'authorization' || lower === 'sec-websocket-protocol') continue;
      lines.push(`${name}: ${req.rawHeaders[i + 1]}`);
    }
    if (rest.length) lines.push(`Sec-WebSocket-Protocol: ${rest.join(', ')}`);
    const upstream = connect(opts.socketPath);
    upstream.on('error', () => socket.destroy());
    upstream.once('connect', () => {
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length) upstream.write(head);
      socket.pipe(upstream).pipe(socket);
    });
    socket.on('close', () => upstream.destroy());
    upstream.on('close', () => socket.destroy());
  });
  server.on('listening', () => {
    port = (server.address() as AddressInfo).port;
  });
  return server;
}

function refuse(res: ServerResponse, status: number, code: string, message: string, hint?: string): void {
  const body = JSON.stringify({ error: { code, message, ...(hint ? { hint } : {}) } });
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export function registerDashboardCommand(program: Command): void {
  program
    .command('dashboard')
    .description('serve the web dashboard as the host\'s operator: a loopback proxy to the daemon\'s Unix socket, signed in by a one-time token in the printed address')
    .option('--port <P>', 'local port on 127.0.0.1 (default: a free one)', '0')
    .option('--open', 'open the address in the default browser (xdg-open)')
    .action(async (flags: { port: string; open?: boolean }) => {
      if (process.env.AGENTBOX_URL) {
        throw new BadRequestError('AGENTBOX_URL is set: that daemon serves the dashboard itself', { hint: `open ${process.env.AGENTBOX_URL.replace(/\/$/, '')}/ in a browser and sign in with a token` });
      }
      const port = Number(flags.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new BadRequestError(`not a port: ${flags.port}`, { hint: 'e.g. --port 8787, or 0 for a free one' });
      const paths = resolvePaths(process.env);
      if (!(await answers(paths.socket))) await ensureLocalDaemon(paths);
      const token = randomBytes(24).toString('base64url');
      const server = createDashboardProxy({ socketPath: paths.socket, token });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', resolve);
      });
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/#token=${token}`;
      process.stdout.write(`agentbox dashboard (as the host's operator) at\n  ${url}\nCtrl-C stops it.\n`);
      if (flags.open) spawn('xdg-open', [url], { stdio: 'ignore', detached: true }).on('error', () => process.stderr.write('could not run xdg-open: open the address yourself\n')).unref();
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          server.close();
          server.closeAllConnections();
          resolve();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
