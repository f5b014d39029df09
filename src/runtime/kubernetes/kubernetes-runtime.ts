/**
 * The `kubernetes` runtime: one hardened Pod per sandbox (pod-spec.ts) in a namespace of a cluster,
 * made directly or, where kubernetes-sigs/agent-sandbox is installed, by its controller from a
 * `Sandbox` object (agent-sandbox.ts), plus a NetworkPolicy that closes its network (no ingress; no
 * egress, or only to the egress proxy).
 * Isolation is the pod's RuntimeClass: `container` the cluster's default (runc), `gvisor` RuntimeClass
 * gvisor, `vm` RuntimeClass kata (configurable per isolation).
 *
 * How an exec works (the pods/exec subresource has no timeout, no kill, no environment, no cwd):
 * at create, agentbox-docker-init (the static helper the docker driver binds into its containers) is
 * streamed into the pod through one exec (`cat > /tmp/.agentbox/init`), so nothing of agentbox has to
 * be in the image. Every exec then runs as
 *     /bin/sh -c EXEC_SCRIPT CWD INIT run TIMEOUT_MS TAG -- CMD...
 * which reads the exec's environment from the head of stdin (never the request's URL, which audit
 * logs keep), cds, and execs `env -i K=V... INIT run ...`: `env -i` replaces the container's
 * environment with the exec's (nothing of the pod's leaks in);
 * `run` (native/agentbox-docker-init.c) runs CMD in its own session, relays the leader's output and
 * exits with its status as soon as it exits (background jobs drained, never SIGPIPEd), and on the
 * timeout kills the whole tree (session, parent links and the AGENTBOX_EXEC_ID marker: setsid and
 * double-forked escapees too) and exits 124. An abort runs a second exec, `INIT kill TAG`, which
 * SIGTERMs that `run` (it kills the tree the same way). Output limits are applied on this side
 * (runtime/exec-events.ts `execEvents`, shared with the docker driver), which also keeps a backstop: past
 * the timeout plus 5 s it kills by tag and drops the connection. Files, processes, ports and terminals
 * are the same helper's `fileop`/`ps`/`signal` modes over exec'd streams (files.ts and friends).
 *
 * The staged helper lives in /tmp, which the sandbox user can write: a sandbox can replace it and so
 * defeat the in-pod timeout of its own later execs (the backstop still drops their connections). It
 * gains nothing beyond its own pod. An init container copying the helper from an agentbox image into a
 * volume mounted read-only would close that; it needs an image of agentbox's in a registry.
 */
import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { PassThrough, type Duplex, type Readable } from 'node:stream';
import { buffer as readAllOf, text } from 'node:stream/consumers';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ApisApi, PatchStrategy, setHeaderOptions, VersionApi, type V1NetworkPolicy, type V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { BadRequestError, ConflictError, InternalError, NotFoundError, RuntimeUnavailableError, TimeoutError } from '../../contract/errors.js';
import { EXIT_KILLED } from '../../contract/exit-codes.js';
import type { DirEntry, ExecEvent, Isolation, ProcessInfo, SignalName } from '../../contract/model.js';
import { MIN_EGRESS_SECRET_LENGTH, proxyEnvFor, sandboxProxyUrl } from '../egress-plumbing.js';
import { execEvents } from '../exec-events.js';
import { SandboxFiles, type FileOpStarter } from '../files.js';
import { SandboxPorts } from '../ports.js';
import { SandboxProcesses, type ProcOpRunner } from '../processes.js';
import { SandboxPty, type PtyOpts, type PtyProcess } from '../pty.js';
import { execEnv } from '../shared.js';
import type { ExecOpts, PooledCount, ProbeResult, Runtime, RuntimeObject, RuntimeSpec, RuntimeStats, RuntimeStatus, SandboxHandle } from '../types.js';
import { AgentSandboxes, awaitingController, type AgentSandboxMode, type AgentSandboxSupport } from './agent-sandbox.js';
import { ANNOTATION_CLAIMED_AT, claimable, claimFirst } from './claim.js';
import { apiError, Cluster, KUBECONFIG_ENV, loadKubeConfig, messageOf, statusOf, UNAVAILABLE_HINT, type ClusterSource } from './cluster.js';
import { ExecStartError, podExec, type PodExec } from './pod-exec.js';
import { PodWatch } from './pod-watch.js';
import { APP, buildNetworkPolicy, buildPod, CONTAINER, type EgressProxySelector, LABEL_APP, LABEL_HOME, LABEL_ID, LABEL_POOL, LABEL_POOL_KEY, labelValue, podName } from './pod-spec.js';

export interface KubernetesRuntimeOpts extends ClusterSource {
  /** Short tag of this agentbox home: only pods labelled with it are listed and reaped. */
  homeTag: string;
  /** @default the kubeconfig context's namespace, else `default` */
  namespace?: string;
  /** RuntimeClass per isolation. @default gvisor → `gvisor`, vm → `kata`, container → none (the cluster's default) */
  runtimeClasses?: Partial<Record<Isolation, string>>;
  /** agentbox image name → the image reference pods use. @default the name as it is */
  images?: Record<string, string>;
  /** Host path of agentbox-docker-init, staged into each pod. @default AGENTBOX_DOCKER_INIT, else dist/native/agentbox-docker-init */
  initPath?: string;
  /** How long transient API failures are retried before RuntimeUnavailableError. @default 30000 */
  retryForMs?: number;
  /** How long a new pod may take to run (image pull included). @default 120000 */
  startTimeoutMs?: number;
  /**
   * The cluster's egress proxy (`agentbox egress-proxy`; policy `kubernetes.egressProxy`): without it
   * a sandbox with egress is refused. The credentials' key is AGENTBOX_EGRESS_SECRET.
   */
  egressProxy?: EgressProxyConfig;
  /**
   * kubernetes-sigs/agent-sandbox (agent-sandbox.ts): `auto` makes each sandbox a Sandbox object where
   * its CRDs are installed and the daemon may create them, else a plain pod; `always` refuses to make
   * a sandbox without them; `never` makes plain pods. Pool members are plain pods in every mode.
   * @default 'auto'
   */
  agentSandbox?: AgentSandboxMode;
  logger?: Logger;
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
}

