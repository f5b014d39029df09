/**
 * The sandbox operations the MCP tools need, behind one small interface with two implementations:
 * `clientOps` (an SDK client: `agentbox mcp` over stdio talks to the daemon like the CLI does) and
 * `managerOps` (inside the daemon: `/mcp` calls the manager directly, for one caller, so the same
 * policy, quotas and tenant boundary apply as on the HTTP API).
 */
import { Readable } from 'node:stream';
import type { Caller, SandboxManager } from '../core/manager.js';
import type { ExecResult, KillResult, ProcessInfo, Sandbox, Snapshot } from '../contract/model.js';
import type { CreateSandboxRequest, CreateSnapshotRequest, ExecRequest, ForkRequest, KillProcessRequest } from '../contract/requests.js';
import type { GrantPortAccessRequest, PortAccess } from '../contract/ports.js';
import type { CreatedSandboxToken, CreateSandboxTokenRequest } from '../contract/tokens.js';
import { parseDuration } from '../policy/duration.js';
import type { Policy } from '../policy/schema.js';
import type { AgentboxClient } from '../sdk/client.js';
import type { VolumeOps } from './volume-tools.js';

export interface ListFilter {
  labels?: Record<string, string>;
  /** Include ended sandboxes (stopped, failed, deleted). @default false */
  all?: boolean;
}

export interface ReadResult {
  /** At most `maxBytes` bytes from the start of the file. */
  data: Buffer;
  /** The file had more than `maxBytes` bytes. */
  truncated: boolean;
}

/** What the daemon's policy says, when this side knows it (in-process); used in tool descriptions and for the session's idle timer. */
export interface OpsLimits {
  outputLimitBytes: number;
  execTimeoutMs: number;
  idleTimeoutMs: number;
}

/** Errors are the typed classes of contract/errors (branch on `.code`). */
export interface SandboxOps {
  create(req: CreateSandboxRequest): Promise<Sandbox>;
  list(filter?: ListFilter): Promise<Sandbox[]>;
  get(id: string): Promise<Sandbox>;
  /** Buffered exec; `signal` kills the command (an MCP client's cancellation). */
  exec(id: string, req: ExecRequest, signal?: AbortSignal): Promise<ExecResult>;
  writeFile(id: string, path: string, data: Buffer): Promise<{ bytes: number }>;
  /** Reads at most `maxBytes` and drops the rest, so a huge file never lands in memory. */
  readFile(id: string, path: string, maxBytes: number): Promise<ReadResult>;
  /** The sandbox's processes as seen inside it, each with the exec that started it. */
  processes(id: string): Promise<ProcessInfo[]>;
  /** Signal one process by its pid inside the sandbox; PID 1 is refused. */
  killProcess(id: string, pid: number, req: KillProcessRequest): Promise<KillResult>;
  stop(id: string): Promise<Sandbox>;
  delete(id: string): Promise<Sandbox>;
  snapshot(id: string, req: CreateSnapshotRequest): Promise<Snapshot>;
  fork(id: string, req: ForkRequest): Promise<Sandbox[]>;
  /** Let browsers reach PORT through the daemon's port proxy: an access token (or public). */
  sharePort(id: string, port: number, req: GrantPortAccessRequest): Promise<PortAccess>;
  /** A short-lived token scoped to the sandbox, for code inside it. */
  createToken(id: string, req: CreateSandboxTokenRequest): Promise<CreatedSandboxToken>;
  /** Undefined when not known (a remote daemon's policy is not visible to its clients). */
  readonly limits?: OpsLimits;
  /** Named volumes (the volume_* tools); absent: no such tools. */
  readonly volumes?: VolumeOps;
}

/** Operations over the HTTP API (TCP or the daemon's Unix socket). */
export function clientOps(client: AgentboxClient): SandboxOps {
  return {
    create: (req) => client.create(req),
    list: (filter = {}) => client.list(filter),
    get: (id) => client.get(id),
    exec: (id, req, signal) => client.exec(id, req, signal),
    writeFile: (id, path, data) => client.writeFile(id, path, data),
    readFile: async (id, path, maxBytes) => readCapped(await client.readFile(id, path), maxBytes),
    processes: (id) => client.processes(id),
    killProcess: (id, pid, req) => client.killProcess(id, pid, req),
    stop: (id) => client.stop(id),
    delete: (id) => client.delete(id),
    snapshot: (id, req) => client.snapshot(id, req),
    fork: (id, req) => client.fork(id, req),
    sharePort: (id, port, req) => client.grantPortAccess(id, port, req),
    createToken: (id, req) => client.createToken(id, req),
    volumes: { list: () => client.listVolumes(), create: ({ name, ...opts }) => client.createVolume(name, opts) },
  };
}

/** Operations in the daemon's process, as `caller`: the manager enforces policy, quotas and tenancy. */
export function managerOps(manager: SandboxManager, caller: Caller): SandboxOps {
  const limits = policyLimits(manager.policy);
  return {
    limits,
    create: (req) => manager.create(req, caller),
    list: async (filter = {}) => manager.list(caller, filter),
    get: async (id) => manager.get(id, caller),
    exec: (id, req, signal) => manager.exec(id, req, caller, signal),
    writeFile: async (id, path, data) => ({ bytes: await manager.writeFile(id, path, Readable.from([data]), caller) }),
    readFile: async (id, path, maxBytes) => readCapped(await manager.readFile(id, path, caller), maxBytes),
    processes: (id) => manager.processes(id, caller),
    killProcess: (id, pid, req) => manager.killProcess(id, pid, req, caller),
    stop: (id) => manager.stop(id, caller),
    delete: (id) => manager.delete(id, caller),
    snapshot: (id, req) => manager.snapshot(id, req, caller),
    fork: (id, req) => manager.fork(id, req, caller),
    sharePort: async (id, port, req) => manager.grantPortAccess(id, port, req, caller),
    createToken: (id, req) => manager.createToken(id, req, caller),
    volumes: { list: async () => manager.volumes.list(caller), create: (req) => manager.volumes.create(req, caller) },
  };
}

/** The policy's defaults (what the session sandbox gets; profiles may differ). */
export function policyLimits(policy: Policy): OpsLimits {
  const d = policy.defaults;
  return {
    outputLimitBytes: d.outputLimitBytes,
    execTimeoutMs: parseDuration(d.execTimeout),
    idleTimeoutMs: parseDuration(d.idleTimeout),
  };
}

/** The first `maxBytes` of a stream; the stream is destroyed as soon as more than that arrived. */
export async function readCapped(stream: Readable, maxBytes: number): Promise<ReadResult> {
  const chunks: Buffer[] = [];
  let size = 0;
  let truncated = false;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const room = maxBytes - size;
      if (chunk.length > room) {
        if (room > 0) chunks.push(chunk.subarray(0, room));
        size = maxBytes;
        truncated = true;
        break;
      }
      chunks.push(chunk);
      size += chunk.length;
    }
  } finally {
    // Leaving the loop early destroys the stream (and the helper process behind it).
    if (!stream.destroyed) stream.destroy();
  }
  return { data: Buffer.concat(chunks), truncated };
}
