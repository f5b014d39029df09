/**
 * Named volumes (ARCHITECTURE.md, "Volumes"): tenant-owned filesystems that outlive sandboxes.
 *
 * A volume is mounted on the host (storage/volume-store.ts) exactly while something uses it: each
 * creating or running sandbox that mounts it, and each file operation on it through the API. Those
 * users are counted here per volume (in memory, rebuilt from the store's active mounts on start);
 * the first one mounts, the last one unmounts. One operation per volume at a time (a per-key
 * queue), so a mount, an unmount and a remove never interleave.
 *
 * Every method checks the caller: its scope, its tenant (another tenant's volume is not_found, as a
 * name that does not exist), and that it is not limited to labelled sandboxes (a volume is the whole
 * tenant's, so such a token could reach what sandboxes outside its labels wrote).
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { ConflictError, ForbiddenError, NotFoundError } from '../../contract/errors.js';
import type { DirEntry } from '../../contract/model.js';
import { checkVolumeName, DEFAULT_VOLUME_MB, type CreateVolumeRequest, type Volume, type VolumeMount } from '../../contract/volumes.js';
import type { RuntimeVolume } from '../../runtime/types.js';
import type { VolumeStore } from '../../storage/volume-store.js';
import type { Store } from '../../store/store.js';
import type { StoredVolume } from '../../store/volumes.js';
import { needTenantWide, type Caller, type Scope } from './access.js';
import type { Inflight } from './inflight.js';

/** File operations on a mounted volume (runtime/volume-files.ts VolumeFiles, confined to the volume). */
export interface VolumeFileOps {
  readFile(root: string, path: string, volume: string): Promise<Readable>;
  writeFile(root: string, path: string, data: Readable, volume: string): Promise<number>;
  listDir(root: string, path: string, volume: string): Promise<DirEntry[]>;
  removePath(root: string, path: string, volume: string): Promise<void>;
}

export interface VolumesDeps {
  /** Whether a sandbox runs on this daemon's host (replica.ts). @default all */
  here?: ((sandboxId: string) => boolean) | undefined;
  store: Store;
  volumes: VolumeStore;
  files: VolumeFileOps;
  logger: Logger;
  /** Writes are waited for by the manager's close(), as sandbox file writes are. */
  inflight?: Inflight;
}

export function newVolumeId(): string {
  return `vol_${randomBytes(8).toString('hex')}`;
}

/** Runs async work one at a time per key. */
class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const next = (this.tails.get(key) ?? Promise.resolve()).then(fn);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    try {
      return await next;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

const NOT_FOUND_HINT = 'see your volumes with agentbox volume ls; make one with agentbox volume create NAME';

export class Volumes {
  /** Volume id -> who uses it now: sandbox ids, and `op:N` for a file operation in flight. */
  private readonly users = new Map<string, Set<string>>();
  private readonly queue = new KeyedQueue();
  private ops = 0;

  constructor(private readonly d: VolumesDeps) {}

  // --- the API (routes, SDK, CLI, MCP) ---

  async create(req: CreateVolumeRequest, caller: Caller): Promise<Volume> {
    const tenant = this.callerTenant(caller, 'manage');
    const name = checkVolumeName(req.name);
    const sizeMb = req.sizeMb ?? DEFAULT_VOLUME_MB;
    return this.queue.run(nameKey(tenant, name), async () => {
      if (this.d.store.volumes.get(tenant, name)) {
        throw new ConflictError(`volume ${name} exists`, { hint: `mount it (--volume ${name}:/data), or remove it first: agentbox volume rm ${name}` });
      }
      const v: StoredVolume = { id: newVolumeId(), tenant, name, sizeMb, createdAt: new Date().toISOString() };
      await this.d.volumes.create(v, sizeMb);
      try {
        this.d.store.volumes.insert(v);
      } catch (err) {
        await this.d.volumes.remove(v).catch(() => undefined);
        throw err;
      }
      this.d.store.audit({ tenant, actor: caller.actor, action: 'volume_create', sandboxId: null, detail: { name, sizeMb } });
      this.d.logger.info({ tenant, volume: name, size_mb: sizeMb }, 'volume created');
      return this.toVolume(v);
    });
  }

  list(caller: Caller): Volume[] {
    const tenant = this.callerTenant(caller, 'read');
    return this.d.store.volumes.list(tenant).map((v) => this.toVolume(v));
  }

