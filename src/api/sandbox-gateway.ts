/**
 * The API as code inside a sandbox reaches it (ARCHITECTURE.md, "Sandbox tokens"): the sandbox's
 * egress proxy hands over every plain-HTTP request for `http://agentbox.internal` (its one reserved
 * host), and this serves it from the /v1 route table in-process, as the caller of a sandbox token
 * of THAT sandbox and nothing else. No request here is ever tokenless, a tenant's token, the
 * operator, or another sandbox's token: each is refused before any route runs. Only the /v1 routes:
 * not /metrics, /mcp, /e2b, the dashboard or upgrades.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { BadRequestError, ForbiddenError, UnauthorizedError } from '../contract/errors.js';
import { SANDBOX_API_URL, SANDBOX_TOKEN_PREFIX } from '../contract/tokens.js';
import type { Caller, SandboxManager } from '../core/manager.js';
import { bearerToken, type Authenticator } from './auth.js';
import { sendError, sendJson } from './http-util.js';
import type { RateLimiter } from './rate-limit.js';
import { checkJsonBody } from './request-guard.js';
import { matchRoute, notFoundRoute } from './routes.js';
import { statusFor } from './server.js';

export interface SandboxGatewayOpts {
  manager: SandboxManager;
  auth: Authenticator;
  limiter: RateLimiter;
  logger: Logger;
}

/** Serve one request that sandbox `sandboxId`'s proxy received for agentbox.internal. */
export type SandboxGateway = (sandboxId: string, req: IncomingMessage, res: ServerResponse) => Promise<void>;

export function createSandboxGateway(opts: SandboxGatewayOpts): SandboxGateway {
  return async (sandboxId, req, res) => {
    const started = performance.now();
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    let path = '/';
    try {
      const url = new URL(req.url ?? '/', SANDBOX_API_URL);
      path = url.pathname;
      const caller = gatewayCaller(opts.auth, req, sandboxId);
      const match = matchRoute(req.method ?? 'GET', url.pathname);
      if (match === undefined) throw notFoundRoute(url.pathname);
      if (match === 'method') throw new MethodNotAllowedError(`${req.method} is not allowed on ${url.pathname}`, { hint: 'see /v1/openapi.json' });
      if (match.takesJson) checkJsonBody(req);
      opts.limiter.take(caller.tenant);
      await match.handler({ req, res, params: match.params, query: url.searchParams, caller, manager: opts.manager, signal: abort.signal, operator: false });
    } catch (err) {
      if (!req.readableEnded) req.resume();
      if (res.headersSent) res.destroy();
      else if (err instanceof MethodNotAllowedError) sendJson(res, 405, { error: { code: 'bad_request', message: err.message, hint: err.hint } });
      else sendError(res, err, opts.logger, statusFor(err));
    } finally {
      opts.logger.debug({ sandbox_id: sandboxId, method: req.method, path: path.slice(0, 200), status: res.statusCode, ms: Math.round(performance.now() - started) }, 'sandbox gateway request');
    }
  };
}

class MethodNotAllowedError extends BadRequestError {}

/** A live sandbox token of this very sandbox, or a 401/403: never any other identity. */
function gatewayCaller(auth: Authenticator, req: IncomingMessage, sandboxId: string): Caller {
  // A page in the sandbox's own browser (a desktop's Chromium) is not a client of the API.
  if (req.headers.origin !== undefined) throw new ForbiddenError('requests from a browser page are not served at agentbox.internal', { hint: 'call it from a program, not from a web page' });
  const mint = `POST /v1/sandboxes/${sandboxId}/tokens mints one (from outside, with the manage scope)`;
  const header = req.headers.authorization;
  if (!header) throw new UnauthorizedError('missing bearer token: agentbox.internal takes a sandbox token of this sandbox', { hint: `send Authorization: Bearer <token>; ${mint}` });
  const token = bearerToken(header);
  if (token === undefined || !token.startsWith(SANDBOX_TOKEN_PREFIX)) {
    throw new UnauthorizedError('agentbox.internal takes only a sandbox token of this sandbox', { hint: `${SANDBOX_TOKEN_PREFIX}...; ${mint}` });
  }
  const caller = auth.authenticateToken(token);
  if (caller.sandboxId !== sandboxId) throw new ForbiddenError('this token belongs to another sandbox', { hint: `use a token of ${sandboxId}` });
  return caller;
}
