/**
 * One warm pool for every daemon replica (core/shared-warm-pool.ts) on the kubernetes runtime, against
 * the FAKE API server (fake-apiserver.ts, backed by the local runtime): two replicas, each a real
 * SandboxManager with its own driver instance and its own connection to one store, on a shared SQLite
 * file and on PostgreSQL (a private cluster, test/helpers/postgres.ts).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { SandboxManager, type Caller } from '../../src/core/manager.js';
import type { Sandbox } from '../../src/contract/model.js';
import { silentLogger } from '../../src/observability/logger.js';
import { parsePolicyText } from '../../src/policy/load.js';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { ANNOTATION_CLAIMED_AT, CLAIMED_BY } from '../../src/runtime/kubernetes/claim.js';
import { Cluster, loadKubeConfig } from '../../src/runtime/kubernetes/cluster.js';
import { LABEL_ID, LABEL_POOL } from '../../src/runtime/kubernetes/pod-spec.js';
import type { KubernetesRuntime } from '../../src/runtime/kubernetes/kubernetes-runtime.js';
import { Store } from '../../src/store/store.js';
import { hostLeftovers } from '../helpers/host-leftovers.js';
import { postgresBin, startPostgres, type PostgresCluster } from '../helpers/postgres.js';
import { FAKE_NAMESPACE, startFakeCluster, type FakeCluster } from './fake-cluster.js';

const caller: Caller = { tenant: 'default', actor: 'test' };
const SIZE = 3;
const POLICY = `version: 1\ndefaults:\n  runtime: kubernetes\n  limits: { memoryMb: 64, pids: 64, diskMb: 16 }\npools:\n  - { image: busybox, size: ${SIZE} }\n`;

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`${what}: not in time`);
    await sleep(50);
  }
}

const found = postgresBin();
const pgCluster: PostgresCluster | undefined = 'skip' in found ? undefined : await startPostgres({ settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' } });
after(() => pgCluster?.stop());
const dir = mkdtempSync(join(tmpdir(), 'agentbox-shared-pool-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const backends: { name: string; open: () => Promise<() => Promise<Store>>; skip?: string }[] = [
  { name: 'SQLite', open: async () => { const file = join(dir, `${Math.random().toString(36).slice(2)}.db`); return async () => Store.open(file); } },
  { name: 'PostgreSQL', open: async () => { const url = await pgCluster!.createDatabase(); return async () => Store.connect(url); }, ...('skip' in found ? { skip: found.skip } : {}) },
];

for (const backend of backends) {
  describe(`kubernetes warm pool shared by two replicas on ${backend.name}`, { skip: backend.skip ?? false }, () => {
    let cluster: FakeCluster;
    const stores: Store[] = [];
    const runtimes: KubernetesRuntime[] = [];
    const managers = new Map<string, SandboxManager>();
    const policy = parsePolicyText(POLICY, 'shared-pool.yaml');

    /** The pods of the pool that are not claimed, by state. */
    const poolPods = (state?: string) => cluster.fake.listPods().filter((p) => { const s = p.metadata.labels?.[LABEL_POOL]; return state ? s === state : s === 'starting' || s === 'available'; });

    before(async () => {
      assert.equal(policy.kind, 'ok', JSON.stringify(policy));
      if (policy.kind !== 'ok') return;
      cluster = await startFakeCluster();
      const connect = await backend.open();
      for (const id of ['replica-a', 'replica-b']) {
        const store = await connect();
        stores.push(store);
        const rt = cluster.newRuntime();
        runtimes.push(rt);
        managers.set(id, new SandboxManager({ policy: policy.policy, store, runtimes: { kubernetes: rt }, logger: silentLogger(), reapIntervalMs: 200, maxConcurrentCreates: 8, createQueueLength: 16, replica: { id, url: `http://${id}.test:8080` } }));
      }
    });

    after(async () => {
      for (const m of managers.values()) await m.close().catch(() => undefined);
      for (const s of stores) s.close();
      for (const rt of runtimes) await rt.close();
      const ever = [...cluster.fake.localIdsEver];
      await cluster.close();
      assert.deepEqual(hostLeftovers(ever), []);
    });

    test(`kubernetes shared pool (${backend.name}): two replicas keep ${SIZE} members between them, not ${SIZE} each`, async () => {
      const a = managers.get('replica-a')!;
      const b = managers.get('replica-b')!;
      // Left in the cluster from before: what the leader's first sweep takes and what it leaves.
      const left = cluster.newRuntime();
      const spec = { image: 'busybox', isolation: 'container' as const, limits: { cpus: 1, memoryMb: 64, pids: 64, diskMb: 16 }, labels: {} };
      const oldPool = await left.create({ ...spec, id: 'sbx_oldpool1', pooled: true, poolKey: 'a-pool-no-policy-has' });
      const keyless = await left.create({ ...spec, id: 'sbx_keyless1', pooled: true });
      await left.create({ ...spec, id: 'sbx_claimednow', pooled: true, poolKey: 'k-now' });
      assert.ok(await left.claimPooled('k-now', 'replica-that-died'));
      await left.create({ ...spec, id: 'sbx_claimedlong', pooled: true, poolKey: 'k-long' });
      assert.ok(await left.claimPooled('k-long', 'replica-that-died'));
      const loaded = loadKubeConfig({ kubeconfig: cluster.kubeconfig });
      if (!('kc' in loaded)) throw new Error(loaded.reason);
      const api = new Cluster({ kc: loaded.kc });
      const longAgo = new Date(Date.now() - 5 * 60_000).toISOString();
      await api.core.patchNamespacedPod({ name: 'agentbox-sbx-claimedlong', namespace: FAKE_NAMESPACE, body: { metadata: { annotations: { [ANNOTATION_CLAIMED_AT]: longAgo } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
      await left.close();
      await a.start();
      await b.start();
      await Promise.all([a.poolsFull(), b.poolsFull()]);
      const names = () => cluster.fake.listPods().map((p) => p.metadata.labels?.[LABEL_ID]);
      await until('the leader swept what no row or pool knows', () => !names().some((id) => id === oldPool.id || id === keyless.id || id === 'sbx_claimedlong'));
      assert.ok(names().includes('sbx_claimednow'), 'a member claimed a moment ago (its row on the way) was swept');
      const claimedNow = cluster.fake.listPods().find((p) => p.metadata.labels?.[LABEL_ID] === 'sbx_claimednow')!;
      await api.core.deleteNamespacedPod({ name: claimedNow.metadata.name, namespace: FAKE_NAMESPACE, gracePeriodSeconds: 0 });
      await api.net.deleteNamespacedNetworkPolicy({ name: claimedNow.metadata.name, namespace: FAKE_NAMESPACE });
      await until('the claimed pod deleted', () => !names().includes('sbx_claimednow'));
      assert.equal(poolPods().length, SIZE);
      // Several ticks later (2 s each), still one pool's worth: the replica without the lease makes none.
      await sleep(4500);
      assert.equal(poolPods().length, SIZE, `pool pods: ${poolPods().map((p) => p.metadata.name).join(', ')}`);
      for (const m of [a, b]) assert.deepEqual(m.poolStatus().map((p) => [p.ready, p.size, p.shared]), [[SIZE, SIZE, true]]);
    });

    test(`kubernetes shared pool (${backend.name}): a burst of creates from both replicas never hands one member out twice, then the leader refills`, async () => {
      const members = new Set(poolPods('available').map((p) => p.metadata.labels![LABEL_ID]!));
      assert.equal(members.size, SIZE);
      const madeBefore = cluster.fake.localIdsEver.length;
      const burst = await Promise.all(
        Array.from({ length: 8 }, (_, i) => {
          const who = i % 2 === 0 ? 'replica-a' : 'replica-b';
          return managers.get(who)!.create({ labels: { n: String(i) } }, caller).then((sb) => ({ who, sb }));
        }),
      );
      const ids = burst.map((r) => r.sb.id);
      assert.equal(new Set(ids).size, ids.length, `a sandbox id handed out twice: ${ids.join(', ')}`);
      const warm = burst.filter((r) => members.has(r.sb.id));
      assert.equal(warm.length, SIZE, 'every ready member was claimed once (a claimer gives up only when all are taken)');
      for (const { who, sb } of warm) {
        const pod = cluster.fake.listPods().find((p) => p.metadata.labels?.[LABEL_ID] === sb.id);
        assert.equal(pod?.metadata.labels?.[LABEL_POOL], 'claimed');
        assert.equal(pod?.metadata.labels?.[CLAIMED_BY], who, `${sb.id} was claimed by another replica than the one whose create returned it`);
      }
      // Each replica serves each sandbox, whoever made it.
      const one: Sandbox = burst[0]!.sb;
      const r = await managers.get('replica-b')!.exec(one.id, { cmd: ['sh', '-c', 'echo from-b'] }, caller);
      assert.equal(r.stdout, 'from-b\n');
      // The leader makes up for the claims: SIZE ready members again, and no more.
      await until('the pool refilled', () => poolPods('available').length === SIZE);
      await sleep(2500);
      assert.equal(poolPods().length, SIZE);
      // Made since the burst: the cold creates, and one member per claimed one (not one per replica).
      const made = cluster.fake.localIdsEver.length - madeBefore;
      assert.equal(made, burst.length - SIZE + SIZE, `${made} sandboxes started for ${burst.length - SIZE} cold creates and ${SIZE} claims`);
      await Promise.all(burst.map(({ who, sb }) => managers.get(who === 'replica-a' ? 'replica-b' : 'replica-a')!.delete(sb.id, caller)));
    });

    test(`kubernetes shared pool (${backend.name}): the members outlive a replica that stops while another serves; the last one removes them`, async () => {
      const a = managers.get('replica-a')!;
      const b = managers.get('replica-b')!;
      await a.close();
      managers.delete('replica-a');
      assert.equal(poolPods().length, SIZE, 'a stopping replica removed the members the other one still uses');
      const sb = await b.create({}, caller);
      assert.equal((await b.exec(sb.id, { cmd: ['echo', 'still'] }, caller)).stdout, 'still\n');
      // B now holds the pools lease (A gave it back): it refills what was claimed.
      await until('the other replica took over the refills', () => poolPods('available').length === SIZE);
      await b.close();
      managers.delete('replica-b');
      assert.deepEqual(cluster.fake.listPods().map((p) => p.metadata.name), [], 'pods left after the last replica stopped');
    });
  });
}
