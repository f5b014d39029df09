/**
 * Named volumes on the wire (ARCHITECTURE.md, "Volumes"): a volume is a filesystem of its own size,
 * owned by a tenant, that outlives sandboxes; sandboxes mount it by name at a target path.
 */
import { posix } from 'node:path';
import { z } from 'zod';
import { BadRequestError } from './errors.js';

export const VOLUME_NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const NAME_RULE = 'a volume name: lower-case letters, digits, . _ - (at most 63), starting with a letter or digit';
const NAME_HINT = 'name volumes like my-data or cache.v2 (no /, no leading . or -)';

export const VolumeNameSchema = z.string().regex(VOLUME_NAME_RE, NAME_RULE).describe('Volume name, unique within the tenant');

/** A name from a path segment or a CLI argument: bad_request with a hint, never a path trick. */
export function checkVolumeName(name: string): string {
  if (!VOLUME_NAME_RE.test(name)) throw new BadRequestError(`not ${NAME_RULE}: ${JSON.stringify(name.slice(0, 80))}`, { hint: NAME_HINT });
  return name;
}

export const DEFAULT_VOLUME_MB = 1024;
/** Every size is a template formatted once (storage/disk-store.ts); this bounds what one costs. */
export const MAX_VOLUME_MB = 65536;

/**
 * Paths a volume may not be mounted on or under: the kernel's (/proc, /sys, /dev), agentbox's own
 * (/.agentbox: init, /run: the egress proxy's socket).
 */
const RESERVED = ['/proc', '/sys', '/dev', '/run', '/.agentbox'];
/** The sandbox's own disk: a volume goes under them, not over them. */
const DISK_DIRS = ['/workspace', '/tmp'];
const TARGET_CHARS = /^[A-Za-z0-9._+@/-]+$/;
const TARGET_HINT = 'mount it at /data, /mnt/NAME or under /workspace, e.g. --volume NAME:/data';

/** Why `target` cannot be a volume's mount point, or undefined when it can. */
export function volumeTargetProblem(target: string): string | undefined {
  if (!target.startsWith('/')) return `${target} is not an absolute path`;
  if (target.length > 1024) return 'the path is longer than 1024 characters';
  if (!TARGET_CHARS.test(target)) return `${target} may hold only letters, digits, . _ + @ - and /`;
  if (posix.normalize(target) !== target || target.endsWith('/') || target.split('/').includes('..')) return `${target} is not a plain path (no //, ., .. or trailing /)`;
  if (target === '/') return 'a volume cannot be mounted on /';
  const reserved = RESERVED.find((r) => target === r || target.startsWith(`${r}/`));
  if (reserved) return `${target} is under ${reserved}, which belongs to the system or to agentbox`;
  if (DISK_DIRS.includes(target)) return `${target} is the sandbox's own disk; mount a volume inside it, e.g. ${target}/data`;
  return undefined;
}

export const VolumeTargetSchema = z
  .string()
  .superRefine((t, ctx) => {
    const problem = volumeTargetProblem(t);
    if (problem) ctx.addIssue({ code: 'custom', message: `${problem} (${TARGET_HINT})` });
  })
  .describe('Absolute path inside the sandbox: e.g. /data, /mnt/cache or /workspace/shared; not /, /workspace or /tmp themselves, nothing under /proc, /sys, /dev, /run, /.agentbox');

export const VolumeMountRequestSchema = z
  .object({
    name: VolumeNameSchema,
    target: VolumeTargetSchema,
    readOnly: z.boolean().optional().describe('Mount read-only (writes fail with EROFS); default read-write'),
  })
  .strict();
export type VolumeMountRequest = z.infer<typeof VolumeMountRequestSchema>;

export const VolumeMountSchema = z.object({
  name: z.string(),
  target: z.string(),
  readOnly: z.boolean(),
});
export type VolumeMount = z.infer<typeof VolumeMountSchema>;

export const MAX_VOLUME_MOUNTS = 16;

export const VolumeMountsRequestSchema = z
  .array(VolumeMountRequestSchema)
  .max(MAX_VOLUME_MOUNTS)
  .superRefine((mounts, ctx) => {
    const targets = mounts.map((m) => m.target);
    targets.forEach((t, i) => {
      const other = targets.find((o, j) => j !== i && (o === t || t.startsWith(`${o}/`)));
      if (other !== undefined) ctx.addIssue({ code: 'custom', path: [i, 'target'], message: other === t ? `two volumes at ${t}` : `${t} is inside ${other}, another volume's target; use separate paths` });
    });
  })
  .describe(`Named volumes to mount (at most ${MAX_VOLUME_MOUNTS}); the same volume may be mounted by many sandboxes at once, which see each other's writes`);

/** Each mount with readOnly spelled out, as the sandbox and the runtime get it. */
export function normalizeMounts(mounts: readonly VolumeMountRequest[] | undefined): VolumeMount[] {
  return (mounts ?? []).map((m) => ({ name: m.name, target: m.target, readOnly: m.readOnly ?? false }));
}

export const CreateVolumeRequestSchema = z
  .object({
    name: VolumeNameSchema,
    sizeMb: z.number().int().min(8).max(MAX_VOLUME_MB).optional().describe(`Size in MiB, the volume's hard quota (ENOSPC past it); default ${DEFAULT_VOLUME_MB}`),
  })
  .strict();
export type CreateVolumeRequest = z.infer<typeof CreateVolumeRequestSchema>;

export const VolumeSchema = z.object({
  name: z.string(),
  sizeMb: z.number().int().describe('Size in MiB: writes past it fail with ENOSPC'),
  createdAt: z.string().describe('ISO 8601'),
  usedBy: z.array(z.string()).describe('Ids of the running (or starting) sandboxes that mount it; while any does, it cannot be removed'),
});
export type Volume = z.infer<typeof VolumeSchema>;
