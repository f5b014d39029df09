/**
 * Snapshots and forks of a sandbox's disk (ARCHITECTURE.md, "Sandbox disks"). Both are reflink
 * clones of the disk taken while the sandbox is frozen (its processes, then its filesystem), so
 * they cost milliseconds whatever the workspace holds; memory is not part of either.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { BadRequestError, ConflictError, NotFoundError, QuotaExceededError, RuntimeUnavailableError } from '../../contract/errors.js';
import type { Snapshot } from '../../contract/model.js';
import type { CreateSandboxRequest } from '../../contract/requests.js';
import type { Metrics } from '../../observability/metrics.js';
import type { Policy } from '../../policy/schema.js';
import type { DiskStore } from '../../storage/disk-store.js';
import type { SnapshotFiles, SnapshotMemory } from '../../storage/snapshot-files.js';
import type { Runtime } from '../../runtime/types.js';
import type { Store, StoredSandbox } from '../../store/store.js';
import { labelsMatch, type Caller } from './access.js';
import type { IdlePauses } from './lifecycle.js';
import { handleOf, type Runtimes } from './runtimes.js';
import { isUniqueViolation } from '../../store/sql-db.js';

export interface SnapshotDeps {
  store: Store;
  runtimes: Runtimes;
  pauses: IdlePauses;
  policy: Policy;
  disks: DiskStore | undefined;
  snapshotFiles: SnapshotFiles | undefined;
  logger: Logger;
  metrics?: Metrics | undefined;
}

const MiB = 1024 * 1024;

export function newSnapshotId(): string {
  return `snap_${randomBytes(10).toString('base64url').replace(/[-_]/g, '').slice(0, 12).toLowerCase()}${randomBytes(2).toString('hex')}`;
}

function requireDisks(d: SnapshotDeps): { disks: DiskStore; files: SnapshotFiles } {
  if (!d.disks || !d.snapshotFiles) throw new RuntimeUnavailableError('this agentbox runs without a disk store, so it cannot snapshot or fork', { hint: 'run the full daemon (agentbox serve)' });
  return { disks: d.disks, files: d.snapshotFiles };
}

/**
 * Run `fn` with the sandbox's processes frozen (when its runtime can), so what is on its disk is
 * what its programs last wrote; the disk itself is frozen by the clone.
 */
async function frozen<T>(d: SnapshotDeps, stored: StoredSandbox, fn: () => Promise<T>): Promise<T> {
  const rt = d.runtimes.find(stored.sandbox.runtime);
  const handle = handleOf(stored);
  if (rt?.withDiskFrozen) return rt.withDiskFrozen(handle, fn);
  const pause = rt?.pause && rt.resume && !d.pauses.has(stored.sandbox.id) ? rt : undefined;
  await pause?.pause!(handle);
  try {
    return await fn();
  } finally {
    await pause?.resume!(handle).catch((err: unknown) => d.logger.error({ sandbox_id: stored.sandbox.id, err }, 'could not thaw after a snapshot'));
  }
}

/**
 * The runtime of a sandbox whose memory can be saved (hibernate, copy, wake; and kept in a snapshot
 * when `keep`), or a BadRequestError saying why not.
 */
async function memoryRuntime(d: SnapshotDeps, stored: StoredSandbox, what: string, hint: string, keep: boolean): Promise<Required<Pick<Runtime, 'hibernate' | 'wake' | 'copyMemory' | 'dropMemory'>> & Runtime> {
  const sb = stored.sandbox;
  const rt = d.runtimes.of(stored);
  if (!rt.canHibernate || !rt.hibernate || !rt.wake || !rt.copyMemory || !rt.dropMemory || (keep && !rt.saveMemory)) throw new BadRequestError(`the ${rt.name} runtime cannot ${what}`, { hint });
  const can = await rt.canHibernate({ isolation: sb.isolation, network: sb.egress.mode !== 'none', volumes: Boolean(sb.volumes?.length) });
  if (!can.ok) throw new BadRequestError(`sandbox ${sb.id} cannot ${what.replace(/a sandbox's/, 'its')}: ${can.reason ?? 'its runtime cannot save it'}`, { hint: can.hint ?? hint });
  return rt as Required<Pick<Runtime, 'hibernate' | 'wake' | 'copyMemory' | 'dropMemory'>> & Runtime;
}

