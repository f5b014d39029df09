/**
 * The MCP tools over SandboxOps. Input schemas come from the same zod schemas as the HTTP API
 * (contract/requests.ts), descriptions are written for a model.
 *
 * Error mapping (STYLE lesson 7): everything that goes wrong *with the sandbox* — a non-zero exit,
 * a timeout, a policy denial, an unknown or ended sandbox id, a missing file — is a tool result
 * with `isError: true` whose text gives the code, the message and a hint the model can act on.
 * The SDK's McpServer (1.x) turns every error thrown in a tool callback, McpError InvalidParams
 * included, into such a result anyway, and the MCP spec asks for tool execution errors to be
 * reported in the result so the model can correct itself; so an unknown id is a tool error with
 * code `not_found` and the hint, never a protocol error. Unknown tools and arguments that fail
 * the input schema are answered by the SDK itself.
 */
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { z } from 'zod';
import { VERSION } from '../core/config.js';
import { AgentboxError, BadRequestError } from '../contract/errors.js';
import { EXIT_KILLED, EXIT_TIMED_OUT } from '../contract/exit-codes.js';
import { LabelsSchema, type ExecResult, type Sandbox } from '../contract/model.js';
import { GrantPortAccessRequestSchema, PortNumberSchema } from '../contract/ports.js';
import { CreateSandboxRequestSchema, CreateSnapshotRequestSchema, ExecRequestSchema, ForkRequestSchema, KillProcessRequestSchema, ProcessIdSchema, type ExecRequest } from '../contract/requests.js';
import type { SandboxOps } from './ops.js';
import { endedReason, SessionSandbox } from './session.js';
import { CreateSandboxTokenRequestSchema, SANDBOX_API_URL, SANDBOX_TOKEN_PATH } from '../contract/tokens.js';
import { registerVolumeTools, VOLUME_TOOL_NAMES } from './volume-tools.js';

export const TOOL_NAMES = [
  'sandbox_create',
  'sandbox_list',
  'sandbox_get',
  'sandbox_exec',
  'sandbox_write_file',
  'sandbox_read_file',
  'sandbox_ps',
  'sandbox_kill',
  'sandbox_stop',
  'sandbox_delete',
  'sandbox_snapshot',
  'sandbox_fork',
  'sandbox_share_port',
  'sandbox_create_token',
  ...VOLUME_TOOL_NAMES,
] as const;

/** Largest file sandbox_write_file takes in one call (decoded bytes). */
export const MAX_WRITE_BYTES = 16 * 1024 * 1024;
/** Default and maximum of sandbox_read_file's maxBytes. */
export const DEFAULT_READ_BYTES = 1024 * 1024;
export const MAX_READ_BYTES = 16 * 1024 * 1024;
/** Used when the policy is not known on this side (a client of a remote daemon). */
const DEFAULT_IDLE_MS = 15 * 60_000;

export interface AgentboxMcpOpts {
  ops: SandboxOps;
  /** Value of the session sandbox's `agentbox.mcp-session` label. */
  sessionTag: string;
  /** Delete the session sandbox after this long unused. @default the policy's idleTimeout, else 15 minutes */
  sessionIdleMs?: number;
  /** Logs (stderr). */
  logger?: Logger;
}

export interface AgentboxMcp {
  server: McpServer;
  session: SessionSandbox;
  /** Tool calls running now (an HTTP session with one running is not idle). */
  readonly busy: number;
  /** Delete the session sandbox, then close the server and its transport. Idempotent. */
  close(): Promise<void>;
}

/** One MCP server (for one session) with the sandbox tools registered. */
export function createAgentboxMcpServer(opts: AgentboxMcpOpts): AgentboxMcp {
  const idleMs = opts.sessionIdleMs ?? opts.ops.limits?.idleTimeoutMs ?? DEFAULT_IDLE_MS;
  const session = new SessionSandbox(opts.ops, { tag: opts.sessionTag, idleMs, ...(opts.logger ? { logger: opts.logger } : {}) });
  const server = new McpServer(
    { name: 'agentbox', version: VERSION },
    { capabilities: { tools: {} }, instructions: instructions(idleMs) },
  );
  const state = { busy: 0 };
  registerSandboxTools(server, { ops: opts.ops, session, idleMs, state, ...(opts.logger ? { logger: opts.logger } : {}) });
  let closing: Promise<void> | undefined;
  return {
    server,
    session,
    get busy() {
      return state.busy;
    },
    close() {
      closing ??= (async () => {
        await session.close();
        await server.close().catch(() => undefined);
      })();
      return closing;
    },
  };
}

