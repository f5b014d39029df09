/**
 * SandboxManager: the one code path every surface goes through.
 * request -> policy -> runtime -> store; plus the reaper (ttl, idle, lost sandboxes) and
 * start-up reconciliation (orphans of an earlier daemon).
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { resolveEgressApproval, resolveSpec } from '../policy/resolve.js';
import type { Policy } from '../policy/schema.js';
import type { Runtime, SandboxHandle } from '../runtime/types.js';
import type { Store, StoredSandbox } from '../store/store.js';
import { AgentboxError, ConflictError, ForbiddenError, NotFoundError, QuotaExceededError, RuntimeUnavailableError } from '../contract/errors.js';
import type { DirEntry, EndReason, ExecEvent, ExecResult, ExecSummary, RuntimeName, Sandbox, SandboxSpec, SandboxState } from '../contract/model.js';
import type { CreateSandboxRequest, ExecRequest } from '../contract/requests.js';
import { LiveExecs } from './live-execs.js';
import { WarmPool } from './warm-pool.js';
import type { Metrics } from '../observability/metrics.js';
import type { EgressService } from '../egress/service.js';
import { proxyEnv } from '../egress/service.js';
import type { DeniedHost, Egress, EgressEvent } from '../contract/model.js';

export type Scope = 'read' | 'exec' | 'files' | 'manage';

export interface Caller {
  tenant: string;
  /** Who acts, for the audit log and `endedBy` (a token name, `cli`, `mcp`...). */
  actor: string;
  /** What a scoped token may do; absent = everything the tenant may. */
  scopes?: readonly Scope[];
  /** A scoped token sees only sandboxes with these labels, and its creates get them. */
  labels?: Record<string, string>;
}

const SCOPE_VERBS: Record<Scope, string> = { read: 'list or inspect sandboxes', exec: 'run commands', files: 'read or write files', manage: 'create, stop or delete sandboxes' };

/** Enforced here, not in a surface, so HTTP, MCP and the CLI cannot differ. */
function need(caller: Caller, scope: Scope): void {
  if (caller.scopes && !caller.scopes.includes(scope)) {
    throw new ForbiddenError(`this token may not ${SCOPE_VERBS[scope]}`, { hint: `it has the scopes ${caller.scopes.join(', ')}; ask for a token with the ${scope} scope` });
  }
}

function labelsMatch(labels: Record<string, string>, selector: Record<string, string> | undefined): boolean {
  return !selector || Object.entries(selector).every(([k, v]) => labels[k] === v);
}

export interface ManagerOpts {
  policy: Policy;
  store: Store;
  runtimes: Partial<Record<RuntimeName, Runtime>>;
  logger: Logger;
  /** How often the reaper looks for expired, idle and lost sandboxes. */
  reapIntervalMs?: number;
  /** Bytes of each stream kept in the exec history. */
  historyTailBytes?: number;
  /** Creates running at once; more wait in a short queue, beyond it callers get 429. @default 8 */
  maxConcurrentCreates?: number;
  /** @default 32 */
  createQueueLength?: number;
  metrics?: Metrics;
  /** The per-sandbox egress proxies; without it only egress mode none can be created. */
  egress?: EgressService;
}

const ACTIVE: SandboxState[] = ['creating', 'running'];

export function newSandboxId(): string {
  return `sbx_${randomBytes(10).toString('base64url').replace(/[-_]/g, '').slice(0, 12).toLowerCase()}${randomBytes(2).toString('hex')}`;
}

export function newExecId(): string {
  return `exe_${randomBytes(8).toString('hex')}`;
}

function handleOf(stored: StoredSandbox): SandboxHandle {
  return { id: stored.sandbox.id, runtime: stored.sandbox.runtime, data: (stored.runtimeData ?? {}) as Record<string, unknown> };
}

/** The last `max` bytes of a stream, without keeping the rest in memory. */
class Tail {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly max: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.chunks.length > 1 && this.size - (this.chunks[0] as Buffer).length >= this.max) {
      this.size -= (this.chunks.shift() as Buffer).length;
    }
  }

  get bytes(): Buffer {
    const all = Buffer.concat(this.chunks);
    return all.length <= this.max ? all : all.subarray(all.length - this.max);
  }
}

