/**
 * The wire contract's sandbox model (ARCHITECTURE.md, "Contracts"): one zod schema per shape, types
 * derived from them. The SDK, the HTTP API, MCP, the CLI and core all speak these shapes; this folder
 * imports only zod and node: builtins, so the SDK never pulls in the core (test/unit/layers.test.ts).
 */
import { z } from 'zod';
import { EXIT_KILLED, EXIT_SIGNAL_BASE, EXIT_TIMED_OUT } from './exit-codes.js';
import { VolumeMountSchema, type VolumeMount } from './volumes.js';

export const SANDBOX_STATES = ['creating', 'running', 'stopped', 'failed', 'deleted'] as const;
export const SandboxStateSchema = z.enum(SANDBOX_STATES).describe('Lifecycle state');
export type SandboxState = z.infer<typeof SandboxStateSchema>;

export const END_REASONS = [
  'ttl_expired',
  'idle_timeout',
  'oom_killed',
  'deleted',
  'stopped',
  'runtime_lost',
  'daemon_stopped',
  'reaped_orphan',
  'create_failed',
  'adopt_failed',
] as const;
export const EndReasonSchema = z.enum(END_REASONS).describe('Why the sandbox ended');
export type EndReason = z.infer<typeof EndReasonSchema>;

export const RUNTIME_NAMES = ['local', 'docker', 'microvm', 'kubernetes'] as const;
export const RuntimeNameSchema = z.enum(RUNTIME_NAMES).describe('Runtime driver');
export type RuntimeName = z.infer<typeof RuntimeNameSchema>;

export const ISOLATIONS = ['namespaces', 'container', 'gvisor', 'vm'] as const;
export const IsolationSchema = z.enum(ISOLATIONS).describe('Isolation level within the runtime');
export type Isolation = z.infer<typeof IsolationSchema>;

export const PAUSE_MODES = ['freeze', 'hibernate'] as const;
export type PauseMode = (typeof PAUSE_MODES)[number];

export const LimitsSchema = z
  .object({
    cpus: z.number().positive().max(64).describe('CPU cores (fractional allowed)'),
    memoryMb: z.number().int().min(16).max(262144).describe('Memory limit in MiB, swap included'),
    pids: z.number().int().min(8).max(65536).describe('Maximum number of processes'),
    diskMb: z.number().int().min(1).max(1048576).describe('Size of the writable /workspace and /tmp, MiB'),
  })
  .strict();
export type Limits = z.infer<typeof LimitsSchema>;
export const PartialLimitsSchema = LimitsSchema.partial().strict();
export type PartialLimits = z.infer<typeof PartialLimitsSchema>;

export const EGRESS_MODES = ['none', 'allowlist', 'open'] as const;
export const EgressModeSchema = z.enum(EGRESS_MODES);
export const EgressSchema = z
  .object({
    mode: EgressModeSchema.describe('none: no network; allowlist: only the listed hosts; open: anything not denied'),
    allow: z.array(z.string().min(1).max(253)).max(256).describe('Hosts (HOST or HOST:PORT) reachable in allowlist mode'),
  })
  .strict();
export type Egress = z.infer<typeof EgressSchema>;

export const LabelsSchema = z
  .record(z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._\-/]{0,62}$/), z.string().max(256))
  .describe('Free-form labels');
export type Labels = z.infer<typeof LabelsSchema>;

export const EnvSchema = z
  .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'environment names are letters, digits and _'), z.string().max(32768))
  .describe('Environment variables');
export type Env = z.infer<typeof EnvSchema>;

export const SandboxSchema = z.object({
  id: z.string().describe('sbx_ followed by random characters'),
  tenant: z.string(),
  image: z.string(),
  profile: z.string().nullable(),
  runtime: RuntimeNameSchema,
  isolation: IsolationSchema,
  state: SandboxStateSchema,
  limits: LimitsSchema,
  egress: EgressSchema,
  labels: LabelsSchema,
  createdAt: z.string().describe('ISO 8601'),
  expiresAt: z.string().nullable(),
  lastActiveAt: z.string(),
  endedAt: z.string().nullable().optional(),
  endReason: EndReasonSchema.nullable().optional(),
  endedBy: z.string().nullable().optional(),
  volumes: z.array(VolumeMountSchema).optional().describe('Named volumes mounted in it (absent: none)'),
  paused: z
    .enum(['frozen', 'hibernated'])
    .optional()
    .describe("Present while paused for being idle (its profile's pauseAfter): frozen keeps its memory; hibernated has it on disk. The next call into it resumes it"),
});
export type Sandbox = z.infer<typeof SandboxSchema>;

