/**
 * The local image store: `<dir>/<name>/rootfs/` plus `<dir>/<name>/image.json`.
 * Builds happen in a temporary directory renamed into place, so a failed build leaves nothing
 * and a reader never sees half an image. Several homes may share one store (AGENTBOX_IMAGES).
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { BadRequestError, ConflictError, NotFoundError } from '../core/errors.js';
import { buildBusybox, buildDebian, runTool, type OnProgress } from './builders.js';
import { finishRootfs } from './rootfs.js';

export const ImageInfoSchema = z.object({
  name: z.string(),
  id: z.string(),
  createdAt: z.string(),
  source: z.enum(['busybox', 'debian', 'import']),
  packages: z.array(z.string()),
  sizeBytes: z.number(),
});
export type ImageInfo = z.infer<typeof ImageInfoSchema>;

export interface BuildOpts {
  packages?: string[];
  base?: 'busybox' | 'debian';
  onProgress?: OnProgress;
  signal?: AbortSignal;
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export function defaultImagesDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.AGENTBOX_IMAGES ?? join(env.AGENTBOX_HOME ?? join(homedir(), '.agentbox'), 'images'));
}

function checkName(name: string): string {
  if (!NAME.test(name)) throw new BadRequestError(`bad image name: ${name}`, { hint: 'lower-case letters, digits, . _ - (max 64), e.g. debian-py' });
  return name;
}

function duBytes(dir: string): number {
  let total = 0;
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) total += statSync(p).size;
    }
  };
  walk(dir);
  return total;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class ImageStore {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = resolve(dir);
  }

  list(): ImageInfo[] {
    if (!existsSync(this.dir)) return [];
    return readdirSync(this.dir)
      .filter((n) => NAME.test(n))
      .map((n) => this.get(n))
      .filter((i): i is ImageInfo => i !== undefined)
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): ImageInfo | undefined {
    if (!NAME.test(name)) return undefined;
    try {
      return ImageInfoSchema.parse(JSON.parse(readFileSync(join(this.dir, name, 'image.json'), 'utf8')));
    } catch {
      return undefined;
    }
  }

  resolve(name: string): { info: ImageInfo; rootfs: string } {
    const info = NAME.test(name) ? this.get(name) : undefined;
    if (!info) {
      throw new NotFoundError(`no image ${name}`, { hint: `run agentbox image ls, or agentbox image build ${NAME.test(name) ? name : 'NAME'}` });
    }
    return { info, rootfs: join(this.dir, name, 'rootfs') };
  }

  /** Build the image if it is not there yet (used for the two base images). */
  async ensure(name: 'busybox' | 'debian', opts: BuildOpts): Promise<ImageInfo> {
    return this.get(name) ?? (await this.build(name, opts).catch(async (err: unknown) => {
      // Another process may have built it while we waited for the lock.
      const built = this.get(name);
      if (built) return built;
      throw err;
    }));
  }

  async build(name: string, opts: BuildOpts = {}): Promise<ImageInfo> {
    checkName(name);
    const base = opts.base ?? (name === 'busybox' && !opts.packages?.length ? 'busybox' : 'debian');
    if (base === 'busybox' && opts.packages?.length) throw new BadRequestError('a busybox image takes no packages', { hint: 'use --base debian for packages' });
    const packages = base === 'debian' ? [...new Set(opts.packages ?? [])].sort() : [];
    const progress = opts.onProgress ?? (() => undefined);
    return this.replaceWith(name, async (rootfs) => {
      if (base === 'busybox') await buildBusybox(rootfs, progress);
      else await buildDebian(rootfs, packages, progress, opts.signal);
      return { source: base, packages };
    });
  }

  /** Import a root filesystem tarball; absolute paths, `..` and device nodes are refused. */
  async importTar(name: string, tarPath: string, opts: { onProgress?: OnProgress } = {}): Promise<ImageInfo> {
    checkName(name);
    if (!existsSync(tarPath)) throw new NotFoundError(`no such file: ${tarPath}`);
    const listing: string[] = [];
    await runTool('tar', ['-tvPf', tarPath], { onLine: (l) => listing.push(l) });
    for (const line of listing) {
      const path = line.split(/\s+/).slice(5).join(' ').replace(/ -> .*$/, '').replace(/ link to .*$/, '');
      if (/^[bc]/.test(line)) throw new BadRequestError(`the tarball holds a device node: ${path}`, { hint: 'images may not carry device files' });
      if (path.startsWith('/') || path.split('/').includes('..')) throw new BadRequestError(`unsafe path in the tarball: ${path}`, { hint: 'paths must be relative and stay inside the image' });
    }
    opts.onProgress?.({ phase: 'import', message: `${listing.length} entries`, percent: 10 });
    return this.replaceWith(name, async (rootfs) => {
      mkdirSync(rootfs, { mode: 0o755 });
      await runTool('tar', ['-xpf', tarPath, '-C', rootfs, '--no-overwrite-dir']);
      opts.onProgress?.({ phase: 'import', message: 'done', percent: 100 });
      return { source: 'import', packages: [] };
    });
  }

  /** Write the image's root as a tarball (for `docker import`). */
  async exportTar(name: string, outPath: string): Promise<void> {
    const { rootfs } = this.resolve(name);
    await runTool('tar', ['-C', rootfs, '-cf', outPath, '.']);
  }

  remove(name: string): void {
    checkName(name);
    if (!existsSync(join(this.dir, name))) throw new NotFoundError(`no image ${name}`, { hint: 'run agentbox image ls' });
    // Rename first so a running sandbox's bind source disappears atomically from listings.
    const doomed = join(this.dir, `.rm-${name}-${randomBytes(4).toString('hex')}`);
    renameSync(join(this.dir, name), doomed);
    rmSync(doomed, { recursive: true, force: true });
  }

  /** Build into a temp dir under a per-name lock, then swap it in. */
  private async replaceWith(name: string, fill: (rootfs: string) => Promise<{ source: ImageInfo['source']; packages: string[] }>): Promise<ImageInfo> {
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    chmodSync(this.dir, 0o755);
    const release = await this.lock(name);
    const tmp = join(this.dir, `.tmp-${name}-${randomBytes(4).toString('hex')}`);
    try {
      mkdirSync(tmp, { mode: 0o755 });
      const rootfs = join(tmp, 'rootfs');
      const { source, packages } = await fill(rootfs);
      finishRootfs(rootfs);
      chmodSync(rootfs, 0o755);
      const info: ImageInfo = { name, id: randomBytes(6).toString('hex'), createdAt: new Date().toISOString(), source, packages, sizeBytes: duBytes(rootfs) };
      writeFileSync(join(tmp, 'image.json'), `${JSON.stringify(info, null, 2)}\n`);
      const final = join(this.dir, name);
      if (existsSync(final)) {
        const old = join(this.dir, `.rm-${name}-${randomBytes(4).toString('hex')}`);
        renameSync(final, old);
        renameSync(tmp, final);
        rmSync(old, { recursive: true, force: true });
      } else renameSync(tmp, final);
      return info;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
      release();
    }
  }

  private async lock(name: string): Promise<() => void> {
    const path = join(this.dir, `.lock-${name}`);
    const deadline = Date.now() + 10 * 60_000;
    for (;;) {
      try {
        const fd = openSync(path, 'wx', 0o644);
        writeFileSync(fd, String(process.pid));
        closeSync(fd);
        return () => rmSync(path, { force: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const holder = Number(readFileSync(path, 'utf8').trim() || 0);
        if (holder && !pidAlive(holder)) {
          rmSync(path, { force: true });
          continue;
        }
        if (Date.now() > deadline) throw new ConflictError(`image ${name} is being built by process ${holder}`, { hint: 'wait for that build to finish' });
        await sleep(200);
      }
    }
  }
}