export class SandboxManager {
  private readonly probes = new Map<RuntimeName, Promise<void>>();
  private reaper: NodeJS.Timeout | undefined;
  private readonly inflight = new Set<Promise<unknown>>();
  private closing = false;
  private readonly activeExecs = new Map<string, number>();
  private readonly live = new LiveExecs();
  private createsRunning = 0;
  private pools: WarmPool[] = [];
  /** Sandboxes frozen for being idle past their profile's pauseAfter; the next call thaws them. */
  private readonly paused = new Set<string>();
  private readonly createWaiters: (() => void)[] = [];
  /** Quota held by creates that passed the check but have not stored their row yet. */
  private readonly reserved = new Map<string, { sandboxes: number; memoryMb: number }>();

  constructor(private readonly opts: ManagerOpts) {}

  get policy(): Policy {
    return this.opts.policy;
  }

  /** Reconcile with what exists on the host, then start the reaper. */
  async start(): Promise<void> {
    await this.reconcile();
    await this.startPools();
    const every = this.opts.reapIntervalMs ?? 1000;
    this.reaper = setInterval(() => void this.reapOnce().catch((err) => this.opts.logger.error({ err }, 'reaper failed')), every);
    this.reaper.unref();
  }

  /** One warm pool per policy `pools:` entry whose runtime works here. */
  private async startPools(): Promise<void> {
    for (const p of this.opts.policy.pools ?? []) {
      if (p.size <= 0) continue;
      const spec = resolveSpec(this.opts.policy, { image: p.image, ...(p.profile ? { profile: p.profile } : {}) }, { tenant: '__pool__', id: 'sbx_pooltemplate' });
      let rt: Runtime;
      try {
        rt = await this.runtime(spec.runtime);
      } catch (err) {
        this.opts.logger.warn({ image: p.image, profile: p.profile, err: err instanceof Error ? err.message : String(err) }, 'warm pool disabled');
        continue;
      }
      const egress = spec.egress.mode === 'none' ? undefined : this.egressService();
      const pool = new WarmPool({ image: p.image, profile: p.profile ?? null, size: p.size, spec }, rt, newSandboxId, this.opts.logger, {
        specFor: (id) => (egress ? { egressDir: egress.dirFor(id) } : {}),
        released: async (id) => egress?.close(id),
      });
      this.pools.push(pool);
      pool.fill();
    }
  }

  /** Resolves when every warm pool is full (benchmarks, tests). */
  async poolsFull(): Promise<void> {
    await Promise.all(this.pools.map((p) => p.whenFull()));
  }

  poolStatus(): { image: string; profile: string | null; size: number; ready: number }[] {
    return this.pools.map((p) => ({ image: p.template.image, profile: p.template.profile, size: p.template.size, ready: p.ready }));
  }

  /** Stop the reaper, wait for running operations, destroy what is still running. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.reaper) clearInterval(this.reaper);
    await Promise.all(this.pools.map((p) => p.close()));
    await Promise.allSettled([...this.inflight]);
    for (const stored of this.opts.store.listSandboxes({ states: ACTIVE })) {
      await this.end(stored, 'stopped', 'daemon_stopped', 'daemon shutdown').catch(() => undefined);
    }
    await this.opts.egress?.closeAll();
    for (const rt of Object.values(this.opts.runtimes)) await rt?.close();
  }

  private egressService(): EgressService {
    if (!this.opts.egress) {
      throw new RuntimeUnavailableError('this agentbox runs without egress proxies, so sandboxes can only have egress none', { hint: 'ask for egress none, or run the full daemon (agentbox serve)' });
    }
    return this.opts.egress;
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p)).catch(() => undefined);
    return p;
  }

  /** The runtime for a name, probed once; a clear runtime_unavailable when it cannot work here. */
  async runtime(name: RuntimeName): Promise<Runtime> {
    const rt = this.opts.runtimes[name];
    if (!rt) {
      throw new RuntimeUnavailableError(`runtime ${name} is not enabled in this daemon`, {
        hint: `available: ${Object.keys(this.opts.runtimes).join(', ') || 'none'}`,
      });
    }
    let probe = this.probes.get(name);
    if (!probe) {
      probe = rt.probe().then((r) => {
        if (!r.ok) {
          this.probes.delete(name);
          throw new RuntimeUnavailableError(`runtime ${name} is unavailable: ${r.reason ?? 'unknown reason'}`, r.hint ? { hint: r.hint } : {});
        }
      });
      this.probes.set(name, probe);
    }
    await probe;
    return rt;
  }

