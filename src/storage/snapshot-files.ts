/**
 * A snapshot's files in the disk store: `snapshots/<id>/disk.img` (a reflink clone of the frozen
 * sandbox disk: the whole writable state) and `manifest.json`, written last. A snapshot directory
 * is made under a `.partial` name and renamed into place once its manifest is on disk, so a
 * complete directory always has a manifest; restores check the layer against it first.
 *
 * The digest covers the layer's allocated extents (offset, length, bytes), found with SEEK_DATA
 * through `xfs_io`: hashing the holes of a sparse 1 GB disk would cost seconds for nothing, and the
 * digest only ever compares a file with itself at an earlier time.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { BadRequestError, ConflictError, NotFoundError } from '../contract/errors.js';
import { IsolationSchema, LimitsSchema, RuntimeNameSchema } from '../contract/model.js';
import type { DiskStore } from './disk-store.js';
import { runTool } from './host-tools.js';

const MemoryFileSchema = z.object({ file: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/), sha256: z.string().length(64), bytes: z.number().int() });

/** What a snapshot with memory holds beside its disk: the runtime's files of it, and what it can only be restored as. */
const MemoryPartSchema = z.object({
  runtime: RuntimeNameSchema,
  isolation: IsolationSchema,
  limits: LimitsSchema,
  files: z.array(MemoryFileSchema).min(1),
});
export type SnapshotMemory = Omit<z.infer<typeof MemoryPartSchema>, 'files'>;

const ManifestSchema = z.object({
  version: z.literal(1),
  id: z.string(),
  diskMb: z.number().int(),
  layers: z.array(z.object({ name: z.literal('disk'), file: z.literal('disk.img'), sha256: z.string().length(64), bytes: z.number().int() })).length(1),
  /** In `memory/`: a runtime's memory image, for `create` with `memoryFrom` (Runtime.saveMemory). */
  memory: MemoryPartSchema.optional(),
  createdAt: z.string(),
});
export type SnapshotManifest = z.infer<typeof ManifestSchema>;

const ID_RE = /^snap_[a-z0-9]{1,40}$/;

function checkId(id: string): void {
  if (!ID_RE.test(id)) throw new BadRequestError(`not a snapshot id: ${JSON.stringify(id)}`);
}

/** [offset, length] of every data extent of a file (SEEK_DATA/SEEK_HOLE). */
async function dataExtents(path: string, size: number): Promise<[number, number][]> {
  const out = await runTool('xfs_io', ['-r', '-c', 'seek -a -r 0', path]);
  const marks = out
    .split('\n')
    .map((l) => /^(DATA|HOLE)\s+(\d+)/.exec(l.trim()))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ data: m[1] === 'DATA', at: Number(m[2]) }));
  const extents: [number, number][] = [];
  marks.forEach((m, i) => {
    if (!m.data) return;
    const end = marks[i + 1]?.at ?? size;
    if (end > m.at) extents.push([m.at, end - m.at]);
  });
  return extents;
}

