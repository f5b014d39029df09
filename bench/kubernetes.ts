/**
 * The kubernetes runtime's own cost, against the FAKE API server on loopback (test/kubernetes/
 * fake-apiserver.ts; pods backed by the local runtime): no real cluster runs here, so this measures
 * what agentbox adds on top of the API calls, side by side with those same calls made bare through
 * client-node in the same run. A real API server adds its own latency (etcd writes, the kubelet) to both.
 *   - warm claim through the manager (shared pool: list the pool's pods + one preconditioned patch,
 *     then the SQLite row) vs the bare list + patch; with the refill running (the fake's new pods
 *     compete for this machine's cores) and held back (what agentbox itself costs);
 *   - exec `true` through the manager vs a bare pods/exec of `true`;
 *   - cold create through the manager, for scale.
 * Usage: npm run bench:kubernetes
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { SandboxManager, type Caller } from '../src/core/manager.js';
import { silentLogger } from '../src/observability/logger.js';
import { parsePolicyText } from '../src/policy/load.js';
import { Cluster, loadKubeConfig } from '../src/runtime/kubernetes/cluster.js';
import { podExec } from '../src/runtime/kubernetes/pod-exec.js';
import { CONTAINER, podName } from '../src/runtime/kubernetes/pod-spec.js';
import { Store } from '../src/store/store.js';
import { FAKE_NAMESPACE, startFakeCluster } from '../test/kubernetes/fake-cluster.js';
import { pct } from './stats.js';

const N = Number(process.env.BENCH_N ?? 30);
const caller: Caller = { tenant: 'default', actor: 'bench' };

const fake = await startFakeCluster();
const loaded = loadKubeConfig({ kubeconfig: fake.kubeconfig });
if (!('kc' in loaded)) throw new Error(loaded.reason);
const api = new Cluster({ kc: loaded.kc });
const rt = fake.newRuntime();
const create = rt.create.bind(rt);
const dir = mkdtempSync(join(tmpdir(), 'agentbox-bench-k8s-'));
const r = parsePolicyText(`version: 1\ndefaults:\n  runtime: kubernetes\n  limits: { memoryMb: 64, pids: 64, diskMb: 16 }\npools:\n  - { image: busybox, size: ${N} }\n`, 'bench.yaml');
if (r.kind !== 'ok') throw new Error('bench policy invalid');
const store = Store.open(join(dir, 'db'));
const m = new SandboxManager({ policy: r.policy, store, runtimes: { kubernetes: rt }, logger: silentLogger(), maxConcurrentCreates: 8 });
await m.start();
await m.poolsFull();

const timed = async (n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> => {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn(i);
    out.push(performance.now() - t0);
  }
  return out;
};

const ids: string[] = [];
// The bare API floor of a claim, on pods that exist: the same label-selected list, one merge patch with a precondition.
const poolSelector = `agentbox.dev/pool=available`;
const rawClaim = await timed(N, async (i) => {
  const list = await api.core.listNamespacedPod({ namespace: FAKE_NAMESPACE, labelSelector: poolSelector });
  const pod = list.items[i % list.items.length]!;
  await api.core.patchNamespacedPod(
    { name: pod.metadata!.name!, namespace: FAKE_NAMESPACE, body: { metadata: { resourceVersion: pod.metadata!.resourceVersion, annotations: { 'bench/touch': String(i) } } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
});
const warm = await timed(N, async () => ids.push((await m.create({}, caller)).id));
await m.poolsFull();
// Again with the refill held back: the fake's pods run on this machine's cores, a real cluster's on its nodes.
let release!: () => void;
const held = new Promise<void>((resolve) => (release = resolve));
rt.create = async (spec) => {
  if (spec.pooled) await held;
  return create(spec);
};
const warmHeld = await timed(N, async () => ids.push((await m.create({}, caller)).id));
release();
const cold = await timed(Math.min(N, 10), async () => ids.push((await m.create({ limits: { memoryMb: 32 } }, caller)).id));
const target = ids[0]!;
const rawExec = await timed(N, async () => {
  const ex = await podExec(loaded.kc, { namespace: FAKE_NAMESPACE, pod: podName(target), container: CONTAINER, command: ['true'] });
  await Promise.all([text(ex.stdout), text(ex.stderr), ex.exitCode]);
});
const exec = await timed(N, async () => m.exec(target, { cmd: ['true'] }, caller));

for (const id of ids) await m.delete(id, caller);
await m.close();
store.close();
await rt.close();
await fake.close();
rmSync(dir, { recursive: true, force: true });

const row = (name: string, v: number[], base?: number[]): string =>
  `| ${name} | ${pct(v, 50).toFixed(2)} | ${pct(v, 99).toFixed(2)} | ${base ? `${(pct(v, 50) / pct(base, 50)).toFixed(2)}×` : ''} |`;
console.log(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ${new Date().toISOString().slice(0, 10)}; n=${N}; FAKE API server on loopback`);
console.log('\n| kubernetes (ms) | p50 | p99 | vs bare API p50 |\n|---|---|---|---|');
console.log(row('bare list + preconditioned patch (client-node)', rawClaim));
console.log(row('warm claim through the manager, refill held back', warmHeld, rawClaim));
console.log(row('warm claim through the manager, refill running (its pods on the same 2 cores)', warm, rawClaim));
console.log(row('bare pods/exec of `true` (client-node WebSocket)', rawExec));
console.log(row('exec `true` through the manager', exec, rawExec));
console.log(row('cold create through the manager (pod + NetworkPolicy + helper staged)', cold));
