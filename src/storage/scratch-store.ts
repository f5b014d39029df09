/**
 * A throwaway disk store for tests, benchmarks and the doctor's attack suite, which drive runtimes
 * without a daemon: under a fresh temporary directory, and unmounted and deleted when the process
 * exits, whatever disks its sandboxes left mounted.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskStore } from './disk-store.js';
import { mountTable } from './host-tools.js';
import { VolumeStore } from './volume-store.js';

const SCRATCH_PREFIX = 'agentbox-disks-';
const scratchParent = (): string => process.env.AGENTBOX_SCRATCH_DIR ?? tmpdir();

let scratch: { store: DiskStore; dir: string } | undefined;
let scratchVolumes: VolumeStore | undefined;

export function scratchDiskStore(): DiskStore {
  if (scratch) return scratch.store;
  // Named after this process: when it is killed (no 'exit'), removeOrphanedScratchStores() removes it.
  const dir = mkdtempSync(join(scratchParent(), `${SCRATCH_PREFIX}${process.pid}-`));
  // Sparse: only what is written takes space. Big enough for every test's disks at once.
  const store = new DiskStore({ dir, storeBytes: 64 * 1024 ** 3 });
  scratch = { store, dir };
  process.once('exit', () => removeScratch(dir));
  return store;
}

/** Volumes in the scratch store (mounted under its directory, so they go with it at exit). */
export function scratchVolumeStore(): VolumeStore {
  const disks = scratchDiskStore();
  scratchVolumes ??= new VolumeStore({ disks, mountDir: join(scratch!.dir, 'volmnt') });
  return scratchVolumes;
}

/** Synchronous (it runs on 'exit'): every mount under `dir`, deepest first, then the files. */
function removeScratch(dir: string): void {
  const points = mountTable()
    .map((m) => m.point)
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const p of points) {
    try {
      execFileSync('umount', ['-l', p], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
  rmSync(dir, { recursive: true, force: true });
}

/**
 * The scratch stores of processes that are gone (killed: no 'exit' hook ran), unmounted and removed
 * as their process would have; returns their names. For scripts/run-tests.mjs, after a run.
 */
export function removeOrphanedScratchStores(): string[] {
  const removed: string[] = [];
  for (const parent of new Set([scratchParent(), tmpdir()])) {
    let names: string[];
    try {
      names = readdirSync(parent);
    } catch {
      continue;
    }
    for (const name of names) {
      const pid = name.startsWith(SCRATCH_PREFIX) ? /^(\d+)-/.exec(name.slice(SCRATCH_PREFIX.length))?.[1] : undefined;
      if (!pid || existsSync(`/proc/${pid}`)) continue;
      removeScratch(join(parent, name));
      removed.push(name);
    }
  }
  return removed;
}
