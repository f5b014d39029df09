/**
 * The `local` runtime: bubblewrap namespaces + cgroups, no daemon of its own.
 * See ARCHITECTURE.md ("The local driver") for the traps this design avoids.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Duplex, Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConflictError, InternalError, RuntimeUnavailableError } from '../../contract/errors.js';
import { EXIT_KILLED, EXIT_SIGNAL_BASE } from '../../contract/exit-codes.js';
import type { DirEntry, ExecEvent, Isolation, ProcessInfo, SignalName } from '../../contract/model.js';
import { streamExec } from '../exec-process.js';
import { SandboxFiles, type FileOpStarter } from '../files.js';
import { SandboxPorts } from '../ports.js';
import { SandboxPty, type PtyOpts, type PtyProcess } from '../pty.js';
import { SandboxProcesses, type ProcOpRunner } from '../processes.js';
import { execEnv } from '../shared.js';
import { claimDisk, rootLayerDir } from '../disk-owner.js';
import type { ExecOpts, ProbeResult, Runtime, RuntimeObject, RuntimeSpec, RuntimeStats, SandboxDisks, SandboxHandle } from '../types.js';
import { bwrapArgs, INFO_FD, READY_FD, SANDBOX_UID } from './bwrap-args.js';
import { Cgroups, detectCgroups } from './cgroups.js';
import { isSameProcess, processStartTime } from '../proc.js';
import { RUN_DIR, stagedBinary } from '../staged-binary.js';
import { volumeMountPoints } from './volume-mounts.js';

export interface LocalRuntimeOpts {
  /** cgroup scope of this daemon, e.g. `agentbox/<home tag>`: sandboxes of other homes are never touched. */
  scope: string;
  /** Host directory of an image's root filesystem; throws NotFoundError for an unknown image. */
  resolveRootfs: (image: string) => string;
  /** Called before the first use of an image, e.g. to build the built-in busybox image on demand. */
  ensureImage?: (image: string) => Promise<void>;
  helper: string;
  /** Each sandbox's /workspace and /tmp (runtime/types.ts). */
  disks: SandboxDisks;
  /** Empty directory the helper mounts its staging tmpfs on (in a private mount namespace). */
  stageDir?: string;
  startTimeoutMs?: number;
}

interface LocalData {
  pid: number;
  startTime: number;
  uid: number;
  /** The keeper (the helper's spawn process, outside the sandbox's cgroups); absent in older rows. */
  keeper?: { pid: number; startTime: number };
}

/** Host uids for sandboxes come from this reserved range, one random uid per sandbox. */
const UID_RANGE = [1_000_000_000, 1_100_000_000] as const;
/** A freeze is waited for this many polls, this far apart (5 s), before it is given up. */
const FREEZE_POLLS = 1000;
const FREEZE_POLL_MS = 5;
const HOST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function dataOf(handle: SandboxHandle): LocalData {
  const d = handle.data as Partial<LocalData>;
  if (typeof d.pid !== 'number' || typeof d.startTime !== 'number' || typeof d.uid !== 'number') {
    throw new InternalError(`sandbox ${handle.id} has no local runtime data`);
  }
  return { pid: d.pid, startTime: d.startTime, uid: d.uid };
}

export class LocalRuntime implements Runtime {
  readonly name = 'local' as const;
  readonly isolations: readonly Isolation[] = ['namespaces'];
  readonly writableRoot = true;
  private cgroups: Cgroups | undefined;
  private readonly children = new Map<string, ChildProcess>();
  /** Idle exec leaves per sandbox: cgroup mkdir/rmdir on v1 is slow and serialised, so leaves are reused. */
  private readonly freeLeaves = new Map<string, string[]>();
  /**
   * Leaves an exec left background processes in (they stay there: a later exec's timeout must not
   * kill them, and its leaf must not hold them). Reused once they are empty again.
   */
  private readonly heldLeaves = new Map<string, Set<string>>();
  private leafCounter = 0;
  private readonly stageDir: string;
  private initCopy: string | undefined;

  constructor(private readonly opts: LocalRuntimeOpts) {
    this.stageDir = opts.stageDir ?? `${RUN_DIR}/stage`;
  }

