/**
 * The microvm runtime: each sandbox a QEMU `microvm` with a kernel of its own (KVM where it really
 * works, TCG otherwise; accel.ts), its image as a read-only root disk shared by the image's VMs
 * (guest/root-disk.ts), its own disk (storage/) as /workspace and /tmp, and agentbox's guest agent
 * as PID 1, reached over virtio-serial (channel.ts). Commands, files and processes go through that
 * agent, with the same C as the other runtimes (file-ops.h, proc-list.h, exec-relay.h).
 *
 * A VM outlives the daemon: QEMU runs in a session of its own, and its directory
 * (RUN_ROOT/ID: the agent's socket, the console and QEMU's log) and `-name agentbox-vm.HOMETAG.ID`
 * are how a later daemon finds it again, to reconnect or to reap.
 */
import type { Duplex } from 'node:stream';
import { spawnSync } from 'node:child_process';
import { constants as fsConstants, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, rename, rm } from 'node:fs/promises';
import { release } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { BadRequestError, ConflictError, InternalError, RuntimeUnavailableError } from '../../contract/errors.js';
import type { DirEntry, ExecEvent, Isolation, Limits, ProcessInfo, SignalName } from '../../contract/model.js';
import { type FileOpStarter, SandboxFiles } from '../files.js';
import { SandboxPorts } from '../ports.js';
import { SandboxPty, type PtyOpts, type PtyProcess } from '../pty.js';
import { isSameProcess, processStartTime } from '../proc.js';
import { type ProcOpRunner, SandboxProcesses } from '../processes.js';
import type { ExecOpts, HibernateKind, ProbeResult, Runtime, RuntimeObject, RuntimeSpec, RuntimeStats, RuntimeStatus, RuntimeVolume, SandboxDisks, SandboxHandle } from '../types.js';
import { Cgroups, detectCgroups } from '../local/cgroups.js';
import { type AccelChoice, chooseAccel } from './accel.js';
import { BootGate } from './boot-gate.js';
import { VmChannel } from './channel.js';
import { ensureGuest, type GuestArtifacts, pruneGuests } from './guest/build.js';
import { findGuestKernel } from './guest/kernel.js';
import { ensureRootDisk, type RootImage } from './guest/root-disk.js';
import { EgressPump } from './egress-pump.js';
import { vmExec, vmFileOps, vmProcOps, vmRequest } from './guest-ops.js';
import { Qmp } from './qmp.js';
import { MicroVm, namedProcesses, QEMU_BINARY, saveVmState, vmFiles } from './vm.js';

export interface MicroVmRuntimeOpts {
  /** The image store: an image's tree and content digest (its root disk is derived from them). */
  images: { resolve(name: string): { info: { id?: string; sizeBytes?: number }; rootfs: string } };
  ensureImage?: (image: string) => Promise<void>;
  /** Short tag of this agentbox home: only VMs named with it are listed and reaped. */
  homeTag: string;
  /** The guest builds and the images' root disks, e.g. $AGENTBOX_HOME/microvm. */
  dir: string;
  /** Parent of each VM's directory (its agent socket; a Unix socket path must stay short). */
  runRoot: string;
  disks: SandboxDisks;
  /** VMs booting at once. @default 2 */
  maxConcurrentBoots?: number;
  /** Forces the accelerator (tests); default: decided by booting once (accel.ts). */
  accel?: AccelChoice['accel'];
  logger?: Logger;
}

/** A handle's data: the QEMU that `create` started (the VM's record in its run directory says more, and which QEMU runs it now). */
interface VmData {
  pid: number;
  startTime: number;
}

/**
 * How a VM was started, in its run directory (vm.json) while it runs and beside its state while it is
 * hibernated: where its QEMU is, and how to start one from its state again (the command line must be
 * the same but for paths).
 */
interface VmRecord {
  pid: number;
  startTime: number;
  shape: VmShape;
  dataDisk: string;
  limits: Limits;
  egressDir?: string;
  /** How many named volumes its virtiofsd processes serve (such a VM cannot be saved). */
  volumes?: number;
}

/** What a saved state can only be restored into: the same guest, root disk, accelerator, RAM, vCPUs and guest limits. */
interface VmShape {
  guest: string;
  rootDisk: string;
  accel: AccelChoice['accel'];
  ramMb: number;
  cpus: number;
  limits: { memoryMb: number; pids: number };
  /** rootfs: writable (the guest mounts it at boot; absent in records made before it existed). */
  writableRoot?: true;
}

function sameShape(a: VmShape, b: VmShape): boolean {
  return (
    a.guest === b.guest &&
    a.rootDisk === b.rootDisk &&
    a.accel === b.accel &&
    a.ramMb === b.ramMb &&
    a.cpus === b.cpus &&
    a.limits.memoryMb === b.limits.memoryMb &&
    a.limits.pids === b.limits.pids &&
    a.writableRoot === b.writableRoot
  );
}

function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

const RECORD = 'vm.json';
const STATE = 'state.bin';
const POOLED_MARK = 'pooled';
const PAUSED_MARK = 'paused';
/**
 * memoryMb is the VM's RAM, as a machine's: its kernel takes its share of it (about 33 MB). A guest
 * of under 128 MB does not boot at all, so a smaller memoryMb gets this much RAM, and the cgroup in
 * the guest that holds every command (native/agentbox-vm-agent.c setup_limits) holds them to memoryMb.
 */
