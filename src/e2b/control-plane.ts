/**
 * E2B's control plane (the API at E2B_API_URL) over the same SandboxManager as every other surface:
 * create, list (paged), get, kill, timeout, connect. Templates name agentbox profiles or images
 * (`base`: the debian image, which has bash and python3), metadata becomes labels, `timeout` the
 * TTL, `envVars` the sandbox's environment. What agentbox does not do is refused with a message,
 * never accepted and ignored.
 *
 * `domain` in create/connect/get answers is what the SDK's `getHost(port)` puts after
 * `PORT-ID.`: the daemon's ports domain and TCP port, so the host is one the port proxy serves; a
 * daemon without a ports domain answers `NO_PORTS_DOMAIN`, a name that can never resolve (RFC 2606's
 * `.invalid`), so `getHost` fails at once with the reason in the host name instead of sending the
 * request to E2B's cloud (the SDK's fallback, `E2B_DOMAIN` or e2b.app). Traffic rules: traffic.ts.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { readJson } from '../api/http-util.js';
import { checkJsonBody } from '../api/request-guard.js';
import { BadRequestError, ConflictError, NotFoundError } from '../contract/errors.js';
import { EnvSchema, LabelsSchema, type Sandbox } from '../contract/model.js';
import { CreateSandboxRequestSchema, type CreateSandboxRequest } from '../contract/requests.js';
import type { Caller, SandboxManager } from '../core/manager.js';
import type { EnvdTokens } from './envd-token.js';
import type { E2bTraffic } from './traffic.js';
import { profileOf } from '../policy/profiles.js';

/** The envd version this surface reports: what decides which SDK features the SDK lets its user call (README). */
export const ENVD_VERSION = '0.5.7';
/** E2B's default template, and the agentbox image it stands for. */
export const BASE_TEMPLATE = 'base';
export const BASE_IMAGE = 'debian';
/** Reported as `endAt` for a sandbox without a TTL (the policy's ttl can be unset). */
const NEVER = '9999-12-31T23:59:59.000Z';
/** The `domain` of a daemon without a ports domain: `getHost(port)` then names a host that cannot resolve, and says why. */
export const NO_PORTS_DOMAIN = 'no-ports-domain-see-agentbox-serve-ports-domain.invalid';

/** Of E2B's `network` options, agentbox implements `allowPublicTraffic`; any other is refused by name. */
const NetworkSchema = z
  .object({
    allowPublicTraffic: z
      .boolean()
      .optional()
      .describe('true (the default): every port of the sandbox is reachable by anyone through the port proxy; false: with its trafficAccessToken only'),
  })
  .loose()
  .superRefine((network, ctx) => {
    for (const key of Object.keys(network)) {
      if (key !== 'allowPublicTraffic') ctx.addIssue({ code: 'custom', path: [key], message: 'is not supported by agentbox: of network, only allowPublicTraffic is' });
    }
  });

const TimeoutSecondsSchema = z.number().int().min(1).max(366 * 24 * 3600).describe('Seconds from now');

const NewSandboxSchema = z
  .object({
    templateID: z.string().min(1).max(128),
    timeout: TimeoutSecondsSchema.optional(),
    metadata: LabelsSchema.optional(),
    envVars: EnvSchema.optional(),
    secure: z.boolean().optional(),
    allow_internet_access: z.boolean().optional(),
    autoPause: z.literal(false, { error: 'autoPause is not supported: agentbox ends a sandbox at its timeout (its idle sandboxes may be paused by the policy\'s pauseAfter)' }).optional(),
    autoPauseMemory: z.boolean().optional(),
    autoResume: z.object({ enabled: z.literal(false, { error: 'autoResume is not supported by agentbox' }) }).optional(),
    network: NetworkSchema.optional(),
    mcp: z.null({ error: 'mcp is not supported by agentbox' }).optional(),
    iam: z.null({ error: 'iam is not supported by agentbox' }).optional(),
    volumeMounts: z.array(z.unknown()).max(0, 'volumeMounts are not supported on the E2B surface: use agentbox volumes through its own API').optional(),
  })
  .describe('E2B NewSandbox (unknown fields are ignored, as E2B ignores them)');
type NewSandbox = z.infer<typeof NewSandboxSchema>;

const TimeoutBodySchema = z.object({ timeout: TimeoutSecondsSchema }).describe('E2B timeout body');
const ConnectBodySchema = z.object({ timeout: TimeoutSecondsSchema.optional() }).describe('E2B connect/resume body');
const PauseBodySchema = z.object({ memory: z.boolean().optional() }).describe('E2B pause body (memory: keepMemory; agentbox always keeps it)');
const RefreshBodySchema = z.object({ duration: z.number().int().min(1).max(3600).optional() }).describe('E2B refresh body');

const ListQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  nextToken: z.string().max(512).optional(),
  metadata: z.string().max(8192).optional(),
  state: z.array(z.enum(['running', 'paused'])).optional(),
  template: z.string().max(128).optional(),
});

export interface ControlPlaneCtx {
  req: IncomingMessage;
  res: ServerResponse;
  caller: Caller;
  manager: SandboxManager;
  tokens: EnvdTokens;
  traffic: E2bTraffic;
  /** What the SDK's `getHost(port)` appends to `PORT-ID.`: `domain[:port]` of the port proxy, or NO_PORTS_DOMAIN. */
  domain: string;
}

interface Route {
  method: string;
  pattern: RegExp;
  run(ctx: ControlPlaneCtx, id: string | undefined, query: URLSearchParams): Promise<void>;
}

const ID = '([A-Za-z0-9_-]{1,64})';
const ROUTES: Route[] = [
  { method: 'POST', pattern: /^\/(?:v2\/)?sandboxes$/, run: (c) => create(c) },
  { method: 'GET', pattern: /^\/sandboxes$/, run: (c, _id, q) => list(c, q, false) },
  { method: 'GET', pattern: /^\/v2\/sandboxes$/, run: (c, _id, q) => list(c, q, true) },
  { method: 'GET', pattern: new RegExp(`^/sandboxes/${ID}$`), run: (c, id) => detail(c, id as string) },
  { method: 'DELETE', pattern: new RegExp(`^/sandboxes/${ID}$`), run: (c, id) => kill(c, id as string) },
  { method: 'POST', pattern: new RegExp(`^/sandboxes/${ID}/timeout$`), run: (c, id) => setTimeoutRoute(c, id as string) },
  { method: 'POST', pattern: new RegExp(`^/sandboxes/${ID}/refreshes$`), run: (c, id) => refresh(c, id as string) },
  { method: 'POST', pattern: new RegExp(`^/(?:v2/)?sandboxes/${ID}/(?:connect|resume)$`), run: (c, id) => connect(c, id as string) },
  {
    method: 'POST',
    pattern: new RegExp(`^/sandboxes/${ID}/pause$`),
    run: (c, id) => pause(c, id as string),
  },
  {
    method: 'GET',
    pattern: new RegExp(`^/sandboxes/${ID}/metrics$`),
    run: (c, id) => metrics(c, id as string),
  },
];

/** Run the route for `path` (under the control plane's base); not_found for an unknown route. */
export async function handleControlPlane(ctx: ControlPlaneCtx, path: string, query: URLSearchParams): Promise<void> {
  for (const route of ROUTES) {
    const m = route.pattern.exec(path);
    if (!m || route.method !== ctx.req.method) continue;
    if (ctx.req.method === 'POST') checkJsonBody(ctx.req);
    await route.run(ctx, m[1], query);
    return;
  }
  throw new NotFoundError(`the E2B API has no ${ctx.req.method} ${path.slice(0, 100)} here`, { hint: 'agentbox implements sandboxes create, list, get, kill, timeout and connect (see the README)' });
}

async function create(c: ControlPlaneCtx): Promise<void> {
  const body = await readBody(c.req, NewSandboxSchema);
  const sandbox = await c.manager.create(toCreateRequest(c.manager, body), c.caller);
  try {
    c.traffic.record(sandbox.id, { tenant: sandbox.tenant, public: body.network?.allowPublicTraffic !== false });
  } catch (err) {
    // Not given out without its rule: it would be reachable by nobody, or not as asked.
    await c.manager.delete(sandbox.id, c.caller).catch(() => undefined);
    throw err;
  }
  send(c.res, 201, { ...identity(c, sandbox), envdAccessToken: c.tokens.issue(sandbox.id, sandbox.tenant, c.caller.scopes) });
}

/** E2B's request as agentbox's, validated by agentbox's own schema (labels, env names, ttl). */
function toCreateRequest(manager: SandboxManager, body: NewSandbox): CreateSandboxRequest {
  const template = body.templateID;
  const isProfile = profileOf(manager.policy, template) !== undefined;
  return parseE2b(CreateSandboxRequestSchema, {
    ...(isProfile ? { profile: template } : { image: template === BASE_TEMPLATE ? BASE_IMAGE : template }),
    ...(body.metadata ? { labels: body.metadata } : {}),
    ...(body.envVars ? { env: body.envVars } : {}),
    ...(body.timeout !== undefined ? { ttl: body.timeout } : {}),
    ...(body.allow_internet_access !== undefined ? { egress: { mode: body.allow_internet_access ? 'open' : 'none' } } : {}),
  });
}

