/**
 * Removing image trees safely. Two hazards:
 * - a tree may still have something mounted inside it (mmdebstrap killed mid-build leaves its
 *   chroot's /proc, /sys or /dev mounts): a recursive delete would walk into the host's /dev;
 * - a tree may be the root of a running sandbox (bwrap bind-mounts it): deleting its files would
 *   pull the ground from under that sandbox. Such trees are kept until no mount refers to them.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { InternalError } from '../contract/errors.js';

/** Undo mountinfo's octal escapes (`\040` for a space). */
function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

function mountinfoLines(pid: string): string[] {
  try {
    return readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').filter(Boolean);
  } catch {
    return []; // the process went away
  }
}

/** Mount points (field 5 of our own mountinfo) at or below `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  const root = resolve(dir);
  return mountinfoLines('self')
    .map((line) => unescapeMountPath(line.split(' ')[4] ?? ''))
    .filter((mp) => mp === root || mp.startsWith(`${root}/`))
    .sort((a, b) => b.length - a.length);
}

/**
 * Base names (from `names`) that some mount namespace on the host still uses as the source of a
 * mount. Mountinfo's root field follows renames, so a tree renamed aside is still recognised.
 * One process per mount namespace is read.
 */
export function namesInUse(names: string[]): Set<string> {
  const inUse = new Set<string>();
  if (names.length === 0) return inUse;
  const namespaces = new Set<string>();
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    let ns: string;
    try {
      ns = readlinkSync(`/proc/${pid}/ns/mnt`);
    } catch {
      continue;
    }
    if (namespaces.has(ns)) continue;
    namespaces.add(ns);
    for (const line of mountinfoLines(pid)) {
      const source = unescapeMountPath(line.split(' ')[3] ?? '');
      for (const name of names) if (source.endsWith(`/${name}`) || source.includes(`/${name}/`)) inUse.add(name);
    }
  }
  return inUse;
}

/** `rm -rf dir`, after unmounting (lazily) whatever is mounted below it; refuses if that fails. */
export function removeTree(dir: string): void {
  for (const mp of mountsUnder(dir)) spawnSync('umount', ['--lazy', mp], { stdio: 'ignore' });
  const left = mountsUnder(dir);
  if (left.length > 0) {
    throw new InternalError(`not removing ${dir}: ${left[0]} is still mounted`, { hint: `umount -R ${left[0]}, then agentbox image rm again` });
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Remove the trees among `dirs` that no mount refers to; returns the ones kept. */
export function removeUnusedTrees(dirs: string[]): string[] {
  const busy = namesInUse(dirs.map((d) => basename(d)));
  const kept: string[] = [];
  for (const dir of dirs) {
    if (busy.has(basename(dir))) kept.push(dir);
    else removeTree(dir);
  }
  return kept;
}