  async probe(): Promise<ProbeResult> {
    if (process.platform !== 'linux') return { ok: false, reason: 'the local runtime needs Linux', hint: 'use --runtime docker' };
    if (process.getuid?.() !== 0) {
      return { ok: false, reason: 'the local runtime needs root (it sets up cgroups and enters namespaces)', hint: 'run agentbox serve as root, or use --runtime docker' };
    }
    const bwrap = spawnSync('bwrap', ['--version'], { encoding: 'utf8', env: { PATH: HOST_PATH } });
    if (bwrap.error || bwrap.status !== 0) {
      return { ok: false, reason: 'bubblewrap (bwrap) is not installed', hint: 'apt-get install bubblewrap' };
    }
    try {
      accessSync(this.opts.helper, constants.X_OK);
    } catch {
      return { ok: false, reason: `the native helper is missing at ${this.opts.helper}`, hint: 'run npm run build (needs gcc and libc6-dev)' };
    }
    const cg = detectCgroups();
    if (!cg.ok) return { ok: false, reason: cg.reason, hint: 'mount the memory, pids, cpu (and on v1 freezer) cgroup controllers' };
    return { ok: true, details: { bwrap: bwrap.stdout.trim(), cgroup: `v${cg.version}` } };
  }

  private cg(): Cgroups {
    if (this.cgroups) return this.cgroups;
    const cg = detectCgroups();
    if (!cg.ok) throw new RuntimeUnavailableError(`local runtime: ${cg.reason}`, { hint: 'mount the cgroup controllers or use --runtime docker' });
    this.cgroups = new Cgroups(cg.version, this.opts.scope);
    return this.cgroups;
  }

  async prepareImage(image: string): Promise<void> {
    await this.opts.ensureImage?.(image);
    this.opts.resolveRootfs(image);
  }

  async create(spec: RuntimeSpec): Promise<SandboxHandle> {
    // Warm pools create without prepareImage: the built-in image must be built here too (as docker does).
    await this.opts.ensureImage?.(spec.image);
    const rootfs = this.opts.resolveRootfs(spec.image);
    const cg = this.cg();
    mkdirSync(this.stageDir, { recursive: true, mode: 0o755 });
    const uid = randomInt(UID_RANGE[0], UID_RANGE[1]);
    const volumes = spec.volumes ?? [];
    const mountPoints = volumeMountPoints(rootfs, volumes);
    const disk = await this.opts.disks.create(spec.id, spec.limits.diskMb, spec.diskFrom);
    let initDirs: string[];
    try {
      await claimDisk(disk.root, uid);
      initDirs = cg.create(spec.id, spec.limits);
    } catch (err) {
      await this.opts.disks.destroy(spec.id).catch(() => undefined);
      throw err;
    }
    const args = [
      'spawn', '--uid', String(uid), '--gid', String(uid), '--rootfs', rootfs, '--stage', this.stageDir, '--disk', disk.root,
      '--init', (this.initCopy ??= stagedBinary(this.opts.helper, dirname(this.stageDir), 'init')),
      // The daemon's ends of bwrap's --info-fd and PID 1's ready pipe: only the helper (the sandbox's
      // keeper) holds them, until the sandbox is ready; bwrap gets pipes of the keeper's at these numbers.
      '--info-fd', String(INFO_FD), '--ready-fd', String(READY_FD),
      ...initDirs.flatMap((d) => ['--cgroup', d]),
      ...(spec.egressDir ? ['--egress', spec.egressDir] : []),
      ...volumes.flatMap((v) => [v.readOnly ? '--volume-ro' : '--volume', v.source]),
      ...mountPoints.flatMap((p) => ['--mount-point', p]),
      ...(spec.writableRoot ? ['--root-upper', rootLayerDir(disk.root)] : []),
      '--', ...bwrapArgs({ stage: this.stageDir, hostname: 'sandbox', limits: spec.limits, withEgress: spec.egressDir !== undefined, volumes, writableRoot: spec.writableRoot }),
    ];
    const child = spawn(this.opts.helper, args, {
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
      env: { PATH: HOST_PATH },
      cwd: '/',
    });
    try {
      const pid = await this.waitReady(child, spec.id);
      const startTime = processStartTime(pid);
      if (startTime === undefined) throw new InternalError(`sandbox ${spec.id} exited right after starting`);
      const keeperStart = child.pid === undefined ? undefined : processStartTime(child.pid);
      this.children.set(spec.id, child);
      child.once('close', () => this.children.delete(spec.id));
      child.unref();
      const keeper = child.pid !== undefined && keeperStart !== undefined ? { keeper: { pid: child.pid, startTime: keeperStart } } : {};
      return { id: spec.id, runtime: 'local', data: { pid, startTime, uid, ...keeper } };
    } catch (err) {
      // The sandbox's processes first: its keeper then reaps bwrap and exits by itself.
      await cg.kill(spec.id).catch(() => undefined);
      child.kill('SIGKILL');
      await cg.kill(spec.id).catch(() => undefined);
      await cg.remove(spec.id);
      await this.opts.disks.destroy(spec.id).catch(() => undefined);
      throw err;
    }
  }