  /**
   * Check the tenant's count and memory quotas and hold the new sandbox's share at once, before
   * any await: parallel creates would otherwise all pass a check that counts only stored rows.
   * Returns the release, for when the row is stored (it counts from then on) or the create failed.
   */
  private reserveQuota(spec: SandboxSpec): () => void {
    const tenant = this.opts.policy.tenants?.find((t) => t.name === spec.tenant);
    const quotas = tenant?.quotas;
    if (!quotas) return () => undefined;
    const stored = this.opts.store.countActive(spec.tenant);
    const held = this.reserved.get(spec.tenant) ?? { sandboxes: 0, memoryMb: 0 };
    const used = { sandboxes: stored.sandboxes + held.sandboxes, memoryMb: stored.memoryMb + held.memoryMb };
    if (quotas.sandboxes !== undefined && used.sandboxes + 1 > quotas.sandboxes) {
      throw new QuotaExceededError(`tenant ${spec.tenant} already has ${used.sandboxes} of ${quotas.sandboxes} sandboxes`, { hint: 'delete one first: agentbox ls, then agentbox rm ID' });
    }
    if (quotas.memoryMb !== undefined && used.memoryMb + spec.limits.memoryMb > quotas.memoryMb) {
      throw new QuotaExceededError(`tenant ${spec.tenant} would use ${used.memoryMb + spec.limits.memoryMb} MiB of ${quotas.memoryMb} MiB memory`, { hint: 'ask for less with --memory, or delete a sandbox' });
    }
    this.checkExecMinutes(spec.tenant);
    this.reserved.set(spec.tenant, { sandboxes: held.sandboxes + 1, memoryMb: held.memoryMb + spec.limits.memoryMb });
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const h = this.reserved.get(spec.tenant);
      if (!h) return;
      const next = { sandboxes: h.sandboxes - 1, memoryMb: h.memoryMb - spec.limits.memoryMb };
      if (next.sandboxes <= 0) this.reserved.delete(spec.tenant);
      else this.reserved.set(spec.tenant, next);
    };
  }

  private checkExecMinutes(tenant: string): void {
    const perDay = this.opts.policy.tenants?.find((t) => t.name === tenant)?.quotas?.execMinutesPerDay;
    if (perDay === undefined) return;
    if (this.opts.store.execMsOn(tenant, today()) >= perDay * 60_000) {
      throw new QuotaExceededError(`tenant ${tenant} used its ${perDay} exec minutes for today`, { hint: 'the quota resets at 00:00 UTC' });
    }
  }

  /** Bounded concurrency for creates: a burst queues briefly, then gets a clear 429, not a collapse. */
  private async createSlot(): Promise<() => void> {
    const max = this.opts.maxConcurrentCreates ?? 8;
    if (this.createsRunning >= max) {
      if (this.createWaiters.length >= (this.opts.createQueueLength ?? 32)) {
        throw new QuotaExceededError(`too many sandbox creates in flight (${this.createsRunning} running, ${this.createWaiters.length} queued)`, {
          hint: 'retry in a second',
          retryAfterSec: 1,
        });
      }
      await new Promise<void>((resolve) => this.createWaiters.push(resolve));
    }
    this.createsRunning++;
    return () => {
      this.createsRunning--;
      this.createWaiters.shift()?.();
    };
  }

  async create(req: CreateSandboxRequest, caller: Caller): Promise<Sandbox> {
    if (this.closing) throw new RuntimeUnavailableError('the daemon is shutting down', { hint: 'retry in a moment' });
    need(caller, 'manage');
    if (caller.labels) req = { ...req, labels: { ...req.labels, ...caller.labels } };
    const release = await this.createSlot();
    try {
      return await this.createNow(req, caller);
    } finally {
      release();
    }
  }

  private async createNow(req: CreateSandboxRequest, caller: Caller): Promise<Sandbox> {
    const spec = resolveSpec(this.opts.policy, req, { tenant: caller.tenant, id: newSandboxId() });
    const egress = spec.egress.mode === 'none' ? undefined : this.egressService();
    const unreserve = this.reserveQuota(spec);
    try {
      return await this.createReserved(spec, egress, caller, unreserve);
    } finally {
      unreserve();
    }
  }

  private async createReserved(spec: SandboxSpec, egress: EgressService | undefined, caller: Caller, unreserve: () => void): Promise<Sandbox> {
    const warm = this.pools.find((p) => p.matches(spec))?.claim();
    if (warm) spec = { ...spec, id: warm.id };
    let rt: Runtime;
    try {
      rt = await this.runtime(spec.runtime);
      if (!warm) await rt.prepareImage(spec.image);
    } catch (err) {
      if (warm) await this.opts.runtimes[spec.runtime]?.destroy(warm).catch(() => undefined);
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
    };
    const store = this.opts.store;
    store.insertSandbox(sandbox, spec, spec.idleTimeoutMs);
    // The stored row counts against the quota from here on.
    unreserve();
    const log = this.opts.logger.child({ sandbox_id: spec.id, tenant: spec.tenant });
    const t0 = performance.now();
    try {
      // The proxy listens before the sandbox starts, so its first command already has a way out.
      const egressDir = await egress?.open({ id: spec.id, tenant: spec.tenant, egress: spec.egress });
      const handle =
        warm ??
        (await this.track(
          rt.create({ id: spec.id, image: spec.image, isolation: spec.isolation, limits: spec.limits, labels: { ...spec.labels }, ...(egressDir ? { egressDir } : {}) }),
        ));
      store.setRuntimeData(spec.id, handle.data);
      store.setState(spec.id, 'running');
      store.audit({ tenant: caller.tenant, actor: caller.actor, action: 'create', sandboxId: spec.id, detail: { image: spec.image, runtime: spec.runtime } });
      log.info({ ms: Math.round(performance.now() - t0), image: spec.image, runtime: spec.runtime, warm: Boolean(warm) }, 'sandbox created');
      this.opts.metrics?.sandboxesCreated.inc({ runtime: spec.runtime, result: 'ok', tenant: spec.tenant });
      this.opts.metrics?.createSeconds.observe({ runtime: spec.runtime, tenant: spec.tenant }, (performance.now() - t0) / 1000);
      return { ...sandbox, state: 'running' };
    } catch (err) {
      if (warm) await rt.destroy(warm).catch(() => undefined);
      await egress?.close(spec.id).catch(() => undefined);
      store.markEnded(spec.id, { state: 'failed', reason: 'create_failed', endedBy: null, at: new Date().toISOString() });
      log.warn({ err: err instanceof Error ? err.message : String(err) }, 'sandbox create failed');
      this.opts.metrics?.sandboxesCreated.inc({ runtime: spec.runtime, result: 'failed', tenant: spec.tenant });
      throw err;
    }
  }

  /** A sandbox of the caller's tenant; another tenant's sandbox does not exist for the caller. */
  private find(id: string, caller: Caller): StoredSandbox {
    const stored = this.opts.store.getSandbox(id);
    if (!stored || stored.sandbox.tenant !== caller.tenant || !labelsMatch(stored.sandbox.labels, caller.labels)) {
      throw new NotFoundError(`no sandbox ${id}`, { hint: 'run agentbox ls to see your sandboxes' });
    }
    return stored;
  }

  private findRunning(id: string, caller: Caller): StoredSandbox {
    const stored = this.find(id, caller);
    if (stored.sandbox.state !== 'running') {
      const why = stored.sandbox.endReason ? ` (${stored.sandbox.endReason})` : '';
      throw new ConflictError(`sandbox ${id} is ${stored.sandbox.state}${why}`, { hint: 'create a new one: agentbox create' });
    }
    return stored;
  }

  get(id: string, caller: Caller): Sandbox {
    need(caller, 'read');
    return this.find(id, caller).sandbox;
  }

  list(caller: Caller, filter: { labels?: Record<string, string>; all?: boolean } = {}): Sandbox[] {
    need(caller, 'read');
    const labels = filter.labels || caller.labels ? { ...filter.labels, ...caller.labels } : undefined;
    return this.opts.store
      .listSandboxes({ tenant: caller.tenant, ...(labels ? { labels } : {}), includeEnded: filter.all ?? false })
      .map((s) => s.sandbox);
  }

  private touch(id: string): void {
    this.opts.store.touch(id, new Date().toISOString());
  }

  /** Stream an exec: output chunks as they come, then one `exit`. Recorded in the exec history. */
  execStream(id: string, req: ExecRequest, caller: Caller, signal?: AbortSignal): { execId: string; events: AsyncIterable<ExecEvent> } {
    need(caller, 'exec');
    const stored = this.findRunning(id, caller);
    this.checkExecMinutes(caller.tenant);
    const spec = stored.spec;
    const execId = newExecId();
    const timeoutMs = Math.min(req.timeoutMs ?? spec.execTimeoutMs, spec.execTimeoutMs);
    const store = this.opts.store;
    const startedAt = new Date();
    this.touch(id);
    store.insertExec({ id: execId, sandboxId: id, tenant: caller.tenant, cmd: req.cmd, startedAt: startedAt.toISOString() });
    const rt = this.opts.runtimes[stored.sandbox.runtime];
    if (!rt) throw new RuntimeUnavailableError(`runtime ${stored.sandbox.runtime} is not enabled`);
    const keep = this.opts.historyTailBytes ?? 65536;
    const log = this.opts.logger.child({ sandbox_id: id, exec_id: execId });
    const self = this;
    async function* run(): AsyncIterable<ExecEvent> {
      const out = new Tail(keep);
      const err = new Tail(keep);
      let summary: ExecSummary | undefined;
      self.activeExecs.set(id, (self.activeExecs.get(id) ?? 0) + 1);
      self.live.start(execId, id);
      try {
        await self.wake(stored);
        const events = rt!.exec(handleOf(stored), req.cmd, {
          execId,
          env: { ...(stored.sandbox.egress.mode === 'none' ? {} : proxyEnv()), ...spec.env, ...req.env },
          ...(req.cwd ? { cwd: req.cwd } : {}),
          ...(req.stdin !== undefined ? { stdin: Buffer.from(req.stdin) } : {}),
          timeoutMs,
          outputLimitBytes: spec.outputLimitBytes,
          ...(signal ? { signal } : {}),
        });
        for await (const ev of events) {
          if (ev.type === 'stdout') out.push(ev.data);
          else if (ev.type === 'stderr') err.push(ev.data);
          else summary = ev.result;
          self.live.push(execId, ev);
          yield ev;
        }
      } finally {
        self.live.finish(execId);
        self.activeExecs.set(id, (self.activeExecs.get(id) ?? 1) - 1);
        if (self.activeExecs.get(id) === 0) self.activeExecs.delete(id);
        const endedAt = new Date();
        store.finishExec(execId, {
          exitCode: summary?.exitCode ?? -1,
          timedOut: summary?.timedOut ?? false,
          oomKilled: summary?.oomKilled ?? false,
          truncated: summary?.truncated ?? false,
          durationMs: summary?.durationMs ?? endedAt.getTime() - startedAt.getTime(),
          endedAt: endedAt.toISOString(),
          stdoutTail: out.bytes,
          stderrTail: err.bytes,
        });
        store.addExecMs(caller.tenant, today(), endedAt.getTime() - startedAt.getTime());
        self.touch(id);
        log.info({ exit_code: summary?.exitCode, ms: summary?.durationMs, timed_out: summary?.timedOut }, 'exec finished');
        const outcome = !summary ? 'error' : summary.timedOut ? 'timeout' : summary.oomKilled ? 'oom' : summary.exitCode === 0 ? 'ok' : 'nonzero';
        self.opts.metrics?.execs.inc({ outcome, tenant: caller.tenant });
        self.opts.metrics?.execSeconds.observe({ tenant: caller.tenant }, (endedAt.getTime() - startedAt.getTime()) / 1000);
      }
    }
    return { execId, events: this.trackIterable(run()) };
  }

  private trackIterable<T>(it: AsyncIterable<T>): AsyncIterable<T> {
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        let resolveDone: () => void = () => undefined;
        const done = new Promise<void>((r) => (resolveDone = r));
        self.inflight.add(done);
        try {
          yield* it;
        } finally {
          resolveDone();
          self.inflight.delete(done);
        }
      },
    };
  }

  /** Buffered exec: the whole result at once. */
  async exec(id: string, req: ExecRequest, caller: Caller, signal?: AbortSignal): Promise<ExecResult> {
    const { execId, events } = this.execStream(id, req, caller, signal);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let summary: ExecSummary | undefined;
    for await (const ev of events) {
      if (ev.type === 'stdout') out.push(ev.data);
      else if (ev.type === 'stderr') err.push(ev.data);
      else summary = ev.result;
    }
    if (!summary) throw new AgentboxError('internal', `exec ${execId} ended without a result`);
    return { ...summary, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
  }

  execHistory(id: string, caller: Caller, limit = 100): ReturnType<Store['listExecs']> {
    need(caller, 'read');
    this.find(id, caller);
    return this.opts.store.listExecs(id, limit);
  }

  execRecord(id: string, execId: string, caller: Caller): NonNullable<ReturnType<Store['getExec']>> {
    need(caller, 'read');
    this.find(id, caller);
    const rec = this.opts.store.getExec(id, execId);
    if (!rec) throw new NotFoundError(`no exec ${execId} in sandbox ${id}`, { hint: `agentbox logs ${id} lists its execs` });
    return rec;
  }

  /** A running exec's events (replayed, then live); a finished one from its stored tail. */
  followExec(id: string, execId: string, caller: Caller): AsyncIterable<ExecEvent> {
    need(caller, 'read');
    this.find(id, caller);
    const live = this.live.follow(id, execId);
    if (live) return live;
    const rec = this.execRecord(id, execId, caller);
    return (async function* () {
      if (rec.stdoutTail?.length) yield { type: 'stdout', data: rec.stdoutTail } as ExecEvent;
      if (rec.stderrTail?.length) yield { type: 'stderr', data: rec.stderrTail } as ExecEvent;
      yield {
        type: 'exit',
        result: { execId, exitCode: rec.exitCode ?? -1, truncated: rec.truncated, timedOut: rec.timedOut, oomKilled: rec.oomKilled, durationMs: rec.durationMs ?? 0 },
      } as ExecEvent;
    })();
  }

  /** Thaw a sandbox paused for idleness before anything enters it (an exec into a frozen cgroup would hang). */
  private async wake(stored: StoredSandbox): Promise<void> {
    const id = stored.sandbox.id;
    if (!this.paused.delete(id)) return;
    await this.runtimeOf(stored).resume?.(handleOf(stored));
    this.opts.logger.info({ sandbox_id: id }, 'sandbox resumed');
  }

  private runtimeOf(stored: StoredSandbox): Runtime {
    const rt = this.opts.runtimes[stored.sandbox.runtime];
    if (!rt) throw new RuntimeUnavailableError(`runtime ${stored.sandbox.runtime} is not enabled`);
    return rt;
  }

  async readFile(id: string, path: string, caller: Caller): Promise<Readable> {
    need(caller, 'files');
    const stored = this.findRunning(id, caller);
    this.touch(id);
    await this.wake(stored);
    return this.runtimeOf(stored).readFile(handleOf(stored), path);
  }

  async writeFile(id: string, path: string, data: Readable, caller: Caller): Promise<number> {
    need(caller, 'files');
    const stored = this.findRunning(id, caller);
    this.touch(id);
    await this.wake(stored);
    return this.track(this.runtimeOf(stored).writeFile(handleOf(stored), path, data));
  }

  async listDir(id: string, path: string, caller: Caller): Promise<DirEntry[]> {
    need(caller, 'files');
    const stored = this.findRunning(id, caller);
    this.touch(id);
    await this.wake(stored);
    return this.runtimeOf(stored).listDir(handleOf(stored), path);
  }

  async removePath(id: string, path: string, caller: Caller): Promise<void> {
    need(caller, 'files');
    const stored = this.findRunning(id, caller);
    this.touch(id);
    await this.wake(stored);
    await this.runtimeOf(stored).removePath(handleOf(stored), path);
  }

  async stop(id: string, caller: Caller): Promise<Sandbox> {
    need(caller, 'manage');
    const stored = this.find(id, caller);
    if (ACTIVE.includes(stored.sandbox.state)) await this.end(stored, 'stopped', 'stopped', caller.actor);
    return this.find(id, caller).sandbox;
  }

  async delete(id: string, caller: Caller): Promise<Sandbox> {
    need(caller, 'manage');
    const stored = this.find(id, caller);
    if (stored.sandbox.state === 'deleted') return stored.sandbox;
    await this.end(stored, 'deleted', stored.sandbox.endReason ?? 'deleted', caller.actor);
    return this.find(id, caller).sandbox;
  }

  private async end(stored: StoredSandbox, state: SandboxState, reason: EndReason, endedBy: string | null): Promise<void> {
    const id = stored.sandbox.id;
    this.paused.delete(id);
    const rt = this.opts.runtimes[stored.sandbox.runtime];
    if (rt && stored.runtimeData) await rt.destroy(handleOf(stored));
    await this.opts.egress?.close(id);
    const already = stored.sandbox.endedAt;
    this.opts.store.markEnded(id, {
      state,
      reason: already && stored.sandbox.endReason ? stored.sandbox.endReason : reason,
      endedBy: already ? (stored.sandbox.endedBy ?? endedBy) : endedBy,
      at: already ?? new Date().toISOString(),
    });
    this.opts.store.audit({ tenant: stored.sandbox.tenant, actor: endedBy, action: state === 'deleted' ? 'delete' : 'stop', sandboxId: id, detail: { reason } });
    this.opts.logger.info({ sandbox_id: id, reason, by: endedBy }, 'sandbox ended');
    this.opts.metrics?.sandboxesEnded.inc({ reason, tenant: stored.sandbox.tenant });
  }

  /** One pass of the reaper: ttl, idle timeout, sandboxes that died on their own. */
  async reapOnce(): Promise<void> {
    const now = Date.now();
    for (const stored of this.opts.store.listSandboxes({ states: ['running'] })) {
      const sb = stored.sandbox;
      if (sb.expiresAt && Date.parse(sb.expiresAt) <= now) {
        await this.end(stored, 'stopped', 'ttl_expired', 'reaper');
        continue;
      }
      if (stored.idleTimeoutMs !== null && Date.parse(sb.lastActiveAt) + stored.idleTimeoutMs <= now && !this.busy(sb.id)) {
        await this.end(stored, 'stopped', 'idle_timeout', 'reaper');
        continue;
      }
      const rt = this.opts.runtimes[sb.runtime];
      if (rt && stored.runtimeData && !(await rt.status(handleOf(stored))).alive) {
        await this.end(stored, 'failed', 'runtime_lost', 'reaper');
        continue;
      }
      const pauseAfter = stored.spec.pauseAfterMs;
      if (rt?.pause && pauseAfter && !this.paused.has(sb.id) && !this.busy(sb.id) && Date.parse(sb.lastActiveAt) + pauseAfter <= now) {
        await this.pauseIdle(rt, stored);
      }
    }
  }

  private async pauseIdle(rt: Runtime, stored: StoredSandbox): Promise<void> {
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
    const fresh = this.opts.store.getSandbox(id);
    if (fresh && fresh.sandbox.lastActiveAt !== stored.sandbox.lastActiveAt) {
      await this.wake(fresh);
      return;
    }
    this.opts.logger.info({ sandbox_id: id }, 'sandbox paused after being idle');
  }

  /** Whether the reaper froze this sandbox for idleness. */
  isPaused(id: string): boolean {
    return this.paused.has(id);
  }

  /** A sandbox with a running exec is not idle, however long the exec takes. */
  private busy(id: string): boolean {
    return (this.activeExecs.get(id) ?? 0) > 0;
  }

  /** After a restart: rows whose sandbox is gone become runtime_lost; host objects nobody knows are reaped. */
  private async reconcile(): Promise<void> {
    const store = this.opts.store;
    for (const [name, rt] of Object.entries(this.opts.runtimes) as [RuntimeName, Runtime][]) {
      const probe = await rt.probe();
      if (!probe.ok) {
        this.opts.logger.warn({ runtime: name, reason: probe.reason }, 'runtime unavailable at start');
        continue;
      }
      const objects = await rt.list();
      const known = new Set(store.listSandboxes({ states: ACTIVE }).filter((s) => s.sandbox.runtime === name).map((s) => s.sandbox.id));
      for (const obj of objects) {
        if (known.has(obj.id) && obj.alive) continue;
        await rt.reap(obj.id).catch((err: unknown) => this.opts.logger.error({ sandbox_id: obj.id, err }, 'could not reap'));
        if (!known.has(obj.id)) {
          store.audit({ tenant: null, actor: 'reconcile', action: 'reap_orphan', sandboxId: obj.id, detail: null });
          this.opts.logger.warn({ sandbox_id: obj.id, runtime: name }, 'reaped orphan');
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
    await this.reconcileEgress();
  }

  /** Sandboxes that outlived the daemon (docker) get their proxy back; directories of the gone are removed. */
  private async reconcileEgress(): Promise<void> {
    const egress = this.opts.egress;
    if (!egress) return;
    const active = this.opts.store.listSandboxes({ states: ACTIVE });
    for (const { sandbox } of active) {
      if (sandbox.egress.mode === 'none') continue;
      await egress.open(sandbox).catch((err: unknown) => this.opts.logger.error({ sandbox_id: sandbox.id, err }, 'could not restart the egress proxy'));
    }
    for (const id of egress.reapOrphans(new Set(active.map((s) => s.sandbox.id)))) {
      this.opts.logger.warn({ sandbox_id: id }, 'removed an orphaned egress proxy directory');
    }
  }

  /**
   * Images are shared by every tenant, so only the host's operator manages them over the API:
   * a caller with the manage scope on a daemon without tenants.
   */
  authorizeImages(caller: Caller): void {
    need(caller, 'manage');
    if (this.opts.policy.tenants !== undefined) {
      throw new ForbiddenError('images are shared by every tenant: only the host\'s operator pulls them', { hint: 'run agentbox image pull REF on the host' });
    }
  }

  /** The sandbox's egress log (newest first) and, with `denied`, the hosts it was refused. */
  egressLog(id: string, caller: Caller, opts: { denied?: boolean; limit?: number } = {}): { sandboxId: string; egress: Egress; log: EgressEvent[]; denied?: DeniedHost[] } {
    need(caller, 'read');
    const sb = this.find(id, caller).sandbox;
    const events = this.opts.store.egress;
    return {
      sandboxId: sb.id,
      egress: sb.egress,
      log: events.forSandbox(sb.id, { ...(opts.denied ? { decision: 'denied' as const } : {}), limit: opts.limit ?? 200 }),
      ...(opts.denied ? { denied: events.deniedHosts(sb.id) } : {}),
    };
  }

  /**
   * Approve one more host for a running sandbox; its proxy lets it through from the next
   * connection on, without a restart. The policy still applies: the global deny list wins and a
   * profile's allowlist ceiling holds, exactly as for a create that had named the host.
   */
  allowEgress(id: string, host: string, caller: Caller): Sandbox {
    need(caller, 'manage');
    const stored = this.findRunning(id, caller);
    const sb = stored.sandbox;
    if (sb.egress.mode === 'none') {
      throw new ConflictError(`sandbox ${id} was created with egress none: it has no network path to open`, {
        hint: 'create a sandbox with --egress allowlist --allow HOST instead',
      });
    }
    const checked = resolveEgressApproval(this.opts.policy, sb.profile, sb.egress.mode, host);
    const added = checked.allow.filter((h) => !sb.egress.allow.includes(h));
    const egress: Egress = { mode: sb.egress.mode, allow: [...sb.egress.allow, ...added] };
    this.opts.store.setEgress(id, egress);
    for (const h of added) this.opts.egress?.allow(id, h);
    this.opts.store.audit({ tenant: sb.tenant, actor: caller.actor, action: 'egress_allow', sandboxId: id, detail: { host } });
    this.opts.logger.info({ sandbox_id: id, host, by: caller.actor }, 'egress host approved');
    return { ...sb, egress };
  }

  /** Subsystem health for /healthz. */
  async health(): Promise<Record<string, { ok: boolean; detail?: string }>> {
    const out: Record<string, { ok: boolean; detail?: string }> = {};
    try {
      this.opts.store.countActive('__health__');
      out.store = { ok: true };
    } catch (err) {
      out.store = { ok: false, detail: err instanceof Error ? err.message : String(err) };
    }
    for (const [name, rt] of Object.entries(this.opts.runtimes)) {
      const r = await rt!.probe();
      out[`runtime.${name}`] = r.ok ? { ok: true } : { ok: false, detail: r.reason ?? 'unavailable' };
    }
    for (const p of this.poolStatus()) {
      out[`pool.${p.image}${p.profile ? `/${p.profile}` : ''}`] = { ok: p.ready > 0, detail: `${p.ready}/${p.size} ready` };
    }
    return out;
  }
}

function today(): string {
  return new Date().toISOString().slice(0, 10);
}
