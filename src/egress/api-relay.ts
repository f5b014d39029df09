/**
 * `http://agentbox.internal` on a cluster (ARCHITECTURE.md, "Egress in a cluster"): the egress proxy
 * runs apart from the daemons, so it cannot serve the sandbox gateway in-process as a daemon's own
 * proxies do. It relays the request to a daemon replica's API (AGENTBOX_API_URL, the daemon's
 * Service) with the sandbox it authenticated and a proof of it (egress/gateway-proof.ts); the
 * replica verifies the proof and serves it with the same gateway (api/gateway-relay.ts), so the
 * token rules stay in one place. Bodies stream both ways (exec output, uploads).
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Logger } from 'pino';
import { z } from 'zod';
import { AgentboxError, BadRequestError, HTTP_STATUS, RuntimeUnavailableError } from '../contract/errors.js';
import { SANDBOX_API_URL } from '../contract/tokens.js';
import { GATEWAY_PROOF_HEADER, GATEWAY_SANDBOX_HEADER, gatewayProof, isGatewayHeader } from './gateway-proof.js';

/** Serve one request sandbox `sandboxId` sent to agentbox.internal (its proxy credential already checked). */
export type ApiRelay = (sandboxId: string, req: IncomingMessage, res: ServerResponse) => Promise<void>;

export interface ApiRelayOpts {
  /** A daemon replica's API as the proxy reaches it (parseApiUrl()); undefined: every request gets a 503 saying how to set it. @default AGENTBOX_API_URL */
  apiUrl: URL | undefined;
  /** AGENTBOX_EGRESS_SECRET, which the daemons share. */
  secret: string;
  logger: Logger;
  /** @default 10_000 */
  connectTimeoutMs?: number;
}

export const ApiUrlSchema = z
  .string()
  .trim()
  .max(512)
  .refine((u) => URL.canParse(u), 'not a URL')
  .transform((u) => new URL(u))
  .refine((u) => u.protocol === 'http:' || u.protocol === 'https:', 'http:// or https:// only')
  .refine((u) => u.username === '' && u.password === '', 'no user:password@: the proxy proves each sandbox with a header of its own')
  .refine((u) => (u.pathname === '/' || u.pathname === '') && u.search === '' && u.hash === '', 'no path, query or fragment: requests keep their own /v1/... path')
  .describe("A daemon replica's API as the cluster egress proxy reaches it, e.g. http://agentbox.agentbox.svc:8080");

/** AGENTBOX_API_URL read; undefined when unset or empty; a BadRequestError naming the problem when malformed. */
export function parseApiUrl(text: string | undefined): URL | undefined {
  if (text === undefined || text.trim() === '') return undefined;
  const r = ApiUrlSchema.safeParse(text);
  if (r.success) return r.data;
  throw new BadRequestError(`AGENTBOX_API_URL ${JSON.stringify(text.slice(0, 100))} is not usable: ${r.error.issues.map((i) => i.message).join('; ')}`, {
    hint: 'the daemon Service, e.g. AGENTBOX_API_URL=http://agentbox.agentbox.svc:8080',
  });
}

/** Hop-by-hop headers (RFC 9110 7.6.1), the proxy's own and `expect` (this proxy answered it already): never relayed either way. */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'upgrade', 'transfer-encoding', 'expect', 'host']);
/** Who the client says it is or came through: never taken from a sandbox (the gateway headers are the proxy's alone). */
const IDENTITY_HEADERS = new Set(['forwarded', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'x-real-ip']);

/**
 * The headers a sandbox's request goes to the daemon with: its own minus hop-by-hop, those its
 * Connection names and any identity a client could claim; then the API's Host, the sandbox and its
 * proof. A body keeps its framing: Content-Length as sent, else chunked (never framed by nothing,
 * which the daemon would read as the start of another request on the same connection).
 */
