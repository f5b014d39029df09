/**
 * kubernetes-sigs/agent-sandbox: where its CRDs are installed (and the daemon may use them), a
 * sandbox is a `Sandbox` object (agents.x-k8s.io) whose podTemplate is the hardened pod of
 * pod-spec.ts, labels and annotations included. That project's controller makes the pod: named as
 * the Sandbox (which is named as the plain pod would be, podName), with the template's labels plus
 * its own `agents.x-k8s.io/sandbox-name-hash`, and a controller owner reference to the Sandbox, so the
 * garbage collector removes the pod when the Sandbox goes. Exec, files and stats still go to the
 * pod; the NetworkPolicy is still agentbox's own (it selects the sandbox-id label the template carries).
 *
 * Pool members stay plain pods whatever the mode: a claim (claim.ts) patches the pod's pool label,
 * and the controller resets a pod's labels to its template's on every reconcile, so it would undo
 * the claim and hand the pod out twice.
 *
 * The Sandbox is written without replicas (v1alpha1) or operatingMode (v1beta1), both defaulting to
 * running, so one object serves either version; and with fieldValidation=Strict: a field the
 * installed CRD does not know is refused instead of pruned (a pruned securityContext field would be
 * a silently weaker pod).
 */
import { ApisApi, CustomObjectsApi, type V1APIGroup, type V1Pod, type V1PodSpec } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ConflictError, InternalError, RuntimeUnavailableError, TimeoutError } from '../../contract/errors.js';
import { apiError, messageOf, statusOf, type Cluster } from './cluster.js';
import { LABEL_HOME, LABEL_ID } from './pod-spec.js';

export const AGENT_SANDBOX_GROUP = 'agents.x-k8s.io';
export const SANDBOX_KIND = 'Sandbox';
export const SANDBOX_PLURAL = 'sandboxes';
/** The versions of Sandbox this driver writes, best first (v1beta1 is the storage version since agent-sandbox added it). */
export const SANDBOX_VERSIONS: readonly string[] = ['v1beta1', 'v1alpha1'];
/** Set by the controller when a Sandbox adopted a pod of another name (a SandboxWarmPool's). */
export const POD_NAME_ANNOTATION = 'agents.x-k8s.io/pod-name';

export type AgentSandboxMode = 'auto' | 'always' | 'never';
export const AGENT_SANDBOX_MODES: readonly AgentSandboxMode[] = ['auto', 'always', 'never'];

export interface SandboxCondition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}

/** The part of a Sandbox this driver writes and reads. */
export interface SandboxObject {
  apiVersion: string;
  kind: typeof SANDBOX_KIND;
  metadata: { name: string; namespace?: string; uid?: string; labels?: Record<string, string>; annotations?: Record<string, string>; deletionTimestamp?: string };
  spec: { podTemplate: { metadata: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: V1PodSpec }; service?: boolean };
  status?: { conditions?: SandboxCondition[]; podIPs?: string[] };
}

/** The Sandbox whose controller makes exactly POD (as buildPod made it), in VERSION of agents.x-k8s.io. */
export function buildSandbox(pod: V1Pod, version: string): SandboxObject {
  const name = pod.metadata?.name;
  if (!name || !pod.spec) throw new InternalError('a Sandbox needs a pod with a name and a spec');
  const labels = pod.metadata?.labels ?? {};
  const annotations = pod.metadata?.annotations ?? {};
  return {
    apiVersion: `${AGENT_SANDBOX_GROUP}/${version}`,
    kind: SANDBOX_KIND,
    // The Sandbox carries the pod's labels too, so list() finds a Sandbox whose pod is not (yet) there.
    metadata: { name, ...(pod.metadata?.namespace ? { namespace: pod.metadata.namespace } : {}), labels: { ...labels } },
    spec: {
      podTemplate: { metadata: { labels: { ...labels }, annotations: { ...annotations } }, spec: structuredClone(pod.spec) },
      // No headless Service: nothing reaches a sandbox from the network (its NetworkPolicy has no ingress).
      service: false,
    },
  };
}

