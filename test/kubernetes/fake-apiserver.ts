/**
 * A FAKE Kubernetes API server, for testing the kubernetes runtime on a machine where no real one can
 * run. It is not Kubernetes: it implements only what the driver uses, on the real paths, with the real
 * JSON shapes and wire protocols, so that the driver under test is the one that would talk to a cluster:
 *
 *  - discovery (/version, /api, /apis: agents.x-k8s.io when `crds` is set), namespaces get,
 *    selfsubjectaccessreviews (allowed, but for the resources in `denied`);
 *  - with `crds`: agent-sandbox's Sandbox (agents.x-k8s.io, v1beta1 and v1alpha1 as the CRD serves
 *    them): create (validated against the CRD's vendored schema, agent-sandbox-crd.json; unknown
 *    fields refused with fieldValidation=Strict, else pruned as a real API server prunes them), get,
 *    list (labelSelector), delete (the garbage collector then deletes the pods it owns). And a FAKE
 *    of agent-sandbox's controller (unless `controller: false`): it makes a Sandbox's pod as the real
 *    one does (named as the Sandbox, the template's labels and annotations minus the agents.x-k8s.io/
 *    ones, its sandbox-name-hash label, a controller owner reference, the pod-name annotation on the
 *    Sandbox), resets the pod's labels to the template's on every change (the real controller's
 *    updatePodMetadata), makes the pod again when it is deleted while its Sandbox is there, and keeps
 *    the Sandbox's Ready condition (True once the pod runs, is Ready and has an IP). Not modelled:
 *    Services, volumeClaimTemplates, shutdownTime, suspension, warm pools and claims;
 *  - pods: create, get, list and watch (labelSelector; `?watch=true` streams JSON lines; resourceVersion
 *    semantics: a watch from version V replays what changed after V, and answers an ERROR event with a
 *    410 Gone Status when V is older than the history it keeps), delete (graceful: deletionTimestamp,
 *    then gone), patch (merge-patch and strategic-merge-patch of metadata; a metadata.resourceVersion in
 *    the patch is a precondition: 409 Conflict when it is not the pod's);
 *  - networkpolicies: create, list, delete (stored; not enforced: a local sandbox has no network at all);
 *  - pods/exec over WebSocket with v5.channel.k8s.io and v4.channel.k8s.io (channel 0 stdin, 1 stdout,
 *    2 stderr, 3 the Status with the exit code, 255 close-of-stdin in v5);
 *  - the kubelet summary API through the node proxy (/api/v1/nodes/NODE/proxy/stats/summary).
 *
 * Each pod is backed by a sandbox of the REAL local runtime (bubblewrap + cgroups), so commands really
 * run: the pod's image names a test image, its resources and emptyDir sizeLimit become the sandbox's
 * limits (the pids limit comes from the driver's annotation, as a cluster enforcing per-pod pid limits
 * would read it), an exec runs in that sandbox as uid 1000 and is killed when its connection closes.
 * The container's command is NOT run: the local sandbox's PID 1 is the local runtime's own init (which
 * reaps orphans as the pod's init shell would). The fake refuses a pod spec the local sandbox could not
 * honour (not uid 1000, a writable root, capabilities not dropped, privilege escalation allowed).
 *
 * Plain HTTP on 127.0.0.1 with a bearer token it checks (the kubeconfig says insecure-skip-tls-verify,
 * which client-node requires for http). Knobs for tests: stop()/start() (the API server goes away and
 * comes back on the same port, state kept as etcd would), injectPatchConflicts(n), dropWatches(),
 * compactHistory() (older versions answer 410 Gone).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Limits } from '../../src/contract/model.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import type { SandboxHandle } from '../../src/runtime/types.js';
import { prune, sandboxCrd, validate, type VendoredCrd } from './structural-schema.js';

type Obj = Record<string, unknown> & { metadata: Meta };
interface Meta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  [k: string]: unknown;
}

interface FakePod {
  obj: Obj;
  local?: SandboxHandle;
  /** The local sandbox's start or removal in progress. */
  busy?: Promise<void>;
}

interface Event {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  obj: Obj;
}

export interface FakeApiServerOpts {
  /** The local runtime the pods run on (test/conformance/local.test.ts makes one the same way). */
  local: LocalRuntime;
  /** Pod image reference → local image name; undefined: unknown (the pod shows ErrImagePull). */
  resolveImage: (ref: string) => string | undefined;
  /** Namespaces that exist. @default ['default'] */
  namespaces?: string[];
  /** Serve the agent-sandbox CRDs: their groups in discovery, Sandbox objects and their controller. @default false */
  crds?: boolean;
  /** The Sandbox versions served, preferred first. @default ['v1beta1', 'v1alpha1'] (agent-sandbox's CRD today) */
  sandboxVersions?: string[];
  /** Run the fake agent-sandbox controller (false: Sandboxes get no pod, as with no controller running). @default true */
  controller?: boolean;
  /** How long the fake controller takes to react to a change, ms (a real one is never instant). @default 50 */
  controllerDelayMs?: number;
  /** Resources the access reviews deny (e.g. `sandboxes`): what a Role without them would answer. @default [] */
  denied?: string[];
  /** The pids limit of a pod without the driver's annotation (a kubelet's podPidsLimit). @default 1024 */
  podPidsLimit?: number;
  /** How long a pod stays Pending before its sandbox starts, ms. @default 0 */
  pendingMs?: number;
}

export const FAKE_NODE = 'fake-node';
const PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'];

function status(code: number, reason: string, message: string, details?: Record<string, unknown>): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code, ...(details ? { details } : {}) };
}

const clone = <T>(o: T): T => structuredClone(o);

