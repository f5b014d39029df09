/**
 * The kubernetes runtime under the real SandboxManager (policy, warm pool, store), against the FAKE
 * API server (fake-apiserver.ts): what the daemon would do with a cluster, end to end below the HTTP API.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { SandboxManager, type Caller } from '../../src/core/manager.js';
import { silentLogger } from '../../src/observability/logger.js';
import { parsePolicyText } from '../../src/policy/load.js';
import { Store } from '../../src/store/store.js';
import { hostLeftovers } from '../helpers/host-leftovers.js';
import { startFakeCluster } from './fake-cluster.js';

const caller: Caller = { tenant: 'default', actor: 'test' };

test('kubernetes through the manager: a warm pool of pods, a claim, a cold create, execs, delete, nothing left', async () => {
  const cluster = await startFakeCluster();
  const rt = cluster.newRuntime();
  const dir = mkdtempSync(join(tmpdir(), 'agentbox-k8s-manager-'));
  const policy = parsePolicyText('version: 1\ndefaults:\n  runtime: kubernetes\n  limits: { memoryMb: 128, pids: 64, diskMb: 32 }\npools:\n  - { image: busybox, size: 2 }\n', 'k8s.yaml');
  assert.equal(policy.kind, 'ok', JSON.stringify(policy));
  if (policy.kind !== 'ok') return;
  const store = Store.open(join(dir, 'db'));
  const m = new SandboxManager({ policy: policy.policy, store, runtimes: { kubernetes: rt }, logger: silentLogger(), maxConcurrentCreates: 8, createQueueLength: 8 });
  try {
    await m.start();
    await m.poolsFull();
    const pooled = new Set((await rt.list()).filter((o) => o.pooled).map((o) => o.id));
    assert.equal(pooled.size, 2);
    const warm = await m.create({ labels: { who: 'warm' } }, caller);
    assert.ok(pooled.has(warm.id), 'the create did not come from the pool');
    assert.equal(warm.runtime, 'kubernetes');
    assert.equal(warm.isolation, 'container');
    const r = await m.exec(warm.id, { cmd: ['sh', '-c', 'echo $GREETING; id -u; cat'], env: { GREETING: 'hi' }, stdin: 'in' }, caller);
    assert.equal(r.stdout, 'hi\n1000\nin');
    const cold = await m.create({ limits: { memoryMb: 64 } }, caller);
    assert.ok(!pooled.has(cold.id));
    const t = await m.exec(cold.id, { cmd: ['sh', '-c', 'sleep 30'], timeoutMs: 500 }, caller);
    assert.equal(t.timedOut, true);
    assert.equal(t.exitCode, 124);
    await m.delete(warm.id, caller);
    await m.delete(cold.id, caller);
  } finally {
    await m.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const left = await rt.list();
  await rt.close();
  const ever = [...cluster.fake.localIdsEver];
  const pods = cluster.fake.listPods().map((p) => p.metadata.name);
  await cluster.close();
  assert.deepEqual(left, [], 'pods left after the manager closed');
  assert.deepEqual(pods, []);
  assert.deepEqual(hostLeftovers(ever), []);
});
