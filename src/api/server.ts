/**
 * The HTTP server: browser guard, auth, routing, errors, bounds on slow clients. One server per
 * listener (the home's Unix socket, TCP), each created knowing which one it serves.
 */
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ImageStore } from '../images/image-store.js';
import { AgentboxError, BadRequestError, ForbiddenError, HTTP_STATUS } from '../contract/errors.js';
import { ElsewhereError, type Caller, type ReplicaRoute, type SandboxManager } from '../core/manager.js';
import { DEFAULT_TENANT, type Authenticator, type Listener } from './auth.js';
import { checkBrowserRequest, checkEncoding, checkJsonBody, UnsupportedMediaTypeError } from './request-guard.js';
import { statusClass, type Metrics } from '../observability/metrics.js';
import { failSpan, SpanKind, SpanStatusCode, trace, type Span, type Tracing } from '../observability/tracing.js';
import { PayloadTooLargeError, sendError, sendJson, wireError } from './http-util.js';
import { openApiDocument } from './openapi.js';
import { RateLimiter } from './rate-limit.js';
import { createMcpHttpHandler, type McpHttpHandler } from '../mcp/http.js';
import { matchRoute, matchUpgrade, notFoundRoute, routes, routeSandboxId, UpgradeRequiredError } from './routes.js';
import { forwardedBy, forwardRequest, forwardUpgrade, type NotForwarded } from './replica-forward.js';
import type { DaemonInfo } from '../contract/daemon.js';
import type { E2bSurface } from '../e2b/surface.js';
import type { PortProxy } from './port-proxy.js';
import { createDashboard, type Dashboard } from './dashboard.js';
import { isRelayed, type GatewayRelay } from './gateway-relay.js';

let openApi: Record<string, unknown> | undefined;

/** How the HTTP server bounds slow and idle clients. Every field has a default (DEFAULT_HTTP_LIMITS). */
export interface HttpLimits {
  /** Time to receive the request headers. */
  headersTimeoutMs: number;
  /** Time to receive the whole request (headers and body; not the response): minutes, for big uploads. */
  requestTimeoutMs: number;
  /** A keep-alive connection with no request for this long is closed. */
  keepAliveTimeoutMs: number;
  /**
   * A connection with no traffic for this long is closed, unless a handler is working on its
   * request and nothing waits to be sent (a client that stopped reading is cut too).
   */
  idleTimeoutMs: number;
  /** Connections open at once on this listener; more are closed on arrival. */
  maxConnections: number;
}

export const DEFAULT_HTTP_LIMITS: Readonly<HttpLimits> = Object.freeze({
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 15 * 60_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 120_000,
  maxConnections: 1024,
});

export interface ApiServerOpts {
  /** The listener this server serves; decides whether a tokenless request is the local operator. */
  listener: Listener;
  manager: SandboxManager;
  auth: Authenticator;
  logger: Logger;
  metrics?: Metrics;
  limiter?: RateLimiter;
  mcp?: McpHttpHandler;
  images?: ImageStore;
  /** `Host` names a TCP listener answers to (servedHostNames); anything else is refused. */
  hostNames?: ReadonlySet<string>;
  http?: Partial<HttpLimits>;
  /** Sent as `agentbox-version` on every response, so a CLI can tell it talks to other code (Unix socket only). */
  versionTag?: string;
  /** The daemon's state for GET /v1/daemon. */
  daemonInfo?: () => Promise<DaemonInfo>;
  /** With a ports domain: requests to `PORT-ID.<domain>` go to that sandbox's port (port-proxy.ts). */
  portProxy?: PortProxy;
  /** E2B's control plane and envd under /e2b (src/e2b). */
  e2b?: E2bSurface;
  /** A server span per request (parented on the caller's traceparent), active while the manager works. */
  tracing?: Tracing;
  /** The web dashboard at `/` (src/api/dashboard.ts); default: this package's dist/dashboard. */
  dashboard?: Dashboard;
  /**
   * Requests for agentbox.internal relayed by a cluster's egress proxy (gateway-relay.ts). Absent:
   * a request with the relay's headers is refused all the same, never served as an ordinary one.
   */
  gatewayRelay?: GatewayRelay;
}

export interface ApiServer {
  server: Server;
  /** Close MCP sessions (deleting their sandboxes); call before the manager closes. */
  closeSessions(): Promise<void>;
}

