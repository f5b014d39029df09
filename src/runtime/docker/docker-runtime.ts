/**
 * The `docker` runtime: one hardened container per sandbox, through the Engine API (dockerode),
 * with runc (`container`) or runsc (`gvisor`). PID 1 and every exec go through agentbox-docker-init,
 * bind-mounted read-only from the host, so nothing of agentbox has to live in the image.
 *
 * Exit codes come from the Engine's exec inspect (the init relays the command's status); stderr
 * carries no framing of ours.
 */
import { randomBytes } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Duplex, Readable } from 'node:stream';
import { buffer as readAllOf, text } from 'node:stream/consumers';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { BadRequestError, ConflictError, InternalError, RuntimeUnavailableError } from '../../contract/errors.js';
import { EXIT_KILLED } from '../../contract/exit-codes.js';
import type { DirEntry, ExecEvent, Isolation, ProcessInfo, SignalName } from '../../contract/model.js';
import { SandboxFiles, type FileOpStarter } from '../files.js';
import { SandboxPorts } from '../ports.js';
import { SandboxPty, type PtyOpts, type PtyProcess } from '../pty.js';
import { SandboxProcesses, type ProcOpRunner } from '../processes.js';
import { execEnv } from '../shared.js';
import { EGRESS_MOUNT } from '../egress-plumbing.js';
import { claimDisk } from '../disk-owner.js';
import type { ExecOpts, HibernateKind, ProbeResult, Runtime, RuntimeObject, RuntimeSpec, RuntimeStats, RuntimeStatus, SandboxDisks, SandboxHandle } from '../types.js';
import { checkpointContainer, clearStaleRunscState, copyHibernation, dropCheckpoint, hasHibernateCheckpoint, hibernationSupport, parseMemoryImage, placeMemoryImage, restoreContainer } from './hibernation.js';
import { containerConfig, containerName, INIT_IN_CONTAINER, LABEL_HOME, LABEL_SANDBOX, SANDBOX_UID, SANDBOX_USER, LABEL_ID, LABEL_POOL } from './container-config.js';
import { engineAddress, engineError, engineMessage, newClient, START_HINT, statusOf } from './engine.js';
import { startEngineExec, type EngineExec } from './engine-exec.js';
import { AGENT_MOUNT, type AgentExec } from './exec-agent.js';
import { execEvents } from '../exec-events.js';
import { ExecRouter, type ExecRequest } from './exec-router.js';
import { ImageImporter, type ImageSource } from './images.js';
import { directEntryUsable } from './direct-entry.js';
import { RUN_DIR, stagedBinary } from '../staged-binary.js';
import { imageLayers, mountWritableRoot } from './writable-root.js';
import { findOomDir, memoryCgroupDirs, oomKills, WATCHDOG_LOG, watchdogKilled } from './oom.js';

export interface DockerRuntimeOpts {
  /** Local images (the image store); each is imported into Docker on first use. */
  images: ImageSource;
  /** Called before the first use of an image, e.g. to build the built-in busybox image on demand. */
  ensureImage?: (image: string) => Promise<void>;
  /** Short tag of this agentbox home: only containers labelled with it are listed and reaped. */
  homeTag: string;
  version: string;
  /** Engine connection. @default DOCKER_HOST, else /var/run/docker.sock */
  docker?: Docker.DockerOptions;
  /** Host path of the static init. @default AGENTBOX_DOCKER_INIT, else dist/native/agentbox-docker-init */
  initPath?: string;
  /** @default 3000 */
  probeTimeoutMs?: number;
  /** agentbox-helper, to enter runc containers directly instead of through an Engine exec (direct-entry.ts). */
  helper?: string;
  /** Host directory for gVisor sandboxes' exec-agent sockets (exec-agent.ts); absent: gVisor execs use the Engine. */
  agentDir?: string;
  /** For what the driver recovers from by itself (a container whose way in it could not find). */
  logger?: Logger;
  /** Each sandbox's /workspace and /tmp (runtime/types.ts); the engine must run on this host to bind them. */
  disks: SandboxDisks;
}

