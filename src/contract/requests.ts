/** The wire contract's request bodies (ARCHITECTURE.md, "Contracts"), accepted by every surface and validated once at the edge. */
import { z } from 'zod';
import { EXIT_TIMED_OUT } from './exit-codes.js';
import { EgressModeSchema, EnvSchema, IsolationSchema, LabelsSchema, PartialLimitsSchema, RuntimeNameSchema, SignalNameSchema } from './model.js';
import { VolumeMountsRequestSchema } from './volumes.js';

export const DurationInputSchema = z
  .union([z.string().regex(/^\d+(ms|s|m|h|d)$/, 'a duration like 90s, 5m or 1h'), z.number().int().positive()])
  .describe('Duration: 90s, 5m, 1h, or a number of seconds');

const SnapshotNameSchema = z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/, 'a name: letters, digits, . _ -, at most 64');
export const SnapshotRefSchema = SnapshotNameSchema.describe('A snapshot id (snap_...) or name');

export const CreateSnapshotRequestSchema = z
  .object({
    name: SnapshotNameSchema.refine((n) => !n.startsWith('snap_'), 'a name may not start with snap_ (ids do)').optional().describe('A name to find it by (unique per tenant)'),
    memory: z
      .boolean()
      .optional()
      .describe('Keep the sandbox\'s memory and running processes too, not only its files (microvm sandboxes without egress or volumes: the VM is saved whole, stopping it for about a second). A sandbox restored from it goes on with those processes, on the same runtime, image and limits. Default: files only'),
  })
  .strict();
export type CreateSnapshotRequest = z.infer<typeof CreateSnapshotRequestSchema>;

export const ForkRequestSchema = z
  .object({
    count: z.number().int().min(1).max(16).optional().describe('How many children (default 1)'),
    memory: z
      .boolean()
      .optional()
      .describe('Children also go on with the parent\'s running processes and memory (microvm sandboxes, and gVisor ones on a dockerd with experimental features, without egress or volumes; the parent stops while its memory is saved and restored: about a second when small, seconds more per 50 MB it holds). Default: files only'),
  })
  .strict();
export type ForkRequest = z.infer<typeof ForkRequestSchema>;

export const CreateSandboxRequestSchema = z
  .object({
    image: z.string().min(1).max(128).regex(/^[a-zA-Z0-9][a-zA-Z0-9._\-/:]*$/, 'an image name').optional().describe('Image name; defaults to the policy default'),
    profile: z.string().min(1).max(64).optional().describe('Named profile from the policy'),
    runtime: RuntimeNameSchema.optional(),
    isolation: IsolationSchema.optional(),
    limits: PartialLimitsSchema.optional().describe('Ask for less than the profile allows, never more'),
    egress: z
      .object({ mode: EgressModeSchema.optional(), allow: z.array(z.string().min(1).max(253)).max(256).optional() })
      .strict()
      .optional(),
    env: EnvSchema.optional(),
    labels: LabelsSchema.optional(),
    ttl: DurationInputSchema.optional().describe('Hard lifetime, at most the profile ttl'),
    snapshot: SnapshotRefSchema.optional().describe('Start with the files of this snapshot (/workspace, /tmp); the image defaults to its image, diskMb is its diskMb'),
    volumes: VolumeMountsRequestSchema.optional(),
  })
  .strict();
export type CreateSandboxRequest = z.infer<typeof CreateSandboxRequestSchema>;

export const ExecRequestSchema = z
  .object({
    cmd: z.array(z.string().max(131072)).min(1).max(4096).describe('argv; use ["sh","-c","..."] for a shell line'),
    stdin: z.string().max(16 * 1024 * 1024).optional().describe('Data written to the command\'s stdin (UTF-8)'),
    env: EnvSchema.optional(),
    cwd: z.string().startsWith('/').max(4096).optional().describe('Working directory, absolute; default /workspace'),
    timeoutMs: z.number().int().positive().max(24 * 3600 * 1000).optional().describe(`Kill the command after this long (exit ${EXIT_TIMED_OUT})`),
  })
  .strict();
export type ExecRequest = z.infer<typeof ExecRequestSchema>;

export const PauseRequestSchema = z
  .object({
    mode: z.enum(['freeze', 'hibernate']).default('freeze').describe('freeze: processes stopped, memory kept; hibernate: memory saved to disk and freed (runtimes that can: gVisor, microvm)'),
  })
  .strict();
export type PauseRequest = z.input<typeof PauseRequestSchema>;

/** A process of a sandbox, by its pid inside the sandbox (`agentbox ps` shows them). */
export const ProcessIdSchema = z.number().int().min(1).max(4_194_304).describe('pid inside the sandbox, as ps lists it (1, the init, cannot be killed)');

export const KillProcessRequestSchema = z
  .object({
    signal: SignalNameSchema.optional(),
  })
  .strict();
export type KillProcessRequest = z.infer<typeof KillProcessRequestSchema>;

export const EgressAllowRequestSchema = z
  .object({
    host: z.string().min(1).max(260).describe('HOST, HOST:PORT or *.DOMAIN to let this running sandbox reach'),
  })
  .strict();
export type EgressAllowRequest = z.infer<typeof EgressAllowRequestSchema>;

export const PullImageRequestSchema = z
  .object({
    ref: z.string().min(1).max(255).describe('Registry reference, e.g. python:3.12-slim'),
    name: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$/).optional().describe('agentbox image name; default from the reference'),
  })
  .strict();
export type PullImageRequest = z.infer<typeof PullImageRequestSchema>;