export function createApiServer(opts: ApiServerOpts): ApiServer {
  const limits: HttpLimits = { ...DEFAULT_HTTP_LIMITS, ...opts.http };
  const limiter = opts.limiter ?? new RateLimiter((tenant) => opts.manager.policy.tenants?.find((t) => t.name === tenant)?.quotas?.requestsPerMinute);
  const mcp = createMcpHttpHandler({
    manager: opts.manager,
    authenticate: (req) => opts.auth.authenticate(req, opts.listener),
    logger: opts.logger,
    limiter,
  });
  const ctx: HandlerCtx = { ...opts, dashboard: opts.dashboard ?? createDashboard(), limiter, mcp, hostNames: opts.hostNames ?? new Set(), busy: new WeakMap(), health: cachedHealth(opts.manager) };
  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      // How often Node looks for connections past those two timeouts (its default, 30 s, lets a
      // slow client hold a connection well past headersTimeout).
      connectionsCheckingInterval: Math.max(100, Math.min(5000, Math.floor(limits.headersTimeoutMs / 4))),
    },
    (req, res) => void handle(req, res, ctx),
  );
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => void handleUpgrade(req, socket, head, ctx));
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.maxConnections = limits.maxConnections;
  // Idle connections are cut, but not one whose request a handler is working on: a buffered exec
  // may be quiet for as long as its own timeout allows (SSE streams also send heartbeats). One
  // whose answer waits unsent is a client that stopped reading: cut as well.
  server.setTimeout(limits.idleTimeoutMs, (socket: Socket) => {
    if ((ctx.busy.get(socket) ?? 0) === 0 || socket.writableLength > 0) socket.destroy();
  });
  return { server, closeSessions: () => mcp.close() };
}

interface HandlerCtx extends ApiServerOpts {
  dashboard: Dashboard;
  limiter: RateLimiter;
  mcp: McpHttpHandler;
  hostNames: ReadonlySet<string>;
  /** Sockets whose request a handler is working on. */
  busy: WeakMap<Socket, number>;
  /** The manager's health, probed at most once a second however often /healthz is asked (it needs no token). */
  health: () => Promise<Record<string, { ok: boolean; detail?: string }>>;
}

function cachedHealth(manager: SandboxManager, ttlMs = 1000): HandlerCtx['health'] {
  let last: { at: number; value: Promise<Record<string, { ok: boolean; detail?: string }>> } | undefined;
  return () => {
    const now = Date.now();
    if (!last || now - last.at >= ttlMs) last = { at: now, value: manager.health() };
    return last.value;
  };
}

/** The host's operator: the Unix socket, or the AGENTBOX_TOKEN bearer (not a policy tenant, not a scoped token). */
function isOperator(caller: Caller, listener: Listener): boolean {
  if (caller.tenant !== DEFAULT_TENANT || caller.scopes !== undefined || caller.sandboxId !== undefined) return false;
  return listener === 'unix' || caller.actor !== 'anonymous';
}

/** Paths polled by probes and scrapers: no span (they would drown the traces). */
const UNTRACED = new Set(['/healthz', '/metrics']);

/**
 * A request, as a server span `HTTP <METHOD> <route template>` when tracing is on: parented on the
 * caller's `traceparent`, active while the handler (and so the manager) works, ended once answered.
 * A sandbox port's traffic (the port proxy) is the app's own, not the API's: not traced.
 */
