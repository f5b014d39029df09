/**
 * A sandbox's life: created (from a warm pool or by its runtime, with its egress proxy listening
 * first), marked active by every call into it, frozen when idle past its profile's pauseAfter and
 * thawed by the next call, and ended (destroyed, proxy closed, row marked, audited) exactly once.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { EgressService } from '../../egress/service.js';
import type { Metrics } from '../../observability/metrics.js';
import type { Runtime } from '../../runtime/types.js';
import type { Store, StoredSandbox } from '../../store/store.js';
import type { EndReason, Sandbox, SandboxSpec, SandboxState } from '../../contract/model.js';
import type { Caller } from './access.js';
import type { Inflight } from './inflight.js';
import type { WarmPools } from './pools.js';
import { handleOf, type Runtimes } from './runtimes.js';
import type { Volumes } from './volumes.js';

/** States in which a sandbox holds host resources and counts against quotas. */
export const ACTIVE: SandboxState[] = ['creating', 'running'];

export function newSandboxId(): string {
  return `sbx_${randomBytes(10).toString('base64url').replace(/[-_]/g, '').slice(0, 12).toLowerCase()}${randomBytes(2).toString('hex')}`;
}

/** Activity: what the idle timeout and pauseAfter count from. */
export function markActive(store: Store, id: string): void {
  store.touch(id, new Date().toISOString());
}

/**
 * Create the sandbox for a resolved spec whose quota share is reserved. Its row is stored first
 * (in state creating), which is when `unreserve` is called: the row counts against the quota from
 * then on. A failed create leaves the row failed with reason create_failed and nothing on the host.
 */
export async function createSandbox(
  d: { store: Store; runtimes: Runtimes; pools: WarmPools; inflight: Inflight; logger: Logger; metrics?: Metrics | undefined; volumes?: Volumes | undefined },
  spec: SandboxSpec,
  egress: EgressService | undefined,
  caller: Caller,
  unreserve: () => void,
  diskFrom?: string,
): Promise<Sandbox> {
  // A pool member has an empty disk and no volumes: a sandbox from a snapshot, a fork or with volumes starts itself.
  const warm = diskFrom === undefined && !spec.volumes?.length ? d.pools.claim(spec) : undefined;
  if (warm) spec = { ...spec, id: warm.id };
  let rt: Runtime;
  try {
    rt = await d.runtimes.probed(spec.runtime);
    if (!warm) await rt.prepareImage(spec.image);
  } catch (err) {
    if (warm) await d.runtimes.find(spec.runtime)?.destroy(warm).catch(() => undefined);
    throw err;
  }
  const now = new Date();
  const sandbox: Sandbox = {
    id: spec.id,
    tenant: spec.tenant,
    image: spec.image,
    profile: spec.profile,
    runtime: spec.runtime,
    isolation: spec.isolation,
    state: 'creating',
    limits: spec.limits,
    egress: spec.egress,
    labels: spec.labels,
    createdAt: now.toISOString(),
    expiresAt: spec.ttlMs === null ? null : new Date(now.getTime() + spec.ttlMs).toISOString(),
    lastActiveAt: now.toISOString(),
    endedAt: null,
    endReason: null,
    endedBy: null,
    ...(spec.volumes?.length ? { volumes: spec.volumes } : {}),
  };
  const store = d.store;
  store.insertSandbox(sandbox, spec, spec.idleTimeoutMs);
  // The stored row counts against the quota from here on.
  unreserve();
  const log = d.logger.child({ sandbox_id: spec.id, tenant: spec.tenant });
  const t0 = performance.now();
  try {
    // The proxy listens before the sandbox starts, so its first command already has a way out.
    const egressDir = await egress?.open({ id: spec.id, tenant: spec.tenant, egress: spec.egress });
    // After the row: from here a volume rm sees this sandbox as a user.
    const volumes = (await d.volumes?.attach(spec.id, spec.tenant, spec.volumes ?? [])) ?? [];
    const handle =
      warm ??
      (await d.inflight.track(
        rt.create({ id: spec.id, image: spec.image, isolation: spec.isolation, limits: spec.limits, labels: { ...spec.labels }, ...(egressDir ? { egressDir } : {}), ...(diskFrom ? { diskFrom } : {}), ...(volumes.length ? { volumes } : {}) }),
      ));
    store.setRuntimeData(spec.id, handle.data);
    store.setState(spec.id, 'running');
    store.audit({ tenant: caller.tenant, actor: caller.actor, action: 'create', sandboxId: spec.id, detail: { image: spec.image, runtime: spec.runtime } });
    log.info({ ms: Math.round(performance.now() - t0), image: spec.image, runtime: spec.runtime, warm: Boolean(warm) }, 'sandbox created');
    d.metrics?.sandboxesCreated.inc({ runtime: spec.runtime, result: 'ok', tenant: spec.tenant });
    d.metrics?.createSeconds.observe({ runtime: spec.runtime, tenant: spec.tenant }, (performance.now() - t0) / 1000);
    return { ...sandbox, state: 'running' };
  } catch (err) {
    if (warm) await rt.destroy(warm).catch(() => undefined);
    await egress?.close(spec.id).catch(() => undefined);
    await d.volumes?.release(spec.id).catch(() => undefined);
    store.markEnded(spec.id, { state: 'failed', reason: 'create_failed', endedBy: null, at: new Date().toISOString() });
    log.warn({ err: err instanceof Error ? err.message : String(err) }, 'sandbox create failed');
    d.metrics?.sandboxesCreated.inc({ runtime: spec.runtime, result: 'failed', tenant: spec.tenant });
    throw err;
  }
}

