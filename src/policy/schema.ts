/**
 * The policy file (ARCHITECTURE.md, "The policy file"). Strict everywhere: an unknown key is an
 * error, never ignored, so a typo cannot silently loosen a limit. Fields a file leaves out of
 * `defaults` take the built-in values below.
 */
import { SANDBOX_TOKEN_PREFIX } from '../contract/tokens.js';
import { z } from 'zod';
import { EgressModeSchema, IsolationSchema, LimitsSchema, PartialLimitsSchema, RuntimeNameSchema } from '../contract/model.js';
import type { Isolation, Limits, RuntimeName } from '../contract/model.js';
import { isDuration } from './duration.js';
import { parseCidr } from '../egress/ip.js';
import { hostPatternProblem } from './hosts.js';
import { closedAddressProblem } from './resolve-egress.js';
import { BUILTIN_PRESETS, presetHosts } from './presets.js';
import { profileNames, profileOf } from './profiles.js';
import { RUNTIME_ISOLATIONS, isolationFits } from './isolation.js';
import { WebhookEventTypeSchema } from '../contract/webhooks.js';

const DURATION_MSG = 'expected a duration like 90s, 5m or 1h';
const duration = (description: string) =>
  z.string({ error: DURATION_MSG }).refine((s) => isDuration(s), DURATION_MSG).describe(description);

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/;
const name = (what: string) => z.string().regex(NAME_RE, `a ${what} name: letters, digits, . _ - (at most 64)`);

const ImageNameSchema = z
  .string()
  .max(128)
  .regex(/^[a-zA-Z0-9][a-zA-Z0-9._\-/:]*$/, 'an image name: letters, digits, . _ - / :')
  .describe('Image name as the image store or Docker knows it');

const hostPattern = (opts: { broad?: boolean }) =>
  z.string().superRefine((s, ctx) => {
    const problem = hostPatternProblem(s, opts);
    if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
  });
const AllowHostSchema = hostPattern({}).describe('HOST, *.DOMAIN (subdomains only) or either with :PORT; without a port: ports 80 and 443 only');
const DenyHostSchema = hostPattern({ broad: true }).describe('HOST, *.DOMAIN or either with :PORT; broad wildcards allowed');

const CidrSchema = z
  .string()
  .refine((s) => isCidr(s), 'expected an address range like 10.77.0.0/16 or fd00::/8')
  .describe('Private or loopback range (CIDR) that sandboxes may reach');

const ProfileEgressSchema = z
  .object({
    mode: EgressModeSchema.describe('none: no network; allowlist: only the listed hosts; open: anything not denied'),
    presets: z.array(name('preset')).optional().describe('Names from egress.presets whose hosts are allowed'),
    allow: z.array(AllowHostSchema).optional().describe('More allowed hosts'),
  })
  .strict()
  .describe('Egress a sandbox gets, and the most a request may ask for');

export const BUILTIN_LIMITS: Readonly<Limits> = Object.freeze({ cpus: 1, memoryMb: 512, pids: 256, diskMb: 1024 });

const DefaultLimitsSchema = z
  .object({
    cpus: LimitsSchema.shape.cpus.default(BUILTIN_LIMITS.cpus),
    memoryMb: LimitsSchema.shape.memoryMb.default(BUILTIN_LIMITS.memoryMb),
    pids: LimitsSchema.shape.pids.default(BUILTIN_LIMITS.pids),
    diskMb: LimitsSchema.shape.diskMb.default(BUILTIN_LIMITS.diskMb),
  })
  .strict()
  .default(() => ({ ...BUILTIN_LIMITS }))
  .describe('Resource limits; each is also the most a request may ask for');

const OutputLimitSchema = z.number().int().min(1024).max(1024 * 1024 * 1024);