interface DockerData {
  containerId: string;
}

/** dist/src/runtime/docker/ → dist/native/agentbox-docker-init */
export function defaultInitPath(): string {
  return process.env.AGENTBOX_DOCKER_INIT ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'native', 'agentbox-docker-init');
}

const RUNSC_HINT =
  'register gVisor in /etc/docker/daemon.json: {"runtimes":{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--network=none","--host-uds=open","--oci-seccomp"]}}} and restart dockerd (scripts/start-dockerd.sh does both)';
const FILE_ENV = { PATH: '/usr/bin:/bin' };
/** The mounts a hibernated sandbox may have: no Unix socket of the host can be reached through them. */
const HIBERNATE_SAFE_MOUNTS = new Set([INIT_IN_CONTAINER, AGENT_MOUNT, '/workspace', '/tmp']);
/** How long a hibernate waits for the exec agent to close its connections to this host. */
const PARK_TIMEOUT_MS = 3000;

function dataOf(handle: SandboxHandle): DockerData {
  const id = (handle.data as Partial<DockerData>).containerId;
  if (typeof id !== 'string' || id.length === 0) throw new InternalError(`sandbox ${handle.id} has no docker runtime data`);
  return { containerId: id };
}

export class DockerRuntime implements Runtime {
  readonly name = 'docker' as const;
  readonly isolations: readonly Isolation[] = ['container', 'gvisor'];
  private readonly docker: Docker;
  private readonly address: string;
  private readonly initPath: string;
  private initCopy: string | undefined;
  private readonly importer: ImageImporter;
  private runtimes: Promise<Record<string, { path?: string; runtimeArgs?: string[] }>> | undefined;
  private root: Promise<string> | undefined;
  /** Container id → its memory cgroup directory (undefined: not readable from here). */
  private readonly oomDirs = new Map<string, string | undefined>();
  private readonly router: ExecRouter;

  constructor(private readonly opts: DockerRuntimeOpts) {
    this.docker = newClient(opts.docker);
    this.address = engineAddress(opts.docker);
    this.initPath = opts.initPath ?? defaultInitPath();
    this.importer = new ImageImporter(this.docker, opts.images, this.address);
    const localEngine = this.address.startsWith('/') || this.address.startsWith('unix://');
    this.router = new ExecRouter({
      ...(opts.helper && directEntryUsable(opts.helper, localEngine) ? { helper: opts.helper } : {}),
      // The agent's socket is bound from this host's filesystem: only next to a local dockerd.
      ...(opts.agentDir && localEngine && process.env.AGENTBOX_GVISOR_EXEC_AGENT !== '0' ? { agentDir: opts.agentDir } : {}),
      inspect: (id) => this.docker.getContainer(id).inspect(),
      onError: (msg, err, containerId) => opts.logger?.warn({ container_id: containerId, err: err instanceof Error ? err.message : String(err) }, msg),
    });
  }

  /** Capability: writable roots are mounted by agentbox-helper (writable-root.ts). */
  get writableRoot(): boolean {
    return this.opts.helper !== undefined && process.getuid?.() === 0;
  }

  private requireHelper(): string {
    if (!this.opts.helper || !this.writableRoot) throw new BadRequestError('this docker runtime cannot make writable roots (it needs agentbox-helper and root)', { hint: 'use a profile without rootfs: writable' });
    return this.opts.helper;
  }