export const MIN_GUEST_MB = 128;
/** QEMU's own memory beyond the guest's RAM, in its host cgroup: TCG's code buffer (32-64 MB), QEMU, the mapped kernel. */
const QEMU_OVERHEAD_MB = 192;
/** QEMU's threads: a vCPU thread each, RCU, and its I/O worker pool (up to 64). */
const QEMU_THREADS = 256;

export class MicroVmRuntime implements Runtime {
  readonly name = 'microvm' as const;
  readonly isolations: readonly Isolation[] = ['vm'];
  readonly writableRoot = true;
  private readonly gate: BootGate;
  private guest: Promise<GuestArtifacts> | undefined;
  private accelChoice: Promise<AccelChoice> | undefined;
  /** One host connection per VM (its port takes one at a time), made again after a daemon restart. */
  private readonly channels = new Map<string, Promise<VmChannel>>();
  /** Templates being saved now (one per key). */
  private readonly building = new Set<string>();

  constructor(private readonly opts: MicroVmRuntimeOpts) {
    this.gate = new BootGate(opts.maxConcurrentBoots ?? 2);
  }

  private vmName(id: string): string {
    return `agentbox-vm.${this.opts.homeTag}.${id}`;
  }

  private runDir(id: string): string {
    return join(this.opts.runRoot, id);
  }

  /** QEMU's version, asked once (probes come with every health check). */
  private qemuVersion(): string | undefined {
    if (this.qemuVersionSeen === undefined) {
      const qemu = spawnSync(process.env.AGENTBOX_QEMU ?? QEMU_BINARY, ['--version'], { encoding: 'utf8', timeout: 5000 });
      this.qemuVersionSeen = qemu.error || qemu.status !== 0 ? null : (/version ([\d.]+)/.exec(qemu.stdout)?.[1] ?? 'unknown');
    }
    return this.qemuVersionSeen ?? undefined;
  }

  private qemuVersionSeen: string | null | undefined;

  async probe(): Promise<ProbeResult> {
    const version = this.qemuVersion();
    if (!version) {
      this.qemuVersionSeen = undefined; // installed later: asked again next time
      return { ok: false, reason: `${QEMU_BINARY} is not installed`, hint: 'apt-get install qemu-system-x86 (scripts/install-system-deps.sh)' };
    }
    let kernel: string;
    try {
      kernel = findGuestKernel().version;
    } catch (err) {
      return { ok: false, reason: (err as Error).message, hint: 'apt-get install linux-image-cloud-amd64 (scripts/install-system-deps.sh)' };
    }
    if (process.getuid?.() !== 0) return { ok: false, reason: 'the microvm runtime needs root (sandbox disks are loop-mounted images)', hint: 'run the daemon as root' };
    const choice = this.accelChoice ? await this.accelChoice : undefined;
    return {
      ok: true,
      details: {
        qemu: version,
        kernel,
        accel: choice ? `${choice.accel} (${choice.reason})` : (this.opts.accel ?? 'decided at the first boot'),
        jail: 'QEMU as a host user of its own per VM, no capabilities, no_new_privs, an empty network namespace, its seccomp sandbox',
      },
    };
  }

  private guestArtifacts(): Promise<GuestArtifacts> {
    this.guest ??= ensureGuest({ dir: join(this.opts.dir, 'guest'), ...(this.opts.logger ? { log: this.opts.logger } : {}) }).then(
      async (guest) => {
        await this.pruneStale(guest).catch((err: unknown) => this.opts.logger?.warn({ err }, 'could not prune old microvm guests and templates'));
        return guest;
      },
      (err: unknown) => {
        this.guest = undefined;
        throw err;
      },
    );
    return this.guest;
  }

  /**
   * Once per process, with the current guest known: guest builds of other fingerprints, and
   * templates no VM can be restored from any more (another guest, or an image whose root disk is
   * gone), with their disks. A hibernated VM or a memory image of another guest cannot be woken
   * either way (wake and create refuse it with the reason).
   */
  private async pruneStale(guest: GuestArtifacts): Promise<void> {
    const removed = await pruneGuests(join(this.opts.dir, 'guest'), [guest.fingerprint]);
    const templates = join(this.opts.dir, 'templates');
    const stale: string[] = [];
    if (existsSync(templates)) {
      for (const key of readdirSync(templates)) {
        if (this.building.has(key)) continue;
        const t = readJson<{ guest?: string; rootDisk?: string; disk?: string }>(join(templates, key, 'ready.json'));
        // One being saved (by another process) has no ready.json yet: left alone.
        if (!t || (t.guest === guest.fingerprint && t.rootDisk && existsSync(t.rootDisk))) continue;
        if (t.disk) await rm(t.disk, { force: true });
        await rm(join(templates, key), { recursive: true, force: true });
        stale.push(key);
      }
    }
    if (removed.length || stale.length) this.opts.logger?.info({ guests: removed, templates: stale }, 'pruned old microvm guests and templates');
  }

