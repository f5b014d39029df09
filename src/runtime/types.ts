/**
 * The runtime driver interface. Core code knows only this file; each driver lives in its own folder.
 * Drivers never read the policy or the store: they get a resolved spec and return opaque handle data.
 */
import type { Duplex, Readable } from 'node:stream';
import type { PtyOpts, PtyProcess } from './pty.js';
import type { DirEntry, ExecEvent, Isolation, Limits, ProcessInfo, RuntimeName, SignalName } from '../contract/model.js';

/** What a driver needs to create a sandbox: already resolved and checked by policy. */
export interface RuntimeSpec {
  id: string;
  image: string;
  isolation: Isolation;
  limits: Limits;
  /** Labels to put on host objects (containers, cgroups) so orphans can be found. */
  labels: Record<string, string>;
  /** A warm-pool member, started before anyone asked for it (labelled as such on the host). */
  pooled?: boolean;
  /**
   * For a member of a pool a driver keeps (`claimPooled`): which pool, an opaque key the driver
   * records on the member and matches in `claimPooled`/`countPooled`.
   */
  poolKey?: string;
  /**
   * Host directory of the sandbox's egress proxy socket, for sandboxes with network: bind it
   * read-only at EGRESS_MOUNT and run PID 1's relay (runtime/egress-plumbing.ts). Absent: no network.
   */
  egressDir?: string;
  /** The sandbox has network (egress mode not none), for a driver with `ownEgress`, which routes it. */
  egress?: boolean;
  /**
   * Start from this disk image instead of an empty disk (a snapshot's or a fork's, in the disk
   * store); the driver hands it to `SandboxDisks.create`.
   */
  diskFrom?: string;
  /** Named volumes to mount (ARCHITECTURE.md, "Volumes"); absent or empty: none. */
  volumes?: RuntimeVolume[];
  /**
   * Start from this memory image (`copyMemory` of a hibernated sandbox of the same image, limits and
   * kind) instead of booting: the new sandbox goes on with those processes. With `diskFrom`, the disk
   * that matches it.
   */
  memoryFrom?: string;
  /**
   * A writable root (policy `rootfs: writable`; only for a driver with the `writableRoot`
   * capability): the image under an overlay whose upper layer is on the sandbox's disk, under its
   * quota, owned by the sandbox user, and part of its snapshots and forks. Absent: read-only.
   */
  writableRoot?: boolean;
}

/**
 * A named volume as a driver gets it: one filesystem mounted on the host at `source` while any
 * sandbox uses it, bound at `target` in each (the same files for all: writes are seen at once).
 * Its files belong to the sandbox user (uid 1000 inside) in every sandbox, whatever host uid the
 * sandbox runs as. `target` is already checked (contract/volumes.ts: absolute, normal, outside
 * /proc, /sys, /dev, /run, /.agentbox, not /workspace or /tmp themselves, not inside another's).
 */
export interface RuntimeVolume {
  source: string;
  target: string;
  readOnly: boolean;
}

/**
 * Where a sandbox's writable state lives (storage/disk-store.ts): a filesystem of `diskMb` on the
 * host's disk, mounted at `root`, whose `workspace/` and `tmp/` the driver binds at /workspace and
 * /tmp. Given to each driver; the driver makes the disk in `create` and removes it in
 * `destroy`/`reap`, so a disk lives exactly as long as its sandbox.
 */
export interface SandboxDisks {
  /** `mount: false`: only the image (a VM's disk that must stay as its template left it; `detach` gives its path). */
  create(id: string, sizeMb: number, from?: string, opts?: { mount?: boolean }): Promise<{ root: string }>;
  /** The disk of a sandbox that outlived the daemon, mounted again if needed; undefined when it has none. */
  attach(id: string): Promise<{ root: string } | undefined>;
  /** Idempotent. */
  destroy(id: string): Promise<void>;
  /** Unmount the host's mount, for a driver whose guest mounts the disk itself (a VM); the image's path, undefined when none. */
  detach?(id: string): Promise<string | undefined>;
  /** A copy of a detached disk's image kept under NAME (a VM template's disk); its path, a valid `from` for `create`. */
  keepImage?(id: string, name: string): Promise<string>;
}