/** The name of a Sandbox's pod: the controller's annotation (an adopted warm-pool pod), else the Sandbox's own. */
export function sandboxPodName(sbx: Pick<SandboxObject, 'metadata'>): string {
  return sbx.metadata.annotations?.[POD_NAME_ANNOTATION] || sbx.metadata.name;
}

/** The Sandbox's Ready condition (True: its pod runs, is Ready and has an IP), if the controller set one. */
export function readyCondition(sbx: Pick<SandboxObject, 'status'>): SandboxCondition | undefined {
  return sbx.status?.conditions?.find((c) => c.type === 'Ready');
}

/**
 * A start check (kubernetes-runtime.ts `waitPod`) for a pod the controller makes: absent means "not
 * made yet" until the pod has been seen once, and "gone" only after.
 */
export function awaitingController<T>(check: (pod: V1Pod | undefined) => T | undefined): (pod: V1Pod | undefined) => T | undefined {
  let seen = false;
  return (pod) => {
    if (pod) seen = true;
    return pod || seen ? check(pod) : undefined;
  };
}

/** What discovery and the access review said about agent-sandbox on this cluster. */
export type AgentSandboxSupport =
  | { present: false }
  | { present: true; version: string; groupVersions: string[]; allowed: boolean | undefined }
  | { present: undefined; error: string };

/** The served version this driver should write, or undefined when it knows none of them. */
export function pickVersion(group: V1APIGroup): string | undefined {
  const served = group.versions.map((v) => v.version);
  const preferred = group.preferredVersion?.version;
  if (preferred && SANDBOX_VERSIONS.includes(preferred)) return preferred;
  return SANDBOX_VERSIONS.find((v) => served.includes(v));
}

/** How long a discovery answer is kept: CRDs installed after the daemon started are used within this. */
const SUPPORT_TTL_MS = 60_000;

export interface AgentSandboxesOpts {
  cluster: Cluster;
  namespace: string;
  /** @default 'auto' */
  mode?: AgentSandboxMode;
  logger?: Logger;
}

/** The driver's use of agent-sandbox in one namespace: whether to, and the Sandbox objects' create, delete and list. */
export class AgentSandboxes {
  private cached: { at: number; support: Promise<AgentSandboxSupport> } | undefined;
  private toldPlainPods = false;
  private readonly custom: CustomObjectsApi;
  readonly mode: AgentSandboxMode;

  constructor(private readonly opts: AgentSandboxesOpts) {
    this.custom = opts.cluster.kc.makeApiClient(CustomObjectsApi);
    this.mode = opts.mode ?? 'auto';
  }

  /** Discovery of agents.x-k8s.io and an access review of creating sandboxes there (cached; GROUPS: a discovery answer the caller already has). */
  support(groups?: V1APIGroup[]): Promise<AgentSandboxSupport> {
    if (groups || !this.cached || Date.now() - this.cached.at > SUPPORT_TTL_MS) {
      this.cached = { at: Date.now(), support: this.discover(groups) };
    }
    return this.cached.support;
  }

  private async discover(known?: V1APIGroup[]): Promise<AgentSandboxSupport> {
    const { cluster, namespace } = this.opts;
    let groups: V1APIGroup[];
    try {
      groups = known ?? (await cluster.call('discover API groups', () => cluster.kc.makeApiClient(ApisApi).getAPIVersions())).groups;
    } catch (err) {
      // Not cached as an answer: the next create asks again.
      this.cached = undefined;
      return { present: undefined, error: messageOf(err) };
    }
    const group = groups.find((g) => g.name === AGENT_SANDBOX_GROUP);
    const version = group ? pickVersion(group) : undefined;
    if (!group || !version) return { present: false };
    let allowed: boolean | undefined;
    try {
      const review = await cluster.authz.createSelfSubjectAccessReview({
        body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', spec: { resourceAttributes: { namespace, verb: 'create', group: AGENT_SANDBOX_GROUP, resource: SANDBOX_PLURAL } } },
      });
      allowed = review.status?.allowed;
    } catch {
      // No access reviews on this cluster: the first create tells.
    }
    return { present: true, version, groupVersions: group.versions.map((v) => v.groupVersion), allowed };
  }

