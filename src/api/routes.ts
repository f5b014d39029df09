/** The /v1 routes (ARCHITECTURE: Contracts). Each handler validates its input, then calls the manager. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { AgentboxError, BadRequestError, ForbiddenError, NotFoundError, RuntimeUnavailableError } from '../contract/errors.js';
import { DaemonInfoSchema, type DaemonInfo } from '../contract/daemon.js';
import type { Caller, SandboxManager } from '../core/manager.js';
import type { ExecEvent } from '../contract/model.js';
import { DeniedHostSchema, DirEntrySchema, EgressEventSchema, EgressSchema, ExecRecordSchema, ExecResultSchema, KillResultSchema, ProcessInfoSchema, SandboxSchema, SnapshotSchema } from '../contract/model.js';
import { PauseRequestSchema } from '../contract/requests.js';
import { CreateSandboxRequestSchema, CreateSnapshotRequestSchema, EgressAllowRequestSchema, ExecRequestSchema, ForkRequestSchema, KillProcessRequestSchema, ProcessIdSchema, PullImageRequestSchema } from '../contract/requests.js';
import { ImageInfoSchema } from '../contract/images.js';
import type { ImageStore } from '../images/image-store.js';
import { parseWith, readJson, sendJson, wireError } from './http-util.js';
import { sendEvent, startSse } from './sse.js';
import { registerVolumeRoutes } from './volume-routes.js';
import { registerTerminalRoutes } from './terminal-routes.js';
import { registerPortRoutes } from './port-routes.js';
import { registerDesktopRoutes } from './desktop-routes.js';
import { registerWebhookRoutes } from './webhook-routes.js';
import { registerUsageRoutes } from './usage-routes.js';
import { registerTokenRoutes } from './token-routes.js';

export interface RouteCtx {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  caller: Caller;
  manager: SandboxManager;
  /** The image store, where this daemon has one (image routes). */
  images?: ImageStore;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
  /** The host's operator (the Unix socket, or the AGENTBOX_TOKEN bearer), not a policy tenant. */
  operator: boolean;
  /** The daemon's own state, where this server belongs to one. */
  daemonInfo?: () => Promise<DaemonInfo>;
}

type Handler = (ctx: RouteCtx) => Promise<void>;

/** What the OpenAPI document says about a route; the schemas are the ones the handler validates with. */
export interface RouteDoc {
  summary: string;
  body?: z.ZodType | 'binary';
  response?: z.ZodType | 'binary';
  status?: number;
  query?: Record<string, string>;
  /** Path parameters that are not plain strings: the schema each is validated with (`pathParam()`). */
  params?: Record<string, z.ZodType>;
  /** The route can answer with text/event-stream. */
  sse?: boolean;
  /** The route takes an HTTP upgrade only: to a WebSocket, or to a raw byte stream (`Upgrade: tcp`). */
  upgrade?: 'websocket' | 'tcp';
}

/** What an upgrade route's handler gets: the connection itself, once the caller is authenticated. */
export interface UpgradeCtx {
  req: IncomingMessage;
  socket: Duplex;
  /** The first bytes after the request's head (the client may have sent them already). */
  head: Buffer;
  params: Record<string, string>;
  query: URLSearchParams;
  caller: Caller;
  manager: SandboxManager;
  operator: boolean;
}

export type UpgradeHandler = (ctx: UpgradeCtx) => Promise<void>;
export type UpgradeRouteFn = (path: string, doc: RouteDoc & { upgrade: 'websocket' | 'tcp' }, handler: UpgradeHandler) => void;

export interface Route {
  method: string;
  path: string;
  pattern: RegExp;
  keys: string[];
  doc: RouteDoc;
  handler: Handler;
  /** For an upgrade route: what takes the connection. */
  upgradeHandler?: UpgradeHandler;
}

export const routes: Route[] = [];

function route(method: string, path: string, doc: RouteDoc, handler: Handler, upgradeHandler?: UpgradeHandler): void {
  const keys: string[] = [];
  const pattern = new RegExp(
    `^${path.replace(/\{(\w+)\}/g, (_m, k: string) => {
      keys.push(k);
      return '([^/]+)';
    })}$`,
  );
  routes.push({ method, path, pattern, keys, doc, handler, ...(upgradeHandler ? { upgradeHandler } : {}) });
}