const DefaultsSchema = z
  .object({
    runtime: RuntimeNameSchema.default('local').describe('Runtime driver: local | docker | microvm | kubernetes'),
    isolation: IsolationSchema.optional().describe('Isolation within the runtime; absent = the runtime\'s own (local: namespaces, docker: container)'),
    image: ImageNameSchema.default('busybox'),
    limits: DefaultLimitsSchema,
    ttl: duration('Hard lifetime of a sandbox').default('1h'),
    idleTimeout: duration('No exec or file call for this long stops the sandbox').default('15m'),
    execTimeout: duration('Default time limit of one exec').default('2m'),
    outputLimitBytes: OutputLimitSchema.default(2097152).describe('Per exec, stdout+stderr; beyond it the output is truncated'),
    egress: ProfileEgressSchema.optional().describe(
      'Egress without a profile. Absent: none unless the request asks for an allowlist (any host the deny list and ranges let through); never open',
    ),
  })
  .strict()
  .default(() => ({
    runtime: 'local' as const,
    image: 'busybox',
    limits: { ...BUILTIN_LIMITS },
    ttl: '1h',
    idleTimeout: '15m',
    execTimeout: '2m',
    outputLimitBytes: 2097152,
  }))
  .describe('What a request gets when it names nothing');

const ProfileSchema = z
  .object({
    image: ImageNameSchema.optional(),
    runtime: RuntimeNameSchema.optional(),
    isolation: IsolationSchema.optional().describe('Fixed isolation: requests may ask for stronger, never weaker'),
    limits: PartialLimitsSchema.optional().describe('Overrides of defaults.limits; the most a request may ask for'),
    ttl: duration('Hard lifetime; requests may ask for less').optional(),
    idleTimeout: duration('Idle time before the sandbox is stopped').optional(),
    execTimeout: duration('Default time limit of one exec').optional(),
    outputLimitBytes: OutputLimitSchema.optional().describe('Per exec, stdout+stderr'),
    egress: ProfileEgressSchema.optional(),
    pauseAfter: z
      .union([
        duration('Idle time after which the sandbox is frozen (memory kept, CPU freed; where the runtime can)'),
        z
          .object({
            idle: duration('Idle time before the sandbox is paused'),
            mode: z
              .enum(['freeze', 'hibernate'])
              .default('freeze')
              .describe('freeze: processes stopped, memory kept; hibernate: memory saved to disk and freed, restored by the next call (runtimes that can checkpoint memory: docker with gVisor, no egress)'),
          })
          .strict(),
      ])
      .optional()
      .describe('Pause an idle sandbox: a duration (freeze), or { idle, mode }'),
    rootfs: z
      .enum(['readonly', 'writable'])
      .optional()
      .describe("The image root: readonly (default), or writable: the sandbox user owns it and may change it (install software into /usr/local, edit /etc); changes live on the sandbox's disk under its diskMb quota, and go with its snapshots and forks; the image never changes"),
  })
  .strict()
  .describe('A named set of overrides a request selects with `profile`');

const EgressPolicySchema = z
  .object({
    presets: z.record(name('preset'), z.array(AllowHostSchema)).default(() => ({})).describe('Named host lists profiles refer to; built in: pypi, npm, github, debian, crates, go (an entry here replaces the built-in of that name)'),
    globalDeny: z.array(DenyHostSchema).default(() => []).describe('Hosts never reachable; always wins over any allow list'),
    allowRanges: z.array(CidrSchema).default(() => []).describe('Private/loopback ranges the operator opens; default none. A cloud-metadata address opens only by its exact /32 or /128'),
    byteQuotaMb: z.number().int().min(1).max(1024 * 1024).default(1024).describe('Bytes each sandbox may move through its proxy (both ways), MiB'),
  })
  .strict()
  .default(() => ({ presets: {}, globalDeny: [], allowRanges: [], byteQuotaMb: 1024 }))
  .describe('Egress settings shared by all profiles');