/** RFC 7386 merge patch (strategic-merge-patch of the maps the driver patches behaves the same). */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Equality-based label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated. */
export function matchesSelector(labels: Record<string, string> | undefined, selector: string | null): boolean {
  if (!selector) return true;
  const l = labels ?? {};
  return selector.split(',').every((term) => {
    const t = term.trim();
    if (!t) return true;
    let m = /^([^!=]+)!=(.*)$/.exec(t);
    if (m) return l[m[1]!.trim()] !== m[2]!.trim();
    m = /^([^!=]+)==?(.*)$/.exec(t);
    if (m) return l[m[1]!.trim()] === m[2]!.trim();
    if (t.startsWith('!')) return !(t.slice(1) in l);
    return t in l;
  });
}

/** Kubernetes quantities the driver writes: `500m`, `2`, `256Mi`, `1Gi`, `64M`. */
export function quantity(q: unknown, unit: 'cores' | 'mib'): number | undefined {
  if (typeof q !== 'string' && typeof q !== 'number') return undefined;
  const m = /^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G)?$/.exec(String(q));
  if (!m) return undefined;
  const n = Number(m[1]);
  const suffix = m[2] ?? '';
  if (unit === 'cores') return suffix === 'm' ? n / 1000 : suffix === '' ? n : undefined;
  const bytes = n * ({ '': 1, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, k: 1e3, M: 1e6, G: 1e9, m: 1e-3 } as Record<string, number>)[suffix]!;
  return bytes / 1024 ** 2;
}

const SANDBOX_GROUP = 'agents.x-k8s.io';
/** agent-sandbox's label on a Sandbox's pod (and Service): FNV-1a of the Sandbox's name. */
const NAME_HASH_LABEL = `${SANDBOX_GROUP}/sandbox-name-hash`;
const POD_NAME_ANNOTATION = `${SANDBOX_GROUP}/pod-name`;

/** FNV-1a, 32 bits, as 8 hex digits (agent-sandbox's NameHash). */
export function nameHash(name: string): string {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(name, 'utf8')) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

type OwnerRef = { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean };

function controllerRef(obj: Obj): OwnerRef | undefined {
  return (obj.metadata.ownerReferences as OwnerRef[] | undefined)?.find((r) => r.controller === true);
}

/** The Sandbox that controls this object, by name. */
function ownerSandbox(obj: Obj): string | undefined {
  const ref = controllerRef(obj);
  return ref?.kind === 'Sandbox' && ref.apiVersion.startsWith(`${SANDBOX_GROUP}/`) ? ref.name : undefined;
}