  async probe(): Promise<ProbeResult> {
    const timeoutMs = this.opts.probeTimeoutMs ?? 3000;
    const client = newClient(this.opts.docker, { timeout: timeoutMs });
    const unreachable: ProbeResult = { ok: false, reason: `dockerd is not reachable at ${this.address}`, hint: START_HINT };
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs + 200)));
    try {
      const answer = await Promise.race([client.ping().then(() => 'pong' as const), expired]);
      if (answer === 'timeout') return { ...unreachable, reason: `${unreachable.reason} (no answer within ${timeoutMs} ms)` };
      const info = (await Promise.race([client.info() as Promise<{ ServerVersion?: string; Runtimes?: Record<string, unknown> }>, expired])) as
        | { ServerVersion?: string; Runtimes?: Record<string, unknown> }
        | 'timeout';
      if (info === 'timeout') return { ...unreachable, reason: `${unreachable.reason} (no answer within ${timeoutMs} ms)` };
      try {
        accessSync(this.initPath, constants.X_OK);
      } catch {
        return { ok: false, reason: `the docker runtime's init is missing at ${this.initPath}`, hint: 'run npm run build (needs gcc and libc6-dev)' };
      }
      return { ok: true, details: { dockerd: info.ServerVersion ?? 'unknown', runtimes: Object.keys(info.Runtimes ?? {}).join(' '), endpoint: this.address } };
    } catch (err) {
      return { ...unreachable, reason: `${unreachable.reason}: ${engineMessage(err)}` };
    } finally {
      clearTimeout(timer);
    }
  }

  async prepareImage(image: string): Promise<void> {
    await this.opts.ensureImage?.(image);
    await this.importer.ensure(image);
  }

  /** The runsc binary dockerd runs (its registration's path). */
  private async runscPath(): Promise<string> {
    await this.requireRunsc(false);
    const found = await this.runtimes;
    return (found?.runsc as { path?: string } | undefined)?.path ?? 'runsc';
  }

  /** gVisor must be registered; a sandbox with network also needs it to open host Unix sockets (the proxy's). */
  private async requireRunsc(withEgress: boolean): Promise<void> {
    this.runtimes ??= (this.docker.info() as Promise<{ Runtimes?: Record<string, { runtimeArgs?: string[] }> }>).then((i) => i.Runtimes ?? {});
    let found: Record<string, { runtimeArgs?: string[] }>;
    try {
      found = await this.runtimes;
    } catch (err) {
      this.runtimes = undefined;
      throw engineError(err, 'cannot read docker info', this.address);
    }
    const runsc = found.runsc;
    if (!runsc) {
      this.runtimes = undefined; // look again next time: the operator may register it meanwhile
      throw new RuntimeUnavailableError(`gVisor (runsc) is not registered with dockerd at ${this.address} (runtimes: ${Object.keys(found).join(', ')})`, { hint: RUNSC_HINT });
    }
    const args = runsc.runtimeArgs ?? [];
    if (withEgress && !args.some((a) => /^--?(host-uds=(open|all)|fsgofer-host-uds)$/.test(a))) {
      this.runtimes = undefined;
      throw new RuntimeUnavailableError('gVisor (runsc) is registered without --host-uds=open, so a gVisor sandbox cannot reach its egress proxy', { hint: RUNSC_HINT });
    }
  }

  async create(spec: RuntimeSpec): Promise<SandboxHandle> {
    if (!this.isolations.includes(spec.isolation)) {
      throw new BadRequestError(`the docker runtime offers isolation container or gvisor, not ${spec.isolation}`, { hint: 'use --isolation container or --isolation gvisor' });
    }
    if (spec.memoryFrom && spec.isolation !== 'gvisor') throw new BadRequestError('only a gVisor sandbox can start from a memory image', { hint: 'fork gVisor sandboxes with their memory, others without' });
    await this.opts.ensureImage?.(spec.image);
    const imageRef = await this.importer.ensure(spec.image);
    if (spec.isolation === 'gvisor') await this.requireRunsc(spec.egressDir !== undefined);
    const disk = await this.opts.disks.create(spec.id, spec.limits.diskMb, spec.diskFrom);
    let agentDir: string | undefined;
    let rootBinds: string[] | undefined;
    try {
      await claimDisk(disk.root, SANDBOX_UID);
      if (spec.writableRoot) rootBinds = await mountWritableRoot(this.requireHelper(), await imageLayers(this.docker, imageRef), disk.root, SANDBOX_UID);
      agentDir = await this.router.prepareAgent(spec.id, spec.isolation === 'gvisor');
    } catch (err) {
      await this.opts.disks.destroy(spec.id).catch(() => undefined);
      throw err;
    }
    const config = containerConfig({
      diskRoot: disk.root,
      id: spec.id, imageRef, isolation: spec.isolation, limits: spec.limits, labels: spec.labels, ...(spec.pooled ? { pooled: true } : {}),
      ...(spec.egressDir ? { egressDir: spec.egressDir } : {}),
      ...(agentDir ? { agentDir } : {}),
      ...(spec.volumes?.length ? { volumes: spec.volumes } : {}),
      ...(rootBinds ? { rootBinds } : {}),
      initPath: this.stagedInitPath(), homeTag: this.opts.homeTag, version: this.opts.version,
    });
    let container: Docker.Container;
    try {
      container = await this.docker.createContainer(config);
    } catch (err) {
      await this.router.forget(undefined, spec.id);
      await this.opts.disks.destroy(spec.id).catch(() => undefined);
      throw engineError(err, `cannot create the container of sandbox ${spec.id}`, this.address);
    }
    try {
      if (spec.memoryFrom) {
        // Not booted: the processes of the sandbox the image was taken of go on here.
        const root = await this.dockerRoot();
        const checkpoint = await placeMemoryImage(root, spec.memoryFrom, container.id);
        await restoreContainer(this.docker, root, container.id, checkpoint);
      } else {
        await container.start();
      }
      const info = await container.inspect();
      if (!info.State.Running) throw new InternalError(`sandbox ${spec.id} exited right after starting (exit ${info.State.ExitCode}: ${info.State.Error || 'no error'})`);
      this.oomDirs.set(info.Id, findOomDir(memoryCgroupDirs(info.Id, info.State.Pid)));
      this.router.started(info.Id, spec.id, spec.isolation === 'gvisor', info.State.Pid);
      return { id: spec.id, runtime: 'docker', data: { containerId: info.Id } };
    } catch (err) {
      await container.remove({ force: true, v: true }).catch(() => undefined);
      await this.router.forget(container.id, spec.id);
      await this.opts.disks.destroy(spec.id).catch(() => undefined);
      throw err instanceof InternalError ? err : engineError(err, `cannot start sandbox ${spec.id}`, this.address, { hint: 'see the dockerd log; for gvisor, check that runsc works (runsc --version)' });
    }
  }

  /**
   * The init bound into containers: a copy under a neutral path, so a runc sandbox's mountinfo does not
   * say where agentbox is installed; the build itself where that cannot be written (not root).
   */
  private stagedInitPath(): string {
    if (this.initCopy === undefined) {
      try {
        this.initCopy = stagedBinary(this.initPath, RUN_DIR, 'agentbox-docker-init');
      } catch (err) {
        this.opts.logger?.debug({ err: err instanceof Error ? err.message : String(err) }, 'cannot stage the init binary; binding it from the build');
        this.initCopy = this.initPath;
      }
    }
    return this.initCopy;
  }

  private container(handle: SandboxHandle): Docker.Container {
    return this.docker.getContainer(dataOf(handle).containerId);
  }

  private oomCount(containerId: string): number | undefined {
    if (!this.oomDirs.has(containerId)) this.oomDirs.set(containerId, findOomDir(memoryCgroupDirs(containerId, undefined)));
    const dir = this.oomDirs.get(containerId);
    return dir === undefined ? undefined : oomKills([dir]);
  }

  private startExec(handle: SandboxHandle, req: Omit<ExecRequest, 'user'>): Promise<EngineExec | AgentExec> {
    const { containerId } = dataOf(handle);
    return this.router.start(containerId, { ...req, user: SANDBOX_USER }, (o) => startEngineExec(this.container(handle), o, this.address));
  }

  exec(handle: SandboxHandle, cmd: string[], opts: ExecOpts): AsyncIterable<ExecEvent> {
    const { containerId } = dataOf(handle);
    let oomBefore: number | undefined;
    let started: EngineExec | AgentExec | undefined;
    return execEvents(opts, {
      start: async () => {
        oomBefore = this.oomCount(containerId);
        started = await this.startExec(handle, {
          cmd, workingDir: opts.cwd ?? '/workspace', env: execEnv(opts), run: { timeoutMs: opts.timeoutMs, tag: opts.execId }, ...(opts.stdin !== undefined ? { stdin: opts.stdin } : {}),
        });
        return started;
      },
      kill: async () => {
        if (started && 'terminate' in started) return started.terminate();
        await this.killTagged(handle, opts.execId);
      },
      alive: async () => (await this.status(handle)).alive,
      oomKilled: async (exitCode) => {
        if (exitCode !== EXIT_KILLED) return false;
        const after = this.oomCount(containerId);
        if (after !== undefined && oomBefore !== undefined && after > oomBefore) return true;
        const info = await this.container(handle).inspect().catch(() => undefined);
        // The cgroup went with a dead container (gVisor: the host OOM killer took the sentry): ask Docker.
        if (!info?.State.Running) return info?.State.OOMKilled ?? false;
        // gVisor: PID 1's memory watchdog logs the exec tag of each process it kills (`@PID` for the agent's).
        if (info.HostConfig.Runtime !== 'runsc') return false;
        const pid = started && 'pid' in started ? await started.pid : undefined;
        return watchdogKilled(await this.readSmallFile(handle, WATCHDOG_LOG), pid === undefined ? [opts.execId] : [opts.execId, `@${pid}`]);
      },
    });
  }

  /** A small file's text, or '' when it cannot be read. */
  private async readSmallFile(handle: SandboxHandle, path: string): Promise<string> {
    return this.readFile(handle, path).then(text).catch(() => '');
  }

  /** Ends a `run` wrapper (and its command's tree) by its tag: an Engine exec cannot be signalled. */
  private async killTagged(handle: SandboxHandle, tag: string): Promise<void> {
    const ex = await this.startExec(handle, { cmd: [INIT_IN_CONTAINER, 'kill', tag], workingDir: '/', env: FILE_ENV });
    ex.stdout.resume();
    ex.stderr.resume();
    await ex.exitCode;
  }

  /**
   * The files API's transport: one `init fileop OP PATH` as the sandbox user (native/file-ops.h). A read
   * (and a port's connection, ports.ts, and a terminal, pty.ts) runs under the `run` wrapper with a tag, so that `abort` can end
   * it on every path (an Engine exec keeps running when its connection is dropped, and a read can be long).
   */
  private readonly startFileOp: FileOpStarter = async (handle, op, path, stdin) => {
    // A read, a port's connection and a terminal can last: tagged, so that abort ends them on every path.
    const tag = op === 'read' || op === 'connect' || op === 'pty' ? `fr_${randomBytes(8).toString('hex')}` : undefined;
    const ex = await this.startExec(handle, {
      cmd: [INIT_IN_CONTAINER, 'fileop', op, path], workingDir: '/', env: FILE_ENV, ...(stdin ? { stdin } : {}), ...(tag ? { run: { timeoutMs: 0, tag } } : {}),
    });
    const abort = (): void => {
      ex.destroy();
      if ('terminate' in ex) return ex.terminate();
      if (tag) void this.killTagged(handle, tag).catch((err: unknown) => this.opts.logger?.warn({ sandbox_id: handle.id, err: err instanceof Error ? err.message : String(err) }, 'could not end an abandoned file read'));
    };
    return { stdout: ex.stdout, stderr: ex.stderr, exitCode: ex.exitCode, abort };
  };

  private readonly files = new SandboxFiles(this.startFileOp);
  private readonly ports = new SandboxPorts(this.startFileOp);
  private readonly terminals = new SandboxPty(this.startFileOp);

  /** The processes API's transport: `init ps|signal ...` as the sandbox user, through the exec route (native/proc-list.h). */
  private readonly runProcOp: ProcOpRunner = async (handle, args) => {
    const ex = await this.startExec(handle, { cmd: [INIT_IN_CONTAINER, ...args], workingDir: '/', env: FILE_ENV });
    const [stdout, stderr, exitCode] = await Promise.all([readAllOf(ex.stdout), text(ex.stderr), ex.exitCode]);
    return { stdout, stderr, exitCode };
  };

  private readonly procs = new SandboxProcesses(this.runProcOp);

  processes(handle: SandboxHandle): Promise<ProcessInfo[]> {
    return this.procs.processes(handle);
  }

  signalProcess(handle: SandboxHandle, pid: number, signal: SignalName): Promise<void> {
    return this.procs.signalProcess(handle, pid, signal);
  }

  openPort(handle: SandboxHandle, port: number): Promise<Duplex> {
    return this.ports.openPort(handle, port);
  }

  openPty(handle: SandboxHandle, opts: PtyOpts): Promise<PtyProcess> {
    return this.terminals.openPty(handle, opts);
  }

  readFile(handle: SandboxHandle, path: string): Promise<Readable> {
    return this.files.readFile(handle, path);
  }

  writeFile(handle: SandboxHandle, path: string, data: Readable): Promise<number> {
    return this.files.writeFile(handle, path, data);
  }

  listDir(handle: SandboxHandle, path: string): Promise<DirEntry[]> {
    return this.files.listDir(handle, path);
  }

  removePath(handle: SandboxHandle, path: string): Promise<void> {
    return this.files.removePath(handle, path);
  }

  async status(handle: SandboxHandle): Promise<RuntimeStatus> {
    try {
      const info = await this.container(handle).inspect();
      if (!info.State.Running && info.HostConfig.Runtime === 'runsc' && (await hasHibernateCheckpoint(this.docker, info.Id))) return { alive: true, hibernated: true };
      return { alive: info.State.Running, paused: info.State.Running && info.State.Paused };
    } catch (err) {
      if (statusOf(err) === 404) return { alive: false, paused: false };
      throw engineError(err, `cannot inspect sandbox ${handle.id}`, this.address);
    }
  }

  async stats(handle: SandboxHandle): Promise<RuntimeStats> {
    let s: Docker.ContainerStats;
    try {
      s = await this.container(handle).stats({ stream: false, 'one-shot': true });
    } catch (err) {
      throw this.notRunning(err, handle, 'cannot read stats of');
    }
    const mem = s.memory_stats;
    // Page cache is reclaimable: report what the sandbox really holds (as `docker stats` does).
    const cache = mem.stats?.total_inactive_file ?? mem.stats?.inactive_file ?? 0;
    return {
      memoryBytes: Math.max(0, (mem.usage ?? 0) - cache),
      pids: s.pids_stats?.current ?? 0,
      cpuMs: Math.round((s.cpu_stats?.cpu_usage?.total_usage ?? 0) / 1e6),
    };
  }

  /**
   * dockerd records a pause when containerd's event for it arrives, which under load can be after
   * the pause call returned, and after an unpause that followed: the container then shows paused
   * again, and execs are refused. So both wait until dockerd's own state agrees, and an unpause
   * overtaken by that late event is sent again.
   */
  async pause(handle: SandboxHandle): Promise<void> {
    try {
      await this.container(handle).pause();
      await this.untilPaused(handle, true);
    } catch (err) {
      throw this.notRunning(err, handle, 'cannot pause');
    }
  }

  async resume(handle: SandboxHandle): Promise<void> {
    try {
      await this.container(handle).unpause();
      for (let attempt = 0; !(await this.untilPaused(handle, false, 500)); attempt++) {
        if (attempt >= 10) throw new InternalError(`sandbox ${handle.id} stays paused after unpause`);
        await this.container(handle).unpause().catch(() => undefined);
      }
    } catch (err) {
      throw this.notRunning(err, handle, 'cannot resume');
    }
  }

  /** Whether dockerd's state says paused = `want` within `ms`. */
  private async untilPaused(handle: SandboxHandle, want: boolean, ms = 5000): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      const info = await this.container(handle).inspect();
      if (info.State.Paused === want) return true;
      if (Date.now() > deadline) return false;
      await sleep(20);
    }
  }

  async canHibernate(kind: HibernateKind): Promise<ProbeResult> {
    if (kind.isolation === 'gvisor' && !this.router.agents) {
      return { ok: false, reason: 'this driver runs gVisor commands through Engine execs, whose host descriptors a checkpoint cannot save', hint: 'run the daemon (agentbox serve), which gives gVisor sandboxes their exec agent' };
    }
    return hibernationSupport(this.docker, kind).catch((err: unknown) => ({ ok: false, reason: `cannot ask dockerd: ${engineMessage(err)}`, hint: START_HINT }));
  }

  async hibernate(handle: SandboxHandle): Promise<void> {
    const { containerId } = dataOf(handle);
    let info: Docker.ContainerInspectInfo;
    try {
      info = await this.container(handle).inspect();
    } catch (err) {
      throw this.notRunning(err, handle, 'cannot hibernate');
    }
    if (!info.State.Running || info.State.Paused) throw new ConflictError(`cannot hibernate sandbox ${handle.id}: it is not running`, { hint: `agentbox inspect ${handle.id}` });
    // Nothing bound in but agentbox's own (no egress socket, no shared volume): see hibernation.ts.
    if (info.HostConfig.Runtime !== 'runsc' || info.Mounts.some((m) => !HIBERNATE_SAFE_MOUNTS.has(m.Destination))) {
      throw new ConflictError(`sandbox ${handle.id} cannot be hibernated: only gVisor sandboxes without egress and volumes can`, { hint: 'pauseAfter mode freeze pauses any sandbox' });
    }
    if (!(await this.router.park(containerId, PARK_TIMEOUT_MS))) {
      throw new ConflictError(`sandbox ${handle.id} was not hibernated: a command or a file operation is using it`, { hint: 'it is tried again when it is idle' });
    }
    try {
      await checkpointContainer(this.docker, containerId);
      await clearStaleRunscState(() => this.runscPath(), containerId);
    } catch (err) {
      // A failed checkpoint may have taken the container with it: then the reaper finds it lost.
      if ((await this.status(handle).catch(() => ({ alive: false }))).alive) await this.router.relisten(containerId);
      throw engineError(err, `cannot hibernate sandbox ${handle.id}`, this.address);
    }
    this.oomDirs.delete(containerId);
  }

  async copyMemory(handle: SandboxHandle): Promise<string> {
    return copyHibernation(await this.dockerRoot(), dataOf(handle).containerId);
  }

  async dropMemory(image: string): Promise<void> {
    const { containerId, checkpoint } = parseMemoryImage(image);
    await dropCheckpoint(this.docker, containerId, checkpoint);
  }

  /** dockerd's data root (containers' checkpoints live under it); the driver must run on dockerd's host. */
  private async dockerRoot(): Promise<string> {
    this.root ??= (this.docker.info() as Promise<{ DockerRootDir?: string }>).then((i) => i.DockerRootDir ?? '/var/lib/docker');
    return this.root.catch((err: unknown) => {
      this.root = undefined;
      throw engineError(err, 'cannot read docker info', this.address);
    });
  }

  async wake(handle: SandboxHandle): Promise<void> {
    const { containerId } = dataOf(handle);
    // Listening before its processes come back: its agent redials at once.
    await this.router.relisten(containerId);
    try {
      await clearStaleRunscState(() => this.runscPath(), containerId);
      await restoreContainer(this.docker, await this.dockerRoot(), containerId);
    } catch (err) {
      throw engineError(err, `cannot wake hibernated sandbox ${handle.id}`, this.address, { hint: 'see the dockerd log; agentbox rm it if it stays broken' });
    }
  }

  private notRunning(err: unknown, handle: SandboxHandle, what: string): Error {
    const status = statusOf(err);
    if (status === 404 || status === 409) {
      return new ConflictError(`${what} sandbox ${handle.id}: ${engineMessage(err)}`, { hint: `agentbox inspect ${handle.id} says whether it is running`, cause: err });
    }
    return engineError(err, `${what} sandbox ${handle.id}`, this.address);
  }

  async destroy(handle: SandboxHandle): Promise<void> {
    const { containerId } = dataOf(handle);
    await this.removeContainer(containerId, handle.id);
    // A daemon that died between a checkpoint and its clean-up leaves runsc's record of a hibernated sandbox.
    await clearStaleRunscState(() => this.runscPath(), containerId).catch((err: unknown) => this.opts.logger?.warn({ sandbox_id: handle.id, err: err instanceof Error ? err.message : String(err) }, 'could not clear runsc state'));
    this.oomDirs.delete(containerId);
    await this.router.forget(containerId, handle.id);
    await this.opts.disks.destroy(handle.id);
  }

  /**
   * Force-remove; gone already is fine, and so is a removal another caller started (wait for it).
   * Thawed first: a frozen gVisor container ignores the kill, and its removal then takes dockerd's
   * 10 s kill timeout (0.25 s thawed). Thawing one that is not frozen is refused at once.
   */
  private async removeContainer(ref: string, sandboxId: string): Promise<void> {
    await this.docker.getContainer(ref).unpause().catch(() => undefined);
    for (let i = 0; i < 100; i++) {
      try {
        await this.docker.getContainer(ref).remove({ force: true, v: true });
        return;
      } catch (err) {
        const status = statusOf(err);
        if (status === 404) return;
        if (status !== 409) throw engineError(err, `cannot remove sandbox ${sandboxId}`, this.address);
      }
      await sleep(100);
    }
    throw new InternalError(`sandbox ${sandboxId} is still being removed after 10 s`, { hint: 'see the dockerd log' });
  }

  async list(): Promise<RuntimeObject[]> {
    let found: Docker.ContainerInfo[];
    try {
      found = await this.docker.listContainers({ all: true, filters: { label: [`${LABEL_HOME}=${this.opts.homeTag}`] } });
    } catch (err) {
      throw engineError(err, 'cannot list containers', this.address);
    }
    const objects: RuntimeObject[] = [];
    for (const c of found) {
      const alive = c.State === 'running' || c.State === 'paused' || (c.State === 'exited' && (await hasHibernateCheckpoint(this.docker, c.Id).catch(() => false)));
      objects.push({ id: c.Labels[LABEL_ID] ?? c.Labels[LABEL_SANDBOX] ?? c.Labels[LABEL_POOL] ?? c.Id, alive, ...(c.Labels[LABEL_POOL] !== undefined ? { pooled: true } : {}) });
    }
    this.router.sweep(new Set(objects.map((o) => o.id)));
    return objects;
  }

  async reap(id: string): Promise<void> {
    await this.removeContainer(containerName(id), id);
    await this.router.forget(undefined, id);
    await this.opts.disks.destroy(id);
  }

  async close(): Promise<void> {
    this.oomDirs.clear();
    await this.router.close();
  }
}
