/** The /v1 routes (ARCHITECTURE: Contracts). Each handler validates its input, then calls the manager. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { BadRequestError, NotFoundError } from '../core/errors.js';
import type { Caller, SandboxManager } from '../core/manager.js';
import type { StoredExec } from '../store/store.js';
import { CreateSandboxRequestSchema, ExecRequestSchema } from '../core/requests.js';
import { parseWith, readJson, sendJson } from './http-util.js';
import { sendEvent, startSse } from './sse.js';

export interface RouteCtx {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  caller: Caller;
  manager: SandboxManager;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
}

type Handler = (ctx: RouteCtx) => Promise<void>;

interface Route {
  method: string;
  pattern: RegExp;
  keys: string[];
  handler: Handler;
}

const routes: Route[] = [];

function route(method: string, path: string, handler: Handler): void {
  const keys: string[] = [];
  const pattern = new RegExp(
    `^${path.replace(/\{(\w+)\}/g, (_m, k: string) => {
      keys.push(k);
      return '([^/]+)';
    })}$`,
  );
  routes.push({ method, pattern, keys, handler });
}

/** Find the handler for a request; `undefined` path match means 404, a method mismatch 405. */
export function matchRoute(method: string, path: string): { handler: Handler; params: Record<string, string> } | 'method' | undefined {
  let pathMatched = false;
  for (const r of routes) {
    const m = r.pattern.exec(path);
    if (!m) continue;
    pathMatched = true;
    if (r.method !== method) continue;
    const params: Record<string, string> = {};
    r.keys.forEach((k, i) => (params[k] = decodeURIComponent(m[i + 1] as string)));
    return { handler: r.handler, params };
  }
  return pathMatched ? 'method' : undefined;
}

const LabelSelectorSchema = z.string().regex(/^[^=,]+=[^=,]*(,[^=,]+=[^=,]*)*$/, 'labels as k=v,k2=v2');

function requirePath(query: URLSearchParams): string {
  const path = query.get('path');
  if (!path) throw new BadRequestError('missing ?path=', { hint: 'give an absolute path inside the sandbox, e.g. ?path=/workspace/out.txt' });
  return path;
}

function id(ctx: RouteCtx): string {
  return ctx.params.id as string;
}

function execView(e: StoredExec, withOutput: boolean): Record<string, unknown> {
  return {
    execId: e.id,
    cmd: e.cmd,
    startedAt: e.startedAt,
    endedAt: e.endedAt,
    exitCode: e.exitCode,
    timedOut: e.timedOut,
    oomKilled: e.oomKilled,
    truncated: e.truncated,
    durationMs: e.durationMs,
    ...(withOutput ? { stdout: e.stdoutTail?.toString('utf8') ?? '', stderr: e.stderrTail?.toString('utf8') ?? '' } : {}),
  };
}

route('POST', '/v1/sandboxes', async (ctx) => {
  const body = await readJson(ctx.req, CreateSandboxRequestSchema);
  sendJson(ctx.res, 201, await ctx.manager.create(body, ctx.caller));
});

route('GET', '/v1/sandboxes', async (ctx) => {
  const selector = ctx.query.get('labels');
  const labels = selector ? Object.fromEntries(parseWith(LabelSelectorSchema, selector).split(',').map((kv) => kv.split('=') as [string, string])) : undefined;
  const all = ctx.query.get('all') === '1' || ctx.query.get('all') === 'true';
  sendJson(ctx.res, 200, { sandboxes: ctx.manager.list(ctx.caller, { ...(labels ? { labels } : {}), all }) });
});

route('GET', '/v1/sandboxes/{id}', async (ctx) => {
  sendJson(ctx.res, 200, ctx.manager.get(id(ctx), ctx.caller));
});

route('DELETE', '/v1/sandboxes/{id}', async (ctx) => {
  sendJson(ctx.res, 200, await ctx.manager.delete(id(ctx), ctx.caller));
});

route('POST', '/v1/sandboxes/{id}/stop', async (ctx) => {
  sendJson(ctx.res, 200, await ctx.manager.stop(id(ctx), ctx.caller));
});

route('POST', '/v1/sandboxes/{id}/exec', async (ctx) => {
  const body = await readJson(ctx.req, ExecRequestSchema, 17 * 1024 * 1024);
  const wantsStream = (ctx.req.headers.accept ?? '').includes('text/event-stream');
  if (!wantsStream) {
    sendJson(ctx.res, 200, await ctx.manager.exec(id(ctx), body, ctx.caller, ctx.signal));
    return;
  }
  const { execId, events } = ctx.manager.execStream(id(ctx), body, ctx.caller, ctx.signal);
  startSse(ctx.res);
  await sendEvent(ctx.res, 'start', { execId });
  for await (const ev of events) {
    if (ev.type === 'exit') await sendEvent(ctx.res, 'exit', ev.result);
    else await sendEvent(ctx.res, ev.type, { data: ev.data.toString('base64') });
  }
  ctx.res.end();
});

route('GET', '/v1/sandboxes/{id}/execs', async (ctx) => {
  const limit = Math.min(Number(ctx.query.get('limit') ?? 100) || 100, 1000);
  sendJson(ctx.res, 200, { execs: ctx.manager.execHistory(id(ctx), ctx.caller, limit).map((e) => execView(e, false)) });
});

route('GET', '/v1/sandboxes/{id}/execs/{execId}', async (ctx) => {
  sendJson(ctx.res, 200, execView(ctx.manager.execRecord(id(ctx), ctx.params.execId as string, ctx.caller), true));
});

route('PUT', '/v1/sandboxes/{id}/files', async (ctx) => {
  const bytes = await ctx.manager.writeFile(id(ctx), requirePath(ctx.query), ctx.req, ctx.caller);
  sendJson(ctx.res, 200, { path: ctx.query.get('path'), bytes });
});

route('GET', '/v1/sandboxes/{id}/files', async (ctx) => {
  const stream = await ctx.manager.readFile(id(ctx), requirePath(ctx.query), ctx.caller);
  ctx.res.writeHead(200, { 'content-type': 'application/octet-stream' });
  await pipeline(stream, ctx.res);
});

route('DELETE', '/v1/sandboxes/{id}/files', async (ctx) => {
  await ctx.manager.removePath(id(ctx), requirePath(ctx.query), ctx.caller);
  sendJson(ctx.res, 200, { path: ctx.query.get('path'), removed: true });
});

route('GET', '/v1/sandboxes/{id}/files/list', async (ctx) => {
  const path = ctx.query.get('path') ?? '/workspace';
  sendJson(ctx.res, 200, { path, entries: await ctx.manager.listDir(id(ctx), path, ctx.caller) });
});

route('GET', '/v1/sandboxes/{id}/egress', async (ctx) => {
  const sb = ctx.manager.get(id(ctx), ctx.caller);
  sendJson(ctx.res, 200, { sandboxId: sb.id, egress: sb.egress, log: [] });
});

export function notFoundRoute(path: string): NotFoundError {
  return new NotFoundError(`no route ${path}`, { hint: 'routes are under /v1; see /v1/openapi.json' });
}