interface KubeData {
  namespace: string;
  pod: string;
  /** It has network, through the cluster's egress proxy. */
  egress?: boolean;
  /** The agent-sandbox Sandbox that owns the pod, when it was made as one. */
  sandbox?: string;
}

export interface EgressProxyConfig {
  /** http://HOST:PORT of the proxy's Service as sandboxes reach it, e.g. http://agentbox-egress.agentbox.svc.cluster.local:3128 */
  url: string;
  /** Labels of the proxy's pods (the sandbox's NetworkPolicy lets it reach those alone). */
  podLabels: Record<string, string>;
  /** The proxy's namespace, when not the sandboxes' own. */
  namespace?: string;
}

/** Where the helper is staged inside each pod (see the top of this file). */
export const INIT_IN_POD = '/tmp/.agentbox/init';
const STAGE_SCRIPT = 'set -e; umask 077; mkdir -p /tmp/.agentbox; cat > /tmp/.agentbox/init.new; chmod 0500 /tmp/.agentbox/init.new; mv -f /tmp/.agentbox/init.new /tmp/.agentbox/init';
/**
 * cd into the exec's directory, then replace the pod's environment with the exec's own. The
 * environment comes first on stdin, one `printf %b`-escaped `K=V` a line up to an empty line
 * (envHeader), never in the exec request's URL, which API servers write to their audit logs. `read`
 * takes a pipe a byte at a time, so the command's own stdin starts right after the empty line. The
 * pairs are read after the command's words and rotated before them, for `env -i K=V... CMD...`.
 */
const EXEC_SCRIPT = [
  'cd -- "$1" || exit 126; shift; n=$#',
  'while IFS= read -r kv && [ -n "$kv" ]; do v=$(printf "%b." "$kv"); set -- "$@" "${v%.}"; done',
  'while [ "$n" -gt 0 ]; do set -- "$@" "$1"; shift; n=$((n - 1)); done',
  'exec env -i "$@"',
].join('\n');
const IMAGE_ERRORS = new Set(['ErrImagePull', 'ImagePullBackOff', 'InvalidImageName', 'ErrImageNeverPull']);
/** A waiter re-reads the pod this often, whatever the watch says (a watch that is down only slows it). */
const POLL_MS = 1000;
/** How much longer than a start's timeout a pool member may stay `starting` before it counts as stuck. */
const STUCK_MARGIN_MS = 60_000;

/** dist/src/runtime/kubernetes/ → dist/native/agentbox-docker-init */
function defaultInitPath(env: NodeJS.ProcessEnv): string {
  return env.AGENTBOX_DOCKER_INIT ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'native', 'agentbox-docker-init');
}

function dataOf(handle: SandboxHandle): KubeData {
  const d = handle.data as Partial<KubeData>;
  if (typeof d.namespace !== 'string' || typeof d.pod !== 'string') throw new InternalError(`sandbox ${handle.id} has no kubernetes runtime data`);
  return { namespace: d.namespace, pod: d.pod, ...(d.egress === true ? { egress: true } : {}), ...(typeof d.sandbox === 'string' ? { sandbox: d.sandbox } : {}) };
}

/** A pod counts as alive from its creation until its deletion starts or its container ends. */
function podAlive(pod: V1Pod): boolean {
  if (pod.metadata?.deletionTimestamp) return false;
  const phase = pod.status?.phase;
  return phase === 'Running' || phase === 'Pending' || phase === undefined;
}

type StartState = { running: true } | { imageError: string } | { failed: string } | { gone: true };

function startState(pod: V1Pod | undefined): StartState | undefined {
  if (!pod) return { gone: true };
  const cs = pod.status?.containerStatuses?.find((c) => c.name === CONTAINER);
  const waiting = cs?.state?.waiting;
  if (waiting?.reason && IMAGE_ERRORS.has(waiting.reason)) return { imageError: `${waiting.reason}${waiting.message ? `: ${waiting.message}` : ''}` };
  const phase = pod.status?.phase;
  if (phase === 'Failed' || phase === 'Succeeded' || cs?.state?.terminated) {
    const t = cs?.state?.terminated;
    return { failed: `pod ${phase ?? 'ended'}${t ? ` (container ${t.reason ?? 'terminated'}, exit ${t.exitCode})` : ''}${pod.status?.message ? `: ${pod.status.message}` : ''}` };
  }
  if (pod.metadata?.deletionTimestamp) return { failed: 'the pod is being deleted' };
  if (phase === 'Running' && cs?.state?.running) return { running: true };
  return undefined;
}

export class KubernetesRuntime implements Runtime {
  readonly name = 'kubernetes' as const;
  readonly isolations: readonly Isolation[] = ['container', 'gvisor', 'vm'];
  /** Every daemon replica on the same store reaches the cluster's pods. */
  readonly shared = true;
  /** Sandboxes with egress go through the cluster's egress proxy, not a proxy on the daemon's host. */
  readonly ownEgress = true;
  private clusterState: { cluster: Cluster; namespace: string } | { reason: string } | undefined;
  private podWatch: PodWatch | undefined;
  private sandboxObjects: AgentSandboxes | undefined;
  private initBinary: Buffer | undefined;
  /** Sandbox id → the pod cgroup's oom_kill count last seen (undefined: not readable in that pod). */
  private readonly oomCounts = new Map<string, number | undefined>();
  /** The kubelet summary API refused us once: stats come from inside the pod from then on. */
  private summaryRefused = false;
  private readonly env: NodeJS.ProcessEnv;
  private closed = false;

  constructor(private readonly opts: KubernetesRuntimeOpts) {
    this.env = opts.env ?? process.env;
  }

  /** The cluster, loaded on first use: a daemon without one still starts (probe says why not). */
  private state(): { cluster: Cluster; namespace: string } | { reason: string } {
    if (this.clusterState) return this.clusterState;
    const loaded = loadKubeConfig(this.opts, this.env);
    if ('reason' in loaded) return (this.clusterState = { reason: loaded.reason });
    const namespace = this.opts.namespace ?? loaded.kc.getContextObject(loaded.kc.getCurrentContext())?.namespace ?? 'default';
    return (this.clusterState = { cluster: new Cluster({ kc: loaded.kc, ...(this.opts.retryForMs !== undefined ? { retryForMs: this.opts.retryForMs } : {}) }), namespace });
  }