export class FakeApiServer {
  readonly token = randomBytes(16).toString('hex');
  private server: Server | undefined;
  private port = 0;
  private readonly sockets = new Set<Socket>();
  private readonly watches = new Set<{ res: ServerResponse; ns: string; selector: string | null }>();
  private readonly execs = new Set<WebSocket>();
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, handleProtocols: (offered) => PROTOCOLS.find((p) => offered.has(p)) ?? false });
  private readonly namespaces: Set<string>;
  private readonly pods = new Map<string, FakePod>();
  private readonly policies = new Map<string, Obj>();
  private readonly sandboxes = new Map<string, Obj>();
  private crd: VendoredCrd | undefined;
  private closing = false;
  private loseSandboxCreateAnswer = false;
  private readonly reconciling = new Set<string>();
  private rv = 1;
  private history: Event[] = [];
  /** Watches from a version below this are answered 410 Gone. */
  private compactedRv = 0;
  private patchConflicts = 0;
  private execCounter = 0;
  /** What the tests look at: each watch request's resourceVersion ('' when none). */
  readonly watchRequests: string[] = [];
  /** The command of every pods/exec request, as its URL carried it (what an audit log would record). */
  readonly execCommands: string[][] = [];
  /** GETs of one pod, by name (what a status check costs the API server). */
  podReads = 0;
  /** Every local sandbox id the fake ever started (for the tests' leftover checks). */
  readonly localIdsEver: string[] = [];
  /** The RBAC verbs of every Sandbox request a client made (create, get, list, delete...). */
  readonly sandboxVerbs = new Set<string>();
  /** Patches answered 409 (injected or a stale resourceVersion). */
  conflicts = 0;

  constructor(private readonly opts: FakeApiServerOpts) {
    this.namespaces = new Set(opts.namespaces ?? ['default']);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Listens (again, on the same port after stop()). */
  async start(): Promise<void> {
    const server = createServer((req, res) => void this.handle(req, res).catch((err: unknown) => this.send(res, 500, status(500, 'InternalError', err instanceof Error ? err.message : String(err)))));
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
    server.on('upgrade', (req, socket: Socket, head) => this.upgrade(req, socket, head));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  /** The API server goes away: every connection (watches, execs) is cut; the state stays. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const ws of this.execs) ws.terminate();
    for (const w of this.watches) w.res.destroy();
    this.watches.clear();
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** A kubeconfig for the driver: this server, its token, and `namespace` as the context's. */
  writeKubeconfig(dir: string, namespace = 'default'): string {
    const path = join(dir, `fake-kubeconfig-${this.port}.json`);
    const config = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fake', cluster: { server: this.url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'fake', user: { token: this.token } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake', namespace } }],
      'current-context': 'fake',
    };
    writeFileSync(path, JSON.stringify(config), { mode: 0o600 });
    return path;
  }

  addNamespace(ns: string): void {
    this.namespaces.add(ns);
  }

  /** The next pod create is carried out, but its answer is lost (the connection is cut instead). */
  loseNextPodCreateAnswer(): void {
    this.loseCreateAnswer = true;
  }

  private loseCreateAnswer = false;

  /** The next `n` pod patches answer 409 Conflict, whatever their precondition. */
  injectPatchConflicts(n: number): void {
    this.patchConflicts += n;
  }

  /** Cuts every open watch (the clients see their stream end). */
  dropWatches(): void {
    for (const w of this.watches) w.res.destroy();
    this.watches.clear();
  }

  /**
   * As if changes nobody saw were made and then compacted away (etcd compaction): a watch from any
   * version seen so far gets 410 Gone.
   */
  compactHistory(): void {
    this.compactedRv = ++this.rv;
    this.history = [];
  }

  /** The pods as the API has them. */
  listPods(): Obj[] {
    return [...this.pods.values()].map((p) => clone(p.obj));
  }

  listPolicies(): Obj[] {
    return [...this.policies.values()].map((p) => clone(p));
  }

  /** From now on the access reviews deny these resources (e.g. `sandboxes`), allow the rest. */
  deny(resources: string[]): void {
    this.denied = [...resources];
  }

  private denied: string[] = [];

  /** The agent-sandbox Sandbox objects as the API has them. */
  listSandboxes(): Obj[] {
    return [...this.sandboxes.values()].map((p) => clone(p));
  }

  /** The next Sandbox create is carried out, but its answer is lost (the connection is cut instead). */
  loseNextSandboxCreateAnswer(): void {
    this.loseSandboxCreateAnswer = true;
  }

  /** Ids of the local sandboxes backing pods now. */
  localSandboxIds(): string[] {
    return [...this.pods.values()].flatMap((p) => (p.local ? [p.local.id] : []));
  }

  /** Stops serving and destroys every local sandbox (pods left behind included). */
  async close(): Promise<void> {
    this.closing = true;
    await this.stop();
    for (const p of this.pods.values()) await p.busy?.catch(() => undefined);
    await Promise.all([...this.orphans]);
    for (const p of this.pods.values()) if (p.local) await this.opts.local.destroy(p.local).catch(() => undefined);
    this.pods.clear();
    this.wss.close();
  }

  // ---------- HTTP ----------

  private send(res: ServerResponse, code: number, body: unknown): void {
    if (res.headersSent || res.destroyed) return;
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private authorized(req: IncomingMessage): boolean {
    return req.headers.authorization === `Bearer ${this.token}`;
  }

  private async body(req: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    return text ? JSON.parse(text) : undefined;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.authorized(req)) return this.send(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
    const url = new URL(req.url ?? '/', 'http://fake');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    let m: RegExpExecArray | null;

    if (path === '/version') return this.send(res, 200, { major: '1', minor: '31', gitVersion: 'v1.31.0-fake', platform: 'linux/amd64' });
    if (path === '/api') return this.send(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] });
    if (path === '/apis') return this.send(res, 200, this.discovery());
    if (method === 'POST' && path === '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews') {
      const body = (await this.body(req)) as { spec?: { resourceAttributes?: { resource?: string } } };
      const resource = body.spec?.resourceAttributes?.resource ?? '';
      const denied = [...(this.opts.denied ?? []), ...this.denied].includes(resource);
      return this.send(res, 201, { ...body, status: denied ? { allowed: false, reason: `the fake API server denies ${resource}` } : { allowed: true, reason: 'the fake API server allows everything else' } });
    }
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)$/.exec(path)) && method === 'GET') {
      const ns = decodeURIComponent(m[1]!);
      if (!this.namespaces.has(ns)) return this.send(res, 404, status(404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' }));
      return this.send(res, 200, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, uid: ns, resourceVersion: '1' }, status: { phase: 'Active' } });
    }
    // The node proxy's path arrives escaped (client-node encodes `stats/summary` as one path parameter).
    if ((m = /^\/api\/v1\/nodes\/([^/]+)\/proxy\/stats\/summary$/.exec(decodeURIComponent(path))) && method === 'GET') return this.summary(res, decodeURIComponent(m[1]!));
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(path))) {
      const ns = decodeURIComponent(m[1]!);
      if (!this.namespaces.has(ns)) return this.send(res, 404, status(404, 'NotFound', `namespaces "${ns}" not found`));
      if (method === 'POST') return this.createPod(res, ns, (await this.body(req)) as Obj);
      if (method === 'GET' && (url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1')) return this.watch(req, res, ns, url.searchParams);
      if (method === 'GET') {
        const items = [...this.pods.values()].filter((p) => p.obj.metadata.namespace === ns && matchesSelector(p.obj.metadata.labels, url.searchParams.get('labelSelector'))).map((p) => clone(p.obj));
        return this.send(res, 200, { apiVersion: 'v1', kind: 'PodList', metadata: { resourceVersion: String(this.rv) }, items });
      }
    }
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(path))) {
      const key = `${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}`;
      const pod = this.pods.get(key);
      if (!pod) return this.send(res, 404, status(404, 'NotFound', `pods "${decodeURIComponent(m[2]!)}" not found`, { name: decodeURIComponent(m[2]!), kind: 'pods' }));
      if (method === 'GET') {
        this.podReads++;
        return this.send(res, 200, clone(pod.obj));
      }
      if (method === 'DELETE') {
        const body = (await this.body(req).catch(() => undefined)) as { gracePeriodSeconds?: number } | undefined;
        const grace = Number(url.searchParams.get('gracePeriodSeconds') ?? body?.gracePeriodSeconds ?? 30);
        return this.deletePod(res, key, pod, grace);
      }
      if (method === 'PATCH') return this.patchPod(res, key, pod, req.headers['content-type'] ?? '', await this.body(req));
    }
    if ((m = /^\/apis\/agents\.x-k8s\.io\/([^/]+)\/namespaces\/([^/]+)\/sandboxes(?:\/([^/]+))?$/.exec(path)) && this.opts.crds && this.sandboxVersions().includes(m[1]!)) {
      return this.sandboxRequest(req, res, method, url, m[1]!, decodeURIComponent(m[2]!), m[3] ? decodeURIComponent(m[3]) : undefined);
    }
    if ((m = /^\/apis\/networking\.k8s\.io\/v1\/namespaces\/([^/]+)\/networkpolicies(?:\/([^/]+))?$/.exec(path))) {
      const ns = decodeURIComponent(m[1]!);
      const name = m[2] ? decodeURIComponent(m[2]) : undefined;
      if (!this.namespaces.has(ns)) return this.send(res, 404, status(404, 'NotFound', `namespaces "${ns}" not found`));
      if (!name && method === 'POST') {
        const obj = (await this.body(req)) as Obj;
        const key = `${ns}/${obj.metadata?.name}`;
        if (this.policies.has(key)) return this.send(res, 409, status(409, 'AlreadyExists', `networkpolicies.networking.k8s.io "${obj.metadata.name}" already exists`));
        obj.metadata = { ...obj.metadata, namespace: ns, uid: randomUUID(), resourceVersion: String(++this.rv), creationTimestamp: new Date().toISOString() };
        this.policies.set(key, obj);
        return this.send(res, 201, obj);
      }
      if (!name && method === 'GET') {
        const items = [...this.policies.values()].filter((p) => p.metadata.namespace === ns && matchesSelector(p.metadata.labels, url.searchParams.get('labelSelector')));
        return this.send(res, 200, { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicyList', metadata: { resourceVersion: String(this.rv) }, items });
      }
      if (name && method === 'DELETE') {
        if (!this.policies.delete(`${ns}/${name}`)) return this.send(res, 404, status(404, 'NotFound', `networkpolicies.networking.k8s.io "${name}" not found`));
        this.rv++;
        return this.send(res, 200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success' });
      }
    }
    this.send(res, 404, status(404, 'NotFound', `the fake API server does not serve ${method} ${path}`));
  }

  private discovery(): Record<string, unknown> {
    const group = (name: string, ...versions: string[]): Record<string, unknown> => ({
      name,
      versions: versions.map((version) => ({ groupVersion: `${name}/${version}`, version })),
      preferredVersion: { groupVersion: `${name}/${versions[0]}`, version: versions[0] },
    });
    return {
      kind: 'APIGroupList',
      apiVersion: 'v1',
      groups: [group('networking.k8s.io', 'v1'), group('authorization.k8s.io', 'v1'), ...(this.opts.crds ? [group('agents.x-k8s.io', ...this.sandboxVersions()), group('extensions.agents.x-k8s.io', ...this.sandboxVersions())] : [])],
    };
  }

  // ---------- pods ----------

  private record(type: Event['type'], obj: Obj): void {
    const ev: Event = { rv: Number(obj.metadata.resourceVersion), type, obj: clone(obj) };
    this.history.push(ev);
    if (this.history.length > 10_000) {
      this.compactedRv = this.history[0]!.rv;
      this.history.shift();
    }
    for (const w of this.watches) if (obj.metadata.namespace === w.ns && matchesSelector(obj.metadata.labels, w.selector)) w.res.write(`${JSON.stringify({ type, object: ev.obj })}\n`);
    // The controller watches the pods it owns.
    const owner = ownerSandbox(obj);
    if (owner) this.scheduleReconcile(`${obj.metadata.namespace}/${owner}`);
  }

  private bump(pod: FakePod, change: (o: Obj) => void): void {
    change(pod.obj);
    pod.obj.metadata.resourceVersion = String(++this.rv);
    this.record('MODIFIED', pod.obj);
  }

  /** Why the local runtime could not honour this pod faithfully, or undefined. */
  private unfaithful(obj: Obj): string | undefined {
    const spec = obj.spec as { containers?: { securityContext?: Record<string, unknown> }[]; securityContext?: Record<string, unknown>; hostNetwork?: boolean; hostPID?: boolean; hostIPC?: boolean } | undefined;
    const c = spec?.containers?.[0];
    if (!c || spec.containers!.length !== 1) return 'the fake API server backs pods of exactly one container';
    const sc = { ...spec.securityContext, ...c.securityContext };
    if (sc.runAsUser !== 1000 || sc.runAsNonRoot !== true) return 'the fake API server runs pods only as uid 1000 (runAsNonRoot)';
    if (c.securityContext?.readOnlyRootFilesystem !== true) return 'the fake API server runs pods only with a read-only root';
    if (c.securityContext?.allowPrivilegeEscalation !== false) return 'the fake API server runs pods only without privilege escalation';
    const drop = (c.securityContext?.capabilities as { drop?: string[] } | undefined)?.drop ?? [];
    if (!drop.includes('ALL')) return 'the fake API server runs pods only with every capability dropped';
    if (spec.hostNetwork || spec.hostPID || spec.hostIPC) return 'the fake API server has no host namespaces to share';
    return undefined;
  }

  private createPod(res: ServerResponse, ns: string, obj: Obj): void {
    const made = this.admitPod(ns, obj);
    if (made.code !== 201) return this.send(res, made.code, made.body);
    if (this.loseCreateAnswer) {
      this.loseCreateAnswer = false;
      res.socket?.destroy();
    } else this.send(res, 201, made.body);
  }

  /** A pod create, from a client or from the fake controller: the answer's code and body. */
  private admitPod(ns: string, obj: Obj): { code: number; body: unknown } {
    const name = obj?.metadata?.name;
    if (!name || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name) || name.length > 253) return { code: 422, body: status(422, 'Invalid', `Pod "${name}" is invalid: metadata.name`) };
    const key = `${ns}/${name}`;
    if (this.pods.has(key)) return { code: 409, body: status(409, 'AlreadyExists', `pods "${name}" already exists`, { name, kind: 'pods' }) };
    const why = this.unfaithful(obj);
    if (why) return { code: 422, body: status(422, 'Invalid', `Pod "${name}" is invalid: ${why}`) };
    obj.metadata = { ...obj.metadata, namespace: ns, uid: randomUUID(), creationTimestamp: new Date().toISOString(), resourceVersion: String(++this.rv) };
    obj.spec = { ...(obj.spec as object), nodeName: FAKE_NODE };
    const image = ((obj.spec as { containers: { image: string }[] }).containers[0]!).image;
    obj.status = { phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'True' }], containerStatuses: [{ name: 'sandbox', image, imageID: '', ready: false, restartCount: 0, state: { waiting: { reason: 'ContainerCreating' } } }] };
    const pod: FakePod = { obj };
    this.pods.set(key, pod);
    this.record('ADDED', obj);
    const body = clone(obj);
    pod.busy = this.startPod(key, pod).catch(() => undefined);
    return { code: 201, body };
  }

  private async startPod(key: string, pod: FakePod): Promise<void> {
    if (this.opts.pendingMs) await new Promise((r) => setTimeout(r, this.opts.pendingMs));
    const spec = pod.obj.spec as { containers: { image: string; resources?: { limits?: Record<string, string> } }[]; volumes?: { name: string; emptyDir?: { sizeLimit?: string } }[] };
    const c = spec.containers[0]!;
    const local = this.opts.resolveImage(c.image);
    const setWaiting = (reason: string, message: string): void =>
      this.bump(pod, (o) => ((o.status as { containerStatuses: Record<string, unknown>[] }).containerStatuses[0]!.state = { waiting: { reason, message } }));
    if (!local) return setWaiting('ErrImagePull', `failed to pull image "${c.image}": not found (the fake API server knows only the test images)`);
    try {
      this.opts.local.prepareImage(local).catch(() => undefined);
      const disk = spec.volumes?.find((v) => v.emptyDir?.sizeLimit)?.emptyDir?.sizeLimit;
      const limits: Limits = {
        cpus: quantity(c.resources?.limits?.cpu, 'cores') ?? 1,
        memoryMb: Math.round(quantity(c.resources?.limits?.memory, 'mib') ?? 512),
        pids: Number(pod.obj.metadata.annotations?.['agentbox.dev/pids-limit'] ?? this.opts.podPidsLimit ?? 1024),
        diskMb: Math.round(quantity(disk, 'mib') ?? 1024),
      };
      const label = pod.obj.metadata.labels?.['agentbox.dev/sandbox-id'];
      const id = label && /^[a-z0-9_]{1,40}$/.test(label) ? label : `fake_${randomBytes(6).toString('hex')}`;
      try {
        this.localIdsEver.push(id);
        pod.local = await this.opts.local.create({ id, image: local, isolation: 'namespaces', limits, labels: {} });
      } catch (err) {
        if ((err as { code?: string }).code === 'not_found') return setWaiting('ErrImagePull', `failed to pull image "${c.image}": ${(err as Error).message}`);
        throw err;
      }
      if (!this.pods.has(key) || pod.obj.metadata.deletionTimestamp) return; // deleted meanwhile: deletePod destroys it
      this.bump(pod, (o) => {
        const now = new Date().toISOString();
        o.status = {
          phase: 'Running',
          hostIP: '127.0.0.1',
          podIP: '10.0.0.1',
          startTime: now,
          conditions: [{ type: 'PodScheduled', status: 'True' }, { type: 'Initialized', status: 'True' }, { type: 'ContainersReady', status: 'True' }, { type: 'Ready', status: 'True' }],
          containerStatuses: [{ name: 'sandbox', image: c.image, imageID: `fake://${local}`, ready: true, started: true, restartCount: 0, state: { running: { startedAt: now } } }],
        };
      });
    } catch (err) {
      this.bump(pod, (o) => {
        o.status = { phase: 'Failed', message: err instanceof Error ? err.message : String(err), reason: 'FakeLocalSandboxFailed' };
      });
    }
  }

  /** RES: the client's request; none when the garbage collector deletes. */
  private deletePod(res: ServerResponse | undefined, key: string, pod: FakePod, grace: number): void {
    const reply = (body: unknown): void => {
      if (res) this.send(res, 200, body);
    };
    const gone = async (): Promise<void> => {
      if (pod.local) await this.opts.local.destroy(pod.local).catch(() => undefined);
      pod.local = undefined;
      if (this.pods.get(key) !== pod) return;
      this.pods.delete(key);
      pod.obj.metadata.resourceVersion = String(++this.rv);
      this.record('DELETED', pod.obj);
    };
    if (pod.obj.metadata.deletionTimestamp) return reply(clone(pod.obj));
    if (grace <= 0) {
      // Gone from the API at once; the "kubelet" (the local runtime) cleans up after.
      this.pods.delete(key);
      pod.obj.metadata.resourceVersion = String(++this.rv);
      this.record('DELETED', pod.obj);
      reply(clone(pod.obj));
      const removal = (async () => {
        await pod.busy;
        if (pod.local) await this.opts.local.destroy(pod.local).catch(() => undefined);
        pod.local = undefined;
      })();
      pod.busy = removal;
      this.orphans.add(removal);
      void removal.finally(() => this.orphans.delete(removal));
      return;
    }
    this.bump(pod, (o) => {
      o.metadata.deletionTimestamp = new Date(Date.now() + grace * 1000).toISOString();
      o.metadata.deletionGracePeriodSeconds = grace;
    });
    reply(clone(pod.obj));
    const prior = pod.busy;
    pod.busy = (async () => {
      await prior;
      await gone();
    })();
  }

  private readonly orphans = new Set<Promise<void>>();

  private patchPod(res: ServerResponse, key: string, pod: FakePod, contentType: string, patch: unknown): void {
    if (!/application\/(merge-patch|strategic-merge-patch)\+json/.test(contentType)) {
      return this.send(res, 415, status(415, 'UnsupportedMediaType', `the fake API server takes merge-patch and strategic-merge-patch, not ${contentType}`));
    }
    const name = pod.obj.metadata.name;
    const wanted = (patch as { metadata?: { resourceVersion?: string } } | undefined)?.metadata?.resourceVersion;
    if (this.patchConflicts > 0 || (wanted !== undefined && wanted !== pod.obj.metadata.resourceVersion)) {
      if (this.patchConflicts > 0) this.patchConflicts--;
      this.conflicts++;
      return this.send(res, 409, status(409, 'Conflict', `Operation cannot be fulfilled on pods "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, kind: 'pods' }));
    }
    // Only metadata's labels and annotations change on a pod that runs.
    const p = patch as { metadata?: { labels?: unknown; annotations?: unknown } };
    const next = mergePatch({ labels: pod.obj.metadata.labels ?? {}, annotations: pod.obj.metadata.annotations ?? {} }, { labels: p.metadata?.labels ?? {}, annotations: p.metadata?.annotations ?? {} }) as { labels: Record<string, string>; annotations: Record<string, string> };
    this.bump(pod, (o) => {
      o.metadata.labels = next.labels;
      o.metadata.annotations = next.annotations;
    });
    this.send(res, 200, clone(pod.obj));
  }

  private watch(req: IncomingMessage, res: ServerResponse, ns: string, q: URLSearchParams): void {
    const from = q.get('resourceVersion') ?? '';
    this.watchRequests.push(from);
    const selector = q.get('labelSelector');
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // At once, as an API server does: a client waits for the headers before it can abort its watch.
    res.flushHeaders();
    const line = (type: string, object: unknown): boolean => res.write(`${JSON.stringify({ type, object })}\n`);
    if (from === '' || from === '0') {
      for (const p of this.pods.values()) if (p.obj.metadata.namespace === ns && matchesSelector(p.obj.metadata.labels, selector)) line('ADDED', p.obj);
    } else {
      const v = Number(from);
      if (!Number.isFinite(v) || v < this.compactedRv) {
        line('ERROR', status(410, 'Expired', `too old resource version: ${from} (${this.compactedRv})`));
        return void res.end();
      }
      for (const ev of this.history) if (ev.rv > v && ev.obj.metadata.namespace === ns && matchesSelector(ev.obj.metadata.labels, selector)) line(ev.type, ev.obj);
    }
    const w = { res, ns, selector };
    this.watches.add(w);
    req.once('close', () => this.watches.delete(w));
  }

  private async summary(res: ServerResponse, node: string): Promise<void> {
    if (node !== FAKE_NODE) return this.send(res, 404, status(404, 'NotFound', `nodes "${node}" not found`));
    const pods = [];
    for (const p of this.pods.values()) {
      if (!p.local) continue;
      const s = await this.opts.local.stats(p.local).catch(() => undefined);
      if (!s) continue;
      const time = new Date().toISOString();
      pods.push({
        podRef: { name: p.obj.metadata.name, namespace: p.obj.metadata.namespace, uid: p.obj.metadata.uid },
        startTime: p.obj.metadata.creationTimestamp,
        containers: [{ name: 'sandbox', cpu: { time, usageCoreNanoSeconds: s.cpuMs * 1e6 }, memory: { time, workingSetBytes: s.memoryBytes } }],
        cpu: { time, usageCoreNanoSeconds: s.cpuMs * 1e6 },
        memory: { time, workingSetBytes: s.memoryBytes },
        process_stats: { process_count: s.pids },
      });
    }
    this.send(res, 200, { node: { nodeName: FAKE_NODE }, pods });
  }

  // ---------- agent-sandbox: Sandbox objects and a fake of their controller ----------

  private sandboxVersions(): string[] {
    return this.opts.sandboxVersions ?? ['v1beta1', 'v1alpha1'];
  }

  private async sandboxRequest(req: IncomingMessage, res: ServerResponse, method: string, url: URL, version: string, ns: string, name: string | undefined): Promise<void> {
    if (!this.namespaces.has(ns)) return this.send(res, 404, status(404, 'NotFound', `namespaces "${ns}" not found`));
    const apiVersion = `${SANDBOX_GROUP}/${version}`;
    this.sandboxVerbs.add(({ POST: 'create', DELETE: 'delete', PATCH: 'patch', PUT: 'update' } as Record<string, string>)[method] ?? (name ? 'get' : url.searchParams.get('watch') ? 'watch' : 'list'));
    const inVersion = (o: Obj): Obj => ({ ...clone(o), apiVersion });
    if (!name && method === 'POST') {
      const obj = (await this.body(req)) as Obj;
      if (obj?.apiVersion !== apiVersion || obj.kind !== 'Sandbox') return this.send(res, 400, status(400, 'BadRequest', `the body is a ${String(obj?.kind)} of ${String(obj?.apiVersion)}, not a Sandbox of ${apiVersion}`));
      const n = obj.metadata?.name;
      if (!n || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(n) || n.length > 253) return this.send(res, 422, status(422, 'Invalid', `Sandbox "${n}" is invalid: metadata.name`));
      this.crd ??= sandboxCrd();
      const schema = this.crd.versions[version]!.schema;
      const problems = validate(schema, obj);
      const strict = url.searchParams.get('fieldValidation') === 'Strict';
      const refused = problems.filter((p) => strict || !p.endsWith('(the API server would prune it)'));
      if (refused.length > 0) return this.send(res, 422, status(422, 'Invalid', `Sandbox.${SANDBOX_GROUP} "${n}" is invalid: ${refused.join('; ')}`));
      const key = `${ns}/${n}`;
      if (this.sandboxes.has(key)) return this.send(res, 409, status(409, 'AlreadyExists', `sandboxes.${SANDBOX_GROUP} "${n}" already exists`, { name: n, group: SANDBOX_GROUP, kind: 'sandboxes' }));
      const stored = prune(schema, obj) as Obj;
      stored.metadata = { ...obj.metadata, namespace: ns, uid: randomUUID(), generation: 1, resourceVersion: String(++this.rv), creationTimestamp: new Date().toISOString() };
      this.sandboxes.set(key, stored);
      if (this.loseSandboxCreateAnswer) {
        this.loseSandboxCreateAnswer = false;
        res.socket?.destroy();
      } else this.send(res, 201, inVersion(stored));
      return this.scheduleReconcile(key);
    }
    if (!name && method === 'GET') {
      const items = [...this.sandboxes.values()].filter((o) => o.metadata.namespace === ns && matchesSelector(o.metadata.labels, url.searchParams.get('labelSelector'))).map(inVersion);
      return this.send(res, 200, { apiVersion, kind: 'SandboxList', metadata: { resourceVersion: String(this.rv) }, items });
    }
    const key = `${ns}/${name}`;
    const obj = this.sandboxes.get(key);
    if (name && !obj) return this.send(res, 404, status(404, 'NotFound', `sandboxes.${SANDBOX_GROUP} "${name}" not found`, { name, group: SANDBOX_GROUP, kind: 'sandboxes' }));
    if (obj && method === 'GET') return this.send(res, 200, inVersion(obj));
    if (obj && method === 'DELETE') {
      // No finalizers: the object goes at once; the garbage collector deletes what it owns after.
      this.sandboxes.delete(key);
      obj.metadata.resourceVersion = String(++this.rv);
      this.send(res, 200, inVersion(obj));
      setImmediate(() => {
        for (const [podKey, pod] of this.pods) {
          const ref = controllerRef(pod.obj);
          if (ref?.kind === 'Sandbox' && ref.uid === obj.metadata.uid) this.deletePod(undefined, podKey, pod, Number((pod.obj.spec as { terminationGracePeriodSeconds?: number }).terminationGracePeriodSeconds ?? 30));
        }
      });
      return;
    }
    this.send(res, 405, status(405, 'MethodNotAllowed', `the fake API server does not serve ${method} on sandboxes`));
  }

  private scheduleReconcile(key: string): void {
    if (!this.opts.crds || this.opts.controller === false || this.closing || this.reconciling.has(key)) return;
    this.reconciling.add(key);
    setTimeout(() => {
      this.reconciling.delete(key);
      this.reconcileSandbox(key);
    }, this.opts.controllerDelayMs ?? 50);
  }

  /** agent-sandbox's reconcilePod and computeReadyCondition, for what the driver uses. */
  private reconcileSandbox(key: string): void {
    const sbx = this.sandboxes.get(key);
    if (!sbx || this.closing) return;
    const ns = sbx.metadata.namespace!;
    const template = (sbx.spec as { podTemplate: { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: unknown } }).podTemplate;
    const system = (k: string): boolean => k.startsWith(`${SANDBOX_GROUP}/`) || k.startsWith(`extensions.${SANDBOX_GROUP}/`);
    const templateLabels = Object.fromEntries(Object.entries(template.metadata?.labels ?? {}).filter(([k]) => !system(k)));
    const labels = { ...templateLabels, [NAME_HASH_LABEL]: nameHash(sbx.metadata.name) };
    const podName = sbx.metadata.annotations?.[POD_NAME_ANNOTATION] || sbx.metadata.name;
    let pod = this.pods.get(`${ns}/${podName}`);
    if (!pod) {
      const annotations: Record<string, string> = Object.fromEntries(Object.entries(template.metadata?.annotations ?? {}).filter(([k]) => !system(k)));
      if (Object.keys(templateLabels).length > 0) annotations[`${SANDBOX_GROUP}/propagated-labels`] = Object.keys(templateLabels).sort().join(',');
      const owner = { apiVersion: `${SANDBOX_GROUP}/${this.sandboxVersions()[0]}`, kind: 'Sandbox', name: sbx.metadata.name, uid: sbx.metadata.uid, controller: true, blockOwnerDeletion: true };
      const made = this.admitPod(ns, { apiVersion: 'v1', kind: 'Pod', metadata: { name: sbx.metadata.name, labels, annotations, ownerReferences: [owner] }, spec: clone(template.spec) });
      if (made.code !== 201) return this.setReady(sbx, undefined, `Error seen: ${(made.body as { message?: string }).message ?? made.code}`);
      sbx.metadata.annotations = { ...sbx.metadata.annotations, [POD_NAME_ANNOTATION]: sbx.metadata.name };
      sbx.metadata.resourceVersion = String(++this.rv);
      pod = this.pods.get(`${ns}/${sbx.metadata.name}`);
    } else if (controllerRef(pod.obj)?.uid !== sbx.metadata.uid) {
      return this.setReady(sbx, undefined, `Error seen: pod "${podName}" is not owned by sandbox "${sbx.metadata.name}"`);
    } else if (Object.entries(labels).some(([k, v]) => pod!.obj.metadata.labels?.[k] !== v)) {
      // updatePodMetadata: the template's labels win over a patch of the pod's.
      this.bump(pod, (o) => {
        o.metadata.labels = { ...o.metadata.labels, ...labels };
      });
    }
    this.setReady(sbx, pod);
  }

  private setReady(sbx: Obj, pod: FakePod | undefined, error?: string): void {
    const st = pod?.obj.status as { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] } | undefined;
    const podReady = st?.phase === 'Running' && st.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') && !!st.podIP;
    const [state, reason, message] = error
      ? ['False', 'ReconcilerError', error]
      : !pod
        ? ['False', 'DependenciesNotReady', 'Pod does not exist']
        : st?.phase === 'Failed' || st?.phase === 'Succeeded'
          ? ['False', `Pod${st.phase}`, `Pod ${st.phase === 'Failed' ? 'failed' : 'completed successfully'}`]
          : podReady
            ? ['True', 'DependenciesReady', 'Pod is Ready']
            : ['False', 'DependenciesNotReady', `Pod exists with phase: ${st?.phase ?? ''}`];
    sbx.status = { conditions: [{ type: 'Ready', status: state, reason, message, observedGeneration: 1, lastTransitionTime: new Date().toISOString() }], ...(podReady ? { podIPs: [st.podIP] } : {}) };
    sbx.metadata.resourceVersion = String(++this.rv);
  }

  // ---------- pods/exec ----------

  private refuseUpgrade(socket: Socket, code: number, body: Record<string, unknown>): void {
    const text = JSON.stringify(body);
    socket.end(`HTTP/1.1 ${code} ${code === 404 ? 'Not Found' : code === 401 ? 'Unauthorized' : 'Bad Request'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
  }

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', () => undefined);
    if (!this.authorized(req)) return this.refuseUpgrade(socket, 401, status(401, 'Unauthorized', 'Unauthorized'));
    const url = new URL(req.url ?? '/', 'http://fake');
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/exec$/.exec(url.pathname);
    if (!m) return this.refuseUpgrade(socket, 404, status(404, 'NotFound', 'not found'));
    const name = decodeURIComponent(m[2]!);
    const pod = this.pods.get(`${decodeURIComponent(m[1]!)}/${name}`);
    if (!pod) return this.refuseUpgrade(socket, 404, status(404, 'NotFound', `pods "${name}" not found`, { name, kind: 'pods' }));
    const local = pod.local;
    if (!local || (pod.obj.status as { phase?: string }).phase !== 'Running' || pod.obj.metadata.deletionTimestamp) {
      return this.refuseUpgrade(socket, 400, status(400, 'BadRequest', `container sandbox is not running in pod ${name}`));
    }
    const command = url.searchParams.getAll('command');
    if (command.length === 0) return this.refuseUpgrade(socket, 400, status(400, 'BadRequest', 'you must specify at least 1 command'));
    const withStdin = url.searchParams.get('stdin') === 'true' || url.searchParams.get('stdin') === '1';
    this.execCommands.push(command);
    this.wss.handleUpgrade(req, socket, head, (ws) => this.runExec(ws, local, command, withStdin));
  }

  private runExec(ws: WebSocket, local: SandboxHandle, command: string[], withStdin: boolean): void {
    this.execs.add(ws);
    const v5 = ws.protocol === 'v5.channel.k8s.io';
    const abort = new AbortController();
    const stdin = withStdin ? new PassThrough() : undefined;
    let finished = false;
    ws.on('message', (data: Buffer) => {
      if (!stdin || data.length === 0) return;
      if (data[0] === 0) stdin.write(data.subarray(1));
      else if (v5 && data[0] === 255 && data[1] === 0) stdin.end();
    });
    ws.on('error', () => undefined);
    ws.once('close', () => {
      this.execs.delete(ws);
      // A connection that goes away takes its command with it.
      if (!finished) abort.abort();
      stdin?.end();
    });
    const send = (channel: number, payload: Buffer): void => {
      if (ws.readyState === ws.OPEN) ws.send(Buffer.concat([Buffer.from([channel]), payload]));
    };
    void (async () => {
      let exitCode: number;
      try {
        const events = this.opts.local.exec(local, command, {
          env: {}, ...(stdin ? { stdin } : {}), timeoutMs: 7 * 24 * 3600_000, outputLimitBytes: Number.MAX_SAFE_INTEGER, execId: `fake_exec_${++this.execCounter}`, signal: abort.signal,
        });
        exitCode = -1;
        for await (const ev of events) {
          if (ev.type === 'stdout') send(1, ev.data);
          else if (ev.type === 'stderr') send(2, ev.data);
          else exitCode = ev.result.exitCode;
          // Flow control: a reader that pauses holds this exec's output here, not in memory without bound.
          while (ws.readyState === ws.OPEN && ws.bufferedAmount > 1 << 20) await new Promise((r) => setTimeout(r, 5));
        }
      } catch (err) {
        finished = true;
        send(3, Buffer.from(JSON.stringify({ metadata: {}, status: 'Failure', message: `error executing command in container: ${err instanceof Error ? err.message : String(err)}`, reason: 'InternalError', code: 500 })));
        ws.close(1000);
        return;
      }
      finished = true;
      const st =
        exitCode === 0
          ? { metadata: {}, status: 'Success' }
          : { metadata: {}, status: 'Failure', message: `command terminated with non-zero exit code: error executing command [${command.join(' ')}], exit code ${exitCode}`, reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: String(exitCode) }] } };
      send(3, Buffer.from(JSON.stringify(st)));
      ws.close(1000);
    })();
  }
}
