/**
 * What a local sandbox's /proc/self/mountinfo tells about the host: not where agentbox is installed (the
 * helper's directory, often under a user's home), nor the image store. (The docker runtime cannot hide
 * Docker's own paths, see the README's threat model.)
 */
import assert from 'node:assert/strict';
import { dirname } from 'node:path';
import { after, before, test } from 'node:test';
import { helperPath } from '../../src/core/config.js';
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
