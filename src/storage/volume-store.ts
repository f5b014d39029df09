/**
 * Named volumes on the host (ARCHITECTURE.md, "Volumes"): one ext4 image per volume in the disk
 * store, `store/volumes/<tenant>/<name>.img`, reflink-cloned from the same per-size template as
 * sandbox disks (so a new volume costs no mkfs and its size is its hard quota), and mounted at
 * `<mountDir>/<volume id>` while anything uses it. One mount per volume, whatever the number of
 * sandboxes: each binds that one filesystem, so they all see the same files.
 *
 * This class only makes, mounts, unmounts and removes; who uses a volume (and so when it is
 * mounted) is decided by its caller (core/manager/volumes.ts), one operation per volume at a time.
 */
import { constants, existsSync, readdirSync } from 'node:fs';
import { chmod, chown, copyFile, mkdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BadRequestError, ConflictError, InternalError } from '../contract/errors.js';
import { VOLUME_NAME_RE } from '../contract/volumes.js';
import type { DiskStore } from './disk-store.js';
import { isMountPoint, mountTable, runTool } from './host-tools.js';

/**
 * The owner of a volume's files on its filesystem: the sandbox user's uid, as docker sandboxes (runc
 * and gVisor) write them; local sandboxes see it through an idmapped mount (native/agentbox-helper.c
 * stage_volume). Equal to SANDBOX_UID of both drivers.
 */
export const VOLUME_OWNER = 1000;

const MOUNT_OPTS = 'loop,nosuid,nodev';
const ID_RE = /^vol_[a-z0-9]{1,40}$/;
const TENANT_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export interface VolumeRef {
  id: string;
  tenant: string;
  name: string;
}

export interface VolumeStoreOpts {
  disks: DiskStore;
  /** Where volumes are mounted while in use: $AGENTBOX_HOME/storage/volmnt. */
  mountDir: string;
}

/** Names come from tenants: checked here too, so nothing but a plain file name reaches a path. */
function check(v: VolumeRef): void {
  if (!ID_RE.test(v.id) || !TENANT_RE.test(v.tenant) || !VOLUME_NAME_RE.test(v.name)) {
    throw new BadRequestError(`not a volume: ${JSON.stringify(v).slice(0, 200)}`);
  }
}

export class VolumeStore {
  constructor(private readonly opts: VolumeStoreOpts) {}

  private imagePath(v: Pick<VolumeRef, 'tenant' | 'name'>): string {
    return join(this.opts.disks.storeDir, 'volumes', v.tenant, `${v.name}.img`);
  }

  mountPoint(id: string): string {
    return join(this.opts.mountDir, id);
  }

  /** Whether the disk store was ever made (before that there is no volume to find). */
  exists(): boolean {
    return this.opts.disks.exists();
  }

  /** Mount the disk store (idempotent): images() needs it. */
  open(): Promise<void> {
    return this.opts.disks.open();
  }

  /**
   * A new, empty volume of `sizeMb`: a clone of the template, its root handed to VOLUME_OWNER
   * (mode 0755) and lost+found removed, so every sandbox sees an empty directory of its own user.
   * ConflictError when the image exists. Leaves nothing behind when it fails.
   */
  async create(v: VolumeRef, sizeMb: number): Promise<void> {
    check(v);
    if (!Number.isInteger(sizeMb) || sizeMb < 8) throw new BadRequestError(`a volume needs at least 8 MB, not ${sizeMb}`);
    await this.opts.disks.open();
    const image = this.imagePath(v);
    await mkdir(join(this.opts.disks.storeDir, 'volumes', v.tenant), { recursive: true, mode: 0o700 });
    try {
      await copyFile(await this.opts.disks.template(sizeMb), image, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new ConflictError(`volume ${v.name} exists`);
      throw err;
    }
    try {
      const root = await this.mount(v);
      await chown(root, VOLUME_OWNER, VOLUME_OWNER);
      await chmod(root, 0o755);
      await rmdir(join(root, 'lost+found')).catch(() => undefined);
      await this.unmount(v.id);
    } catch (err) {
      await this.remove(v).catch(() => undefined);
      throw err;
    }
  }

  /** Mount the volume (idempotent); returns where. */
  async mount(v: VolumeRef): Promise<string> {
    check(v);
    await this.opts.disks.open();
    const point = this.mountPoint(v.id);
    if (isMountPoint(point)) return point;
    const image = this.imagePath(v);
    if (!existsSync(image)) throw new InternalError(`the image of volume ${v.name} is missing (${image})`, { hint: 'remove the volume and create it again' });
    await mkdir(this.opts.mountDir, { recursive: true, mode: 0o700 });
    await mkdir(point, { mode: 0o755 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    await runTool('mount', ['-o', MOUNT_OPTS, image, point]);
    return point;
  }

  /**
   * Unmount (idempotent). Called when nothing uses the volume any more; a sandbox's process still on
   * its way out can hold it a moment, so a busy mount is retried, then detached lazily (a later mount
   * of the same image reuses the still-attached loop device, so there is never a second one).
   */
  async unmount(id: string): Promise<void> {
    const point = this.mountPoint(id);
    for (let i = 0; isMountPoint(point); i++) {
      try {
        await runTool('umount', i < 10 ? [point] : ['-l', point]);
      } catch (err) {
        if (i >= 10) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    await rmdir(point).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw new InternalError(`could not remove ${point}: ${err.message}`);
    });
  }

  /** Unmount and delete the image; idempotent. */
  async remove(v: VolumeRef): Promise<void> {
    check(v);
    await this.unmount(v.id);
    await rm(this.imagePath(v), { force: true });
  }

  isMounted(id: string): boolean {
    return isMountPoint(this.mountPoint(id));
  }

  /** Ids of the volumes mounted now (for reconciliation). */
  mounted(): string[] {
    const prefix = `${this.opts.mountDir}/`;
    return mountTable()
      .filter((m) => m.point.startsWith(prefix) && !m.point.slice(prefix.length).includes('/'))
      .map((m) => m.point.slice(prefix.length));
  }

  /** Every volume image in the store (for reconciliation); the store must be open. */
  images(): { tenant: string; name: string }[] {
    const dir = join(this.opts.disks.storeDir, 'volumes');
    if (!existsSync(dir)) return [];
    return readdirSync(dir).flatMap((tenant) =>
      readdirSync(join(dir, tenant))
        .filter((f) => f.endsWith('.img'))
        .map((f) => ({ tenant, name: f.slice(0, -4) })),
    );
  }

  /** Delete an image no volume names (a crash between image and row, or during a remove). */
  async removeImage(tenant: string, name: string): Promise<void> {
    if (!TENANT_RE.test(tenant) || !VOLUME_NAME_RE.test(name)) return;
    await rm(this.imagePath({ tenant, name }), { force: true });
  }
}