/**
 * End a sandbox: destroy it in its runtime, close its proxy, mark its row. A sandbox that had
 * already ended keeps its first end time, reason and `endedBy` (a later delete only changes the state).
 */
export async function endSandbox(
  d: { store: Store; runtimes: Runtimes; pauses: IdlePauses; egress?: EgressService | undefined; logger: Logger; metrics?: Metrics | undefined; volumes?: Volumes | undefined },
  stored: StoredSandbox,
  state: SandboxState,
  reason: EndReason,
  endedBy: string | null,
): Promise<void> {
  const id = stored.sandbox.id;
  d.pauses.forget(id);
  const rt = d.runtimes.find(stored.sandbox.runtime);
  if (rt && stored.runtimeData) await rt.destroy(handleOf(stored));
  await d.egress?.close(id);
  await d.volumes?.release(id).catch((err: unknown) => d.logger.error({ sandbox_id: id, err }, 'could not release volumes'));
  // Another path may have ended it meanwhile (a reaper pass during a delete): then it is told once.
  if (!d.store.markEnded(id, { state, reason, endedBy, at: new Date().toISOString() })) return;
  d.store.audit({ tenant: stored.sandbox.tenant, actor: endedBy, action: state === 'deleted' ? 'delete' : 'stop', sandboxId: id, detail: { reason } });
  d.logger.info({ sandbox_id: id, reason, by: endedBy }, 'sandbox ended');
  d.metrics?.sandboxesEnded.inc({ reason, tenant: stored.sandbox.tenant });
}

/** Sandboxes frozen for being idle past their profile's pauseAfter; the next call into one thaws it. */
export class IdlePauses {
  private readonly paused = new Set<string>();

  constructor(private readonly d: { store: Store; runtimes: Runtimes; logger: Logger }) {}

  /** Whether the reaper froze this sandbox for idleness. */
  has(id: string): boolean {
    return this.paused.has(id);
  }

  get size(): number {
    return this.paused.size;
  }

  /** A sandbox an earlier daemon froze (its runtime says so at start-up): the next call into it thaws it. */
  adopt(id: string): void {
    this.paused.add(id);
  }

  /** The sandbox ended: nothing to thaw. */
  forget(id: string): void {
    this.paused.delete(id);
  }

  /** Thaw a sandbox paused for idleness before anything enters it (an exec into a frozen cgroup would hang). */
  async wake(stored: StoredSandbox): Promise<void> {
    const id = stored.sandbox.id;
    if (!this.paused.delete(id)) return;
    await this.d.runtimes.of(stored).resume?.(handleOf(stored));
    this.d.logger.info({ sandbox_id: id }, 'sandbox resumed');
  }

  /** Freeze an idle sandbox, unless a call came in meanwhile. */
  async pause(rt: Runtime, stored: StoredSandbox): Promise<void> {
    const id = stored.sandbox.id;
    this.paused.add(id);
    await rt.pause?.(handleOf(stored));
    // Woken while the freeze was in flight (docker pause is a request): its thaw may have landed
    // first, so thaw again.
    if (!this.paused.has(id)) {
      await rt.resume?.(handleOf(stored));
      return;
    }
    // Activity that raced ahead of the flag shows as a newer lastActiveAt: thaw right away.
    const fresh = this.d.store.getSandbox(id);
    if (fresh && fresh.sandbox.lastActiveAt !== stored.sandbox.lastActiveAt) {
      await this.wake(fresh);
      return;
    }
    this.d.logger.info({ sandbox_id: id }, 'sandbox paused after being idle');
  }
}