  get(name: string, caller: Caller): Volume {
    return this.toVolume(this.find(this.callerTenant(caller, 'read'), name));
  }

  /** Refused (conflict) while a creating or running sandbox mounts it, or a file operation is on it. */
  async remove(name: string, caller: Caller): Promise<Volume> {
    const tenant = this.callerTenant(caller, 'manage');
    this.find(tenant, name);
    return this.queue.run(nameKey(tenant, name), async () => {
      const v = this.find(tenant, name);
      return this.queue.run(idKey(v.id), async () => {
        const sandboxes = this.d.store.volumes.activeUsers(v.id);
        if (sandboxes.length > 0) {
          const one = sandboxes.length === 1;
          throw new ConflictError(`volume ${name} is mounted by ${one ? 'sandbox' : 'sandboxes'} ${sandboxes.join(', ')}`, {
            hint: `remove ${one ? 'it' : 'them'} first: agentbox rm ${sandboxes.join(' ')}`,
          });
        }
        if ((this.users.get(v.id)?.size ?? 0) > 0) throw new ConflictError(`volume ${name} is in use by a file operation`, { hint: 'retry in a moment' });
        const out = this.toVolume(v);
        // The row first: a crash before the image is gone leaves an orphan image, removed at the next start.
        this.d.store.volumes.delete(v.id);
        await this.d.volumes.remove(v);
        this.d.store.audit({ tenant, actor: caller.actor, action: 'volume_delete', sandboxId: null, detail: { name } });
        this.d.logger.info({ tenant, volume: name }, 'volume removed');
        return out;
      });
    });
  }

  /** The bytes of a file, streamed; the volume stays mounted until the stream closes. */
  async readFile(name: string, path: string, caller: Caller): Promise<Readable> {
    const v = this.find(this.callerTenant(caller, 'files'), name);
    const op = `op:${++this.ops}`;
    const root = await this.hold(v, op);
    try {
      const stream = await this.d.files.readFile(root, path, v.name);
      stream.once('close', () => void this.unhold(v.id, op).catch((err: unknown) => this.d.logger.warn({ err, volume: v.name }, 'could not unmount a volume')));
      return stream;
    } catch (err) {
      await this.unhold(v.id, op);
      throw err;
    }
  }

  writeFile(name: string, path: string, data: Readable, caller: Caller): Promise<number> {
    const written = this.onFiles(name, caller, (root, v) => this.d.files.writeFile(root, path, data, v));
    return this.d.inflight ? this.d.inflight.track(written) : written;
  }

  listDir(name: string, path: string, caller: Caller): Promise<DirEntry[]> {
    return this.onFiles(name, caller, (root, v) => this.d.files.listDir(root, path, v));
  }

  removePath(name: string, path: string, caller: Caller): Promise<void> {
    return this.onFiles(name, caller, (root, v) => this.d.files.removePath(root, path, v));
  }

  // --- sandboxes ---

  /** Before a create: every volume asked for is the caller's (not_found otherwise). */
  checkMounts(mounts: readonly VolumeMount[], caller: Caller): void {
    const tenant = this.callerTenant(caller, 'manage');
    for (const m of mounts) this.find(tenant, m.name);
  }

  /**
   * A sandbox whose row exists (state creating) is about to start: record its mounts (from now on a
   * remove is refused), mount each volume, and say where for the runtime. On failure nothing is held.
   */
  async attach(sandboxId: string, tenant: string, mounts: readonly VolumeMount[]): Promise<RuntimeVolume[]> {
    if (mounts.length === 0) return [];
    const found = mounts.map((m) => ({ m, v: this.find(tenant, m.name) }));
    this.d.store.volumes.addMounts(found.map(({ m, v }) => ({ sandboxId, volumeId: v.id, name: m.name, target: m.target, readOnly: m.readOnly })));
    try {
      const out: RuntimeVolume[] = [];
      for (const { m, v } of found) out.push({ source: await this.hold(v, sandboxId), target: m.target, readOnly: m.readOnly });
      return out;
    } catch (err) {
      await this.release(sandboxId);
      throw err;
    }
  }

  /** The sandbox ended (or never started): it no longer uses its volumes; the last user unmounts. */
  async release(sandboxId: string): Promise<void> {
    const ids = new Set(this.d.store.volumes.mountsOf(sandboxId).map((m) => m.volumeId));
    for (const id of ids) await this.unhold(id, sandboxId);
  }

