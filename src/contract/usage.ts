/**
 * What a running sandbox uses: one measurement now (`SandboxUsage`, also E2B's metrics), and the
 * short history the daemon samples while someone reads it (`GET /v1/sandboxes/{id}/usage`,
 * `GET /v1/usage` for a dashboard's list).
 */
import { z } from 'zod';

export const SandboxUsageSchema = z.object({
  at: z.string().describe('when it was measured (ISO 8601)'),
  cpuCount: z.number().describe('its CPU limit, in CPUs'),
  cpuUsedPct: z.number().describe('CPU used over a short window, percent of its CPU limit (0-100)'),
  memoryBytes: z.number().int().describe('memory in use'),
  memoryLimitBytes: z.number().int(),
  pids: z.number().int().describe('processes and threads'),
  diskUsedBytes: z.number().int().nullable().describe('null when the daemon does not mount the sandbox\'s disk itself (a microVM\'s)'),
  diskTotalBytes: z.number().int(),
});
export type SandboxUsage = z.infer<typeof SandboxUsageSchema>;

export const UsageSampleSchema = z.object({
  at: z.string().describe('when it was taken (ISO 8601)'),
  cpuPct: z.number().describe('CPU used since the sample before, percent of its CPU limit (0-100)'),
  memoryBytes: z.number().int(),
  pids: z.number().int(),
});
export type UsageSample = z.infer<typeof UsageSampleSchema>;

export const SandboxUsageReportSchema = z.object({
  sandboxId: z.string(),
  current: SandboxUsageSchema.describe('the latest sample (measured now when there is none yet), with limits and disk'),
  intervalMs: z.number().int().describe('time between samples'),
  samples: z.array(UsageSampleSchema).describe('oldest first: the last minutes, sampled while someone reads them (a read keeps sampling on for a minute); a paused sandbox is not sampled'),
});
export type SandboxUsageReport = z.infer<typeof SandboxUsageReportSchema>;

export const UsageOverviewEntrySchema = z.object({
  sandboxId: z.string(),
  latest: UsageSampleSchema.nullable().describe('null until the first sample (about two intervals after the first read)'),
  cpuPct: z.array(z.number()).describe('the last samples\' CPU percent, oldest first (for a sparkline)'),
  memoryBytes: z.array(z.number().int()).describe('the last samples\' memory, oldest first'),
});
export type UsageOverviewEntry = z.infer<typeof UsageOverviewEntrySchema>;

export const UsageOverviewSchema = z.object({
  intervalMs: z.number().int(),
  sandboxes: z.array(UsageOverviewEntrySchema).describe('every running sandbox the caller sees'),
});
export type UsageOverview = z.infer<typeof UsageOverviewSchema>;