/** Where the kubernetes runtime makes its pods (runtime/kubernetes/). Only read when a sandbox asks for it. */
const KubernetesSchema = z
  .object({
    kubeconfig: z.string().min(1).max(4096).optional().describe('kubeconfig file; absent: AGENTBOX_KUBECONFIG, else the in-cluster service account'),
    context: z.string().min(1).max(253).optional().describe('Context of the kubeconfig; absent: its current-context'),
    namespace: z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'a namespace name').max(63).optional().describe("Namespace of the sandboxes' pods; absent: the context's, else default"),
    runtimeClasses: z
      .object({ container: z.string().min(1).max(253).optional(), gvisor: z.string().min(1).max(253).optional(), vm: z.string().min(1).max(253).optional() })
      .strict()
      .optional()
      .describe('RuntimeClass per isolation; absent: gvisor -> gvisor, vm -> kata, container -> the cluster default'),
    images: z.record(ImageNameSchema, z.string().min(1).max(512)).optional().describe('agentbox image name -> image reference the pods pull (e.g. busybox: docker.io/library/busybox:1.36)'),
    egressProxy: z
      .object({
        url: z.string().url().max(512).refine((u) => /^http:\/\/[^/@]+(:\d+)?\/?$/.test(u), 'http://HOST:PORT, without a path or credentials').describe("The cluster egress proxy's Service as sandboxes reach it, e.g. http://agentbox-egress.agentbox.svc.cluster.local:3128"),
        podLabels: z.record(z.string().min(1).max(253), z.string().max(63)).refine((l) => Object.keys(l).length > 0, 'at least one label').describe("Labels of the proxy's pods: the sandbox's NetworkPolicy opens those alone"),
        namespace: z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'a namespace name').max(63).optional().describe("The proxy's namespace, when not the sandboxes' own"),
      })
      .strict()
      .optional()
      .describe('agentbox egress-proxy in the cluster; without it kubernetes sandboxes with egress are refused. The daemon needs AGENTBOX_EGRESS_SECRET, the same as the proxy'),
    agentSandbox: z
      .enum(['auto', 'always', 'never'])
      .optional()
      .describe('kubernetes-sigs/agent-sandbox: auto (the default) makes each sandbox a Sandbox object (agents.x-k8s.io) with the same hardened pod where its CRDs are installed and the daemon may create them, else a plain pod; always refuses to make sandboxes without them; never makes plain pods. Warm-pool members are plain pods in every mode'),
  })
  .strict()
  .optional()
  .describe('The kubernetes runtime: the cluster and namespace its sandboxes run in');

const PoolSchema = z
  .object({
    image: ImageNameSchema,
    profile: name('profile').optional().describe('Profile the warm sandboxes are created with'),
    size: z.number().int().min(0).max(256).describe('Warm sandboxes kept ready'),
  })
  .strict();

/** Bearer tokens are guessable below this length (AGENTBOX_TOKEN is held to it too). */
export const MIN_TOKEN_LENGTH = 16;
const TokenSchema = z
  .string()
  .regex(/^[\x21-\x7e]+$/, 'a token: printable characters, no spaces')
  .min(MIN_TOKEN_LENGTH, `a token must be at least ${MIN_TOKEN_LENGTH} characters long (e.g. openssl rand -hex 24)`)
  .max(512)
  .refine((t) => !t.startsWith(SANDBOX_TOKEN_PREFIX), `a token may not start with ${SANDBOX_TOKEN_PREFIX}: that prefix names sandbox tokens, which the daemon mints`);

/**
 * A URL that receives a tenant's lifecycle events. The file is the host operator's, so its URLs are
 * trusted (loopback and private addresses included); its secret never is written in it.
 */
