/**
 * The manifests of a kubernetes sandbox: its Pod and its NetworkPolicy, each built by one pure
 * function so that tests can check every hardening field (test/kubernetes/driver.test.ts).
 */
import type { V1NetworkPolicy, V1Pod } from '@kubernetes/client-node';
import type { Isolation, Limits } from '../../contract/model.js';

/** Every object of agentbox's carries this (list, reap and the watch select on it). */
export const LABEL_APP = 'app.kubernetes.io/name';
export const APP = 'agentbox-sandbox';
export const LABEL_MANAGED = 'app.kubernetes.io/managed-by';
/** The sandbox id (`RuntimeSpec.id`): what `list` reports and `reap` takes. */
export const LABEL_ID = 'agentbox.dev/sandbox-id';
/** This agentbox home: two daemons sharing a namespace never list or reap each other's pods. */
export const LABEL_HOME = 'agentbox.dev/home';
/**
 * A warm-pool member: `starting` until the exec helper is in it, then `available` until claimed
 * (claim.ts), then `claimed`.
 */
export const LABEL_POOL = 'agentbox.dev/pool';
/** Which pool a member belongs to (RuntimeSpec.poolKey): the core's hash of what the member was made for. */
export const LABEL_POOL_KEY = 'agentbox.dev/pool-key';
/** Labels of the request (RuntimeSpec.labels) go under this prefix, so they cannot pose as ours. */
export const USER_LABEL_PREFIX = 'label.agentbox.dev/';
/**
 * The pids limit. A Pod has no field for it (a kubelet enforces only its node-wide podPidsLimit):
 * carried as an annotation for an admission webhook or runtime that applies it per pod.
 */
export const ANNOTATION_PIDS = 'agentbox.dev/pids-limit';
export const ANNOTATION_ISOLATION = 'agentbox.dev/isolation';

/** The one container of a sandbox pod. */
export const CONTAINER = 'sandbox';
export const SANDBOX_UID = 1000;

/** RuntimeClass per isolation: `container` is the cluster's default runtime (runc). */
export const RUNTIME_CLASSES: Readonly<Record<'container' | 'gvisor' | 'vm', string | undefined>> = {
  container: undefined,
  gvisor: 'gvisor',
  vm: 'kata',
};

export interface PodSpecOpts {
  id: string;
  namespace: string;
  image: string;
  isolation: Isolation;
  limits: Limits;
  /** RuntimeSpec.labels, sanitised here. */
  labels: Record<string, string>;
  homeTag: string;
  pooled?: boolean;
  /** RuntimeSpec.poolKey, for a member of a pool (a label value: the core hashes it to one). */
  poolKey?: string;
  /** Overrides of the RuntimeClass per isolation (policy `kubernetes.runtimeClasses`). */
  runtimeClasses?: Partial<Record<Isolation, string>>;
  /**
   * The egress proxy's host name and address, for a sandbox with network: the pod has no DNS (its
   * NetworkPolicy lets it reach the proxy alone), so the name is written into its /etc/hosts.
   */
  proxyHost?: { hostname: string; ip: string };
}

/** The pod (and NetworkPolicy) name of a sandbox: a DNS-1123 label made from its id. */
export function podName(id: string): string {
  const safe = id.toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '');
  return `agentbox-${safe}`.slice(0, 63).replace(/-+$/, '');
}

const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** A label value as Kubernetes takes it: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends; '' when nothing is left. */
export function labelValue(value: string): string {
  const v = value.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
  return LABEL_VALUE.test(v) ? v : '';
}

/** RuntimeSpec.labels as pod labels under USER_LABEL_PREFIX: keys and values sanitised, what cannot be made valid dropped. */
export function userLabels(labels: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels)) {
    const name = k.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
    if (!LABEL_NAME.test(name)) continue;
    out[`${USER_LABEL_PREFIX}${name}`] = labelValue(v);
  }
  return out;
}

/** The labels every object of a sandbox carries. */
export function sandboxLabels(o: { id: string; homeTag: string }): Record<string, string> {
  return { [LABEL_APP]: APP, [LABEL_MANAGED]: 'agentbox', [LABEL_ID]: labelValue(o.id), [LABEL_HOME]: labelValue(o.homeTag) };
}

/**
 * PID 1 of the container: a shell that sleeps and reaps (its `wait` collects every child, orphans
 * reparented to it included, so what an exec leaves behind never piles up as zombies). Nothing of
 * agentbox is in the image: the exec wrapper is staged into /tmp after start (kubernetes-runtime.ts).
 */
export const POD_INIT = ['/bin/sh', '-c', 'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done'];