function instructions(idleMs: number): string {
  return [
    'agentbox runs commands in isolated Linux sandboxes (no network, read-only root, bounded memory, processes, output and time).',
    `Quick path: call sandbox_exec with a shell line in "command"; it runs in this session's own sandbox, created on first use and kept until the session ends (or ${duration(idleMs)} unused), so files persist between calls.`,
    'Put files in /workspace (writable, the default working directory; /tmp is writable too). Use sandbox_write_file / sandbox_read_file for file contents (UTF-8 text, or base64 for binary).',
    'Use sandbox_create only for another image, profile, limits, egress or env, then pass its id; delete such sandboxes with sandbox_delete when done.',
  ].join('\n');
}

export interface SandboxToolDeps {
  ops: SandboxOps;
  session: SessionSandbox;
  idleMs: number;
  state: { busy: number };
  logger?: Logger;
}

const IdSchema = z.string().min(1).max(64).describe('Sandbox id (sbx_...), as returned by sandbox_create or shown by sandbox_list');
const OptionalIdSchema = z
  .string()
  .min(1)
  .max(64)
  .optional()
  .describe("Sandbox id (sbx_...). Omit it to use this session's own sandbox (created on first use, deleted when the session ends)");
const PathSchema = z.string().min(1).max(4096).describe('Absolute path inside the sandbox, e.g. /workspace/main.py (/workspace and /tmp are writable; no ".." segments)');
const EncodingSchema = z.enum(['utf8', 'base64']);