  /**
   * At start, after the sandboxes were reconciled: the users are the active sandboxes' mounts; a
   * volume mounted with none is unmounted, one in use is mounted if it is not (the host rebooted);
   * images no volume row names (a crash during a create or a remove) are deleted.
   */
  async reconcile(): Promise<void> {
    if (!this.d.volumes.exists()) return;
    await this.d.volumes.open();
    this.users.clear();
    for (const m of this.d.store.volumes.activeMounts()) {
      // Another replica's sandboxes mount volumes of its own host.
      if (this.d.here && !this.d.here(m.sandboxId)) continue;
      const set = this.users.get(m.volumeId) ?? new Set<string>();
      set.add(m.sandboxId);
      this.users.set(m.volumeId, set);
    }
    const rows = this.d.store.volumes.list();
    for (const id of this.d.volumes.mounted()) {
      if (this.users.has(id)) continue;
      await this.d.volumes.unmount(id).then(
        () => this.d.logger.info({ volume_id: id }, 'unmounted a volume no sandbox uses'),
        (err: unknown) => this.d.logger.error({ err, volume_id: id }, 'could not unmount a volume'),
      );
    }
    for (const v of rows) {
      if (!this.users.has(v.id) || this.d.volumes.isMounted(v.id)) continue;
      await this.d.volumes.mount(v).catch((err: unknown) => this.d.logger.error({ err, volume: v.name, tenant: v.tenant }, 'could not mount a volume in use'));
    }
    const named = new Set(rows.map((v) => `${v.tenant}/${v.name}`));
    for (const img of this.d.volumes.images()) {
      if (named.has(`${img.tenant}/${img.name}`)) continue;
      await this.d.volumes.removeImage(img.tenant, img.name);
      this.d.logger.warn({ tenant: img.tenant, volume: img.name }, 'removed the image of a volume that does not exist');
    }
  }

  // --- internals ---

  private callerTenant(caller: Caller, scope: Scope): string {
    needTenantWide(caller, scope, 'use volumes');
    if (caller.labels) {
      throw new ForbiddenError('this token is limited to labelled sandboxes, and volumes belong to the whole tenant', { hint: 'use a token without a label selector for volumes' });
    }
    return caller.tenant;
  }

  private find(tenant: string, name: string): StoredVolume {
    checkVolumeName(name);
    const v = this.d.store.volumes.get(tenant, name);
    if (!v) throw new NotFoundError(`no volume ${name}`, { hint: NOT_FOUND_HINT });
    return v;
  }

  private toVolume(v: StoredVolume): Volume {
    return { name: v.name, sizeMb: v.sizeMb, createdAt: v.createdAt, usedBy: this.d.store.volumes.activeUsers(v.id) };
  }

  /** Count `user` in and make sure the volume is mounted; returns the mount. */
  private hold(v: StoredVolume, user: string): Promise<string> {
    return this.queue.run(idKey(v.id), async () => {
      // Removed while this waited: as if it never existed.
      if (this.d.store.volumes.getById(v.id) === undefined) throw new NotFoundError(`no volume ${v.name}`, { hint: NOT_FOUND_HINT });
      const set = this.users.get(v.id) ?? new Set<string>();
      set.add(user);
      this.users.set(v.id, set);
      try {
        return await this.d.volumes.mount(v);
      } catch (err) {
        set.delete(user);
        if (set.size === 0) this.users.delete(v.id);
        throw err;
      }
    });
  }

  /** Count `user` out; unmount when it was the last (and no other active sandbox is recorded on it). */
  private unhold(id: string, user: string): Promise<void> {
    return this.queue.run(idKey(id), async () => {
      const set = this.users.get(id);
      set?.delete(user);
      if (set && set.size > 0) return;
      this.users.delete(id);
      if (this.d.store.volumes.activeUsers(id).some((s) => s !== user)) return;
      await this.d.volumes.unmount(id);
    });
  }

  private async onFiles<T>(name: string, caller: Caller, fn: (root: string, volume: string) => Promise<T>): Promise<T> {
    const v = this.find(this.callerTenant(caller, 'files'), name);
    const op = `op:${++this.ops}`;
    const root = await this.hold(v, op);
    try {
      return await fn(root, v.name);
    } finally {
      await this.unhold(v.id, op);
    }
  }
}

function nameKey(tenant: string, name: string): string {
  return `name:${tenant}/${name}`;
}

function idKey(id: string): string {
  return `id:${id}`;
}
