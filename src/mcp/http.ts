/**
 * MCP over Streamable HTTP, for the daemon's `/mcp` path: one McpServer + transport per MCP
 * session, each bound to the token that initialized it and calling the manager in-process as that
 * caller, so policy, quotas and tenancy are those of the HTTP API. Any other token (even one of
 * the same tenant) gets 404 for the session; every request takes from the tenant's
 * requestsPerMinute like a REST call; a tenant may hold only so many sessions.
 *
 * A session ends on DELETE /mcp (its sandbox is deleted before the 200), when its transport
 * closes, after `sessionIdleMs` without requests, or on `handler.close()` (daemon shutdown).
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { pino, type Logger } from 'pino';
import { credentialDigest } from '../api/auth.js';
import type { RateLimiter } from '../api/rate-limit.js';
import { AgentboxError, BadRequestError, ForbiddenError, HTTP_STATUS } from '../contract/errors.js';
import type { Caller, SandboxManager } from '../core/manager.js';
import { managerOps, policyLimits } from './ops.js';
import { createAgentboxMcpServer, type AgentboxMcp } from './tools.js';

export interface McpHttpHandlerOpts {
  manager: SandboxManager;
  /** The caller of a request, or throws UnauthorizedError: the HTTP API's rule (Authenticator.authenticate). */
  authenticate: (req: IncomingMessage) => Caller;
  /** @default silent */
  logger?: Logger;
  /** Close a session (and delete its sandbox) after this long without requests. @default the policy's idleTimeout */
  sessionIdleMs?: number;
  /** Sessions open at once; beyond it initialize gets 503. @default 256 */
  maxSessions?: number;
  /**
   * Sessions one tenant may hold at once, so one tenant cannot take every slot; beyond it its
   * initialize gets 429. The policy's `quotas.mcpSessions` overrides it per tenant. @default 32
   */
  maxSessionsPerTenant?: number;
  /** The REST API's per-tenant request limiter: MCP requests count against the same allowance. */
  limiter?: RateLimiter;
  /** Largest POST body (a 16 MiB sandbox_write_file is ~22 MiB as base64). @default 32 MiB */
  maxBodyBytes?: number;
  /**
   * Browser origins allowed to call /mcp. A request with any other `Origin` header is refused
   * (403): DNS rebinding could otherwise let a web page drive a loopback daemon. MCP clients
   * outside a browser send no Origin. @default none
   */
  allowedOrigins?: string[];
}

/** `(req, res) => Promise<void>` for `/mcp`, plus what the daemon needs at shutdown. */
export interface McpHttpHandler {
  (req: IncomingMessage, res: ServerResponse): Promise<void>;
  /** Sessions open now. */
  readonly sessionCount: number;
  /** Close every session (deleting their sandboxes) and stop the idle sweep. Call before manager.close(). */
  close(): Promise<void>;
}

interface Session {
  id: string;
  caller: Caller;
  /** SHA-256 of the bearer token that opened the session (of the empty string for none). */
  credential: Buffer;
  transport: StreamableHTTPServerTransport;
  mcp: AgentboxMcp;
  lastActive: number;
  requests: number;
  closing?: Promise<void>;
}

const DEFAULT_MAX_BODY = 32 * 1024 * 1024;

