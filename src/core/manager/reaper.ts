/**
 * Keeping the store and the host in agreement: the periodic pass (ttl, idle timeout, sandboxes
 * that died on their own, idle ones to pause) and start-up reconciliation after a restart.
 */
import type { Logger } from 'pino';
import type { EgressService } from '../../egress/service.js';
import type { Metrics } from '../../observability/metrics.js';
import type { Runtime, RuntimeStatus } from '../../runtime/types.js';
import type { Store, StoredSandbox } from '../../store/store.js';
import type { DiskStore } from '../../storage/disk-store.js';
import type { SnapshotFiles } from '../../storage/snapshot-files.js';
import type { EndReason } from '../../contract/model.js';
import { reconcileSnapshots } from './snapshots.js';
import { reconcileEgress } from './egress.js';
import type { ExecRecorder } from './execs.js';
import { ACTIVE, endSandbox, type IdlePauses } from './lifecycle.js';
import { handleOf, type Runtimes } from './runtimes.js';
import type { Volumes } from './volumes.js';
import type { LifecycleEvents } from '../lifecycle-events.js';
import type { ReplicaScope } from './replica.js';
import type { WarmPools } from './pools.js';
import { keepsPools } from '../shared-warm-pool.js';

export interface ReaperDeps {
  store: Store;
  runtimes: Runtimes;
  pauses: IdlePauses;
  execs: ExecRecorder;
  egress?: EgressService | undefined;
  logger: Logger;
  metrics?: Metrics | undefined;
  volumes?: Volumes | undefined;
  /** Told of each sandbox the reaper ends. */
  events?: LifecycleEvents | undefined;
  /** Which sandboxes are this replica's to look after. */
  replica: ReplicaScope;
  /** The warm pools: the sweep leaves their members alone. */
  pools: WarmPools;
}

/** A member claimed this recently may have no row yet: its create stores one right after the claim. */
const CLAIM_GRACE_MS = 60_000;

/**
 * One pass of the reaper over the running sandboxes this replica looks after (replica.ts: its own
 * host-local ones; shared ones while it holds the lease): ttl, idle timeout, lost in the runtime, pauseAfter.
 */
export async function reapPass(d: ReaperDeps): Promise<void> {
  const now = Date.now();
  const leads = d.replica.leads('reaper', new Date(now));
  if (leads) d.replica.buryStale(now);
  if (leads && d.replica.sweepDue(now)) await sweepSharedOrphans(d);
  for (const stored of d.store.listSandboxes({ states: ['running'] })) {
    if (!d.replica.tends(stored, leads)) continue;
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
    // Not while it is being paused, woken or saved: in between, a runtime may see neither a running nor a saved sandbox.
    // Asked again after the status: a delete may have begun meanwhile, and its destroy looks like a loss.
    if (rt && stored.runtimeData && !d.pauses.changing(sb.id) && !(await rt.status(handleOf(stored))).alive && !d.pauses.changing(sb.id)) {
      await endSandbox(d, stored, 'failed', 'runtime_lost', 'reaper');
      continue;
    }
    const pauseAfter = stored.spec.pauseAfterMs;
    // Not a shared one: which sandboxes are paused is each replica's own memory, and the others would enter it frozen.
    if (rt && pauseAfter && !d.replica.shared(stored) && !d.pauses.has(sb.id) && !d.execs.busy(sb.id) && Date.parse(sb.lastActiveAt) + pauseAfter <= now) {
      await d.pauses.pause(rt, stored);
    }
  }
}

/**
 * The leader's sweep of shared runtimes (a cluster): an object no active row knows is reaped, unless
 * it is an unclaimed member of one of the leader's warm pools or was claimed less than
 * CLAIM_GRACE_MS ago. Start-up reconciliation cannot do it there (another replica's create may be
 * under way); here a cold create's row always exists before its object (`createSandbox`), and a
 * claimed member's row follows its claim at once, so an object without one is left by a replica that
 * died or a row that ended while its object stayed. Members of a pool the leader's policy no longer
 * has, and members stuck starting (the runtime reports them unpooled), go too.
 */
async function sweepSharedOrphans(d: ReaperDeps): Promise<void> {
  for (const [name, rt] of d.runtimes.entries()) {
    if (!rt.shared) continue;
    // A cluster that is not configured or not answering: nothing to sweep now (the probe says why once, at start).
    if (!(await rt.probe()).ok) continue;
    let objects;
    try {
      objects = await rt.list();
    } catch (err) {
      d.logger.warn({ runtime: name, err }, 'could not list a shared runtime\'s objects');
      continue;
    }
    const known = new Set(d.store.listSandboxes({ states: ACTIVE }).filter((s) => s.sandbox.runtime === name).map((s) => s.sandbox.id));
    const pools = d.pools.sharedKeys(name);
    for (const obj of objects) {
      if (known.has(obj.id)) continue;
      if (obj.pooled && (obj.poolKey === undefined ? !keepsPools(rt) : pools.has(obj.poolKey))) continue;
      if (obj.claimedAt && Date.now() - Date.parse(obj.claimedAt) < CLAIM_GRACE_MS) continue;
      // Asked again: a create may have stored its row since the list.
      const row = d.store.getSandbox(obj.id);
      if (row && ACTIVE.includes(row.sandbox.state)) continue;
      await rt.reap(obj.id).catch((err: unknown) => d.logger.error({ sandbox_id: obj.id, err }, 'could not reap'));
      d.store.audit({ tenant: null, actor: 'reaper', action: 'reap_orphan', sandboxId: obj.id, detail: { runtime: name } });
      d.logger.warn({ sandbox_id: obj.id, runtime: name }, 'reaped an orphan of a shared runtime');
    }
  }
}

