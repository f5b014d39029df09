/**
 * Sandboxes made through kubernetes-sigs/agent-sandbox (src/runtime/kubernetes/agent-sandbox.ts):
 * the Sandbox object checked against the CRD schema vendored from that project
 * (agent-sandbox-crd.json), and the driver against the FAKE API server with the CRDs served and a
 * FAKE of agent-sandbox's controller (fake-apiserver.ts). No real cluster and no real controller run
 * here: what the fake controller does is what agent-sandbox's controllers/sandbox_controller.go does
 * at the commit the schema came from, for the parts the driver relies on.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { after, before, describe, test } from 'node:test';
import { InternalError, RuntimeUnavailableError, TimeoutError } from '../../src/contract/errors.js';
import type { Limits } from '../../src/contract/model.js';
import { AgentSandboxes, awaitingController, buildSandbox, pickVersion, sandboxPodName } from '../../src/runtime/kubernetes/agent-sandbox.js';
import { Cluster, loadKubeConfig } from '../../src/runtime/kubernetes/cluster.js';
import type { KubernetesRuntime } from '../../src/runtime/kubernetes/kubernetes-runtime.js';
import { buildPod, LABEL_ID, LABEL_POOL, labelValue, podName } from '../../src/runtime/kubernetes/pod-spec.js';
import type { SandboxHandle } from '../../src/runtime/types.js';
import { run } from '../helpers/collect.js';
import { hostLeftovers } from '../helpers/host-leftovers.js';
import { nameHash } from './fake-apiserver.js';
import { FAKE_NAMESPACE, startFakeCluster, type FakeCluster } from './fake-cluster.js';
import { sandboxCrd, validate } from './structural-schema.js';

const LIMITS: Limits = { cpus: 0.5, memoryMb: 128, pids: 64, diskMb: 96 };

type PodLike = { metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string>; ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean; blockOwnerDeletion?: boolean }[] }; spec: Record<string, unknown>; status?: { phase?: string } };

describe('agent-sandbox Sandbox object (agent-sandbox.ts)', () => {
  const pod = buildPod({ id: 'sbx_AbC123', namespace: 'ns1', image: 'docker.io/library/busybox:1.36', isolation: 'gvisor', limits: LIMITS, labels: { team: 'red' }, homeTag: 'home1', proxyHost: { hostname: 'proxy.example', ip: '10.0.0.9' } });
  const crd = sandboxCrd();

  test('the vendored CRD is agent-sandbox\'s Sandbox, with its source commit', () => {
    assert.equal(crd.group, 'agents.x-k8s.io');
    assert.equal(crd.names.kind, 'Sandbox');
    assert.equal(crd.names.plural, 'sandboxes');
    assert.match(crd.source.commit, /^[0-9a-f]{40}$/);
    assert.deepEqual(Object.keys(crd.versions).sort(), ['v1alpha1', 'v1beta1']);
  });

  for (const version of ['v1beta1', 'v1alpha1']) {
    test(`the Sandbox (${version}) validates against the vendored CRD schema, no field pruned, and its podTemplate is the hardened pod whole`, () => {
      const sbx = buildSandbox(pod, version);
      assert.deepEqual(validate(crd.versions[version]!.schema, sbx), []);
      assert.equal(sbx.apiVersion, `agents.x-k8s.io/${version}`);
      assert.equal(sbx.metadata.name, podName('sbx_AbC123'));
      // Every field of the pod's spec (securityContext, runtimeClass, resources, volumes, hostAliases...) as buildPod made it.
      assert.deepEqual(sbx.spec.podTemplate.spec, pod.spec);
      assert.deepEqual(sbx.spec.podTemplate.metadata, { labels: pod.metadata?.labels, annotations: pod.metadata?.annotations });
      assert.deepEqual(sbx.metadata.labels, pod.metadata?.labels);
      assert.equal(sbx.spec.service, false);
    });
  }

  test('the schema check can fail: an unknown hardening field, a wrong type and a missing podTemplate are each reported', () => {
    const schema = crd.versions.v1beta1!.schema;
    const sbx = buildSandbox(pod, 'v1beta1') as unknown as { spec: { podTemplate: { spec: { containers: { securityContext: Record<string, unknown> }[]; automountServiceAccountToken: unknown } } } };
    sbx.spec.podTemplate.spec.containers[0]!.securityContext.noNewPrivs = true;
    sbx.spec.podTemplate.spec.automountServiceAccountToken = 'false';
    const problems = validate(schema, sbx);
    assert.ok(problems.some((p) => p.includes('.securityContext.noNewPrivs: unknown field')), problems.join('\n'));
    assert.ok(problems.some((p) => p.includes('.automountServiceAccountToken: must be a boolean')), problems.join('\n'));
    assert.ok(validate(schema, { apiVersion: 'agents.x-k8s.io/v1beta1', kind: 'Sandbox', metadata: { name: 'x' }, spec: {} }).some((p) => p === '.spec.podTemplate: required'));
  });

  test('version choice, pod naming and the start check of a controller-made pod', () => {
    const group = (preferred: string, ...versions: string[]) => ({ name: 'agents.x-k8s.io', versions: versions.map((version) => ({ groupVersion: `agents.x-k8s.io/${version}`, version })), preferredVersion: { groupVersion: `agents.x-k8s.io/${preferred}`, version: preferred } });
    assert.equal(pickVersion(group('v1beta1', 'v1beta1', 'v1alpha1')), 'v1beta1');
    assert.equal(pickVersion(group('v1alpha1', 'v1alpha1')), 'v1alpha1');
    assert.equal(pickVersion(group('v2', 'v2', 'v1alpha1')), 'v1alpha1');
    assert.equal(pickVersion(group('v2', 'v2')), undefined);
    assert.equal(sandboxPodName({ metadata: { name: 'agentbox-a' } }), 'agentbox-a');
    assert.equal(sandboxPodName({ metadata: { name: 'agentbox-a', annotations: { 'agents.x-k8s.io/pod-name': 'pool-x' } } }), 'pool-x');
    const check = awaitingController((p) => (p ? 'there' : 'gone'));
    assert.equal(check(undefined), undefined, 'not made yet is not gone');
    assert.equal(check({ metadata: { name: 'p' } }), 'there');
    assert.equal(check(undefined), 'gone', 'once seen, absent is gone');
    // agent-sandbox's NameHash (FNV-1a, 32 bits), as the fake controller labels pods: known values.
    assert.equal(nameHash(''), '811c9dc5');
    assert.equal(nameHash('a'), 'e40c292c');
  });
});

describe('kubernetes driver with the agent-sandbox CRDs (fake API server and fake controller)', () => {
  let cluster: FakeCluster;
  let rt: KubernetesRuntime;
  let n = 0;
  const nextId = (): string => `sbx_as${process.pid}x${++n}`;
  const spec = (id: string, extra: { pooled?: boolean; poolKey?: string } = {}) => ({ id, image: 'busybox', isolation: 'container' as const, limits: LIMITS, labels: { team: 'red' }, ...extra });
  const podOf = (id: string): PodLike | undefined => cluster.fake.listPods().find((p) => p.metadata.labels?.[LABEL_ID] === labelValue(id)) as unknown as PodLike | undefined;
  const sandboxOf = (id: string) => cluster.fake.listSandboxes().find((s) => s.metadata.name === podName(id));

  before(async () => {
    cluster = await startFakeCluster({ crds: true });
    rt = cluster.newRuntime({ retryForMs: 4000 });
  });

  after(async () => {
    const left = await rt.list();
    await rt.close();
    const pods = cluster.fake.listPods().map((p) => p.metadata.name);
    const policies = cluster.fake.listPolicies().map((p) => p.metadata.name);
    const sandboxes = cluster.fake.listSandboxes().map((p) => p.metadata.name);
    const locals = cluster.fake.localSandboxIds();
    const ever = [...cluster.fake.localIdsEver];
    const verbs = [...cluster.fake.sandboxVerbs].sort();
    await cluster.close();
    // deploy/kubernetes/base/rbac.yaml grants exactly what the driver used on Sandboxes here, no more.
    const rbac = readFileSync(fileURLToPath(new URL('../../../deploy/kubernetes/base/rbac.yaml', import.meta.url)), 'utf8');
    const rules = parseAllDocuments(rbac).map((d) => d.toJS() as { kind: string; rules?: { apiGroups: string[]; resources: string[]; verbs: string[] }[] }).filter((o) => o.kind === 'Role').flatMap((o) => o.rules ?? []);
    const granted = rules.filter((r) => r.apiGroups.includes('agents.x-k8s.io') && r.resources.includes('sandboxes')).flatMap((r) => r.verbs).sort();
    assert.deepEqual(granted, verbs, 'the Role\'s verbs on sandboxes.agents.x-k8s.io are not the ones the driver uses');
    assert.ok(!rules.some((r) => r.apiGroups.includes('extensions.agents.x-k8s.io')), 'the Role grants SandboxClaims or SandboxWarmPools, which the driver never makes');
    assert.deepEqual(left, [], 'the driver still lists sandboxes');
    assert.deepEqual(pods, [], 'pods left in the fake API server');
    assert.deepEqual(policies, [], 'network policies left');
    assert.deepEqual(sandboxes, [], 'Sandbox objects left');
    assert.deepEqual(locals, [], 'local sandboxes of the fake left behind');
    assert.deepEqual(hostLeftovers(ever), [], 'processes, cgroups or mounts of the fake\'s local sandboxes left on the host');
  });

  test('probe: the CRDs are found and used', async () => {
    const p = await rt.probe();
    assert.equal(p.ok, true, p.reason);
    assert.equal(p.details?.agentSandboxCrds, 'present (agents.x-k8s.io/v1beta1, agents.x-k8s.io/v1alpha1); used: a sandbox is a Sandbox (agents.x-k8s.io/v1beta1) made by its controller, pool members plain pods');
  });

  test('create makes a Sandbox (not a bare pod) whose controller-made pod has every hardening field; exec works; destroy removes the Sandbox, the pod and the NetworkPolicy', async () => {
    const id = nextId();
    const h = await rt.create(spec(id));
    const sbx = sandboxOf(id);
    assert.ok(sbx, 'no Sandbox object');
    assert.equal(sbx.apiVersion, 'agents.x-k8s.io/v1beta1');
    assert.deepEqual(h.data, { namespace: FAKE_NAMESPACE, pod: podName(id), sandbox: podName(id) });
    const pod = podOf(id);
    assert.ok(pod, 'no pod');
    assert.equal(pod.metadata.name, podName(id));
    // Made by the controller, owned by the Sandbox: the garbage collector removes it with the Sandbox.
    assert.deepEqual(pod.metadata.ownerReferences, [{ apiVersion: 'agents.x-k8s.io/v1beta1', kind: 'Sandbox', name: podName(id), uid: sbx.metadata.uid, controller: true, blockOwnerDeletion: true }]);
    const want = buildPod({ id, namespace: FAKE_NAMESPACE, image: 'busybox', isolation: 'container', limits: LIMITS, labels: { team: 'red' }, homeTag: cluster.homeTag });
    const { nodeName, ...podSpec } = pod.spec;
    assert.equal(nodeName, 'fake-node');
    assert.deepEqual(podSpec, want.spec, 'the pod is not the hardened pod');
    assert.deepEqual(pod.metadata.labels, { ...want.metadata?.labels, 'agents.x-k8s.io/sandbox-name-hash': nameHash(podName(id)) });
    for (const [k, v] of Object.entries(want.metadata?.annotations ?? {})) assert.equal(pod.metadata.annotations?.[k], v);
    const ready = (sandboxOf(id)?.status as { conditions?: { type: string; status: string }[] } | undefined)?.conditions?.find((c) => c.type === 'Ready');
    assert.equal(ready?.status, 'True');
    assert.ok(cluster.fake.listPolicies().some((p) => p.metadata.name === podName(id)), 'no NetworkPolicy');
    assert.equal((await run(rt, h, 'id -u; echo hi > /workspace/f; cat /workspace/f')).stdout, '1000\nhi\n');
    assert.ok((await rt.list()).some((o) => o.id === id && o.alive));
    assert.equal((await rt.status(h)).alive, true);
    await rt.destroy(h);
    assert.equal(sandboxOf(id), undefined, 'the Sandbox stayed');
    assert.equal(podOf(id), undefined, 'the pod stayed');
    assert.ok(!cluster.fake.listPolicies().some((p) => p.metadata.name === podName(id)), 'the NetworkPolicy stayed');
    assert.equal((await rt.status(h)).alive, false);
  });

  test('a restarted daemon (a new driver instance) finds, uses and reaps a Sandbox sandbox from its id alone', async () => {
    const id = nextId();
    const first = cluster.newRuntime({ retryForMs: 4000 });
    const h = await first.create(spec(id));
    await first.close();
    const second = cluster.newRuntime({ retryForMs: 4000 });
    assert.equal((await run(second, JSON.parse(JSON.stringify(h)) as SandboxHandle, 'echo again')).stdout, 'again\n');
    assert.ok((await second.list()).some((o) => o.id === id && o.alive));
    await second.reap(id);
    assert.equal(sandboxOf(id), undefined);
    assert.equal(podOf(id), undefined);
    assert.ok(!(await second.list()).some((o) => o.id === id));
    await second.close();
  });

  test('create is idempotent across a retry: a Sandbox made by an attempt whose answer was lost is taken as its own', async () => {
    const id = nextId();
    cluster.fake.loseNextSandboxCreateAnswer();
    const h = await rt.create(spec(id));
    assert.equal((await run(rt, h, 'echo once')).stdout, 'once\n');
    assert.equal(cluster.fake.listSandboxes().filter((s) => s.metadata.name === podName(id)).length, 1);
    await rt.destroy(h);
  });

  test('agentSandbox: never makes plain pods although the CRDs are there, and the probe says so', async () => {
    const never = cluster.newRuntime({ retryForMs: 4000, agentSandbox: 'never' });
    assert.match((await never.probe()).details?.agentSandboxCrds ?? '', /; not used \(kubernetes\.agentSandbox: never\)/);
    const id = nextId();
    const h = await never.create(spec(id));
    assert.equal(sandboxOf(id), undefined, 'a Sandbox was made');
    assert.equal(podOf(id)?.metadata.ownerReferences, undefined);
    assert.equal((h.data as { sandbox?: string }).sandbox, undefined);
    assert.equal((await run(never, h, 'echo plain')).stdout, 'plain\n');
    await never.destroy(h);
    assert.equal(podOf(id), undefined);
    await never.close();
  });

  test('warm-pool members stay plain pods: the controller resets a pod\'s labels to its template\'s, which would undo their offer and their claim', async () => {
    const h = await rt.create(spec(nextId(), { pooled: true, poolKey: 'as1' }));
    assert.equal(sandboxOf(h.id), undefined, 'a pool member was made as a Sandbox');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(podOf(h.id)?.metadata.labels?.[LABEL_POOL], 'available', 'the offer was undone');
    const got = await rt.claimPooled('as1', 'replica-a');
    assert.equal(got?.id, h.id);
    // Let a controller, if the pod had one, react to the claim's patch (the fake's takes 50 ms).
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(podOf(h.id)?.metadata.labels?.[LABEL_POOL], 'claimed', 'the claim was undone');
    assert.equal(await rt.claimPooled('as1', 'replica-b'), undefined, 'the claimed pod could be claimed again');
    await rt.destroy(h);
  });

  test('the Sandbox is created with fieldValidation=Strict: a field the CRD does not know is refused, not pruned', async () => {
    const loaded = loadKubeConfig({ kubeconfig: cluster.kubeconfig });
    assert.ok('kc' in loaded);
    const sandboxes = new AgentSandboxes({ cluster: new Cluster({ kc: loaded.kc, retryForMs: 2000 }), namespace: FAKE_NAMESPACE });
    const id = nextId();
    const pod = buildPod({ id, namespace: FAKE_NAMESPACE, image: 'busybox', isolation: 'container', limits: LIMITS, labels: {}, homeTag: cluster.homeTag });
    (pod.spec!.containers[0]!.securityContext as Record<string, unknown>).noNewPrivs = true;
    await assert.rejects(sandboxes.create(id, labelValue(cluster.homeTag), pod, 'v1beta1'), (e: InternalError) => e instanceof InternalError && /noNewPrivs: unknown field/.test(e.message));
    assert.equal(sandboxOf(id), undefined);
  });

  test('auto falls back to plain pods when the daemon may not create sandboxes.agents.x-k8s.io; always then refuses, naming the RBAC rule', async () => {
    cluster.fake.deny(['sandboxes']);
    try {
      const auto = cluster.newRuntime({ retryForMs: 4000 });
      assert.match((await auto.probe()).details?.agentSandboxCrds ?? '', /not used: the daemon may not create sandboxes\.agents\.x-k8s\.io/);
      const h = await auto.create(spec(nextId()));
      assert.equal(sandboxOf(h.id), undefined);
      assert.ok(podOf(h.id));
      await auto.destroy(h);
      await auto.close();
      const always = cluster.newRuntime({ retryForMs: 4000, agentSandbox: 'always' });
      const p = await always.probe();
      assert.equal(p.ok, false);
      assert.match(p.reason ?? '', /may not create sandboxes\.agents\.x-k8s\.io/);
      const pods = cluster.fake.listPods().length;
      await assert.rejects(always.create(spec(nextId())), (e: RuntimeUnavailableError) => e instanceof RuntimeUnavailableError && /rbac\.yaml/.test(e.hint ?? ''));
      assert.equal(cluster.fake.listPods().length, pods);
      await always.close();
    } finally {
      cluster.fake.deny([]);
    }
  });
});

describe('kubernetes driver with agent-sandbox: without the CRDs, and with no controller running', () => {
  let bare: FakeCluster;
  let stalled: FakeCluster;

  before(async () => {
    bare = await startFakeCluster();
    // agents.x-k8s.io/v1alpha1 only (an older agent-sandbox), and no controller: Sandboxes get no pod.
    stalled = await startFakeCluster({ crds: true, sandboxVersions: ['v1alpha1'], controller: false });
  });

  after(async () => {
    for (const c of [bare, stalled]) {
      const left = { pods: c.fake.listPods().length, policies: c.fake.listPolicies().length, sandboxes: c.fake.listSandboxes().length };
      await c.close();
      assert.deepEqual(left, { pods: 0, policies: 0, sandboxes: 0 });
    }
  });

  test('agentSandbox: always without the CRDs: the probe fails and create refuses, both saying what to install; nothing is made', async () => {
    const always = bare.newRuntime({ retryForMs: 2000, agentSandbox: 'always' });
    const p = await always.probe();
    assert.equal(p.ok, false);
    assert.match(p.reason ?? '', /agent-sandbox CRDs \(agents\.x-k8s\.io v1beta1 or v1alpha1\) are not installed/);
    assert.match(p.hint ?? '', /install kubernetes-sigs\/agent-sandbox/);
    await assert.rejects(always.create({ id: 'sbx_always1', image: 'busybox', isolation: 'container', limits: LIMITS, labels: {} }), (e: RuntimeUnavailableError) => e instanceof RuntimeUnavailableError && e.code === 'runtime_unavailable' && /not installed/.test(e.message) && /agentSandbox/.test(e.hint ?? ''));
    assert.equal(bare.fake.listPods().length, 0);
    assert.equal(bare.fake.listPolicies().length, 0);
    await always.close();
    // auto on the same cluster: plain pods.
    const auto = bare.newRuntime({ retryForMs: 2000 });
    const h = await auto.create({ id: 'sbx_auto1', image: 'busybox', isolation: 'container', limits: LIMITS, labels: {} });
    assert.equal((h.data as { sandbox?: string }).sandbox, undefined);
    await auto.destroy(h);
    await auto.close();
  });

  test('no controller: create times out saying the controller made no pod, and leaves no Sandbox; a Sandbox without its pod is listed dead and reaped', async () => {
    const rt = stalled.newRuntime({ retryForMs: 2000, startTimeoutMs: 1500 });
    await assert.rejects(rt.create({ id: 'sbx_stalled1', image: 'busybox', isolation: 'container', limits: LIMITS, labels: {} }), (e: TimeoutError) => e instanceof TimeoutError && /controller made no pod for the Sandbox agentbox-sbx-stalled1/.test(e.message) && /describe sandbox/.test(e.hint ?? ''));
    assert.deepEqual(stalled.fake.listSandboxes(), []);
    assert.deepEqual(stalled.fake.listPolicies(), []);
    // A Sandbox left by a daemon that died mid-create (written as the driver writes it, v1alpha1 here).
    const loaded = loadKubeConfig({ kubeconfig: stalled.kubeconfig });
    assert.ok('kc' in loaded);
    const sandboxes = new AgentSandboxes({ cluster: new Cluster({ kc: loaded.kc, retryForMs: 2000 }), namespace: FAKE_NAMESPACE });
    const pod = buildPod({ id: 'sbx_stalled2', namespace: FAKE_NAMESPACE, image: 'busybox', isolation: 'container', limits: LIMITS, labels: {}, homeTag: stalled.homeTag });
    const made = await sandboxes.create('sbx_stalled2', labelValue(stalled.homeTag), pod, 'v1alpha1');
    assert.equal(made.apiVersion, 'agents.x-k8s.io/v1alpha1');
    assert.deepEqual(await rt.list(), [{ id: 'sbx_stalled2', alive: false }]);
    await rt.reap('sbx_stalled2');
    assert.deepEqual(stalled.fake.listSandboxes(), []);
    assert.deepEqual(await rt.list(), []);
    await rt.close();
  });
});
