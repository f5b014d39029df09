/**
 * A request about another replica's host-local sandbox, passed to that replica
 * (ARCHITECTURE.md, "Replicas"): the same request — method, path and query, body and answer
 * streamed both ways, an upgrade's bytes piped — sent to the holder's advertised URL, so a client
 * behind a load balancer never has to retry by hand.
 *
 * Not an open proxy: the target is `ReplicaRoute`, built by the manager from the replicas table for a
 * sandbox whose row names that replica and that the caller sees; nothing in the request picks it. The
 * request's own credentials go along and the holder checks them again (replicas share the operator
 * token, the policy's tenants and the store's sandbox tokens).
 *
 * A holder that cannot be reached within FORWARD_CONNECT_TIMEOUT_MS, before any of the request was
 * read, is reported back (`NotForwarded`): the caller then serves the request itself — a read from
 * the shared row, or the conflict, saying why it was not forwarded.
 */
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { ElsewhereError, type ReplicaRoute } from '../core/manager.js';
import { join } from './join-streams.js';

/** Set on every forwarded request (to the forwarding replica's id); a request that has it is never forwarded again. */
export const FORWARDED_BY_HEADER = 'x-agentbox-forwarded-by';

/** Name lookup and connection to the holder, TLS included; past it the request is served here. */
export const FORWARD_CONNECT_TIMEOUT_MS = 3000;

export interface ForwardOpts {
  /** This replica's id, sent as FORWARDED_BY_HEADER. */
  self: string;
  logger: Logger;
  /** @default FORWARD_CONNECT_TIMEOUT_MS */
  connectTimeoutMs?: number;
}

/** The holder was not reached; nothing of the request was read and nothing answered: serve it here. */
export interface NotForwarded {
  reason: string;
}

/** Hop-by-hop headers (RFC 9110 7.6.1): about one connection, never passed on. */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** The replica that forwarded this request, if one did. */
export function forwardedBy(req: IncomingMessage): string | undefined {
  const v = req.headers[FORWARDED_BY_HEADER];
  return Array.isArray(v) ? v[0] : v;
}

interface Target {
  tls: boolean;
  /** For connecting: no IPv6 brackets. */
  hostname: string;
  port: number;
  /** The Host header the holder is sent: its own name, which its DNS-rebinding guard accepts. */
  host: string;
  /** A path prefix of the advertised URL (behind an ingress), without a trailing slash. */
  base: string;
}

function targetOf(url: string): Target | string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'its advertised URL does not parse';
  }
  // Not echoed: the hint goes to the client, and the URL might hold credentials.
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.username !== '' || u.password !== '') return 'its advertised URL is not a plain http(s) URL';
  const tls = u.protocol === 'https:';
  return { tls, hostname: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || (tls ? 443 : 80)), host: u.host, base: u.pathname.replace(/\/+$/, '') };
}

/** The connection's own headers, and those its Connection header names. */
function hopHeaders(headers: IncomingHttpHeaders): Set<string> {
  const names = new Set(HOP_HEADERS);
  for (const n of String(headers.connection ?? '').split(',')) if (n.trim() !== '') names.add(n.trim().toLowerCase());
  return names;
}

/**
 * The request's headers as the holder gets them. Host names the holder. Origin is dropped: this
 * replica's browser guard already accepted it, and the holder would compare it with its own name.
 * Expect is answered here (Node sends 100 Continue).
 */
function requestHeaders(req: IncomingMessage, t: Target, self: string, upgrade: boolean): OutgoingHttpHeaders {
  const drop = hopHeaders(req.headers);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || drop.has(k) || k === 'host' || k === 'origin' || k === 'expect' || k === FORWARDED_BY_HEADER || k === 'x-forwarded-for') continue;
    out[k] = v;
  }
  if (upgrade) {
    out.connection = 'Upgrade';
    out.upgrade = req.headers.upgrade ?? '';
  }
  out.host = t.host;
  const chain = [req.headers['x-forwarded-for'], req.socket.remoteAddress].filter((a): a is string => typeof a === 'string' && a !== '');
  if (chain.length > 0) out['x-forwarded-for'] = chain.join(', ');
  out[FORWARDED_BY_HEADER] = self;
  return out;
}

function responseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const drop = hopHeaders(headers);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !drop.has(k)) out[k] = v;
  return out;
}

class ConnectTimeout extends Error {
  constructor(readonly ms: number) {
    super(`no connection within ${ms} ms`);
  }
}

/** Why the holder was not reached, for the conflict's hint: short, and never a stack. */
function reasonOf(err: unknown): string {
  if (err instanceof ConnectTimeout) return `no connection within ${err.ms} ms`;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `its host name does not resolve (${code})`;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `its host is unreachable (${code})`;
    default:
      return code ? `${code}: ${(err as Error).message}`.slice(0, 200) : String((err as Error | undefined)?.message ?? err).slice(0, 200);
  }
}

/** The connection is up (TLS handshake done, for https); rejects on error or past `ms`. */
function connected(s: Socket, ms: number): Promise<void> {
  if (!(s instanceof TLSSocket) && !s.pending && !s.destroyed) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new ConnectTimeout(ms)), ms);
    const event = s instanceof TLSSocket ? 'secureConnect' : 'connect';
    const onUp = (): void => finish();
    const finish = (err?: unknown): void => {
      clearTimeout(timer);
      s.off(event, onUp);
      s.off('error', finish);
      s.off('close', onClose);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onClose = (): void => finish(new Error('the connection closed before it was made'));
    s.once(event, onUp);
    s.once('error', finish);
    s.once('close', onClose);
  });
}

