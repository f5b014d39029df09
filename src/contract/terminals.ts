/**
 * Terminals (ARCHITECTURE.md, "Terminals and ports"): a command on a pseudo-terminal inside a sandbox, opened
 * once and attached to by any number of clients over a WebSocket, each first given what the terminal
 * showed lately. The wire shapes, for every surface.
 */
import { z } from 'zod';
import { EnvSchema, SignalNameSchema } from './model.js';

export const TERMINAL_MAX_SIZE = 1000;
const Cols = z.number().int().min(1).max(TERMINAL_MAX_SIZE).describe('width in character cells');
const Rows = z.number().int().min(1).max(TERMINAL_MAX_SIZE).describe('height in character cells');

export const OpenTerminalRequestSchema = z
  .object({
    cmd: z.array(z.string().max(131072)).min(1).max(4096).optional().describe('argv; default a login shell (bash -l where the image has bash, else sh -l)'),
    cols: Cols.default(80),
    rows: Rows.default(24),
    env: EnvSchema.optional(),
    cwd: z.string().startsWith('/').max(4096).optional().describe('Working directory, absolute; default /workspace'),
    keepAlive: z
      .boolean()
      .default(false)
      .describe('Keep the terminal running with no client attached (until its command exits or the sandbox ends). Default: hung up 30 s after its last client detached'),
  })
  .strict();
export type OpenTerminalRequest = z.input<typeof OpenTerminalRequestSchema>;

export const TerminalResizeSchema = z.object({ cols: Cols, rows: Rows }).strict();

/** What a client sends as a WebSocket text message; binary messages are typed input. */
export const TerminalControlSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('resize'), cols: Cols, rows: Rows }).strict(),
  z.object({ type: z.literal('signal'), signal: SignalNameSchema }).strict(),
]);
export type TerminalControl = z.infer<typeof TerminalControlSchema>;

/** What the daemon sends as a WebSocket text message; binary messages are what the terminal shows. */
export type TerminalEvent = { type: 'exit'; exitCode: number };

export const TerminalSchema = z.object({
  terminalId: z.string().describe('the terminal\'s id, also its exec id in the exec history'),
  sandboxId: z.string(),
  cmd: z.array(z.string()),
  pid: z.number().int().describe('the command\'s pid inside the sandbox'),
  cols: z.number().int(),
  rows: z.number().int(),
  keepAlive: z.boolean(),
  attached: z.number().int().describe('clients attached now'),
  startedAt: z.string(),
  exitCode: z.number().int().nullable().describe('null while it runs'),
});
export type Terminal = z.infer<typeof TerminalSchema>;