  /**
   * The version to make this sandbox's Sandbox in, or undefined for a plain pod. In `always` mode,
   * RuntimeUnavailableError when the CRDs are absent or the daemon may not create Sandboxes.
   */
  async versionFor(o: { id: string; pooled: boolean }): Promise<string | undefined> {
    if (this.mode === 'never' || o.pooled) return undefined;
    const s = await this.support();
    if (this.mode === 'auto') {
      // Said once per daemon: the answer is the same for every create until the Role changes.
      if (s.present && s.allowed === false && !this.toldPlainPods) {
        this.toldPlainPods = true;
        this.opts.logger?.warn({ sandbox_id: o.id }, 'the agent-sandbox CRDs are installed but the daemon may not create sandboxes.agents.x-k8s.io: making plain pods');
      }
      return s.present && s.allowed !== false ? s.version : undefined;
    }
    const refusal = this.refusal(s);
    if (refusal) throw new RuntimeUnavailableError(`sandbox ${o.id} was not made: ${refusal.reason}`, { hint: refusal.hint });
    return s.present ? s.version : undefined;
  }

  /** Why `always` cannot be honoured, or undefined. */
  refusal(s: AgentSandboxSupport): { reason: string; hint: string } | undefined {
    if (this.mode !== 'always') return undefined;
    const server = this.opts.cluster.server;
    if (s.present === undefined) return { reason: `kubernetes.agentSandbox is always, and API discovery on ${server} failed: ${s.error}`, hint: 'check that the cluster answers (kubectl get --raw /apis)' };
    if (!s.present) {
      return {
        reason: `kubernetes.agentSandbox is always, but the agent-sandbox CRDs (${AGENT_SANDBOX_GROUP} ${SANDBOX_VERSIONS.join(' or ')}) are not installed on ${server}`,
        hint: 'install kubernetes-sigs/agent-sandbox (its CRDs and controller), or set kubernetes.agentSandbox to auto or never in the policy',
      };
    }
    if (s.allowed === false) {
      return {
        reason: `kubernetes.agentSandbox is always, but the daemon may not create ${SANDBOX_PLURAL}.${AGENT_SANDBOX_GROUP} in namespace ${this.opts.namespace}`,
        hint: `grant create, get, list and delete on ${SANDBOX_PLURAL}.${AGENT_SANDBOX_GROUP} to the daemon (deploy/kubernetes/base/rbac.yaml)`,
      };
    }
    return undefined;
  }

  /** The probe's line about agent-sandbox. */
  report(s: AgentSandboxSupport): string {
    if (s.present === undefined) return `unknown (discovery failed: ${s.error})`;
    if (!s.present) return 'absent';
    const found = `present (${s.groupVersions.join(', ')})`;
    if (this.mode === 'never') return `${found}; not used (kubernetes.agentSandbox: never): sandboxes are plain pods`;
    if (s.allowed === false) return `${found}; not used: the daemon may not create ${SANDBOX_PLURAL}.${AGENT_SANDBOX_GROUP}, sandboxes are plain pods`;
    return `${found}; used: a sandbox is a Sandbox (${AGENT_SANDBOX_GROUP}/${s.version}) made by its controller, pool members plain pods`;
  }

  /**
   * Creates the Sandbox of POD. A 409 is taken as success when the Sandbox there is this sandbox's
   * (a retried create whose first answer was lost), ConflictError otherwise.
   */
  async create(id: string, homeLabel: string, pod: V1Pod, version: string): Promise<SandboxObject> {
    const { cluster, namespace } = this.opts;
    const body = buildSandbox(pod, version);
    const name = body.metadata.name;
    try {
      return (await cluster.call(`create sandbox ${name}`, () =>
        this.custom.createNamespacedCustomObject({ group: AGENT_SANDBOX_GROUP, version, namespace, plural: SANDBOX_PLURAL, body, fieldValidation: 'Strict' }),
      )) as SandboxObject;
    } catch (err) {
      if (statusOf(err) !== 409) throw apiError(err, `cannot create the Sandbox of sandbox ${id}`);
    }
    const found = await this.read(name, version).catch(() => undefined);
    if (found?.metadata.labels?.[LABEL_ID] !== body.metadata.labels?.[LABEL_ID] || found?.metadata.labels?.[LABEL_HOME] !== homeLabel || found.metadata.deletionTimestamp) {
      throw new ConflictError(`a Sandbox ${name} that is not this sandbox's exists in namespace ${namespace}`, { hint: `kubectl -n ${namespace} get sandbox ${name} -o yaml` });
    }
    return found;
  }