/** A GET route that takes an upgrade (doc.upgrade says to what); a plain GET gets 426. */
export function upgradeRoute(path: string, doc: RouteDoc & { upgrade: 'websocket' | 'tcp' }, handler: UpgradeHandler): void {
  route('GET', path, doc, async () => {
    throw new UpgradeRequiredError(`${path} takes ${doc.upgrade === 'websocket' ? 'a WebSocket' : 'an HTTP upgrade to a byte stream (Upgrade: tcp)'}`, { hint: doc.upgrade === 'websocket' ? 'connect with a WebSocket client' : 'send Connection: Upgrade and Upgrade: tcp' });
  }, handler);
}

/** A plain request to an upgrade route. */
export class UpgradeRequiredError extends BadRequestError {}

/** The upgrade route for a path, with its parameters; undefined when none (or the path is not an upgrade route). */
export function matchUpgrade(path: string): { handler: UpgradeHandler; params: Record<string, string>; upgrade: 'websocket' | 'tcp'; template: string } | undefined {
  for (const r of routes) {
    if (!r.upgradeHandler || !r.doc.upgrade) continue;
    const m = r.pattern.exec(path);
    if (!m) continue;
    const params: Record<string, string> = {};
    r.keys.forEach((k, i) => (params[k] = decodePathSegment(m[i + 1] as string)));
    return { handler: r.upgradeHandler, params, upgrade: r.doc.upgrade, template: r.path };
  }
  return undefined;
}

/**
 * Find the handler for a request; `undefined` path match means 404, a method mismatch 405.
 * `template` is the route's path as written here (`/v1/sandboxes/{id}/exec`): a metrics label of few values.
 */
export function matchRoute(method: string, path: string): { handler: Handler; params: Record<string, string>; takesJson: boolean; template: string } | 'method' | undefined {
  let pathMatched = false;
  for (const r of routes) {
    const m = r.pattern.exec(path);
    if (!m) continue;
    pathMatched = true;
    if (r.method !== method) continue;
    const params: Record<string, string> = {};
    r.keys.forEach((k, i) => (params[k] = decodePathSegment(m[i + 1] as string)));
    return { handler: r.handler, params, takesJson: r.doc.body !== undefined && r.doc.body !== 'binary', template: r.path };
  }
  return pathMatched ? 'method' : undefined;
}

/**
 * The sandbox a route's template names (`/v1/sandboxes/{id}...`): such requests are served by the
 * replica that holds the sandbox (replica-forward.ts). Undefined for every other route.
 */
export function routeSandboxId(template: string, params: Record<string, string>): string | undefined {
  return template === '/v1/sandboxes/{id}' || template.startsWith('/v1/sandboxes/{id}/') ? params.id : undefined;
}

function decodePathSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new BadRequestError('malformed percent-encoding in the path', { hint: 'percent-encode ids as UTF-8 (encodeURIComponent)' });
  }
}

const LabelSelectorSchema = z.string().regex(/^[^=,]+=[^=,]*(,[^=,]+=[^=,]*)*$/, 'labels as k=v,k2=v2');

function requirePath(query: URLSearchParams): string {
  const path = query.get('path');
  if (!path) throw new BadRequestError('missing ?path=', { hint: 'give an absolute path inside the sandbox, e.g. ?path=/workspace/out.txt' });
  return path;
}

/** Exec events as SSE: output chunks base64 (binary-safe), then the exit summary. */
/**
 * The status line went out with the first event, so a typed error after it (the sandbox ended, or
 * could not be woken) is an `error` event the SDK throws; anything else goes to the server's handler.
 */
async function streamEvents(ctx: RouteCtx, events: AsyncIterable<ExecEvent>): Promise<void> {
  try {
    for await (const ev of events) {
      if (ctx.res.destroyed) break;
      if (ev.type === 'exit') await sendEvent(ctx.res, 'exit', ev.result);
      else await sendEvent(ctx.res, ev.type, { data: ev.data.toString('base64') });
    }
  } catch (err) {
    if (!(err instanceof AgentboxError) || ctx.res.destroyed) throw err;
    await sendEvent(ctx.res, 'error', wireError(err));
  }
  ctx.res.end();
}

function id(ctx: RouteCtx): string {
  return ctx.params.id as string;
}

/** A numeric path parameter, validated with the schema its route's doc names for it (and the OpenAPI shows). */
function pathNumber<S extends z.ZodType>(ctx: RouteCtx, name: string, schema: S): z.infer<S> {
  const raw = ctx.params[name] ?? '';
  return parseWith(schema, /^\d{1,10}$/.test(raw) ? Number(raw) : raw);
}