/**
 * A live sandbox as the driver knows it. `data` is JSON-serialisable and stored by the manager,
 * so a restarted daemon can find (and reap) what an earlier one created.
 */
export interface SandboxHandle {
  id: string;
  runtime: RuntimeName;
  data: Record<string, unknown>;
}

export interface ExecOpts {
  /** Working directory inside the sandbox. @default '/workspace' */
  cwd?: string;
  /** Added on top of the base environment (shared.ts `baseEnv`); nothing of the host's. */
  env: Record<string, string>;
  /** undefined: the command's stdin is empty. */
  stdin?: Buffer | Readable;
  /**
   * Then the whole command tree is killed (descendants that left its session or parent included); the
   * exit event says `timedOut: true`, exit code 124.
   */
  timeoutMs: number;
  /** Bytes of stdout+stderr delivered before the rest is dropped (`truncated: true`). */
  outputLimitBytes: number;
  /** Abort kills the whole command tree; the exit event still comes. */
  signal?: AbortSignal;
  /**
   * The exec's id. Every process of the exec carries it as AGENTBOX_EXEC_ID (shared.ts `execEnv`),
   * which `processes()` reports; drivers may also tag the command with it (to kill it, to attribute an OOM kill).
   */
  execId: string;
}

/** Read by the conformance suite only: no surface shows it yet. */
export interface RuntimeStats {
  memoryBytes: number;
  pids: number;
  cpuMs: number;
}

/** What decides whether a sandbox can be hibernated, besides its runtime. */
export interface HibernateKind {
  isolation: Isolation;
  /** It has egress (a proxy on the host). */
  network: boolean;
  /** It mounts named volumes (directories other sandboxes share). */
  volumes: boolean;
}

export interface RuntimeStatus {
  alive: boolean;
  /** Frozen by `pause`. */
  paused?: boolean;
  /** Saved to disk by `hibernate` (and counted alive). */
  hibernated?: boolean;
}

/** A host object the driver found that belongs to agentbox (for reconciliation and orphan cleanup). */
export interface RuntimeObject {
  /** The sandbox id it was created for (`RuntimeSpec.id`), the argument `reap` takes. */
  id: string;
  /** Whether it still runs (a paused sandbox runs). */
  alive: boolean;
  /** An unclaimed warm-pool member (docker sets it from its label; local does not know). */
  pooled?: boolean;
  /** Its pool (`RuntimeSpec.poolKey`), for a member of a pool the driver keeps. */
  poolKey?: string;
  /**
   * When a member of a pool the driver keeps was claimed (ISO time): its sandbox's row is stored a
   * moment later, so until then no row knowing it is no sign of an orphan.
   */
  claimedAt?: string;
}

/** How many members of one pool a driver keeps (`countPooled`). */
export interface PooledCount {
  /** Unclaimed and ready to be handed out. */
  ready: number;
  /** Unclaimed, ready or still starting. */
  total: number;
}

export interface ProbeResult {
  ok: boolean;
  /** Why not, in a sentence, when ok is false. */
  reason?: string;
  hint?: string;
  /** Versions and the like, for `agentbox doctor` (which reads docker's `runtimes`, the registered OCI runtimes). */
  details?: Record<string, string>;
}

/**
 * A driver. Errors are the typed errors of contract/errors.ts: ConflictError for a sandbox that is not
 * running, NotFoundError for an unknown image or file, BadRequestError/ForbiddenError for what the
 * sandbox refuses, RuntimeUnavailableError when the engine underneath cannot be reached, InternalError
 * otherwise. Every method may be called concurrently, for one sandbox and for many.
 *
 * A capability is an optional member: a driver that cannot do it leaves it out, and callers check
 * for it (`if (rt.pause)`), so the type checker keeps them honest.
 */