async function list(c: ControlPlaneCtx, query: URLSearchParams, paged: boolean): Promise<void> {
  const q = parseE2b(ListQuerySchema, {
    ...Object.fromEntries([...query.entries()].filter(([k]) => k !== 'state')),
    ...(query.has('state') ? { state: query.getAll('state').flatMap((s) => s.split(',')).filter((s) => s !== '') } : {}),
  });
  let sandboxes = c.manager
    .list(c.caller, q.metadata ? { labels: metadataFilter(q.metadata) } : {})
    .filter((sb) => !q.state || q.state.includes(stateOf(sb)))
    .filter((sb) => !q.template || templateOf(sb) === q.template)
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  if (!paged) {
    send(c.res, 200, sandboxes.map((sb) => listed(sb)));
    return;
  }
  if (q.nextToken !== undefined) {
    const after = decodePageToken(q.nextToken);
    sandboxes = sandboxes.filter((sb) => sb.createdAt > after.createdAt || (sb.createdAt === after.createdAt && sb.id > after.id));
  }
  const page = sandboxes.slice(0, q.limit);
  const last = page[page.length - 1];
  if (sandboxes.length > page.length && last) c.res.setHeader('x-next-token', Buffer.from(JSON.stringify([last.createdAt, last.id])).toString('base64url'));
  send(c.res, 200, page.map((sb) => listed(sb)));
}

async function detail(c: ControlPlaneCtx, id: string): Promise<void> {
  const sb = live(c, id);
  const rule = c.traffic.rule(sb.id);
  send(c.res, 200, { ...listed(sb), envdAccessToken: c.tokens.issue(sb.id, sb.tenant, c.caller.scopes), domain: c.domain, ...(rule ? { network: { allowPublicTraffic: rule.public } } : {}) });
}

async function kill(c: ControlPlaneCtx, id: string): Promise<void> {
  live(c, id);
  await c.manager.delete(id, c.caller);
  c.traffic.forget(id);
  c.res.writeHead(204).end();
}

async function setTimeoutRoute(c: ControlPlaneCtx, id: string): Promise<void> {
  const body = await readBody(c.req, TimeoutBodySchema);
  live(c, id);
  c.manager.setTtl(id, body.timeout * 1000, c.caller);
  c.res.writeHead(204).end();
}

async function refresh(c: ControlPlaneCtx, id: string): Promise<void> {
  const body = await readBody(c.req, RefreshBodySchema);
  live(c, id);
  c.manager.setTtl(id, (body.duration ?? 60) * 1000, c.caller);
  c.res.writeHead(204).end();
}

/**
 * E2B's pause: hibernated where the runtime can (memory saved to disk, as E2B keeps it), else frozen
 * (memory kept in place). 409 when paused already, which the SDK reads as `false`.
 */
async function pause(c: ControlPlaneCtx, id: string): Promise<void> {
  await readBody(c.req, PauseBodySchema);
  live(c, id);
  try {
    await c.manager.pause(id, { mode: 'hibernate' }, c.caller);
  } catch (err) {
    if (!(err instanceof ConflictError) || !/cannot hibernate/.test(err.message)) throw err;
    await c.manager.pause(id, { mode: 'freeze' }, c.caller);
  }
  c.res.writeHead(204).end();
}

/**
 * E2B's metrics: one sample taken now (agentbox keeps no history of a sandbox's usage; `start` and
 * `end` select nothing more). CPU over a quarter second, of the sandbox's CPU limit.
 */
async function metrics(c: ControlPlaneCtx, id: string): Promise<void> {
  live(c, id);
  const u = await c.manager.usage(id, c.caller);
  send(c.res, 200, [
    {
      timestamp: u.at,
      timestampUnix: Math.floor(Date.parse(u.at) / 1000),
      cpuCount: u.cpuCount,
      cpuUsedPct: Math.round(u.cpuUsedPct * 100) / 100,
      memUsed: u.memoryBytes,
      memTotal: u.memoryLimitBytes,
      memCache: 0,
      diskUsed: u.diskUsedBytes ?? 0,
      diskTotal: u.diskTotalBytes,
    },
  ]);
}