/** sha256 over (offset, length, bytes) of each data extent, in order. */
export async function layerDigest(path: string): Promise<string> {
  const { size } = await stat(path);
  const hash = createHash('sha256');
  for (const [offset, length] of await dataExtents(path, size)) {
    hash.update(`${offset}:${length}\n`);
    for await (const chunk of createReadStream(path, { start: offset, end: offset + length - 1, highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}

/** sha256 of a whole file (a memory image is dense: no holes to skip). */
async function fileDigest(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Whether the file at `path` still has the size and digest it was sealed with. */
async function unchanged(path: string, sealed: { bytes: number; sha256: string }, digest: (path: string) => Promise<string>): Promise<boolean> {
  const st = await stat(path).catch(() => undefined);
  return st !== undefined && st.size === sealed.bytes && (await digest(path)) === sealed.sha256;
}

export class SnapshotFiles {
  constructor(private readonly disks: DiskStore) {}

  private dir(id: string): string {
    return join(this.disks.storeDir, 'snapshots', id);
  }

  /** A snapshot's memory image (its `memory/` directory), for `create` with `memoryFrom`; only after `verify`. */
  memoryPath(id: string): string {
    checkId(id);
    return join(this.dir(id), 'memory');
  }

  /** Where a snapshot being taken keeps its memory image (made empty here): for the runtime's `saveMemory`, between `clone` and `seal`. */
  async memoryDirToFill(id: string): Promise<string> {
    checkId(id);
    const dir = join(`${this.dir(id)}.partial`, 'memory');
    await mkdir(dir, { mode: 0o700 });
    return dir;
  }

  /** The layer a restore clones; only after `verify`. */
  layerPath(id: string): string {
    checkId(id);
    return join(this.dir(id), 'disk.img');
  }

  /**
   * Step 1 of taking a snapshot, the only one the sandbox must be frozen for: a reflink clone of
   * its disk (itself frozen for the clone) into the snapshot's `.partial` directory.
   */
  async clone(id: string, sandboxId: string): Promise<void> {
    checkId(id);
    await this.disks.open();
    const partial = `${this.dir(id)}.partial`;
    await rm(partial, { recursive: true, force: true });
    await mkdir(partial, { mode: 0o700 });
    try {
      await this.disks.cloneTo(sandboxId, join(partial, 'disk.img'));
    } catch (err) {
      await rm(partial, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Step 2, with the sandbox running again: digest the layer, write the manifest, and rename the
   * directory into place. Either the complete snapshot exists afterwards or nothing of it does
   * (a full host disk, a failed digest: all removed).
   */
  async seal(id: string, diskMb: number, memory?: SnapshotMemory): Promise<{ manifest: SnapshotManifest; bytes: number }> {
    checkId(id);
    const partial = `${this.dir(id)}.partial`;
    try {
      const layer = join(partial, 'disk.img');
      const st = await stat(layer);
      let bytes = st.blocks * 512;
      let memoryPart: SnapshotManifest['memory'];
      if (memory) {
        const files: z.infer<typeof MemoryFileSchema>[] = [];
        for (const file of readdirSync(join(partial, 'memory')).sort()) {
          const path = join(partial, 'memory', file);
          const fst = await stat(path);
          files.push({ file, sha256: await fileDigest(path), bytes: fst.size });
          bytes += fst.blocks * 512;
        }
        if (files.length === 0) throw new ConflictError(`snapshot ${id} has no memory image`);
        memoryPart = { ...memory, files };
      }
      const manifest: SnapshotManifest = {
        version: 1,
        id,
        diskMb,
        layers: [{ name: 'disk', file: 'disk.img', sha256: await layerDigest(layer), bytes: st.size }],
        ...(memoryPart ? { memory: memoryPart } : {}),
        createdAt: new Date().toISOString(),
      };
      const fh = await open(join(partial, 'manifest.json'), 'wx', 0o600);
      try {
        await fh.writeFile(`${JSON.stringify(manifest, null, 2)}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(partial, this.dir(id));
      return { manifest, bytes };
    } catch (err) {
      await rm(partial, { recursive: true, force: true });
      throw err;
    }
  }

  /** Both steps at once (the sandbox's processes keep running). */
  async take(id: string, sandboxId: string, diskMb: number): Promise<{ manifest: SnapshotManifest; bytes: number }> {
    await this.clone(id, sandboxId);
    return this.seal(id, diskMb);
  }


  /** The manifest, after checking the layer still has the bytes it was taken with. */
  async verify(id: string): Promise<SnapshotManifest> {
    checkId(id);
    const dir = this.dir(id);
    if (!existsSync(dir)) {
      throw new NotFoundError(`the files of snapshot ${id} are missing from the disk store`, { hint: `agentbox snapshot rm ${id}, and take a new one` });
    }
    let manifest: SnapshotManifest;
    try {
      manifest = ManifestSchema.parse(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')));
    } catch {
      throw new ConflictError(`snapshot ${id} is damaged: its manifest is missing or unreadable`, { hint: `agentbox snapshot rm ${id}, and take a new one` });
    }
    const damaged = (what: string): ConflictError =>
      new ConflictError(`snapshot ${id} is damaged: its ${what} no longer matches the sha256 it was taken with`, { hint: `agentbox snapshot rm ${id}, and take a new one` });
    const layer = manifest.layers[0]!;
    if (!(await unchanged(join(dir, layer.file), layer, layerDigest))) throw damaged('disk layer');
    for (const f of manifest.memory?.files ?? []) {
      if (!(await unchanged(join(dir, 'memory', f.file), f, fileDigest))) throw damaged(`memory file ${f.file}`);
    }
    return manifest;
  }

  async remove(id: string): Promise<void> {
    checkId(id);
    await rm(this.dir(id), { recursive: true, force: true });
    await rm(`${this.dir(id)}.partial`, { recursive: true, force: true });
  }

  /** Snapshot ids with files in the store, half-made ones included (for reconciliation). */
  listIds(): string[] {
    const dir = join(this.disks.storeDir, 'snapshots');
    if (!existsSync(dir)) return [];
    return [...new Set(readdirSync(dir).map((n) => n.replace(/\.partial$/, '')))].filter((n) => ID_RE.test(n));
  }
}