/**
 * A snapshot's disk and, with memory, its memory image: the sandbox hibernated for both (the
 * memory image and the disk of the same moment), then woken; without memory, frozen for the clone.
 */
async function captureForSnapshot(d: SnapshotDeps, files: SnapshotFiles, id: string, stored: StoredSandbox, memory: boolean): Promise<SnapshotMemory | undefined> {
  const sb = stored.sandbox;
  if (!memory) {
    await frozen(d, stored, () => files.clone(id, sb.id));
    return undefined;
  }
  const rt = await memoryRuntime(d, stored, "snapshot a sandbox's memory", 'snapshot without memory (files only), or use a microvm sandbox without egress or volumes', true);
  const handle = handleOf(stored);
  await d.pauses.exclusive(stored, async () => {
    await rt.hibernate(handle);
    try {
      await files.clone(id, sb.id);
      const image = await rt.copyMemory(handle);
      try {
        await rt.saveMemory!(image, await files.memoryDirToFill(id));
      } catch (err) {
        await rt.dropMemory(image).catch(() => undefined);
        throw err;
      }
    } finally {
      await rt.wake(handle);
    }
  });
  return { runtime: sb.runtime, isolation: sb.isolation, limits: sb.limits };
}

export async function takeSnapshot(d: SnapshotDeps, stored: StoredSandbox, name: string | undefined, caller: Caller, opts: { memory?: boolean } = {}): Promise<Snapshot> {
  const { files } = requireDisks(d);
  const sb = stored.sandbox;
  const memory = opts.memory === true;
  const quotaMb = d.policy.tenants?.find((t) => t.name === sb.tenant)?.quotas?.snapshotsMb;
  const usedMb = d.store.snapshots.tenantBytes(sb.tenant) / MiB;
  if (quotaMb !== undefined && usedMb >= quotaMb) {
    throw new QuotaExceededError(`tenant ${sb.tenant} has ${Math.round(usedMb)} MB of snapshots, its quota is ${quotaMb} MB`, { hint: 'remove snapshots you no longer need: agentbox snapshot ls, agentbox snapshot rm SNAP' });
  }
  const id = newSnapshotId();
  const createdAt = new Date().toISOString();
  try {
    d.store.snapshots.begin({ id, tenant: sb.tenant, name: name ?? null, sandboxId: sb.id, image: sb.image, diskMb: sb.limits.diskMb, createdAt, labels: sb.labels, memory });
  } catch (err) {
    if (isUniqueViolation(err)) {
      throw new ConflictError(`a snapshot named ${name} exists already`, { hint: 'pick another --name, or remove the old one: agentbox snapshot rm' });
    }
    throw err;
  }
  const t0 = performance.now();
  try {
    // Frozen (or, with memory, hibernated) only for the copies; the digests are taken of the copies, with the sandbox running again.
    const memoryPart = await captureForSnapshot(d, files, id, stored, memory);
    const { manifest, bytes } = await files.seal(id, sb.limits.diskMb, memoryPart);
    const sha256 = manifest.layers[0]!.sha256;
    if (quotaMb !== undefined && usedMb + bytes / MiB > quotaMb) {
      throw new QuotaExceededError(`a snapshot of ${sb.id} holds ${Math.ceil(bytes / MiB)} MB; with it tenant ${sb.tenant} would have ${Math.ceil(usedMb + bytes / MiB)} MB of snapshots, over its quota of ${quotaMb} MB`, {
        hint: 'remove snapshots you no longer need (agentbox snapshot ls, agentbox snapshot rm SNAP), or free space in the sandbox first',
      });
    }
    if (!d.store.snapshots.markReady(id, bytes, sha256)) throw new ConflictError(`snapshot ${id} was removed while it was being taken`);
    d.store.audit({ tenant: sb.tenant, actor: caller.actor, action: 'snapshot', sandboxId: sb.id, detail: { snapshot: id, bytes, memory } });
    d.logger.info({ sandbox_id: sb.id, snapshot: id, bytes, memory, ms: Math.round(performance.now() - t0) }, 'snapshot taken');
    d.metrics?.snapshotBytes.inc({ tenant: sb.tenant }, bytes);
    d.metrics?.snapshotSeconds.observe((performance.now() - t0) / 1000);
    return { id, tenant: sb.tenant, name: name ?? null, sandboxId: sb.id, image: sb.image, diskMb: sb.limits.diskMb, bytes, sha256, labels: sb.labels, memory, createdAt };
  } catch (err) {
    d.store.snapshots.remove(id);
    await files.remove(id).catch(() => undefined);
    throw err;
  }
}

