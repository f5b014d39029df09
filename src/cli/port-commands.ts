/** `agentbox port-forward`: a local port that reaches a server listening inside a sandbox. */
import { createServer, type Socket } from 'node:net';
import type { Command } from 'commander';
import { BadRequestError } from '../contract/errors.js';
import { join } from '../api/join-streams.js';
import { connectClient } from './connect.js';
import { printJson } from './output.js';

/** `[LOCAL:]PORT`: the local port (the same as the sandbox's when absent; 0 picks a free one) and the sandbox's. */
export function parsePortSpec(spec: string): { local: number; remote: number } {
  const m = /^(?:(\d{1,5}):)?(\d{1,5})$/.exec(spec);
  const local = m ? Number(m[1] ?? m[2]) : NaN;
  const remote = m ? Number(m[2]) : NaN;
  if (!m || remote < 1 || remote > 65535 || local > 65535) throw new BadRequestError(`not a port or LOCAL:PORT: ${spec}`, { hint: 'e.g. 8000, or 18000:8000 for local port 18000 to the sandbox\'s 8000 (0:8000 picks a free local port)' });
  return { local, remote };
}

export function registerPortCommands(program: Command): void {
  program
    .command('port-access')
    .description('let browsers reach PORT through the daemon\'s port proxy (PORT-ID.<ports domain>): prints a new access token, or makes the port public; --revoke undoes every grant of the port')
    .argument('<id>', 'sandbox id')
    .argument('<port>', 'the sandbox\'s port')
    .option('--public', 'anyone who knows the address may reach it (no token)')
    .option('--ttl <DUR>', 'how long the grant holds (default 1h for a token, until revoked for --public)')
    .option('--revoke', 'revoke every token of the port and make it private again')
    .option('--json', 'print the answer as JSON')
    .action(async (id: string, portText: string, flags: { public?: boolean; ttl?: string; revoke?: boolean; json?: boolean }) => {
      const { remote } = parsePortSpec(portText);
      const client = await connectClient();
      if (flags.revoke) {
        const n = await client.revokePortAccess(id, remote);
        if (flags.json) printJson({ revoked: n });
        else process.stdout.write(`revoked ${n} grant${n === 1 ? '' : 's'} of ${id}:${remote}\n`);
        return;
      }
      const grant = await client.grantPortAccess(id, remote, { ...(flags.public ? { public: true } : {}), ...(flags.ttl ? { ttl: flags.ttl } : {}) });
      if (flags.json) return printJson(grant);
      const until = grant.expiresAt ? `until ${grant.expiresAt}` : 'until revoked';
      if (grant.public) process.stdout.write(`${id}:${remote} is public ${until}${grant.url ? `: ${grant.url}` : ''}\n`);
      else process.stdout.write(`${grant.token}\n${grant.url ? `open ${grant.url}?agentbox_port_token=${grant.token} (${until})` : `send it as the agentbox-port-token header (${until}); the daemon serves ports only with --ports-domain`}\n`);
    });

  program
    .command('port-forward')
    .description('listen on a local port and connect each connection to PORT inside the sandbox (it needs no network); runs until stopped')
    .argument('<id>', 'sandbox id')
    .argument('<port>', '[LOCAL:]PORT: the sandbox\'s port, and the local one (default the same)')
    .option('--address <ADDR>', 'local address to listen on', '127.0.0.1')
    .action(async (id: string, spec: string, flags: { address: string }) => {
      const { local, remote } = parsePortSpec(spec);
      const client = await connectClient();
      await client.get(id); // a wrong id fails now, not at the first connection
      const open = new Set<Socket>();
      const server = createServer({ allowHalfOpen: true }, (sock: Socket) => {
        open.add(sock);
        sock.once('close', () => open.delete(sock));
        sock.on('error', () => sock.destroy());
        client.openPort(id, remote).then(
          (conn) => join(sock, conn),
          (err: unknown) => {
            process.stderr.write(`agentbox: ${id}:${remote}: ${err instanceof Error ? err.message : String(err)}\n`);
            sock.destroy();
          },
        );
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(local, flags.address, () => resolve());
      });
      const addr = server.address();
      const bound = typeof addr === 'object' && addr ? `${addr.address}:${addr.port}` : String(addr);
      process.stdout.write(`forwarding ${bound} -> ${id}:${remote} (Ctrl-C stops)\n`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          server.close(() => resolve());
          for (const sock of open) sock.destroy();
        };
        for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(s, stop);
      });
    });
}
