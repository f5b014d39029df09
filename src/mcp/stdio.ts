/**
 * MCP over stdio (`agentbox mcp`): one session per process. stdout carries only the protocol;
 * logs (JSON) go to stderr. The session sandbox is deleted when the session ends: stdin closed
 * (the client went away or called close), the transport closed, or SIGTERM / SIGINT / SIGHUP.
 */
import { format } from 'node:util';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import type { Logger } from 'pino';
import { createLogger } from '../observability/logger.js';
import type { SandboxOps } from './ops.js';
import { createAgentboxMcpServer } from './tools.js';

/** Largest JSON-RPC message read from stdin (a sandbox_write_file of 16 MiB is ~22 MiB as base64). */
export const STDIO_MAX_MESSAGE_BYTES = 32 * 1024 * 1024;

export interface StdioServerOpts {
  /** @default JSON on stderr at AGENTBOX_LOG_LEVEL, else `warn` */
  logger?: Logger;
  /** @default the policy's idleTimeout when known, else 15 minutes */
  sessionIdleMs?: number;
}

const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

/**
 * Serve the sandbox tools on this process's stdin/stdout. Resolves once the session has ended and
 * its sandbox is deleted; the caller then exits (stdin is left paused, not destroyed).
 */
export async function runStdioServer(ops: SandboxOps, opts: StdioServerOpts = {}): Promise<void> {
  const logger = opts.logger ?? createLogger(process.env.AGENTBOX_LOG_LEVEL ?? 'warn');
  // A stray console.log would corrupt the protocol stream: in this process console output goes to stderr.
  const toStderr = (...args: unknown[]): void => void process.stderr.write(`${format(...args)}\n`);
  console.log = toStderr;
  console.info = toStderr;
  console.debug = toStderr;

  const mcp = createAgentboxMcpServer({
    ops,
    sessionTag: `stdio-${process.pid}`,
    logger,
    ...(opts.sessionIdleMs !== undefined ? { sessionIdleMs: opts.sessionIdleMs } : {}),
  });
  const transport = new StdioServerTransport(process.stdin, process.stdout, { maxBufferSize: STDIO_MAX_MESSAGE_BYTES });

  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  let ending = false;
  const end = (why: string): void => {
    if (ending) return;
    ending = true;
    logger.info({ why }, 'MCP stdio session ending');
    void mcp
      .close()
      .catch((err: unknown) => logger.error({ err }, 'MCP session cleanup failed'))
      .finally(resolveDone);
  };
  const onSignal = (sig: NodeJS.Signals): void => end(sig);
  const onStdinEnd = (): void => end('stdin closed');
  // The client went away mid-answer: EPIPE must end the session, not crash before the cleanup.
  const onStdoutError = (): void => end('stdout closed');

  transport.onclose = () => end('transport closed');
  transport.onerror = (err) => logger.warn({ err: err.message }, 'MCP stdio transport error');
  for (const sig of SIGNALS) process.once(sig, onSignal);
  process.stdin.once('end', onStdinEnd);
  process.stdin.once('close', onStdinEnd);
  process.stdout.on('error', onStdoutError);
  try {
    await mcp.server.connect(transport);
    logger.info({ session: mcp.session.tag }, 'MCP stdio session ready');
    await done;
  } finally {
    for (const sig of SIGNALS) process.off(sig, onSignal);
    process.stdin.off('end', onStdinEnd);
    process.stdin.off('close', onStdinEnd);
    process.stdout.off('error', onStdoutError);
  }
}
