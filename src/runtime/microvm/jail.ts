/**
 * What QEMU runs as. A guest that breaks out of its VM lands in QEMU, so QEMU holds as little as the
 * host can take from it (the role of Firecracker's jailer):
 * - a user and group of its own, unused by any other process, so it can neither signal nor trace
 *   another VM's QEMU nor read the daemon's files (they are root's, mode 0600/0700);
 * - no capabilities, not even in its bounding set, and no_new_privs;
 * - a network namespace with nothing in it but a down loopback (QEMU needs no network: every
 *   channel to the host is a Unix socket in its directory) and an IPC namespace of its own;
 * - its own syscall filter on top (qemu-args.ts, `-sandbox`).
 * It reaches its files by what the daemon opens for it (qemu-args.ts: kernel, initramfs and disks as
 * inherited descriptors) and by its working directory, the one directory it owns.
 *
 * util-linux's `unshare` and `setpriv` exec in place, so the pid the daemon gets is QEMU's.
 */
import { readdirSync, statSync } from 'node:fs';
import { randomInt } from 'node:crypto';

export interface VmCredentials {
  uid: number;
  gid: number;
  /** Supplementary groups: /dev/kvm's when the VM uses KVM and the device is open to that group only. */
  groups: number[];
}

/**
 * The ids VMs draw from: 2^24 ids above 1.7e9, far from login users, system users and the subordinate
 * ranges container tools hand out (/etc/subuid starts at 100000 and grows by 65536 per user).
 */
export const VM_ID_BASE = 1_700_000_000;
export const VM_ID_SPAN = 2 ** 24;

/** The euids of the running processes (a process's /proc directory belongs to its euid). */
function processOwners(): Set<number> {
  const owners = new Set<number>();
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      owners.add(statSync(`/proc/${p}`).uid);
    } catch {
      // ended meanwhile
    }
  }
  return owners;
}

/**
 * A fresh id for one VM's QEMU: drawn at random and checked against every running process. Two
 * draws racing to the same id would need the same number out of 16.7 million before either QEMU
 * starts; a VM's id is given up with its QEMU.
 */
export function vmCredentials(o: { kvm: boolean; kvmDevice?: string }): VmCredentials {
  const taken = processOwners();
  let uid = VM_ID_BASE + randomInt(VM_ID_SPAN);
  while (taken.has(uid)) uid = VM_ID_BASE + randomInt(VM_ID_SPAN);
  return { uid, gid: uid, groups: o.kvm ? kvmGroups(o.kvmDevice ?? '/dev/kvm') : [] };
}

/** /dev/kvm's group when that group may read and write it and others may not (Debian: root:kvm 0660). */
function kvmGroups(dev: string): number[] {
  try {
    const st = statSync(dev);
    const openToOthers = (st.mode & 0o006) === 0o006;
    const openToGroup = (st.mode & 0o060) === 0o060;
    return !openToOthers && openToGroup ? [st.gid] : [];
  } catch {
    return [];
  }
}

/** Whether this process can put QEMU under other credentials (only root can). */
export function canJail(): boolean {
  return process.getuid?.() === 0;
}

/**
 * The command that runs `binary args` under `creds`, in fresh network and IPC namespaces. With
 * `dieWithParent`, QEMU gets SIGKILL when the process that spawned it ends (set after the change of
 * credentials, which would clear it). Without credentials (a daemon that is not root), QEMU runs as
 * this process's user, and only `dieWithParent` applies.
 */
export function jailedCommand(binary: string, args: readonly string[], o: { creds?: VmCredentials; dieWithParent?: boolean }): { command: string; args: string[] } {
  const deathSignal = o.dieWithParent ? ['--pdeathsig', 'KILL'] : [];
  if (!o.creds) return o.dieWithParent ? { command: 'setpriv', args: [...deathSignal, '--', binary, ...args] } : { command: binary, args: [...args] };
  const { uid, gid, groups } = o.creds;
  return {
    command: 'unshare',
    args: [
      '--net',
      '--ipc',
      '--',
      'setpriv',
      `--reuid=${uid}`,
      `--regid=${gid}`,
      ...(groups.length ? [`--groups=${groups.join(',')}`] : ['--clear-groups']),
      '--inh-caps=-all',
      '--bounding-set=-all',
      '--no-new-privs',
      ...deathSignal,
      '--',
      binary,
      ...args,
    ],
  };
}
