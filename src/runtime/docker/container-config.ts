/**
 * The hardened container a sandbox runs in. Pure: everything it decides is visible in one object.
 */
import type Docker from 'dockerode';
import type { Isolation, Limits } from '../../contract/model.js';
import { EGRESS_MOUNT, relayArgs } from '../egress-plumbing.js';
import { baseEnv } from '../shared.js';
import { AGENT_MOUNT, AGENT_SOCKET } from './exec-agent.js';

/** Where the init binary is bind-mounted; every image has /.agentbox (the image store makes it). */
export const INIT_IN_CONTAINER = '/.agentbox/init';
/** The sandbox user's uid, inside and (runc and gVisor alike) on the host. */
export const SANDBOX_UID = 1000;
export const SANDBOX_USER = `${SANDBOX_UID}:${SANDBOX_UID}`;

export const LABEL_SANDBOX = 'agentbox.sandbox';
/** Warm-pool members carry this instead of agentbox.sandbox until (and after) they are claimed. */
export const LABEL_POOL = 'agentbox.pool';
export const LABEL_ID = 'agentbox.id';
export const LABEL_HOME = 'agentbox.home';
export const LABEL_VERSION = 'agentbox.version';

/**
 * gVisor's sentry and gofer live in the sandbox's cgroups: give them room of their own.
 *
 * Memory: the sandbox's limit is enforced inside by PID 1 (native/memory-watchdog.h); the host limit
 * above it holds the sentry (~15-25 MB), the watchdog's slack (32 MB) and what a process allocates
 * while it is being killed (measured up to ~20 MB), and is the backstop that ends the whole sandbox
 * if the watchdog is outrun.
 *
 * Tasks: under the ptrace platform every process in the sandbox has a host stub process, with a
 * thread for each sentry thread that has run it (up to ~60), and stubs are kept for reuse. So host
 * tasks grow with the sandbox's concurrency, not its process count: measured here ~450 for 20 execs
 * at a time, ~400 for 8 parallel processes in one exec, ~1000 for 16 or 32, ~1600 for 64, and
 * 1500-2100 (varying run to run) for rounds of 30 execs at once through the exec agent, 60 processes
 * in a sandbox of 64. When the host pids limit stops the sentry, it panics and the whole sandbox
 * dies, so the host limit is the sandbox's own (RLIMIT_NPROC inside, which is what bounds its
 * processes) times that growth: 1024 + 24 per allowed process (test/runtime/docker-gvisor-load.test.ts).
 */
export const GVISOR_HEADROOM = { memoryMb: 128, pids: 1024, pidsPerProcess: 24 } as const;

/** The host pids limit of a sandbox: its own limit, plus gVisor's stubs under runsc. */
export function hostPidsLimit(pids: number, gvisor: boolean): number {
  return gvisor ? pids + GVISOR_HEADROOM.pids + GVISOR_HEADROOM.pidsPerProcess * pids : pids;
}

export interface ContainerConfigOpts {
  id: string;
  imageRef: string;
  isolation: Isolation;
  limits: Limits;
  labels: Record<string, string>;
  pooled?: boolean;
  /** Host path of the static agentbox-docker-init binary. */
  initPath: string;
  homeTag: string;
  version: string;
  /** Host directory of the egress proxy's socket (runtime/egress-plumbing.ts); absent: no network at all. */
  egressDir?: string;
  /** Host directory of the exec agent's socket (gVisor, exec-agent.ts). */
  agentDir?: string;
  /** The sandbox's disk (runtime/types.ts SandboxDisks): its workspace/ and tmp/ become /workspace and /tmp. */
  diskRoot: string;
  /** Named volumes (runtime/types.ts RuntimeVolume): their files are uid 1000's on the host, the sandbox user's here. */
  volumes?: { source: string; target: string; readOnly: boolean }[];
  /** A writable root's top directories (writable-root.ts), `host:container:rw` each. */
  rootBinds?: string[];
}

export function containerName(id: string): string {
  return `agentbox-${id}`;
}