route('POST', '/v1/sandboxes', { summary: 'Create a sandbox', body: CreateSandboxRequestSchema, response: SandboxSchema, status: 201 }, async (ctx) => {
  const body = await readJson(ctx.req, CreateSandboxRequestSchema);
  sendJson(ctx.res, 201, await ctx.manager.create(body, ctx.caller));
});

route('GET', '/v1/sandboxes', { summary: 'List sandboxes of the caller\'s tenant', query: { labels: 'k=v,k2=v2 selector', all: '1 to include deleted ones' }, response: z.object({ sandboxes: z.array(SandboxSchema) }) }, async (ctx) => {
  const selector = ctx.query.get('labels');
  const labels = selector ? Object.fromEntries(parseWith(LabelSelectorSchema, selector).split(',').map((kv) => kv.split('=') as [string, string])) : undefined;
  const all = ctx.query.get('all') === '1' || ctx.query.get('all') === 'true';
  sendJson(ctx.res, 200, { sandboxes: ctx.manager.list(ctx.caller, { ...(labels ? { labels } : {}), all }) });
});

route('GET', '/v1/sandboxes/{id}', { summary: 'Get a sandbox (with endReason once it ended)', response: SandboxSchema }, async (ctx) => {
  sendJson(ctx.res, 200, ctx.manager.get(id(ctx), ctx.caller));
});

route('DELETE', '/v1/sandboxes/{id}', { summary: 'Delete a sandbox', response: SandboxSchema }, async (ctx) => {
  sendJson(ctx.res, 200, await ctx.manager.delete(id(ctx), ctx.caller));
});

route('POST', '/v1/sandboxes/{id}/stop', { summary: 'Stop a sandbox (processes end, the record stays)', response: SandboxSchema }, async (ctx) => {
  sendJson(ctx.res, 200, await ctx.manager.stop(id(ctx), ctx.caller));
});

route('POST', '/v1/sandboxes/{id}/pause', { summary: 'Pause a running sandbox: frozen (memory kept) or hibernated (saved to disk, where the runtime can); any later call into it resumes it', body: PauseRequestSchema, response: SandboxSchema }, async (ctx) => {
  const body = await readJson(ctx.req, PauseRequestSchema);
  sendJson(ctx.res, 200, await ctx.manager.pause(id(ctx), body, ctx.caller));
});

route('POST', '/v1/sandboxes/{id}/resume', { summary: 'Resume a paused sandbox now (a running one is left as it is)', response: SandboxSchema }, async (ctx) => {
  sendJson(ctx.res, 200, await ctx.manager.resume(id(ctx), ctx.caller));
});

route('POST', '/v1/sandboxes/{id}/exec', { summary: 'Run a command: JSON result, or with Accept: text/event-stream the events start, stdout, stderr (base64 chunks), exit', body: ExecRequestSchema, response: ExecResultSchema, sse: true }, async (ctx) => {
  const body = await readJson(ctx.req, ExecRequestSchema, 17 * 1024 * 1024);
  const wantsStream = (ctx.req.headers.accept ?? '').includes('text/event-stream');
  if (!wantsStream) {
    sendJson(ctx.res, 200, await ctx.manager.exec(id(ctx), body, ctx.caller, ctx.signal));
    return;
  }
  const { execId, events } = ctx.manager.execStream(id(ctx), body, ctx.caller, ctx.signal);
  startSse(ctx.res);
  await sendEvent(ctx.res, 'start', { execId });
  await streamEvents(ctx, events);
});

route('GET', '/v1/sandboxes/{id}/execs', { summary: 'Exec history (newest first, ring buffer)', query: { limit: 'at most this many (default 100)' }, response: z.object({ execs: z.array(ExecRecordSchema) }) }, async (ctx) => {
  const limit = Math.min(Number(ctx.query.get('limit') ?? 100) || 100, 1000);
  sendJson(ctx.res, 200, { execs: ctx.manager.execHistory(id(ctx), ctx.caller, limit) });
});