  async read(name: string, version?: string): Promise<SandboxObject> {
    const { cluster, namespace } = this.opts;
    const v = version ?? (await this.writeVersion());
    return (await cluster.call(`read sandbox ${name}`, () => this.custom.getNamespacedCustomObject({ group: AGENT_SANDBOX_GROUP, version: v, namespace, plural: SANDBOX_PLURAL, name }))) as SandboxObject;
  }

  private async writeVersion(): Promise<string> {
    const s = await this.support();
    return s.present ? s.version : SANDBOX_VERSIONS[SANDBOX_VERSIONS.length - 1]!;
  }

  /**
   * Deletes the Sandbox NAME; its controller-owned pod goes with it (the caller waits for that).
   * `known`: the handle says there is one, so every failure but 404 is thrown. Otherwise (reap: a
   * sandbox that may be either) nothing is tried when the CRDs are absent, and a refusal is only logged.
   */
  async remove(id: string, name: string, known: boolean): Promise<void> {
    const { cluster, namespace } = this.opts;
    const s = await this.support();
    if (!known && !s.present) return;
    const version = s.present ? s.version : await this.writeVersion();
    try {
      await cluster.call(`delete sandbox ${name}`, () =>
        this.custom.deleteNamespacedCustomObject({ group: AGENT_SANDBOX_GROUP, version, namespace, plural: SANDBOX_PLURAL, name, propagationPolicy: 'Background' }),
      );
    } catch (err) {
      const status = statusOf(err);
      if (status === 404) return;
      if (!known && status === 403) {
        this.opts.logger?.warn({ sandbox_id: id, err: messageOf(err) }, 'may not delete sandboxes.agents.x-k8s.io: a Sandbox of this sandbox, if there is one, stays');
        return;
      }
      throw apiError(err, `cannot delete the Sandbox of sandbox ${id}`);
    }
  }

  /** The Sandboxes matching SELECTOR ([] when the CRDs are absent or the daemon may not use them). */
  async list(selector: string): Promise<SandboxObject[]> {
    const { cluster, namespace } = this.opts;
    const s = await this.support();
    if (!s.present || s.allowed === false) return [];
    try {
      const list = (await cluster.call('list sandboxes', () => this.custom.listNamespacedCustomObject({ group: AGENT_SANDBOX_GROUP, version: s.version, namespace, plural: SANDBOX_PLURAL, labelSelector: selector }))) as { items?: SandboxObject[] };
      return list.items ?? [];
    } catch (err) {
      // Not allowed (agentSandbox: never with a Role without sandboxes): none of ours can be there to find.
      if (statusOf(err) === 403) return [];
      throw err;
    }
  }

  /**
   * A start that timed out before the controller made the pod says so, with the Sandbox's Ready
   * condition: the usual cause is a controller that is not running.
   */
  async explainTimeout(err: TimeoutError, name: string): Promise<TimeoutError> {
    const { cluster, namespace } = this.opts;
    const pod = await cluster.core.readNamespacedPod({ name, namespace }).catch(() => undefined);
    if (pod) return err;
    const ready = await this.read(name).then(readyCondition, () => undefined);
    return new TimeoutError(`${err.message}: agent-sandbox's controller made no pod for the Sandbox ${name}${ready ? ` (Ready ${ready.status}: ${ready.reason ?? ''} ${ready.message ?? ''})`.replace(/ +\)/, ')') : ' and set no status on it'}`, {
      hint: `check that the agent-sandbox controller runs (kubectl -n agent-sandbox-system get pods) and kubectl -n ${this.opts.namespace} describe sandbox ${name}`,
      cause: err,
    });
  }
}
