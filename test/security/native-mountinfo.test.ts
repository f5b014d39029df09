/**
 * What a sandbox's /proc/self/mountinfo tells about the host: not where agentbox is installed (the
 * native binaries' directory, often under a user's home), nor (local) the image store. The docker
 * runtime cannot hide Docker's own paths (overlay2 layers, the container's hostname file): see the
 * README's threat model.
 */
import assert from 'node:assert/strict';
import { dirname } from 'node:path';
import { test } from 'node:test';
import { VERSION, helperPath } from '../../src/core/config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { collect, execOpts } from '../helpers/collect.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';
import { localSkip, useLocalSandbox } from '../helpers/local-sandbox.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const skip = localSkip;
const local = useLocalSandbox('mi');

test('a local sandbox\'s mountinfo names neither the helper\'s install directory nor the image store', { ...(skip ? { skip } : {}) }, async () => {
  const r = await collect(local.rt().exec(local.sandbox(), ['cat', '/proc/self/mountinfo'], execOpts()));
  assert.match(r.stdout, / \/\.agentbox\/init /, `no mount of PID 1's binary:\n${r.stdout}`);
  for (const hostPath of [dirname(helperPath()), TEST_IMAGES_DIR]) {
    assert.ok(!r.stdout.includes(hostPath), `mountinfo names ${hostPath}:\n${r.stdout}`);
  }
  // PID 1 still runs and answers: an exec works, and it is the staged copy of the helper.
  assert.equal((await collect(local.rt().exec(local.sandbox(), ['sh', '-c', 'cat /proc/1/cmdline | tr "\\0" " "'], execOpts()))).stdout.trim().split(' ')[0], '/.agentbox/init');
});

// Registered at once (a test registered after a top-level await can be cancelled when the file's other tests end).
test('a runc sandbox\'s mountinfo does not name the directory agentbox is installed in', async (t) => {
  const drt = new DockerRuntime({ disks: scratchDiskStore(), images: await testImages(), homeTag: `test-mountinfo-${process.pid}`, version: VERSION });
  const probe = await drt.probe();
  if (!probe.ok) {
    await drt.close();
    t.skip(`docker: ${probe.reason}`);
    return;
  }
  const dh = await drt.create({ id: `sbx_mid${process.pid}`, image: 'busybox', isolation: 'container', limits: { cpus: 1, memoryMb: 64, pids: 32, diskMb: 8 }, labels: {} });
  try {
    const r = await collect(drt.exec(dh, ['cat', '/proc/self/mountinfo'], execOpts()));
    assert.match(r.stdout, / \/\.agentbox\/init /, `no mount of the init:\n${r.stdout}`);
    assert.ok(!r.stdout.includes(dirname(helperPath())), `mountinfo names ${dirname(helperPath())}:\n${r.stdout}`);
  } finally {
    await drt.destroy(dh);
    await drt.close();
  }
});