/**
 * A starting daemon takes over what the last one left, before it serves
 * (ARCHITECTURE: Lifecycle, reaper, reconcile). Execs the store still shows running are lost: their daemon died with them.
 * For each runtime that works here, host objects the store does not know as active (warm-pool members,
 * leftovers) are reaped; each active row is adopted when its sandbox is alive (one an earlier daemon
 * froze stays paused until the next call into it), else ended with why: create_failed (the daemon
 * died while creating it), runtime_lost (it died while no daemon ran), adopt_failed (alive, but its
 * egress proxy could not be reopened). A runtime that does not work now leaves its rows as they are.
 * Then disks and snapshots of sandboxes that are gone are removed.
 */
export async function reconcile(d: {
  store: Store;
  runtimes: Runtimes;
  pauses: IdlePauses;
  egress?: EgressService | undefined;
  disks?: DiskStore | undefined;
  snapshotFiles?: SnapshotFiles | undefined;
  logger: Logger;
  metrics?: Metrics | undefined;
  events?: LifecycleEvents | undefined;
  replica: ReplicaScope;
}): Promise<void> {
  const store = d.store;
  const t0 = performance.now();
  const lostExecs = store.loseUnfinishedExecs(new Date().toISOString(), d.replica.id);
  const leads = d.replica.leads();
  // This replica's to take over: its own host-local sandboxes; shared ones are the leader's.
  const tended = (stored: StoredSandbox): boolean => d.replica.tends(stored, leads);
  if (lostExecs > 0) d.logger.warn({ execs: lostExecs }, 'execs that ran when the last daemon stopped are recorded as lost');
  const end = async (stored: StoredSandbox, reason: EndReason, rt: Runtime | undefined): Promise<void> => {
    await rt?.reap(stored.sandbox.id).catch((err: unknown) => d.logger.error({ sandbox_id: stored.sandbox.id, err }, 'could not reap'));
    await endSandbox(d, stored, 'failed', reason, 'reconcile').catch((err: unknown) => d.logger.error({ sandbox_id: stored.sandbox.id, err }, 'could not end a sandbox at start'));
  };
  for (const [name, rt] of d.runtimes.entries()) {
    const probe = await rt.probe();
    if (!probe.ok) {
      d.logger.warn({ runtime: name, reason: probe.reason }, 'runtime unavailable at start');
      continue;
    }
    // Host objects of a shared runtime are every replica's: a pool member or a create under way on
    // another replica has no active row yet, so only host-local objects are reaped as orphans here.
    const objects = rt.shared ? [] : await rt.list();
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
      const id = stored.sandbox.id;
      // A create under way elsewhere looks like one this daemon died in: only the replica that made it knows.
      if (stored.sandbox.state === 'creating' ? !d.replica.mine(stored) : !tended(stored)) continue;
      if (stored.sandbox.state === 'creating' || !stored.runtimeData) {
        await end(stored, 'create_failed', rt);
        continue;
      }
      let status: RuntimeStatus;
      try {
        status = await rt.status(handleOf(stored));
      } catch (err) {
        // Cannot tell now (the engine did not answer): the reaper asks again every pass.
        d.logger.error({ sandbox_id: id, err }, 'could not check a sandbox at start');
        continue;
      }
      if (!status.alive) {
        await end(stored, 'runtime_lost', rt);
        continue;
      }
      if (status.hibernated) d.pauses.adopt(id, 'hibernated');
      else if (status.paused) d.pauses.adopt(id, 'frozen');
    }
  }
  for (const id of await reconcileEgress({ ...d, here: (stored) => d.replica.mine(stored) && !d.replica.shared(stored) })) {
    const stored = store.getSandbox(id);
    if (stored && ACTIVE.includes(stored.sandbox.state)) {
      await end(stored, 'adopt_failed', d.runtimes.find(stored.sandbox.runtime));
    }
  }
  await reconcileDisks(d);
  await reconcileSnapshots({ ...d, mine: (sandboxId) => { const s = store.getSandbox(sandboxId); return !s || d.replica.mine(s); } });
  const active = store.listSandboxes({ states: ACTIVE }).filter(tended).length;
  d.logger.info({ active, paused: d.pauses.size, lost_execs: lostExecs, ms: Math.round(performance.now() - t0) }, 'reconciled with the host');
}

/** Disks whose sandbox is gone (a daemon killed between a create's disk and its row, or during a destroy). */
async function reconcileDisks(d: { store: Store; disks?: DiskStore | undefined; logger: Logger }): Promise<void> {
  if (!d.disks?.exists()) return;
  await d.disks.open();
  const active = new Set(d.store.listSandboxes({ states: ACTIVE }).map((s) => s.sandbox.id));
  for (const id of d.disks.list()) {
    if (active.has(id)) {
      // A daemon killed while it cloned this disk for a snapshot or a fork left it frozen.
      await d.disks.thawLeftFrozen(id).then(
        (was) => was && d.logger.warn({ sandbox_id: id }, 'thawed a disk that a stopped daemon left frozen'),
        (err: unknown) => d.logger.error({ sandbox_id: id, err }, 'could not thaw a disk'),
      );
      continue;
    }
    await d.disks.destroy(id).then(
      () => d.logger.warn({ sandbox_id: id }, 'removed the disk of a sandbox that is gone'),
      (err: unknown) => d.logger.error({ sandbox_id: id, err }, 'could not remove an orphaned disk'),
    );
  }
}