/** A ready snapshot of the caller's tenant, by id or by name; not_found for anything else. */
export function findSnapshot(store: Store, ref: string, caller: Caller): Snapshot {
  const snap = ref.startsWith('snap_') ? store.snapshots.find(ref, caller.tenant) : store.snapshots.findByName(ref, caller.tenant);
  // A token limited to labelled sandboxes sees the snapshots of those only (their files are those sandboxes').
  if (!snap || !labelsMatch(snap.labels, caller.labels)) throw new NotFoundError(`no snapshot ${ref}`, { hint: 'agentbox snapshot ls lists yours' });
  return snap;
}

/** The caller's tenant's snapshots it may see, newest first. */
export function listSnapshots(store: Store, caller: Caller): Snapshot[] {
  return store.snapshots.listReady(caller.tenant).filter((s) => labelsMatch(s.labels, caller.labels));
}

export async function removeSnapshot(d: SnapshotDeps, snap: Snapshot, caller: Caller): Promise<void> {
  const { files } = requireDisks(d);
  // The row first: from then on nothing restores it, and its files are only garbage.
  d.store.snapshots.remove(snap.id);
  await files.remove(snap.id);
  d.store.audit({ tenant: snap.tenant, actor: caller.actor, action: 'snapshot_rm', sandboxId: snap.sandboxId, detail: { snapshot: snap.id } });
}

/**
 * The create request and the disk to start from for `create --snapshot`: its image unless the
 * request names the same, its diskMb, and its layer, verified against its manifest first. A snapshot
 * with memory also gives its memory image, and its runtime, isolation and limits (the only ones its
 * processes can go on in).
 */
export async function restoreSource(d: SnapshotDeps, req: CreateSandboxRequest & { snapshot: string }, caller: Caller): Promise<{ req: CreateSandboxRequest; diskFrom: string; memoryFrom?: string }> {
  const { files } = requireDisks(d);
  const snap = findSnapshot(d.store, req.snapshot, caller);
  if (req.image !== undefined && req.image !== snap.image) {
    throw new ConflictError(`snapshot ${snap.id} was taken of image ${snap.image}, not ${req.image}`, { hint: `leave out --image (it defaults to ${snap.image})` });
  }
  if (req.limits?.diskMb !== undefined && req.limits.diskMb !== snap.diskMb) {
    throw new ConflictError(`snapshot ${snap.id} holds a ${snap.diskMb} MB disk; a sandbox restored from it has diskMb ${snap.diskMb}`, { hint: 'leave out the disk limit' });
  }
  const manifest = await files.verify(snap.id);
  const { snapshot: _snapshot, ...rest } = req;
  const m = manifest.memory;
  if (!m) return { req: { ...rest, image: snap.image, limits: { ...req.limits, diskMb: snap.diskMb } }, diskFrom: files.layerPath(snap.id) };
  const asked = { runtime: req.runtime, isolation: req.isolation, ...req.limits };
  const kept = { runtime: m.runtime, isolation: m.isolation, ...m.limits };
  for (const [k, v] of Object.entries(asked)) {
    if (v !== undefined && v !== kept[k as keyof typeof kept]) {
      throw new ConflictError(`snapshot ${snap.id} holds the memory of a ${m.runtime} sandbox with ${k} ${String(kept[k as keyof typeof kept])}; its processes go on only in the same kind of sandbox`, { hint: `leave out ${k} (it defaults to the snapshot's)` });
    }
  }
  return { req: { ...rest, image: snap.image, runtime: m.runtime, isolation: m.isolation, limits: m.limits }, diskFrom: files.layerPath(snap.id), memoryFrom: files.memoryPath(snap.id) };
}

