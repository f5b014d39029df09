/**
 * Sandbox disks: a sandbox's writable state (/workspace, /tmp) lives on a filesystem of its own,
 * exactly `diskMb` large, so a write past the quota fails with ENOSPC and nothing counts against
 * memory. Why this shape (ARCHITECTURE.md, "Sandbox disks"):
 *
 * - The host may be plain ext4 with no quota support in the kernel (this one has no CONFIG_QUOTA),
 *   so the only hard quota that needs nothing of the host is a filesystem of that size: a sparse
 *   ext4 image per sandbox, on a loop device.
 * - Those images live on one XFS filesystem with reflink (the store, itself a sparse image under
 *   the agentbox home), so a new disk is a reflink clone of a formatted template (no mkfs per
 *   create), and a fork or a snapshot is a reflink clone of a frozen disk: milliseconds and no
 *   copied data, whatever the workspace holds.
 *
 * Layout under `dir` ($AGENTBOX_HOME/storage): store.img, store/ (its mount: templates/, disks/,
 * snapshots/, volumes/), mnt/<id> (where each disk is mounted while its sandbox lives).
 */
import { constants, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statfsSync } from 'node:fs';
import { chmod, copyFile, mkdir, open, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BadRequestError, ConflictError, InternalError } from '../contract/errors.js';
import { isMountPoint, mountTable, runTool } from './host-tools.js';

export interface DiskStoreOpts {
  /** $AGENTBOX_HOME/storage. */
  dir: string;
  /** Apparent size of the store image; default: the size of the host filesystem under `dir`. */
  storeBytes?: number;
}

/** A mounted sandbox disk. `root` holds `workspace/` and `tmp/`, bound into the sandbox. */
export interface SandboxDisk {
  id: string;
  root: string;
  image: string;
}

const ID_RE = /^[a-z0-9_]{1,64}$/;
/** Inner filesystem options: no reserved root blocks, every table written once in the template (shared by all clones). */
const MKFS_EXT4 = ['-q', '-F', '-m', '0', '-E', 'nodiscard,lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0'];
const DISK_MOUNT_OPTS = 'loop,nosuid,nodev';

function checkId(id: string): void {
  if (!ID_RE.test(id)) throw new BadRequestError(`not a disk id: ${JSON.stringify(id)}`);
}

export class DiskStore {
  readonly storeDir: string;
  private readonly mntDir: string;
  private readonly templates = new Map<number, Promise<string>>();
  private readonly destroying = new Map<string, Promise<void>>();
  private opened: Promise<void> | undefined;

  constructor(private readonly opts: DiskStoreOpts) {
    this.storeDir = join(opts.dir, 'store');
    this.mntDir = join(opts.dir, 'mnt');
  }

  /** Whether the store was ever made (it is on the first sandbox's create). */
  exists(): boolean {
    return existsSync(join(this.opts.dir, 'store.img'));
  }

  /** Create the store on first use and mount it; idempotent, and safe after a crash or a restart. */
  open(): Promise<void> {
    this.opened ??= this.doOpen().catch((err: unknown) => {
      this.opened = undefined;
      throw err;
    });
    return this.opened;
  }

  private async doOpen(): Promise<void> {
    mkdirSync(this.opts.dir, { recursive: true, mode: 0o700 });
    await chmod(this.opts.dir, 0o700);
    mkdirSync(this.storeDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.mntDir, { recursive: true, mode: 0o700 });
    const image = join(this.opts.dir, 'store.img');
    if (!isMountPoint(this.storeDir)) {
      if (!existsSync(image)) {
        const tmp = `${image}.new`;
        rmSync(tmp, { force: true });
        const st = statfsSync(this.opts.dir);
        await sparseFile(tmp, this.opts.storeBytes ?? st.blocks * st.bsize);
        // reflink: clones are how disks, forks and snapshots share blocks. -K: no discard of a new sparse file.
        await runTool('mkfs.xfs', ['-q', '-K', '-m', 'reflink=1', '-l', 'size=64m', '-L', 'agentbox', tmp]);
        renameSync(tmp, image);
      }
      await runTool('mount', ['-o', 'loop,nosuid,nodev,noexec', image, this.storeDir]);
    }
    for (const sub of ['templates', 'disks', 'snapshots', 'volumes', 'scratch']) mkdirSync(join(this.storeDir, sub), { recursive: true, mode: 0o700 });
  }

