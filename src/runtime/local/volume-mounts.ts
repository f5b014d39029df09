/**
 * Where a local sandbox's volumes are mounted. The image root is read-only, so bwrap can only mount
 * on a directory that is there: under /workspace or /tmp (the sandbox's disk) bwrap makes it; any
 * other target is added to the root by the helper (spawn --mount-point: a directory in the overlay's
 * lower layer beneath the image), unless the image has something else at that path.
 */
import { lstatSync } from 'node:fs';
import { join } from 'node:path';
import { BadRequestError } from '../../contract/errors.js';
import type { RuntimeVolume } from '../types.js';

function onDisk(target: string): boolean {
  return target.startsWith('/workspace/') || target.startsWith('/tmp/');
}

/** The targets the helper must add to the root; BadRequestError when the image has a non-directory on the way. */
export function volumeMountPoints(rootfs: string, volumes: readonly RuntimeVolume[]): string[] {
  const points: string[] = [];
  for (const v of volumes) {
    if (onDisk(v.target)) continue;
    let prefix = '';
    for (const part of v.target.split('/').slice(1)) {
      prefix += `/${part}`;
      let st;
      try {
        st = lstatSync(join(rootfs, prefix));
      } catch {
        break; // the image has nothing from here on: the helper makes it
      }
      if (!st.isDirectory()) {
        throw new BadRequestError(`cannot mount a volume at ${v.target}: ${prefix} in the image is ${st.isSymbolicLink() ? 'a symlink' : 'not a directory'}`, {
          hint: 'mount it somewhere else, e.g. /data, /mnt/NAME or under /workspace',
        });
      }
    }
    points.push(v.target);
  }
  return points;
}
