/**
 * The local image store: `<dir>/<name>/rootfs/` plus `<dir>/<name>/image.json`.
 *
 * - Builds happen in `<dir>/.tmp-<name>-<random>` under a per-name lock (`.lock-<name>`) and are
 *   renamed into place: a failed build leaves nothing, a reader never sees half an image.
 * - A replaced or removed image is renamed to `.trash-<name>-<random>` and deleted only once no
 *   mount refers to it: a running sandbox keeps the root it started with.
 * - Several agentbox homes may share one store (AGENTBOX_IMAGES); the lock works across processes.
 * - Everything is 0755 and root-owned: sandboxes run as unprivileged uids and must read the root.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { BadRequestError, NotFoundError } from '../contract/errors.js';
import { ImageInfoSchema, type ImageInfo, type ImageSource } from '../contract/images.js';
import { buildBusybox } from './build-busybox.js';
import { buildDebian, checkPackageNames } from './build-debian.js';
import { exportTar as writeTar, extractTarball, type ImportOpts } from './import-tar.js';
import { acquireLock, lockHeld } from './lock.js';
import { recipeOf, recipeRef, writeRecipeFiles } from './recipes.js';
import { finishRootfs, treeStats } from './rootfs.js';
import { abortReason, type OnProgress } from './run-tool.js';
import { removeTree, removeUnusedTrees } from './trees.js';

export type { OnProgress, Progress } from './run-tool.js';
export type { ImportOpts } from './import-tar.js';

export type ImageBase = 'busybox' | 'debian';

export interface BuildOpts {
  /** Debian packages on top of minbase; giving any means a Debian image (and no recipe). */
  packages?: string[];
  /** @default busybox for the name `busybox` without packages; the recipe of that name (src/images/recipes.ts) without packages or base; debian otherwise */
  base?: ImageBase;
  onProgress?: OnProgress;
  signal?: AbortSignal;
}

export interface ImageStoreOpts {
  /** How long a build waits for another build of the same name before `conflict`. @default 15 minutes */
  lockWaitMs?: number;
}

export const IMAGE_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const TMP_DIR = /^\.tmp-(.+)-[0-9a-f]{8}$/;
const TRASH_DIR = /^\.trash-.+-[0-9a-f]{8}$/;

/** The image store directory: AGENTBOX_IMAGES, else `$AGENTBOX_HOME/images`, else `~/.agentbox/images`. */
export function defaultImagesDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.AGENTBOX_IMAGES) return resolvePath(env.AGENTBOX_IMAGES);
  return resolvePath(env.AGENTBOX_HOME || join(homedir(), '.agentbox'), 'images');
}

/** `name` if it is a valid image name, else `bad_request`. */
export function checkImageName(name: string): string {
  if (!IMAGE_NAME.test(name)) {
    throw new BadRequestError(`bad image name ${JSON.stringify(name)}`, { hint: 'image names are 1-64 of a-z 0-9 . _ - starting with a letter or digit, e.g. debian-py' });
  }
  return name;
}

const hex8 = (): string => randomBytes(4).toString('hex');

interface Fill {
  source: ImageSource;
  ref?: string;
  packages: string[];
  onProgress: OnProgress;
  signal: AbortSignal | undefined;
  /** Fill the not yet existing directory `rootfs`. */
  run: (rootfs: string) => Promise<void>;
}

export class ImageStore {
  readonly dir: string;
  private readonly lockWaitMs: number;

  constructor(dir: string, opts: ImageStoreOpts = {}) {
    this.dir = resolvePath(dir);
    this.lockWaitMs = opts.lockWaitMs ?? 15 * 60_000;
  }

