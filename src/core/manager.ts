/**
 * SandboxManager: the one code path every surface goes through (request -> policy -> runtime ->
 * store). This file is the facade: each public method checks the caller's scope, finds the
 * sandbox, and hands the work to one part in ./manager/:
 *   access.ts     scopes, tenant and label visibility, finding a sandbox
 *   admission.ts  quotas (reserved before any await) and the bound on creates in flight
 *   lifecycle.ts  create, end, activity, idle pause and wake
 *   execs.ts      exec recording: history rows, output tails, live followers, busy counts
 *   egress.ts     egress proxies, the egress log, hosts approved at run time
 *   processes.ts  a running sandbox's processes: list, signal
 *   reaper.ts     the periodic pass (ttl, idle, lost, pause) and start-up reconciliation
 *   pools.ts      warm pools from the policy
 *   runtimes.ts   the enabled drivers, probed once
 *   inflight.ts   operations close() waits for
 *   volumes.ts    named volumes: rows, mounts counted per user, file operations without a sandbox
 *   usage-sampler.ts  usage history of running sandboxes, sampled only while someone reads it
 *   desktops.ts   desktop sessions: started on demand by an exec, looked at through ports
 * The public methods return the contract's types (model.ts), never store rows.
 */
import { statfsSync } from 'node:fs';
import { isMountPoint } from '../storage/host-tools.js';
import { pipeline, Readable, Transform, type Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { EgressService } from '../egress/service.js';
import type { Metrics } from '../observability/metrics.js';
import { failSpan, sandboxAttributes, Tracing, type Span } from '../observability/tracing.js';
import { resolveSpec, resolveTtlChange } from '../policy/resolve.js';
import type { Policy } from '../policy/schema.js';
import type { Runtime, SandboxHandle } from '../runtime/types.js';
import type { Store, StoredSandbox } from '../store/store.js';
import type { DiskStore } from '../storage/disk-store.js';
import { SnapshotFiles } from '../storage/snapshot-files.js';
import type { VolumeStore } from '../storage/volume-store.js';
import { ConflictError, NotFoundError, RuntimeUnavailableError } from '../contract/errors.js';
import { GrantPortAccessRequestSchema, PortNumberSchema, type GrantPortAccessRequest, type PortAccess } from '../contract/ports.js';
import { DEFAULT_TOKEN_TTL_MS, newGrantId, newPortToken, portAccessAllowed, sha256 } from './manager/port-access.js';
import { parseDuration } from '../policy/duration.js';
import type { DirEntry, ExecEvent, ExecRecord, ExecResult, KillResult, ProcessInfo, RuntimeName, Sandbox, Snapshot } from '../contract/model.js';
import type { CreateSandboxRequest, CreateSnapshotRequest, ExecRequest, ForkRequest, KillProcessRequest, PauseRequest } from '../contract/requests.js';
import { PauseRequestSchema } from '../contract/requests.js';
import { findRunning, findSandbox, listVisible, need, needTenantWide, requireImageOperator, visibleSandbox, type Caller } from './manager/access.js';
import { CreateGate, QuotaLedger } from './manager/admission.js';
import { approveEgressHost, egressLogOf, requireEgress, type SandboxEgressLog } from './manager/egress.js';
import { collectResult, execOpts, ExecRecorder, newExecId, replayStored, storedExec, toExecRecord } from './manager/execs.js';
import { Inflight } from './manager/inflight.js';
import { ACTIVE, createSandbox, endSandbox, IdlePauses, markActive, newSandboxId } from './manager/lifecycle.js';
import { WarmPools, type PoolStatus } from './manager/pools.js';
import { killProcess, listProcesses } from './manager/processes.js';
import { reapPass, reconcile } from './manager/reaper.js';
import { findSnapshot, forkRequest, forkSource, listSnapshots, memoryForkSource, removeSnapshot, restoreSource, takeSnapshot } from './manager/snapshots.js';
import { handleOf, Runtimes } from './manager/runtimes.js';
import { Volumes, type VolumeFileOps } from './manager/volumes.js';
import { Terminals, type TerminalAttachment } from './manager/terminals.js';
import { OpenTerminalRequestSchema, type OpenTerminalRequest, type Terminal } from '../contract/terminals.js';
import { normalizeMounts } from '../contract/volumes.js';
import type { LifecycleEvents } from './lifecycle-events.js';
import type { WebhookDelivery } from '../contract/webhooks.js';
import { listDeliveries, type DeliveryFilter } from './manager/deliveries.js';
import { cpuPercent, UsageSampler, type UsageSamplerOpts } from './manager/usage-sampler.js';
import type { SandboxUsage, SandboxUsageReport, UsageOverview, UsageSample } from '../contract/usage.js';
import { Desktops, type DesktopTarget } from './manager/desktops.js';
import { ReplicaScope, type ReplicaIdentity, type ReplicaRoute } from './manager/replica.js';
import { DESKTOP_VNC_PORT, type Desktop } from '../contract/desktop.js';
import { SANDBOX_API_URL, SANDBOX_TOKEN_PATH, type CreatedSandboxToken, type CreateSandboxTokenRequest, type SandboxToken } from '../contract/tokens.js';
import { listSandboxTokens, mintSandboxToken, revokeSandboxToken, sandboxTokenCaller } from './manager/sandbox-tokens.js';

export type { Caller, Scope } from './manager/access.js';
export type { ReplicaIdentity, ReplicaRoute } from './manager/replica.js';
export { ElsewhereError } from './manager/replica.js';
export { newExecId } from './manager/execs.js';
export { newSandboxId } from './manager/lifecycle.js';

/** What `usage` reports (the contract's SandboxUsage). */
export type { SandboxUsage } from '../contract/usage.js';

/** Used and total bytes of the filesystem mounted at DIR, or undefined when nothing is mounted there. */
function diskUsage(dir: string): { used: number; total: number } | undefined {
  if (!isMountPoint(dir)) return undefined;
  const st = statfsSync(dir);
  return { used: (st.blocks - st.bfree) * st.bsize, total: st.blocks * st.bsize };
}

/** A terminal's default command: bash as a login shell where the image has it, else sh. */
const LOGIN_SHELL = ['/bin/sh', '-c', 'if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l'];

export interface ManagerOpts {
  policy: Policy;
  store: Store;
  runtimes: Partial<Record<RuntimeName, Runtime>>;
  logger: Logger;
  /** How often the reaper looks for expired, idle and lost sandboxes. */
  reapIntervalMs?: number;
  /** Bytes of each stream kept in the exec history. */
  historyTailBytes?: number;
  /** A terminal nobody is attached to is hung up this long after its last client left (tests shorten it). @default 30 s (DETACHED_GRACE_MS) */
  terminalGraceMs?: number;
  /** Creates running at once; more wait in a short queue, beyond it callers get 429. @default 8 */
  maxConcurrentCreates?: number;
  /** @default 32 */
  createQueueLength?: number;
  metrics?: Metrics;
  /** The per-sandbox egress proxies; without it only egress mode none can be created. */
  egress?: EgressService;
  /** Sandbox disks (the same store the runtimes were given): orphans are removed at start. */
  disks?: DiskStore;
  /** Named volumes: where they live and how their files are reached without a sandbox; without it there are none. */
  volumes?: { store: VolumeStore; files: VolumeFileOps };
  /** Where the daemon's port proxy serves a sandbox's port, when it has a ports domain. */
  portUrl?: (sandboxId: string, port: number) => string;
  /** Told when a sandbox is created, paused, resumed or ended (webhooks); never awaited. */
  events?: LifecycleEvents;
  /** Usage sampling (intervals; per-sandbox metrics, AGENTBOX_METRICS_PER_SANDBOX=1 in the daemon). */
  usage?: UsageSamplerOpts;
  /**
   * Spans of creates, execs and file calls, children of the active request's span (the daemon's
   * own tracer; src/observability/tracing.ts). @default Tracing.disabled()
   */
  tracing?: Tracing;
  /**
   * This daemon as a replica on a store others share (core/manager/replica.ts); absent: the store's
   * only daemon, which owns every row.
   */
  replica?: ReplicaIdentity;
}

/** The manager's state, split by job; each part function takes from it only what it needs. */
interface Parts {
  policy: Policy;
  store: Store;
  logger: Logger;
  metrics: Metrics | undefined;
  egress: EgressService | undefined;
  disks: DiskStore | undefined;
  snapshotFiles: SnapshotFiles | undefined;
  volumes: Volumes | undefined;
  runtimes: Runtimes;
  inflight: Inflight;
  pools: WarmPools;
  pauses: IdlePauses;
  execs: ExecRecorder;
  terminals: Terminals;
  desktops: Desktops;
  quotas: QuotaLedger;
  createGate: CreateGate;
  events: LifecycleEvents | undefined;
  usage: UsageSampler;
  tracing: Tracing;
  replica: ReplicaScope;
}

export class SandboxManager {
  private readonly parts: Parts;
  private reaper: NodeJS.Timeout | undefined;
  private reaping: Promise<void> | undefined;
  private closing = false;

  constructor(private readonly opts: ManagerOpts) {
    const { policy, store, logger, metrics, egress } = opts;
    const runtimes = new Runtimes(opts.runtimes);
    const inflight = new Inflight();
    const tracing = opts.tracing ?? Tracing.disabled();
    const replica = new ReplicaScope({ store, runtimes, logger, identity: opts.replica });
    const execs = new ExecRecorder({ store, logger, metrics, tailBytes: opts.historyTailBytes ?? 65536, tracing, replica: replica.id });
    const pauses = new IdlePauses({ store, runtimes, logger, metrics, events: opts.events });
    this.parts = {
      policy,
      store,
      logger,
      metrics,
      egress,
      disks: opts.disks,
      snapshotFiles: opts.disks ? new SnapshotFiles(opts.disks) : undefined,
      volumes: opts.volumes ? new Volumes({ store, volumes: opts.volumes.store, files: opts.volumes.files, logger, inflight, here: (id) => { const s = store.getSandbox(id); return !s || (replica.mine(s) && !replica.shared(s)); } }) : undefined,
      runtimes,
      inflight,
      pools: new WarmPools(),
      pauses,
      execs,
      terminals: new Terminals({ execs, logger, ...(opts.terminalGraceMs !== undefined ? { detachedGraceMs: opts.terminalGraceMs } : {}) }),
      desktops: new Desktops(),
      quotas: new QuotaLedger(policy, store),
      createGate: new CreateGate(opts.maxConcurrentCreates ?? 8, opts.createQueueLength ?? 32),
      events: opts.events,
      usage: new UsageSampler({ store, runtimes, pauses, logger, metrics, reaches: (stored) => replica.reaches(stored) }, opts.usage),
      tracing,
      replica,
    };
  }

  /**
   * Open a terminal: REQ's command (a login shell by default) on a pseudo-terminal inside the sandbox,
   * recorded as an exec; resolves once it runs. Attach to it with `attachTerminal`.
   */
  async openTerminal(id: string, req: OpenTerminalRequest, caller: Caller): Promise<Terminal> {
    need(caller, 'exec');
    const r = OpenTerminalRequestSchema.parse(req);
    const stored = this.findReachable(id, caller);
    const rt = this.parts.runtimes.of(stored);
    if (!rt.openPty) throw new ConflictError(`the ${rt.name} runtime has no terminals`, { hint: 'use exec, or a sandbox of another runtime' });
    this.parts.terminals.checkRoom(id);
    this.parts.quotas.checkExecMinutes(caller.tenant);
    const cmd = r.cmd ?? LOGIN_SHELL;
    const exec = this.parts.execs.begin({ execId: newExecId(), sandboxId: id, tenant: caller.tenant, runtime: stored.sandbox.runtime, cmd });
    const env = execOpts(stored, { cmd, ...(r.env ? { env: r.env } : {}) }, exec.execId).env;
    return this.parts.terminals.open({
      exec,
      cmd,
      cols: r.cols,
      rows: r.rows,
      keepAlive: r.keepAlive,
      start: async () => {
        await this.parts.pauses.wake(stored);
        return rt.openPty!(handleOf(stored), { cmd, cols: r.cols, rows: r.rows, env, execId: exec.execId, ...(r.cwd ? { cwd: r.cwd } : {}) });
      },
    });
  }

  /**
   * A connection to a server listening on PORT inside the sandbox (its 127.0.0.1 or ::1), made from
   * inside, so the sandbox's network stays closed. ConflictError when nothing listens there.
   */
  async openPort(id: string, port: number, caller: Caller): Promise<Duplex> {
    need(caller, 'exec');
    const stored = this.findReachable(id, caller);
    const rt = this.parts.runtimes.of(stored);
    if (!rt.openPort) throw new ConflictError(`the ${rt.name} runtime cannot reach a sandbox's ports`, { hint: 'use a sandbox of another runtime' });
    markActive(this.parts.store, id);
    await this.parts.pauses.wake(stored);
    const stream = await rt.openPort(handleOf(stored), port);
    // An open connection keeps the sandbox from being idled out under it.
    const release = this.parts.execs.hold(id);
    stream.once('close', () => {
      release();
      markActive(this.parts.store, id);
    });
    return stream;
  }

  /**
   * The sandbox's desktop (ARCHITECTURE.md, "Desktops"): whether its image has one, whether it
   * runs, its size, where its VNC route is. Runs no exec, wakes and marks nothing.
   */
  async desktop(id: string, caller: Caller): Promise<Desktop> {
    need(caller, 'read');
    const stored = this.findReachable(id, caller);
    return this.parts.desktops.status(this.desktopTarget(stored), this.parts.pauses.has(id));
  }

  /**
   * Start the sandbox's desktop unless it runs (`agentbox-desktop start`, an exec of its history);
   * resolves once its VNC server accepts. ConflictError when the image has no desktop.
   */
  async ensureDesktop(id: string, caller: Caller): Promise<Desktop> {
    const stored = await this.startDesktop(id, caller);
    return this.parts.desktops.status(this.desktopTarget(stored), false);
  }

  /** A connection to the sandbox's VNC server (RFB), its desktop started first when needed; it keeps the sandbox busy as a port does. */
  async openDesktop(id: string, caller: Caller): Promise<Duplex> {
    await this.startDesktop(id, caller);
    return this.openPort(id, DESKTOP_VNC_PORT, caller);
  }

  /** Wake the sandbox and start its desktop unless it runs; the sandbox's record. */
  private async startDesktop(id: string, caller: Caller): Promise<ReturnType<typeof findRunning>> {
    need(caller, 'exec');
    const stored = this.findReachable(id, caller);
    markActive(this.parts.store, id);
    await this.parts.pauses.wake(stored);
    await this.parts.inflight.track(
      this.parts.desktops.ensure(this.desktopTarget(stored), (cmd, timeoutMs) => this.exec(id, { cmd, timeoutMs }, caller)),
    );
    return stored;
  }

  private desktopTarget(stored: ReturnType<typeof findRunning>): DesktopTarget {
    return { id: stored.sandbox.id, image: stored.sandbox.image, rt: this.parts.runtimes.of(stored), handle: handleOf(stored) };
  }

  /**
   * Let browsers reach PORT of the sandbox through the daemon's port proxy: a new access token
   * (returned once, kept as its sha256; 1 h unless `ttl`), or, with `public`, anyone.
   */
  grantPortAccess(id: string, port: number, req: GrantPortAccessRequest, caller: Caller): PortAccess {
    need(caller, 'manage');
    const r = GrantPortAccessRequestSchema.parse(req);
    const p = PortNumberSchema.parse(port);
    this.findReachable(id, caller);
    const now = new Date();
    const ttlMs = r.ttl !== undefined ? parseDuration(r.ttl) : r.public ? undefined : DEFAULT_TOKEN_TTL_MS;
    const expiresAt = ttlMs === undefined ? null : new Date(now.getTime() + ttlMs).toISOString();
    const token = r.public ? undefined : newPortToken();
    this.parts.store.portAccess.insert({ id: newGrantId(), sandboxId: id, port: p, tokenSha256: token ? sha256(token) : null, public: r.public, createdAt: now.toISOString(), expiresAt });
    this.parts.store.audit({ tenant: caller.tenant, actor: caller.actor, action: r.public ? 'port_public' : 'port_token', sandboxId: id, detail: { port: p, expiresAt } });
    return { sandboxId: id, port: p, public: r.public, ...(token ? { token } : {}), expiresAt, url: this.opts.portUrl?.(id, p) ?? null };
  }

  /**
   * A short-lived token scoped to this sandbox (ARCHITECTURE.md, "Sandbox tokens"), shown once; with
   * `inject`, also written into the sandbox at SANDBOX_TOKEN_PATH. Needs manage on the sandbox, so
   * a sandbox token never mints another.
   */
  async createToken(id: string, req: CreateSandboxTokenRequest, caller: Caller): Promise<CreatedSandboxToken> {
    need(caller, 'manage');
    const stored = req.inject ? this.findReachable(id, caller) : findRunning(this.parts.store, id, caller);
    const { token, record } = mintSandboxToken(this.parts.store, stored, req, caller);
    this.parts.store.audit({ tenant: caller.tenant, actor: caller.actor, action: 'token_create', sandboxId: id, detail: { token: record.id, scopes: record.scopes, expiresAt: record.expiresAt, inject: req.inject === true } });
    this.opts.logger.info({ sandbox_id: id, token_id: record.id, scopes: record.scopes, expires_at: record.expiresAt, actor: caller.actor }, 'sandbox token minted');
    if (req.inject) {
      try {
        await this.injectToken(stored, token);
      } catch (err) {
        revokeSandboxToken(this.parts.store, id, record.id);
        throw err;
      }
    }
    return { ...record, token, ...(req.inject ? { injectedPath: SANDBOX_TOKEN_PATH } : {}), apiUrl: stored.sandbox.egress.mode === 'none' ? null : SANDBOX_API_URL };
  }

  /** Write a token into the sandbox (its user's file), then make it 0600 where the image has chmod. */
  private async injectToken(stored: StoredSandbox, token: string): Promise<void> {
    const rt = this.parts.runtimes.of(stored);
    const handle = handleOf(stored);
    markActive(this.parts.store, stored.sandbox.id);
    await this.parts.pauses.wake(stored);
    await rt.removePath(handle, SANDBOX_TOKEN_PATH).catch(() => undefined);
    await this.parts.inflight.track(rt.writeFile(handle, SANDBOX_TOKEN_PATH, Readable.from([Buffer.from(`${token}\n`)])));
    // The files API writes 0644; every process in a sandbox runs as its one user, so this is tidiness, not a wall.
    const chmod = await collectResult('chmod', rt.exec(handle, ['chmod', '600', SANDBOX_TOKEN_PATH], { env: {}, timeoutMs: 5000, outputLimitBytes: 4096, execId: newExecId() })).catch(() => undefined);
    if (chmod?.exitCode !== 0) this.opts.logger.debug({ sandbox_id: stored.sandbox.id }, 'could not chmod the injected token (no chmod in the image?)');
  }

  /** The sandbox's tokens, without their secrets (revoked and expired ones until the sandbox ends). */
  listTokens(id: string, caller: Caller): SandboxToken[] {
    need(caller, 'read');
    findSandbox(this.parts.store, id, caller);
    return listSandboxTokens(this.parts.store, id);
  }

  /** Revoke one token of the sandbox now. */
  revokeToken(id: string, tokenId: string, caller: Caller): SandboxToken {
    need(caller, 'manage');
    findSandbox(this.parts.store, id, caller);
    const t = revokeSandboxToken(this.parts.store, id, tokenId);
    this.parts.store.audit({ tenant: caller.tenant, actor: caller.actor, action: 'token_revoke', sandboxId: id, detail: { token: tokenId } });
    this.opts.logger.info({ sandbox_id: id, token_id: tokenId, actor: caller.actor }, 'sandbox token revoked');
    return t;
  }

  /** For the Authenticator: the caller a sandbox token (by its sha256, hex) stands for, if it is live. */
  sandboxTokenCaller(tokenSha256: string): Caller | undefined {
    return sandboxTokenCaller(this.parts.store, tokenSha256);
  }

  /** Revoke every token of PORT (every port when undefined) and make it private again; how many grants went. */
  revokePortAccess(id: string, port: number | undefined, caller: Caller): number {
    need(caller, 'manage');
    findSandbox(this.parts.store, id, caller);
    const n = this.parts.store.portAccess.revoke(id, port === undefined ? undefined : PortNumberSchema.parse(port));
    this.parts.store.audit({ tenant: caller.tenant, actor: caller.actor, action: 'port_revoke', sandboxId: id, detail: { port: port ?? 'all', grants: n } });
    return n;
  }

  /**
   * For the port proxy, which has no token of the API: a connection to PORT of sandbox ID when TOKEN
   * is a live access token of that port or the port is public; NotFoundError otherwise (as for an
   * unknown sandbox, so neither can be probed).
   */
  async openPortByGrant(id: string, port: number, token: string | undefined): Promise<Duplex> {
    const stored = this.parts.store.getSandbox(id);
    if (!stored || !portAccessAllowed(this.parts.store, id, port, token)) {
      throw new NotFoundError(`no reachable port ${port} in sandbox ${id}`, { hint: 'ask the sandbox\'s owner for an access token: agentbox port-access ID PORT' });
    }
    return this.openPort(id, port, { tenant: stored.sandbox.tenant, actor: 'port-proxy', scopes: ['exec'] });
  }

  /**
   * Pause a running sandbox on request: frozen, or hibernated where the runtime can. Any later call
   * into it (exec, files, terminals, ports) or `resume` brings it back; its TTL still runs.
   */
  async pause(id: string, req: PauseRequest, caller: Caller): Promise<Sandbox> {
    need(caller, 'manage');
    const r = PauseRequestSchema.parse(req);
    const stored = this.findReachable(id, caller);
    const rt = this.parts.runtimes.of(stored);
    await this.parts.pauses.pauseOnRequest(rt, stored, r.mode === 'hibernate' ? 'hibernated' : 'frozen');
    this.parts.store.audit({ tenant: caller.tenant, actor: caller.actor, action: 'pause', sandboxId: id, detail: { mode: r.mode } });
    return this.get(id, caller);
  }

  /** Resume a paused sandbox now (a running one is left as it is). */
  async resume(id: string, caller: Caller): Promise<Sandbox> {
    need(caller, 'manage');
    const stored = this.findReachable(id, caller);
    await this.parts.pauses.resumeOnRequest(stored);
    markActive(this.parts.store, id);
    return this.get(id, caller);
  }

  /**
   * What a running sandbox uses now: CPU over a short window, memory, processes, and its disk (when
   * the daemon mounts it: not a microVM's, which its guest mounts). Wakes nothing: a paused sandbox
   * reads as idle.
   */
  async usage(id: string, caller: Caller, windowMs = 250): Promise<SandboxUsage> {
    need(caller, 'read');
    const stored = this.findReachable(id, caller);
    const rt = this.parts.runtimes.of(stored);
    const handle = handleOf(stored);
    const limits = stored.sandbox.limits;
    const paused = this.parts.pauses.has(id);
    const first = paused ? undefined : await rt.stats(handle);
    if (first) await new Promise((r) => setTimeout(r, windowMs));
    const second = paused ? undefined : await rt.stats(handle);
    return this.usageOf(id, limits, {
      at: new Date().toISOString(),
      cpuPct: first && second ? cpuPercent(second.cpuMs - first.cpuMs, windowMs, limits.cpus) : 0,
      memoryBytes: second?.memoryBytes ?? 0,
      pids: second?.pids ?? 0,
    });
  }

  /** A measurement with the sandbox's limits and its disk (when the daemon mounts it). */
  private usageOf(id: string, limits: Sandbox['limits'], m: UsageSample): SandboxUsage {
    const disk = this.parts.disks ? diskUsage(this.parts.disks.mountPoint(id)) : undefined;
    return {
      at: m.at,
      cpuCount: limits.cpus,
      cpuUsedPct: m.cpuPct,
      memoryBytes: m.memoryBytes,
      memoryLimitBytes: limits.memoryMb * 2 ** 20,
      pids: m.pids,
      diskUsedBytes: disk?.used ?? null,
      diskTotalBytes: disk?.total ?? limits.diskMb * 2 ** 20,
    };
  }

  /**
   * A running sandbox's usage now and over the last minutes (oldest first). Reading it keeps it
   * sampled for a minute; the first read has no samples yet, and `current` is measured on the spot.
   */
  async usageReport(id: string, caller: Caller): Promise<SandboxUsageReport> {
    need(caller, 'read');
    const stored = this.findReachable(id, caller);
    const sampler = this.parts.usage;
    sampler.want([id]);
    const samples = [...sampler.samples(id)];
    const last = samples.at(-1);
    const current = last && Date.now() - Date.parse(last.at) <= 2 * sampler.intervalMs ? this.usageOf(id, stored.sandbox.limits, last) : await this.usage(id, caller);
    return { sandboxId: id, current, intervalMs: sampler.intervalMs, samples };
  }

  /**
   * The latest sample and the last `points` samples' CPU and memory of every running sandbox the
   * caller sees (a label-scoped token: its own), for a dashboard's list. Reading keeps them sampled
   * for a minute. No runtime is called here: it answers from memory, however many sandboxes there are.
   */
  usageOverview(caller: Caller, points = 30): UsageOverview {
    needTenantWide(caller, 'read', 'see the tenant\'s usage overview');
    const running = listVisible(this.parts.store, caller, {}).filter((sb) => sb.state === 'running');
    const sampler = this.parts.usage;
    sampler.want(running.map((sb) => sb.id));
    const n = Math.max(1, Math.min(points, 1000));
    return {
      intervalMs: sampler.intervalMs,
      sandboxes: running.map((sb) => {
        const samples = sampler.samples(sb.id).slice(-n);
        return { sandboxId: sb.id, latest: samples.at(-1) ?? null, cpuPct: samples.map((x) => x.cpuPct), memoryBytes: samples.map((x) => x.memoryBytes) };
      }),
    };
  }

  /** Sandboxes whose usage is sampled now (tests: an ended sandbox leaves nothing behind). */
  get usageSampled(): number {
    return this.parts.usage.size;
  }

  /** The sandbox's terminals: running ones, and those that ended within the last minute. */
  listTerminals(id: string, caller: Caller): Terminal[] {
    need(caller, 'read');
    this.terminalHost(id, caller);
    return this.parts.terminals.list(id);
  }

  getTerminal(id: string, terminalId: string, caller: Caller): Terminal {
    need(caller, 'read');
    this.terminalHost(id, caller);
    return this.parts.terminals.get(id, terminalId);
  }

  /** Attach to a terminal: its recent output, then live output; typing, resizes and signals go to it. */
  attachTerminal(id: string, terminalId: string, caller: Caller): TerminalAttachment {
    need(caller, 'exec');
    this.terminalHost(id, caller);
    markActive(this.parts.store, id);
    return this.parts.terminals.attach(id, terminalId);
  }

  /** Resize a terminal; no client need be attached. */
  resizeTerminal(id: string, terminalId: string, cols: number, rows: number, caller: Caller): Terminal {
    need(caller, 'exec');
    this.terminalHost(id, caller);
    markActive(this.parts.store, id);
    return this.parts.terminals.resize(id, terminalId, cols, rows);
  }

  /** Hang up a terminal: its session gets SIGHUP, and SIGKILL 2 s later. */
  closeTerminal(id: string, terminalId: string, caller: Caller): Terminal {
    need(caller, 'exec');
    this.terminalHost(id, caller);
    return this.parts.terminals.close(id, terminalId);
  }

  /** Terminals live in the memory of the replica that holds the sandbox: another one answers the conflict naming it. */
  private terminalHost(id: string, caller: Caller): void {
    this.parts.replica.requireReach(findSandbox(this.parts.store, id, caller));
  }

  get policy(): Policy {
    return this.opts.policy;
  }

  /** Reconcile with what exists on the host, fill the warm pools, then start the reaper. */
  async start(): Promise<void> {
    this.parts.replica.start();
    await reconcile(this.parts);
    await this.parts.volumes?.reconcile();
    await this.parts.pools.start(this.parts);
    const every = this.opts.reapIntervalMs ?? 1000;
    this.reaper = setInterval(() => this.reapTick(), every);
    this.reaper.unref();
    this.parts.usage.start();
  }

  /** Resolves when every warm pool is full (benchmarks, tests). */
  async poolsFull(): Promise<void> {
    await this.parts.pools.whenFull();
  }

  poolStatus(): PoolStatus[] {
    return this.parts.pools.status();
  }

  /**
   * Stop the reaper, destroy the warm pools' members (nobody's sandboxes yet), wait for running
   * operations; then, with `sandboxes: 'stop'` (the default), end every active sandbox as
   * stopped / daemon_stopped; with `'leave'`, leave them running for the next daemon to adopt
   * (their proxies close with this daemon: no egress until the next one starts).
   */
  async close(opts: { sandboxes?: 'stop' | 'leave' } = {}): Promise<void> {
    this.closing = true;
    if (this.reaper) clearInterval(this.reaper);
    await this.reaping?.catch(() => undefined);
    await this.parts.usage.stop();
    await this.parts.pools.close();
    this.parts.terminals.closeAll();
    await this.parts.inflight.settled();
    if (opts.sandboxes !== 'leave') {
      // Only what this replica holds: another's host-local sandboxes are not ours to end, and shared
      // ones are served on by the other replicas while any is alive.
      const others = this.parts.replica.othersAlive();
      for (const stored of this.parts.store.listSandboxes({ states: ACTIVE })) {
        if (this.parts.replica.shared(stored) ? others : !this.parts.replica.mine(stored)) continue;
        await endSandbox(this.parts, stored, 'stopped', 'daemon_stopped', 'daemon shutdown').catch(() => undefined);
      }
    }
    await this.parts.egress?.closeAll();
    for (const [, rt] of this.parts.runtimes.entries()) await rt.close();
    this.parts.replica.stop();
  }

  /** The runtime for a name, probed once; a clear runtime_unavailable when it cannot work here. */
  async runtime(name: RuntimeName): Promise<Runtime> {
    return this.parts.runtimes.probed(name);
  }

  async create(req: CreateSandboxRequest, caller: Caller, opts: { diskFrom?: string; memoryFrom?: string } = {}): Promise<Sandbox> {
    // kind: restore (a snapshot), fork (a running sandbox's disk), else createSandbox says warm or cold.
    const kind = req.snapshot !== undefined ? 'restore' : opts.diskFrom !== undefined ? 'fork' : undefined;
    return this.parts.tracing.inSpan('sandbox.create', { 'agentbox.tenant': caller.tenant, ...(kind ? { 'agentbox.create.kind': kind } : {}) }, async (span) => {
      const sb = await this.createNow(req, caller, opts);
      if (span.isRecording()) span.setAttributes({ ...sandboxAttributes(sb), 'container.image.name': sb.image, ...(sb.profile ? { 'agentbox.profile': sb.profile } : {}) });
      return sb;
    });
  }

  private async createNow(req: CreateSandboxRequest, caller: Caller, opts: { diskFrom?: string; memoryFrom?: string }): Promise<Sandbox> {
    if (this.closing) throw new RuntimeUnavailableError('the daemon is shutting down', { hint: 'retry in a moment' });
    needTenantWide(caller, 'manage', 'create sandboxes');
    if (caller.labels) req = { ...req, labels: { ...req.labels, ...caller.labels } };
    let diskFrom = opts.diskFrom;
    let memoryFrom = opts.memoryFrom;
    const origin = req.snapshot !== undefined ? 'restore' : opts.diskFrom !== undefined ? 'fork' : 'cold';
    if (req.snapshot !== undefined) ({ req, diskFrom, memoryFrom } = await restoreSource(this.parts, { ...req, snapshot: req.snapshot }, caller));
    const release = await this.parts.createGate.acquire();
    try {
      let spec = resolveSpec(this.opts.policy, req, { tenant: caller.tenant, id: newSandboxId() });
      const mounts = normalizeMounts(req.volumes);
      if (mounts.length > 0) {
        this.volumes.checkMounts(mounts, caller);
        spec = { ...spec, volumes: mounts };
      }
      const egress = spec.egress.mode === 'none' ? undefined : requireEgress(this.parts.egress);
      const unreserve = this.parts.quotas.reserve(spec);
      try {
        return await createSandbox(this.parts, spec, egress, caller, unreserve, diskFrom, memoryFrom, origin);
      } finally {
        unreserve();
      }
    } finally {
      release();
    }
  }

  /** Take a snapshot of a running sandbox's disk (its whole writable state). */
  async snapshot(id: string, req: CreateSnapshotRequest, caller: Caller): Promise<Snapshot> {
    needTenantWide(caller, 'manage', 'take snapshots');
    const stored = this.findReachable(id, caller);
    await this.parts.pauses.wake(stored);
    markActive(this.parts.store, id);
    return this.parts.inflight.track(takeSnapshot(this.parts, stored, req.name, caller, { memory: req.memory === true }));
  }

  listSnapshots(caller: Caller): Snapshot[] {
    needTenantWide(caller, 'read', 'see snapshots');
    return listSnapshots(this.parts.store, caller);
  }

  /** By id or name. */
  getSnapshot(ref: string, caller: Caller): Snapshot {
    needTenantWide(caller, 'read', 'see snapshots');
    return findSnapshot(this.parts.store, ref, caller);
  }

  async removeSnapshot(ref: string, caller: Caller): Promise<Snapshot> {
    needTenantWide(caller, 'manage', 'remove snapshots');
    const snap = findSnapshot(this.parts.store, ref, caller);
    await removeSnapshot(this.parts, snap, caller);
    return snap;
  }

  /**
   * New sandboxes whose files are a copy of a running sandbox's at this moment (copy-on-write:
   * milliseconds, no copied data); the parent keeps running. All or nothing: when one child cannot
   * be made, the others are removed again.
   */
  async fork(id: string, req: ForkRequest, caller: Caller): Promise<Sandbox[]> {
    needTenantWide(caller, 'manage', 'fork sandboxes');
    const parent = this.findReachable(id, caller);
    await this.parts.pauses.wake(parent);
    markActive(this.parts.store, id);
    const t0 = performance.now();
    const { source, memory } = req.memory ? await memoryForkSource(this.parts, parent) : { source: await forkSource(this.parts, parent), memory: undefined };
    const children: Sandbox[] = [];
    try {
      for (let i = 0; i < (req.count ?? 1); i++) children.push(await this.create(forkRequest(parent), caller, { diskFrom: source, ...(memory ? { memoryFrom: memory } : {}) }));
    } catch (err) {
      for (const c of children) await this.delete(c.id, caller).catch(() => undefined);
      throw err;
    } finally {
      await this.parts.disks?.dropScratch(source);
      if (memory) await this.parts.runtimes.of(parent).dropMemory?.(memory).catch((err: unknown) => this.opts.logger.warn({ sandbox_id: id, err }, 'could not remove a fork\'s memory image'));
    }
    this.parts.store.audit({ tenant: parent.sandbox.tenant, actor: caller.actor, action: 'fork', sandboxId: id, detail: { children: children.map((c) => c.id), memory: Boolean(memory) } });
    this.parts.metrics?.forkSeconds.observe((performance.now() - t0) / 1000);
    this.opts.logger.info({ sandbox_id: id, children: children.map((c) => c.id), memory: Boolean(memory), ms: Math.round(performance.now() - t0) }, 'sandbox forked');
    return children;
  }


  /** Named volumes: create, list, remove, files without a sandbox (each call checks the caller). */
  get volumes(): Volumes {
    if (!this.parts.volumes) throw new RuntimeUnavailableError('this daemon has no volume store', { hint: 'volumes need the daemon started by agentbox serve (or the CLI)' });
    return this.parts.volumes;
  }

  get(id: string, caller: Caller): Sandbox {
    need(caller, 'read');
    return this.withPause(findSandbox(this.parts.store, id, caller).sandbox);
  }

  list(caller: Caller, filter: { labels?: Record<string, string>; all?: boolean } = {}): Sandbox[] {
    need(caller, 'read');
    return listVisible(this.parts.store, caller, filter).map((sb) => this.withPause(sb));
  }

  private withPause(sb: Sandbox): Sandbox {
    const paused = this.parts.pauses.state(sb.id);
    return paused ? { ...sb, paused } : sb;
  }

  /**
   * Stream an exec: output chunks as they come, then one `exit`. Recorded in the exec history.
   * `input`, when given, is the command's stdin as it arrives (instead of `req.stdin`).
   */
  execStream(id: string, req: ExecRequest, caller: Caller, signal?: AbortSignal, input?: Readable): { execId: string; events: AsyncIterable<ExecEvent> } {
    need(caller, 'exec');
    const stored = this.findReachable(id, caller);
    this.parts.quotas.checkExecMinutes(caller.tenant);
    const exec = this.parts.execs.begin({ execId: newExecId(), sandboxId: id, tenant: caller.tenant, runtime: stored.sandbox.runtime, cmd: req.cmd, sandbox: stored.sandbox });
    const rt = this.parts.runtimes.of(stored);
    const events = this.parts.execs.events(exec, async () => {
      const wokeMs = await this.parts.pauses.wake(stored);
      const run = rt.exec(handleOf(stored), req.cmd, execOpts(stored, req, exec.execId, signal, input));
      return wokeMs === undefined ? run : withWake(run, wokeMs);
    });
    return { execId: exec.execId, events: this.parts.inflight.trackIterable(events) };
  }

  /** Buffered exec: the whole result at once. */
  async exec(id: string, req: ExecRequest, caller: Caller, signal?: AbortSignal): Promise<ExecResult> {
    const { execId, events } = this.execStream(id, req, caller, signal);
    return collectResult(execId, events);
  }

  /** The sandbox's exec history, newest first, without output. */
  execHistory(id: string, caller: Caller, limit = 100): ExecRecord[] {
    need(caller, 'read');
    findSandbox(this.parts.store, id, caller);
    return this.parts.store.listExecs(id, limit).map((e) => toExecRecord(e, false));
  }

  /** One exec with the tails of its output. */
  execRecord(id: string, execId: string, caller: Caller): ExecRecord {
    need(caller, 'read');
    findSandbox(this.parts.store, id, caller);
    return toExecRecord(storedExec(this.parts.store, id, execId), true);
  }

  /** A running exec's events (replayed, then live); a finished one from its stored tail. */
  followExec(id: string, execId: string, caller: Caller): AsyncIterable<ExecEvent> {
    need(caller, 'read');
    findSandbox(this.parts.store, id, caller);
    return this.parts.execs.followLive(id, execId) ?? replayStored(storedExec(this.parts.store, id, execId));
  }

  /** A running sandbox about to be entered for a file operation: checked, marked active, thawed. */
  private async enterForFiles(id: string, caller: Caller, span: Span): Promise<{ rt: Runtime; handle: SandboxHandle }> {
    need(caller, 'files');
    const stored = this.findReachable(id, caller);
    if (span.isRecording()) span.setAttributes(sandboxAttributes(stored.sandbox));
    markActive(this.parts.store, id);
    await this.parts.pauses.wake(stored);
    return { rt: this.parts.runtimes.of(stored), handle: handleOf(stored) };
  }

  /** A `sandbox.files.OP` span around a file call (the path bounded; never the bytes). */
  private fileSpan<T>(op: 'read' | 'write' | 'list' | 'remove', id: string, path: string, fn: (span: Span) => Promise<T>): Promise<T> {
    return this.parts.tracing.inSpan(`sandbox.files.${op}`, { 'agentbox.sandbox.id': id, 'file.path': path.slice(0, 1024) }, fn);
  }

  async readFile(id: string, path: string, caller: Caller): Promise<Readable> {
    const tracing = this.parts.tracing;
    if (!tracing.enabled) {
      const { rt, handle } = await this.enterForFiles(id, caller, tracing.startSpan('', {}));
      return rt.readFile(handle, path);
    }
    // The span lasts until the file's bytes have gone through (or failed), and counts them.
    const span = tracing.startSpan('sandbox.files.read', { 'agentbox.sandbox.id': id, 'file.path': path.slice(0, 1024) });
    let src: Readable;
    try {
      const { rt, handle } = await this.enterForFiles(id, caller, span);
      src = await rt.readFile(handle, path);
    } catch (err) {
      failSpan(span, err);
      span.end();
      throw err;
    }
    let bytes = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        bytes += chunk.length;
        done(null, chunk);
      },
    });
    return pipeline(src, counter, (err) => {
      span.setAttribute('agentbox.file.bytes', bytes);
      if (err) failSpan(span, err);
      span.end();
    });
  }

  async writeFile(id: string, path: string, data: Readable, caller: Caller): Promise<number> {
    return this.fileSpan('write', id, path, async (span) => {
      const { rt, handle } = await this.enterForFiles(id, caller, span);
      const bytes = await this.parts.inflight.track(rt.writeFile(handle, path, data));
      span.setAttribute('agentbox.file.bytes', bytes);
      return bytes;
    });
  }

  async listDir(id: string, path: string, caller: Caller): Promise<DirEntry[]> {
    return this.fileSpan('list', id, path, async (span) => {
      const { rt, handle } = await this.enterForFiles(id, caller, span);
      const entries = await rt.listDir(handle, path);
      span.setAttribute('agentbox.file.entries', entries.length);
      return entries;
    });
  }

  async removePath(id: string, path: string, caller: Caller): Promise<void> {
    return this.fileSpan('remove', id, path, async (span) => {
      const { rt, handle } = await this.enterForFiles(id, caller, span);
      await rt.removePath(handle, path);
    });
  }

  /** A running sandbox's processes as seen inside it, each with the exec that started it (null: its init, agentbox's own). */
  async processes(id: string, caller: Caller): Promise<ProcessInfo[]> {
    need(caller, 'read');
    return listProcesses(this.parts, this.findReachable(id, caller));
  }

  /** Signal one process of a running sandbox (TERM unless asked); PID 1 is refused (forbidden), an unknown pid is not_found. */
  async killProcess(id: string, pid: number, req: KillProcessRequest, caller: Caller): Promise<KillResult> {
    need(caller, 'exec');
    const stored = this.findReachable(id, caller);
    return this.parts.inflight.track(killProcess(this.parts, stored, pid, req.signal ?? 'TERM', caller));
  }

  /** A running sandbox now ends `ttlMs` from now (at most its profile's ttl), audited. */
  setTtl(id: string, ttlMs: number, caller: Caller): Sandbox {
    need(caller, 'manage');
    const stored = findRunning(this.parts.store, id, caller);
    const allowed = resolveTtlChange(this.opts.policy, stored.sandbox.profile, ttlMs);
    const expiresAt = new Date(Date.now() + allowed).toISOString();
    this.parts.store.setExpiresAt(id, expiresAt);
    this.parts.store.audit({ tenant: stored.sandbox.tenant, actor: caller.actor, action: 'set_ttl', sandboxId: id, detail: { ttlMs: allowed, expiresAt } });
    return this.withPause(findSandbox(this.parts.store, id, caller).sandbox);
  }

  async stop(id: string, caller: Caller): Promise<Sandbox> {
    need(caller, 'manage');
    const stored = findSandbox(this.parts.store, id, caller);
    if (ACTIVE.includes(stored.sandbox.state)) this.parts.replica.requireReach(stored);
    if (ACTIVE.includes(stored.sandbox.state)) await endSandbox(this.parts, stored, 'stopped', 'stopped', caller.actor);
    return findSandbox(this.parts.store, id, caller).sandbox;
  }

  async delete(id: string, caller: Caller): Promise<Sandbox> {
    need(caller, 'manage');
    const stored = findSandbox(this.parts.store, id, caller);
    if (stored.sandbox.state === 'deleted') return stored.sandbox;
    if (ACTIVE.includes(stored.sandbox.state)) this.parts.replica.requireReach(stored);
    await endSandbox(this.parts, stored, 'deleted', stored.sandbox.endReason ?? 'deleted', caller.actor);
    return findSandbox(this.parts.store, id, caller).sandbox;
  }

  /**
   * One pass of the reaper (ttl, idle timeout, sandboxes that died on their own, idle ones to pause),
   * after the one under way if any.
   */
  async reapOnce(): Promise<void> {
    while (this.reaping) await this.reaping.catch(() => undefined);
    return this.runReapPass();
  }

  /**
   * The interval's pass: none while one is under way. A pass that outlasts the interval (a cluster's
   * destroy waits for its pod to go) would otherwise be joined by the next, which still sees the
   * sandbox the first is ending as running, and ends it again.
   */
  private reapTick(): void {
    if (this.reaping) return;
    void this.runReapPass().catch((err: unknown) => this.opts.logger.error({ err }, 'reaper failed'));
  }

  private runReapPass(): Promise<void> {
    this.reaping = (async () => {
      this.parts.replica.beat();
      await reapPass(this.parts);
    })().finally(() => {
      this.reaping = undefined;
    });
    return this.reaping;
  }

  /** This daemon's replica id (replica.ts); null without one (then every sandbox is its own). */
  get replicaId(): string | null {
    return this.parts.replica.id;
  }

  /**
   * Where a request about sandbox ID should be served instead of here: its holder's advertised API,
   * when that replica alone can enter it and is alive (replica.ts `forwardTo`). Only for a sandbox
   * the caller sees: for any other id, undefined, so the request gets here the not_found it always did.
   */
  ownerElsewhere(id: string, caller: Caller): ReplicaRoute | undefined {
    const stored = visibleSandbox(this.parts.store, id, caller);
    return stored ? this.parts.replica.forwardTo(stored) : undefined;
  }

  /** A running sandbox the caller sees and this replica can enter (replica.ts); else not_found or a conflict. */
  private findReachable(id: string, caller: Caller): StoredSandbox {
    const stored = findRunning(this.parts.store, id, caller);
    this.parts.replica.requireReach(stored);
    return stored;
  }

  /** Whether the reaper froze this sandbox for idleness. */
  isPaused(id: string): boolean {
    return this.parts.pauses.has(id);
  }

  /** Images are shared by every tenant: only the host's operator (manage scope, no tenants) manages them. */
  authorizeImages(caller: Caller): void {
    requireImageOperator(this.opts.policy, caller);
  }

  /** The sandbox's egress log (newest first) and, with `denied`, the hosts it was refused. */
  egressLog(id: string, caller: Caller, opts: { denied?: boolean; limit?: number } = {}): SandboxEgressLog {
    need(caller, 'read');
    return egressLogOf(this.parts.store, findSandbox(this.parts.store, id, caller).sandbox, opts);
  }

  /** Approve one more host for a running sandbox, within what its profile allows (see approveEgressHost). */
  allowEgress(id: string, host: string, caller: Caller): Sandbox {
    // Never a sandbox token (need refuses it manage): code inside must not widen its own egress.
    need(caller, 'manage');
    return approveEgressHost(this.parts, this.findReachable(id, caller).sandbox, host, caller);
  }

  /** The caller's tenant's webhook deliveries, newest first (a label-scoped token: only its sandboxes'). */
  webhookDeliveries(caller: Caller, filter: DeliveryFilter = {}): WebhookDelivery[] {
    needTenantWide(caller, 'read', 'see webhook deliveries');
    return listDeliveries(this.parts.store, caller, filter);
  }

  /** Subsystem health for /healthz. */
  async health(): Promise<Record<string, { ok: boolean; detail?: string }>> {
    const out: Record<string, { ok: boolean; detail?: string }> = {};
    try {
      this.parts.store.countActive('__health__');
      out.store = { ok: true };
    } catch (err) {
      out.store = { ok: false, detail: err instanceof Error ? err.message : String(err) };
    }
    for (const [name, rt] of this.parts.runtimes.entries()) {
      const r = await rt.probe();
      out[`runtime.${name}`] = r.ok ? { ok: true } : { ok: false, detail: r.reason ?? 'unavailable' };
    }
    for (const p of this.poolStatus()) {
      out[`pool.${p.image}${p.profile ? `/${p.profile}` : ''}`] = { ok: p.ready > 0, detail: `${p.ready}/${p.size} ready` };
    }
    return out;
  }
}

/** The exec's events, its result saying how long resuming its hibernated sandbox took first. */
async function* withWake(events: AsyncIterable<ExecEvent>, wokeMs: number): AsyncIterable<ExecEvent> {
  for await (const ev of events) yield ev.type === 'exit' ? { type: 'exit', result: { ...ev.result, wokeMs } } : ev;
}
