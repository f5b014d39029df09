/**
 * The sandbox operations the MCP tools need, behind one small interface with two implementations:
 * `clientOps` (an SDK client: `agentbox mcp` over stdio talks to the daemon like the CLI does) and
 * `managerOps` (inside the daemon: `/mcp` calls the manager directly, for one caller, so the same
 * policy, quotas and tenant boundary apply as on the HTTP API).
 */
import { Readable } from 'node:stream';
import type { Caller, SandboxManager } from '../core/manager.js';
import type { ExecResult, Sandbox, Snapshot } from '../contract/model.js';
import type { CreateSandboxRequest, CreateSnapshotRequest, ExecRequest, ForkRequest } from '../contract/requests.js';
import { parseDuration } from '../policy/duration.js';
import type { Policy } from '../policy/schema.js';
import type { AgentboxClient } from '../sdk/client.js';

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
  stop(id: string): Promise<Sandbox>;
  delete(id: string): Promise<Sandbox>;
  snapshot(id: string, req: CreateSnapshotRequest): Promise<Snapshot>;
  fork(id: string, req: ForkRequest): Promise<Sandbox[]>;
  /** Undefined when not known (a remote daemon's policy is not visible to its clients). */
  readonly limits?: OpsLimits;
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
    stop: (id) => client.stop(id),
    delete: (id) => client.delete(id),
    snapshot: (id, req) => client.snapshot(id, req),
    fork: (id, req) => client.fork(id, req),
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
    stop: (id) => manager.stop(id, caller),
    delete: (id) => manager.delete(id, caller),
    snapshot: (id, req) => manager.snapshot(id, req, caller),
    fork: (id, req) => manager.fork(id, req, caller),
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