  /** The images, sorted by name; half-built and unreadable entries are not images. */
  list(): ImageInfo[] {
    if (!existsSync(this.dir)) return [];
    return readdirSync(this.dir)
      .filter((n) => IMAGE_NAME.test(n))
      .map((n) => this.get(n))
      .filter((i): i is ImageInfo => i !== undefined)
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): ImageInfo | undefined {
    if (!IMAGE_NAME.test(name)) return undefined;
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(join(this.dir, name, 'image.json'), 'utf8'));
    } catch {
      return undefined; // absent or unreadable: not an image
    }
    const parsed = ImageInfoSchema.safeParse(raw);
    return parsed.success ? parsed.data : undefined;
  }

  /** The image and its root directory, or `not_found`. */
  resolve(name: string): { info: ImageInfo; rootfs: string } {
    const info = this.get(name);
    if (!info) {
      throw new NotFoundError(`no image ${JSON.stringify(name)} in ${this.dir}`, { hint: `run agentbox image ls, or agentbox image build ${IMAGE_NAME.test(name) ? name : 'NAME'}` });
    }
    return { info, rootfs: join(this.dir, name, 'rootfs') };
  }

  /** Build (or rebuild, replacing) an image. */
  async build(name: string, opts: BuildOpts = {}): Promise<ImageInfo> {
    return this.install(name, this.builder(name, opts), false);
  }

  /**
   * The image if it exists, else build it; concurrent callers share one build through the lock.
   * A recipe's image (src/images/recipes.ts) built from another version of the recipe is rebuilt.
   */
  async ensure(name: string, opts: BuildOpts = {}): Promise<ImageInfo> {
    const fill = this.builder(name, opts);
    const current = (i: ImageInfo | undefined): ImageInfo | undefined => (i && (fill.ref === undefined || i.ref === fill.ref) ? i : undefined);
    return current(this.get(name)) ?? (await this.install(name, fill, true, current));
  }

  /** Import a root filesystem tarball (optionally compressed) as image `name`, replacing any. */
  async importTar(name: string, tarPath: string, opts: ImportOpts & { source?: 'import' | 'pull'; ref?: string } = {}): Promise<ImageInfo> {
    checkImageName(name);
    if (!existsSync(tarPath)) throw new NotFoundError(`no such file: ${tarPath}`, { hint: 'give the path of a root filesystem tarball' });
    return this.install(
      name,
      {
        source: opts.source ?? 'import',
        ...(opts.ref ? { ref: opts.ref } : {}),
        packages: [],
        onProgress: opts.onProgress ?? (() => undefined),
        signal: opts.signal,
        run: (rootfs) => extractTarball(rootfs, tarPath, opts),
      },
      false,
    );
  }

  /** Write the image's root as a tarball at `outPath` (for `docker import`). */
  async exportTar(name: string, outPath: string, signal?: AbortSignal): Promise<void> {
    await writeTar(this.resolve(name).rootfs, outPath, signal);
  }

  /** Remove an image; sandboxes still running on it keep their root until they end (see sweep). */
  remove(name: string): void {
    checkImageName(name);
    if (!existsSync(join(this.dir, name))) throw new NotFoundError(`no image ${JSON.stringify(name)}`, { hint: 'run agentbox image ls' });
    renameSync(join(this.dir, name), join(this.dir, `.trash-${name}-${hex8()}`));
    this.sweep();
  }

  /**
   * Delete removed or replaced image trees no mount uses any more, and temp trees of builds that
   * died. Returns how many trees are still kept because a sandbox uses them.
   */
  sweep(): number {
    if (!existsSync(this.dir)) return 0;
    const entries = readdirSync(this.dir);
    for (const entry of entries) {
      const tmp = TMP_DIR.exec(entry);
      // A build holds its lock for the whole life of its temp dir: no live lock, no live build.
      if (tmp && !lockHeld(this.lockPath(tmp[1] as string))) removeTree(join(this.dir, entry));
    }
    return removeUnusedTrees(entries.filter((e) => TRASH_DIR.test(e)).map((e) => join(this.dir, e))).length;
  }

  private lockPath(name: string): string {
    return join(this.dir, `.lock-${name}`);
  }

  private builder(name: string, opts: BuildOpts): Fill {
    checkImageName(name);
    const recipe = opts.packages === undefined && opts.base === undefined ? recipeOf(name) : undefined;
    const packages = [...new Set(recipe?.packages ?? opts.packages ?? [])].sort();
    const base: ImageBase = opts.base ?? (name === 'busybox' && packages.length === 0 ? 'busybox' : 'debian');
    if (base === 'busybox' && packages.length > 0) throw new BadRequestError('a busybox image takes no packages', { hint: 'use --base debian (or leave --base out) to install packages' });
    checkPackageNames(packages);
    const onProgress = opts.onProgress ?? (() => undefined);
    const common = { onProgress, ...(opts.signal ? { signal: opts.signal } : {}) };
    return {
      source: base,
      ...(recipe ? { ref: recipeRef(name, recipe) } : {}),
      packages,
      onProgress,
      signal: opts.signal,
      run: async (rootfs) => {
        if (base === 'busybox') return buildBusybox(rootfs, common);
        await buildDebian(rootfs, { ...common, packages });
        if (recipe) writeRecipeFiles(rootfs, recipe.files);
      },
    };
  }

  /** Fill a temp dir under the name's lock, finish it, and rename it into place. */
  private async install(name: string, fill: Fill, ifMissing: boolean, usable: (i: ImageInfo | undefined) => ImageInfo | undefined = (i) => i): Promise<ImageInfo> {
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    const release = await acquireLock(this.lockPath(name), { waitMs: this.lockWaitMs, what: `image ${name} is being built`, ...(fill.signal ? { signal: fill.signal } : {}) });
    try {
      const existing = ifMissing ? usable(this.get(name)) : undefined;
      if (existing) return existing; // built by whoever held the lock before us
      for (const entry of readdirSync(this.dir)) {
        if (TMP_DIR.exec(entry)?.[1] === name) removeTree(join(this.dir, entry)); // left by a build that died
      }
      const tmp = join(this.dir, `.tmp-${name}-${hex8()}`);
      mkdirSync(tmp, { mode: 0o755 });
      chmodSync(tmp, 0o755);
      try {
        const info = await this.fillTemp(name, tmp, fill);
        this.swapIn(name, tmp);
        return info;
      } catch (err) {
        try {
          removeTree(tmp);
        } catch {
          // keep the build's own error; sweep() retries the removal later
        }
        throw err;
      }
    } finally {
      release();
    }
  }

  private async fillTemp(name: string, tmp: string, fill: Fill): Promise<ImageInfo> {
    const rootfs = join(tmp, 'rootfs');
    await fill.run(rootfs);
    if (fill.signal?.aborted) throw abortReason(fill.signal);
    fill.onProgress({ phase: 'finish', message: 'mount points, sandbox user, fingerprint', percent: 100 });
    // mmdebstrap leaves the host's resolv.conf; sandboxes reach the network through the proxy only.
    finishRootfs(rootfs, { emptyResolvConf: fill.source === 'debian' });
    const { id, sizeBytes } = treeStats(rootfs);
    const info: ImageInfo = { name, id, createdAt: new Date().toISOString(), source: fill.source, ...(fill.ref ? { ref: fill.ref } : {}), packages: fill.packages, sizeBytes };
    writeFileSync(join(tmp, 'image.json'), `${JSON.stringify(info, null, 2)}\n`, { mode: 0o644 });
    return info;
  }

  /** Put `tmp` at `<dir>/<name>`; an old image there goes to the trash (kept while in use). */
  private swapIn(name: string, tmp: string): void {
    const final = join(this.dir, name);
    if (existsSync(final)) renameSync(final, join(this.dir, `.trash-${name}-${hex8()}`));
    renameSync(tmp, final);
    this.sweep();
  }
}