async function handle(req: IncomingMessage, res: ServerResponse, opts: HandlerCtx): Promise<void> {
  const tracing = opts.tracing;
  const path = (req.url ?? '/').split('?')[0] ?? '/';
  if (!tracing?.enabled || UNTRACED.has(path) || opts.portProxy?.target(req)) return serve(req, res, opts, undefined);
  const method = req.method ?? 'GET';
  const parent = tracing.extract(req.headers);
  const span = tracing.startSpan(`HTTP ${method}`, { 'http.request.method': method, 'url.scheme': 'http', 'agentbox.listener': opts.listener }, { kind: SpanKind.SERVER, parent });
  try {
    await tracing.with(trace.setSpan(parent, span), () => serve(req, res, opts, span));
  } finally {
    span.setAttribute('http.response.status_code', res.statusCode);
    if (res.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    span.end();
  }
}

/** Name the request's span by its route template (never the raw path: ids would make every name unique). */
function routed(span: Span | undefined, method: string, template: string, params?: Record<string, string>): void {
  if (!span) return;
  span.updateName(`HTTP ${method} ${template}`);
  span.setAttribute('http.route', template);
  if (params?.id !== undefined && template.startsWith('/v1/sandboxes/')) span.setAttribute('agentbox.sandbox.id', params.id.slice(0, 64));
}

async function serve(req: IncomingMessage, res: ServerResponse, opts: HandlerCtx, span: Span | undefined): Promise<void> {
  const started = performance.now();
  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  if (opts.versionTag) res.setHeader('agentbox-version', opts.versionTag);
  let url: URL;
  try {
    checkEncoding(req.url ?? '/');
    url = new URL(req.url ?? '/', 'http://agentbox');
  } catch (err) {
    discardBody(req, res);
    sendError(res, err instanceof AgentboxError ? err : new BadRequestError('malformed URL'), opts.logger);
    return;
  }
  // The duration histogram's route label: a route table template, or a fixed name, never the raw path.
  let route = 'unmatched';
  const socket = req.socket;
  const markBusy = (): void => {
    opts.busy.set(socket, (opts.busy.get(socket) ?? 0) + 1);
    res.once('close', () => opts.busy.set(socket, Math.max(0, (opts.busy.get(socket) ?? 1) - 1)));
  };
  try {
    // First: a request that says it came through a cluster's egress proxy is that sandbox's gateway
    // request or nothing (its proof is checked before any route, guard or token is looked at).
    if (isRelayed(req)) {
      route = 'gateway-relay';
      if (!opts.gatewayRelay) throw new ForbiddenError('this server does not take requests relayed by a cluster egress proxy', { hint: 'send no x-agentbox-gateway-* headers' });
      markBusy();
      await opts.gatewayRelay(req, res);
      return;
    }
    // A sandbox's port (its own origin, not the API's): before the API's browser guard.
    const portTarget = opts.portProxy?.target(req);
    if (portTarget && opts.portProxy) {
      route = 'port-proxy';
      markBusy();
      await opts.portProxy.handle(req, res, portTarget);
      return;
    }
    checkBrowserRequest(req, { listener: opts.listener, hostNames: opts.hostNames });
    if (url.pathname === '/healthz') {
      route = '/healthz';
      // Without a token over TCP: ok or not, nothing about runtimes, versions or paths.
      const caller = req.headers.authorization || opts.listener === 'unix' ? opts.auth.authenticate(req, opts.listener) : undefined;
      const checks = await opts.health();
      const runtimeOk = Object.entries(checks).some(([name, c]) => name.startsWith('runtime.') && c.ok);
      const ok = (checks.store?.ok ?? false) && runtimeOk;
      sendJson(res, ok ? 200 : 503, caller && isOperator(caller, opts.listener) ? { ok, checks } : { ok });
      return;
    }
    if (opts.dashboard.owns(url.pathname)) {
      // The dashboard's page and files: no token (they hold no data; the page calls the API with one).
      discardBody(req, res);
      opts.dashboard.handle(req, res, url.pathname);
      return;
    }
    if (url.pathname === '/v1/openapi.json' && req.method === 'GET') {
      route = '/v1/openapi.json';
      routed(span, 'GET', '/v1/openapi.json');
      openApi ??= openApiDocument(routes);
      sendJson(res, 200, openApi);
      return;
    }
    if (url.pathname === '/metrics' && req.method === 'GET' && opts.metrics) {
      route = '/metrics';
      const caller = opts.auth.authenticate(req, opts.listener);
      opts.limiter.take(caller.tenant);
      // The operator sees the whole registry; a tenant only its own series (tenant-labelled families).
      if (caller.labels !== undefined || caller.sandboxId !== undefined) {
        throw new ForbiddenError(`this token sees only ${caller.sandboxId !== undefined ? 'its own sandbox' : 'sandboxes with its labels'}; metrics count the whole tenant's`, { hint: 'use a token of the tenant without labels, or list your sandboxes with GET /v1/sandboxes' });
      }
      const text = isOperator(caller, opts.listener) ? await opts.metrics.registry.metrics() : await opts.metrics.tenantView(caller.tenant);
      res.writeHead(200, { 'content-type': opts.metrics.registry.contentType });
      res.end(text);
      return;
    }
    if (url.pathname === '/mcp' && opts.mcp) {
      route = '/mcp';
      routed(span, req.method ?? 'GET', '/mcp');
      markBusy();
      await opts.mcp(req, res);
      return;
    }
    if (opts.e2b?.owns(url.pathname)) {
      route = '/e2b';
      // E2B's own routes are matched inside its surface: one template for all of them.
      routed(span, req.method ?? 'GET', '/e2b/*');
      markBusy();
      await opts.e2b.handle(req, res, url, opts.listener);
      return;
    }
    const match = matchRoute(req.method ?? 'GET', url.pathname);
    if (match === undefined) throw notFoundRoute(url.pathname);
    if (match === 'method') {
      route = 'method-not-allowed';
      sendJson(res, 405, { error: { code: 'bad_request', message: `${req.method} is not allowed on ${url.pathname}`, hint: 'see /v1/openapi.json' } });
      return;
    }
    route = match.template;
    routed(span, req.method ?? 'GET', match.template, match.params);
    if (match.takesJson) checkJsonBody(req);
    const caller = opts.auth.authenticate(req, opts.listener);
    span?.setAttribute('agentbox.tenant', caller.tenant);
    opts.limiter.take(caller.tenant);
    markBusy();
    const elsewhere = await forwardElsewhere(req, opts, routeSandboxId(match.template, match.params), caller, (to, self) => forwardRequest(req, res, to, { self, logger: opts.logger }));
    if (elsewhere.forwarded) return;
    await servedHere(elsewhere.reason, () =>
      match.handler({
        req,
        res,
        params: match.params,
        query: url.searchParams,
        caller,
        manager: opts.manager,
        ...(opts.images ? { images: opts.images } : {}),
        signal: abort.signal,
        operator: isOperator(caller, opts.listener),
        ...(opts.daemonInfo ? { daemonInfo: opts.daemonInfo } : {}),
      }),
    );
  } catch (err) {
    if (clientWentAway(err, res)) {
      // A client that hung up (or was cut for being slow) is not a daemon error.
      opts.logger.debug({ method: req.method, path: url.pathname, err: (err as Error).message }, 'client went away');
      res.destroy();
      return;
    }
    discardBody(req, res);
    sendError(res, err, opts.logger, statusFor(err));
    if (span && res.statusCode >= 500) failSpan(span, err);
  } finally {
    opts.metrics?.httpRequests.inc({ listener: opts.listener, method: req.method ?? 'GET', status: String(res.statusCode) });
    // A streamed answer (SSE, a file) is timed to its end: the handler returns once it is sent.
    opts.metrics?.httpSeconds.observe({ listener: opts.listener, method: metricMethod(req.method), route, status_class: statusClass(res.statusCode) }, (performance.now() - started) / 1000);
    opts.logger.debug({ method: req.method, path: url.pathname, status: res.statusCode, ms: Math.round(performance.now() - started) }, 'request');
  }
}

/**
 * An HTTP upgrade (a terminal's WebSocket, a port's byte stream): the same guards and authentication
 * as any request, then the route's handler takes the connection. Refusals are plain HTTP answers.
 */
async function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, opts: HandlerCtx): Promise<void> {
  socket.on('error', () => socket.destroy());
  let path = '/';
  try {
    checkEncoding(req.url ?? '/');
    const url = new URL(req.url ?? '/', 'http://agentbox');
    path = url.pathname;
    // agentbox.internal serves no upgrades in-process either (its proxy drops Upgrade when relaying).
    if (isRelayed(req)) throw new ForbiddenError('a request relayed by a cluster egress proxy cannot be upgraded', { hint: 'agentbox.internal serves plain /v1 requests only' });
    const portTarget = opts.portProxy?.target(req);
    if (portTarget && opts.portProxy) {
      await opts.portProxy.upgrade(req, socket, head, portTarget);
      return;
    }
    checkBrowserRequest(req, { listener: opts.listener, hostNames: opts.hostNames });
    const match = matchUpgrade(url.pathname);
    if (!match) throw notFoundRoute(url.pathname);
    const wanted = String(req.headers.upgrade ?? '').toLowerCase();
    if (wanted !== match.upgrade) throw new BadRequestError(`${url.pathname} takes Upgrade: ${match.upgrade}, not ${JSON.stringify(wanted)}`);
    const caller = opts.auth.authenticate(req, opts.listener);
    opts.limiter.take(caller.tenant);
    opts.logger.debug({ path, upgrade: wanted }, 'upgrade');
    const elsewhere = await forwardElsewhere(req, opts, routeSandboxId(match.template, match.params), caller, (to, self) => forwardUpgrade(req, socket, head, to, { self, logger: opts.logger }));
    if (elsewhere.forwarded) return;
    await servedHere(elsewhere.reason, () => match.handler({ req, socket, head, params: match.params, query: url.searchParams, caller, manager: opts.manager, operator: isOperator(caller, opts.listener) }));
  } catch (err) {
    refuseUpgrade(socket, err, opts, path);
  }
}