  /**
   * KVM or TCG: decided once per host by booting a KVM guest (accel.ts; up to 15 s where /dev/kvm
   * exists but cannot run it) and remembered in DIR/accel.json until the host's kernel or the guest
   * changes. AGENTBOX_MICROVM_ACCEL=tcg|kvm decides instead.
   */
  private accel(): Promise<AccelChoice> {
    const forced = this.opts.accel ?? (['tcg', 'kvm'].includes(process.env.AGENTBOX_MICROVM_ACCEL ?? '') ? (process.env.AGENTBOX_MICROVM_ACCEL as AccelChoice['accel']) : undefined);
    if (forced) return Promise.resolve({ accel: forced, reason: 'set by the operator' });
    this.accelChoice ??= this.guestArtifacts().then(async (guest) => {
      const file = join(this.opts.dir, 'accel.json');
      const key = `${release()} ${guest.fingerprint}`;
      try {
        const saved = JSON.parse(readFileSync(file, 'utf8')) as { key?: string; accel?: string; reason?: string };
        if (saved.key === key && (saved.accel === 'tcg' || saved.accel === 'kvm')) return { accel: saved.accel, reason: `${saved.reason ?? ''} (decided earlier)` };
      } catch {
        /* not decided yet */
      }
      const choice = await chooseAccel({ guest, runRoot: this.opts.runRoot, ...(this.opts.logger ? { log: this.opts.logger } : {}) });
      writeFileSync(file, `${JSON.stringify({ key, ...choice })}\n`);
      return choice;
    });
    return this.accelChoice;
  }

  private async rootDisk(image: string): Promise<string> {
    const { info, rootfs } = this.opts.images.resolve(image);
    if (!info.id) throw new InternalError(`image ${image} has no content digest; rebuild it (agentbox image build)`);
    const root: RootImage = { id: info.id, rootfs, sizeBytes: info.sizeBytes ?? 0 };
    return ensureRootDisk(join(this.opts.dir, 'roots'), root);
  }

  async prepareImage(image: string): Promise<void> {
    await this.opts.ensureImage?.(image);
    await this.rootDisk(image);
  }

  /** What a VM for these limits and this image is started as (its template's key, a saved state's fit). */
  private async shapeFor(image: string, limits: Limits, writableRoot: boolean): Promise<{ shape: VmShape; guest: GuestArtifacts }> {
    const rootDisk = await this.rootDisk(image);
    const [guest, { accel }] = await Promise.all([this.guestArtifacts(), this.accel()]);
    const shape: VmShape = {
      guest: guest.fingerprint,
      rootDisk,
      accel,
      ramMb: Math.max(limits.memoryMb, MIN_GUEST_MB),
      cpus: Math.max(1, Math.ceil(limits.cpus)),
      limits: { memoryMb: limits.memoryMb, pids: limits.pids },
      ...(writableRoot ? { writableRoot: true as const } : {}),
    };
    return { shape, guest };
  }

  /** The host cgroup QEMU runs in: guest RAM plus the emulator's own (TCG's code buffer, QEMU), its threads, its CPU share. */
  private hostCgroup(id: string, limits: Limits, shape: VmShape): string[] {
    return this.cg().create(id, { cpus: limits.cpus, memoryMb: shape.ramMb + QEMU_OVERHEAD_MB, pids: QEMU_THREADS, diskMb: limits.diskMb });
  }

  /** Start the sandbox's QEMU (booting, or from a saved state), in its host cgroup, and record it in its run directory. */
  private async launch(
    id: string,
    o: { shape: VmShape; guest: GuestArtifacts; limits: Limits; dataDisk: string; hostDirs: string[]; volumes?: readonly RuntimeVolume[]; incoming?: string; egressDir?: string },
  ): Promise<{ vm: MicroVm; record: VmRecord }> {
    const log = this.opts.logger?.child({ sandbox_id: id });
    const vm = await MicroVm.start({
      guest: o.guest,
      memoryMb: o.shape.ramMb,
      cpus: o.shape.cpus,
      limits: o.shape.limits,
      ...(o.shape.writableRoot ? { writableRoot: true } : {}),
      ...(o.volumes?.length ? { volumes: o.volumes } : {}),
      accel: o.shape.accel,
      runDir: this.runDir(id),
      name: this.vmName(id),
      gate: this.gate,
      rootDisk: o.shape.rootDisk,
      dataDisk: o.dataDisk,
      detached: true,
      ...(o.incoming ? { incoming: o.incoming } : {}),
      onSpawn: (pid) => {
        for (const dir of o.hostDirs) writeFileSync(join(dir, 'cgroup.procs'), String(pid));
      },
      ...(log ? { log } : {}),
    });
    const startTime = processStartTime(vm.pid);
    if (startTime === undefined) {
      await vm.kill();
      throw new InternalError(`sandbox ${id}'s VM exited right after starting`);
    }
    const record: VmRecord = { pid: vm.pid, startTime, shape: o.shape, dataDisk: o.dataDisk, limits: o.limits, ...(o.egressDir ? { egressDir: o.egressDir } : {}), ...(o.volumes?.length ? { volumes: o.volumes.length } : {}) };
    writeFileSync(join(vm.runDir, RECORD), `${JSON.stringify(record)}\n`, { mode: 0o600 });
    return { vm, record };
  }