/**
 * Send REQ to the holder TO and its answer back on RES, streaming both. Resolves once the answer is
 * sent (or the client went away), or with `NotForwarded` when the holder could not be reached (then
 * nothing was read or answered). A holder lost once the body began to flow: rejects with the
 * conflict before an answer started, or cuts the started answer.
 */
export function forwardRequest(req: IncomingMessage, res: ServerResponse, to: ReplicaRoute, opts: ForwardOpts): Promise<NotForwarded | undefined> {
  const t = targetOf(to.url);
  if (typeof t === 'string') return Promise.resolve({ reason: t });
  const ms = opts.connectTimeoutMs ?? FORWARD_CONNECT_TIMEOUT_MS;
  const log = { sandbox_id: to.sandboxId, replica: to.replica, url: to.url };
  return new Promise((resolve, reject) => {
    let phase: 'connecting' | 'sending' | 'answering' | 'done' = 'connecting';
    const out = (t.tls ? httpsRequest : httpRequest)({
      hostname: t.hostname,
      port: t.port,
      method: req.method ?? 'GET',
      path: `${t.base}${req.url ?? '/'}`,
      headers: requestHeaders(req, t, opts.self, false),
      // A connection per request: "connected" then means this request's, and nothing lingers.
      agent: false,
    });
    const done = (): void => {
      phase = 'done';
      resolve(undefined);
    };
    const fail = (err: unknown): void => {
      const was = phase;
      if (was === 'done') return;
      phase = 'done';
      out.destroy();
      const reason = reasonOf(err);
      if (was === 'connecting') {
        opts.logger.warn({ ...log, reason }, 'could not forward a request to the replica holding the sandbox: served here');
        resolve({ reason });
      } else if (was === 'sending' && !res.headersSent) {
        req.unpipe(out);
        opts.logger.warn({ ...log, reason }, 'the replica holding the sandbox was lost while a request was forwarded to it');
        reject(new ElsewhereError(to).because(`it was lost during the request: ${reason}`));
      } else {
        res.destroy();
        resolve(undefined);
      }
    };
    out.on('error', fail);
    out.once('socket', (s: Socket) => {
      connected(s, ms).then(() => {
        if (phase !== 'connecting') return;
        phase = 'sending';
        opts.logger.debug({ ...log, method: req.method, path: req.url }, 'forwarding a request to the replica holding the sandbox');
        req.pipe(out);
      }, fail);
    });
    out.on('response', (up: IncomingMessage) => {
      if (phase === 'done') {
        up.destroy();
        return;
      }
      phase = 'answering';
      res.writeHead(up.statusCode ?? 502, up.statusMessage, responseHeaders(up.headers));
      up.pipe(res);
      // A holder lost mid-answer: the client sees its answer cut, not a short one that looks whole.
      up.on('close', () => {
        if (!up.complete) res.destroy();
      });
    });
    req.on('error', () => out.destroy());
    res.on('close', () => {
      if (!res.writableFinished) out.destroy();
      if (phase !== 'connecting') done();
      // While connecting, the failure that destroying `out` causes resolves it as not forwarded;
      // the caller finds the client gone.
    });
  });
}

/**
 * An upgrade (a terminal's WebSocket, a port's byte stream) to the holder TO: its request head sent
 * there, then the bytes of both connections piped, the holder's answer (101 or a refusal) included.
 * Resolves once joined, or with `NotForwarded` when the holder could not be reached.
 */
export async function forwardUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, to: ReplicaRoute, opts: ForwardOpts): Promise<NotForwarded | undefined> {
  const t = targetOf(to.url);
  if (typeof t === 'string') return { reason: t };
  const ms = opts.connectTimeoutMs ?? FORWARD_CONNECT_TIMEOUT_MS;
  const conn: Socket = t.tls ? tlsConnect({ host: t.hostname, port: t.port, servername: t.hostname }) : netConnect({ host: t.hostname, port: t.port });
  const gone = (): void => {
    conn.destroy();
  };
  socket.once('close', gone);
  try {
    await connected(conn, ms);
  } catch (err) {
    conn.destroy();
    socket.off('close', gone);
    const reason = reasonOf(err);
    opts.logger.warn({ sandbox_id: to.sandboxId, replica: to.replica, url: to.url, reason }, 'could not forward an upgrade to the replica holding the sandbox: served here');
    return { reason };
  }
  socket.off('close', gone);
  const lines = [`${req.method ?? 'GET'} ${t.base}${req.url ?? '/'} HTTP/1.1`];
  for (const [k, v] of Object.entries(requestHeaders(req, t, opts.self, true))) {
    for (const one of Array.isArray(v) ? v : v === undefined ? [] : [String(v)]) lines.push(`${k}: ${one.replace(/[\r\n]/g, '')}`);
  }
  conn.write(`${lines.join('\r\n')}\r\n\r\n`);
  if (head.length > 0) conn.write(head);
  join(socket, conn);
  return undefined;
}
