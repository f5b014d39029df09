/**
 * A gVisor sandbox under concurrent execs: the sentry's own host tasks (ptrace stubs and their
 * threads) grow with concurrency; if they hit the pids limit the sentry panics and the sandbox
 * dies (it did with 256 tasks of headroom, and with 1024 for 48 parallel processes). Many rounds of
 * 20 execs at once must all succeed, and so must a sandbox running nearly its process limit at once.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { VERSION } from '../../src/core/config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { run } from '../helpers/collect.js';
import { testImages } from '../helpers/images.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const homeTag = `test-gvisor-load-${process.pid}`;
// As the daemon runs it: through the sandbox's exec agent.
const agentDir = mkdtempSync(join(tmpdir(), 'ab-agents-'));
const rt = new DockerRuntime({ disks: scratchDiskStore(), images: await testImages(), homeTag, version: VERSION, agentDir });
const probe = await rt.probe();
const skip = !probe.ok ? `${probe.reason}` : !(probe.details?.runtimes ?? '').split(' ').includes('runsc') ? 'runsc is not registered with dockerd' : false;

after(async () => {
  await rt.close();
  rmSync(agentDir, { recursive: true, force: true });
});

test('a gVisor sandbox survives rounds of 20 concurrent execs', { skip }, async () => {
  const h = await rt.create({ id: `sbx_gvload${process.pid}`, image: 'busybox', isolation: 'gvisor', limits: { cpus: 1, memoryMb: 256, pids: 128, diskMb: 16 }, labels: {} });
  try {
    for (let round = 0; round < 4; round++) {
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => run(rt, h, `sleep 0.3; echo ${i}`)),
      );
      assert.deepEqual(results.map((r) => r.stdout.trim()), Array.from({ length: 20 }, (_, i) => String(i)), `round ${round}`);
      assert.equal((await rt.status(h)).alive, true, `the sandbox died in round ${round}`);
    }
  } finally {
    await rt.destroy(h);
  }
});

test('a gVisor sandbox survives running nearly its process limit in parallel', { skip }, async () => {
  const pids = 64;
  const h = await rt.create({ id: `sbx_gvpar${process.pid}`, image: 'busybox', isolation: 'gvisor', limits: { cpus: 1, memoryMb: 256, pids, diskMb: 16 }, labels: {} });
  try {
    // 56 sleeps at a time (with the shell and the agent, 58 of 64), in rounds, so stubs pile up.
    const script = 'r=0; while [ $r -lt 8 ]; do j=0; while [ $j -lt 56 ]; do sleep 0.1 & j=$((j+1)); done; wait; r=$((r+1)); done; echo done';
    const r = await run(rt, h, script, { timeoutMs: 120_000 });
    assert.equal(r.stdout, 'done\n', JSON.stringify(r));
    assert.equal((await rt.status(h)).alive, true);
  } finally {
    await rt.destroy(h);
  }
});