  async create(spec: RuntimeSpec): Promise<SandboxHandle> {
    if (spec.isolation !== 'vm') throw new BadRequestError(`the microvm runtime offers isolation vm, not ${spec.isolation}`, { hint: 'use --isolation vm, or leave it out' });
    const volumes = spec.volumes ?? [];
    if (volumes.length && spec.memoryFrom) throw new ConflictError('a microVM with named volumes cannot start from a memory image', { hint: 'QEMU cannot save a VM with a shared filesystem (vhost-user-fs): leave out the volumes, or the memory' });
    if (!this.opts.disks.detach) throw new InternalError('the microvm runtime needs a disk store that can hand over a disk image');
    await this.opts.ensureImage?.(spec.image);
    const { shape, guest } = await this.shapeFor(spec.image, spec.limits, spec.writableRoot === true);
    const memory = spec.memoryFrom ? this.memoryImage(spec.memoryFrom, shape) : undefined;
    await mkdir(this.opts.runRoot, { recursive: true, mode: 0o700 });
    // A sandbox that starts empty starts from its kind's template when there is one (a fork or a
    // snapshot's restore has a disk of its own, and boots; a memory fork starts from its parent's state).
    // A VM with volumes has devices no template has (and could not be saved as one): it boots.
    const key = spec.diskFrom || volumes.length ? undefined : templateKey({ ...shape, diskMb: spec.limits.diskMb });
    const template = key ? this.readyTemplate(key) : undefined;
    const hostDirs = this.hostCgroup(spec.id, spec.limits, shape);
    const cg = this.cg();
    try {
      await this.opts.disks.create(spec.id, spec.limits.diskMb, template?.disk ?? spec.diskFrom, template ? { mount: false } : {});
    } catch (err) {
      await cg.remove(spec.id).catch(() => undefined);
      throw err;
    }
    let launched: { vm: MicroVm; record: VmRecord } | undefined;
    try {
      const dataDisk = await this.opts.disks.detach(spec.id);
      if (!dataDisk) throw new InternalError(`sandbox ${spec.id}'s disk vanished`);
      const start = (incoming: string | undefined): Promise<{ vm: MicroVm; record: VmRecord }> =>
        this.launch(spec.id, { shape, guest, limits: spec.limits, dataDisk, hostDirs, volumes, ...(incoming ? { incoming } : {}), ...(spec.egressDir ? { egressDir: spec.egressDir } : {}) });
      let restored = false;
      if (memory) {
        launched = await start(memory);
        restored = true;
      } else if (template && key) {
        try {
          launched = await start(template.state);
          restored = true;
        } catch (err) {
          // A template that does not restore (damaged, or made by another QEMU) is dropped; this
          // sandbox boots (its disk, cloned from the template's, is as fresh as a new one).
          this.opts.logger?.warn({ sandbox_id: spec.id, template: key, err: err instanceof Error ? err.message : String(err) }, 'microvm template did not restore; dropped, booting');
          rmSync(join(this.templateDir(key), 'ready.json'), { force: true });
          launched = await start(undefined);
        }
      } else {
        launched = await start(undefined);
      }
      const { vm, record } = launched;
      if (restored) await syncClone(vm.channel);
      else if (key) await this.saveTemplate(key, vm, spec.id, shape);
      // After the template: what it saves is a VM that has not listened for anyone's egress.
      if (spec.egressDir) await this.startEgress(spec.id, vm.channel, spec.egressDir);
      if (spec.pooled) writeFileSync(join(vm.runDir, POOLED_MARK), '');
      this.channels.set(spec.id, Promise.resolve(vm.channel));
      const data: VmData = { pid: record.pid, startTime: record.startTime };
      return { id: spec.id, runtime: 'microvm', data: { ...data } };
    } catch (err) {
      await launched?.vm.kill().catch(() => undefined);
      await rm(this.runDir(spec.id), { recursive: true, force: true });
      await this.opts.disks.destroy(spec.id).catch(() => undefined);
      await cg.remove(spec.id).catch(() => undefined);
      throw err;
    }
  }

  /** A memory image's state file, if it fits a VM of `shape` (BadRequestError otherwise: its processes cannot go on in another kind of VM). */
  private memoryImage(image: string, shape: VmShape): string {
    const saved = readJson<VmRecord>(join(image, RECORD));
    if (!saved || !existsSync(join(image, STATE))) throw new BadRequestError(`${image} is not a microvm memory image`, { hint: 'fork with --memory from a microvm sandbox' });
    if (!sameShape(saved.shape, shape)) throw new BadRequestError('a memory image only starts a sandbox of the same image, limits and guest', { hint: 'fork without changing the image or the limits' });
    return join(image, STATE);
  }

  private templateDir(key: string): string {
    return join(this.opts.dir, 'templates', key);
  }

