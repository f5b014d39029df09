/** The bwrap command line that turns a staged image root into a sandbox. */
import type { Limits } from '../../contract/model.js';
import { EGRESS_MOUNT, relayArgs } from '../egress-plumbing.js';

/** Inside every sandbox the user is 1000, mapped to the sandbox's own unprivileged host uid. */
export const SANDBOX_UID = 1000;
export const INFO_FD = 3;
export const READY_FD = 4;

/**
 * `withEgress`: the helper staged the proxy's socket directory at STAGE/egress (spawn --egress).
 * The sandbox's disk is staged at STAGE/disk (spawn --disk): /workspace and /tmp are its directories,
 * so they are on the host's disk under the disk's own quota, not in memory.
 */
export function bwrapArgs(opts: {
  stage: string;
  hostname: string;
  limits: Limits;
  withEgress?: boolean;
  volumes?: { target: string; readOnly: boolean }[];
  /** The helper staged an overlay with its upper layer on the disk (spawn --root-upper). */
  writableRoot?: boolean | undefined;
}): string[] {
  // /dev/shm is memory, and counts against memoryMb: a quarter of it at most.
  const shm = String(Math.max(1, Math.floor(opts.limits.memoryMb / 4)) * 1024 * 1024);
  return [
    'bwrap',
    '--unshare-user', '--uid', String(SANDBOX_UID), '--gid', String(SANDBOX_UID),
    // Nested user namespaces are how most container escapes start; bwrap forbids them after setup.
    '--disable-userns',
    '--unshare-ipc', '--unshare-pid', '--unshare-net', '--unshare-uts', '--unshare-cgroup-try',
    '--hostname', opts.hostname,
    opts.writableRoot ? '--bind' : '--ro-bind', `${opts.stage}/root`, '/',
    '--proc', '/proc',
    '--dev', '/dev',
    // /dev is bwrap's own tmpfs, writable by the sandbox user: only /dev/shm stays writable (sized).
    '--size', shm, '--tmpfs', '/dev/shm',
    '--remount-ro', '/dev',
    '--bind', `${opts.stage}/disk/workspace`, '/workspace',
    '--bind', `${opts.stage}/disk/tmp`, '/tmp',
    // Volumes staged idmapped by the helper (spawn --volume), after /workspace and /tmp: a target may be inside them.
    ...(opts.volumes ?? []).flatMap((v, i) => [v.readOnly ? '--ro-bind' : '--bind', `${opts.stage}/vol/${i}`, v.target]),
    '--ro-bind', `${opts.stage}/bin`, '/.agentbox',
    // A small tmpfs gives the proxy's directory a mount point the read-only image may not have.
    ...(opts.withEgress ? ['--size', '65536', '--tmpfs', '/run', '--ro-bind', `${opts.stage}/egress`, EGRESS_MOUNT, '--remount-ro', '/run'] : []),
    '--chdir', '/workspace',
    '--clearenv', '--setenv', 'PATH', '/usr/sbin:/usr/bin:/sbin:/bin',
    // No --die-with-parent: the sandbox outlives the daemon (its keeper, the helper, reaps bwrap).
    '--new-session', '--cap-drop', 'ALL', '--as-pid-1',
    '--info-fd', String(INFO_FD),
    '/.agentbox/init', 'init', String(READY_FD),
    ...(opts.withEgress ? relayArgs() : []),
  ];
}
