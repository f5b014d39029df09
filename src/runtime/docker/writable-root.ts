/**
 * `rootfs: writable` on docker. Docker keeps a container's writable layer in its own storage, outside
 * the sandbox's disk and its quota, and out of its snapshots and forks. So the writable root is made
 * on the host instead: an overlay over the image's layers (Docker's overlay2 layer directories,
 * idmapped so their root-owned files are the sandbox user's) whose upper layer is on the sandbox's
 * disk, mounted inside the disk's own mount (unmounting the disk takes it along). Each of its top
 * directories is bound over the container's read-only root: `/usr`, `/etc`, `/opt` and the others
 * become writable, `/` itself stays the image's (no new top-level entries).
 */
import { execFile } from 'node:child_process';
import { lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { BadRequestError, InternalError } from '../../contract/errors.js';
import { rootLayerDir } from '../disk-owner.js';

/** Top directories that are not the image's to change: kernel filesystems, agentbox's and the disk's mounts. */
const NOT_BOUND = new Set(['proc', 'sys', 'dev', 'run', 'tmp', 'workspace', '.agentbox', 'lost+found']);

/** The image's layer directories in Docker's storage, top first; overlay2 only. */
export async function imageLayers(docker: Docker, imageRef: string): Promise<string[]> {
  const info = await docker.getImage(imageRef).inspect();
  const driver = info.GraphDriver;
  const data = driver?.Data as Record<string, string | undefined> | undefined;
  if (driver?.Name !== 'overlay2' || !data?.UpperDir) {
    throw new BadRequestError(`a writable root needs dockerd's overlay2 storage driver, and this one uses ${driver?.Name ?? 'an unknown one'}`, {
      hint: 'use --runtime local, or a profile without rootfs: writable',
    });
  }
  return [data.UpperDir, ...(data.LowerDir ? data.LowerDir.split(':') : [])];
}

/**
 * Mount the writable root of a sandbox whose disk is at `diskRoot`, owned by `uid`; returns the
 * container binds (`host:container:rw`) that put it in place.
 */
export async function mountWritableRoot(helper: string, layers: string[], diskRoot: string, uid: number): Promise<string[]> {
  const upperDir = rootLayerDir(diskRoot);
  const merged = join(upperDir, 'merged');
  await new Promise<void>((resolve, reject) => {
    const args = ['overlay-root', '--uid', String(uid), '--gid', String(uid), '--root-upper', upperDir, '--root', merged, '--', ...layers];
    execFile(helper, args, { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } }, (err, _out, stderr) =>
      err ? reject(new InternalError(`could not mount a writable root: ${String(stderr).trim() || err.message}`)) : resolve(),
    );
  });
  return readdirSync(merged)
    .filter((name) => !NOT_BOUND.has(name) && isDirectory(join(merged, name)))
    .sort()
    .map((name) => `${join(merged, name)}:/${name}:rw`);
}

function isDirectory(path: string): boolean {
  try {
    return lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}