  /** The saved state and disk of a template, if it was made (on this host, for this guest and image). */
  private readyTemplate(key: string): { state: string; disk: string } | undefined {
    try {
      const t = JSON.parse(readFileSync(join(this.templateDir(key), 'ready.json'), 'utf8')) as { state?: string; disk?: string };
      return t.state && t.disk && existsSync(t.state) && existsSync(t.disk) ? { state: t.state, disk: t.disk } : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Make the template of this kind of sandbox from a VM that has just booted and run nothing yet:
   * its state (QEMU's migration stream, ~65 MB for 128 MB of RAM) and its disk at that moment. The
   * VM goes on as the sandbox. Best effort: a failure leaves the sandbox as it is and no template.
   */
  private async saveTemplate(key: string, vm: MicroVm, id: string, shape: VmShape): Promise<void> {
    if (this.building.has(key) || !this.opts.disks.keepImage) return;
    this.building.add(key);
    const dir = this.templateDir(key);
    const keepImage = this.opts.disks.keepImage.bind(this.opts.disks);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const state = join(dir, 'state.bin');
      const partial = `${state}.${process.pid}.partial`;
      let disk = '';
      const t0 = performance.now();
      await vm.saveState(partial, async () => {
        disk = await keepImage(id, `vm_${key}`);
      });
      await rename(partial, state);
      writeFileSync(join(dir, 'ready.json'), `${JSON.stringify({ state, disk, guest: shape.guest, rootDisk: shape.rootDisk, createdAt: new Date().toISOString() })}\n`);
      this.opts.logger?.info({ sandbox_id: id, template: key, ms: Math.round(performance.now() - t0) }, 'microvm template saved');
    } catch (err) {
      this.opts.logger?.warn({ sandbox_id: id, template: key, err: err instanceof Error ? err.message : String(err) }, 'could not save a microvm template; sandboxes of this kind boot cold');
    } finally {
      this.building.delete(key);
    }
  }

  /**
   * The sandbox's running VM: its record (a woken VM's QEMU is not the one `create` returned), else
   * the handle's QEMU (a VM started before records were kept, which has no egress).
   */
  private liveVm(handle: SandboxHandle): (VmData & { record?: VmRecord }) | undefined {
    const record = readJson<VmRecord>(join(this.runDir(handle.id), RECORD));
    if (record && isSameProcess(record.pid, record.startTime)) return { pid: record.pid, startTime: record.startTime, record };
    const d = handle.data as Partial<VmData>;
    return typeof d.pid === 'number' && typeof d.startTime === 'number' && isSameProcess(d.pid, d.startTime) ? { pid: d.pid, startTime: d.startTime } : undefined;
  }

  private assertAlive(handle: SandboxHandle): VmData & { record?: VmRecord } {
    const live = this.liveVm(handle);
    if (live) return live;
    if (this.hibernation(handle.id)) throw new ConflictError(`sandbox ${handle.id} is hibernated`, { hint: 'wake it first (any exec or file call through agentbox does)' });
    throw new ConflictError(`sandbox ${handle.id} is not running`, { hint: `agentbox inspect ${handle.id} says why it ended` });
  }

  /** This home's hibernated VMs (DIR may be shared by homes: tests, benchmarks), each in a directory named by its id. */
  private get hibernatedRoot(): string {
    return join(this.opts.dir, 'hibernated', this.opts.homeTag);
  }

  private hibernatedDir(id: string): string {
    return join(this.hibernatedRoot, id);
  }

  private get memoryRoot(): string {
    return join(this.opts.dir, 'memory', this.opts.homeTag);
  }

  /** A hibernated VM's record and state, when the hibernation is complete (the state is written before the record). */
  private hibernation(id: string): { record: VmRecord; state: string } | undefined {
    const dir = this.hibernatedDir(id);
    const record = readJson<VmRecord>(join(dir, RECORD));
    return record && existsSync(join(dir, STATE)) ? { record, state: join(dir, STATE) } : undefined;
  }

  /** Relay the sandbox's connections to its proxy (egress-pump.ts) over this channel; rejects when the guest cannot listen. */
  private async startEgress(id: string, channel: VmChannel, egressDir: string): Promise<void> {
    try {
      await EgressPump.start(channel, egressDir, this.opts.logger?.child({ sandbox_id: id }));
    } catch (err) {
      throw new InternalError(`sandbox ${id}'s egress could not be set up in its VM: ${(err as Error).message}`);
    }
  }

  /**
   * The VM's agent channel: the one open, or a new connection (after a daemon restart, or if it
   * broke). A new connection starts the sandbox's egress relay again (the agent ended the old one's streams).
   */
  private channel(handle: SandboxHandle): Promise<VmChannel> {
    const egressDir = this.assertAlive(handle).record?.egressDir;
    const known = this.channels.get(handle.id);
    if (known) {
      return known.then(
        (ch) => {
          if (ch.isOpen) return ch;
          if (this.channels.get(handle.id) === known) this.channels.delete(handle.id);
          return this.channel(handle);
        },
        () => {
          if (this.channels.get(handle.id) === known) this.channels.delete(handle.id);
          return this.channel(handle);
        },
      );
    }
    const made = VmChannel.connect(vmFiles(this.runDir(handle.id)).agentSocket, { timeoutMs: 10_000, ...(this.opts.logger ? { log: this.opts.logger.child({ sandbox_id: handle.id }) } : {}) }).then(
      async (ch) => {
        if (egressDir) await this.startEgress(handle.id, ch, egressDir).catch((err: unknown) => this.opts.logger?.error({ sandbox_id: handle.id, err }, 'microvm egress relay not restarted'));
        return ch;
      },
      (err: unknown) => {
        throw new ConflictError(`sandbox ${handle.id}'s VM does not answer: ${(err as Error).message}`, { hint: `agentbox inspect ${handle.id}; the VM's console is in ${vmFiles(this.runDir(handle.id)).consoleLog}` });
      },
    );
    this.channels.set(handle.id, made);
    return made;
  }

  exec(handle: SandboxHandle, cmd: string[], opts: ExecOpts): AsyncIterable<ExecEvent> {
    this.assertAlive(handle);
    const channel = this.channel(handle);
    return (async function* () {
      yield* vmExec(await channel, cmd, opts);
    })();
  }

  private readonly startFileOp: FileOpStarter = async (handle, op, path, stdin) => {
    const ch = await this.channel(handle);
    return vmFileOps(() => ch)(handle, op, path, stdin);
  };

  private readonly runProcOp: ProcOpRunner = async (handle, args) => {
    const ch = await this.channel(handle);
    return vmProcOps(() => ch)(handle, args);
  };

  private readonly files = new SandboxFiles(this.startFileOp);
  private readonly ports = new SandboxPorts(this.startFileOp);
  private readonly terminals = new SandboxPty(this.startFileOp);
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

  readFile(handle: SandboxHandle, path: string): ReturnType<Runtime['readFile']> {
    return this.files.readFile(handle, path);
  }

  writeFile(handle: SandboxHandle, path: string, data: Parameters<Runtime['writeFile']>[2]): Promise<number> {
    return this.files.writeFile(handle, path, data);
  }

  listDir(handle: SandboxHandle, path: string): Promise<DirEntry[]> {
    return this.files.listDir(handle, path);
  }

  removePath(handle: SandboxHandle, path: string): Promise<void> {
    return this.files.removePath(handle, path);
  }

  /** The guest freezes the disk's ext4 (FIFREEZE on /disk) for `fn`; it thaws by itself after 60 s should the host not. */
  async withDiskFrozen<T>(handle: SandboxHandle, fn: () => Promise<T>): Promise<T> {
    const ch = await this.channel(handle);
    const frozen = await vmRequest(ch, 'freeze', [], 60_000);
    if (frozen.exitCode !== 0) throw new ConflictError(`sandbox ${handle.id}'s disk could not be frozen: ${frozen.stderr.trim()}`);
    try {
      return await fn();
    } finally {
      await vmRequest(ch, 'thaw', [], 0).catch((err: unknown) => this.opts.logger?.error({ sandbox_id: handle.id, err }, 'could not thaw a VM\'s disk (it thaws by itself within 60 s)'));
    }
  }

  /**
   * Whether the VM's QEMU still runs. A live VM with egress that this daemon has no channel to yet
   * (it was restarted) is connected now, so the sandbox's connections are relayed again without
   * waiting for someone to exec.
   */
  async status(handle: SandboxHandle): Promise<RuntimeStatus> {
    const live = this.liveVm(handle);
    if (!live) return this.hibernation(handle.id) ? { alive: true, hibernated: true } : { alive: false };
    if (existsSync(join(this.runDir(handle.id), PAUSED_MARK))) return { alive: true, paused: true };
    if (live.record?.egressDir && !this.channels.has(handle.id)) this.channel(handle).catch(() => undefined);
    return { alive: true };
  }

  /** Stop the VM's vCPUs (QMP `stop`): its processes stand still, its memory stays held. */
  async pause(handle: SandboxHandle): Promise<void> {
    this.assertAlive(handle);
    // The mark first: a daemon that dies between the two still knows to `cont` it (cont on a running VM is harmless).
    writeFileSync(join(this.runDir(handle.id), PAUSED_MARK), '');
    await this.qmp(handle.id, (q) => q.execute('stop'));
  }

  async resume(handle: SandboxHandle): Promise<void> {
    this.assertAlive(handle);
    await this.qmp(handle.id, (q) => q.execute('cont'));
    rmSync(join(this.runDir(handle.id), PAUSED_MARK), { force: true });
  }

  private async qmp<T>(id: string, fn: (q: Qmp) => Promise<T>): Promise<T> {
    const q = await Qmp.connect(vmFiles(this.runDir(id)).qmpSocket);
    try {
      return await fn(q);
    } finally {
      q.close();
    }
  }

  /**
   * Hibernation saves the whole VM (QEMU's migration stream: its RAM, devices and CPUs) beside its
   * record and ends QEMU; the disk stays as it is, detached. A sandbox with egress may be saved too:
   * nothing of the host is in the state (its relays are streams of the channel, which the host makes
   * again at wake); a connection open through the proxy at that moment is reset.
   */
  async canHibernate(kind: HibernateKind): Promise<ProbeResult> {
    if (kind.isolation !== 'vm') return { ok: false, reason: `the microvm runtime offers isolation vm, not ${kind.isolation}`, hint: 'use --isolation vm' };
    if (kind.volumes) return { ok: false, reason: 'QEMU cannot save a VM with named volumes (their shared filesystem device, vhost-user-fs, cannot be migrated)', hint: 'use a profile without volumes, or stop the sandbox instead' };
    return { ok: true };
  }

  async hibernate(handle: SandboxHandle): Promise<void> {
    const live = this.assertAlive(handle);
    const known = this.channels.get(handle.id);
    const ch = known ? await known.catch(() => undefined) : undefined;
    if (ch?.isOpen && ch.running(['egress']) > 0) throw new ConflictError(`sandbox ${handle.id} is busy (a command or a transfer is running)`, { hint: 'hibernate it when it is idle' });
    const { record } = live;
    if (!record) throw new InternalError(`sandbox ${handle.id}'s VM has no record`);
    if (record.volumes) throw new ConflictError(`sandbox ${handle.id} has named volumes, and QEMU cannot save a VM with them`, { hint: 'stop it instead' });
    const dir = this.hibernatedDir(handle.id);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await this.dropChannel(handle.id);
    const t0 = performance.now();
    try {
      // The hibernation is made complete while QEMU still stands stopped, so there is no moment when
      // the sandbox is neither running nor hibernated (the reaper would take it for lost).
      await saveVmState(this.runDir(handle.id), join(dir, `${STATE}.partial`), {
        then: 'quit',
        whileStopped: async () => {
          await rename(join(dir, `${STATE}.partial`), join(dir, STATE));
          writeFileSync(join(dir, RECORD), `${JSON.stringify(record)}\n`, { mode: 0o600 });
        },
      });
      await waitExit(live.pid, live.startTime, 10_000);
    } catch (err) {
      if (isSameProcess(live.pid, live.startTime)) {
        // The save failed and QEMU goes on (saveVmState's `cont`): as before, but for the channel, made again on use.
        await rm(dir, { recursive: true, force: true });
        throw new ConflictError(`sandbox ${handle.id} could not be hibernated: ${(err as Error).message}`, { hint: 'it runs on as before' });
      }
      if (!this.hibernation(handle.id)) await rm(dir, { recursive: true, force: true });
      throw err;
    }
    await rm(this.runDir(handle.id), { recursive: true, force: true });
    this.opts.logger?.info({ sandbox_id: handle.id, ms: Math.round(performance.now() - t0) }, 'microvm hibernated');
  }

  async wake(handle: SandboxHandle): Promise<void> {
    // A VM that still runs wins over a hibernation record (a daemon that died between the two).
    if (this.liveVm(handle)) {
      await rm(this.hibernatedDir(handle.id), { recursive: true, force: true });
      return;
    }
    const hib = this.hibernation(handle.id);
    if (!hib) {
      this.assertAlive(handle);
      return;
    }
    const { record } = hib;
    const guest = await this.guestArtifacts();
    if (guest.fingerprint !== record.shape.guest) throw new ConflictError(`sandbox ${handle.id} was hibernated by another guest build and cannot be woken by this one`, { hint: 'delete it and create it again' });
    await rm(this.runDir(handle.id), { recursive: true, force: true });
    const { vm } = await this.launch(handle.id, { shape: record.shape, guest, limits: record.limits, dataDisk: record.dataDisk, hostDirs: this.hostCgroup(handle.id, record.limits, record.shape), incoming: hib.state, ...(record.egressDir ? { egressDir: record.egressDir } : {}) });
    try {
      await syncClone(vm.channel);
      if (record.egressDir) await this.startEgress(handle.id, vm.channel, record.egressDir);
    } catch (err) {
      await vm.kill().catch(() => undefined);
      throw err;
    }
    this.channels.set(handle.id, Promise.resolve(vm.channel));
    await rm(this.hibernatedDir(handle.id), { recursive: true, force: true });
  }

  /** A copy of a hibernated VM's state and record (a reflink where the filesystem has them), for `create` with `memoryFrom`. */
  async copyMemory(handle: SandboxHandle): Promise<string> {
    const hib = this.hibernation(handle.id);
    if (!hib) throw new ConflictError(`sandbox ${handle.id} is not hibernated`, { hint: 'hibernate it first' });
    const dest = join(this.memoryRoot, `${handle.id}-${randomBytes(6).toString('hex')}`);
    await mkdir(dest, { recursive: true, mode: 0o700 });
    try {
      await copyFile(hib.state, join(dest, STATE), fsConstants.COPYFILE_FICLONE);
      writeFileSync(join(dest, RECORD), `${JSON.stringify(hib.record)}\n`, { mode: 0o600 });
    } catch (err) {
      await rm(dest, { recursive: true, force: true });
      throw err;
    }
    return dest;
  }

  /** `image` is one of this runtime's memory images (a path from a caller, about to be moved or removed). */
  private checkMemoryImage(image: string): void {
    if (dirname(image) !== this.memoryRoot) throw new InternalError(`${image} is not a memory image of this runtime`);
  }

  async saveMemory(image: string, dir: string): Promise<void> {
    this.checkMemoryImage(image);
    for (const name of [STATE, RECORD]) {
      // The snapshot store is often another filesystem than DIR: a copy then.
      await rename(join(image, name), join(dir, name)).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EXDEV') throw err;
        await copyFile(join(image, name), join(dir, name));
      });
    }
    await rm(image, { recursive: true, force: true });
  }