const WebhookSchema = z
  .object({
    url: z
      .string()
      .max(2048)
      .superRefine((s, ctx) => {
        const problem = webhookUrlProblem(s);
        if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
      })
      .describe('http(s) URL the events are POSTed to; redirects are not followed'),
    secretEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name (letters, digits, _)')
      .optional()
      .describe("Name of the daemon's environment variable that holds the signing secret"),
    secretFile: z
      .string()
      .regex(/^\//, 'an absolute path')
      .optional()
      .describe('File that holds the signing secret (trailing newline ignored); readable by the daemon only, ideally'),
    secret: z
      .undefined({ error: 'the signing secret is never written in the policy file: give secretEnv (an environment variable) or secretFile (a file) instead' })
      .optional()
      .describe('Not accepted: use secretEnv or secretFile'),
    events: z.array(WebhookEventTypeSchema).min(1).optional().describe('Events sent; absent = all of created, paused, resumed, ended'),
    format: z
      .enum(['agentbox', 'e2b'])
      .default('agentbox')
      .describe("agentbox: agentbox's event body; e2b: E2B's lifecycle event body and e2b-signature header (the agentbox-signature is sent too)"),
  })
  .strict()
  .refine((w) => (w.secretEnv === undefined) !== (w.secretFile === undefined), 'give exactly one of secretEnv or secretFile: the secret the deliveries are signed with');

const WebhooksSchema = z.array(WebhookSchema).max(8).optional();

/** Why a webhook URL is not one, or null. */
export function webhookUrlProblem(s: string): string | null {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return `not a URL: ${JSON.stringify(s.slice(0, 100))} (expected e.g. https://hooks.example.com/agentbox)`;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `a webhook URL is http:// or https://, not ${u.protocol}//`;
  if (u.username !== '' || u.password !== '') return 'a webhook URL carries no user or password: the deliveries are signed with secretEnv or secretFile';
  if (u.hash !== '') return 'a webhook URL has no #fragment';
  return null;
}

/**
 * Where the daemon sends OpenTelemetry traces (src/observability/tracing.ts). The daemon's
 * OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, OTEL_SERVICE_NAME and OTEL_EXPORTER_OTLP_(TRACES_)HEADERS win
 * over these (OpenTelemetry's rule); without an endpoint anywhere, tracing is off.
 */
const TelemetrySchema = z
  .object({
    otlpEndpoint: z
      .string()
      .max(2048)
      .superRefine((s, ctx) => {
        const problem = otlpEndpointProblem(s);
        if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
      })
      .optional()
      .describe('OTLP/HTTP base URL of a collector, e.g. http://127.0.0.1:4318 (/v1/traces is appended); as OTEL_EXPORTER_OTLP_ENDPOINT, which wins'),
    serviceName: z.string().min(1).max(128).optional().describe('service.name of the spans (default agentbox; OTEL_SERVICE_NAME wins)'),
    headers: z
      .record(z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'an HTTP header name'), z.string().max(1024).regex(/^[\x20-\x7e]*$/, 'printable ASCII'))
      .optional()
      .describe('Headers sent with every export, not secret ones (the policy file is no place for an API key: give it in OTEL_EXPORTER_OTLP_HEADERS)'),
  })
  .strict()
  .optional()
  .describe('OpenTelemetry traces: off unless an OTLP endpoint is named here or in the environment');

/** Why an OTLP endpoint is not one, or null. */
export function otlpEndpointProblem(s: string): string | null {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return `not a URL: ${JSON.stringify(s.slice(0, 100))} (expected e.g. http://127.0.0.1:4318)`;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `an OTLP/HTTP endpoint is http:// or https://, not ${u.protocol}//`;
  if (u.username !== '' || u.password !== '') return 'an OTLP endpoint carries no user or password: give credentials in OTEL_EXPORTER_OTLP_HEADERS';
  return null;
}

/** The local operator's tenant (the Unix socket, AGENTBOX_TOKEN): no policy tenant may take its name. */
export const OPERATOR_TENANT = 'default';

