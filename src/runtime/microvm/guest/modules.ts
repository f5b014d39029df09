/**
 * Which kernel modules the initramfs carries and in which order /init loads them. Debian's cloud
 * kernel builds virtio, virtio-mmio, virtio-console (the agent's port), virtio-blk and overlayfs as
 * modules; the order comes from the kernel's own modules.dep, dependencies first.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RuntimeUnavailableError } from '../../../contract/errors.js';

/** virtio_mmio finds the devices, virtio_console gives the agent's port; virtio_blk and overlay are for root disks; virtiofs (with fuse) for named volumes. */
export const GUEST_MODULES = ['virtio_mmio', 'virtio_console', 'virtio_blk', 'overlay', 'virtiofs'] as const;

/** The module files (relative to modulesDir) to load, each after everything it depends on. */
export function moduleLoadOrder(modulesDir: string, wanted: readonly string[] = GUEST_MODULES): string[] {
  const deps = new Map<string, string[]>();
  const byName = new Map<string, string>();
  for (const line of readFileSync(join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (!m) continue;
    const file = m[1] as string;
    deps.set(file, (m[2] as string).split(/\s+/).filter(Boolean));
    byName.set(moduleName(file), file);
  }
  const order: string[] = [];
  const visit = (file: string, path: string[]): void => {
    if (order.includes(file)) return;
    if (path.includes(file)) throw new RuntimeUnavailableError(`module dependency loop in ${modulesDir}: ${[...path, file].join(' -> ')}`);
    for (const d of deps.get(file) ?? []) visit(d, [...path, file]);
    order.push(file);
  };
  for (const name of wanted) {
    const file = byName.get(name.replace(/-/g, '_'));
    if (!file) throw new RuntimeUnavailableError(`kernel module ${name} is not in ${modulesDir}`, { hint: 'the guest needs Debian\'s cloud kernel, which builds it as a module' });
    visit(file, []);
  }
  return order;
}

/** kernel/drivers/virtio/virtio_mmio.ko(.xz|.zst) -> virtio_mmio */
function moduleName(file: string): string {
  return (file.split('/').pop() ?? file).replace(/\.ko(\.\w+)?$/, '').replace(/-/g, '_');
}