/** What a fork child is asked for: its parent's image, runtime, isolation, limits, egress, env and labels. */
export function forkRequest(parent: StoredSandbox): CreateSandboxRequest {
  const sb = parent.sandbox;
  return {
    image: sb.image,
    ...(sb.profile ? { profile: sb.profile } : {}),
    runtime: sb.runtime,
    isolation: sb.isolation,
    limits: sb.limits,
    egress: { mode: sb.egress.mode, allow: sb.egress.allow },
    env: parent.spec.env,
    labels: sb.labels,
  };
}

/** A frozen-consistent clone of the parent's disk for its fork children; the caller drops it. */
export async function forkSource(d: SnapshotDeps, parent: StoredSandbox): Promise<string> {
  const { disks } = requireDisks(d);
  return frozen(d, parent, () => disks.cloneToScratch(parent.sandbox.id));
}

/**
 * A fork with memory: the parent is hibernated (processes and memory saved to disk, which also holds
 * its files still), its disk cloned and its memory image copied for the children, and woken again.
 * The parent is stopped for that long (about a second when small; BENCHMARKS.md); its children start from the image.
 */
export async function memoryForkSource(d: SnapshotDeps, parent: StoredSandbox): Promise<{ source: string; memory: string }> {
  const { disks } = requireDisks(d);
  const sb = parent.sandbox;
  const rt = await memoryRuntime(d, parent, "fork a sandbox's memory", 'fork without --memory (files only), or fork a microvm or gVisor sandbox without egress or volumes', false);
  const handle = handleOf(parent);
  return d.pauses.exclusive(parent, async () => {
    await rt.hibernate(handle);
    let source: string | undefined;
    try {
      source = await disks.cloneToScratch(sb.id);
      return { source, memory: await rt.copyMemory(handle) };
    } catch (err) {
      if (source) await disks.dropScratch(source);
      throw err;
    } finally {
      await rt.wake(handle);
    }
  });
}

/** After a restart: half-made snapshots (rows and files) and scratch clones are removed. */
export async function reconcileSnapshots(d: {
  store: Store;
  disks?: DiskStore | undefined;
  snapshotFiles?: SnapshotFiles | undefined;
  logger: Logger;
  /** Whether a sandbox's snapshots are taken by this daemon (replica.ts); another replica may be taking one now. @default all */
  mine?: ((sandboxId: string) => boolean) | undefined;
}): Promise<void> {
  if (!d.disks?.exists() || !d.snapshotFiles) return;
  await d.disks.open();
  await d.disks.clearScratch();
  for (const { id, sandboxId } of d.store.snapshots.unfinished()) {
    if (d.mine && !d.mine(sandboxId)) continue;
    d.store.snapshots.remove(id);
    d.logger.warn({ snapshot: id }, 'removed a snapshot that was not finished when the daemon stopped');
  }
  const known = d.store.snapshots.allIds();
  for (const id of d.snapshotFiles.listIds()) {
    if (!known.has(id)) await d.snapshotFiles.remove(id);
  }
}