  async dropMemory(image: string): Promise<void> {
    this.checkMemoryImage(image);
    await rm(image, { recursive: true, force: true });
  }

  /** The guest's own count: memory in use (MemTotal - MemAvailable), processes, CPU time since boot. */
  async stats(handle: SandboxHandle): Promise<RuntimeStats> {
    if (!this.liveVm(handle) && this.hibernation(handle.id)) return { memoryBytes: 0, pids: 0, cpuMs: 0 };
    return (await this.channel(handle)).stats();
  }

  async destroy(handle: SandboxHandle): Promise<void> {
    const live = this.liveVm(handle);
    if (!live) return this.reap(handle.id);
    await this.dropChannel(handle.id);
    await killVm(live.pid, live.startTime);
    await this.removeLeftovers(handle.id);
  }

  async list(): Promise<RuntimeObject[]> {
    const running = this.qemuProcesses();
    const ids = new Set(running.keys());
    if (existsSync(this.opts.runRoot)) for (const id of readdirSync(this.opts.runRoot)) ids.add(id);
    if (existsSync(this.hibernatedRoot)) for (const id of readdirSync(this.hibernatedRoot)) ids.add(id);
    return [...ids].map((id) => ({ id, alive: running.has(id) || this.hibernation(id) !== undefined, ...(existsSync(join(this.runDir(id), POOLED_MARK)) ? { pooled: true } : {}) }));
  }

