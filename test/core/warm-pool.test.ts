/** Warm pools on the real runtimes: claim, refill, a burst of 50, no double hand-out, cleanup. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { helperPath, VERSION } from '../../src/core/config.js';
import { SandboxManager, type Caller } from '../../src/core/manager.js';
import { silentLogger } from '../../src/observability/logger.js';
import { parsePolicyText } from '../../src/policy/load.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import type { Runtime } from '../../src/runtime/types.js';
import { Store } from '../../src/store/store.js';
import { testImages } from '../helpers/images.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const caller: Caller = { tenant: 'default', actor: 'test' };

async function dockerUp(): Promise<boolean> {
  const rt = new DockerRuntime({ disks: scratchDiskStore(), images: await testImages(), homeTag: 'probe', version: VERSION });
  return (await rt.probe()).ok;
}

for (const runtime of ['local', 'docker'] as const) {
  describe(`warm pool on ${runtime}`, async () => {
    const skip = runtime === 'docker' && !(await dockerUp()) ? 'dockerd is not reachable (scripts/start-dockerd.sh)' : false;

    test('claims a ready sandbox, refills, survives a burst of 50 without handing one out twice', { skip }, async () => {
      const images = await testImages();
      const dir = mkdtempSync(join(tmpdir(), 'agentbox-pool-'));
      const tag = `pooltest${process.pid}${runtime}`;
      const rt: Runtime =
        runtime === 'local'
          ? new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/${tag}`, resolveRootfs: (i) => images.resolve(i).rootfs, helper: helperPath() })
          : new DockerRuntime({ disks: scratchDiskStore(), images, homeTag: tag, version: VERSION });
      const policy = parsePolicyText(`version: 1\ndefaults:\n  runtime: ${runtime}\n  limits: { memoryMb: 128, pids: 64, diskMb: 16 }\npools:\n  - { image: busybox, size: 3 }\n`, 'pool.yaml');
      assert.equal(policy.kind, 'ok');
      if (policy.kind !== 'ok') return;
      const store = Store.open(join(dir, 'db'));
      const m = new SandboxManager({ policy: policy.policy, store, runtimes: { [runtime]: rt }, logger: silentLogger(), maxConcurrentCreates: 64, createQueueLength: 64 });
      try {
        await m.start();
        await m.poolsFull();
        const pooled = new Set((await rt.list()).map((o) => o.id));
        assert.equal(pooled.size, 3);
        const first = await m.create({ labels: { who: 'first' } }, caller);
        assert.ok(pooled.has(first.id), 'the first create did not come from the pool');
        assert.deepEqual(first.labels, { who: 'first' });
        assert.equal((await m.exec(first.id, { cmd: ['sh', '-c', 'ls /workspace | wc -l; echo $GREETING'], env: { GREETING: 'hi' } }, caller)).stdout, '0\nhi\n');
        await m.poolsFull();
        assert.equal(m.poolStatus()[0]?.ready, 3, 'the pool did not refill');
        // A request that differs from the pool's template is created cold.
        const cold = await m.create({ limits: { memoryMb: 64 } }, caller);
        assert.ok(!pooled.has(cold.id));
        const burst = await Promise.all(Array.from({ length: 50 }, () => m.create({}, caller)));
        const ids = burst.map((s) => s.id);
        assert.equal(new Set(ids).size, 50, 'a sandbox was handed out twice');
        const outs = await Promise.all(burst.slice(0, 10).map((s) => m.exec(s.id, { cmd: ['echo', s.id] }, caller)));
        outs.forEach((r, i) => assert.equal(r.stdout, `${burst[i]?.id}\n`));
        for (const s of [first, cold, ...burst]) await m.delete(s.id, caller);
      } finally {
        await m.close();
        store.close();
        rmSync(dir, { recursive: true, force: true });
      }
      await sleep(50);
      assert.deepEqual(await rt.list(), [], 'pool or sandbox left on the host after close');
    });
  });
}