  /** Resolves with PID 1's host pid once PID 1 itself says bwrap is done (the start-up race). */
  private waitReady(child: ChildProcess, id: string): Promise<number> {
    const info = child.stdio[INFO_FD] as Readable;
    const ready = child.stdio[READY_FD] as Readable;
    let infoText = '';
    let stderr = '';
    let isReady = false;
    child.stderr?.on('data', (c: Buffer) => {
      if (stderr.length < 8192) stderr += c.toString();
    });
    info.on('data', (c: Buffer) => (infoText += c.toString()));
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => finish(new InternalError(`sandbox ${id} did not start within ${this.opts.startTimeoutMs ?? 10_000} ms`)), this.opts.startTimeoutMs ?? 10_000);
      const finish = (err?: Error): void => {
        clearTimeout(timer);
        child.off('close', onClose);
        if (err) return reject(err);
        const m = /"child-pid":\s*(\d+)/.exec(infoText);
        if (!m) return reject(new InternalError(`sandbox ${id}: bwrap reported no child pid`));
        for (const s of [info, ready, child.stderr]) {
          s?.removeAllListeners('data');
          s?.resume(); // keep draining; nothing more is read
          (s as Readable & { unref?: () => void }).unref?.();
        }
        resolve(Number(m[1]));
      };
      const onClose = (code: number | null): void => {
        const detail = stderr.trim().split('\n').slice(-3).join(' | ') || `exit code ${code}`;
        finish(new InternalError(`sandbox ${id} failed to start: ${detail}`, { hint: 'check that the image has /workspace, /tmp and /.agentbox, and that user namespaces are enabled' }));
      };
      child.on('close', onClose);
      child.on('error', (err) => finish(new RuntimeUnavailableError(`cannot run the helper: ${err.message}`, { hint: 'run npm run build' })));
      ready.on('data', (c: Buffer) => {
        if (!isReady && c.includes('R')) {
          isReady = true;
          // info-fd is written before the ready byte can be; wait for it to close too
          if (/"child-pid"/.test(infoText)) finish();
          else info.once('end', () => finish());
        }
      });
    });
  }

  private assertAlive(handle: SandboxHandle): LocalData {
    const data = dataOf(handle);
    if (!isSameProcess(data.pid, data.startTime)) {
      throw new ConflictError(`sandbox ${handle.id} is not running`, { hint: `agentbox inspect ${handle.id} says why it ended` });
    }
    return data;
  }

  private entryArgs(handle: SandboxHandle, data: LocalData, leafDirs: string[], cwd?: string): string[] {
    return [
      '--pid', String(data.pid), '--start-time', String(data.startTime), '--uid', String(SANDBOX_UID), '--gid', String(SANDBOX_UID),
      ...leafDirs.flatMap((d) => ['--cgroup', d]),
      ...(cwd ? ['--cwd', cwd] : []),
    ];
  }

  exec(handle: SandboxHandle, cmd: string[], opts: ExecOpts): AsyncIterable<ExecEvent> {
    const data = this.assertAlive(handle);
    const cg = this.cg();
    const { leaf, dirs } = this.takeLeaf(handle.id);
    const oomBefore = cg.oomKills(handle.id);
    const child = spawn(this.opts.helper, ['exec', ...this.entryArgs(handle, data, dirs, opts.cwd ?? '/workspace'), '--', ...cmd], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: execEnv(opts),
      cwd: '/',
    });
    return streamExec(child, opts, {
      killTree: async () => {
        await cg.kill(handle.id, leaf);
      },
      settle: async ({ code, signal }) => {
        const exitCode = code ?? (signal === 'SIGKILL' ? EXIT_KILLED : EXIT_SIGNAL_BASE);
        const oomKilled = cg.oomKills(handle.id) > oomBefore && exitCode === EXIT_KILLED;
        this.giveLeaf(handle.id, leaf);
        return { exitCode, oomKilled };
      },
    });
  }

  /** The files API's transport: one `agentbox-helper file ... -- OP PATH` in the sandbox (native/file-ops.h). */
  private readonly startFileOp: FileOpStarter = async (handle, op, path, stdin) => {
    const data = this.assertAlive(handle);
    const { leaf, dirs } = this.takeLeaf(handle.id);
    const child = spawn(this.opts.helper, ['file', ...this.entryArgs(handle, data, dirs), '--', op, path], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: HOST_PATH },
      cwd: '/',
    });
    const input = child.stdin!;
    input.on('error', () => undefined);
    if (stdin) stdin.pipe(input);
    else input.end();
    const exitCode = new Promise<number>((resolve, reject) => {
      child.on('error', (err) => reject(new InternalError(`file operation failed in sandbox ${handle.id}: ${err.message}`)));
      // 'close': the helper has exited and its stdout and stderr have ended.
      child.on('close', (code) => {
        this.giveLeaf(handle.id, leaf);
        resolve(code ?? 128);
      });
    });
    exitCode.catch(() => undefined); // observed by SandboxFiles; no unhandled rejection meanwhile
    // The helper's child in the sandbox dies with it (PDEATHSIG).
    const abort = (): void => {
      child.kill('SIGKILL');
      child.stdout?.destroy();
    };
    return { stdout: child.stdout!, stderr: child.stderr!, exitCode, abort };
  };

  private readonly files = new SandboxFiles(this.startFileOp);
  private readonly ports = new SandboxPorts(this.startFileOp);
  private readonly terminals = new SandboxPty(this.startFileOp);

  /** The processes API's transport: `agentbox-helper ps|signal ...` inside the sandbox, as its user (native/proc-list.h). */
  private readonly runProcOp: ProcOpRunner = async (handle, args) => {
    const data = this.assertAlive(handle);
    const { leaf, dirs } = this.takeLeaf(handle.id);
    const [mode, ...rest] = args;
    const child = spawn(this.opts.helper, [mode, ...this.entryArgs(handle, data, dirs), '--', ...(rest.length ? rest : ['-'])], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: HOST_PATH },
      cwd: '/',
    });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => stdout.push(c));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    return new Promise((resolve, reject) => {
      child.on('error', (err) => reject(new InternalError(`cannot run the helper for sandbox ${handle.id}: ${err.message}`)));
      child.on('close', (code) => {
        this.giveLeaf(handle.id, leaf);
        resolve({ stdout: Buffer.concat(stdout), stderr, exitCode: code ?? 128 });
      });
    });
  };

  private readonly procs = new SandboxProcesses(this.runProcOp);

  processes(handle: SandboxHandle): Promise<ProcessInfo[]> {
    return this.procs.processes(handle);
  }

  signalProcess(handle: SandboxHandle, pid: number, signal: SignalName): Promise<void> {
    return this.procs.signalProcess(handle, pid, signal);
  }

  /**
   * A leaf cgroup with no process in it, reused when possible. A sandbox that outlived an earlier
   * daemon has that daemon's leaves, some still holding background jobs: a new name skips those, so a
   * timeout (which kills the leaf) never reaches a job another exec left behind.
   */
  private takeLeaf(id: string): { leaf: string; dirs: string[] } {
    const cg = this.cg();
    const free = this.freeLeaves.get(id) ?? [];
    let leaf = free.pop();
    if (leaf === undefined) {
      const held = this.heldLeaves.get(id);
      for (const h of held ?? []) {
        if (cg.pids(id, h).length > 0) continue;
        held?.delete(h);
        leaf = h;
        break;
      }
    }
    // A new name never lands in a leaf that still holds processes (one this driver instance does not
    // know of, e.g. left by an earlier daemon): a timeout there would kill them.
    while (leaf === undefined || cg.pids(id, leaf).length > 0) leaf = `x-${++this.leafCounter}`;
    return { leaf, dirs: cg.leaf(id, leaf) };
  }

  /** Back to the pool, unless the command left background processes in it: they keep it until they end. */
  private giveLeaf(id: string, leaf: string): void {
    if (!this.cg().exists(id)) return;
    if (this.cg().pids(id, leaf).length > 0) {
      this.heldLeaves.set(id, (this.heldLeaves.get(id) ?? new Set<string>()).add(leaf));
      return;
    }
    const free = this.freeLeaves.get(id) ?? [];
    free.push(leaf);
    this.freeLeaves.set(id, free);
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

  async status(handle: SandboxHandle): Promise<{ alive: boolean; paused: boolean }> {
    const data = dataOf(handle);
    const alive = isSameProcess(data.pid, data.startTime);
    const cg = this.cg();
    return { alive, paused: alive && cg.exists(handle.id) && cg.frozen(handle.id) };
  }

  async stats(handle: SandboxHandle): Promise<RuntimeStats> {
    const cg = this.cg();
    return { memoryBytes: cg.memoryBytes(handle.id), pids: cg.pids(handle.id).length, cpuMs: cg.cpuMs(handle.id) };
  }

  async pause(handle: SandboxHandle): Promise<void> {
    this.assertAlive(handle);
    const cg = this.cg();
    cg.freeze(handle.id);
    // Paused means stopped: the freeze completes asynchronously (a task in an uninterruptible sleep
    // holds it back), so wait for it, asking again now and then as cgroup v1's freezer wants.
    for (let i = 1; !cg.fullyFrozen(handle.id); i++) {
      if (i > FREEZE_POLLS) {
        cg.thaw(handle.id);
        throw new InternalError(`sandbox ${handle.id} did not freeze within ${(FREEZE_POLLS * FREEZE_POLL_MS) / 1000} s`, { hint: 'a process in it may be stuck in the kernel (D state); try again, or stop it' });
      }
      if (i % 20 === 0) cg.freeze(handle.id);
      await sleep(FREEZE_POLL_MS);
    }
  }

  async resume(handle: SandboxHandle): Promise<void> {
    this.cg().thaw(handle.id);
  }

  async destroy(handle: SandboxHandle): Promise<void> {
    await this.reap(handle.id);
    // PID 1 leaves its cgroup before it has finished tearing down its pid namespace: wait for that,
    // and for the keeper, which exits once it has reaped bwrap (it is outside the cgroup).
    const data = handle.data as Partial<LocalData>;
    for (const p of [data, data.keeper]) {
      if (typeof p?.pid !== 'number' || typeof p.startTime !== 'number') continue;
      for (let i = 0; i < 400 && isSameProcess(p.pid, p.startTime); i++) await sleep(5);
    }
  }

  async list(): Promise<RuntimeObject[]> {
    const cg = this.cg();
    return cg.list().map((id) => ({ id, alive: cg.pids(id).length > 0 }));
  }

  async reap(id: string): Promise<void> {
    this.freeLeaves.delete(id);
    this.heldLeaves.delete(id);
    const cg = this.cg();
    if (cg.exists(id)) {
      // Killing every process of the group takes PID 1 with it, and so the whole pid namespace.
      await cg.kill(id, undefined, 5000);
    }
    // The keeper (this daemon's child, if it started the sandbox) reaps bwrap and exits by itself;
    // killed only if it has not. A keeper of an earlier daemon exits the same way, reaped by its new parent.
    const child = this.children.get(id);
    if (child && child.exitCode === null && child.signalCode === null) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          resolve();
        }, 2000);
        child.once('close', () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    if (cg.exists(id) && !(await cg.remove(id))) {
      throw new InternalError(`could not remove the cgroups of sandbox ${id}`, { hint: 'a process may be stuck in uninterruptible sleep; see /sys/fs/cgroup' });
    }
    await this.opts.disks.destroy(id);
  }

  async close(): Promise<void> {
    this.cgroups?.removeScopeIfEmpty();
    this.children.clear();
  }
}
