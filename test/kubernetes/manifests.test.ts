/**
 * deploy/kubernetes, checked without a cluster: every kustomization renders with `kubectl
 * kustomize`, every object it emits is valid against the Kubernetes OpenAPI schemas
 * (kubernetes-models) and has no field the API does not know (@kubernetes/client-node's models,
 * as `kubectl --validate=strict` would), and the security properties the manifests promise hold
 * in every rendering: no host namespaces or privileged containers, hardened pods, no service
 * account token in sandboxes, deny-all NetworkPolicies whose only way out of a sandbox is the
 * egress proxy, least-privilege RBAC, and the runtime class each overlay claims.
 *
 * Never applied to a real cluster: what a cluster's admission or CNI would do is not tested here.
 *
 * kubectl on PATH renders every kustomization; AGENTBOX_TEST_KUBECTL=PATH[:PATH...] names more
 * (e.g. Debian 12's kubernetes-client 1.20, whose kustomize is v2.0.3) and each renders them too.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { Command } from 'commander';
import { parseAllDocuments } from 'yaml';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { PodTemplate } from 'kubernetes-models/v1/PodTemplate';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { RuntimeClass } from 'kubernetes-models/node.k8s.io/v1/RuntimeClass';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { StorageClass } from 'kubernetes-models/storage.k8s.io/v1/StorageClass';
import { registerHostCommands } from '../../src/cli/host-commands.js';
import { parsePolicyText } from '../../src/policy/load.js';

/** dist/test/kubernetes/manifests.test.js -> the repository root. */
const root = fileURLToPath(new URL('../../../', import.meta.url));
const DEPLOY = join(root, 'deploy');
const KUSTOMIZE_ROOT = join(DEPLOY, 'kubernetes');

const AGENTBOX_NS = 'agentbox';
const SANDBOX_NS = 'agentbox-sandboxes';
const IMAGE = 'ghcr.io/agentbox/agentbox:0.1.0';

// ---- what each kustomization claims ------------------------------------------------------------

interface Claim {
  /** runtimeClassName of the sandbox pod template; undefined = the cluster's default (runc) */
  runtimeClass: string | undefined;
  /** defaults.isolation of the daemon's policy; undefined = the runtime's own */
  isolation: string | undefined;
  /** the RuntimeClass object the overlay ships (name -> handler); cloud overlays use the cloud's own */
  ships: Record<string, string>;
  /** includes the dev-only PostgreSQL */
  devDatabase: boolean;
  /** storageClassName of the dev database's volume, where an overlay sets one */
  storageClass?: string;
}

/** Every kustomization directory under deploy/kubernetes must be here: a new one states its claim. */
const CLAIMS: Record<string, Claim> = {
  base: { runtimeClass: undefined, isolation: undefined, ships: {}, devDatabase: false },
  'overlays/runc': { runtimeClass: undefined, isolation: undefined, ships: {}, devDatabase: false },
  'overlays/gvisor': { runtimeClass: 'gvisor', isolation: 'gvisor', ships: { gvisor: 'runsc' }, devDatabase: false },
  'overlays/kata': { runtimeClass: 'kata', isolation: 'vm', ships: { kata: 'kata' }, devDatabase: false },
  'overlays/postgres-dev': { runtimeClass: undefined, isolation: undefined, ships: {}, devDatabase: true },
  'overlays/gke': { runtimeClass: 'gvisor', isolation: 'gvisor', ships: {}, devDatabase: true, storageClass: 'standard-rwo' },
  'overlays/eks': { runtimeClass: undefined, isolation: undefined, ships: {}, devDatabase: true, storageClass: 'agentbox-gp3' },
  'overlays/aks': { runtimeClass: 'kata-vm-isolation', isolation: 'vm', ships: {}, devDatabase: true, storageClass: 'managed-csi' },
};

// ---- rendering ---------------------------------------------------------------------------------

/** Every directory under deploy/ holding a kustomization file. */
function kustomizationDirs(dir: string = DEPLOY): string[] {
  const here = ['kustomization.yaml', 'kustomization.yml', 'Kustomization'].some((f) => existsSync(join(dir, f))) ? [dir] : [];
  const subdirs = readdirSync(dir)
    .map((name) => join(dir, name))
    .filter((p) => statSync(p).isDirectory());
  return [...here, ...subdirs.flatMap((d) => kustomizationDirs(d))].sort();
}

interface Kubectl {
  label: string;
  path: string;
  version: string;
}

function kubectlVersion(path: string): string | undefined {
  const r = spawnSync(path, ['version', '--client'], { encoding: 'utf8', timeout: 30_000 });
  if (r.error || r.status !== 0) return undefined;
  return (r.stdout.split('\n').find((l) => l.trim() !== '') ?? '').trim().slice(0, 200);
}

const kubectls: Kubectl[] = [];
for (const path of ['kubectl', ...(process.env.AGENTBOX_TEST_KUBECTL ?? '').split(':').filter(Boolean)]) {
  const version = kubectlVersion(path);
  if (version !== undefined) kubectls.push({ label: path === 'kubectl' ? 'kubectl' : path, path, version });
  else if (path !== 'kubectl') throw new Error(`AGENTBOX_TEST_KUBECTL names ${path}, which does not run (kubectl version --client)`);
}
const noKubectl = kubectls.length === 0 ? 'kubectl is not installed (the manifests render with `kubectl kustomize`)' : undefined;

type Obj = Record<string, unknown> & { apiVersion?: unknown; kind?: unknown; metadata?: { name?: string; namespace?: string; labels?: Record<string, string> } };