const TenantSchema = z
  .object({
    name: z
      .string()
      .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'a tenant name: lower-case letters, digits, . _ -')
      .refine((n) => n !== OPERATOR_TENANT, `"${OPERATOR_TENANT}" is the local operator's tenant (Unix socket, AGENTBOX_TOKEN); give this tenant another name`)
      .describe('Tenant name'),
    tokens: z
      .array(TokenSchema)
      .optional()
      .describe('Plain bearer tokens (for tests; prefer tokenSha256)'),
    tokenSha256: z
      .array(z.string().regex(/^[0-9a-fA-F]{64}$/, 'a SHA-256 digest: 64 hex characters (printf %s TOKEN | sha256sum)'))
      .optional()
      .describe('SHA-256 digests of bearer tokens, hex'),
    quotas: z
      .object({
        sandboxes: z.number().int().min(0).optional().describe('Sandboxes alive at once'),
        memoryMb: z.number().int().min(0).optional().describe('Memory of all live sandboxes together, MiB'),
        execMinutesPerDay: z.number().min(0).optional().describe('Exec time per UTC day, minutes'),
        requestsPerMinute: z.number().int().min(1).optional().describe('API requests per minute, REST and /mcp together (token bucket; bursts up to this many)'),
        mcpSessions: z.number().int().min(0).max(4096).optional().describe('MCP sessions open at once over /mcp (default 32)'),
        snapshotsMb: z.number().int().min(0).optional().describe('Disk held by the tenant\'s snapshots together, MiB (each counted at its full size, shared blocks included)'),
      })
      .strict()
      .optional()
      .describe('Per-tenant quotas; absent = unlimited'),
    scopedTokens: z
      .array(
        z
          .object({
            token: TokenSchema.optional(),
            sha256: z.string().regex(/^[0-9a-fA-F]{64}$/, 'a SHA-256 digest: 64 hex characters').optional(),
            scopes: z.array(z.enum(['read', 'exec', 'files', 'manage'])).min(1).describe('read: list/get/history; exec: run commands; files: read/write files; manage: create/stop/delete'),
            labels: z.record(z.string(), z.string()).optional().describe('Only sandboxes with these labels; creates get them'),
          })
          .strict()
          .refine((t) => (t.token === undefined) !== (t.sha256 === undefined), 'give exactly one of token or sha256'),
      )
      .optional()
      .describe('Tokens that can do less than the tenant: fewer scopes, or only sandboxes with some labels'),
    webhooks: WebhooksSchema.describe("URLs that receive signed events of the tenant's sandboxes: created, paused, resumed, ended"),
  })
  .strict();

export const PolicySchema = z
  .object({
    version: z.literal(1, { error: 'must be 1, the only policy format so far' }).describe('Policy file format version'),
    defaults: DefaultsSchema,
    images: z.array(ImageNameSchema).optional().describe('Allowed images; absent = any image the host has'),
    profiles: z.record(name('profile'), ProfileSchema).default(() => ({})).describe('Named profiles; built in: desktop (an entry here replaces the built-in of that name)'),
    egress: EgressPolicySchema,
    pools: z.array(PoolSchema).default(() => []).describe('Warm pools of ready sandboxes'),
    tenants: z.array(TenantSchema).optional().describe('Tenants and their tokens; absent = single tenant, token from AGENTBOX_TOKEN'),
    webhooks: WebhooksSchema.describe(`Webhooks of the local operator's sandboxes (tenant ${OPERATOR_TENANT}: the Unix socket, AGENTBOX_TOKEN)`),
    telemetry: TelemetrySchema,
    kubernetes: KubernetesSchema,
  })
  .strict()
  .superRefine((p, ctx) => {
    for (const problem of crossCheck(p)) ctx.addIssue({ code: 'custom', path: problem.path, message: problem.message });
  })
  .describe('agentbox policy file');

export type Policy = z.infer<typeof PolicySchema>;
export type Profile = z.infer<typeof ProfileSchema>;
export type ProfileEgress = z.infer<typeof ProfileEgressSchema>;
export type WebhookConfig = z.infer<typeof WebhookSchema>;

interface Problem {
  path: (string | number)[];
  message: string;
}

