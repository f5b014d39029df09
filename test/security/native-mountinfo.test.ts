/**
 * What a sandbox's /proc/self/mountinfo tells about the host: not where agentbox is installed (the
 * native binaries' directory, often under a user's home), nor (local) the image store. The docker
 * runtime cannot hide Docker's own paths (overlay2 layers, the container's hostname file): see the
 * README's threat model.
 */
import assert from 'node:assert/strict';
import { dirname } from 'node:path';
import { after, before, test } from 'node:test';
import { VERSION, helperPath } from '../../src/core/config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import type { SandboxHandle } from '../../src/runtime/types.js';
import { collect, execOpts } from '../helpers/collect.js';
import { TEST_IMAGES_DIR, testImages } from '../helpers/images.js';

const skip = process.getuid?.() !== 0 ? 'the local runtime needs root' : undefined;
let rt: LocalRuntime;
let h: SandboxHandle;

before(async () => {
  if (skip) return;
  const images = await testImages();
  rt = new LocalRuntime({ scope: `agentbox/test-mountinfo-${process.pid}`, resolveRootfs: (image) => images.resolve(image).rootfs, helper: helperPath() });
  h = await rt.create({ id: `sbx_mi${process.pid}`, image: 'busybox', isolation: 'namespaces', limits: { cpus: 1, memoryMb: 64, pids: 32, diskMb: 8 }, labels: {} });
});

after(async () => {
  if (skip) return;
  await rt.destroy(h);
  await rt.close();
});

test('a local sandbox\'s mountinfo names neither the helper\'s install directory nor the image store', { ...(skip ? { skip } : {}) }, async () => {
  const r = await collect(rt.exec(h, ['cat', '/proc/self/mountinfo'], execOpts()));
  assert.match(r.stdout, / \/\.agentbox\/init /, `no mount of PID 1's binary:\n${r.stdout}`);
  for (const hostPath of [dirname(helperPath()), TEST_IMAGES_DIR]) {
    assert.ok(!r.stdout.includes(hostPath), `mountinfo names ${hostPath}:\n${r.stdout}`);
  }
  // PID 1 still runs and answers: an exec works, and it is the staged copy of the helper.
  assert.equal((await collect(rt.exec(h, ['sh', '-c', 'cat /proc/1/cmdline | tr "\\0" " "'], execOpts()))).stdout.trim().split(' ')[0], '/.agentbox/init');
});

const dockerProbe = await new DockerRuntime({ images: { resolve: () => { throw new Error('unused'); } }, homeTag: 'test-mountinfo-probe', version: VERSION }).probe();
test('a runc sandbox\'s mountinfo does not name the directory agentbox is installed in', { ...(!dockerProbe.ok ? { skip: `docker: ${dockerProbe.reason}` } : {}) }, async () => {
  const drt = new DockerRuntime({ images: await testImages(), homeTag: `test-mountinfo-${process.pid}`, version: VERSION });
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