/** Register the tools of TOOL_NAMES on `server` (the volume tools when `ops` has volumes). */
export function registerSandboxTools(server: McpServer, deps: SandboxToolDeps): void {
  const { ops, session } = deps;
  const limits = ops.limits;
  const outputLimit = limits ? formatBytes(limits.outputLimitBytes) : '2 MiB by default';
  const execTimeout = limits ? duration(limits.execTimeoutMs) : '2 minutes by default';
  const idle = duration(deps.idleMs);

  /** Wraps a handler: counts it as busy, turns any error into an isError result. */
  const run =
    <A>(fn: (args: A, extra: { signal: AbortSignal }) => Promise<CallToolResult>) =>
    async (args: A, extra: { signal: AbortSignal }): Promise<CallToolResult> => {
      deps.state.busy++;
      try {
        return await fn(args, extra);
      } catch (err) {
        return toolError(err, deps.logger);
      } finally {
        deps.state.busy--;
      }
    };

  /**
   * An explicit id, or the session sandbox (created on demand, replaced once if it ended). `missing`:
   * the hint for a not_found of something in the sandbox (a file, unless said otherwise).
   */
  async function onSandbox<T>(id: string | undefined, fn: (id: string) => Promise<T>, missing?: string): Promise<{ value: T; id: string; notes: string[] }> {
    if (id === undefined) {
      try {
        return await session.use(fn);
      } catch (err) {
        throw await explainSandboxError(ops, err, undefined, missing);
      }
    }
    try {
      return { value: await fn(id), id, notes: [] };
    } catch (err) {
      throw await explainSandboxError(ops, err, id, missing);
    }
  }

  server.registerTool(
    'sandbox_create',
    {
      title: 'Create a sandbox',
      description: [
        'Create a new isolated Linux sandbox and return it as JSON: id (sbx_...), image, profile, runtime, isolation, state, limits, egress, labels, expiresAt.',
        "You usually do not need this: sandbox_exec, sandbox_write_file and sandbox_read_file without an id use this session's own sandbox, created on first use with the policy defaults.",
        'Create one for a different image, profile, limits, egress or env, or to run several sandboxes side by side; then pass its id to the other tools.',
        'Every field is optional and defaults to the policy. You may ask for less than the policy allows, never more: asking for more (memory, cpus, ttl, an image or egress host not allowed) fails with policy_denied and a hint naming the limit.',
        'volumes mounts named volumes (volume_list, volume_create) at a path such as /data: their files outlive the sandbox and are shared with every sandbox that mounts them.',
        'No network unless egress says so and the policy allows it. A sandbox ends by itself at its ttl, or is stopped after a period without exec/file calls; delete it with sandbox_delete when you are done.',
      ].join(' '),
      inputSchema: CreateSandboxRequestSchema,
      annotations: { destructiveHint: false, openWorldHint: false },
    },
    run(async (args) => {
      const sb = await ops.create(args);
      return ok(`created ${describeSandbox(sb)}`, sb);
    }),
  );

  server.registerTool(
    'sandbox_list',
    {
      title: 'List sandboxes',
      description: [
        'List your sandboxes as JSON (id, image, state, limits, labels, createdAt, expiresAt, lastActiveAt...), running ones only unless all is true.',
        `This session's own sandbox carries the label agentbox.mcp-session=${session.tag} and is marked in the summary.`,
      ].join(' '),
      inputSchema: z
        .object({
          all: z.boolean().optional().describe('Also list ended sandboxes (stopped, failed, deleted) with their endReason'),
          labels: LabelsSchema.optional().describe('Only sandboxes carrying all these labels'),
        })
        .strict(),
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    run(async (args) => {
      const list = await ops.list({ ...(args.all !== undefined ? { all: args.all } : {}), ...(args.labels ? { labels: args.labels } : {}) });
      const lines = list.map((sb) => `${describeSandbox(sb)}${sb.id === session.current ? " — this session's sandbox" : ''}`);
      const head = list.length === 0 ? 'no sandboxes' : `${list.length} sandbox${list.length === 1 ? '' : 'es'}:`;
      return ok([head, ...lines].join('\n'), { sandboxes: list });
    }),
  );

  server.registerTool(
    'sandbox_get',
    {
      title: 'Inspect a sandbox',
      description:
        'Return one sandbox as JSON: state (creating | running | stopped | failed | deleted), limits, egress, labels, createdAt, expiresAt, lastActiveAt and, once ended, endedAt, endReason (ttl_expired, idle_timeout, oom_killed, deleted, ...) and endedBy.',
      inputSchema: z.object({ id: IdSchema }).strict(),
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    run(async (args) => {
      const { value: sb } = await onSandbox(args.id, (id) => ops.get(id));
      return ok(describeSandbox(sb), sb);
    }),
  );

  const exec = ExecRequestSchema.shape;
  const ExecInputSchema = z
    .object({
      id: OptionalIdSchema,
      command: z.string().min(1).max(131072).optional().describe('A shell line, run as ["sh", "-c", command], e.g. "cd src && ls -la | head". Give this or cmd'),
      cmd: exec.cmd.optional().describe('The command as an argv array, run without a shell, e.g. ["ls", "-la", "/workspace"]. Give this or command'),
      stdin: exec.stdin,
      env: exec.env,
      cwd: z.string().max(4096).regex(/^\//, 'an absolute path').optional().describe('Working directory, absolute; default /workspace'),
      timeoutMs: exec.timeoutMs.describe(`Kill the command after this many milliseconds (timedOut: true, exit code ${EXIT_TIMED_OUT}). Default and maximum: the policy's execTimeout (${execTimeout})`),
    })
    .strict();

  server.registerTool(
    'sandbox_exec',
    {
      title: 'Run a command in a sandbox',
      description: [
        'Run a command in a sandbox, wait for it to finish and return its result.',
        `Without id it runs in this session's own sandbox (the policy's default image, busybox unless configured otherwise), created on first use and kept for the whole MCP session, so files persist between calls; it is deleted when the session ends or after ${idle} without use.`,
        'Give either command (a shell line, run with sh -c) or cmd (an argv array, no shell). Each call is a new process: cd and shell variables do not carry over (use cwd and env, or chain with &&).',
        'The working directory is /workspace (writable, the place for your files; /tmp is writable too; everything else is read-only). There is no network unless the sandbox was created with egress.',
        'Returns JSON: sandboxId, execId, exitCode, stdout, stderr (UTF-8 text), truncated, timedOut, oomKilled, durationMs.',
        `stdout and stderr together are cut at the policy's outputLimitBytes (${outputLimit}) and the result then says truncated: true; send large output to a file and read parts of it.`,
        `The command is killed after timeoutMs (default and maximum: the policy's execTimeout, ${execTimeout}): timedOut: true, exit code ${EXIT_TIMED_OUT}. Exit code ${EXIT_KILLED} with oomKilled: true means it ran out of memory.`,
        'A non-zero exit code or a timeout is reported as a tool error (isError) whose text still holds the whole result; so is a policy denial, an unknown sandbox id or an ended sandbox, with a hint.',
        'The call returns as soon as the command itself exits: whatever it started in the background (e.g. "python3 -m http.server 8000 > /tmp/server.log 2>&1 &") keeps running for later calls, until the sandbox ends; see it with sandbox_ps, stop it with sandbox_kill. Background output written to the inherited stdout/stderr after the call returned is discarded: redirect it to a file to keep it.',
      ].join(' '),
      inputSchema: ExecInputSchema,
      annotations: { destructiveHint: true, openWorldHint: false },
    },
    run(async (args, extra) => {
      const { id, command, cmd, ...rest } = args;
      if ((command === undefined) === (cmd === undefined)) {
        throw new BadRequestError(command === undefined ? 'give the command to run' : 'give either command or cmd, not both', {
          hint: 'command: "echo hi" (a shell line) or cmd: ["echo", "hi"] (argv)',
        });
      }
      const req: ExecRequest = { ...rest, cmd: cmd ?? ['sh', '-c', command as string] };
      const { value: result, id: used, notes } = await onSandbox(id, (sid) => ops.exec(sid, req, extra.signal));
      return execResult(used, result, notes);
    }),
  );

  server.registerTool(
    'sandbox_write_file',
    {
      title: 'Write a file into a sandbox',
      description: [
        'Create or overwrite a file inside a sandbox with the given content. The path is absolute inside the sandbox; only /workspace and /tmp are writable; missing parent directories are created.',
        'content is UTF-8 text by default; for binary data pass it base64-encoded with encoding "base64".',
        `At most ${formatBytes(MAX_WRITE_BYTES)} per call, and within the sandbox's disk limit. Without id it writes to this session's own sandbox. Returns the path and the number of bytes written.`,
      ].join(' '),
      inputSchema: z
        .object({
          id: OptionalIdSchema,
          path: PathSchema,
          content: z.string().max(Math.ceil((MAX_WRITE_BYTES * 4) / 3) + 4).describe('The file content: UTF-8 text, or base64 when encoding is "base64"'),
          encoding: EncodingSchema.optional().describe('How content is encoded: "utf8" (default) or "base64" for binary data'),
        })
        .strict(),
      annotations: { destructiveHint: true, idempotentHint: true, openWorldHint: false },
    },
    run(async (args) => {
      const data = decode(args.content, args.encoding ?? 'utf8');
      if (data.length > MAX_WRITE_BYTES) {
        throw new BadRequestError(`content is ${data.length} bytes, over the ${MAX_WRITE_BYTES} byte limit of one call`, { hint: 'split it, or produce the file inside the sandbox with sandbox_exec' });
      }
      const { value, id, notes } = await onSandbox(args.id, (sid) => ops.writeFile(sid, args.path, data));
      return ok(withNotes(`wrote ${value.bytes} bytes to ${args.path} in ${id}`, notes), { sandboxId: id, path: args.path, bytes: value.bytes });
    }),
  );

  server.registerTool(
    'sandbox_read_file',
    {
      title: 'Read a file from a sandbox',
      description: [
        'Read a file inside a sandbox (absolute path, e.g. /workspace/out.txt). Returns JSON: sandboxId, path, encoding, content, bytes, truncated.',
        'The content is returned as UTF-8 text; a file that is not valid UTF-8 (binary) comes back base64-encoded with encoding "base64" (ask for "base64" directly to always get that).',
        `At most maxBytes (default ${formatBytes(DEFAULT_READ_BYTES)}, up to ${formatBytes(MAX_READ_BYTES)}) from the start of the file are returned; truncated: true says there was more (read the rest with sandbox_exec, e.g. tail -c or sed -n).`,
        "Without id it reads from this session's own sandbox. Directories cannot be read: list them with sandbox_exec (ls -la).",
      ].join(' '),
      inputSchema: z
        .object({
          id: OptionalIdSchema,
          path: PathSchema,
          encoding: EncodingSchema.optional().describe('"utf8" (default; falls back to base64 for binary content) or "base64"'),
          maxBytes: z.number().int().positive().max(MAX_READ_BYTES).optional().describe(`Return at most this many bytes from the start of the file (default ${DEFAULT_READ_BYTES})`),
        })
        .strict(),
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    run(async (args) => {
      const max = args.maxBytes ?? DEFAULT_READ_BYTES;
      const { value, id, notes } = await onSandbox(args.id, (sid) => ops.readFile(sid, args.path, max));
      const { text, encoding } = encode(value.data, args.encoding ?? 'utf8', value.truncated);
      const summary = `${args.path} in ${id}: ${value.data.length} bytes${value.truncated ? ` (truncated at maxBytes ${max})` : ''}${encoding === 'base64' && args.encoding !== 'base64' ? ', not UTF-8 text: returned as base64' : ''}`;
      return ok(withNotes(summary, notes), { sandboxId: id, path: args.path, encoding, content: text, bytes: value.data.length, truncated: value.truncated });
    }),
  );

  server.registerTool(
    'sandbox_snapshot',
    {
      title: 'Snapshot a sandbox',
      description: [
        "Keep a sandbox's files (/workspace and /tmp; with memory: true, also its memory and running processes, microvm only) as a snapshot that outlives the sandbox: returns it as JSON with its id (snap_...).",
        'Start a new sandbox from it with sandbox_create and "snapshot": the id or name: it gets the same files, byte for byte. Without id, snapshots this session\'s sandbox.',
      ].join(' '),
      inputSchema: z.object({ id: OptionalIdSchema, name: CreateSnapshotRequestSchema.shape.name, memory: CreateSnapshotRequestSchema.shape.memory }).strict(),
      annotations: { destructiveHint: false, openWorldHint: false },
    },
    run(async (args) => {
      const { value: snap, id, notes } = await onSandbox(args.id, (sid) => ops.snapshot(sid, { ...(args.name ? { name: args.name } : {}), ...(args.memory ? { memory: true } : {}) }));
      return ok(withNotes(`snapshot ${snap.id}${snap.name ? ` (${snap.name})` : ''} of ${id}: ${snap.bytes} bytes${snap.memory ? ', with its memory' : ''}`, notes), snap);
    }),
  );

  server.registerTool(
    'sandbox_fork',
    {
      title: 'Fork a sandbox',
      description: [
        "New sandboxes whose files are a copy of a running sandbox's files at this moment (copy-on-write, fast whatever their size); the original keeps running and no sandbox sees another's later writes.",
        'Running processes and memory are not copied unless memory is true (gVisor sandboxes without egress or volumes: the children go on with the same running processes); otherwise start servers again in the children. Returns the new sandboxes as JSON; delete them with sandbox_delete when done. Without id, forks this session\'s sandbox.',
      ].join(' '),
      inputSchema: z.object({ id: OptionalIdSchema, count: ForkRequestSchema.shape.count, memory: ForkRequestSchema.shape.memory }).strict(),
      annotations: { destructiveHint: false, openWorldHint: false },
    },
    run(async (args) => {
      const { value: kids, id, notes } = await onSandbox(args.id, (sid) => ops.fork(sid, { ...(args.count ? { count: args.count } : {}), ...(args.memory ? { memory: true } : {}) }));
      return ok(withNotes(`forked ${id} into ${kids.map((k) => k.id).join(', ')}`, notes), { sandboxes: kids });
    }),
  );

  server.registerTool(
    'sandbox_share_port',
    {
      title: 'Share a port of a sandbox',
      description: [
        'Make a server listening inside a sandbox (on 127.0.0.1 or 0.0.0.0, e.g. "python3 -m http.server 8000" started in the background with sandbox_exec) reachable from a browser through the agentbox daemon: the sandbox needs no network for it.',
        'Returns JSON with url and, unless public is true, an access token: give the person url?agentbox_port_token=TOKEN (valid for ttl, default 1h). public: true lets anyone with the url in, until the sandbox ends; only do that when asked.',
        'url is null when the daemon serves no ports domain (agentbox serve --ports-domain): then the token works as the agentbox-port-token header. Without id, the session\'s sandbox.',
      ].join(' '),
      inputSchema: z.object({ id: OptionalIdSchema, port: PortNumberSchema, public: GrantPortAccessRequestSchema.shape.public.optional(), ttl: GrantPortAccessRequestSchema.shape.ttl }).strict(),
      annotations: { destructiveHint: false, openWorldHint: true },
    },
    run(async (args) => {
      const { value: grant, id, notes } = await onSandbox(args.id, (sid) => ops.sharePort(sid, args.port, { ...(args.public ? { public: true } : {}), ...(args.ttl !== undefined ? { ttl: args.ttl } : {}) }));
      const link = grant.url ? (grant.token ? `${grant.url}?agentbox_port_token=${grant.token}` : grant.url) : null;
      const summary = link ? `port ${args.port} of ${id}: ${link}` : `port ${args.port} of ${id}: the daemon has no ports domain; send the token as the agentbox-port-token header`;
      return ok(withNotes(`${summary} (${grant.public ? 'public' : 'token'}, ${grant.expiresAt ? `until ${grant.expiresAt}` : 'until revoked'})`, notes), grant);
    }),
  );

  server.registerTool(
    'sandbox_create_token',
    {
      title: 'Give code in a sandbox a token to call agentbox',
      description: [
        'Mint a short-lived token scoped to one sandbox (scopes read, exec, files; never create or delete; ttl at most 1h, default 15m) for a program running inside it to call the agentbox API on that sandbox only.',
        `With inject: true (the default here) it is written to ${SANDBOX_TOKEN_PATH} in the sandbox. In a sandbox with egress, the program calls ${SANDBOX_API_URL}/v1/sandboxes/ID/... with Authorization: Bearer TOKEN (through its HTTP proxy; AGENTBOX_URL is set); a sandbox without egress cannot reach it from inside.`,
        'Returns the token, its id and expiry as JSON. Without id, the session\'s sandbox.',
      ].join(' '),
      inputSchema: z.object({ id: OptionalIdSchema, scopes: CreateSandboxTokenRequestSchema.shape.scopes, ttl: CreateSandboxTokenRequestSchema.shape.ttl, inject: CreateSandboxTokenRequestSchema.shape.inject }).strict(),
      annotations: { destructiveHint: false, openWorldHint: false },
    },
    run(async (args) => {
      const { value: t, id, notes } = await onSandbox(args.id, (sid) => ops.createToken(sid, { scopes: args.scopes, ...(args.ttl !== undefined ? { ttl: args.ttl } : {}), inject: args.inject ?? true }));
      const where = t.injectedPath ? `, written to ${t.injectedPath}` : '';
      const inside = t.apiUrl ? `; inside, call ${t.apiUrl}` : '; the sandbox has no egress: usable from outside only';
      return ok(withNotes(`token ${t.id} for ${id} (${t.scopes.join(', ')}) until ${t.expiresAt}${where}${inside}`, notes), t);
    }),
  );

  server.registerTool(
    'sandbox_ps',
    {
      title: 'List the processes of a sandbox',
      description: [
        'List the processes running in a sandbox, e.g. servers started in the background by earlier sandbox_exec calls.',
        'Returns JSON: processes, each with pid (inside the sandbox; 1 is its init), ppid, uid, user, command, argv and execId (the sandbox_exec call that started it; null for the init and agentbox\'s own helpers).',
        "Without id it lists this session's own sandbox.",
      ].join(' '),
      inputSchema: z.object({ id: OptionalIdSchema }).strict(),
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    run(async (args) => {
      const { value: list, id, notes } = await onSandbox(args.id, (sid) => ops.processes(sid));
      const lines = list.map((p) => `${p.pid} ${p.user ?? p.uid} ${p.execId ?? '-'} ${p.command}`);
      return ok(withNotes([`${list.length} process${list.length === 1 ? '' : 'es'} in ${id} (pid user exec command):`, ...lines].join('\n'), notes), { sandboxId: id, processes: list });
    }),
  );

  server.registerTool(
    'sandbox_kill',
    {
      title: 'Kill a process in a sandbox',
      description: [
        'Send a signal to one process of a sandbox, by the pid sandbox_ps shows: TERM (the default) asks it to end, KILL ends it at once.',
        'PID 1 (the sandbox\'s init) cannot be killed (forbidden: stop the sandbox instead); an unknown pid is not_found.',
        "Without id it acts on this session's own sandbox. Returns JSON: pid, signal.",
      ].join(' '),
      inputSchema: KillProcessRequestSchema.extend({ id: OptionalIdSchema, pid: ProcessIdSchema }).strict(),
      annotations: { destructiveHint: true, openWorldHint: false },
    },
    run(async (args) => {
      const { id: sandboxId, pid, ...req } = args;
      const { value, id, notes } = await onSandbox(sandboxId, (sid) => ops.killProcess(sid, pid, req), 'the process may have ended: sandbox_ps lists the running ones');
      return ok(withNotes(`sent ${value.signal} to process ${value.pid} in ${id}`, notes), { sandboxId: id, ...value });
    }),
  );

  server.registerTool(
    'sandbox_stop',
    {
      title: 'Stop a sandbox',
      description:
        'Stop a sandbox: its processes are killed and its files are no longer reachable; it cannot be started again, but its record stays visible (sandbox_get, sandbox_list with all). Returns the sandbox JSON with state "stopped". Use sandbox_delete to remove it for good.',
      inputSchema: z.object({ id: IdSchema }).strict(),
      annotations: { destructiveHint: true, idempotentHint: true, openWorldHint: false },
    },
    run(async (args) => {
      const { value: sb } = await onSandbox(args.id, (id) => ops.stop(id));
      session.forget(sb.id);
      return ok(`stopped ${describeSandbox(sb)}`, sb);
    }),
  );

  server.registerTool(
    'sandbox_delete',
    {
      title: 'Delete a sandbox',
      description:
        "Delete a sandbox and everything in it (processes and files). Deleting one that is already deleted is fine. Returns the sandbox JSON with state \"deleted\". Deleting this session's own sandbox is allowed: the next call without id creates a fresh one.",
      inputSchema: z.object({ id: IdSchema }).strict(),
      annotations: { destructiveHint: true, idempotentHint: true, openWorldHint: false },
    },
    run(async (args) => {
      const { value: sb } = await onSandbox(args.id, (id) => ops.delete(id));
      session.forget(sb.id);
      return ok(`deleted ${sb.id}`, sb);
    }),
  );

  if (ops.volumes) registerVolumeTools(server, ops.volumes, run);
}

// ---------------------------------------------------------------------------------------------
// Results

function ok(summary: string, data: unknown): CallToolResult {
  return { content: [{ type: 'text', text: summary }, { type: 'text', text: JSON.stringify(data) }] };
}

function withNotes(summary: string, notes: string[]): string {
  return notes.length === 0 ? summary : `${summary}\n${notes.map((n) => `note: ${n}`).join('\n')}`;
}

/** A non-zero exit or a timeout is a tool error; the result is data either way. */
export function execResult(sandboxId: string, result: ExecResult, notes: string[] = []): CallToolResult {
  const failed = result.exitCode !== 0 || result.timedOut;
  const parts = [`exit ${result.exitCode}`, `${result.durationMs} ms`, `sandbox ${sandboxId}`];
  if (result.timedOut) parts.push('timed out (killed)');
  if (result.oomKilled) parts.push('killed: out of memory');
  if (result.truncated) parts.push('output truncated at the output limit');
  const out = `stdout ${Buffer.byteLength(result.stdout)} bytes, stderr ${Buffer.byteLength(result.stderr)} bytes`;
  return {
    content: [
      { type: 'text', text: withNotes(`${parts.join(', ')}; ${out}`, notes) },
      { type: 'text', text: JSON.stringify({ sandboxId, ...result }) },
    ],
    ...(failed ? { isError: true } : {}),
  };
}

/** Any error as a tool result: `error CODE: message` + hint, and the same as JSON. */
export function toolError(err: unknown, logger?: Logger): CallToolResult {
  let body: { code: string; message: string; hint?: string };
  if (err instanceof AgentboxError) body = err.toJSON();
  else {
    // Unknown errors may carry internals: the model gets a generic message, the log the detail.
    logger?.error({ err }, 'MCP tool failed');
    body = { code: 'internal', message: 'internal error', hint: 'see the agentbox log' };
  }
  const text = `error ${body.code}: ${body.message}${body.hint ? `\nhint: ${body.hint}` : ''}`;
  return { content: [{ type: 'text', text }, { type: 'text', text: JSON.stringify({ error: body }) }], isError: true };
}

/**
 * A failed call on an explicit id: say clearly whether the sandbox is unknown or has ended, with
 * hints in terms of these tools (the daemon's own hints name CLI commands).
 */
async function explainSandboxError(ops: SandboxOps, err: unknown, id: string | undefined, missing = 'check the path: list the directory with sandbox_exec, e.g. command "ls -la /workspace"'): Promise<unknown> {
  // The session sandbox was just used (and replaced if it had ended): only the file can be missing.
  const ended = id === undefined ? undefined : await endedReason(ops, err, id);
  if (ended === 'unknown sandbox') {
    return new AgentboxError('not_found', `no sandbox ${id}`, {
      hint: "sandbox_list shows your sandboxes; omit id to use this session's own sandbox",
    });
  }
  if (ended !== undefined) {
    return new AgentboxError('conflict', `sandbox ${id} has ended (${ended})`, {
      hint: "create a new one with sandbox_create, or omit id to use this session's own sandbox",
    });
  }
  if (err instanceof AgentboxError && err.code === 'not_found') {
    return new AgentboxError('not_found', err.message, { hint: missing });
  }
  return err;
}

function describeSandbox(sb: Sandbox): string {
  const l = sb.limits;
  const ended = sb.endReason ? ` (${sb.endReason})` : '';
  return `${sb.id}: ${sb.state}${ended}, image ${sb.image}, ${sb.runtime}/${sb.isolation}, ${l.cpus} cpu, ${l.memoryMb} MiB, egress ${sb.egress.mode}${sb.expiresAt ? `, expires ${sb.expiresAt}` : ''}`;
}

// ---------------------------------------------------------------------------------------------
// Encoding

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function decode(content: string, encoding: 'utf8' | 'base64'): Buffer {
  if (encoding === 'utf8') return Buffer.from(content, 'utf8');
  const compact = content.replace(/\s+/g, '');
  if (compact.length % 4 !== 0 || !BASE64.test(compact)) {
    throw new BadRequestError('content is not valid base64', { hint: 'send standard base64 (A-Z a-z 0-9 + /, = padding), or encoding "utf8" for text' });
  }
  return Buffer.from(compact, 'base64');
}

/** UTF-8 text when the bytes are valid UTF-8 (a character cut by truncation is dropped), else base64. */
function encode(data: Buffer, wanted: 'utf8' | 'base64', truncated: boolean): { text: string; encoding: 'utf8' | 'base64' } {
  if (wanted === 'utf8') {
    try {
      // stream: true keeps an incomplete last character back instead of failing on it.
      return { text: new TextDecoder('utf-8', { fatal: true }).decode(data, { stream: truncated }), encoding: 'utf8' };
    } catch {
      // not text: fall through
    }
  }
  return { text: data.toString('base64'), encoding: 'base64' };
}

// ---------------------------------------------------------------------------------------------
// Wording

export function formatBytes(n: number): string {
  if (n >= 1024 * 1024 && n % (1024 * 1024) === 0) return `${n / (1024 * 1024)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} bytes`;
}

function duration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms % 1000 === 0) return `${ms / 1000} s`;
  return `${ms} ms`;
}