/** Checks that span fields: references resolve, allowlists agree, runtimes can give the isolation. */
function crossCheck(p: Policy): Problem[] {
  const out: Problem[] = [];
  const allowed = p.images === undefined ? null : new Set(p.images);
  const notAllowed = (image: string) => `image ${image} is not in images (${p.images?.join(', ')})`;
  if (allowed && !allowed.has(p.defaults.image)) out.push({ path: ['defaults', 'image'], message: notAllowed(p.defaults.image) });
  checkRuntime(p.defaults.runtime, p.defaults.isolation, ['defaults'], out);
  const checkEgress = (e: ProfileEgress | undefined, at: (string | number)[]) => {
    if (!e) return;
    if (e.mode === 'none' && ((e.presets?.length ?? 0) > 0 || (e.allow?.length ?? 0) > 0)) {
      out.push({ path: [...at, 'mode'], message: 'egress mode none takes no presets or allow list; use mode allowlist' });
    }
    (e.allow ?? []).forEach((host, i) => {
      const closed = closedAddressProblem(host, p.egress.allowRanges);
      if (closed !== null) out.push({ path: [...at, 'allow', i], message: closed });
    });
    (e.presets ?? []).forEach((preset, i) => {
      if (presetHosts(p.egress.presets, preset) === undefined) {
        const known = [...new Set([...Object.keys(p.egress.presets), ...Object.keys(BUILTIN_PRESETS)])];
        out.push({ path: [...at, 'presets', i], message: `unknown preset ${preset} (egress.presets has: ${known.join(', ') || 'none'})` });
      }
    });
  };
  for (const [preset, hosts] of Object.entries(p.egress.presets)) {
    hosts.forEach((host, i) => {
      const closed = closedAddressProblem(host, p.egress.allowRanges);
      if (closed !== null) out.push({ path: ['egress', 'presets', preset, i], message: closed });
    });
  }
  checkEgress(p.defaults.egress, ['defaults', 'egress']);
  for (const [pname, prof] of Object.entries(p.profiles)) {
    if (allowed && prof.image !== undefined && !allowed.has(prof.image)) {
      out.push({ path: ['profiles', pname, 'image'], message: notAllowed(prof.image) });
    }
    const runtime = prof.runtime ?? p.defaults.runtime;
    checkRuntime(runtime, prof.isolation, ['profiles', pname], out);
    checkEgress(prof.egress, ['profiles', pname, 'egress']);
  }
  p.pools.forEach((pool, i) => {
    if (pool.profile !== undefined && profileOf(p, pool.profile) === undefined) {
      out.push({ path: ['pools', i, 'profile'], message: `unknown profile ${pool.profile} (profiles: ${profileNames(p).join(', ')})` });
    }
    if (allowed && !allowed.has(pool.image)) out.push({ path: ['pools', i, 'image'], message: notAllowed(pool.image) });
  });
  checkWebhooks(p.webhooks, ['webhooks'], out);
  const names = new Set<string>();
  const tokenOwner = new Map<string, string>();
  (p.tenants ?? []).forEach((t, i) => {
    if (names.has(t.name)) out.push({ path: ['tenants', i, 'name'], message: `tenant ${t.name} is listed twice` });
    names.add(t.name);
    const secrets = [
      ...(t.tokens ?? []),
      ...(t.tokenSha256 ?? []).map((h) => `sha256:${h.toLowerCase()}`),
      ...(t.scopedTokens ?? []).map((s) => s.token ?? `sha256:${(s.sha256 ?? '').toLowerCase()}`),
    ];
    checkWebhooks(t.webhooks, ['tenants', i, 'webhooks'], out);
    if (secrets.length === 0) out.push({ path: ['tenants', i], message: `tenant ${t.name} has no tokens: add tokens or tokenSha256` });
    for (const s of secrets) {
      const owner = tokenOwner.get(s);
      // One token, two tenants: whoever holds it could act as either.
      if (owner !== undefined && owner !== t.name) out.push({ path: ['tenants', i, 'name'], message: `tenant ${t.name} shares a token with tenant ${owner}` });
      tokenOwner.set(s, t.name);
    }
  });
  return out;
}

function checkWebhooks(hooks: WebhookConfig[] | undefined, at: (string | number)[], out: Problem[]): void {
  const seen = new Set<string>();
  (hooks ?? []).forEach((h, i) => {
    // Each event would reach the same receiver twice, with the same event id.
    if (seen.has(h.url)) out.push({ path: [...at, i, 'url'], message: `webhook ${h.url} is listed twice` });
    seen.add(h.url);
  });
}

function checkRuntime(runtime: RuntimeName, isolation: Isolation | undefined, at: (string | number)[], out: Problem[]): void {
  if (isolation !== undefined && !isolationFits(runtime, isolation)) {
    out.push({ path: [...at, 'isolation'], message: `runtime ${runtime} cannot provide ${isolation} isolation (it offers ${RUNTIME_ISOLATIONS[runtime].join(', ')})` });
  }
}

function isCidr(s: string): boolean {
  return parseCidr(s) !== null;
}

/** The policy of a host without a policy file. */
export const DEFAULT_POLICY: Policy = deepFreeze(PolicySchema.parse({ version: 1 }));

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