/** A live sandbox's envd access; a paused one is resumed first (E2B's resume). */
async function connect(c: ControlPlaneCtx, id: string): Promise<void> {
  const body = await readBody(c.req, ConnectBodySchema);
  let sb = live(c, id);
  if (sb.paused) sb = await c.manager.resume(id, c.caller);
  if (body.timeout !== undefined) sb = c.manager.setTtl(id, body.timeout * 1000, c.caller);
  send(c.res, 200, { ...identity(c, sb), envdAccessToken: c.tokens.issue(sb.id, sb.tenant, c.caller.scopes) });
}

/** A sandbox the caller sees and that has not ended; E2B knows nothing of ended ones (404). */
function live(c: ControlPlaneCtx, id: string): Sandbox {
  const sb = c.manager.get(id, c.caller);
  if (sb.state !== 'running' && sb.state !== 'creating') throw new NotFoundError(`sandbox ${id} not found (it ended: ${sb.endReason ?? sb.state})`, { hint: 'create a new one with Sandbox.create()' });
  return sb;
}

/** What create and connect answer besides the envd token; `trafficAccessToken` only for a sandbox made with `allowPublicTraffic: false`. */
function identity(c: ControlPlaneCtx, sb: Sandbox): Record<string, unknown> {
  return { sandboxID: sb.id, templateID: templateOf(sb), clientID: 'agentbox', envdVersion: ENVD_VERSION, trafficAccessToken: c.traffic.tokenFor(sb.id), domain: c.domain };
}

function listed(sb: Sandbox): Record<string, unknown> {
  return {
    sandboxID: sb.id,
    templateID: templateOf(sb),
    clientID: 'agentbox',
    startedAt: sb.createdAt,
    endAt: sb.expiresAt ?? NEVER,
    cpuCount: Math.max(1, Math.ceil(sb.limits.cpus)),
    memoryMB: sb.limits.memoryMb,
    diskSizeMB: sb.limits.diskMb,
    metadata: sb.labels,
    state: stateOf(sb),
    envdVersion: ENVD_VERSION,
    volumeMounts: [],
  };
}

function templateOf(sb: Sandbox): string {
  return sb.profile ?? (sb.image === BASE_IMAGE ? BASE_TEMPLATE : sb.image);
}

function stateOf(sb: Sandbox): 'running' | 'paused' {
  return sb.paused ? 'paused' : 'running';
}

/** E2B's metadata filter: a query string of percent-encoded pairs (`k=v&k2=v2`), itself one parameter. */
function metadataFilter(raw: string): Record<string, string> {
  const out: Record<string, string> = {};
  try {
    for (const [k, v] of new URLSearchParams(raw)) out[decodeURIComponent(k)] = decodeURIComponent(v);
  } catch {
    throw new BadRequestError('malformed metadata filter', { hint: 'metadata is key=value pairs joined by &, each percent-encoded' });
  }
  return out;
}

function decodePageToken(token: string): { createdAt: string; id: string } {
  try {
    const v: unknown = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (Array.isArray(v) && typeof v[0] === 'string' && typeof v[1] === 'string') return { createdAt: v[0], id: v[1] };
  } catch {
    // fall through
  }
  throw new BadRequestError('malformed nextToken', { hint: 'pass the x-next-token of the previous page unchanged' });
}

/** Hints for the fields whose rules differ from E2B's. */
const FIELD_HINTS: Record<string, string> = {
  metadata: 'metadata keys: a letter or digit, then letters, digits, . _ - / (at most 63 in all); values at most 256 characters',
  labels: 'metadata keys: a letter or digit, then letters, digits, . _ - / (at most 63 in all); values at most 256 characters',
  envVars: 'environment variable names: letters, digits and _, not starting with a digit',
  env: 'environment variable names: letters, digits and _, not starting with a digit',
  timeout: 'timeout is in seconds, at least 1',
  ttl: 'timeout is in seconds, at least 1',
  network: 'agentbox takes network: { allowPublicTraffic } only; the sandbox\'s egress comes from the agentbox policy (allowInternetAccess asks for open egress)',
};

/** Validate with a zod schema; the first problem becomes a bad_request naming the field, with E2B's words. */
function parseE2b<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = String(issue?.path[0] ?? 'body');
  const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'body';
  throw new BadRequestError(`${where}: ${issue?.message ?? 'invalid'}`, { hint: FIELD_HINTS[field] ?? 'see E2B\'s API reference for the request shape' });
}

async function readBody<S extends z.ZodType>(req: IncomingMessage, schema: S): Promise<z.infer<S>> {
  return parseE2b(schema, await readJson(req, z.unknown()));
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
