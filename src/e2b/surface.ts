/**
 * The E2B drop-in surface on the daemon's HTTP server: E2B's control plane at `/e2b` (E2B_API_URL)
 * and envd at `/e2b/envd` (E2B_SANDBOX_URL). The control plane authenticates `X-API-KEY` as a
 * tenant token through the daemon's Authenticator, exactly as a bearer token; envd requests carry
 * their sandbox's access token instead. Errors go out in E2B's shapes. `getHost(port)` reaches a
 * sandbox's port through the daemon's port proxy, under E2B's traffic rules (traffic.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { ForbiddenError, UnauthorizedError } from '../contract/errors.js';
import type { Caller, SandboxManager } from '../core/manager.js';
import { DEFAULT_TENANT, type Authenticator, type Listener } from '../api/auth.js';
import type { RateLimiter } from '../api/rate-limit.js';
import type { PortTarget } from '../api/port-proxy.js';
import { handleControlPlane, NO_PORTS_DOMAIN } from './control-plane.js';
import { createEnvd, type Envd } from './envd.js';
import type { EnvdTokens } from './envd-token.js';
import { sendE2bError } from './errors.js';
import { ProcessRegistry } from './process-registry.js';
import { PtyRegistry } from './pty-registry.js';
import { E2bTraffic } from './traffic.js';

export const E2B_BASE = '/e2b';
export const ENVD_BASE = `${E2B_BASE}/envd`;

export interface E2bSurfaceOpts {
  manager: SandboxManager;
  auth: Authenticator;
  tokens: EnvdTokens;
  limiter: RateLimiter;
  logger: Logger;
  /**
   * The port proxy's `domain:tcpPort` (`serve --ports-domain`), asked per answer (the TCP port is
   * known once the daemon listens): E2B's `domain`, so `getHost(port)` is `PORT-ID.domain:tcpPort`.
   * Absent: no port proxy, and `getHost` names a host that cannot resolve (control-plane.ts).
   */
  portsHost?: () => string;
  /** The daemon's home: E2B's traffic rules are kept in it (`e2b-traffic/`). Absent: in memory only. */
  home?: string;
}

export interface E2bSurface {
  /** Whether this request is the surface's (its path is under /e2b). */
  owns(pathname: string): boolean;
  /** Serve it; never throws (errors are answered in E2B's shapes). */
  handle(req: IncomingMessage, res: ServerResponse, url: URL, listener: Listener): Promise<void>;
  /** The port proxy's `fallback`: E2B's traffic rules (public ports, traffic tokens) for sandboxes made here. */
  portAccess(t: PortTarget, trafficToken: string | undefined): Promise<Duplex | undefined>;
  /** Kill the commands and hang up the PTYs it tracks, and stop its watchers (before the manager closes: it waits for running execs). */
  close(): void;
}

export function createE2bSurface(opts: E2bSurfaceOpts): E2bSurface {
  const logger = opts.logger.child({ surface: 'e2b' });
  const registry = new ProcessRegistry(opts.manager, logger);
  const ptys = new PtyRegistry(opts.manager, logger);
  const traffic = new E2bTraffic({ manager: opts.manager, tokens: opts.tokens, logger, ...(opts.home !== undefined ? { dir: join(opts.home, 'e2b-traffic') } : {}) });
  const envd: Envd = createEnvd({ manager: opts.manager, tokens: opts.tokens, registry, ptys, limiter: opts.limiter, logger, basePath: ENVD_BASE });
  return {
    owns: (pathname) => pathname === E2B_BASE || pathname.startsWith(`${E2B_BASE}/`),
    async handle(req, res, url, listener) {
      if (url.pathname === ENVD_BASE || url.pathname.startsWith(`${ENVD_BASE}/`)) {
        await envd.handle(req, res, url);
        return;
      }
      try {
        const caller = controlPlaneCaller(opts.auth, req, listener);
        opts.limiter.take(caller.tenant);
        const domain = opts.portsHost?.() ?? NO_PORTS_DOMAIN;
        await handleControlPlane({ req, res, caller, manager: opts.manager, tokens: opts.tokens, traffic, domain }, url.pathname.slice(E2B_BASE.length) || '/', url.searchParams);
      } catch (err) {
        if (!req.readableEnded) req.resume();
        sendE2bError(res, err, logger);
      }
    },
    portAccess: (t, trafficToken) => traffic.open(t, trafficToken),
    close() {
      registry.close();
      ptys.close();
      envd.close();
    },
  };
}

/**
 * The caller of a control-plane request: `X-API-KEY` checked as a bearer token would be (then
 * `Authorization: Bearer`, E2B's access-token form). A daemon with no tokens at all (loopback,
 * single user) accepts any key, since the SDK refuses to run without one.
 */
function controlPlaneCaller(auth: Authenticator, req: IncomingMessage, listener: Listener): Caller {
  const caller = apiKeyCaller(auth, req, listener);
  // E2B hands out envd tokens that live as long as the sandbox: nothing a short-lived sandbox token may obtain.
  if (caller.sandboxId !== undefined) throw new ForbiddenError('a sandbox token may not use the E2B API', { hint: 'call agentbox\'s own API (/v1/sandboxes/ID/...) with it' });
  return caller;
}

function apiKeyCaller(auth: Authenticator, req: IncomingMessage, listener: Listener): Caller {
  const key = req.headers['x-api-key'];
  const token = Array.isArray(key) ? key[0] : key;
  if (token !== undefined && token !== '') {
    if (!auth.required) return { tenant: DEFAULT_TENANT, actor: listener === 'unix' ? 'local' : 'anonymous' };
    return auth.authenticateToken(token);
  }
  if (req.headers.authorization || listener === 'unix' || !auth.required) return auth.authenticate(req, listener);
  throw new UnauthorizedError('missing X-API-KEY header', { hint: 'set E2B_API_KEY to a tenant token of the agentbox policy' });
}
