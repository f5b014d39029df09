/**
 * An agentbox image as a microVM's root: an ext4 filesystem image of the image's tree, attached
 * read-only to every VM of that image (qemu-args.ts rootDisk). Users keep one image format; this is
 * derived from it, once per image content.
 *
 * DIR/IMAGE_ID.ext4, where IMAGE_ID is the image's content digest (a rebuilt image gets a new one).
 * Two processes may build at once: each builds under a name of its own and renames it into place.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runTool } from '../../../storage/host-tools.js';

export interface RootImage {
  /** The image's content digest, `sha256:` + hex (images/ ImageInfo.id). */
  id: string;
  /** Its tree on the host. */
  rootfs: string;
  sizeBytes: number;
}

/** Room over the tree's size: ext4's metadata and inode tables, and small files' slack. */
function diskBytes(treeBytes: number): number {
  const mib = Math.ceil((treeBytes * 1.25) / 2 ** 20) + 32;
  return mib * 2 ** 20;
}

/** The root disk of this image, built if it is not there yet; its path. */
export async function ensureRootDisk(dir: string, image: RootImage): Promise<string> {
  const hex = /^sha256:([0-9a-f]{64})$/.exec(image.id)?.[1];
  if (!hex) throw new RangeError(`not an image digest: ${image.id}`);
  const path = join(dir, `${hex}.ext4`);
  if (existsSync(path)) return path;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const partial = join(dir, `.${hex}.${process.pid}.${randomBytes(4).toString('hex')}.partial`);
  try {
    // No journal: nothing ever writes to it. root_owner: the tree's own owners are kept by -d.
    await runTool('mkfs.ext4', ['-q', '-F', '-L', 'agentbox-root', '-O', '^has_journal', '-E', 'root_owner=0:0', '-d', image.rootfs, partial, `${diskBytes(image.sizeBytes) / 1024}k`], {
      timeoutMs: 600_000,
    });
    await chmod(partial, 0o444);
    await rename(partial, path);
  } finally {
    await rm(partial, { force: true });
  }
  return path;
}
