/**
 * QEMU's command line for one microVM (../shared/research/microvm.md): the `microvm` machine, the
 * kernel booted directly through PVH, the initramfs, no default devices, no network device, and one
 * virtio-serial port (org.agentbox.0) whose host end is a Unix socket QEMU listens on.
 */
import { readFileSync } from 'node:fs';

export type Accel = 'tcg' | 'kvm';

export interface QemuArgsOpts {
  vmlinux: string;
  initramfs: string;
  /** Where QEMU listens for the agent channel. */
  agentSocket: string;
  /** The serial console (kernel messages, the agent's errors). */
  consoleLog: string;
  memoryMb: number;
  cpus: number;
  accel: Accel;
  /** The host's TSC rate in kHz (tscKhz()); TCG guests need it, see below. */
  tscKhz?: number;
  /** Shown in `ps` (`-name`): how a later scan of the host finds the VMs of a sandbox. */
  name?: string;
  /**
   * The image's root (guest/root-disk.ts), attached read-only; the guest finds it by its serial,
   * agentbox-root. A path, or `/dev/fdset/N` for descriptors handed over with `addFds`.
   */
  rootDisk?: string;
  /** The sandbox's own disk (ext4 of diskMb), read-write; serial agentbox-disk. Never mounted on the host meanwhile. */
  dataDisk?: string;
  /** Descriptors QEMU inherits, put in the fd sets that `/dev/fdset/SET` names (`-add-fd`). */
  addFds?: { fd: number; set: number }[];
  /** QEMU's machine protocol socket (qmp.ts): stop, save, resume. */
  qmpSocket?: string;
  /**
   * Start from a saved state instead of booting: QEMU listens on this Unix socket for the migration
   * stream (vm.ts feeds it the file). Not `exec:`, which `-sandbox spawn=deny` rightly forbids.
   */
  incoming?: string;
  /** Limits the guest agent puts every command under (a cgroup in the guest; agentbox.memory_mb=N agentbox.pids=N on the kernel's command line). */
  limits?: { memoryMb: number; pids: number };
  /**
   * rootfs: writable (agentbox.writable_root=1): the guest mounts the image, idmapped to the sandbox
   * user, under an overlay whose upper layer is the data disk's rootfs/ (native/writable-root.h).
   */
  writableRoot?: boolean;
  /**
   * Named volumes, each served by a virtiofsd of its own on a vhost-user socket (volume-server.ts);
   * the guest mounts tag volN at the target (agentbox.volumes on the kernel's command line).
   * vhost-user needs the guest's RAM in shared memory (a memfd).
   */
  volumes?: { socket: string; target: string; readOnly: boolean }[];
}

/**
 * Kernel options: quiet, no reboot loop (panic=-1 and QEMU's -no-reboot end the VM instead), and the
 * research's list of probes skipped under emulation. `tsc_early_khz`: microvm has neither HPET nor
 * PM timer, so the kernel calibrates the TSC against the PIT; under CPU contention that calibration
 * fails under TCG and the guest hangs silently (9 of 10 concurrent boots did). Under TCG the guest's
 * TSC is the host's, so the host's rate is the right value.
 */
export function kernelCmdline(o: { tscKhz?: number }): string {
  return [
    'console=ttyS0',
    'quiet',
    'panic=-1',
    ...(o.tscKhz ? [`tsc_early_khz=${o.tscKhz}`, 'tsc=reliable', 'no_timer_check'] : []),
    'mitigations=off',
    'cryptomgr.notests',
    'random.trust_cpu=on',
    '8250.nr_uarts=1',
    'i8042.noaux',
    'i8042.nomux',
    'i8042.nopnp',
    'i8042.dumbkbd',
    'nokaslr',
    'audit=0',
    'reboot=t',
  ].join(' ');
}

