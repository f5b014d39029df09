/**
 * A gVisor sandbox under concurrent execs: the sentry's own host tasks (ptrace stubs and their
 * threads) grow with concurrency; if they hit the pids limit the sentry panics and the sandbox
 * dies (it did with 256 tasks of headroom). Many rounds of 20 execs at once must all succeed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VERSION } from '../../src/core/config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { collect } from '../helpers/collect.js';
import { testImages } from '../helpers/images.js';

const homeTag = `test-gvisor-load-${process.pid}`;
const rt = new DockerRuntime({ images: await testImages(), homeTag, version: VERSION });
const probe = await rt.probe();
const skip = !probe.ok ? `${probe.reason}` : !(probe.details?.runtimes ?? '').split(' ').includes('runsc') ? 'runsc is not registered with dockerd' : false;

test('a gVisor sandbox survives rounds of 20 concurrent execs', { skip }, async () => {
  const h = await rt.create({ id: `sbx_gvload${process.pid}`, image: 'busybox', isolation: 'gvisor', limits: { cpus: 1, memoryMb: 256, pids: 128, diskMb: 16 }, labels: {} });
  try {
    for (let round = 0; round < 4; round++) {
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => collect(rt.exec(h, ['sh', '-c', `sleep 0.3; echo ${i}`], { env: {}, timeoutMs: 30_000, outputLimitBytes: 1 << 20, execId: `exe_l${round}_${i}` }))),
      );
      assert.deepEqual(results.map((r) => r.stdout.trim()), Array.from({ length: 20 }, (_, i) => String(i)), `round ${round}`);
      assert.equal((await rt.status(h)).alive, true, `the sandbox died in round ${round}`);
    }
  } finally {
    await rt.destroy(h);
    await rt.close();
  }
});
