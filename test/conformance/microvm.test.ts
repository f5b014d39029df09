import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runRuntimeContract } from './contract.js';
import { MicroVmRuntime } from '../../src/runtime/microvm/microvm-runtime.js';
import { QEMU_BINARY } from '../../src/runtime/microvm/vm.js';
import { hasDebian, testImages } from '../helpers/images.js';
import { scratchDiskStore } from '../../src/storage/scratch-store.js';

const qemu = spawnSync(QEMU_BINARY, ['--version']);
if (qemu.error) {
  test('microvm runtime contract', { skip: `${QEMU_BINARY} is not installed` }, () => undefined);
} else {
  runRuntimeContract({
    name: 'microvm',
    isolation: 'vm',
    debian: hasDebian(),
    hibernatesWithEgress: true,
    newRuntime: async () => {
      const images = await testImages();
      // Guests and root disks are kept between runs (fingerprinted); each run's VMs get a directory of their own.
      const dir = join(tmpdir(), 'agentbox-test-microvm');
      const runRoot = join(tmpdir(), `ab-vm-run-${process.pid}`);
      mkdirSync(runRoot, { recursive: true });
      process.once('exit', () => rmSync(runRoot, { recursive: true, force: true }));
      return new MicroVmRuntime({ images, homeTag: `test-ct-${process.pid}`, dir, runRoot, disks: scratchDiskStore(), accel: 'tcg' });
    },
  });
}
