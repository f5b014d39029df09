/** The HTTP server: auth, routing, errors, graceful close. Listens on a Unix socket and/or TCP. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { ImageStore } from '../images/image-store.js';
import { BadRequestError } from '../core/errors.js';
import type { SandboxManager } from '../core/manager.js';
import type { Authenticator, Listener } from './auth.js';
import type { Metrics } from '../observability/metrics.js';
import { PayloadTooLargeError, sendError, sendJson } from './http-util.js';
import { openApiDocument } from './openapi.js';
import { RateLimiter } from './rate-limit.js';
import { createMcpHttpHandler, type McpHttpHandler } from '../mcp/http.js';
import { matchRoute, notFoundRoute, routes } from './routes.js';

let openApi: Record<string, unknown> | undefined;

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
}

export interface ApiServer {
  server: Server;
  /** Close MCP sessions (deleting their sandboxes); call before the manager closes. */
  closeSessions(): Promise<void>;
}

export function createApiServer(opts: ApiServerOpts): ApiServer {
  const limiter = new RateLimiter((tenant) => opts.manager.policy.tenants?.find((t) => t.name === tenant)?.quotas?.requestsPerMinute);
  const mcp = createMcpHttpHandler({
    manager: opts.manager,
    authenticate: (req) => opts.auth.authenticate(req, opts.listener),
    logger: opts.logger,
  });
  opts = { ...opts, limiter, mcp };
  const server = createServer((req, res) => void handle(req, res, opts));
  server.keepAliveTimeout = 5000;
  // Long execs stream for minutes: no request timeout, the exec's own timeout applies.
  server.requestTimeout = 0;
  return { server, closeSessions: () => mcp.close() };
}

async function handle(req: IncomingMessage, res: ServerResponse, opts: ApiServerOpts): Promise<void> {
  const started = performance.now();
  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  let url: URL;
  try {
    url = new URL(req.url ?? '/', 'http://agentbox');
  } catch {
    sendError(res, new BadRequestError('malformed URL'), opts.logger);
    return;
  }
  try {
    if (url.pathname === '/healthz') {
      const checks = await opts.manager.health();
      const runtimeOk = Object.entries(checks).some(([name, c]) => name.startsWith('runtime.') && c.ok);
      const ok = (checks.store?.ok ?? false) && runtimeOk;
      sendJson(res, ok ? 200 : 503, { ok, checks });
      return;
    }
    if (url.pathname === '/v1/openapi.json' && req.method === 'GET') {
      openApi ??= openApiDocument(routes);
      sendJson(res, 200, openApi);
      return;
    }
    if (url.pathname === '/metrics' && req.method === 'GET' && opts.metrics) {
      opts.auth.authenticate(req, opts.listener);
      const text = await opts.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': opts.metrics.registry.contentType });
      res.end(text);
      return;
    }
    if (url.pathname === '/mcp' && opts.mcp) {
      await opts.mcp(req, res);
      return;
    }
    const match = matchRoute(req.method ?? 'GET', url.pathname);
    if (match === undefined) throw notFoundRoute(url.pathname);
    if (match === 'method') {
      sendJson(res, 405, { error: { code: 'bad_request', message: `${req.method} is not allowed on ${url.pathname}`, hint: 'see /v1/openapi.json' } });
      return;
    }
    const caller = opts.auth.authenticate(req, opts.listener);
    opts.limiter?.take(caller.tenant);
    await match.handler({ req, res, params: match.params, query: url.searchParams, caller, manager: opts.manager, ...(opts.images ? { images: opts.images } : {}), signal: abort.signal });
  } catch (err) {
    discardBody(req, res);
    sendError(res, err, opts.logger, err instanceof PayloadTooLargeError ? 413 : undefined);
  } finally {
    opts.metrics?.httpRequests.inc({ listener: opts.listener, method: req.method ?? 'GET', status: String(res.statusCode) });
    opts.logger.debug({ method: req.method, path: url.pathname, status: res.statusCode, ms: Math.round(performance.now() - started) }, 'request');
  }
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
