/**
 * A sandbox's life: created (from a warm pool or by its runtime, with its egress proxy listening
 * first), marked active by every call into it, frozen when idle past its profile's pauseAfter and
 * thawed by the next call, and ended (destroyed, proxy closed, row marked, audited) exactly once.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { EgressService } from '../../egress/service.js';
import type { CreateKind, Metrics } from '../../observability/metrics.js';
import type { Tracing } from '../../observability/tracing.js';
import { BadRequestError, ConflictError, QuotaExceededError } from '../../contract/errors.js';
import type { Runtime } from '../../runtime/types.js';
import type { Store, StoredSandbox } from '../../store/store.js';
import type { EndReason, Sandbox, SandboxSpec, SandboxState } from '../../contract/model.js';
import { tell, type LifecycleEvents } from '../lifecycle-events.js';
import type { Caller } from './access.js';
import type { Inflight } from './inflight.js';
import type { WarmPools } from './pools.js';
import { handleOf, type Runtimes } from './runtimes.js';
import type { Volumes } from './volumes.js';
import type { UsageSampler } from './usage-sampler.js';
import type { ReplicaScope } from './replica.js';
import { quotaError, type QuotaLedger } from './admission.js';

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
  d: { store: Store; runtimes: Runtimes; pools: WarmPools; inflight: Inflight; logger: Logger; metrics?: Metrics | undefined; volumes?: Volumes | undefined; events?: LifecycleEvents | undefined; tracing?: Tracing | undefined; replica?: ReplicaScope | undefined; quotas?: QuotaLedger | undefined },
  spec: SandboxSpec,
  egress: EgressService | undefined,
  caller: Caller,
  unreserve: () => void,
  diskFrom?: string,
  memoryFrom?: string,
  /** What its disk comes from, for the metrics: its image (cold, or warm when a pool member is claimed), a snapshot, a fork. */
  origin: Exclude<CreateKind, 'warm'> = 'cold',
): Promise<Sandbox> {
  // A pool member has an empty disk and no volumes: a sandbox from a snapshot, a fork or with volumes starts itself.
  const warm = diskFrom === undefined && !spec.volumes?.length ? await d.pools.claim(spec, d.logger) : undefined;
  if (warm) spec = { ...spec, id: warm.id };
  const kind: CreateKind = warm ? 'warm' : origin;
  // The create's span (SandboxManager.create) is the active one: whether a pool member was claimed is known here.
  const span = d.tracing?.activeSpan();
  if (span?.isRecording()) span.setAttribute('agentbox.create.kind', kind);
  let rt: Runtime;
  try {
    rt = await d.runtimes.probed(spec.runtime);
    if (spec.pauseMode === 'hibernate') await requireHibernation(rt, spec);
    if (spec.rootfs === 'writable') requireWritableRoot(rt, spec);
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
  // The quota checked again where it is counted: other replicas on the store may have created meanwhile.
  const quota = d.quotas?.limitsOf(spec.tenant);
  if (quota && !store.insertSandboxWithin(sandbox, spec, spec.idleTimeoutMs, d.replica?.id ?? null, quota)) {
    if (warm) await rt.destroy(warm).catch(() => undefined);
    throw quotaError(spec.tenant, store.countActive(spec.tenant), quota, spec.limits.memoryMb) ?? new QuotaExceededError(`tenant ${spec.tenant} reached its quota while this sandbox was being created`, { hint: 'delete one first: agentbox ls, then agentbox rm ID' });
  }
  if (!quota) store.insertSandbox(sandbox, spec, spec.idleTimeoutMs, d.replica?.id ?? null);
  // The stored row counts against the quota from here on.
  unreserve();
  const log = d.logger.child({ sandbox_id: spec.id, tenant: spec.tenant });
  const t0 = performance.now();
  try {
    // The proxy listens before the sandbox starts, so its first command already has a way out.
    // A driver that routes egress itself (a cluster's proxy) gets no proxy of the daemon's host.
    const ownEgress = rt.ownEgress === true && spec.egress.mode !== 'none';
    const egressDir = rt.ownEgress ? undefined : await egress?.open({ id: spec.id, tenant: spec.tenant, egress: spec.egress });
    // After the row: from here a volume rm sees this sandbox as a user.
    const volumes = (await d.volumes?.attach(spec.id, spec.tenant, spec.volumes ?? [])) ?? [];
    const handle =
      warm ??
      (await d.inflight.track(
        rt.create({ id: spec.id, image: spec.image, isolation: spec.isolation, limits: spec.limits, labels: { ...spec.labels }, ...(egressDir ? { egressDir } : {}), ...(ownEgress ? { egress: true } : {}), ...(diskFrom ? { diskFrom } : {}), ...(memoryFrom ? { memoryFrom } : {}), ...(volumes.length ? { volumes } : {}), ...(spec.rootfs === 'writable' ? { writableRoot: true } : {}) }),
      ));
    store.setRuntimeData(spec.id, handle.data);
    store.setState(spec.id, 'running');
    store.audit({ tenant: caller.tenant, actor: caller.actor, action: 'create', sandboxId: spec.id, detail: { image: spec.image, runtime: spec.runtime } });
    log.info({ ms: Math.round(performance.now() - t0), image: spec.image, runtime: spec.runtime, warm: Boolean(warm) }, 'sandbox created');
    d.metrics?.sandboxesCreated.inc({ runtime: spec.runtime, kind, result: 'ok', tenant: spec.tenant });
    d.metrics?.createSeconds.observe({ runtime: spec.runtime, kind, tenant: spec.tenant }, (performance.now() - t0) / 1000);
    const created: Sandbox = { ...sandbox, state: 'running' };
    tell(d.events, { type: 'created', sandbox: created, at: new Date().toISOString() }, log);
    return created;
  } catch (err) {
    if (warm) await rt.destroy(warm).catch(() => undefined);
    await egress?.close(spec.id).catch(() => undefined);
    await d.volumes?.release(spec.id).catch(() => undefined);
    store.markEnded(spec.id, { state: 'failed', reason: 'create_failed', endedBy: null, at: new Date().toISOString() });
    log.warn({ err: err instanceof Error ? err.message : String(err) }, 'sandbox create failed');
    d.metrics?.sandboxesCreated.inc({ runtime: spec.runtime, kind, result: 'failed', tenant: spec.tenant });
    throw err;
  }
}

/** A profile that hibernates idle sandboxes is refused where that cannot be done, rather than never freeing their memory. */
async function requireHibernation(rt: Runtime, spec: SandboxSpec): Promise<void> {
  const who = spec.profile === null ? 'this request' : `profile ${spec.profile}`;
  const hint = 'use a runtime that can (docker with --isolation gvisor, egress none, no volumes), or pauseAfter mode freeze';
  if (!rt.canHibernate) throw new BadRequestError(`${who} hibernates idle sandboxes (pauseAfter mode hibernate), but the ${rt.name} runtime cannot save a sandbox's memory`, { hint });
  const can = await rt.canHibernate({ isolation: spec.isolation, network: spec.egress.mode !== 'none', volumes: Boolean(spec.volumes?.length) });
  if (!can.ok) throw new BadRequestError(`${who} hibernates idle sandboxes (pauseAfter mode hibernate), but ${can.reason ?? 'this sandbox cannot be hibernated'}`, { hint: can.hint ?? hint });
}

function requireWritableRoot(rt: Runtime, spec: SandboxSpec): void {
  if (rt.writableRoot) return;
  const who = spec.profile === null ? 'this request' : `profile ${spec.profile}`;
  throw new BadRequestError(`${who} asks for a writable root (rootfs: writable), but the ${rt.name} runtime has only read-only ones`, {
    hint: 'use a runtime that has them (local, or docker with agentbox-helper as root), or a profile without rootfs: writable',
  });
}

/**
 * End a sandbox: destroy it in its runtime, close its proxy, mark its row. A sandbox that had
 * already ended keeps its first end time, reason and `endedBy` (a later delete only changes the state).
 */
export async function endSandbox(
  d: { store: Store; runtimes: Runtimes; pauses: IdlePauses; egress?: EgressService | undefined; logger: Logger; metrics?: Metrics | undefined; volumes?: Volumes | undefined; events?: LifecycleEvents | undefined; usage?: UsageSampler | undefined },
  stored: StoredSandbox,
  state: SandboxState,
  reason: EndReason,
  endedBy: string | null,
): Promise<void> {
  const id = stored.sandbox.id;
  // A delete, a stop: while the runtime destroys the sandbox it looks lost, and the reaper must not
  // record that (nor end it on its own) before this end does.
  if (endedBy !== 'reaper') return d.pauses.whileEnding(id, () => endNow(d, stored, state, reason, endedBy));
  return endNow(d, stored, state, reason, endedBy);
}

async function endNow(d: Parameters<typeof endSandbox>[0], stored: StoredSandbox, state: SandboxState, reason: EndReason, endedBy: string | null): Promise<void> {
  const id = stored.sandbox.id;
  // First: from here on nothing may call in with its tokens (authentication also checks the state).
  d.store.sandboxTokens.dropSandbox(id);
  const rt = d.runtimes.find(stored.sandbox.runtime);
  try {
    if (rt && stored.runtimeData) await rt.destroy(handleOf(stored));
  } finally {
    // Not before: while it is being destroyed, the reaper must not take it for an idle sandbox to pause.
    d.pauses.forget(id);
    // Its usage history and per-sandbox series go with it.
    d.usage?.forget(id);
  }
  await d.egress?.close(id);
  d.store.portAccess.revoke(id); // its ports' tokens and public grants go with it
  await d.volumes?.release(id).catch((err: unknown) => d.logger.error({ sandbox_id: id, err }, 'could not release volumes'));
  // The reaper found it lost while a caller was ending it: the caller's end is the one recorded.
  if (endedBy === 'reaper' && d.pauses.isEnding(id)) return;
  // Announced (created) and not ended yet: only then is this end news. Read and marked with no await between.
  const announced = d.store.getSandbox(id)?.sandbox.state === 'running';
  // Another path may have ended it meanwhile (a reaper pass during a delete): then it is told once.
  if (!d.store.markEnded(id, { state, reason, endedBy, at: new Date().toISOString() })) return;
  const ended = announced ? d.store.getSandbox(id)?.sandbox : undefined;
  if (ended) tell(d.events, { type: 'ended', sandbox: ended, at: ended.endedAt ?? new Date().toISOString(), endReason: ended.endReason ?? reason, endedBy: ended.endedBy ?? null }, d.logger);
  d.store.audit({ tenant: stored.sandbox.tenant, actor: endedBy, action: state === 'deleted' ? 'delete' : 'stop', sandboxId: id, detail: { reason } });
  d.logger.info({ sandbox_id: id, reason, by: endedBy }, 'sandbox ended');
  d.metrics?.sandboxesEnded.inc({ reason, tenant: stored.sandbox.tenant });
}

/** How the reaper paused a sandbox it found idle past its profile's pauseAfter. */
export type IdlePause = 'frozen' | 'hibernated';

/** After a hibernate that could not be done, how long the reaper leaves the sandbox running before trying again. */
const HIBERNATE_RETRY_MS = 60_000;

/**
 * Sandboxes paused for being idle past their profile's pauseAfter: frozen (memory kept) or
 * hibernated (memory on disk); the next call into one resumes it. One pause or wake at a time per
 * sandbox: a call arriving while its sandbox is being hibernated waits for that, then wakes it.
 */
export class IdlePauses {
  private readonly paused = new Map<string, IdlePause>();
  /** The pause or wake in flight per sandbox (settled: never rejects). */
  private readonly transitions = new Map<string, Promise<unknown>>();
  private readonly hibernateFailedAt = new Map<string, number>();

  constructor(private readonly d: { store: Store; runtimes: Runtimes; logger: Logger; metrics?: Metrics | undefined; events?: LifecycleEvents | undefined }) {}

  /** Whether the reaper paused this sandbox for idleness. */
  has(id: string): boolean {
    return this.paused.has(id);
  }

  /** A pause, a wake, an exclusive operation (a fork or snapshot with memory) or an end is under way: its runtime state is in between. */
  changing(id: string): boolean {
    return this.transitions.has(id) || this.ending.has(id);
  }

  /** Sandboxes a caller (not the reaper) is ending: destroyed before they are marked ended. */
  private readonly ending = new Map<string, number>();

  /** Run `end` with the sandbox marked as being ended, so the reaper neither judges it lost nor ends it first. */
  async whileEnding<T>(id: string, end: () => Promise<T>): Promise<T> {
    this.ending.set(id, (this.ending.get(id) ?? 0) + 1);
    try {
      return await end();
    } finally {
      const left = (this.ending.get(id) ?? 1) - 1;
      if (left > 0) this.ending.set(id, left);
      else this.ending.delete(id);
    }
  }

  /** Whether a caller is ending this sandbox now. */
  isEnding(id: string): boolean {
    return this.ending.has(id);
  }

  /** How it is paused, if it is. */
  state(id: string): IdlePause | undefined {
    return this.paused.get(id);
  }

  get size(): number {
    return this.paused.size;
  }

  /** A sandbox an earlier daemon paused (its runtime says so at start-up): the next call into it resumes it. */
  adopt(id: string, how: IdlePause): void {
    this.paused.set(id, how);
  }

  /** The sandbox ended: nothing to resume. */
  forget(id: string): void {
    this.paused.delete(id);
    this.hibernateFailedAt.delete(id);
  }

  /**
   * Resume a sandbox paused for idleness before anything enters it (an exec into a frozen cgroup would
   * hang; a hibernated one has no processes). Returns the milliseconds spent when it was hibernated.
   */
  async wake(stored: StoredSandbox): Promise<number | undefined> {
    const id = stored.sandbox.id;
    if (!this.paused.has(id) && !this.transitions.has(id)) return undefined;
    return this.serial(id, () => this.resumeNow(stored));
  }

  /** Run `fn` on the sandbox awake, with no idle pause or wake of it meanwhile (a fork that hibernates it itself). */
  exclusive<T>(stored: StoredSandbox, fn: () => Promise<T>): Promise<T> {
    return this.serial(stored.sandbox.id, async () => {
      await this.resumeNow(stored);
      return fn();
    });
  }

  private async resumeNow(stored: StoredSandbox): Promise<number | undefined> {
    const id = stored.sandbox.id;
    const how = this.paused.get(id);
    if (!how) return undefined;
    const rt = this.d.runtimes.of(stored);
    const t0 = performance.now();
    if (how === 'hibernated') await rt.wake!(handleOf(stored));
    else await rt.resume?.(handleOf(stored));
    this.paused.delete(id);
    const ms = Math.round(performance.now() - t0);
    this.d.metrics?.wakeSeconds.observe({ mode: how }, ms / 1000);
    this.d.logger.info({ sandbox_id: id, from: how, ms }, 'sandbox resumed');
    this.announce('resumed', id);
    return how === 'hibernated' ? ms : undefined;
  }

  /**
   * Pause an idle sandbox the way its profile says, unless a call came in meanwhile. A hibernate the
   * runtime refuses (it could not be done safely now) leaves the sandbox running; it is tried again later.
   */
  async pause(rt: Runtime, stored: StoredSandbox): Promise<void> {
    const id = stored.sandbox.id;
    const hibernate = stored.spec.pauseMode === 'hibernate';
    if (hibernate && Date.now() - (this.hibernateFailedAt.get(id) ?? 0) < HIBERNATE_RETRY_MS) return;
    await this.serial(id, async () => {
      // Activity since the reaper looked shows as a newer lastActiveAt: leave it running.
      const fresh = this.d.store.getSandbox(id);
      if (this.paused.has(id) || !fresh || fresh.sandbox.state !== 'running' || fresh.sandbox.lastActiveAt !== stored.sandbox.lastActiveAt) return;
      if (hibernate ? !rt.hibernate : !rt.pause) return;
      try {
        await this.pauseNow(rt, stored, hibernate ? 'hibernated' : 'frozen', 'after being idle');
      } catch (err) {
        if (hibernate) this.hibernateFailedAt.set(id, Date.now());
        // Ended meanwhile, say: the reaper's next pass sees what it is.
        this.d.logger.warn({ sandbox_id: id, err: err instanceof Error ? err.message : String(err) }, hibernate ? 'could not hibernate an idle sandbox; it keeps running' : 'could not pause an idle sandbox');
      }
    });
  }

  /**
   * Pause a sandbox because its owner asked (`SandboxManager.pause`): frozen (memory kept) or
   * hibernated (saved to disk). ConflictError when it is paused already or the runtime cannot; the
   * runtime's own refusal as it is. The next call into it resumes it, as after an idle pause.
   */
  async pauseOnRequest(rt: Runtime, stored: StoredSandbox, how: IdlePause): Promise<void> {
    const id = stored.sandbox.id;
    await this.serial(id, async () => {
      const current = this.paused.get(id);
      if (current) throw new ConflictError(`sandbox ${id} is ${current} already`, { hint: 'any call into it (exec, files) resumes it, or POST /v1/sandboxes/{id}/resume' });
      if (how === 'hibernated' && !rt.hibernate) throw new ConflictError(`the ${rt.name} runtime cannot hibernate a sandbox`, { hint: 'pause it with mode freeze' });
      if (how === 'frozen' && !rt.pause) throw new ConflictError(`the ${rt.name} runtime cannot pause a sandbox`);
      await this.pauseNow(rt, stored, how, 'on request');
    });
  }

  /** Resume a paused sandbox now (`SandboxManager.resume`); a running one is left as it is. */
  async resumeOnRequest(stored: StoredSandbox): Promise<void> {
    await this.serial(stored.sandbox.id, () => this.resumeNow(stored));
  }

  private async pauseNow(rt: Runtime, stored: StoredSandbox, how: IdlePause, why: string): Promise<void> {
    const id = stored.sandbox.id;
    const t0 = performance.now();
    if (how === 'hibernated') await rt.hibernate!(handleOf(stored));
    else await rt.pause!(handleOf(stored));
    this.paused.set(id, how);
    this.hibernateFailedAt.delete(id);
    const mode = how === 'hibernated' ? 'hibernate' : 'freeze';
    this.d.logger.info({ sandbox_id: id, mode, ms: Math.round(performance.now() - t0) }, `sandbox paused ${why}`);
    this.announce('paused', id, mode);
  }

  /** Tell the event sink, with the sandbox as it is now (paused or not). */
  private announce(type: 'paused' | 'resumed', id: string, pauseMode: 'freeze' | 'hibernate' = 'freeze'): void {
    const row = this.d.store.getSandbox(id)?.sandbox;
    if (!row) return;
    const how = this.paused.get(id);
    const sandbox: Sandbox = how ? { ...row, paused: how } : row;
    const at = new Date().toISOString();
    tell(this.d.events, type === 'paused' ? { type, sandbox, at, pauseMode } : { type, sandbox, at }, this.d.logger);
  }

  private serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const next = (this.transitions.get(id) ?? Promise.resolve()).then(fn);
    const settled = next.catch(() => undefined);
    this.transitions.set(id, settled);
    void settled.then(() => {
      if (this.transitions.get(id) === settled) this.transitions.delete(id);
    });
    return next;
  }
}
