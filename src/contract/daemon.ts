/** What `GET /v1/daemon` answers (to the host's operator only): the daemon itself, for `agentbox daemon status`. */
import { z } from 'zod';

export const RuntimeHealthSchema = z.object({
  ok: z.boolean(),
  detail: z.string().describe('what was found (versions), or why the runtime cannot work here'),
  hint: z.string().optional().describe('the command or setting that fixes it'),
});

export const DaemonInfoSchema = z.object({
  pid: z.number().int(),
  version: z.string().describe('package version'),
  build: z.string().describe('fingerprint of the code the daemon runs; a rebuild changes it'),
  startedAt: z.string(),
  uptimeMs: z.number().int(),
  home: z.string(),
  socket: z.string().nullable().describe('the Unix socket it serves, if any'),
  tcp: z.object({ host: z.string(), port: z.number().int() }).nullable(),
  log: z.string().nullable().describe('its log file, when the CLI started it in the background'),
  runtimes: z.record(z.string(), RuntimeHealthSchema),
  sandboxes: z.record(z.string(), z.number().int()).describe('how many sandboxes the store holds in each state'),
  pools: z.array(z.object({ image: z.string(), profile: z.string().nullable(), size: z.number().int(), ready: z.number().int(), shared: z.boolean().optional().describe('kept in a shared runtime for every replica; ready as this replica last counted') })),
});
export type DaemonInfo = z.infer<typeof DaemonInfoSchema>;

/**
 * Signals `agentbox serve` stops on, and what each does to the sandboxes. SIGTERM and SIGINT: a
 * graceful stop that leaves them running for the next daemon (`agentbox daemon stop`). SIGUSR2: a
 * graceful stop that also stops every sandbox (`agentbox daemon stop --stop-sandboxes`).
 */
export const DAEMON_STOP_SIGNALS = { SIGTERM: 'leave', SIGINT: 'leave', SIGUSR2: 'stop' } as const satisfies Partial<Record<NodeJS.Signals, 'leave' | 'stop'>>;
export type RuntimeHealth = z.infer<typeof RuntimeHealthSchema>;