  /** A formatted, empty ext4 image of `sizeMb`, made once and cloned by every disk (and volume) of that size. */
  template(sizeMb: number): Promise<string> {
    let made = this.templates.get(sizeMb);
    if (!made) {
      made = (async () => {
        const path = join(this.storeDir, 'templates', `ext4-${sizeMb}m.img`);
        if (existsSync(path)) return path;
        const tmp = `${path}.${process.pid}.new`;
        await rm(tmp, { force: true });
        await sparseFile(tmp, sizeMb * 1024 * 1024);
        await runTool('mkfs.ext4', [...MKFS_EXT4, tmp]);
        renameSync(tmp, path);
        return path;
      })();
      made.catch(() => this.templates.delete(sizeMb));
      this.templates.set(sizeMb, made);
    }
    return made;
  }

  private imagePath(id: string): string {
    return join(this.storeDir, 'disks', `${id}.img`);
  }

  mountPoint(id: string): string {
    return join(this.mntDir, id);
  }

  /**
   * Make and mount the disk of sandbox `id`: an empty one of `sizeMb`, or a clone of `from` (an
   * image in the store: a snapshot's or a fork's). Leaves nothing behind when it fails.
   */
  async create(id: string, sizeMb: number, from?: string, opts: { mount?: boolean } = {}): Promise<SandboxDisk> {
    checkId(id);
    if (!Number.isInteger(sizeMb) || sizeMb < 8) throw new BadRequestError(`a sandbox disk needs at least 8 MB, not ${sizeMb}`);
    await this.open();
    const image = this.imagePath(id);
    const root = this.mountPoint(id);
    try {
      await reflink(from ?? (await this.template(sizeMb)), image);
    } catch (err) {
      // Another sandbox's disk under this id is left alone: only what this call made is removed.
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new ConflictError(`sandbox ${id} has a disk already`, { hint: 'sandbox ids are unique: this is a bug, or a leftover the next daemon start removes', cause: err });
      throw err;
    }
    // A VM's disk cloned from its template's: the guest mounts it, and it must stay as the template left it.
    if (opts.mount === false) return { id, root, image };
    try {
      await mkdir(root, { mode: 0o755 });
      await runTool('mount', ['-o', DISK_MOUNT_OPTS, image, root]);
      await mkdir(join(root, 'workspace'), { mode: 0o755 }).catch(ignoreExists);
      await mkdir(join(root, 'tmp'), { mode: 0o1777 }).catch(ignoreExists);
      await chmod(join(root, 'tmp'), 0o1777);
      return { id, root, image };
    } catch (err) {
      await this.destroy(id).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Unmount the host's mount of a disk and give its image's path: for a VM, which mounts the
   * filesystem itself (two kernels mounting one ext4 at once would corrupt it). Idempotent;
   * undefined when the sandbox has no disk.
   */
  async detach(id: string): Promise<string | undefined> {
    checkId(id);
    await this.open();
    const image = this.imagePath(id);
    if (!existsSync(image)) return undefined;
    const root = this.mountPoint(id);
    if (isMountPoint(root)) await runTool('umount', [root]);
    await removeMountPoint(root);
    return image;
  }

  /**
   * A reflink copy of a detached disk's image kept in the store as NAME (a VM template's disk, which
   * later disks are cloned from); an older one of that name is replaced. Its path.
   */
  async keepImage(id: string, name: string): Promise<string> {
    checkId(id);
    checkId(name);
    await this.open();
    const dest = join(this.storeDir, 'templates', `${name}.img`);
    await rm(dest, { force: true });
    await reflink(this.imagePath(id), dest);
    return dest;
  }

  /** The disk of a sandbox that outlived the daemon (or a host reboot): mounted again if it is not. */
  async attach(id: string): Promise<SandboxDisk | undefined> {
    checkId(id);
    await this.open();
    const image = this.imagePath(id);
    if (!existsSync(image)) return undefined;
    const root = this.mountPoint(id);
    if (!isMountPoint(root)) {
      await mkdir(root, { mode: 0o755 }).catch(ignoreExists);
      await runTool('mount', ['-o', DISK_MOUNT_OPTS, image, root]);
    }
    return { id, root, image };
  }

  /**
   * Unmount and delete the disk; idempotent, and safe to call twice at once (a delete and the
   * reaper may both end a sandbox). The sandbox's own mount namespace may still hold the
   * filesystem until its last process is gone; the loop device goes with it.
   */
  destroy(id: string): Promise<void> {
    checkId(id);
    let running = this.destroying.get(id);
    if (!running) {
      running = this.doDestroy(id).finally(() => this.destroying.delete(id));
      this.destroying.set(id, running);
    }
    return running;
  }

  private async doDestroy(id: string): Promise<void> {
    const root = this.mountPoint(id);
    if (isMountPoint(root)) {
      // Lazy: a process of the ended sandbox may still be on its way out.
      await runTool('umount', ['-l', root]).catch((err: unknown) => {
        if (isMountPoint(root)) throw err;
      });
    }
    await removeMountPoint(root);
    await rm(this.imagePath(id), { force: true });
  }


  /** Ids of every disk in the store, mounted or not (for reconciliation). */
  list(): string[] {
    const dir = join(this.storeDir, 'disks');
    if (!isMountPoint(this.storeDir) || !existsSync(dir)) return [];
    return readdirSync(dir)
      .filter((n) => n.endsWith('.img'))
      .map((n) => n.slice(0, -4));
  }

  /**
   * A consistent reflink copy of a live disk at `dest` (in the store): the filesystem is frozen
   * (dirty data written, writers held) for the clone, which takes milliseconds whatever it holds.
   */
  async cloneTo(id: string, dest: string): Promise<void> {
    checkId(id);
    const root = this.mountPoint(id);
    if (!isMountPoint(root)) {
      // Handed to a VM (detach): its guest holds the filesystem frozen meanwhile (Runtime.withDiskFrozen).
      await reflink(this.imagePath(id), dest);
      return;
    }
    await runTool('fsfreeze', ['-f', root]);
    try {
      await reflink(this.imagePath(id), dest);
    } finally {
      await runTool('fsfreeze', ['-u', root]);
    }
  }

  /**
   * Thaw a disk that a daemon killed during a snapshot's clone left frozen (its sandbox's writes
   * would hang for good). True when it was frozen; a disk that is not says EINVAL, which is fine.
   */
  async thawLeftFrozen(id: string): Promise<boolean> {
    checkId(id);
    const root = this.mountPoint(id);
    if (!isMountPoint(root)) return false;
    try {
      await runTool('fsfreeze', ['-u', root]);
      return true;
    } catch (err) {
      if (/Invalid argument/.test((err as Error).message)) return false;
      throw err;
    }
  }

  /**
   * A frozen-consistent clone of a live disk to start other disks from (a fork's children), in
   * the store's scratch directory; the caller removes it with `dropScratch`.
   */
  async cloneToScratch(id: string): Promise<string> {
    await this.open();
    const path = join(this.storeDir, 'scratch', `${id}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}.img`);
    await this.cloneTo(id, path);
    return path;
  }

  async dropScratch(path: string): Promise<void> {
    await rm(path, { force: true });
  }

  /** Scratch clones a daemon left when it died (call at start, before anything uses the store). */
  async clearScratch(): Promise<void> {
    const dir = join(this.storeDir, 'scratch');
    if (!existsSync(dir)) return;
    for (const n of readdirSync(dir)) await rm(join(dir, n), { force: true });
  }

  /** Unmount the store when none of its images is mounted (a daemon that stops with no sandbox left). */
  async closeIfIdle(): Promise<boolean> {
    if (!isMountPoint(this.storeDir)) return true;
    // Disks under mnt/, volumes (storage/volume-store.ts) beside it: whatever is mounted under dir holds the store.
    const mounted = mountTable().some((m) => m.point.startsWith(`${this.opts.dir}/`) && m.point !== this.storeDir);
    if (mounted) return false;
    // A disk unmounted lazily keeps its loop device, and so its image on the store open, until the
    // last process of its sandbox is gone: the store is busy for that moment.
    for (let attempt = 0; ; attempt++) {
      const busy = await runTool('umount', [this.storeDir]).then(
        () => false,
        (err: unknown) => {
          if (attempt < 100 && err instanceof InternalError && /busy/i.test(err.message)) return true;
          throw err;
        },
      );
      if (!busy) break;
      await sleep(100);
    }
    this.opened = undefined;
    this.templates.clear();
    return true;
  }
}

/** A copy of `src` at `dest` (which must not exist) sharing every block: the store is XFS with reflink. */
function reflink(src: string, dest: string): Promise<void> {
  return copyFile(src, dest, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE);
}

/** Remove a disk's (unmounted) mount point; one already gone is fine. */
async function removeMountPoint(root: string): Promise<void> {
  await rmdir(root).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw new InternalError(`could not remove ${root}: ${err.message}`);
  });
}

/** A new file of `bytes` apparent size and no blocks. */
async function sparseFile(path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'wx', 0o600);
  try {
    await fh.truncate(bytes);
  } finally {
    await fh.close();
  }
}

function ignoreExists(err: NodeJS.ErrnoException): void {
  if (err.code !== 'EEXIST') throw err;
}
