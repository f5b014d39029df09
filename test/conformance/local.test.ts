import { runRuntimeContract } from './contract.js';
import { LocalRuntime } from '../../src/runtime/local/local-runtime.js';
import { helperPath } from '../../src/core/config.js';
import { hasDebian, testImages } from '../helpers/images.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

runRuntimeContract({
  name: 'local',
  isolation: 'namespaces',
  debian: hasDebian(),
  newRuntime: async () => {
    const images = await testImages();
    return new LocalRuntime({ disks: scratchDiskStore(), scope: `agentbox/test-contract-${process.pid}`, resolveRootfs: (image) => images.resolve(image).rootfs, helper: helperPath() });
  },
});
