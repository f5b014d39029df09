/**
 * The kubernetes driver's own behaviour: its manifests (checked field by field and against the
 * Kubernetes OpenAPI schemas of kubernetes-models), and, against the FAKE API server
 * (fake-apiserver.ts, backed by the local runtime), watch reconnection, pool claims racing across
 * two driver instances, and an API server that goes away and comes back.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Pod } from 'kubernetes-models/v1/Pod';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { BadRequestError, RuntimeUnavailableError } from '../../src/contract/errors.js';
import type { Isolation, Limits } from '../../src/contract/model.js';
import { claimFirst } from '../../src/runtime/kubernetes/claim.js';
import { Cluster, loadKubeConfig } from '../../src/runtime/kubernetes/cluster.js';
import type { KubernetesRuntime } from '../../src/runtime/kubernetes/kubernetes-runtime.js';
import { exitCodeOf } from '../../src/runtime/kubernetes/pod-exec.js';
import { buildNetworkPolicy, buildPod, LABEL_ID, LABEL_POOL, labelValue, podName, userLabels } from '../../src/runtime/kubernetes/pod-spec.js';
import type { SandboxHandle } from '../../src/runtime/types.js';
import { collect, execOpts, run } from '../helpers/collect.js';
import { hostLeftovers } from '../helpers/host-leftovers.js';
import { egressCredential, proxyCredentials, sandboxProxyUrl } from '../../src/egress/cluster-proxy.js';
import { FAKE_NAMESPACE, startFakeCluster, type FakeCluster } from './fake-cluster.js';

const LIMITS: Limits = { cpus: 0.5, memoryMb: 128, pids: 64, diskMb: 96 };

describe('kubernetes manifests (pod-spec.ts)', () => {
  const specFor = (isolation: Isolation, pooled = false) =>
    buildPod({ id: 'sbx_AbC123', namespace: 'ns1', image: 'docker.io/library/busybox:1.36', isolation, limits: LIMITS, labels: { team: 'red team!', 'bad key/..': 'x', '': 'empty' }, homeTag: 'home1', ...(pooled ? { pooled: true } : {}) });

  for (const [isolation, runtimeClass] of [['container', undefined], ['gvisor', 'gvisor'], ['vm', 'kata']] as const) {
    test(`kubernetes pod for isolation ${isolation}: hardened field by field, RuntimeClass ${runtimeClass ?? 'none'}, valid against the Pod schema`, () => {
      const pod = specFor(isolation);
      new Pod(pod as ConstructorParameters<typeof Pod>[0]).validate();
      const spec = pod.spec!;
      assert.equal(spec.runtimeClassName, runtimeClass);
      assert.equal(spec.restartPolicy, 'Never');
      assert.equal(spec.automountServiceAccountToken, false);
      assert.equal(spec.enableServiceLinks, false);
      assert.equal(spec.hostNetwork, false);
      assert.equal(spec.hostPID, false);
      assert.equal(spec.hostIPC, false);
      assert.deepEqual(spec.securityContext, { runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000, seccompProfile: { type: 'RuntimeDefault' } });
      assert.equal(spec.containers.length, 1);
      const c = spec.containers[0]!;
      assert.equal(c.image, 'docker.io/library/busybox:1.36');
      assert.deepEqual(c.securityContext, {
        runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, privileged: false, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' },
      });
      const resources = { cpu: '500m', memory: '128Mi', 'ephemeral-storage': '112Mi' };
      assert.deepEqual(c.resources, { requests: resources, limits: resources });
      assert.deepEqual(c.volumeMounts, [
        { name: 'disk', mountPath: '/workspace', subPath: 'workspace' },
        { name: 'disk', mountPath: '/tmp', subPath: 'tmp' },
      ]);
      assert.deepEqual(spec.volumes, [{ name: 'disk', emptyDir: { sizeLimit: '96Mi' } }]);
      assert.ok(c.command && c.command.length > 0, 'a long-running init');
      assert.equal(pod.metadata?.name, 'agentbox-sbx-abc123');
      assert.equal(pod.metadata?.labels?.['app.kubernetes.io/name'], 'agentbox-sandbox');
      assert.equal(pod.metadata?.labels?.[LABEL_ID], 'sbx_AbC123');
      assert.equal(pod.metadata?.labels?.['agentbox.dev/home'], 'home1');
      assert.equal(pod.metadata?.labels?.[LABEL_POOL], undefined);
      assert.equal(pod.metadata?.labels?.['label.agentbox.dev/team'], 'red_team');
      assert.equal(pod.metadata?.annotations?.['agentbox.dev/pids-limit'], '64');
    });
  }

  test('kubernetes pod of a warm pool starts labelled starting (claimable only once its helper is in), with its pool; request labels are sanitised to label syntax', () => {
    const pod = specFor('container', true);
    new Pod(pod as ConstructorParameters<typeof Pod>[0]).validate();
    assert.equal(pod.metadata?.labels?.[LABEL_POOL], 'starting');
    const keyed = buildPod({ id: 'sbx_1', namespace: 'ns1', image: 'busybox', isolation: 'container', limits: LIMITS, labels: {}, homeTag: 'h', pooled: true, poolKey: 'abc123' });
    assert.equal(keyed.metadata?.labels?.['agentbox.dev/pool-key'], 'abc123');
    assert.deepEqual(userLabels({ 'a b': 'x y', '-x-': '-', ok: 'v'.repeat(80), '***': 'gone' }), { 'label.agentbox.dev/a_b': 'x_y', 'label.agentbox.dev/x': '', 'label.agentbox.dev/ok': 'v'.repeat(63) });
    assert.equal(labelValue('sbx_1'), 'sbx_1');
    assert.equal(podName('sbx_' + 'x'.repeat(80)).length, 63);
  });

  test('kubernetes NetworkPolicy without egress denies all ingress and egress of that one pod', () => {
    const np = buildNetworkPolicy({ id: 'sbx_1', namespace: 'ns1', homeTag: 'home1' });
    new NetworkPolicy(np as ConstructorParameters<typeof NetworkPolicy>[0]).validate();
    assert.equal(np.metadata?.name, 'agentbox-sbx-1');
    assert.deepEqual(np.spec?.podSelector, { matchLabels: { [LABEL_ID]: 'sbx_1' } });
    assert.deepEqual(np.spec?.policyTypes, ['Ingress', 'Egress']);
    assert.deepEqual(np.spec?.ingress, []);
    assert.deepEqual(np.spec?.egress, []);
  });

  test('kubernetes NetworkPolicy with egress allows only the egress proxy pods', () => {
    const np = buildNetworkPolicy({ id: 'sbx_1', namespace: 'ns1', homeTag: 'home1', egressProxy: { podLabels: { app: 'agentbox-egress' }, namespaceLabels: { 'kubernetes.io/metadata.name': 'agentbox-system' }, port: 3128 } });
    new NetworkPolicy(np as ConstructorParameters<typeof NetworkPolicy>[0]).validate();
    assert.deepEqual(np.spec?.ingress, []);
    assert.deepEqual(np.spec?.egress, [
      { to: [{ podSelector: { matchLabels: { app: 'agentbox-egress' } }, namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'agentbox-system' } } }], ports: [{ protocol: 'TCP', port: 3128 }] },
    ]);
  });

  test('kubernetes exec status: exit codes from the Status of channel 3', () => {
    assert.equal(exitCodeOf({ status: 'Success' }), 0);
    assert.equal(exitCodeOf({ status: 'Failure', reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: '42' }] } }), 42);
    assert.equal(exitCodeOf({ status: 'Failure', reason: 'InternalError' }), undefined);
  });
});

describe('kubernetes driver against the fake API server', () => {
  let cluster: FakeCluster;
  let rt: KubernetesRuntime;
  const made: SandboxHandle[] = [];
  let n = 0;
  const create = async (r: KubernetesRuntime, extra: { pooled?: boolean; poolKey?: string } = {}): Promise<SandboxHandle> => {
    const h = await r.create({ id: `sbx_kd${process.pid}x${++n}`, image: 'busybox', isolation: 'container', limits: LIMITS, labels: {}, ...extra });
    made.push(h);
    return h;
  };

  before(async () => {
    // Without the agent-sandbox CRDs: plain pods (agent-sandbox.test.ts covers the Sandbox path).
    cluster = await startFakeCluster();
    rt = cluster.newRuntime({ retryForMs: 4000 });
  });

  after(async () => {
    for (const h of made) await rt.destroy(h);
    const left = await rt.list();
    await rt.close();
    const pods = cluster.fake.listPods().map((p) => p.metadata.name);
    const policies = cluster.fake.listPolicies().map((p) => p.metadata.name);
    const locals = cluster.fake.localSandboxIds();
    const ever = [...cluster.fake.localIdsEver];
    await cluster.close();
    assert.deepEqual(left, [], 'the driver still lists sandboxes');
    assert.deepEqual(pods, [], 'pods left in the fake API server');
    assert.deepEqual(policies, [], 'network policies left in the fake API server');
    assert.deepEqual(locals, [], 'local sandboxes of the fake left behind');
    assert.deepEqual(hostLeftovers(ever), [], 'processes, cgroups or mounts of the fake\'s local sandboxes left on the host');
  });

  test('kubernetes probe reports the API server, the namespace and the agent-sandbox CRDs (absent here)', async () => {
    const p = await rt.probe();
    assert.equal(p.ok, true, p.reason);
    assert.equal(p.details?.agentSandboxCrds, 'absent');
    assert.equal(p.details?.namespace, FAKE_NAMESPACE);
    const missing = cluster.newRuntime({ namespace: 'no-such-namespace' });
    const q = await missing.probe();
    assert.equal(q.ok, false);
    assert.match(q.reason ?? '', /namespace no-such-namespace does not exist/);
    assert.match(q.hint ?? '', /kubectl create namespace no-such-namespace/);
    await missing.close();
    const none = cluster.newRuntime({ kubeconfig: '/nonexistent/kubeconfig' });
    const r = await none.probe();
    assert.equal(r.ok, false);
    assert.match(r.reason ?? '', /does not exist/);
    await none.close();
  });

  test('kubernetes refuses what it cannot give (egress, volumes, a disk copy, a writable root, isolation namespaces) before it makes anything', async () => {
    const base = { image: 'busybox', isolation: 'container' as const, limits: LIMITS, labels: {} };
    const pods = cluster.fake.listPods().length;
    const policies = cluster.fake.listPolicies().length;
    // Egress without the cluster's egress proxy configured: refused, saying what to set up.
    await assert.rejects(rt.create({ ...base, id: 'sbx_refused1', egress: true }), (e: BadRequestError) => e instanceof BadRequestError && /egress proxy/.test(e.message) && /kubernetes\.egressProxy/.test(e.hint ?? ''));
    await assert.rejects(rt.create({ ...base, id: 'sbx_refused2', volumes: [{ source: '/tmp', target: '/data', readOnly: false }] }), BadRequestError);
    await assert.rejects(rt.create({ ...base, id: 'sbx_refused3', diskFrom: '/tmp/x' }), BadRequestError);
    await assert.rejects(rt.create({ ...base, id: 'sbx_refused4', writableRoot: true }), BadRequestError);
    await assert.rejects(rt.create({ ...base, id: 'sbx_refused5', isolation: 'namespaces' }), BadRequestError);
    assert.equal(cluster.fake.listPods().length, pods);
    assert.equal(cluster.fake.listPolicies().length, policies);
  });

  test('kubernetes sandbox with egress: its pod knows the proxy by name (no DNS), its NetworkPolicy opens the proxy pods alone, its commands get a proxy URL whose credential the cluster proxy accepts', async () => {
    const secret = 'kubernetes-egress-test-secret-0123456789';
    const proxied = cluster.newRuntime({ retryForMs: 4000, egressProxy: { url: 'http://127.0.0.1:3128', namespace: 'agentbox', podLabels: { 'app.kubernetes.io/name': 'agentbox-egress' } }, env: { ...process.env, AGENTBOX_EGRESS_SECRET: secret } });
    const id = `sbx_kdeg${process.pid}`;
    const h = await proxied.create({ id, image: 'busybox', isolation: 'container', limits: LIMITS, labels: {}, egress: true });
    try {
      const pod = cluster.fake.listPods().find((p) => p.metadata.labels?.[LABEL_ID] === labelValue(id));
      assert.deepEqual((pod as unknown as { spec: { hostAliases?: unknown } }).spec.hostAliases, [{ ip: '127.0.0.1', hostnames: ['127.0.0.1'] }]);
      const np = cluster.fake.listPolicies().find((p) => p.metadata.name === pod?.metadata.name) as unknown as { spec: { egress: unknown } };
      assert.deepEqual(np.spec.egress, [{ to: [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'agentbox-egress' } }, namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'agentbox' } } }], ports: [{ protocol: 'TCP', port: 3128 }] }]);
      const env = (await run(proxied, h, 'echo "$HTTP_PROXY"; echo "$https_proxy"', { env: { HTTP_PROXY: 'http://127.0.0.1:3128', https_proxy: 'http://127.0.0.1:3128' } })).stdout.trim().split('\n');
      const want = sandboxProxyUrl('http://127.0.0.1:3128', secret, id);
      assert.deepEqual(env, [want, want], 'the host relay\'s proxy URL was not replaced by the cluster proxy\'s');
      const url = new URL(want);
      assert.deepEqual(proxyCredentials(`GET http://x/ HTTP/1.1\r\nProxy-Authorization: Basic ${Buffer.from(`${url.username}:${decodeURIComponent(url.password)}`).toString('base64')}`), { sandboxId: id, credential: egressCredential(secret, id) });
      // A sandbox without egress on the same driver keeps no proxy in its environment.
      const plain = await create(proxied);
      assert.equal((await run(proxied, plain, 'echo "[$HTTP_PROXY]"')).stdout, '[]\n');
    } finally {
      await proxied.destroy(h);
      await proxied.close();
    }
  });

  test('kubernetes sandbox pod and its NetworkPolicy exist while it lives, and go with it', async () => {
    const h = await create(rt);
    const pod = cluster.fake.listPods().find((p) => p.metadata.labels?.[LABEL_ID] === h.id);
    assert.ok(pod, 'no pod');
    assert.equal((pod.status as { phase: string }).phase, 'Running');
    assert.ok(cluster.fake.listPolicies().some((p) => p.metadata.name === pod.metadata.name), 'no network policy');
    await rt.destroy(h);
    assert.ok(!cluster.fake.listPods().some((p) => p.metadata.labels?.[LABEL_ID] === h.id));
    assert.ok(!cluster.fake.listPolicies().some((p) => p.metadata.name === pod.metadata.name), 'the network policy stayed');
  });

  test('kubernetes create is idempotent across a retry: a pod made by an attempt whose answer was lost is taken as its own (409 → ours)', async () => {
    cluster.fake.loseNextPodCreateAnswer();
    const h = await create(rt);
    assert.equal((await run(rt, h, 'echo made-once')).stdout, 'made-once\n');
    assert.equal(cluster.fake.listPods().filter((p) => p.metadata.labels?.[LABEL_ID] === h.id).length, 1);
    await rt.destroy(h);
  });

  test('kubernetes sandboxes outlive the driver: a new instance (a restarted daemon) uses the stored handle, lists and destroys it', async () => {
    const first = cluster.newRuntime();
    const h = await first.create({ id: `sbx_kd${process.pid}x${++n}`, image: 'busybox', isolation: 'container', limits: LIMITS, labels: {} });
    await run(first, h, 'echo kept > /workspace/f');
    await first.close();
    const stored = JSON.parse(JSON.stringify(h)) as SandboxHandle;
    const second = cluster.newRuntime();
    assert.equal((await second.status(stored)).alive, true);
    assert.equal((await run(second, stored, 'cat /workspace/f')).stdout, 'kept\n');
    assert.ok((await second.list()).some((o) => o.id === h.id && o.alive));
    await second.destroy(stored);
    assert.equal((await second.status(stored)).alive, false);
    await second.close();
  });

  test('kubernetes pod watch reconnects from its last resourceVersion after the API server drops it, and relists after 410 Gone', async () => {
    const h = await create(rt);
    const stats = rt.watchStats();
    assert.ok(stats, 'the driver has no watch');
    const connects = stats.connects;
    const lastRv = stats.resourceVersion;
    cluster.fake.dropWatches();
    // A new pod starts through the watch again (and the poll, but the watch must be back).
    const h2 = await create(rt);
    await waitUntil(() => stats.connects > connects, 'the watch did not reconnect');
    const resumedFrom = cluster.fake.watchRequests.at(-1) ?? '';
    assert.ok(resumedFrom !== '' && Number(resumedFrom) >= Number(lastRv), `reconnected from ${resumedFrom}, last seen ${lastRv}`);
    // History compacted: the version it resumes from is gone, so it must list again.
    const relists = stats.relists;
    cluster.fake.compactHistory();
    cluster.fake.dropWatches();
    await waitUntil(() => stats.relists > relists, 'no relist after 410 Gone');
    assert.equal((await run(rt, h2, 'echo ok')).stdout, 'ok\n');
    await rt.destroy(h);
    await rt.destroy(h2);
  });

  test('kubernetes warm-pool claim: two driver instances race for one pooled pod, exactly one wins (409 for the other)', async () => {
    const pooled = await create(rt, { pooled: true, poolKey: 'k1' });
    const other = cluster.newRuntime();
    const list = cluster.fake.listPods().filter((p) => p.metadata.labels?.[LABEL_ID] === pooled.id);
    assert.equal(list.length, 1);
    // Both replicas read the pod at the same version, then both claim it.
    const clusterA = new Cluster({ kc: kcOf(cluster) });
    const clusterB = new Cluster({ kc: kcOf(cluster) });
    const candidates = list as unknown as Parameters<typeof claimFirst>[2];
    const conflictsBefore = cluster.fake.conflicts;
    const [a, b] = await Promise.all([claimFirst(clusterA, FAKE_NAMESPACE, candidates, 'replica-a'), claimFirst(clusterB, FAKE_NAMESPACE, candidates, 'replica-b')]);
    const winners = [a, b].filter((x) => x !== undefined);
    assert.equal(winners.length, 1, 'exactly one replica must win');
    assert.equal(cluster.fake.conflicts - conflictsBefore, 1, 'the loser got a 409 Conflict');
    const pod = cluster.fake.listPods().find((p) => p.metadata.labels?.[LABEL_ID] === pooled.id);
    assert.equal(pod?.metadata.labels?.[LABEL_POOL], 'claimed');
    assert.equal(pod?.metadata.labels?.['agentbox.dev/claimed-by'], a ? 'replica-a' : 'replica-b');
    // Nothing is left to claim, for either.
    assert.equal(await rt.claimPooled('k1', 'replica-a'), undefined);
    assert.equal(await other.claimPooled('k1', 'replica-b'), undefined);
    await other.close();
    await rt.destroy(pooled);
  });

  test('kubernetes warm-pool claim: a 409 on one pod makes the driver take the next', async () => {
    const p1 = await create(rt, { pooled: true, poolKey: 'k2' });
    const p2 = await create(rt, { pooled: true, poolKey: 'k2' });
    const other = await create(rt, { pooled: true, poolKey: 'k3' });
    assert.deepEqual(await rt.countPooled('k2'), { ready: 2, total: 2 });
    cluster.fake.injectPatchConflicts(1);
    const got = await rt.claimPooled('k2', 'r');
    assert.ok(got, 'nothing claimed');
    assert.ok([p1.id, p2.id].includes(got.id));
    const claimedAt = (await rt.list()).find((o) => o.id === got.id)?.claimedAt;
    assert.ok(claimedAt && Date.now() - Date.parse(claimedAt) < 60_000, `a claimed member says when: ${claimedAt}`);
    const again = await rt.claimPooled('k2', 'r');
    assert.ok(again && again.id !== got.id, 'the second claim did not get the other pod');
    assert.equal(await rt.claimPooled('k2', 'r'), undefined, 'a member of another pool was handed out');
    assert.deepEqual(await rt.countPooled('k2'), { ready: 0, total: 0 });
    assert.deepEqual(await rt.countPooled('k3'), { ready: 1, total: 1 });
    await rt.destroy(other);
    assert.equal((await run(rt, got, 'echo claimed')).stdout, 'claimed\n');
    await rt.destroy(p1);
    await rt.destroy(p2);
  });

  test('kubernetes status comes from the pod watch while it is current (no GET per check: the reaper asks about every sandbox each second); a pod deleted behind its back is seen gone', async () => {
    const h = await create(rt);
    assert.equal((await rt.status(h)).alive, true);
    const before = cluster.fake.podReads;
    for (let i = 0; i < 20; i++) assert.equal((await rt.status(h)).alive, true);
    assert.ok(cluster.fake.podReads - before <= 1, `${cluster.fake.podReads - before} pod reads for 20 status checks`);
    const api = new Cluster({ kc: kcOf(cluster) });
    await api.core.deleteNamespacedPod({ name: (h.data as { pod: string }).pod, namespace: FAKE_NAMESPACE, gracePeriodSeconds: 0 });
    await waitUntil(async () => !(await rt.status(h)).alive, 'a deleted pod still alive');
    await rt.destroy(h);
  });

  test('kubernetes exec environment: every byte arrives, and none of it is in the exec request (which audit logs record)', async () => {
    const h = await create(rt);
    const env = { A: 'two\nlines', B: `it's "q" \\ $HOME \`x\` %s %b \\0101`, C: 'ünïcödé ✓', D: 'trailing\n\n', E: '', SECRET_TOKEN: 'sk-do-not-log-me' };
    const before = cluster.fake.execCommands.length;
    const r = await collect(rt.exec(h, ['sh', '-c', 'printf "%s|" "$A" "$B" "$C" "$D" "$E" "$SECRET_TOKEN"; cat'], execOpts({ env, stdin: Buffer.from('then-stdin') })));
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, `${Object.values(env).join('|')}|then-stdin`);
    const urls = cluster.fake.execCommands.slice(before).flat().join(' ');
    assert.doesNotMatch(urls, /sk-do-not-log-me/);
    await rt.destroy(h);
  });

  test('kubernetes API server outage: an exec retries until it comes back; past the retry window it fails runtime_unavailable; the sandbox lives on', async () => {
    const h = await create(rt);
    await cluster.fake.stop();
    const t0 = Date.now();
    const pending = collect(rt.exec(h, ['sh', '-c', 'echo after-outage'], execOpts()));
    setTimeout(() => void cluster.fake.start(), 1500);
    const r = await pending;
    assert.equal(r.stdout, 'after-outage\n');
    assert.ok(Date.now() - t0 >= 1400, 'the exec did not wait for the API server');

    // Longer than the driver's retry window (4 s here).
    await cluster.fake.stop();
    const failed = await collect(rt.exec(h, ['true'], execOpts())).then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(failed instanceof RuntimeUnavailableError, `got ${String(failed)}`);
    assert.equal(failed.code, 'runtime_unavailable');
    assert.match(failed.hint ?? '', /kubectl/);
    // Its status: from the watch's store a few seconds after the watch dropped, then from the API server, which is away.
    await waitUntil(() => rt.status(h).then(() => false, (e: unknown) => e instanceof RuntimeUnavailableError), 'status during a long outage did not fail runtime_unavailable', 20_000);
    await cluster.fake.start();
    assert.equal((await rt.status(h)).alive, true);
    assert.equal((await run(rt, h, 'echo still-here')).stdout, 'still-here\n');
    assert.ok((await rt.list()).some((o) => o.id === h.id && o.alive));
    await rt.destroy(h);
  });
});

function kcOf(cluster: FakeCluster) {
  const loaded = loadKubeConfig({ kubeconfig: cluster.kubeconfig });
  if (!('kc' in loaded)) throw new Error(loaded.reason);
  return loaded.kc;
}

async function waitUntil(cond: () => boolean | Promise<boolean>, message: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(message);
    await new Promise((r) => setTimeout(r, 20));
  }
}
