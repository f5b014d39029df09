#!/usr/bin/env node
/**
 * The agentbox CLI. Exit codes: `run`/`exec` pass the command's own code through (124 timeout,
 * 137 OOM); 125 when agentbox itself failed (bad flag, policy denial, runtime down); 1 for a
 * failed `policy check`.
 */
import { Command, CommanderError } from 'commander';
import { EXIT_AGENTBOX_FAILED } from '../contract/exit-codes.js';
import { VERSION } from '../core/config.js';
import { registerHostCommands } from './host-commands.js';
import { printError } from './output.js';
import { registerSandboxCommands } from './sandbox-commands.js';
import { registerTerminalCommands } from './terminal-commands.js';
import { registerPortCommands } from './port-commands.js';
import { registerTokenCommands } from './token-commands.js';
import { registerEgressCommands } from './egress-commands.js';
import { registerSnapshotCommands } from './snapshot-commands.js';
import { registerDoctorCommand } from './doctor-command.js';
import { registerDaemonCommands } from './daemon-commands.js';
import { registerVolumeCommands } from './volume-commands.js';
import { registerWebhookCommands } from './webhook-commands.js';
import { registerDashboardCommand } from './dashboard-command.js';
import { otherVersionWarning } from './connect.js';

async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const program = new Command('agentbox')
    .description('Self-hosted sandboxes for AI agents')
    .version(VERSION)
    .enablePositionalOptions()
    .showHelpAfterError('(run agentbox --help for usage)')
    .exitOverride();
  registerSandboxCommands(program, (code) => (exitCode = code));
  registerHostCommands(program, (code) => (exitCode = code));
  registerEgressCommands(program);
  registerSnapshotCommands(program);
  registerDoctorCommand(program, (code) => (exitCode = code));
  registerDaemonCommands(program, (code) => (exitCode = code));
  registerVolumeCommands(program);
  registerTerminalCommands(program, (code) => (exitCode = code));
  registerPortCommands(program);
  registerTokenCommands(program);
  registerWebhookCommands(program);
  registerDashboardCommand(program);
  try {
    await program.parseAsync(argv);
    const warning = await otherVersionWarning();
    if (warning) process.stderr.write(`${warning}\n`);
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return EXIT_AGENTBOX_FAILED;
    }
    printError(err);
    return EXIT_AGENTBOX_FAILED;
  }
}

const code = await main(process.argv);
// Let stdout drain before leaving: a piped consumer must see everything.
process.exitCode = code;
if (process.argv[2] !== 'serve') {
  process.stdout.write('', () => process.exit(code));
}