route('GET', '/v1/sandboxes/{id}/execs/{execId}', { summary: 'One exec with the tail of its output; ?follow=1 streams a running exec as SSE', query: { follow: '1 to stream' }, response: ExecRecordSchema, sse: true }, async (ctx) => {
  const execId = ctx.params.execId as string;
  if (ctx.query.get('follow') !== '1') {
    sendJson(ctx.res, 200, ctx.manager.execRecord(id(ctx), execId, ctx.caller));
    return;
  }
  const events = ctx.manager.followExec(id(ctx), execId, ctx.caller);
  startSse(ctx.res);
  await sendEvent(ctx.res, 'start', { execId });
  await streamEvents(ctx, events);
});

route('GET', '/v1/sandboxes/{id}/processes', { summary: 'The processes of a running sandbox as seen inside it: pid, parent, user, command line, and the exec that started each (null: its init, agentbox\'s own)', response: z.object({ processes: z.array(ProcessInfoSchema) }) }, async (ctx) => {
  sendJson(ctx.res, 200, { processes: await ctx.manager.processes(id(ctx), ctx.caller) });
});

route('POST', '/v1/sandboxes/{id}/processes/{pid}/kill', { summary: 'Send a signal (TERM unless given) to one process of a running sandbox; PID 1 is refused (forbidden), an unknown pid is not_found', params: { pid: ProcessIdSchema }, body: KillProcessRequestSchema, response: KillResultSchema }, async (ctx) => {
  const pid = pathNumber(ctx, 'pid', ProcessIdSchema);
  const body = await readJson(ctx.req, KillProcessRequestSchema);
  sendJson(ctx.res, 200, await ctx.manager.killProcess(id(ctx), pid, body, ctx.caller));
});

route('PUT', '/v1/sandboxes/{id}/files', { summary: 'Write a file (raw bytes, streamed), creating parent directories', query: { path: 'absolute path inside the sandbox' }, body: 'binary', response: z.object({ path: z.string(), bytes: z.number() }) }, async (ctx) => {
  const bytes = await ctx.manager.writeFile(id(ctx), requirePath(ctx.query), ctx.req, ctx.caller);
  sendJson(ctx.res, 200, { path: ctx.query.get('path'), bytes });
});

route('GET', '/v1/sandboxes/{id}/files', { summary: 'Read a file (raw bytes, streamed)', query: { path: 'absolute path inside the sandbox' }, response: 'binary' }, async (ctx) => {
  const stream = await ctx.manager.readFile(id(ctx), requirePath(ctx.query), ctx.caller);
  ctx.res.writeHead(200, { 'content-type': 'application/octet-stream' });
  await pipeline(stream, ctx.res);
});

route('DELETE', '/v1/sandboxes/{id}/files', { summary: 'Remove a file or directory tree', query: { path: 'absolute path inside the sandbox' }, response: z.object({ path: z.string(), removed: z.boolean() }) }, async (ctx) => {
  await ctx.manager.removePath(id(ctx), requirePath(ctx.query), ctx.caller);
  sendJson(ctx.res, 200, { path: ctx.query.get('path'), removed: true });
});

route('GET', '/v1/sandboxes/{id}/files/list', { summary: 'List a directory', query: { path: 'absolute path (default /workspace)' }, response: z.object({ path: z.string(), entries: z.array(DirEntrySchema) }) }, async (ctx) => {
  const path = ctx.query.get('path') ?? '/workspace';
  sendJson(ctx.res, 200, { path, entries: await ctx.manager.listDir(id(ctx), path, ctx.caller) });
});

const EgressLogSchema = z.object({
  sandboxId: z.string(),
  egress: EgressSchema,
  log: z.array(EgressEventSchema).describe('Connection attempts, newest first'),
  denied: z.array(DeniedHostSchema).optional().describe('With ?denied=1: each refused host, how often and by which rule'),
});

route('GET', '/v1/sandboxes/{id}/egress', { summary: 'Egress settings and connection log of a sandbox; ?denied=1 lists only refusals and the refused hosts', query: { denied: '1 for refusals only', limit: 'at most this many log entries (default 200)' }, response: EgressLogSchema }, async (ctx) => {
  const limit = Math.min(Number(ctx.query.get('limit') ?? 200) || 200, 10_000);
  sendJson(ctx.res, 200, ctx.manager.egressLog(id(ctx), ctx.caller, { denied: ctx.query.get('denied') === '1', limit }));
});

route('POST', '/v1/sandboxes/{id}/egress/allow', { summary: 'Approve one more host for a running sandbox; takes effect from its next connection', body: EgressAllowRequestSchema, response: SandboxSchema }, async (ctx) => {
  const body = await readJson(ctx.req, EgressAllowRequestSchema);
  sendJson(ctx.res, 200, ctx.manager.allowEgress(id(ctx), body.host, ctx.caller));
});