export function containerConfig(o: ContainerConfigOpts): Docker.ContainerCreateOptions {
  const gvisor = o.isolation === 'gvisor';
  const memoryBytes = (o.limits.memoryMb + (gvisor ? GVISOR_HEADROOM.memoryMb : 0)) * 1024 * 1024;
  return {
    name: containerName(o.id),
    Image: o.imageRef,
    Hostname: 'sandbox',
    // PID 1 is root without capabilities (so the sandbox user cannot signal or ptrace it); execs run as 1000.
    User: '0:0',
    Cmd: [
      INIT_IN_CONTAINER,
      'init',
      ...(o.egressDir ? relayArgs() : []),
      ...(o.agentDir ? ['--exec-agent', `${AGENT_MOUNT}/${AGENT_SOCKET}`] : []),
      ...(gvisor ? ['--memory-limit-kb', String(o.limits.memoryMb * 1024), '--seccomp'] : []),
    ],
    Entrypoint: [],
    Env: Object.entries(baseEnv({})).map(([k, v]) => `${k}=${v}`),
    WorkingDir: '/',
    Labels: { ...o.labels, [o.pooled ? LABEL_POOL : LABEL_SANDBOX]: o.id, [LABEL_ID]: o.id, [LABEL_HOME]: o.homeTag, [LABEL_VERSION]: o.version },
    NetworkDisabled: true,
    HostConfig: {
      Runtime: gvisor ? 'runsc' : undefined,
      NetworkMode: 'none',
      CapDrop: ['ALL'],
      // gVisor: PID 1 (root) must be able to kill the sandbox user's processes for the memory watchdog,
      // and to start the exec agent as the sandbox user. Commands run as 1000 with no_new_privs, so
      // they get no capability from this (CapEff and CapPrm stay empty).
      ...(gvisor ? { CapAdd: ['KILL', ...(o.agentDir ? ['SETUID', 'SETGID'] : [])] } : {}),
      // gVisor: runsc's --oci-seccomp enforcement of dockerd 20.10's profile refuses pselect6 (so
      // select(2) fails with EPERM); PID 1 installs agentbox's filter (Docker's current profile,
      // plus no namespaces) on itself instead, and everything in the sandbox inherits it.
      SecurityOpt: ['no-new-privileges', ...(gvisor ? ['seccomp=unconfined'] : [])],
      ReadonlyRootfs: true,
      Binds: [
        `${o.initPath}:${INIT_IN_CONTAINER}:ro`,
        ...(o.egressDir ? [`${o.egressDir}:${EGRESS_MOUNT}:ro`] : []),
        ...(o.agentDir ? [`${o.agentDir}:${AGENT_MOUNT}:ro`] : []),
        // On the host's disk under the disk's quota (ENOSPC past diskMb), not in memory; the disk is
        // mounted nosuid,nodev, and exec stays allowed: agents run what they write.
        ...(o.rootBinds ?? []),
        `${o.diskRoot}/workspace:/workspace:rw`,
        `${o.diskRoot}/tmp:/tmp:rw`,
        // After /workspace and /tmp (a target may be inside them); docker makes missing mount points.
        ...(o.volumes ?? []).map((v) => `${v.source}:${v.target}:${v.readOnly ? 'ro' : 'rw'}`),
      ],
      Memory: memoryBytes,
      MemorySwap: memoryBytes, // equal to Memory: no swap
      PidsLimit: hostPidsLimit(o.limits.pids, gvisor),
      // Under gVisor the host pids limit counts the sentry's tasks, not the sandbox's processes; the
      // sentry is a kernel of its own, so RLIMIT_NPROC of the sandbox user counts exactly those.
      // (Not for runc: there uid 1000 is shared with every other container on the host.)
      ...(gvisor ? { Ulimits: [{ Name: 'nproc', Soft: o.limits.pids, Hard: o.limits.pids }] } : {}),
      NanoCpus: Math.round(o.limits.cpus * 1e9),
      OomKillDisable: false,
      Init: false,
      Privileged: false,
      IpcMode: 'private',
      LogConfig: { Type: 'none', Config: {} },
      RestartPolicy: { Name: 'no', MaximumRetryCount: 0 },
    },
  };
}