export function qemuArgs(o: QemuArgsOpts): string[] {
  if (!Number.isInteger(o.memoryMb) || o.memoryMb < 32) throw new RangeError(`memoryMb must be an integer >= 32, not ${o.memoryMb}`);
  if (!Number.isInteger(o.cpus) || o.cpus < 1) throw new RangeError(`cpus must be an integer >= 1, not ${o.cpus}`);
  if (o.limits && !(Number.isInteger(o.limits.memoryMb) && o.limits.memoryMb >= 1 && Number.isInteger(o.limits.pids) && o.limits.pids >= 1)) throw new RangeError(`bad guest limits: ${JSON.stringify(o.limits)}`);
  for (const p of [o.agentSocket, o.consoleLog, o.rootDisk ?? '', o.dataDisk ?? '', o.qmpSocket ?? '', o.incoming ?? '', ...(o.volumes ?? []).map((v) => v.socket)]) {
    if (p.includes(',')) throw new RangeError(`QEMU option paths cannot hold a comma: ${p}`);
  }
  const append = [
    kernelCmdline({ tscKhz: o.accel === 'tcg' ? o.tscKhz : undefined }),
    ...(o.limits ? [`agentbox.memory_mb=${o.limits.memoryMb}`, `agentbox.pids=${o.limits.pids}`] : []),
    ...(o.writableRoot ? ['agentbox.writable_root=1'] : []),
    ...(o.volumes?.length ? [`agentbox.volumes=${volumesOption(o.volumes)}`] : []),
  ].join(' ');
  // x86's COMMAND_LINE_SIZE; longer is cut without a word.
  if (append.length >= 2048) throw new RangeError(`the guest's command line would be ${append.length} bytes (at most 2047): too many volumes or too long targets`);
  return [
    ...(o.name ? ['-name', o.name] : []),
    '-M', `microvm,x-option-roms=off,rtc=on${o.volumes?.length ? ',memory-backend=mem' : ''}`,
    // vhost-user devices need virtio 1.0; microvm's virtio-mmio is legacy unless told (only VMs
    // with volumes are: they are never saved, so no saved state meets the other transport).
    ...(o.volumes?.length ? ['-object', `memory-backend-memfd,id=mem,size=${o.memoryMb}M,share=on`, '-global', 'virtio-mmio.force-legacy=false'] : []),
    '-accel', o.accel,
    // KVM: the host's CPU, minus the MSR this machine's software KVM refuses (research §2).
    ...(o.accel === 'kvm' ? ['-cpu', 'host,-arch-capabilities'] : []),
    '-m', String(o.memoryMb),
    '-smp', String(o.cpus),
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    '-monitor', 'none',
    '-no-reboot',
    // QEMU's own syscall filter: no new processes, no privilege changes, no obsolete calls.
    '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    '-serial', `file:${o.consoleLog}`,
    '-kernel', o.vmlinux,
    '-initrd', o.initramfs,
    '-append', append,
    '-device', 'virtio-serial-device',
    '-chardev', `socket,id=agent,path=${o.agentSocket},server=on,wait=off`,
    '-device', 'virtserialport,chardev=agent,name=org.agentbox.0',
    ...(o.qmpSocket ? ['-qmp', `unix:${o.qmpSocket},server=on,wait=off`] : []),
    ...(o.incoming ? ['-incoming', `unix:${o.incoming}`] : []),
    ...(o.addFds ?? []).flatMap(({ fd, set }) => ['-add-fd', `fd=${fd},set=${set}`]),
    ...(o.volumes ?? []).flatMap((v, i) => ['-chardev', `socket,id=vol${i},path=${v.socket}`, '-device', `vhost-user-fs-device,chardev=vol${i},tag=vol${i}`]),
    ...(o.rootDisk ? ['-drive', `id=root,file=${o.rootDisk},format=raw,if=none,readonly=on`, '-device', 'virtio-blk-device,drive=root,serial=agentbox-root'] : []),
    // cache=none: the guest's writes reach the host's file when the guest flushes them, not later (snapshots copy that file).
    // file.locking=off: QEMU's image locks only keep a second QEMU off the disk, and here the daemon
    // alone hands disks to QEMUs (as descriptors, see vm.ts); with a disk given as descriptors, `cont`
    // after a state save reopens it and trips over QEMU's own lock ("Failed to get write lock").
    ...(o.dataDisk ? ['-drive', `id=disk,file=${o.dataDisk},format=raw,if=none,cache=none,discard=unmap,file.locking=off`, '-device', 'virtio-blk-device,drive=disk,serial=agentbox-disk'] : []),
  ];
}

/**
 * The volumes for the guest agent: `TAG:rw|ro:HEX(target)` joined by commas (a target is any absolute
 * path; hex keeps spaces and commas out of the kernel's command line).
 */
export function volumesOption(volumes: readonly { target: string; readOnly: boolean }[]): string {
  return volumes.map((v, i) => `vol${i}:${v.readOnly ? 'ro' : 'rw'}:${Buffer.from(v.target).toString('hex')}`).join(',');
}

/** The host's CPU clock in kHz from /proc/cpuinfo (the first `cpu MHz`), or undefined when it says none. */
export function tscKhz(cpuinfo = '/proc/cpuinfo'): number | undefined {
  try {
    const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync(cpuinfo, 'utf8'));
    const khz = m ? Math.round(Number(m[1]) * 1000) : NaN;
    return Number.isFinite(khz) && khz > 0 ? khz : undefined;
  } catch {
    return undefined;
  }
}