route('POST', '/v1/sandboxes/{id}/snapshots', { summary: 'Snapshot a running sandbox\'s files (/workspace, /tmp): frozen for a copy-on-write clone, digested; with memory: true also its memory and processes (microvm)', body: CreateSnapshotRequestSchema, response: SnapshotSchema, status: 201 }, async (ctx) => {
  const body = await readJson(ctx.req, CreateSnapshotRequestSchema);
  sendJson(ctx.res, 201, await ctx.manager.snapshot(id(ctx), body, ctx.caller));
});

route('POST', '/v1/sandboxes/{id}/fork', { summary: 'New sandboxes whose files are a copy-on-write copy of this running one\'s at this moment (memory is not forked); all or nothing', body: ForkRequestSchema, response: z.object({ sandboxes: z.array(SandboxSchema) }), status: 201 }, async (ctx) => {
  const body = await readJson(ctx.req, ForkRequestSchema);
  sendJson(ctx.res, 201, { sandboxes: await ctx.manager.fork(id(ctx), body, ctx.caller) });
});

route('GET', '/v1/snapshots', { summary: 'Snapshots of the caller\'s tenant, newest first', response: z.object({ snapshots: z.array(SnapshotSchema) }) }, async (ctx) => {
  sendJson(ctx.res, 200, { snapshots: ctx.manager.listSnapshots(ctx.caller) });
});

route('GET', '/v1/snapshots/{id}', { summary: 'One snapshot, by id or name', response: SnapshotSchema }, async (ctx) => {
  sendJson(ctx.res, 200, ctx.manager.getSnapshot(id(ctx), ctx.caller));
});

route('DELETE', '/v1/snapshots/{id}', { summary: 'Remove a snapshot (by id or name) and its files', response: SnapshotSchema }, async (ctx) => {
  sendJson(ctx.res, 200, await ctx.manager.removeSnapshot(id(ctx), ctx.caller));
});

route('POST', '/v1/images/pull', { summary: 'Pull a registry image through dockerd and keep it as an image; with Accept: text/event-stream the events progress, then done (the image) or error', body: PullImageRequestSchema, response: ImageInfoSchema, sse: true }, async (ctx) => {
  const body = await readJson(ctx.req, PullImageRequestSchema);
  ctx.manager.authorizeImages(ctx.caller);
  const images = ctx.images;
  if (!images) throw new RuntimeUnavailableError('this daemon has no image store', { hint: 'run agentbox image pull on the host' });
  const { pullImage } = await import('../images/pull.js');
  const opts = { ...(body.name ? { name: body.name } : {}), signal: ctx.signal };
  if (!(ctx.req.headers.accept ?? '').includes('text/event-stream')) {
    sendJson(ctx.res, 200, await pullImage(images, body.ref, opts));
    return;
  }
  startSse(ctx.res);
  try {
    const info = await pullImage(images, body.ref, { ...opts, onProgress: (p) => void sendEvent(ctx.res, 'progress', p) });
    await sendEvent(ctx.res, 'done', info);
  } catch (err) {
    await sendEvent(ctx.res, 'error', wireError(err));
  }
  ctx.res.end();
});

route('GET', '/v1/daemon', { summary: 'The daemon itself (host operator only): pid, version and build, uptime, listeners, runtime health, sandboxes by state', response: DaemonInfoSchema }, async (ctx) => {
  if (!ctx.operator) throw new ForbiddenError('only the host\'s operator sees the daemon\'s details', { hint: 'use the Unix socket on the host, or the AGENTBOX_TOKEN bearer' });
  if (!ctx.daemonInfo) throw new RuntimeUnavailableError('this server runs without a daemon', { hint: 'start one with agentbox serve' });
  sendJson(ctx.res, 200, await ctx.daemonInfo());
});

registerVolumeRoutes(route);
registerTerminalRoutes(route, upgradeRoute);
registerPortRoutes(route, upgradeRoute);
registerDesktopRoutes(route, upgradeRoute);
registerWebhookRoutes(route);
registerUsageRoutes(route);
registerTokenRoutes(route);

export function notFoundRoute(path: string): NotFoundError {
  return new NotFoundError(`no route ${path}`, { hint: 'routes are under /v1; see /v1/openapi.json' });
}
