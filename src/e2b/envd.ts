/**
 * envd, served by the daemon: the in-sandbox API of E2B's SDK, routed by the `E2b-Sandbox-Id`
 * header (E2B_SANDBOX_URL mode) under one base path. Every request must carry that sandbox's access
 * token (`X-Access-Token`, envd-token.ts); it decides the tenant and scopes the request acts with,
 * through the same manager as every other surface. `/health`, `/files`, and the Connect-RPC
 * `process.Process` and `filesystem.Filesystem` services.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { createContextValues } from '@connectrpc/connect';
import type { Logger } from 'pino';
import { AgentboxError, BadRequestError, HTTP_STATUS, NotFoundError, UnauthorizedError } from '../contract/errors.js';
import type { Caller, SandboxManager } from '../core/manager.js';
import type { RateLimiter } from '../api/rate-limit.js';
import { ENVD_REQUEST, type EnvdRequest } from './envd-context.js';
import { downloadFile, uploadFiles } from './envd-files.js';
import type { EnvdTokens } from './envd-token.js';
import { sendE2bError } from './errors.js';
import { filesystemService } from './filesystem-service.js';
import { Filesystem } from './gen/filesystem/filesystem_pb.js';
import { Process } from './gen/process/process_pb.js';
import type { ProcessRegistry } from './process-registry.js';
import { processService } from './process-service.js';
import type { PtyRegistry } from './pty-registry.js';

/** Connect's codes by name, for the answers written before a request reaches the services. */
const CONNECT_CODE_NAME: Record<number, string> = { 400: 'invalid_argument', 401: 'unauthenticated', 404: 'not_found', 429: 'resource_exhausted', 502: 'unavailable' };
/** The largest Connect request accepted (stdin chunks, paths): files go through /files. */
const RPC_READ_MAX_BYTES = 8 * 1024 * 1024;

export interface EnvdOpts {
  manager: SandboxManager;
  tokens: EnvdTokens;
  registry: ProcessRegistry;
  ptys: PtyRegistry;
  limiter: RateLimiter;
  logger: Logger;
  /** Where envd is served, e.g. `/e2b/envd`. */
  basePath: string;
}

export interface Envd {
  handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void>;
  close(): void;
}

/** A running sandbox's envd answers; an ended one answers 502 as E2B's proxy does (the SDK then says the sandbox timed out). */
class SandboxNotRunningError extends AgentboxError {
  constructor(id: string, state: string) {
    super('conflict', `sandbox ${id} is not running (${state})`, { hint: 'create a new sandbox' });
  }
}

export function createEnvd(opts: EnvdOpts): Envd {
  const { manager, logger } = opts;
  const fs = filesystemService(manager, logger);
  const rpc = connectNodeAdapter({
    routes: (router) => {
      router.service(Process, processService(manager, opts.registry, opts.ptys, logger));
      router.service(Filesystem, fs.impl);
    },
    requestPathPrefix: opts.basePath,
    readMaxBytes: RPC_READ_MAX_BYTES,
    contextValues: (req) => createContextValues().set(ENVD_REQUEST, accepted.get(req as IncomingMessage)),
  });
  const accepted = new WeakMap<IncomingMessage, EnvdRequest>();
  /** RPC responses still open (streams): cut when the surface closes, so the server can close. */
  const open = new Set<ServerResponse>();

  const authorize = (req: IncomingMessage): EnvdRequest => {
    const sandboxId = single(req.headers['e2b-sandbox-id']);
    if (!sandboxId) throw new BadRequestError('no E2b-Sandbox-Id header', { hint: 'set E2B_SANDBOX_URL to this daemon\'s envd base (see the README): the SDK then names the sandbox in this header' });
    const token = single(req.headers['x-access-token']);
    if (!token) throw new UnauthorizedError('no X-Access-Token header', { hint: 'use the envdAccessToken that Sandbox.create or Sandbox.connect returned' });
    const grant = opts.tokens.verify(sandboxId, token);
    if (!grant) throw new UnauthorizedError(`invalid access token for sandbox ${sandboxId.slice(0, 64)}`, { hint: 'each sandbox has its own token: Sandbox.connect(id) returns it' });
    const caller: Caller = { tenant: grant.tenant, actor: `e2b-envd:${grant.tenant}`, ...(grant.scopes ? { scopes: grant.scopes } : {}) };
    const sandbox = manager.get(sandboxId, { tenant: grant.tenant, actor: caller.actor });
    if (sandbox.state !== 'running') throw new SandboxNotRunningError(sandboxId, sandbox.endReason ?? sandbox.state);
    opts.limiter.take(grant.tenant);
    return { sandboxId, caller };
  };

  return {
    async handle(req, res, url) {
      const path = url.pathname.slice(opts.basePath.length) || '/';
      const isRpc = /^\/(process\.Process|filesystem\.Filesystem)\//.test(path);
      let r: EnvdRequest;
      try {
        r = authorize(req);
      } catch (err) {
        req.resume();
        if (isRpc) sendConnectHttpError(res, err, logger);
        else sendE2bError(res, err, logger, err instanceof SandboxNotRunningError ? 502 : undefined);
        return;
      }
      if (isRpc) {
        accepted.set(req, r);
        open.add(res);
        const closed = new Promise<void>((resolve) => res.once('close', resolve));
        rpc(req, res);
        await closed;
        open.delete(res);
        return;
      }
      try {
        if (path === '/health' && req.method === 'GET') {
          res.writeHead(204).end();
        } else if (path === '/files' && req.method === 'GET') {
          await downloadFile(manager, r, url.searchParams, res);
        } else if (path === '/files' && req.method === 'POST') {
          await uploadFiles(manager, r, url.searchParams, req, res);
        } else {
          throw new NotFoundError(`envd has no ${req.method} ${path.slice(0, 100)}`, { hint: 'agentbox serves /health, /files and the process and filesystem services' });
        }
      } catch (err) {
        if (!req.readableEnded) req.resume();
        sendE2bError(res, err, logger);
      }
    },
    close() {
      fs.close();
      for (const res of open) res.destroy();
      open.clear();
    },
  };
}

function single(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** An error before the Connect services: an HTTP status the Connect client maps to its code, with Connect's JSON error body. */
function sendConnectHttpError(res: ServerResponse, err: unknown, logger: Logger): void {
  const status = err instanceof SandboxNotRunningError ? 502 : err instanceof AgentboxError ? HTTP_STATUS[err.code] : 500;
  if (!(err instanceof AgentboxError)) logger.error({ err }, 'e2b: envd request failed');
  const message = err instanceof AgentboxError ? err.message : 'internal error (see the agentbox daemon log)';
  const body = JSON.stringify({ code: CONNECT_CODE_NAME[status] ?? 'internal', message });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