/**
 * The hardened Pod of a sandbox. /workspace and /tmp are two sub-directories of ONE emptyDir whose
 * sizeLimit is the disk limit, so they share one quota as on the other drivers; the root is
 * read-only; no service-account token, no host namespaces, no service links; uid/gid 1000.
 */
export function buildPod(o: PodSpecOpts): V1Pod {
  const runtimeClass = o.runtimeClasses?.[o.isolation] ?? (RUNTIME_CLASSES as Record<string, string | undefined>)[o.isolation];
  const mi = (mb: number): string => `${Math.max(1, Math.round(mb))}Mi`;
  const resources = {
    cpu: `${Math.max(1, Math.round(o.limits.cpus * 1000))}m`,
    memory: mi(o.limits.memoryMb),
    // The disk, plus room for the container's own logs (the root itself is read-only).
    'ephemeral-storage': mi(o.limits.diskMb + 16),
  };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: podName(o.id),
      namespace: o.namespace,
      labels: { ...userLabels(o.labels), ...sandboxLabels(o), ...(o.pooled ? { [LABEL_POOL]: 'starting', ...(o.poolKey ? { [LABEL_POOL_KEY]: labelValue(o.poolKey) } : {}) } : {}) },
      annotations: { [ANNOTATION_PIDS]: String(o.limits.pids), [ANNOTATION_ISOLATION]: o.isolation },
    },
    spec: {
      ...(runtimeClass ? { runtimeClassName: runtimeClass } : {}),
      restartPolicy: 'Never',
      ...(o.proxyHost ? { hostAliases: [{ ip: o.proxyHost.ip, hostnames: [o.proxyHost.hostname] }] } : {}),
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      hostNetwork: false,
      hostPID: false,
      hostIPC: false,
      shareProcessNamespace: false,
      terminationGracePeriodSeconds: 1,
      securityContext: {
        runAsNonRoot: true,
        runAsUser: SANDBOX_UID,
        runAsGroup: SANDBOX_UID,
        fsGroup: SANDBOX_UID,
        seccompProfile: { type: 'RuntimeDefault' },
      },
      containers: [
        {
          name: CONTAINER,
          image: o.image,
          imagePullPolicy: 'IfNotPresent',
          command: POD_INIT,
          workingDir: '/workspace',
          securityContext: {
            runAsNonRoot: true,
            runAsUser: SANDBOX_UID,
            runAsGroup: SANDBOX_UID,
            privileged: false,
            allowPrivilegeEscalation: false,
            readOnlyRootFilesystem: true,
            capabilities: { drop: ['ALL'] },
            seccompProfile: { type: 'RuntimeDefault' },
          },
          resources: { requests: { ...resources }, limits: { ...resources } },
          volumeMounts: [
            { name: 'disk', mountPath: '/workspace', subPath: 'workspace' },
            { name: 'disk', mountPath: '/tmp', subPath: 'tmp' },
          ],
        },
      ],
      volumes: [{ name: 'disk', emptyDir: { sizeLimit: mi(o.limits.diskMb) } }],
    },
  };
}

/**
 * Where an in-cluster egress proxy runs: sandboxes with egress may reach these pods only. The driver
 * does not pass one yet (it refuses egress: agentbox's proxy is a host process, see kubernetes-runtime.ts).
 */
export interface EgressProxySelector {
  /** Labels of the proxy pods. */
  podLabels: Record<string, string>;
  /** Labels of the proxy's namespace; absent: the sandboxes' own namespace. */
  namespaceLabels?: Record<string, string>;
  /** The proxy's port; absent: any. */
  port?: number;
}

/**
 * The NetworkPolicy of one sandbox: no ingress at all; no egress, or (with egress) only to the
 * egress proxy's pods. Selected by the sandbox-id label, so it applies to that pod alone.
 */
export function buildNetworkPolicy(o: { id: string; namespace: string; homeTag: string; egressProxy?: EgressProxySelector }): V1NetworkPolicy {
  const proxy = o.egressProxy;
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: podName(o.id), namespace: o.namespace, labels: sandboxLabels(o) },
    spec: {
      podSelector: { matchLabels: { [LABEL_ID]: labelValue(o.id) } },
      policyTypes: ['Ingress', 'Egress'],
      ingress: [],
      egress: proxy
        ? [
            {
              to: [{ podSelector: { matchLabels: { ...proxy.podLabels } }, ...(proxy.namespaceLabels ? { namespaceSelector: { matchLabels: { ...proxy.namespaceLabels } } } : {}) }],
              ...(proxy.port !== undefined ? { ports: [{ protocol: 'TCP', port: proxy.port }] } : {}),
            },
          ]
        : [],
    },
  };
}
