/**
 * The runtime driver interface. Core code knows only this file; each driver lives in its own folder.
 * Drivers never read the policy or the store: they get a resolved spec and return opaque handle data.
 */
import type { Readable } from 'node:stream';
import type { DirEntry, ExecEvent, Isolation, Limits, RuntimeName } from '../contract/model.js';

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
   * Host directory of the sandbox's egress proxy socket, for sandboxes with network: bind it
   * read-only at EGRESS_MOUNT and run PID 1's relay (runtime/egress-plumbing.ts). Absent: no network.
   */
  egressDir?: string;
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
  cwd?: string;
  env: Record<string, string>;
  stdin?: Buffer | Readable;
  timeoutMs: number;
  /** Bytes of stdout+stderr delivered before the rest is dropped (`truncated: true`). */
  outputLimitBytes: number;
  signal?: AbortSignal;
  execId: string;
}

export interface RuntimeStats {
  memoryBytes: number;
  pids: number;
  cpuMs: number;
}

/** A host object the driver found that belongs to agentbox (for reconciliation and orphan cleanup). */
export interface RuntimeObject {
  id: string;
  alive: boolean;
  pooled?: boolean;
}

export interface ProbeResult {
  ok: boolean;
  /** Why not, in a sentence, when ok is false. */
  reason?: string;
  hint?: string;
  details?: Record<string, string>;
}

export interface Runtime {
  readonly name: RuntimeName;
  /** Isolation levels this driver can provide, weakest first. */
  readonly isolations: readonly Isolation[];
  readonly capabilities: { pause: boolean };

  /** Cheap check that the driver can work on this host; never throws, never hangs. */
  probe(): Promise<ProbeResult>;
  /** Make sure the image can be used (NotFoundError when unknown); may import it. Before any row exists. */
  prepareImage(image: string): Promise<void>;
  /** Start a sandbox; resolves once an exec can safely enter it. */
  create(spec: RuntimeSpec): Promise<SandboxHandle>;
  /** Run a command; yields output chunks as they come and exactly one final `exit` event. */
  exec(handle: SandboxHandle, cmd: string[], opts: ExecOpts): AsyncIterable<ExecEvent>;
  /** A stream of the file's bytes; NotFoundError when missing, BadRequestError for a directory. */
  readFile(handle: SandboxHandle, path: string): Promise<Readable>;
  /** Write a file from a stream, creating parent directories; returns bytes written. */
  writeFile(handle: SandboxHandle, path: string, data: Readable): Promise<number>;
  listDir(handle: SandboxHandle, path: string): Promise<DirEntry[]>;
  /** Remove a file or a directory tree. */
  removePath(handle: SandboxHandle, path: string): Promise<void>;
  /** Whether the sandbox is still there, and if it ended, whether the OOM killer was involved. */
  status(handle: SandboxHandle): Promise<{ alive: boolean }>;
  stats(handle: SandboxHandle): Promise<RuntimeStats>;
  pause?(handle: SandboxHandle): Promise<void>;
  resume?(handle: SandboxHandle): Promise<void>;
  /** Stop and remove everything the sandbox had on the host. Idempotent. */
  destroy(handle: SandboxHandle): Promise<void>;
  /** Everything of agentbox's (this home) on the host, alive or not. */
  list(): Promise<RuntimeObject[]>;
  /** Remove a host object found by `list` that the store does not know. */
  reap(id: string): Promise<void>;
  /** Release driver resources (sockets, timers). Does not destroy sandboxes. */
  close(): Promise<void>;
}