/**
 * A request about sandbox SANDBOXID (undefined: not a sandbox's route) that another replica holds
 * goes there when that replica is alive and said where it listens (`manager.ownerElsewhere`, which
 * also answers nothing for a sandbox the caller does not see: that stays the local not_found).
 * Otherwise why it was not (no reason: no other replica involved), for the conflict it then gets here.
 */
async function forwardElsewhere(
  req: IncomingMessage,
  opts: HandlerCtx,
  sandboxId: string | undefined,
  caller: Caller,
  forward: (to: ReplicaRoute, self: string) => Promise<NotForwarded | undefined>,
): Promise<{ forwarded: true } | { forwarded: false; reason?: string }> {
  const self = opts.manager.replicaId;
  const to = sandboxId === undefined || self === null ? undefined : opts.manager.ownerElsewhere(sandboxId, caller);
  if (!to || self === null) return { forwarded: false };
  const by = forwardedBy(req);
  // The loop guard: a replica that is wrong about the holder (or two that each think the other
  // holds it) answers the conflict rather than bouncing the request.
  if (by !== undefined) return { forwarded: false, reason: `it came forwarded by ${JSON.stringify(by.slice(0, 64))}, and a request is forwarded once at most` };
  // The Unix socket's tokenless operator is nobody on the holder's TCP listener.
  if (opts.listener === 'unix' && req.headers.authorization === undefined) return { forwarded: false, reason: 'a request on the Unix socket without a token has no credential for that replica' };
  const r = await forward(to, self);
  return r === undefined ? { forwarded: true } : { forwarded: false, reason: r.reason };
}