export function relayHeaders(incoming: IncomingHttpHeaders, to: { host: string; sandboxId: string; proof: string }): OutgoingHttpHeaders {
  const listed = new Set(String(incoming.connection ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean));
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(incoming)) {
    if (v === undefined || HOP_HEADERS.has(k) || listed.has(k) || IDENTITY_HEADERS.has(k) || isGatewayHeader(k)) continue;
    out[k] = v;
  }
  if (incoming['transfer-encoding'] !== undefined && incoming['content-length'] === undefined) out['transfer-encoding'] = 'chunked';
  out.host = to.host;
  out[GATEWAY_SANDBOX_HEADER] = to.sandboxId;
  out[GATEWAY_PROOF_HEADER] = to.proof;
  return out;
}

export function createApiRelay(opts: ApiRelayOpts): ApiRelay {
  const apiUrl = opts.apiUrl;
  if (!apiUrl) {
    return async (sandboxId, req, res) => {
      req.resume();
      opts.logger.warn({ sandbox_id: sandboxId }, 'a sandbox called agentbox.internal, but this egress proxy has no AGENTBOX_API_URL');
      sendError(res, new RuntimeUnavailableError('this cluster\'s egress proxy does not relay agentbox.internal to the agentbox API: it has no AGENTBOX_API_URL', {
        hint: 'set AGENTBOX_API_URL on agentbox egress-proxy to the daemon Service (e.g. http://agentbox.agentbox.svc:8080) and let the proxy reach it (deploy/kubernetes/base)',
      }));
    };
  }
  const tls = apiUrl.protocol === 'https:';
  const agent = tls ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
  const connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
  return (sandboxId, req, res) =>
    new Promise<void>((resolve) => {
      const started = performance.now();
      const url = new URL(req.url ?? '/', SANDBOX_API_URL);
      const path = `${url.pathname}${url.search}`;
      const headers = relayHeaders(req.headers, { host: apiUrl.host, sandboxId, proof: gatewayProof(opts.secret, sandboxId) });
      const upstream = (tls ? httpsRequest : httpRequest)({ protocol: apiUrl.protocol, hostname: apiUrl.hostname.replace(/^\[(.*)\]$/, '$1'), port: apiUrl.port || (tls ? 443 : 80), method: req.method, path, headers, agent });
      // Only the connection is timed: an exec may stay quiet as long as its own timeout allows.
      upstream.once('socket', (socket) => {
        if (!socket.connecting) return;
        const timer = setTimeout(() => upstream.destroy(new Error(`no connection within ${connectTimeoutMs} ms`)), connectTimeoutMs);
        socket.once('connect', () => clearTimeout(timer));
        socket.once('close', () => clearTimeout(timer));
      });
      upstream.on('error', (err) => {
        if (!res.headersSent) {
          opts.logger.warn({ sandbox_id: sandboxId, api: apiUrl.origin, err: err.message }, 'could not relay agentbox.internal to the agentbox API');
          req.resume();
          sendError(res, new RuntimeUnavailableError(`the agentbox API at ${apiUrl.origin} could not be reached: ${err.message}`, {
            hint: 'check AGENTBOX_API_URL on the egress proxy and that its NetworkPolicy lets it reach the daemon Service',
          }));
        } else {
          res.destroy();
        }
      });
      upstream.on('response', (up) => {
        const out: OutgoingHttpHeaders = {};
        for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && !HOP_HEADERS.has(k)) out[k] = v;
        res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
        up.pipe(res);
        up.once('error', () => res.destroy());
      });
      req.once('error', () => upstream.destroy());
      req.pipe(upstream);
      res.once('close', () => {
        // The sandbox hung up (or the answer ended): nothing more goes either way.
        if (!res.writableFinished) upstream.destroy();
        opts.logger.debug({ sandbox_id: sandboxId, method: req.method, path: url.pathname.slice(0, 200), status: res.statusCode, ms: Math.round(performance.now() - started) }, 'agentbox.internal relayed');
        resolve();
      });
    });
}

/** The proxy's own refusals in the API's one error shape, so an SDK inside reads them like the daemon's. */
function sendError(res: ServerResponse, err: AgentboxError): void {
  const body = JSON.stringify({ error: err.toJSON() });
  res.writeHead(HTTP_STATUS[err.code], { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
  res.end(body);
}