function render(kubectl: Kubectl, dir: string): Obj[] {
  const r = spawnSync(kubectl.path, ['kustomize', dir], { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  assert.equal(r.status, 0, `${kubectl.label} kustomize ${relative(root, dir)} failed:\n${r.stderr}`);
  return parseYamlDocs(r.stdout, `${kubectl.label} kustomize ${relative(root, dir)}`);
}

/** Every document as plain data, YAML 1.2 (what the API server reads): `x: yes` stays a string. */
function parseYamlDocs(text: string, source: string): Obj[] {
  const out: Obj[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors[0]?.message}`);
    const data = doc.toJS() as unknown;
    if (data === null || data === undefined) continue;
    assert.ok(typeof data === 'object' && !Array.isArray(data), `${source}: a document that is not an object`);
    out.push(data as Obj);
  }
  return out;
}

// ---- schema validation -------------------------------------------------------------------------

interface Model {
  new (data: never): { validate(): void };
}

/** Each kind the manifests may emit: its kubernetes-models class and @kubernetes/client-node model. */
const MODELS: Record<string, { model: Model; client: string }> = {
  'v1/Namespace': { model: Namespace as unknown as Model, client: 'V1Namespace' },
  'v1/ServiceAccount': { model: ServiceAccount as unknown as Model, client: 'V1ServiceAccount' },
  'v1/ConfigMap': { model: ConfigMap as unknown as Model, client: 'V1ConfigMap' },
  'v1/Secret': { model: Secret as unknown as Model, client: 'V1Secret' },
  'v1/Service': { model: Service as unknown as Model, client: 'V1Service' },
  'v1/PodTemplate': { model: PodTemplate as unknown as Model, client: 'V1PodTemplate' },
  'apps/v1/Deployment': { model: Deployment as unknown as Model, client: 'V1Deployment' },
  'apps/v1/StatefulSet': { model: StatefulSet as unknown as Model, client: 'V1StatefulSet' },
  'policy/v1/PodDisruptionBudget': { model: PodDisruptionBudget as unknown as Model, client: 'V1PodDisruptionBudget' },
  'networking.k8s.io/v1/NetworkPolicy': { model: NetworkPolicy as unknown as Model, client: 'V1NetworkPolicy' },
  'node.k8s.io/v1/RuntimeClass': { model: RuntimeClass as unknown as Model, client: 'V1RuntimeClass' },
  'storage.k8s.io/v1/StorageClass': { model: StorageClass as unknown as Model, client: 'V1StorageClass' },
  'rbac.authorization.k8s.io/v1/Role': { model: Role as unknown as Model, client: 'V1Role' },
  'rbac.authorization.k8s.io/v1/RoleBinding': { model: RoleBinding as unknown as Model, client: 'V1RoleBinding' },
  'rbac.authorization.k8s.io/v1/ClusterRole': { model: ClusterRole as unknown as Model, client: 'V1ClusterRole' },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': { model: ClusterRoleBinding as unknown as Model, client: 'V1ClusterRoleBinding' },
};

const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'RuntimeClass', 'StorageClass']);

interface AttributeType {
  baseName: string;
  type: string;
}
interface ClientModel {
  getAttributeTypeMap(): AttributeType[];
}

function clientModel(type: string): ClientModel | undefined {
  const m = (k8s as unknown as Record<string, unknown>)[type];
  return typeof m === 'function' && typeof (m as Partial<ClientModel>).getAttributeTypeMap === 'function' ? (m as unknown as ClientModel) : undefined;
}

/**
 * Fields the API does not know, as `kubectl apply --validate=strict` would refuse them: the
 * OpenAPI schemas of kubernetes-models allow additional properties, so a misspelled
 * `readOnlyRootFileSystem` would pass them (and be dropped by the API server).
 */
function unknownFields(value: unknown, type: string, path: string): string[] {
  if (value === null || value === undefined) return [];
  const array = /^Array<(.+)>$/.exec(type);
  if (array) return Array.isArray(value) ? value.flatMap((v, i) => unknownFields(v, array[1] as string, `${path}[${i}]`)) : [];
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) return typeof value === 'object' ? Object.entries(value).flatMap(([k, v]) => unknownFields(v, map[1] as string, `${path}.${k}`)) : [];
  const model = clientModel(type);
  if (!model || typeof value !== 'object' || Array.isArray(value)) return [];
  const fields = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) => {
    const t = fields.get(k);
    return t === undefined ? [`${path}.${k}: unknown field`] : unknownFields(v, t, `${path}.${k}`);
  });
}

/**
 * kustomize writes a long Secret value's base64 as a block scalar folded at 76 columns; Go's base64
 * decoder, which the API server uses for `data`, skips \r and \n, so the line breaks are fine
 * there, while the schema's `byte` format (a strict regular expression) refuses them.
 */
function asTheApiServerReadsIt(obj: Obj): Obj {
  if (obj.kind !== 'Secret' || typeof obj.data !== 'object' || obj.data === null) return obj;
  const data = Object.fromEntries(Object.entries(obj.data as Record<string, unknown>).map(([k, v]) => [k, typeof v === 'string' ? v.replace(/[\r\n]/g, '') : v]));
  return { ...obj, data };
}

/** Everything wrong with one object's shape; empty when it is a valid object of a known kind. */
function schemaProblems(obj: Obj): string[] {
  const key = `${String(obj.apiVersion)}/${String(obj.kind)}`;
  const name = `${key} ${obj.metadata?.namespace ?? '-'}/${obj.metadata?.name ?? '?'}`;
  const entry = MODELS[key];
  if (!entry) return [`${name}: no schema for this kind here (add it to MODELS in this test)`];
  const problems: string[] = [];
  try {
    new entry.model(asTheApiServerReadsIt(obj) as never).validate();
  } catch (err) {
    problems.push(`${name}: ${err instanceof Error ? err.message : String(err)}`);
  }
  problems.push(...unknownFields(obj, entry.client, name));
  const kind = String(obj.kind);
  if (CLUSTER_SCOPED.has(kind) && obj.metadata?.namespace !== undefined) problems.push(`${name}: a cluster-scoped object with a namespace`);
  if (!CLUSTER_SCOPED.has(kind) && obj.metadata?.namespace === undefined) problems.push(`${name}: no namespace (it would land in the applier's current one)`);
  return problems;
}

// ---- security properties -----------------------------------------------------------------------

type PodSpec = k8s.V1PodSpec;
type Container = k8s.V1Container;

/** The pod specs an object carries (workloads' templates, a PodTemplate's, a Pod's own). */
function podSpecs(obj: Obj): PodSpec[] {
  const spec = obj.spec as Record<string, unknown> | undefined;
  switch (obj.kind) {
    case 'Pod':
      return spec ? [spec as unknown as PodSpec] : [];
    case 'PodTemplate':
      return [((obj.template as { spec?: PodSpec } | undefined)?.spec ?? {}) as PodSpec];
    case 'Deployment':
    case 'StatefulSet':
    case 'DaemonSet':
    case 'ReplicaSet':
    case 'Job':
      return [((spec?.template as { spec?: PodSpec } | undefined)?.spec ?? {}) as PodSpec];
    case 'CronJob':
      return [(((spec?.jobTemplate as { spec?: { template?: { spec?: PodSpec } } } | undefined)?.spec?.template?.spec) ?? {}) as PodSpec];
    default:
      return [];
  }
}

function describeObj(obj: Obj): string {
  return `${String(obj.kind)} ${obj.metadata?.namespace ?? '-'}/${obj.metadata?.name ?? '?'}`;
}

function allContainers(spec: PodSpec): Container[] {
  return [...(spec.initContainers ?? []), ...(spec.containers ?? []), ...((spec.ephemeralContainers ?? []) as Container[])];
}

/** What no pod anywhere may do: host namespaces, privileged containers, host paths, added capabilities. */
function forbiddenPodProblems(obj: Obj): string[] {
  const name = describeObj(obj);
  const out: string[] = [];
  for (const spec of podSpecs(obj)) {
    for (const f of ['hostNetwork', 'hostPID', 'hostIPC'] as const) if (spec[f] === true) out.push(`${name}: ${f}: true`);
    for (const v of spec.volumes ?? []) if (v.hostPath) out.push(`${name}: hostPath volume ${v.name}`);
    for (const c of allContainers(spec)) {
      if (c.securityContext?.privileged === true) out.push(`${name}: container ${c.name} is privileged`);
      if ((c.securityContext?.capabilities?.add ?? []).length > 0) out.push(`${name}: container ${c.name} adds capabilities`);
      for (const p of c.ports ?? []) if (p.hostPort !== undefined) out.push(`${name}: container ${c.name} binds hostPort ${p.hostPort}`);
    }
  }
  return out;
}

/** The hardening every pod agentbox ships has: read-only root, no capabilities, non-root, RuntimeDefault seccomp. */
function hardeningProblems(obj: Obj): string[] {
  const name = describeObj(obj);
  const out: string[] = [];
  for (const spec of podSpecs(obj)) {
    const pod = spec.securityContext ?? {};
    for (const c of allContainers(spec)) {
      const sc = c.securityContext ?? {};
      const at = `${name} container ${c.name}`;
      if (sc.readOnlyRootFilesystem !== true) out.push(`${at}: readOnlyRootFilesystem is not true`);
      if (sc.allowPrivilegeEscalation !== false) out.push(`${at}: allowPrivilegeEscalation is not false`);
      if (!(sc.capabilities?.drop ?? []).includes('ALL')) out.push(`${at}: capabilities do not drop ALL`);
      if ((sc.runAsNonRoot ?? pod.runAsNonRoot) !== true) out.push(`${at}: runAsNonRoot is not true`);
      if ((sc.runAsUser ?? pod.runAsUser) === 0) out.push(`${at}: runs as uid 0`);
      if ((sc.seccompProfile ?? pod.seccompProfile)?.type !== 'RuntimeDefault') out.push(`${at}: seccomp profile is not RuntimeDefault`);
    }
  }
  return out;
}

function labelOf(obj: Obj, key: string): string | undefined {
  return obj.metadata?.labels?.[key];
}

function podLabels(obj: Obj): Record<string, string> {
  const template = (obj.kind === 'PodTemplate' ? obj.template : (obj.spec as { template?: unknown } | undefined)?.template) as { metadata?: { labels?: Record<string, string> } } | undefined;
  return template?.metadata?.labels ?? {};
}

const isSandboxTemplate = (o: Obj): boolean => podSpecs(o).length > 0 && podLabels(o)['app.kubernetes.io/name'] === 'agentbox-sandbox';
const isDaemon = (o: Obj): boolean => o.kind === 'Deployment' && o.metadata?.name === 'agentbox' && o.metadata.namespace === AGENTBOX_NS;
const isProxy = (o: Obj): boolean => o.kind === 'Deployment' && o.metadata?.name === 'agentbox-egress' && o.metadata.namespace === AGENTBOX_NS;

/** A sandbox pod template's own promises: no token, uid 1000, a bounded /workspace, resources. */
function sandboxTemplateProblems(obj: Obj): string[] {
  const name = describeObj(obj);
  const out: string[] = [];
  if (obj.metadata?.namespace !== SANDBOX_NS) out.push(`${name}: not in ${SANDBOX_NS}`);
  for (const spec of podSpecs(obj)) {
    if (spec.automountServiceAccountToken !== false) out.push(`${name}: automountServiceAccountToken is not false`);
    if (spec.securityContext?.runAsUser !== 1000) out.push(`${name}: pod runAsUser is not 1000`);
    const workspace = (spec.volumes ?? []).find((v) => (spec.containers ?? []).some((c) => (c.volumeMounts ?? []).some((m) => m.name === v.name && m.mountPath === '/workspace')));
    if (!workspace?.emptyDir?.sizeLimit) out.push(`${name}: /workspace is not an emptyDir with a sizeLimit`);
    for (const c of spec.containers ?? []) {
      if (!c.resources?.limits?.cpu || !c.resources.limits.memory) out.push(`${name} container ${c.name}: no cpu and memory limits`);
    }
  }
  return out;
}

type Policy = k8s.V1NetworkPolicy;
type Peer = k8s.V1NetworkPolicyPeer;

const selects = (selector: k8s.V1LabelSelector | undefined, labels: Record<string, string>): boolean =>
  selector !== undefined && (selector.matchExpressions ?? []).length === 0 && Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);

/**
 * The sandboxes namespace: a deny-all for every pod, in and out; every egress rule of every policy
 * there leads only to the egress proxy's pods on its port (no ipBlock, no DNS); every ingress rule
 * admits only the daemon's pods. `proxyLabels`/`daemonLabels` are the pods' own labels, so a
 * selector that drifts from them is caught too.
 */
function sandboxNetworkProblems(objects: Obj[], proxyLabels: Record<string, string>, daemonLabels: Record<string, string>): string[] {
  const out: string[] = [];
  const policies = objects.filter((o) => o.kind === 'NetworkPolicy' && o.metadata?.namespace === SANDBOX_NS) as unknown as Policy[];
  const denyAll = policies.find(
    (p) =>
      Object.keys(p.spec?.podSelector?.matchLabels ?? {}).length === 0 &&
      (p.spec?.podSelector?.matchExpressions ?? []).length === 0 &&
      (p.spec?.policyTypes ?? []).includes('Ingress') &&
      (p.spec?.policyTypes ?? []).includes('Egress') &&
      (p.spec?.ingress ?? []).length === 0 &&
      (p.spec?.egress ?? []).length === 0,
  );
  if (!denyAll) out.push(`${SANDBOX_NS}: no deny-all NetworkPolicy (podSelector {}, policyTypes Ingress and Egress, no rules)`);
  const inAgentbox = (peer: Peer): boolean => selects(peer.namespaceSelector, { 'kubernetes.io/metadata.name': AGENTBOX_NS });
  let egressToProxy = 0;
  for (const p of policies) {
    const name = `NetworkPolicy ${SANDBOX_NS}/${p.metadata?.name ?? '?'}`;
    for (const rule of p.spec?.egress ?? []) {
      const peers = rule.to ?? [];
      if (peers.length === 0) out.push(`${name}: an egress rule without \`to\` (any destination)`);
      for (const peer of peers) {
        if (peer.ipBlock || !inAgentbox(peer) || !selects(peer.podSelector, proxyLabels)) out.push(`${name}: egress to something other than the egress proxy: ${JSON.stringify(peer)}`);
      }
      const ports = rule.ports ?? [];
      if (ports.length === 0 || ports.some((port) => port.port !== 3128 || (port.protocol ?? 'TCP') !== 'TCP')) out.push(`${name}: egress to ports other than TCP 3128: ${JSON.stringify(ports)}`);
      if (peers.length > 0) egressToProxy++;
    }
    for (const rule of p.spec?.ingress ?? []) {
      // read as YAML, not through client-node's deserializer: the field is `from`, not `_from`
      const peers = (rule as unknown as { from?: Peer[] }).from ?? [];
      if (peers.length === 0) out.push(`${name}: an ingress rule without \`from\` (any source)`);
      for (const peer of peers) {
        if (peer.ipBlock || !inAgentbox(peer) || !selects(peer.podSelector, daemonLabels)) out.push(`${name}: ingress from something other than the daemon: ${JSON.stringify(peer)}`);
      }
    }
  }
  if (egressToProxy === 0) out.push(`${SANDBOX_NS}: no egress rule to the egress proxy`);
  return out;
}

const CLOSED_RANGES = ['169.254.169.254/32', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10'];

/** The proxy's egress: every ipBlock that opens 0.0.0.0/0 excludes the cluster, private and metadata ranges. */
function proxyNetworkProblems(objects: Obj[], proxyLabels: Record<string, string>): string[] {
  const policies = (objects.filter((o) => o.kind === 'NetworkPolicy' && o.metadata?.namespace === AGENTBOX_NS) as unknown as Policy[]).filter((p) =>
    selects(p.spec?.podSelector, proxyLabels) && Object.keys(p.spec?.podSelector?.matchLabels ?? {}).length > 0,
  );
  if (policies.length === 0) return ['no NetworkPolicy selects the egress proxy'];
  const out: string[] = [];
  for (const p of policies) {
    for (const rule of p.spec?.egress ?? []) {
      if ((rule.to ?? []).length === 0) out.push(`${p.metadata?.name}: proxy egress rule without \`to\``);
      for (const peer of rule.to ?? []) {
        if (peer.ipBlock && peer.ipBlock.cidr === '0.0.0.0/0') {
          const missing = CLOSED_RANGES.filter((r) => !(peer.ipBlock?.except ?? []).includes(r));
          if (missing.length > 0) out.push(`${p.metadata?.name}: proxy egress to 0.0.0.0/0 does not exclude ${missing.join(', ')}`);
        } else if (peer.ipBlock) {
          out.push(`${p.metadata?.name}: proxy egress to ${peer.ipBlock.cidr}`);
        }
      }
    }
  }
  return out;
}

/**
 * The proxy relays sandboxes' http://agentbox.internal to the daemon (src/egress/api-relay.ts): its
 * AGENTBOX_API_URL names the daemon's Service (name.namespace[.svc...]) on one of its ports, that
 * port leads to a port of the daemon container, a NetworkPolicy on the proxy lets it out to the
 * daemon pods on that container port, one on the daemon lets it in, and both have
 * AGENTBOX_EGRESS_SECRET from the same Secret key (the proof's key).
 */
function proxyToDaemonProblems(objects: Obj[]): string[] {
  const proxy = objects.find(isProxy);
  const daemon = objects.find(isDaemon);
  if (!proxy || !daemon) return ['no egress proxy or daemon Deployment'];
  const proxyContainer = podSpecs(proxy)[0]?.containers[0];
  const daemonContainer = podSpecs(daemon)[0]?.containers[0];
  const envOf = (c: Container | undefined, name: string): k8s.V1EnvVar | undefined => (c?.env ?? []).find((e) => e.name === name);
  const out: string[] = [];
  const proxyKey = envOf(proxyContainer, 'AGENTBOX_EGRESS_SECRET')?.valueFrom?.secretKeyRef;
  const daemonKey = envOf(daemonContainer, 'AGENTBOX_EGRESS_SECRET')?.valueFrom?.secretKeyRef;
  if (!proxyKey || !daemonKey || proxyKey.name !== daemonKey.name || proxyKey.key !== daemonKey.key) out.push(`AGENTBOX_EGRESS_SECRET: not the same Secret key in the proxy (${JSON.stringify(proxyKey)}) and the daemon (${JSON.stringify(daemonKey)})`);
  const raw = envOf(proxyContainer, 'AGENTBOX_API_URL')?.value;
  if (raw === undefined || !URL.canParse(raw)) return [...out, `the proxy's AGENTBOX_API_URL is ${JSON.stringify(raw)}, not a URL`];
  const url = new URL(raw);
  const [svcName, svcNs = proxy.metadata?.namespace, ...rest] = url.hostname.split('.');
  if (rest.length > 0 && rest.join('.') !== 'svc' && rest.join('.') !== 'svc.cluster.local') out.push(`AGENTBOX_API_URL ${raw}: not a Service name`);
  const service = objects.find((o) => o.kind === 'Service' && o.metadata?.name === svcName && o.metadata?.namespace === svcNs) as (Obj & { spec?: k8s.V1ServiceSpec }) | undefined;
  if (!service) return [...out, `AGENTBOX_API_URL ${raw}: no Service ${svcNs}/${svcName}`];
  const daemonLabels = podLabels(daemon);
  if (!Object.entries(service.spec?.selector ?? {}).every(([k, v]) => daemonLabels[k] === v) || Object.keys(service.spec?.selector ?? {}).length === 0) out.push(`Service ${svcNs}/${svcName} does not select the daemon pods`);
  const servicePort = (service.spec?.ports ?? []).find((p) => p.port === Number(url.port || 80));
  const target = servicePort?.targetPort ?? servicePort?.port;
  const containerPort = (daemonContainer?.ports ?? []).find((p) => p.name === target || p.containerPort === target)?.containerPort;
  if (containerPort === undefined) return [...out, `AGENTBOX_API_URL ${raw}: Service ${svcNs}/${svcName} has no port ${url.port || 80} leading to a daemon container port`];
  const policies = objects.filter((o) => o.kind === 'NetworkPolicy' && o.metadata?.namespace === AGENTBOX_NS) as unknown as Policy[];
  const onPods = (p: Policy, labels: Record<string, string>): boolean => Object.keys(p.spec?.podSelector?.matchLabels ?? {}).length > 0 && selects(p.spec?.podSelector, labels);
  const samePort = (ports: k8s.V1NetworkPolicyPort[] | undefined): boolean => (ports ?? []).length === 0 || (ports ?? []).some((p) => p.port === containerPort && (p.protocol ?? 'TCP') === 'TCP');
  const inAgentbox = (peer: Peer): boolean => peer.namespaceSelector === undefined || selects(peer.namespaceSelector, { 'kubernetes.io/metadata.name': AGENTBOX_NS });
  const proxyLabels = podLabels(proxy);
  const canLeave = policies.filter((p) => onPods(p, proxyLabels)).some((p) => (p.spec?.egress ?? []).some((r) => samePort(r.ports) && (r.to ?? []).some((peer) => !peer.ipBlock && inAgentbox(peer) && selects(peer.podSelector, daemonLabels))));
  if (!canLeave) out.push(`no NetworkPolicy lets the egress proxy out to the daemon pods on TCP ${containerPort}`);
  const canEnter = policies.filter((p) => onPods(p, daemonLabels)).some((p) =>
    (p.spec?.ingress ?? []).some((r) => {
      const from = (r as unknown as { from?: Peer[] }).from ?? [];
      return samePort(r.ports) && (from.length === 0 || from.some((peer) => !peer.ipBlock && inAgentbox(peer) && selects(peer.podSelector, proxyLabels)));
    }),
  );
  if (!canEnter) out.push(`no NetworkPolicy lets the egress proxy in to the daemon pods on TCP ${containerPort}`);
  return out;
}

/** RBAC: no wildcards, no secrets, no escalation verbs; the ClusterRole holds only CRD reads. */
function rbacProblems(objects: Obj[]): string[] {
  const out: string[] = [];
  for (const o of objects.filter((x) => x.kind === 'Role' || x.kind === 'ClusterRole')) {
    const name = describeObj(o);
    for (const rule of (o.rules ?? []) as k8s.V1PolicyRule[]) {
      const all = [...(rule.apiGroups ?? []), ...(rule.resources ?? []), ...rule.verbs, ...(rule.nonResourceURLs ?? [])];
      if (all.some((x) => x.includes('*'))) out.push(`${name}: a wildcard in ${JSON.stringify(rule)}`);
      if ((rule.resources ?? []).some((r) => r === 'secrets' || r.startsWith('secrets/'))) out.push(`${name}: rights on secrets`);
      if (rule.verbs.some((v) => ['escalate', 'bind', 'impersonate'].includes(v))) out.push(`${name}: an escalation verb in ${JSON.stringify(rule)}`);
      if ((rule.nonResourceURLs ?? []).length > 0) out.push(`${name}: nonResourceURLs`);
      if (o.kind === 'ClusterRole') {
        const onlyCrds = (rule.apiGroups ?? []).every((g) => g === 'apiextensions.k8s.io') && (rule.resources ?? []).every((r) => r === 'customresourcedefinitions');
        const readOnly = rule.verbs.every((v) => v === 'get' || v === 'list');
        if (!onlyCrds || !readOnly) out.push(`${name}: a ClusterRole rule beyond reading CRDs: ${JSON.stringify(rule)}`);
      }
    }
  }
  return out;
}

function policyText(objects: Obj[]): string {
  const maps = objects.filter((o) => o.kind === 'ConfigMap' && o.metadata?.namespace === AGENTBOX_NS && (o.metadata.name ?? '').startsWith('agentbox-policy'));
  assert.equal(maps.length, 1, 'one agentbox-policy ConfigMap');
  const text = (maps[0]?.data as Record<string, string> | undefined)?.['policy.yaml'];
  assert.ok(text, 'agentbox-policy has policy.yaml');
  return text;
}

// ---- the tests ---------------------------------------------------------------------------------

const dirs = kustomizationDirs();
const rendered = new Map<string, Obj[]>();
/** Rendered once per kubectl and directory; the first kubectl's rendering is the one the later tests read. */
function renderedBy(kubectl: Kubectl, dir: string): Obj[] {
  const key = `${kubectl.path}\0${dir}`;
  let objs = rendered.get(key);
  if (!objs) {
    objs = render(kubectl, dir);
    rendered.set(key, objs);
  }
  return objs;
}
const primary = (dir: string): Obj[] => renderedBy(kubectls[0] as Kubectl, dir);
const rel = (dir: string): string => relative(KUSTOMIZE_ROOT, dir);
const k8sDirs = dirs.filter((d) => d.startsWith(KUSTOMIZE_ROOT));

describe('kubernetes manifests: every kustomization renders and validates', () => {
  test('kubernetes: deploy/kubernetes has the base and every overlay, each with its claim stated here', () => {
    assert.deepEqual(k8sDirs.map(rel).sort(), Object.keys(CLAIMS).sort());
  });

  for (const kubectl of kubectls.length > 0 ? kubectls : [undefined]) {
    for (const dir of dirs) {
      test(`kubernetes: ${kubectl?.label ?? 'kubectl'} kustomize ${relative(root, dir)} renders objects valid against the OpenAPI schemas`, { skip: noKubectl }, () => {
        const k = kubectl as Kubectl;
        const objs = renderedBy(k, dir);
        assert.ok(objs.length > 0, 'renders at least one object');
        assert.deepEqual(objs.flatMap(schemaProblems), []);
      });
    }
  }

  // What differs between kustomize v5 and v2.0.3 without changing what the API server stores:
  // generated names' hashes, where a patched env entry lands in the list, base64 line breaks, and
  // empty label/annotation maps on a replaced ConfigMap.
  test('kubernetes: every kubectl renders the same objects (up to hashes, env order, base64 line breaks)', { skip: noKubectl ?? (kubectls.length < 2 ? 'one kubectl only (AGENTBOX_TEST_KUBECTL names more)' : undefined) }, () => {
    const replacer = (key: string, v: unknown): unknown => {
      if (typeof v === 'string') return v.replace(/^(agentbox-policy|agentbox-postgres-dev)-[a-z0-9]{10}$/, '$1-HASH');
      if (key === 'env' && Array.isArray(v)) return [...(v as { name: string }[])].sort((a, b) => a.name.localeCompare(b.name));
      if ((key === 'labels' || key === 'annotations') && v && typeof v === 'object' && Object.keys(v).length === 0) return undefined;
      return v;
    };
    const normalize = (objs: Obj[]): string[] =>
      objs
        .map((o) => JSON.stringify(asTheApiServerReadsIt(o), replacer))
        .map((s) => JSON.stringify(sortKeys(JSON.parse(s))))
        .sort();
    for (const dir of dirs) {
      const [first, ...rest] = kubectls as [Kubectl, ...Kubectl[]];
      for (const other of rest) assert.deepEqual(normalize(renderedBy(other, dir)), normalize(renderedBy(first, dir)), `${relative(root, dir)}: ${other.label} vs ${first.label}`);
    }
  });
});

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  return v;
}

describe('kubernetes manifests: security properties of every rendering', { skip: noKubectl }, () => {
  for (const dir of k8sDirs) {
    const name = rel(dir);
    const claim = CLAIMS[name];

    test(`kubernetes ${name}: no pod template uses host namespaces, privileged containers, hostPath or added capabilities`, () => {
      assert.deepEqual(primary(dir).flatMap(forbiddenPodProblems), []);
    });

    test(`kubernetes ${name}: every pod is hardened (read-only root, drop ALL, no privilege escalation, non-root, seccomp RuntimeDefault)`, () => {
      const objs = primary(dir);
      assert.ok(objs.some(isSandboxTemplate), 'has the sandbox pod template');
      assert.ok(objs.some(isProxy), 'has the egress proxy');
      assert.deepEqual(objs.flatMap(hardeningProblems), []);
    });

    test(`kubernetes ${name}: the sandbox template has no service account token, uid 1000, a bounded /workspace and limits; only the daemon mounts a token`, () => {
      const objs = primary(dir);
      assert.deepEqual(objs.filter(isSandboxTemplate).flatMap(sandboxTemplateProblems), []);
      const withToken = objs.filter((o) => podSpecs(o).some((s) => s.automountServiceAccountToken !== false)).map(describeObj);
      assert.deepEqual(withToken, [`Deployment ${AGENTBOX_NS}/agentbox`]);
      const daemon = objs.find(isDaemon);
      assert.equal(podSpecs(daemon as Obj)[0]?.automountServiceAccountToken, true, 'the daemon mounts its token explicitly');
      assert.equal(podSpecs(daemon as Obj)[0]?.serviceAccountName, 'agentbox');
    });

    test(`kubernetes ${name}: the sandboxes namespace is deny-all, its only way out is the egress proxy, its only way in the daemon`, () => {
      const objs = primary(dir);
      const proxy = objs.find(isProxy) as Obj;
      const daemon = objs.find(isDaemon) as Obj;
      assert.deepEqual(sandboxNetworkProblems(objs, podLabels(proxy), podLabels(daemon)), []);
      // and the agentbox namespace is deny-all too, with the proxy kept off cluster and metadata ranges
      const agentboxDeny = (objs as unknown as Policy[]).filter(
        (p) => (p as unknown as Obj).kind === 'NetworkPolicy' && p.metadata?.namespace === AGENTBOX_NS && Object.keys(p.spec?.podSelector?.matchLabels ?? {}).length === 0 && (p.spec?.policyTypes ?? []).length === 2 && !p.spec?.ingress && !p.spec?.egress,
      );
      assert.equal(agentboxDeny.length, 1, `one deny-all NetworkPolicy in ${AGENTBOX_NS}`);
      assert.deepEqual(proxyNetworkProblems(objs, podLabels(proxy)), []);
    });

    test(`kubernetes ${name}: the egress proxy reaches the daemon's API (AGENTBOX_API_URL, its Service and port, both NetworkPolicies, one egress secret)`, () => {
      assert.deepEqual(proxyToDaemonProblems(primary(dir)), []);
    });

    test(`kubernetes ${name}: RBAC has no wildcards, no secrets, and only CRD reads cluster-wide`, () => {
      const objs = primary(dir);
      assert.deepEqual(rbacProblems(objs), []);
      const role = objs.find((o) => o.kind === 'Role' && o.metadata?.namespace === SANDBOX_NS);
      assert.ok(role, `a Role in ${SANDBOX_NS}`);
      assert.equal(objs.filter((o) => o.kind === 'Role' || o.kind === 'RoleBinding').filter((o) => o.metadata?.namespace !== SANDBOX_NS).length, 0, `Roles only in ${SANDBOX_NS}`);
      for (const b of objs.filter((o) => o.kind === 'RoleBinding' || o.kind === 'ClusterRoleBinding')) {
        assert.deepEqual(b.subjects, [{ kind: 'ServiceAccount', name: 'agentbox', namespace: AGENTBOX_NS }], `${describeObj(b)} binds only the daemon's account`);
      }
    });

    test(`kubernetes ${name}: sandboxes run under ${claim?.runtimeClass ?? 'the default runtime'} and the policy says isolation ${claim?.isolation ?? '(the runtime\'s own)'}`, () => {
      assert.ok(claim, `${name} states its claim in CLAIMS`);
      const objs = primary(dir);
      for (const t of objs.filter(isSandboxTemplate)) assert.equal(podSpecs(t)[0]?.runtimeClassName, claim.runtimeClass, describeObj(t));
      const shipped = Object.fromEntries(objs.filter((o) => o.kind === 'RuntimeClass').map((o) => [o.metadata?.name, o.handler]));
      assert.deepEqual(shipped, claim.ships);
      // no pod asks for a RuntimeClass that neither this overlay ships nor the cloud provides
      for (const o of objs) for (const s of podSpecs(o)) if (s.runtimeClassName !== undefined) assert.equal(s.runtimeClassName, claim.runtimeClass, describeObj(o));

      const text = policyText(objs);
      const baseText = policyText(primary(join(KUSTOMIZE_ROOT, 'base')));
      const data = parseYamlDocs(text, 'policy.yaml')[0] as { defaults: Record<string, unknown> };
      const base = parseYamlDocs(baseText, 'base policy.yaml')[0] as { defaults: Record<string, unknown> };
      assert.equal(data.defaults.isolation, claim.isolation);
      // the overlay's policy is the base's with only defaults.isolation changed
      delete data.defaults.isolation;
      assert.deepEqual(data, base);
    });

    test(`kubernetes ${name}: the policy is valid against the policy schema, with the kubernetes runtime, its namespace and egress proxy`, () => {
      const result = parsePolicyText(policyText(primary(dir)), `${name} policy.yaml`);
      assert.equal(result.kind, 'ok', result.kind === 'invalid' ? result.reason : result.kind);
      if (result.kind !== 'ok') return;
      assert.equal(result.policy.defaults.runtime, 'kubernetes');
      assert.equal(result.policy.kubernetes?.namespace, 'agentbox-sandboxes');
      const proxy = primary(dir).find(isProxy);
      assert.deepEqual(result.policy.kubernetes?.egressProxy?.podLabels, (proxy as { spec?: { template?: { metadata?: { labels?: Record<string, string> } } } } | undefined)?.spec?.template?.metadata?.labels?.['app.kubernetes.io/name'] === 'agentbox-egress' ? { 'app.kubernetes.io/name': 'agentbox-egress' } : undefined, 'the policy names the proxy pods by their labels');
    });

    test(`kubernetes ${name}: the daemon runs \`agentbox serve\` with real flags, two replicas, the image named once, secrets by reference`, () => {
      const objs = primary(dir);
      const daemon = objs.find(isDaemon) as Obj & { spec: { replicas?: number } };
      assert.equal(daemon.spec.replicas, 2);
      const container = podSpecs(daemon)[0]?.containers[0] as Container;
      const args = container.args ?? [];
      assert.equal(args[0], 'serve');
      const serveFlags = serveOptionFlags();
      for (const a of args.filter((x) => x.startsWith('--'))) assert.ok(serveFlags.has(a), `agentbox serve has no ${a} (it has ${[...serveFlags].join(' ')})`);
      assert.deepEqual([args[args.indexOf('--host') + 1], args[args.indexOf('--port') + 1]], ['0.0.0.0', '8080']);
      const env = Object.fromEntries((container.env ?? []).map((e) => [e.name, e]));
      for (const v of ['AGENTBOX_TOKEN', 'AGENTBOX_DATABASE_URL']) assert.ok(env[v]?.valueFrom?.secretKeyRef && env[v]?.value === undefined, `${v} comes from a Secret`);
      for (const o of objs) {
        for (const s of podSpecs(o)) for (const c of allContainers(s)) if (o === daemon || isProxy(o)) assert.equal(c.image, IMAGE, describeObj(o));
      }
      const dbSecret = env.AGENTBOX_DATABASE_URL?.valueFrom?.secretKeyRef?.name ?? '';
      if (claim?.devDatabase) assert.match(dbSecret, /^agentbox-postgres-dev-/, 'the dev database\'s generated Secret');
      else assert.equal(dbSecret, 'agentbox', 'the Secret `agentbox` the operator creates');
    });

    test(`kubernetes ${name}: the dev-only PostgreSQL is ${claim?.devDatabase ? 'there, labelled dev-only' : 'absent'}`, () => {
      const objs = primary(dir);
      const db = objs.filter((o) => o.kind === 'StatefulSet');
      if (!claim?.devDatabase) return assert.equal(db.length, 0);
      assert.equal(db.length, 1);
      const sts = db[0] as Obj & { spec: { replicas: number; volumeClaimTemplates: k8s.V1PersistentVolumeClaim[] } };
      assert.equal(labelOf(sts, 'dev-only'), 'true');
      assert.equal(sts.spec.replicas, 1);
      assert.equal(sts.spec.volumeClaimTemplates[0]?.spec?.storageClassName, claim.storageClass);
      if (claim.storageClass?.startsWith('agentbox-')) assert.ok(objs.some((o) => o.kind === 'StorageClass' && o.metadata?.name === claim.storageClass), `ships StorageClass ${claim.storageClass}`);
    });
  }

  test('kubernetes: the image is named in one place, base/kustomization.yaml', () => {
    const files = k8sDirs.map((d) => join(d, 'kustomization.yaml')).filter((f) => readFileSync(f, 'utf8').includes('ghcr.io/agentbox/agentbox'));
    assert.deepEqual(files.map((f) => relative(KUSTOMIZE_ROOT, f)), ['base/kustomization.yaml']);
  });
});

/** The long flags `agentbox serve` accepts, read from the CLI's own command definition. */
function serveOptionFlags(): Set<string> {
  const program = new Command();
  registerHostCommands(program, () => {});
  const serve = program.commands.find((c) => c.name() === 'serve');
  assert.ok(serve, 'agentbox has a serve command');
  return new Set(serve.options.map((o) => o.long).filter((l): l is string => l !== undefined));
}

describe('kubernetes manifests: the checkers fail on what they must refuse', () => {
  const pod = (container: Record<string, unknown>, spec: Record<string, unknown> = {}): Obj => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'bad', namespace: SANDBOX_NS },
    spec: {
      selector: { matchLabels: { app: 'bad' } },
      template: { metadata: { labels: { app: 'bad' } }, spec: { containers: [{ name: 'c', image: 'i', ...container }], ...spec } },
    },
  });
  const hardened = { securityContext: { readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } } };

  test('kubernetes checker: a hardened object passes (so the refusals below are about what changed)', () => {
    assert.deepEqual(schemaProblems(pod(hardened)), []);
    assert.deepEqual(forbiddenPodProblems(pod(hardened)), []);
    assert.deepEqual(hardeningProblems(pod(hardened)), []);
  });

  test('kubernetes checker: privileged: true and hostNetwork are refused', () => {
    const bad = pod({ securityContext: { ...hardened.securityContext, privileged: true } }, { hostNetwork: true, hostPID: true });
    assert.deepEqual(forbiddenPodProblems(bad), [`Deployment ${SANDBOX_NS}/bad: hostNetwork: true`, `Deployment ${SANDBOX_NS}/bad: hostPID: true`, `Deployment ${SANDBOX_NS}/bad: container c is privileged`]);
  });

  test('kubernetes checker: a field of the wrong type fails the OpenAPI schema', () => {
    const problems = schemaProblems(pod({ securityContext: { privileged: 'yes' } }));
    assert.equal(problems.length, 1);
    assert.match(problems[0] as string, /privileged must be boolean/);
    // Secret data must still be base64 once the line breaks kustomize adds are taken out
    assert.match(schemaProblems({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 's', namespace: 'x' }, data: { k: 'not base64!' } }).join(), /must match format "byte"/);
    assert.deepEqual(schemaProblems({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 's', namespace: 'x' }, data: { k: 'YWdl\nbnRib3g=\n' } }), []);
    // YAML 1.1 turns an unquoted `y` into true: a label must be a string
    assert.match(schemaProblems(parseYamlDocs('apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels: { a: true }\n', 't')[0] as Obj).join(), /labels\/a must be string/);
  });

  test('kubernetes checker: a misspelled field is an unknown field, not silently dropped', () => {
    const problems = schemaProblems(pod({ securityContext: { readOnlyRootFileSystem: true } }));
    assert.deepEqual(problems, [`apps/v1/Deployment ${SANDBOX_NS}/bad.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem: unknown field`]);
    assert.ok(hardeningProblems(pod({ securityContext: { ...hardened.securityContext, readOnlyRootFilesystem: undefined } })).some((p) => p.includes('readOnlyRootFilesystem')));
  });

  test('kubernetes checker: an unknown kind fails, it is not skipped', () => {
    assert.match(schemaProblems({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w', namespace: 'x' } }).join(), /no schema for this kind/);
    assert.match(schemaProblems({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'no-namespace' } }).join(), /no namespace/);
  });

  test('kubernetes checker: a missing hardening field is reported per field', () => {
    assert.deepEqual(hardeningProblems(pod({})), [
      `Deployment ${SANDBOX_NS}/bad container c: readOnlyRootFilesystem is not true`,
      `Deployment ${SANDBOX_NS}/bad container c: allowPrivilegeEscalation is not false`,
      `Deployment ${SANDBOX_NS}/bad container c: capabilities do not drop ALL`,
      `Deployment ${SANDBOX_NS}/bad container c: runAsNonRoot is not true`,
      `Deployment ${SANDBOX_NS}/bad container c: seccomp profile is not RuntimeDefault`,
    ]);
  });

  test('kubernetes checker: RBAC with wildcards or secrets is refused', () => {
    const role = (rules: unknown[], kind = 'Role'): Obj => ({ apiVersion: 'rbac.authorization.k8s.io/v1', kind, metadata: { name: 'r', namespace: SANDBOX_NS }, rules });
    assert.equal(rbacProblems([role([{ apiGroups: [''], resources: ['pods'], verbs: ['get'] }])]).length, 0);
    assert.equal(rbacProblems([role([{ apiGroups: [''], resources: ['pods'], verbs: ['*'] }])]).length, 1);
    assert.equal(rbacProblems([role([{ apiGroups: [''], resources: ['secrets'], verbs: ['list'] }])]).length, 1);
    assert.equal(rbacProblems([role([{ apiGroups: ['rbac.authorization.k8s.io'], resources: ['roles'], verbs: ['escalate'] }])]).length, 1);
    assert.equal(rbacProblems([role([{ apiGroups: [''], resources: ['pods'], verbs: ['get'] }], 'ClusterRole')]).length, 1);
  });

  test('kubernetes checker: a sandbox egress rule to anything but the proxy, or no deny-all, is refused', () => {
    const proxyLabels = { 'app.kubernetes.io/name': 'agentbox-egress' };
    const daemonLabels = { 'app.kubernetes.io/name': 'agentbox' };
    const np = (name: string, spec: Record<string, unknown>): Obj => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: SANDBOX_NS }, spec });
    const denyAll = np('deny', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] });
    const toProxy = { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': AGENTBOX_NS } }, podSelector: { matchLabels: proxyLabels } };
    const good = np('out', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [toProxy], ports: [{ protocol: 'TCP', port: 3128 }] }] });
    assert.deepEqual(sandboxNetworkProblems([denyAll, good], proxyLabels, daemonLabels), []);
    assert.equal(sandboxNetworkProblems([good], proxyLabels, daemonLabels).length, 1, 'no deny-all');
    const dns = np('dns', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: {}, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } }], ports: [{ protocol: 'UDP', port: 53 }] }] });
    assert.equal(sandboxNetworkProblems([denyAll, good, dns], proxyLabels, daemonLabels).length, 2, 'DNS: wrong peer and wrong port');
    const world = np('world', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0' } }] }] });
    assert.ok(sandboxNetworkProblems([denyAll, good, world], proxyLabels, daemonLabels).length >= 1, 'ipBlock');
    const anywhere = np('any', { podSelector: {}, policyTypes: ['Egress'], egress: [{}] });
    assert.ok(sandboxNetworkProblems([denyAll, good, anywhere], proxyLabels, daemonLabels).some((p) => p.includes('without `to`')));
    // a selector that no longer matches the proxy pods' labels is caught as well
    assert.ok(sandboxNetworkProblems([denyAll, good], { 'app.kubernetes.io/name': 'renamed-proxy' }, daemonLabels).length >= 1);
  });
});