export const SnapshotSchema = z.object({
  id: z.string().describe('snap_ followed by random characters'),
  tenant: z.string(),
  name: z.string().nullable(),
  sandboxId: z.string().describe('The sandbox it was taken of'),
  image: z.string().describe('A sandbox restored from it runs this image'),
  diskMb: z.number().int().describe('Size of the disk it holds; a restored sandbox gets this diskMb'),
  bytes: z.number().int().describe('Host disk it holds, shared blocks included'),
  sha256: z.string().describe('Digest of its disk layer, checked before every restore'),
  memory: z.boolean().describe('It holds the sandbox\'s memory and processes too (taken with memory: true): a sandbox restored from it goes on with them'),
  labels: LabelsSchema.describe('The labels of the sandbox it was taken of: a token limited to labelled sandboxes sees only snapshots of such sandboxes'),
  createdAt: z.string().describe('ISO 8601'),
});
export type Snapshot = z.infer<typeof SnapshotSchema>;

export const ExecResultSchema = z.object({
  execId: z.string(),
  exitCode: z.number().int().describe(`Exit code; ${EXIT_TIMED_OUT} on timeout, ${EXIT_KILLED} when OOM-killed, ${EXIT_SIGNAL_BASE}+N for signal N`),
  stdout: z.string(),
  stderr: z.string(),
  truncated: z.boolean().describe('Output went past outputLimitBytes and was cut'),
  timedOut: z.boolean(),
  oomKilled: z.boolean(),
  durationMs: z.number(),
  wokeMs: z
    .number()
    .optional()
    .describe('Present when this exec resumed a sandbox hibernated for being idle: milliseconds spent bringing its memory back, before the command started (not in durationMs)'),
});
export type ExecResult = z.infer<typeof ExecResultSchema>;
export type ExecSummary = Omit<ExecResult, 'stdout' | 'stderr'>;

export const EXEC_STATES = ['running', 'ended', 'lost'] as const;
export const ExecStateSchema = z
  .enum(EXEC_STATES)
  .describe(
    'running; ended (exitCode says how); lost: the daemon stopped (killed, crashed) while it ran, so its exit status and the rest of its output are unknown, and the command may have run on in the sandbox',
  );
export type ExecState = z.infer<typeof ExecStateSchema>;

/** One entry of a sandbox's exec history. */
export const ExecRecordSchema = z.object({
  execId: z.string(),
  cmd: z.array(z.string()),
  state: ExecStateSchema,
  startedAt: z.string(),
  endedAt: z.string().nullable().describe('null while running; for a lost exec, when the restarted daemon found it lost'),
  exitCode: z.number().nullable().describe('null while running, and for a lost exec'),
  timedOut: z.boolean(),
  oomKilled: z.boolean(),
  truncated: z.boolean(),
  durationMs: z.number().nullable(),
  stdout: z.string().optional().describe('tail of stdout (last 64 KiB)'),
  stderr: z.string().optional(),
});
export type ExecRecord = z.infer<typeof ExecRecordSchema>;

export type ExecEvent =
  | { type: 'stdout'; data: Buffer }
  | { type: 'stderr'; data: Buffer }
  | { type: 'exit'; result: ExecSummary };

/** Signals `kill` may send to a sandbox's process (names without SIG). */
export const SIGNAL_NAMES = ['TERM', 'KILL', 'INT', 'HUP', 'QUIT', 'USR1', 'USR2', 'STOP', 'CONT'] as const;
export const SignalNameSchema = z.enum(SIGNAL_NAMES).describe('Signal name without SIG: TERM (default), KILL, INT, HUP, QUIT, USR1, USR2, STOP, CONT');
export type SignalName = z.infer<typeof SignalNameSchema>;