  async reap(id: string): Promise<void> {
    await this.dropChannel(id);
    const pid = this.qemuProcesses().get(id);
    if (pid !== undefined) {
      const start = processStartTime(pid);
      if (start !== undefined) await killVm(pid, start);
    }
    await this.removeLeftovers(id);
  }

  /** What a VM leaves once its QEMU is gone: its run directory, its disk, its host cgroup. */
  private async removeLeftovers(id: string): Promise<void> {
    await rm(this.runDir(id), { recursive: true, force: true });
    await rm(this.hibernatedDir(id), { recursive: true, force: true });
    await this.opts.disks.destroy(id);
    await this.cg().remove(id);
  }

  /** The host cgroups of this home's VMs (their own scope: never the local runtime's sandboxes). */
  private cg(): Cgroups {
    if (this.cgroups) return this.cgroups;
    const found = detectCgroups();
    if (!found.ok) throw new RuntimeUnavailableError(`microvm runtime: ${found.reason}`, { hint: 'mount the cgroup controllers (memory, pids, cpu)' });
    this.cgroups = new Cgroups(found.version, `agentbox-vm/${this.opts.homeTag}`);
    return this.cgroups;
  }

  private cgroups: Cgroups | undefined;

  async close(): Promise<void> {
    for (const id of [...this.channels.keys()]) await this.dropChannel(id);
    this.cgroups?.removeScopeIfEmpty();
  }

