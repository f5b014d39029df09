/**
 * A named volume inside a microVM: the volume's host directory served by a virtiofsd of its own
 * (QEMU's, from qemu-system-common) on a vhost-user socket in QEMU's directory; the guest mounts it
 * with virtiofs (native/agentbox-vm-agent.c). The guest kernel has no 9p, and QEMU, which runs as a
 * user of its own (jail.ts), could not write a volume's files (they are uid 1000's) itself.
 *
 * virtiofsd runs as root, in namespaces of its own with the volume's directory as its root
 * (`sandbox=namespace`: pivot_root, no network, its own pids) under its seccomp filter, without the
 * capabilities to make device nodes or file capabilities. It acts with the credentials of the
 * guest's caller, so uid 1000 in the guest reads and writes the volume as uid 1000, as the other
 * runtimes' sandboxes do. A read-only volume is served from a read-only bind in a mount namespace
 * of virtiofsd's own: the guest's kernel could not write it even if it ignored its own `ro`.
 *
 * vhost-user-fs cannot be migrated by QEMU, so a VM with volumes neither hibernates nor forks with
 * its memory, and never starts from a template.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chownSync, existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { InternalError, RuntimeUnavailableError } from '../../contract/errors.js';

export const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';

export interface VolumeServerOpts {
  /** The volume's directory on the host. */
  source: string;
  readOnly: boolean;
  /** Where virtiofsd listens (in QEMU's directory); handed to QEMU's user once it is there. */
  socket: string;
  /** QEMU's user and group (jail.ts), when it has its own. */
  owner?: { uid: number; gid: number };
  /** virtiofsd's stderr. */
  logFd: number | 'ignore';
  /** Outlives this process, as the VM does. */
  detached: boolean;
  /** Called with its pid as soon as it is spawned (to put it in the VM's host cgroup). */
  onSpawn?: (pid: number) => void;
  /** @default 10000 */
  timeoutMs?: number;
  /** @default /usr/lib/qemu/virtiofsd (AGENTBOX_VIRTIOFSD overrides) */
  binary?: string;
}

function command(o: VolumeServerOpts): { command: string; args: string[] } {
  const binary = o.binary ?? process.env.AGENTBOX_VIRTIOFSD ?? VIRTIOFSD;
  const daemonArgs = [
    `--socket-path=${o.socket}`,
    '-o', `source=${o.source}`,
    '-o', 'sandbox=namespace',
    // Every sandbox sharing the volume sees the others' writes at once (no guest-side caching).
    '-o', 'cache=none',
    '-o', 'modcaps=-mknod:-setfcap',
    '-o', 'no_posix_lock',
    '-o', 'no_flock',
    '-o', 'log_level=warn',
  ];
  if (!o.readOnly) return { command: binary, args: daemonArgs };
  return {
    command: 'unshare',
    args: ['--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount --bind -o ro -- "$1" "$1" && shift && exec "$@"', 'sh', o.source, binary, ...daemonArgs],
  };
}

/** Start the volume's server; resolves once its socket is there and QEMU's user may connect to it. */
export async function startVolumeServer(o: VolumeServerOpts): Promise<ChildProcess> {
  if (!existsSync(o.source)) throw new InternalError(`the volume's directory ${o.source} is not there`);
  const cmd = command(o);
  const proc = spawn(cmd.command, cmd.args, { stdio: ['ignore', 'ignore', o.logFd], detached: o.detached });
  let exited: string | undefined;
  proc.once('exit', (code, signal) => (exited = signal ?? `code ${code}`));
  let spawnError: NodeJS.ErrnoException | undefined;
  proc.once('error', (err: NodeJS.ErrnoException) => (spawnError = err));
  try {
    if (proc.pid !== undefined) o.onSpawn?.(proc.pid);
    const deadline = Date.now() + (o.timeoutMs ?? 10_000);
    while (!existsSync(o.socket)) {
      if (spawnError) throw spawnError.code === 'ENOENT' ? new RuntimeUnavailableError(`${cmd.command} is not installed`, { hint: 'apt-get install qemu-system-x86 util-linux (scripts/install-system-deps.sh)' }) : spawnError;
      if (exited !== undefined) throw new InternalError(`virtiofsd for ${o.source} exited (${exited}) before it listened`);
      if (Date.now() > deadline) throw new InternalError(`virtiofsd for ${o.source} did not listen within ${o.timeoutMs ?? 10_000} ms`);
      await sleep(5);
    }
    if (o.owner) chownSync(o.socket, o.owner.uid, o.owner.gid);
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  if (o.detached) proc.unref();
  return proc;
}