export interface Runtime {
  readonly name: RuntimeName;
  /**
   * Isolation levels this driver can provide, weakest first. Policy checks requests against its own
   * table (policy/isolation.ts RUNTIME_ISOLATIONS), which a test keeps equal to this.
   */
  readonly isolations: readonly Isolation[];
  /**
   * Capability, for a driver whose guest mounts the sandbox's disk itself (a VM): run `fn` (a copy of
   * the disk's image: a snapshot, a fork) while the guest holds the disk's filesystem frozen, so the
   * copy is consistent. Without it, the disk store freezes the host's mount of the disk.
   */
  withDiskFrozen?<T>(handle: SandboxHandle, fn: () => Promise<T>): Promise<T>;
  /** Capability: sandboxes with a writable root (RuntimeSpec `writableRoot`). */
  readonly writableRoot?: boolean;
  /**
   * Capability: its sandboxes live where every daemon replica on the same store reaches them (a
   * cluster), so any replica serves them. Without it a sandbox lives on the host of the replica that
   * created it, and only that replica enters it (core/manager/replica.ts).
   */
  readonly shared?: boolean;
  /**
   * Capability: the driver routes its sandboxes' egress itself (a cluster's shared egress proxy), so
   * the daemon opens no proxy of its own for them and says which have network with `RuntimeSpec.egress`.
   */
  readonly ownEgress?: boolean;
  /**
   * Capability, with `countPooled`, for a shared runtime: its warm pools live in the runtime, where
   * every replica sees them. Claims one unclaimed ready member of pool KEY for CLAIMER, atomically
   * across replicas (never one member for two claimers); undefined when none is left.
   */
  claimPooled?(key: string, claimer: string): Promise<SandboxHandle | undefined>;
  /** Capability (see `claimPooled`): the unclaimed members of pool KEY. */
  countPooled?(key: string): Promise<PooledCount>;