  private async dropChannel(id: string): Promise<void> {
    const ch = this.channels.get(id);
    this.channels.delete(id);
    await ch?.then((c) => c.close()).catch(() => undefined);
  }

  /** This home's QEMU processes by sandbox id, found by their `-name`. */
  private qemuProcesses(): Map<string, number> {
    const prefix = `agentbox-vm.${this.opts.homeTag}.`;
    return new Map(namedProcesses().filter((p) => p.name.startsWith(prefix)).map((p) => [p.name.slice(prefix.length), p.pid]));
  }
}

/** What a template is made for: a VM restored from it must be started exactly so (paths apart). */
function templateKey(k: VmShape & { diskMb: number }): string {
  return createHash('sha256')
    .update(JSON.stringify([TEMPLATE_LAYOUT, k.guest, k.rootDisk, k.accel, k.ramMb, k.cpus, k.limits.memoryMb, k.limits.pids, k.diskMb, k.writableRoot === true]))
    .digest('hex')
    .slice(0, 24);
}

/** Bump when what a template holds changes in a way its key does not show. */
const TEMPLATE_LAYOUT = 1;

/** A clone restored from a template has the template's RNG state and clock: fresh entropy and the time. */
async function syncClone(ch: VmChannel): Promise<void> {
  const r = await vmRequest(ch, 'sync', [randomBytes(64).toString('hex'), String(Date.now())], 10_000);
  if (r.exitCode !== 0) throw new InternalError(`a restored VM could not be reseeded: ${r.stderr.trim()}`);
}

/** Wait until the QEMU process ends by itself; SIGKILL it after `ms`. */
async function waitExit(pid: number, startTime: number, ms: number): Promise<void> {
  for (const deadline = Date.now() + ms; isSameProcess(pid, startTime); await sleep(20)) {
    if (Date.now() > deadline) return killVm(pid, startTime);
  }
}

/** SIGKILL the VM's QEMU (if it is still that process) and wait until it is gone. */
async function killVm(pid: number, startTime: number): Promise<void> {
  if (!isSameProcess(pid, startTime)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  const deadline = Date.now() + 10_000;
  while (isSameProcess(pid, startTime)) {
    if (Date.now() > deadline) throw new RuntimeUnavailableError(`QEMU (pid ${pid}) did not end after SIGKILL`);
    await sleep(20);
  }
}