export function createMcpHttpHandler(opts: McpHttpHandlerOpts): McpHttpHandler {
  const logger = opts.logger ?? pino({ level: 'silent' });
  const sessions = new Map<string, Session>();
  const idleMs = opts.sessionIdleMs ?? policyLimits(opts.manager.policy).idleTimeoutMs;
  const maxSessions = opts.maxSessions ?? 256;
  const perTenant = (tenant: string): number =>
    opts.manager.policy.tenants?.find((t) => t.name === tenant)?.quotas?.mcpSessions ?? opts.maxSessionsPerTenant ?? 32;
  /** Initializes in flight: counted against the caps before they become sessions. */
  const opening = new Set<Session>();
  const held = (tenant?: string): number =>
    [...sessions.values(), ...opening].filter((s) => tenant === undefined || s.caller.tenant === tenant).length;
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const allowedOrigins = new Set(opts.allowedOrigins ?? []);

  const closeSession = (s: Session, why: string): Promise<void> => {
    s.closing ??= (async () => {
      sessions.delete(s.id);
      logger.info({ session: s.mcp.session.tag, tenant: s.caller.tenant, why }, 'MCP session closed');
      await s.mcp.close();
    })();
    return s.closing;
  };

  const sweep = setInterval(() => {
    const now = Date.now();
    for (const s of sessions.values()) {
      if (s.requests === 0 && s.mcp.busy === 0 && now - s.lastActive >= idleMs) void closeSession(s, 'idle');
    }
  }, Math.max(1000, Math.min(60_000, Math.floor(idleMs / 4))));
  sweep.unref();

  const openSession = (caller: Caller, credential: Buffer): Session => {
    const id = randomUUID();
    // The label names the session without revealing its id (which, with a token, addresses it).
    const tag = `http-${createHash('sha256').update(id).digest('hex').slice(0, 16)}`;
    const mcp = createAgentboxMcpServer({ ops: managerOps(opts.manager, caller), sessionTag: tag, logger, sessionIdleMs: idleMs });
    const session: Session = { id, caller, credential, mcp, lastActive: Date.now(), requests: 0, transport: undefined as unknown as StreamableHTTPServerTransport };
    session.transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => id,
      onsessioninitialized: () => {
        sessions.set(id, session);
        logger.info({ session: tag, tenant: caller.tenant }, 'MCP session opened');
      },
      // DELETE /mcp: the sandbox is gone before the client gets its 200; the transport closes right after.
      onsessionclosed: () => mcp.session.close(),
    });
    session.transport.onclose = () => void closeSession(session, 'transport closed');
    session.transport.onerror = (err) => logger.debug({ session: tag, err: err.message }, 'MCP transport error');
    return session;
  };

  const handler = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    try {
      const origin = req.headers.origin;
      if (origin !== undefined && !allowedOrigins.has(origin)) {
        throw new ForbiddenError(`requests from origin ${origin} are not allowed on /mcp`, { hint: 'MCP clients outside a browser send no Origin header' });
      }
      const caller = opts.authenticate(req);
      // A session holds tenant-wide things (a slot of the tenant's sessions, its own sandbox): not a sandbox token's.
      if (caller.sandboxId !== undefined) throw new ForbiddenError('a sandbox token may not open MCP sessions', { hint: 'call the REST API (/v1/sandboxes/ID/...) with it' });
      opts.limiter?.take(caller.tenant);
      const credential = credentialDigest(req);
      const body = req.method === 'POST' ? await readJsonBody(req, maxBody) : undefined;
      const header = req.headers['mcp-session-id'];
      const sid = Array.isArray(header) ? header[0] : header;
      let session: Session | undefined;
      if (sid !== undefined) {
        session = sessions.get(sid);
        // A session belongs to the token that opened it: for any other token (another tenant's, or
        // a scoped token of the same tenant) it does not exist, as with sandboxes.
        if (!session || !timingSafeEqual(session.credential, credential)) {
          rpcError(res, 404, -32001, 'Session not found');
          return;
        }
      } else {
        if (req.method !== 'POST' || !isInitialize(body)) {
          rpcError(res, 400, -32000, 'Bad Request: no mcp-session-id header; a session starts with an initialize request');
          return;
        }
        const mine = held(caller.tenant);
        const cap = perTenant(caller.tenant);
        if (mine >= cap) {
          res.setHeader('retry-after', '5');
          rpcError(res, 429, -32000, `tenant ${caller.tenant} has ${mine} of its ${cap} MCP sessions open; close one with DELETE /mcp, or wait for an idle one to close`);
          return;
        }
        if (held() >= maxSessions) {
          res.setHeader('retry-after', '5');
          rpcError(res, 503, -32000, `too many MCP sessions open (${held()}); close one with DELETE /mcp`);
          return;
        }
        session = openSession(caller, credential);
        opening.add(session);
        try {
          await session.mcp.server.connect(session.transport);
        } catch (err) {
          opening.delete(session);
          throw err;
        }
      }
      // A GET is the client's standing SSE stream, open as long as it is connected: it does not
      // keep a session from being idle; running tool calls do (mcp.busy).
      const counted = req.method !== 'GET';
      if (counted) session.requests++;
      session.lastActive = Date.now();
      try {
        await session.transport.handleRequest(req, res, body);
      } finally {
        if (counted) session.requests--;
        session.lastActive = Date.now();
        opening.delete(session);
        // An initialize that failed never became a session: drop its server.
        if (sid === undefined && !sessions.has(session.id)) void session.mcp.close();
      }
    } catch (err) {
      sendError(res, err, logger);
    }
  };

  // (Object.assign would copy the getter's value once, not the getter.)
  Object.defineProperty(handler, 'sessionCount', { get: () => sessions.size, enumerable: true });
  return Object.assign(handler as typeof handler & { readonly sessionCount: number }, {
    async close() {
      clearInterval(sweep);
      await Promise.allSettled([...sessions.values()].map((s) => closeSession(s, 'server closing')));
    },
  });
}

function isInitialize(body: unknown): boolean {
  return Array.isArray(body) ? body.some((m) => isInitializeRequest(m)) : isInitializeRequest(body);
}

class BodyError extends BadRequestError {
  constructor(
    message: string,
    readonly status: number,
    readonly rpcCode: number,
  ) {
    super(message);
  }
}

async function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new BodyError(`body of ${declared} bytes is over the ${limit} byte limit`, 413, -32000);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new BodyError(`body is over the ${limit} byte limit`, 413, -32000);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new BodyError('Parse error: invalid JSON', 400, -32700);
  }
}

function rpcError(res: ServerResponse, status: number, code: number, message: string): void {
  const text = JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Body problems as JSON-RPC errors; auth and origin as the HTTP API's `{error:{code,message,hint}}`. */
function sendError(res: ServerResponse, err: unknown, logger: Logger): void {
  const code = err instanceof AgentboxError ? undefined : (err as NodeJS.ErrnoException | undefined)?.code;
  if (res.destroyed || code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE') {
    // The client hung up (or was cut for being slow): nothing to answer, and not a daemon error.
    logger.debug({ err: (err as Error | undefined)?.message }, 'MCP client went away');
    res.destroy();
    return;
  }
  if (res.headersSent) {
    logger.warn({ err }, 'MCP request failed after the response started');
    res.destroy();
    return;
  }
  if (err instanceof BodyError) {
    if (err.status === 413) res.shouldKeepAlive = false;
    rpcError(res, err.status, err.rpcCode, err.message);
    return;
  }
  const known = err instanceof AgentboxError ? err : undefined;
  if (!known) logger.error({ err }, 'MCP request failed');
  if (known?.retryAfterSec !== undefined) res.setHeader('retry-after', String(known.retryAfterSec));
  const body = known ? known.toJSON() : { code: 'internal', message: 'internal error', hint: 'see the daemon log' };
  const status = known ? HTTP_STATUS[known.code] : 500;
  const text = JSON.stringify({ error: body });
  const headers: Record<string, string | number> = { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) };
  if (status === 401) headers['www-authenticate'] = 'Bearer realm="agentbox"';
  res.writeHead(status, headers);
  res.end(text);
}
