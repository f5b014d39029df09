/**
 * Keeping the store and the host in agreement: the periodic pass (ttl, idle timeout, sandboxes
 * that died on their own, idle ones to freeze) and start-up reconciliation after a restart.
 */
import type { Logger } from 'pino';
import type { EgressService } from '../../egress/service.js';
import type { Metrics } from '../../observability/metrics.js';
import type { Store } from '../../store/store.js';
import type { DiskStore } from '../../storage/disk-store.js';
import type { SnapshotFiles } from '../../storage/snapshot-files.js';
import { reconcileSnapshots } from './snapshots.js';
import { reconcileEgress } from './egress.js';
import type { ExecRecorder } from './execs.js';
import { ACTIVE, endSandbox, type IdlePauses } from './lifecycle.js';
import { handleOf, type Runtimes } from './runtimes.js';
import type { Volumes } from './volumes.js';

export interface ReaperDeps {
  store: Store;
  runtimes: Runtimes;
  pauses: IdlePauses;
  execs: ExecRecorder;
  egress?: EgressService | undefined;
  logger: Logger;
  metrics?: Metrics | undefined;
  volumes?: Volumes | undefined;
}

/** One pass of the reaper over the running sandboxes: ttl, idle timeout, lost in the runtime, pauseAfter. */
export async function reapPass(d: ReaperDeps): Promise<void> {
  const now = Date.now();
  for (const stored of d.store.listSandboxes({ states: ['running'] })) {
    const sb = stored.sandbox;
    if (sb.expiresAt && Date.parse(sb.expiresAt) <= now) {
      await endSandbox(d, stored, 'stopped', 'ttl_expired', 'reaper');
      continue;
    }
    if (stored.idleTimeoutMs !== null && Date.parse(sb.lastActiveAt) + stored.idleTimeoutMs <= now && !d.execs.busy(sb.id)) {
      await endSandbox(d, stored, 'stopped', 'idle_timeout', 'reaper');
      continue;
    }
    const rt = d.runtimes.find(sb.runtime);
    if (rt && stored.runtimeData && !(await rt.status(handleOf(stored))).alive) {
      await endSandbox(d, stored, 'failed', 'runtime_lost', 'reaper');
      continue;
    }
    const pauseAfter = stored.spec.pauseAfterMs;
    if (rt?.pause && pauseAfter && !d.pauses.has(sb.id) && !d.execs.busy(sb.id) && Date.parse(sb.lastActiveAt) + pauseAfter <= now) {
      await d.pauses.pause(rt, stored);
    }
  }
}

/** After a restart: rows whose sandbox is gone become runtime_lost; host objects nobody knows are reaped. */
export async function reconcile(d: { store: Store; runtimes: Runtimes; egress?: EgressService | undefined; disks?: DiskStore | undefined; snapshotFiles?: SnapshotFiles | undefined; logger: Logger }): Promise<void> {
  const store = d.store;
  for (const [name, rt] of d.runtimes.entries()) {
    const probe = await rt.probe();
    if (!probe.ok) {
      d.logger.warn({ runtime: name, reason: probe.reason }, 'runtime unavailable at start');
      continue;
    }
    const objects = await rt.list();
    const known = new Set(store.listSandboxes({ states: ACTIVE }).filter((s) => s.sandbox.runtime === name).map((s) => s.sandbox.id));
    for (const obj of objects) {
      if (known.has(obj.id) && obj.alive) continue;
      await rt.reap(obj.id).catch((err: unknown) => d.logger.error({ sandbox_id: obj.id, err }, 'could not reap'));
      if (!known.has(obj.id)) {
        store.audit({ tenant: null, actor: 'reconcile', action: 'reap_orphan', sandboxId: obj.id, detail: null });
        d.logger.warn({ sandbox_id: obj.id, runtime: name }, 'reaped orphan');
      }
    }
    for (const stored of store.listSandboxes({ states: ACTIVE }).filter((s) => s.sandbox.runtime === name)) {
      const alive = stored.runtimeData ? (await rt.status(handleOf(stored))).alive : false;
      if (!alive) {
        await rt.reap(stored.sandbox.id).catch(() => undefined);
        store.markEnded(stored.sandbox.id, { state: 'failed', reason: 'runtime_lost', endedBy: 'reconcile', at: new Date().toISOString() });
      }
    }
  }
  await reconcileEgress(d);
  await reconcileDisks(d);
  await reconcileSnapshots(d);
}

/** Disks whose sandbox is gone (a daemon killed between a create's disk and its row, or during a destroy). */
async function reconcileDisks(d: { store: Store; disks?: DiskStore | undefined; logger: Logger }): Promise<void> {
  if (!d.disks?.exists()) return;
  await d.disks.open();
  const active = new Set(d.store.listSandboxes({ states: ACTIVE }).map((s) => s.sandbox.id));
  for (const id of d.disks.list()) {
    if (active.has(id)) continue;
    await d.disks.destroy(id).then(
      () => d.logger.warn({ sandbox_id: id }, 'removed the disk of a sandbox that is gone'),
      (err: unknown) => d.logger.error({ sandbox_id: id, err }, 'could not remove an orphaned disk'),
    );
  }
}
