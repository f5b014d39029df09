/**
 * A sandbox disk belongs to its sandbox's user on the host. A fresh disk is root's; a disk cloned
 * from another sandbox (a fork, a snapshot) belongs to that sandbox's user, which differs on local
 * (one random host uid per sandbox), so its files are handed over before the sandbox starts.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { InternalError } from '../contract/errors.js';

/** Where a writable root keeps its layer on the disk (`upper/`, and overlay's `work/`); never inside the sandbox. */
export function rootLayerDir(root: string): string {
  return join(root, 'rootfs');
}

export async function claimDisk(root: string, uid: number): Promise<void> {
  const workspace = join(root, 'workspace');
  const tmp = join(root, 'tmp');
  const st = await lstat(workspace);
  if (st.uid === uid) return;
  if (st.uid !== 0) {
    // A writable root's changes too (a fork or a snapshot of such a sandbox).
    const upper = join(rootLayerDir(root), 'upper');
    const trees = [workspace, tmp, ...(existsSync(upper) ? [upper] : [])];
    // Only what the previous sandbox user owned changes hands (never root's or another uid's files).
    await new Promise<void>((resolve, reject) => {
      execFile('chown', ['-R', '-h', `--from=${st.uid}`, `${uid}:${uid}`, ...trees], { env: { PATH: '/usr/bin:/bin' } }, (err, _out, stderr) =>
        err ? reject(new InternalError(`could not hand the disk over to the sandbox user: ${String(stderr).trim() || err.message}`)) : resolve(),
      );
    });
  }
  await chown(workspace, uid, uid);
}