/** One process of a sandbox, as seen inside it. */
export const ProcessInfoSchema = z.object({
  pid: z.number().int().describe('pid inside the sandbox; 1 is its init'),
  ppid: z.number().int().describe('parent pid inside the sandbox (0: none visible)'),
  uid: z.number().int().describe('user id inside the sandbox (1000 is the sandbox user)'),
  user: z.string().nullable().describe("user name from the sandbox's /etc/passwd, null when it names none"),
  command: z.string().describe('command line, arguments joined by spaces'),
  argv: z.array(z.string()).describe('command line as arguments'),
  execId: z.string().nullable().describe("the exec that started it (its AGENTBOX_EXEC_ID); null for the sandbox's init and what agentbox runs itself, or when unknown"),
});
export type ProcessInfo = z.infer<typeof ProcessInfoSchema>;

/** What a kill answers: the signal was sent. */
export const KillResultSchema = z.object({
  pid: z.number().int(),
  signal: SignalNameSchema,
});
export type KillResult = z.infer<typeof KillResultSchema>;

export const DirEntrySchema = z.object({
  name: z.string(),
  type: z.enum(['file', 'dir', 'symlink', 'other']),
  size: z.number(),
  mode: z.number(),
  mtime: z.string(),
});
export type DirEntry = z.infer<typeof DirEntrySchema>;

/** What policy resolution hands to the manager and, stripped of bookkeeping, to the runtime. */
export interface SandboxSpec {
  id: string;
  tenant: string;
  image: string;
  profile: string | null;
  runtime: RuntimeName;
  isolation: Isolation;
  limits: Limits;
  egress: Egress;
  env: Env;
  labels: Labels;
  ttlMs: number | null;
  idleTimeoutMs: number | null;
  /** Idle time after which the sandbox is paused; null = never. */
  pauseAfterMs?: number | null;
  /** How it is paused: freeze (memory kept, CPU freed) or hibernate (memory saved to disk and freed). @default 'freeze' */
  pauseMode?: PauseMode;
  execTimeoutMs: number;
  outputLimitBytes: number;
  /** Named volumes to mount (contract/volumes.ts); absent or empty: none. */
  volumes?: VolumeMount[];
  /** The image root: read-only, or writable with its changes on the sandbox's disk. @default 'readonly' */
  rootfs?: RootfsMode;
}

export type RootfsMode = 'readonly' | 'writable';

export const EgressEventSchema = z
  .object({
    id: z.number().int(),
    sandboxId: z.string(),
    tenant: z.string(),
    at: z.string().describe('ISO 8601, when the attempt was decided'),
    kind: z.enum(['connect', 'http']).describe('connect: a CONNECT tunnel (HTTPS, SSH, ...); http: a plain HTTP request forwarded by the proxy'),
    method: z.string().nullable(),
    host: z.string(),
    port: z.number().int(),
    address: z.string().nullable().describe('The resolved address that was checked and connected to'),
    decision: z.enum(['allowed', 'denied']),
    rule: z.string().describe('What decided: allow:PATTERN, mode:open, not_allowlisted, globalDeny:PATTERN, metadata_address, range:private, byte_quota, ...'),
    bytesUp: z.number().int().describe('Bytes from the sandbox to the host'),
    bytesDown: z.number().int().describe('Bytes from the host to the sandbox'),
    durationMs: z.number().nullable(),
    error: z.string().nullable(),
  })
  .describe('One connection attempt through a sandbox\'s egress proxy');
export type EgressEvent = z.infer<typeof EgressEventSchema>;
/** What a proxy knows of an attempt when it decides it. */
export type EgressAttempt = Pick<EgressEvent, 'kind' | 'method' | 'host' | 'port' | 'address' | 'decision' | 'rule'> & { error?: string | null };

export const DeniedHostSchema = z.object({
  host: z.string(),
  port: z.number().int(),
  attempts: z.number().int(),
  lastAt: z.string(),
  rule: z.string().describe('The rule that denied the latest attempt'),
});
export type DeniedHost = z.infer<typeof DeniedHostSchema>;