describe('kubernetes manifests: the proxy-to-daemon checker fails on what it must refuse', { skip: noKubectl }, () => {
  const base = (): Obj[] => structuredClone(primary(join(KUSTOMIZE_ROOT, 'base')));
  const proxyEnv = (objs: Obj[]): k8s.V1EnvVar[] => podSpecs(objs.find(isProxy) as Obj)[0]?.containers[0]?.env ?? [];
  const proxyPolicy = (objs: Obj[]): Policy => (objs as unknown as Policy[]).find((p) => (p as unknown as Obj).kind === 'NetworkPolicy' && p.metadata?.name === 'agentbox-egress') as Policy;

  test('kubernetes checker: the base passes (so the refusals below are about what changed)', () => {
    assert.deepEqual(proxyToDaemonProblems(base()), []);
  });

  test('kubernetes checker: no AGENTBOX_API_URL, a wrong Service or port, or another secret key is refused', () => {
    const unset = base();
    podSpecs(unset.find(isProxy) as Obj)[0]!.containers[0]!.env = proxyEnv(unset).filter((e) => e.name !== 'AGENTBOX_API_URL');
    assert.equal(proxyToDaemonProblems(unset).length, 1);
    for (const wrong of ['http://agentbox-egress.agentbox.svc:8080', 'http://agentbox.agentbox.svc:9090', 'http://agentbox.other.svc:8080']) {
      const objs = base();
      proxyEnv(objs).find((e) => e.name === 'AGENTBOX_API_URL')!.value = wrong;
      assert.ok(proxyToDaemonProblems(objs).length >= 1, wrong);
    }
    const key = base();
    proxyEnv(key).find((e) => e.name === 'AGENTBOX_EGRESS_SECRET')!.valueFrom!.secretKeyRef!.key = 'other';
    assert.equal(proxyToDaemonProblems(key).length, 1);
  });

  test('kubernetes checker: without the proxy\'s egress rule to the daemon, or on another port, it is refused', () => {
    const dropped = base();
    const p = proxyPolicy(dropped);
    p.spec!.egress = (p.spec?.egress ?? []).filter((r) => !(r.to ?? []).some((peer) => peer.podSelector?.matchLabels?.['app.kubernetes.io/component'] === 'daemon'));
    assert.deepEqual(proxyToDaemonProblems(dropped), ['no NetworkPolicy lets the egress proxy out to the daemon pods on TCP 8080']);
    const port = base();
    for (const r of proxyPolicy(port).spec?.egress ?? []) if ((r.to ?? []).some((peer) => peer.podSelector?.matchLabels?.['app.kubernetes.io/component'] === 'daemon')) r.ports = [{ protocol: 'TCP', port: 9090 }];
    assert.equal(proxyToDaemonProblems(port).length, 1);
  });
});

describe('kubernetes manifests: the Grafana dashboard the README points to', () => {
  test('kubernetes: the README\'s Kubernetes section names deploy/grafana/agentbox-dashboard.json, which exists and is a dashboard', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Running on Kubernetes'));
    assert.ok(readme.includes('## Running on Kubernetes'), 'README has a "Running on Kubernetes" section');
    const cut = section.indexOf('\n## ', 3);
    const body = cut === -1 ? section : section.slice(0, cut);
    assert.ok(body.includes('deploy/grafana/agentbox-dashboard.json'), 'the section points to the dashboard');
    const dashboard = JSON.parse(readFileSync(join(DEPLOY, 'grafana', 'agentbox-dashboard.json'), 'utf8')) as { uid?: string; panels?: unknown[] };
    assert.equal(typeof dashboard.uid, 'string');
    assert.ok((dashboard.panels ?? []).length > 0);
  });
});