/** Serve a request here; a conflict for another replica's sandbox says why it was not forwarded (NOTFORWARDED). */
async function servedHere(notForwarded: string | undefined, serveIt: () => Promise<void>): Promise<void> {
  try {
    await serveIt();
  } catch (err) {
    throw notForwarded !== undefined && err instanceof ElsewhereError ? err.because(notForwarded) : err;
  }
}

/** An HTTP answer on a connection that was not upgraded: the error's status and the one error shape. */
function refuseUpgrade(socket: Duplex, err: unknown, opts: HandlerCtx, path: string): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const known = err instanceof AgentboxError ? err : undefined;
  if (!known) opts.logger.error({ err, path }, 'unhandled error in an upgrade');
  const status = statusFor(err) ?? (known ? HTTP_STATUS[known.code] : 500);
  const body = JSON.stringify({ error: wireError(err) });
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** A method as a label: any other token a client sends is `other` (a label of few values). */
function metricMethod(method: string | undefined): string {
  return method && METHODS.has(method) ? method : 'other';
}

function clientWentAway(err: unknown, res: ServerResponse): boolean {
  if (err instanceof AgentboxError) return false;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return res.destroyed || code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'EPIPE';
}

/** The status of the API's own error classes that are not one of the contract's codes' statuses. */
export function statusFor(err: unknown): number | undefined {
  if (err instanceof PayloadTooLargeError) return 413;
  if (err instanceof UnsupportedMediaTypeError) return 415;
  if (err instanceof UpgradeRequiredError) return 426;
  return undefined;
}

const MAX_DRAIN = 16 * 1024 * 1024;

/**
 * After an early error the client may still be sending its body: read a modest one to the end so
 * it sees our answer rather than a reset; for a huge one close the connection after answering.
 */
function discardBody(req: IncomingMessage, res: ServerResponse): void {
  if (req.readableEnded) return;
  const declared = Number(req.headers['content-length'] ?? Number.NaN);
  if (Number.isFinite(declared) && declared <= MAX_DRAIN) req.resume();
  else res.shouldKeepAlive = false;
}
