/** `agentbox shell` and `agentbox exec -t`: a terminal inside a sandbox, driven from this one. */
import type { Command } from 'commander';
import type { AgentboxClient } from '../sdk/client.js';
import { connectClient } from './connect.js';
import { collect, pairs } from './flags.js';

export interface TerminalFlags {
  env?: string[];
  cwd?: string;
  /**
   * Join this process's stdin to the terminal (raw mode, every key goes inside). Off for `exec -t`
   * without `-i`: the command gets a terminal but not this one's keys, and Ctrl-C here stops it.
   * @default true
   */
  interactive?: boolean;
}

/**
 * Open a terminal in sandbox ID running CMD (a login shell when absent) and join it to this process's
 * terminal: raw mode, so every key (Ctrl-C included) goes to the sandbox, and resizes follow (unless
 * `flags.interactive` is false: then only output and resizes). Resolves with the command's exit code.
 */
export async function runTerminal(client: AgentboxClient, id: string, cmd: string[] | undefined, flags: TerminalFlags): Promise<number> {
  const out = process.stdout;
  const input = process.stdin;
  const size = (): { cols: number; rows: number } => ({ cols: out.isTTY && out.columns ? out.columns : 80, rows: out.isTTY && out.rows ? out.rows : 24 });
  const env = { TERM: process.env.TERM || 'xterm-256color', ...pairs('env', flags.env) };
  const t = await client.openTerminal(id, { ...(cmd && cmd.length > 0 ? { cmd } : {}), ...size(), env, ...(flags.cwd ? { cwd: flags.cwd } : {}) });
  const conn = await client.attachTerminal(id, t.terminalId);
  conn.on('data', (data) => out.write(data));
  const onResize = (): void => {
    const s = size();
    conn.resize(s.cols, s.rows);
  };
  const interactive = flags.interactive !== false;
  const raw = interactive && input.isTTY === true;
  if (raw) input.setRawMode(true);
  if (interactive) {
    input.on('data', (data: Buffer) => conn.write(data));
    input.resume();
  }
  out.on('resize', onResize);
  // This process told to stop (not by a key, which raw mode sends inside): hang the terminal up.
  const hangUp = (): void => {
    void client.closeTerminal(id, t.terminalId).catch(() => undefined).finally(() => conn.close());
  };
  const signals = ['SIGTERM', 'SIGHUP', 'SIGINT'] as const;
  for (const s of signals) process.on(s, hangUp);
  try {
    const code = await conn.exit;
    if (code === null) {
      process.stderr.write(`\r\nagentbox: the connection to terminal ${t.terminalId} closed before its command ended\r\n`);
      return 1;
    }
    return code;
  } finally {
    for (const s of signals) process.off(s, hangUp);
    out.off('resize', onResize);
    if (raw) input.setRawMode(false);
    if (interactive) input.pause();
  }
}

export function registerTerminalCommands(program: Command, setExit: (code: number) => void): void {
  program
    .command('shell')
    .description('a terminal in a sandbox: a login shell (bash where the image has it), or CMD; exits with its exit code')
    .argument('<id>', 'sandbox id')
    .argument('[cmd...]', 'command and arguments instead of a shell (after --)')
    .option('--env <K=V>', 'environment variable (repeatable)', collect)
    .option('--cwd <DIR>', 'working directory inside the sandbox')
    .action(async (id: string, rawCmd: string[], flags: TerminalFlags) => {
      const cmd = rawCmd[0] === '--' ? rawCmd.slice(1) : rawCmd;
      setExit(await runTerminal(await connectClient(), id, cmd, flags));
    });
}
