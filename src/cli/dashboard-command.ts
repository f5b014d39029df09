/** `agentbox dashboard`: the web dashboard for the host's operator, through the home's Unix socket. */
import { spawn } from 'node:child_process';
import type { Command } from 'commander';
import { resolvePaths } from '../core/config.js';
import { BadRequestError } from '../contract/errors.js';
import { ensureLocalDaemon } from './connect.js';
import { startOperatorProxy } from './operator-proxy.js';

export function registerDashboardCommand(program: Command): void {
  program
    .command('dashboard')
    .description('open the web dashboard as the host\'s operator: a loopback address relaying to the daemon\'s Unix socket, guarded by a one-time token; runs until stopped')
    .option('--port <PORT>', 'local port (0 picks a free one)', '0')
    .option('--open', 'open the address in a browser (xdg-open)')
    .action(async (flags: { port: string; open?: boolean }) => {
      const port = Number(flags.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new BadRequestError(`not a port: ${flags.port}`, { hint: 'e.g. --port 8090, or 0 for a free one' });
      if (process.env.AGENTBOX_URL) {
        // A daemon over TCP serves the dashboard itself: sign in there with the token.
        process.stdout.write(`${process.env.AGENTBOX_URL.replace(/\/+$/, '')}/  (sign in with your API token)\n`);
        return;
      }
      const paths = resolvePaths(process.env);
      await ensureLocalDaemon(paths);
      const relay = await startOperatorProxy({ socketPath: paths.socket, port });
      process.stdout.write(`${relay.url}\n`);
      process.stderr.write('the dashboard, as the operator of this host: open the address above (its token is after the #); Ctrl-C stops\n');
      if (flags.open) spawn('xdg-open', [relay.url], { stdio: 'ignore', detached: true }).on('error', () => process.stderr.write('agentbox: xdg-open is not available: open the address yourself\n')).unref();
      await new Promise<void>((resolve) => {
        for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(s, () => void relay.close().then(resolve));
      });
    });
}