  /** Cheap check that the driver can work on this host; never throws, never hangs. */
  probe(): Promise<ProbeResult>;
  /**
   * Make sure the image can be used, importing or building it if needed; NotFoundError when unknown.
   * The manager calls it before a sandbox row exists, so a bad image fails early and leaves nothing.
   */
  prepareImage(image: string): Promise<void>;
  /**
   * Start a sandbox; resolves once an exec can safely enter it. Must not rely on `prepareImage`
   * having run (warm pools create directly). On failure leaves nothing on the host.
   */
  create(spec: RuntimeSpec): Promise<SandboxHandle>;
  /**
   * Run a command as the sandbox user; yields output chunks as they come and exactly one final
   * `exit` event (also after a timeout, an abort or an OOM kill). ConflictError, thrown by the call
   * or by the iteration, when the sandbox is not running.
   *
   * The exec ends when its leader (the process it started) exits, with the leader's exit code and all
   * the leader wrote; it never waits for a background job that still holds its stdout or stderr. What
   * the leader left running keeps running, reparented to the sandbox's init, under the sandbox's
   * limits, until the sandbox ends; what it writes to the inherited output afterwards is read and
   * discarded (it never gets SIGPIPE). A timeout or an abort kills the whole tree, background jobs,
   * setsid and double-forked descendants included.
   */
  exec(handle: SandboxHandle, cmd: string[], opts: ExecOpts): AsyncIterable<ExecEvent>;
  /**
   * The sandbox's processes as seen inside it (pids of its own pid namespace), sorted by pid, each with
   * the exec that started it (null for the init and agentbox's own). processes.ts `SandboxProcesses`
   * over the driver's transport, as for files.
   */
  processes(handle: SandboxHandle): Promise<ProcessInfo[]>;
  /**
   * Send a signal to one process of the sandbox, by its pid inside the sandbox. ForbiddenError for
   * PID 1 (the init) and for a process that is not the sandbox user's, NotFoundError for no such pid.
   */
  signalProcess(handle: SandboxHandle, pid: number, signal: SignalName): Promise<void>;
  /**
   * A stream of a regular file's bytes; NotFoundError when missing, BadRequestError for a directory
   * or anything else that is not a regular file. The file members of both drivers are files.ts
   * `SandboxFiles` over the driver's transport; a new driver should do the same.
   */
  readFile(handle: SandboxHandle, path: string): Promise<Readable>;
  /** Write a regular file from a stream, creating parent directories; returns the bytes written. */
  writeFile(handle: SandboxHandle, path: string, data: Readable): Promise<number>;
  /** The entries of a directory, sorted by name. */
  listDir(handle: SandboxHandle, path: string): Promise<DirEntry[]>;
  /** Remove a file or a directory tree; BadRequestError for `/`. */
  removePath(handle: SandboxHandle, path: string): Promise<void>;
  /**
   * Capability: a connection to a server listening on PORT inside the sandbox (127.0.0.1 or ::1 there;
   * 0.0.0.0 includes them), made from inside, so the sandbox's network stays closed (ports.ts).
   * ConflictError when nothing listens there.
   */
  openPort?(handle: SandboxHandle, port: number): Promise<Duplex>;
  /**
   * Capability: a command on a pseudo-terminal allocated inside the sandbox (its own devpts), as the
   * sandbox user, leader of a session whose controlling terminal it is (pty.ts). Resolves once it runs.
   * The session ends when the command exits, as an exec does; hanging up sends its session SIGHUP.
   */
  openPty?(handle: SandboxHandle, opts: PtyOpts): Promise<PtyProcess>;
  /**
   * Whether the sandbox still runs (paused and hibernated count as running). `alive: false`, not an
   * error, for one that was destroyed, reaped or died by itself. `paused`/`hibernated`: by `pause` or
   * `hibernate` (a restarted daemon learns from it which sandboxes an earlier one paused, and how).
   */
  status(handle: SandboxHandle): Promise<RuntimeStatus>;
  /** Resources the sandbox uses now. Read by the conformance suite only so far. */
  stats(handle: SandboxHandle): Promise<RuntimeStats>;
  /**
   * Capability: freeze every process of the sandbox (the reaper pauses idle sandboxes). A driver has
   * both `pause` and `resume` or neither. ConflictError when the sandbox is not running.
   */
  pause?(handle: SandboxHandle): Promise<void>;
  /** Thaw what `pause` froze. The manager calls it before anything enters a sandbox it paused. */
  resume?(handle: SandboxHandle): Promise<void>;
  /**
   * Capability: whether sandboxes of this kind can be hibernated here (`ok: false` with the reason and
   * a hint when not: the runtime cannot checkpoint memory on this host, or such a sandbox holds host
   * connections a checkpoint cannot save). A driver has `canHibernate`, `hibernate` and `wake` or none.
   */
  canHibernate?(kind: HibernateKind): Promise<ProbeResult>;
  /**
   * Save the sandbox's memory and processes to disk and stop it, freeing its memory; its disk stays.
   * Refused (ConflictError, the sandbox still running as before) when it cannot be done safely now.
   * `status` then says `alive: true, hibernated: true`.
   */
  hibernate?(handle: SandboxHandle): Promise<void>;
  /** Bring a hibernated sandbox back where it was: same processes, same memory. */
  wake?(handle: SandboxHandle): Promise<void>;
  /**
   * Capability (with hibernate): a copy of a hibernated sandbox's memory image, for `create` with
   * `memoryFrom` (a fork that keeps running processes). Opaque to the caller, who drops it with `dropMemory`.
   */
  copyMemory?(handle: SandboxHandle): Promise<string>;
  /** Remove a memory image `copyMemory` made. Idempotent. */
  dropMemory?(image: string): Promise<void>;
  /**
   * Capability (with copyMemory): move a memory image's files into the empty directory `dir` (a
   * snapshot's, which keeps them); the image is gone afterwards. `create` then takes `memoryFrom: dir`,
   * as often as asked, and never changes what is in it.
   */
  saveMemory?(image: string, dir: string): Promise<void>;
  /** Stop and remove everything the sandbox had on the host. Idempotent. */
  destroy(handle: SandboxHandle): Promise<void>;
  /** Everything of agentbox's (this home) on the host, alive or not, pool members included. */
  list(): Promise<RuntimeObject[]>;
  /** Remove a host object found by `list` that the store does not know (by id: there is no handle). Idempotent. */
  reap(id: string): Promise<void>;
  /** Release driver resources (sockets, timers). Does not destroy sandboxes: they outlive the daemon. */
  close(): Promise<void>;
}
