/** Structured JSON logs on stderr (stdout belongs to the protocol: MCP stdio, CLI output). */
import { pino, type Logger } from 'pino';

export function createLogger(level = process.env.AGENTBOX_LOG_LEVEL ?? 'info', destination: number | string = 2): Logger {
  return pino({ level, base: { service: 'agentbox' } }, pino.destination({ dest: destination, sync: false }));
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
