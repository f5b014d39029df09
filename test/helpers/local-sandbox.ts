/** One small busybox sandbox on the local runtime for a test file: created before its tests, destroyed after. */
import { after, before } from 'node:test';
import { helperPath } from '../../src/core/config.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import type { SandboxHandle } from '../../src/runtime/types.js';
import { testImages } from './images.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

/** Why the local runtime cannot run here (it needs root), or undefined. */
export const localSkip = process.getuid?.() !== 0 ? 'the local runtime needs root' : undefined;

export function useLocalSandbox(tag: string): { rt: () => LocalRuntime; sandbox: () => SandboxHandle } {
  let rt: LocalRuntime | undefined;
  let h: SandboxHandle | undefined;
  before(async () => {
    if (localSkip) return;
    const images = await testImages();
    rt = new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/test-${tag}-${process.pid}`, resolveRootfs: (image) => images.resolve(image).rootfs, helper: helperPath() });
    h = await rt.create({ id: `sbx_${tag}${process.pid}`, image: 'busybox', isolation: 'namespaces', limits: { cpus: 1, memoryMb: 64, pids: 32, diskMb: 8 }, labels: {} });
  });
  after(async () => {
    if (!rt) return;
    if (h) await rt.destroy(h);
    await rt.close();
  });
  return {
    rt: () => rt as LocalRuntime,
    sandbox: () => h as SandboxHandle,
  };
}