  private cluster(): { cluster: Cluster; namespace: string } {
    const s = this.state();
    if ('reason' in s) throw new RuntimeUnavailableError(`kubernetes runtime: ${s.reason}`, { hint: UNAVAILABLE_HINT });
    return s;
  }

  private get selector(): string {
    return `${LABEL_APP}=${APP},${LABEL_HOME}=${labelValue(this.opts.homeTag)}`;
  }

  private watch(): PodWatch {
    const { cluster, namespace } = this.cluster();
    this.podWatch ??= new PodWatch(cluster, namespace, this.selector, (msg, err) => this.opts.logger?.warn({ err: messageOf(err) }, msg));
    return this.podWatch;
  }

  private agentSandboxes(): AgentSandboxes {
    const { cluster, namespace } = this.cluster();
    this.sandboxObjects ??= new AgentSandboxes({ cluster, namespace, ...(this.opts.agentSandbox ? { mode: this.opts.agentSandbox } : {}), ...(this.opts.logger ? { logger: this.opts.logger } : {}) });
    return this.sandboxObjects;
  }

  /** The pod watch's counters (tests: reconnects and relists). */
  watchStats(): PodWatch['stats'] | undefined {
    return this.podWatch?.stats;
  }

  async probe(): Promise<ProbeResult> {
    const s = this.state();
    if ('reason' in s) return { ok: false, reason: s.reason, hint: `set kubernetes.kubeconfig in the policy or ${KUBECONFIG_ENV}, or run the daemon in a pod with a service account` };
    const { cluster, namespace } = s;
    const withTimeout = <T>(p: Promise<T>, ms = 5000): Promise<T> =>
      Promise.race([p, sleep(ms, undefined, { ref: false }).then(() => Promise.reject(Object.assign(new Error(`no answer within ${ms} ms`), { code: 'ETIMEDOUT' })))]);
    let version: string;
    try {
      const v = await withTimeout(cluster.kc.makeApiClient(VersionApi).getCode());
      version = v.gitVersion;
      // Every exec sends stdin (its environment) and must end it: v5.channel.k8s.io, on by default since 1.30.
      const minor = Number.parseInt(v.minor, 10);
      if (v.major === '1' && Number.isInteger(minor) && minor < 30) {
        return { ok: false, reason: `the Kubernetes API server at ${cluster.server} is ${version}; the kubernetes runtime needs 1.30 or later (pods/exec with v5.channel.k8s.io)`, hint: 'upgrade the cluster' };
      }
    } catch (err) {
      return { ok: false, reason: `the Kubernetes API server at ${cluster.server} is not reachable: ${messageOf(err)}`, hint: UNAVAILABLE_HINT };
    }
    try {
      await withTimeout(cluster.core.readNamespace({ name: namespace }));
    } catch (err) {
      const status = statusOf(err);
      if (status === 404) return { ok: false, reason: `the namespace ${namespace} does not exist on ${cluster.server}`, hint: `kubectl create namespace ${namespace}, or set kubernetes.namespace in the policy` };
      if (status !== 403) return { ok: false, reason: `cannot read the namespace ${namespace}: ${messageOf(err)}`, hint: UNAVAILABLE_HINT };
      // Not allowed to read namespaces is fine: what matters is creating pods there.
    }
    try {
      const review = await withTimeout(cluster.authz.createSelfSubjectAccessReview({ body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', spec: { resourceAttributes: { namespace, verb: 'create', resource: 'pods' } } } }));
      if (review.status && !review.status.allowed) {
        return { ok: false, reason: `the daemon may not create pods in namespace ${namespace}${review.status.reason ? ` (${review.status.reason})` : ''}`, hint: 'bind a Role with pods, pods/exec and networkpolicies verbs to the daemon\'s service account or user' };
      }
    } catch {
      // SelfSubjectAccessReview is optional: without it, the first create tells.
    }
    const details: Record<string, string> = { endpoint: cluster.server, version, namespace };
    let agentSandbox: AgentSandboxSupport;
    try {
      const groups = await withTimeout(cluster.kc.makeApiClient(ApisApi).getAPIVersions());
      const names = new Set(groups.groups.map((g) => g.name));
      details.metricsApi = names.has('metrics.k8s.io') ? 'present' : 'absent';
      agentSandbox = await this.agentSandboxes().support(groups.groups);
    } catch (err) {
      agentSandbox = { present: undefined, error: messageOf(err) };
    }
    details.agentSandboxCrds = this.agentSandboxes().report(agentSandbox);
    const refusal = this.agentSandboxes().refusal(agentSandbox);
    if (refusal) return { ok: false, reason: refusal.reason, hint: refusal.hint, details };
    try {
      this.initBytes();
    } catch {
      return { ok: false, reason: `the exec helper is missing at ${this.initPath()}`, hint: 'run npm run build (needs gcc and libc6-dev)' };
    }
    return { ok: true, details };
  }

  private initPath(): string {
    return this.opts.initPath ?? defaultInitPath(this.env);
  }

  private initBytes(): Buffer {
    this.initBinary ??= readFileSync(this.initPath());
    return this.initBinary;
  }

  private imageRef(image: string): string {
    return this.opts.images?.[image] ?? image;
  }

  async prepareImage(image: string): Promise<void> {
    // Pulled by the node that runs the pod; an unknown image shows as ErrImagePull at create.
    if (!this.imageRef(image)) throw new NotFoundError(`no image ${image}`);
  }

  async create(spec: RuntimeSpec): Promise<SandboxHandle> {
    if (!this.isolations.includes(spec.isolation)) {
      throw new BadRequestError(`the kubernetes runtime offers isolation container, gvisor or vm, not ${spec.isolation}`, { hint: 'use --isolation container, gvisor or vm (kata)' });
    }
    if (spec.volumes?.length) throw new BadRequestError('the kubernetes runtime cannot mount named volumes (they are host directories; a pod would need a PersistentVolumeClaim)', { hint: 'use the docker or local runtime for sandboxes with volumes' });
    if (spec.diskFrom || spec.memoryFrom) throw new BadRequestError('the kubernetes runtime cannot start from a snapshot or a fork (a pod\'s disk is an emptyDir on its node)', { hint: 'use the docker or local runtime for snapshots and forks' });
    if (spec.writableRoot) throw new BadRequestError('the kubernetes runtime has no writable root', { hint: 'use a profile without rootfs: writable' });
    if (spec.egressDir) throw new InternalError('the kubernetes runtime routes egress itself (ownEgress): it takes no egress directory');
    const proxy = spec.egress ? await this.egressProxy() : undefined;
    const { cluster, namespace } = this.cluster();
    this.initBytes(); // a missing build fails here, before anything is made
    const pod = buildPod({
      id: spec.id, namespace, image: this.imageRef(spec.image), isolation: spec.isolation, limits: spec.limits, labels: spec.labels, homeTag: this.opts.homeTag,
      ...(spec.pooled ? { pooled: true, ...(spec.poolKey ? { poolKey: spec.poolKey } : {}) } : {}), ...(this.opts.runtimeClasses ? { runtimeClasses: this.opts.runtimeClasses } : {}),
      ...(proxy ? { proxyHost: proxy.host } : {}),
    });
    const policy = buildNetworkPolicy({ id: spec.id, namespace, homeTag: this.opts.homeTag, ...(proxy ? { egressProxy: proxy.selector } : {}) });
    const sandboxVersion = await this.agentSandboxes().versionFor({ id: spec.id, pooled: spec.pooled === true });
    // The watch runs before the pod exists, so none of its events is missed.
    const unwatch = this.watch().on(() => undefined);
    try {
      return await this.createPod(spec, pod, policy, namespace, cluster, sandboxVersion);
    } finally {
      unwatch();
    }
  }

  /** SANDBOX_VERSION: make the pod through an agent-sandbox Sandbox of that version (agent-sandbox.ts). */
  private async createPod(spec: RuntimeSpec, pod: V1Pod, policy: V1NetworkPolicy, namespace: string, cluster: Cluster, sandboxVersion?: string): Promise<SandboxHandle> {
    const name = podName(spec.id);
    const init = this.initBytes();
    // The policy first: the pod never runs a moment without it.
    // A 409 on a create that was retried may be the first attempt's own success (the answer was
    // lost): an object with this sandbox's id and home is ours; anything else is someone else's.
    const ours = (o: { metadata?: { labels?: Record<string, string> } } | undefined): boolean =>
      o?.metadata?.labels?.[LABEL_ID] === labelValue(spec.id) && o.metadata.labels[LABEL_HOME] === labelValue(this.opts.homeTag);
    try {
      await cluster.call(`create the network policy of ${spec.id}`, () => cluster.net.createNamespacedNetworkPolicy({ namespace, body: policy }));
    } catch (err) {
      if (statusOf(err) !== 409) throw apiError(err, `cannot create the network policy of sandbox ${spec.id}`);
      const found = await cluster.net.readNamespacedNetworkPolicy({ name, namespace }).catch(() => undefined);
      if (!ours(found)) throw new ConflictError(`a network policy ${name} that is not this sandbox's exists in namespace ${namespace}`, { hint: `kubectl -n ${namespace} get networkpolicy ${name} -o yaml` });
    }
    const handle: SandboxHandle = { id: spec.id, runtime: 'kubernetes', data: { namespace, pod: name, ...(spec.egress ? { egress: true } : {}), ...(sandboxVersion ? { sandbox: name } : {}) } satisfies KubeData };
    const kind = sandboxVersion ? 'sandbox' : 'pod';
    try {
      if (sandboxVersion) await this.agentSandboxes().create(spec.id, labelValue(this.opts.homeTag), pod, sandboxVersion);
      else await cluster.call(`create pod ${name}`, () => cluster.core.createNamespacedPod({ namespace, body: pod }));
    } catch (err) {
      if (sandboxVersion) {
        // Someone else's Sandbox (ConflictError): only our policy goes. Any other failure may have made it all the same.
        if (err instanceof ConflictError) await cluster.net.deleteNamespacedNetworkPolicy({ name, namespace }).catch(() => undefined);
        else await this.discard(spec.id, name, namespace, kind);
        throw err;
      }
      if (statusOf(err) !== 409) {
        // It may have been made all the same (the answer was lost): remove what there is, pod first.
        await this.discard(spec.id, name, namespace, kind);
        throw apiError(err, `cannot create the pod of sandbox ${spec.id}`);
      }
      if (!ours(await cluster.core.readNamespacedPod({ name, namespace }).catch(() => undefined))) {
        // Someone else's pod: only our policy goes.
        await cluster.net.deleteNamespacedNetworkPolicy({ name, namespace }).catch(() => undefined);
        throw new ConflictError(`a pod ${name} that is not this sandbox's exists in namespace ${namespace}`, { hint: `kubectl -n ${namespace} get pod ${name} -o yaml` });
      }
    }
    try {
      const started = await this.waitPod(name, sandboxVersion ? awaitingController(startState) : startState, this.opts.startTimeoutMs ?? 120_000, `sandbox ${spec.id} to start`);
      if ('imageError' in started) throw new NotFoundError(`image ${spec.image} cannot be pulled for sandbox ${spec.id}: ${started.imageError}`, { hint: 'check the image name (kubernetes.images maps agentbox names to references) and the node\'s registry access' });
      if ('failed' in started) throw new InternalError(`sandbox ${spec.id} did not start: ${started.failed}`);
      if ('gone' in started) throw new InternalError(`the pod of sandbox ${spec.id} was deleted while it started`);
      await this.stageInit(handle, init);
      this.oomCounts.set(spec.id, await this.oomCount(handle));
      if (spec.pooled) await this.offer(spec.id, name, namespace, cluster);
      return handle;
    } catch (err) {
      const explained = sandboxVersion && err instanceof TimeoutError ? await this.agentSandboxes().explainTimeout(err, name) : err;
      await this.discard(spec.id, name, namespace, kind);
      throw explained;
    }
  }

  /** What a create that failed made, removed; a failure to is only logged (the create's own error is the answer). */
  private async discard(id: string, pod: string, namespace: string, kind: 'pod' | 'sandbox'): Promise<void> {
    await this.remove(id, pod, namespace, kind).catch((e: unknown) => this.opts.logger?.warn({ sandbox_id: id, err: messageOf(e) }, 'could not remove a sandbox that failed to start'));
  }

  /** A pool member whose exec helper is in place becomes `available`: from now on any replica may claim it. */
  private async offer(id: string, name: string, namespace: string, cluster: Cluster): Promise<void> {
    try {
      await cluster.call(`offer pod ${name}`, () =>
        cluster.core.patchNamespacedPod({ name, namespace, body: { metadata: { labels: { [LABEL_POOL]: 'available' } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)),
      );
    } catch (err) {
      throw apiError(err, `cannot offer the warm-pool pod of ${id}`);
    }
  }

  /** Streams the exec helper into the pod (see the top of this file). */
  private async stageInit(handle: SandboxHandle, init: Buffer): Promise<void> {
    const ex = await this.startPodExec(handle, ['/bin/sh', '-c', STAGE_SCRIPT], init);
    const [, err, code] = await Promise.all([text(ex.stdout), text(ex.stderr), ex.exitCode]);
    if (code !== 0) throw new InternalError(`cannot stage agentbox's exec helper into sandbox ${handle.id} (exit ${code}): ${err.trim().slice(0, 300)}`, { hint: 'the image needs /bin/sh, cat, chmod and mv' });
  }

  /**
   * Until `check` says something about the pod (undefined: not gone or not there yet): from the watch's
   * events, and from a read every POLL_MS whatever the watch does.
   */
  private waitPod<T>(name: string, check: (pod: V1Pod | undefined) => T | undefined, timeoutMs: number, what: string): Promise<T> {
    const { cluster, namespace } = this.cluster();
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const finish = (fn: () => void): void => {
        if (done) return;
        done = true;
        off();
        clearTimeout(timer);
        fn();
      };
      const consider = (pod: V1Pod | undefined): void => {
        const r = check(pod);
        if (r !== undefined) finish(() => resolve(r));
      };
      const off = this.watch().on((type, pod) => {
        if (pod.metadata?.name === name) consider(type === 'DELETED' ? undefined : pod);
      });
      const timer = setTimeout(() => finish(() => reject(new TimeoutError(`timed out after ${timeoutMs} ms waiting for ${what}`, { hint: `kubectl -n ${namespace} describe pod ${name}` }))), timeoutMs);
      void (async () => {
        while (!done) {
          try {
            consider(await cluster.call(`read pod ${name}`, () => cluster.core.readNamespacedPod({ name, namespace })));
          } catch (err) {
            if (statusOf(err) === 404) consider(undefined);
            else if (!(err instanceof RuntimeUnavailableError)) return finish(() => reject(apiError(err, `cannot read pod ${name}`)));
            // Unreachable for a while: the timeout decides.
          }
          await sleep(POLL_MS);
        }
      })();
    });
  }

  /**
   * One pods/exec, retried while the API server cannot be reached (for `retryForMs`); ConflictError
   * when the pod is gone or not running.
   */
  private async startPodExec(handle: SandboxHandle, command: string[], stdin?: Buffer | Readable): Promise<PodExec> {
    const { namespace, pod } = dataOf(handle);
    const { cluster } = this.cluster();
    try {
      // An ExecStartError says whether it is transient: `call` retries those.
      return await cluster.call(`exec in pod ${pod}`, () => podExec(cluster.kc, { namespace, pod, container: CONTAINER, command, ...(stdin !== undefined ? { stdin } : {}) }));
    } catch (err) {
      if (err instanceof ExecStartError && (err.status === 404 || err.status === 400)) {
        throw new ConflictError(`sandbox ${handle.id} is not running: ${err.message}`, { hint: `agentbox inspect ${handle.id} says why it ended` });
      }
      if (err instanceof ExecStartError && (err.status === 401 || err.status === 403)) {
        throw new RuntimeUnavailableError(`the API server refused pods/exec for sandbox ${handle.id}: ${err.message}`, { hint: 'grant the daemon create on pods/exec in the namespace' });
      }
      if (err instanceof ExecStartError) throw new InternalError(`cannot exec in sandbox ${handle.id}: ${err.message}`);
      throw err;
    }
  }

  /**
   * The proxy of a sandbox with network and what its pod needs to reach it: the URL's host resolved
   * here (the pod has no DNS), the selector its NetworkPolicy opens. A clear refusal when the cluster has none.
   */
  private async egressProxy(): Promise<{ host: { hostname: string; ip: string }; selector: EgressProxySelector }> {
    const cfg = this.opts.egressProxy;
    const secret = this.env.AGENTBOX_EGRESS_SECRET ?? '';
    if (!cfg || secret.length < MIN_EGRESS_SECRET_LENGTH) {
      throw new BadRequestError('this daemon has no egress proxy for kubernetes sandboxes: a sandbox with egress cannot be made', {
        hint: `run agentbox egress-proxy in the cluster (deploy/kubernetes), name it in the policy (kubernetes.egressProxy) and give the daemon AGENTBOX_EGRESS_SECRET (at least ${MIN_EGRESS_SECRET_LENGTH} characters), or use egress: none`,
      });
    }
    const hostname = new URL(cfg.url).hostname.replace(/^\[(.*)\]$/, '$1');
    let ip = hostname;
    if (isIP(hostname) === 0) {
      try {
        ip = (await lookup(hostname)).address;
      } catch (err) {
        throw new RuntimeUnavailableError(`cannot resolve the egress proxy's host ${hostname}: ${messageOf(err)}`, { hint: 'check kubernetes.egressProxy.url in the policy and that its Service exists' });
      }
    }
    const port = Number(new URL(cfg.url).port || 80);
    return {
      host: { hostname, ip },
      selector: { podLabels: cfg.podLabels, port, ...(cfg.namespace ? { namespaceLabels: { 'kubernetes.io/metadata.name': cfg.namespace } } : {}) },
    };
  }

  /** ENV with the sandbox's proxy URL (its credential in it) in place of the host relay's, for a sandbox with network. */
  private withProxy(handle: SandboxHandle, env: Record<string, string>): Record<string, string> {
    const cfg = this.opts.egressProxy;
    const secret = this.env.AGENTBOX_EGRESS_SECRET;
    if (!dataOf(handle).egress || !cfg || !secret) return env;
    return { ...env, ...proxyEnvFor(sandboxProxyUrl(cfg.url, secret, handle.id)) };
  }

  exec(handle: SandboxHandle, cmd: string[], opts: ExecOpts): AsyncIterable<ExecEvent> {
    let killedByUs = false;
    return execEvents(opts, {
      start: () =>
        this.startPodExec(handle, ['/bin/sh', '-c', EXEC_SCRIPT, 'agentbox', opts.cwd ?? '/workspace', INIT_IN_POD, 'run', String(opts.timeoutMs), opts.execId, '--', ...cmd], withHeader(envHeader(execEnv({ ...opts, env: this.withProxy(handle, opts.env) })), opts.stdin)),
      kill: async () => {
        killedByUs = true;
        await this.killTagged(handle, opts.execId);
      },
      alive: async () => (await this.status(handle)).alive,
      oomKilled: async (exitCode) => {
        if (exitCode !== EXIT_KILLED || killedByUs) return false;
        const before = this.oomCounts.get(handle.id);
        const now = await this.oomCount(handle);
        if (now !== undefined) {
          this.oomCounts.set(handle.id, now);
          // No count from before (another replica started it): a sandbox starts with none.
          return now > (before ?? 0);
        }
        // The pod's cgroup is not readable from inside (no /sys/fs/cgroup there): a SIGKILL agentbox did
        // not send is taken for the OOM killer's; the only other sender is the sandbox's own `kill -9`.
        return true;
      },
    });
  }

  /** The OOM kills of the pod's memory cgroup so far (v2 memory.events, v1 memory.oom_control); undefined when unreadable. */
  private async oomCount(handle: SandboxHandle): Promise<number | undefined> {
    for (const path of ['/sys/fs/cgroup/memory.events', '/sys/fs/cgroup/memory/memory.oom_control']) {
      const body = await this.readFile(handle, path).then(text).catch(() => undefined);
      const m = body === undefined ? null : /^oom_kill (\d+)$/m.exec(body);
      if (m) return Number(m[1]);
    }
    return undefined;
  }

  /** Ends a `run` (and its command's tree) by its tag: pods/exec has no way to signal what it started. */
  private async killTagged(handle: SandboxHandle, tag: string): Promise<void> {
    const ex = await this.startPodExec(handle, [INIT_IN_POD, 'kill', tag]);
    ex.stdout.resume();
    ex.stderr.resume();
    await ex.exitCode;
  }

  /**
   * The files API's transport: one `INIT fileop OP PATH` (native/file-ops.h). A read, a port's
   * connection and a terminal run under `run` with a tag, so that `abort` ends them inside the pod
   * (dropping the connection does not, on a real kubelet).
   */
  private readonly startFileOp: FileOpStarter = async (handle, op, path, stdin) => {
    const tag = op === 'read' || op === 'connect' || op === 'pty' ? `fr_${randomBytes(8).toString('hex')}` : undefined;
    const cmd = [INIT_IN_POD, 'fileop', op, path];
    const ex = await this.startPodExec(handle, tag ? [INIT_IN_POD, 'run', '0', tag, '--', ...cmd] : cmd, stdin);
    let aborted = false;
    const abort = (): void => {
      if (aborted) return;
      aborted = true;
      if (tag) {
        void this.killTagged(handle, tag)
          .catch((err: unknown) => this.opts.logger?.warn({ sandbox_id: handle.id, err: messageOf(err) }, 'could not end an abandoned file operation'))
          .finally(() => ex.destroy());
      } else ex.destroy();
    };
    return { stdout: ex.stdout, stderr: ex.stderr, exitCode: ex.exitCode, abort };
  };

  private readonly files = new SandboxFiles(this.startFileOp);
  private readonly ports = new SandboxPorts(this.startFileOp);
  private readonly terminals = new SandboxPty(this.startFileOp);

  private readonly runProcOp: ProcOpRunner = async (handle, args) => {
    const ex = await this.startPodExec(handle, [INIT_IN_POD, ...args]);
    const [stdout, stderr, exitCode] = await Promise.all([readAllOf(ex.stdout), text(ex.stderr), ex.exitCode]);
    return { stdout, stderr, exitCode };
  };

  private readonly procs = new SandboxProcesses(this.runProcOp);

  processes(handle: SandboxHandle): Promise<ProcessInfo[]> {
    return this.procs.processes(handle);
  }

  signalProcess(handle: SandboxHandle, pid: number, signal: SignalName): Promise<void> {
    return this.procs.signalProcess(handle, pid, signal);
  }

  openPort(handle: SandboxHandle, port: number): Promise<Duplex> {
    return this.ports.openPort(handle, port);
  }

  openPty(handle: SandboxHandle, opts: PtyOpts): Promise<PtyProcess> {
    return this.terminals.openPty(handle, { ...opts, env: this.withProxy(handle, opts.env) });
  }

  readFile(handle: SandboxHandle, path: string): Promise<Readable> {
    return this.files.readFile(handle, path);
  }

  writeFile(handle: SandboxHandle, path: string, data: Readable): Promise<number> {
    return this.files.writeFile(handle, path, data);
  }

  listDir(handle: SandboxHandle, path: string): Promise<DirEntry[]> {
    return this.files.listDir(handle, path);
  }

  removePath(handle: SandboxHandle, path: string): Promise<void> {
    return this.files.removePath(handle, path);
  }

  /**
   * From the pod watch's store when it has the pod alive (the reaper asks about every sandbox each
   * pass: one GET each would be N requests a second to the API server); read from the API server
   * otherwise, so a pod another replica made a moment ago, whose event is not here yet, is never
   * taken for lost. A stale store can only say alive a little longer: phases do not go back.
   */
  async status(handle: SandboxHandle): Promise<RuntimeStatus> {
    const { namespace, pod } = dataOf(handle);
    const { cluster } = this.cluster();
    const cached = this.watch().cached(pod);
    if (cached !== undefined && cached !== 'unknown' && podAlive(cached)) return { alive: true };
    try {
      const p = await cluster.call(`read pod ${pod}`, () => cluster.core.readNamespacedPod({ name: pod, namespace }));
      return { alive: podAlive(p) };
    } catch (err) {
      if (statusOf(err) === 404) return { alive: false };
      throw apiError(err, `cannot read the pod of sandbox ${handle.id}`);
    }
  }

  /**
   * From the kubelet's summary API (through the API server's node proxy: cumulative CPU time, the
   * working set, the process count), else from the pod's own cgroup files read from inside.
   * metrics.k8s.io is not used: it has a CPU rate, not a total, and no process count.
   */
  async stats(handle: SandboxHandle): Promise<RuntimeStats> {
    const { namespace, pod } = dataOf(handle);
    const { cluster } = this.cluster();
    let p: V1Pod;
    try {
      p = await cluster.call(`read pod ${pod}`, () => cluster.core.readNamespacedPod({ name: pod, namespace }));
    } catch (err) {
      if (statusOf(err) === 404) throw new ConflictError(`sandbox ${handle.id} is not running`, { hint: `agentbox inspect ${handle.id}` });
      throw apiError(err, `cannot read the pod of sandbox ${handle.id}`);
    }
    if (!podAlive(p)) throw new ConflictError(`sandbox ${handle.id} is not running`, { hint: `agentbox inspect ${handle.id}` });
    const node = p.spec?.nodeName;
    if (node && !this.summaryRefused) {
      try {
        const raw = await cluster.call(`read the stats of node ${node}`, () => cluster.core.connectGetNodeProxyWithPath({ name: node, path: 'stats/summary' }));
        const summary = (typeof raw === 'string' ? JSON.parse(raw) : raw) as SummaryStats;
        const entry = summary.pods?.find((x) => x.podRef?.name === pod && x.podRef.namespace === namespace);
        if (entry) {
          return {
            memoryBytes: entry.memory?.workingSetBytes ?? 0,
            pids: entry.process_stats?.process_count ?? 0,
            cpuMs: Math.round((entry.cpu?.usageCoreNanoSeconds ?? 0) / 1e6),
          };
        }
      } catch (err) {
        const status = statusOf(err);
        if (status === 403 || status === 404) this.summaryRefused = true;
        else if (err instanceof RuntimeUnavailableError) throw err;
      }
    }
    return this.statsFromInside(handle);
  }

  /** cgroup v2 (memory.current, pids.current, cpu.stat), else v1, read inside the pod. */
  private async statsFromInside(handle: SandboxHandle): Promise<RuntimeStats> {
    const read = (path: string): Promise<string | undefined> => this.readFile(handle, path).then(text).catch(() => undefined);
    const [mem, pids, cpu] = await Promise.all([read('/sys/fs/cgroup/memory.current'), read('/sys/fs/cgroup/pids.current'), read('/sys/fs/cgroup/cpu.stat')]);
    if (mem !== undefined) {
      return { memoryBytes: Number(mem.trim()) || 0, pids: Number(pids?.trim()) || 0, cpuMs: Math.round(Number(/^usage_usec (\d+)$/m.exec(cpu ?? '')?.[1] ?? 0) / 1000) };
    }
    const [mem1, pids1, cpu1] = await Promise.all([read('/sys/fs/cgroup/memory/memory.usage_in_bytes'), read('/sys/fs/cgroup/pids/pids.current'), read('/sys/fs/cgroup/cpuacct/cpuacct.usage')]);
    if (mem1 === undefined) throw new InternalError(`no stats for sandbox ${handle.id}: the node's summary API refused and the pod's cgroup is not readable`, { hint: 'grant the daemon get on nodes/proxy, or use a cluster whose pods see their cgroup' });
    return { memoryBytes: Number(mem1.trim()) || 0, pids: Number(pids1?.trim()) || 0, cpuMs: Math.round((Number(cpu1?.trim()) || 0) / 1e6) };
  }

  /**
   * Claims one available member of pool KEY of this home for CLAIMER, atomically across replicas
   * (claim.ts): the handle of the pod it got, or undefined when none was left.
   */
  async claimPooled(key: string, claimer: string): Promise<SandboxHandle | undefined> {
    const { cluster, namespace } = this.cluster();
    const pods = await this.poolPods(key, 'available');
    const won = await claimFirst(cluster, namespace, pods, labelValue(claimer));
    if (!won) return undefined;
    const id = won.pod.metadata?.labels?.[LABEL_ID];
    if (!id || !won.pod.metadata?.name) throw new InternalError('a claimed pool pod has no sandbox id label');
    return { id, runtime: 'kubernetes', data: { namespace, pod: won.pod.metadata.name, ...(won.pod.spec?.hostAliases?.length ? { egress: true } : {}) } satisfies KubeData };
  }

  /** The unclaimed members of pool KEY: ready ones, and those still starting (not stuck: see `stuckStarting`). */
  async countPooled(key: string): Promise<PooledCount> {
    const pods = await this.poolPods(key);
    const now = Date.now();
    return {
      ready: pods.filter(claimable).length,
      total: pods.filter((p) => !p.metadata?.deletionTimestamp && (claimable(p) || (p.metadata?.labels?.[LABEL_POOL] === 'starting' && !this.stuckStarting(p, now)))).length,
    };
  }

  private async poolPods(key: string, state?: 'available'): Promise<V1Pod[]> {
    const { cluster, namespace } = this.cluster();
    const labelSelector = `${this.selector},${LABEL_POOL_KEY}=${labelValue(key)}${state ? `,${LABEL_POOL}=${state}` : ''}`;
    const list = await cluster.call('list pool pods', () => cluster.core.listNamespacedPod({ namespace, labelSelector })).catch((err: unknown) => {
      throw apiError(err, 'cannot list the warm pool\'s pods');
    });
    return list.items;
  }

  /** A pool member `starting` for longer than any start may take: the replica that made it died midway. */
  private stuckStarting(pod: V1Pod, now: number): boolean {
    const created = pod.metadata?.creationTimestamp ? new Date(pod.metadata.creationTimestamp).getTime() : now;
    return now - created > (this.opts.startTimeoutMs ?? 120_000) + STUCK_MARGIN_MS;
  }

  async destroy(handle: SandboxHandle): Promise<void> {
    const { namespace, pod, sandbox } = dataOf(handle);
    await this.remove(handle.id, pod, namespace, sandbox ? 'sandbox' : 'pod');
  }

  /**
   * Deletes the pod and waits until it is gone (its containers stopped), then its NetworkPolicy: the
   * policy outlives every process it confines. Gone already is fine. A pod of a Sandbox (KIND
   * `sandbox`, or `unknown` for a reap) has its Sandbox deleted first: its controller would make a
   * deleted pod again while the Sandbox is there.
   */
  private async remove(id: string, pod: string, namespace: string, kind: 'pod' | 'sandbox' | 'unknown'): Promise<void> {
    const { cluster } = this.cluster();
    if (kind !== 'pod') await this.agentSandboxes().remove(id, pod, kind === 'sandbox');
    try {
      await cluster.call(`delete pod ${pod}`, () => cluster.core.deleteNamespacedPod({ name: pod, namespace, gracePeriodSeconds: 1 }));
    } catch (err) {
      if (statusOf(err) !== 404) throw apiError(err, `cannot delete the pod of sandbox ${id}`);
    }
    await this.waitPod(pod, (p) => (p === undefined ? true : undefined), 60_000, `the pod of sandbox ${id} to go`);
    try {
      await cluster.call(`delete network policy ${pod}`, () => cluster.net.deleteNamespacedNetworkPolicy({ name: pod, namespace }));
    } catch (err) {
      if (statusOf(err) !== 404) throw apiError(err, `cannot delete the network policy of sandbox ${id}`);
    }
    this.oomCounts.delete(id);
  }

  /** Pods of this home, and network policies left without their pod (alive: false, for `reap`). */
  async list(): Promise<RuntimeObject[]> {
    const { cluster, namespace } = this.cluster();
    const [pods, policies, sandboxes] = await Promise.all([
      cluster.call('list pods', () => cluster.core.listNamespacedPod({ namespace, labelSelector: this.selector })),
      cluster.call('list network policies', () => cluster.net.listNamespacedNetworkPolicy({ namespace, labelSelector: this.selector })),
      this.agentSandboxes().list(this.selector),
    ]).catch((err: unknown) => {
      throw apiError(err, 'cannot list the kubernetes runtime\'s objects');
    });
    const objects: RuntimeObject[] = [];
    const now = Date.now();
    const seen = new Set<string>();
    for (const p of pods.items) {
      const id = p.metadata?.labels?.[LABEL_ID];
      if (!id) continue;
      seen.add(id);
      objects.push({ id, alive: podAlive(p), ...this.poolFacts(p, now) });
    }
    // Sandboxes and policies without their pod: dead, for `reap` (which deletes both).
    for (const np of [...sandboxes, ...policies.items]) {
      const id = np.metadata?.labels?.[LABEL_ID];
      if (id && !seen.has(id)) {
        seen.add(id);
        objects.push({ id, alive: false });
      }
    }
    return objects;
  }

  /**
   * What `list` says of a pool member: unclaimed (`pooled`, unless stuck starting, which the sweep
   * may take), its pool, and when a claimed one was claimed.
   */
  private poolFacts(p: V1Pod, now: number): Pick<RuntimeObject, 'pooled' | 'poolKey' | 'claimedAt'> {
    const labels = p.metadata?.labels ?? {};
    const state = labels[LABEL_POOL];
    if (state === undefined) return {};
    const key = labels[LABEL_POOL_KEY] ? { poolKey: labels[LABEL_POOL_KEY] } : {};
    if (state === 'claimed') {
      const at = p.metadata?.annotations?.[ANNOTATION_CLAIMED_AT];
      return { ...key, ...(at ? { claimedAt: at } : {}) };
    }
    if (state === 'starting' && this.stuckStarting(p, now)) return key;
    return { pooled: true, ...key };
  }

  async reap(id: string): Promise<void> {
    const { namespace } = this.cluster();
    await this.remove(id, podName(id), namespace, 'unknown');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.podWatch?.stop();
    this.podWatch = undefined;
    this.oomCounts.clear();
  }
}

/** The exec's environment as EXEC_SCRIPT reads it: each `K=V` with every byte outside a safe set as `\0ooo`, then an empty line. */
export function envHeader(env: Record<string, string>): Buffer {
  const escape = (s: string): string => [...Buffer.from(s, 'utf8')].map((b) => (/[A-Za-z0-9_=.,:/+@%-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `\\0${b.toString(8).padStart(3, '0')}`)).join('');
  return Buffer.from(`${Object.entries(env).map(([k, v]) => `${escape(k)}=${escape(v)}\n`).join('')}\n`, 'latin1');
}

/** `header`, then the command's own stdin (none: the header alone, then end of file). */
function withHeader(header: Buffer, stdin: Buffer | Readable | undefined): Buffer | Readable {
  if (stdin === undefined) return header;
  if (Buffer.isBuffer(stdin)) return Buffer.concat([header, stdin]);
  const out = new PassThrough();
  out.write(header);
  stdin.on('error', (err) => out.destroy(err));
  stdin.pipe(out);
  // The command went away (the connection closed): stop reading the caller's stream too.
  out.once('close', () => stdin.destroy());
  return out;
}

/** The part of the kubelet's summary API (/stats/summary) read here. */
interface SummaryStats {
  pods?: {
    podRef?: { name?: string; namespace?: string };
    cpu?: { usageCoreNanoSeconds?: number };
    memory?: { workingSetBytes?: number };
    process_stats?: { process_count?: number };
  }[];
}
